/*
 * dp_relay_pool.c: a tunnel's data connections. The agent keeps idle ones
 * open to the relay (the pool, a list through dp_conn.olink); a public
 * connection takes one, or waits in the tunnel's waiter list while the
 * agent is asked for more (PR_OPEN). Joined, the two are a pair of the
 * engine's pump: bytes pass both ways without being looked at.
 */
#include "dp_relay_int.h"

/* Ask the agent for more data connections than are already on their way. */
void dp_pool_ask(struct relay *r, struct dp_tunnel *t)
{
	struct pr_msg m = {.type = PR_OPEN};

	if (t->ctrl == DP_NIL || t->opens_asked >= t->nwait)
		return;
	m.count = t->nwait - t->opens_asked;
	t->opens_asked += m.count;
	t->asked_ms = r->now_ms;
	dp_conn_send_msg(&r->io, t->ctrl, &m);
}

/*
 * Waiters that saw no data connection arrive for REASK_MS although some
 * were asked for: those died on their way (a connect or TLS handshake that
 * failed, a fresh connection closed at the head timeout before its
 * DATA_HELLO, an agent at its --max-streams), and opens_asked would count
 * them until the waiters time out. Ask again for every waiter; a surplus
 * connection joins the idle pool. Called by the 100 ms sweep.
 */
void dp_pool_reask(struct relay *r, struct dp_tunnel *t)
{
	if (t->nwait == 0 || t->opens_asked == 0 || r->now_ms - t->asked_ms < REASK_MS)
		return;
	r->m.reasks++;
	t->opens_asked = 0;
	dp_pool_ask(r, t);
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
	dp_pub_untime(r, p);
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

/* An idle data connection of t off its pool, or DP_NIL. */
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

/* p stops waiting for a data connection of its tunnel. */
void dp_pool_unlink_waiter(struct relay *r, struct pub *p)
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
void dp_pool_keep_head(struct relay *r, struct pub *p)
{
	free(p->orig);
	p->orig = NULL;
	if (r->cur_raw && (p->orig = malloc(r->cur_raw_len)) != NULL) {
		memcpy(p->orig, r->cur_raw, r->cur_raw_len);
		p->orig_len = r->cur_raw_len;
	}
}

/* Give p a data connection now, or queue it and ask the agent for one. */
void dp_pool_acquire(struct relay *r, struct pub *p)
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
	dp_pub_deadline(r, p, r->cfg->open_timeout_ms, E_502);
	if (r->sh->cluster_on && t->managed && p->orig == NULL)
		dp_pool_keep_head(r, p);
	dp_pool_ask(r, t);
}

/* A data connection arrived for t: hand it to the first waiter or pool it. */
void dp_pool_ready(struct relay *r, struct dp_tunnel *t, uint32_t d)
{
	struct agent *a = dp_c(&r->io, d)->owner;

	if (t->opens_asked)
		t->opens_asked--;
	t->asked_ms = r->now_ms;
	if (t->wait_head != DP_NIL) {
		struct pub *p = dp_c(&r->io, t->wait_head)->owner;

		dp_pool_unlink_waiter(r, p);
		attach(r, p, d);
		return;
	}
	a->idle = 1;
	dp_c(&r->io, d)->olink = t->idle;
	t->idle = d;
	t->nidle++;
}

/* Close t's idle data connections (its agent went, or is fenced). */
void dp_pool_close_idle(struct relay *r, struct dp_tunnel *t)
{
	uint32_t d;

	while ((d = pop_idle(r, t)) != DP_NIL) {
		((struct agent *)dp_c(&r->io, d)->owner)->idle = 0;
		dp_conn_close(&r->io, d);
	}
}

/* Idle data connection c of t closed: off the pool. */
void dp_pool_remove_idle(struct relay *r, struct dp_tunnel *t, uint32_t c)
{
	uint32_t *pp = &t->idle;

	while (*pp != DP_NIL && *pp != c)
		pp = &dp_c(&r->io, *pp)->olink;
	if (*pp == c) {
		*pp = dp_c(&r->io, c)->olink;
		t->nidle--;
	}
}

/* A waiter of a tunnel whose agent left, in a cluster: its request goes
 * back to routing (the agent may be binding at another relay), its head as
 * it came and what of its body was held. 0, or -ENOENT (its head was not
 * kept) or -ENOMEM. */
int dp_pool_requeue(struct relay *r, struct pub *p)
{
	uint32_t seg;

	if (p->orig == NULL)
		return -ENOENT;
	if ((seg = dp_chain_pop(&r->io.r, &p->held)) != DP_NIL)
		dp_seg_release(&r->io.r, seg); /* the head as rewritten for this relay */
	p->acc.len = 0;
	if (sl_buf_append(&p->acc, p->orig, p->orig_len) < 0 || dp_link_held_to_acc(r, p) < 0)
		return -ENOMEM;
	free(p->orig);
	p->orig = NULL;
	if (p->counted)
		p->t->live--;
	p->counted = 0;
	dp_tunnel_unref(p->t);
	p->t = NULL;
	dp_park(r, p);
	return 0;
}

/* Every public connection waiting on t: its agent went away. In a cluster
 * (reroute) the request is routed again; otherwise it gets a 502. */
void dp_pool_fail_waiters(struct relay *r, struct dp_tunnel *t, int reroute)
{
	while (t->wait_head != DP_NIL) {
		struct pub *p = dp_c(&r->io, t->wait_head)->owner;

		dp_pool_unlink_waiter(r, p);
		if (reroute && dp_pool_requeue(r, p) == 0)
			continue;
		dp_pub_error(r, p, E_502, "Retry-After: 5\r\n",
			     "the agent for this tunnel went offline; retry shortly\n");
	}
	t->opens_asked = 0;
}
