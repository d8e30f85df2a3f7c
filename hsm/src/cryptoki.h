// The one checked layer every PKCS#11 call of Strongroom goes through (as Botan's LowLevel).
//
// Each method calls one function of a module's function list, and nothing else: it passes on what
// the caller has (spans, SecretBytes, an AttributeTemplate) and returns a CkResult (ck_result.h),
// the CK_RV with the name of the function, which becomes an Error that names the call and keeps
// the raw CKR. The function is called in one place, Call() in cryptoki.cc; an entry a module left
// empty reads as CKR_FUNCTION_NOT_SUPPORTED rather than a jump to address 0. What a failure means
// is decided above: ClassifyCkr (ck_result.h) and the token's repairs (token.h).
//
// Nothing else calls a module's functions, and a test holds that true (scripts/check-pkcs11-calls,
// run by ctest). Only tests/ and bench/ call PKCS#11 directly, on purpose: they check the token, or
// measure this layer, from outside.
//
// A Cryptoki is the function-list pointer, nothing more: no lock, no session. The caller holds the
// module's use guard (Module::UseGuard) and, for session calls, the session exclusively
// (SessionLease), as PKCS#11 requires.
#ifndef STRONGROOM_HSM_SRC_CRYPTOKI_H_
#define STRONGROOM_HSM_SRC_CRYPTOKI_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "attribute_template.h"
#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/hsm/ck_result.h"
#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm::internal {

class Cryptoki {
 public:
  // The function list of the module dlopen()ed as `library` from `path` (its C_GetFunctionList).
  static Result<CK_FUNCTION_LIST_PTR> FunctionList(void* library, const std::string& path);

  explicit Cryptoki(CK_FUNCTION_LIST_PTR functions) : fn_(functions) {}

  // The module.
  CkResult Initialize(CK_C_INITIALIZE_ARGS& args);
  CkResult Finalize();

  // Slots and tokens. The list calls are asked twice when `items` is not null: PKCS#11 returns the
  // length when it is. SlotList and MechanismList do both steps.
  CkResult GetSlotList(bool token_present, CK_SLOT_ID* items, CK_ULONG& count);
  Result<std::vector<CK_SLOT_ID>> SlotList(bool token_present);
  CkResult GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO& info);
  CkResult GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO& info);
  CkResult GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE* items, CK_ULONG& count);
  Result<std::vector<CK_MECHANISM_TYPE>> MechanismList(CK_SLOT_ID slot);
  CkResult GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE mechanism, CK_MECHANISM_INFO& info);
  // `label` blank-padded, as PKCS#11 wants it.
  CkResult InitToken(CK_SLOT_ID slot, const SecretBytes& so_pin,
                     std::span<const CK_UTF8CHAR, 32> label);

  // Sessions and logins. Strongroom opens only serial read-write sessions.
  CkResult OpenSession(CK_SLOT_ID slot, CK_SESSION_HANDLE& session);
  CkResult CloseSession(CK_SESSION_HANDLE session);
  CkResult GetSessionInfo(CK_SESSION_HANDLE session, CK_SESSION_INFO& info);
  CkResult Login(CK_SESSION_HANDLE session, CK_USER_TYPE user, const SecretBytes& pin);
  CkResult Logout(CK_SESSION_HANDLE session);
  CkResult InitPin(CK_SESSION_HANDLE session, const SecretBytes& pin);

  // Objects.
  CkResult CreateObject(CK_SESSION_HANDLE session, AttributeTemplate& attributes,
                        CK_OBJECT_HANDLE& object);
  CkResult CopyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                      AttributeTemplate& changes, CK_OBJECT_HANDLE& copy);
  CkResult DestroyObject(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object);
  // One attribute, read into the buffer `attribute` points to (or its length, with pValue null).
  CkResult GetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                             CK_ATTRIBUTE& attribute);
  CkResult FindObjectsInit(CK_SESSION_HANDLE session, AttributeTemplate& match);
  // Up to found.size() handles; `count` says how many.
  CkResult FindObjects(CK_SESSION_HANDLE session, std::span<CK_OBJECT_HANDLE> found,
                       CK_ULONG& count);
  CkResult FindObjectsFinal(CK_SESSION_HANDLE session);

  // Keys, randomness and single-part cryptography. The output calls are given the whole of `out`
  // and set `written` to what the module wrote.
  CkResult GenerateKey(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism,
                       AttributeTemplate& attributes, CK_OBJECT_HANDLE& key);
  CkResult GenerateKeyPair(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism,
                           AttributeTemplate& public_attributes,
                           AttributeTemplate& private_attributes, CK_OBJECT_HANDLE& public_key,
                           CK_OBJECT_HANDLE& private_key);
  CkResult GenerateRandom(CK_SESSION_HANDLE session, std::span<std::uint8_t> out);
  CkResult EncryptInit(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism, CK_OBJECT_HANDLE key);
  CkResult Encrypt(CK_SESSION_HANDLE session, std::span<const std::uint8_t> in,
                   std::span<std::uint8_t> out, CK_ULONG& written);
  CkResult DecryptInit(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism, CK_OBJECT_HANDLE key);
  CkResult Decrypt(CK_SESSION_HANDLE session, std::span<const std::uint8_t> in,
                   std::span<std::uint8_t> out, CK_ULONG& written);
  CkResult SignInit(CK_SESSION_HANDLE session, CK_MECHANISM& mechanism, CK_OBJECT_HANDLE key);
  CkResult Sign(CK_SESSION_HANDLE session, std::span<const std::uint8_t> in,
                std::span<std::uint8_t> out, CK_ULONG& written);

 private:
  CK_FUNCTION_LIST_PTR fn_;
};

}  // namespace strongroom::hsm::internal

#endif  // STRONGROOM_HSM_SRC_CRYPTOKI_H_
