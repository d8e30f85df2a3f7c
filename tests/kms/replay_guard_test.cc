#include "strongroom/kms/replay_guard.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "../support/test_dir.h"
#include "strongroom/kms/audit_writer.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

using Verdict = ReplayGuard::Verdict;

ReplayGuard::MessageId Id(int n) {
  ReplayGuard::MessageId id{};
  for (std::size_t i = 0; i < id.size(); ++i) id[i] = static_cast<std::uint8_t>(n >> (i % 4 * 8));
  id[id.size() - 1] ^= static_cast<std::uint8_t>(n * 7);
  return id;
}

class ReplayGuardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ =
        std::move(Database::OpenSqlite((dir_ / "kms.db").string(), KmsStore::Migrations())).value();
  }

  // Claims and, as KmsService does, records the request and releases the channel.
  Verdict Execute(ReplayGuard& guard, AuditWriter& writer, const std::string& channel, int n) {
    Result<Verdict> verdict = guard.Claim(channel, Id(n));
    EXPECT_TRUE(verdict.ok());
    if (*verdict == Verdict::kFirst) {
      EXPECT_TRUE(writer.Append(ExecutedRequest{channel, ReplayGuard::Bytes(Id(n)), 1}).ok());
      guard.Release(channel);
    }
    return *verdict;
  }

  testing::TestDir dir_;
  std::unique_ptr<Database> db_;
};

TEST_F(ReplayGuardTest, AMessageIsFirstOnceAndAReplayAfterwardsPerChannel) {
  ReplayGuard guard(*db_);
  AuditWriter writer(*db_);
  EXPECT_EQ(Execute(guard, writer, "kms://k/ecdhe/a", 1), Verdict::kFirst);
  EXPECT_EQ(Execute(guard, writer, "kms://k/ecdhe/a", 1), Verdict::kReplayed);
  EXPECT_EQ(Execute(guard, writer, "kms://k/ecdhe/a", 2), Verdict::kFirst);
  // The same IV and tag under another channel is another message.
  EXPECT_EQ(Execute(guard, writer, "kms://k/ecdhe/b", 1), Verdict::kFirst);
}

TEST_F(ReplayGuardTest, AChannelStopsAtItsLimitOfRequests) {
  ReplayGuard guard(*db_, 3);
  AuditWriter writer(*db_);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Execute(guard, writer, "c", i), Verdict::kFirst);
  EXPECT_EQ(Execute(guard, writer, "c", 3), Verdict::kExhausted);
  EXPECT_EQ(Execute(guard, writer, "c", 0), Verdict::kReplayed);
  EXPECT_EQ(Execute(guard, writer, "d", 3), Verdict::kFirst);
}

// Memory holds at most max_resident ids: the least recently used channels go, and come back from
// the database with everything they executed.
TEST_F(ReplayGuardTest, MemoryIsBoundedAndAnEvictedChannelIsReadBackFromTheDatabase) {
  ReplayGuard guard(*db_, 1000, 50);
  AuditWriter writer(*db_);
  for (int c = 0; c < 10; ++c) {
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(Execute(guard, writer, "chan-" + std::to_string(c), i), Verdict::kFirst);
    }
    EXPECT_LE(guard.resident_ids(), 50u);
  }
  for (int c = 0; c < 10; ++c) {
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ(Execute(guard, writer, "chan-" + std::to_string(c), i), Verdict::kReplayed);
    }
  }
  EXPECT_LE(guard.resident_ids(), 50u);
  // A new guard (a restart) knows them all too.
  ReplayGuard restarted(*db_);
  EXPECT_EQ(Execute(restarted, writer, "chan-3", 7), Verdict::kReplayed);
}

// A channel with a request in flight stays in memory, however far past the bound, so that a
// replay arriving before the record is committed is still caught.
TEST_F(ReplayGuardTest, AHeldChannelIsNeverEvicted) {
  ReplayGuard guard(*db_, 1000, 2);
  ASSERT_EQ(*guard.Claim("held", Id(1)), Verdict::kFirst);  // not recorded, not released
  for (int c = 0; c < 5; ++c) {
    const std::string other = "other-" + std::to_string(c);
    ASSERT_EQ(*guard.Claim(other, Id(1)), Verdict::kFirst);
    guard.Release(other);
  }
  EXPECT_LE(guard.resident_ids(), 2u);
  EXPECT_EQ(*guard.Claim("held", Id(1)), Verdict::kReplayed);
}

TEST_F(ReplayGuardTest, ConcurrentDeliveriesOfOneMessageRunItOnce) {
  ReplayGuard guard(*db_);
  for (int round = 0; round < 50; ++round) {
    std::atomic<int> first{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        Result<Verdict> verdict = guard.Claim("c", Id(round));
        if (verdict.ok() && *verdict == Verdict::kFirst) ++first;
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(first.load(), 1);
  }
}

}  // namespace
}  // namespace strongroom::kms
