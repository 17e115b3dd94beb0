/*
 * cp_stats.c: the relays' counters folded into the sessions' totals. Relays
 * append reports to the stream sl:stats (field m: pr_stats); one blocking
 * XREAD at a time, on a connection of its own, folds each into
 *
 *   sl:stat:<sid>      hash "<relay>.<counter>" -> total, read by GET
 *                      /api/v1/tunnels/{id}
 *   sl:stats:cursor    the last report folded, where a restart goes on
 *
 * A failed read is tried again a second later.
 */
#include "api/cp_stats.h"
#include "http/cp_record.h"
#include "pr_msg.h"
#include "sl_log.h"

#include <stdio.h>

#include <hiredis.h>

static void stats_read(struct cp_stats *st);

static void on_stats_timer(h2o_timeout_entry_t *e)
{
	stats_read(H2O_STRUCT_FROM_MEMBER(struct cp_stats, retry, e));
}

static void stats_retry_later(struct cp_stats *st)
{
	if (st->stopping || h2o_timeout_is_linked(&st->retry))
		return;
	st->retry.cb = on_stats_timer;
	h2o_timeout_link(st->s->loop, &st->retry_timeout, &st->retry);
}

/* HSET sl:stat:<sid> <relay>.conn N ... for one report. */
static void fold_one(struct cp_server *s, const char *m, size_t len)
{
	struct pr_stats st;

	if (pr_stats_decode(m, len, &st) < 0) {
		sl_warn("stats: an unreadable report skipped");
		return;
	}
	cp_rdb_cmdf(
		s->db, NULL, NULL,
		"HSET sl:stat:%s %s.conn %llu %s.live %llu %s.req %llu %s.bin %llu %s.bout %llu",
		st.sid, st.relay, (unsigned long long)st.connections, st.relay,
		(unsigned long long)st.live, st.relay, (unsigned long long)st.requests, st.relay,
		(unsigned long long)st.bytes_in, st.relay, (unsigned long long)st.bytes_out);
	cp_rdb_cmdf(s->db, NULL, NULL, "EXPIRE sl:stat:%s %d", st.sid, 2 * CP_RETAIN_S);
	s->m.stats_folded++;
}

/* XREAD reply: [[stream, [[id, [field, value, ...]], ...]]] or nil. */
static void on_stats(void *ud, redisReply *r, const char *err)
{
	struct cp_stats *st = ud;
	redisReply *entries;

	st->reading = 0;
	if (err || r->type == REDIS_REPLY_ERROR) {
		stats_retry_later(st);
		return;
	}
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 && r->element[0]->elements == 2) {
		entries = r->element[0]->element[1];
		for (size_t i = 0; i < entries->elements; i++) {
			redisReply *e = entries->element[i], *f = e->element[1];

			snprintf(st->last_id, sizeof(st->last_id), "%.*s", (int)e->element[0]->len,
				 e->element[0]->str);
			for (size_t j = 0; j + 1 < f->elements; j += 2)
				if (f->element[j]->len == 1 && f->element[j]->str[0] == 'm')
					fold_one(st->s, f->element[j + 1]->str,
						 f->element[j + 1]->len);
		}
		cp_rdb_cmdf(st->s->db, NULL, NULL, "SET sl:stats:cursor %s", st->last_id);
	}
	stats_read(st);
}

static void on_stats_cursor(void *ud, redisReply *r, const char *err)
{
	struct cp_stats *st = ud;

	st->reading = 0;
	if (err || r->type == REDIS_REPLY_ERROR) {
		stats_retry_later(st);
		return;
	}
	snprintf(st->last_id, sizeof(st->last_id), "%.*s",
		 r->type == REDIS_REPLY_STRING ? (int)r->len : 1,
		 r->type == REDIS_REPLY_STRING ? r->str : "0");
	stats_read(st);
}

static void stats_read(struct cp_stats *st)
{
	if (st->stopping || st->reading)
		return;
	st->reading = 1;
	if (st->last_id[0] == '\0') {
		cp_rdb_cmdf(st->db, on_stats_cursor, st, "GET sl:stats:cursor");
		return;
	}
	cp_rdb_cmdf(st->db, on_stats, st, "XREAD COUNT 500 BLOCK 1000 STREAMS sl:stats %s",
		    st->last_id);
}

int cp_stats_follow(struct cp_stats *st, struct cp_server *s)
{
	int err;

	st->s = s;
	h2o_timeout_init(s->loop, &st->retry_timeout, 1000);
	/* The XREAD blocks up to a second: its own connection, with room above
	 * that in its timeout. */
	if ((err = cp_rdb_create(&st->db, s->loop, s->cfg.redis,
				 1000 + s->cfg.redis_timeout_ms * 4)) < 0)
		return err;
	stats_read(st);
	return 0;
}

void cp_stats_stop(struct cp_stats *st)
{
	st->stopping = 1; /* the reader does not start again */
	cp_rdb_free(st->db);
	st->db = NULL;
	h2o_timeout_unlink(&st->retry);
	h2o_timeout_dispose(st->s->loop, &st->retry_timeout);
}
