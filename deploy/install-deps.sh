#!/bin/sh
# install-deps.sh: install, idempotently, the Debian 12 packages that sluice's
# build, tests and benchmarks need, all of them or the groups named.
# Already-installed packages are left alone; when nothing is missing this
# exits 0 without touching apt.
#
#   deploy/install-deps.sh [GROUP...]          install what is missing (root),
#                                              or print the exact command to run
#   deploy/install-deps.sh --check [GROUP...]  only report; exit 1 if anything is missing
#   deploy/install-deps.sh --list [GROUP...]   print the package list
#
# GROUP is what a make goal needs (the Makefile asks for its goal's groups):
#   build        compiling and linking the binaries: make, make BUILD=release, make SAN=...
#   unit         the unit tests (make unit)
#   integration  the integration tests, the VM ones included (make integration)
#   bench        the benchmarks (make bench, bench-smoke)
#   run          the local service (make run)
#   fuzz         the libFuzzer targets (make fuzz)
#   style        make format, format-check, lint
# No GROUP: all of them.
set -eu

# One line per purpose, so a reader sees why each package is here.
PKGS_BUILD="build-essential pkg-config"
PKGS_LIBS="liburing-dev libwolfssl-dev libssh2-1-dev libh2o-evloop-dev libmsgpack-dev libhiredis-dev libjansson-dev libssl-dev zlib1g-dev"
PKGS_UNIT="libcmocka-dev python3"
# What `make run` starts and talks to; the tests and benchmarks too.
PKGS_RUN="python3 redis-server redis-tools curl openssl ca-certificates"
# The other servers and clients the integration harness starts, for the
# tests and the end-to-end benchmarks alike.
PKGS_SERVERS="python3-msgpack sudo openssh-server openssh-client procps iproute2 haproxy wrk nginx-light"
PKGS_TEST="python3-pytest python3-pytest-timeout python3-websockets python3-yaml python3-jsonschema"
# The managers' end-to-end tests boot a disposable Debian 12 VM.
PKGS_VM="debootstrap qemu-system-x86 qemu-utils e2fsprogs"
PKGS_BENCH="libbenchmark-dev"
PKGS_FUZZ="clang llvm libclang-rt-14-dev"
PKGS_STYLE="clang-format clang-tidy cppcheck"

mode=install
case "${1:-}" in
--check) mode=check; shift ;;
--list) mode=list; shift ;;
-*) echo "usage: $0 [--check|--list] [build|unit|integration|bench|run|fuzz|style...]" >&2; exit 2 ;;
esac
groups=${*:-build unit integration bench run fuzz style}

want=""
for g in $groups; do
	case "$g" in
	build) want="$want $PKGS_BUILD $PKGS_LIBS" ;;
	unit) want="$want $PKGS_UNIT" ;;
	integration) want="$want $PKGS_RUN $PKGS_SERVERS $PKGS_TEST $PKGS_VM" ;;
	bench) want="$want $PKGS_RUN $PKGS_SERVERS $PKGS_BENCH" ;;
	run) want="$want $PKGS_RUN" ;;
	fuzz) want="$want $PKGS_FUZZ" ;;
	style) want="$want $PKGS_STYLE" ;;
	*) echo "install-deps: unknown group \"$g\" (build unit integration bench run fuzz style)" >&2; exit 2 ;;
	esac
done
# SLUICE_DEPS_EXTRA: more packages an operator wants alongside (the tests use
# it to prove the non-root message).
PKGS=""
for p in $want ${SLUICE_DEPS_EXTRA:-}; do
	case " $PKGS " in *" $p "*) ;; *) PKGS="$PKGS $p" ;; esac
done
PKGS=${PKGS# }
if [ "$mode" = list ]; then
	echo "$PKGS"
	exit 0
fi

# libssh2 before 1.10.0-3+deb12u1 lacks Debian's security fixes
# (CVE-2020-22218, CVE-2023-48795 "Terrapin").
SSH2_MIN="1.10.0-3+deb12u1"

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

missing=""
for p in $PKGS; do
	installed "$p" || missing="$missing $p"
done
# npm installs the localtunnel client the compatibility test runs; any
# node with npm will do (Debian's, or one the machine already has).
case " $groups " in
*" integration "*) command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm" ;;
esac

ssh2_old=0
case " $PKGS " in *" libssh2-1-dev "*) ssh2_wanted=1 ;; *) ssh2_wanted=0 ;; esac
if [ "$ssh2_wanted" = 1 ] && installed libssh2-1-dev; then
	v=$(dpkg-query -W -f='${Version}' libssh2-1-dev)
	if ! dpkg --compare-versions "$v" ge "$SSH2_MIN"; then
		ssh2_old=1
		echo "install-deps: libssh2-1-dev $v is older than $SSH2_MIN (security fixes)" >&2
	fi
fi

if [ -z "$missing" ] && [ "$ssh2_old" = 0 ]; then
	[ "$mode" = check ] || echo "install-deps: all $(echo $PKGS | wc -w) packages present"
	exit 0
fi

upgrade=""
[ "$ssh2_old" = 1 ] && upgrade=" libssh2-1-dev libssh2-1"
cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends${missing}${upgrade}"

if [ "$mode" = check ]; then
	echo "install-deps: missing:${missing}${upgrade}" >&2
	exit 1
fi
if [ "$(id -u)" != 0 ]; then
	echo "install-deps: missing packages:${missing}${upgrade}" >&2
	echo "install-deps: run this as root (or prefix each apt-get with sudo):" >&2
	echo "  $cmd" >&2
	exit 1
fi

ssh2_ok() {
	dpkg --compare-versions "$(dpkg-query -W -f='${Version}' libssh2-1-dev)" ge "$SSH2_MIN"
}

# The fixed libssh2 comes from Debian's security archive; a minimal system
# (debootstrap, some container images) lists only the main suite. Add the
# security suite, as Debian's installer does, when it is missing.
add_security_suite() {
	if grep -rqs "bookworm-security" /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return 1
	fi
	echo "install-deps: adding Debian's bookworm-security suite (for libssh2 $SSH2_MIN)"
	echo "deb http://deb.debian.org/debian-security bookworm-security main" \
		>/etc/apt/sources.list.d/sluice-debian-security.list
	apt-get update -qq
}

echo "install-deps: installing:${missing}${upgrade}"
export DEBIAN_FRONTEND=noninteractive
# Packages such as redis-server and openssh-server start their daemons from
# their postinst scripts; sluice's tests start their own on free ports, so a
# system daemon is neither needed nor harmful.
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing $upgrade
if [ "$ssh2_wanted" = 1 ]; then
	if ! ssh2_ok && add_security_suite; then
		apt-get install -y -qq --no-install-recommends libssh2-1-dev libssh2-1
	fi
	if ! ssh2_ok; then
		echo "install-deps: libssh2-1-dev is still older than $SSH2_MIN; enable Debian's" >&2
		echo "  security updates (bookworm-security) and run this again" >&2
		exit 1
	fi
fi
echo "install-deps: done"
