"""The command line (the README, Command line): exit codes, usage errors, check, version, and the
configuration error contract (one precise line, exit 2, nothing bound)."""

import json
import os
import signal
import subprocess
import unittest

from harness import (MTLSD, Mtlsd, Pki, TempDir, free_port, listening_ports, spiffe,
                     wait_until)


def mtlsd(*args, timeout=30, config_env=None):
    """Runs mtlsd; |config_env| (a string) becomes MTLSD_CONFIG, which is never inherited
    from the test's own environment."""
    env = {k: v for k, v in os.environ.items() if k != "MTLSD_CONFIG"}
    if config_env is not None:
        env["MTLSD_CONFIG"] = config_env
    return subprocess.run([MTLSD, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


class CliTest(unittest.TestCase):
    def setUp(self):
        self._tmp = TempDir()
        self.tmp = self._tmp.__enter__()

    def tearDown(self):
        self._tmp.__exit__(None, None, None)

    def write_config(self, cfg, name="config.json"):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(cfg if isinstance(cfg, str) else json.dumps(cfg))
        return path

    def good_config(self, cert_dir=None):
        return {"certs": {"dir": cert_dir or os.path.join(self.tmp, "no-certs")},
                "admin": {"listen": f"127.0.0.1:{free_port()}"},
                "listeners": [{"name": "api", "mode": "inbound",
                               "listen": f"127.0.0.1:{free_port()}",
                               "forward": "127.0.0.1:8080"}]}

    def test_version_names_the_libraries(self):
        r = mtlsd("version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^mtlsd \d+\.\d+\.\d+\n")
        self.assertIn("BoringSSL", r.stdout)
        self.assertIn("libuv 1.", r.stdout)
        self.assertIn("cJSON 1.", r.stdout)

    def test_no_arguments_is_a_usage_error(self):
        r = mtlsd()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage:", r.stderr)

    def test_unknown_command_and_flags(self):
        for args in (["frobnicate"], ["run", "--config", "x", "--bogus"],
                     ["check", "--nope"], ["run"], ["check"], ["version", "extra"],
                     ["run", "--config", "x", "--log-level", "loud"],
                     ["run", "--config", "x", "--log-format", "xml"],
                     ["cert"], ["cert", "frob"]):
            with self.subTest(args=args):
                r = mtlsd(*args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertTrue(r.stderr.strip())

    def test_help(self):
        for args in (["--help"], ["help"], ["run", "--help"], ["check", "--help"],
                     ["cert", "--help"]):
            with self.subTest(args=args):
                r = mtlsd(*args)
                self.assertEqual(r.returncode, 0)
                self.assertIn("usage", r.stdout.lower())

    def test_check_good_config_without_certificates(self):
        path = self.write_config(self.good_config())
        r = mtlsd("check", "--config", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok", r.stdout)
        self.assertIn("none in", r.stdout)

    def test_check_good_config_with_certificates(self):
        pki = Pki(self.tmp)
        d = pki.issue("pod", spiffe("api"))
        r = mtlsd("check", "--config", self.write_config(self.good_config(d)))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(spiffe("api"), r.stdout)

    def test_check_bad_certificates_exits_1(self):
        pki = Pki(self.tmp)
        d = pki.issue("pod", spiffe("api"))
        other = pki.issue("other", spiffe("other"))
        os.replace(os.path.join(other, "tls.key"), os.path.join(d, "tls.key"))
        r = mtlsd("check", "--config", self.write_config(self.good_config(d)))
        self.assertEqual(r.returncode, 1)
        self.assertIn("tls.key does not match tls.crt", r.stderr)

    def test_check_bad_config_exits_2_with_one_precise_line(self):
        cfg = self.good_config()
        cfg["listeners"][0]["listen"] = "0.0.0.0:99999"
        path = self.write_config(cfg)
        r = mtlsd("check", "--config", path)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr,
                         f'{path}: listeners[0].listen: "0.0.0.0:99999": port out of range\n')

    def test_config_from_the_environment(self):
        cfg = self.good_config()
        r = mtlsd("check", config_env=json.dumps(cfg))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("MTLSD_CONFIG: configuration ok: 1 listener"),
                        r.stdout)
        # Errors name the variable where they would name the file, with the same strictness.
        cfg["listeners"][0]["listen"] = "0.0.0.0:99999"
        r = mtlsd("check", config_env=json.dumps(cfg))
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr,
                         'MTLSD_CONFIG: listeners[0].listen: "0.0.0.0:99999": port out of range\n')
        r = mtlsd("check", config_env='{"listners": []}')
        self.assertEqual(r.returncode, 2)
        self.assertEqual(r.stderr,
                         'MTLSD_CONFIG: listners: unknown key (did you mean "listeners"?)\n')
        r = mtlsd("run", config_env="{")
        self.assertEqual(r.returncode, 2)
        self.assertTrue(r.stderr.startswith("MTLSD_CONFIG: "), r.stderr)
        r = mtlsd("run", config_env="")
        self.assertEqual(r.returncode, 2)
        self.assertIn("MTLSD_CONFIG is set but empty", r.stderr)

    def test_environment_replaces_the_config_file(self):
        """The image's default command names its built-in file; an injected pod's
        MTLSD_CONFIG must win over it, and the log says so."""
        file_cfg = self.good_config()
        file_cfg["listeners"][0]["listen"] = "0.0.0.0:99999"  # would fail if it were read
        r = mtlsd("check", "--config", self.write_config(file_cfg),
                  config_env=json.dumps(self.good_config()))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration from MTLSD_CONFIG, which replaces --config", r.stderr)

    def test_neither_config_nor_environment_is_a_usage_error(self):
        for cmd in ("run", "check"):
            r = mtlsd(cmd)
            self.assertEqual(r.returncode, 2)
            self.assertIn("--config FILE or the environment variable MTLSD_CONFIG is required",
                          r.stderr)

    def test_wait_ready_holds_until_the_sidecar_is_ready(self):
        """The postStart hook of a sidecar that is not native (docs/injection.md)."""
        pki = Pki(self.tmp)
        cfg = self.good_config()
        admin = cfg["admin"]["listen"]
        m = Mtlsd(self.tmp, cfg)
        try:
            m.wait_listening(admin=True)
            r = mtlsd("wait-ready", "--admin", admin, "--timeout", "600ms")
            self.assertEqual(r.returncode, 1)
            self.assertIn("not ready after", r.stderr)
            self.assertIn("no valid certificate loaded", r.stderr)
        finally:
            self.assertEqual(m.stop(), 0)
        cfg = self.good_config(cert_dir=pki.issue("api", spiffe("api")))
        m = Mtlsd(self.tmp, cfg, name="ready")
        try:
            r = mtlsd("wait-ready", "--admin", cfg["admin"]["listen"], "--timeout", "20s")
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            self.assertEqual(m.stop(), 0)
        r = mtlsd("wait-ready", "--admin", "localhost:1")
        self.assertEqual(r.returncode, 2)

    def test_missing_config_file(self):
        path = os.path.join(self.tmp, "absent.json")
        r = mtlsd("check", "--config", path)
        self.assertEqual(r.returncode, 2)
        self.assertIn(path, r.stderr)

    def test_run_with_bad_config_binds_nothing(self):
        cfg = self.good_config()
        port = int(cfg["listeners"][0]["listen"].rsplit(":", 1)[1])
        cfg["listeners"].append({"name": "api", "mode": "inbound", "listen": "127.0.0.1:1",
                                 "forward": "127.0.0.1:8080"})
        r = mtlsd("run", "--config", self.write_config(cfg), timeout=10)
        self.assertEqual(r.returncode, 2)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("listeners[1].name", r.stderr)
        self.assertNotIn(port, listening_ports())

    def test_run_is_the_default_command_and_sigint_exits_0(self):
        cfg = self.good_config()
        path = self.write_config(cfg)
        proc = subprocess.Popen([MTLSD, "--config", path], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            port = int(cfg["listeners"][0]["listen"].rsplit(":", 1)[1])
            wait_until(lambda: port in listening_ports(), what="the listener")
            proc.send_signal(signal.SIGINT)
            self.assertEqual(proc.wait(timeout=15), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def test_bind_failure_is_a_runtime_error(self):
        cfg = self.good_config()
        busy = cfg["listeners"][0]["listen"]
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", int(busy.rsplit(":", 1)[1])))
            s.listen(1)
            r = mtlsd("run", "--config", self.write_config(cfg), timeout=15)
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot listen on", r.stderr)

    def test_json_logs_are_json(self):
        cfg = self.good_config()
        m = Mtlsd(self.tmp, cfg, log_format="json").wait_listening()
        self.assertEqual(m.stop(), 0)
        lines = [l for l in m.stderr().splitlines() if l.strip()]
        self.assertTrue(lines)
        for line in lines:
            entry = json.loads(line)
            self.assertIn(entry["level"], ("debug", "info", "warn", "error"))
            self.assertIn("msg", entry)


if __name__ == "__main__":
    unittest.main()
