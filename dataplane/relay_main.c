/*
 * relay_main.c: sluice-relay's entry point: options, logging, then the relay
 * engine. The engine itself (io_uring workers, routing, agent sessions) is
 * the subject of the dataplane issue and is not in this build yet: the relay
 * validates its configuration and says so plainly instead of pretending.
 */
#include "sl_cli.h"
#include "sl_log.h"

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
	 .help = "PEM certificate chain for --https and agents"},
	{.name = "key",
	 .type = SL_OPT_STR,
	 .flags = SL_OPT_F_SECRET,
	 .help = "PEM private key for --cert"},
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
	{.name = "workers",
	 .type = SL_OPT_INT,
	 .def = "0",
	 .max = 256,
	 .help = "worker threads, 0 = one per core"},
	{.name = "engine",
	 .type = SL_OPT_ENUM,
	 .def = "io_uring",
	 .choices = "io_uring|epoll",
	 .help = "I/O engine"},
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

int main(int argc, char **argv)
{
	struct sl_config cfg;
	int rc = sl_cli_start(&relay_cli, &cfg, argc, argv);

	if (rc != 0) {
		sl_config_free(&cfg);
		return rc > 0 ? SL_EXIT_OK : SL_EXIT_USAGE;
	}
	sl_error("the relay engine is not in this build yet; configuration is valid "
		 "(http %s, agents %s, domain %s)",
		 sl_config_str(&cfg, "http"), sl_config_str(&cfg, "agents"),
		 sl_config_str(&cfg, "domain"));
	sl_config_free(&cfg);
	return SL_EXIT_UNAVAILABLE;
}
