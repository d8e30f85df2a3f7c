#!/usr/bin/env bash
# The KMS load run: builds Release into build-load, sets up a throwaway KMS (SoftHSM2 token, root
# keys, identity key and its chain, TLS certificate, a development IdP per organization), starts
# the real kmsd on 127.0.0.1, runs kms_load scenarios against it while sampling kmsd's RSS every
# second, and stops kmsd. Results (JSON per scenario, RSS samples, kmsd's log) go to --out.
#
#   bench/run-kms-load.sh [--scenarios retrieve,create,create-bind,mixed,info] [--clients 16]
#       [--threads 1] [--duration 30] [--warmup 5] [--keys 100] [--batch 100] [--rate R] [--orgs 1|2]
#       [--no-cache] [--max-in-flight N] [--max-queued N] [--queue-wait-ms N]
#       [--max-connections N] [--pool-size N]
#       [--preload N] [--honor-retry-after] [--perf] [--callgrind] [--out DIR] [--keep]
#       [--idle-connections N] [--trickling-connections N] [--generator PATH]
#
#   --scenarios      run in this order against the one kmsd; a scenario named again runs again
#                    (results <scenario>.json, then <scenario>.2.json, ...), so runs can alternate
#   --threads T      kms_load's event loops (its clients are spread over them)
#   --no-cache       kmsd's key cache off: [kms] key_cache_entries = 0 (on a kmsd older than that
#                    setting: 1,000 keys per client read cyclically, more than its fixed
#                    10,000-entry LRU holds, so every content key misses)
#   --preload N      before the scenarios, create N keys (kms_load create --max-keys N; timed)
#   --perf           perf record (DWARF call graphs, 199 Hz) of kmsd during each scenario's
#                    measured window: by library and top symbols in perf-<s>.txt, inclusive in
#                    perf-<s>-children.txt, by component (bench/perf_components.py) in
#                    perf-<s>-components.txt
#   --callgrind      run kmsd under valgrind --tool=callgrind (callgrind.out in --out): its
#                    instruction count, which a loaded machine does not change, for comparing
#                    builds (about 50 times slower; runs of two lengths, subtracted, leave out
#                    start-up and shut-down)
#   --keep           keep the throwaway KMS directory (tokens, database, keys) for inspection
#   --idle-connections N, --trickling-connections N
#                    the slow-client attack held open during each scenario (kms_load --help)
#   --generator PATH run this kms_load binary instead of the one built (to compare generators
#                    against the same kmsd; --threads and --scenarios info need the new one)
#
# Overload demonstration: --max-in-flight 2 --max-queued 8 --clients 64 --scenarios retrieve
# (503 + Retry-After once the line for a slot is full).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${repo}/build-load"
scenarios=retrieve clients=16 threads="" generator="" duration=30 warmup=5 keys=100 batch=100 rate=0 orgs=1
cache=on max_in_flight="" max_queued="" queue_wait_ms="" max_connections="" pool_size="" preload=0 perf=0 callgrind=0 keep=0 idle=0 trickling=0
honor="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --scenarios) scenarios="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --generator) generator="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --keys) keys="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --orgs) orgs="$2"; shift 2 ;;
    --no-cache) cache=off; shift ;;
    --max-in-flight) max_in_flight="$2"; shift 2 ;;
    --max-queued) max_queued="$2"; shift 2 ;;
    --queue-wait-ms) queue_wait_ms="$2"; shift 2 ;;
    --max-connections) max_connections="$2"; shift 2 ;;
    --pool-size) pool_size="$2"; shift 2 ;;
    --preload) preload="$2"; shift 2 ;;
    --honor-retry-after) honor="--honor-retry-after"; shift ;;
    --perf) perf=1; shift ;;
    --callgrind) callgrind=1; shift ;;
    --keep) keep=1; shift ;;
    --idle-connections) idle="$2"; shift 2 ;;
    --trickling-connections) trickling="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "run-kms-load.sh: unknown option $1 (see the comment at the top)" >&2; exit 64 ;;
  esac
done
[ "$orgs" = 1 ] || [ "$orgs" = 2 ] || { echo "--orgs is 1 or 2" >&2; exit 64; }
out="${out:-${build}/kms-load/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRONGROOM_WERROR=ON >/dev/null
cmake --build "$build" --target kms_load kmsd kmsctl strongroom-idp >/dev/null
kmsctl="$build/kms/kmsctl"
idp="$build/kms/strongroom-idp"
kmsd="$build/kms/daemon/kmsd"
load="${generator:-$build/bench/kms_load}"
kms_lines=()

work="$(mktemp -d /tmp/sr-kms-load.XXXXXX)"
if [ "$callgrind" = 1 ]; then  # throwaway_kms_start runs $KMSD: a wrapper that execs valgrind
  printf '#!/usr/bin/env bash\nexec valgrind --tool=callgrind --callgrind-out-file=%q %q "$@"\n' \
    "$out/callgrind.out" "$kmsd" >"$work/kmsd-callgrind"
  chmod +x "$work/kmsd-callgrind"
  kmsd="$work/kmsd-callgrind"
fi
KMSCTL="$kmsctl" IDP="$idp" KMSD="$kmsd"
# shellcheck source=../tests/support/throwaway_kms.sh
. "$repo/tests/support/throwaway_kms.sh"
rss_pid=""
cleanup() {
  [ -n "$rss_pid" ] && kill "$rss_pid" 2>/dev/null || true
  throwaway_kms_stop || true
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# kmsd's key cache: a setting when kmsd has one; otherwise (a fixed 10,000-entry LRU) the cache is
# defeated by a working set larger than it, read cyclically: every retrieval misses.
if [ "$cache" = off ]; then
  if grep -q '"key_cache_entries"' "$repo/kms/src/kmsd_settings.cc"; then
    kms_lines+=("key_cache_entries = 0")
  elif [ $((clients * keys)) -le 10000 ]; then
    [ "$clients" -ge 11 ] || { echo "--no-cache needs --clients >= 11 here" >&2; exit 64; }
    keys=1000
    echo "kmsd has no cache setting: --no-cache reads $((clients * keys)) keys cyclically," \
      "more than its 10,000-entry LRU holds, so every retrieval misses"
  fi
fi
[ -n "$max_connections" ] && kms_lines+=("max_connections = $max_connections")
[ -n "$max_in_flight" ] && kms_lines+=("max_in_flight = $max_in_flight")
[ -n "$max_queued" ] && kms_lines+=("max_queued = $max_queued")
[ -n "$queue_wait_ms" ] && kms_lines+=("queue_wait_ms = $queue_wait_ms")
[ -n "$pool_size" ] && TK_HSM_LINES="pool_size = $pool_size"
org_list="acme"
[ "$orgs" = 2 ] && org_list="acme globex"
throwaway_kms_setup "$work" "$org_list" "$(printf '%s\n' "${kms_lines[@]}")"
tokens=()
for org in $org_list; do tokens+=(--token-file "$work/token-$org.jwt"); done
cp "$work/kms.ini" "$out/kms.ini"  # paths only: PINs and keys stay in $work

throwaway_kms_start "$out/kmsd.log"
kmsd_pid="$KMSD_PID"
url="$KMS_URL"

( while kill -0 "$kmsd_pid" 2>/dev/null; do
    # seconds, VmRSS, RssAnon, RssFile, RssShmem (kB)
    echo "$(date +%s) $(awk '/^(VmRSS|RssAnon|RssFile|RssShmem):/ {printf "%s ", $2}' \
      "/proc/$kmsd_pid/status" 2>/dev/null)"
    sleep 1
  done ) >"$out/rss.log" &
rss_pid=$!
rss_now() { awk '/VmRSS/ {print $2}' "/proc/$kmsd_pid/status"; }
# kmsd's context switches so far, summed over its threads: "voluntary involuntary".
switches() {
  cat /proc/"$kmsd_pid"/task/*/status 2>/dev/null |
    awk '/^voluntary_ctxt_switches:/ {v += $2} /^nonvoluntary_ctxt_switches:/ {n += $2}
         END {print v + 0, n + 0}'
}

{
  echo "date: $(date -Is)"
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)"
  echo "softhsm: $(softhsm2-util --version)"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD)," \
    "$(git -C "$repo" status --short --untracked-files=no | wc -l) files modified in the tree"
  echo "kmsd: pid $kmsd_pid at $url, cache $cache, keys per client $keys, max_in_flight ${max_in_flight:-default}," \
    "max_queued ${max_queued:-default}, queue_wait_ms ${queue_wait_ms:-default}," \
    "max_connections ${max_connections:-default}, pool_size ${pool_size:-default}, orgs $orgs"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "kmsd RSS at start: $(rss_now) kB"
} | tee "$out/run.txt"

common=(--url "$url" --ca "$work/ca.pem" "${tokens[@]}" --clients "$clients" --batch "$batch")
[ "$rate" != 0 ] && common+=(--rate "$rate")
[ -n "$threads" ] && common+=(--threads "$threads")
[ -n "$honor" ] && common+=("$honor")
[ "$idle" != 0 ] && common+=(--idle-connections "$idle")
[ "$trickling" != 0 ] && common+=(--trickling-connections "$trickling")

status=0
if [ "$preload" != 0 ]; then
  started=$(date +%s.%N)
  "$load" "${common[@]}" --scenario create --warmup 0 --duration 86400 --max-keys "$preload" \
    --json-out "$out/preload.json" | tee -a "$out/run.txt" || status=$?
  ended=$(date +%s.%N)
  echo "preloaded $preload keys in $(echo "$ended - $started" | bc) s; kmsd RSS $(rss_now) kB;" \
    "database $(du -sh "$work" | cut -f1) on disk" | tee -a "$out/run.txt"
fi

trim='s/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//'
IFS=, read -r -a scenario_list <<<"$scenarios"
declare -A runs=()
for scenario in "${scenario_list[@]}"; do
  runs[$scenario]=$(( ${runs[$scenario]:-0} + 1 ))
  # The name of this run's results: the scenario, then scenario.2, scenario.3, ... when repeated.
  name="$scenario"
  [ "${runs[$scenario]}" = 1 ] || name="$scenario.${runs[$scenario]}"
  echo "--- $name" | tee -a "$out/run.txt"
  perf_pid=""
  if [ "$perf" = 1 ]; then
    # Starts after the set-up and warm-up, for the measured window only.
    ( sleep "$(echo "$warmup + 2" | bc)"
      exec perf record --call-graph dwarf,16384 -F 199 -p "$kmsd_pid" -o "$out/perf-$name.data" \
        -- sleep "$duration"
    ) >/dev/null 2>&1 &
    perf_pid=$!
  fi
  io_before=$(awk '/^(wchar|write_bytes):/ {printf "%s ", $2}' "/proc/$kmsd_pid/io")
  switches_before=$(switches)
  "$load" "${common[@]}" --scenario "$scenario" --duration "$duration" --warmup "$warmup" \
    --keys "$keys" --server-pid "$kmsd_pid" --json-out "$out/$name.json" |
    tee -a "$out/run.txt" || status=$?
  # What kmsd wrote during the scenario (set-up and warm-up included): wchar counts every
  # write(2) (sockets and the database's WAL), write_bytes what reached the block layer. Divided
  # by the measured requests, with --warmup 0 it is a cost per request that CPU noise leaves alone.
  read -r wchar0 wbytes0 <<<"$io_before"
  read -r wchar1 wbytes1 <<<"$(awk '/^(wchar|write_bytes):/ {printf "%s ", $2}' "/proc/$kmsd_pid/io")"
  answered=$(sed -n 's/.*"requests" *: *\([0-9]*\).*/\1/p' "$out/$name.json" | head -1)
  echo "kmsd wrote $((wchar1 - wchar0)) bytes (wchar), $((wbytes1 - wbytes0)) to storage," \
    "$(( (wchar1 - wchar0) / (answered > 0 ? answered : 1) )) wchar bytes per measured request" |
    tee -a "$out/run.txt"
  # How often kmsd's threads slept and were woken (voluntary: a wait, the hand-offs between
  # threads) or were preempted (involuntary: the machine's other load), set-up and warm-up
  # included: hand-offs per request, which CPU noise moves less than CPU time.
  read -r vol0 invol0 <<<"$switches_before"
  read -r vol1 invol1 <<<"$(switches)"
  n=$(( answered > 0 ? answered : 1 ))
  echo "kmsd context switches: $((vol1 - vol0)) voluntary, $((invol1 - invol0)) involuntary;" \
    "per measured request $(echo "scale=2; ($vol1 - $vol0) / $n" | bc) voluntary," \
    "$(echo "scale=2; ($invol1 - $invol0) / $n" | bc) involuntary" | tee -a "$out/run.txt"
  if [ -n "$perf_pid" ]; then
    wait "$perf_pid" || true
    {
      echo "# shares of kmsd's samples by library"
      perf report -i "$out/perf-$name.data" --no-children --sort dso --stdio -g none 2>/dev/null |
        grep '%' | grep -v '^#' | head -25
      echo "# top symbols"
      perf report -i "$out/perf-$name.data" --no-children --sort dso,symbol --stdio -g none \
        2>/dev/null | grep '%' | grep -v '^#' | head -60
    } | sed -E "$trim" >"$out/perf-$name.txt" || true
    perf report -i "$out/perf-$name.data" --children --sort symbol --stdio -g none 2>/dev/null |
      grep '%' | grep -v '^#' | head -150 | sed -E "$trim" >"$out/perf-$name-children.txt" || true
    # In microseconds of kmsd's CPU per request; per key created or bound for create, create-bind.
    unit=req per=requests
    case "$scenario" in create | create-bind) unit=key per=keys ;; esac
    us=$(/usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))
print(1e6 * r["server_cpu_s"] / r[sys.argv[2]] if r.get("server_cpu_s", -1) >= 0 and r[sys.argv[2]] else "")' \
      "$out/$name.json" "$per" 2>/dev/null || true)
    /usr/bin/python3 "$repo/bench/perf_components.py" "$out/perf-$name.data" --unit "$unit" \
      ${us:+--us-per-request "$us"} >"$out/perf-$name-components.txt" 2>&1 || true
    echo "profile in $out/perf-$name.txt (inclusive: perf-$name-children.txt," \
      "by component: perf-$name-components.txt)" | tee -a "$out/run.txt"
  fi
  echo "kmsd RSS after $name: $(rss_now) kB; load average $(cut -d' ' -f1-3 /proc/loadavg)" |
    tee -a "$out/run.txt"
done

echo "kmsd memory now: $(grep -E '^(VmRSS|RssAnon|RssFile|RssShmem):' "/proc/$kmsd_pid/status" |
  tr -s ' \t' ' ' | tr '\n' ' ')" | tee -a "$out/run.txt"
echo "database files: $(cd "$work" && ls -l kms.db* | awk '{printf "%s %d MB; ", $9, $5 / 1048576}')" |
  tee -a "$out/run.txt"
max_rss=$(awk '$2 > m {m = $2} END {print m}' "$out/rss.log")
echo "kmsd peak RSS (1 s samples): ${max_rss} kB; results in $out" | tee -a "$out/run.txt"
exit "$status"
