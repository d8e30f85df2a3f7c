// A service's relational store (the KMS's and the core's), reached through Poco::Data: SQLite in
// WAL mode as the embedded default (OpenSqlite), or PostgreSQL 15 for deployments that outgrow one
// machine (OpenPostgres), behind the same interface. A store writes its DML once, in the SQL both
// engines accept (`?` placeholders, INSERT ... ON CONFLICT, RETURNING), and names one list of
// migrations per engine (their DDL differs: BLOB/BYTEA, INTEGER/BIGINT).
//
// Schema changes are numbered migrations applied in order, each in its own transaction together
// with the row recording it in `schema_migrations` (its SQL statements, then its `convert` step
// for what SQL alone cannot express, such as re-encoding rows; on PostgreSQL through Prepare), the
// version read again inside it so that processes opening one database at once apply each once; a
// database written by a newer Strongroom (a version this code does not know) is refused rather than
// touched; after applying migrations the write-ahead log is emptied (a TRUNCATE checkpoint), so
// that what they deleted is gone from the database file and the log when OpenSqlite returns. Every
// unit of work runs in one transaction (`InTransaction`), begun IMMEDIATE so concurrent writers
// wait for each other (busy timeout) instead of failing on a lock upgrade; a failed or throwing
// unit rolls back and leaves nothing behind.
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
//
// Each pooled connection keeps the statements its units of work prepared (Prepare,
// sql_statement.h), keyed by their SQL text, and its transaction control (BEGIN, COMMIT, the
// durability pragmas), compiled once: a statement is compiled at its first use on a connection and
// re-bound at every later one. SQLite compiles a kept statement again by itself when the schema
// changed under it; the statements are finalized with their connection, before it closes.
//
// PostgreSQL: the same pool of connections (sessions of ours on libpq connections, which refuse
// Poco statements: every statement goes through Prepare). A kept statement is a named prepared
// statement of its connection (PQprepare once, PQexecPrepared at each use), its `?` numbered `$1,
// $2, ...` once when it is prepared; values go as text, blobs as binary. The migrations of several
// processes opening one database at once take turns on an advisory lock. Durability kFull commits
// with synchronous_commit on, kDeferred sets it off for that transaction alone (SET LOCAL);
// SyncToDisk commits one transaction with it on, which flushes the log past every deferred commit;
// CompactLog has nothing to do (the server's checkpointer recycles its log). PostgreSQL has no
// secure_delete: what a write deletes stays in the table's pages until VACUUM reuses them and in
// the server's log until it is recycled. Connections are set to a lock_timeout of the busy timeout,
// and to an idle_in_transaction_session_timeout of twice it: a process frozen inside a transaction
// (stopped, not dead) loses it instead of holding the writers' lock, and every node's writes.
//
// Isolation: the same on both engines. A write transaction (InTransaction) runs alone: on SQLite
// it begins IMMEDIATE, taking the database's one write lock; on PostgreSQL it begins at READ
// COMMITTED and first takes one transaction-scoped advisory lock of the database's, so that the
// writers of every process (every node) take turns, and each statement of a transaction sees every
// write committed before that transaction began to write. Within one process, writers queue on the
// writer mutex before either. So the stores' read-modify-write transactions need no row locks and
// `work` runs once. A read outside a transaction (WithSession) sees one committed snapshot per
// statement and waits for no writer; the reads of InReadTransaction share one snapshot (on
// PostgreSQL REPEATABLE READ, which a read-only transaction may use without serialization
// failures), and wait for no writer either. Chosen over SERIALIZABLE with a retry of the whole work
// on a serialization failure: two processes incrementing one row lost 4 of 100 increments after 8
// attempts each (a transaction that keeps losing to the other's short ones), and a retry would have
// had every store's work made repeatable; the cost is that writes do not run in parallel on
// several nodes, as they do not on one.
//
// Errors. Busy and locked (SQLite), and on PostgreSQL a server refused, lost or shutting down
// (class 08, 57P), out of resources (53), a lock not granted within the busy timeout (55P03,
// the writers' lock included) or a transaction conflict (40001, 40P01), are UNAVAILABLE; a lost
// connection is dropped from the pool and a new one is opened by the next unit of work. Everything
// else (constraint violations, SQL that does not compile) is INTERNAL.
#ifndef STRONGROOM_COMMON_DATABASE_H_
#define STRONGROOM_COMMON_DATABASE_H_

#include <Poco/Data/Session.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strongroom/common/error.h"
#include "strongroom/common/secret_bytes.h"
#include "strongroom/common/sql_statement.h"

namespace strongroom {

struct Migration {
  int version;                          // 1, 2, 3, ... in order, no gaps
  std::string description;              // for operators: what the migration does
  std::vector<std::string> statements;  // executed in order, in one transaction
  // Run after the statements, in the same transaction; it fails by throwing (a Poco::Data
  // exception, or any std::exception), which rolls the migration back.
  std::function<void(Poco::Data::Session&)> convert = {};
};

struct DatabaseOptions {
  std::size_t max_sessions = 16;
  std::chrono::milliseconds busy_timeout{5000};
  // PostgreSQL: the password libpq sends, over any the connection string holds (shared, so that
  // copies of the options hold one zeroized copy of it); null: none (or libpq's .pgpass).
  std::shared_ptr<const SecretBytes> password;
};

class Database {
 public:
  // Opens (creating if absent) the SQLite database at `path` and brings it to the newest
  // migration.
  static Result<std::unique_ptr<Database>> OpenSqlite(const std::string& path,
                                                      std::span<const Migration> migrations,
                                                      const DatabaseOptions& options = {});
  // Connects to the PostgreSQL database `conninfo` names (libpq's "host=... dbname=..." or a
  // postgresql:// URI; connect_timeout defaults to 5 s for both forms; a `service` looked up at an
  // ldap:// URL is refused: libpq is linked without LDAP) and brings it to the newest of
  // `migrations`, PostgreSQL's own list. A server out of reach is UNAVAILABLE; a connection string
  // that does not parse is INVALID_ARGUMENT; messages name the host, port, database and user,
  // never a password.
  static Result<std::unique_ptr<Database>> OpenPostgres(const std::string& conninfo,
                                                        std::span<const Migration> migrations,
                                                        const DatabaseOptions& options = {});
  // How messages name the PostgreSQL database `conninfo` reaches: "PostgreSQL host=... port=...
  // dbname=... user=...", never a password.
  static std::string DescribePostgres(const std::string& conninfo);

  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  int schema_version() const { return schema_version_; }

  enum class Engine { kSqlite, kPostgres };
  Engine engine() const { return engine_; }

  // How a commit reaches the disk. kFull: the commit is fsynced before InTransaction returns
  // (survives power loss). kDeferred: the commit is atomic and survives a crash of this process
  // at once, but reaches the disk with the next full commit or SyncToDisk() (SQLite WAL with
  // synchronous=NORMAL; PostgreSQL's synchronous_commit off, which the server's log writer flushes
  // within 0.6 s by itself); for records whose callers must not each wait for a disk flush.
  enum class Durability { kFull, kDeferred };

  // Runs `work` in one transaction: committed if it returns OK, rolled back if it returns an
  // error or throws. Database errors become UNAVAILABLE (busy, I/O) or INTERNAL.
  Status InTransaction(const std::function<Status(Poco::Data::Session&)>& work,
                       Durability durability = Durability::kFull);

  // Runs `work` inside the caller's transaction (`session` is the one InTransaction gave), in a
  // savepoint of its own: its writes stay if it returns OK, and are rolled back, alone, if it
  // returns an error or throws (errors as InTransaction's). The caller's transaction goes on either
  // way; so a group commit can hold the writes of several requests and fail only the one that
  // failed. Throws when the savepoint cannot be begun, released or rolled back to: the caller's
  // transaction is then unusable and must fail as a whole.
  static Status InSavepoint(Poco::Data::Session& session,
                            const std::function<Status(Poco::Data::Session&)>& work);

  // Flushes deferred commits to the disk: an fsync of the write-ahead log (a passive checkpoint,
  // which syncs the log first, on a connection that has not opened it yet). Runs beside a writer's
  // transaction without holding it up.
  Status SyncToDisk();

  // Copies the whole write-ahead log into the database and empties it (TRUNCATE checkpoint),
  // waiting briefly for readers to move off it (UNAVAILABLE when they stayed: the log may be left
  // partly copied and not emptied). Under constant load the log never runs empty on its own
  // (checkpoint starvation), so a background thread calls this every few seconds.
  Status CompactLog();

  // Runs `work` on a session outside any explicit transaction (single read statements).
  Status WithSession(const std::function<Status(Poco::Data::Session&)>& work);

  // Whether the database answers now: a `SELECT 1` on a pooled connection (what the daemons'
  // /health reports). UNAVAILABLE when it does not, as every request that needs it meets meanwhile.
  Status Ping();

  // Runs `work`'s reads in one transaction that sees one committed snapshot throughout (a page
  // and the rows it joins, read by several statements, agree with each other): on SQLite a
  // deferred transaction (its snapshot taken at the first read), on PostgreSQL a READ ONLY
  // REPEATABLE READ one (taken at its first statement). For reads alone: it takes no writers'
  // lock, and writers do not wait for it. It ends when `work` returns or throws; errors as
  // InTransaction's.
  Status InReadTransaction(const std::function<Status(Poco::Data::Session&)>& work);

  // The statement `sql` on `session`, for the unit of work that runs on it (sql_statement.h): the
  // connection's compiled statement for that text when `session` is the one this thread's
  // InTransaction or WithSession work was given, compiled now and kept if it is the first use
  // there; otherwise (a session of no Database, or the same SQL already leased) a statement
  // compiled for this use alone. Throws as a Poco statement does when `sql` does not compile.
  static SqlStatement Prepare(Poco::Data::Session& session, std::string_view sql);

  // How many statements Prepare and the transaction control compiled since the Database opened,
  // and, per SQL text, how often the idle connections' kept statements were used: what shows
  // that statements are compiled once (tests; a connection in use is not counted).
  std::uint64_t statements_compiled() const { return statements_compiled_.load(); }
  std::map<std::string, std::uint64_t> KeptStatementUses();

  // At most this many statements are kept per connection; others are compiled for each use.
  static constexpr std::size_t kMaxKeptStatements = 128;

 private:
  class Connection;
  // `description` names the database in messages (for PostgreSQL, without a password).
  Database(Engine engine, std::string connect_string, std::string description,
           const DatabaseOptions& options);
  static Status Migrate(Connection& connection, std::span<const Migration> migrations,
                        int* version);
  static Status ApplyMigrations(Connection& connection, std::span<const Migration> migrations,
                                int* version);
  static Status RunTransaction(Connection& connection,
                               const std::function<Status(Poco::Data::Session&)>& work,
                               Durability durability = Durability::kFull);
  static Status RunPostgresTransaction(Connection& connection,
                                       const std::function<Status(Poco::Data::Session&)>& work,
                                       Durability durability);
  Status OpenPostgresConnection(std::unique_ptr<Connection>* connection);
  // The connection whose work runs on this thread, if any.
  static Connection*& Current();
  // Runs `work` on a pooled connection, opening one if fewer than max_sessions exist; one already
  // at `durability`'s synchronous level if there is one idle.
  Status WithConnection(std::optional<Durability> durability,
                        const std::function<Status(Connection&)>& work);

  const Engine engine_;
  const std::string connect_string_;
  const std::string description_;
  const std::size_t max_sessions_;
  const std::string busy_timeout_pragma_;
  const std::shared_ptr<const SecretBytes> password_;  // PostgreSQL's, if the options gave one
  int schema_version_ = 0;

  // Writers queue here, in this process, instead of in SQLite's busy handler (which sleeps and
  // retries, so under load a writer can wait seconds while others barge in).
  std::timed_mutex writer_;
  const std::chrono::milliseconds busy_timeout_;

  std::atomic<std::uint64_t> statements_compiled_{0};

  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_ = 0;
};

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_DATABASE_H_
