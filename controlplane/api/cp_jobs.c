/*
 * cp_jobs.c: provisioning a node as an asynchronous job (admin scope only);
 * the job's own life (thread, record, lease, streams) is cp_job.c's.
 *
 *   POST   /api/v1/nodes/{id}/provision  start: 202 with the job and its
 *                                        Location; 409 while the node has one
 *                                        (the route is cp_nodes.c's, which
 *                                        reads the node and calls
 *                                        cp_jobs_provision)
 *   GET    /api/v1/jobs/{id}             the job: status, every step so far,
 *                                        the result (with the typed error)
 *   GET    /api/v1/jobs/{id}/events      the same as Server-Sent Events: each
 *                                        step as it ends ("step", id = its
 *                                        seq; Last-Event-ID resumes), then
 *                                        "done" with the result, then close
 *   DELETE /api/v1/jobs/{id}             cancel: the job stops before its next
 *                                        step (a step under way finishes)
 *
 * A job of another control plane sharing the Redis is answered from its
 * record (sl:job:<id>); its cancel is a key its owner looks at.
 */
#include "api/cp_job.h"
#include "api/cp_jobs.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_reply.h"
#include "http/cp_route.h"
#include "mgr/cp_security.h"
#include "sl_redis.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis.h>

#define JOBS_RUNNING_MAX 16 /* provisioning at once, per control plane */

/* A jobs request: GET of the events stream, or of the job. The op's own
 * (cp_op_new with this size); it owns nothing more. */
struct job_op {
	struct cp_op op;
	int events;
};

static int wants_events(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct job_op, op, op)->events;
}

static void on_record(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *d;

	if (err || !r || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->type != REDIS_REPLY_STRING) {
		cp_op_error(op, 404, "not_found", "no job %s (records are kept 7 days)", op->id);
		return;
	}
	if (!(d = cp_job_remote_doc(r->str, r->len))) {
		cp_op_error(op, 500, "internal", "the job's record is unreadable");
		return;
	}
	if (wants_events(op))
		cp_job_stream(op, NULL, d);
	else
		cp_op_reply(op, 200, d);
}

static void jobs_get(struct cp_op *op)
{
	struct cp_job *j = cp_job_find(op->id);

	if (!op->req) {
		cp_op_reply(op, 499, json_null());
		return;
	}
	if (!j) {
		cp_rdb_cmdf(op->s->db, on_record, op, "GET sl:job:%s", op->id);
		return;
	}
	if (wants_events(op))
		cp_job_stream(op, j, NULL);
	else
		cp_op_reply(op, 200, cp_job_doc(j, 1));
}

static void on_cancel_set(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || !r || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[1]->type != REDIS_REPLY_STRING) {
		cp_op_error(op, 404, "not_found", "no job %s", op->id);
		return;
	}
	cp_op_reply(op, 202,
		    json_pack("{s:s,s:s}", "id", op->id, "status",
			      strstr(r->element[1]->str, "\"status\":\"running\"") ? "cancelling"
										   : "ended"));
}

static void jobs_cancel(struct cp_op *op)
{
	struct cp_job *j = cp_job_find(op->id);

	if (op->req)
		cp_audit(op->s, op->req, "job_cancel", op->actor.key_id, op->id);
	if (!j) { /* maybe another control plane's: it looks on its refresh */
		cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
		cp_rdb_cmdf(op->s->db, NULL, NULL, "SET sl:job:%s:cancel 1 EX 3600", op->id);
		cp_rdb_cmdf(op->s->db, NULL, NULL, "GET sl:job:%s", op->id);
		cp_rdb_cmdf(op->s->db, on_cancel_set, op, "EXEC");
		return;
	}
	if (cp_job_cancel(j) < 0) {
		cp_op_error(op, 409, "job_ended", "job %s has ended; nothing to cancel", op->id);
		return;
	}
	cp_op_reply(op, 202, json_pack("{s:s,s:s}", "id", op->id, "status", "cancelling"));
}

int cp_jobs_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
	int del = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"));
	const char *slash = id ? memchr(id, '/', id_len) : NULL;
	size_t n = slash ? (size_t)(slash - id) : id_len;
	int events = slash && id_len - n == 7 && memcmp(slash, "/events", 7) == 0;
	struct cp_op *op;

	if (!id || !cp_prefixed_id_ok(id, n, "jb_", 30) || (slash && !events)) {
		cp_send_error(s, req, 404, "not_found", id ? "no such job" : "no such endpoint");
		return 0;
	}
	if (!(get || (del && !slash))) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req, sizeof(struct job_op))) == NULL)
		return -ENOMEM;
	memcpy(op->id, id, n);
	op->id[n] = '\0';
	H2O_STRUCT_FROM_MEMBER(struct job_op, op, op)->events = events;
	cp_auth(op, CP_SCOPE_ADMIN, del ? jobs_cancel : jobs_get);
	return 0;
}

/* ---- starting a provision ---- */

static const char *const provision_fields[] = {"check",	   "lockdown", "relayId", "http",
					       "agents",   "admin",    "domain",  "redisUrl",
					       "sshExtra", "firewall"};

/* Text that goes into the relay's configuration: no quotes, no control
 * characters, no spaces. */
static int conf_value_ok(const char *v, size_t max)
{
	size_t n = strlen(v);

	if (n == 0 || n > max)
		return 0;
	for (; *v; v++)
		if ((unsigned char)*v <= 0x20 || *v == 0x7f || *v == '"' || *v == '\\')
			return 0;
	return 1;
}

static int addr_ok(const char *v)
{
	const char *c = strrchr(v, ':');

	return conf_value_ok(v, 200) && c && c != v && atoi(c + 1) > 0 && atoi(c + 1) < 65536;
}

int cp_jobs_check_provision(json_t *o, struct cp_err *e)
{
	static const char *const addrs[] = {"http", "agents", "admin"};
	const char *k, *v;
	json_t *val;
	char why[200];

	if (!json_is_object(o))
		return cp_err_set(e, -EINVAL, 400, "invalid_json",
				  "the body must be a JSON object");
	json_object_foreach(o, k, val)
	{
		int i = cp_field_index(provision_fields,
				       sizeof(provision_fields) / sizeof(provision_fields[0]), k,
				       e);

		if (i < 0)
			return -EINVAL;
		if (i == 0 ? !json_is_boolean(val) : !json_is_string(val))
			return cp_err_set(e, -EINVAL, 400, "invalid_type", "%s: %s", k,
					  i == 0 ? "true or false" : "a string");
	}
	for (size_t i = 0; i < 3; i++)
		if ((v = json_string_value(json_object_get(o, addrs[i]))) && !addr_ok(v))
			return cp_err_set(e, -EINVAL, 400, "invalid_address", "%s: host:port",
					  addrs[i]);
	if ((v = json_string_value(json_object_get(o, "lockdown"))) && cp_lockdown_parse(v) < 0)
		return cp_err_set(e, -EINVAL, 400, "invalid_lockdown",
				  "lockdown: none, basic, standard or strict");
	if ((v = json_string_value(json_object_get(o, "firewall"))) && cp_firewall_parse(v) < 0)
		return cp_err_set(e, -EINVAL, 400, "invalid_firewall",
				  "firewall: auto, ufw or iptables");
	if (((v = json_string_value(json_object_get(o, "relayId"))) && !conf_value_ok(v, 64)) ||
	    ((v = json_string_value(json_object_get(o, "domain"))) && !conf_value_ok(v, 253)))
		return cp_err_set(e, -EINVAL, 400, "invalid_value",
				  "relayId, domain: no spaces, quotes or controls");
	if ((v = json_string_value(json_object_get(o, "redisUrl"))) &&
	    (!conf_value_ok(v, CP_JOB_STR_MAX - 1) || sl_redis_url_check(v, why, sizeof(why)) < 0))
		return cp_err_set(e, -EINVAL, 400, "invalid_redis_url", "redisUrl: a redis:// URL");
	if ((v = json_string_value(json_object_get(o, "sshExtra"))) && strlen(v) > 1000)
		return cp_err_set(e, -EINVAL, 400, "invalid_value",
				  "sshExtra: 1000 characters at most");
	return 0;
}

/* A string of the body (or def) copied into the job's slot i. */
static const char *keep(struct cp_job *j, int i, json_t *body, const char *field, const char *def)
{
	const char *v = field ? json_string_value(json_object_get(body, field)) : NULL;

	snprintf(j->strs[i], CP_JOB_STR_MAX, "%s", v ? v : def ? def : "");
	return j->strs[i];
}

/* A relay id from the node's name when it is one, else the node's id. */
static const char *relay_id_of(const struct cp_job_node *node)
{
	return conf_value_ok(node->name, 64) ? node->name : node->id;
}

/* The job for node with what op's body (op->acc) asks. */
static struct cp_job *job_new(struct cp_op *op, const struct cp_job_node *node)
{
	const struct cp_server_config *c = &op->s->cfg;
	struct cp_job *j = cp_job_new(op->s, node->id, op->actor.key_id);
	json_t *b = op->acc;

	if (!j)
		return NULL;
	j->cfg = *node->cfg;
	snprintf(j->sudo_pw, sizeof(j->sudo_pw), "%s", node->sudo_password);
	snprintf(j->secret, sizeof(j->secret), "%s", c->session_secret);
	snprintf(j->ssh_extra, sizeof(j->ssh_extra), "%s",
		 json_string_value(json_object_get(b, "sshExtra")) ?: "");
	j->spec = (struct cp_provision_spec){
		.relay_binary = keep(j, 0, NULL, NULL, c->relay_binary),
		.relay_id = keep(j, 1, b, "relayId", relay_id_of(node)),
		.redis_url =
			keep(j, 2, b, "redisUrl",
			     c->relay_redis && *c->relay_redis ? c->relay_redis : c->redis_url),
		.session_secret = j->secret,
		.http = keep(j, 3, b, "http", "0.0.0.0:80"),
		.agents = keep(j, 4, b, "agents", "0.0.0.0:7000"),
		.admin = keep(j, 5, b, "admin", "127.0.0.1:9090"),
		.domain = keep(j, 6, b, "domain", "localhost"),
		.lockdown = cp_lockdown_parse(json_string_value(json_object_get(b, "lockdown"))
						      ?: "standard"),
		.firewall = cp_firewall_parse(json_string_value(json_object_get(b, "firewall"))
						      ?: "auto"),
		.ssh_extra = j->ssh_extra,
		.verify_redis = keep(j, 7, NULL, NULL, c->redis_url)};
	j->check = json_is_true(json_object_get(b, "check"));
	return j;
}

/* The lock's answer: ours (OK), or the id of the job that holds it. */
static void on_locked(void *ud, redisReply *r, const char *err)
{
	struct cp_job *j = ud;
	struct cp_op *op = j->starter;
	char *loc;

	j->starter = NULL;
	if (err || !r || r->type == REDIS_REPLY_ERROR || r->type != REDIS_REPLY_ARRAY ||
	    r->elements != 2) {
		cp_job_unref(j);
		cp_op_redis_error(op, r && r->type == REDIS_REPLY_ERROR ? r : NULL,
				  err ? err : "unexpected reply");
		return;
	}
	if (r->element[0]->type != REDIS_REPLY_STATUS) {
		const redisReply *h = r->element[1];

		cp_op_error(op, 409, "job_running", "node %s is being provisioned by job %s",
			    j->node_id, h->type == REDIS_REPLY_STRING ? h->str : "?");
		cp_job_unref(j);
		return;
	}
	if (!op->req || op->s->stopping || cp_job_start(j) < 0) {
		cp_rdb_cmdf(op->s->db, NULL, NULL, "DEL sl:node:%s:job", j->node_id);
		cp_op_error(op, 503, "shutting_down", "cannot start the job now; retry");
		cp_job_unref(j);
		return;
	}
	cp_audit(op->s, op->req, "node_provision", op->actor.key_id, j->node_id);
	loc = h2o_mem_alloc_pool(&op->req->pool, 64);
	h2o_add_header(&op->req->pool, &op->req->res.headers, H2O_TOKEN_LOCATION, NULL, loc,
		       (size_t)snprintf(loc, 64, "/api/v1/jobs/%s", j->id));
	cp_op_reply(op, 202, cp_job_doc(j, 0));
}

void cp_jobs_provision(struct cp_op *op, const struct cp_job_node *node)
{
	struct cp_job *j;

	if (!op->s->cfg.relay_binary || access(op->s->cfg.relay_binary, R_OK) != 0) {
		cp_op_error(op, 501, "no_relay_binary",
			    "this control plane has no relay binary to install (--relay-binary "
			    "%.200s)",
			    op->s->cfg.relay_binary ? op->s->cfg.relay_binary : "");
		return;
	}
	if (cp_jobs_running() >= JOBS_RUNNING_MAX) {
		cp_op_error(op, 429, "too_many_jobs", "%d jobs are running here; retry later",
			    JOBS_RUNNING_MAX);
		return;
	}
	if (!(j = job_new(op, node))) {
		cp_op_error(op, 500, "internal", "cannot create the job");
		return;
	}
	/* The job holds op until the lock's answer, which ends op. */
	j->starter = op;
	cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(op->s->db, NULL, NULL, "SET sl:node:%s:job %s NX PX %d", j->node_id, j->id,
		    CP_JOB_LEASE_MS);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "GET sl:node:%s:job", j->node_id);
	cp_rdb_cmdf(op->s->db, on_locked, j, "EXEC");
}
