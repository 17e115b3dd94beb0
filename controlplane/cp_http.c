/*
 * cp_http.c: sluice-control's h2o server (see cp_http.h). One handler owns
 * every path and dispatches on a route table, so a 404 and a 405 come back
 * as JSON like every other error: {"error": "...", "code": "..."}.
 */
#define H2O_USE_LIBUV 0
#include <h2o.h>

#include "cp_http.h"
#include "sl_cli.h"
#include "sl_log.h"
#include "sl_net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ownership: created by cp_server_create(), freed by cp_server_free(). */
struct cp_server {
	h2o_globalconf_t globalconf;
	h2o_context_t ctx;
	h2o_accept_ctx_t accept_ctx;
	h2o_socket_t *listener;
	h2o_evloop_t *loop;
	struct cp_server_config cfg;
};

/* h2o hands our handler back; the server pointer rides along. */
struct cp_handler {
	h2o_handler_t super;
	struct cp_server *srv;
};

typedef int (*cp_route_fn)(struct cp_server *s, h2o_req_t *req);

struct cp_route {
	const char *method;
	const char *path;
	cp_route_fn fn;
};

static void send_json(h2o_req_t *req, int status, const char *reason, const char *body, size_t len)
{
	req->res.status = status;
	req->res.reason = reason;
	req->res.content_length = len;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL,
		       H2O_STRLIT("application/json"));
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL,
		       H2O_STRLIT("no-store"));
	h2o_send_inline(req, body, len);
}

/* {"error": msg, "code": code} with msg escaped. */
static void send_error(h2o_req_t *req, int status, const char *reason, const char *code,
		       const char *msg)
{
	char body[512], esc[300];
	size_t n = sl_json_escape(esc, sizeof(esc), msg, strlen(msg), NULL);
	int len = snprintf(body, sizeof(body), "{\"error\":\"%.*s\",\"code\":\"%s\"}", (int)n, esc,
			   code);

	send_json(req, status, reason, body, (size_t)len);
}

static int route_health(struct cp_server *s, h2o_req_t *req)
{
	char err[200] = "", esc[300], body[600];
	double ms = 0;
	int e = cp_redis_ping(s->cfg.redis, s->cfg.redis_timeout_ms, &ms, err, sizeof(err));
	size_t n = sl_json_escape(esc, sizeof(esc), err, strlen(err), NULL);
	int len;

	if (e == 0)
		len = snprintf(body, sizeof(body),
			       "{\"status\":\"ok\",\"version\":\"%s\","
			       "\"redis\":{\"ok\":true,\"latencyMs\":%.3f}}",
			       sl_version_string(), ms);
	else
		len = snprintf(body, sizeof(body),
			       "{\"status\":\"degraded\",\"version\":\"%s\","
			       "\"redis\":{\"ok\":false,\"error\":\"%.*s\"}}",
			       sl_version_string(), (int)n, esc);
	if (e != 0)
		sl_warn("health: redis unreachable: %s", err);
	send_json(req, e == 0 ? 200 : 503, e == 0 ? "OK" : "Service Unavailable", body,
		  (size_t)len);
	return 0;
}

static int route_version(struct cp_server *s, h2o_req_t *req)
{
	char body[200];
	int len = snprintf(body, sizeof(body), "{\"version\":\"%s\",\"h2o\":\"%s\"}",
			   sl_version_string(), H2O_VERSION);

	(void)s;
	send_json(req, 200, "OK", body, (size_t)len);
	return 0;
}

static const struct cp_route routes[] = {
	{"GET", "/api/v1/health", route_health},
	{"GET", "/api/v1/version", route_version},
};

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	struct cp_server *s = ((struct cp_handler *)self)->srv;
	int path_known = 0;

	sl_debug("%.*s %.*s", (int)req->method.len, req->method.base, (int)req->path_normalized.len,
		 req->path_normalized.base);
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, routes[i].path,
			       strlen(routes[i].path)))
			continue;
		path_known = 1;
		if (h2o_memis(req->method.base, req->method.len, routes[i].method,
			      strlen(routes[i].method)) ||
		    (strcmp(routes[i].method, "GET") == 0 &&
		     h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))))
			return routes[i].fn(s, req);
	}
	if (path_known)
		send_error(req, 405, "Method Not Allowed", "method_not_allowed",
			   "method not allowed on this path");
	else
		send_error(req, 404, "Not Found", "not_found", "no such endpoint");
	return 0;
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
	struct cp_server *s = listener->data;
	h2o_socket_t *sock;

	if (err != NULL)
		return;
	sock = h2o_evloop_socket_accept(listener);
	if (sock == NULL)
		return;
	h2o_accept(&s->accept_ctx, sock);
}

static void setup_handlers(struct cp_server *s)
{
	h2o_hostconf_t *host;
	h2o_pathconf_t *path;
	struct cp_handler *h;

	h2o_config_init(&s->globalconf);
	host = h2o_config_register_host(&s->globalconf, h2o_iovec_init(H2O_STRLIT("default")),
					65535);
	path = h2o_config_register_path(host, "/", 0);
	h = (struct cp_handler *)h2o_create_handler(path, sizeof(*h));
	h->super.on_req = on_req;
	h->srv = s;
}

int cp_server_create(struct cp_server **out, const struct cp_server_config *cfg)
{
	struct cp_server *s = calloc(1, sizeof(*s));
	int fd;

	if (s == NULL)
		return -ENOMEM;
	s->cfg = *cfg;
	fd = sl_listen_tcp(cfg->listen, 1024, SL_LISTEN_NONBLOCK);
	if (fd < 0) {
		free(s);
		return fd;
	}
	setup_handlers(s);
	s->loop = h2o_evloop_create();
	h2o_context_init(&s->ctx, s->loop, &s->globalconf);
	s->accept_ctx.ctx = &s->ctx;
	s->accept_ctx.hosts = s->globalconf.hosts;
	s->listener = h2o_evloop_socket_create(s->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
	s->listener->data = s;
	h2o_socket_read_start(s->listener, on_accept);
	*out = s;
	return 0;
}

int cp_server_run(struct cp_server *s, volatile sig_atomic_t *stop)
{
	/* Wake at least every 200 ms to notice a stop request from a signal. */
	while (!*stop)
		if (h2o_evloop_run(s->loop, 200) != 0 && errno != EINTR)
			return -errno;
	return 0;
}

void cp_server_free(struct cp_server *s)
{
	h2o_socket_read_stop(s->listener);
	h2o_socket_close(s->listener);
	s->listener = NULL;
	/* Let the close complete before the context goes away. */
	h2o_evloop_run(s->loop, 0);
	h2o_context_dispose(&s->ctx);
	h2o_config_dispose(&s->globalconf);
	h2o_evloop_destroy(s->loop);
	free(s);
}
