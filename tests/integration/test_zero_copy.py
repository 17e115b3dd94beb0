"""The zero-copy switches. SEND_ZC (--send-zc BYTES, io_uring): bytes arrive
intact, and the counters say what the kernel did; on loopback it copies every
send anyway, which zc_copied shows. splice(2) (--splice, relay and agent, both
engines): bulk transfers between plain sockets go socket -> pipe -> socket,
intact, half-close included."""
import hashlib
import os
import re
import socket
import urllib.request

import pytest

import apps
import harness



def test_send_zc_streams_intact_and_counts_copies(binary, tmp_path, app, start_agent):
    r = harness.Relay(binary("sluice-relay"), tmp_path, extra=["--send-zc", "16384"])
    try:
        a = start_agent(app.port, r.server, extra=["--name", "zc"])
        n = 64 << 20
        req = urllib.request.Request("http://127.0.0.1:%d/bytes?n=%d" % (r.http_port, n),
                                     headers={"Host": "zc.localhost"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            h = hashlib.sha256()
            got = 0
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                got += len(chunk)
        assert got == n and h.hexdigest() == apps.bytes_sha256(n)
        m = harness.wait_metrics(r, lambda m: m['sluice_engine_events_total{event="zc_send"}'] > 0,
                                 "zero-copy sends")
        zc = m['sluice_engine_events_total{event="zc_send"}']
        assert m['sluice_engine_events_total{event="zc_refused"}'] == 0
        # Loopback: the kernel copied (its notification says so); on a real
        # NIC this count stays below zc_send.
        assert 0 < m['sluice_engine_events_total{event="zc_copied"}'] <= zc
        assert a.proc.alive()
    finally:
        r.stop()


def test_send_zc_is_ignored_on_epoll(binary, tmp_path):
    r = harness.Relay(binary("sluice-relay"), tmp_path,
                      extra=["--send-zc", "16384", "--engine", "epoll"])
    try:
        assert harness.metrics(r)['sluice_engine_events_total{event="zc_send"}'] == 0
    finally:
        r.stop()


@pytest.fixture(params=["io_uring", "epoll"])
def splice_relay(request, binary, tmp_path):
    r = harness.Relay(binary("sluice-relay"), tmp_path, tls=False,
                      extra=["--engine", request.param, "--splice"])
    r.engine = request.param
    yield r
    r.stop()


def test_splice_downloads_and_uploads_intact(splice_relay, app, start_agent):
    r = splice_relay
    start_agent(app.port, r.server, tls=False,
                extra=["--name", "sp", "--splice", "--engine", r.engine])
    for n in (64 << 20, 5 << 20):
        req = urllib.request.Request("http://127.0.0.1:%d/bytes?n=%d" % (r.http_port, n),
                                     headers={"Host": "sp.localhost"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read()
        assert len(body) == n and hashlib.sha256(body).hexdigest() == apps.bytes_sha256(n)
    data = os.urandom(24 << 20)
    req = urllib.request.Request("http://127.0.0.1:%d/up" % r.http_port, data=data,
                                 headers={"Host": "sp.localhost"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        assert resp.read() == (b'{"sha256": "%s", "bytes": %d, "path": "/up"}' %
                               (hashlib.sha256(data).hexdigest().encode(), len(data)))
    m = harness.wait_metrics(r, lambda m: m["sluice_spliced_bytes_total"] > 0, "spliced bytes")
    assert m['sluice_engine_events_total{event="splice_start"}'] >= 1
    assert m['sluice_engine_events_total{event="splice_fallback"}'] == 0
    # Most of the 69 MiB downloaded went through pipes, not through buffers.
    assert m["sluice_spliced_bytes_total"] > 48 << 20


def test_splice_tcp_tunnel_round_trip_with_half_close(splice_relay, start_agent):
    r = splice_relay
    echo = apps.TcpEcho()
    try:
        a = start_agent(echo.port, r.server, proto="tcp", tls=False,
                        extra=["--splice", "--engine", r.engine])
        port = int(re.match(r"tcp://localhost:(\d+)$", a.url).group(1))
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                f = s.makefile("rb")
                assert f.readline() == b"hello from tcp\n"
                payload = os.urandom(3 << 20)
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                assert f.read() == payload
    finally:
        echo.stop()
