#!/usr/bin/env python3
"""The size rules of docs/architecture.md, checked (make lint): no source
file over MAX_FILE lines, no function over MAX_FUNC lines (tables are data,
not functions, and are not counted). Fails with each offender."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC_DIRS = ["common", "proto", "dataplane", "controlplane"]
MAX_FILE = 1200
MAX_FUNC = 80


def code_of(src):
    """src with comments, strings and character literals blanked, lines kept."""
    src = re.sub(r"/\*.*?\*/", lambda m: re.sub(r"[^\n]", " ", m.group(0)), src, flags=re.S)
    src = re.sub(r"//[^\n]*", "", src)
    src = re.sub(r'"(\\.|[^"\\\n])*"', '""', src)
    return re.sub(r"'(\\.|[^'\\\n])*'", "''", src)


def functions(path):
    """(name, first line, lines) of each function defined at file level."""
    code = code_of(open(path, errors="replace").read())
    out, depth, line, start, head = [], 0, 1, None, ""
    for ch in code:
        if ch == "\n":
            line += 1
        if depth == 0:
            if ch == "{":
                m = re.search(r"(\w+)\s*\([^;{}]*\)\s*(__attribute__\s*\(\(.*\)\)\s*)?$", head.strip(), re.S)
                is_fn = m and "=" not in head and not re.search(r"\b(struct|enum|union)\s+\w*\s*$", head)
                start = (m.group(1), line) if is_fn else None
                depth, head = 1, ""
            elif ch in ";}":
                head = ""
            else:
                head += ch
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and start:
                out.append((start[0], start[1], line - start[1] + 1))
                start = None
    return out


def main():
    errors = []
    nfiles = 0
    for d in SRC_DIRS:
        for base, _, files in os.walk(os.path.join(ROOT, d)):
            for f in sorted(files):
                if not f.endswith((".c", ".h")):
                    continue
                path = os.path.join(base, f)
                rel = os.path.relpath(path, ROOT)
                nfiles += 1
                n = sum(1 for _ in open(path, errors="replace"))
                if n > MAX_FILE:
                    errors.append("%s: %d lines (at most %d: split it by concept)" % (rel, n, MAX_FILE))
                for name, first, lines in functions(path):
                    if lines > MAX_FUNC:
                        errors.append("%s:%d: %s is %d lines (at most %d)" % (rel, first, name, lines, MAX_FUNC))
    for e in errors:
        print("sizes: " + e)
    if not errors:
        print("sizes: %d files, none over %d lines, no function over %d" % (nfiles, MAX_FILE, MAX_FUNC))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
