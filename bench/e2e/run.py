#!/usr/bin/python3
"""End-to-end benchmark: sluice against its peers, in one run.

Topologies (the same nginx backend serves all, keep-alive on):
  direct     wrk -> nginx
  haproxy1   wrk -> HAProxy (http mode, one hop, splice-auto) -> nginx
  haproxy2   wrk -> HAProxy (tcp) -> HAProxy (tcp) -> nginx: the two raw hops a tunnel has
  ssh-R      wrk -> sshd (ssh -R forwarding) -> ssh client -> nginx
  sluice     wrk -> sluice-relay -> sluice agent -> nginx
and with TLS (TLS 1.3, AES-128-GCM on both, the test PKI's P-256 certificate):
  haproxy-tls    wrk -> HAProxy (tcp) -TLS-> HAProxy (tcp, TLS in) -> nginx
  haproxy-https  wrk -TLS-> HAProxy (tcp, TLS in) -TLS-> HAProxy (tcp, TLS in) -> nginx
  sluice-tls     wrk -> sluice-relay -TLS-> sluice agent -> nginx
  sluice-https   wrk -TLS-> sluice-relay (--https) -TLS-> sluice agent -> nginx

For each: requests/s and p50/p99 latency at 50 and 1000 connections with
100 B and 64 KiB bodies (wrk, 1 thread), medians of repeated runs; then a
large download's throughput (curl), relay RSS per idle tunnel, agent RSS.
Writes JSON and Markdown to --out. --smoke: tiny sizes, one repetition (CI).
Run as root (sshd). Uses the process harness of tests/integration.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402

NGINX = """worker_processes 1;
user root root;
daemon off;
error_log {dir}/nginx-error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    sendfile on;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{ listen 127.0.0.1:{port} backlog=8192; root {dir}/www; }}
}}
"""

HAPROXY_HTTP = """global
    # 20,000 open files per process here: two per connection, plus slack
    maxconn 6000
    nbthread {threads}
defaults
    mode http
    option splice-auto
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:{front}
    default_backend b
backend b
    http-reuse always
    server s 127.0.0.1:{back} maxconn 6000
"""

HAPROXY_TCP = """global
    # 20,000 open files per process here: two per connection, plus slack
    maxconn 6000
    nbthread {threads}
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:{front}
    default_backend b
backend b
    server s 127.0.0.1:{back} maxconn 6000
"""

# The TLS peers: OpenSSL in HAProxy, TLS 1.3 with the suite sluice prefers
# where AES is accelerated, and no session cache between hops to skew it
# (connections are long-lived keep-alive in every scenario).
HAPROXY_TLS_GLOBAL = """    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
"""

HAPROXY_TLS = """global
    maxconn 6000
    nbthread {threads}
""" + HAPROXY_TLS_GLOBAL + """defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:{front}{bind_ssl}
    default_backend b
backend b
    server s 127.0.0.1:{back} maxconn 6000{server_ssl}
"""

# The relay's own defaults, over the harness's test-speed ones (a 1.5 s
# dead-agent limit, 1 s head and 3 s open timeouts): under a burst of 1,000
# connections on two shared cores a heartbeat can be late by more than that,
# and a benchmark measures what a deployment runs.
PRODUCTION_TIMEOUTS = ["--heartbeat-ms", "6667", "--dead-after-ms", "20000", "--grace-ms", "30000",
                       "--head-timeout-ms", "10000", "--open-timeout-ms", "10000"]

# Ratios also taken round by round (the median of each round's ratio).
PAIRS = [("sluice", "haproxy2"), ("sluice", "ssh-R"), ("sluice", "sluice-epoll"),
         ("sluice", "haproxy1"), ("sluice-tls", "sluice"),
         ("sluice-tls", "haproxy-tls"), ("sluice-https", "haproxy-https")]


def wrk(url, conns, seconds, host=None, prefix=()):
    argv = list(prefix) + ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency", "--timeout", "10s"]
    if host:
        argv += ["-H", "Host: " + host]
    return wrk_argv_result(argv + [url], seconds)


def wrk_argv_result(argv, seconds, env=None):
    """Run wrk (argv with --latency) and read requests/s, p50, p99 and errors."""
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                         env=env).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def pct(p):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)" % p, out, re.M)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99),
            "errors": (errors.group(1) if errors else "") + (" non2xx=" + non2xx.group(1) if non2xx else "")}


def download(url, host=None):
    argv = ["curl", "-s", "-k", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"]
    if host:
        argv += ["-H", "Host: " + host]
    size, t = subprocess.run(argv + [url], capture_output=True, text=True, timeout=600).stdout.split()
    return int(size) / float(t) / 1e9  # GB/s


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="sluice-bench-")
        self.procs = []
        self.targets = {}  # name -> (url base, host header)

    def proc(self, name, argv, env=None):
        p = harness.Proc(name, argv, self.dir, env=env)
        self.procs.append(p)
        return p

    def start_nginx(self):
        www = os.path.join(self.dir, "www")
        os.makedirs(www)
        with open(os.path.join(www, "100b"), "wb") as f:
            f.write(b"x" * 100)
        with open(os.path.join(www, "64k"), "wb") as f:
            f.write(os.urandom(65536))
        with open(os.path.join(www, "big"), "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(self.args.big_mb):
                f.write(block)
        self.nginx_port = harness.free_port()
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX.format(dir=self.dir, port=self.nginx_port))
        self.proc("nginx", ["nginx", "-c", conf, "-p", self.dir])
        harness.wait_for(lambda: harness.port_open(self.nginx_port), what="nginx")
        self.targets["direct"] = ("http://127.0.0.1:%d" % self.nginx_port, None)

    def start_haproxy(self, name, template, back, tls_in=False, tls_out=False):
        front = harness.free_port()
        conf = os.path.join(self.dir, name + ".cfg")
        with open(conf, "w") as f:
            f.write(template.format(
                front=front, back=back, threads=self.args.workers,
                bind_ssl=" ssl crt " + self.haproxy_pem() if tls_in else "",
                server_ssl=" ssl verify none" if tls_out else ""))
        self.proc(name, ["haproxy", "-db", "-f", conf])
        harness.wait_for(lambda: harness.port_open(front), what=name)
        return front

    def haproxy_pem(self):
        """The test PKI's relay certificate and key in one file, as HAProxy reads them."""
        pem = os.path.join(self.dir, "haproxy.pem")
        if not os.path.exists(pem):
            crt, key = harness.pki()["relay"]
            with open(pem, "w") as f:
                f.write(open(crt).read() + open(key).read())
        return pem

    def start_tls_peers(self):
        """HAProxy with TLS on the link between its two hops, and with HTTPS in as well."""
        b = self.start_haproxy("haproxy-tls-b", HAPROXY_TLS, self.nginx_port, tls_in=True)
        a = self.start_haproxy("haproxy-tls-a", HAPROXY_TLS, b, tls_out=True)
        self.targets["haproxy-tls"] = ("http://127.0.0.1:%d" % a, None)
        b = self.start_haproxy("haproxy-https-b", HAPROXY_TLS, self.nginx_port, tls_in=True)
        a = self.start_haproxy("haproxy-https-a", HAPROXY_TLS, b, tls_in=True, tls_out=True)
        self.targets["haproxy-https"] = ("https://127.0.0.1:%d" % a, None)

    def start_peers(self):
        f = self.start_haproxy("haproxy1", HAPROXY_HTTP, self.nginx_port)
        self.targets["haproxy1"] = ("http://127.0.0.1:%d" % f, None)
        b = self.start_haproxy("haproxy2b", HAPROXY_TCP, self.nginx_port)
        a = self.start_haproxy("haproxy2a", HAPROXY_TCP, b)
        self.targets["haproxy2"] = ("http://127.0.0.1:%d" % a, None)
        if os.geteuid() == 0:
            os.makedirs(os.path.join(self.dir, "sshd"))
            sshd = harness.Sshd(os.path.join(self.dir, "sshd"))
            self.sshd = sshd
            self.procs.append(sshd.proc)
            rport = harness.free_port()
            self.ssh = self.proc("ssh-R", ["ssh", "-N", "-i", sshd.key, "-p", str(sshd.port),
                                           "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                                           "-o", "UserKnownHostsFile=" + sshd.known_hosts,
                                           "-R", "127.0.0.1:%d:127.0.0.1:%d" % (rport, self.nginx_port),
                                           "root@127.0.0.1"])
            harness.wait_for(lambda: harness.port_open(rport), what="ssh -R")
            self.targets["ssh-R"] = ("http://127.0.0.1:%d" % rport, None)

    def start_pair(self, name, relay_args, agent_args, tls=False, bindir=None, env=None,
                   https=False, pool=64):
        """A relay and its agent in front of nginx, as target name: the agent
        link plaintext (tls False, as the HAProxy chain) or TLS; https: the
        target is the relay's public HTTPS listener (needs tls); bindir
        (default --bin) holds the binaries; env is added to both's; pool:
        the agent's --pool (None: its default)."""
        bindir = bindir or self.args.bin
        https_port = harness.free_port() if https else None
        if https:
            relay_args = ["--https", "127.0.0.1:%d" % https_port] + list(relay_args)
        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            relay = harness.Relay(os.path.join(bindir, "sluice-relay"), self.dir,
                                  extra=["--log-level", "warn", "--workers", str(self.args.workers)]
                                  + PRODUCTION_TIMEOUTS + list(relay_args), tls=tls)
            self.procs.append(relay.proc)
            agent = harness.Agent(os.path.join(bindir, "sluice"), self.dir, self.nginx_port,
                                  relay.server, extra=["--name", "bench"]
                                  + (["--pool", str(pool)] if pool else []) + list(agent_args),
                                  tls=tls)
            self.procs.append(agent.proc)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.targets[name] = ("https://127.0.0.1:%d" % https_port if https else
                              "http://127.0.0.1:%d" % relay.http_port, "bench.localhost")
        return relay, agent

    def start_sluice(self):
        # Plaintext agent link, as the HAProxy chain it is compared with;
        # "sluice-tls" below is the same with TLS between agent and relay.
        zc = ["--send-zc", str(self.args.send_zc)] if self.args.send_zc else []
        sp = [] if self.args.splice else ["--no-splice"]
        self.relay, self.agent = self.start_pair("sluice", zc + sp, sp)
        # The same relay and agent on the epoll engine: what io_uring earns.
        ep = ["--engine", "epoll"] + sp
        self.relay_ep, _ = self.start_pair("sluice-epoll", ep, ep)
        # TLS on the agent link (what a deployment runs): the price of encryption.
        # The agent's default pool here: its memory under load is a goal.
        self.relay_tls, self.agent_tls = self.start_pair("sluice-tls", [], [], tls=True, pool=None)
        # Public HTTPS in as well, against the HAProxy HTTPS chain.
        self.relay_https, self.agent_https = self.start_pair("sluice-https", [], [], tls=True,
                                                             https=True, pool=None)

    def idle_tunnels(self, n):
        """Open n bare control connections (HELLO, no data pool) and read the relay's RSS."""
        import msgpack
        base = rss_kb(self.relay.proc.pid)
        socks = []
        hello = {"t": 1, "v": 1, "proto": 0, "token": "", "name": "", "sid": "", "epoch": 0}
        payload = msgpack.packb(hello)
        frame = len(payload).to_bytes(4, "big") + payload
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", self.relay.agents_port))
            s.sendall(frame)
            socks.append(s)
        for s in socks:  # each gets BOUND (and OPEN); read the first bytes
            s.settimeout(10)
            s.recv(4096)
        time.sleep(0.5)
        used = rss_kb(self.relay.proc.pid) - base
        for s in socks:
            s.close()
        return used * 1024 / n

    def agents(self):
        """Target name -> the agent process behind it, for its RSS under load."""
        return {"sluice": self.agent, "sluice-tls": self.agent_tls, "sluice-https": self.agent_https}

    def run(self):
        a = self.args
        res = {"config": vars(a), "scenarios": {}, "download": {}, "memory": {}}
        scenarios = [("100b", 50), ("64k", 50), ("100b", 1000)]
        res["paired"] = {}
        if a.only:
            self.targets = {n: t for n, t in self.targets.items() if n in a.only}
        # Each agent's RSS read right after each of its 64 KiB rounds (the
        # idle shed waits 5 s): the highest is its memory under that load.
        loaded = {n: 0 for n in self.agents() if n in self.targets}
        for path, conns in scenarios:
            key = "%s@%d" % (path, conns)
            res["scenarios"][key] = {}
            # Round-robin: every round runs each target once, so a drift of
            # this shared machine (10-20% between minutes) hits all alike,
            # and each round gives a ratio measured under one condition.
            rounds = {name: [] for name in self.targets}
            for _ in range(a.reps):
                for name, (base, host) in self.targets.items():
                    rounds[name].append(wrk("%s/%s" % (base, path), conns, a.seconds, host))
                    if name in loaded and path == "64k":
                        loaded[name] = max(loaded[name], rss_kb(self.agents()[name].proc.pid))
            res["paired"][key] = {
                "%s/%s" % (x, y): statistics.median(
                    u["rps"] / v["rps"] for u, v in zip(rounds[x], rounds[y]) if v["rps"])
                for x, y in PAIRS if x in rounds and y in rounds}
            for name in self.targets:
                runs = rounds[name]
                res["scenarios"][key][name] = {
                    "rps": statistics.median(r["rps"] for r in runs),
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                    "errors": [r["errors"] for r in runs if r["errors"]],
                    "runs": [r["rps"] for r in runs],
                }
                print("%-10s %-13s %10.0f req/s  p50 %6.2f ms  p99 %6.2f ms %s" % (
                    key, name, res["scenarios"][key][name]["rps"],
                    res["scenarios"][key][name]["p50_ms"], res["scenarios"][key][name]["p99_ms"],
                    " ".join(res["scenarios"][key][name]["errors"])), flush=True)
        res["memory"]["agent_loaded_rss_kb"] = loaded
        print("memory     agent RSS under 64k@50: " + ", ".join(
            "%s %d KiB" % kv for kv in loaded.items()), flush=True)
        for name in ("direct", "haproxy1", "haproxy2", "sluice", "haproxy-tls", "sluice-tls",
                     "haproxy-https", "sluice-https"):
            if name not in self.targets:
                continue
            base, host = self.targets[name]
            runs = [download(base + "/big", host) for _ in range(a.reps)]
            res["download"][name] = statistics.median(runs)
            print("download   %-13s %6.2f GB/s (%d MiB)" % (name, res["download"][name], a.big_mb), flush=True)
        res["memory"]["agent_rss_kb"] = rss_kb(self.agent.proc.pid)
        res["memory"]["agent_tls_rss_kb"] = rss_kb(self.agent_tls.proc.pid)
        # An idle agent gives memory back every 5 s (shed_memory in ag_agent.c).
        time.sleep(6)
        res["memory"]["agent_idle_rss_kb"] = rss_kb(self.agent.proc.pid)
        res["memory"]["agent_tls_idle_rss_kb"] = rss_kb(self.agent_tls.proc.pid)
        res["memory"]["relay_rss_kb"] = rss_kb(self.relay.proc.pid)
        res["memory"]["relay_bytes_per_idle_tunnel"] = self.idle_tunnels(a.tunnels)
        res["memory"]["idle_tunnels_measured"] = a.tunnels
        print("memory     agent RSS idle %d KiB (with TLS %d KiB)" % (
            res["memory"]["agent_idle_rss_kb"], res["memory"]["agent_tls_idle_rss_kb"]), flush=True)
        print("memory     agent RSS %d KiB (with TLS %d KiB), relay RSS %d KiB, relay %.0f B per idle tunnel (%d tunnels)" % (
            res["memory"]["agent_rss_kb"], res["memory"]["agent_tls_rss_kb"],
            res["memory"]["relay_rss_kb"],
            res["memory"]["relay_bytes_per_idle_tunnel"], a.tunnels), flush=True)
        return res

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        if os.environ.get("SLUICE_BENCH_KEEP"):  # every process's log, for a run that went wrong
            print("bench: kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def ratio(a, b):
    return a / b if b else float("nan")


def paired(x, y):
    return lambda row, pr: "%.2f" % pr["%s/%s" % (x, y)] if "%s/%s" % (x, y) in pr else "n/a"


def p99_ratio(x, y):
    return lambda row, pr: "%.2f" % ratio(row[x]["p99_ms"], row[y]["p99_ms"]) \
        if x in row and y in row else "n/a"


# The Markdown table's ratio columns: heading, cell from (row, paired ratios).
COLUMNS = [("sluice / haproxy2", paired("sluice", "haproxy2")),
           ("sluice / ssh-R", paired("sluice", "ssh-R")),
           ("sluice p99 / haproxy1 p99", p99_ratio("sluice", "haproxy1")),
           ("io_uring / epoll", paired("sluice", "sluice-epoll")),
           ("tls / plain", paired("sluice-tls", "sluice")),
           ("tls / haproxy-tls", paired("sluice-tls", "haproxy-tls")),
           ("tls p99 / haproxy-tls p99", p99_ratio("sluice-tls", "haproxy-tls")),
           ("https / haproxy-https", paired("sluice-https", "haproxy-https")),
           ("https p99 / haproxy-https p99", p99_ratio("sluice-https", "haproxy-https"))]


def markdown(res, cmd):
    sc = res["scenarios"]
    names = list(next(iter(sc.values())).keys())
    md = ["# End-to-end results", "", "Command: `%s`" % cmd, "",
          "Medians of %d rounds of %d s each (wrk, 1 thread; a round runs every target once, "
          "in turn); throughput ratios are the medians of each round's ratio; "
          "2 cores shared by every process; "
          "relay workers and HAProxy threads: %d; sluice splice: %s; send-zc: %s." % (
              res["config"]["reps"], res["config"]["seconds"], res["config"]["workers"],
              "on" if res["config"]["splice"] else "off", res["config"]["send_zc"] or "off"), "",
          "| scenario | " + " | ".join(names) + " | " + " | ".join(h for h, _ in COLUMNS) + " |",
          "|---" * (len(names) + len(COLUMNS) + 1) + "|"]
    for key, row in sc.items():
        cells = ["%.0f req/s, p99 %.1f ms" % (row[n]["rps"], row[n]["p99_ms"]) for n in names]
        md.append("| %s | %s | %s |" % (key, " | ".join(cells), " | ".join(
            f(row, res["paired"][key]) for _, f in COLUMNS)))
    d = res["download"]
    md += ["", "Download of %d MiB (curl): " % res["config"]["big_mb"] +
           ", ".join("%s %.2f GB/s" % (k, v) for k, v in d.items()) + "; " +
           ", ".join("%s / %s = %.2f" % (x, y, ratio(d[x], d[y])) for x, y in
                     (("sluice", "haproxy1"), ("sluice-tls", "haproxy-tls"),
                      ("sluice-https", "haproxy-https")) if x in d and y in d) + ".", "",
           "Agent RSS under 64k@50 (highest after a round): " + ", ".join(
               "%s %d KiB" % kv for kv in res["memory"]["agent_loaded_rss_kb"].items()) + ".", "",
           "Memory: agent RSS %d KiB (%d KiB with TLS to the relay) right after the run, "
           "%d KiB (%d KiB) after 6 s idle; relay RSS %d KiB after the run; %.0f bytes of relay RSS per idle tunnel (%d control connections, no data pool)." % (
               res["memory"]["agent_rss_kb"], res["memory"]["agent_tls_rss_kb"],
               res["memory"]["agent_idle_rss_kb"], res["memory"]["agent_tls_idle_rss_kb"],
               res["memory"]["relay_rss_kb"],
               res["memory"]["relay_bytes_per_idle_tunnel"], res["memory"]["idle_tunnels_measured"])]
    return "\n".join(md) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--big-mb", type=int, default=1024)
    ap.add_argument("--tunnels", type=int, default=5000)
    ap.add_argument("--no-splice", dest="splice", action="store_false",
                    help="relay and agent with --no-splice (plain sluice rows; splice is the default)")
    ap.add_argument("--send-zc", type=int, default=0, help="relay --send-zc BYTES")
    ap.add_argument("--only", type=lambda v: v.split(","), default=None,
                    help="measure only these targets (comma-separated names), e.g. "
                         "haproxy-tls,sluice-tls,haproxy-https,sluice-https")
    ap.add_argument("--workers", type=int, default=1,
                    help="relay workers, and HAProxy threads (each peer at the same count)")
    a = ap.parse_args()
    if a.smoke:
        a.seconds, a.reps, a.big_mb, a.tunnels = 1, 1, 16, 1000
    b = Bench(a)
    try:
        b.start_nginx()
        b.start_peers()
        b.start_tls_peers()
        b.start_sluice()
        res = b.run()
    finally:
        b.stop()
    bad = [(k, n, v["errors"]) for k, row in res["scenarios"].items() for n, v in row.items()
           if n.startswith("sluice") and v["errors"]]
    os.makedirs(a.out, exist_ok=True)
    tag = ("smoke" if a.smoke else "full") + ("-w%d" % a.workers if a.workers != 1 else "") + \
        ("" if a.splice else "-nosplice") + ("-zc" if a.send_zc else "")
    with open(os.path.join(a.out, "e2e-%s.json" % tag), "w") as f:
        json.dump(res, f, indent=1)
    md = markdown(res, " ".join(["bench/e2e/run.py"] + sys.argv[1:]))
    with open(os.path.join(a.out, "e2e-%s.md" % tag), "w") as f:
        f.write(md)
    print(md)
    if bad:
        print("e2e: sluice had errors: %s" % bad)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
