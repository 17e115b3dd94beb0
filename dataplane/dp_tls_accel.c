/*
 * dp_tls_accel.c: wolfSSL's crypto callback device, handing AES-GCM records
 * to dp_aead.c (see dp_tls_accel.h). wolfSSL's headers only.
 */
#include "dp_tls_accel.h"
#include "dp_aead.h"
#include "sl_log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/cryptocb.h>
#include <wolfssl/wolfcrypt/error-crypt.h>

#define DEVID 0x51c0 /* ours: any id but INVALID_DEVID */

/* TLS 1.3 suites, then 1.2's for older peers: the accelerated one first. */
#define AES_FIRST                                                                                  \
	"TLS13-AES128-GCM-SHA256:TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES256-GCM-SHA384:"          \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define CHACHA_FIRST                                                                               \
	"TLS13-CHACHA20-POLY1305-SHA256:TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"          \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                               \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"

static int accel_on; /* set once by dp_tls_accel_init, before any thread */
static __thread struct dp_tls_accel_counts counts;

/* wolfSSL keeps the raw key in aes->devKey when a device is set (the key
 * schedule it also builds goes unused). */
static int seal_or_open(wc_CryptoInfo *info)
{
	int enc = info->cipher.enc;
	Aes *aes = enc ? info->cipher.aesgcm_enc.aes : info->cipher.aesgcm_dec.aes;
	struct dp_aead_op op = {
		.owner = aes,
		.key = (const uint8_t *)aes->devKey,
		.key_len = (uint32_t)aes->keylen,
		.enc = enc,
	};
	int e;

	if (enc) {
		op.out = info->cipher.aesgcm_enc.out;
		op.in = info->cipher.aesgcm_enc.in;
		op.len = info->cipher.aesgcm_enc.sz;
		op.iv = info->cipher.aesgcm_enc.iv;
		op.iv_len = info->cipher.aesgcm_enc.ivSz;
		op.tag = info->cipher.aesgcm_enc.authTag;
		op.tag_len = info->cipher.aesgcm_enc.authTagSz;
		op.aad = info->cipher.aesgcm_enc.authIn;
		op.aad_len = info->cipher.aesgcm_enc.authInSz;
	} else {
		op.out = info->cipher.aesgcm_dec.out;
		op.in = info->cipher.aesgcm_dec.in;
		op.len = info->cipher.aesgcm_dec.sz;
		op.iv = info->cipher.aesgcm_dec.iv;
		op.iv_len = info->cipher.aesgcm_dec.ivSz;
		op.tag = (uint8_t *)info->cipher.aesgcm_dec.authTag; /* only read when opening */
		op.tag_len = info->cipher.aesgcm_dec.authTagSz;
		op.aad = info->cipher.aesgcm_dec.authIn;
		op.aad_len = info->cipher.aesgcm_dec.authInSz;
	}
	e = dp_aead_gcm(&op);
	if (e == -EBADMSG)
		return AES_GCM_AUTH_E;
	if (e < 0) {
		/* Nothing written yet (every failure but the tag's comes before
		 * the first byte): wolfSSL's own code does this record. */
		counts.fallbacks++;
		return CRYPTOCB_UNAVAILABLE;
	}
	counts.records++;
	counts.bytes += op.len;
	return 0;
}

static int on_crypto(int devId, wc_CryptoInfo *info, void *ctx)
{
	(void)devId;
	(void)ctx;
	if (info->algo_type != WC_ALGO_TYPE_CIPHER || info->cipher.type != WC_CIPHER_AES_GCM)
		return CRYPTOCB_UNAVAILABLE; /* the rest stays wolfSSL's */
	return seal_or_open(info);
}

int dp_tls_accel_init(const char *mode)
{
	char desc[160];
	int want = strcmp(mode, "wolfssl") != 0, can = 0;

	if (getenv("SLUICE_FAULT_NO_AESNI"))
		sl_warn("SLUICE_FAULT_NO_AESNI=%s: a test hook is on: this CPU is taken to have no "
			"AES-NI",
			getenv("SLUICE_FAULT_NO_AESNI"));
	if (want)
		can = dp_aead_probe(desc, sizeof(desc));
	if (can && wc_CryptoCb_RegisterDevice(DEVID, on_crypto, NULL) != 0) {
		snprintf(desc, sizeof(desc), "wolfSSL refused the crypto callback device");
		can = 0;
	}
	accel_on = can;
	if (can) {
		sl_info("tls: AES-GCM records by %s through wolfSSL's crypto callback; "
			"AES-128-GCM preferred",
			desc);
		return 0;
	}
	if (strcmp(mode, "openssl") == 0) {
		sl_error("tls: --tls-crypto openssl cannot serve: %s", desc);
		return -ENOTSUP;
	}
	sl_info("tls: records by wolfSSL's portable C (%s); ChaCha20-Poly1305 preferred",
		want ? desc : "--tls-crypto wolfssl");
	return 0;
}

int dp_tls_accel_on(void)
{
	return accel_on;
}

int dp_tls_accel_devid(void)
{
	return accel_on ? DEVID : INVALID_DEVID;
}

const char *dp_tls_accel_ciphers(void)
{
	return accel_on ? AES_FIRST : CHACHA_FIRST;
}

struct dp_tls_accel_counts dp_tls_accel_counts(void)
{
	return counts;
}
