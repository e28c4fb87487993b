#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine it installs what is missing, fetches the
# pinned BoringSSL, checks formatting and the layering of the modules, builds mtlsd with
# gcc (warnings as errors), builds it again with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer, runs clang-tidy over the sources, runs the whole ctest suite
# against the sanitized build, and runs the libFuzzer drivers, built in a tree of their
# own (so that the binary the integration tests drive carries no fuzzer instrumentation).
#
# Usage: tests/run.sh [extra ctest arguments, e.g. -R unit]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

scripts/install-deps.sh test
scripts/fetch-boringssl.sh

echo "== clang-format"
mapfile -t c_files < <(git ls-files '*.c' '*.h' 2>/dev/null || find src include tests -name '*.[ch]')
if [[ ${#c_files[@]} -gt 0 ]]; then
  clang-format --dry-run -Werror "${c_files[@]}"
fi

echo "== layering"
python3 scripts/check-layers.py

jobs=$(nproc)

echo "== gcc build (-Werror)"
cmake -S . -B build/gcc -G Ninja -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/gcc -j "$jobs"

echo "== clang build with ASan and UBSan"
sanitized=(-G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
  -DCMAKE_BUILD_TYPE=Debug -DMTLSD_SANITIZE=address,undefined)
cmake -S . -B build/asan "${sanitized[@]}" -DMTLSD_FUZZ=OFF -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
  >/dev/null
cmake --build build/asan -j "$jobs"

echo "== clang-tidy"
# Its "N warnings generated" count (of suppressed ones) is noise; diagnostics go to stdout.
git ls-files 'src/*.c' | xargs -P "$jobs" -n 4 clang-tidy -p build/asan --quiet \
  2> >(grep -v 'warnings\? generated\.$' >&2)

echo "== fuzz build"
cmake -S . -B build/fuzz "${sanitized[@]}" -DMTLSD_FUZZ=ON >/dev/null
cmake --build build/fuzz -j "$jobs" --target fuzz

echo "== ctest"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build/asan --output-on-failure -j "$jobs" "$@"
if [[ $# -eq 0 ]]; then
  ctest --test-dir build/fuzz --output-on-failure -j "$jobs" -L fuzz
fi
