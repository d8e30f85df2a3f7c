#!/usr/bin/env bash
# The throwaway PostgreSQL cluster (postgres_cluster.h) leaves nothing behind: after a test that
# passed, and after a test program killed in the middle of its test; and a machine without
# PostgreSQL fails the test, with a line saying what to install. A shared cluster
# (postgres_cluster_host) serves tests run with STRONGROOM_TEST_POSTGRES, outlives them, and goes
# with `stop` or with the process that started it.
# Usage: postgres_cluster_test.sh COMMON_TESTS POSTGRES_CLUSTER_HOST
set -euo pipefail
tests="$1"
host="$2"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # as root, the cluster's directory in it belongs to the postgres user
export TMPDIR="$tmp"
fail() { echo "FAIL: $*" >&2; exit 1; }
left() { find "$tmp" -mindepth 1 -maxdepth 1 -name 'sr-pg-*' | wc -l; }
# Waits (at most 30 s) until no cluster's directory is left; fails saying $1 otherwise.
none_left_or_fail() {
  for _ in $(seq 1 300); do
    [ "$(left)" -eq 0 ] && return 0
    sleep 0.1
  done
  fail "$1: $(ls "$tmp")"
}

"$tests" --gtest_filter='Engines/DatabaseEngineTest.FreshDatabaseIsMigratedToTheNewestVersion/postgres' \
  >"$tmp/passed.log" 2>&1 || { cat "$tmp/passed.log"; fail "the test did not pass"; }
[ "$(left)" -eq 0 ] || fail "a passed test left its cluster behind: $(ls "$tmp")"

"$tests" --gtest_filter='Engines/DatabaseEngineTest.ManyWritersTakeTurnsInsteadOfFailingBusy/postgres' \
  >"$tmp/killed.log" 2>&1 &
victim=$!
# Until its server listens (at most 30 s): initdb's bootstrap makes a postmaster.pid of its own.
for _ in $(seq 1 300); do
  ls "$tmp"/sr-pg-*/.s.PGSQL.5432 >/dev/null 2>&1 && break
  sleep 0.1
done
ls "$tmp"/sr-pg-*/.s.PGSQL.5432 >/dev/null 2>&1 || fail "the cluster never started"
kill -9 "$victim"
wait "$victim" 2>/dev/null || true
none_left_or_fail "a killed test program left its cluster behind"

if STRONGROOM_POSTGRES_BIN=/nonexistent "$tests" \
  --gtest_filter='Engines/DatabaseEngineTest.FreshDatabaseIsMigratedToTheNewestVersion/postgres' \
  >"$tmp/missing.log" 2>&1; then
  fail "the test passed without PostgreSQL"
fi
grep -q "PostgreSQL 15 is not installed" "$tmp/missing.log" || {
  cat "$tmp/missing.log"
  fail "no line saying PostgreSQL is missing"
}
grep -q "SKIPPED" "$tmp/missing.log" && fail "the test was skipped, not failed"
[ "$(left)" -eq 0 ] || fail "left a directory behind without PostgreSQL"
one_test='Engines/DatabaseEngineTest.FreshDatabaseIsMigratedToTheNewestVersion/postgres'
# Started by a process that stays (as ctest does), the shared cluster serves two test programs
# and is still there after them.
bash -c '"$1" start "$2" && exec sleep 600' sh "$host" "$tmp/shared" &
owner=$!
for _ in $(seq 1 600); do
  [ -s "$tmp/shared" ] && break
  sleep 0.1
done
[ -s "$tmp/shared" ] || fail "the shared cluster never started"
for run in 1 2; do
  STRONGROOM_TEST_POSTGRES="$tmp/shared" "$tests" --gtest_filter="$one_test" \
    >"$tmp/shared-$run.log" 2>&1 || { cat "$tmp/shared-$run.log"; fail "no test on the shared cluster"; }
done
[ "$(left)" -eq 1 ] || fail "the tests did not share one cluster: $(ls "$tmp")"
if STRONGROOM_TEST_POSTGRES="$tmp/none" "$tests" --gtest_filter="$one_test" >"$tmp/none.log" 2>&1; then
  fail "a test passed without the shared cluster it was told to use"
fi
grep -q "no shared test cluster" "$tmp/none.log" || { cat "$tmp/none.log"; fail "no reason given"; }
# Its owner gone, its watcher stops and removes it.
kill "$owner"
wait "$owner" 2>/dev/null || true
none_left_or_fail "the shared cluster outlived its owner"
# `stop` stops and removes it at once.
"$host" start "$tmp/shared" || fail "the shared cluster did not start again"
[ "$(left)" -eq 1 ] || fail "no shared cluster: $(ls "$tmp")"
"$host" stop "$tmp/shared" || fail "stop failed"
[ "$(left)" -eq 0 ] || fail "stop left the shared cluster behind: $(ls "$tmp")"
echo "ok"
