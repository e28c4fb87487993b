"""Shared helpers for the integration tests: certificates, mtlsd processes, backends.

Everything binds 127.0.0.1 only; every process started here is stopped by its PID; every
wait is bounded in time. Python's standard library only (PyPI is not reachable here).
"""

import atexit
import fcntl
import hashlib
import json
import os
import re
import random
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

MTLSD = os.environ.get("MTLSD_BIN", "mtlsd")
# The release build of tests/run.sh, for figures the sanitizers would distort (memory).
RELEASE_BIN = os.environ.get("MTLSD_RELEASE_BIN", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build", "gcc", "mtlsd"))
# The injector excludes the cluster's API server named here: tests that run inside a pod
# must see the same output as those that do not (test_inject sets it where it tests it).
os.environ.pop("KUBERNETES_SERVICE_HOST", None)
TRUST_DOMAIN = "cluster.local"

# Enough descriptors for the 1,000-connection tests (each side holds one per connection).
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft < min(65536, _hard):
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, _hard), _hard))

# A system call the sandbox denied is a finding too: its allow-list missed a path.
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer",
                     "sandbox: denied system call")


_PORT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "mtlsd-test-ports")
_port_locks = {}  # port -> the open lock file, held for the life of this process


@atexit.register
def _release_ports():
    for lock in _port_locks.values():
        lock.close()


def _reserved_range():
    """Ports below the kernel's ephemeral range, so that no outgoing connection (of a
    test, mtlsd or a peer) is given one of them while a test means to listen on it."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return 10000, max(10001, min(low, 32768))


def free_port():
    """A TCP port on 127.0.0.1 that is free and that no other test process hands out.

    Binding port 0 and passing the number on races under `ctest -j`: another process can
    be given the same port before mtlsd binds it. Instead every port handed out is locked
    (flock on a file named after it) for the life of the process that took it, and taken
    from outside the ephemeral range."""
    os.makedirs(_PORT_LOCK_DIR, exist_ok=True)
    low, high = _reserved_range()
    start = random.randrange(low, high)
    for i in range(high - low):
        port = low + (start - low + i) % (high - low)
        if port in _port_locks:
            continue
        lock = open(os.path.join(_PORT_LOCK_DIR, str(port)), "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                lock.close()
                continue
        _port_locks[port] = lock
        return port
    raise RuntimeError(f"no free port in {low}-{high}")


def listening_ports(pid=None):
    """The TCP ports in the LISTEN state in this network namespace, or in PID's."""
    ports = set()
    base = f"/proc/{pid}/net" if pid else "/proc/net"
    for path in (f"{base}/tcp", f"{base}/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


# TCP states (include/net/tcp_states.h) of a server's socket that still holds one of its
# connection slots, or will once accepted: established, half-open, closed by the peer.
_SERVER_HELD_STATES = {"01", "03", "08"}


def server_sockets(port):
    """How many connections to local PORT this namespace's server side still holds
    (accepted or waiting in the backlog, the peer's close not yet handled)."""
    count = 0
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if (int(fields[1].rsplit(":", 1)[1], 16) == port
                            and fields[3] in _SERVER_HELD_STATES):
                        count += 1
        except FileNotFoundError:
            pass
    return count


class Flood:
    """An attacker's flood of 127.0.0.1:PORT (flood.py, in a process of its own) as a
    context manager: it holds PER_SOURCE connections of SHAPE from each of SOURCES
    addresses 127.0.0.FIRST on, renewing each as soon as the server closes it, until the
    block ends; `summary` then says how many it opened and the server closed."""

    def __init__(self, port, shape, path="/", first=1, sources=1, per_source=1, tls=False):
        self.args = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "flood.py"),
                     str(port), shape, path, str(first), str(sources), str(per_source), "300",
                     *(["tls"] if tls else [])]
        self.summary = ""

    def __enter__(self):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("holding"):
            self.__exit__()
            raise AssertionError(f"the flood did not start: {line!r}")
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.summary = self.proc.stdout.read().strip()
        self.proc.wait(timeout=60)


class MemoryCgroup:
    """A memory cgroup of its own with LIMIT bytes, for a process that must live within
    a container's memory limit: cgroup v2 (memory.max) where it is mounted with the memory
    controller, else v1 (memory.limit_in_bytes). add(pid) moves a process in; oom_kills()
    says how many the kernel killed for the limit."""

    def __init__(self, limit):
        self.path = None
        for root, limit_file in (("/sys/fs/cgroup", "memory.max"),
                                 ("/sys/fs/cgroup/unified", "memory.max"),
                                 ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")):
            controllers = os.path.join(root, "cgroup.controllers")
            v2 = limit_file == "memory.max"
            if v2 and not (os.path.exists(controllers) and "memory" in open(controllers).read()):
                continue
            if not v2 and not os.path.exists(os.path.join(root, limit_file)):
                continue
            path = os.path.join(root, f"mtlsd-test-{os.getpid()}-{time.monotonic_ns()}")
            os.mkdir(path)
            with open(os.path.join(path, limit_file), "w") as f:
                f.write(str(limit))
            self.path, self.v2 = path, v2
            return
        raise AssertionError("no memory cgroup controller to test a memory limit with")

    def add(self, pid):
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def oom_kills(self):
        name = "memory.events" if self.v2 else "memory.oom_control"
        with open(os.path.join(self.path, name)) as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
        return 0

    def peak(self):
        """The most memory the cgroup held (bytes), where the kernel says."""
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        try:
            with open(os.path.join(self.path, name)) as f:
                return int(f.read().split()[0])
        except FileNotFoundError:
            return 0

    def remove(self):
        if self.path is not None:
            for _ in range(100):
                try:
                    os.rmdir(self.path)
                    return
                except OSError:
                    time.sleep(0.05)  # Its last process is still exiting.


def spiffe(sa, ns="default", td=TRUST_DOMAIN):
    return f"spiffe://{td}/ns/{ns}/sa/{sa}"


def wait_until(predicate, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def run(args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=60, **kw)


class Pki:
    """A development CA in a temporary directory, made with `mtlsd cert`."""

    def __init__(self, root, name="ca", trust_domain=TRUST_DOMAIN):
        self.root = root
        self.ca_dir = os.path.join(root, name)
        run([MTLSD, "cert", "ca", "--out", self.ca_dir, "--trust-domain", trust_domain])

    @property
    def ca_crt(self):
        return os.path.join(self.ca_dir, "ca.crt")

    def issue(self, name, spiffe_id=None, dns=(), extra=()):
        """Issues a leaf into ROOT/NAME (tls.crt, tls.key, ca.crt); returns the dir."""
        out = os.path.join(self.root, name)
        args = [MTLSD, "cert", "issue", "--ca", self.ca_dir, "--out", out]
        if spiffe_id:
            args += ["--spiffe-id", spiffe_id]
        for d in dns:
            args += ["--dns", d]
        run(args + list(extra))
        return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


def cert_files(cert_dir, ca=None):
    """The three files of an issued leaf; CA replaces its ca.crt (bytes)."""
    return {
        "tls.crt": read(os.path.join(cert_dir, "tls.crt")),
        "tls.key": read(os.path.join(cert_dir, "tls.key")),
        "ca.crt": ca if ca is not None else read(os.path.join(cert_dir, "ca.crt")),
    }


class AtomicWriter:
    """What the kubelet does to a Secret volume: every update goes to a new timestamped
    directory, a `..data_tmp` symlink to it is renamed over `..data`, the visible names
    are symlinks through `..data`, and the previous timestamped directory is removed."""

    def __init__(self, target):
        self.target = target
        os.makedirs(target, exist_ok=True)
        self.current = None
        self.count = 0

    def write(self, files):
        """Publishes FILES ({name: bytes}); returns time.monotonic() right after the
        rename that makes them visible."""
        self.count += 1
        now = time.time()
        ts = time.strftime("..%Y_%m_%d_%H_%M_%S", time.gmtime(now))
        ts += ".%09d" % ((int(now * 1e9) + self.count) % 1000000000)
        ts_dir = os.path.join(self.target, ts)
        os.mkdir(ts_dir, 0o755)
        for name, data in files.items():
            with open(os.path.join(ts_dir, name), "wb") as f:
                f.write(data)
        tmp = os.path.join(self.target, "..data_tmp")
        os.symlink(ts, tmp)
        os.rename(tmp, os.path.join(self.target, "..data"))
        swapped = time.monotonic()
        for name in files:
            link = os.path.join(self.target, name)
            if not os.path.lexists(link):
                os.symlink(os.path.join("..data", name), link)
        if self.current is not None:
            shutil.rmtree(os.path.join(self.target, self.current))
        self.current = ts
        return swapped


def client_context(cert_dir=None, ca_file=None, verify=True):
    """A Python (OpenSSL) TLS client context presenting CERT_DIR's certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if verify and (ca_file or cert_dir):
        ctx.load_verify_locations(ca_file or os.path.join(cert_dir, "ca.crt"))
    else:
        ctx.verify_mode = ssl.CERT_NONE
    if cert_dir:
        ctx.load_cert_chain(os.path.join(cert_dir, "tls.crt"), os.path.join(cert_dir, "tls.key"))
    return ctx


class Mtlsd:
    """One mtlsd process with a JSON config; stdout (the access log) and stderr go to
    files, and a sanitizer report in either fails stop()."""

    def __init__(self, workdir, config, name="mtlsd", log_format="json", extra_args=(),
                 nofile=None, prefix=(), env=None, command=("run",), binary=None):
        """COMMAND is the mtlsd command that CONFIG (written to a file) is the --config
        of: `run` by default, or e.g. ("webhook", "--listen", ADDR, "--certs", DIR).
        BINARY replaces the mtlsd under test (MTLSD_BIN), e.g. with the release build."""
        self.workdir = workdir
        self.name = name
        self.config = config
        self.config_path = os.path.join(workdir, f"{name}.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)
        self.stdout_path = os.path.join(workdir, f"{name}.stdout")
        self.stderr_path = os.path.join(workdir, f"{name}.stderr")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        # PREFIX (e.g. ip netns exec NS setpriv ...) must exec, so that the PID is mtlsd's.
        self.proc = subprocess.Popen(
            [*prefix, binary or MTLSD, *command, "--config", self.config_path, "--log-format",
             log_format,
             "--log-level", "debug", *extra_args],
            stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
            env={**os.environ, **env} if env else None,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
            if nofile else None)
        self.returncode = None
        self.command = command

    @property
    def pid(self):
        return self.proc.pid

    def admin_url(self, path):
        return f"http://{self.config['admin']['listen']}{path}"

    def health_url(self, path):
        return f"http://{self.config['health']['listen']}{path}"

    # The line each command logs once it is confined and serving: sockets are bound and
    # listening before the sandbox is entered, so the LISTEN state alone says too little.
    STARTED = {"run": re.compile(r"mtlsd \S+ serving \d+ listeners"),
               "webhook": re.compile(r"listening on \S+ \(HTTPS\)")}

    def wait_listening(self, timeout=15.0, admin=False):
        """Waits until every listener (and with ADMIN, the admin port) is in the LISTEN
        state and the process has logged that it serves (after entering its sandbox). It
        reads /proc/net/tcp rather than connecting, so that no probe connection shows up
        in the access log or the metrics."""
        addrs = [l["listen"] for l in self.config.get("listeners", [])]
        if admin:
            addrs += [self.config[k]["listen"] for k in ("admin", "health") if k in self.config]
        ports = {int(a.rsplit(":", 1)[1]) for a in addrs}

        def all_up():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                     + self.stderr())
            started = self.STARTED.get(self.command[0])
            return ports <= listening_ports(self.pid) and (
                started is None or started.search(self.stderr()) is not None)

        wait_until(all_up, timeout=timeout, what=f"{self.name} listening")
        return self

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def access_log(self):
        """The access log lines written so far, parsed."""
        entries = []
        with open(self.stdout_path, errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # mtlsd is writing it: the next read gets it whole
                line = line.strip()
                if line.startswith("{"):
                    entries.append(json.loads(line))
        return entries

    def wait_access(self, predicate, timeout=10.0, what="access log entry"):
        def find():
            for e in self.access_log():
                if predicate(e):
                    return e
            return None

        return wait_until(find, timeout=timeout, what=what)

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """User plus system CPU time the process has used so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Stops the process by PID and returns its exit code; raises on a sanitizer
        report or a hang."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError(f"{self.name} did not stop within {timeout}s")
        self.returncode = self.proc.returncode
        self._out.close()
        self._err.close()
        self.check_sanitizers()
        return self.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._out.close()
        self._err.close()

    def check_sanitizers(self):
        for path in (self.stderr_path, self.stdout_path):
            with open(path, errors="replace") as f:
                text = f.read()
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    raise AssertionError(f"{self.name}: sanitizer report in {path}:\n{text[-6000:]}")


def prom_value(text, series):
    """The value of SERIES ('name{label="v"}', exactly as exposed) in the Prometheus text
    TEXT; raises when it is not there."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no series {series} in:\n{text}")


def http_get(url, timeout=5.0, method="GET", data=None):
    """(status, headers, body) of a request to the admin port."""
    req = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Backend:
    """A threaded TCP server on 127.0.0.1 standing in for the application. `handler(conn)`
    runs per connection in its own thread; the default echoes until EOF, then closes."""

    def __init__(self, handler=None, port=None):
        self.handler = handler or echo_handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(4096)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = bytearray()  # What the "received" handlers recorded.
        self.lock = threading.Lock()
        self._stop = False
        self._threads = []
        self._conns = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._run_handler, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _run_handler(self, conn):
        try:
            self.handler(self, conn)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()
        with self.lock:
            for c in self._conns:
                try:
                    c.close()
                except OSError:
                    pass


def echo_handler(backend, conn):
    while True:
        data = conn.recv(65536)
        if not data:
            return
        with backend.lock:
            backend.received += data[:4096]
        conn.sendall(data)


def sha256_handler(backend, conn):
    """Reads to EOF, then answers with the hex SHA-256 of what it read (a half-close test
    by construction: the answer can only come after the client's FIN)."""
    h = hashlib.sha256()
    n = 0
    while True:
        data = conn.recv(1 << 20)
        if not data:
            break
        h.update(data)
        n += len(data)
    conn.sendall(f"{n} {h.hexdigest()}".encode())
    conn.shutdown(socket.SHUT_WR)


def tls_echo(port, ctx, payload, timeout=10.0):
    """Opens a TLS connection to 127.0.0.1:PORT with CTX, sends PAYLOAD and returns what
    came back, as many bytes as were sent at most (fewer if the peer closed first).
    Errors (a refused handshake) are raised."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw) as tls:
            tls.sendall(payload)
            echoed = b""
            while len(echoed) < len(payload):
                data = tls.recv(65536)
                if not data:
                    break
                echoed += data
            return echoed


def recv_all(sock, limit=1 << 30, timeout=30.0):
    """Reads until EOF (bounded by LIMIT bytes and TIMEOUT seconds)."""
    sock.settimeout(timeout)
    chunks = []
    total = 0
    while total < limit:
        data = sock.recv(1 << 20)
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def two_sidecars(workdir, pki, backend_port, out_extra=None, in_extra=None, limits=None,
                 client_sa="client", server_sa="server", allow=None, workers=1,
                 cert_dirs=None, in_workers=None):
    """Starts an outbound sidecar (pod A, identity CLIENT_SA) and an inbound sidecar (pod B,
    identity SERVER_SA, on IN_WORKERS workers, else WORKERS) forwarding to BACKEND_PORT,
    with certificates PKI issues, or from CERT_DIRS (pod A's, pod B's). Returns (outbound,
    inbound, out_port)."""
    if cert_dirs:
        a_dir, b_dir = cert_dirs
    else:
        a_dir = pki.issue(f"pod-{client_sa}", spiffe(client_sa))
        b_dir = pki.issue(f"pod-{server_sa}", spiffe(server_sa))
    in_port, out_port = free_port(), free_port()
    in_listener = {"name": "inbound", "mode": "inbound", "listen": f"127.0.0.1:{in_port}",
                   "forward": f"127.0.0.1:{backend_port}",
                   "allow": allow or [spiffe(client_sa)]}
    in_listener.update(in_extra or {})
    out_listener = {"name": "outbound", "mode": "outbound", "listen": f"127.0.0.1:{out_port}",
                    "upstream": f"127.0.0.1:{in_port}", "server_identity": spiffe(server_sa)}
    out_listener.update(out_extra or {})
    common = {"workers": workers}
    if limits:
        common["limits"] = limits
    inbound = Mtlsd(workdir, dict(common, admin={"listen": f"127.0.0.1:{free_port()}"},
                                  certs={"dir": b_dir}, listeners=[in_listener],
                                  workers=in_workers or workers), name="inbound")
    outbound = Mtlsd(workdir, dict(common, admin={"listen": f"127.0.0.1:{free_port()}"},
                                   certs={"dir": a_dir}, listeners=[out_listener]),
                     name="outbound")
    inbound.wait_listening()
    outbound.wait_listening()
    return outbound, inbound, out_port


def sh(*args, check=True, timeout=60, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout,
                          **kw)


def make_pod_pair(ns, veth, addrs):
    """Makes the network namespaces in NS (pod -> name), each with loopback up, joined by
    the veth pair in VETH (pod -> device); ADDRS gives each pod's "address/prefix" list.
    IPv6 addresses skip duplicate address detection, which would hold them back."""
    for pod in ns:
        sh("ip", "netns", "add", ns[pod])
        sh("ip", "-n", ns[pod], "link", "set", "lo", "up")
    a, b = veth
    sh("ip", "link", "add", veth[a], "type", "veth", "peer", "name", veth[b])
    for pod in ns:
        sh("ip", "link", "set", veth[pod], "netns", ns[pod])
        for addr in addrs[pod]:
            sh("ip", "-n", ns[pod], "addr", "add", addr, "dev", veth[pod],
               *(["nodad"] if ":" in addr else []))
        sh("ip", "-n", ns[pod], "link", "set", veth[pod], "up")


def delete_netns(names):
    """Deletes the network namespaces NAMES, those that exist; their veth ends go too."""
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class PkiCase(unittest.TestCase):
    """A class of tests that share a temporary directory and a CA, with a client's and a
    server's certificates issued (SPIFFE IDs of service accounts "client" and "server")."""

    @classmethod
    def setUpClass(cls):
        cls._tmp = TempDir()
        cls.tmp = cls._tmp.__enter__()
        cls.pki = Pki(cls.tmp)
        cls.client = cls.pki.issue("client", spiffe_id=spiffe("client"))
        cls.server = cls.pki.issue("server", spiffe_id=spiffe("server"))

    @classmethod
    def tearDownClass(cls):
        cls._tmp.__exit__(None, None, None)


class PodPairCase(unittest.TestCase):
    """A test class over two pods, "a" and "b": network namespaces joined by a veth
    (make_pod_pair), named after this process with NS_PREFIX and VETH_PREFIX and given
    ADDRS. setUpClass makes them, then runs the class's start_pods; tearDownClass runs its
    stop_pods (which returns the errors it saw, and must cope with a half-made setup), then
    deletes the namespaces and the temporary directory, and fails with the errors."""

    NS_PREFIX = "mtlsd-"
    VETH_PREFIX = "mv"
    ADDRS = {}

    @classmethod
    def setUpClass(cls):
        cls._tmp = TempDir()
        cls.tmp = cls._tmp.__enter__()
        os.chmod(cls.tmp, 0o755)
        tag = str(os.getpid() % 100000)
        cls.ns = {pod: f"{cls.NS_PREFIX}{pod}-{tag}" for pod in "ab"}
        cls.veth = {pod: f"{cls.VETH_PREFIX}{pod}{tag}" for pod in "ab"}
        cls.procs = []
        try:
            make_pod_pair(cls.ns, cls.veth, cls.ADDRS)
            cls.start_pods()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_pods(cls):
        pass

    @classmethod
    def stop_pods(cls):
        return []

    @classmethod
    def tearDownClass(cls):
        errors = cls.stop_pods()
        delete_netns(getattr(cls, "ns", {}).values())
        if hasattr(cls, "_tmp"):
            cls._tmp.__exit__(None, None, None)
        if errors:
            raise AssertionError("\n".join(errors))

    @classmethod
    def netns(cls, pod, *args):
        return ["ip", "netns", "exec", cls.ns[pod], *args]


class TempDir:
    """A temporary directory as a context manager that survives a failing test's
    inspection when MTLSD_KEEP_TMP is set."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="mtlsd-test-")

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        if not os.environ.get("MTLSD_KEEP_TMP"):
            subprocess.run(["rm", "-rf", self.path], check=False)
