// A PKCS#11 module that forwards to a real one and injects failures on request (see
// fault_pkcs11.h).
#include "fault_pkcs11.h"

#include <dlfcn.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace {

std::mutex g_mutex;
CK_FUNCTION_LIST g_list;
CK_FUNCTION_LIST_PTR g_real = nullptr;
std::map<CK_SESSION_HANDLE, std::string> g_session_tokens;  // session -> token label

struct Fault {
  bool active = false;
  CK_RV rv = CKR_OK;
  int count = 0;
};
std::map<std::string, Fault> g_token_faults;
std::map<std::string, Fault> g_call_faults;
std::map<std::string, unsigned long> g_calls;
bool g_pin_locked = false;
std::string g_hold_next;  // a function whose next completed call waits for a release
bool g_holding = false;
bool g_released = false;
std::condition_variable g_hold_changed;
CK_MECHANISM_TYPE g_hidden = static_cast<CK_MECHANISM_TYPE>(-1);

bool Take(Fault& f, CK_RV* rv) {
  if (!f.active) return false;
  *rv = f.rv;
  if (f.count > 0 && --f.count == 0) f.active = false;
  return true;
}

std::string LabelOf(CK_SLOT_ID slot) {
  CK_TOKEN_INFO info{};
  if (g_real->C_GetTokenInfo(slot, &info) != CKR_OK) return "";
  std::string label(reinterpret_cast<const char*>(info.label), sizeof info.label);
  while (!label.empty() && label.back() == ' ') label.pop_back();
  return label;
}

// Counts the call and says whether it must fail (and with what). `label` may be empty.
bool Inject(const char* function, const std::string& label, CK_RV* rv) {
  std::lock_guard lock(g_mutex);
  ++g_calls[function];
  if (auto it = g_call_faults.find(function); it != g_call_faults.end() && Take(it->second, rv)) {
    return true;
  }
  if (!label.empty()) {
    if (auto it = g_token_faults.find(label); it != g_token_faults.end() && Take(it->second, rv)) {
      return true;
    }
  }
  return false;
}

bool InjectSlot(const char* function, CK_SLOT_ID slot, CK_RV* rv) {
  return Inject(function, LabelOf(slot), rv);
}

bool InjectSession(const char* function, CK_SESSION_HANDLE session, CK_RV* rv) {
  std::string label;
  {
    std::lock_guard lock(g_mutex);
    if (auto it = g_session_tokens.find(session); it != g_session_tokens.end()) label = it->second;
  }
  return Inject(function, label, rv);
}

#define SESSION_GUARD(name, session)                                \
  do {                                                              \
    CK_RV injected_;                                                \
    if (InjectSession(name, session, &injected_)) return injected_; \
  } while (0)

// After the real call of `function` returned: waits there if a test asked to hold it.
void HoldIfAsked(const char* function) {
  std::unique_lock lock(g_mutex);
  if (g_hold_next != function) return;
  g_hold_next.clear();
  g_holding = true;
  g_released = false;
  g_hold_changed.notify_all();
  g_hold_changed.wait(lock, [] { return g_released; });
  g_holding = false;
}

CK_RV Initialize(CK_VOID_PTR args) {
  CK_RV rv;
  if (Inject("C_Initialize", "", &rv)) return rv;
  return g_real->C_Initialize(args);
}

CK_RV Finalize(CK_VOID_PTR reserved) {
  {
    std::lock_guard lock(g_mutex);
    g_session_tokens.clear();
  }
  return g_real->C_Finalize(reserved);
}

CK_RV GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) {
  CK_RV rv;
  if (InjectSlot("C_GetTokenInfo", slot, &rv)) return rv;
  rv = g_real->C_GetTokenInfo(slot, info);
  std::lock_guard lock(g_mutex);
  if (rv == CKR_OK && g_pin_locked) info->flags |= CKF_USER_PIN_LOCKED;
  return rv;
}

CK_RV GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count) {
  CK_RV rv;
  if (InjectSlot("C_GetMechanismList", slot, &rv)) return rv;
  CK_ULONG real_count = 0;
  rv = g_real->C_GetMechanismList(slot, nullptr, &real_count);
  if (rv != CKR_OK) return rv;
  CK_MECHANISM_TYPE* all = new CK_MECHANISM_TYPE[real_count + 1];
  rv = g_real->C_GetMechanismList(slot, all, &real_count);
  CK_ULONG kept = 0;
  {
    std::lock_guard lock(g_mutex);
    for (CK_ULONG i = 0; i < real_count; ++i) {
      if (all[i] != g_hidden) all[kept++] = all[i];
    }
  }
  if (rv == CKR_OK && list != nullptr) {
    if (*count < kept) {
      rv = CKR_BUFFER_TOO_SMALL;
    } else {
      std::memcpy(list, all, kept * sizeof(CK_MECHANISM_TYPE));
    }
  }
  *count = kept;
  delete[] all;
  return rv;
}

CK_RV GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info) {
  {
    std::lock_guard lock(g_mutex);
    if (type == g_hidden) return CKR_MECHANISM_INVALID;
  }
  return g_real->C_GetMechanismInfo(slot, type, info);
}

CK_RV OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                  CK_SESSION_HANDLE_PTR session) {
  CK_RV rv;
  if (InjectSlot("C_OpenSession", slot, &rv)) return rv;
  rv = g_real->C_OpenSession(slot, flags, app, notify, session);
  if (rv == CKR_OK) {
    std::string label = LabelOf(slot);
    std::lock_guard lock(g_mutex);
    g_session_tokens[*session] = label;
  }
  return rv;
}

CK_RV CloseSession(CK_SESSION_HANDLE session) {
  {
    std::lock_guard lock(g_mutex);
    ++g_calls["C_CloseSession"];
    g_session_tokens.erase(session);
  }
  return g_real->C_CloseSession(session);
}

CK_RV Login(CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG len) {
  SESSION_GUARD("C_Login", session);
  {
    std::lock_guard lock(g_mutex);
    if (g_pin_locked && user == CKU_USER) return CKR_PIN_LOCKED;
  }
  return g_real->C_Login(session, user, pin, len);
}

CK_RV Logout(CK_SESSION_HANDLE session) {
  SESSION_GUARD("C_Logout", session);
  return g_real->C_Logout(session);
}

CK_RV GenerateRandom(CK_SESSION_HANDLE session, CK_BYTE_PTR out, CK_ULONG len) {
  SESSION_GUARD("C_GenerateRandom", session);
  return g_real->C_GenerateRandom(session, out, len);
}

CK_RV EncryptInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
  SESSION_GUARD("C_EncryptInit", session);
  return g_real->C_EncryptInit(session, mechanism, key);
}

CK_RV Encrypt(CK_SESSION_HANDLE session, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,
              CK_ULONG_PTR out_len) {
  SESSION_GUARD("C_Encrypt", session);
  return g_real->C_Encrypt(session, in, in_len, out, out_len);
}

CK_RV DecryptInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
  SESSION_GUARD("C_DecryptInit", session);
  return g_real->C_DecryptInit(session, mechanism, key);
}

CK_RV Decrypt(CK_SESSION_HANDLE session, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,
              CK_ULONG_PTR out_len) {
  SESSION_GUARD("C_Decrypt", session);
  const CK_RV rv = g_real->C_Decrypt(session, in, in_len, out, out_len);
  if (rv == CKR_OK && out != nullptr) HoldIfAsked("C_Decrypt");
  return rv;
}

CK_RV FindObjectsInit(CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR templ, CK_ULONG count) {
  SESSION_GUARD("C_FindObjectsInit", session);
  return g_real->C_FindObjectsInit(session, templ, count);
}

CK_RV FindObjects(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE_PTR objects, CK_ULONG max,
                  CK_ULONG_PTR count) {
  SESSION_GUARD("C_FindObjects", session);
  const CK_RV rv = g_real->C_FindObjects(session, objects, max, count);
  if (rv == CKR_OK) HoldIfAsked("C_FindObjects");
  return rv;
}

CK_RV GetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR templ,
                        CK_ULONG count) {
  SESSION_GUARD("C_GetAttributeValue", session);
  return g_real->C_GetAttributeValue(session, object, templ, count);
}

CK_RV SignInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key) {
  SESSION_GUARD("C_SignInit", session);
  return g_real->C_SignInit(session, mechanism, key);
}

CK_RV Sign(CK_SESSION_HANDLE session, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,
           CK_ULONG_PTR out_len) {
  SESSION_GUARD("C_Sign", session);
  return g_real->C_Sign(session, in, in_len, out, out_len);
}

CK_RV CopyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR templ,
                 CK_ULONG count, CK_OBJECT_HANDLE_PTR copy) {
  SESSION_GUARD("C_CopyObject", session);
  return g_real->C_CopyObject(session, object, templ, count, copy);
}

CK_RV CreateObject(CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR templ, CK_ULONG count,
                   CK_OBJECT_HANDLE_PTR object) {
  SESSION_GUARD("C_CreateObject", session);
  const CK_RV rv = g_real->C_CreateObject(session, templ, count, object);
  if (rv == CKR_OK) HoldIfAsked("C_CreateObject");
  return rv;
}

CK_RV DestroyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object) {
  SESSION_GUARD("C_DestroyObject", session);
  return g_real->C_DestroyObject(session, object);
}

CK_RV GenerateKey(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mechanism, CK_ATTRIBUTE_PTR templ,
                  CK_ULONG count, CK_OBJECT_HANDLE_PTR key) {
  SESSION_GUARD("C_GenerateKey", session);
  return g_real->C_GenerateKey(session, mechanism, templ, count, key);
}

bool LoadReal() {
  const char* path = std::getenv("SR_FAULT_REAL_MODULE");
  if (path == nullptr || *path == '\0') path = "/usr/lib/softhsm/libsofthsm2.so";
  void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) return false;
  auto get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(handle, "C_GetFunctionList"));
  if (get == nullptr || get(&g_real) != CKR_OK || g_real == nullptr) return false;
  g_list = *g_real;
  g_list.C_Initialize = Initialize;
  g_list.C_Finalize = Finalize;
  g_list.C_GetTokenInfo = GetTokenInfo;
  g_list.C_GetMechanismList = GetMechanismList;
  g_list.C_GetMechanismInfo = GetMechanismInfo;
  g_list.C_OpenSession = OpenSession;
  g_list.C_CloseSession = CloseSession;
  g_list.C_Login = Login;
  g_list.C_Logout = Logout;
  g_list.C_GenerateRandom = GenerateRandom;
  g_list.C_EncryptInit = EncryptInit;
  g_list.C_Encrypt = Encrypt;
  g_list.C_DecryptInit = DecryptInit;
  g_list.C_Decrypt = Decrypt;
  g_list.C_FindObjectsInit = FindObjectsInit;
  g_list.C_FindObjects = FindObjects;
  g_list.C_GetAttributeValue = GetAttributeValue;
  g_list.C_SignInit = SignInit;
  g_list.C_Sign = Sign;
  g_list.C_CopyObject = CopyObject;
  g_list.C_CreateObject = CreateObject;
  g_list.C_DestroyObject = DestroyObject;
  g_list.C_GenerateKey = GenerateKey;
  if (const char* hide = std::getenv("SR_FAULT_HIDE_MECHANISM")) {
    g_hidden = std::strtoul(hide, nullptr, 0);
  }
  if (const char* locked = std::getenv("SR_FAULT_PIN_LOCKED")) g_pin_locked = *locked == '1';
  return true;
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  static const bool loaded = LoadReal();
  if (!loaded) return CKR_GENERAL_ERROR;
  *list = &g_list;
  return CKR_OK;
}

__attribute__((visibility("default"))) void sr_fault_fail_token(const char* label, CK_RV rv,
                                                                int count) {
  std::lock_guard lock(g_mutex);
  g_token_faults[label] = Fault{true, rv, count};
}

__attribute__((visibility("default"))) void sr_fault_fail_call(const char* function, CK_RV rv,
                                                               int count) {
  std::lock_guard lock(g_mutex);
  g_call_faults[function] = Fault{true, rv, count};
}

__attribute__((visibility("default"))) void sr_fault_lock_pin(int locked) {
  std::lock_guard lock(g_mutex);
  g_pin_locked = locked != 0;
}

__attribute__((visibility("default"))) void sr_fault_hide_mechanism(CK_MECHANISM_TYPE mechanism) {
  std::lock_guard lock(g_mutex);
  g_hidden = mechanism;
}

__attribute__((visibility("default"))) void sr_fault_clear(void) {
  std::lock_guard lock(g_mutex);
  g_token_faults.clear();
  g_call_faults.clear();
  g_pin_locked = false;
  g_hidden = static_cast<CK_MECHANISM_TYPE>(-1);
}

__attribute__((visibility("default"))) void sr_fault_hold_next(const char* function) {
  std::lock_guard lock(g_mutex);
  g_hold_next = function;
}

__attribute__((visibility("default"))) int sr_fault_held(void) {
  std::lock_guard lock(g_mutex);
  return g_holding ? 1 : 0;
}

__attribute__((visibility("default"))) void sr_fault_release_held(void) {
  std::lock_guard lock(g_mutex);
  g_released = true;
  g_hold_changed.notify_all();
}

__attribute__((visibility("default"))) unsigned long sr_fault_calls(const char* function) {
  std::lock_guard lock(g_mutex);
  auto it = g_calls.find(function);
  return it == g_calls.end() ? 0 : it->second;
}

}  // extern "C"
