// Object look-ups and attribute reads on a leased session: the calls every layer above repeats.
#ifndef STRONGROOM_HSM_SRC_OBJECT_OPS_H_
#define STRONGROOM_HSM_SRC_OBJECT_OPS_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm::internal {

// Attribute templates point into storage they do not own; build them from locals that outlive the
// call.
inline CK_ATTRIBUTE Attr(CK_ATTRIBUTE_TYPE type, const void* value, std::size_t size) {
  return CK_ATTRIBUTE{type, const_cast<void*>(value), static_cast<CK_ULONG>(size)};
}
template <typename T>
CK_ATTRIBUTE Attr(CK_ATTRIBUTE_TYPE type, const T& value) {
  return Attr(type, &value, sizeof value);
}
inline CK_ATTRIBUTE Attr(CK_ATTRIBUTE_TYPE type, const std::string& value) {
  return Attr(type, value.data(), value.size());
}

// At most `limit` matching handles.
Result<std::vector<CK_OBJECT_HANDLE>> FindObjects(CK_FUNCTION_LIST_PTR fn,
                                                  CK_SESSION_HANDLE session,
                                                  std::span<CK_ATTRIBUTE> match,
                                                  std::size_t limit = 4096);

Result<std::vector<std::uint8_t>> GetBytes(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE session,
                                           CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
Result<std::string> GetString(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE session,
                              CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
Result<bool> GetBool(CK_FUNCTION_LIST_PTR fn, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                     CK_ATTRIBUTE_TYPE type);

}  // namespace strongroom::hsm::internal

#endif  // STRONGROOM_HSM_SRC_OBJECT_OPS_H_
