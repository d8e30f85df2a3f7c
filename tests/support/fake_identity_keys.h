// Fixed RSA-2048 private keys (PEM, PKCS#8) that FakeVault hands out as identity keys, in turn.
#ifndef STRONGROOM_TESTS_SUPPORT_FAKE_IDENTITY_KEYS_H_
#define STRONGROOM_TESTS_SUPPORT_FAKE_IDENTITY_KEYS_H_

#include <span>

namespace strongroom::testing {

std::span<const char* const> FakeIdentityKeyPems();

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_FAKE_IDENTITY_KEYS_H_
