/*
 * cp_tunnels.c: tunnel sessions, the API's main resource:
 *
 *   POST   /api/v1/tunnels        create one (http/cp_tunnel_req.h's body):
 *                                 201 with the agent's token and relay
 *   GET    /api/v1/tunnels        list (?status=&limit=&offset=)
 *   GET    /api/v1/tunnels/{id}   one, with the relays' counters summed
 *   DELETE /api/v1/tunnels/{id}   delete: a tombstone every relay follows
 *
 * and the localtunnel client's GET /?new and GET /<name> (--localtunnel),
 * which create a session without a key. Records are written through
 * http/cp_record.h; a session's limits are fixed by api/cp_limits.h when it
 * is created. Besides the records, creation claims in Redis
 *
 *   sl:name:<name>     the subdomain, SET NX, expiring with the session
 *   sl:ltport:<port>   a localtunnel client's relay port, SET NX
 */
#include "api/cp_limits.h"
#include "api/cp_tunnels.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_record.h"
#include "http/cp_reply.h"
#include "pr_state.h"
#include "pr_token.h"

#include <errno.h>
#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#define NAME_TRIES    3 /* random names drawn before giving up */
#define LIST_MAX      100
#define LIST_DEFAULT  20
#define LT_PORT_TRIES 8
#define LT_MAX_CONN   10 /* sockets a localtunnel client keeps open */

/* ---- URLs ---- */

/* "http://<name>.<host>/" from the public base "http://host[:port]". */
void cp_tunnel_url(const struct cp_server *s, const struct pr_session *ps, char *out, size_t cap)
{
	const char *base = s->cfg.public_url, *host = strstr(base, "://");
	size_t scheme = host ? (size_t)(host - base) : 0;

	host = host ? host + 3 : base;
	if (ps->proto == PR_PROTO_TCP) {
		const char *colon = strchr(host, ':');

		snprintf(out, cap, "tcp://%.*s",
			 (int)(colon ? (size_t)(colon - host) : strlen(host)), host);
		return;
	}
	snprintf(out, cap, "%.*s://%s.%s/", (int)(scheme ? scheme : 4), scheme ? base : "http",
		 ps->name, host);
}

/* "a,b,c" as a JSON array of strings. */
static json_t *split_list(const char *s)
{
	json_t *a = json_array();

	/* Bounded by the string's length. */
	while (a && *s) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);

		json_array_append_new(a, json_stringn(s, n));
		s += n + (comma ? 1 : 0);
	}
	return a;
}

static json_t *session_json(const struct cp_server *s, const struct pr_session *ps, uint64_t now)
{
	static const char *const auth_names[] = {"none", "basic", "bearer"};
	json_t *o;
	char url[400];
	const char *status = ps->status == PR_SS_ACTIVE && now >= ps->expires
				     ? "expired"
				     : pr_sess_status_name(ps->status);

	cp_tunnel_url(s, ps, url, sizeof(url));
	o = json_pack("{s:s,s:s,s:s,s:s,s:i,s:o,s:o,s:s}", "sessionId", ps->sid, "status", status,
		      "name", ps->name, "protocol", ps->proto == PR_PROTO_TCP ? "tcp" : "http",
		      "port", (int)ps->port, "createdAt", cp_iso_time(ps->created), "expiresAt",
		      cp_iso_time(ps->expires), "url", url);
	if (o && ps->domain[0]) {
		const char *base = s->cfg.public_url, *sep = strstr(base, "://");
		char curl[300];

		snprintf(curl, sizeof(curl), "%.*s://%s/", (int)(sep ? sep - base : 4),
			 sep ? base : "http", ps->domain);
		json_object_set_new(o, "customDomain",
				    json_pack("{s:s,s:s,s:b}", "domain", ps->domain, "url", curl,
					      "verified", ps->domain_verified));
	}
	if (o)
		json_object_set_new(o, "limits", cp_limits_session_json(ps));
	if (o)
		json_object_set_new(o, "access",
				    json_pack("{s:s,s:o,s:o}", "auth",
					      auth_names[ps->auth <= 2 ? ps->auth : 0], "allowIps",
					      split_list(ps->allow_ips), "denyIps",
					      split_list(ps->deny_ips)));
	return o;
}

/* ---- POST /api/v1/tunnels ---- */

/* A session being created rides in op->acc's place: kept in a heap copy. */
struct creating {
	struct pr_session ps;
	int tries;
	long long active;
	int name_ok;
};

static void create_claim(struct cp_op *op);

static void release_name(struct cp_op *op, const struct pr_session *ps)
{
	cp_rdb_cmdf(op->s->db, NULL, NULL, "DEL sl:name:%s", ps->name);
}

static void fill_auth(struct cp_op *op, struct pr_session *ps)
{
	const struct cp_tunnel_req *q = &op->treq;

	ps->auth = (uint8_t)(q->auth == CP_AUTH_BASIC	 ? PR_AUTH_BASIC
			     : q->auth == CP_AUTH_BEARER ? PR_AUTH_BEARER
							 : PR_AUTH_NONE);
	if (ps->auth == PR_AUTH_NONE)
		return;
	snprintf(ps->auth_user, sizeof(ps->auth_user), "%s", q->username);
	pr_url_auth_mac((const uint8_t *)op->s->cfg.session_secret,
			strlen(op->s->cfg.session_secret), ps->sid, q->username, q->secret,
			ps->auth_mac);
}

/* What the localtunnel client (npm "localtunnel") expects: its id (the
 * name), the port for its sockets, how many to open, the URL; and ip, the
 * relay's host, since the sockets go there and not to the control plane. */
static void lt_reply(struct cp_op *op, struct creating *c)
{
	const char *relay = op->s->cfg.relay, *colon = strrchr(relay, ':');
	char url[400], ip[256];

	snprintf(ip, sizeof(ip), "%.*s", (int)(colon ? (size_t)(colon - relay) : strlen(relay)),
		 relay);
	cp_tunnel_url(op->s, &c->ps, url, sizeof(url));
	url[strlen(url) - 1] = '\0'; /* lt prints it as is: no trailing slash */
	op->s->m.sessions_created++;
	if (op->req)
		cp_audit(op->s, op->req, "session_created", "localtunnel", c->ps.sid);
	cp_op_reply(op, 200,
		    json_pack("{s:s,s:i,s:i,s:s,s:s,s:s}", "id", c->ps.name, "port",
			      (int)c->ps.lt_port, "max_conn_count", LT_MAX_CONN, "url", url, "ip",
			      ip, "sessionId", c->ps.sid));
}

static void created_reply(struct cp_op *op, struct creating *c)
{
	const char *secret = op->s->cfg.session_secret;
	char token[PR_SIGNED_MAX];
	json_t *body;

	if (op->lt) {
		op->blob_owner = NULL;
		lt_reply(op, c);
		free(c);
		return;
	}
	if (pr_token_sign((const uint8_t *)secret, strlen(secret), c->ps.sid, c->ps.epoch,
			  c->ps.expires, token, sizeof(token)) < 0) {
		free(c);
		cp_op_error(op, 500, "internal", "cannot sign the agent token");
		return;
	}
	op->s->m.sessions_created++;
	body = session_json(op->s, &c->ps, op->now);
	json_object_set_new(body, "agentToken", json_string(token));
	json_object_set_new(body, "relay", json_string(op->s->cfg.relay));
	if (op->req) {
		char detail[120];

		snprintf(detail, sizeof(detail), "session %s name %s", c->ps.sid, c->ps.name);
		cp_audit(op->s, op->req, "session_created", op->actor.key_id, detail);
	}
	free(c);
	cp_op_reply(op, 201, body);
}

static void on_exec_created(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct creating *c = (struct creating *)(void *)op->blob_owner;

	if (err || !cp_exec_ok(r)) {
		/* Nothing was written: the name and port claimed go back. */
		release_name(op, &c->ps);
		if (c->ps.lt_port)
			cp_rdb_cmdf(op->s->db, NULL, NULL, "DEL sl:ltport:%u",
				    (unsigned)c->ps.lt_port);
		op->blob_owner = NULL;
		free(c);
		cp_op_redis_error(op, r && r->type == REDIS_REPLY_ERROR ? r : NULL,
				  err ? err : "a command of the transaction failed");
		return;
	}
	op->blob_owner = NULL;
	created_reply(op, c);
}

static void finish_create(struct cp_op *op, struct creating *c)
{
	if (cp_encode_record(op, &c->ps) < 0) {
		release_name(op, &c->ps);
		op->blob_owner = NULL;
		free(c);
		cp_op_error(op, 500, "internal", "cannot encode the session");
		return;
	}
	cp_create_record(op, &c->ps, on_exec_created);
}

static void claim_lt_port(struct cp_op *op);

/* SET sl:ltport:<port> NX: the port is this session's, or try another. */
static void on_lt_port(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct creating *c = op->blob_owner;

	if (err || r->type == REDIS_REPLY_ERROR) {
		release_name(op, &c->ps);
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->type == REDIS_REPLY_STATUS) {
		finish_create(op, c);
		return;
	}
	if (++op->step < LT_PORT_TRIES) {
		claim_lt_port(op);
		return;
	}
	release_name(op, &c->ps);
	cp_op_error(op, 503, "no_port", "no localtunnel port free; retry");
}

/* A random port of --lt-ports for the client's sockets, held in Redis for
 * the session's life so that no two sessions share one. */
static void claim_lt_port(struct cp_op *op)
{
	struct creating *c = op->blob_owner;
	uint32_t span = (uint32_t)(op->s->cfg.lt_hi - op->s->cfg.lt_lo) + 1, rnd;

	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)op->now;
	c->ps.lt_port = (uint16_t)(op->s->cfg.lt_lo + rnd % span);
	cp_rdb_cmdf(op->s->db, on_lt_port, op, "SET sl:ltport:%u %s NX EX %llu",
		    (unsigned)c->ps.lt_port, c->ps.sid,
		    (unsigned long long)(c->ps.expires - op->now + 60));
}

/* Replies of SET NX, INCR, ZREMRANGEBYSCORE, ZCARD, in that order. */
static void on_claim(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct creating *c = (struct creating *)(void *)op->blob_owner;
	int step = op->step++;

	if (op->step_failed)
		goto last;
	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
		goto last;
	}
	if (step == 0)
		c->name_ok = r->type == REDIS_REPLY_STATUS;
	else if (step == 1)
		c->ps.rev = (uint64_t)r->integer;
	else if (step == 3)
		c->active = r->integer;
last:
	if (step != 3)
		return;
	if (op->step_failed) {
		if (c->name_ok)
			release_name(op, &c->ps);
		op->blob_owner = NULL;
		free(c);
		cp_op_error(op, op->why_redis_down ? 503 : 500,
			    op->why_redis_down ? "redis_unavailable" : "redis_error",
			    "session store %s: %s", op->why_redis_down ? "unavailable" : "error",
			    op->why);
		return;
	}
	if (!c->name_ok && op->treq.subdomain[0]) {
		op->blob_owner = NULL;
		free(c);
		cp_op_error(op, 409, "subdomain_taken", "subdomain \"%s\" is taken",
			    op->treq.subdomain);
		return;
	}
	if (!c->name_ok) {
		if (++c->tries < NAME_TRIES) {
			create_claim(op);
			return;
		}
		op->blob_owner = NULL;
		free(c);
		cp_op_error(op, 503, "no_name", "no free random name; retry");
		return;
	}
	if (c->active >= op->s->cfg.max_sessions) {
		release_name(op, &c->ps);
		op->blob_owner = NULL;
		free(c);
		cp_op_error(op, 503, "capacity", "the service is at its session capacity (%ld)",
			    op->s->cfg.max_sessions);
		return;
	}
	if (op->lt) {
		op->step = 0;
		claim_lt_port(op);
		return;
	}
	finish_create(op, c);
}

/* Pipeline: claim the name, take a revision, count active sessions. */
static void create_claim(struct cp_op *op)
{
	struct creating *c = (struct creating *)(void *)op->blob_owner;
	struct cp_rdb *db = op->s->db;

	if (op->treq.subdomain[0])
		snprintf(c->ps.name, sizeof(c->ps.name), "%s", op->treq.subdomain);
	else
		pr_random_alnum(c->ps.name, 10);
	op->step = 0;
	cp_rdb_cmdf(db, on_claim, op, "SET sl:name:%s %s NX EX %llu", c->ps.name, c->ps.sid,
		    (unsigned long long)(c->ps.expires - op->now + 60));
	cp_rdb_cmdf(db, on_claim, op, "INCR sl:rev");
	/* Listing's index forgets sessions whose records are gone. */
	cp_rdb_cmdf(db, NULL, NULL, "ZREMRANGEBYSCORE sl:sessions -inf %llu",
		    (unsigned long long)(op->now - CP_RETAIN_S - 86400));
	cp_rdb_cmdf(db, on_claim, op, "ZREMRANGEBYSCORE sl:active -inf %llu",
		    (unsigned long long)op->now);
	cp_rdb_cmdf(db, on_claim, op, "ZCARD sl:active");
}

/* HMGET sl:domain:<d> key status: a domain of this key (verified, or
 * pending: relays then route only its challenge path here). */
static void on_custom_domain(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct creating *c = op->blob_owner;

	if (err || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->element[0]->type != REDIS_REPLY_STRING ||
	    (strcmp(r->element[0]->str, op->actor.key_id) != 0 &&
	     !(op->actor.scopes & CP_SCOPE_ADMIN))) {
		cp_op_error(op, 409, "domain_not_registered",
			    "customDomain \"%s\" is not a domain of this key: POST /api/v1/domains "
			    "first",
			    op->treq.custom_domain);
		return;
	}
	snprintf(c->ps.domain, sizeof(c->ps.domain), "%s", op->treq.custom_domain);
	c->ps.domain_verified = r->element[1]->type == REDIS_REPLY_STRING &&
				strcmp(r->element[1]->str, "verified") == 0;
	create_claim(op);
}

static void create_checked(struct cp_op *op);

static void create_start(struct cp_op *op)
{
	struct creating *c = calloc(1, sizeof(*c));

	if (c == NULL) {
		cp_op_error(op, 500, "internal", "out of memory");
		return;
	}
	pr_random_alnum(c->ps.sid, 16);
	c->ps.epoch = 1;
	c->ps.status = PR_SS_ACTIVE;
	c->ps.proto = op->treq.proto == CP_TPROTO_TCP ? PR_PROTO_TCP : PR_PROTO_HTTP;
	c->ps.port = op->treq.port;
	c->ps.created = op->now;
	c->ps.expires = op->now + op->treq.duration;
	snprintf(c->ps.key_id, sizeof(c->ps.key_id), "%s", op->actor.key_id);
	op->blob_owner = c;
	fill_auth(op, &c->ps);
	snprintf(c->ps.allow_ips, sizeof(c->ps.allow_ips), "%s", op->treq.allow_ips);
	snprintf(c->ps.deny_ips, sizeof(c->ps.deny_ips), "%s", op->treq.deny_ips);
	memset(op->treq.secret, 0, sizeof(op->treq.secret));
	cp_limits_begin(op, &c->ps, create_checked);
}

/* Limits are set and the key may create one more session. */
static void create_checked(struct cp_op *op)
{
	if (op->treq.custom_domain[0]) {
		/* The domain must be this key's: look it up before the claim. */
		cp_rdb_cmdf(op->s->db, on_custom_domain, op, "HMGET sl:domain:%s key status",
			    op->treq.custom_domain);
		return;
	}
	create_claim(op);
}

/* GET /?new or GET /<subdomain>: the localtunnel client's request, without
 * a key (the client cannot send one): only with --localtunnel. */
int cp_tunnels_localtunnel(struct cp_server *s, h2o_req_t *req, const char *name, size_t len)
{
	struct cp_op *op;
	struct cp_err e;

	if ((op = cp_op_new(s, req)) == NULL)
		return -1;
	op->lt = 1;
	op->treq.port = 0;
	op->treq.duration = s->policy.duration_default;
	snprintf(op->actor.key_id, sizeof(op->actor.key_id), "localtunnel");
	if (len) {
		snprintf(op->treq.subdomain, sizeof(op->treq.subdomain), "%.*s", (int)len, name);
		if (len > CP_SUBDOMAIN_MAX ||
		    cp_subdomain_check(op->treq.subdomain, &s->policy, &e) < 0) {
			cp_op_error(op, 400, "invalid_subdomain", "%s",
				    len > CP_SUBDOMAIN_MAX ? "subdomain too long" : e.message);
			return 0;
		}
	}
	create_start(op);
	return 0;
}

static int tunnels_create(struct cp_server *s, h2o_req_t *req)
{
	struct cp_op *op;
	struct cp_err e;

	op = cp_op_new(s, req);
	if (op == NULL)
		return -1;
	if (cp_tunnel_req_parse(req->entity.base ? req->entity.base : "", req->entity.len,
				&s->policy, &op->treq, &e) < 0) {
		op->deferred_error = e;
		op->has_deferred_error = 1;
	}
	cp_auth(op, CP_SCOPE_TUNNELS, create_start);
	return 0;
}

/* ---- GET /api/v1/tunnels/{id} ---- */

static uint64_t sum_field(redisReply *h, const char *suffix)
{
	size_t sl = strlen(suffix);
	uint64_t sum = 0;

	if (h == NULL || h->type != REDIS_REPLY_ARRAY)
		return 0;
	for (size_t i = 0; i + 1 < h->elements; i += 2) {
		redisReply *k = h->element[i], *v = h->element[i + 1];

		if (k->len > sl && memcmp(k->str + k->len - sl, suffix, sl) == 0 &&
		    v->type == REDIS_REPLY_STRING)
			sum += strtoull(v->str, NULL, 10);
	}
	return sum;
}

/* Replies: GET sl:sess, HGETALL sl:stat. */
static void on_get(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct pr_session ps;
	json_t *body;

	if (op->step++ == 0) {
		cp_keep_record(op, r, err);
		return;
	}
	if (cp_kept_record(op, &ps, 0) < 0)
		return;
	body = session_json(op->s, &ps, op->now);
	r = err ? NULL : r;
	json_object_set_new(body, "connections", json_integer((json_int_t)sum_field(r, ".conn")));
	json_object_set_new(body, "liveConnections",
			    json_integer((json_int_t)sum_field(r, ".live")));
	json_object_set_new(body, "requests", json_integer((json_int_t)sum_field(r, ".req")));
	json_object_set_new(
		body, "bytesTransferred",
		json_integer((json_int_t)(sum_field(r, ".bin") + sum_field(r, ".bout"))));
	cp_op_reply(op, 200, body);
}

static void get_start(struct cp_op *op)
{
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_get, op, "GET sl:sess:%s", op->id);
	cp_rdb_cmdf(op->s->db, on_get, op, "HGETALL sl:stat:%s", op->id);
}

/* ---- DELETE /api/v1/tunnels/{id} ---- */

static void on_exec_deleted(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	char detail[80];

	if (cp_update_result(op, r, err) < 0)
		return;
	op->s->m.sessions_deleted++;
	snprintf(detail, sizeof(detail), "session %s", op->id);
	if (op->req)
		cp_audit(op->s, op->req, "session_deleted", op->actor.key_id, detail);
	cp_op_reply(op, 200, json_pack("{s:s,s:s}", "sessionId", op->id, "status", "deleted"));
}

/* Replies: GET sl:sess, INCR sl:rev. */
static void on_delete(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct pr_session ps;

	if (op->step++ == 0) {
		cp_keep_record(op, r, err);
		return;
	}
	if (!op->step_failed && (err || r->type != REDIS_REPLY_INTEGER)) {
		cp_op_redis_error(op, r, err);
		return;
	}
	uint64_t read_rev;
	int live;

	if (cp_kept_record(op, &ps, 1) < 0)
		return;
	/* The name (compared with this sid, in the update) and the lt port are
	 * released only while the session still holds them: after expiry
	 * another session may own them. */
	live = op->now < ps.expires;
	if (live && ps.lt_port)
		cp_rdb_cmdf(op->s->db, NULL, NULL, "DEL sl:ltport:%u", (unsigned)ps.lt_port);
	read_rev = ps.rev;
	ps.status = PR_SS_DELETED;
	ps.rev = (uint64_t)r->integer;
	free(op->blob);
	op->blob = NULL;
	if (cp_encode_record(op, &ps) < 0) {
		cp_op_error(op, 500, "internal", "cannot encode the session");
		return;
	}
	cp_update_record(op, &ps, read_rev, 1, live, on_exec_deleted);
}

static void delete_start(struct cp_op *op)
{
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_delete, op, "GET sl:sess:%s", op->id);
	cp_rdb_cmdf(op->s->db, on_delete, op, "INCR sl:rev");
}

/* ---- GET /api/v1/tunnels ---- */

/* ?status=active|expired|deleted|all&limit=N&offset=N */
static int list_query(h2o_req_t *req, struct cp_op *op, long *limit, long *offset, struct cp_err *e)
{
	const char *q, *end;

	*limit = LIST_DEFAULT;
	*offset = 0;
	op->name[0] = '\0';
	if (req->query_at == SIZE_MAX)
		return 0;
	q = req->path.base + req->query_at + 1;
	end = req->path.base + req->path.len;
	/* Bounded by the query's length. */
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q)), *eq;
		size_t n = amp ? (size_t)(amp - q) : (size_t)(end - q);
		char val[32];

		eq = memchr(q, '=', n);
		if (eq && (size_t)(q + n - eq - 1) < sizeof(val)) {
			size_t kl = (size_t)(eq - q), vl = (size_t)(q + n - eq - 1);
			char *stop;

			memcpy(val, eq + 1, vl);
			val[vl] = '\0';
			if (h2o_memis(q, kl, H2O_STRLIT("status"))) {
				if (strcmp(val, "active") && strcmp(val, "expired") &&
				    strcmp(val, "deleted") && strcmp(val, "all"))
					goto bad_status;
				snprintf(op->name, sizeof(op->name), "%s", val);
			} else if (h2o_memis(q, kl, H2O_STRLIT("limit"))) {
				*limit = strtol(val, &stop, 10);
				if (*stop || *limit < 1 || *limit > LIST_MAX)
					goto bad_limit;
			} else if (h2o_memis(q, kl, H2O_STRLIT("offset"))) {
				*offset = strtol(val, &stop, 10);
				if (*stop || *offset < 0 || *offset > 1000000000L)
					goto bad_offset;
			}
		} else if (eq)
			goto bad_value;
		q += n + (amp ? 1 : 0);
	}
	return 0;
bad_status:
	return snprintf(e->message, sizeof(e->message),
			"status must be active, expired, deleted or all"),
	       -1;
bad_limit:
	return snprintf(e->message, sizeof(e->message), "limit must be 1 to %d", LIST_MAX), -1;
bad_offset:
	return snprintf(e->message, sizeof(e->message), "offset must be 0 or more"), -1;
bad_value:
	return snprintf(e->message, sizeof(e->message), "a query value is too long"), -1;
}

static void on_list_records(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *items = json_array();
	const char *want = op->name[0] ? op->name : "all";

	if (err || r->type != REDIS_REPLY_ARRAY) {
		json_decref(items);
		cp_op_redis_error(op, r, err);
		return;
	}
	for (size_t i = 0; i < r->elements; i++) {
		struct pr_session ps;
		json_t *one;

		if (cp_record_of(r->element[i], &ps) < 0 || !cp_can_see(op, &ps))
			continue;
		one = session_json(op->s, &ps, op->now);
		if (strcmp(want, "all") == 0 ||
		    strcmp(json_string_value(json_object_get(one, "status")), want) == 0)
			json_array_append_new(items, one);
		else
			json_decref(one);
	}
	json_object_set_new(op->acc, "tunnels", items);
	cp_op_reply(op, 200, json_incref(op->acc));
}

static void on_list_ids(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	const char **argv;
	size_t *lens;

	if (err || r->type != REDIS_REPLY_ARRAY) {
		cp_op_redis_error(op, r, err);
		return;
	}
	json_object_set_new(op->acc, "next",
			    r->elements == (size_t)op->limit
				    ? json_integer((json_int_t)(op->offset + op->limit))
				    : json_null());
	if (r->elements == 0) {
		json_object_set_new(op->acc, "tunnels", json_array());
		cp_op_reply(op, 200, json_incref(op->acc));
		return;
	}
	argv = calloc(r->elements + 1, sizeof(*argv));
	lens = calloc(r->elements + 1, sizeof(*lens));
	if (argv == NULL || lens == NULL) {
		free(argv);
		free(lens);
		cp_op_error(op, 500, "internal", "out of memory");
		return;
	}
	/* MGET with keys built in one buffer. */
	op->blob = malloc(r->elements * 48);
	argv[0] = "MGET";
	lens[0] = 4;
	for (size_t i = 0; op->blob && i < r->elements; i++) {
		char *k = op->blob + i * 48;
		int n = snprintf(k, 48, "sl:sess:%.*s", (int)r->element[i]->len,
				 r->element[i]->str);

		argv[i + 1] = k;
		lens[i + 1] = (size_t)n;
	}
	if (op->blob)
		cp_rdb_cmdv(op->s->db, on_list_records, op, (int)r->elements + 1, argv, lens);
	else
		cp_op_error(op, 500, "internal", "out of memory");
	free(argv);
	free(lens);
}

static void list_start(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_list_ids, op, "ZREVRANGE sl:sessions %ld %ld", op->offset,
		    op->offset + op->limit - 1);
}

/* ---- the collection ---- */

int cp_tunnels_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	struct cp_op *op;
	struct cp_err e = {0};

	if (id == NULL && cp_is_method(req, "POST"))
		return tunnels_create(s, req);
	if (id && !pr_session_id_valid(id, id_len)) {
		cp_send_error(s, req, 400, "invalid_session_id",
			      "session ids are 8 to 32 letters and digits");
		return 0;
	}
	if (!cp_is_method(req, "GET") && !cp_is_method(req, "HEAD") &&
	    !(id && cp_is_method(req, "DELETE"))) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req)) == NULL)
		return -1;
	if (id) {
		memcpy(op->id, id, id_len);
		op->id[id_len] = '\0';
		cp_auth(op, CP_SCOPE_TUNNELS,
			cp_is_method(req, "DELETE") ? delete_start : get_start);
		return 0;
	}
	if (list_query(req, op, &op->limit, &op->offset, &e) < 0) {
		snprintf(e.code, sizeof(e.code), "invalid_query");
		e.status = 400;
		op->deferred_error = e;
		op->has_deferred_error = 1;
	}
	op->acc = json_pack("{s:I,s:I}", "offset", (json_int_t)op->offset, "limit",
			    (json_int_t)op->limit);
	cp_auth(op, CP_SCOPE_TUNNELS, list_start);
	return 0;
}
