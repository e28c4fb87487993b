#!/usr/bin/env python3
"""An attacker's flood of a TCP port (an HTTP one for every shape but idle), run as its
own process (no shared GIL with the test's clients); harness.Flood runs it. It holds PER_SOURCE connections from each of SOURCES loopback addresses
(127.0.0.FIRST, FIRST+1, ...) to 127.0.0.1:PORT, all of one SHAPE, and opens a new one
as soon as the server closes one, as fast as one client can:

  idle       connects and sends nothing
  keepalive  a tiny request every 2 s on a kept-alive connection, answers read
  slowloris  a request head one byte every 0.5 s, never finished
  pipeline   100 pipelined `GET PATH` requests at once, answers never read
  request    `GET PATH` once, answer not read (a slow probe's deferred answer)

Usage: flood.py PORT SHAPE PATH FIRST SOURCES PER_SOURCE SECONDS [tls]
With "tls", each connection completes a TLS handshake first (not verifying), except for
the idle shape, which stays silent before it. It prints "holding N" once its connections
are open, then, when SECONDS have passed or its standard input closes, "opened N
closed-by-server M" and exits.
"""
import select
import selectors
import socket
import ssl
import sys
import time


# Shapes that never read what the server sends, and the TCP states (tcp_states.h) of a
# connection the server has closed.
UNREAD = ("pipeline", "request")
CLOSED_STATES = (7, 8)  # TCP_CLOSE, TCP_CLOSE_WAIT


def main():
    port, shape, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    first, sources, per_source = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    seconds = float(sys.argv[7])
    tls = len(sys.argv) > 8 and sys.argv[8] == "tls" and shape != "idle"
    tls_context = ssl._create_unverified_context()
    request = f"GET {path} HTTP/1.1\r\nHost: pod\r\n\r\n".encode()
    slow_head = request[:-2]
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    conns = {}  # socket -> [source, next action time, bytes of the slow head sent]
    opened = closed = 0

    def open_one(source):
        nonlocal opened
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.bind((source, 0))
        except OSError:
            s.close()
            return
        s.connect_ex(("127.0.0.1", port))
        # Connected before the first send: loopback completes the handshake at once,
        # and a send on a socket still connecting fails.
        _, writable, _ = select.select([], [s], [], 1.0)
        if writable and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            if tls:
                try:
                    s.setblocking(True)
                    s.settimeout(2)
                    s = tls_context.wrap_socket(s)
                    s.setblocking(False)
                except (OSError, ssl.SSLError):
                    s.close()
                    return
            try:
                if shape == "pipeline":
                    s.send(request * 100)
                elif shape == "request":
                    s.send(request)
            except OSError:
                pass
        if shape not in UNREAD:
            sel.register(s, selectors.EVENT_READ, s)
        conns[s] = [source, time.monotonic(), 0]
        opened += 1

    def drop(s):
        nonlocal closed
        if shape not in UNREAD:
            sel.unregister(s)
        conns.pop(s)
        s.close()
        closed += 1

    for i in range(sources):
        for _ in range(per_source):
            open_one(f"127.0.0.{first + i}")
    print(f"holding {len(conns)}", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1):
            if key.data is None:
                sys.stdin.readline()
                deadline = 0
                continue
            s = key.data
            try:
                gone = s.recv(65536) == b""
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                gone = False
            except OSError:
                gone = True
            if gone:
                source = conns[s][0]
                drop(s)
                open_one(source)
        now = time.monotonic()
        if shape in UNREAD:
            # Answers are never read, so a close shows only in the TCP state.
            for s, state in list(conns.items()):
                if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] in CLOSED_STATES:
                    drop(s)
                    open_one(state[0])
        for s, state in list(conns.items()):
            if now < state[1]:
                continue
            try:
                if shape == "keepalive":
                    s.send(request)
                    state[1] = now + 2
                elif shape == "slowloris" and state[2] < len(slow_head):
                    s.send(slow_head[state[2]:state[2] + 1])
                    state[2] += 1
                    state[1] = now + 0.5
                else:
                    state[1] = now + 3600
            except OSError:
                source = state[0]
                drop(s)
                open_one(source)
    print(f"opened {opened} closed-by-server {closed}", flush=True)


if __name__ == "__main__":
    main()
