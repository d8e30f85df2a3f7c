#include "strongroom/hsm/token_uri.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "../support/test_dir.h"

namespace strongroom::hsm {
namespace {

TEST(TokenUriTest, ParsesTokenSerialSlotModuleAndPinSource) {
  auto uri = TokenUri::Parse(
      "pkcs11:token=strong%20room;serial=abc123;slot-id=42"
      "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/sr/pin");
  ASSERT_TRUE(uri.ok()) << uri.error().ToString();
  EXPECT_EQ(uri->token_label(), "strong room");
  EXPECT_EQ(uri->serial(), "abc123");
  ASSERT_TRUE(uri->slot_id().has_value());
  EXPECT_EQ(*uri->slot_id(), 42u);
  EXPECT_EQ(uri->module_path(), "/usr/lib/softhsm/libsofthsm2.so");
  EXPECT_EQ(uri->pin_source(), "file:/etc/sr/pin");
}

TEST(TokenUriTest, MatchesOnlyTheNamedToken) {
  auto uri = TokenUri::Parse("pkcs11:token=primary?module-path=/m.so");
  ASSERT_TRUE(uri.ok());
  CK_TOKEN_INFO info{};
  std::memset(info.label, ' ', sizeof info.label);
  std::memcpy(info.label, "primary", 7);
  EXPECT_TRUE(uri->Matches(1, info));
  std::memcpy(info.label, "standby", 7);
  EXPECT_FALSE(uri->Matches(1, info));
}

TEST(TokenUriTest, RefusesPinValue) {
  auto uri = TokenUri::Parse("pkcs11:token=t?module-path=/m.so&pin-value=secret123");
  ASSERT_FALSE(uri.ok());
  EXPECT_EQ(uri.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(uri.error().message().find("secret123"), std::string::npos);
}

TEST(TokenUriTest, RefusesMissingModuleOrToken) {
  EXPECT_EQ(TokenUri::Parse("pkcs11:token=t").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(TokenUri::Parse("pkcs11:?module-path=/m.so").error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(TokenUri::Parse("http://example.com/").error().code(), ErrorCode::kInvalidArgument);
}

class PinTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& content) {
    auto path = dir_ / "pin";
    std::ofstream(path) << content;
    return path.string();
  }
  strongroom::testing::TestDir dir_;
};

TEST_F(PinTest, ReadsFileWithoutTrailingNewline) {
  auto pin = ReadPin("file:" + Write("1234\n"));
  ASSERT_TRUE(pin.ok()) << pin.error().ToString();
  EXPECT_EQ(pin->as_string_view(), "1234");
}

TEST_F(PinTest, BareAbsolutePathIsAFile) {
  auto pin = ReadPin(Write("abcd"));
  ASSERT_TRUE(pin.ok());
  EXPECT_EQ(pin->as_string_view(), "abcd");
}

TEST_F(PinTest, ReadsEnvironment) {
  setenv("SR_TEST_PIN", "9876", 1);
  auto pin = ReadPin("env:SR_TEST_PIN");
  unsetenv("SR_TEST_PIN");
  ASSERT_TRUE(pin.ok());
  EXPECT_EQ(pin->as_string_view(), "9876");
  EXPECT_EQ(ReadPin("env:SR_TEST_PIN").error().code(), ErrorCode::kNotFound);
}

TEST_F(PinTest, RefusesEmptyTooLongMissingAndRelative) {
  EXPECT_EQ(ReadPin("file:" + Write("\n")).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ReadPin("file:" + Write(std::string(300, '1'))).error().code(),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ReadPin("file:" + (dir_ / "absent").string()).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(ReadPin("file:relative/pin").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ReadPin("").error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ReadPin("|/bin/echo 1234").error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace strongroom::hsm
