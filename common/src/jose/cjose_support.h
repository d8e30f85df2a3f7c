// Internal to the JOSE module: RAII for cjose and jansson objects, cjose errors as Errors, and the
// strict parsing of compact serializations that runs before cjose sees any input.
#ifndef STRONGROOM_COMMON_SRC_JOSE_CJOSE_SUPPORT_H_
#define STRONGROOM_COMMON_SRC_JOSE_CJOSE_SUPPORT_H_

#include <cjose/cjose.h>
#include <jansson.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/jose/jose_header.h"
#include "strongroom/common/jose/jwk.h"
#include "strongroom/common/secret_bytes.h"

namespace strongroom::jose::internal {

// Whether cjose and jansson free through the zeroizing deallocator of this module.
bool ZeroizingAllocatorsInstalled();

// Releases a JWK; an oct (symmetric) key's bytes are zeroized first, which cjose does not do.
struct JwkDeleter {
  void operator()(cjose_jwk_t* jwk) const;
};
using JwkPtr = std::unique_ptr<cjose_jwk_t, JwkDeleter>;

struct JweDeleter {
  void operator()(cjose_jwe_t* jwe) const { cjose_jwe_release(jwe); }
};
using JwePtr = std::unique_ptr<cjose_jwe_t, JweDeleter>;

struct JwsDeleter {
  void operator()(cjose_jws_t* jws) const { cjose_jws_release(jws); }
};
using JwsPtr = std::unique_ptr<cjose_jws_t, JwsDeleter>;

struct HeaderDeleter {
  void operator()(cjose_header_t* header) const { cjose_header_release(header); }
};
using HeaderPtr = std::unique_ptr<cjose_header_t, HeaderDeleter>;

struct JsonDeleter {
  void operator()(json_t* json) const { json_decref(json); }
};
using JsonPtr = std::unique_ptr<json_t, JsonDeleter>;

// Memory cjose allocated for the caller (exports, decodings, plaintext).
struct CjoseFree {
  void operator()(void* p) const { cjose_get_dealloc()(p); }
};
template <typename T>
using CjoseBuffer = std::unique_ptr<T, CjoseFree>;

class CjoseKey {
 public:
  explicit CjoseKey(JwkPtr jwk) : jwk_(std::move(jwk)) {}
  cjose_jwk_t* get() const { return jwk_.get(); }

 private:
  JwkPtr jwk_;
};

struct JwkAccess {
  static cjose_jwk_t* Get(const PublicJwk& key) { return key.key_->get(); }
  static cjose_jwk_t* Get(const EcKeyPair& key) { return key.key_->get(); }
};

Error CjoseError(ErrorCode code, std::string_view what, const cjose_err& err);
Error Invalid(std::string message);

// Strict standard base64 (padded) check, for x5c.
bool IsCanonicalBase64(std::string_view text);
std::string Base64Encode(std::span<const std::uint8_t> bytes);

// Parses JSON from untrusted input: duplicate member names are refused.
Result<JsonPtr> ParseJsonObject(std::string_view json, std::string_view what);

// Reads the members JoseHeader holds from a header object.
Result<JoseHeader> HeaderFromJson(const json_t* object, int part_count);

// A compact serialization split and decoded, its header parsed; every part strictly decoded.
struct CompactParts {
  std::vector<std::string_view> encoded;
  std::vector<std::vector<std::uint8_t>> decoded;  // [0] is the header JSON
  JoseHeader header;
  bool has_b64 = false;
};

// Appends the unpadded base64url of `bytes` to `out` (the fastest encoder this CPU has).
void AppendBase64Url(std::span<const std::uint8_t> bytes, std::string& out);

// How many bytes `characters` of base64url decode to (a length of 1 mod 4 decodes to nothing).
std::size_t Base64UrlDecodedSize(std::size_t characters);
// Decodes canonical unpadded base64url into `out` (Base64UrlDecodedSize bytes); false, with `out`
// partly written, when `text` is anything else.
bool DecodeBase64Url(std::string_view text, std::uint8_t* out);

// expected_parts: 3, 5, or 0 for either. decode_all=false decodes the header only.
Result<CompactParts> ParseCompact(std::string_view compact, int expected_parts,
                                  const JoseLimits& limits, bool decode_all = true);

// A cjose header with the given string members.
Result<HeaderPtr> NewHeader(
    std::initializer_list<std::pair<const char*, std::string_view>> members);

// Encrypts and exports compactly; kInvalidArgument when the result exceeds the default limit.
Result<std::string> EncryptWithCjose(const cjose_jwk_t* jwk, cjose_header_t* header,
                                     std::span<const std::uint8_t> plaintext);

// The checks of an A256GCM JWE made before any key is touched: alg, enc, no zip, no crit, IV and
// tag sizes.
Status CheckA256GcmJwe(const CompactParts& parts, std::string_view alg);

// cjose refuses a null data pointer even with length 0.
inline const std::uint8_t* NonNull(std::span<const std::uint8_t> bytes) {
  static const std::uint8_t kEmpty = 0;
  return bytes.empty() ? &kEmpty : bytes.data();
}

}  // namespace strongroom::jose::internal

#endif  // STRONGROOM_COMMON_SRC_JOSE_CJOSE_SUPPORT_H_
