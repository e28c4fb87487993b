"""The image (docs/injection.md): built offline from deploy/Dockerfile, it runs as 1337 with
a read-only root and no capabilities, holds iptables for the init container, serves
its built-in configuration unless MTLSD_CONFIG replaces it, and runs the admission
webhook as the Helm chart does."""

import base64
import http.client
import json
import ssl
import subprocess
import sys
import time
import unittest

from image import BASE, RUN_LIMITS, TAG, ensure_image, image_size_bytes, podman
from harness import Pki, TempDir, free_port, wait_until

# How the kubelet would run the sidecar: read-only, nothing to escalate with.
LOCKED_DOWN = ["--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges",
               *RUN_LIMITS]


class ImageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.build_seconds = ensure_image()
        sys.stderr.write(f"\n[image] {TAG}: {image_size_bytes() / 1e6:.1f} MB "
                         f"({(image_size_bytes() - image_size_bytes(BASE)) / 1e6:.1f} MB over "
                         f"the base), ready in {cls.build_seconds:.0f} s\n")

    def run_image(self, *args, entrypoint=None, extra=()):
        opts = ["run", "--rm", "--network=none", *LOCKED_DOWN, *extra]
        if entrypoint:
            opts += ["--entrypoint", entrypoint]
        return podman(*opts, TAG, *args, check=False, timeout=120)

    def test_runs_read_only_without_capabilities_as_1337(self):
        r = self.run_image("version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("mtlsd "), r.stdout)
        self.assertIn("BoringSSL", r.stdout)
        r = self.run_image("-u", entrypoint="/usr/bin/id")
        self.assertEqual(r.stdout.strip(), "1337")
        r = self.run_image("-g", entrypoint="/usr/bin/id")
        self.assertEqual(r.stdout.strip(), "1337")
        # No capability is left, effective or bounding.
        r = self.run_image("-E", "CapEff|CapBnd", "/proc/self/status", entrypoint="/bin/grep")
        for line in r.stdout.splitlines():
            self.assertTrue(line.endswith("0000000000000000"), line)

    def test_the_built_in_configuration_checks(self):
        r = self.run_image("check")
        self.assertEqual(r.returncode, 2, "check without --config is a usage error")
        r = self.run_image("check", "--config", "/etc/mtlsd/sidecar.json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("configuration ok: 3 listeners", r.stdout)
        self.assertIn("certificates: none in /var/run/mtlsd/certs yet", r.stdout)

    def test_holds_iptables_for_the_init_container(self):
        for tool in ("iptables-restore", "ip6tables-restore", "iptables-nft-restore",
                     "iptables-legacy-restore", "ip6tables-nft-restore",
                     "ip6tables-legacy-restore"):
            r = self.run_image("-c", f"command -v {tool}", entrypoint="/bin/sh")
            self.assertEqual(r.returncode, 0, f"{tool} is missing from the image")
        r = self.run_image("iptables", "--print", "--health-port", "15020")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("--dport 15020", r.stdout)

    def serve(self, env=()):
        """Starts the default command detached; returns its logs once it serves."""
        name = f"mtlsd-image-test-{time.monotonic_ns()}"
        opts = ["run", "-d", "--name", name, "--network=none", *LOCKED_DOWN]
        for e in env:
            opts += ["-e", e]
        podman(*opts, TAG)
        try:
            wait_until(lambda: "serving" in podman("logs", name, check=False).stderr,
                       timeout=30, what="the sidecar to serve")
            return podman("logs", name).stderr
        finally:
            podman("stop", "-t", "10", name, check=False)
            podman("rm", "-f", name, check=False)

    def test_default_command_serves_the_built_in_configuration(self):
        logs = self.serve()
        self.assertIn("serving 3 listeners", logs)
        self.assertIn("health: listening on 0.0.0.0:15020", logs)

    def test_mtlsd_config_replaces_the_built_in_configuration(self):
        cfg = {"health": {"listen": "0.0.0.0:15020"},
               "listeners": [{"name": "in", "mode": "inbound", "listen": "0.0.0.0:15006",
                              "transparent": True, "permissive": True}]}
        logs = self.serve(env=[f"MTLSD_CONFIG={json.dumps(cfg)}"])
        self.assertIn("configuration from MTLSD_CONFIG, which replaces --config", logs)
        self.assertIn("serving 1 listeners", logs)

    def test_the_webhook_serves_from_the_image(self):
        """`mtlsd webhook` as the chart's Deployment runs it: read-only, no capabilities,
        UID 1337, the serving certificate from a read-only volume. The container shares
        the host's network only to listen on 127.0.0.1."""
        with TempDir() as tmp:
            pki = Pki(tmp)
            certs = pki.issue("webhook", dns=["mtlsd-webhook.mtlsd-system.svc"])
            # As a Secret volume with fsGroup would: readable by the container's user.
            subprocess.run(["chown", "-R", "1337:1337", certs], check=True)
            port = free_port()
            name = f"mtlsd-webhook-test-{time.monotonic_ns()}"
            podman("run", "-d", "--name", name, "--network=host", *LOCKED_DOWN,
                   "-v", f"{certs}:/certs:ro", TAG, "webhook", "--listen",
                   f"127.0.0.1:{port}", "--certs", "/certs")
            try:
                ctx = ssl.create_default_context(cafile=pki.ca_crt)
                ctx.check_hostname = False

                def post():
                    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
                    try:
                        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                               "spec": {"containers": [{"name": "app", "image": "busybox"}]}}
                        conn.request("POST", "/inject", body=json.dumps({
                            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": {"uid": "u-1", "operation": "CREATE",
                                        "namespace": "shop", "object": pod}}))
                        return json.loads(conn.getresponse().read())["response"]
                    finally:
                        conn.close()

                def answers():
                    try:
                        return post()
                    except OSError:
                        return None

                response = wait_until(answers, timeout=30, what="the webhook to answer")
                self.assertEqual(response["uid"], "u-1")
                patch = json.loads(base64.b64decode(response["patch"]))
                self.assertIn("/spec/initContainers", [op["path"] for op in patch])
                podman("stop", "-t", "15", name)
                state = podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
                self.assertEqual(state, "0", podman("logs", name, check=False).stderr)
                logs = podman("logs", name).stderr
                self.assertIn("listening on 127.0.0.1:", logs)
                self.assertIn("drained; exiting", logs)
            finally:
                podman("rm", "-f", name, check=False)


if __name__ == "__main__":
    unittest.main()
