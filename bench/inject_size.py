#!/usr/bin/env python3
"""`mtlsd inject`'s throughput on large inputs: a generated multi-document YAML (or JSON
stream) of Deployments, about 1.3 KB each and shaped like real ones (labels, annotations,
two containers with ports, probes, env, resources), of each size asked for, injected
once; it prints the wall-clock time and MB/s of input. Time must grow linearly with the
size: MB/s stays about the same from one size to the next.

usage: bench/inject_size.py [MTLSD] [SIZE_MB ...]
  MTLSD defaults to build/release/mtlsd, the sizes to 2 8 50. TIMEOUT (seconds, 300)
  bounds each run; FORMAT=json writes the documents as a JSON stream instead.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent


def deployment(i):
    app = {"app": f"web-{i}", "tier": "frontend"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"web-{i}", "namespace": "shop", "labels": app,
                     "annotations": {"example.com/owner": f"team-{i % 17}"}},
        "spec": {
            "replicas": 3, "selector": {"matchLabels": {"app": f"web-{i}"}},
            "template": {
                "metadata": {"labels": app,
                             "annotations": {"example.com/version": f"1.{i % 10}"}},
                "spec": {"containers": [
                    {"name": "web", "image": f"registry.example.com/shop/web:1.42.{i % 100}",
                     "ports": [{"name": "http", "containerPort": 8080},
                               {"name": "metrics", "containerPort": 9090}],
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                        "periodSeconds": 5},
                     "livenessProbe": {"tcpSocket": {"port": 8080}},
                     "env": [{"name": "MODE", "value": "0755"},
                             {"name": "LEVEL", "value": "info"}],
                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                   "limits": {"cpu": "1", "memory": "256Mi"}}},
                    {"name": "cache", "image": "redis:7",
                     "ports": [{"containerPort": 6379}]}]}}}}


def block_yaml(value, indent=""):
    """Block-style YAML, every string double-quoted (JSON's quoting is YAML's too)."""
    lines = []
    if isinstance(value, dict):
        for key, v in value.items():
            if isinstance(v, (dict, list)):
                lines.append(f"{indent}{key}:")
                lines.extend(block_yaml(v, indent + ("  " if isinstance(v, dict) else "")))
            else:
                lines.append(f"{indent}{key}: {json.dumps(v)}")
    else:
        for item in value:
            sub = block_yaml(item, indent + "  ")
            lines.append(f"{indent}- {sub[0].lstrip()}")
            lines.extend(sub[1:])
    return lines


def generate(path, mb, as_json):
    size = 0
    count = 0
    with open(path, "w") as f:
        while size < mb * 1_000_000:
            doc = deployment(count)
            if as_json:
                text = json.dumps(doc, indent=2) + "\n"
            else:
                text = ("---\n" if count > 0 else "") + "\n".join(block_yaml(doc)) + "\n"
            f.write(text)
            size += len(text)
            count += 1
    return size, count


def main():
    args = sys.argv[1:]
    mtlsd = str(TOP / "build/release/mtlsd")
    if args and not args[0].replace(".", "").isdigit():
        mtlsd = args.pop(0)
    sizes = [float(a) for a in args] or [2, 8, 50]
    timeout = float(os.environ.get("TIMEOUT", "300"))
    as_json = os.environ.get("FORMAT") == "json"
    print(f"{'input':>10} {'documents':>10} {'seconds':>9} {'MB/s':>7}  {mtlsd}")
    with tempfile.TemporaryDirectory() as tmp:
        for mb in sizes:
            path = os.path.join(tmp, f"in.{'json' if as_json else 'yaml'}")
            size, docs = generate(path, mb, as_json)
            start = time.monotonic()
            try:
                r = subprocess.run([mtlsd, "inject", "-f", path], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=timeout, check=False)
            except subprocess.TimeoutExpired:
                print(f"{size / 1e6:>8.1f}MB {docs:>10} {'>' + str(int(timeout)):>9} {'-':>7}")
                continue
            took = time.monotonic() - start
            if r.returncode != 0:
                sys.exit(f"mtlsd inject exited {r.returncode} on {size / 1e6:.1f} MB")
            print(f"{size / 1e6:>8.1f}MB {docs:>10} {took:>9.2f} {size / 1e6 / took:>7.2f}")


if __name__ == "__main__":
    main()
