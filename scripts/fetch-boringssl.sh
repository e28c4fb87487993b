#!/usr/bin/env bash
# Fetches the pinned BoringSSL source that mtlsd builds by default (-DMTLSD_BORINGSSL=source).
#
# The source comes from Debian's source package android-platform-external-boringssl: it is
# signed by the archive, and its tarball carries android-sources.cmake and pre-generated
# assembly, so no Go or Perl is needed to build it. apt runs with a private state
# directory and a deb-src list derived from the machine's own apt sources, so the
# system's apt configuration is never touched. A tree that is already there is reused.
#
# Usage: scripts/fetch-boringssl.sh [DEST]   (default: .deps/boringssl in the checkout)
set -euo pipefail

readonly package=android-platform-external-boringssl
readonly version=13.0.0+r24-2
readonly revision=1530333b25589ee4d4d52b10e78ee55dd82f6dcd

top=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$top/.deps/boringssl}

if [[ -f $dest/BORINGSSL_REVISION && $(cat "$dest/BORINGSSL_REVISION") == "$revision" ]]; then
  exit 0
fi

state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/parts" "$state/lists/partial" "$state/cache/archives/partial" "$state/dl"

# deb-src twins of every deb entry the machine already uses, in both apt formats.
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -f $f ]] || continue
  sed 's/^Types:.*\bdeb\b.*$/Types: deb-src/' "$f" >"$state/parts/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [[ -f $f ]] || continue
  sed -n 's/^deb \(.*\)$/deb-src \1/p' "$f" >"$state/parts/$(basename "$f").list"
done

apt_opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$state/parts"
  -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
  -o "APT::Sandbox::User=root" -qq)
echo "fetch-boringssl: downloading $package $version (revision ${revision:0:8})" >&2
apt-get "${apt_opts[@]}" update
(cd "$state/dl" && apt-get "${apt_opts[@]}" source --download-only "$package=$version")

tarball=("$state"/dl/*.orig.tar.xz)
unpacked=$state/unpacked
mkdir -p "$unpacked"
tar -xJf "${tarball[0]}" -C "$unpacked"
tree=("$unpacked"/*/)
got=$(cat "${tree[0]}/BORINGSSL_REVISION")
if [[ $got != "$revision" ]]; then
  echo "fetch-boringssl: expected revision $revision, the package has $got" >&2
  exit 1
fi
rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mv "${tree[0]}" "$dest"
echo "fetch-boringssl: BoringSSL ${revision:0:8} is in $dest" >&2
