/*
 * test_sl_cli.c: the one start-up path (sl_cli_main): what a run function
 * returns becomes the exit code, a bad configuration never reaches it, and
 * verbs pick their own command with argv starting at their last word.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "sl_cli.h"

/* What the last run function saw, and what the next one returns. */
static struct {
	const char *who;
	size_t nargs;
	const char *arg0;
	long admin;
} last;
static int result;

static int run_main(const struct sl_config *cfg)
{
	last.who = "main";
	last.nargs = cfg->nargs;
	last.arg0 = cfg->nargs ? cfg->args[0] : NULL;
	return result;
}

static int run_keys(const struct sl_config *cfg)
{
	last.who = "keys";
	last.nargs = cfg->nargs;
	last.admin = sl_config_int(cfg, "admin");
	return result;
}

static const struct sl_opt main_opts[] = {SL_OPTS_COMMON};
static const struct sl_opt keys_opts[] = {SL_OPTS_COMMON, SL_BOOL("admin", "false", "a")};

static const struct sl_cli keys_cli = {
	.prog = "prog keys create",
	.component = "test",
	SL_CLI_OPTS(keys_opts),
	.run = run_keys,
};

static const struct sl_cli_verb verbs[] = {
	{"keys create", &keys_cli, NULL},
	{"keys", NULL, "only \"keys create\" exists"},
	{NULL, NULL, NULL},
};

static const struct sl_cli main_cli = {
	.prog = "prog",
	.component = "test",
	SL_CLI_OPTS(main_opts),
	.run = run_main,
	.verbs = verbs,
};

/* sl_cli_main on the NULL-terminated words after "prog". */
static int run_with(const char *first, ...)
{
	char *argv[16] = {"prog"};
	int argc = 1;
	va_list ap;

	memset(&last, 0, sizeof(last));
	va_start(ap, first);
	for (const char *a = first; a && argc < 15; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	va_end(ap);
	return sl_cli_main(&main_cli, argc, argv);
}

static void run_result_becomes_the_exit_code(void **state)
{
	static const struct {
		int result, exit;
	} cases[] = {
		{0, SL_EXIT_OK},
		{7, 7},
		{255, 255},
		{-EINVAL, SL_EXIT_USAGE},
		{-ENOTSUP, SL_EXIT_USAGE},
		{-EIO, SL_EXIT_FAIL},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		result = cases[i].result;
		assert_int_equal(run_with(NULL), cases[i].exit);
		assert_string_equal(last.who, "main");
	}
	result = 0;
}

/* A bad option or value, a refused verb, or the verb's option given to the
 * main command: exit 2, nothing run. */
static void usage_errors_exit_2_without_running(void **state)
{
	static const char *const cases[][2] = {
		{"--no-such-option", NULL}, {"--log-level", "loud"}, {"keys", NULL},
		{"keys", "list"},	    {"--admin", NULL},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(run_with(cases[i][0], cases[i][1], NULL), SL_EXIT_USAGE);
		assert_null(last.who);
	}
}

static void verbs_run_their_command_from_their_last_word(void **state)
{
	(void)state;
	assert_int_equal(run_with("keys", "create", "--admin", NULL), SL_EXIT_OK);
	assert_string_equal(last.who, "keys");
	assert_int_equal(last.nargs, 0);
	assert_int_equal(last.admin, 1);
}

/* "keys create" after a positional word is the main command's arguments. */
static void verbs_are_only_the_first_words(void **state)
{
	(void)state;
	assert_int_equal(run_with("http", "keys", "create", NULL), SL_EXIT_OK);
	assert_string_equal(last.who, "main");
	assert_int_equal(last.nargs, 3);
	assert_string_equal(last.arg0, "http");
	assert_int_equal(run_with("keyscreate", NULL), SL_EXIT_OK);
	assert_string_equal(last.who, "main");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(run_result_becomes_the_exit_code),
		cmocka_unit_test(usage_errors_exit_2_without_running),
		cmocka_unit_test(verbs_run_their_command_from_their_last_word),
		cmocka_unit_test(verbs_are_only_the_first_words),
	};
	return cmocka_run_group_tests_name("sl_cli", tests, NULL, NULL);
}
