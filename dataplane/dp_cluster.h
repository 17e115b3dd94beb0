/*
 * dp_cluster.h: many relays, one Redis (docs/cluster.md).
 *
 * Each relay registers itself: sl:relay:<id> holds its link address (where
 * other relays forward public connections to it) with a TTL it refreshes
 * every second, so a relay that dies leaves the registry within
 * DP_CLUSTER_TTL_MS. A relay that binds an agent claims the agent's session:
 * sl:own:<sid> names the relay, with the agent's bind epoch and a fence
 * that rises at every claim. The claim is a compare-and-set in one script:
 * it fails against a live owner holding a newer bind, so a relay whose
 * agent moved on can never take the session back, and a release only
 * deletes a claim whose fence is still its own.
 *
 * A public request for a tunnel this relay does not hold asks which relay
 * does: answers are cached for DP_CLUSTER_CACHE_MS; a miss is a query to
 * Redis on this module's thread, and the request waits (parked) meanwhile.
 *
 * One thread, its own blocking Redis connection; workers only take the
 * mutex, never wait on Redis.
 */
#ifndef DP_CLUSTER_H
#define DP_CLUSTER_H

#include <pthread.h>

#include "sl_redis.h"
#include "sl_thread.h"
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#define DP_CLUSTER_TTL_MS   2000 /* a relay's registration outlives its last beat by this */
#define DP_CLUSTER_BEAT_MS  1000
#define DP_CLUSTER_CACHE_MS 1000
#define DP_CLUSTER_CACHE    4096 /* owner answers kept (direct-mapped by session id) */
#define DP_CLUSTER_PEERS    64
#define DP_CLUSTER_QUEUE    1024 /* claims, releases and queries waiting for the thread */

/* Ownership: a value in dp_cluster.peers. */
struct dp_peer {
	char id[128];
	char link[128];
	struct sockaddr_storage addr;
	socklen_t len;
};

enum dp_owner_verdict {
	DP_OWN_NONE = 0, /* no live relay holds it */
	DP_OWN_SELF,	 /* this relay (Redis says so) */
	DP_OWN_PEER,	 /* another relay: forward there */
	DP_OWN_WAIT,	 /* asked: try again when gen rises */
};

/* Ownership: a value in the cluster's cache array. */
struct dp_own_ent {
	char sid[33];
	char relay[128];
	uint64_t expires_ms;
};

enum { CL_CLAIM = 1, CL_RELEASE, CL_QUERY, CL_KEEP };
/* Ownership: a value in the cluster's job queue. */
struct dp_cl_job {
	uint8_t kind;
	char sid[33];
	uint64_t bepoch;
};

/* A claim this relay holds (or wants), by session. Ownership: malloc'd into the cluster's claims
 * list under its mutex; freed when released, or by dp_cluster_stop. */
struct dp_claim {
	struct dp_claim *next;
	char sid[33];
	uint64_t bepoch, fence;
	int held;
	int bound;	   /* its agent is bound here now (kept: see CL_KEEP in dp_cluster.c) */
	uint64_t retry_ms; /* refused: try again then (a live owner may die) */
};

/* Ownership: embedded in the relay's shared state; start and stop bracket
 * the thread; everything below mu is under it. */
struct dp_cluster {
	char redis[512], relay_id[128], link[128];
	struct sl_bg bg;	       /* the thread; its mu guards the fields below */
	struct sl_redis_follow follow; /* what the thread runs */
	struct dp_peer peers[DP_CLUSTER_PEERS];
	uint32_t npeers;
	struct dp_own_ent *cache; /* DP_CLUSTER_CACHE entries */
	struct dp_cl_job *jobs;	  /* DP_CLUSTER_QUEUE */
	uint32_t njobs;
	struct dp_claim *claims;
	int draining;
	atomic_int up;
	atomic_uint_fast64_t gen; /* rises when answers arrive */
	atomic_uint_fast64_t claims_made, claims_refused, lookups, failures;
	void (*on_change)(void *ud); /* answers arrived (cluster thread) */
	void *ud;
};

int dp_cluster_start(struct dp_cluster *cl, const char *redis_url, const char *relay_id,
		     const char *link, void (*on_change)(void *ud), void *ud);
void dp_cluster_stop(struct dp_cluster *cl);

/* This relay binds sid's agent at bind epoch bepoch: claim it. */
void dp_cluster_claim(struct dp_cluster *cl, const char *sid, uint64_t bepoch);
/* sid's agent left this relay (it may come back, or be bound elsewhere too). */
void dp_cluster_unbound(struct dp_cluster *cl, const char *sid);
/* This relay lets sid go (its agent left for good, or the session ended). */
void dp_cluster_release(struct dp_cluster *cl, const char *sid);
/* Which relay holds sid; with fresh set the cached answer is not used. For
 * DP_OWN_PEER the peer's link address is copied to *addr. */
enum dp_owner_verdict dp_cluster_owner(struct dp_cluster *cl, const char *sid, int fresh,
				       struct sockaddr_storage *addr, socklen_t *len);
/* Forwarding to sid's owner failed: forget the answer. */
void dp_cluster_forget(struct dp_cluster *cl, const char *sid);
/* Tell the registry this relay is draining. */
void dp_cluster_set_draining(struct dp_cluster *cl);

#endif
