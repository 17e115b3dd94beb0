/*
 * cp_jobs.h: long operations on a node as asynchronous jobs (cp_jobs.c):
 * POST /api/v1/nodes/{id}/provision starts one; GET /api/v1/jobs/{id} and
 * its Server-Sent Events stream GET /api/v1/jobs/{id}/events follow it.
 */
#ifndef CP_JOBS_H
#define CP_JOBS_H

#include "http/cp_op.h"
#include "ssh/cp_ssh.h"

/* The node a provision job is for, read and unsealed by cp_nodes.c. The
 * job copies what it keeps; cfg's secrets are wiped by the caller. Ownership: the caller's for the
 * call; the job copies what it keeps. */
struct cp_job_node {
	const char *id, *name;
	const struct cp_ssh_config *cfg;
	const char *sudo_password; /* "" when none */
};

/* A provision request's body checked before the node is read: 0, or
 * -EINVAL with *e the 400 to answer. The caller keeps it as op->acc for
 * cp_jobs_provision. */
int cp_jobs_check_provision(json_t *body, struct cp_err *e);
/* Take the node's job lock, start the job on a thread of its own and answer
 * 202 with the job (409 when the node has a job running). */
void cp_jobs_provision(struct cp_op *op, const struct cp_job_node *node);

/* GET /api/v1/jobs/{id}, GET .../events, DELETE (cancel). */
int cp_jobs_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);

/* At exit: running jobs asked to stop at their next step and waited for a
 * while; those still running are recorded as interrupted. */
void cp_jobs_shutdown(struct cp_server *s);

#endif
