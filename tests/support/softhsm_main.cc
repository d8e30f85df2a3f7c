// main() for test programs that use SoftHSM2: sets up the sandbox before any test loads a module.
#include <gtest/gtest.h>

#include "softhsm_sandbox.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  strongroom::testing::SoftHsmSandbox::Get();
  int rc = RUN_ALL_TESTS();
  strongroom::testing::SoftHsmSandbox::Get().ReleaseModules();
  return rc;
}
