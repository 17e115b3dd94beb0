/*
 * cp_tunnel_create.c: a new tunnel session, for POST /api/v1/tunnels (a
 * body as http/cp_tunnel_req.h parses it; 201 with the agent's token and
 * relay) and for the localtunnel client's GET /?new and GET /<name> (with
 * --localtunnel: no key, since that client cannot send one).
 *
 * The steps, each on Redis: the key's limits (api/cp_limits.h), the custom
 * domain's owner when one is named, then one pipeline that claims the name
 * (claim_lua: sl:name:<name>, expiring with the session), takes a revision
 * and counts the active sessions; for a localtunnel client a relay port
 * (sl:ltport:<port>, SET NX); last the record with its event
 * (http/cp_record.h). Whatever was claimed is given back when a later step
 * fails.
 *
 * A name belongs to the key that holds it, not to one agent process: a
 * session asking for a name its own key's live session holds takes it over
 * (a restarted agent gets its URL back at once). The old record becomes a
 * tombstone naming its heir and the name moves to the new session in one
 * script (cp_record_hand_over); relays then tell the old agent it was
 * replaced. Another key gets 409, and so does anyone but its key for a
 * reserved name (api/cp_names.c).
 */
#include "api/cp_limits.h"
#include "api/cp_tunnels.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_record.h"
#include "pr_state.h"
#include "pr_token.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <hiredis.h>

#define NAME_TRIES    3 /* random names drawn before giving up */
#define LT_PORT_TRIES 8
#define LT_MAX_CONN   10 /* sockets a localtunnel client keeps open */

/*
 * A session being created. Ownership: the op's (cp_op_new with this size);
 * create_dispose frees the encoded record when the op goes.
 */
struct create_op {
	struct cp_op op;
	struct cp_tunnel_req treq;  /* the body, parsed before auth */
	struct pr_session ps;	    /* the session being made */
	struct cp_limits_check lim; /* its limits, checked against its key's */
	struct cp_record rec;	    /* ps encoded */
	int lt;			    /* a localtunnel client's request */
	int tries;		    /* random names drawn */
	int name_ok;		    /* the name is ours (claimed or handed over) */
	int reserved;		    /* the name is reserved for another key */
	struct cp_record held;	    /* the record of our key's session holding the name */
	struct pr_session old;	    /* that session, once taken over */
	long long active;	    /* sessions active, against --max-sessions */
};

static struct create_op *create_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct create_op, op, op);
}

static void create_dispose(struct cp_op *op)
{
	cp_record_free(&create_of(op)->rec);
	cp_record_free(&create_of(op)->held);
}

static struct create_op *create_op_new(struct cp_server *s, h2o_req_t *req)
{
	struct cp_op *op = cp_op_new(s, req, sizeof(struct create_op));

	if (op == NULL)
		return NULL;
	op->dispose = create_dispose;
	return create_of(op);
}

static void create_claim(struct create_op *c);

/*
 * The name for session ARGV[1] of key ARGV[2] (KEYS[1] sl:name:<name>,
 * KEYS[2] sl:resv:<name>; ARGV[3] the name's TTL, ARGV[4] now): {-2} reserved
 * for another key; {1} claimed (free, or held by a session that is over);
 * {0} held by another key's live session; {2, sid, record} held by a live
 * session of this key, to take over. Records are read as update_lua reads
 * them (http/cp_record.c): absent fields are 0.
 */
static const char claim_lua[] =
	"local resv = redis.call('GET', KEYS[2])\n"
	"if resv and resv ~= ARGV[2] then return {-2} end\n"
	"local cur = redis.call('GET', KEYS[1])\n"
	"if cur then\n"
	"  local rec = redis.call('GET', 'sl:sess:' .. cur)\n"
	"  if rec then\n"
	"    local t = cmsgpack.unpack(rec)\n"
	"    if (t['st'] or 0) == 0 and tonumber(t['ex'] or 0) > tonumber(ARGV[4]) then\n"
	"      if t['key'] == ARGV[2] then return {2, cur, rec} end\n"
	"      return {0}\n"
	"    end\n"
	"  end\n"
	"end\n"
	"redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])\n"
	"return {1}\n";

static void release_name(struct create_op *c)
{
	cp_rdb_cmdf(c->op.s->db, NULL, NULL, "DEL sl:name:%s", c->ps.name);
}

static void fill_auth(struct create_op *c)
{
	const struct cp_tunnel_req *q = &c->treq;
	const char *secret = c->op.s->cfg.session_secret;
	struct pr_session *ps = &c->ps;

	ps->auth = (uint8_t)(q->auth == CP_AUTH_BASIC	 ? PR_AUTH_BASIC
			     : q->auth == CP_AUTH_BEARER ? PR_AUTH_BEARER
							 : PR_AUTH_NONE);
	if (ps->auth == PR_AUTH_NONE)
		return;
	snprintf(ps->auth_user, sizeof(ps->auth_user), "%s", q->username);
	pr_url_auth_mac((const uint8_t *)secret, strlen(secret), ps->sid, q->username, q->secret,
			ps->auth_mac);
}

/* What the localtunnel client (npm "localtunnel") expects: its id (the
 * name), the port for its sockets, how many to open, the URL; and ip, the
 * relay's host, since the sockets go there and not to the control plane. */
static void lt_reply(struct create_op *c)
{
	struct cp_op *op = &c->op;
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

static void created_reply(struct create_op *c)
{
	struct cp_op *op = &c->op;
	const char *secret = op->s->cfg.session_secret;
	char token[PR_SIGNED_MAX];
	json_t *body;

	if (c->lt) {
		lt_reply(c);
		return;
	}
	if (pr_token_sign((const uint8_t *)secret, strlen(secret), c->ps.sid, c->ps.epoch,
			  c->ps.expires, token, sizeof(token)) < 0) {
		cp_op_error(op, 500, "internal", "cannot sign the agent token");
		return;
	}
	op->s->m.sessions_created++;
	body = cp_tunnel_json(op->s, &c->ps, op->now);
	json_object_set_new(body, "agentToken", json_string(token));
	json_object_set_new(body, "relay", json_string(op->s->cfg.relay));
	if (c->old.sid[0])
		json_object_set_new(body, "replacedSession", json_string(c->old.sid));
	if (op->req) {
		char detail[120];

		snprintf(detail, sizeof(detail), "session %s name %s", c->ps.sid, c->ps.name);
		cp_audit(op->s, op->req, "session_created", op->actor.key_id, detail);
	}
	cp_op_reply(op, 201, body);
}

static void on_exec_created(void *ud, redisReply *r, const char *err)
{
	struct create_op *c = create_of(ud);

	if (err || !cp_exec_ok(r)) {
		/* Nothing was written: the name and port claimed go back. */
		release_name(c);
		if (c->ps.lt_port)
			cp_rdb_cmdf(c->op.s->db, NULL, NULL, "DEL sl:ltport:%u",
				    (unsigned)c->ps.lt_port);
		cp_op_redis_error(&c->op, r && r->type == REDIS_REPLY_ERROR ? r : NULL,
				  err ? err : "a command of the transaction failed");
		return;
	}
	created_reply(c);
}

static void finish_create(struct create_op *c)
{
	if (cp_record_encode(&c->rec, &c->ps) < 0) {
		release_name(c);
		cp_op_error(&c->op, 500, "internal", "cannot encode the session");
		return;
	}
	cp_record_create(&c->op, &c->rec, &c->ps, on_exec_created);
}

static void claim_lt_port(struct create_op *c);

/* SET sl:ltport:<port> NX: the port is this session's, or try another. */
static void on_lt_port(void *ud, redisReply *r, const char *err)
{
	struct create_op *c = create_of(ud);

	if (err || r->type == REDIS_REPLY_ERROR) {
		release_name(c);
		cp_op_redis_error(&c->op, r, err);
		return;
	}
	if (r->type == REDIS_REPLY_STATUS) {
		finish_create(c);
		return;
	}
	if (++c->op.step < LT_PORT_TRIES) {
		claim_lt_port(c);
		return;
	}
	release_name(c);
	cp_op_error(&c->op, 503, "no_port", "no localtunnel port free; retry");
}

/* A random port of --lt-ports for the client's sockets, held in Redis for
 * the session's life so that no two sessions share one. */
static void claim_lt_port(struct create_op *c)
{
	struct cp_op *op = &c->op;
	uint32_t span = (uint32_t)(op->s->cfg.lt_hi - op->s->cfg.lt_lo) + 1, rnd;

	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)op->now;
	c->ps.lt_port = (uint16_t)(op->s->cfg.lt_lo + rnd % span);
	cp_rdb_cmdf(op->s->db, on_lt_port, op, "SET sl:ltport:%u %s NX EX %llu",
		    (unsigned)c->ps.lt_port, c->ps.sid,
		    (unsigned long long)(c->ps.expires - op->now + 60));
}

static void claimed(struct create_op *c);

/* The hand-over's reply: the name is ours, or it moved meanwhile (another
 * claim, the old session changed or ended): claim again, a few times. */
static void on_handed_over(void *ud, redisReply *r, const char *err)
{
	struct create_op *c = create_of(ud);
	struct cp_err e;
	int rc = cp_record_update_result(&c->op, r, err, &e);

	if (rc == -EAGAIN || rc == -ENOENT) {
		c->old.sid[0] = '\0';
		if (++c->tries < NAME_TRIES) {
			create_claim(c);
			return;
		}
		cp_op_error(&c->op, 409, "conflict",
			    "subdomain \"%s\" changed hands meanwhile; retry", c->ps.name);
		return;
	}
	if (rc < 0) {
		c->old.sid[0] = '\0';
		cp_op_fail(&c->op, &e);
		return;
	}
	c->name_ok = 1;
	c->active--; /* the old session left the active set */
	if (c->op.req) {
		char detail[200];

		snprintf(detail, sizeof(detail), "session %s replaced by %s name %s", c->old.sid,
			 c->ps.sid, c->ps.name);
		cp_audit(c->op.s, c->op.req, "session_replaced", c->op.actor.key_id, detail);
	}
	c->op.s->m.sessions_replaced++;
	claimed(c);
}

/* Our key's live session holds the name: unless the service is full (the
 * old session would be gone for nothing), its record becomes a tombstone
 * naming this session, and the name comes here. */
static void take_over(struct create_op *c)
{
	struct cp_op *op = &c->op;
	struct pr_session *old = &c->old;
	uint64_t read_rev;

	if (pr_session_decode(c->held.buf.p, c->held.buf.len, old) < 0) {
		cp_op_error(op, 500, "corrupt_record", "the session holding \"%s\" is unreadable",
			    c->ps.name);
		return;
	}
	c->held.buf.len = 0;
	if (c->active - 1 >= op->s->cfg.max_sessions) {
		old->sid[0] = '\0';
		cp_op_error(op, 503, "capacity", "the service is at its session capacity (%ld)",
			    op->s->cfg.max_sessions);
		return;
	}
	read_rev = old->rev;
	old->status = PR_SS_DELETED;
	old->rev = c->ps.rev; /* this claim's revision: newer than any the old one had */
	snprintf(old->replaced_by, sizeof(old->replaced_by), "%s", c->ps.sid);
	if (cp_record_encode(&c->rec, old) < 0) {
		old->sid[0] = '\0';
		cp_op_error(op, 500, "internal", "cannot encode the replaced session");
		return;
	}
	cp_record_hand_over(op, &c->rec, old, read_rev, c->ps.sid, c->ps.expires - op->now + 60,
			    on_handed_over);
}

/* The claim's pipeline has answered: on to the next step, or an answer. */
static void claimed(struct create_op *c)
{
	struct cp_op *op = &c->op;

	if (op->step_failed) {
		if (c->name_ok)
			release_name(c);
		cp_op_error(op, op->why_redis_down ? 503 : 500,
			    op->why_redis_down ? "redis_unavailable" : "redis_error",
			    "session store %s: %s", op->why_redis_down ? "unavailable" : "error",
			    op->why);
		return;
	}
	if (c->reserved) {
		cp_op_error(op, 409, "subdomain_reserved",
			    "subdomain \"%s\" is reserved for another key", c->treq.subdomain);
		return;
	}
	if (!c->name_ok && c->held.buf.len && !c->lt) {
		take_over(c);
		return;
	}
	if (!c->name_ok && c->treq.subdomain[0]) {
		cp_op_error(op, 409, "subdomain_taken", "subdomain \"%s\" is taken",
			    c->treq.subdomain);
		return;
	}
	if (!c->name_ok) {
		if (++c->tries < NAME_TRIES)
			create_claim(c);
		else
			cp_op_error(op, 503, "no_name", "no free random name; retry");
		return;
	}
	if (c->active >= op->s->cfg.max_sessions) {
		release_name(c);
		cp_op_error(op, 503, "capacity", "the service is at its session capacity (%ld)",
			    op->s->cfg.max_sessions);
		return;
	}
	if (c->lt) {
		op->step = 0;
		claim_lt_port(c);
		return;
	}
	finish_create(c);
}

/* claim_lua's answer (see there). */
static void claim_result(struct create_op *c, redisReply *r)
{
	long long v = r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
				      r->element[0]->type == REDIS_REPLY_INTEGER
			      ? r->element[0]->integer
			      : 0;

	c->name_ok = v == 1;
	c->reserved = v == -2;
	c->held.buf.len = 0;
	if (v == 2 && r->elements == 3 && r->element[2]->type == REDIS_REPLY_STRING &&
	    sl_buf_append(&c->held.buf, r->element[2]->str, r->element[2]->len) < 0)
		cp_op_step_failed(&c->op, NULL, "out of memory");
}

/* Replies of claim_lua, INCR, ZREMRANGEBYSCORE, ZCARD, in that order. */
static void on_claim(void *ud, redisReply *r, const char *err)
{
	struct create_op *c = create_of(ud);
	int step = (int)c->op.step++;

	if (!c->op.step_failed && (err || r->type == REDIS_REPLY_ERROR))
		cp_op_step_failed(&c->op, r, err);
	else if (!c->op.step_failed && step == 0)
		claim_result(c, r);
	else if (!c->op.step_failed && step == 1)
		c->ps.rev = (uint64_t)r->integer;
	else if (!c->op.step_failed && step == 3)
		c->active = r->integer;
	if (step == 3)
		claimed(c);
}

/* Pipeline: claim the name, take a revision, count active sessions. */
static void create_claim(struct create_op *c)
{
	struct cp_op *op = &c->op;
	struct cp_rdb *db = op->s->db;

	if (c->treq.subdomain[0])
		snprintf(c->ps.name, sizeof(c->ps.name), "%s", c->treq.subdomain);
	else
		pr_random_alnum(c->ps.name, 10);
	op->step = 0;
	cp_rdb_cmdf(db, on_claim, op, "EVAL %s 2 sl:name:%s sl:resv:%s %s %s %llu %llu", claim_lua,
		    c->ps.name, c->ps.name, c->ps.sid, op->actor.key_id,
		    (unsigned long long)(c->ps.expires - op->now + 60),
		    (unsigned long long)op->now);
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
	struct create_op *c = create_of(ud);
	struct cp_op *op = &c->op;

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
			    c->treq.custom_domain);
		return;
	}
	snprintf(c->ps.domain, sizeof(c->ps.domain), "%s", c->treq.custom_domain);
	c->ps.domain_verified = r->element[1]->type == REDIS_REPLY_STRING &&
				strcmp(r->element[1]->str, "verified") == 0;
	create_claim(c);
}

/* Limits are set and the key may create one more session. */
static void create_checked(struct cp_op *op)
{
	struct create_op *c = create_of(op);

	if (c->treq.custom_domain[0]) {
		/* The domain must be this key's: look it up before the claim. */
		cp_rdb_cmdf(op->s->db, on_custom_domain, op, "HMGET sl:domain:%s key status",
			    c->treq.custom_domain);
		return;
	}
	create_claim(c);
}

static void create_start(struct cp_op *op)
{
	struct create_op *c = create_of(op);
	struct pr_session *ps = &c->ps;

	pr_random_alnum(ps->sid, 16);
	ps->epoch = 1;
	ps->status = PR_SS_ACTIVE;
	ps->proto = c->treq.proto == CP_TPROTO_TCP ? PR_PROTO_TCP : PR_PROTO_HTTP;
	ps->port = c->treq.port;
	ps->created = op->now;
	ps->expires = op->now + c->treq.duration;
	snprintf(ps->key_id, sizeof(ps->key_id), "%s", op->actor.key_id);
	fill_auth(c);
	snprintf(ps->allow_ips, sizeof(ps->allow_ips), "%s", c->treq.allow_ips);
	snprintf(ps->deny_ips, sizeof(ps->deny_ips), "%s", c->treq.deny_ips);
	memset(c->treq.secret, 0, sizeof(c->treq.secret));
	cp_limits_begin(&c->lim, op, ps, &c->treq.limits, c->lt, create_checked);
}

int cp_tunnels_localtunnel(struct cp_server *s, h2o_req_t *req, const char *name, size_t len)
{
	struct create_op *c;
	struct cp_err e;

	if ((c = create_op_new(s, req)) == NULL)
		return -ENOMEM;
	c->lt = 1;
	c->treq.port = 0;
	c->treq.duration = s->policy.duration_default;
	snprintf(c->op.actor.key_id, sizeof(c->op.actor.key_id), "localtunnel");
	if (len) {
		snprintf(c->treq.subdomain, sizeof(c->treq.subdomain), "%.*s", (int)len, name);
		if (len > CP_SUBDOMAIN_MAX ||
		    cp_subdomain_check(c->treq.subdomain, &s->policy, &e) < 0) {
			cp_op_error(&c->op, 400, "invalid_subdomain", "%s",
				    len > CP_SUBDOMAIN_MAX ? "subdomain too long" : e.message);
			return 0;
		}
	}
	create_start(&c->op);
	return 0;
}

int cp_tunnels_create(struct cp_server *s, h2o_req_t *req)
{
	struct create_op *c;
	struct cp_err e;

	if ((c = create_op_new(s, req)) == NULL)
		return -ENOMEM;
	if (cp_tunnel_req_parse(req->entity.base ? req->entity.base : "", req->entity.len,
				&s->policy, &c->treq, &e) < 0) {
		c->op.deferred_error = e;
		c->op.has_deferred_error = 1;
	}
	cp_auth(&c->op, CP_SCOPE_TUNNELS, create_start);
	return 0;
}
