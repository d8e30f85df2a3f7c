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
#include <unordered_map>
#include <utility>

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

// Changed pages a write transaction holds in memory before it writes them to the log early:
// 32 MiB of 4 KiB pages.
constexpr int kSpillPages = 8192;

Error DatabaseError(const Poco::Exception& e, std::string_view what) {
  // Busy and locked databases are transient; everything else is a fault of ours or of the disk.
  const bool transient = dynamic_cast<const Poco::Data::SQLite::DBLockedException*>(&e) ||
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
};

// A pooled connection: its session, and the statements kept on it (finalized before it closes).
class Database::Connection {
 public:
  Connection(std::unique_ptr<Poco::Data::Session> session, std::atomic<std::uint64_t>& compiled)
      : session_(std::move(session)),
        db_(Poco::Data::SQLite::Utility::dbHandle(*session_)),
        compiled_(compiled) {}
  ~Connection() { Close(); }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Poco::Data::Session& session() { return *session_; }
  sqlite3* db() const { return db_; }
  bool healthy() {
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
      sqlite3_stmt* stmt = Compile(db_, sql, /*kept=*/true);
      compiled_.fetch_add(1, std::memory_order_relaxed);
      found = kept_.emplace(std::string(sql), SqlStatement::Handle{db_, stmt}).first;
    }
    if (found != kept_.end() && !found->second.in_use) {
      SqlStatement::Handle& handle = found->second;
      handle.in_use = true;
      ++handle.uses;
      return SqlStatement(&handle, /*owned=*/false);
    }
    sqlite3_stmt* stmt = Compile(db_, sql, /*kept=*/false);
    compiled_.fetch_add(1, std::memory_order_relaxed);
    return SqlStatement(new SqlStatement::Handle{db_, stmt, true}, /*owned=*/true);
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
    for (auto& [sql, handle] : kept_) sqlite3_finalize(handle.stmt);
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
  sqlite3* const db_;
  std::atomic<std::uint64_t>& compiled_;
  std::unordered_map<std::string, SqlStatement::Handle, StringHash, std::equal_to<>> kept_;
};

// One transaction: BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any failure; the three statements
// kept on the connection.
Status Database::RunTransaction(Connection& connection,
                                const std::function<Status(Poco::Data::Session&)>& work) {
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
  std::unique_ptr<Database> db(new Database(path, options.max_sessions, options.busy_timeout));
  Status opened = db->WithConnection(std::nullopt, [&](Connection& connection) -> Status {
    Poco::Data::Session& session = connection.session();
    // WAL lets readers run beside the one writer; FULL makes a committed transaction survive
    // power loss, not only a crash of the process.
    std::string mode;
    session << "PRAGMA journal_mode=WAL", into(mode), now;
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

Database::Database(std::string connect_string, std::size_t max_sessions,
                   std::chrono::milliseconds busy_timeout)
    : connect_string_(std::move(connect_string)),
      max_sessions_(max_sessions),
      busy_timeout_pragma_("PRAGMA busy_timeout=" + std::to_string(busy_timeout.count())),
      busy_timeout_(busy_timeout) {}

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
                   "cannot open database " + connect_string_ + ": " + e.displayText());
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

Status Database::Migrate(Connection& connection, std::span<const Migration> migrations,
                         int* version) {
  Poco::Data::Session& session = connection.session();
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
  bool migrated = false;
  for (const Migration& m : migrations) {
    if (m.version <= current) continue;
    SR_RETURN_IF_ERROR(RunTransaction(connection, [&](Poco::Data::Session& s) -> Status {
      for (const std::string& statement : m.statements) s << statement, now;
      if (m.convert) m.convert(s);
      int v = m.version;
      std::string description = m.description;
      s << "INSERT INTO schema_migrations (version, description, applied_at) "
           "VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))",
          use(v), use(description), now;
      return OkStatus();
    }));
    current = m.version;
    migrated = true;
  }
  *version = current;
  if (migrated) {
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

SqlStatement Database::Prepare(Poco::Data::Session& session, std::string_view sql) {
  Connection* current = Current();
  if (current != nullptr && &current->session() == &session) return current->Lease(sql);
  sqlite3* db = Poco::Data::SQLite::Utility::dbHandle(session);
  return SqlStatement(new SqlStatement::Handle{db, Compile(db, sql, /*kept=*/false), true},
                      /*owned=*/true);
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
  sqlite3_reset(handle_->stmt);  // returns the last step's error, which that step threw
  sqlite3_clear_bindings(handle_->stmt);
  handle_->next_parameter = 1;
}

SqlStatement::~SqlStatement() {
  if (handle_ == nullptr) return;
  Reset();
  if (owned_) {
    sqlite3_finalize(handle_->stmt);
    delete handle_;
  } else {
    handle_->in_use = false;
  }
}

SqlStatement& SqlStatement::Bind(std::int64_t value) {
  const int rc = sqlite3_bind_int64(handle_->stmt, handle_->next_parameter++, value);
  if (rc != SQLITE_OK) Fail(*handle_, rc, "binding a parameter");
  return *this;
}

SqlStatement& SqlStatement::Bind(std::string_view text) {
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
  const int rc = sqlite3_bind_blob(handle_->stmt, handle_->next_parameter++, NonNull(bytes.data()),
                                   static_cast<int>(bytes.size()), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK) Fail(*handle_, rc, "binding a parameter");
  return *this;
}

SqlStatement& SqlStatement::BindBlob(std::string_view bytes) {
  return BindBlob({reinterpret_cast<const std::uint8_t*>(NonNull(bytes.data())), bytes.size()});
}

SqlStatement& SqlStatement::BindNull() {
  const int rc = sqlite3_bind_null(handle_->stmt, handle_->next_parameter++);
  if (rc != SQLITE_OK) Fail(*handle_, rc, "binding a parameter");
  return *this;
}

bool SqlStatement::Next() {
  const int rc = sqlite3_step(handle_->stmt);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Fail(*handle_, rc, "running a statement");
}

std::int64_t SqlStatement::Run() {
  while (Next()) {
  }
  return sqlite3_changes64(handle_->db);
}

bool SqlStatement::IsNull(int column) const {
  return sqlite3_column_type(handle_->stmt, column) == SQLITE_NULL;
}

std::int64_t SqlStatement::Int(int column) const {
  return sqlite3_column_int64(handle_->stmt, column);
}

std::string SqlStatement::Text(int column) const {
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
  const void* bytes = sqlite3_column_blob(handle_->stmt, column);
  const int size = sqlite3_column_bytes(handle_->stmt, column);
  if (bytes == nullptr) return {};
  return {static_cast<const std::uint8_t*>(bytes), static_cast<std::size_t>(size)};
}

}  // namespace strongroom
