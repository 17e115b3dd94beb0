#!/usr/bin/python3
"""Run every Google Benchmark program in a directory.

--out DIR: 5 repetitions each, JSON per program plus a Markdown summary of
medians (DIR/micro-summary.md). --smoke: each program runs briefly, only to
prove it builds and runs (CI).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import time


def programs(bin_dir):
    if not os.path.isdir(bin_dir):
        return []
    return sorted(os.path.join(bin_dir, n) for n in os.listdir(bin_dir) if n.startswith("bm_"))


def smoke(bin_dir):
    progs = programs(bin_dir)
    if not progs:
        print("bench-smoke: no benchmark programs in %s" % bin_dir)
        return 1
    for p in progs:
        r = subprocess.run([p, "--benchmark_min_time=0.01"], capture_output=True, text=True)
        status = "ok" if r.returncode == 0 else "FAILED (%d)" % r.returncode
        print("bench-smoke: %s %s" % (os.path.basename(p), status))
        if r.returncode != 0:
            sys.stdout.write(r.stdout + r.stderr)
            return 1
    print("bench-smoke: %d programs ran" % len(progs))
    return 0


def fmt_time(ns):
    if ns >= 1e6:
        return "%.2f ms" % (ns / 1e6)
    if ns >= 1e3:
        return "%.2f us" % (ns / 1e3)
    return "%.1f ns" % ns


def full(bin_dir, out_dir, reps):
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for p in programs(bin_dir):
        name = os.path.basename(p)
        out = os.path.join(out_dir, "micro-%s.json" % name)
        subprocess.run([p, "--benchmark_repetitions=%d" % reps, "--benchmark_report_aggregates_only=true",
                        "--benchmark_out=" + out, "--benchmark_out_format=json"], check=True,
                       stdout=subprocess.DEVNULL)
        with open(out) as f:
            data = json.load(f)
        for b in data["benchmarks"]:
            if b.get("aggregate_name") != "median":
                continue
            scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}[b["time_unit"]]
            rate = b.get("bytes_per_second")
            rows.append((name, b["run_name"], b["real_time"] * scale,
                         "%.0f MB/s" % (rate / 1e6) if rate else ""))
    md = ["# Micro-benchmarks (medians of %d repetitions)" % reps, "",
          "Machine: %s, %d cores; %s" % (platform.machine(), os.cpu_count(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())),
          "", "| program | benchmark | time per op | throughput |", "|---|---|---|---|"]
    md += ["| %s | %s | %s | %s |" % (prog, bench, fmt_time(ns), rate) for prog, bench, ns, rate in rows]
    path = os.path.join(out_dir, "micro-summary.md")
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    print("\nwritten: %s and micro-*.json" % path)
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--repetitions", type=int, default=5)
    a = ap.parse_args()
    if a.smoke:
        return smoke(a.bin)
    return full(a.bin, a.out or "bench/results", a.repetitions)


if __name__ == "__main__":
    sys.exit(main())
