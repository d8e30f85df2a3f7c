// The KMS's database on either engine, for the suites that run on both (test_engines.h:
// instantiated once per engine, named ".../sqlite" and ".../postgres").
// SQLite is a file in a directory of the test's; PostgreSQL a database of its own on the test
// program's throwaway cluster (postgres_cluster.h; a program that uses it links
// sr_postgres_cluster).
//
//   class ThingTest : public ::testing::TestWithParam<Database::Engine> { ... };
//   INSTANTIATE_TEST_SUITE_P(Engines, ThingTest, testing::kBothEngines, testing::EngineName);
#ifndef STRONGROOM_TESTS_SUPPORT_KMS_DATABASE_H_
#define STRONGROOM_TESTS_SUPPORT_KMS_DATABASE_H_

#include <filesystem>
#include <memory>
#include <string>

#include "strongroom/common/database.h"
#include "strongroom/common/error.h"
#include "strongroom/kms/kms_store.h"
#include "test_engines.h"

namespace strongroom::testing {

// Where a new, empty KMS database is: the SQLite file kms.db in `dir`, or the connection string
// of a new database on the cluster.
inline Result<std::string> NewKmsDatabase(Database::Engine engine,
                                          const std::filesystem::path& dir) {
  SR_ASSIGN_OR_RETURN(TestDatabase where, TestDatabase::New(engine, dir / "kms.db"));
  return where.target;
}

// Opens the KMS database at `target` (NewKmsDatabase) with the engine's migrations, as kmsd (or
// another kmsd node, or kmsctl) opens it.
inline Result<std::unique_ptr<Database>> OpenKmsDatabase(Database::Engine engine,
                                                         const std::string& target,
                                                         const DatabaseOptions& options = {}) {
  return TestDatabase{engine, target}.Open(kms::KmsStore::Migrations(),
                                           kms::KmsStore::PostgresMigrations(), options);
}

// A blob literal of the bytes `hex` (lowercase hex digits) in the engine's SQL.
inline std::string BytesLiteral(Database::Engine engine, const std::string& hex) {
  return engine == Database::Engine::kPostgres ? "'\\x" + hex + "'::bytea" : "x'" + hex + "'";
}

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_KMS_DATABASE_H_
