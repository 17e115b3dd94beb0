#!/usr/bin/env python3
"""The layering rules of docs/architecture.md, checked (make lint).

Two checks, each failing with the offending file and line:

1. Includes. Every #include "x.h" of a source file is resolved to the file
   it names (by its name: header names are unique in the tree) and the
   layers of the two are compared against RULES: controlplane and dataplane
   never include each other, controlplane never includes wolfSSL and
   dataplane never h2o, common and proto include no layer above them, the
   managers never the HTTP API, the SSH executor never the managers, and no
   source file includes anything of tests/ or bench/.

2. Calls. With --objs DIR, the defined and undefined symbols of every
   object under DIR (nm) give a graph of which source file calls which;
   a cycle between two modules fails. A module is one file, except the
   groups in MODULES: files of one module share a private header and call
   each other freely (the relay's files, the engine's, the SSH executor's).
"""
import argparse
import collections
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC_DIRS = ["common", "proto", "dataplane", "controlplane"]

# Modules of several files (regexes on the path from the root). Files of a
# module may call each other in a cycle; two modules may not.
MODULES = [
    ("dataplane/relay", r"^dataplane/dp_relay(_\w+)?\.c$"),
    ("dataplane/engine", r"^dataplane/dp_(conn|send|splice|export|wake|uring|epoll|ring|tls)\.c$"),
    ("controlplane/ssh", r"^controlplane/ssh/"),
]


def layer(path):
    """The layer of a file: common, proto, dataplane, controlplane/<folder>,
    controlplane, tests, bench, or None for what is outside them."""
    parts = path.split("/")
    if parts[0] in ("common", "proto", "dataplane", "tests", "bench"):
        return parts[0]
    if parts[0] == "controlplane":
        return "controlplane/" + parts[1] if len(parts) > 2 else "controlplane"
    return None


def forbidden(src, dst):
    """Why src may not include dst, or None when it may."""
    a, b = layer(src), layer(dst)
    if a in (None, "tests", "bench"):
        return None
    if b in ("tests", "bench"):
        return "source files never include tests/ or bench/"
    if a == "common" and b != "common":
        return "common/ includes nothing above it"
    if a == "proto" and b not in ("common", "proto"):
        return "proto/ includes only common/"
    if a == "dataplane" and b.startswith("controlplane"):
        return "dataplane/ never includes controlplane/"
    if a.startswith("controlplane") and b == "dataplane":
        return "controlplane/ never includes dataplane/"
    if a == "controlplane/mgr" and b in ("controlplane/http", "controlplane/api"):
        return "the managers never include the HTTP API"
    if a == "controlplane/ssh" and b in ("controlplane/mgr", "controlplane/http", "controlplane/api"):
        return "the SSH executor includes only itself, common/ and proto/"
    if a == "controlplane/cli" and b in ("controlplane/http", "controlplane/api"):
        return "the CLI verbs drive the managers and the executor, not the HTTP API"
    if a == "controlplane/http" and b == "controlplane/api":
        return "the HTTP layer never includes the routes (they register with it)"
    return None


SYSTEM_FORBIDDEN = [
    (r"^controlplane/", re.compile(r"^wolfssl/"), "controlplane/ never includes wolfSSL (h2o brings OpenSSL)"),
    (r"^dataplane/", re.compile(r"^h2o"), "dataplane/ never includes h2o"),
    (r"^common/", re.compile(r"^(h2o|wolfssl/|libssh2|liburing)"), "common/ includes no TLS, HTTP, SSH or ring library"),
    # proto signs and seals with wolfCrypt (both layers link it), never TLS or HTTP.
    (r"^proto/", re.compile(r"^(h2o|wolfssl/ssl\.h|libssh2|liburing)"), "proto/ uses wolfCrypt only: no TLS, HTTP, SSH or ring library"),
]


def sources():
    out = []
    for d in SRC_DIRS:
        for base, _, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if f.endswith((".c", ".h")):
                    out.append(os.path.relpath(os.path.join(base, f), ROOT))
    return sorted(out)


def check_includes():
    everything = []
    for d in SRC_DIRS + ["tests", "bench"]:
        for base, _, files in os.walk(os.path.join(ROOT, d)):
            for f in files:
                if f.endswith((".c", ".h", ".cc")):
                    everything.append(os.path.relpath(os.path.join(base, f), ROOT))
    by_name = collections.defaultdict(list)
    for p in everything:
        by_name[os.path.basename(p)].append(p)
    errors = []
    inc = re.compile(r'^\s*#\s*include\s*([<"])([^">]+)[">]')
    for src in sources():
        with open(os.path.join(ROOT, src), errors="replace") as f:
            for n, line in enumerate(f, 1):
                m = inc.match(line)
                if not m:
                    continue
                name = m.group(2)
                if m.group(1) == "<":
                    for where, pat, why in SYSTEM_FORBIDDEN:
                        if re.match(where, src) and pat.match(name):
                            errors.append("%s:%d: includes <%s>: %s" % (src, n, name, why))
                    continue
                cands = [p for p in by_name.get(os.path.basename(name), []) if p.endswith(name)]
                if not cands:
                    continue  # generated (version_gen.h) or a library's own header
                if len(cands) > 1:
                    errors.append("%s:%d: \"%s\" names %s: header names must be unique"
                                  % (src, n, name, ", ".join(cands)))
                    continue
                why = forbidden(src, cands[0])
                if why:
                    errors.append("%s:%d: includes %s: %s" % (src, n, cands[0], why))
    return errors


def module_of(path):
    for name, pat in MODULES:
        if re.search(pat, path):
            return name
    return path


def nm(obj):
    out = subprocess.run(["nm", "--defined-only", "-g", obj], capture_output=True, text=True).stdout
    defined = {l.split()[-1] for l in out.splitlines() if l.strip()}
    out = subprocess.run(["nm", "-u", obj], capture_output=True, text=True).stdout
    undefined = {l.split()[-1] for l in out.splitlines() if l.strip()}
    return defined, undefined


def check_calls(objdir):
    """Cycles between modules in the graph of calls (and data references)."""
    files = {}
    for src in sources():
        if not src.endswith(".c"):
            continue
        obj = os.path.join(objdir, src[:-2] + ".o")
        if os.path.exists(obj):
            files[src] = nm(obj)
    if not files:
        return ["no objects under %s: build first (make)" % objdir]
    owner = {}
    for src, (defined, _) in files.items():
        for s in defined:
            owner[s] = src
    graph = collections.defaultdict(set)
    why = {}
    for src, (_, undefined) in files.items():
        for s in undefined:
            dst = owner.get(s)
            if dst is None:
                continue
            a, b = module_of(src), module_of(dst)
            if a != b:
                graph[a].add(b)
                why.setdefault((a, b), "%s uses %s of %s" % (src, s, dst))
    return [cycle_text(c, graph, why) for c in strongly_connected(graph) if len(c) > 1]


def strongly_connected(graph):
    """Tarjan's algorithm, iterative: the components of the graph."""
    index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]
    nodes = set(graph) | {b for bs in graph.values() for b in bs}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                comps.append(sorted(comp))
    return comps


def cycle_text(comp, graph, why):
    edges = ["  %s" % why[(a, b)] for a in comp for b in sorted(graph[a]) if b in comp]
    return "call cycle between %s:\n%s" % (", ".join(comp), "\n".join(edges))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objs", help="object directory (build/obj): check calls too")
    args = ap.parse_args()
    errors = check_includes()
    if args.objs:
        errors += check_calls(args.objs)
    for e in errors:
        print("layers: " + e)
    if not errors:
        print("layers: %d files, includes%s as docs/architecture.md says"
              % (len(sources()), " and calls" if args.objs else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
