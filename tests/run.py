#!/usr/bin/python3
"""Run sluice's test suites and print one closing line: 'total: N passed, N failed'.

Unit tests are cmocka programs (one per module, tests/unit/test_*.c); the
integration tests are pytest modules (tests/integration/) that start the real
binaries and real servers. This runner executes both and adds up the counts,
so `make test` ends with a single summary whatever failed where.

Run with Debian's /usr/bin/python3: its python3-pytest is the one installed.
"""
import argparse
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sanitizer_env():
    """Sanitizer settings for every process the suites start (harmless without ASan)."""
    supp = os.path.join(HERE, "lsan.supp")
    return {
        "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "abort_on_error=0:detect_leaks=1"),
        "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
        "LSAN_OPTIONS": "suppressions=%s:print_suppressions=0" % supp,
    }


def run_unit(bin_dir):
    """Run every cmocka binary; returns (passed, failed)."""
    tests_dir = os.path.join(bin_dir, "tests")
    names = sorted(n for n in os.listdir(tests_dir) if n.startswith("test_")) if os.path.isdir(tests_dir) else []
    if not names:
        print("unit: no test binaries under %s" % tests_dir)
        return 0, 1
    passed = failed = 0
    for name in names:
        proc = subprocess.run([os.path.join(tests_dir, name)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300,
                              env=dict(os.environ, **sanitizer_env()))
        out = proc.stdout
        sys.stdout.write(out)
        p = re.search(r"^\[  PASSED  \] (\d+) test", out, re.M)
        f = re.search(r"^\[  FAILED  \] (\d+) test", out, re.M)
        np, nf = int(p.group(1)) if p else 0, int(f.group(1)) if f else 0
        if proc.returncode != 0 and nf == 0:
            # Crashed (a sanitizer abort, say) before cmocka could count: one failure.
            print("unit: %s exited with %d" % (name, proc.returncode))
            nf = 1
        passed += np
        failed += nf
    print("unit: %d passed, %d failed" % (passed, failed))
    return passed, failed


def run_integration(bin_dir, extra):
    """Run pytest over tests/integration; returns (passed, failed, skipped)."""
    xml = os.path.join(bin_dir, "..", "integration-results.xml")
    env = dict(os.environ, SLUICE_BIN=os.path.abspath(bin_dir), PYTHONDONTWRITEBYTECODE="1",
               **sanitizer_env())
    cmd = [sys.executable, "-m", "pytest", os.path.join(HERE, "integration"), "-v",
           "-p", "no:cacheprovider", "--timeout=180", "--junitxml=" + xml] + extra
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    try:
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        total = int(suite.get("tests"))
        failed = int(suite.get("failures")) + int(suite.get("errors"))
        skipped = int(suite.get("skipped"))
    except (OSError, ET.ParseError, AttributeError, TypeError):
        print("integration: no results (pytest exited %d)" % proc.returncode)
        return 0, 1, 0
    if proc.returncode not in (0, 1) and failed == 0:
        failed = 1  # pytest itself failed (collection error, interrupted)
    passed = total - failed - skipped
    print("integration: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return passed, failed, skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="directory of the built binaries")
    ap.add_argument("--suite", choices=["all", "unit", "integration"], default="all")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args()
    passed = failed = skipped = 0
    if args.suite in ("all", "unit"):
        p, f = run_unit(args.bin)
        passed, failed = passed + p, failed + f
    if args.suite in ("all", "integration"):
        p, f, s = run_integration(args.bin, args.pytest_args)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    line = "total: %d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
