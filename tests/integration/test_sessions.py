"""Issue 4: the control plane's sessions API, keys and auth, and session state
reaching real relays through a real Redis. Every test runs real processes:
redis-server, sluice-control, sluice-relay, the sluice agent (--api) and a
local HTTP app."""
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import apps
import harness


@pytest.fixture
def redis(redis_server):
    """conftest's Redis, under the short name these tests use."""
    return redis_server


@pytest.fixture
def app():
    a = apps.HttpApp(tag="sessions")
    yield a
    a.stop()


@pytest.fixture
def stack(binary, tmp_path, redis):
    """Redis, a relay following it, a control plane handing that relay out."""
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis.url)
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url, relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port,
                              extra=["--audit-log", str(tmp_path / "audit.jsonl")])
    yield control, relay
    control.stop()
    relay.stop()


def api_agent(binary, tmp_path, control, port, key, extra=(), wait=True):
    return harness.Agent(binary("sluice"), tmp_path, port, None,
                         extra=["--api", control.url, "--api-key", key] + list(extra), wait=wait)


def get_public(relay, name, path="/", timeout=5):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (relay.http_port, path),
                                 headers={"Host": "%s.localhost" % name})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


# ---- keys and auth ----

def test_keys_are_created_listed_revoked_and_shown_once(stack):
    control, _ = stack
    k = control.new_key(name="ci")
    assert k["key"].startswith("sk_") and len(k["key"]) == 40 and k["scopes"] == "tunnels"
    status, _, body = control.api("GET", "/api/v1/keys")
    assert status == 200
    listed = [x for x in body["keys"] if x["id"] == k["id"]]
    assert listed and listed[0]["name"] == "ci" and listed[0]["revoked"] is False
    assert k["key"] not in json.dumps(body)  # never shown again
    assert control.api("GET", "/api/v1/tunnels", key=k["key"])[0] == 200
    status, _, body = control.api("DELETE", "/api/v1/keys/" + k["id"])
    assert status == 200 and body["revoked"] is True
    status, _, body = control.api("GET", "/api/v1/tunnels", key=k["key"])
    assert status == 401 and body["code"] == "key_revoked"
    status, _, body = control.api("DELETE", "/api/v1/keys/kzzzzzzzzzzz")
    assert status == 404


def test_keys_are_stored_hashed(stack, redis):
    control, _ = stack
    k = control.new_key()
    dump = subprocess.run(["redis-cli", "-p", str(redis.port), "--scan"], capture_output=True,
                          text=True).stdout
    values = "".join(subprocess.run(["redis-cli", "-p", str(redis.port), "hgetall", key],
                                    capture_output=True, text=True).stdout
                     for key in dump.split() if key.startswith("sl:key"))
    assert k["key"] not in dump and k["key"] not in values
    assert k["id"] in values


def test_missing_wrong_and_underscoped_keys_are_refused(stack):
    control, _ = stack
    status, hdrs, body = control.api("GET", "/api/v1/tunnels", key=None)
    assert status == 401 and body["code"] == "unauthorized" and "Bearer" in hdrs["www-authenticate"]
    assert control.api("GET", "/api/v1/tunnels", key="sk_" + "x" * 37)[0] == 401
    assert control.api("GET", "/api/v1/tunnels", key="nonsense")[0] == 401
    k = control.new_key(scopes=("tunnels",))
    status, _, body = control.api("GET", "/api/v1/keys", key=k["key"])
    assert status == 403 and body["code"] == "forbidden"
    # X-API-Key works as well as Authorization.
    assert control.api("GET", "/api/v1/tunnels", key=None,
                       headers={"X-API-Key": k["key"]})[0] == 200


def test_keys_create_command_prints_a_working_admin_key(binary, stack, redis):
    control, _ = stack
    out = subprocess.run([binary("sluice-control"), "keys", "create", "--admin", "--redis",
                          redis.url], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("sk_") and "shown once" in out.stderr
    assert control.api("GET", "/api/v1/keys", key=key)[0] == 200
    bad = subprocess.run([binary("sluice-control"), "keys", "create", "--redis",
                          "redis://127.0.0.1:1"], capture_output=True, text=True, timeout=10)
    assert bad.returncode == 1 and "cannot store the key" in bad.stderr


def test_production_needs_a_real_session_secret(binary, tmp_path, redis):
    base = [binary("sluice-control"), "--listen", "127.0.0.1:%d" % harness.free_port(),
            "--redis", redis.url]
    env = {k: v for k, v in os.environ.items() if k not in ("SESSION_SECRET_KEY",
                                                            "SLUICE_SESSION_SECRET")}
    r = subprocess.run(base, capture_output=True, text=True, timeout=10, env=env)
    assert r.returncode == 2 and "session secret is required" in r.stderr
    r = subprocess.run(base + ["--session-secret", "short"], capture_output=True, text=True,
                       timeout=10, env=env)
    assert r.returncode == 2 and "32 bytes" in r.stderr
    r = subprocess.run(base + ["--session-secret", "sluice-development-secret-not-for-production"],
                       capture_output=True, text=True, timeout=10, env=env)
    assert r.returncode == 2 and "refused outside --dev" in r.stderr
    relay = subprocess.run([binary("sluice-relay"), "--redis", redis.url], capture_output=True,
                           text=True, timeout=10, env=env)
    assert relay.returncode == 2 and "session secret" in relay.stderr


# ---- tunnel sessions API ----

BAD_BODIES = [
    (b"{not json", 400, "malformed_json"),
    (b"[1,2]", 400, "invalid_type"),
    (b'{"port": "3000"}', 400, "invalid_type"),
    (b'{"port": 3000, "colour": "red"}', 400, "unknown_field"),
    (b'{"port": 80}', 400, "out_of_range"),
    (b'{"port": 3000, "duration": 10}', 400, "out_of_range"),
    (b'{"port": 3000, "duration": 90000}', 400, "out_of_range"),
    (b'{"port": 3000, "subdomain": "../etc"}', 400, "invalid_subdomain"),
    (b'{"port": 3000, "subdomain": "a\\u0001b"}', 400, "invalid_value"),
    (b'{"port": 3000, "subdomain": "admin"}', 400, "reserved_subdomain"),
    (b'{"port": 3000, "protocol": "udp"}', 400, "invalid_value"),
    (b'{"duration": 600}', 400, "missing_field"),
    (b'{"port": 3000, "port": 3001}', 400, "malformed_json"),
    (b"x" * 20000, 413, "body_too_large"),
]


@pytest.mark.parametrize("raw,status,code", BAD_BODIES)
def test_bad_tunnel_requests_get_precise_errors(stack, raw, status, code):
    control, _ = stack
    k = control.new_key()
    got, _, body = control.api("POST", "/api/v1/tunnels", raw=raw, key=k["key"])
    assert (got, body["code"]) == (status, code), body
    assert body["error"]


def test_a_bad_body_without_a_key_is_a_401_first(stack):
    control, _ = stack
    status, _, body = control.api("POST", "/api/v1/tunnels", raw=b"{bad", key=None)
    assert status == 401


def test_session_ids_in_paths_are_checked(stack):
    control, _ = stack
    k = control.new_key()["key"]
    for bad in ("short", "x" * 33, "abc%2F..%2Fdef", "abcdefgh!"):
        status, _, body = control.api("GET", "/api/v1/tunnels/" + bad, key=k)
        assert status == 400 and body["code"] == "invalid_session_id", bad
    status, _, body = control.api("GET", "/api/v1/tunnels/abcdefgh12345678", key=k)
    assert status == 404 and body["code"] == "not_found"


def test_create_get_list_delete(stack):
    control, relay = stack
    k = control.new_key()["key"]
    status, hdrs, s = control.api("POST", "/api/v1/tunnels",
                                  {"port": 3000, "subdomain": "crud", "duration": 600}, key=k)
    assert status == 201, s
    assert s["url"] == "http://crud.localhost:%d/" % relay.http_port
    assert s["relay"] == relay.server and s["agentToken"].startswith("v1." + s["sessionId"] + ".")
    assert len(s["sessionId"]) == 16 and s["expiresAt"].endswith("Z")
    status, _, g = control.api("GET", "/api/v1/tunnels/" + s["sessionId"], key=k)
    assert status == 200 and g["status"] == "active" and g["requests"] == 0
    assert set(g) >= {"sessionId", "status", "createdAt", "expiresAt", "connections",
                      "bytesTransferred", "requests"}
    # Another key is refused the name (the same key would take it over:
    # tests/integration/test_names.py) and does not see the session.
    other = control.new_key()["key"]
    status, _, body = control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "crud"},
                                  key=other)
    assert status == 409 and body["code"] == "subdomain_taken"
    assert control.api("GET", "/api/v1/tunnels/" + s["sessionId"], key=other)[0] == 404
    status, _, lst = control.api("GET", "/api/v1/tunnels?status=active&limit=10", key=k)
    assert status == 200 and [t["sessionId"] for t in lst["tunnels"]] == [s["sessionId"]]
    assert control.api("GET", "/api/v1/tunnels?status=active", key=other)[2]["tunnels"] == []
    assert control.api("GET", "/api/v1/tunnels?limit=0", key=k)[0] == 400
    assert control.api("GET", "/api/v1/tunnels?status=weird", key=k)[0] == 400
    status, _, d = control.api("DELETE", "/api/v1/tunnels/" + s["sessionId"], key=k)
    assert status == 200 and d["status"] == "deleted"
    assert control.api("GET", "/api/v1/tunnels/" + s["sessionId"], key=k)[0] == 404
    assert control.api("DELETE", "/api/v1/tunnels/" + s["sessionId"], key=k)[0] == 404
    deleted = control.api("GET", "/api/v1/tunnels?status=deleted", key=k)[2]["tunnels"]
    assert [t["sessionId"] for t in deleted] == [s["sessionId"]]
    # The name is free again.
    assert control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "crud"},
                       key=k)[0] == 201


def test_list_pages(stack):
    control, _ = stack
    k = control.new_key()["key"]
    made = [control.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k)[2]["sessionId"]
            for _ in range(5)]
    p1 = control.api("GET", "/api/v1/tunnels?limit=2", key=k)[2]
    p2 = control.api("GET", "/api/v1/tunnels?limit=2&offset=2", key=k)[2]
    p3 = control.api("GET", "/api/v1/tunnels?limit=2&offset=4", key=k)[2]
    seen = [t["sessionId"] for p in (p1, p2, p3) for t in p["tunnels"]]
    assert sorted(seen) == sorted(made)
    assert p1["next"] == 2 and p3["next"] is None


# ---- sessions through the relay ----

def test_api_session_serves_traffic_and_counts_it(binary, tmp_path, stack, app):
    control, relay = stack
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k, extra=["--name", "served"])
    assert agent.url == "http://served.localhost:%d/" % relay.http_port
    status, body = get_public(relay, "served", "/hello")
    assert status == 200 and json.loads(body)["app"] == "sessions"
    sid = agent.ready["session"]
    # /session/<id>/ works too, and the relay's counters reach the API.
    with urllib.request.urlopen("http://127.0.0.1:%d/session/%s/x" % (relay.http_port, sid),
                                timeout=5) as r:
        assert json.loads(r.read())["path"] == "/x"

    def counted():
        g = control.api("GET", "/api/v1/tunnels/" + sid, key=k)[2]
        return g if g["requests"] >= 2 and g["bytesTransferred"] > 0 else None
    g = harness.wait_for(counted, timeout=5, what="counters reported")
    assert g["connections"] >= 2


def test_delete_cuts_live_connections_within_a_second(binary, tmp_path, stack, app):
    control, relay = stack
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k, extra=["--name", "cut"])
    sid = agent.ready["session"]
    s = socket.create_connection(("127.0.0.1", relay.http_port), timeout=5)
    s.sendall(b"GET /sse?gap=30 HTTP/1.1\r\nHost: cut.localhost\r\n\r\n")
    first = s.recv(65536)
    assert b"200" in first.split(b"\r\n")[0]
    t0 = time.monotonic()
    assert control.api("DELETE", "/api/v1/tunnels/" + sid, key=k)[0] == 200
    s.settimeout(3)
    try:
        rest = harness.read_to_close(s)
    except ConnectionResetError:
        rest = b""
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, "live connection cut after %.2f s" % elapsed
    assert b"event 1" not in rest
    ev = agent.wait_event("error")
    assert "session revoked" in ev["message"]
    agent.proc.popen.wait(5)  # a revoked session is not retried
    with pytest.raises(urllib.error.HTTPError) as e:
        get_public(relay, "cut")
    assert e.value.code == 404


# ---- a clean exit releases its session (issue 16) ----

def ids(control, key, status):
    lst = control.api("GET", "/api/v1/tunnels?status=%s" % status, key=key)[2]["tunnels"]
    return [t["sessionId"] for t in lst]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_clean_exit_ends_the_session_and_frees_its_name(binary, tmp_path, stack, app, sig):
    """Ctrl-C or SIGTERM: the agent deletes its session, so no ghost stays
    active and another key can take the name at once."""
    control, relay = stack
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k, extra=["--name", "leaving"])
    sid = agent.ready["session"]
    agent.proc.signal(sig)
    assert agent.proc.popen.wait(5) == 0
    assert "session %s released" % sid in agent.proc.log()
    assert ids(control, k, "active") == [] and ids(control, k, "deleted") == [sid]
    other = control.new_key()["key"]
    successor = api_agent(binary, tmp_path, control, app.port, other, extra=["--name", "leaving"])
    assert successor.url == "http://leaving.localhost:%d/" % relay.http_port
    assert get_public(relay, "leaving")[0] == 200


def test_keep_session_leaves_it_active_and_the_name_held(binary, tmp_path, stack, app):
    control, _ = stack
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k,
                      extra=["--name", "staying", "--keep-session"])
    sid = agent.ready["session"]
    agent.proc.signal(signal.SIGTERM)
    assert agent.proc.popen.wait(5) == 0
    assert "session %s kept (--keep-session)" % sid in agent.proc.log()
    assert ids(control, k, "active") == [sid]
    status, _, body = control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "staying"},
                                  key=control.new_key()["key"])
    assert status == 409 and body["code"] == "subdomain_taken"


def agent_outliving_its_api(binary, tmp_path, control, app, name):
    """An agent with a session, its control plane stopped: (agent, sid)."""
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k, extra=["--name", name])
    sid = agent.ready["session"]
    control.stop()
    return agent, sid


def test_exit_with_the_api_down_is_prompt_and_says_why(binary, tmp_path, stack, app):
    agent, sid = agent_outliving_its_api(binary, tmp_path, stack[0], app, "orphan")
    t0 = time.monotonic()
    agent.proc.signal(signal.SIGTERM)
    assert agent.proc.popen.wait(5) == 0
    assert time.monotonic() - t0 < 4.0  # the release budget (2 s), not the 10 s request timeout
    assert "session %s not released: cannot reach the API" % sid in agent.proc.log()


def test_exit_with_a_silent_api_waits_two_seconds_at_most(binary, tmp_path, stack, app):
    """An API that takes the connection and never answers holds the exit
    for the release's 2 s budget, not for the agent's 10 s request timeout."""
    control = stack[0]
    agent, sid = agent_outliving_its_api(binary, tmp_path, control, app, "stalled")
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    silent.bind(("127.0.0.1", control.port))
    silent.listen(8)
    try:
        t0 = time.monotonic()
        agent.proc.signal(signal.SIGTERM)
        assert agent.proc.popen.wait(5) == 0
        assert 1.5 < time.monotonic() - t0 < 4.0  # the 2 s budget spent, not 10 s
        assert "session %s not released: no answer from the API" % sid in agent.proc.log()
    finally:
        silent.close()


def test_expired_session_answers_410_and_its_tunnel_closes(binary, tmp_path, redis, app):
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis.url)
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url, relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port,
                              extra=["--duration-min", "2"])
    try:
        k = control.new_key()["key"]
        agent = api_agent(binary, tmp_path, control, app.port, k,
                          extra=["--name", "brief", "--duration", "2"])
        assert get_public(relay, "brief")[0] == 200
        sid = agent.ready["session"]
        harness.wait_for(lambda: control.api("GET", "/api/v1/tunnels/" + sid, key=k)[0] == 410,
                         timeout=5, what="410 after expiry")
        body = control.api("GET", "/api/v1/tunnels/" + sid, key=k)[2]
        assert body["code"] == "session_expired"
        ev = agent.wait_event("error", timeout=3)
        assert "expired" in ev["message"]
        listed = control.api("GET", "/api/v1/tunnels?status=expired", key=k)[2]["tunnels"]
        assert [t["sessionId"] for t in listed] == [sid]
    finally:
        control.stop()
        relay.stop()


# ---- sessions without an agent: offline, not unknown (issue 16) ----

def public_at(relay, path, host=None, accept="*/*"):
    """A public request: (status, headers, body), errors included."""
    h = {"Accept": accept}
    if host:
        h["Host"] = host
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (relay.http_port, path), headers=h)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def assert_offline(relay, path, host, name):
    status, headers, body = public_at(relay, path, host)
    assert status == 502 and headers.get("Retry-After") == "5", (path, host, status, body)
    assert ("tunnel %s is offline: its agent is not connected" % name).encode() in body, body


def test_session_whose_agent_never_came_is_offline(stack):
    """A relay following Redis without a cluster: a session created
    through the API, no agent yet, answers the offline 502 by its name and
    by its /session/<id>/ path (it used to be 404, as for nobody); deleted,
    it is nobody's again."""
    control, relay = stack
    k = control.new_key()["key"]
    s = control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "lonely"}, key=k)[2]
    sid = s["sessionId"]
    harness.wait_metrics(relay, lambda m: m.get("sluice_state_sessions", 0) >= 1,
                         "session followed")
    assert_offline(relay, "/", "lonely.localhost", "lonely")
    assert_offline(relay, "/", "LONELY.localhost:%d" % relay.http_port, "lonely")
    assert_offline(relay, "/session/%s/x" % sid, None, "lonely")
    status, headers, body = public_at(relay, "/", "lonely.localhost", accept="text/html")
    assert status == 502 and headers["Content-Type"].startswith("text/html") and b"<html" in body
    assert public_at(relay, "/", "nobody.localhost")[0] == 404
    assert public_at(relay, "/session/zzzzzzzz/x")[0] == 404
    assert control.api("DELETE", "/api/v1/tunnels/" + sid, key=k)[0] == 200
    harness.wait_for(lambda: public_at(relay, "/", "lonely.localhost")[0] == 404, timeout=5,
                     what="deleted session unknown")
    assert public_at(relay, "/session/%s/x" % sid)[0] == 404


def test_session_released_after_its_grace_period_is_offline(binary, tmp_path, redis, app):
    """An API session whose agent left: in the grace period its tunnel is
    offline; once the relay released it the session is still active in the
    table, so still offline, not 404."""
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis.url,
                                  extra=["--grace-ms", "300"])
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url, relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port)
    try:
        k = control.new_key()["key"]
        a = api_agent(binary, tmp_path, control, app.port, k, extra=["--name", "brief"])
        sid = a.ready["session"]
        assert get_public(relay, "brief")[0] == 200
        a.proc.kill()
        harness.wait_for(lambda: "tunnel brief: released after the grace period"
                         in relay.proc.log(), timeout=5, what="tunnel released")
        assert_offline(relay, "/", "brief.localhost", "brief")
        assert_offline(relay, "/session/%s/" % sid, None, "brief")
        m = harness.wait_metrics(relay, lambda m: m.get("sluice_offline_requests_total") == 2,
                                 "offline answers counted")
        assert m["sluice_relay_errors_total{status=\"502\"}"] >= 2
    finally:
        control.stop()
        relay.stop()


def test_forged_and_foreign_tokens_are_refused(binary, tmp_path, stack, app):
    control, relay = stack
    k = control.new_key()["key"]
    s = control.api("POST", "/api/v1/tunnels", {"port": app.port}, key=k)[2]
    tok = s["agentToken"]
    forged = tok[:-1] + ("0" if tok[-1] != "0" else "1")
    a = harness.Agent(binary("sluice"), tmp_path, app.port, relay.server,
                      extra=["--token", forged], wait=False)
    ev = a.wait_event("error")
    assert "token refused" in ev["message"]
    # A token for a session that does not exist (signed with another secret).
    b = harness.Agent(binary("sluice"), tmp_path, app.port, relay.server,
                      extra=["--token", "v1.abcdefgh12345678.1.99999999999." + "0" * 64],
                      wait=False)
    assert "token refused" in b.wait_event("error")["message"]
    # The real token works, as long as the session lives.
    c = harness.Agent(binary("sluice"), tmp_path, app.port, relay.server, extra=["--token", tok])
    assert c.ready["session"] == s["sessionId"]


def test_relay_started_late_converges_from_the_snapshot(binary, tmp_path, redis, app):
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url)
    try:
        k = control.new_key()["key"]
        made = [control.api("POST", "/api/v1/tunnels", {"port": app.port, "subdomain": "late%d" % i},
                            key=k)[2] for i in range(3)]
        control.api("DELETE", "/api/v1/tunnels/" + made[2]["sessionId"], key=k)
        relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis.url)
        m = harness.wait_metrics(relay, lambda m: m.get("sluice_state_sessions") == 3,
                                 "snapshot loaded")
        assert m["sluice_state_events_total{event=\"snapshot\"}"] >= 1
        a = harness.Agent(binary("sluice"), tmp_path, app.port, relay.server,
                          extra=["--token", made[0]["agentToken"]])
        assert a.ready["name"] == "late0"
        assert get_public(relay, "late0")[0] == 200
        gone = harness.Agent(binary("sluice"), tmp_path, app.port, relay.server,
                             extra=["--token", made[2]["agentToken"]], wait=False)
        assert "session deleted" in gone.wait_event("error")["message"]
        relay.stop()
    finally:
        control.stop()


def test_relay_restarted_keeps_serving_and_follows_changes(binary, tmp_path, stack, app):
    control, relay = stack
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k, extra=["--name", "phoenix"])
    relay.stop()
    relay.start()  # same ports: the agent reconnects and resumes
    agent.wait_event("reconnected", timeout=15)
    assert get_public(relay, "phoenix")[0] == 200
    sid = agent.ready["session"]
    errors = len([e for e in agent.events() if e["event"] == "error"])
    assert control.api("DELETE", "/api/v1/tunnels/" + sid, key=k)[0] == 200
    assert "session revoked" in agent.wait_event("error", after=errors)["message"]


def test_control_plane_restart_keeps_sessions(binary, tmp_path, stack):
    control, _ = stack
    k = control.new_key()["key"]
    s = control.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k)[2]
    control.stop()
    control.start()
    status, _, g = control.api("GET", "/api/v1/tunnels/" + s["sessionId"], key=k)
    assert status == 200 and g["status"] == "active"


def test_redis_killed_gives_503_and_everything_recovers(binary, tmp_path, app):
    redis = harness.Redis(tmp_path, persistent=True)
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis.url)
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url, relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port)
    try:
        k = control.new_key()["key"]
        agent = api_agent(binary, tmp_path, control, app.port, k, extra=["--name", "steady"])
        redis.proc.kill()
        status, _, body = control.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k)
        assert status == 503 and body["code"] == "redis_unavailable"
        assert control.api("GET", "/health", key=None)[0] == 503
        # The relay keeps serving the tunnels it knows.
        assert get_public(relay, "steady")[0] == 200
        harness.wait_metrics(relay, lambda m: m.get("sluice_state_up") == 0, "relay sees it")
        redis.start()
        harness.wait_for(lambda: control.api("POST", "/api/v1/tunnels", {"port": 3000},
                                             key=k)[0] == 201, timeout=6, what="API recovery")
        harness.wait_metrics(relay, lambda m: m.get("sluice_state_up") == 1, "relay follows")
        assert get_public(relay, "steady")[0] == 200
        sid = agent.ready["session"]
        assert control.api("DELETE", "/api/v1/tunnels/" + sid, key=k)[0] == 200
        assert "session revoked" in agent.wait_event("error")["message"]
        assert relay.proc.alive() and control.proc.alive()
    finally:
        control.stop()
        relay.stop()
        redis.stop()


def test_sessions_lost_from_redis_close_their_tunnels(binary, tmp_path, stack, redis, app):
    """A Redis restarted empty (no persistence) has no sessions: relays follow it."""
    control, relay = stack
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k, extra=["--name", "amnesia"])
    redis.proc.kill()
    redis.start()
    assert "session revoked" in agent.wait_event("error", timeout=10)["message"]


# ---- operations ----

def test_health_checks_and_metrics(stack):
    control, relay = stack
    h = harness.wait_for(lambda: control.api("GET", "/health", key=None)[2]
                         if control.api("GET", "/health", key=None)[0] == 200 else None,
                         timeout=5, what="healthy")
    assert h["checks"]["redis"]["ok"] and h["checks"]["relays"]["live"] >= 1
    assert h["checks"]["capacity"]["ok"]
    with urllib.request.urlopen(control.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "sluice_control_requests_total" in text and "sluice_control_redis_up 1" in text


def test_health_fails_without_relays_or_capacity(binary, tmp_path, redis):
    c = harness.Control(binary("sluice-control"), tmp_path, redis.url,
                        extra=["--min-relays", "1", "--max-sessions", "2"])
    try:
        status, _, h = c.api("GET", "/health", key=None)
        assert status == 503 and h["checks"]["relays"]["ok"] is False
        k = c.new_key()["key"]
        assert c.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k)[0] == 201
        assert c.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k)[0] == 201
        status, _, body = c.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k)
        assert status == 503 and body["code"] == "capacity"
        assert c.api("GET", "/health", key=None)[2]["checks"]["capacity"]["ok"] is False
    finally:
        c.stop()


def test_security_headers_and_cors(binary, tmp_path, redis):
    c = harness.Control(binary("sluice-control"), tmp_path, redis.url,
                        extra=["--cors-origins", "https://ok.example, https://two.example"])
    try:
        _, h, _ = c.api("GET", "/api/v1/nope", key=None, headers={"Origin": "https://ok.example"})
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer" and "default-src 'none'" in h["content-security-policy"]
        assert h["access-control-allow-origin"] == "https://ok.example"
        _, h, _ = c.api("GET", "/health", key=None, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in h
        status, h, _ = c.api("OPTIONS", "/api/v1/tunnels", key=None,
                             headers={"Origin": "https://two.example"})
        assert status == 204 and "POST" in h["access-control-allow-methods"]
        assert h["access-control-allow-origin"] == "https://two.example"
    finally:
        c.stop()


def test_audit_log_records_security_events(stack, tmp_path):
    control, _ = stack
    k = control.new_key()
    control.api("GET", "/api/v1/tunnels", key="sk_" + "y" * 37, headers={"User-Agent": "probe/1"})
    s = control.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k["key"])[2]
    control.api("DELETE", "/api/v1/tunnels/" + s["sessionId"], key=k["key"])
    control.api("DELETE", "/api/v1/keys/" + k["id"])
    lines = [json.loads(l) for l in open(tmp_path / "audit.jsonl")]
    events = [l["event"] for l in lines]
    for e in ("key_created", "auth_failure", "session_created", "session_deleted", "key_revoked"):
        assert e in events, events
    fail = [l for l in lines if l["event"] == "auth_failure"][0]
    assert fail["ip"] == "127.0.0.1" and fail["userAgent"] == "probe/1" and fail["time"]
    created = [l for l in lines if l["event"] == "session_created"][0]
    assert created["actor"] == k["id"]
    assert k["key"] not in open(tmp_path / "audit.jsonl").read()


def test_sigterm_drains_and_exits_zero(stack):
    control, _ = stack
    control.proc.signal(signal.SIGTERM)
    assert control.proc.popen.wait(10) == 0


# ---- protected URLs ----

def basic(user, pw):
    import base64
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


def test_basic_auth_protects_the_public_url(binary, tmp_path, stack, app, redis):
    control, relay = stack
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k,
                      extra=["--name", "locked", "--basic-auth", "alice:s3cret pass"])
    url = "http://127.0.0.1:%d/" % relay.http_port

    def get(auth=None):
        h = {"Host": "locked.localhost"}
        if auth:
            h["Authorization"] = auth
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=h), timeout=5) as r:
                return r.status, r.headers
        except urllib.error.HTTPError as e:
            return e.code, e.headers
    status, h = get()
    assert status == 401 and h["WWW-Authenticate"].startswith("Basic")
    assert get(basic("alice", "wrong"))[0] == 401
    assert get(basic("bob", "s3cret pass"))[0] == 401
    assert get("Bearer s3cret pass")[0] == 401
    assert get("Basic !!!notbase64")[0] == 401
    assert get(basic("alice", "s3cret pass"))[0] == 200
    # The password is nowhere in Redis, only its keyed hash.
    dump = subprocess.run(["redis-cli", "-p", str(redis.port), "--scan"], capture_output=True,
                          text=True).stdout.split()
    for key in dump:
        if key.startswith("sl:sess:"):
            raw = subprocess.run(["redis-cli", "-p", str(redis.port), "get", key],
                                 capture_output=True).stdout
            assert b"s3cret" not in raw
    m = harness.metrics(relay)
    assert m['sluice_relay_errors_total{status="401"}'] >= 5
    assert agent.proc.alive()


def test_bearer_token_protects_the_public_url(binary, tmp_path, stack, app):
    control, relay = stack
    k = control.new_key()["key"]
    api_agent(binary, tmp_path, control, app.port, k,
              extra=["--name", "bearer", "--bearer-token", "tok-123"])
    url = "http://127.0.0.1:%d/" % relay.http_port
    req = urllib.request.Request(url, headers={"Host": "bearer.localhost"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 401 and e.value.headers["WWW-Authenticate"].startswith("Bearer")
    req = urllib.request.Request(url, headers={"Host": "bearer.localhost",
                                               "Authorization": "Bearer tok-123"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


# ---- address lists and share links ----

def public(relay, name, path="/", headers=None):
    """(status, headers, body) of GET path on tunnel name, redirects not followed."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", relay.http_port, timeout=5)
    h = {"Host": "%s.localhost" % name}
    h.update(headers or {})
    c.request("GET", path, headers=h)
    r = c.getresponse()
    out = (r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read())
    c.close()
    return out


def test_ip_allow_and_deny_lists(binary, tmp_path, stack, app):
    control, relay = stack
    k = control.new_key()["key"]

    def session(name, body):
        body = dict(body, port=app.port, subdomain=name)
        status, _, s = control.api("POST", "/api/v1/tunnels", body, key=k)
        assert status == 201, s
        harness.Agent(binary("sluice"), tmp_path, app.port, relay.server,
                      extra=["--token", s["agentToken"]])
        return s
    session("elsewhere", {"allowIps": ["10.0.0.0/8", "2001:db8::/32"]})
    session("home", {"allowIps": ["127.0.0.0/8"]})
    s = session("banned", {"denyIps": ["127.0.0.1"]})
    status, _, body = public(relay, "elsewhere")
    assert status == 403 and b"address" in body
    assert public(relay, "home")[0] == 200
    assert public(relay, "banned")[0] == 403
    g = control.api("GET", "/api/v1/tunnels/" + s["sessionId"], key=k)[2]
    assert g["access"] == {"auth": "none", "allowIps": [], "denyIps": ["127.0.0.1"]}
    for bad in (["10.0.0.0/33"], ["999.1.1.1"], "10.0.0.1", [1], ["::1/129"]):
        status, _, body = control.api("POST", "/api/v1/tunnels", {"port": 3000, "allowIps": bad},
                                      key=k)
        assert status == 400, (bad, body)


def test_ip_deny_list_closes_tcp_clients(binary, tmp_path, stack):
    control, relay = stack
    echo = apps.TcpEcho()
    try:
        k = control.new_key()["key"]
        s = control.api("POST", "/api/v1/tunnels", {"port": echo.port, "protocol": "tcp",
                                                    "denyIps": ["127.0.0.0/8"]}, key=k)[2]
        a = harness.Agent(binary("sluice"), tmp_path, echo.port, relay.server, proto="tcp",
                          extra=["--token", s["agentToken"]])
        port = int(a.url.rsplit(":", 1)[1])
        c = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert harness.read_to_close(c) == b""  # no "hello from tcp": refused
    finally:
        echo.stop()


def test_share_links_open_a_protected_url_until_revoked(binary, tmp_path, stack, app):
    control, relay = stack
    k = control.new_key()["key"]
    agent = api_agent(binary, tmp_path, control, app.port, k,
                      extra=["--name", "shared", "--basic-auth", "owner:pw"])
    sid = agent.ready["session"]
    assert public(relay, "shared")[0] == 401
    status, _, sh = control.api("POST", "/api/v1/tunnels/%s/shares" % sid, {"ttl": 600}, key=k)
    assert status == 201, sh
    assert sh["url"].startswith("http://shared.localhost:%d/?sluice_share=s1." % relay.http_port)
    path = "/docs?a=1&sluice_share=" + sh["token"] + "&b=2"
    status, h, _ = public(relay, "shared", path)
    assert status == 302 and h["location"] == "/docs?a=1&b=2"
    assert h["set-cookie"].startswith("sluice_share=" + sh["token"] + ";")
    cookie = {"Cookie": "theme=dark; sluice_share=" + sh["token"]}
    status, _, body = public(relay, "shared", "/docs?a=1&b=2", cookie)
    assert status == 200 and json.loads(body)["path"] == "/docs?a=1&b=2"
    # A forged or foreign token does nothing.
    bad = sh["token"][:-1] + ("0" if sh["token"][-1] != "0" else "1")
    assert public(relay, "shared", "/", {"Cookie": "sluice_share=" + bad})[0] == 401
    assert public(relay, "shared", "/?sluice_share=" + bad)[0] == 401
    listed = control.api("GET", "/api/v1/tunnels/%s/shares" % sid, key=k)[2]["shares"]
    assert [x["shareId"] for x in listed] == [sh["shareId"]] and not listed[0]["revoked"]
    status, _, body = control.api("DELETE", "/api/v1/tunnels/%s/shares/%s" % (sid, sh["shareId"]),
                                  key=k)
    assert status == 200 and body["revoked"] is True
    harness.wait_for(lambda: public(relay, "shared", "/", cookie)[0] == 401, timeout=2,
                     what="revoked share refused")
    assert control.api("GET", "/api/v1/tunnels/%s/shares" % sid, key=k)[2]["shares"][0]["revoked"]
    # The owner's own credentials still work, and the session is untouched.
    assert public(relay, "shared", "/", {"Authorization": basic("owner", "pw")})[0] == 200
    assert control.api("DELETE", "/api/v1/tunnels/%s/shares/zzzzzzzzzzzz" % sid, key=k)[0] == 404
    assert control.api("POST", "/api/v1/tunnels/%s/shares" % sid, {"ttl": 5}, key=k)[0] == 400
    assert control.api("POST", "/api/v1/tunnels/%s/shares" % sid, {"x": 1}, key=k)[0] == 400
    other = control.new_key()["key"]
    assert control.api("POST", "/api/v1/tunnels/%s/shares" % sid, {}, key=other)[0] == 404
    assert control.api("GET", "/api/v1/tunnels/%s/nope" % sid, key=k)[0] == 404


def test_concurrent_changes_never_bring_a_deleted_session_back(stack, redis):
    """Share revocations racing a delete: each change is written only if the
    record is still the one it read, so the delete is never undone."""
    import concurrent.futures
    control, _ = stack
    k = control.new_key()["key"]
    for round_ in range(3):
        s = control.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k)[2]
        sid = s["sessionId"]
        shares = [control.api("POST", "/api/v1/tunnels/%s/shares" % sid, {}, key=k)[2]["shareId"]
                  for _ in range(8)]

        def revoke(share):
            return control.api("DELETE", "/api/v1/tunnels/%s/shares/%s" % (sid, share), key=k)[0]
        with concurrent.futures.ThreadPoolExecutor(9) as ex:
            futures = [ex.submit(revoke, sh) for sh in shares]
            deleted = ex.submit(control.api, "DELETE", "/api/v1/tunnels/" + sid, None, k)
            codes = [f.result() for f in futures]
        assert deleted.result()[0] in (200, 409), deleted.result()
        if deleted.result()[0] == 409:  # it lost a race to a revocation: retry, as told
            assert control.api("DELETE", "/api/v1/tunnels/" + sid, key=k)[0] == 200
        assert set(codes) <= {200, 404, 409}, codes
        assert control.api("GET", "/api/v1/tunnels/" + sid, key=k)[0] == 404
        listed = control.api("GET", "/api/v1/tunnels?status=deleted&limit=100", key=k)[2]
        assert sid in [t["sessionId"] for t in listed["tunnels"]]
