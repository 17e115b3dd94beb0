"""deploy/docker-compose.yml describes the cluster topology of docs/cluster.md
(this machine has no Docker engine to run it): every relay joins the cluster
with a link address of its own on the private network, shares Redis and the
session secret with the control plane, drains on stop, and every option it
passes is one the binaries accept (checked with --print-config)."""
import os
import subprocess

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def compose():
    with open(os.path.join(ROOT, "deploy", "docker-compose.yml")) as f:
        return yaml.safe_load(f)


def test_three_relays_one_redis_one_control_plane():
    c = compose()
    relays = {n: s for n, s in c["services"].items() if n.startswith("relay")}
    assert len(relays) == 3 and "redis" in c["services"] and "control" in c["services"]
    ids, links = set(), set()
    for name, svc in relays.items():
        cmd = svc["command"]
        ids.add(cmd[cmd.index("--relay-id") + 1])
        link = cmd[cmd.index("--link") + 1]
        links.add(link)
        assert link.startswith(name + ":")  # reachable by its service name
        assert "cluster" in svc["networks"]
        assert svc["environment"]["REDIS_URL"] == c["services"]["control"]["environment"]["REDIS_URL"]
        assert "SESSION_SECRET_KEY" in svc["environment"]
        assert svc["stop_signal"] == "SIGTERM"
    assert len(ids) == 3 and len(links) == 3
    assert c["networks"]["cluster"]["internal"] is True
    assert "ports" not in c["services"]["redis"]  # Redis is never published


def test_every_option_is_one_the_binaries_accept(bin_dir):
    c = compose()
    env = dict(os.environ, SESSION_SECRET_KEY="x" * 40, SLUICE_ADMIN_KEY="y" * 20,
               REDIS_URL="redis://redis:6379")
    for name, svc in c["services"].items():
        cmd = svc.get("command")
        if not cmd or not cmd[0].startswith("sluice"):
            continue
        r = subprocess.run([os.path.join(bin_dir, cmd[0])] + cmd[1:] + ["--print-config"],
                           capture_output=True, text=True, env=env, timeout=10)
        assert r.returncode == 0, (name, r.stdout + r.stderr)
