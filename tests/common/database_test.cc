#include "strongroom/common/database.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>
#include <vector>

#include "../support/test_dir.h"

namespace strongroom {
namespace {

using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;
using Poco::Data::Keywords::use;

const std::vector<Migration> kTwo = {
    {1, "notes", {"CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)"}},
    {2,
     "counters",
     {"CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
      "INSERT INTO counters VALUES ('hits', 0)"}},
};

class DatabaseTest : public ::testing::Test {
 protected:
  void SetUp() override { path_ = (dir_ / "kms.db").string(); }

  std::unique_ptr<Database> Open(std::span<const Migration> migrations = kTwo) {
    auto db = Database::OpenSqlite(path_, migrations);
    EXPECT_TRUE(db.ok()) << db.error().ToString();
    return db.ok() ? std::move(db).value() : nullptr;
  }

  int Count(Database& db, const std::string& sql) {
    int n = -1;
    EXPECT_TRUE(db.WithSession([&](Poco::Data::Session& s) -> Status {
                    s << sql, into(n), now;
                    return OkStatus();
                  }).ok());
    return n;
  }

  testing::TestDir dir_;
  std::string path_;
};

TEST_F(DatabaseTest, FreshDatabaseIsMigratedToTheNewestVersionInWalMode) {
  auto db = Open();
  ASSERT_TRUE(db);
  EXPECT_EQ(db->schema_version(), 2);
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM schema_migrations"), 2);
  EXPECT_EQ(Count(*db, "SELECT value FROM counters WHERE name = 'hits'"), 0);
  std::string mode;
  ASSERT_TRUE(db->WithSession([&](Poco::Data::Session& s) -> Status {
                  s << "PRAGMA journal_mode", into(mode), now;
                  return OkStatus();
                }).ok());
  EXPECT_EQ(mode, "wal");
}

// Issue 11: a database holds wrapped keys, user ids and the audit log; under umask 022 it used to
// be made 0644. The file, its write-ahead log and shared memory are the owner's alone.
TEST_F(DatabaseTest, ANewDatabaseIsTheOwnersAloneWhateverTheUmask) {
  const mode_t old_umask = ::umask(022);
  auto db = Open();
  ::umask(old_umask);
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  s << "INSERT INTO notes (text) VALUES ('x')", now;
                  return OkStatus();
                }).ok());
  for (const std::string& file : {path_, path_ + "-wal", path_ + "-shm"}) {
    ASSERT_TRUE(std::filesystem::exists(file)) << file;
    const auto perms = std::filesystem::status(file).permissions();
    EXPECT_EQ(perms & (std::filesystem::perms::group_all | std::filesystem::perms::others_all),
              std::filesystem::perms::none)
        << file;
  }
}

TEST_F(DatabaseTest, ReopeningAppliesOnlyNewMigrations) {
  {
    auto db = Open(std::span(kTwo).first(1));
    ASSERT_EQ(db->schema_version(), 1);
  }
  auto db = Open();
  EXPECT_EQ(db->schema_version(), 2);
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM schema_migrations"), 2);
  db.reset();
  auto again = Open();
  EXPECT_EQ(Count(*again, "SELECT COUNT(*) FROM counters"), 1);  // migration 2 ran once
}

TEST_F(DatabaseTest, DatabaseFromANewerProgramIsRefused) {
  Open().reset();
  auto older = Database::OpenSqlite(path_, std::span(kTwo).first(1));
  ASSERT_FALSE(older.ok());
  EXPECT_EQ(older.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(older.error().message().find("newer"), std::string::npos);
}

TEST_F(DatabaseTest, FailingMigrationLeavesNothingBehind) {
  const std::vector<Migration> broken = {
      kTwo[0],
      {2, "half", {"CREATE TABLE half (x INTEGER)", "THIS IS NOT SQL"}},
  };
  auto db = Database::OpenSqlite(path_, broken);
  ASSERT_FALSE(db.ok());
  auto fixed = Open(std::span(kTwo).first(1));
  EXPECT_EQ(fixed->schema_version(), 1);
  EXPECT_EQ(Count(*fixed, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'"), 0);
}

TEST_F(DatabaseTest, MisnumberedMigrationsAreABug) {
  const std::vector<Migration> gap = {kTwo[0], {3, "gap", {"SELECT 1"}}};
  auto db = Database::OpenSqlite(path_, gap);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code(), ErrorCode::kInternal);
}

TEST_F(DatabaseTest, ErrorOrExceptionRollsTheTransactionBack) {
  auto db = Open();
  Status refused = db->InTransaction([](Poco::Data::Session& s) -> Status {
    s << "INSERT INTO notes (text) VALUES ('first')", now;
    return Error(ErrorCode::kPermissionDenied, "not allowed");
  });
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  Status thrown = db->InTransaction([](Poco::Data::Session& s) -> Status {
    s << "INSERT INTO notes (text) VALUES ('second')", now;
    s << "INSERT INTO notes (text) VALUES (NULL)", now;  // NOT NULL: throws
    return OkStatus();
  });
  EXPECT_FALSE(thrown.ok());
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 0);
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  s << "INSERT INTO notes (text) VALUES ('kept')", now;
                  return OkStatus();
                }).ok());
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 1);
}

TEST_F(DatabaseTest, ConcurrentWritersAllCommit) {
  auto db = Open();
  constexpr int kThreads = 4, kEach = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        Status s = db->InTransaction([](Poco::Data::Session& session) -> Status {
          int value = 0;
          session << "SELECT value FROM counters WHERE name = 'hits'", into(value), now;
          ++value;
          session << "UPDATE counters SET value = ? WHERE name = 'hits'", use(value), now;
          return OkStatus();
        });
        if (!s.ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  // Read-modify-write in IMMEDIATE transactions loses no update.
  EXPECT_EQ(Count(*db, "SELECT value FROM counters WHERE name = 'hits'"), kThreads * kEach);
}

TEST_F(DatabaseTest, UnopenablePathIsUnavailable) {
  auto db = Database::OpenSqlite((dir_ / "missing-dir" / "kms.db").string(), kTwo);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code(), ErrorCode::kUnavailable);
}

TEST_F(DatabaseTest, DeferredCommitsRelaxSyncOnlyForThemselves) {
  auto db = Open();
  auto level = [](Poco::Data::Session& s) {
    int value = -1;
    s << "PRAGMA synchronous", Poco::Data::Keywords::into(value), Poco::Data::Keywords::now;
    return value;
  };
  int inside = -1, after = -1;
  ASSERT_TRUE(db->InTransaction(
                    [&](Poco::Data::Session& s) {
                      inside = level(s);
                      return OkStatus();
                    },
                    Database::Durability::kDeferred)
                  .ok());
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) {
                  after = level(s);
                  return OkStatus();
                }).ok());
  EXPECT_EQ(inside, 1);  // NORMAL
  EXPECT_EQ(after, 2);   // FULL again on the pooled connection
  EXPECT_TRUE(db->SyncToDisk().ok());
}

TEST_F(DatabaseTest, ManyWritersTakeTurnsInsteadOfFailingBusy) {
  DatabaseOptions options;
  options.busy_timeout = std::chrono::milliseconds(2000);
  auto db = Database::OpenSqlite(path_, kTwo, options);
  ASSERT_TRUE(db.ok());
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 16; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        Status s = (*db)->InTransaction([&](Poco::Data::Session& session) {
          int id = t * 100 + i;
          session << "INSERT INTO notes (id, text) VALUES (?, 'x')", Poco::Data::Keywords::use(id),
              Poco::Data::Keywords::now;
          std::this_thread::sleep_for(std::chrono::milliseconds(2));  // a slow transaction
          return OkStatus();
        });
        if (!s.ok()) ++failures;
      }
    });
  }
  for (std::thread& w : writers) w.join();
  EXPECT_EQ(failures.load(), 0);
  int rows = 0;
  ASSERT_TRUE((*db)
                  ->WithSession([&](Poco::Data::Session& s) -> Status {
                    s << "SELECT COUNT(*) FROM notes", Poco::Data::Keywords::into(rows),
                        Poco::Data::Keywords::now;
                    return OkStatus();
                  })
                  .ok());
  EXPECT_EQ(rows, 160);
}

TEST_F(DatabaseTest, CompactingEmptiesTheLogWhileReadersComeAndGo) {
  auto db = Open();
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    while (!stop) {
      (void)db->WithSession([](Poco::Data::Session& s) -> Status {
        int n = 0;
        s << "SELECT COUNT(*) FROM notes", Poco::Data::Keywords::into(n), Poco::Data::Keywords::now;
        return OkStatus();
      });
    }
  });
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) {
                    s << "INSERT INTO notes (id, text) VALUES (?, 'x')",
                        Poco::Data::Keywords::use(i), Poco::Data::Keywords::now;
                    return OkStatus();
                  }).ok());
  }
  EXPECT_GT(std::filesystem::file_size(path_ + "-wal"), 0u);
  ASSERT_TRUE(db->CompactLog().ok());
  stop = true;
  reader.join();
  EXPECT_EQ(std::filesystem::file_size(path_ + "-wal"), 0u);
}

TEST_F(DatabaseTest, EveryConnectionDeletesSecurely) {
  auto db = Open();
  ASSERT_TRUE(db);
  // Two connections at once: the pool's first and one it opens beside it.
  std::mutex mutex;
  std::condition_variable changed;
  bool held = false, release = false;
  int first = -1;
  std::thread holder([&] {
    (void)db->WithSession([&](Poco::Data::Session& s) -> Status {
      s << "PRAGMA secure_delete", into(first), now;
      std::unique_lock lock(mutex);
      held = true;
      changed.notify_all();
      changed.wait(lock, [&] { return release; });
      return OkStatus();
    });
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return held; });
  }
  EXPECT_EQ(Count(*db, "PRAGMA secure_delete"), 1);
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  holder.join();
  EXPECT_EQ(first, 1);
}

TEST_F(DatabaseTest, CompactingIsUnavailableWhileAReaderHoldsTheLogAndEmptiesItAfter) {
  DatabaseOptions options;
  options.busy_timeout = std::chrono::milliseconds(200);
  auto opened = Database::OpenSqlite(path_, kTwo, options);
  ASSERT_TRUE(opened.ok()) << opened.error().ToString();
  Database& db = **opened;
  ASSERT_TRUE(db.InTransaction([](Poco::Data::Session& s) {
                  s << "INSERT INTO notes (id, text) VALUES (1, 'x')", now;
                  return OkStatus();
                }).ok());
  // A reader whose snapshot includes the log's frames, held open until told.
  std::mutex mutex;
  std::condition_variable changed;
  bool reading = false, release = false;
  std::thread reader([&] {
    (void)db.WithSession([&](Poco::Data::Session& s) -> Status {
      s << "BEGIN", now;
      int n = 0;
      s << "SELECT COUNT(*) FROM notes", into(n), now;
      {
        std::unique_lock lock(mutex);
        reading = true;
        changed.notify_all();
        changed.wait(lock, [&] { return release; });
      }
      s << "COMMIT", now;
      return OkStatus();
    });
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return reading; });
  }
  Status held = db.CompactLog();
  ASSERT_FALSE(held.ok()) << "the log was reported emptied while a reader held it";
  EXPECT_EQ(held.error().code(), ErrorCode::kUnavailable);
  EXPECT_GT(std::filesystem::file_size(path_ + "-wal"), 0u);
  {
    std::lock_guard lock(mutex);
    release = true;
  }
  changed.notify_all();
  reader.join();
  ASSERT_TRUE(db.CompactLog().ok());
  EXPECT_EQ(std::filesystem::file_size(path_ + "-wal"), 0u);
}

}  // namespace
}  // namespace strongroom
