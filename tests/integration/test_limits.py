"""Issue 5, limits: every limit configurable per API key and per session through
the API, enforced by real relays following a real Redis: session creation,
requests per tunnel (429 with the RateLimit headers), bandwidth (slowed, never
cut), new TCP connections, and a key's requests shared by three relays through
leases, failing open into local shares while Redis is down."""
import hashlib
import http.client
import os
import socket
import threading
import time

import pytest

import apps
import harness


@pytest.fixture
def app():
    a = apps.HttpApp(tag="limits")
    yield a
    a.stop()


@pytest.fixture
def stack(binary, tmp_path, redis_server):
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis_server.url)
    control = harness.Control(binary("sluice-control"), tmp_path, redis_server.url,
                              relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port,
                              extra=["--audit-log", str(tmp_path / "audit.jsonl")])
    yield control, relay
    control.stop()
    relay.stop()


def lim(n, w):
    return {"limit": n, "window": w}


def session(control, key, **body):
    body.setdefault("port", 3000)
    status, hdrs, b = control.api("POST", "/api/v1/tunnels", body, key=key)
    assert status == 201, b
    return b


def attach(binary, tmp_path, relay, port, s, proto="http"):
    return harness.Agent(binary("sluice"), tmp_path, port, relay.server, proto=proto,
                         extra=["--token", s["agentToken"]])


def get(relay, name, path="/"):
    """One request on its own connection: (status, headers)."""
    c = http.client.HTTPConnection("127.0.0.1", relay.http_port, timeout=5)
    try:
        c.request("GET", path, headers={"Host": "%s.localhost" % name})
        r = c.getresponse()
        r.read()
        return r.status, r.headers
    finally:
        c.close()


# ---- the control plane ----

def test_session_creation_is_limited_per_key_with_ratelimit_headers(stack):
    control, _ = stack
    k = control.api("POST", "/api/v1/keys",
                    {"name": "few", "limits": {"sessions": lim(2, 3600)}})[2]
    assert k["limits"] == {"sessions": lim(2, 3600)}
    for _ in range(2):
        session(control, k["key"])
    status, hdrs, body = control.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k["key"])
    assert status == 429 and body["code"] == "rate_limited"
    assert hdrs["RateLimit-Limit"] == "2" and hdrs["RateLimit-Remaining"] == "0"
    assert 3000 <= int(hdrs["Retry-After"]) <= 3600
    assert hdrs["RateLimit-Reset"] == hdrs["Retry-After"]
    assert hdrs["RateLimit-Policy"] == "2;w=3600"
    # Another key is not affected; the admin key is the operator's, not counted.
    other = control.new_key()["key"]
    session(control, other)
    for _ in range(3):
        assert control.api("POST", "/api/v1/tunnels", {"port": 3000})[0] == 201
    # Raising the key's limit lets it create again.
    status, _, eff = control.api("PUT", "/api/v1/keys/%s/limits" % k["id"],
                                 {"sessions": lim(5, 3600)})
    assert status == 200 and eff["sessions"] == lim(5, 3600)
    session(control, k["key"])
    audit = open(os.path.join(control.dir, "audit.jsonl")).read()
    assert '"event":"rate_limited"' in audit


def test_default_session_limit_is_ten_per_hour(binary, tmp_path, redis_server):
    control = harness.Control(binary("sluice-control"), tmp_path, redis_server.url)
    try:
        k = control.new_key()["key"]
        codes = [control.api("POST", "/api/v1/tunnels", {"port": 3000}, key=k)[0]
                 for _ in range(11)]
        assert codes == [201] * 10 + [429]
        # The defaults every session gets, shown by the API.
        s = control.api("POST", "/api/v1/tunnels", {"port": 3000})[2]
        assert s["limits"] == {"requests": lim(1000, 60), "bandwidth": lim(1 << 30, 3600),
                               "tcpConnections": lim(600, 60), "keyRequests": None}
    finally:
        control.stop()


def test_session_limits_stay_under_their_keys_ceiling(stack):
    control, _ = stack
    k = control.api("POST", "/api/v1/keys",
                    {"limits": {"requests": lim(100, 60), "bandwidth": lim(1000, 1)}})[2]
    status, _, body = control.api("POST", "/api/v1/tunnels",
                                  {"port": 3000, "limits": {"requests": lim(200, 60)}},
                                  key=k["key"])
    assert status == 403 and body["code"] == "limit_above_key"
    # No limit at all is more than any limit.
    status, _, body = control.api("POST", "/api/v1/tunnels",
                                  {"port": 3000, "limits": {"bandwidth": None}}, key=k["key"])
    assert status == 403 and "bandwidth" in body["error"]
    # 10 per second is 600 a minute: more than 100 a minute, whatever the window.
    status, _, body = control.api("POST", "/api/v1/tunnels",
                                  {"port": 3000, "limits": {"requests": lim(10, 1)}},
                                  key=k["key"])
    assert status == 403
    s = session(control, k["key"], limits={"requests": lim(50, 60)})
    assert s["limits"]["requests"] == lim(50, 60)
    assert s["limits"]["bandwidth"] == lim(1000, 1)  # the key's, as the default
    # Bad limits are precise 400s.
    for bad in ({"requests": {"limit": 5}}, {"requests": lim(5, 0)}, {"requests": "5/1m"},
                {"sessions": lim(1, 60)}, {"requests": {"limit": -1, "window": 60}},
                {"requests": {"limit": 5, "window": 60, "burst": 2}}):
        status, _, body = control.api("POST", "/api/v1/tunnels",
                                      {"port": 3000, "limits": bad}, key=k["key"])
        assert status == 400, (bad, body)
    # The owner may lower its session's limits later, never raise them past the key.
    path = "/api/v1/tunnels/%s/limits" % s["sessionId"]
    status, _, body = control.api("PUT", path, {"requests": lim(20, 60)}, key=k["key"])
    assert status == 200 and body["requests"] == lim(20, 60)
    assert body["bandwidth"] == lim(1000, 1)  # left out: unchanged
    assert control.api("PUT", path, {"requests": lim(500, 60)}, key=k["key"])[0] == 403
    assert control.api("GET", path, key=k["key"])[2]["requests"] == lim(20, 60)
    other = control.new_key()["key"]
    assert control.api("GET", path, key=other)[0] == 404
    assert control.api("PUT", "/api/v1/keys/kzzzzzzzzzzz/limits", {})[0] == 404
    assert control.api("PUT", "/api/v1/keys/%s/limits" % k["id"], {}, key=other)[0] == 403


# ---- one relay: the tunnel's own limits ----

def test_requests_over_a_tunnels_limit_get_429_with_headers(binary, tmp_path, stack, app):
    control, relay = stack
    s = session(control, harness.ADMIN_KEY, limits={"requests": lim(5, 60)})
    attach(binary, tmp_path, relay, app.port, s)
    codes = [get(relay, s["name"])[0] for _ in range(5)]
    assert codes == [200] * 5
    status, hdrs = get(relay, s["name"])
    assert status == 429
    assert hdrs["RateLimit-Limit"] == "5" and hdrs["RateLimit-Remaining"] == "0"
    assert 1 <= int(hdrs["Retry-After"]) <= 60 and hdrs["RateLimit-Policy"] == "5;w=60"
    harness.wait_metrics(
        relay, lambda m: m['sluice_ratelimited_total{limit="tunnel_requests"}'] >= 1, "count")
    # A new limit reaches the relay without the agent reconnecting.
    path = "/api/v1/tunnels/%s/limits" % s["sessionId"]
    assert control.api("PUT", path, {"requests": lim(8, 60)})[0] == 200
    harness.wait_for(lambda: get(relay, s["name"])[0] == 200, timeout=5, what="new limit")
    codes = [get(relay, s["name"])[0] for _ in range(3)]
    assert codes.count(200) <= 2 and codes[-1] == 429


def test_a_tcp_tunnel_over_its_bandwidth_is_slowed_not_cut(binary, tmp_path, stack):
    control, relay = stack
    echo = apps.TcpEcho()
    try:
        # 256 KiB a second: 1 MiB up and 1 MiB back is 2 MiB, about 7 s beyond
        # the first 256 KiB.
        s = session(control, harness.ADMIN_KEY, port=echo.port, protocol="tcp",
                    limits={"bandwidth": lim(256 << 10, 1)})
        a = attach(binary, tmp_path, relay, echo.port, s, proto="tcp")
        port = int(a.url.rsplit(":", 1)[1])
        payload = os.urandom(1 << 20)
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        t0 = time.monotonic()
        sender = threading.Thread(target=c.sendall, args=(payload,))
        sender.start()
        got = b""
        want = len(b"hello from tcp\n") + len(payload)
        while len(got) < want:
            chunk = c.recv(65536)
            assert chunk, "the tunnel was cut after %d bytes" % len(got)
            got += chunk
        elapsed = time.monotonic() - t0
        sender.join()
        c.close()
        assert hashlib.sha256(got[15:]).digest() == hashlib.sha256(payload).digest()
        # A floor, not a speed: 2 MiB at 256 KiB/s after one window's allowance
        # cannot take less than (2 MiB - 256 KiB) / 256 KiB/s = 7 s.
        assert elapsed >= 6.5, elapsed
        harness.wait_metrics(
            relay, lambda m: m['sluice_ratelimited_total{limit="bandwidth_pauses"}'] > 0, "pauses")
    finally:
        echo.stop()


def test_new_tcp_connections_over_the_limit_are_closed(binary, tmp_path, stack):
    control, relay = stack
    echo = apps.TcpEcho()
    try:
        s = session(control, harness.ADMIN_KEY, port=echo.port, protocol="tcp",
                    limits={"tcpConnections": lim(3, 60)})
        a = attach(binary, tmp_path, relay, echo.port, s, proto="tcp")
        port = int(a.url.rsplit(":", 1)[1])
        greetings = []
        for _ in range(4):
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.shutdown(socket.SHUT_WR)
            greetings.append(harness.read_to_close(c))
            c.close()
        assert greetings[:3] == [b"hello from tcp\n"] * 3 and greetings[3] == b""
        m = harness.wait_metrics(  # workers publish their counters at every turn
            relay, lambda m: m['sluice_ratelimited_total{limit="tcp_connections"}'] > 0, "count")
        assert m['sluice_ratelimited_total{limit="tcp_connections"}'] == 1
    finally:
        echo.stop()


# ---- three relays, one Redis: a key's limit shared through leases ----

@pytest.fixture
def cluster(binary, tmp_path):
    redis = harness.Redis(tmp_path, persistent=True)
    relays = [harness.session_relay(binary("sluice-relay"), tmp_path, redis.url)
              for _ in range(3)]
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url,
                              relay=relays[0].server,
                              public_url="http://localhost:%d" % relays[0].http_port)
    yield redis, relays, control
    control.stop()
    for r in relays:
        r.stop()
    redis.stop()


def hammer(relay, name, n, out, idx):
    ok = 0
    for _ in range(n):
        try:
            if get(relay, name)[0] == 200:
                ok += 1
        except OSError:
            pass
    out[idx] = ok


def key_tunnels(binary, tmp_path, relays, control, app, limit):
    k = control.api("POST", "/api/v1/keys", {"limits": {"keyRequests": lim(limit, 60)}})[2]
    names = []
    for r in relays:
        s = session(control, k["key"])
        assert s["limits"]["keyRequests"] == lim(limit, 60)
        attach(binary, tmp_path, r, app.port, s)
        names.append(s["name"])
    return names


def test_a_keys_limit_holds_across_three_relays(binary, tmp_path, cluster, app):
    redis, relays, control = cluster
    names = key_tunnels(binary, tmp_path, relays, control, app, 300)
    for r in relays:
        harness.wait_metrics(r, lambda m: m.get("sluice_ratelimit_relays") == 3, "3 relays seen")
    out = [0, 0, 0]
    threads = [threading.Thread(target=hammer, args=(relays[i], names[i], 200, out, i))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowed = sum(out)
    # Never more than the limit; within 2 percent of it.
    print("allowed %d of 300 (%s)" % (allowed, out))
    assert 294 <= allowed <= 300, out
    assert all(x > 0 for x in out), out
    status, hdrs = get(relays[1], names[1])
    assert status == 429 and hdrs["RateLimit-Limit"] == "300"
    m = harness.metrics(relays[0])
    assert m['sluice_ratelimit_events_total{event="lease"}'] > 0


def test_redis_down_fails_open_into_local_shares_and_recovers(binary, tmp_path, cluster, app):
    redis, relays, control = cluster
    names = key_tunnels(binary, tmp_path, relays, control, app, 300)
    for i, r in enumerate(relays):
        harness.wait_metrics(r, lambda m: m.get("sluice_ratelimit_relays") == 3, "3 relays seen")
        assert get(r, names[i])[0] == 200  # leasing works
    # Redis dies mid-traffic: every request still gets an answer, 200 or 429.
    codes, stop = [], threading.Event()

    def steady():
        while not stop.is_set():
            try:
                codes.append(get(relays[0], names[0])[0])
            except OSError as e:
                codes.append(repr(e))
    t = threading.Thread(target=steady)
    t.start()
    time.sleep(0.3)
    redis.proc.kill()
    for r in relays:
        harness.wait_metrics(r, lambda m: m.get("sluice_ratelimit_global") == 0, "local mode")
    stop.set()
    t.join()
    assert codes and set(codes) <= {200, 429}, [c for c in codes if c not in (200, 429)][:3]
    # Each relay now allows its share: 300 / 3 relays.
    out = [0]
    hammer(relays[2], names[2], 130, out, 0)
    assert out[0] == 100
    assert "audit: ratelimit_local" in relays[2].proc.log()
    redis.start()
    for r in relays:
        harness.wait_metrics(r, lambda m: m.get("sluice_ratelimit_global") == 1,
                             "leasing again", timeout=15)
    assert "audit: ratelimit_global" in relays[2].proc.log()
    harness.wait_for(lambda: get(relays[0], names[0])[0] == 200, timeout=5, what="traffic")
    assert all(r.proc.alive() for r in relays)
