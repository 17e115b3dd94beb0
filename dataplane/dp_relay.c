/*
 * dp_relay.c: sluice-relay's worker (see dp_relay.h).
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
#include "dp_relay.h"
#include "dp_conn.h"
#include "dp_cluster.h"
#include "dp_http.h"
#include "dp_lease.h"
#include "dp_state.h"
#include "dp_tls.h"
#include "dp_tunnel.h"
#include "pr_msg.h"
#include "pr_token.h"
#include "sl_bytes.h"
#include "sl_cli.h"
#include "sl_heap.h"
#include "sl_log.h"
#include "sl_net.h"
#include "sl_time.h"

#include <arpa/inet.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/coding.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

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

#define MAX_HOPS 2 /* a socket handed over more often than this is refused (502) */

#define LINGER_MS 5000 /* after an error response, wait this long for the client to close */

/* HTTP errors the relay answers itself, in /metrics order. */
enum { E_400, E_404, E_408, E_431, E_501, E_502, E_503, E_401, E_403, E_302, E_429, E_COUNT };
static const int err_status[E_COUNT] = {400, 404, 408, 431, 501, 502, 503, 401, 403, 302, 429};

/*
 * State of a public connection. Ownership: allocated at accept, freed in
 * on_close with its held segments and head buffer; holds a reference on t.
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
	char *acc; /* a head that arrived in pieces */
	uint32_t acc_len, acc_cap;
	struct dp_chain held;	   /* bytes queued before a data connection exists */
	uint64_t deadline_ms;	   /* 0: none */
	int deadline_err;	   /* E_408 or E_502 */
	uint64_t req_ns;	   /* head forwarded, no response byte yet; 0: none */
	struct pub *tprev, *tnext; /* timed list */
	int timed;
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

/* One port of --lt-ports: its listener and the tunnel it feeds, if any. */
struct lt_port {
	uint16_t port;
	uint32_t slot;
	struct dp_tunnel *t; /* not a counted reference: cleared when t ends */
};

/* A socket that reached an lt port before its session did. */
struct lt_orphan {
	int fd;
	uint16_t port;
	uint64_t deadline_ms;
};

#define LT_ORPHANS_MAX 256
#define LT_ORPHAN_MS   3000

/* An agent connection: the frame reader of K_AGENT_NEW and K_CTRL, the
 * tunnel of K_CTRL and K_DATA (a counted reference). Freed in on_close, with
 * buf, which a data connection drops after its DATA_HELLO: an idle data
 * connection costs this struct and a slot, not a frame buffer. */
struct agent {
	struct dp_tunnel *t;
	uint64_t epoch;
	int idle; /* K_DATA in t's pool */
	uint32_t len;
	char *buf; /* AGENT_BUF bytes, or NULL */
	char ip[INET6_ADDRSTRLEN];
	/* Until its first frame (or, for /metrics, until it is done), a
	 * connection is on the relay's "fresh" list and closed at deadline_ms:
	 * a silent connection to the agent port holds nothing for long. */
	uint32_t slot;
	uint64_t deadline_ms;
	struct agent *fprev, *fnext;
	int fresh;
	int moving_to; /* -1, or the worker it is being handed to */
	uint8_t hops;
	uint8_t raw; /* a localtunnel client's socket: no frames, bytes from the start */
};

#define AGENT_BUF      (PR_FRAME_HDR + PR_FRAME_MAX)
#define ADMIN_HEAD_MAX 8192 /* an admin request's head */

/* Upper bounds (ms) of the first-response-byte histogram's buckets. */
static const double lat_bounds_ms[] = {0.5, 1,	 2.5, 5,    10,	  25,	50,
				       100, 250, 500, 1000, 2500, 10000};
#define LAT_BUCKETS (sizeof(lat_bounds_ms) / sizeof(lat_bounds_ms[0]))

struct metrics {
	uint64_t lat_count[LAT_BUCKETS + 1]; /* the last one: above every bound */
	double lat_sum_s;
	uint64_t requests, errors[E_COUNT], agents_refused, tcp_conns, misdirected_switch;
	uint64_t handoffs_out, handoffs_in, handoffs_failed;
	uint64_t bytes_in, bytes_out; /* public side, closed connections */
	uint64_t sessions_closed;     /* tunnels closed: session revoked or expired */
	uint64_t limited_req, limited_key, limited_tcp, throttles; /* rate limits */
	uint64_t links_out, links_in, links_refused, link_failures, parked_cluster, replays;
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

/* What a worker shows /metrics on worker 0, copied at every turn of its loop. */
struct snapshot {
	struct metrics m;
	struct dp_io_stats io;
	struct dp_ring_stats ring;
	struct dp_tls_stats tls;
	uint32_t tunnels, agents, live;
};

struct relay;

/* Ownership: made by dp_relay_run for its workers, freed when they are all done. */
struct shared {
	const struct dp_relay_config *cfg;
	struct dp_owners owners;
	struct relay **w;
	int nworkers;
	volatile sig_atomic_t *stop, *reload;
	struct dp_tls_server tls; /* when tls_on (cfg->cert set); reloaded by worker 0 */
	struct dp_tls_stats tls_reloads;
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

struct relay {
	struct dp_io io;
	const struct dp_relay_config *cfg;
	struct shared *sh;
	int idx;	  /* worker index */
	uint32_t nagents; /* tunnels with a control connection */
	pthread_t thread;
	int err;		   /* the worker loop's result */
	struct dp_queue moving;	   /* sockets waiting to be exported (slot, generation) */
	struct dp_queue throttled; /* sockets paused by a bandwidth limit (slot, generation) */
	struct dp_queue parked;	   /* P_PARKED public connections (slot, generation) */
	uint64_t lease_gen_seen, cluster_gen_seen, limits_seen, next_park_ms;
	/* The inbox: handoffs from other workers, under inbox_mu; closed once
	 * this worker stops taking them. */
	pthread_mutex_t inbox_mu;
	struct handoff *inbox;
	int inbox_closed;
	int wake_ready; /* under inbox_mu: the eventfd exists (the follower may wake us) */
	pthread_mutex_t snap_mu;
	struct snapshot snap;
	/* Under snap_mu: the counters of this worker's sessions, rebuilt every
	 * second for the state follower's report. */
	struct dp_state_counts *counts;
	size_t ncounts, counts_cap;
	uint64_t next_counts_ms, revoked_seen, changed_seen;
	/* Worker 0, with --lt-ports: a listener per port, bound at start so a
	 * localtunnel client never races the session's arrival; sockets that
	 * come before their session wait a little (lt_orphans). */
	struct lt_port *lt_ports;
	uint32_t nlt_ports;
	struct lt_orphan *lt_orphans;
	uint32_t nlt_orphans;
	struct dp_tunnels tunnels;
	uint32_t l_http, l_https, l_agents, l_admin, l_link;
	struct dp_tls_server tls;      /* when cfg->cert is set */
	struct dp_tls_stats tls_quiet; /* reload counts of workers other than 0 */
	int tls_on;
	uint64_t now_ms, next_sweep_ms;
	uint64_t next_shed_ms; /* shed_buffers() */
	int shed_done;	       /* shed since the last public connection */
	int http_port;
	uint16_t next_tcp;
	struct pub *timed;
	struct agent *fresh; /* agent and admin connections not yet identified */
	int draining;
	struct metrics m;
	char target[DP_HTTP_HEAD_MAX]; /* a rewritten request target */
	const char *cur_raw;	       /* the head on_request is routing, as it came */
	uint32_t cur_raw_len;
	char head[DP_HTTP_HEAD_MAX + 8192]; /* the upstream head being built */
};

/* The kernel's CSPRNG does not fail for small reads; if it ever did, a
 * predictable session id or key would be worse than stopping. */
static void random_alnum(char *out, size_t n)
{
	if (pr_random_alnum(out, n) < 0)
		abort();
}

static int ct_equal(const char *a, const char *b)
{
	return sl_ct_equal(a, strlen(a), b, strlen(b));
}

/* ---- tunnel references ---- */

static void tunnel_ref(struct dp_tunnel *t)
{
	t->refs++;
}

static void tunnel_unref(struct dp_tunnel *t)
{
	if (--t->refs == 0 && !t->linked) {
		free(t->acl);
		free(t);
	}
}

/* ---- timed public connections (slowloris, waiting for a data connection) ---- */

static void untime(struct relay *r, struct pub *p)
{
	if (!p->timed)
		return;
	if (p->tprev)
		p->tprev->tnext = p->tnext;
	else
		r->timed = p->tnext;
	if (p->tnext)
		p->tnext->tprev = p->tprev;
	p->timed = 0;
	p->tprev = p->tnext = NULL;
	p->deadline_ms = 0;
}

static void set_deadline(struct relay *r, struct pub *p, uint32_t ms, int err)
{
	untime(r, p);
	p->deadline_ms = r->now_ms + ms;
	p->deadline_err = err;
	p->timed = 1;
	p->tnext = r->timed;
	if (r->timed)
		r->timed->tprev = p;
	r->timed = p;
}

/* ---- errors to the public client ---- */

/* Queue an error response on the public connection and close after it. */
static void pub_error(struct relay *r, struct pub *p, int e, const char *extra, const char *fmt,
		      ...) __attribute__((format(printf, 5, 6)));

static void pub_error(struct relay *r, struct pub *p, int e, const char *extra, const char *fmt,
		      ...)
{
	char body[512], resp[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	r->m.errors[e]++;
	sl_debug("client %s: %d %s", p->ip, err_status[e], body);
	p->phase = P_DONE;
	if (dp_c(&r->io, p->slot)->peer != DP_NIL || p->tcp) {
		/* Mid-stream (or raw TCP): an HTTP error would interleave with the
		 * app's bytes, so the connection just closes. */
		uint32_t peer = dp_c(&r->io, p->slot)->peer;

		untime(r, p);
		if (peer != DP_NIL)
			dp_conn_close(&r->io, peer);
		dp_conn_close(&r->io, p->slot);
		return;
	}
	n = dp_http_response(err_status[e], extra, body, resp, sizeof(resp));
	if (n > 0)
		dp_conn_send(&r->io, p->slot, resp, (uint32_t)n);
	dp_conn_shutdown(&r->io, p->slot);
	/* Read and drop what the client still sends until it closes (so the
	 * response is not lost to a reset), for at most LINGER_MS. */
	set_deadline(r, p, LINGER_MS, E_COUNT);
	dp_conn_recv(&r->io, p->slot);
}

/* ---- rate limits (docs/limits.md) ---- */

/* 429 for a request over limit l, with the IETF RateLimit headers: reset_ms
 * is when the window makes room again. */
static void pub_429(struct relay *r, struct pub *p, const struct pr_limit *l, uint64_t reset_ms,
		    const char *what)
{
	unsigned long long reset = (reset_ms + 999) / 1000;
	char extra[400];

	if (reset == 0)
		reset = 1;
	snprintf(extra, sizeof(extra),
		 "Retry-After: %llu\r\nRateLimit-Limit: %llu\r\nRateLimit-Remaining: 0\r\n"
		 "RateLimit-Reset: %llu\r\nRateLimit-Policy: %llu;w=%u\r\n",
		 reset, (unsigned long long)l->limit, reset, (unsigned long long)l->limit,
		 l->window);
	pub_error(r, p, E_429, extra,
		  "rate limit: %s allows %llu requests per %u s; retry in %llu s\n", what,
		  (unsigned long long)l->limit, l->window, reset);
}

/* The time of this turn of the loop, in ms (dp_io.now_ns: one clock read
 * per turn, not per request). */
static uint64_t turn_ms(const struct relay *r)
{
	return r->io.now_ns / 1000000;
}

/*
 * The request limits of t for one request: the tunnel's own, exact here,
 * then its key's, shared by relays through leases. 0 to go on, -1 after a
 * 429, 1 when the request must wait for a lease (parked).
 */
static int request_limits(struct relay *r, struct pub *p, struct dp_tunnel *t, int waited)
{
	uint64_t now = turn_ms(r), reset;
	uint32_t win = t->lim_req.window * 1000;

	if (t->key_req.limit && r->sh->leases_on && t->key_id[0]) {
		switch (dp_lease_take(&r->sh->leases, t->key_id, &t->key_req, waited, &reset)) {
		case DP_LEASE_WAIT: return 1;
		case DP_LEASE_OVER:
			r->m.limited_key++;
			pub_429(r, p, &t->key_req, reset, "this API key");
			return -1;
		default: break;
		}
	}
	if (t->lim_req.limit && !dp_window_take(&t->req_w, t->lim_req.limit, win, now, 1)) {
		r->m.limited_req++;
		t->limited_req++;
		pub_429(r, p, &t->lim_req, dp_window_reset_ms(&t->req_w, win, now), "this tunnel");
		return -1;
	}
	return 0;
}

/* A new TCP client of t: 1 when its connection limit lets it in. */
static int tcp_limit_ok(struct relay *r, struct dp_tunnel *t)
{
	if (t->lim_tcp.limit == 0 ||
	    dp_window_take(&t->tcp_w, t->lim_tcp.limit, t->lim_tcp.window * 1000, turn_ms(r), 1))
		return 1;
	r->m.limited_tcp++;
	t->limited_tcp++;
	return 0;
}

static struct dp_tunnel *conn_tunnel(const struct dp_conn *s)
{
	if (s->owner == NULL)
		return NULL;
	if (s->kind == K_PUBLIC || s->kind == K_PUBLIC_TCP)
		return ((struct pub *)s->owner)->t;
	if (s->kind == K_DATA)
		return ((struct agent *)s->owner)->t;
	return NULL;
}

/* len bytes of t's traffic came in on c: over the bandwidth limit, c stops
 * reading until the bucket allows more (slowed, never cut). */
static void meter(struct relay *r, uint32_t c, uint32_t len)
{
	struct dp_conn *s = dp_c(&r->io, c);
	struct dp_tunnel *t = conn_tunnel(s);

	if (t == NULL || t->lim_bw.limit == 0 ||
	    dp_bucket_spend(&t->bw, t->lim_bw.limit, t->lim_bw.window * 1000, turn_ms(r), len) ==
		    0 ||
	    (s->flags & DP_C_THROTTLE))
		return;
	r->m.throttles++;
	t->throttled++;
	dp_conn_throttle(&r->io, c, 1);
	dp_queue_push(&r->throttled, dp_ud(c, s->gen, DP_OP_NONE));
}

/* Sockets whose tunnel's bucket allows more read again. */
static void unthrottle(struct relay *r)
{
	uint64_t now = sl_mono_ms();
	uint32_t keep = 0;

	for (uint32_t i = 0; i < r->throttled.len; i++) {
		uint64_t ud = r->throttled.v[i];
		uint32_t c = dp_ud_slot(ud);
		struct dp_conn *s = dp_c(&r->io, c);
		struct dp_tunnel *t;

		if (s->gen != dp_ud_gen(ud) || s->fd < 0 || !(s->flags & DP_C_THROTTLE))
			continue;
		t = conn_tunnel(s);
		if (t && t->lim_bw.limit &&
		    dp_bucket_wait_ms(&t->bw, t->lim_bw.limit, t->lim_bw.window * 1000, now) > 0) {
			r->throttled.v[keep++] = ud;
			continue;
		}
		dp_conn_throttle(&r->io, c, 0);
	}
	r->throttled.len = keep;
}

static void pub_data(struct relay *r, struct pub *p, uint32_t seg);

/* A parked request: its head again, now that a lease came (or it waited
 * long enough to be decided locally). */
static void unpark(struct relay *r, struct pub *p)
{
	uint32_t seg = dp_seg_copy(&r->io.r, p->acc, p->acc_len);

	p->phase = P_HEAD;
	p->acc_len = 0;
	if (seg == DP_NIL) {
		pub_error(r, p, E_503, NULL, "relay out of memory\n");
		return;
	}
	pub_data(r, p, seg);
	if ((p->phase == P_HEAD || p->phase == P_BODY_CL || p->phase == P_BODY_CH ||
	     p->phase == P_RAW) &&
	    !p->waiting)
		dp_conn_recv(&r->io, p->slot);
}

/* A request waits this long for a lease, then is decided on the local
 * share. Longer than the lease thread's Redis timeout (500 ms) and its
 * reconnection, so while Redis answers no request is decided locally: the
 * relays never let more through than the key's limit; a Redis that stopped
 * answering is down, and then the local share is the rule anyway. */
#define PARK_MAX_MS 1500

static void run_parked(struct relay *r)
{
	uint64_t gen = r->sh->leases_on ? atomic_load(&r->sh->leases.gen) : 0;
	uint64_t cgen = r->sh->cluster_on ? atomic_load(&r->sh->cluster.gen) : 0;
	uint32_t n = r->parked.len;
	uint64_t *v;

	if (n == 0 || (gen == r->lease_gen_seen && cgen == r->cluster_gen_seen &&
		       r->now_ms < r->next_park_ms))
		return;
	r->lease_gen_seen = gen;
	r->cluster_gen_seen = cgen;
	r->next_park_ms = r->now_ms + 20;
	/* unpark() may park again: work on a copy. */
	if ((v = malloc(n * sizeof(*v))) == NULL)
		return;
	memcpy(v, r->parked.v, n * sizeof(*v));
	r->parked.len = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct dp_conn *s = dp_c(&r->io, dp_ud_slot(v[i]));
		struct pub *p = s->owner;

		if (s->gen != dp_ud_gen(v[i]) || s->fd < 0 || s->kind != K_PUBLIC || p == NULL ||
		    p->phase != P_PARKED)
			continue;
		unpark(r, p);
	}
	free(v);
}

/* ---- data connections ---- */

/* Ask the agent for more data connections than are already on their way. */
static void ask_for_data(struct relay *r, struct dp_tunnel *t)
{
	struct pr_msg m = {.type = PR_OPEN};

	if (t->ctrl == DP_NIL || t->opens_asked >= t->nwait)
		return;
	m.count = t->nwait - t->opens_asked;
	t->opens_asked += m.count;
	dp_conn_send_msg(&r->io, t->ctrl, &m);
}

/* Join public connection p with data connection d: START, then held bytes. */
static void attach(struct relay *r, struct pub *p, uint32_t d)
{
	struct pr_msg m = {.type = PR_START};
	struct agent *a = dp_c(&r->io, d)->owner;
	uint32_t seg;

	a->idle = 0;
	snprintf(m.text, sizeof(m.text), "%s", p->ip);
	if (!a->raw)
		dp_conn_send_msg(&r->io, d, &m);
	dp_conn_pair(&r->io, p->slot, d);
	while ((seg = dp_chain_pop(&r->io.r, &p->held)) != DP_NIL)
		dp_conn_send_seg(&r->io, d, seg);
	untime(r, p);
	p->t->conns++;
	p->t->live++;
	p->counted = 1;
	/* A TCP client's bytes flow only once there is somewhere to send them;
	 * an HTTP client was paused while it waited; one that already sent its
	 * FIN gets it passed on. */
	if (dp_c(&r->io, p->slot)->flags & DP_C_EOF)
		dp_conn_shutdown(&r->io, d);
	else
		dp_conn_recv(&r->io, p->slot);
}

static uint32_t pop_idle(struct relay *r, struct dp_tunnel *t)
{
	uint32_t d = t->idle;

	if (d != DP_NIL) {
		t->idle = dp_c(&r->io, d)->olink;
		t->nidle--;
		dp_c(&r->io, d)->olink = DP_NIL;
	}
	return d;
}

static void unlink_waiter(struct relay *r, struct pub *p)
{
	struct dp_tunnel *t = p->t;
	uint32_t *pp = &t->wait_head, prev = DP_NIL;

	while (*pp != DP_NIL && *pp != p->slot) {
		prev = *pp;
		pp = &dp_c(&r->io, *pp)->olink;
	}
	if (*pp == DP_NIL)
		return;
	*pp = dp_c(&r->io, p->slot)->olink;
	if (t->wait_tail == p->slot)
		t->wait_tail = prev;
	t->nwait--;
	p->waiting = 0;
}

/* Keep the head on_request is routing, as it came, in p->orig (nothing on
 * ENOMEM: the request then cannot follow a moving agent, and gets a 502). */
static void keep_head(struct relay *r, struct pub *p)
{
	free(p->orig);
	p->orig = NULL;
	if (r->cur_raw && (p->orig = malloc(r->cur_raw_len)) != NULL) {
		memcpy(p->orig, r->cur_raw, r->cur_raw_len);
		p->orig_len = r->cur_raw_len;
	}
}

/* Give p a data connection now, or queue it and ask the agent for one. */
static void acquire_data(struct relay *r, struct pub *p)
{
	struct dp_tunnel *t = p->t;
	uint32_t d = pop_idle(r, t);

	if (d != DP_NIL) {
		attach(r, p, d);
		return;
	}
	p->waiting = 1;
	dp_c(&r->io, p->slot)->olink = DP_NIL;
	if (t->wait_tail == DP_NIL)
		t->wait_head = p->slot;
	else
		dp_c(&r->io, t->wait_tail)->olink = p->slot;
	t->wait_tail = p->slot;
	t->nwait++;
	/* Hold the client until there is a connection to send its bytes to. */
	dp_conn_pause(&r->io, p->slot);
	set_deadline(r, p, r->cfg->open_timeout_ms, E_502);
	if (r->sh->cluster_on && t->managed && p->orig == NULL)
		keep_head(r, p);
	ask_for_data(r, t);
}

/* A data connection arrived for t: hand it to the first waiter or pool it. */
static void data_ready(struct relay *r, struct dp_tunnel *t, uint32_t d)
{
	struct agent *a = dp_c(&r->io, d)->owner;

	if (t->opens_asked)
		t->opens_asked--;
	if (t->wait_head != DP_NIL) {
		struct pub *p = dp_c(&r->io, t->wait_head)->owner;

		unlink_waiter(r, p);
		attach(r, p, d);
		return;
	}
	a->idle = 1;
	dp_c(&r->io, d)->olink = t->idle;
	t->idle = d;
	t->nidle++;
}

/* ---- routing ---- */

/* "<name>.<domain>" -> tunnel; NULL when the host is not under the domain. */
static struct dp_tunnel *route_host(struct relay *r, const struct dp_http_req *q, const char **name,
				    size_t *name_len)
{
	size_t dl = strlen(r->cfg->domain);

	if (q->host == NULL || q->host_len <= dl + 1)
		return NULL;
	if (q->host[q->host_len - dl - 1] != '.' ||
	    strncasecmp(q->host + q->host_len - dl, r->cfg->domain, dl) != 0)
		return NULL;
	*name = q->host;
	*name_len = q->host_len - dl - 1;
	return dp_tunnels_by_name(&r->tunnels, *name, *name_len);
}

/* "/session/<id>[/rest]" -> tunnel, with *rest the path the app sees. */
static struct dp_tunnel *route_path(struct relay *r, const struct dp_http_req *q, const char **sid,
				    size_t *sid_len, const char **rest, size_t *rest_len)
{
	static const char pre[] = "/session/";
	const char *p = q->target + sizeof(pre) - 1, *end = q->target + q->target_len, *e = p;

	if (q->target_len < sizeof(pre) || memcmp(q->target, pre, sizeof(pre) - 1) != 0)
		return NULL;
	while (e < end && *e != '/' && *e != '?')
		e++;
	*sid = p;
	*sid_len = (size_t)(e - p);
	/* "/session/id" and "/session/id?q" leave "" and "?q": on_request adds the "/". */
	*rest = e;
	*rest_len = (size_t)(end - e);
	return dp_tunnels_by_sid(&r->tunnels, *sid, *sid_len);
}

/* ---- the request side of a public connection ---- */

static void hold_or_send(struct relay *r, struct pub *p, uint32_t seg)
{
	struct dp_conn *c = dp_c(&r->io, p->slot);

	if (c->peer != DP_NIL) {
		dp_conn_forward(&r->io, p->slot, c->peer, seg);
		return;
	}
	dp_chain_push(&r->io.r, &p->held, seg);
}

/* A keep-alive request for another tunnel: let go of the current one. */
static void detach(struct relay *r, struct pub *p)
{
	uint32_t d = dp_c(&r->io, p->slot)->peer;

	r->m.misdirected_switch++;
	if (d != DP_NIL) {
		dp_c(&r->io, d)->peer = DP_NIL;
		dp_c(&r->io, p->slot)->peer = DP_NIL;
		dp_conn_close(&r->io, d);
	}
	if (p->waiting)
		unlink_waiter(r, p);
	tunnel_unref(p->t);
	p->t = NULL;
}

static void begin_move(struct relay *r, uint32_t c);

/* The request's tunnel lives on worker w: p goes there, with its bytes. */
static void move_public(struct relay *r, struct pub *p, int w)
{
	if (p->t != NULL)
		detach(r, p); /* a keep-alive request for a tunnel of another worker */
	untime(r, p);
	p->phase = P_MOVING;
	p->moving_to = w;
	begin_move(r, p->slot);
}

/* The credentials of a protected URL: the request's Authorization, hashed
 * as the control plane hashed the session's (pr_url_auth_mac), compared in
 * constant time. The secret itself is never stored anywhere. */
static int url_auth_ok(struct relay *r, const struct dp_tunnel *t, const struct dp_http_req *q)
{
	const char *key = r->cfg->session_secret;
	char cred[400], mac[65], *colon;
	word32 n = sizeof(cred) - 1;
	const struct dp_http_hdr *h = NULL;

	for (size_t i = 0; i < q->nheaders; i++)
		if (q->headers[i].name_len == 13 &&
		    strncasecmp(q->headers[i].name, "authorization", 13) == 0)
			h = &q->headers[i];
	if (h == NULL || key == NULL)
		return 0;
	if (t->auth == PR_AUTH_BASIC && h->value_len > 6 &&
	    strncasecmp(h->value, "basic ", 6) == 0) {
		if (Base64_Decode((const byte *)h->value + 6, (word32)(h->value_len - 6),
				  (byte *)cred, &n) != 0)
			return 0;
		cred[n] = '\0';
		if ((colon = strchr(cred, ':')) == NULL || strlen(cred) != n)
			return 0;
		*colon = '\0';
		if (pr_url_auth_mac((const uint8_t *)key, strlen(key), t->sid, cred, colon + 1,
				    mac) < 0)
			return 0;
	} else if (t->auth == PR_AUTH_BEARER && h->value_len > 7 &&
		   h->value_len - 7 < sizeof(cred) && strncasecmp(h->value, "bearer ", 7) == 0) {
		memcpy(cred, h->value + 7, h->value_len - 7);
		cred[h->value_len - 7] = '\0';
		if (pr_url_auth_mac((const uint8_t *)key, strlen(key), t->sid, "", cred, mac) < 0)
			return 0;
	} else
		return 0;
	memset(cred, 0, sizeof(cred));
	return ct_equal(mac, t->auth_mac);
}

#define CHALLENGE_PATH "/.well-known/sluice-challenge/"

/* A custom domain in Host (a session's, from the state table): 1 with its
 * record in *rec, else 0. */
static int route_domain(struct relay *r, const struct dp_http_req *q, struct pr_session *rec)
{
	char host[254];

	if (!r->sh->state_on || q->host == NULL || q->host_len == 0 || q->host_len >= sizeof(host))
		return 0;
	for (size_t i = 0; i < q->host_len; i++)
		host[i] = (char)tolower((unsigned char)q->host[i]);
	return dp_state_by_domain(&r->sh->state, host, q->host_len, rec) == 0;
}

#define SHARE_PARAM  "sluice_share="
#define SHARE_COOKIE "sluice_share="

/* The value of name=... in s[0..n) (a query or a Cookie header), or NULL. */
static const char *find_param(const char *s, size_t n, const char *name, char sep, size_t *len)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i + nl <= n; i++) {
		if ((i > 0 && s[i - 1] != sep && s[i - 1] != '?' && s[i - 1] != ' ') ||
		    memcmp(s + i, name, nl) != 0)
			continue;
		*len = 0;
		while (i + nl + *len < n && s[i + nl + *len] != sep && s[i + nl + *len] != ';' &&
		       s[i + nl + *len] != '#')
			(*len)++;
		return s + i + nl;
	}
	return NULL;
}

/* A share link's token for t, not revoked: 1, else 0. */
static int share_token_ok(struct relay *r, const struct dp_tunnel *t, const char *tok, size_t len)
{
	const char *key = r->cfg->session_secret;
	char sid[33], share[33];
	struct pr_session rec;
	uint64_t expires;

	if (key == NULL ||
	    pr_share_verify((const uint8_t *)key, strlen(key), tok, len, (uint64_t)time(NULL), sid,
			    share, &expires) != 0 ||
	    strcmp(sid, t->sid) != 0 || dp_state_get(&r->sh->state, sid, &rec) < 0)
		return 0;
	/* The session's record lists the revoked share ids. */
	return !pr_list_has(rec.revoked_shares, share);
}

/*
 * Share links on a protected URL. A valid ?sluice_share=TOKEN answers 302
 * to the same URL without it, with the token as a cookie; a valid cookie
 * lets the request through (p->shared). Returns -1 when a response was
 * queued, 0 to go on.
 */
static int share_check(struct relay *r, struct pub *p, const struct dp_tunnel *t,
		       const struct dp_http_req *q)
{
	const char *qs = memchr(q->target, '?', q->target_len), *tok;
	char extra[700], loc[512];
	size_t len, before;

	p->shared = 0;
	tok = qs ? find_param(qs, q->target_len - (size_t)(qs - q->target), SHARE_PARAM, '&', &len)
		 : NULL;
	if (tok && share_token_ok(r, t, tok, len)) {
		/* Location: the target without the parameter (and its '&'). */
		before = (size_t)(tok - strlen(SHARE_PARAM) - q->target);
		if (before > 0 && (q->target[before - 1] == '&' || q->target[before - 1] == '?'))
			before--;
		snprintf(loc, sizeof(loc), "%.*s", (int)before, q->target);
		if (tok + len < q->target + q->target_len)
			snprintf(loc + strlen(loc), sizeof(loc) - strlen(loc), "%s%.*s",
				 strchr(loc, '?') ? "&" : "?",
				 (int)(q->target + q->target_len - tok - len - 1), tok + len + 1);
		if (loc[0] == '\0')
			snprintf(loc, sizeof(loc), "/");
		snprintf(extra, sizeof(extra),
			 "Location: %s\r\nSet-Cookie: " SHARE_COOKIE "%.*s; Path=/; HttpOnly; "
			 "SameSite=Lax\r\n",
			 loc, (int)len, tok);
		pub_error(r, p, E_302, extra, "shared: continue at %s\n", loc);
		return -1;
	}
	for (size_t i = 0; i < q->nheaders; i++) {
		const struct dp_http_hdr *h = &q->headers[i];

		if (h->name_len == 6 && strncasecmp(h->name, "cookie", 6) == 0 &&
		    (tok = find_param(h->value, h->value_len, SHARE_COOKIE, ';', &len)) != NULL &&
		    share_token_ok(r, t, tok, len)) {
			p->shared = 1;
			return 0;
		}
	}
	return 0;
}

/* ---- other relays: the cluster (docs/cluster.md) ---- */

static int acc_put(struct pub *p, const char *ptr, size_t n);

#define LINK_HOPS_MAX	 2 /* relays a request may be forwarded through */
#define DRAIN_CLUSTER_MS (DP_CLUSTER_CACHE_MS + 1500)

/* Append the bytes p holds for its upstream to acc (a request routed
 * again), releasing them: 0, or -1 out of memory. */
static int held_to_acc(struct relay *r, struct pub *p)
{
	uint32_t seg;

	while ((seg = dp_chain_pop(&r->io.r, &p->held)) != DP_NIL) {
		struct dp_seg *g = &r->io.r.segs[seg];
		int e = acc_put(p, g->ptr, g->len);

		dp_seg_release(&r->io.r, seg);
		if (e < 0)
			return -1;
	}
	return 0;
}

/* Hold p, reads paused and its head kept, until a lease or an answer about
 * its tunnel arrives (run_parked); returns 2, on_request's "parked". */
static int park(struct relay *r, struct pub *p)
{
	if (p->parked_ms == 0)
		p->parked_ms = sl_mono_ms();
	p->phase = P_PARKED;
	untime(r, p);
	dp_conn_pause(&r->io, p->slot);
	dp_queue_push(&r->parked, dp_ud(p->slot, dp_c(&r->io, p->slot)->gen, DP_OP_NONE));
	return 2;
}

/* p goes to the relay at addr on a link connection of its own: raw bytes
 * both ways once connected (on_link_connected), the head first, as it came.
 * Returns 3, or -1 after an error response. */
static int forward_to_peer(struct relay *r, struct pub *p, const struct sockaddr_storage *addr,
			   socklen_t len, const char *sid)
{
	int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	uint32_t c;

	if (fd < 0 || (c = dp_conn_new(&r->io, fd, K_LINK, p)) == DP_NIL) {
		pub_error(r, p, E_503, NULL, "relay out of sockets\n");
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (p->t != NULL)
		detach(r, p); /* a keep-alive request for a tunnel held elsewhere */
	p->link = c;
	snprintf(p->link_sid, sizeof(p->link_sid), "%s", sid);
	p->phase = P_RAW; /* the other relay parses it: bytes pass as they are */
	dp_conn_pause(&r->io, p->slot);
	set_deadline(r, p, r->cfg->open_timeout_ms, E_502);
	dp_conn_connect(&r->io, c, (const struct sockaddr *)addr, len);
	r->m.links_out++;
	return 3;
}

/* A forwarded request whose link failed before a byte went out: its bytes
 * back into acc, and parked to be routed again. -1 when it may not. */
static int reroute(struct relay *r, struct pub *p)
{
	if (p->parked_ms == 0)
		p->parked_ms = sl_mono_ms();
	if (sl_mono_ms() - p->parked_ms >= r->cfg->open_timeout_ms)
		return -1;
	p->acc_len = 0;
	if (held_to_acc(r, p) < 0)
		return -1;
	park(r, p);
	return 0;
}

/* The link connection c of p is up (or failed): LINK, then p's bytes. */
static void on_link_connected(struct relay *r, uint32_t c, int res)
{
	struct pub *p = dp_c(&r->io, c)->owner;
	const char *key = r->cfg->session_secret;
	struct pr_msg m = {.type = PR_LINK, .version = PR_VERSION};
	uint32_t seg;

	if (p == NULL) {
		dp_conn_close(&r->io, c);
		return;
	}
	m.epoch = (uint64_t)time(NULL);
	m.code = (uint32_t)(p->https | (p->link_hops << 1));
	snprintf(m.text, sizeof(m.text), "%s", p->ip);
	if (res < 0 || pr_link_sign((const uint8_t *)key, strlen(key), m.epoch, m.text, (int)m.code,
				    m.token) < 0) {
		r->m.link_failures++;
		sl_warn("link to the relay holding session %s failed: %s", p->link_sid,
			strerror(res < 0 ? -res : EINVAL));
		dp_cluster_forget(&r->sh->cluster, p->link_sid);
		dp_c(&r->io, c)->owner = NULL;
		p->link = DP_NIL;
		dp_conn_close(&r->io, c);
		/* Nothing went out yet: route the request again (the tunnel is
		 * moving, say), within the open timeout. */
		if (reroute(r, p) < 0)
			pub_error(r, p, E_502, "Retry-After: 1\r\n",
				  "the relay holding this tunnel did not answer; retry\n");
		return;
	}
	dp_conn_send_msg(&r->io, c, &m);
	dp_conn_pair(&r->io, p->slot, c);
	while ((seg = dp_chain_pop(&r->io.r, &p->held)) != DP_NIL)
		dp_conn_send_seg(&r->io, c, seg);
	untime(r, p);
	/* From here on bytes go straight through, both ways. */
	dp_c(&r->io, p->slot)->flags &= (uint16_t)~DP_C_INTERCEPT;
	if (dp_c(&r->io, p->slot)->flags & DP_C_EOF)
		dp_conn_shutdown(&r->io, c);
	else
		dp_conn_recv(&r->io, p->slot);
	dp_conn_recv(&r->io, c);
}

/*
 * A request whose tunnel is not served here, or is but its agent is away:
 * which relay holds session sid. Returns 3 (forwarded there), 2 (parked:
 * the answer is on its way, or the agent is between relays, for at most the
 * open timeout), 0 (nobody: the caller answers) or -1.
 */
static int route_cluster(struct relay *r, struct pub *p, const char *sid)
{
	struct sockaddr_storage addr;
	socklen_t len = 0;
	uint64_t waited = p->parked_ms ? sl_mono_ms() - p->parked_ms : 0;
	enum dp_owner_verdict v;

	if (!r->sh->cluster_on)
		return 0;
	v = dp_cluster_owner(&r->sh->cluster, sid, p->parked_ms != 0, &addr, &len);
	if (v == DP_OWN_PEER && p->link_hops < LINK_HOPS_MAX)
		return forward_to_peer(r, p, &addr, len, sid);
	if (waited < r->cfg->open_timeout_ms) {
		if (p->parked_ms == 0)
			r->m.parked_cluster++;
		return park(r, p);
	}
	p->parked_ms = 0;
	return 0;
}

/* A name or session id no worker here holds: a session of the table, held
 * by another relay? *known says the session exists. */
static int route_elsewhere(struct relay *r, struct pub *p, const char *name, size_t name_len,
			   const char *sid, size_t sid_len, int *known)
{
	struct pr_session rec;
	char key[64];

	if (name && name_len < sizeof(key)) {
		for (size_t i = 0; i < name_len; i++)
			key[i] = (char)tolower((unsigned char)name[i]);
		if (dp_state_by_name(&r->sh->state, key, name_len, &rec) < 0)
			return 0;
	} else if (sid && sid_len < sizeof(rec.sid)) {
		memcpy(key, sid, sid_len);
		key[sid_len] = '\0';
		if (dp_state_get(&r->sh->state, key, &rec) < 0 || rec.status != PR_SS_ACTIVE)
			return 0;
	} else
		return 0;
	*known = 1;
	return route_cluster(r, p, rec.sid);
}

/*
 * The first bytes of a connection from another relay: its PR_LINK frame,
 * proven with the shared secret, says who the client is; what follows is
 * the client's, parsed as any public connection's. Takes seg.
 */
static void link_hello(struct relay *r, struct pub *p, uint32_t seg)
{
	struct dp_seg *g = &r->io.r.segs[seg];
	const char *key = r->cfg->session_secret;
	unsigned char ip[16];
	struct pr_msg m;
	uint32_t rest;
	int n, bad;

	n = acc_put(p, g->ptr, g->len);
	dp_seg_release(&r->io.r, seg);
	if (n < 0 || p->acc_len > DP_HTTP_HEAD_MAX) {
		dp_conn_close(&r->io, p->slot);
		return;
	}
	if ((n = pr_frame_len(p->acc, p->acc_len)) == 0)
		return; /* the rest of the frame is on its way */
	bad = n < 0 || pr_decode(p->acc + PR_FRAME_HDR, (size_t)n - PR_FRAME_HDR, &m) < 0 ||
	      m.type != PR_LINK || m.version != PR_VERSION || key == NULL ||
	      strlen(m.text) >= sizeof(p->ip) ||
	      (inet_pton(AF_INET, m.text, ip) != 1 && inet_pton(AF_INET6, m.text, ip) != 1) ||
	      pr_link_verify((const uint8_t *)key, strlen(key), m.epoch, m.text, (int)m.code,
			     m.token, (uint64_t)time(NULL)) < 0;
	if (bad) {
		r->m.links_refused++;
		sl_warn("link connection from %s refused: not another relay of this cluster",
			p->ip);
		dp_conn_close(&r->io, p->slot);
		return;
	}
	r->m.links_in++;
	p->link_pending = 0;
	snprintf(p->ip, sizeof(p->ip), "%.45s", m.text);
	p->ipv6 = strchr(p->ip, ':') != NULL;
	p->https = m.code & 1;
	p->link_hops = (uint8_t)((m.code >> 1) + 1);
	rest = p->acc_len - (uint32_t)n;
	p->acc_len = 0;
	if (rest == 0)
		return;
	if ((seg = dp_seg_copy(&r->io.r, p->acc + n, rest)) == DP_NIL) {
		pub_error(r, p, E_503, NULL, "relay out of memory\n");
		return;
	}
	pub_data(r, p, seg);
}

/* Route and forward one parsed request head; returns 0, 1 when p moves to
 * another worker (the head goes along), 2 when it waits for a lease or for
 * where its tunnel is (the head is kept), 3 when it goes to another relay
 * (the caller queues the head as it came), or -1 after an error response. */
static int on_request(struct relay *r, struct pub *p, const struct dp_http_req *q)
{
	const char *name = NULL, *sid = NULL, *rest = q->target;
	size_t name_len = 0, sid_len = 0, rest_len = q->target_len;
	struct dp_http_client cl = {p->ip, p->ipv6, p->https};
	struct dp_tunnel *t = route_host(r, q, &name, &name_len);
	struct pr_session crec;
	int n, custom = 0, known = 0;
	uint32_t seg;

	if (t == NULL && name == NULL && (custom = route_domain(r, q, &crec)) != 0) {
		sid = crec.sid;
		sid_len = strlen(crec.sid);
		t = dp_tunnels_by_sid(&r->tunnels, sid, sid_len);
	}
	if (t == NULL && name == NULL && !custom)
		t = route_path(r, q, &sid, &sid_len, &rest, &rest_len);
	if (t == NULL && (name || sid)) {
		int w = name ? dp_owners_find(&r->sh->owners, 0, name, name_len)
			     : dp_owners_find(&r->sh->owners, 1, sid, sid_len);

		if (w >= 0 && w != r->idx && p->hops < MAX_HOPS) {
			move_public(r, p, w);
			return 1;
		}
	}
	if (t == NULL && (name || sid) && r->sh->cluster_on) {
		int rc = route_elsewhere(r, p, name, name_len, sid, sid_len, &known);

		if (rc != 0)
			return rc;
	}
	if (t == NULL && known) {
		pub_error(r, p, E_502, "Retry-After: 5\r\n",
			  "the agent for this tunnel is offline; retry shortly\n");
		return -1;
	}
	if (t == NULL) {
		if (name)
			pub_error(r, p, E_404, NULL, "no tunnel named \"%.*s\" on this relay\n",
				  (int)name_len, name);
		else if (sid)
			pub_error(r, p, E_404, NULL, "no tunnel with session id \"%.*s\"\n",
				  (int)sid_len, sid);
		else
			pub_error(r, p, E_404, NULL,
				  "no tunnel here: use http://<name>.%s/ or /session/<id>/\n",
				  r->cfg->domain);
		return -1;
	}
	if (custom && !crec.domain_verified &&
	    (q->target_len < sizeof(CHALLENGE_PATH) - 1 ||
	     memcmp(q->target, CHALLENGE_PATH, sizeof(CHALLENGE_PATH) - 1) != 0)) {
		pub_error(r, p, E_403, NULL,
			  "this domain is not verified yet: only its challenge is served\n");
		return -1;
	}
	if (!dp_acl_ok(t->acl, p->ip, p->ipv6)) {
		pub_error(r, p, E_403, NULL, "your address may not use this tunnel\n");
		return -1;
	}
	if (t->auth != PR_AUTH_NONE && share_check(r, p, t, q) != 0)
		return -1; /* redirected, or refused */
	if (t->auth != PR_AUTH_NONE && !p->shared && !url_auth_ok(r, t, q)) {
		pub_error(r, p, E_401,
			  t->auth == PR_AUTH_BASIC
				  ? "WWW-Authenticate: Basic realm=\"sluice\"\r\n"
				  : "WWW-Authenticate: Bearer realm=\"sluice\"\r\n",
			  "this tunnel is protected: credentials required\n");
		return -1;
	}
	if (t->ctrl == DP_NIL && !t->lt) {
		/* Its agent may be moving to another relay (drain, failover). */
		int rc = t->managed ? route_cluster(r, p, t->sid) : 0;

		if (rc != 0)
			return rc;
		pub_error(r, p, E_502, "Retry-After: 5\r\n",
			  "the agent for this tunnel is offline; retry shortly\n");
		return -1;
	}
	switch (request_limits(r, p, t,
			       p->parked_ms && sl_mono_ms() - p->parked_ms >= PARK_MAX_MS)) {
	case 1: return park(r, p); /* until a lease of its key's limit arrives */
	case -1: return -1;
	default: p->parked_ms = 0; break;
	}
	if (p->t != NULL && (p->t != t || p->epoch != t->epoch))
		detach(r, p);
	if (rest_len == 0 || rest[0] != '/') {
		/* "/session/id" and "/session/id?q" map to "/" and "/?q". */
		r->target[0] = '/';
		memcpy(r->target + 1, rest, rest_len);
		rest_len += 1;
		rest = r->target;
	}
	n = dp_http_upstream_head(q, rest, rest_len, &cl, r->head, sizeof(r->head));
	if (n < 0 || (seg = dp_seg_copy(&r->io.r, r->head, (uint32_t)n)) == DP_NIL) {
		pub_error(r, p, E_503, NULL, "relay out of memory\n");
		return -1;
	}
	/* GET, HEAD, OPTIONS without a body, of a cluster session: kept as it
	 * came until answered, so that an agent leaving for another relay
	 * between taking it and answering does not lose it (on_peer_lost). */
	p->replayable = q->content_length <= 0 && !q->chunked && !q->upgrade &&
			((q->method_len == 3 && memcmp(q->method, "GET", 3) == 0) ||
			 (q->method_len == 4 && memcmp(q->method, "HEAD", 4) == 0) ||
			 (q->method_len == 7 && memcmp(q->method, "OPTIONS", 7) == 0));
	free(p->orig);
	p->orig = NULL;
	if (r->sh->cluster_on && t->managed && p->replayable && p->replays == 0)
		keep_head(r, p);
	r->m.requests++;
	t->requests++;
	p->hops = 0; /* MAX_HOPS bounds the moves of one request, not of a connection */
	p->req_ns = r->io.now_ns;
	if (p->t == NULL) {
		p->t = t;
		p->epoch = t->epoch;
		tunnel_ref(t);
		hold_or_send(r, p, seg);
		acquire_data(r, p);
	} else {
		hold_or_send(r, p, seg);
	}
	p->phase = q->upgrade		   ? P_RAW
		   : q->chunked		   ? P_BODY_CH
		   : q->content_length > 0 ? P_BODY_CL
					   : P_HEAD;
	p->body_left = q->content_length > 0 ? (uint64_t)q->content_length : 0;
	memset(&p->ch, 0, sizeof(p->ch));
	return 0;
}

static int head_error(int err)
{
	return err == DP_HTTP_TOO_MANY ? E_431 : err == DP_HTTP_BAD_TE ? E_501 : E_400;
}

/* Parse a head from buf; returns its length, 0 when incomplete, -1 after an
 * error, -2 when the connection moves to another worker or waits for a
 * lease (nothing of the head consumed). */
static int try_head(struct relay *r, struct pub *p, const char *buf, size_t len)
{
	static _Thread_local struct dp_http_req q; /* large: one per worker thread */
	int n = dp_http_parse_request(buf, len, &q), rc;

	if (n == DP_HTTP_INCOMPLETE) {
		if (len > DP_HTTP_HEAD_MAX) {
			pub_error(r, p, E_431, NULL, "request head over 64 KiB\n");
			return -1;
		}
		if (!p->timed)
			set_deadline(r, p, r->cfg->head_timeout_ms, E_408);
		return 0;
	}
	if (n < 0) {
		pub_error(r, p, head_error(n), NULL, "%s\n",
			  n == DP_HTTP_TOO_MANY ? "request head too large"
			  : n == DP_HTTP_BAD_TE ? "unsupported transfer coding"
						: "malformed request");
		return -1;
	}
	if (p->waiting == 0)
		untime(r, p);
	r->cur_raw = buf;
	r->cur_raw_len = (uint32_t)n;
	rc = on_request(r, p, &q);
	r->cur_raw = NULL;
	switch (rc) {
	case 0: return n;
	case 1:
	case 2: return -2; /* moving or parked: nothing of the head was consumed */
	case 3: {
		/* Forwarded to another relay: the head as it came, first. */
		uint32_t seg = dp_seg_copy(&r->io.r, buf, (uint32_t)n);

		if (seg == DP_NIL) {
			pub_error(r, p, E_503, NULL, "relay out of memory\n");
			return -1;
		}
		dp_chain_push(&r->io.r, &p->held, seg);
		return n;
	}
	default: return -1;
	}
}

/* Bytes of a body: how many of n belong to it (phase moves on at its end). */
static size_t body_take(struct relay *r, struct pub *p, const char *ptr, size_t n)
{
	size_t take;
	int done = 0;
	ssize_t k;

	if (p->phase == P_RAW)
		return n;
	if (p->phase == P_BODY_CL) {
		take = n < p->body_left ? n : (size_t)p->body_left;
		p->body_left -= take;
		if (p->body_left == 0)
			p->phase = P_HEAD;
		return take;
	}
	k = dp_chunked_consume(&p->ch, ptr, n, &done);
	if (k < 0) {
		pub_error(r, p, E_400, NULL, "malformed chunked body\n");
		return 0;
	}
	if (done)
		p->phase = P_HEAD;
	return (size_t)k;
}

/* Append n bytes to p->acc; returns 0 or -ENOMEM. */
static int acc_put(struct pub *p, const char *ptr, size_t n)
{
	if (p->acc_len + n > p->acc_cap) {
		uint32_t cap = p->acc_cap ? p->acc_cap : 4096;
		char *nb;

		while (cap < p->acc_len + n)
			cap *= 2;
		if ((nb = realloc(p->acc, cap)) == NULL)
			return -ENOMEM;
		p->acc = nb;
		p->acc_cap = cap;
	}
	memcpy(p->acc + p->acc_len, ptr, n);
	p->acc_len += (uint32_t)n;
	return 0;
}

/* Append to the partial-head buffer; returns 0 or -1 (too large, replied). */
static int acc_append(struct relay *r, struct pub *p, const char *ptr, size_t n)
{
	if (p->acc_len + n > DP_HTTP_HEAD_MAX + 1) {
		pub_error(r, p, E_431, NULL, "request head over 64 KiB\n");
		return -1;
	}
	if (acc_put(p, ptr, n) < 0) {
		pub_error(r, p, E_503, NULL, "relay out of memory\n");
		return -1;
	}
	return 0;
}

#define STASH_MAX (8u << 20) /* bytes a moving connection carries at most */

/* Keep bytes of a connection that moves to another worker (in acc, after
 * its head); past STASH_MAX, or out of memory, the connection closes. */
static void stash(struct relay *r, struct pub *p, const char *ptr, size_t n)
{
	if (p->acc_len + n > STASH_MAX || acc_put(p, ptr, n) < 0)
		dp_conn_close(&r->io, p->slot);
}

/*
 * Request-side bytes of a public connection, as segment seg (ring or heap).
 * Bodies leave from the buffer they arrived in; a head that spans reads is
 * gathered in p->acc; whatever follows a body inside the same buffer (a
 * pipelined request) is copied out, the rare case.
 */
static void pub_data(struct relay *r, struct pub *p, uint32_t seg)
{
	struct dp_seg *g = &r->io.r.segs[seg];
	char *ptr = g->ptr;
	size_t n = g->len, used;
	int h;

	if (p->link_pending) {
		link_hello(r, p, seg);
		return;
	}
	if (p->phase == P_MOVING || p->phase == P_PARKED) {
		stash(r, p, ptr, n); /* bytes that came before the receive stopped */
		dp_seg_release(&r->io.r, seg);
		return;
	}
	while (n > 0 && p->phase != P_DONE && p->phase != P_MOVING && p->phase != P_PARKED) {
		if (p->phase != P_HEAD) {
			used = body_take(r, p, ptr, n);
			if (p->phase == P_DONE)
				break;
			if (used == n) {
				g->ptr = ptr;
				g->len = (uint32_t)n;
				hold_or_send(r, p, seg);
				return;
			}
			uint32_t part = dp_seg_copy(&r->io.r, ptr, (uint32_t)used);

			if (part != DP_NIL)
				hold_or_send(r, p, part);
			ptr += used;
			n -= used;
			continue;
		}
		if (p->acc_len == 0) {
			h = try_head(r, p, ptr, n);
			if (h == 0 && acc_append(r, p, ptr, n) == 0)
				n = 0;
			if (h == -2)
				stash(r, p, ptr, n); /* the head and what follows go along */
			if (h <= 0)
				break;
			ptr += h;
			n -= (size_t)h;
			continue;
		}
		if (acc_append(r, p, ptr, n) < 0)
			break;
		n = 0;
		h = try_head(r, p, p->acc, p->acc_len);
		if (h <= 0) /* -2 (moving): acc already holds the head and what followed */
			break;
		/* The bytes after the head move to a heap segment, handled next. */
		uint32_t restseg = dp_seg_copy(&r->io.r, p->acc + h, p->acc_len - (uint32_t)h);

		p->acc_len = 0;
		dp_seg_release(&r->io.r, seg);
		if (restseg == DP_NIL)
			return;
		pub_data(r, p, restseg);
		return;
	}
	dp_seg_release(&r->io.r, seg);
}

/* ---- agent connections ---- */

static void fresh_unlink(struct relay *r, struct agent *a)
{
	if (!a->fresh)
		return;
	if (a->fprev)
		a->fprev->fnext = a->fnext;
	else
		r->fresh = a->fnext;
	if (a->fnext)
		a->fnext->fprev = a->fprev;
	a->fprev = a->fnext = NULL;
	a->fresh = 0;
}

static void fresh_link(struct relay *r, struct agent *a, uint32_t c)
{
	a->slot = c;
	a->deadline_ms = r->now_ms + r->cfg->head_timeout_ms;
	a->fresh = 1;
	a->fnext = r->fresh;
	if (r->fresh)
		r->fresh->fprev = a;
	r->fresh = a;
}

/* Close agent-port and admin connections that said nothing in time. */
static void expire_fresh(struct relay *r)
{
	struct agent *a = r->fresh, *next;

	for (; a; a = next) {
		next = a->fnext;
		if (a->deadline_ms > r->now_ms)
			continue;
		fresh_unlink(r, a);
		if (dp_c(&r->io, a->slot)->kind == K_AGENT_NEW)
			r->m.agents_refused++;
		dp_conn_close(&r->io, a->slot);
	}
}

/* A static token (--tokens): any, when there is no file and no sessions. */
static int static_token_ok(struct relay *r, const char *tok)
{
	int ok = 0;

	if (r->cfg->tokens == NULL)
		return !r->sh->state_on;
	for (uint32_t i = 0; i < r->cfg->ntokens; i++)
		ok |= ct_equal(r->cfg->tokens[i], tok);
	return ok;
}

/*
 * A token signed by the control plane: its MAC, then the session it names
 * (active, same epoch, unexpired). 0 with the record in *rec, or the code to
 * refuse with (PR_E_SESSION, which agents retry, while the session may still
 * be on its way from Redis) and the reason in *why.
 */
static int session_token_ok(struct relay *r, const char *tok, struct pr_session *rec,
			    const char **why)
{
	const char *key = r->cfg->session_secret;
	uint64_t now = (uint64_t)time(NULL);
	struct pr_token pt;
	int e = pr_token_verify((const uint8_t *)key, strlen(key), tok, strlen(tok), now, &pt);

	*why = e == -ETIME ? "token expired" : "token refused";
	if (e < 0)
		return PR_E_AUTH;
	if (dp_state_get(&r->sh->state, pt.sid, rec) < 0) {
		*why = atomic_load(&r->sh->state.ready)
			       ? "unknown session (not in the relay's table)"
			       : "session table not loaded yet; retry";
		return PR_E_SESSION;
	}
	if (rec->status != PR_SS_ACTIVE || now >= rec->expires) {
		*why = rec->status == PR_SS_DELETED ? "session deleted" : "session expired";
		return PR_E_AUTH;
	}
	if (rec->epoch != pt.epoch) {
		*why = "token of an earlier epoch of this session";
		return PR_E_AUTH;
	}
	return 0;
}

static void agent_refuse(struct relay *r, uint32_t c, enum pr_code code, const char *text)
{
	struct pr_msg m = {.type = PR_ERROR, .code = code};
	struct agent *a = dp_c(&r->io, c)->owner;

	r->m.agents_refused++;
	sl_warn("agent %s refused: %s", a->ip, text);
	snprintf(m.text, sizeof(m.text), "%s", text);
	dp_conn_send_msg(&r->io, c, &m);
	dp_conn_shutdown(&r->io, c);
}

static void close_idle(struct relay *r, struct dp_tunnel *t)
{
	uint32_t d;

	while ((d = pop_idle(r, t)) != DP_NIL) {
		((struct agent *)dp_c(&r->io, d)->owner)->idle = 0;
		dp_conn_close(&r->io, d);
	}
}

/* A waiter of a tunnel whose agent left, in a cluster: its request goes
 * back to routing (the agent may be binding at another relay), its head as
 * it came and what of its body was held. 0, or -1 when it cannot. */
static int requeue_waiter(struct relay *r, struct pub *p)
{
	uint32_t seg;

	if (p->orig == NULL)
		return -1;
	if ((seg = dp_chain_pop(&r->io.r, &p->held)) != DP_NIL)
		dp_seg_release(&r->io.r, seg); /* the head as rewritten for this relay */
	p->acc_len = 0;
	if (acc_put(p, p->orig, p->orig_len) < 0 || held_to_acc(r, p) < 0)
		return -1;
	free(p->orig);
	p->orig = NULL;
	if (p->counted)
		p->t->live--;
	p->counted = 0;
	tunnel_unref(p->t);
	p->t = NULL;
	park(r, p);
	return 0;
}

/* Every public connection waiting on t: its agent went away. In a cluster
 * (reroute) the request is routed again; otherwise it gets a 502. */
static void fail_waiters(struct relay *r, struct dp_tunnel *t, int reroute)
{
	while (t->wait_head != DP_NIL) {
		struct pub *p = dp_c(&r->io, t->wait_head)->owner;

		unlink_waiter(r, p);
		if (reroute && requeue_waiter(r, p) == 0)
			continue;
		pub_error(r, p, E_502, "Retry-After: 5\r\n",
			  "the agent for this tunnel went offline; retry shortly\n");
	}
	t->opens_asked = 0;
}

static int open_tcp_port(struct relay *r, struct dp_tunnel *t)
{
	char addr[300];
	const char *colon = strrchr(r->cfg->http, ':');
	uint32_t span = (uint32_t)(r->cfg->tcp_hi - r->cfg->tcp_lo) + 1;

	for (uint32_t i = 0; i < span; i++) {
		uint16_t port = (uint16_t)(r->cfg->tcp_lo + (r->next_tcp + i) % span);
		int fd;

		snprintf(addr, sizeof(addr), "%.*s:%u", (int)(colon - r->cfg->http), r->cfg->http,
			 port);
		fd = sl_listen_tcp(addr, 512, 0);
		if (fd < 0)
			continue;
		t->tcp_listener = dp_conn_new(&r->io, fd, K_LISTEN_TCP, t);
		if (t->tcp_listener == DP_NIL)
			return -ENFILE;
		tunnel_ref(t);
		dp_conn_accept(&r->io, t->tcp_listener);
		t->port = port;
		r->next_tcp = (uint16_t)((r->next_tcp + i + 1) % span);
		return 0;
	}
	return -EADDRINUSE;
}

static void bound_url(struct relay *r, struct dp_tunnel *t, char *url, size_t cap)
{
	if (t->proto == PR_PROTO_TCP)
		snprintf(url, cap, "tcp://%s:%u", r->cfg->domain, t->port);
	else if (r->http_port == 80)
		snprintf(url, cap, "http://%s.%s/", t->name, r->cfg->domain);
	else
		snprintf(url, cap, "http://%s.%s:%d/", t->name, r->cfg->domain, r->http_port);
}

/* A session's limits onto its tunnel; counts so far are kept. */
static void set_limits(struct dp_tunnel *t, const struct pr_session *rec)
{
	t->lim_req = rec->lim_req;
	t->lim_bw = rec->lim_bw;
	t->lim_tcp = rec->lim_tcp;
	t->key_req = rec->key_req;
	snprintf(t->key_id, sizeof(t->key_id), "%s", rec->key_id);
}

/* A new tunnel on this worker, its name claimed across workers. NULL with
 * *code set, or with *elsewhere set when another worker holds the name. */
static struct dp_tunnel *new_tunnel(struct relay *r, const struct pr_msg *m,
				    const struct pr_session *rec, int *code, int *elsewhere)
{
	struct dp_tunnel *t = calloc(1, sizeof(*t));
	int w;

	*code = PR_E_INTERNAL;
	if (t == NULL)
		return NULL;
	if (m->name[0])
		snprintf(t->name, sizeof(t->name), "%s", m->name);
	else
		random_alnum(t->name, 8);
	if (rec) {
		/* The control plane's session: its id, and its expiry to enforce. */
		snprintf(t->sid, sizeof(t->sid), "%s", rec->sid);
		t->managed = 1;
		t->expires = rec->expires;
		t->tok_epoch = rec->epoch;
		t->auth = rec->auth;
		snprintf(t->auth_mac, sizeof(t->auth_mac), "%s", rec->auth_mac);
		set_limits(t, rec);
	} else {
		random_alnum(t->sid, 16);
		t->lim_req = r->cfg->lim_req;
		t->lim_bw = r->cfg->lim_bw;
		t->lim_tcp = r->cfg->lim_tcp;
	}
	random_alnum(t->key, 32);
	snprintf(t->token, sizeof(t->token), "%s", m->token);
	t->proto = m->proto;
	t->ctrl = t->idle = t->wait_head = t->wait_tail = t->tcp_listener = DP_NIL;
	if ((w = dp_owners_claim(&r->sh->owners, t->name, t->sid, r->idx)) != r->idx) {
		if (w >= 0)
			*elsewhere = w;
		free(t);
		return NULL;
	}
	if (t->proto == PR_PROTO_TCP && open_tcp_port(r, t) < 0) {
		*code = PR_E_NO_PORT;
		goto fail;
	}
	if (dp_tunnels_add(&r->tunnels, t) < 0) {
		/* The listener's reference keeps t until its close completes, which
		 * on epoll is at once: hold t across it. */
		t->refs++;
		if (t->tcp_listener != DP_NIL)
			dp_conn_close(&r->io, t->tcp_listener);
		t->tcp_listener = DP_NIL;
		t->refs--;
		goto fail;
	}
	t->linked = 1;
	if (rec)
		t->acl = dp_acl_parse(rec->allow_ips, rec->deny_ips);
	return t;
fail:
	dp_owners_release(&r->sh->owners, t->name, t->sid, r->idx);
	if (t->refs == 0)
		free(t);
	return NULL;
}

/* The control connection of t goes (closed or dead): the tunnel waits for a resume. */
static void tunnel_offline(struct relay *r, struct dp_tunnel *t)
{
	if (r->sh->cluster_on && t->managed)
		dp_cluster_unbound(&r->sh->cluster, t->sid);
	t->ctrl = DP_NIL;
	r->nagents--;
	t->offline_since_ms = r->now_ms;
	close_idle(r, t);
	fail_waiters(r, t, r->sh->cluster_on && t->managed);
	sl_info("tunnel %s: agent offline, name held for %u ms", t->name, r->cfg->grace_ms);
}

/* A refusal: its code and the text the agent shows. */
struct refusal {
	enum pr_code code;
	const char *text;
};

/*
 * The session a HELLO resumes or the name it may take back (same token), or
 * NULL for a new session; sets *why when the HELLO must be refused.
 */
static struct dp_tunnel *hello_existing(struct relay *r, const struct pr_msg *m,
					struct refusal *why)
{
	struct dp_tunnel *t = NULL;

	if (m->session[0]) {
		t = dp_tunnels_by_sid(&r->tunnels, m->session, strlen(m->session));
		if (t && !ct_equal(t->token, m->token))
			*why = (struct refusal){PR_E_AUTH, "token does not own this session"};
		if (t)
			return t;
	}
	if (!m->name[0])
		return NULL;
	if (!pr_label_valid(m->name, strlen(m->name))) {
		*why = (struct refusal){PR_E_NAME_INVALID,
					"name must be a DNS label: a-z, 0-9, '-', 1..63"};
		return NULL;
	}
	/* The same token may take its name back (a restarted agent does not know
	 * its old session); the latest agent wins and the old one is fenced.
	 * Another token may not. */
	t = dp_tunnels_by_name(&r->tunnels, m->name, strlen(m->name));
	if (t && !ct_equal(t->token, m->token))
		*why = (struct refusal){PR_E_NAME_TAKEN, "name already in use"};
	else if (t && t->proto != m->proto)
		*why = (struct refusal){PR_E_NAME_TAKEN,
					"name in use by a tunnel of another protocol"};
	return t;
}

/* Make control connection c the one of t, fencing any previous one. */
static void bind_ctrl(struct relay *r, uint32_t c, struct dp_tunnel *t)
{
	struct agent *a = dp_c(&r->io, c)->owner;

	if (t->ctrl != DP_NIL) {
		/* Fence the ghost: the old control connection loses to the resume. */
		uint32_t old = t->ctrl;

		((struct agent *)dp_c(&r->io, old)->owner)->t = NULL;
		tunnel_unref(t);
		t->ctrl = DP_NIL;
		r->nagents--;
		dp_conn_close(&r->io, old);
		close_idle(r, t);
	}
	t->epoch++;
	if (t->ctrl == DP_NIL)
		r->nagents++;
	t->ctrl = c;
	t->last_rx_ms = t->last_ping_ms = r->now_ms;
	t->opens_asked = 0;
	dp_c(&r->io, c)->kind = K_CTRL;
	fresh_unlink(r, a);
	a->t = t;
	a->epoch = t->epoch;
	tunnel_ref(t);
}

static void send_bound(struct relay *r, uint32_t c, struct dp_tunnel *t)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct pr_msg b = {.type = PR_BOUND};

	b.proto = t->proto;
	b.epoch = t->epoch;
	b.port = t->port;
	b.heartbeat_ms = r->cfg->heartbeat_ms;
	snprintf(b.name, sizeof(b.name), "%s", t->name);
	snprintf(b.session, sizeof(b.session), "%s", t->sid);
	snprintf(b.key, sizeof(b.key), "%s", t->key);
	bound_url(r, t, b.url, sizeof(b.url));
	dp_conn_send_msg(&r->io, c, &b);
	sl_info("tunnel %s: agent %s bound (session %s, epoch %llu) at %s", t->name, a->ip, t->sid,
		(unsigned long long)t->epoch, b.url);
}

static void begin_move(struct relay *r, uint32_t c);

/* Agent connection c goes to worker w, with its frames; returns 1. */
static int move_agent(struct relay *r, uint32_t c, int w)
{
	struct agent *a = dp_c(&r->io, c)->owner;

	a->moving_to = w;
	begin_move(r, c);
	return 1;
}

/*
 * The worker holding session sid or name (either may be NULL) when it is
 * not this one, else -1. A socket that already moved MAX_HOPS times stays:
 * the tunnel is changing hands, and the agent retries.
 */
static int held_elsewhere(struct relay *r, const char *sid, const char *name)
{
	int w = DP_OWNER_NONE;

	if (sid)
		w = dp_owners_find(&r->sh->owners, 1, sid, strlen(sid));
	if (w == DP_OWNER_NONE && name)
		w = dp_owners_find(&r->sh->owners, 0, name, strlen(name));
	return w >= 0 && w != r->idx ? w : -1;
}

/* HELLO: a new session, or the resume of one whose name we hold. Returns 1
 * when the connection moves to the worker holding the tunnel, else 0. */
static int on_hello(struct relay *r, uint32_t c, const struct pr_msg *hello)
{
	struct refusal why = {0, NULL};
	struct pr_session rec, *recp = NULL;
	struct pr_msg mm;
	const struct pr_msg *m = hello;
	struct dp_tunnel *t;
	const char *swhy;
	int code = 0, sc;

	if (hello->version != PR_VERSION)
		why = (struct refusal){PR_E_VERSION, "protocol version not supported"};
	else if (r->sh->state_on && strncmp(hello->token, "v1.", 3) == 0) {
		if ((sc = session_token_ok(r, hello->token, &rec, &swhy)) != 0)
			why = (struct refusal){(enum pr_code)sc, swhy};
		else {
			/* The session decides name and protocol, not the agent. */
			mm = *hello;
			snprintf(mm.name, sizeof(mm.name), "%s", rec.name);
			mm.proto = (enum pr_proto)rec.proto;
			m = &mm;
			recp = &rec;
		}
	} else if (!static_token_ok(r, hello->token))
		why = (struct refusal){PR_E_AUTH, "token refused"};
	if (why.text == NULL && r->draining)
		why = (struct refusal){PR_E_DRAIN, "relay is draining"};
	t = why.text ? NULL : hello_existing(r, m, &why);
	if (why.text == NULL && t == NULL) {
		int w = held_elsewhere(r, m->session[0] ? m->session : NULL,
				       m->name[0] ? m->name : NULL);

		if (w < 0 && (t = new_tunnel(r, m, recp, &code, &w)) == NULL && w < 0)
			why = (struct refusal){(enum pr_code)code, code == PR_E_NO_PORT
									   ? "no TCP port left"
									   : "internal error"};
		/* A session resumed from another relay keeps counting its binds
		 * from where they were: the epoch fences its claim in Redis. */
		if (t && recp && strcmp(hello->session, recp->sid) == 0 && hello->epoch > t->epoch)
			t->epoch = hello->epoch;
		if (w >= 0 && ((struct agent *)dp_c(&r->io, c)->owner)->hops < MAX_HOPS)
			return move_agent(r, c, w);
		if (w >= 0)
			why = (struct refusal){PR_E_INTERNAL, "tunnel changing workers; retry"};
	}
	if (why.text) {
		agent_refuse(r, c, why.code, why.text);
		return 0;
	}
	bind_ctrl(r, c, t);
	send_bound(r, c, t);
	ask_for_data(r, t);
	if (r->sh->cluster_on && t->managed)
		dp_cluster_claim(&r->sh->cluster, t->sid, t->epoch);
	return 0;
}

/* DATA_HELLO: a data connection joins its tunnel's pool; returns 1 when it
 * moves to the worker holding the tunnel, else 0. */
static int on_data_hello(struct relay *r, uint32_t c, const struct pr_msg *m)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct dp_tunnel *t = dp_tunnels_by_sid(&r->tunnels, m->session, strlen(m->session));
	int w;

	if (t == NULL && a->hops < MAX_HOPS && (w = held_elsewhere(r, m->session, NULL)) >= 0)
		return move_agent(r, c, w);
	if (t == NULL || t->ctrl == DP_NIL || m->epoch != t->epoch || !ct_equal(t->key, m->key)) {
		dp_conn_close(&r->io, c);
		return 0;
	}
	dp_c(&r->io, c)->kind = K_DATA;
	fresh_unlink(r, a);
	a->t = t;
	a->epoch = t->epoch;
	tunnel_ref(t);
	free(a->buf);
	a->buf = NULL;
	a->len = 0;
	data_ready(r, t, c);
	return 0;
}

static void on_ctrl_frame(struct relay *r, uint32_t c, const struct pr_msg *m)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct pr_msg pong = {.type = PR_PONG};

	if (m->type == PR_PING) {
		pong.nonce = m->nonce;
		dp_conn_send_msg(&r->io, c, &pong);
	} else if (m->type == PR_ERROR) {
		sl_warn("agent %s reports error %u: %s", a->ip, m->code, m->text);
	}
}

/* Frames on an agent connection; returns -1 when the connection was closed. */
static int agent_frames(struct relay *r, uint32_t c)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct pr_msg m;
	int n = 0;

	while (a->buf != NULL && (n = pr_frame_len(a->buf, a->len)) > 0) {
		if (pr_decode(a->buf + PR_FRAME_HDR, (size_t)n - PR_FRAME_HDR, &m) < 0)
			break;
		if (dp_c(&r->io, c)->kind == K_AGENT_NEW) {
			char first[AGENT_BUF]; /* the frame, should the connection move */
			int moved;

			memcpy(first, a->buf, (size_t)n);
			memmove(a->buf, a->buf + n, a->len - (uint32_t)n);
			a->len -= (uint32_t)n;
			if (m.type == PR_HELLO)
				moved = on_hello(r, c, &m);
			else if (m.type == PR_DATA_HELLO)
				moved = on_data_hello(r, c, &m);
			else
				break;
			if (moved) {
				/* The frame goes along, first, with whatever followed it. */
				memmove(a->buf + n, a->buf, a->len);
				memcpy(a->buf, first, (size_t)n);
				a->len += (uint32_t)n;
				return 0;
			}
			if (dp_c(&r->io, c)->kind == K_AGENT_NEW ||
			    (dp_c(&r->io, c)->flags & DP_C_CLOSING))
				return -1;
			continue;
		}
		memmove(a->buf, a->buf + n, a->len - (uint32_t)n);
		a->len -= (uint32_t)n;
		if (dp_c(&r->io, c)->kind != K_CTRL)
			break; /* a data connection sends nothing before START */
		on_ctrl_frame(r, c, &m);
	}
	if (n == 0 || (a->buf == NULL && dp_c(&r->io, c)->kind == K_DATA))
		return 0; /* need more, or a data connection that just joined its pool */
	dp_conn_close(&r->io, c);
	return -1;
}

/* A read can hold many frames: feed the buffer in pieces that fit it. */
static void agent_data(struct relay *r, uint32_t c, uint32_t seg)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct dp_seg *g = &r->io.r.segs[seg];
	const char *p = g->ptr;
	uint32_t left = g->len;

	if (a->t)
		a->t->last_rx_ms = r->now_ms;
	while (left > 0 && a->buf != NULL) {
		uint32_t take = AGENT_BUF - a->len;

		take = take < left ? take : left;
		if (a->moving_to >= 0 && take < left) {
			dp_conn_close(&r->io, c); /* more than a mover carries */
			break;
		}
		memcpy(a->buf + a->len, p, take);
		a->len += take;
		p += take;
		left -= take;
		if (a->moving_to >= 0)
			continue; /* bytes for the worker it moves to, not parsed here */
		if (agent_frames(r, c) < 0)
			break;
		if (take == 0) {
			dp_conn_close(&r->io, c); /* a full buffer without a whole frame */
			break;
		}
	}
	dp_seg_release(&r->io.r, seg);
}

/* ---- admin: /health and /metrics ---- */

/* This worker's figures now. */
static void snap_take(struct relay *r, struct snapshot *x)
{
	x->m = r->m;
	x->io = r->io.stats;
	x->ring = r->io.r.stats;
	x->tls = r->io.tls;
	x->tunnels = r->tunnels.count;
	x->live = r->io.live;
	x->agents = r->nagents;
}

/* Publish this worker's figures for /metrics on worker 0 (every turn: an
 * uncontended lock and a copy of a few hundred bytes). */
static void publish(struct relay *r)
{
	pthread_mutex_lock(&r->snap_mu);
	snap_take(r, &r->snap);
	pthread_mutex_unlock(&r->snap_mu);
}

/* Add the counters of b to a (every field of these structs is a uint64_t
 * counter, but for the latency sum and the gauges, added by name). */
static void add_u64(void *a, const void *b, size_t size)
{
	uint64_t *x = a;
	const uint64_t *y = b;

	for (size_t i = 0; i < size / sizeof(uint64_t); i++)
		x[i] += y[i];
}

static void snap_add(struct snapshot *a, const struct snapshot *from)
{
	struct snapshot b = *from;
	double lat = a->m.lat_sum_s + b.m.lat_sum_s;

	_Static_assert(sizeof(double) == sizeof(uint64_t), "lat_sum_s sits among counters");
	a->m.lat_sum_s = b.m.lat_sum_s = 0; /* all-zero bits either way */
	add_u64(&a->m, &b.m, sizeof(a->m));
	a->m.lat_sum_s = lat;
	add_u64(&a->io, &b.io, sizeof(a->io));
	add_u64(&a->ring, &b.ring, sizeof(a->ring));
	add_u64(&a->tls, &b.tls, sizeof(a->tls));
	a->tunnels += b.tunnels;
	a->agents += b.agents;
	a->live += b.live;
}

/* Every worker's figures: this one's live, the others' last published. */
static void snap_all(struct relay *r, struct snapshot *sum)
{
	snap_take(r, sum);
	for (int i = 0; i < r->sh->nworkers; i++) {
		struct relay *w = r->sh->w[i];
		struct snapshot x;

		if (w == r)
			continue;
		pthread_mutex_lock(&w->snap_mu);
		x = w->snap;
		pthread_mutex_unlock(&w->snap_mu);
		snap_add(sum, &x);
	}
}

static int metrics_text(struct relay *r, char *out, size_t cap)
{
	struct snapshot x;
	struct dp_ring_stats *rs = &x.ring;
	size_t o = 0;

	snap_all(r, &x);
#define M(...) o += (size_t)snprintf(out + o, o < cap ? cap - o : 0, __VA_ARGS__)
#define U(v)   ((unsigned long long)(v))
	M("# TYPE sluice_workers gauge\nsluice_workers %d\n", r->sh->nworkers);
	M("# TYPE sluice_tunnels gauge\nsluice_tunnels %u\n", x.tunnels);
	M("# TYPE sluice_agents gauge\nsluice_agents %u\n", x.agents);
	M("# TYPE sluice_connections gauge\nsluice_connections %u\n", x.live);
	M("# TYPE sluice_requests_total counter\nsluice_requests_total %llu\n", U(x.m.requests));
	M("# TYPE sluice_relay_errors_total counter\n");
	for (int e = 0; e < E_COUNT; e++)
		M("sluice_relay_errors_total{status=\"%d\"} %llu\n", err_status[e],
		  U(x.m.errors[e]));
	M("# TYPE sluice_public_bytes_total counter\n"
	  "sluice_public_bytes_total{direction=\"in\"} %llu\n"
	  "sluice_public_bytes_total{direction=\"out\"} %llu\n",
	  U(x.m.bytes_in), U(x.m.bytes_out));
	M("# TYPE sluice_agents_refused_total counter\nsluice_agents_refused_total %llu\n",
	  U(x.m.agents_refused));
	M("# TYPE sluice_ratelimited_total counter\n"
	  "sluice_ratelimited_total{limit=\"tunnel_requests\"} %llu\n"
	  "sluice_ratelimited_total{limit=\"key_requests\"} %llu\n"
	  "sluice_ratelimited_total{limit=\"tcp_connections\"} %llu\n"
	  "sluice_ratelimited_total{limit=\"bandwidth_pauses\"} %llu\n",
	  U(x.m.limited_req), U(x.m.limited_key), U(x.m.limited_tcp), U(x.m.throttles));
	if (r->sh->cluster_on) {
		struct dp_cluster *cl = &r->sh->cluster;

		M("# TYPE sluice_cluster_up gauge\nsluice_cluster_up %d\n"
		  "# TYPE sluice_cluster_relays gauge\nsluice_cluster_relays %u\n"
		  "# TYPE sluice_cluster_events_total counter\n"
		  "sluice_cluster_events_total{event=\"claim\"} %llu\n"
		  "sluice_cluster_events_total{event=\"claim_refused\"} %llu\n"
		  "sluice_cluster_events_total{event=\"lookup\"} %llu\n"
		  "sluice_cluster_events_total{event=\"redis_failure\"} %llu\n"
		  "sluice_cluster_events_total{event=\"parked\"} %llu\n"
		  "sluice_cluster_events_total{event=\"replayed\"} %llu\n"
		  "# TYPE sluice_links_total counter\n"
		  "sluice_links_total{event=\"out\"} %llu\n"
		  "sluice_links_total{event=\"in\"} %llu\n"
		  "sluice_links_total{event=\"refused\"} %llu\n"
		  "sluice_links_total{event=\"failed\"} %llu\n",
		  atomic_load(&cl->up), cl->npeers, U(atomic_load(&cl->claims_made)),
		  U(atomic_load(&cl->claims_refused)), U(atomic_load(&cl->lookups)),
		  U(atomic_load(&cl->failures)), U(x.m.parked_cluster), U(x.m.replays),
		  U(x.m.links_out), U(x.m.links_in), U(x.m.links_refused), U(x.m.link_failures));
	}
	if (r->sh->leases_on) {
		struct dp_leases *l = &r->sh->leases;

		M("# TYPE sluice_ratelimit_global gauge\nsluice_ratelimit_global %d\n"
		  "# TYPE sluice_ratelimit_relays gauge\nsluice_ratelimit_relays %u\n"
		  "# TYPE sluice_ratelimit_events_total counter\n"
		  "sluice_ratelimit_events_total{event=\"lease\"} %llu\n"
		  "sluice_ratelimit_events_total{event=\"lease_failure\"} %llu\n"
		  "sluice_ratelimit_events_total{event=\"local_decision\"} %llu\n"
		  "sluice_ratelimit_events_total{event=\"mode_change\"} %llu\n",
		  atomic_load(&l->up), l->nrelays, U(atomic_load(&l->leases)),
		  U(atomic_load(&l->lease_failures)), U(atomic_load(&l->local_decisions)),
		  U(atomic_load(&l->mode_changes)));
	}
	if (r->sh->state_on) {
		struct dp_state *st = &r->sh->state;

		M("# TYPE sluice_state_up gauge\nsluice_state_up %d\n"
		  "# TYPE sluice_state_sessions gauge\nsluice_state_sessions %u\n"
		  "# TYPE sluice_state_events_total counter\n"
		  "sluice_state_events_total{event=\"applied\"} %llu\n"
		  "sluice_state_events_total{event=\"snapshot\"} %llu\n"
		  "sluice_state_events_total{event=\"failure\"} %llu\n"
		  "sluice_state_events_total{event=\"report\"} %llu\n"
		  "# TYPE sluice_sessions_closed_total counter\nsluice_sessions_closed_total "
		  "%llu\n",
		  atomic_load(&st->up), st->count, U(atomic_load(&st->applied)),
		  U(atomic_load(&st->snapshots)), U(atomic_load(&st->failures)),
		  U(atomic_load(&st->reports)), U(x.m.sessions_closed));
	}
	M("# TYPE sluice_handoffs_total counter\n"
	  "sluice_handoffs_total{event=\"out\"} %llu\n"
	  "sluice_handoffs_total{event=\"in\"} %llu\n"
	  "sluice_handoffs_total{event=\"failed\"} %llu\n",
	  U(x.m.handoffs_out), U(x.m.handoffs_in), U(x.m.handoffs_failed));
	M("# TYPE sluice_engine_events_total counter\n"
	  "sluice_engine_events_total{event=\"enobufs\"} %llu\n"
	  "sluice_engine_events_total{event=\"short_send\"} %llu\n"
	  "sluice_engine_events_total{event=\"sqe_full\"} %llu\n"
	  "sluice_engine_events_total{event=\"no_defer_taskrun\"} %llu\n"
	  "sluice_engine_events_total{event=\"paused\"} %llu\n"
	  "sluice_engine_events_total{event=\"eagain\"} %llu\n"
	  "sluice_engine_events_total{event=\"misdirected_switch\"} %llu\n"
	  "sluice_engine_events_total{event=\"zc_send\"} %llu\n"
	  "sluice_engine_events_total{event=\"zc_copied\"} %llu\n"
	  "sluice_engine_events_total{event=\"zc_refused\"} %llu\n"
	  "sluice_engine_events_total{event=\"splice_start\"} %llu\n"
	  "sluice_engine_events_total{event=\"splice_fallback\"} %llu\n"
	  "sluice_engine_events_total{event=\"buffers_shed\"} %llu\n"
	  "sluice_engine_events_total{event=\"gathered_send\"} %llu\n"
	  "# TYPE sluice_spliced_bytes_total counter\nsluice_spliced_bytes_total %llu\n",
	  U(rs->enobufs), U(rs->short_sends), U(rs->sqe_full), U(rs->no_defer), U(x.io.paused),
	  U(x.io.eagain), U(x.m.misdirected_switch), U(rs->zc_sends), U(rs->zc_copied),
	  U(rs->zc_refused), U(rs->splice_starts), U(rs->splice_fallbacks), U(rs->sheds),
	  U(rs->gathered), U(rs->spliced));
	M("# TYPE sluice_tls_events_total counter\n"
	  "sluice_tls_events_total{event=\"handshake\"} %llu\n"
	  "sluice_tls_events_total{event=\"resumed\"} %llu\n"
	  "sluice_tls_events_total{event=\"handshake_failure\"} %llu\n"
	  "sluice_tls_events_total{event=\"error\"} %llu\n"
	  "sluice_tls_events_total{event=\"reload\"} %llu\n"
	  "sluice_tls_events_total{event=\"reload_failure\"} %llu\n",
	  U(x.tls.handshakes), U(x.tls.resumed), U(x.tls.handshake_failures), U(x.tls.errors),
	  U(r->sh->tls_reloads.reloads), U(r->sh->tls_reloads.reload_failures));
	{
		uint64_t cum = 0;

		M("# TYPE sluice_request_first_byte_seconds histogram\n");
		for (size_t b = 0; b < LAT_BUCKETS; b++) {
			cum += x.m.lat_count[b];
			M("sluice_request_first_byte_seconds_bucket{le=\"%g\"} %llu\n",
			  lat_bounds_ms[b] / 1000, U(cum));
		}
		cum += x.m.lat_count[LAT_BUCKETS];
		M("sluice_request_first_byte_seconds_bucket{le=\"+Inf\"} %llu\n"
		  "sluice_request_first_byte_seconds_sum %.6f\n"
		  "sluice_request_first_byte_seconds_count %llu\n",
		  U(cum), x.m.lat_sum_s, U(cum));
	}
#undef U
#undef M
	return o < cap ? (int)o : -ENOSPC;
}

/* An admin request's head, gathered across reads: a client may write it in
 * pieces (bash's printf writes line by line). 1 when it is complete in
 * a->buf, 0 to wait for more, -1 when it is too long or malformed. */
static int admin_head(struct agent *a, const struct dp_seg *g, struct dp_http_req *q)
{
	int n;

	if (!a->buf && !(a->buf = malloc(ADMIN_HEAD_MAX)))
		return -1;
	if (g->len > ADMIN_HEAD_MAX - a->len)
		return -1;
	memcpy(a->buf + a->len, g->ptr, g->len);
	a->len += g->len;
	n = dp_http_parse_request(a->buf, a->len, q);
	return n == DP_HTTP_INCOMPLETE ? 0 : n < 0 ? -1 : 1;
}

static void admin_data(struct relay *r, uint32_t c, uint32_t seg)
{
	static _Thread_local struct dp_http_req q;
	struct agent *a = dp_c(&r->io, c)->owner;
	char body[16384], resp[17000];
	int n = admin_head(a, &r->io.r.segs[seg], &q), status = 200;

	if (n == 0) { /* the rest of the head is still to come (deadline: fresh list) */
		dp_seg_release(&r->io.r, seg);
		return;
	}
	if (n < 0) {
		status = 400;
		snprintf(body, sizeof(body), "malformed request (or a head over %d bytes)\n",
			 ADMIN_HEAD_MAX);
	} else if (q.target_len == 7 && memcmp(q.target, "/health", 7) == 0) {
		snprintf(body, sizeof(body), "%s\n", r->draining ? "draining" : "ok");
		status = r->draining ? 503 : 200;
	} else if (q.target_len == 8 && memcmp(q.target, "/metrics", 8) == 0) {
		metrics_text(r, body, sizeof(body));
	} else if (q.target_len == 6 && memcmp(q.target, "/drain", 6) == 0 && q.method_len == 4 &&
		   memcmp(q.method, "POST", 4) == 0) {
		/* As SIGTERM: agents are told to move on, then the relay exits. */
		*r->sh->stop = 1;
		snprintf(body, sizeof(body), "draining\n");
	} else {
		status = 404;
		snprintf(body, sizeof(body), "try /health or /metrics\n");
	}
	dp_seg_release(&r->io.r, seg);
	n = dp_http_response(status, NULL, body, resp, sizeof(resp));
	if (n > 0)
		dp_conn_send(&r->io, c, resp, (uint32_t)n);
	dp_conn_shutdown(&r->io, c);
}

/* ---- engine callbacks ---- */

static void on_data(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, c);

	switch (s->kind) {
	case K_PUBLIC: {
		struct pub *p = s->owner;

		meter(r, c, len); /* request heads and bodies count as they come in */
		if (p->phase == P_DONE)
			dp_seg_release(&io->r, seg);
		else
			pub_data(r, p, seg);
		break;
	}
	case K_AGENT_NEW:
	case K_CTRL: agent_data(r, c, seg); break;
	case K_ADMIN: admin_data(r, c, seg); break;
	default:
		/* An idle data connection must stay silent until START. */
		dp_seg_release(&io->r, seg);
		dp_conn_close(io, c);
		break;
	}
}

static void on_eof(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = dp_c(io, c);

	if (s->kind == K_PUBLIC && s->peer != DP_NIL) {
		dp_conn_shutdown(io, s->peer); /* half-close toward the app */
		if (s->flags & DP_C_SHUT)
			dp_conn_close(io, c);
		return;
	}
	if (s->kind == K_PUBLIC && ((struct pub *)s->owner)->waiting)
		return; /* the FIN is passed on once a data connection is attached */
	dp_conn_close(io, c);
}

/* The peer's address as text into ip (INET6_ADDRSTRLEN bytes); 1 for IPv6. */
static int peer_ip(int fd, char *ip)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	strcpy(ip, "unknown");
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	return sl_addr_ip((struct sockaddr *)&ss, ip);
}

/* A public connection: HTTP (tcp 0) or a TCP tunnel's client (t), or one
 * another relay forwards (link). */
static void accept_public(struct relay *r, int fd, int tcp, int https, struct dp_tunnel *t,
			  int link)
{
	struct pub *p = calloc(1, sizeof(*p));
	uint32_t c;
	int one = 1;

	r->shed_done = 0; /* traffic: the next idle spell sheds again */
	if (p == NULL) {
		close(fd);
		return;
	}
	p->link = DP_NIL;
	p->link_pending = (uint8_t)link;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	p->ipv6 = (uint8_t)peer_ip(fd, p->ip);
	p->held = DP_CHAIN_EMPTY;
	p->tcp = (uint8_t)tcp;
	c = dp_conn_new(&r->io, fd, tcp ? K_PUBLIC_TCP : K_PUBLIC, p);
	if (c == DP_NIL) {
		free(p);
		return;
	}
	p->slot = c;
	p->https = (uint8_t)https;
	if (https && dp_tls_accept(&r->io, c, &r->sh->tls, 1) < 0) {
		dp_conn_close(&r->io, c);
		return;
	}
	if (!tcp) {
		dp_c(&r->io, c)->flags |= DP_C_INTERCEPT;
		set_deadline(r, p, r->cfg->head_timeout_ms, E_408);
		dp_conn_recv(&r->io, c);
		return;
	}
	r->m.tcp_conns++;
	p->phase = P_RAW;
	p->t = t;
	p->epoch = t->epoch;
	tunnel_ref(t);
	if (t->ctrl == DP_NIL || !dp_acl_ok(t->acl, p->ip, p->ipv6) || !tcp_limit_ok(r, t)) {
		dp_conn_close(&r->io, c);
		return;
	}
	acquire_data(r, p);
}

/* A localtunnel client's socket: a data connection of its tunnel at once,
 * with no frames: the client pipes whatever comes to its local service. */
static void accept_lt(struct relay *r, int fd, struct dp_tunnel *t)
{
	struct agent *a = calloc(1, sizeof(*a));
	uint32_t c;
	int one = 1;

	if (a == NULL || !t->linked) {
		free(a);
		close(fd);
		return;
	}
	a->moving_to = -1;
	a->raw = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	peer_ip(fd, a->ip);
	c = dp_conn_new(&r->io, fd, K_DATA, a);
	if (c == DP_NIL) {
		free(a);
		return;
	}
	a->slot = c;
	a->t = t;
	a->epoch = t->epoch;
	tunnel_ref(t);
	dp_conn_recv(&r->io, c);
	data_ready(r, t, c);
}

/* A socket on an lt port: its tunnel's at once, or parked until the
 * session arrives (the client connects as soon as the API answered). */
static void lt_accepted(struct relay *r, int fd, struct lt_port *lp)
{
	struct lt_orphan *o;

	if (lp->t) {
		accept_lt(r, fd, lp->t);
		return;
	}
	if (r->nlt_orphans == LT_ORPHANS_MAX) {
		close(fd);
		return;
	}
	o = &r->lt_orphans[r->nlt_orphans++];
	o->fd = fd;
	o->port = lp->port;
	o->deadline_ms = r->now_ms + LT_ORPHAN_MS;
}

/* Orphans whose session came, or whose wait is over. */
static void lt_adopt_orphans(struct relay *r)
{
	uint32_t i = 0;

	while (i < r->nlt_orphans) {
		struct lt_orphan *o = &r->lt_orphans[i];
		struct lt_port *lp = &r->lt_ports[o->port - r->cfg->lt_lo];

		if (lp->t == NULL && o->deadline_ms > r->now_ms) {
			i++;
			continue;
		}
		if (lp->t)
			accept_lt(r, o->fd, lp->t);
		else
			close(o->fd);
		*o = r->lt_orphans[--r->nlt_orphans];
	}
}

static void accept_agent(struct relay *r, int fd, int kind)
{
	struct agent *a = calloc(1, sizeof(*a));
	uint32_t c;
	int one = 1;

	if (a == NULL || (kind == K_AGENT_NEW && (a->buf = malloc(AGENT_BUF)) == NULL)) {
		free(a);
		close(fd);
		return;
	}
	a->moving_to = -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	peer_ip(fd, a->ip);
	c = dp_conn_new(&r->io, fd, (uint8_t)kind, a);
	if (c == DP_NIL) {
		free(a->buf);
		free(a);
		return;
	}
	fresh_link(r, a, c);
	if (kind == K_AGENT_NEW && r->sh->tls_on && dp_tls_accept(&r->io, c, &r->sh->tls, 0) < 0) {
		dp_conn_close(&r->io, c);
		return;
	}
	dp_conn_recv(&r->io, c);
}

static void on_accept(struct dp_io *io, uint32_t l, int fd)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, l);

	switch (s->kind) {
	case K_LISTEN_HTTP: accept_public(r, fd, 0, 0, NULL, 0); break;
	case K_LISTEN_HTTPS: accept_public(r, fd, 0, 1, NULL, 0); break;
	case K_LISTEN_TCP: accept_public(r, fd, 1, 0, s->owner, 0); break;
	case K_LISTEN_LINK: accept_public(r, fd, 0, 0, NULL, 1); break;
	case K_LISTEN_LT: lt_accepted(r, fd, s->owner); break;
	case K_LISTEN_AGENTS: accept_agent(r, fd, K_AGENT_NEW); break;
	case K_LISTEN_ADMIN: accept_agent(r, fd, K_ADMIN); break;
	default: close(fd); break;
	}
}

static void pub_closed(struct relay *r, struct dp_conn *s)
{
	struct pub *p = s->owner;

	r->m.bytes_in += s->rx;
	r->m.bytes_out += s->tx;
	untime(r, p);
	if (p->waiting)
		unlink_waiter(r, p);
	if (p->link != DP_NIL) {
		/* Not connected yet: the link has nothing to carry. Paired: the
		 * pump passes the close on. */
		dp_c(&r->io, p->link)->owner = NULL;
		if (dp_c(&r->io, p->link)->peer == DP_NIL)
			dp_conn_close(&r->io, p->link);
	}
	dp_chain_release(&r->io.r, &p->held);
	free(p->orig);
	if (p->t && p->counted) {
		p->t->live--;
		p->t->bytes_in += s->rx;
		p->t->bytes_out += s->tx;
	}
	if (p->t)
		tunnel_unref(p->t);
	free(p->acc);
	free(p);
}

static void remove_idle(struct relay *r, struct dp_tunnel *t, uint32_t c)
{
	uint32_t *pp = &t->idle;

	while (*pp != DP_NIL && *pp != c)
		pp = &dp_c(&r->io, *pp)->olink;
	if (*pp == c) {
		*pp = dp_c(&r->io, c)->olink;
		t->nidle--;
	}
}

static void agent_closed(struct relay *r, uint32_t c, struct dp_conn *s)
{
	struct agent *a = s->owner;
	struct dp_tunnel *t = a->t;

	if (t != NULL) {
		if (s->kind == K_CTRL && t->ctrl == c)
			tunnel_offline(r, t);
		if (s->kind == K_DATA && a->idle)
			remove_idle(r, t, c);
		tunnel_unref(t);
	}
	fresh_unlink(r, a);
	free(a->buf);
	free(a);
}

static void on_close(struct dp_io *io, uint32_t c)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, c);

	switch (s->kind) {
	case K_PUBLIC:
	case K_PUBLIC_TCP: pub_closed(r, s); break;
	case K_AGENT_NEW:
	case K_CTRL:
	case K_DATA:
	case K_ADMIN: agent_closed(r, c, s); break;
	case K_LISTEN_TCP: tunnel_unref(s->owner); break;
	case K_LINK:
		if (s->owner)
			((struct pub *)s->owner)->link = DP_NIL;
		break;
	default: break;
	}
	s->owner = NULL;
}

/*
 * The data connection of public connection c failed or ended. If the client
 * has not had a byte of response yet, it gets a readable 502 instead of a
 * bare close (an agent killed while its idle connections were being handed
 * out, say).
 */
static int on_peer_lost(struct dp_io *io, uint32_t c, int eof)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, c);
	struct pub *p = s->owner;
	uint32_t d = s->peer;

	/* An answer may still sit in the send queue when its FIN arrives (one
	 * send in flight): tx alone would call it unanswered. */
	if (s->kind != K_PUBLIC || s->tx > 0 || p->answered || p->phase == P_DONE ||
	    p->phase == P_RAW)
		return 0;
	s->peer = DP_NIL;
	if (d != DP_NIL) {
		dp_c(io, d)->peer = DP_NIL;
		dp_conn_close(io, d);
	}
	/* An agent leaving for another relay may close a data connection it was
	 * handed a request on before it read it: a request that can be sent
	 * again is, once, wherever its tunnel is now. */
	if (p->replayable && p->replays == 0 && p->orig && p->t && p->t->managed &&
	    r->sh->cluster_on) {
		p->replays++;
		r->m.replays++;
		if (requeue_waiter(r, p) == 0)
			return 1;
	}
	pub_error(r, p, E_502, "Retry-After: 5\r\n",
		  eof ? "the agent closed the connection before answering\n"
		      : "the connection to the agent failed before an answer\n");
	return 1;
}

/* Response bytes from data connection c: the first one after a request head
 * times the request (relay, agent and app together) into the histogram. */
static void on_forwarded(struct dp_io *io, uint32_t c, uint32_t len)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, c);
	struct pub *p;
	double ms;
	size_t b;

	meter(r, c, len);
	if (s->kind != K_DATA || s->peer == DP_NIL || dp_c(io, s->peer)->kind != K_PUBLIC)
		return;
	p = dp_c(io, s->peer)->owner;
	p->answered = 1;
	free(p->orig); /* answered: it will not be sent again */
	p->orig = NULL;
	if (p->req_ns == 0)
		return;
	ms = (double)(r->io.now_ns - p->req_ns) / 1e6;
	p->req_ns = 0;
	for (b = 0; b < LAT_BUCKETS && ms > lat_bounds_ms[b]; b++)
		;
	r->m.lat_count[b]++;
	r->m.lat_sum_s += ms / 1000;
}

static void on_wake(struct dp_io *io);

static void on_connect(struct dp_io *io, uint32_t c, int res)
{
	if (dp_c(io, c)->kind == K_LINK)
		on_link_connected(io->owner, c, res);
	else
		dp_conn_close(io, c);
}

static const struct dp_io_ops relay_ops = {
	.on_connect = on_connect,
	.on_forwarded = on_forwarded,
	.on_peer_lost = on_peer_lost,
	.on_data = on_data,
	.on_eof = on_eof,
	.on_accept = on_accept,
	.on_close = on_close,
	.on_wake = on_wake,
};

/* ---- handing sockets to the worker that owns their tunnel ---- */

/* Stop receiving on c; run_moves() exports it once nothing is in flight. */
static void begin_move(struct relay *r, uint32_t c)
{
	dp_conn_pause(&r->io, c);
	dp_queue_push(&r->moving, dp_ud(c, dp_c(&r->io, c)->gen, DP_OP_NONE));
}

/* Queue h in worker to's inbox and wake it; -EPIPE once it stopped taking them. */
static int inbox_push(struct relay *to, struct handoff *h)
{
	int open;

	/* The wake is under the lock too: once the inbox is closed, the
	 * worker's eventfd may be gone. */
	pthread_mutex_lock(&to->inbox_mu);
	open = !to->inbox_closed;
	if (open) {
		h->next = to->inbox;
		to->inbox = h;
		dp_io_wake(&to->io);
	}
	pthread_mutex_unlock(&to->inbox_mu);
	return open ? 0 : -EPIPE;
}

/* Export moving socket c into a handoff for its worker. Returns 0 when it
 * is not idle yet (try again next turn), 1 when it is gone. */
static int try_move(struct relay *r, uint32_t c)
{
	struct dp_conn *s = dp_c(&r->io, c);
	struct pub *p = s->kind == K_PUBLIC ? s->owner : NULL;
	struct agent *a = s->kind == K_AGENT_NEW ? s->owner : NULL;
	uint32_t len = p ? p->acc_len : a ? a->len : 0;
	struct handoff *h;
	uint32_t gen = s->gen;
	int to;

	if ((p == NULL || p->phase != P_MOVING) && (a == NULL || a->moving_to < 0))
		return 1; /* it ended otherwise (an error answered it) */
	if (!dp_conn_can_export(&r->io, c))
		return 0;
	if ((h = malloc(sizeof(*h) + len)) == NULL) {
		r->m.handoffs_failed++;
		dp_conn_close(&r->io, c);
		return 1;
	}
	memset(h, 0, sizeof(*h));
	h->kind = s->kind;
	h->len = len;
	memcpy(h->bytes, p ? p->acc : a->buf, len);
	memcpy(h->ip, p ? p->ip : a->ip, sizeof(h->ip));
	h->https = p ? p->https : 0;
	h->ipv6 = p ? p->ipv6 : 0;
	h->hops = (uint8_t)((p ? p->hops : a->hops) + 1);
	h->link_hops = p ? p->link_hops : 0;
	to = p ? p->moving_to : a->moving_to;
	if (dp_conn_export(&r->io, c, &h->ex) < 0) { /* frees p or a, or closes c */
		r->m.handoffs_failed++;
		free(h);
		if (s->fd >= 0 && s->gen == gen)
			dp_conn_close(&r->io, c);
		return 1;
	}
	if (inbox_push(r->sh->w[to], h) < 0) {
		r->m.handoffs_failed++;
		dp_export_drop(&h->ex);
		free(h);
		return 1;
	}
	r->m.handoffs_out++;
	return 1;
}

static void run_moves(struct relay *r)
{
	struct dp_queue q = r->moving;

	r->moving = (struct dp_queue){0};
	for (uint32_t i = 0; i < q.len; i++) {
		uint32_t c = dp_ud_slot(q.v[i]);
		struct dp_conn *s = dp_c(&r->io, c);

		if (s->fd < 0 || s->gen != dp_ud_gen(q.v[i]) || (s->flags & DP_C_CLOSING))
			continue;
		if (!try_move(r, c))
			dp_queue_push(&r->moving, q.v[i]);
	}
	free(q.v);
}

/* A public connection from another worker: its request head is replayed here. */
static void adopt_public(struct relay *r, struct handoff *h)
{
	struct pub *p = calloc(1, sizeof(*p));
	uint32_t c, seg;

	if (p == NULL) {
		dp_export_drop(&h->ex);
		return;
	}
	p->held = DP_CHAIN_EMPTY;
	p->link = DP_NIL;
	p->https = h->https;
	p->ipv6 = h->ipv6;
	p->hops = h->hops;
	p->link_hops = h->link_hops;
	memcpy(p->ip, h->ip, sizeof(p->ip));
	if ((c = dp_conn_adopt(&r->io, &h->ex, K_PUBLIC, p)) == DP_NIL) {
		free(p);
		return;
	}
	p->slot = c;
	dp_c(&r->io, c)->flags |= DP_C_INTERCEPT;
	set_deadline(r, p, r->cfg->head_timeout_ms, E_408);
	dp_conn_recv(&r->io, c);
	if ((seg = dp_seg_copy(&r->io.r, h->bytes, h->len)) == DP_NIL)
		pub_error(r, p, E_503, NULL, "relay out of memory\n");
	else
		pub_data(r, p, seg);
}

/* An agent connection from another worker: its first frames are read here. */
static void adopt_agent(struct relay *r, struct handoff *h)
{
	struct agent *a = calloc(1, sizeof(*a));
	uint32_t c;

	if (a == NULL || h->len > AGENT_BUF || (a->buf = malloc(AGENT_BUF)) == NULL) {
		free(a);
		dp_export_drop(&h->ex);
		return;
	}
	a->moving_to = -1;
	a->hops = h->hops;
	memcpy(a->ip, h->ip, sizeof(a->ip));
	if ((c = dp_conn_adopt(&r->io, &h->ex, K_AGENT_NEW, a)) == DP_NIL) {
		free(a->buf);
		free(a);
		return;
	}
	fresh_link(r, a, c);
	memcpy(a->buf, h->bytes, h->len);
	a->len = h->len;
	dp_conn_recv(&r->io, c);
	agent_frames(r, c);
}

/* Take every handoff in the inbox (oldest first). */
static void drain_inbox(struct relay *r)
{
	struct handoff *h, *rev = NULL, *next;

	pthread_mutex_lock(&r->inbox_mu);
	h = r->inbox;
	r->inbox = NULL;
	pthread_mutex_unlock(&r->inbox_mu);
	for (; h; h = next) {
		next = h->next;
		h->next = rev;
		rev = h;
	}
	for (h = rev; h; h = next) {
		next = h->next;
		r->m.handoffs_in++;
		if (h->kind == K_PUBLIC)
			adopt_public(r, h);
		else
			adopt_agent(r, h);
		free(h);
	}
}

static void state_work(struct relay *r);

static void on_wake(struct dp_io *io)
{
	struct relay *r = io->owner;

	drain_inbox(r);
	if (r->sh->state_on)
		state_work(r);
}

/* This worker stops: handoffs still on their way are refused, and dropped. */
static void close_inbox(struct relay *r)
{
	struct handoff *h, *next;

	pthread_mutex_lock(&r->inbox_mu);
	r->inbox_closed = 1;
	h = r->inbox;
	r->inbox = NULL;
	pthread_mutex_unlock(&r->inbox_mu);
	for (; h; h = next) {
		next = h->next;
		dp_export_drop(&h->ex);
		free(h);
	}
}

/* ---- periodic work ---- */

static void expire_timed(struct relay *r)
{
	struct pub *p = r->timed, *next;

	for (; p; p = next) {
		next = p->tnext;
		if (p->deadline_ms > r->now_ms)
			continue;
		if (p->waiting)
			unlink_waiter(r, p);
		if (p->deadline_err == E_COUNT) {
			untime(r, p);
			dp_conn_close(&r->io, p->slot);
		} else if (p->deadline_err == E_408)
			pub_error(r, p, E_408, NULL, "request head not received in time\n");
		else
			pub_error(r, p, E_502, "Retry-After: 5\r\n",
				  "the agent did not open a connection in time\n");
	}
}

static void kill_tunnel(struct relay *r, struct dp_tunnel *t, const char *why);

static void sweep_tunnels(struct relay *r)
{
	struct dp_tunnel *t, *next;
	struct pr_msg ping = {.type = PR_PING};
	uint64_t now_s = (uint64_t)time(NULL);

	for (t = r->tunnels.all; t; t = next) {
		next = t->next;
		/* A control-plane session ends at its expiry second. */
		if (t->managed && now_s >= t->expires) {
			kill_tunnel(r, t, "expired");
			continue;
		}
		if (t->ctrl != DP_NIL) {
			if (r->now_ms - t->last_rx_ms > r->cfg->dead_ms) {
				sl_warn("tunnel %s: agent missed its heartbeats; closing", t->name);
				dp_conn_close(&r->io, t->ctrl);
				continue;
			}
			if (r->now_ms - t->last_ping_ms >= r->cfg->heartbeat_ms) {
				ping.nonce = r->now_ms;
				t->last_ping_ms = r->now_ms;
				dp_conn_send_msg(&r->io, t->ctrl, &ping);
			}
			continue;
		}
		if (t->lt && !r->draining)
			continue; /* no control connection ever: it lives until its session ends */
		if (r->now_ms - t->offline_since_ms < r->cfg->grace_ms && !r->draining)
			continue;
		sl_info("tunnel %s: released after the grace period", t->name);
		if (r->sh->cluster_on && t->managed)
			dp_cluster_release(&r->sh->cluster, t->sid);
		dp_tunnels_remove(&r->tunnels, t);
		dp_owners_release(&r->sh->owners, t->name, t->sid, r->idx);
		t->linked = 0;
		/* Hold it across the listener's close (whose reference may be the
		 * last, freeing it at once on epoll) and the unref below. */
		t->refs++;
		if (t->tcp_listener != DP_NIL)
			dp_conn_close(&r->io, t->tcp_listener);
		tunnel_unref(t);
	}
}

/* A session revoked, deleted or expired: its agent is told, every
 * connection of the tunnel closes now, and the name is free at once. */
static void kill_tunnel(struct relay *r, struct dp_tunnel *t, const char *why)
{
	struct pr_msg e = {.type = PR_ERROR, .code = PR_E_AUTH};

	sl_info("tunnel %s: session %s %s; closing its connections", t->name, t->sid, why);
	r->m.sessions_closed++;
	snprintf(e.text, sizeof(e.text), "session %s", why);
	if (t->ctrl != DP_NIL) {
		dp_conn_send_msg(&r->io, t->ctrl, &e);
		dp_conn_shutdown(&r->io, t->ctrl);
	}
	close_idle(r, t);
	fail_waiters(r, t, 0);
	/* Every public and data connection of t; bounded by the slot table. */
	for (uint32_t i = 0; i < r->io.nconns; i++) {
		struct dp_conn *s = &r->io.conns[i];

		if (s->fd < 0 || s->owner == NULL)
			continue;
		if (((s->kind == K_PUBLIC || s->kind == K_PUBLIC_TCP) &&
		     ((struct pub *)s->owner)->t == t) ||
		    (s->kind == K_DATA && ((struct agent *)s->owner)->t == t)) {
			/* A reset, not a FIN behind queued bytes: the session is
			 * over now, not once its buffers drain. */
			struct linger lg = {.l_onoff = 1, .l_linger = 0};

			setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			dp_conn_close(&r->io, i);
		}
	}
	for (uint32_t i = 0; i < r->nlt_ports; i++)
		if (r->lt_ports[i].t == t)
			r->lt_ports[i].t = NULL;
	if (r->sh->cluster_on && t->managed)
		dp_cluster_release(&r->sh->cluster, t->sid);
	dp_tunnels_remove(&r->tunnels, t);
	dp_owners_release(&r->sh->owners, t->name, t->sid, r->idx);
	t->linked = 0;
	t->refs++; /* hold across the listener's close and the unref: it frees once */
	if (t->tcp_listener != DP_NIL)
		dp_conn_close(&r->io, t->tcp_listener);
	tunnel_unref(t);
}

/* The localtunnel sessions of the table that this relay does not serve yet. */
struct lt_scan {
	struct pr_session *v;
	size_t n, cap;
	uint64_t now;
};

static void lt_collect(void *ud, const struct pr_session *s)
{
	struct lt_scan *sc = ud;

	if (s->lt_port == 0 || s->status != PR_SS_ACTIVE || sc->now >= s->expires)
		return;
	if (sc->n == sc->cap) {
		size_t cap = sc->cap ? sc->cap * 2 : 16;
		void *nv = realloc(sc->v, cap * sizeof(*sc->v));

		if (nv == NULL)
			return;
		sc->v = nv;
		sc->cap = cap;
	}
	sc->v[sc->n++] = *s;
}

/* A tunnel for a localtunnel session: no agent ever says HELLO, so worker 0
 * makes it when the session appears, with a listener on the session's port
 * for the client's raw sockets. */
static void open_lt(struct relay *r, const struct pr_session *s)
{
	struct pr_msg m = {.proto = PR_PROTO_HTTP};
	struct dp_tunnel *t;
	struct lt_port *lp;
	int code, w = -1;

	if (s->lt_port < r->cfg->lt_lo || s->lt_port > r->cfg->lt_hi || r->lt_ports == NULL) {
		sl_warn("localtunnel session %s: port %u is not in this relay's --lt-ports", s->sid,
			s->lt_port);
		return;
	}
	lp = &r->lt_ports[s->lt_port - r->cfg->lt_lo];
	if (lp->t)
		return; /* still held by an earlier session: retried at the next change */
	snprintf(m.name, sizeof(m.name), "%s", s->name);
	if ((t = new_tunnel(r, &m, s, &code, &w)) == NULL)
		return;
	t->lt = 1;
	lp->t = t;
	sl_info("localtunnel session %s: %s, client sockets on port %u", s->sid, t->name, lp->port);
	lt_adopt_orphans(r);
}

static void open_lt_sessions(struct relay *r)
{
	struct lt_scan sc = {.now = (uint64_t)time(NULL)};

	dp_state_foreach(&r->sh->state, lt_collect, &sc);
	for (size_t i = 0; i < sc.n; i++)
		if (dp_owners_find(&r->sh->owners, 1, sc.v[i].sid, strlen(sc.v[i].sid)) ==
		    DP_OWNER_NONE)
			open_lt(r, &sc.v[i]);
	free(sc.v);
}

/* Tunnels of control-plane sessions the table says stopped being usable
 * (checked only when it changed; expiry is the sweep's). */
static void check_sessions(struct relay *r)
{
	uint64_t now = (uint64_t)time(NULL), gen = atomic_load(&r->sh->state.revoked);
	struct dp_tunnel *t, *next;

	if (gen == r->revoked_seen)
		return;
	r->revoked_seen = gen;
	for (t = r->tunnels.all; t; t = next) {
		next = t->next;
		if (t->managed && !dp_state_usable(&r->sh->state, t->sid, t->tok_epoch, now))
			kill_tunnel(r, t, "revoked");
	}
}

/* Sessions whose limits changed (PUT .../limits): their tunnels take them. */
static void refresh_limits(struct relay *r)
{
	uint64_t gen = atomic_load(&r->sh->state.limits_changed);
	struct pr_session rec;

	if (gen == r->limits_seen)
		return;
	r->limits_seen = gen;
	for (struct dp_tunnel *t = r->tunnels.all; t; t = t->next)
		if (t->managed && dp_state_get(&r->sh->state, t->sid, &rec) == 0)
			set_limits(t, &rec);
}

/* Every second: this worker's session counters, for the state follower. */
static void publish_counts(struct relay *r)
{
	size_t n = 0;

	pthread_mutex_lock(&r->snap_mu);
	for (struct dp_tunnel *t = r->tunnels.all; t; t = t->next) {
		struct dp_state_counts *c;

		if (!t->managed)
			continue;
		if (n == r->counts_cap) {
			size_t cap = r->counts_cap ? r->counts_cap * 2 : 64;
			void *nc = realloc(r->counts, cap * sizeof(*r->counts));

			if (nc == NULL)
				break;
			r->counts = nc;
			r->counts_cap = cap;
		}
		c = &r->counts[n++];
		snprintf(c->sid, sizeof(c->sid), "%.32s", t->sid);
		c->connections = t->conns;
		c->live = t->live;
		c->requests = t->requests;
		c->bytes_in = t->bytes_in;
		c->bytes_out = t->bytes_out;
	}
	r->ncounts = n;
	pthread_mutex_unlock(&r->snap_mu);
}

/* The follower's collect hook: every worker's last published counters. */
static size_t collect_counts(void *ud, struct dp_state_counts *out, size_t cap)
{
	struct shared *sh = ud;
	size_t n = 0;

	for (int i = 0; i < sh->nworkers; i++) {
		struct relay *w = sh->w[i];

		pthread_mutex_lock(&w->snap_mu);
		for (size_t j = 0; j < w->ncounts && n < cap; j++)
			out[n++] = w->counts[j];
		pthread_mutex_unlock(&w->snap_mu);
	}
	return n;
}

/* Sessions: revoked or expired ones close, new localtunnel ones open
 * (worker 0), parked localtunnel sockets find their session or give up. */
static void state_work(struct relay *r)
{
	uint64_t changed = atomic_load(&r->sh->state.lt_changed);

	check_sessions(r);
	refresh_limits(r);
	/* Only localtunnel records matter here: a scan of the whole table per
	 * change would hold its read lock through a large snapshot and starve
	 * the follower's writes. */
	if (r->idx == 0 && r->lt_ports && changed != r->changed_seen) {
		r->changed_seen = changed;
		open_lt_sessions(r);
	}
	if (r->nlt_orphans)
		lt_adopt_orphans(r);
}

/* The follower applied records: wake every worker (any thread may). */
static void wake_workers(void *ud)
{
	struct shared *sh = ud;

	for (int i = 0; i < sh->nworkers; i++) {
		struct relay *w = sh->w[i];

		/* Under the inbox lock, as handoffs are: never a closed eventfd. */
		pthread_mutex_lock(&w->inbox_mu);
		if (w->wake_ready && !w->inbox_closed)
			dp_io_wake(&w->io);
		pthread_mutex_unlock(&w->inbox_mu);
	}
}

static uint32_t public_conns(struct relay *r);

/* With no public connection open, memory a burst left behind goes back to
 * the kernel: the receive buffers' pages (dp_ring_shed; a burst leaves them
 * all touched, nbufs x bufsize of RSS per worker) and the heap that its
 * connections' TLS state and segments left free (malloc keeps it). Every
 * 5 s at most, and only after a burst: the pages shed are faulted in again
 * by the next one. */
static void shed_buffers(struct relay *r)
{
	if (r->now_ms < r->next_shed_ms)
		return;
	r->next_shed_ms = r->now_ms + 5000;
	if (public_conns(r) != 0) {
		r->shed_done = 0;
		return;
	}
	if (!r->shed_done && dp_ring_shed(&r->io.r)) { /* held buffers: not yet */
		sl_heap_trim();
		r->shed_done = 1; /* until public traffic comes again */
	}
}

static void tick(struct relay *r)
{
	r->now_ms = sl_mono_ms();
	if (r->moving.len)
		run_moves(r);
	if (r->throttled.len)
		unthrottle(r);
	if (r->parked.len)
		run_parked(r);
	publish(r);
	if (r->now_ms < r->next_sweep_ms)
		return;
	r->next_sweep_ms = r->now_ms + 100;
	expire_timed(r);
	expire_fresh(r);
	sweep_tunnels(r);
	shed_buffers(r);
	if (r->sh->state_on) {
		state_work(r);
		if (r->now_ms >= r->next_counts_ms) {
			r->next_counts_ms = r->now_ms + 1000;
			publish_counts(r);
		}
	}
}

/* ---- start, run, drain ---- */

static int listen_on(struct relay *r, const char *addr, int kind, uint32_t *slot)
{
	int fd = sl_listen_tcp(addr, 4096, SL_LISTEN_REUSEPORT);

	if (fd < 0) {
		sl_error("cannot listen on %s: %s", addr, strerror(-fd));
		return fd;
	}
	*slot = dp_conn_new(&r->io, fd, (uint8_t)kind, NULL);
	if (*slot == DP_NIL)
		return -ENFILE;
	dp_conn_accept(&r->io, *slot);
	return 0;
}

static void start_drain(struct relay *r)
{
	struct pr_msg g = {.type = PR_GOAWAY, .code = PR_E_DRAIN};

	r->draining = 1;
	if (r->sh->cluster_on && r->idx == 0)
		dp_cluster_set_draining(&r->sh->cluster);
	/* The link listener stays: requests other relays forward here while
	 * the agents move on still find their tunnels (or their new relay). */
	snprintf(g.text, sizeof(g.text), "relay shutting down");
	dp_conn_close(&r->io, r->l_http);
	if (r->l_https != DP_NIL)
		dp_conn_close(&r->io, r->l_https);
	dp_conn_close(&r->io, r->l_agents);
	for (uint32_t i = 0; i < r->nlt_ports; i++)
		dp_conn_close(&r->io, r->lt_ports[i].slot);
	for (struct dp_tunnel *t = r->tunnels.all; t; t = t->next)
		if (t->ctrl != DP_NIL)
			dp_conn_send_msg(&r->io, t->ctrl, &g);
	sl_info("draining: listeners closed, agents told to go away");
}

static uint32_t public_conns(struct relay *r)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < r->io.nconns; i++)
		n += r->io.conns[i].fd >= 0 &&
		     (r->io.conns[i].kind == K_PUBLIC || r->io.conns[i].kind == K_PUBLIC_TCP);
	return n;
}

/* --lt-ports on worker 0: one listener per port, on the public host. */
static int listen_lt_ports(struct relay *r)
{
	const char *colon = strrchr(r->cfg->http, ':');
	uint32_t n = (uint32_t)(r->cfg->lt_hi - r->cfg->lt_lo) + 1;
	char addr[300];

	r->lt_ports = calloc(n, sizeof(*r->lt_ports));
	r->lt_orphans = calloc(LT_ORPHANS_MAX, sizeof(*r->lt_orphans));
	if (r->lt_ports == NULL || r->lt_orphans == NULL)
		return -ENOMEM;
	r->nlt_ports = n;
	for (uint32_t i = 0; i < n; i++) {
		struct lt_port *lp = &r->lt_ports[i];
		int fd;

		lp->port = (uint16_t)(r->cfg->lt_lo + i);
		snprintf(addr, sizeof(addr), "%.*s:%u", (int)(colon - r->cfg->http), r->cfg->http,
			 lp->port);
		if ((fd = sl_listen_tcp(addr, 512, 0)) < 0) {
			sl_error("--lt-ports: cannot listen on %s: %s", addr, strerror(-fd));
			return fd;
		}
		lp->slot = dp_conn_new(&r->io, fd, K_LISTEN_LT, lp);
		if (lp->slot == DP_NIL)
			return -ENFILE;
		dp_conn_accept(&r->io, lp->slot);
	}
	return 0;
}

/* Set up worker r in the thread that runs it (a ring with SINGLE_ISSUER
 * belongs to the thread that made it). Returns 0 or a negative errno. */
static int relay_init(struct relay *r)
{
	const struct dp_relay_config *cfg = r->cfg;
	int err;

	err = dp_io_init(&r->io, cfg->max_conns, cfg->nbufs, cfg->bufsize, &relay_ops, r,
			 (enum dp_engine)cfg->engine);
	if (err < 0) {
		sl_error("I/O engine set-up failed: %s", strerror(-err));
		return err;
	}
	if (cfg->engine == DP_ENGINE_URING)
		r->io.zc_min = cfg->send_zc;
	r->io.splice = cfg->splice;
	if ((err = dp_io_wake_init(&r->io)) < 0) {
		sl_error("worker wake-up set-up failed: %s", strerror(-err));
		goto fail_io;
	}
	pthread_mutex_lock(&r->inbox_mu);
	r->wake_ready = 1;
	pthread_mutex_unlock(&r->inbox_mu);
	if ((err = dp_tunnels_init(&r->tunnels, 1024)) < 0)
		goto fail_io;
	r->l_https = r->l_admin = r->l_link = DP_NIL;
	/* Every worker listens on the public and agent ports (SO_REUSEPORT
	 * spreads connections); /health and /metrics are worker 0's. */
	if ((cfg->https && (err = listen_on(r, cfg->https, K_LISTEN_HTTPS, &r->l_https)) < 0) ||
	    (err = listen_on(r, cfg->http, K_LISTEN_HTTP, &r->l_http)) < 0 ||
	    (err = listen_on(r, cfg->agents, K_LISTEN_AGENTS, &r->l_agents)) < 0 ||
	    (r->idx == 0 && (err = listen_on(r, cfg->admin, K_LISTEN_ADMIN, &r->l_admin)) < 0) ||
	    (r->sh->cluster_on && (err = listen_on(r, cfg->link, K_LISTEN_LINK, &r->l_link)) < 0) ||
	    (r->idx == 0 && cfg->lt_lo && (err = listen_lt_ports(r)) < 0))
		goto fail_tunnels;
	return 0;
fail_tunnels:
	dp_tunnels_free(&r->tunnels);
fail_io:
	pthread_mutex_lock(&r->inbox_mu);
	r->wake_ready = 0;
	pthread_mutex_unlock(&r->inbox_mu);
	dp_io_free(&r->io);
	return err;
}

/* SIGHUP, on worker 0: one store serves every worker. */
static void reload_certs(struct relay *r)
{
	if (!r->sh->tls_on)
		sl_info("SIGHUP: no certificates to reload");
	else if (dp_tls_server_reload(&r->sh->tls) == 0)
		sl_info("certificates reloaded (%u from --cert-dir)",
			dp_tls_server_names(&r->sh->tls));
	else
		sl_error("certificate reload failed: the previous certificates still serve");
}

static int stopping(struct relay *r)
{
	return *r->sh->stop || atomic_load(&r->sh->abort);
}

/* A worker's loop: serve until told to stop, drain, then release everything. */
static int worker_loop(struct relay *r)
{
	uint64_t drain_end = 0, drain_min = 0;
	int err = 0;

	while (!(r->draining && r->now_ms >= drain_min &&
		 (public_conns(r) == 0 || r->now_ms >= drain_end))) {
		/* Throttled or parked sockets are looked at more often. */
		if ((err = dp_io_run_once(&r->io, r->throttled.len || r->parked.len ? 10 : 100)) <
		    0)
			break;
		tick(r);
		if (r->idx == 0 && r->sh->leases_on && atomic_load(&r->sh->leases.drain_asked) &&
		    !*r->sh->stop) {
			sl_info("the control plane asks this relay to drain");
			*r->sh->stop = 1;
		}
		if (r->idx == 0 && *r->sh->reload) {
			*r->sh->reload = 0;
			reload_certs(r);
		}
		if (stopping(r) && !r->draining) {
			start_drain(r);
			drain_end = r->now_ms + r->cfg->drain_timeout_ms;
			/* One more turn at least, so queued answers (/drain's) go out;
			 * in a cluster, long enough for the agents to bind elsewhere
			 * and other relays' cached owners to expire: what they still
			 * forward here meanwhile is passed on, not refused. */
			drain_min = r->now_ms + (r->sh->cluster_on ? DRAIN_CLUSTER_MS : 50);
			if (drain_min > drain_end)
				drain_min = drain_end;
		}
	}
	if (r->idx == 0 || public_conns(r))
		sl_info("worker %d stopped (%u public connections left)", r->idx, public_conns(r));
	close_inbox(r);
	dp_io_close_all(&r->io, 2000);
	free(r->moving.v);
	free(r->throttled.v);
	free(r->parked.v);
	dp_io_free(&r->io);
	dp_tunnels_free(&r->tunnels);
	return err;
}

/* Every worker sets itself up, then waits for the others: no handoff may
 * reach a worker whose ring does not exist yet. */
static int worker_ready(struct relay *r, int err)
{
	struct shared *sh = r->sh;
	int aborted;

	pthread_mutex_lock(&sh->ready_mu);
	if (err < 0) {
		atomic_store(&sh->abort, 1);
		r->err = err;
	}
	sh->nready++;
	pthread_cond_broadcast(&sh->ready_cv);
	while (sh->nready < sh->expected && !atomic_load(&sh->abort))
		pthread_cond_wait(&sh->ready_cv, &sh->ready_mu);
	aborted = atomic_load(&sh->abort);
	pthread_mutex_unlock(&sh->ready_mu);
	if (err < 0)
		return err;
	if (aborted) {
		/* Another worker failed: release what this one set up. */
		close_inbox(r);
		dp_io_close_all(&r->io, 0);
		dp_io_free(&r->io);
		dp_tunnels_free(&r->tunnels);
		return -ECANCELED;
	}
	return 0;
}

static int worker_start(struct relay *r)
{
	return worker_ready(r, relay_init(r));
}

static void *worker_thread(void *arg)
{
	struct relay *r = arg;

	if (worker_start(r) == 0)
		r->err = worker_loop(r);
	dp_tls_thread_done();
	return NULL;
}

static struct relay *relay_new(struct shared *sh, int idx)
{
	struct relay *r = malloc(sizeof(*r));
	const char *colon = strrchr(sh->cfg->http, ':');

	if (r == NULL)
		return NULL;
	memset(r, 0, offsetof(struct relay, target));
	r->sh = sh;
	r->cfg = sh->cfg;
	r->idx = idx;
	r->http_port = colon ? atoi(colon + 1) : 80;
	r->now_ms = sl_mono_ms();
	pthread_mutex_init(&r->inbox_mu, NULL);
	pthread_mutex_init(&r->snap_mu, NULL);
	return r;
}

static void relay_delete(struct relay *r)
{
	for (uint32_t i = 0; i < r->nlt_orphans; i++)
		close(r->lt_orphans[i].fd);
	free(r->lt_ports);
	free(r->lt_orphans);
	free(r->counts);
	pthread_mutex_destroy(&r->inbox_mu);
	pthread_mutex_destroy(&r->snap_mu);
	free(r);
}

int dp_relay_run(const struct dp_relay_config *cfg, volatile sig_atomic_t *stop,
		 volatile sig_atomic_t *reload)
{
	struct shared sh = {.cfg = cfg, .stop = stop, .reload = reload};
	int n = cfg->workers > 0 ? (int)cfg->workers : 1, started = 1, err = 0;

	if ((err = dp_owners_init(&sh.owners, 4096)) < 0)
		return err;
	if ((sh.w = calloc((size_t)n, sizeof(sh.w[0]))) == NULL) {
		dp_owners_free(&sh.owners);
		return -ENOMEM;
	}
	sh.nworkers = n;
	for (int i = 0; i < n; i++)
		if ((sh.w[i] = relay_new(&sh, i)) == NULL)
			err = -ENOMEM;
	pthread_mutex_init(&sh.ready_mu, NULL);
	pthread_cond_init(&sh.ready_cv, NULL);
	sh.expected = n;
	if (err == 0 && cfg->cert) {
		if ((err = dp_tls_server_init(&sh.tls, cfg->cert, cfg->key, cfg->cert_dir,
					      &sh.tls_reloads)) == 0)
			sh.tls_on = 1;
	}
	if (err == 0 && cfg->redis) {
		struct dp_state_config sc = {
			.redis = cfg->redis, .relay_id = cfg->relay_id, .timeout_ms = 2000};

		sh.state.on_change = wake_workers;
		if ((err = dp_state_start(&sh.state, &sc, collect_counts, &sh)) == 0)
			sh.state_on = 1;
		if (err == 0 && (err = dp_leases_start(&sh.leases, cfg->redis, cfg->relay_id,
						       wake_workers, &sh)) == 0)
			sh.leases_on = 1;
		if (err == 0 && cfg->link &&
		    (err = dp_cluster_start(&sh.cluster, cfg->redis, cfg->relay_id, cfg->link,
					    wake_workers, &sh)) == 0)
			sh.cluster_on = 1;
	}
	/* Worker 0 first, alone: a bad option or a taken port fails once, with
	 * one message, before any thread starts. */
	if (err < 0 || (err = relay_init(sh.w[0])) < 0)
		n = 0;
	for (int i = 1; i < n; i++) {
		int e = pthread_create(&sh.w[i]->thread, NULL, worker_thread, sh.w[i]);

		if (e != 0) {
			sl_error("cannot start worker %d: %s", i, strerror(e));
			err = -e;
			pthread_mutex_lock(&sh.ready_mu);
			atomic_store(&sh.abort, 1); /* the started ones release and return */
			pthread_cond_broadcast(&sh.ready_cv);
			pthread_mutex_unlock(&sh.ready_mu);
			break;
		}
		started++;
	}
	if (n > 0 && worker_ready(sh.w[0], 0) == 0) {
		sl_info("relay: %d worker%s, http %s%s%s, agents %s (%s), admin %s, domain %s "
			"(%s%s)",
			n, n == 1 ? "" : "s", cfg->http, cfg->https ? ", https " : "",
			cfg->https ? cfg->https : "", cfg->agents, sh.tls_on ? "tls" : "plaintext",
			cfg->admin, cfg->domain,
			cfg->engine == DP_ENGINE_EPOLL ? "epoll" : "io_uring",
			sh.w[0]->io.r.features & DP_RING_F_DEFER ? ", defer_taskrun" : "");
		sh.w[0]->err = worker_loop(sh.w[0]);
	}
	for (int i = 1; i < started; i++)
		pthread_join(sh.w[i]->thread, NULL);
	dp_state_stop(&sh.state); /* its reports read the workers' counters */
	dp_leases_stop(&sh.leases);
	dp_cluster_stop(&sh.cluster);
	for (int i = 0; i < sh.nworkers; i++) {
		if (sh.w[i] && sh.w[i]->err < 0 && sh.w[i]->err != -ECANCELED && err == 0)
			err = sh.w[i]->err;
		if (sh.w[i])
			relay_delete(sh.w[i]);
	}
	pthread_cond_destroy(&sh.ready_cv);
	pthread_mutex_destroy(&sh.ready_mu);
	if (sh.tls_on)
		dp_tls_server_free(&sh.tls);
	free(sh.w);
	dp_owners_free(&sh.owners);
	return err;
}

int dp_relay_load_tokens(const char *path, char ***tokens, uint32_t *n)
{
	FILE *f = fopen(path, "re");
	char line[512], **v = NULL;
	uint32_t count = 0;

	if (f == NULL)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *s = line, *e, **nv;

		while (*s == ' ' || *s == '\t')
			s++;
		e = s + strcspn(s, "\r\n#");
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (e == s)
			continue;
		*e = '\0';
		nv = realloc(v, (count + 1) * sizeof(*v));
		if (nv == NULL || (nv[count] = strdup(s)) == NULL) {
			free(nv ? nv : v);
			fclose(f);
			return -ENOMEM;
		}
		v = nv;
		count++;
	}
	fclose(f);
	*tokens = v;
	*n = count;
	return 0;
}
