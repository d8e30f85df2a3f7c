// NewTestVault (test_vault.h) in memory.
#include <gtest/gtest.h>

#include "fake_vault.h"
#include "test_vault.h"

namespace strongroom::testing {

std::unique_ptr<hsm::Vault> NewTestVault() {
  auto vault = std::make_unique<FakeVault>();
  for (const char* org : {"acme", "globex"}) {
    auto roots = vault->InitRoot(org);
    EXPECT_TRUE(roots.ok()) << roots.error().ToString();
    if (!roots.ok()) return nullptr;
  }
  Status identity = vault->CreateIdentityKeys("kms");
  EXPECT_TRUE(identity.ok()) << identity.error().ToString();
  if (!identity.ok()) return nullptr;
  return vault;
}

}  // namespace strongroom::testing
