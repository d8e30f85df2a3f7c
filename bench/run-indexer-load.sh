#!/usr/bin/env bash
# Issue 14's indexer bars, measured through the real daemons: kmsd (a SoftHSM2 token of its own,
# tests/support/throwaway_kms.sh), cored and indexerd on 127.0.0.1 under a temporary directory,
# as scripts/run-embedded starts them (a test CA, a development IdP for organization acme whose
# policy names indexer@acme.test its indexer and makes it cloudAgent of every new room; kmsd
# attached to cored's relay). Rooms are created through the SDK (bench/indexer_load.cc), so their
# keys are real KMS keys and indexerd is authorized on them.
#
#   bench/run-indexer-load.sh [--scenarios post,search] [--build DIR] [--no-build] [--out DIR]
#       [--keep]
#       post:   [--clients 16] [--users 16] [--rooms-per-user 4] [--pool 64] [--duration 30]
#               [--warmup 5] [--rate R] [--poll-ms 5] [--perf]
#       search: [--activities 100000,300000,1000000] [--rooms 1000] [--searched 50]
#               [--search-clients 1,8] [--search-duration 20] [--search-warmup 3] [--perf]
#
#   post     "Indexing keeps up with posting": 16 clients post pre-encrypted SDK messages of about
#            200 bytes (Zipf words) into 64 rooms for --duration seconds (after --warmup), while
#            indexerd indexes them; indexer_load reports posted/s, indexed/s, the lag from the
#            core's acknowledgement to searchable (indexerd's cursor past the post, polled every
#            --poll-ms) and indexerd's own lagP50Ms/lagP99Ms, the CPU seconds of kmsd, cored,
#            indexerd and itself over the window. Afterwards this script checks in cored's
#            database that every activity with words is indexed exactly once: index_sets (one row
#            per indexed activity) against the activities, against indexer_load's count of posts
#            and rooms, and against indexerd's `indexed` counter.
#   search   "Search at 1,000,000 indexed activities": --rooms rooms through the SDK, --searched
#            of them user-0's; cored and indexerd stopped, cored's database filled with indexed
#            activities up to each count of --activities (bench/indexer_fill.cc: the real search
#            and content keys, the indexer's term extractor; indexerd's cursor is set past them,
#            as it would have put the very same tokens), both started again, and 2-term searches
#            as user 0 through indexerd's HTTPS API with 1 and more clients (--search-clients).
# --perf: perf record of indexerd and cored over half the post window, and of kmsd, cored and
# indexerd over half of each search window at the largest --activities (perf_components.py
# summaries in --out).
#
# --build DIR: the build to use (default build/, RelWithDebInfo as scripts/build makes it; the
# targets are built there first, unless --no-build). Results (text and JSON per run, the daemons' logs) go to --out.
set -euo pipefail
{  # read whole before it runs: editing the file during a run does not change the run

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$repo/build"
scenarios=post,search clients=16 users=16 rooms_per_user=4 pool=64 duration=30 warmup=5 rate=0
poll_ms=5 perf=0 activities=100000 rooms=1000 searched=50 search_clients=1,8 search_duration=20
search_warmup=3
keep=0 out="" no_build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scenarios) scenarios="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --users) users="$2"; shift 2 ;;
    --rooms-per-user) rooms_per_user="$2"; shift 2 ;;
    --pool) pool="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --poll-ms) poll_ms="$2"; shift 2 ;;
    --perf) perf=1; shift ;;
    --activities) activities="$2"; shift 2 ;;
    --rooms) rooms="$2"; shift 2 ;;
    --searched) searched="$2"; shift 2 ;;
    --search-clients) search_clients="$2"; shift 2 ;;
    --search-duration) search_duration="$2"; shift 2 ;;
    --search-warmup) search_warmup="$2"; shift 2 ;;
    --build) build="$(cd "$2" && pwd)"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --no-build) no_build=1; shift ;;
    *) echo "run-indexer-load.sh: unknown option $1 (see the comment at the top)" >&2; exit 64 ;;
  esac
done
out="${out:-$build/indexer-load/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

targets=(kmsd kmsctl cored indexerd strongroom-idp indexer_load indexer_fill)
if [ "$no_build" = 0 ]; then
  if [ ! -f "$build/build.ninja" ]; then
    cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DSTRONGROOM_WERROR=ON >/dev/null
  fi
  ninja -C "$build" -j2 "${targets[@]}" >/dev/null
fi
# shellcheck disable=SC2034  # KMSD: used by throwaway_kms.sh
KMSCTL="$build/kms/kmsctl" IDP="$build/kms/strongroom-idp" KMSD="$build/kms/daemon/kmsd"
cored_bin="$build/core/cored" indexerd_bin="$build/indexer/indexerd"
load="$build/bench/indexer_load" fill="$build/bench/indexer_fill"
# shellcheck source=../tests/support/throwaway_kms.sh
. "$repo/tests/support/throwaway_kms.sh"

work="" cored_pid="" indexerd_pid=""
stop_pid() {  # SIGTERM, then wait (our own children only)
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1"
    wait "$1" 2>/dev/null || true
  fi
}
stop_all() {
  stop_pid "$indexerd_pid"
  indexerd_pid=""
  throwaway_kms_stop || true
  stop_pid "$cored_pid"
  cored_pid=""
}
cleanup() {
  stop_all
  if [ -n "$work" ]; then
    if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  fi
}
trap cleanup EXIT

free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_url() {  # name pid url: until it answers, while the process lives
  for _ in $(seq 1 600); do
    kill -0 "$2" 2>/dev/null || { echo "$1 exited:" >&2; cat "$out/$1.log" >&2; exit 1; }
    curl -sf --cacert "$work/kms/ca.pem" "$3" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "$1 did not answer within 60 s" >&2
  exit 1
}
start_cored() {
  "$cored_bin" --config "$work/core.ini" 2>>"$out/cored.log" &
  cored_pid=$!
  wait_url cored "$cored_pid" "$core_url/health"
}
start_indexerd() {
  "$indexerd_bin" --config "$work/indexer.ini" 2>>"$out/indexerd.log" &
  indexerd_pid=$!
  wait_url indexerd "$indexerd_pid" "$indexer_url/health"
}
# Until a message relayed through cored reaches the KMS (not 503 "not connected").
wait_attached() {
  local code
  for _ in $(seq 1 600); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/kms/ca.pem" \
      -H "Authorization: Bearer $("$IDP" token --dir "$work/kms/idp-acme" --subject \
      probe@acme.test --audience core --ttl 600)" -H 'Content-Type: application/jose' \
      --data 'e30.e30.e30' "$core_url/kms/messages?cluster=kms://kms.throwaway.test" || true)"
    if [ "$code" != 503 ] && [ "$code" != 000 ]; then return 0; fi
    sleep 0.1
  done
  echo "kmsd did not attach to cored's relay" >&2
  exit 1
}

# A fresh kmsd, cored and indexerd in a new temporary directory.
start_all() {
  stop_all
  [ -n "$work" ] && [ "$keep" = 0 ] && rm -rf "$work"
  work="$(mktemp -d /tmp/sr-indexer-load.XXXXXX)"
  mkdir -p "$work/kms" "$work/files"
  core_port="$(free_port)" indexer_port="$(free_port)" ops_port="$(free_port)"
  core_url="https://127.0.0.1:$core_port" indexer_url="https://127.0.0.1:$indexer_port"
  (umask 077
   openssl rand -hex 32 >"$work/relay.token"
   openssl rand -hex 32 >"$work/ops.token")
  throwaway_kms_setup "$work/kms" acme "$(printf '%s\n' "" "[relay]" "url = $core_url" \
    "ca_file = $work/kms/ca.pem" "token_file = $work/relay.token" "" "[ops]" \
    "listen = 127.0.0.1:$ops_port" "tls_cert = $work/kms/tls.pem" "tls_key = $work/kms/tls.key" \
    "token_file = $work/ops.token")"
  local jwt
  jwt="$(printf '%s\n' "" "[jwt]" "issuers = acme" "" "[jwt.acme]" \
    "issuer = https://idp.acme.test" "org = acme" "subject_domains = acme.test" \
    "jwks = $work/kms/idp-acme/jwks.json")"
  printf '%s\n' "[core]" "database = $work/core.db" "files_dir = $work/files" \
    "listen = 127.0.0.1:$core_port" "tls_cert = $work/kms/tls.pem" \
    "tls_key = $work/kms/tls.key" "indexer = indexer@acme.test" "indexer_org = acme" \
    "max_connections = 256" "rate_per_s = 100000" "rate_burst = 200000" "relays = kms1" "" \
    "[relay.kms1]" "cluster = kms://kms.throwaway.test" "token_file = $work/relay.token" \
    "$jwt" >"$work/core.ini"
  token_command="$IDP token --dir $work/kms/idp-acme --subject {subject} --audience {audience} --ttl 86400"
  printf '%s\n' "[indexer]" "org = acme" "subject = indexer@acme.test" \
    "database = $work/indexer.db" "listen = 127.0.0.1:$indexer_port" \
    "tls_cert = $work/kms/tls.pem" "tls_key = $work/kms/tls.key" \
    "token_command = ${token_command//\{subject\}/indexer@acme.test}" \
    "search_rate_per_s = 10000" "search_rate_burst = 10000" "" \
    "[kms]" "url = KMS_URL" "cluster = kms://kms.throwaway.test" "ca_file = $work/kms/ca.pem" "" \
    "[core]" "url = $core_url" "ca_file = $work/kms/ca.pem" "$jwt" >"$work/indexer.ini"
  start_cored
  throwaway_kms_start "$out/kmsd.log"
  sed -i "s|^url = KMS_URL|url = $KMS_URL|" "$work/indexer.ini"
  echo '{"indexer": "indexer@acme.test", "indexerCloudAgent": true}' >"$work/policy.json"
  "$KMSCTL" ops policy set acme --file "$work/policy.json" --url "https://127.0.0.1:$ops_port" \
    --ca "$work/kms/ca.pem" --token-file "$work/ops.token" >/dev/null
  wait_attached
  start_indexerd
  common=(--core-url "$core_url" --kms-url "$KMS_URL" --indexer-url "$indexer_url"
    --ca "$work/kms/ca.pem" --cluster kms://kms.throwaway.test --kms-roots "$work/kms/ca.pem"
    --token-command "$token_command" --org acme)
}

# perf record (DWARF call graphs, 199 Hz) of daemons for SECONDS from when indexer_load creates
# $work/window (its measured window starts), with --perf; perf_end waits and summarizes each
# (bench/perf_components.py) into $out/perf-LABEL-NAME.txt.
perf_pids=()
half() { awk -v s="$1" 'BEGIN { print s / 2 }'; }
perf_start() {  # LABEL SECONDS NAME=PID...
  local label="$1" seconds="$2" spec
  shift 2
  perf_pids=()
  rm -f "$work/window"
  [ "$perf" = 1 ] || return 0
  for spec in "$@"; do
    ( while [ ! -e "$work/window" ]; do sleep 0.1; done
      exec perf record --call-graph dwarf,16384 -F 199 -p "${spec#*=}" \
        -o "$out/perf-$label-${spec%%=*}.data" -- sleep "$seconds"
    ) >/dev/null 2>&1 &
    perf_pids+=($!)
  done
}
perf_end() {  # LABEL NAME...
  local label="$1" name p
  shift
  for p in "${perf_pids[@]}"; do wait "$p" || true; done
  [ "$perf" = 1 ] || return 0
  for name in "$@"; do
    "$repo/bench/perf_components.py" "$out/perf-$label-$name.data" \
      >"$out/perf-$label-$name.txt" 2>&1 || true
    echo "profile of $name: $out/perf-$label-$name.txt" | tee -a "$out/run.txt"
  done
}

sql() {  # database, then SQL; prints the rows
  /usr/bin/python3 - "$@" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
for row in con.execute(sys.argv[2]).fetchall():
    print(" ".join(str(v) for v in row))
con.commit()
PY
}

{
  echo "date: $(date -Is)"
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/Mem:/ {print $2}') GB, $(uname -r)"
  echo "build: $build ($(sed -n 's/^CMAKE_BUILD_TYPE:STRING=//p' "$build/CMakeCache.txt"))"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD)," \
    "$(git -C "$repo" status --short --untracked-files=no | wc -l) files modified in the tree"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/run.txt"

status=0
IFS=, read -r -a scenario_list <<<"$scenarios"
for scenario in "${scenario_list[@]}"; do
  case "$scenario" in
    post)
      start_all
      echo "--- post: $clients clients, $users users, $rooms_per_user rooms each (load average" \
        "$(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$out/run.txt"
      perf_start post "$(half "$duration")" "indexerd=$indexerd_pid" "cored=$cored_pid"
      post_args=(--clients "$clients" --users "$users" --rooms-per-user "$rooms_per_user"
        --pool "$pool" --duration "$duration" --warmup "$warmup" --poll-ms "$poll_ms")
      [ "$rate" != 0 ] && post_args+=(--rate "$rate")
      "$load" --mode post "${common[@]}" "${post_args[@]}" --pid "kmsd=$KMSD_PID" \
        --pid "cored=$cored_pid" --pid "indexerd=$indexerd_pid" --json-out "$out/post.json" \
        --window-file "$work/window" |
        tee "$out/post.txt" | tee -a "$out/run.txt" || status=1
      perf_end post indexerd cored
      # Exactly once: one index_sets row per activity with words, nothing else.
      read -r posts made_rooms < <(sed -n 's/^total_posts \([0-9]*\) rooms \([0-9]*\)$/\1 \2/p' \
        "$out/post.txt")
      indexed_total=$(/usr/bin/python3 -c \
        'import json,sys; print(json.load(open(sys.argv[1]))["indexed_total"])' "$out/post.json")
      read -r sets with_words < <(sql "$work/core.db" "SELECT (SELECT COUNT(*) FROM index_sets),
        (SELECT COUNT(*) FROM activities WHERE content != '' AND verb IN
         ('post', 'edit', 'create', 'title', 'share'))")
      orphans=$(sql "$work/core.db" "SELECT COUNT(*) FROM index_sets s LEFT JOIN activities a
        ON a.seq = s.seq WHERE a.seq IS NULL")
      expected=$((posts + made_rooms))
      echo "exactly once: cored's index_sets $sets rows (one per indexed activity), activities" \
        "with words $with_words, posted by indexer_load $posts + $made_rooms room creations =" \
        "$expected, indexerd's indexed counter $indexed_total; sets without an activity $orphans" |
        tee -a "$out/run.txt"
      if [ "$sets" != "$with_words" ] || [ "$sets" != "$expected" ] ||
         [ "$indexed_total" != "$expected" ] || [ "$orphans" != 0 ]; then
        echo "FAILED: not every activity indexed exactly once" | tee -a "$out/run.txt"
        status=1
      fi
      echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/run.txt"
      ;;
    search)
      start_all
      echo "--- search: $rooms rooms, $searched of them user-0's (load average" \
        "$(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$out/run.txt"
      "$load" --mode rooms "${common[@]}" --users "$users" --rooms "$rooms" --searched "$searched" \
        --rooms-out "$work/rooms.txt" | tee -a "$out/run.txt" || { status=1; continue; }
      filled=0
      IFS=, read -r -a counts <<<"$activities"
      for count in "${counts[@]}"; do
        if [ "$count" -gt "$filled" ]; then
          stop_pid "$indexerd_pid"; indexerd_pid=""
          stop_pid "$cored_pid"; cored_pid=""
          started=$(date +%s)
          "$fill" --database "$work/core.db" --rooms-file "$work/rooms.txt" \
            --activities $((count - filled)) --kms-url "$KMS_URL" --ca "$work/kms/ca.pem" \
            --cluster kms://kms.throwaway.test --kms-roots "$work/kms/ca.pem" \
            --token-command "$token_command" --indexer indexer@acme.test --seed "$count" \
            2>>"$out/fill.log" | tee "$out/fill-$count.txt" | tee -a "$out/run.txt" ||
            { status=1; break; }
          last_seq=$(sed -n 's/^last_seq //p' "$out/fill-$count.txt")
          sql "$work/indexer.db" "UPDATE stream_cursor SET seq = $last_seq WHERE id = 1" >/dev/null
          echo "filled to $count activities in $(( $(date +%s) - started )) s; database" \
            "$(du -m "$work/core.db" | cut -f1) MB; load average $(cut -d' ' -f1-3 /proc/loadavg)" |
            tee -a "$out/run.txt"
          filled=$count
          start_cored
          wait_attached
          start_indexerd
        fi
        IFS=, read -r -a search_counts <<<"$search_clients"
        for n in "${search_counts[@]}"; do
          echo "- $count activities, $n client(s) (load average $(cut -d' ' -f1-3 /proc/loadavg))" |
            tee -a "$out/run.txt"
          # Profiles of the largest count's runs only.
          [ "$count" = "${counts[-1]}" ] && perf_start "search-$count-$n" \
            "$(half "$search_duration")" "kmsd=$KMSD_PID" "cored=$cored_pid" \
            "indexerd=$indexerd_pid"
          "$load" --mode search "${common[@]}" --clients "$n" --duration "$search_duration" \
            --warmup "$search_warmup" \
            --pid "kmsd=$KMSD_PID" --pid "cored=$cored_pid" --pid "indexerd=$indexerd_pid" \
            --json-out "$out/search-$count-$n.json" --window-file "$work/window" |
            tee -a "$out/run.txt" || status=1
          [ "$count" = "${counts[-1]}" ] && perf_end "search-$count-$n" kmsd cored indexerd
        done
      done
      ;;
    *) echo "unknown scenario $scenario" >&2; status=64 ;;
  esac
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); results in $out" | tee -a "$out/run.txt"
exit "$status"
}
