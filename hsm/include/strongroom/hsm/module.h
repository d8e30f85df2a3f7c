// A PKCS#11 module loaded by path (dlopen + C_GetFunctionList + C_Initialize with
// CKF_OS_LOCKING_OK). Nothing links a module at build time, so the same binary works with
// SoftHSM2 or a vendor's library.
//
// Cryptoki initialization is process-wide, so a module path is loaded once per process: Load()
// hands out the same Module to every caller while any of them holds it. Thread-safe.
#ifndef STRONGROOM_HSM_MODULE_H_
#define STRONGROOM_HSM_MODULE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "strongroom/common/error.h"
#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm {

class Module {
 public:
  static Result<std::shared_ptr<Module>> Load(const std::string& path);
  ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  CK_FUNCTION_LIST_PTR fn() const { return fn_; }
  const std::string& path() const { return path_; }

  // Increases on every reset. Sessions, logins and object handles obtained under an older
  // generation are gone.
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  std::uint64_t resets() const { return generation() - 1; }
  // Resets now waiting for the uses in flight to end (and holding new ones back meanwhile).
  int resets_waiting() const { return resets_waiting_.load(std::memory_order_acquire); }

  // Finalizes and re-initializes the module, unless another caller already did so since
  // `seen_generation`. Waits for every in-flight use (see UseGuard) to end first. Never call it
  // while holding a use guard.
  Status Reset(std::uint64_t seen_generation);

  // Held while the module is called (a session in use, a slot looked up), so a reset never
  // finalizes under a call. A reset that waits holds new uses back until it is done, so that a
  // steady load on one token cannot hold off the repair of another for ever; a thread must
  // therefore never wait for a second guard, or for a lock whose holder may, while it holds one.
  std::shared_lock<std::shared_mutex> UseGuard() {
    { std::lock_guard turn(turnstile_); }
    return std::shared_lock(reset_mutex_);
  }

 private:
  Module(std::string path, void* handle, CK_FUNCTION_LIST_PTR fn, bool owns_init);
  static Status Initialize(CK_FUNCTION_LIST_PTR fn, bool* owns_init);

  const std::string path_;
  void* const handle_;
  CK_FUNCTION_LIST_PTR const fn_;
  bool owns_init_;
  std::atomic<std::uint64_t> generation_{1};
  std::mutex turnstile_;  // held by a reset from before it waits for the uses until it is done
  std::atomic<int> resets_waiting_{0};
  std::shared_mutex reset_mutex_;
};

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_MODULE_H_
