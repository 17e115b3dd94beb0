/*
 * dp_aead.c: AES-GCM by OpenSSL's libcrypto (see dp_aead.h). OpenSSL's
 * headers only: this file never sees wolfSSL's.
 */
#include "dp_aead.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* A thread's cipher contexts: direct-mapped by key object, two per TLS
 * connection (one each way). A miss costs a key setup (some 200 ns), a hit
 * an IV reset; a 16 KiB record is some 3 us of AES-GCM either way. */
#define CACHE_SLOTS 128

/* Ownership: an element of the thread's cache; ctx freed by
 * dp_aead_thread_done, key wiped there. */
struct slot {
	const void *owner;
	int enc;
	uint32_t key_len, iv_len;
	uint8_t key[32];
	EVP_CIPHER_CTX *ctx;
};

static __thread struct slot *cache;

/* Fetched once by dp_aead_probe (before any worker thread), read after:
 * an implicit fetch on every key setup would take a provider lock. */
static EVP_CIPHER *gcm[3]; /* AES-128, -192, -256 */

static EVP_CIPHER *cipher_of(uint32_t key_len)
{
	return key_len == 16 ? gcm[0] : key_len == 24 ? gcm[1] : key_len == 32 ? gcm[2] : NULL;
}

static struct slot *slot_of(const void *owner, int enc)
{
	uint64_t h = ((uint64_t)(uintptr_t)owner ^ (uint64_t)enc) * 0x9E3779B97F4A7C15ull;

	return &cache[h >> 57]; /* the top 7 bits: CACHE_SLOTS */
}

/* The context for op, keyed and with op's IV set; NULL on failure. */
static EVP_CIPHER_CTX *ctx_for(const struct dp_aead_op *op)
{
	EVP_CIPHER *c = cipher_of(op->key_len);
	struct slot *s;

	if (cache == NULL && (cache = calloc(CACHE_SLOTS, sizeof(*cache))) == NULL)
		return NULL;
	s = slot_of(op->owner, op->enc);
	if (s->ctx && s->owner == op->owner && s->enc == op->enc && s->key_len == op->key_len &&
	    s->iv_len == op->iv_len && memcmp(s->key, op->key, op->key_len) == 0)
		return EVP_CipherInit_ex(s->ctx, NULL, NULL, NULL, op->iv, op->enc) == 1 ? s->ctx
											 : NULL;
	if (s->ctx == NULL && (s->ctx = EVP_CIPHER_CTX_new()) == NULL)
		return NULL;
	s->owner = NULL; /* until keyed */
	if (EVP_CipherInit_ex(s->ctx, c, NULL, NULL, NULL, op->enc) != 1 ||
	    EVP_CIPHER_CTX_ctrl(s->ctx, EVP_CTRL_GCM_SET_IVLEN, (int)op->iv_len, NULL) != 1 ||
	    EVP_CipherInit_ex(s->ctx, NULL, NULL, op->key, op->iv, op->enc) != 1)
		return NULL;
	s->owner = op->owner;
	s->enc = op->enc;
	s->key_len = op->key_len;
	s->iv_len = op->iv_len;
	memcpy(s->key, op->key, op->key_len);
	return s->ctx;
}

int dp_aead_gcm(const struct dp_aead_op *op)
{
	EVP_CIPHER_CTX *ctx;
	int n = 0, fin = 0;

	if (cipher_of(op->key_len) == NULL || op->iv_len == 0 || op->iv_len > 64 ||
	    op->len > INT_MAX || op->aad_len > INT_MAX || op->tag_len == 0 || op->tag_len > 16)
		return -EINVAL;
	if ((ctx = ctx_for(op)) == NULL)
		return -ENOMEM;
	if (op->aad_len && EVP_CipherUpdate(ctx, NULL, &n, op->aad, (int)op->aad_len) != 1)
		return -EINVAL;
	if (op->len && EVP_CipherUpdate(ctx, op->out, &n, op->in, (int)op->len) != 1)
		return -EINVAL;
	if (!op->enc) {
		if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, (int)op->tag_len,
					(void *)op->tag) != 1)
			return -EINVAL;
		return EVP_CipherFinal_ex(ctx, op->out + n, &fin) == 1 ? 0 : -EBADMSG;
	}
	if (EVP_CipherFinal_ex(ctx, op->out + n, &fin) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, (int)op->tag_len, op->tag) != 1)
		return -EINVAL;
	return 0;
}

void dp_aead_thread_done(void)
{
	if (cache == NULL)
		return;
	for (size_t i = 0; i < CACHE_SLOTS; i++) {
		EVP_CIPHER_CTX_free(cache[i].ctx);
		OPENSSL_cleanse(cache[i].key, sizeof(cache[i].key));
	}
	free(cache);
	cache = NULL;
}

/*
 * The GCM specification's test case 4 (AES-128, 60 bytes, 20 of AAD): sealed
 * to the published ciphertext and tag, opened back, and a flipped tag bit
 * refused. 0, or -EPROTO.
 */
static int known_answer(void)
{
	static const uint8_t key[16] = {0xfe, 0xff, 0xe9, 0x92, 0x86, 0x65, 0x73, 0x1c,
					0x6d, 0x6a, 0x8f, 0x94, 0x67, 0x30, 0x83, 0x08};
	static const uint8_t iv[12] = {0xca, 0xfe, 0xba, 0xbe, 0xfa, 0xce,
				       0xdb, 0xad, 0xde, 0xca, 0xf8, 0x88};
	static const uint8_t aad[20] = {0xfe, 0xed, 0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed,
					0xfa, 0xce, 0xde, 0xad, 0xbe, 0xef, 0xab, 0xad, 0xda, 0xd2};
	static const uint8_t pt[60] = {0xd9, 0x31, 0x32, 0x25, 0xf8, 0x84, 0x06, 0xe5, 0xa5, 0x59,
				       0x09, 0xc5, 0xaf, 0xf5, 0x26, 0x9a, 0x86, 0xa7, 0xa9, 0x53,
				       0x15, 0x34, 0xf7, 0xda, 0x2e, 0x4c, 0x30, 0x3d, 0x8a, 0x31,
				       0x8a, 0x72, 0x1c, 0x3c, 0x0c, 0x95, 0x95, 0x68, 0x09, 0x53,
				       0x2f, 0xcf, 0x0e, 0x24, 0x49, 0xa6, 0xb5, 0x25, 0xb1, 0x6a,
				       0xed, 0xf5, 0xaa, 0x0d, 0xe6, 0x57, 0xba, 0x63, 0x7b, 0x39};
	static const uint8_t ct_head[8] = {0x42, 0x83, 0x1e, 0xc2, 0x21, 0x77, 0x74, 0x24};
	static const uint8_t want_tag[16] = {0x5b, 0xc9, 0x4f, 0xbc, 0x32, 0x21, 0xa5, 0xdb,
					     0x94, 0xfa, 0xe9, 0x5a, 0xe7, 0x12, 0x1a, 0x47};
	uint8_t ct[60], back[60], tag[16];
	struct dp_aead_op op = {&op, key, 16, 1, ct, pt, 60, iv, 12, tag, 16, aad, 20};
	int ok;

	ok = dp_aead_gcm(&op) == 0 && memcmp(ct, ct_head, sizeof(ct_head)) == 0 &&
	     memcmp(tag, want_tag, 16) == 0;
	op = (struct dp_aead_op){&tag, key, 16, 0, back, ct, 60, iv, 12, tag, 16, aad, 20};
	ok = ok && dp_aead_gcm(&op) == 0 && memcmp(back, pt, 60) == 0;
	tag[0] ^= 1;
	ok = ok && dp_aead_gcm(&op) == -EBADMSG;
	dp_aead_thread_done();
	return ok ? 0 : -EPROTO;
}

int dp_aead_probe(char *desc, size_t cap)
{
	static const char *const names[3] = {"AES-128-GCM", "AES-192-GCM", "AES-256-GCM"};

	__builtin_cpu_init();
	/* The fault hook (docs/testing.md): a CPU without AES-NI, for the
	 * fallback's tests on a machine that has it. */
	if (!__builtin_cpu_supports("aes") || !__builtin_cpu_supports("pclmul") ||
	    getenv("SLUICE_FAULT_NO_AESNI")) {
		snprintf(desc, cap, "this CPU has no AES-NI and PCLMULQDQ%s",
			 getenv("SLUICE_FAULT_NO_AESNI") ? " (SLUICE_FAULT_NO_AESNI)" : "");
		return 0;
	}
	/* AES-GCM from the default provider is all we take, checked below by
	 * its known answer: the system's openssl.cnf (engines, other
	 * providers) has nothing for us, and not reading it keeps 0.6 MiB of
	 * libcrypto out of the agent's RSS (bench/RESULTS.md, issue 17). */
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
	for (int i = 0; i < 3; i++)
		if (gcm[i] == NULL && (gcm[i] = EVP_CIPHER_fetch(NULL, names[i], NULL)) == NULL) {
			snprintf(desc, cap, "OpenSSL's libcrypto has no %s", names[i]);
			return 0;
		}
	if (known_answer() < 0) {
		snprintf(desc, cap, "OpenSSL's AES-GCM failed its known-answer test");
		return 0;
	}
	snprintf(desc, cap, "%s AES-GCM (AES-NI, PCLMULQDQ%s%s)", OpenSSL_version(OPENSSL_VERSION),
		 __builtin_cpu_supports("avx2") ? ", AVX2" : "",
		 __builtin_cpu_supports("vaes") ? ", VAES" : "");
	return 1;
}
