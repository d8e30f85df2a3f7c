#include "strongroom/common/database.h"

#include <Poco/Data/SQLite/Connector.h>
#include <Poco/Data/SQLite/SQLiteException.h>
#include <Poco/Exception.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace strongroom {
namespace {

using Poco::Data::Keywords::into;
using Poco::Data::Keywords::now;
using Poco::Data::Keywords::use;

constexpr std::size_t kOpenTimeoutSeconds = 5;

void RegisterSqliteOnce() {
  static std::once_flag once;
  std::call_once(once, [] { Poco::Data::SQLite::Connector::registerConnector(); });
}

Error DatabaseError(const Poco::Exception& e, std::string_view what) {
  // Busy and locked databases are transient; everything else is a fault of ours or of the disk.
  const bool transient = dynamic_cast<const Poco::Data::SQLite::DBLockedException*>(&e) ||
                         dynamic_cast<const Poco::Data::SQLite::TableLockedException*>(&e) ||
                         dynamic_cast<const Poco::Data::SQLite::IOErrorException*>(&e) ||
                         dynamic_cast<const Poco::Data::SQLite::DatabaseFullException*>(&e);
  return Error(transient ? ErrorCode::kUnavailable : ErrorCode::kInternal,
               std::string(what) + ": " + e.displayText());
}

// One transaction: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any failure.
Status RunTransaction(Poco::Data::Session& session,
                      const std::function<Status(Poco::Data::Session&)>& work) {
  try {
    session << "BEGIN IMMEDIATE", now;
  } catch (const Poco::Exception& e) {
    return DatabaseError(e, "beginning a transaction");
  }
  Status status;
  try {
    status = work(session);
    if (status.ok()) {
      session << "COMMIT", now;
      return status;
    }
  } catch (const Poco::Exception& e) {
    status = DatabaseError(e, "database statement failed");
  } catch (const std::exception& e) {
    status = Error(ErrorCode::kInternal, std::string("transaction failed: ") + e.what());
  }
  try {
    session << "ROLLBACK", now;
  } catch (const Poco::Exception&) {
    // The transaction is gone either way; the error that caused the rollback is the one to report.
  }
  return status;
}

}  // namespace

Result<std::unique_ptr<Database>> Database::OpenSqlite(const std::string& path,
                                                       std::span<const Migration> migrations,
                                                       const DatabaseOptions& options) {
  RegisterSqliteOnce();
  const std::filesystem::path parent = std::filesystem::absolute(path).parent_path();
  std::error_code ec;
  if (!std::filesystem::is_directory(parent, ec)) {
    return Error(ErrorCode::kUnavailable, "cannot open database " + path + ": directory " +
                                              parent.string() + " does not exist");
  }
  if (options.max_sessions == 0) {
    return Error(ErrorCode::kInvalidArgument, "the database needs at least one session");
  }
  // A new database is made readable by its owner alone, whatever the umask (SQLite gives its
  // write-ahead log and shared-memory files the database file's mode).
  if (const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600); fd >= 0) {
    ::close(fd);
  } else if (errno != EEXIST) {
    return Error(ErrorCode::kUnavailable,
                 "cannot create database " + path + ": " + std::strerror(errno));
  }
  std::unique_ptr<Database> db(new Database(path, options.max_sessions, options.busy_timeout));
  Status opened = db->WithConnection([&](Poco::Data::Session& session) -> Status {
    // WAL lets readers run beside the one writer; FULL makes a committed transaction survive
    // power loss, not only a crash of the process.
    std::string mode;
    session << "PRAGMA journal_mode=WAL", into(mode), now;
    if (mode != "wal") {
      return Error(
          ErrorCode::kFailedPrecondition,
          "database " + path + " cannot use write-ahead logging (journal mode " + mode + ")");
    }
    session << "PRAGMA synchronous=FULL", now;
    return Migrate(session, migrations, &db->schema_version_);
  });
  if (!opened.ok()) return opened.error();
  return db;
}

Database::Database(std::string connect_string, std::size_t max_sessions,
                   std::chrono::milliseconds busy_timeout)
    : connect_string_(std::move(connect_string)),
      max_sessions_(max_sessions),
      busy_timeout_pragma_("PRAGMA busy_timeout=" + std::to_string(busy_timeout.count())),
      busy_timeout_(busy_timeout) {}

Database::~Database() = default;

Status Database::WithConnection(const std::function<Status(Poco::Data::Session&)>& work) {
  std::unique_ptr<Poco::Data::Session> session;
  {
    std::unique_lock lock(mutex_);
    available_.wait(lock, [&] { return !idle_.empty() || open_ < max_sessions_; });
    if (!idle_.empty()) {
      session = std::move(idle_.back());
      idle_.pop_back();
    } else {
      ++open_;
    }
  }
  if (!session) {
    try {
      // Poco retries a failing open until its login timeout (60 s by default): keep it short.
      session = std::make_unique<Poco::Data::Session>(Poco::Data::SQLite::Connector::KEY,
                                                      connect_string_, kOpenTimeoutSeconds);
      // A writer waits this long for another writer's lock instead of failing at once;
      // references between tables are enforced (SQLite leaves them off per connection); and
      // what a write deletes or moves is overwritten with zeros (see the header).
      *session << busy_timeout_pragma_, now;
      *session << "PRAGMA foreign_keys=ON", now;
      *session << "PRAGMA secure_delete=ON", now;
    } catch (const Poco::Exception& e) {
      std::lock_guard lock(mutex_);
      --open_;
      available_.notify_one();
      return Error(ErrorCode::kUnavailable,
                   "cannot open database " + connect_string_ + ": " + e.displayText());
    }
  }
  Status status;
  bool healthy = true;
  try {
    status = work(*session);
  } catch (const Poco::Exception& e) {
    status = DatabaseError(e, "database statement failed");
  }
  try {
    healthy = session->isConnected();
  } catch (const Poco::Exception&) {
    healthy = false;
  }
  std::lock_guard lock(mutex_);
  if (healthy) {
    idle_.push_back(std::move(session));
  } else {
    --open_;
  }
  available_.notify_one();
  return status;
}

Status Database::Migrate(Poco::Data::Session& session, std::span<const Migration> migrations,
                         int* version) {
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version != static_cast<int>(i) + 1) {
      return Error(ErrorCode::kInternal, "migrations must be numbered 1, 2, 3, ... in order");
    }
  }
  session << "CREATE TABLE IF NOT EXISTS schema_migrations ("
             "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)",
      now;
  int current = 0;
  session << "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", into(current), now;
  if (current > static_cast<int>(migrations.size())) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the database is at schema version " + std::to_string(current) +
                     ", newer than this program knows (" + std::to_string(migrations.size()) +
                     "); run the newer Strongroom or restore a matching backup");
  }
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    SR_RETURN_IF_ERROR(RunTransaction(session, [&](Poco::Data::Session& s) -> Status {
      for (const std::string& statement : m.statements) s << statement, now;
      int v = m.version;
      std::string description = m.description;
      s << "INSERT INTO schema_migrations (version, description, applied_at) "
           "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
          use(v), use(description), now;
      return OkStatus();
    }));
    current = m.version;
  }
  *version = current;
  return OkStatus();
}

Status Database::InTransaction(const std::function<Status(Poco::Data::Session&)>& work,
                               Durability durability) {
  std::unique_lock writer(writer_, std::defer_lock);
  if (!writer.try_lock_for(busy_timeout_)) {
    return Error(ErrorCode::kUnavailable, "the database is busy with other writers; retry later");
  }
  return WithConnection([&](Poco::Data::Session& session) -> Status {
    if (durability == Durability::kFull) return RunTransaction(session, work);
    // The setting belongs to the pooled connection: put it back whatever happens.
    try {
      session << "PRAGMA synchronous=NORMAL", now;
    } catch (const Poco::Exception& e) {
      return DatabaseError(e, "relaxing synchronous");
    }
    Status status = RunTransaction(session, work);
    try {
      session << "PRAGMA synchronous=FULL", now;
    } catch (const Poco::Exception& e) {
      // A connection left at NORMAL must not go back to the pool: closed, it is dropped.
      session.close();
      return status.ok() ? DatabaseError(e, "restoring synchronous") : status;
    }
    return status;
  });
}

Status Database::CompactLog() {
  std::unique_lock writer(writer_, std::defer_lock);
  if (!writer.try_lock_for(busy_timeout_)) {
    return Error(ErrorCode::kUnavailable, "the database is busy with other writers");
  }
  return WithConnection([&](Poco::Data::Session& session) -> Status {
    // One row: whether readers kept the checkpoint from completing, then the log's frames and
    // those copied.
    int busy = 0, frames = 0, copied = 0;
    try {
      session << "PRAGMA wal_checkpoint(TRUNCATE)", into(busy), into(frames), into(copied), now;
    } catch (const Poco::Exception& e) {
      return DatabaseError(e, "compacting the log");
    }
    if (busy != 0) {
      return Error(ErrorCode::kUnavailable,
                   "the log was not emptied: a reader still uses it; try again");
    }
    return OkStatus();
  });
}

Status Database::SyncToDisk() {
  return WithConnection([&](Poco::Data::Session& session) -> Status {
    try {
      session << "PRAGMA wal_checkpoint(PASSIVE)", now;
    } catch (const Poco::Exception& e) {
      return DatabaseError(e, "checkpointing the log");
    }
    return OkStatus();
  });
}

Status Database::WithSession(const std::function<Status(Poco::Data::Session&)>& work) {
  return WithConnection(work);
}

}  // namespace strongroom
