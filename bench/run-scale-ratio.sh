#!/usr/bin/env bash
# The scale-out ratio run (issue 15). On a machine of 2 cores two nodes cannot show more
# throughput than one, so this measures, in one run, what the cluster costs: sealed key retrieval
# (kms_load retrieve) and post + fan-out (core_load post, its WebSocket participants spread over
# the nodes) against
#   single   one kmsd and one cored on SQLite, each reached directly (tests/support/throwaway_kms.sh
#            and a cored beside it, as bench/run-kms-load.sh and bench/run-core-load.sh set up), and
#   cluster  scripts/run-cluster --keep --no-walkthrough: two kmsd and two cored nodes on one
#            PostgreSQL 15 and HAProxy in front of each tier, reached through the fronts
#            (its indexerd stopped, since the single node has none);
# alternating single and cluster, --rounds times, with the same daemon limits on both. It reports
# each figure's median over the rounds, the cluster's as a ratio of the single node's (bars:
# retrieval >= 0.6, post + fan-out >= 0.5), the CPU time per request of every tier over the
# generators' measured windows (kmsd, cored, PostgreSQL's server processes, HAProxy, the
# generator), so that a bigger machine's figures can be predicted, and where PostgreSQL's time
# goes: pg_stat_statements' statements by total time for each cluster run, and with --perf a
# system-wide profile (perf record -a) of one cluster post run by process and library.
#
#   bench/run-scale-ratio.sh [--rounds 3] [--duration 20] [--warmup 5] [--kms-clients 16]
#       [--post-clients 16] [--participants 10] [--users 10] [--scenarios retrieve,post] [--perf]
#       [--bin DIR] [--out DIR]
#
#   --bin DIR   the programs of this CMake build directory (default: build/, built by
#               scripts/build, RelWithDebInfo); the same binaries serve both set-ups
#
# Results go to --out (default build/scale-ratio/DATE): run.txt (what is printed), a JSON per run
# (<scenario>-<setup>-<round>.json), pg-<scenario>-<round>.txt (pg_stat_statements), summary.json,
# the daemons' logs. Exit status 0 when every run ran without errors, whatever the ratios (the bars
# are judged by the reader, never asserted).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds=3 duration=20 warmup=5 kms_clients=16 post_clients=16 participants=10 users=10 perf=0
bin="" out="" scenarios=retrieve,post
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --kms-clients) kms_clients="$2"; shift 2 ;;
    --post-clients) post_clients="$2"; shift 2 ;;
    --participants) participants="$2"; shift 2 ;;
    --users) users="$2"; shift 2 ;;
    --scenarios) scenarios="$2"; shift 2 ;;
    --perf) perf=1; shift ;;
    --bin) bin="$(cd "$2" && pwd)"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "run-scale-ratio.sh: unknown option $1 (see the comment at the top)" >&2; exit 64 ;;
  esac
done
for n in "$rounds" "$duration" "$warmup" "$kms_clients" "$post_clients" "$participants" "$users"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "options take whole numbers >= 1, got $n" >&2; exit 64; }
done
if [ -z "$bin" ]; then
  "$repo/scripts/build" >/dev/null
  bin="$repo/build"
fi
out="${out:-$bin/scale-ratio/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
python=/usr/bin/python3
kms_load="$bin/bench/kms_load" core_load="$bin/bench/core_load"
KMSCTL="$bin/kms/kmsctl" IDP="$bin/kms/strongroom-idp" KMSD="$bin/kms/daemon/kmsd"
cored="$bin/core/cored"
for program in "$kms_load" "$core_load" "$KMSCTL" "$IDP" "$KMSD" "$cored"; do
  [ -x "$program" ] || { echo "$program is missing (build $bin first)" >&2; exit 69; }
done
# The same limits on both set-ups: cored's per-user rate limit out of the way of the load.
core_limits=(rate_per_s=100000 rate_burst=200000 max_connections=256)

work="$(mktemp -d /tmp/sr-scale-ratio.XXXXXX)"
cored_pid="" cluster_up=0
# shellcheck source=../tests/support/throwaway_kms.sh
. "$repo/tests/support/throwaway_kms.sh"
cleanup() {
  throwaway_kms_stop >/dev/null 2>&1 || true
  if [ -n "$cored_pid" ] && kill -0 "$cored_pid" 2>/dev/null; then
    kill -TERM "$cored_pid"
    wait "$cored_pid" 2>/dev/null || true
  fi
  [ "$cluster_up" = 1 ] && "$repo/scripts/run-cluster" stop >/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# == single: kmsd and cored on SQLite, one node each ==
throwaway_kms_setup "$work/kms" acme
throwaway_kms_start "$out/single-kmsd.log"
single_kms_url="$KMS_URL"
# cored presents kmsd's certificate (127.0.0.1, from the throwaway CA).
mkdir -p "$work/files"
{
  printf '%s\n' "[core]" "database = $work/core.db" "files_dir = $work/files" \
    "listen = 127.0.0.1:0" "tls_cert = $work/kms/tls.pem" "tls_key = $work/kms/tls.key"
  for setting in "${core_limits[@]}"; do echo "${setting/=/ = }"; done
  printf '\n%s\n' "[jwt]" "issuers = acme" "" "[jwt.acme]" "issuer = https://idp.acme.test" \
    "org = acme" "jwks = $work/kms/idp-acme/jwks.json"
} >"$work/core.ini"
"$cored" --config "$work/core.ini" --port-file "$work/core.port" 2>"$out/single-cored.log" &
cored_pid=$!
for _ in $(seq 1 600); do
  [ -s "$work/core.port" ] && break
  kill -0 "$cored_pid" 2>/dev/null || { echo "cored exited:" >&2; cat "$out/single-cored.log" >&2; exit 1; }
  sleep 0.1
done
single_core_url="https://127.0.0.1:$(cat "$work/core.port")"
single_tokens=()
for i in $(seq 0 $((users - 1))); do
  "$IDP" token --dir "$work/kms/idp-acme" --subject "load-user-$i@acme.test" --audience core \
    --ttl 86400 --out "$work/single-core-$i.jwt"
  single_tokens+=(--token-file "$work/single-core-$i.jwt")
done

# == cluster: scripts/run-cluster's, kept running, without the walkthrough ==
cluster_args=(--bin "$bin" --keep --no-walkthrough)
for setting in "${core_limits[@]}"; do cluster_args+=(--core-setting "$setting"); done
cluster_up=1
"$repo/scripts/run-cluster" "${cluster_args[@]}" >"$out/cluster-start.txt" 2>&1 ||
  { cat "$out/cluster-start.txt" >&2; exit 1; }
# shellcheck disable=SC1091
. "$repo/state-cluster/cluster.env"
kill -TERM "$PID_indexerd"
postmaster="$(head -1 "$STATE/pg/data/postmaster.pid")"
"$IDP" token --dir "$IDP_DIR" --subject "load-user@$ORG.test" --audience kms --ttl 86400 \
  --out "$work/cluster-kms.jwt"
cluster_tokens=()
for i in $(seq 0 $((users - 1))); do
  "$IDP" token --dir "$IDP_DIR" --subject "load-user-$i@$ORG.test" --audience core --ttl 86400 \
    --out "$work/cluster-core-$i.jwt"
  cluster_tokens+=(--token-file "$work/cluster-core-$i.jwt")
done
pg_query() { psql -X -q -h "$STATE/pg" -p 5432 -U strongroom -d strongroom_core "$@"; }

{
  echo "date: $(date -Is)"
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD)," \
    "$(git -C "$repo" status --short --untracked-files=no | wc -l) files modified in the tree;" \
    "binaries $bin ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$bin/CMakeCache.txt"))"
  echo "postgresql: $(/usr/lib/postgresql/15/bin/postgres --version); haproxy: $(/usr/sbin/haproxy -v | head -1)"
  echo "single: kmsd $single_kms_url (pid $KMSD_PID), cored $single_core_url (pid $cored_pid), SQLite"
  echo "cluster: kmsd pids $PID_kmsd_1,$PID_kmsd_2 behind $KMS_FRONT; cored pids" \
    "$PID_cored_1,$PID_cored_2 behind $CORE_FRONT; PostgreSQL postmaster $postmaster;" \
    "HAProxy $PID_haproxy"
  echo "load: retrieve $kms_clients clients (100 keys each); post $post_clients posting clients," \
    "$participants WebSocket participants, $users users; warm-up $warmup s, window $duration s," \
    "$rounds rounds"
} | tee "$out/run.txt"

status=0
hz=$(getconf CLK_TCK)
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }
run() {  # scenario, setup, round
  local scenario="$1" setup="$2" round="$3" json b0 i0 b1 i1 perf_pid=""
  json="$out/$scenario-$setup-$round.json"
  local tiers=() args=()
  if [ "$setup" = single ]; then
    tiers=(--pid "kmsd=$KMSD_PID" --pid "cored=$cored_pid")
  else
    tiers=(--pid "kmsd=$PID_kmsd_1,$PID_kmsd_2" --pid "cored=$PID_cored_1,$PID_cored_2"
      --pid "postgres=$postmaster" --pid "haproxy=$PID_haproxy")
    pg_query -c "SELECT pg_stat_statements_reset()" >/dev/null
  fi
  if [ "$scenario" = retrieve ]; then
    if [ "$setup" = single ]; then
      args=("$kms_load" --url "$single_kms_url" --ca "$work/kms/ca.pem"
        --token-file "$work/kms/token-acme.jwt")
    else
      args=("$kms_load" --url "$KMS_FRONT" --ca "$CA" --token-file "$work/cluster-kms.jwt")
    fi
    args+=(--scenario retrieve --clients "$kms_clients" --keys 100)
  else
    if [ "$setup" = single ]; then
      args=("$core_load" --url "$single_core_url" --ca "$work/kms/ca.pem" "${single_tokens[@]}")
    else
      args=("$core_load" --url "$CORE_FRONT" --ca "$CA" "${cluster_tokens[@]}")
    fi
    args+=(--scenario post --clients "$post_clients" --participants "$participants")
  fi
  if [ "$perf" = 1 ] && [ "$setup" = cluster ] && [ "$scenario" = post ] && [ "$round" = 1 ]; then
    ( sleep "$((warmup + 4))"
      exec perf record -a -g -F 199 -o "$out/perf-cluster-post.data" -- sleep "$((duration - 4))"
    ) >/dev/null 2>&1 &
    perf_pid=$!
  fi
  read -r b0 i0 < <(busy)
  "${args[@]}" "${tiers[@]}" --duration "$duration" --warmup "$warmup" --json-out "$json" \
    >"$out/$scenario-$setup-$round.txt" 2>&1 || { status=1; tail -5 "$out/$scenario-$setup-$round.txt" >&2; }
  read -r b1 i1 < <(busy)
  [ -n "$perf_pid" ] && { wait "$perf_pid" || true; }
  "$python" - "$json" "$((100 * (b1 - b0) / (b1 - b0 + i1 - i0)))" <<'PY' | tee -a "$out/run.txt"
import json, sys
r = json.load(open(sys.argv[1]))
cpu = r.get("cpu_us_per_request", {})
tiers = ", ".join(f"{k} {v:.0f}" for k, v in cpu.items() if k != "machine")
print(f"{r['scenario']:8s} {sys.argv[1].rsplit('/', 1)[1][:-5]:22s} {r['requests_per_s']:8.0f}/s"
      f"  errors {r['errors']}, 503 {r['overloaded_503']}; CPU us/request: {tiers};"
      f" the machine {cpu.get('machine', 0):.0f}, busy {sys.argv[2]}%")
PY
  if [ "$setup" = cluster ]; then
    pg_query -c "SELECT d.datname AS db, s.calls, round(s.total_exec_time::numeric, 1) AS total_ms,
      round((s.total_exec_time / greatest(s.calls, 1) * 1000)::numeric, 1) AS mean_us,
      s.rows, s.wal_bytes, left(regexp_replace(s.query, '\s+', ' ', 'g'), 110) AS query
      FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
      ORDER BY s.total_exec_time DESC LIMIT 15" >"$out/pg-$scenario-$round.txt"
  fi
}

for round in $(seq 1 "$rounds"); do
  order=(single cluster)
  [ $((round % 2)) = 0 ] && order=(cluster single)
  for scenario in ${scenarios//,/ }; do
    for setup in "${order[@]}"; do run "$scenario" "$setup" "$round"; done
  done
done

"$python" - "$out" "$rounds" "$scenarios" <<'PY' | tee -a "$out/run.txt"
import json, statistics, sys
out, rounds, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
bars = {"retrieve": 0.6, "post": 0.5}
summary = {}
print()
for scenario, label in (("retrieve", "sealed retrieval"), ("post", "post + fan-out")):
    if scenario not in scenarios:
        continue
    runs = {s: [json.load(open(f"{out}/{scenario}-{s}-{r}.json")) for r in range(1, rounds + 1)]
            for s in ("single", "cluster")}
    rate = {s: statistics.median(r["requests_per_s"] for r in runs[s]) for s in runs}
    ratios = [c["requests_per_s"] / s["requests_per_s"] for s, c in zip(runs["single"], runs["cluster"])]
    cpu = {s: {t: statistics.median(r["cpu_us_per_request"][t] for r in runs[s])
               for t in runs[s][0]["cpu_us_per_request"]} for s in runs}
    ratio = rate["cluster"] / rate["single"]
    summary[scenario] = {"single_per_s": rate["single"], "cluster_per_s": rate["cluster"],
                         "ratio_of_medians": ratio, "ratio_per_round": ratios, "bar": bars[scenario],
                         "cpu_us_per_request": cpu}
    print(f"{label}: single node (SQLite) {rate['single']:.0f}/s, two nodes behind HAProxy "
          f"(PostgreSQL) {rate['cluster']:.0f}/s: ratio {ratio:.2f} (bar {bars[scenario]}; "
          f"per round {' '.join(f'{x:.2f}' for x in ratios)})")
    for s in ("single", "cluster"):
        servers = sum(v for k, v in cpu[s].items() if k not in ("generator", "machine"))
        other = cpu[s]["machine"] - servers - cpu[s]["generator"]
        print(f"  CPU us per request, {s}: "
              + ", ".join(f"{k} {v:.0f}" for k, v in cpu[s].items() if k != "machine")
              + f"; servers together {servers:.0f}; the machine {cpu[s]['machine']:.0f}, of which"
              f" {other:.0f} neither servers nor generator (kernel, other processes)")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=2)
PY
if [ "$perf" = 1 ] && [ -s "$out/perf-cluster-post.data" ]; then
  set +o pipefail  # head closes the pipes early
  {
    echo "# the cluster's post run, whole machine: samples by process"
    perf report -i "$out/perf-cluster-post.data" --no-children --sort comm --stdio -g none 2>/dev/null |
      grep '%' | grep -v '^#' | head -15
    echo "# by process and library"
    perf report -i "$out/perf-cluster-post.data" --no-children --sort comm,dso --stdio -g none \
      2>/dev/null | grep '%' | grep -v '^#' | head -30
    echo "# postgres: top symbols"
    perf report -i "$out/perf-cluster-post.data" --no-children --comms postgres --sort dso,symbol \
      --stdio -g none 2>/dev/null | grep '%' | grep -v '^#' | head -30
  } >"$out/perf-cluster-post.txt"
  echo "profile of the cluster's post run: $out/perf-cluster-post.txt" | tee -a "$out/run.txt"
fi
echo "results in $out" | tee -a "$out/run.txt"
exit "$status"
