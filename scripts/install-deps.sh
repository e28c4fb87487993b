#!/usr/bin/env bash
# Installs the Debian packages mtlsd's build, tests or demo need, when any is missing.
# Usage: scripts/install-deps.sh build|test|demo   (each set includes the build's)
set -euo pipefail

build=(build-essential cmake ninja-build pkg-config xz-utils ca-certificates
       libuv1-dev libcjson-dev libnghttp2-dev libyaml-dev libseccomp-dev python3 openssl)
case "${1:-build}" in
  build) want=("${build[@]}") ;;
  test) want=("${build[@]}" clang clang-format clang-tidy libclang-rt-14-dev curl iproute2 iptables
              tcpdump procps prometheus python3-grpcio python3-yaml python3-jsonpatch podman runc
              debootstrap valgrind strace stress-ng) ;;
  demo) want=("${build[@]}" curl procps) ;;
  *) echo "usage: $0 build|test|demo" >&2; exit 2 ;;
esac

missing=()
# The tests' schema check runs npm; a Node.js from elsewhere (NodeSource) brings its own.
if [[ ${1:-build} == test ]] && ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
