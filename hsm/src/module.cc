#include "strongroom/hsm/module.h"

#include <dlfcn.h>

#include <map>
#include <utility>

#include "cryptoki.h"
#include "strongroom/hsm/ck_result.h"

namespace strongroom::hsm {

Result<std::shared_ptr<Module>> Module::Load(const std::string& path) {
  // Process-wide by nature: C_Initialize may be called once per process and module.
  static std::mutex registry_mutex;
  static std::map<std::string, std::weak_ptr<Module>> registry;

  if (path.empty()) {
    return Error(ErrorCode::kInvalidArgument, "no PKCS#11 module path given");
  }
  std::lock_guard lock(registry_mutex);
  if (auto it = registry.find(path); it != registry.end()) {
    if (auto existing = it->second.lock()) return existing;
  }
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return Error(ErrorCode::kNotFound, "cannot load PKCS#11 module " + path + ": " +
                                           (why != nullptr ? why : "unknown dlopen error"));
  }
  Result<CK_FUNCTION_LIST_PTR> fn = internal::Cryptoki::FunctionList(handle, path);
  if (!fn.ok()) {
    dlclose(handle);
    return fn.error();
  }
  bool owns_init = false;
  if (Status s = Initialize(*fn, &owns_init); !s.ok()) {
    dlclose(handle);
    return s.error();
  }
  std::shared_ptr<Module> module(new Module(path, handle, *fn, owns_init));
  registry[path] = module;
  return module;
}

Status Module::Initialize(CK_FUNCTION_LIST_PTR fn, bool* owns_init) {
  CK_C_INITIALIZE_ARGS args{};
  args.flags = CKF_OS_LOCKING_OK;
  const CkResult initialized = internal::Cryptoki(fn).Initialize(args);
  if (initialized.rv() == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    // Another component of this process initialized it; it also owns C_Finalize.
    *owns_init = false;
    return OkStatus();
  }
  *owns_init = true;
  return initialized;
}

Module::Module(std::string path, void* handle, CK_FUNCTION_LIST_PTR fn, bool owns_init)
    : path_(std::move(path)), handle_(handle), fn_(fn), owns_init_(owns_init) {}

Module::~Module() {
  if (owns_init_) (void)internal::Cryptoki(fn_).Finalize();
  dlclose(handle_);
}

Status Module::Reset(std::uint64_t seen_generation) {
  std::lock_guard turn(turnstile_);
  resets_waiting_.fetch_add(1, std::memory_order_acq_rel);
  std::unique_lock lock(reset_mutex_);
  resets_waiting_.fetch_sub(1, std::memory_order_acq_rel);
  if (generation() != seen_generation) return OkStatus();  // someone else reset it already
  // May fail with CKR_CRYPTOKI_NOT_INITIALIZED: that is the point.
  (void)internal::Cryptoki(fn_).Finalize();
  bool owns = false;
  Status s = Initialize(fn_, &owns);
  if (!s.ok()) return s;
  owns_init_ = true;
  generation_.fetch_add(1, std::memory_order_acq_rel);
  return OkStatus();
}

}  // namespace strongroom::hsm
