#include "strongroom/client/content.h"

#include <Poco/Exception.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>
#include <sstream>

#include "strongroom/common/jose/base64url.h"
#include "strongroom/common/jose/dir_jwe.h"
#include "strongroom/common/jose/jose_header.h"

namespace strongroom::client {
namespace {

constexpr std::size_t kChunkBytes = 64 * 1024;

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

std::span<const std::uint8_t> Bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

Error CryptoFailure(const char* what) {
  return Error(ErrorCode::kInternal, std::string("AES-256-GCM ") + what + " failed in OpenSSL");
}

// A chunk buffer that is cleansed when it goes (it holds plaintext).
class Chunk {
 public:
  // Not zero-filled: only what was read or written into it is ever used, and two 64 KiB memsets
  // per call were ~5% of a 64 KiB EncryptFile (bench/sdk_bench.cc). Cleansed when freed.
  Chunk() : bytes_(new unsigned char[kSize]) {}
  ~Chunk() { OPENSSL_cleanse(bytes_.get(), kSize); }
  unsigned char* data() { return bytes_.get(); }
  char* chars() { return reinterpret_cast<char*>(bytes_.get()); }

 private:
  static constexpr std::size_t kSize = kChunkBytes + EVP_MAX_BLOCK_LENGTH;
  std::unique_ptr<unsigned char[]> bytes_;
};

Status CheckReference(const FileReference& ref) {
  if (ref.enc != "A256GCM") {
    return Error(ErrorCode::kInvalidArgument, "a file reference's enc must be A256GCM");
  }
  if (ref.key.size() != 32 || ref.iv.size() != kFileIvBytes || ref.tag.size() != kFileTagBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "a file reference needs a 32-byte key, a 12-byte iv and a 16-byte tag");
  }
  return OkStatus();
}

}  // namespace

Result<std::string> EncryptText(const SecretBytes& key, std::string_view key_uri,
                                std::string_view plaintext) {
  if (key.size() != 32) return Error(ErrorCode::kInvalidArgument, "a content key is 32 bytes");
  if (key_uri.empty()) return Error(ErrorCode::kInvalidArgument, "a content key needs its URI");
  if (plaintext.size() > kMaxTextBytes) {
    return Error(ErrorCode::kInvalidArgument,
                 "a message is at most " + std::to_string(kMaxTextBytes) + " bytes");
  }
  return jose::EncryptDir(key.view(), key_uri, Bytes(plaintext));
}

Result<std::string> ContentKeyUri(std::string_view jwe) {
  SR_ASSIGN_OR_RETURN(jose::JoseHeader header, jose::PeekHeader(jwe));
  if (header.part_count != 5 || header.alg != "dir" || header.enc != "A256GCM" || !header.kid ||
      header.kid->empty()) {
    return Error(ErrorCode::kInvalidArgument, "content is not a dir/A256GCM JWE with a kid");
  }
  return *header.kid;
}

Result<DecryptedText> DecryptText(std::string_view jwe, const ContentKeyLookup& lookup) {
  SR_ASSIGN_OR_RETURN(std::string kid, ContentKeyUri(jwe));
  SR_ASSIGN_OR_RETURN(
      jose::DecryptedJwe opened,
      jose::DecryptDir(jwe, [&](const jose::JoseHeader& header) -> Result<SecretBytes> {
        return lookup(header.kid.value_or(""));
      }));
  return DecryptedText{std::move(kid), std::move(opened.plaintext)};
}

Result<FileReference> EncryptFile(std::istream& in, std::ostream& out, std::string aad,
                                  std::uint64_t total, const Progress& progress) {
  FileReference ref;
  ref.key = SecretBytes::Random(32);
  ref.iv.resize(kFileIvBytes);
  if (RAND_bytes(ref.iv.data(), static_cast<int>(ref.iv.size())) != 1) {
    return Error(ErrorCode::kInternal, "no randomness for a file IV");
  }
  ref.aad = std::move(aad);
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kFileIvBytes, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, ref.key.data(), ref.iv.data()) != 1 ||
      (!ref.aad.empty() && EVP_EncryptUpdate(ctx.get(), nullptr, &n,
                                             reinterpret_cast<const unsigned char*>(ref.aad.data()),
                                             static_cast<int>(ref.aad.size())) != 1)) {
    return CryptoFailure("set-up");
  }
  Chunk plain, sealed;
  std::uint64_t done = 0;
  while (in) {
    in.read(plain.chars(), kChunkBytes);
    const auto got = static_cast<std::size_t>(in.gcount());
    if (got == 0) break;
    if (done + got > kMaxFileBytes) {
      return Error(ErrorCode::kInvalidArgument, "a file is at most 64 GiB");
    }
    if (EVP_EncryptUpdate(ctx.get(), sealed.data(), &n, plain.data(), static_cast<int>(got)) != 1) {
      return CryptoFailure("encryption");
    }
    out.write(sealed.chars(), n);
    if (!out) return Error(ErrorCode::kUnavailable, "writing the encrypted file failed");
    done += got;
    if (progress) progress(done, total);
  }
  if (in.bad()) return Error(ErrorCode::kUnavailable, "reading the file to encrypt failed");
  if (EVP_EncryptFinal_ex(ctx.get(), sealed.data(), &n) != 1) return CryptoFailure("final");
  if (n > 0) out.write(sealed.chars(), n);  // none for GCM
  out.flush();
  if (!out) return Error(ErrorCode::kUnavailable, "writing the encrypted file failed");
  ref.tag.resize(kFileTagBytes);
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kFileTagBytes, ref.tag.data()) != 1) {
    return CryptoFailure("tag");
  }
  ref.size = done;
  return ref;
}

Status DecryptFile(const FileReference& ref, std::istream& in, std::ostream& out,
                   const Progress& progress) {
  SR_RETURN_IF_ERROR(CheckReference(ref));
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  int n = 0;
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kFileIvBytes, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, ref.key.data(), ref.iv.data()) != 1 ||
      (!ref.aad.empty() && EVP_DecryptUpdate(ctx.get(), nullptr, &n,
                                             reinterpret_cast<const unsigned char*>(ref.aad.data()),
                                             static_cast<int>(ref.aad.size())) != 1)) {
    return CryptoFailure("set-up");
  }
  Chunk sealed, plain;
  std::uint64_t done = 0;
  while (in) {
    in.read(sealed.chars(), kChunkBytes);
    const auto got = static_cast<std::size_t>(in.gcount());
    if (got == 0) break;
    if (done + got > kMaxFileBytes || (ref.size != 0 && done + got > ref.size)) {
      return Error(ErrorCode::kDataLoss, "the encrypted file is longer than its reference says");
    }
    if (EVP_DecryptUpdate(ctx.get(), plain.data(), &n, sealed.data(), static_cast<int>(got)) != 1) {
      return CryptoFailure("decryption");
    }
    out.write(plain.chars(), n);
    if (!out) return Error(ErrorCode::kUnavailable, "writing the decrypted file failed");
    done += got;
    if (progress) progress(done, ref.size);
  }
  if (in.bad()) return Error(ErrorCode::kUnavailable, "reading the encrypted file failed");
  if (ref.size != 0 && done != ref.size) {
    return Error(ErrorCode::kDataLoss, "the encrypted file is shorter than its reference says");
  }
  std::vector<std::uint8_t> tag = ref.tag;
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kFileTagBytes, tag.data()) != 1) {
    return CryptoFailure("tag");
  }
  if (EVP_DecryptFinal_ex(ctx.get(), plain.data(), &n) != 1) {
    return Error(ErrorCode::kDataLoss,
                 "the file does not match its reference (wrong key, or the blob was altered)");
  }
  out.flush();
  if (!out) return Error(ErrorCode::kUnavailable, "writing the decrypted file failed");
  return OkStatus();
}

SecretBytes FileReferenceJson(const FileReference& ref) {
  Poco::JSON::Object json;
  json.set("enc", ref.enc);
  std::string key = jose::Base64UrlEncode(ref.key.view());
  json.set("key", key);
  ZeroizeString(key);
  json.set("iv", jose::Base64UrlEncode(std::span<const std::uint8_t>(ref.iv)));
  json.set("aad", ref.aad);
  json.set("loc", ref.loc);
  json.set("tag", jose::Base64UrlEncode(std::span<const std::uint8_t>(ref.tag)));
  if (!ref.name.empty()) json.set("name", ref.name);
  if (ref.size != 0) json.set("size", static_cast<Poco::UInt64>(ref.size));
  std::ostringstream out;
  json.stringify(out);
  std::string text = out.str();
  SecretBytes bytes(Bytes(text));
  ZeroizeString(text);
  return bytes;
}

Result<FileReference> ParseFileReference(std::string_view json) {
  Poco::JSON::Object::Ptr object;
  std::string copy(json);
  try {
    Poco::JSON::Parser parser;
    object = parser.parse(copy).extract<Poco::JSON::Object::Ptr>();
  } catch (const Poco::Exception&) {
  } catch (const std::exception&) {
  }
  ZeroizeString(copy);
  if (!object) return Error(ErrorCode::kInvalidArgument, "a file reference is not a JSON object");
  auto text = [&](const char* name) -> std::string {
    return object->has(name) && object->get(name).isString() ? object->getValue<std::string>(name)
                                                             : "";
  };
  FileReference ref;
  ref.enc = text("enc");
  std::string key = text("key");
  Result<std::vector<std::uint8_t>> key_bytes = jose::Base64UrlDecode(key);
  ZeroizeString(key);
  if (key_bytes.ok()) {
    ref.key = SecretBytes(std::span<const std::uint8_t>(*key_bytes));
    OPENSSL_cleanse(key_bytes->data(), key_bytes->size());
  }
  Result<std::vector<std::uint8_t>> iv = jose::Base64UrlDecode(text("iv"));
  Result<std::vector<std::uint8_t>> tag = jose::Base64UrlDecode(text("tag"));
  if (iv.ok()) ref.iv = std::move(*iv);
  if (tag.ok()) ref.tag = std::move(*tag);
  ref.aad = text("aad");
  ref.loc = text("loc");
  ref.name = text("name");
  if (object->has("size")) {
    try {
      const Poco::Int64 size = object->getValue<Poco::Int64>("size");
      if (size < 0) return Error(ErrorCode::kInvalidArgument, "a file reference's size is < 0");
      ref.size = static_cast<std::uint64_t>(size);
    } catch (const Poco::Exception&) {
      return Error(ErrorCode::kInvalidArgument, "a file reference's size is not a number");
    }
  }
  SR_RETURN_IF_ERROR(CheckReference(ref));
  if (ref.loc.empty()) return Error(ErrorCode::kInvalidArgument, "a file reference has no loc");
  return ref;
}

Result<std::string> SealFileReference(const FileReference& ref, const SecretBytes& key,
                                      std::string_view key_uri) {
  SR_RETURN_IF_ERROR(CheckReference(ref));
  if (ref.loc.empty()) return Error(ErrorCode::kInvalidArgument, "a file reference needs a loc");
  SecretBytes json = FileReferenceJson(ref);
  return EncryptText(key, key_uri, json.as_string_view());
}

Result<FileReference> OpenFileReference(std::string_view jwe, const ContentKeyLookup& lookup) {
  SR_ASSIGN_OR_RETURN(DecryptedText opened, DecryptText(jwe, lookup));
  return ParseFileReference(opened.text.as_string_view());
}

}  // namespace strongroom::client
