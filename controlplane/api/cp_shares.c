/*
 * cp_shares.c: a tunnel's share links: a signed URL that lets whoever holds
 * it past the tunnel's own protection until it expires (at most when the
 * session does), and revocation (the share id joins the record's revoked
 * list, which every relay holds).
 *
 *   POST   /api/v1/tunnels/{id}/shares            {"ttl": seconds}: a link
 *   GET    /api/v1/tunnels/{id}/shares            the links made
 *   DELETE /api/v1/tunnels/{id}/shares/{shareId}  revoke one
 *
 * Redis: sl:shares:<sid>, hash share id -> expiry, kept as long as the
 * session's record.
 */
#include "api/cp_shares.h"
#include "api/cp_tunnels.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_record.h"
#include "http/cp_reply.h"
#include "pr_state.h"
#include "pr_token.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#define SHARE_TTL_DEFAULT 3600
#define SHARE_TTL_MAX	  86400

/*
 * A share link's request. Ownership: the op's (cp_op_new with this size);
 * share_dispose frees the record kept.
 */
struct share_op {
	struct cp_op op;
	struct cp_record rec; /* the session's, read (and rewritten by a revoke) */
	char share[64];	      /* revoke: the share id */
	long ttl;	      /* create: the link's lifetime, seconds */
	int found;	      /* revoke: the share exists */
};

static struct share_op *share_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct share_op, op, op);
}

static void share_dispose(struct cp_op *op)
{
	cp_record_free(&share_of(op)->rec);
}

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
	struct cp_err e;
	struct share_op *sh = share_of(ud);
	struct cp_op *op = &sh->op;
	const char *secret = op->s->cfg.session_secret;
	char share[13], token[PR_SIGNED_MAX], url[400], link[700];
	struct pr_session ps;
	uint64_t expires;

	cp_record_keep(op, &sh->rec, r, err);
	if (cp_record_kept(op, &sh->rec, &ps, 0, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
	if (ps.proto != PR_PROTO_HTTP) {
		cp_op_error(op, 400, "invalid_combination", "share links are for http tunnels");
		return;
	}
	expires = op->now + (uint64_t)sh->ttl;
	if (expires > ps.expires)
		expires = ps.expires;
	pr_random_alnum(share, 12);
	if (pr_share_sign((const uint8_t *)secret, strlen(secret), ps.sid, share, expires, token,
			  sizeof(token)) < 0) {
		cp_op_error(op, 500, "internal", "cannot sign the share link");
		return;
	}
	cp_tunnel_url(op->s, &ps, url, sizeof(url));
	snprintf(link, sizeof(link), "%s?sluice_share=%s", url, token);
	op->acc = json_pack("{s:s,s:s,s:s,s:o}", "shareId", share, "url", link, "token", token,
			    "expiresAt", cp_iso_time(expires));
	cp_rdb_cmdf(op->s->db, NULL, NULL, "HSET sl:shares:%s %s %llu", ps.sid, share,
		    (unsigned long long)expires);
	cp_rdb_cmdf(op->s->db, on_share_saved, op, "EXPIRE sl:shares:%s %llu", ps.sid,
		    (unsigned long long)(ps.expires + CP_RETAIN_S - op->now));
}

static void share_create_start(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_share_create, op, "GET sl:sess:%s", op->id);
}

/* Replies: GET sl:sess, HGETALL sl:shares. */
static void on_share_list(void *ud, redisReply *r, const char *err)
{
	struct cp_err e;
	struct share_op *sh = share_of(ud);
	struct cp_op *op = &sh->op;
	struct pr_session ps;
	json_t *items;

	if (op->step++ == 0) {
		cp_record_keep(op, &sh->rec, r, err);
		return;
	}
	if (cp_record_kept(op, &sh->rec, &ps, 0, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
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
	struct cp_err e;
	struct share_op *sh = share_of(ud);
	struct cp_op *op = &sh->op;

	if (cp_record_update_result(op, r, err, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "share_revoked", op->actor.key_id, sh->share);
	cp_op_reply(op, 200, json_pack("{s:s,s:b}", "shareId", sh->share, "revoked", 1));
}

/* Replies: GET sl:sess, HEXISTS sl:shares, INCR sl:rev: the share id joins
 * the record's revoked list, which every relay then holds. */
static void on_share_revoke(void *ud, redisReply *r, const char *err)
{
	struct cp_err e;
	struct share_op *sh = share_of(ud);
	struct cp_op *op = &sh->op;
	struct pr_session ps;
	uint64_t read_rev;
	size_t len;
	int step = (int)op->step++;

	if (step == 0) {
		cp_record_keep(op, &sh->rec, r, err);
		return;
	}
	if (step == 1) {
		sh->found = !err && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
		if (!op->step_failed && (err || r->type != REDIS_REPLY_INTEGER)) {
			op->step_failed = 1;
			op->why_redis_down = err != NULL;
			snprintf(op->why, sizeof(op->why), "%s", err ? err : "HEXISTS failed");
		}
		return;
	}
	if (cp_record_kept(op, &sh->rec, &ps, 0, &e) < 0) {
		cp_op_fail(op, &e);
		return;
	}
	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (!sh->found) {
		cp_op_error(op, 404, "not_found", "no share %s on session %s", sh->share, op->id);
		return;
	}
	if (!pr_list_has(ps.revoked_shares, sh->share)) {
		len = strlen(ps.revoked_shares);
		if (len + strlen(sh->share) + 2 > sizeof(ps.revoked_shares)) {
			cp_op_error(op, 409, "too_many_revocations",
				    "this session has revoked all the share links it can");
			return;
		}
		snprintf(ps.revoked_shares + len, sizeof(ps.revoked_shares) - len, "%s%s",
			 len ? "," : "", sh->share);
	}
	read_rev = ps.rev;
	ps.rev = (uint64_t)r->integer;
	if (cp_record_encode(&sh->rec, &ps) < 0) {
		cp_op_error(op, 500, "internal", "cannot encode the session");
		return;
	}
	cp_record_update(op, &sh->rec, &ps, read_rev, 0, 0, on_share_revoked);
}

static void share_revoke_start(struct cp_op *op)
{
	const char *share = share_of(op)->share;

	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_share_revoke, op, "GET sl:sess:%s", op->id);
	cp_rdb_cmdf(op->s->db, on_share_revoke, op, "HEXISTS sl:shares:%s %s", op->id, share);
	cp_rdb_cmdf(op->s->db, on_share_revoke, op, "INCR sl:rev");
}

/* {"ttl": seconds} (optional, 60..86400): 0, or -EINVAL with e's message
 * set. */
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
		return -EINVAL;
	}
	json_object_foreach(o, k, v)
	{
		if (strcmp(k, "ttl") != 0 || !json_is_integer(v) || json_integer_value(v) < 60 ||
		    json_integer_value(v) > SHARE_TTL_MAX) {
			json_decref(o);
			snprintf(e->message, sizeof(e->message),
				 "only ttl, an integer of 60 to %d seconds, is accepted",
				 SHARE_TTL_MAX);
			return -EINVAL;
		}
		*ttl = (long)json_integer_value(v);
	}
	json_decref(o);
	return 0;
}

int cp_shares_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	const char *slash = memchr(id, '/', id_len), *rest;
	size_t sid_len = (size_t)(slash - id), rest_len;
	void (*next)(struct cp_op *) = NULL;
	struct share_op *sh;
	struct cp_op *op;
	struct cp_err e = {.status = 400};

	rest = slash + 1;
	rest_len = id_len - sid_len - 1;
	if (!pr_session_id_valid(id, sid_len) || rest_len < 6 || memcmp(rest, "shares", 6) != 0 ||
	    (rest_len > 6 && (rest[6] != '/' || !pr_session_id_valid(rest + 7, rest_len - 7)))) {
		cp_send_error(s, req, 404, "not_found", "no such endpoint");
		return 0;
	}
	if (rest_len == 6 && cp_is_method(req, "POST"))
		next = share_create_start;
	else if (rest_len == 6 && (cp_is_method(req, "GET") || cp_is_method(req, "HEAD")))
		next = share_list_start;
	else if (rest_len > 6 && cp_is_method(req, "DELETE"))
		next = share_revoke_start;
	if (next == NULL) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req, sizeof(struct share_op))) == NULL)
		return -ENOMEM;
	op->dispose = share_dispose;
	sh = share_of(op);
	memcpy(op->id, id, sid_len);
	op->id[sid_len] = '\0';
	if (rest_len > 6)
		snprintf(sh->share, sizeof(sh->share), "%.*s", (int)(rest_len - 7), rest + 7);
	if (next == share_create_start && share_body(req, &sh->ttl, &e) < 0) {
		snprintf(e.code, sizeof(e.code), "invalid_value");
		op->deferred_error = e;
		op->has_deferred_error = 1;
	}
	cp_auth(op, CP_SCOPE_TUNNELS, next);
	return 0;
}
