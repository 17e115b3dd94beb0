/*
 * cp_server.c: sluice-control's h2o server (see cp_http.h): the listener and
 * the client connections, the loop, the Redis connection requests use, and
 * an orderly exit. What it answers is the table of routes it is given
 * (cp_server_config.routes, dispatched by cp_dispatch.c).
 */
#include "http/cp_audit_log.h"
#include "http/cp_route.h"
#include "sl_log.h"
#include "sl_net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Bodies up to this size reach our handlers, which refuse anything over
 * CP_BODY_MAX with a JSON 413; h2o answers bigger ones itself. */
#define H2O_BODY_LIMIT (1024 * 1024)

/* An open client connection. Ownership: made at accept, freed by h2o's
 * on_close hook when the socket goes. At exit the remaining ones (idle
 * keep-alive connections: HTTP/1 in h2o 2.2.5 has no graceful shutdown) are
 * shut down, so that h2o closes them its own way before the context goes. */
struct cp_client {
	struct cp_server *s;
	h2o_socket_t *sock;
	struct cp_client *prev, *next;
};

/* Matched by the peer's address: h2o does not hand a request's socket out. */
int cp_client_fd(struct cp_server *s, h2o_req_t *req)
{
	struct sockaddr_storage want, got;
	socklen_t wl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&want);

	for (struct cp_client *c = s->clients; c && wl; c = c->next) {
		socklen_t gl = h2o_socket_getpeername(c->sock, (struct sockaddr *)&got);

		if (gl == wl && memcmp(&got, &want, wl) == 0)
			return h2o_socket_get_fd(c->sock);
	}
	return -ENOENT;
}

static void on_client_close(void *data)
{
	struct cp_client *c = data;

	if (c->prev)
		c->prev->next = c->next;
	else
		c->s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->s->nclients--;
	free(c);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
	struct cp_server *s = listener->data;
	struct cp_client *c;
	h2o_socket_t *sock;

	if (err != NULL)
		return;
	sock = h2o_evloop_socket_accept(listener);
	if (sock == NULL)
		return;
	if ((c = calloc(1, sizeof(*c))) != NULL) {
		c->s = s;
		c->sock = sock;
		c->next = s->clients;
		if (s->clients)
			s->clients->prev = c;
		s->clients = c;
		s->nclients++;
		sock->on_close.cb = on_client_close;
		sock->on_close.data = c;
	}
	h2o_accept(&s->accept_ctx, sock);
}

/* Shut down every client connection still open and let h2o close them;
 * bounded by a second. */
static void close_clients(struct cp_server *s)
{
	uint64_t until = h2o_now(s->loop) + 1000;

	for (struct cp_client *c = s->clients; c; c = c->next)
		shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
	while (s->nclients > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
}

static void setup_handlers(struct cp_server *s)
{
	h2o_hostconf_t *host;

	h2o_config_init(&s->globalconf);
	s->globalconf.max_request_entity_size = H2O_BODY_LIMIT;
	host = h2o_config_register_host(&s->globalconf, h2o_iovec_init(H2O_STRLIT("default")),
					65535);
	cp_dispatch_register(s, h2o_config_register_path(host, "/", 0));
}

int cp_server_create(struct cp_server **out, const struct cp_server_config *cfg)
{
	struct cp_server *s = calloc(1, sizeof(*s));
	int fd, err;

	if (s == NULL)
		return -ENOMEM;
	s->cfg = *cfg;
	cp_policy_default(&s->policy);
	s->policy.port_min = (uint32_t)cfg->port_min;
	s->policy.port_max = (uint32_t)cfg->port_max;
	if (cfg->duration_default)
		s->policy.duration_default = (uint32_t)cfg->duration_default;
	if (cfg->duration_min)
		s->policy.duration_min = (uint32_t)cfg->duration_min;
	if ((err = cp_audit_log_open(s)) < 0) {
		sl_error("cannot open the audit log %s: %s", cfg->audit_path, strerror(-err));
		free(s);
		return err;
	}
	fd = sl_listen_tcp(cfg->listen, 1024, SL_LISTEN_NONBLOCK);
	if (fd < 0) {
		cp_audit_log_close(s);
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
	if ((err = cp_rdb_create(&s->db, s->loop, cfg->redis, cfg->redis_timeout_ms)) < 0 ||
	    (err = cp_bridge_create(&s->bridge, s->loop)) < 0 ||
	    (cfg->routes->start && (err = cfg->routes->start(s)) < 0)) {
		cp_server_free(s);
		return err;
	}
	h2o_socket_read_start(s->listener, on_accept);
	*out = s;
	return 0;
}

/* Stop taking connections, then let requests waiting on Redis finish
 * (bounded by the Redis timeout) before the loop goes away. */
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
	uint64_t until;

	h2o_socket_read_stop(s->listener);
	h2o_socket_close(s->listener);
	s->listener = NULL;
	/* Drain: answers for requests already waiting on Redis. */
	until = h2o_now(s->loop) + (uint64_t)s->cfg.redis_timeout_ms + 200;
	while (s->inflight > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
	/* The routes' threads (domain checks, provisioning jobs) stopped. */
	if (s->cfg.routes->stop)
		s->cfg.routes->stop(s);
	close_clients(s);
	/* Answers streaming from threads to clients just closed (node
	 * commands) are cancelled, their remote processes killed within 3 s;
	 * their pipes are this loop's. */
	until = h2o_now(s->loop) + 4000;
	while (s->inflight > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
	s->stopping = 1;
	if (s->cfg.routes->dispose)
		s->cfg.routes->dispose(s);
	/* A thread still running wakes into a closed bridge (cp_bridge.h). */
	cp_bridge_close(s->bridge);
	cp_rdb_free(s->db);
	h2o_evloop_run(s->loop, 0);
	h2o_context_dispose(&s->ctx);
	h2o_config_dispose(&s->globalconf);
	h2o_evloop_destroy(s->loop);
	cp_audit_log_close(s);
	free(s);
}
