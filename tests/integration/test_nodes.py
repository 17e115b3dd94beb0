"""The nodes API (POST /api/v1/nodes, .../exec, .../diagnose): hosts
registered with sealed credentials, commands run over SSH off the HTTP loop
with their output streamed as it comes, against a real sshd, a real Redis
and a real sluice-control."""
import http.client
import json
import os
import subprocess
import threading
import time
import uuid

import pytest

import harness

USER = "sluicetest"
SUDO_PW = "Sudo-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def env(tmp_path_factory, bin_dir):
    if os.geteuid() != 0:
        pytest.skip("sshd with a test user and sudo needs root")
    work = tmp_path_factory.mktemp("nodes")
    d = harness.Sshd(work, user=USER, sudo_password=SUDO_PW)
    redis = harness.Redis(work)
    control = harness.Control(os.path.join(bin_dir, "sluice-control"), work, redis.url)
    yield d, redis, control
    control.stop()
    redis.stop()
    d.stop()


def register(control, d, **over):
    return control.api("POST", "/api/v1/nodes", harness.node_body(d, SUDO_PW, **over))


def stream(control, path, body, timeout=60):
    """POST and read the answer as it comes: (status, headers, [(t, line)])."""
    c = http.client.HTTPConnection("127.0.0.1", control.port, timeout=timeout)
    c.request("POST", path, json.dumps(body), {"Authorization": "Bearer " + harness.ADMIN_KEY,
                                               "Content-Type": "application/json"})
    r = c.getresponse()
    t0, lines = time.monotonic(), []
    while True:
        line = r.readline()
        if not line:
            break
        lines.append((time.monotonic() - t0, json.loads(line)))
    c.close()
    return r.status, r.headers, lines


def test_register_list_show_delete_never_shows_secrets(env):
    d, redis, control = env
    status, _, node = register(control, d)
    assert status == 201, node
    assert node["id"].startswith("nd_") and node["host"] == "127.0.0.1" and node["port"] == d.port
    for body in (node, control.api("GET", "/api/v1/nodes/" + node["id"])[2],
                 control.api("GET", "/api/v1/nodes")[2]):
        text = json.dumps(body)
        assert "PRIVATE KEY" not in text and SUDO_PW not in text
    assert node["id"] in [n["id"] for n in control.api("GET", "/api/v1/nodes")[2]["nodes"]]
    # At rest the credentials are sealed: neither the key nor the password is in Redis.
    dump = subprocess.run(["redis-cli", "-p", str(redis.port), "HGETALL", "sl:node:" + node["id"]],
                          capture_output=True, text=True).stdout
    assert "creds" in dump and "v1." in dump
    assert "PRIVATE KEY" not in dump and SUDO_PW not in dump and "OPENSSH" not in dump
    assert control.api("DELETE", "/api/v1/nodes/" + node["id"])[:3:2] == (200, {"id": node["id"], "status": "deleted"})
    assert control.api("GET", "/api/v1/nodes/" + node["id"])[0] == 404
    assert control.api("DELETE", "/api/v1/nodes/" + node["id"])[0] == 404


@pytest.mark.parametrize("over,code", [
    ({"hostKey": "not a key at all"}, "invalid_host_key"),
    ({"host": ""}, "invalid_host"),
    ({"port": 70000}, "invalid_port"),
    ({"user": "has space"}, "invalid_user"),
    ({"privateKey": None, "password": None}, "missing_credential"),
    ({"extra": 1}, "unknown_field"),
    ({"port": "22"}, "invalid_type"),
])
def test_registration_is_validated(env, over, code):
    d, _, control = env
    body = harness.node_body(d, **{"name": "x", "privateKey": "k", **over})
    status, _, err = control.api("POST", "/api/v1/nodes", body)
    assert status == 400 and err["code"] == code, err


def test_nodes_need_the_admin_scope(env):
    _, _, control = env
    key = control.new_key(scopes=("tunnels",))["key"]
    assert control.api("GET", "/api/v1/nodes", key=key)[0] == 403
    assert control.api("POST", "/api/v1/nodes/nd_abc/exec", {"shell": "id"}, key=key)[0] == 403
    assert control.api("GET", "/api/v1/nodes", key=None)[0] == 401


def test_exec_streams_output_as_it_comes(env):
    d, _, control = env
    node = register(control, d)[2]
    status, hdrs, lines = stream(control, "/api/v1/nodes/%s/exec" % node["id"], {
        "shell": "echo first; sleep 1.5; echo second >&2; exit 4"})
    assert status == 200 and hdrs["Content-Type"] == "application/x-ndjson"
    out = [x for _, x in lines]
    assert out[0] == {"stream": "stdout", "line": "first"}
    assert out[1] == {"stream": "stderr", "line": "second"}
    assert out[-1]["exit"] == 4 and out[-1]["exitKnown"] and out[-1]["error"] is None
    # The first line came while the command still ran.
    assert lines[1][0] - lines[0][0] > 1.0


def test_exec_with_sudo_env_cwd_and_a_bad_body(env):
    d, _, control = env
    node = register(control, d)[2]
    _, _, lines = stream(control, "/api/v1/nodes/%s/exec" % node["id"], {
        "command": ["sh", "-c", 'echo "$(id -u) $X $PWD"'], "sudo": True, "env": {"X": "y z"},
        "cwd": "/tmp"})
    assert [x for _, x in lines][0] == {"stream": "stdout", "line": "0 y z /tmp"}
    assert lines[-1][1]["exit"] == 0
    status, _, err = control.api("POST", "/api/v1/nodes/%s/exec" % node["id"], {"command": "ls"})
    assert status == 400 and err["code"] == "invalid_command"
    status, _, err = control.api("POST", "/api/v1/nodes/nd_nosuchnode/exec", {"shell": "true"})
    assert status == 404


def test_exec_timeout_is_reported_and_the_process_killed(env):
    d, _, control = env
    node = register(control, d)[2]
    marker = "sleep 7%03d" % (os.getpid() % 1000)
    _, _, lines = stream(control, "/api/v1/nodes/%s/exec" % node["id"],
                         {"shell": marker, "timeoutMs": 500})
    assert lines[-1][1]["error"]["kind"] == "timeout"
    harness.wait_for(lambda: subprocess.run(["pgrep", "-u", USER, "-f", marker]).returncode != 0,
                     timeout=5, what="remote process killed")


def test_a_client_that_leaves_cancels_its_command(env):
    d, _, control = env
    node = register(control, d)[2]
    marker = "sleep 8%03d" % (os.getpid() % 1000)
    c = http.client.HTTPConnection("127.0.0.1", control.port, timeout=30)
    c.request("POST", "/api/v1/nodes/%s/exec" % node["id"], json.dumps({"shell": "echo go; " + marker}),
              {"Authorization": "Bearer " + harness.ADMIN_KEY})
    r = c.getresponse()
    assert json.loads(r.readline())["line"] == "go"
    harness.wait_for(lambda: subprocess.run(["pgrep", "-u", USER, "-f", marker]).returncode == 0,
                     what="command running")
    c.close()
    harness.wait_for(lambda: subprocess.run(["pgrep", "-u", USER, "-f", marker]).returncode != 0,
                     timeout=10, what="the command cancelled")


def test_a_slow_host_does_not_stall_the_api(env):
    d, _, control = env
    node = register(control, d)[2]
    done = []
    t = threading.Thread(target=lambda: done.append(stream(
        control, "/api/v1/nodes/%s/exec" % node["id"], {"shell": "sleep 2; echo late"})))
    t.start()
    time.sleep(0.3)
    # Meanwhile the API answers at once (health and a listing), not after the command.
    assert control.api("GET", "/api/v1/nodes")[0] == 200
    assert not done
    t.join()
    assert done[0][2][0][1]["line"] == "late"


def test_diagnose_through_the_api(env):
    d, _, control = env
    node = register(control, d)[2]
    status, _, lines = stream(control, "/api/v1/nodes/%s/diagnose" % node["id"], {})
    rep = lines[0][1]
    assert status == 200 and rep["ok"], rep
    node2 = register(control, d, hostKey="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPqB7e8iqcW3Hn0nP3uY9d7SeC3QbX5bTjR6V2l5M3wX")[2]
    _, _, lines = stream(control, "/api/v1/nodes/%s/diagnose" % node2["id"], {})
    rep = lines[0][1]
    assert not rep["ok"]
    assert any(c["name"] == "hostkey" and not c["ok"] and "changed" in c["detail"] for c in rep["checks"])


def test_sealed_credentials_do_not_open_under_another_secret(env, bin_dir, tmp_path):
    d, redis, control = env
    node = register(control, d)[2]
    other = harness.Control(os.path.join(bin_dir, "sluice-control"), tmp_path, redis.url,
                            env={"SESSION_SECRET_KEY": "another-secret-" + "x" * 40})
    try:
        status, _, err = other.api("POST", "/api/v1/nodes/%s/exec" % node["id"], {"shell": "true"})
        assert status == 500 and err["code"] == "sealed_credentials"
    finally:
        other.stop()


def get_health(control, node_id):
    c = http.client.HTTPConnection("127.0.0.1", control.port, timeout=30)
    c.request("GET", "/api/v1/nodes/%s/health" % node_id, headers={"Authorization": "Bearer " + harness.ADMIN_KEY})
    r = c.getresponse()
    body = json.loads(r.read())
    c.close()
    return r.status, body


def test_commands_reuse_the_nodes_warm_connection_and_health_sees_them(env):
    d, _, control = env
    node = register(control, d)[2]
    for _ in range(5):
        _, _, lines = stream(control, "/api/v1/nodes/%s/exec" % node["id"], {"command": ["true"]})
        assert lines[-1][1]["exit"] == 0
    status, h = get_health(control, node["id"])
    assert status == 200 and h["ok"]
    assert len(h["connections"]) == 1 and h["connections"][0]["ok"]  # one warm connection served all
    assert h["figures"]["samples"] >= 6 and h["figures"]["failure_rate"] == 0
    # Its connection killed on the host: the probe finds it and a new one replaces it.
    subprocess.run(["pkill", "-KILL", "-f", "^sshd: %s" % USER])
    status, h = get_health(control, node["id"])
    assert status == 200 and h["ok"] and h["dropped"] == 1 and h["reconnected"]
    _, _, lines = stream(control, "/api/v1/nodes/%s/exec" % node["id"], {"command": ["true"]})
    assert lines[-1][1]["exit"] == 0
