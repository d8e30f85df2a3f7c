#!/usr/bin/env bash
# CTest of the load generator itself (bench/kms_load): against a throwaway KMS
# (tests/support/throwaway_kms.sh: a real SoftHSM2 token, kmsd on 127.0.0.1 port 0), every
# scenario runs briefly on two event loops and must be answered with no error and no client left
# out; a 503 with Retry-After must count as overload, not as an error; and a kmsd killed during
# the run must show as errors (exit status 3) in a run that still ends. Fails (never skips) when
# anything is missing. Checks behaviour only: no figure is asserted.
#
#   kms_load_test.sh KMS_LOAD KMSD KMSCTL IDP
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 KMS_LOAD KMSD KMSCTL IDP" >&2; exit 64; }
LOAD="$1" KMSD="$2" KMSCTL="$3" IDP="$4"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../tests/support/throwaway_kms.sh
. "$here/../tests/support/throwaway_kms.sh"

dir="$(mktemp -d /tmp/sr-kms-load-test.XXXXXX)"
trap 'throwaway_kms_stop || true; rm -rf "$dir"' EXIT
throwaway_kms_setup "$dir" "acme globex"
throwaway_kms_start "$dir/kmsd.log"

failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
# A number field of a kms_load JSON result.
field() { /usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

run() {  # name, then kms_load arguments; the exit status is kept in $status
  status=0
  "$LOAD" --url "$KMS_URL" --ca "$dir/ca.pem" --token-file "$dir/token-acme.jwt" \
    --token-file "$dir/token-globex.jwt" --server-pid "$KMSD_PID" --json-out "$dir/$1.json" \
    "${@:2}" >"$dir/$1.txt" 2>&1 || status=$?
}

# Every scenario on 2 event loops, 5 clients (so one loop has 3, the other 2), both organizations.
for scenario in info retrieve create create-bind mixed; do
  run "$scenario" --scenario "$scenario" --clients 5 --threads 2 --warmup 0.2 --duration 1 \
    --keys 5 --batch 3
  if [ "$status" -ne 0 ]; then
    fail "$scenario: kms_load exited $status"
    cat "$dir/$scenario.txt" >&2
    continue
  fi
  [ "$(field "$dir/$scenario.json" errors)" = 0 ] || fail "$scenario: errors"
  [ "$(field "$dir/$scenario.json" setup_errors)" = 0 ] || fail "$scenario: set-up errors"
  [ "$(field "$dir/$scenario.json" threads)" = 2 ] || fail "$scenario: not on 2 event loops"
  /usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1]));
sys.exit(0 if len(r["per_client_requests_per_s"]) == 5 and min(r["per_client_requests_per_s"]) > 0
         else 1)' "$dir/$scenario.json" || fail "$scenario: a client got no answer"
  grep -q "server CPU .* us per request" "$dir/$scenario.txt" || fail "$scenario: no server CPU"
  grep -q "generator CPU .* us per request" "$dir/$scenario.txt" ||
    fail "$scenario: no generator CPU"
done
[ "$(field "$dir/create-bind.json" keys)" -gt 0 ] || fail "create-bind: no key bound"

# Open loop: 100 requests/s over 4 clients for 1 s, on one loop.
run open-loop --scenario retrieve --clients 4 --rate 100 --warmup 0.2 --duration 1 --keys 2
if [ "$status" != 0 ] || [ "$(field "$dir/open-loop.json" requests)" = 0 ]; then
  fail "open loop: exit $status, or nothing answered"
fi

# The slow-client attack held open during a run: still answered.
run attack --scenario retrieve --clients 2 --warmup 0.2 --duration 1 --keys 2 \
  --idle-connections 20 --trickling-connections 4
if [ "$status" != 0 ] || ! grep -q "holding 20 idle and 4 trickling" "$dir/attack.txt"; then
  fail "attack: exit $status"
fi

# kmsd killed during the measured window: errors, exit status 3, and the run still ends.
( sleep 1.5; kill -KILL "$KMSD_PID" ) &
run killed --scenario retrieve --clients 3 --warmup 0.5 --duration 2 --keys 2
wait
if [ "$status" != 3 ] || [ "$(field "$dir/killed.json" errors)" = 0 ]; then
  fail "a killed kmsd: exit $status, errors $(field "$dir/killed.json" errors) (want 3, > 0)"
fi
wait "$KMSD_PID" 2>/dev/null || true
KMSD_PID=""

# Overload: one request at a time and no line; 8 clients retrying at once get 503s with
# Retry-After, counted apart from errors.
sed -i 's/^\[kms\]$/[kms]\nmax_in_flight = 1\nmax_queued = 0/' "$dir/kms.ini"
throwaway_kms_start "$dir/kmsd-overload.log"
run overload --scenario retrieve --clients 8 --warmup 0.2 --duration 1 --keys 2
[ "$status" = 0 ] || fail "overload: exit $status"
[ "$(field "$dir/overload.json" overloaded_503)" -gt 0 ] || fail "overload: no 503 counted"
[ "$(field "$dir/overload.json" errors)" = 0 ] || fail "overload: a 503 counted as an error"

if [ "$failures" -ne 0 ]; then
  echo "--- kmsd's log" >&2
  cat "$dir/kmsd.log" >&2
  exit 1
fi
echo "kms_load: every check passed"
