/*
 * cp_tunnels.c: tunnel sessions, the API's main resource, and how a session
 * looks in its answers (its JSON and public URL, which creation and share
 * links use too):
 *
 *   POST   /api/v1/tunnels        create one (cp_tunnel_create.c)
 *   GET    /api/v1/tunnels        list (?status=&limit=&offset=)
 *   GET    /api/v1/tunnels/{id}   one, with the relays' counters summed
 *                                 (sl:stat:<sid>, api/cp_stats.c)
 *   DELETE /api/v1/tunnels/{id}   delete: a tombstone every relay follows
 *
 * Records are read and written through http/cp_record.h.
 */
#include "api/cp_limits.h"
#include "api/cp_tunnels.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_record.h"
#include "http/cp_reply.h"
#include "pr_state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#define LIST_MAX     100
#define LIST_DEFAULT 20
#define KEY_SLOT     48 /* "sl:sess:" and a session id, in the listing's MGET */

/*
 * A get, delete or list. Ownership: the op's (cp_op_new with this size);
 * tunnel_dispose frees the record kept.
 */
struct tunnel_op {
	struct cp_op op;
	struct cp_record rec; /* get, delete: the record read, then the tombstone */
	char status[32];      /* list: the status asked for, "" for all */
	long limit, offset;   /* list: the page */
};

static struct tunnel_op *tunnel_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct tunnel_op, op, op);
}

static void tunnel_dispose(struct cp_op *op)
{
	cp_record_free(&tunnel_of(op)->rec);
}

/* ---- how a session looks ---- */

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

json_t *cp_tunnel_json(const struct cp_server *s, const struct pr_session *ps, uint64_t now)
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
	struct cp_err e;
	struct tunnel_op *t = tunnel_of(ud);
	struct cp_op *op = &t->op;
	struct pr_session ps;
	json_t *body;

	if (op->step++ == 0) {
		cp_record_keep(op, &t->rec, r, err);
		return;
	}
	if (cp_record_kept(op, &t->rec, &ps, 0, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
	body = cp_tunnel_json(op->s, &ps, op->now);
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
	struct cp_err e;
	struct cp_op *op = ud;
	char detail[80];

	if (cp_record_update_result(op, r, err, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
	op->s->m.sessions_deleted++;
	snprintf(detail, sizeof(detail), "session %s", op->id);
	if (op->req)
		cp_audit(op->s, op->req, "session_deleted", op->actor.key_id, detail);
	cp_op_reply(op, 200, json_pack("{s:s,s:s}", "sessionId", op->id, "status", "deleted"));
}

/* Replies: GET sl:sess, INCR sl:rev. */
static void on_delete(void *ud, redisReply *r, const char *err)
{
	struct cp_err e;
	struct tunnel_op *t = tunnel_of(ud);
	struct cp_op *op = &t->op;
	struct pr_session ps;
	uint64_t read_rev;
	int live;

	if (op->step++ == 0) {
		cp_record_keep(op, &t->rec, r, err);
		return;
	}
	if (!op->step_failed && (err || r->type != REDIS_REPLY_INTEGER)) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (cp_record_kept(op, &t->rec, &ps, 1, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
	/* The name (compared with this sid, in the update) and the lt port are
	 * released only while the session still holds them: after expiry
	 * another session may own them. */
	live = op->now < ps.expires;
	if (live && ps.lt_port)
		cp_rdb_cmdf(op->s->db, NULL, NULL, "DEL sl:ltport:%u", (unsigned)ps.lt_port);
	read_rev = ps.rev;
	ps.status = PR_SS_DELETED;
	ps.rev = (uint64_t)r->integer;
	if (cp_record_encode(&t->rec, &ps) < 0) {
		cp_op_error(op, 500, "internal", "cannot encode the session");
		return;
	}
	cp_record_update(op, &t->rec, &ps, read_rev, 1, live, on_exec_deleted);
}

static void delete_start(struct cp_op *op)
{
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_delete, op, "GET sl:sess:%s", op->id);
	cp_rdb_cmdf(op->s->db, on_delete, op, "INCR sl:rev");
}

/* ---- GET /api/v1/tunnels ---- */

/* ?status=active|expired|deleted|all&limit=N&offset=N */
static int list_query(h2o_req_t *req, struct tunnel_op *t, struct cp_err *e)
{
	const char *q, *end;

	t->limit = LIST_DEFAULT;
	t->offset = 0;
	t->status[0] = '\0';
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
				snprintf(t->status, sizeof(t->status), "%s", val);
			} else if (h2o_memis(q, kl, H2O_STRLIT("limit"))) {
				t->limit = strtol(val, &stop, 10);
				if (*stop || t->limit < 1 || t->limit > LIST_MAX)
					goto bad_limit;
			} else if (h2o_memis(q, kl, H2O_STRLIT("offset"))) {
				t->offset = strtol(val, &stop, 10);
				if (*stop || t->offset < 0 || t->offset > 1000000000L)
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
	struct tunnel_op *t = tunnel_of(ud);
	struct cp_op *op = &t->op;
	json_t *items = json_array();
	const char *want = t->status[0] ? t->status : "all";

	if (err || r->type != REDIS_REPLY_ARRAY) {
		json_decref(items);
		cp_op_redis_error(op, r, err);
		return;
	}
	for (size_t i = 0; i < r->elements; i++) {
		struct pr_session ps;
		json_t *one;

		if (cp_record_decode(r->element[i], &ps) < 0 || !cp_can_see(op, &ps))
			continue;
		one = cp_tunnel_json(op->s, &ps, op->now);
		if (strcmp(want, "all") == 0 ||
		    strcmp(json_string_value(json_object_get(one, "status")), want) == 0)
			json_array_append_new(items, one);
		else
			json_decref(one);
	}
	json_object_set_new(op->acc, "tunnels", items);
	cp_op_reply(op, 200, json_incref(op->acc));
}

/* MGET of the records of the ids in r, their keys built in one block (the
 * command is formatted at once: the block goes right after). 0, or -ENOMEM. */
static int mget_records(struct cp_op *op, const redisReply *r)
{
	const char **argv = calloc(r->elements + 1, sizeof(*argv));
	size_t *lens = calloc(r->elements + 1, sizeof(*lens));
	char *keys = malloc(r->elements * KEY_SLOT);
	int rc = argv && lens && keys ? 0 : -ENOMEM;

	for (size_t i = 0; rc == 0 && i < r->elements; i++) {
		char *k = keys + i * KEY_SLOT;

		argv[i + 1] = k;
		lens[i + 1] = (size_t)snprintf(k, KEY_SLOT, "sl:sess:%.*s", (int)r->element[i]->len,
					       r->element[i]->str);
	}
	if (rc == 0) {
		argv[0] = "MGET";
		lens[0] = 4;
		cp_rdb_cmdv(op->s->db, on_list_records, op, (int)r->elements + 1, argv, lens);
	}
	free(keys);
	free(argv);
	free(lens);
	return rc;
}

static void on_list_ids(void *ud, redisReply *r, const char *err)
{
	struct tunnel_op *t = tunnel_of(ud);
	struct cp_op *op = &t->op;

	if (err || r->type != REDIS_REPLY_ARRAY) {
		cp_op_redis_error(op, r, err);
		return;
	}
	json_object_set_new(op->acc, "next",
			    r->elements == (size_t)t->limit
				    ? json_integer((json_int_t)(t->offset + t->limit))
				    : json_null());
	if (r->elements == 0) {
		json_object_set_new(op->acc, "tunnels", json_array());
		cp_op_reply(op, 200, json_incref(op->acc));
		return;
	}
	if (mget_records(op, r) < 0)
		cp_op_error(op, 500, "internal", "out of memory");
}

static void list_start(struct cp_op *op)
{
	struct tunnel_op *t = tunnel_of(op);

	cp_rdb_cmdf(op->s->db, on_list_ids, op, "ZREVRANGE sl:sessions %ld %ld", t->offset,
		    t->offset + t->limit - 1);
}

/* ---- the collection ---- */

int cp_tunnels_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	struct tunnel_op *t;
	struct cp_op *op;
	struct cp_err e = {0};

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
	if ((op = cp_op_new(s, req, sizeof(struct tunnel_op))) == NULL)
		return -ENOMEM;
	op->dispose = tunnel_dispose;
	t = tunnel_of(op);
	if (id) {
		memcpy(t->op.id, id, id_len);
		t->op.id[id_len] = '\0';
		cp_auth(&t->op, CP_SCOPE_TUNNELS,
			cp_is_method(req, "DELETE") ? delete_start : get_start);
		return 0;
	}
	if (list_query(req, t, &e) < 0) {
		snprintf(e.code, sizeof(e.code), "invalid_query");
		e.status = 400;
		t->op.deferred_error = e;
		t->op.has_deferred_error = 1;
	}
	t->op.acc = json_pack("{s:I,s:I}", "offset", (json_int_t)t->offset, "limit",
			      (json_int_t)t->limit);
	cp_auth(&t->op, CP_SCOPE_TUNNELS, list_start);
	return 0;
}
