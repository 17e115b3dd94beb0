/*
 * cp_relays.c: the relays an operator runs, as Redis knows them
 * (docs/cluster.md): every relay with --redis heartbeats into the zset
 * sl:relays; one that joined the cluster (--link) also registers
 * sl:relay:<id> = "v1 <serving|draining> <link address>", with a TTL.
 *
 *   GET  /api/v1/relays             the relays alive now (admin)
 *   POST /api/v1/relays/{id}/drain  ask one to drain: it picks the request up
 *                                   from sl:drain:<id> within a second (admin)
 */
#include "api/cp_relays.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_reply.h"
#include "sl_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#define RELAY_ALIVE_MS 5000 /* a heartbeat older than this: not alive */
#define RELAYS_MAX     256

/* GET /api/v1/relays: the replies still to come after the zset's. The
 * op's own (cp_op_new with this size); it owns nothing more. */
struct relays_op {
	struct cp_op op;
	long pending;
};

static struct relays_op *relays_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct relays_op, op, op);
}

/* Replies: the zset (WITHSCORES), then per relay GET and HGET, pipelined. */
static void on_relays(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	size_t step = op->step++;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
	} else if (step == 0 && r->type == REDIS_REPLY_ARRAY) {
		json_t *list = json_object_get(op->acc, "relays");

		for (size_t i = 0; i + 1 < r->elements && i / 2 < RELAYS_MAX; i += 2) {
			const char *id = r->element[i]->str;
			time_t at = (time_t)(strtoull(r->element[i + 1]->str, NULL, 10) / 1000);

			json_array_append_new(
				list, json_pack("{s:s,s:s,s:s,s:o}", "id", id, "state", "serving",
						"link", "", "lastSeen", cp_iso_time((uint64_t)at)));
			cp_rdb_cmdf(op->s->db, on_relays, op, "GET sl:relay:%s", id);
			relays_of(op)->pending++;
		}
	} else if (step > 0 && r->type == REDIS_REPLY_STRING) {
		json_t *rel = json_array_get(json_object_get(op->acc, "relays"), step - 1);
		char state[16], link[128];

		if (sscanf(r->str, "v1 %15s %127s", state, link) == 2) {
			json_object_set_new(rel, "state", json_string(state));
			json_object_set_new(rel, "link", json_string(link));
		}
	}
	if ((long)step < relays_of(op)->pending)
		return;
	if (op->step_failed) {
		cp_op_step_error(op, "relay registry");
		return;
	}
	cp_op_reply(op, 200, json_incref(op->acc));
}

static void relays_list(struct cp_op *op)
{
	op->acc = json_pack("{s:[]}", "relays");
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_relays, op, "ZRANGEBYSCORE sl:relays %llu +inf WITHSCORES",
		    (unsigned long long)(sl_wall_ms() - RELAY_ALIVE_MS));
}

static void on_drain(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) {
		cp_op_error(op, 404, "not_found", "no live relay %s", op->id);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "relay_drain", op->actor.key_id, op->id);
	cp_op_reply(op, 202, json_pack("{s:s,s:b}", "id", op->id, "draining", 1));
}

/* Only a relay that heartbeats lately is asked (a typo must not leave a
 * request waiting for whoever takes that name one day). */
static const char drain_lua[] = "local at = redis.call('ZSCORE', 'sl:relays', ARGV[1])\n"
				"if not at or tonumber(at) < tonumber(ARGV[2]) then return 0 end\n"
				"redis.call('SET', KEYS[1], '1', 'EX', 60)\n"
				"return 1\n";

static void relay_drain(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_drain, op, "EVAL %s 1 sl:drain:%s %s %llu", drain_lua, op->id,
		    op->id, (unsigned long long)(sl_wall_ms() - RELAY_ALIVE_MS));
}

int cp_relays_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	int post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
	int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) ||
		  h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"));
	struct cp_op *op;
	size_t n = id_len > 6 ? id_len - 6 : 0;

	if (id == NULL && get) {
		if ((op = cp_op_new(s, req, sizeof(struct relays_op))) == NULL)
			return -ENOMEM;
		cp_auth(op, CP_SCOPE_ADMIN, relays_list);
		return 0;
	}
	if (id == NULL || !post || n == 0 || n >= sizeof(op->id) ||
	    memcmp(id + n, "/drain", 6) != 0 || memchr(id, '/', n) != NULL) {
		cp_send_error(s, req, id && post ? 404 : 405,
			      id && post ? "not_found" : "method_not_allowed",
			      id && post ? "no such endpoint" : "method not allowed on this path");
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)id[i] <= 0x20 || id[i] == 0x7f) {
			cp_send_error(s, req, 400, "invalid_relay_id", "relay ids are printable");
			return 0;
		}
	if ((op = cp_op_new(s, req, sizeof(*op))) == NULL)
		return -ENOMEM;
	memcpy(op->id, id, n);
	op->id[n] = '\0';
	cp_auth(op, CP_SCOPE_ADMIN, relay_drain);
	return 0;
}
