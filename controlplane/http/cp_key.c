/*
 * cp_key.c: API keys (see cp_key.h).
 */
#include "http/cp_key.h"
#include "pr_token.h"
#include "sl_redis.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <hiredis.h>

int cp_key_new(struct cp_key *k, const char *name, unsigned scopes)
{
	memset(k, 0, sizeof(*k));
	k->id[0] = 'k';
	memcpy(k->key, "sk_", 3);
	if (pr_random_alnum(k->id + 1, sizeof(k->id) - 2) < 0 ||
	    pr_random_alnum(k->key + 3, sizeof(k->key) - 4) < 0)
		return -EIO;
	pr_sha256_hex(k->key, strlen(k->key), k->hash);
	snprintf(k->name, sizeof(k->name), "%s", name ? name : "");
	snprintf(k->scopes, sizeof(k->scopes), "%s%s%s", scopes & CP_SCOPE_ADMIN ? "admin" : "",
		 (scopes & CP_SCOPE_ADMIN) && (scopes & CP_SCOPE_TUNNELS) ? "," : "",
		 scopes & CP_SCOPE_TUNNELS ? "tunnels" : "");
	k->created = (uint64_t)time(NULL);
	return 0;
}

int cp_key_id_valid(const char *s, size_t len)
{
	if (len != 12 || s[0] != 'k')
		return 0;
	for (size_t i = 1; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
			return 0;
	return 1;
}

int cp_key_store(const struct sl_redis_target *t, int timeout_ms, const struct cp_key *k, char *err,
		 size_t cap)
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
