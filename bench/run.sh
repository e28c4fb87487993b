#!/usr/bin/env bash
# mtlsd against HAProxy, nginx (stream), stunnel, a plain TCP relay and no proxy at all,
# in one run, on 127.0.0.1. See bench/README.md.
#
# Usage: bench/run.sh            (from a fresh clone; root needed only to apt-get install)
#
# Environment:
#   REPS=2              repetitions of every peer (median over them; AGG=best for the best)
#   DURATION=10         seconds per wrk scenario (QUICK: 2)
#   IPERF_TIME=5        seconds of iperf3 (QUICK: 2)
#   IDLE_CONNS=10000    idle relayed connections of the memory scenario (QUICK: 1000)
#   PEERS="mtlsd haproxy nginx stunnel tcp-relay direct"   a subset, in this order
#   RESUME_SCENARIOS=conn   scenarios rerun with resumption on: conn, all or none
#   QUICK=1             a short smoke run
#   BASE_PORT=21000     first of the loopback ports used (default: a free block from 21000)
#   CPU_LOAD, CPU_BACKEND, CPU_CLIENT, CPU_SERVER   override the taskset pinning
#   AGG=median|best     how the repetitions are combined in the report
#   WEBHOOK=1           also measure the admission webhook (bench/webhook.py); 0: skip
#   BUILD_DIR=build/release, BENCH_OUT=bench/out
#
# Output: the markdown report on stdout and in bench/out/report.md; raw figures in
# bench/out/results.json; configurations and logs of the last run in bench/out/run/.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export BUILD_DIR=${BUILD_DIR:-$top/build/release}
export BENCH_OUT=${BENCH_OUT:-$top/bench/out}
out=$BENCH_OUT
mkdir -p "$out/run"

say() { echo "[bench] $*" >&2; }

# Every process is started by bench.py in its own process group and stopped by it; this
# trap stops bench.py (which then stops its children) and, should bench.py itself have
# been killed outright, the groups it recorded in $out/run/pids.
bench_pid=
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ -n $bench_pid ]] && kill -0 "$bench_pid" 2>/dev/null; then
    kill -TERM "$bench_pid" 2>/dev/null || true
    for _ in $(seq 1 80); do
      kill -0 "$bench_pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -KILL "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
  fi
  if [[ -f $out/run/pids ]]; then
    while read -r pid name; do
      [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm ]] || continue
      base=${name##*/}
      if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${base:0:15}" ]]; then
        say "stopping leftover $base (process group $pid)"
        kill -KILL -- "-$pid" 2>/dev/null || true
      fi
    done <"$out/run/pids"
    rm -f "$out/run/pids"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# 1. Packages, when missing: apt-get update once, then apt-get install.
scripts/install-deps.sh build
want=(haproxy nginx libnginx-mod-stream stunnel4 wrk iperf3 procps util-linux python3)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    say "missing packages: ${missing[*]} (run as root, or install them)"
    exit 1
  fi
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. mtlsd Release and BoringSSL's bssl tool.
scripts/fetch-boringssl.sh
say "building mtlsd (Release) and bssl in ${BUILD_DIR#"$top"/}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMTLSD_TESTS=OFF >/dev/null
cmake --build "$BUILD_DIR" --target mtlsd bssl >/dev/null
mtlsd=$BUILD_DIR/mtlsd

# 3. Certificates: one CA, a client and a server leaf, ECDSA P-256, SPIFFE IDs and DNS SANs.
pki=$out/pki
rm -rf "$pki"
"$mtlsd" cert ca --out "$pki/ca" --trust-domain cluster.local --name "bench CA" >/dev/null
for side in client server; do
  "$mtlsd" cert issue --ca "$pki/ca" --out "$pki/$side" --name "$side.bench.local" \
    --spiffe-id "spiffe://cluster.local/ns/bench/sa/$side" --dns "$side.bench.local" >/dev/null
done

# 4. Measure, then report.
rm -f "$out/results.json"
python3 bench/bench.py &
bench_pid=$!
rc=0
wait "$bench_pid" || rc=$?
bench_pid=
if [[ -f $out/results.json ]]; then
  python3 bench/report.py "$out/results.json" >"$out/report.md"
  if [[ ${WEBHOOK:-1} == 1 ]]; then
    say "the admission webhook: latency per review and memory"
    python3 bench/webhook.py >>"$out/report.md" || say "bench/webhook.py failed"
  fi
  cat "$out/report.md"
  say "report: ${out#"$top"/}/report.md; raw figures: ${out#"$top"/}/results.json"
fi
[[ $rc -eq 0 ]] || say "bench.py exited with $rc"
exit "$rc"
