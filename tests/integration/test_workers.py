"""Several worker threads (--workers): each tunnel lives on one worker, and
connections the kernel gives to another worker are handed over to it (the
request head, the HELLO or DATA_HELLO and the TLS state go along)."""
import http.client
import json
import re
import socket

import pytest

import apps
import harness

WORKERS = 4  # more than this machine's cores: every path crosses workers


@pytest.fixture(params=["io_uring", "epoll"])
def relay4(request, binary, tmp_path):
    r = harness.Relay(binary("sluice-relay"), tmp_path,
                      extra=["--engine", request.param, "--workers", str(WORKERS)])
    yield r
    r.stop()



def get(relay, path, host):
    c = http.client.HTTPConnection("127.0.0.1", relay.http_port, timeout=10)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_every_tunnel_answers_whichever_worker_takes_the_connection(relay4, start_agent):
    tunnels = []
    try:
        for i in range(6):
            app = apps.HttpApp(tag="app%d" % i)
            a = start_agent(app.port, relay4.server, extra=["--name", "w%d" % i])
            tunnels.append((app, a))
        for rnd in range(8):
            for i, (app, a) in enumerate(tunnels):
                status, body = get(relay4, "/r%d" % rnd, "w%d.localhost" % i)
                assert status == 200, body
                seen = json.loads(body)
                assert (seen["app"], seen["path"]) == ("app%d" % i, "/r%d" % rnd)
        # Other workers' figures are published at every turn of their loops:
        # wait until the in and out counts of handoffs agree.
        m = harness.wait_metrics(relay4, lambda m: m['sluice_handoffs_total{event="in"}'] ==
                                 m['sluice_handoffs_total{event="out"}'], "handoff counts to settle")
        assert m["sluice_workers"] == WORKERS
        assert m["sluice_tunnels"] == 6 and m["sluice_agents"] == 6
        assert m["sluice_requests_total"] == 48
        # 48 fresh connections spread over 4 workers: most were handed over,
        # and so were the data connections that reached the wrong worker.
        assert m['sluice_handoffs_total{event="in"}'] >= 12, m
        assert m['sluice_handoffs_total{event="failed"}'] == 0
    finally:
        for app, _ in tunnels:
            app.stop()


def test_keep_alive_connection_moves_between_tunnels_of_different_workers(relay4, start_agent):
    tunnels = []
    try:
        for i in range(4):
            app = apps.HttpApp(tag="app%d" % i)
            a = start_agent(app.port, relay4.server)
            tunnels.append((app, a))
        sids = [a.ready["session"] for _, a in tunnels]
        c = http.client.HTTPConnection("127.0.0.1", relay4.http_port, timeout=10)
        c.connect()
        sock = c.sock
        for rnd in range(5):
            for i, sid in enumerate(sids):
                c.request("GET", "/session/%s/k%d?i=%d" % (sid, rnd, i))
                r = c.getresponse()
                body = r.read()
                assert r.status == 200, body
                seen = json.loads(body)
                assert (seen["app"], seen["path"]) == ("app%d" % i, "/k%d?i=%d" % (rnd, i))
        assert c.sock is sock  # one TCP connection throughout
        c.close()
        assert harness.metrics(relay4)['sluice_handoffs_total{event="failed"}'] == 0
    finally:
        for app, _ in tunnels:
            app.stop()


def test_tcp_tunnels_on_many_workers(relay4, start_agent):
    echo = apps.TcpEcho()
    try:
        agents = [start_agent(echo.port, relay4.server, proto="tcp") for _ in range(3)]
        for a in agents:
            port = int(re.match(r"tcp://localhost:(\d+)$", a.url).group(1))
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    f = s.makefile("rb")
                    assert f.readline() == b"hello from tcp\n"
                    s.sendall(b"x" * 100000)
                    s.shutdown(socket.SHUT_WR)
                    assert f.read() == b"x" * 100000
    finally:
        echo.stop()


def test_resumed_agent_finds_its_tunnel_on_its_worker(relay4, app, start_agent):
    a = start_agent(app.port, relay4.server, extra=["--name", "phoenix"])
    sid = a.ready["session"]
    # Killed and restarted many times: the new control connection lands on
    # any worker and is handed to the one that holds the name.
    for _ in range(4):
        a.stop()
        a = start_agent(app.port, relay4.server, extra=["--name", "phoenix"])
        assert a.url == "http://phoenix.localhost:%d/" % relay4.http_port
        status, _ = get(relay4, "/", "phoenix.localhost")
        assert status == 200
    assert harness.metrics(relay4)["sluice_tunnels"] == 1
    assert sid  # the name, not the session, is what a restarted agent keeps
