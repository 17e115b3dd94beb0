/*
 * cp_server.h: what the control plane's h2o translation units share: the
 * server, one request in flight against Redis (struct cp_op), responses,
 * and the counters /metrics shows. cp_http.c owns the server and the
 * dispatch; cp_api.c the tunnel, key and domain routes.
 */
#ifndef CP_SERVER_H
#define CP_SERVER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>

#include <jansson.h>

#include "http/cp_http.h"
#include "http/cp_key.h"
#include "http/cp_rdb.h"
#include "http/cp_tunnel_req.h"

#define CP_KEY_ID_LEN 12 /* public id of an API key */
#define CP_KEY_LEN    40 /* the secret a client sends, "sk_" + 37 */

/* Counters for /metrics; single-threaded (the h2o loop). */
struct cp_metrics {
	uint64_t requests, responses[6]; /* responses by status class 1xx..5xx */
	uint64_t auth_failures, sessions_created, sessions_deleted, keys_created, keys_revoked,
		stats_folded, rate_limited;
};

/* Ownership: created by cp_server_create(), freed by cp_server_free(). */
struct cp_server {
	h2o_globalconf_t globalconf;
	h2o_context_t ctx;
	h2o_accept_ctx_t accept_ctx;
	h2o_socket_t *listener;
	h2o_evloop_t *loop;
	struct cp_server_config cfg;
	struct cp_rdb *db;	 /* commands of requests */
	struct cp_rdb *stats_db; /* the blocking XREAD of relays' counters */
	char stats_last_id[64];	 /* where that XREAD goes on */
	int stats_reading;
	struct cp_policy policy;
	struct cp_metrics m;
	uint64_t inflight; /* requests waiting on Redis */
	FILE *audit;	   /* audit log (JSON lines); NULL: through the log */
	h2o_timeout_t stats_retry_timeout;
	h2o_timeout_entry_t stats_retry; /* the counters' XREAD after a failure */
	int stopping;
	struct cp_client *clients; /* open client connections, to close at exit */
	uint64_t nclients;
	int verifying; /* domain verifications on their threads */
};

/* The caller of an API route, once authenticated. */
struct cp_actor {
	char key_id[CP_KEY_ID_LEN + 8]; /* "admin" for the bootstrap key */
	unsigned scopes;
};

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

/* An id we made ("nd_", "jb_" and pr_random_alnum's [a-z0-9]), n bytes
 * at most max: 1 when it is one, 0 otherwise. */
int cp_prefixed_id_ok(const char *id, size_t n, const char *prefix, size_t max);

/* key's index in fields (a body's allowed keys), or -1 with a 400
 * unknown_field answered (op freed). */
int cp_op_field(struct cp_op *op, const char *const *fields, size_t n, const char *key);

/* The client connection's fd behind req, or -1: to watch for a client that
 * hangs up while a streamed answer waits for output. */
int cp_client_fd(struct cp_server *s, h2o_req_t *req);

/* Free op without answering: its request is answered by someone else
 * (a streamed response). */
void cp_op_release(struct cp_op *op);
/* Status, the common headers and a content type, for a response whose
 * body goes out with h2o_start_response and h2o_send. */
void cp_start_stream(struct cp_server *s, h2o_req_t *req, int status, const char *type);

/* Responses outside an op (validation failures before Redis). */
void cp_send_json(struct cp_server *s, h2o_req_t *req, int status, json_t *body);
void cp_send_error(struct cp_server *s, h2o_req_t *req, int status, const char *code,
		   const char *msg);

/* Authenticate op's request and require scopes `need`, then run next. */
void cp_auth(struct cp_op *op, unsigned need, void (*next)(struct cp_op *op));

/* The client's address (text) into ip: 0 (IPv4), 1 (IPv6), or -1 when
 * the connection cannot tell (ip left as it was). */
int cp_client_ip(h2o_req_t *req, char ip[64]);

/* One line in the audit log: event, the actor and the request's address
 * and user agent, plus detail (may be NULL). */
void cp_audit(struct cp_server *s, h2o_req_t *req, const char *event, const char *actor,
	      const char *detail);

/* Session records (cp_api.c): encode ps into op->blob, then change the
 * stored record with its stream event. */
struct pr_session;
int cp_encode_record(struct cp_op *op, const struct pr_session *ps);
/* An existing record changed (deleting: a tombstone), written only if it is
 * still at read_rev and not deleted; free_name: release the session's name
 * if it still holds it. Check the reply with cp_update_result. */
void cp_update_record(struct cp_op *op, const struct pr_session *ps, uint64_t read_rev,
		      int deleting, int free_name, cp_rdb_cb done);
int cp_update_result(struct cp_op *op, struct redisReply *r, const char *err);
/* 1 when an EXEC reply ran every command (none answered an error). */
int cp_exec_ok(const struct redisReply *r);
json_t *cp_iso_time(uint64_t unix_s);

/* The routes of cp_api.c and cp_domains.c; each returns 0 (h2o's convention). */
int cp_api_domains(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
int cp_api_tunnels(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
int cp_api_keys(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
int cp_api_localtunnel(struct cp_server *s, h2o_req_t *req, const char *name, size_t len);
int cp_api_relays(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
int cp_api_nodes(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
/* The relays' counters: start the XREAD loop on s->stats_db. */
void cp_api_follow_stats(struct cp_server *s);

#endif
