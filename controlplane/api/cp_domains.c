/*
 * cp_domains.c: custom domains. A key registers a domain, proves it controls
 * it (cp_verify: a DNS TXT record or an HTTP challenge, on a thread of its
 * own), and its sessions may then name it (customDomain): relays route it
 * to them. In Redis:
 *
 *   sl:domain:<domain>      hash key, token, status (pending|verified), created, verified
 *   sl:domains              zset of every domain by creation (admin listing)
 *   sl:domains:<key id>     set of a key's domains
 *   sl:domsess:<domain>     set of the sessions that named it
 *
 * When a domain is verified or deleted, the records of the sessions naming
 * it are rewritten (domv, or dom cleared), so every relay follows.
 */
#include "api/cp_api_state.h"
#include "api/cp_domains.h"
#include "api/cp_verify.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_record.h"
#include "http/cp_reply.h"
#include "pr_state.h"
#include "pr_token.h"
#include "sl_log.h"
#include "sl_thread.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#define VERIFY_TIMEOUT_MS 3000
#define VERIFY_MAX	  8 /* verifications running at once */

/* The hash fields in HMGET order. */
#define DOMAIN_FIELDS "key token status created verified"
enum { F_KEY, F_TOKEN, F_STATUS, F_CREATED, F_VERIFIED, F_COUNT };

/*
 * A domains request. Ownership: the op's (cp_op_new with this size);
 * domain_dispose frees the ids and the record it rewrote.
 */
struct domain_op {
	struct cp_op op;
	char domain[CP_DOMAIN_MAX + 1];
	int found;		 /* register: HSETNX made the domain ours */
	int status;		 /* the answer's status once sessions are rewritten */
	unsigned deleted : 1;	 /* the rewrite takes the domain away */
	unsigned http_check : 1; /* verify: the HTTP challenge, not DNS */
	struct cp_strings ids;	 /* list: the domains; rewrite: the sessions */
	size_t next_id;		 /* rewrite: the next of ids */
	struct cp_record rec;	 /* rewrite: the session being rewritten */
	/* show, verify, delete: what follows the lookup of a domain the key owns */
	void (*owned)(struct cp_op *op, redisReply *r);
};

static struct domain_op *dom(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct domain_op, op, op);
}

static void domain_dispose(struct cp_op *op)
{
	cp_strings_free(&dom(op)->ids);
	cp_record_free(&dom(op)->rec);
}

static const char *field(redisReply *r, int i)
{
	return r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str : "";
}

static json_t *domain_json(const char *domain, redisReply *r)
{
	const char *token = field(r, F_TOKEN), *status = field(r, F_STATUS);
	char name[300], url[400];
	json_t *o;

	snprintf(name, sizeof(name), CP_CHALLENGE_PREFIX "%s", domain);
	snprintf(url, sizeof(url), "http://%s" CP_CHALLENGE_PATH "%s", domain, token);
	o = json_pack("{s:s,s:s,s:o,s:{s:{s:s,s:s,s:s},s:{s:s,s:s}}}", "domain", domain, "status",
		      status, "createdAt", cp_iso_time(strtoull(field(r, F_CREATED), NULL, 10)),
		      "verification", "dns", "name", name, "type", "TXT", "value", token, "http",
		      "url", url, "body", token);
	if (o && strcmp(status, "verified") == 0)
		json_object_set_new(o, "verifiedAt",
				    cp_iso_time(strtoull(field(r, F_VERIFIED), NULL, 10)));
	return o;
}

/* The HMGET reply of the domain's record: 0 when it exists and op's key may
 * see it, else a negative errno (-ENOENT: not one of its) with *e to
 * answer. */
static int own_domain(struct cp_op *op, redisReply *r, const char *err, struct cp_err *e)
{
	if (err || r->type != REDIS_REPLY_ARRAY || r->elements != F_COUNT)
		return cp_err_redis(e, r, err);
	if (r->element[F_KEY]->type != REDIS_REPLY_STRING ||
	    (!(op->actor.scopes & CP_SCOPE_ADMIN) &&
	     strcmp(field(r, F_KEY), op->actor.key_id) != 0))
		return cp_err_set(e, -ENOENT, 404, "not_found", "no domain %s", dom(op)->domain);
	return 0;
}

static void on_lookup(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct cp_err e;

	if (own_domain(op, r, err, &e) < 0)
		cp_op_fail(op, &e);
	else
		dom(op)->owned(op, r);
}

/* The domain's record read, then owned(op, r) if op's key may see it. */
static void lookup(struct cp_op *op, void (*owned)(struct cp_op *op, redisReply *r))
{
	dom(op)->owned = owned;
	cp_rdb_cmdf(op->s->db, on_lookup, op, "HMGET sl:domain:%s " DOMAIN_FIELDS, dom(op)->domain);
}

/* ---- rewriting the sessions that name a domain ---- */

static void rewrite_next(struct cp_op *op);

/* The answer kept in op->acc, with the status rewrite_sessions was given. */
static void rewrite_done(struct cp_op *op)
{
	json_t *body = op->acc;

	op->acc = NULL;
	cp_op_reply(op, dom(op)->status ? dom(op)->status : 200, body);
}

/* Redis failed during the rewrite: stop here rather than fail every
 * remaining session one by one (they would meet the same Redis). The next
 * verify or delete rewrites them again. */
static void rewrite_abort(struct cp_op *op, const char *err)
{
	sl_warn("domain %s: session records not rewritten: %s", dom(op)->domain, err);
	rewrite_done(op);
}

static void on_rewritten(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	(void)r;
	if (err) {
		rewrite_abort(op, err);
		return;
	}
	/* A session changed or deleted meanwhile is left as it is: the change
	 * that won has the newer record. */
	rewrite_next(op);
}

/* Replies: GET sl:sess:<sid>, INCR sl:rev. */
static void on_rewrite_read(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct cp_record *rec = &dom(op)->rec;
	struct pr_session ps;
	uint64_t read_rev;

	if (op->step++ == 0) {
		rec->buf.len = 0;
		rec->nil = 1;
		op->step_failed = err != NULL;
		if (!err && r->type == REDIS_REPLY_STRING &&
		    sl_buf_append(&rec->buf, r->str, r->len) == 0)
			rec->nil = 0;
		return;
	}
	if (op->step_failed || err) {
		rewrite_abort(op, err ? err : "redis unavailable");
		return;
	}
	if (r->type != REDIS_REPLY_INTEGER || rec->nil ||
	    pr_session_decode(rec->buf.p, rec->buf.len, &ps) < 0 ||
	    strcmp(ps.domain, dom(op)->domain) != 0 || ps.status != PR_SS_ACTIVE ||
	    op->now >= ps.expires) {
		rewrite_next(op);
		return;
	}
	if (dom(op)->deleted) /* sessions lose the domain */
		ps.domain[0] = '\0';
	ps.domain_verified = !dom(op)->deleted;
	read_rev = ps.rev;
	ps.rev = (uint64_t)r->integer;
	if (cp_record_encode(rec, &ps) < 0) {
		rewrite_next(op);
		return;
	}
	cp_record_update(op, rec, &ps, read_rev, 0, 0, on_rewritten);
}

/* One session after another (the ids); then the answer kept in op->acc. */
static void rewrite_next(struct cp_op *op)
{
	struct domain_op *d = dom(op);

	if (d->next_id < d->ids.n) {
		const char *sid = d->ids.v[d->next_id++];

		op->step = 0;
		cp_rdb_cmdf(op->s->db, on_rewrite_read, op, "GET sl:sess:%s", sid);
		cp_rdb_cmdf(op->s->db, on_rewrite_read, op, "INCR sl:rev");
		return;
	}
	rewrite_done(op);
}

static void on_domain_sessions(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct cp_strings *ids = &dom(op)->ids;
	size_t n;

	if (!err && r->type == REDIS_REPLY_ARRAY) {
		n = r->elements < 10000 ? r->elements : 10000;
		ids->v = calloc(n + 1, sizeof(*ids->v));
		for (size_t i = 0; ids->v && i < n; i++)
			if ((ids->v[ids->n] = strndup(r->element[i]->str, r->element[i]->len)))
				ids->n++;
	}
	dom(op)->next_id = 0;
	rewrite_next(op);
}

/* Rewrite the sessions naming dom(op)->domain (verified, or, with
 * domain_deleted set, deleted), then answer status with op->acc. */
static void rewrite_sessions(struct cp_op *op, int status)
{
	dom(op)->status = status;
	cp_rdb_cmdf(op->s->db, on_domain_sessions, op, "SMEMBERS sl:domsess:%s", dom(op)->domain);
}

/* ---- verification on a thread ---- */

/*
 * One verification. Ownership: two references, the thread's and the
 * loop's; whichever drops the last frees it. The thread touches nothing but
 * this struct: it writes res, then wakes the loop through port (one wake:
 * its result), which answers op (held until then; a client gone meanwhile
 * is answered nobody).
 */
struct vjob {
	atomic_int refs;
	struct cp_verify_req q;
	struct cp_verify_result res;
	struct cp_bridge_port port;
	struct cp_op *op;
};

static void vjob_unref(struct vjob *j)
{
	if (atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	cp_bridge_port_release(&j->port);
	free(j);
}

static void *vthread(void *arg)
{
	struct vjob *j = arg;

	cp_verify_run(&j->q, &j->res);
	cp_bridge_wake(&j->port);
	vjob_unref(j);
	return NULL;
}

static void on_verified_saved(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "domain_verified", op->actor.key_id, dom(op)->domain);
	op->acc = json_pack("{s:s,s:s,s:o}", "domain", dom(op)->domain, "status", "verified",
			    "verifiedAt", cp_iso_time(op->now));
	rewrite_sessions(op, 200);
}

static void on_vdone(struct cp_bridge_port *p)
{
	struct vjob *j = H2O_STRUCT_FROM_MEMBER(struct vjob, port, p);
	struct cp_op *op = j->op;

	cp_bridge_port_close(p);
	op->s->api->verifying--;
	if (op->s->stopping) {
		cp_op_error(op, 503, "shutting_down", "the control plane is stopping; retry");
	} else if (!j->res.ok) {
		/* It quotes what the domain's servers sent: printable ASCII only,
		 * so the JSON answer stays valid UTF-8. */
		for (char *c = j->res.why; *c; c++)
			if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
				*c = '?';
		cp_op_error(op, 422, "verification_failed", "%s", j->res.why);
	} else {
		op->now = (uint64_t)time(NULL);
		cp_rdb_cmdf(op->s->db, on_verified_saved, op,
			    "HSET sl:domain:%s status verified verified %llu", dom(op)->domain,
			    (unsigned long long)op->now);
	}
	vjob_unref(j);
}

static void start_verify(struct cp_op *op, redisReply *r)
{
	struct vjob *j;

	if (op->s->api->verifying >= VERIFY_MAX) {
		cp_op_error(op, 503, "busy", "too many verifications at once; retry");
		return;
	}
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		cp_op_error(op, 500, "internal", "cannot start the verification");
		return;
	}
	atomic_init(&j->refs, 2);
	j->op = op;
	j->q.method = dom(op)->http_check ? CP_VERIFY_HTTP : CP_VERIFY_DNS;
	j->q.timeout_ms = VERIFY_TIMEOUT_MS;
	snprintf(j->q.domain, sizeof(j->q.domain), "%s", dom(op)->domain);
	snprintf(j->q.token, sizeof(j->q.token), "%s", field(r, F_TOKEN));
	snprintf(j->q.dns_server, sizeof(j->q.dns_server), "%s",
		 op->s->cfg.dns_server ? op->s->cfg.dns_server : "");
	snprintf(j->q.connect, sizeof(j->q.connect), "%s",
		 op->s->cfg.challenge_connect ? op->s->cfg.challenge_connect : "");
	cp_bridge_port_open(op->s->bridge, &j->port, on_vdone);
	op->s->api->verifying++;
	if (sl_thread_detached(vthread, j) < 0) {
		op->s->api->verifying--;
		atomic_store(&j->refs, 1);
		vjob_unref(j);
		cp_op_error(op, 500, "internal", "cannot start the verification");
	}
}

static void verify_owned(struct cp_op *op, redisReply *r)
{
	if (strcmp(field(r, F_STATUS), "verified") == 0) {
		cp_op_reply(
			op, 200,
			json_pack("{s:s,s:s}", "domain", dom(op)->domain, "status", "verified"));
		return;
	}
	start_verify(op, r);
}

static void verify_start(struct cp_op *op)
{
	lookup(op, verify_owned);
}

/* ---- register, list, show, delete ---- */

static void on_registered(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *body;

	if (err || r->type != REDIS_REPLY_ARRAY || r->elements != F_COUNT) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (strcmp(field(r, F_KEY), op->actor.key_id) != 0) {
		cp_op_error(op, 409, "domain_taken", "%s is registered by another key",
			    dom(op)->domain);
		return;
	}
	body = domain_json(dom(op)->domain, r);
	if (op->req && op->step_failed == 0)
		cp_audit(op->s, op->req, "domain_registered", op->actor.key_id, dom(op)->domain);
	/* HSETNX answered 0 for a domain this key had already: 200, as is. */
	cp_op_reply(op, dom(op)->found ? 201 : 200, body);
}

static void on_claimed(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r, err);
		return;
	}
	dom(op)->found = r->integer == 1; /* HSETNX: ours now */
	if (dom(op)->found) {
		char token[33];

		pr_random_alnum(token, 32);
		cp_rdb_cmdf(op->s->db, NULL, NULL,
			    "HSET sl:domain:%s token %s status pending created %llu",
			    dom(op)->domain, token, (unsigned long long)op->now);
		cp_rdb_cmdf(op->s->db, NULL, NULL, "ZADD sl:domains %llu %s",
			    (unsigned long long)op->now, dom(op)->domain);
		cp_rdb_cmdf(op->s->db, NULL, NULL, "SADD sl:domains:%s %s", op->actor.key_id,
			    dom(op)->domain);
	}
	cp_rdb_cmdf(op->s->db, on_registered, op, "HMGET sl:domain:%s " DOMAIN_FIELDS,
		    dom(op)->domain);
}

static void register_start(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_claimed, op, "HSETNX sl:domain:%s key %s", dom(op)->domain,
		    op->actor.key_id);
}

static void show_owned(struct cp_op *op, redisReply *r)
{
	cp_op_reply(op, 200, domain_json(dom(op)->domain, r));
}

static void show_start(struct cp_op *op)
{
	lookup(op, show_owned);
}

/* Replies: the names, then one HMGET each. */
static void on_list(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct cp_strings *ids = &dom(op)->ids;
	size_t step = op->step++;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
	} else if (step == 0) {
		size_t n = r->elements < 1000 ? r->elements : 1000;

		ids->v = calloc(n + 1, sizeof(*ids->v));
		for (size_t i = 0; ids->v && i < n; i++) {
			ids->v[ids->n] = strndup(r->element[i]->str, r->element[i]->len);
			if (ids->v[ids->n] == NULL)
				break;
			cp_rdb_cmdf(op->s->db, on_list, op, "HMGET sl:domain:%s " DOMAIN_FIELDS,
				    ids->v[ids->n++]);
		}
	} else if (r->type == REDIS_REPLY_ARRAY && r->elements == F_COUNT &&
		   r->element[F_KEY]->type == REDIS_REPLY_STRING) {
		json_array_append_new(json_object_get(op->acc, "domains"),
				      domain_json(ids->v[step - 1], r));
	}
	if (op->step <= ids->n)
		return;
	if (op->step_failed) {
		cp_op_step_error(op, "domain store");
		return;
	}
	cp_op_reply(op, 200, json_incref(op->acc));
}

static void list_start(struct cp_op *op)
{
	op->acc = json_pack("{s:[]}", "domains");
	op->step = 0;
	if (op->actor.scopes & CP_SCOPE_ADMIN)
		cp_rdb_cmdf(op->s->db, on_list, op, "ZRANGE sl:domains 0 999");
	else
		cp_rdb_cmdf(op->s->db, on_list, op, "SMEMBERS sl:domains:%s", op->actor.key_id);
}

static void delete_owned(struct cp_op *op, redisReply *r)
{
	const char *key = field(r, F_KEY);

	cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(op->s->db, NULL, NULL, "DEL sl:domain:%s", dom(op)->domain);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "ZREM sl:domains %s", dom(op)->domain);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "SREM sl:domains:%s %s", key, dom(op)->domain);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "EXEC");
	if (op->req)
		cp_audit(op->s, op->req, "domain_deleted", op->actor.key_id, dom(op)->domain);
	dom(op)->deleted = 1;
	op->acc = json_pack("{s:s,s:s}", "domain", dom(op)->domain, "status", "deleted");
	rewrite_sessions(op, 200);
}

static void delete_start(struct cp_op *op)
{
	lookup(op, delete_owned);
}

/* {"domain": "..."} or {"method": "dns"|"http"}: the one string field into
 * out: 0, or -EINVAL with e's message set. */
static int body_field(h2o_req_t *req, const char *name, char *out, size_t cap, struct cp_err *e)
{
	json_t *o = req->entity.len ? json_loadb(req->entity.base, req->entity.len,
						 JSON_REJECT_DUPLICATES, NULL)
				    : NULL;
	const char *v = json_string_value(json_object_get(o, name));
	int ok = json_is_object(o) && json_object_size(o) == 1 && v && strlen(v) < cap;

	if (ok)
		snprintf(out, cap, "%s", v);
	else
		snprintf(e->message, sizeof(e->message), "the body must be {\"%s\": \"...\"}",
			 name);
	json_decref(o);
	return ok ? 0 : -EINVAL;
}

int cp_domains_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	void (*next)(struct cp_op *) = NULL;
	struct cp_err e = {.status = 400};
	struct cp_op *op;
	const char *slash = id ? memchr(id, '/', id_len) : NULL;
	size_t dlen = slash ? (size_t)(slash - id) : id_len;
	int post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
	int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
	int del = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"));
	char method[8] = "";

	if (slash && !(id_len - dlen == 7 && memcmp(slash, "/verify", 7) == 0)) {
		cp_send_error(s, req, 404, "not_found", "no such endpoint");
		return 0;
	}
	if (id == NULL)
		next = post ? register_start : get ? list_start : NULL;
	else if (slash)
		next = post ? verify_start : NULL;
	else
		next = get ? show_start : del ? delete_start : NULL;
	if (next == NULL) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req, sizeof(struct domain_op))) == NULL)
		return -ENOMEM;
	op->dispose = domain_dispose;
	if (id)
		snprintf(dom(op)->domain, sizeof(dom(op)->domain), "%.*s", (int)dlen, id);
	else if (next == register_start &&
		 body_field(req, "domain", dom(op)->domain, sizeof(dom(op)->domain), &e) < 0)
		op->has_deferred_error = 1;
	if (!op->has_deferred_error && next != list_start &&
	    cp_domain_check(dom(op)->domain, s->cfg.public_url, &e) < 0)
		op->has_deferred_error = 1;
	if (!op->has_deferred_error && slash) {
		if (body_field(req, "method", method, sizeof(method), &e) < 0 ||
		    (strcmp(method, "dns") != 0 && strcmp(method, "http") != 0)) {
			snprintf(
				e.message, sizeof(e.message),
				"the body must be {\"method\": \"dns\"} or {\"method\": \"http\"}");
			op->has_deferred_error = 1;
		}
		dom(op)->http_check = strcmp(method, "http") == 0;
	}
	if (op->has_deferred_error) {
		if (!e.code[0])
			snprintf(e.code, sizeof(e.code), "invalid_value");
		e.status = 400;
		op->deferred_error = e;
	}
	cp_auth(op, CP_SCOPE_TUNNELS, next);
	return 0;
}

/* A check runs on a thread with its own bound (3 s): waited for here, while
 * the bridge still answers its wake. */
void cp_domains_drain(struct cp_server *s)
{
	uint64_t until = h2o_now(s->loop) + 4000;

	while (s->api->verifying > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
}
