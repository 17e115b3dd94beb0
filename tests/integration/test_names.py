"""Issue 16: a name belongs to the key (or static token) that holds it, not to
one agent process. A restarted agent gets its URL back at once (after
Ctrl-C or kill -9), a live old agent is told it was replaced and stops,
another key is refused; reserved names. Real processes throughout: Redis,
sluice-control, sluice-relay, agents and a local HTTP app."""
import json
import signal
import time
import urllib.error
import urllib.request

import pytest

import apps
import harness

# The bound: a restarted agent's URL serves again within 2 s.
RESTART_S = 2.0


@pytest.fixture
def app():
    a = apps.HttpApp(tag="names")
    yield a
    a.stop()


@pytest.fixture
def stack(binary, tmp_path, redis_server):
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis_server.url)
    control = harness.Control(binary("sluice-control"), tmp_path, redis_server.url,
                              relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port)
    yield control, relay
    control.stop()
    relay.stop()


def api_agent(binary, tmp_path, control, port, key, name, extra=(), wait=True):
    return harness.Agent(binary("sluice"), tmp_path, port, None,
                         extra=["--api", control.url, "--api-key", key, "--name", name]
                         + list(extra), wait=wait)


def get(relay, name, timeout=2):
    req = urllib.request.Request("http://127.0.0.1:%d/" % relay.http_port,
                                 headers={"Host": "%s.localhost" % name})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def serves(relay, name, tag="names"):
    status, body = get(relay, name)
    return status == 200 and json.loads(body).get("app") == tag


def wait_serving(relay, name, since, tag="names"):
    """Polls until the name serves the app; returns the seconds since `since`."""
    harness.wait_for(lambda: serves(relay, name, tag), timeout=RESTART_S + 3,
                     what="%s serving" % name)
    return time.monotonic() - since


def active_names(control, key):
    status, _, body = control.api("GET", "/api/v1/tunnels", key=key)
    assert status == 200
    return [(t["sessionId"], t["name"]) for t in body["tunnels"] if t["status"] == "active"]


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_restarted_api_agent_gets_its_url_back(binary, tmp_path, stack, app, how):
    control, relay = stack
    key = control.new_key()["key"]
    a = api_agent(binary, tmp_path, control, app.port, key, "mine")
    url = a.url
    assert serves(relay, "mine")
    if how == "sigint":
        a.proc.signal(signal.SIGINT)
        a.proc.popen.wait(5)
    else:
        a.proc.kill()
    t0 = time.monotonic()
    b = api_agent(binary, tmp_path, control, app.port, key, "mine")
    assert b.url == url
    took = wait_serving(relay, "mine", t0)
    assert took <= RESTART_S, "served again after %.2f s" % took
    # One session holds the name: the old one is gone from the active list.
    assert [n for _, n in active_names(control, key)] == ["mine"]
    assert active_names(control, key)[0][0] == b.ready["session"]


def test_live_old_agent_is_replaced_and_stops_with_the_reason(binary, tmp_path, stack, app):
    control, relay = stack
    key = control.new_key()["key"]
    a = api_agent(binary, tmp_path, control, app.port, key, "twice")
    old_sid = a.ready["session"]
    b = api_agent(binary, tmp_path, control, app.port, key, "twice")
    harness.wait_for(lambda: not a.proc.alive(), timeout=5, what="old agent exits")
    assert a.proc.popen.returncode != 0
    log = a.proc.log()
    assert "replaced" in log, log
    # It stopped for good: no reconnect attempt after the refusal.
    assert "reconnect" not in log.split("replaced", 1)[1]
    assert b.proc.alive() and serves(relay, "twice")
    status, _, body = control.api("GET", "/api/v1/tunnels/" + old_sid, key=key)
    assert status == 404 or body["status"] == "deleted"
    assert harness.metrics(relay).get("sluice_sessions_replaced_total", 0) >= 1
    # The new one stays: a second later it still serves and is still bound.
    time.sleep(1)
    assert b.proc.alive() and serves(relay, "twice")


def test_another_key_is_refused_a_held_name(binary, tmp_path, stack, app):
    control, relay = stack
    k1, k2 = control.new_key()["key"], control.new_key()["key"]
    a = api_agent(binary, tmp_path, control, app.port, k1, "owned")
    status, _, body = control.api("POST", "/api/v1/tunnels",
                                  {"port": app.port, "subdomain": "owned"}, key=k2)
    assert status == 409 and body["code"] == "subdomain_taken"
    assert a.proc.alive() and serves(relay, "owned")


def test_takeover_over_the_api_answers_the_replaced_session(stack):
    control, relay = stack
    key = control.new_key()["key"]
    s1 = control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "api1"}, key=key)
    assert s1[0] == 201
    s2 = control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "api1"}, key=key)
    assert s2[0] == 201 and s2[2]["replacedSession"] == s1[2]["sessionId"]
    assert s2[2]["url"] == s1[2]["url"]
    status, _, old = control.api("GET", "/api/v1/tunnels/" + s1[2]["sessionId"], key=key)
    assert status == 404 or old["status"] == "deleted"


def test_old_token_is_refused_as_replaced(binary, tmp_path, stack, app):
    control, relay = stack
    key = control.new_key()["key"]
    s1 = control.api("POST", "/api/v1/tunnels", {"port": app.port, "subdomain": "tok"}, key=key)
    s2 = control.api("POST", "/api/v1/tunnels", {"port": app.port, "subdomain": "tok"}, key=key)
    assert s1[0] == 201 and s2[0] == 201
    a = harness.Agent(binary("sluice"), tmp_path, app.port, relay.server,
                      extra=["--token", s1[2]["agentToken"]], wait=False)
    ev = a.wait_event("error")
    assert "replaced" in ev["message"]
    harness.wait_for(lambda: not a.proc.alive(), timeout=5, what="agent exits")
    assert a.proc.popen.returncode != 0


# ---- static tokens (--server/--token) ----

@pytest.fixture
def token_relay(binary, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("alice\nbob\n")
    r = harness.Relay(binary("sluice-relay"), tmp_path, extra=["--tokens", str(tokens)])
    yield r
    r.stop()


def token_agent(binary, tmp_path, relay, port, token, name, wait=True):
    return harness.Agent(binary("sluice"), tmp_path, port, relay.server,
                         extra=["--token", token, "--name", name], wait=wait)


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_restarted_token_agent_gets_its_url_back(binary, tmp_path, token_relay, app, how):
    a = token_agent(binary, tmp_path, token_relay, app.port, "alice", "tok")
    url = a.url
    if how == "sigint":
        a.proc.signal(signal.SIGINT)
        a.proc.popen.wait(5)
    else:
        a.proc.kill()
    t0 = time.monotonic()
    b = token_agent(binary, tmp_path, token_relay, app.port, "alice", "tok")
    assert b.url == url
    took = wait_serving(token_relay, "tok", t0)
    assert took <= RESTART_S, "served again after %.2f s" % took


def test_live_token_agent_is_replaced_and_another_token_refused(binary, tmp_path, token_relay,
                                                                 app):
    a = token_agent(binary, tmp_path, token_relay, app.port, "alice", "held")
    b = token_agent(binary, tmp_path, token_relay, app.port, "alice", "held")
    harness.wait_for(lambda: not a.proc.alive(), timeout=5, what="old agent exits")
    assert a.proc.popen.returncode != 0 and "replaced" in a.proc.log()
    time.sleep(1)  # no fight: the new one is still bound a second later
    assert b.proc.alive() and serves(token_relay, "held")
    assert len([e for e in b.events() if e["event"] == "ready"]) == 1
    c = token_agent(binary, tmp_path, token_relay, app.port, "bob", "held", wait=False)
    assert "name already in use" in c.wait_event("error")["message"]


# ---- reserved names ----

def test_reserved_names_are_their_keys_alone(binary, tmp_path, stack, app):
    control, relay = stack
    k1, k2 = control.new_key(), control.new_key()
    st, _, body = control.api("POST", "/api/v1/names", {"name": "demo"}, key=k1["key"])
    assert st == 201 and body["name"] == "demo" and body["keyId"] == k1["id"]
    assert control.api("POST", "/api/v1/names", {"name": "demo"}, key=k1["key"])[0] == 200
    # Refused to another key, for a session or a reservation, while nobody uses it.
    st, _, body = control.api("POST", "/api/v1/tunnels", {"port": app.port, "subdomain": "demo"},
                              key=k2["key"])
    assert st == 409 and body["code"] == "subdomain_reserved"
    st, _, body = control.api("POST", "/api/v1/names", {"name": "demo"}, key=k2["key"])
    assert st == 409 and body["code"] == "name_reserved"
    a = api_agent(binary, tmp_path, control, app.port, k2["key"], "demo", wait=False)
    harness.wait_for(lambda: not a.proc.alive(), timeout=10, what="refused agent exits")
    assert "reserved" in a.proc.log()
    # Its own key serves it.
    b = api_agent(binary, tmp_path, control, app.port, k1["key"], "demo")
    assert serves(relay, "demo")
    # Seen by its key and the admin only.
    assert [n["name"] for n in control.api("GET", "/api/v1/names", key=k1["key"])[2]["names"]] \
        == ["demo"]
    assert control.api("GET", "/api/v1/names", key=k2["key"])[2]["names"] == []
    assert control.api("GET", "/api/v1/names/demo", key=k2["key"])[0] == 404
    st, _, one = control.api("GET", "/api/v1/names/demo", key=k1["key"])
    assert st == 200 and one["keyId"] == k1["id"]
    assert "demo" in [n["name"] for n in control.api("GET", "/api/v1/names")[2]["names"]]
    # Released by its key only; then another key may have it once free.
    assert control.api("DELETE", "/api/v1/names/demo", key=k2["key"])[0] == 404
    assert control.api("DELETE", "/api/v1/names/demo", key=k1["key"])[0] == 200
    assert control.api("GET", "/api/v1/names", key=k1["key"])[2]["names"] == []
    b.proc.signal(signal.SIGKILL)
    b.proc.popen.wait(5)
    # Still held by k1's session (the agent died, the session lives): 409.
    st, _, body = control.api("POST", "/api/v1/tunnels", {"port": app.port, "subdomain": "demo"},
                              key=k2["key"])
    assert st == 409 and body["code"] == "subdomain_taken"


def test_reservations_are_checked_and_limited(binary, tmp_path, redis_server):
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis_server.url)
    control = harness.Control(binary("sluice-control"), tmp_path, redis_server.url,
                              relay=relay.server, extra=["--max-reserved-names", "2"])
    try:
        k1, k2 = control.new_key(), control.new_key()
        for n in ("one", "two"):
            assert control.api("POST", "/api/v1/names", {"name": n}, key=k1["key"])[0] == 201
        st, _, body = control.api("POST", "/api/v1/names", {"name": "three"}, key=k1["key"])
        assert st == 403 and body["code"] == "reservation_limit"
        for bad in ({"name": "Not_A_Label"}, {"name": ""}, {}, {"name": "x" * 64},
                    {"name": "ok", "keyId": "nope"}):
            st, _, body = control.api("POST", "/api/v1/names", bad, key=k1["key"])
            assert st == 400, (bad, body)
        st, _, body = control.api("POST", "/api/v1/names", raw=b"{not json", key=k1["key"])
        assert st == 400
        # Only an admin reserves for another key.
        st, _, body = control.api("POST", "/api/v1/names", {"name": "forb", "keyId": k2["id"]},
                                  key=k1["key"])
        assert st == 403
        st, _, body = control.api("POST", "/api/v1/names", {"name": "gift", "keyId": k2["id"]})
        assert st == 201 and body["keyId"] == k2["id"]
        assert [n["name"] for n in control.api("GET", "/api/v1/names", key=k2["key"])[2]["names"]] \
            == ["gift"]
        # A name another key's live session holds cannot be reserved.
        st, _, s = control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "busy"},
                               key=k2["key"])
        assert st == 201
        st, _, body = control.api("POST", "/api/v1/names", {"name": "busy"}, key=k1["key"])
        assert st == 409 and body["code"] == "subdomain_taken"
        # The admin releases anyone's; the name is then free for others.
        assert control.api("DELETE", "/api/v1/names/gift")[0] == 200
        st, _, _ = control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "gift"},
                               key=k1["key"])
        assert st == 201
        assert control.api("DELETE", "/api/v1/names/Bad_Name")[0] == 400
        assert control.api("PUT", "/api/v1/names/one", {}, key=k1["key"])[0] == 405
    finally:
        control.stop()
        relay.stop()


def test_takeover_reaches_every_relay_within_a_second(binary, tmp_path, redis_server, app):
    """The old agent on one relay, the new one on another (both following the
    same Redis): the old relay tells its agent within a second of the new
    session's creation."""
    ra = harness.session_relay(binary("sluice-relay"), tmp_path, redis_server.url)
    rb = harness.session_relay(binary("sluice-relay"), tmp_path, redis_server.url)
    control = harness.Control(binary("sluice-control"), tmp_path, redis_server.url,
                              relay=ra.server)
    try:
        key = control.new_key()["key"]
        a = api_agent(binary, tmp_path, control, app.port, key, "far")
        assert serves(ra, "far")
        b = harness.Agent(binary("sluice"), tmp_path, app.port, rb.server,
                          extra=["--api", control.url, "--api-key", key, "--name", "far"],
                          wait=False)
        # From the new session's creation (the agent logs it) to the old
        # agent's exit: the old relay hears of it through Redis's stream.
        harness.wait_for(lambda: "created by the control plane" in b.proc.log(), timeout=5,
                         what="new session created")
        t0 = time.monotonic()
        harness.wait_for(lambda: not a.proc.alive(), timeout=5, what="old agent exits")
        took = time.monotonic() - t0
        b.wait_event("ready")
        assert "replaced" in a.proc.log()
        assert took <= 1.0, "the old agent heard after %.2f s" % took
        assert serves(rb, "far")
    finally:
        control.stop()
        ra.stop()
        rb.stop()
