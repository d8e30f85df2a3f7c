#!/usr/bin/env bash
# scripts/run-cluster, end to end (ctest cluster.run_cluster): PostgreSQL, two kmsd, two cored,
# HAProxy and indexerd started from nothing in a temporary directory on ports of their own, the
# walkthrough across the nodes, and everything stopped afterwards. Checks what the script shows:
# bob on core2 reads what alice wrote on core1 and downloads her file, a post on core1 reaches
# bob's stream through the core front, bob's search finds the file, each step names the nodes that
# served it (kms1 answered alice's KMS requests), one audit chain verifies, and no process of the
# cluster is left running.
#
#   run_cluster_test.sh REPO BUILD_DIR
set -euo pipefail
repo="$1" build="$2"
work="$(mktemp -d /tmp/sr-run-cluster-test.XXXXXX)"
state="$work/state"
chmod 0711 "$work"  # PostgreSQL's user passes through to state/pg
cleanup() {
  "$repo/scripts/run-cluster" stop --state "$state" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "FAILED: $1" >&2
  echo "--- run-cluster printed:" >&2
  cat "$work/out.txt" >&2
  exit 1
}

# run-cluster's own set-up (scripts/setup-debian) is quiet when everything is installed.
if ! "$repo/scripts/run-cluster" --bin "$build" --state "$state" --port-base 28400 \
  >"$work/out.txt" 2>&1; then
  for log in "$state"/*.log "$state"/pg/*.log; do
    [ -f "$log" ] && { echo "--- $log" >&2; tail -20 "$log" >&2; }
  done
  fail "run-cluster exited with an error"
fi
out="$(cat "$work/out.txt")"
has() { grep -qE -- "$1" <<<"$out" || fail "no line matching: $1"; }

has '^kmsd kms1 https://127\.0\.0\.1:28451, kms2 https://127\.0\.0\.1:28452 .*core1 8, core2 8 connections'
has '^  .*Bob, the launch moves to Tuesday\.'
has '^  \(identical to what alice sent\)$'
has '^  \(the front gave bob.s stream to core[12]\)$'
has '^  bob hears: .*Posted on core1, heard wherever bob listens\.'
has '^  #3 .*\[Launch\] alice@example\.test: .*checklist\.txt'
# alice's steps: her KMS requests go straight to kms1.
first_served="$(grep -m1 '^  served by:' <<<"$out")"
grep -qE 'kms1 answered [1-9][0-9]* KMS requests' <<<"$first_served" ||
  fail "kms1 answered none of alice's KMS requests: $first_served"
# bob's stream went through the core front: HAProxy gave a connection to a cored node.
grep -qE '^  served by: .*the front gave cored[12] [1-9][0-9]* connection' <<<"$out" ||
  fail "no step was served through the core front"
has '^  activity seq [0-9]+: post$'
has 'kmsctl audit verify'
grep -A1 'kmsctl audit verify' <<<"$out" | grep -qE '^  audit log intact: [0-9]+ records' ||
  fail "kmsctl audit verify did not report the chain intact"
has '^Stopped the cluster'

# Nothing left: the daemons, HAProxy and PostgreSQL are gone.
# shellcheck disable=SC1091
. "$state/cluster.env"
for pid in "$PID_kmsd_1" "$PID_kmsd_2" "$PID_cored_1" "$PID_cored_2" "$PID_indexerd" \
  "$PID_haproxy"; do
  if kill -0 "$pid" 2>/dev/null; then fail "process $pid of the cluster is still running"; fi
done
[ ! -e "$state/pg/data/postmaster.pid" ] || fail "PostgreSQL is still running"
echo "run-cluster: walkthrough across the nodes passed, everything stopped"
