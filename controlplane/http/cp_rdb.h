/*
 * cp_rdb.h: an asynchronous Redis connection on the control plane's h2o
 * event loop. hiredis 0.14's async API has no timeouts, so this uses only
 * its command formatter and reply parser over an h2o socket, and bounds
 * every command itself: a reply that does not come within the timeout fails
 * every command in flight and drops the connection, which reconnects with
 * backoff on the next command. While Redis is down, commands fail at once
 * (no queue grows behind a dead server) with the reason of the last failure.
 *
 * Replies come back in order, so MULTI ... EXEC and pipelines work as they
 * do on a blocking connection.
 */
#ifndef CP_RDB_H
#define CP_RDB_H

#include <stddef.h>
#include <stdint.h>

#include "sl_redis.h"

struct cp_rdb;
struct redisReply;

/*
 * The reply r (NULL when err is set), freed once the callback returns. A
 * Redis error reply is a reply (r->type == REDIS_REPLY_ERROR), not err. The
 * callback may send further commands but must not free the connection.
 */
typedef void (*cp_rdb_cb)(void *ud, struct redisReply *r, const char *err);

struct cp_rdb_stats {
	uint64_t commands, failures, timeouts, connects;
};

/* loop: the h2o_evloop_t the connection lives on (kept as void * so that
 * this header stays free of h2o and OpenSSL). timeout_ms bounds each reply. */
int cp_rdb_create(struct cp_rdb **out, void *loop, const struct sl_redis_target *t, int timeout_ms);

/* Close; commands still in flight get err "shutting down". */
void cp_rdb_free(struct cp_rdb *db);

/* Queue one command (argv form, binary safe). cb may be NULL to discard the
 * reply. Returns 0; on -ENOMEM the callback is not called. */
int cp_rdb_cmdv(struct cp_rdb *db, cp_rdb_cb cb, void *ud, int argc, const char **argv,
		const size_t *argvlen);

/* Queue one command in hiredis's printf form ("SET %s %b"). */
int cp_rdb_cmdf(struct cp_rdb *db, cp_rdb_cb cb, void *ud, const char *fmt, ...);

/* 1 while connected and authenticated. */
int cp_rdb_up(const struct cp_rdb *db);

/* Why the connection last failed ("" if it never did). */
const char *cp_rdb_last_error(const struct cp_rdb *db);

void cp_rdb_get_stats(const struct cp_rdb *db, struct cp_rdb_stats *st);

/* 1 when an EXEC reply ran every command (none answered an error). */
int cp_exec_ok(const struct redisReply *r);

#endif
