/*
 * test_pr_token.c: signed agent tokens: what one key signs it verifies, and
 * an altered, foreign, expired or malformed token is refused with its own
 * error; a short (or absent) secret is refused outright.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pr_token.h"

static const uint8_t key[] = "0123456789abcdef0123456789abcdef-sluice-test-key";
static const uint8_t other[] = "fedcba9876543210fedcba9876543210-another-key----";
#define KEY_LEN (sizeof(key) - 1)

static void signed_token_verifies(void **state)
{
	char tok[PR_SIGNED_MAX];
	struct pr_token t;
	int n;

	(void)state;
	n = pr_token_sign(key, KEY_LEN, "Ab3dEf7h9k", 42, 1900000000, tok, sizeof(tok));
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(tok));
	assert_true(strncmp(tok, "v1.Ab3dEf7h9k.42.1900000000.", 28) == 0);
	assert_int_equal(pr_token_verify(key, KEY_LEN, tok, (size_t)n, 1800000000, &t), 0);
	assert_string_equal(t.sid, "Ab3dEf7h9k");
	assert_int_equal(t.epoch, 42);
	assert_int_equal(t.expires, 1900000000);
	/* Deterministic: the same inputs give the same token. */
	char again[PR_SIGNED_MAX];
	assert_int_equal(
		pr_token_sign(key, KEY_LEN, "Ab3dEf7h9k", 42, 1900000000, again, sizeof(again)), n);
	assert_string_equal(again, tok);
}

static void altered_foreign_and_expired_tokens_fail(void **state)
{
	char tok[PR_SIGNED_MAX], bad[PR_SIGNED_MAX];
	struct pr_token t;
	int n = pr_token_sign(key, KEY_LEN, "sessionAB12", 7, 2000, tok, sizeof(tok));

	(void)state;
	assert_true(n > 0);
	assert_int_equal(pr_token_verify(other, KEY_LEN, tok, (size_t)n, 1000, &t), -EPERM);
	/* Another epoch (a resumed session fences the old token). */
	memcpy(bad, tok, (size_t)n + 1);
	bad[strlen("v1.sessionAB12.")] = '8';
	assert_int_equal(pr_token_verify(key, KEY_LEN, bad, (size_t)n, 1000, &t), -EPERM);
	/* Every byte of the MAC counts. */
	for (int i = n - 64; i < n; i++) {
		memcpy(bad, tok, (size_t)n + 1);
		bad[i] = bad[i] == '0' ? '1' : '0';
		assert_int_equal(pr_token_verify(key, KEY_LEN, bad, (size_t)n, 1000, &t), -EPERM);
	}
	assert_int_equal(pr_token_verify(key, KEY_LEN, tok, (size_t)n, 2000, &t), -ETIME);
	assert_int_equal(pr_token_verify(key, KEY_LEN, tok, (size_t)n, 1999, &t), 0);
}

static void malformed_tokens_fail(void **state)
{
	static const char *const bad[] = {
		"",
		"v1",
		"v2.sessionAB12.1.2."
		"0000000000000000000000000000000000000000000000000000000000000000",
		"v1.short.1.2.0000000000000000000000000000000000000000000000000000000000000000",
		"v1.sess-onAB12.1.2."
		"0000000000000000000000000000000000000000000000000000000000000000",
		"v1.sessionAB12.01.2."
		"0000000000000000000000000000000000000000000000000000000000000000",
		"v1.sessionAB12.-1.2."
		"0000000000000000000000000000000000000000000000000000000000000000",
		"v1.sessionAB12.1.99999999999999999999."
		"00000000000000000000000000000000000000000000000000"
		"00000000000000",
		"v1.sessionAB12.1.2.000",
		"v1.sessionAB12.1.2."
		"0000000000000000000000000000000000000000000000000000000000000000.x",
		"v1.sessionAB12..2."
		"0000000000000000000000000000000000000000000000000000000000000000",
	};
	struct pr_token t;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (pr_token_verify(key, KEY_LEN, bad[i], strlen(bad[i]), 1, &t) != -EBADMSG)
			fail_msg("accepted or misjudged: %s", bad[i]);
}

static void short_keys_and_bad_sessions_are_refused(void **state)
{
	char tok[PR_SIGNED_MAX];
	struct pr_token t;

	(void)state;
	assert_int_equal(pr_token_sign(key, 31, "sessionAB12", 1, 2, tok, sizeof(tok)), -EINVAL);
	assert_int_equal(pr_token_sign(key, 0, "sessionAB12", 1, 2, tok, sizeof(tok)), -EINVAL);
	assert_int_equal(pr_token_sign(key, KEY_LEN, "bad id!!", 1, 2, tok, sizeof(tok)), -EINVAL);
	assert_int_equal(pr_token_sign(key, KEY_LEN, "sessionAB12", 1, 2, tok, 40), -ENOSPC);
	assert_int_equal(pr_token_verify(key, 16, "v1", 2, 1, &t), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(signed_token_verifies),
		cmocka_unit_test(altered_foreign_and_expired_tokens_fail),
		cmocka_unit_test(malformed_tokens_fail),
		cmocka_unit_test(short_keys_and_bad_sessions_are_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
