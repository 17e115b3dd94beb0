/*
 * cp_keys.c: the API keys as a resource (admin scope only). A key is made
 * and stored as http/cp_key.h says; its secret is in the 201 alone.
 *
 *   POST   /api/v1/keys        {"name", "scopes", "limits"}: a new key
 *   GET    /api/v1/keys        the keys (never a secret)
 *   DELETE /api/v1/keys/{id}   revoke one: its hash is marked, so the next
 *                              request with it is refused
 *
 * Redis: sl:key:<sha256> (looked up on every request), sl:keymeta:<id>
 * (name, scopes, created, revoked, hash, limits: the listing), sl:keys
 * (zset of ids by creation).
 */
#include "api/cp_keys.h"
#include "api/cp_limits.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_reply.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

/*
 * A keys request. Ownership: the op's (cp_op_new with this size);
 * key_dispose frees the ids listed.
 */
struct key_op {
	struct cp_op op;
	struct cp_key_req kreq; /* create: the body, parsed before auth */
	struct cp_strings ids;	/* list: the key ids, looked up one by one */
};

static struct key_op *key_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct key_op, op, op);
}

static void key_dispose(struct cp_op *op)
{
	cp_strings_free(&key_of(op)->ids);
}

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
	const struct cp_key_req kr =
		key_of(op)->kreq; /* parsed before auth: the body may be gone now */
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
	struct cp_strings *ids = &key_of(op)->ids;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
	} else if (op->step > 0 && r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
		   r->element[0]->type == REDIS_REPLY_STRING) {
		json_array_append_new(
			json_object_get(op->acc, "keys"),
			json_pack("{s:s,s:s%,s:s%,s:o,s:b}", "id", ids->v[op->step - 1], "name",
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

		ids->v = calloc(n + 1, sizeof(*ids->v));
		ids->n = ids->v ? n : 0;
		for (size_t i = 0; i < ids->n; i++) {
			ids->v[i] = strndup(r->element[i]->str, r->element[i]->len);
			cp_rdb_cmdf(op->s->db, on_key_list, op,
				    "HMGET sl:keymeta:%s name scopes created revoked",
				    ids->v[i] ? ids->v[i] : "");
		}
	}
	if (op->step++ < ids->n)
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

int cp_keys_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	struct cp_op *op;
	void (*next)(struct cp_op *) = NULL;

	if (id == NULL && cp_is_method(req, "POST"))
		next = keys_create;
	else if (id == NULL && (cp_is_method(req, "GET") || cp_is_method(req, "HEAD")))
		next = keys_list;
	else if (id && cp_is_method(req, "DELETE"))
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
	if ((op = cp_op_new(s, req, sizeof(struct key_op))) == NULL)
		return -ENOMEM;
	op->dispose = key_dispose;
	if (id) {
		memcpy(op->id, id, id_len);
		op->id[id_len] = '\0';
	}
	if (next == keys_create &&
	    cp_key_req_parse(req->entity.base ? req->entity.base : "", req->entity.len,
			     &key_of(op)->kreq, &op->deferred_error) < 0)
		op->has_deferred_error = 1;
	cp_auth(op, CP_SCOPE_ADMIN, next);
	return 0;
}
