"""sluice-control against a real Redis: health tells the truth about Redis,
survives Redis dying and recovers, errors are JSON, shutdown is clean."""
import json
import os
import signal
import urllib.error
import urllib.request

import harness


def get(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def start_control(binary, procs, redis_url, extra=()):
    port = harness.free_port()
    # --dev: these tests are about the server itself, not about secrets;
    # --min-relays 0: no relay runs here, health is about Redis.
    p = procs.start("control", [binary("sluice-control"), "--listen", "127.0.0.1:%d" % port,
                                "--redis", redis_url, "--dev", "--min-relays", "0"] + list(extra))
    harness.wait_for(lambda: harness.port_open(port) or not p.alive(), what="sluice-control")
    assert p.alive(), p.log()
    return p, port


def test_health_reports_redis_ok(binary, procs, redis_server):
    _, port = start_control(binary, procs, redis_server.url)
    status, headers, body = get(port, "/api/v1/health")
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert body["status"] == "ok" and body["redis"]["ok"] is True
    assert body["redis"]["latencyMs"] >= 0


def test_health_survives_redis_death_and_recovers(binary, procs, redis_server):
    control, port = start_control(binary, procs, redis_server.url)
    assert get(port, "/api/v1/health")[0] == 200
    redis_server.proc.kill()
    status, _, body = get(port, "/api/v1/health")
    assert status == 503
    assert body["status"] == "degraded" and body["redis"]["ok"] is False
    # The open connection notices the close; a reconnect meets the refusal.
    assert any(w in body["redis"]["error"].lower() for w in ("closed", "refused"))
    assert control.alive()
    status, _, body = get(port, "/api/v1/health")
    assert status == 503 and any(w in body["redis"]["error"].lower() for w in ("closed", "refused"))
    redis_server.start()  # same port
    # Reconnects by itself (backoff at most 2 s).
    harness.wait_for(lambda: get(port, "/api/v1/health")[0] == 200, timeout=5, what="recovery")


def test_health_with_redis_password(binary, procs, tmp_path):
    r = harness.Redis(tmp_path, password="pw-123")
    try:
        _, port = start_control(binary, procs, r.url)
        assert get(port, "/api/v1/health")[0] == 200
        _, port2 = start_control(binary, procs, "redis://:wrong@127.0.0.1:%d" % r.port)
        status, _, body = get(port2, "/api/v1/health")
        assert status == 503
        assert "WRONGPASS" in body["redis"]["error"] or "invalid" in body["redis"]["error"]
    finally:
        r.stop()


def test_health_over_a_unix_socket_redis(binary, procs, tmp_path):
    sock = str(tmp_path / "r.sock")
    procs.start("redis-unix", ["redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
                               "--dir", str(tmp_path)])
    harness.wait_for(lambda: os.path.exists(sock), what="redis socket")
    _, port = start_control(binary, procs, "unix:" + sock)
    assert get(port, "/api/v1/health")[0] == 200


def test_unknown_path_and_wrong_method_are_json_errors(binary, procs, redis_server):
    _, port = start_control(binary, procs, redis_server.url)
    status, _, body = get(port, "/api/v1/nope")
    assert status == 404 and body == {"error": "no such endpoint", "code": "not_found"}
    status, _, body = get(port, "/api/v1/health", method="DELETE")
    assert status == 405 and body["code"] == "method_not_allowed"


def test_version_endpoint(binary, procs, redis_server):
    _, port = start_control(binary, procs, redis_server.url)
    status, _, body = get(port, "/api/v1/version")
    assert status == 200 and body["h2o"] == "2.2.5" and body["version"].startswith("0.")


def test_sigterm_stops_cleanly(binary, procs, redis_server):
    control, port = start_control(binary, procs, redis_server.url)
    control.signal(signal.SIGTERM)
    assert control.popen.wait(10) == 0
    assert "shutting down" in control.log()
    assert not harness.port_open(port)


def test_port_in_use_is_reported(binary, procs, redis_server):
    _, port = start_control(binary, procs, redis_server.url)
    p = procs.start("control2", [binary("sluice-control"), "--listen", "127.0.0.1:%d" % port,
                                 "--redis", redis_server.url, "--dev"])
    assert p.popen.wait(10) == 1
    assert "cannot listen on 127.0.0.1:%d: Address already in use" % port in p.log()


def test_host_and_port_from_the_environment(binary, procs, redis_server):
    port = harness.free_port()
    p = procs.start("control-env", [binary("sluice-control"), "--dev", "--min-relays", "0"],
                    env={"HOST": "127.0.0.1", "PORT": str(port), "REDIS_URL": redis_server.url})
    harness.wait_for(lambda: harness.port_open(port) or not p.alive(), what="sluice-control")
    assert get(port, "/health")[0] == 200
    assert "listening on http://127.0.0.1:%d" % port in p.log()
