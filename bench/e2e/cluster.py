#!/usr/bin/python3
"""Cluster and limits benchmark (issue 5), one run, real processes: nginx
(100-byte file), redis-server, sluice-control, three sluice-relay on one Redis
(--link, --workers 1 each, plaintext agent links as in run.py) and sluice
agents. wrk (1 thread, --conns connections) per scenario, medians of --reps:

  limits-off   a tunnel with no limit at all, through its own relay
  limits-on    a tunnel with every limit on (requests, bandwidth, TCP, and its
               key's requests leased from Redis), none reached
  hop          the limits-off tunnel through another relay (forwarded over a
               link) against limits-off (its own relay)
  aggregate    three tunnels, one per relay, three wrk at once (summed)
               against one wrk on one relay (limits-off)

  bench/e2e/cluster.py --bin build/release/bin [--reps 5] [--seconds 10]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import harness  # noqa: E402
from run import NGINX, wrk  # noqa: E402

HUGE = 10 ** 12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.reps, a.seconds = 1, 1
    work = tempfile.mkdtemp(prefix="sluice-bench-cluster-")
    procs = []
    try:
        rows = run(a, work, procs)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, "cluster.json"), "w") as f:
                json.dump({"conns": a.conns, "seconds": a.seconds, "reps": a.reps,
                           "rows": rows}, f, indent=1)
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        subprocess.run(["rm", "-rf", work])


def start(work, procs, a):
    www = os.path.join(work, "www")
    os.makedirs(www)
    with open(os.path.join(www, "100b"), "wb") as f:
        f.write(b"x" * 100)
    port = harness.free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX.format(dir=work, port=port))
    procs.append(harness.Proc("nginx", ["nginx", "-c", conf, "-p", work], work))
    harness.wait_for(lambda: harness.port_open(port), what="nginx")
    redis = harness.Redis(work)
    procs.append(redis.proc)
    relays = []
    for _ in range(3):
        r = harness.Relay(os.path.join(a.bin, "sluice-relay"), work, tls=False,
                          extra=["--redis", redis.url, "--relay-id", "r%d" % harness.free_port(),
                                 "--link", "127.0.0.1:%d" % harness.free_port(),
                                 "--workers", "1", "--log-level", "warn"])
        procs.append(r.proc)
        relays.append(r)
    control = harness.Control(os.path.join(a.bin, "sluice-control"), work, redis.url,
                              relay=relays[0].server, extra=["--limit-sessions", "off",
                                                             "--log-level", "warn"])
    procs.append(control.proc)
    return port, relays, control


def tunnel(a, work, procs, control, relay, nginx, limits, key=harness.ADMIN_KEY):
    status, _, s = control.api("POST", "/api/v1/tunnels", {"port": 3000, "limits": limits},
                               key=key)
    assert status == 201, s
    ag = harness.Agent(os.path.join(a.bin, "sluice"), work, nginx, relay.server, tls=False,
                       extra=["--token", s["agentToken"], "--pool", "64", "--log-level", "warn"])
    procs.append(ag.proc)
    return s["name"]


def measure(a, cases):
    """cases: {label: (relay, tunnel name)}; the cases take turns, rep after
    rep, so that a noisy spell of the machine hits them alike."""
    runs = {k: [] for k in cases}
    for _ in range(a.reps):
        for label, (relay, name) in cases.items():
            r = wrk("http://127.0.0.1:%d/100b" % relay.http_port, a.conns, a.seconds,
                    "%s.localhost" % name)
            if r["errors"]:
                raise SystemExit("%s: errors: %s" % (label, r["errors"]))
            runs[label].append(r)
    return {k: {"rps": statistics.median(r["rps"] for r in v),
                "p50_ms": statistics.median(r["p50_ms"] for r in v),
                "p99_ms": statistics.median(r["p99_ms"] for r in v),
                "runs": [round(r["rps"]) for r in v]} for k, v in runs.items()}


def aggregate(a, relays, names):
    """Three wrk at once, one per relay and tunnel: summed requests/s, median of reps."""
    sums = []
    for _ in range(a.reps):
        out = [None] * len(relays)

        def one(i):
            out[i] = wrk("http://127.0.0.1:%d/100b" % relays[i].http_port, a.conns, a.seconds,
                         "%s.localhost" % names[i])
        ts = [threading.Thread(target=one, args=(i,)) for i in range(len(relays))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if any(o["errors"] for o in out):
            raise SystemExit("aggregate: errors: %s" % [o["errors"] for o in out])
        sums.append(sum(o["rps"] for o in out))
    return {"rps": statistics.median(sums), "runs": [round(x) for x in sums]}


def run(a, work, procs):
    nginx, relays, control = start(work, procs, a)
    off = {"requests": None, "bandwidth": None, "tcpConnections": None}
    on = {"requests": {"limit": HUGE, "window": 60}, "bandwidth": {"limit": HUGE, "window": 3600},
          "tcpConnections": {"limit": HUGE, "window": 60}}
    k = control.api("POST", "/api/v1/keys", {"name": "bench", "scopes": ["tunnels", "admin"],
                                             "limits": {"keyRequests": {"limit": HUGE,
                                                                        "window": 60}}})[2]
    t_off = tunnel(a, work, procs, control, relays[0], nginx, off)
    t_on = tunnel(a, work, procs, control, relays[0], nginx, on, key=k["key"])
    t_tun = tunnel(a, work, procs, control, relays[0], nginx, on)
    t_key = tunnel(a, work, procs, control, relays[0], nginx, off, key=k["key"])
    t1 = tunnel(a, work, procs, control, relays[1], nginx, off)
    t2 = tunnel(a, work, procs, control, relays[2], nginx, off)
    rows = measure(a, {"limits-off": (relays[0], t_off), "limits-on": (relays[0], t_on),
                       "tunnel-limits": (relays[0], t_tun), "key-limit": (relays[0], t_key),
                       "hop": (relays[1], t_off)})
    for name in ("limits-off", "limits-on", "tunnel-limits", "key-limit", "hop"):
        print("%-11s %8.0f req/s  p50 %.2f ms  p99 %.2f ms  (runs: %s)" % (
            name, rows[name]["rps"], rows[name]["p50_ms"], rows[name]["p99_ms"],
            rows[name]["runs"]), flush=True)
    m = harness.metrics(relays[0])
    rows["leases"] = m.get('sluice_ratelimit_events_total{event="lease"}', 0)
    rows["aggregate3"] = aggregate(a, relays, [t_off, t1, t2])
    print("aggregate3  %8.0f req/s  (three relays, three wrk; runs: %s)" % (
        rows["aggregate3"]["rps"], rows["aggregate3"]["runs"]), flush=True)
    # The machine's noise moves whole reps: the ratio within each rep (the
    # cases ran back to back) is the steadier figure.
    for name in ("limits-on", "tunnel-limits", "key-limit", "hop"):
        rows[name]["paired_ratio"] = statistics.median(
            x / y for x, y in zip(rows[name]["runs"], rows["limits-off"]["runs"]))
    print("paired ratios (median of per-rep ratios): limits on/off %.3f, tunnel limits %.3f, "
          "key limit %.3f, hop/direct %.3f" % (
              rows["limits-on"]["paired_ratio"], rows["tunnel-limits"]["paired_ratio"],
              rows["key-limit"]["paired_ratio"], rows["hop"]["paired_ratio"]), flush=True)
    print("ratios: limits on/off %.3f, hop/direct %.3f, 3 relays/1 relay %.3f; leases %d" % (
        rows["limits-on"]["rps"] / rows["limits-off"]["rps"],
        rows["hop"]["rps"] / rows["limits-off"]["rps"],
        rows["aggregate3"]["rps"] / rows["limits-off"]["rps"], rows["leases"]), flush=True)
    return rows


if __name__ == "__main__":
    main()
