"""The three binaries' shared command line: --help and --version first,
configuration precedence through the real binaries, clear errors, logs."""
import json
import os
import pty
import re
import subprocess

import pytest

import harness

BINARIES = ["sluice", "sluice-relay", "sluice-control"]


def run(argv, env=None, **kw):
    full = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    full.update(env or {})
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=full, **kw)
    harness.check_sanitizers(os.path.basename(argv[0]), r.stderr)
    return r


@pytest.mark.parametrize("name", BINARIES)
def test_each_binary_answers_help_and_version(binary, name):
    h = run([binary(name), "--help"])
    assert h.returncode == 0 and h.stdout.startswith(name + " 0."), h.stdout
    assert "--log-level" in h.stdout and "[env: SLUICE_LOG_LEVEL or LOG_LEVEL]" in h.stdout
    v = run([binary(name), "--version"])
    assert v.returncode == 0
    assert re.match(r"^%s \d+\.\d+\.\d+ \(git [0-9a-z-]+\)\n" % re.escape(name), v.stdout), v.stdout


@pytest.mark.parametrize("name", BINARIES)
def test_help_is_answered_even_next_to_bad_options(binary, name):
    r = run([binary(name), "--no-such-option", "-h"], env={"SLUICE_LOG_LEVEL": "loud"})
    assert r.returncode == 0 and "Usage:" in r.stdout


@pytest.mark.parametrize("name", BINARIES)
def test_unknown_option_is_a_usage_error(binary, name):
    r = run([binary(name), "--wrokers=4"])
    assert r.returncode == 2
    assert r.stderr == "%s: unknown option --wrokers (see --help)\n" % name


def test_precedence_flag_over_env_over_file_over_default(binary, tmp_path):
    conf = tmp_path / "relay.conf"
    conf.write_text("# relay\nworkers = 3\ndomain = file.example\nengine = epoll\n")
    r = run([binary("sluice-relay"), "--config", str(conf), "--workers", "5", "--print-config"],
            env={"SLUICE_WORKERS": "4", "SLUICE_DOMAIN": "env.example"})
    assert r.returncode == 0, r.stderr
    lines = dict(l.split(" = ", 1) for l in r.stdout.splitlines() if " = " in l)
    assert lines["workers"] == "5  # flag"
    assert lines["domain"] == "env.example  # env"
    assert lines["engine"] == "epoll  # file"
    assert lines["http"] == "127.0.0.1:8080  # default"


def test_conventional_environment_names(binary):
    """REDIS_URL, PORT, HOST, MAX_SESSIONS, SESSION_TIMEOUT, CORS_ORIGINS and
    LOG_LEVEL are read when the SLUICE_ variable is not set; it wins when it is."""
    env = {"REDIS_URL": "redis://10.1.2.3:6400", "PORT": "8123", "HOST": "127.0.0.2",
           "MAX_SESSIONS": "77", "SESSION_TIMEOUT": "120", "CORS_ORIGINS": "https://a.example",
           "LOG_LEVEL": "warn", "SESSION_SECRET_KEY": "x" * 40}
    r = run([binary("sluice-control"), "--print-config"], env=env)
    assert r.returncode == 0, r.stderr
    lines = dict(l.split(" = ", 1) for l in r.stdout.splitlines() if " = " in l)
    assert lines["redis"] == "redis://10.1.2.3:6400  # env"
    assert lines["port"] == "8123  # env" and lines["host"] == "127.0.0.2  # env"
    assert lines["max-sessions"] == "77  # env" and lines["session-timeout"] == "120  # env"
    assert lines["cors-origins"] == "https://a.example  # env"
    assert lines["log-level"] == "warn  # env"
    assert lines["session-secret"].startswith('"<redacted>"')
    r = run([binary("sluice-control"), "--print-config"],
            env=dict(env, SLUICE_REDIS="redis://10.9.9.9:1"))
    assert "redis = redis://10.9.9.9:1  # env" in r.stdout
    r = run([binary("sluice-control"), "--print-config"], env=dict(env, PORT="99999"))
    assert r.returncode == 2 and "PORT" in r.stderr


def test_config_file_from_environment_variable(binary, tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("listen = 127.0.0.1:8111\n")
    r = run([binary("sluice-control"), "--print-config"], env={"SLUICE_CONFIG": str(conf)})
    assert "listen = 127.0.0.1:8111  # file" in r.stdout


def test_bad_value_in_file_names_key_value_and_line(binary, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("domain = ok\n\nworkers = lots\n")
    r = run([binary("sluice-relay"), "--config", str(conf)])
    assert r.returncode == 2
    assert r.stderr == ('sluice-relay: invalid value "lots" for workers (from %s:3): '
                        "expected an integer in 0..256\n" % conf)


def test_bad_value_in_environment_names_the_variable(binary):
    r = run([binary("sluice-control"), "--print-config"], env={"SLUICE_REDIS": "http://x"})
    assert r.returncode == 2
    assert 'invalid value "http://x" for redis (from SLUICE_REDIS)' in r.stderr


def test_missing_config_file_is_a_clear_error(binary, tmp_path):
    r = run([binary("sluice"), "http", "3000", "--config", str(tmp_path / "nope.conf")])
    assert r.returncode == 2
    assert "cannot read config file %s: No such file or directory" % (tmp_path / "nope.conf") in r.stderr


def test_print_config_redacts_secrets(binary):
    r = run([binary("sluice"), "--token", "tok-s3cret", "--print-config"],
            env={"SLUICE_API_KEY": "key-s3cret"})
    assert r.returncode == 0
    assert "s3cret" not in r.stdout
    assert 'token = "<redacted>"  # flag' in r.stdout
    assert 'api-key = "<redacted>"  # env' in r.stdout


@pytest.fixture
def taken_port():
    """A loopback port held open, so a relay told to listen there fails at once."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


def relay_argv(binary, port):
    free = [str(harness.free_port()) for _ in range(2)]
    return [binary("sluice-relay"), "--http", "127.0.0.1:%d" % port,
            "--agents", "127.0.0.1:" + free[0], "--admin", "127.0.0.1:" + free[1]]


def test_logs_are_json_lines_off_a_terminal(binary, taken_port):
    r = run(relay_argv(binary, taken_port))
    assert r.returncode == 1
    events = [json.loads(l) for l in r.stderr.splitlines()]
    # two warnings (no --tokens, no --cert: development only), then the error
    assert [e["level"] for e in events] == ["warn", "warn", "error"]
    assert events[-1]["component"] == "relay"
    assert events[-1]["msg"] == "cannot listen on 127.0.0.1:%d: Address already in use" % taken_port
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", events[-1]["ts"])


def test_logs_are_text_on_a_terminal(binary, taken_port):
    argv = relay_argv(binary, taken_port)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(argv[0], argv)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert re.search(rb"^\d\d:\d\d:\d\d\.\d{3}Z error relay: cannot listen on", out, re.M), out


def test_log_level_filters(binary, taken_port):
    r = run(relay_argv(binary, taken_port) + ["--log-level", "error", "--log-format", "text"])
    assert " error relay: cannot listen" in r.stderr
    assert " warn " not in r.stderr
    r = run(relay_argv(binary, taken_port) + ["--log-format", "json"], env={"SLUICE_LOG_LEVEL": "warn"})
    assert r.stderr.startswith("{") and '"level":"warn"' in r.stderr


@pytest.mark.parametrize("args,msg", [
    ([], "expected a command: sluice http PORT, sluice tcp PORT or sluice start NAME...|--all"),
    (["ftp", "21"], "expected a command"),
    (["http", "0"], 'invalid port "0": expected 1..65535'),
    (["http", "80x"], 'invalid port "80x"'),
])
def test_agent_command_errors(binary, args, msg):
    r = run([binary("sluice")] + args)
    assert r.returncode == 2
    assert msg in r.stderr
