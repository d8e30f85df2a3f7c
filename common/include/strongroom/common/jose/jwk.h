// JSON Web Keys (RFC 7517) for the KMS protocol: public EC P-256 and RSA keys, EC P-256 key
// pairs, and the ECDH-ES derivation draft-abiggs-saag-key-management-service uses to agree on an
// ephemeral key.
//
// Built on cjose. Exported JSON holds kty, kid, crv/x/y or n/e, and x5c when set; other members
// of a parsed JWK (use, key_ops, alg) are accepted and dropped. Objects are immutable after
// creation; const methods may be called from several threads.
#ifndef STRONGROOM_COMMON_JOSE_JWK_H_
#define STRONGROOM_COMMON_JOSE_JWK_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::jose {

namespace internal {
class CjoseKey;
struct JwkAccess;
}  // namespace internal

inline constexpr std::size_t kMaxJwkJsonBytes = 64 * 1024;
inline constexpr std::size_t kMinRsaModulusBits = 2048;
inline constexpr std::size_t kMaxRsaModulusBits = 8192;
inline constexpr std::size_t kMaxX5cCertificates = 10;

class PublicJwk {
 public:
  enum class Type { kEcP256, kRsa };

  // A public JWK of kty "EC" (crv "P-256", point on the curve) or "RSA" (2048 to 8192 bits).
  // Private members (d, p, q, dp, dq, qi, oth, k) are refused. x5c, if present, must be an
  // array of at most kMaxX5cCertificates strings of standard padded base64 and is kept.
  static Result<PublicJwk> Parse(std::string_view json);

  // An RSA public key from big-endian modulus and exponent; each x5c entry is one DER
  // certificate, exported base64 (standard alphabet, padded) in order. The certificates are not
  // parsed or matched to the key: that is the caller's business.
  static Result<PublicJwk> FromRsa(std::span<const std::uint8_t> n, std::span<const std::uint8_t> e,
                                   std::string_view kid = {},
                                   std::span<const std::vector<std::uint8_t>> x5c_der = {});

  Result<std::string> ToJson() const;
  Type type() const { return type_; }
  const std::optional<std::string>& kid() const { return kid_; }
  std::size_t key_bits() const;

 private:
  friend struct internal::JwkAccess;
  PublicJwk(std::shared_ptr<const internal::CjoseKey> key, Type type,
            std::optional<std::string> kid, std::vector<std::string> x5c);

  std::shared_ptr<const internal::CjoseKey> key_;
  Type type_;
  std::optional<std::string> kid_;
  std::vector<std::string> x5c_;  // standard base64, as exported
};

// An EC P-256 key pair whose private half stays in this process's memory. Move-only.
class EcKeyPair {
 public:
  static Result<EcKeyPair> Generate(std::string_view kid = {});
  // A private EC P-256 JWK (kty, crv, x, y, d) as JSON, e.g. a dev identity provider's key.
  static Result<EcKeyPair> FromPrivateJwk(const SecretBytes& json);

  EcKeyPair(EcKeyPair&&) noexcept;
  EcKeyPair& operator=(EcKeyPair&&) noexcept;
  ~EcKeyPair();

  Result<PublicJwk> PublicKey() const;
  Result<std::string> PublicJwkJson() const;
  // The private JWK (with "d"), e.g. for a development identity provider's key file.
  Result<SecretBytes> PrivateJwkJson() const;
  const std::optional<std::string>& kid() const { return kid_; }

 private:
  friend struct internal::JwkAccess;
  EcKeyPair(std::unique_ptr<internal::CjoseKey> key, std::optional<std::string> kid);

  std::unique_ptr<internal::CjoseKey> key_;
  std::optional<std::string> kid_;
};

// The KMS protocol's ECDH-ES: HKDF-SHA256(IKM = ECDH shared secret of `mine` and `theirs`,
// salt = empty, info = empty, L = 32). `theirs` must be EC P-256.
Result<SecretBytes> DeriveEphemeralKey(const EcKeyPair& mine, const PublicJwk& theirs);

}  // namespace strongroom::jose

#endif  // STRONGROOM_COMMON_JOSE_JWK_H_
