#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine it installs what is missing, fetches the
# pinned BoringSSL, checks formatting, builds mtlsd with gcc (warnings as errors), builds
# it again with clang under AddressSanitizer and UndefinedBehaviorSanitizer, and runs the
# whole ctest suite against the sanitized build.
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

jobs=$(nproc)

echo "== gcc build (-Werror)"
cmake -S . -B build/gcc -G Ninja -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/gcc -j "$jobs"

echo "== clang build with ASan and UBSan"
cmake -S . -B build/asan -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=Debug -DMTLSD_SANITIZE=address,undefined -DMTLSD_FUZZ=ON >/dev/null
cmake --build build/asan -j "$jobs"

echo "== ctest"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd build/asan
ctest --output-on-failure -j "$jobs" "$@"
