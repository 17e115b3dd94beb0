/*
 * dp_owners.h: which worker of a relay holds each tunnel.
 */
#ifndef DP_OWNERS_H
#define DP_OWNERS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Which worker thread owns each tunnel, by name and by session id: the one
 * place workers share. A tunnel lives on one worker (its control connection,
 * pool and public connections are sockets of that worker's ring); a worker
 * that receives a request or an agent connection for a tunnel it does not
 * hold asks here and hands the socket over.
 *
 * Ownership: one per relay, shared by its workers, every call under mu.
 */
struct dp_owner_ent;
struct dp_owners {
	pthread_mutex_t mu;
	struct dp_owner_ent **buckets;
	uint32_t nbuckets;
};

#define DP_OWNER_NONE (-1)

int dp_owners_init(struct dp_owners *o, uint32_t nbuckets);
void dp_owners_free(struct dp_owners *o);
/* Claim name and sid for worker w unless another worker holds the name:
 * returns w when claimed, the holder's index otherwise, or -ENOMEM. */
int dp_owners_claim(struct dp_owners *o, const char *name, const char *sid, int w);
/* The worker holding a name (is_sid 0) or session id (1), or DP_OWNER_NONE. */
int dp_owners_find(struct dp_owners *o, int is_sid, const char *key, size_t len);
/* Drop name and sid if worker w holds them. */
void dp_owners_release(struct dp_owners *o, const char *name, const char *sid, int w);

#endif
