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

static void share_links_sign_verify_and_fail(void **state)
{
	char tok[PR_SIGNED_MAX], sid[33], share[33];
	uint64_t exp = 0;
	int n;

	(void)state;
	n = pr_share_sign(key, sizeof(key) - 1, "abcdefgh12345678", "share1234567", 5000, tok,
			  sizeof(tok));
	assert_true(n > 0);
	assert_int_equal(strncmp(tok, "s1.abcdefgh12345678.share1234567.5000.", 38), 0);
	assert_int_equal(
		pr_share_verify(key, sizeof(key) - 1, tok, (size_t)n, 4999, sid, share, &exp), 0);
	assert_string_equal(sid, "abcdefgh12345678");
	assert_string_equal(share, "share1234567");
	assert_int_equal(exp, 5000);
	assert_int_equal(
		pr_share_verify(key, sizeof(key) - 1, tok, (size_t)n, 5000, sid, share, &exp),
		-ETIME);
	assert_int_equal(
		pr_share_verify(other, sizeof(other) - 1, tok, (size_t)n, 1, sid, share, &exp),
		-EPERM);
	/* An agent token is not a share link, nor the reverse. */
	assert_int_equal(
		pr_token_verify(key, sizeof(key) - 1, tok, (size_t)n, 1, &(struct pr_token){0}),
		-EBADMSG);
	assert_int_equal(pr_share_sign(key, sizeof(key) - 1, "abcdefgh12345678", "bad!", 1, tok,
				       sizeof(tok)),
			 -EINVAL);
	n = pr_token_sign(key, sizeof(key) - 1, "abcdefgh12345678", 1, 5000, tok, sizeof(tok));
	assert_int_equal(pr_share_verify(key, sizeof(key) - 1, tok, (size_t)n, 1, sid, share, &exp),
			 -EBADMSG);
}

static void url_auth_macs_bind_session_user_and_secret(void **state)
{
	char a[65], b[65];

	(void)state;
	assert_int_equal(pr_url_auth_mac(key, sizeof(key) - 1, "abcdefgh12345678", "u", "p", a), 0);
	assert_int_equal(strlen(a), 64);
	assert_int_equal(pr_url_auth_mac(key, sizeof(key) - 1, "abcdefgh12345678", "u", "p", b), 0);
	assert_string_equal(a, b);
	pr_url_auth_mac(key, sizeof(key) - 1, "abcdefgh12345679", "u", "p", b);
	assert_string_not_equal(a, b);
	pr_url_auth_mac(key, sizeof(key) - 1, "abcdefgh12345678", "up", "", b);
	assert_string_not_equal(a, b); /* "u"+"p" and "up"+"" differ: NUL separators */
	pr_url_auth_mac(other, sizeof(other) - 1, "abcdefgh12345678", "u", "p", b);
	assert_string_not_equal(a, b);
}

static void link_proofs_bind_time_client_and_scheme(void **state)
{
	const uint8_t *lk = (const uint8_t *)"0123456789abcdef0123456789abcdef";
	char hex[65];

	(void)state;
	assert_int_equal(pr_link_sign(lk, 32, 1000, "10.0.0.1", 1, hex), 0);
	assert_int_equal(strlen(hex), 64);
	assert_int_equal(pr_link_verify(lk, 32, 1000, "10.0.0.1", 1, hex, 1030), 0);
	/* Another client, scheme, time or secret does not pass. */
	assert_int_equal(pr_link_verify(lk, 32, 1000, "10.0.0.2", 1, hex, 1000), -EACCES);
	assert_int_equal(pr_link_verify(lk, 32, 1000, "10.0.0.1", 0, hex, 1000), -EACCES);
	assert_int_equal(pr_link_verify(lk, 32, 1001, "10.0.0.1", 1, hex, 1000), -EACCES);
	assert_int_equal(pr_link_verify((const uint8_t *)"another-secret-of-32-bytes-long!", 32,
					1000, "10.0.0.1", 1, hex, 1000),
			 -EACCES);
	/* Stale or from the future: refused before the MAC is looked at. */
	assert_int_equal(pr_link_verify(lk, 32, 1000, "10.0.0.1", 1, hex, 1000 + PR_LINK_SKEW + 1),
			 -ETIME);
	assert_int_equal(pr_link_verify(lk, 32, 1000, "10.0.0.1", 1, hex, 1000 - PR_LINK_SKEW - 1),
			 -ETIME);
	hex[10] = hex[10] == 'a' ? 'b' : 'a';
	assert_int_equal(pr_link_verify(lk, 32, 1000, "10.0.0.1", 1, hex, 1000), -EACCES);
	assert_int_equal(pr_link_verify(lk, 32, 1000, "10.0.0.1", 1, "short", 1000), -EACCES);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(link_proofs_bind_time_client_and_scheme),
		cmocka_unit_test(share_links_sign_verify_and_fail),
		cmocka_unit_test(url_auth_macs_bind_session_user_and_secret),
		cmocka_unit_test(signed_token_verifies),
		cmocka_unit_test(altered_foreign_and_expired_tokens_fail),
		cmocka_unit_test(malformed_tokens_fail),
		cmocka_unit_test(short_keys_and_bad_sessions_are_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
