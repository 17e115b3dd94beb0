/*
 * cp_record.h: a session's record in Redis, the layer every route that
 * changes sessions writes through (tunnels, shares, limits, domains). The
 * layout (docs/protocol.md):
 *
 *   sl:sess:<sid>     the session's record, msgpack (pr_session)
 *   sl:sessions       zset sid by creation time (listing)
 *   sl:active         zset sid by expiry (capacity)
 *   sl:name:<name>    sid holding a subdomain, expiring with the session
 *   sl:domsess:<dom>  set of the sessions naming a custom domain
 *   sl:rev            the global revision counter records carry
 *   sl:events         stream of records (field m): every change, for relays
 */
#ifndef CP_RECORD_H
#define CP_RECORD_H

#include "http/cp_op.h"

#define CP_RETAIN_S	 86400 /* a record outlives its session by this, for 410s */
#define CP_EVENTS_MAXLEN "100000"

struct pr_session;

/* 1 when op's key may see ps (its own, or an admin). */
int cp_can_see(const struct cp_op *op, const struct pr_session *ps);

/* Encode ps into op->blob. 0, or a negative errno. */
int cp_encode_record(struct cp_op *op, const struct pr_session *ps);
/* A new session: MULTI, SET record (op->blob), the indexes, XADD, EXEC;
 * the EXEC reply goes to done. */
void cp_create_record(struct cp_op *op, const struct pr_session *ps, cp_rdb_cb done);
/* An existing record changed (deleting: a tombstone), written only if it is
 * still at read_rev and not deleted; free_name: release the session's name
 * if it still holds it. Check the reply with cp_update_result. */
void cp_update_record(struct cp_op *op, const struct pr_session *ps, uint64_t read_rev,
		      int deleting, int free_name, cp_rdb_cb done);
/* The reply of cp_update_record: 0 when written, else an answer sent. */
int cp_update_result(struct cp_op *op, struct redisReply *r, const char *err);

/* Decode a GET reply into ps: 0, -ENOENT (no record), -EBADMSG. */
int cp_record_of(struct redisReply *r, struct pr_session *ps);
/* The first reply of a pipeline, GET sl:sess:<sid>: copied into op->blob
 * (replies are freed after their callback) until the last reply is in. */
void cp_keep_record(struct cp_op *op, struct redisReply *r, const char *err);
/* The record of op->id into *ps from the kept GET reply, or an error sent
 * (404 for none or another key's, 410 for an expired one unless expired_ok). */
int cp_kept_record(struct cp_op *op, struct pr_session *ps, int expired_ok);

#endif
