/*
 * cp_limits.h: rate limits in the control plane: a session's limits fixed
 * at creation, the session-creation check, the limits routes (cp_limits.c,
 * docs/limits.md).
 */
#ifndef CP_LIMITS_H
#define CP_LIMITS_H

#include "http/cp_op.h"

/*
 * A session's creation checked against its key's limits. Ownership: a
 * member of the creating route's op, whose ps and asked it points to; it
 * owns nothing.
 */
struct cp_limits_check {
	struct cp_op *op;
	struct pr_session *ps;	       /* given its limits */
	const struct cp_limits *asked; /* the request's own */
	int anonymous;		       /* a localtunnel client: counted by address */
	struct cp_limits eff;	       /* the key's, over the server's defaults */
	void (*next)(struct cp_op *op);
};

/* Before a session is created: fill ps's limits (defaults, key, asked)
 * and count the creation against the key's sessions limit (or, anonymous,
 * the client address's); then next(op), or an answer (403 above the key's
 * ceiling, 429 over the sessions limit, 503 without Redis). */
void cp_limits_begin(struct cp_limits_check *c, struct cp_op *op, struct pr_session *ps,
		     const struct cp_limits *asked, int anonymous, void (*next)(struct cp_op *op));

/* A session's limits as the API shows them. */
json_t *cp_limits_session_json(const struct pr_session *ps);

/* GET|PUT /api/v1/tunnels/{id}/limits (key 0) or /api/v1/keys/{id}/limits
 * (key 1); id is the session or key id alone. */
int cp_limits_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len, int key);

#endif
