/*
 * relay_main.c: sluice-relay's entry point: options, logging, signals, then
 * the relay worker (dp_relay.c).
 */
#include "dp_conn.h"
#include "dp_relay.h"
#include "dp_tls.h"
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
	SL_CONFIG_COMMON_OPTS,
	{.name = "http",
	 .type = SL_OPT_ADDR,
	 .def = "127.0.0.1:8080",
	 .help = "public HTTP listener"},
	{.name = "https",
	 .type = SL_OPT_ADDR,
	 .help = "public HTTPS listener (needs --cert, --key)"},
	{.name = "cert",
	 .type = SL_OPT_STR,
	 .help = "PEM certificate chain for --https and the agent link (TLS)"},
	{.name = "key",
	 .type = SL_OPT_STR,
	 .flags = SL_OPT_F_SECRET,
	 .help = "PEM private key for --cert"},
	{.name = "cert-dir",
	 .type = SL_OPT_STR,
	 .help = "more certificates chosen by SNI: NAME.crt + NAME.key (_.example.com: wildcard)"},
	{.name = "agents",
	 .type = SL_OPT_ADDR,
	 .def = "127.0.0.1:7000",
	 .help = "listener for agent connections"},
	{.name = "admin",
	 .type = SL_OPT_ADDR,
	 .def = "127.0.0.1:9090",
	 .help = "health and metrics listener"},
	{.name = "domain",
	 .type = SL_OPT_STR,
	 .def = "localhost",
	 .help = "base domain of public URLs"},
	{.name = "tcp-ports",
	 .type = SL_OPT_RANGE,
	 .def = "20000-20999",
	 .help = "ports for TCP tunnels"},
	{.name = "tokens", .type = SL_OPT_STR, .help = "file of static agent tokens"},
	{.name = "lt-ports",
	 .type = SL_OPT_RANGE,
	 .help = "with --redis: ports for localtunnel clients' sockets (the control plane's "
		 "--lt-ports)"},
	{.name = "redis",
	 .type = SL_OPT_STR,
	 .help = "follow the control plane's sessions in this Redis (redis://... or unix:/path)",
	 .check = sl_redis_url_check,
	 .env_alias = "REDIS_URL"},
	{.name = "session-secret",
	 .type = SL_OPT_STR,
	 .flags = SL_OPT_F_SECRET,
	 .help = "the control plane's secret, to check signed agent tokens (with --redis)",
	 .env_alias = "SESSION_SECRET_KEY"},
	{.name = "dev",
	 .type = SL_OPT_BOOL,
	 .def = "false",
	 .help = "development mode: the control plane's well-known session secret is accepted"},
	{.name = "relay-id",
	 .type = SL_OPT_STR,
	 .help = "this relay's name in Redis (default: host name and agent port)"},
	{.name = "link",
	 .type = SL_OPT_ADDR,
	 .help = "with --redis: join the cluster; other relays forward public connections for "
		 "this relay's tunnels to this address (keep it on a private network)"},
	{.name = "limit-requests",
	 .type = SL_OPT_STR,
	 .def = "off",
	 .help = "requests per tunnel, COUNT/WINDOW (\"1000/1m\"), for static-token tunnels "
		 "(a session's limits come from the control plane)",
	 .check = pr_limit_check},
	{.name = "limit-bandwidth",
	 .type = SL_OPT_STR,
	 .def = "off",
	 .help = "bytes per tunnel, both directions (\"1Gi/1h\"): over it, transfers slow down",
	 .check = pr_limit_check},
	{.name = "limit-tcp",
	 .type = SL_OPT_STR,
	 .def = "off",
	 .help = "new connections per TCP tunnel (\"600/1m\")",
	 .check = pr_limit_check},
	{.name = "workers",
	 .type = SL_OPT_INT,
	 .def = "0",
	 .max = 256,
	 .help = "worker threads, 0 = one per core"},
	{.name = "splice",
	 .type = SL_OPT_BOOL,
	 .def = "true",
	 .help = "bulk transfers between plain sockets use splice(2), socket to pipe to socket "
		 "(--no-splice: copy through buffers; bench/RESULTS.md)"},
	{.name = "engine",
	 .type = SL_OPT_ENUM,
	 .def = "io_uring",
	 .choices = "io_uring|epoll",
	 .help = "I/O engine"},
	{.name = "heartbeat-ms",
	 .type = SL_OPT_INT,
	 .def = "6667",
	 .min = 100,
	 .max = 600000,
	 .help = "ping interval on agent control connections"},
	{.name = "dead-after-ms",
	 .type = SL_OPT_INT,
	 .def = "20000",
	 .min = 300,
	 .max = 3600000,
	 .help = "an agent silent this long is dead (three missed beats)"},
	{.name = "grace-ms",
	 .type = SL_OPT_INT,
	 .def = "30000",
	 .min = 0,
	 .max = 86400000,
	 .help = "how long a disconnected agent keeps its name"},
	{.name = "head-timeout-ms",
	 .type = SL_OPT_INT,
	 .def = "10000",
	 .min = 100,
	 .max = 600000,
	 .help = "a request head must arrive within this (408)"},
	{.name = "open-timeout-ms",
	 .type = SL_OPT_INT,
	 .def = "10000",
	 .min = 100,
	 .max = 600000,
	 .help = "wait this long for an agent data connection (502)"},
	{.name = "drain-timeout-ms",
	 .type = SL_OPT_INT,
	 .def = "10000",
	 .min = 0,
	 .max = 3600000,
	 .help = "on SIGTERM, wait this long for public connections"},
	{.name = "max-conns",
	 .type = SL_OPT_INT,
	 .def = "16384",
	 .min = 16,
	 .max = 1048576,
	 .help = "sockets per worker"},
	{.name = "buffers",
	 .type = SL_OPT_INT,
	 .def = "1024",
	 .min = 8,
	 .max = 32768,
	 .help = "receive buffers per worker (a power of two)"},
	{.name = "send-zc",
	 .type = SL_OPT_INT,
	 .def = "0",
	 .min = 0,
	 .max = 1048576,
	 .help = "io_uring: sends of at least this many bytes use SEND_ZC, 0 = never (pays only "
		 "toward a real NIC: loopback and veth copy anyway, bench/RESULTS.md)"},
	{.name = "buffer-size",
	 .type = SL_OPT_INT,
	 .def = "32768",
	 .min = 1024,
	 .max = 1048576,
	 .help = "bytes per receive buffer (64 KiB measured best, bench/RESULTS.md)"},
};

static void relay_versions(FILE *out)
{
	fprintf(out, "  wolfSSL %s, msgpack-c %s, hiredis %d.%d.%d, liburing (2.3 API)\n",
		LIBWOLFSSL_VERSION_STRING, msgpack_version(), HIREDIS_MAJOR, HIREDIS_MINOR,
		HIREDIS_PATCH);
}

static const struct sl_cli relay_cli = {
	.prog = "sluice-relay",
	.component = "relay",
	.summary = "the public side of sluice tunnels",
	.usage = "Usage: sluice-relay [--http ADDR] [--agents ADDR] [--domain NAME] [options]\n",
	.opts = relay_opts,
	.nopts = sizeof(relay_opts) / sizeof(relay_opts[0]),
	.versions = relay_versions,
};

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

int main(int argc, char **argv)
{
	struct sl_config cfg;
	int rc = sl_cli_start(&relay_cli, &cfg, argc, argv);

	if (rc != 0) {
		sl_config_free(&cfg);
		return rc > 0 ? SL_EXIT_OK : SL_EXIT_USAGE;
	}
	rc = run(&cfg);
	sl_config_free(&cfg);
	if (rc == -ENOTSUP || rc == -EINVAL)
		return SL_EXIT_USAGE;
	return rc < 0 ? SL_EXIT_FAIL : SL_EXIT_OK;
}
