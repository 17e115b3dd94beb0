/*
 * dp_acl.h: client address lists of a session (allow and deny, CIDR).
 */
#ifndef DP_ACL_H
#define DP_ACL_H

#include "pr_state.h"

#include <stdint.h>

/* Client addresses a session allows and refuses (CIDR blocks). Ownership:
 * the tunnel's, freed with it. */
#define DP_ACL_MAX 16
struct dp_acl {
	uint8_t nallow, ndeny;
	struct pr_cidr allow[DP_ACL_MAX], deny[DP_ACL_MAX];
};

/* Parse the record's comma-joined lists into a new acl; NULL when both are
 * empty (or on ENOMEM, which the caller logs). */
struct dp_acl *dp_acl_parse(const char *allow, const char *deny);
/* 1 when the client address ip (text) may pass: not refused, and allowed
 * when there is an allow list. */
int dp_acl_ok(const struct dp_acl *acl, const char *ip, int v6);
/* Free an acl from dp_acl_parse (NULL is fine). */
void dp_acl_free(struct dp_acl *acl);

#endif
