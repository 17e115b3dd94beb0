#!/bin/sh
# run-local.sh: start sluice on this machine for development, as `make run`
# does: a project-local redis-server under run/ (unix socket only, nothing on
# TCP 6379), sluice-control on loopback, and the relay once it exists. Ctrl-C
# stops everything. --once checks that the service answers, then stops it.
#
#   deploy/run-local.sh [--bin DIR] [--dir DIR] [--once]
#   SLUICE_RUN_CONTROL=127.0.0.1:8000   control-plane listen address
set -eu

BIN=build/bin
DIR=run
ONCE=0
while [ $# -gt 0 ]; do
	case "$1" in
	--bin) BIN=$2; shift 2 ;;
	--dir) DIR=$2; shift 2 ;;
	--once) ONCE=1; shift ;;
	*) echo "usage: $0 [--bin DIR] [--dir DIR] [--once]" >&2; exit 2 ;;
	esac
done
CONTROL=${SLUICE_RUN_CONTROL:-127.0.0.1:8000}

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
BIN=$(cd "$BIN" && pwd)
SOCK=$DIR/redis.sock
pids=""

stop() {
	trap - INT TERM EXIT
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	for p in $pids; do wait "$p" 2>/dev/null || true; done
	rm -f "$SOCK"
	echo "run-local: stopped"
}
trap stop EXIT
trap 'exit 130' INT TERM

# wait_until SECONDS COMMAND...: retry COMMAND every 0.1 s
wait_until() {
	n=$(($1 * 10)); shift
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 0.1
	done
}

redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --dir "$DIR" \
	--save 60 1 --dbfilename dump.rdb --logfile "$DIR/redis.log" &
pids="$pids $!"
wait_until 10 redis-cli -s "$SOCK" ping || { echo "run-local: redis did not start, see $DIR/redis.log" >&2; exit 1; }

"$BIN/sluice-control" --listen "$CONTROL" --redis "unix:$SOCK" --dev --log-format text \
	2>>"$DIR/control.log" &
pids="$pids $!"
if ! wait_until 10 curl -sf "http://$CONTROL/api/v1/health"; then
	echo "run-local: sluice-control did not become healthy; its log:" >&2
	tail -n 20 "$DIR/control.log" >&2
	exit 1
fi

echo "run-local: redis          unix:$SOCK (data in $DIR)"
echo "run-local: sluice-control http://$CONTROL/api/v1/health"
echo "run-local: health: $(curl -s "http://$CONTROL/api/v1/health")"
echo "run-local: sluice-relay   not started: the relay engine is not in this build yet"
if [ "$ONCE" = 1 ]; then
	exit 0
fi
echo "run-local: running; logs in $DIR; press Ctrl-C to stop"
wait
