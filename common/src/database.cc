#include "strongroom/common/database.h"

#include <Poco/Data/DataException.h>
#include <Poco/Data/SQLite/Connector.h>
#include <Poco/Data/SQLite/SQLiteException.h>
#include <Poco/Data/SQLite/Utility.h>
#include <Poco/Exception.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include "postgres_session.h"
#include "postgres_statement.h"
#include "strongroom/common/rfc3339.h"

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

// The advisory lock every write transaction takes first on PostgreSQL: writers of every process
// (node) take turns, as SQLite's do (BEGIN IMMEDIATE).
constexpr char kWriterLock[] = "SELECT pg_advisory_xact_lock(7732598152078)";

// An advisory lock key of the migrations' own: two processes opening one database at once apply
// each migration once.
constexpr char kMigrationLock[] = "SELECT pg_advisory_lock(7732598152077)";
constexpr char kMigrationUnlock[] = "SELECT pg_advisory_unlock(7732598152077)";

}  // namespace

std::string Database::DescribePostgres(const std::string& conninfo) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &error);
  if (options == nullptr) {
    PQfreemem(error);
    return "PostgreSQL (an unreadable connection string)";
  }
  std::string described = "PostgreSQL";
  for (const std::string_view wanted : {"host", "hostaddr", "port", "dbname", "user"}) {
    for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
      if (o->val != nullptr && wanted == o->keyword) {
        described += std::string(" ") + o->keyword + "=" + o->val;
      }
    }
  }
  PQconninfoFree(options);
  return described;
}

namespace {

// Changed pages a write transaction holds in memory before it writes them to the log early:
// 32 MiB of 4 KiB pages.
constexpr int kSpillPages = 8192;

Error DatabaseError(const Poco::Exception& e, std::string_view what) {
  // Busy and locked databases are transient, and so is a PostgreSQL server out of reach;
  // everything else is a fault of ours or of the disk.
  const auto* postgres = dynamic_cast<const PostgresError*>(&e);
  const bool transient = (postgres != nullptr && postgres->unavailable()) ||
                         dynamic_cast<const Poco::Data::SQLite::DBLockedException*>(&e) ||
                         dynamic_cast<const Poco::Data::SQLite::TableLockedException*>(&e) ||
                         dynamic_cast<const Poco::Data::SQLite::IOErrorException*>(&e) ||
                         dynamic_cast<const Poco::Data::SQLite::DatabaseFullException*>(&e);
  return Error(transient ? ErrorCode::kUnavailable : ErrorCode::kInternal,
               std::string(what) + ": " + e.displayText());
}

// Compiles one statement on `db`; throws as a Poco statement would when it does not compile, or
// when `sql` is not exactly one statement.
sqlite3_stmt* Compile(sqlite3* db, std::string_view sql, bool kept) {
  sqlite3_stmt* stmt = nullptr;
  const char* tail = nullptr;
  const int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                                    kept ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, &tail);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    Poco::Data::SQLite::Utility::throwException(db, rc, "compiling a statement");
  }
  const char* end = sql.data() + sql.size();
  while (tail != nullptr && tail < end && std::isspace(static_cast<unsigned char>(*tail))) ++tail;
  if (stmt == nullptr || (tail != nullptr && tail < end)) {
    sqlite3_finalize(stmt);
    throw Poco::Data::DataException("a prepared statement is one SQL statement");
  }
  return stmt;
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const {
    return std::hash<std::string_view>{}(text);
  }
};

}  // namespace

struct SqlStatement::Handle {
  sqlite3* db = nullptr;
  sqlite3_stmt* stmt = nullptr;
  bool in_use = false;
  int next_parameter = 1;
  std::uint64_t uses = 0;
  std::unique_ptr<PostgresStatement> pg;  // instead of db and stmt, on PostgreSQL
};

// A pooled connection: its session, and the statements kept on it (finalized before it closes).
class Database::Connection {
 public:
  Connection(std::unique_ptr<Poco::Data::Session> session, std::atomic<std::uint64_t>& compiled)
      : session_(std::move(session)),
        pg_(PostgresHandle(*session_)),
        db_(pg_ == nullptr ? Poco::Data::SQLite::Utility::dbHandle(*session_) : nullptr),
        compiled_(compiled) {}
  ~Connection() { Close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Poco::Data::Session& session() { return *session_; }
  sqlite3* db() const { return db_; }
  PGconn* pg() const { return pg_; }
  bool healthy() {
    // A PostgreSQL connection that was lost, or left inside a transaction, is not used again.
    if (pg_ != nullptr) {
      return PQstatus(pg_) == CONNECTION_OK && PQtransactionStatus(pg_) == PQTRANS_IDLE;
    }
    try {
      return session_->isConnected();
    } catch (const Poco::Exception&) {
      return false;
    }
  }

  // This connection's statement for `sql`: kept (compiled at its first use), or compiled for this
  // use alone when it is leased already or too many are kept.
  SqlStatement Lease(std::string_view sql) {
    auto found = kept_.find(sql);
    if (found == kept_.end() && kept_.size() < kMaxKeptStatements) {
      SqlStatement::Handle handle;
      if (pg_ != nullptr) {
        // Named after its place among the connection's statements, which are never dropped.
        handle.pg =
            std::make_unique<PostgresStatement>(pg_, "sr_" + std::to_string(kept_.size() + 1), sql);
      } else {
        handle.db = db_;
        handle.stmt = Compile(db_, sql, /*kept=*/true);
      }
      compiled_.fetch_add(1, std::memory_order_relaxed);
      found = kept_.emplace(std::string(sql), std::move(handle)).first;
    }
    if (found != kept_.end() && !found->second.in_use) {
      SqlStatement::Handle& handle = found->second;
      handle.in_use = true;
      ++handle.uses;
      return SqlStatement(&handle, /*owned=*/false);
    }
    SqlStatement statement = OneUse(session_.get(), sql);
    compiled_.fetch_add(1, std::memory_order_relaxed);
    return statement;
  }

  // A statement for one use on `session` (a pooled connection's or not), finalized at its end.
  static SqlStatement OneUse(Poco::Data::Session* session, std::string_view sql) {
    auto handle = std::make_unique<SqlStatement::Handle>();
    handle->in_use = true;
    if (PGconn* pg = PostgresHandle(*session); pg != nullptr) {
      handle->pg = std::make_unique<PostgresStatement>(pg, std::string(), sql);
    } else {
      handle->db = Poco::Data::SQLite::Utility::dbHandle(*session);
      handle->stmt = Compile(handle->db, sql, /*kept=*/false);
    }
    return SqlStatement(handle.release(), /*owned=*/true);
  }

  // Executes a statement that is compiled for each use: one whose work SQLite does as it compiles
  // it (PRAGMA synchronous=...), which a kept statement would not do again.
  void ExecuteOnce(const char* sql) {
    sqlite3_stmt* stmt = Compile(db_, sql, /*kept=*/false);
    compiled_.fetch_add(1, std::memory_order_relaxed);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) Poco::Data::SQLite::Utility::throwException(db_, rc, sql);
  }

  void CountUses(std::map<std::string, std::uint64_t>& uses) const {
    for (const auto& [sql, handle] : kept_) uses[sql] += handle.uses;
  }

  // Finalizes the kept statements, then closes the session (SQLite closes a connection only once
  // its statements are gone).
  void Close() {
    for (auto& [sql, handle] : kept_) sqlite3_finalize(handle.stmt);  // none on PostgreSQL
    kept_.clear();
    try {
      session_->close();
    } catch (const Poco::Exception&) {
      // closed either way
    }
  }

  // The level of PRAGMA synchronous this connection was last set to.
  Durability durability = Durability::kFull;

 private:
  std::unique_ptr<Poco::Data::Session> session_;
  PGconn* const pg_;
  sqlite3* const db_;
  std::atomic<std::uint64_t>& compiled_;
  std::unordered_map<std::string, SqlStatement::Handle, StringHash, std::equal_to<>> kept_;
};

// One transaction: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any failure; the three statements
// kept on the connection.
Status Database::RunTransaction(Connection& connection,
                                const std::function<Status(Poco::Data::Session&)>& work,
                                Durability durability) {
  if (connection.pg() != nullptr) return RunPostgresTransaction(connection, work, durability);
  try {
    connection.Lease("BEGIN IMMEDIATE").Run();
  } catch (const Poco::Exception& e) {
    return DatabaseError(e, "beginning a transaction");
  }
  Status status;
  try {
    status = work(connection.session());
    if (status.ok()) {
      connection.Lease("COMMIT").Run();
      return status;
    }
  } catch (const Poco::Exception& e) {
    status = DatabaseError(e, "database statement failed");
  } catch (const std::exception& e) {
    status = Error(ErrorCode::kInternal, std::string("transaction failed: ") + e.what());
  }
  try {
    connection.Lease("ROLLBACK").Run();
  } catch (const Poco::Exception&) {
    // The transaction is gone either way; the error that caused the rollback is the one to report.
  }
  return status;
}

// On PostgreSQL: BEGIN, the writers' lock, then the work, and COMMIT or ROLLBACK; with
// synchronous_commit off for this transaction alone when deferred. One round trip begins it.
Status Database::RunPostgresTransaction(Connection& connection,
                                        const std::function<Status(Poco::Data::Session&)>& work,
                                        Durability durability) {
  PGconn* pg = connection.pg();
  std::string begin = std::string("BEGIN; ") + kWriterLock;
  if (durability == Durability::kDeferred) begin += "; SET LOCAL synchronous_commit TO off";
  // Ends what is left of a failed transaction; the error that caused it is the one to report.
  auto roll_back = [pg] {
    if (PQtransactionStatus(pg) == PQTRANS_IDLE) return;
    try {
      ExecutePostgres(pg, "ROLLBACK");
    } catch (const Poco::Exception&) {
      // lost with the connection, which is not used again
    }
  };
  try {
    ExecutePostgres(pg, begin);
  } catch (const Poco::Exception& e) {
    roll_back();
    return DatabaseError(e, "beginning a transaction");
  }
  Status status;
  try {
    status = work(connection.session());
    if (status.ok()) {
      CommitPostgres(pg);
      return status;
    }
  } catch (const Poco::Exception& e) {
    status = DatabaseError(e, "database statement failed");
  } catch (const std::exception& e) {
    status = Error(ErrorCode::kInternal, std::string("transaction failed: ") + e.what());
  }
  roll_back();
  return status;
}

Status Database::InSavepoint(Poco::Data::Session& session,
                             const std::function<Status(Poco::Data::Session&)>& work) {
  Prepare(session, "SAVEPOINT unit").Run();
  Status status;
  try {
    status = work(session);
  } catch (const Poco::Exception& e) {
    status = DatabaseError(e, "database statement failed");
  } catch (const std::exception& e) {
    status = Error(ErrorCode::kInternal, std::string("transaction failed: ") + e.what());
  }
  // ROLLBACK TO keeps the savepoint open: it is released either way.
  if (!status.ok()) Prepare(session, "ROLLBACK TO unit").Run();
  Prepare(session, "RELEASE unit").Run();
  return status;
}

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
  std::unique_ptr<Database> db(new Database(Engine::kSqlite, path, path, options));
  Status opened = db->WithConnection(std::nullopt, [&](Connection& connection) -> Status {
    Poco::Data::Session& session = connection.session();
    // WAL lets readers run beside the one writer; FULL makes a committed transaction survive
    // power loss, not only a crash of the process.
    // Turning a new file to WAL takes an exclusive lock without waiting in the busy handler, so it
    // fails busy while another process opening the file at the same moment holds a shared one:
    // tried again until the busy timeout.
    std::string mode;
    for (const auto deadline = std::chrono::steady_clock::now() + options.busy_timeout;;) {
      try {
        session << "PRAGMA journal_mode=WAL", into(mode), now;
        break;
      } catch (const Poco::Data::SQLite::DBLockedException&) {
        if (std::chrono::steady_clock::now() >= deadline) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    if (mode != "wal") {
      return Error(
          ErrorCode::kFailedPrecondition,
          "database " + path + " cannot use write-ahead logging (journal mode " + mode + ")");
    }
    return Migrate(connection, migrations, &db->schema_version_);
  });
  if (!opened.ok()) return opened.error();
  return db;
}

Result<std::unique_ptr<Database>> Database::OpenPostgres(const std::string& conninfo,
                                                         std::span<const Migration> migrations,
                                                         const DatabaseOptions& options) {
  if (options.max_sessions == 0) {
    return Error(ErrorCode::kInvalidArgument, "the database needs at least one session");
  }
  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (parsed == nullptr) {
    std::string why = parse_error != nullptr ? parse_error : "out of memory";
    PQfreemem(parse_error);
    while (!why.empty() && why.back() == '\n') why.pop_back();
    return Error(ErrorCode::kInvalidArgument,
                 "the PostgreSQL connection string is invalid: " + why);
  }
  PQconninfoFree(parsed);
  // A server out of reach fails the open within seconds, not at libpq's default (forever): the
  // session sends connect_timeout ahead of the string, which overrides it when it names one.
  std::unique_ptr<Database> db(
      new Database(Engine::kPostgres, conninfo, DescribePostgres(conninfo), options));
  Status opened = db->WithConnection(std::nullopt, [&](Connection& connection) -> Status {
    return Migrate(connection, migrations, &db->schema_version_);
  });
  if (!opened.ok()) return opened.error();
  return db;
}

Database::Database(Engine engine, std::string connect_string, std::string description,
                   const DatabaseOptions& options)
    : engine_(engine),
      connect_string_(std::move(connect_string)),
      description_(std::move(description)),
      max_sessions_(options.max_sessions),
      busy_timeout_pragma_("PRAGMA busy_timeout=" + std::to_string(options.busy_timeout.count())),
      password_(options.password),
      busy_timeout_(options.busy_timeout) {}

Database::~Database() = default;

Database::Connection*& Database::Current() {
  thread_local Connection* current = nullptr;
  return current;
}

Status Database::WithConnection(std::optional<Durability> durability,
                                const std::function<Status(Connection&)>& work) {
  std::unique_ptr<Connection> connection;
  {
    std::unique_lock lock(mutex_);
    available_.wait(lock, [&] { return !idle_.empty() || open_ < max_sessions_; });
    if (!idle_.empty()) {
      // The most recently used connection whose synchronous level the work needs, so that writers
      // of both kinds need not set it at each turn.
      auto take = std::prev(idle_.end());
      if (durability) {
        for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
          if ((*it)->durability == *durability) {
            take = std::prev(it.base());
            break;
          }
        }
      }
      connection = std::move(*take);
      idle_.erase(take);
    } else {
      ++open_;
    }
  }
  if (!connection && engine_ == Engine::kPostgres) {
    Status opened = OpenPostgresConnection(&connection);
    if (!opened.ok()) {
      std::lock_guard lock(mutex_);
      --open_;
      available_.notify_one();
      return opened;
    }
  }
  if (!connection) {
    try {
      // Poco retries a failing open until its login timeout (60 s by default): keep it short.
      auto session = std::make_unique<Poco::Data::Session>(Poco::Data::SQLite::Connector::KEY,
                                                           connect_string_, kOpenTimeoutSeconds);
      // A writer waits this long for another writer's lock instead of failing at once;
      // references between tables are enforced (SQLite leaves them off per connection); what a
      // write deletes or moves is overwritten with zeros (see the header); and a committed
      // transaction survives power loss, not only a crash of the process. Temporary files stay
      // in memory: above all the savepoints' journal (InSavepoint: the old contents of the pages
      // a unit of a group commit changes again), which would otherwise be written to a deleted
      // file on the disk, megabytes per batch of bound keys, old contents included.
      *session << busy_timeout_pragma_, now;
      *session << "PRAGMA foreign_keys=ON", now;
      *session << "PRAGMA secure_delete=ON", now;
      *session << "PRAGMA temp_store=MEMORY", now;
      // A write transaction keeps up to 32 MiB of changed pages in memory before it writes them
      // to the log ahead of its commit (SQLite's default: past the 2 MB page cache). A group
      // commit's batch of writes changes more than 2 MB: spilled, its pages were written to the
      // log and then again, 1.7 MB more per create /resources of 100 keys (docs/benchmarks.md).
      *session << "PRAGMA cache_spill=" + std::to_string(kSpillPages), now;
      *session << "PRAGMA synchronous=FULL", now;
      connection = std::make_unique<Connection>(std::move(session), statements_compiled_);
    } catch (const Poco::Exception& e) {
      std::lock_guard lock(mutex_);
      --open_;
      available_.notify_one();
      return Error(ErrorCode::kUnavailable,
                   "cannot open database " + description_ + ": " + e.displayText());
    }
  }
  Status status;
  {
    // Prepare finds the connection of the work running on this thread here.
    struct Current {
      Connection*& slot;
      Connection* const saved;
      ~Current() { slot = saved; }
    } current{Database::Current(), std::exchange(Database::Current(), connection.get())};
    try {
      status = work(*connection);
    } catch (const Poco::Exception& e) {
      status = DatabaseError(e, "database statement failed");
    }
  }
  const bool healthy = connection->healthy();
  std::lock_guard lock(mutex_);
  if (healthy) {
    idle_.push_back(std::move(connection));
  } else {
    connection.reset();
    --open_;
  }
  available_.notify_one();
  return status;
}

namespace {
void DiscardNotice(void*, const char*) {}  // NOTICEs (an IF NOT EXISTS skipped) are not errors
}  // namespace

Status Database::OpenPostgresConnection(std::unique_ptr<Connection>* connection) {
  try {
    // The connect_timeout (the string's, or 5 s) bounds the connection attempt.
    auto session = std::make_unique<Poco::Data::Session>(Poco::AutoPtr<Poco::Data::SessionImpl>(
        new PostgresSessionImpl(connect_string_, password_, kOpenTimeoutSeconds)));
    auto opened = std::make_unique<Connection>(std::move(session), statements_compiled_);
    PQsetNoticeProcessor(opened->pg(), &DiscardNotice, nullptr);
    // Commits wait for the disk unless a deferred transaction says otherwise; a writer waits for
    // another's row lock this long (then UNAVAILABLE, as SQLite's busy timeout). A transaction
    // whose process stopped between statements (frozen, not dead: its connection stays open) is
    // ended by the server after twice that, so it cannot hold the writers' lock, and every other
    // node's writes, for ever; none of ours waits between statements that long.
    ExecutePostgres(opened->pg(), "SET synchronous_commit TO on; SET lock_timeout TO " +
                                      std::to_string(busy_timeout_.count()) +
                                      "; SET idle_in_transaction_session_timeout TO " +
                                      std::to_string(2 * busy_timeout_.count()));
    *connection = std::move(opened);
    return OkStatus();
  } catch (const Poco::Exception& e) {
    return Error(ErrorCode::kUnavailable,
                 "cannot connect to " + description_ + ": " + e.displayText());
  }
}

Status Database::Migrate(Connection& connection, std::span<const Migration> migrations,
                         int* version) {
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version != static_cast<int>(i) + 1) {
      return Error(ErrorCode::kInternal, "migrations must be numbered 1, 2, 3, ... in order");
    }
  }
  PGconn* pg = connection.pg();
  if (pg == nullptr) return ApplyMigrations(connection, migrations, version);
  // Several processes opening one PostgreSQL database at once take turns.
  try {
    ExecutePostgres(pg, kMigrationLock);
  } catch (const Poco::Exception& e) {
    return DatabaseError(e, "waiting for other processes' migrations");
  }
  Status status = ApplyMigrations(connection, migrations, version);
  try {
    ExecutePostgres(pg, kMigrationUnlock);
  } catch (const Poco::Exception& e) {
    if (status.ok()) status = DatabaseError(e, "ending the migrations");
  }
  return status;
}

Status Database::ApplyMigrations(Connection& connection, std::span<const Migration> migrations,
                                 int* version) {
  Poco::Data::Session& session = connection.session();
  // Statements of the schema, run once: not kept.
  auto execute = [&](Poco::Data::Session& s, const std::string& sql) {
    if (connection.pg() != nullptr) {
      ExecutePostgres(connection.pg(), sql);
    } else {
      s << sql, now;
    }
  };
  execute(session,
          "CREATE TABLE IF NOT EXISTS schema_migrations ("
          "version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)");
  auto newest = [](Poco::Data::Session& s) -> std::int64_t {
    SqlStatement select = Prepare(s, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    return select.Next() ? select.Int(0) : 0;
  };
  auto too_new = [&](std::int64_t current) {
    return Error(ErrorCode::kFailedPrecondition,
                 "the database is at schema version " + std::to_string(current) +
                     ", newer than this program knows (" + std::to_string(migrations.size()) +
                     "); run the newer Strongroom or restore a matching backup");
  };
  std::int64_t current = newest(session);
  if (current > static_cast<std::int64_t>(migrations.size())) return too_new(current);
  // A database some other program's migrations made (another service's store, or a schema that
  // went its own way) is refused before any migration of ours touches it: each version applied
  // must be ours, as its description says.
  {
    SqlStatement applied =
        Prepare(session, "SELECT version, description FROM schema_migrations ORDER BY version");
    while (applied.Next()) {
      const std::int64_t v = applied.Int(0);
      const std::string description = applied.Text(1);
      if (v < 1 || v > static_cast<std::int64_t>(migrations.size()) ||
          migrations[static_cast<std::size_t>(v - 1)].description != description) {
        return Error(ErrorCode::kFailedPrecondition,
                     "the database holds another program's schema: its migration " +
                         std::to_string(v) + " is '" + description + "', not '" +
                         (v >= 1 && v <= static_cast<std::int64_t>(migrations.size())
                              ? migrations[static_cast<std::size_t>(v - 1)].description
                              : std::string("(none)")) +
                         "'; is this another service's database?");
      }
    }
  }
  bool migrated = false;
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    SR_RETURN_IF_ERROR(RunTransaction(connection, [&](Poco::Data::Session& s) -> Status {
      // Another process opening the database at the same time may have applied it since the
      // version was read: read again, now that this transaction holds the write lock (BEGIN
      // IMMEDIATE; on PostgreSQL the writers' lock besides the migrations' own).
      current = newest(s);
      if (current >= m.version) return OkStatus();
      for (const std::string& statement : m.statements) execute(s, statement);
      if (m.convert) m.convert(s);
      const std::string applied = FormatRfc3339Ms(UnixNowMs());
      Prepare(s,
              "INSERT INTO schema_migrations (version, description, applied_at) "
              "VALUES (?, ?, ?)")
          .Bind(std::int64_t{m.version})
          .Bind(m.description)
          .Bind(applied.substr(0, 19) + "Z")  // to the second
          .Run();
      current = m.version;
      migrated = true;
      return OkStatus();
    }));
  }
  if (current > static_cast<std::int64_t>(migrations.size())) return too_new(current);
  *version = static_cast<int>(current);
  if (migrated && connection.pg() == nullptr) {
    // A migration may delete or rewrite data: empty the log now, so that what it removed does not
    // linger there or in the database file (busy only when another process reads; its next
    // checkpoint does it then).
    int busy = 0, frames = 0, copied = 0;
    session << "PRAGMA wal_checkpoint(TRUNCATE)", into(busy), into(frames), into(copied), now;
  }
  return OkStatus();
}

Status Database::InTransaction(const std::function<Status(Poco::Data::Session&)>& work,
                               Durability durability) {
  std::unique_lock writer(writer_, std::defer_lock);
  if (!writer.try_lock_for(busy_timeout_)) {
    return Error(ErrorCode::kUnavailable, "the database is busy with other writers; retry later");
  }
  return WithConnection(durability, [&](Connection& connection) -> Status {
    if (connection.pg() != nullptr) return RunTransaction(connection, work, durability);
    // The setting belongs to the pooled connection, which remembers it: set only when it differs.
    if (connection.durability != durability) {
      try {
        connection.ExecuteOnce(durability == Durability::kFull ? "PRAGMA synchronous=FULL"
                                                               : "PRAGMA synchronous=NORMAL");
      } catch (const Poco::Exception& e) {
        // A connection whose level is unknown must not go back to the pool: closed, it is dropped.
        connection.Close();
        return DatabaseError(e, "setting synchronous");
      }
      connection.durability = durability;
    }
    return RunTransaction(connection, work);
  });
}

Status Database::CompactLog() {
  // PostgreSQL's checkpointer recycles its write-ahead log by itself.
  if (engine_ == Engine::kPostgres) return OkStatus();
  std::unique_lock writer(writer_, std::defer_lock);
  if (!writer.try_lock_for(busy_timeout_)) {
    return Error(ErrorCode::kUnavailable, "the database is busy with other writers");
  }
  return WithConnection(std::nullopt, [&](Connection& connection) -> Status {
    // One row: whether readers kept the checkpoint from completing, then the log's frames and
    // those copied.
    int busy = 0, frames = 0, copied = 0;
    try {
      connection.session() << "PRAGMA wal_checkpoint(TRUNCATE)", into(busy), into(frames),
          into(copied), now;
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
  return WithConnection(std::nullopt, [&](Connection& connection) -> Status {
    if (connection.pg() != nullptr) {
      // A transaction that writes a commit record (it takes a transaction id) and commits with
      // synchronous_commit on flushes the log up to that record, every deferred commit before it
      // included.
      try {
        ExecutePostgres(connection.pg(), "BEGIN; SELECT pg_current_xact_id(); COMMIT");
      } catch (const Poco::Exception& e) {
        return DatabaseError(e, "flushing the write-ahead log");
      }
      return OkStatus();
    }
    // An fsync of the write-ahead log makes every commit in it durable, as a commit at
    // synchronous=FULL would have been; copying the log into the database (a checkpoint) is
    // CompactLog's and SQLite's own business, not needed for that.
    sqlite3_file* log = nullptr;
    if (sqlite3_file_control(connection.db(), "main", SQLITE_FCNTL_JOURNAL_POINTER, &log) ==
            SQLITE_OK &&
        log != nullptr && log->pMethods != nullptr) {
      if (log->pMethods->xSync(log, SQLITE_SYNC_NORMAL) != SQLITE_OK) {
        return Error(ErrorCode::kUnavailable, "syncing the write-ahead log failed");
      }
      return OkStatus();
    }
    // This connection has not opened the log yet: a passive checkpoint syncs it first.
    try {
      connection.session() << "PRAGMA wal_checkpoint(PASSIVE)", now;
    } catch (const Poco::Exception& e) {
      return DatabaseError(e, "checkpointing the log");
    }
    return OkStatus();
  });
}

Status Database::WithSession(const std::function<Status(Poco::Data::Session&)>& work) {
  return WithConnection(std::nullopt,
                        [&](Connection& connection) { return work(connection.session()); });
}

Status Database::Ping() {
  return WithSession([](Poco::Data::Session& s) -> Status {
    SqlStatement one = Prepare(s, "SELECT 1");
    if (!one.Next() || one.Int(0) != 1) return Error(ErrorCode::kInternal, "SELECT 1 failed");
    return OkStatus();
  });
}

Status Database::InReadTransaction(const std::function<Status(Poco::Data::Session&)>& work) {
  return WithConnection(std::nullopt, [&](Connection& connection) -> Status {
    PGconn* pg = connection.pg();
    // Transaction control kept on the connection (SQLite) or sent as text (PostgreSQL, as
    // RunPostgresTransaction's).
    auto execute = [&](const char* sql) {
      if (pg != nullptr) {
        ExecutePostgres(pg, sql);
      } else {
        connection.Lease(sql).Run();
      }
    };
    try {
      execute(pg != nullptr ? "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" : "BEGIN");
    } catch (const Poco::Exception& e) {
      return DatabaseError(e, "beginning a read transaction");
    }
    Status status;
    try {
      status = work(connection.session());
      execute("COMMIT");
      return status;
    } catch (const Poco::Exception& e) {
      status = DatabaseError(e, "database statement failed");
    } catch (const std::exception& e) {
      status = Error(ErrorCode::kInternal, std::string("reading failed: ") + e.what());
    }
    try {
      if (pg == nullptr || PQtransactionStatus(pg) != PQTRANS_IDLE) execute("ROLLBACK");
    } catch (const Poco::Exception&) {
      // The transaction is gone either way (a lost PostgreSQL connection is not used again).
    }
    return status;
  });
}

SqlStatement Database::Prepare(Poco::Data::Session& session, std::string_view sql) {
  Connection* current = Current();
  if (current != nullptr && &current->session() == &session) return current->Lease(sql);
  return Connection::OneUse(&session, sql);
}

std::map<std::string, std::uint64_t> Database::KeptStatementUses() {
  std::map<std::string, std::uint64_t> uses;
  std::lock_guard lock(mutex_);
  for (const std::unique_ptr<Connection>& connection : idle_) connection->CountUses(uses);
  return uses;
}

// --- SqlStatement
// ---------------------------------------------------------------------------------

namespace {

[[noreturn]] void Fail(const SqlStatement::Handle& handle, int rc, const char* what) {
  Poco::Data::SQLite::Utility::throwException(handle.db, rc, what);
  throw Poco::Data::DataException(what);  // throwException returns for SQLITE_OK only
}

// SQLite binds a null pointer as NULL: empty text and blobs need one that is not.
const char* NonNull(const void* data) {
  return data != nullptr ? static_cast<const char*>(data) : "";
}

}  // namespace

SqlStatement::SqlStatement(Handle* handle, bool owned) : handle_(handle), owned_(owned) {}

SqlStatement::SqlStatement(SqlStatement&& other) noexcept
    : handle_(std::exchange(other.handle_, nullptr)), owned_(other.owned_) {}

void SqlStatement::Reset() {
  if (handle_->pg) {
    handle_->pg->Reset();
    handle_->next_parameter = 1;
    return;
  }
  sqlite3_reset(handle_->stmt);  // returns the last step's error, which that step threw
  sqlite3_clear_bindings(handle_->stmt);
  handle_->next_parameter = 1;
}

SqlStatement::~SqlStatement() {
  if (handle_ == nullptr) return;
  Reset();
  if (owned_) {
    sqlite3_finalize(handle_->stmt);  // none on PostgreSQL
    delete handle_;
  } else {
    handle_->in_use = false;
  }
}

SqlStatement& SqlStatement::Bind(std::int64_t value) {
  if (handle_->pg) {
    handle_->pg->BindInt(value);
    return *this;
  }
  const int rc = sqlite3_bind_int64(handle_->stmt, handle_->next_parameter++, value);
  if (rc != SQLITE_OK) Fail(*handle_, rc, "binding a parameter");
  return *this;
}

SqlStatement& SqlStatement::Bind(std::string_view text) {
  if (handle_->pg) {
    handle_->pg->BindText(text);
    return *this;
  }
  const int rc = sqlite3_bind_text(handle_->stmt, handle_->next_parameter++, NonNull(text.data()),
                                   static_cast<int>(text.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) Fail(*handle_, rc, "binding a parameter");
  return *this;
}

SqlStatement& SqlStatement::Bind(const std::optional<std::int64_t>& value) {
  return value ? Bind(*value) : BindNull();
}

SqlStatement& SqlStatement::Bind(const std::optional<std::string>& text) {
  return text ? Bind(std::string_view(*text)) : BindNull();
}

SqlStatement& SqlStatement::BindBlob(std::span<const std::uint8_t> bytes) {
  if (handle_->pg) {
    handle_->pg->BindBlob(bytes);
    return *this;
  }
  const int rc = sqlite3_bind_blob(handle_->stmt, handle_->next_parameter++, NonNull(bytes.data()),
                                   static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) Fail(*handle_, rc, "binding a parameter");
  return *this;
}

SqlStatement& SqlStatement::BindBlob(std::string_view bytes) {
  return BindBlob({reinterpret_cast<const std::uint8_t*>(NonNull(bytes.data())), bytes.size()});
}

SqlStatement& SqlStatement::BindNull() {
  if (handle_->pg) {
    handle_->pg->BindNull();
    return *this;
  }
  const int rc = sqlite3_bind_null(handle_->stmt, handle_->next_parameter++);
  if (rc != SQLITE_OK) Fail(*handle_, rc, "binding a parameter");
  return *this;
}

bool SqlStatement::Next() {
  if (handle_->pg) return handle_->pg->Next();
  const int rc = sqlite3_step(handle_->stmt);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Fail(*handle_, rc, "running a statement");
}

std::int64_t SqlStatement::Run() {
  if (handle_->pg) return handle_->pg->Run();
  while (Next()) {
  }
  return sqlite3_changes64(handle_->db);
}

bool SqlStatement::IsNull(int column) const {
  if (handle_->pg) return handle_->pg->IsNull(column);
  return sqlite3_column_type(handle_->stmt, column) == SQLITE_NULL;
}

std::int64_t SqlStatement::Int(int column) const {
  if (handle_->pg) return handle_->pg->Int(column);
  return sqlite3_column_int64(handle_->stmt, column);
}

std::string SqlStatement::Text(int column) const {
  if (handle_->pg) return handle_->pg->Text(column);
  const unsigned char* text = sqlite3_column_text(handle_->stmt, column);
  const int size = sqlite3_column_bytes(handle_->stmt, column);
  return text != nullptr ? std::string(reinterpret_cast<const char*>(text), size) : std::string();
}

std::optional<std::int64_t> SqlStatement::OptionalInt(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Int(column);
}

std::optional<std::string> SqlStatement::OptionalText(int column) const {
  if (IsNull(column)) return std::nullopt;
  return Text(column);
}

std::span<const std::uint8_t> SqlStatement::Blob(int column) const {
  if (handle_->pg) return handle_->pg->Blob(column);
  const void* bytes = sqlite3_column_blob(handle_->stmt, column);
  const int size = sqlite3_column_bytes(handle_->stmt, column);
  if (bytes == nullptr) return {};
  return {static_cast<const std::uint8_t*>(bytes), static_cast<std::size_t>(size)};
}

}  // namespace strongroom
