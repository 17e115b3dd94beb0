/*
 * sl_redis.h: where Redis is, and a blocking hiredis connection with every
 * step bounded. Accepted forms: redis://[[user]:password@]host[:port][/db]
 * and unix:/path. The control plane's event loop has its own asynchronous
 * client (cp_rdb); this one serves threads that may block (the relay's state
 * follower) and one-shot commands (`sluice-control keys create`).
 */
#ifndef SL_REDIS_H
#define SL_REDIS_H

#include <stddef.h>

struct redisContext;

struct sl_redis_target {
	int is_unix;
	char host[256];
	int port;
	char path[108]; /* sun_path's size */
	char user[64];
	char password[256];
	int db;
};

/* Parse url into *t; returns 0, or -EINVAL with the reason in why. */
int sl_redis_url_parse(const char *url, struct sl_redis_target *t, char *why, size_t cap);

/* sl_opt check hook for --redis options. */
int sl_redis_url_check(const char *url, char *why, size_t cap);

/* The --redis option (sl_config.h), checked, and read from REDIS_URL too;
 * its default and help are the program's. */
#define SL_OPT_REDIS(def, help)                                                                    \
	SL_STR("redis", def, help, .check = sl_redis_url_check, .env_alias = "REDIS_URL")

/* Connect, authenticate and select, each step bounded by timeout_ms, which
 * then bounds every command too. NULL with the reason in err. */
struct redisContext *sl_redis_connect(const struct sl_redis_target *t, int timeout_ms, char *err,
				      size_t cap);

/* Run one command; 0 when the reply is not an error, else -EIO (no reply:
 * the connection is unusable) or -EPROTO, with the reason in err. */
int sl_redis_run(struct redisContext *rc, char *err, size_t cap, const char *fmt, ...);

#endif
