/*
 * agent_main.c: the agent, `sluice`: `sluice http PORT` or `sluice tcp PORT`
 * puts a local service on a public URL through a relay (ag_agent.c).
 */
#include "ag_agent.h"
#include "ag_api.h"
#include "dp_conn.h"
#include "dp_tls.h"
#include "sl_cli.h"
#include "sl_log.h"
#include "sl_net.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <wolfssl/options.h>
#include <wolfssl/version.h>

static const struct sl_opt agent_opts[] = {
	SL_OPTS_COMMON,
	SL_STR("server", "127.0.0.1:7000",
	       "relay address for agents; several, comma-separated: the next one takes over "
	       "the session when a relay goes away (same URL)"),
	SL_SECRET("token", "agent token"),
	SL_STR("name", NULL, "requested name (subdomain)"),
	SL_STR("api", NULL, "control-plane URL (instead of --server/--token)"),
	SL_SECRET("api-key", "control-plane API key"),
	SL_SECRET("basic-auth",
		  "with --api: protect the public URL with this USER:PASSWORD (HTTP basic)"),
	SL_SECRET("bearer-token", "with --api: protect the public URL with this bearer token"),
	SL_INT("duration", NULL, 1, 86400,
	       "with --api: the session's lifetime, seconds (default: the control plane's)"),
	SL_STR("local-host", "127.0.0.1", "host of the local service"),
	SL_ENUM("transport", "tls", "tls|tcp",
		"link to the relay: TLS, or plaintext TCP (development only)"),
	SL_STR("ca", NULL,
	       "PEM CA certificates the relay's certificate must chain to (default: system)"),
	SL_STR("server-name", NULL,
	       "name the relay's certificate must carry (default: the host of --server)"),
	SL_BOOL("insecure", "false", "skip relay certificate verification (development only)"),
	SL_BOOL("ha", "false",
		"high availability: hold the session at two relays at once (needs two or more "
		"--server: the 1st, 3rd... and the 2nd, 4th... take turns); any relay serves it "
		"while "
		"either is up"),
	SL_INT("pool", "8", 1, 1024, "idle data connections kept open to the relay"),
	SL_INT("max-streams", "4096", 1, 65536, "concurrent streams at most"),
	SL_INT("buffers", "128", 8, 32768,
	       "receive buffers (a power of two); with --buffer-size, the agent's I/O memory"),
	SL_INT("buffer-size", "32768", 1024, 1048576, "bytes per receive buffer"),
	SL_OPTS_ENGINE,
	SL_BOOL("json", "false", "one JSON event per line on stdout"),
};

static void agent_versions(FILE *out)
{
	fprintf(out, "  wolfSSL %s, msgpack-c %s, liburing (2.3 API)\n", LIBWOLFSSL_VERSION_STRING,
		msgpack_version());
}

/* Check "http|tcp PORT"; returns the port or -EINVAL after printing why. */
static int agent_parse_command(const struct sl_config *cfg)
{
	char *end;
	long port;

	if (cfg->nargs != 2 ||
	    (strcmp(cfg->args[0], "http") != 0 && strcmp(cfg->args[0], "tcp") != 0)) {
		fprintf(stderr, "sluice: expected a command: sluice http PORT or sluice tcp PORT "
				"(see --help)\n");
		return -EINVAL;
	}
	port = strtol(cfg->args[1], &end, 10);
	if (*cfg->args[1] == '\0' || *end != '\0' || port < 1 || port > 65535) {
		fprintf(stderr, "sluice: invalid port \"%s\": expected 1..65535\n", cfg->args[1]);
		return -EINVAL;
	}
	return (int)port;
}

static volatile sig_atomic_t stop_requested;

/* The host part of "host:port" or "[v6]:port" into out. */
static void host_of(const char *addr, char *out, size_t cap)
{
	const char *colon = strrchr(addr, ':');
	size_t n = colon ? (size_t)(colon - addr) : strlen(addr);

	if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
		addr++;
		n -= 2;
	}
	snprintf(out, cap, "%.*s", (int)n, addr);
}

/* TLS for the relay link, unless --transport tcp; -EINVAL after saying why. */
static int build_tls(const struct sl_config *cfg, struct ag_config *ac)
{
	int insecure = (int)sl_config_int(cfg, "insecure");

	if (strcmp(sl_config_str(cfg, "transport"), "tcp") == 0) {
		sl_warn("--transport tcp: the link to the relay is not encrypted (development "
			"only)");
		return 0;
	}
	for (uint32_t i = 0; i < ac->nservers; i++) {
		struct ag_server *sv = &ac->servers[i];

		host_of(sv->text, sv->tls_name, sizeof(sv->tls_name));
		if (sl_config_str(cfg, "server-name"))
			snprintf(sv->tls_name, sizeof(sv->tls_name), "%s",
				 sl_config_str(cfg, "server-name"));
	}
	ac->verify_name = !insecure;
	if (insecure)
		sl_warn("--insecure: the relay's certificate is not verified (development only)");
	dp_tls_global_init();
	ac->tls = dp_tls_client_ctx(sl_config_str(cfg, "ca"), insecure);
	return ac->tls ? 0 : -EINVAL;
}

static struct ag_api_session api_sess;

/* --api: create the session; the relay's address, or NULL after saying why. */
static const char *api_session(const struct sl_config *cfg, int port)
{
	const struct sl_val *d = sl_config_get(cfg, "duration");
	struct ag_api_request q = {
		.api = sl_config_str(cfg, "api"),
		.key = sl_config_str(cfg, "api-key"),
		.port = port,
		.proto = cfg->args[0],
		.name = sl_config_str(cfg, "name"),
		.duration = d->str ? (uint32_t)d->num : 0,
		.basic = sl_config_str(cfg, "basic-auth"),
		.bearer = sl_config_str(cfg, "bearer-token"),
		.timeout_ms = 10000,
	};
	char err[400];

	if (q.key == NULL) {
		fprintf(stderr, "sluice: --api needs --api-key (or SLUICE_API_KEY)\n");
		return NULL;
	}
	if (ag_api_create(&q, &api_sess, err, sizeof(err)) < 0) {
		fprintf(stderr, "sluice: %s\n", err);
		return NULL;
	}
	sl_info("session %s created by the control plane: %s (relay %s, until %s)", api_sess.sid,
		api_sess.url, api_sess.relay, api_sess.expires);
	return api_sess.relay;
}

/* "host:port[,host:port...]" into ac->servers; -EINVAL after saying why. */
static int parse_servers(const char *list, struct ag_config *ac)
{
	const char *p = list;

	ac->nservers = 0;
	while (*p) {
		size_t n = strcspn(p, ",");
		struct ag_server *sv;

		if (ac->nservers == AG_SERVERS_MAX || n == 0 || n >= sizeof(sv->text)) {
			fprintf(stderr,
				"sluice: --server takes 1 to %d host:port, comma-separated\n",
				AG_SERVERS_MAX);
			return -EINVAL;
		}
		sv = &ac->servers[ac->nservers++];
		snprintf(sv->text, sizeof(sv->text), "%.*s", (int)n, p);
		if (sl_addr_parse(sv->text, &sv->addr, &sv->len) < 0) {
			fprintf(stderr, "sluice: cannot resolve --server %s\n", sv->text);
			return -EINVAL;
		}
		p += n;
		if (*p == ',')
			p++;
	}
	if (ac->nservers == 0) {
		fprintf(stderr, "sluice: --server needs a relay address\n");
		return -EINVAL;
	}
	return 0;
}

/* Fill ac from the configuration; returns 0 or -EINVAL after saying why. */
static int build_config(const struct sl_config *cfg, int port, struct ag_config *ac, char *local,
			size_t local_cap)
{
	const char *server = sl_config_str(cfg, "server");
	const char *lhost = sl_config_str(cfg, "local-host");

	if (sl_config_str(cfg, "api") != NULL) {
		const char *relay = api_session(cfg, port);

		if (relay == NULL)
			return -EINVAL;
		/* An explicit --server list wins over the relay the API names. */
		if (sl_config_get(cfg, "server")->src == SL_SRC_DEFAULT)
			server = relay;
		ac->token = api_sess.token;
		ac->name = NULL; /* the session has its name */
	} else {
		ac->token = sl_config_str(cfg, "token");
		ac->name = sl_config_str(cfg, "name");
	}
	snprintf(local, local_cap, strchr(lhost, ':') ? "[%s]:%d" : "%s:%d", lhost, port);
	if (parse_servers(server, ac) < 0)
		return -EINVAL;
	if (sl_addr_parse(local, &ac->local, &ac->local_len) < 0) {
		fprintf(stderr, "sluice: cannot resolve the local service %s\n", local);
		return -EINVAL;
	}
	ac->local_text = local;
	ac->proto = strcmp(cfg->args[0], "tcp") == 0 ? PR_PROTO_TCP : PR_PROTO_HTTP;
	ac->pool = (uint32_t)sl_config_int(cfg, "pool");
	ac->max_data = (uint32_t)sl_config_int(cfg, "max-streams");
	ac->backoff_max_ms = 30000;
	ac->nbufs = (uint32_t)sl_config_int(cfg, "buffers");
	ac->bufsize = (uint32_t)sl_config_int(cfg, "buffer-size");
	ac->engine = strcmp(sl_config_str(cfg, "engine"), "epoll") == 0 ? DP_ENGINE_EPOLL
									: DP_ENGINE_URING;
	if (ac->nbufs & (ac->nbufs - 1)) {
		fprintf(stderr, "sluice: --buffers must be a power of two, not %u\n", ac->nbufs);
		return -EINVAL;
	}
	ac->json = (int)sl_config_int(cfg, "json");
	ac->splice = (int)sl_config_int(cfg, "splice");
	ac->status_line = !ac->json && isatty(1);
	return 0;
}

/* The second of two agents of one session (--ha), on its own thread. */
static void *ha_thread(void *arg)
{
	struct ag_config *c = arg;

	c->ha_rc = ag_run(c, &stop_requested);
	return NULL;
}

/*
 * --ha: two engines bind the same session at two relays, one on the odd
 * entries of --server, the other on the even ones (never both on one relay,
 * where each bind would fence the other). Relays let the later bind own the
 * session and the other take it over if that relay dies (docs/cluster.md).
 */
static int run_ha(const struct ag_config *ac)
{
	static struct ag_config halves[2];
	pthread_t th;
	int rc;

	if (ac->nservers < 2) {
		fprintf(stderr, "sluice: --ha needs two or more relays in --server\n");
		return -EINVAL;
	}
	for (int h = 0; h < 2; h++) {
		halves[h] = *ac;
		halves[h].nservers = 0;
		for (uint32_t i = (uint32_t)h; i < ac->nservers; i += 2)
			halves[h].servers[halves[h].nservers++] = ac->servers[i];
	}
	halves[1].status_line = 0; /* one status line on a terminal: the first agent's */
	if ((rc = pthread_create(&th, NULL, ha_thread, &halves[1])) != 0) {
		fprintf(stderr, "sluice: cannot start the second agent: %s\n", strerror(rc));
		return -rc;
	}
	rc = ag_run(&halves[0], &stop_requested);
	stop_requested = 1; /* one fatal refusal ends both */
	pthread_join(th, NULL);
	return rc < 0 ? rc : halves[1].ha_rc;
}

/* The agent, configured: its exit code. */
static int run(const struct sl_config *cfg)
{
	struct ag_config ac = {0};
	char local[300];
	int rc, port = agent_parse_command(cfg);

	if (port < 0 || build_config(cfg, port, &ac, local, sizeof(local)) < 0 ||
	    build_tls(cfg, &ac) < 0)
		return SL_EXIT_USAGE;
	sl_cli_stop_on_signals(&stop_requested);
	if (sl_config_int(cfg, "ha"))
		rc = run_ha(&ac);
	else
		rc = ag_run(&ac, &stop_requested);
	dp_tls_ctx_free(ac.tls);
	return rc < 0 ? SL_EXIT_FAIL : SL_EXIT_OK;
}

static const struct sl_cli agent_cli = {
	.prog = "sluice",
	.component = "agent",
	.summary = "put a local service on a public URL",
	.usage = "Usage: sluice http PORT [--server ADDR --token T | --api URL --api-key K] "
		 "[--name NAME] [options]\n"
		 "       sluice tcp PORT [same options]\n",
	SL_CLI_OPTS(agent_opts),
	.versions = agent_versions,
	.run = run,
};

int main(int argc, char **argv)
{
	return sl_cli_main(&agent_cli, argc, argv);
}
