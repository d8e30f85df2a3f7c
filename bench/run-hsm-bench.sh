#!/usr/bin/env bash
# Builds hsm_bench in a Release build directory and runs it. Extra arguments go to the benchmark,
# e.g. --benchmark_filter=Wrap. SR_BENCH_POOL_SIZE sets the layer token's session-pool size.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${repo}/build-release"

cmake -S "${repo}" -B "${build}" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DSTRONGROOM_BUILD_TESTS=OFF -DSTRONGROOM_WERROR=ON >/dev/null
cmake --build "${build}" --target hsm_bench

softhsm2-util --version
lscpu | grep 'Model name'
echo "SR_BENCH_POOL_SIZE=${SR_BENCH_POOL_SIZE:-<unset, TokenConfig default>}"

"${build}/bench/hsm_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true "$@"
