/*
 * cp_http.h: sluice-control's HTTP server on h2o (libh2o-evloop): routing,
 * JSON responses and the health endpoint. The REST API of the control-plane
 * issue hangs its routes here.
 */
#ifndef CP_HTTP_H
#define CP_HTTP_H

#include <signal.h>

#include "cp_redis.h"

struct cp_server;

struct cp_server_config {
	const char *listen;		     /* host:port */
	const struct cp_redis_target *redis; /* borrowed for the server's lifetime */
	int redis_timeout_ms;
};

/* Create the server and bind its listener; returns 0 or a negative errno. */
int cp_server_create(struct cp_server **out, const struct cp_server_config *cfg);

/* Serve until *stop becomes non-zero (set from a signal handler). */
int cp_server_run(struct cp_server *s, volatile sig_atomic_t *stop);

/* Close the listener and free everything; s may not be used afterwards. */
void cp_server_free(struct cp_server *s);

#endif
