/*
 * dp_relay_limits.c: a tunnel's rate limits where its traffic converges
 * (docs/limits.md): requests per window (the tunnel's, exact here, and its
 * key's, leased from Redis across relays), new TCP connections, and
 * bandwidth (readers paused, never cut). Requests that must wait (a lease
 * being fetched, a tunnel being looked up in the cluster) are parked here
 * and routed again when the answer comes.
 */
#include "dp_relay_int.h"

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
	dp_pub_error(r, p, E_429, extra,
		     "rate limit: %s allows %llu requests per %u s; retry in %llu s\n", what,
		     (unsigned long long)l->limit, l->window, reset);
}

/*
 * The request limits of t for one request: the tunnel's own, exact here,
 * then its key's, shared by relays through leases.
 */
enum dp_limit_verdict dp_limit_request(struct relay *r, struct pub *p, struct dp_tunnel *t,
				       int waited)
{
	uint64_t now = dp_turn_ms(r), reset;
	uint32_t win = t->lim_req.window * 1000;

	if (t->key_req.limit && r->sh->leases_on && t->key_id[0]) {
		switch (dp_lease_take(&r->sh->leases, t->key_id, &t->key_req, waited, &reset)) {
		case DP_LEASE_WAIT: return DP_LIMIT_WAIT;
		case DP_LEASE_OVER:
			r->m.limited_key++;
			pub_429(r, p, &t->key_req, reset, "this API key");
			return DP_LIMIT_REFUSED;
		default: break;
		}
	}
	if (t->lim_req.limit && dp_window_take(&t->req_w, t->lim_req.limit, win, now, 1) < 0) {
		r->m.limited_req++;
		t->limited_req++;
		pub_429(r, p, &t->lim_req, dp_window_reset_ms(&t->req_w, win, now), "this tunnel");
		return DP_LIMIT_REFUSED;
	}
	return DP_LIMIT_PASS;
}

int dp_limit_tcp(struct relay *r, struct dp_tunnel *t)
{
	if (t->lim_tcp.limit == 0 ||
	    dp_window_take(&t->tcp_w, t->lim_tcp.limit, t->lim_tcp.window * 1000, dp_turn_ms(r),
			   1) == 0)
		return 0;
	r->m.limited_tcp++;
	t->limited_tcp++;
	return -EAGAIN;
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
void dp_limit_meter(struct relay *r, uint32_t c, uint32_t len)
{
	struct dp_conn *s = dp_c(&r->io, c);
	struct dp_tunnel *t = conn_tunnel(s);

	if (t == NULL || t->lim_bw.limit == 0 ||
	    dp_bucket_spend(&t->bw, t->lim_bw.limit, t->lim_bw.window * 1000, dp_turn_ms(r), len) ==
		    0 ||
	    (s->flags & DP_C_THROTTLE))
		return;
	r->m.throttles++;
	t->throttled++;
	dp_conn_throttle(&r->io, c, 1);
	dp_queue_push(&r->throttled, dp_ud(c, s->gen, DP_OP_NONE));
}

/* Sockets whose tunnel's bucket allows more read again. */
void dp_limit_unthrottle(struct relay *r)
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

/* Until a lease or an answer about its tunnel arrives (dp_park_run). */
void dp_park(struct relay *r, struct pub *p)
{
	if (p->parked_ms == 0)
		p->parked_ms = sl_mono_ms();
	p->phase = P_PARKED;
	dp_pub_untime(r, p);
	dp_conn_pause(&r->io, p->slot);
	dp_queue_push(&r->parked, dp_ud(p->slot, dp_c(&r->io, p->slot)->gen, DP_OP_NONE));
}

/* A parked request: its head again, now that a lease came (or it waited
 * long enough to be decided locally). */
static void unpark(struct relay *r, struct pub *p)
{
	uint32_t seg = dp_seg_copy(&r->io.r, p->acc.p, p->acc.len);

	p->phase = P_HEAD;
	p->acc.len = 0;
	if (seg == DP_NIL) {
		dp_pub_error(r, p, E_503, NULL, "relay out of memory\n");
		return;
	}
	dp_pub_data(r, p, seg);
	if ((p->phase == P_HEAD || p->phase == P_BODY_CL || p->phase == P_BODY_CH ||
	     p->phase == P_RAW) &&
	    !p->waiting)
		dp_conn_recv(&r->io, p->slot);
}

void dp_park_run(struct relay *r)
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
