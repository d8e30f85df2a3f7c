// Which database a daemon keeps its store in, read the same way by kmsd, kmsctl, cored and
// indexerd from their INI file (config_file.h), and opening it.
//
// The embedded default, SQLite, is one key of the daemon's own section:
//
//   [kms]
//   database = /var/lib/strongroom/kms.db
//
// PostgreSQL (several nodes on one database) is a [database] section instead, and then the
// daemon's section names no `database`:
//
//   [database]
//   engine = postgresql                 ; or sqlite, with path = ...
//   conninfo = host=db1 dbname=strongroom_kms user=kmsd sslmode=verify-full
//                                       ; libpq's key=value string or a postgresql:// URI
//   password_file = /etc/strongroom/kms-db.password  ; optional: the password alone, in a file of
//                                       ; mode 0600 (token_file.h's rules: no spaces, <= 1 KiB)
//   max_connections = 16                ; optional, 1-256: connections the daemon keeps open
//   busy_timeout_ms = 5000              ; optional, 100-60000: how long a writer waits its turn
//
// The password never appears in the configuration: a conninfo that holds one is refused, and the
// password file's content (read when the database is opened) is kept in zeroized memory and
// handed to libpq alone; no message names it. A connection
// string without connect_timeout gets 5 s (a URI too), so an unreachable server fails the start
// within seconds instead of hanging it.
#ifndef STRONGROOM_COMMON_DATABASE_SETTINGS_H_
#define STRONGROOM_COMMON_DATABASE_SETTINGS_H_

#include <Poco/Util/AbstractConfiguration.h>

#include <memory>
#include <span>
#include <string>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"

namespace strongroom {

struct DatabaseSettings {
  Database::Engine engine = Database::Engine::kSqlite;
  std::string path;           // SQLite: the database file
  std::string conninfo;       // PostgreSQL: libpq's connection string, without a password
  std::string password_file;  // PostgreSQL: a file holding the password; empty: none (or .pgpass)
  DatabaseOptions options;

  // What names the database in log lines: "SQLite <path>" or "PostgreSQL host=... dbname=...",
  // never a password.
  std::string Describe() const;
};

// Reads `<section>.database` (SQLite) or the [database] section, over `defaults` for the
// connection count and busy timeout. INVALID_ARGUMENT naming the setting: neither or both given,
// an unknown key or engine, a conninfo that does not parse or that holds a password, a number out
// of range.
Result<DatabaseSettings> ReadDatabaseSettings(const Poco::Util::AbstractConfiguration& config,
                                              const std::string& section,
                                              const DatabaseOptions& defaults = {});

// Whether the configuration names a database for [section] at all (`<section>.database` or a
// [database] section): kmsctl's commands that work on a token alone ask.
bool NamesDatabase(const Poco::Util::AbstractConfiguration& config, const std::string& section);

// Opens the database `settings` names and brings it to the newest of the engine's migrations
// (Database::OpenSqlite or OpenPostgres). INVALID_ARGUMENT naming the password file when it cannot
// be read, others may read it, or it holds no password or too much; otherwise the engine's errors.
Result<std::unique_ptr<Database>> OpenDatabase(const DatabaseSettings& settings,
                                               std::span<const Migration> sqlite_migrations,
                                               std::span<const Migration> postgres_migrations);

}  // namespace strongroom

#endif  // STRONGROOM_COMMON_DATABASE_SETTINGS_H_
