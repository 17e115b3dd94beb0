/*
 * dp_tls_accel.h: which code seals and opens the TLS records. wolfSSL stays
 * the TLS stack; with --tls-crypto openssl (or auto, on a CPU where it is
 * accelerated) its AES-GCM goes to OpenSSL's libcrypto (dp_aead.c) through
 * wolfSSL's crypto callback device (WOLF_CRYPTO_CB): each record's key, IV,
 * AAD and tag are handed over and libcrypto's AES-NI code does the work.
 * Everything else (handshakes, ChaCha20, hashes) stays wolfSSL's.
 *
 * Cipher preference follows: AES-128-GCM first where it is accelerated,
 * ChaCha20-Poly1305 first where it is not (in portable C it is 2.5 times
 * as fast as wolfSSL's AES-GCM).
 */
#ifndef DP_TLS_ACCEL_H
#define DP_TLS_ACCEL_H

#include <stdint.h>

/* "auto|openssl|wolfssl", for the relay's and the agent's tables. */
#define SL_OPT_TLS_CRYPTO                                                                          \
	SL_ENUM("tls-crypto", "auto", "auto|openssl|wolfssl",                                      \
		"AES-GCM of TLS records: OpenSSL's libcrypto (AES-NI) through wolfSSL's crypto "   \
		"callback, or wolfSSL's own portable C; auto: OpenSSL where the CPU accelerates "  \
		"it")

/*
 * Choose, once per process after dp_tls_global_init and before any context:
 * mode "auto", "openssl" or "wolfssl". Logs which implementation serves
 * and why. 0, or -ENOTSUP when "openssl" was asked for and cannot serve.
 */
int dp_tls_accel_init(const char *mode);

/* 1 when records go to libcrypto. */
int dp_tls_accel_on(void);
/* The device id for wolfSSL_CTX_SetDevId, or INVALID_DEVID. */
int dp_tls_accel_devid(void);
/* The TLS 1.3 and 1.2 cipher list for a new context. */
const char *dp_tls_accel_ciphers(void);

/* This thread's counters (each engine thread reads its own, without locks).
 * Ownership: a value. */
struct dp_tls_accel_counts {
	uint64_t records;   /* sealed or opened by libcrypto */
	uint64_t bytes;	    /* of their payload */
	uint64_t fallbacks; /* handed back to wolfSSL's own code (a key size or IV
			     * libcrypto refused, out of memory) */
};
struct dp_tls_accel_counts dp_tls_accel_counts(void);

#endif
