/*
 * pr_token.h: agent tokens signed by the control plane and checked by any
 * relay without a round trip (issue 4): bound to a session and its epoch,
 * valid until an expiry, authenticated with HMAC-SHA256 (wolfCrypt).
 *
 *   v1.<session id>.<epoch>.<expires, unix s>.<64 hex digits of the MAC>
 *
 * The MAC covers everything before its dot. The key is the operator's
 * session secret: at least PR_TOKEN_KEY_MIN bytes, never a default.
 */
#ifndef PR_TOKEN_H
#define PR_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define PR_SIGNED_MAX	 160 /* bytes of a token at most, with its NUL */
#define PR_TOKEN_KEY_MIN 32

struct pr_token {
	char sid[33];
	uint64_t epoch;
	uint64_t expires;
};

/* Sign: the token into out (cap bytes); its length, or -EINVAL (short key,
 * bad session id) or -ENOSPC. */
int pr_token_sign(const uint8_t *key, size_t key_len, const char *sid, uint64_t epoch,
		  uint64_t expires, char *out, size_t cap);

/* Verify tok[0..len) at time now: 0 with *out filled, -EINVAL (short key),
 * -EBADMSG (not a token), -EPERM (wrong MAC: another key, or altered), or
 * -ETIME (expired). The MAC comparison takes the same time wherever the
 * bytes differ. */
int pr_token_verify(const uint8_t *key, size_t key_len, const char *tok, size_t len, uint64_t now,
		    struct pr_token *out);

#endif
