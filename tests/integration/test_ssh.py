"""The control plane's SSH executor (`sluice-control ssh ...`, libssh2 1.10)
against a real OpenSSH sshd on loopback, with a test user whose sudo asks for
a password. Each test proves one property of commands, transfers, the pool or
the troubleshooter."""
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid

import pytest

import harness

USER = "sluicetest"
SUDO_PW = "Sudo-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("sshd with a test user and sudo needs root")
    d = harness.Sshd(tmp_path_factory.mktemp("sshd"), user=USER, sudo_password=SUDO_PW)
    yield d
    d.stop()


def ssh_cli(binary, sshd, verb, *args, key=None, known_hosts=None, env=None, timeout=120):
    argv = [binary("sluice-control"), "ssh", verb, "%s@127.0.0.1:%d" % (sshd.user, sshd.port),
            "--key", key or sshd.key, "--known-hosts", known_hosts or sshd.known_hosts] + list(args)
    full = dict(os.environ)
    full.update(env or {})
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=full)
    harness.check_sanitizers("sluice-control", r.stderr)
    return r


def exec_json(binary, sshd, *cmd, flags=(), **kw):
    r = ssh_cli(binary, sshd, "exec", "--json", *flags, "--", *cmd, **kw)
    assert r.stdout, "exit %d, stderr: %s" % (r.returncode, r.stderr[-3000:])
    out = json.loads(r.stdout)
    return r, out


def remote_alive(marker):
    return subprocess.run(["pgrep", "-u", USER, "-f", marker], capture_output=True).returncode == 0


def test_command_output_exit_code_and_streaming(binary, sshd):
    r, out = exec_json(binary, sshd, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (out["exit"], out["exit_known"], out["signal"]) == (3, True, "")
    assert out["stdout"] == "out\n" and out["stderr"] == "err\n" and out["error"] is None
    assert r.returncode == 3
    # Without --json the lines go to our stdout and stderr, markers taken out.
    r = ssh_cli(binary, sshd, "exec", "--", "printf", "a\\nb\\nlast")
    assert r.returncode == 0 and r.stdout == "a\nb\nlast\n", r.stdout
    assert "\x1e" not in r.stdout + r.stderr


def test_arguments_are_quoted_and_env_and_cwd_apply(binary, sshd):
    tricky = "it's $HOME; `id` \"q\" \\ *"
    _, out = exec_json(binary, sshd, "printf", "%s", tricky)
    assert out["stdout"] == tricky
    _, out = exec_json(binary, sshd, "sh", "-c", 'echo "$GREETING|$PWD"',
                       flags=("--env", "GREETING=hello world", "--cwd", "/tmp"))
    assert out["stdout"] == "hello world|/tmp\n"


def test_killed_by_signal_is_reported(binary, sshd):
    _, out = exec_json(binary, sshd, "sh", "-c", "kill -KILL $$")
    assert out["signal"] == "KILL" and out["exit"] == 137


def test_timeout_kills_the_remote_process_group(binary, sshd):
    marker = "sleep 3%03d" % (os.getpid() % 1000)
    r, out = exec_json(binary, sshd, "sh", "-c", "%s & %s; echo never" % (marker, marker),
                       flags=("--timeout", "700"))
    assert out["error"]["kind"] == "timeout" and "never" not in out["stdout"]
    assert r.returncode == 255
    harness.wait_for(lambda: not remote_alive(marker), timeout=5, what="remote sleeps killed")


def test_a_command_ignoring_term_is_killed(binary, sshd):
    marker = "sleep 4%03d" % (os.getpid() % 1000)
    _, out = exec_json(binary, sshd, "sh", "-c", "trap '' TERM; %s" % marker,
                       flags=("--timeout", "500"))
    assert out["error"]["kind"] == "timeout"
    harness.wait_for(lambda: not remote_alive(marker), timeout=5, what="KILL after TERM")


def test_cancellation_kills_the_remote_process(binary, sshd):
    marker = "sleep 5%03d" % (os.getpid() % 1000)
    _, out = exec_json(binary, sshd, "sh", "-c", marker, flags=("--cancel-after", "400"))
    assert out["error"]["kind"] == "cancelled"
    harness.wait_for(lambda: not remote_alive(marker), timeout=5, what="cancelled command killed")


def test_sudo_with_password_and_the_password_in_no_log(binary, sshd, tmp_path):
    audit = str(tmp_path / "audit.log")
    env = {"SPW": SUDO_PW}
    r, out = exec_json(binary, sshd, "id", "-u", flags=("--sudo", "--sudo-password-env", "SPW",
                                                         "--audit-log", audit), env=env)
    assert out["exit"] == 0 and out["stdout"] == "0\n", out
    # Input reaches the command only after sudo took the password.
    _, out = exec_json(binary, sshd, "cat", flags=("--sudo", "--sudo-password-env", "SPW",
                                                   "--audit-log", audit), env=env)
    assert out["stdout"] == "" and out["exit"] == 0
    with open(audit) as f:
        lines = [json.loads(x) for x in f]
    assert [x["command"] for x in lines] == ["id -u", "cat"] and all(x["sudo"] for x in lines)
    for text in (open(audit).read(), r.stdout, r.stderr, sshd.proc.log()):
        assert SUDO_PW not in text


def test_sudo_wrong_or_missing_password_is_a_sudo_error(binary, sshd):
    _, out = exec_json(binary, sshd, "id", "-u", flags=("--sudo", "--sudo-password-env", "BAD"),
                       env={"BAD": "not-the-password"})
    assert out["error"]["kind"] == "sudo" and "refused the password" in out["error"]["message"]
    _, out = exec_json(binary, sshd, "id", "-u", flags=("--sudo",))
    assert out["error"]["kind"] == "sudo" and "wants a password" in out["error"]["message"]


def test_secret_environment_values_are_redacted_in_the_audit_log(binary, sshd, tmp_path):
    audit = str(tmp_path / "audit.log")
    _, out = exec_json(binary, sshd, "sh", "-c", 'echo "${API_TOKEN#tok}" tok-abc123',
                       flags=("--env", "API_TOKEN=tok-abc123", "--audit-log", audit))
    assert out["stdout"] == "-abc123 tok-abc123\n"
    text = open(audit).read()
    assert "tok-abc123" not in text and "***" in text and '"API_TOKEN"' in text


def test_changed_host_key_is_refused(binary, sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kh = tmp_path / "known_hosts"
    kh.write_text("[127.0.0.1]:%d %s\n" % (sshd.port, " ".join(open(str(other) + ".pub").read().split()[:2])))
    r, out = exec_json(binary, sshd, "true", known_hosts=str(kh))
    assert out["error"]["kind"] == "hostkey" and "changed" in out["error"]["message"]
    assert out["error"]["retryable"] is False and out["pool"]["connect_retries"] == 0
    assert r.returncode == 255


def test_unknown_host_refused_strictly_and_recorded_with_accept_new(binary, sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    _, out = exec_json(binary, sshd, "true", known_hosts=str(kh))
    assert out["error"]["kind"] == "hostkey" and "ssh-keyscan" in out["error"]["message"]
    _, out = exec_json(binary, sshd, "true", known_hosts=str(kh), flags=("--host-key-check", "accept-new"))
    assert out["exit"] == 0
    assert "[127.0.0.1]:%d ssh-ed25519 " % sshd.port in kh.read_text()
    _, out = exec_json(binary, sshd, "true", known_hosts=str(kh))  # now known: strict passes
    assert out["exit"] == 0


def test_wrong_key_fails_without_retries_and_network_failures_are_retried(binary, sshd, tmp_path):
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    _, out = exec_json(binary, sshd, "true", key=str(wrong))
    assert out["error"]["kind"] == "auth" and "refused key" in out["error"]["message"]
    assert out["pool"]["connect_retries"] == 0 and out["pool"]["connect_failures"] == 1
    closed = harness.free_port()
    r = subprocess.run([binary("sluice-control"), "ssh", "exec", "%s@127.0.0.1:%d" % (USER, closed),
                        "--key", sshd.key, "--known-hosts", sshd.known_hosts, "--json", "--", "true"],
                       capture_output=True, text=True, timeout=60)
    out = json.loads(r.stdout)
    assert out["error"]["kind"] == "network" and out["error"]["retryable"] is True
    assert out["pool"]["connect_retries"] == 2  # three attempts, backoff between


def test_sshd_killed_mid_command_gives_a_clear_error(binary, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = harness.Sshd(tmp_path, user=USER, sudo_password=SUDO_PW)
    try:
        argv = [binary("sluice-control"), "ssh", "exec", "%s@127.0.0.1:%d" % (USER, d.port),
                "--key", d.key, "--known-hosts", d.known_hosts, "--json", "--", "sh", "-c",
                "echo started; sleep 6%03d" % (os.getpid() % 1000)]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        harness.wait_for(lambda: remote_alive("sleep 6%03d" % (os.getpid() % 1000)), what="command running")
        d.proc.kill()  # the listener; each connection's sshd is in a session of its own:
        subprocess.run(["pkill", "-KILL", "-f", "sshd: %s" % USER])
        out, err = p.communicate(timeout=30)
        res = json.loads(out)
        assert res["error"]["kind"] == "protocol" and "lost" in res["error"]["message"]
        assert "may have run" in res["error"]["message"] and res["exit_known"] is False
        assert p.returncode == 255
        harness.check_sanitizers("sluice-control", err)
    finally:
        subprocess.run(["pkill", "-u", USER, "-f", "sleep 6%03d" % (os.getpid() % 1000)])
        d.stop()


def test_a_hundred_commands_in_parallel_on_one_pool(binary, sshd):
    _, out = exec_json(binary, sshd, "sh", "-c", "echo $$; sleep 0.1",
                       flags=("--repeat", "100", "--parallel", "100", "--max-conns", "4"))
    assert out["runs"] == 100 and out["failures"] == 0 and out["error"] is None
    assert 1 <= out["pool"]["connects"] <= 4


def test_pool_lowers_its_channel_cap_to_sshds_max_sessions(binary, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = harness.Sshd(tmp_path, user=USER, sudo_password=SUDO_PW, extra_config="MaxSessions 2\n")
    try:
        r = ssh_cli(binary, d, "exec", "--json", "--repeat", "40", "--parallel", "20",
                    "--max-conns", "2", "--max-channels", "8", "--", "sh", "-c", "sleep 0.05")
        out = json.loads(r.stdout)
        assert out["failures"] == 0, out
        assert out["pool"]["channel_refusals"] >= 1 and out["pool"]["max_channels"] <= 2
    finally:
        d.stop()


def test_scripts_run_by_sh_bash_and_python3(binary, sshd, tmp_path):
    py = tmp_path / "s.py"
    py.write_text("import sys\nprint('py', sys.argv[1:])\n")
    _, out = exec_json(binary, sshd, "a b", "c", flags=("--script", str(py), "--interp", "python3"))
    assert out["stdout"] == "py ['a b', 'c']\n"
    sh = tmp_path / "s.sh"
    sh.write_text('arr=(x y); echo "${#arr[@]} $1"\n')
    _, out = exec_json(binary, sshd, "arg1", flags=("--script", str(sh), "--interp", "bash"))
    assert out["stdout"] == "2 arg1\n"


def test_allow_and_deny_lists(binary, sshd, tmp_path):
    audit = str(tmp_path / "audit.log")
    r, out = exec_json(binary, sshd, "rm", "-rf", "/tmp/x", flags=("--deny", "rm *", "--audit-log", audit))
    assert out["error"]["kind"] == "policy" and r.returncode == 255
    _, out = exec_json(binary, sshd, "ls", flags=("--allow", "echo *,true"))
    assert out["error"]["kind"] == "policy"
    _, out = exec_json(binary, sshd, "echo", "ok", flags=("--allow", "echo *"))
    assert out["stdout"] == "ok\n"
    assert json.loads(open(audit).read())["error"] == "policy"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def home(*p):
    return os.path.join(os.path.expanduser("~" + USER), *p)


def test_64mib_upload_and_download_with_matching_checksums(binary, sshd, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        f.write(os.urandom(64 << 20))
    want = sha256(src)
    r = ssh_cli(binary, sshd, "put", str(src), home("big.bin"))
    res = json.loads(r.stdout)
    assert res["ok"] and res["sha256"] == want and res["bytes"] == 64 << 20 and res["changed"]
    assert sha256(home("big.bin")) == want and os.stat(home("big.bin")).st_mode & 0o777 == 0o644
    back = tmp_path / "back.bin"
    res = json.loads(ssh_cli(binary, sshd, "get", home("big.bin"), str(back)).stdout)
    assert res["ok"] and res["sha256"] == want and sha256(back) == want
    # The same file again: nothing is sent.
    res = json.loads(ssh_cli(binary, sshd, "put", str(src), home("big.bin")).stdout)
    assert res["ok"] and not res["changed"] and res["bytes"] == 0
    os.unlink(home("big.bin"))


def leftovers(directory):
    return [n for n in os.listdir(directory) if "sluice" in n]


def test_interrupted_upload_leaves_nothing_behind(binary, sshd, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        f.write(os.urandom(32 << 20))
    r = ssh_cli(binary, sshd, "put", str(src), home("half.bin"), "--cancel-after", str(8 << 20))
    res = json.loads(r.stdout)
    assert not res["ok"] and res["error"]["kind"] == "cancelled" and r.returncode == 1
    assert 0 < res["bytes"] < 32 << 20
    assert not os.path.exists(home("half.bin")) and leftovers(home()) == []
    # A download interrupted likewise leaves no local file.
    with open(src, "rb") as f, open(home("full.bin"), "wb") as out:
        out.write(f.read())
    r = ssh_cli(binary, sshd, "get", home("full.bin"), str(tmp_path / "got.bin"), "--cancel-after", str(4 << 20))
    assert not json.loads(r.stdout)["ok"]
    assert not os.path.exists(tmp_path / "got.bin") and leftovers(str(tmp_path)) == []
    os.unlink(home("full.bin"))


def test_upload_as_root_with_owner_and_mode_then_unchanged(binary, sshd, tmp_path):
    src = tmp_path / "conf"
    src.write_text("setting = 1\n")
    target = "/etc/sluice-ssh-test-%d.conf" % os.getpid()
    env = {"SPW": SUDO_PW}
    try:
        flags = ("--sudo", "--sudo-password-env", "SPW", "--owner", "root:root", "--mode", "640")
        res = json.loads(ssh_cli(binary, sshd, "put", str(src), target, *flags, env=env).stdout)
        assert res["ok"] and res["changed"], res
        st = os.stat(target)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 0, 0o640)
        assert open(target).read() == "setting = 1\n"
        res = json.loads(ssh_cli(binary, sshd, "put", str(src), target, *flags, env=env).stdout)
        assert res["ok"] and not res["changed"]
        assert [n for n in os.listdir("/tmp") if n.startswith(".sluice-put-")] == []
    finally:
        if os.path.exists(target):
            os.unlink(target)


def test_diagnose_healthy_host(binary, sshd):
    r = ssh_cli(binary, sshd, "diagnose", "--json")
    rep = json.loads(r.stdout)
    assert rep["ok"] and r.returncode == 0
    assert {c["name"] for c in rep["checks"]} >= {"network", "ssh", "algorithms", "hostkey", "auth", "performance"}
    assert rep["figures"]["command_p50_ms"] > 0 and rep["figures"]["banner"].startswith("SSH-2.0-OpenSSH")


def test_diagnose_closed_port(binary, sshd):
    r = subprocess.run([binary("sluice-control"), "ssh", "diagnose", "%s@127.0.0.1:%d" % (USER, harness.free_port()),
                        "--key", sshd.key, "--known-hosts", sshd.known_hosts],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "FAIL network" in r.stdout and "Connection refused" in r.stdout and "start sshd" in r.stdout


def test_diagnose_wrong_key(binary, sshd, tmp_path):
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    r = ssh_cli(binary, sshd, "diagnose", key=str(wrong))
    assert r.returncode == 1
    assert "FAIL auth" in r.stdout and "refused key" in r.stdout and "authorized_keys" in r.stdout


def test_diagnose_incompatible_cipher_list(binary, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = harness.Sshd(tmp_path, user=USER, sudo_password=SUDO_PW,
                     extra_config="Ciphers chacha20-poly1305@openssh.com\n")
    try:
        r = ssh_cli(binary, d, "diagnose")
        assert r.returncode == 1
        assert "the server offers only chacha20-poly1305@openssh.com" in r.stdout
        assert "add aes128-ctr to Ciphers" in r.stdout
        _, out = exec_json(binary, d, "true")
        assert out["error"]["kind"] == "algorithm"
    finally:
        d.stop()


def test_bad_configuration_is_refused_before_connecting(binary, sshd, tmp_path):
    r = ssh_cli(binary, sshd, "exec", "--", "true", key=str(tmp_path / "missing"))
    assert r.returncode == 2 and "missing" in r.stderr
    loose = tmp_path / "loose"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(loose)], check=True)
    os.chmod(loose, 0o644)
    r = ssh_cli(binary, sshd, "exec", "--", "true", key=str(loose))
    assert r.returncode == 2 and "chmod 600" in r.stderr


def test_directory_sync_sends_only_what_changed(binary, sshd, tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "a.txt").write_text("a\n")
    (src / "sub" / "b.txt").write_text("b\n")
    (src / "sub" / "deep" / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(src / "sub" / "deep" / "run.sh", 0o755)
    dst = home("sync-%d" % os.getpid())

    def sync():
        r = ssh_cli(binary, sshd, "sync", str(src), dst)
        return json.loads(r.stdout)

    try:
        res = sync()
        assert res["ok"] and (res["files"], res["changed"]) == (3, 3), res
        assert open(os.path.join(dst, "sub", "b.txt")).read() == "b\n"
        assert os.stat(os.path.join(dst, "sub", "deep", "run.sh")).st_mode & 0o777 == 0o755
        res = sync()
        assert (res["files"], res["changed"], res["bytes"]) == (3, 0, 0)
        (src / "a.txt").write_text("changed\n")
        os.chmod(src / "sub" / "b.txt", 0o600)
        res = sync()
        assert (res["files"], res["changed"]) == (3, 2)
        assert open(os.path.join(dst, "a.txt")).read() == "changed\n"
        assert os.stat(os.path.join(dst, "sub", "b.txt")).st_mode & 0o777 == 0o600
        assert leftovers(dst) == [] and leftovers(os.path.join(dst, "sub")) == []
    finally:
        subprocess.run(["rm", "-rf", dst])


def test_create_remote_file_from_memory(binary, sshd):
    target = home("mem-%d.txt" % os.getpid())
    argv = [binary("sluice-control"), "ssh", "put", "%s@127.0.0.1:%d" % (USER, sshd.port), "-", target,
            "--key", sshd.key, "--known-hosts", sshd.known_hosts, "--mode", "600"]
    try:
        for changed in (True, False):
            r = subprocess.run(argv, input="from memory\n", capture_output=True, text=True, timeout=60)
            res = json.loads(r.stdout)
            assert res["ok"] and res["changed"] is changed
            assert res["sha256"] == hashlib.sha256(b"from memory\n").hexdigest()
        assert open(target).read() == "from memory\n" and os.stat(target).st_mode & 0o777 == 0o600
    finally:
        if os.path.exists(target):
            os.unlink(target)


def test_health_probes_each_connection_and_recovers_dead_ones(binary, tmp_path):
    """Connections whose sshd died in silence are found by the probes,
    dropped, and a fresh connection proves the host answers again."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = harness.Sshd(tmp_path, user=USER, sudo_password=SUDO_PW)
    try:
        argv = [binary("sluice-control"), "ssh", "health", "%s@127.0.0.1:%d" % (USER, d.port),
                "--key", d.key, "--known-hosts", d.known_hosts, "--watch", "4", "--interval", "400",
                "--warm", "3"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = json.loads(p.stdout.readline())
        assert first["ok"] and len(first["connections"]) == 3
        assert all(c["ok"] and c["cmd_ms"] > 0 and c["open_ms"] > 0 for c in first["connections"])
        subprocess.run(["pkill", "-KILL", "-f", "^sshd: %s" % USER])
        out, err = p.communicate(timeout=60)
        reports = [json.loads(x) for x in out.splitlines()]
        broken = [r for r in reports if any(not c["ok"] for c in r["connections"])]
        assert broken, reports
        assert broken[0]["dropped"] >= 1 and broken[0]["reconnected"] and broken[0]["ok"]
        assert reports[-1]["ok"] and all(c["ok"] for c in reports[-1]["connections"])
        assert reports[-1]["figures"]["samples"] > 3 and reports[-1]["figures"]["failure_rate"] > 0
        assert p.returncode == 0
        harness.check_sanitizers("sluice-control", err)
    finally:
        d.stop()


def test_health_reports_a_host_that_is_gone(binary, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = harness.Sshd(tmp_path, user=USER, sudo_password=SUDO_PW)
    argv = [binary("sluice-control"), "ssh", "health", "%s@127.0.0.1:%d" % (USER, d.port),
            "--key", d.key, "--known-hosts", d.known_hosts, "--watch", "3", "--interval", "300"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert json.loads(p.stdout.readline())["ok"]
    d.stop()
    subprocess.run(["pkill", "-KILL", "-f", "^sshd: %s" % USER])
    out, _ = p.communicate(timeout=60)
    last = json.loads(out.splitlines()[-1])
    assert not last["ok"] and "connect" in last["error"] and p.returncode == 1


def test_hashed_known_hosts_entries_are_understood(binary, sshd, tmp_path):
    kh = tmp_path / "known_hosts"
    kh.write_text(open(sshd.known_hosts).read())
    subprocess.run(["ssh-keygen", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert "|1|" in kh.read_text() and "127.0.0.1" not in kh.read_text()
    _, out = exec_json(binary, sshd, "true", known_hosts=str(kh))
    assert out["exit"] == 0 and out["error"] is None


def test_keys_from_ssh_agent(binary, sshd, tmp_path):
    sock = str(tmp_path / "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL)
    try:
        harness.wait_for(lambda: os.path.exists(sock), what="ssh-agent")
        env = dict(os.environ, SSH_AUTH_SOCK=sock)
        subprocess.run(["ssh-add", sshd.key], env=env, check=True, capture_output=True)
        r = subprocess.run([binary("sluice-control"), "ssh", "exec", "%s@127.0.0.1:%d" % (USER, sshd.port),
                            "--agent", "--known-hosts", sshd.known_hosts, "--json", "--", "echo", "via agent"],
                           capture_output=True, text=True, env=env, timeout=60)
        out = json.loads(r.stdout)
        assert out["stdout"] == "via agent\n" and out["exit"] == 0
    finally:
        agent.terminate()
        agent.wait()


def test_password_authentication(binary, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = harness.Sshd(tmp_path, user=USER, sudo_password=SUDO_PW, extra_config="PasswordAuthentication yes\n")
    try:
        argv = [binary("sluice-control"), "ssh", "exec", "%s@127.0.0.1:%d" % (USER, d.port),
                "--password-env", "PW", "--known-hosts", d.known_hosts, "--json", "--", "whoami"]
        out = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                        env=dict(os.environ, PW=SUDO_PW)).stdout)
        assert out["stdout"] == USER + "\n"
        out = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=60,
                                        env=dict(os.environ, PW="wrong")).stdout)
        assert out["error"]["kind"] == "auth" and "refused the password" in out["error"]["message"]
    finally:
        d.stop()


def test_sudo_without_a_password(binary, tmp_path):
    """NOPASSWD sudo: no password given, none asked, input reaches the command."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    d = harness.Sshd(tmp_path, user="sluicenopw", sudo_nopasswd=True)
    try:
        _, out = exec_json(binary, d, "id", "-u", flags=("--sudo",))
        assert out["stdout"] == "0\n" and out["error"] is None
        script = tmp_path / "s.sh"
        script.write_text("id -u\n")
        _, out = exec_json(binary, d, flags=("--sudo", "--script", str(script)))
        assert out["stdout"] == "0\n"
    finally:
        d.stop()


def test_upload_cut_by_a_lost_connection_leaves_nothing(binary, sshd, tmp_path):
    src = tmp_path / "big.bin"
    with open(src, "wb") as f:
        for _ in range(16):
            f.write(os.urandom(16 << 20))
    target = home("cut.bin")
    p = subprocess.Popen([binary("sluice-control"), "ssh", "put", "%s@127.0.0.1:%d" % (USER, sshd.port),
                          str(src), target, "--key", sshd.key, "--known-hosts", sshd.known_hosts],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    harness.wait_for(lambda: any(n.startswith(".cut.bin.sluice-") for n in os.listdir(home())),
                     timeout=20, what="the upload's temporary file")
    subprocess.run(["pkill", "-KILL", "-f", "^sshd: %s" % USER])
    out, err = p.communicate(timeout=60)
    res = json.loads(out)
    assert not res["ok"] and "lost" in res["error"]["message"], res
    assert not os.path.exists(target)
    # The temporary file went too: removed over a new connection.
    assert leftovers(home()) == [], (leftovers(home()), res, err)
    harness.check_sanitizers("sluice-control", err)
