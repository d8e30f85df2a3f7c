// Compact JWE with alg "dir" and enc "A256GCM", on cjose.
#include "strongroom/common/jose/dir_jwe.h"

#include <openssl/crypto.h>

#include <utility>

#include "cjose_support.h"

namespace strongroom::jose {

using internal::CjoseError;
using internal::Invalid;

namespace internal {

// The checks DecryptDir and DecryptRsaOaepJwe share, made before any key is touched.
Status CheckA256GcmJwe(const CompactParts& parts, std::string_view alg) {
  const JoseHeader& header = parts.header;
  if (header.alg != alg)
    return Invalid("JWE alg \"" + header.alg + "\" is not \"" + std::string(alg) + "\"");
  if (header.enc != "A256GCM") return Invalid("JWE enc is not \"A256GCM\"");
  if (header.zip.has_value()) return Invalid("JWE \"zip\" is refused");
  if (header.has_crit) return Invalid("JWE \"crit\" is refused");
  if (parts.decoded[2].size() != 12) return Invalid("JWE IV is not 12 bytes");
  if (parts.decoded[4].size() != 16) return Invalid("JWE tag is not 16 bytes");
  return OkStatus();
}

Result<std::string> EncryptWithCjose(const cjose_jwk_t* jwk, cjose_header_t* header,
                                     std::span<const std::uint8_t> plaintext) {
  cjose_err err{};
  JwePtr jwe(cjose_jwe_encrypt(jwk, header, NonNull(plaintext), plaintext.size(), &err));
  if (jwe == nullptr) return CjoseError(ErrorCode::kInternal, "JWE encryption failed", err);
  CjoseBuffer<char> compact(cjose_jwe_export(jwe.get(), &err));
  if (compact == nullptr) return CjoseError(ErrorCode::kInternal, "JWE export failed", err);
  std::string out(compact.get());
  if (out.size() > JoseLimits{}.max_compact_bytes) {
    return Invalid("JWE would be larger than " + std::to_string(JoseLimits{}.max_compact_bytes) +
                   " bytes");
  }
  return out;
}

Result<HeaderPtr> NewHeader(
    std::initializer_list<std::pair<const char*, std::string_view>> members) {
  cjose_err err{};
  HeaderPtr header(cjose_header_new(&err));
  if (header == nullptr) return CjoseError(ErrorCode::kInternal, "header allocation failed", err);
  for (const auto& [name, value] : members) {
    if (value.find('\0') != std::string_view::npos) {
      return Invalid(std::string("header member \"") + name + "\" contains a NUL character");
    }
    if (!cjose_header_set(header.get(), name, std::string(value).c_str(), &err)) {
      return CjoseError(ErrorCode::kInternal, "setting a header member failed", err);
    }
  }
  return header;
}

}  // namespace internal

Result<std::string> EncryptDir(std::span<const std::uint8_t> key32, std::string_view kid,
                               std::span<const std::uint8_t> plaintext) {
  if (key32.size() != kA256GcmKeyBytes) return Invalid("A256GCM key is not 32 bytes");
  if (kid.empty()) return Invalid("kid is empty");
  cjose_err err{};
  internal::JwkPtr jwk(cjose_jwk_create_oct_spec(key32.data(), key32.size(), &err));
  if (jwk == nullptr) return CjoseError(ErrorCode::kInternal, "key import failed", err);
  SR_ASSIGN_OR_RETURN(internal::HeaderPtr header, internal::NewHeader({{CJOSE_HDR_ALG, "dir"},
                                                                       {CJOSE_HDR_ENC, "A256GCM"},
                                                                       {CJOSE_HDR_KID, kid}}));
  return internal::EncryptWithCjose(jwk.get(), header.get(), plaintext);
}

Result<DecryptedJwe> DecryptDir(std::string_view compact, const KeyLookup& key_lookup,
                                const JoseLimits& limits) {
  SR_ASSIGN_OR_RETURN(internal::CompactParts parts, internal::ParseCompact(compact, 5, limits));
  SR_RETURN_IF_ERROR(internal::CheckA256GcmJwe(parts, "dir"));
  if (!parts.decoded[1].empty()) return Invalid("JWE with alg \"dir\" has an encrypted key");
  SR_ASSIGN_OR_RETURN(SecretBytes key, key_lookup(parts.header));
  if (key.size() != kA256GcmKeyBytes) return Invalid("the key for this JWE is not 32 bytes");

  cjose_err err{};
  internal::JwkPtr jwk(cjose_jwk_create_oct_spec(key.data(), key.size(), &err));
  if (jwk == nullptr) return CjoseError(ErrorCode::kInternal, "key import failed", err);
  internal::JwePtr jwe(cjose_jwe_import(compact.data(), compact.size(), &err));
  if (jwe == nullptr) return CjoseError(ErrorCode::kInvalidArgument, "JWE was refused", err);
  std::size_t size = 0;
  internal::CjoseBuffer<std::uint8_t> plaintext(
      cjose_jwe_decrypt(jwe.get(), jwk.get(), &size, &err));
  if (plaintext == nullptr) return Invalid("JWE decryption failed");
  DecryptedJwe out{std::move(parts.header),
                   SecretBytes(std::span<const std::uint8_t>(plaintext.get(), size))};
  OPENSSL_cleanse(plaintext.get(), size);
  return out;
}

}  // namespace strongroom::jose
