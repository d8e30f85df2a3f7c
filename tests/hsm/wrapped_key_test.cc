#include "strongroom/hsm/wrapped_key.h"

#include <gtest/gtest.h>

#include <vector>

#include "strongroom/hsm/root_key.h"

namespace strongroom::hsm {
namespace {

TEST(WrappedKeyAadTest, DiffersForEveryPartOfTheIdentity) {
  const KeyBinding base{"acme", "kms://kms.acme.example/keys/1"};
  const auto aad = WrappedKeyAad(base, 1);
  EXPECT_NE(aad, WrappedKeyAad({"acme2", base.context}, 1));
  EXPECT_NE(aad, WrappedKeyAad({base.org, "kms://kms.acme.example/keys/2"}, 1));
  EXPECT_NE(aad, WrappedKeyAad(base, 2));
  EXPECT_EQ(aad, WrappedKeyAad(base, 1));
}

TEST(WrappedKeyAadTest, LengthPrefixesKeepOrgAndContextApart) {
  // Without length prefixes "ab" + "c" and "a" + "bc" would give the same bytes.
  EXPECT_NE(WrappedKeyAad({"ab", "c"}, 1), WrappedKeyAad({"a", "bc"}, 1));
}

TEST(WrappedKeyFormatTest, EncodeThenParseGivesTheParts) {
  std::vector<std::uint8_t> iv(kGcmIvSize, 7), body(kWrappedKeyPlainSize + kGcmTagSize, 9);
  auto blob = EncodeWrappedKey(0x01020304, iv, body);
  ASSERT_EQ(blob.size(), kWrappedKeySize);
  auto view = ParseWrappedKey(blob);
  ASSERT_TRUE(view.ok()) << view.error().ToString();
  EXPECT_EQ(view->root_version, 0x01020304u);
  EXPECT_EQ(std::vector<std::uint8_t>(view->iv.begin(), view->iv.end()), iv);
  EXPECT_EQ(
      std::vector<std::uint8_t>(view->ciphertext_and_tag.begin(), view->ciphertext_and_tag.end()),
      body);
}

TEST(WrappedKeyFormatTest, ParseRefusesWrongLengthAndMagic) {
  std::vector<std::uint8_t> iv(kGcmIvSize), body(kWrappedKeyPlainSize + kGcmTagSize);
  auto blob = EncodeWrappedKey(1, iv, body);
  auto shorter = blob;
  shorter.pop_back();
  EXPECT_EQ(ParseWrappedKey(shorter).error().code(), ErrorCode::kDataLoss);
  auto longer = blob;
  longer.push_back(0);
  EXPECT_EQ(ParseWrappedKey(longer).error().code(), ErrorCode::kDataLoss);
  EXPECT_EQ(ParseWrappedKey({}).error().code(), ErrorCode::kDataLoss);
  auto bad_magic = blob;
  bad_magic[0] ^= 1;
  EXPECT_EQ(ParseWrappedKey(bad_magic).error().code(), ErrorCode::kDataLoss);
}

TEST(OrgNameTest, AcceptsSimpleNamesAndRefusesOthers) {
  EXPECT_TRUE(ValidateOrgName("acme").ok());
  EXPECT_TRUE(ValidateOrgName("acme-corp.eu_2").ok());
  EXPECT_TRUE(ValidateOrgName(std::string(63, 'a')).ok());
  for (const char* bad : {"", "Acme", "-acme", "acme/x", "acme:1", "a b", "ä"}) {
    EXPECT_EQ(ValidateOrgName(bad).error().code(), ErrorCode::kInvalidArgument) << bad;
  }
  EXPECT_FALSE(ValidateOrgName(std::string(64, 'a')).ok());
}

TEST(KeyBindingTest, ContextMustBeNonEmptyAndBounded) {
  EXPECT_FALSE(ValidateBinding({"acme", ""}).ok());
  EXPECT_TRUE(ValidateBinding({"acme", std::string(kMaxBindingContext, 'x')}).ok());
  EXPECT_FALSE(ValidateBinding({"acme", std::string(kMaxBindingContext + 1, 'x')}).ok());
}

TEST(RootKeyNamingTest, ObjectIdRoundTripsAndRejectsForeignIds) {
  RootKeyId id{"acme", 12};
  EXPECT_EQ(RootKeyLabel(id), "strongroom/root/acme/v12");
  auto parsed = ParseRootKeyObjectId(RootKeyObjectId(id));
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(*parsed, id);
  for (const char* bad : {"", "srroot:", "srroot:acme", "srroot:acme:", "srroot:acme:0",
                          "srroot:acme:x1", "other:acme:1", "srroot::1"}) {
    EXPECT_FALSE(ParseRootKeyObjectId(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace strongroom::hsm
