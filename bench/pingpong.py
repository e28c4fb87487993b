#!/usr/bin/env python3
"""The light-load latency scenario's client: one connection, SIZE bytes out and the same
SIZE bytes back, again and again for SECONDS (after a warm-up), and the round trips' p50,
p90 and p99 in microseconds as one JSON line. The interpreter's own time is in every
round trip alike; the report subtracts the direct run's to show what a proxy adds.

Usage: pingpong.py --connect 127.0.0.1:PORT [--seconds 5] [--size 64]
"""
import argparse
import json
import socket
import sys
import time

WARMUP = 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connect", required=True)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    host, port = args.connect.rsplit(":", 1)
    payload = b"x" * args.size
    rtts = []
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = None
        n = 0
        while deadline is None or time.perf_counter() < deadline:
            start = time.perf_counter_ns()
            s.sendall(payload)
            got = 0
            while got < args.size:
                chunk = s.recv(args.size - got)
                if not chunk:
                    print("pingpong: the connection closed", file=sys.stderr)
                    return 1
                got += len(chunk)
            n += 1
            if n > WARMUP:
                rtts.append(time.perf_counter_ns() - start)
            elif n == WARMUP:
                deadline = time.perf_counter() + args.seconds
    rtts.sort()

    def pct(p):
        return rtts[min(len(rtts) - 1, int(len(rtts) * p / 100))] / 1000

    print(json.dumps({"round_trips": len(rtts), "p50_us": pct(50), "p90_us": pct(90),
                      "p99_us": pct(99)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
