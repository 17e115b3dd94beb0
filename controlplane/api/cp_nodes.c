/*
 * cp_nodes.c: the hosts an operator runs relays on, and the SSH executor
 * behind the API (admin scope only).
 *
 *   POST   /api/v1/nodes               register a host: address, user, its host
 *                                      key (a known_hosts key: "ssh-ed25519 AAAA...")
 *                                      and credentials, sealed at rest (pr_seal)
 *   GET    /api/v1/nodes               list (never a secret)
 *   GET    /api/v1/nodes/{id}          one
 *   DELETE /api/v1/nodes/{id}          forget it
 *   POST   /api/v1/nodes/{id}/exec     run a command; the answer streams as
 *                                      it runs: NDJSON, one {"stream","line"} per
 *                                      line of output, then {"exit",...}
 *   POST   /api/v1/nodes/{id}/diagnose the troubleshooter's report
 *   GET    /api/v1/nodes/{id}/health   the health monitor: a probe on each of
 *                                      the node's warm connections, figures,
 *                                      trends; dead connections replaced
 *   POST   /api/v1/nodes/{id}/provision make it a running relay: an
 *                                      asynchronous job (cp_jobs.c)
 *
 * Redis: sl:node:<id> (hash: name host port user hostkey created creds) and
 * the set sl:nodes. SSH work runs on a thread of its own per request, never
 * on the HTTP loop (cp_node_exec.c, and cp_jobs.c for provisioning); this
 * file reads and unseals the node for it.
 */
#include "api/cp_jobs.h"
#include "api/cp_node_exec.h"
#include "api/cp_node_pools.h"
#include "api/cp_nodes.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_reply.h"
#include "http/cp_route.h"
#include "ssh/cp_ssh.h"
#include "pr_seal.h"
#include "pr_token.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis.h>

#define NODE_FIELDS  "name host port user hostkey created creds"
#define NODE_NFIELDS 7
#define NODES_MAX    1000
#define CREDS_MAX    6000

enum { F_NAME, F_HOST, F_PORT, F_USER, F_HOSTKEY, F_CREATED, F_CREDS };

/*
 * A nodes request. The op's own (cp_op_new with this size); it owns nothing
 * more (a body kept for exec or provision is op->acc).
 */
struct node_op {
	struct cp_op op;
	enum cp_node_exec_kind kind; /* exec, diagnose, health: which */
	int provision;		     /* the work is a provision job instead */
	long pending;		     /* list: the HMGETs still to answer */
};

static struct node_op *node_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct node_op, op, op);
}

static const char *fld(const redisReply *r, int i)
{
	const redisReply *e = r->element[i];

	return e->type == REDIS_REPLY_STRING ? e->str : "";
}

static json_t *node_json(const char *id, const redisReply *r)
{
	return json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:o}", "id", id, "name", fld(r, F_NAME), "host",
			 fld(r, F_HOST), "port", atoi(fld(r, F_PORT)), "user", fld(r, F_USER),
			 "hostKey", fld(r, F_HOSTKEY), "createdAt",
			 cp_iso_time(strtoull(fld(r, F_CREATED), NULL, 10)));
}

static int printable(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

/* ---- register ---- */

/* A known_hosts key: "type base64", no host part. */
static int host_key_ok(const char *k)
{
	const char *sp = strchr(k, ' ');

	if (!sp || strchr(sp + 1, ' ') || strlen(k) > 900 ||
	    (strncmp(k, "ssh-", 4) != 0 && strncmp(k, "ecdsa-", 6) != 0))
		return 0;
	for (const char *c = sp + 1; *c; c++)
		if (!(*c >= 'A' && *c <= 'Z') && !(*c >= 'a' && *c <= 'z') &&
		    !(*c >= '0' && *c <= '9') && *c != '+' && *c != '/' && *c != '=')
			return 0;
	return 1;
}

static const char *const create_fields[] = {"name",	     "host",	 "port",
					    "user",	     "hostKey",	 "privateKey",
					    "keyPassphrase", "password", "sudoPassword"};

/* Validate the body: 0 with *creds the JSON of the secrets (caller frees),
 * or -EINVAL (-E2BIG: credentials too large) with *e to answer. */
static int parse_create(json_t *o, char **creds, struct cp_err *e)
{
	const char *key;
	json_t *v, *c;

	json_object_foreach(o, key, v)
	{
		if (cp_field_index(create_fields, sizeof(create_fields) / sizeof(create_fields[0]),
				   key, e) < 0)
			return -EINVAL;
		if (strcmp(key, "port") == 0 ? !json_is_integer(v) : !json_is_string(v))
			return cp_err_set(e, -EINVAL, 400, "invalid_type", "%s must be a %s", key,
					  strcmp(key, "port") == 0 ? "number" : "string");
	}
	if (!printable(json_string_value(json_object_get(o, "host")) ?: "", 253))
		return cp_err_set(e, -EINVAL, 400, "invalid_host",
				  "host: a name or address is required");
	if (!printable(json_string_value(json_object_get(o, "user")) ?: "", 32))
		return cp_err_set(e, -EINVAL, 400, "invalid_user",
				  "user: a login name is required");
	if (json_object_get(o, "port") && (json_integer_value(json_object_get(o, "port")) < 1 ||
					   json_integer_value(json_object_get(o, "port")) > 65535))
		return cp_err_set(e, -EINVAL, 400, "invalid_port", "port must be 1..65535");
	if (!host_key_ok(json_string_value(json_object_get(o, "hostKey")) ?: ""))
		return cp_err_set(e, -EINVAL, 400, "invalid_host_key",
				  "hostKey: the host's public key as known_hosts has it "
				  "(\"ssh-ed25519 AAAA...\", from ssh-keyscan), checked strictly "
				  "on every connection");
	if (!json_object_get(o, "privateKey") && !json_object_get(o, "password"))
		return cp_err_set(e, -EINVAL, 400, "missing_credential",
				  "give privateKey or password");
	c = json_object();
	json_object_foreach(o, key, v)
	{
		if (strcmp(key, "privateKey") == 0 || strcmp(key, "keyPassphrase") == 0 ||
		    strcmp(key, "password") == 0 || strcmp(key, "sudoPassword") == 0)
			json_object_set(c, key, v);
	}
	*creds = json_dumps(c, JSON_COMPACT);
	json_decref(c);
	if (!*creds || strlen(*creds) > CREDS_MAX) {
		free(*creds);
		*creds = NULL;
		return cp_err_set(e, -E2BIG, 413, "too_large", "credentials too large");
	}
	return 0;
}

static void on_created(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || !cp_exec_ok(r)) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "node_created", op->actor.key_id, op->id);
	cp_op_reply(op, 201, json_incref(op->acc));
}

static void nodes_create(struct cp_op *op)
{
	const uint8_t *sec = (const uint8_t *)op->s->cfg.session_secret;
	char *creds = NULL, *sealed = NULL, aad[80], rnd[13];
	struct cp_err e;
	json_t *o;
	int n;

	if (!op->req) {
		cp_op_reply(op, 499, json_null());
		return;
	}
	o = op->req->entity.len ? json_loadb(op->req->entity.base, op->req->entity.len,
					     JSON_REJECT_DUPLICATES, NULL)
				: NULL;
	if (!json_is_object(o)) {
		json_decref(o);
		cp_op_error(op, 400, "invalid_json", "the body must be a JSON object");
		return;
	}
	if (parse_create(o, &creds, &e) < 0) {
		json_decref(o);
		cp_op_fail(op, &e);
		return;
	}
	pr_random_alnum(rnd, 12);
	snprintf(op->id, sizeof(op->id), "nd_%.12s", rnd);
	snprintf(aad, sizeof(aad), "sl:node:%s", op->id);
	sealed = malloc(PR_SEAL_TEXT_LEN(strlen(creds)));
	n = sealed ? pr_seal(sec, strlen((const char *)sec), aad, creds, strlen(creds), sealed,
			     PR_SEAL_TEXT_LEN(strlen(creds)))
		   : -ENOMEM;
	explicit_bzero(creds, strlen(creds));
	free(creds);
	if (n < 0) {
		free(sealed);
		json_decref(o);
		cp_op_error(op, 500, "internal", "cannot seal the credentials");
		return;
	}
	op->now = (uint64_t)time(NULL);
	op->acc = json_pack(
		"{s:s,s:s,s:s,s:I,s:s,s:s,s:o}", "id", op->id, "name",
		json_string_value(json_object_get(o, "name")) ?: "", "host",
		json_string_value(json_object_get(o, "host")), "port",
		json_object_get(o, "port") ? json_integer_value(json_object_get(o, "port")) : 22,
		"user", json_string_value(json_object_get(o, "user")), "hostKey",
		json_string_value(json_object_get(o, "hostKey")), "createdAt",
		cp_iso_time(op->now));
	cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(
		op->s->db, NULL, NULL,
		"HSET sl:node:%s name %s host %s port %d user %s hostkey %s created %llu creds %s",
		op->id, json_string_value(json_object_get(op->acc, "name")),
		json_string_value(json_object_get(op->acc, "host")),
		(int)json_integer_value(json_object_get(op->acc, "port")),
		json_string_value(json_object_get(op->acc, "user")),
		json_string_value(json_object_get(op->acc, "hostKey")), (unsigned long long)op->now,
		sealed);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "SADD sl:nodes %s", op->id);
	cp_rdb_cmdf(op->s->db, on_created, op, "EXEC");
	free(sealed);
	json_decref(o);
}

/* ---- list, show, delete ---- */

static void on_list(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	size_t step = op->step++;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
	} else if (step == 0 && r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < r->elements && i < NODES_MAX; i++) {
			json_array_append_new(json_object_get(op->acc, "nodes"),
					      json_string(r->element[i]->str));
			cp_rdb_cmdf(op->s->db, on_list, op, "HMGET sl:node:%s " NODE_FIELDS,
				    r->element[i]->str);
			node_of(op)->pending++;
		}
	} else if (step > 0 && r->type == REDIS_REPLY_ARRAY && r->elements == NODE_NFIELDS) {
		json_t *list = json_object_get(op->acc, "nodes");
		json_t *id = json_array_get(list, step - 1);

		json_array_set_new(list, step - 1, node_json(json_string_value(id), r));
	}
	if ((long)step < node_of(op)->pending)
		return;
	if (op->step_failed) {
		cp_op_step_error(op, "nodes");
		return;
	}
	cp_op_reply(op, 200, json_incref(op->acc));
}

static void nodes_list(struct cp_op *op)
{
	op->acc = json_pack("{s:[]}", "nodes");
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_list, op, "SMEMBERS sl:nodes");
}

/* The node's HMGET reply: 0 when it is a node, else a negative errno
 * (-ENOENT: none) with *e to answer. */
static int got_node(const struct cp_op *op, redisReply *r, const char *err, struct cp_err *e)
{
	if (err || !r || r->type != REDIS_REPLY_ARRAY || r->elements != NODE_NFIELDS)
		return cp_err_redis(e, r, err);
	if (!*fld(r, F_HOST))
		return cp_err_set(e, -ENOENT, 404, "not_found", "no node %s", op->id);
	return 0;
}

static void on_show(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct cp_err e;

	if (got_node(op, r, err, &e) == 0) {
		cp_op_reply(op, 200, node_json(op->id, r));
		return;
	}
	cp_op_fail(op, &e);
}

static void nodes_show(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_show, op, "HMGET sl:node:%s " NODE_FIELDS, op->id);
}

static void on_deleted(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->integer == 0) {
		cp_op_error(op, 404, "not_found", "no node %s", op->id);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "node_deleted", op->actor.key_id, op->id);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "SREM sl:nodes %s", op->id);
	cp_node_pool_forget(op->id);
	cp_op_reply(op, 200, json_pack("{s:s,s:s}", "id", op->id, "status", "deleted"));
}

static void nodes_delete(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_deleted, op, "DEL sl:node:%s", op->id);
}

/* ---- exec, diagnose, health: the node read, the work cp_node_exec.c's ---- */

/* The node's configuration from its record, the secrets unsealed: 0, or
 * -EKEYREJECTED (they cannot be opened) with *e to answer. */
static int node_config(const struct cp_op *op, redisReply *r, struct cp_ssh_config *cfg,
		       char *sudo_pw, size_t pw_cap, struct cp_err *e)
{
	const uint8_t *sec = (const uint8_t *)op->s->cfg.session_secret;
	char aad[80], *plain = malloc(CREDS_MAX + 1);
	json_t *c;
	int n, port = atoi(fld(r, F_PORT));

	snprintf(aad, sizeof(aad), "sl:node:%s", op->id);
	n = plain ? pr_unseal(sec, strlen((const char *)sec), aad, fld(r, F_CREDS), plain,
			      CREDS_MAX + 1)
		  : -ENOMEM;
	c = n >= 0 ? json_loadb(plain, (size_t)n, 0, NULL) : NULL;
	if (plain) {
		explicit_bzero(plain, CREDS_MAX + 1);
		free(plain);
	}
	if (!c)
		return cp_err_set(e, -EKEYREJECTED, 500, "sealed_credentials",
				  "the node's credentials cannot be opened (was the session secret "
				  "changed?): register the node again");
	snprintf(cfg->host, sizeof(cfg->host), "%s", fld(r, F_HOST));
	cfg->port = port;
	snprintf(cfg->user, sizeof(cfg->user), "%s", fld(r, F_USER));
	if (port == 22)
		snprintf(cfg->known_host_line, sizeof(cfg->known_host_line), "%s %s",
			 fld(r, F_HOST), fld(r, F_HOSTKEY));
	else
		snprintf(cfg->known_host_line, sizeof(cfg->known_host_line), "[%s]:%d %s",
			 fld(r, F_HOST), port, fld(r, F_HOSTKEY));
	snprintf(cfg->key_data, sizeof(cfg->key_data), "%s",
		 json_string_value(json_object_get(c, "privateKey")) ?: "");
	snprintf(cfg->key_passphrase, sizeof(cfg->key_passphrase), "%s",
		 json_string_value(json_object_get(c, "keyPassphrase")) ?: "");
	snprintf(cfg->password, sizeof(cfg->password), "%s",
		 json_string_value(json_object_get(c, "password")) ?: "");
	snprintf(sudo_pw, pw_cap, "%s",
		 json_string_value(json_object_get(c, "sudoPassword")) ?: "");
	cfg->connect_timeout_ms = 10000;
	json_object_clear(c);
	json_decref(c);
	return 0;
}

/* The node read for its work (exec, diagnose, health, or a provision
 * job): its configuration unsealed and handed on, or the error answered. */
static void on_work_node(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct node_op *n = node_of(op);
	struct cp_ssh_config *cfg = NULL;
	struct cp_err e;
	char pw[128] = "";
	int rc = got_node(op, r, err, &e);

	if (rc == 0 && !n->provision && (!op->req || op->s->stopping))
		rc = cp_err_set(&e, -ESHUTDOWN, 503, "shutting_down",
				"the control plane is stopping; retry");
	if (rc == 0 && !(cfg = calloc(1, sizeof(*cfg))))
		rc = cp_err_set(&e, -ENOMEM, 500, "internal", "%s",
				n->provision ? "out of memory" : "cannot start the command");
	if (rc == 0)
		rc = node_config(op, r, cfg, pw, sizeof(pw), &e);
	if (rc < 0)
		cp_op_fail(op, &e);
	else if (n->provision)
		cp_jobs_provision(op, &(struct cp_job_node){.id = op->id,
							    .name = fld(r, F_NAME),
							    .cfg = cfg,
							    .sudo_password = pw});
	else
		cp_node_exec_start(op, n->kind, cfg, pw);
	if (cfg) {
		cp_ssh_config_wipe(cfg);
		free(cfg);
	}
	explicit_bzero(pw, sizeof(pw));
}

static void nodes_exec(struct cp_op *op)
{
	struct cp_err e;
	json_t *o = NULL;

	if (!op->req) {
		cp_op_reply(op, 499, json_null());
		return;
	}
	if (node_of(op)->kind == CP_NX_EXEC) {
		o = json_loadb(op->req->entity.base ? op->req->entity.base : "",
			       op->req->entity.len, JSON_REJECT_DUPLICATES, NULL);
		if (cp_node_exec_check(o, &e) < 0) {
			json_decref(o);
			cp_op_fail(op, &e);
			return;
		}
		op->acc = o;
	}
	cp_rdb_cmdf(op->s->db, on_work_node, op, "HMGET sl:node:%s " NODE_FIELDS, op->id);
}

/* ---- provisioning: the node's configuration handed to a job ---- */

static void nodes_provision(struct cp_op *op)
{
	struct cp_err e;
	json_t *o;

	if (!op->req) {
		cp_op_reply(op, 499, json_null());
		return;
	}
	o = op->req->entity.len ? json_loadb(op->req->entity.base, op->req->entity.len,
					     JSON_REJECT_DUPLICATES, NULL)
				: json_object();
	if (cp_jobs_check_provision(o, &e) < 0) {
		json_decref(o);
		cp_op_fail(op, &e);
		return;
	}
	op->acc = o;
	node_of(op)->provision = 1;
	cp_rdb_cmdf(op->s->db, on_work_node, op, "HMGET sl:node:%s " NODE_FIELDS, op->id);
}

/* ---- routing ---- */

int cp_nodes_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	int post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
	int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
	int del = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"));
	const char *slash = id ? memchr(id, '/', id_len) : NULL;
	size_t n = slash ? (size_t)(slash - id) : id_len;
	void (*next)(struct cp_op *) = NULL;
	enum cp_node_exec_kind kind = CP_NX_EXEC;
	struct cp_op *op;

	if (!id) {
		next = post ? nodes_create : get ? nodes_list : NULL;
	} else if (!cp_prefixed_id_ok(id, n, "nd_", 40)) {
		cp_send_error(s, req, 404, "not_found", "no such node");
		return 0;
	} else if (!slash) {
		next = get ? nodes_show : del ? nodes_delete : NULL;
	} else if (post && id_len - n == 5 && memcmp(slash, "/exec", 5) == 0) {
		next = nodes_exec;
	} else if (post && id_len - n == 9 && memcmp(slash, "/diagnose", 9) == 0) {
		next = nodes_exec;
		kind = CP_NX_DIAGNOSE;
	} else if (post && id_len - n == 10 && memcmp(slash, "/provision", 10) == 0) {
		next = nodes_provision;
	} else if (get && id_len - n == 7 && memcmp(slash, "/health", 7) == 0) {
		next = nodes_exec;
		kind = CP_NX_HEALTH;
	} else {
		cp_send_error(s, req, 404, "not_found", "no such endpoint");
		return 0;
	}
	if (!next) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req, sizeof(struct node_op))) == NULL)
		return -ENOMEM;
	if (id) {
		memcpy(op->id, id, n);
		op->id[n] = '\0';
	}
	node_of(op)->kind = kind;
	cp_auth(op, CP_SCOPE_ADMIN, next);
	return 0;
}
