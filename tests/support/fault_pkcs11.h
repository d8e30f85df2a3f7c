// Control interface of the fault-injecting PKCS#11 module used by the tests.
//
// libsr_fault_pkcs11.so is a PKCS#11 module that forwards every call to a real module (SoftHSM2
// by default, or $SR_FAULT_REAL_MODULE) and can be told to fail calls on one token, lock the user
// PIN, or hide a mechanism. The token underneath stays real: only the failure is injected.
// Tests reach these functions with dlopen(RTLD_NOLOAD) + dlsym on the same library path.
//
// At load, $SR_FAULT_HIDE_MECHANISM (hex or decimal) hides one mechanism and $SR_FAULT_PIN_LOCKED=1
// reports every user PIN locked, for tests that drive kmsctl as a separate process.
#ifndef STRONGROOM_TESTS_SUPPORT_FAULT_PKCS11_H_
#define STRONGROOM_TESTS_SUPPORT_FAULT_PKCS11_H_

#include <p11-kit/pkcs11.h>

extern "C" {
// Calls on the token labelled `label` (including calls on its sessions) fail with `rv`; `count` < 0
// means until cleared, otherwise the next `count` calls. Labels, not slot ids: a module may number
// its slots anew when it is re-initialized.
typedef void (*sr_fault_fail_token_fn)(const char* label, CK_RV rv, int count);
// Only the named function fails ("C_Encrypt", ...), on any slot.
typedef void (*sr_fault_fail_call_fn)(const char* function, CK_RV rv, int count);
typedef void (*sr_fault_lock_pin_fn)(int locked);
typedef void (*sr_fault_hide_mechanism_fn)(CK_MECHANISM_TYPE mechanism);
typedef void (*sr_fault_clear_fn)(void);
// How many times a function was called since load (counts "C_Login", "C_Encrypt", ...).
typedef unsigned long (*sr_fault_calls_fn)(const char* function);
// The next call of `function` that the real module completes ("C_Decrypt", "C_FindObjects" or
// "C_CreateObject") waits, before it returns, until sr_fault_release_held(); sr_fault_held() says
// whether one waits now. For tests of what a slow call that succeeds does after others failed,
// and of what may run beside a call in flight.
typedef void (*sr_fault_hold_next_fn)(const char* function);
typedef int (*sr_fault_held_fn)(void);
typedef void (*sr_fault_release_held_fn)(void);
}

#endif  // STRONGROOM_TESTS_SUPPORT_FAULT_PKCS11_H_
