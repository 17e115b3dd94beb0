/*
 * control_main.c: sluice-control's entry point: options, logging, signals,
 * then the h2o server; or `sluice-control keys create [--admin]`, which
 * writes an API key into Redis and prints it once.
 */
#include "api/cp_api.h"
#include "http/cp_http.h"
#include "http/cp_key.h"
#include "cli/cp_cli_ssh.h"
#include "sl_redis.h"
#include "pr_token.h"
#include "sl_cli.h"
#include "sl_log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <h2o/version.h>
#include <hiredis.h>
#include <libssh2.h>
#include <msgpack.h>

/* The server's --redis, and keys create's. */
#define CONTROL_REDIS                                                                              \
	SL_OPT_REDIS("redis://127.0.0.1:6379",                                                     \
		     "Redis: redis://[[user]:password@]host[:port][/db] or unix:/path")

static const struct sl_opt control_opts[] = {
	SL_OPTS_COMMON,
	SL_ADDR("listen", "127.0.0.1:8000", "HTTP API listener"),
	SL_STR("host", NULL, "listen on this address (with --port: instead of --listen)",
	       .env_alias = "HOST"),
	SL_INT("port", NULL, 1, 65535, "listen on this port (with --host: instead of --listen)",
	       .env_alias = "PORT"),
	CONTROL_REDIS,
	SL_INT("redis-timeout-ms", "250", 10, 10000, "bound on each Redis health probe"),
	SL_SECRET(
		"admin-key",
		"the bootstrap admin API key (or create one: sluice-control keys create --admin)"),
	SL_OPT_SESSION_SECRET(
		"HMAC key of agent tokens and protected URLs, 32 bytes or more; relays share it"),
	SL_BOOL("dev", "false", "development mode: a well-known session secret is accepted"),
	SL_ADDR("relay", "127.0.0.1:7000",
		"the relays' agent address, handed to agents with their token"),
	SL_STR("public-url", "http://localhost:8080",
	       "scheme://domain[:port] under which tunnels are public (name.domain)"),
	SL_INT("max-sessions", "10000", 1, 10000000,
	       "active sessions at most (health fails at 90 percent)", .env_alias = "MAX_SESSIONS"),
	SL_INT("max-reserved-names", "5", 0, 100000,
	       "names one API key may reserve (POST /api/v1/names)"),
	SL_INT("session-timeout", "3600", 60, 86400,
	       "duration of a session that asks for none, seconds", .env_alias = "SESSION_TIMEOUT"),
	SL_STR("limit-sessions", "10/1h",
	       "sessions a key may create, COUNT/WINDOW or off (a key's own limits override)",
	       .check = pr_limit_check),
	SL_STR("limit-requests", "1000/1m", "HTTP requests per tunnel", .check = pr_limit_check),
	SL_STR("limit-bandwidth", "1Gi/1h",
	       "bytes per tunnel, both directions together (over it, transfers slow down)",
	       .check = pr_limit_check),
	SL_STR("limit-tcp", "600/1m", "new connections per TCP tunnel", .check = pr_limit_check),
	SL_STR("limit-key-requests", "off",
	       "HTTP requests of all of a key's tunnels together, on every relay",
	       .check = pr_limit_check),
	SL_INT("duration-min", "60", 1, 86400, "shortest session a client may ask for, seconds"),
	SL_INT("port-min", "1000", 1, 65535, "lowest local port an agent may expose"),
	SL_INT("port-max", "65535", 1, 65535, "highest local port an agent may expose"),
	SL_STR("cors-origins", "", "comma-separated origins allowed by CORS (\"*\": any)",
	       .env_alias = "CORS_ORIGINS"),
	SL_STR("audit-log", NULL, "append security events here as JSON lines (default: the log)"),
	SL_BOOL("localtunnel", "false",
		"answer the localtunnel client (npm \"localtunnel\", lt --host URL): anonymous "
		"sessions"),
	SL_RANGE("lt-ports", "21000-21999",
		 "relay ports for localtunnel clients' sockets (one per session)"),
	SL_ADDR("dns-server", NULL,
		"ask this DNS server (ip:port) for domains' TXT challenges (default: the "
		"system's)"),
	SL_ADDR("challenge-connect", NULL,
		"HTTP domain challenges connect here instead of to the domain (split DNS)"),
	SL_STR("relay-binary", "",
	       "the sluice-relay that POST /api/v1/nodes/{id}/provision installs (default: "
	       "the one beside this program)"),
	SL_STR("relay-redis", "", "Redis as provisioned relays reach it (default: --redis)"),
	SL_INT("min-relays", "1", 0, 100000, "health fails with fewer relays heartbeating"),
};

static void control_versions(FILE *out)
{
	fprintf(out, "  h2o %s, libssh2 %s, msgpack-c %s, hiredis %d.%d.%d\n", H2O_VERSION,
		libssh2_version(0), msgpack_version(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
}

static volatile sig_atomic_t stop_requested;

/* The session secret: required outside development mode, never the
 * development one there. NULL after printing why. */
static const char *session_secret(const struct sl_config *cfg)
{
	const char *sec = sl_config_str(cfg, "session-secret");
	int dev = sl_config_int(cfg, "dev") != 0;

	if (sec == NULL && dev) {
		sl_warn("development mode: agent tokens are signed with a well-known secret");
		return PR_DEV_SECRET;
	}
	if (sec == NULL) {
		sl_error("a session secret is required: --session-secret or SESSION_SECRET_KEY "
			 "(32 bytes or more, shared with the relays), or --dev for development");
		return NULL;
	}
	if (strlen(sec) < PR_TOKEN_KEY_MIN) {
		sl_error("the session secret must be %d bytes or more", PR_TOKEN_KEY_MIN);
		return NULL;
	}
	if (!dev && strcmp(sec, PR_DEV_SECRET) == 0) {
		sl_error("the development session secret is refused outside --dev");
		return NULL;
	}
	return sec;
}

/* --host/--port (HOST, PORT) replace --listen's default. */
static const char *listen_addr(const struct sl_config *cfg, char *buf, size_t cap)
{
	const struct sl_val *h = sl_config_get(cfg, "host"), *p = sl_config_get(cfg, "port");

	if (h->str == NULL && p->str == NULL)
		return sl_config_str(cfg, "listen");
	snprintf(buf, cap, "%s:%ld", h->str ? h->str : "127.0.0.1", p->str ? p->num : 8000);
	return buf;
}

/* --relay-binary, or sluice-relay beside this program when it is there. */
static const char *relay_binary(const struct sl_config *cfg, char *buf, size_t cap)
{
	ssize_t n;
	char *slash;

	if (*sl_config_str(cfg, "relay-binary"))
		return sl_config_str(cfg, "relay-binary");
	n = readlink("/proc/self/exe", buf, cap - 16);
	if (n <= 0 || !(slash = memrchr(buf, '/', (size_t)n)))
		return NULL;
	memcpy(slash + 1, "sluice-relay", sizeof("sluice-relay"));
	return access(buf, R_OK) == 0 ? buf : NULL;
}

static int serve(const struct sl_config *cfg)
{
	struct sl_redis_target redis;
	struct cp_server_config scfg = {0};
	struct cp_server *srv = NULL;
	char why[160], addr[300], relay_bin[4096];
	int err;

	/* Already validated by the option's check; parse again to use it. */
	if (sl_redis_url_parse(sl_config_str(cfg, "redis"), &redis, why, sizeof(why)) < 0)
		return -EINVAL;
	scfg.session_secret = session_secret(cfg);
	if (scfg.session_secret == NULL)
		return -EINVAL;
	scfg.listen = listen_addr(cfg, addr, sizeof(addr));
	scfg.redis = &redis;
	scfg.redis_timeout_ms = (int)sl_config_int(cfg, "redis-timeout-ms");
	scfg.admin_key = sl_config_str(cfg, "admin-key");
	scfg.relay = sl_config_str(cfg, "relay");
	scfg.public_url = sl_config_str(cfg, "public-url");
	scfg.cors_origins = sl_config_str(cfg, "cors-origins");
	scfg.audit_path = sl_config_str(cfg, "audit-log");
	scfg.max_sessions = sl_config_int(cfg, "max-sessions");
	scfg.max_reserved_names = sl_config_int(cfg, "max-reserved-names");
	scfg.duration_default = (int)sl_config_int(cfg, "session-timeout");
	scfg.duration_min = (int)sl_config_int(cfg, "duration-min");
	for (int i = 0; i < CP_LIM_N; i++) {
		static const char *const opt[CP_LIM_N] = {"limit-sessions", "limit-requests",
							  "limit-bandwidth", "limit-tcp",
							  "limit-key-requests"};

		pr_limit_parse(sl_config_str(cfg, opt[i]), &scfg.limits[i], NULL, 0);
	}
	scfg.port_min = (int)sl_config_int(cfg, "port-min");
	scfg.port_max = (int)sl_config_int(cfg, "port-max");
	scfg.min_relays = (int)sl_config_int(cfg, "min-relays");
	scfg.localtunnel = (int)sl_config_int(cfg, "localtunnel");
	scfg.dns_server = sl_config_str(cfg, "dns-server");
	scfg.challenge_connect = sl_config_str(cfg, "challenge-connect");
	scfg.redis_url = sl_config_str(cfg, "redis");
	scfg.relay_binary = relay_binary(cfg, relay_bin, sizeof(relay_bin));
	scfg.relay_redis = sl_config_str(cfg, "relay-redis");
	scfg.lt_lo = (int)(sl_config_int(cfg, "lt-ports") >> 16);
	scfg.lt_hi = (int)(sl_config_int(cfg, "lt-ports") & 0xffff);
	if (scfg.admin_key && strlen(scfg.admin_key) < 16) {
		sl_error("the admin key must be 16 bytes or more");
		return -EINVAL;
	}
	/* Before the listener opens: a SIGTERM as soon as the port answers
	 * must find the handler (the loop then sees the flag and stops). */
	sl_cli_stop_on_signals(&stop_requested);
	scfg.routes = &cp_api_routes;
	err = cp_server_create(&srv, &scfg);
	if (err < 0) {
		sl_error("cannot listen on %s: %s", scfg.listen, strerror(-err));
		goto out;
	}
	sl_info("listening on http://%s (redis %s)", scfg.listen, sl_config_str(cfg, "redis"));
	err = cp_server_run(srv, &stop_requested);
	sl_info("shutting down");
	cp_server_free(srv);
out:
	memset(redis.password, 0, sizeof(redis.password));
	return err;
}

static const struct sl_opt keys_opts[] = {
	SL_OPTS_COMMON,
	CONTROL_REDIS,
	SL_BOOL("admin", "false", "an admin key"),
	SL_STR("name", "", "a label for the key"),
};

/* `keys create`: the key on stdout (alone on its line, for scripts), the
 * rest on stderr. */
static int keys_create(const struct sl_config *cfg)
{
	struct sl_redis_target t;
	struct cp_key k;
	char why[200];
	int rc, err;

	sl_redis_url_parse(sl_config_str(cfg, "redis"), &t, why, sizeof(why));
	if (cp_key_new(&k, sl_config_str(cfg, "name"),
		       sl_config_int(cfg, "admin") ? CP_SCOPE_ADMIN | CP_SCOPE_TUNNELS
						   : CP_SCOPE_TUNNELS) < 0) {
		sl_error("no randomness for a key");
		rc = SL_EXIT_FAIL;
		goto out;
	}
	err = cp_key_store(&t, 2000, &k, why, sizeof(why));
	if (err < 0) {
		sl_error("cannot store the key: %s", why);
		rc = SL_EXIT_FAIL;
		goto out;
	}
	fprintf(stderr, "key %s (%s) created; it is shown once, keep it now:\n", k.id, k.scopes);
	printf("%s\n", k.key);
	rc = SL_EXIT_OK;
out:
	memset(&k, 0, sizeof(k));
	memset(t.password, 0, sizeof(t.password));
	return rc;
}

static const struct sl_cli keys_cli = {
	.prog = "sluice-control keys create",
	.component = "control",
	.summary = "create an API key in Redis and print it once",
	.usage = "Usage: sluice-control keys create [--admin] [--name NAME] [--redis URL]\n",
	SL_CLI_OPTS(keys_opts),
	.versions = control_versions,
	.run = keys_create,
};

static const struct sl_cli_verb control_verbs[] = {
	{"ssh", &cp_ssh_cli, NULL},
	{"node", &cp_ssh_cli, NULL},
	{"keys create", &keys_cli, NULL},
	{"keys", NULL,
	 "only \"keys create\" exists; keys are listed and revoked through the API "
	 "(/api/v1/keys)"},
	{NULL, NULL, NULL},
};

static const struct sl_cli control_cli = {
	.prog = "sluice-control",
	.component = "control",
	.summary = "the sluice control plane: REST API, session state, relay hosts",
	.usage = "Usage: sluice-control [--listen ADDR] [--redis URL] [options]\n"
		 "       sluice-control keys create [--admin] [--name NAME] [--redis URL]\n"
		 "       sluice-control ssh exec|put|get|diagnose HOST ... (ssh --help)\n",
	SL_CLI_OPTS(control_opts),
	.versions = control_versions,
	.run = serve,
	.verbs = control_verbs,
};

int main(int argc, char **argv)
{
	return sl_cli_main(&control_cli, argc, argv);
}
