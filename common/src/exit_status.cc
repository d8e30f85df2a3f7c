#include "strongroom/common/exit_status.h"

namespace strongroom {

int ExitStatusFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return EX_USAGE;
    case ErrorCode::kDataLoss:
      return EX_DATAERR;
    case ErrorCode::kNotFound:
      return EX_NOINPUT;
    case ErrorCode::kUnavailable:
    case ErrorCode::kResourceExhausted:
      return EX_UNAVAILABLE;
    case ErrorCode::kInternal:
      return EX_SOFTWARE;
    case ErrorCode::kUnauthenticated:
    case ErrorCode::kPermissionDenied:
      return EX_NOPERM;
    case ErrorCode::kAlreadyExists:
    case ErrorCode::kFailedPrecondition:
    case ErrorCode::kUnimplemented:
      return EX_CONFIG;
  }
  return EX_SOFTWARE;
}

}  // namespace strongroom
