/*
 * dp_relay_access.c: who may use a tunnel once a request is routed to it:
 * a custom domain only serves its challenge until verified, the session's
 * address lists, and a protected URL's credentials (basic or bearer) or a
 * share link. The relay never holds a secret: it compares MACs the control
 * plane made with the same key.
 */
#include "dp_relay_int.h"

#include <strings.h>
#include <time.h>
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/coding.h>

#include "pr_token.h"

/* The credentials of a protected URL: the request's Authorization, hashed
 * as the control plane hashed the session's (pr_url_auth_mac), compared in
 * constant time. The secret itself is never stored anywhere. */
static int url_auth_ok(struct relay *r, const struct dp_tunnel *t, const struct dp_http_req *q)
{
	const char *key = r->cfg->session_secret;
	char cred[400], mac[65], *colon;
	word32 n = sizeof(cred) - 1;
	const struct dp_http_hdr *h = NULL;

	for (size_t i = 0; i < q->nheaders; i++)
		if (q->headers[i].name_len == 13 &&
		    strncasecmp(q->headers[i].name, "authorization", 13) == 0)
			h = &q->headers[i];
	if (h == NULL || key == NULL)
		return 0;
	if (t->auth == PR_AUTH_BASIC && h->value_len > 6 &&
	    strncasecmp(h->value, "basic ", 6) == 0) {
		if (Base64_Decode((const byte *)h->value + 6, (word32)(h->value_len - 6),
				  (byte *)cred, &n) != 0)
			return 0;
		cred[n] = '\0';
		if ((colon = strchr(cred, ':')) == NULL || strlen(cred) != n)
			return 0;
		*colon = '\0';
		if (pr_url_auth_mac((const uint8_t *)key, strlen(key), t->sid, cred, colon + 1,
				    mac) < 0)
			return 0;
	} else if (t->auth == PR_AUTH_BEARER && h->value_len > 7 &&
		   h->value_len - 7 < sizeof(cred) && strncasecmp(h->value, "bearer ", 7) == 0) {
		memcpy(cred, h->value + 7, h->value_len - 7);
		cred[h->value_len - 7] = '\0';
		if (pr_url_auth_mac((const uint8_t *)key, strlen(key), t->sid, "", cred, mac) < 0)
			return 0;
	} else
		return 0;
	memset(cred, 0, sizeof(cred));
	return dp_ct_equal(mac, t->auth_mac);
}

#define CHALLENGE_PATH "/.well-known/sluice-challenge/"

#define SHARE_PARAM "sluice_share="

#define SHARE_COOKIE "sluice_share="

/* The value of name=... in s[0..n) (a query or a Cookie header), or NULL. */
static const char *find_param(const char *s, size_t n, const char *name, char sep, size_t *len)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i + nl <= n; i++) {
		if ((i > 0 && s[i - 1] != sep && s[i - 1] != '?' && s[i - 1] != ' ') ||
		    memcmp(s + i, name, nl) != 0)
			continue;
		*len = 0;
		while (i + nl + *len < n && s[i + nl + *len] != sep && s[i + nl + *len] != ';' &&
		       s[i + nl + *len] != '#')
			(*len)++;
		return s + i + nl;
	}
	return NULL;
}

/* A share link's token for t, not revoked: 1, else 0. */
static int share_token_ok(struct relay *r, const struct dp_tunnel *t, const char *tok, size_t len)
{
	const char *key = r->cfg->session_secret;
	char sid[33], share[33];
	struct pr_session rec;
	uint64_t expires;

	if (key == NULL ||
	    pr_share_verify((const uint8_t *)key, strlen(key), tok, len, (uint64_t)time(NULL), sid,
			    share, &expires) != 0 ||
	    strcmp(sid, t->sid) != 0 || dp_state_get(&r->sh->state, sid, &rec) < 0)
		return 0;
	/* The session's record lists the revoked share ids. */
	return !pr_list_has(rec.revoked_shares, share);
}

/*
 * Share links on a protected URL. A valid ?sluice_share=TOKEN answers 302
 * to the same URL without it, with the token as a cookie; a valid cookie
 * lets the request through (p->shared). Returns -EACCES when a response
 * was queued, 0 to go on.
 */
static int share_check(struct relay *r, struct pub *p, const struct dp_tunnel *t,
		       const struct dp_http_req *q)
{
	const char *qs = memchr(q->target, '?', q->target_len), *tok;
	char extra[700], loc[512];
	size_t len, before;

	p->shared = 0;
	tok = qs ? find_param(qs, q->target_len - (size_t)(qs - q->target), SHARE_PARAM, '&', &len)
		 : NULL;
	if (tok && share_token_ok(r, t, tok, len)) {
		/* Location: the target without the parameter (and its '&'). */
		before = (size_t)(tok - strlen(SHARE_PARAM) - q->target);
		if (before > 0 && (q->target[before - 1] == '&' || q->target[before - 1] == '?'))
			before--;
		snprintf(loc, sizeof(loc), "%.*s", (int)before, q->target);
		if (tok + len < q->target + q->target_len)
			snprintf(loc + strlen(loc), sizeof(loc) - strlen(loc), "%s%.*s",
				 strchr(loc, '?') ? "&" : "?",
				 (int)(q->target + q->target_len - tok - len - 1), tok + len + 1);
		if (loc[0] == '\0')
			snprintf(loc, sizeof(loc), "/");
		snprintf(extra, sizeof(extra),
			 "Location: %s\r\nSet-Cookie: " SHARE_COOKIE "%.*s; Path=/; HttpOnly; "
			 "SameSite=Lax\r\n",
			 loc, (int)len, tok);
		dp_pub_error(r, p, E_302, extra, "shared: continue at %s\n", loc);
		return -EACCES;
	}
	for (size_t i = 0; i < q->nheaders; i++) {
		const struct dp_http_hdr *h = &q->headers[i];

		if (h->name_len == 6 && strncasecmp(h->name, "cookie", 6) == 0 &&
		    (tok = find_param(h->value, h->value_len, SHARE_COOKIE, ';', &len)) != NULL &&
		    share_token_ok(r, t, tok, len)) {
			p->shared = 1;
			return 0;
		}
	}
	return 0;
}

int dp_access_domain(struct relay *r, struct pub *p, const struct dp_route *rt,
		     const struct dp_http_req *q)
{
	if (rt->custom && !rt->verified &&
	    (q->target_len < sizeof(CHALLENGE_PATH) - 1 ||
	     memcmp(q->target, CHALLENGE_PATH, sizeof(CHALLENGE_PATH) - 1) != 0)) {
		dp_pub_error(r, p, E_403, NULL,
			     "this domain is not verified yet: only its challenge is served\n");
		return -EACCES;
	}
	return 0;
}

int dp_access_check(struct relay *r, struct pub *p, const struct dp_route *rt,
		    const struct dp_http_req *q)
{
	const struct dp_tunnel *t = rt->t;

	if (dp_access_domain(r, p, rt, q) < 0)
		return -EACCES;
	if (!dp_acl_ok(t->acl, p->ip, p->ipv6)) {
		dp_pub_error(r, p, E_403, NULL, "your address may not use this tunnel\n");
		return -EACCES;
	}
	if (t->auth == PR_AUTH_NONE)
		return 0;
	if (share_check(r, p, t, q) != 0)
		return -EACCES; /* redirected to the URL without the token */
	if (!p->shared && !url_auth_ok(r, t, q)) {
		dp_pub_error(r, p, E_401,
			     t->auth == PR_AUTH_BASIC
				     ? "WWW-Authenticate: Basic realm=\"sluice\"\r\n"
				     : "WWW-Authenticate: Bearer realm=\"sluice\"\r\n",
			     "this tunnel is protected: credentials required\n");
		return -EACCES;
	}
	return 0;
}
