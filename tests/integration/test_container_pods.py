"""End to end with real containers from the image, the way the kubelet runs an injected
pod: two network namespaces joined by a veth (TEST-NET addresses), and in each the init
container (UID 0, only NET_ADMIN and NET_RAW, `mtlsd iptables --apply`), then the sidecar
container (the image's user, read-only root, no capabilities, its built-in configuration,
the certificates mounted read-only in the kubelet's `..data` layout and readable by group
1337), and an application process. The app in pod A reaches the app in pod B by its IP;
the veth carries TLS and none of the app's bytes; the kubelet's probe through port 15020
reaches B's app; a certificate rotation by a `..data` swap is taken up by the read-only
sidecar while a connection stays open."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import unittest

from harness import Pki, PodPairCase, sh, spiffe, wait_until
from image import RUN_LIMITS, TAG, ensure_image, podman

PROXY_GID = 1337
A4, B4 = "198.51.100.11", "198.51.100.12"
ECHO_PORT, HTTP_PORT = 8080, 8081

# The app in pod B: an echo server, and an HTTP health endpoint for its kubelet probe.
APP = r"""
import http.server, socket, sys, threading
def echo():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", %d)); s.listen(64)
    while True:
        c, _ = s.accept()
        def serve(c=c):
            with c:
                while True:
                    d = c.recv(65536)
                    if not d: return
                    c.sendall(d)
        threading.Thread(target=serve, daemon=True).start()
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
threading.Thread(target=echo, daemon=True).start()
http.server.ThreadingHTTPServer(("0.0.0.0", %d), Health).serve_forever()
""" % (ECHO_PORT, HTTP_PORT)

# A client of pod A's app that keeps one connection open: it sends each line of its stdin
# and prints the echo, so that the test can talk before and after a rotation.
CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
for line in sys.stdin:
    data = line.encode(); s.sendall(data)
    got = b""
    while len(got) < len(data):
        d = s.recv(65536)
        if not d: break
        got += d
    sys.stdout.write(got.decode()); sys.stdout.flush()
"""



def kubelet_volume(path, files):
    """Writes FILES (name -> bytes) the way the kubelet's atomic writer does: into a new
    timestamped directory, then `..data` is swapped to it in one rename, and each name is
    a symlink through `..data`. Files are mode 0440, group 1337 (the pod's fsGroup)."""
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o755)
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    new = os.path.join(path, stamp)
    os.mkdir(new)
    os.chmod(new, 0o755)
    for name, data in files.items():
        target = os.path.join(new, name)
        with open(target, "wb") as f:
            f.write(data)
        os.chown(target, 0, PROXY_GID)
        os.chmod(target, 0o440)
    old = os.path.realpath(os.path.join(path, "..data")) if os.path.islink(
        os.path.join(path, "..data")) else None
    tmp_link = os.path.join(path, "..data_tmp")
    os.symlink(stamp, tmp_link)
    os.rename(tmp_link, os.path.join(path, "..data"))
    for name in files:
        link = os.path.join(path, name)
        if not os.path.islink(link):
            os.symlink(os.path.join("..data", name), link)
    if old is not None:
        for f in os.listdir(old):
            os.unlink(os.path.join(old, f))
        os.rmdir(old)


def read_set(cert_dir):
    files = {}
    for name in ("tls.crt", "tls.key", "ca.crt"):
        with open(os.path.join(cert_dir, name), "rb") as f:
            files[name] = f.read()
    return files


class ContainerPodsTest(PodPairCase):
    NS_PREFIX = "mtlsd-c"
    VETH_PREFIX = "cv"
    ADDRS = {"a": [f"{A4}/24"], "b": [f"{B4}/24"]}

    @classmethod
    def setUpClass(cls):
        ensure_image()
        cls.ip = {"a": A4, "b": B4}
        cls.containers = []
        super().setUpClass()

    @classmethod
    def start_pods(cls):
        cls.pki = Pki(cls.tmp)
        cls.volume = {}
        for pod in "ab":
            issued = cls.pki.issue(f"issued-{pod}", spiffe(pod))
            cls.volume[pod] = os.path.join(cls.tmp, f"volume-{pod}")
            kubelet_volume(cls.volume[pod], read_set(issued))

        app_py = os.path.join(cls.tmp, "app.py")
        with open(app_py, "w") as f:
            f.write(APP)
        cls.procs.append(subprocess.Popen(cls.netns("b", sys.executable, app_py)))
        cls.client_py = os.path.join(cls.tmp, "client.py")
        with open(cls.client_py, "w") as f:
            f.write(CLIENT)

        probes = {"app/livez": {"httpGet": {"path": "/healthz", "port": HTTP_PORT}},
                  "app/readyz": {"tcpSocket": {"port": ECHO_PORT}}}
        for pod in "ab":
            # The init container: root, only NET_ADMIN and NET_RAW, no escalation.
            podman("run", "--rm", f"--network=ns:/run/netns/{cls.ns[pod]}", "--user", "0:0",
                   "--cap-drop=ALL", "--cap-add=NET_ADMIN", "--cap-add=NET_RAW",
                   "--security-opt", "no-new-privileges", *RUN_LIMITS, TAG,
                   "iptables", "--apply", "--health-port", "15020")
            # The sidecar: the image's user, read-only, no capabilities, built-in config.
            name = f"mtlsd-sidecar-{pod}-{os.getpid()}"
            podman("run", "-d", "--name", name, f"--network=ns:/run/netns/{cls.ns[pod]}",
                   "--read-only", "--cap-drop=ALL", "--security-opt", "no-new-privileges",
                   *RUN_LIMITS, "-v", f"{cls.volume[pod]}:/var/run/mtlsd/certs:ro",
                   "-e", f"POD_IP={cls.ip[pod]}", "-e", f"MTLSD_APP_PROBES={json.dumps(probes)}",
                   TAG)
            cls.containers.append(name)
        for pod in "ab":
            wait_until(lambda pod=pod: cls.admin(pod, "/ready") == "ready\n", timeout=30,
                       what=f"the sidecar of pod {pod} to be ready")
        wait_until(lambda: f":{ECHO_PORT}" in sh(*cls.netns("b", "ss", "-ltn")).stdout,
                   what="the app in pod B")

    @classmethod
    def admin(cls, pod, path):
        r = sh(*cls.netns(pod, "curl", "-s", "--max-time", "5", f"http://127.0.0.1:15000{path}"),
               check=False)
        return r.stdout

    @classmethod
    def stop_pods(cls):
        errors = []
        for name in getattr(cls, "containers", []):
            logs = podman("logs", name, check=False)
            text = logs.stdout + logs.stderr
            if re.search(r"Z error +\w+:", text):
                errors.append(f"{name} logged an error:\n{text[-3000:]}")
            podman("stop", "-t", "10", name, check=False)
            podman("rm", "-f", name, check=False)
        for p in getattr(cls, "procs", []):
            p.kill()
            p.wait(timeout=10)
        return errors

    def open_client(self):
        p = subprocess.Popen(self.netns("a", sys.executable, self.client_py, B4, str(ECHO_PORT)),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

        def stop():
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for pipe in (p.stdin, p.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass

        self.addCleanup(stop)
        return p

    def talk(self, client, line):
        client.stdin.write(line + "\n")
        client.stdin.flush()
        return client.stdout.readline()

    def test_apps_talk_by_ip_and_the_veth_carries_only_tls(self):
        pcap = os.path.join(self.tmp, "veth.pcap")
        cap = subprocess.Popen(self.netns("a", "tcpdump", "--immediate-mode", "-Z", "root",
                                          "-i", self.veth["a"], "-U", "-s", "0", "-w", pcap,
                                          "tcp"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(lambda: os.path.exists(pcap) and os.path.getsize(pcap) > 0,
                   what="tcpdump to start")
        time.sleep(0.2)
        marker = f"APP-BYTES-{time.monotonic_ns()}"
        client = self.open_client()
        self.assertEqual(self.talk(client, marker), marker + "\n")
        client.stdin.close()
        client.wait(timeout=10)
        time.sleep(0.3)
        cap.send_signal(signal.SIGINT)
        cap.communicate(timeout=10)
        with open(pcap, "rb") as f:
            captured = f.read()
        self.assertGreater(len(captured), 500, "the capture saw no traffic")
        self.assertNotIn(marker.encode(), captured)
        self.assertIn(b"\x16\x03\x01", captured, "no TLS handshake record on the veth")
        # Pod B's sidecar verified pod A's identity and logged it.
        logs = podman("logs", self.containers[1]).stdout
        self.assertIn(spiffe("a"), logs)

    def kubelet(self, *curl_args):
        """curl as the kubelet runs its probes: from outside every pod's interception (pod
        A's network, as the proxy's UID, which A's rules let through; a meshed pod's own
        call to another pod's port 15020 is intercepted like any other)."""
        return sh(*self.netns("a", "setpriv", "--reuid=1337", "--regid=1337", "--clear-groups",
                              "curl", "-s", "--max-time", "5", *curl_args))

    def test_the_kubelet_probe_reaches_the_app_through_the_health_port(self):
        for kind, want in (("livez", "ok: HTTP 200"), ("readyz", "ok: connected to")):
            r = self.kubelet(f"http://{B4}:15020/app-health/app/{kind}")
            self.assertTrue(r.stdout.startswith(want), r.stdout)
        r = self.kubelet("-o", "/dev/null", "-w", "%{http_code}", f"http://{B4}:15020/ready")
        self.assertEqual(r.stdout, "200")
        # The health port is read-only from outside: no /config, no POST.
        r = self.kubelet("-o", "/dev/null", "-w", "%{http_code}", f"http://{B4}:15020/config")
        self.assertEqual(r.stdout, "404")

    def test_a_rotation_by_data_swap_is_taken_up_with_traffic_flowing(self):
        generation = json.loads(self.admin("b", "/certs"))["generation"]
        client = self.open_client()
        self.assertEqual(self.talk(client, "before"), "before\n")
        rotated = self.pki.issue(f"rotated-b-{time.monotonic_ns()}", spiffe("b"))
        kubelet_volume(self.volume["b"], read_set(rotated))
        wait_until(lambda: json.loads(self.admin("b", "/certs"))["generation"] > generation,
                   timeout=15, what="pod B's sidecar to load the rotated set")
        # The connection opened before the rotation still flows; a new one uses the new set.
        self.assertEqual(self.talk(client, "after"), "after\n")
        fresh = self.open_client()
        self.assertEqual(self.talk(fresh, "new"), "new\n")
        certs = json.loads(self.admin("b", "/certs"))
        self.assertEqual(certs["last_reload"]["result"], "ok")


if __name__ == "__main__":
    unittest.main()
