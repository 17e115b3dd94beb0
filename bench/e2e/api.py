#!/usr/bin/python3
"""Control-plane benchmark (issue 4): POST /api/v1/tunnels (session
creation: key lookup, name claim, revision, MULTI with the record, the
indexes and the stream event) and GET /api/v1/tunnels/{id} (key lookup,
record, counters), under wrk against a real sluice-control and a real
redis-server on loopback. Requests/s and p50/p99 for each, medians of
--reps runs, every response checked (non-2xx responses fail the run).
Then the revocation time: a live streaming connection through a real relay
and agent, DELETE /api/v1/tunnels/{id}, and the time until the client sees
its connection end (--revokes times; median and worst).

  bench/e2e/api.py --bin build/release/bin [--reps 5] [--seconds 10] [--conns 50]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
import apps  # noqa: E402
import harness  # noqa: E402
from run import wrk_argv_result  # noqa: E402

POST_LUA = """wrk.method = "POST"
wrk.body = '{"port": 3000, "duration": 600}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SLUICE_BENCH_KEY")
"""

GET_LUA = """wrk.headers["Authorization"] = "Bearer " .. os.getenv("SLUICE_BENCH_KEY")
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--out", default=None)
    ap.add_argument("--revokes", type=int, default=10)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.reps, a.seconds, a.revokes = 1, 1, 1
    work = tempfile.mkdtemp(prefix="sluice-bench-api-")
    redis = harness.Redis(work)
    control = harness.Control(os.path.join(a.bin, "sluice-control"), work, redis.url,
                              extra=["--max-sessions", "10000000", "--log-level", "warn",
                                     "--limit-sessions", "off"])
    try:
        key = control.new_key(name="bench")["key"]
        status, _, s = control.api("POST", "/api/v1/tunnels", {"port": 3000}, key=key)
        assert status == 201, s
        post_lua = os.path.join(work, "post.lua")
        get_lua = os.path.join(work, "get.lua")
        open(post_lua, "w").write(POST_LUA)
        open(get_lua, "w").write(GET_LUA)
        env = dict(os.environ, SLUICE_BENCH_KEY=key)
        rows = {}
        for name, script, path in (("create", post_lua, "/api/v1/tunnels"),
                                   ("read", get_lua, "/api/v1/tunnels/" + s["sessionId"])):
            runs = []
            for _ in range(a.reps):
                argv = ["wrk", "-t1", "-c%d" % a.conns, "-d%ds" % a.seconds, "--latency",
                        "--timeout", "10s", "-s", script, control.url + path]
                r = wrk_argv_result(argv, a.seconds, env=env)
                if r["errors"]:
                    raise SystemExit("%s: errors: %s" % (name, r["errors"]))
                runs.append(r)
            rows[name] = {k: statistics.median(x[k] for x in runs) for k in ("rps", "p50_ms",
                                                                             "p99_ms")}
            rows[name]["runs"] = [round(x["rps"]) for x in runs]
            print("%-7s %8.0f req/s  p50 %.2f ms  p99 %.2f ms  (runs: %s)" % (
                name, rows[name]["rps"], rows[name]["p50_ms"], rows[name]["p99_ms"],
                rows[name]["runs"]), flush=True)
        active = control.api("GET", "/health", key=None)[2]["checks"]["capacity"]["active"]
        print("sessions created in Redis: %d" % active)
        rows["snapshot"] = snapshot_load(a, work, redis, active)
        rows["revoke_ms"] = revocations(a, work)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            with open(os.path.join(a.out, "api.json"), "w") as f:
                json.dump({"conns": a.conns, "seconds": a.seconds, "reps": a.reps,
                           "rows": rows}, f, indent=1)
    finally:
        control.stop()
        redis.stop()
        subprocess.run(["rm", "-rf", work])


def snapshot_load(a, work, redis, active):
    """A relay started on the benchmark's Redis: seconds until its table
    holds every session (snapshot: SCAN + MGET + decode)."""
    t0 = time.monotonic()
    relay = harness.session_relay(os.path.join(a.bin, "sluice-relay"), work, redis.url,
                                  extra=["--log-level", "info"])
    try:
        m = harness.wait_metrics(
            relay, lambda m: m.get("sluice_state_events_total{event=\"snapshot\"}", 0) >= 1,
            "snapshot", timeout=600)
        secs = time.monotonic() - t0
    finally:
        relay.stop()
    n = int(m.get("sluice_state_sessions", 0))
    print("snapshot %d sessions (of %d active) loaded by a starting relay in %.1f s" % (
        n, active, secs), flush=True)
    return {"sessions": n, "seconds": secs}


def revocations(a, work):
    """Milliseconds from DELETE sent to the live connection's end, each time
    (on a Redis of its own: the benchmark's holds hundreds of thousands of
    sessions, whose snapshot a new relay would load first)."""
    redis = harness.Redis(work)
    relay = harness.session_relay(os.path.join(a.bin, "sluice-relay"), work, redis.url)
    control = harness.Control(os.path.join(a.bin, "sluice-control"), work, redis.url,
                              relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port,
                              extra=["--max-sessions", "10000000", "--log-level", "warn",
                                     "--limit-sessions", "off"])
    app = apps.HttpApp()
    times = []
    try:
        key = control.new_key(name="revoke")["key"]
        for i in range(a.revokes):
            status, _, s = control.api("POST", "/api/v1/tunnels", {"port": app.port}, key=key)
            assert status == 201, s
            agent = harness.Agent(os.path.join(a.bin, "sluice"), work, app.port, relay.server,
                                  extra=["--token", s["agentToken"]])
            c = socket.create_connection(("127.0.0.1", relay.http_port), timeout=10)
            c.sendall(b"GET /sse?gap=60 HTTP/1.1\r\nHost: %s.localhost\r\n\r\n"
                      % s["name"].encode())
            assert c.recv(65536).startswith(b"HTTP/1.1 200")
            t0 = time.monotonic()
            assert control.api("DELETE", "/api/v1/tunnels/" + s["sessionId"], key=key)[0] == 200
            try:
                while c.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            times.append((time.monotonic() - t0) * 1000)
            c.close()
            agent.stop()
    finally:
        app.stop()
        control.stop()
        relay.stop()
        redis.stop()
    print("revoke  median %.1f ms, worst %.1f ms over %d deletions (DELETE sent to the live "
          "connection's end)" % (statistics.median(times), max(times), len(times)), flush=True)
    return {"median": statistics.median(times), "max": max(times), "n": len(times)}


if __name__ == "__main__":
    main()
