// NewTestVault (test_vault.h) on a fresh SoftHSM2 token of the sandbox (softhsm_sandbox.h).
#include <gtest/gtest.h>

#include "softhsm_sandbox.h"
#include "strongroom/hsm/key_vault.h"
#include "test_vault.h"

namespace strongroom::testing {

std::unique_ptr<hsm::Vault> NewTestVault() {
  hsm::TokenConfig token;
  token.name = "primary";
  token.uri =
      SoftHsmSandbox::Get().Uri(kSoftHsmModule, SoftHsmSandbox::Get().CreateToken(kSoftHsmModule));
  auto vault = hsm::KeyVault::Open({{token}});
  EXPECT_TRUE(vault.ok()) << vault.error().ToString();
  if (!vault.ok()) return nullptr;
  for (const char* org : {"acme", "globex"}) {
    auto roots = (*vault)->InitRoot(org);
    EXPECT_TRUE(roots.ok()) << roots.error().ToString();
    if (!roots.ok()) return nullptr;
  }
  auto identity = (*vault)->tokens()[0]->CreateIdentityKey("kms", 2048);
  EXPECT_TRUE(identity.ok()) << identity.error().ToString();
  if (!identity.ok()) return nullptr;
  return std::move(vault).value();
}

}  // namespace strongroom::testing
