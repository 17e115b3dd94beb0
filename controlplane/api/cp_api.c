/*
 * cp_api.c: the REST routes on Redis: tunnel sessions and API keys, and
 * the fold of the relays' counters. Layout in Redis (docs/protocol.md):
 *
 *   sl:sess:<sid>     the session's record, msgpack (pr_session)
 *   sl:sessions       zset sid by creation time (listing)
 *   sl:active         zset sid by expiry (capacity)
 *   sl:name:<name>    sid holding a subdomain, expiring with the session
 *   sl:rev            the global revision counter records carry
 *   sl:events         stream of records (field m): every change, for relays
 *   sl:stats          stream of relays' counters (field m: pr_stats)
 *   sl:stat:<sid>     hash "<relay>.<counter>" -> total
 *   sl:key:<sha256>   hash id, scopes, revoked: looked up on every request
 *   sl:keymeta:<id>   hash name, scopes, created, revoked, hash: listing
 *   sl:keys           zset key id by creation time
 *
 * A session's record is written and its event appended in one MULTI, so a
 * relay never sees one without the other.
 */
#include "http/cp_key.h"
#include "api/cp_limits.h"
#include "http/cp_server.h"
#include "pr_msg.h"
#include "pr_state.h"
#include "pr_token.h"
#include "sl_log.h"

#include <errno.h>
#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis.h>

#define RETAIN_S      86400 /* a record outlives its session by this, for 410s */
#define NAME_TRIES    3	    /* random names drawn before giving up */
#define LIST_MAX      100
#define LIST_DEFAULT  20
#define EVENTS_MAXLEN "100000"
#define LT_PORT_TRIES 8
#define LT_MAX_CONN   10 /* sockets a localtunnel client keeps open */

json_t *cp_iso_time(uint64_t t)
{
	char buf[32];
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_string(buf);
}

static int is_method(h2o_req_t *req, const char *m)
{
	return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

static int can_see(const struct cp_op *op, const struct pr_session *ps)
{
	return (op->actor.scopes & CP_SCOPE_ADMIN) || strcmp(ps->key_id, op->actor.key_id) == 0;
}

/* ---- URLs ---- */

/* "http://<name>.<host>/" from the public base "http://host[:port]". */
static void public_url(const struct cp_server *s, const struct pr_session *ps, char *out,
		       size_t cap)
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

	public_url(s, ps, url, sizeof(url));
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

/* ---- writing a record: SET + ZADDs + XADD in one MULTI ---- */

static void on_exec_created(void *ud, redisReply *r, const char *err);

/* A new session: MULTI, SET record, the indexes, XADD, EXEC; the EXEC reply
 * goes to done. Changes to existing records go through cp_update_record. */
static void write_created(struct cp_op *op, const struct pr_session *ps, cp_rdb_cb done)
{
	struct cp_rdb *db = op->s->db;
	uint64_t ttl = ps->expires + RETAIN_S - op->now;

	cp_rdb_cmdf(db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(db, NULL, NULL, "SET sl:sess:%s %b EX %llu", ps->sid, op->blob, op->blob_len,
		    (unsigned long long)ttl);
	cp_rdb_cmdf(db, NULL, NULL, "ZADD sl:sessions %llu %s", (unsigned long long)ps->created,
		    ps->sid);
	cp_rdb_cmdf(db, NULL, NULL, "ZADD sl:active %llu %s", (unsigned long long)ps->expires,
		    ps->sid);
	if (ps->domain[0])
		cp_rdb_cmdf(db, NULL, NULL, "SADD sl:domsess:%s %s", ps->domain, ps->sid);
	cp_rdb_cmdf(db, NULL, NULL, "XADD sl:events MAXLEN ~ " EVENTS_MAXLEN " * m %b", op->blob,
		    op->blob_len);
	cp_rdb_cmdf(db, done, op, "EXEC");
}

/*
 * A change to an existing record, atomic in Redis: written only if the
 * stored record is still the revision the caller read and is not deleted
 * (two requests changing one session cannot undo each other, and nothing
 * brings a deleted session back). A delete also leaves the indexes and
 * frees the name if this session still holds it. Returns 1, or -1 (gone),
 * -2 (deleted), -3 (changed since it was read).
 */
static const char update_lua[] =
	"local cur = redis.call('GET', KEYS[1])\n"
	"if not cur then return -1 end\n"
	"local t = cmsgpack.unpack(cur)\n"
	"if t['st'] == 1 then return -2 end\n"
	"if tostring(t['rev']) ~= ARGV[1] then return -3 end\n"
	"redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])\n"
	"if ARGV[5] == '0' then\n"
	"  redis.call('ZREM', KEYS[3], ARGV[4])\n"
	"  redis.call('SREM', KEYS[5], ARGV[4])\n"
	"  if ARGV[6] == '1' and redis.call('GET', KEYS[4]) == ARGV[4] then\n"
	"    redis.call('DEL', KEYS[4])\n"
	"  end\n"
	"end\n"
	"redis.call('XADD', KEYS[2], 'MAXLEN', '~', '" EVENTS_MAXLEN "', '*', 'm', ARGV[2])\n"
	"return 1\n";

void cp_update_record(struct cp_op *op, const struct pr_session *ps, uint64_t read_rev,
		      int deleting, int free_name, cp_rdb_cb done)
{
	uint64_t ttl = ps->expires > op->now ? ps->expires + RETAIN_S - op->now : RETAIN_S;

	cp_rdb_cmdf(
		op->s->db, done, op,
		"EVAL %s 5 sl:sess:%s sl:events sl:active sl:name:%s sl:domsess:%s %llu %b %llu "
		"%s %d %d",
		update_lua, ps->sid, ps->name, ps->domain[0] ? ps->domain : "-",
		(unsigned long long)read_rev, op->blob, op->blob_len, (unsigned long long)ttl,
		ps->sid, deleting ? 0 : 2, free_name);
}

int cp_exec_ok(const redisReply *r)
{
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return 0;
	for (size_t i = 0; i < r->elements; i++)
		if (r->element[i]->type == REDIS_REPLY_ERROR)
			return 0;
	return 1;
}

/* The reply of cp_update_record: 0 when written, else an answer sent. */
int cp_update_result(struct cp_op *op, redisReply *r, const char *err)
{
	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r, err);
		return -1;
	}
	if (r->integer == -1 || r->integer == -2) {
		cp_op_error(op, 404, "not_found", "no session %s", op->id);
		return -1;
	}
	if (r->integer == -3) {
		cp_op_error(op, 409, "conflict", "session %s changed meanwhile; retry", op->id);
		return -1;
	}
	return 0;
}

int cp_encode_record(struct cp_op *op, const struct pr_session *ps)
{
	free(op->blob);
	op->blob = malloc(PR_STATE_MAX);
	if (op->blob == NULL)
		return -ENOMEM;
	int n = pr_session_encode(ps, op->blob, PR_STATE_MAX);

	if (n < 0)
		return n;
	op->blob_len = (size_t)n;
	return 0;
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
	public_url(op->s, &c->ps, url, sizeof(url));
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
	write_created(op, &c->ps, on_exec_created);
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
		    (unsigned long long)(op->now - RETAIN_S - 86400));
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
int cp_api_localtunnel(struct cp_server *s, h2o_req_t *req, const char *name, size_t len)
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

/* Decode a GET reply into ps: 0, -ENOENT (no record), -EBADMSG. */
static int record_of(redisReply *r, struct pr_session *ps)
{
	if (r->type == REDIS_REPLY_NIL)
		return -ENOENT;
	if (r->type != REDIS_REPLY_STRING)
		return -EBADMSG;
	return pr_session_decode(r->str, r->len, ps) < 0 ? -EBADMSG : 0;
}

/* The record in op->blob_owner (a heap pr_session), or an error sent. */
static int visible_record(struct cp_op *op, redisReply *r, struct pr_session *ps, int expired_ok)
{
	int e = record_of(r, ps);

	if (e == -EBADMSG) {
		cp_op_error(op, 500, "corrupt_record", "session %s has an unreadable record",
			    op->id);
		return -1;
	}
	if (e == -ENOENT || !can_see(op, ps) || ps->status == PR_SS_DELETED) {
		cp_op_error(op, 404, "not_found", "no session %s", op->id);
		return -1;
	}
	if (!expired_ok && (ps->status == PR_SS_EXPIRED || op->now >= ps->expires)) {
		cp_op_error(op, 410, "session_expired", "session %s expired", op->id);
		return -1;
	}
	return 0;
}

/* The first reply of a pipeline, GET sl:sess:<sid>: copied into op->blob
 * (replies are freed after their callback) until the last reply is in. */
static void keep_record(struct cp_op *op, redisReply *r, const char *err)
{
	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
		return;
	}
	op->blob_len = r->type == REDIS_REPLY_STRING ? r->len : 0;
	op->blob_nil = r->type != REDIS_REPLY_STRING;
	op->blob = malloc(op->blob_len + 1);
	if (op->blob == NULL) {
		op->step_failed = 1;
		snprintf(op->why, sizeof(op->why), "out of memory");
		return;
	}
	memcpy(op->blob, r->str ? r->str : "", op->blob_len);
}

/* The record of op->id into *ps from the kept GET reply, or an error sent
 * (404 for none or another key's, 410 for an expired one unless expired_ok). */
static int kept_record(struct cp_op *op, struct pr_session *ps, int expired_ok)
{
	redisReply fake = {.type = REDIS_REPLY_STRING, .str = op->blob, .len = op->blob_len};

	if (op->step_failed) {
		cp_op_step_error(op, "session store");
		return -1;
	}
	if (op->blob_nil) {
		cp_op_error(op, 404, "not_found", "no session %s", op->id);
		return -1;
	}
	return visible_record(op, &fake, ps, expired_ok);
}

/* Replies: GET sl:sess, HGETALL sl:stat. */
static void on_get(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct pr_session ps;
	json_t *body;

	if (op->step++ == 0) {
		keep_record(op, r, err);
		return;
	}
	if (kept_record(op, &ps, 0) < 0)
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
		keep_record(op, r, err);
		return;
	}
	if (!op->step_failed && (err || r->type != REDIS_REPLY_INTEGER)) {
		cp_op_redis_error(op, r, err);
		return;
	}
	uint64_t read_rev;
	int live;

	if (kept_record(op, &ps, 1) < 0)
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

		if (record_of(r->element[i], &ps) < 0 || !can_see(op, &ps))
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

/* ---- share links: /api/v1/tunnels/{id}/shares[/{shareId}] ---- */

#define SHARE_TTL_DEFAULT 3600
#define SHARE_TTL_MAX	  86400

static void on_share_saved(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *body = op->acc;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	op->acc = NULL;
	if (op->req)
		cp_audit(op->s, op->req, "share_created", op->actor.key_id,
			 json_string_value(json_object_get(body, "shareId")));
	cp_op_reply(op, 201, body);
}

/* Reply to GET sl:sess: sign a share link and remember it for the listing. */
static void on_share_create(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	const char *secret = op->s->cfg.session_secret;
	char share[13], token[PR_SIGNED_MAX], url[400], link[700];
	struct pr_session ps;
	uint64_t expires;

	keep_record(op, r, err);
	if (kept_record(op, &ps, 0) < 0)
		return;
	if (ps.proto != PR_PROTO_HTTP) {
		cp_op_error(op, 400, "invalid_combination", "share links are for http tunnels");
		return;
	}
	expires = op->now + (uint64_t)op->ttl;
	if (expires > ps.expires)
		expires = ps.expires;
	pr_random_alnum(share, 12);
	if (pr_share_sign((const uint8_t *)secret, strlen(secret), ps.sid, share, expires, token,
			  sizeof(token)) < 0) {
		cp_op_error(op, 500, "internal", "cannot sign the share link");
		return;
	}
	public_url(op->s, &ps, url, sizeof(url));
	snprintf(link, sizeof(link), "%s?sluice_share=%s", url, token);
	op->acc = json_pack("{s:s,s:s,s:s,s:o}", "shareId", share, "url", link, "token", token,
			    "expiresAt", cp_iso_time(expires));
	cp_rdb_cmdf(op->s->db, NULL, NULL, "HSET sl:shares:%s %s %llu", ps.sid, share,
		    (unsigned long long)expires);
	cp_rdb_cmdf(op->s->db, on_share_saved, op, "EXPIRE sl:shares:%s %llu", ps.sid,
		    (unsigned long long)(ps.expires + RETAIN_S - op->now));
}

static void share_create_start(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_share_create, op, "GET sl:sess:%s", op->id);
}

/* Replies: GET sl:sess, HGETALL sl:shares. */
static void on_share_list(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct pr_session ps;
	json_t *items;

	if (op->step++ == 0) {
		keep_record(op, r, err);
		return;
	}
	if (kept_record(op, &ps, 0) < 0)
		return;
	if (err || r->type != REDIS_REPLY_ARRAY) {
		cp_op_redis_error(op, r, err);
		return;
	}
	items = json_array();
	for (size_t i = 0; i + 1 < r->elements; i += 2) {
		char id[40];

		snprintf(id, sizeof(id), "%.*s", (int)r->element[i]->len, r->element[i]->str);
		json_array_append_new(
			items, json_pack("{s:s,s:o,s:b}", "shareId", id, "expiresAt",
					 cp_iso_time(strtoull(r->element[i + 1]->str, NULL, 10)),
					 "revoked", pr_list_has(ps.revoked_shares, id)));
	}
	cp_op_reply(op, 200, json_pack("{s:o}", "shares", items));
}

static void share_list_start(struct cp_op *op)
{
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_share_list, op, "GET sl:sess:%s", op->id);
	cp_rdb_cmdf(op->s->db, on_share_list, op, "HGETALL sl:shares:%s", op->id);
}

static void on_share_revoked(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (cp_update_result(op, r, err) < 0)
		return;
	if (op->req)
		cp_audit(op->s, op->req, "share_revoked", op->actor.key_id, op->name);
	cp_op_reply(op, 200, json_pack("{s:s,s:b}", "shareId", op->name, "revoked", 1));
}

/* Replies: GET sl:sess, HEXISTS sl:shares, INCR sl:rev: the share id joins
 * the record's revoked list, which every relay then holds. */
static void on_share_revoke(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct pr_session ps;
	uint64_t read_rev;
	size_t len;
	int step = (int)op->step++;

	if (step == 0) {
		keep_record(op, r, err);
		return;
	}
	if (step == 1) {
		op->found = !err && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
		if (!op->step_failed && (err || r->type != REDIS_REPLY_INTEGER)) {
			op->step_failed = 1;
			op->why_redis_down = err != NULL;
			snprintf(op->why, sizeof(op->why), "%s", err ? err : "HEXISTS failed");
		}
		return;
	}
	if (kept_record(op, &ps, 0) < 0)
		return;
	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (!op->found) {
		cp_op_error(op, 404, "not_found", "no share %s on session %s", op->name, op->id);
		return;
	}
	if (!pr_list_has(ps.revoked_shares, op->name)) {
		len = strlen(ps.revoked_shares);
		if (len + strlen(op->name) + 2 > sizeof(ps.revoked_shares)) {
			cp_op_error(op, 409, "too_many_revocations",
				    "this session has revoked all the share links it can");
			return;
		}
		snprintf(ps.revoked_shares + len, sizeof(ps.revoked_shares) - len, "%s%s",
			 len ? "," : "", op->name);
	}
	read_rev = ps.rev;
	ps.rev = (uint64_t)r->integer;
	free(op->blob);
	op->blob = NULL;
	if (cp_encode_record(op, &ps) < 0) {
		cp_op_error(op, 500, "internal", "cannot encode the session");
		return;
	}
	cp_update_record(op, &ps, read_rev, 0, 0, on_share_revoked);
}

static void share_revoke_start(struct cp_op *op)
{
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_share_revoke, op, "GET sl:sess:%s", op->id);
	cp_rdb_cmdf(op->s->db, on_share_revoke, op, "HEXISTS sl:shares:%s %s", op->id, op->name);
	cp_rdb_cmdf(op->s->db, on_share_revoke, op, "INCR sl:rev");
}

/* {"ttl": seconds} (optional, 60..86400). */
static int share_body(h2o_req_t *req, long *ttl, struct cp_err *e)
{
	json_t *o, *v;
	const char *k;

	*ttl = SHARE_TTL_DEFAULT;
	if (req->entity.base == NULL || req->entity.len == 0)
		return 0;
	o = json_loadb(req->entity.base, req->entity.len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		snprintf(e->message, sizeof(e->message), "the body must be a JSON object");
		return -1;
	}
	json_object_foreach(o, k, v)
	{
		if (strcmp(k, "ttl") != 0 || !json_is_integer(v) || json_integer_value(v) < 60 ||
		    json_integer_value(v) > SHARE_TTL_MAX) {
			json_decref(o);
			snprintf(e->message, sizeof(e->message),
				 "only ttl, an integer of 60 to %d seconds, is accepted",
				 SHARE_TTL_MAX);
			return -1;
		}
		*ttl = (long)json_integer_value(v);
	}
	json_decref(o);
	return 0;
}

/* id: "SID/shares" or "SID/shares/SHAREID". */
static int shares_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	const char *slash = memchr(id, '/', id_len), *rest;
	size_t sid_len = (size_t)(slash - id), rest_len;
	void (*next)(struct cp_op *) = NULL;
	struct cp_op *op;
	struct cp_err e = {.status = 400};

	rest = slash + 1;
	rest_len = id_len - sid_len - 1;
	if (!pr_session_id_valid(id, sid_len) || rest_len < 6 || memcmp(rest, "shares", 6) != 0 ||
	    (rest_len > 6 && (rest[6] != '/' || !pr_session_id_valid(rest + 7, rest_len - 7)))) {
		cp_send_error(s, req, 404, "not_found", "no such endpoint");
		return 0;
	}
	if (rest_len == 6 && is_method(req, "POST"))
		next = share_create_start;
	else if (rest_len == 6 && (is_method(req, "GET") || is_method(req, "HEAD")))
		next = share_list_start;
	else if (rest_len > 6 && is_method(req, "DELETE"))
		next = share_revoke_start;
	if (next == NULL) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req)) == NULL)
		return -1;
	memcpy(op->id, id, sid_len);
	op->id[sid_len] = '\0';
	if (rest_len > 6)
		snprintf(op->name, sizeof(op->name), "%.*s", (int)(rest_len - 7), rest + 7);
	if (next == share_create_start && share_body(req, &op->ttl, &e) < 0) {
		snprintf(e.code, sizeof(e.code), "invalid_value");
		op->deferred_error = e;
		op->has_deferred_error = 1;
	}
	cp_auth(op, CP_SCOPE_TUNNELS, next);
	return 0;
}

/* ---- the collection ---- */

int cp_api_tunnels(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	struct cp_op *op;
	struct cp_err e = {0};

	if (id == NULL && is_method(req, "POST"))
		return tunnels_create(s, req);
	if (id && id_len > 7 && memcmp(id + id_len - 7, "/limits", 7) == 0 &&
	    pr_session_id_valid(id, id_len - 7))
		return cp_limits_route(s, req, id, id_len - 7, 0);
	if (id && memchr(id, '/', id_len))
		return shares_route(s, req, id, id_len);
	if (id && !pr_session_id_valid(id, id_len)) {
		cp_send_error(s, req, 400, "invalid_session_id",
			      "session ids are 8 to 32 letters and digits");
		return 0;
	}
	if (!is_method(req, "GET") && !is_method(req, "HEAD") &&
	    !(id && is_method(req, "DELETE"))) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req)) == NULL)
		return -1;
	if (id) {
		memcpy(op->id, id, id_len);
		op->id[id_len] = '\0';
		cp_auth(op, CP_SCOPE_TUNNELS, is_method(req, "DELETE") ? delete_start : get_start);
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

/* ---- keys ---- */

static void on_key_created(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *body = op->acc;

	if (err || !cp_exec_ok(r)) {
		cp_op_redis_error(op, NULL, err ? err : "a command of the transaction failed");
		return;
	}
	op->acc = NULL;
	op->s->m.keys_created++;
	if (op->req)
		cp_audit(op->s, op->req, "key_created", op->actor.key_id,
			 json_string_value(json_object_get(body, "id")));
	cp_op_reply(op, 201, body);
}

static void keys_create(struct cp_op *op)
{
	const struct cp_key_req kr = op->kreq; /* parsed before auth: the body may be gone now */
	struct cp_key k;

	if (cp_key_new(&k, kr.name,
		       (kr.admin ? CP_SCOPE_ADMIN : 0) | (kr.tunnels ? CP_SCOPE_TUNNELS : 0)) < 0) {
		cp_op_error(op, 500, "internal", "no randomness for a key");
		return;
	}
	op->acc = json_pack("{s:s,s:s,s:s,s:o,s:s}", "id", k.id, "key", k.key, "name", k.name,
			    "createdAt", cp_iso_time(k.created), "scopes", k.scopes);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(op->s->db, NULL, NULL, CP_KEY_HSET_FMT, CP_KEY_HSET_ARGS(&k));
	cp_rdb_cmdf(op->s->db, NULL, NULL, CP_KEYMETA_HSET_FMT, CP_KEYMETA_HSET_ARGS(&k));
	if (kr.limits.set) {
		/* Only the limits set on the key: the rest follow the server's defaults. */
		json_t *lj = cp_limits_json(kr.limits.v, kr.limits.set);
		char *text = lj ? json_dumps(lj, JSON_COMPACT) : NULL;

		if (text)
			cp_rdb_cmdf(op->s->db, NULL, NULL, "HSET sl:keymeta:%s limits %s", k.id,
				    text);
		json_object_set_new(op->acc, "limits", lj);
		free(text);
	}
	cp_rdb_cmdf(op->s->db, NULL, NULL, "ZADD sl:keys %llu %s", (unsigned long long)k.created,
		    k.id);
	cp_rdb_cmdf(op->s->db, on_key_created, op, "EXEC");
	memset(&k, 0, sizeof(k));
}

static void on_key_list(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
	} else if (op->step > 0 && r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
		   r->element[0]->type == REDIS_REPLY_STRING) {
		json_array_append_new(
			json_object_get(op->acc, "keys"),
			json_pack("{s:s,s:s%,s:s%,s:o,s:b}", "id", op->ids[op->step - 1], "name",
				  r->element[0]->str, r->element[0]->len, "scopes",
				  r->element[1]->str ? r->element[1]->str : "",
				  r->element[1]->str ? r->element[1]->len : (size_t)0, "createdAt",
				  cp_iso_time(r->element[2]->str
						      ? strtoull(r->element[2]->str, NULL, 10)
						      : 0),
				  "revoked", r->element[3]->str && r->element[3]->str[0] == '1'));
	}
	if (op->step == 0 && !op->step_failed) {
		/* The ids: one HMGET each, pipelined. */
		size_t n = r->elements < 1000 ? r->elements : 1000;

		op->ids = calloc(n + 1, sizeof(*op->ids));
		op->nids = op->ids ? n : 0;
		for (size_t i = 0; i < op->nids; i++) {
			op->ids[i] = strndup(r->element[i]->str, r->element[i]->len);
			cp_rdb_cmdf(op->s->db, on_key_list, op,
				    "HMGET sl:keymeta:%s name scopes created revoked",
				    op->ids[i] ? op->ids[i] : "");
		}
	}
	if (op->step++ < op->nids)
		return;
	if (op->step_failed) {
		cp_op_step_error(op, "key store");
		return;
	}
	cp_op_reply(op, 200, json_incref(op->acc));
}

static void keys_list(struct cp_op *op)
{
	op->acc = json_pack("{s:[]}", "keys");
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_key_list, op, "ZRANGE sl:keys 0 999");
}

static void on_key_revoked(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type != REDIS_REPLY_ARRAY) {
		cp_op_redis_error(op, r, err);
		return;
	}
	op->s->m.keys_revoked++;
	if (op->req)
		cp_audit(op->s, op->req, "key_revoked", op->actor.key_id, op->id);
	cp_op_reply(op, 200, json_pack("{s:s,s:b}", "id", op->id, "revoked", 1));
}

static void on_key_hash(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	char hash[65];

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->type != REDIS_REPLY_STRING || r->len != 64) {
		cp_op_error(op, 404, "not_found", "no key %s", op->id);
		return;
	}
	memcpy(hash, r->str, 64);
	hash[64] = '\0';
	cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(op->s->db, NULL, NULL, "HSET sl:key:%s revoked 1", hash);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "HSET sl:keymeta:%s revoked 1", op->id);
	cp_rdb_cmdf(op->s->db, on_key_revoked, op, "EXEC");
}

static void keys_revoke(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_key_hash, op, "HGET sl:keymeta:%s hash", op->id);
}

int cp_api_keys(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	struct cp_op *op;
	void (*next)(struct cp_op *) = NULL;

	if (id && id_len > 7 && memcmp(id + id_len - 7, "/limits", 7) == 0 &&
	    cp_key_id_valid(id, id_len - 7))
		return cp_limits_route(s, req, id, id_len - 7, 1);
	if (id == NULL && is_method(req, "POST"))
		next = keys_create;
	else if (id == NULL && (is_method(req, "GET") || is_method(req, "HEAD")))
		next = keys_list;
	else if (id && is_method(req, "DELETE"))
		next = keys_revoke;
	if (next == NULL) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if (id && !cp_key_id_valid(id, id_len)) {
		cp_send_error(s, req, 400, "invalid_key_id",
			      "key ids are k and 11 letters or digits");
		return 0;
	}
	if ((op = cp_op_new(s, req)) == NULL)
		return -1;
	if (id) {
		memcpy(op->id, id, id_len);
		op->id[id_len] = '\0';
	}
	if (next == keys_create &&
	    cp_key_req_parse(req->entity.base ? req->entity.base : "", req->entity.len, &op->kreq,
			     &op->deferred_error) < 0)
		op->has_deferred_error = 1;
	cp_auth(op, CP_SCOPE_ADMIN, next);
	return 0;
}

/* ---- the relays' counters ---- */

static void stats_read(struct cp_server *s);

static void on_stats_timer(h2o_timeout_entry_t *e)
{
	struct cp_server *s = H2O_STRUCT_FROM_MEMBER(struct cp_server, stats_retry, e);

	stats_read(s);
}

static void stats_retry_later(struct cp_server *s)
{
	if (s->stopping || h2o_timeout_is_linked(&s->stats_retry))
		return;
	s->stats_retry.cb = on_stats_timer;
	h2o_timeout_link(s->loop, &s->stats_retry_timeout, &s->stats_retry);
}

/* HSET sl:stat:<sid> <relay>.conn N ... for one report. */
static void fold_one(struct cp_server *s, const char *m, size_t len)
{
	struct pr_stats st;

	if (pr_stats_decode(m, len, &st) < 0) {
		sl_warn("stats: an unreadable report skipped");
		return;
	}
	cp_rdb_cmdf(
		s->db, NULL, NULL,
		"HSET sl:stat:%s %s.conn %llu %s.live %llu %s.req %llu %s.bin %llu %s.bout %llu",
		st.sid, st.relay, (unsigned long long)st.connections, st.relay,
		(unsigned long long)st.live, st.relay, (unsigned long long)st.requests, st.relay,
		(unsigned long long)st.bytes_in, st.relay, (unsigned long long)st.bytes_out);
	cp_rdb_cmdf(s->db, NULL, NULL, "EXPIRE sl:stat:%s %d", st.sid, 2 * RETAIN_S);
	s->m.stats_folded++;
}

/* XREAD reply: [[stream, [[id, [field, value, ...]], ...]]] or nil. */
static void on_stats(void *ud, redisReply *r, const char *err)
{
	struct cp_server *s = ud;
	redisReply *entries;

	s->stats_reading = 0;
	if (err || r->type == REDIS_REPLY_ERROR) {
		stats_retry_later(s);
		return;
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
		entries = r->element[0]->element[1];
		for (size_t i = 0; i < entries->elements; i++) {
			redisReply *e = entries->element[i], *f = e->element[1];

			snprintf(s->stats_last_id, sizeof(s->stats_last_id), "%.*s",
				 (int)e->element[0]->len, e->element[0]->str);
			for (size_t j = 0; j + 1 < f->elements; j += 2)
				if (f->element[j]->len == 1 && f->element[j]->str[0] == 'm')
					fold_one(s, f->element[j + 1]->str, f->element[j + 1]->len);
		}
		cp_rdb_cmdf(s->db, NULL, NULL, "SET sl:stats:cursor %s", s->stats_last_id);
	}
	stats_read(s);
}

static void on_stats_cursor(void *ud, redisReply *r, const char *err)
{
	struct cp_server *s = ud;

	s->stats_reading = 0;
	if (err || r->type == REDIS_REPLY_ERROR) {
		stats_retry_later(s);
		return;
	}
	snprintf(s->stats_last_id, sizeof(s->stats_last_id), "%.*s",
		 r->type == REDIS_REPLY_STRING ? (int)r->len : 1,
		 r->type == REDIS_REPLY_STRING ? r->str : "0");
	stats_read(s);
}

static void stats_read(struct cp_server *s)
{
	if (s->stopping || s->stats_reading)
		return;
	s->stats_reading = 1;
	if (s->stats_last_id[0] == '\0') {
		cp_rdb_cmdf(s->stats_db, on_stats_cursor, s, "GET sl:stats:cursor");
		return;
	}
	cp_rdb_cmdf(s->stats_db, on_stats, s, "XREAD COUNT 500 BLOCK 1000 STREAMS sl:stats %s",
		    s->stats_last_id);
}

void cp_api_follow_stats(struct cp_server *s)
{
	h2o_timeout_init(s->loop, &s->stats_retry_timeout, 1000);
	stats_read(s);
}
