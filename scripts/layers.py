#!/usr/bin/env python3
"""Checks that the core's imports run one way (ARCHITECTURE.md).

Every file under core/src/<layer>/ may name (through `crate::` paths, in
`use` items or inline; comments and inline tests aside) only files of its
own layer or of a layer below it, in this order:

    util < timing < durable < ledger < observe < engine < api

and no two files may import each other, directly or through others (no
cycle). The crate root's files (lib.rs, fmt.rs, trace.rs, defmt_impls.rs,
serde_impls.rs) wire the layers together and are not checked.

Usage: python3 scripts/layers.py [core/src]    (exit status 1 on a violation)
"""

import os
import re
import sys

ORDER = ["util", "timing", "durable", "ledger", "observe", "engine", "api"]


def parse_tree(text):
    """The paths of a use tree (`a::{b, c::d as e}`), as lists of segments."""
    out = []
    pos = 0

    def tree(i, prefix):
        segs = []
        while True:
            while text[i].isspace():
                i += 1
            if text[i] == "{":
                i += 1
                while True:
                    while text[i].isspace() or text[i] == ",":
                        i += 1
                    if text[i] == "}":
                        return i + 1
                    i = tree(i, prefix + segs)
            m = re.compile(r"(\*|[A-Za-z_]\w*(?:\s+as\s+[A-Za-z_]\w*)?)").match(text, i)
            i = m.end()
            while i < len(text) and text[i].isspace():
                i += 1
            if text.startswith("::", i):
                segs.append(m.group(1))
                i += 2
                continue
            out.append(prefix + segs + [m.group(1).split()[0]])
            return i

    while pos < len(text):
        while pos < len(text) and (text[pos].isspace() or text[pos] == ","):
            pos += 1
        if pos >= len(text):
            break
        pos = tree(pos, [])
    return out


def edges_of(src):
    edges = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.relpath(os.path.join(root, name), src)
            if "/" not in path:
                continue
            module = path[:-3].removesuffix("/mod")
            text = open(os.path.join(root, name)).read().split("#[cfg(test)]\nmod tests")[0]
            text = "\n".join(line for line in text.split("\n") if not line.strip().startswith("//"))
            paths = []
            for m in re.finditer(r"\buse crate::(.*?);", text, re.S):
                paths += parse_tree(m.group(1))
            rest = re.sub(r"\buse crate::(.*?);", "", text, flags=re.S)
            paths += [m.group(1).split("::") for m in re.finditer(r"crate::((?:\w+::)*\w+)", rest)]
            targets = set()
            for p in paths:
                if p[0] in ORDER and len(p) > 1 and f"{p[0]}/{p[1]}" != module:
                    targets.add(f"{p[0]}/{p[1]}")
            edges[module] = targets
    return edges


def cycles(edges):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "core", "src")
    edges = edges_of(src)
    problems = []
    for module, targets in sorted(edges.items()):
        layer = module.split("/")[0]
        if layer not in ORDER:
            problems.append(f"{module}: not in a known layer ({', '.join(ORDER)})")
            continue
        for target in sorted(targets):
            if ORDER.index(target.split("/")[0]) > ORDER.index(layer):
                problems.append(f"{module} imports {target}, a layer above it")
    for component in cycles(edges):
        problems.append("import cycle: " + " <-> ".join(component))
    for problem in problems:
        print(problem)
    if problems:
        print("the core's imports must run one way: see ARCHITECTURE.md")
        return 1
    print(f"{len(edges)} files, imports run one way ({' < '.join(ORDER)}), no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main())
