/*
 * cp_limits.c: rate limits in the control plane (docs/limits.md).
 *
 * A session's limits are fixed when it is created, from the server's
 * defaults (--limit-*), overridden by its key's (sl:keymeta:<id> field
 * "limits", JSON of the limits set on the key), lowered by the request's
 * own; they travel in the session's record to every relay, which enforces
 * them. A key's per-tunnel limits are also ceilings: a session of a key
 * without admin scope may ask for less, never for more.
 *
 * Session creation is one exact check in Redis: the sliding-window script
 * of proto/pr_window.h over sl:rl:sess:<key id>. Keys with admin scope are
 * the operator's and are not counted unless a sessions limit is set on
 * them. While Redis is down nothing can be created anyway (the session must
 * be stored), so creation fails closed with 503.
 *
 *   GET|PUT /api/v1/tunnels/{id}/limits   a session's (PUT: owner or admin)
 *   GET|PUT /api/v1/keys/{id}/limits      a key's (admin)
 */
#include "api/cp_limits.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_record.h"
#include "http/cp_reply.h"
#include "pr_window.h"
#include "sl_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#define SESSION_MASK ((1u << CP_LIM_REQUESTS) | (1u << CP_LIM_BANDWIDTH) | (1u << CP_LIM_TCP))
#define ALL_MASK     ((1u << CP_LIM_N) - 1)

/* ---- effective limits ---- */

/* The server's defaults overridden by the key's stored ones (JSON, may be
 * NULL); eff->set: which the key sets itself. */
static void key_limits(const struct cp_server *s, const char *json, size_t len,
		       struct cp_limits *eff)
{
	struct cp_limits k;
	struct cp_err e;

	memcpy(eff->v, s->cfg.limits, sizeof(eff->v));
	eff->set = 0;
	if (json == NULL || len == 0 || cp_limits_parse(json, len, ALL_MASK, &k, &e) < 0)
		return;
	for (int i = 0; i < CP_LIM_N; i++)
		if ((k.set >> i) & 1)
			eff->v[i] = k.v[i];
	eff->set = k.set;
}

/* 1 when a allows more than b (none is the most): a/aw > b/bw. */
static int more_than(const struct pr_limit *a, const struct pr_limit *b)
{
	if (b->limit == 0)
		return 0;
	if (a->limit == 0)
		return 1;
	return (unsigned __int128)a->limit * b->window > (unsigned __int128)b->limit * a->window;
}

/* The session's limits: the key's, lowered by the request's: 0, or
 * -EPERM with *e the 403 to answer (a request above its key's ceiling). */
static int session_limits(const struct cp_op *op, const struct cp_limits *key,
			  const struct cp_limits *asked, struct pr_session *ps, struct cp_err *e)
{
	struct pr_limit v[CP_LIM_N];

	memcpy(v, key->v, sizeof(v));
	for (int i = 0; i < CP_LIM_N; i++) {
		if (!((asked->set >> i) & 1))
			continue;
		if (!(op->actor.scopes & CP_SCOPE_ADMIN) && more_than(&asked->v[i], &key->v[i]))
			return cp_err_set(e, -EPERM, 403, "limit_above_key",
					  "limits.%s asks for more than this key allows (%llu per "
					  "%u s)",
					  cp_limit_names[i], (unsigned long long)key->v[i].limit,
					  key->v[i].window);
		v[i] = asked->v[i];
	}
	ps->lim_req = v[CP_LIM_REQUESTS];
	ps->lim_bw = v[CP_LIM_BANDWIDTH];
	ps->lim_tcp = v[CP_LIM_TCP];
	ps->key_req = key->v[CP_LIM_KEY_REQUESTS];
	return 0;
}

/* ---- 429 ---- */

/* A response header whose value is formatted (h2o keeps a pool copy). */
static void add_header(h2o_req_t *req, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void add_header(h2o_req_t *req, const char *name, const char *fmt, ...)
{
	char buf[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	h2o_add_header_by_str(&req->pool, &req->res.headers, name, strlen(name), 0, NULL,
			      h2o_strdup(&req->pool, buf, (size_t)n).base, (size_t)n);
}

/* 429 for limit l (room again in reset_ms) with Retry-After and the
 * RateLimit headers, and an audit line. */
static void limited(struct cp_op *op, const struct pr_limit *l, uint64_t reset_ms, const char *what)
{
	unsigned long long reset = (reset_ms + 999) / 1000;

	if (reset == 0)
		reset = 1;
	if (op->req) {
		add_header(op->req, "retry-after", "%llu", reset);
		add_header(op->req, "ratelimit-limit", "%llu", (unsigned long long)l->limit);
		add_header(op->req, "ratelimit-remaining", "0");
		add_header(op->req, "ratelimit-reset", "%llu", reset);
		add_header(op->req, "ratelimit-policy", "%llu;w=%u", (unsigned long long)l->limit,
			   l->window);
		cp_audit(op->s, op->req, "rate_limited", op->actor.key_id, what);
	}
	op->s->m.rate_limited++;
	cp_op_error(op, 429, "rate_limited", "%s: at most %llu per %u s; retry in %llu s", what,
		    (unsigned long long)l->limit, l->window, reset);
}

/* ---- session creation ---- */

static void on_session_window(void *ud, redisReply *r, const char *err)
{
	struct cp_limits_check *c = ud;
	struct cp_op *op = c->op;
	const struct pr_limit *l = &c->eff.v[CP_LIM_SESSIONS];

	if (err || r->type != REDIS_REPLY_ARRAY || r->elements < 4 ||
	    r->element[0]->type != REDIS_REPLY_INTEGER ||
	    r->element[3]->type != REDIS_REPLY_INTEGER) {
		/* Fail closed: without Redis no session could be stored anyway. */
		cp_op_redis_error(op, r && r->type == REDIS_REPLY_ERROR ? r : NULL,
				  err ? err : "the session-rate check failed");
		return;
	}
	if (r->element[0]->integer < 1) {
		limited(op, l, (uint64_t)(r->element[3]->integer > 0 ? r->element[3]->integer : 0),
			"session creation for this key");
		return;
	}
	c->next(op);
}

/* Whose creations are counted: the key's, or for localtunnel clients
 * (which have none) the client address's. */
static const char *subject(const struct cp_limits_check *c, char *out, size_t cap)
{
	char ip[64] = "unknown";

	if (!c->anonymous)
		return c->op->actor.key_id;
	if (c->op->req)
		cp_client_ip(c->op->req, ip);
	snprintf(out, cap, "lt-%s", ip);
	return out;
}

static void on_key_limits(void *ud, redisReply *r, const char *err)
{
	struct cp_err e;
	struct cp_limits_check *c = ud;
	struct cp_op *op = c->op;
	const struct pr_limit *sl;
	char who[80];

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	key_limits(op->s, r->type == REDIS_REPLY_STRING ? r->str : NULL,
		   r->type == REDIS_REPLY_STRING ? r->len : 0, &c->eff);
	if (session_limits(op, &c->eff, c->asked, c->ps, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
	sl = &c->eff.v[CP_LIM_SESSIONS];
	/* The operator's own keys are not counted unless told to be. */
	if (sl->limit == 0 ||
	    ((op->actor.scopes & CP_SCOPE_ADMIN) && !((c->eff.set >> CP_LIM_SESSIONS) & 1))) {
		c->next(op);
		return;
	}
	cp_rdb_cmdf(op->s->db, on_session_window, c, "EVAL %s 1 sl:rl:sess:%s %llu %llu 1",
		    PR_WINDOW_LUA, subject(c, who, sizeof(who)), (unsigned long long)sl->limit,
		    (unsigned long long)sl->window * 1000);
}

void cp_limits_begin(struct cp_limits_check *c, struct cp_op *op, struct pr_session *ps,
		     const struct cp_limits *asked, int anonymous, void (*next)(struct cp_op *op))
{
	*c = (struct cp_limits_check){
		.op = op, .ps = ps, .asked = asked, .anonymous = anonymous, .next = next};
	cp_rdb_cmdf(op->s->db, on_key_limits, c, "HGET sl:keymeta:%s limits", op->actor.key_id);
}

/* ---- the limits routes' requests ---- */

/*
 * A GET or PUT of limits. Ownership: the op's (cp_op_new with this size);
 * limits_dispose frees the record and the text written.
 */
struct limits_op {
	struct cp_op op;
	struct cp_limits asked; /* PUT: the body, parsed before auth */
	struct pr_session ps;	/* a session's: its record, decoded */
	struct cp_record rec;	/* a session's PUT: the record rewritten */
	char *text;		/* a key's PUT: the limits as stored (JSON) */
};

static struct limits_op *limits_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct limits_op, op, op);
}

static void limits_dispose(struct cp_op *op)
{
	struct limits_op *l = limits_of(op);

	cp_record_free(&l->rec);
	free(l->text);
}

/* ---- GET|PUT /api/v1/tunnels/{id}/limits ---- */

static json_t *session_limits_json(const struct pr_session *ps)
{
	struct pr_limit v[CP_LIM_N] = {{0, 0}};

	v[CP_LIM_REQUESTS] = ps->lim_req;
	v[CP_LIM_BANDWIDTH] = ps->lim_bw;
	v[CP_LIM_TCP] = ps->lim_tcp;
	v[CP_LIM_KEY_REQUESTS] = ps->key_req;
	return cp_limits_json(v, SESSION_MASK | (1u << CP_LIM_KEY_REQUESTS));
}

json_t *cp_limits_session_json(const struct pr_session *ps)
{
	return session_limits_json(ps);
}

static int visible(struct cp_op *op, redisReply *r, struct pr_session *ps)
{
	if (r->type != REDIS_REPLY_STRING || pr_session_decode(r->str, r->len, ps) < 0 ||
	    ps->status != PR_SS_ACTIVE || op->now >= ps->expires ||
	    (!(op->actor.scopes & CP_SCOPE_ADMIN) && strcmp(ps->key_id, op->actor.key_id) != 0)) {
		cp_op_error(op, 404, "not_found", "no active session %s", op->id);
		return 0;
	}
	return 1;
}

static void on_limits_written(void *ud, redisReply *r, const char *err)
{
	struct cp_err e;
	struct cp_op *op = ud;
	struct pr_session *ps = &limits_of(op)->ps;

	if (cp_record_update_result(op, r, err, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "session_limits_changed", op->actor.key_id, ps->sid);
	cp_op_reply(op, 200, session_limits_json(ps));
}

/* Replies: GET sl:sess, then HGET the key's limits, then INCR sl:rev. */
static void on_put_step(void *ud, redisReply *r, const char *err)
{
	struct cp_err e;
	struct cp_op *op = ud;
	struct limits_op *l = limits_of(op);
	struct pr_session *ps = &l->ps;
	struct cp_limits key;
	uint64_t read_rev;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	switch (op->step++) {
	case 0:
		if (!visible(op, r, ps))
			return;
		cp_rdb_cmdf(op->s->db, on_put_step, op, "HGET sl:keymeta:%s limits", ps->key_id);
		return;
	case 1:
		key_limits(op->s, r->type == REDIS_REPLY_STRING ? r->str : NULL,
			   r->type == REDIS_REPLY_STRING ? r->len : 0, &key);
		/* What the body leaves out keeps its current value. */
		if (!((l->asked.set >> CP_LIM_REQUESTS) & 1))
			key.v[CP_LIM_REQUESTS] = ps->lim_req;
		if (!((l->asked.set >> CP_LIM_BANDWIDTH) & 1))
			key.v[CP_LIM_BANDWIDTH] = ps->lim_bw;
		if (!((l->asked.set >> CP_LIM_TCP) & 1))
			key.v[CP_LIM_TCP] = ps->lim_tcp;
		key.v[CP_LIM_KEY_REQUESTS] = ps->key_req;
		if (session_limits(op, &key, &l->asked, ps, &e) < 0) {
			cp_op_fail(op, &e);
			return;
		}
		cp_rdb_cmdf(op->s->db, on_put_step, op, "INCR sl:rev");
		return;
	default:
		read_rev = ps->rev;
		ps->rev = (uint64_t)r->integer;
		if (cp_record_encode(&l->rec, ps) < 0) {
			cp_op_error(op, 500, "internal", "cannot encode the session");
			return;
		}
		cp_record_update(op, &l->rec, ps, read_rev, 0, 0, on_limits_written);
	}
}

static void on_get_session(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (visible(op, r, &limits_of(op)->ps))
		cp_op_reply(op, 200, session_limits_json(&limits_of(op)->ps));
}

static void session_get(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_get_session, op, "GET sl:sess:%s", op->id);
}

static void session_put(struct cp_op *op)
{
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_put_step, op, "GET sl:sess:%s", op->id);
}

/* ---- GET|PUT /api/v1/keys/{id}/limits ---- */

static void on_key_get(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct cp_limits eff;

	if (err || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		cp_op_redis_error(op, r && r->type == REDIS_REPLY_ERROR ? r : NULL, err);
		return;
	}
	if (r->element[0]->type != REDIS_REPLY_STRING) {
		cp_op_error(op, 404, "not_found", "no key %s", op->id);
		return;
	}
	key_limits(op->s, r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->str : NULL,
		   r->element[1]->type == REDIS_REPLY_STRING ? r->element[1]->len : 0, &eff);
	cp_op_reply(op, 200, cp_limits_json(eff.v, ALL_MASK));
}

static void key_get(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_key_get, op, "HMGET sl:keymeta:%s hash limits", op->id);
}

static void on_key_put(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct cp_limits eff;

	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r && r->type == REDIS_REPLY_ERROR ? r : NULL, err);
		return;
	}
	if (r->integer != 1) {
		cp_op_error(op, 404, "not_found", "no key %s", op->id);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "key_limits_changed", op->actor.key_id, op->id);
	key_limits(op->s, limits_of(op)->text, strlen(limits_of(op)->text), &eff);
	cp_op_reply(op, 200, cp_limits_json(eff.v, ALL_MASK));
}

/* Only an existing key's limits are set (the script checks, so a revoked
 * or unknown id never grows a stray hash). Later sessions of the key take
 * them; its existing sessions keep theirs (PUT .../tunnels/{id}/limits). */
static const char key_put_lua[] =
	"if redis.call('HEXISTS', KEYS[1], 'hash') == 0 then return 0 end\n"
	"redis.call('HSET', KEYS[1], 'limits', ARGV[1])\n"
	"return 1\n";

static void key_put(struct cp_op *op)
{
	struct limits_op *l = limits_of(op);
	json_t *j = cp_limits_json(l->asked.v, l->asked.set);
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (text == NULL) {
		cp_op_error(op, 500, "internal", "out of memory");
		return;
	}
	l->text = text;
	cp_rdb_cmdf(op->s->db, on_key_put, op, "EVAL %s 1 sl:keymeta:%s %s", key_put_lua, op->id,
		    text);
}

int cp_limits_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len, int key)
{
	int put = cp_is_method(req, "PUT");
	int get = cp_is_method(req, "GET") || cp_is_method(req, "HEAD");
	struct cp_op *op;

	if (!put && !get) {
		cp_send_error(s, req, 405, "method_not_allowed", "GET or PUT on a limits path");
		return 0;
	}
	if ((op = cp_op_new(s, req, sizeof(struct limits_op))) == NULL)
		return -ENOMEM;
	op->dispose = limits_dispose;
	memcpy(op->id, id, id_len);
	op->id[id_len] = '\0';
	if (put && cp_limits_parse(req->entity.base ? req->entity.base : "", req->entity.len,
				   key ? ALL_MASK : SESSION_MASK, &limits_of(op)->asked,
				   &op->deferred_error) < 0)
		op->has_deferred_error = 1;
	if (key)
		cp_auth(op, CP_SCOPE_ADMIN, put ? key_put : key_get);
	else
		cp_auth(op, CP_SCOPE_TUNNELS, put ? session_put : session_get);
	return 0;
}
