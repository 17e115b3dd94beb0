/*
 * sl_cli.h: the start-up every binary shares: --help and --version answered
 * before anything else can fail, then configuration loaded from flags,
 * environment and file, then logging set up from it.
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

struct sl_cli {
	const char *prog;      /* "sluice-relay" */
	const char *component; /* "relay": the component field of log lines */
	const char *summary;   /* one line: what the program is */
	const char *usage;     /* usage lines, printed before the option list */
	const struct sl_opt *opts;
	size_t nopts;
	void (*versions)(FILE *out); /* prints the linked libraries' versions */
};

/*
 * Handle --help/-h and --version/-V, load the configuration into c and set
 * up logging. Returns 0 to go on, 1 when the program has answered and should
 * exit 0 (help, version, --print-config), or -EINVAL after printing the error
 * to stderr (exit SL_EXIT_USAGE). c must be freed with sl_config_free()
 * whatever the result.
 */
int sl_cli_start(const struct sl_cli *cli, struct sl_config *c, int argc, char **argv);

/*
 * SIGINT and SIGTERM set *flag (the main loop polls it and shuts down
 * cleanly); SIGPIPE is ignored, since a peer that went away is an EPIPE to
 * handle, not a reason to die. flag must outlive the process's loop.
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
