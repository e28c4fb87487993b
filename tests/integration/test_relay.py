"""The data plane end to end: app -> outbound mtlsd ==mTLS==> inbound mtlsd -> app, with real
processes, real certificates and real TLS peers (Python's OpenSSL, the openssl CLI)."""

import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import ssl
import subprocess
import threading
import time
import unittest

from harness import (Backend, Mtlsd, Pki, TempDir, client_context, echo_handler, free_port,
                     http_get, listening_ports, prom_value, recv_all, run, server_sockets,
                     sha256_handler, spiffe, two_sidecars, wait_until)


class SelectorEchoBackend:
    """An echo server for many connections at once, in one thread (1,000 threads would
    make the test slower than the proxy)."""

    def __init__(self):
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4096)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.sock, selectors.EVENT_READ)
        self.conns = set()
        self.running = True
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while self.running:
            for key, _ in self.sel.select(timeout=0.1):
                if key.fileobj is self.sock:
                    try:
                        c, _ = self.sock.accept()
                    except OSError:
                        continue
                    c.setblocking(False)
                    self.conns.add(c)
                    self.sel.register(c, selectors.EVENT_READ)
                    continue
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.sel.unregister(c)
                    self.conns.discard(c)
                    c.close()
                    continue
                try:
                    c.sendall(data)
                except OSError:
                    pass

    def close(self):
        self.running = False
        self.thread.join(timeout=5)
        for c in list(self.conns):
            c.close()
        self.sock.close()


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


class SidecarCase(unittest.TestCase):
    """A fresh PKI in a temporary directory; the mtlsd processes in self.procs must exit
    0 and the backends in self.backends are closed."""

    def setUp(self):
        self._tmp = TempDir()
        self.tmp = self._tmp.__enter__()
        self.pki = Pki(self.tmp)
        self.procs = []
        self.backends = []

    def tearDown(self):
        for b in self.backends:
            b.close()
        for p in self.procs:
            code = p.stop()
            self.assertEqual(code, 0, f"{p.name} exit code\n{p.stderr()[-3000:]}")
        self._tmp.__exit__(None, None, None)


def accept_queue(port):
    """Connections waiting in the backlog of the IPv4 socket listening on PORT."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return int(fields[4].split(":")[1], 16)
    return 0


class RelayTest(SidecarCase):

    def round_trip(self, sock, payload):
        """Sends PAYLOAD through the pair and expects the echo back."""
        sock.sendall(payload)
        sock.settimeout(10)
        self.assertEqual(recv_exactly(sock, len(payload)), payload)

    def backend(self, handler=None):
        b = Backend(handler)
        self.backends.append(b)
        return b

    def pair(self, backend_port, **kw):
        out, inb, port = two_sidecars(self.tmp, self.pki, backend_port, **kw)
        self.procs += [out, inb]
        return out, inb, port

    # ---- relaying ----

    def test_256_mib_with_identical_sha256(self):
        b = self.backend(sha256_handler)
        out, inb, port = self.pair(b.port)
        block = os.urandom(1 << 20)
        want = hashlib.sha256()
        with socket.create_connection(("127.0.0.1", port)) as s:
            for i in range(256):
                chunk = i.to_bytes(4, "big") + block[4:]
                want.update(chunk)
                s.sendall(chunk)
            s.shutdown(socket.SHUT_WR)
            answer = recv_all(s, timeout=60).decode()
        self.assertEqual(answer, f"{256 << 20} {want.hexdigest()}")
        e = out.wait_access(lambda e: e["result"] == "ok")
        self.assertEqual(e["bytes_from_downstream"], 256 << 20)
        self.assertEqual(e["identity"], spiffe("server"))
        self.assertEqual(e["tls_version"], "TLSv1.3")
        e = inb.wait_access(lambda e: e["result"] == "ok")
        self.assertEqual(e["identity"], spiffe("client"))
        self.assertEqual(e["bytes_from_upstream"], len(answer))

    def test_half_close_from_the_server_side(self):
        """The app in pod B finishes first; pod A's app keeps sending afterwards."""
        got = []

        def server_first(backend, conn):
            conn.sendall(b"hello from B")
            conn.shutdown(socket.SHUT_WR)
            got.append(recv_all(conn, timeout=10))

        b = self.backend(server_first)
        out, inb, port = self.pair(b.port)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(10)
            data = b""
            while not data.endswith(b"B"):
                chunk = s.recv(100)
                self.assertTrue(chunk, "EOF before the greeting")
                data += chunk
            self.assertEqual(data, b"hello from B")
            self.assertEqual(s.recv(100), b"", "the FIN from B must reach A")
            s.sendall(b"late data from A")
            s.shutdown(socket.SHUT_WR)
            wait_until(lambda: got, timeout=10, what="backend to read A's late data")
        self.assertEqual(got[0], b"late data from A")
        out.wait_access(lambda e: e["result"] == "ok")
        inb.wait_access(lambda e: e["result"] == "ok")

    def test_proxy_protocol_v2_carries_address_and_identity(self):
        got = []

        def record(backend, conn):
            got.append(recv_all(conn, timeout=10))

        b = self.backend(record)
        out, inb, port = self.pair(b.port, in_extra={"proxy_protocol": True})
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"payload")
            s.shutdown(socket.SHUT_WR)
            s.settimeout(10)
            recv_all(s, timeout=10)
        wait_until(lambda: got, what="the app to read the connection")
        data = got[0]
        self.assertEqual(data[:12], b"\r\n\r\n\x00\r\nQUIT\n")
        self.assertEqual(data[12], 0x21, "version 2, PROXY command")
        self.assertEqual(data[13], 0x11, "TCP over IPv4")
        length = int.from_bytes(data[14:16], "big")
        body, rest = data[16:16 + length], data[16 + length:]
        self.assertEqual(socket.inet_ntoa(body[0:4]), "127.0.0.1")
        self.assertEqual(socket.inet_ntoa(body[4:8]), "127.0.0.1")
        dst_port = int.from_bytes(body[10:12], "big")
        self.assertEqual(dst_port, int(inb.config["listeners"][0]["listen"].rsplit(":", 1)[1]))
        tlv = body[12:]
        self.assertEqual(tlv[0], 0xE0)
        tlv_len = int.from_bytes(tlv[1:3], "big")
        self.assertEqual(tlv[3:3 + tlv_len].decode(), spiffe("client"))
        self.assertEqual(rest, b"payload")

    def test_upstream_resolved_by_name_with_sni(self):
        b = self.backend()
        inbound_port = free_port()
        out, inb, port = self.pair(b.port, in_extra={"listen": f"127.0.0.1:{inbound_port}"},
                                   out_extra={"upstream": f"localhost:{inbound_port}"})
        with socket.create_connection(("127.0.0.1", port)) as s:
            self.round_trip(s, b"ping")
        e = out.wait_access(lambda e: e["result"] == "ok")
        self.assertEqual(e["upstream"], f"localhost:{inbound_port}")

    def test_session_resumption(self):
        b = self.backend()
        out, inb, port = self.pair(b.port)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port)) as s:
                self.round_trip(s, b"x")
        wait_until(lambda: len(out.access_log()) == 3, what="three access log lines")
        resumed = [e["resumed"] for e in out.access_log()]
        self.assertEqual(resumed[0], False)
        self.assertIn(True, resumed[1:])

    def test_1000_concurrent_connections(self):
        b = SelectorEchoBackend()
        self.backends.append(b)
        out, inb, port = self.pair(b.port)
        rss_idle = (out.rss_kib(), inb.rss_kib())
        socks = []
        try:
            for i in range(1000):
                s = socket.create_connection(("127.0.0.1", port))
                s.settimeout(20)
                socks.append(s)
                s.sendall(b"%06d" % i)
            for i, s in enumerate(socks):
                data = b""
                while len(data) < 6:
                    chunk = s.recv(6 - len(data))
                    self.assertTrue(chunk, f"connection {i} closed early")
                    data += chunk
                self.assertEqual(data, b"%06d" % i)
            rss_busy = (out.rss_kib(), inb.rss_kib())
            print(f"\nRSS KiB idle out/in {rss_idle}, with 1000 connections {rss_busy}; "
                  f"per connection {(rss_busy[0] - rss_idle[0]) / 1000:.1f} / "
                  f"{(rss_busy[1] - rss_idle[1]) / 1000:.1f} KiB")
        finally:
            for s in socks:
                s.close()
        wait_until(lambda: sum(e["result"] == "ok" for e in out.access_log()) == 1000,
                   timeout=30, what="1000 ok access log lines")

    def test_slow_reader_keeps_memory_bounded(self):
        stop = []

        def firehose(backend, conn):
            block = b"z" * (1 << 20)
            conn.settimeout(30)
            try:
                for _ in range(512):
                    if stop:
                        return
                    conn.sendall(block)
            except OSError:
                pass

        b = self.backend(firehose)
        out, inb, port = self.pair(b.port)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"go")
            s.settimeout(10)
            self.assertTrue(s.recv(1024))
            time.sleep(1)  # Let the pipeline fill: kernel buffers, then backpressure.
            before = (out.rss_kib(), inb.rss_kib())
            cpu_before = out.cpu_seconds() + inb.cpu_seconds()
            time.sleep(3)  # The app in pod A reads nothing meanwhile.
            after = (out.rss_kib(), inb.rss_kib())
            cpu = out.cpu_seconds() + inb.cpu_seconds() - cpu_before
            stop.append(True)
        growth = max(after[0] - before[0], after[1] - before[1])
        self.assertLess(growth, 2 * 1024, f"RSS grew {growth} KiB while the reader stalled")
        self.assertLess(cpu, 0.3, f"{cpu:.2f} CPU seconds spent while stalled: a busy loop?")

    def test_idle_timeout(self):
        b = self.backend()
        out, inb, port = self.pair(b.port, limits={"idle_timeout": "1s"})
        with socket.create_connection(("127.0.0.1", port)) as s:
            self.round_trip(s, b"x")
            start = time.monotonic()
            self.assertEqual(s.recv(1), b"")
            self.assertLess(time.monotonic() - start, 5)
        # Both sidecars idle out after 1 s, and either may be first by a millisecond: the
        # first one's log says idle_timeout (the other then sees the connection end).
        wait_until(lambda: any(e["result"] == "idle_timeout"
                               for side in (out, inb) for e in side.access_log()),
                   timeout=10, what="an idle_timeout access log entry on either side")

    def test_max_connections_refuses_at_once_and_keeps_serving(self):
        b = self.backend()
        out, inb, port = self.pair(b.port, limits={"max_connections": 3})
        held = []
        try:
            for _ in range(3):
                s = socket.create_connection(("127.0.0.1", port))
                self.round_trip(s, b"x")
                held.append(s)
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.settimeout(10)
                try:
                    self.assertEqual(s.recv(1), b"", "the fourth connection must be refused")
                except ConnectionResetError:
                    pass
            held.pop().close()
            wait_until(lambda: sum(e["result"] == "ok" for e in out.access_log()) == 1,
                       what="a slot to free up")
            with socket.create_connection(("127.0.0.1", port)) as s:
                self.round_trip(s, b"y")
        finally:
            for s in held:
                s.close()

    def test_drain_lets_open_connections_finish(self):
        b = self.backend()
        out, inb, port = self.pair(b.port)
        with socket.create_connection(("127.0.0.1", port)) as s:
            self.round_trip(s, b"a")
            out.send_signal(signal.SIGTERM)
            wait_until(lambda: "draining" in out.stderr(), what="drain to start")
            # The drain is logged as it starts; the workers close their listeners just after.
            wait_until(lambda: port not in listening_ports(), what="the listeners to close")
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
            s.sendall(b"b")
            self.assertEqual(s.recv(1), b"b", "an open connection keeps working while draining")
            self.assertIsNone(out.proc.poll())
        self.assertEqual(out.proc.wait(timeout=10), 0)

    def test_drain_timeout_closes_the_rest(self):
        b = self.backend()
        out, inb, port = self.pair(b.port, limits={"drain_timeout": "500ms"})
        with socket.create_connection(("127.0.0.1", port)) as s:
            self.round_trip(s, b"a")
            start = time.monotonic()
            out.send_signal(signal.SIGTERM)
            self.assertEqual(out.proc.wait(timeout=10), 0)
            self.assertLess(time.monotonic() - start, 5)
        self.assertTrue(any(e["result"] == "drained" for e in out.access_log()))

    # ---- upstream failures ----

    def outbound_only(self, upstream, limits=None):
        a_dir = self.pki.issue("pod-a", spiffe("a"))
        port = free_port()
        cfg = {"workers": 1, "certs": {"dir": a_dir},
               "admin": {"listen": f"127.0.0.1:{free_port()}"},
               "listeners": [{"name": "out", "mode": "outbound",
                              "listen": f"127.0.0.1:{port}", "upstream": upstream}]}
        if limits:
            cfg["limits"] = limits
        m = Mtlsd(self.tmp, cfg, name="outbound").wait_listening()
        self.procs.append(m)
        return m, port

    def expect_closed(self, port, timeout=10):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(timeout)
            try:
                s.sendall(b"hello")
                self.assertEqual(s.recv(10), b"")
            except (ConnectionResetError, BrokenPipeError):
                pass

    def test_upstream_refused(self):
        m, port = self.outbound_only(f"127.0.0.1:{free_port()}")
        self.expect_closed(port)
        m.wait_access(lambda e: e["result"] == "refused")

    def test_upstream_never_answers(self):
        # A listener whose accept queue is full drops further SYNs: connect() hangs.
        blackhole = socket.socket()
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        fillers = []
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(blackhole.getsockname())
            fillers.append(f)
        time.sleep(0.2)
        try:
            m, port = self.outbound_only(f"127.0.0.1:{blackhole.getsockname()[1]}",
                                         limits={"connect_timeout": "500ms"})
            start = time.monotonic()
            self.expect_closed(port)
            self.assertLess(time.monotonic() - start, 5)
            m.wait_access(lambda e: e["result"] == "timeout")
        finally:
            for f in fillers:
                f.close()
            blackhole.close()

    def test_upstream_name_does_not_resolve(self):
        m, port = self.outbound_only("does-not-exist.invalid:443")
        self.expect_closed(port)
        m.wait_access(lambda e: e["result"] == "dns")

    # ---- the inbound side against real TLS clients ----

    def test_out_of_file_descriptors_refuses_at_once(self):
        m, port, b = self.inbound_only(nofile=72)
        a_dir = self.pki.issue("pod-a", spiffe("a"))
        admin = m.config["admin"]["listen"].rsplit(":", 1)
        stalled = []
        try:
            # Proxied connections are capped below the limit (runtime_fit_descriptors), but
            # the admin port's callers, which never send a request, can still use up the
            # rest. A caller of the listener is then refused at once (docs/configuration.md,
            # limits), not
            # left in the backlog, and nothing spins.
            for _ in range(120):
                stalled.append(socket.create_connection((admin[0], int(admin[1]))))
            wait_until(lambda: "refusing new connections at once" in m.stderr(),
                       what="the admin port out of descriptors")
            # Until the admin port has taken (or refused) every one of them, a descriptor
            # it frees for a moment could let a caller of the listener in.
            wait_until(lambda: accept_queue(int(admin[1])) == 0, timeout=15,
                       what="the admin port's backlog drained")
            time.sleep(0.2)
            # Every caller, not only the first: the descriptor let go is held back again.
            for _ in range(5):
                start = time.monotonic()
                self.assertNotEqual(self.tls_attempt(port, client_context(a_dir)), b"secret")
                self.assertLess(time.monotonic() - start, 2, "a caller kept waiting")
            listener = f"127.0.0.1:{port}"
            self.assertIn(f"{listener}: out of file descriptors: refusing", m.stderr())
            self.assertNotIn(f"{listener}: accept:", m.stderr(), "paused instead of refusing")
            cpu_before = m.cpu_seconds()
            time.sleep(1.5)
            self.assertLess(m.cpu_seconds() - cpu_before, 0.5, "spinning while out of fds")
        finally:
            for s in stalled:
                s.close()
        wait_until(lambda: self.tls_attempt(port, client_context(a_dir)) == b"secret",
                   timeout=20, what="serving again after descriptors were freed")
        refused = prom_value(http_get(m.admin_url("/metrics"))[2].decode(),
                             'mtlsd_connections_refused_total{listener="in",reason="limit"}')
        self.assertGreaterEqual(refused, 5)
        self.assertIn(f"{listener}: descriptors free again", m.stderr())
        self.assertIsNone(m.proc.poll())

    def inbound_only(self, allow=None, extra=None, nofile=None):
        b = self.backend()
        b_dir = self.pki.issue("pod-b", spiffe("b"))
        port = free_port()
        listener = {"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{port}",
                    "forward": f"127.0.0.1:{b.port}"}
        if allow is not None:
            listener["allow"] = allow
        cfg = {"workers": 1, "certs": {"dir": b_dir},
               "admin": {"listen": f"127.0.0.1:{free_port()}"}, "listeners": [listener]}
        cfg.update(extra or {})
        m = Mtlsd(self.tmp, cfg, name="inbound", nofile=nofile).wait_listening()
        self.procs.append(m)
        return m, port, b

    def tls_attempt(self, port, ctx):
        """Connects, sends a byte and reads: returns what came back, or the error."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                with ctx.wrap_socket(raw) as s:
                    s.sendall(b"secret")
                    return s.recv(10)
        except (ssl.SSLError, OSError) as e:
            return e

    def assert_refused(self, m, port, backend, ctx, reason):
        result = self.tls_attempt(port, ctx)
        self.assertNotEqual(result, b"secret")
        m.wait_access(lambda e: e["result"] == reason, what=f"result {reason}")
        time.sleep(0.1)
        self.assertEqual(backend.accepted, 0, "nothing may reach the app")

    def test_inbound_accepts_an_allowed_identity(self):
        m, port, b = self.inbound_only(allow=[spiffe("a")])
        a_dir = self.pki.issue("pod-a", spiffe("a"))
        self.assertEqual(self.tls_attempt(port, client_context(a_dir)), b"secret")

    def test_inbound_refuses_no_client_certificate(self):
        m, port, b = self.inbound_only()
        ctx = client_context(None, ca_file=self.pki.ca_crt)
        self.assert_refused(m, port, b, ctx, "no_peer_cert")

    def test_inbound_refuses_another_ca(self):
        m, port, b = self.inbound_only()
        other = Pki(self.tmp, name="other-ca")
        c_dir = other.issue("pod-c", spiffe("a"))
        ctx = client_context(c_dir, ca_file=self.pki.ca_crt)
        self.assert_refused(m, port, b, ctx, "untrusted")

    def test_inbound_refuses_an_expired_certificate(self):
        m, port, b = self.inbound_only()
        e_dir = self.pki.issue("pod-e", spiffe("a"), extra=[
            "--not-before", "2020-01-01T00:00:00Z", "--not-after", "2021-01-01T00:00:00Z"])
        self.assert_refused(m, port, b, client_context(e_dir), "expired")

    def test_inbound_refuses_an_identity_not_allowed(self):
        m, port, b = self.inbound_only(allow=[spiffe("a")])
        x_dir = self.pki.issue("pod-x", spiffe("x"))
        self.assert_refused(m, port, b, client_context(x_dir), "identity_denied")
        e = m.wait_access(lambda e: e["result"] == "identity_denied")
        self.assertEqual(e["identity"], spiffe("x"), "the access log names who was refused")

    def test_inbound_default_policy_is_the_trust_domain(self):
        m, port, b = self.inbound_only()
        other_td = self.pki.issue("pod-other-td", "spiffe://other.example/ns/default/sa/a")
        self.assert_refused(m, port, b, client_context(other_td), "identity_denied")

    def test_inbound_refuses_a_malformed_spiffe_id(self):
        m, port, b = self.inbound_only()
        d = os.path.join(self.tmp, "pod-bad")
        os.makedirs(d)
        key, csr, crt = (os.path.join(d, n) for n in ("tls.key", "req.csr", "tls.crt"))
        ext = os.path.join(d, "ext.cnf")
        with open(ext, "w") as f:
            f.write("subjectAltName=URI:spiffe://cluster.local/ns//sa/a\n"
                    "extendedKeyUsage=clientAuth,serverAuth\nbasicConstraints=CA:FALSE\n")
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", csr, "-subj", "/O=test"])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.pki.ca_crt, "-CAkey",
             os.path.join(self.pki.ca_dir, "ca.key"), "-CAcreateserial", "-days", "1",
             "-extfile", ext, "-out", crt])
        subprocess.run(["cp", self.pki.ca_crt, os.path.join(d, "ca.crt")], check=True)
        # Not an X.509-SVID: the certificate is refused as untrusted, whatever it names.
        self.assert_refused(m, port, b, client_context(d), "untrusted")

    def test_inbound_refuses_tls_1_1(self):
        m, port, b = self.inbound_only()
        a_dir = self.pki.issue("pod-a", spiffe("a"))
        proc = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_1",
             "-cipher", "DEFAULT:@SECLEVEL=0", "-cert", os.path.join(a_dir, "tls.crt"),
             "-key", os.path.join(a_dir, "tls.key")],
            input="secret\n", capture_output=True, text=True, timeout=30)
        self.assertNotEqual(proc.returncode, 0)
        m.wait_access(lambda e: e["result"] == "protocol")
        self.assertEqual(b.accepted, 0)

    def test_handshake_timeout_on_a_stalled_peer(self):
        m, port, b = self.inbound_only(extra={"limits": {"handshake_timeout": "500ms"}})
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"\x16\x03\x01\x02\x00")  # The start of a ClientHello, then nothing.
            s.settimeout(10)
            start = time.monotonic()
            try:
                self.assertEqual(s.recv(10), b"")
            except ConnectionResetError:
                pass
            self.assertLess(time.monotonic() - start, 5)
        m.wait_access(lambda e: e["result"] == "timeout")
        self.assertEqual(b.accepted, 0)

    def test_garbage_instead_of_tls(self):
        m, port, b = self.inbound_only()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            try:
                recv_all(s, timeout=10)
            except ConnectionResetError:
                pass
        m.wait_access(lambda e: e["result"] == "protocol")
        self.assertEqual(b.accepted, 0)

    # ---- the outbound side against a real TLS server ----

    def test_outbound_refuses_the_wrong_server_identity_before_any_byte(self):
        wrong = self.pki.issue("pod-wrong", spiffe("wrong"))
        s_port = free_port()
        log = open(os.path.join(self.tmp, "s_server.out"), "w+")
        server = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{s_port}", "-cert",
             os.path.join(wrong, "tls.crt"), "-key", os.path.join(wrong, "tls.key"),
             "-CAfile", self.pki.ca_crt, "-Verify", "1", "-naccept", "1"],
            # s_server quits at EOF on its standard input: keep it open.
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.PIPE)
        try:
            wait_until(lambda: "ACCEPT" in open(log.name).read(), what="s_server")
            a_dir = self.pki.issue("pod-a", spiffe("a"))
            port = free_port()
            cfg = {"workers": 1, "certs": {"dir": a_dir},
                   "admin": {"listen": f"127.0.0.1:{free_port()}"},
                   "listeners": [{"name": "out", "mode": "outbound",
                                  "listen": f"127.0.0.1:{port}",
                                  "upstream": f"127.0.0.1:{s_port}",
                                  "server_identity": spiffe("payments")}]}
            m = Mtlsd(self.tmp, cfg, name="outbound").wait_listening()
            self.procs.append(m)
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"TOPSECRET")
                s.settimeout(10)
                try:
                    recv_all(s, timeout=10)
                except ConnectionResetError:
                    pass
            m.wait_access(lambda e: e["result"] == "identity_denied")
        finally:
            server.stdin.close()
            server.kill()
            server.wait(timeout=10)
            log.close()
        self.assertNotIn("TOPSECRET", open(log.name).read())


def greeter_handler(backend, conn):
    """A server-first protocol (SMTP, MySQL, ...): it greets, then echoes."""
    conn.sendall(b"220 hello\r\n")
    echo_handler(backend, conn)


class PermissiveTest(SidecarCase):
    """docs/configuration.md, listeners[].permissive: the first byte decides; strict never
    waits."""

    def setUp(self):
        super().setUp()
        self.server_dir = self.pki.issue("server", spiffe("server"))
        self.client_dir = self.pki.issue("client", spiffe("client"))

    def inbound(self, backend, permissive=True, detect_timeout="300ms", extra=None):
        self.backends.append(backend)
        port = free_port()
        m = Mtlsd(self.tmp, {
            "admin": {"listen": f"127.0.0.1:{free_port()}"},
            "certs": {"dir": self.server_dir},
            "limits": {"detect_timeout": detect_timeout},
            "listeners": [{"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{port}",
                           "forward": f"127.0.0.1:{backend.port}",
                           "allow": [spiffe("client")], "permissive": permissive,
                           **(extra or {})}],
            "workers": 1}, name=f"inbound-{len(self.procs)}")
        self.procs.append(m)
        m.wait_listening()
        wait_until(lambda: http_get(m.admin_url("/ready"))[0] == 200, what="ready")
        return m, port

    def plaintext_count(self, m):
        """The listener's plaintext count; None when it has no such series (strict)."""
        stats = json.loads(http_get(m.admin_url("/stats"))[2])
        return stats["listeners"]["in"].get("mtlsd_plaintext_connections_total")

    def test_mtls_and_plaintext_client_first_share_the_port(self):
        m, port = self.inbound(Backend(), detect_timeout="2s")
        # mTLS, exactly as on a strict listener: the identity is checked and logged.
        ctx = client_context(self.client_dir)
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"over tls")
                s.settimeout(10)
                self.assertEqual(recv_exactly(s, 8), b"over tls")
        e = m.wait_access(lambda e: e["identity"] == spiffe("client"))
        self.assertEqual(e["tls_version"], "TLSv1.3")
        # A plaintext HTTP client is relayed at once (no wait for the detect timeout).
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(request)
            s.settimeout(10)
            self.assertEqual(recv_exactly(s, len(request)), request)
        self.assertLess(time.monotonic() - start, 1.5, "relayed at once, not after 2 s")
        e = m.wait_access(lambda e: e["identity"] == "-")
        self.assertEqual((e["result"], e["tls_version"]), ("ok", ""))
        self.assertEqual(self.plaintext_count(m), 1)

    def test_a_plaintext_caller_gets_no_identity_tlv_to_forge_behind(self):
        # The caller's own bytes follow mtlsd's PROXY header: here a second header with an
        # identity TLV. mtlsd's header carries no TLV at all (not an empty one), so an
        # application that reads exactly one header sees no identity.
        b = Backend()  # It records what it receives.
        m, port = self.inbound(b, extra={"proxy_protocol": True})
        signature = b"\r\n\r\n\x00\r\nQUIT\n"
        forged_id = spiffe("admin").encode()
        forged = (signature + b"\x21\x11" + struct.pack(">H", 12 + 3 + len(forged_id))
                  + bytes(12) + b"\xe0" + struct.pack(">H", len(forged_id)) + forged_id)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(forged)
        m.wait_access(lambda e: e["identity"] == "-")
        wait_until(lambda: len(b.received) >= 28 + len(forged), what="the app got everything")
        header = bytes(b.received[:28])
        self.assertEqual(header[:12], signature)
        self.assertEqual((header[12], header[13]), (0x21, 0x11))
        self.assertEqual(struct.unpack(">H", header[14:16])[0], 12, "no TLV after the addresses")
        self.assertEqual(bytes(b.received[28:]), forged)

    def test_a_first_byte_that_came_during_a_stall_is_not_judged_late(self):
        # The sidecar is stopped (a loaded node, a paused container) while a mesh peer
        # connects and sends its ClientHello; when it runs again its timers are due before
        # it looks at the socket. The ClientHello arrived in time: on a strict listener it
        # is no hello_timeout, on a permissive one it is mTLS, not plaintext.
        for permissive in (False, True):
            m, port = self.inbound(Backend(), permissive=permissive, detect_timeout="200ms")
            ctx = client_context(self.client_dir)
            result = {}

            def call():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
                        with ctx.wrap_socket(raw) as s:
                            s.sendall(b"stalled")
                            result["echo"] = recv_exactly(s, 7)
                except OSError as e:
                    result["error"] = e

            os.kill(m.pid, signal.SIGSTOP)
            try:
                t = threading.Thread(target=call)
                t.start()
                # Past limits.detect_timeout and limits.hello_timeout (1 s) while stopped.
                wait_until(lambda: server_sockets(port) == 1, what="the peer connected")
                time.sleep(1.5)
            finally:
                os.kill(m.pid, signal.SIGCONT)
            t.join(timeout=30)
            self.assertEqual(result, {"echo": b"stalled"}, f"permissive={permissive}")
            e = m.wait_access(lambda e: e["identity"] == spiffe("client"))
            self.assertEqual(e["result"], "ok")

    def test_a_server_first_backend_greets_after_the_detect_timeout(self):
        m, port = self.inbound(Backend(greeter_handler))
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(10)
            self.assertEqual(recv_exactly(s, 11), b"220 hello\r\n")
            waited = time.monotonic() - start
            s.sendall(b"EHLO x\r\n")
            self.assertEqual(recv_exactly(s, 8), b"EHLO x\r\n")
        self.assertGreaterEqual(waited, 0.25)
        self.assertLess(waited, 3)
        self.assertEqual(self.plaintext_count(m), 1)

    def test_plaintext_is_relayed_before_any_certificate_is_loaded(self):
        """With no certificate yet, the TLS callers are refused (no_certificate) and the
        plaintext ones still reach the app."""
        backend = Backend()
        self.backends.append(backend)
        port = free_port()
        m = Mtlsd(self.tmp, {
            "admin": {"listen": f"127.0.0.1:{free_port()}"},
            "certs": {"dir": os.path.join(self.tmp, "no-certs-yet")},
            "listeners": [{"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{port}",
                           "forward": f"127.0.0.1:{backend.port}", "permissive": True}],
            "workers": 1}, name="inbound-no-certs")
        self.procs.append(m)
        m.wait_listening()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"plain")
            s.settimeout(10)
            self.assertEqual(recv_exactly(s, 5), b"plain")
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                with client_context(self.client_dir).wrap_socket(raw) as s:
                    s.settimeout(10)
                    if not s.recv(1):
                        raise ConnectionError("closed")
        m.wait_access(lambda e: e["result"] == "no_certificate")
        self.assertEqual(self.plaintext_count(m), 1)

    def test_a_tls_caller_outside_the_allow_list_is_refused_as_on_strict(self):
        m, port = self.inbound(Backend())
        ctx = client_context(self.pki.issue("stranger", spiffe("stranger")))
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                with ctx.wrap_socket(raw) as s:
                    s.sendall(b"x")
                    s.settimeout(10)
                    if not s.recv(1):
                        raise ConnectionError("closed")
        m.wait_access(lambda e: e["result"] == "identity_denied")
        self.assertEqual(self.plaintext_count(m), 0)

    def test_strict_refuses_plaintext_and_never_waits(self):
        backend = Backend()
        m, port = self.inbound(backend, permissive=False)
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n")
            s.settimeout(10)
            try:
                self.assertEqual(s.recv(100), b"")
            except ConnectionResetError:
                pass
        self.assertLess(time.monotonic() - start, 2)
        m.wait_access(lambda e: e["result"] == "protocol")
        self.assertEqual(backend.accepted, 0)
        # Only permissive listeners have the plaintext series (docs/admin.md).
        self.assertIsNone(self.plaintext_count(m))
        metrics = http_get(m.admin_url("/metrics"))[2].decode()
        self.assertNotIn('mtlsd_plaintext_connections_total{listener="in"}', metrics)


if __name__ == "__main__":
    unittest.main()
