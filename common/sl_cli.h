/*
 * sl_cli.h: the one start-up path of every program and CLI verb: --help and
 * --version answered before anything else can fail, then configuration
 * loaded from flags, environment and file, then logging set up, then the
 * program's run function; the exit code and freeing the configuration are
 * here too, so each main() reads: table, sl_cli, run.
 *
 *	static const struct sl_cli relay_cli = {
 *		.prog = "sluice-relay", ..., SL_CLI_OPTS(relay_opts), .run = run,
 *	};
 *	int main(int argc, char **argv)
 *	{
 *		return sl_cli_main(&relay_cli, argc, argv);
 *	}
 */
#ifndef SL_CLI_H
#define SL_CLI_H

#include "sl_config.h"

#include <signal.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error. */
#define SL_EXIT_OK	    0
#define SL_EXIT_FAIL	    1
#define SL_EXIT_USAGE	    2
#define SL_EXIT_UNAVAILABLE 69 /* EX_UNAVAILABLE: a feature not in this build */

struct sl_cli_verb;

/* Ownership: static const in each program's main file; every pointer is to static data. */
struct sl_cli {
	const char *prog;      /* "sluice-relay" */
	const char *component; /* "relay": the component field of log lines */
	const char *summary;   /* one line: what the program is */
	const char *usage;     /* usage lines, printed before the option list */
	const struct sl_opt *opts;
	size_t nopts;
	void (*versions)(FILE *out); /* prints the linked libraries' versions */
	/*
	 * The program, configured and logging: returns its exit code, or a
	 * negative errno: -EINVAL and -ENOTSUP (a configuration it cannot
	 * honour) exit SL_EXIT_USAGE, any other SL_EXIT_FAIL.
	 */
	int (*run)(const struct sl_config *cfg);
	/* Words after the program's name that select another command, ending
	 * with {NULL}; NULL for none. */
	const struct sl_cli_verb *verbs;
	/* The config file may end in [sections], kept for run in cfg->sect
	 * (sl_config.sections); 0: a section is a syntax error. */
	int sections;
};

/* .opts and .nopts of a struct sl_cli from a static table. */
#define SL_CLI_OPTS(table) .opts = (table), .nopts = sizeof(table) / sizeof((table)[0])

/*
 * A verb: when argv[1..] starts with words ("keys create"), the command is
 * cli, given argv from the last of the words on (so it is argv[0]); or, with
 * cli NULL, "prog words: refusal" on stderr and SL_EXIT_USAGE.
 * Ownership: static tables.
 */
struct sl_cli_verb {
	const char *words;
	const struct sl_cli *cli;
	const char *refusal;
};

/*
 * Run the program cli (or the verb argv names): --help/-h and --version/-V,
 * the configuration (a bad one is one line on stderr and SL_EXIT_USAGE),
 * --print-config, logging, then cli->run. Returns the exit code.
 */
int sl_cli_main(const struct sl_cli *cli, int argc, char **argv);

/*
 * SIGINT and SIGTERM set *flag (the main loop polls it and shuts down
 * cleanly); SIGPIPE is ignored, since a peer that went away is an EPIPE to
 * handle, not a reason to die. A program calls it as its loop begins, not
 * before: until then ^C stops it at once, even in a blocking call (the
 * agent's request to the control plane). flag must outlive the loop.
 */
void sl_cli_stop_on_signals(volatile sig_atomic_t *flag);
/* SIGHUP sets *flag (the loop reloads what it can, then clears it). */
void sl_cli_reload_on_sighup(volatile sig_atomic_t *flag);

/* "0.1.0 (git 1a2b3c4)" */
const char *sl_version_string(void);

#ifdef __cplusplus
}
#endif
#endif
