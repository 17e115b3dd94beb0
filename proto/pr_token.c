/*
 * pr_token.c: signed agent tokens (see pr_token.h). wolfCrypt's HMAC, in a
 * translation unit of its own: the control plane links it without ever
 * seeing a wolfSSL header next to h2o's OpenSSL ones.
 */
#include "pr_token.h"
#include "pr_msg.h"
#include "sl_bytes.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <wolfssl/wolfcrypt/sha256.h>

#define MAC_HEX 64

static void to_hex(const uint8_t *d, size_t n, char *hex)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[2 * n] = '\0';
}

int pr_hmac_hex(const uint8_t *key, size_t key_len, const char *msg, size_t len, char *hex)
{
	uint8_t mac[WC_SHA256_DIGEST_SIZE];
	Hmac h;
	int err;

	if (wc_HmacInit(&h, NULL, INVALID_DEVID) != 0)
		return -ENOMEM;
	err = wc_HmacSetKey(&h, WC_SHA256, key, (word32)key_len) != 0 ||
	      wc_HmacUpdate(&h, (const byte *)msg, (word32)len) != 0 || wc_HmacFinal(&h, mac) != 0;
	wc_HmacFree(&h);
	if (err)
		return -EINVAL;
	to_hex(mac, sizeof(mac), hex);
	return 0;
}

int pr_url_auth_mac(const uint8_t *key, size_t key_len, const char *sid, const char *user,
		    const char *secret, char *hex)
{
	char msg[512];
	size_t ls = strlen(sid), lu = strlen(user), lp = strlen(secret), n;
	int err;

	n = 9 + ls + 1 + lu + 1 + lp;
	if (n > sizeof(msg))
		return -ENOSPC;
	memcpy(msg, "url-auth", 9); /* with its NUL */
	memcpy(msg + 9, sid, ls + 1);
	memcpy(msg + 9 + ls + 1, user, lu + 1);
	memcpy(msg + 9 + ls + 1 + lu + 1, secret, lp);
	err = pr_hmac_hex(key, key_len, msg, n, hex);
	memset(msg, 0, sizeof(msg));
	return err;
}

int pr_sha256_hex(const char *msg, size_t len, char *hex)
{
	uint8_t d[WC_SHA256_DIGEST_SIZE];

	if (wc_Sha256Hash((const byte *)msg, (word32)len, d) != 0)
		return -EINVAL;
	to_hex(d, sizeof(d), hex);
	return 0;
}

int pr_random_alnum(char *out, size_t n)
{
	static const char set[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	uint8_t rnd[64];

	/* 252 = 7 * 36: bytes at or above it are drawn again, so every
	 * character is equally likely. Bounded: a fresh batch per round. */
	for (size_t i = 0; i < n;) {
		if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
			return -EIO;
		for (size_t j = 0; j < sizeof(rnd) && i < n; j++)
			if (rnd[j] < 252)
				out[i++] = set[rnd[j] % 36];
	}
	out[n] = '\0';
	return 0;
}

/* "<prefix>.<sid>.<middle>.<expires>" signed: the whole token into out. */
static int sign_parts(const uint8_t *key, size_t key_len, const char *prefix, const char *sid,
		      const char *middle, uint64_t expires, char *out, size_t cap)
{
	char body[PR_SIGNED_MAX], hex[MAC_HEX + 1];
	int n, err;

	if (key_len < PR_TOKEN_KEY_MIN || !pr_session_id_valid(sid, strlen(sid)))
		return -EINVAL;
	n = snprintf(body, sizeof(body), "%s.%s.%s.%llu", prefix, sid, middle,
		     (unsigned long long)expires);
	if (n < 0 || (size_t)n >= sizeof(body))
		return -ENOSPC;
	if ((err = pr_hmac_hex(key, key_len, body, (size_t)n, hex)) < 0)
		return err;
	if ((size_t)n + 1 + MAC_HEX + 1 > cap)
		return -ENOSPC;
	return snprintf(out, cap, "%s.%s", body, hex);
}

int pr_token_sign(const uint8_t *key, size_t key_len, const char *sid, uint64_t epoch,
		  uint64_t expires, char *out, size_t cap)
{
	char ep[24];

	snprintf(ep, sizeof(ep), "%llu", (unsigned long long)epoch);
	return sign_parts(key, key_len, "v1", sid, ep, expires, out, cap);
}

int pr_share_sign(const uint8_t *key, size_t key_len, const char *sid, const char *share,
		  uint64_t expires, char *out, size_t cap)
{
	if (!pr_session_id_valid(share, strlen(share)))
		return -EINVAL;
	return sign_parts(key, key_len, "s1", sid, share, expires, out, cap);
}

/* A decimal u64 in s[0..n) without sign, spaces or leading zeros. */
static int parse_u64(const char *s, size_t n, uint64_t *v)
{
	uint64_t x = 0;

	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || x > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -EINVAL;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	*v = x;
	return 0;
}

/* Split tok into its five parts, check prefix, sid, expiry's syntax and the
 * MAC (in constant time), then the expiry against now. */
static int verify_parts(const uint8_t *key, size_t key_len, const char *prefix, const char *tok,
			size_t len, uint64_t now, const char *part[5], size_t plen[5],
			uint64_t *expires)
{
	size_t np = 0, start = 0;
	char hex[MAC_HEX + 1];

	if (key_len < PR_TOKEN_KEY_MIN)
		return -EINVAL;
	if (len >= PR_SIGNED_MAX)
		return -EBADMSG;
	/* Five dot-separated parts; bounded by len. */
	for (size_t i = 0; i <= len; i++) {
		if (i < len && tok[i] != '.')
			continue;
		if (np == 5)
			return -EBADMSG;
		part[np] = tok + start;
		plen[np++] = i - start;
		start = i + 1;
	}
	if (np != 5 || plen[0] != 2 || memcmp(part[0], prefix, 2) != 0 ||
	    !pr_session_id_valid(part[1], plen[1]) || parse_u64(part[3], plen[3], expires) < 0 ||
	    plen[4] != MAC_HEX)
		return -EBADMSG;
	if (pr_hmac_hex(key, key_len, tok, (size_t)(part[4] - tok - 1), hex) < 0)
		return -EINVAL;
	if (!sl_ct_equal(hex, MAC_HEX, part[4], MAC_HEX))
		return -EPERM;
	if (*expires <= now)
		return -ETIME;
	return 0;
}

int pr_token_verify(const uint8_t *key, size_t key_len, const char *tok, size_t len, uint64_t now,
		    struct pr_token *out)
{
	const char *part[5];
	size_t plen[5];
	int e = verify_parts(key, key_len, "v1", tok, len, now, part, plen, &out->expires);

	if (e == -EBADMSG || e == -EINVAL)
		return e;
	/* The epoch's syntax is part of the shape: a malformed one is not a
	 * token at all, whatever the MAC says. */
	if (parse_u64(part[2], plen[2], &out->epoch) < 0)
		return -EBADMSG;
	if (e < 0)
		return e;
	memcpy(out->sid, part[1], plen[1]);
	out->sid[plen[1]] = '\0';
	return 0;
}

int pr_share_verify(const uint8_t *key, size_t key_len, const char *tok, size_t len, uint64_t now,
		    char *sid, char *share, uint64_t *expires)
{
	const char *part[5];
	size_t plen[5];
	int e = verify_parts(key, key_len, "s1", tok, len, now, part, plen, expires);

	if (e == -EBADMSG || e == -EINVAL)
		return e;
	if (!pr_session_id_valid(part[2], plen[2]))
		return -EBADMSG;
	if (e < 0)
		return e;
	memcpy(sid, part[1], plen[1]);
	sid[plen[1]] = '\0';
	memcpy(share, part[2], plen[2]);
	share[plen[2]] = '\0';
	return 0;
}

int pr_link_sign(const uint8_t *key, size_t key_len, uint64_t at, const char *client, int https,
		 char *hex)
{
	char msg[400];
	int n = snprintf(msg, sizeof(msg), "link\n%llu\n%s\n%d", (unsigned long long)at, client,
			 https ? 1 : 0);

	if (n < 0 || (size_t)n >= sizeof(msg))
		return -EINVAL;
	return pr_hmac_hex(key, key_len, msg, (size_t)n, hex);
}

int pr_link_verify(const uint8_t *key, size_t key_len, uint64_t at, const char *client, int https,
		   const char *hex, uint64_t now)
{
	char want[65];

	if (at + PR_LINK_SKEW < now || now + PR_LINK_SKEW < at)
		return -ETIME;
	if (pr_link_sign(key, key_len, at, client, https, want) < 0 || strlen(hex) != 64 ||
	    !sl_ct_equal(want, 64, hex, 64))
		return -EACCES;
	return 0;
}
