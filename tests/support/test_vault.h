// The vault the KMS protocol tests run on, chosen by what the test program links: the in-memory
// FakeVault (test_vault_fake.cc, no SoftHSM2) or a KeyVault on a fresh SoftHSM2 token
// (test_vault_softhsm.cc), so that the same tests run on either. Both hold one token, "primary",
// serving every organization, with root keys for acme and globex and the identity key "kms".
#ifndef STRONGROOM_TESTS_SUPPORT_TEST_VAULT_H_
#define STRONGROOM_TESTS_SUPPORT_TEST_VAULT_H_

#include <memory>

#include "strongroom/hsm/vault.h"

namespace strongroom::testing {

// Null (with a test failure recorded) if the vault could not be made.
std::unique_ptr<hsm::Vault> NewTestVault();

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_TEST_VAULT_H_
