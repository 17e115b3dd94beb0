/*
 * cp_names.c: reserved names (ngrok's reserved domains). A reserved name is
 * its key's even while no session holds it: a session of another key asking
 * for it gets 409 (cp_tunnel_create.c's claim reads sl:resv:<name>).
 *
 *   POST   /api/v1/names          {"name": "demo"[, "keyId": "k..."]}: reserve
 *                                 (keyId: admin only, for another key)
 *   GET    /api/v1/names          the caller's (admin: every key's)
 *   GET    /api/v1/names/{name}   one, if the caller's (admin: any)
 *   DELETE /api/v1/names/{name}   release it; a session holding the name
 *                                 keeps it until it ends
 *
 * Redis: sl:resv:<name> (the key id: what the claim reads), sl:resvkey:<key>
 * (zset of its names by reservation time: its count against
 * --max-reserved-names), sl:resvall (hash name -> "<key> <unix s>": the
 * admin's listing). Reserve and release are each one script, so the three
 * never disagree.
 */
#include "api/cp_names.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_key.h"
#include "http/cp_reply.h"
#include "http/cp_tunnel_req.h"
#include "pr_msg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

/*
 * KEYS sl:resv:<name>, sl:resvkey:<key>, sl:name:<name>, sl:resvall; ARGV
 * key, max, name, now. 0 already this key's, 1 reserved, -1 another key's
 * reservation, -2 held by a live session of another key, -3 the key is at
 * its limit. Records are read as update_lua reads them (http/cp_record.c).
 */
static const char reserve_lua[] =
	"local cur = redis.call('GET', KEYS[1])\n"
	"if cur == ARGV[1] then return 0 end\n"
	"if cur then return -1 end\n"
	"local holder = redis.call('GET', KEYS[3])\n"
	"if holder then\n"
	"  local rec = redis.call('GET', 'sl:sess:' .. holder)\n"
	"  if rec then\n"
	"    local t = cmsgpack.unpack(rec)\n"
	"    if (t['st'] or 0) == 0 and tonumber(t['ex'] or 0) > tonumber(ARGV[4]) and\n"
	"       t['key'] ~= ARGV[1] then return -2 end\n"
	"  end\n"
	"end\n"
	"if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return -3 end\n"
	"redis.call('SET', KEYS[1], ARGV[1])\n"
	"redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])\n"
	"redis.call('HSET', KEYS[4], ARGV[3], ARGV[1] .. ' ' .. ARGV[4])\n"
	"return 1\n";

/* KEYS sl:resv:<name>, sl:resvall; ARGV name, key ("-": any, for admin).
 * 1 released, 0 none of the caller's. */
static const char release_lua[] = "local cur = redis.call('GET', KEYS[1])\n"
				  "if not cur or (ARGV[2] ~= '-' and cur ~= ARGV[2]) then\n"
				  "  return 0\n"
				  "end\n"
				  "redis.call('DEL', KEYS[1])\n"
				  "redis.call('ZREM', 'sl:resvkey:' .. cur, ARGV[1])\n"
				  "redis.call('HDEL', KEYS[2], ARGV[1])\n"
				  "return 1\n";

/* A names request. Ownership: the op's (cp_op_new with this size); nothing
 * of its own to free. */
struct name_op {
	struct cp_op op;
	char name[64];	 /* POST: the body's name */
	char key_id[33]; /* POST: for whom ("" the caller) */
};

static struct name_op *name_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct name_op, op, op);
}

/* The entry "<key> <unix s>" of sl:resvall as JSON. */
static json_t *name_json(const char *name, const char *key, uint64_t at)
{
	return json_pack("{s:s,s:s,s:o}", "name", name, "keyId", key, "reservedAt",
			 cp_iso_time(at));
}

static int is_admin(const struct cp_op *op)
{
	return (op->actor.scopes & CP_SCOPE_ADMIN) != 0;
}

static const char *owner_of(struct cp_op *op)
{
	const char *k = name_of(op)->key_id;

	return k[0] ? k : op->actor.key_id;
}

static void on_reserved(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	const char *name = name_of(op)->name, *key = owner_of(op);

	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->integer == -1) {
		cp_op_error(op, 409, "name_reserved", "name \"%s\" is reserved for another key",
			    name);
		return;
	}
	if (r->integer == -2) {
		cp_op_error(op, 409, "subdomain_taken",
			    "name \"%s\" is held by another key's session", name);
		return;
	}
	if (r->integer == -3) {
		cp_op_error(op, 403, "reservation_limit", "this key may reserve at most %ld names",
			    op->s->cfg.max_reserved_names);
		return;
	}
	if (r->integer == 1 && op->req)
		cp_audit(op->s, op->req, "name_reserved", op->actor.key_id, name);
	cp_op_reply(op, r->integer == 1 ? 201 : 200, name_json(name, key, op->now));
}

static void names_reserve(struct cp_op *op)
{
	struct name_op *n = name_of(op);
	const char *key;

	if (n->key_id[0] && !is_admin(op) && strcmp(n->key_id, op->actor.key_id) != 0) {
		cp_op_error(op, 403, "forbidden",
			    "only an admin key reserves names for other keys");
		return;
	}
	key = owner_of(op);
	cp_rdb_cmdf(op->s->db, on_reserved, op,
		    "EVAL %s 4 sl:resv:%s sl:resvkey:%s sl:name:%s sl:resvall %s %ld %s %llu",
		    reserve_lua, n->name, key, n->name, key, op->s->cfg.max_reserved_names, n->name,
		    (unsigned long long)op->now);
}

/* One "<key> <unix s>" value of sl:resvall into the listing, if the caller may see it. */
static void list_add(struct cp_op *op, const redisReply *name, const redisReply *val)
{
	char key[40];
	unsigned long long at = 0;

	if (name->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING ||
	    sscanf(val->str, "%39s %llu", key, &at) < 1)
		return;
	if (!is_admin(op) && strcmp(key, op->actor.key_id) != 0)
		return;
	if (op->id[0] && strcmp(op->id, name->str) != 0)
		return;
	json_array_append_new(json_object_get(op->acc, "names"), name_json(name->str, key, at));
}

static void on_listed(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *names;

	if (err || r->type != REDIS_REPLY_ARRAY) {
		cp_op_redis_error(op, r, err);
		return;
	}
	op->acc = json_pack("{s:[]}", "names");
	/* Bounded by the reply: HGETALL's name, value pairs. */
	for (size_t i = 0; op->acc && i + 1 < r->elements; i += 2)
		list_add(op, r->element[i], r->element[i + 1]);
	if (op->acc == NULL) {
		cp_op_error(op, 500, "internal", "out of memory");
		return;
	}
	names = json_object_get(op->acc, "names");
	if (!op->id[0]) {
		cp_op_reply(op, 200, json_incref(op->acc));
		return;
	}
	if (json_array_size(names) == 0) {
		cp_op_error(op, 404, "not_found", "no reserved name %s", op->id);
		return;
	}
	cp_op_reply(op, 200, json_incref(json_array_get(names, 0)));
}

/* The listing reads the admin's hash and keeps the caller's: a key has a
 * handful of names (--max-reserved-names), the whole service a few
 * thousand at most. */
static void names_list(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_listed, op, "HGETALL sl:resvall");
}

static void on_released(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->integer != 1) {
		cp_op_error(op, 404, "not_found", "no reserved name %s", op->id);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "name_released", op->actor.key_id, op->id);
	cp_op_reply(op, 200, json_pack("{s:s,s:b}", "name", op->id, "released", 1));
}

static void names_release(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_released, op, "EVAL %s 2 sl:resv:%s sl:resvall %s %s",
		    release_lua, op->id, op->id, is_admin(op) ? "-" : op->actor.key_id);
}

/* {"name": "demo", "keyId": "k..."}: 0, or -EINVAL with *e filled. */
static int parse_body(const h2o_req_t *req, const struct cp_policy *pol, struct name_op *n,
		      struct cp_err *e)
{
	json_t *j = json_loadb(req->entity.base ? req->entity.base : "", req->entity.len, 0, NULL);
	const char *name = json_string_value(json_object_get(j, "name"));
	json_t *kj = json_object_get(j, "keyId");
	const char *key = json_string_value(kj);
	int rc = 0;

	if (!json_is_object(j))
		rc = cp_err_set(e, -EINVAL, 400, "invalid_json", "the body must be a JSON object");
	else if (name == NULL || strlen(name) >= sizeof(n->name))
		rc = cp_err_set(e, -EINVAL, 400, "invalid_name",
				"\"name\" must be a DNS label of 1 to 63 characters");
	else if (kj && (key == NULL || !cp_key_id_valid(key, strlen(key))))
		rc = cp_err_set(e, -EINVAL, 400, "invalid_key_id",
				"\"keyId\" must be a key id: k and 11 letters or digits");
	else if ((rc = cp_subdomain_check(name, pol, e)) == 0) {
		snprintf(n->name, sizeof(n->name), "%s", name);
		snprintf(n->key_id, sizeof(n->key_id), "%s", key ? key : "");
	}
	json_decref(j);
	return rc;
}

int cp_names_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	void (*next)(struct cp_op *) = NULL;
	struct cp_op *op;

	if (id == NULL && cp_is_method(req, "POST"))
		next = names_reserve;
	else if (cp_is_method(req, "GET") || cp_is_method(req, "HEAD"))
		next = names_list;
	else if (id && cp_is_method(req, "DELETE"))
		next = names_release;
	if (next == NULL) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if (id && (id_len >= sizeof(op->id) || !pr_label_valid(id, id_len))) {
		cp_send_error(s, req, 400, "invalid_name", "names are DNS labels: a-z, 0-9, '-'");
		return 0;
	}
	if ((op = cp_op_new(s, req, sizeof(struct name_op))) == NULL)
		return -ENOMEM;
	if (id) {
		memcpy(op->id, id, id_len);
		op->id[id_len] = '\0';
	}
	if (next == names_reserve &&
	    parse_body(req, &s->policy, name_of(op), &op->deferred_error) < 0)
		op->has_deferred_error = 1;
	cp_auth(op, CP_SCOPE_TUNNELS, next);
	return 0;
}
