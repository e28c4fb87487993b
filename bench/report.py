#!/usr/bin/env python3
"""Renders bench/out/results.json (written by bench/bench.py) as a markdown report.

Usage: report.py [results.json] [--agg median|best]   (AGG in the environment also works)

Each figure is aggregated over the repetitions (median by default: for two repetitions
that is their mean; "best" takes the highest of a higher-is-better figure and the lowest
of a lower-is-better one), then shown with its ratio to HAProxy (xH) and to the direct
run (xD), both measured in the same run. A ratio is always peer / reference, whichever
way is better.
"""
import json
import os
import statistics
import sys
from pathlib import Path

PEER_LABEL = {"mtlsd": "mtlsd", "haproxy": "HAProxy", "nginx": "nginx", "stunnel": "stunnel",
              "tcp-relay": "TCP relay (no TLS)", "direct": "direct"}

# key, label, format, better ("hi"/"lo")
FULL_METRICS = [
    ("ka_rps", "(a) keep-alive: requests/s", "{:,.0f}", "hi"),
    ("ka_p50_ms", "(a) keep-alive: p50 latency, ms", "{:.2f}", "lo"),
    ("ka_p90_ms", "(a) keep-alive: p90 latency, ms", "{:.2f}", "lo"),
    ("ka_p99_ms", "(a) keep-alive: p99 latency, ms", "{:.2f}", "lo"),
    ("ka_cpu_per_10k", "(a) CPU-s per 10k requests, both sides", "{:.3f}", "lo"),
    ("conn_rate", "(b) new connections/s (full handshakes)", "{:,.0f}", "hi"),
    ("conn_p99_ms", "(b) p99 latency, ms", "{:.2f}", "lo"),
    ("conn_cpu_per_1k", "(b) CPU-s per 1k connections, both sides", "{:.3f}", "lo"),
    ("down_gbps", "(c) bulk server→client, wrk 1 MiB × 4 conns, Gbit/s", "{:.2f}", "hi"),
    ("down_cpu_per_gb", "(c) CPU-s per GB server→client, both sides", "{:.3f}", "lo"),
    ("up_gbps", "(c) bulk client→server, iperf3, Gbit/s", "{:.2f}", "hi"),
    ("up_cpu_per_gb", "(c) CPU-s per GB client→server, both sides", "{:.3f}", "lo"),
    ("lat_p50_us", "(e) 64-byte ping-pong, one connection: p50 round trip, µs", "{:.0f}", "lo"),
    ("lat_p90_us", "(e) p90 round trip, µs", "{:.0f}", "lo"),
    ("lat_p99_us", "(e) p99 round trip, µs", "{:.0f}", "lo"),
    ("rss_idle_client_kib", "(d) RSS idle, client side, KiB", "{:,.0f}", "lo"),
    ("rss_idle_server_kib", "(d) RSS idle, server side, KiB", "{:,.0f}", "lo"),
    ("rss_after_ka_client_kib", "(d) RSS after (a), client side, KiB", "{:,.0f}", "lo"),
    ("rss_after_ka_server_kib", "(d) RSS after (a), server side, KiB", "{:,.0f}", "lo"),
    ("rss_conns_client_kib", "(d) RSS with {n} idle conns, client side, KiB", "{:,.0f}", "lo"),
    ("rss_conns_server_kib", "(d) RSS with {n} idle conns, server side, KiB", "{:,.0f}", "lo"),
    ("rss_conns_closed_client_kib", "(d) RSS once they are closed, client side, KiB",
     "{:,.0f}", "lo"),
    ("rss_conns_closed_server_kib", "(d) RSS once they are closed, server side, KiB",
     "{:,.0f}", "lo"),
    ("kib_per_conn_client", "(d) KiB per idle relayed connection, client side", "{:.1f}", "lo"),
    ("kib_per_conn_server", "(d) KiB per idle relayed connection, server side", "{:.1f}", "lo"),
]
RESUMED_METRICS = [
    ("conn_rate", "(b) new connections/s (resumption on)", "{:,.0f}", "hi"),
    ("conn_p99_ms", "(b) p99 latency, ms", "{:.2f}", "lo"),
    ("conn_cpu_per_1k", "(b) CPU-s per 1k connections, both sides", "{:.3f}", "lo"),
]
BETTER = {k: b for k, _, _, b in FULL_METRICS + RESUMED_METRICS}
BETTER.update({"ka_cpu_per_10k_client": "lo", "ka_cpu_per_10k_server": "lo",
               "conn_cpu_per_1k_client": "lo", "conn_cpu_per_1k_server": "lo",
               "down_cpu_per_gb_client": "lo", "down_cpu_per_gb_server": "lo",
               "up_cpu_per_gb_client": "lo", "up_cpu_per_gb_server": "lo",
               "kib_per_conn": "lo"})


def aggregate(runs, pass_name, agg):
    """{peer: {metric: value}} over the repetitions of one pass."""
    vals = {}
    for r in runs:
        if r["pass"] != pass_name:
            continue
        for k, v in r["metrics"].items():
            if isinstance(v, (int, float)):
                vals.setdefault(r["peer"], {}).setdefault(k, []).append(v)
    out = {}
    for peer, ms in vals.items():
        for k, vs in ms.items():
            if agg == "best" and k in BETTER:
                v = max(vs) if BETTER[k] == "hi" else min(vs)
            else:
                v = statistics.median(vs)
            out.setdefault(peer, {})[k] = v
    return out


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "—" if r is None else f"{r:.2f}x"


def table(agg_vals, peers, metrics, n_idle):
    ref_h = agg_vals.get("haproxy", {})
    ref_d = agg_vals.get("direct", {})
    head = "| metric | " + " | ".join(PEER_LABEL.get(p, p) for p in peers) + " |"
    lines = [head, "|---|" + "---:|" * len(peers)]
    for key, label, fmt, _ in metrics:
        if not any(key in agg_vals.get(p, {}) for p in peers):
            continue
        cells = []
        for p in peers:
            v = agg_vals.get(p, {}).get(key)
            if v is None:
                cells.append("n/a" if p != "direct" else "—")
                continue
            s = fmt.format(v)
            rh = ratio(v, ref_h.get(key)) if p != "haproxy" else None
            rd = ratio(v, ref_d.get(key)) if p != "direct" else None
            extra = []
            if rh is not None:
                extra.append(f"{rh:.2f}×H")
            if rd is not None:
                extra.append(f"{rd:.2f}×D")
            cells.append(s + (f" ({', '.join(extra)})" if extra else ""))
        lines.append(f"| {label.format(n=f'{n_idle:,}')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def added_latency(full, peers):
    """What each proxy pair adds to a round trip at light load: its (e) figures minus the
    direct run's, and mtlsd's added time as a ratio of HAProxy's."""
    d = full.get("direct", {})
    rows = []
    for q in ("p50", "p90", "p99"):
        key = f"lat_{q}_us"
        if key not in d:
            return ""
        cells = []
        for p in peers:
            v = full.get(p, {}).get(key)
            cells.append("—" if p == "direct" or v is None else f"+{v - d[key]:.0f}")
        m, h = full.get("mtlsd", {}).get(key), full.get("haproxy", {}).get(key)
        r = ratio(None if m is None else m - d[key], None if h is None else h - d[key])
        rows.append(f"| {q} | " + " | ".join(cells) + f" | {fmt_ratio(r)} |")
    head = "| added µs | " + " | ".join(PEER_LABEL.get(p, p) for p in peers) + " | mtlsd ÷ HAProxy |"
    return "\n".join([head, "|---|" + "---:|" * (len(peers) + 1)] + rows)


def goals(full, resumed):
    m = full.get("mtlsd", {})
    h = full.get("haproxy", {})
    mr = resumed.get("mtlsd", {})
    hr = resumed.get("haproxy", {})
    rows = []

    def row(goal, target, mv, hv, fmt, ok, absolute=None):
        r = ratio(mv, hv)
        if absolute is not None:
            met = "n/a" if mv is None else ("yes" if absolute(mv) else "**no**")
        else:
            met = "n/a" if r is None else ("yes" if ok(r) else "**no**")
        rows.append(f"| {goal} | {target} | {'n/a' if mv is None else fmt.format(mv)} | "
                    f"{'n/a' if hv is None else fmt.format(hv)} | {fmt_ratio(r)} | {met} |")

    row("keep-alive requests/s", "≥ 1.2x", m.get("ka_rps"), h.get("ka_rps"), "{:,.0f}",
        lambda r: r >= 1.2)
    row("keep-alive p99 latency, ms", "no worse (≤ 1.0x)", m.get("ka_p99_ms"),
        h.get("ka_p99_ms"), "{:.2f}", lambda r: r <= 1.0)
    row("new mTLS connections/s, full handshakes", "≥ 1.5x", m.get("conn_rate"),
        h.get("conn_rate"), "{:,.0f}", lambda r: r >= 1.5)
    row("new mTLS connections/s, resumption on", "≥ 3x", mr.get("conn_rate"),
        hr.get("conn_rate"), "{:,.0f}", lambda r: r >= 3.0)
    row("bulk Gbit/s, server→client (wrk)", "≥ 1.3x", m.get("down_gbps"), h.get("down_gbps"),
        "{:.2f}", lambda r: r >= 1.3)
    row("bulk Gbit/s, client→server (iperf3)", "≥ 1.3x", m.get("up_gbps"), h.get("up_gbps"),
        "{:.2f}", lambda r: r >= 1.3)
    row("CPU-s per GB, server→client", "≤ 0.75x", m.get("down_cpu_per_gb"),
        h.get("down_cpu_per_gb"), "{:.3f}", lambda r: r <= 0.75)
    row("CPU-s per GB, client→server", "≤ 0.75x", m.get("up_cpu_per_gb"),
        h.get("up_cpu_per_gb"), "{:.3f}", lambda r: r <= 0.75)
    row("RSS idle, client side, KiB", "≤ 0.25x", m.get("rss_idle_client_kib"),
        h.get("rss_idle_client_kib"), "{:,.0f}", lambda r: r <= 0.25)
    row("RSS idle, server side, KiB", "≤ 0.25x", m.get("rss_idle_server_kib"),
        h.get("rss_idle_server_kib"), "{:,.0f}", lambda r: r <= 0.25)
    row("KiB per idle relayed connection, client side", "≤ 10 KiB",
        m.get("kib_per_conn_client"), h.get("kib_per_conn_client"), "{:.1f}", None,
        absolute=lambda v: v <= 10)
    row("KiB per idle relayed connection, server side", "≤ 10 KiB",
        m.get("kib_per_conn_server"), h.get("kib_per_conn_server"), "{:.1f}", None,
        absolute=lambda v: v <= 10)
    return "\n".join(["| goal (mtlsd ÷ HAProxy, same run) | target | mtlsd | HAProxy | "
                      "ratio | goal met? |", "|---|---|---:|---:|---:|---|"] + rows)


def crypto_section(c):
    if not c:
        return "(not measured)"
    lines = ["| operation | rate |", "|---|---:|"]
    for k, v in c.items():
        if "error" in v:
            lines.append(f"| {k} | error: {v['error']} |")
        elif "mb_per_s" in v:
            lines.append(f"| {k} | {v['mb_per_s']:,.0f} MB/s |")
        else:
            lines.append(f"| {k} | {v['ops_per_s']:,.0f} ops/s |")

    def ops(name):
        v = c.get(name) or {}
        return v.get("ops_per_s")

    sign, verify = ops("ECDSA P-256 signing"), ops("ECDSA P-256 verify")
    base = ops("Curve25519 base-point multiplication")
    arb = ops("Curve25519 arbitrary point multiplication")
    notes = []
    if sign and verify and base and arb:
        # One TLS 1.3 mutual handshake, both ends: each end signs its CertificateVerify
        # once, verifies the peer's CertificateVerify and the CA's signature on the peer's
        # leaf, generates an X25519 key and computes the shared secret.
        cost = 2 / sign + 4 / verify + 2 / base + 2 / arb
        notes.append(f"- Crypto-only ceiling for full mutual TLS 1.3 handshakes with both ends on "
                     f"one core (2 ECDSA signs + 4 verifies + 2 X25519 key generations + 2 "
                     f"X25519 shared secrets = {cost * 1e3:.3f} ms): **{1 / cost:,.0f} "
                     f"handshakes/s**.")
    g = c.get("AES-128-GCM (16384 bytes) seal")
    if g and "mb_per_s" in g:
        notes.append(f"- AES-128-GCM ceiling with both ends (seal + open, 16 KiB records) on "
                     f"one core: about **{g['mb_per_s'] / 2 * 8 / 1000:.1f} Gbit/s** "
                     f"(open assumed as fast as seal).")
    return "\n".join(lines + [""] + notes)


def cpu_sides(full, resumed, peers):
    rows = [("(a) per 10k keep-alive requests", full, "ka_cpu_per_10k"),
            ("(b) per 1k connections, full handshakes", full, "conn_cpu_per_1k"),
            ("(b) per 1k connections, resumption on", resumed, "conn_cpu_per_1k"),
            ("(c) per GB server→client", full, "down_cpu_per_gb"),
            ("(c) per GB client→server", full, "up_cpu_per_gb")]
    peers = [p for p in peers if p != "direct"]
    lines = ["| CPU-seconds, client side / server side | "
             + " | ".join(PEER_LABEL.get(p, p) for p in peers) + " |",
             "|---|" + "---:|" * len(peers)]
    for label, vals, key in rows:
        cells = []
        for p in peers:
            c = vals.get(p, {}).get(f"{key}_client")
            v = vals.get(p, {}).get(f"{key}_server")
            cells.append("" if c is None or v is None else f"{c:.3f} / {v:.3f}")
        if any(cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_rep(runs, peers):
    keys = [("ka_rps", "{:,.0f}"), ("ka_p99_ms", "{:.2f}"), ("conn_rate", "{:,.0f}"),
            ("down_gbps", "{:.2f}"), ("up_gbps", "{:.2f}"), ("kib_per_conn_client", "{:.1f}"),
            ("kib_per_conn_server", "{:.1f}")]
    lines = ["| pass | peer | " + " | ".join(k for k, _ in keys) + " |",
             "|---|---|" + "---:|" * len(keys)]
    for pname in ("full", "resumed"):
        for p in peers:
            rs = [r for r in runs if r["pass"] == pname and r["peer"] == p]
            if not rs:
                continue
            cells = []
            for k, f in keys:
                vs = [f.format(r["metrics"][k]) for r in rs if k in r["metrics"]]
                cells.append(" / ".join(vs) if vs else "")
            if any(cells):
                lines.append(f"| {pname} | {PEER_LABEL.get(p, p)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--agg=")]
    agg = os.environ.get("AGG") or "median"
    for a in sys.argv[1:]:
        if a.startswith("--agg="):
            agg = a.split("=", 1)[1]
    if agg not in ("median", "best"):
        print("report: AGG must be median or best", file=sys.stderr)
        return 2
    path = Path(args[0]) if args else Path(__file__).resolve().parent / "out" / "results.json"
    data = json.loads(path.read_text())
    meta, runs = data["meta"], data["runs"]
    st = meta["settings"]
    peers = [p for p in st["peers"] if any(r["peer"] == p for r in runs)]
    full = aggregate(runs, "full", agg)
    resumed = aggregate(runs, "resumed", agg)
    mach, v, pin = meta["machine"], meta["versions"], meta["pinning"]
    reps_done = max((r["rep"] for r in runs), default=0)
    out = []
    out.append(f"# mtlsd benchmark — {meta.get('started', '')}")
    out.append("")
    out.append(f"- **Machine**: {mach['nproc']} CPUs, {mach['cpu_model']}, kernel "
               f"{mach['kernel']}, {mach.get('mem_gib')} GiB; load average at start "
               f"{' '.join(mach.get('loadavg_start', []))}, at end "
               f"{' '.join(mach.get('loadavg_now', []))}.")
    load = float((mach.get("loadavg_start") or ["0"])[0])
    load_end = float((mach.get("loadavg_now") or ["0"])[0])
    foreign = [(r["metrics"][k], r["peer"], k[:-len("_foreign_pct")], r["rep"], r["pass"])
               for r in runs for k in r["metrics"] if k.endswith("_foreign_pct")]
    if foreign:
        mean = sum(f[0] for f in foreign) / len(foreign)
        top = max(foreign)
        out.append(f"- **Other load on the proxies' core** (its busy time not spent by the "
                   f"proxies under test, from /proc/stat): {mean:.0f}% on average over "
                   f"the measurements, at most {top[0]:.0f}% ({top[1]}, scenario {top[2]}, "
                   f"rep {top[3]}, {top[4]} pass).")
        noisy = mean > 5 or top[0] > 25
    else:
        noisy = max(load, load_end) > 0.5 * mach["nproc"]
    if noisy:
        out.append(f"- **Warning**: the machine was busy with other work (see above; load "
                   f"average {load:.1f} at start, {load_end:.1f} at end, {mach['nproc']} "
                   f"CPUs): the figures are noisy; compare ratios within this run only.")
    out.append(f"- **Pinning** (taskset): load generators (wrk, iperf3 client, idle-connection "
               f"client) on CPU {pin['load_generator']}; backends (nginx, iperf3 server, echo "
               f"server) on CPU {pin['backend']}; client-side proxy on CPU "
               f"{pin['client_proxy']}; server-side proxy on CPU {pin['server_proxy']}.")
    b = meta.get("binaries", {}).get("mtlsd", {})
    built = (f", binary sha256 {b['sha256']}… built {b['built']}" if b else "")
    dirty = " plus uncommitted changes" if v.get("mtlsd_dirty") else ""
    out.append(f"- **Versions**: {v.get('mtlsd')} (git {v.get('mtlsd_git')}{dirty}, Release, "
               f"BoringSSL 1530333b{built}); {v.get('haproxy')}, {v.get('nginx')} and "
               f"{v.get('stunnel')} on {v.get('openssl')}; load from {v.get('wrk')} and "
               f"{v.get('iperf3')}.")
    cap = ""
    if st.get("idle_conns_wanted", st["idle_conns"]) != st["idle_conns"]:
        cap = (f" ({st['idle_conns_wanted']:,} requested, capped so that a relaying process, "
               f"two descriptors per connection, stays within RLIMIT_NOFILE = "
               f"{st['nofile']:,}, and below stunnel's own client limit)")
    out.append(f"- **Settings**: {reps_done} repetition(s) of {st['reps']} requested, "
               f"**{agg}** over repetitions; {st['duration_s']} s per wrk scenario, "
               f"{st['iperf_s']} s iperf3, {st['idle_conns']:,} idle connections{cap}"
               f"{' (QUICK smoke run)' if st.get('quick') else ''}.")
    out.append("- **Every proxy**: one worker per side, TLS 1.3 only with "
               "TLS_AES_128_GCM_SHA256, X25519, the same ECDSA P-256 certificates, client "
               "certificates required and verified, the server's name/identity verified by "
               "the client side. `xH` = ratio to HAProxy, `xD` = ratio to the direct run "
               "(value ÷ reference, whichever way is better).")
    out.append("")
    out.append("## Goals")
    out.append("")
    out.append(goals(full, resumed))
    out.append("")
    out.append("## Client-side session resumption off (full handshakes)")
    out.append("")
    out.append(table(full, peers, FULL_METRICS, st["idle_conns"]))
    if resumed:
        out.append("")
        out.append("## Resumption on (each proxy's default)")
        out.append("")
        out.append(table(resumed, peers, RESUMED_METRICS, st["idle_conns"]))
    added = added_latency(full, peers)
    if added:
        out.append("")
        out.append("## Latency added at light load (scenario e, over the direct run)")
        out.append("")
        out.append(added)
    out.append("")
    out.append("## CPU by side")
    out.append("")
    out.append(cpu_sides(full, resumed, peers))
    out.append("")
    out.append("## Per repetition (rep 1 / rep 2 / ...)")
    out.append("")
    out.append(per_rep(runs, peers))
    errs = [(r["rep"], r["pass"], r["peer"], e) for r in runs for e in r["errors"]]
    counts = []
    for r in runs:
        m = r["metrics"]
        for k in ("ka_errors", "conn_errors", "down_errors", "idle_conns_failed"):
            if m.get(k):
                counts.append(f"rep {r['rep']} {r['pass']} {r['peer']}: {k} = {m[k]}")
    if errs or counts:
        out.append("")
        out.append("## Errors")
        out.append("")
        for rep, pname, peer, e in errs:
            first = e.strip().splitlines()[0] if e.strip() else e
            out.append(f"- rep {rep} {pname} {peer}: {first}")
        for c in counts:
            out.append(f"- {c}")
    out.append("")
    out.append("## Crypto floor (`bssl speed`, on the proxies' core)")
    out.append("")
    out.append(crypto_section(meta.get("crypto")))
    out.append("")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
