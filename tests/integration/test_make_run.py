"""`make run`'s script starts the local service, which answers, and stops
every process it started."""
import os
import random
import subprocess

import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def test_run_local_once_starts_answers_and_stops(bin_dir, tmp_path):
    port = harness.free_port()
    http = harness.free_port()
    lt = random.randrange(21100, 32000, 10)
    https = harness.free_port()
    env = dict(os.environ, SLUICE_RUN_CONTROL="127.0.0.1:%d" % port,
               SLUICE_RUN_HTTP="127.0.0.1:%d" % http,
               SLUICE_RUN_HTTPS="127.0.0.1:%d" % https,
               SLUICE_RUN_AGENTS="127.0.0.1:%d" % harness.free_port(),
               SLUICE_RUN_ADMIN="127.0.0.1:%d" % harness.free_port(),
               SLUICE_RUN_APP=str(harness.free_port()),
               SLUICE_RUN_LT_PORTS="%d-%d" % (lt, lt + 9))
    def run():
        return subprocess.run(["sh", os.path.join(ROOT, "deploy", "run-local.sh"), "--bin",
                               bin_dir, "--dir", str(tmp_path / "run"), "--once"],
                              capture_output=True, text=True, timeout=60, env=env)
    r = run()
    assert r.returncode == 0, r.stdout + r.stderr
    # The control plane made the demo tunnel through its own API.
    assert '"status":"active","name":"demo"' in r.stdout
    assert "created through the API" in r.stdout
    assert '"status":"ok"' in r.stdout and '"redis":{"ok":true' in r.stdout
    assert "run-local: tunnel         http://demo.localhost:%d/" % http in r.stdout
    assert "run-local: the tunnel answers: <h1>Hello through sluice</h1>" in r.stdout
    assert "run-local: and over HTTPS: https://demo.localhost:%d/" % https in r.stdout
    assert "run-local: stopped" in r.stdout
    # The development CA and certificate stay for the next run; no temporary is left.
    tls = sorted(os.listdir(tmp_path / "run" / "tls"))
    assert tls == ["ca.key", "ca.pem", "relay.key", "relay.pem"], tls
    assert oct(os.stat(tmp_path / "run" / "tls" / "relay.key").st_mode & 0o777) == "0o600"
    assert not harness.port_open(port) and not harness.port_open(http)
    assert not os.path.exists(tmp_path / "run" / "redis.sock")
    # A second run finds its key and takes the name "demo" back (the first
    # run's session is deleted through the API, then a new one is made).
    first_sid = open(tmp_path / "run" / "session.id").read().strip()
    r2 = run()
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert "run-local: tunnel         http://demo.localhost:%d/" % http in r2.stdout
    assert open(tmp_path / "run" / "session.id").read().strip() != first_sid
    assert oct(os.stat(tmp_path / "run" / "api.key").st_mode & 0o777) == "0o600"
    # Nothing it started is left: no process still has the run dir open.
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "run")], capture_output=True, text=True)
    assert left.stdout.strip() == "", left.stdout


def test_run_local_with_three_relays_serves_the_tunnel_through_each(bin_dir, tmp_path):
    # Runs of consecutive ports, below the ephemeral range (32768 on): no
    # outgoing connection holds one.
    base = random.randrange(29100, 32700, 20)
    lt = random.randrange(21100, 28900, 10)
    env = dict(os.environ, SLUICE_RUN_RELAYS="3",
               SLUICE_RUN_CONTROL="127.0.0.1:%d" % harness.free_port(),
               SLUICE_RUN_HTTP="127.0.0.1:%d" % base,
               SLUICE_RUN_HTTPS="127.0.0.1:%d" % (base + 3),
               SLUICE_RUN_AGENTS="127.0.0.1:%d" % (base + 6),
               SLUICE_RUN_ADMIN="127.0.0.1:%d" % (base + 10),
               SLUICE_RUN_LINK="127.0.0.1:%d" % (base + 13),
               SLUICE_RUN_APP=str(harness.free_port()),
               SLUICE_RUN_LT_PORTS="%d-%d" % (lt, lt + 9))
    r = subprocess.run(["sh", os.path.join(ROOT, "deploy", "run-local.sh"), "--bin", bin_dir,
                        "--dir", str(tmp_path / "run"), "--once"],
                       capture_output=True, text=True, timeout=90, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "run-local: 3 relays     on one Redis: " in r.stdout
    for i in (2, 3):
        assert ("run-local: and through relay %d: curl -H 'Host: demo.localhost' "
                "http://127.0.0.1:%d/" % (i, base + i - 1)) in r.stdout
    assert "run-local: stopped" in r.stdout
    for p in range(base, base + 16):
        assert not harness.port_open(p), p
