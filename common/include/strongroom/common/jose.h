// JOSE for Strongroom (strongroom::jose): everything the KMS protocol and its clients need from
// RFC 7515-7518, on Cisco's cjose. Include the one header you need, or this one for all of them.
#ifndef STRONGROOM_COMMON_JOSE_H_
#define STRONGROOM_COMMON_JOSE_H_

#include "strongroom/common/jose/base64url.h"     // IWYU pragma: export
#include "strongroom/common/jose/dir_jwe.h"       // IWYU pragma: export
#include "strongroom/common/jose/jose_header.h"   // IWYU pragma: export
#include "strongroom/common/jose/jwk.h"           // IWYU pragma: export
#include "strongroom/common/jose/jws.h"           // IWYU pragma: export
#include "strongroom/common/jose/rsa_oaep_jwe.h"  // IWYU pragma: export

#endif  // STRONGROOM_COMMON_JOSE_H_
