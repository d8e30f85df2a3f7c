// Compact JWE with alg "RSA-OAEP" and enc "A256GCM". Encryption is cjose's. Decryption is OpenSSL
// EVP AES-256-GCM here: cjose can only decrypt with the RSA private key in memory, and the KMS's
// is in an HSM.
#include "strongroom/common/jose/rsa_oaep_jwe.h"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "cjose_support.h"

namespace strongroom::jose {

using internal::Invalid;

namespace {

constexpr std::size_t kMaxEncryptedKeyBytes = 1024;

struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};

Result<SecretBytes> AesGcmDecrypt(const SecretBytes& key, std::span<const std::uint8_t> iv,
                                  std::string_view aad, std::span<const std::uint8_t> ciphertext,
                                  std::span<const std::uint8_t> tag) {
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter> ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) return Error(ErrorCode::kInternal, "EVP_CIPHER_CTX_new failed");
  SecretBytes plaintext(ciphertext.size());
  int length = 0;
  std::uint8_t unused[16];
  const bool ok =
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(iv.size()),
                          nullptr) == 1 &&
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key.data(), iv.data()) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &length,
                        reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      (ciphertext.empty() ||
       EVP_DecryptUpdate(ctx.get(), plaintext.data(), &length, ciphertext.data(),
                         static_cast<int>(ciphertext.size())) == 1) &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag.size()),
                          const_cast<std::uint8_t*>(tag.data())) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), unused, &length) == 1;
  if (!ok) return Invalid("JWE decryption failed");
  return plaintext;
}

}  // namespace

Result<std::string> EncryptRsaOaepJwe(const PublicJwk& rsa, std::optional<std::string_view> kid,
                                      std::span<const std::uint8_t> plaintext) {
  if (rsa.type() != PublicJwk::Type::kRsa) return Invalid("RSA-OAEP needs an RSA key");
  auto header =
      kid.has_value()
          ? internal::NewHeader(
                {{CJOSE_HDR_ALG, "RSA-OAEP"}, {CJOSE_HDR_ENC, "A256GCM"}, {CJOSE_HDR_KID, *kid}})
          : internal::NewHeader({{CJOSE_HDR_ALG, "RSA-OAEP"}, {CJOSE_HDR_ENC, "A256GCM"}});
  if (!header.ok()) return header.error();
  return internal::EncryptWithCjose(internal::JwkAccess::Get(rsa), header->get(), plaintext);
}

Result<DecryptedJwe> DecryptRsaOaepJwe(std::string_view compact, const CekUnwrapper& unwrap_cek,
                                       const JoseLimits& limits) {
  SR_ASSIGN_OR_RETURN(internal::CompactParts parts, internal::ParseCompact(compact, 5, limits));
  SR_RETURN_IF_ERROR(internal::CheckA256GcmJwe(parts, "RSA-OAEP"));
  const std::vector<std::uint8_t>& encrypted_key = parts.decoded[1];
  if (encrypted_key.empty() || encrypted_key.size() > kMaxEncryptedKeyBytes) {
    return Invalid("JWE encrypted key is empty or longer than 1024 bytes");
  }
  Result<SecretBytes> unwrapped = unwrap_cek(encrypted_key);
  SecretBytes cek;
  if (unwrapped.ok() && unwrapped->size() == kA256GcmKeyBytes) {
    cek = std::move(unwrapped).value();
  } else if (unwrapped.ok() || unwrapped.error().code() == ErrorCode::kInvalidArgument) {
    cek = SecretBytes::Random(kA256GcmKeyBytes);
  } else {
    return unwrapped.error();
  }
  SR_ASSIGN_OR_RETURN(SecretBytes plaintext, AesGcmDecrypt(cek, parts.decoded[2], parts.encoded[0],
                                                           parts.decoded[3], parts.decoded[4]));
  DecryptedJwe out{std::move(parts.header), std::move(plaintext)};
  std::copy_n(parts.decoded[2].begin(), out.iv.size(), out.iv.begin());
  std::copy_n(parts.decoded[4].begin(), out.tag.size(), out.tag.begin());
  return out;
}

}  // namespace strongroom::jose
