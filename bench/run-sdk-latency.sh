#!/usr/bin/env bash
# Send-to-receive latency between two SDK clients on loopback (bench/sdk_latency.cc): builds
# Release into build-sdk-latency (or --build DIR), sets up a throwaway cored (test CA and TLS
# certificate made here, a development IdP with core and KMS tokens for alice and bob) and a
# throwaway kmsd on SoftHSM2 (tests/support/throwaway_kms.sh) attached to cored by the relay, then
# runs sdk_latency one message at a time and, with --rate, again open loop at that rate. Results
# go to --out (run.txt, the daemons' logs).
#
#   bench/run-sdk-latency.sh [--count 2000] [--rate 100] [--bytes 200] [--out DIR] [--build DIR]
#       [--keep]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${repo}/build-sdk-latency"
count=2000 rate=100 bytes=200 keep=0 out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --count) count="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --bytes) bytes="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --build) build="$(cd "$2" && pwd)"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "run-sdk-latency.sh: unknown option $1 (see the comment at the top)" >&2; exit 64 ;;
  esac
done
out="${out:-${build}/sdk-latency/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRONGROOM_WERROR=ON >/dev/null
cmake --build "$build" --target sdk_latency cored kmsd kmsctl strongroom-idp -- -j2 >/dev/null
latency="$build/bench/sdk_latency"
cored="$build/core/cored"
idp="$build/kms/strongroom-idp"

work="$(mktemp -d /tmp/sr-sdk-latency.XXXXXX)"
cored_pid=""
KMSCTL="$build/kms/kmsctl" IDP="$idp" KMSD="$build/kms/daemon/kmsd"
# shellcheck source=../tests/support/throwaway_kms.sh
. "$repo/tests/support/throwaway_kms.sh"
cleanup() {
  throwaway_kms_stop || true
  if [ -n "$cored_pid" ] && kill -0 "$cored_pid" 2>/dev/null; then
    kill -TERM "$cored_pid"
    wait "$cored_pid" || true
  fi
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# TLS of cored: a test CA and a certificate for 127.0.0.1 from it.
throwaway_ca "$work" "Strongroom SDK latency CA"
throwaway_tls_cert "$work"

# One IdP (acme) trusted by both daemons: core and KMS tokens for alice and bob.
"$idp" init --dir "$work/idp" --issuer "https://idp.acme.test" >/dev/null
for user in alice bob; do
  for audience in core kms; do
    "$idp" token --dir "$work/idp" --subject "$user@acme.test" --audience "$audience" \
      --ttl 86400 --out "$work/$user-$audience.jwt"
  done
done

mkdir -p "$work/files"
(umask 077; openssl rand -hex 32 >"$work/relay.token")
printf '%s\n' "[core]" "database = $work/core.db" "files_dir = $work/files" \
  "listen = 127.0.0.1:0" "tls_cert = $work/tls.pem" "tls_key = $work/tls.key" \
  "max_connections = 64" "rate_per_s = 100000" "rate_burst = 200000" "relays = kms1" "" \
  "[relay.kms1]" "cluster = kms://kms.throwaway.test" "token_file = $work/relay.token" "" \
  "[jwt]" "issuers = acme" "" "[jwt.acme]" "issuer = https://idp.acme.test" "org = acme" \
  "jwks = $work/idp/jwks.json" >"$work/core.ini"

{
  echo "date: $(date -Is)"
  echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'), $(uname -r)"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD)," \
    "$(git -C "$repo" status --short --untracked-files=no | wc -l) files modified in the tree"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/run.txt"

"$cored" --config "$work/core.ini" --port-file "$work/port" 2>"$out/cored.log" &
cored_pid=$!
for _ in $(seq 1 600); do
  [ -s "$work/port" ] && break
  kill -0 "$cored_pid" 2>/dev/null || { echo "cored exited:" >&2; cat "$out/cored.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$work/port" ] || { echo "cored did not start within 60 s" >&2; exit 1; }
url="https://127.0.0.1:$(cat "$work/port")"

# kmsd on SoftHSM2, attached to cored by the relay; it trusts the same IdP as cored.
relay_ini=$(printf '%s\n' "" "[relay]" "url = $url" "ca_file = $work/ca.pem" \
  "token_file = $work/relay.token" "connections = 4")
throwaway_kms_setup "$work/kms" acme "$relay_ini"
sed -i "s|jwks = $work/kms/idp-acme/jwks.json|jwks = $work/idp/jwks.json|" "$work/kms/kms.ini"
cat "$work/ca.pem" "$work/kms/ca.pem" >"$work/ca-bundle.pem"
throwaway_kms_start "$out/kmsd.log"
for _ in $(seq 1 300); do
  grep -q "relay connection attached (4 " "$out/cored.log" && break
  sleep 0.1
done
echo "cored at $url (pid $cored_pid), kmsd at $KMS_URL (pid $KMSD_PID);" \
  "$(grep -c 'relay connection attached' "$out/cored.log") relay connections attached" |
  tee -a "$out/run.txt"

common=(--core-url "$url" --kms-url "$KMS_URL" --ca "$work/ca-bundle.pem"
  --cluster kms://kms.throwaway.test --kms-roots "$work/kms/ca.pem"
  --alice-core "$work/alice-core.jwt" --alice-kms "$work/alice-kms.jwt"
  --bob-core "$work/bob-core.jwt" --bob-kms "$work/bob-kms.jwt" --count "$count" --bytes "$bytes")
status=0
echo "--- one at a time (load average $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$out/run.txt"
"$latency" "${common[@]}" 2>&1 | tee -a "$out/run.txt" || status=1
if [ "$rate" != 0 ]; then
  echo "--- open loop at $rate/s (load average $(cut -d' ' -f1-3 /proc/loadavg))" |
    tee -a "$out/run.txt"
  "$latency" "${common[@]}" --rate "$rate" 2>&1 | tee -a "$out/run.txt" || status=1
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); results in $out" | tee -a "$out/run.txt"
exit "$status"
