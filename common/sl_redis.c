/*
 * sl_redis.c: Redis addresses and a blocking connection bounded by a
 * timeout (see sl_redis.h), shared by the control plane and the relay.
 */
#include "sl_redis.h"
#include "sl_thread.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

static int why_fail(char *why, size_t cap, const char *msg)
{
	snprintf(why, cap, "%s", msg);
	return -EINVAL;
}

/* Copy [p, end) into dst (cap bytes); fails when it does not fit. */
static int copy_part(char *dst, size_t cap, const char *p, const char *end)
{
	if ((size_t)(end - p) >= cap)
		return -EINVAL;
	memcpy(dst, p, (size_t)(end - p));
	dst[end - p] = '\0';
	return 0;
}

static int parse_num(const char *p, const char *end, long lo, long hi, int *out)
{
	long v = 0;

	if (p == end || end - p > 6)
		return -EINVAL;
	for (; p < end; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v = v * 10 + (*p - '0');
	}
	if (v < lo || v > hi)
		return -EINVAL;
	*out = (int)v;
	return 0;
}

static int parse_userinfo(const char *p, const char *at, struct sl_redis_target *t)
{
	const char *colon = memchr(p, ':', (size_t)(at - p));

	if (colon == NULL)
		return copy_part(t->password, sizeof(t->password), p, at);
	if (copy_part(t->user, sizeof(t->user), p, colon) < 0)
		return -EINVAL;
	return copy_part(t->password, sizeof(t->password), colon + 1, at);
}

static int parse_tcp(const char *p, struct sl_redis_target *t, char *why, size_t cap)
{
	const char *end = p + strlen(p), *slash = strchr(p, '/'), *at, *colon;
	const char *hostend = slash ? slash : end;

	at = memchr(p, '@', (size_t)(hostend - p));
	if (at) {
		if (parse_userinfo(p, at, t) < 0)
			return why_fail(why, cap, "user or password too long");
		p = at + 1;
	}
	colon = memchr(p, ':', (size_t)(hostend - p));
	if (copy_part(t->host, sizeof(t->host), p, colon ? colon : hostend) < 0 || !t->host[0])
		return why_fail(why, cap, "missing or overlong host");
	t->port = 6379;
	if (colon && parse_num(colon + 1, hostend, 1, 65535, &t->port) < 0)
		return why_fail(why, cap, "port must be 1..65535");
	if (slash && parse_num(slash + 1, end, 0, 65535, &t->db) < 0)
		return why_fail(why, cap, "database must be a number");
	return 0;
}

int sl_redis_url_parse(const char *url, struct sl_redis_target *t, char *why, size_t cap)
{
	memset(t, 0, sizeof(*t));
	if (strncmp(url, "unix:", 5) == 0) {
		t->is_unix = 1;
		if (url[5] != '/' || strlen(url + 5) >= sizeof(t->path))
			return why_fail(why, cap, "expected unix:/absolute/path (under 108 bytes)");
		strcpy(t->path, url + 5);
		return 0;
	}
	if (strncmp(url, "redis://", 8) != 0)
		return why_fail(why, cap, "expected redis://host:port or unix:/path");
	return parse_tcp(url + 8, t, why, cap);
}

int sl_redis_url_check(const char *url, char *why, size_t cap)
{
	struct sl_redis_target t;
	int err = sl_redis_url_parse(url, &t, why, cap);

	memset(t.password, 0, sizeof(t.password));
	return err;
}

int sl_redis_run(redisContext *rc, char *err, size_t cap, const char *fmt, ...)
{
	redisReply *r;
	va_list ap;
	int ok;

	va_start(ap, fmt);
	r = redisvCommand(rc, fmt, ap);
	va_end(ap);
	if (r == NULL) {
		snprintf(err, cap, "%s", rc->errstr[0] ? rc->errstr : "no reply");
		return -EIO;
	}
	ok = r->type != REDIS_REPLY_ERROR;
	if (!ok)
		snprintf(err, cap, "%.*s", (int)r->len, r->str);
	freeReplyObject(r);
	return ok ? 0 : -EPROTO;
}

redisContext *sl_redis_connect(const struct sl_redis_target *t, int timeout_ms, char *err,
			       size_t cap)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	redisContext *rc;
	int e = 0;

	rc = t->is_unix ? redisConnectUnixWithTimeout(t->path, tv)
			: redisConnectWithTimeout(t->host, t->port, tv);
	if (rc == NULL) {
		snprintf(err, cap, "out of memory");
		return NULL;
	}
	if (rc->err) {
		snprintf(err, cap, "%s", rc->errstr);
		redisFree(rc);
		return NULL;
	}
	redisSetTimeout(rc, tv);
	if (t->password[0] && t->user[0])
		e = sl_redis_run(rc, err, cap, "AUTH %s %s", t->user, t->password);
	else if (t->password[0])
		e = sl_redis_run(rc, err, cap, "AUTH %s", t->password);
	if (e == 0 && t->db)
		e = sl_redis_run(rc, err, cap, "SELECT %d", t->db);
	if (e != 0) {
		redisFree(rc);
		return NULL;
	}
	return rc;
}

void sl_redis_follow_run(const struct sl_redis_follow *f)
{
	struct sl_redis_target t;
	unsigned wait = f->retry_ms;
	char why[200];

	sl_redis_url_parse(f->url, &t, why, sizeof(why)); /* checked at start-up */
	while (!sl_bg_stopping(f->bg)) {
		struct redisContext *rc = sl_redis_connect(&t, f->timeout_ms, why, sizeof(why));

		if (rc) {
			if (f->serve(f->ud, rc, why, sizeof(why)) > 0)
				wait = f->retry_ms;
			redisFree(rc);
		}
		if (sl_bg_stopping(f->bg))
			break;
		f->lost(f->ud, why, wait);
		usleep(wait * 1000u);
		wait = wait * 2 > f->retry_max_ms ? f->retry_max_ms : wait * 2;
	}
	memset(t.password, 0, sizeof(t.password));
}

static void *follow_thread(void *arg)
{
	sl_redis_follow_run(arg);
	return NULL;
}

int sl_redis_follow_start(struct sl_redis_follow *f)
{
	return sl_bg_start(f->bg, follow_thread, f);
}
