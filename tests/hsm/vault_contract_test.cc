// The Vault contract (vault_contract.h): the tests every implementation passes.
#include "vault_contract.h"

#include <algorithm>

#include "strongroom/common/jose.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/wrapped_key.h"

namespace strongroom::hsm {
namespace {

constexpr char kCluster[] = "kms://kms.acme.test";

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

TEST_P(VaultContractTest, WrapGivesABlobPerTokenAndEachOpensToTheKey) {
  Make();
  const KeyBinding binding{"acme", std::string(kCluster) + "/keys/1"};
  SecretBytes key = SecretBytes::Random(kWrappedKeyPlainSize);
  auto wrapped = vault().Wrap(binding, key.view());
  ASSERT_TRUE(wrapped.ok()) << wrapped.error().ToString();
  EXPECT_TRUE(wrapped->missing.empty());
  ASSERT_EQ(wrapped->blobs.size(), 2u);
  EXPECT_EQ(wrapped->blobs[0].token, "primary");
  EXPECT_EQ(wrapped->blobs[1].token, "standby");
  EXPECT_EQ(wrapped->blobs[0].blob.size(), kWrappedKeySize);
  EXPECT_NE(wrapped->blobs[0].blob, wrapped->blobs[1].blob);
  auto opened = vault().Unwrap(binding, wrapped->blobs);
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(opened->view(), key.view()));
  for (std::size_t i = 0; i < 2; ++i) {
    VaultToken& token = *vault().Tokens()[i];
    EXPECT_EQ(token.name(), wrapped->blobs[i].token);
    auto own = token.Unwrap(binding, wrapped->blobs[i].blob);
    ASSERT_TRUE(own.ok()) << own.error().ToString();
    EXPECT_TRUE(ConstantTimeEquals(own->view(), key.view()));
  }
}

TEST_P(VaultContractTest, EveryChangedByteFails) {
  Make();
  const KeyBinding binding{"acme", std::string(kCluster) + "/keys/1"};
  SecretBytes key = SecretBytes::Random(kWrappedKeyPlainSize);
  auto wrapped = vault().Wrap(binding, key.view());
  ASSERT_TRUE(wrapped.ok());
  const std::vector<std::uint8_t>& blob = wrapped->blobs[0].blob;
  VaultToken& primary = *vault().Tokens()[0];
  for (std::size_t i = 0; i < blob.size(); ++i) {
    std::vector<std::uint8_t> tampered = blob;
    tampered[i] ^= 0x01;
    auto result = primary.Unwrap(binding, tampered);
    ASSERT_FALSE(result.ok()) << "byte " << i;
    // A changed version field names a root key that does not exist.
    EXPECT_EQ(result.error().code(), i >= 4 && i < 8 ? ErrorCode::kNotFound : ErrorCode::kDataLoss)
        << "byte " << i;
  }
  std::vector<std::uint8_t> cut(blob.begin(), blob.end() - 1);
  EXPECT_EQ(primary.Unwrap(binding, cut).error().code(), ErrorCode::kDataLoss);
}

TEST_P(VaultContractTest, ABlobOpenedAsAnotherKeyOrgOrTokenFailsAndIsNeverPassedOn) {
  Make();
  ASSERT_TRUE(under_test_->InitRoot("globex").ok());
  const KeyBinding binding{"acme", std::string(kCluster) + "/keys/1"};
  SecretBytes key = SecretBytes::Random(kWrappedKeyPlainSize);
  auto wrapped = vault().Wrap(binding, key.view());
  ASSERT_TRUE(wrapped.ok());
  const TokenBlob& primary_blob = wrapped->blobs[0];
  VaultToken& primary = *vault().Tokens()[0];
  VaultToken& standby = *vault().Tokens()[1];
  EXPECT_EQ(primary.Unwrap({"acme", binding.context + "x"}, primary_blob.blob).error().code(),
            ErrorCode::kDataLoss);
  EXPECT_EQ(primary.Unwrap({"globex", binding.context}, primary_blob.blob).error().code(),
            ErrorCode::kDataLoss);
  EXPECT_EQ(standby.Unwrap(binding, primary_blob.blob).error().code(), ErrorCode::kDataLoss);
  // The standby's blob filed as the primary's fails the primary's check, and the vault does not go
  // on to the standby's good blob: a misbound blob is an alarm, not an outage.
  const std::vector<TokenBlob> misfiled = {{"primary", wrapped->blobs[1].blob}, wrapped->blobs[1]};
  EXPECT_EQ(vault().Unwrap(binding, misfiled).error().code(), ErrorCode::kDataLoss);
}

TEST_P(VaultContractTest, BadRequestsAreRefusedAndUnknownThingsAreNotFound) {
  Make();
  SecretBytes key = SecretBytes::Random(kWrappedKeyPlainSize);
  SecretBytes short_key = SecretBytes::Random(16);
  const std::string context = std::string(kCluster) + "/keys/1";
  EXPECT_EQ(vault().Wrap({"acme", context}, short_key.view()).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(vault().Wrap({"Bad Org", context}, key.view()).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(vault().Wrap({"acme", ""}, key.view()).error().code(), ErrorCode::kInvalidArgument);
  // An organization without root keys: no token can wrap for it.
  EXPECT_EQ(vault().Wrap({"initech", context}, key.view()).error().code(), ErrorCode::kNotFound);
  auto wrapped = vault().Wrap({"acme", context}, key.view());
  ASSERT_TRUE(wrapped.ok());
  const std::vector<TokenBlob> elsewhere = {{"elsewhere", wrapped->blobs[0].blob}};
  EXPECT_EQ(vault().Unwrap({"acme", context}, elsewhere).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(vault().Tokens()[0]->CurrentVersion("initech").error().code(), ErrorCode::kNotFound);
}

TEST_P(VaultContractTest, TokensServeOnlyTheirOrganizations) {
  Make({{"acme-only", {"acme"}}, {"shared", {}}});
  ASSERT_TRUE(under_test_->InitRoot("globex").ok());
  EXPECT_TRUE(vault().Tokens()[0]->Serves("acme"));
  EXPECT_FALSE(vault().Tokens()[0]->Serves("globex"));
  EXPECT_EQ(vault().Tokens()[0]->orgs(), std::vector<std::string>{"acme"});
  EXPECT_TRUE(vault().Tokens()[1]->orgs().empty());
  SecretBytes key = SecretBytes::Random(kWrappedKeyPlainSize);
  auto globex = vault().Wrap({"globex", "kms://kms.globex.test/keys/1"}, key.view());
  ASSERT_TRUE(globex.ok()) << globex.error().ToString();
  ASSERT_EQ(globex->blobs.size(), 1u);
  EXPECT_EQ(globex->blobs[0].token, "shared");
  auto roots = vault().ListRoots("globex");
  ASSERT_TRUE(roots.ok());
  ASSERT_EQ(roots->size(), 1u);
  EXPECT_EQ((*roots)[0].token, "shared");
}

TEST_P(VaultContractTest, RotationKeepsVersionsInStepAndOldBlobsOpen) {
  Make();
  const KeyBinding binding{"acme", std::string(kCluster) + "/keys/1"};
  SecretBytes key = SecretBytes::Random(kWrappedKeyPlainSize);
  auto v1 = vault().Wrap(binding, key.view());
  ASSERT_TRUE(v1.ok());
  auto rotated = vault().RotateRoot("acme");
  ASSERT_TRUE(rotated.ok()) << rotated.error().ToString();
  ASSERT_EQ(rotated->size(), 2u);
  for (const RootKeyInfo& info : *rotated) {
    EXPECT_EQ(info.id, (RootKeyId{"acme", 2}));
    EXPECT_TRUE(info.sensitive);
    EXPECT_FALSE(info.extractable);
    EXPECT_TRUE(info.local);
  }
  auto roots = vault().ListRoots("acme");
  ASSERT_TRUE(roots.ok());
  for (const RootKeySet& set : *roots) {
    ASSERT_EQ(set.keys.size(), 2u) << set.token;
    EXPECT_EQ(set.keys[0].id.version, 1u);
    EXPECT_EQ(set.keys[1].id.version, 2u);
  }
  for (VaultToken* token : vault().Tokens()) {
    EXPECT_EQ(token->CurrentVersion("acme").value(), 2u) << token->name();
    EXPECT_EQ(token->ListRootKeys("acme")->size(), 2u) << token->name();
  }
  auto v2 = vault().Wrap(binding, key.view());
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(ParseWrappedKey(v2->blobs[0].blob)->root_version, 2u);
  auto old = vault().Unwrap(binding, v1->blobs);
  ASSERT_TRUE(old.ok()) << old.error().ToString();
  EXPECT_TRUE(ConstantTimeEquals(old->view(), key.view()));
}

TEST_P(VaultContractTest, TheIdentityKeyOpensRsaOaepAndSignsPs256) {
  Make();
  auto created = under_test_->CreateIdentityKey(0, "kms");
  ASSERT_TRUE(created.ok()) << created.error().ToString();
  VaultToken& primary = *vault().Tokens()[0];
  EXPECT_TRUE(primary.CheckIdentityMechanisms().ok());
  auto again = primary.IdentityPublicKey("kms");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->modulus, created->modulus);
  EXPECT_EQ(again->public_exponent, (std::vector<std::uint8_t>{1, 0, 1}));
  auto jwk = jose::PublicJwk::FromRsa(created->modulus, created->public_exponent, kCluster, {});
  ASSERT_TRUE(jwk.ok());

  auto sealed = jose::EncryptRsaOaepJwe(*jwk, kCluster, Bytes("{\"hello\":1}"));
  ASSERT_TRUE(sealed.ok());
  auto opened = jose::DecryptRsaOaepJwe(*sealed, [&](std::span<const std::uint8_t> encrypted) {
    return primary.DecryptRsaOaep("kms", encrypted);
  });
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  EXPECT_EQ(opened->plaintext.as_string_view(), "{\"hello\":1}");
  // Whatever is wrong with a ciphertext, the answer is the same INVALID_ARGUMENT.
  std::vector<std::uint8_t> garbage(created->modulus.size(), 0x5a);
  EXPECT_EQ(primary.DecryptRsaOaep("kms", garbage).error().code(), ErrorCode::kInvalidArgument);
  garbage.pop_back();
  EXPECT_EQ(primary.DecryptRsaOaep("kms", garbage).error().code(), ErrorCode::kInvalidArgument);

  auto jws = jose::SignJwsWith(
      R"({"alg":"PS256"})", Bytes("payload"),
      [&](std::span<const std::uint8_t> input) { return primary.SignPs256("kms", input); });
  ASSERT_TRUE(jws.ok()) << jws.error().ToString();
  const std::string_view ps256[] = {"PS256"};
  auto verified = jose::VerifyJws(*jws, *jwk, ps256);
  ASSERT_TRUE(verified.ok()) << verified.error().ToString();
  EXPECT_EQ(verified->payload(), "payload");

  // The standby holds no identity key of that name.
  VaultToken& standby = *vault().Tokens()[1];
  EXPECT_EQ(standby.IdentityPublicKey("kms").error().code(), ErrorCode::kNotFound);
}

TEST_P(VaultContractTest, HealthNamesEveryTokenReady) {
  Make();
  std::vector<TokenHealth> health = vault().Health();
  ASSERT_EQ(health.size(), 2u);
  EXPECT_EQ(health[0].name, "primary");
  EXPECT_EQ(health[1].name, "standby");
  for (const TokenHealth& h : health) EXPECT_EQ(h.state, TokenState::kReady) << h.name;
  for (VaultToken* token : vault().Tokens()) {
    EXPECT_FALSE(token->InBackoff()) << token->name();
    EXPECT_EQ(token->Health().state, TokenState::kReady);
  }
}

}  // namespace
}  // namespace strongroom::hsm
