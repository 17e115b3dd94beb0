"""deploy/install-deps.sh: idempotent, without root it prints the exact
command instead of failing obscurely, and each make goal's group holds what
that goal needs and no more."""
import os
import subprocess

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(ROOT, "deploy", "install-deps.sh")
# What `make test` has checked before these tests run (the benchmarks',
# fuzzers' and style tools' groups are their own goals' business).
TEST_GROUPS = ["build", "unit", "integration"]


def test_check_passes_when_everything_is_installed():
    r = subprocess.run(["sh", SCRIPT, "--check"] + TEST_GROUPS, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_second_run_installs_nothing():
    r = subprocess.run(["sh", SCRIPT] + TEST_GROUPS, capture_output=True, text=True)
    assert r.returncode == 0
    assert "all" in r.stdout and "packages present" in r.stdout
    assert "installing" not in r.stdout


def test_non_root_with_a_missing_package_prints_the_command():
    if os.geteuid() != 0:
        cmd = ["sh", SCRIPT]
    else:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", SCRIPT]
    env = dict(os.environ, SLUICE_DEPS_EXTRA="sluice-no-such-package")
    r = subprocess.run(cmd + TEST_GROUPS, capture_output=True, text=True, env=env)
    assert r.returncode == 1
    assert "missing packages: sluice-no-such-package" in r.stderr
    assert ("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            "--no-install-recommends sluice-no-such-package") in r.stderr


def listed(*groups):
    r = subprocess.run(["sh", SCRIPT, "--list"] + list(groups), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return set(r.stdout.split())


def test_the_build_group_is_only_what_compiling_needs():
    build = listed("build")
    assert {"build-essential", "pkg-config", "liburing-dev", "libh2o-evloop-dev"} <= build
    for tool in ("redis-server", "libcmocka-dev", "haproxy", "clang", "clang-format",
                 "cppcheck", "libbenchmark-dev", "qemu-system-x86", "python3-pytest"):
        assert tool not in build


def test_each_goal_group_holds_its_tools_and_all_of_them_is_every_group():
    assert "libcmocka-dev" in listed("unit")
    assert {"redis-server", "haproxy", "debootstrap", "python3-pytest"} <= listed("integration")
    assert {"libbenchmark-dev", "wrk", "redis-server"} <= listed("bench")
    assert "qemu-system-x86" not in listed("bench")
    assert {"clang", "libclang-rt-14-dev"} <= listed("fuzz")
    assert {"clang-format", "cppcheck"} <= listed("style")
    groups = ["build", "unit", "integration", "bench", "run", "fuzz", "style"]
    assert listed() == listed(*groups)


def test_an_unknown_group_is_refused():
    r = subprocess.run(["sh", SCRIPT, "--check", "tset"], capture_output=True, text=True)
    assert r.returncode == 2 and 'unknown group "tset"' in r.stderr
