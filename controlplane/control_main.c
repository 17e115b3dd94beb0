/*
 * control_main.c: sluice-control's entry point: options, logging, signals,
 * then the h2o server. Today it serves health and version; the tunnel
 * sessions API, keys and the SSH managers arrive with their issues.
 */
#include "cp_http.h"
#include "cp_redis.h"
#include "sl_cli.h"
#include "sl_log.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

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
	{.name = "redis",
	 .type = SL_OPT_STR,
	 .def = "redis://127.0.0.1:6379",
	 .help = "Redis: redis://[[user]:password@]host[:port][/db] or unix:/path",
	 .check = cp_redis_url_check},
	{.name = "redis-timeout-ms",
	 .type = SL_OPT_INT,
	 .def = "250",
	 .min = 10,
	 .max = 10000,
	 .help = "bound on each Redis health probe"},
	{.name = "admin-key",
	 .type = SL_OPT_STR,
	 .flags = SL_OPT_F_SECRET,
	 .help = "first admin API key"},
	{.name = "session-secret",
	 .type = SL_OPT_STR,
	 .flags = SL_OPT_F_SECRET,
	 .help = "HMAC key for agent tokens"},
	{.name = "dev", .type = SL_OPT_BOOL, .def = "false", .help = "development mode"},
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
	.usage = "Usage: sluice-control [--listen ADDR] [--redis URL] [options]\n",
	.opts = control_opts,
	.nopts = sizeof(control_opts) / sizeof(control_opts[0]),
	.versions = control_versions,
};

static volatile sig_atomic_t stop_requested;

static int serve(const struct sl_config *cfg)
{
	struct cp_redis_target redis;
	struct cp_server_config scfg;
	struct cp_server *srv = NULL;
	char why[160];
	int err;

	/* Already validated by the option's check; parse again to use it. */
	if (cp_redis_url_parse(sl_config_str(cfg, "redis"), &redis, why, sizeof(why)) < 0)
		return -EINVAL;
	scfg.listen = sl_config_str(cfg, "listen");
	scfg.redis = &redis;
	scfg.redis_timeout_ms = (int)sl_config_int(cfg, "redis-timeout-ms");
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

int main(int argc, char **argv)
{
	struct sl_config cfg;
	int rc = sl_cli_start(&control_cli, &cfg, argc, argv);

	if (rc != 0) {
		sl_config_free(&cfg);
		return rc > 0 ? SL_EXIT_OK : SL_EXIT_USAGE;
	}
	rc = serve(&cfg);
	sl_config_free(&cfg);
	return rc < 0 ? SL_EXIT_FAIL : SL_EXIT_OK;
}
