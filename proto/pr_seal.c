/*
 * pr_seal.c: AES-256-GCM sealing of secrets at rest (see pr_seal.h).
 */
#include "pr_seal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/hmac.h>

#define NONCE 12
#define TAG   16
#define LABEL "sluice seal v1: node credentials"

static int derive(const uint8_t *secret, size_t secret_len, uint8_t key[32])
{
	Hmac h;
	int rc = -EINVAL;

	if (wc_HmacInit(&h, NULL, INVALID_DEVID) != 0)
		return -EINVAL;
	if (wc_HmacSetKey(&h, WC_SHA256, secret, (word32)secret_len) == 0 &&
	    wc_HmacUpdate(&h, (const byte *)LABEL, sizeof(LABEL) - 1) == 0 &&
	    wc_HmacFinal(&h, key) == 0)
		rc = 0;
	wc_HmacFree(&h);
	return rc;
}

static int seal_crypt(const uint8_t *secret, size_t secret_len, const char *aad, int enc,
		      const uint8_t *in, size_t len, uint8_t *out, uint8_t *nonce, uint8_t *tag)
{
	uint8_t key[32];
	Aes aes;
	int rc = -EINVAL;

	if (derive(secret, secret_len, key) < 0)
		return -EINVAL;
	if (wc_AesInit(&aes, NULL, INVALID_DEVID) == 0) {
		if (wc_AesGcmSetKey(&aes, key, sizeof(key)) == 0)
			rc = enc ? wc_AesGcmEncrypt(&aes, out, in, (word32)len, nonce, NONCE, tag,
						    TAG, (const byte *)aad, (word32)strlen(aad))
				 : wc_AesGcmDecrypt(&aes, out, in, (word32)len, nonce, NONCE, tag,
						    TAG, (const byte *)aad, (word32)strlen(aad));
		wc_AesFree(&aes);
	}
	memset(key, 0, sizeof(key));
	return rc == 0 ? 0 : enc ? -EINVAL : -EBADMSG;
}

static void hex_out(const uint8_t *d, size_t n, char *o)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		o[2 * i] = digits[d[i] >> 4];
		o[2 * i + 1] = digits[d[i] & 15];
	}
}

static int unhex(const char *h, size_t n, uint8_t *o)
{
	for (size_t i = 0; i < n; i++) {
		int v = 0;

		for (int k = 0; k < 2; k++) {
			char c = h[2 * i + k];
			int d = c >= '0' && c <= '9'   ? c - '0'
				: c >= 'a' && c <= 'f' ? c - 'a' + 10
						       : -1;

			if (d < 0)
				return -EBADMSG;
			v = v * 16 + d;
		}
		o[i] = (uint8_t)v;
	}
	return 0;
}

int pr_seal(const uint8_t *secret, size_t secret_len, const char *aad, const void *pt, size_t len,
	    char *out, size_t cap)
{
	size_t total = NONCE + len + TAG;
	uint8_t *buf;
	int rc;

	if (cap < PR_SEAL_TEXT_LEN(len))
		return -ENOSPC;
	buf = malloc(total);
	if (!buf)
		return -ENOMEM;
	if (getrandom(buf, NONCE, 0) != NONCE) {
		free(buf);
		return -EIO;
	}
	rc = seal_crypt(secret, secret_len, aad, 1, pt, len, buf + NONCE, buf, buf + NONCE + len);
	if (rc == 0) {
		memcpy(out, "v1.", 3);
		hex_out(buf, total, out + 3);
		out[3 + 2 * total] = '\0';
		rc = (int)(3 + 2 * total);
	}
	memset(buf, 0, total);
	free(buf);
	return rc;
}

int pr_unseal(const uint8_t *secret, size_t secret_len, const char *aad, const char *text,
	      char *out, size_t cap)
{
	size_t tl = strlen(text), total, len;
	uint8_t *buf;
	int rc;

	if (tl < 3 + 2 * (NONCE + TAG) || memcmp(text, "v1.", 3) != 0 || (tl - 3) % 2)
		return -EBADMSG;
	total = (tl - 3) / 2;
	len = total - NONCE - TAG;
	if (cap < len + 1)
		return -ENOSPC;
	buf = malloc(total);
	if (!buf)
		return -ENOMEM;
	rc = unhex(text + 3, total, buf);
	if (rc == 0)
		rc = seal_crypt(secret, secret_len, aad, 0, buf + NONCE, len, (uint8_t *)out, buf,
				buf + NONCE + len);
	if (rc == 0) {
		out[len] = '\0';
		rc = (int)len;
	} else {
		memset(out, 0, len);
	}
	memset(buf, 0, total);
	free(buf);
	return rc;
}
