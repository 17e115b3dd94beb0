"""Provisioning through the API as an asynchronous job
(POST /api/v1/nodes/{id}/provision, GET /api/v1/jobs/{id}, its Server-Sent
Events stream, DELETE to cancel) against a real sshd, a real Redis and real
sluice-control processes. The job's end to end run on a VM is in
test_vm_provision.py; here: check mode against this host (which changes
nothing), a typed failure, cancelling, the node's lock, and a second
control plane that follows a job through Redis."""
import http.client
import json
import os
import subprocess
import time
import uuid

import pytest

import harness

USER = "sluicejobs"
SUDO_PW = "Sudo-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def env(tmp_path_factory, bin_dir):
    if os.geteuid() != 0:
        pytest.skip("sshd with a test user and sudo needs root")
    work = tmp_path_factory.mktemp("jobs")
    d = harness.Sshd(work, user=USER, sudo_password=SUDO_PW)
    # The same user's commands made slow (1 s each) by a second sshd: a
    # job that takes long enough to be cancelled or found running.
    slow_dir = work / "slow"
    slow_dir.mkdir()
    slow = harness.Sshd(slow_dir, user=USER, sudo_password=SUDO_PW,
                        extra_config='ForceCommand sleep 1; eval "$SSH_ORIGINAL_COMMAND"\n')
    redis = harness.Redis(work)
    control = harness.Control(os.path.join(bin_dir, "sluice-control"), work, redis.url)
    yield d, slow, redis, control
    control.stop()
    redis.stop()
    slow.stop()
    d.stop()


def register(control, d, **over):
    body = harness.node_body(d, SUDO_PW, **{"name": "relay-" + uuid.uuid4().hex[:6], **over})
    status, _, node = control.api("POST", "/api/v1/nodes", body)
    assert status == 201, node
    return node


def events(control, job_id, last_id=None, timeout=120):
    """The job's SSE stream read to its end: ([(event, id, data)], headers)."""
    c = http.client.HTTPConnection("127.0.0.1", control.port, timeout=timeout)
    h = {"Authorization": "Bearer " + harness.ADMIN_KEY, "Accept": "text/event-stream"}
    if last_id is not None:
        h["Last-Event-ID"] = str(last_id)
    c.request("GET", "/api/v1/jobs/%s/events" % job_id, headers=h)
    r = c.getresponse()
    assert r.status == 200, r.read()
    frames, cur = [], {}
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line == "":
            if "data" in cur:
                frames.append((cur.get("event", "message"), cur.get("id"), json.loads(cur["data"])))
            cur = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            cur[k] = v
    c.close()
    return frames, r.headers


def start(control, node, body=None):
    status, hdrs, job = control.api("POST", "/api/v1/nodes/%s/provision" % node["id"], body or {})
    assert status == 202, job
    assert hdrs["Location"] == "/api/v1/jobs/" + job["id"]
    assert job["id"].startswith("jb_") and job["status"] == "running" and job["node"] == node["id"]
    return job


def test_check_mode_job_streams_every_step_and_changes_nothing(env):
    d, _, redis, control = env
    node = register(control, d)
    had_user = subprocess.run(["id", "sluice"], capture_output=True).returncode == 0
    had_binary = os.path.exists("/usr/local/bin/sluice-relay")
    job = start(control, node, {"check": True, "lockdown": "basic", "http": "0.0.0.0:18080",
                                "agents": "0.0.0.0:17000"})
    frames, hdrs = events(control, job["id"])
    assert hdrs["Content-Type"] == "text/event-stream"
    steps = [f for f in frames if f[0] == "step"]
    done = frames[-1]
    assert done[0] == "done" and done[2]["result"]["check"], done
    # Every step as one event, in order, with its seq as the SSE id.
    assert [int(f[1]) for f in steps] == list(range(len(steps)))
    assert [f[2]["seq"] for f in steps] == list(range(len(steps)))
    ops = {f[2]["operation"] for f in steps}
    assert {"packages", "user", "directory", "ssh-hardening", "firewall", "binary", "config",
            "unit"} <= ops, ops
    if os.path.isdir("/run/systemd/system"):
        assert done[2]["status"] == "succeeded", json.dumps([done, steps], indent=1)
        assert all(f[2]["status"] in ("planned", "unchanged") for f in steps)
    else:
        # A host without systemd (a container): the service manager stops the
        # job with its typed error once it needs systemctl, and says why.
        assert done[2]["status"] == "failed"
        err = done[2]["result"]["error"]
        assert err["type"] == "ServiceError" and err["what"] == "sluice-relay.service", err
        assert "systemd" in err["cause"], err
        assert all(f[2]["status"] in ("planned", "unchanged") for f in steps[:-1])
        assert steps[-1][2]["status"] == "failed"
    assert done[2]["result"]["changed"] == 0
    # Check mode changed nothing on the host.
    assert (subprocess.run(["id", "sluice"], capture_output=True).returncode == 0) == had_user
    assert os.path.exists("/usr/local/bin/sluice-relay") == had_binary
    # GET: the same job with all its events; the record in Redis with its TTL.
    status, _, got = control.api("GET", "/api/v1/jobs/" + job["id"])
    assert status == 200 and got["status"] == done[2]["status"] and got["result"] == done[2]["result"]
    assert got["events"] == [f[2] for f in steps]
    assert 0 < int(redis.cli("TTL", "sl:job:" + job["id"])) <= 7 * 24 * 3600
    assert json.loads(redis.cli("GET", "sl:job:" + job["id"]))["status"] == done[2]["status"]
    # The node's lock is free again: a second job starts.
    assert redis.cli("EXISTS", "sl:node:%s:job" % node["id"]).strip() == "0"
    # Resuming after the third event replays only what came after it.
    again, _ = events(control, job["id"], last_id=2)
    assert [f[2]["seq"] for f in again if f[0] == "step"] == list(range(3, len(steps)))
    # curl, as an operator would follow it.
    r = subprocess.run(["curl", "-sSN", "-H", "Authorization: Bearer " + harness.ADMIN_KEY,
                        control.url + "/api/v1/jobs/%s/events" % job["id"]],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "event: done\n" in r.stdout and r.stdout.count("event: step\n") == len(steps)


def test_a_failed_job_carries_the_typed_error_and_its_step(env, tmp_path):
    d, _, _, control = env
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    node = register(control, d, privateKey=other.read_text())
    job = start(control, node)
    frames, _ = events(control, job["id"])
    done = frames[-1][2]
    assert frames[-1][0] == "done" and done["status"] == "failed"
    err = done["result"]["error"]
    assert err["type"] == "SetupError" and err["what"] == "packages", err
    assert "auth" in err["cause"].lower() or "publickey" in err["cause"].lower(), err
    failed = [f[2] for f in frames if f[0] == "step" and f[2]["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["operation"] == "packages"
    # Nothing ran after the failure.
    assert frames[-2][2]["status"] == "failed"


def test_cancel_stops_before_the_next_step(env):
    _, slow, redis, control = env
    node = register(control, slow)
    job = start(control, node, {"check": True})
    # A second job on the same node while this one runs: refused, naming it.
    status, _, err = control.api("POST", "/api/v1/nodes/%s/provision" % node["id"], {"check": True})
    assert status == 409 and err["code"] == "job_running" and job["id"] in err["error"]
    harness.wait_for(lambda: control.api("GET", "/api/v1/jobs/" + job["id"])[2]["steps"] >= 1,
                     timeout=60, what="the first step")
    status, _, body = control.api("DELETE", "/api/v1/jobs/" + job["id"])
    assert status == 202 and body["status"] == "cancelling"
    frames, _ = events(control, job["id"])
    done = frames[-1][2]
    assert done["status"] == "cancelled", done
    assert done["result"]["error"]["step"] == "cancelled"
    steps = [f[2] for f in frames if f[0] == "step"]
    assert steps[-1]["status"] == "failed" and "cancelled" in steps[-1]["diff"]
    # Fewer steps than the whole run: it stopped early.
    assert not any(s["operation"] in ("unit", "enable") for s in steps), steps
    status, _, err = control.api("DELETE", "/api/v1/jobs/" + job["id"])
    assert status == 409 and err["code"] == "job_ended"
    assert redis.cli("EXISTS", "sl:node:%s:job" % node["id"]).strip() == "0"


def test_a_node_locked_by_another_control_plane_is_refused(env):
    d, _, redis, control = env
    node = register(control, d)
    redis.cli("SET", "sl:node:%s:job" % node["id"], "jb_elsewhere", "PX", "60000")
    try:
        status, _, err = control.api("POST", "/api/v1/nodes/%s/provision" % node["id"], {})
        assert status == 409 and err["code"] == "job_running" and "jb_elsewhere" in err["error"]
    finally:
        redis.cli("DEL", "sl:node:%s:job" % node["id"])


def test_another_control_plane_follows_and_cancels_the_job(env, bin_dir, tmp_path):
    _, slow, redis, control = env
    other = harness.Control(os.path.join(bin_dir, "sluice-control"), tmp_path, redis.url)
    try:
        node = register(control, slow)
        job = start(control, node, {"check": True})
        harness.wait_for(lambda: other.api("GET", "/api/v1/jobs/" + job["id"])[0] == 200,
                         timeout=30, what="the record in Redis")
        status, _, got = other.api("GET", "/api/v1/jobs/" + job["id"])
        assert got["status"] == "running" and got["node"] == node["id"]
        # Cancelled through the other control plane: the owner sees it on its refresh.
        status, _, body = other.api("DELETE", "/api/v1/jobs/" + job["id"])
        assert status == 202 and body["status"] == "cancelling"
        frames, _ = events(other, job["id"])
        assert frames[-1][0] == "done" and frames[-1][2]["status"] == "cancelled"
        assert [f[2]["seq"] for f in frames if f[0] == "step"] == \
            list(range(len([f for f in frames if f[0] == "step"])))
        status, _, mine = control.api("GET", "/api/v1/jobs/" + job["id"])
        assert mine["status"] == "cancelled" and len(mine["events"]) == len(frames) - 1
    finally:
        other.stop()


def test_a_running_record_nobody_refreshes_reads_as_lost(env):
    _, _, redis, control = env
    rec = {"id": "jb_lostjob", "kind": "provision", "node": "nd_x", "status": "running",
           "updatedMs": int(time.time() * 1000) - 120000, "events": [], "result": None}
    redis.cli("SET", "sl:job:jb_lostjob", json.dumps(rec), "EX", "60")
    status, _, got = control.api("GET", "/api/v1/jobs/jb_lostjob")
    assert status == 200 and got["status"] == "lost"
    rec["updatedMs"] = int(time.time() * 1000)
    redis.cli("SET", "sl:job:jb_lostjob", json.dumps(rec), "EX", "60")
    assert control.api("GET", "/api/v1/jobs/jb_lostjob")[2]["status"] == "running"


@pytest.mark.parametrize("body,code", [
    ({"extra": 1}, "unknown_field"),
    ({"check": "yes"}, "invalid_type"),
    ({"http": "nowhere"}, "invalid_address"),
    ({"agents": "0.0.0.0:70000"}, "invalid_address"),
    ({"lockdown": "paranoid"}, "invalid_lockdown"),
    ({"relayId": "a b"}, "invalid_value"),
    ({"domain": 'x"\nsession-secret = y'}, "invalid_value"),
    ({"redisUrl": "http://x"}, "invalid_redis_url"),
    ({"firewall": "nft"}, "invalid_firewall"),
])
def test_a_bad_body_is_refused_before_anything_runs(env, body, code):
    d, _, _, control = env
    node = register(control, d)
    status, _, err = control.api("POST", "/api/v1/nodes/%s/provision" % node["id"], body)
    assert status == 400 and err["code"] == code, err


def test_unknown_jobs_nodes_and_scopes(env):
    _, _, _, control = env
    assert control.api("GET", "/api/v1/jobs/jb_nosuchjob")[0] == 404
    assert control.api("GET", "/api/v1/jobs/jb_nosuchjob/events")[0] == 404
    assert control.api("GET", "/api/v1/jobs/notajob")[0] == 404
    assert control.api("POST", "/api/v1/jobs/jb_x")[0] == 405
    assert control.api("POST", "/api/v1/nodes/nd_nosuchnode/provision", {})[0] == 404
    key = control.new_key(scopes=("tunnels",))["key"]
    assert control.api("GET", "/api/v1/jobs/jb_nosuchjob", key=key)[0] == 403
    assert control.api("POST", "/api/v1/nodes/nd_x/provision", {}, key=key)[0] == 403
    assert control.api("DELETE", "/api/v1/jobs/jb_x", key=None)[0] == 401


def test_a_record_missed_while_redis_was_down_is_written_once_it_is_back(env, bin_dir, tmp_path):
    _, slow, _, _ = env
    redis = harness.Redis(tmp_path)
    control = harness.Control(os.path.join(bin_dir, "sluice-control"), tmp_path, redis.url)
    try:
        node = register(control, slow)
        job = start(control, node, {"check": True})
        harness.wait_for(lambda: control.api("GET", "/api/v1/jobs/" + job["id"])[2]["steps"] >= 1,
                         timeout=60, what="the first step")
        redis.stop()
        # The job goes on without Redis (its owner has it in memory), and ends.
        assert control.api("DELETE", "/api/v1/jobs/" + job["id"])[0] == 202
        harness.wait_for(lambda: control.api("GET", "/api/v1/jobs/" + job["id"])[2]["status"] == "cancelled",
                         timeout=60, what="the job's end")
        redis.start()  # empty: what was written before is gone
        harness.wait_for(lambda: (redis.cli("GET", "sl:job:" + job["id"]) or "").startswith("{"),
                         timeout=20, what="the final record written again")
        rec = json.loads(redis.cli("GET", "sl:job:" + job["id"]))
        assert rec["status"] == "cancelled" and rec["result"]["error"]["step"] == "cancelled"
    finally:
        control.stop()
        redis.stop()
