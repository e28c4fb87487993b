"""`mtlsd webhook` (docs/injection.md): AdmissionReviews over HTTPS from Python's ssl (the
API server's part), the returned JSONPatch applied with Debian's python3-jsonpatch (an
independent RFC 6902 implementation, through /usr/bin/python3) and compared with what
`mtlsd inject` writes for the same pod; skips, refusals, bad requests, 11 MiB, slow and
idle clients, a certificate rotation while requests flow, 200 concurrent reviews, the
metrics, and the drain on SIGTERM."""

import base64
import concurrent.futures
import copy
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

from harness import (MTLSD, RELEASE_BIN, Flood, MemoryCgroup, Mtlsd, Pki, TempDir, free_port,
                     listening_ports, prom_value, run, wait_until)

DEBIAN_PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE_DNS = "mtlsd-webhook.mtlsd-system.svc"

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "web-7d9f-", "namespace": "shop",
                 "labels": {"app": "web"},
                 "annotations": {"example.com/owner": "team-a"}},
    "spec": {
        "serviceAccountName": "web",
        "initContainers": [{"name": "vault-init", "image": "vault:1"}],
        "containers": [{
            "name": "web", "image": "nginx:1.25",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                               "periodSeconds": 5},
            "livenessProbe": {"tcpSocket": {"port": 8080}},
            "env": [{"name": "MODE", "value": "0755"}],
        }, {
            "name": "log-shipper", "image": "fluent-bit:3",
        }],
        "volumes": [{"name": "cache", "emptyDir": {}}],
    },
}


def review(obj, uid="3c5b1d0e-0000-4000-8000-000000000001", namespace="shop",
           operation="CREATE"):
    """An AdmissionReview of a copy of OBJ (a test may change its review's object)."""
    obj = copy.deepcopy(obj)
    return {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": operation, "object": obj,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "dryRun": False,
        },
    }


def apply_patch(obj, patch):
    """OBJ with the RFC 6902 PATCH applied by python3-jsonpatch."""
    code = ("import json, sys, jsonpatch\n"
            "d = json.load(sys.stdin)\n"
            "print(json.dumps(jsonpatch.apply_patch(d['obj'], d['patch'])))\n")
    r = subprocess.run([DEBIAN_PYTHON, "-c", code], input=json.dumps({"obj": obj, "patch": patch}),
                       capture_output=True, text=True, timeout=30, check=True)
    return json.loads(r.stdout)


def inject_cli(obj, config_path=None):
    args = [MTLSD, "inject", "-o", "json"] + (["--config", config_path] if config_path else [])
    r = run(args, input=json.dumps(obj))
    return json.loads(r.stdout)


def start_webhook(tmp, certs, config=None):
    """A webhook serving 127.0.0.1:PORT with the certificates in CERTS, once it listens:
    (the process, PORT)."""
    port = free_port()
    wh = Mtlsd(tmp, config or {}, name="webhook", log_format="text",
               command=("webhook", "--listen", f"127.0.0.1:{port}", "--certs", certs))
    wait_until(lambda: port in listening_ports(wh.pid), timeout=15, what="the webhook listening")
    return wh, port


def https(port, path, method="GET", body=None):
    """(status, body) of one request on a connection of its own, not verifying."""
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                       context=ssl._create_unverified_context())
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


class WebhookCertsBase(unittest.TestCase):
    """A temporary directory and a serving certificate for the Service's name from a
    development CA."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = TempDir()
        cls.tmp = cls._tmp.__enter__()
        cls.pki = Pki(cls.tmp)
        cls.certs = cls.pki.issue("webhook", dns=[SERVICE_DNS])

    @classmethod
    def tearDownClass(cls):
        cls._tmp.__exit__(None, None, None)


class WebhookBase(WebhookCertsBase):
    """One webhook with a certificate from a development CA, serving 127.0.0.1."""

    injector_config = {"namespace": "mtlsd-system", "exclude_outbound_ports": [5432]}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.wh, cls.port = start_webhook(cls.tmp, cls.certs, cls.injector_config)

    @classmethod
    def tearDownClass(cls):
        try:
            cls.wh.stop(timeout=20)
        finally:
            super().tearDownClass()

    def context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.pki.ca_crt)
        ctx.check_hostname = True
        return ctx

    def connection(self, timeout=10):
        """An HTTPS connection that verifies the webhook's certificate for its Service
        name, as the API server does with the caBundle."""
        conn = http.client.HTTPSConnection(SERVICE_DNS, self.port, context=self.context(),
                                           timeout=timeout)
        conn.sock = self.context().wrap_socket(
            socket.create_connection(("127.0.0.1", self.port), timeout=timeout),
            server_hostname=SERVICE_DNS)
        return conn

    def request(self, method, path, body=None, conn=None, headers=None):
        own = conn is None
        conn = conn or self.connection()
        try:
            data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json", **(headers or {})})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            if own:
                conn.close()

    def post_review(self, obj, **kw):
        status, body = self.request("POST", "/inject", review(obj, **kw))
        self.assertEqual(status, 200, body)
        answer = json.loads(body)
        self.assertEqual(answer["apiVersion"], "admission.k8s.io/v1")
        self.assertEqual(answer["kind"], "AdmissionReview")
        return answer["response"]

    def metrics(self):
        status, body = self.request("GET", "/metrics")
        self.assertEqual(status, 200)
        return body.decode()


class WebhookTest(WebhookBase):

    def test_patch_gives_the_pod_that_inject_writes(self):
        response = self.post_review(POD)
        self.assertEqual(response["uid"], "3c5b1d0e-0000-4000-8000-000000000001")
        self.assertIs(response["allowed"], True)
        self.assertEqual(response["patchType"], "JSONPatch")
        patch = json.loads(base64.b64decode(response["patch"], validate=True))
        self.assertTrue(patch)
        self.assertEqual({op["op"] for op in patch}, {"add"})
        self.assertTrue(all(op["path"].startswith("/") for op in patch))
        # "mtlsd.io/status" is a member name with a slash: escaped as ~1 (RFC 6901).
        self.assertIn("/metadata/annotations/mtlsd.io~1status", [op["path"] for op in patch])
        patched = apply_patch(POD, patch)
        config = os.path.join(self.tmp, "webhook.json")
        self.assertEqual(patched, inject_cli(POD, config))
        # What others put in the pod is kept, in order.
        # The interception and the native sidecar come first, so that the other init
        # containers' traffic is meshed too.
        inits = [c["name"] for c in patched["spec"]["initContainers"]]
        self.assertEqual(inits, ["mtlsd-init", "mtlsd", "vault-init"])
        self.assertEqual(patched["metadata"]["annotations"]["example.com/owner"], "team-a")
        self.assertEqual([v["name"] for v in patched["spec"]["volumes"]][:1], ["cache"])

    def test_missing_parents_are_created_first(self):
        bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "bare-"},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
        response = self.post_review(bare, namespace="default")
        patch = json.loads(base64.b64decode(response["patch"]))
        paths = [op["path"] for op in patch]
        self.assertLess(paths.index("/metadata/annotations"),
                        paths.index("/metadata/annotations/mtlsd.io~1status"))
        self.assertIn("/spec/initContainers", paths)
        patched = apply_patch(bare, patch)
        expected = inject_cli({**bare, "metadata": {"generateName": "bare-",
                                                    "namespace": "default"}},
                              os.path.join(self.tmp, "webhook.json"))
        del expected["metadata"]["namespace"]
        self.assertEqual(patched, expected)

    def test_injected_pod_gets_no_patch_and_no_warning(self):
        patched = apply_patch(POD, json.loads(base64.b64decode(self.post_review(POD)["patch"])))
        response = self.post_review(patched)
        self.assertIs(response["allowed"], True)
        self.assertNotIn("patch", response)
        self.assertNotIn("patchType", response)
        self.assertNotIn("warnings", response)

    def test_skips_say_why(self):
        cases = [
            ({**POD, "spec": {**POD["spec"], "hostNetwork": True}}, "shop", "hostNetwork"),
            ({**POD, "metadata": {**POD["metadata"], "labels": {"mtlsd.io/inject": "disabled"}}},
             "shop", "disabled"),
            (POD, "kube-system", "kube-system"),
            (POD, "mtlsd-system", "mtlsd-system"),
        ]
        for obj, ns, why in cases:
            with self.subTest(why=why):
                response = self.post_review(obj, namespace=ns)
                self.assertIs(response["allowed"], True)
                self.assertNotIn("patch", response)
                self.assertEqual(len(response["warnings"]), 1)
                self.assertIn("not injected", response["warnings"][0])
                self.assertIn(why, response["warnings"][0])

    def test_other_operations_pass(self):
        response = self.post_review(POD, operation="UPDATE")
        self.assertIs(response["allowed"], True)
        self.assertNotIn("patch", response)

    def test_refusals_are_not_allowed_with_the_reason(self):
        as_proxy = json.loads(json.dumps(POD))
        as_proxy["spec"]["containers"][0]["securityContext"] = {"runAsUser": 1337}
        bad_annotation = json.loads(json.dumps(POD))
        bad_annotation["metadata"]["annotations"]["mtlsd.io/proxy-cpu-limit"] = "lots"
        for obj, words in [(as_proxy, ["1337", "web"]),
                           (bad_annotation, ["mtlsd.io/proxy-cpu-limit", "lots"])]:
            with self.subTest(words=words):
                response = self.post_review(obj)
                self.assertIs(response["allowed"], False)
                self.assertNotIn("patch", response)
                status = response["status"]
                self.assertEqual(status["code"], 400)
                for w in words:
                    self.assertIn(w, status["message"])

    def test_bad_requests_get_clear_errors(self):
        cases = [
            ("POST", "/inject", b"{not json", 400, "not JSON"),
            ("POST", "/inject", json.dumps({**review(POD), "apiVersion": "admission.k8s.io/v1beta1"}
                                           ).encode(), 400, "admission.k8s.io/v1beta1"),
            ("POST", "/inject", json.dumps({"apiVersion": "admission.k8s.io/v1",
                                            "kind": "AdmissionReview"}).encode(), 400,
             "request"),
            ("POST", "/inject", json.dumps({**review(POD), "request": {
                **review(POD)["request"], "uid": ""}}).encode(), 400, "request.uid"),
            ("GET", "/inject", None, 405, "method not allowed"),
            ("POST", "/healthz", b"", 405, "method not allowed"),
            ("GET", "/config", None, 404, "not found"),
        ]
        for method, path, body, status, words in cases:
            with self.subTest(path=path, status=status, words=words):
                got, text = self.request(method, path, body)
                self.assertEqual(got, status, text)
                self.assertIn(words, text.decode())
        # The webhook goes on.
        self.assertEqual(self.request("GET", "/healthz"), (200, b"ok\n"))

    def test_bodies_over_10_mib_get_413(self):
        conn = self.connection(timeout=30)
        big = b'{"pad":"' + b"x" * (11 << 20) + b'"}'
        try:
            conn.putrequest("POST", "/inject")
            conn.putheader("Content-Length", str(len(big)))
            conn.endheaders()
            try:
                conn.send(big)
            except OSError:
                pass  # Refused before the body: the answer is already there.
            r = conn.getresponse()
            self.assertEqual(r.status, 413)
            self.assertIn(b"too large", r.read())
        finally:
            conn.close()
        # A review just under the limit is still read whole.
        padded = review(POD)
        padded["request"]["object"]["metadata"]["annotations"]["example.com/pad"] = (
            "y" * (9 << 20))
        status, body = self.request("POST", "/inject", padded)
        self.assertEqual(status, 200)
        self.assertIn("patch", json.loads(body)["response"])

    def test_large_bodies_in_flight_are_bounded(self):
        # Eight clients send 9 MiB of a 10 MiB body each and hold it: together they would
        # take 72 MiB (more, as bodies grow), past the 16 MiB all bodies may hold at once.
        def hold(_):
            conn = self.connection(timeout=30)
            conn.putrequest("POST", "/inject")
            conn.putheader("Content-Length", str(10 << 20))
            conn.endheaders()
            try:
                conn.send(b"x" * (9 << 20))
            except OSError:
                pass  # Refused while sending: the answer is there already.
            return conn

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            held = list(pool.map(hold, range(8)))
        try:
            answers = []
            for conn in held:
                conn.sock.settimeout(1)
                try:
                    answers.append(conn.sock.recv(4096))
                except (socket.timeout, ssl.SSLError, OSError):
                    answers.append(b"")
            refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
            self.assertTrue(refused, answers)
            self.assertIn(b"too many request bodies in flight", refused[0])
            # The others still wait for the rest of their bodies, and a review of the
            # usual size is answered meanwhile.
            self.assertLess(len(refused), 8)
            self.assertIn("patch", self.post_review(POD))
        finally:
            for conn in held:
                conn.close()

    def test_plain_http_is_told_to_use_https(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 400 "), data)
        self.assertIn(b"HTTPS", data)

    def test_slow_and_idle_clients_are_cut_off_and_block_nobody(self):
        t0 = time.monotonic()
        idle = socket.create_connection(("127.0.0.1", self.port), timeout=15)
        slow = self.context().wrap_socket(
            socket.create_connection(("127.0.0.1", self.port), timeout=15),
            server_hostname=SERVICE_DNS)
        head = b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
        closed_after = None
        try:
            for i in range(40):
                # Everyone else is served at once meanwhile.
                if i % 4 == 0:
                    self.assertEqual(self.request("GET", "/healthz")[0], 200)
                try:
                    slow.sendall(head[i:i + 1] if i < len(head) else b"x")
                    slow.settimeout(0.25)
                    data = slow.recv(4096)
                    if data == b"" or data.startswith(b"HTTP/1.1 408"):
                        closed_after = time.monotonic() - t0
                        break
                except socket.timeout:
                    continue
                except (ssl.SSLError, OSError):
                    closed_after = time.monotonic() - t0
                    break
            self.assertIsNotNone(closed_after, "a slowloris client was never cut off")
            self.assertLess(closed_after, 8)
            idle.settimeout(8)
            self.assertEqual(idle.recv(1), b"", "an idle client is closed")
            self.assertLess(time.monotonic() - t0, 9)
        finally:
            idle.close()
            slow.close()

    def test_200_concurrent_reviews(self):
        barrier = threading.Barrier(200, timeout=30)

        def one(i):
            conn = self.connection(timeout=30)
            try:
                barrier.wait()
                uid = f"00000000-0000-4000-8000-{i:012d}"
                status, body = self.request("POST", "/inject", review(POD, uid=uid), conn=conn)
                return status, json.loads(body)["response"]["uid"] == uid
            finally:
                conn.close()

        with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
            results = list(pool.map(one, range(200)))
        self.assertEqual(results, [(200, True)] * 200)

    def test_large_answers_arrive_whole(self):
        # A pod with many probed containers: its patch (the probes moved into
        # MTLSD_APP_PROBES) makes an answer larger than the TLS layer's gathering buffer
        # and the socket's send buffer. Each arrives whole, on a client that reads slowly.
        pod = copy.deepcopy(POD)
        pod["spec"]["containers"] = [
            {"name": f"c{i}", "image": "app:1", "ports": [{"containerPort": 9000 + i}],
             "readinessProbe": {"httpGet": {"path": "/ready/" + "x" * 900, "port": 9000 + i}},
             "livenessProbe": {"httpGet": {"path": "/live/" + "y" * 900, "port": 9000 + i}}}
            for i in range(60)]
        for i in range(20):
            conn = self.connection()
            try:
                body = json.dumps(review(pod, uid=f"00000000-0000-4000-8000-{i:012d}")).encode()
                conn.request("POST", "/inject", body=body,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                data = b""
                while True:
                    chunk = r.read(4096)
                    if not chunk:
                        break
                    data += chunk
                    time.sleep(0.001)
                self.assertEqual(r.status, 200)
                self.assertEqual(len(data), int(r.getheader("Content-Length")))
                answer = json.loads(data)["response"]
                self.assertGreater(len(answer["patch"]), 100 * 1024)
            finally:
                conn.close()

    def test_no_flood_holds_the_port(self):
        # Connections held and renewed as fast as one client can, from one address and
        # from many, more than the port has: the API server's reviews (each on a new
        # connection, as after an idle keep-alive was closed) are all answered.
        figures = []
        for shape in ("idle", "keepalive", "slowloris"):
            for layout, first, sources, per_source in (("one address", 2, 1, 600),
                                                       ("50 addresses", 10, 50, 12)):
                with Flood(self.port, shape, "/healthz", first, sources, per_source,
                           tls=True) as flood:
                    slowest = 0.0
                    for i in range(10):
                        start = time.monotonic()
                        uid = f"00000000-0000-4000-8000-{i:012d}"
                        try:
                            response = self.post_review(POD, uid=uid)
                        except (OSError, http.client.HTTPException) as e:
                            self.fail(f"review {i} under a {shape} flood from {layout}: {e!r}")
                        slowest = max(slowest, time.monotonic() - start)
                        self.assertEqual(response["uid"], uid)
                    self.assertLess(slowest, 5, f"{shape} from {layout}")
                figures.append(f"{shape}/{layout}: 10/10, slowest {slowest * 1000:.0f} ms "
                               f"({flood.summary})")
        sys.stderr.write("\n  " + "\n  ".join(figures) + "\n")

    def test_keep_alive_and_metrics(self):
        before = self.metrics()
        injected = prom_value(before, 'mtlsd_injections_total{result="injected"}')
        failed = prom_value(before, 'mtlsd_injections_total{result="failed"}')
        count = prom_value(before, "mtlsd_webhook_request_duration_seconds_count")
        conn = self.connection()
        try:
            for _ in range(3):
                status, _ = self.request("POST", "/inject", review(POD), conn=conn)
                self.assertEqual(status, 200)
            self.request("POST", "/inject", b"[]", conn=conn)
        finally:
            conn.close()
        after = self.metrics()
        self.assertEqual(prom_value(after, 'mtlsd_injections_total{result="injected"}'),
                         injected + 3)
        self.assertEqual(prom_value(after, 'mtlsd_injections_total{result="failed"}'), failed + 1)
        self.assertEqual(prom_value(after, "mtlsd_webhook_request_duration_seconds_count"),
                         count + 4)
        self.assertEqual(prom_value(after, "mtlsd_cert_generation"), 1)
        self.assertGreater(prom_value(after, "mtlsd_cert_expiry_timestamp_seconds"), time.time())
        self.assertNotIn("mtlsd_connections_total", after)
        promtool = shutil.which("promtool")
        if promtool:
            r = subprocess.run([promtool, "check", "metrics"], input=after, capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(self.request("GET", "/ready"), (200, b"ready\n"))


class WebhookCertTest(WebhookBase):
    """The serving certificate rotates under load; a bad set is refused while the good one
    serves; no certificate means no connection (never plain HTTP) and /ready says why."""

    def fingerprint(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            with self.context().wrap_socket(raw, server_hostname=SERVICE_DNS) as s:
                return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()

    def test_rotation_while_requests_flow(self):
        first = self.fingerprint()
        stop = threading.Event()
        errors, done = [], [0]

        def flow():
            conn = None
            while not stop.is_set() and done[0] < 5000:
                try:
                    if conn is None or done[0] % 10 == 0:
                        if conn is not None:
                            conn.close()
                        conn = self.connection()
                    status, _ = self.request("POST", "/inject", review(POD), conn=conn)
                    if status != 200:
                        errors.append(status)
                    done[0] += 1
                except Exception as e:  # noqa: BLE001 - every failure is a finding
                    errors.append(repr(e))
                    conn = None
            if conn is not None:
                conn.close()

        threads = [threading.Thread(target=flow) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            # A bad set (a key that does not match) is refused; the good one serves on.
            staging = self.pki.issue("webhook-next", dns=[SERVICE_DNS])
            shutil.copy(os.path.join(staging, "tls.key"), os.path.join(self.tmp, "other.key"))
            other = self.pki.issue("webhook-other", dns=[SERVICE_DNS])
            tmp_key = os.path.join(self.certs, "tls.key.tmp")
            shutil.copy(os.path.join(other, "tls.key"), tmp_key)
            os.rename(tmp_key, os.path.join(self.certs, "tls.key"))
            wait_until(lambda: prom_value(self.metrics(),
                                           'mtlsd_cert_reloads_total{result="failed"}') >= 1,
                       timeout=15, what="the bad set refused")
            self.assertEqual(self.fingerprint(), first)
            # The good next set: written like a Secret volume update (files renamed in).
            for name in ("tls.crt", "tls.key"):
                shutil.copy(os.path.join(staging, name), os.path.join(self.certs, name + ".new"))
            for name in ("tls.key", "tls.crt"):
                os.rename(os.path.join(self.certs, name + ".new"), os.path.join(self.certs, name))
            wait_until(lambda: self.fingerprint() != first, timeout=15,
                       what="the new certificate served")
            served = done[0]
            wait_until(lambda: done[0] > served + 20, timeout=15, what="requests after rotation")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        self.assertEqual(errors, [])
        self.assertGreater(done[0], 50)
        self.assertEqual(prom_value(self.metrics(), "mtlsd_cert_generation"), 2)


class WebhookLifecycleTest(unittest.TestCase):

    def test_no_certificate_no_service_then_ready_once_written(self):
        with TempDir() as tmp:
            pki = Pki(tmp)
            certs = os.path.join(tmp, "certs")
            wh, port = start_webhook(tmp, certs)
            try:
                ctx = ssl.create_default_context(cafile=pki.ca_crt)
                with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                        with ctx.wrap_socket(raw, server_hostname=SERVICE_DNS) as s:
                            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n")
                            if not s.recv(100):
                                raise ConnectionError("closed")
                self.assertIn("not ready", wh.stderr())
                shutil.copytree(pki.issue("issued", dns=[SERVICE_DNS]), certs)

                def ready():
                    try:
                        return https(port, "/ready")[0] == 200
                    except OSError:
                        return False

                wait_until(ready, timeout=20, what="ready once the certificate is written")
            finally:
                wh.stop(timeout=20)

    def test_sigterm_keeps_answering_then_exits(self):
        with TempDir() as tmp:
            wh, port = start_webhook(tmp, Pki(tmp).issue("webhook", dns=[SERVICE_DNS]))
            try:
                self.assertEqual(https(port, "/ready")[0], 200)
                t0 = time.monotonic()
                wh.send_signal(signal.SIGTERM)
                wait_until(lambda: https(port, "/ready")[0] == 503, timeout=5, what="/ready 503")
                status, body = https(port, "/inject", "POST", json.dumps(review(POD)))
                self.assertEqual(status, 200)
                self.assertIn("patch", json.loads(body)["response"])
                wh.proc.wait(timeout=20)
                self.assertGreater(time.monotonic() - t0, 4)
                self.assertEqual(wh.stop(), 0)
                self.assertIn("drained; exiting", wh.stderr())
            finally:
                wh.stop(timeout=20)

    def test_bad_options_and_configuration(self):
        with TempDir() as tmp:
            bad = os.path.join(tmp, "bad.json")
            with open(bad, "w") as f:
                json.dump({"image": "x", "native_sidecar": "yes"}, f)
            cases = [
                (["webhook"], "--listen ADDR and --certs DIR are required"),
                (["webhook", "--listen", "127.0.0.1:99999", "--certs", tmp], "--listen"),
                (["webhook", "--listen", "127.0.0.1:1", "--certs", tmp, "--config", bad],
                 "native_sidecar"),
                (["run", "--listen", "127.0.0.1:1"], "--listen is an option of mtlsd webhook"),
            ]
            for args, words in cases:
                with self.subTest(args=args):
                    r = run([MTLSD, *args], check=False)
                    self.assertEqual(r.returncode, 2, r.stderr)
                    self.assertIn(words, r.stderr)


def dense_review(containers, env_per_container):
    """An AdmissionReview whose pod has many small values: the shape that costs the most
    memory per byte once parsed."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "shop"},
           "spec": {"containers": [
               {"name": f"c{i}", "image": "registry.example.com/team/app:1.0.0",
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                "env": [{"name": f"E{j}", "value": "v"} for j in range(env_per_container)]}
               for i in range(containers)]}}
    return json.dumps(review(pod)).encode()


class WebhookMemoryTest(WebhookCertsBase):
    """The injector's memory and time per review are bounded: a 3 MiB review is refused
    or answered within 64 MiB and 100 ms, and the release build survives every body it
    accepts, together, within the memory limit the chart gives it (a real memory
    cgroup)."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        with open(os.path.join(HERE, "..", "..", "helm", "mtlsd", "values.yaml")) as f:
            values = f.read()
        cls.chart_limit_mib = int(re.search(r"limits: \{memory: (\d+)Mi\}", values).group(1))

    def start(self):
        port = free_port()
        wh = Mtlsd(self.tmp, {}, name="webhook-mem", log_format="text", binary=RELEASE_BIN,
                   command=("webhook", "--listen", f"127.0.0.1:{port}", "--certs", self.certs))
        self.addCleanup(wh.stop, timeout=20)
        wait_until(lambda: port in listening_ports(wh.pid), timeout=15, what="the webhook")
        return wh, port

    def post(self, port, body, timeout=30):
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout,
                                           context=ssl._create_unverified_context())
        try:
            conn.request("POST", "/inject", body=body,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def server_seconds(self, port):
        status, body = https(port, "/metrics")
        text = body.decode()
        return (prom_value(text, "mtlsd_webhook_request_duration_seconds_sum"),
                prom_value(text, "mtlsd_webhook_request_duration_seconds_count"))

    def test_a_3_mib_review_is_refused_within_64_mib_and_100_ms(self):
        wh, port = self.start()
        for containers, env in ((12000, 8), (100, 320)):
            body = dense_review(containers, env)
            before = self.server_seconds(port)
            status, answer = self.post(port, body)
            after = self.server_seconds(port)
            took = after[0] - before[0] - 0.0  # The review alone: the metrics GETs are apart.
            hwm = int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{wh.pid}/status").read())
                      .group(1))
            sys.stderr.write(f"\n  {len(body) / 1048576:.2f} MiB review of {containers} "
                             f"containers: HTTP {status} in {took * 1000:.0f} ms (server side, "
                             f"receiving included), peak RSS {hwm / 1024:.1f} MiB\n")
            self.assertLess(hwm, 64 * 1024)
            # The 100 ms figure is the benchmark's (bench/webhook.py, a quiet machine); a
            # test's bound must hold on a loaded one too, and includes receiving the body.
            self.assertLess(took, 1.0)
            if containers > 100:
                self.assertEqual(status, 400)
                self.assertIn(b"more JSON values than", answer)
            else:
                self.assertEqual(status, 200)

    def test_every_body_it_accepts_fits_the_charts_memory_limit(self):
        limit = self.chart_limit_mib << 20
        cgroup = MemoryCgroup(limit)
        self.addCleanup(cgroup.remove)
        wh, port = self.start()
        cgroup.add(wh.pid)
        big = json.dumps(review({"apiVersion": "v1", "kind": "Pod",
                                 "metadata": {"name": "x", "namespace": "shop"},
                                 "spec": {"containers": [
                                     {"name": f"c{i}", "image": "a:1",
                                      "env": [{"name": "B", "value": "x" * 100000}]}
                                     for i in range(95)]}})).encode()
        dense = dense_review(100, 320)
        held = []
        try:
            # Slow clients hold the uncharged first 64 KiB of a body on most connections...
            for _ in range(250):
                s = ssl._create_unverified_context().wrap_socket(
                    socket.create_connection(("127.0.0.1", port), timeout=10))
                s.sendall(b"POST /inject HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n"
                          b"\r\n" + b"x" * 60000)
                held.append(s)
            # ...while the largest bodies it takes and the densest reviews come at once.
            def one(i):
                try:
                    return self.post(port, big if i % 2 else dense)[0]
                except (OSError, http.client.HTTPException):
                    # A 503 for the body budget comes while the client still sends: the
                    # close that follows it may reach the client first, as a reset.
                    return "reset"

            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                results = list(pool.map(one, range(24)))
            self.assertTrue(all(code in (200, 503, "reset") for code in results), results)
            self.assertIn(200, results)
        finally:
            for s in held:
                s.close()
        self.assertIsNone(wh.proc.poll(), "the webhook died")
        self.assertEqual(cgroup.oom_kills(), 0)
        self.assertEqual(self.post(port, json.dumps(review(POD)).encode())[0], 200)
        sys.stderr.write(f"\n  peak {cgroup.peak() / 1048576:.1f} MiB of the chart's "
                         f"{self.chart_limit_mib} MiB; answers {sorted(map(str, results))}\n")


if __name__ == "__main__":
    unittest.main()
