#!/usr/bin/env bash
# Issue 13's measurement: what kmsd spends on a sealed key retrieval, and on a bound key, against
# what it spends on its own static request (GET /kms/info), on the same kmsd in the same minutes.
# bench/run-kms-load.sh does the work (Release build, throwaway KMS, kmsd, kms_load with
# --server-pid); this runs its scenarios info, retrieve and create-bind (--rounds N: N times over,
# alternating) and prints, per run: rate, p99, errors, the per-client spread, kmsd's CPU per
# request (and per bound key), the generator's CPU and its share, the load average; then the
# ratio of kmsd's CPU per retrieval to its CPU per GET /kms/info, with the issue's bars beside
# the figures. It measures: it meets no bar by itself, and on a busy machine only figures from
# the same minutes compare (read the load average beside each run).
#
#   bench/run-kms-hotpath.sh [--rounds 1] [--duration 15] [--warmup 3] [--clients 16]
#       [--threads 1] [--no-create-bind] [--out DIR] [run-kms-load.sh options ...]
#
# Other options go to run-kms-load.sh as they are (--perf for a profile of kmsd per run, with its
# breakdown by component; --batch, --keys, --no-cache, --generator, ...). The summary is also
# written to DIR/summary.txt.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds=1 duration=15 warmup=3 clients=16 threads=1 create_bind=1 out="" pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --no-create-bind) create_bind=0; shift ;;
    --out) out="$2"; shift 2 ;;
    --scenarios) echo "run-kms-hotpath.sh: the scenarios are fixed (see the top)" >&2; exit 64 ;;
    --perf | --no-cache | --honor-retry-after | --keep) pass+=("$1"); shift ;;
    --*) [ $# -ge 2 ] || { echo "run-kms-hotpath.sh: $1 needs a value" >&2; exit 64; }
         pass+=("$1" "$2"); shift 2 ;;
    *) echo "run-kms-hotpath.sh: unexpected argument $1" >&2; exit 64 ;;
  esac
done
case "$rounds" in '' | *[!0-9]* | 0) echo "--rounds must be a whole number >= 1" >&2; exit 64 ;; esac
out="${out:-${repo}/build-load/kms-hotpath/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

round="info,retrieve"
[ "$create_bind" = 1 ] && round="$round,create-bind"
scenarios="$round"
for _ in $(seq 2 "$rounds"); do scenarios="$scenarios,$round"; done

status=0
"$repo/bench/run-kms-load.sh" --scenarios "$scenarios" --duration "$duration" --warmup "$warmup" \
  --clients "$clients" --threads "$threads" --out "$out" "${pass[@]}" || status=$?

/usr/bin/python3 - "$out" <<'PY' | tee "$out/summary.txt"
import json, os, re, statistics, sys

out = sys.argv[1]
runs, load = [], {}
with open(os.path.join(out, "run.txt")) as f:
    text = f.read()
for line in text.splitlines():
    m = re.match(r"^--- (\S+)$", line)
    if m:
        runs.append(m.group(1))
    m = re.match(r"^kmsd RSS after (\S+): .* load average (.*)$", line)
    if m:
        load[m.group(1)] = m.group(2)
first = re.search(r"^load average before: (.*)$", text, re.M)
print(f"results in {out}; load average before the first run: {first.group(1) if first else '?'}")

def get(name):
    path = os.path.join(out, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None

def us(r, key="server_cpu_s", per="requests"):
    return 1e6 * r[key] / r[per] if r.get(key, -1) >= 0 and r[per] > 0 else float("nan")

header = (f"{'run':<14}{'req/s':>9}{'keys/s':>9}{'p99 ms':>8}{'errors':>7}{'client req/s':>15}"
          f"{'kmsd us/req':>12}{'us/key':>8}{'kmsd cores':>11}{'gen us/req':>11}{'gen cores':>10}"
          f"{'gen share':>10}   load average after")
print(header)
results = {}
for name in runs:
    r = get(name)
    if r is None:
        print(f"{name:<14} (no result)")
        continue
    results[name] = r
    seconds = r["duration_s"]
    kmsd = r.get("server_cpu_s", -1)
    gen = r.get("generator_cpu_s", -1)
    share = gen / (gen + kmsd) if kmsd >= 0 and gen >= 0 and gen + kmsd > 0 else float("nan")
    spread = f"{r['per_client_min']:.0f}-{r['per_client_max']:.0f}"
    per_key = f"{us(r, per='keys'):8.1f}" if r["keys"] > 0 else f"{'':>8}"
    print(f"{name:<14}{r['requests_per_s']:9.0f}{r['keys_per_s']:9.0f}{r['latency_ms']['p99']:8.2f}"
          f"{r['errors'] + r['setup_errors']:7d}{spread:>15}{us(r):12.1f}{per_key}"
          f"{kmsd / seconds:11.2f}{us(r, 'generator_cpu_s'):11.1f}{gen / seconds:10.2f}"
          f"{100 * share:9.0f}%   {load.get(name, '?')}")

# Pairs: the k-th info with the k-th retrieve.
infos = [n for n in runs if n.split(".")[0] == "info" and n in results]
retrieves = [n for n in runs if n.split(".")[0] == "retrieve" and n in results]
ratios = [us(results[r]) / us(results[i]) for i, r in zip(infos, retrieves)]
print()
if ratios:
    print("kmsd CPU per sealed retrieval / per GET /kms/info, per round: " +
          ", ".join(f"{x:.2f}" for x in ratios) + f"; median {statistics.median(ratios):.2f}")

def verdict(ok):
    return "met" if ok else "not met"

print("issue 13's bars, as measured here:")
if ratios:
    m = statistics.median(ratios)
    print(f"  kmsd CPU per retrieval <= 4x per GET /kms/info: {m:.2f}x ({verdict(m <= 4)})")
if retrieves:
    rates = [results[n]["requests_per_s"] for n in retrieves]
    p99 = [results[n]["latency_ms"]["p99"] for n in retrieves]
    errors = sum(results[n]["errors"] + results[n]["setup_errors"] for n in retrieves)
    lows = [results[n]["per_client_min"] for n in retrieves]
    print(f"  retrieval >= 12,000 req/s, 16 clients: " + ", ".join(f"{x:.0f}" for x in rates) +
          f" ({verdict(min(rates) >= 12000)})")
    print(f"  retrieval p99 < 10 ms: " + ", ".join(f"{x:.2f}" for x in p99) +
          f" ({verdict(max(p99) < 10)}); errors {errors} ({verdict(errors == 0)});"
          f" slowest client " + ", ".join(f"{x:.0f}" for x in lows) + " req/s")
binds = [n for n in runs if n.split(".")[0] == "create-bind" and n in results]
if binds:
    rates = [results[n]["keys_per_s"] for n in binds]
    per_key = [us(results[n], per="keys") for n in binds]
    print(f"  create + bind >= 8,000 bound keys/s: " + ", ".join(f"{x:.0f}" for x in rates) +
          f" ({verdict(min(rates) >= 8000)}); kmsd CPU per bound key " +
          ", ".join(f"{x:.1f}" for x in per_key) + " us")
profiles = [n for n in runs if os.path.exists(os.path.join(out, f"perf-{n}-components.txt"))]
if profiles:
    print("kmsd by component: " + ", ".join(f"perf-{n}-components.txt" for n in profiles))
PY
exit "$status"
