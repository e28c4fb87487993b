"""The health port (SPEC section 5): its read-only routes, and the application probes it
runs the way the kubelet would (MTLSD_APP_PROBES), against real servers started here: an
HTTP app (200, 503, redirects, slow, headers), an HTTPS one, TCP ports open and closed, and
a gRPC server with the standard health service. Its own connection budget: a full admin
port never fails a probe, and a flood on the health port never blocks the admin port."""

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

from harness import RELEASE_BIN, Flood, Mtlsd, Pki, TempDir, free_port, http_get, wait_until

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
