/*
 * test_pr_seal.c: sealed secrets open with the same secret and aad only, and
 * any changed byte is refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "pr_seal.h"

static const uint8_t secret[] = "0123456789abcdef0123456789abcdef-secret";
static const uint8_t other[] = "0123456789abcdef0123456789abcdef-OTHER!";

static void seals_and_opens(void **state)
{
	const char *pt = "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n";
	char text[PR_SEAL_TEXT_LEN(64)], again[PR_SEAL_TEXT_LEN(64)], out[64];
	int n = pr_seal(secret, sizeof(secret), "node:nd_1", pt, strlen(pt), text, sizeof(text));

	(void)state;
	assert_int_equal(n, (int)strlen(text));
	assert_int_equal(strncmp(text, "v1.", 3), 0);
	assert_null(strstr(text, "OPENSSH"));
	assert_int_equal(pr_unseal(secret, sizeof(secret), "node:nd_1", text, out, sizeof(out)),
			 (int)strlen(pt));
	assert_string_equal(out, pt);
	/* A fresh nonce each time: the same secret never seals the same text twice. */
	pr_seal(secret, sizeof(secret), "node:nd_1", pt, strlen(pt), again, sizeof(again));
	assert_string_not_equal(text, again);
}

static void refuses_what_was_changed_or_moved(void **state)
{
	char text[PR_SEAL_TEXT_LEN(16)], out[32];

	(void)state;
	pr_seal(secret, sizeof(secret), "node:nd_1", "password", 8, text, sizeof(text));
	assert_int_equal(pr_unseal(other, sizeof(other), "node:nd_1", text, out, sizeof(out)),
			 -EBADMSG);
	assert_int_equal(pr_unseal(secret, sizeof(secret), "node:nd_2", text, out, sizeof(out)),
			 -EBADMSG);
	for (size_t i = 3; i < strlen(text); i += 7) {
		char saved = text[i];

		text[i] = saved == '0' ? '1' : '0';
		assert_int_equal(
			pr_unseal(secret, sizeof(secret), "node:nd_1", text, out, sizeof(out)),
			-EBADMSG);
		text[i] = saved;
	}
	assert_int_equal(pr_unseal(secret, sizeof(secret), "node:nd_1", "v1.zz", out, sizeof(out)),
			 -EBADMSG);
	assert_int_equal(pr_unseal(secret, sizeof(secret), "node:nd_1", "v2.00", out, sizeof(out)),
			 -EBADMSG);
	assert_int_equal(pr_seal(secret, sizeof(secret), "a", "x", 1, text, 10), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(seals_and_opens),
		cmocka_unit_test(refuses_what_was_changed_or_moved),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
