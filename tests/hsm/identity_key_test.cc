// The KMS identity key (RSA in the token) against a real SoftHSM2 token, checked with OpenSSL.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <memory>

#include "../support/softhsm_sandbox.h"
#include "strongroom/hsm/token.h"

namespace strongroom::hsm {
namespace {

using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

Pkey ToOpenSsl(const RsaPublicKey& key) {
  OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
  BIGNUM* n = BN_bin2bn(key.modulus.data(), static_cast<int>(key.modulus.size()), nullptr);
  BIGNUM* e =
      BN_bin2bn(key.public_exponent.data(), static_cast<int>(key.public_exponent.size()), nullptr);
  OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n);
  OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e);
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
  EVP_PKEY* pkey = nullptr;
  EVP_PKEY_fromdata_init(ctx);
  EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(bld);
  BN_free(n);
  BN_free(e);
  return Pkey(pkey);
}

std::vector<std::uint8_t> OaepEncrypt(EVP_PKEY* pkey, std::span<const std::uint8_t> plain) {
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(pkey, nullptr);
  EVP_PKEY_encrypt_init(ctx);
  EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING);  // SHA-1 / MGF1-SHA-1 by default
  std::size_t len = 0;
  EVP_PKEY_encrypt(ctx, nullptr, &len, plain.data(), plain.size());
  std::vector<std::uint8_t> out(len);
  EVP_PKEY_encrypt(ctx, out.data(), &len, plain.data(), plain.size());
  out.resize(len);
  EVP_PKEY_CTX_free(ctx);
  return out;
}

bool VerifyPs256(EVP_PKEY* pkey, std::span<const std::uint8_t> message,
                 std::span<const std::uint8_t> signature) {
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  EVP_DigestVerifyInit(md, &pctx, EVP_sha256(), nullptr, pkey);
  EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING);
  EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32);
  EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256());
  bool ok =
      EVP_DigestVerify(md, signature.data(), signature.size(), message.data(), message.size()) == 1;
  EVP_MD_CTX_free(md);
  return ok;
}

class IdentityKeyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string label = SoftHsmSandbox::Get().CreateToken(kSoftHsmModule);
    TokenConfig config;
    config.name = "primary";
    config.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule, label);
    token_ = Token::Open(config).value().release();
    auto created = token_->CreateIdentityKey("kms", 2048);  // 2048 keeps the suite quick
    ASSERT_TRUE(created.ok()) << created.error().ToString();
    public_key_ = new RsaPublicKey(*created);
  }
  static void TearDownTestSuite() {
    delete token_;
    delete public_key_;
  }
  static Token* token_;
  static RsaPublicKey* public_key_;
};
Token* IdentityKeyTest::token_ = nullptr;
RsaPublicKey* IdentityKeyTest::public_key_ = nullptr;

TEST_F(IdentityKeyTest, PublicKeyIs2048BitsWithExponent65537) {
  EXPECT_EQ(public_key_->modulus.size(), 256u);
  EXPECT_EQ(public_key_->public_exponent, (std::vector<std::uint8_t>{1, 0, 1}));
  auto again = token_->IdentityPublicKey("kms");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->modulus, public_key_->modulus);
}

TEST_F(IdentityKeyTest, PrivateHalfIsSensitiveAndNotExtractable) {
  CK_FUNCTION_LIST_PTR fn = token_->module().fn();
  CK_SESSION_HANDLE s;
  ASSERT_EQ(fn->C_OpenSession(token_->slot(), CKF_SERIAL_SESSION, nullptr, nullptr, &s), CKR_OK);
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  std::string id = "sridentity:kms";
  CK_ATTRIBUTE match[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_ID, id.data(), id.size()}};
  ASSERT_EQ(fn->C_FindObjectsInit(s, match, 2), CKR_OK);
  CK_OBJECT_HANDLE h;
  CK_ULONG n = 0;
  ASSERT_EQ(fn->C_FindObjects(s, &h, 1, &n), CKR_OK);
  fn->C_FindObjectsFinal(s);
  ASSERT_EQ(n, 1u);
  CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, local = CK_FALSE;
  CK_ATTRIBUTE attrs[] = {
      {CKA_SENSITIVE, &sensitive, 1}, {CKA_EXTRACTABLE, &extractable, 1}, {CKA_LOCAL, &local, 1}};
  ASSERT_EQ(fn->C_GetAttributeValue(s, h, attrs, 3), CKR_OK);
  EXPECT_EQ(sensitive, CK_TRUE);
  EXPECT_EQ(extractable, CK_FALSE);
  EXPECT_EQ(local, CK_TRUE);
  std::uint8_t buf[1024];
  CK_ATTRIBUTE exponent{CKA_PRIVATE_EXPONENT, buf, sizeof buf};
  EXPECT_EQ(fn->C_GetAttributeValue(s, h, &exponent, 1), CKR_ATTRIBUTE_SENSITIVE);
  fn->C_CloseSession(s);
}

TEST_F(IdentityKeyTest, DecryptsWhatOpenSslEncryptedWithRsaOaep) {
  Pkey pkey = ToOpenSsl(*public_key_);
  SecretBytes cek = SecretBytes::Random(32);
  auto ciphertext = OaepEncrypt(pkey.get(), cek.view());
  auto plain = token_->DecryptRsaOaep("kms", ciphertext);
  ASSERT_TRUE(plain.ok()) << plain.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(plain->view(), cek.view()));
}

TEST_F(IdentityKeyTest, TamperedOrMisSizedCiphertextIsOneUninformativeError) {
  Pkey pkey = ToOpenSsl(*public_key_);
  SecretBytes cek = SecretBytes::Random(32);
  auto ciphertext = OaepEncrypt(pkey.get(), cek.view());
  ciphertext[100] ^= 1;
  const std::uint64_t resets = token_->Health().module_resets;
  auto tampered = token_->DecryptRsaOaep("kms", ciphertext);
  ASSERT_FALSE(tampered.ok());
  EXPECT_EQ(tampered.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(tampered.error().message(), "the message could not be decrypted");
  // The message's fault, not the token's: SoftHSM2 says CKR_GENERAL_ERROR, and nothing is reset.
  EXPECT_EQ(token_->Health().module_resets, resets);
  EXPECT_EQ(token_->Health().state, TokenState::kReady);
  // Shorter or longer than the modulus never reaches the token.
  std::vector<std::uint8_t> short_ct(10, 7);
  auto mis_sized = token_->DecryptRsaOaep("kms", short_ct);
  ASSERT_FALSE(mis_sized.ok());
  EXPECT_EQ(mis_sized.error().code(), ErrorCode::kInvalidArgument);
  std::vector<std::uint8_t> long_ct(ciphertext.size() + 1, 7);
  EXPECT_EQ(token_->DecryptRsaOaep("kms", long_ct).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(token_->DecryptRsaOaep("kms", {}).error().code(), ErrorCode::kInvalidArgument);
  // The token is still fine afterwards.
  ciphertext[100] ^= 1;
  auto after = token_->DecryptRsaOaep("kms", ciphertext);
  EXPECT_TRUE(after.ok()) << after.error().ToString();
}

TEST_F(IdentityKeyTest, Ps256SignatureVerifiesWithOpenSsl) {
  Pkey pkey = ToOpenSsl(*public_key_);
  const std::string text = "eyJhbGciOiJQUzI1NiJ9.eyJzdGF0dXMiOjIwMX0";
  std::span<const std::uint8_t> message(reinterpret_cast<const std::uint8_t*>(text.data()),
                                        text.size());
  auto signature = token_->SignPs256("kms", message);
  ASSERT_TRUE(signature.ok()) << signature.error().ToString();
  EXPECT_EQ(signature->size(), 256u);
  EXPECT_TRUE(VerifyPs256(pkey.get(), message, *signature));
  std::string other = text + "x";
  EXPECT_FALSE(VerifyPs256(
      pkey.get(), std::span(reinterpret_cast<const std::uint8_t*>(other.data()), other.size()),
      *signature));
  auto again = token_->SignPs256("kms", message);
  ASSERT_TRUE(again.ok());
  EXPECT_NE(*again, *signature);  // PSS is randomized
}

TEST_F(IdentityKeyTest, SecondCreateAndUnknownNamesAreRefused) {
  EXPECT_EQ(token_->CreateIdentityKey("kms", 2048).error().code(), ErrorCode::kAlreadyExists);
  EXPECT_EQ(token_->IdentityPublicKey("other").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(token_->SignPs256("other", {}).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(token_->CreateIdentityKey("kms2", 1024).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(token_->CreateIdentityKey("Bad Name", 2048).error().code(),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace strongroom::hsm
