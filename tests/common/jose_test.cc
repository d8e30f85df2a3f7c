// strongroom::jose: round trips, every refusal, tampering, an independent OpenSSL computation of
// the KMS ECDH-ES derivation, and interoperability with python3-jwcrypto.
#include "strongroom/common/jose.h"

#include <Poco/Pipe.h>
#include <Poco/PipeStream.h>
#include <Poco/Process.h>
#include <Poco/StreamCopier.h>
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "../../common/src/jose/cjose_support.h"

namespace strongroom::jose {
namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes ToBytes(std::string_view text) {
  Bytes out(text.size());
  if (!text.empty()) std::memcpy(out.data(), text.data(), text.size());
  return out;
}

std::string ToString(std::span<const std::uint8_t> bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::vector<std::string> Split(std::string_view compact) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (std::size_t dot; (dot = compact.find('.', start)) != std::string_view::npos;
       start = dot + 1) {
    parts.emplace_back(compact.substr(start, dot - start));
  }
  parts.emplace_back(compact.substr(start));
  return parts;
}

std::string Join(const std::vector<std::string>& parts) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? "." : "") + parts[i];
  return out;
}

// `compact` with its protected header replaced by `header_json`.
std::string WithHeader(std::string_view compact, std::string_view header_json) {
  std::vector<std::string> parts = Split(compact);
  parts[0] = Base64UrlEncode(header_json);
  return Join(parts);
}

// `compact` with one byte of part `index` flipped.
std::string Flip(std::string_view compact, std::size_t index) {
  std::vector<std::string> parts = Split(compact);
  Bytes bytes = Base64UrlDecode(parts[index]).value();
  bytes[bytes.size() / 2] ^= 0x01;
  parts[index] = Base64UrlEncode(bytes);
  return Join(parts);
}

void ExpectInvalid(const Error& error, std::string_view fragment) {
  EXPECT_EQ(error.code(), ErrorCode::kInvalidArgument) << error.ToString();
  EXPECT_NE(error.message().find(fragment), std::string::npos) << error.ToString();
}

// ---------------------------------------------------------------- OpenSSL, independently.

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;

Bytes BnParam(const EVP_PKEY* key, const char* name, int pad = 0) {
  BIGNUM* bn = nullptr;
  EXPECT_EQ(EVP_PKEY_get_bn_param(key, name, &bn), 1) << name;
  Bytes out(pad != 0 ? static_cast<std::size_t>(pad) : static_cast<std::size_t>(BN_num_bytes(bn)));
  BN_bn2binpad(bn, out.data(), static_cast<int>(out.size()));
  BN_clear_free(bn);
  return out;
}

std::string EcJwkJson(const EVP_PKEY* key, bool with_private) {
  std::string json = R"({"kty":"EC","crv":"P-256","x":")" +
                     Base64UrlEncode(BnParam(key, OSSL_PKEY_PARAM_EC_PUB_X, 32)) + R"(","y":")" +
                     Base64UrlEncode(BnParam(key, OSSL_PKEY_PARAM_EC_PUB_Y, 32)) + "\"";
  if (with_private) {
    json += R"(,"d":")" + Base64UrlEncode(BnParam(key, OSSL_PKEY_PARAM_PRIV_KEY, 32)) + "\"";
  }
  return json + "}";
}

Bytes OpenSslEcdhHkdf(EVP_PKEY* mine, EVP_PKEY* theirs) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new(mine, nullptr));
  std::size_t secret_size = 0;
  EXPECT_EQ(EVP_PKEY_derive_init(ctx.get()), 1);
  EXPECT_EQ(EVP_PKEY_derive_set_peer(ctx.get(), theirs), 1);
  EXPECT_EQ(EVP_PKEY_derive(ctx.get(), nullptr, &secret_size), 1);
  Bytes secret(secret_size);
  EXPECT_EQ(EVP_PKEY_derive(ctx.get(), secret.data(), &secret_size), 1);

  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  EVP_KDF_CTX* kctx = EVP_KDF_CTX_new(kdf);
  char digest[] = "SHA256";
  // Salt and info are absent, which HKDF (RFC 5869) treats as empty.
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, secret.data(), secret.size()),
      OSSL_PARAM_construct_end()};
  Bytes okm(32);
  EXPECT_EQ(EVP_KDF_derive(kctx, okm.data(), okm.size(), params), 1);
  EVP_KDF_CTX_free(kctx);
  EVP_KDF_free(kdf);
  return okm;
}

PkeyPtr GenerateRsa() { return PkeyPtr(EVP_RSA_gen(2048)); }

PublicJwk RsaPublicJwk(const EVP_PKEY* key, std::string_view kid = {}) {
  return PublicJwk::FromRsa(BnParam(key, OSSL_PKEY_PARAM_RSA_N),
                            BnParam(key, OSSL_PKEY_PARAM_RSA_E), kid)
      .value();
}

// An RS256 or PS256 signer, standing in for the HSM.
JwsSigner RsaSigner(EVP_PKEY* key, bool pss) {
  return [key, pss](std::span<const std::uint8_t> input) -> Result<Bytes> {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    EVP_PKEY_CTX* pctx = nullptr;
    if (EVP_DigestSignInit(md.get(), &pctx, EVP_sha256(), nullptr, key) != 1) {
      return Error(ErrorCode::kInternal, "sign init");
    }
    if (pss) {
      EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
      EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST);
      EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256());
    }
    std::size_t size = 0;
    EVP_DigestSign(md.get(), nullptr, &size, input.data(), input.size());
    Bytes signature(size);
    if (EVP_DigestSign(md.get(), signature.data(), &size, input.data(), input.size()) != 1) {
      return Error(ErrorCode::kInternal, "sign");
    }
    signature.resize(size);
    return signature;
  };
}

// The HSM's RSA-OAEP (SHA-1) unwrap, in memory.
CekUnwrapper RsaOaepUnwrapper(EVP_PKEY* key) {
  return [key](std::span<const std::uint8_t> encrypted) -> Result<SecretBytes> {
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new(key, nullptr));
    std::size_t size = 0;
    if (EVP_PKEY_decrypt_init(ctx.get()) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_decrypt(ctx.get(), nullptr, &size, encrypted.data(), encrypted.size()) != 1) {
      return Error(ErrorCode::kInvalidArgument, "unwrap init");
    }
    SecretBytes cek(size);
    if (EVP_PKEY_decrypt(ctx.get(), cek.data(), &size, encrypted.data(), encrypted.size()) != 1) {
      return Error(ErrorCode::kInvalidArgument, "bad ciphertext");
    }
    cek.Truncate(size);
    return cek;
  };
}

// ---------------------------------------------------------------- base64url

TEST(Base64UrlTest, EncodesRfc4648VectorsWithoutPadding) {
  EXPECT_EQ(Base64UrlEncode(std::string_view("")), "");
  EXPECT_EQ(Base64UrlEncode(std::string_view("f")), "Zg");
  EXPECT_EQ(Base64UrlEncode(std::string_view("fo")), "Zm8");
  EXPECT_EQ(Base64UrlEncode(std::string_view("foo")), "Zm9v");
  EXPECT_EQ(Base64UrlEncode(std::string_view("foobar")), "Zm9vYmFy");
  EXPECT_EQ(Base64UrlEncode(Bytes{0xfb, 0xff}), "-_8");
}

TEST(Base64UrlTest, DecodeRoundTripsEveryLength) {
  for (std::size_t size = 0; size < 40; ++size) {
    Bytes bytes(size);
    for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(i * 37 + 200);
    auto decoded = Base64UrlDecode(Base64UrlEncode(bytes));
    ASSERT_TRUE(decoded.ok()) << decoded.error().ToString();
    EXPECT_EQ(*decoded, bytes);
  }
}

TEST(Base64UrlTest, DecodeRefusesPaddingBadCharactersAndNonCanonicalBits) {
  for (std::string_view bad : {"Zg==", "Zg=", "Zm8=", "Z", "Zm9vY", "Zh", "Zm9", "Zm+v", "Zm/v",
                               "Zm9v ", " Zm9v", "Zm\n9v", "Zm9v.", "Zg=x"}) {
    auto decoded = Base64UrlDecode(bad);
    ASSERT_FALSE(decoded.ok()) << bad;
    EXPECT_EQ(decoded.error().code(), ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(Base64UrlDecode(std::string_view("Zm\0v", 4)).ok());
  EXPECT_EQ(Base64UrlDecode("-_8").value(), (Bytes{0xfb, 0xff}));
}

// Every byte outside the alphabet, at every position of encodings of every length remainder, is
// refused; so is every non-zero unused bit of the last character; everything else decodes to what
// was encoded.
TEST(Base64UrlTest, TheDecoderChecksEveryCharacterAndTheLastOnesUnusedBits) {
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (std::size_t size = 0; size < 14; ++size) {
    Bytes bytes(size);
    for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::uint8_t>(i * 91 + 7);
    const std::string text = Base64UrlEncode(bytes);
    ASSERT_EQ(Base64UrlDecode(text).value(), bytes);
    for (std::size_t at = 0; at < text.size(); ++at) {
      for (int c = 0; c < 256; ++c) {
        if (alphabet.find(static_cast<char>(c)) != std::string::npos) continue;
        std::string bad = text;
        bad[at] = static_cast<char>(c);
        ASSERT_FALSE(Base64UrlDecode(bad).ok()) << size << " " << at << " " << c;
      }
    }
    if (text.size() % 4 == 0) continue;
    const int unused = text.size() % 4 == 2 ? 4 : 2;  // low bits of the last character
    const std::size_t last = alphabet.find(text.back());
    for (int bit = 0; bit < unused; ++bit) {
      std::string bad = text;
      bad.back() = alphabet[last | (std::size_t{1} << bit)];
      EXPECT_FALSE(Base64UrlDecode(bad).ok()) << bad;
    }
  }
}

// ---------------------------------------------------------------- dir JWE

// A dir/A256GCM JWE under `key` with the protected header `header_json` as given (another
// library's member order, escapes, more members), sealed here with OpenSSL.
std::string SealWithHeader(const SecretBytes& key, std::string_view header_json,
                           const Bytes& plaintext) {
  const std::string header = Base64UrlEncode(header_json);
  Bytes iv(12, 0x42), ciphertext(plaintext.size()), tag(16);
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(),
                                                                      EVP_CIPHER_CTX_free);
  int n = 0;
  EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key.data(), iv.data());
  EVP_EncryptUpdate(ctx.get(), nullptr, &n, reinterpret_cast<const std::uint8_t*>(header.data()),
                    static_cast<int>(header.size()));
  if (!plaintext.empty()) {
    EVP_EncryptUpdate(ctx.get(), ciphertext.data(), &n, plaintext.data(),
                      static_cast<int>(plaintext.size()));
  }
  std::uint8_t final_block[16];
  EVP_EncryptFinal_ex(ctx.get(), final_block, &n);
  EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, 16, tag.data());
  return header + ".." + Base64UrlEncode(iv) + "." + Base64UrlEncode(ciphertext) + "." +
         Base64UrlEncode(tag);
}

class DirJweTest : public ::testing::Test {
 protected:
  SecretBytes key_ = SecretBytes::Random(32);
  Bytes plaintext_ = ToBytes("the KMS says hello");
  int lookups_ = 0;

  KeyLookup Lookup() {
    return [this](const JoseHeader& header) -> Result<SecretBytes> {
      ++lookups_;
      if (header.kid != "kms-ephemeral-1") return Error(ErrorCode::kNotFound, "unknown kid");
      return SecretBytes(key_.view());
    };
  }
  std::string Encrypt() { return EncryptDir(key_.view(), "kms-ephemeral-1", plaintext_).value(); }
};

TEST_F(DirJweTest, DecryptDirReturnsPlaintextAndHeaderWhenEncryptedByEncryptDir) {
  const std::string compact = Encrypt();
  std::vector<std::string> parts = Split(compact);
  ASSERT_EQ(parts.size(), 5u);
  EXPECT_EQ(parts[1], "");
  std::string header = ToString(Base64UrlDecode(parts[0]).value());
  std::erase(header, ' ');  // cjose writes ", " and ": " between members
  EXPECT_EQ(header, R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1"})");

  auto decrypted = DecryptDir(compact, Lookup());
  ASSERT_TRUE(decrypted.ok()) << decrypted.error().ToString();
  EXPECT_EQ(ToString(decrypted->plaintext.view()), "the KMS says hello");
  EXPECT_EQ(decrypted->header.alg, "dir");
  EXPECT_EQ(decrypted->header.enc, "A256GCM");
  EXPECT_EQ(decrypted->header.kid, "kms-ephemeral-1");
  EXPECT_EQ(decrypted->header.part_count, 5);
}

TEST_F(DirJweTest, EmptyAndLargePlaintextsRoundTrip) {
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{100000}}) {
    plaintext_.assign(size, 0x5a);
    auto decrypted = DecryptDir(Encrypt(), Lookup());
    ASSERT_TRUE(decrypted.ok()) << size << ": " << decrypted.error().ToString();
    EXPECT_EQ(decrypted->plaintext.size(), size);
  }
}

// EncryptDir encrypts and encodes in pieces of 12,288 bytes with encoders of its own (48 bytes per
// AVX-512 VBMI step, 24 per AVX2 step, a table for the rest): with each encoder this CPU can run,
// every part must be the canonical base64url cjose's codec writes, at every length around the
// pieces and the steps, and what it wrote must open.
TEST_F(DirJweTest, EncryptDirPartsAreCanonicalBase64UrlAtEveryLengthAroundItsPieces) {
  using internal::Base64UrlEncoder;
  const Base64UrlEncoder best = internal::CurrentBase64UrlEncoder();
  struct Restore {
    ~Restore() { internal::UseBase64UrlEncoder(Base64UrlEncoder::kAvx512Vbmi); }
  } restore;
  for (Base64UrlEncoder wanted :
       {Base64UrlEncoder::kScalar, Base64UrlEncoder::kAvx2, Base64UrlEncoder::kAvx512Vbmi}) {
    const Base64UrlEncoder used = internal::UseBase64UrlEncoder(wanted);
    EXPECT_LE(used, wanted);
    SCOPED_TRACE("encoder " + std::to_string(static_cast<int>(used)));
    for (std::size_t size : {2,  3,  4,  5,   6,   27,  28,   29,    51,    52,    53,    75,
                             76, 77, 99, 100, 101, 124, 1000, 12287, 12288, 12289, 24577, 65536}) {
      const SecretBytes random = SecretBytes::Random(size);
      plaintext_.assign(random.view().begin(), random.view().end());
      const std::string compact = Encrypt();
      const std::vector<std::string> parts = Split(compact);
      ASSERT_EQ(parts.size(), 5u);
      for (const std::string& part : parts) {
        auto decoded = Base64UrlDecode(part);
        ASSERT_TRUE(decoded.ok()) << size << ": " << decoded.error().ToString();
        EXPECT_EQ(Base64UrlEncode(*decoded), part) << size;
      }
      EXPECT_EQ(Base64UrlDecode(parts[3])->size(), size);
      auto decrypted = DecryptDir(compact, Lookup());
      ASSERT_TRUE(decrypted.ok()) << size << ": " << decrypted.error().ToString();
      EXPECT_TRUE(std::ranges::equal(decrypted->plaintext.view(), plaintext_)) << size;
    }
  }
  EXPECT_EQ(internal::UseBase64UrlEncoder(Base64UrlEncoder::kAvx512Vbmi), best);
}

TEST_F(DirJweTest, AKidThatNeedsJsonEscapingRoundTrips) {
  const std::string kid = "kms://k\"ey\\/\u00e9\n1";
  const std::string compact = EncryptDir(key_.view(), kid, plaintext_).value();
  auto decrypted = DecryptDir(compact, [&](const JoseHeader& header) -> Result<SecretBytes> {
    if (header.kid != kid) return Error(ErrorCode::kNotFound, "unknown kid");
    return SecretBytes(key_.view());
  });
  ASSERT_TRUE(decrypted.ok()) << decrypted.error().ToString();
  EXPECT_EQ(decrypted->header.kid, kid);
}

TEST_F(DirJweTest, EncryptDirRefusesBadKeyEmptyKidAndOversizedOutput) {
  ExpectInvalid(EncryptDir(Bytes(16), "k", plaintext_).error(), "32 bytes");
  ExpectInvalid(EncryptDir(key_.view(), "", plaintext_).error(), "kid");
  ExpectInvalid(EncryptDir(key_.view(), "k", Bytes(800 * 1024)).error(), "larger");
}

TEST_F(DirJweTest, DecryptDirRefusesOtherAlgsAndEncsBeforeLookingUpAKey) {
  const std::string compact = Encrypt();
  const std::map<std::string, std::string> refused = {
      {R"({"alg":"none","enc":"A256GCM","kid":"kms-ephemeral-1"})", "alg"},
      {R"({"alg":"RSA1_5","enc":"A256GCM","kid":"kms-ephemeral-1"})", "alg"},
      {R"({"alg":"RSA-OAEP","enc":"A256GCM","kid":"kms-ephemeral-1"})", "alg"},
      {R"({"alg":"DIR","enc":"A256GCM","kid":"kms-ephemeral-1"})", "alg"},
      {R"({"alg":"dir","enc":"A128GCM","kid":"kms-ephemeral-1"})", "enc"},
      {R"({"alg":"dir","enc":"A256CBC-HS512","kid":"kms-ephemeral-1"})", "enc"},
      {R"({"alg":"dir","kid":"kms-ephemeral-1"})", "enc"},
      {R"({"alg":"dir","enc":"A256GCM","zip":"DEF","kid":"kms-ephemeral-1"})", "zip"},
      {R"({"alg":"dir","enc":"A256GCM","crit":["exp"],"exp":1,"kid":"kms-ephemeral-1"})", "crit"},
      {R"({"alg":"dir","alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1"})", "JSON"},
      {R"({"enc":"A256GCM","kid":"kms-ephemeral-1"})", "alg"},
      {R"({"alg":1,"enc":"A256GCM"})", "alg"},
      {R"({"alg":"dir","enc":"A256GCM","kid":7})", "kid"},
      {R"(["alg","dir"])", "object"},
      {R"({"alg":"dir",)", "JSON"},
  };
  for (const auto& [header, fragment] : refused) {
    auto result = DecryptDir(WithHeader(compact, header), Lookup());
    ASSERT_FALSE(result.ok()) << header;
    ExpectInvalid(result.error(), fragment);
  }
  EXPECT_EQ(lookups_, 0);
}

TEST_F(DirJweTest, DecryptDirRefusesMalformedSerializations) {
  const std::string compact = Encrypt();
  std::vector<std::string> parts = Split(compact);

  std::vector<std::string> with_key = parts;
  with_key[1] = Base64UrlEncode(Bytes(32, 1));
  ExpectInvalid(DecryptDir(Join(with_key), Lookup()).error(), "encrypted key");

  std::vector<std::string> short_iv = parts;
  short_iv[2] = Base64UrlEncode(Bytes(8));
  ExpectInvalid(DecryptDir(Join(short_iv), Lookup()).error(), "IV");

  std::vector<std::string> short_tag = parts;
  short_tag[4] = short_tag[4].substr(0, 16);
  ExpectInvalid(DecryptDir(Join(short_tag), Lookup()).error(), "tag");

  std::vector<std::string> padded = parts;
  padded[3] += "=";
  ExpectInvalid(DecryptDir(Join(padded), Lookup()).error(), "base64url");

  ExpectInvalid(DecryptDir(compact + ".", Lookup()).error(), "parts");
  ExpectInvalid(DecryptDir(compact + ".AA.AA", Lookup()).error(), "parts");
  ExpectInvalid(DecryptDir(compact.substr(0, compact.rfind('.')), Lookup()).error(), "parts");
  ExpectInvalid(DecryptDir("", Lookup()).error(), "parts");
  ExpectInvalid(DecryptDir(compact, Lookup(), JoseLimits{.max_compact_bytes = 64}).error(),
                "larger");
  ExpectInvalid(DecryptDir(compact, Lookup(), JoseLimits{.max_header_bytes = 16}).error(),
                "header");
  EXPECT_EQ(lookups_, 0);
}

TEST_F(DirJweTest, DecryptDirFailsWhenAnyPartIsTampered) {
  const std::string compact = Encrypt();
  for (std::size_t index : {2u, 3u, 4u}) {
    ExpectInvalid(DecryptDir(Flip(compact, index), Lookup()).error(), "decryption failed");
  }
  // A header that still parses and names the same key, but is not the one that was encrypted.
  const std::string reordered =
      WithHeader(compact, R"({"enc":"A256GCM","alg":"dir","kid":"kms-ephemeral-1"})");
  ExpectInvalid(DecryptDir(reordered, Lookup()).error(), "decryption failed");
}

TEST_F(DirJweTest, DecryptDirFailsWithTheWrongKey) {
  const std::string compact = Encrypt();
  KeyLookup wrong = [](const JoseHeader&) -> Result<SecretBytes> {
    return SecretBytes::Random(32);
  };
  ExpectInvalid(DecryptDir(compact, wrong).error(), "decryption failed");
}

TEST_F(DirJweTest, DecryptDirPassesLookupErrorsThroughAndRefusesShortKeys) {
  const std::string compact = EncryptDir(key_.view(), "someone-else", plaintext_).value();
  EXPECT_EQ(DecryptDir(compact, Lookup()).error().code(), ErrorCode::kNotFound);
  KeyLookup short_key = [](const JoseHeader&) -> Result<SecretBytes> {
    return SecretBytes::Random(16);
  };
  ExpectInvalid(DecryptDir(compact, short_key).error(), "32 bytes");
}

// EncryptDir's own header is read without the JSON parser; any other header goes through it, with
// the same result for an equivalent one and the same refusals for a bad one.
TEST_F(DirJweTest, HeadersOtherThanEncryptDirsAreReadAlike) {
  for (std::string_view header :
       {R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1"})",
        R"({"kid":"kms-ephemeral-1","enc":"A256GCM","alg":"dir"})",
        R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral\u002d1"})",
        R"({"alg":"dir", "enc":"A256GCM", "kid":"kms-ephemeral-1"})",
        R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1"} )",
        R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1","typ":"JWE"})"}) {
    auto opened = DecryptDir(SealWithHeader(key_, header, plaintext_), Lookup());
    ASSERT_TRUE(opened.ok()) << header << ": " << opened.error().ToString();
    EXPECT_EQ(Bytes(opened->plaintext.data(), opened->plaintext.data() + opened->plaintext.size()),
              plaintext_);
    EXPECT_EQ(opened->header.kid, "kms-ephemeral-1") << header;
    EXPECT_EQ(opened->header.alg, "dir") << header;
  }
  for (std::string_view header :
       {R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1","kid":"other"})",
        R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1","zip":"DEF"})",
        R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1","crit":["x"]})",
        R"({"alg":"dir","enc":"A256GCM","kid":"kms-ephemeral-1")",
        R"({"alg":"dir","enc":"A128GCM","kid":"kms-ephemeral-1"})"}) {
    const std::string compact = SealWithHeader(key_, header, plaintext_);
    EXPECT_FALSE(DecryptDir(compact, Lookup()).ok()) << header;
  }
}

TEST_F(DirJweTest, PeekHeaderReadsJweAndJwsHeadersWithoutVerifying) {
  auto jwe = PeekHeader(Flip(Encrypt(), 4));
  ASSERT_TRUE(jwe.ok()) << jwe.error().ToString();
  EXPECT_EQ(jwe->part_count, 5);
  EXPECT_EQ(jwe->alg, "dir");
  EXPECT_EQ(jwe->enc, "A256GCM");
  EXPECT_EQ(jwe->kid, "kms-ephemeral-1");
  EXPECT_FALSE(jwe->typ.has_value());

  const std::string jws =
      Base64UrlEncode(std::string_view(R"({"alg":"PS256","typ":"JWT","kid":"kms"})")) + ".e30.AA";
  auto header = PeekHeader(jws);
  ASSERT_TRUE(header.ok()) << header.error().ToString();
  EXPECT_EQ(header->part_count, 3);
  EXPECT_EQ(header->alg, "PS256");
  EXPECT_EQ(header->typ, "JWT");
  EXPECT_EQ(header->kid, "kms");
  EXPECT_FALSE(header->enc.has_value());

  ExpectInvalid(PeekHeader("a.b").error(), "parts");
  ExpectInvalid(PeekHeader("a.b.c.d").error(), "parts");
  ExpectInvalid(PeekHeader("!!.e30.AA").error(), "base64url");
}

// ---------------------------------------------------------------- JWK

TEST(JwkTest, EcKeyPairExportsAPublicJwkThatParses) {
  auto pair = EcKeyPair::Generate("client-1");
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  const std::string json = pair->PublicJwkJson().value();
  EXPECT_NE(json.find(R"("kty":"EC")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("crv":"P-256")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("kid":"client-1")"), std::string::npos) << json;
  EXPECT_EQ(json.find(R"("d")"), std::string::npos);

  auto parsed = PublicJwk::Parse(json);
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->type(), PublicJwk::Type::kEcP256);
  EXPECT_EQ(parsed->kid(), "client-1");
  EXPECT_EQ(parsed->ToJson().value(), json);
}

TEST(JwkTest, ParseRefusesPrivateOtherCurvesOffCurvePointsAndJunk) {
  PkeyPtr ec(EVP_EC_gen("P-256"));
  const std::string public_json = EcJwkJson(ec.get(), false);
  ASSERT_TRUE(PublicJwk::Parse(public_json).ok());
  ExpectInvalid(PublicJwk::Parse(EcJwkJson(ec.get(), true)).error(), "private member \"d\"");

  std::string p384 = public_json;
  p384.replace(p384.find("P-256"), 5, "P-384");
  ExpectInvalid(PublicJwk::Parse(p384).error(), "P-256");

  Bytes y = BnParam(ec.get(), OSSL_PKEY_PARAM_EC_PUB_Y, 32);
  y[31] ^= 0x01;
  const std::string off_curve = R"({"kty":"EC","crv":"P-256","x":")" +
                                Base64UrlEncode(BnParam(ec.get(), OSSL_PKEY_PARAM_EC_PUB_X, 32)) +
                                R"(","y":")" + Base64UrlEncode(y) + "\"}";
  ExpectInvalid(PublicJwk::Parse(off_curve).error(), "refused");

  for (std::string_view junk :
       {"", "{", "[]", "null", R"({"kty":"oct","k":"AAAA"})", R"({"kty":"EC"})",
        R"({"kty":"RSA","n":"AQAB","e":"AQAB"})", R"({"kty":"EC","kty":"EC"})"}) {
    auto result = PublicJwk::Parse(junk);
    ASSERT_FALSE(result.ok()) << junk;
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument) << junk;
  }
  ExpectInvalid(PublicJwk::Parse(std::string(kMaxJwkJsonBytes + 1, ' ')).error(), "larger");
}

TEST(JwkTest, FromRsaExportsX5cInStandardBase64AndParsesBack) {
  PkeyPtr rsa = GenerateRsa();
  const Bytes n = BnParam(rsa.get(), OSSL_PKEY_PARAM_RSA_N);
  const Bytes e = BnParam(rsa.get(), OSSL_PKEY_PARAM_RSA_E);
  const std::vector<Bytes> chain = {Bytes{0xfb, 0xff, 0x01, 0x02}, Bytes{0x30, 0x82}};
  auto jwk = PublicJwk::FromRsa(n, e, "kms-identity", chain);
  ASSERT_TRUE(jwk.ok()) << jwk.error().ToString();
  EXPECT_EQ(jwk->type(), PublicJwk::Type::kRsa);
  EXPECT_EQ(jwk->key_bits(), 2048u);
  const std::string json = jwk->ToJson().value();
  EXPECT_NE(json.find(R"("kty":"RSA")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("e":"AQAB")"), std::string::npos) << json;
  EXPECT_NE(json.find(R"("n":")" + Base64UrlEncode(n) + "\""), std::string::npos);
  EXPECT_NE(json.find(R"("x5c":["+/8BAg==","MII="])"), std::string::npos) << json;

  auto parsed = PublicJwk::Parse(json);
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_EQ(parsed->kid(), "kms-identity");
  EXPECT_EQ(parsed->ToJson().value(), json);

  std::string url_x5c = json;
  url_x5c.replace(url_x5c.find("+/8BAg=="), 8, "-_8BAg==");
  ExpectInvalid(PublicJwk::Parse(url_x5c).error(), "x5c");
  std::string unpadded = json;
  unpadded.replace(unpadded.find("MII="), 4, "MII");
  ExpectInvalid(PublicJwk::Parse(unpadded).error(), "x5c");
}

TEST(JwkTest, FromRsaRefusesSmallModuliAndBadExponents) {
  ExpectInvalid(PublicJwk::FromRsa(Bytes(128, 0xff), Bytes{1, 0, 1}).error(), "bits");
  ExpectInvalid(PublicJwk::FromRsa(Bytes(256, 0xff), Bytes{}).error(), "exponent");
  ExpectInvalid(PublicJwk::FromRsa(Bytes(256, 0xff), Bytes{1, 0, 0}).error(), "exponent");
  ExpectInvalid(PublicJwk::FromRsa(Bytes(256, 0xff), Bytes{1}).error(), "exponent");
}

// ---------------------------------------------------------------- ECDH-ES

TEST(EcdhTest, DeriveEphemeralKeyEqualsOpenSslEcdhThenHkdfSha256) {
  PkeyPtr mine(EVP_EC_gen("P-256"));
  PkeyPtr theirs(EVP_EC_gen("P-256"));
  const std::string private_json = EcJwkJson(mine.get(), true);
  auto pair = EcKeyPair::FromPrivateJwk(SecretBytes(ToBytes(private_json)));
  ASSERT_TRUE(pair.ok()) << pair.error().ToString();
  auto peer = PublicJwk::Parse(EcJwkJson(theirs.get(), false));
  ASSERT_TRUE(peer.ok()) << peer.error().ToString();

  auto derived = DeriveEphemeralKey(*pair, *peer);
  ASSERT_TRUE(derived.ok()) << derived.error().ToString();
  const Bytes expected = OpenSslEcdhHkdf(mine.get(), theirs.get());
  ASSERT_EQ(derived->size(), 32u);
  EXPECT_TRUE(ConstantTimeEquals(derived->view(), expected));
}

TEST(EcdhTest, BothSidesDeriveTheSameKey) {
  auto kms = EcKeyPair::Generate("kms").value();
  auto client = EcKeyPair::Generate("client").value();
  auto a = DeriveEphemeralKey(kms, client.PublicKey().value());
  auto b = DeriveEphemeralKey(client, kms.PublicKey().value());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(ConstantTimeEquals(a->view(), b->view()));
  auto other = DeriveEphemeralKey(kms, EcKeyPair::Generate().value().PublicKey().value());
  EXPECT_FALSE(ConstantTimeEquals(a->view(), other->view()));
}

TEST(EcdhTest, DeriveEphemeralKeyRefusesRsaPeers) {
  PkeyPtr rsa = GenerateRsa();
  ExpectInvalid(DeriveEphemeralKey(EcKeyPair::Generate().value(), RsaPublicJwk(rsa.get())).error(),
                "P-256");
}

TEST(EcdhTest, FromPrivateJwkRefusesPublicAndMalformedKeys) {
  PkeyPtr ec(EVP_EC_gen("P-256"));
  ExpectInvalid(EcKeyPair::FromPrivateJwk(SecretBytes(ToBytes(EcJwkJson(ec.get(), false)))).error(),
                "\"d\"");
  std::string short_d = EcJwkJson(ec.get(), true);
  short_d.insert(short_d.find(R"("d":")") + 5, "AAAA");
  EXPECT_FALSE(EcKeyPair::FromPrivateJwk(SecretBytes(ToBytes(short_d))).ok());
}

// ---------------------------------------------------------------- JWS

constexpr std::string_view kEs256[] = {"ES256"};
constexpr std::string_view kRsaAlgs[] = {"RS256", "PS256"};
constexpr std::string_view kEverything[] = {"ES256", "RS256", "PS256", "HS256", "none", "ES384"};

class JwsTest : public ::testing::Test {
 protected:
  EcKeyPair key_ = EcKeyPair::Generate("idp-1").value();
  PublicJwk public_ = key_.PublicKey().value();
  Bytes payload_ = ToBytes(R"({"sub":"alice","aud":"kms"})");

  std::string Sign() {
    return SignJws(key_, "ES256", payload_, {{"kid", "idp-1"}, {"typ", "JWT"}}).value();
  }
};

TEST_F(JwsTest, VerifyJwsAcceptsWhatSignJwsSigned) {
  auto verified = VerifyJws(Sign(), public_, kEs256);
  ASSERT_TRUE(verified.ok()) << verified.error().ToString();
  EXPECT_EQ(verified->payload(), R"({"sub":"alice","aud":"kms"})");
  EXPECT_EQ(verified->header().alg, "ES256");
  EXPECT_EQ(verified->header().kid, "idp-1");
  EXPECT_EQ(verified->header().typ, "JWT");
}

TEST_F(JwsTest, VerifyJwsFailsOnTamperingAndWithTheWrongKey) {
  const std::string compact = Sign();
  ExpectInvalid(VerifyJws(Flip(compact, 1), public_, kEs256).error(), "verification failed");
  ExpectInvalid(VerifyJws(Flip(compact, 2), public_, kEs256).error(), "verification failed");
  const std::string other_header =
      WithHeader(compact, R"({"alg":"ES256","kid":"idp-2","typ":"JWT"})");
  ExpectInvalid(VerifyJws(other_header, public_, kEs256).error(), "verification failed");
  auto other = EcKeyPair::Generate().value().PublicKey().value();
  ExpectInvalid(VerifyJws(compact, other, kEs256).error(), "verification failed");
}

TEST_F(JwsTest, VerifyJwsRefusesNoneSymmetricAndUnlistedAlgsEvenWhenAllowed) {
  const std::string compact = Sign();
  const std::vector<std::string> parts = Split(compact);
  const std::string none =
      Base64UrlEncode(std::string_view(R"({"alg":"none"})")) + "." + parts[1] + ".";
  ExpectInvalid(VerifyJws(none, public_, kEverything).error(), "none");
  const std::string hs256 = WithHeader(compact, R"({"alg":"HS256"})");
  ExpectInvalid(VerifyJws(hs256, public_, kEverything).error(), "symmetric");
  const std::string es384 = WithHeader(compact, R"({"alg":"ES384"})");
  ExpectInvalid(VerifyJws(es384, public_, kEverything).error(), "not supported");
  ExpectInvalid(VerifyJws(compact, public_, kRsaAlgs).error(), "not allowed");
  ExpectInvalid(VerifyJws(compact, public_, {}).error(), "not allowed");
  const std::string crit = WithHeader(compact, R"({"alg":"ES256","crit":["b64"],"b64":false})");
  ExpectInvalid(VerifyJws(crit, public_, kEs256).error(), "crit");
  const std::string b64 = WithHeader(compact, R"({"alg":"ES256","b64":false})");
  ExpectInvalid(VerifyJws(b64, public_, kEs256).error(), "b64");
  ExpectInvalid(VerifyJws(compact + ".AA.AA", public_, kEs256).error(), "parts");
}

TEST_F(JwsTest, VerifyJwsRefusesAnAlgThatDoesNotFitTheKey) {
  PkeyPtr rsa = GenerateRsa();
  ExpectInvalid(VerifyJws(Sign(), RsaPublicJwk(rsa.get()), kEverything).error(), "key's type");
}

TEST_F(JwsTest, SignJwsRefusesOtherAlgsAndReservedHeaderMembers) {
  ExpectInvalid(SignJws(key_, "PS256", payload_).error(), "ES256");
  ExpectInvalid(SignJws(key_, "none", payload_).error(), "ES256");
  ExpectInvalid(SignJws(key_, "ES256", payload_, {{"alg", "none"}}).error(), "alg");
  ExpectInvalid(SignJws(key_, "ES256", payload_, {{"crit", "x"}}).error(), "crit");
}

TEST_F(JwsTest, SignJwsWithAnExternalRsaSignerVerifiesAsRs256AndPs256) {
  PkeyPtr rsa = GenerateRsa();
  const PublicJwk jwk = RsaPublicJwk(rsa.get(), "kms");
  for (const bool pss : {false, true}) {
    const std::string header = pss ? R"({"alg":"PS256","kid":"kms"})" : R"({"alg":"RS256"})";
    auto compact = SignJwsWith(header, payload_, RsaSigner(rsa.get(), pss));
    ASSERT_TRUE(compact.ok()) << compact.error().ToString();
    EXPECT_EQ(Split(*compact)[0], Base64UrlEncode(header));
    auto verified = VerifyJws(*compact, jwk, kRsaAlgs);
    ASSERT_TRUE(verified.ok()) << verified.error().ToString();
    EXPECT_EQ(verified->header().alg, pss ? "PS256" : "RS256");
    EXPECT_EQ(verified->payload(), ToString(payload_));
    constexpr std::string_view kOther[] = {"RS256"};
    if (pss) ExpectInvalid(VerifyJws(*compact, jwk, kOther).error(), "not allowed");
    ExpectInvalid(VerifyJws(Flip(*compact, 1), jwk, kRsaAlgs).error(), "verification failed");
  }
}

TEST_F(JwsTest, SignJwsWithChecksTheHeaderAndTheSignature) {
  int calls = 0;
  JwsSigner counting = [&calls](std::span<const std::uint8_t>) -> Result<Bytes> {
    ++calls;
    return Bytes(256, 1);
  };
  ExpectInvalid(SignJwsWith(R"({"alg":"none"})", payload_, counting).error(), "none");
  ExpectInvalid(SignJwsWith(R"({"alg":"HS256"})", payload_, counting).error(), "symmetric");
  ExpectInvalid(SignJwsWith(R"({"typ":"JWT"})", payload_, counting).error(), "alg");
  ExpectInvalid(SignJwsWith(R"({"alg":"PS256","crit":["x"]})", payload_, counting).error(), "crit");
  ExpectInvalid(SignJwsWith(R"({"alg":"PS256","alg":"PS256"})", payload_, counting).error(),
                "JSON");
  ExpectInvalid(SignJwsWith("not json", payload_, counting).error(), "JSON");
  EXPECT_EQ(calls, 0);

  JwsSigner failing = [](std::span<const std::uint8_t>) -> Result<Bytes> {
    return Error(ErrorCode::kUnavailable, "HSM down");
  };
  EXPECT_EQ(SignJwsWith(R"({"alg":"PS256"})", payload_, failing).error().code(),
            ErrorCode::kUnavailable);
  JwsSigner empty = [](std::span<const std::uint8_t>) -> Result<Bytes> { return Bytes{}; };
  EXPECT_EQ(SignJwsWith(R"({"alg":"PS256"})", payload_, empty).error().code(),
            ErrorCode::kInternal);
}

// ---------------------------------------------------------------- RSA-OAEP JWE

class RsaOaepJweTest : public ::testing::Test {
 protected:
  PkeyPtr rsa_ = GenerateRsa();
  PublicJwk jwk_ = RsaPublicJwk(rsa_.get(), "kms-identity");
  Bytes plaintext_ = ToBytes(R"({"client":"ephemeral key"})");
};

TEST_F(RsaOaepJweTest, DecryptRsaOaepJweWithAnExternalUnwrapReturnsThePlaintext) {
  auto compact = EncryptRsaOaepJwe(jwk_, "kms-identity", plaintext_);
  ASSERT_TRUE(compact.ok()) << compact.error().ToString();
  auto header = PeekHeader(*compact).value();
  EXPECT_EQ(header.alg, "RSA-OAEP");
  EXPECT_EQ(header.enc, "A256GCM");
  EXPECT_EQ(header.kid, "kms-identity");

  auto decrypted = DecryptRsaOaepJwe(*compact, RsaOaepUnwrapper(rsa_.get()));
  ASSERT_TRUE(decrypted.ok()) << decrypted.error().ToString();
  EXPECT_EQ(ToString(decrypted->plaintext.view()), ToString(plaintext_));
  EXPECT_EQ(decrypted->header.kid, "kms-identity");

  auto no_kid = EncryptRsaOaepJwe(jwk_, std::nullopt, Bytes{});
  ASSERT_TRUE(no_kid.ok()) << no_kid.error().ToString();
  auto empty = DecryptRsaOaepJwe(*no_kid, RsaOaepUnwrapper(rsa_.get()));
  ASSERT_TRUE(empty.ok()) << empty.error().ToString();
  EXPECT_TRUE(empty->plaintext.empty());
  EXPECT_FALSE(empty->header.kid.has_value());
}

TEST_F(RsaOaepJweTest, DecryptRsaOaepJweRefusesOtherAlgsBeforeUnwrapping) {
  const std::string compact = EncryptRsaOaepJwe(jwk_, "k", plaintext_).value();
  int calls = 0;
  CekUnwrapper counting = [&calls](std::span<const std::uint8_t>) -> Result<SecretBytes> {
    ++calls;
    return SecretBytes::Random(32);
  };
  for (std::string_view header :
       {R"({"alg":"RSA1_5","enc":"A256GCM"})", R"({"alg":"RSA-OAEP-256","enc":"A256GCM"})",
        R"({"alg":"dir","enc":"A256GCM"})", R"({"alg":"none","enc":"A256GCM"})",
        R"({"alg":"RSA-OAEP","enc":"A128GCM"})",
        R"({"alg":"RSA-OAEP","enc":"A256GCM","zip":"DEF"})",
        R"({"alg":"RSA-OAEP","enc":"A256GCM","crit":["x"],"x":1})"}) {
    auto result = DecryptRsaOaepJwe(WithHeader(compact, header), counting);
    ASSERT_FALSE(result.ok()) << header;
    EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument) << header;
  }
  std::vector<std::string> parts = Split(compact);
  parts[1] = "";
  ExpectInvalid(DecryptRsaOaepJwe(Join(parts), counting).error(), "encrypted key");
  EXPECT_EQ(calls, 0);
}

TEST_F(RsaOaepJweTest, BadCekTamperingAndBadTagsFailAlike) {
  const std::string compact = EncryptRsaOaepJwe(jwk_, "k", plaintext_).value();
  CekUnwrapper short_cek = [](std::span<const std::uint8_t>) -> Result<SecretBytes> {
    return SecretBytes::Random(16);
  };
  ExpectInvalid(DecryptRsaOaepJwe(compact, short_cek).error(), "JWE decryption failed");
  ExpectInvalid(DecryptRsaOaepJwe(Flip(compact, 1), RsaOaepUnwrapper(rsa_.get())).error(),
                "JWE decryption failed");
  for (std::size_t index : {2u, 3u, 4u}) {
    ExpectInvalid(DecryptRsaOaepJwe(Flip(compact, index), RsaOaepUnwrapper(rsa_.get())).error(),
                  "JWE decryption failed");
  }
  ExpectInvalid(
      DecryptRsaOaepJwe(WithHeader(compact, R"({"enc":"A256GCM","alg":"RSA-OAEP","kid":"k"})"),
                        RsaOaepUnwrapper(rsa_.get()))
          .error(),
      "JWE decryption failed");
}

TEST_F(RsaOaepJweTest, UnavailableHsmIsPassedThrough) {
  const std::string compact = EncryptRsaOaepJwe(jwk_, "k", plaintext_).value();
  CekUnwrapper down = [](std::span<const std::uint8_t>) -> Result<SecretBytes> {
    return Error(ErrorCode::kUnavailable, "HSM down");
  };
  EXPECT_EQ(DecryptRsaOaepJwe(compact, down).error().code(), ErrorCode::kUnavailable);
}

TEST_F(RsaOaepJweTest, EncryptRsaOaepJweRefusesEcKeys) {
  ExpectInvalid(
      EncryptRsaOaepJwe(EcKeyPair::Generate().value().PublicKey().value(), "k", plaintext_).error(),
      "RSA");
}

// ---------------------------------------------------------------- python3-jwcrypto

std::map<std::string, std::string> RunJwcrypto(const std::string& request) {
  Poco::Pipe in_pipe;
  Poco::Pipe out_pipe;
  Poco::ProcessHandle handle = Poco::Process::launch(
      "/usr/bin/python3", {SR_JWCRYPTO_INTEROP_SCRIPT}, &in_pipe, &out_pipe, nullptr);
  {
    Poco::PipeOutputStream to_child(in_pipe);
    to_child << request;
    to_child.close();
  }
  Poco::PipeInputStream from_child(out_pipe);
  std::string output;
  Poco::StreamCopier::copyToString(from_child, output);
  const int exit_code = handle.wait();
  EXPECT_EQ(exit_code, 0) << "jwcrypto_interop.py failed (is python3-jwcrypto installed? "
                             "scripts/setup-debian installs it)";
  std::map<std::string, std::string> results;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    const std::size_t eq = line.find('=');
    if (eq != std::string::npos) results[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return results;
}

TEST(JwcryptoInteropTest, JwcryptoAndStrongroomReadEachOthersTokens) {
  const SecretBytes key = SecretBytes::Random(32);
  const Bytes plaintext = ToBytes("dir JWE from Strongroom");
  const Bytes reply = ToBytes("dir JWE from jwcrypto");
  auto signer = EcKeyPair::Generate("idp-1").value();
  const Bytes payload = ToBytes(R"({"sub":"alice"})");

  const std::string request =
      R"({"dir_key":")" + Base64UrlEncode(key.view()) + R"(","dir_jwe":")" +
      EncryptDir(key.view(), "kms-ephemeral-1", plaintext).value() + R"(","dir_expected":")" +
      Base64UrlEncode(plaintext) + R"(","reply_plaintext":")" + Base64UrlEncode(reply) +
      R"(","es256_jws":")" + SignJws(signer, "ES256", payload, {{"kid", "idp-1"}}).value() +
      R"(","es256_jwk":)" + signer.PublicJwkJson().value() + R"(,"es256_payload":")" +
      Base64UrlEncode(payload) + "\"}";
  std::map<std::string, std::string> results = RunJwcrypto(request);

  // (a) jwcrypto decrypted our dir JWE.
  EXPECT_EQ(results["dir_decrypt_ok"], "true");
  EXPECT_EQ(results["dir_header_alg"], "dir");
  EXPECT_EQ(results["dir_header_kid"], "kms-ephemeral-1");
  // (b) we decrypt jwcrypto's.
  ASSERT_FALSE(results["reply_jwe"].empty());
  KeyLookup lookup = [&key](const JoseHeader& header) -> Result<SecretBytes> {
    if (header.kid != "from-jwcrypto") return Error(ErrorCode::kNotFound, "unknown kid");
    return SecretBytes(key.view());
  };
  auto decrypted = DecryptDir(results["reply_jwe"], lookup);
  ASSERT_TRUE(decrypted.ok()) << decrypted.error().ToString();
  EXPECT_EQ(ToString(decrypted->plaintext.view()), ToString(reply));
  // (c) jwcrypto verified our ES256 JWS and refused a tampered one.
  EXPECT_EQ(results["es256_verified"], "true");
  EXPECT_EQ(results["es256_tampered_rejected"], "true");
}

TEST(CjoseAllocatorTest, CjoseAndJanssonFreeThroughTheZeroizingDeallocator) {
  // Keys and secrets cjose copies internally are wiped when it frees them.
  EXPECT_TRUE(internal::ZeroizingAllocatorsInstalled());
  auto pair = EcKeyPair::Generate("k");  // allocates and frees through cjose and jansson
  ASSERT_TRUE(pair.ok());
  EXPECT_TRUE(internal::ZeroizingAllocatorsInstalled());
}

}  // namespace
}  // namespace strongroom::jose
