#include "strongroom/common/database_settings.h"

#include <libpq-fe.h>

#include <string_view>

#include "strongroom/common/config_file.h"
#include "strongroom/common/token_file.h"

namespace strongroom {

using Poco::Util::AbstractConfiguration;

namespace {

constexpr char kSection[] = "database";
constexpr std::size_t kMaxPasswordBytes = 1024;

// INVALID_ARGUMENT unless libpq can read `conninfo` and it holds no password.
Status CheckConninfo(const std::string& conninfo) {
  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (parsed == nullptr) {
    // libpq's message quotes the part it could not read, which may be a password: not repeated.
    PQfreemem(parse_error);
    return Error(ErrorCode::kInvalidArgument,
                 "database.conninfo is not a libpq connection string (key=value ... or "
                 "postgresql://...)");
  }
  bool has_password = false;
  for (PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
    if (std::string_view(o->keyword) == "password" && o->val != nullptr && *o->val != '\0') {
      has_password = true;
    }
  }
  PQconninfoFree(parsed);
  if (has_password) {
    return Error(ErrorCode::kInvalidArgument,
                 "database.conninfo holds a password; put it in a file of its own, mode 0600, "
                 "named by database.password_file");
  }
  return OkStatus();
}

}  // namespace

std::string DatabaseSettings::Describe() const {
  return engine == Database::Engine::kSqlite ? "SQLite " + path
                                             : Database::DescribePostgres(conninfo);
}

bool NamesDatabase(const AbstractConfiguration& config, const std::string& section) {
  AbstractConfiguration::Keys keys;
  config.keys(kSection, keys);
  return !keys.empty() || config.hasProperty(section + ".database");
}

Result<DatabaseSettings> ReadDatabaseSettings(const AbstractConfiguration& config,
                                              const std::string& section,
                                              const DatabaseOptions& defaults) {
  const std::string short_key = section + ".database";
  AbstractConfiguration::Keys keys;
  config.keys(kSection, keys);
  const bool has_section = !keys.empty();
  const bool has_short = config.hasProperty(short_key);
  if (has_section && has_short) {
    return Error(ErrorCode::kInvalidArgument,
                 "set either " + short_key + " (a SQLite file) or a [database] section, not both");
  }
  DatabaseSettings out;
  out.options = defaults;
  if (!has_section) {
    SR_ASSIGN_OR_RETURN(out.path, RequiredSetting(config, short_key, "database"));
    return out;
  }
  SR_RETURN_IF_ERROR(CheckSettingKeys(
      config, kSection,
      {"engine", "path", "conninfo", "password_file", "max_connections", "busy_timeout_ms"}));
  SR_ASSIGN_OR_RETURN(std::string engine,
                      RequiredSetting(config, "database.engine", "database engine"));
  if (engine == "sqlite") {
    out.engine = Database::Engine::kSqlite;
    SR_ASSIGN_OR_RETURN(out.path, RequiredSetting(config, "database.path", "SQLite file"));
    for (const char* key : {"database.conninfo", "database.password_file"}) {
      if (config.hasProperty(key)) {
        return Error(ErrorCode::kInvalidArgument,
                     std::string(key) + " is PostgreSQL's; database.engine is sqlite");
      }
    }
  } else if (engine == "postgresql") {
    out.engine = Database::Engine::kPostgres;
    if (config.hasProperty("database.path")) {
      return Error(ErrorCode::kInvalidArgument,
                   "database.path is SQLite's; database.engine is postgresql");
    }
    SR_ASSIGN_OR_RETURN(
        out.conninfo, RequiredSetting(config, "database.conninfo", "PostgreSQL connection string"));
    SR_RETURN_IF_ERROR(CheckConninfo(out.conninfo));
    out.password_file = SettingText(config, "database.password_file");
  } else {
    return Error(ErrorCode::kInvalidArgument,
                 "database.engine must be sqlite or postgresql, got '" + engine + "'");
  }
  SR_ASSIGN_OR_RETURN(std::uint64_t connections, UnsignedSetting(config, "database.max_connections",
                                                                 out.options.max_sessions, 1, 256));
  out.options.max_sessions = connections;
  SR_ASSIGN_OR_RETURN(
      out.options.busy_timeout,
      DurationSetting(config, "database.busy_timeout_ms", out.options.busy_timeout, 100, 60000));
  return out;
}

Result<std::unique_ptr<Database>> OpenDatabase(const DatabaseSettings& settings,
                                               std::span<const Migration> sqlite_migrations,
                                               std::span<const Migration> postgres_migrations) {
  if (settings.engine == Database::Engine::kSqlite) {
    return Database::OpenSqlite(settings.path, sqlite_migrations, settings.options);
  }
  DatabaseOptions options = settings.options;
  if (!settings.password_file.empty()) {
    SR_ASSIGN_OR_RETURN(
        SecretBytes password,
        ReadTokenFile(settings.password_file, "database password file", 1, kMaxPasswordBytes));
    options.password = std::make_shared<const SecretBytes>(std::move(password));
  }
  return Database::OpenPostgres(settings.conninfo, postgres_migrations, options);
}

}  // namespace strongroom
