#!/bin/sh
# run-local.sh: start sluice on this machine for development, as `make run`
# does: a project-local redis-server under run/ (unix socket only, nothing on
# TCP 6379), sluice-control, sluice-relay, a tiny demo app (deploy/demo/) and
# an agent that creates its session through the control plane's API
# (POST /api/v1/tunnels) and exposes the app; then print the public URL and a curl line that works.
# Ctrl-C stops everything. --once checks the tunnel answers, then stops.
#
#   deploy/run-local.sh [--bin DIR] [--dir DIR] [--once]
#   SLUICE_RUN_CONTROL=127.0.0.1:8000   control-plane listen address
#   SLUICE_RUN_HTTP=127.0.0.1:8080      relay public HTTP address
#   SLUICE_RUN_AGENTS=127.0.0.1:7000    relay agent address
#   SLUICE_RUN_HTTPS=127.0.0.1:8443     relay public HTTPS address
#   SLUICE_RUN_ADMIN=127.0.0.1:9090     relay /health and /metrics
#
# TLS: a development CA and a relay certificate (localhost, *.localhost,
# demo.localhost, 127.0.0.1) are made once under run/tls/ with openssl; the
# agent verifies the relay against that CA, and so can curl (--cacert).
#   SLUICE_RUN_APP=3000                 the demo app's port
#   SLUICE_RUN_RELAYS=1                 relays (RELAYS=3 make run): relay i (from 1) listens
#                                       on the ports above + i - 1; any of them serves the
#                                       tunnel (docs/cluster.md)
#   SLUICE_RUN_LINK=127.0.0.1:7100      first relay's link address (+ i - 1 for relay i)
#   SLUICE_RUN_LT_PORTS=21000-21099     relay ports for localtunnel clients
#                                       (lt --port N --host http://CONTROL)
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
HTTP=${SLUICE_RUN_HTTP:-127.0.0.1:8080}
AGENTS=${SLUICE_RUN_AGENTS:-127.0.0.1:7000}
ADMIN=${SLUICE_RUN_ADMIN:-127.0.0.1:9090}
HTTPS=${SLUICE_RUN_HTTPS:-127.0.0.1:8443}
APP=${SLUICE_RUN_APP:-3000}
LT_PORTS=${SLUICE_RUN_LT_PORTS:-21000-21099}
RELAYS=${SLUICE_RUN_RELAYS:-1}
LINK=${SLUICE_RUN_LINK:-127.0.0.1:7100}
case "$RELAYS" in
[1-9]) ;;
*) echo "run-local: SLUICE_RUN_RELAYS (RELAYS) must be 1 to 9, not $RELAYS" >&2; exit 2 ;;
esac
DEMO=$(cd "$(dirname "$0")/demo" && pwd)

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

# make_certs DIR: a development CA and a relay certificate, once. Files are
# written under temporary names and renamed, so an interrupted run leaves
# nothing half-made.
make_certs() {
	[ -s "$1/relay.pem" ] && [ -s "$1/relay.key" ] && [ -s "$1/ca.pem" ] && return 0
	mkdir -p "$1"
	t=$(mktemp -d "$1/.new.XXXXXX")
	ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
	openssl req -x509 $ec -keyout "$t/ca.key" -out "$t/ca.pem" -days 825 \
		-subj "/CN=sluice development CA" 2>/dev/null &&
	openssl req $ec -keyout "$t/relay.key" -out "$t/relay.csr" -subj "/CN=localhost" 2>/dev/null &&
	printf 'subjectAltName=DNS:localhost,DNS:*.localhost,DNS:demo.localhost,IP:127.0.0.1\n' >"$t/ext" &&
	openssl x509 -req -in "$t/relay.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
		-out "$t/relay.pem" -days 825 -extfile "$t/ext" 2>/dev/null || {
		rm -rf "$t"
		echo "run-local: openssl could not make the development certificates" >&2
		return 1
	}
	chmod 600 "$t/ca.key" "$t/relay.key"
	for f in ca.key ca.pem relay.key relay.pem; do mv "$t/$f" "$1/$f"; done
	rm -rf "$t"
}
make_certs "$DIR/tls"

redis-server --port 0 --unixsocket "$SOCK" --unixsocketperm 700 --dir "$DIR" \
	--save 60 1 --dbfilename dump.rdb --logfile "$DIR/redis.log" &
pids="$pids $!"
wait_until 10 redis-cli -s "$SOCK" ping || { echo "run-local: redis did not start, see $DIR/redis.log" >&2; exit 1; }

# port_plus HOST:PORT N: the same host, the port + N
port_plus() { echo "${1%:*}:$((${1##*:} + $2))"; }

# The relays follow the control plane's sessions in Redis; all sign and check
# agent tokens with the development secret (--dev). With more than one, each
# joins the cluster (--link) and serves every tunnel.
SERVERS=""
i=1
while [ "$i" -le "$RELAYS" ]; do
	o=$((i - 1))
	id=local
	extra="--lt-ports $LT_PORTS"
	[ "$i" -gt 1 ] && id=local-$i && extra=""
	[ "$RELAYS" -gt 1 ] && extra="$extra --link $(port_plus "$LINK" $o)"
	# shellcheck disable=SC2086 # extra is a list of words
	"$BIN/sluice-relay" --http "$(port_plus "$HTTP" $o)" --https "$(port_plus "$HTTPS" $o)" \
		--agents "$(port_plus "$AGENTS" $o)" --admin "$(port_plus "$ADMIN" $o)" \
		--domain localhost --cert "$DIR/tls/relay.pem" --key "$DIR/tls/relay.key" \
		--redis "unix:$SOCK" --dev --relay-id "$id" $extra \
		--log-format text 2>>"$DIR/relay-$i.log" &
	pids="$pids $!"
	wait_until 10 curl -sf "http://$(port_plus "$ADMIN" $o)/health" || {
		echo "run-local: relay $i did not start; see $DIR/relay-$i.log" >&2
		tail -n 5 "$DIR/relay-$i.log" >&2
		exit 1
	}
	SERVERS="$SERVERS${SERVERS:+,}$(port_plus "$AGENTS" $o)"
	i=$((i + 1))
done

"$BIN/sluice-control" --listen "$CONTROL" --redis "unix:$SOCK" --dev --relay "$AGENTS" \
	--public-url "http://localhost:${HTTP##*:}" --audit-log "$DIR/audit.jsonl" \
	--localtunnel --lt-ports "$LT_PORTS" \
	--log-format text 2>>"$DIR/control.log" &
pids="$pids $!"
# Healthy means Redis answers and the relay heartbeats.
if ! wait_until 10 curl -sf "http://$CONTROL/health"; then
	echo "run-local: sluice-control did not become healthy; its log:" >&2
	tail -n 20 "$DIR/control.log" >&2
	curl -s "http://$CONTROL/health" >&2
	exit 1
fi

# An API key for the demo agent, made once (shown once: kept in the run dir).
if [ ! -s "$DIR/api.key" ]; then
	umask 077
	"$BIN/sluice-control" keys create --name demo --redis "unix:$SOCK" --log-format text \
		>"$DIR/api.key.new" 2>>"$DIR/control.log" && mv "$DIR/api.key.new" "$DIR/api.key" || {
		rm -f "$DIR/api.key.new"
		echo "run-local: could not create an API key; see $DIR/control.log" >&2
		exit 1
	}
	umask 022
fi
KEY=$(cat "$DIR/api.key")
# The previous run's demo session holds the name "demo" until it expires:
# delete it, through the API like any client would.
if [ -s "$DIR/session.id" ]; then
	curl -s -o /dev/null -X DELETE -H "Authorization: Bearer $KEY" \
		"http://$CONTROL/api/v1/tunnels/$(cat "$DIR/session.id")" || true
fi

/usr/bin/python3 -m http.server "$APP" --bind 127.0.0.1 --directory "$DEMO" \
	>>"$DIR/app.log" 2>&1 &
pids="$pids $!"
wait_until 10 curl -sf "http://127.0.0.1:$APP/" || { echo "run-local: demo app did not start; see $DIR/app.log" >&2; exit 1; }

# The agent needs only the API: it creates its session and learns the relay
# and its signed token from the control plane.
# With several relays it is given all of them: the next one takes over its
# session if its relay goes away.
SLUICE_API_KEY=$KEY "$BIN/sluice" http "$APP" --api "http://$CONTROL" --ca "$DIR/tls/ca.pem" \
	--server "$SERVERS" --name demo --json >"$DIR/agent.events" 2>>"$DIR/agent.log" &
pids="$pids $!"
wait_until 10 grep -q '"event":"ready"' "$DIR/agent.events" || { echo "run-local: agent did not connect; see $DIR/agent.log" >&2; tail -n 5 "$DIR/agent.log" >&2; exit 1; }
URL=$(sed -n 's/.*"event":"ready","url":"\([^"]*\)".*/\1/p' "$DIR/agent.events" | head -n 1)
SID=$(sed -n 's/.*"session":"\([^"]*\)".*/\1/p' "$DIR/agent.events" | head -n 1)
echo "$SID" >"$DIR/session.id"

echo "run-local: redis          unix:$SOCK (data in $DIR)"
echo "run-local: sluice-control http://$CONTROL/health: $(curl -s "http://$CONTROL/health")"
echo "run-local: session        $SID, created through the API: $(curl -s -H "Authorization: Bearer $KEY" "http://$CONTROL/api/v1/tunnels/$SID")"
echo "run-local: sluice-relay   public http://$HTTP and https://$HTTPS, agents $AGENTS (TLS), metrics http://$ADMIN/metrics"
if [ "$RELAYS" -gt 1 ]; then
	echo "run-local: $RELAYS relays     on one Redis: $(redis-cli -s "$SOCK" zrange sl:relays 0 -1 | tr '\n' ' ')"
fi
echo "run-local: demo app       http://127.0.0.1:$APP/ ($DEMO)"
echo "run-local: tunnel         $URL  (also http://$HTTP/session/$SID/)"
echo "run-local: try:           curl $URL"
echo "run-local:                curl -H 'Host: demo.localhost' http://$HTTP/"
echo "run-local: more tunnels:  sluice http PORT --api http://$CONTROL --api-key \$(cat $DIR/api.key) --ca $DIR/tls/ca.pem"
echo "run-local:                npx localtunnel --port PORT --host http://$CONTROL   (the unmodified lt client)"
HTTPS_URL="https://demo.localhost:${HTTPS##*:}/"
echo "run-local:                curl --cacert $DIR/tls/ca.pem --resolve demo.localhost:${HTTPS##*:}:${HTTPS%:*} $HTTPS_URL"
if ! curl -sf "$URL" | grep -q "Hello through sluice"; then
	echo "run-local: the tunnel did not answer as expected" >&2
	exit 1
fi
echo "run-local: the tunnel answers: $(curl -s "$URL" | grep -o '<h1>.*</h1>')"
i=2
while [ "$i" -le "$RELAYS" ]; do
	h=$(port_plus "$HTTP" $((i - 1)))
	if ! curl -sf -H 'Host: demo.localhost' "http://$h/" | grep -q "Hello through sluice"; then
		echo "run-local: relay $i (http://$h/) did not serve the tunnel" >&2
		exit 1
	fi
	echo "run-local: and through relay $i: curl -H 'Host: demo.localhost' http://$h/"
	i=$((i + 1))
done
if ! curl -sf --cacert "$DIR/tls/ca.pem" --resolve "demo.localhost:${HTTPS##*:}:${HTTPS%:*}" \
	"$HTTPS_URL" | grep -q "Hello through sluice"; then
	echo "run-local: the tunnel did not answer over HTTPS" >&2
	exit 1
fi
echo "run-local: and over HTTPS: $HTTPS_URL (certificate checked against $DIR/tls/ca.pem)"
if [ "$ONCE" = 1 ]; then
	exit 0
fi
echo "run-local: running; logs in $DIR; press Ctrl-C to stop"
wait
