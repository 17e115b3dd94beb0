/*
 * cp_redis.h: where the control plane's Redis is, and a bounded health probe.
 * Accepted forms: redis://[[user]:password@]host[:port][/db] and unix:/path.
 */
#ifndef CP_REDIS_H
#define CP_REDIS_H

#include <stddef.h>

struct cp_redis_target {
	int is_unix;
	char host[256];
	int port;
	char path[108]; /* sun_path's size */
	char user[64];
	char password[256];
	int db;
};

/* Parse url into *t; returns 0, or -EINVAL with the reason in why. */
int cp_redis_url_parse(const char *url, struct cp_redis_target *t, char *why, size_t cap);

/* sl_opt check hook for the --redis option. */
int cp_redis_url_check(const char *url, char *why, size_t cap);

/*
 * Connect, authenticate, select and PING, each step bounded by timeout_ms.
 * Returns 0 with the round trip in *latency_ms, or a negative errno with the
 * reason in err. Blocking: callers on an event loop accept the bound.
 */
int cp_redis_ping(const struct cp_redis_target *t, int timeout_ms, double *latency_ms, char *err,
		  size_t cap);

#endif
