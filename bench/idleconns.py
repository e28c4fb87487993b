#!/usr/bin/env python3
"""Idle-connection helpers for bench/run.sh (Python 3 standard library only).

  idleconns.py echo --listen 127.0.0.1:PORT
      A single-threaded echo server (the backend of the memory scenario).

  idleconns.py hold --target 127.0.0.1:PORT --count N [--concurrency C]
                    [--open-timeout S] [--hold-max S]
      Opens N TCP connections to TARGET, at most C being set up at once; on each it
      sends one byte and waits for it to come back (so the whole relayed chain, TLS
      handshake included, is established). Then it prints one JSON line
      {"ok": .., "failed": .., "seconds": ..} on stdout and holds every connection open
      until stdin reaches EOF (or a line is read), SIGTERM arrives, or --hold-max
      seconds pass; then it closes them all and exits.

Both raise RLIMIT_NOFILE to its hard limit first.
"""
import argparse
import errno
import json
import resource
import selectors
import signal
import socket
import sys
import time


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def echo(args):
    sel = selectors.DefaultSelector()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(hostport(args.listen))
    srv.listen(4096)
    srv.setblocking(False)
    sel.register(srv, selectors.EVENT_READ, None)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        for key, _ in sel.select(timeout=0.5):
            if key.data is None:
                for _ in range(256):
                    try:
                        c, _ = srv.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # EMFILE and friends: try again later
                        break
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, 1)
                continue
            c = key.fileobj
            try:
                data = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(c)
                c.close()
                continue
            try:
                c.sendall(data)  # tiny payloads: never blocks in practice
            except OSError:
                sel.unregister(c)
                c.close()
    return 0


def hold(args):
    target = hostport(args.target)
    sel = selectors.DefaultSelector()
    held = []
    ok = failed = 0
    started = 0
    pending = {}  # socket -> (state, deadline)
    t0 = time.monotonic()
    stop_all = time.monotonic() + args.open_timeout
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def fail(s):
        nonlocal failed
        failed += 1
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        pending.pop(s, None)
        s.close()

    while (started < args.count or pending) and not stop and time.monotonic() < stop_all:
        while started < args.count and len(pending) < args.concurrency:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            started += 1
            rc = s.connect_ex(target)
            if rc not in (0, errno.EINPROGRESS):
                failed += 1
                s.close()
                continue
            pending[s] = time.monotonic() + 30
            sel.register(s, selectors.EVENT_WRITE, "connect")
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            if key.data == "connect":
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(s)
                    continue
                try:
                    s.send(b"x")
                except OSError:
                    fail(s)
                    continue
                sel.modify(s, selectors.EVENT_READ, "echo")
            else:
                try:
                    b = s.recv(16)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    b = b""
                if b != b"x":
                    fail(s)
                    continue
                sel.unregister(s)
                pending.pop(s, None)
                held.append(s)
                ok += 1
        now = time.monotonic()
        for s, deadline in list(pending.items()):
            if now > deadline:
                fail(s)
    for s in list(pending):
        fail(s)
    print(json.dumps({"ok": ok, "failed": failed + (args.count - started),
                      "seconds": round(time.monotonic() - t0, 3)}), flush=True)
    # Hold until told to stop (stdin line or EOF), SIGTERM, or --hold-max.
    sel2 = selectors.DefaultSelector()
    sel2.register(sys.stdin, selectors.EVENT_READ)
    deadline = time.monotonic() + args.hold_max
    while not stop and time.monotonic() < deadline:
        if sel2.select(timeout=0.5):
            break
    for s in held:
        s.close()
    return 0


def main():
    raise_nofile()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo")
    e.add_argument("--listen", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--target", required=True)
    h.add_argument("--count", type=int, required=True)
    h.add_argument("--concurrency", type=int, default=128)
    h.add_argument("--open-timeout", type=float, default=180)
    h.add_argument("--hold-max", type=float, default=300)
    args = p.parse_args()
    return echo(args) if args.cmd == "echo" else hold(args)


if __name__ == "__main__":
    sys.exit(main())
