"""TLS: the agent link (the agent verifies the relay) and public HTTPS
terminated by the relay (SNI, ALPN http/1.1, reload on SIGHUP). Real
clients: curl, Python's ssl module, the openssl tool for certificates."""
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

import apps
import harness

DOMAIN = "sluice.test"  # the test certificate carries *.sluice.test


@pytest.fixture(autouse=True, params=["auto", "wolfssl"])
def tls_crypto(request, monkeypatch):
    """Every test here twice: records by libcrypto (auto, on this CPU) and by
    wolfSSL's own code (the fast path switched off), relay and agents alike
    (both read SLUICE_TLS_CRYPTO)."""
    monkeypatch.setenv("SLUICE_TLS_CRYPTO", request.param)
    return request.param


@pytest.fixture(params=["io_uring", "epoll"])
def https_relay(request, binary, tmp_path):
    """A relay with --https, TLS toward agents, and a --cert-dir for SNI."""
    pki = harness.pki()
    certs = tmp_path / "certs"
    certs.mkdir()
    crt, key = pki["other"]
    shutil.copy(crt, certs / "app.example.com.crt")
    shutil.copy(key, certs / "app.example.com.key")
    port = harness.free_port()
    r = harness.Relay(binary("sluice-relay"), tmp_path,
                      extra=["--engine", request.param, "--domain", DOMAIN,
                             "--https", "127.0.0.1:%d" % port, "--cert-dir", str(certs)])
    r.https_port = port
    r.certs = certs
    yield r
    r.stop()


def curl_https(relay, host, path, extra=()):
    """curl over HTTPS to the relay with the test CA; returns (status, body, http_version)."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "60", "--cacert", harness.pki()["ca"],
         "--resolve", "%s:%d:127.0.0.1" % (host, relay.https_port),
         "-w", "\n%{http_code} %{http_version}", "https://%s:%d%s" % (host, relay.https_port, path)]
        + list(extra), capture_output=True, timeout=90)
    assert out.returncode == 0, out.stderr.decode()
    body, _, tail = out.stdout.rpartition(b"\n")
    code, version = tail.decode().split()
    return int(code), body, version


def peer_cert_cn(port, sni):
    ctx = ssl.create_default_context(cafile=harness.pki()["ca"])
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=sni) as t:
            subject = dict(x[0] for x in t.getpeercert()["subject"])
            return subject["commonName"]



def test_https_request_reaches_the_app_with_forwarded_proto(https_relay, app, start_agent):
    start_agent(app.port, https_relay.server, extra=["--name", "demo"])
    status, body, version = curl_https(https_relay, "demo." + DOMAIN, "/echo?x=1")
    assert status == 200, body
    seen = json.loads(body)
    assert seen["path"] == "/echo?x=1"
    assert seen["headers"]["X-Forwarded-Proto"] == "https"
    assert "proto=https" in seen["headers"]["Forwarded"]
    assert version == "1.1"


def test_https_alpn_picks_http11_when_h2_is_offered(https_relay, app, start_agent):
    start_agent(app.port, https_relay.server, extra=["--name", "alpn"])
    status, _, version = curl_https(https_relay, "alpn." + DOMAIN, "/", extra=["--http2"])
    assert (status, version) == (200, "1.1")
    ctx = ssl.create_default_context(cafile=harness.pki()["ca"])
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", https_relay.https_port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="alpn." + DOMAIN) as t:
            assert t.selected_alpn_protocol() == "http/1.1"
    ctx.set_alpn_protocols(["h2"])  # h2 alone: the handshake goes on without ALPN
    with socket.create_connection(("127.0.0.1", https_relay.https_port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="alpn." + DOMAIN) as t:
            assert t.selected_alpn_protocol() is None


def test_https_large_bodies_stream_intact_both_ways(https_relay, app, start_agent, tmp_path):
    start_agent(app.port, https_relay.server, extra=["--name", "big"])
    n = 64 << 20
    status, body, _ = curl_https(https_relay, "big." + DOMAIN, "/bytes?n=%d" % n)
    assert status == 200
    assert len(body) == n
    assert hashlib.sha256(body).hexdigest() == apps.bytes_sha256(n)
    up = tmp_path / "up.bin"
    data = os.urandom(32 << 20)
    up.write_bytes(data)
    status, body, _ = curl_https(https_relay, "big." + DOMAIN, "/upload",
                                 extra=["--data-binary", "@%s" % up])
    assert status == 200
    assert json.loads(body) == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                "path": "/upload"}


def test_data_connections_resume_the_control_session(https_relay, app, start_agent):
    """The agent's data connections resume its control connection's TLS
    session (a ticket), whichever worker takes them: no certificate work."""
    start_agent(app.port, https_relay.server, extra=["--name", "resume", "--pool", "8"])
    harness.wait_for(lambda: harness.metrics(https_relay)['sluice_tls_events_total{event="handshake"}'] >= 9,
                     what="control and pool handshakes")
    assert harness.metrics(https_relay)['sluice_tls_events_total{event="resumed"}'] >= 8


def https_heads(port, host, paths):
    """The response heads of GET paths, in turn on one keep-alive TLS
    connection (the test CA verifies the relay): a list of header lists."""
    ctx = ssl.create_default_context(cafile=harness.pki()["ca"])
    heads = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=host) as t:
            f = t.makefile("rb")
            for path in paths:
                t.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()))
                lines = []
                while True:
                    line = f.readline()
                    assert line, "the relay closed before a whole response"
                    if line == b"\r\n":
                        break
                    lines.append(line.decode().rstrip("\r\n"))
                length = [int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length:")]
                f.read(length[0] if length else 0)
                heads.append(lines)
    return heads


def sts(head):
    return [x for x in head if x.lower().startswith("strict-transport-security:")]


def test_hsts_is_off_by_default(https_relay, app, start_agent):
    start_agent(app.port, https_relay.server, extra=["--name", "nohsts"])
    (head,) = https_heads(https_relay.https_port, "nohsts." + DOMAIN, ["/"])
    assert head[0].startswith("HTTP/1.1 200") and sts(head) == []


def test_hsts_on_the_first_https_response_and_the_relays_own_pages(binary, tmp_path, app, start_agent):
    """--hsts SECONDS: the first response of each HTTPS connection, the
    app's (the header after its status line, the rest intact) or the
    relay's own (404 here), carries Strict-Transport-Security once; plain
    HTTP never does."""
    port = harness.free_port()
    r = harness.Relay(binary("sluice-relay"), tmp_path,
                      extra=["--domain", DOMAIN, "--https", "127.0.0.1:%d" % port, "--hsts", "31536000"])
    try:
        start_agent(app.port, r.server, extra=["--name", "hsts"])
        first, second = https_heads(port, "hsts." + DOMAIN, ["/echo?a=1", "/echo?a=2"])
        assert first[0].startswith("HTTP/1.1 200") and second[0].startswith("HTTP/1.1 200")
        assert sts(first) == ["Strict-Transport-Security: max-age=31536000"], first
        assert first[1] == "Strict-Transport-Security: max-age=31536000"  # right after the status line
        assert sts(second) == []  # one per connection: the browser keeps it for max-age
        assert [x for x in first if x.lower().startswith("content-length")], first
        (page,) = https_heads(port, "nobody." + DOMAIN, ["/"])
        assert page[0].startswith("HTTP/1.1 404") and sts(page) == ["Strict-Transport-Security: max-age=31536000"]
        with urllib_open(r.http_port, "hsts." + DOMAIN) as resp:
            assert resp.status == 200 and resp.getheader("Strict-Transport-Security") is None
        m = harness.metrics(r)
        assert m['sluice_hsts_total{result="added"}'] == 1
        assert m['sluice_hsts_total{result="skipped"}'] == 0
    finally:
        r.stop()


def urllib_open(port, host):
    import urllib.request
    req = urllib.request.Request("http://127.0.0.1:%d/" % port, headers={"Host": host})
    return urllib.request.urlopen(req, timeout=10)


def test_agent_renews_the_ticket_its_data_connections_resume(binary, tmp_path, app, start_agent):
    """Tickets run out (--tls-ticket-lifetime; wolfSSL's own default was
    300 s, after which every new data connection of a long-running agent
    was a full handshake: 1,000 at a burst stalled it). The agent takes a
    younger data connection's ticket once half the lifetime is gone, so
    past several lifetimes only the control connection has verified a
    certificate."""
    r = harness.Relay(binary("sluice-relay"), tmp_path, extra=["--tls-ticket-lifetime", "2"])
    try:
        start_agent(app.port, r.server, extra=["--name", "renew", "--pool", "2"])
        end = time.monotonic() + 6
        while time.monotonic() < end:  # each a new public connection: a pool connection used, one opened
            with urllib_open(r.http_port, "renew.localhost") as resp:
                assert resp.status == 200
            time.sleep(0.2)
        m = harness.metrics(r)
        full = m['sluice_tls_events_total{event="handshake"}'] - m['sluice_tls_events_total{event="resumed"}']
        assert m['sluice_tls_events_total{event="handshake"}'] >= 20, m
        assert full == 1, m
    finally:
        r.stop()


def test_data_connections_still_resume_after_a_while_with_the_default_lifetime(binary, tmp_path, app, start_agent):
    """With tickets as long-lived as wolfSSL's ticket keys (3600 s), the
    handshakes failed (error 1) once tickets had been issued in a few
    different seconds, so a relay up for a few seconds refused every new
    data connection: the default stays below that. Here tickets are issued
    over 8 seconds."""
    r = harness.Relay(binary("sluice-relay"), tmp_path)
    try:
        start_agent(app.port, r.server, extra=["--name", "later", "--pool", "2"])
        for _ in range(8):  # each a new public connection, so a new data connection
            with urllib_open(r.http_port, "later.localhost") as resp:
                assert resp.status == 200
            time.sleep(1)
        m = harness.metrics(r)
        assert m['sluice_tls_events_total{event="handshake_failure"}'] == 0, m
        assert m['sluice_tls_events_total{event="resumed"}'] >= 8, m
    finally:
        r.stop()


def test_sni_chooses_the_certificate(https_relay):
    assert peer_cert_cn(https_relay.https_port, "app.example.com") == "app.example.com"
    assert peer_cert_cn(https_relay.https_port, "demo." + DOMAIN) == "localhost"


def test_sighup_reloads_certificates_and_keeps_old_ones_on_error(https_relay):
    pki = harness.pki()
    # The SNI certificate's files are swapped for the default one's: after
    # SIGHUP, app.example.com is served the new certificate.
    shutil.copy(pki["relay"][0], https_relay.certs / "app.example.com.crt")
    shutil.copy(pki["relay"][1], https_relay.certs / "app.example.com.key")
    assert peer_cert_cn(https_relay.https_port, "app.example.com") == "app.example.com"
    https_relay.proc.popen.send_signal(signal.SIGHUP)
    harness.wait_for(lambda: harness.metrics(https_relay)['sluice_tls_events_total{event="reload"}'] == 1,
                     what="reload")
    # Every worker reloads (a handshake may land on any of them).
    for _ in range(8):
        assert peer_cert_cn(https_relay.https_port, "app.example.com") == "localhost"
    # A broken file: the reload fails, says so, and the old certificates serve.
    (https_relay.certs / "app.example.com.crt").write_text("not a certificate\n")
    https_relay.proc.popen.send_signal(signal.SIGHUP)
    harness.wait_for(
        lambda: harness.metrics(https_relay)['sluice_tls_events_total{event="reload_failure"}'] == 1,
        what="reload failure")
    assert "certificate reload failed" in https_relay.proc.log()
    assert "app.example.com.crt: not a valid PEM file" in https_relay.proc.log()
    assert peer_cert_cn(https_relay.https_port, "app.example.com") == "localhost"
    assert harness.metrics(https_relay)['sluice_tls_events_total{event="reload"}'] == 1  # one per SIGHUP
    assert https_relay.proc.log().count("certificate reload failed") == 1
    assert https_relay.proc.alive()


def test_plain_http_on_the_https_port_gets_a_readable_answer(https_relay):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", https_relay.https_port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: demo.sluice.test\r\n\r\n")
        out = harness.read_to_close(s)
    assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), out
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(body) in head
    assert b"https://" in body
    assert time.monotonic() - t0 < 3  # closed after the page, not at a deadline
    assert https_relay.proc.alive()


def test_https_garbage_and_silent_clients_are_dropped(https_relay):
    before = harness.metrics(https_relay)['sluice_tls_events_total{event="handshake_failure"}']
    with socket.create_connection(("127.0.0.1", https_relay.https_port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01\x00\x05hello, not a ClientHello" * 4)  # a broken record
        while s.recv(4096):  # a TLS alert at most, then the close
            pass
    harness.wait_for(lambda: harness.metrics(https_relay)['sluice_tls_events_total{event="handshake_failure"}']
                     > before, what="handshake failure counted")
    # A client that never starts its handshake is closed at the head deadline.
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", https_relay.https_port), timeout=10) as s:
        assert s.recv(100) == b""
    assert time.monotonic() - t0 < 8
    assert https_relay.proc.alive()


def test_agent_refuses_a_relay_it_cannot_verify(relay, app, start_agent):
    # The system store does not know the test CA.
    a = start_agent(app.port, relay.server, tls=None, wait=False)
    ev = a.wait_event("error")
    assert "certificate verify failed" in ev["message"], ev
    assert "--ca FILE" in ev["message"]
    time.sleep(1)  # it retries, and never comes up
    assert not [e for e in a.events() if e["event"] == "ready"]
    assert a.proc.alive()


def test_agent_checks_the_relay_name(relay, app, start_agent):
    a = start_agent(app.port, relay.server, wait=False, extra=["--server-name", "other.example"])
    ev = a.wait_event("error")
    assert "name mismatch" in ev["message"], ev
    assert not [e for e in a.events() if e["event"] == "ready"]


def test_agent_insecure_skips_verification(relay, app, start_agent):
    a = start_agent(app.port, relay.server, tls=None, extra=["--insecure"])
    assert a.url
    assert "not verified" in a.proc.log()


def test_plaintext_and_tls_mismatches_say_what_to_do(binary, tmp_path, relay, app, start_agent):
    a = start_agent(app.port, relay.server, tls=False, wait=False)  # plaintext to a TLS relay
    ev = a.wait_event("error")
    assert "expects TLS" in ev["message"], ev
    plain = harness.Relay(binary("sluice-relay"), tmp_path, tls=False)
    try:
        b = start_agent(app.port, plain.server, wait=False)  # TLS to a plaintext relay
        ev = b.wait_event("error")
        assert "--transport tcp" in ev["message"], ev
        c = start_agent(app.port, plain.server, tls=False)
        assert c.url
    finally:
        plain.stop()


def test_relay_refuses_bad_tls_options(binary, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("junk\n")
    crt, key = harness.pki()["relay"]
    base = [binary("sluice-relay"), "--http", "127.0.0.1:%d" % harness.free_port(),
            "--agents", "127.0.0.1:%d" % harness.free_port(),
            "--admin", "127.0.0.1:%d" % harness.free_port()]
    for extra, msg in ((["--cert", str(bad), "--key", key], "not a valid PEM file"),
                       (["--cert", crt, "--key", str(tmp_path / "missing.key")], "No such file"),
                       (["--cert", crt], "--cert and --key go together"),
                       (["--https", "127.0.0.1:%d" % harness.free_port()], "--https needs --cert"),
                       (["--cert", crt, "--key", harness.pki()["other"][1]], "does not match")):
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=10)
        assert out.returncode != 0, extra
        assert msg in out.stderr, (extra, out.stderr)
