// A SoftHSM2 token directory of the test run's own, under a fresh temporary directory.
//
// The sandbox points SOFTHSM2_CONF at its configuration before any module is loaded, so the
// system's tokens are never touched; it is removed when the test program ends. Tokens are real
// SoftHSM2 tokens, initialized through PKCS#11 (C_InitToken, C_InitPIN).
#ifndef STRONGROOM_TESTS_SUPPORT_SOFTHSM_SANDBOX_H_
#define STRONGROOM_TESTS_SUPPORT_SOFTHSM_SANDBOX_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "strongroom/hsm/module.h"

namespace strongroom::testing {

inline constexpr char kSoftHsmModule[] = "/usr/lib/softhsm/libsofthsm2.so";
inline constexpr char kUserPin[] = "4711-user";
inline constexpr char kSoPin[] = "0815-officer";

class SoftHsmSandbox {
 public:
  // Creates the sandbox the first time; aborts the test program if that fails.
  static SoftHsmSandbox& Get();

  const std::string& dir() const { return dir_; }
  const std::string& pin_file() const { return pin_file_; }

  // Writes `content` to a new file in the sandbox (mode 0600) and returns its path.
  std::string WriteFile(const std::string& name, const std::string& content) const;

  // Initializes a new token through `module` and returns its label (unique per call).
  std::string CreateToken(const std::string& module, const std::string& label_prefix = "t");

  // The directory SoftHSM2 keeps the token `label` in (one made by CreateToken), for tests that
  // take a token away from under a running module by renaming it.
  std::string TokenDirectory(const std::string& label) const;

  // A PKCS#11 URI for the token with the sandbox's user PIN file.
  std::string Uri(const std::string& module, const std::string& label) const;
  std::string Uri(const std::string& module, const std::string& label,
                  const std::string& pin_file) const;

  // Unloads the modules the sandbox kept loaded. Called at the end of main(): finalizing SoftHSM2
  // from a static destructor, after its own statics are gone, hangs.
  void ReleaseModules() { modules_.clear(); }

  ~SoftHsmSandbox();

 private:
  SoftHsmSandbox();
  std::string dir_;
  std::string pin_file_;
  std::string so_pin_file_;
  int tokens_ = 0;
  std::map<std::string, std::string> token_dirs_;  // label -> its directory
  // Modules stay loaded for the whole run: reloading SoftHSM2 per token would rescan the store.
  std::vector<std::shared_ptr<hsm::Module>> modules_;
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_SOFTHSM_SANDBOX_H_
