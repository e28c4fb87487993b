#!/usr/bin/env python3
"""The measurement driver behind bench/run.sh (Python 3 standard library only).

run.sh installs the packages, builds mtlsd and the certificates, then runs this script,
which starts every process it needs (pinned with taskset), drives the scenarios, samples
CPU and RSS from /proc, and writes bench/out/results.json. bench/report.py renders it.
Every process started here is stopped here, by its process group, on any exit.

Settings come from the environment (run.sh documents them): REPS, DURATION, IPERF_TIME,
IDLE_CONNS, PEERS, RESUME_SCENARIOS, BASE_PORT, CPU_LOAD, CPU_BACKEND, CPU_CLIENT,
CPU_SERVER, QUICK.
"""
import json
import os
import platform
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = Path(os.environ.get("BENCH_OUT", BENCH / "out"))
W = OUT / "run"  # configs, logs, web root
LOGS = W / "logs"
PKI = OUT / "pki"
BUILD = Path(os.environ.get("BUILD_DIR", ROOT / "build" / "release"))
MTLSD = BUILD / "mtlsd"
BSSL = BUILD / "bssl"
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

CLIENT_ID = "spiffe://cluster.local/ns/bench/sa/client"
SERVER_ID = "spiffe://cluster.local/ns/bench/sa/server"
CLIENT_DNS = "client.bench.local"
SERVER_DNS = "server.bench.local"
SERVICES = ("http", "iperf", "echo")
ALL_PEERS = ("mtlsd", "haproxy", "nginx", "stunnel", "tcp-relay", "direct")
# RLIMIT_NOFILE for every process: raised to NOFILE_WANT, or to the hard limit when this
# process may not raise that (no CAP_SYS_RESOURCE, as in many containers).
NOFILE_WANT = 262144


def _raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_WANT if hard == resource.RLIM_INFINITY else max(hard, NOFILE_WANT)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


NOFILE = _raise_nofile()
# Connection capacity given to HAProxy (maxconn) and nginx (worker_connections, which
# counts both sockets of a relayed connection, so twice this): mtlsd's default
# limits.max_connections, or what the descriptor limit allows a relaying process.
MAXCONN = min(16384, (NOFILE - 100) // 2)

QUICK = os.environ.get("QUICK", "0") not in ("", "0")


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


REPS = env_int("REPS", 2)
DURATION = env_int("DURATION", 2 if QUICK else 10)
IPERF_TIME = env_int("IPERF_TIME", 2 if QUICK else 5)
IDLE_CONNS_WANTED = env_int("IDLE_CONNS", 1000 if QUICK else 10000)
# Each side of a pair holds two descriptors per relayed connection, and stunnel refuses
# clients beyond 125/256 of its descriptor limit ("too many clients"): every peer gets the
# same number, one that all of them accept.
IDLE_CONNS = min(IDLE_CONNS_WANTED, MAXCONN - 64, NOFILE * 125 // 256 - 16)
PEERS = os.environ.get("PEERS", "").replace(",", " ").split() or list(ALL_PEERS)
RESUME_SCENARIOS = os.environ.get("RESUME_SCENARIOS", "conn").strip() or "conn"

_cpus = sorted(os.sched_getaffinity(0))
if len(_cpus) >= 4:
    _pin = (_cpus[0], _cpus[1], _cpus[2], _cpus[3])
elif len(_cpus) == 3:
    _pin = (_cpus[0], _cpus[1], _cpus[2], _cpus[2])
elif len(_cpus) == 2:
    _pin = (_cpus[0], _cpus[0], _cpus[1], _cpus[1])
else:
    _pin = (_cpus[0],) * 4
CPU_LOAD = os.environ.get("CPU_LOAD") or str(_pin[0])
CPU_BACKEND = os.environ.get("CPU_BACKEND") or str(_pin[1])
CPU_CLIENT = os.environ.get("CPU_CLIENT") or str(_pin[2])
CPU_SERVER = os.environ.get("CPU_SERVER") or str(_pin[3])

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Processes: each started in its own session (process group), recorded in a pid file that
# run.sh's trap also reads, and stopped by its group.

STARTED = []  # Popen objects still to stop
PIDFILE = W / "pids"


def _record_pids():
    with open(PIDFILE, "w") as f:
        for p in STARTED:
            if p.poll() is None:
                f.write(f"{p.pid} {p.args[3] if len(p.args) > 3 else p.args[0]}\n")


def start(name, argv, cpu, stdin=subprocess.DEVNULL, stdout=None):
    """Starts argv pinned to cpu, in a new process group; output to logs/NAME.log."""
    logf = open(LOGS / f"{name}.log", "ab")
    p = subprocess.Popen(["taskset", "-c", str(cpu)] + [str(a) for a in argv],
                         stdin=stdin, stdout=stdout if stdout is not None else logf,
                         stderr=logf, start_new_session=True, cwd=W)
    p.bench_name = name
    p.bench_log = LOGS / f"{name}.log"
    logf.close()
    STARTED.append(p)
    _record_pids()
    return p


def stop(p, timeout=25):
    if p in STARTED:
        STARTED.remove(p)
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{p.bench_name} (pid {p.pid}) did not stop in {timeout}s: SIGKILL")
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)
    # A leader that already exited is not signalled: its process group id could belong to
    # someone else by now (an nginx master that exits takes its worker with it).
    _record_pids()


def stop_all():
    for p in reversed(list(STARTED)):
        try:
            stop(p, timeout=10)
        except Exception as e:  # keep stopping the others
            log(f"stopping {p.pid}: {e}")


def tail(path, n=15):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------
# /proc sampling


def proc_tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        if not os.path.exists(f"/proc/{p}"):
            continue
        pids.append(p)
        for t in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(x) for x in t.read_text().split()]
            except OSError:
                pass
    return pids


def leader_pid(p):
    # taskset execs the program, so the Popen pid is the program itself.
    return p.pid


def cpu_seconds(p):
    total = 0
    for pid in proc_tree(leader_pid(p)):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def rss_kib(p):
    total = 0
    for pid in proc_tree(leader_pid(p)):
        try:
            m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        except OSError:
            continue
        if m:
            total += int(m.group(1))
    return total


def core_busy_s():
    """Busy seconds so far of the proxies' core(s), from /proc/stat."""
    cores = {f"cpu{c}" for c in (CPU_CLIENT, CPU_SERVER)}
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        f = line.split()
        if f and f[0] in cores:
            # user nice system idle iowait irq softirq steal: all but idle and iowait.
            total += sum(int(x) for x in (f[1], f[2], f[3], f[6], f[7], f[8]))
    return total / CLK_TCK


class Sample:
    """CPU of each side and of the proxies' core(s) around one scenario."""

    def __init__(self, pair):
        self.pair = pair
        self.t0 = time.monotonic()
        self.core0 = core_busy_s()
        self.cpu0 = pair.cpu()

    def done(self, m, prefix):
        cpu = delta(self.pair.cpu(), self.cpu0)
        wall = time.monotonic() - self.t0
        ncores = len({CPU_CLIENT, CPU_SERVER})
        foreign = core_busy_s() - self.core0 - sum(cpu.values())
        # Share of the proxies' core(s) used by anything but the proxies under test.
        m[f"{prefix}_foreign_pct"] = max(0.0, 100 * foreign / (wall * ncores))
        return cpu


def listening(port):
    want = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[1].endswith(want) and f[3] == "0A":
                return True
    return False


def port_free(port):
    if listening(port):
        return False
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_listening(ports, procs, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{p.bench_name} exited with {p.returncode} at start-up:\n"
                                   + tail(p.bench_log))
        if all(listening(port) for port in ports):
            return
        time.sleep(0.05)
    raise RuntimeError(f"ports {ports} not listening after {timeout}s:\n"
                       + "\n".join(tail(p.bench_log) for p in procs))


def http_get(port, path, timeout=5):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(errors="replace"), body


def check_path(port, timeout=10):
    """One real request through the chain; retried briefly (a listener may lag)."""
    deadline = time.monotonic() + timeout
    err = None
    while time.monotonic() < deadline:
        try:
            status, body = http_get(port, "/64")
            if " 200 " in status + " " and len(body) == 64:
                return
            err = f"{status!r}, {len(body)} body bytes"
        except OSError as e:
            err = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"GET /64 through port {port} failed: {err}")


# ---------------------------------------------------------------------------------------
# Ports and files


def pick_base():
    if os.environ.get("BASE_PORT"):
        return int(os.environ["BASE_PORT"])
    for base in range(21000, 60000, 100):
        if all(port_free(base + off) for off in (0, 1, 2, 10, 11, 12, 20, 21, 22, 30, 31)):
            return base
    raise RuntimeError("no free block of ports")


BASE = None
BACK = {}
CPORT = {}
SPORT = {}


def setup_ports():
    global BASE
    BASE = pick_base()
    for i, s in enumerate(SERVICES):
        BACK[s] = BASE + i
        CPORT[s] = BASE + 10 + i
        SPORT[s] = BASE + 20 + i


def write(path, text):
    Path(path).write_text(text)
    return path


# ---------------------------------------------------------------------------------------
# The peers. Each returns, for one resumption setting, the client-side and server-side
# (name, argv) to start; None for the direct run.


def mtlsd_sides(resumption):
    def cfg(side):
        if side == "client":
            c = {"workers": 1, "admin": {"listen": f"127.0.0.1:{BASE + 30}"},
                 "certs": {"dir": str(PKI / "client")}, "access_log": "off",
                 "limits": {"drain_timeout": "2s"},
                 "listeners": [{"name": f"out-{s}", "mode": "outbound",
                                "listen": f"127.0.0.1:{CPORT[s]}",
                                "upstream": f"127.0.0.1:{SPORT[s]}",
                                "server_identity": SERVER_ID} for s in SERVICES]}
            if not resumption:
                c["tls"] = {"session_resumption": False}
        else:
            c = {"workers": 1, "admin": {"listen": f"127.0.0.1:{BASE + 31}"},
                 "certs": {"dir": str(PKI / "server")}, "access_log": "off",
                 "limits": {"drain_timeout": "2s"},
                 "listeners": [{"name": f"in-{s}", "mode": "inbound",
                                "listen": f"127.0.0.1:{SPORT[s]}",
                                "forward": f"127.0.0.1:{BACK[s]}",
                                "allow": [CLIENT_ID]} for s in SERVICES]}
        f = write(W / f"mtlsd-{side}.json", json.dumps(c, indent=2) + "\n")
        return [MTLSD, "run", "--config", f, "--log-level", "warn"]
    return cfg("client"), cfg("server")


def haproxy_sides(resumption, tls=True, tag="haproxy"):
    head = f"""global
    nbthread 1
    maxconn {MAXCONN}
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256

defaults
    mode tcp
    maxconn {MAXCONN}
    timeout connect 5s
    timeout client 1h
    timeout server 1h
"""

    def cfg(side):
        t = head
        for s in SERVICES:
            if side == "client":
                ssl = ""
                if tls:
                    ssl = (f" ssl crt {W / 'haproxy-client.pem'} ca-file {PKI / 'client/ca.crt'}"
                           f" verify required verifyhost {SERVER_DNS}")
                    if not resumption:
                        ssl += " no-ssl-reuse"
                t += (f"\nfrontend f_{s}\n    bind 127.0.0.1:{CPORT[s]}\n"
                      f"    default_backend b_{s}\n"
                      f"backend b_{s}\n    server s 127.0.0.1:{SPORT[s]}{ssl}\n")
            else:
                ssl = ""
                if tls:
                    ssl = (f" ssl crt {W / 'haproxy-server.pem'} ca-file {PKI / 'server/ca.crt'}"
                           f" verify required")
                t += (f"\nfrontend f_{s}\n    bind 127.0.0.1:{SPORT[s]}{ssl}\n"
                      f"    default_backend b_{s}\n"
                      f"backend b_{s}\n    server b 127.0.0.1:{BACK[s]}\n")
        f = write(W / f"{tag}-{side}.cfg", t)
        return ["haproxy", "-db", "-f", f]
    return cfg("client"), cfg("server")


def nginx_sides(resumption):
    def cfg(side):
        user = "user root;\n" if os.geteuid() == 0 else ""
        t = f"""{user}load_module {NGINX_STREAM_MODULE};
worker_processes 1;
daemon off;
pid {W / f'nginx-{side}.pid'};
error_log {LOGS / f'nginx-{side}.error.log'} warn;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections {2 * MAXCONN + 64}; }}
stream {{
    proxy_timeout 1h;
"""
        if side == "client":
            t += f"""    proxy_ssl on;
    proxy_ssl_certificate {PKI / 'client/tls.crt'};
    proxy_ssl_certificate_key {PKI / 'client/tls.key'};
    proxy_ssl_trusted_certificate {PKI / 'client/ca.crt'};
    proxy_ssl_verify on;
    proxy_ssl_name {SERVER_DNS};
    proxy_ssl_protocols TLSv1.3;
    proxy_ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
    proxy_ssl_session_reuse {'on' if resumption else 'off'};
"""
            for s in SERVICES:
                t += (f"    server {{ listen 127.0.0.1:{CPORT[s]}; "
                      f"proxy_pass 127.0.0.1:{SPORT[s]}; }}\n")
        else:
            t += f"""    ssl_certificate {PKI / 'server/tls.crt'};
    ssl_certificate_key {PKI / 'server/tls.key'};
    ssl_client_certificate {PKI / 'server/ca.crt'};
    ssl_verify_client on;
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
"""
            for s in SERVICES:
                t += (f"    server {{ listen 127.0.0.1:{SPORT[s]} ssl; "
                      f"proxy_pass 127.0.0.1:{BACK[s]}; }}\n")
        t += "}\n"
        f = write(W / f"nginx-{side}.conf", t)
        return ["nginx", "-p", W, "-e", LOGS / f"nginx-{side}.error.log", "-c", f]
    return cfg("client"), cfg("server")


def stunnel_sides(resumption):
    def cfg(side):
        t = f"""foreground = yes
pid =
debug = warning
output = {LOGS / f'stunnel-{side}.out.log'}

"""
        for s in SERVICES:
            if side == "client":
                t += f"""[{s}]
client = yes
accept = 127.0.0.1:{CPORT[s]}
connect = 127.0.0.1:{SPORT[s]}
cert = {PKI / 'client/tls.crt'}
key = {PKI / 'client/tls.key'}
CAfile = {PKI / 'client/ca.crt'}
verifyChain = yes
checkHost = {SERVER_DNS}
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
TIMEOUTidle = 3600
"""
                if not resumption:
                    t += "sessionResume = no\nsessionCacheSize = 1\nsessionCacheTimeout = 1\n"
            else:
                t += f"""[{s}]
accept = 127.0.0.1:{SPORT[s]}
connect = 127.0.0.1:{BACK[s]}
cert = {PKI / 'server/tls.crt'}
key = {PKI / 'server/tls.key'}
CAfile = {PKI / 'server/ca.crt'}
verifyChain = yes
checkHost = {CLIENT_DNS}
sslVersionMin = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
TIMEOUTidle = 3600
"""
            t += "\n"
        f = write(W / f"stunnel-{side}.conf", t)
        return ["stunnel", f]
    return cfg("client"), cfg("server")


PEER_SIDES = {
    "mtlsd": mtlsd_sides,
    "haproxy": haproxy_sides,
    "nginx": nginx_sides,
    "stunnel": stunnel_sides,
    "tcp-relay": lambda r: haproxy_sides(r, tls=False, tag="tcp-relay"),
    "direct": None,
}


class Pair:
    """The two sides of one peer, or nothing for the direct run."""

    def __init__(self, peer, resumption):
        self.peer = peer
        self.client = self.server = None
        self.entry = dict(BACK) if PEER_SIDES[peer] is None else dict(CPORT)
        if PEER_SIDES[peer] is None:
            return
        cargv, sargv = PEER_SIDES[peer](resumption)
        try:
            self.server = start(f"{peer}-server", sargv, CPU_SERVER)
            self.client = start(f"{peer}-client", cargv, CPU_CLIENT)
            wait_listening(list(SPORT.values()) + list(CPORT.values()),
                           [self.server, self.client])
        except Exception:
            self.stop()
            raise

    def sides(self):
        return [] if self.client is None else [("client", self.client), ("server", self.server)]

    def cpu(self):
        return {side: cpu_seconds(p) for side, p in self.sides()}

    def rss(self):
        return {side: rss_kib(p) for side, p in self.sides()}

    def alive(self):
        for side, p in self.sides():
            if p.poll() is not None:
                raise RuntimeError(f"{p.bench_name} died (exit {p.returncode}):\n"
                                   + tail(p.bench_log))

    def stop(self):
        for p in (self.client, self.server):
            if p is not None:
                stop(p)
        # Let the kernel release the ports before the next peer binds them.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                listening(x) for x in list(SPORT.values()) + list(CPORT.values())):
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------
# Load generators


def run_bounded(name, argv, cpu, timeout):
    with open(LOGS / f"{name}.log", "ab") as logf:
        logf.write(f"\n$ {' '.join(map(str, argv))}\n".encode())
        logf.flush()
        p = start(name, argv, cpu, stdout=subprocess.PIPE)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(p, timeout=5)
            raise RuntimeError(f"{name} did not finish in {timeout}s")
        finally:
            if p in STARTED:
                STARTED.remove(p)
                _record_pids()
        logf.write(out)
    return p.returncode, out.decode(errors="replace")


def wrk(name, port, path, conns, duration, close=False):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
            "-s", BENCH / "wrk-json.lua"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    rc, out = run_bounded(name, argv, CPU_LOAD, duration + 60)
    m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
    if rc != 0 or not m:
        raise RuntimeError(f"wrk failed (exit {rc}): {out[-800:]}")
    r = json.loads(m.group(1))
    r["errors"] = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors",
                                     "status_errors", "timeouts"))
    r["seconds"] = r["duration_us"] / 1e6
    return r


def iperf(name, port, seconds):
    srv = start("iperf3-server", ["iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", BACK["iperf"]],
                CPU_BACKEND)
    try:
        wait_listening([BACK["iperf"]], [srv])
        rc, out = run_bounded(name, ["iperf3", "-c", "127.0.0.1", "-p", port, "-t", seconds,
                                     "-J"], CPU_LOAD, seconds + 60)
        try:
            srv.wait(10)
        except subprocess.TimeoutExpired:
            pass
    finally:
        stop(srv, timeout=5)
    try:
        j = json.loads(out)
    except ValueError as e:
        raise RuntimeError(f"iperf3 failed (exit {rc}): {out[-800:]}") from e
    if "error" in j or "sum_received" not in j.get("end", {}):
        raise RuntimeError(f"iperf3 failed (exit {rc}): {j.get('error', 'no result')}")
    s = j["end"]["sum_received"]
    return {"bytes": s["bytes"], "seconds": s["seconds"], "bps": s["bits_per_second"]}


def hold_idle(name, port, count):
    """Opens count connections (1-byte round trip each); returns (holder, summary)."""
    p = start(name, [sys.executable, BENCH / "idleconns.py", "hold", "--target",
                     f"127.0.0.1:{port}", "--count", count, "--open-timeout", 240,
                     "--hold-max", 300], CPU_LOAD, stdin=subprocess.PIPE,
              stdout=subprocess.PIPE)
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    line = b""
    deadline = time.monotonic() + 270
    while not line.endswith(b"\n") and time.monotonic() < deadline and p.poll() is None:
        if sel.select(timeout=1):
            b = os.read(p.stdout.fileno(), 4096)
            if not b:
                break
            line += b
    sel.close()
    try:
        return p, json.loads(line)
    except ValueError:
        release_idle(p)
        raise RuntimeError(f"idle-connection holder said {line!r}:\n" + tail(p.bench_log))


def release_idle(p):
    try:
        p.stdin.close()
    except OSError:
        pass
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        pass
    stop(p, timeout=5)


# ---------------------------------------------------------------------------------------
# Scenarios


def delta(after, before):
    return {k: round(after[k] - before[k], 3) for k in after}


def scenario_keepalive(pair, m, raw):
    sample = Sample(pair)
    r = wrk(f"wrk-{pair.peer}", pair.entry["http"], "/64", 64, DURATION)
    cpu = sample.done(m, "ka")
    pair.alive()
    raw["keepalive"] = {"wrk": r, "cpu": cpu}
    m["ka_rps"] = r["requests"] / r["seconds"]
    m["ka_p50_ms"] = r["p50_us"] / 1000
    m["ka_p90_ms"] = r["p90_us"] / 1000
    m["ka_p99_ms"] = r["p99_us"] / 1000
    m["ka_errors"] = r["errors"]
    if cpu and r["requests"]:
        m["ka_cpu_per_10k"] = sum(cpu.values()) / (r["requests"] / 1e4)
        for side, v in cpu.items():
            m[f"ka_cpu_per_10k_{side}"] = v / (r["requests"] / 1e4)


def scenario_conn(pair, m, raw):
    sample = Sample(pair)
    r = wrk(f"wrk-{pair.peer}", pair.entry["http"], "/64", 16, DURATION, close=True)
    cpu = sample.done(m, "conn")
    pair.alive()
    raw["conn"] = {"wrk": r, "cpu": cpu}
    m["conn_rate"] = r["requests"] / r["seconds"]
    m["conn_p99_ms"] = r["p99_us"] / 1000
    m["conn_errors"] = r["errors"]
    if cpu and r["requests"]:
        m["conn_cpu_per_1k"] = sum(cpu.values()) / (r["requests"] / 1e3)
        for side, v in cpu.items():
            m[f"conn_cpu_per_1k_{side}"] = v / (r["requests"] / 1e3)


def scenario_bulk(pair, m, raw):
    sample = Sample(pair)
    r = wrk(f"wrk-{pair.peer}", pair.entry["http"], "/1m", 4, DURATION)
    cpu = sample.done(m, "down")
    pair.alive()
    raw["bulk_down"] = {"wrk": r, "cpu": cpu}
    m["down_gbps"] = r["bytes"] * 8 / r["seconds"] / 1e9
    m["down_errors"] = r["errors"]
    if cpu and r["bytes"]:
        m["down_cpu_per_gb"] = sum(cpu.values()) / (r["bytes"] / 1e9)
        for side, v in cpu.items():
            m[f"down_cpu_per_gb_{side}"] = v / (r["bytes"] / 1e9)
    time.sleep(0.5)
    sample = Sample(pair)
    r = iperf(f"iperf3-{pair.peer}", pair.entry["iperf"], IPERF_TIME)
    cpu = sample.done(m, "up")
    pair.alive()
    raw["bulk_up"] = {"iperf3": r, "cpu": cpu}
    m["up_gbps"] = r["bps"] / 1e9
    if cpu and r["bytes"]:
        m["up_cpu_per_gb"] = sum(cpu.values()) / (r["bytes"] / 1e9)
        for side, v in cpu.items():
            m[f"up_cpu_per_gb_{side}"] = v / (r["bytes"] / 1e9)


def scenario_latency(pair, m, raw):
    """Light load: 64-byte round trips on one connection, p50/p90/p99 in microseconds."""
    rc, out = run_bounded(f"pingpong-{pair.peer}",
                          [sys.executable, BENCH / "pingpong.py", "--connect",
                           f"127.0.0.1:{pair.entry['echo']}", "--seconds", str(DURATION)],
                          CPU_LOAD, DURATION + 60)
    pair.alive()
    if rc != 0:
        raise RuntimeError(f"pingpong failed (exit {rc}): {out[-400:]}")
    r = json.loads(out.strip().splitlines()[-1])
    raw["latency"] = r
    for q in ("p50", "p90", "p99"):
        m[f"lat_{q}_us"] = r[f"{q}_us"]


def scenario_idle(peer, resumption, m, raw):
    """A fresh pair: RSS idle, with IDLE_CONNS relayed connections open, after they close."""
    pair = Pair(peer, resumption)
    try:
        time.sleep(1)
        idle = pair.rss()
        holder, summary = hold_idle(f"idleconns-{peer}", pair.entry["echo"], IDLE_CONNS)
        try:
            time.sleep(1)
            pair.alive()
            full = pair.rss()
        finally:
            release_idle(holder)
        time.sleep(2)
        after = pair.rss()
        pair.alive()
    finally:
        pair.stop()
    raw["idle_conns"] = {"holder": summary, "rss_idle": idle, "rss_with": full,
                         "rss_after_close": after}
    n = summary["ok"]
    m["idle_conns_ok"] = n
    m["idle_conns_failed"] = summary["failed"]
    m["idle_conns_open_s"] = summary["seconds"]
    for side in idle:
        m[f"rss_conns_{side}_kib"] = full[side]
        m[f"rss_conns_closed_{side}_kib"] = after[side]
        if n:
            m[f"kib_per_conn_{side}"] = (full[side] - idle[side]) / n
    if n and idle:
        m["kib_per_conn"] = sum(full[s] - idle[s] for s in idle) / n


def run_peer(peer, resumption, scenarios):
    m, raw, errors = {}, {}, []
    log(f"{peer}: resumption {'on' if resumption else 'off'}, scenarios {','.join(scenarios)}")
    throughput = [s for s in scenarios if s in ("keepalive", "conn", "bulk", "latency")]
    if throughput:
        try:
            pair = Pair(peer, resumption)
        except Exception as e:
            errors.append(f"start: {e}")
            log(f"{peer}: {errors[-1]}")
            return m, raw, errors
        try:
            time.sleep(1)
            rss = pair.rss()
            for side, v in rss.items():
                m[f"rss_idle_{side}_kib"] = v
            check_path(pair.entry["http"])
            for s in throughput:
                # A scenario that fails (a load generator's error, not a proxy's death) is
                # tried once more; both attempts' errors are reported.
                for attempt in (1, 2):
                    try:
                        {"keepalive": scenario_keepalive, "conn": scenario_conn,
                         "bulk": scenario_bulk, "latency": scenario_latency}[s](pair, m, raw)
                        if s == "keepalive":
                            for side, v in pair.rss().items():
                                m[f"rss_after_ka_{side}_kib"] = v
                        break
                    except Exception as e:
                        errors.append(f"{s} (attempt {attempt}): {e}")
                        log(f"{peer}: {errors[-1]}")
                        pair.alive()
                    time.sleep(1)
                time.sleep(1)
        except Exception as e:
            errors.append(f"{e}")
            log(f"{peer}: {errors[-1]}")
        finally:
            pair.stop()
    if "idle" in scenarios and PEER_SIDES[peer] is not None:
        try:
            scenario_idle(peer, resumption, m, raw)
        except Exception as e:
            errors.append(f"idle: {e}")
            log(f"{peer}: {errors[-1]}")
    short = {k: round(v, 3) for k, v in m.items()
             if k in ("ka_rps", "ka_p99_ms", "conn_rate", "down_gbps", "up_gbps",
                      "kib_per_conn")}
    log(f"{peer}: {short}")
    return m, raw, errors


# ---------------------------------------------------------------------------------------
# Machine facts, versions, the crypto floor


def sh(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


def machine():
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
        "mem_gib": round(int(mem.group(1)) / 1048576, 1) if mem else None,
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def versions():
    def grab(argv, pattern, fmt):
        m = re.search(pattern, sh(argv))
        return fmt.format(*m.groups()) if m else sh(argv).splitlines()[0:1]
    return {
        "mtlsd": grab([MTLSD, "version"], r"mtlsd (\S+)", "mtlsd {}"),
        "mtlsd_git": sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).splitlines()[0],
        # Uncommitted changes to the sources the binary was built from (read-only check).
        "mtlsd_dirty": subprocess.run(
            ["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "src", "include",
             "CMakeLists.txt", "cmake"], capture_output=True).returncode == 1,
        "haproxy": grab(["haproxy", "-v"], r"HAProxy version (\S+)", "HAProxy {}"),
        "nginx": grab(["nginx", "-v"], r"nginx/(\S+)", "nginx {}"),
        "stunnel": grab(["stunnel", "-version"], r"stunnel (\S+) on", "stunnel {}"),
        "openssl": grab(["openssl", "version"], r"OpenSSL (\S+)", "OpenSSL {}"),
        "wrk": grab(["wrk", "-v"], r"wrk (?:debian/)?(\S+)", "wrk {}"),
        "iperf3": grab(["iperf3", "-v"], r"iperf (\S+)", "iperf3 {}"),
    }


def crypto_floor():
    """bssl speed on the proxies' core: AES-128-GCM, ECDSA P-256, X25519."""
    res = {}
    for flt, extra in (("AES-128-GCM", ["-chunks", "16,1350,16384"]), ("ECDSA P-256", []),
                       ("X25519", [])):
        out = sh(["taskset", "-c", CPU_CLIENT, BSSL, "speed", "-json", "-timeout", "1",
                  "-filter", flt] + extra)
        try:
            rows = json.loads(out[out.index("["):])
        except ValueError:
            res[flt] = {"error": out[-300:]}
            continue
        for r in rows:
            d = r["description"]
            if "SIV" in d or "Ed25519" in d:
                continue
            ops = r["numCalls"] / (r["microseconds"] / 1e6)
            entry = {"ops_per_s": round(ops, 1)}
            if "bytesPerCall" in r:
                entry["bytes"] = r["bytesPerCall"]
                entry["mb_per_s"] = round(ops * r["bytesPerCall"] / 1e6, 1)
            res[d] = entry
    return res


# ---------------------------------------------------------------------------------------


def snapshot_binaries():
    """Runs private copies of mtlsd and bssl: build/release is shared with whoever rebuilds
    it, and a run must measure one binary from start to end."""
    global MTLSD, BSSL
    import hashlib
    import shutil
    d = W / "bin"
    d.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, src in (("mtlsd", MTLSD), ("bssl", BSSL)):
        dst = d / name
        shutil.copy2(src, dst)
        info[name] = {"sha256": hashlib.sha256(dst.read_bytes()).hexdigest()[:16],
                      "built": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                             time.localtime(dst.stat().st_mtime))}
    MTLSD, BSSL = d / "mtlsd", d / "bssl"
    return info


def prepare():
    for d in (W, LOGS, W / "www", W / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    for f in LOGS.glob("*.log"):
        f.unlink()
    (W / "www" / "64").write_bytes(b"0123456789abcdef" * 4)
    (W / "www" / "1m").write_bytes(os.urandom(1 << 20))
    for side in ("client", "server"):
        d = PKI / side
        (W / f"haproxy-{side}.pem").write_bytes((d / "tls.crt").read_bytes()
                                                 + (d / "tls.key").read_bytes())
        os.chmod(W / f"haproxy-{side}.pem", 0o600)


def start_backends():
    user = "user root;\n" if os.geteuid() == 0 else ""
    tmp = W / "tmp"
    conf = write(W / "nginx-backend.conf", f"""{user}worker_processes 1;
daemon off;
pid {W / 'nginx-backend.pid'};
error_log {LOGS / 'nginx-backend.error.log'} warn;
worker_rlimit_nofile {NOFILE};
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{BACK['http']};
        root {W / 'www'};
        location / {{ }}
    }}
}}
""")
    web = start("nginx-backend", ["nginx", "-p", W, "-e", LOGS / "nginx-backend.error.log",
                                   "-c", conf], CPU_BACKEND)
    echo = start("echo-backend", [sys.executable, BENCH / "idleconns.py", "echo", "--listen",
                                  f"127.0.0.1:{BACK['echo']}"], CPU_BACKEND)
    wait_listening([BACK["http"], BACK["echo"]], [web, echo])
    check_path(BACK["http"])
    return web, echo


def main():
    unknown = [p for p in PEERS if p not in ALL_PEERS]
    if unknown:
        print(f"bench: unknown peer(s) {unknown}; known: {' '.join(ALL_PEERS)}", file=sys.stderr)
        return 2
    prepare()
    binaries = snapshot_binaries()
    setup_ports()
    all_scen = ["keepalive", "conn", "bulk", "latency", "idle"]
    resume_scen = {"conn": ["conn"], "all": all_scen, "none": []}.get(RESUME_SCENARIOS)
    if resume_scen is None:
        resume_scen = RESUME_SCENARIOS.replace(",", " ").split()
    meta = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(),
        "binaries": binaries,
        "settings": {"reps": REPS, "duration_s": DURATION, "iperf_s": IPERF_TIME,
                     "idle_conns": IDLE_CONNS, "idle_conns_wanted": IDLE_CONNS_WANTED,
                     "peers": PEERS, "quick": QUICK,
                     "resume_scenarios": resume_scen, "base_port": BASE,
                     "maxconn": MAXCONN, "nofile": NOFILE},
        "pinning": {"load_generator": CPU_LOAD, "backend": CPU_BACKEND,
                    "client_proxy": CPU_CLIENT, "server_proxy": CPU_SERVER},
    }
    results_path = OUT / "results.json"
    runs = []

    def save():
        meta["machine"]["loadavg_now"] = Path("/proc/loadavg").read_text().split()[:3]
        meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"meta": meta, "runs": runs}, indent=1) + "\n")
        tmp.replace(results_path)

    log(f"ports {BASE}..{BASE + 31}; pinning load={CPU_LOAD} backend={CPU_BACKEND} "
        f"client={CPU_CLIENT} server={CPU_SERVER}; reps={REPS} duration={DURATION}s "
        f"idle_conns={IDLE_CONNS}")
    log("crypto floor: bssl speed")
    meta["crypto"] = crypto_floor()
    save()
    start_backends()
    passes = [("full", False, all_scen)]
    if resume_scen:
        passes.append(("resumed", True, resume_scen))
    for rep in range(1, REPS + 1):
        for pname, resumption, scen in passes:
            for peer in PEERS:
                log(f"rep {rep}/{REPS}, pass {pname}")
                m, raw, errors = run_peer(peer, resumption, scen)
                runs.append({"rep": rep, "pass": pname, "peer": peer, "metrics": m,
                             "errors": errors, "raw": raw})
                save()
    save()
    log(f"results in {results_path}")
    return 0


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    try:
        rc = main()
    finally:
        stop_all()
        try:
            PIDFILE.unlink()
        except OSError:
            pass
    sys.exit(rc)
