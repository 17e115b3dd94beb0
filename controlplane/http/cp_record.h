/*
 * cp_record.h: a session's record in Redis, the layer every route that
 * changes sessions writes through (tunnels, shares, limits, domains). The
 * layout (docs/protocol.md):
 *
 *   sl:sess:<sid>     the session's record, msgpack (pr_session)
 *   sl:sessions       zset sid by creation time (listing)
 *   sl:active         zset sid by expiry (capacity)
 *   sl:name:<name>    sid holding a subdomain, expiring with the session
 *   sl:resv:<name>    id of the key that reserved a name (api/cp_names.c)
 *   sl:domsess:<dom>  set of the sessions naming a custom domain
 *   sl:rev            the global revision counter records carry
 *   sl:events         stream of records (field m): every change, for relays
 */
#ifndef CP_RECORD_H
#define CP_RECORD_H

#include "http/cp_op.h"
#include "sl_buf.h"

#define CP_RETAIN_S	 86400 /* a record outlives its session by this, for 410s */
#define CP_EVENTS_MAXLEN "100000"

struct pr_session;

/*
 * A session's record as the op that writes or reads it holds it: encoded
 * (to write), or a copy of one read (replies are freed after their
 * callback; the copy lasts until the pipeline's last reply). Ownership: a
 * member of a route's op; buf is freed by cp_record_free (the op's dispose).
 */
struct cp_record {
	struct sl_buf buf;
	int nil; /* the GET found none */
};

/* 1 when op's key may see ps (its own, or an admin). */
int cp_can_see(const struct cp_op *op, const struct pr_session *ps);

/* Encode ps into rec. 0, or a negative errno. */
int cp_record_encode(struct cp_record *rec, const struct pr_session *ps);
void cp_record_free(struct cp_record *rec);

/* A new session: MULTI, SET the record (rec, encoded), the indexes, XADD,
 * EXEC; the EXEC reply goes to done (ud: op). */
void cp_record_create(struct cp_op *op, const struct cp_record *rec, const struct pr_session *ps,
		      cp_rdb_cb done);
/* An existing record changed to rec (deleting: a tombstone), written only
 * if it is still at read_rev and not deleted; free_name: release the
 * session's name if it still holds it. Check the reply with
 * cp_record_update_result. */
void cp_record_update(struct cp_op *op, const struct cp_record *rec, const struct pr_session *ps,
		      uint64_t read_rev, int deleting, int free_name, cp_rdb_cb done);
/* The takeover of ps's name: ps, still at read_rev and still holding its
 * name, is replaced by rec (its tombstone: deleted, replaced_by set) and the
 * name goes to session heir for name_ttl seconds, in one script. Check the
 * reply with cp_record_update_result (-EAGAIN also when the name moved). */
void cp_record_hand_over(struct cp_op *op, const struct cp_record *rec, const struct pr_session *ps,
			 uint64_t read_rev, const char *heir, uint64_t name_ttl, cp_rdb_cb done);
/* The reply of cp_record_update or cp_record_hand_over: 0 when written, else a negative errno
 * (-ENOENT gone or deleted, -EAGAIN changed meanwhile, or Redis's) with *e
 * to answer. */
int cp_record_update_result(const struct cp_op *op, struct redisReply *r, const char *err,
			    struct cp_err *e);

/* Decode a GET reply into ps: 0, -ENOENT (no record), -EBADMSG. */
int cp_record_decode(const struct redisReply *r, struct pr_session *ps);
/* The first reply of a pipeline, GET sl:sess:<sid>, kept in rec (a failure
 * is the pipeline's, op->why). */
void cp_record_keep(struct cp_op *op, struct cp_record *rec, struct redisReply *r, const char *err);
/* The record of op->id into *ps from what cp_record_keep kept: 0, or a
 * negative errno with *e to answer (-ENOENT, a 404, for none or another
 * key's; -EBADMSG unreadable; -ETIME, a 410, for an expired one unless
 * expired_ok; or the pipeline's Redis failure). */
int cp_record_kept(const struct cp_op *op, const struct cp_record *rec, struct pr_session *ps,
		   int expired_ok, struct cp_err *e);

#endif
