// Which database a daemon opens (database_settings.h): `<section>.database` for SQLite or a
// [database] section, what each key may be, and OpenDatabase on both engines (PostgreSQL on the
// test program's throwaway cluster).
#include "strongroom/common/database_settings.h"

#include <Poco/AutoPtr.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Util/IniFileConfiguration.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>
#include <string>

#include "../support/postgres_cluster.h"
#include "../support/test_dir.h"

namespace strongroom {
namespace {

using Engine = Database::Engine;
using testing::TestDir;

Poco::AutoPtr<Poco::Util::IniFileConfiguration> Ini(const std::string& text) {
  std::istringstream in(text);
  return new Poco::Util::IniFileConfiguration(in);
}

Result<DatabaseSettings> Read(const std::string& text) {
  DatabaseOptions defaults;
  defaults.max_sessions = 8;
  return ReadDatabaseSettings(*Ini(text), "svc", defaults);
}

// The error message of settings that must be refused; empty (a failure) when they were accepted.
std::string Refusal(const std::string& text) {
  Result<DatabaseSettings> settings = Read(text);
  EXPECT_FALSE(settings.ok()) << text;
  if (settings.ok()) return "";
  EXPECT_EQ(settings.error().code(), ErrorCode::kInvalidArgument) << text;
  return settings.error().message();
}

const std::vector<Migration> kSchema = {
    {1, "one table", {"CREATE TABLE things (name TEXT PRIMARY KEY)"}}};

TEST(DatabaseSettingsTest, TheDaemonsOwnKeyNamesASqliteFile) {
  Result<DatabaseSettings> settings = Read("[svc]\ndatabase = /var/lib/strongroom/svc.db\n");
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->engine, Engine::kSqlite);
  EXPECT_EQ(settings->path, "/var/lib/strongroom/svc.db");
  EXPECT_EQ(settings->options.max_sessions, 8u);  // the daemon's default
  EXPECT_EQ(settings->Describe(), "SQLite /var/lib/strongroom/svc.db");
  EXPECT_TRUE(NamesDatabase(*Ini("[svc]\ndatabase = x.db\n"), "svc"));
  EXPECT_TRUE(NamesDatabase(*Ini("[database]\nengine = sqlite\npath = x.db\n"), "svc"));
  EXPECT_FALSE(NamesDatabase(*Ini("[svc]\nhost = x\n"), "svc"));
}

TEST(DatabaseSettingsTest, ADatabaseSectionNamesPostgresqlWithItsLimits) {
  Result<DatabaseSettings> settings = Read(
      "[database]\nengine = postgresql\nconninfo = host=db1 port=5433 dbname=kms user=kmsd\n"
      "password_file = /etc/strongroom/kms-db.password\nmax_connections = 32\n"
      "busy_timeout_ms = 2000\n");
  ASSERT_TRUE(settings.ok()) << settings.error().ToString();
  EXPECT_EQ(settings->engine, Engine::kPostgres);
  EXPECT_EQ(settings->conninfo, "host=db1 port=5433 dbname=kms user=kmsd");
  EXPECT_EQ(settings->password_file, "/etc/strongroom/kms-db.password");
  EXPECT_EQ(settings->options.max_sessions, 32u);
  EXPECT_EQ(settings->options.busy_timeout, std::chrono::milliseconds(2000));
  EXPECT_EQ(settings->Describe(), "PostgreSQL host=db1 port=5433 dbname=kms user=kmsd");

  Result<DatabaseSettings> uri =
      Read("[database]\nengine = postgresql\nconninfo = postgresql://kmsd@db1:5433/kms\n");
  ASSERT_TRUE(uri.ok()) << uri.error().ToString();
  EXPECT_EQ(uri->Describe(), "PostgreSQL host=db1 port=5433 dbname=kms user=kmsd");
  EXPECT_TRUE(uri->password_file.empty());
}

TEST(DatabaseSettingsTest, AmbiguousIncompleteOrUnknownSettingsAreRefused) {
  EXPECT_NE(Refusal("[svc]\nhost = x\n").find("names no database"), std::string::npos);
  EXPECT_NE(Refusal("[svc]\ndatabase = a.db\n[database]\nengine = sqlite\npath = b.db\n")
                .find("not both"),
            std::string::npos);
  EXPECT_NE(Refusal("[database]\npath = b.db\n").find("set engine = ... in section [database]"),
            std::string::npos);
  EXPECT_NE(Refusal("[database]\nengine = mysql\n").find("sqlite or postgresql"),
            std::string::npos);
  EXPECT_NE(Refusal("[database]\nengine = postgresql\n").find("set conninfo = ..."),
            std::string::npos);
  EXPECT_NE(Refusal("[database]\nengine = postgresql\nconninfo = host=a\nconninfio = x\n")
                .find("unknown setting database.conninfio"),
            std::string::npos);
  EXPECT_NE(
      Refusal("[database]\nengine = postgresql\nconninfo = host=a\npath = b.db\n").find("SQLite's"),
      std::string::npos);
  EXPECT_NE(
      Refusal("[database]\nengine = sqlite\npath = b.db\nconninfo = host=a\n").find("PostgreSQL's"),
      std::string::npos);
  EXPECT_NE(Refusal("[database]\nengine = postgresql\nconninfo = host=a\nmax_connections = 0\n")
                .find("database.max_connections"),
            std::string::npos);
  EXPECT_NE(Refusal("[database]\nengine = postgresql\nconninfo = host=a\nbusy_timeout_ms = 5\n")
                .find("database.busy_timeout_ms"),
            std::string::npos);
  EXPECT_NE(Refusal("[database]\nengine = postgresql\nconninfo = host='unterminated\n")
                .find("not a libpq connection string"),
            std::string::npos);
}

// A password belongs in its own file; one written into the connection string is refused, and the
// refusal does not repeat it.
TEST(DatabaseSettingsTest, APasswordInTheConnectionStringIsRefusedWithoutBeingEchoed) {
  for (const char* conninfo :
       {"host=db1 dbname=kms password=hunter2secret", "postgresql://kmsd:hunter2secret@db1/kms",
        "host=db1 password='hunter2secret"}) {
    const std::string message =
        Refusal(std::string("[database]\nengine = postgresql\nconninfo = ") + conninfo + "\n");
    EXPECT_EQ(message.find("hunter2secret"), std::string::npos) << message;
    EXPECT_NE(message.find("conninfo"), std::string::npos) << message;
  }
}

TEST(DatabaseSettingsTest, APasswordFileMustBeTheOwnersAlone) {
  TestDir dir;
  const std::string path = (dir.path() / "db.password").string();
  std::ofstream(path) << "s3cret-db-password\n";
  ::chmod(path.c_str(), 0644);
  DatabaseSettings settings;
  settings.engine = Engine::kPostgres;
  settings.conninfo = "host=127.0.0.1 port=1 dbname=x";
  settings.password_file = path;
  Result<std::unique_ptr<Database>> opened = OpenDatabase(settings, kSchema, kSchema);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(opened.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(opened.error().message().find("chmod 600"), std::string::npos)
      << opened.error().message();
  settings.password_file = (dir.path() / "absent").string();
  opened = OpenDatabase(settings, kSchema, kSchema);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().message().find("database password file"), std::string::npos);
}

TEST(DatabaseSettingsPostgresTest, OpensEitherEngine) {
  TestDir dir;
  Result<DatabaseSettings> sqlite =
      Read("[svc]\ndatabase = " + (dir.path() / "svc.db").string() + "\n");
  ASSERT_TRUE(sqlite.ok());
  Result<std::unique_ptr<Database>> a = OpenDatabase(*sqlite, kSchema, {});
  ASSERT_TRUE(a.ok()) << a.error().ToString();
  EXPECT_EQ((*a)->engine(), Engine::kSqlite);
  EXPECT_EQ((*a)->schema_version(), 1);

  Result<std::string> conninfo = testing::PostgresCluster::NewDatabase();
  ASSERT_TRUE(conninfo.ok()) << conninfo.error().ToString();
  const std::string password = (dir.path() / "db.password").string();
  std::ofstream(password) << "any-password\n";
  ::chmod(password.c_str(), 0600);
  Result<DatabaseSettings> postgres =
      Read("[database]\nengine = postgresql\nconninfo = " + *conninfo +
           "\npassword_file = " + password + "\n");
  ASSERT_TRUE(postgres.ok()) << postgres.error().ToString();
  // The throwaway cluster trusts its socket's owner: the password is sent and not needed.
  Result<std::unique_ptr<Database>> b = OpenDatabase(*postgres, {}, kSchema);
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ((*b)->engine(), Engine::kPostgres);
  EXPECT_EQ((*b)->schema_version(), 1);
}

// A server that accepts the TCP connection and never answers fails the open at the default
// connect_timeout, for a postgresql:// URI as for a key=value string (a URI used to get none and
// waited forever).
TEST(DatabaseSettingsTest, AServerThatNeverAnswersFailsTheOpenForAUriToo) {
  Poco::Net::ServerSocket silent(Poco::Net::SocketAddress("127.0.0.1", 0));
  const std::string port = std::to_string(silent.address().port());
  for (const std::string& conninfo :
       {"postgresql://strongroom@127.0.0.1:" + port + "/kms",
        "host=127.0.0.1 port=" + port + " dbname=kms user=strongroom"}) {
    DatabaseSettings settings;
    settings.engine = Engine::kPostgres;
    settings.conninfo = conninfo;
    Result<std::unique_ptr<Database>> opened = OpenDatabase(settings, {}, kSchema);
    ASSERT_FALSE(opened.ok()) << conninfo;
    EXPECT_EQ(opened.error().code(), ErrorCode::kUnavailable) << opened.error().ToString();
  }
}

}  // namespace
}  // namespace strongroom
