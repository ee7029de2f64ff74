#!/usr/bin/env python3
"""Reports import cycles between the files of each crate (docs: issue 13, "no import cycles").

    scripts/check-cycles.py                      every crate of the workspace (crates/*, cli)
    scripts/check-cycles.py --allow a,b          report the cycles of crates a and b, do not fail on them
    scripts/check-cycles.py DIR...               these crate directories (each with a Cargo.toml)
    scripts/check-cycles.py --self-test          run on the fixtures in scripts/testdata/check-cycles

A crate's module tree is followed from src/lib.rs (or src/main.rs) through its `mod` declarations
(`#[path]` included; src/bin/ holds separate crates and is skipped). File A depends on file B when
A names something of B: a `use` of `crate::`, `super::` or `self::` paths, or of a module declared
in scope, or such a path written in code. A path is resolved to the file that defines its item,
following re-exports (`pub use`), so `crate::Credentials` re-exported by lib.rs from
credentials.rs is an edge to credentials.rs. The crate root is the crate's facade: its `mod` lines
and its re-exports are not edges, but what its own code uses is. Unit tests (`#[cfg(test)]`
modules, inline or in their own files) are not part of the graph: a test may drive a file through
the API above it. Comments and string literals are ignored. Python 3 standard library only.

Exit status: 0 when no crate outside --allow has a cycle, 1 otherwise, 2 on usage errors.
"""

import argparse
import os
import re
import sys
from collections import deque

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """The text with comments and the insides of string and char literals blanked out (newlines
    kept, so offsets and line numbers do not move)."""
    out = list(text)
    n = len(text)
    i = 0

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (c in "rb" and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))
              and re.match(r'(br|r|b)(#*)"', text[i:i + 300])):
            # Raw and byte strings: r"..", r#".."#, b"..", br#".."#.
            m = re.match(r'(br|r|b)(#*)"', text[i:i + 300])
            raw, hashes = "r" in m.group(1), m.group(2)
            j = i + m.end()
            if raw:
                end = text.find('"' + hashes, j)
                end = n if end < 0 else end
            else:
                end = j
                while end < n and text[end] != '"':
                    end += 2 if text[end] == "\\" else 1
            blank(j, min(end, n))
            i = min(end + 1 + len(hashes), n)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, min(j, n))
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}'), or a lifetime ('a) which has no closing quote.
            m = re.match(r"'(\\u\{[0-9A-Fa-f]+\}|\\x[0-9A-Fa-f]{2}|\\.|[^\\'])'", text[i:])
            if m:
                blank(i + 1, i + m.end() - 1)
                i += m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def is_test_only(attributes):
    """Whether attributes put an item under `#[cfg(test)]`."""
    return re.search(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", attributes) is not None


def matching_brace(text, open_at):
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(text)


def tokenize_use(tree):
    return re.findall(r"::|[{}*,;]|" + IDENT, tree)


def parse_use_tree(tokens):
    """[(segments, alias, glob)] of a use tree's leaves."""
    out = []

    def subtree(i, prefix):
        path = list(prefix)
        while i < len(tokens):
            t = tokens[i]
            if t == "{":
                i += 1
                while i < len(tokens) and tokens[i] != "}":
                    if tokens[i] == ",":
                        i += 1
                        continue
                    i = subtree(i, path)
                return i + 1
            if t == "*":
                out.append((path, None, True))
                return i + 1
            if t == "::":
                i += 1
                continue
            if t in (",", "}", ";"):
                return i
            if t == "as":
                return i
            path = path + [t]
            i += 1
            if i < len(tokens) and tokens[i] == "::":
                continue
            alias = None
            if i + 1 < len(tokens) and tokens[i] == "as":
                alias = tokens[i + 1]
                i += 2
            if path and path[-1] == "self":
                path = path[:-1]
            out.append((path, alias, False))
            return i
        return i

    subtree(0, [])
    return out


class Scope:
    """A module: a file, or an inline `mod x { ... }` in one."""

    def __init__(self, name, parent, file, span):
        self.name = name
        self.parent = parent
        self.file = file
        self.span = span  # (start, end) in the file's text; None for the file itself
        self.children = {}
        self.imports = {}  # name -> absolute segments, or None for an external path
        self.public = set()  # names re-exported with `pub use`


class Crate:
    def __init__(self, directory):
        self.dir = directory
        self.name = crate_name(directory)
        self.files = {}  # path -> (text, cleaned)
        self.scopes = []
        self.root = None
        self.uses = []  # (scope, segments, line, public, is_reference)
        self.errors = []

    # -- module tree ------------------------------------------------------------------------

    def load(self):
        src = os.path.join(self.dir, "src")
        for candidate in ("lib.rs", "main.rs"):
            path = os.path.join(src, candidate)
            if os.path.isfile(path):
                self.root = self.load_file(path, None, None, is_mod_rs=True)
                break
        return self.root is not None

    def load_file(self, path, name, parent, is_mod_rs):
        text = open(path, encoding="utf-8").read()
        cleaned = strip_comments_and_strings(text)
        self.files[path] = (text, cleaned)
        scope = Scope(name, parent, path, None)
        self.scopes.append(scope)
        # Inline modules, outermost first, so each one's parent is known.
        inline = []
        test_spans = []
        inline_re = re.compile(r"((?:#\s*\[[^\]]*\]\s*)*)(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*\{")
        for m in inline_re.finditer(cleaned):
            open_at = m.end() - 1
            span = (m.start(2), matching_brace(cleaned, open_at))
            if is_test_only(text[m.start(1):m.end(1)]):
                test_spans.append(span)  # unit tests: not part of the graph
                continue
            inline.append((span[0], span[1], m.group(2)))
        inline.sort()
        scopes_here = [scope]
        for start, end, mod_name in inline:
            if any(a <= start <= b for a, b in test_spans):
                continue
            enclosing = self.innermost(scopes_here, start)
            s = Scope(mod_name, enclosing, path, (start, end))
            enclosing.children[mod_name] = s
            scopes_here.append(s)
            self.scopes.append(s)
        # `mod x;` declarations, with their attributes (a `#[path]` is read from the raw text: the
        # cleaned text has its string blanked).
        decl = re.compile(r"((?:#\s*\[[^\]]*\]\s*)*)(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;")
        base_dir = os.path.dirname(path)
        for m in decl.finditer(cleaned):
            attrs_raw = text[m.start(1):m.end(1)]
            if is_test_only(attrs_raw) or any(a <= m.start() <= b for a, b in test_spans):
                continue  # a test-only file (unit tests, fakes): not part of the graph
            enclosing = self.innermost(scopes_here, m.start())
            mod_name = m.group(2)
            explicit = re.search(r'#\s*\[\s*path\s*=\s*"([^"]+)"\s*\]', attrs_raw)
            inline_dirs = []
            s = enclosing
            while s is not scope:
                inline_dirs.insert(0, s.name)
                s = s.parent
            if explicit:
                candidates = [os.path.join(base_dir, *inline_dirs, explicit.group(1))]
            else:
                d = base_dir if is_mod_rs else os.path.join(base_dir, os.path.splitext(os.path.basename(path))[0])
                d = os.path.join(d, *inline_dirs)
                candidates = [os.path.join(d, mod_name + ".rs"), os.path.join(d, mod_name, "mod.rs")]
            found = next((c for c in candidates if os.path.isfile(c)), None)
            if found is None:
                self.errors.append(f"{rel(path)}: no file for `mod {mod_name};` (tried {', '.join(rel(c) for c in candidates)})")
                continue
            found = os.path.normpath(found)
            if found in self.files:
                continue
            child = self.load_file(found, mod_name, enclosing, os.path.basename(found) == "mod.rs")
            enclosing.children[mod_name] = child
        self.collect_uses(path, text, cleaned, scopes_here, test_spans)
        return scope

    @staticmethod
    def innermost(scopes, offset):
        best = scopes[0]
        for s in scopes[1:]:
            if s.span and s.span[0] <= offset <= s.span[1]:
                if best.span is None or s.span[0] >= best.span[0]:
                    best = s
        return best

    # -- references -------------------------------------------------------------------------

    def collect_uses(self, path, text, cleaned, scopes_here, test_spans):
        def in_tests(offset):
            return any(a <= offset <= b for a, b in test_spans)

        use_spans = []
        for m in re.finditer(r"(?<![A-Za-z0-9_])((?:pub(?:\s*\([^)]*\))?\s+)?)use\s+", cleaned):
            if in_tests(m.start()):
                continue
            end = cleaned.find(";", m.end())
            if end < 0:
                continue
            use_spans.append((m.start(), end))
            scope = self.innermost(scopes_here, m.start())
            public = bool(m.group(1).strip())
            line = cleaned.count("\n", 0, m.start()) + 1
            for segments, alias, glob in parse_use_tree(tokenize_use(cleaned[m.end():end])):
                if not segments:
                    continue
                absolute = self.absolute(scope, segments)
                if not glob:
                    leaf = alias or segments[-1]
                    if leaf != "_":
                        scope.imports[leaf] = absolute
                        if public:
                            scope.public.add(leaf)
                if absolute is not None:
                    self.uses.append((scope, absolute, line, public, False))
        # Paths written in code: crate::, super::, self::, or a module declared in scope.
        def in_use(offset):
            return any(a <= offset <= b for a, b in use_spans)

        path_re = re.compile(r"(?<![A-Za-z0-9_$:])(" + IDENT + r"(?:\s*::\s*" + IDENT + r")+)")
        for m in path_re.finditer(cleaned):
            if in_use(m.start()) or in_tests(m.start()):
                continue
            segments = re.split(r"\s*::\s*", m.group(1))
            scope = self.innermost(scopes_here, m.start())
            if segments[0] not in ("crate", "super", "self") and segments[0] not in self.visible_modules(scope):
                continue
            absolute = self.absolute(scope, segments)
            if absolute is not None:
                line = cleaned.count("\n", 0, m.start()) + 1
                self.uses.append((scope, absolute, line, False, True))
        # `$crate::` in macros is the crate itself.
        for m in re.finditer(r"\$crate\s*::\s*(" + IDENT + r"(?:\s*::\s*" + IDENT + r")*)", cleaned):
            if in_tests(m.start()):
                continue
            scope = self.innermost(scopes_here, m.start())
            line = cleaned.count("\n", 0, m.start()) + 1
            self.uses.append((scope, re.split(r"\s*::\s*", m.group(1)), line, False, True))

    def visible_modules(self, scope):
        return set(scope.children)

    def absolute(self, scope, segments):
        """Segments from the crate root, or None for a path outside the crate."""
        segs = list(segments)
        if segs[0] == "crate":
            return segs[1:]
        if segs[0] in ("self", "super"):
            s = scope
            while segs and segs[0] in ("self", "super"):
                if segs[0] == "super":
                    if s.parent is None:
                        return None
                    s = s.parent
                segs = segs[1:]
            return self.path_of(s) + segs
        if segs[0] in scope.children:
            return self.path_of(scope) + segs
        return None  # another crate, std, or an item of this scope used as a prefix

    @staticmethod
    def path_of(scope):
        names = []
        while scope.parent is not None:
            names.insert(0, scope.name)
            scope = scope.parent
        return names

    def resolve(self, segments, depth=0):
        """The file defining what `segments` names, following re-exports; None if outside the crate."""
        node = self.root
        for i, seg in enumerate(segments):
            if seg in node.children:
                node = node.children[seg]
                continue
            if depth < 16 and seg in node.imports:
                target = node.imports[seg]
                if target is None:
                    return None
                return self.resolve(target + segments[i + 1:], depth + 1)
            return node.file
        return node.file

    # -- graph ------------------------------------------------------------------------------

    def graph(self):
        edges = {f: {} for f in self.files}
        root_file = self.root.file
        root_text = self.files[root_file][1]
        for scope, segments, line, public, is_reference in self.uses:
            source = scope.file
            if source == root_file and public and not is_reference:
                continue  # the facade's re-exports
            target = self.resolve(segments)
            if target is None or target == source:
                continue
            edges[source].setdefault(target, (line, "::".join(segments)))
        # What the root re-exports and also uses in its own code.
        facade = r"(?<![A-Za-z0-9_])(?:pub(?:\s*\([^)]*\))?\s+)?(?:use\s+[^;]*|mod\s+" + IDENT + r"\s*);"
        body = re.sub(facade, lambda m: " " * len(m.group(0)), root_text)
        for name in self.root.public:
            target_path = self.root.imports.get(name)
            if target_path is None:
                continue
            m = re.search(r"(?<![A-Za-z0-9_])" + re.escape(name) + r"(?![A-Za-z0-9_])", body)
            if m:
                target = self.resolve(target_path)
                if target and target != root_file:
                    line = body.count("\n", 0, m.start()) + 1
                    edges[root_file].setdefault(target, (line, "::".join(target_path)))
        return edges


def crate_name(directory):
    try:
        text = open(os.path.join(directory, "Cargo.toml"), encoding="utf-8").read()
    except OSError:
        return os.path.basename(directory)
    m = re.search(r'^\[package\][^\[]*?^name\s*=\s*"([^"]+)"', text, re.M | re.S)
    return m.group(1) if m else os.path.basename(directory)


def rel(path):
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def strongly_connected(edges):
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        # Iterative Tarjan.
        work = [(v, iter(sorted(edges[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    advanced = True
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def shortest_cycle(edges, component):
    members = set(component)
    start = component[0]
    prev = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(edges[v]):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while prev[path[0]] is not None:
                    path.insert(0, prev[path[0]])
                return path + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return component + [start]


def check(directories, allow, out=sys.stdout):
    """(crates with cycles that fail, all crates with cycles)."""
    failing, cyclic = [], []
    for d in directories:
        crate = Crate(d)
        if not crate.load():
            print(f"{crate.name}: no src/lib.rs or src/main.rs, skipped", file=out)
            continue
        for e in crate.errors:
            print(f"{crate.name}: warning: {e}", file=out)
        edges = crate.graph()
        components = strongly_connected(edges)
        src = os.path.join(d, "src")
        short = lambda p: os.path.relpath(p, src)  # noqa: E731
        if not components:
            print(f"{crate.name}: {len(edges)} files, no cycles", file=out)
            continue
        cyclic.append(crate.name)
        allowed = crate.name in allow
        if not allowed:
            failing.append(crate.name)
        note = " (allowed: reported only)" if allowed else ""
        print(f"{crate.name}: {len(components)} cycle(s) among {len(edges)} files{note}", file=out)
        for comp in components:
            cycle = shortest_cycle(edges, comp)
            print(f"  cycle: {' -> '.join(short(p) for p in cycle)}", file=out)
            if len(comp) > len(cycle) - 1:
                print(f"    (strongly connected: {', '.join(short(p) for p in comp)})", file=out)
            for a, b in zip(cycle, cycle[1:]):
                line, what = edges[a][b]
                print(f"    {short(a)}:{line} uses crate::{what}", file=out)
    return failing, cyclic


def workspace_crates(root):
    dirs = []
    crates_dir = os.path.join(root, "crates")
    if os.path.isdir(crates_dir):
        for name in sorted(os.listdir(crates_dir)):
            d = os.path.join(crates_dir, name)
            if os.path.isfile(os.path.join(d, "Cargo.toml")):
                dirs.append(d)
    cli = os.path.join(root, "cli")
    if os.path.isfile(os.path.join(cli, "Cargo.toml")):
        dirs.append(cli)
    return dirs


def self_test():
    """The checker finds the fixture's cycles (a plain one, one through a re-export of the root, one
    between a directory module and its child) and no other, none in the acyclic fixture, and
    fails on them unless allowed."""
    import io

    base = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata", "check-cycles")
    cyclic_dir, acyclic_dir = os.path.join(base, "cyclic"), os.path.join(base, "acyclic")
    buf = io.StringIO()
    failing, cyclic = check([cyclic_dir, acyclic_dir], set(), buf)
    report = buf.getvalue()
    problems = []
    if failing != ["fixture-cyclic"] or cyclic != ["fixture-cyclic"]:
        problems.append(f"expected only fixture-cyclic to fail, got {failing} / {cyclic}")
    for expected in (
        "cycle: a.rs -> b.rs -> a.rs",
        "cycle: deep/inner.rs -> deep/mod.rs -> deep/inner.rs",
        "cycle: c.rs -> d.rs -> c.rs",
        "fixture-acyclic: 5 files, no cycles",
    ):
        if expected not in report:
            problems.append(f"missing {expected!r}")
    if "3 cycle(s)" not in report:
        problems.append("expected exactly 3 cycles in fixture-cyclic")
    failing, _ = check([cyclic_dir], {"fixture-cyclic"}, io.StringIO())
    if failing:
        problems.append("--allow did not allow")
    if problems:
        print(report)
        for p in problems:
            print(f"self-test: FAIL: {p}")
        return 1
    print("check-cycles self-test: ok (3 cycles found in the cyclic fixture, none in the acyclic one)")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="*", help="crate directories (default: the workspace's crates/* and cli)")
    parser.add_argument("--allow", default="", help="comma-separated crate names whose cycles are only reported")
    parser.add_argument("--self-test", action="store_true", help="check the checker on its fixtures")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    root = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    dirs = args.dirs or workspace_crates(root)
    allow = {a.strip() for a in args.allow.split(",") if a.strip()}
    failing, _ = check(dirs, allow)
    if failing:
        print(f"import cycles in: {', '.join(failing)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
