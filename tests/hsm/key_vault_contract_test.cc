// KeyVault on real SoftHSM2 tokens holds the Vault contract (vault_contract.h).
#include "../support/softhsm_sandbox.h"
#include "strongroom/hsm/key_vault.h"
#include "vault_contract.h"

namespace strongroom::hsm {
namespace {

using testing::kSoftHsmModule;
using testing::SoftHsmSandbox;

class KeyVaultUnderTest : public VaultUnderTest {
 public:
  explicit KeyVaultUnderTest(std::unique_ptr<KeyVault> vault) : vault_(std::move(vault)) {}
  Vault& vault() override { return *vault_; }
  Status InitRoot(const std::string& org) override {
    Result<std::vector<RootKeyInfo>> created = vault_->InitRoot(org);
    return created.ok() ? OkStatus() : created.error();
  }
  Result<RsaPublicKey> CreateIdentityKey(std::size_t index, const std::string& key_name) override {
    return vault_->tokens().at(index)->CreateIdentityKey(key_name, 2048);
  }

 private:
  std::unique_ptr<KeyVault> vault_;
};

std::unique_ptr<VaultUnderTest> MakeKeyVault(const std::vector<ContractToken>& tokens) {
  HsmConfig config;
  for (const ContractToken& token : tokens) {
    TokenConfig t;
    t.name = token.name;
    t.orgs = token.orgs;
    t.uri = SoftHsmSandbox::Get().Uri(kSoftHsmModule,
                                      SoftHsmSandbox::Get().CreateToken(kSoftHsmModule));
    config.tokens.push_back(std::move(t));
  }
  auto vault = KeyVault::Open(config);
  EXPECT_TRUE(vault.ok()) << vault.error().ToString();
  if (!vault.ok()) return nullptr;
  return std::make_unique<KeyVaultUnderTest>(std::move(vault).value());
}

INSTANTIATE_TEST_SUITE_P(SoftHsm, VaultContractTest,
                         ::testing::Values(VaultFactory{"KeyVault", MakeKeyVault}),
                         VaultFactoryName);

}  // namespace
}  // namespace strongroom::hsm
