// The one table of exit statuses (common/exit_status.h, docs/exit-status.md).
#include "strongroom/common/exit_status.h"

#include <gtest/gtest.h>

#include <set>
#include <utility>

namespace strongroom {
namespace {

constexpr ErrorCode kEveryCode[] = {
    ErrorCode::kInvalidArgument,   ErrorCode::kNotFound,        ErrorCode::kAlreadyExists,
    ErrorCode::kPermissionDenied,  ErrorCode::kUnauthenticated, ErrorCode::kFailedPrecondition,
    ErrorCode::kResourceExhausted, ErrorCode::kUnavailable,     ErrorCode::kDataLoss,
    ErrorCode::kUnimplemented,     ErrorCode::kInternal,
};

TEST(ExitStatusTest, EveryCodeHasTheStatusDocsExitStatusMdLists) {
  const std::pair<ErrorCode, int> documented[] = {
      {ErrorCode::kInvalidArgument, 64},   {ErrorCode::kDataLoss, 65},
      {ErrorCode::kNotFound, 66},          {ErrorCode::kUnavailable, 69},
      {ErrorCode::kResourceExhausted, 69}, {ErrorCode::kInternal, 70},
      {ErrorCode::kUnauthenticated, 77},   {ErrorCode::kPermissionDenied, 77},
      {ErrorCode::kAlreadyExists, 78},     {ErrorCode::kFailedPrecondition, 78},
      {ErrorCode::kUnimplemented, 78},
  };
  std::set<ErrorCode> listed;
  for (const auto& [code, status] : documented) {
    EXPECT_EQ(ExitStatusFor(code), status) << ErrorCodeName(code);
    listed.insert(code);
  }
  EXPECT_EQ(listed.size(), std::size(kEveryCode)) << "a code is missing from the documented table";
}

TEST(ExitStatusTest, EveryStatusIsASysexitsFailure) {
  for (ErrorCode code : kEveryCode) {
    const int status = ExitStatusFor(code);
    EXPECT_GE(status, EX__BASE) << ErrorCodeName(code);
    EXPECT_LE(status, EX__MAX) << ErrorCodeName(code);
  }
}

TEST(ExitStatusTest, ABadArgumentExitsAsAUsageError) {
  EXPECT_EQ(ExitStatusFor(ErrorCode::kInvalidArgument), EX_USAGE);
}

TEST(ExitStatusTest, NotFoundIsNeitherAnOutageNorAConfigurationState) {
  // NOT_FOUND was 69 in kmsctl and 78 in the daemons: "no such room" must not read as "retry
  // later" (69) nor as "the state forbids it" (78).
  EXPECT_EQ(ExitStatusFor(ErrorCode::kNotFound), EX_NOINPUT);
  EXPECT_NE(ExitStatusFor(ErrorCode::kNotFound), ExitStatusFor(ErrorCode::kUnavailable));
  EXPECT_NE(ExitStatusFor(ErrorCode::kNotFound), ExitStatusFor(ErrorCode::kFailedPrecondition));
}

}  // namespace
}  // namespace strongroom
