#!/usr/bin/env bash
# Runs tests again and again while both cores are kept busy, to find the ones that pass
# only on a quiet machine: `stress-ng --cpu N` (niced below the tests, so it takes what
# they leave) runs beside `ctest --repeat until-fail:COUNT`, one test at a time.
#
# Usage: tests/hunt-flakes.sh [COUNT] [ctest -R regex]   (default: 20, every integration
# test but the image's). Needs the sanitized build of tests/run.sh (build/asan); prints
# each test's verdict and ends non-zero at the first test that failed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
count=${1:-20}
regex=${2:-'^integration\.'}
command -v stress-ng >/dev/null || "$top/scripts/install-deps.sh" test

stress-ng --cpu "$(nproc)" --quiet &
stress=$!
renice -n 19 -p "$stress" >/dev/null
trap 'kill "$stress" 2>/dev/null; wait "$stress" 2>/dev/null || true' EXIT

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$top/build/asan"
mapfile -t tests < <(ctest -N -R "$regex" -E 'image|container_pods' | sed -n 's/^ *Test *#[0-9]*: //p')
for t in "${tests[@]}"; do
  start=$(date +%s)
  if ctest -R "^${t//./\\.}\$" --repeat "until-fail:$count" --output-on-failure >"/tmp/hunt-$t.log" 2>&1; then
    echo "$t: $count of $count passed under load ($(($(date +%s) - start)) s)"
  else
    echo "$t: FAILED under load; see /tmp/hunt-$t.log"
    exit 1
  fi
done
