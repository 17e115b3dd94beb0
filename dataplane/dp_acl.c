/*
 * dp_acl.c: the client addresses a session allows and refuses (see
 * dp_acl.h), as CIDR blocks parsed once when the tunnel opens and matched
 * against each new client.
 */
#include "dp_acl.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

static uint8_t parse_list(const char *s, struct pr_cidr *out)
{
	uint8_t n = 0;

	/* Bounded by the string and DP_ACL_MAX. */
	while (*s && n < DP_ACL_MAX) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);

		if (pr_cidr_parse(s, len, &out[n]) == 0)
			n++;
		s += len + (comma ? 1 : 0);
	}
	return n;
}

struct dp_acl *dp_acl_parse(const char *allow, const char *deny)
{
	struct dp_acl *a;

	if (!allow[0] && !deny[0])
		return NULL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return NULL;
	a->nallow = parse_list(allow, a->allow);
	a->ndeny = parse_list(deny, a->deny);
	return a;
}

static int cidr_match(const struct pr_cidr *c, const uint8_t *addr, int v6)
{
	uint8_t full = c->bits / 8, rest = c->bits % 8;

	if (c->v6 != v6 || memcmp(c->addr, addr, full) != 0)
		return 0;
	return rest == 0 || ((c->addr[full] ^ addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

int dp_acl_ok(const struct dp_acl *acl, const char *ip, int v6)
{
	uint8_t addr[16];
	int allowed;

	if (acl == NULL)
		return 1;
	/* A v4-mapped v6 client (::ffff:a.b.c.d) is matched as IPv4. */
	if (v6 && strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.') &&
	    inet_pton(AF_INET, ip + 7, addr) == 1)
		v6 = 0;
	else if (inet_pton(v6 ? AF_INET6 : AF_INET, ip, addr) != 1)
		return 0;
	for (uint8_t i = 0; i < acl->ndeny; i++)
		if (cidr_match(&acl->deny[i], addr, v6))
			return 0;
	allowed = acl->nallow == 0;
	for (uint8_t i = 0; i < acl->nallow && !allowed; i++)
		allowed = cidr_match(&acl->allow[i], addr, v6);
	return allowed;
}

void dp_acl_free(struct dp_acl *acl)
{
	free(acl);
}
