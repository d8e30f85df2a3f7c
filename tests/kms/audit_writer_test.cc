#include "strongroom/kms/audit_writer.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "../support/counting_vfs.h"
#include "../support/kms_database.h"
#include "../support/test_dir.h"
#include "../support/wait_until.h"
#include "strongroom/kms/hot_path_cache.h"
#include "strongroom/kms/kms_store.h"

namespace strongroom::kms {
namespace {

AuditRecord Record(int i) {
  return {0, 1000 + i, "acme", "user" + std::to_string(i), "key.retrieve", "", "", "ok", ""};
}

// Runs `sql` (DDL, or DML without rows) in a transaction of its own.
void Exec(Database& db, const std::string& sql) {
  const Status done = db.InTransaction([&](Poco::Data::Session& s) -> Status {
    Database::Prepare(s, sql).Run();
    return OkStatus();
  });
  ASSERT_TRUE(done.ok()) << sql << ": " << done.error().ToString();
}

// The writer on both engines (tests/support/kms_database.h).
class AuditWriterTest : public ::testing::TestWithParam<Database::Engine> {
 protected:
  void SetUp() override {
    Result<std::string> target = testing::NewKmsDatabase(GetParam(), dir_.path());
    ASSERT_TRUE(target.ok()) << target.error().ToString();
    Result<std::unique_ptr<Database>> db = testing::OpenKmsDatabase(GetParam(), *target);
    ASSERT_TRUE(db.ok()) << db.error().ToString();
    db_ = std::move(db).value();
    target_ = *target;
  }
  bool postgres() const { return GetParam() == Database::Engine::kPostgres; }

  testing::TestDir dir_;
  std::unique_ptr<Database> db_;
  std::string target_;
};

INSTANTIATE_TEST_SUITE_P(Engines, AuditWriterTest, testing::kBothEngines, testing::EngineName);

// What the writer's syncs cost on SQLite, counted by a VFS of the tests' (counting_vfs.h):
// PostgreSQL's log is the server's, out of the test's sight.
class AuditWriterSqliteTest : public ::testing::Test {
 protected:
  testing::TestDir dir_;
};

TEST_P(AuditWriterTest, ConcurrentAppendsAreAllCommittedInOneChain) {
  AuditWriter writer(*db_);
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        if (!writer.Append(Record(t * 100 + i)).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, 400);
  const AuditWriter::Stats stats = writer.stats();
  EXPECT_EQ(stats.records, 400u);
  EXPECT_LE(stats.batches, 400u);
}

TEST_P(AuditWriterTest, AppendReturnsOnlyOnceTheRecordIsVisible) {
  AuditWriter writer(*db_, Database::Durability::kFull);
  ASSERT_TRUE(writer.Append(Record(1)).ok());
  AuditFilter all;
  auto found = AuditLog::Query(*db_, all);
  ASSERT_TRUE(found.ok());
  ASSERT_EQ(found->size(), 1u);
  EXPECT_EQ((*found)[0].actor, "user1");
}

TEST_P(AuditWriterTest, AnInvalidRecordIsRefusedAloneAndOthersGoOn) {
  AuditWriter writer(*db_);
  AuditRecord too_long = Record(2);
  too_long.detail.assign(kMaxAuditField + 1, 'x');
  EXPECT_EQ(writer.Append(too_long).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(writer.Append(Record(3)).ok());
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_EQ(verdict->records, 1);
}

TEST_P(AuditWriterTest, ChainStaysWholeWhenOtherTransactionsAppendToo) {
  AuditWriter writer(*db_);
  std::thread direct([&] {
    for (int i = 0; i < 50; ++i) {
      AuditRecord r = Record(500 + i);
      ASSERT_TRUE(
          db_->InTransaction([&](Poco::Data::Session& s) { return AuditLog::Append(s, r); }).ok());
    }
  });
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(writer.Append(Record(i)).ok());
  direct.join();
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, 100);
}

// The group commit's statements (the chain's head, the audit insert, the executed-request insert,
// BEGIN and COMMIT) are compiled at the first batch and re-bound at every later one.
TEST_P(AuditWriterTest, ABatchCompilesNoStatementAfterTheFirst) {
  // The syncer stays out of the way (its first turn is an hour off): a sync or a log compaction
  // takes a pooled connection for a moment, and a batch begun then opens another connection,
  // which compiles its statements once, and KeptStatementUses does not count a connection in use.
  AuditWriter writer(*db_, Database::Durability::kDeferred, std::chrono::hours(1));
  // Someone else's record: its request goes to executed_requests, in the same commit.
  auto executed = [](int i) {
    return ExecutedRequest{"kms://kms.acme.test/ecdhe/c" + std::to_string(i),
                           std::string(28, static_cast<char>('a' + i % 26)),
                           2000 + i,
                           "acme",
                           "someone-else",
                           0};
  };
  ASSERT_TRUE(writer.Append(Record(0), executed(0)).ok());
  const std::uint64_t compiled = db_->statements_compiled();
  const auto uses_before = db_->KeptStatementUses();
  constexpr int kBatches = 20;
  for (int i = 1; i <= kBatches; ++i) ASSERT_TRUE(writer.Append(Record(i), executed(i)).ok());
  EXPECT_EQ(db_->statements_compiled(), compiled);
  const auto uses = db_->KeptStatementUses();
  auto grown = [&](std::string_view prefix) {
    std::uint64_t before = 0, after = 0;
    for (const auto& [sql, n] : uses_before) before += sql.starts_with(prefix) ? n : 0;
    for (const auto& [sql, n] : uses) after += sql.starts_with(prefix) ? n : 0;
    return after - before;
  };
  EXPECT_EQ(grown("INSERT INTO audit "), static_cast<std::uint64_t>(kBatches));
  EXPECT_EQ(grown("SELECT seq, hash FROM audit"), static_cast<std::uint64_t>(kBatches));
  EXPECT_EQ(grown("INSERT INTO executed_requests "), static_cast<std::uint64_t>(kBatches));
  if (!postgres()) {  // PostgreSQL's transaction control is sent as text (one round trip)
    EXPECT_EQ(grown("COMMIT"), static_cast<std::uint64_t>(kBatches));
  }
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, kBatches + 1);
}

// Deferred batches reach the disk every sync_interval while the writer commits on, and what is
// left when the writer stops is synced before it is gone.
TEST_F(AuditWriterSqliteTest, DeferredBatchesAreSyncedWhileCommitsGoOn) {
  testing::CountingVfs::Install();  // before the connections open
  auto db = Database::OpenSqlite((dir_ / "synced.db").string(), KmsStore::Migrations());
  ASSERT_TRUE(db.ok());
  auto writer = std::make_unique<AuditWriter>(**db, Database::Durability::kDeferred,
                                              std::chrono::milliseconds(20));
  const std::uint64_t before = testing::CountingVfs::wal_syncs();
  // Commits go on until the syncer has synced three times (every 20 ms when it gets a core; a
  // loaded machine may give it one late, so the bound is generous and nothing is timed).
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int appended = 0;
  while (testing::CountingVfs::wal_syncs() - before < 3 &&
         std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(writer->Append(Record(appended++)).ok());
  }
  EXPECT_GE(testing::CountingVfs::wal_syncs() - before, 3u);
  ASSERT_TRUE(writer->Append(Record(appended++)).ok());
  const std::uint64_t last = testing::CountingVfs::wal_syncs();
  writer.reset();
  EXPECT_GT(testing::CountingVfs::wal_syncs(), last);
  auto verdict = AuditLog::Verify(**db);
  ASSERT_TRUE(verdict.ok());
  EXPECT_EQ(verdict->records, appended);
}

// A failed batch is answered to its own callers only; the writer and the batches after it go on.
TEST_P(AuditWriterTest, AFailedBatchFailsItsCallersOnly) {
  AuditWriter writer(*db_, Database::Durability::kFull);
  ASSERT_TRUE(writer.Append(Record(1)).ok());
  // The next batch cannot commit: the audit table is renamed away under the writer.
  ASSERT_NO_FATAL_FAILURE(Exec(*db_, "ALTER TABLE audit RENAME TO audit_away"));
  Status failed = writer.Append(Record(2));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(writer.stats().failures, 1u);
  ASSERT_NO_FATAL_FAILURE(Exec(*db_, "ALTER TABLE audit_away RENAME TO audit"));
  EXPECT_TRUE(writer.Append(Record(3)).ok());
  EXPECT_TRUE(writer.Append(Record(4)).ok());
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, 3);
}

// Holds the writer's thread inside a batch of its own (a Write that waits to be let go), so that
// the writes submitted meanwhile queue up and go into the next batch together.
class HeldWriter {
 public:
  // `first` runs in the held batch once it is let go.
  explicit HeldWriter(AuditWriter& writer, AuditWriter::Unit first = {}) : writer_(writer) {
    thread_ = std::thread([this, first = std::move(first)] {
      outcome_ = writer_.Write([&](Poco::Data::Session& s) -> Status {
        entered_ = true;
        while (!released_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return first ? first(s) : OkStatus();
      });
    });
    while (!entered_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~HeldWriter() {
    released_ = true;
    if (thread_.joinable()) thread_.join();
  }
  // Lets the held batch go once `queued` records and writes wait behind it; its outcome.
  Status ReleaseWhen(std::size_t queued) {
    while (writer_.stats().queued < queued) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    released_ = true;
    thread_.join();
    return outcome_;
  }

 private:
  AuditWriter& writer_;
  std::atomic<bool> entered_{false};
  std::atomic<bool> released_{false};
  Status outcome_;
  std::thread thread_;
};

// An audit record written by a write of its own, as KmsService's writes do.
AuditWriter::Unit AppendInWrite(int i) {
  return [i](Poco::Data::Session& s) -> Status {
    AuditRecord record = Record(i);
    record.action = "key.create";
    return AuditLog::Append(s, record);
  };
}

std::int64_t CountRows(Database& db, const std::string& sql) {
  std::int64_t n = -1;
  EXPECT_TRUE(db.WithSession([&](Poco::Data::Session& s) -> Status {
                  SqlStatement count = Database::Prepare(s, sql);
                  if (count.Next()) n = count.Int(0);
                  return OkStatus();
                }).ok());
  return n;
}

// Issue 13: concurrent writes (creating keys, binding them) share one transaction and one fsync
// of the log instead of one each, and each caller is answered only after that commit.
TEST_F(AuditWriterSqliteTest, ConcurrentWritesShareOneCommitAndOneSync) {
  testing::CountingVfs::Install();  // before the connections open
  auto db = Database::OpenSqlite((dir_ / "grouped.db").string(), KmsStore::Migrations());
  ASSERT_TRUE(db.ok());
  AuditWriter writer(**db);  // deferred for retrievals' records; a write is always full
  constexpr int kWrites = 16;
  std::vector<Status> outcomes(kWrites, Error(ErrorCode::kInternal, "not answered"));
  std::vector<std::thread> callers;
  std::uint64_t syncs_before = 0;
  {
    HeldWriter held(writer);
    syncs_before = testing::CountingVfs::wal_syncs();
    for (int i = 0; i < kWrites; ++i) {
      callers.emplace_back([&, i] { outcomes[i] = writer.Write(AppendInWrite(i)); });
    }
    ASSERT_TRUE(held.ReleaseWhen(kWrites).ok());
  }
  for (std::thread& t : callers) t.join();
  for (const Status& outcome : outcomes) EXPECT_TRUE(outcome.ok()) << outcome.error().ToString();
  const AuditWriter::Stats stats = writer.stats();
  EXPECT_EQ(stats.batches, 2u);  // the held one, and the sixteen together
  EXPECT_EQ(stats.writes, static_cast<std::uint64_t>(kWrites + 1));
  // Each batch with a write is fsynced at its commit: two, where a transaction per write made 17.
  // (A checkpoint of the syncer's, every few seconds, may add one.)
  EXPECT_LE(testing::CountingVfs::wal_syncs() - syncs_before, 3u);
  auto verdict = AuditLog::Verify(**db);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, kWrites);
}

// Another node (another Database on the same database) holds the writers' lock while the writer
// begins a batch for a record, and a write comes meanwhile. On PostgreSQL the batch is taken once
// its transaction holds the lock: the write joins it (one batch for both), and the batch, begun
// deferred for the record alone, commits synchronously for the write. On SQLite (one process, no
// other node) the write's batch is chosen synchronous before it begins.
TEST_P(AuditWriterTest, AWriteThatCameDuringTheLockWaitJoinsTheBatchAndCommitsDurably) {
  AuditWriter writer(*db_, Database::Durability::kDeferred, std::chrono::hours(1));
  std::atomic<bool> holding{false}, release{false};
  std::thread node;
  Status record, write;
  std::thread first;
  if (postgres()) {
    Result<std::unique_ptr<Database>> other = testing::OpenKmsDatabase(GetParam(), target_);
    ASSERT_TRUE(other.ok()) << other.error().ToString();
    node = std::thread([&, other = std::move(other).value()] {
      const Status held = other->InTransaction([&](Poco::Data::Session&) -> Status {
        holding = true;
        while (!release) std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return OkStatus();
      });
      EXPECT_TRUE(held.ok()) << held.error().ToString();
    });
    while (!holding) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    first = std::thread([&] { record = writer.Append(Record(1)); });
    // The writer's transaction waits for the advisory lock the other node holds.
    EXPECT_TRUE(testing::WaitUntil([&] {
      return CountRows(*db_,
                       "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND wait_event = 'advisory'") >= 1;
    }));
  } else {
    record = writer.Append(Record(1));
  }
  std::string synchronous;
  std::thread second([&] {
    write = writer.Write([&](Poco::Data::Session& s) -> Status {
      SqlStatement setting = Database::Prepare(
          s, postgres() ? "SELECT current_setting('synchronous_commit')" : "PRAGMA synchronous");
      if (setting.Next()) synchronous = setting.Text(0);
      return AppendInWrite(2)(s);
    });
  });
  if (postgres()) {
    // Both wait in the queue, behind the other node's lock (a batch taken before its transaction
    // held the lock would have taken the record, and leave the write alone in the queue).
    EXPECT_TRUE(testing::WaitUntil([&] { return writer.stats().queued >= 2; }));
    release = true;
    node.join();
    first.join();
  }
  second.join();
  ASSERT_TRUE(record.ok()) << record.error().ToString();
  ASSERT_TRUE(write.ok()) << write.error().ToString();
  EXPECT_EQ(synchronous, postgres() ? "on" : "2");  // SQLite's FULL is 2
  if (postgres()) {
    EXPECT_EQ(writer.stats().batches, 1u);
  }
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, 2);
}

// A write of a batch that fails (an error, or a throw) is rolled back alone and fails only its own
// caller; the batch's other writes and records commit.
TEST_P(AuditWriterTest, AFailedWriteFailsOnlyItsCallerAndLeavesNothing) {
  AuditWriter writer(*db_);
  Status ok_first, refused, thrown, ok_last, record;
  std::vector<std::thread> callers;
  {
    HeldWriter held(writer);
    callers.emplace_back([&] { ok_first = writer.Write(AppendInWrite(1)); });
    while (writer.stats().queued < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    callers.emplace_back([&] {
      refused = writer.Write([](Poco::Data::Session& s) -> Status {
        SR_RETURN_IF_ERROR(AppendInWrite(2)(s));
        return Error(ErrorCode::kFailedPrecondition, "the key is bound already");
      });
    });
    while (writer.stats().queued < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    callers.emplace_back([&] {
      thrown = writer.Write([](Poco::Data::Session& s) -> Status {
        SR_RETURN_IF_ERROR(AppendInWrite(3)(s));
        // On PostgreSQL the failed statement aborts the transaction: only the write's savepoint
        // brings it back for the others.
        Database::Prepare(s, "INSERT INTO no_such_table VALUES (1)").Run();
        return OkStatus();
      });
    });
    while (writer.stats().queued < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    callers.emplace_back([&] { ok_last = writer.Write(AppendInWrite(4)); });
    callers.emplace_back([&] { record = writer.Append(Record(5)); });
    ASSERT_TRUE(held.ReleaseWhen(5).ok());
  }
  for (std::thread& t : callers) t.join();
  EXPECT_TRUE(ok_first.ok());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(refused.error().message(), "the key is bound already");
  EXPECT_FALSE(thrown.ok());
  EXPECT_TRUE(ok_last.ok());
  EXPECT_TRUE(record.ok());
  EXPECT_EQ(writer.stats().batches, 2u);
  EXPECT_EQ(writer.stats().failures, 0u);
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, 3);  // users 1, 4 and 5: the refused and the thrown left nothing
  EXPECT_EQ(CountRows(*db_, "SELECT COUNT(*) FROM audit WHERE actor IN ('user2', 'user3')"), 0);
}

// A batch that cannot commit fails every caller in it, writes whose own work succeeded included,
// and stores none of it; the batches after it commit.
TEST_P(AuditWriterTest, ABatchThatCannotCommitFailsEveryWriteInIt) {
  AuditWriter writer(*db_);
  Status write, record;
  std::vector<std::thread> callers;
  {
    // The held batch moves the audit table away, so the next batch's records cannot be appended.
    HeldWriter held(writer, [](Poco::Data::Session& s) -> Status {
      Database::Prepare(s, "ALTER TABLE audit RENAME TO audit_away").Run();
      return OkStatus();
    });
    callers.emplace_back([&] {
      write = writer.Write([](Poco::Data::Session& s) -> Status {
        return KmsStore::InsertResource(
            s, ResourceRecord{"kms://kms.acme.test/resources/r1", "acme", "alice", 1000, {}});
      });
    });
    callers.emplace_back([&] { record = writer.Append(Record(1)); });
    ASSERT_TRUE(held.ReleaseWhen(2).ok());
  }
  for (std::thread& t : callers) t.join();
  ASSERT_FALSE(write.ok());
  ASSERT_FALSE(record.ok());
  EXPECT_EQ(write.error().message(), record.error().message());
  EXPECT_EQ(writer.stats().failures, 1u);
  EXPECT_EQ(CountRows(*db_, "SELECT COUNT(*) FROM resources"), 0);
  ASSERT_NO_FATAL_FAILURE(Exec(*db_, "ALTER TABLE audit_away RENAME TO audit"));
  EXPECT_TRUE(writer.Write(AppendInWrite(2)).ok());
  EXPECT_TRUE(writer.Append(Record(3)).ok());
  auto verdict = AuditLog::Verify(*db_);
  ASSERT_TRUE(verdict.ok());
  EXPECT_TRUE(verdict->ok()) << verdict->problem;
  EXPECT_EQ(verdict->records, 2);
}

TEST(HotPathCacheTest, AChangeMakesEveryEarlierReadStale) {
  HotPathCache<std::string> cache(64, std::chrono::seconds(60));
  const std::uint64_t before = cache.generation();
  cache.Put("a", "old", before);
  EXPECT_EQ(cache.Get("a"), "old");
  cache.Invalidate();
  EXPECT_EQ(cache.Get("a"), std::nullopt);
  // A value read before the change but put after it is never served.
  cache.Put("b", "read-before-the-change", before);
  EXPECT_EQ(cache.Get("b"), std::nullopt);
  cache.Put("b", "fresh", cache.generation());
  EXPECT_EQ(cache.Get("b"), "fresh");
  cache.Erase("b");
  EXPECT_EQ(cache.Get("b"), std::nullopt);
}

TEST(HotPathCacheTest, EntriesExpireAndTheSizeIsBounded) {
  HotPathCache<int> expiring(64, std::chrono::milliseconds(1));
  expiring.Put("a", 1, expiring.generation());
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(expiring.Get("a"), std::nullopt);

  HotPathCache<int> small(32, std::chrono::seconds(60));  // 2 per shard
  for (int i = 0; i < 1000; ++i) small.Put("k" + std::to_string(i), i, small.generation());
  int kept = 0;
  for (int i = 0; i < 1000; ++i) kept += small.Get("k" + std::to_string(i)).has_value();
  EXPECT_LE(kept, 32);
  EXPECT_GT(kept, 0);

  HotPathCache<int> off(0, std::chrono::seconds(60));
  off.Put("a", 1, off.generation());
  EXPECT_EQ(off.Get("a"), std::nullopt);
}

}  // namespace
}  // namespace strongroom::kms
