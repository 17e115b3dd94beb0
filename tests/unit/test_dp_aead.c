/*
 * test_dp_aead.c: libcrypto's AES-GCM as the TLS records get it, checked
 * against wolfSSL's own AES-GCM on the same inputs: every key size, record
 * sizes from empty to over 16 KiB, in place and not, a key object re-keyed
 * (the cache must notice), and a tampered tag, ciphertext or AAD refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/settings.h>
#include <wolfssl/wolfcrypt/aes.h>

#include "dp_aead.h"

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16);
}

/* wolfSSL's software AES-GCM: the reference. */
static void wolf_seal(const uint8_t *key, uint32_t klen, const uint8_t *in, uint32_t len,
		      const uint8_t *iv, const uint8_t *aad, uint32_t alen, uint8_t *out,
		      uint8_t *tag)
{
	Aes aes;

	assert_int_equal(wc_AesInit(&aes, NULL, INVALID_DEVID), 0);
	assert_int_equal(wc_AesGcmSetKey(&aes, key, klen), 0);
	assert_int_equal(wc_AesGcmEncrypt(&aes, out, in, len, iv, 12, tag, 16, aad, alen), 0);
	wc_AesFree(&aes);
}

static int probe_or_skip(void)
{
	char desc[160];

	if (!dp_aead_probe(desc, sizeof(desc))) {
		print_message("skipped: %s\n", desc);
		return 0;
	}
	return 1;
}

static void seals_like_wolfssl_at_every_size(void **state)
{
	static const uint32_t sizes[] = {0, 1, 15, 16, 17, 100, 1024, 16383, 16384, 16401};
	static const uint32_t klens[] = {16, 24, 32};
	uint8_t *in = malloc(16401), *ours = malloc(16401), *ref = malloc(16401);
	uint8_t key[32], iv[12], aad[13], tag[16], rtag[16];
	int owner;

	(void)state;
	if (!probe_or_skip())
		goto out;
	for (size_t k = 0; k < 3; k++)
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			uint32_t n = sizes[s];
			struct dp_aead_op op = {&owner, key, klens[k], 1,  ours, in, n,
						iv,	12,  tag,      16, aad,	 13};

			fill(key, 32, (unsigned)(k * 100 + s));
			fill(iv, 12, (unsigned)s + 7);
			fill(aad, 13, (unsigned)s + 9);
			fill(in, n, (unsigned)s + 11);
			assert_int_equal(dp_aead_gcm(&op), 0);
			wolf_seal(key, klens[k], in, n, iv, aad, 13, ref, rtag);
			if (n)
				assert_memory_equal(ours, ref, n);
			assert_memory_equal(tag, rtag, 16);
			/* Opened in place, back to the plaintext. */
			op = (struct dp_aead_op){&tag, key, klens[k], 0,  ours, ours, n,
						 iv,   12,  tag,      16, aad,	13};
			assert_int_equal(dp_aead_gcm(&op), 0);
			if (n)
				assert_memory_equal(ours, in, n);
		}
out:
	dp_aead_thread_done();
	free(in);
	free(ours);
	free(ref);
}

static void a_rekeyed_object_uses_its_new_key(void **state)
{
	uint8_t key[16], iv[12] = {0}, in[64], out[64], ref[64], tag[16], rtag[16];
	int owner;
	struct dp_aead_op op = {&owner, key, 16, 1, out, in, 64, iv, 12, tag, 16, NULL, 0};

	(void)state;
	if (!probe_or_skip())
		return;
	fill(in, 64, 3);
	for (unsigned round = 0; round < 3; round++) {
		fill(key, 16, round); /* the same object, a new key each time (a key update) */
		assert_int_equal(dp_aead_gcm(&op), 0);
		wolf_seal(key, 16, in, 64, iv, NULL, 0, ref, rtag);
		assert_memory_equal(out, ref, 64);
		assert_memory_equal(tag, rtag, 16);
	}
	dp_aead_thread_done();
}

static void tampering_is_refused(void **state)
{
	uint8_t key[16], iv[12], aad[13], in[300], ct[300], back[300], tag[16];
	int owner;
	struct dp_aead_op seal = {&owner, key, 16, 1, ct, in, 300, iv, 12, tag, 16, aad, 13};
	struct dp_aead_op open = {&tag, key, 16, 0, back, ct, 300, iv, 12, tag, 16, aad, 13};

	(void)state;
	if (!probe_or_skip())
		return;
	fill(key, 16, 1);
	fill(iv, 12, 2);
	fill(aad, 13, 3);
	fill(in, 300, 4);
	assert_int_equal(dp_aead_gcm(&seal), 0);
	assert_int_equal(dp_aead_gcm(&open), 0);
	tag[15] ^= 0x80;
	assert_int_equal(dp_aead_gcm(&open), -EBADMSG);
	tag[15] ^= 0x80;
	ct[299] ^= 1;
	assert_int_equal(dp_aead_gcm(&open), -EBADMSG);
	ct[299] ^= 1;
	aad[0] ^= 1;
	assert_int_equal(dp_aead_gcm(&open), -EBADMSG);
	aad[0] ^= 1;
	assert_int_equal(dp_aead_gcm(&open), 0);
	/* A key size AES-GCM has not: refused, nothing written. */
	open.key_len = 20;
	assert_int_equal(dp_aead_gcm(&open), -EINVAL);
	dp_aead_thread_done();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(seals_like_wolfssl_at_every_size),
		cmocka_unit_test(a_rekeyed_object_uses_its_new_key),
		cmocka_unit_test(tampering_is_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
