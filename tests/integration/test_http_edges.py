"""Issue 16 (B): HTTP edge cases the relay answers itself on its public port
(RFC 9112, RFC 9110), through a real relay on each engine, a real agent and
a real app where a request must get through."""
import json
import re
import socket
import ssl
import time

import pytest

import harness


def exchange(relay, data, timeout=5):
    """Send data to the relay's HTTP port; everything it answers until it
    closes, and how long that took."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", relay.http_port), timeout=timeout) as s:
        s.sendall(data)
        out = harness.read_to_close(s)
    return out, time.monotonic() - t0


def host_of(agent):
    return re.match(r"http://([^/:]+)", agent.url).group(1)


# ---- Host (RFC 9112 section 3.2) ----

def test_http11_without_host_is_400_not_a_routing_404(relay):
    out, _ = exchange(relay, b"GET /session/abcdefgh/ HTTP/1.1\r\nAccept: */*\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b"Host header" in out


def test_http10_without_host_is_still_routed(relay):
    """HTTP/1.0 has no Host requirement: such a request is routed by its
    path as before (here to nobody: 404)."""
    out, _ = exchange(relay, b"GET /session/abcdefgh/ HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 404 "), out[:200]


def test_two_host_headers_are_400(relay):
    out, _ = exchange(relay, b"GET / HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]


# ---- TLS spoken to the plain-HTTP port ----

def client_hello():
    """The first flight of a real TLS client (Python's ssl, OpenSSL): a
    ClientHello record, 0x16 0x03 ..."""
    ctx = ssl.create_default_context()
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg, server_hostname="demo.localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outg.read()
    assert hello[:2] == b"\x16\x03"
    return hello


def test_tls_client_hello_on_the_http_port_is_answered_at_once(relay):
    """Not a 408 after the head timeout (1 s here), nor a "malformed
    request" that happens to find an LF among the random bytes: a 400
    saying what the port is, then the close."""
    out, took = exchange(relay, client_hello())
    assert took < 0.5, took
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b"this is an HTTP port; use http://" in out


def test_tls_client_fails_fast_on_the_http_port(relay):
    """A real TLS client's handshake fails within a second, not at its
    timeout."""
    ctx = ssl.create_default_context()
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", relay.http_port), timeout=3) as s:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            ctx.wrap_socket(s, server_hostname="demo.localhost")
    assert time.monotonic() - t0 < 1.0


# ---- control characters in field values (RFC 9110 section 5.5) ----

@pytest.mark.parametrize("ctl", [b"\x00", b"\x01", b"\x0b", b"\x1b", b"\x1f", b"\x7f"],
                         ids=["nul", "soh", "vt", "esc", "us", "del"])
def test_control_character_in_a_header_value_is_400(relay, ctl):
    out, _ = exchange(relay, b"GET / HTTP/1.1\r\nHost: x.localhost\r\nX-Note: a" + ctl +
                      b"b\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]


def test_tab_and_obs_text_in_header_values_reach_the_app(relay, app, start_agent):
    a = start_agent(app.port, relay.server)
    req = (b"GET /echo HTTP/1.1\r\nHost: " + host_of(a).encode() +
           b"\r\nX-Tab: a\tb\r\nX-Latin: caf\xe9\r\nConnection: close\r\n\r\n")
    out, _ = exchange(relay, req)
    assert out.startswith(b"HTTP/1.1 200 "), out[:300]
    seen = json.loads(out.split(b"\r\n\r\n", 1)[1])["headers"]
    assert seen["X-Tab"] == "a\tb"
    assert seen["X-Latin"] == "caf\xe9"  # http.server reads header bytes as latin-1
