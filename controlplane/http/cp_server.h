/*
 * cp_server.h: the server as the HTTP layer's units share it (cp_server.c
 * makes and frees it): h2o's context, the Redis connection every request
 * uses, the operator's policy, the counters /metrics shows, the open client
 * connections. Routes see it through their ops (http/cp_op.h).
 */
#ifndef CP_SERVER_H
#define CP_SERVER_H

#define H2O_USE_LIBUV 0
#include <h2o.h>

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "http/cp_bridge.h"
#include "http/cp_http.h"
#include "http/cp_key.h"
#include "http/cp_rdb.h"
#include "http/cp_tunnel_req.h"

/* Counters for /metrics; single-threaded (the h2o loop). The HTTP layer
 * counts requests, responses and refused keys; routes count their own. */
struct cp_metrics {
	uint64_t requests, responses[6]; /* responses by status class 1xx..5xx */
	uint64_t auth_failures, sessions_created, sessions_deleted, sessions_replaced, keys_created,
		keys_revoked, stats_folded, rate_limited;
};

struct cp_client;
struct cp_api_state; /* the routes' own (cp_routes.start makes it): never looked into here */

/*
 * Ownership: created by cp_server_create(), freed by cp_server_free(), which
 * closes the listener, the client connections, the Redis connection, the
 * bridge and the audit log it opened; cfg's pointers stay the caller's (cp_server_config).
 * api is made by cfg.routes->start and freed by its dispose.
 */
struct cp_server {
	h2o_globalconf_t globalconf;
	h2o_context_t ctx;
	h2o_accept_ctx_t accept_ctx;
	h2o_socket_t *listener;
	h2o_evloop_t *loop;
	struct cp_server_config cfg;
	struct cp_rdb *db;	  /* commands of requests */
	struct cp_bridge *bridge; /* threads' work back to the loop (cp_bridge.h) */
	struct cp_policy policy;
	struct cp_metrics m;
	uint64_t inflight; /* requests waiting on Redis, or streaming an answer */
	FILE *audit;	   /* audit log (JSON lines); NULL: through the log */
	int stopping;	   /* cp_server_free has begun: threads' results are not waited for */
	struct cp_client *clients; /* open client connections, to close at exit */
	uint64_t nclients;
	struct cp_api_state *api;
};

/* The client connection's fd behind req, or -ENOENT: to watch for a client
 * that hangs up while a streamed answer waits for output. */
int cp_client_fd(struct cp_server *s, h2o_req_t *req);

static inline int cp_is_method(const h2o_req_t *req, const char *m)
{
	return h2o_memis(req->method.base, req->method.len, m, strlen(m));
}

/* A request header's value, or NULL. */
static inline const h2o_iovec_t *cp_req_header(h2o_req_t *req, const h2o_token_t *tok)
{
	ssize_t i = h2o_find_header(&req->headers, tok, -1);

	return i < 0 ? NULL : &req->headers.entries[i].value;
}

#endif
