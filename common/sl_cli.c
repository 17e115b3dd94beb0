/*
 * sl_cli.c: shared start-up of the three binaries (see sl_cli.h).
 */
#include "sl_cli.h"
#include "sl_log.h"

#include <errno.h>
#include <string.h>

#include "version_gen.h"

const char *sl_version_string(void)
{
	return SLUICE_VERSION " (git " SLUICE_GIT ")";
}

static void print_help(const struct sl_cli *cli, FILE *out)
{
	fprintf(out, "%s %s: %s\n\n%s\nOptions (flag > environment > config file > default):\n",
		cli->prog, SLUICE_VERSION, cli->summary, cli->usage);
	sl_config_usage(cli->opts, cli->nopts, out);
}

static void print_version(const struct sl_cli *cli, FILE *out)
{
	fprintf(out, "%s %s\n", cli->prog, sl_version_string());
	if (cli->versions)
		cli->versions(out);
}

/* --help and --version win wherever they are, up to a "--". */
static int early_flags(const struct sl_cli *cli, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0)
			break;
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			print_help(cli, stdout);
			return 1;
		}
		if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
			print_version(cli, stdout);
			return 1;
		}
	}
	return 0;
}

/* The flag each caught signal sets (written before its handler is installed). */
static volatile sig_atomic_t *sig_flags[NSIG];

static void on_flag_signal(int sig)
{
	*sig_flags[sig] = 1;
}

static void flag_on_signal(int sig, volatile sig_atomic_t *flag, int sa_flags)
{
	struct sigaction sa;

	sig_flags[sig] = flag;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_flag_signal;
	sa.sa_flags = sa_flags;
	sigaction(sig, &sa, NULL);
}

void sl_cli_stop_on_signals(volatile sig_atomic_t *flag)
{
	flag_on_signal(SIGINT, flag, 0);
	flag_on_signal(SIGTERM, flag, 0);
	signal(SIGPIPE, SIG_IGN);
}

void sl_cli_reload_on_sighup(volatile sig_atomic_t *flag)
{
	flag_on_signal(SIGHUP, flag, SA_RESTART);
}

int sl_cli_start(const struct sl_cli *cli, struct sl_config *c, int argc, char **argv)
{
	int err;

	err = sl_config_init(c, cli->opts, cli->nopts);
	if (err == 0 && early_flags(cli, argc, argv))
		return 1;
	if (err == 0)
		err = sl_config_load(c, argc, argv, NULL);
	if (err < 0) {
		fprintf(stderr, "%s: %s\n", cli->prog, c->err);
		return -EINVAL;
	}
	if (sl_config_int(c, "print-config")) {
		sl_config_print(c, stdout);
		return 1;
	}
	sl_log_init(cli->component, sl_log_level_parse(sl_config_str(c, "log-level")),
		    sl_log_format_parse(sl_config_str(c, "log-format")), 2);
	return 0;
}
