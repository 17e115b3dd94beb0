/*
 * cp_cli_node.h: the node verbs (cp_cli_node.c), called by cp_cli_ssh.c's
 * verb dispatch with the parsed options and the host's pool.
 */
#ifndef CP_CLI_NODE_H
#define CP_CLI_NODE_H

#include "sl_cli.h"
#include "ssh/cp_ssh.h"

/* `node lockdown HOST` (audit 0) or `node audit HOST` (audit 1): the
 * process's exit code. */
int cp_cli_node_security(const struct sl_config *cfg, struct cp_ssh_pool *pool,
			 const struct cp_ssh_config *c, int audit);
/* `node provision HOST`: events as JSON lines, then the result. */
int cp_cli_node_provision(const struct sl_config *cfg, struct cp_ssh_pool *pool,
			  const struct cp_ssh_config *c);

#endif
