#!/usr/bin/env bash
# The core load run: builds Release into build-core-load, sets up a throwaway cored (TLS
# certificate from a test CA made here with openssl, a development IdP with tokens for the users
# and the indexer, [core] listen 127.0.0.1:0 with --port-file), starts the real cored, runs
# core_load scenarios against it while sampling cored's RSS every second, and stops it. With the
# relay scenario it also sets up a throwaway kmsd (tests/support/throwaway_kms.sh) that attaches
# to cored through the relay. Results (JSON and text per scenario, RSS samples, the daemons'
# logs) go to --out.
#
#   bench/run-core-load.sh [--scenarios post,history,relay] [--clients 16] [--participants 10]
#       [--users 10] [--conversations 1] [--duration 30] [--warmup 5] [--rate R]
#       [--content-bytes 200] [--preload N] [--preload-via direct|http]
#       [--history-clients 1,16] [--relay-clients 1,16] [--relay-connections 16]
#       [--rate-per-s 100000] [--max-connections 256] [--perf] [--callgrind] [--out DIR] [--keep]
#       [--build DIR] [--generator PATH]
#
#   --clients N[,M]    posting clients; a list runs the post scenario once per count
#   --rate R           open loop for post and history: R requests/s over the clients
#   --users N          users with a token; posting client i is user i % N, WebSocket j user j % N
#   --preload N        before history: a conversation of N activities. direct (default): the
#                      core_preload tool through CoreService in process against cored's database
#                      file before cored starts (group commit, full fsync, as cored); http: posted
#                      through cored by core_load --scenario preload (timed either way)
#   --rate-per-s N     cored's per-user request rate limit ([core] rate_per_s, burst 2x); the
#                      default, 100,000/s, keeps the limiter out of the way of the load
#   --relay-connections N  kmsd's [relay] connections (requests relayed at once)
#   --perf             perf record (DWARF call graphs, 199 Hz) of cored during each scenario's
#                      measured window; top symbols in perf-<s>.txt, inclusive in -children.txt
#   --callgrind        run cored under valgrind --tool=callgrind (callgrind.out in --out): its
#                      instruction count, which a loaded machine does not change, for comparing
#                      builds (about 50 times slower: give a low --rate)
#   --build DIR        build into (and run from) DIR instead of build-core-load (Release either way)
#   --generator PATH   run this core_load binary instead of the one built (to compare two cored
#                      builds, an older tree's among them, with the same generator)
#   --keep             keep the throwaway directory (tokens, database, keys) for inspection
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${repo}/build-core-load"
scenarios=post,history,relay clients=16 participants=10 users=10 conversations=1 duration=30
warmup=5 rate=0 content_bytes=200 preload=0 preload_via=direct history_clients=1,16
relay_clients=1,16 relay_connections=16 rate_per_s=100000 max_connections=256 perf=0 keep=0
callgrind=0
out="" generator=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scenarios) scenarios="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --participants) participants="$2"; shift 2 ;;
    --users) users="$2"; shift 2 ;;
    --conversations) conversations="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --content-bytes) content_bytes="$2"; shift 2 ;;
    --preload) preload="$2"; shift 2 ;;
    --preload-via) preload_via="$2"; shift 2 ;;
    --history-clients) history_clients="$2"; shift 2 ;;
    --relay-clients) relay_clients="$2"; shift 2 ;;
    --relay-connections) relay_connections="$2"; shift 2 ;;
    --rate-per-s) rate_per_s="$2"; shift 2 ;;
    --max-connections) max_connections="$2"; shift 2 ;;
    --perf) perf=1; shift ;;
    --callgrind) callgrind=1; shift ;;
    --keep) keep=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --build) build="$(cd "$2" && pwd)"; shift 2 ;;
    --generator) generator="$2"; shift 2 ;;
    *) echo "run-core-load.sh: unknown option $1 (see the comment at the top)" >&2; exit 64 ;;
  esac
done
case "$preload_via" in direct|http) ;; *) echo "--preload-via is direct or http" >&2; exit 64 ;; esac
[[ ",$scenarios," == *,relay,* ]] && with_relay=1 || with_relay=0
out="${out:-${build}/core-load/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

targets=(core_load core_preload core_service_bench cored strongroom-idp)
[ "$with_relay" = 1 ] && targets+=(kmsd kmsctl)
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRONGROOM_WERROR=ON >/dev/null
cmake --build "$build" --target "${targets[@]}" -- -j2 >/dev/null
load="${generator:-$build/bench/core_load}"
preloader="$build/bench/core_preload"
cored="$build/core/cored"
idp="$build/kms/strongroom-idp"

work="$(mktemp -d /tmp/sr-core-load.XXXXXX)"
cored_pid="" rss_pid=""
KMSCTL="$build/kms/kmsctl" IDP="$idp" KMSD="$build/kms/daemon/kmsd"
# shellcheck source=../tests/support/throwaway_kms.sh
. "$repo/tests/support/throwaway_kms.sh"
cleanup() {
  [ -n "$rss_pid" ] && kill "$rss_pid" 2>/dev/null || true
  [ "$with_relay" = 1 ] && { throwaway_kms_stop || true; }
  if [ -n "$cored_pid" ] && kill -0 "$cored_pid" 2>/dev/null; then
    kill -TERM "$cored_pid"
    wait "$cored_pid" || true
  fi
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# TLS: a test CA and a certificate for 127.0.0.1 from it.
throwaway_ca "$work" "Strongroom core load CA"
throwaway_tls_cert "$work"

# Identity: one development IdP (organization acme), a core token per user and the indexer's.
"$idp" init --dir "$work/idp" --issuer "https://idp.acme.test" >/dev/null
tokens=()
subjects=()
for i in $(seq 0 $((users - 1))); do
  "$idp" token --dir "$work/idp" --subject "load-user-$i@acme.test" --audience core \
    --ttl 86400 --out "$work/token-$i.jwt"
  tokens+=(--token-file "$work/token-$i.jwt")
  subjects+=("load-user-$i@acme.test")
done
"$idp" token --dir "$work/idp" --subject "indexer@acme.test" --audience core --ttl 86400 \
  --out "$work/token-indexer.jwt"

mkdir -p "$work/files"
relay_lines=""
if [ "$with_relay" = 1 ]; then
  (umask 077; openssl rand -hex 32 >"$work/relay.token")
  relay_lines=$(printf '%s\n' "relays = kms1" "" "[relay.kms1]" \
    "cluster = kms://kms.throwaway.test" "token_file = $work/relay.token")
fi
{
  printf '%s\n' "[core]" "database = $work/core.db" "files_dir = $work/files" \
    "listen = 127.0.0.1:0" "tls_cert = $work/tls.pem" "tls_key = $work/tls.key" \
    "indexer = indexer@acme.test" "indexer_org = acme" "max_connections = $max_connections" \
    "rate_per_s = $rate_per_s" "rate_burst = $((rate_per_s * 2))"
  [ -n "$relay_lines" ] && printf '%s\n' "$relay_lines"
  printf '\n%s\n' "[jwt]" "issuers = acme" "" "[jwt.acme]" "issuer = https://idp.acme.test" \
    "org = acme" "jwks = $work/idp/jwks.json"
} >"$work/core.ini"
cp "$work/core.ini" "$out/core.ini"  # paths only: tokens and keys stay in $work

{
  echo "date: $(date -Is)"
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD)," \
    "$(git -C "$repo" status --short --untracked-files=no | wc -l) files modified in the tree"
  echo "settings: $users users, $clients posting clients$([ "$rate" != 0 ] && echo " (open loop at $rate/s)"), $participants WebSocket participants," \
    "$conversations conversation(s), content $content_bytes bytes;" \
    "cored rate_per_s $rate_per_s (burst $((rate_per_s * 2))) per user, max_connections $max_connections"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/run.txt"

status=0
conversation=""
if [ "$preload" != 0 ] && [ "$preload_via" = direct ]; then
  participant_args=()
  for s in "${subjects[@]}"; do participant_args+=(--participant "$s"); done
  started=$(date +%s.%N)
  "$preloader" --database "$work/core.db" --files-dir "$work/files" --user "${subjects[0]}" \
    --org acme "${participant_args[@]}" --count "$preload" --threads 64 \
    --content-bytes "$content_bytes" --conversation-out "$work/conversation" 2>>"$out/preload.log" |
    tee -a "$out/run.txt" || status=$?
  ended=$(date +%s.%N)
  conversation="$(cat "$work/conversation")"
  echo "preloaded $preload activities in process (core_preload) in $(echo "$ended - $started" | bc) s;" \
    "database $(du -sh "$work" | cut -f1) on disk; load average $(cut -d' ' -f1-3 /proc/loadavg)" |
    tee -a "$out/run.txt"
fi

rm -f "$work/port"
wrapper=()
[ "$callgrind" = 1 ] && wrapper=(valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out")
"${wrapper[@]}" "$cored" --config "$work/core.ini" --port-file "$work/port" 2>"$out/cored.log" &
cored_pid=$!
for _ in $(seq 1 600); do
  [ -s "$work/port" ] && break
  kill -0 "$cored_pid" 2>/dev/null || { echo "cored exited:" >&2; cat "$out/cored.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/port" ] || { echo "cored did not start within 60 s" >&2; exit 1; }
port="$(cat "$work/port")"
url="https://127.0.0.1:$port"

( while kill -0 "$cored_pid" 2>/dev/null; do
    # seconds, VmRSS, RssAnon, RssFile, RssShmem (kB)
    echo "$(date +%s) $(awk '/^(VmRSS|RssAnon|RssFile|RssShmem):/ {printf "%s ", $2}' \
      "/proc/$cored_pid/status" 2>/dev/null)"
    sleep 1
  done ) >"$out/rss.log" &
rss_pid=$!
rss_now() { awk '/VmRSS/ {print $2}' "/proc/$cored_pid/status"; }
echo "cored: pid $cored_pid at $url, RSS at start $(rss_now) kB" | tee -a "$out/run.txt"

if [ "$preload" != 0 ] && [ "$preload_via" = http ]; then
  started=$(date +%s.%N)
  "$load" --url "$url" --ca "$work/ca.pem" "${tokens[@]}" --scenario preload --clients 32 \
    --max-posts "$preload" --content-bytes "$content_bytes" \
    --conversation-out "$work/conversation" --json-out "$out/preload.json" |
    tee -a "$out/run.txt" || status=$?
  ended=$(date +%s.%N)
  conversation="$(cat "$work/conversation")"
  echo "preloaded $preload activities through cored in $(echo "$ended - $started" | bc) s;" \
    "cored RSS $(rss_now) kB; database $(du -sh "$work" | cut -f1) on disk" | tee -a "$out/run.txt"
fi

if [ "$with_relay" = 1 ]; then
  relay_ini=$(printf '%s\n' "" "[relay]" "url = $url" "ca_file = $work/ca.pem" \
    "token_file = $work/relay.token" "connections = $relay_connections")
  throwaway_kms_setup "$work/kms" acme "$relay_ini"
  cat "$work/ca.pem" "$work/kms/ca.pem" >"$work/ca-bundle.pem"
  throwaway_kms_start "$out/kmsd.log"
  # Until every relay connection of kmsd is attached (cored logs each one).
  for _ in $(seq 1 300); do
    grep -q "relay connection attached ($relay_connections " "$out/cored.log" && break
    sleep 0.1
  done
  echo "kmsd: pid $KMSD_PID at $KMS_URL, [relay] connections $relay_connections;" \
    "$(grep -c 'relay connection attached' "$out/cored.log") attached" | tee -a "$out/run.txt"
fi

# perf of cored during a measured window, when asked.
perf_start() {
  perf_pid=""
  [ "$perf" = 1 ] || return 0
  ( sleep "$(echo "$warmup + 2" | bc)"
    exec perf record --call-graph dwarf,16384 -F 199 -p "$cored_pid" -o "$out/perf-$1.data" \
      -- sleep "$duration"
  ) >/dev/null 2>&1 &
  perf_pid=$!
}
trim='s/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//'
perf_end() {
  [ -n "$perf_pid" ] || return 0
  wait "$perf_pid" || true
  {
    echo "# shares of cored's samples by library"
    perf report -i "$out/perf-$1.data" --no-children --sort dso --stdio -g none 2>/dev/null |
      grep '%' | grep -v '^#' | head -25
    echo "# top symbols"
    perf report -i "$out/perf-$1.data" --no-children --sort dso,symbol --stdio -g none \
      2>/dev/null | grep '%' | grep -v '^#' | head -60
  } | sed -E "$trim" >"$out/perf-$1.txt" || true
  perf report -i "$out/perf-$1.data" --children --sort symbol --stdio -g none 2>/dev/null |
    grep '%' | grep -v '^#' | head -150 | sed -E "$trim" >"$out/perf-$1-children.txt" || true
  echo "top symbols in $out/perf-$1.txt (inclusive: perf-$1-children.txt)" | tee -a "$out/run.txt"
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }
hz=$(getconf CLK_TCK)
# The disk's synchronous-write latency now (an acknowledged post waits for one fsync of its batch).
disk_probe() {
  /usr/bin/time -f "%e" -o "$work/probe.time" \
    dd if=/dev/zero of="$work/probe" bs=4k count=100 oflag=dsync 2>/dev/null
  rm -f "$work/probe"
  echo "$(echo "scale=2; $(tail -1 "$work/probe.time") * 10" | bc) ms per synchronous 4 KiB write (mean of 100)"
}
run_scenario() {  # name, then core_load arguments
  local name="$1" c0 k0 b0 i0 c1 k1 b1 i1 started ended
  shift
  echo "--- $name (load average $(cut -d' ' -f1-3 /proc/loadavg); disk $(disk_probe))" |
    tee -a "$out/run.txt"
  perf_start "$name"
  c0=$(ticks "$cored_pid") k0=$(ticks "${KMSD_PID:-0}")
  read -r b0 i0 < <(busy)
  started=$(date +%s.%N)
  /usr/bin/time -f "%U %S" -o "$out/$name.load-cpu" \
    "$load" "$@" --duration "$duration" --warmup "$warmup" --json-out "$out/$name.json" |
    tee -a "$out/run.txt" || status=$?
  ended=$(date +%s.%N)
  c1=$(ticks "$cored_pid") k1=$(ticks "${KMSD_PID:-0}")
  read -r b1 i1 < <(busy)
  perf_end "$name"
  echo "CPU over the whole $name run ($(echo "$ended - $started" | bc | cut -c1-5) s, set-up and" \
    "drain included): cored $(echo "scale=1; ($c1 - $c0) / $hz" | bc) s," \
    "core_load $(awk '{print $1 + $2}' "$out/$name.load-cpu") s$([ -n "${KMSD_PID:-}" ] &&
    echo ", kmsd $(echo "scale=1; ($k1 - $k0) / $hz" | bc) s"); machine busy" \
    "$(echo "scale=0; 100 * ($b1 - $b0) / ($b1 - $b0 + $i1 - $i0)" | bc)%" | tee -a "$out/run.txt"
  echo "cored RSS after $name: $(rss_now) kB; load average $(cut -d' ' -f1-3 /proc/loadavg)" |
    tee -a "$out/run.txt"
}

common=(--url "$url" --ca "$work/ca.pem" "${tokens[@]}")
[ "$rate" != 0 ] && common+=(--rate "$rate")
IFS=, read -r -a scenario_list <<<"$scenarios"
for scenario in "${scenario_list[@]}"; do
  case "$scenario" in
    post)
      IFS=, read -r -a counts <<<"$clients"
      for n in "${counts[@]}"; do
        run_scenario "post-$n" "${common[@]}" --scenario post --clients "$n" \
          --participants "$participants" --conversations "$conversations" \
          --content-bytes "$content_bytes"
      done
      ;;
    history)
      history_args=()
      [ -n "$conversation" ] && history_args+=(--conversation "$conversation")
      IFS=, read -r -a counts <<<"$history_clients"
      for n in "${counts[@]}"; do
        run_scenario "history-$n" "${common[@]}" --scenario history --clients "$n" \
          "${history_args[@]}"
      done
      ;;
    relay)
      IFS=, read -r -a counts <<<"$relay_clients"
      for n in "${counts[@]}"; do
        run_scenario "relay-$n" --url "$url" --ca "$work/ca-bundle.pem" "${tokens[@]}" \
          --scenario relay --clients "$n" --kms-url "$KMS_URL" \
          --kms-token-file "$work/kms/token-acme.jwt"
      done
      ;;
    *) echo "unknown scenario $scenario" >&2; status=64 ;;
  esac
done

echo "cored memory now: $(grep -E '^(VmRSS|RssAnon|RssFile|RssShmem):' "/proc/$cored_pid/status" |
  tr -s ' \t' ' ' | tr '\n' ' ')" | tee -a "$out/run.txt"
echo "database files: $(cd "$work" && ls -l core.db* | awk '{printf "%s %d MB; ", $9, $5 / 1048576}')" |
  tee -a "$out/run.txt"
max_rss=$(awk '$2 > m {m = $2} END {print m}' "$out/rss.log")
echo "cored peak RSS (1 s samples): ${max_rss} kB; load average after: $(cut -d' ' -f1-3 /proc/loadavg);" \
  "results in $out" | tee -a "$out/run.txt"
exit "$status"
