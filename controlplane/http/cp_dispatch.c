/*
 * cp_dispatch.c: the one h2o handler of every path, dispatching through the
 * server's table of routes (see cp_route.h). One handler owns every path,
 * so a 404 and a 405 come back as JSON like every other error.
 */
#include "http/cp_reply.h"
#include "http/cp_route.h"
#include "sl_log.h"

#include <stdint.h>
#include <string.h>

/* h2o hands our handler back; the server pointer rides along. Ownership:
 * h2o's (made by h2o_create_handler, freed with the configuration). */
struct cp_handler {
	h2o_handler_t super;
	struct cp_server *srv;
};

/* 1 when no collection's prefix matched; else the route's answer. */
static int dispatch_collection(struct cp_server *s, h2o_req_t *req)
{
	const struct cp_routes *t = s->cfg.routes;
	const h2o_iovec_t *p = &req->path_normalized;

	for (size_t i = 0; i < t->ncollections; i++) {
		const struct cp_collection *c = &t->collections[i];
		size_t n = strlen(c->prefix);

		if (p->len < n || memcmp(p->base, c->prefix, n) != 0)
			continue;
		if (p->len == n)
			return c->fn(s, req, NULL, 0);
		if (p->base[n] == '/')
			return c->fn(s, req, p->base + n + 1, p->len - n - 1);
	}
	return 1;
}

/* The fixed route for the request's path and method, or NULL; *known: some
 * route has this path (a 405 rather than a 404). */
static const struct cp_route *fixed_route(const struct cp_routes *t, h2o_req_t *req, int *known)
{
	for (size_t i = 0; i < t->nfixed; i++) {
		const struct cp_route *r = &t->fixed[i];

		if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, r->path,
			       strlen(r->path)))
			continue;
		*known = 1;
		if (cp_is_method(req, r->method) ||
		    (strcmp(r->method, "GET") == 0 && cp_is_method(req, "HEAD")))
			return r;
	}
	return NULL;
}

/* The localtunnel client asks GET /?new (any name) or GET /<name>: 1 when
 * this is such a request (answered), 0 otherwise. */
static int localtunnel_request(struct cp_server *s, h2o_req_t *req)
{
	cp_collection_fn lt = s->cfg.routes->localtunnel;
	const h2o_iovec_t *p = &req->path_normalized;
	const char *q = req->query_at != SIZE_MAX ? req->path.base + req->query_at : NULL;

	if (lt == NULL || !cp_is_method(req, "GET") || p->len < 1)
		return 0;
	if (p->len == 1 && q && req->path.len - req->query_at >= 4 && memcmp(q, "?new", 4) == 0) {
		if (lt(s, req, NULL, 0) < 0)
			cp_send_error(s, req, 503, "internal", "out of memory");
		return 1;
	}
	if (p->len > 1 && memchr(p->base + 1, '/', p->len - 1) == NULL) {
		if (lt(s, req, p->base + 1, p->len - 1) < 0)
			cp_send_error(s, req, 503, "internal", "out of memory");
		return 1;
	}
	return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	struct cp_server *s = ((struct cp_handler *)self)->srv;
	const struct cp_route *r;
	int path_known = 0;

	s->m.requests++;
	sl_debug("%.*s %.*s", (int)req->method.len, req->method.base, (int)req->path_normalized.len,
		 req->path_normalized.base);
	if (cp_is_method(req, "OPTIONS")) {
		cp_send_preflight(s, req);
		return 0;
	}
	if (req->entity.base && req->entity.len > CP_BODY_MAX) {
		cp_send_error(s, req, 413, "body_too_large", "request body over 16384 bytes");
		return 0;
	}
	if (dispatch_collection(s, req) == 0)
		return 0;
	if ((r = fixed_route(s->cfg.routes, req, &path_known)) != NULL)
		return r->fn(s, req);
	if (!path_known && s->cfg.localtunnel && localtunnel_request(s, req))
		return 0;
	if (path_known)
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
	else
		cp_send_error(s, req, 404, "not_found", "no such endpoint");
	return 0;
}

void cp_dispatch_register(struct cp_server *s, h2o_pathconf_t *path)
{
	struct cp_handler *h = (struct cp_handler *)h2o_create_handler(path, sizeof(*h));

	h->super.on_req = on_req;
	h->srv = s;
}

int cp_prefixed_id_ok(const char *id, size_t n, const char *prefix, size_t max)
{
	size_t pl = strlen(prefix);

	if (n <= pl || n > max || memcmp(id, prefix, pl) != 0)
		return 0;
	for (size_t i = pl; i < n; i++)
		if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9')))
			return 0;
	return 1;
}
