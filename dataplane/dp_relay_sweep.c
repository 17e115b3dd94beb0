/*
 * dp_relay_sweep.c: a worker's periodic work on its tunnels: sessions that
 * expire, heartbeats sent and missed, names released after the grace
 * period; and what the session table's changes mean here (revoked
 * sessions, new limits, new localtunnel sessions), and the counters this
 * worker reports back to Redis through the state follower.
 */
#include "dp_relay_int.h"

#include <time.h>

/* Every 100 ms: each tunnel's expiry, heartbeat and grace period. */
void dp_sweep_tunnels(struct relay *r)
{
	struct dp_tunnel *t, *next;
	struct pr_msg ping = {.type = PR_PING};
	uint64_t now_s = (uint64_t)time(NULL);

	for (t = r->tunnels.all; t; t = next) {
		next = t->next;
		/* A control-plane session ends at its expiry second. */
		if (t->managed && now_s >= t->expires) {
			dp_tunnel_kill(r, t, PR_E_AUTH, "expired");
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
			dp_pool_reask(r, t);
			continue;
		}
		if (t->lt && !r->draining)
			continue; /* no control connection ever: it lives until its session ends */
		if (r->now_ms - t->offline_since_ms < r->cfg->grace_ms && !r->draining)
			continue;
		sl_info("tunnel %s: released after the grace period", t->name);
		dp_tunnel_release(r, t);
	}
}

/* A session the table says is no longer usable: taken over by a new one
 * of its name (its agent must stop, not retry), or revoked. */
static void kill_unusable(struct relay *r, struct dp_tunnel *t)
{
	struct pr_session rec;
	char why[80];

	if (dp_state_get(&r->sh->state, t->sid, &rec) == 0 && rec.replaced_by[0]) {
		r->m.sessions_replaced++;
		snprintf(why, sizeof(why), "replaced by session %.32s", rec.replaced_by);
		dp_tunnel_kill(r, t, PR_E_REPLACED, why);
		return;
	}
	dp_tunnel_kill(r, t, PR_E_AUTH, "revoked");
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
			kill_unusable(r, t);
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
			dp_tunnel_set_limits(t, &rec);
}

/* Every second: this worker's session counters, for the state follower. */
void dp_sweep_publish_counts(struct relay *r)
{
	size_t n = 0;

	pthread_mutex_lock(&r->snap_mu);
	for (struct dp_tunnel *t = r->tunnels.all; t; t = t->next) {
		struct dp_state_counts *c;

		if (!t->managed)
			continue;
		if (sl_array_grow((void **)&r->counts, &r->counts_cap, n + 1, sizeof(*r->counts),
				  64) < 0)
			break; /* the rest is reported next second */
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
size_t dp_sweep_collect_counts(void *ud, struct dp_state_counts *out, size_t cap)
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
void dp_sweep_sessions(struct relay *r)
{
	uint64_t changed = atomic_load(&r->sh->state.lt_changed);

	check_sessions(r);
	refresh_limits(r);
	/* Only localtunnel records matter here: a scan of the whole table per
	 * change would hold its read lock through a large snapshot and starve
	 * the follower's writes. */
	if (r->idx == 0 && r->lt.ports && changed != r->changed_seen) {
		r->changed_seen = changed;
		dp_lt_open_sessions(r);
	}
	if (r->lt.norphans)
		dp_lt_adopt_orphans(r);
}
