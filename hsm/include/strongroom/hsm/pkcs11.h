// The PKCS#11 (Cryptoki 2.40) declarations, from p11-kit. Nothing in Strongroom links a PKCS#11
// module at build time: modules are loaded by path at run time (see Module).
#ifndef STRONGROOM_HSM_PKCS11_H_
#define STRONGROOM_HSM_PKCS11_H_

#include <p11-kit/pkcs11.h>

#endif  // STRONGROOM_HSM_PKCS11_H_
