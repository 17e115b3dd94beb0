/*
 * test_sl_config.c: the shared configuration loader: precedence (flag > env
 * > file > default), the config file syntax, and that every error names the
 * key, the value and where it came from.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sl_config.h"

static int check_even(const char *v, char *why, size_t cap)
{
	if (strlen(v) % 2) {
		snprintf(why, cap, "expected an even length");
		return -EINVAL;
	}
	return 0;
}

static const struct sl_opt opts[] = {
	SL_OPTS_COMMON,
	SL_ADDR("listen", "127.0.0.1:8080", "l"),
	SL_INT("workers", "2", 1, 64, "w"),
	SL_ENUM("engine", "io_uring", "io_uring|epoll", "e"),
	SL_BOOL("insecure", "false", "i"),
	SL_RANGE("ports", "20000-20999", "p"),
	SL_SECRET("token", "t"),
	SL_STR("even", NULL, "x", .check = check_even),
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static struct sl_config cfg;

static int setup(void **state)
{
	(void)state;
	return sl_config_init(&cfg, opts, NOPTS);
}

static int teardown(void **state)
{
	(void)state;
	sl_config_free(&cfg);
	return 0;
}

/* Load argv (NULL-terminated list after the program name) with envp. */
static int load(char **envp, ...)
{
	char *argv[32] = {"prog"};
	int argc = 1;
	va_list ap;

	va_start(ap, envp);
	for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
		argv[argc++] = a;
	va_end(ap);
	return sl_config_load(&cfg, argc, argv, envp);
}

static char *empty_env[] = {NULL};

static void defaults_apply_when_nothing_is_set(void **state)
{
	(void)state;
	assert_int_equal(load(empty_env, NULL), 0);
	assert_string_equal(sl_config_str(&cfg, "listen"), "127.0.0.1:8080");
	assert_int_equal(sl_config_int(&cfg, "workers"), 2);
	assert_int_equal(sl_config_get(&cfg, "workers")->src, SL_SRC_DEFAULT);
	assert_null(sl_config_str(&cfg, "token"));
	assert_int_equal(sl_config_get(&cfg, "token")->src, SL_SRC_UNSET);
}

static char *write_tmp(const char *text)
{
	static char path[64];
	int fd;

	strcpy(path, "/tmp/sl_config_test_XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* Each source overrides the ones below it, key by key. */
static void flag_beats_env_beats_file_beats_default(void **state)
{
	char *path = write_tmp("workers = 3\nengine = epoll\nlisten = 127.0.0.1:1\n");
	char cfgflag[80], *env[] = {"SLUICE_WORKERS=5", "SLUICE_ENGINE=io_uring", NULL};

	(void)state;
	snprintf(cfgflag, sizeof(cfgflag), "--config=%s", path);
	assert_int_equal(load(env, cfgflag, "--workers", "7", NULL), 0);
	unlink(path);
	assert_int_equal(sl_config_int(&cfg, "workers"), 7);
	assert_int_equal(sl_config_get(&cfg, "workers")->src, SL_SRC_FLAG);
	assert_string_equal(sl_config_str(&cfg, "engine"), "io_uring");
	assert_int_equal(sl_config_get(&cfg, "engine")->src, SL_SRC_ENV);
	assert_string_equal(sl_config_str(&cfg, "listen"), "127.0.0.1:1");
	assert_int_equal(sl_config_get(&cfg, "listen")->src, SL_SRC_FILE);
	assert_int_equal(sl_config_get(&cfg, "ports")->src, SL_SRC_DEFAULT);
}

static void config_file_found_through_environment(void **state)
{
	char *path = write_tmp("workers = 9\n");
	char envc[80], *env[] = {envc, NULL};

	(void)state;
	snprintf(envc, sizeof(envc), "SLUICE_CONFIG=%s", path);
	assert_int_equal(load(env, NULL), 0);
	unlink(path);
	assert_int_equal(sl_config_int(&cfg, "workers"), 9);
}

static void file_syntax_comments_quotes_and_crlf(void **state)
{
	const char *text = "# a comment\n"
			   "\n"
			   "   workers=4   # trailing comment\r\n"
			   "token = \"a # not a comment \\\" and \\\\\"\n"
			   "engine =epoll\n";

	(void)state;
	assert_int_equal(sl_config_parse_text(&cfg, text, strlen(text), "t.conf"), 0);
	assert_int_equal(sl_config_int(&cfg, "workers"), 4);
	assert_string_equal(sl_config_str(&cfg, "token"), "a # not a comment \" and \\");
	assert_string_equal(sl_config_str(&cfg, "engine"), "epoll");
}

/* Every malformed line is refused with its line number and a reason. */
static void file_errors_name_line_and_reason(void **state)
{
	static const struct {
		const char *text, *expect;
	} cases[] = {
		{"workers 4\n", "expected '=' after the key (from t.conf:1)"},
		{"\n= 4\n", "expected a key of letters, digits and '-' (from t.conf:2)"},
		{"token = \"open\n", "unterminated or malformed quoted value (from t.conf:1)"},
		{"token = \"a\" b\n", "unexpected text after the value (from t.conf:1)"},
		{"token = a\"b\n", "a '\"' may only start a quoted value"},
		{"wrokers = 4\n", "unknown key \"wrokers\" (from t.conf:1)"},
		{"workers = 0\n",
		 "invalid value \"0\" for workers (from t.conf:1): expected an integer in 1..64"},
		{"config = /etc/x\n", "key \"config\" cannot be set in a config file"},
		{"token = \"bad \\n escape\"\n", "unterminated or malformed quoted value"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int err =
			sl_config_parse_text(&cfg, cases[i].text, strlen(cases[i].text), "t.conf");

		assert_int_equal(err, -EINVAL);
		if (strstr(cfg.err, cases[i].expect) == NULL)
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, cfg.err,
				 cases[i].expect);
	}
}

static void overlong_line_refused(void **state)
{
	size_t n = SL_CONFIG_LINE_MAX + 20;
	char *text = malloc(n + 1);

	(void)state;
	memcpy(text, "token = ", 8);
	memset(text + 8, 'a', n - 8);
	text[n] = '\0';
	assert_int_equal(sl_config_parse_text(&cfg, text, n, "t.conf"), -EINVAL);
	assert_non_null(strstr(cfg.err, "line too long"));
	free(text);
}

static void nul_byte_refused(void **state)
{
	const char text[] = "token = a\0b\n";

	(void)state;
	assert_int_equal(sl_config_parse_text(&cfg, text, sizeof(text) - 1, "t.conf"), -EINVAL);
	assert_non_null(strstr(cfg.err, "NUL byte"));
}

static void missing_file_is_a_clear_error(void **state)
{
	(void)state;
	assert_int_equal(load(empty_env, "--config", "/nonexistent/sluice.conf", NULL), -ENOENT);
	assert_non_null(strstr(cfg.err, "cannot read config file /nonexistent/sluice.conf"));
}

/* Typed validation, for every type, through the flag path. */
static void typed_values_are_validated(void **state)
{
	static const struct {
		const char *flag, *value, *why;
	} bad[] = {
		{"--workers", "65", "expected an integer in 1..64"},
		{"--workers", "4x", "expected an integer in 1..64"},
		{"--workers", "", "expected an integer in 1..64"},
		{"--workers", "99999999999999999999", "expected an integer in 1..64"},
		{"--engine", "kqueue", "expected one of io_uring|epoll"},
		{"--listen", "127.0.0.1", "expected host:port"},
		{"--listen", "127.0.0.1:0", "expected host:port"},
		{"--listen", "127.0.0.1:70000", "expected host:port"},
		{"--listen", "bad host:80", "expected host:port"},
		{"--listen", "[::1:80", "expected host:port"},
		{"--ports", "30-20", "expected a port range"},
		{"--ports", "20", "expected a port range"},
		{"--even", "abc", "expected an even length"},
	};
	char flag[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(flag, sizeof(flag), "%s=%s", bad[i].flag, bad[i].value);
		assert_int_equal(load(empty_env, flag, NULL), -EINVAL);
		if (strstr(cfg.err, bad[i].why) == NULL || strstr(cfg.err, bad[i].flag) == NULL)
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, cfg.err, bad[i].why);
	}
	assert_int_equal(load(empty_env, "--listen=[::1]:80", "--ports", "20000-20001", NULL), 0);
	assert_int_equal(sl_config_int(&cfg, "ports"), 20000L << 16 | 20001);
}

static void env_errors_name_the_variable(void **state)
{
	char *env[] = {"SLUICE_ENGINE=poll", NULL};

	(void)state;
	assert_int_equal(load(env, NULL), -EINVAL);
	assert_string_equal(cfg.err, "invalid value \"poll\" for engine (from SLUICE_ENGINE): "
				     "expected one of io_uring|epoll");
}

static void booleans_bare_negated_and_explicit(void **state)
{
	(void)state;
	assert_int_equal(load(empty_env, "--insecure", NULL), 0);
	assert_int_equal(sl_config_int(&cfg, "insecure"), 1);
	assert_int_equal(load(empty_env, "--no-insecure", NULL), 0);
	assert_int_equal(sl_config_int(&cfg, "insecure"), 0);
	assert_int_equal(load(empty_env, "--insecure=yes", NULL), 0);
	assert_int_equal(sl_config_int(&cfg, "insecure"), 1);
	assert_int_equal(load(empty_env, "--insecure=maybe", NULL), -EINVAL);
	assert_int_equal(load(empty_env, "--no-workers", NULL), -EINVAL);
}

static void flags_positionals_and_terminator(void **state)
{
	(void)state;
	assert_int_equal(load(empty_env, "http", "--workers", "3", "3000", "--", "--x", NULL), 0);
	assert_int_equal(cfg.nargs, 3);
	assert_string_equal(cfg.args[0], "http");
	assert_string_equal(cfg.args[1], "3000");
	assert_string_equal(cfg.args[2], "--x");
}

static void flag_errors(void **state)
{
	(void)state;
	assert_int_equal(load(empty_env, "--wrokers", "3", NULL), -EINVAL);
	assert_string_equal(cfg.err, "unknown option --wrokers (see --help)");
	assert_int_equal(load(empty_env, "-w", NULL), -EINVAL);
	assert_int_equal(load(empty_env, "--workers", NULL), -EINVAL);
	assert_string_equal(cfg.err, "option --workers needs a value");
}

/* --print-config output redacts secrets and parses back to the same values. */
static void print_redacts_and_round_trips(void **state)
{
	struct sl_config back;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	(void)state;
	assert_int_equal(load(empty_env, "--token=s3cret", "--even", "a \"q\" #!", NULL), 0);
	sl_config_print(&cfg, f);
	fclose(f);
	assert_null(strstr(buf, "s3cret"));
	assert_non_null(strstr(buf, "token = \"<redacted>\"  # flag"));
	assert_int_equal(sl_config_init(&back, opts, NOPTS), 0);
	assert_int_equal(sl_config_parse_text(&back, buf, len, "printed"), 0);
	assert_string_equal(sl_config_str(&back, "even"), "a \"q\" #!");
	assert_string_equal(sl_config_str(&back, "workers"), "2");
	sl_config_free(&back);
	free(buf);
}

/* Without sl_config.sections, a header is junk like any other. */
static void sections_refused_unless_asked_for(void **state)
{
	const char *text = "workers = 3\n[tunnel.web]\nport = 3000\n";

	(void)state;
	assert_int_equal(sl_config_parse_text(&cfg, text, strlen(text), "t.conf"), -EINVAL);
	assert_non_null(
		strstr(cfg.err, "sections ([tunnel.web]) are not read here (from t.conf:2)"));
	assert_int_equal(cfg.nsect, 0);
}

/* With it, the top-level keys apply and every line below a header is kept,
 * unchecked, for the program: even a key of the top-level table. */
static void sections_kept_in_order_with_their_lines(void **state)
{
	const char *text = "workers = 3\n"
			   "[tunnel.web]  # the site\n"
			   "port = 3000\n"
			   "\n"
			   "workers = 9\n"
			   "[ db ]\n"
			   "name = \"a b\"\n";

	(void)state;
	cfg.sections = 1;
	assert_int_equal(sl_config_parse_text(&cfg, text, strlen(text), "t.conf"), 0);
	assert_int_equal(sl_config_int(&cfg, "workers"), 3);
	assert_int_equal(cfg.nsect, 5);
	assert_string_equal(cfg.sect[0].section, "tunnel.web");
	assert_null(cfg.sect[0].key);
	assert_string_equal(cfg.sect[0].where, "t.conf:2");
	assert_string_equal(cfg.sect[1].key, "port");
	assert_string_equal(cfg.sect[1].value, "3000");
	assert_string_equal(cfg.sect[2].key, "workers");
	assert_string_equal(cfg.sect[2].where, "t.conf:5");
	assert_string_equal(cfg.sect[3].section, "db");
	assert_string_equal(cfg.sect[4].value, "a b");
	assert_string_equal(cfg.sect[4].section, "db");
}

static void section_errors_name_line_and_reason(void **state)
{
	static const struct {
		const char *text, *expect;
	} cases[] = {
		{"[]\n", "of letters, digits, '-', '_' and '.' (from t.conf:1)"},
		{"[web\n", "expected a section header [name]"},
		{"[a b]\n", "expected a section header [name]"},
		{"[web] x\n", "unexpected text after the section header (from t.conf:1)"},
		{"[web]\nport 3\n", "expected '=' after the key (from t.conf:2)"},
		{"[web]\n[db]\n[web]\n", "section [web] given twice (from t.conf:1 and t.conf:3)"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int err;

		sl_config_free(&cfg);
		cfg.sections = 1;
		err = sl_config_parse_text(&cfg, cases[i].text, strlen(cases[i].text), "t.conf");
		assert_int_equal(err, -EINVAL);
		if (strstr(cfg.err, cases[i].expect) == NULL)
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, cfg.err,
				 cases[i].expect);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(defaults_apply_when_nothing_is_set, setup,
						teardown),
		cmocka_unit_test_setup_teardown(flag_beats_env_beats_file_beats_default, setup,
						teardown),
		cmocka_unit_test_setup_teardown(config_file_found_through_environment, setup,
						teardown),
		cmocka_unit_test_setup_teardown(file_syntax_comments_quotes_and_crlf, setup,
						teardown),
		cmocka_unit_test_setup_teardown(file_errors_name_line_and_reason, setup, teardown),
		cmocka_unit_test_setup_teardown(overlong_line_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(nul_byte_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(missing_file_is_a_clear_error, setup, teardown),
		cmocka_unit_test_setup_teardown(typed_values_are_validated, setup, teardown),
		cmocka_unit_test_setup_teardown(env_errors_name_the_variable, setup, teardown),
		cmocka_unit_test_setup_teardown(booleans_bare_negated_and_explicit, setup,
						teardown),
		cmocka_unit_test_setup_teardown(flags_positionals_and_terminator, setup, teardown),
		cmocka_unit_test_setup_teardown(flag_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(print_redacts_and_round_trips, setup, teardown),
		cmocka_unit_test_setup_teardown(sections_refused_unless_asked_for, setup, teardown),
		cmocka_unit_test_setup_teardown(sections_kept_in_order_with_their_lines, setup,
						teardown),
		cmocka_unit_test_setup_teardown(section_errors_name_line_and_reason, setup,
						teardown),
	};
	return cmocka_run_group_tests_name("sl_config", tests, NULL, NULL);
}
