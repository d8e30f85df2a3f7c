#include "object_ops.h"

#include "strongroom/hsm/ck_result.h"

namespace strongroom::hsm::internal {

Result<std::vector<CK_OBJECT_HANDLE>> FindObjects(Cryptoki ck, CK_SESSION_HANDLE session,
                                                  AttributeTemplate& match, std::size_t limit) {
  SR_RETURN_IF_ERROR(ck.FindObjectsInit(session, match));
  std::vector<CK_OBJECT_HANDLE> found;
  CK_OBJECT_HANDLE batch[64];
  for (;;) {
    CK_ULONG count = 0;
    const CkResult next = ck.FindObjects(session, batch, count);
    if (!next.ok()) {
      (void)ck.FindObjectsFinal(session);  // the search failed already; this only ends it
      return next.error();
    }
    found.insert(found.end(), batch, batch + count);
    if (count == 0 || found.size() >= limit) break;
  }
  SR_RETURN_IF_ERROR(ck.FindObjectsFinal(session));
  if (found.size() > limit) found.resize(limit);
  return found;
}

Result<std::vector<std::uint8_t>> GetBytes(Cryptoki ck, CK_SESSION_HANDLE session,
                                           CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
  CK_ATTRIBUTE attr{type, nullptr, 0};
  SR_RETURN_IF_ERROR(ck.GetAttributeValue(session, object, attr));
  if (attr.ulValueLen == static_cast<CK_ULONG>(-1)) {
    return CkError(CKR_ATTRIBUTE_TYPE_INVALID, "C_GetAttributeValue");
  }
  std::vector<std::uint8_t> value(attr.ulValueLen);
  attr.pValue = value.data();
  SR_RETURN_IF_ERROR(ck.GetAttributeValue(session, object, attr));
  value.resize(attr.ulValueLen);
  return value;
}

Result<std::string> GetString(Cryptoki ck, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                              CK_ATTRIBUTE_TYPE type) {
  SR_ASSIGN_OR_RETURN(std::vector<std::uint8_t> bytes, GetBytes(ck, session, object, type));
  return std::string(bytes.begin(), bytes.end());
}

Result<bool> GetBool(Cryptoki ck, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                     CK_ATTRIBUTE_TYPE type) {
  CK_BBOOL value = CK_FALSE;
  CK_ATTRIBUTE attr{type, &value, sizeof value};
  SR_RETURN_IF_ERROR(ck.GetAttributeValue(session, object, attr));
  return value == CK_TRUE;
}

Result<CK_ULONG> GetUlong(Cryptoki ck, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                          CK_ATTRIBUTE_TYPE type) {
  CK_ULONG value = 0;
  CK_ATTRIBUTE attr{type, &value, sizeof value};
  SR_RETURN_IF_ERROR(ck.GetAttributeValue(session, object, attr));
  return value;
}

}  // namespace strongroom::hsm::internal
