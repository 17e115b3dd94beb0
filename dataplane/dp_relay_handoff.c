/*
 * dp_relay_handoff.c: sockets handed to the worker that holds their
 * tunnel. The kernel spreads connections over workers blindly; a worker
 * that reads a request head, a HELLO or a DATA_HELLO for a tunnel another
 * worker holds stops receiving, waits until nothing of the socket is in
 * flight, exports it (fd, TLS state, the bytes it read) into the owner's
 * inbox and wakes it. The owner adopts it and reads on as if it had
 * accepted it.
 */
#include "dp_relay_int.h"

/* Stop receiving on c; dp_move_run() exports it once nothing is in flight. */
void dp_move_begin(struct relay *r, uint32_t c)
{
	dp_conn_pause(&r->io, c);
	dp_queue_push(&r->moving, dp_ud(c, dp_c(&r->io, c)->gen, DP_OP_NONE));
}

/* The request's tunnel lives on worker w: p goes there, with its bytes. */
void dp_move_public(struct relay *r, struct pub *p, int w)
{
	if (p->t != NULL)
		dp_pub_detach(r, p); /* a keep-alive request for a tunnel of another worker */
	dp_pub_untime(r, p);
	p->phase = P_MOVING;
	p->moving_to = w;
	dp_move_begin(r, p->slot);
}

/* Queue h in worker to's inbox and wake it; -EPIPE once it stopped taking them. */
static int inbox_push(struct relay *to, struct handoff *h)
{
	int open;

	/* The wake is under the lock too: once the inbox is closed, the
	 * worker's eventfd may be gone. */
	pthread_mutex_lock(&to->inbox.mu);
	open = !to->inbox.closed;
	if (open) {
		h->next = to->inbox.head;
		to->inbox.head = h;
		dp_io_wake(&to->io);
	}
	pthread_mutex_unlock(&to->inbox.mu);
	return open ? 0 : -EPIPE;
}

/* Export moving socket c into a handoff for its worker. Returns 0 when it
 * is not idle yet (try again next turn), 1 when it is gone. */
static int try_move(struct relay *r, uint32_t c)
{
	struct dp_conn *s = dp_c(&r->io, c);
	struct pub *p = s->kind == K_PUBLIC ? s->owner : NULL;
	struct agent *a = s->kind == K_AGENT_NEW ? s->owner : NULL;
	uint32_t len = p ? p->acc.len : a ? a->len : 0;
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
	memcpy(h->bytes, p ? p->acc.p : a->buf, len);
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

void dp_move_run(struct relay *r)
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
	dp_pub_deadline(r, p, r->cfg->head_timeout_ms, E_408);
	dp_conn_recv(&r->io, c);
	if ((seg = dp_seg_copy(&r->io.r, h->bytes, h->len)) == DP_NIL)
		dp_pub_error(r, p, E_503, NULL, "relay out of memory\n");
	else
		dp_pub_data(r, p, seg);
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
	dp_agent_fresh_link(r, a, c);
	memcpy(a->buf, h->bytes, h->len);
	a->len = h->len;
	dp_conn_recv(&r->io, c);
	dp_agent_frames(r, c);
}

/* Take every handoff in the inbox (oldest first). */
void dp_inbox_drain(struct relay *r)
{
	struct handoff *h, *rev = NULL, *next;

	pthread_mutex_lock(&r->inbox.mu);
	h = r->inbox.head;
	r->inbox.head = NULL;
	pthread_mutex_unlock(&r->inbox.mu);
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

/* This worker stops: handoffs still on their way are refused, and dropped. */
void dp_inbox_close(struct relay *r)
{
	struct handoff *h, *next;

	pthread_mutex_lock(&r->inbox.mu);
	r->inbox.closed = 1;
	h = r->inbox.head;
	r->inbox.head = NULL;
	pthread_mutex_unlock(&r->inbox.mu);
	for (; h; h = next) {
		next = h->next;
		dp_export_drop(&h->ex);
		free(h);
	}
}

/* The follower applied records: wake every worker (any thread may). */
void dp_wake_workers(void *ud)
{
	struct shared *sh = ud;

	for (int i = 0; i < sh->nworkers; i++) {
		struct relay *w = sh->w[i];

		/* Under the inbox lock, as handoffs are: never a closed eventfd. */
		pthread_mutex_lock(&w->inbox.mu);
		if (w->inbox.wake_ready && !w->inbox.closed)
			dp_io_wake(&w->io);
		pthread_mutex_unlock(&w->inbox.mu);
	}
}
