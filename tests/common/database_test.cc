#include "strongroom/common/database.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "../support/counting_vfs.h"
#include "../support/processes_together.h"
#include "../support/test_dir.h"
#include "../support/test_engines.h"
#include "strongroom/common/sql_statement.h"

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

TEST_F(DatabaseTest, AFreshDatabaseIsInWalMode) {
  auto db = Open();
  ASSERT_TRUE(db);
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

// What this process has written to files so far (/proc/self/io), page cache included.
std::uint64_t BytesWritten() {
  std::ifstream io("/proc/self/io");
  std::string name;
  std::uint64_t value = 0;
  while (io >> name >> value) {
    if (name == "wchar:") return value;
  }
  return 0;
}

// A savepoint that changes pages its transaction changed before journals their old contents; that
// journal stays in memory (temp_store=MEMORY), not in a temporary file (a group commit's units
// did that, megabytes per batch of bound keys).
TEST_F(DatabaseTest, ASavepointsJournalIsNotWrittenToAFile) {
  auto db = Open();
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  for (int i = 0; i < 100; ++i) {
                    s << "INSERT INTO notes (text) VALUES (hex(zeroblob(1500)))",
                        now;  // 3000 bytes
                  }
                  return OkStatus();
                }).ok());
  std::uint64_t in_savepoint = 0;
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                  s << "UPDATE notes SET text = replace(text, '0', 'b')", now;
                  const std::uint64_t before = BytesWritten();
                  SR_RETURN_IF_ERROR(Database::InSavepoint(s, [](Poco::Data::Session& u) {
                    u << "UPDATE notes SET text = replace(text, 'b', 'c')", now;
                    return OkStatus();
                  }));
                  in_savepoint = BytesWritten() - before;
                  return OkStatus();
                }).ok());
  EXPECT_EQ(Count(*db, "PRAGMA temp_store"), 2);
  // The old contents of 100 pages (400 KB) would have gone to the file; what is left is output.
  EXPECT_LT(in_savepoint, 64u * 1024) << in_savepoint << " bytes written in the savepoint";
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes WHERE text LIKE 'c%'"), 100);
}

// A write transaction larger than the page cache (2 MB) keeps its changed pages in memory until
// its commit instead of writing them to the log early and then again (a group commit's batch).
TEST_F(DatabaseTest, ALargeTransactionWritesTheLogOnlyAtItsCommit) {
  auto db = Open();
  std::uint64_t before_commit = 0;
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                  const std::uint64_t before = BytesWritten();
                  for (int i = 0; i < 2000; ++i) {  // 6 MB: 2,000 pages
                    s << "INSERT INTO notes (text) VALUES (hex(zeroblob(1500)))", now;
                  }
                  before_commit = BytesWritten() - before;
                  return OkStatus();
                }).ok());
  EXPECT_LT(before_commit, 64u * 1024) << before_commit << " bytes written before the commit";
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 2000);
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

// --- statements compiled once per connection (Database::Prepare) ---------------------------------

constexpr char kInsertNote[] = "INSERT INTO notes (id, text) VALUES (?, ?)";
constexpr char kNoteText[] = "SELECT text FROM notes WHERE id = ?";

std::unique_ptr<Database> OpenWith(
    const std::string& path, std::size_t sessions,
    std::chrono::milliseconds busy = std::chrono::milliseconds(5000)) {
  DatabaseOptions options;
  options.max_sessions = sessions;
  options.busy_timeout = busy;
  auto db = Database::OpenSqlite(path, kTwo, options);
  EXPECT_TRUE(db.ok()) << db.error().ToString();
  return db.ok() ? std::move(db).value() : nullptr;
}

std::string NoteText(Database& db, std::int64_t id) {
  std::string text = "(none)";
  EXPECT_TRUE(db.WithSession([&](Poco::Data::Session& s) -> Status {
                  SqlStatement select = Database::Prepare(s, kNoteText);
                  if (select.Bind(id).Next()) text = select.Text(0);
                  return OkStatus();
                }).ok());
  return text;
}

// SQLite compiles a kept statement again by itself when the schema changed under it: the same
// statement then reads the new column.
TEST_F(DatabaseTest, AKeptStatementFollowsASchemaChange) {
  auto db = OpenWith(path_, 1);
  ASSERT_TRUE(db);
  constexpr char kAll[] = "SELECT * FROM notes";
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                  s << "INSERT INTO notes (id, text) VALUES (1, 'a')", now;
                  return OkStatus();
                }).ok());
  auto third_column = [&]() {
    std::optional<std::string> value = "(unread)";
    EXPECT_TRUE(db->WithSession([&](Poco::Data::Session& s) -> Status {
                    SqlStatement all = Database::Prepare(s, kAll);
                    if (all.Next()) value = all.OptionalText(2);
                    return OkStatus();
                  }).ok());
    return value;
  };
  EXPECT_EQ(third_column(), std::nullopt);  // there is no third column
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                  s << "ALTER TABLE notes ADD COLUMN colour TEXT NOT NULL DEFAULT 'blue'", now;
                  return OkStatus();
                }).ok());
  EXPECT_EQ(third_column(), std::optional<std::string>("blue"));
  EXPECT_EQ(db->KeptStatementUses()[kAll], 2u);  // the one kept statement, both times
}

// The kept statements are finalized with their connection: closed cleanly, the last connection
// removes the write-ahead log and shared memory files, which SQLite keeps while a connection is
// left open by statements nobody finalized.
TEST_F(DatabaseTest, KeptStatementsAreFinalizedWithTheirConnections) {
  auto db = OpenWith(path_, 4);
  ASSERT_TRUE(db);
  std::vector<std::thread> users;
  for (int t = 0; t < 4; ++t) {
    users.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        EXPECT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                        Database::Prepare(s, kInsertNote).Bind(t * 100 + i).Bind("x").Run();
                        return OkStatus();
                      }).ok());
        EXPECT_EQ(NoteText(*db, t * 100 + i), "x");
      }
    });
  }
  for (std::thread& user : users) user.join();
  ASSERT_TRUE(std::filesystem::exists(path_ + "-wal"));
  db.reset();
  EXPECT_FALSE(std::filesystem::exists(path_ + "-wal"));
  EXPECT_FALSE(std::filesystem::exists(path_ + "-shm"));
  auto again = OpenWith(path_, 1);
  ASSERT_TRUE(again);
  EXPECT_EQ(Count(*again, "SELECT COUNT(*) FROM notes"), 80);
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

// A deferred commit reaches the disk at SyncToDisk, which fsyncs the write-ahead log (as a commit
// at synchronous=FULL does) and leaves copying it into the database to checkpoints.
TEST_F(DatabaseTest, ADeferredCommitReachesTheDiskWhenTheLogIsSynced) {
  testing::CountingVfs::Install();  // before the connections open
  auto db = OpenWith(path_, 2);
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->CompactLog().ok());  // the schema into the database, the log empty
  const auto database_size = std::filesystem::file_size(path_);
  std::uint64_t syncs = testing::CountingVfs::wal_syncs();
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  s << "INSERT INTO notes (text) VALUES ('full')", now;
                  return OkStatus();
                }).ok());
  EXPECT_GT(testing::CountingVfs::wal_syncs(), syncs);  // synchronous=FULL: at the commit
  syncs = testing::CountingVfs::wal_syncs();
  ASSERT_TRUE(db->InTransaction(
                    [](Poco::Data::Session& s) -> Status {
                      s << "CREATE TABLE more (x TEXT)", now;
                      s << "INSERT INTO more VALUES (zeroblob(20000))", now;
                      return OkStatus();
                    },
                    Database::Durability::kDeferred)
                  .ok());
  EXPECT_EQ(testing::CountingVfs::wal_syncs(), syncs);  // deferred: not at the commit
  ASSERT_TRUE(db->SyncToDisk().ok());
  EXPECT_GT(testing::CountingVfs::wal_syncs(), syncs);          // but now
  EXPECT_EQ(std::filesystem::file_size(path_), database_size);  // in the log only
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM more"), 1);
}

// --- on both engines --------------------------------------------------------------------------

using Engine = Database::Engine;

// kTwo in each engine's DDL: PostgreSQL numbers rows with an identity column where SQLite's
// INTEGER PRIMARY KEY does it by itself.
const std::vector<Migration> kTwoPostgres = {
    {1,
     "notes",
     {"CREATE TABLE notes (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
      "text TEXT NOT NULL)"}},
    kTwo[1],
};

class DatabaseEngineTest : public ::testing::TestWithParam<Engine> {
 protected:
  void SetUp() override {
    Result<testing::TestDatabase> where = testing::TestDatabase::New(GetParam(), dir_ / "kms.db");
    ASSERT_TRUE(where.ok()) << where.error().ToString();
    where_ = *where;
  }

  bool postgres() const { return GetParam() == Engine::kPostgres; }
  std::span<const Migration> two() const { return postgres() ? kTwoPostgres : kTwo; }

  // `migrations` are the engine's own (two()).
  Result<std::unique_ptr<Database>> OpenRaw(std::span<const Migration> migrations,
                                            const DatabaseOptions& options = {}) {
    return where_.Open(migrations, migrations, options);
  }

  std::unique_ptr<Database> Open(std::optional<std::span<const Migration>> migrations = {}) {
    auto db = OpenRaw(migrations.value_or(two()));
    EXPECT_TRUE(db.ok()) << db.error().ToString();
    return db.ok() ? std::move(db).value() : nullptr;
  }

  std::unique_ptr<Database> OpenWith(
      std::size_t sessions, std::chrono::milliseconds busy = std::chrono::milliseconds(5000)) {
    DatabaseOptions options;
    options.max_sessions = sessions;
    options.busy_timeout = busy;
    auto db = OpenRaw(two(), options);
    EXPECT_TRUE(db.ok()) << db.error().ToString();
    return db.ok() ? std::move(db).value() : nullptr;
  }

  static void Exec(Poco::Data::Session& s, const std::string& sql) {
    Database::Prepare(s, sql).Run();
  }

  static std::int64_t Count(Database& db, const std::string& sql) {
    std::int64_t n = -1;
    EXPECT_TRUE(db.WithSession([&](Poco::Data::Session& s) -> Status {
                    SqlStatement select = Database::Prepare(s, sql);
                    if (select.Next()) n = select.Int(0);
                    return OkStatus();
                  }).ok());
    return n;
  }

  std::int64_t Tables(Database& db, const std::string& name) {
    std::int64_t n = -1;
    EXPECT_TRUE(db.WithSession([&](Poco::Data::Session& s) -> Status {
                    SqlStatement select = Database::Prepare(
                        s, postgres() ? "SELECT COUNT(*) FROM information_schema.tables "
                                        "WHERE table_schema = 'public' AND table_name = ?"
                                      : "SELECT COUNT(*) FROM sqlite_master WHERE name = ?");
                    if (select.Bind(name).Next()) n = select.Int(0);
                    return OkStatus();
                  }).ok());
    return n;
  }

  // How the session's commits reach the disk: "full" or "deferred".
  std::string CommitLevel(Poco::Data::Session& s) const {
    SqlStatement select = Database::Prepare(
        s, postgres() ? "SELECT current_setting('synchronous_commit')" : "PRAGMA synchronous");
    if (!select.Next()) return "(none)";
    if (postgres())
      return select.Text(0) == "on" ? "full" : select.Text(0) == "off" ? "deferred" : "?";
    return select.Int(0) == 2 ? "full" : select.Int(0) == 1 ? "deferred" : "?";
  }

  testing::TestDir dir_;
  testing::TestDatabase where_;
};

INSTANTIATE_TEST_SUITE_P(Engines, DatabaseEngineTest, testing::kBothEngines, testing::EngineName);

TEST_P(DatabaseEngineTest, FreshDatabaseIsMigratedToTheNewestVersion) {
  auto db = Open();
  ASSERT_TRUE(db);
  EXPECT_EQ(db->engine(), GetParam());
  EXPECT_EQ(db->schema_version(), 2);
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM schema_migrations"), 2);
  EXPECT_EQ(Count(*db, "SELECT value FROM counters WHERE name = 'hits'"), 0);
}

TEST_P(DatabaseEngineTest, ReopeningAppliesOnlyNewMigrations) {
  {
    auto db = Open(two().first(1));
    ASSERT_EQ(db->schema_version(), 1);
  }
  auto db = Open();
  EXPECT_EQ(db->schema_version(), 2);
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM schema_migrations"), 2);
  db.reset();
  auto again = Open();
  EXPECT_EQ(Count(*again, "SELECT COUNT(*) FROM counters"), 1);  // migration 2 ran once
}

// A node with an old program refuses a database a newer one migrated, with one line.
TEST_P(DatabaseEngineTest, DatabaseFromANewerProgramIsRefused) {
  Open().reset();
  auto older = OpenRaw(two().first(1));
  ASSERT_FALSE(older.ok());
  EXPECT_EQ(older.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(older.error().message().find("newer"), std::string::npos);
  EXPECT_EQ(older.error().message().find('\n'), std::string::npos) << older.error().message();
}

TEST_P(DatabaseEngineTest, FailingMigrationLeavesNothingBehind) {
  const std::vector<Migration> broken = {
      two()[0],
      {2, "half", {"CREATE TABLE half (x INTEGER)", "THIS IS NOT SQL"}},
  };
  auto db = OpenRaw(broken);
  ASSERT_FALSE(db.ok());
  auto fixed = Open(two().first(1));
  EXPECT_EQ(fixed->schema_version(), 1);
  EXPECT_EQ(Tables(*fixed, "half"), 0);
}

TEST_P(DatabaseEngineTest, AMigrationsConvertStepRunsInItsTransaction) {
  {
    auto db = Open(two().first(1));
    ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                    Exec(s, "INSERT INTO notes (text) VALUES ('a'), ('bb'), ('ccc')");
                    return OkStatus();
                  }).ok());
  }
  // A conversion SQL alone would not do: each note's length, computed here.
  auto lengths = [](Poco::Data::Session& s) {
    std::vector<std::string> texts;
    {
      SqlStatement select = Database::Prepare(s, "SELECT text FROM notes ORDER BY id");
      while (select.Next()) texts.push_back(select.Text(0));
    }
    for (const std::string& text : texts) {
      Database::Prepare(s, "INSERT INTO lengths VALUES (?)")
          .Bind(static_cast<std::int64_t>(text.size()))
          .Run();
    }
    Exec(s, "DROP TABLE notes");
  };
  const std::vector<Migration> failing = {
      two()[0],
      {2,
       "lengths",
       {"CREATE TABLE lengths (n INTEGER NOT NULL)"},
       [&](Poco::Data::Session& s) {
         lengths(s);
         throw std::runtime_error("the conversion failed");
       }},
  };
  auto refused = OpenRaw(failing);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("the conversion failed"), std::string::npos);
  {
    auto before = Open(two().first(1));
    EXPECT_EQ(before->schema_version(), 1);
    EXPECT_EQ(Count(*before, "SELECT COUNT(*) FROM notes"), 3);  // rolled back, with the table
    EXPECT_EQ(Tables(*before, "lengths"), 0);
  }
  const std::vector<Migration> working = {
      two()[0], {2, "lengths", {"CREATE TABLE lengths (n INTEGER NOT NULL)"}, lengths}};
  auto db = Open(working);
  EXPECT_EQ(db->schema_version(), 2);
  EXPECT_EQ(Count(*db, "SELECT SUM(n) FROM lengths"), 6);
  EXPECT_EQ(Tables(*db, "notes"), 0);
}

// A database that another program's migrations made (another service's store) is refused before
// any migration of ours runs, and left as it was.
TEST_P(DatabaseEngineTest, AnotherProgramsSchemaIsRefusedUntouched) {
  const std::vector<Migration> theirs = {
      {1, "their conversations", {"CREATE TABLE conversations (id TEXT PRIMARY KEY)"}}};
  { ASSERT_NE(Open(theirs), nullptr); }
  auto refused = OpenRaw(two());
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), ErrorCode::kFailedPrecondition);
  EXPECT_NE(refused.error().message().find(
                "another program's schema: its migration 1 is 'their conversations', not 'notes'"),
            std::string::npos)
      << refused.error().message();
  auto again = Open(theirs);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->schema_version(), 1);
  EXPECT_EQ(Tables(*again, "notes"), 0);
  EXPECT_EQ(Tables(*again, "counters"), 0);
}

TEST_P(DatabaseEngineTest, MisnumberedMigrationsAreABug) {
  const std::vector<Migration> gap = {two()[0], {3, "gap", {"SELECT 1"}}};
  auto db = OpenRaw(gap);
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code(), ErrorCode::kInternal);
}

TEST_P(DatabaseEngineTest, ErrorOrExceptionRollsTheTransactionBack) {
  auto db = Open();
  Status refused = db->InTransaction([](Poco::Data::Session& s) -> Status {
    Exec(s, "INSERT INTO notes (text) VALUES ('first')");
    return Error(ErrorCode::kPermissionDenied, "not allowed");
  });
  EXPECT_EQ(refused.error().code(), ErrorCode::kPermissionDenied);
  Status thrown = db->InTransaction([](Poco::Data::Session& s) -> Status {
    Exec(s, "INSERT INTO notes (text) VALUES ('second')");
    Exec(s, "INSERT INTO notes (text) VALUES (NULL)");  // NOT NULL: throws
    return OkStatus();
  });
  ASSERT_FALSE(thrown.ok());
  EXPECT_EQ(thrown.error().code(), ErrorCode::kInternal);  // a constraint: ours, not transient
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 0);
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  Exec(s, "INSERT INTO notes (text) VALUES ('kept')");
                  return OkStatus();
                }).ok());
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 1);
}

// A read transaction's statements all see the snapshot of its first read: a write committed
// meanwhile (which does not wait for the reader) is seen by the next read transaction only. A
// failure in it is reported as InTransaction's, and the connection is used again.
TEST_P(DatabaseEngineTest, AReadTransactionSeesOneSnapshotAndHoldsUpNoWriter) {
  auto db = Open();
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  Exec(s, "INSERT INTO notes (text) VALUES ('before')");
                  return OkStatus();
                }).ok());
  std::vector<std::int64_t> seen;
  auto count = [&](Poco::Data::Session& s) {
    SqlStatement select = Database::Prepare(s, "SELECT COUNT(*) FROM notes");
    seen.push_back(select.Next() ? select.Int(0) : -1);
  };
  ASSERT_TRUE(db->InReadTransaction([&](Poco::Data::Session& s) -> Status {
                  count(s);
                  // Another thread's writer commits while this transaction is open.
                  Status wrote;
                  std::thread writer([&] {
                    wrote = db->InTransaction([](Poco::Data::Session& w) -> Status {
                      Exec(w, "INSERT INTO notes (text) VALUES ('during')");
                      return OkStatus();
                    });
                  });
                  writer.join();
                  EXPECT_TRUE(wrote.ok()) << wrote.error().ToString();
                  count(s);
                  return OkStatus();
                }).ok());
  EXPECT_EQ(seen, (std::vector<std::int64_t>{1, 1}));
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 2);

  Status failed = db->InReadTransaction([](Poco::Data::Session& s) -> Status {
    Exec(s, "SELECT no_such_column FROM notes");
    return OkStatus();
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kInternal);
  Status thrown = db->InReadTransaction(
      [](Poco::Data::Session&) -> Status { throw std::runtime_error("a bug"); });
  EXPECT_EQ(thrown.error().code(), ErrorCode::kInternal);
  Status refused = db->InReadTransaction(
      [](Poco::Data::Session&) -> Status { return Error(ErrorCode::kNotFound, "no such thing"); });
  EXPECT_EQ(refused.error().code(), ErrorCode::kNotFound);
  ASSERT_TRUE(db->InReadTransaction([&](Poco::Data::Session& s) -> Status {
                  count(s);
                  return OkStatus();
                }).ok());
  EXPECT_EQ(seen.back(), 2);
}

// A unit of work that swallows its statement's failure and reports success does not commit half
// of itself: PostgreSQL has rolled such a transaction back, and the commit says so.
TEST_P(DatabaseEngineTest, WorkThatSwallowsAFailedStatementCommitsNothingHalfDone) {
  auto db = Open();
  Status swallowed = db->InTransaction([](Poco::Data::Session& s) -> Status {
    Exec(s, "INSERT INTO notes (text) VALUES ('before')");
    try {
      Exec(s, "INSERT INTO notes (text) VALUES (NULL)");  // NOT NULL: throws
    } catch (const Poco::Exception&) {
      // ignored, wrongly
    }
    return OkStatus();
  });
  if (postgres()) {
    ASSERT_FALSE(swallowed.ok());
    EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 0);
  } else {
    // SQLite undoes the failed statement alone; the rest commits.
    ASSERT_TRUE(swallowed.ok());
    EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 1);
  }
}

// Several units of work in one transaction (a group commit): a unit that fails or throws is rolled
// back alone, and the transaction keeps the others' writes.
TEST_P(DatabaseEngineTest, AFailedSavepointRollsBackItsOwnWritesOnly) {
  auto db = Open();
  std::vector<Status> outcomes;
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                  outcomes.push_back(Database::InSavepoint(s, [](Poco::Data::Session& u) {
                    Exec(u, "INSERT INTO notes (text) VALUES ('first')");
                    return OkStatus();
                  }));
                  outcomes.push_back(Database::InSavepoint(s, [](Poco::Data::Session& u) {
                    Exec(u, "INSERT INTO notes (text) VALUES ('refused')");
                    Exec(u, "UPDATE counters SET value = 7");
                    return Status(Error(ErrorCode::kPermissionDenied, "not allowed"));
                  }));
                  outcomes.push_back(Database::InSavepoint(s, [](Poco::Data::Session& u) {
                    Exec(u, "INSERT INTO notes (text) VALUES ('thrown')");
                    Exec(u, "INSERT INTO notes (text) VALUES (NULL)");  // NOT NULL: throws
                    return OkStatus();
                  }));
                  outcomes.push_back(Database::InSavepoint(s, [](Poco::Data::Session& u) {
                    Exec(u, "INSERT INTO notes (text) VALUES ('last')");
                    return OkStatus();
                  }));
                  return OkStatus();
                }).ok());
  ASSERT_EQ(outcomes.size(), 4u);
  EXPECT_TRUE(outcomes[0].ok());
  EXPECT_EQ(outcomes[1].error().code(), ErrorCode::kPermissionDenied);
  ASSERT_FALSE(outcomes[2].ok());
  EXPECT_EQ(outcomes[2].error().code(), ErrorCode::kInternal);
  EXPECT_TRUE(outcomes[3].ok());
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 2);
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes WHERE text IN ('first', 'last')"), 2);
  EXPECT_EQ(Count(*db, "SELECT value FROM counters"), 0);
  // And a transaction whose work fails after a savepoint rolls the savepoint's writes back too.
  EXPECT_FALSE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                   SR_RETURN_IF_ERROR(Database::InSavepoint(s, [](Poco::Data::Session& u) {
                     Exec(u, "INSERT INTO notes (text) VALUES ('inner')");
                     return OkStatus();
                   }));
                   return Error(ErrorCode::kFailedPrecondition, "the whole transaction fails");
                 }).ok());
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 2);
}

// Read-modify-write transactions lose no update: by threads of one process, and by two processes
// (two Databases on one database, as two nodes would be).
TEST_P(DatabaseEngineTest, ConcurrentWritersAllCommit) {
  auto db = Open();
  auto other = Open();
  ASSERT_TRUE(db && other);
  constexpr int kThreads = 4, kEach = 25;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Database& mine = t % 2 == 0 ? *db : *other;
      for (int i = 0; i < kEach; ++i) {
        Status s = mine.InTransaction([](Poco::Data::Session& session) -> Status {
          std::int64_t value = 0;
          {
            SqlStatement select =
                Database::Prepare(session, "SELECT value FROM counters WHERE name = 'hits'");
            if (select.Next()) value = select.Int(0);
          }
          Database::Prepare(session, "UPDATE counters SET value = ? WHERE name = 'hits'")
              .Bind(value + 1)
              .Run();
          return OkStatus();
        });
        if (!s.ok()) {
          ++failures;
          ADD_FAILURE() << s.error().ToString();
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Count(*db, "SELECT value FROM counters WHERE name = 'hits'"), kThreads * kEach);
}

TEST_P(DatabaseEngineTest, AnUnreachableDatabaseIsUnavailable) {
  auto db = postgres() ? Database::OpenPostgres(
                             "host=" + (dir_ / "no-server").string() + " port=5432 dbname=x", two())
                       : Database::OpenSqlite((dir_ / "missing-dir" / "kms.db").string(), two());
  ASSERT_FALSE(db.ok());
  EXPECT_EQ(db.error().code(), ErrorCode::kUnavailable) << db.error().ToString();
}

TEST_P(DatabaseEngineTest, DeferredCommitsRelaxSyncOnlyForThemselves) {
  auto db = Open();
  std::string inside, after;
  ASSERT_TRUE(db->InTransaction(
                    [&](Poco::Data::Session& s) {
                      inside = CommitLevel(s);
                      return OkStatus();
                    },
                    Database::Durability::kDeferred)
                  .ok());
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) {
                  after = CommitLevel(s);
                  return OkStatus();
                }).ok());
  EXPECT_EQ(inside, "deferred");
  EXPECT_EQ(after, "full");  // full again on the pooled connection
  EXPECT_TRUE(db->SyncToDisk().ok());
  EXPECT_TRUE(db->CompactLog().ok());
}

// A connection remembers its level and is set only when a transaction needs another: on one
// connection, deferred and full commits in any order each run at their own level.
TEST_P(DatabaseEngineTest, EachCommitRunsAtItsOwnLevelOnOneConnection) {
  auto db = OpenWith(1);
  ASSERT_TRUE(db);
  for (Database::Durability durability :
       {Database::Durability::kDeferred, Database::Durability::kDeferred,
        Database::Durability::kFull, Database::Durability::kFull, Database::Durability::kDeferred,
        Database::Durability::kFull}) {
    std::string level;
    ASSERT_TRUE(db->InTransaction(
                      [&](Poco::Data::Session& s) {
                        level = CommitLevel(s);
                        Exec(s, "INSERT INTO notes (text) VALUES ('x')");
                        return OkStatus();
                      },
                      durability)
                    .ok());
    EXPECT_EQ(level, durability == Database::Durability::kFull ? "full" : "deferred");
  }
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 6);
}

TEST_P(DatabaseEngineTest, ManyWritersTakeTurnsInsteadOfFailingBusy) {
  // A busy timeout far above what 160 turns take (2 ms each, plus a commit of up to ~50 ms on a
  // loaded disk): the test is that writers wait their turn, not how fast the turns go (one writer
  // once waited past 2 s at a load average of 10).
  auto db = OpenWith(16, std::chrono::milliseconds(30000));
  ASSERT_TRUE(db);
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 16; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        Status s = db->InTransaction([&](Poco::Data::Session& session) {
          Database::Prepare(session, "INSERT INTO notes (id, text) VALUES (?, 'x')")
              .Bind(std::int64_t{t * 100 + i})
              .Run();
          std::this_thread::sleep_for(std::chrono::milliseconds(2));  // a slow transaction
          return OkStatus();
        });
        if (!s.ok()) ++failures;
      }
    });
  }
  for (std::thread& w : writers) w.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 160);
}

// --- statements, on both engines ---------------------------------

TEST_P(DatabaseEngineTest, AStatementIsCompiledOnceAndReboundAtEachUse) {
  auto db = OpenWith(1);
  ASSERT_TRUE(db);
  auto insert = [&](std::int64_t id) {
    return db->InTransaction([&](Poco::Data::Session& s) -> Status {
      Database::Prepare(s, kInsertNote).Bind(id).Bind("note " + std::to_string(id)).Run();
      return OkStatus();
    });
  };
  ASSERT_TRUE(insert(0).ok());  // compiles the insert (BEGIN and COMMIT were, by the migrations)
  const std::uint64_t compiled = db->statements_compiled();
  auto uses = db->KeptStatementUses();
  for (std::int64_t id = 1; id < 50; ++id) ASSERT_TRUE(insert(id).ok());
  EXPECT_EQ(db->statements_compiled(), compiled);  // nothing compiled again
  EXPECT_EQ(uses[kInsertNote], 1u);
  EXPECT_EQ(db->KeptStatementUses()[kInsertNote], 50u);
  if (!postgres()) {  // PostgreSQL's transaction control is sent as text (one round trip)
    EXPECT_EQ(db->KeptStatementUses()["BEGIN IMMEDIATE"], uses["BEGIN IMMEDIATE"] + 49);
    EXPECT_EQ(db->KeptStatementUses()["COMMIT"], uses["COMMIT"] + 49);
  }
  // Each use saw its own values, and none of an earlier use's.
  EXPECT_EQ(NoteText(*db, 0), "note 0");
  EXPECT_EQ(NoteText(*db, 37), "note 37");
  EXPECT_EQ(NoteText(*db, 49), "note 49");
  EXPECT_EQ(NoteText(*db, 50), "(none)");
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 50);
}

TEST_P(DatabaseEngineTest, ValuesOfEveryKindRoundTrip) {
  auto db = OpenWith(1);
  ASSERT_TRUE(db);
  const std::string blob("\0\x01\xff", 3);
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                  Exec(s, postgres() ? "CREATE TABLE kinds (i BIGINT, t TEXT, b BYTEA, n BIGINT, "
                                       "e TEXT)"
                                     : "CREATE TABLE kinds (i INTEGER, t TEXT, b BLOB, n INTEGER, "
                                       "e TEXT)");
                  Database::Prepare(s, "INSERT INTO kinds VALUES (?, ?, ?, ?, ?)")
                      .Bind(std::int64_t{INT64_MIN})
                      .Bind(std::string_view("caf\xc3\xa9"))
                      .BindBlob(blob)
                      .Bind(std::optional<std::int64_t>())
                      .Bind(std::string_view())  // empty text, not NULL
                      .Run();
                  return OkStatus();
                }).ok());
  ASSERT_TRUE(db->WithSession([&](Poco::Data::Session& s) -> Status {
                  SqlStatement row = Database::Prepare(
                      s, postgres() ? "SELECT i, t, b, n, e, e IS NULL, pg_typeof(b)::text, "
                                      "length(b) FROM kinds"
                                    : "SELECT i, t, b, n, e, e IS NULL, typeof(b), length(b) "
                                      "FROM kinds");
                  EXPECT_TRUE(row.Next());
                  EXPECT_EQ(row.Int(0), INT64_MIN);
                  EXPECT_EQ(row.Text(1), "caf\xc3\xa9");
                  const std::span<const std::uint8_t> bytes = row.Blob(2);
                  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), blob);
                  EXPECT_TRUE(row.IsNull(3));
                  EXPECT_EQ(row.OptionalInt(3), std::nullopt);
                  EXPECT_EQ(row.OptionalText(4), std::optional<std::string>(""));
                  EXPECT_EQ(row.Int(5), 0);
                  EXPECT_EQ(row.Text(6), postgres() ? "bytea" : "blob");
                  EXPECT_EQ(row.Int(7), 3);
                  EXPECT_FALSE(row.Next());
                  return OkStatus();
                }).ok());
}

// A kept statement whose table is dropped fails the work that uses it, as any statement would;
// the connection serves on, and the statement works again once the table is back.
TEST_P(DatabaseEngineTest, AStatementOnADroppedTableFailsItsWorkOnly) {
  auto db = OpenWith(1);
  ASSERT_TRUE(db);
  constexpr char kCount[] = "SELECT COUNT(*) FROM notes";
  auto count = [&](std::int64_t* n) {
    return db->WithSession([&](Poco::Data::Session& s) -> Status {
      SqlStatement select = Database::Prepare(s, kCount);
      if (select.Next()) *n = select.Int(0);
      return OkStatus();
    });
  };
  std::int64_t n = -1;
  ASSERT_TRUE(count(&n).ok());
  EXPECT_EQ(n, 0);
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  Exec(s, "DROP TABLE notes");
                  return OkStatus();
                }).ok());
  Status failed = count(&n);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kInternal);
  EXPECT_NE(
      failed.error().message().find(postgres() ? "\"notes\" does not exist" : "no such table"),
      std::string::npos)
      << failed.error().message();
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  Exec(s, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)");
                  Exec(s, "INSERT INTO notes (id, text) VALUES (1, 'again')");
                  return OkStatus();
                }).ok());
  n = -1;
  ASSERT_TRUE(count(&n).ok());
  EXPECT_EQ(n, 1);
}

// A failing statement rolls its transaction back and leaves its kept statement free for the next
// unit of work.
TEST_P(DatabaseEngineTest, AFailingStatementRollsBackAndIsUsedAgain) {
  auto db = OpenWith(1);
  ASSERT_TRUE(db);
  Status failed = db->InTransaction([&](Poco::Data::Session& s) -> Status {
    Database::Prepare(s, kInsertNote).Bind(1).Bind("kept?").Run();
    Database::Prepare(s, kInsertNote).Bind(2).BindNull().Run();  // NOT NULL: throws
    return OkStatus();
  });
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code(), ErrorCode::kInternal);
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 0);
  const std::uint64_t compiled = db->statements_compiled();
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                  Database::Prepare(s, kInsertNote).Bind(3).Bind("three").Run();
                  return OkStatus();
                }).ok());
  EXPECT_EQ(db->statements_compiled(), compiled);
  EXPECT_EQ(NoteText(*db, 3), "three");
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 1);
}

TEST_P(DatabaseEngineTest, WhatDoesNotCompileOrBindFailsTheWork) {
  auto db = OpenWith(1);
  ASSERT_TRUE(db);
  for (const char* sql : {"SELEC 1", "SELECT 1; SELECT 2", "", "SELECT * FROM missing"}) {
    Status failed = db->WithSession([&](Poco::Data::Session& s) -> Status {
      Database::Prepare(s, sql).Run();
      return OkStatus();
    });
    ASSERT_FALSE(failed.ok()) << sql;
    EXPECT_EQ(failed.error().code(), ErrorCode::kInternal) << sql;
  }
  Status too_many = db->WithSession([&](Poco::Data::Session& s) -> Status {
    Database::Prepare(s, kNoteText).Bind(1).Bind(2).Next();
    return OkStatus();
  });
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.error().code(), ErrorCode::kInternal);
  EXPECT_EQ(NoteText(*db, 1), "(none)");  // the connection serves on
}

// Another process (here another Database) holding what a statement must wait for past the busy
// timeout is UNAVAILABLE, as with Poco's statements, not an internal error: SQLite's write lock,
// PostgreSQL's lock on the row's key (lock_timeout).
TEST_P(DatabaseEngineTest, AStatementThatFindsTheDatabaseLockedIsUnavailable) {
  auto db = OpenWith(1, std::chrono::milliseconds(100));
  auto other = OpenWith(1);
  ASSERT_TRUE(db && other);
  std::mutex mutex;
  std::condition_variable changed;
  bool locked = false, done = false;
  std::thread holder([&] {
    (void)other->InTransaction([&](Poco::Data::Session& s) -> Status {
      Exec(s, "INSERT INTO notes (id, text) VALUES (9, 'holding')");
      std::unique_lock lock(mutex);
      locked = true;
      changed.notify_all();
      changed.wait(lock, [&] { return done; });
      return OkStatus();
    });
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return locked; });
  }
  Status busy = db->WithSession([&](Poco::Data::Session& s) -> Status {
    Database::Prepare(s, kInsertNote).Bind(9).Bind("nine").Run();
    return OkStatus();
  });
  {
    std::lock_guard lock(mutex);
    done = true;
  }
  changed.notify_all();
  holder.join();
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code(), ErrorCode::kUnavailable) << busy.error().message();
  EXPECT_EQ(NoteText(*db, 9), "holding");
}

// The same SQL leased again while its first lease lives (a statement run in the loop over another's
// rows) gets a statement of its own; both read their own rows.
TEST_P(DatabaseEngineTest, TheSameStatementLeasedTwiceAtOnceGetsTwo) {
  auto db = OpenWith(1);
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  Exec(s, "INSERT INTO notes (id, text) VALUES (1, 'a'), (2, 'b'), (3, 'c')");
                  return OkStatus();
                }).ok());
  constexpr char kFrom[] = "SELECT id, text FROM notes WHERE id >= ? ORDER BY id";
  std::vector<std::string> pairs;
  ASSERT_TRUE(db->WithSession([&](Poco::Data::Session& s) -> Status {
                  SqlStatement outer = Database::Prepare(s, kFrom);
                  outer.Bind(1);
                  while (outer.Next()) {
                    SqlStatement inner = Database::Prepare(s, kFrom);
                    inner.Bind(outer.Int(0) + 1);
                    std::string rest;
                    while (inner.Next()) rest += inner.Text(1);
                    pairs.push_back(outer.Text(1) + ":" + rest);
                  }
                  return OkStatus();
                }).ok());
  EXPECT_EQ(pairs, (std::vector<std::string>{"a:bc", "b:c", "c:"}));
  EXPECT_EQ(db->KeptStatementUses()[kFrom], 1u);  // the outer one; the inner ones were their own
}

// Statements are kept up to a bound; past it, each use compiles its own, which works the same.
TEST_P(DatabaseEngineTest, PastTheBoundStatementsAreCompiledForEachUse) {
  auto db = OpenWith(1);
  ASSERT_TRUE(db);
  constexpr std::int64_t kTexts = Database::kMaxKeptStatements + 20;
  ASSERT_TRUE(db->WithSession([&](Poco::Data::Session& s) -> Status {
                  for (std::int64_t i = 0; i < kTexts; ++i) {
                    SqlStatement select = Database::Prepare(s, "SELECT " + std::to_string(i));
                    EXPECT_TRUE(select.Next());
                    EXPECT_EQ(select.Int(0), i);
                  }
                  return OkStatus();
                }).ok());
  EXPECT_EQ(db->KeptStatementUses().size(), Database::kMaxKeptStatements);
}

// A session the Database did not hand to this thread's work (another Database's, or its own used
// from elsewhere) gets a statement compiled for that use, kept nowhere.
TEST_P(DatabaseEngineTest, ASessionOfNoWorkOfTheDatabaseGetsAStatementOfItsOwn) {
  auto db = OpenWith(1);
  auto other = OpenWith(1);
  ASSERT_TRUE(db && other);
  ASSERT_TRUE(db->InTransaction([&](Poco::Data::Session& s) -> Status {
                  Exec(s, "INSERT INTO notes (id, text) VALUES (5, 'five')");
                  return OkStatus();
                }).ok());
  std::string text;
  ASSERT_TRUE(other
                  ->WithSession([&](Poco::Data::Session& theirs) -> Status {
                    return db->WithSession([&](Poco::Data::Session&) -> Status {
                      // `theirs` is not the session of the work running now.
                      SqlStatement select = Database::Prepare(theirs, kNoteText);
                      if (select.Bind(5).Next()) text = select.Text(0);
                      return OkStatus();
                    });
                  })
                  .ok());
  EXPECT_EQ(text, "five");
  EXPECT_EQ(db->KeptStatementUses().count(kNoteText), 0u);
  EXPECT_EQ(other->KeptStatementUses().count(kNoteText), 0u);
}

// Several processes (nodes) opening one new database at once apply each migration once: each
// reads the schema version again inside the migration's transaction, which holds the write lock
// (on PostgreSQL the processes also take turns on an advisory lock of the migrations'). Four
// processes, released together, open a new database; on SQLite ten times over, since the race is
// short (before the fix, one or two of three opens failed in most runs: a migration applied
// twice).
TEST_P(DatabaseEngineTest, ProcessesOpeningTogetherMigrateOnce) {
  constexpr int kProcesses = 4;
  const int rounds = postgres() ? 1 : 10;
  for (int round = 0; round < rounds; ++round) {
    if (!postgres()) where_.target = (dir_ / ("new-" + std::to_string(round) + ".db")).string();
    const int opened = testing::RunProcessesTogether(kProcesses, [&](int) {
      auto db = OpenRaw(two());
      if (!db.ok()) std::fprintf(stderr, "%s\n", db.error().ToString().c_str());
      return db.ok();
    });
    EXPECT_EQ(opened, kProcesses) << "round " << round;
    auto db = Open();
    ASSERT_TRUE(db);
    EXPECT_EQ(db->schema_version(), 2);
    EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM schema_migrations"), 2);
    EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM counters"), 1);
  }
}

// --- PostgreSQL only
// ------------------------------------------------------------------------------

class PostgresDatabaseTest : public DatabaseEngineTest {};

INSTANTIATE_TEST_SUITE_P(Engines, PostgresDatabaseTest, ::testing::Values(Engine::kPostgres),
                         [](const ::testing::TestParamInfo<Engine>&) { return "postgres"; });

TEST_P(PostgresDatabaseTest, AConnectionStringThatDoesNotParseIsInvalid) {
  auto broken = Database::OpenPostgres("dbname='unterminated", two());
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.error().code(), ErrorCode::kInvalidArgument) << broken.error().ToString();
}

// A message naming the database never shows its password.
TEST_P(PostgresDatabaseTest, MessagesNameTheDatabaseWithoutItsPassword) {
  auto db = Database::OpenPostgres(
      "host=" + (dir_ / "no-server").string() + " dbname=keys password=s3cret-pw", two());
  ASSERT_FALSE(db.ok());
  EXPECT_NE(db.error().message().find("dbname=keys"), std::string::npos) << db.error().message();
  EXPECT_EQ(db.error().message().find("s3cret-pw"), std::string::npos) << db.error().message();
}

// The stores' work gets a Poco::Data::Session on both engines; on PostgreSQL it only holds the
// connection, and a Poco statement on it is refused with an error that says what to use.
// A node frozen inside a transaction (stopped, not dead: its connection stays open) would hold the
// writers' lock, and so every other node's writes, for as long as it stays frozen. The server ends
// such a transaction once it has been idle twice the busy timeout: the frozen work fails and
// leaves nothing, and the other node's write goes through.
TEST_P(PostgresDatabaseTest, ATransactionFrozenBetweenStatementsLosesTheWritersLock) {
  auto frozen = OpenWith(2, std::chrono::milliseconds(200));
  auto other = OpenWith(2, std::chrono::milliseconds(5000));
  ASSERT_TRUE(frozen && other);
  std::atomic<bool> holding{false};
  Status stalled;
  std::thread node([&] {
    stalled = frozen->InTransaction([&](Poco::Data::Session& s) -> Status {
      Exec(s, "INSERT INTO notes (text) VALUES ('from the frozen node')");
      holding = true;
      std::this_thread::sleep_for(std::chrono::seconds(2));  // frozen: no statement for 2 s
      Exec(s, "INSERT INTO notes (text) VALUES ('after waking up')");
      return OkStatus();
    });
  });
  while (!holding.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  Status written = other->InTransaction([](Poco::Data::Session& s) -> Status {
    Exec(s, "INSERT INTO notes (text) VALUES ('from the other node')");
    return OkStatus();
  });
  node.join();
  EXPECT_TRUE(written.ok()) << written.error().ToString();
  ASSERT_FALSE(stalled.ok());
  EXPECT_EQ(stalled.error().code(), ErrorCode::kUnavailable) << stalled.error().ToString();
  EXPECT_EQ(Count(*other, "SELECT COUNT(*) FROM notes"), 1);
}

TEST_P(PostgresDatabaseTest, APocoStatementIsRefusedWithAClearError) {
  auto db = Open();
  ASSERT_TRUE(db);
  Status refused = db->WithSession([](Poco::Data::Session& s) -> Status {
    int n = 0;
    s << "SELECT 1", into(n), now;
    return OkStatus();
  });
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("Database::Prepare"), std::string::npos)
      << refused.error().ToString();
  EXPECT_EQ(Count(*db, "SELECT 1"), 1);  // the connection is still good
}

// libpq is linked without LDAP (common/src/libpq_without_ldap.cc): a connection service whose
// entry is an ldap:// URL (pg_service.conf) is refused, as docs/operations/deployment.md says.
TEST_P(PostgresDatabaseTest, AnLdapServiceLookupIsRefused) {
  const std::string services = (dir_ / "pg_service.conf").string();
  std::ofstream(services) << "[directory]\n"
                             "ldap://127.0.0.1:1/dc=example,dc=com?uniqueMember?one?(cn=keys)\n";
  ASSERT_EQ(::setenv("PGSERVICEFILE", services.c_str(), 1), 0);
  auto db = Database::OpenPostgres("service=directory", two());
  ::unsetenv("PGSERVICEFILE");
  ASSERT_FALSE(db.ok());
  EXPECT_NE(db.error().message().find("LDAP"), std::string::npos) << db.error().ToString();
}

// A connection the server ended (a restart, a failover) fails the work that meets it UNAVAILABLE,
// is dropped, and the next unit of work runs on a new one.
TEST_P(PostgresDatabaseTest, ALostConnectionIsUnavailableAndReplacedNextTime) {
  auto db = OpenWith(1);
  auto admin = OpenWith(1);
  ASSERT_TRUE(db && admin);
  std::int64_t pid = Count(*db, "SELECT pg_backend_pid()");
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(
      admin
          ->WithSession([&](Poco::Data::Session& s) -> Status {
            Database::Prepare(s, "SELECT pg_terminate_backend(?::integer, 5000)").Bind(pid).Run();
            return OkStatus();
          })
          .ok());
  Status lost = db->InTransaction([](Poco::Data::Session& s) -> Status {
    Exec(s, "INSERT INTO notes (text) VALUES ('lost')");
    return OkStatus();
  });
  ASSERT_FALSE(lost.ok());
  EXPECT_EQ(lost.error().code(), ErrorCode::kUnavailable) << lost.error().ToString();
  ASSERT_TRUE(db->InTransaction([](Poco::Data::Session& s) -> Status {
                  Exec(s, "INSERT INTO notes (text) VALUES ('after')");
                  return OkStatus();
                }).ok());
  EXPECT_NE(Count(*db, "SELECT pg_backend_pid()"), pid);
  EXPECT_EQ(Count(*db, "SELECT COUNT(*) FROM notes"), 1);
}

// The writers of two processes take turns: the second waits for the first's commit, then reads
// what it wrote, so no update is lost.
TEST_P(DatabaseEngineTest, AWriterOfAnotherProcessWaitsForTheFirst) {
  auto db = Open();
  auto other = Open();
  ASSERT_TRUE(db && other);
  std::atomic<bool> other_done{false};
  std::thread increment;
  Status status = db->InTransaction([&](Poco::Data::Session& s) -> Status {
    std::int64_t value = 0;
    {
      SqlStatement select = Database::Prepare(s, "SELECT value FROM counters WHERE name = 'hits'");
      if (select.Next()) value = select.Int(0);
    }
    increment = std::thread([&] {
      EXPECT_TRUE(other
                      ->InTransaction([](Poco::Data::Session& o) -> Status {
                        std::int64_t seen = 0;
                        {
                          SqlStatement select = Database::Prepare(
                              o, "SELECT value FROM counters WHERE name = 'hits'");
                          if (select.Next()) seen = select.Int(0);
                        }
                        Database::Prepare(o, "UPDATE counters SET value = ? WHERE name = 'hits'")
                            .Bind(seen + 1)
                            .Run();
                        return OkStatus();
                      })
                      .ok());
      other_done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_FALSE(other_done.load());  // waiting for this transaction
    Database::Prepare(s, "UPDATE counters SET value = ? WHERE name = 'hits'").Bind(value + 1).Run();
    return OkStatus();
  });
  increment.join();
  ASSERT_TRUE(status.ok()) << status.error().ToString();
  EXPECT_TRUE(other_done.load());
  EXPECT_EQ(Count(*db, "SELECT value FROM counters WHERE name = 'hits'"), 2);
}

// The stores write one SQL text for both engines: `?` placeholders are numbered for PostgreSQL,
// except inside quotes and comments.
TEST_P(PostgresDatabaseTest, PlaceholdersInQuotesAndCommentsAreLeftAlone) {
  auto db = Open();
  ASSERT_TRUE(db);
  ASSERT_TRUE(db->WithSession([&](Poco::Data::Session& s) -> Status {
                  SqlStatement select = Database::Prepare(s,
                                                          "SELECT '?' || ?, \"?\" -- what?\n"
                                                          "FROM (SELECT ? AS \"?\") AS t");
                  EXPECT_TRUE(select.Bind("a").Bind("b").Next());
                  EXPECT_EQ(select.Text(0), "?a");
                  EXPECT_EQ(select.Text(1), "b");
                  return OkStatus();
                }).ok());
}

}  // namespace
}  // namespace strongroom
