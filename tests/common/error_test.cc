#include "strongroom/common/error.h"

#include <gtest/gtest.h>

namespace strongroom {
namespace {

TEST(ErrorReasonTest, AReasonIsReadBackFromItsName) {
  EXPECT_EQ(ErrorReasonName(ErrorReason::kKeyRotationRequired), "key_rotation_required");
  EXPECT_EQ(ErrorReasonNamed("key_rotation_required"), ErrorReason::kKeyRotationRequired);
  EXPECT_EQ(ErrorReasonName(ErrorReason::kIdentityUnavailable), "identity_unavailable");
  EXPECT_EQ(ErrorReasonNamed("identity_unavailable"), ErrorReason::kIdentityUnavailable);
  for (const char* other : {"", "failed_precondition", "Key_Rotation_Required", "rate_limited"}) {
    EXPECT_EQ(ErrorReasonNamed(other), ErrorReason::kNone) << other;
  }
}

TEST(ErrorReasonTest, AnErrorOfAReasonHasTheCodeItImplies) {
  const Error rotation(ErrorReason::kKeyRotationRequired, "use the current key", 409);
  EXPECT_EQ(rotation.code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(rotation.reason(), ErrorReason::kKeyRotationRequired);
  EXPECT_EQ(rotation.message(), "use the current key");
  EXPECT_EQ(rotation.native_code(), 409u);
  EXPECT_EQ(Error(ErrorReason::kIdentityUnavailable, "fetch /kms/info").code(),
            ErrorCode::kUnavailable);
  // A message that reads like a reason is not one.
  const Error plain(ErrorCode::kFailedPrecondition, "key rotation required: but said in words");
  EXPECT_EQ(plain.reason(), ErrorReason::kNone);
}

}  // namespace
}  // namespace strongroom
