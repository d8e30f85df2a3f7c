// The one place where PKCS#11 return values become Strongroom errors.
#ifndef STRONGROOM_HSM_CK_RESULT_H_
#define STRONGROOM_HSM_CK_RESULT_H_

#include <string>
#include <string_view>

#include "strongroom/common/error.h"
#include "strongroom/hsm/pkcs11.h"

namespace strongroom::hsm {

// "CKR_PIN_INCORRECT", or "CKR_0x..." for codes this table does not name.
std::string CkrName(CK_RV rv);

// An Error for a failed call: the code follows the CKR class, the message names the call and the
// CKR, and native_code() keeps the raw value.
Error CkError(CK_RV rv, std::string_view call);

// CK_RV → Status.
inline Status CkCheck(CK_RV rv, std::string_view call) {
  if (rv == CKR_OK) return OkStatus();
  return CkError(rv, call);
}

// The outcome of one PKCS#11 call as the call layer (hsm/src/cryptoki.h) returns it: the CK_RV and
// the name of the function that returned it. It converts to a Status whose error names the call
// ("C_Encrypt failed: CKR_DEVICE_ERROR", the raw value kept as native_code()); a caller that reads
// the CK_RV itself (a login that may already be done, a best-effort close) asks rv().
class [[nodiscard]] CkResult {
 public:
  constexpr CkResult(CK_RV rv, const char* function) : rv_(rv), function_(function) {}

  bool ok() const { return rv_ == CKR_OK; }
  CK_RV rv() const { return rv_; }
  // "C_Encrypt": the PKCS#11 function that was called.
  const char* function() const { return function_; }

  // OK, or the error CkError makes of the failure, naming the function.
  Status status() const { return CkCheck(rv_, function_); }
  // As status(), but the message names the call as `call` ("C_GenerateKey (root key)").
  Status status(std::string_view call) const { return CkCheck(rv_, call); }
  operator Status() const { return status(); }  // NOLINT(google-explicit-constructor)
  // The error of a failed call, naming the function or, given, the call as `call`.
  Error error() const { return CkError(rv_, function_); }
  Error error(std::string_view call) const { return CkError(rv_, call); }

 private:
  CK_RV rv_;
  const char* function_;
};

// Not a PKCS#11 return value: the native code of an error that says the token failed a check of
// its own state. It no longer holds an object it held (a root key, an identity key), or it does
// not answer C_GetTokenInfo, or a call the check makes failed. A token that loses its objects is a
// faulty token, never a request for something that does not exist. (SoftHSM2 whose token
// directory went away reports exactly this: no objects found, C_GetTokenInfo failing, and so
// until the module is initialized again.)
inline constexpr CK_RV kCkrTokenFault = CKR_VENDOR_DEFINED | 0x53520001UL;

// How a failure affects the state the layer holds. This is the one place that decides which
// failures are the token's (every class but kNone and kOperation): those are never reported as a
// missing object or a message that does not decrypt, but as UNAVAILABLE once one repair has not
// helped (token.h). CKR_GENERAL_ERROR is PKCS#11's "unrecoverable error", after which the token
// may be inconsistent (SoftHSM2 2.6.1's can hold an object that its searches do not see until it
// is initialized again): a token fault, except from a decryption on a live session, where
// SoftHSM2 before 2.7 uses it for a message that does not decrypt (Token::Unwrap and
// DecryptRsaOaep tell the two apart; docs/operations/hsm.md).
enum class CkFailure {
  kNone,           // CKR_OK
  kOperation,      // the call failed; session, login and handles are still good
  kSessionDead,    // close and replace the session
  kLoggedOut,      // the token's login is gone; log in again
  kHandleInvalid,  // cached object handles are stale; re-resolve by label/id
  kTokenGone,      // this token left its slot: find it again and log in; the module is fine
  kModuleDead,     // device error, CKR_GENERAL_ERROR, or the module was finalized under us:
                   // reset the module
  kTokenFault,     // kCkrTokenFault: reset the module, find the token again, check it again
};
CkFailure ClassifyCkr(CK_RV rv);
// Whether an error came from a token fault (any class but kNone and kOperation).
bool IsTokenFault(const Error& error);

// "CKM_AES_GCM", or "CKM_0x..." for mechanisms this table does not name.
std::string CkmName(CK_MECHANISM_TYPE mechanism);

}  // namespace strongroom::hsm

#endif  // STRONGROOM_HSM_CK_RESULT_H_
