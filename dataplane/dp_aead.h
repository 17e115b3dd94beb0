/*
 * dp_aead.h: AES-GCM by OpenSSL's libcrypto, for the TLS records wolfSSL
 * hands over through its crypto callback (dp_tls_accel.c). Debian's wolfSSL
 * is built without AES-NI code and seals every record in portable C; the
 * same CPU runs libcrypto's AES-NI/PCLMULQDQ (and VAES) code an order of
 * magnitude faster. This file includes OpenSSL's headers only: wolfSSL's
 * OpenSSL-compatible names must never meet them in one translation unit.
 *
 * Each thread keeps its own cipher contexts (a small cache keyed by the
 * wolfSSL key object and the key itself), so a record costs no key setup.
 */
#ifndef DP_AEAD_H
#define DP_AEAD_H

#include <stddef.h>
#include <stdint.h>

/*
 * 1 when libcrypto's AES-GCM is accelerated on this CPU (AES-NI and
 * PCLMULQDQ) and passes a known-answer test, with what serves in desc
 * ("OpenSSL 3.0.19 AES-GCM (AES-NI, PCLMULQDQ, AVX2)"); 0 with the reason
 * in desc otherwise.
 */
int dp_aead_probe(char *desc, size_t cap);

/* One AES-GCM operation (see dp_aead_gcm). Ownership: the caller's, for the
 * call; every pointer borrowed. */
struct dp_aead_op {
	const void *owner; /* the key object this key belongs to: the cache's index */
	const uint8_t *key;
	uint32_t key_len; /* 16, 24 or 32 */
	int enc;	  /* 1 seal, 0 open */
	uint8_t *out;
	const uint8_t *in;
	uint32_t len;
	const uint8_t *iv;
	uint32_t iv_len;
	uint8_t *tag; /* written when sealing, checked when opening */
	uint32_t tag_len;
	const uint8_t *aad;
	uint32_t aad_len;
};

/* Seal or open op: 0, -EBADMSG (the tag does not match), -EINVAL or -ENOMEM. */
int dp_aead_gcm(const struct dp_aead_op *op);

/* Free this thread's contexts (before it exits; they come back on use). */
void dp_aead_thread_done(void);

#endif
