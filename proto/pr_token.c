/*
 * pr_token.c: signed agent tokens (see pr_token.h). wolfCrypt's HMAC, in a
 * translation unit of its own: the control plane links it without ever
 * seeing a wolfSSL header next to h2o's OpenSSL ones.
 */
#include "pr_token.h"
#include "pr_msg.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hmac.h>

#define MAC_HEX 64

/* HMAC-SHA256 of msg as 64 lowercase hex digits into hex (65 bytes). */
static int mac_hex(const uint8_t *key, size_t key_len, const char *msg, size_t len, char *hex)
{
	static const char digits[] = "0123456789abcdef";
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
	for (size_t i = 0; i < sizeof(mac); i++) {
		hex[2 * i] = digits[mac[i] >> 4];
		hex[2 * i + 1] = digits[mac[i] & 15];
	}
	hex[MAC_HEX] = '\0';
	return 0;
}

int pr_token_sign(const uint8_t *key, size_t key_len, const char *sid, uint64_t epoch,
		  uint64_t expires, char *out, size_t cap)
{
	char body[PR_SIGNED_MAX], hex[MAC_HEX + 1];
	int n, err;

	if (key_len < PR_TOKEN_KEY_MIN || !pr_session_id_valid(sid, strlen(sid)))
		return -EINVAL;
	n = snprintf(body, sizeof(body), "v1.%s.%llu.%llu", sid, (unsigned long long)epoch,
		     (unsigned long long)expires);
	if ((err = mac_hex(key, key_len, body, (size_t)n, hex)) < 0)
		return err;
	if ((size_t)n + 1 + MAC_HEX + 1 > cap)
		return -ENOSPC;
	return snprintf(out, cap, "%s.%s", body, hex);
}

/* A decimal u64 in s[0..n) without sign, spaces or leading zeros. */
static int parse_u64(const char *s, size_t n, uint64_t *v)
{
	uint64_t x = 0;

	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9' || x > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		x = x * 10 + (uint64_t)(s[i] - '0');
	}
	*v = x;
	return 0;
}

int pr_token_verify(const uint8_t *key, size_t key_len, const char *tok, size_t len, uint64_t now,
		    struct pr_token *out)
{
	const char *part[5];
	size_t plen[5], np = 0, start = 0;
	char hex[MAC_HEX + 1];
	unsigned char diff = 0;

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
	if (np != 5 || plen[0] != 2 || memcmp(part[0], "v1", 2) != 0 ||
	    !pr_session_id_valid(part[1], plen[1]) ||
	    parse_u64(part[2], plen[2], &out->epoch) < 0 ||
	    parse_u64(part[3], plen[3], &out->expires) < 0 || plen[4] != MAC_HEX)
		return -EBADMSG;
	if (mac_hex(key, key_len, tok, (size_t)(part[4] - tok - 1), hex) < 0)
		return -EINVAL;
	for (size_t i = 0; i < MAC_HEX; i++)
		diff |= (unsigned char)(hex[i] ^ part[4][i]);
	if (diff != 0)
		return -EPERM;
	if (out->expires <= now)
		return -ETIME;
	memcpy(out->sid, part[1], plen[1]);
	out->sid[plen[1]] = '\0';
	return 0;
}
