#!/usr/bin/env bash
# The soak: an outbound and an inbound sidecar (Release) under 500 concurrent connections
# for 10 minutes, with certificate rotations, a CA rotation, application restarts and two
# workers on one side; every byte checked. See bench/soak.py and bench/README.md.
#
# Usage: bench/soak.sh [soak.py options]   e.g. --duration 120 --connections 100
#
# Output: the table on stdout and in bench/out/soak.md, the figures in bench/out/soak.json.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
build=${BUILD_DIR:-$top/build/release}
out=${BENCH_OUT:-$top/bench/out}
mkdir -p "$out"

scripts/install-deps.sh build
scripts/fetch-boringssl.sh
echo "[soak] building mtlsd (Release) in ${build#"$top"/}" >&2
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMTLSD_TESTS=OFF >/dev/null
cmake --build "$build" --target mtlsd >/dev/null

# Python threads hold the client side; the sidecars are what is measured.
ulimit -n "$(ulimit -Hn)"
MTLSD_BIN=$build/mtlsd python3 bench/soak.py --check-slopes --report "$out/soak.json" "$@" |
  tee "$out/soak.md"
exit "${PIPESTATUS[0]}"
