#include "strongroom/indexer/decoy_padding.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "strongroom/indexer/room_search_key.h"

namespace strongroom::indexer {
namespace {

constexpr std::string_view kRoom = "3d6f0a1b-2c4e-4f5a-8b9c-0d1e2f3a4b5c";

std::vector<std::string> RealTokens(std::size_t count) {
  static const SecretBytes org_key = SecretBytes::Random(kOrgSearchKeyBytes);
  Result<RoomSearchKey> room = RoomSearchKey::Derive(org_key, kRoom, 1);
  EXPECT_TRUE(room.ok());
  std::vector<std::string> tokens;
  for (std::size_t i = 0; i < count; ++i) tokens.push_back(room->Token("term" + std::to_string(i)));
  return tokens;
}

std::vector<std::string> Padded(const std::vector<std::string>& tokens) {
  Result<std::vector<std::string>> padded = PadWithDecoys(tokens);
  EXPECT_TRUE(padded.ok()) << padded.error().ToString();
  return padded.ok() ? *padded : std::vector<std::string>{};
}

std::set<std::string> Decoys(const std::vector<std::string>& padded,
                             const std::vector<std::string>& real) {
  std::set<std::string> decoys(padded.begin(), padded.end());
  for (const std::string& token : real) decoys.erase(token);
  return decoys;
}

TEST(DecoyPaddingTest, EveryCountHasTheSmallestBucketThatHoldsIt) {
  EXPECT_EQ(TokenBucket(0), 8u);
  std::size_t previous = 0;
  for (std::size_t bucket : kTokenBuckets) {
    for (std::size_t n = previous + 1; n <= bucket; ++n) EXPECT_EQ(TokenBucket(n), bucket) << n;
    previous = bucket;
  }
  EXPECT_EQ(TokenBucket(kMaxTokensPerActivity + 1), 0u);
  // Each bucket is at most 1.5 times the one before it.
  for (std::size_t i = 1; i < kTokenBuckets.size(); ++i) {
    EXPECT_LE(kTokenBuckets[i] * 2, kTokenBuckets[i - 1] * 3);
  }
}

TEST(DecoyPaddingTest, CountsLandOnBucketsWithEveryRealTokenPresent) {
  for (std::size_t n : {0, 1, 7, 8, 9, 12, 13, 17, 100, 384, 385, 511, 512}) {
    const std::vector<std::string> real = RealTokens(n);
    const std::vector<std::string> padded = Padded(real);
    EXPECT_EQ(padded.size(), TokenBucket(n)) << n;
    const std::set<std::string> distinct(padded.begin(), padded.end());
    EXPECT_EQ(distinct.size(), padded.size()) << n;
    for (const std::string& token : real) EXPECT_TRUE(distinct.contains(token)) << n;
    for (const std::string& token : padded) {
      ASSERT_EQ(token.size(), kSearchTokenChars);
      EXPECT_TRUE(std::all_of(token.begin(), token.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
      })) << token;
    }
  }
}

TEST(DecoyPaddingTest, DecoysDifferFromRunToRun) {
  const std::vector<std::string> real = RealTokens(5);
  const std::set<std::string> first = Decoys(Padded(real), real);
  const std::set<std::string> second = Decoys(Padded(real), real);
  ASSERT_EQ(first.size(), 3u);
  ASSERT_EQ(second.size(), 3u);
  for (const std::string& decoy : first) EXPECT_FALSE(second.contains(decoy)) << decoy;
}

TEST(DecoyPaddingTest, PositionRevealsNothing) {
  // One real token among 8: over 400 paddings it sits at every position, and the real tokens of
  // a longer list do not stay in their order at the front.
  const std::vector<std::string> one = RealTokens(1);
  std::set<std::size_t> positions;
  for (int run = 0; run < 400; ++run) {
    const std::vector<std::string> padded = Padded(one);
    positions.insert(std::find(padded.begin(), padded.end(), one[0]) - padded.begin());
  }
  EXPECT_EQ(positions.size(), 8u);

  const std::vector<std::string> eleven = RealTokens(11);
  const std::vector<std::string> padded = Padded(eleven);
  EXPECT_FALSE(std::equal(eleven.begin(), eleven.end(), padded.begin()));
}

TEST(DecoyPaddingTest, RepeatedTokensCountOnce) {
  std::vector<std::string> real = RealTokens(8);
  real.push_back(real[0]);
  real.push_back(real[3]);
  const std::vector<std::string> padded = Padded(real);
  EXPECT_EQ(padded.size(), 8u);
  EXPECT_EQ(std::set<std::string>(padded.begin(), padded.end()),
            std::set<std::string>(real.begin(), real.end()));
}

TEST(DecoyPaddingTest, MoreTokensThanTheCoreHoldsAreRefused) {
  Result<std::vector<std::string>> padded = PadWithDecoys(RealTokens(kMaxTokensPerActivity + 1));
  ASSERT_FALSE(padded.ok());
  EXPECT_EQ(padded.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(padded.error().message().find("at most 512"), std::string::npos);
}

// indexerd's padding: the same activity gets the same set, so a replayed PUT changes nothing.
TEST(DecoyPaddingTest, DeterministicDecoysGiveTheSameSetForTheSameActivity) {
  const SecretBytes org_key = SecretBytes::Random(kOrgSearchKeyBytes);
  Result<RoomSearchKey> room = RoomSearchKey::Derive(org_key, kRoom, 1);
  ASSERT_TRUE(room.ok());
  const std::vector<std::string> real = {room->Token("launch"), room->Token("checklist")};
  auto decoys_of = [&](std::string_view activity) {
    return [&room, activity](std::size_t n) { return room->DecoyTokens(activity, n); };
  };
  Result<std::vector<std::string>> first = PadWithDecoys(real, decoys_of("a1"));
  Result<std::vector<std::string>> again = PadWithDecoys(real, decoys_of("a1"));
  Result<std::vector<std::string>> other = PadWithDecoys(real, decoys_of("a2"));
  ASSERT_TRUE(first.ok() && again.ok() && other.ok());
  EXPECT_EQ(*first, *again);
  EXPECT_EQ(first->size(), 8u);
  EXPECT_TRUE(std::is_sorted(first->begin(), first->end()));
  for (const std::string& token : real) {
    EXPECT_NE(std::find(first->begin(), first->end(), token), first->end());
  }
  // Another activity's decoys are others; its real tokens are the same.
  EXPECT_EQ(Decoys(*first, real).size(), 6u);
  std::set<std::string> shared;
  for (const std::string& decoy : Decoys(*first, real)) {
    if (Decoys(*other, real).contains(decoy)) shared.insert(decoy);
  }
  EXPECT_TRUE(shared.empty());
  // No decoy is the token of a term: its input holds a NUL, which no term does.
  EXPECT_EQ(room->DecoyTokens("a1", 1).front(),
            room->Token(std::string("\0decoy\0a1\0\0\0\0", 13)));
}

TEST(DecoyPaddingTest, DeterministicDecoysSkipOneEqualToARealToken) {
  const std::vector<std::string> real = {"AAAAAAAAAAA", "BBBBBBBBBBB"};
  // A source whose first decoy collides with a real token: it is skipped, and the set still has
  // its bucket of distinct tokens.
  auto source = [](std::size_t n) {
    std::vector<std::string> made = {"AAAAAAAAAAA"};
    for (std::size_t i = 1; i < n; ++i) made.push_back("decoy" + std::to_string(i));
    return made;
  };
  Result<std::vector<std::string>> padded = PadWithDecoys(real, source);
  ASSERT_TRUE(padded.ok()) << padded.error().ToString();
  const std::set<std::string> distinct(padded->begin(), padded->end());
  EXPECT_EQ(distinct.size(), 8u);
  EXPECT_EQ(padded->size(), 8u);
  // A source that makes too few is an error, not a loop.
  auto broken = [](std::size_t) { return std::vector<std::string>{}; };
  EXPECT_FALSE(PadWithDecoys(real, broken).ok());
}

}  // namespace
}  // namespace strongroom::indexer
