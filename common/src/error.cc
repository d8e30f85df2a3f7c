#include "strongroom/common/error.h"

namespace strongroom {

int HttpStatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return 400;
    case ErrorCode::kUnauthenticated:
      return 401;
    case ErrorCode::kPermissionDenied:
      return 403;
    case ErrorCode::kNotFound:
      return 404;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kFailedPrecondition:
      return 409;
    case ErrorCode::kResourceExhausted:
      return 429;
    case ErrorCode::kUnavailable:
      return 503;
    case ErrorCode::kUnimplemented:
      return 501;
    case ErrorCode::kDataLoss:
    case ErrorCode::kInternal:
      return 500;
  }
  return 500;
}

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case ErrorCode::kNotFound:
      return "NOT_FOUND";
    case ErrorCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case ErrorCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case ErrorCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    case ErrorCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case ErrorCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case ErrorCode::kUnavailable:
      return "UNAVAILABLE";
    case ErrorCode::kDataLoss:
      return "DATA_LOSS";
    case ErrorCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case ErrorCode::kInternal:
      return "INTERNAL";
  }
  return "INTERNAL";
}

std::string_view ErrorReasonName(ErrorReason reason) {
  switch (reason) {
    case ErrorReason::kNone:
      return "";
    case ErrorReason::kKeyRotationRequired:
      return "key_rotation_required";
    case ErrorReason::kIdentityUnavailable:
      return "identity_unavailable";
  }
  return "";
}

ErrorReason ErrorReasonNamed(std::string_view name) {
  for (ErrorReason reason :
       {ErrorReason::kKeyRotationRequired, ErrorReason::kIdentityUnavailable}) {
    if (name == ErrorReasonName(reason)) return reason;
  }
  return ErrorReason::kNone;
}

ErrorCode ErrorCodeOf(ErrorReason reason) {
  switch (reason) {
    case ErrorReason::kKeyRotationRequired:
      return ErrorCode::kFailedPrecondition;
    case ErrorReason::kIdentityUnavailable:
      return ErrorCode::kUnavailable;
    case ErrorReason::kNone:
      break;
  }
  return ErrorCode::kInternal;
}

std::string Error::ToString() const {
  std::string out(ErrorCodeName(code_));
  out += ": ";
  out += message_;
  return out;
}

}  // namespace strongroom
