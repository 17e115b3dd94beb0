/*
 * dp_state.h: the relay's copy of the session table the control plane keeps
 * in Redis (docs/protocol.md, "Session state"). A follower thread loads a
 * snapshot, then follows the stream of changes; after any Redis failure it
 * reconnects and loads a snapshot again, so a relay started or restarted at
 * any moment converges to the same table. The same thread heartbeats the
 * relay into Redis and reports per-session counters back.
 *
 * Workers read the table (HELLO checks) under a read lock, and watch
 * `revoked`: it rises whenever a session stops being usable (deleted,
 * expired, a new epoch, or gone from Redis), and a worker that sees it rise
 * checks its tunnels within its next sweep.
 */
#ifndef DP_STATE_H
#define DP_STATE_H

#include <pthread.h>

#include "sl_redis.h"
#include "sl_thread.h"
#include <stdatomic.h>
#include <stdint.h>

#include "pr_state.h"

/* Ownership: copied into dp_state; its strings borrowed for the follower's life. */
struct dp_state_config {
	const char *redis; /* redis://[[user]:password@]host[:port][/db] or unix:/path */
	const char *relay_id;
	int timeout_ms;
};

/* One session's counters, as the relay's workers add them up. Ownership: a value, copied between
 * the workers and the follower. */
struct dp_state_counts {
	char sid[33];
	uint64_t connections, live, requests, bytes_in, bytes_out;
};

/* Collects counters from the workers for one report; see dp_state_start. */
typedef size_t (*dp_state_collect_fn)(void *ud, struct dp_state_counts *out, size_t cap);

struct dp_state_ent;

enum { DP_STATE_BY_DOMAIN = 0, DP_STATE_BY_NAME = 1, DP_STATE_NIDX = 2 };

struct dp_follower;

/* Ownership: embedded in the relay's shared state; dp_state_start() and
 * dp_state_stop() bracket the thread; entries belong to the table. */
struct dp_state {
	struct dp_state_config cfg;
	pthread_rwlock_t lock;
	struct dp_state_ent **buckets;
	struct dp_state_ent **ibuckets[DP_STATE_NIDX]; /* active sessions by domain, by name */
	uint32_t nbuckets, count;
	struct sl_bg bg;		     /* the follower thread (its mu and cv are unused) */
	struct sl_redis_follow follow;	     /* what the thread runs */
	struct dp_follower *fl;		     /* its state across connections (dp_state.c) */
	atomic_uint_fast64_t revoked;	     /* rises when a session stops being usable */
	atomic_uint_fast64_t changed;	     /* rises with every record applied */
	atomic_uint_fast64_t lt_changed;     /* rises when a localtunnel session's record changes */
	atomic_uint_fast64_t limits_changed; /* rises when an active session's limits change */
	atomic_int ready;		     /* a snapshot was loaded at least once */
	atomic_int up;			     /* connected to Redis now */
	atomic_uint_fast64_t applied, snapshots, failures, reports;
	dp_state_collect_fn collect;
	void *collect_ud;
	void (*on_change)(void *ud); /* after records were applied (follower thread) */
	char host[256], path[108], password[256], user[64];
	int port, db, is_unix;
};

/* Parse the config and start the thread. 0, or -EINVAL (bad URL) / -errno. */
int dp_state_start(struct dp_state *st, const struct dp_state_config *cfg,
		   dp_state_collect_fn collect, void *ud);

/* Stop the thread and free the table. */
void dp_state_stop(struct dp_state *st);

/* Copy the record of sid into *out: 0, or -ENOENT. */
int dp_state_get(struct dp_state *st, const char *sid, struct pr_session *out);

/* Call fn on a copy of every record, under the read lock (fn must not call
 * back into st); returns how many. */
size_t dp_state_foreach(struct dp_state *st, void (*fn)(void *ud, const struct pr_session *s),
			void *ud);

/* The active session that named host (a custom domain, lowercase) into
 * *out: 0, or -ENOENT. */
int dp_state_by_domain(struct dp_state *st, const char *host, size_t len, struct pr_session *out);

/* The active session named name (a tunnel name, lowercase) into *out: 0,
 * or -ENOENT. */
int dp_state_by_name(struct dp_state *st, const char *name, size_t len, struct pr_session *out);

/* 1 when sid is active at epoch and unexpired at now (unix s). */
int dp_state_usable(struct dp_state *st, const char *sid, uint64_t epoch, uint64_t now);

#endif
