/*
 * dp_relay.h: the relay: public HTTP and TCP listeners, agent control and
 * data connections, routing, errors, admin endpoints, drain.
 */
#ifndef DP_RELAY_H
#define DP_RELAY_H

#include <signal.h>
#include <stdint.h>

#include "pr_state.h"

/* Ownership: the caller's (relay_main), every string borrowed for the relay's life; tokens is the
 * caller's array. */
struct dp_relay_config {
	const char *http;	/* public HTTP listener, host:port */
	const char *https;	/* public HTTPS listener, or NULL */
	const char *cert, *key; /* TLS for --https and the agent link; NULL: plaintext agents */
	const char *cert_dir;	/* more certificates, chosen by SNI (NAME.crt, NAME.key) */
	const char *agents;	/* agent listener */
	const char *admin;	/* /health and /metrics */
	const char *domain;
	uint16_t tcp_lo, tcp_hi;
	uint16_t lt_lo, lt_hi; /* localtunnel clients' sockets (--lt-ports), 0: off */
	char **tokens;	       /* NULL: any token (development), unless sessions are on */
	uint32_t ntokens;
	/* Sessions from the control plane (--redis): agent tokens are signed
	 * with session_secret and checked against the session table. */
	const char *redis;	    /* NULL: off */
	const char *session_secret; /* >= PR_TOKEN_KEY_MIN bytes when redis is set */
	const char *relay_id;	    /* this relay's name in Redis */
	const char *link;	    /* listener for other relays' forwarded connections (with redis:
				       the relay joins the cluster), NULL: off */
	uint32_t heartbeat_ms, dead_ms, grace_ms;
	uint32_t head_timeout_ms, open_timeout_ms, drain_timeout_ms;
	uint32_t max_conns, nbufs, bufsize; /* per worker */
	uint32_t workers;		    /* worker threads, >= 1 */
	uint32_t send_zc;		    /* SEND_ZC from this many bytes (io_uring), 0: off */
	int splice;			    /* splice(2) for bulk transfers */
	int engine;			    /* enum dp_engine */
	uint32_t hsts_max_age; /* Strict-Transport-Security on HTTPS, seconds; 0: off */
	/* Limits of static-token tunnels (a session's come from its record). */
	struct pr_limit lim_req, lim_bw, lim_tcp;
};

/* Load a tokens file: one token per line, '#' comments. Returns 0 or -errno. */
int dp_relay_load_tokens(const char *path, char ***tokens, uint32_t *n);

/* Run until *stop; then drain and return 0, or a negative errno at start-up. */
/* *reload (SIGHUP) reloads the certificates and is cleared. */
int dp_relay_run(const struct dp_relay_config *cfg, volatile sig_atomic_t *stop,
		 volatile sig_atomic_t *reload);

#endif
