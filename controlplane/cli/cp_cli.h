/*
 * cp_cli.h: what the control plane's CLI verbs share.
 */
#ifndef CP_CLI_H
#define CP_CLI_H

#include "sl_cli.h"

#include <stdio.h>
#include <stdlib.h>

/* The secret in the environment variable an option names (--*-env NAME)
 * into dst, left as it was when the option or the variable is unset:
 * secrets never come from the command line, where ps shows them. */
static inline void cp_cli_env_secret(const struct sl_config *cfg, const char *opt, char *dst,
				     size_t cap)
{
	const char *name = sl_config_str(cfg, opt), *v = *name ? getenv(name) : NULL;

	if (v)
		snprintf(dst, cap, "%s", v);
}

#endif
