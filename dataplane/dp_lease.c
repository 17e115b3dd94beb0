/*
 * dp_lease.c: leased tokens of limits shared by relays (see dp_lease.h).
 */
#include "dp_lease.h"
#include "pr_window.h"
#include "sl_log.h"
#include "sl_redis.h"
#include "sl_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#define LEASE_TURN_MS  50   /* the thread wakes at least this often */
#define RELAYS_MS      1000 /* how often the live relays are counted */
#define RELAY_DEAD_MS  5000 /* a relay whose heartbeat is older is not counted */
#define RETRY_MS       500  /* reconnect interval while Redis is down */
#define REDIS_TIMEOUT  500
#define IDLE_DROP_MS   120000 /* an entry unused this long is forgotten */
#define BATCH_FRACTION 100    /* a batch is at most limit / (this x relays) */

/* One key's lease. Ownership: the table's, under mu. */
struct dp_lease_ent {
	struct dp_lease_ent *next;
	char key_id[33];
	struct pr_limit lim;
	uint64_t tokens;		/* leased and not spent */
	uint64_t expires_ms;		/* monotonic: the tokens' slot ends */
	uint64_t slot;			/* the tokens' slot, in Redis */
	uint64_t refund_n, refund_slot; /* dropped unspent: to give back to that slot */
	uint64_t over_until_ms;		/* Redis said no room until then */
	uint64_t demand;		/* requests since the last lease (served or not) */
	uint64_t last_n;		/* the last batch asked for */
	int dry;			/* a request found no token since the last lease */
	uint64_t last_ms;		/* last take */
	int wanted;			/* a lease is asked for */
	struct dp_window local;		/* the fail-open share while Redis is down */
};

static struct dp_lease_ent *find(struct dp_leases *l, const char *key_id)
{
	struct dp_lease_ent *e;

	for (e = l->ents; e; e = e->next)
		if (strcmp(e->key_id, key_id) == 0)
			return e;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return NULL;
	snprintf(e->key_id, sizeof(e->key_id), "%s", key_id);
	e->next = l->ents;
	l->ents = e;
	l->nents++;
	return e;
}

/* Unspent tokens whose slot ended: dropped here, given back in Redis (the
 * lease thread), so they are not lost to the other relays (under mu). */
static void drop(struct dp_leases *l, struct dp_lease_ent *e)
{
	if (e->refund_n && e->refund_slot != e->slot)
		e->refund_n = 0; /* an older refund not made yet: the newer one matters */
	e->refund_n += e->tokens;
	e->refund_slot = e->slot;
	e->tokens = 0;
	pthread_cond_signal(&l->bg.cv);
}

/* The fail-open decision: this relay's share of the limit, counted here. */
static enum dp_lease_verdict take_local(struct dp_leases *l, struct dp_lease_ent *e, uint64_t now,
					uint64_t *reset_ms)
{
	uint64_t share = e->lim.limit / (l->nrelays ? l->nrelays : 1);
	uint32_t win = e->lim.window * 1000;

	if (share == 0)
		share = 1;
	atomic_fetch_add(&l->local_decisions, 1);
	if (dp_window_take(&e->local, share, win, now, 1) == 0)
		return DP_LEASE_OK;
	*reset_ms = dp_window_reset_ms(&e->local, win, now);
	return DP_LEASE_OVER;
}

enum dp_lease_verdict dp_lease_take(struct dp_leases *l, const char *key_id,
				    const struct pr_limit *lim, int local, uint64_t *reset_ms)
{
	uint64_t now = sl_mono_ms();
	enum dp_lease_verdict v = DP_LEASE_WAIT;
	struct dp_lease_ent *e;

	*reset_ms = 0;
	pthread_mutex_lock(&l->bg.mu);
	if ((e = find(l, key_id)) == NULL) {
		pthread_mutex_unlock(&l->bg.mu);
		return DP_LEASE_OK; /* out of memory: fail open */
	}
	e->lim = *lim;
	e->last_ms = now;
	e->demand++;
	if (!atomic_load(&l->up)) {
		v = take_local(l, e, now, reset_ms);
		goto out;
	}
	if (e->tokens && now >= e->expires_ms)
		drop(l, e); /* their slot is over: never carried into the next */
	if (e->tokens) {
		e->tokens--;
		v = DP_LEASE_OK;
	} else if (now < e->over_until_ms) {
		*reset_ms = e->over_until_ms - now;
		v = DP_LEASE_OVER;
	} else {
		e->dry = 1;
		if (local)
			v = take_local(l, e, now, reset_ms);
	}
	/* Top up before the tokens run out: half the last batch left. */
	if (!e->wanted && now >= e->over_until_ms && e->tokens * 2 <= e->last_n) {
		e->wanted = 1;
		pthread_cond_signal(&l->bg.cv);
	}
out:
	pthread_mutex_unlock(&l->bg.mu);
	return v;
}

/* ---- the lease thread ---- */

/* Ownership: a value on the lease thread's stack. */
struct want {
	char key_id[33];
	struct pr_limit lim;
	uint64_t n;
	uint64_t refund_slot; /* with refund set: n is given back to this slot, not leased */
	int refund;
};

/* EVAL the window script for one key; 0 with the reply's four numbers, or
 * -EIO (connection lost) / -EPROTO. */
static int lease_once(redisContext *rc, const struct want *w, long long out[5])
{
	redisReply *r =
		w->refund
			? redisCommand(rc, "EVAL %s 1 sl:rl:kreq:%s %llu %llu",
				       PR_WINDOW_REFUND_LUA, w->key_id,
				       (unsigned long long)w->refund_slot, (unsigned long long)w->n)
			: redisCommand(rc, "EVAL %s 1 sl:rl:kreq:%s %llu %llu %llu", PR_WINDOW_LUA,
				       w->key_id, (unsigned long long)w->lim.limit,
				       (unsigned long long)w->lim.window * 1000,
				       (unsigned long long)w->n);
	int err = 0;

	if (r == NULL)
		return -EIO;
	if (w->refund) {
		freeReplyObject(r);
		return 0;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 5)
		err = -EPROTO;
	for (size_t i = 0; err == 0 && i < 5; i++) {
		if (r->element[i]->type != REDIS_REPLY_INTEGER)
			err = -EPROTO;
		else
			out[i] = r->element[i]->integer;
	}
	if (err)
		sl_warn("ratelimit: lease script: %s",
			r->type == REDIS_REPLY_ERROR ? r->str : "bad reply");
	freeReplyObject(r);
	return err;
}

/* The keys that want tokens now, with how many (under mu). */
static size_t collect(struct dp_leases *l, struct want *w, size_t cap, uint64_t now)
{
	struct dp_lease_ent **pp = &l->ents, *e;
	size_t n = 0;

	while ((e = *pp) != NULL) {
		if (now - e->last_ms > IDLE_DROP_MS) {
			*pp = e->next;
			l->nents--;
			free(e);
			continue;
		}
		if (e->refund_n && n < cap) {
			snprintf(w[n].key_id, sizeof(w[n].key_id), "%s", e->key_id);
			w[n].refund = 1;
			w[n].n = e->refund_n;
			w[n].refund_slot = e->refund_slot;
			e->refund_n = 0;
			n++;
		}
		if (e->wanted && n < cap) {
			uint64_t most = e->lim.limit / ((uint64_t)BATCH_FRACTION * l->nrelays);

			snprintf(w[n].key_id, sizeof(w[n].key_id), "%s", e->key_id);
			w[n].refund = 0;
			w[n].lim = e->lim;
			/* Twice the demand since the last lease; twice the last batch
			 * when that ran dry before this one was asked for. */
			w[n].n = 2 * e->demand;
			if (e->dry && w[n].n < 2 * e->last_n)
				w[n].n = 2 * e->last_n;
			if (w[n].n > most)
				w[n].n = most;
			if (w[n].n == 0)
				w[n].n = 1;
			e->last_n = w[n].n;
			n++;
		}
		pp = &e->next;
	}
	return n;
}

/* A lease's answer into its entry (under mu). */
static void apply(struct dp_leases *l, const struct want *w, const long long v[5], uint64_t now)
{
	struct dp_lease_ent *e = find(l, w->key_id);

	if (e == NULL)
		return;
	e->wanted = 0;
	e->demand = 0;
	e->dry = 0;
	/* Tokens of another slot than these new ones (or past theirs) go back. */
	if (e->tokens && (now >= e->expires_ms || e->slot != (uint64_t)v[4]))
		drop(l, e);
	e->slot = (uint64_t)v[4];
	e->tokens += v[0] > 0 ? (uint64_t)v[0] : 0;
	e->expires_ms = now + (v[2] > 0 ? (uint64_t)v[2] : 0);
	e->over_until_ms =
		v[0] < (long long)w->n && v[1] <= 0 ? now + (uint64_t)(v[3] > 0 ? v[3] : 1) : 0;
}

/* Live relays: those that heartbeat lately; and a drain request for this
 * relay. -EIO when the connection failed. */
static int count_relays(struct dp_leases *l, redisContext *rc)
{
	redisReply *r;

	r = redisCommand(rc, "ZCOUNT sl:relays %llu +inf",
			 (unsigned long long)(sl_wall_ms() - RELAY_DEAD_MS));
	if (r && r->type == REDIS_REPLY_INTEGER) {
		pthread_mutex_lock(&l->bg.mu);
		l->nrelays = r->integer > 0 ? (uint32_t)r->integer : 1;
		pthread_mutex_unlock(&l->bg.mu);
	}
	if (r == NULL)
		return -EIO;
	freeReplyObject(r);
	/* POST /api/v1/relays/{id}/drain leaves its request here. */
	if ((r = redisCommand(rc, "GETDEL sl:drain:%s", l->relay_id)) == NULL)
		return -EIO;
	if (r->type == REDIS_REPLY_STRING)
		atomic_store(&l->drain_asked, 1);
	freeReplyObject(r);
	return 0;
}

static void set_up(struct dp_leases *l, int up, const char *why)
{
	if (atomic_exchange(&l->up, up) == up)
		return;
	atomic_fetch_add(&l->mode_changes, 1);
	atomic_fetch_add(&l->gen, 1);
	if (up)
		sl_info("audit: ratelimit_global relay=%s: leasing shared limits from Redis again",
			l->relay_id);
	else
		sl_warn("audit: ratelimit_local relay=%s: Redis unreachable (%s): shared limits "
			"fall back to this relay's share (limit / %u relays)",
			l->relay_id, why, l->nrelays);
}

/* One connected session of the thread: lease what is wanted, count relays;
 * returns when the connection fails or stop is set. */
static void serve(struct dp_leases *l, redisContext *rc)
{
	struct want w[64];
	uint64_t next_count = 0;

	while (!sl_bg_stopping(&l->bg)) {
		uint64_t now = sl_mono_ms();
		size_t n;
		int got = 0;

		if (now >= next_count) {
			if (count_relays(l, rc) < 0)
				return;
			next_count = now + RELAYS_MS;
		}
		pthread_mutex_lock(&l->bg.mu);
		n = collect(l, w, sizeof(w) / sizeof(w[0]), now);
		if (n == 0) {
			sl_bg_wait_ms(&l->bg, LEASE_TURN_MS);
			pthread_mutex_unlock(&l->bg.mu);
			continue;
		}
		pthread_mutex_unlock(&l->bg.mu);
		for (size_t i = 0; i < n; i++) {
			long long v[5];
			int e = lease_once(rc, &w[i], v);

			if (e == -EIO)
				return;
			if (w[i].refund)
				continue; /* given back: nothing to apply */
			atomic_fetch_add(e ? &l->lease_failures : &l->leases, 1);
			pthread_mutex_lock(&l->bg.mu);
			if (e == 0)
				apply(l, &w[i], v, sl_mono_ms());
			else {
				struct dp_lease_ent *en = find(l, w[i].key_id);

				if (en)
					en->wanted = 0;
			}
			pthread_mutex_unlock(&l->bg.mu);
			got = 1;
		}
		if (got) {
			atomic_fetch_add(&l->gen, 1);
			if (l->on_lease)
				l->on_lease(l->ud);
		}
	}
}

static int serve_rc(void *ud, redisContext *rc, char *why, size_t cap)
{
	struct dp_leases *l = ud;

	set_up(l, 1, NULL);
	serve(l, rc);
	snprintf(why, cap, "%s", rc->err ? rc->errstr : "connection lost");
	return 0;
}

static void lost(void *ud, const char *why, unsigned wait_ms)
{
	struct dp_leases *l = ud;

	(void)wait_ms;
	atomic_fetch_add(&l->lease_failures, 1);
	set_up(l, 0, why);
	if (l->on_lease)
		l->on_lease(l->ud); /* parked requests decide locally now */
}

int dp_leases_start(struct dp_leases *l, const char *redis_url, const char *relay_id,
		    void (*on_lease)(void *ud), void *ud)
{
	memset(l, 0, sizeof(*l));
	snprintf(l->redis, sizeof(l->redis), "%s", redis_url);
	snprintf(l->relay_id, sizeof(l->relay_id), "%s", relay_id);
	l->nrelays = 1;
	l->on_lease = on_lease;
	l->ud = ud;
	l->follow = (struct sl_redis_follow){&l->bg,   l->redis, REDIS_TIMEOUT, RETRY_MS,
					     RETRY_MS, serve_rc, lost,		l};
	return sl_redis_follow_start(&l->follow);
}

void dp_leases_stop(struct dp_leases *l)
{
	struct dp_lease_ent *e, *next;

	if (!sl_bg_stop(&l->bg))
		return;
	for (e = l->ents; e; e = next) {
		next = e->next;
		free(e);
	}
	l->ents = NULL;
}
