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


@pytest.fixture(autouse=True)
def stop_test_agents():
    """Agents (and localtunnel clients) a test started without a fixture stop
    with the test, not with the session: left running they would retry
    against relays that are gone."""
    before = {id(p) for p in harness._live}
    yield
    for p in list(harness._live):
        if id(p) not in before and p.name.startswith(("agent-", "lt-")):
            p.stop()


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


@pytest.fixture(params=["io_uring", "epoll"])
def relay(request, binary, tmp_path):
    """A relay on each engine: every tunnel test runs on both."""
    r = harness.Relay(binary("sluice-relay"), tmp_path, extra=["--engine", request.param])
    yield r
    r.stop()


@pytest.fixture
def app():
    import apps
    a = apps.HttpApp()
    yield a
    a.stop()


@pytest.fixture
def start_agent(binary, tmp_path):
    """start_agent(port, server, proto="http", extra=(), wait=True, tls=True) -> harness.Agent"""
    started = []

    def start(port, server, proto="http", extra=(), wait=True, tls=True):
        a = harness.Agent(binary("sluice"), tmp_path, port, server, proto, extra, wait, tls)
        started.append(a)
        return a
    yield start
    for a in started:
        a.stop()


NGINX_CONF = """worker_processes 1;
user root root;
daemon off;
error_log {dir}/nginx-error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{ listen 127.0.0.1:{port}; root {dir}/www; }}
}}
"""


@pytest.fixture
def nginx(tmp_path):
    """nginx serving tmp_path/www (100b and 64k files made here)."""
    www = tmp_path / "www"
    www.mkdir(exist_ok=True)
    (www / "100b").write_bytes(b"x" * 100)
    (www / "64k").write_bytes(bytes(range(256)) * 256)
    port = harness.free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=tmp_path, port=port))
    p = harness.Proc("nginx", ["nginx", "-c", str(conf), "-p", str(tmp_path)], tmp_path)
    harness.wait_for(lambda: harness.port_open(port), what="nginx")
    p.port = port
    p.www = www
    yield p
    p.stop()
