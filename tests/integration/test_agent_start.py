"""`sluice start NAME...|--all`: several tunnels of one agent config file
(issue 16, point 5), each with its own control connection and session,
against a real relay (and a real control plane and Redis for --api)."""
import json
import re
import signal
import socket
import subprocess
import urllib.request

import pytest

import apps
import harness
from test_sessions import stack, redis  # noqa: F401 (fixtures)


def write_config(tmp_path, top, tunnels):
    """A config file: the agent's own keys, then one [tunnel.NAME] each."""
    lines = ["%s = %s" % kv for kv in top.items()]
    for label, keys in tunnels.items():
        lines += ["", "[tunnel.%s]" % label] + ["%s = %s" % kv for kv in keys.items()]
    path = tmp_path / "agent.conf"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def start(binary, tmp_path, args, wait_ready=0):
    p = harness.Proc("agent-start-%d" % harness.free_port(),
                     [binary("sluice"), "start"] + args + ["--json", "--log-format", "text"],
                     tmp_path)
    if wait_ready:
        harness.wait_for(lambda: len(ready(p)) >= wait_ready or not p.alive(), timeout=15,
                         what="%d ready events" % wait_ready)
        assert len(ready(p)) >= wait_ready, p.log()
    return p


def events(p):
    return [json.loads(line) for line in p.log().splitlines() if line.startswith('{"event"')]


def ready(p):
    return {e["tunnel"]: e for e in events(p) if e["event"] == "ready"}


def http_get(relay, url, path="/echo"):
    host = re.match(r"http://([^/]+)/", url).group(1)
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (relay.http_port, path),
                                 headers={"Host": host})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.read()


def tcp_echo(url):
    port = int(re.match(r"tcp://localhost:(\d+)$", url).group(1))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        greeting = s.recv(100)
        s.sendall(b"ping\n")
        return greeting, s.recv(100)


def test_start_all_runs_every_tunnel_of_the_file(binary, tmp_path, relay, app):
    echo = apps.TcpEcho()
    try:
        conf = write_config(tmp_path, {"server": relay.server, "ca": harness.pki()["ca"]}, {
            "web": {"proto": "http", "port": app.port, "name": "webapp"},
            "my_db": {"proto": "tcp", "port": echo.port},
            "docs": {"proto": "http", "port": app.port, "name": "docs"},
        })
        p = start(binary, tmp_path, ["--all", "--config", conf], wait_ready=3)
        r = ready(p)
        assert sorted(r) == ["docs", "my_db", "web"]
        assert r["web"]["url"] == "http://webapp.localhost:%d/" % relay.http_port
        assert http_get(relay, r["web"]["url"])[0] == 200
        assert http_get(relay, r["docs"]["url"])[0] == 200
        assert tcp_echo(r["my_db"]["url"]) == (b"hello from tcp\n", b"ping\n")
        # One control connection per tunnel: the relay holds three.
        m = harness.metrics(relay)
        assert m["sluice_tunnels"] == 3, m
        # Every log line says whose it is.
        assert re.search(r"agent\[web\]: online at http://webapp", p.log()), p.log()
        p.signal(signal.SIGINT)
        assert p.popen.wait(10) == 0
        assert [e["tunnel"] for e in events(p) if e["event"] == "closed"].count("my_db") == 1
    finally:
        echo.stop()


def test_start_by_name_runs_only_those(binary, tmp_path, relay, app):
    conf = write_config(tmp_path, {"server": relay.server}, {
        "one": {"proto": "http", "port": app.port, "name": "first"},
        "two": {"proto": "http", "port": app.port, "name": "second"},
        "three": {"proto": "http", "port": app.port, "name": "third"},
    })
    p = start(binary, tmp_path, ["three", "one", "--config", conf, "--ca", harness.pki()["ca"]],
              wait_ready=2)
    assert sorted(ready(p)) == ["one", "three"]
    assert http_get(relay, ready(p)["three"]["url"])[0] == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        http_get(relay, "http://second.localhost:%d/" % relay.http_port)
    assert e.value.code == 404
    p.stop()


def test_a_tunnel_key_wins_over_the_agents_own(binary, tmp_path, relay, app):
    """local-host above the sections applies to every tunnel; a section's
    own value wins for that tunnel."""
    conf = write_config(tmp_path, {"server": relay.server, "local-host": "127.0.0.2"}, {
        "right": {"proto": "http", "port": app.port, "name": "right", "local-host": "127.0.0.1"},
        "wrong": {"proto": "http", "port": app.port, "name": "wrong"},
    })
    p = start(binary, tmp_path, ["--all", "--config", conf, "--ca", harness.pki()["ca"]],
              wait_ready=2)
    assert http_get(relay, ready(p)["right"]["url"])[0] == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        http_get(relay, ready(p)["wrong"]["url"])
    assert e.value.code == 502  # the app does not listen on 127.0.0.2
    p.stop()


@pytest.mark.parametrize("tunnels,args,msg", [
    ({"web": {"proto": "http", "port": 1}}, ["nope"],
     'no tunnel "nope" in the config file (%s has: web)'),
    ({"web": {"proto": "http", "port": 1}}, ["web", "web"], 'tunnel "web" named twice'),
    ({"web": {"proto": "http", "port": 1}}, ["web", "--all"], "tunnel names or --all, not both"),
    ({"web": {"proto": "http", "port": 1}}, [], "sluice start takes tunnel names or --all"),
    ({}, ["--all"], "no [tunnel.NAME] section at all"),
    ({"web": {"proto": "http"}}, ["--all"], "[tunnel.web] (from %s:3) needs port = PORT"),
    ({"web": {"port": 1}}, ["--all"], "[tunnel.web] (from %s:3) needs proto = http|tcp"),
    ({"web": {"proto": "ftp", "port": 1}}, ["--all"], '"ftp"'),
    ({"web": {"proto": "http", "port": 1, "pool": 3}}, ["--all"],
     "a tunnel takes proto, port, name, local-host"),
    ({"bad name": {"proto": "http", "port": 1}}, ["--all"],
     "expected a section header [name] of letters, digits, '-', '_' and '.' (from %s:3)"),
    ({"a.b": {"proto": "http", "port": 1}}, ["--all"], "unknown section [tunnel.a.b] (from %s:3)"),
])
def test_start_errors_name_the_file_and_exit_2(binary, tmp_path, tunnels, args, msg):
    conf = write_config(tmp_path, {"server": "127.0.0.1:1"}, tunnels)
    out = subprocess.run([binary("sluice"), "start"] + args + ["--config", conf],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2, out
    assert (msg % conf if "%s" in msg else msg) in out.stderr, out.stderr


def test_start_needs_a_config_file_and_http_refuses_all(binary):
    out = subprocess.run([binary("sluice"), "start", "--all"], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 2 and "start needs a config file" in out.stderr, out
    out = subprocess.run([binary("sluice"), "http", "3000", "--all"], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 2 and "--all goes with start" in out.stderr, out


def test_sections_are_refused_by_the_other_programs(binary, tmp_path):
    conf = tmp_path / "relay.conf"
    conf.write_text("workers = 1\n[tunnel.web]\nport = 1\n")
    out = subprocess.run([binary("sluice-relay"), "--config", str(conf), "--print-config"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 2, out
    assert "relay.conf:2" in out.stderr, out.stderr


def api_list(control, key, status):
    return [t["sessionId"] for t in
            control.api("GET", "/api/v1/tunnels?status=%s" % status, key=key)[2]["tunnels"]]


def test_start_with_the_api_one_session_each_released_at_exit(binary, tmp_path, stack, app):
    control, relay = stack
    k = control.new_key()["key"]
    conf = write_config(tmp_path, {"api": control.url, "api-key": k}, {
        "a": {"proto": "http", "port": app.port, "name": "alpha"},
        "b": {"proto": "http", "port": app.port, "name": "beta", "basic-auth": "u:p"},
    })
    p = start(binary, tmp_path, ["--all", "--config", conf, "--ca", harness.pki()["ca"]],
              wait_ready=2)
    r = ready(p)
    sids = sorted(e["session"] for e in r.values())
    assert sorted(api_list(control, k, "active")) == sids
    assert http_get(relay, r["a"]["url"])[0] == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        http_get(relay, r["b"]["url"])
    assert e.value.code == 401  # the section's basic-auth protects only beta
    p.signal(signal.SIGTERM)
    assert p.popen.wait(10) == 0
    assert api_list(control, k, "active") == []
    assert sorted(api_list(control, k, "deleted")) == sids
    for sid in sids:
        assert "session %s released" % sid in p.log()


def test_start_with_the_api_a_refused_tunnel_releases_the_others(binary, tmp_path, stack, app):
    """The second tunnel's name is another key's: start-up fails (exit 2,
    the API's reason), and the first tunnel's session, made already, is
    ended, not left to hold its name for an hour."""
    control, _ = stack
    other = control.new_key()["key"]
    assert control.api("POST", "/api/v1/tunnels", {"port": 3000, "subdomain": "held"},
                       key=other)[0] == 201
    k = control.new_key()["key"]
    conf = write_config(tmp_path, {"api": control.url, "api-key": k}, {
        "first": {"proto": "http", "port": app.port, "name": "free"},
        "second": {"proto": "http", "port": app.port, "name": "held"},
    })
    out = subprocess.run([binary("sluice"), "start", "--all", "--config", conf],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2, out
    assert "second: the API refused the session (409 subdomain_taken)" in out.stderr, out.stderr
    assert api_list(control, k, "active") == []
    assert len(api_list(control, k, "deleted")) == 1
