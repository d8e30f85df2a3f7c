// Public JWKs, EC P-256 key pairs and the KMS protocol's ECDH-ES derivation, on cjose.
#include "strongroom/common/jose/jwk.h"

#include <openssl/crypto.h>

#include <utility>

#include "cjose_support.h"
#include "strongroom/common/jose/base64url.h"

namespace strongroom::jose {

using internal::CjoseError;
using internal::CjoseKey;
using internal::Invalid;
using internal::JsonPtr;
using internal::JwkPtr;

namespace {

constexpr const char* kPrivateMembers[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};

// A base64url member decoded strictly (cjose's own decoding is lenient).
Result<std::vector<std::uint8_t>> DecodeMember(const json_t* object, const char* name) {
  const json_t* value = json_object_get(object, name);
  if (!json_is_string(value)) {
    return Invalid(std::string("JWK member \"") + name + "\" is missing or not a string");
  }
  auto decoded =
      Base64UrlDecode(std::string_view(json_string_value(value), json_string_length(value)));
  if (!decoded.ok())
    return Invalid(std::string("JWK member \"") + name + "\": " + decoded.error().message());
  return decoded;
}

std::size_t BitLength(std::span<const std::uint8_t> big_endian) {
  std::size_t i = 0;
  while (i < big_endian.size() && big_endian[i] == 0) ++i;
  if (i == big_endian.size()) return 0;
  std::size_t bits = (big_endian.size() - i - 1) * 8;
  for (std::uint8_t top = big_endian[i]; top != 0; top = static_cast<std::uint8_t>(top >> 1))
    ++bits;
  return bits;
}

Status CheckRsaParameters(std::span<const std::uint8_t> n, std::span<const std::uint8_t> e) {
  const std::size_t bits = BitLength(n);
  if (bits < kMinRsaModulusBits || bits > kMaxRsaModulusBits) {
    return Invalid("RSA modulus has " + std::to_string(bits) + " bits, outside " +
                   std::to_string(kMinRsaModulusBits) + "-" + std::to_string(kMaxRsaModulusBits));
  }
  if (e.empty() || e.size() > 8 || (e.back() & 1) == 0 || BitLength(e) < 2) {
    return Invalid("RSA public exponent is not an odd number from 3 to 2^64");
  }
  return OkStatus();
}

Result<std::string> ExportPublicJson(cjose_jwk_t* jwk, const std::vector<std::string>& x5c) {
  cjose_err err{};
  internal::CjoseBuffer<char> json(cjose_jwk_to_json(jwk, /*priv=*/false, &err));
  if (json == nullptr) return CjoseError(ErrorCode::kInternal, "exporting a JWK failed", err);
  if (x5c.empty()) return std::string(json.get());
  JsonPtr object(json_loads(json.get(), 0, nullptr));
  json_t* chain = json_array();
  if (object == nullptr || chain == nullptr)
    return Error(ErrorCode::kInternal, "JSON allocation failed");
  json_object_set_new(object.get(), "x5c", chain);
  for (const std::string& certificate : x5c) {
    json_array_append_new(chain, json_stringn(certificate.data(), certificate.size()));
  }
  internal::CjoseBuffer<char> out(json_dumps(object.get(), JSON_COMPACT | JSON_PRESERVE_ORDER));
  if (out == nullptr) return Error(ErrorCode::kInternal, "JSON serialization failed");
  return std::string(out.get());
}

Status CheckKid(std::string_view kid) {
  if (kid.find('\0') != std::string_view::npos) return Invalid("kid contains a NUL character");
  if (kid.size() > 1024) return Invalid("kid is longer than 1024 bytes");
  return OkStatus();
}

Status SetKid(cjose_jwk_t* jwk, std::string_view kid) {
  SR_RETURN_IF_ERROR(CheckKid(kid));
  cjose_err err{};
  if (!cjose_jwk_set_kid(jwk, kid.data(), kid.size(), &err)) {
    return CjoseError(ErrorCode::kInternal, "setting the kid failed", err);
  }
  return OkStatus();
}

std::optional<std::string> KidOf(const cjose_jwk_t* jwk) {
  const char* kid = cjose_jwk_get_kid(jwk, nullptr);
  return kid == nullptr ? std::nullopt : std::optional<std::string>(kid);
}

// Checks an EC JWK object is P-256 with 32-byte coordinates.
Status CheckEcP256(const json_t* object) {
  const json_t* crv = json_object_get(object, "crv");
  if (!json_is_string(crv) || std::string_view(json_string_value(crv)) != "P-256") {
    return Invalid("EC JWK is not on curve P-256");
  }
  SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> x, DecodeMember(object, "x"));
  SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> y, DecodeMember(object, "y"));
  if (x.size() != 32 || y.size() != 32) return Invalid("EC P-256 coordinates are not 32 bytes");
  return OkStatus();
}

Result<JwkPtr> ImportJson(json_t* object, std::string_view what) {
  cjose_err err{};
  JwkPtr jwk(cjose_jwk_import_json(reinterpret_cast<cjose_header_t*>(object), &err));
  if (jwk == nullptr)
    return CjoseError(ErrorCode::kInvalidArgument, std::string(what) + " was refused", err);
  return jwk;
}

}  // namespace

PublicJwk::PublicJwk(std::shared_ptr<const CjoseKey> key, Type type, std::optional<std::string> kid,
                     std::vector<std::string> x5c)
    : key_(std::move(key)), type_(type), kid_(std::move(kid)), x5c_(std::move(x5c)) {}

Result<PublicJwk> PublicJwk::Parse(std::string_view json) {
  if (json.size() > kMaxJwkJsonBytes) {
    return Invalid("JWK is larger than " + std::to_string(kMaxJwkJsonBytes) + " bytes");
  }
  SR_ASSIGN_OR_RETURN(JsonPtr object, internal::ParseJsonObject(json, "JWK"));
  for (const char* name : kPrivateMembers) {
    if (json_object_get(object.get(), name) != nullptr) {
      return Invalid(std::string("public JWK has private member \"") + name + "\"");
    }
  }
  const json_t* kty = json_object_get(object.get(), "kty");
  if (!json_is_string(kty)) return Invalid("JWK has no string \"kty\"");
  const std::string_view kty_name = json_string_value(kty);
  Type type;
  if (kty_name == "EC") {
    SR_RETURN_IF_ERROR(CheckEcP256(object.get()));
    type = Type::kEcP256;
  } else if (kty_name == "RSA") {
    SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> n, DecodeMember(object.get(), "n"));
    SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> e, DecodeMember(object.get(), "e"));
    SR_RETURN_IF_ERROR(CheckRsaParameters(n, e));
    type = Type::kRsa;
  } else {
    return Invalid("JWK kty is neither \"EC\" nor \"RSA\"");
  }
  const json_t* kid = json_object_get(object.get(), "kid");
  if (kid != nullptr) {
    if (!json_is_string(kid)) return Invalid("JWK kid is not a string");
    SR_RETURN_IF_ERROR(CheckKid(std::string_view(json_string_value(kid), json_string_length(kid))));
  }
  std::vector<std::string> x5c;
  if (const json_t* chain = json_object_get(object.get(), "x5c"); chain != nullptr) {
    if (!json_is_array(chain) || json_array_size(chain) == 0 ||
        json_array_size(chain) > kMaxX5cCertificates) {
      return Invalid("JWK x5c is not an array of 1 to " + std::to_string(kMaxX5cCertificates) +
                     " certificates");
    }
    for (std::size_t i = 0; i < json_array_size(chain); ++i) {
      const json_t* entry = json_array_get(chain, i);
      if (!json_is_string(entry)) return Invalid("JWK x5c entry is not a string");
      std::string certificate(json_string_value(entry), json_string_length(entry));
      if (!internal::IsCanonicalBase64(certificate)) {
        return Invalid("JWK x5c entry is not canonical padded base64");
      }
      x5c.push_back(std::move(certificate));
    }
  }
  SR_ASSIGN_OR_RETURN(JwkPtr jwk, ImportJson(object.get(), "JWK"));
  std::optional<std::string> kid_value = KidOf(jwk.get());
  return PublicJwk(std::make_shared<const CjoseKey>(std::move(jwk)), type, std::move(kid_value),
                   std::move(x5c));
}

Result<PublicJwk> PublicJwk::FromRsa(std::span<const std::uint8_t> n,
                                     std::span<const std::uint8_t> e, std::string_view kid,
                                     std::span<const std::vector<std::uint8_t>> x5c_der) {
  SR_RETURN_IF_ERROR(CheckRsaParameters(n, e));
  if (x5c_der.size() > kMaxX5cCertificates) {
    return Invalid("more than " + std::to_string(kMaxX5cCertificates) + " x5c certificates");
  }
  // cjose copies the spec and never writes through these pointers.
  cjose_jwk_rsa_keyspec spec{};
  spec.n = const_cast<std::uint8_t*>(n.data());
  spec.nlen = n.size();
  spec.e = const_cast<std::uint8_t*>(e.data());
  spec.elen = e.size();
  cjose_err err{};
  JwkPtr jwk(cjose_jwk_create_RSA_spec(&spec, &err));
  if (jwk == nullptr) return CjoseError(ErrorCode::kInvalidArgument, "RSA key was refused", err);
  std::optional<std::string> kid_value;
  if (!kid.empty()) {
    SR_RETURN_IF_ERROR(SetKid(jwk.get(), kid));
    kid_value = std::string(kid);
  }
  std::vector<std::string> x5c;
  for (const std::vector<std::uint8_t>& der : x5c_der) {
    if (der.empty()) return Invalid("x5c certificate is empty");
    x5c.push_back(internal::Base64Encode(der));
  }
  return PublicJwk(std::make_shared<const CjoseKey>(std::move(jwk)), Type::kRsa,
                   std::move(kid_value), std::move(x5c));
}

Result<std::string> PublicJwk::ToJson() const { return ExportPublicJson(key_->get(), x5c_); }

std::size_t PublicJwk::key_bits() const { return cjose_jwk_get_keysize(key_->get(), nullptr); }

EcKeyPair::EcKeyPair(std::unique_ptr<CjoseKey> key, std::optional<std::string> kid)
    : key_(std::move(key)), kid_(std::move(kid)) {}
EcKeyPair::EcKeyPair(EcKeyPair&&) noexcept = default;
EcKeyPair& EcKeyPair::operator=(EcKeyPair&&) noexcept = default;
EcKeyPair::~EcKeyPair() = default;

Result<EcKeyPair> EcKeyPair::Generate(std::string_view kid) {
  cjose_err err{};
  JwkPtr jwk(cjose_jwk_create_EC_random(CJOSE_JWK_EC_P_256, &err));
  if (jwk == nullptr) return CjoseError(ErrorCode::kInternal, "EC key generation failed", err);
  std::optional<std::string> kid_value;
  if (!kid.empty()) {
    SR_RETURN_IF_ERROR(SetKid(jwk.get(), kid));
    kid_value = std::string(kid);
  }
  return EcKeyPair(std::make_unique<CjoseKey>(std::move(jwk)), std::move(kid_value));
}

Result<EcKeyPair> EcKeyPair::FromPrivateJwk(const SecretBytes& json) {
  if (json.size() > kMaxJwkJsonBytes) return Invalid("JWK is too large");
  SR_ASSIGN_OR_RETURN(JsonPtr object, internal::ParseJsonObject(json.as_string_view(), "JWK"));
  const json_t* kty = json_object_get(object.get(), "kty");
  if (!json_is_string(kty) || std::string_view(json_string_value(kty)) != "EC") {
    return Invalid("private JWK is not of kty \"EC\"");
  }
  SR_RETURN_IF_ERROR(CheckEcP256(object.get()));
  const json_t* d = json_object_get(object.get(), "d");
  if (!json_is_string(d)) return Invalid("private JWK has no string \"d\"");
  auto scalar = Base64UrlDecode(std::string_view(json_string_value(d), json_string_length(d)));
  if (!scalar.ok() || scalar->size() != 32) {
    if (scalar.ok()) OPENSSL_cleanse(scalar->data(), scalar->size());
    return Invalid("private JWK \"d\" is not 32 bytes of base64url");
  }
  OPENSSL_cleanse(scalar->data(), scalar->size());
  const json_t* kid = json_object_get(object.get(), "kid");
  if (kid != nullptr && !json_is_string(kid)) return Invalid("JWK kid is not a string");
  if (kid != nullptr) {
    SR_RETURN_IF_ERROR(CheckKid(std::string_view(json_string_value(kid), json_string_length(kid))));
  }
  SR_ASSIGN_OR_RETURN(JwkPtr jwk, ImportJson(object.get(), "private JWK"));
  // jansson keeps no zeroizing allocator: scrub the copy of "d" before the object is freed.
  char* d_text = const_cast<char*>(json_string_value(d));
  OPENSSL_cleanse(d_text, json_string_length(d));
  std::optional<std::string> kid_value = KidOf(jwk.get());
  return EcKeyPair(std::make_unique<CjoseKey>(std::move(jwk)), std::move(kid_value));
}

Result<PublicJwk> EcKeyPair::PublicKey() const {
  SR_ASSIGN_OR_RETURN(std::string json, PublicJwkJson());
  return PublicJwk::Parse(json);
}

Result<std::string> EcKeyPair::PublicJwkJson() const { return ExportPublicJson(key_->get(), {}); }

Result<SecretBytes> EcKeyPair::PrivateJwkJson() const {
  cjose_err err{};
  internal::CjoseBuffer<char> json(cjose_jwk_to_json(key_->get(), /*priv=*/true, &err));
  if (json == nullptr) return CjoseError(ErrorCode::kInternal, "exporting a JWK failed", err);
  // The buffer is wiped by the module's zeroizing deallocator when released.
  std::string_view text(json.get());
  return SecretBytes({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
}

Result<SecretBytes> DeriveEphemeralKey(const EcKeyPair& mine, const PublicJwk& theirs) {
  if (theirs.type() != PublicJwk::Type::kEcP256) {
    return Invalid("ECDH peer key is not an EC P-256 key");
  }
  static const std::uint8_t kNoSalt = 0;
  cjose_err err{};
  JwkPtr derived(cjose_jwk_derive_ecdh_ephemeral_key(
      internal::JwkAccess::Get(mine), internal::JwkAccess::Get(theirs), &kNoSalt, 0, &err));
  if (derived == nullptr)
    return CjoseError(ErrorCode::kInvalidArgument, "ECDH derivation failed", err);
  const std::size_t size = cjose_jwk_get_keysize(derived.get(), nullptr) / 8;
  const auto* bytes =
      static_cast<const std::uint8_t*>(cjose_jwk_get_keydata(derived.get(), nullptr));
  if (bytes == nullptr || size != 32) {
    return Error(ErrorCode::kInternal, "ECDH derivation did not give 32 bytes");
  }
  return SecretBytes(std::span<const std::uint8_t>(bytes, size));
}

}  // namespace strongroom::jose
