/*
 * agent_main.c: the agent, `sluice`: `sluice http PORT` or `sluice tcp PORT`
 * puts a local service on a public URL. The command line and configuration
 * are complete; the tunnel itself is the subject of the dataplane issue and
 * is not in this build yet, which the agent says plainly.
 */
#include "sl_cli.h"
#include "sl_log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <wolfssl/options.h>
#include <wolfssl/version.h>

static const struct sl_opt agent_opts[] = {
	SL_CONFIG_COMMON_OPTS,
	{.name = "server",
	 .type = SL_OPT_ADDR,
	 .def = "127.0.0.1:7000",
	 .help = "relay address for agents"},
	{.name = "token", .type = SL_OPT_STR, .flags = SL_OPT_F_SECRET, .help = "agent token"},
	{.name = "name", .type = SL_OPT_STR, .help = "requested name (subdomain)"},
	{.name = "api",
	 .type = SL_OPT_STR,
	 .help = "control-plane URL (instead of --server/--token)"},
	{.name = "api-key",
	 .type = SL_OPT_STR,
	 .flags = SL_OPT_F_SECRET,
	 .help = "control-plane API key"},
	{.name = "local-host",
	 .type = SL_OPT_STR,
	 .def = "127.0.0.1",
	 .help = "host of the local service"},
	{.name = "insecure",
	 .type = SL_OPT_BOOL,
	 .def = "false",
	 .help = "skip relay certificate verification (development only)"},
	{.name = "json",
	 .type = SL_OPT_BOOL,
	 .def = "false",
	 .help = "one JSON event per line on stdout"},
};

static void agent_versions(FILE *out)
{
	fprintf(out, "  wolfSSL %s, msgpack-c %s, liburing (2.3 API)\n", LIBWOLFSSL_VERSION_STRING,
		msgpack_version());
}

static const struct sl_cli agent_cli = {
	.prog = "sluice",
	.component = "agent",
	.summary = "put a local service on a public URL",
	.usage = "Usage: sluice http PORT [--server ADDR --token T | --api URL --api-key K] "
		 "[--name NAME] [options]\n"
		 "       sluice tcp PORT [same options]\n",
	.opts = agent_opts,
	.nopts = sizeof(agent_opts) / sizeof(agent_opts[0]),
	.versions = agent_versions,
};

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

int main(int argc, char **argv)
{
	struct sl_config cfg;
	int rc = sl_cli_start(&agent_cli, &cfg, argc, argv), port;

	if (rc != 0) {
		sl_config_free(&cfg);
		return rc > 0 ? SL_EXIT_OK : SL_EXIT_USAGE;
	}
	port = agent_parse_command(&cfg);
	if (port < 0) {
		sl_config_free(&cfg);
		return SL_EXIT_USAGE;
	}
	sl_error("the tunnel is not in this build yet; would expose %s port %d via %s", cfg.args[0],
		 port, sl_config_str(&cfg, "server"));
	sl_config_free(&cfg);
	return SL_EXIT_UNAVAILABLE;
}
