/*
 * cp_auth.c: who is asking (see cp_auth.h). The bootstrap admin key is
 * compared in constant time; any other key must have our keys' shape before
 * its SHA-256 is looked up in Redis (sl:key:<sha256>), so a guess costs one
 * HMGET at most and the secret itself is never stored.
 */
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "pr_token.h"
#include "sl_bytes.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <hiredis.h>

/* The API key of a request: "Authorization: Bearer K" or "X-API-Key: K". */
static int request_key(h2o_req_t *req, const char **key, size_t *len)
{
	const h2o_iovec_t *v = cp_req_header(req, H2O_TOKEN_AUTHORIZATION);
	ssize_t i;

	if (v && v->len > 7 && h2o_lcstris(v->base, 7, H2O_STRLIT("bearer "))) {
		*key = v->base + 7;
		*len = v->len - 7;
		return 0;
	}
	i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-api-key"), -1);
	if (i < 0)
		return -ENOENT;
	*key = req->headers.entries[i].value.base;
	*len = req->headers.entries[i].value.len;
	return 0;
}

static void auth_refuse(struct cp_op *op, int status, const char *code, const char *msg)
{
	op->s->m.auth_failures++;
	if (op->req)
		cp_audit(op->s, op->req, "auth_failure",
			 op->actor.key_id[0] ? op->actor.key_id : "-", msg);
	cp_op_error(op, status, code, "%s", msg);
}

static void auth_granted(struct cp_op *op)
{
	if ((op->actor.scopes & op->need) != op->need && !(op->actor.scopes & CP_SCOPE_ADMIN)) {
		auth_refuse(op, 403, "forbidden", "this key lacks the scope this route needs");
		return;
	}
	if (op->has_deferred_error) {
		cp_op_fail(op, &op->deferred_error);
		return;
	}
	op->next(op);
}

static unsigned parse_scopes(const char *s, size_t n)
{
	unsigned sc = 0;

	if (memmem(s, n, "admin", 5))
		sc |= CP_SCOPE_ADMIN;
	if (memmem(s, n, "tunnels", 7))
		sc |= CP_SCOPE_TUNNELS;
	return sc;
}

/* HMGET sl:key:<hash> id scopes revoked */
static void on_key_lookup(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->element[0]->type != REDIS_REPLY_STRING) {
		auth_refuse(op, 401, "unauthorized", "unknown API key");
		return;
	}
	snprintf(op->actor.key_id, sizeof(op->actor.key_id), "%.*s", (int)r->element[0]->len,
		 r->element[0]->str);
	if (r->element[2]->type == REDIS_REPLY_STRING && r->element[2]->len == 1 &&
	    r->element[2]->str[0] == '1') {
		auth_refuse(op, 401, "key_revoked", "this API key has been revoked");
		return;
	}
	if (r->element[1]->type == REDIS_REPLY_STRING)
		op->actor.scopes = parse_scopes(r->element[1]->str, r->element[1]->len);
	auth_granted(op);
}

void cp_auth(struct cp_op *op, unsigned need, void (*next)(struct cp_op *op))
{
	const char *key;
	size_t len;
	char hash[65], k[CP_KEY_LEN + 1];
	const char *admin = op->s->cfg.admin_key;

	op->need = need;
	op->next = next;
	if (request_key(op->req, &key, &len) < 0) {
		auth_refuse(op, 401, "unauthorized",
			    "an API key is required: Authorization: Bearer KEY");
		return;
	}
	if (admin && admin[0] && sl_ct_equal(key, len, admin, strlen(admin))) {
		snprintf(op->actor.key_id, sizeof(op->actor.key_id), "admin");
		op->actor.scopes = CP_SCOPE_ADMIN | CP_SCOPE_TUNNELS;
		auth_granted(op);
		return;
	}
	/* Our keys have a fixed shape; anything else never reaches Redis. */
	if (len != CP_KEY_LEN || memcmp(key, "sk_", 3) != 0) {
		auth_refuse(op, 401, "unauthorized", "unknown API key");
		return;
	}
	memcpy(k, key, len);
	k[len] = '\0';
	pr_sha256_hex(k, len, hash);
	memset(k, 0, sizeof(k));
	cp_rdb_cmdf(op->s->db, on_key_lookup, op, "HMGET sl:key:%s id scopes revoked", hash);
}
