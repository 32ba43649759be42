#!/usr/bin/env python3
"""Import loops: a reference graph between the library's top-level modules (`crate::X`, and any
`super::…` / `self::…` path that reaches another top-level module), and a graph between the
submodules of each folder module F (dispatch, daemon, store, service, cli… ; mod.rs as
`F(mod.rs)`) built from `super::X`, `crate::F::X`, `self::X` and, in a file that declares
`mod X`, bare `X::` paths.

The files are those the compiler reads: the module tree from lib.rs (and main.rs for the
binary's cli/), following `mod x;` to `x.rs` or `x/mod.rs`, and from a non-mod.rs file `x.rs`
to `x/y.rs`. Comments, string and char literals, and every item under `#[cfg(test)]` (test
modules, test-only files, test-only impls, fns, fields, statements…) are left out. Paths are
resolved from the module they are written in, so `super::` in `service/preflight/mod.rs` is
`service` and in `service/preflight/facts.rs` is `service::preflight`. A subfolder counts as one
node of its folder's graph; a path to a name that F's mod.rs re-exports or imports from a child
(`pub use child::{A, B}`, `use child::C`) counts as a use of that child, and one to a name that
mod.rs imports from outside F counts as no edge inside F.

Prints the edges and every strongly connected component with more than one module; exits 1 on
a loop between top-level modules, on any loop in a STRICT folder, and on a loop among siblings
elsewhere (looked for with mod.rs taken out, so one inside a larger component through mod.rs
still fails); a loop through mod.rs is reported, not failed.
Usage: python3 scripts/import_loops.py [repo root]"""
import os, re, sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else '.'
SRC = os.path.join(ROOT, 'src')

# ---------------------------------------------------------------------------------------------
# Source text: comments and literals blanked, `#[cfg(test)]` items blanked (offsets kept).

def blank(chars, a, b):
    for k in range(a, b):
        if chars[k] != '\n':
            chars[k] = ' '

def strip_comments_and_literals(t):
    """Comments, string/char literal contents (raw and byte strings too) become spaces."""
    c, n, i = list(t), len(t), 0
    raw = re.compile(r'b?r(#*)"')
    while i < n:
        ch = t[i]
        prev_ident = i > 0 and (t[i - 1].isalnum() or t[i - 1] == '_')
        if t.startswith('//', i):
            j = t.find('\n', i)
            j = n if j < 0 else j
            blank(c, i, j); i = j
        elif t.startswith('/*', i):
            depth, j = 1, i + 2
            while j < n and depth:
                if t.startswith('/*', j): depth += 1; j += 2
                elif t.startswith('*/', j): depth -= 1; j += 2
                else: j += 1
            blank(c, i, j); i = j
        elif ch in 'br' and not prev_ident and raw.match(t, i):
            m = raw.match(t, i)
            end = t.find('"' + m.group(1), m.end())
            end = n if end < 0 else end
            blank(c, m.end(), end); i = end + 1 + len(m.group(1))
        elif ch == '"' or (ch == 'b' and not prev_ident and t.startswith('b"', i)):
            j = i + 1 if ch == '"' else i + 2
            start = j
            while j < n and t[j] != '"':
                j += 2 if t[j] == '\\' else 1
            blank(c, start, j); i = j + 1
        elif ch == "'" or (ch == 'b' and not prev_ident and t.startswith("b'", i)):
            q = i if ch == "'" else i + 1
            if q + 1 < n and t[q + 1] == '\\':          # '\n', '\'', '\u{..}'
                j = q + 3
                while j < n and t[j] != "'":
                    j += 1
                blank(c, q + 1, j); i = j + 1
            elif q + 2 < n and t[q + 2] == "'":        # 'x'
                blank(c, q + 1, q + 2); i = q + 3
            else:                                        # a lifetime
                i = q + 1
        else:
            i += 1
    return ''.join(c)

CFG_TEST = re.compile(r'#\s*\[\s*cfg\s*\(\s*(?:test|all\s*\([^()]*\btest\b[^()]*\))\s*\)\s*\]')
ITEM_KW = re.compile(r'(?:pub\b|unsafe\b|async\b|extern\b|const\b|static\b|fn\b|impl\b|mod\b|'
                     r'struct\b|enum\b|union\b|trait\b|type\b|use\b|let\b|macro_rules\b)')

FIELD = re.compile(r'(?:pub(?:\s*\([^)]*\))?\s+)?(?:r#)?\w+\s*:(?!:)')

def skip_attrs(s, k):
    n = len(s)
    while True:
        while k < n and s[k].isspace(): k += 1
        m = re.compile(r'#\s*!?\s*\[').match(s, k)
        if m:
            k = m.end() - 1
            depth = 0
            while k < n:
                if s[k] == '[': depth += 1
                elif s[k] == ']':
                    depth -= 1
                    if depth == 0: k += 1; break
                k += 1
        else:
            return k

def item_end(s, k):
    """End of the item, statement, field or match arm starting at k."""
    n, depth = len(s), 0
    # A struct field `name: Type<A, B>,` ends at a comma outside its `<…>` (in an expression
    # `<` may compare: counted in fields only); an item or a `let` at `;` or its block's `}`
    # (`impl<A, B>`, `let x: M<A, B>`); a match arm or an expression at a comma too.
    angles, adepth = FIELD.match(s, k) is not None, 0
    comma_ends = angles or not ITEM_KW.match(s, k)
    while k < n:
        ch = s[k]
        if ch in '([{':
            depth += 1
        elif angles and ch == '<':
            adepth += 1
        elif angles and ch == '>' and s[k - 1] != '-':
            adepth = max(adepth - 1, 0)
        elif ch in ')]}':
            if depth == 0:
                return k                  # the enclosing block closes: the item ended
            depth -= 1
            if depth == 0 and ch == '}':
                j = k + 1
                while j < n and s[j].isspace(): j += 1
                if re.match(r'else\b', s[j:j + 5]):
                    k = j; continue
                if j < n and s[j] in ';,':
                    return j + 1
                return k + 1
        elif depth == 0 and (ch == ';' or (ch == ',' and comma_ends and not adepth)):
            return k + 1
        k += 1
    return n

def strip_cfg_test(s):
    if re.match(r'\s*#!\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]', s):
        return re.sub(r'[^\n]', ' ', s)   # the whole file is test-only
    c = list(s)
    pos = 0
    while True:
        m = CFG_TEST.search(s, pos)
        if not m:
            return ''.join(c)
        start = skip_attrs(s, m.end())
        end = item_end(s, start)
        blank(c, m.start(), end)
        pos = end

_code_cache = {}
def code_of(path):
    if path not in _code_cache:
        text = open(path, encoding='utf-8').read()
        _code_cache[path] = strip_cfg_test(strip_comments_and_literals(text))
    return _code_cache[path]

# ---------------------------------------------------------------------------------------------
# Module tree: each file with its module path from the crate root, and its inline modules.

MOD_DECL = re.compile(r'(?<![\w$])(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(?:r#)?(\w+)\s*([;{])')

def match_brace(s, k):
    depth = 0
    for j in range(k, len(s)):
        if s[j] == '{': depth += 1
        elif s[j] == '}':
            depth -= 1
            if depth == 0: return j
    return len(s)

class File:
    def __init__(self, path, modpath, child_dir):
        self.path, self.modpath, self.child_dir = path, tuple(modpath), child_dir
        self.code = code_of(path)
        # Inline modules `mod x { … }`: (start, end, name).
        self.inline = [(m.end() - 1, match_brace(self.code, m.end() - 1), m.group(1))
                       for m in MOD_DECL.finditer(self.code) if m.group(2) == '{']

    def inline_chain(self, pos):
        return [name for a, b, name in sorted(self.inline) if a < pos < b]

    def module_at(self, pos):
        return self.modpath + tuple(self.inline_chain(pos))

def load_tree(root_file):
    """Every file of the crate whose root is root_file, and the declared children of each
    module: {module path: set of child names} (file and inline modules)."""
    files, children = [], {}
    def visit(path, modpath, child_dir):
        f = File(path, modpath, child_dir)
        files.append(f)
        children.setdefault(f.modpath, set())
        for a, b, name in f.inline:
            children.setdefault(f.module_at(a), set()).add(name)   # a: the `{`, not inside
            children.setdefault(f.module_at(a + 1), set())
        for m in MOD_DECL.finditer(f.code):
            if m.group(2) != ';':
                continue
            chain = f.inline_chain(m.start())
            name = m.group(1)
            d = os.path.join(f.child_dir, *chain)
            parent = f.modpath + tuple(chain)
            children.setdefault(parent, set()).add(name)
            if os.path.exists(os.path.join(d, name + '.rs')):
                visit(os.path.join(d, name + '.rs'), parent + (name,), os.path.join(d, name))
            elif os.path.exists(os.path.join(d, name, 'mod.rs')):
                visit(os.path.join(d, name, 'mod.rs'), parent + (name,), os.path.join(d, name))
            else:
                print(f'warning: {os.path.relpath(f.path, ROOT)} declares mod {name}: no file',
                      file=sys.stderr)
    visit(root_file, (), os.path.dirname(root_file))
    return files, children

# ---------------------------------------------------------------------------------------------
# Paths: `crate::…`, `super::…`, `self::…`, and bare `child::…`, use-trees expanded.

IDENT = re.compile(r'(?:r#)?([A-Za-z_]\w*)')
ANCHOR = re.compile(r'(?<![\w$:])(?:r#)?([A-Za-z_]\w*)\s*::')

def parse_tree(s, p):
    """The use-tree at s[p:]: ([(segments, alias)], end)."""
    n = len(s)
    def ws(p):
        while p < n and s[p].isspace(): p += 1
        return p
    segs = []
    while True:
        p = ws(p)
        if p < n and s[p] == '{':
            out, p = [], p + 1
            while True:
                p = ws(p)
                if p >= n: return out, p
                if s[p] == '}': return out, p + 1
                sub, p = parse_tree(s, p)
                out += [(segs + x, alias) for x, alias in sub]
                p = ws(p)
                if p < n and s[p] == ',': p += 1
                elif p < n and s[p] != '}': return out, p  # not a use-tree after all
        if p < n and s[p] == '*':
            return [(segs + ['*'], None)], p + 1
        m = IDENT.match(s, p)
        if not m:
            return ([(segs, None)] if segs else []), p
        segs.append(m.group(1)); p = m.end()
        q = ws(p)
        if s.startswith('::', q):
            q = ws(q + 2)
            if q < n and s[q] == '<':             # turbofish: the path ends here
                return [(segs, None)], q
            p = q
            continue
        a = re.compile(r'as\s+(?:r#)?(\w+)').match(s, q)
        return [(segs, a.group(1) if a else None)], (a.end() if a else p)

def resolve(segs, here):
    """Absolute module path (from the crate root) of `segs` written in module `here`."""
    if segs[0] == 'crate':
        out, rest = [], segs[1:]
    elif segs[0] in ('self', 'super'):
        out, i = list(here), 0
        if segs[0] == 'self': i = 1
        while i < len(segs) and segs[i] == 'super':
            if not out: return None
            out.pop(); i += 1
        rest = segs[i:]
    else:
        out, rest = list(here), segs      # a child module declared here
    return tuple(out + [x for x in rest if x != 'self'])

def references(f, children):
    """(module written in, absolute target path, alias, is a `use`) for every path of f."""
    s, pos, out = f.code, 0, []
    while True:
        m = ANCHOR.search(s, pos)
        if not m:
            return out
        first = m.group(1)
        here = f.module_at(m.start())
        if first in ('crate', 'super', 'self') or first in children.get(here, ()):
            trees, end = parse_tree(s, m.start())
            is_use = re.search(r'\buse\s+$', s[max(0, m.start() - 40):m.start()]) is not None
            for segs, alias in trees:
                if not segs: continue
                t = resolve(segs, here)
                if t is not None:
                    out.append((here, t, alias, is_use))
            pos = max(end, m.end())
        else:
            pos = m.end()

# ---------------------------------------------------------------------------------------------

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
    # mod.rs using theirs) is reported, not failed; a cycle among siblings alone fails, also
    # when it lies inside a larger component through mod.rs (found with mod.rs taken out).
    roots = {n for n in nodes if n.endswith('(mod.rs)')}
    shared = [c for c in loops if roots & set(c)]
    siblings = sccs(nodes - roots, {a: set(b) - roots for a, b in edges.items() if a not in roots})
    print(f'  loops: {siblings if siblings else "none"}'
          + (f'; through mod.rs (not failed here): {shared}' if shared else ''))
    return siblings

# Top-level modules of the library (lib.rs's `mod`s), the binary's (main.rs, cli/) apart.
lib_files, lib_children = load_tree(os.path.join(SRC, 'lib.rs'))
top = sorted(lib_children[()])
edges = {m: set() for m in top}
for f in lib_files:
    if not f.modpath:
        continue
    for here, t, _, _ in references(f, lib_children):
        if t and t[0] in edges and t[0] != f.modpath[0]:
            edges[f.modpath[0]].add(t[0])
bad = report('top-level modules (crate::X)', set(top), edges)

# Each folder module's submodules (dispatch, daemon, store, service, cli…): in folder F, a path
# to F::X from a child is X in F (a sibling, or mod.rs's own item); mod.rs's paths reach its
# children. A subfolder counts as one node.
# Folders held to no cycle at all, mod.rs included: mod.rs only declares and re-exports.
STRICT = {'dispatch', 'cli'}

def folder_graph(folder, files, children):
    root = f'{folder}(mod.rs)'
    mine = [f for f in files if f.modpath[:1] == (folder,)]
    mod_file = next(f for f in mine if f.modpath == (folder,))
    # Children that are files (inline modules of mod.rs are part of mod.rs).
    subs = sorted({f.modpath[1] for f in mine if len(f.modpath) > 1})
    def node(t):
        if len(t) < 2 or t[1] == '*':
            return root
        if t[1] in subs:
            return t[1]
        return names.get(t[1], root)
    # Names mod.rs re-exports or imports (`pub use child::{A, B}`, `use crate::x::C`): the
    # child's, or (imported from outside the folder) none of the folder's.
    names = {}
    for here, t, alias, is_use in references(mod_file, children):
        if is_use and here == (folder,) and t[-1] != '*':
            if t[:1] != (folder,):
                names[alias or t[-1]] = None
            elif len(t) > 2 and t[1] in subs:
                names[alias or t[-1]] = t[1]
    dedges = {s: set() for s in subs + [root]}
    for f in mine:
        for here, t, _, _ in references(f, children):
            if t[:1] != (folder,):
                continue
            src = here[1] if len(here) > 1 and here[1] in subs else root
            dst = node(t)
            if dst is not None and dst != src:
                dedges[src].add(dst)
    return report(f'{folder} submodules (super::X, crate::{folder}::X)', set(dedges), dedges,
                  strict=folder in STRICT)

crates = [(lib_files, lib_children)]
if os.path.exists(os.path.join(SRC, 'main.rs')):
    crates.append(load_tree(os.path.join(SRC, 'main.rs')))
folders = []
for files, children in crates:
    for f in files:
        if len(f.modpath) == 1 and os.path.isdir(f.child_dir):
            folders.append((f.modpath[0], files, children))
for folder, files, children in sorted(folders, key=lambda x: x[0]):
    bad += folder_graph(folder, files, children)
sys.exit(1 if bad else 0)
