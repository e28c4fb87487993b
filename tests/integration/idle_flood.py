#!/usr/bin/env python3
"""An attacker's idle-connection flood, run as its own process (no shared GIL with the
test's clients): it holds SIZE TCP connections to 127.0.0.1:PORT that never send a byte,
and opens a new one as soon as the server closes one, as fast as one client can.

Usage: idle_flood.py PORT SIZE SECONDS
It prints "holding" once SIZE connections are open, then, when SECONDS have passed or
its standard input closes, "opened N closed-by-server M" and exits.
"""
import selectors
import socket
import sys
import time


def main():
    port, size, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    sel = selectors.DefaultSelector()
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    opened = closed = 0
    held = 0

    def open_one():
        nonlocal opened, held
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_READ, s)
        opened += 1
        held += 1

    for _ in range(size):
        open_one()
    print("holding", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1):
            if key.data is None:
                sys.stdin.readline()
                deadline = 0
                continue
            s = key.data
            try:
                gone = s.recv(1) == b""
            except (BlockingIOError, InterruptedError):
                gone = False
            except OSError:
                gone = True
            if gone:
                sel.unregister(s)
                s.close()
                held -= 1
                closed += 1
                open_one()
    print(f"opened {opened} closed-by-server {closed}", flush=True)


if __name__ == "__main__":
    main()
