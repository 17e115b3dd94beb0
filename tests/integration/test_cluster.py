"""Issue 5, scaling out: three relays on one Redis. Any relay serves any tunnel
(a request reaching a relay that does not hold the agent goes to the one that
does over an authenticated link); the owner is claimed with an epoch-fenced
compare-and-set; killing the agent's relay moves the tunnel to another within
5 s with the same name; draining a relay moves its agents without losing a
request. Real processes throughout: redis-server, sluice-control, three
sluice-relay, the sluice agent and a local HTTP app."""
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import threading
import time

import msgpack
import pytest

import apps
import harness


@pytest.fixture
def app():
    a = apps.HttpApp(tag="cluster")
    yield a
    a.stop()


def cluster_relay(binary, tmp_path, redis_url, extra=()):
    link = harness.free_port()
    r = harness.session_relay(binary("sluice-relay"), tmp_path, redis_url,
                              extra=["--link", "127.0.0.1:%d" % link] + list(extra))
    r.link_port = link
    return r


def relay_id(relay):
    return relay.extra[relay.extra.index("--relay-id") + 1]


@pytest.fixture
def cluster(binary, tmp_path, redis_server):
    relays = [cluster_relay(binary, tmp_path, redis_server.url) for _ in range(3)]
    control = harness.Control(binary("sluice-control"), tmp_path, redis_server.url,
                              relay=relays[0].server,
                              public_url="http://localhost:%d" % relays[0].http_port)
    for r in relays:
        harness.wait_metrics(r, lambda m: m.get("sluice_cluster_relays") == 3, "3 relays")
    yield redis_server, relays, control
    control.stop()
    for r in relays:  # drains run side by side
        r.proc.signal(signal.SIGTERM)
    for r in relays:
        r.stop()


def new_session(control):
    status, _, s = control.api("POST", "/api/v1/tunnels", {"port": 3000})
    assert status == 201, s
    return s


def agent_on(binary, tmp_path, relays, app, s, wait=True):
    """An agent with the given relays, in order (the first one is its home)."""
    return harness.Agent(binary("sluice"), tmp_path, app.port,
                         ",".join(r.server for r in relays),
                         extra=["--token", s["agentToken"]], wait=wait)


def link_frame(secret, at, client="127.0.0.1", code=0, token=None):
    """A LINK frame as a relay sends it (docs/protocol.md), signed with secret
    unless token is given."""
    msg = b"link\n%d\n%s\n%d" % (at, client.encode(), code)
    tok = token or hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()
    p = msgpack.packb({"t": 10, "v": 1, "token": tok, "epoch": at, "code": code,
                       "text": client})
    return len(p).to_bytes(4, "big") + p


def get(relay, name, path="/", timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", relay.http_port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": "%s.localhost" % name})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def served(relay, name):
    """A 200 for name through relay, or False (refused, reset, timed out)."""
    try:
        return get(relay, name, timeout=3)[0] == 200
    except OSError:
        return False


def test_any_relay_serves_a_tunnel_attached_to_one(binary, tmp_path, cluster, app):
    _, relays, control = cluster
    s = new_session(control)
    agent_on(binary, tmp_path, relays[:1], app, s)
    for r in relays:
        status, body = get(r, s["name"], "/where?x=1")
        assert status == 200, body
        seen = json.loads(body)
        assert seen["app"] == "cluster" and seen["path"] == "/where?x=1"
        # The app sees the public client, not the relay in between.
        assert seen["headers"]["X-Forwarded-For"] == "127.0.0.1"
        assert seen["headers"]["X-Forwarded-Host"] == "%s.localhost" % s["name"]
    # The session path works on every relay too.
    with socket.create_connection(("127.0.0.1", relays[2].http_port), timeout=5) as c:
        c.sendall(b"GET /session/%s/p HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                  % s["sessionId"].encode())
        resp = harness.read_to_close(c)
    assert resp.startswith(b"HTTP/1.1 200") and b'"path": "/p"' in resp
    # Bodies both ways, large enough to span many reads, arrive intact.
    payload = os.urandom(3 << 20)
    c = http.client.HTTPConnection("127.0.0.1", relays[1].http_port, timeout=10)
    c.request("POST", "/up", body=payload, headers={"Host": "%s.localhost" % s["name"]})
    got = json.loads(c.getresponse().read())
    assert got["sha256"] == hashlib.sha256(payload).hexdigest()
    c.request("GET", "/bytes?n=%d" % (4 << 20), headers={"Host": "%s.localhost" % s["name"]})
    r = c.getresponse()
    assert r.status == 200 and len(r.read()) == 4 << 20
    c.close()
    # Workers publish their counters at every turn of their loops.
    harness.wait_metrics(relays[1], lambda m: m['sluice_links_total{event="out"}'] >= 2, "out")
    harness.wait_metrics(relays[0], lambda m: m['sluice_links_total{event="in"}'] >= 4, "in")
    # A name no session has is still a 404 everywhere.
    assert get(relays[2], "nosuchname")[0] == 404


def test_the_link_port_refuses_what_is_not_a_relay(binary, tmp_path, cluster, app):
    _, relays, control = cluster
    s = new_session(control)
    agent_on(binary, tmp_path, relays[:1], app, s)
    # A plain HTTP request, a LINK with a made-up token, one signed with
    # another secret and one signed too long ago are all closed unanswered.
    head = b"GET / HTTP/1.1\r\nHost: %s.localhost\r\nConnection: close\r\n\r\n" % (
        s["name"].encode())
    now = int(time.time())
    for attempt in (head, link_frame(harness.SECRET, now, token="0" * 64) + head,
                    link_frame("another-secret-0123456789abcdefghij", now) + head,
                    link_frame(harness.SECRET, now - 120) + head):
        with socket.create_connection(("127.0.0.1", relays[0].link_port), timeout=5) as c:
            c.sendall(attempt)
            assert harness.read_to_close(c) == b""
    # The same request with a proper LINK is served: what was refused was the proof.
    with socket.create_connection(("127.0.0.1", relays[0].link_port), timeout=5) as c:
        c.sendall(link_frame(harness.SECRET, now) + head)
        assert harness.read_to_close(c).startswith(b"HTTP/1.1 200")
    m = harness.wait_metrics(relays[0], lambda m: m['sluice_links_total{event="refused"}'] >= 4
                             and m['sluice_links_total{event="in"}'] >= 1, "links counted")
    assert m['sluice_links_total{event="in"}'] == 1  # only the proper one


def test_owner_killed_traffic_resumes_within_5s_with_the_same_name(binary, tmp_path, cluster,
                                                                    app):
    _, relays, control = cluster
    s = new_session(control)
    a = agent_on(binary, tmp_path, relays[:2], app, s)
    assert get(relays[2], s["name"])[0] == 200
    relays[0].proc.kill()  # SIGKILL: no goodbye, its registration times out
    t0 = time.monotonic()

    harness.wait_for(lambda: served(relays[2], s["name"]), timeout=10,
                     what="traffic through another relay")
    took = time.monotonic() - t0
    assert took < 5.0, took
    ev = a.wait_event("reconnected")
    assert a.events()[0]["name"] == s["name"]
    assert get(relays[1], s["name"])[0] == 200  # and directly at its new relay
    assert harness.metrics(relays[1])['sluice_cluster_events_total{event="claim"}'] >= 1
    print("failover took %.2f s" % took)


def test_drained_relay_moves_its_agents_and_loses_no_request(binary, tmp_path, cluster, app):
    _, relays, control = cluster
    s = new_session(control)
    a = agent_on(binary, tmp_path, relays[:2], app, s)
    results = []
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                results.append(get(relays[2], s["name"], "/slow?s=0.05", timeout=10)[0])
            except OSError as e:
                results.append(repr(e))
    t = threading.Thread(target=client)
    t.start()
    time.sleep(1.0)
    status, _, body = control.api("POST", "/api/v1/relays/%s/drain" % relay_id(relays[0]))
    assert status == 202, body
    harness.wait_for(lambda: not relays[0].proc.alive(), timeout=15, what="drained relay exits")
    a.wait_event("reconnected")
    time.sleep(1.0)
    stop.set()
    t.join()
    assert relays[0].stop() == 0  # exited by itself, cleanly (sanitizers checked)
    why = [l for p in relays + [a] for l in p.proc.log().splitlines()
           if ": 50" in l or "local service" in l]
    assert len(results) > 20 and all(x == 200 for x in results), \
        ([x for x in results if x != 200][:5], why[:10])
    assert get(relays[1], s["name"])[0] == 200


def test_an_older_bind_cannot_take_a_session_from_its_live_owner(binary, tmp_path, cluster,
                                                                  app):
    redis, relays, control = cluster
    s = new_session(control)
    own = "sl:own:" + s["sessionId"]
    # Relay 0, alive, holds a newer bind of the session (epoch 100) than the
    # one an agent is about to make at relay 1 (epoch 1).
    redis.cli("HSET", own, "relay", relay_id(relays[0]), "bepoch", "100", "fence", "7")
    agent_on(binary, tmp_path, relays[1:2], app, s)
    harness.wait_metrics(relays[1],
                         lambda m: m['sluice_cluster_events_total{event="claim_refused"}'] >= 1,
                         "claim refused")
    assert redis.cli("HGET", own, "relay").strip() == relay_id(relays[0])
    assert redis.cli("HGET", own, "fence").strip() == "7"
    # Once that owner is gone from the registry, the claim goes through.
    relays[0].proc.kill()
    harness.wait_for(lambda: redis.cli("HGET", own, "relay").strip() == relay_id(relays[1]),
                     timeout=8, what="claim after the owner died")
    assert int(redis.cli("HGET", own, "fence")) == 8
    assert get(relays[2], s["name"])[0] == 200


def test_relays_are_listed_and_drain_from_their_admin_port(binary, tmp_path, cluster):
    _, relays, control = cluster
    status, _, body = control.api("GET", "/api/v1/relays")
    assert status == 200
    listed = {x["id"]: x for x in body["relays"]}
    for r in relays:
        assert listed[relay_id(r)]["state"] == "serving"
        assert listed[relay_id(r)]["link"] == "127.0.0.1:%d" % r.link_port
    import urllib.request
    req = urllib.request.Request("http://127.0.0.1:%d/drain" % relays[2].admin_port, data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200 and r.read() == b"draining\n"

    def state():
        got = {x["id"]: x["state"] for x in control.api("GET", "/api/v1/relays")[2]["relays"]}
        return got.get(relay_id(relays[2]))
    harness.wait_for(lambda: state() in ("draining", None), timeout=5, what="draining shown")
    harness.wait_for(lambda: not relays[2].proc.alive(), timeout=10, what="exit")
    assert relays[2].stop() == 0


def test_an_agent_held_at_two_relays_survives_the_owner(binary, tmp_path, cluster, app):
    redis, relays, control = cluster
    s = new_session(control)
    a = harness.Agent(binary("sluice"), tmp_path, app.port,
                      "%s,%s" % (relays[0].server, relays[1].server),
                      extra=["--token", s["agentToken"], "--ha"])
    a.wait_event("ready", after=1)  # bound at both relays
    for r in relays:
        assert get(r, s["name"])[0] == 200
    own = "sl:own:" + s["sessionId"]
    owner = redis.cli("HGET", own, "relay").strip()
    dead = [r for r in relays[:2] if relay_id(r) == owner][0]
    other = relays[1] if dead is relays[0] else relays[0]
    dead.proc.kill()
    t0 = time.monotonic()

    harness.wait_for(lambda: served(relays[2], s["name"]), timeout=10,
                     what="traffic through the other relay")
    took = time.monotonic() - t0
    assert took < 5.0, took
    assert redis.cli("HGET", own, "relay").strip() == relay_id(other)
    assert get(other, s["name"])[0] == 200
    assert "takes it over" in other.proc.log()
    print("ha failover took %.2f s" % took)
