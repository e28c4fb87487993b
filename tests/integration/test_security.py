"""The attacks of the security review (issue "close the holes a review found"), each
reproduced against the real binary with real certificates: identity policy (SPIFFE versus
DNS, wildcards, X.509-SVID rules), hostile SAN bytes and what reaches the logs, hostile
files in the certificate directory, the drain race with two workers, a flood of idle
handshakes, and resumed sessions that must not outlive their chain. The identity-borrowing
case through transparent interception is in test_pods.py, which has the network
namespaces it needs."""

import json
import os
import signal
import socket
import ssl
import struct
import sys
import time
import unittest

from harness import (Backend, Flood, Mtlsd, Pki, TempDir, client_context, free_port, http_get,
                     recv_all, run, spiffe, tls_echo, wait_until)

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def der_len(n):
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82, n >> 8, n & 0xFF])


def san_der(*names):
    """The DER of a subjectAltName holding NAMES, (kind, bytes) with kind "dns" or "uri":
    raw bytes, so that a test can put in what the openssl CLI would refuse to."""
    body = b""
    for kind, value in names:
        tag = {"dns": 0x82, "uri": 0x86}[kind]
        body += bytes([tag]) + der_len(len(value)) + value
    return b"\x30" + der_len(len(body)) + body


def header_handler(backend, conn):
    """Records every byte an app receives (a PROXY header first, say), and echoes what
    follows the header."""
    conn.settimeout(10)
    pending = b""
    header_done = False
    while True:
        data = conn.recv(65536)
        if not data:
            return
        with backend.lock:
            backend.received += data
        if header_done:
            conn.sendall(data)
            continue
        pending += data
        if len(pending) < 16 and PROXY_V2_SIGNATURE.startswith(pending[:12]):
            continue
        if pending.startswith(PROXY_V2_SIGNATURE):
            need = 16 + struct.unpack("!H", pending[14:16])[0]
            if len(pending) < need:
                continue
            pending = pending[need:]
        header_done = True
        if pending:
            conn.sendall(pending)


def read_text(path):
    with open(path, errors="replace") as f:
        return f.read()


def parse_proxy_v2(data):
    """(TLV 0xE0 value, rest) of a PROXY protocol v2 header at the start of DATA."""
    assert data.startswith(PROXY_V2_SIGNATURE), data[:16]
    length = struct.unpack("!H", data[14:16])[0]
    payload, rest = data[16:16 + length], data[16 + length:]
    family = data[13]
    pos = {0x11: 12, 0x21: 36, 0x00: 0}[family]
    tlvs = {}
    while pos < len(payload):
        kind, n = payload[pos], struct.unpack("!H", payload[pos + 1:pos + 3])[0]
        tlvs[kind] = payload[pos + 3:pos + 3 + n]
        pos += 3 + n
    return tlvs.get(0xE0), rest


class SecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = TempDir()
        cls.tmp = cls._tmp.__enter__()
        cls.pki = Pki(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.__exit__(None, None, None)

    def setUp(self):
        self.procs = []
        self.backends = []

    def tearDown(self):
        for b in self.backends:
            b.close()
        errors = []
        for m in self.procs:
            try:
                code = m.stop()
                if code != 0:
                    errors.append(f"{m.name} exited {code}:\n{m.stderr()[-3000:]}")
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            self.fail("\n".join(errors))

    # ---- helpers ----

    def backend(self, handler=None):
        b = Backend(handler)
        self.backends.append(b)
        return b

    def start(self, cfg, name="mtlsd", **kw):
        m = Mtlsd(self.tmp, cfg, name=name, **kw).wait_listening()
        self.procs.append(m)
        return m

    def inbound(self, allow=None, cert_dir=None, extra_listener=None, extra=None, name="inbound",
                **kw):
        b = self.backend(header_handler)
        port = free_port()
        listener = {"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{port}",
                    "forward": f"127.0.0.1:{b.port}"}
        if allow is not None:
            listener["allow"] = allow
        listener.update(extra_listener or {})
        cfg = {"workers": 1, "certs": {"dir": cert_dir or self.pki.issue("pod-b", spiffe("b"))},
               "admin": {"listen": f"127.0.0.1:{free_port()}"}, "listeners": [listener]}
        cfg.update(extra or {})
        return self.start(cfg, name=name, **kw), port, b

    def openssl_leaf(self, name, ext_lines):
        """A leaf signed by the test CA with exactly the extensions EXT_LINES (openssl
        x509v3_config lines), in a directory of the layout mtlsd reads."""
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        key, csr, crt = (os.path.join(d, n) for n in ("tls.key", "req.csr", "tls.crt"))
        ext = os.path.join(d, "ext.cnf")
        with open(ext, "w") as f:
            f.write("\n".join(ext_lines) + "\n")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", csr, "-subj", f"/O=test/CN={name}"])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.pki.ca_crt, "-CAkey",
             os.path.join(self.pki.ca_dir, "ca.key"), "-CAcreateserial", "-days", "1",
             "-extfile", ext, "-out", crt])
        run(["cp", self.pki.ca_crt, os.path.join(d, "ca.crt")])
        return d

    def raw_san_leaf(self, name, *names, extra=("basicConstraints=CA:FALSE",)):
        hexed = ":".join(f"{b:02X}" for b in san_der(*names))
        return self.openssl_leaf(name, [f"subjectAltName=DER:{hexed}",
                                        "extendedKeyUsage=clientAuth,serverAuth", *extra])

    def attempt(self, port, ctx, payload=b"secret"):
        """Connects, sends PAYLOAD and reads the echo: what came back, or the error."""
        try:
            return tls_echo(port, ctx, payload)
        except (ssl.SSLError, OSError) as e:
            return e

    def open_echoed(self, port, ctx, count):
        """COUNT established mTLS connections, each with one echoed round trip."""
        conns = []
        for i in range(count):
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10))
            conns.append(s)
            s.sendall(b"%04d" % i)
            self.assertEqual(s.recv(4), b"%04d" % i)
        return conns

    def assert_refused(self, m, port, backend, cert_dir, reason):
        self.assertNotEqual(self.attempt(port, client_context(cert_dir)), b"secret")
        e = m.wait_access(lambda e: e["result"] == reason, what=f"result {reason}")
        time.sleep(0.1)
        self.assertEqual(backend.accepted, 0, "nothing may reach the app")
        return e

    # ---- finding 2: a SPIFFE ID is that ID; the identity passed on is the one that matched ----

    def test_dns_entry_does_not_admit_another_spiffe_id(self):
        m, port, b = self.inbound(allow=["spiffe://cluster.local/ns/a/*", "api.example.com"],
                                  extra_listener={"proxy_protocol": True})
        evil = self.pki.issue("pod-evil", "spiffe://cluster.local/ns/evil/sa/e",
                              dns=["api.example.com"])
        e = self.assert_refused(m, port, b, evil, "identity_denied")
        self.assertEqual(e["identity"], "spiffe://cluster.local/ns/evil/sa/e")

    def test_the_identity_passed_on_is_the_one_that_matched(self):
        m, port, b = self.inbound(allow=["api.example.com"],
                                  extra_listener={"proxy_protocol": True})
        dns_only = self.pki.issue("pod-api", dns=["other.example.org", "api.example.com"])
        self.assertEqual(self.attempt(port, client_context(dns_only)), b"secret")
        wait_until(lambda: bytes(b.received).endswith(b"secret"), what="the PROXY header")
        tlv, rest = parse_proxy_v2(bytes(b.received))
        self.assertEqual(tlv, b"api.example.com")
        self.assertEqual(rest, b"secret")
        e = m.wait_access(lambda e: e["result"] == "ok")
        self.assertEqual(e["identity"], "api.example.com")

    # ---- finding 3: wildcards only in a server's certificate, two labels after '*' ----

    def test_a_wildcard_client_certificate_satisfies_no_allow_entry(self):
        m, port, b = self.inbound(allow=["api.example.com", "*.example.com"])
        wild = self.pki.issue("pod-wild", dns=["*.example.com"])
        self.assert_refused(m, port, b, wild, "identity_denied")

    def outbound_to(self, in_port, server_identity, name):
        port = free_port()
        cfg = {"workers": 1, "certs": {"dir": self.pki.issue("pod-a", spiffe("a"))},
               "admin": {"listen": f"127.0.0.1:{free_port()}"},
               "listeners": [{"name": "out", "mode": "outbound", "listen": f"127.0.0.1:{port}",
                              "upstream": f"127.0.0.1:{in_port}",
                              "server_identity": server_identity}]}
        return self.start(cfg, name=name), port

    def test_server_wildcards_cover_one_label_under_two(self):
        for san, server_identity, ok in (("*.example.com", "api.example.com", True),
                                         ("*.com", "example.com", False)):
            with self.subTest(san=san):
                server_dir = self.pki.issue(f"pod-server-{len(san)}", dns=[san])
                inb, in_port, b = self.inbound(cert_dir=server_dir, name=f"in-{len(san)}")
                out, port = self.outbound_to(in_port, server_identity, f"out-{len(san)}")
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(b"ping")
                    s.settimeout(10)
                    try:
                        got = recv_all(s, limit=4, timeout=10)
                    except ConnectionResetError:
                        got = b""
                if ok:
                    self.assertEqual(got, b"ping")
                    e = out.wait_access(lambda e: e["result"] == "ok")
                    self.assertEqual(e["identity"], san)
                else:
                    self.assertEqual(got, b"")
                    out.wait_access(lambda e: e["result"] == "identity_denied")
                    self.assertEqual(b.accepted, 0)

    # ---- finding 7: the X.509-SVID rules ----

    def test_x509_svid_rules_are_enforced_on_peers(self):
        m, port, b = self.inbound()
        svid = "URI:" + spiffe("a")
        cases = {
            "ca-true": [f"subjectAltName={svid}", "basicConstraints=critical,CA:TRUE",
                        "extendedKeyUsage=clientAuth"],
            "key-cert-sign": [f"subjectAltName={svid}", "basicConstraints=CA:FALSE",
                              "keyUsage=digitalSignature,keyCertSign",
                              "extendedKeyUsage=clientAuth"],
            "two-uris": [f"subjectAltName={svid},URI:https://example.com/a",
                         "basicConstraints=CA:FALSE", "extendedKeyUsage=clientAuth"],
        }
        dirs = {name: self.openssl_leaf(f"svid-{name}", ext) for name, ext in cases.items()}
        dirs["nul-in-uri"] = self.raw_san_leaf(
            "svid-nul", ("uri", spiffe("a").encode() + b"\x00.evil"))
        for name, d in dirs.items():
            with self.subTest(case=name):
                before = len([e for e in m.access_log() if e["result"] == "untrusted"])
                self.assertNotEqual(self.attempt(port, client_context(d)), b"secret")
                wait_until(lambda: len([e for e in m.access_log()
                                        if e["result"] == "untrusted"]) > before,
                           what=f"{name} refused as untrusted")
        self.assertEqual(b.accepted, 0)
        # The same rules refuse such a certificate as a sidecar's own set, naming the rule.
        cfg_path = os.path.join(self.tmp, "own-ca-leaf.json")
        with open(cfg_path, "w") as f:
            json.dump({"certs": {"dir": dirs["ca-true"]}, "listeners": [
                {"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{free_port()}",
                 "forward": "127.0.0.1:1"}]}, f)
        r = run([os.environ.get("MTLSD_BIN", "mtlsd"), "check", "--config", cfg_path],
                check=False)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("the leaf is a CA certificate", r.stdout + r.stderr)

    # ---- finding 9: SAN bytes never reach a log line or a TLV unvalidated ----

    def test_control_characters_in_a_san_are_refused_and_never_logged(self):
        forged = b"a.example.com\r\n2026-01-01T00:00:00.000Z info  proxy: FORGED"
        for fmt in ("json", "text"):
            with self.subTest(log_format=fmt):
                m, port, b = self.inbound(allow=["a.example.com"], name=f"in-{fmt}",
                                          log_format=fmt)
                d = self.raw_san_leaf(f"crlf-{fmt}", ("dns", forged))
                self.assertNotEqual(self.attempt(port, client_context(d)), b"secret")
                wait_until(lambda: "untrusted" in read_text(m.stdout_path),
                           what="the refusal in the access log")
                for path in (m.stdout_path, m.stderr_path):
                    with open(path, "rb") as f:
                        text = f.read()
                    self.assertNotIn(b"\nFORGED", text)
                    self.assertNotIn(b"proxy: FORGED", text)
                    for line in text.splitlines():
                        self.assertNotIn(b"\r", line)
                        if fmt == "json" and line.startswith(b"{"):
                            json.loads(line)
                self.assertEqual(b.accepted, 0)

    def test_a_2048_byte_identity_reaches_the_access_log_and_tlv_whole(self):
        long_id = spiffe("a") + "/" + "x" * (2048 - len(spiffe("a")) - 1)
        self.assertEqual(len(long_id), 2048)
        d = self.pki.issue("pod-long", long_id)
        for fmt in ("json", "text"):
            with self.subTest(log_format=fmt):
                m, port, b = self.inbound(name=f"long-{fmt}", log_format=fmt,
                                          extra_listener={"proxy_protocol": True})
                self.assertEqual(self.attempt(port, client_context(d)), b"secret")
                wait_until(lambda: "result" in read_text(m.stdout_path), what="access log")
                with open(m.stdout_path) as f:
                    line = [l for l in f if "result" in l][0]
                if fmt == "json":
                    e = json.loads(line)
                    self.assertEqual(e["identity"], long_id)
                    self.assertEqual(e["result"], "ok")
                    self.assertEqual(e["bytes_from_downstream"], 6)
                else:
                    self.assertIn(f"identity={long_id} ", line)
                    self.assertIn("bytes_from_downstream=6 ", line)
                    self.assertTrue(line.rstrip("\n").endswith("result=ok"), line[-200:])
                tlv, rest = parse_proxy_v2(bytes(b.received))
                self.assertEqual(tlv, long_id.encode())

    # ---- finding 4: hostile files in the certificate directory ----

    def test_hostile_files_never_stall_the_admin_port(self):
        cert_dir = self.pki.issue("pod-hostile", spiffe("b"))
        m, port, b = self.inbound(cert_dir=cert_dir, extra={"certs": {
            "dir": cert_dir, "poll_interval": "100ms"}})
        a_dir = self.pki.issue("pod-a", spiffe("a"))
        self.assertEqual(self.attempt(port, client_context(a_dir)), b"secret")
        url = m.admin_url("/healthz")

        def hostile(path, kind):
            os.rename(path, path + ".good")
            if kind == "fifo":
                os.mkfifo(path)
            elif kind == "directory":
                os.mkdir(path)
            elif kind == "device":
                os.symlink("/dev/zero", path)
            else:
                with open(path, "wb") as f:
                    f.truncate(50 << 20)

        def restore(path):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.unlink(path)
            os.rename(path + ".good", path)

        expected = {"fifo": "not a regular file", "directory": "Is a directory",
                    "device": "not a regular file", "big": "larger than 1 MiB"}
        for name in ("tls.crt", "tls.key", "ca.crt"):
            for kind, message in expected.items():
                with self.subTest(file=name, kind=kind):
                    path = os.path.join(cert_dir, name)
                    hostile(path, kind)
                    try:
                        worst = 0.0
                        deadline = time.monotonic() + 0.6
                        while time.monotonic() < deadline:
                            start = time.monotonic()
                            status, _, _ = http_get(url, timeout=2)
                            worst = max(worst, time.monotonic() - start)
                            self.assertEqual(status, 200)
                            time.sleep(0.03)
                        # A stall (a FIFO opened for reading, 50 MiB read) lasts until the
                        # 2 s timeout; 1 s leaves room for a loaded CI machine's scheduler.
                        self.assertLess(worst, 1.0, f"/healthz took {worst:.3f}s")
                        start = time.monotonic()
                        status, _, body = http_get(m.admin_url("/reload"), method="POST",
                                                   timeout=2)
                        self.assertLess(time.monotonic() - start, 1.0)
                        self.assertEqual(status, 422)
                        self.assertIn(f"{name}: cannot read: {message}" if kind != "big"
                                      else f"{name}: {message}", body.decode())
                        # The good set keeps serving.
                        self.assertEqual(self.attempt(port, client_context(a_dir)), b"secret")
                    finally:
                        restore(path)
        # With a FIFO in place, SIGTERM still drains and exits at once.
        hostile(os.path.join(cert_dir, "ca.crt"), "fifo")
        start = time.monotonic()
        self.assertEqual(m.stop(), 0)
        self.assertLess(time.monotonic() - start, 5)

    def test_a_key_readable_by_others_is_warned_about(self):
        cert_dir = self.pki.issue("pod-open-key", spiffe("b"))
        os.chmod(os.path.join(cert_dir, "tls.key"), 0o644)
        m, _, _ = self.inbound(cert_dir=cert_dir)
        wait_until(lambda: "readable by every user" in m.stderr(), what="the key warning")

    # ---- finding 5: a drain ends when every worker is empty, not before ----

    def test_drain_with_two_workers_waits_for_every_worker(self):
        b = self.backend(header_handler)
        port = free_port()
        cfg = {"workers": 2, "certs": {"dir": self.pki.issue("pod-b", spiffe("b"))},
               "admin": {"listen": f"127.0.0.1:{free_port()}"},
               "limits": {"drain_timeout": "30s"},
               "listeners": [{"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{port}",
                              "forward": f"127.0.0.1:{b.port}"}]}
        a_dir = self.pki.issue("pod-a", spiffe("a"))
        ctx = client_context(a_dir)
        for round_ in range(3):
            with self.subTest(round=round_):
                m = Mtlsd(self.tmp, cfg, name=f"drain-{round_}").wait_listening()
                conns = []
                try:
                    conns = self.open_echoed(port, ctx, 24)
                    m.send_signal(signal.SIGTERM)
                    wait_until(lambda: http_get(m.admin_url("/ready"))[0] == 503,
                               what="draining")
                    # Every close but one lands in one loop iteration of its worker: the
                    # resets wait while the process is stopped, and each ends its
                    # connection at once, without waiting for the backend.
                    m.send_signal(signal.SIGSTOP)
                    for s in conns[:-1]:
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                     struct.pack("ii", 1, 0))
                        s.close()
                    time.sleep(0.3)
                    m.send_signal(signal.SIGCONT)
                    time.sleep(1.5)
                    self.assertIsNone(m.proc.poll(), "exited while a connection was open")
                    last = conns[-1]
                    last.sendall(b"last")
                    self.assertEqual(last.recv(4), b"last")
                    last.close()
                    m.proc.wait(timeout=10)
                    self.assertEqual(m.stop(), 0)
                finally:
                    for s in conns:
                        s.close()
                    if m.proc.poll() is None:
                        m.kill()

    # ---- finding 6: idle handshakes cannot starve authenticated traffic ----

    def metric(self, m, name, **labels):
        text = http_get(m.admin_url("/metrics"))[2].decode()
        key = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "} "
        return int(float(text.split(key, 1)[1].split()[0])) if key in text else 0

    def test_a_handshake_flood_never_locks_out_a_prompt_peer(self):
        # The attacker holds idle connections to the pod's inbound listener and opens a
        # new one whenever the server closes one, as fast as one client can: below the
        # handshake slots, at them, and far beyond. Each time, 10 newcomers complete
        # their mTLS handshake and an echo within a second, established connections and
        # the pod's own outbound traffic do not notice, and the flood is counted: closed
        # for a newer connection (limit) or for its silence (timeout).
        b = self.backend(header_handler)
        in_port, in2_port, out_port = free_port(), free_port(), free_port()
        cfg = {"workers": 2, "certs": {"dir": self.pki.issue("pod-b", spiffe("b"))},
               "admin": {"listen": f"127.0.0.1:{free_port()}"},
               "limits": {"max_handshaking": 50, "max_connections": 4000,
                          "handshake_timeout": "30s"},
               "listeners": [
                   {"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{in_port}",
                    "forward": f"127.0.0.1:{b.port}"},
                   {"name": "in2", "mode": "inbound", "listen": f"127.0.0.1:{in2_port}",
                    "forward": f"127.0.0.1:{b.port}"},
                   {"name": "out", "mode": "outbound", "listen": f"127.0.0.1:{out_port}",
                    "upstream": f"127.0.0.1:{in2_port}", "server_identity": spiffe("b")}]}
        m = self.start(cfg)
        ctx = client_context(self.pki.issue("pod-a", spiffe("a")))
        established = self.open_echoed(in_port, ctx, 5)
        figures = []
        try:
            for size in (10, 50, 280, 1000):
                with Flood(in_port, "idle", per_source=size) as flood:
                    worst = 0.0
                    for i in range(10):
                        start = time.monotonic()
                        got = self.attempt(in_port, ctx, b"new%02d" % i)
                        took = time.monotonic() - start
                        worst = max(worst, took)
                        self.assertEqual(got, b"new%02d" % i,
                                         f"newcomer {i} beside {size} idle connections")
                        self.assertLess(took, 1.0, f"newcomer {i} beside {size} idle ones")
                    for i, s in enumerate(established):
                        s.sendall(b"ok%02d" % i)
                        self.assertEqual(s.recv(4), b"ok%02d" % i)
                    with socket.create_connection(("127.0.0.1", out_port), timeout=10) as s:
                        s.sendall(b"mine")
                        s.settimeout(10)
                        self.assertEqual(s.recv(4), b"mine")
                    # Silent past limits.hello_timeout (1 s): closed, and reopened.
                    wait_until(lambda: self.metric(m, "mtlsd_handshake_failures_total",
                                                   listener="in", reason="timeout") > 0,
                               timeout=15, what="a silent connection closed at hello_timeout")
                figures.append(f"{size} idle: 10/10 newcomers, slowest {worst * 1000:.0f} ms, "
                               f"flood {flood.summary}")
        finally:
            for s in established:
                s.close()
        limit = self.metric(m, "mtlsd_connections_refused_total", listener="in", reason="limit")
        timeout = self.metric(m, "mtlsd_handshake_failures_total", listener="in",
                              reason="timeout")
        self.assertGreater(limit, 0)
        self.assertGreater(timeout, 0)
        self.assertEqual(self.metric(m, "mtlsd_connections_refused_total", listener="out",
                                     reason="limit"), 0)
        print(f"\n  {'; '.join(figures)}; counted: limit {limit}, timeout {timeout}",
              file=sys.stderr)

    def test_a_listener_max_connections_caps_that_listener_only(self):
        m, port, b = self.inbound(extra_listener={"max_connections": 3})
        ctx = client_context(self.pki.issue("pod-a", spiffe("a")))
        held = self.open_echoed(port, ctx, 3)
        try:
            self.assertNotEqual(self.attempt(port, ctx), b"secret")
        finally:
            for s in held:
                s.close()
        wait_until(lambda: self.attempt(port, ctx) == b"secret", what="a slot again")

    # ---- finding 8: a resumed session ends with its chain ----

    def test_a_resumed_session_is_closed_when_its_intermediate_expires(self):
        inter_dir = os.path.join(self.tmp, "short-intermediate")
        soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 8))
        run([os.environ.get("MTLSD_BIN", "mtlsd"), "cert", "issue", "--ca", self.pki.ca_dir,
             "--out", inter_dir, "--intermediate", "--not-after", soon])
        leaf = os.path.join(self.tmp, "leaf-under-short")
        run([os.environ.get("MTLSD_BIN", "mtlsd"), "cert", "issue", "--ca", inter_dir, "--out",
             leaf, "--spiffe-id", spiffe("a"), "--days", "1"])
        m, port, b = self.inbound()
        ctx = client_context(leaf)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10)) as s:
            s.sendall(b"full")
            self.assertEqual(s.recv(4), b"full")
            session = s.session
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10),
                             session=session) as s:
            s.sendall(b"resd")
            self.assertEqual(s.recv(4), b"resd")
            self.assertTrue(s.session_reused, "the second connection should resume")
            s.settimeout(30)
            try:
                got = s.recv(10)
            except (ConnectionResetError, ssl.SSLError):
                got = b""
            self.assertEqual(got, b"")
        e = m.wait_access(lambda e: e["result"] == "peer_expired")
        self.assertTrue(e["resumed"])


if __name__ == "__main__":
    unittest.main()
