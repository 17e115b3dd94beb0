#!/usr/bin/python3
"""The file-level call graph of a layer's objects, from their symbols.

Each object's undefined symbols (nm) are matched to the object that defines
them; an edge a -> b means a.c calls (or reads) something b.c defines.
Prints every cycle (a strongly connected component of more than one file)
with the symbols on its edges, and, with --layers, every edge between
folders that the rules do not allow. Exit 0 when there is neither, 1
otherwise, 2 on a usage error.

  tests/tools/file_graph.py build/obj/controlplane --src controlplane \\
      --layers 'http: ; ssh: ; mgr: ssh ; api: http ssh mgr ; cli: http ssh mgr'

A file's layer is its first folder below the root; files at the root (the
program's main) are above every layer: they may call anything, and nothing
may call them. --edges prints the whole graph. Static inline functions in
headers make no symbol and so no edge: the graph is of calls between .c
files, which is what a cycle is about.
"""
import argparse
import collections
import os
import subprocess
import sys


def symbols(obj):
    """(defined, undefined) global symbols of one object."""
    out = subprocess.run(["nm", "-P", obj], capture_output=True, text=True, check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        f = line.split()
        if len(f) < 2:
            continue
        if f[1] == "U":
            undefined.add(f[0])
        elif f[1].isupper():
            defined.add(f[0])
    return defined, undefined


def objects(root, src):
    """The objects under root; with src, only those whose source is still
    there (a build tree keeps the objects of files since moved or removed)."""
    found = []
    for d, _, files in os.walk(root):
        found += [os.path.join(d, f) for f in files if f.endswith(".o")]
    if src:
        found = [o for o in found
                 if os.path.exists(os.path.join(src, os.path.relpath(o, root)[:-2] + ".c"))]
    return sorted(found)


def graph(objs, root):
    """{file: {file: symbols}} between the objects, names relative to root."""
    name = {o: os.path.relpath(o, root)[:-2] + ".c" for o in objs}
    owner, undefined = {}, {}
    for o in objs:
        d, u = symbols(o)
        undefined[name[o]] = u
        for s in d:
            owner[s] = name[o]
    edges = {name[o]: collections.defaultdict(set) for o in objs}
    for a, syms in undefined.items():
        for s in syms:
            b = owner.get(s)
            if b and b != a:
                edges[a][b].add(s)
    return edges


def cycles(edges):
    """Strongly connected components of more than one file (Tarjan, iterative)."""
    index, low, on, stack, out, n = {}, {}, set(), [], [], 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = n
        n += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = n
                    n += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
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
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def layer_of(f):
    return f.split("/", 1)[0] if "/" in f else None


def parse_layers(text):
    """'http: ; api: http ssh' -> {"http": set(), "api": {"http", "ssh"}}"""
    rules = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, below = part.partition(":")
        rules[name.strip()] = set(below.split())
    return rules


def layer_violations(edges, rules):
    bad = []
    for a in sorted(edges):
        for b in sorted(edges[a]):
            la, lb = layer_of(a), layer_of(b)
            if la == lb or la is None:
                continue
            if lb is None or la not in rules or lb not in rules[la]:
                bad.append((a, b, edges[a][b]))
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", help="the folder of the layer's objects (build/obj/controlplane)")
    ap.add_argument("--src", help="the sources' folder (controlplane): objects of files "
                    "no longer there are left out")
    ap.add_argument("--layers", help="'layer: the layers it may call ; ...'")
    ap.add_argument("--edges", action="store_true", help="print the whole graph")
    args = ap.parse_args()
    objs = objects(args.root, args.src)
    if not objs:
        print("file_graph: no objects under %s (build first)" % args.root, file=sys.stderr)
        return 2
    edges = graph(objs, args.root)
    if args.edges:
        for a in sorted(edges):
            print("%s -> %s" % (a, " ".join(sorted(edges[a])) or "-"))
    status = 0
    for comp in cycles(edges):
        status = 1
        print("cycle: " + " ".join(comp))
        for a in comp:
            for b in sorted(edges[a]):
                if b in comp:
                    print("    %s -> %s: %s" % (a, b, " ".join(sorted(edges[a][b])[:6])))
    if args.layers:
        for a, b, syms in layer_violations(edges, parse_layers(args.layers)):
            status = 1
            print("layer: %s -> %s: %s" % (a, b, " ".join(sorted(syms)[:6])))
    if status == 0:
        print("file_graph: %d files, no cycle%s" % (len(edges),
                                                    ", layers kept" if args.layers else ""))
    return status


if __name__ == "__main__":
    sys.exit(main())
