"""The sandbox (issue: hardening): mtlsd and the webhook confine themselves once bound —
no_new_privs, seccomp (the kernel's own view, /proc/PID/status), Landlock where the
kernel has it — say so in /server_info and mtlsd_sandbox_active, keep relaying, reloading
and resolving names under it, and Landlock really holds: a certificate directory swapped
for a sibling still loads, one swapped for a directory elsewhere is refused while the
good set serves. "sandbox": false turns it all off. Every other integration test runs
sandboxed too, and the harness fails any test whose mtlsd reports a denied system call."""

import ctypes
import json
import os
import shutil
import socket
import unittest

from harness import (MTLSD, Backend, Mtlsd, Pki, TempDir, free_port, http_get, listening_ports,
                     run, spiffe, wait_until)


def kernel_landlock_abi():
    """The kernel's Landlock ABI (0: none), asked the way mtlsd asks."""
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
    return r if r > 0 else 0


def proc_status(pid):
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


class SandboxTest(unittest.TestCase):
    def start(self, tmp, certs, extra=None):
        admin, listen = free_port(), free_port()
        self.backend = Backend()
        cfg = {"admin": {"listen": f"127.0.0.1:{admin}"}, "certs": {"dir": certs},
               "listeners": [{"name": "out", "mode": "outbound",
                              "listen": f"127.0.0.1:{listen}",
                              "upstream": f"localhost:{self.inbound}"},
                             {"name": "in", "mode": "inbound",
                              "listen": f"127.0.0.1:{self.inbound}",
                              "forward": f"127.0.0.1:{self.backend.port}"}],
               **(extra or {})}
        m = Mtlsd(tmp, cfg, log_format="text").wait_listening(admin=True)
        self.addCleanup(self.backend.close)
        return m, listen

    def echo(self, port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"ping")
            s.shutdown(socket.SHUT_WR)
            return s.recv(100)

    def setUp(self):
        self.inbound = free_port()

    def test_confined_and_still_serving(self):
        with TempDir() as tmp:
            pki = Pki(tmp)
            certs = pki.issue("certs", spiffe_id=spiffe("web"))
            m, port = self.start(tmp, certs)
            try:
                status = proc_status(m.pid)
                self.assertEqual(status["NoNewPrivs"].strip(), "1")
                self.assertEqual(status["Seccomp"].strip(), "2")  # a filter
                info = json.loads(http_get(m.admin_url("/server_info"))[2])["sandbox"]
                self.assertIs(info["active"], True)
                self.assertIs(info["seccomp"], True)
                self.assertEqual(info["landlock_abi"], kernel_landlock_abi())
                metrics = http_get(m.admin_url("/metrics"))[2].decode()
                self.assertIn("\nmtlsd_sandbox_active 1\n", metrics)
                self.assertIn("process_open_fds", metrics)  # /proc/self still readable
                # Relaying to an upstream found by name (libuv's pool, /etc/hosts).
                self.assertEqual(self.echo(port), b"ping")
                status_code, _, body = http_get(m.admin_url("/reload"), method="POST")
                self.assertEqual(status_code, 200, body)
                self.assertIn("sandbox: confined: no_new_privs, seccomp", m.stderr())
            finally:
                self.assertEqual(m.stop(), 0)

    @unittest.skipUnless(kernel_landlock_abi() > 0, "the kernel has no Landlock")
    def test_landlock_holds_the_certificate_directory(self):
        with TempDir() as tmp:
            pki = Pki(tmp)
            os.mkdir(os.path.join(tmp, "vol"))
            v1 = pki.issue(os.path.join("vol", "certs-v1"), spiffe_id=spiffe("web"))
            link = os.path.join(tmp, "vol", "certs")
            os.symlink(v1, link)
            m, port = self.start(tmp, link)
            try:
                def swap(target):
                    tmp_link = link + ".new"
                    os.symlink(target, tmp_link)
                    os.rename(tmp_link, link)
                    return json.loads(http_get(m.admin_url("/reload"), method="POST")[2])

                # A sibling in the same parent (how the SPIFFE helper and others rotate).
                v2 = pki.issue(os.path.join("vol", "certs-v2"), spiffe_id=spiffe("web"))
                self.assertEqual(swap(v2)["generation"], 2)
                # A directory elsewhere is out of the sandbox: refused, the good set serves.
                elsewhere = pki.issue("elsewhere", spiffe_id=spiffe("web"))
                result = swap(elsewhere)
                self.assertEqual(result["result"], "failed")
                self.assertIn("Permission denied", result["error"])
                self.assertEqual(result["generation"], 2)
                self.assertEqual(self.echo(port), b"ping")
            finally:
                self.assertEqual(m.stop(), 0)

    def test_sandbox_false_turns_it_off(self):
        with TempDir() as tmp:
            certs = Pki(tmp).issue("certs", spiffe_id=spiffe("web"))
            m, port = self.start(tmp, certs, {"sandbox": False})
            try:
                self.assertEqual(proc_status(m.pid)["Seccomp"].strip(), "0")
                info = json.loads(http_get(m.admin_url("/server_info"))[2])["sandbox"]
                self.assertIs(info["active"], False)
                self.assertIn("\nmtlsd_sandbox_active 0\n",
                              http_get(m.admin_url("/metrics"))[2].decode())
                self.assertIn('sandbox: off ("sandbox": false)', m.stderr())
                self.assertEqual(self.echo(port), b"ping")
                self.assertIs(json.loads(http_get(m.admin_url("/config"))[2])["sandbox"], False)
            finally:
                self.assertEqual(m.stop(), 0)
        r = run([MTLSD, "check", "--config", "/dev/stdin"], check=False,
                input=json.dumps({"sandbox": "yes", "listeners": [
                    {"name": "o", "mode": "outbound", "listen": "127.0.0.1:1",
                     "upstream": "127.0.0.1:2"}]}))
        self.assertEqual(r.returncode, 2)
        self.assertIn("sandbox: expected a boolean", r.stderr)

    def test_the_webhook_is_confined(self):
        with TempDir() as tmp:
            certs = Pki(tmp).issue("webhook", dns=["mtlsd-webhook.mtlsd-system.svc"])
            port = free_port()
            wh = Mtlsd(tmp, {}, name="webhook", log_format="text",
                       command=("webhook", "--listen", f"127.0.0.1:{port}", "--certs", certs))
            try:
                wait_until(lambda: port in listening_ports(wh.pid), timeout=15,
                           what="the webhook listening")
                wait_until(lambda: "sandbox: confined" in wh.stderr(), timeout=10,
                           what="the webhook confined")
                status = proc_status(wh.pid)
                self.assertEqual(status["Seccomp"].strip(), "2")
                self.assertEqual(status["NoNewPrivs"].strip(), "1")
                # A certificate rotation under the sandbox.
                shutil.rmtree(certs)
                shutil.copytree(Pki(tmp, name="ca2").issue("next", dns=["x.example"]), certs)
                wait_until(lambda: "loaded generation 2" in wh.stderr(), timeout=20,
                           what="the rotated certificate loaded")
            finally:
                self.assertEqual(wh.stop(timeout=20), 0)


if __name__ == "__main__":
    unittest.main()
