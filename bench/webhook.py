#!/usr/bin/env python3
"""The admission webhook's latency per review and its memory (bench/run.sh runs it after
the proxy peers; see bench/README.md).

One `mtlsd webhook` on 127.0.0.1 with the bench's server certificate, and one Python
client that posts the AdmissionReview of a typical Deployment's pod (two containers,
named ports, three probes, the managedFields the API server sends along) the way the API
server does: over a kept-alive HTTPS connection, one review at a time. It reports:
  - the client's round trip per review (p50, p99, max) and reviews/s, on one connection
    and with a new TLS connection per review;
  - the webhook's own time per review, from its histogram's sum and count;
  - the webhook's resident memory when idle, after the runs, and per open connection
    (REVIEW_CONNS connections held open, each after one review).
Raw figures go to BENCH_OUT/webhook.json, the markdown section to stdout.

Environment: REVIEWS=5000 (QUICK: 500), REVIEW_CONNS=200, BUILD_DIR, BENCH_OUT.
"""

import http.client
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("BUILD_DIR", TOP / "build/release"))
OUT = Path(os.environ.get("BENCH_OUT", TOP / "bench/out"))
QUICK = os.environ.get("QUICK") == "1"
REVIEWS = int(os.environ.get("REVIEWS", "500" if QUICK else "5000"))
CONNS = int(os.environ.get("REVIEW_CONNS", "200"))


def pod():
    container = {
        "name": "web", "image": "registry.example.com/shop/web:1.42.0",
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": 9090, "protocol": "TCP"}],
        "env": [{"name": f"SETTING_{i}", "value": f"value-{i}"} for i in range(12)],
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                      "limits": {"memory": "512Mi"}},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
        "startupProbe": {"grpc": {"port": 9090}, "failureThreshold": 30},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/web"}],
    }
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": "web-7d9f8c6b5-", "namespace": "shop",
            "labels": {"app": "web", "pod-template-hash": "7d9f8c6b5"},
            "annotations": {"example.com/owner": "team-a"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "web-7d9f8c6b5", "uid": "5f6c2a8e-1d2b-4c9e-9a51",
                                 "controller": True, "blockOwnerDeletion": True}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                               "apiVersion": "v1", "fieldsType": "FieldsV1",
                               "fieldsV1": {f"f:field{i}": {} for i in range(60)}}],
        },
        "spec": {
            "serviceAccountName": "web",
            "containers": [container, {"name": "log-shipper", "image": "fluent-bit:3.1",
                                       "resources": {"requests": {"cpu": "20m"}}}],
            "volumes": [{"name": "config", "configMap": {"name": "web"}}],
            "terminationGracePeriodSeconds": 30,
        },
    }


def review_body(uid):
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "shop", "operation": "CREATE", "object": pod(),
                    "userInfo": {"username": "system:serviceaccount:kube-system:"
                                             "replicaset-controller"}}}).encode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def connect(port, ctx):
    conn = http.client.HTTPSConnection("server.bench.local", port, context=ctx, timeout=10)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    # As Go's net/http (the API server) does: http.client writes the head and the body
    # apart, and Nagle would hold the body for the webhook's delayed ACK (40 ms).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sock = ctx.wrap_socket(raw, server_hostname="server.bench.local")
    return conn


def post(conn, body):
    conn.request("POST", "/inject", body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 200 or b'"patchType":"JSONPatch"' not in data:
        raise RuntimeError(f"bad answer {r.status}: {data[:200]!r}")


def percentiles(samples):
    s = sorted(samples)
    return {"p50_us": round(s[len(s) // 2] * 1e6, 1),
            "p99_us": round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6, 1),
            "max_us": round(s[-1] * 1e6, 1), "mean_us": round(statistics.fmean(s) * 1e6, 1)}


def server_mean_us(port, ctx):
    conn = connect(port, ctx)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = {}
    for line in text.splitlines():
        for key in ("mtlsd_webhook_request_duration_seconds_sum",
                    "mtlsd_webhook_request_duration_seconds_count"):
            if line.startswith(key + " "):
                values[key] = float(line.split()[1])
    return values


def main():
    pki = OUT / "pki"
    certs = pki / "server"
    if not (certs / "tls.crt").exists():
        print("webhook bench: run bench/run.sh (it makes the certificates)", file=sys.stderr)
        return 2
    port = free_port()
    log = open(OUT / "run" / "webhook.log", "wb")
    proc = subprocess.Popen([str(BUILD / "mtlsd"), "webhook", "--listen", f"127.0.0.1:{port}",
                             "--certs", str(certs), "--log-level", "warn"],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca" / "ca.crt"))
        deadline = time.monotonic() + 15
        while True:
            try:
                connect(port, ctx).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the webhook did not start; see webhook.log")
                time.sleep(0.05)
        idle_kib = rss_kib(proc.pid)
        body = review_body("bench")
        conn = connect(port, ctx)
        for _ in range(200):
            post(conn, body)
        before = server_mean_us(port, ctx)
        keepalive = []
        t0 = time.perf_counter()
        for _ in range(REVIEWS):
            t = time.perf_counter()
            post(conn, body)
            keepalive.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - t0
        conn.close()
        after = server_mean_us(port, ctx)
        n = after["mtlsd_webhook_request_duration_seconds_count"] - before[
            "mtlsd_webhook_request_duration_seconds_count"]
        server_us = (after["mtlsd_webhook_request_duration_seconds_sum"] - before[
            "mtlsd_webhook_request_duration_seconds_sum"]) / n * 1e6
        fresh = []
        for _ in range(max(50, REVIEWS // 10)):
            t = time.perf_counter()
            c = connect(port, ctx)
            post(c, body)
            c.close()
            fresh.append(time.perf_counter() - t)
        after_runs_kib = rss_kib(proc.pid)
        held = []
        for _ in range(CONNS):
            c = connect(port, ctx)
            post(c, body)
            held.append(c)
        held_kib = rss_kib(proc.pid)
        for c in held:
            c.close()
        result = {
            "review_bytes": len(body), "reviews": REVIEWS,
            "keepalive": {**percentiles(keepalive), "reviews_per_s": round(REVIEWS / elapsed)},
            "new_connection": percentiles(fresh),
            "server_mean_us": round(server_us, 1),
            "rss_kib": {"idle": idle_kib, "after_runs": after_runs_kib,
                        f"with_{CONNS}_connections": held_kib},
            "rss_per_connection_kib": round((held_kib - after_runs_kib) / CONNS, 1),
        }
    finally:
        proc.terminate()
        proc.terminate()  # the second signal skips the drain
        proc.wait(timeout=20)
        log.close()
    (OUT / "webhook.json").write_text(json.dumps(result, indent=1) + "\n")
    k, f, r = result["keepalive"], result["new_connection"], result["rss_kib"]
    print(f"""
## Admission webhook

The AdmissionReview of a typical Deployment's pod ({result['review_bytes']} bytes), posted
by one Python client, one at a time, {REVIEWS} times:

| | p50 | p99 | max | reviews/s |
| --- | --- | --- | --- | --- |
| kept-alive connection (as the API server) | {k['p50_us']} µs | {k['p99_us']} µs | {k['max_us']} µs | {k['reviews_per_s']} |
| a new TLS connection per review | {f['p50_us']} µs | {f['p99_us']} µs | {f['max_us']} µs | |

The webhook's own time per review (its histogram): {result['server_mean_us']} µs on average.
Resident memory: {r['idle']} KiB idle, {r['after_runs']} KiB after the runs, \
{r[f'with_{CONNS}_connections']} KiB with {CONNS} connections open \
({result['rss_per_connection_kib']} KiB per connection).
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
