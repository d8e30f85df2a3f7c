// What every hsm::Vault promises the KMS (strongroom/hsm/vault.h), as value-parameterized tests
// that each implementation instantiates with a factory: KeyVault on SoftHSM2 tokens
// (key_vault_contract_test.cc, in hsm_tests) and the in-memory FakeVault
// (tests/support/fake_vault_test.cc, in kms_protocol_tests). The fake the KMS tests run on is held
// to the same blob binding, errors and failover order as the vault kmsd runs on.
#ifndef STRONGROOM_TESTS_HSM_VAULT_CONTRACT_H_
#define STRONGROOM_TESTS_HSM_VAULT_CONTRACT_H_

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/hsm/vault.h"

namespace strongroom::hsm {

// A vault under test, with what kmsctl does to its tokens.
class VaultUnderTest {
 public:
  virtual ~VaultUnderTest() = default;
  virtual Vault& vault() = 0;
  // The org's first root key on every token serving it (KeyVault::InitRoot).
  virtual Status InitRoot(const std::string& org) = 0;
  // An identity key named `key_name` (2048 bits) in the token at `index`.
  virtual Result<RsaPublicKey> CreateIdentityKey(std::size_t index,
                                                 const std::string& key_name) = 0;
};

struct ContractToken {
  std::string name;
  std::vector<std::string> orgs;  // empty: every organization
};

struct VaultFactory {
  std::string name;  // for the test names
  std::function<std::unique_ptr<VaultUnderTest>(const std::vector<ContractToken>&)> make;
};

class VaultContractTest : public ::testing::TestWithParam<VaultFactory> {
 protected:
  // A vault of `tokens` (by default a primary and a standby serving every organization) with
  // acme's first root keys.
  void Make(const std::vector<ContractToken>& tokens = {{"primary", {}}, {"standby", {}}}) {
    under_test_ = GetParam().make(tokens);
    ASSERT_TRUE(under_test_);
    Status roots = under_test_->InitRoot("acme");
    ASSERT_TRUE(roots.ok()) << roots.error().ToString();
  }
  Vault& vault() { return under_test_->vault(); }

  std::unique_ptr<VaultUnderTest> under_test_;
};

inline std::string VaultFactoryName(const ::testing::TestParamInfo<VaultFactory>& info) {
  return info.param.name;
}
inline void PrintTo(const VaultFactory& factory, std::ostream* out) { *out << factory.name; }

}  // namespace strongroom::hsm

#endif  // STRONGROOM_TESTS_HSM_VAULT_CONTRACT_H_
