#include "strongroom/kms/replay_guard.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "../support/kms_database.h"
#include "../support/test_dir.h"
#include "strongroom/kms/audit_log.h"
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

// A channel of alice@acme, made at 1,000 ms.
EphemeralKeyRecord Chan(const std::string& uri) {
  EphemeralKeyRecord channel;
  channel.uri = uri;
  channel.org = "acme";
  channel.user_id = "alice";
  channel.created_ms = 1000;
  return channel;
}

ExecutedRequest Executed(const std::string& channel, int n) {
  return {channel, ReplayGuard::Bytes(Id(n)), 2000, "acme", "alice", 1000};
}

// On both engines (tests/support/kms_database.h): what a channel executed is read back from
// either.
class ReplayGuardTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    Result<std::string> target = testing::NewKmsDatabase(GetParam(), dir_.path());
    ASSERT_TRUE(target.ok()) << target.error().ToString();
    Result<std::unique_ptr<Database>> db = testing::OpenKmsDatabase(GetParam(), *target);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
  }

  // Claims and, as KmsService does, records the request and releases the channel.
  Verdict Execute(ReplayGuard& guard, AuditWriter& writer, const std::string& channel, int n) {
    Result<Verdict> verdict = guard.Claim(Chan(channel), Id(n));
    EXPECT_TRUE(verdict.ok());
    if (*verdict == Verdict::kFirst) {
      EXPECT_TRUE(writer.Append(Executed(channel, n)).ok());
      guard.Release(channel);
    }
    return *verdict;
  }

  // The same, for a read whose audit record `record` (actor, org and time as given) goes with it.
  Verdict ExecuteAudited(ReplayGuard& guard, AuditWriter& writer, const std::string& channel, int n,
                         AuditRecord record) {
    Result<Verdict> verdict = guard.Claim(Chan(channel), Id(n));
    EXPECT_TRUE(verdict.ok());
    if (*verdict == Verdict::kFirst) {
      EXPECT_TRUE(writer.Append(std::move(record), Executed(channel, n)).ok());
      guard.Release(channel);
    }
    return *verdict;
  }

  std::int64_t Count(const std::string& sql) {
    std::int64_t n = -1;
    EXPECT_TRUE(db_->WithSession([&](Poco::Data::Session& s) -> Status {
                     SqlStatement count = Database::Prepare(s, sql);
                     if (count.Next()) n = count.Int(0);
                     return OkStatus();
                   })
                    .ok());
    return n;
  }

  testing::TestDir dir_;
  std::unique_ptr<Database> db_;
};

INSTANTIATE_TEST_SUITE_P(Engines, ReplayGuardTest, testing::kBothEngines, testing::EngineName);

TEST_P(ReplayGuardTest, AMessageIsFirstOnceAndAReplayAfterwardsPerChannel) {
  ReplayGuard guard(*db_);
  AuditWriter writer(*db_);
  EXPECT_EQ(Execute(guard, writer, "kms://k/ecdhe/a", 1), Verdict::kFirst);
  EXPECT_EQ(Execute(guard, writer, "kms://k/ecdhe/a", 1), Verdict::kReplayed);
  EXPECT_EQ(Execute(guard, writer, "kms://k/ecdhe/a", 2), Verdict::kFirst);
  // The same IV and tag under another channel is another message.
  EXPECT_EQ(Execute(guard, writer, "kms://k/ecdhe/b", 1), Verdict::kFirst);
}

TEST_P(ReplayGuardTest, AChannelStopsAtItsLimitOfRequests) {
  ReplayGuard guard(*db_, 3);
  AuditWriter writer(*db_);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Execute(guard, writer, "c", i), Verdict::kFirst);
  EXPECT_EQ(Execute(guard, writer, "c", 3), Verdict::kExhausted);
  EXPECT_EQ(Execute(guard, writer, "c", 0), Verdict::kReplayed);
  EXPECT_EQ(Execute(guard, writer, "d", 3), Verdict::kFirst);
}

// Memory holds at most max_resident ids: the least recently used channels go, and come back from
// the database with everything they executed.
TEST_P(ReplayGuardTest, MemoryIsBoundedAndAnEvictedChannelIsReadBackFromTheDatabase) {
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
TEST_P(ReplayGuardTest, AHeldChannelIsNeverEvicted) {
  ReplayGuard guard(*db_, 1000, 2);
  ASSERT_EQ(*guard.Claim(Chan("held"), Id(1)), Verdict::kFirst);  // not recorded, not released
  for (int c = 0; c < 5; ++c) {
    const std::string other = "other-" + std::to_string(c);
    ASSERT_EQ(*guard.Claim(Chan(other), Id(1)), Verdict::kFirst);
    guard.Release(other);
  }
  EXPECT_LE(guard.resident_ids(), 2u);
  EXPECT_EQ(*guard.Claim(Chan("held"), Id(1)), Verdict::kReplayed);
}

TEST_P(ReplayGuardTest, ConcurrentDeliveriesOfOneMessageRunItOnce) {
  ReplayGuard guard(*db_);
  for (int round = 0; round < 50; ++round) {
    std::atomic<int> first{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        Result<Verdict> verdict = guard.Claim(Chan("c"), Id(round));
        if (verdict.ok() && *verdict == Verdict::kFirst) ++first;
      });
    }
    for (std::thread& t : threads) t.join();
    EXPECT_EQ(first.load(), 1);
  }
}

// A read's record of execution is its audit row when that row is the channel owner's, made since
// the channel's creation: nothing goes to executed_requests, and a restart still refuses it. A row
// of someone else, or one stamped before the channel was made (a clock stepped back), is not where
// the load looks, so its request goes to executed_requests; it is refused after a restart too.
TEST_P(ReplayGuardTest, AReadIsRecordedInItsAuditRowWhereTheLoadFindsIt) {
  ReplayGuard guard(*db_);
  AuditWriter writer(*db_);
  const AuditRecord owners{0,    2000, "acme", "alice", "key.retrieve", "", "kms://k/keys/1",
                           "ok", ""};
  AuditRecord other_user = owners, other_org = owners, before = owners;
  other_user.actor = "bob";
  other_org.org = "globex";
  before.at_ms = 999;
  EXPECT_EQ(ExecuteAudited(guard, writer, "chan", 1, owners), Verdict::kFirst);
  EXPECT_EQ(Count("SELECT count(*) FROM executed_requests"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM audit WHERE channel = 'chan' AND length(message) = 28"), 1);
  EXPECT_EQ(ExecuteAudited(guard, writer, "chan", 2, other_user), Verdict::kFirst);
  EXPECT_EQ(ExecuteAudited(guard, writer, "chan", 3, other_org), Verdict::kFirst);
  EXPECT_EQ(ExecuteAudited(guard, writer, "chan", 4, before), Verdict::kFirst);
  EXPECT_EQ(Count("SELECT count(*) FROM audit WHERE channel <> ''"), 1);
  EXPECT_EQ(Count("SELECT count(*) FROM executed_requests"), 3);

  ReplayGuard restarted(*db_);
  for (int n = 1; n <= 4; ++n) {
    EXPECT_EQ(ExecuteAudited(restarted, writer, "chan", n, owners), Verdict::kReplayed) << n;
  }
  // Another channel of the same owner does not inherit them.
  EXPECT_EQ(ExecuteAudited(restarted, writer, "chan-2", 1, owners), Verdict::kFirst);
  // And the chain, with the requests hashed in, still verifies.
  Result<AuditVerdict> verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, 5);
}

}  // namespace
}  // namespace strongroom::kms
