"""deploy/install-deps.sh: idempotent, and without root it prints the exact
command instead of failing obscurely."""
import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "deploy", "install-deps.sh")


def test_check_passes_when_everything_is_installed():
    r = subprocess.run(["sh", SCRIPT, "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_second_run_installs_nothing():
    r = subprocess.run(["sh", SCRIPT], capture_output=True, text=True)
    assert r.returncode == 0
    assert "all" in r.stdout and "packages present" in r.stdout
    assert "installing" not in r.stdout


def test_non_root_with_a_missing_package_prints_the_command():
    if os.geteuid() != 0:
        cmd = ["sh", SCRIPT]
    else:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", SCRIPT]
    env = dict(os.environ, SLUICE_DEPS_EXTRA="sluice-no-such-package")
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert r.returncode == 1
    assert "missing packages: sluice-no-such-package" in r.stderr
    assert ("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "--no-install-recommends sluice-no-such-package") in r.stderr
