"""Hostile peers on a sandboxed mtlsd (issue: hardening): a ClientHello in one-byte
segments, an oversized TLS record, renegotiation attempts, a KeyUpdate storm, 10,000
connections that send one byte and close, and an upstream that resets mid-stream. Each
is survived with a counted or logged outcome, and afterwards the process serves the next
honest client and holds no more descriptors than before."""

import concurrent.futures
import re
import socket
import ssl
import struct
import subprocess
import time
import unittest

from harness import (Backend, Mtlsd, PkiCase, TempDir, client_context, free_port, http_get,
                     prom_value, spiffe, tls_echo, wait_until)


class HostilePeerTest(PkiCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.backend = Backend()
        cls.port = free_port()
        cls.admin = free_port()
        cls.m = Mtlsd(cls.tmp, {
            "workers": 1,
            "admin": {"listen": f"127.0.0.1:{cls.admin}"},
            "certs": {"dir": cls.server},
            "limits": {"handshake_timeout": "2s"},
            "listeners": [{"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{cls.port}",
                           "forward": f"127.0.0.1:{cls.backend.port}"}]}).wait_listening()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.m.stop()
        finally:
            cls.backend.close()
            super().tearDownClass()

    def metrics(self):
        return http_get(f"http://127.0.0.1:{self.admin}/metrics")[2].decode()

    def open_fds(self):
        return prom_value(self.metrics(), "process_open_fds")

    def assert_still_serving(self):
        self.assertEqual(tls_echo(self.port, client_context(self.client), b"honest"), b"honest")

    def openssl_client(self, version, lines, timeout=30):
        """openssl s_client with LINES written one by one, a moment apart: it takes a
        line that starts with a command letter (R, k) as that command only when the line
        arrives alone. Returns its whole output."""
        c = self.client
        p = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{self.port}", version,
             "-cert", f"{c}/tls.crt", "-key", f"{c}/tls.key", "-CAfile", f"{c}/ca.crt"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            time.sleep(0.5)
            for line in lines:
                try:
                    p.stdin.write(line)
                    p.stdin.flush()
                except BrokenPipeError:
                    break
                time.sleep(0.01)
            time.sleep(0.5)
            try:
                out, _ = p.communicate(timeout=timeout)
            except BrokenPipeError:
                out = p.stdout.read()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        return out.decode(errors="replace")

    def test_a_client_hello_in_one_byte_segments(self):
        ctx = client_context(self.client)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing)
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(50):
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pass
                for b in outgoing.read():
                    s.send(bytes([b]))
                    time.sleep(0.001)
                incoming.write(s.recv(65536))
            tls.write(b"bytewise")
            s.sendall(outgoing.read())
            data = b""
            while b"bytewise" not in data:
                chunk = s.recv(65536)
                self.assertTrue(chunk, "closed before the echo")
                incoming.write(chunk)
                try:
                    data += tls.read(65536)
                except ssl.SSLWantReadError:
                    pass
        self.assertEqual(data, b"bytewise")

    def test_an_oversized_record_is_refused(self):
        before = prom_value(self.metrics(), 'mtlsd_handshake_failures_total{listener="in",'
                                        'reason="protocol"}')
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            # A handshake record announcing 65535 bytes: past TLS's 16 KiB + 2 KiB limit.
            s.sendall(b"\x16\x03\x01\xff\xff" + b"\x01" * 1024)
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        wait_until(lambda: prom_value(self.metrics(), 'mtlsd_handshake_failures_total{listener="in",'
                                                  'reason="protocol"}') > before,
                   timeout=10, what="the refusal counted")
        self.assert_still_serving()

    def test_renegotiation_is_refused(self):
        # "R" asks s_client to renegotiate (TLS 1.2); a BoringSSL server never accepts it.
        out = self.openssl_client("-tls1_2", [b"hello\n", b"R\n", b"after\n"])
        self.assertIn("RENEGOTIATING", out)
        self.assertRegex(out, re.compile(r"alert|errno|error", re.I))
        self.assert_still_serving()

    def test_a_key_update_storm(self):
        # Each "k" line makes s_client send a TLS 1.3 KeyUpdate.
        out = self.openssl_client("-tls1_3", [b"k\n"] * 200 + [b"after the storm\n"])
        self.assertIn("KEYUPDATE", out)
        self.assert_still_serving()
        self.assertIsNone(self.m.proc.poll())

    def test_ten_thousand_connections_of_one_byte(self):
        baseline = self.open_fds()

        def one(_):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                    s.send(b"\x16")
            except OSError:
                pass

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(one, range(10000)))
        self.assert_still_serving()
        # Every one of them is closed again: descriptors come back to where they were.
        wait_until(lambda: self.open_fds() <= baseline + 2, timeout=20,
                   what=f"descriptors back to {baseline}")
        self.assertIsNone(self.m.proc.poll())

    def test_an_upstream_reset_mid_stream(self):
        def reset_after_a_while(backend, conn):
            conn.sendall(b"partial")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

        with TempDir() as tmp:
            resetter = Backend(reset_after_a_while)
            port, admin = free_port(), free_port()
            m = Mtlsd(tmp, {
                "workers": 1, "admin": {"listen": f"127.0.0.1:{admin}"},
                "certs": {"dir": self.pki.issue("server2", spiffe_id=spiffe("server"))},
                "listeners": [{"name": "in", "mode": "inbound", "listen": f"127.0.0.1:{port}",
                               "forward": f"127.0.0.1:{resetter.port}"}]}).wait_listening()
            try:
                ctx = client_context(self.client)
                with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10)) as s:
                    s.settimeout(10)
                    data = b""
                    try:
                        while chunk := s.recv(4096):
                            data += chunk
                    except (ssl.SSLError, ConnectionResetError):
                        pass
                self.assertEqual(data, b"partial")
                entry = m.wait_access(lambda e: e.get("listener") == "in", what="the access log")
                self.assertNotEqual(entry["result"], "ok")
            finally:
                m.stop()
                resetter.close()


if __name__ == "__main__":
    unittest.main()
