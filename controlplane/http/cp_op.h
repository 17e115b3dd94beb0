/*
 * cp_op.h: one API request on its way through Redis (struct cp_op): made by
 * the route that takes the request, authenticated (http/cp_auth.h), then
 * answered once, which frees it.
 */
#ifndef CP_OP_H
#define CP_OP_H

#include "http/cp_server.h"

/* The caller of an API route, once authenticated. */
struct cp_actor {
	char key_id[CP_KEY_ID_LEN + 8]; /* "admin" for the bootstrap key */
	unsigned scopes;
};

struct cp_op_guard;

/*
 * One API request waiting on Redis. Ownership: malloc'd by cp_op_new(),
 * freed by cp_op_finish() once the response is sent. If the client goes
 * away first, h2o frees the request's pool and the guard in it clears
 * op->req, so a late reply answers nobody instead of touching freed memory.
 */
struct cp_op {
	struct cp_server *s;
	h2o_req_t *req;
	struct cp_op_guard *guard;
	struct cp_actor actor;
	void (*next)(struct cp_op *op); /* what runs once auth succeeded */
	unsigned need;			/* scopes the route requires */
	char id[64];			/* the path's {id}, when any */
	char name[CP_SUBDOMAIN_MAX + 1];
	struct cp_tunnel_req treq;
	struct cp_key_req kreq;
	struct cp_err deferred_error; /* a bad request, told only once authenticated */
	int has_deferred_error;
	uint64_t now;	     /* unix seconds when the request came */
	uint64_t started_ms; /* health: when the PING went out */
	size_t step;	     /* replies received in a pipeline */
	int found;	     /* a share exists (revoke); the domain became ours (register) */
	int reply_status;    /* domains: the answer's status once sessions are rewritten */
	unsigned domain_deleted : 1, http_check : 1; /* domains: the rewrite's kind; the method */
	int step_failed, why_redis_down;
	char why[200];	    /* the first failure within a pipeline */
	long limit, offset; /* listing's page */
	long ttl;	    /* a share link's lifetime, seconds */
	size_t next_id;	    /* domains: the next of ids to rewrite */
	char **ids;	    /* key ids being listed, nids of them */
	size_t nids;
	json_t *acc; /* a response being gathered */
	char *blob;  /* an encoded record, or a copy of one read */
	size_t blob_len;
	int blob_nil;	  /* the record read was missing */
	void *blob_owner; /* a session being created (heap) */
	int lt;		  /* a localtunnel client's request */
	/* Limits (cp_limits.c): the session they are for (owned when
	 * lim_owned), the key's effective ones, and what runs after. */
	struct pr_session *lim_ps;
	int lim_owned;
	struct cp_limits lim_eff;
	void (*lim_next)(struct cp_op *op);
	char name_long[254]; /* a domain */
};

struct cp_op *cp_op_new(struct cp_server *s, h2o_req_t *req);
/* Send status + body (a jansson value, stolen) and free op. */
void cp_op_reply(struct cp_op *op, int status, json_t *body);
void cp_op_error(struct cp_op *op, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A Redis failure (err from cp_rdb, or an error reply): 503 / 500. */
void cp_op_redis_error(struct cp_op *op, struct redisReply *r, const char *err);
/* Within a pipeline: a failed reply (err from cp_rdb, or r), of which the
 * first is kept in op->why; then, at its last reply, cp_op_step_error
 * answers 503 (Redis unreachable) or 500 with "<store>: <why>". */
void cp_op_step_failed(struct cp_op *op, struct redisReply *r, const char *err);
void cp_op_step_error(struct cp_op *op, const char *store);

/* key's index in fields (a body's allowed keys), or -1 with a 400
 * unknown_field answered (op freed). */
int cp_op_field(struct cp_op *op, const char *const *fields, size_t n, const char *key);

/* Free op without answering: its request is answered by someone else
 * (a streamed response). */
void cp_op_release(struct cp_op *op);

#endif
