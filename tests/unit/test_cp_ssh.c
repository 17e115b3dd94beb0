/*
 * test_cp_ssh.c: the SSH executor's pure parts: shell quoting (checked by a
 * real sh, which must give every argument back byte for byte), target
 * parsing, configuration checks, and the health monitor's trend rule.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ssh/cp_ssh.h"

/* sh -c "printf %s QUOTED" must print s exactly. */
static void round_trip(const char *s)
{
	char q[4096], cmd[4200], out[4096] = {0};
	FILE *p;
	size_t n;

	assert_true(cp_ssh_quote(q, sizeof(q), s) > 0);
	snprintf(cmd, sizeof(cmd), "printf %%s %s", q);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	pclose(p);
	out[n] = '\0';
	assert_string_equal(out, s);
}

static void test_quote_round_trips_through_sh(void **state)
{
	static const char *const cases[] = {
		"",
		"plain",
		"two words",
		"it's",
		"'''",
		"$HOME",
		"`id`",
		"$(id)",
		"a\\b",
		"\"dq\"",
		"semi;colon && or || pipe |",
		"*?[glob]",
		"new\nline",
		"tab\there",
		"-n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		round_trip(cases[i]);
}

static void test_quote_refuses_what_does_not_fit(void **state)
{
	char small[8];

	(void)state;
	assert_int_equal(cp_ssh_quote(small, sizeof(small), "abcdefgh"), -ENOSPC);
	assert_int_equal(cp_ssh_quote(small, sizeof(small), "''"), -ENOSPC);
}

static void test_target_forms(void **state)
{
	struct cp_ssh_config c;

	(void)state;
	memset(&c, 0, sizeof(c));
	assert_int_equal(cp_ssh_target_parse("deploy@relay-1.example.com:2222", &c), 0);
	assert_string_equal(c.user, "deploy");
	assert_string_equal(c.host, "relay-1.example.com");
	assert_int_equal(c.port, 2222);
	memset(&c, 0, sizeof(c));
	assert_int_equal(cp_ssh_target_parse("[::1]:22", &c), 0);
	assert_string_equal(c.host, "::1");
	assert_int_equal(c.port, 22);
	memset(&c, 0, sizeof(c));
	assert_int_equal(cp_ssh_target_parse("fe80::1", &c), 0);
	assert_string_equal(c.host, "fe80::1");
	assert_int_equal(c.port, 0);
	assert_int_equal(cp_ssh_target_parse("host:0", &c), -EINVAL);
	assert_int_equal(cp_ssh_target_parse("host:99999", &c), -EINVAL);
	assert_int_equal(cp_ssh_target_parse("@host", &c), -EINVAL);
	assert_int_equal(cp_ssh_target_parse("[::1", &c), -EINVAL);
	assert_int_equal(cp_ssh_target_parse("", &c), -EINVAL);
}

static void test_config_check_names_the_problem(void **state)
{
	struct cp_ssh_config c;
	struct cp_ssh_err e;
	char key[] = "/tmp/test_cp_ssh_keyXXXXXX";
	int fd = mkstemp(key);

	(void)state;
	assert_true(fd >= 0);
	close(fd);
	memset(&c, 0, sizeof(c));
	snprintf(c.host, sizeof(c.host), "h");
	assert_int_equal(cp_ssh_config_check(&c, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "no user"));
	snprintf(c.user, sizeof(c.user), "u");
	assert_int_equal(cp_ssh_config_check(&c, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "no credential"));
	snprintf(c.key_file, sizeof(c.key_file), "%s", key);
	chmod(key, 0644);
	assert_int_equal(cp_ssh_config_check(&c, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "chmod 600"));
	assert_int_equal(e.kind, CP_SSH_E_CONFIG);
	assert_false(e.retryable);
	chmod(key, 0600);
	snprintf(c.known_hosts, sizeof(c.known_hosts), "/nonexistent/known_hosts");
	assert_int_equal(cp_ssh_config_check(&c, &e), -EINVAL);
	assert_non_null(strstr(e.msg, "known_hosts"));
	c.hostkey_policy = CP_SSH_HOSTKEY_ACCEPT_NEW;
	assert_int_equal(cp_ssh_config_check(&c, &e), 0);
	unlink(key);
}

static void fill(struct cp_ssh_sample *s, int from, int to, double ms, int fail_every)
{
	for (int i = from; i < to; i++)
		s[i] = (struct cp_ssh_sample){.ms = ms,
					      .failed = fail_every && i % fail_every == 0};
}

static void test_trend_warns_on_growth_only(void **state)
{
	struct cp_ssh_sample s[200];
	char warn[4][200];

	(void)state;
	fill(s, 0, 200, 3.0, 0);
	assert_int_equal(cp_ssh_trend(s, 200, warn, 4), 0);
	fill(s, 168, 200, 30.0, 0); /* the last 32 ten times slower */
	assert_int_equal(cp_ssh_trend(s, 200, warn, 4), 1);
	assert_non_null(strstr(warn[0], "latency is growing"));
	fill(s, 0, 200, 3.0, 0);
	fill(s, 168, 200, 3.0, 2); /* half of the last 32 failed */
	assert_int_equal(cp_ssh_trend(s, 200, warn, 4), 1);
	assert_non_null(strstr(warn[0], "failures are growing"));
	fill(s, 0, 200, 3.0, 2); /* always half failing: no trend */
	assert_int_equal(cp_ssh_trend(s, 200, warn, 4), 0);
	fill(s, 0, 40, 3.0, 0); /* too few earlier samples to judge */
	fill(s, 20, 40, 50.0, 0);
	assert_int_equal(cp_ssh_trend(s, 40, warn, 4), 0);
	fill(s, 0, 200, 1.0, 0); /* doubled, but by less than 5 ms: noise */
	fill(s, 168, 200, 3.0, 0);
	assert_int_equal(cp_ssh_trend(s, 200, warn, 4), 0);
}

static void test_kind_names(void **state)
{
	(void)state;
	assert_string_equal(cp_ssh_kind_name(CP_SSH_E_HOSTKEY), "hostkey");
	assert_string_equal(cp_ssh_kind_name(CP_SSH_E_NETWORK), "network");
	assert_string_equal(cp_ssh_kind_name((enum cp_ssh_kind)99), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_quote_round_trips_through_sh),
		cmocka_unit_test(test_quote_refuses_what_does_not_fit),
		cmocka_unit_test(test_target_forms),
		cmocka_unit_test(test_config_check_names_the_problem),
		cmocka_unit_test(test_trend_warns_on_growth_only),
		cmocka_unit_test(test_kind_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
