"""Custom domains (issue 4): a key registers a domain, proves it with a DNS
TXT record (asked of a real DNS server on loopback) or an HTTP challenge
served through the tunnel, and its sessions are then reached at that
domain, over HTTPS too with the domain's own certificate files."""
import os
import shutil
import subprocess
import urllib.request

import pytest

import apps
import harness


@pytest.fixture
def dstack(binary, tmp_path):
    """Redis, a DNS server, a relay (HTTPS, certificates by SNI from
    --cert-dir) and a control plane asking that DNS server, whose HTTP
    challenges connect to the relay (as the domain's DNS would send them)."""
    redis = harness.Redis(tmp_path)
    dns = apps.DnsTxtServer()
    pki = harness.pki()
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copy(pki["other"][0], certs / "app.example.com.crt")
    shutil.copy(pki["other"][1], certs / "app.example.com.key")
    https = harness.free_port()
    relay = harness.session_relay(binary("sluice-relay"), tmp_path, redis.url,
                                  extra=["--https", "127.0.0.1:%d" % https,
                                         "--cert-dir", str(certs)])
    relay.https_port = https
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url, relay=relay.server,
                              public_url="http://localhost:%d" % relay.http_port,
                              extra=["--dns-server", "127.0.0.1:%d" % dns.port,
                                     "--challenge-connect", "127.0.0.1:%d" % relay.http_port])
    app = apps.HttpApp(tag="custom")
    app.srv.challenges = set()
    yield control, relay, dns, app
    app.stop()
    control.stop()
    relay.stop()
    dns.stop()
    redis.stop()


def host_get(relay, host, path="/"):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", relay.http_port, timeout=5)
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    out = r.status, r.read()
    c.close()
    return out


def test_register_rules(dstack):
    control, _, _, _ = dstack
    k = control.new_key()["key"]
    status, _, d = control.api("POST", "/api/v1/domains", {"domain": "app.example.com"}, key=k)
    assert status == 201 and d["status"] == "pending"
    v = d["verification"]
    assert v["dns"] == {"name": "_sluice-challenge.app.example.com", "type": "TXT",
                        "value": v["http"]["body"]}
    assert v["http"]["url"] == ("http://app.example.com/.well-known/sluice-challenge/"
                                + v["http"]["body"])
    # The same key again: the same record; another key: taken.
    status, _, again = control.api("POST", "/api/v1/domains", {"domain": "app.example.com"},
                                   key=k)
    assert status == 200 and again["verification"] == v
    other = control.new_key()["key"]
    status, _, body = control.api("POST", "/api/v1/domains", {"domain": "app.example.com"},
                                  key=other)
    assert status == 409 and body["code"] == "domain_taken"
    assert control.api("GET", "/api/v1/domains/app.example.com", key=other)[0] == 404
    for bad in ("localhost", "x.localhost", "UPPER.example.com", "a..b", "-a.com", "a" * 300):
        status, _, body = control.api("POST", "/api/v1/domains", {"domain": bad}, key=k)
        assert status == 400, (bad, body)
    assert control.api("POST", "/api/v1/domains", {"name": "x.com"}, key=k)[0] == 400
    listed = control.api("GET", "/api/v1/domains", key=k)[2]["domains"]
    assert [x["domain"] for x in listed] == ["app.example.com"]
    assert control.api("GET", "/api/v1/domains", key=other)[2]["domains"] == []
    assert control.api("GET", "/api/v1/domains")[2]["domains"][0]["domain"] == "app.example.com"
    # A session may not name a domain that is not its key's.
    status, _, body = control.api("POST", "/api/v1/tunnels",
                                  {"port": 3000, "customDomain": "app.example.com"}, key=other)
    assert status == 409 and body["code"] == "domain_not_registered"


def test_dns_challenge_then_traffic_and_https(binary, tmp_path, dstack):
    control, relay, dns, app = dstack
    k = control.new_key()["key"]
    d = control.api("POST", "/api/v1/domains", {"domain": "app.example.com"}, key=k)[2]
    token = d["verification"]["dns"]["value"]
    path = "/api/v1/domains/app.example.com/verify"
    status, _, body = control.api("POST", path, {"method": "dns"}, key=k)
    assert status == 422 and body["code"] == "verification_failed"
    assert "no TXT record at _sluice-challenge.app.example.com" in body["error"]
    dns.txt["_sluice-challenge.app.example.com"] = ["something-else"]
    status, _, body = control.api("POST", path, {"method": "dns"}, key=k)
    assert status == 422 and "does not hold the token" in body["error"]
    dns.txt["_sluice-challenge.app.example.com"] = ["other", token]
    status, _, body = control.api("POST", path, {"method": "dns"}, key=k)
    assert status == 200 and body["status"] == "verified", body
    assert control.api("GET", "/api/v1/domains/app.example.com", key=k)[2]["status"] == "verified"
    assert control.api("POST", path, {"method": "carrier-pigeon"}, key=k)[0] == 400

    status, _, s = control.api("POST", "/api/v1/tunnels",
                               {"port": app.port, "customDomain": "app.example.com"}, key=k)
    assert status == 201, s
    g = control.api("GET", "/api/v1/tunnels/" + s["sessionId"], key=k)[2]
    assert g["customDomain"] == {"domain": "app.example.com", "verified": True,
                                 "url": "http://app.example.com/"}
    harness.Agent(binary("sluice"), tmp_path, app.port, relay.server,
                  extra=["--token", s["agentToken"]])
    status, body = host_get(relay, "app.example.com", "/hi")
    assert status == 200 and b'"app": "custom"' in body
    assert host_get(relay, "APP.example.COM", "/hi")[0] == 200
    # HTTPS with the domain's own certificate, chosen by SNI from --cert-dir.
    out = subprocess.run(["curl", "-sS", "--cacert", harness.pki()["ca"], "--resolve",
                          "app.example.com:%d:127.0.0.1" % relay.https_port,
                          "https://app.example.com:%d/tls" % relay.https_port],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 0 and '"path": "/tls"' in out.stdout, out.stderr
    # Deleting the domain takes it from its sessions at every relay.
    assert control.api("DELETE", "/api/v1/domains/app.example.com", key=k)[0] == 200
    harness.wait_for(lambda: host_get(relay, "app.example.com")[0] == 404, timeout=3,
                     what="domain unrouted")
    g = control.api("GET", "/api/v1/tunnels/" + s["sessionId"], key=k)[2]
    assert "customDomain" not in g and g["status"] == "active"


def test_custom_domain_of_a_session_without_agent_is_offline(dstack):
    """Issue 16: a verified custom domain whose session has no agent gets
    the offline 502 naming the session's tunnel; a pending one still says
    only that it is not verified."""
    control, relay, dns, _ = dstack
    k = control.new_key()["key"]
    d = control.api("POST", "/api/v1/domains", {"domain": "app.example.com"}, key=k)[2]
    dns.txt["_sluice-challenge.app.example.com"] = [d["verification"]["dns"]["value"]]
    assert control.api("POST", "/api/v1/domains/app.example.com/verify", {"method": "dns"},
                       key=k)[0] == 200
    control.api("POST", "/api/v1/domains", {"domain": "web.example.org"}, key=k)
    for dom, name in (("app.example.com", "away"), ("web.example.org", "pending")):
        status, _, s = control.api("POST", "/api/v1/tunnels",
                                   {"port": 3000, "subdomain": name, "customDomain": dom}, key=k)
        assert status == 201, s
    harness.wait_metrics(relay, lambda m: m.get("sluice_state_sessions", 0) >= 2,
                         "sessions followed")
    status, body = host_get(relay, "app.example.com", "/x")
    assert status == 502 and b"tunnel away is offline: its agent is not connected" in body
    status, body = host_get(relay, "web.example.org", "/x")
    assert status == 403 and b"not verified" in body


def test_http_challenge_served_through_the_tunnel(binary, tmp_path, dstack):
    control, relay, _, app = dstack
    k = control.new_key()["key"]
    d = control.api("POST", "/api/v1/domains", {"domain": "web.example.org"}, key=k)[2]
    token = d["verification"]["http"]["body"]
    # A session may name its pending domain: relays route the challenge only.
    s = control.api("POST", "/api/v1/tunnels",
                    {"port": app.port, "customDomain": "web.example.org"}, key=k)[2]
    harness.Agent(binary("sluice"), tmp_path, app.port, relay.server,
                  extra=["--token", s["agentToken"]])
    status, body = host_get(relay, "web.example.org", "/")
    assert status == 403 and b"not verified" in body
    path = "/api/v1/domains/web.example.org/verify"
    status, _, body = control.api("POST", path, {"method": "http"}, key=k)
    assert status == 422 and "answered 404" in body["error"]  # the app does not serve it yet
    app.srv.challenges.add(token)
    assert host_get(relay, "web.example.org",
                    "/.well-known/sluice-challenge/" + token) == (200, token.encode())
    status, _, body = control.api("POST", path, {"method": "http"}, key=k)
    assert status == 200 and body["status"] == "verified", body
    # The session's record was rewritten: every path is served now.
    harness.wait_for(lambda: host_get(relay, "web.example.org", "/")[0] == 200, timeout=3,
                     what="verified domain routed")


def test_unreachable_challenges_fail_clearly(binary, tmp_path):
    redis = harness.Redis(tmp_path)
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url,
                              extra=["--dns-server", "127.0.0.1:%d" % harness.free_port(),
                                     "--challenge-connect", "127.0.0.1:%d" % harness.free_port()])
    try:
        control.api("POST", "/api/v1/domains", {"domain": "gone.example.net"})
        status, _, body = control.api("POST", "/api/v1/domains/gone.example.net/verify",
                                      {"method": "http"})
        assert status == 422 and "cannot connect" in body["error"]
        status, _, body = control.api("POST", "/api/v1/domains/gone.example.net/verify",
                                      {"method": "dns"})
        assert status == 422 and "no TXT record" in body["error"]
        assert control.proc.alive()
    finally:
        control.stop()
        redis.stop()
