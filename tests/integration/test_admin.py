"""Integration tests for the admin port (docs/admin.md): every endpoint, the metrics
(checked by promtool and scraped by a real Prometheus server), the lifecycle endpoints,
and abuse (garbage, oversized heads and bodies, slow and idle clients, too many
connections), driving the real mtlsd binary with real certificates.

Every process started here is stopped by its PID and every wait is bounded.
"""

import http.client
import json
import os
import re
import resource
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from harness import (Backend, Mtlsd, Pki, TempDir, client_context, free_port, server_sockets,
                     spiffe, tls_echo, wait_until)

PROMETHEUS_CT = "text/plain; version=0.0.4; charset=utf-8"
TEXT_CT = "text/plain; charset=utf-8"
JSON_CT = "application/json"
GET_ENDPOINTS = {
    "/healthz": TEXT_CT,
    "/ready": TEXT_CT,
    "/stats": JSON_CT,
    "/stats/prometheus": PROMETHEUS_CT,
    "/metrics": PROMETHEUS_CT,
    "/certs": JSON_CT,
    "/config": JSON_CT,
    "/server_info": JSON_CT,
}
POST_ENDPOINTS = ("/reload", "/drain", "/quitquitquit")
# Every metric of docs/admin.md, present from start-up.
SPEC_METRICS = (
    "mtlsd_connections_total", "mtlsd_connections_active", "mtlsd_handshakes_total",
    "mtlsd_handshake_failures_total", "mtlsd_handshake_duration_seconds",
    "mtlsd_tls_resumptions_total", "mtlsd_upstream_connect_failures_total",
    "mtlsd_bytes_received_total", "mtlsd_bytes_sent_total",
    "mtlsd_connection_duration_seconds", "mtlsd_cert_reloads_total",
    "mtlsd_peer_roots_total", "mtlsd_cert_expiry_timestamp_seconds", "mtlsd_cert_generation",
    "mtlsd_draining", "mtlsd_connections_refused_total", "process_resident_memory_bytes",
    "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds")
FAILURE_REASONS = ("no_peer_cert", "untrusted", "expired", "identity_denied", "protocol",
                   "timeout")
UPSTREAM_REASONS = ("refused", "timeout", "unreachable", "dns")


# ---- HTTP helpers ----

def request(port, method, path, body=None, headers=None, timeout=5.0):
    """(status, headers dict with lowercase names, body) of one request on a new
    connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get_json(port, path):
    status, headers, body = request(port, "GET", path)
    if status != 200:
        raise AssertionError(f"GET {path}: {status} {body!r}")
    return json.loads(body)


def parse_responses(data):
    """Splits raw bytes into [(status, headers, body)], framed by Content-Length."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"incomplete response head: {data[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        n = int(headers.get("content-length", "0")) if status >= 200 else 0
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


def raw_exchange(port, payload, timeout=5.0, pause=0.0):
    """Sends PAYLOAD (byte by byte with PAUSE between bytes when PAUSE > 0), then reads
    until the server closes or TIMEOUT passes. Returns the bytes read."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if pause > 0:
            for i in range(len(payload)):
                s.sendall(payload[i:i + 1])
                time.sleep(pause)
        else:
            try:
                s.sendall(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass
        return read_until_close(s, timeout)


def read_until_close(s, timeout):
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    chunks = []
    while time.monotonic() < deadline:
        try:
            data = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def parse_prometheus(text):
    """{(name, frozenset(labels.items())): value} of the samples in TEXT."""
    samples = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            raise AssertionError(f"unparsable sample line: {line!r}")
        labels = frozenset(label_re.findall(m.group(3) or ""))
        samples[(m.group(1), labels)] = float(m.group(4))
    return samples


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), None)


def fetch_metrics(port):
    status, headers, body = request(port, "GET", "/metrics")
    assert status == 200, status
    return parse_prometheus(body.decode())


def admin_config(port, cert_dir, listeners, **extra):
    cfg = {"admin": {"listen": f"127.0.0.1:{port}"}, "certs": {"dir": cert_dir},
           "workers": 2, "listeners": listeners,
           "limits": {"drain_timeout": "2s"}}
    cfg.update(extra)
    return cfg


def inbound_listener(name, port, backend_port, allow):
    return {"name": name, "mode": "inbound", "listen": f"127.0.0.1:{port}",
            "forward": f"127.0.0.1:{backend_port}", "allow": allow}


class AdminTest(unittest.TestCase):
    """One mtlsd with an inbound listener "api" in front of an echo backend."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.dir = cls.tmp.__enter__()
        cls.pki = Pki(cls.dir)
        cls.server_dir = cls.pki.issue("server", spiffe("api"))
        cls.client_dir = cls.pki.issue("client", spiffe("client"))
        cls.backend = Backend()
        cls.admin_port = free_port()
        cls.api_port = free_port()
        cls.mtlsd = Mtlsd(cls.dir, admin_config(
            cls.admin_port, cls.server_dir,
            [inbound_listener("api", cls.api_port, cls.backend.port, [spiffe("client")])]))
        cls.mtlsd.wait_listening(admin=True)
        wait_until(lambda: request(cls.admin_port, "GET", "/ready")[0] == 200, timeout=15,
                   what="mtlsd ready")

    @classmethod
    def tearDownClass(cls):
        try:
            code = cls.mtlsd.stop()
            if code != 0:
                raise AssertionError(f"mtlsd exited with {code}:\n{cls.mtlsd.stderr()[-3000:]}")
        finally:
            cls.backend.close()
            cls.tmp.__exit__(None, None, None)

    def setUp(self):
        self.assertIsNone(self.mtlsd.proc.poll(), "mtlsd died:\n" + self.mtlsd.stderr()[-3000:])

    def tearDown(self):
        # Whatever a test did, the process is alive and answering.
        self.assertIsNone(self.mtlsd.proc.poll(), "mtlsd died:\n" + self.mtlsd.stderr()[-3000:])
        self.assertEqual(request(self.admin_port, "GET", "/healthz")[0], 200)

    # ---- endpoints ----

    def test_every_get_endpoint(self):
        for path, content_type in GET_ENDPOINTS.items():
            with self.subTest(path=path):
                status, headers, body = request(self.admin_port, "GET", path)
                self.assertEqual(status, 200)
                self.assertEqual(headers["content-type"], content_type)
                self.assertEqual(int(headers["content-length"]), len(body))
                if content_type == JSON_CT:
                    json.loads(body)
        self.assertEqual(request(self.admin_port, "GET", "/healthz")[2], b"ok\n")
        self.assertEqual(request(self.admin_port, "GET", "/ready")[2], b"ready\n")

    def test_query_strings_are_accepted(self):
        status, _, body = request(self.admin_port, "GET", "/healthz?verbose=1&x")
        self.assertEqual((status, body), (200, b"ok\n"))
        self.assertEqual(request(self.admin_port, "GET", "/stats?format=json")[0], 200)

    def test_head(self):
        for path in GET_ENDPOINTS:
            with self.subTest(path=path):
                status, headers, body = request(self.admin_port, "HEAD", path)
                self.assertEqual(status, 200)
                self.assertEqual(body, b"")
                self.assertIn("content-type", headers)
                self.assertGreater(int(headers["content-length"]), 0)
        # HEAD keeps the connection usable: the next response is framed correctly.
        data = raw_exchange(self.admin_port,
                            b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        head, _, rest = data.partition(b"\r\n\r\n")
        self.assertIn(b"Content-Length: 3", head)
        self.assertTrue(rest.startswith(b"HTTP/1.1 200 OK\r\n"), rest)
        self.assertTrue(rest.endswith(b"\r\n\r\nok\n"), rest)

    def test_unknown_paths_404(self):
        for path in ("/", "/nope", "/healthz/", "/HEALTHZ", "/stats/", "/stats/json",
                     "/metrics/x", "/%68ealthz"):
            with self.subTest(path=path):
                status, headers, _ = request(self.admin_port, "GET", path)
                self.assertEqual(status, 404)
                self.assertEqual(headers["content-type"], TEXT_CT)
        self.assertEqual(request(self.admin_port, "POST", "/nope", body=b"")[0], 404)

    def test_wrong_methods_405(self):
        for path in GET_ENDPOINTS:
            for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
                with self.subTest(path=path, method=method):
                    status, headers, _ = request(self.admin_port, method, path, body=b"")
                    self.assertEqual(status, 405)
                    self.assertEqual(headers["allow"], "GET, HEAD")
                    self.assertIn("content-length", headers)
        for path in POST_ENDPOINTS:
            for method in ("GET", "HEAD", "PUT", "DELETE"):
                with self.subTest(path=path, method=method):
                    status, headers, _ = request(self.admin_port, method, path)
                    self.assertEqual(status, 405)
                    self.assertEqual(headers["allow"], "POST")

    def test_certs(self):
        certs = get_json(self.admin_port, "/certs")
        self.assertEqual(certs["generation"], 1)
        self.assertEqual(certs["last_reload"]["result"], "ok")
        self.assertIsNone(certs["last_reload"]["error"])
        self.assertRegex(certs["last_reload"]["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        leaf = certs["leaf"]
        self.assertEqual(leaf["identities"], [spiffe("api")])
        self.assertRegex(leaf["sha256"], r"^[0-9a-f]{64}$")
        self.assertRegex(leaf["serial"], r"^[0-9a-f]+$")
        self.assertRegex(leaf["not_after"], r"Z$")
        self.assertGreater(leaf["seconds_to_expiry"], 86400)
        self.assertEqual(len(certs["bundle"]), 1)
        self.assertRegex(certs["bundle"][0]["sha256"], r"^[0-9a-f]{64}$")
        # The expiry gauge agrees with the leaf.
        samples = fetch_metrics(self.admin_port)
        expiry = metric(samples, "mtlsd_cert_expiry_timestamp_seconds")
        self.assertAlmostEqual(expiry, time.time() + leaf["seconds_to_expiry"], delta=10)
        self.assertEqual(metric(samples, "mtlsd_cert_generation"), 1)

    def test_config_and_server_info(self):
        cfg = get_json(self.admin_port, "/config")
        self.assertEqual(cfg["admin"]["listen"], f"127.0.0.1:{self.admin_port}")
        self.assertEqual(cfg["listeners"][0]["name"], "api")
        info = get_json(self.admin_port, "/server_info")
        self.assertRegex(info["version"], r"^\d+\.\d+\.\d+")
        for key in ("boringssl", "libuv", "cjson"):
            self.assertTrue(info[key], key)
        self.assertRegex(info["libuv"], r"^1\.\d+")
        self.assertEqual(info["workers"], 2)
        # limits.max_connections (16384), or what the open files limit holds, two each.
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard >= 2 * 16384 + 256:
            self.assertEqual(info["max_connections"], 16384)
        else:
            self.assertLess(abs(info["max_connections"] - (hard // 2 - 64)), 64, hard)
        self.assertEqual(info["state"], "live")
        self.assertGreaterEqual(info["uptime_seconds"], 0)

    def test_reload(self):
        status, headers, body = request(self.admin_port, "POST", "/reload?dry_run=1")
        self.assertEqual(status, 200, body)
        self.assertEqual(headers["content-type"], JSON_CT)
        result = json.loads(body)
        self.assertEqual((result["result"], result["dry_run"]), ("ok", True))
        status, _, body = request(self.admin_port, "POST", "/reload")
        self.assertEqual(status, 200, body)
        result = json.loads(body)
        self.assertEqual((result["result"], result["dry_run"]), ("ok", False))
        # Nothing changed on disk: the same generation keeps serving.
        self.assertEqual(result["generation"], 1)
        self.assertEqual(request(self.admin_port, "POST", "/reload?dry_run=maybe")[0], 400)
        # A small body is read and ignored.
        status, _, _ = request(self.admin_port, "POST", "/reload?dry_run=1", body=b"x" * 1000)
        self.assertEqual(status, 200)

    # ---- metrics ----

    def test_every_metric_present(self):
        text = request(self.admin_port, "GET", "/metrics")[2].decode()
        for name in SPEC_METRICS:
            with self.subTest(metric=name):
                self.assertIn(f"# TYPE {name} ", text)
                self.assertIn(f"# HELP {name} ", text)
        samples = parse_prometheus(text)
        for reason in FAILURE_REASONS:
            self.assertIsNotNone(metric(samples, "mtlsd_handshake_failures_total",
                                        listener="api", reason=reason), reason)
        for reason in UPSTREAM_REASONS:
            self.assertIsNotNone(metric(samples, "mtlsd_upstream_connect_failures_total",
                                        listener="api", reason=reason), reason)
        for result in ("ok", "failed"):
            self.assertIsNotNone(metric(samples, "mtlsd_handshakes_total", listener="api",
                                        result=result))
            self.assertIsNotNone(metric(samples, "mtlsd_cert_reloads_total", result=result))
        for name in ("mtlsd_bytes_received_total", "mtlsd_bytes_sent_total"):
            for side in ("downstream", "upstream"):
                self.assertIsNotNone(metric(samples, name, listener="api", side=side))
        self.assertIsNotNone(metric(samples, "mtlsd_handshake_duration_seconds_bucket",
                                    listener="api", le="+Inf"))
        self.assertGreater(metric(samples, "process_resident_memory_bytes"), 0)
        self.assertGreater(metric(samples, "process_open_fds"), 0)
        self.assertAlmostEqual(metric(samples, "process_start_time_seconds"), time.time(),
                               delta=3600)
        # Both paths serve the same families.
        other = request(self.admin_port, "GET", "/stats/prometheus")[2].decode()
        self.assertEqual([l for l in text.splitlines() if l.startswith("# TYPE")],
                         [l for l in other.splitlines() if l.startswith("# TYPE")])

    def test_stats_json_matches_prometheus(self):
        stats = get_json(self.admin_port, "/stats")
        api = stats["listeners"]["api"]
        for name in SPEC_METRICS:
            if name.startswith("process_") or name.startswith("mtlsd_cert") or \
                    name == "mtlsd_draining":
                self.assertIn(name, stats["global"])
            else:
                self.assertIn(name, api)
                self.assertIn(name, stats["total"])
        self.assertEqual(sorted(api["mtlsd_handshake_failures_total"]), sorted(FAILURE_REASONS))
        hist = api["mtlsd_handshake_duration_seconds"]
        self.assertEqual(list(hist["buckets"])[-1], "+Inf")
        self.assertEqual(hist["buckets"]["+Inf"], hist["count"])

    def test_promtool_check_metrics(self):
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool not installed (apt-get install prometheus)")
        self.make_traffic()
        body = request(self.admin_port, "GET", "/metrics")[2]
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        self.assertEqual(r.stdout.strip() + r.stderr.strip(), b"", "promtool lint findings")

    def make_traffic(self, payload=b"hello mtlsd"):
        """One good mTLS connection through "api" (echoed back) and one handshake without
        a client certificate; returns the echoed bytes."""
        echoed = tls_echo(self.api_port, client_context(self.client_dir), payload, timeout=5)
        bare = client_context(ca_file=self.pki.ca_crt)
        try:
            with socket.create_connection(("127.0.0.1", self.api_port), timeout=5) as raw:
                with bare.wrap_socket(raw) as tls:
                    # TLS 1.3: the server's refusal arrives after the client's handshake.
                    tls.sendall(b"x")
                    tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
        return echoed

    def test_metrics_move_with_traffic(self):
        before = fetch_metrics(self.admin_port)
        stats_before = get_json(self.admin_port, "/stats")["listeners"]["api"]
        payload = b"p" * 5000
        self.assertEqual(self.make_traffic(payload), payload)

        def value(samples, name, **labels):
            return metric(samples, name, listener="api", **labels) or 0

        def moved():
            after = fetch_metrics(self.admin_port)
            checks = [
                value(after, "mtlsd_connections_total") >= value(before,
                                                                 "mtlsd_connections_total") + 2,
                value(after, "mtlsd_handshakes_total", result="ok") >=
                value(before, "mtlsd_handshakes_total", result="ok") + 1,
                value(after, "mtlsd_handshakes_total", result="failed") >=
                value(before, "mtlsd_handshakes_total", result="failed") + 1,
                value(after, "mtlsd_handshake_failures_total", reason="no_peer_cert") >=
                value(before, "mtlsd_handshake_failures_total", reason="no_peer_cert") + 1,
                # Only relayed connections have a duration; the refused one does not.
                value(after, "mtlsd_connection_duration_seconds_count") >=
                value(before, "mtlsd_connection_duration_seconds_count") + 1,
                value(after, "mtlsd_connections_active") == 0,
            ]
            for name in ("mtlsd_bytes_received_total", "mtlsd_bytes_sent_total"):
                for side in ("downstream", "upstream"):
                    checks.append(value(after, name, side=side) >=
                                  value(before, name, side=side) + len(payload))
            return after if all(checks) else None

        after = wait_until(moved, timeout=10, interval=0.1, what="metrics to move")
        self.assertGreaterEqual(value(after, "mtlsd_handshake_duration_seconds_count"),
                                value(before, "mtlsd_handshake_duration_seconds_count") + 1)
        roots = [k for k in after if k[0] == "mtlsd_peer_roots_total"]
        self.assertEqual(len(roots), 1, roots)
        self.assertEqual(dict(roots[0][1])["listener"], "api")
        self.assertRegex(dict(roots[0][1])["root"], r"^[0-9a-f]{16}$")

        stats = get_json(self.admin_port, "/stats")
        api = stats["listeners"]["api"]
        self.assertGreaterEqual(api["mtlsd_connections_total"],
                                stats_before["mtlsd_connections_total"] + 2)
        self.assertEqual(api["mtlsd_connections_total"],
                         stats["total"]["mtlsd_connections_total"])
        self.assertEqual(len(api["mtlsd_peer_roots_total"]), 1)
        hist = api["mtlsd_handshake_duration_seconds"]
        self.assertEqual(hist["buckets"]["+Inf"], hist["count"])
        # The proxy times handshakes with the loop's millisecond clock: a fast one is 0.
        self.assertGreaterEqual(hist["sum"], 0)

    def test_prometheus_server_scrapes(self):
        prometheus = shutil.which("prometheus")
        if prometheus is None:
            self.skipTest("prometheus not installed (apt-get install prometheus)")
        self.make_traffic()
        work = tempfile.mkdtemp(dir=self.dir)
        web_port = free_port()
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: mtlsd\n    static_configs:\n"
                    f"      - targets: ['127.0.0.1:{self.admin_port}']\n")
        log = open(os.path.join(work, "prometheus.log"), "wb")
        proc = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={work}/data",
             f"--web.listen-address=127.0.0.1:{web_port}"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        try:
            def query(q):
                url = (f"http://127.0.0.1:{web_port}/api/v1/query?" +
                       urllib.parse.urlencode({"query": q}))
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        answer = json.load(r)
                except OSError:
                    return None
                if proc.poll() is not None:
                    raise AssertionError("prometheus exited")
                return answer["data"]["result"] if answer.get("status") == "success" else None

            def series():
                result = query("mtlsd_connections_total")
                for s in result or []:
                    if s["metric"].get("listener") == "api" and float(s["value"][1]) >= 2:
                        return s
                return None

            found = wait_until(series, timeout=30, interval=0.5,
                               what="prometheus to scrape mtlsd_connections_total")
            self.assertEqual(found["metric"]["job"], "mtlsd")
            up = query('up{job="mtlsd"}')
            self.assertEqual(up[0]["value"][1], "1")
            # The histogram works with PromQL's functions.
            self.assertIsNotNone(query(
                "histogram_quantile(0.9, mtlsd_handshake_duration_seconds_bucket)"))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            log.close()

    # ---- protocol and abuse ----

    def test_keep_alive_and_pipelining(self):
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                      b"GET /ready HTTP/1.1\r\nHost: a\r\n\r\n"
                      b"POST /reload?dry_run=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"
                      b"body"
                      b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n"
                      b"GET /server_info HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            responses = parse_responses(read_until_close(s, 5))
        self.assertEqual([r[0] for r in responses], [200, 200, 200, 404, 200])
        self.assertEqual(responses[0][2], b"ok\n")
        self.assertEqual(responses[1][2], b"ready\n")
        self.assertEqual(json.loads(responses[2][2])["dry_run"], True)
        self.assertEqual(responses[4][1]["connection"], "close")
        # A keep-alive connection serves request after request.
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=5)
        try:
            for _ in range(20):
                conn.request("GET", "/metrics")
                r = conn.getresponse()
                self.assertEqual(r.status, 200)
                r.read()
        finally:
            conn.close()

    def test_a_long_pipeline_is_answered_whole(self):
        # 600 pipelined requests whose answers add up to megabytes, read only once all are
        # sent: each is answered in turn, none is dropped or left waiting (a connection
        # paused on a full output once stalled and got 408).
        request = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=10) as s:
            s.sendall(request * 599 + b"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            responses = parse_responses(read_until_close(s, 30))
        self.assertEqual(len(responses), 600)
        self.assertEqual({r[0] for r in responses}, {200})
        self.assertGreater(sum(len(r[2]) for r in responses), 4 << 20)

    def test_http10(self):
        data = raw_exchange(self.admin_port, b"GET /healthz HTTP/1.0\r\n\r\n")
        (status, headers, body), = parse_responses(data)
        self.assertEqual((status, body, headers["connection"]), (200, b"ok\n", "close"))

    def test_request_one_byte_at_a_time(self):
        data = raw_exchange(self.admin_port,
                            b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                            pause=0.005)
        (status, headers, body), = parse_responses(data)
        self.assertEqual((status, body), (200, b"ok\n"))

    def test_garbage(self):
        for payload in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(500),
                        os.urandom(4096), b"\x00" * 100, b"HELLO\r\n\r\n",
                        b"GET / HTTP/1.1\nHost: a\n\n", b"GET /healthz HTTP/9.9\r\n\r\n"):
            with self.subTest(payload=payload[:16]):
                data = raw_exchange(self.admin_port, payload)
                (status, headers, body), = parse_responses(data)
                self.assertIn(status, (400, 505))
                self.assertEqual(headers["connection"], "close")
                self.assertEqual(headers["content-type"], TEXT_CT)

    def test_huge_headers_431(self):
        payload = (b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20000 +
                   b"\r\n\r\n")
        (status, headers, _), = parse_responses(raw_exchange(self.admin_port, payload))
        self.assertEqual(status, 431)
        self.assertEqual(headers["connection"], "close")
        # Many small headers add up the same way.
        payload = b"GET /healthz HTTP/1.1\r\nHost: a\r\n" + b"X-A: bbbbbbbbbbbbbbbb\r\n" * 1000
        (status, _, _), = parse_responses(raw_exchange(self.admin_port, payload + b"\r\n"))
        self.assertEqual(status, 431)
        # A long request line is 414.
        payload = b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
        (status, _, _), = parse_responses(raw_exchange(self.admin_port, payload))
        self.assertEqual(status, 414)

    def test_oversized_body_413(self):
        payload = (b"POST /reload?dry_run=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n\r\n"
                   + b"z" * 70000)
        (status, headers, _), = parse_responses(raw_exchange(self.admin_port, payload))
        self.assertEqual(status, 413)
        self.assertEqual(headers["connection"], "close")
        # Exactly 64 KiB is accepted.
        status, _, _ = request(self.admin_port, "POST", "/reload?dry_run=1",
                               body=b"z" * 65536)
        self.assertEqual(status, 200)

    def test_chunked_and_bad_lengths(self):
        cases = {
            b"POST /reload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n": 411,
            b"POST /reload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n": 501,
            b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n": 400,
            b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n": 400,
            b"POST /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            b"Content-Length: 2\r\n\r\n": 400,
            b"GET /healthz HTTP/1.1\r\n\r\n": 400,
        }
        for payload, want in cases.items():
            with self.subTest(payload=payload):
                (status, _, _), = parse_responses(raw_exchange(self.admin_port, payload))
                self.assertEqual(status, want)

    def test_expect_continue(self):
        with socket.create_connection(("127.0.0.1", self.admin_port), timeout=5) as s:
            s.sendall(b"POST /reload?dry_run=1 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 3\r\nConnection: close\r\n\r\n")
            interim = s.recv(4096)
            self.assertTrue(interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim)
            s.sendall(b"abc")
            rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):] + read_until_close(s, 5)
        (status, _, _), = parse_responses(rest)
        self.assertEqual(status, 200)

    def test_slow_clients_do_not_block_others(self):
        held = []
        try:
            for i in range(50):
                s = socket.create_connection(("127.0.0.1", self.admin_port), timeout=5)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Slow: " + str(i).encode())
                held.append(s)
            start = time.monotonic()
            status, _, body = request(self.admin_port, "GET", "/healthz", timeout=2)
            elapsed = time.monotonic() - start
            self.assertEqual((status, body), (200, b"ok\n"))
            self.assertLess(elapsed, 1.0)
            # Each half-sent request still completes when its bytes arrive.
            held[0].sendall(b"\r\nConnection: close\r\n\r\n")
            (status, _, body), = parse_responses(read_until_close(held[0], 5))
            self.assertEqual((status, body), (200, b"ok\n"))
        finally:
            for s in held:
                s.close()

    def test_pipelined_flood_without_reading(self):
        # A client that pipelines requests and never reads the answers is throttled (the
        # server stops reading it) rather than buffered without bound, and others are
        # still served.
        flood = socket.create_connection(("127.0.0.1", self.admin_port), timeout=5)
        try:
            flood.setblocking(False)
            chunk = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n" * 100
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    flood.send(chunk)
                except BlockingIOError:
                    time.sleep(0.02)
            start = time.monotonic()
            status, _, body = request(self.admin_port, "GET", "/healthz", timeout=2)
            self.assertEqual((status, body), (200, b"ok\n"))
            self.assertLess(time.monotonic() - start, 1.0)
        finally:
            flood.close()

    def test_connection_limit(self):
        # The other tests' connections (a lingering close, a keep-alive the server has not
        # seen closed yet) would take slots of the 64.
        def quiet():
            wait_until(lambda: server_sockets(self.admin_port) == 0, timeout=15,
                       what="the admin port to hold no connection")

        quiet()
        held = []
        try:
            # 64 connections, the older half in the middle of a request, the newer half
            # kept alive after an answer: a newcomer is served, and the oldest idle
            # connection gives way...
            for i in range(64):
                s = socket.create_connection(("127.0.0.1", self.admin_port), timeout=5)
                if i < 32:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
                else:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
                    self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 200 OK"))
                held.append(s)
            wait_until(lambda: server_sockets(self.admin_port) == 64, timeout=10,
                       what="64 connections held")
            self.assertEqual(request(self.admin_port, "GET", "/healthz")[0], 200)
            self.assertEqual(held[32].recv(100), b"", "the oldest idle connection gave way")
            held[33].sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertTrue(held[33].recv(4096).startswith(b"HTTP/1.1 200 OK"), "others stay")
            # ...and with none idle left, the oldest of those whose request is still
            # arriving.
            for s in held[33:]:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
            wait_until(lambda: server_sockets(self.admin_port) == 63, timeout=10,
                       what="the newcomer's connection closed")
            held.append(socket.create_connection(("127.0.0.1", self.admin_port), timeout=5))
            held[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n")
            self.assertEqual(request(self.admin_port, "GET", "/healthz")[0], 200)
            self.assertEqual(held[0].recv(100), b"", "the oldest slow request gave way")
        finally:
            for s in held:
                s.close()
        wait_until(lambda: request(self.admin_port, "GET", "/healthz")[0] == 200, timeout=10,
                   what="the admin port to serve again")

    def test_idle_and_slow_requests_time_out(self):
        idle = socket.create_connection(("127.0.0.1", self.admin_port), timeout=15)
        slow = socket.create_connection(("127.0.0.1", self.admin_port), timeout=15)
        try:
            start = time.monotonic()
            slow.sendall(b"GET /healthz HTTP/1.1\r\n")
            # A byte every second does not keep a request alive past its deadline.
            data = b""
            for _ in range(14):
                try:
                    slow.sendall(b"X")
                except OSError:
                    break
                slow.settimeout(1)
                try:
                    data += slow.recv(4096)
                except socket.timeout:
                    continue
                except ConnectionResetError:
                    break
                if data:
                    break
            elapsed = time.monotonic() - start
            self.assertTrue(data.startswith(b"HTTP/1.1 408"), data)
            self.assertGreater(elapsed, 8)
            self.assertLess(elapsed, 14)
            self.assertEqual(read_until_close(idle, 5), b"")
        finally:
            idle.close()
            slow.close()


class AdminLifecycleTest(unittest.TestCase):
    """Separate processes for what changes the process: drain, quit, lifecycle off, and a
    start without certificates."""

    def setUp(self):
        self.tmp = TempDir()
        self.dir = self.tmp.__enter__()
        self.pki = Pki(self.dir)
        self.server_dir = self.pki.issue("server", spiffe("api"))
        self.procs = []

    def tearDown(self):
        try:
            for p in self.procs:
                if p.proc.poll() is None:
                    p.stop()
                else:
                    p.stop()  # Closes the logs and checks for sanitizer reports.
        finally:
            self.tmp.__exit__(None, None, None)

    def start(self, cert_dir=None, admin_extra=None):
        port = free_port()
        cfg = admin_config(port, cert_dir or self.server_dir,
                           [inbound_listener("api", free_port(), free_port(), [spiffe("c")])])
        cfg["admin"].update(admin_extra or {})
        m = Mtlsd(self.dir, cfg, name=f"mtlsd{len(self.procs)}")
        self.procs.append(m)
        m.wait_listening(admin=True)
        return m, port

    def test_lifecycle_off(self):
        m, port = self.start(admin_extra={"lifecycle": False})
        for path in POST_ENDPOINTS:
            for method in ("POST", "GET"):
                with self.subTest(path=path, method=method):
                    status, headers, _ = request(port, method, path, body=b"")
                    self.assertEqual(status, 404)
                    self.assertIn("content-length", headers)
        for path in GET_ENDPOINTS:
            self.assertEqual(request(port, "GET", path)[0], 200, path)
        self.assertIsNone(m.proc.poll(), "quitquitquit must not work when off")
        self.assertEqual(get_json(port, "/config")["admin"]["lifecycle"], False)
        self.assertEqual(m.stop(), 0)

    def test_not_ready_without_certificates(self):
        empty = os.path.join(self.dir, "empty")
        os.mkdir(empty)
        m, port = self.start(cert_dir=empty)
        self.assertEqual(request(port, "GET", "/healthz")[0], 200)
        status, headers, body = request(port, "GET", "/ready")
        self.assertEqual(status, 503)
        self.assertEqual(headers["content-type"], TEXT_CT)
        self.assertIn(b"no valid certificate", body)
        certs = get_json(port, "/certs")
        self.assertIsNone(certs["leaf"])
        self.assertEqual(certs["bundle"], [])
        self.assertEqual(certs["generation"], 0)
        self.assertEqual(certs["last_reload"]["result"], "failed")
        self.assertTrue(certs["last_reload"]["error"])
        samples = fetch_metrics(port)
        self.assertEqual(metric(samples, "mtlsd_cert_generation"), 0)
        self.assertGreaterEqual(metric(samples, "mtlsd_cert_reloads_total", result="failed"), 1)
        status, headers, body = request(port, "POST", "/reload")
        self.assertEqual(status, 422, body)
        result = json.loads(body)
        self.assertEqual(result["result"], "failed")
        self.assertTrue(result["error"])
        self.assertEqual(request(port, "POST", "/reload?dry_run=1")[0], 422)
        # Valid files appear: a reload makes the process ready.
        for name in ("tls.crt", "tls.key", "ca.crt"):
            shutil.copy(os.path.join(self.server_dir, name), empty)
        status, _, body = request(port, "POST", "/reload")
        self.assertEqual(status, 200, body)
        wait_until(lambda: request(port, "GET", "/ready")[0] == 200, timeout=5,
                   what="ready after a reload")
        self.assertEqual(get_json(port, "/certs")["generation"], 1)
        self.assertEqual(m.stop(), 0)

    def test_drain(self):
        m, port = self.start()
        wait_until(lambda: request(port, "GET", "/ready")[0] == 200, timeout=10, what="ready")
        status, headers, body = request(port, "POST", "/drain")
        self.assertEqual(status, 202, body)
        self.assertEqual(headers["content-type"], JSON_CT)
        wait_until(lambda: request(port, "GET", "/ready")[0] == 503, timeout=5,
                   what="/ready to turn 503")
        self.assertIn(b"draining", request(port, "GET", "/ready")[2])
        self.assertEqual(get_json(port, "/server_info")["state"], "draining")
        self.assertEqual(metric(fetch_metrics(port), "mtlsd_draining"), 1)
        # A drain without exit leaves the process up, the admin port serving.
        time.sleep(1)
        self.assertIsNone(m.proc.poll())
        self.assertEqual(request(port, "GET", "/healthz")[0], 200)
        self.assertEqual(m.stop(), 0)

    def test_quitquitquit(self):
        m, port = self.start()
        status, headers, body = request(port, "POST", "/quitquitquit")
        self.assertEqual(status, 202, body)
        self.assertEqual(headers["connection"], "close")
        self.assertEqual(json.loads(body)["exit"], True)
        deadline = time.monotonic() + 5
        while m.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(m.proc.poll(), 0, m.stderr()[-3000:])
        self.assertEqual(m.stop(), 0)


if __name__ == "__main__":
    unittest.main()
