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

/* The session secret of development mode (--dev), known to everyone: the
 * control plane and the relay refuse it outside development mode. */
#define PR_DEV_SECRET "sluice-development-secret-not-for-production"

/* Ownership: a value. */
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

/*
 * Share links: "s1.<session id>.<share id>.<expires>.<mac>", the same shape
 * and MAC as agent tokens, with a share id (8..32 letters and digits) in
 * the epoch's place. A relay lets the holder past a protected URL until the
 * expiry, unless the session's record lists the share id as revoked.
 */
int pr_share_sign(const uint8_t *key, size_t key_len, const char *sid, const char *share,
		  uint64_t expires, char *out, size_t cap);
/* 0 with sid (33 bytes) and share (33 bytes) filled; errors as pr_token_verify. */
int pr_share_verify(const uint8_t *key, size_t key_len, const char *tok, size_t len, uint64_t now,
		    char *sid, char *share, uint64_t *expires);

/* HMAC-SHA256 of msg[0..len) as 64 lowercase hex digits into hex (65
 * bytes). 0, or -EINVAL / -ENOMEM. */
int pr_hmac_hex(const uint8_t *key, size_t key_len, const char *msg, size_t len, char *hex);

/* A relay-to-relay link's proof (PR_LINK's token): the HMAC-SHA256 of the
 * session secret every relay shares over "link", the time (unix s, PR_LINK's
 * epoch), the client address and the https flag, as 64 hex characters.
 * pr_link_sign writes hex[65]; pr_link_verify returns 0, -ETIME (more than
 * PR_LINK_SKEW s away from now) or -EACCES. */
#define PR_LINK_SKEW 60
int pr_link_sign(const uint8_t *key, size_t key_len, uint64_t at, const char *client, int https,
		 char *hex);
int pr_link_verify(const uint8_t *key, size_t key_len, uint64_t at, const char *client, int https,
		   const char *hex, uint64_t now);

/* The verifier of a protected URL's credentials: HMAC-SHA256 under the
 * session secret of "url-auth\0<sid>\0<user>\0<secret>" (user is "" for a
 * bearer token) as 64 hex digits into hex. The control plane stores it in
 * the session's record; a relay recomputes it from what a browser sends, so
 * the secret itself is never stored. 0, or -EINVAL / -ENOSPC. */
int pr_url_auth_mac(const uint8_t *key, size_t key_len, const char *sid, const char *user,
		    const char *secret, char *hex);

/* SHA-256 of msg[0..len) as 64 hex digits into hex (65 bytes): how API keys
 * are stored (they are random, so no salt or stretching is needed). */
int pr_sha256_hex(const char *msg, size_t len, char *hex);

/* n characters from [a-z0-9], uniformly, then a NUL (out holds n + 1).
 * 0, or -EIO when the kernel's random source fails. */
int pr_random_alnum(char *out, size_t n);

#endif
