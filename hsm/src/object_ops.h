// Object look-ups and attribute reads on a leased session: the calls every layer above repeats,
// made through the call layer (cryptoki.h).
#ifndef STRONGROOM_HSM_SRC_OBJECT_OPS_H_
#define STRONGROOM_HSM_SRC_OBJECT_OPS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "attribute_template.h"
#include "cryptoki.h"
#include "strongroom/common/error.h"
#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm::internal {

// At most `limit` matching handles.
Result<std::vector<CK_OBJECT_HANDLE>> FindObjects(Cryptoki ck, CK_SESSION_HANDLE session,
                                                  AttributeTemplate& match,
                                                  std::size_t limit = 4096);

Result<std::vector<std::uint8_t>> GetBytes(Cryptoki ck, CK_SESSION_HANDLE session,
                                           CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type);
Result<std::string> GetString(Cryptoki ck, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                              CK_ATTRIBUTE_TYPE type);
Result<bool> GetBool(Cryptoki ck, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                     CK_ATTRIBUTE_TYPE type);
// A CK_ULONG attribute or one of its aliases (CKA_CLASS, CKA_KEY_TYPE, ...).
Result<CK_ULONG> GetUlong(Cryptoki ck, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                          CK_ATTRIBUTE_TYPE type);

}  // namespace strongroom::hsm::internal

#endif  // STRONGROOM_HSM_SRC_OBJECT_OPS_H_
