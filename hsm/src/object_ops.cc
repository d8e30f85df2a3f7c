#include "object_ops.h"

#include "strongroom/hsm/ck_result.h"

namespace strongroom::hsm::internal {

Result<std::vector<CK_OBJECT_HANDLE>> FindObjects(CK_FUNCTION_LIST_PTR fn,
                                                  CK_SESSION_HANDLE session,
                                                  std::span<CK_ATTRIBUTE> match,
                                                  std::size_t limit) {
  CK_RV rv = fn->C_FindObjectsInit(session, match.data(), static_cast<CK_ULONG>(match.size()));
  if (rv != CKR_OK) return CkError(rv, "C_FindObjectsInit");
  std::vector<CK_OBJECT_HANDLE> found;
  CK_OBJECT_HANDLE batch[64];
  for (;;) {
    CK_ULONG count = 0;
    rv = fn->C_FindObjects(session, batch, 64, &count);
    if (rv != CKR_OK) {
      fn->C_FindObjectsFinal(session);
      return CkError(rv, "C_FindObjects");
    }
    found.insert(found.end(), batch, batch + count);
    if (count == 0 || found.size() >= limit) break;
  }
  rv = fn->C_FindObjectsFinal(session);
  if (rv != CKR_OK) return CkError(rv, "C_FindObjectsFinal");
  if (found.size() > limit) found.resize(limit);
  return found;
}

Result<std::vector<std::uint8_t>> GetBytes(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE session,
                                           CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  CK_ATTRIBUTE attr{type, nullptr, 0};
  CK_RV rv = fn->C_GetAttributeValue(session, object, &attr, 1);
  if (rv != CKR_OK) return CkError(rv, "C_GetAttributeValue");
  if (attr.ulValueLen == static_cast<CK_ULONG>(-1)) {
    return CkError(CKR_ATTRIBUTE_TYPE_INVALID, "C_GetAttributeValue");
  }
  std::vector<std::uint8_t> value(attr.ulValueLen);
  attr.pValue = value.data();
  rv = fn->C_GetAttributeValue(session, object, &attr, 1);
  if (rv != CKR_OK) return CkError(rv, "C_GetAttributeValue");
  value.resize(attr.ulValueLen);
  return value;
}

Result<std::string> GetString(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE session,
                              CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> bytes, GetBytes(fn, session, object, type));
  return std::string(bytes.begin(), bytes.end());
}

Result<bool> GetBool(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                     CK_ATTRIBUTE_TYPE type) {
  CK_BBOOL value = CK_FALSE;
  CK_ATTRIBUTE attr{type, &value, sizeof value};
  CK_RV rv = fn->C_GetAttributeValue(session, object, &attr, 1);
  if (rv != CKR_OK) return CkError(rv, "C_GetAttributeValue");
  return value == CK_TRUE;
}

}  // namespace strongroom::hsm::internal
