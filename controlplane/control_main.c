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

static const struct sl_opt control_opts[] = {
	SL_CONFIG_COMMON_OPTS,
	{.name = "listen",
	 .type = SL_OPT_ADDR,
	 .def = "127.0.0.1:8000",
	 .help = "HTTP API listener"},
	{.name = "host",
	 .type = SL_OPT_STR,
	 .help = "listen on this address (with --port: instead of --listen)",
	 .env_alias = "HOST"},
	{.name = "port",
	 .type = SL_OPT_INT,
	 .min = 1,
	 .max = 65535,
	 .help = "listen on this port (with --host: instead of --listen)",
	 .env_alias = "PORT"},
	{.name = "redis",
	 .type = SL_OPT_STR,
	 .def = "redis://127.0.0.1:6379",
	 .help = "Redis: redis://[[user]:password@]host[:port][/db] or unix:/path",
	 .check = sl_redis_url_check,
	 .env_alias = "REDIS_URL"},
	{.name = "redis-timeout-ms",
	 .type = SL_OPT_INT,
	 .def = "250",
	 .min = 10,
	 .max = 10000,
	 .help = "bound on each Redis health probe"},
	{.name = "admin-key",
	 .type = SL_OPT_STR,
	 .flags = SL_OPT_F_SECRET,
	 .help = "the bootstrap admin API key (or create one: sluice-control keys create --admin)"},
	{.name = "session-secret",
	 .type = SL_OPT_STR,
	 .flags = SL_OPT_F_SECRET,
	 .help = "HMAC key of agent tokens and protected URLs, 32 bytes or more; relays share it",
	 .env_alias = "SESSION_SECRET_KEY"},
	{.name = "dev",
	 .type = SL_OPT_BOOL,
	 .def = "false",
	 .help = "development mode: a well-known session secret is accepted"},
	{.name = "relay",
	 .type = SL_OPT_ADDR,
	 .def = "127.0.0.1:7000",
	 .help = "the relays' agent address, handed to agents with their token"},
	{.name = "public-url",
	 .type = SL_OPT_STR,
	 .def = "http://localhost:8080",
	 .help = "scheme://domain[:port] under which tunnels are public (name.domain)"},
	{.name = "max-sessions",
	 .type = SL_OPT_INT,
	 .def = "10000",
	 .min = 1,
	 .max = 10000000,
	 .help = "active sessions at most (health fails at 90 percent)",
	 .env_alias = "MAX_SESSIONS"},
	{.name = "session-timeout",
	 .type = SL_OPT_INT,
	 .def = "3600",
	 .min = 60,
	 .max = 86400,
	 .help = "duration of a session that asks for none, seconds",
	 .env_alias = "SESSION_TIMEOUT"},
	{.name = "limit-sessions",
	 .type = SL_OPT_STR,
	 .def = "10/1h",
	 .help = "sessions a key may create, COUNT/WINDOW or off (a key's own limits override)",
	 .check = pr_limit_check},
	{.name = "limit-requests",
	 .type = SL_OPT_STR,
	 .def = "1000/1m",
	 .help = "HTTP requests per tunnel",
	 .check = pr_limit_check},
	{.name = "limit-bandwidth",
	 .type = SL_OPT_STR,
	 .def = "1Gi/1h",
	 .help = "bytes per tunnel, both directions together (over it, transfers slow down)",
	 .check = pr_limit_check},
	{.name = "limit-tcp",
	 .type = SL_OPT_STR,
	 .def = "600/1m",
	 .help = "new connections per TCP tunnel",
	 .check = pr_limit_check},
	{.name = "limit-key-requests",
	 .type = SL_OPT_STR,
	 .def = "off",
	 .help = "HTTP requests of all of a key's tunnels together, on every relay",
	 .check = pr_limit_check},
	{.name = "duration-min",
	 .type = SL_OPT_INT,
	 .def = "60",
	 .min = 1,
	 .max = 86400,
	 .help = "shortest session a client may ask for, seconds"},
	{.name = "port-min",
	 .type = SL_OPT_INT,
	 .def = "1000",
	 .min = 1,
	 .max = 65535,
	 .help = "lowest local port an agent may expose"},
	{.name = "port-max",
	 .type = SL_OPT_INT,
	 .def = "65535",
	 .min = 1,
	 .max = 65535,
	 .help = "highest local port an agent may expose"},
	{.name = "cors-origins",
	 .type = SL_OPT_STR,
	 .def = "",
	 .help = "comma-separated origins allowed by CORS (\"*\": any)",
	 .env_alias = "CORS_ORIGINS"},
	{.name = "audit-log",
	 .type = SL_OPT_STR,
	 .help = "append security events here as JSON lines (default: the log)"},
	{.name = "localtunnel",
	 .type = SL_OPT_BOOL,
	 .def = "false",
	 .help = "answer the localtunnel client (npm \"localtunnel\", lt --host URL): anonymous "
		 "sessions"},
	{.name = "lt-ports",
	 .type = SL_OPT_RANGE,
	 .def = "21000-21999",
	 .help = "relay ports for localtunnel clients' sockets (one per session)"},
	{.name = "dns-server",
	 .type = SL_OPT_ADDR,
	 .help = "ask this DNS server (ip:port) for domains' TXT challenges (default: the "
		 "system's)"},
	{.name = "challenge-connect",
	 .type = SL_OPT_ADDR,
	 .help = "HTTP domain challenges connect here instead of to the domain (split DNS)"},
	{.name = "relay-binary",
	 .type = SL_OPT_STR,
	 .def = "",
	 .help = "the sluice-relay that POST /api/v1/nodes/{id}/provision installs (default: "
		 "the one beside this program)"},
	{.name = "relay-redis",
	 .type = SL_OPT_STR,
	 .def = "",
	 .help = "Redis as provisioned relays reach it (default: --redis)"},
	{.name = "min-relays",
	 .type = SL_OPT_INT,
	 .def = "1",
	 .min = 0,
	 .max = 100000,
	 .help = "health fails with fewer relays heartbeating"},
};

static void control_versions(FILE *out)
{
	fprintf(out, "  h2o %s, libssh2 %s, msgpack-c %s, hiredis %d.%d.%d\n", H2O_VERSION,
		libssh2_version(0), msgpack_version(), HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
}

static const struct sl_cli control_cli = {
	.prog = "sluice-control",
	.component = "control",
	.summary = "the sluice control plane: REST API, session state, relay hosts",
	.usage = "Usage: sluice-control [--listen ADDR] [--redis URL] [options]\n"
		 "       sluice-control keys create [--admin] [--name NAME] [--redis URL]\n"
		 "       sluice-control ssh exec|put|get|diagnose HOST ... (ssh --help)\n",
	.opts = control_opts,
	.nopts = sizeof(control_opts) / sizeof(control_opts[0]),
	.versions = control_versions,
};

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
	scfg.routes = &cp_api_routes;
	err = cp_server_create(&srv, &scfg);
	if (err < 0) {
		sl_error("cannot listen on %s: %s", scfg.listen, strerror(-err));
		goto out;
	}
	sl_info("listening on http://%s (redis %s)", scfg.listen, sl_config_str(cfg, "redis"));
	sl_cli_stop_on_signals(&stop_requested);
	err = cp_server_run(srv, &stop_requested);
	sl_info("shutting down");
	cp_server_free(srv);
out:
	memset(redis.password, 0, sizeof(redis.password));
	return err;
}

static const struct sl_opt keys_opts[] = {
	SL_CONFIG_COMMON_OPTS,
	{.name = "redis",
	 .type = SL_OPT_STR,
	 .def = "redis://127.0.0.1:6379",
	 .help = "Redis: redis://[[user]:password@]host[:port][/db] or unix:/path",
	 .check = sl_redis_url_check,
	 .env_alias = "REDIS_URL"},
	{.name = "admin", .type = SL_OPT_BOOL, .def = "false", .help = "an admin key"},
	{.name = "name", .type = SL_OPT_STR, .def = "", .help = "a label for the key"},
};

static const struct sl_cli keys_cli = {
	.prog = "sluice-control keys create",
	.component = "control",
	.summary = "create an API key in Redis and print it once",
	.usage = "Usage: sluice-control keys create [--admin] [--name NAME] [--redis URL]\n",
	.opts = keys_opts,
	.nopts = sizeof(keys_opts) / sizeof(keys_opts[0]),
	.versions = control_versions,
};

/* `keys create`: the key on stdout (alone on its line, for scripts), the
 * rest on stderr. */
static int keys_create(int argc, char **argv)
{
	struct sl_config cfg;
	struct sl_redis_target t;
	struct cp_key k;
	char why[200];
	int rc = sl_cli_start(&keys_cli, &cfg, argc, argv), err;

	if (rc != 0) {
		sl_config_free(&cfg);
		return rc > 0 ? SL_EXIT_OK : SL_EXIT_USAGE;
	}
	sl_redis_url_parse(sl_config_str(&cfg, "redis"), &t, why, sizeof(why));
	if (cp_key_new(&k, sl_config_str(&cfg, "name"),
		       sl_config_int(&cfg, "admin") ? CP_SCOPE_ADMIN | CP_SCOPE_TUNNELS
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
	sl_config_free(&cfg);
	return rc;
}

int main(int argc, char **argv)
{
	struct sl_config cfg;
	int rc;

	if (argc >= 2 && (strcmp(argv[1], "ssh") == 0 || strcmp(argv[1], "node") == 0))
		return cp_ssh_cli_main(argc - 1, argv + 1);
	if (argc >= 3 && strcmp(argv[1], "keys") == 0 && strcmp(argv[2], "create") == 0)
		return keys_create(argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "keys") == 0) {
		fprintf(stderr, "sluice-control keys: only \"keys create\" exists; keys are listed "
				"and revoked through the API (/api/v1/keys)\n");
		return SL_EXIT_USAGE;
	}
	rc = sl_cli_start(&control_cli, &cfg, argc, argv);
	if (rc != 0) {
		sl_config_free(&cfg);
		return rc > 0 ? SL_EXIT_OK : SL_EXIT_USAGE;
	}
	rc = serve(&cfg);
	sl_config_free(&cfg);
	if (rc == -EINVAL)
		return SL_EXIT_USAGE;
	return rc < 0 ? SL_EXIT_FAIL : SL_EXIT_OK;
}
