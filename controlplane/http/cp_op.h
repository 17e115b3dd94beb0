/*
 * cp_op.h: one API request on its way through Redis (struct cp_op): made by
 * the route that takes the request, authenticated (http/cp_auth.h), then
 * answered once, which frees it.
 */
#ifndef CP_OP_H
#define CP_OP_H

#include "http/cp_server.h"

#include <stdlib.h>

/* The caller of an API route, once authenticated. */
struct cp_actor {
	char key_id[CP_KEY_ID_LEN + 8]; /* "admin" for the bootstrap key */
	unsigned scopes;
};

struct cp_op_guard;

/*
 * One API request waiting on Redis: what every route's request has. A route
 * with state of its own makes a larger struct with this one as its first
 * member (struct tunnel_op { struct cp_op op; ... }), asks cp_op_new for its
 * size and sets dispose when that part owns memory.
 *
 * Ownership: calloc'd by cp_op_new(), freed by whichever of cp_op_reply,
 * cp_op_error and cp_op_release ends it: dispose first, then acc. If the
 * client goes away first, h2o frees the request's pool and the guard in it
 * clears op->req, so a late reply answers nobody instead of touching freed
 * memory.
 */
struct cp_op {
	struct cp_server *s;
	h2o_req_t *req;
	struct cp_op_guard *guard;
	struct cp_actor actor;
	void (*next)(struct cp_op *op); /* what runs once auth succeeded */
	unsigned need;			/* scopes the route requires */
	char id[64];			/* the path's {id}, when any */
	struct cp_err deferred_error;	/* a bad request, told only once authenticated */
	int has_deferred_error;
	uint64_t now; /* unix seconds when the request came */
	/* A pipeline's bookkeeping: replies received, and the first failure
	 * (Redis unreachable, or an error reply) told at its last reply. */
	size_t step;
	int step_failed, why_redis_down;
	char why[200];
	json_t *acc;			   /* a response being gathered (or a body kept) */
	void (*dispose)(struct cp_op *op); /* frees the route's part; NULL: nothing */
};

/* An op of size bytes (sizeof(struct cp_op) or a route's struct that starts
 * with one), zeroed but for the common part; NULL when out of memory. */
struct cp_op *cp_op_new(struct cp_server *s, h2o_req_t *req, size_t size);
/* Send status + body (a jansson value, stolen) and free op. */
void cp_op_reply(struct cp_op *op, int status, json_t *body);
void cp_op_error(struct cp_op *op, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Answer e (its status, code and message); ends op. */
void cp_op_fail(struct cp_op *op, const struct cp_err *e);
/* A Redis failure (err from cp_rdb, or an error reply): 503 / 500. */
void cp_op_redis_error(struct cp_op *op, struct redisReply *r, const char *err);

/*
 * The error convention of the routes' helpers: a helper that finds an
 * error for the client never answers; it fills the caller's struct cp_err
 * (cp_err_set, http/cp_tunnel_req.h, or those below) and returns a
 * negative errno, and the caller, who owns the op, answers with
 * cp_op_fail. A function that ends op says so and returns void.
 */
/* e for a Redis failure, as cp_op_redis_error answers it: -ENOTCONN with
 * a 503 (Redis unreachable: err set), or -EIO with a 500 (an error reply
 * r, or none). */
int cp_err_redis(struct cp_err *e, const struct redisReply *r, const char *err);
/* Within a pipeline: a failed reply (err from cp_rdb, or r), of which the
 * first is kept in op->why; then, at its last reply, cp_op_step_error
 * answers 503 (Redis unreachable) or 500 with "<store>: <why>". */
void cp_op_step_failed(struct cp_op *op, struct redisReply *r, const char *err);
void cp_op_step_error(struct cp_op *op, const char *store);
/* The same answer into *e: -ENOTCONN (503) or -EIO (500). */
int cp_err_step(struct cp_err *e, const struct cp_op *op, const char *store);

/* key's index in fields (a body's allowed keys), or -ENOENT with *e the
 * 400 unknown_field to answer. */
int cp_field_index(const char *const *fields, size_t n, const char *key, struct cp_err *e);

/*
 * Strings a route gathers from one reply to look each up in the next
 * (key ids, domains, session ids). Ownership: a member of the route's op;
 * cp_strings_free frees them and the array (in the op's dispose).
 */
struct cp_strings {
	char **v;
	size_t n;
};

static inline void cp_strings_free(struct cp_strings *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Free op without answering: its request is answered by someone else
 * (a streamed response). */
void cp_op_release(struct cp_op *op);

#endif
