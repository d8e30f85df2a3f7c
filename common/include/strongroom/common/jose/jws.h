// Compact JWS (RFC 7515) with ES256, RS256 and PS256: verification of identity tokens and KMS
// responses, ES256 signing with an in-memory key, and assembly around an external (HSM) signer.
//
// Wire format: BASE64URL(protected header) "." BASE64URL(payload) "." BASE64URL(signature); the
// signing input is the first two parts with their dot, as ASCII.
#ifndef STRONGROOM_COMMON_JOSE_JWS_H_
#define STRONGROOM_COMMON_JOSE_JWS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/jose/jose_header.h"
#include "strongroom/common/jose/jwk.h"

namespace strongroom::jose {

inline constexpr std::size_t kMaxJwsSignatureBytes = 1024;  // an 8192-bit RSA signature

class VerifiedJws;

// Refuses, before any signature check: "none", every HS* alg, an alg not in allowed_algs, an alg
// other than ES256/RS256/PS256, an alg that does not fit the key's type, "crit" and "b64".
// A bad signature is kInvalidArgument "JWS signature verification failed".
Result<VerifiedJws> VerifyJws(std::string_view compact, const PublicJwk& key,
                              std::span<const std::string_view> allowed_algs,
                              const JoseLimits& limits = {});

// A JWS whose signature was checked; only VerifyJws makes one.
class VerifiedJws {
 public:
  const JoseHeader& header() const { return header_; }
  const std::string& payload() const { return payload_; }

 private:
  friend Result<VerifiedJws> VerifyJws(std::string_view, const PublicJwk&,
                                       std::span<const std::string_view>, const JoseLimits&);
  VerifiedJws(JoseHeader header, std::string payload)
      : header_(std::move(header)), payload_(std::move(payload)) {}

  JoseHeader header_;
  std::string payload_;
};

// alg must be "ES256". extra_header holds string members such as kid or typ; "alg", "crit" and
// "b64" are refused.
Result<std::string> SignJws(const EcKeyPair& key, std::string_view alg,
                            std::span<const std::uint8_t> payload,
                            const std::map<std::string, std::string>& extra_header = {});

// Assembles a compact JWS around an external signer (e.g. PS256 in an HSM). The header is used
// byte for byte; it must be a JSON object with a string "alg" that is not "none" or HS*, and
// without "crit". The signer gets the signing input and returns 1 to kMaxJwsSignatureBytes bytes.
using JwsSigner =
    std::function<Result<std::vector<std::uint8_t>>(std::span<const std::uint8_t> signing_input)>;
Result<std::string> SignJwsWith(std::string_view protected_header_json,
                                std::span<const std::uint8_t> payload, const JwsSigner& signer,
                                const JoseLimits& limits = {});

}  // namespace strongroom::jose

#endif  // STRONGROOM_COMMON_JOSE_JWS_H_
