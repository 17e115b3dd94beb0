"""pytest fixtures for sluice's integration tests (see harness.py)."""
import http.server
import os
import threading

import pytest

import harness


@pytest.fixture(scope="session")
def bin_dir():
    d = os.environ.get("SLUICE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "build", "bin"))
    d = os.path.abspath(d)
    for b in ("sluice", "sluice-relay", "sluice-control"):
        assert os.access(os.path.join(d, b), os.X_OK), "missing %s/%s: run make first" % (d, b)
    return d


@pytest.fixture
def binary(bin_dir):
    return lambda name: os.path.join(bin_dir, name)


@pytest.fixture
def procs(tmp_path):
    """Start helper: procs.start(name, argv, env=None) -> harness.Proc, stopped at teardown."""
    started = []

    class Starter:
        def start(self, name, argv, env=None):
            p = harness.Proc(name, argv, tmp_path, env=env)
            started.append(p)
            return p

    yield Starter()
    for p in started:
        p.stop()


@pytest.fixture
def redis_server(tmp_path):
    r = harness.Redis(tmp_path)
    yield r
    r.stop()


@pytest.fixture
def sshd_server(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("sshd needs root for privilege separation")
    s = harness.Sshd(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def http_backend(tmp_path):
    """A real HTTP/1.1 server (Python's http.server) serving tmp_path/www."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(www), **kw)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.www = www
    srv.port = srv.server_address[1]
    yield srv
    srv.shutdown()
    srv.server_close()


def pytest_sessionfinish(session, exitstatus):
    harness.stop_all()
