// A SoftHSM2 token directory of the benchmark's own, under a fresh temporary directory.
//
// Create() writes a softhsm2.conf that keeps tokens in <tmp>/tokens and points SOFTHSM2_CONF at
// it, so it must run before the process loads SoftHSM2; the system's tokens are never touched.
// PIN files are written with mode 0600. The directory is removed when the object is destroyed.
#ifndef STRONGROOM_BENCH_SOFTHSM_TOKEN_DIR_H_
#define STRONGROOM_BENCH_SOFTHSM_TOKEN_DIR_H_

#include <memory>
#include <string>
#include <utility>

#include "strongroom/common/error.h"
#include "strongroom/hsm/module.h"

namespace strongroom::bench {

inline constexpr char kSoftHsmModule[] = "/usr/lib/softhsm/libsofthsm2.so";

class SoftHsmTokenDir {
 public:
  static Result<std::unique_ptr<SoftHsmTokenDir>> Create();
  ~SoftHsmTokenDir();
  SoftHsmTokenDir(const SoftHsmTokenDir&) = delete;
  SoftHsmTokenDir& operator=(const SoftHsmTokenDir&) = delete;

  const std::string& dir() const { return dir_; }

  // Initializes a new token labelled `label` through `module` (C_InitToken, C_InitPIN).
  Status InitializeToken(hsm::Module& module, const std::string& label) const;

  // A PKCS#11 URI for the token labelled `label` with this directory's user PIN file.
  std::string Uri(const std::string& label) const;

 private:
  explicit SoftHsmTokenDir(std::string dir) : dir_(std::move(dir)) {}
  Result<std::string> WriteFile(const std::string& name, const std::string& content) const;

  const std::string dir_;
  std::string user_pin_file_;
  std::string so_pin_file_;
};

}  // namespace strongroom::bench

#endif  // STRONGROOM_BENCH_SOFTHSM_TOKEN_DIR_H_
