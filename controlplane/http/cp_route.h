/*
 * cp_route.h: the table of routes a server answers (struct cp_routes). The
 * HTTP layer dispatches; it knows no route of its own. Whoever starts the
 * server hands it a table (cp_server_config.routes), as h2o is handed its
 * handlers, so the routes call the HTTP layer and never the other way.
 *
 * Dispatch, in order (http/cp_dispatch.c):
 *   OPTIONS          a CORS preflight (204)
 *   a body too big   413
 *   collections      a prefix, then nothing or "/{id...}": the route parses
 *                    the rest and the method
 *   fixed            method and path exactly (a GET route answers HEAD too)
 *   localtunnel      with --localtunnel, GET /?new and GET /<name> on paths
 *                    no fixed route knows
 *   otherwise        405 for a known path, 404
 * Every route returns 0 once it has answered or will (h2o's convention), or
 * -ENOMEM when it could not start (nothing answered: a collection's or a
 * fixed route's request then goes on as unrouted, h2o's for a handler that
 * declines; the localtunnel client's gets a 503).
 */
#ifndef CP_ROUTE_H
#define CP_ROUTE_H

#include "http/cp_server.h"

typedef int (*cp_route_fn)(struct cp_server *s, h2o_req_t *req);
/* id: what follows the collection's prefix and "/", or NULL and 0 for the
 * collection itself. */
typedef int (*cp_collection_fn)(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);

/* Ownership: static tables. */
struct cp_route {
	const char *method;
	const char *path;
	cp_route_fn fn;
};

/* Ownership: static tables. */
struct cp_collection {
	const char *prefix; /* "/api/v1/tunnels" */
	cp_collection_fn fn;
};

/*
 * What a server serves, and what its routes need done around the server's
 * life (h2o's on_context_init and on_context_dispose). Borrowed for the
 * server's lifetime; any hook may be NULL.
 */
struct cp_routes {
	const struct cp_route *fixed;
	size_t nfixed;
	const struct cp_collection *collections;
	size_t ncollections;
	/* The localtunnel client's GET /?new (name NULL) or GET /<name>. */
	cp_collection_fn localtunnel;
	/* Once the loop and the Redis connection exist, before any request:
	 * 0, or a negative errno (the server is not created). */
	int (*start)(struct cp_server *s);
	/* At exit, the listener closed and requests waiting on Redis answered,
	 * before client connections close: the routes' own work stopped. */
	void (*stop)(struct cp_server *s);
	/* After the client connections closed, before Redis and the loop go. */
	void (*dispose)(struct cp_server *s);
};

/* The dispatcher as h2o's handler of every path on pathconf. */
void cp_dispatch_register(struct cp_server *s, h2o_pathconf_t *path);

/* An id we made ("nd_", "jb_" and pr_random_alnum's [a-z0-9]), n bytes
 * at most max: 1 when it is one, 0 otherwise. */
int cp_prefixed_id_ok(const char *id, size_t n, const char *prefix, size_t max);

#endif
