#include "strongroom/indexer/room_search_key.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "strongroom/common/jose/base64url.h"

namespace strongroom::indexer {
namespace {

constexpr std::string_view kRoomA = "3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5c";
constexpr std::string_view kRoomB = "7f6e5d4c-3b2a-4190-8877-665544332211";

SecretBytes OrgKey(std::uint8_t fill = 0x42) {
  SecretBytes key(kOrgSearchKeyBytes);
  for (std::size_t i = 0; i < key.size(); ++i) key.data()[i] = static_cast<std::uint8_t>(fill + i);
  return key;
}

RoomSearchKey Room(const SecretBytes& org_key, std::string_view room, std::uint32_t version = 1) {
  Result<RoomSearchKey> key = RoomSearchKey::Derive(org_key, room, version);
  EXPECT_TRUE(key.ok()) << key.error().ToString();
  return std::move(key).value();
}

using Bytes = std::vector<std::uint8_t>;

Bytes HmacSha256(const Bytes& key, const Bytes& data) {
  std::array<std::uint8_t, 32> out{};
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data.data(), data.size(), out.data(),
       &length);
  return Bytes(out.begin(), out.begin() + length);
}

Bytes Of(std::string_view text) { return Bytes(text.begin(), text.end()); }

// The token as RFC 5869 defines HKDF (extract with a zero salt, one block of expand), written
// with HMAC alone: the derivation the header documents, computed apart from OpenSSL's EVP_KDF.
std::string ExpectedToken(const SecretBytes& org_key, std::string_view room, std::uint32_t version,
                          std::string_view term) {
  const Bytes prk = HmacSha256(Bytes(32, 0), Bytes(org_key.data(), org_key.data() + 32));
  Bytes info = Of("strongroom/search/room/v1");
  info.push_back(0);
  info.push_back(static_cast<std::uint8_t>(room.size() >> 8));
  info.push_back(static_cast<std::uint8_t>(room.size()));
  info.insert(info.end(), room.begin(), room.end());
  for (int shift = 24; shift >= 0; shift -= 8) {
    info.push_back(static_cast<std::uint8_t>(version >> shift));
  }
  info.push_back(0x01);
  const Bytes room_key = HmacSha256(prk, info);
  const Bytes mac = HmacSha256(room_key, Of(term));
  return jose::Base64UrlEncode(std::span<const std::uint8_t>(mac.data(), 8));
}

TEST(RoomSearchKeyTest, TokenIsTruncatedHmacUnderTheHkdfRoomKey) {
  const SecretBytes org_key = OrgKey();
  for (std::uint32_t version : {1u, 2u, 0x01020304u}) {
    const RoomSearchKey room = Room(org_key, kRoomA, version);
    for (std::string_view term : {"launch", "checklist", "\xe5\x8c\x97\xe4\xba\xac", ""}) {
      EXPECT_EQ(room.Token(term), ExpectedToken(org_key, kRoomA, version, term)) << term;
    }
  }
}

TEST(RoomSearchKeyTest, TokensAreElevenBase64UrlCharactersAndStable) {
  const SecretBytes org_key = OrgKey();
  const RoomSearchKey room = Room(org_key, kRoomA);
  const std::string token = room.Token("launch");
  ASSERT_EQ(token.size(), kSearchTokenChars);
  for (char c : token) {
    EXPECT_TRUE(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') << token;
  }
  EXPECT_EQ(Room(org_key, kRoomA).Token("launch"), token);
  EXPECT_EQ(room.Tokens({"launch", "plan"}), (std::vector<std::string>{token, room.Token("plan")}));
}

TEST(RoomSearchKeyTest, OneWordInTwoRoomsGivesUnrelatedTokens) {
  const SecretBytes org_key = OrgKey();
  const RoomSearchKey a = Room(org_key, kRoomA);
  const RoomSearchKey b = Room(org_key, kRoomB);
  const RoomSearchKey a_next_version = Room(org_key, kRoomA, 2);
  const RoomSearchKey other_org = Room(OrgKey(0x17), kRoomA);
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string term = "word" + std::to_string(i);
    for (const RoomSearchKey* key : {&a, &b, &a_next_version, &other_org}) {
      // No token of one term under one key is a token of any term under another key.
      EXPECT_TRUE(seen.insert(key->Token(term)).second) << term;
    }
  }
}

TEST(RoomSearchKeyTest, AKeyOfAnotherSizeIsRefused) {
  for (std::size_t size : {0, 16, 31, 33, 64}) {
    Result<RoomSearchKey> key = RoomSearchKey::Derive(SecretBytes::Random(size), kRoomA, 1);
    ASSERT_FALSE(key.ok()) << size;
    EXPECT_EQ(key.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(key.error().message().find("32 bytes"), std::string::npos);
  }
}

TEST(RoomSearchKeyTest, ARoomIdThatIsNotALowercaseUuidIsRefused) {
  const SecretBytes org_key = OrgKey();
  for (std::string_view room :
       {"", "3D6F0A1B-2C4E-4F5A-8B9C-0D1E2F3A4B5C", "3d6f0a1b2c4e4f5a8b9c0d1e2f3a4b5c", "general",
        "3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5cx", "3d6f0a1b-2c4e-4f5a-8b9c_0d1e2f3a4b5c",
        "3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5g"}) {
    Result<RoomSearchKey> key = RoomSearchKey::Derive(org_key, room, 1);
    ASSERT_FALSE(key.ok()) << room;
    EXPECT_EQ(key.error().code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(key.error().message(), "a room id is a lowercase UUID");
  }
}

}  // namespace
}  // namespace strongroom::indexer
