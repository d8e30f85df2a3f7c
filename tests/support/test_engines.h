// Store suites that run on both engines: instantiated once per engine, the instances named
// ".../sqlite" and ".../postgres" (tests/CMakeLists.txt labels them by that suffix), each test's
// database a SQLite file of its own or a new database on the test program's throwaway PostgreSQL
// cluster (postgres_cluster.h).
//
//   INSTANTIATE_TEST_SUITE_P(Engines, MyStoreTest, testing::kBothEngines, testing::EngineName);
//   SetUp:  Result<TestDatabase> where = TestDatabase::New(GetParam(), dir_ / "my.db");
//           Result<std::unique_ptr<Database>> db = where->Open(Sqlite(), Postgres());
#ifndef STRONGROOM_TESTS_SUPPORT_TEST_ENGINES_H_
#define STRONGROOM_TESTS_SUPPORT_TEST_ENGINES_H_

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <span>
#include <string>

#include "postgres_cluster.h"
#include "strongroom/common/database.h"

namespace strongroom::testing {

inline const auto kBothEngines =
    ::testing::Values(Database::Engine::kSqlite, Database::Engine::kPostgres);

inline std::string EngineName(const ::testing::TestParamInfo<Database::Engine>& engine) {
  return engine.param == Database::Engine::kPostgres ? "postgres" : "sqlite";
}

// One test's database on one engine; opened as often as the test likes (a reopen, a second
// process or node on the same database).
struct TestDatabase {
  Database::Engine engine = Database::Engine::kSqlite;
  std::string target;  // the SQLite file or the PostgreSQL connection string

  // On SQLite the file `sqlite_path` (created at the first Open); on PostgreSQL a new, empty
  // database.
  static Result<TestDatabase> New(Database::Engine engine,
                                  const std::filesystem::path& sqlite_path) {
    if (engine == Database::Engine::kSqlite) return TestDatabase{engine, sqlite_path.string()};
    SR_ASSIGN_OR_RETURN(std::string conninfo, PostgresCluster::NewDatabase());
    return TestDatabase{engine, std::move(conninfo)};
  }

  bool postgres() const { return engine == Database::Engine::kPostgres; }

  // Opens it with the engine's list of migrations.
  Result<std::unique_ptr<Database>> Open(std::span<const Migration> sqlite_migrations,
                                         std::span<const Migration> postgres_migrations,
                                         const DatabaseOptions& options = {}) const {
    return postgres() ? Database::OpenPostgres(target, postgres_migrations, options)
                      : Database::OpenSqlite(target, sqlite_migrations, options);
  }
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_TEST_ENGINES_H_
