/*
 * dp_tunnel.h: the relay's tunnels: one per agent session, found by name
 * (Host routing), by session id (/session/<id>/ routing) and by TCP port.
 * A tunnel outlives its agent's control connection by a grace period, so an
 * agent that reconnects gets the same URL; its epoch rises on every resume,
 * fencing whatever the previous connection left behind.
 */
#ifndef DP_TUNNEL_H
#define DP_TUNNEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "dp_acl.h"
#include "dp_rate.h"
#include "pr_msg.h"
#include "pr_state.h"

/*
 * Ownership: the relay allocates a tunnel and adds it here; removal only
 * unlinks it. Sockets hold counted references (refs); the relay frees a
 * tunnel once it is unlinked and the last reference is gone.
 */
struct dp_tunnel {
	char name[PR_NAME_MAX];
	char sid[PR_SESSION_MAX];
	char key[PR_KEY_MAX];	  /* data-connection key, random per session */
	char token[PR_TOKEN_MAX]; /* the token it was opened with (resume check) */
	uint64_t epoch;
	enum pr_proto proto;
	uint16_t port;			      /* public TCP port (PR_PROTO_TCP) */
	uint32_t tcp_listener;		      /* slot, or DP_NIL */
	uint32_t ctrl;			      /* control connection slot, DP_NIL while offline */
	uint32_t idle, nidle;		      /* idle data connections (list through olink) */
	uint32_t wait_head, wait_tail, nwait; /* public connections waiting (olink) */
	uint32_t opens_asked;		      /* data connections asked for and not yet arrived */
	uint64_t asked_ms;		      /* when some were last asked for, or one arrived */
	uint64_t last_rx_ms, last_ping_ms, offline_since_ms;
	uint64_t requests, conns;
	uint64_t live, bytes_in, bytes_out; /* open public connections; bytes of closed ones */
	/* A session of the control plane (signed token): checked against the
	 * session table, closed when it expires or is revoked. */
	int managed;
	uint64_t expires;   /* unix s */
	uint64_t tok_epoch; /* the session epoch its token carries */
	uint8_t auth;	    /* enum pr_sess_auth: a protected URL */
	char auth_mac[65];  /* the session's credential verifier (pr_url_auth_mac) */
	uint8_t lt; /* a localtunnel client\'s session: raw sockets, no control connection */
	struct dp_acl *acl; /* allowed and refused client addresses, or NULL: anyone */
	/* Rate limits (docs/limits.md): the session's, or the relay's defaults
	 * for a static-token tunnel; enforced here, where all of the tunnel's
	 * traffic converges. key_id names the key whose shared request limit
	 * (key_req) is leased from Redis. */
	struct pr_limit lim_req, lim_bw, lim_tcp, key_req;
	char key_id[33];
	struct dp_window req_w, tcp_w;
	struct dp_bucket bw;
	uint64_t limited_req, limited_tcp, throttled; /* refusals and pauses */
	uint32_t refs;				      /* sockets pointing here */
	int linked;				      /* still in the registry */
	struct dp_tunnel *prev, *next;		      /* all tunnels */
};

/* Ownership: one per worker; dp_tunnels_free frees the tables and the
 * tunnels still in them (at exit, once every socket is closed). */
struct dp_tunnels {
	struct dp_tunnel **by_name, **by_sid; /* open addressing, tombstones */
	uint32_t cap, count, used;
	struct dp_tunnel *all;
};

int dp_tunnels_init(struct dp_tunnels *ts, uint32_t cap);
void dp_tunnels_free(struct dp_tunnels *ts);
/* Insert t (name and sid set, unique). Returns 0 or -ENOMEM. */
int dp_tunnels_add(struct dp_tunnels *ts, struct dp_tunnel *t);
/* Unlink t (the caller frees it when unreferenced). */
void dp_tunnels_remove(struct dp_tunnels *ts, struct dp_tunnel *t);
struct dp_tunnel *dp_tunnels_by_name(struct dp_tunnels *ts, const char *name, size_t len);
struct dp_tunnel *dp_tunnels_by_sid(struct dp_tunnels *ts, const char *sid, size_t len);

/* A socket (or a listener) starts pointing at t. */
static inline void dp_tunnel_ref(struct dp_tunnel *t)
{
	t->refs++;
}

/* A socket stops pointing at t: the last reference frees an unlinked tunnel. */
static inline void dp_tunnel_unref(struct dp_tunnel *t)
{
	if (--t->refs == 0 && !t->linked) {
		dp_acl_free(t->acl);
		free(t);
	}
}

#endif
