/*
 * cp_http.h: sluice-control's HTTP server on h2o (libh2o-evloop), as its
 * starter sees it: the configuration, create, run, free. The server knows no
 * route of its own: it answers the table it is given (http/cp_route.h; the
 * REST API's is api/cp_api.h's cp_api_routes).
 */
#ifndef CP_HTTP_H
#define CP_HTTP_H

#include <signal.h>

#include "http/cp_tunnel_req.h"
#include "sl_redis.h"

struct cp_server;
struct cp_routes;

/* Every pointer is borrowed for the server's lifetime. */
struct cp_server_config {
	const struct cp_routes *routes; /* what the server answers */
	const char *listen;		/* host:port */
	const struct sl_redis_target *redis;
	int redis_timeout_ms;
	const char *admin_key;	       /* SLUICE_ADMIN_KEY: the bootstrap admin key, or NULL */
	const char *session_secret;    /* HMAC key of agent tokens, >= PR_TOKEN_KEY_MIN bytes */
	const char *relay;	       /* the relays' agent address handed to agents */
	const char *public_url;	       /* scheme://domain[:port] of public tunnel URLs */
	const char *cors_origins;      /* comma-separated allow-list, "" for none, "*" for any */
	const char *audit_path;	       /* JSON lines file, NULL or "" for the log */
	long max_sessions;	       /* active sessions at most */
	long max_reserved_names;       /* names one key may reserve (api/cp_names.c) */
	int port_min, port_max;	       /* the local ports agents may expose */
	int min_relays;		       /* health fails with fewer relays heartbeating */
	int duration_default;	       /* seconds of a session that asks for none */
	int duration_min;	       /* shortest session a client may ask for */
	int localtunnel;	       /* answer the localtunnel client (GET /?new, GET /<name>) */
	int lt_lo, lt_hi;	       /* relay ports for localtunnel clients' sockets */
	const char *dns_server;	       /* DNS server for TXT challenges, NULL: the system's */
	const char *challenge_connect; /* where HTTP challenges connect, NULL: the domain */
	struct pr_limit limits[CP_LIM_N]; /* defaults of sessions and keys (--limit-*) */
	const char *redis_url;	  /* the Redis URL as given (provisioning checks a relay joined) */
	const char *relay_binary; /* the sluice-relay provisioning installs, or NULL */
	const char *relay_redis;  /* Redis as provisioned relays reach it ("": redis_url) */
};

/* Create the server and bind its listener; returns 0 or a negative errno. */
int cp_server_create(struct cp_server **out, const struct cp_server_config *cfg);

/* Serve until *stop becomes non-zero (set from a signal handler). */
int cp_server_run(struct cp_server *s, volatile sig_atomic_t *stop);

/* Close the listener and free everything; s may not be used afterwards. */
void cp_server_free(struct cp_server *s);

#endif
