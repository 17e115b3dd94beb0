/*
 * agent_main.c: the agent, `sluice`: `sluice http PORT` or `sluice tcp PORT`
 * puts a local service on a public URL through a relay (ag_agent.c);
 * `sluice start NAME...|--all` puts several, the tunnels of its config file
 * (ag_tunnels.c), each its own engine on its own thread.
 */
#include "ag_agent.h"
#include "ag_api.h"
#include "ag_tunnels.h"
#include "dp_conn.h"
#include "dp_tls.h"
#include "dp_tls_accel.h"
#include "sl_cli.h"
#include "sl_log.h"
#include "sl_net.h"
#include "sl_time.h"

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
	SL_INT("buffers", "0", 0, 32768,
	       "receive buffers (a power of two); with --buffer-size, the agent's I/O memory; "
	       "0 = 64 with TLS to the relay, 128 over plain TCP"),
	SL_INT("buffer-size", "0", 0, 1048576,
	       "bytes per receive buffer (at least 1024); 0 = 16384 with TLS, 32768 over plain "
	       "TCP"),
	SL_OPTS_ENGINE,
	SL_OPT_TLS_CRYPTO,
	SL_BOOL("json", "false", "one JSON event per line on stdout"),
	SL_BOOL("keep-session", "false",
		"with --api: leave the session at exit (listed, its name held, until it expires); "
		"by default a clean exit ends it"),
	SL_BOOL("all", "false", "with start: every tunnel of the config file"),
};

static void agent_versions(FILE *out)
{
	fprintf(out, "  wolfSSL %s, msgpack-c %s, liburing (2.3 API)\n", LIBWOLFSSL_VERSION_STRING,
		msgpack_version());
}

/* Every tunnel's session released together within this: a dead or slow
 * control plane must not hold the exit longer. */
#define RELEASE_MS 2000

/*
 * One tunnel: what ag_run is given, and the session the control plane made
 * for it. Ownership: an element of run's array, which outlives every engine
 * thread; its strings borrow from the configuration; no heap inside.
 */
struct tunnel {
	struct ag_config ac;
	const struct sl_config *own; /* its [tunnel.NAME] keys; NULL: the command line's */
	const char *label;	     /* NAME, or NULL for `sluice http|tcp PORT` */
	const char *proto;	     /* "http" or "tcp" */
	int port;
	char local[300];
	struct ag_api_session sess; /* sess.sid[0]: a session this agent created */
	int rc;			    /* the worst result of its engines */
};

/*
 * One ag_run: a tunnel, or one half of a tunnel under --ha. Ownership: an
 * element of run's array, joined before it is freed.
 */
struct engine {
	struct ag_config ac; /* a copy: --ha gives each half its own relays */
	struct tunnel *t;
	pthread_t th;
	int rc, started;
};

static volatile sig_atomic_t stop_requested;

/* "PORT" as 1..65535, or -EINVAL after saying why. */
static int parse_port(const char *text)
{
	char *end;
	long port = strtol(text, &end, 10);

	if (*text == '\0' || *end != '\0' || port < 1 || port > 65535) {
		fprintf(stderr, "sluice: invalid port \"%s\": expected 1..65535\n", text);
		return -EINVAL;
	}
	return (int)port;
}

/* Check "http|tcp PORT" into t; 0 or -EINVAL after printing why. */
static int parse_command(const struct sl_config *cfg, struct tunnel *t)
{
	if (cfg->nargs != 2 ||
	    (strcmp(cfg->args[0], "http") != 0 && strcmp(cfg->args[0], "tcp") != 0)) {
		fprintf(stderr, "sluice: expected a command: sluice http PORT, sluice tcp PORT or "
				"sluice start NAME...|--all (see --help)\n");
		return -EINVAL;
	}
	t->proto = cfg->args[0];
	t->port = parse_port(cfg->args[1]);
	return t->port < 0 ? -EINVAL : 0;
}

/*
 * A value both tables have (name, local-host, basic-auth, bearer-token,
 * duration): the tunnel's section wins when it sets it, being the more
 * specific, whatever the source of the agent's own value.
 */
static const struct sl_val *tval(const struct sl_config *cfg, const struct tunnel *t,
				 const char *name)
{
	if (t->own && sl_config_get(t->own, name)->src != SL_SRC_UNSET)
		return sl_config_get(t->own, name);
	return sl_config_get(cfg, name);
}

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

/* TLS for the relay links (every tunnel's), unless --transport tcp: the
 * context into *ctx (NULL: plaintext); -EINVAL after saying why. */
static int build_tls(const struct sl_config *cfg, void **ctx)
{
	int insecure = (int)sl_config_int(cfg, "insecure");

	*ctx = NULL;
	if (strcmp(sl_config_str(cfg, "transport"), "tcp") == 0) {
		sl_warn("--transport tcp: the link to the relay is not encrypted (development "
			"only)");
		return 0;
	}
	if (insecure)
		sl_warn("--insecure: the relay's certificate is not verified (development only)");
	dp_tls_global_init();
	if (dp_tls_accel_init(sl_config_str(cfg, "tls-crypto")) < 0)
		return -EINVAL;
	*ctx = dp_tls_client_ctx(sl_config_str(cfg, "ca"), insecure);
	return *ctx ? 0 : -EINVAL;
}

/* The names a tunnel's relays' certificates must carry. */
static void tls_names(const struct sl_config *cfg, struct ag_config *ac)
{
	for (uint32_t i = 0; i < ac->nservers; i++) {
		struct ag_server *sv = &ac->servers[i];

		host_of(sv->text, sv->tls_name, sizeof(sv->tls_name));
		if (sl_config_str(cfg, "server-name"))
			snprintf(sv->tls_name, sizeof(sv->tls_name), "%s",
				 sl_config_str(cfg, "server-name"));
	}
	ac->verify_name = !sl_config_int(cfg, "insecure");
}

/* --api: create t's session; the relay's address, or NULL after saying why. */
static const char *api_session(const struct sl_config *cfg, struct tunnel *t)
{
	const struct sl_val *d = tval(cfg, t, "duration");
	struct ag_api_request q = {
		.api = sl_config_str(cfg, "api"),
		.key = sl_config_str(cfg, "api-key"),
		.port = t->port,
		.proto = t->proto,
		.name = tval(cfg, t, "name")->str,
		.duration = d->str ? (uint32_t)d->num : 0,
		.basic = tval(cfg, t, "basic-auth")->str,
		.bearer = tval(cfg, t, "bearer-token")->str,
		.timeout_ms = 10000,
	};
	char err[400];

	if (q.key == NULL) {
		fprintf(stderr, "sluice: --api needs --api-key (or SLUICE_API_KEY)\n");
		return NULL;
	}
	if (ag_api_create(&q, &t->sess, err, sizeof(err)) < 0) {
		fprintf(stderr, "sluice: %s%s%s\n", t->label ? t->label : "", t->label ? ": " : "",
			err);
		return NULL;
	}
	sl_info("%s%ssession %s created by the control plane: %s (relay %s, until %s)",
		t->label ? t->label : "", t->label ? ": " : "", t->sess.sid, t->sess.url,
		t->sess.relay, t->sess.expires);
	return t->sess.relay;
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

/*
 * Receive buffers left at 0 (the default) are chosen by the link. Over TLS
 * every byte is copied out to wolfSSL at once, so 64 x 16 KiB (1 MiB, a
 * record each) serve 64 KiB x 50 as fast as 128 x 32 KiB (4 MiB) and 9%
 * faster (the cache), at the same 100 B x 1,000 rate, and the agent's RSS
 * under that load is 4 MiB less (bench/RESULTS.md, issue 17). Plain TCP
 * keeps 128 x 32 KiB: fewer cost 10% there.
 */
static void io_defaults(const struct sl_config *cfg, struct ag_config *ac)
{
	int tls = strcmp(sl_config_str(cfg, "transport"), "tls") == 0;

	if (ac->nbufs == 0)
		ac->nbufs = tls ? 64 : 128;
	if (ac->bufsize == 0)
		ac->bufsize = tls ? 16384 : 32768;
}

/* The engine's settings, the same for every tunnel; -EINVAL after saying why. */
static int engine_config(const struct sl_config *cfg, struct ag_config *ac)
{
	ac->pool = (uint32_t)sl_config_int(cfg, "pool");
	ac->max_data = (uint32_t)sl_config_int(cfg, "max-streams");
	ac->backoff_max_ms = 30000;
	ac->nbufs = (uint32_t)sl_config_int(cfg, "buffers");
	ac->bufsize = (uint32_t)sl_config_int(cfg, "buffer-size");
	io_defaults(cfg, ac);
	ac->engine = strcmp(sl_config_str(cfg, "engine"), "epoll") == 0 ? DP_ENGINE_EPOLL
									: DP_ENGINE_URING;
	if (ac->nbufs < 8 || (ac->nbufs & (ac->nbufs - 1))) {
		fprintf(stderr, "sluice: --buffers must be a power of two from 8, not %u\n",
			ac->nbufs);
		return -EINVAL;
	}
	if (ac->bufsize < 1024) {
		fprintf(stderr, "sluice: --buffer-size must be at least 1024, not %u\n",
			ac->bufsize);
		return -EINVAL;
	}
	ac->json = (int)sl_config_int(cfg, "json");
	ac->splice = (int)sl_config_int(cfg, "splice");
	ac->status_line = !ac->json && isatty(1);
	return 0;
}

/* Fill t->ac (its session first, with --api); 0 or -EINVAL after saying why. */
static int build_config(const struct sl_config *cfg, struct tunnel *t, void *tls)
{
	struct ag_config *ac = &t->ac;
	const char *server = sl_config_str(cfg, "server");
	const char *lhost = tval(cfg, t, "local-host")->str;

	if (sl_config_str(cfg, "api") != NULL) {
		const char *relay = api_session(cfg, t);

		if (relay == NULL)
			return -EINVAL;
		/* An explicit --server list wins over the relay the API names. */
		if (sl_config_get(cfg, "server")->src == SL_SRC_DEFAULT)
			server = relay;
		ac->token = t->sess.token;
		ac->name = NULL; /* the session has its name */
	} else {
		ac->token = sl_config_str(cfg, "token");
		ac->name = tval(cfg, t, "name")->str;
	}
	snprintf(t->local, sizeof(t->local), strchr(lhost, ':') ? "[%s]:%d" : "%s:%d", lhost,
		 t->port);
	if (parse_servers(server, ac) < 0)
		return -EINVAL;
	if (sl_addr_parse(t->local, &ac->local, &ac->local_len) < 0) {
		fprintf(stderr, "sluice: cannot resolve the local service %s\n", t->local);
		return -EINVAL;
	}
	ac->local_text = t->local;
	ac->proto = strcmp(t->proto, "tcp") == 0 ? PR_PROTO_TCP : PR_PROTO_HTTP;
	ac->label = t->label;
	ac->tls = tls;
	tls_names(cfg, ac);
	return engine_config(cfg, ac);
}

/*
 * A clean exit ends the session this agent created (DELETE, ag_api.c), so
 * the listing shows no ghost and the name is free at once, unless
 * --keep-session. Not after a fatal refusal: the relay ended the session
 * (expired or revoked: deleting it would rewrite what the listing says
 * about it) or a newer agent replaced this one (-ECONNABORTED, ag_agent.c:
 * the name is that agent's now). Best effort by deadline (sl_mono_ms),
 * shared by every tunnel.
 */
static void release(const struct sl_config *cfg, const struct tunnel *t, uint64_t deadline)
{
	const char *sid = t->sess.sid, *tag = t->label ? t->label : "", *sep = t->label ? ": " : "";
	uint64_t now = sl_mono_ms();
	char err[400];
	int e;

	if (!sid[0])
		return;
	if (sl_config_int(cfg, "keep-session")) {
		sl_info("%s%ssession %s kept (--keep-session) until %s", tag, sep, sid,
			t->sess.expires);
		return;
	}
	if (t->rc == -ECONNABORTED) {
		sl_info("%s%ssession %s replaced by a newer agent: not ours to release", tag, sep,
			sid);
		return;
	}
	if (t->rc < 0) {
		sl_info("%s%ssession %s ended by the relay: nothing to release", tag, sep, sid);
		return;
	}
	e = now < deadline ? ag_api_delete(sl_config_str(cfg, "api"), sl_config_str(cfg, "api-key"),
					   sid, (int)(deadline - now), err, sizeof(err))
			   : (snprintf(err, sizeof(err), "no time left"), -ETIMEDOUT);
	if (e == 0)
		sl_info("%s%ssession %s released", tag, sep, sid);
	else if (e == -ENOENT)
		sl_info("%s%ssession %s already ended: %s", tag, sep, sid, err);
	else
		sl_warn("%s%ssession %s not released: %s; it stays until %s", tag, sep, sid, err,
			t->sess.expires);
}

static void *engine_thread(void *arg)
{
	struct engine *e = arg;

	sl_log_set_tag(e->ac.label);
	e->rc = ag_run(&e->ac, &stop_requested);
	/* wolfSSL's ECC point cache and the record contexts are per thread:
	 * gone with a thread that exits, unless freed here (LeakSanitizer). */
	if (e->ac.tls)
		dp_tls_thread_done();
	/* Any end stops all: a signal did already, and one fatal refusal ends
	 * the agent (both halves of one --ha session, every tunnel of start). */
	stop_requested = 1;
	return NULL;
}

/* Every engine, the first on this thread; returns when all have ended. */
static void run_engines(struct engine *e, size_t n)
{
	for (size_t i = 1; i < n; i++) {
		int rc = pthread_create(&e[i].th, NULL, engine_thread, &e[i]);

		if (rc != 0) {
			fprintf(stderr, "sluice: cannot start an agent thread: %s\n", strerror(rc));
			e[i].rc = -rc;
			stop_requested = 1;
			break;
		}
		e[i].started = 1;
	}
	engine_thread(&e[0]);
	for (size_t i = 1; i < n; i++)
		if (e[i].started)
			pthread_join(e[i].th, NULL);
}

/*
 * The engines of n tunnels into e (2n entries): one each, or with --ha two,
 * binding the same session at two relays, one on the odd entries of
 * --server, the other on the even ones (never both on one relay, where each
 * bind would fence the other). Relays let the later bind own the session
 * and the other take it over if that relay dies (docs/cluster.md). Returns
 * how many, or -EINVAL after saying why.
 */
static int make_engines(const struct sl_config *cfg, struct tunnel *t, size_t n, struct engine *e)
{
	int ha = (int)sl_config_int(cfg, "ha");
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		if (ha && t[i].ac.nservers < 2) {
			fprintf(stderr, "sluice: --ha needs two or more relays in --server\n");
			return -EINVAL;
		}
		for (int h = 0; h < (ha ? 2 : 1); h++, k++) {
			e[k].ac = t[i].ac;
			e[k].t = &t[i];
			/* One live status line on a terminal: the first engine's, with one tunnel.
			 */
			e[k].ac.status_line = t[i].ac.status_line && k == 0 && n == 1;
			if (!ha)
				continue;
			e[k].ac.nservers = 0;
			for (uint32_t s = (uint32_t)h; s < t[i].ac.nservers; s += 2)
				e[k].ac.servers[e[k].ac.nservers++] = t[i].ac.servers[s];
		}
	}
	return (int)k;
}

/*
 * `sluice start NAME...|--all`: the picked tunnels of the config file into
 * t (AG_TUNNELS_MAX entries), their sections in *defs; how many, or -EINVAL
 * after saying why.
 */
static int pick_tunnels(const struct sl_config *cfg, struct ag_tunnels *defs, struct tunnel *t)
{
	const char *path = sl_config_str(cfg, "config");
	size_t idx[AG_TUNNELS_MAX];
	char err[600];
	int n;

	if (path == NULL) {
		fprintf(stderr, "sluice: start needs a config file with [tunnel.NAME] sections "
				"(--config FILE)\n");
		return -EINVAL;
	}
	if (sl_config_get(cfg, "name")->src != SL_SRC_UNSET) {
		fprintf(stderr, "sluice: with start, a name is per tunnel (name = in its "
				"[tunnel.NAME] section)\n");
		return -EINVAL;
	}
	if (ag_tunnels_load(cfg, defs, err, sizeof(err)) < 0 ||
	    (n = ag_tunnels_pick(defs, cfg->args + 1, cfg->nargs - 1,
				 (int)sl_config_int(cfg, "all"), path, idx, err, sizeof(err))) <
		    0) {
		fprintf(stderr, "sluice: %s\n", err);
		return -EINVAL;
	}
	for (int i = 0; i < n; i++) {
		struct ag_tunnel_def *d = &defs->v[idx[i]];

		t[i].own = &d->cfg;
		t[i].label = d->label;
		t[i].proto = sl_config_str(&d->cfg, "proto");
		t[i].port = (int)sl_config_int(&d->cfg, "port");
	}
	return n;
}

/* The tunnels the command line asks for into t; how many, or -EINVAL. */
static int parse_tunnels(const struct sl_config *cfg, struct ag_tunnels *defs, struct tunnel *t)
{
	if (cfg->nargs >= 1 && strcmp(cfg->args[0], "start") == 0)
		return pick_tunnels(cfg, defs, t);
	if (sl_config_int(cfg, "all")) {
		fprintf(stderr, "sluice: --all goes with start (sluice start --all)\n");
		return -EINVAL;
	}
	return parse_command(cfg, &t[0]) < 0 ? -EINVAL : 1;
}

/* Configure, run and release n tunnels; the exit code. */
static int run_tunnels(const struct sl_config *cfg, struct tunnel *t, size_t n, struct engine *e)
{
	int rc = SL_EXIT_USAGE, ne = 0;
	size_t made = 0;
	void *tls = NULL;
	uint64_t deadline;

	if (build_tls(cfg, &tls) < 0)
		goto out;
	/* Bounded by AG_TUNNELS_MAX; one that fails ends the start-up, and the
	 * sessions made before it are released below. */
	while (made < n && build_config(cfg, &t[made], tls) == 0)
		made++;
	if (made < n || (ne = make_engines(cfg, t, n, e)) < 0)
		goto out;
	sl_cli_stop_on_signals(&stop_requested);
	run_engines(e, (size_t)ne);
	rc = SL_EXIT_OK;
	for (int i = 0; i < ne; i++) {
		if (e[i].rc < 0 && e[i].t->rc == 0)
			e[i].t->rc = e[i].rc;
		if (e[i].rc < 0)
			rc = SL_EXIT_FAIL;
	}
out:
	deadline = sl_mono_ms() + RELEASE_MS;
	for (size_t i = 0; i < n; i++)
		release(cfg, &t[i], deadline);
	dp_tls_ctx_free(tls);
	return rc;
}

/* The agent, configured: its exit code. */
static int run(const struct sl_config *cfg)
{
	struct ag_tunnels *defs = calloc(1, sizeof(*defs));
	struct tunnel *t = calloc(AG_TUNNELS_MAX, sizeof(*t));
	struct engine *e = calloc(2 * AG_TUNNELS_MAX, sizeof(*e));
	int rc = SL_EXIT_FAIL, n;

	if (defs == NULL || t == NULL || e == NULL)
		goto out;
	n = parse_tunnels(cfg, defs, t);
	rc = n > 0 ? run_tunnels(cfg, t, (size_t)n, e) : SL_EXIT_USAGE;
	ag_tunnels_free(defs);
out:
	free(e);
	free(t);
	free(defs);
	return rc;
}

static const struct sl_cli agent_cli = {
	.prog = "sluice",
	.component = "agent",
	.summary = "put a local service on a public URL",
	.usage = "Usage: sluice http PORT [--server ADDR --token T | --api URL --api-key K] "
		 "[--name NAME] [options]\n"
		 "       sluice tcp PORT [same options]\n"
		 "       sluice start NAME... | --all  --config FILE [options]\n"
		 "         the tunnels of FILE's [tunnel.NAME] sections (keys: proto, port, name,\n"
		 "         local-host, basic-auth, bearer-token, duration), each its own\n"
		 "         connection and session; the options above them apply to all\n"
		 "         (docs/configuration.md)\n"
		 "With --api, a clean exit (SIGINT, SIGTERM) ends the session it created\n"
		 "(--keep-session leaves it).\n",
	SL_CLI_OPTS(agent_opts),
	.versions = agent_versions,
	.run = run,
	.sections = 1,
};

int main(int argc, char **argv)
{
	return sl_cli_main(&agent_cli, argc, argv);
}
