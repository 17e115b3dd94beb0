/*
 * dp_relay.h: the relay: public HTTP and TCP listeners, agent control and
 * data connections, routing, errors, admin endpoints, drain.
 */
#ifndef DP_RELAY_H
#define DP_RELAY_H

#include <signal.h>
#include <stdint.h>

struct dp_relay_config {
	const char *http;	/* public HTTP listener, host:port */
	const char *https;	/* public HTTPS listener, or NULL */
	const char *cert, *key; /* TLS for --https and the agent link; NULL: plaintext agents */
	const char *cert_dir;	/* more certificates, chosen by SNI (NAME.crt, NAME.key) */
	const char *agents;	/* agent listener */
	const char *admin;	/* /health and /metrics */
	const char *domain;
	uint16_t tcp_lo, tcp_hi;
	char **tokens; /* NULL: any token (development) */
	uint32_t ntokens;
	uint32_t heartbeat_ms, dead_ms, grace_ms;
	uint32_t head_timeout_ms, open_timeout_ms, drain_timeout_ms;
	uint32_t max_conns, nbufs, bufsize; /* per worker */
	uint32_t workers;		    /* worker threads, >= 1 */
	uint32_t send_zc;		    /* SEND_ZC from this many bytes (io_uring), 0: off */
	int splice;			    /* splice(2) for bulk transfers */
	int engine;			    /* enum dp_engine */
};

/* Load a tokens file: one token per line, '#' comments. Returns 0 or -errno. */
int dp_relay_load_tokens(const char *path, char ***tokens, uint32_t *n);

/* Run until *stop; then drain and return 0, or a negative errno at start-up. */
/* *reload (SIGHUP) reloads the certificates and is cleared. */
int dp_relay_run(const struct dp_relay_config *cfg, volatile sig_atomic_t *stop,
		 volatile sig_atomic_t *reload);

#endif
