#!/usr/bin/env bash
# The local demo mesh, on loopback: three "pods" and one application.
#
#   curl (pod A) -> mtlsd A (outbound :18001) ==mTLS==> mtlsd B (inbound :18443) -> app :18080
#   curl (pod C) -> mtlsd C (outbound :18002) ==mTLS==> mtlsd B: refused, C is not allowed
#
# It installs what is missing, builds mtlsd, makes a development CA and the pods'
# identities with `mtlsd cert`, starts the sidecars and the app, sends traffic, shows the
# refusal, the access log and the admin endpoints, then keeps running until Ctrl-C.
#
# Usage: deploy/local/demo.sh [--once]   (--once: exit after the show)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
once=false
[[ ${1:-} == --once ]] && once=true

scripts/install-deps.sh demo
scripts/fetch-boringssl.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DMTLSD_TESTS=OFF >/dev/null
cmake --build build/release --target mtlsd >/dev/null
mtlsd=$top/build/release/mtlsd

work=$(mktemp -d /tmp/mtlsd-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
td=cluster.local

say "A development CA and three identities"
"$mtlsd" cert ca --out "$work/ca" --trust-domain $td
for pod in frontend api intruder; do
  "$mtlsd" cert issue --ca "$work/ca" --out "$work/$pod" --spiffe-id "spiffe://$td/ns/demo/sa/$pod"
done

sidecar() { # name admin-port listener-json cert-dir
  cat >"$work/$1.json" <<EOF
{ "trust_domain": "$td", "workers": 1,
  "admin": { "listen": "127.0.0.1:$2" },
  "certs": { "dir": "$work/$4", "poll_interval": "2s" },
  "access_log": "$work/$1.access.log",
  "listeners": [ $3 ] }
EOF
  "$mtlsd" run --config "$work/$1.json" 2>>"$work/$1.log" &
  pids+=($!)
}

say "The app (pod B) on 127.0.0.1:18080, and three sidecars"
mkdir -p "$work/www"
echo "hello from the api pod, over mutual TLS" >"$work/www/index.html"
python3 -m http.server 18080 --bind 127.0.0.1 --directory "$work/www" >/dev/null 2>&1 &
pids+=($!)
sidecar pod-b 18100 '{ "name": "api-in", "mode": "inbound", "listen": "127.0.0.1:18443",
  "forward": "127.0.0.1:18080", "allow": ["spiffe://'$td'/ns/demo/sa/frontend"] }' api
sidecar pod-a 18101 '{ "name": "to-api", "mode": "outbound", "listen": "127.0.0.1:18001",
  "upstream": "localhost:18443", "server_identity": "spiffe://'$td'/ns/demo/sa/api" }' frontend
sidecar pod-c 18102 '{ "name": "to-api", "mode": "outbound", "listen": "127.0.0.1:18002",
  "upstream": "localhost:18443", "server_identity": "spiffe://'$td'/ns/demo/sa/api" }' intruder

for port in 18080 18100 18101 18102; do
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
  done
done
for port in 18100 18101; do
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null || {
    echo "sidecar on admin port $port is not ready"; exit 1; }
done

say "Pod A (frontend) calls the api through its sidecar: plaintext in, mTLS across"
for _ in 1 2 3; do curl -s http://127.0.0.1:18001/; done

say "Pod C (intruder) tries the same: refused during the handshake"
curl -s --max-time 5 http://127.0.0.1:18002/ && echo "UNEXPECTED: the intruder got through" ||
  echo "curl: the connection was closed, as it should be"
sleep 0.3

say "Access log of pod B's sidecar (one line per connection)"
cat "$work/pod-b.access.log"

say "Pod B's certificates (GET /certs)"
curl -s http://127.0.0.1:18100/certs | python3 -m json.tool | head -30

say "Pod B's metrics (GET /metrics, a selection)"
curl -s http://127.0.0.1:18100/metrics |
  grep -E '^mtlsd_(connections_total|handshakes_total|handshake_failures_total\{.*identity_denied|bytes_(sent|received)_total|cert_generation)' || true

if $once; then
  say "Done (--once)"
  exit 0
fi
say "The mesh keeps running: curl http://127.0.0.1:18001/ ; admin on 127.0.0.1:18100-18102. Ctrl-C stops it."
while true; do sleep 3600; done
