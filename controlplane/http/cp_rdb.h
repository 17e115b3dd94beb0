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
 *
 * Every command's callback runs exactly once, and never inside
 * cp_rdb_cmdv/cp_rdb_cmdf: a reply, or a failure told on the next turn of
 * the loop (a zero-delay timer), in the order the commands were sent. So a
 * caller may send several commands with one ud (a pipeline, MULTI ... EXEC)
 * and its callbacks, which may end the request, run only once it is done.
 *
 * A command that cannot be queued (no memory to format it or to hold its
 * place; or the fault hook below) fails with every command in flight, as a
 * timeout does: the connection is dropped and reconnects after its backoff.
 * Failing that one command alone would leave a pipeline with a hole in it:
 * a MULTI ... EXEC without one of its commands would run the rest, and
 * replies matched by position would shift. Closing the connection makes
 * Redis discard an open MULTI, and the commands sent after it meet the
 * closed connection and fail too. err is then "redis command: out of
 * memory", which routes answer as Redis unavailable (503).
 *
 * Reporting a failure allocates nothing that may fail: its node is
 * malloc'd or, with no memory, one of a reserve of 256 kept per connection
 * and given back when its callback has run. More than 256 commands failing
 * for want of memory within one turn of the loop leaves nothing to remember
 * them by: the process logs it and aborts (as h2o does on any allocation
 * failure), since a request never answered nor freed is worse.
 *
 * Why these functions return nothing: every failure reaches the callback,
 * whose error path the caller has anyway (Redis down, a timeout); a return
 * value to check at each of the hundred call sites would be a second path
 * for the same failure, and one a pipeline's caller cannot take (the
 * commands before it are out, with the same ud).
 *
 * Fault hook, for tests: SLUICE_FAULT_RDB_ALLOC=[COMMAND:]N fails the N-th
 * command (counting from 1, over every connection of the process; with
 * COMMAND, counting only commands of that name, any case) as if out of
 * memory, once. Read at the first cp_rdb_create; a warning is logged when
 * it is set. Unset (the default) it costs one test per command.
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

/* Close; commands in flight or failed get their callbacks now, with err
 * "shutting down" (commands those callbacks send fail the same way). */
void cp_rdb_free(struct cp_rdb *db);

/* Queue one command (argv form, binary safe). cb may be NULL to discard the
 * reply; otherwise it runs once, later (see above). */
void cp_rdb_cmdv(struct cp_rdb *db, cp_rdb_cb cb, void *ud, int argc, const char **argv,
		 const size_t *argvlen);

/* Queue one command in hiredis's printf form ("SET %s %b"). */
void cp_rdb_cmdf(struct cp_rdb *db, cp_rdb_cb cb, void *ud, const char *fmt, ...);

/* 1 while connected and authenticated (a predicate). */
int cp_rdb_up(const struct cp_rdb *db);

/* Why the connection last failed ("" if it never did). */
const char *cp_rdb_last_error(const struct cp_rdb *db);

void cp_rdb_get_stats(const struct cp_rdb *db, struct cp_rdb_stats *st);

/* 1 when an EXEC reply ran every command (none answered an error). */
int cp_exec_ok(const struct redisReply *r);

#endif
