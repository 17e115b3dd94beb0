/*
 * cp_limits.h: rate limits in the control plane: a session's limits fixed
 * at creation, the session-creation check, the limits routes (cp_limits.c,
 * docs/limits.md).
 */
#ifndef CP_LIMITS_H
#define CP_LIMITS_H

#include "http/cp_op.h"

/* Before a session is created: fill ps's limits (defaults, key, request)
 * and count the creation against the key's sessions limit; then next, or
 * an answer (403 above the key's ceiling, 429 over the sessions limit,
 * 503 without Redis). */
void cp_limits_begin(struct cp_op *op, struct pr_session *ps, void (*next)(struct cp_op *op));

/* A session's limits as the API shows them. */
json_t *cp_limits_session_json(const struct pr_session *ps);

/* GET|PUT /api/v1/tunnels/{id}/limits (key 0) or /api/v1/keys/{id}/limits
 * (key 1); id is the session or key id alone. */
int cp_limits_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len, int key);

#endif
