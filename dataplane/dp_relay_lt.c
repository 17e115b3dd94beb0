/*
 * dp_relay_lt.c: localtunnel clients (npm "localtunnel"), which no agent
 * fronts: the client opens raw sockets to a port the control plane handed
 * out (--lt-ports), and each one is a data connection of the session's
 * tunnel from its first byte. Worker 0 holds every lt port; it opens the
 * tunnel when the session appears in the table, and a socket that comes
 * first waits a little for it (an orphan).
 */
#include "dp_relay_int.h"

#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>

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
	sl_peer_ip(fd, a->ip);
	c = dp_conn_new(&r->io, fd, K_DATA, a);
	if (c == DP_NIL) {
		free(a);
		return;
	}
	a->slot = c;
	a->t = t;
	a->epoch = t->epoch;
	dp_tunnel_ref(t);
	dp_conn_recv(&r->io, c);
	dp_pool_ready(r, t, c);
}

/* A socket on an lt port: its tunnel's at once, or parked until the
 * session arrives (the client connects as soon as the API answered). */
void dp_lt_accepted(struct relay *r, int fd, struct lt_port *lp)
{
	struct lt_orphan *o;

	if (lp->t) {
		accept_lt(r, fd, lp->t);
		return;
	}
	if (r->lt.norphans == LT_ORPHANS_MAX) {
		close(fd);
		return;
	}
	o = &r->lt.orphans[r->lt.norphans++];
	o->fd = fd;
	o->port = lp->port;
	o->deadline_ms = r->now_ms + LT_ORPHAN_MS;
}

/* Orphans whose session came, or whose wait is over. */
void dp_lt_adopt_orphans(struct relay *r)
{
	uint32_t i = 0;

	while (i < r->lt.norphans) {
		struct lt_orphan *o = &r->lt.orphans[i];
		struct lt_port *lp = &r->lt.ports[o->port - r->cfg->lt_lo];

		if (lp->t == NULL && o->deadline_ms > r->now_ms) {
			i++;
			continue;
		}
		if (lp->t)
			accept_lt(r, o->fd, lp->t);
		else
			close(o->fd);
		*o = r->lt.orphans[--r->lt.norphans];
	}
}

/* The localtunnel sessions of the table that this relay does not serve yet. Ownership: on the
 * scanner's stack; v is malloc'd by lt_collect and freed by the scanner. */
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
	if (sl_array_grow((void **)&sc->v, &sc->cap, sc->n + 1, sizeof(*sc->v), 16) < 0)
		return; /* found again at the next change of the table */
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

	if (s->lt_port < r->cfg->lt_lo || s->lt_port > r->cfg->lt_hi || r->lt.ports == NULL) {
		sl_warn("localtunnel session %s: port %u is not in this relay's --lt-ports", s->sid,
			s->lt_port);
		return;
	}
	lp = &r->lt.ports[s->lt_port - r->cfg->lt_lo];
	if (lp->t)
		return; /* still held by an earlier session: retried at the next change */
	snprintf(m.name, sizeof(m.name), "%s", s->name);
	if ((t = dp_tunnel_open(r, &m, s, &code, &w)) == NULL)
		return;
	t->lt = 1;
	lp->t = t;
	sl_info("localtunnel session %s: %s, client sockets on port %u", s->sid, t->name, lp->port);
	dp_lt_adopt_orphans(r);
}

void dp_lt_open_sessions(struct relay *r)
{
	struct lt_scan sc = {.now = (uint64_t)time(NULL)};

	dp_state_foreach(&r->sh->state, lt_collect, &sc);
	for (size_t i = 0; i < sc.n; i++)
		if (dp_owners_find(&r->sh->owners, 1, sc.v[i].sid, strlen(sc.v[i].sid)) ==
		    DP_OWNER_NONE)
			open_lt(r, &sc.v[i]);
	free(sc.v);
}

/* --lt-ports on worker 0: one listener per port, on the public host. */
int dp_lt_listen(struct relay *r)
{
	const char *colon = strrchr(r->cfg->http, ':');
	uint32_t n = (uint32_t)(r->cfg->lt_hi - r->cfg->lt_lo) + 1;
	char addr[300];

	r->lt.ports = calloc(n, sizeof(*r->lt.ports));
	r->lt.orphans = calloc(LT_ORPHANS_MAX, sizeof(*r->lt.orphans));
	if (r->lt.ports == NULL || r->lt.orphans == NULL)
		return -ENOMEM;
	r->lt.nports = n;
	for (uint32_t i = 0; i < n; i++) {
		struct lt_port *lp = &r->lt.ports[i];
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

/* t ends: its port feeds nobody until the next session takes it. */
void dp_lt_forget(struct relay *r, struct dp_tunnel *t)
{
	for (uint32_t i = 0; i < r->lt.nports; i++)
		if (r->lt.ports[i].t == t)
			r->lt.ports[i].t = NULL;
}
