/*
 * test_sl_log.c: log lines are complete and well-formed whatever the message:
 * JSON escaping, truncation that keeps a line valid, level filtering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "sl_log.h"

static const struct timespec ts = {1700000000, 123456789};

static void json_line_escapes_quotes_controls_and_backslashes(void **state)
{
	char buf[512];
	size_t n;

	(void)state;
	n = sl_log_format_line(buf, sizeof(buf), SL_LOG_JSON, &ts, SL_LOG_WARN, "relay",
			       "say \"hi\"\\\n\t\x01 done");
	buf[n] = '\0';
	assert_string_equal(buf, "{\"ts\":\"2023-11-14T22:13:20.123Z\",\"level\":\"warn\","
				 "\"component\":\"relay\",\"msg\":\"say \\\"hi\\\"\\\\\\n\\t"
				 "\\u0001 done\"}\n");
}

static void text_line_has_time_level_component(void **state)
{
	char buf[256];
	size_t n;

	(void)state;
	n = sl_log_format_line(buf, sizeof(buf), SL_LOG_TEXT, &ts, SL_LOG_INFO, "agent", "ready");
	buf[n] = '\0';
	assert_string_equal(buf, "22:13:20.123Z info  agent: ready\n");
}

/* A message far longer than the buffer still yields one closed JSON line. */
static void json_truncation_keeps_line_valid(void **state)
{
	char msg[3000], buf[200];
	size_t n;

	(void)state;
	memset(msg, '"', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	n = sl_log_format_line(buf, sizeof(buf), SL_LOG_JSON, &ts, SL_LOG_ERROR, "c", msg);
	assert_true(n < sizeof(buf));
	assert_memory_equal(buf + n - 3, "\"}\n", 3);
	/* No escape sequence was cut in half: the byte before the tail is an escaped quote. */
	assert_memory_equal(buf + n - 5, "\\\"", 2);
}

/* Cutting never splits a UTF-8 sequence (JSON must be valid UTF-8). */
static void json_truncation_respects_utf8(void **state)
{
	char out[8];
	size_t used, n;

	(void)state;
	/* "ab" then a 3-byte euro sign: with room for 4 bytes, only "ab" fits whole. */
	n = sl_json_escape(out, 4, "ab\xe2\x82\xac", 5, &used);
	assert_int_equal(n, 2);
	assert_memory_equal(out, "ab", 2);
	n = sl_json_escape(out, 5, "ab\xe2\x82\xac", 5, &used);
	assert_int_equal(n, 5);
	assert_int_equal(used, 5);
}

static void text_truncation_keeps_newline(void **state)
{
	char msg[500], buf[64];
	size_t n;

	(void)state;
	memset(msg, 'x', sizeof(msg) - 1);
	msg[sizeof(msg) - 1] = '\0';
	n = sl_log_format_line(buf, sizeof(buf), SL_LOG_TEXT, &ts, SL_LOG_INFO, "c", msg);
	assert_int_equal(n, sizeof(buf) - 1);
	assert_int_equal(buf[n - 1], '\n');
}

static void level_and_format_names_parse(void **state)
{
	(void)state;
	assert_int_equal(sl_log_level_parse("debug"), SL_LOG_DEBUG);
	assert_int_equal(sl_log_level_parse("error"), SL_LOG_ERROR);
	assert_int_equal(sl_log_level_parse("verbose"), -EINVAL);
	assert_int_equal(sl_log_format_parse("json"), SL_LOG_JSON);
	assert_int_equal(sl_log_format_parse("xml"), -EINVAL);
}

/* Messages below the level are not written; others are, one line each. */
static void level_filters_what_is_written(void **state)
{
	char buf[1024];
	int p[2];
	ssize_t n;

	(void)state;
	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	sl_log_init("test", SL_LOG_WARN, SL_LOG_AUTO, p[1]);
	sl_debug("hidden %d", 1);
	sl_info("hidden %d", 2);
	sl_warn("shown %d", 3);
	sl_error("shown %d", 4);
	n = read(p[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	/* A pipe is not a terminal, so auto chose JSON. */
	assert_null(strstr(buf, "hidden"));
	assert_non_null(
		strstr(buf, "\"level\":\"warn\",\"component\":\"test\",\"msg\":\"shown 3\""));
	assert_non_null(strstr(buf, "\"msg\":\"shown 4\"}\n"));
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(json_line_escapes_quotes_controls_and_backslashes),
		cmocka_unit_test(text_line_has_time_level_component),
		cmocka_unit_test(json_truncation_keeps_line_valid),
		cmocka_unit_test(json_truncation_respects_utf8),
		cmocka_unit_test(text_truncation_keeps_newline),
		cmocka_unit_test(level_and_format_names_parse),
		cmocka_unit_test(level_filters_what_is_written),
	};
	return cmocka_run_group_tests_name("sl_log", tests, NULL, NULL);
}
