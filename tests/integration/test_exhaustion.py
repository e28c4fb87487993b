"""Exhaustion on a sandboxed mtlsd (issue: hardening): 256 descriptors against 1,000
clients, slowloris on the TLS handshake and on the health port, an upstream that accepts
and never reads, and a backend stopped with SIGSTOP while its client keeps sending (through
an outbound and an inbound sidecar). Each
is survived with a counted outcome (an access log result, a metric, a served count), the
CPU stays low while mtlsd waits, memory stays bounded by backpressure, and afterwards the
process serves the next honest client. (max_connections and max_handshaking at their
limits are in test_relay and test_security, slowloris on the admin port in test_admin and
on the webhook in test_webhook.)"""

import concurrent.futures
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import unittest

from harness import (Backend, Mtlsd, PkiCase, client_context, free_port, http_get, prom_value,
                     recv_all, tls_echo, two_sidecars, wait_until)

# A backend in a process of its own, so that it can be stopped with SIGSTOP: it reads one
# connection to EOF and answers with the byte count and the SHA-256 of what it read.
HASHING_BACKEND = r"""
import hashlib, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
print(s.getsockname()[1], flush=True)
s.settimeout(60)
conn, _ = s.accept()
conn.settimeout(60)
h, n = hashlib.sha256(), 0
while data := conn.recv(1 << 16):
    h.update(data)
    n += len(data)
conn.sendall(f"{n} {h.hexdigest()}".encode())
conn.close()
"""


class ExhaustionTest(PkiCase):
    def setUp(self):
        self.cleanups = []

    def tearDown(self):
        for fn in reversed(self.cleanups):
            fn()

    def inbound(self, upstream_port, limits=None, nofile=None, health=False):
        """A one-worker inbound sidecar forwarding to UPSTREAM_PORT; (mtlsd, port, admin)."""
        port, admin = free_port(), free_port()
        config = {"workers": 1, "admin": {"listen": f"127.0.0.1:{admin}"},
                  "certs": {"dir": self.server}, "limits": limits or {},
                  "listeners": [{"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{port}",
                                 "forward": f"127.0.0.1:{upstream_port}"}]}
        if health:
            config["health"] = {"listen": f"127.0.0.1:{free_port()}"}
        m = Mtlsd(self.tmp, config, name=f"mtlsd-{port}", nofile=nofile)
        self.cleanups.append(m.stop)
        m.wait_listening(admin=health)
        return m, port, admin

    def backend(self, handler=None):
        b = Backend(handler)
        self.cleanups.append(b.close)
        return b

    def metric(self, admin, series):
        return prom_value(http_get(f"http://127.0.0.1:{admin}/metrics")[2].decode(), series)

    def assert_serves(self, port):
        self.assertEqual(tls_echo(port, client_context(self.client), b"honest"), b"honest")

    def test_256_descriptors_against_1000_clients(self):
        b = self.backend()
        m, port, admin = self.inbound(b.port, nofile=256)
        # 256 descriptors hold fewer connections than limits.max_connections: mtlsd says
        # so, and takes no more than it can give an upstream socket to.
        cap = json.loads(http_get(f"http://127.0.0.1:{admin}/server_info")[2])["max_connections"]
        self.assertLess(cap, 128)
        self.assertIn("the open files limit (ulimit -n 256) holds", m.stderr())
        refused = 'mtlsd_connections_refused_total{listener="in",reason="limit"}'
        # 1,000 callers that never start their handshake: the first CAP wait for it, the
        # others are refused at once; then nothing more happens, and nothing spins.
        idle = []
        try:
            for _ in range(1000):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                idle.append(s)
            wait_until(lambda: self.metric(admin, refused) >= 1000 - cap, timeout=15,
                       what="the callers over the limit refused")
            cpu_before = m.cpu_seconds()
            time.sleep(2)
            saturated_cpu = m.cpu_seconds() - cpu_before
        finally:
            for s in idle:
                s.close()
        self.assertLess(saturated_cpu, 0.4, f"{saturated_cpu:.2f} CPU s in 2 s: a busy loop?")
        wait_until(lambda: self.metric(admin, 'mtlsd_connections_active{listener="in"}') == 0,
                   what="the idle callers gone")
        refused_idle = self.metric(admin, refused)

        # 1,000 real clients, 200 at once: each is served, or refused at once and counted;
        # none is accepted and then lost for want of a descriptor.
        def one(i):
            payload = f"client {i}".encode()
            try:
                return tls_echo(port, client_context(self.client), payload, timeout=60) == payload
            except OSError:
                return False

        with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
            served = sum(pool.map(one, range(1000)))
        refused_busy = self.metric(admin, refused) - refused_idle
        self.assertEqual(served + refused_busy, 1000, f"{served} served, {refused_busy} refused")
        self.assertGreater(served, 0)
        metrics = http_get(f"http://127.0.0.1:{admin}/metrics")[2].decode()
        upstream_failures = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                                if line.startswith("mtlsd_upstream_connect_failures_total{"))
        self.assertEqual(upstream_failures, 0)
        self.assertIsNone(m.proc.poll())
        print(f"\n  256 fds (cap {cap}), 1,000 idle callers: {refused_idle} refused, "
              f"{saturated_cpu:.2f} CPU s in 2 s; 1,000 clients, 200 at once: {served} served, "
              f"{refused_busy} refused", file=sys.stderr)

    def test_a_handshake_trickled_byte_by_byte_ends_at_its_deadline(self):
        b = self.backend()
        m, port, admin = self.inbound(b.port, limits={"handshake_timeout": "2s"})
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"\x16\x03\x01\x02\x00")  # A ClientHello of 512 bytes announced...
            closed = False
            for _ in range(100):  # ...and one byte of it every 100 ms.
                try:
                    s.sendall(b"\x00")
                    s.settimeout(0.1)
                    closed = s.recv(1) == b""
                except socket.timeout:
                    continue
                except OSError:
                    closed = True
                if closed:
                    break
        elapsed = time.monotonic() - start
        self.assertTrue(closed, "the trickling handshake was never cut")
        # Each byte that arrives does not extend the deadline: cut at 2 s, not 10.
        self.assertLess(elapsed, 4.5)
        m.wait_access(lambda e: e["result"] == "timeout", what="a timeout in the access log")
        self.assertEqual(
            self.metric(admin, 'mtlsd_handshake_failures_total{listener="in",reason="timeout"}'),
            1)
        self.assertEqual(b.accepted, 0)
        self.assert_serves(port)

    def test_slowloris_on_the_health_port_is_cut_and_blocks_nobody(self):
        b = self.backend()
        m, port, admin = self.inbound(b.port, health=True)
        health = m.config["health"]["listen"]
        host, hport = health.rsplit(":", 1)
        slow = []
        for _ in range(8):
            s = socket.create_connection((host, int(hport)), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\n")
            slow.append(s)
        start = time.monotonic()
        cut = set()
        try:
            while len(cut) < len(slow) and time.monotonic() - start < 15:
                for i, s in enumerate(slow):
                    if i in cut:
                        continue
                    try:
                        s.sendall(b"X")  # A header that never ends, one byte at a time.
                        s.settimeout(0.02)
                        s.recv(4096)  # An answer (408) or the end: mtlsd cut it.
                        cut.add(i)
                    except socket.timeout:
                        pass
                    except OSError:
                        cut.add(i)
                # Meanwhile an honest kubelet is answered at once.
                self.assertEqual(http_get(m.health_url("/healthz"), timeout=2)[0], 200)
                time.sleep(0.2)
        finally:
            for s in slow:
                s.close()
        elapsed = time.monotonic() - start
        self.assertEqual(len(cut), len(slow), "slow clients still connected after 15 s")
        self.assertLess(elapsed, 8, "the health port's request deadline is a few seconds")
        self.assertIsNone(m.proc.poll())

    def test_an_upstream_that_accepts_and_never_reads(self):
        stop = threading.Event()
        b = self.backend(lambda backend, conn: stop.wait(30))
        self.cleanups.append(stop.set)
        m, port, admin = self.inbound(b.port, limits={"idle_timeout": "3s"})
        ctx = client_context(self.client)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        tls = ctx.wrap_socket(raw)
        sent = 0
        block = os.urandom(1 << 16)
        # Send until backpressure reaches the client: its writes stop being taken.
        tls.settimeout(1)
        try:
            while sent < 256 << 20:
                tls.sendall(block)
                sent += len(block)
        except (socket.timeout, ssl.SSLError):
            pass
        before = m.rss_kib()
        cpu_before = m.cpu_seconds()
        time.sleep(1.5)
        growth = m.rss_kib() - before
        cpu = m.cpu_seconds() - cpu_before
        self.assertLess(sent, 64 << 20, f"{sent >> 20} MiB taken by an upstream that reads none")
        self.assertLess(growth, 2048, f"RSS grew {growth} KiB while the upstream read nothing")
        self.assertLess(cpu, 0.3, f"{cpu:.2f} CPU s while stalled: a busy loop?")
        # The counted outcome: nothing moves, so the idle timeout ends the connection.
        entry = m.wait_access(lambda e: e.get("result") == "idle_timeout", timeout=15,
                              what="idle_timeout for the stalled connection")
        self.assertGreater(entry["bytes_from_downstream"], 0)
        tls.close()
        wait_until(lambda: self.metric(admin, 'mtlsd_connections_active{listener="in"}') == 0,
                   what="the stalled connection closed")
        self.assertIsNone(m.proc.poll())
        print(f"\n  half-open upstream: {sent >> 10} KiB taken before backpressure, RSS "
              f"+{growth} KiB, {cpu:.2f} CPU s in 1.5 s", file=sys.stderr)

    def test_a_stopped_backend_bounds_memory_and_loses_nothing(self):
        backend = subprocess.Popen([sys.executable, "-c", HASHING_BACKEND],
                                   stdout=subprocess.PIPE, text=True)
        self.cleanups.append(lambda: (backend.kill(), backend.wait(timeout=10)))
        backend_port = int(backend.stdout.readline())
        out, inb, port = two_sidecars(self.tmp, self.pki, backend_port)
        self.cleanups += [inb.stop, out.stop]
        payload = os.urandom(64 << 20)
        result = {}

        def client():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
                    view = memoryview(payload)
                    for off in range(0, len(payload), 1 << 16):
                        s.sendall(view[off:off + (1 << 16)])
                        result["sent"] = off + (1 << 16)
                    s.shutdown(socket.SHUT_WR)
                    result["answer"] = recv_all(s, timeout=60).decode()
            except OSError as e:
                result["error"] = repr(e)

        t = threading.Thread(target=client, daemon=True)
        t.start()
        wait_until(lambda: result.get("sent", 0) >= 1 << 20, what="the first MiB to flow")
        os.kill(backend.pid, signal.SIGSTOP)
        try:
            # The kernel's buffers fill, then backpressure holds the client: wait until
            # what it has sent stops moving, well before the end of the payload.
            def stalled():
                before = result.get("sent", 0)
                time.sleep(0.5)
                return result.get("sent", 0) == before

            wait_until(stalled, timeout=20, what="backpressure to hold the client")
            self.assertLess(result["sent"], len(payload), "the buffers took all of it")
            before = [m.rss_kib() for m in (out, inb)]
            cpu_before = out.cpu_seconds() + inb.cpu_seconds()
            sent_before = result.get("sent", 0)
            time.sleep(3)
            growth = max(m.rss_kib() - b for m, b in zip((out, inb), before))
            cpu = out.cpu_seconds() + inb.cpu_seconds() - cpu_before
            moved = result.get("sent", 0) - sent_before
        finally:
            os.kill(backend.pid, signal.SIGCONT)
        t.join(timeout=60)
        self.assertNotIn("error", result)
        self.assertLess(growth, 2048, f"RSS grew {growth} KiB while the backend was stopped")
        self.assertLess(cpu, 0.3, f"{cpu:.2f} CPU s while the backend was stopped")
        self.assertLess(moved, 1 << 20, f"{moved} bytes taken while the backend was stopped")
        self.assertEqual(result.get("answer"),
                         f"{len(payload)} {hashlib.sha256(payload).hexdigest()}")
        print(f"\n  SIGSTOPped backend: {sent_before >> 20} MiB taken, then RSS +{growth} KiB, "
              f"{cpu:.2f} CPU s in 3 s; 64 MiB intact after SIGCONT", file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
