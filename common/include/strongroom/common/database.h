// A service's relational store (the KMS's and the core's), reached through Poco::Data: SQLite in
// WAL mode as the embedded default (PostgreSQL, for several nodes, implements the same interface
// later).
//
// Schema changes are numbered migrations applied in order, each in its own transaction together
// with the row recording it in `schema_migrations`; a database written by a newer Strongroom (a
// version this code does not know) is refused rather than touched. Every unit of work runs in one
// transaction (`InTransaction`), begun IMMEDIATE so concurrent writers wait for each other
// (busy timeout) instead of failing on a lock upgrade; a failed or throwing unit rolls back and
// leaves nothing behind.
//
// Deleted data does not linger in the database file: every connection runs with SQLite's
// secure_delete, so what a write deletes or overwrites, and the stale copies a page split or merge
// leaves behind, are overwritten with zeros (it must be on for every write: a copy left by a split
// made without it is not reached by a later secure delete). The write-ahead log still holds the
// frames that wrote the old data until it is emptied (CompactLog).
//
// Thread-safe: connections come from a bounded pool of the Database's own, one per unit of work
// (Poco::Data::SessionPool's janitor timer deadlocks against its destructor in Poco 1.11). Write
// transactions of one process take turns on a mutex (bounded by the busy timeout) before they
// begin, so SQLite's sleeping busy handler is only met by other processes (kmsctl).
#ifndef STRONGROOM_COMMON_DATABASE_H_
#define STRONGROOM_COMMON_DATABASE_H_

#include <Poco/Data/Session.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"

namespace strongroom {

struct Migration {
  int version;                          // 1, 2, 3, ... in order, no gaps
  std::string description;              // for operators: what the migration does
  std::vector<std::string> statements;  // executed in order, in one transaction
};

struct DatabaseOptions {
  std::size_t max_sessions = 16;
  std::chrono::milliseconds busy_timeout{5000};
};

class Database {
 public:
  // Opens (creating if absent) the SQLite database at `path` and brings it to the newest
  // migration.
  static Result<std::unique_ptr<Database>> OpenSqlite(const std::string& path,
                                                      std::span<const Migration> migrations,
                                                      const DatabaseOptions& options = {});
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  int schema_version() const { return schema_version_; }

  // How a commit reaches the disk. kFull: the commit is fsynced before InTransaction returns
  // (survives power loss). kDeferred: the commit is atomic and survives a crash of this process
  // at once, but reaches the disk with the next full commit or SyncToDisk() (SQLite WAL with
  // synchronous=NORMAL); for records whose callers must not each wait for a disk flush.
  enum class Durability { kFull, kDeferred };

  // Runs `work` in one transaction: committed if it returns OK, rolled back if it returns an
  // error or throws. Database errors become UNAVAILABLE (busy, I/O) or INTERNAL.
  Status InTransaction(const std::function<Status(Poco::Data::Session&)>& work,
                       Durability durability = Durability::kFull);

  // Flushes deferred commits to the disk (a passive WAL checkpoint, which syncs the log first).
  Status SyncToDisk();

  // Copies the whole write-ahead log into the database and empties it (TRUNCATE checkpoint),
  // waiting briefly for readers to move off it (UNAVAILABLE when they stayed: the log may be left
  // partly copied and not emptied). Under constant load the log never runs empty on its own
  // (checkpoint starvation), so a background thread calls this every few seconds.
  Status CompactLog();

  // Runs `work` on a session outside any explicit transaction (single read statements).
  Status WithSession(const std::function<Status(Poco::Data::Session&)>& work);

 private:
  class Connection;
  Database(std::string connect_string, std::size_t max_sessions,
           std::chrono::milliseconds busy_timeout);
  static Status Migrate(Poco::Data::Session& session, std::span<const Migration> migrations,
                        int* version);
  // Runs `work` on a pooled connection, opening one if fewer than max_sessions exist.
  Status WithConnection(const std::function<Status(Poco::Data::Session&)>& work);

  const std::string connect_string_;
  const std::size_t max_sessions_;
  const std::string busy_timeout_pragma_;
  int schema_version_ = 0;

  // Writers queue here, in this process, instead of in SQLite's busy handler (which sleeps and
  // retries, so under load a writer can wait seconds while others barge in).
  std::timed_mutex writer_;
  const std::chrono::milliseconds busy_timeout_;

  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Poco::Data::Session>> idle_;
  std::size_t open_ = 0;
};

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_DATABASE_H_
