"""The health port (docs/admin.md): its read-only routes, and the application probes and
lifecycle hooks it runs the way the kubelet would (MTLSD_APP_PROBES), against real servers
started here: an HTTP app (200, 503, redirects, slow, headers), an HTTPS one, TCP ports open
and closed, and a gRPC server with the standard health service. The application's own
metrics served after mtlsd's (MTLSD_APP_METRICS), from a real metrics server that can
answer well, slowly, too much, or nonsense. Its own connection budget: a full admin port
never fails a probe, and a flood on the health port never blocks the admin port."""

import concurrent.futures
import http.server
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

from harness import (MTLSD, RELEASE_BIN, Flood, Mtlsd, Pki, TempDir, free_port, http_get,
                     prom_value, wait_until)

DEBIAN_PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))



class App(http.server.ThreadingHTTPServer):
    """The application's own probe endpoints."""

    daemon_threads = True

    def __init__(self, tls_context=None):
        self.count_hits = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), AppHandler)
        if tls_context is not None:
            self.socket = tls_context.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):
        """A prober that gave up (the slow endpoint) leaves a broken pipe: expected."""


class AppHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers=()):
        body = f"{status}\n".encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        port = self.server.port
        path = self.path
        if path == "/ok":
            self.answer(200)
        elif path == "/fail":
            self.answer(503)
        elif path == "/redirect-same":
            self.answer(302, [("Location", "/ok")])
        elif path == "/redirect-abs":
            self.answer(301, [("Location", f"http://127.0.0.1:{port}/ok")])
        elif path == "/redirect-other":
            self.answer(302, [("Location", "http://other.invalid/ok")])
        elif path == "/redirect-loop":
            self.answer(302, [("Location", "/redirect-loop")])
        elif path == "/redirect-to-fail":
            self.answer(307, [("Location", "/fail")])
        elif path == "/redirect-userinfo":
            self.answer(308, [("Location", f"http://probe@127.0.0.1:{port}/ok")])
        elif path == "/redirect-v6":
            self.answer(302, [("Location", "http://[2001:db8::1]/ok")])
        elif path == "/redirect-scheme-relative":
            self.answer(303, [("Location", "//other.invalid/fail")])
        elif path == "/multiple-choices":
            # Go follows 301, 302, 303, 307 and 308 only: a 300 is the answer itself.
            self.answer(300, [("Location", "/fail")])
        elif path == "/location-in-body":
            body = b"Location: /fail\r\n\r\n"
            self.send_response(302)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/status-2009":
            # Four digits: not a 200, whatever the first three say.
            self.wfile.write(b"HTTP/1.1 2009 OK\r\nContent-Length: 0\r\n\r\n")
        elif path == "/redirect-cr":
            # A bare CR and a space in the Location: copied into the next request line,
            # they would end it early and smuggle a header in.
            self.wfile.write(b"HTTP/1.1 302 Found\r\nLocation: /ok HTTP/1.1\rX-Smuggled: 1\r\n"
                             b"Content-Length: 0\r\n\r\n")
        elif path == "/slow":
            time.sleep(3)
            self.answer(200)
        elif path == "/slow-hook":
            # Longer than the health port's 4 s for a request and its answer.
            time.sleep(5)
            self.answer(200)
        elif path == "/headers":
            ok = (self.headers.get("X-Probe") == "yes"
                  and self.headers.get("User-Agent", "").startswith("kube-probe/")
                  and self.headers.get("Host") == f"127.0.0.1:{port}")
            self.answer(200 if ok else 400)
        elif path == "/count":
            with self.server.lock:
                self.server.count_hits += 1
            time.sleep(1)
            self.answer(200)
        else:
            self.answer(404)


def health_config(tmp):
    """A sidecar with its admin and health ports and no certificate: the health port's
    routes need none."""
    return {
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "health": {"listen": f"127.0.0.1:{free_port()}"},
        "certs": {"dir": os.path.join(tmp, "no-certs")},
        "listeners": [{"name": "out", "mode": "outbound", "listen": f"127.0.0.1:{free_port()}",
                       "transparent": True}],
        "workers": 1,
    }


def http_probe(path, port, **extra):
    return {"httpGet": {"path": path, "port": port, **extra}, "timeoutSeconds": 1}


def hook(handler, grace=30):
    """A lifecycle handler as the injector keeps it: the original handler, and the pod's
    terminationGracePeriodSeconds as its timeout."""
    return {**handler, "timeoutSeconds": grace}


class HealthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = TempDir()
        cls.tmp = cls._tmp.__enter__()
        cls.app = App()
        pki = Pki(cls.tmp)
        tls_dir = pki.issue("app", dns=["app.example.com"])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(tls_dir, "tls.crt"), os.path.join(tls_dir, "tls.key"))
        cls.https_app = App(tls_context=ctx)
        cls.grpc_port = free_port()
        cls.grpc = subprocess.Popen(
            [DEBIAN_PYTHON, os.path.join(HERE, "grpc_health_server.py"), str(cls.grpc_port),
             "=1", "db=2", "starting=0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ready = cls.grpc.stdout.readline().strip()
        if ready != "ready":
            raise AssertionError(f"the gRPC health server did not start: {cls.grpc.stderr.read()}")
        closed_port = free_port()
        port = cls.app.port
        cls.probes = {
            "ok/livez": http_probe("/ok", port),
            "fail/livez": http_probe("/fail", port),
            "same/livez": http_probe("/redirect-same", port),
            "abs/readyz": http_probe("/redirect-abs", port),
            "other/livez": http_probe("/redirect-other", port),
            "loop/livez": http_probe("/redirect-loop", port),
            "tofail/livez": http_probe("/redirect-to-fail", port),
            "userinfo/livez": http_probe("/redirect-userinfo", port),
            "v6/livez": http_probe("/redirect-v6", port),
            "schemeless/livez": http_probe("/redirect-scheme-relative", port),
            "choices/livez": http_probe("/multiple-choices", port),
            "bodyloc/livez": http_probe("/location-in-body", port),
            "status2009/livez": http_probe("/status-2009", port),
            "crloc/livez": http_probe("/redirect-cr", port),
            "slow/livez": http_probe("/slow", port),
            "headers/livez": http_probe("/headers", port,
                                        httpHeaders=[{"name": "X-Probe", "value": "yes"}]),
            "noheaders/livez": http_probe("/headers", port),
            "count/startupz": {**http_probe("/count", port), "timeoutSeconds": 5},
            "https/livez": http_probe("/ok", cls.https_app.port, scheme="HTTPS"),
            "tcp/livez": {"tcpSocket": {"port": port}},
            "tcpdown/livez": {"tcpSocket": {"port": closed_port}},
            "grpc/livez": {"grpc": {"port": cls.grpc_port}},
            "grpcdb/livez": {"grpc": {"port": cls.grpc_port, "service": "db"}},
            "grpcstarting/livez": {"grpc": {"port": cls.grpc_port, "service": "starting"}},
            "grpcnone/livez": {"grpc": {"port": cls.grpc_port, "service": "nope"}},
            "grpcdown/livez": {"grpc": {"port": closed_port}},
            "ok/poststartz": hook({"httpGet": {"path": "/ok", "port": port}}),
            "fail/prestopz": hook({"httpGet": {"path": "/fail", "port": port}}),
            "slowhook/prestopz": hook({"httpGet": {"path": "/slow-hook", "port": port}}, 10),
            "tcp/prestopz": hook({"tcpSocket": {"port": port}}),
            "tcpdown/poststartz": hook({"tcpSocket": {"port": closed_port}}),
        }
        cls.config = health_config(cls.tmp)
        cls.mtlsd = Mtlsd(cls.tmp, cls.config,
                          env={"MTLSD_APP_PROBES": json.dumps(cls.probes), "POD_IP": "127.0.0.1"})
        cls.mtlsd.wait_listening(admin=True)

    @classmethod
    def tearDownClass(cls):
        try:
            code = cls.mtlsd.stop()
            assert code == 0, f"mtlsd exited {code}"
        finally:
            cls.grpc.stdin.close()
            cls.grpc.wait(timeout=10)
            cls.app.close()
            cls.https_app.close()
            cls._tmp.__exit__(None, None, None)

    def health(self, path, method="GET", timeout=10):
        return http_get(self.mtlsd.health_url(path), method=method, timeout=timeout)

    def probe(self, key):
        status, _, body = self.health(f"/app-health/{key}")
        return status, body.decode()

    # ---- the port itself ----

    def test_serves_health_readiness_and_metrics(self):
        status, _, body = self.health("/healthz")
        self.assertEqual((status, body), (200, b"ok\n"))
        status, _, body = self.health("/ready")
        self.assertEqual(status, 503)
        self.assertIn(b"no valid certificate", body)
        for path in ("/metrics", "/stats/prometheus"):
            status, headers, body = self.health(path)
            self.assertEqual(status, 200)
            self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
            self.assertIn(b"# TYPE mtlsd_app_probes_total counter", body)
        status, headers, body = self.health("/healthz", method="HEAD")
        self.assertEqual((status, body, headers["Content-Length"]), (200, b"", "3"))

    def test_is_read_only(self):
        for path in ("/config", "/certs", "/stats", "/server_info", "/reload", "/drain",
                     "/quitquitquit", "/app-health", "/app-health/", "/nope"):
            status, _, _ = self.health(path)
            self.assertEqual(status, 404, path)
        for path in ("/reload", "/quitquitquit"):
            status, _, _ = self.health(path, method="POST", timeout=5)
            self.assertEqual(status, 404, path)
        for path in ("/healthz", "/ready", "/metrics", "/app-health/ok/livez"):
            status, headers, _ = self.health(path, method="POST", timeout=5)
            self.assertEqual(status, 405, path)
            self.assertEqual(headers["Allow"], "GET, HEAD")
        # The admin port is untouched by all this and still serves its own routes.
        status, _, _ = http_get(self.mtlsd.admin_url("/config"))
        self.assertEqual(status, 200)

    def test_unknown_probe_is_404_naming_it(self):
        status, body = self.probe("nope/livez")
        self.assertEqual(status, 404)
        self.assertIn('no probe "nope/livez"', body)

    # ---- the probes ----

    def test_http_probes_as_the_kubelet_runs_them(self):
        cases = {
            "ok/livez": (200, "HTTP 200"),
            "fail/livez": (503, "status 503"),
            "same/livez": (200, "HTTP 200"),
            "abs/readyz": (200, "HTTP 200"),
            "other/livez": (200, "another host"),
            "loop/livez": (503, "stopped after 10 redirects"),
            "tofail/livez": (503, "status 503"),
            "userinfo/livez": (200, "HTTP 200"),
            "v6/livez": (200, "another host (2001:db8::1)"),
            "schemeless/livez": (200, "another host (other.invalid)"),
            "choices/livez": (200, "HTTP 300"),
            "bodyloc/livez": (200, "HTTP 302"),
            "status2009/livez": (503, "not an HTTP response"),
            "crloc/livez": (503, "HTTP 302 to a malformed location"),
            "headers/livez": (200, "HTTP 200"),
            "noheaders/livez": (503, "status 400"),
            "https/livez": (200, "HTTP 200"),
        }
        for key, (want_status, want_text) in cases.items():
            status, body = self.probe(key)
            self.assertEqual(status, want_status, f"{key}: {body}")
            self.assertIn(want_text, body, key)

    def test_a_probe_slower_than_its_timeout_fails(self):
        start = time.monotonic()
        status, body = self.probe("slow/livez")
        self.assertEqual(status, 503)
        self.assertIn("timed out after 1000 ms", body)
        self.assertLess(time.monotonic() - start, 2.5)

    def test_tcp_probes(self):
        self.assertEqual(self.probe("tcp/livez")[0], 200)
        status, body = self.probe("tcpdown/livez")
        self.assertEqual(status, 503)
        self.assertIn("refused", body)

    def test_grpc_probes(self):
        status, body = self.probe("grpc/livez")
        self.assertEqual((status, body), (200, "ok: SERVING\n"))
        status, body = self.probe("grpcdb/livez")
        self.assertEqual(status, 503)
        self.assertIn("NOT_SERVING", body)
        status, body = self.probe("grpcstarting/livez")
        self.assertEqual(status, 503)
        self.assertIn("UNKNOWN", body)
        status, body = self.probe("grpcnone/livez")
        self.assertEqual(status, 503)
        self.assertIn("gRPC status 5", body)  # NOT_FOUND
        status, body = self.probe("grpcdown/livez")
        self.assertEqual(status, 503)
        self.assertIn("refused", body)

    # ---- lifecycle hooks ----

    def hook(self, key):
        status, _, body = self.health(f"/app-lifecycle/{key}", timeout=30)
        return status, body.decode()

    def test_lifecycle_hooks_run_like_probes(self):
        self.assertEqual(self.hook("ok/poststartz"), (200, "ok: HTTP 200\n"))
        status, body = self.hook("fail/prestopz")
        self.assertEqual(status, 503)
        self.assertIn("failed: HTTP probe failed with status 503", body)
        self.assertEqual(self.hook("tcp/prestopz")[0], 200)
        status, body = self.hook("tcpdown/poststartz")
        self.assertEqual(status, 503)
        self.assertIn("refused", body)
        status, _, _ = self.health("/app-lifecycle/ok/poststartz", method="HEAD")
        self.assertEqual(status, 200)
        status, headers, _ = self.health("/app-lifecycle/ok/poststartz", method="POST")
        self.assertEqual((status, headers["Allow"]), (405, "GET, HEAD"))
        # What an operator sees of a failed hook, which the kubelet does not show.
        wait_until(lambda: "lifecycle hook fail/prestopz failed: HTTP probe failed with status "
                   "503" in self.mtlsd.stderr(), what="the failed hook's log line")
        _, _, body = self.health("/metrics")
        text = body.decode()
        self.assertGreaterEqual(prom_value(text, 'mtlsd_app_probes_total{container="fail",'
                                           'kind="prestopz",result="failed"}'), 1)
        self.assertGreaterEqual(prom_value(text, 'mtlsd_app_probes_total{container="ok",'
                                           'kind="poststartz",result="ok"}'), 1)

    def test_a_hook_outlasts_the_ports_short_timeouts(self):
        # The handler takes 5 s, longer than the 4 s the port gives a request and its
        # answer: the hook's own timeout (the grace period) bounds it, not the port's.
        start = time.monotonic()
        status, body = self.hook("slowhook/prestopz")
        took = time.monotonic() - start
        self.assertEqual((status, body), (200, "ok: HTTP 200\n"))
        self.assertGreater(took, 4.5)

    def test_probes_and_hooks_each_on_their_own_path(self):
        cases = {
            "/app-health/ok/poststartz": '"ok/poststartz": a lifecycle hook, not a probe; '
                                         'lifecycle hooks are /app-lifecycle/',
            "/app-lifecycle/ok/livez": '"ok/livez": a probe, not a lifecycle hook; probes are '
                                       '/app-health/',
            "/app-lifecycle/ok/stopz": '"ok/stopz": no such kind; lifecycle hooks are '
                                       '/app-lifecycle/<container>/<poststartz|prestopz>',
            "/app-health/ok/alive": '"ok/alive": no such kind; probes are /app-health/',
            "/app-lifecycle/nope/prestopz": 'no lifecycle hook "nope/prestopz"',
            "/app-lifecycle/": "",
        }
        for path, want in cases.items():
            status, _, body = self.health(path)
            self.assertEqual(status, 404, path)
            self.assertIn(want, body.decode(), path)

    def test_one_run_in_flight_per_probe(self):
        before = self.app.count_hits
        # Sixteen: the most connections the port keeps from one address.
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda _: self.probe("count/startupz"), range(16)))
        self.assertTrue(all(r[0] == 200 for r in results), results)
        self.assertEqual(self.app.count_hits - before, 1,
                         "sixteen concurrent requests must share one run of the probe")

    def test_runs_are_counted(self):
        self.probe("tcp/livez")
        self.probe("tcpdown/livez")
        _, _, body = self.health("/metrics")
        text = body.decode()
        ok = [l for l in text.splitlines()
              if l.startswith('mtlsd_app_probes_total{container="tcp",kind="livez",result="ok"}')]
        failed = [l for l in text.splitlines() if l.startswith(
            'mtlsd_app_probes_total{container="tcpdown",kind="livez",result="failed"}')]
        self.assertTrue(ok and int(ok[0].split()[-1]) >= 1, text)
        self.assertTrue(failed and int(failed[0].split()[-1]) >= 1, text)
        _, _, body = http_get(self.mtlsd.admin_url("/stats"))
        stats = json.loads(body)["global"]["mtlsd_app_probes_total"]
        self.assertGreaterEqual(stats["tcp/livez"]["ok"], 1)
        self.assertEqual(set(stats), set(self.probes))

    def test_metrics_pass_promtool(self):
        promtool = shutil.which("promtool")
        if promtool is None:
            self.fail("promtool is missing (tests/run.sh installs Debian's prometheus)")
        self.probe("ok/livez")
        _, _, body = self.health("/metrics")
        r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())

    # ---- budgets ----

    def hold(self, addr, count, sources=1):
        """COUNT connections to ADDR, each in the middle of a request head, from SOURCES
        loopback addresses (127.0.0.2 on)."""
        host, port = addr.rsplit(":", 1)
        held = []
        for i in range(count):
            s = socket.socket()
            s.settimeout(5)
            s.bind((f"127.0.0.{2 + i % sources}", 0))
            s.connect((host, int(port)))
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            held.append(s)
        return held

    def test_a_flooded_admin_port_never_fails_a_probe(self):
        held = self.hold(self.config["admin"]["listen"], 64)
        try:
            # Sixteen probes at once (the most the port keeps from one address) all
            # pass...
            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                results = list(pool.map(lambda _: self.probe("ok/livez"), range(16)))
            self.assertEqual([r[0] for r in results], [200] * 16, results)
            # ...and the admin port still answers a newcomer (the oldest slow one goes).
            self.assertEqual(http_get(self.mtlsd.admin_url("/healthz"))[0], 200)
        finally:
            for s in held:
                s.close()

    def test_a_flood_on_the_health_port_never_blocks_the_admin_port(self):
        held = self.hold(self.config["health"]["listen"], 128, sources=16)
        try:
            status, _, _ = http_get(self.mtlsd.admin_url("/ready"))
            self.assertEqual(status, 503)  # answered (no certificate), not blocked
            status, _, _ = http_get(self.mtlsd.admin_url("/healthz"))
            self.assertEqual(status, 200)
            self.assertEqual(self.health("/healthz")[0], 200)
        finally:
            for s in held:
                s.close()


# What a Go application's client library serves: some families of its own, and the
# process_* ones that mtlsd exports too.
GO_METRICS = """# HELP go_goroutines Number of goroutines that currently exist.
# TYPE go_goroutines gauge
go_goroutines 9
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds 11
# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.2e+07
# HELP app_requests_total Requests served.
# TYPE app_requests_total counter
app_requests_total{code="200"} 1027
"""


class MetricsApp(http.server.ThreadingHTTPServer):
    """The application's metrics endpoint; |mode| says how it answers, and it counts the
    requests it gets and how many it served at once."""

    daemon_threads = True

    def __init__(self):
        self.mode = "ok"
        self.delay = 0.0
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.accept = None
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), MetricsHandler)
        self.port = self.server_address[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.shutdown()
        self.server_close()

    def handle_error(self, request, client_address):
        """mtlsd giving up on a slow or huge answer leaves a broken pipe: expected."""


class MetricsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        app = self.server
        with app.lock:
            app.requests += 1
            app.in_flight += 1
            app.max_in_flight = max(app.max_in_flight, app.in_flight)
            app.accept = self.headers.get("Accept")
            mode, delay = app.mode, app.delay
        try:
            time.sleep(delay if mode != "hang" else 5)
            self.answer(mode)
        finally:
            with app.lock:
                app.in_flight -= 1

    def answer(self, mode):
        body = (GO_METRICS + "# HELP app_mode How the test answers.\n# TYPE app_mode gauge\n"
                f'app_mode{{mode="{mode}"}} 1\n').encode()
        if mode.startswith("huge"):
            # 3 MiB of valid series: over the 2 MiB that mtlsd takes.
            body += b"".join(b"app_filler_%07d 1\n" % i for i in range((3 << 20) // 21))
        elif mode == "html":
            body = b"<html><body>metrics moved</body></html>\n"
        status = 500 if mode == "error" else 200
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        if mode in ("chunked", "huge-chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 1000):
                piece = body[i:i + 1000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class AppMetricsTest(unittest.TestCase):
    """MTLSD_APP_METRICS: the health port's /metrics serves the application's metrics
    after mtlsd's, fetched one at a time, bounded in time and size."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = TempDir()
        cls.tmp = cls._tmp.__enter__()
        cls.app = MetricsApp()
        cls.config = health_config(cls.tmp)
        cls.mtlsd = Mtlsd(cls.tmp, cls.config, env={
            "MTLSD_APP_METRICS": json.dumps({"port": cls.app.port, "path": "/metrics"}),
            "POD_IP": "127.0.0.1"})
        cls.mtlsd.wait_listening(admin=True)

    @classmethod
    def tearDownClass(cls):
        try:
            code = cls.mtlsd.stop()
            assert code == 0, f"mtlsd exited {code}"
        finally:
            cls.app.close()
            cls._tmp.__exit__(None, None, None)

    def setUp(self):
        with self.app.lock:
            self.app.mode, self.app.delay = "ok", 0.0

    def scrape(self, mtlsd=None):
        status, headers, body = http_get((mtlsd or self.mtlsd).health_url("/metrics"),
                                         timeout=15)
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        return body.decode()

    def fetches(self, result, mtlsd=None):
        """mtlsd_app_metrics_scrapes_total{result}, read on the admin port (never cached)."""
        _, _, body = http_get((mtlsd or self.mtlsd).admin_url("/metrics"))
        return prom_value(body.decode(),
                          f'mtlsd_app_metrics_scrapes_total{{result="{result}"}}')

    def serve(self, mode):
        """Switches the application to MODE and waits for a scrape that shows it."""
        with self.app.lock:
            self.app.mode = mode
        marker = f'app_mode{{mode="{mode}"}} 1'
        return wait_until(lambda: (lambda t: t if marker in t else None)(self.scrape()),
                          what=f"the application's metrics in {mode} mode")

    def fail_with(self, mode):
        """Switches the application to MODE, waits for a failed fetch, and returns the
        health port's answer after it."""
        before = self.fetches("failed")
        with self.app.lock:
            self.app.mode = mode
        wait_until(lambda: self.scrape() and self.fetches("failed") > before, timeout=20,
                   what=f"a failed fetch in {mode} mode")
        return self.scrape()

    def assert_own_only(self, text):
        self.assertIn("# TYPE mtlsd_app_metrics_scrapes_total counter", text)
        self.assertIn("# TYPE process_open_fds gauge", text)
        self.assertNotIn("app_", text.replace("mtlsd_app_", ""))

    def test_merged_after_mtlsds_own(self):
        text = self.serve("ok")
        own_end = text.index("# HELP go_goroutines")
        self.assertIn("mtlsd_app_metrics_scrapes_total", text[:own_end])
        self.assertIn('app_requests_total{code="200"} 1027\n', text[own_end:])
        # The application's process_* families clash with mtlsd's and are left out; its
        # other families are kept whole.
        self.assertEqual(text.count("# TYPE process_open_fds gauge"), 1)
        self.assertNotIn("process_open_fds 11", text)
        self.assertNotIn("1.2e+07", text)
        self.assertIn("go_goroutines 9\n", text)
        self.assertEqual(self.app.accept, "text/plain;version=0.0.4")
        wait_until(lambda: "left out, as mtlsd exports the same names (the first: "
                   "process_open_fds)" in self.mtlsd.stderr(), what="the log line")
        promtool = shutil.which("promtool")
        if promtool is None:
            self.fail("promtool is missing (tests/run.sh installs Debian's prometheus)")
        r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        # The admin port serves mtlsd's own only, the fetches' counter included.
        _, _, body = http_get(self.mtlsd.admin_url("/metrics"))
        self.assertNotIn("app_requests_total", body.decode())
        self.assertGreaterEqual(self.fetches("ok"), 1)

    def test_a_chunked_answer(self):
        text = self.serve("chunked")
        self.assertIn('app_requests_total{code="200"} 1027\n', text)

    def test_a_huge_answer_is_not_served(self):
        for mode in ("huge", "huge-chunked"):
            text = self.fail_with(mode)
            self.assert_own_only(text)
            self.assertLess(len(text), 1 << 20, mode)
        wait_until(lambda: "is over 2097152 bytes" in self.mtlsd.stderr(), what="the log line")

    def test_what_is_not_text_format_is_not_served(self):
        self.assert_own_only(self.fail_with("html"))
        self.serve("ok")
        self.assert_own_only(self.fail_with("error"))
        wait_until(lambda: "not served: HTTP 500" in self.mtlsd.stderr(), what="the log line")

    def test_a_hung_application_leaves_mtlsds_own(self):
        self.serve("ok")
        before = self.fetches("failed")
        with self.app.lock:
            self.app.mode = "hang"
        # The first scrape after the cached second starts the fetch and waits for it: no
        # longer than its 3 s.
        start = time.monotonic()
        text = wait_until(lambda: (lambda t: t if "app_mode" not in t else None)(self.scrape()),
                          what="a scrape without the hung application's metrics")
        self.assertLess(time.monotonic() - start, 6)
        self.assert_own_only(text)
        self.assertEqual(self.fetches("failed"), before + 1)
        wait_until(lambda: "not served: timed out after 3000 ms" in self.mtlsd.stderr(),
                   what="the log line")

    def test_a_flood_of_scrapes_is_one_fetch_at_a_time(self):
        self.serve("ok")
        with self.app.lock:
            self.app.delay = 0.5
            self.app.max_in_flight = 0
            before = self.app.requests
        # Twelve scrapers (under the port's sixteen per address), as fast as they can.
        deadline = time.monotonic() + 4
        start = time.monotonic()

        def scraper(_):
            served = 0
            while time.monotonic() < deadline:
                self.assertIn('app_requests_total{code="200"} 1027', self.scrape())
                served += 1
            return served

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            served = sum(pool.map(scraper, range(12)))
        elapsed = time.monotonic() - start
        fetched = self.app.requests - before
        sys.stderr.write(f"\n  {served} scrapes in {elapsed:.1f} s: {fetched} fetches\n")
        self.assertEqual(self.app.max_in_flight, 1)
        # A fetch takes 0.5 s and its answer is served for a second after it.
        self.assertLessEqual(fetched, elapsed / 1.5 + 1)
        self.assertGreater(served, 12 * fetched)

    def test_an_application_that_is_down(self):
        config = health_config(self.tmp)
        down = Mtlsd(self.tmp, config, name="down", env={
            "MTLSD_APP_METRICS": json.dumps({"port": free_port()}), "POD_IP": "127.0.0.1"})
        self.addCleanup(lambda: self.assertEqual(down.stop(), 0))
        down.wait_listening(admin=True)
        self.assert_own_only(self.scrape(down))
        self.assertEqual(self.fetches("failed", down), 1)
        self.assertEqual(self.fetches("ok", down), 0)
        wait_until(lambda: "the application's metrics (port " in down.stderr()
                   and "/metrics): not served: connect to 127.0.0.1:" in down.stderr(),
                   what="the log line")

    def test_a_bad_variable_is_a_start_up_error(self):
        cases = {
            '{"port": 0}': "MTLSD_APP_METRICS: port: 0: out of range (1 to 65535)",
            '{"port": 9090, "path": "metrics"}':
                "MTLSD_APP_METRICS: path: \"metrics\": the path must start with '/'",
            '{"port": 9090, "scheme": "https"}': "MTLSD_APP_METRICS: scheme: unknown key",
            '{"port": 9090,': "MTLSD_APP_METRICS: line 1, column 15: JSON syntax error",
        }
        path = os.path.join(self.tmp, "check.json")
        with open(path, "w") as f:
            json.dump(health_config(self.tmp), f)
        for value, want in cases.items():
            r = subprocess.run([MTLSD, "check", "--config", path], capture_output=True,
                               text=True, timeout=30, env={**os.environ, "MTLSD_APP_METRICS": value})
            self.assertEqual(r.returncode, 2, value)
            self.assertIn(want, r.stderr, value)
        # And without a health port, where it would be served.
        no_health = {k: v for k, v in health_config(self.tmp).items() if k != "health"}
        with open(path, "w") as f:
            json.dump(no_health, f)
        r = subprocess.run([MTLSD, "check", "--config", path], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "MTLSD_APP_METRICS": '{"port": 9090}'})
        self.assertEqual(r.returncode, 2)
        self.assertIn("MTLSD_APP_METRICS is set, but health.listen is not set", r.stderr)


class HealthFloodTest(unittest.TestCase):
    """The health port from the attacker's side: floods of every shape, from one address
    and from many, held and renewed as fast as one client can, while the kubelet probes
    from its own address."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = TempDir()
        cls.tmp = cls._tmp.__enter__()
        cls.app = App()
        cls.probes = {"ok/livez": http_probe("/ok", cls.app.port),
                      "slow/livez": http_probe("/slow", cls.app.port)}
        cls.config = health_config(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.app.close()
        cls._tmp.__exit__(None, None, None)

    def start(self, binary=None):
        m = Mtlsd(self.tmp, self.config, binary=binary,
                  env={"MTLSD_APP_PROBES": json.dumps(self.probes), "POD_IP": "127.0.0.1"})
        self.addCleanup(lambda: self.assertEqual(m.stop(), 0))
        return m.wait_listening(admin=True)

    def flood(self, shape, path, first, sources, per_source):
        port = int(self.config["health"]["listen"].rsplit(":", 1)[1])
        return Flood(port, shape, path, first, sources, per_source)

    def kubelet_probe(self, path):
        """A probe as the kubelet sends it: a new connection from the node's address (here
        127.0.0.1), one request, Connection: close, a one-second timeout."""
        host, port = self.config["health"]["listen"].rsplit(":", 1)
        start = time.monotonic()
        data = b""
        try:
            with socket.create_connection((host, int(port)), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n"
                          "User-Agent: kube-probe/1.31\r\nConnection: close\r\n\r\n".encode())
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError as e:
            return f"{e!r} after {data[:80]!r}".encode(), time.monotonic() - start
        return data.split(b" ", 2)[1] if b" " in data else data, time.monotonic() - start

    SHAPES = [("idle", "/healthz"), ("keepalive", "/healthz"), ("slowloris", "/healthz"),
              ("pipeline", "/metrics"), ("request", "/app-health/slow/livez")]
    LAYOUTS = [("one address", 2, 1, 200), ("50 addresses", 10, 50, 10)]

    def test_no_flood_fails_a_kubelet_probe(self):
        self.start()
        figures = []
        for shape, path in self.SHAPES:
            for layout, first, sources, per_source in self.LAYOUTS:
                with self.flood(shape, path, first, sources, per_source) as flood:
                    slowest = 0.0
                    for i in range(10):
                        for probe in ("/app-health/ok/livez", "/healthz"):
                            status, took = self.kubelet_probe(probe)
                            self.assertEqual(status, b"200", f"{probe} #{i} under a {shape} "
                                             f"flood from {layout}")
                            slowest = max(slowest, took)
                figures.append(f"{shape}/{layout}: 10/10, slowest {slowest * 1000:.0f} ms "
                               f"({flood.summary})")
        sys.stderr.write("\n  " + "\n  ".join(figures) + "\n")

    def test_memory_stays_bounded_under_a_flood(self):
        # Measured on the release build: the sanitizers' own memory is not the sidecar's.
        m = self.start(binary=RELEASE_BIN)
        base = rss_kib(m.pid)
        peak = base
        for shape, path in (("pipeline", "/metrics"), ("request", "/app-health/slow/livez"),
                            ("slowloris", "/healthz")):
            with self.flood(shape, path, 10, 50, 10):
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    peak = max(peak, rss_kib(m.pid))
                    time.sleep(0.05)
                self.assertEqual(self.kubelet_probe("/healthz")[0], b"200")
        sys.stderr.write(f"\n  RSS {base} KiB idle, {peak} KiB at most under the floods\n")
        self.assertLess(peak, 32 * 1024)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    unittest.main()
