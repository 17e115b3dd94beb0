/*
 * sl_cli.c: the start-up every program and CLI verb shares (see sl_cli.h).
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

/*
 * Load the configuration into c and set up logging. Returns 0 to go on, 1
 * when the program has answered and should exit 0 (help, version,
 * --print-config), or -EINVAL after printing the error to stderr. c must be
 * freed with sl_config_free() whatever the result.
 */
static int start(const struct sl_cli *cli, struct sl_config *c, int argc, char **argv)
{
	int err;

	err = sl_config_init(c, cli->opts, cli->nopts);
	c->sections = cli->sections;
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

/* How many of argv[1..] spell words ("keys create"), or 0 when they do not. */
static int verb_words(const char *words, int argc, char **argv)
{
	const char *w = words;

	for (int i = 1;; i++) {
		size_t n = strcspn(w, " ");

		if (i >= argc || strlen(argv[i]) != n || memcmp(argv[i], w, n) != 0)
			return 0;
		if (w[n] == '\0')
			return i;
		w += n + 1;
	}
}

/* The first of cli's verbs argv names, with *nwords set to its number of
 * words; NULL when it names none. */
static const struct sl_cli_verb *find_verb(const struct sl_cli *cli, int argc, char **argv,
					   int *nwords)
{
	for (const struct sl_cli_verb *v = cli->verbs; v && v->words; v++)
		if ((*nwords = verb_words(v->words, argc, argv)) > 0)
			return v;
	return NULL;
}

/* A run function's result as an exit code (see struct sl_cli). */
static int exit_code(int rc)
{
	if (rc == -EINVAL || rc == -ENOTSUP)
		return SL_EXIT_USAGE;
	return rc < 0 ? SL_EXIT_FAIL : rc;
}

int sl_cli_main(const struct sl_cli *cli, int argc, char **argv)
{
	const struct sl_cli_verb *verb;
	struct sl_config cfg;
	int rc, nwords;

	verb = find_verb(cli, argc, argv, &nwords);
	if (verb && verb->cli)
		return sl_cli_main(verb->cli, argc - nwords, argv + nwords);
	if (verb) {
		fprintf(stderr, "%s %s: %s\n", cli->prog, verb->words, verb->refusal);
		return SL_EXIT_USAGE;
	}
	rc = start(cli, &cfg, argc, argv);
	if (rc == 0)
		rc = exit_code(cli->run(&cfg));
	else
		rc = rc > 0 ? SL_EXIT_OK : SL_EXIT_USAGE;
	sl_config_free(&cfg);
	return rc;
}
