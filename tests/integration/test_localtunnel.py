"""localtunnel compatibility: the unmodified `lt` client from npm (pinned in
tests/lt/, installed by make under build/lt/) gets a working tunnel from a
real sluice-control (--localtunnel) and a real relay, with a real Redis."""
import concurrent.futures
import json
import os
import random
import re
import urllib.error
import urllib.request

import pytest

import apps
import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LT = os.path.join(ROOT, "build", "lt", "node_modules", "localtunnel", "bin", "lt.js")


@pytest.fixture
def lt_stack(binary, tmp_path):
    if not os.path.exists(LT):
        pytest.fail("the localtunnel client is missing: make installs it under build/lt")
    redis = harness.Redis(tmp_path)
    # Below the ephemeral range (free_port and clients use that) and above
    # the relays' default --tcp-ports.
    lo = random.randrange(21100, 32000, 100)
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis.url,
                                  extra=["--lt-ports", "%d-%d" % (lo, lo + 99)])
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url, relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port,
                              extra=["--localtunnel", "--lt-ports", "%d-%d" % (lo, lo + 99)])
    app = apps.HttpApp(tag="lt")
    yield control, relay, app, tmp_path
    app.stop()
    control.stop()
    relay.stop()
    redis.stop()


def start_lt(tmp_path, control, app, extra=()):
    p = harness.Proc("lt-%d" % harness.free_port(),
                     ["node", LT, "--port", str(app.port), "--host", control.url] + list(extra),
                     str(tmp_path))
    m = harness.wait_for(lambda: re.search(r"your url is: (\S+)", p.log()), timeout=15,
                         what="lt's url")
    return p, m.group(1)


def fetch(relay, name, path):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (relay.http_port, path),
                                 headers={"Host": "%s.localhost" % name})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def test_lt_client_gets_a_working_tunnel(lt_stack):
    control, relay, app, tmp = lt_stack
    lt, url = start_lt(tmp, control, app, ["--subdomain", "ltdemo"])
    assert url == "http://ltdemo.localhost:%d" % relay.http_port
    # The client's sockets are pooled at the relay; many requests, one after
    # another (each consumes a socket, the client opens a new one) and at once.
    for i in range(15):
        status, body = harness.wait_for(lambda: fetch(relay, "ltdemo", "/seq/%d" % i),
                                        timeout=10, what="request %d" % i)
        assert status == 200 and body["app"] == "lt" and body["path"] == "/seq/%d" % i
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        got = list(ex.map(lambda i: fetch(relay, "ltdemo", "/par/%d" % i), range(16)))
    assert sorted(b["path"] for _, b in got) == sorted("/par/%d" % i for i in range(16))
    assert lt.alive()


def test_lt_random_name_is_a_session_the_api_lists(lt_stack):
    control, relay, app, tmp = lt_stack
    lt, url = start_lt(tmp, control, app)
    name = re.match(r"http://([a-z0-9]+)\.localhost:\d+$", url).group(1)
    assert fetch(relay, name, "/x")[0] == 200
    listed = control.api("GET", "/api/v1/tunnels?status=active")[2]["tunnels"]
    mine = [t for t in listed if t["name"] == name]
    assert len(mine) == 1
    # Deleting it through the API ends the tunnel: its sockets close at the relay.
    assert control.api("DELETE", "/api/v1/tunnels/" + mine[0]["sessionId"])[0] == 200
    harness.wait_metrics(relay, lambda m: m.get("sluice_sessions_closed_total", 0) >= 1,
                         "session closed")
    with pytest.raises(urllib.error.HTTPError) as e:
        fetch(relay, name, "/x")
    assert e.value.code == 404


def test_lt_requests_are_refused_unless_enabled(binary, tmp_path):
    redis = harness.Redis(tmp_path)
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url)
    try:
        status, _, body = control.api("GET", "/?new", key=None)
        assert status == 404 and body["code"] == "not_found"
    finally:
        control.stop()
        redis.stop()


def test_lt_bad_names_are_refused(lt_stack):
    control, _, _, _ = lt_stack
    for bad in ("/admin", "/UPPER", "/-x", "/a_b"):
        status, _, body = control.api("GET", bad, key=None)
        assert status == 400 and body["code"] in ("invalid_subdomain",), (bad, body)
