/*
 * cp_record.c: the sessions' records in Redis (see cp_record.h): written
 * with their stream event in one MULTI or one script, so a relay never sees
 * one without the other; read back and checked for whose they are.
 */
#include "http/cp_record.h"
#include "pr_state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

int cp_can_see(const struct cp_op *op, const struct pr_session *ps)
{
	return (op->actor.scopes & CP_SCOPE_ADMIN) || strcmp(ps->key_id, op->actor.key_id) == 0;
}

int cp_record_encode(struct cp_record *rec, const struct pr_session *ps)
{
	int n;

	rec->buf.len = 0;
	if (sl_buf_reserve(&rec->buf, PR_STATE_MAX) < 0)
		return -ENOMEM;
	if ((n = pr_session_encode(ps, rec->buf.p, PR_STATE_MAX)) < 0)
		return n;
	rec->buf.len = (size_t)n;
	rec->buf.p[n] = '\0';
	rec->nil = 0;
	return 0;
}

void cp_record_free(struct cp_record *rec)
{
	sl_buf_free(&rec->buf);
}

void cp_record_create(struct cp_op *op, const struct cp_record *rec, const struct pr_session *ps,
		      cp_rdb_cb done)
{
	struct cp_rdb *db = op->s->db;
	uint64_t ttl = ps->expires + CP_RETAIN_S - op->now;

	cp_rdb_cmdf(db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(db, NULL, NULL, "SET sl:sess:%s %b EX %llu", ps->sid, rec->buf.p, rec->buf.len,
		    (unsigned long long)ttl);
	cp_rdb_cmdf(db, NULL, NULL, "ZADD sl:sessions %llu %s", (unsigned long long)ps->created,
		    ps->sid);
	cp_rdb_cmdf(db, NULL, NULL, "ZADD sl:active %llu %s", (unsigned long long)ps->expires,
		    ps->sid);
	if (ps->domain[0])
		cp_rdb_cmdf(db, NULL, NULL, "SADD sl:domsess:%s %s", ps->domain, ps->sid);
	cp_rdb_cmdf(db, NULL, NULL, "XADD sl:events MAXLEN ~ " CP_EVENTS_MAXLEN " * m %b",
		    rec->buf.p, rec->buf.len);
	cp_rdb_cmdf(db, done, op, "EXEC");
}

/*
 * A change to an existing record, atomic in Redis: written only if the
 * stored record is still the revision the caller read and is not deleted
 * (two requests changing one session cannot undo each other, and nothing
 * brings a deleted session back). A delete also leaves the indexes and
 * frees the name if this session still holds it, or hands the name to the
 * session that replaces this one (ARGV[7], only while this one still holds
 * it). Returns 1, or -1 (gone), -2 (deleted), -3 (changed since it was
 * read), -4 (the name is no longer this session's).
 */
static const char update_lua[] =
	"local cur = redis.call('GET', KEYS[1])\n"
	"if not cur then return -1 end\n"
	"local t = cmsgpack.unpack(cur)\n"
	"if t['st'] == 1 then return -2 end\n"
	"if tostring(t['rev']) ~= ARGV[1] then return -3 end\n"
	"if ARGV[7] ~= '-' and redis.call('GET', KEYS[4]) ~= ARGV[4] then return -4 end\n"
	"redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])\n"
	"if ARGV[5] == '0' then\n"
	"  redis.call('ZREM', KEYS[3], ARGV[4])\n"
	"  redis.call('SREM', KEYS[5], ARGV[4])\n"
	"  if ARGV[6] == '1' and redis.call('GET', KEYS[4]) == ARGV[4] then\n"
	"    redis.call('DEL', KEYS[4])\n"
	"  end\n"
	"end\n"
	"if ARGV[7] ~= '-' then redis.call('SET', KEYS[4], ARGV[7], 'EX', ARGV[8]) end\n"
	"redis.call('XADD', KEYS[2], 'MAXLEN', '~', '" CP_EVENTS_MAXLEN "', '*', 'm', ARGV[2])\n"
	"return 1\n";

static void update(struct cp_op *op, const struct cp_record *rec, const struct pr_session *ps,
		   uint64_t read_rev, int deleting, int free_name, const char *heir,
		   uint64_t name_ttl, cp_rdb_cb done)
{
	uint64_t ttl = ps->expires > op->now ? ps->expires + CP_RETAIN_S - op->now : CP_RETAIN_S;

	cp_rdb_cmdf(
		op->s->db, done, op,
		"EVAL %s 5 sl:sess:%s sl:events sl:active sl:name:%s sl:domsess:%s %llu %b %llu "
		"%s %d %d %s %llu",
		update_lua, ps->sid, ps->name, ps->domain[0] ? ps->domain : "-",
		(unsigned long long)read_rev, rec->buf.p, rec->buf.len, (unsigned long long)ttl,
		ps->sid, deleting ? 0 : 2, free_name, heir, (unsigned long long)name_ttl);
}

void cp_record_update(struct cp_op *op, const struct cp_record *rec, const struct pr_session *ps,
		      uint64_t read_rev, int deleting, int free_name, cp_rdb_cb done)
{
	update(op, rec, ps, read_rev, deleting, free_name, "-", 0, done);
}

void cp_record_hand_over(struct cp_op *op, const struct cp_record *rec, const struct pr_session *ps,
			 uint64_t read_rev, const char *heir, uint64_t name_ttl, cp_rdb_cb done)
{
	update(op, rec, ps, read_rev, 1, 0, heir, name_ttl, done);
}

int cp_record_update_result(const struct cp_op *op, redisReply *r, const char *err,
			    struct cp_err *e)
{
	if (err || r->type != REDIS_REPLY_INTEGER)
		return cp_err_redis(e, r, err);
	if (r->integer == -1 || r->integer == -2)
		return cp_err_set(e, -ENOENT, 404, "not_found", "no session %s", op->id);
	if (r->integer == -3 || r->integer == -4)
		return cp_err_set(e, -EAGAIN, 409, "conflict",
				  "session %s changed meanwhile; retry", op->id);
	return 0;
}

int cp_record_decode(const redisReply *r, struct pr_session *ps)
{
	if (r->type == REDIS_REPLY_NIL)
		return -ENOENT;
	if (r->type != REDIS_REPLY_STRING)
		return -EBADMSG;
	return pr_session_decode(r->str, r->len, ps) < 0 ? -EBADMSG : 0;
}

void cp_record_keep(struct cp_op *op, struct cp_record *rec, redisReply *r, const char *err)
{
	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
		return;
	}
	rec->buf.len = 0;
	rec->nil = r->type != REDIS_REPLY_STRING;
	if (sl_buf_append(&rec->buf, rec->nil ? "" : r->str, rec->nil ? 0 : r->len) < 0) {
		op->step_failed = 1;
		snprintf(op->why, sizeof(op->why), "out of memory");
	}
}

int cp_record_kept(const struct cp_op *op, const struct cp_record *rec, struct pr_session *ps,
		   int expired_ok, struct cp_err *e)
{
	if (op->step_failed)
		return cp_err_step(e, op, "session store");
	if (rec->nil)
		return cp_err_set(e, -ENOENT, 404, "not_found", "no session %s", op->id);
	if (pr_session_decode(rec->buf.p, rec->buf.len, ps) < 0)
		return cp_err_set(e, -EBADMSG, 500, "corrupt_record",
				  "session %s has an unreadable record", op->id);
	if (!cp_can_see(op, ps) || ps->status == PR_SS_DELETED)
		return cp_err_set(e, -ENOENT, 404, "not_found", "no session %s", op->id);
	if (!expired_ok && (ps->status == PR_SS_EXPIRED || op->now >= ps->expires))
		return cp_err_set(e, -ETIME, 410, "session_expired", "session %s expired", op->id);
	return 0;
}
