#!/usr/bin/env python3
"""Checks that mtlsd's modules depend on each other in one direction only.

A module is a header include/mtlsd/NAME.h with its sources src/NAME.c (tls_*.c belong
to tls; certgen.h is cmd_cert's header; config_render.c belongs to
config). Every #include
"mtlsd/..." edge must point to a module of the same or a lower layer (see LAYERS and
docs/architecture.md), and the module graph must have no cycle.

Usage: scripts/check-layers.py   (exit 0 when the layering holds; each violation is
printed with the file that causes it)
"""
import pathlib
import re
import sys

LAYERS = [
    ("base", "io exit defaults list textbuf timefmt file log netaddr json_syntax json_alloc duration jsonread "
             "sysinfo config app_probes injector_config identity "
             "http_parser iptables sandbox inject injector admission inject_cli yaml bufpool access_log proxy_header "
             "exposition kjson jsonpatch"),
    ("tls", "tls"),
    ("runtime", "stats runtime transport certload acceptor"),
    ("connection", "relay dial conn http_server prober"),
    ("services", "worker certwatch app_health health_metrics admin"),
    ("server", "server webhook"),
    ("main", "main cmd_cert cmd_iptables"),
]
ALIASES = {"http_admit": "http_server", "http_respond": "http_server", "yaml_write": "yaml", "probe_http": "prober", "probe_grpc": "prober", "stats_render": "stats", "inject_checks": "inject", "inject_probes": "inject", "certgen": "cmd_cert", "tls_certs": "tls", "tls_ctx": "tls", "tls_verify": "tls", "tls_session": "tls", "tls_bio": "tls", "tls_conn": "tls", "tls_x509": "tls", "config_render": "config"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"mtlsd/([a-z0-9_]+)\.h"', re.M)


def module_of(path):
    name = path.stem
    return ALIASES.get(name, name)


def main():
    top = pathlib.Path(__file__).resolve().parent.parent
    layer = {}
    for rank, (_, names) in enumerate(LAYERS):
        for name in names.split():
            layer[name] = rank
    files = sorted((top / "include/mtlsd").glob("*.h")) + sorted((top / "src").glob("*.c"))
    edges = {}
    errors = []
    for f in files:
        mod = module_of(f)
        if mod not in layer:
            errors.append(f"{f.relative_to(top)}: module {mod} is in no layer of {__file__}")
            continue
        for dep in INCLUDE.findall(f.read_text()):
            dep = ALIASES.get(dep, dep)
            if dep == mod:
                continue
            if dep not in layer:
                errors.append(f"{f.relative_to(top)}: includes {dep}, which is in no layer")
                continue
            edges.setdefault(mod, set()).add(dep)
            if layer[dep] > layer[mod]:
                errors.append(f"{f.relative_to(top)}: {mod} ({LAYERS[layer[mod]][0]}) includes "
                              f"{dep} ({LAYERS[layer[dep]][0]}), a higher layer")
    # A cycle among modules, even within one layer, is an error.
    state = {}

    def visit(node, stack):
        state[node] = 1
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                errors.append("include cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    for e in errors:
        print(e, file=sys.stderr)
    if not errors:
        print(f"layering holds: {len(files)} files, {len(layer)} modules, "
              f"{sum(len(v) for v in edges.values())} module dependencies, no cycle")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
