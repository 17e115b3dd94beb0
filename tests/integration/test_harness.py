"""The harness itself: each real server starts on a free loopback port and
answers, and every process is stopped even when the test using it fails."""
import os
import subprocess
import sys
import textwrap
import urllib.request

import harness


def test_redis_fixture_answers_ping(redis_server):
    assert redis_server.cli("PING") == "PONG"
    assert redis_server.cli("SET", "k", "v") == "OK"
    assert redis_server.cli("GET", "k") == "v"


def test_sshd_fixture_runs_a_command_with_strict_host_key_checking(sshd_server):
    r = sshd_server.ssh("echo hello-$((6*7))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello-42"


def test_sshd_fixture_refuses_a_wrong_host_key(sshd_server, tmp_path):
    # Prove the strict check is real: a known_hosts with another key fails.
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = (tmp_path / "other_key.pub").read_text().split()[:2]
    with open(sshd_server.known_hosts, "w") as f:
        f.write("[127.0.0.1]:%d %s %s\n" % (sshd_server.port, pub[0], pub[1]))
    r = sshd_server.ssh("true")
    assert r.returncode != 0
    assert "HOST IDENTIFICATION HAS CHANGED" in r.stderr or "Host key verification failed" in r.stderr


def test_haproxy_fixture_proxies_to_a_real_backend(tmp_path, http_backend):
    (http_backend.www / "hello.txt").write_text("through haproxy\n")
    front = harness.free_port()
    hp = harness.Haproxy(tmp_path, harness.haproxy_http_config(front, http_backend.port))
    try:
        harness.wait_for(lambda: harness.port_open(front), what="haproxy")
        body = urllib.request.urlopen("http://127.0.0.1:%d/hello.txt" % front, timeout=5).read()
        assert body == b"through haproxy\n"
    finally:
        hp.stop()
    assert not hp.proc.alive()


def test_servers_are_stopped_even_when_the_test_fails(tmp_path):
    """Run an inner pytest whose test starts Redis and then fails; afterwards
    that Redis must be gone."""
    pidfile = tmp_path / "inner.pid"
    inner = tmp_path / "test_inner.py"
    inner.write_text(textwrap.dedent("""
        def test_fails_while_redis_runs(redis_server):
            open(%r, "w").write(str(redis_server.proc.pid))
            assert redis_server.cli("PING") == "PONG"
            assert False, "deliberate failure"
    """ % str(pidfile)))
    conftest_dir = os.path.dirname(__file__)
    # The inner run reuses our fixtures: load our conftest under another name.
    (tmp_path / "conftest.py").write_text(textwrap.dedent("""
        import importlib.util, sys
        sys.path.insert(0, %r)
        spec = importlib.util.spec_from_file_location("sluice_fixtures", %r)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        globals().update({k: v for k, v in vars(mod).items() if not k.startswith("__")})
    """ % (conftest_dir, os.path.join(conftest_dir, "conftest.py"))))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(inner)],
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=conftest_dir))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "deliberate failure" in r.stdout
    pid = int(pidfile.read_text())
    assert not harness.pid_alive(pid), "redis %d outlived its failed test" % pid
