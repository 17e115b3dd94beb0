/*
 * cp_op.c: ops, the requests waiting on Redis (see cp_op.h). An op is
 * answered once: every way out (reply, error, release) frees it.
 */
#include "http/cp_op.h"
#include "http/cp_reply.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis.h>

/* Lives in the request's pool; see struct cp_op. Ownership: allocated in the request's pool, freed
 * by h2o with it (on_guard_dispose clears the op's req, so a late reply answers nobody). */
struct cp_op_guard {
	struct cp_op *op;
};

static void on_guard_dispose(void *p)
{
	struct cp_op_guard *g = p;

	if (g->op)
		g->op->req = NULL;
}

struct cp_op *cp_op_new(struct cp_server *s, h2o_req_t *req, size_t size)
{
	struct cp_op *op = size >= sizeof(*op) ? calloc(1, size) : NULL;

	if (op == NULL)
		return NULL;
	op->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*op->guard), on_guard_dispose);
	op->guard->op = op;
	op->s = s;
	op->req = req;
	op->now = (uint64_t)time(NULL);
	s->inflight++;
	return op;
}

static void op_free(struct cp_op *op)
{
	if (op->req)
		op->guard->op = NULL;
	op->s->inflight--;
	if (op->dispose)
		op->dispose(op);
	json_decref(op->acc);
	free(op);
}

void cp_op_release(struct cp_op *op)
{
	op_free(op);
}

void cp_op_reply(struct cp_op *op, int status, json_t *body)
{
	if (op->req)
		cp_send_json(op->s, op->req, status, body);
	else
		json_decref(body);
	op_free(op);
}

void cp_op_error(struct cp_op *op, int status, const char *code, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (op->req)
		cp_send_error(op->s, op->req, status, code, msg);
	op_free(op);
}

void cp_op_fail(struct cp_op *op, const struct cp_err *e)
{
	cp_op_error(op, e->status, e->code, "%s", e->message);
}

int cp_field_index(const char *const *fields, size_t n, const char *key, struct cp_err *e)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(key, fields[i]) == 0)
			return (int)i;
	return cp_err_set(e, -ENOENT, 400, "unknown_field", "unknown field \"%.64s\"", key);
}

int cp_err_redis(struct cp_err *e, const redisReply *r, const char *err)
{
	if (err != NULL)
		return cp_err_set(e, -ENOTCONN, 503, "redis_unavailable",
				  "session store unavailable: %s", err);
	return cp_err_set(e, -EIO, 500, "redis_error", "session store error: %.*s",
			  r ? (int)r->len : 0, r ? r->str : "");
}

void cp_op_redis_error(struct cp_op *op, redisReply *r, const char *err)
{
	struct cp_err e;

	cp_err_redis(&e, r, err);
	cp_op_fail(op, &e);
}

void cp_op_step_failed(struct cp_op *op, redisReply *r, const char *err)
{
	if (op->step_failed)
		return;
	op->step_failed = 1;
	op->why_redis_down = err != NULL;
	snprintf(op->why, sizeof(op->why), "%s",
		 err				     ? err
		 : r && r->type == REDIS_REPLY_ERROR ? r->str
						     : "unexpected reply");
}

int cp_err_step(struct cp_err *e, const struct cp_op *op, const char *store)
{
	return cp_err_set(e, op->why_redis_down ? -ENOTCONN : -EIO, op->why_redis_down ? 503 : 500,
			  op->why_redis_down ? "redis_unavailable" : "redis_error", "%s: %s", store,
			  op->why);
}

void cp_op_step_error(struct cp_op *op, const char *store)
{
	struct cp_err e;

	cp_err_step(&e, op, store);
	cp_op_fail(op, &e);
}
