#!/usr/bin/python3
"""Agent and relay memory across a burst: nginx, a relay and an agent (TLS
between them unless --plain), RSS at start, right after a 3 s wrk at 64 KiB
x 50 then a 3 s wrk at 100 B x 1000, and each second of --idle seconds
after it (the agent sheds every 5 s with no stream open; the relay every
5 s with no public connection). Run as root, from the repository:

    /usr/bin/python3 bench/e2e/agentmem.py build/release/bin [--plain] [--idle 11] [agent flags]

Figures in bench/RESULTS.md ("Agent memory")."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from run import NGINX  # noqa: E402


def mem(pid):
    with open("/proc/%d/status" % pid) as f:
        t = f.read()
    g = lambda k: int(re.search(k + r":\s+(\d+)", t).group(1))  # noqa: E731
    return "rss %6d KiB (anon %6d, file %6d)" % (g("VmRSS"), g("RssAnon"), g("RssFile"))


def wrk(conns, path, port):
    r = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d3", "-H", "Host: bench.localhost",
                        "http://127.0.0.1:%d%s" % (port, path)], capture_output=True, text=True)
    m = re.search(r"Requests/sec:\s+(\S+)", r.stdout)
    return m.group(1) if m else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--plain", action="store_true", help="no TLS between agent and relay")
    ap.add_argument("--idle", type=int, default=11)
    a, agent_flags = ap.parse_known_args()
    d = tempfile.mkdtemp(prefix="agentmem-")
    procs = []
    try:
        os.makedirs(d + "/www")
        with open(d + "/www/100b", "wb") as f:
            f.write(b"x" * 100)
        with open(d + "/www/64k", "wb") as f:
            f.write(os.urandom(65536))
        port = harness.free_port()
        with open(d + "/nginx.conf", "w") as f:
            f.write(NGINX.format(dir=d, port=port))
        procs.append(harness.Proc("nginx", ["nginx", "-c", d + "/nginx.conf", "-p", d], d))
        harness.wait_for(lambda: harness.port_open(port), what="nginx")
        relay = harness.Relay(os.path.join(a.bin, "sluice-relay"), d,
                              extra=["--log-level", "warn", "--workers", "1"], tls=not a.plain)
        procs.append(relay.proc)
        agent = harness.Agent(os.path.join(a.bin, "sluice"), d, port, relay.server,
                              extra=["--name", "bench"] + agent_flags, tls=not a.plain)
        procs.append(agent.proc)
        time.sleep(6)
        print("start+6s  agent", mem(agent.proc.pid), " relay", mem(relay.proc.pid))
        print("wrk 64k x 50: %s req/s, 100b x 1000: %s req/s" % (
            wrk(50, "/64k", relay.http_port), wrk(1000, "/100b", relay.http_port)))
        print("after     agent", mem(agent.proc.pid), " relay", mem(relay.proc.pid))
        for i in range(a.idle):
            time.sleep(1)
            print("idle %2d s  agent" % (i + 1), mem(agent.proc.pid), " relay", mem(relay.proc.pid))
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
