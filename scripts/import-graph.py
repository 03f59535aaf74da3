#!/usr/bin/env python3
"""Checks the crate's module graph: no import cycles and the layout's dependency rules.

    python3 scripts/import-graph.py            # check; exit 1 with the cycles or broken rules
    python3 scripts/import-graph.py --print    # also print the edges between top-level modules

An edge A -> B means a file of module A names a path into module B (`use crate::b::…`,
`super::b::…`, `crate::b::f(…)` in code). Test code (`#[cfg(test)]` modules and `tests.rs`
files) is left out. Checked:

  * the top-level modules of src/ (authz, aws, crd, proxy, …) form no cycle;
  * inside every folder, its child modules (a file, or a folder taken whole) form no cycle;
    a module's own `mod.rs` is the folder itself, so children naming it (`super::Thing`) and
    it re-exporting them are not cycles;
  * DESIGN's rules: `crd` imports nothing internal, `proxy` never imports `operator`, `aws`
    imports neither `proxy` nor `operator`.
"""

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
RULES = [
    ("crd", None, "crd depends on nothing internal"),
    ("proxy", "operator", "proxy never imports operator"),
    ("aws", "proxy", "aws imports neither proxy nor operator"),
    ("aws", "operator", "aws imports neither proxy nor operator"),
]
ROOT_FILES = {"main.rs", "lib.rs"}


def module_of(path: Path) -> tuple:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts.pop()
    return tuple(parts)


def modules() -> dict:
    found = {}
    for path in sorted(ROOT.rglob("*.rs")):
        if path.name in ROOT_FILES and path.parent == ROOT:
            continue
        if path.name == "tests.rs" or path.stem.endswith("_tests"):
            continue
        found[module_of(path)] = path
    return found


def strip(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    # Test modules sit at the end of a file.
    m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text)
    return text[: m.start()] if m else text


def use_paths(tree: str) -> list:
    """Expands a use tree (`a::{b, c::{d, e}}`) into its paths."""
    tree = tree.strip()
    depth, split = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                split = i
                break
            depth += 1
    if split is None:
        return [re.split(r"\s+as\s+", tree)[0].strip()]
    prefix = tree[:split].rstrip(":")
    inner = tree[split + 1 : tree.rindex("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    parts.append(cur)
    out = []
    for part in parts:
        if part.strip():
            for p in use_paths(part):
                out.append(prefix + "::" + p if prefix else p)
    return out


def paths_in(text: str) -> list:
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        found.extend(use_paths(m.group(1)))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    found.extend(m.group(0) for m in re.finditer(r"\b(?:crate|super|self)(?:::\w+)+", body))
    return found


def resolve(path: str, here: tuple, mods: dict):
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    # `self` is the module itself (a folder's `mod.rs` is the folder), `super` its parent.
    base = list(here)
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    elif segs[0] in ("super", "self"):
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        # A path relative to the current module: a child module declared here.
        base = list(here)
        if not mods.get(tuple(base + segs[:1])):
            return None
    best = tuple(base) if tuple(base) in mods or not base else None
    for i in range(1, len(segs) + 1):
        cand = tuple(base + segs[:i])
        if cand in mods:
            best = cand
    return best


def graph(mods: dict) -> dict:
    edges = defaultdict(set)
    for mod, path in mods.items():
        text = strip(path.read_text())
        for p in paths_in(text):
            target = resolve(p, mod, mods)
            if target and target != mod:
                edges[mod].add(target)
    return edges


def cycles(nodes: set, edges: dict) -> list:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in nodes:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    mods = modules()
    edges = graph(mods)
    problems = []
    # Every folder: its children (files or folders taken whole) form no cycle.
    folders = {()} | {m[:-1] for m in mods if len(m) > 1} | {m for m, p in mods.items() if p.name == "mod.rs"}
    for folder in sorted(folders):
        depth = len(folder)
        children = {m[: depth + 1] for m in mods if len(m) > depth and m[:depth] == folder}
        collapsed = defaultdict(set)
        for src, targets in edges.items():
            for dst in targets:
                if len(src) > depth and len(dst) > depth and src[:depth] == folder and dst[:depth] == folder:
                    a, b = src[: depth + 1], dst[: depth + 1]
                    if a != b:
                        collapsed[a].add(b)
        for comp in cycles(children, collapsed):
            where = "/".join(folder) or "src (top-level modules)"
            ties = [f"    {'::'.join(a)} -> {'::'.join(b)}" for a in comp for b in sorted(collapsed[a]) if b in comp]
            problems.append(f"import cycle in {where}: {', '.join('::'.join(c) for c in comp)}\n" + "\n".join(ties))
    top = defaultdict(set)
    for src, targets in edges.items():
        for dst in targets:
            if src[0] != dst[0]:
                top[src[0]].add(dst[0])
    for frm, to, rule in RULES:
        bad = top.get(frm, set()) if to is None else ({to} & top.get(frm, set()))
        for b in sorted(bad):
            files = sorted(str(mods[s].relative_to(ROOT.parent)) for s, ts in edges.items() if s[0] == frm and any(t[0] == b for t in ts))
            problems.append(f"rule broken ({rule}): {frm} imports {b} in {', '.join(files)}")
    if "--print" in sys.argv:
        for frm in sorted(top):
            print(f"{frm} -> {', '.join(sorted(top[frm]))}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"module graph: {len(mods)} modules, {sum(len(t) for t in edges.values())} edges, no cycles, layout rules hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
