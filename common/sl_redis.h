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

/* Ownership: a value (the password zeroed by whoever parsed it once done). */
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

struct sl_bg;

/*
 * A background thread's life with Redis (the relay's followers): connect,
 * serve until the connection fails or the thread is told to stop, then wait
 * and connect again. The wait starts at retry_ms and doubles up to
 * retry_max_ms (equal: a fixed interval), back to retry_ms after a serve
 * that returned 1 (it got going). Ownership: the caller's, read only.
 */
struct sl_redis_follow {
	struct sl_bg *bg;
	const char *url;
	int timeout_ms; /* bounds connecting and every command */
	unsigned retry_ms, retry_max_ms;
	/* Use rc until it fails (or bg stops); why may be set to the reason. */
	int (*serve)(void *ud, struct redisContext *rc, char *why, size_t cap);
	/* Not connected (why), and about to wait wait_ms; not called at stop. */
	void (*lost)(void *ud, const char *why, unsigned wait_ms);
	void *ud;
};

/* Run f until f->bg stops: the body of a follower's thread. */
void sl_redis_follow_run(const struct sl_redis_follow *f);
/* Start f->bg's thread running f, which must outlive it (sl_bg_stop ends
 * it): 0 or a negative errno. */
int sl_redis_follow_start(struct sl_redis_follow *f);

#endif
