// A throwaway PostgreSQL 15 cluster of the test program's own: `initdb` and `pg_ctl start` in a
// fresh temporary directory, listening on a Unix socket in that directory only (no TCP port), with
// trust authentication for the socket's owner (the directory is 0700). Started by the first test
// that asks for a database, stopped (`pg_ctl stop -m fast`) and removed when the program ends.
//
// A watcher process started with the cluster stops and removes it when the test program is gone,
// however it ended (a failed assertion, an abort, a kill by ctest's timeout): it waits for the end
// of a pipe only the test program holds. fsync and the other durability settings stay as initdb
// leaves them, as an operator's cluster would have them.
//
// Tests run as root in CI, and initdb refuses root: as root, initdb, pg_ctl and the server run as
// the `postgres` system user, who owns the temporary directory; otherwise as the caller. When
// PostgreSQL 15 is not installed, NewDatabase fails (the test must fail, never skip) with a line
// saying what to install. The programs are those of kPostgresBin, or of STRONGROOM_POSTGRES_BIN.
//
// Shared: ctest runs each test in a process of its own, so a cluster per program is a cluster per
// test (initdb and a server start, seconds each). With STRONGROOM_TEST_POSTGRES naming a file that
// StartShared wrote (a ctest fixture's setup: postgres_cluster_host.cc, tests/CMakeLists.txt), the
// test's databases are made on that running cluster instead (named after the process, dropped at
// the program's end), and Pause and Resume are refused: other tests share the server.
#ifndef STRONGROOM_TESTS_SUPPORT_POSTGRES_CLUSTER_H_
#define STRONGROOM_TESTS_SUPPORT_POSTGRES_CLUSTER_H_

#include <string>

#include "strongroom/common/error.h"

namespace strongroom::testing {

inline constexpr char kPostgresBin[] = "/usr/lib/postgresql/15/bin";

class PostgresCluster {
 public:
  // A new, empty database for the running test (CREATE DATABASE), and the libpq connection string
  // that reaches it. The cluster is started at the first call; a start that failed fails every
  // later call with the same error.
  static Result<std::string> NewDatabase();

  // Stops the running cluster's server and keeps its data (a database server that went away);
  // Resume starts it again on the same socket, every database as it was. FAILED_PRECONDITION
  // before NewDatabase started the cluster.
  static Status Pause();
  static Status Resume();

  // Stops and removes the cluster, if one was started; waits until it is gone. Called at the end of
  // the test program (a gtest Environment); the watcher does it if the program never gets there.
  // A shared cluster is left running; the databases this program made on it are dropped.
  static void Shutdown();

  // Starts a cluster that outlives this process and writes its connection string (without a
  // database) to `file`, for the programs run with STRONGROOM_TEST_POSTGRES=`file`. It is stopped
  // and removed by StopShared(file), or by its watcher once the process `owner` (ctest) is gone.
  static Status StartShared(const std::string& file, int owner);
  static Status StopShared(const std::string& file);
};

}  // namespace strongroom::testing

#endif  // STRONGROOM_TESTS_SUPPORT_POSTGRES_CLUSTER_H_
