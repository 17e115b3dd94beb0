/*
 * dp_relay_int.h: what the files of sluice-relay's worker share, and nobody
 * else sees: the sockets' roles, the state of public and agent connections,
 * the worker (struct relay) and the relay all workers share (struct shared).
 * docs/architecture.md shows the files and a request's path through them.
 *
 * Sockets by role (dp_conn.kind):
 *   listeners   public HTTP, agents, admin, and one per TCP tunnel;
 *   K_PUBLIC    a browser's connection: its request side is parsed (routing,
 *               forwarding headers, prefix strip, body framing), its response
 *               side is raw bytes from the agent, never parsed or copied;
 *   K_PUBLIC_TCP a TCP tunnel's client: raw both ways;
 *   K_AGENT_NEW an agent connection before its first frame says what it is;
 *   K_CTRL      an agent's control connection (frames, heartbeats);
 *   K_DATA      a pre-opened data connection: idle in its tunnel's pool, or
 *               paired with one public connection for that connection's life;
 *   K_ADMIN     /health and /metrics.
 *
 * Workers: --workers threads, each with its own ring and its own
 * SO_REUSEPORT listeners (admin on worker 0 only). A tunnel lives on one
 * worker, the one its first control connection reached: its control
 * connection, data pool, TCP listener and public connections are sockets of
 * that worker, so bytes still move between two sockets of one ring without a
 * copy. The kernel spreads connections over workers blindly, so a worker
 * that reads a request head, a HELLO or a DATA_HELLO for a tunnel another
 * worker holds (dp_owners says which) hands the socket over: it stops
 * receiving, waits until nothing of it is in flight, exports it (fd, TLS
 * state, the bytes it read) into the owner's inbox and wakes it. Data
 * connections move once, when the pool fills; a public connection moves
 * once, before its first request; the request path itself never crosses
 * threads.
 */
#ifndef DP_RELAY_INT_H
#define DP_RELAY_INT_H

#include "dp_cluster.h"
#include "dp_conn.h"
#include "dp_http.h"
#include "dp_lease.h"
#include "dp_owners.h"
#include "dp_relay.h"
#include "dp_state.h"
#include "dp_timer.h"
#include "dp_tls.h"
#include "dp_tunnel.h"
#include "pr_msg.h"
#include "sl_buf.h"
#include "sl_bytes.h"
#include "sl_log.h"
#include "sl_net.h"
#include "sl_time.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Roles of a worker's sockets (dp_conn.kind). */
enum {
	K_LISTEN_HTTP = 1,
	K_LISTEN_HTTPS,
	K_LISTEN_AGENTS,
	K_LISTEN_ADMIN,
	K_LISTEN_TCP,
	K_LISTEN_LT,   /* a localtunnel session's port: its client's raw sockets */
	K_LISTEN_LINK, /* other relays' forwarded public connections */
	K_PUBLIC,
	K_PUBLIC_TCP,
	K_AGENT_NEW,
	K_CTRL,
	K_DATA,
	K_ADMIN,
	K_LINK, /* to another relay: a public connection forwarded to its tunnel's relay */
};

/* Phases of a public connection's request side. */
enum {
	P_HEAD = 0, /* reading a request head */
	P_BODY_CL,  /* forwarding body_left more bytes */
	P_BODY_CH,  /* forwarding a chunked body */
	P_RAW,	    /* after an upgrade, or a TCP tunnel: bytes pass untouched */
	P_DONE,	    /* an error response was queued; the connection closes after it */
	P_MOVING,   /* leaving for the worker that owns its tunnel */
	P_PARKED,   /* its head waits (in acc) for a lease, or for where its tunnel is */
};

#define MAX_HOPS      2 /* a socket handed over more often than this is refused (502) */
#define LINK_HOPS_MAX 2 /* relays a request may be forwarded through */

#define LINGER_MS 5000 /* after an error response, wait this long for the client to close */

/* HTTP errors the relay answers itself, in /metrics order. */
enum { E_400, E_404, E_408, E_431, E_501, E_502, E_503, E_401, E_403, E_302, E_429, E_COUNT };
extern const int dp_err_status[E_COUNT]; /* the status of each, by index */

/*
 * State of a public connection. Ownership: allocated at accept
 * (dp_pub_accept) or adoption (dp_relay_handoff.c), freed in dp_pub_closed
 * with its held segments, its head buffers (acc, orig); holds a counted
 * reference on t.
 */
struct pub {
	uint32_t slot;
	uint8_t phase;
	uint8_t tcp;
	uint8_t waiting; /* in t's waiter list */
	uint8_t ipv6;
	uint8_t https;
	uint8_t hops;  /* times it was handed between workers */
	int moving_to; /* P_MOVING: the worker */
	struct dp_tunnel *t;
	uint64_t epoch;
	uint64_t body_left;
	struct dp_chunked ch;
	struct sl_buf acc;     /* a head that arrived in pieces, or bytes a move carries */
	struct dp_chain held;  /* bytes queued before a data connection exists */
	struct dp_timer timer; /* in the worker's timed list: a deadline is set */
	int deadline_err;      /* E_408, E_502, or E_COUNT: close (lingering after an error) */
	uint64_t req_ns;       /* head forwarded, no response byte yet; 0: none */
	char ip[INET6_ADDRSTRLEN];
	uint8_t counted;    /* in t->live (started on a data connection) */
	uint8_t shared;	    /* this request came with a valid share link */
	uint8_t answered;   /* response bytes came from the agent (sent or still queued) */
	uint8_t replayable; /* idempotent and bodiless: may be sent again once, unanswered */
	uint8_t replays;
	uint64_t parked_ms;   /* P_PARKED since (monotonic ms); 0: not parked */
	uint32_t link;	      /* K_LINK slot this connection is forwarded on, or DP_NIL */
	uint8_t link_pending; /* came from another relay: its PR_LINK frame comes first */
	uint8_t link_hops;    /* relays it went through */
	char link_sid[33];    /* the session it was forwarded for */
	/* While it waits for a data connection of a cluster session's tunnel:
	 * its request head as it came (malloc'd, orig_len bytes), so that if
	 * the agent moves to another relay meanwhile the request follows. */
	char *orig;
	uint32_t orig_len;
};

/* One port of --lt-ports: its listener and the tunnel it feeds, if any.
 * Ownership: in the worker's lt.ports array, freed with the worker. */
struct lt_port {
	uint16_t port;
	uint32_t slot;
	struct dp_tunnel *t; /* not a counted reference: cleared when t ends */
};

/* A socket that reached an lt port before its session did. Ownership: the
 * worker's lt.orphans array holds it and its fd, closed unless adopted. */
struct lt_orphan {
	int fd;
	uint16_t port;
	uint64_t deadline_ms;
};

#define LT_ORPHANS_MAX 256  /* sockets waiting for their session at most (then refused) */
#define LT_ORPHAN_MS   3000 /* how long one waits */

/* An agent connection: the frame reader of K_AGENT_NEW and K_CTRL, the
 * tunnel of K_CTRL and K_DATA (a counted reference); also the head reader
 * of K_ADMIN. Ownership: freed in dp_agent_closed, with buf, which a data
 * connection drops after its DATA_HELLO: an idle data connection costs
 * this struct and a slot, not a frame buffer. */
struct agent {
	struct dp_tunnel *t;
	uint64_t epoch;
	int idle; /* K_DATA in t's pool */
	uint32_t len;
	char *buf; /* AGENT_BUF bytes (ADMIN_HEAD_MAX for K_ADMIN), or NULL */
	char ip[INET6_ADDRSTRLEN];
	/* Until its first frame (or, for /metrics, until it is done), a
	 * connection is on the worker's "fresh" list and closed at its
	 * deadline: a silent connection to the agent port holds nothing long. */
	uint32_t slot;
	struct dp_timer fresh;
	int moving_to; /* -1, or the worker it is being handed to */
	uint8_t hops;
	uint8_t raw; /* a localtunnel client's socket: no frames, bytes from the start */
};

#define AGENT_BUF      (PR_FRAME_HDR + PR_FRAME_MAX)
#define ADMIN_HEAD_MAX 8192 /* an admin request's head */
#define REASK_MS       1000 /* waiters asked for again after this long without an arrival */
#define LAT_BUCKETS    13   /* bounds of the first-byte histogram (dp_relay_admin.c) */

/* A worker's counters: every field a uint64_t but lat_sum_s (snap_add adds
 * them as an array). Ownership: a member of struct relay. */
struct metrics {
	uint64_t lat_count[LAT_BUCKETS + 1]; /* the last one: above every bound */
	double lat_sum_s;
	uint64_t requests, errors[E_COUNT], agents_refused, tcp_conns, misdirected_switch;
	uint64_t handoffs_out, handoffs_in, handoffs_failed;
	uint64_t bytes_in, bytes_out; /* public side, closed connections */
	uint64_t sessions_closed;     /* tunnels closed: session revoked or expired */
	uint64_t sessions_replaced;   /* agents fenced by a newer one of their name or session */
	uint64_t limited_req, limited_key, limited_tcp, throttles; /* rate limits */
	uint64_t links_out, links_in, links_refused, link_failures, parked_cluster, replays;
	uint64_t offline; /* requests for a tunnel whose agent is not connected (a 502 each) */
	uint64_t reasks;  /* waiters asked for again: data connections lost on their way */
	uint64_t hsts_added,
		hsts_skipped; /* --hsts: first responses given it, or not (no status line) */
};

/*
 * A socket on its way to the worker that owns its tunnel. Ownership: made by
 * the sender, owned by the receiver's inbox once pushed, freed by the
 * receiver after adopting (or dropping) it.
 */
struct handoff {
	struct handoff *next;
	struct dp_export ex;
	uint8_t kind; /* K_PUBLIC or K_AGENT_NEW */
	uint8_t https, ipv6, hops, link_hops;
	char ip[INET6_ADDRSTRLEN];
	uint32_t len;
	char bytes[]; /* read and not consumed: a request head onward, or agent frames */
};

/* What a worker shows /metrics on worker 0, copied at every turn of its
 * loop. Ownership: a value, copied under the worker's snap_mu. */
struct snapshot {
	struct metrics m;
	struct dp_io_stats io;
	struct dp_ring_stats ring;
	struct dp_tls_stats tls;
	uint32_t tunnels, agents, live;
};

/* Ownership: made by dp_relay_run for its workers (on its stack), its
 * followers stopped and its tables freed when they are all done. */
struct shared {
	const struct dp_relay_config *cfg;
	struct dp_owners owners;
	struct relay **w;
	int nworkers;
	volatile sig_atomic_t *stop, *reload;
	struct dp_tls_server tls; /* when tls_on (cfg->cert set); reloaded by worker 0 */
	struct dp_tls_stats tls_reloads;
	int tls_accel; /* 1: TLS records by libcrypto (dp_tls_accel.h); set at start */
	int tls_on;
	atomic_int abort; /* a worker failed to start: everyone stops */
	/* Start-up: workers count themselves ready under ready_mu and wait for
	 * expected (or abort) before serving. */
	pthread_mutex_t ready_mu;
	pthread_cond_t ready_cv;
	int nready, expected;
	struct dp_state state; /* sessions followed from Redis, when cfg->redis */
	int state_on;
	struct dp_leases leases; /* API keys' shared limits, when cfg->redis */
	int leases_on;
	struct dp_cluster cluster; /* registry and tunnel ownership, when cfg->link too */
	int cluster_on;
};

/* A worker's inbox: handoffs from other workers (dp_relay_handoff.c).
 * Ownership: the handoffs in it are the worker's once pushed. */
struct inbox {
	pthread_mutex_t mu;
	struct handoff *head; /* newest first */
	int closed;	      /* the worker stopped taking them (its eventfd may be gone) */
	int wake_ready;	      /* the eventfd exists: the followers may wake the worker */
};

/* Worker 0, with --lt-ports: a listener per port, bound at start so a
 * localtunnel client never races the session's arrival; sockets that come
 * before their session wait a little (orphans). Ownership: the arrays are
 * the worker's, freed (and orphans' fds closed) by relay_delete. */
struct lt_ports {
	struct lt_port *ports;
	uint32_t nports;
	struct lt_orphan *orphans;
	uint32_t norphans;
};

/*
 * One worker: its ring and sockets, its tunnels, its timers and queues.
 * Ownership: made by relay_new, freed by relay_delete once every worker is
 * joined; what its loop holds (sockets, tunnels, queues) is released when
 * the loop ends (worker_loop).
 */
struct relay {
	struct dp_io io;
	const struct dp_relay_config *cfg;
	struct shared *sh;
	int idx; /* worker index */
	pthread_t thread;
	int err; /* the worker loop's result */
	struct dp_tunnels tunnels;
	uint32_t nagents;				     /* tunnels with a control connection */
	uint32_t l_http, l_https, l_agents, l_admin, l_link; /* listeners' slots */
	int http_port;
	uint16_t next_tcp; /* where the search for a TCP tunnel's port starts */
	int draining;
	struct dp_timers timed;	   /* public connections with a deadline */
	struct dp_timers fresh;	   /* agent and admin connections not yet identified */
	struct dp_queue moving;	   /* sockets waiting to be exported (slot, generation) */
	struct dp_queue throttled; /* sockets paused by a bandwidth limit (slot, generation) */
	struct dp_queue parked;	   /* P_PARKED public connections (slot, generation) */
	/* Periodic work: when it is next due, and the generations of the
	 * followers' state it last acted on. */
	uint64_t now_ms, next_sweep_ms, next_shed_ms, next_park_ms, next_counts_ms;
	uint64_t lease_gen_seen, cluster_gen_seen, limits_seen, revoked_seen, changed_seen;
	int shed_done; /* shed since the last public connection */
	struct inbox inbox;
	struct lt_ports lt;
	/* Under snap_mu: this worker's figures for /metrics (snap) and its
	 * sessions' counters for the state follower's report (counts, rebuilt
	 * every second). */
	pthread_mutex_t snap_mu;
	struct snapshot snap;
	struct dp_state_counts *counts;
	size_t ncounts, counts_cap;
	struct metrics m;
	char target[DP_HTTP_HEAD_MAX]; /* a rewritten request target */
	const char *cur_raw;	       /* the head on_request is routing, as it came */
	uint32_t cur_raw_len;
	char head[DP_HTTP_HEAD_MAX + 8192]; /* the upstream head being built */
};

/* Where a request goes (dp_relay_route.c). */
enum dp_route_kind {
	DP_ROUTE_HERE = 0, /* t: a tunnel of this worker */
	DP_ROUTE_WORKER,   /* worker: another worker of this relay holds it */
	DP_ROUTE_RELAY,	   /* addr: another relay of the cluster holds it (session sid) */
	DP_ROUTE_WAIT,	   /* its place is being asked, or its agent is between relays: park */
	DP_ROUTE_OFFLINE,  /* a tunnel or session that exists, with no agent now: 502 page */
	DP_ROUTE_UNKNOWN,  /* nobody holds what the request names: 404 */
};

/* A request's route. name, id and rest point into the request head (or
 * id into sid), valid while the head is routed. Ownership: a value on the
 * router's stack. */
struct dp_route {
	enum dp_route_kind kind;
	struct dp_tunnel *t;   /* HERE */
	int worker;	       /* WORKER */
	const char *name, *id; /* the name Host gives, or the session id (path, domain) */
	size_t name_len, id_len;
	const char *rest; /* the target the app sees */
	size_t rest_len;
	int custom, verified;	  /* Host is a session's custom domain; it passed its challenge */
	char sid[PR_SESSION_MAX]; /* RELAY: the session; a custom domain's id */
	char tname[64];		  /* OFFLINE without t: the session's name, from the table */
	socklen_t addr_len;	  /* RELAY */
	struct sockaddr_storage addr; /* last: dp_route_find clears what comes before */
};

/* The time of this turn of the loop, in ms (dp_io.now_ns: one clock read
 * per turn, not per request). */
static inline uint64_t dp_turn_ms(const struct relay *r)
{
	return r->io.now_ns / 1000000;
}

/* Secrets compared in constant time. */
static inline int dp_ct_equal(const char *a, const char *b)
{
	return sl_ct_equal(a, strlen(a), b, strlen(b));
}

/* ---- what each file offers the others ---- */

/* dp_relay_io.c: the engine's callbacks, by socket role */
extern const struct dp_io_ops dp_relay_ops;

/* dp_relay_pub.c: the request side of public connections */
void dp_pub_accept(struct relay *r, int fd, int tcp, int https, struct dp_tunnel *t, int link);
/* Request-side bytes of p, as segment seg (taken). */
void dp_pub_data(struct relay *r, struct pub *p, uint32_t seg);
/* Queue seg toward p's data connection, or hold it until there is one. */
void dp_pub_hold_or_send(struct relay *r, struct pub *p, uint32_t seg);
/* Queue error e (E_*) with the extra headers and a text body, then close. */
void dp_pub_error(struct relay *r, struct pub *p, int e, const char *extra, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
/* A keep-alive request for another tunnel: let go of the current one. */
void dp_pub_detach(struct relay *r, struct pub *p);
void dp_pub_deadline(struct relay *r, struct pub *p, uint32_t ms, int err);
void dp_pub_untime(struct relay *r, struct pub *p);
void dp_pub_expire(struct relay *r);
void dp_pub_closed(struct relay *r, struct dp_conn *s);
int dp_pub_peer_lost(struct dp_io *io, uint32_t c, int eof);
uint32_t dp_pub_forwarded(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len);

/* dp_relay_route.c: where a request goes */
/* The route of the request p sent (head q): its kind, also in rt->kind. */
enum dp_route_kind dp_route_find(struct relay *r, struct pub *p, const struct dp_http_req *q,
				 struct dp_route *rt);
/* rt's tunnel is here but its agent is not: RELAY, WAIT or OFFLINE. */
enum dp_route_kind dp_route_away(struct relay *r, struct pub *p, struct dp_route *rt);
/* The worker holding session sid or name (either may be NULL) when it is
 * not this one, else -1. */
int dp_route_worker_of(struct relay *r, const char *sid, const char *name);

/* dp_relay_access.c: who may use a routed tunnel */
/* 0 to go on, or -EACCES once p was answered (403, 401, a share link's 302). */
int dp_access_check(struct relay *r, struct pub *p, const struct dp_route *rt,
		    const struct dp_http_req *q);
/* The first of those checks, which needs no tunnel: an unverified custom
 * domain serves only its challenge path. 0, or -EACCES once p got its 403. */
int dp_access_domain(struct relay *r, struct pub *p, const struct dp_route *rt,
		     const struct dp_http_req *q);

/* dp_relay_limits.c: rate limits and parking */
/* A request waits this long for a lease, then is decided on the local
 * share. Longer than the lease thread's Redis timeout (500 ms) and its
 * reconnection, so while Redis answers no request is decided locally: the
 * relays never let more through than the key's limit; a Redis that stopped
 * answering is down, and then the local share is the rule anyway. */
#define PARK_MAX_MS 1500
enum dp_limit_verdict {
	DP_LIMIT_PASS = 0, /* within every limit */
	DP_LIMIT_WAIT,	   /* the key's lease is being fetched: park the request */
	DP_LIMIT_REFUSED,  /* over a limit: a 429 was queued */
};
enum dp_limit_verdict dp_limit_request(struct relay *r, struct pub *p, struct dp_tunnel *t,
				       int waited);
/* A new TCP client of t: 0 when its connection limit lets it in, else -EAGAIN. */
int dp_limit_tcp(struct relay *r, struct dp_tunnel *t);
void dp_limit_meter(struct relay *r, uint32_t c, uint32_t len);
void dp_limit_unthrottle(struct relay *r);
/* Hold p, reads paused and its head kept, until dp_park_run routes it again. */
void dp_park(struct relay *r, struct pub *p);
void dp_park_run(struct relay *r);

/* dp_relay_pool.c: the agent's data connections, idle and waited for */
void dp_pool_ask(struct relay *r, struct dp_tunnel *t);
void dp_pool_reask(struct relay *r, struct dp_tunnel *t);
void dp_pool_acquire(struct relay *r, struct pub *p);
void dp_pool_ready(struct relay *r, struct dp_tunnel *t, uint32_t d);
void dp_pool_keep_head(struct relay *r, struct pub *p);
void dp_pool_unlink_waiter(struct relay *r, struct pub *p);
void dp_pool_close_idle(struct relay *r, struct dp_tunnel *t);
void dp_pool_remove_idle(struct relay *r, struct dp_tunnel *t, uint32_t c);
int dp_pool_requeue(struct relay *r, struct pub *p);
void dp_pool_fail_waiters(struct relay *r, struct dp_tunnel *t, int reroute);

/* dp_relay_link.c: requests forwarded between relays of a cluster */
int dp_link_forward(struct relay *r, struct pub *p, const struct sockaddr_storage *addr,
		    socklen_t len, const char *sid);
int dp_link_held_to_acc(struct relay *r, struct pub *p);
void dp_link_hello(struct relay *r, struct pub *p, uint32_t seg);
void dp_link_on_connect(struct dp_io *io, uint32_t c, int res);

/* dp_relay_agent.c: agents' control and data connections */
void dp_agent_accept(struct relay *r, int fd, int kind);
void dp_agent_fresh_link(struct relay *r, struct agent *a, uint32_t c);
void dp_agent_expire(struct relay *r);
int dp_agent_frames(struct relay *r, uint32_t c);
void dp_agent_data(struct relay *r, uint32_t c, uint32_t seg);
void dp_agent_closed(struct relay *r, uint32_t c, struct dp_conn *s);

/* dp_relay_tunnels.c: a tunnel's life on its worker */
struct dp_tunnel *dp_tunnel_open(struct relay *r, const struct pr_msg *m,
				 const struct pr_session *rec, int *code, int *elsewhere);
void dp_tunnel_url(struct relay *r, struct dp_tunnel *t, char *url, size_t cap);
void dp_tunnel_set_limits(struct dp_tunnel *t, const struct pr_session *rec);
void dp_tunnel_offline(struct relay *r, struct dp_tunnel *t);
void dp_tunnel_kill(struct relay *r, struct dp_tunnel *t, enum pr_code code, const char *why);
void dp_tunnel_release(struct relay *r, struct dp_tunnel *t);

/* dp_relay_handoff.c: sockets handed to the worker that owns their tunnel */
void dp_move_begin(struct relay *r, uint32_t c);
void dp_move_public(struct relay *r, struct pub *p, int w);
void dp_move_run(struct relay *r);
void dp_inbox_drain(struct relay *r);
void dp_inbox_close(struct relay *r);
void dp_wake_workers(void *ud);

/* dp_relay_admin.c: /health, /metrics, /drain */
void dp_admin_data(struct relay *r, uint32_t c, uint32_t seg);
void dp_admin_publish(struct relay *r);
void dp_admin_latency(struct relay *r, double ms);

/* dp_relay_lt.c: localtunnel clients' raw sockets */
int dp_lt_listen(struct relay *r);
void dp_lt_accepted(struct relay *r, int fd, struct lt_port *lp);
void dp_lt_adopt_orphans(struct relay *r);
void dp_lt_open_sessions(struct relay *r);
void dp_lt_forget(struct relay *r, struct dp_tunnel *t);

/* dp_relay_sweep.c: periodic work, and the session table's changes */
void dp_sweep_tunnels(struct relay *r);
void dp_sweep_sessions(struct relay *r);
void dp_sweep_publish_counts(struct relay *r);
size_t dp_sweep_collect_counts(void *ud, struct dp_state_counts *out, size_t cap);

#endif
