#!/usr/bin/env python3
"""Checks that mtlsd's layers depend on each other in one direction only.

The folders are the layers: every module is a header include/mtlsd/<layer>/<name>.h and
its sources src/<layer>/<name>*.c, so a file's layer is the folder it is in; there is no
table of modules to keep in step. A file may include "mtlsd/<other>/..." only when
<other> is its own layer or one it stands on (LAYERS, the order docs/architecture.md
draws); kube and the tls..proxy column stand side by side and meet only in cmd. A private
header (src/<layer>/<name>_internal.h) is included only from its own folder. And the
modules (a header's name, or a source's when it has none) must have no include cycle.
And the two maps of the tree, the picture in docs/architecture.md and the README's
module table, must name every module: they fail here when they drift.

Usage: scripts/check-layers.py   (exit 0 when the layering holds; each violation is
printed with the file that causes it)
"""
import pathlib
import re
import sys

# Each layer and the layers it stands on (its own included).
LAYERS = {
    "base": {"base"},
    "os": {"base", "os"},
    "config": {"base", "os", "config"},
    "kube": {"base", "os", "config", "kube"},
    "tls": {"base", "os", "config", "tls"},
    "net": {"base", "os", "config", "tls", "net"},
    "http": {"base", "os", "config", "tls", "net", "http"},
    "proxy": {"base", "os", "config", "tls", "net", "http", "proxy"},
    "cmd": {"base", "os", "config", "kube", "tls", "net", "http", "proxy", "cmd"},
}
PUBLIC = re.compile(r'^\s*#\s*include\s+"mtlsd/([a-z0-9_]+)/([a-z0-9_]+)\.h"', re.M)
PRIVATE = re.compile(r'^\s*#\s*include\s+"([a-z0-9_]+\.h)"', re.M)
FLAT = re.compile(r'^\s*#\s*include\s+"mtlsd/([a-z0-9_]+)\.h"', re.M)


def docs_drift(top, modules):
    """The modules of the tree that the two maps of it miss: the picture under
    docs/architecture.md's "Layers" and the README's module table."""
    problems = []
    arch = (top / "docs/architecture.md").read_text()
    picture = re.search(r"## Layers\n.*?```\n(.*?)```", arch, re.S)
    words = set(re.findall(r"[a-z0-9_]+", picture.group(1))) if picture else set()
    readme = (top / "README.md").read_text()
    table = re.search(r"\| layer \| module \| owns \|\n(.*?)\n\n", readme, re.S)
    named = set(re.findall(r"`([a-z0-9_]+)`", table.group(1))) if table else set()
    for mod in sorted(modules):
        if mod.endswith("_internal"):
            continue
        if mod not in words:
            problems.append(f"docs/architecture.md: the Layers picture misses the module {mod}")
        if mod not in named:
            problems.append(f"README.md: the module map misses the module {mod}")
    return problems


def main():
    top = pathlib.Path(__file__).resolve().parent.parent
    files = sorted((top / "include/mtlsd").rglob("*.h")) + sorted((top / "src").rglob("*.[ch]"))
    edges = {}
    modules = set()
    errors = []
    for f in files:
        rel = f.relative_to(top)
        parts = rel.parts
        base = 2 if parts[0] == "include" else 1
        if len(parts) != base + 2 or parts[base] not in LAYERS:
            errors.append(f"{rel}: not in a layer's folder ({', '.join(LAYERS)})")
            continue
        layer, mod = parts[base], f.stem
        modules.add(mod)
        text = f.read_text()
        for name in FLAT.findall(text):
            errors.append(f"{rel}: includes mtlsd/{name}.h, which names no layer")
        for dep_layer, dep in PUBLIC.findall(text):
            if dep_layer not in LAYERS or not (top / "include/mtlsd" / dep_layer /
                                               f"{dep}.h").exists():
                errors.append(f"{rel}: includes mtlsd/{dep_layer}/{dep}.h, which does not exist")
                continue
            if dep_layer not in LAYERS[layer]:
                errors.append(f"{rel}: {layer} includes mtlsd/{dep_layer}/{dep}.h, a layer it "
                              f"does not stand on")
            if dep != mod:
                edges.setdefault(mod, set()).add(dep)
        for header in PRIVATE.findall(text):
            if not (f.parent / header).exists():
                errors.append(f"{rel}: includes \"{header}\", which is no header of its folder")
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
    errors += docs_drift(top, modules)
    for e in errors:
        print(e, file=sys.stderr)
    if not errors:
        print(f"layering holds: {len(files)} files in {len(LAYERS)} layers, {len(modules)} "
              f"modules, {sum(len(v) for v in edges.values())} module dependencies, no cycle")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
