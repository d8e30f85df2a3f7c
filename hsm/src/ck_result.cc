#include "strongroom/hsm/ck_result.h"

#include <cstdio>

namespace strongroom::hsm {
namespace {

std::string Hex(const char* prefix, unsigned long value) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s0x%08lX", prefix, value);
  return buf;
}

}  // namespace

std::string CkrName(CK_RV rv) {
  switch (rv) {
#define SR_CKR(name) \
  case name:         \
    return #name;
    SR_CKR(CKR_OK)
    SR_CKR(CKR_CANCEL)
    SR_CKR(CKR_HOST_MEMORY)
    SR_CKR(CKR_SLOT_ID_INVALID)
    SR_CKR(CKR_GENERAL_ERROR)
    SR_CKR(CKR_FUNCTION_FAILED)
    SR_CKR(CKR_ARGUMENTS_BAD)
    SR_CKR(CKR_ATTRIBUTE_READ_ONLY)
    SR_CKR(CKR_ATTRIBUTE_SENSITIVE)
    SR_CKR(CKR_ATTRIBUTE_TYPE_INVALID)
    SR_CKR(CKR_ATTRIBUTE_VALUE_INVALID)
    SR_CKR(CKR_ACTION_PROHIBITED)
    SR_CKR(CKR_DATA_INVALID)
    SR_CKR(CKR_DATA_LEN_RANGE)
    SR_CKR(CKR_DEVICE_ERROR)
    SR_CKR(CKR_DEVICE_MEMORY)
    SR_CKR(CKR_DEVICE_REMOVED)
    SR_CKR(CKR_ENCRYPTED_DATA_INVALID)
    SR_CKR(CKR_ENCRYPTED_DATA_LEN_RANGE)
    SR_CKR(CKR_FUNCTION_CANCELED)
    SR_CKR(CKR_FUNCTION_NOT_SUPPORTED)
    SR_CKR(CKR_KEY_HANDLE_INVALID)
    SR_CKR(CKR_KEY_SIZE_RANGE)
    SR_CKR(CKR_KEY_TYPE_INCONSISTENT)
    SR_CKR(CKR_KEY_FUNCTION_NOT_PERMITTED)
    SR_CKR(CKR_KEY_NOT_WRAPPABLE)
    SR_CKR(CKR_KEY_UNEXTRACTABLE)
    SR_CKR(CKR_MECHANISM_INVALID)
    SR_CKR(CKR_MECHANISM_PARAM_INVALID)
    SR_CKR(CKR_OBJECT_HANDLE_INVALID)
    SR_CKR(CKR_OPERATION_ACTIVE)
    SR_CKR(CKR_OPERATION_NOT_INITIALIZED)
    SR_CKR(CKR_PIN_INCORRECT)
    SR_CKR(CKR_PIN_INVALID)
    SR_CKR(CKR_PIN_LEN_RANGE)
    SR_CKR(CKR_PIN_EXPIRED)
    SR_CKR(CKR_PIN_LOCKED)
    SR_CKR(CKR_SESSION_CLOSED)
    SR_CKR(CKR_SESSION_COUNT)
    SR_CKR(CKR_SESSION_HANDLE_INVALID)
    SR_CKR(CKR_SESSION_READ_ONLY)
    SR_CKR(CKR_SESSION_EXISTS)
    SR_CKR(CKR_TEMPLATE_INCOMPLETE)
    SR_CKR(CKR_TEMPLATE_INCONSISTENT)
    SR_CKR(CKR_TOKEN_NOT_PRESENT)
    SR_CKR(CKR_TOKEN_NOT_RECOGNIZED)
    SR_CKR(CKR_TOKEN_WRITE_PROTECTED)
    SR_CKR(CKR_USER_ALREADY_LOGGED_IN)
    SR_CKR(CKR_USER_NOT_LOGGED_IN)
    SR_CKR(CKR_USER_PIN_NOT_INITIALIZED)
    SR_CKR(CKR_USER_TYPE_INVALID)
    SR_CKR(CKR_USER_ANOTHER_ALREADY_LOGGED_IN)
    SR_CKR(CKR_WRAPPED_KEY_INVALID)
    SR_CKR(CKR_WRAPPED_KEY_LEN_RANGE)
    SR_CKR(CKR_WRAPPING_KEY_HANDLE_INVALID)
    SR_CKR(CKR_RANDOM_NO_RNG)
    SR_CKR(CKR_BUFFER_TOO_SMALL)
    SR_CKR(CKR_CRYPTOKI_NOT_INITIALIZED)
    SR_CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED)
#undef SR_CKR
    case kCkrTokenFault:
      return "STRONGROOM_TOKEN_FAULT";
    default:
      return Hex("CKR_", rv);
  }
}

CkFailure ClassifyCkr(CK_RV rv) {
  switch (rv) {
    case CKR_OK:
      return CkFailure::kNone;
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_OPERATION_ACTIVE:  // a half-finished operation is stuck on the session
      return CkFailure::kSessionDead;
    case CKR_USER_NOT_LOGGED_IN:
      return CkFailure::kLoggedOut;
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
      return CkFailure::kHandleInvalid;
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
      return CkFailure::kTokenGone;
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_MEMORY:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_GENERAL_ERROR:
      return CkFailure::kModuleDead;
    case kCkrTokenFault:
      return CkFailure::kTokenFault;
    default:
      return CkFailure::kOperation;
  }
}

bool IsTokenFault(const Error& error) {
  if (error.native_code() == 0) return false;
  const CkFailure failure = ClassifyCkr(static_cast<CK_RV>(error.native_code()));
  return failure != CkFailure::kNone && failure != CkFailure::kOperation;
}

Error CkError(CK_RV rv, std::string_view call) {
  ErrorCode code = ErrorCode::kInternal;
  switch (rv) {
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_USER_PIN_NOT_INITIALIZED:
      code = ErrorCode::kUnauthenticated;
      break;
    case CKR_PIN_LOCKED:
    case CKR_PIN_EXPIRED:
    case CKR_TOKEN_WRITE_PROTECTED:
    case CKR_USER_ANOTHER_ALREADY_LOGGED_IN:
      code = ErrorCode::kFailedPrecondition;
      break;
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_REMOVED:
    case CKR_DEVICE_MEMORY:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_FUNCTION_FAILED:
    case CKR_GENERAL_ERROR:
    case kCkrTokenFault:
      code = ErrorCode::kUnavailable;
      break;
    case CKR_SESSION_COUNT:
    case CKR_HOST_MEMORY:
      code = ErrorCode::kResourceExhausted;
      break;
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_WRAPPED_KEY_INVALID:
    case CKR_WRAPPED_KEY_LEN_RANGE:
      code = ErrorCode::kDataLoss;
      break;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_FUNCTION_NOT_SUPPORTED:
      code = ErrorCode::kUnimplemented;
      break;
    case CKR_KEY_UNEXTRACTABLE:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_ATTRIBUTE_SENSITIVE:
    case CKR_ACTION_PROHIBITED:
      code = ErrorCode::kPermissionDenied;
      break;
    case CKR_ARGUMENTS_BAD:
    case CKR_DATA_LEN_RANGE:
    case CKR_TEMPLATE_INCONSISTENT:
    case CKR_TEMPLATE_INCOMPLETE:
    case CKR_ATTRIBUTE_VALUE_INVALID:
      code = ErrorCode::kInvalidArgument;
      break;
    default:
      break;
  }
  std::string message(call);
  message += " failed: ";
  message += CkrName(rv);
  return Error(code, std::move(message), rv);
}

std::string CkmName(CK_MECHANISM_TYPE mechanism) {
  switch (mechanism) {
#define SR_CKM(name) \
  case name:         \
    return #name;
    SR_CKM(CKM_RSA_PKCS_KEY_PAIR_GEN)
    SR_CKM(CKM_RSA_PKCS)
    SR_CKM(CKM_RSA_X_509)
    SR_CKM(CKM_RSA_PKCS_OAEP)
    SR_CKM(CKM_RSA_PKCS_PSS)
    SR_CKM(CKM_SHA256_RSA_PKCS)
    SR_CKM(CKM_SHA256_RSA_PKCS_PSS)
    SR_CKM(CKM_SHA384_RSA_PKCS_PSS)
    SR_CKM(CKM_SHA512_RSA_PKCS_PSS)
    SR_CKM(CKM_SHA256)
    SR_CKM(CKM_SHA384)
    SR_CKM(CKM_SHA512)
    SR_CKM(CKM_SHA256_HMAC)
    SR_CKM(CKM_SHA384_HMAC)
    SR_CKM(CKM_SHA512_HMAC)
    SR_CKM(CKM_GENERIC_SECRET_KEY_GEN)
    SR_CKM(CKM_EC_KEY_PAIR_GEN)
    SR_CKM(CKM_ECDSA)
    SR_CKM(CKM_ECDSA_SHA256)
    SR_CKM(CKM_ECDH1_DERIVE)
    SR_CKM(CKM_AES_KEY_GEN)
    SR_CKM(CKM_AES_ECB)
    SR_CKM(CKM_AES_CBC)
    SR_CKM(CKM_AES_CBC_PAD)
    SR_CKM(CKM_AES_CTR)
    SR_CKM(CKM_AES_GCM)
    SR_CKM(CKM_AES_CMAC)
    SR_CKM(CKM_AES_KEY_WRAP)
    SR_CKM(CKM_AES_KEY_WRAP_PAD)
    SR_CKM(CKM_AES_ECB_ENCRYPT_DATA)
    SR_CKM(CKM_AES_CBC_ENCRYPT_DATA)
#undef SR_CKM
    default:
      return Hex("CKM_", mechanism);
  }
}

}  // namespace strongroom::hsm
