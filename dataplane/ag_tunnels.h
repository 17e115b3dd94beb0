/*
 * ag_tunnels.h: the tunnels of an agent config file, which `sluice start
 * NAME...` and `sluice start --all` run (docs/configuration.md): one
 * [tunnel.NAME] section each, below the agent's own options, with the keys
 * of one tunnel (proto, port, name, local-host, basic-auth, bearer-token,
 * duration). sl_config keeps the sections' lines as read (sl_config.sect);
 * this file checks them, each section's keys through a config of its own
 * table, so their errors read like every other config error.
 */
#ifndef AG_TUNNELS_H
#define AG_TUNNELS_H

#include "sl_config.h"

#include <stddef.h>

/* Each tunnel is a thread with its own ring and buffers (--buffers x
 * --buffer-size): a bound on what one file can ask of the machine. */
#define AG_TUNNELS_MAX 32

/* Ownership: an element of ag_tunnels.v; cfg's values are freed by ag_tunnels_free. */
struct ag_tunnel_def {
	char label[64];	      /* NAME of [tunnel.NAME] */
	char where[300];      /* file:line of its header */
	struct sl_config cfg; /* its keys, over the tunnel table (ag_tunnels.c) */
};

/* Ownership: the caller's (calloc it: it is large); ag_tunnels_free frees
 * what the definitions hold, not the struct. */
struct ag_tunnels {
	struct ag_tunnel_def v[AG_TUNNELS_MAX];
	size_t n;
};

/*
 * Every [tunnel.NAME] section of cfg's file into out, in file order, each
 * checked: unknown sections and keys, bad values and a missing proto or
 * port are errors naming the file and line. 0, or -EINVAL (-ENOMEM) with the
 * reason in err; out is to be freed either way.
 */
int ag_tunnels_load(const struct sl_config *cfg, struct ag_tunnels *out, char *err, size_t cap);

/*
 * The tunnels to start: those named (in that order) or, with all, every
 * one. Their indexes into t->v go to idx (AG_TUNNELS_MAX entries); returns
 * how many, or -EINVAL with the reason in err (a name not in the file, whose
 * names it lists; a name twice; none at all).
 */
int ag_tunnels_pick(const struct ag_tunnels *t, const char *const *names, size_t n, int all,
		    const char *path, size_t *idx, char *err, size_t cap);

void ag_tunnels_free(struct ag_tunnels *t);

#endif
