/*
 * cp_redis.h: the control plane's blocking Redis calls: the start-up probe
 * and `keys create`. Requests use the asynchronous client (cp_rdb.h).
 */
#ifndef CP_REDIS_H
#define CP_REDIS_H

#include <stddef.h>

#include "sl_redis.h"

/*
 * Connect, authenticate, select and PING, each step bounded by timeout_ms.
 * Returns 0 with the round trip in *latency_ms, or a negative errno with the
 * reason in err.
 */
int cp_redis_ping(const struct sl_redis_target *t, int timeout_ms, double *latency_ms, char *err,
		  size_t cap);

struct cp_key;

/* Store a new API key (both of its hashes and its place in the listing)
 * with a blocking connection bounded by timeout_ms: `keys create`. */
int cp_redis_store_key(const struct sl_redis_target *t, int timeout_ms, const struct cp_key *k,
		       char *err, size_t cap);

#endif
