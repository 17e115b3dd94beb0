/*
 * relay_main.c: sluice-relay's entry point: options, logging, signals, then
 * the relay worker (dp_relay.c).
 */
#include "dp_conn.h"
#include "dp_relay.h"
#include "dp_tls.h"
#include "dp_tls_accel.h"
#include "pr_state.h"
#include "pr_token.h"
#include "sl_cli.h"
#include "sl_redis.h"
#include "sl_log.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <liburing.h>
#include <msgpack.h>
#include <hiredis.h>
#include <wolfssl/options.h>
#include <wolfssl/version.h>

static const struct sl_opt relay_opts[] = {
	SL_OPTS_COMMON,
	SL_ADDR("http", "127.0.0.1:8080", "public HTTP listener"),
	SL_ADDR("https", NULL, "public HTTPS listener (needs --cert, --key)"),
	SL_STR("cert", NULL, "PEM certificate chain for --https and the agent link (TLS)"),
	SL_SECRET("key", "PEM private key for --cert"),
	SL_STR("cert-dir", NULL,
	       "more certificates chosen by SNI: NAME.crt + NAME.key (_.example.com: wildcard)"),
	SL_ADDR("agents", "127.0.0.1:7000", "listener for agent connections"),
	SL_ADDR("admin", "127.0.0.1:9090", "health and metrics listener"),
	SL_STR("domain", "localhost", "base domain of public URLs"),
	SL_RANGE("tcp-ports", "20000-20999", "ports for TCP tunnels"),
	SL_STR("tokens", NULL, "file of static agent tokens"),
	SL_RANGE("lt-ports", NULL,
		 "with --redis: ports for localtunnel clients' sockets (the control plane's "
		 "--lt-ports)"),
	SL_OPT_REDIS(
		NULL,
		"follow the control plane's sessions in this Redis (redis://... or unix:/path)"),
	SL_OPT_SESSION_SECRET(
		"the control plane's secret, to check signed agent tokens (with --redis)"),
	SL_BOOL("dev", "false",
		"development mode: the control plane's well-known session secret is accepted"),
	SL_STR("relay-id", NULL, "this relay's name in Redis (default: host name and agent port)"),
	SL_ADDR("link", NULL,
		"with --redis: join the cluster; other relays forward public connections for "
		"this relay's tunnels to this address (keep it on a private network)"),
	SL_STR("limit-requests", "off",
	       "requests per tunnel, COUNT/WINDOW (\"1000/1m\"), for static-token tunnels "
	       "(a session's limits come from the control plane)",
	       .check = pr_limit_check),
	SL_STR("limit-bandwidth", "off",
	       "bytes per tunnel, both directions (\"1Gi/1h\"): over it, transfers slow down",
	       .check = pr_limit_check),
	SL_STR("limit-tcp", "off", "new connections per TCP tunnel (\"600/1m\")",
	       .check = pr_limit_check),
	SL_INT("workers", "0", 0, 256, "worker threads, 0 = one per core"),
	SL_OPTS_ENGINE,
	SL_OPT_TLS_CRYPTO,
	SL_INT("heartbeat-ms", "6667", 100, 600000, "ping interval on agent control connections"),
	SL_INT("dead-after-ms", "20000", 300, 3600000,
	       "an agent silent this long is dead (three missed beats)"),
	SL_INT("grace-ms", "30000", 0, 86400000, "how long a disconnected agent keeps its name"),
	SL_INT("head-timeout-ms", "10000", 100, 600000,
	       "a request head must arrive within this (408)"),
	SL_INT("open-timeout-ms", "10000", 100, 600000,
	       "wait this long for an agent data connection (502)"),
	SL_INT("drain-timeout-ms", "10000", 0, 3600000,
	       "on SIGTERM, wait this long for public connections"),
	SL_INT("max-conns", "16384", 16, 1048576, "sockets per worker"),
	SL_INT("buffers", "1024", 8, 32768, "receive buffers per worker (a power of two)"),
	SL_INT("send-zc", "0", 0, 1048576,
	       "io_uring: sends of at least this many bytes use SEND_ZC, 0 = never (pays only "
	       "toward a real NIC: loopback and veth copy anyway, bench/RESULTS.md)"),
	SL_INT("tls-ticket-lifetime", "1800", 1, 3000,
	       "seconds a TLS session ticket stays good: agents resume it for their data "
	       "connections (below wolfSSL's ticket key lifetime, one hour)"),
	SL_INT("hsts", "0", 0, 63072000,
	       "Strict-Transport-Security max-age in seconds on public HTTPS responses, 0 = off"),
	SL_INT("buffer-size", "32768", 1024, 1048576,
	       "bytes per receive buffer (64 KiB measured best, bench/RESULTS.md)"),
};

static void relay_versions(FILE *out)
{
	fprintf(out, "  wolfSSL %s, msgpack-c %s, hiredis %d.%d.%d, liburing (2.3 API)\n",
		LIBWOLFSSL_VERSION_STRING, msgpack_version(), HIREDIS_MAJOR, HIREDIS_MINOR,
		HIREDIS_PATCH);
}

static volatile sig_atomic_t stop_requested, reload_requested;

/* Options the configuration accepts but this build cannot honour yet. */
static int check_unsupported(const struct sl_config *cfg)
{
	long n = sl_config_int(cfg, "buffers");

	const char *cert = sl_config_str(cfg, "cert"), *key = sl_config_str(cfg, "key");

	if ((cert == NULL) != (key == NULL)) {
		sl_error("--cert and --key go together");
		return -EINVAL;
	}
	if (cert == NULL && sl_config_str(cfg, "https") != NULL) {
		sl_error("--https needs --cert and --key");
		return -EINVAL;
	}
	if (cert == NULL && sl_config_str(cfg, "cert-dir") != NULL) {
		sl_error("--cert-dir needs --cert and --key (the default certificate)");
		return -EINVAL;
	}
	if (n & (n - 1)) {
		sl_error("--buffers must be a power of two, not %ld", n);
		return -EINVAL;
	}
	return 0;
}

/* --redis needs a session secret: set, long enough, and the development
 * one only with --dev. 0, or -EINVAL after saying why. */
static int sessions_config(const struct sl_config *cfg, struct dp_relay_config *rc, char *id,
			   size_t cap)
{
	const char *sec = sl_config_str(cfg, "session-secret"), *rid;
	int dev = sl_config_int(cfg, "dev") != 0;
	char host[200] = "relay";
	const char *colon;

	rc->redis = sl_config_str(cfg, "redis");
	if (rc->redis == NULL)
		return 0;
	if (sec == NULL && dev)
		sec = PR_DEV_SECRET;
	if (sec == NULL || strlen(sec) < PR_TOKEN_KEY_MIN ||
	    (!dev && strcmp(sec, PR_DEV_SECRET) == 0)) {
		sl_error("--redis needs the control plane's session secret: --session-secret or "
			 "SESSION_SECRET_KEY, %d bytes or more (the development one only with "
			 "--dev)",
			 PR_TOKEN_KEY_MIN);
		return -EINVAL;
	}
	rc->session_secret = sec;
	rid = sl_config_str(cfg, "relay-id");
	if (rid == NULL) {
		gethostname(host, sizeof(host) - 1);
		colon = strrchr(rc->agents, ':');
		snprintf(id, cap, "%s:%s", host, colon ? colon + 1 : "0");
		rid = id;
	}
	rc->relay_id = rid;
	return 0;
}

/* The relay, configured: 0 once it has stopped, or a negative errno
 * (-EINVAL: a configuration refused, after saying why). */
static int run(const struct sl_config *cfg)
{
	struct dp_relay_config rc = {0};
	char relay_id[256];
	long range = sl_config_int(cfg, "tcp-ports");
	const char *tokens = sl_config_str(cfg, "tokens");
	int err;

	if ((err = check_unsupported(cfg)) < 0)
		return err;
	rc.http = sl_config_str(cfg, "http");
	rc.https = sl_config_str(cfg, "https");
	rc.cert = sl_config_str(cfg, "cert");
	rc.key = sl_config_str(cfg, "key");
	rc.cert_dir = sl_config_str(cfg, "cert-dir");
	rc.agents = sl_config_str(cfg, "agents");
	rc.admin = sl_config_str(cfg, "admin");
	rc.link = sl_config_str(cfg, "link");
	rc.domain = sl_config_str(cfg, "domain");
	rc.tcp_lo = (uint16_t)(range >> 16);
	rc.tcp_hi = (uint16_t)(range & 0xffff);
	if (sl_config_get(cfg, "lt-ports")->str) {
		long lt = sl_config_int(cfg, "lt-ports");

		rc.lt_lo = (uint16_t)(lt >> 16);
		rc.lt_hi = (uint16_t)(lt & 0xffff);
	}
	rc.heartbeat_ms = (uint32_t)sl_config_int(cfg, "heartbeat-ms");
	rc.dead_ms = (uint32_t)sl_config_int(cfg, "dead-after-ms");
	rc.grace_ms = (uint32_t)sl_config_int(cfg, "grace-ms");
	rc.head_timeout_ms = (uint32_t)sl_config_int(cfg, "head-timeout-ms");
	rc.open_timeout_ms = (uint32_t)sl_config_int(cfg, "open-timeout-ms");
	rc.drain_timeout_ms = (uint32_t)sl_config_int(cfg, "drain-timeout-ms");
	rc.hsts_max_age = (uint32_t)sl_config_int(cfg, "hsts");
	rc.max_conns = (uint32_t)sl_config_int(cfg, "max-conns");
	rc.nbufs = (uint32_t)sl_config_int(cfg, "buffers");
	rc.bufsize = (uint32_t)sl_config_int(cfg, "buffer-size");
	rc.workers = (uint32_t)sl_config_int(cfg, "workers");
	rc.send_zc = (uint32_t)sl_config_int(cfg, "send-zc");
	rc.splice = (int)sl_config_int(cfg, "splice");
	if (rc.workers == 0) {
		long cores = sysconf(_SC_NPROCESSORS_ONLN);

		rc.workers = cores > 0 ? (uint32_t)(cores < 64 ? cores : 64) : 1;
	}
	pr_limit_parse(sl_config_str(cfg, "limit-requests"), &rc.lim_req, NULL, 0);
	pr_limit_parse(sl_config_str(cfg, "limit-bandwidth"), &rc.lim_bw, NULL, 0);
	pr_limit_parse(sl_config_str(cfg, "limit-tcp"), &rc.lim_tcp, NULL, 0);
	rc.engine = strcmp(sl_config_str(cfg, "engine"), "epoll") == 0 ? DP_ENGINE_EPOLL
								       : DP_ENGINE_URING;
	if ((err = sessions_config(cfg, &rc, relay_id, sizeof(relay_id))) < 0)
		return err;
	if (tokens && (err = dp_relay_load_tokens(tokens, &rc.tokens, &rc.ntokens)) < 0) {
		sl_error("cannot read --tokens %s: %s", tokens, strerror(-err));
		return err;
	}
	if (tokens == NULL && rc.redis == NULL)
		sl_warn("no --tokens file: any agent may connect (development only)");
	if (rc.cert == NULL)
		sl_warn("no --cert/--key: agents connect in plaintext (development only)");
	dp_tls_global_init();
	dp_tls_set_ticket_lifetime((uint32_t)sl_config_int(cfg, "tls-ticket-lifetime"));
	if (rc.cert && dp_tls_accel_init(sl_config_str(cfg, "tls-crypto")) < 0)
		return -ENOTSUP;
	sl_cli_stop_on_signals(&stop_requested);
	sl_cli_reload_on_sighup(&reload_requested);
	err = dp_relay_run(&rc, &stop_requested, &reload_requested);
	for (uint32_t i = 0; i < rc.ntokens; i++) {
		memset(rc.tokens[i], 0, strlen(rc.tokens[i]));
		free(rc.tokens[i]);
	}
	free(rc.tokens);
	return err;
}

static const struct sl_cli relay_cli = {
	.prog = "sluice-relay",
	.component = "relay",
	.summary = "the public side of sluice tunnels",
	.usage = "Usage: sluice-relay [--http ADDR] [--agents ADDR] [--domain NAME] [options]\n",
	SL_CLI_OPTS(relay_opts),
	.versions = relay_versions,
	.run = run,
};

int main(int argc, char **argv)
{
	return sl_cli_main(&relay_cli, argc, argv);
}
