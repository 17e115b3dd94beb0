/*
 * dp_state.c: the relay's session table, followed from Redis (see
 * dp_state.h). One thread, one blocking hiredis connection: it never touches
 * a worker's ring, so Redis being slow or gone costs the data path nothing.
 *
 * Convergence: the follower notes the stream's last id, then reads every
 * record (SCAN sl:sess:*), then reads the stream from the noted id. A change
 * made during the snapshot is seen twice, and records carry a revision, so
 * the older copy loses wherever it arrives. Records that vanished from Redis
 * (their retention ran out) vanish from the table at the next snapshot.
 */
#include "dp_state.h"
#include "sl_bytes.h"
#include "sl_log.h"
#include "sl_redis.h"
#include "sl_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define NBUCKETS     16384
#define BLOCK_MS     500  /* XREAD BLOCK: how long one read waits */
#define REPORT_MS    1000 /* heartbeat and counters, this often */
#define SCAN_COUNT   500
#define REPORT_MAX   4096 /* sessions reported per round at most */
#define STATS_MAXLEN "100000"
#define RETRY_MAX_MS 2000

/* Ownership: malloc'd into the table by the follower under the write lock; freed when its record is
 * deleted or unseen by a snapshot, or by dp_state_stop. */
struct dp_state_ent {
	struct pr_session s;
	uint64_t seen;				   /* the snapshot that last saw it */
	uint64_t reported_sig;			   /* of the counters last reported (0: none) */
	struct dp_state_ent *inext[DP_STATE_NIDX]; /* in the index chains, when in_idx */
	uint8_t in_idx[DP_STATE_NIDX];
	struct dp_state_ent *next;
};

static struct dp_state_ent **slot_of(struct dp_state *st, const char *sid)
{
	struct dp_state_ent **pp = &st->buckets[sl_fnv1a(sid, strlen(sid)) % st->nbuckets];

	while (*pp && strcmp((*pp)->s.sid, sid) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* What index i is keyed by: the custom domain, or the name. */
static const char *index_key(const struct pr_session *s, int i)
{
	return i == DP_STATE_BY_DOMAIN ? s->domain : s->name;
}

/* The indexes follow the record: out of their chains, then into the chains
 * of its (new) domain and name while it is active. Under the write lock. */
static void index_unlink(struct dp_state *st, struct dp_state_ent *e)
{
	for (int i = 0; i < DP_STATE_NIDX; i++) {
		const char *k = index_key(&e->s, i);
		struct dp_state_ent **pp;

		if (!e->in_idx[i])
			continue;
		pp = &st->ibuckets[i][sl_fnv1a(k, strlen(k)) % st->nbuckets];
		while (*pp && *pp != e)
			pp = &(*pp)->inext[i];
		if (*pp)
			*pp = e->inext[i];
		e->in_idx[i] = 0;
	}
}

static void index_link(struct dp_state *st, struct dp_state_ent *e)
{
	if (e->s.status != PR_SS_ACTIVE)
		return;
	for (int i = 0; i < DP_STATE_NIDX; i++) {
		const char *k = index_key(&e->s, i);
		struct dp_state_ent **pp;

		if (!k[0])
			continue;
		pp = &st->ibuckets[i][sl_fnv1a(k, strlen(k)) % st->nbuckets];
		e->inext[i] = *pp;
		*pp = e;
		e->in_idx[i] = 1;
	}
}

/* Apply one record (newer revisions win); under the write lock. A session
 * that stops being usable raises `revoked`. */
static void apply(struct dp_state *st, const struct pr_session *s, uint64_t gen)
{
	struct dp_state_ent **pp, *e;
	int was_usable = 0;

	pthread_rwlock_wrlock(&st->lock);
	pp = slot_of(st, s->sid);
	e = *pp;
	if (e && e->s.rev >= s->rev) {
		e->seen = gen ? gen : e->seen;
		pthread_rwlock_unlock(&st->lock);
		return;
	}
	if (e == NULL) {
		e = calloc(1, sizeof(*e));
		if (e == NULL) {
			pthread_rwlock_unlock(&st->lock);
			return;
		}
		*pp = e;
		st->count++;
	} else
		was_usable = e->s.status == PR_SS_ACTIVE;
	if (was_usable && (s->status != PR_SS_ACTIVE || s->epoch != e->s.epoch))
		atomic_fetch_add(&st->revoked, 1);
	if (s->lt_port || e->s.lt_port)
		atomic_fetch_add(&st->lt_changed, 1);
	if (was_usable && (memcmp(&s->lim_req, &e->s.lim_req, sizeof(s->lim_req)) ||
			   memcmp(&s->lim_bw, &e->s.lim_bw, sizeof(s->lim_bw)) ||
			   memcmp(&s->lim_tcp, &e->s.lim_tcp, sizeof(s->lim_tcp)) ||
			   memcmp(&s->key_req, &e->s.key_req, sizeof(s->key_req))))
		atomic_fetch_add(&st->limits_changed, 1);
	index_unlink(st, e);
	e->s = *s;
	index_link(st, e);
	e->seen = gen;
	pthread_rwlock_unlock(&st->lock);
	atomic_fetch_add(&st->applied, 1);
	atomic_fetch_add(&st->changed, 1);
}

/* After a snapshot: drop records it did not see. */
static void forget_unseen(struct dp_state *st, uint64_t gen)
{
	int dropped = 0;

	pthread_rwlock_wrlock(&st->lock);
	for (uint32_t i = 0; i < st->nbuckets; i++) {
		struct dp_state_ent **pp = &st->buckets[i];

		while (*pp) {
			struct dp_state_ent *e = *pp;

			if (e->seen == gen) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			st->count--;
			dropped |= e->s.status == PR_SS_ACTIVE;
			index_unlink(st, e);
			free(e);
		}
	}
	pthread_rwlock_unlock(&st->lock);
	if (dropped)
		atomic_fetch_add(&st->revoked, 1);
}

static void apply_blob(struct dp_state *st, const char *p, size_t n, uint64_t gen)
{
	struct pr_session s;

	if (pr_session_decode(p, n, &s) < 0) {
		sl_warn("state: an unreadable session record skipped");
		return;
	}
	apply(st, &s, gen);
}

/* ---- the follower ---- */

/* Ownership: on the follower thread's stack; rc is the connection of the moment, freed by
 * sl_redis_follow_run. */
struct dp_follower {
	struct dp_state *st;
	redisContext *rc;
	char last_id[64];
	uint64_t gen, next_report_ms;
	char err[256];
};

static int fail_reply(struct dp_follower *f, redisReply *r, const char *what)
{
	if (r == NULL)
		snprintf(f->err, sizeof(f->err), "%s: %s", what,
			 f->rc->errstr[0] ? f->rc->errstr : "no reply");
	else
		snprintf(f->err, sizeof(f->err), "%s: %.*s", what, (int)r->len,
			 r->str ? r->str : "unexpected reply");
	if (r)
		freeReplyObject(r);
	return -EIO;
}

/* The stream's last id, or "0-0" when it is empty or missing. */
static int note_last_id(struct dp_follower *f)
{
	redisReply *r = redisCommand(f->rc, "XREVRANGE sl:events + - COUNT 1");

	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return fail_reply(f, r, "XREVRANGE");
	if (r->elements == 1 && r->element[0]->elements == 2)
		snprintf(f->last_id, sizeof(f->last_id), "%s", r->element[0]->element[0]->str);
	else
		snprintf(f->last_id, sizeof(f->last_id), "0-0");
	freeReplyObject(r);
	return 0;
}

/* MGET the keys of one SCAN page and apply them, SCAN_COUNT at a time
 * (COUNT is only a hint: a page may hold more, and every key counts, or
 * the snapshot would forget live sessions). */
static int load_page(struct dp_follower *f, redisReply *keys)
{
	const char *argv[SCAN_COUNT + 1];
	size_t lens[SCAN_COUNT + 1];
	redisReply *r;

	for (size_t at = 0; at < keys->elements; at += SCAN_COUNT) {
		size_t n = keys->elements - at < SCAN_COUNT ? keys->elements - at : SCAN_COUNT;

		argv[0] = "MGET";
		lens[0] = 4;
		for (size_t i = 0; i < n; i++) {
			argv[i + 1] = keys->element[at + i]->str;
			lens[i + 1] = keys->element[at + i]->len;
		}
		r = redisCommandArgv(f->rc, (int)n + 1, argv, lens);
		if (r == NULL || r->type != REDIS_REPLY_ARRAY)
			return fail_reply(f, r, "MGET");
		for (size_t i = 0; i < r->elements; i++)
			if (r->element[i]->type == REDIS_REPLY_STRING)
				apply_blob(f->st, r->element[i]->str, r->element[i]->len, f->gen);
		freeReplyObject(r);
	}
	return 0;
}

static int snapshot(struct dp_follower *f)
{
	char cursor[32] = "0";
	int rounds = 0;

	if (note_last_id(f) < 0)
		return -EIO;
	f->gen++;
	/* SCAN ends when the cursor comes back to 0; the bound only guards
	 * against a server that never says so. */
	do {
		redisReply *r =
			redisCommand(f->rc, "SCAN %s MATCH sl:sess:* COUNT %d", cursor, SCAN_COUNT);

		if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
			return fail_reply(f, r, "SCAN");
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		if (load_page(f, r->element[1]) < 0) {
			freeReplyObject(r);
			return -EIO;
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0 && ++rounds < 10000000);
	forget_unseen(f->st, f->gen);
	if (f->st->on_change)
		f->st->on_change(f->st->collect_ud);
	atomic_fetch_add(&f->st->snapshots, 1);
	atomic_store(&f->st->ready, 1);
	sl_info("state: snapshot loaded, %u sessions, following sl:events from %s", f->st->count,
		f->last_id);
	return 0;
}

/* One XREAD: apply what came, remember where we are. */
static int follow_once(struct dp_follower *f)
{
	redisReply *r = redisCommand(f->rc, "XREAD COUNT 1000 BLOCK %d STREAMS sl:events %s",
				     BLOCK_MS, f->last_id);
	redisReply *entries;

	if (r == NULL || (r->type != REDIS_REPLY_ARRAY && r->type != REDIS_REPLY_NIL))
		return fail_reply(f, r, "XREAD");
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
		entries = r->element[0]->element[1];
		for (size_t i = 0; i < entries->elements; i++) {
			redisReply *e = entries->element[i], *fl = e->element[1];

			snprintf(f->last_id, sizeof(f->last_id), "%s", e->element[0]->str);
			for (size_t j = 0; j + 1 < fl->elements; j += 2)
				if (fl->element[j]->len == 1 && fl->element[j]->str[0] == 'm')
					apply_blob(f->st, fl->element[j + 1]->str,
						   fl->element[j + 1]->len, 0);
		}
		/* Workers act now, not at their next sweep: a revocation closes
		 * connections at once, a localtunnel session opens at once. */
		if (entries->elements && f->st->on_change)
			f->st->on_change(f->st->collect_ud);
	}
	freeReplyObject(r);
	return 0;
}

static uint64_t counts_sig(const struct dp_state_counts *c)
{
	uint64_t v[5] = {c->connections, c->live, c->requests, c->bytes_in, c->bytes_out};
	uint64_t h = 1469598103934665603ull;

	for (int i = 0; i < 5; i++)
		h = (h ^ v[i]) * 1099511628211ull;
	return h | 1;
}

/* 1 when c differs from what was last reported for its session (and note
 * it as reported): a session whose counters stand still costs nothing. */
static int counts_changed(struct dp_state *st, const struct dp_state_counts *c)
{
	uint64_t sig = counts_sig(c);
	struct dp_state_ent *e;
	int changed = 0;

	pthread_rwlock_wrlock(&st->lock);
	e = *slot_of(st, c->sid);
	if (e && e->reported_sig != sig) {
		e->reported_sig = sig;
		changed = 1;
	}
	pthread_rwlock_unlock(&st->lock);
	return changed;
}

/* Heartbeat, then the counters of every session whose counters moved. */
static int report(struct dp_follower *f)
{
	struct dp_state *st = f->st;
	struct dp_state_counts *c = NULL;
	size_t n = 0, sent = 0;
	uint64_t now = sl_wall_ms();
	redisReply *r;
	char buf[512];

	r = redisCommand(f->rc, "ZADD sl:relays %llu %s", (unsigned long long)now,
			 st->cfg.relay_id);
	if (r == NULL || r->type == REDIS_REPLY_ERROR)
		return fail_reply(f, r, "ZADD sl:relays");
	freeReplyObject(r);
	if (st->collect && (c = calloc(REPORT_MAX, sizeof(*c))) != NULL)
		n = st->collect(st->collect_ud, c, REPORT_MAX);
	for (size_t i = 0; i < n; i++) {
		struct pr_stats ps = {.at_ms = now};
		int len;

		snprintf(ps.sid, sizeof(ps.sid), "%s", c[i].sid);
		snprintf(ps.relay, sizeof(ps.relay), "%s", st->cfg.relay_id);
		ps.connections = c[i].connections;
		ps.live = c[i].live;
		ps.requests = c[i].requests;
		ps.bytes_in = c[i].bytes_in;
		ps.bytes_out = c[i].bytes_out;
		if (!counts_changed(st, &c[i]) ||
		    (len = pr_stats_encode(&ps, buf, sizeof(buf))) < 0)
			continue;
		sent++;
		redisAppendCommand(f->rc, "XADD sl:stats MAXLEN ~ " STATS_MAXLEN " * m %b", buf,
				   (size_t)len);
	}
	free(c);
	/* The replies of the pipeline, in order. */
	for (size_t i = 0; i < sent; i++) {
		void *rep = NULL;

		if (redisGetReply(f->rc, &rep) != REDIS_OK)
			return fail_reply(f, NULL, "XADD sl:stats");
		freeReplyObject(rep);
	}
	atomic_fetch_add(&st->reports, 1);
	return 0;
}

/* One connection: a snapshot, then changes as they come, reports every
 * REPORT_MS; 1 when the snapshot loaded (the backoff starts again). The
 * follower (ud) lives across connections: its snapshot generation tells
 * the entries the next snapshot no longer has. */
static int serve_rc(void *ud, redisContext *rc, char *why, size_t cap)
{
	struct dp_follower *fp = ud;
	struct dp_state *st = fp->st;
	int served = 0;

	fp->rc = rc;
	if (snapshot(fp) == 0) {
		atomic_store(&st->up, 1);
		served = 1;
		/* Bounded by stop: each turn blocks at most BLOCK_MS. The first
		 * heartbeat goes out at once. */
		fp->next_report_ms = 0;
		while (!sl_bg_stopping(&st->bg)) {
			if (sl_wall_ms() >= fp->next_report_ms) {
				fp->next_report_ms = sl_wall_ms() + REPORT_MS;
				if (report(fp) < 0)
					break;
			}
			if (follow_once(fp) < 0)
				break;
		}
	}
	atomic_store(&st->up, 0);
	fp->rc = NULL;
	snprintf(why, cap, "%s", fp->err);
	return served;
}

static void lost(void *ud, const char *why, unsigned wait_ms)
{
	struct dp_state *st = ((struct dp_follower *)ud)->st;

	atomic_store(&st->up, 0);
	atomic_fetch_add(&st->failures, 1);
	sl_warn("state: redis: %s; retrying in %u ms (sessions kept as they were)", why, wait_ms);
}

static void free_tables(struct dp_state *st)
{
	free(st->buckets);
	st->buckets = NULL;
	for (int i = 0; i < DP_STATE_NIDX; i++) {
		free(st->ibuckets[i]);
		st->ibuckets[i] = NULL;
	}
}

int dp_state_start(struct dp_state *st, const struct dp_state_config *cfg,
		   dp_state_collect_fn collect, void *ud)
{
	struct sl_redis_target t;
	char why[200];
	int e;

	if (sl_redis_url_parse(cfg->redis, &t, why, sizeof(why)) < 0) {
		sl_error("--redis: %s", why);
		return -EINVAL;
	}
	memset(t.password, 0, sizeof(t.password));
	st->cfg = *cfg;
	st->collect = collect;
	st->collect_ud = ud;
	st->nbuckets = NBUCKETS;
	st->buckets = calloc(st->nbuckets, sizeof(st->buckets[0]));
	for (int i = 0; i < DP_STATE_NIDX; i++)
		st->ibuckets[i] = calloc(st->nbuckets, sizeof(st->ibuckets[i][0]));
	if (st->buckets == NULL || st->ibuckets[0] == NULL || st->ibuckets[1] == NULL) {
		free_tables(st);
		return -ENOMEM;
	}
	pthread_rwlock_init(&st->lock, NULL);
	if ((st->fl = calloc(1, sizeof(*st->fl))) == NULL) {
		pthread_rwlock_destroy(&st->lock);
		free_tables(st);
		return -ENOMEM;
	}
	st->fl->st = st;
	st->follow = (struct sl_redis_follow){&st->bg, st->cfg.redis, st->cfg.timeout_ms + BLOCK_MS,
					      100,     RETRY_MAX_MS,  serve_rc,
					      lost,    st->fl};
	if ((e = sl_redis_follow_start(&st->follow)) < 0) {
		free(st->fl);
		st->fl = NULL;
		pthread_rwlock_destroy(&st->lock);
		free_tables(st);
		return e;
	}
	return 0;
}

void dp_state_stop(struct dp_state *st)
{
	if (!sl_bg_stop(&st->bg))
		return;
	for (uint32_t i = 0; i < st->nbuckets; i++) {
		struct dp_state_ent *e = st->buckets[i], *next;

		for (; e; e = next) {
			next = e->next;
			free(e);
		}
	}
	free_tables(st);
	pthread_rwlock_destroy(&st->lock);
	free(st->fl);
	st->fl = NULL;
}

int dp_state_get(struct dp_state *st, const char *sid, struct pr_session *out)
{
	struct dp_state_ent *e;

	pthread_rwlock_rdlock(&st->lock);
	e = *slot_of(st, sid);
	if (e)
		*out = e->s;
	pthread_rwlock_unlock(&st->lock);
	return e ? 0 : -ENOENT;
}

size_t dp_state_foreach(struct dp_state *st, void (*fn)(void *ud, const struct pr_session *s),
			void *ud)
{
	size_t n = 0;

	pthread_rwlock_rdlock(&st->lock);
	for (uint32_t i = 0; i < st->nbuckets; i++)
		for (struct dp_state_ent *e = st->buckets[i]; e; e = e->next, n++)
			fn(ud, &e->s);
	pthread_rwlock_unlock(&st->lock);
	return n;
}

static int by_index(struct dp_state *st, int i, const char *key, size_t len, struct pr_session *out)
{
	struct dp_state_ent *e;

	pthread_rwlock_rdlock(&st->lock);
	e = st->ibuckets[i][sl_fnv1a(key, len) % st->nbuckets];
	while (e &&
	       (strlen(index_key(&e->s, i)) != len || memcmp(index_key(&e->s, i), key, len) != 0))
		e = e->inext[i];
	if (e)
		*out = e->s;
	pthread_rwlock_unlock(&st->lock);
	return e ? 0 : -ENOENT;
}

int dp_state_by_domain(struct dp_state *st, const char *host, size_t len, struct pr_session *out)
{
	return by_index(st, DP_STATE_BY_DOMAIN, host, len, out);
}

int dp_state_by_name(struct dp_state *st, const char *name, size_t len, struct pr_session *out)
{
	return by_index(st, DP_STATE_BY_NAME, name, len, out);
}

int dp_state_usable(struct dp_state *st, const char *sid, uint64_t epoch, uint64_t now)
{
	struct pr_session s;

	return dp_state_get(st, sid, &s) == 0 && s.status == PR_SS_ACTIVE && s.epoch == epoch &&
	       now < s.expires;
}
