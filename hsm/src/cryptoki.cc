#include "cryptoki.h"

#include <dlfcn.h>

namespace strongroom::hsm::internal {
namespace {

// The one place a PKCS#11 function is called: `function` is the module's entry for `name`.
template <typename... Params, typename... Args>
CkResult Call(const char* name, CK_RV (*function)(Params...), Args... args) {
  if (function == nullptr) return CkResult(CKR_FUNCTION_NOT_SUPPORTED, name);
  return CkResult(function(args...), name);
}

// Calls the function-list entry `function`, naming it after itself.
#define SR_CRYPTOKI_CALL(function, ...) Call(#function, fn_->function, __VA_ARGS__)

CK_BYTE_PTR In(std::span<const std::uint8_t> bytes) {
  return const_cast<CK_BYTE_PTR>(bytes.data());  // PKCS#11 only reads input buffers
}

CK_ULONG Length(std::size_t size) { return static_cast<CK_ULONG>(size); }

}  // namespace

Result<CK_FUNCTION_LIST_PTR> Cryptoki::FunctionList(void* library, const std::string& path) {
  auto get_list = reinterpret_cast<CK_C_GetFunctionList>(dlsym(library, "C_GetFunctionList"));
  if (get_list == nullptr) {
    return Error(ErrorCode::kInvalidArgument,
                 path + " is not a PKCS#11 module (no C_GetFunctionList)");
  }
  CK_FUNCTION_LIST_PTR list = nullptr;
  const CkResult got = Call("C_GetFunctionList", get_list, &list);
  if (!got.ok() || list == nullptr) {
    return CkError(got.ok() ? CKR_GENERAL_ERROR : got.rv(), "C_GetFunctionList of " + path);
  }
  return list;
}

CkResult Cryptoki::Initialize(CK_C_INITIALIZE_ARGS& args) {
  return SR_CRYPTOKI_CALL(C_Initialize, &args);
}

CkResult Cryptoki::Finalize() { return SR_CRYPTOKI_CALL(C_Finalize, nullptr); }

CkResult Cryptoki::GetSlotList(bool token_present, CK_SLOT_ID* items, CK_ULONG& count) {
  const CK_BBOOL present = token_present ? CK_TRUE : CK_FALSE;
  return SR_CRYPTOKI_CALL(C_GetSlotList, present, items, &count);
}

Result<std::vector<CK_SLOT_ID>> Cryptoki::SlotList(bool token_present) {
  CK_ULONG count = 0;
  SR_RETURN_IF_ERROR(GetSlotList(token_present, nullptr, count));
  std::vector<CK_SLOT_ID> slots(count);
  if (count > 0) {
    SR_RETURN_IF_ERROR(GetSlotList(token_present, slots.data(), count));
    slots.resize(count);
  }
  return slots;
}

CkResult Cryptoki::GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO& info) {
  return SR_CRYPTOKI_CALL(C_GetSlotInfo, slot, &info);
}

CkResult Cryptoki::GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO& info) {
  return SR_CRYPTOKI_CALL(C_GetTokenInfo, slot, &info);
}

CkResult Cryptoki::GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE* items, CK_ULONG& count) {
  return SR_CRYPTOKI_CALL(C_GetMechanismList, slot, items, &count);
}

Result<std::vector<CK_MECHANISM_TYPE>> Cryptoki::MechanismList(CK_SLOT_ID slot) {
  CK_ULONG count = 0;
  SR_RETURN_IF_ERROR(GetMechanismList(slot, nullptr, count));
  std::vector<CK_MECHANISM_TYPE> mechanisms(count);
  if (count > 0) {
    SR_RETURN_IF_ERROR(GetMechanismList(slot, mechanisms.data(), count));
    mechanisms.resize(count);
  }
  return mechanisms;
}

CkResult Cryptoki::GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE mechanism,
                                    CK_MECHANISM_INFO& info) {
  return SR_CRYPTOKI_CALL(C_GetMechanismInfo, slot, mechanism, &info);
}

CkResult Cryptoki::InitToken(CK_SLOT_ID slot, const SecretBytes& so_pin,
                             std::span<const CK_UTF8CHAR, 32> label) {
  return SR_CRYPTOKI_CALL(C_InitToken, slot, const_cast<CK_UTF8CHAR_PTR>(so_pin.data()),
                          Length(so_pin.size()), const_cast<CK_UTF8CHAR_PTR>(label.data()));
}

CkResult Cryptoki::OpenSession(CK_SLOT_ID slot, CK_SESSION_HANDLE& session) {
  return SR_CRYPTOKI_CALL(C_OpenSession, slot, CK_FLAGS{CKF_SERIAL_SESSION | CKF_RW_SESSION},
                          nullptr, nullptr, &session);
}

CkResult Cryptoki::CloseSession(CK_SESSION_HANDLE session) {
  return SR_CRYPTOKI_CALL(C_CloseSession, session);
}

CkResult Cryptoki::GetSessionInfo(CK_SESSION_HANDLE session, CK_SESSION_INFO& info) {
  return SR_CRYPTOKI_CALL(C_GetSessionInfo, session, &info);
}

CkResult Cryptoki::Login(CK_SESSION_HANDLE session, CK_USER_TYPE user, const SecretBytes& pin) {
  return SR_CRYPTOKI_CALL(C_Login, session, user, const_cast<CK_UTF8CHAR_PTR>(pin.data()),
                          Length(pin.size()));
}

CkResult Cryptoki::Logout(CK_SESSION_HANDLE session) { return SR_CRYPTOKI_CALL(C_Logout, session); }

CkResult Cryptoki::InitPin(CK_SESSION_HANDLE session, const SecretBytes& pin) {
  return SR_CRYPTOKI_CALL(C_InitPIN, session, const_cast<CK_UTF8CHAR_PTR>(pin.data()),
                          Length(pin.size()));
}

CkResult Cryptoki::CreateObject(CK_SESSION_HANDLE session, AttributeTemplate& attributes,
                                CK_OBJECT_HANDLE& object) {
  return SR_CRYPTOKI_CALL(C_CreateObject, session, attributes.data(), attributes.size(), &object);
}

CkResult Cryptoki::CopyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                              AttributeTemplate& changes, CK_OBJECT_HANDLE& copy) {
  return SR_CRYPTOKI_CALL(C_CopyObject, session, object, changes.data(), changes.size(), &copy);
}

CkResult Cryptoki::DestroyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object) {
  return SR_CRYPTOKI_CALL(C_DestroyObject, session, object);
}

CkResult Cryptoki::GetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                                     CK_ATTRIBUTE& attribute) {
  return SR_CRYPTOKI_CALL(C_GetAttributeValue, session, object, &attribute, CK_ULONG{1});
}

CkResult Cryptoki::FindObjectsInit(CK_SESSION_HANDLE session, AttributeTemplate& match) {
  return SR_CRYPTOKI_CALL(C_FindObjectsInit, session, match.data(), match.size());
}

CkResult Cryptoki::FindObjects(CK_SESSION_HANDLE session, std::span<CK_OBJECT_HANDLE> found,
                               CK_ULONG& count) {
  return SR_CRYPTOKI_CALL(C_FindObjects, session, found.data(), Length(found.size()), &count);
}

CkResult Cryptoki::FindObjectsFinal(CK_SESSION_HANDLE session) {
  return SR_CRYPTOKI_CALL(C_FindObjectsFinal, session);
}

CkResult Cryptoki::GenerateKey(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism,
                               AttributeTemplate& attributes, CK_OBJECT_HANDLE& key) {
  return SR_CRYPTOKI_CALL(C_GenerateKey, session, &mechanism, attributes.data(), attributes.size(),
                          &key);
}

CkResult Cryptoki::GenerateKeyPair(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism,
                                   AttributeTemplate& public_attributes,
                                   AttributeTemplate& private_attributes,
                                   CK_OBJECT_HANDLE& public_key, CK_OBJECT_HANDLE& private_key) {
  return SR_CRYPTOKI_CALL(C_GenerateKeyPair, session, &mechanism, public_attributes.data(),
                          public_attributes.size(), private_attributes.data(),
                          private_attributes.size(), &public_key, &private_key);
}

CkResult Cryptoki::GenerateRandom(CK_SESSION_HANDLE session, std::span<std::uint8_t> out) {
  return SR_CRYPTOKI_CALL(C_GenerateRandom, session, out.data(), Length(out.size()));
}

CkResult Cryptoki::EncryptInit(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism,
                               CK_OBJECT_HANDLE key) {
  return SR_CRYPTOKI_CALL(C_EncryptInit, session, &mechanism, key);
}

CkResult Cryptoki::Encrypt(CK_SESSION_HANDLE session, std::span<const std::uint8_t> in,
                           std::span<std::uint8_t> out, CK_ULONG& written) {
  written = Length(out.size());
  return SR_CRYPTOKI_CALL(C_Encrypt, session, In(in), Length(in.size()), out.data(), &written);
}

CkResult Cryptoki::DecryptInit(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism,
                               CK_OBJECT_HANDLE key) {
  return SR_CRYPTOKI_CALL(C_DecryptInit, session, &mechanism, key);
}

CkResult Cryptoki::Decrypt(CK_SESSION_HANDLE session, std::span<const std::uint8_t> in,
                           std::span<std::uint8_t> out, CK_ULONG& written) {
  written = Length(out.size());
  return SR_CRYPTOKI_CALL(C_Decrypt, session, In(in), Length(in.size()), out.data(), &written);
}

CkResult Cryptoki::SignInit(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism,
                            CK_OBJECT_HANDLE key) {
  return SR_CRYPTOKI_CALL(C_SignInit, session, &mechanism, key);
}

CkResult Cryptoki::Sign(CK_SESSION_HANDLE session, std::span<const std::uint8_t> in,
                        std::span<std::uint8_t> out, CK_ULONG& written) {
  written = Length(out.size());
  return SR_CRYPTOKI_CALL(C_Sign, session, In(in), Length(in.size()), out.data(), &written);
}

#undef SR_CRYPTOKI_CALL

}  // namespace strongroom::hsm::internal
