// The in-memory vault: it holds the Vault contract (tests/hsm/vault_contract.h) as KeyVault does,
// and its injected failures look to the KMS as a token's real ones do.
#include "fake_vault.h"

#include <gtest/gtest.h>

#include "../hsm/vault_contract.h"

namespace strongroom::testing {
namespace {

using hsm::ContractToken;
using hsm::VaultContractTest;
using hsm::VaultFactory;
using hsm::VaultUnderTest;

class FakeVaultUnderTest : public VaultUnderTest {
 public:
  explicit FakeVaultUnderTest(std::vector<FakeVault::TokenSpec> tokens)
      : vault_(std::move(tokens)) {}
  hsm::Vault& vault() override { return vault_; }
  Status InitRoot(const std::string& org) override {
    Result<std::vector<hsm::RootKeyInfo>> created = vault_.InitRoot(org);
    return created.ok() ? OkStatus() : created.error();
  }
  Result<hsm::RsaPublicKey> CreateIdentityKey(std::size_t index,
                                              const std::string& key_name) override {
    return vault_.token(index).CreateIdentityKey(key_name);
  }

 private:
  FakeVault vault_;
};

std::unique_ptr<VaultUnderTest> MakeFakeVault(const std::vector<ContractToken>& tokens) {
  std::vector<FakeVault::TokenSpec> specs;
  for (const ContractToken& token : tokens) specs.push_back({token.name, token.orgs});
  return std::make_unique<FakeVaultUnderTest>(std::move(specs));
}

INSTANTIATE_TEST_SUITE_P(InMemory, VaultContractTest,
                         ::testing::Values(VaultFactory{"FakeVault", MakeFakeVault}),
                         hsm::VaultFactoryName);

class FakeVaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(vault_.InitRoot("acme").ok());
    auto wrapped = vault_.Wrap(binding_, key_.view());
    ASSERT_TRUE(wrapped.ok()) << wrapped.error().ToString();
    blobs_ = wrapped->blobs;
    ASSERT_EQ(blobs_.size(), 2u);
  }
  bool OpensToTheKey(const Result<SecretBytes>& opened) {
    return opened.ok() && ConstantTimeEquals(opened->view(), key_.view());
  }

  FakeVault vault_{std::vector<FakeVault::TokenSpec>{{"primary", {}}, {"standby", {}}}};
  FakeToken& primary_ = vault_.token("primary");
  FakeToken& standby_ = vault_.token("standby");
  const hsm::KeyBinding binding_{"acme", "kms://kms.acme.test/keys/1"};
  SecretBytes key_ = SecretBytes::Random(32);
  std::vector<hsm::TokenBlob> blobs_;
};

TEST_F(FakeVaultTest, AnUnavailableTokenFailsAtOnceAndTheVaultUsesTheOther) {
  primary_.MarkUnavailable("gone for the test");
  EXPECT_TRUE(primary_.InBackoff());
  EXPECT_EQ(primary_.Health().state, hsm::TokenState::kUnavailable);
  EXPECT_EQ(primary_.Health().detail, "gone for the test");
  const std::uint64_t unwraps = primary_.calls().unwraps;
  EXPECT_EQ(primary_.Unwrap(binding_, blobs_[0].blob).error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(primary_.SignPs256("kms", {}).error().code(), ErrorCode::kUnavailable);
  EXPECT_EQ(primary_.calls().unwraps, unwraps);
  EXPECT_TRUE(OpensToTheKey(vault_.Unwrap(binding_, blobs_)));
  auto wrapped = vault_.Wrap(binding_, key_.view());
  ASSERT_TRUE(wrapped.ok());
  ASSERT_EQ(wrapped->blobs.size(), 1u);
  EXPECT_EQ(wrapped->blobs[0].token, "standby");
  ASSERT_EQ(wrapped->missing.size(), 1u);
  EXPECT_EQ(wrapped->missing[0].code(), ErrorCode::kUnavailable);
  standby_.MarkUnavailable();
  EXPECT_EQ(vault_.Unwrap(binding_, blobs_).error().code(), ErrorCode::kUnavailable);
  primary_.Restore();
  EXPECT_FALSE(primary_.InBackoff());
  EXPECT_TRUE(OpensToTheKey(primary_.Unwrap(binding_, blobs_[0].blob)));
}

TEST_F(FakeVaultTest, ADeviceRemovedMidCallFailsThatCallAndMarksTheToken) {
  primary_.RemoveMidCall();
  EXPECT_FALSE(primary_.InBackoff());  // nobody knows yet
  EXPECT_EQ(primary_.Health().state, hsm::TokenState::kReady);
  // The vault asks the primary first, which fails mid-call; the standby answers.
  const std::uint64_t standby_unwraps = standby_.calls().unwraps;
  EXPECT_TRUE(OpensToTheKey(vault_.Unwrap(binding_, blobs_)));
  EXPECT_EQ(standby_.calls().unwraps, standby_unwraps + 1);
  EXPECT_TRUE(primary_.InBackoff());
  EXPECT_EQ(primary_.Health().state, hsm::TokenState::kUnavailable);
  EXPECT_NE(primary_.Health().detail.find("CKR_DEVICE_REMOVED"), std::string::npos);
  EXPECT_EQ(primary_.CurrentVersion("acme").error().code(), ErrorCode::kUnavailable);
}

TEST_F(FakeVaultTest, AnIntegrityFailureIsDataLossAndNeverPassedOn) {
  primary_.FailIntegrity();
  EXPECT_FALSE(primary_.InBackoff());  // the token answers; its keys do not fit
  EXPECT_EQ(primary_.Unwrap(binding_, blobs_[0].blob).error().code(), ErrorCode::kDataLoss);
  const std::uint64_t standby_unwraps = standby_.calls().unwraps;
  EXPECT_EQ(vault_.Unwrap(binding_, blobs_).error().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(standby_.calls().unwraps, standby_unwraps);
  primary_.Restore();
  EXPECT_TRUE(OpensToTheKey(vault_.Unwrap(binding_, blobs_)));
}

TEST_F(FakeVaultTest, ARefusedLoginIsHealthAndBackoff) {
  primary_.RefuseLogin();
  EXPECT_TRUE(primary_.InBackoff());
  EXPECT_EQ(primary_.Health().state, hsm::TokenState::kLoginRefused);
  EXPECT_EQ(primary_.ListRootKeys("acme").error().code(), ErrorCode::kUnavailable);
}

TEST_F(FakeVaultTest, ARootKeyPastItsWrapLimitIsResourceExhaustedUntilRotated) {
  primary_.SetWrapLimit(1);  // SetUp used it
  EXPECT_EQ(primary_.Wrap(binding_, key_.view()).error().code(), ErrorCode::kResourceExhausted);
  // Another token would not cure it: the vault refuses at once.
  EXPECT_EQ(vault_.Wrap(binding_, key_.view()).error().code(), ErrorCode::kResourceExhausted);
  ASSERT_TRUE(vault_.RotateRoot("acme").ok());
  EXPECT_TRUE(vault_.Wrap(binding_, key_.view()).ok());
  EXPECT_EQ(primary_.ListRootKeys("acme")->at(0).wraps_reserved, 1u);
}

TEST_F(FakeVaultTest, IdentityKeysOfTwoTokensDiffer) {
  ASSERT_TRUE(vault_.CreateIdentityKeys("kms").ok());
  EXPECT_NE(primary_.IdentityPublicKey("kms")->modulus, standby_.IdentityPublicKey("kms")->modulus);
  EXPECT_EQ(primary_.CreateIdentityKey("kms").error().code(), ErrorCode::kAlreadyExists);
}

}  // namespace
}  // namespace strongroom::testing
