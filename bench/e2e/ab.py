#!/usr/bin/python3
"""A/B benchmark: sluice variants against the two-HAProxy tcp chain, paired.

Each variant is a relay and an agent (plaintext link, or TLS with --tls;
--pool 64, as in run.py) started with extra arguments and environment. Every round runs wrk
once against each target in turn, so slow drifts of this shared machine hit
all targets alike; the result is the median per target and the median of
the per-round ratios to the first variant and to the chain.

  ab.py --bin build/release/bin --rounds 7 --seconds 5 --scenario 100b@50 \
      --variant base= --variant ep='--engine epoll' --variant old@/tmp/old-bin=
A variant is NAME[@BINDIR]=ARGS[|AGENT_ARGS][;ENV=VALUE...]: ARGS go to
relay and agent alike, AGENT_ARGS to the agent alone; BINDIR (default --bin)
holds the sluice-relay and sluice to run, so two builds can be compared in
one run.
"""
import argparse
import os
import shlex
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402


def parse_variant(text, default_bin):
    name, _, rest = text.partition("=")
    name, _, bindir = name.partition("@")
    parts = rest.split(";")
    env = dict(p.split("=", 1) for p in parts[1:] if p)
    both, _, agent = parts[0].partition("|")
    return name, shlex.split(both), shlex.split(agent), env, bindir or default_bin


def pin(pid, cpus):
    """Every thread of pid and of its children (nginx's worker) on cpus."""
    subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(pid)], check=True,
                   stdout=subprocess.DEVNULL)
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, task)) as f:
            for child in f.read().split():
                pin(int(child), cpus)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--scenario", action="append", default=[])
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--no-chain", action="store_true")
    ap.add_argument("--tls", action="store_true",
                    help="every variant with TLS on the agent link (the test PKI)")
    ap.add_argument("--pin", action="store_true",
                    help="wrk and nginx on CPU 0, every proxy on CPU 1: the proxies do not "
                         "share their core with the load (as on a relay host)")
    a = ap.parse_args()
    a.big_mb, a.splice = 1, True
    b = run.Bench(a)
    try:
        b.start_nginx()
        del b.targets["direct"]
        if not a.no_chain:
            back = b.start_haproxy("haproxy2b", run.HAPROXY_TCP, b.nginx_port)
            front = b.start_haproxy("haproxy2a", run.HAPROXY_TCP, back)
            b.targets["haproxy2"] = ("http://127.0.0.1:%d" % front, None)
        variants = [parse_variant(v, a.bin) for v in a.variant or ["sluice="]]
        for name, args, agent_args, env, bindir in variants:
            b.start_pair(name, args, args + agent_args, bindir=bindir, env=env, tls=a.tls)
        first = variants[0][0]
        prefix = ()
        if a.pin:
            prefix = ("taskset", "-c", "0")
            for p in b.procs:
                pin(p.pid, "0" if p.name == "nginx" else "1")
        for sc in a.scenario or ["100b@50"]:
            path, conns = sc.split("@")
            runs = {n: [] for n in b.targets}
            for _ in range(a.rounds):
                for n, (base, host) in b.targets.items():
                    runs[n].append(run.wrk("%s/%s" % (base, path), int(conns), a.seconds, host,
                                           prefix))
            print("%s, %d rounds of %d s:" % (sc, a.rounds, a.seconds))
            for n, rs in runs.items():
                rps = [r["rps"] for r in rs]
                line = "  %-10s %8.0f req/s  p99 %6.2f ms" % (
                    n, statistics.median(rps), statistics.median(r["p99_ms"] for r in rs))
                for ref in (first, "haproxy2"):
                    if ref in runs and ref != n:
                        pr = [x["rps"] / y["rps"] for x, y in zip(rs, runs[ref])]
                        line += "  /%s %.2f (%s)" % (ref, statistics.median(pr),
                                                    " ".join("%.2f" % p for p in pr))
                errs = [r["errors"] for r in rs if r["errors"]]
                print(line + ("  errors: %s" % errs if errs else ""), flush=True)
    finally:
        b.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
