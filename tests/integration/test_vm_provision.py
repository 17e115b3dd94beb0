"""One-command provisioning of a relay host, end to end on a real, disposable
Debian 12 VM (tests/integration/vm.py: debootstrap image, cached; qemu with
user-mode networking and a loopback port to its sshd; booted once per run).
From a blank host: `sluice-control node provision` in check mode changes
nothing, then for real installs and starts the relay, which answers and
joins the cluster through Redis; a second run changes nothing."""
import json
import os
import subprocess

import pytest

import harness
import vm as vmlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# apt inside a TCG guest is slow: the suite's 180 s per test does not fit
# (the first test also builds the image when the cache is cold, and boots).
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("building and booting the test VM needs root")
    v = vmlib.Vm(tmp_path_factory.mktemp("vm"))
    yield v
    v.stop()


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    r = harness.Redis(tmp_path_factory.mktemp("vm-redis"))
    yield r
    r.stop()


def relay_binary(bin_dir):
    """The guest has no sanitizer runtime: a sanitizer run still installs
    the plain build's relay."""
    plain = os.path.join(ROOT, "build", "bin", "sluice-relay")
    return plain if os.path.exists(plain) else os.path.join(bin_dir, "sluice-relay")


def provision(binary, bin_dir, vm, redis, *extra):
    argv = [binary("sluice-control"), "node", "provision", "root@127.0.0.1:%d" % vm.port,
            "--key", vm.key, "--known-hosts", vm.known_hosts,
            "--relay-binary", relay_binary(bin_dir), "--relay-id", "vm-relay",
            # The guest reaches the host's loopback at 10.0.2.2 (QEMU's user-mode network).
            "--relay-redis", "redis://10.0.2.2:%d" % redis.port,
            "--relay-http", "0.0.0.0:8080", "--relay-agents", "0.0.0.0:7000",
            "--relay-admin", "127.0.0.1:9090", "--relay-domain", "vm.test",
            "--verify-redis", redis.url] + list(extra)
    env = dict(os.environ, SESSION_SECRET_KEY=harness.SECRET)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=1800, env=env)
    harness.check_sanitizers("sluice-control", r.stderr)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert lines, "no output; stderr:\n" + r.stderr[-3000:]
    return r.returncode, lines[:-1], lines[-1]


def audit(binary, vm):
    r = subprocess.run([binary("sluice-control"), "node", "audit", "root@127.0.0.1:%d" % vm.port,
                        "--key", vm.key, "--known-hosts", vm.known_hosts, "--json",
                        "--relay-http", "0.0.0.0:8080", "--relay-agents", "0.0.0.0:7000"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_provision_from_blank_then_nothing_to_change(binary, bin_dir, vm, redis):
    before = audit(binary, vm)
    failed = {c["id"] for c in before["checks"] if not c["ok"]}
    assert {"firewall", "fail2ban", "auto-updates", "ssh-passwords"} <= failed, before
    assert all(c["recommendation"] for c in before["checks"] if not c["ok"])
    # Check mode on the blank host: a plan, and nothing done.
    code, events, res = provision(binary, bin_dir, vm, redis, "--check")
    assert code == 0 and res["ok"] and res["check"], res
    planned = [e for e in events if e["status"] == "planned"]
    assert {e["operation"] for e in planned} >= {"packages", "user", "directory", "binary",
                                                 "config", "unit", "enable", "start",
                                                 "ssh-hardening", "firewall", "fail2ban", "updates"}
    assert any("+ user sluice" in e["diff"] for e in planned)
    assert vm.ssh("id sluice").returncode != 0
    assert vm.ssh("test -e /usr/local/bin/sluice-relay").returncode != 0

    code, events, res = provision(binary, bin_dir, vm, redis)
    assert code == 0 and res["ok"], (res, events)
    assert res["changed"] >= 8
    assert events[-1]["operation"] == "join" and events[-1]["status"] != "failed"
    # The hardening and the firewall went up under dead man's switches, disarmed once proven.
    armed = {e["step"] for e in events if e["operation"] == "dead-man-switch" and "armed:" in e["diff"]}
    assert armed == {"sluice-undo-sshd", "sluice-undo-firewall"}, armed
    assert vm.ssh("systemctl list-timers --all --no-legend 'sluice-undo-*'").stdout.strip() == ""
    assert vm.ssh("test -e /etc/ssh/sshd_config.d/50-sluice-hardening.conf.sluice-prev").returncode != 0
    # From inside: the user, the files with their modes, the unit active and answering.
    assert vm.ssh("id -u sluice").returncode == 0
    assert vm.ssh("stat -c '%U:%G %a' /etc/sluice/relay.conf").stdout.strip() == "root:sluice 640"
    assert vm.ssh("systemctl is-active sluice-relay").stdout.strip() == "active"
    assert vm.ssh("systemctl is-enabled sluice-relay").stdout.strip() == "enabled"
    health = vm.ssh("bash -c 'exec 3<>/dev/tcp/127.0.0.1/9090; printf \"GET /health HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n\" | dd bs=4096 iflag=fullblock status=none >&3; head -1 <&3'")
    assert " 200 " in health.stdout, health
    assert float(redis.cli("ZSCORE", "sl:relays", "vm-relay")) > 0
    # Locked down: sshd's effective settings, the firewall, fail2ban, updates.
    sshd = vm.ssh("sshd -T").stdout
    for line in ("passwordauthentication no", "permitrootlogin without-password", "maxauthtries 4",
                 "x11forwarding no", "kbdinteractiveauthentication no"):
        assert line in sshd, line
    assert "ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com" in sshd
    ufw = vm.ssh("ufw status verbose").stdout
    assert "Status: active" in ufw and "Default: deny (incoming)" in ufw
    assert "22/tcp" in ufw and "8080/tcp" in ufw and "7000/tcp" in ufw
    assert vm.ssh("systemctl is-active fail2ban").stdout.strip() == "active"
    assert "sshd" in vm.ssh("fail2ban-client status").stdout
    after = audit(binary, vm)
    assert after["score"] > before["score"] and after["score"] >= 80, after

    # A second run: nothing changes, and the relay was not restarted.
    pid = vm.ssh("systemctl show -p MainPID --value sluice-relay").stdout.strip()
    code, events, res = provision(binary, bin_dir, vm, redis)
    assert code == 0 and res["ok"] and res["changed"] == 0, [e for e in events if e["status"] != "unchanged"]
    assert vm.ssh("systemctl show -p MainPID --value sluice-relay").stdout.strip() == pid


def test_a_failing_step_stops_with_its_typed_error(binary, bin_dir, vm, redis, tmp_path):
    bad = tmp_path / "not-a-relay"
    bad.write_text("#!/bin/sh\nexit 3\n")
    bad.chmod(0o755)
    argv = [binary("sluice-control"), "node", "provision", "root@127.0.0.1:%d" % vm.port,
            "--key", vm.key, "--known-hosts", vm.known_hosts, "--relay-binary", str(bad),
            "--relay-redis", "redis://10.0.2.2:%d" % redis.port, "--relay-id", "vm-relay"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=1800,
                       env=dict(os.environ, SESSION_SECRET_KEY=harness.SECRET))
    res = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 1 and not res["ok"]
    assert res["error"]["type"] == "ServiceError" and res["error"]["what"] == "sluice-relay.service"
    assert res["error"]["step"] == "wait" and res["error"]["state"] in ("failed", "activating")
    # Put the real relay back for whatever runs next.
    code, events, res = provision(binary, bin_dir, vm, redis)
    assert code == 0 and res["ok"], (res, events[-3:])


def test_a_hardening_that_would_lock_us_out_is_rolled_back(binary, vm):
    argv = [binary("sluice-control"), "node", "lockdown", "root@127.0.0.1:%d" % vm.port,
            "--key", vm.key, "--known-hosts", vm.known_hosts, "--lockdown", "standard",
            "--relay-http", "0.0.0.0:8080", "--relay-agents", "0.0.0.0:7000",
            "--ssh-extra", "AllowUsers nobody"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    res = json.loads(r.stdout.splitlines()[-1])
    assert r.returncode == 1 and not res["ok"]
    err = res["error"]
    assert err["type"] == "SecurityError" and err["what"] == "sshd" and err["step"] == "fresh connection"
    assert err["critical"] and "rolled back" in err["cause"]
    # The host answers, with the settings it had before.
    assert vm.ssh("true").returncode == 0
    assert "allowusers" not in vm.ssh("sshd -T").stdout
    assert "AllowUsers" not in vm.ssh("cat /etc/ssh/sshd_config.d/50-sluice-hardening.conf").stdout
    # Undone in band: the dead man's switch armed for it was taken down too.
    assert vm.ssh("systemctl list-timers --all --no-legend 'sluice-undo-*'").stdout.strip() == ""


def test_a_run_that_dies_half_way_is_undone_by_the_host_itself(binary, vm):
    """The control plane killed after it changed sshd's settings and before
    it proved them: the dead man's switch it armed on the host puts the old
    settings back by itself (SLUICE_DEADMAN_S shortens its delay to 15 s)."""
    dropin = "/etc/ssh/sshd_config.d/50-sluice-hardening.conf"
    before = vm.ssh("cat " + dropin).stdout
    argv = [binary("sluice-control"), "node", "lockdown", "root@127.0.0.1:%d" % vm.port,
            "--key", vm.key, "--known-hosts", vm.known_hosts, "--lockdown", "standard",
            "--relay-http", "0.0.0.0:8080", "--relay-agents", "0.0.0.0:7000",
            "--ssh-extra", "MaxStartups 5:30:20"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, SLUICE_DEADMAN_S="15"))
    seen = []
    for line in p.stdout:
        ev = json.loads(line)
        seen.append(ev)
        if ev.get("operation") == "ssh-hardening" and ev.get("status") == "changed":
            p.kill()  # the new settings are in place, not yet proven
            break
    p.wait()
    assert any(e.get("operation") == "dead-man-switch" and e["step"] == "sluice-undo-sshd"
               and "armed: undone by the host in 15 s" in e["diff"] for e in seen), seen
    assert "MaxStartups 5:30:20" in vm.ssh("cat " + dropin).stdout
    # One look at everything, retried: the undo reloads sshd, and a
    # connection that comes in just then is reset.
    probe = ("cat %s; echo ---; systemctl list-units --all --no-legend 'sluice-undo-*'; "
             "test -e %s.sluice-prev && echo KEPT; sshd -T | grep ^maxstartups" % (dropin, dropin))

    def undone():
        r = vm.ssh(probe)
        text, _, rest = r.stdout.partition("---\n")
        return r.returncode == 0 and text == before and rest.strip() == "maxstartups 10:30:60"
    harness.wait_for(undone, timeout=90, what="the host undoing the change by itself")


def test_provisioning_through_the_api_streams_its_steps_and_changes_nothing_the_second_time(
        binary, bin_dir, vm, redis, tmp_path):
    """The same host through POST /api/v1/nodes/{id}/provision: a job whose
    steps stream as Server-Sent Events. The host is already provisioned (the
    tests above), so every step reports unchanged and the relay joins."""
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url,
                              extra=["--relay-binary", relay_binary(bin_dir),
                                     "--relay-redis", "redis://10.0.2.2:%d" % redis.port])
    try:
        status, _, node = control.api("POST", "/api/v1/nodes", {
            "name": "vm-relay", "host": "127.0.0.1", "port": vm.port, "user": "root",
            "hostKey": vm.host_key, "privateKey": open(vm.key).read()})
        assert status == 201, node
        status, hdrs, job = control.api("POST", "/api/v1/nodes/%s/provision" % node["id"], {
            "http": "0.0.0.0:8080", "agents": "0.0.0.0:7000", "admin": "127.0.0.1:9090",
            "domain": "vm.test"})
        assert status == 202 and hdrs["Location"] == "/api/v1/jobs/" + job["id"], job
        r = subprocess.run(["curl", "-sSN", "--max-time", "900", "-H",
                            "Authorization: Bearer " + harness.ADMIN_KEY,
                            control.url + "/api/v1/jobs/%s/events" % job["id"]],
                           capture_output=True, text=True, timeout=1000)
        frames = [blk for blk in r.stdout.split("\n\n") if "data: " in blk]
        steps = [json.loads(b.split("data: ", 1)[1]) for b in frames if "event: step" in b]
        done = json.loads(frames[-1].split("data: ", 1)[1])
        assert "event: done" in frames[-1] and done["status"] == "succeeded", (done, steps[-3:])
        assert done["result"]["changed"] == 0, [s for s in steps if s["status"] != "unchanged"]
        ops = [s["operation"] for s in steps]
        assert ops[-2:] == ["health", "join"] and "ssh-hardening" in ops and "binary" in ops
        status, _, got = control.api("GET", "/api/v1/jobs/" + job["id"])
        assert status == 200 and got["events"] == steps and got["status"] == "succeeded"
    finally:
        control.stop()


def test_iptables_where_ufw_is_absent_keeps_ssh_open_and_is_idempotent(binary, vm):
    """The iptables backend (what auto picks on a host with iptables and no
    ufw), asked for by name here since the VM has ufw by now: the SLUICE-IN
    chain first in INPUT, SSH and the relay's ports accepted, the rest
    dropped; a fresh connection proves SSH; a second run changes nothing."""
    argv = [binary("sluice-control"), "node", "lockdown", "root@127.0.0.1:%d" % vm.port,
            "--key", vm.key, "--known-hosts", vm.known_hosts, "--lockdown", "basic",
            "--firewall", "iptables", "--relay-http", "0.0.0.0:8080",
            "--relay-agents", "0.0.0.0:7000"]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        assert r.returncode == 0 and lines[-1]["ok"], r.stdout[-3000:] + r.stderr[-2000:]
        fw = [e for e in lines[:-1] if e["operation"] == "firewall"]
        assert any(e["step"] == "iptables" and e["status"] == "changed" for e in fw), fw
        rules = vm.ssh("iptables -S SLUICE-IN").stdout.splitlines()
        assert rules[-1] == "-A SLUICE-IN -j DROP", rules
        for port in (22, 8080, 7000):
            assert "-A SLUICE-IN -p tcp -m tcp --dport %d -j ACCEPT" % port in rules, rules
        assert vm.ssh("iptables -S INPUT").stdout.splitlines()[1] == "-A INPUT -j SLUICE-IN"
        assert "-A SLUICE-IN -j DROP" in vm.ssh("ip6tables -S SLUICE-IN").stdout
        assert vm.ssh("systemctl is-enabled sluice-firewall").stdout.strip() == "enabled"
        # The script applies the same rules at boot: run as the unit, nothing differs.
        assert vm.ssh("systemctl restart sluice-firewall && iptables -S SLUICE-IN").stdout.splitlines() == rules
        r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        res = json.loads(r.stdout.splitlines()[-1])
        assert r.returncode == 0 and res["ok"] and res["changed"] == 0, r.stdout[-3000:]
    finally:
        vm.ssh("systemctl disable --now sluice-firewall; rm -f /etc/systemd/system/sluice-firewall.service "
               "/usr/local/sbin/sluice-firewall; systemctl daemon-reload; "
               "for t in iptables ip6tables; do $t -D INPUT -j SLUICE-IN; $t -F SLUICE-IN; $t -X SLUICE-IN; done")
