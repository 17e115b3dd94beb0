/*
 * test_sl_redis.c: the Redis address parser (control plane and relay) accepts the
 * forms managed Redis services hand out and refuses the rest with a reason.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "sl_redis.h"

static void tcp_forms_parse(void **state)
{
	struct sl_redis_target t;
	char why[128];

	(void)state;
	assert_int_equal(sl_redis_url_parse("redis://127.0.0.1:6380", &t, why, sizeof(why)), 0);
	assert_string_equal(t.host, "127.0.0.1");
	assert_int_equal(t.port, 6380);
	assert_int_equal(sl_redis_url_parse("redis://cache.internal", &t, why, sizeof(why)), 0);
	assert_int_equal(t.port, 6379);
	assert_int_equal(sl_redis_url_parse("redis://:pw@h:1/3", &t, why, sizeof(why)), 0);
	assert_string_equal(t.password, "pw");
	assert_string_equal(t.user, "");
	assert_int_equal(t.db, 3);
	assert_int_equal(sl_redis_url_parse("redis://u:p:w@h", &t, why, sizeof(why)), 0);
	assert_string_equal(t.user, "u");
	assert_string_equal(t.password, "p:w");
}

static void unix_form_parses(void **state)
{
	struct sl_redis_target t;
	char why[128];

	(void)state;
	assert_int_equal(sl_redis_url_parse("unix:/run/redis.sock", &t, why, sizeof(why)), 0);
	assert_true(t.is_unix);
	assert_string_equal(t.path, "/run/redis.sock");
}

static void bad_forms_refused_with_reason(void **state)
{
	static const struct {
		const char *url, *why;
	} bad[] = {
		{"http://h:1", "expected redis://host:port or unix:/path"},
		{"redis://", "missing or overlong host"},
		{"redis://h:0", "port must be 1..65535"},
		{"redis://h:99999", "port must be 1..65535"},
		{"redis://h:12ab", "port must be 1..65535"},
		{"redis://h/x", "database must be a number"},
		{"unix:relative.sock", "expected unix:/absolute/path"},
	};
	struct sl_redis_target t;
	char why[128];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(sl_redis_url_parse(bad[i].url, &t, why, sizeof(why)), -EINVAL);
		if (strstr(why, bad[i].why) == NULL)
			fail_msg("%s: got \"%s\"", bad[i].url, why);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tcp_forms_parse),
		cmocka_unit_test(unix_form_parses),
		cmocka_unit_test(bad_forms_refused_with_reason),
	};
	return cmocka_run_group_tests_name("sl_redis", tests, NULL, NULL);
}
