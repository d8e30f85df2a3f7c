#!/usr/bin/env bash
# The kmsd failover run (issue 15; bar: from the kill -9 of a kmsd node to the first success
# through HAProxy <= 3 s). Builds Release into build-failover, starts a throwaway PostgreSQL 15
# cluster (initdb and pg_ctl in a temporary directory, a Unix socket only; as root, as the postgres
# user), sets up a throwaway KMS (tests/support/throwaway_kms.sh: SoftHSM2 token, root key,
# identity, TLS certificate, IdP, token) and starts two kmsd nodes on the one database (the same
# token directory, node ids node1 and node2), then HAProxy with deploy/haproxy/strongroom.cfg as it
# is but for its addresses (the kms frontend on 127.0.0.1, the kmsd backend's servers the two
# nodes; the core tier left out). Each round runs kms_failover through the front: its clients
# retrieve keys in a closed loop, it SIGKILLs one node (node1, node2, node1, ...) and measures each
# client's time from the kill to its first success; the script then waits until the front marked
# the node down, restarts it on its port and waits until the front marked it up again. It prints
# each round's worst client and the overall maximum, and stops and removes everything.
#
#   bench/run-kms-failover.sh [--rounds 5] [--clients 8] [--warmup 3] [--after 1]
#       [--signal KILL|STOP] [--config FILE] [--out DIR] [--keep] [--no-build] [--build DIR]
#
#   --signal STOP    freeze the node instead of killing it (a node that hangs; KILLed afterwards)
#   --config FILE    another HAProxy configuration of the same shape to localise (default: the
#                    deployment's own, deploy/haproxy/strongroom.cfg)
#   --no-build       use the programs already built in --build (default build-failover)
#   --keep           keep the temporary directories (tokens, database, configurations)
#
# Results go to --out: run.txt (what is printed), round-N.json (kms_failover's JSON), haproxy.log
# (each line prefixed with the Unix time it was written, for the front's DOWN and UP), haproxy.cfg,
# kmsd-N.log. Exit status: 0 when every round ran and no operation failed, whatever the times
# (the bar is judged by the reader, never asserted).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${repo}/build-failover"
rounds=5 clients=8 warmup=3 after=1 signal=KILL config="$repo/deploy/haproxy/strongroom.cfg"
out="" keep=0 no_build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --after) after="$2"; shift 2 ;;
    --signal) signal="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --no-build) no_build=1; shift ;;
    --build) build="$2"; shift 2 ;;
    *) echo "run-kms-failover.sh: unknown option $1 (see the comment at the top)" >&2; exit 64 ;;
  esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "--rounds is a whole number >= 1" >&2; exit 64; }
[ "$signal" = KILL ] || [ "$signal" = STOP ] || { echo "--signal is KILL or STOP" >&2; exit 64; }
[ -r "$config" ] || { echo "cannot read $config" >&2; exit 64; }
pg_bin=/usr/lib/postgresql/15/bin
haproxy=/usr/sbin/haproxy
for tool in "$pg_bin/initdb" "$haproxy"; do
  [ -x "$tool" ] || { echo "$tool is missing: scripts/setup-debian installs it" >&2; exit 69; }
done
out="${out:-${build}/kms-failover/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
python=/usr/bin/python3

if [ "$no_build" = 0 ]; then
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRONGROOM_WERROR=ON >/dev/null
  cmake --build "$build" --target kms_failover kmsd kmsctl strongroom-idp >/dev/null
fi
KMSCTL="$build/kms/kmsctl" IDP="$build/kms/strongroom-idp" KMSD="$build/kms/daemon/kmsd"
failover="$build/bench/kms_failover"

work="$(mktemp -d /tmp/sr-kms-failover.XXXXXX)"
# PostgreSQL's directory apart from $work (mode 0700, root's): the postgres user owns it.
pg="$(mktemp -d /tmp/sr-kms-failover-pg.XXXXXX)"
as_owner() {
  if [ "$(id -u)" = 0 ]; then /usr/sbin/runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres: "$pg"
declare -A node_pid=() node_port=()
haproxy_pid="" pg_started=0
stop_node() {
  local pid="${node_pid[$1]:-}"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true  # a frozen node ends too
    wait "$pid" 2>/dev/null || true
  fi
  node_pid[$1]=""
}
cleanup() {
  [ -n "$haproxy_pid" ] && { kill "$haproxy_pid" 2>/dev/null || true; wait "$haproxy_pid" 2>/dev/null || true; }
  for n in 1 2; do stop_node "$n"; done
  [ "$pg_started" = 1 ] && as_owner "$pg_bin/pg_ctl" stop -m fast -w -D "$pg/data" >/dev/null 2>&1
  if [ "$keep" = 1 ]; then echo "kept $work and $pg"; else rm -rf "$work" "$pg"; fi
}
trap cleanup EXIT

# PostgreSQL: its socket in $pg, no TCP.
as_owner "$pg_bin/initdb" -D "$pg/data" -U strongroom --auth=trust -E UTF8 --locale=C --no-sync \
  >"$pg/initdb.log" 2>&1 || { cat "$pg/initdb.log" >&2; exit 69; }
as_owner "$pg_bin/pg_ctl" start -w -t 60 -D "$pg/data" -l "$pg/server.log" \
  -o "-c listen_addresses='' -c unix_socket_directories='$pg' -c port=5432" >/dev/null ||
  { cat "$pg/server.log" >&2; exit 69; }
pg_started=1
psql -q -h "$pg" -U strongroom -d postgres -c "CREATE DATABASE strongroom_kms" >/dev/null
conninfo="host=$pg port=5432 dbname=strongroom_kms user=strongroom"

# shellcheck source=../tests/support/throwaway_kms.sh
. "$repo/tests/support/throwaway_kms.sh"
throwaway_kms_setup "$work" acme
# Two nodes' configurations: the throwaway one with its SQLite file replaced by the shared
# PostgreSQL database, each with its own HSM node id (the wrap budget counts per node).
for n in 1 2; do
  sed -e "/^database = /d" -e "s/^node_id = .*/node_id = node$n/" "$work/kms.ini" >"$work/kms-$n.ini"
  printf '\n%s\n' "[database]" "engine = postgresql" "conninfo = $conninfo" >>"$work/kms-$n.ini"
done

# Starts node N: on any free port the first time, on the same one afterwards (the front knows it).
start_node() {
  local n="$1" i port="${node_port[$1]:-0}"
  sed -i "s/^listen = .*/listen = 127.0.0.1:$port/" "$work/kms-$n.ini"
  rm -f "$work/port-$n"
  "$KMSD" --config "$work/kms-$n.ini" --port-file "$work/port-$n" 2>>"$out/kmsd-$n.log" &
  node_pid[$n]=$!
  for i in $(seq 1 600); do
    [ -s "$work/port-$n" ] && break
    kill -0 "${node_pid[$n]}" 2>/dev/null || { echo "kmsd node $n exited:" >&2; tail "$out/kmsd-$n.log" >&2; exit 69; }
    sleep 0.1
  done
  [ -s "$work/port-$n" ] || { echo "kmsd node $n did not start within 60 s" >&2; exit 69; }
  node_port[$n]="$(cat "$work/port-$n")"
}
start_node 1
start_node 2  # after node 1: they take turns migrating the schema anyway, but there is one

# The front: the configuration's kms frontend on a free loopback port, its kmsd backend's servers
# the two nodes (the first server line's options for each), the CA and the public name the
# throwaway ones; the core tier is left out.
front="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
awk -v front="$front" -v p1="${node_port[1]}" -v p2="${node_port[2]}" -v ca="$work/ca.pem" '
  /^[a-z]/ { section = $0; skip = ($1 == "frontend" && $2 == "core") || ($1 == "backend" && $2 == "cored") }
  skip { next }
  $1 == "bind" && section == "frontend kms" { print "    bind 127.0.0.1:" front; next }
  $1 == "server" && section == "backend kmsd" {
    if (servers++) next
    options = $0
    sub(/^ *server +[^ ]+ +[^ ]+/, "", options)
    gsub("/etc/strongroom/tls/ca.pem", ca, options)
    gsub("kms\\.example\\.com", "localhost", options)
    print "    server kmsd1 127.0.0.1:" p1 options
    print "    server kmsd2 127.0.0.1:" p2 options
    next
  }
  { print }' "$config" >"$out/haproxy.cfg"
grep -q "server kmsd2 127.0.0.1:${node_port[2]} " "$out/haproxy.cfg" ||
  { echo "$config has no kmsd backend with server lines to localise" >&2; exit 64; }
"$haproxy" -c -q -f "$out/haproxy.cfg" >&2 || exit 64
# Each line of HAProxy's output with the time it was written (Unix seconds), for DOWN and UP.
"$haproxy" -db -f "$out/haproxy.cfg" > >(
  while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$out/haproxy.log"
) 2>&1 &
haproxy_pid=$!

# The front's health: GET /health through it, as a client would (the CA, the name 127.0.0.1).
front_healthy() {
  "$python" - "$front" "$work/ca.pem" <<'PY'
import ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[2])
try:
    with urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[1]}/health", context=context, timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
PY
}
# Lines in HAProxy's log saying server kmsdN is "DOWN" or "UP".
state_lines() { grep -c "Server kmsd/kmsd$1 is $2" "$out/haproxy.log" || true; }
# Waits (at most 60 s) until there are more than $3 such lines; prints the last one's time.
wait_state() {
  local i
  for i in $(seq 1 600); do
    if [ "$(state_lines "$1" "$2")" -gt "$3" ]; then
      grep "Server kmsd/kmsd$1 is $2" "$out/haproxy.log" | tail -1 | cut -d' ' -f1
      return 0
    fi
    sleep 0.1
  done
  echo "the front did not mark kmsd$1 $2 within 60 s" >&2
  return 1
}
for i in $(seq 1 300); do front_healthy && break; sleep 0.2; done
front_healthy || { echo "the front does not answer /health" >&2; cat "$out/haproxy.log" >&2; exit 69; }

{
  echo "date: $(date -Is)"
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "haproxy: $("$haproxy" -v | head -1); postgresql: $("$pg_bin/postgres" --version)"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD)," \
    "$(git -C "$repo" status --short --untracked-files=no | wc -l) files modified in the tree"
  echo "config: $config"
  echo "front 127.0.0.1:$front; kmsd1 pid ${node_pid[1]} port ${node_port[1]}," \
    "kmsd2 pid ${node_pid[2]} port ${node_port[2]}; $clients clients, warm-up $warmup s," \
    "signal $signal, $rounds rounds"
} | tee "$out/run.txt"

status=0
worst_all=""
for round in $(seq 1 "$rounds"); do
  victim=$(( (round - 1) % 2 + 1 ))
  downs=$(state_lines "$victim" DOWN) ups=$(state_lines "$victim" UP)
  round_status=0
  "$failover" --url "https://127.0.0.1:$front" --ca "$work/ca.pem" \
    --cluster kms://kms.throwaway.test --token-file "$work/token-acme.jwt" \
    --victim-pid "${node_pid[$victim]}" --clients "$clients" --warmup "$warmup" --after "$after" \
    --signal "$signal" --json-out "$out/round-$round.json" >/dev/null || round_status=$?
  [ "$round_status" = 0 ] || status=1
  down_at=$(wait_state "$victim" DOWN "$downs") || status=1
  # The victim: reaped (KILL), or killed now (STOP), then started again on its port.
  kill -KILL "${node_pid[$victim]}" 2>/dev/null || true
  { wait "${node_pid[$victim]}"; } 2>/dev/null || true
  start_node "$victim"
  up_at=$(wait_state "$victim" UP "$ups") || status=1
  summary=$("$python" - "$out/round-$round.json" "${down_at:-}" "${up_at:-}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
at = r["signalled_at_unix_ms"]
def since(t):
    return f"{float(t) * 1000 - at:.0f} ms" if t and at else "?"
retried = sum(1 for c in r["per_client"] if c["sdk_retries_after_signal"] > 0)
worst = r["max_ms"]
print(f"{worst:.0f}" if worst is not None else "none",
      f"worst client {worst:.0f} ms, median {r['median_ms']:.0f} ms" if worst is not None
      else "no client recovered",
      f"(failover ms: {' '.join(f'{ms:.0f}' for ms in sorted(r['failover_ms']))});",
      f"errors {r['errors']}, not recovered {r['not_recovered']};",
      f"{retried} clients retried in the SDK;",
      f"the front marked it DOWN {since(sys.argv[2])} after the signal, UP again",
      f"{since(sys.argv[3])} after")
PY
  ) || summary="none (no result: kms_failover exited with status $round_status)"
  worst="${summary%% *}"
  echo "round $round: $signal kmsd$victim: ${summary#* }" | tee -a "$out/run.txt"
  if [ "$worst" != none ] && { [ -z "$worst_all" ] || [ "$worst" -gt "$worst_all" ]; }; then
    worst_all="$worst"
  fi
done
echo "overall: the worst client of $rounds rounds recovered ${worst_all:-never} ms after the" \
  "signal; results in $out" | tee -a "$out/run.txt"
exit "$status"
