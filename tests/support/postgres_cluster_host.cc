// A throwaway PostgreSQL cluster that several test processes share (postgres_cluster.h): ctest
// runs `start FILE` as a fixture's setup and `stop FILE` as its cleanup, and the tests that require
// the fixture run with STRONGROOM_TEST_POSTGRES=FILE (tests/CMakeLists.txt, sr_discover_tests
// SHARED_CLUSTER). Should ctest end without the cleanup, the cluster's watcher stops it.
//
//   postgres_cluster_host start FILE   ; exit 0 once the cluster serves and FILE names it
//   postgres_cluster_host stop FILE    ; stops and removes it
#include <unistd.h>

#include <cstdio>
#include <string>

#include "postgres_cluster.h"

int main(int argc, char** argv) {
  using strongroom::testing::PostgresCluster;
  const std::string command = argc == 3 ? argv[1] : "";
  if (command != "start" && command != "stop") {
    std::fprintf(stderr, "usage: %s start|stop FILE\n", argv[0]);
    return 64;
  }
  const strongroom::Status done = command == "start"
                                      ? PostgresCluster::StartShared(argv[2], ::getppid())
                                      : PostgresCluster::StopShared(argv[2]);
  if (!done.ok()) {
    std::fprintf(stderr, "%s\n", done.error().ToString().c_str());
    return 1;
  }
  return 0;
}
