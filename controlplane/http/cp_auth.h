/*
 * cp_auth.h: authentication of API requests: the key in "Authorization:
 * Bearer KEY" or "X-API-Key: KEY" (the bootstrap admin key, or one stored
 * by http/cp_key.h), its scopes against the route's, and an audit line and
 * a 401 or 403 when it is refused.
 */
#ifndef CP_AUTH_H
#define CP_AUTH_H

#include "http/cp_op.h"

/* Authenticate op's request and require scopes `need` (CP_SCOPE_* bits;
 * admin has them all), then answer a deferred error if the route left one,
 * else run next. */
void cp_auth(struct cp_op *op, unsigned need, void (*next)(struct cp_op *op));

#endif
