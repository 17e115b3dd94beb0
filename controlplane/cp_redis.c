/*
 * cp_redis.c: the control plane's blocking Redis calls (see cp_redis.h).
 */
#include "cp_redis.h"
#include "cp_keys.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

#include <hiredis.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int cp_redis_ping(const struct sl_redis_target *t, int timeout_ms, double *latency_ms, char *err,
		  size_t cap)
{
	double start = now_ms();
	redisContext *rc = sl_redis_connect(t, timeout_ms, err, cap);
	int e;

	if (rc == NULL)
		return -ECONNREFUSED;
	e = sl_redis_run(rc, err, cap, "PING");
	*latency_ms = now_ms() - start;
	redisFree(rc);
	return e;
}

int cp_redis_store_key(const struct sl_redis_target *t, int timeout_ms, const struct cp_key *k,
		       char *err, size_t cap)
{
	redisContext *rc = sl_redis_connect(t, timeout_ms, err, cap);
	int e;

	if (rc == NULL)
		return -ECONNREFUSED;
	e = sl_redis_run(rc, err, cap, "MULTI");
	if (e == 0)
		e = sl_redis_run(rc, err, cap, CP_KEY_HSET_FMT, CP_KEY_HSET_ARGS(k));
	if (e == 0)
		e = sl_redis_run(rc, err, cap, CP_KEYMETA_HSET_FMT, CP_KEYMETA_HSET_ARGS(k));
	if (e == 0)
		e = sl_redis_run(rc, err, cap, "ZADD sl:keys %llu %s",
				 (unsigned long long)k->created, k->id);
	if (e == 0)
		e = sl_redis_run(rc, err, cap, "EXEC");
	redisFree(rc);
	return e;
}
