#!/usr/bin/env python3
"""Import loops: a `crate::X` reference graph between the library's top-level modules, and a
`super::X` / `crate::F::X` graph between the submodules of each folder module F (dispatch,
daemon, store, service, cli… ; mod.rs as `F(mod.rs)`).
Comments and `#[cfg(test)]` code (test modules, test-only files) are left out. Prints the edges
and every strongly connected component with more than one module; exits 1 on a loop between
top-level modules, on any loop in a STRICT folder, and on a loop among siblings elsewhere.
Usage: python3 scripts/import_loops.py [repo root]"""
import os, re, sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else '.'
SRC = os.path.join(ROOT, 'src')

def code_of(path):
    text = open(path, encoding='utf-8').read()
    out, skip_depth, pending_cfg_test = [], None, False
    depth = 0
    for line in text.split('\n'):
        s = line.strip()
        if skip_depth is not None:
            depth += line.count('{') - line.count('}')
            if depth <= skip_depth:
                skip_depth = None
            continue
        if s.startswith('#[cfg(test)]'):
            pending_cfg_test = True
            continue
        if pending_cfg_test:
            pending_cfg_test = False
            if s.startswith('mod ') and s.endswith(';'):
                continue  # a test-only file: left out below by name
            if s.startswith('mod ') or s.startswith('pub mod ') or s.startswith('fn ') or s.startswith('pub(crate) fn '):
                if '{' in line:
                    skip_depth = depth
                    depth += line.count('{') - line.count('}')
                    if depth <= skip_depth:
                        skip_depth = None
                continue
        code = re.sub(r'//.*', '', line)
        depth += code.count('{') - code.count('}')
        out.append(code)
    return '\n'.join(out)

def test_only_files(folder):
    """Files declared `#[cfg(test)] mod x;` in folder/mod.rs (or the module's own file)."""
    names = set()
    for f in os.listdir(folder):
        if f.endswith('.rs'):
            t = open(os.path.join(folder, f), encoding='utf-8').read()
            names |= set(re.findall(r'#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+(\w+)\s*;', t))
    return names

def files_of(path):
    if os.path.isdir(path):
        for d, _, fs in os.walk(path):
            skip = test_only_files(d)
            for f in fs:
                if f.endswith('.rs') and f[:-3] not in skip:
                    yield os.path.join(d, f)
    else:
        yield path

def sccs(nodes, edges):
    index, low, stack, on, out, i = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            out.append(sorted(comp))
    for v in sorted(nodes):
        if v not in index: visit(v)
    return [c for c in out if len(c) > 1]

def report(title, nodes, edges, strict=True):
    print(f'## {title}: {len(nodes)} modules, {sum(len(v) for v in edges.values())} edges')
    for a in sorted(nodes):
        print(f'  {a} -> {", ".join(sorted(edges.get(a, ()))) or "(none)"}')
    loops = sccs(nodes, edges)
    if strict:
        print(f'  loops: {loops if loops else "none"}')
        return loops
    # Outside STRICT folders, a cycle through mod.rs (children using the items mod.rs defines,
    # mod.rs using theirs) is reported, not failed; a cycle among siblings alone fails.
    shared = [c for c in loops if any(n.endswith('(mod.rs)') for n in c)]
    siblings = [c for c in loops if c not in shared]
    print(f'  loops: {siblings if siblings else "none"}'
          + (f'; through mod.rs (not failed here): {shared}' if shared else ''))
    return siblings

# Top-level modules of the library (lib.rs's `pub mod`), the binary's (main.rs, cli/) apart.
lib = open(os.path.join(SRC, 'lib.rs'), encoding='utf-8').read()
top = re.findall(r'^pub mod (\w+);', lib, re.M)
edges = {}
for m in top:
    path = os.path.join(SRC, m) if os.path.isdir(os.path.join(SRC, m)) else os.path.join(SRC, m + '.rs')
    refs = set()
    for f in files_of(path):
        refs |= set(re.findall(r'\bcrate::(\w+)', code_of(f)))
        # `use crate::{a, b::c}` groups.
        for grp in re.findall(r'\bcrate::\{([^}]*)\}', code_of(f)):
            refs |= set(re.findall(r'(?:^|,)\s*(\w+)', grp))
    edges[m] = {r for r in refs if r in top and r != m}
bad = report('top-level modules (crate::X)', set(top), edges)

# Each folder module's submodules (dispatch, daemon, store, service, cli…): in folder F,
# `super::X` from a child is X in F (a sibling, or mod.rs's own item), `crate::F::X` likewise;
# mod.rs's `X::` paths reach its children. A subfolder counts as one node.
# Folders held to no cycle at all, mod.rs included: mod.rs only declares and re-exports.
STRICT = {'dispatch', 'cli'}


def folder_graph(folder, crate_path):
    D = os.path.join(SRC, folder)
    skip = test_only_files(D)
    subs = sorted({f[:-3] if f.endswith('.rs') else f for f in os.listdir(D)
                   if (f.endswith('.rs') and f != 'mod.rs' and f[:-3] not in skip)
                   or os.path.isdir(os.path.join(D, f))})
    def files(s):
        p = os.path.join(D, s)
        return list(files_of(p)) if os.path.isdir(p) else [p + '.rs']
    dedges = {}
    root = f'{folder}(mod.rs)'
    # Names mod.rs re-exports from a child (`pub use child::{A, B}`) are the child's.
    reexported = {}
    mod_code = code_of(os.path.join(D, 'mod.rs'))
    for child, body in re.findall(r'\bpub(?:\([a-z]+\))? use (\w+)::((?:\{[^}]*\})|\w+)\s*;', mod_code):
        if child in subs:
            for n in (re.findall(r'(?:^|[{,])\s*(\w+)', body) if body.startswith('{') else [body]):
                reexported[n] = child
    for s in subs + ['mod']:
        refs = set()
        for f in (files(s) if s != 'mod' else [os.path.join(D, 'mod.rs')]):
            code = code_of(f)
            nested = os.path.dirname(f) != D  # a file of a subfolder: its `super` is the subfolder
            if s == 'mod':
                refs |= {x for x in re.findall(r'\b(\w+)::', code) if x in subs}
                continue
            pat = r'\b(?:' + ('super::super' if nested else 'super') + '|' + re.escape(crate_path) + r')::((?:\{[^}]*\})|\w+|\*)'
            for path in re.findall(pat, code):
                names = re.findall(r'(?:^|[{,])\s*(\w+|\*)', path) if path.startswith('{') else [path]
                for n in names:
                    if n == 'super':
                        continue
                    # `super::*`: everything mod.rs has, counted as a use of mod.rs itself.
                    refs.add(n if n in subs else reexported.get(n, 'mod'))
        name = root if s == 'mod' else s
        dedges[name] = {(root if r == 'mod' else r) for r in refs if r != s}
    return report(f'{folder} submodules (super::X, {crate_path}::X)', set(dedges), dedges,
                  strict=folder in STRICT)

for folder in sorted(os.listdir(SRC)):
    if os.path.isdir(os.path.join(SRC, folder)) and os.path.exists(os.path.join(SRC, folder, 'mod.rs')):
        crate_path = 'crate::' + folder
        bad += folder_graph(folder, crate_path)
sys.exit(1 if bad else 0)
