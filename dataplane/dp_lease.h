/*
 * dp_lease.h: limits that span relays (an API key's requests over all of
 * its tunnels, wherever they are served), spent locally from tokens leased
 * in batches out of Redis (proto/pr_window.h), so no request waits for a
 * Redis round trip once a lease is in hand.
 *
 * A thread of its own keeps the leases topped up: workers take tokens under
 * a mutex and ask for more before they run out; the batch grows with the
 * key's demand but stays small against the limit (limit / (100 x live
 * relays)), because tokens left unspent when their slot ends are dropped,
 * never carried over (they are given back to their slot in Redis, for the
 * other relays): over any window the grants, hence what all relays let
 * through together, never exceed the limit.
 *
 * While Redis cannot be reached the relay fails open into a local limit,
 * the global one divided by the number of relays last seen alive; a log
 * line (an audit event) and the metrics say so, and leasing resumes by
 * itself when Redis answers again.
 */
#ifndef DP_LEASE_H
#define DP_LEASE_H

#include <pthread.h>

#include "sl_redis.h"
#include "sl_thread.h"
#include <stdatomic.h>
#include <stdint.h>

#include "dp_rate.h"
#include "pr_state.h"

enum dp_lease_verdict {
	DP_LEASE_OK = 0,   /* go */
	DP_LEASE_WAIT = 1, /* a lease is on its way: ask again soon (see dp_lease_take) */
	DP_LEASE_OVER = 2, /* over the limit: *reset_ms says when room opens */
};

struct dp_lease_ent;

/* Ownership: embedded in the relay's shared state; start and stop bracket
 * the thread, which owns the Redis connection; entries are the table's. */
struct dp_leases {
	char redis[512];
	char relay_id[128];
	struct sl_bg bg;	       /* the thread; its mu guards the fields below */
	struct sl_redis_follow follow; /* what the thread runs */
	struct dp_lease_ent *ents;     /* list: a relay serves few keys at once */
	uint32_t nents;
	uint32_t nrelays;	  /* live relays, last seen (>= 1) */
	atomic_int up;		  /* leasing from Redis now; 0: local limits */
	atomic_int drain_asked;	  /* the control plane asked this relay to drain (sl:drain:<id>) */
	atomic_uint_fast64_t gen; /* rises whenever leases arrive or the mode changes */
	atomic_uint_fast64_t leases, lease_failures, local_decisions, mode_changes;
	void (*on_lease)(void *ud); /* leases arrived (the lease thread): wake the workers */
	void *ud;
};

/* Start the lease thread. 0 or -errno. */
int dp_leases_start(struct dp_leases *l, const char *redis_url, const char *relay_id,
		    void (*on_lease)(void *ud), void *ud);
void dp_leases_stop(struct dp_leases *l);

/*
 * One event (a request) against key_id's shared limit lim. DP_LEASE_WAIT
 * means no token is in hand yet but one has been asked for: the caller
 * holds the request and asks again when gen rises; with local set it never
 * waits (the caller waited long enough) and decides on the local share.
 * *reset_ms (DP_LEASE_OVER) is when the window makes room.
 */
enum dp_lease_verdict dp_lease_take(struct dp_leases *l, const char *key_id,
				    const struct pr_limit *lim, int local, uint64_t *reset_ms);

#endif
