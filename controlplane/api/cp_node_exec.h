/*
 * cp_node_exec.h: the work the nodes routes (cp_nodes.c) run on a node over
 * its warm pool, on a thread per request (cp_node_exec.c): a command whose
 * output streams as NDJSON ({"stream","line"} per line, then {"exit",...}),
 * the troubleshooter's report, or the health monitor's.
 */
#ifndef CP_NODE_EXEC_H
#define CP_NODE_EXEC_H

#include "http/cp_op.h"
#include "ssh/cp_ssh.h"

enum cp_node_exec_kind { CP_NX_EXEC = 0, CP_NX_DIAGNOSE, CP_NX_HEALTH };

/* An exec body ({"command": [...]} or {"shell": "..."}, with env, cwd,
 * sudo, timeoutMs), checked before the node is read: 0, or -EINVAL with *e
 * the 400 to answer. */
int cp_node_exec_check(json_t *body, struct cp_err *e);

/* Start kind on the node op->id (cfg and sudo_password copied; op->acc the
 * exec's body) and answer op's request with its stream, which releases op;
 * or a 500 when the thread cannot start. */
void cp_node_exec_start(struct cp_op *op, enum cp_node_exec_kind kind,
			const struct cp_ssh_config *cfg, const char *sudo_password);

#endif
