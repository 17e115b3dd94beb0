/*
 * test_sl_buf.c: the growable buffer keeps every byte in order across
 * growth, stays a string, and a failed growth (an impossible size) leaves it
 * as it was; arrays grow to what is asked and no further than doubling.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdint.h>
#include <string.h>

#include "sl_buf.h"

static void appends_keep_order_across_growth(void **state)
{
	struct sl_buf b = {0};
	char want[10000];

	(void)state;
	for (int i = 0; i < 10000; i++) {
		char c = (char)('a' + i % 26);

		want[i] = c;
		assert_int_equal(sl_buf_append(&b, &c, 1), 0);
	}
	assert_int_equal(b.len, 10000);
	assert_true(b.cap >= 10001);
	assert_memory_equal(b.p, want, 10000);
	assert_int_equal(b.p[b.len], '\0');
	sl_buf_free(&b);
	assert_null(b.p);
	assert_int_equal(b.len, 0);
}

static void printf_and_puts_make_a_string(void **state)
{
	struct sl_buf b = {0};

	(void)state;
	assert_int_equal(sl_buf_puts(&b, "GET "), 0);
	assert_int_equal(sl_buf_printf(&b, "/%s?n=%d", "path", 42), 0);
	assert_string_equal(b.p, "GET /path?n=42");
	/* Longer than the first allocation: the formatted text is whole. */
	assert_int_equal(sl_buf_printf(&b, "%600s", "x"), 0);
	assert_int_equal(b.len, 14 + 600);
	assert_int_equal(b.p[b.len - 1], 'x');
	sl_buf_free(&b);
}

static void consume_drops_a_prefix(void **state)
{
	struct sl_buf b = {0};

	(void)state;
	assert_int_equal(sl_buf_puts(&b, "HELLO WORLD"), 0);
	sl_buf_consume(&b, 6);
	assert_string_equal(b.p, "WORLD");
	sl_buf_consume(&b, 99);
	assert_int_equal(b.len, 0);
	assert_string_equal(b.p, "");
	sl_buf_free(&b);
}

static void an_impossible_size_fails_and_changes_nothing(void **state)
{
	/* volatile: with the constant in view, gcc -O1 (the SAN build) flags
	 * the memcpy from "x" that the refused size never reaches. */
	volatile size_t huge = SIZE_MAX / 2;
	struct sl_buf b = {0};
	char *before;
	size_t cap;

	(void)state;
	assert_int_equal(sl_buf_puts(&b, "kept"), 0);
	before = b.p;
	cap = b.cap;
	assert_int_equal(sl_buf_reserve(&b, SIZE_MAX - 2), -ENOMEM);
	assert_int_equal(sl_buf_append(&b, "x", huge), -ENOMEM);
	assert_ptr_equal(b.p, before);
	assert_int_equal(b.cap, cap);
	assert_string_equal(b.p, "kept");
	sl_buf_free(&b);
}

static void steal_hands_the_bytes_over(void **state)
{
	struct sl_buf b = {0};
	char *p;

	(void)state;
	assert_int_equal(sl_buf_puts(&b, "mine"), 0);
	p = sl_buf_steal(&b);
	assert_string_equal(p, "mine");
	assert_null(b.p);
	assert_int_equal(b.len, 0);
	free(p);
}

static void arrays_grow_by_doubling_to_what_is_needed(void **state)
{
	uint64_t *v = NULL;
	size_t cap = 0;

	(void)state;
	assert_int_equal(sl_array_grow((void **)&v, &cap, 1, sizeof(*v), 16), 0);
	assert_int_equal(cap, 16);
	for (size_t i = 0; i < 16; i++)
		v[i] = i;
	assert_int_equal(sl_array_grow((void **)&v, &cap, 16, sizeof(*v), 16), 0);
	assert_int_equal(cap, 16); /* enough already: untouched */
	assert_int_equal(sl_array_grow((void **)&v, &cap, 17, sizeof(*v), 16), 0);
	assert_int_equal(cap, 32);
	for (size_t i = 0; i < 16; i++)
		assert_int_equal(v[i], i);
	assert_int_equal(sl_array_grow((void **)&v, &cap, SIZE_MAX / 4, sizeof(*v), 16), -ENOMEM);
	assert_int_equal(cap, 32);
	free(v);
}

static void a_bounded_writer_flags_what_does_not_fit(void **state)
{
	char buf[16];
	struct sl_out o = {buf, sizeof(buf), 0, 0};

	(void)state;
	sl_out_puts(&o, "GET ");
	sl_out_printf(&o, "/%d", 42);
	assert_int_equal(o.len, 7);
	assert_false(o.overflow);
	assert_memory_equal(buf, "GET /42", 7);
	sl_out_puts(&o, "0123456789"); /* 17 bytes: does not fit */
	assert_true(o.overflow);
	assert_int_equal(o.len, 7);
	sl_out_puts(&o, "x"); /* would fit, but the text is already cut */
	assert_int_equal(o.len, 7);
	o = (struct sl_out){buf, sizeof(buf), 0, 0};
	sl_out_printf(&o, "%s", "exactly 15 char"); /* and its '\0': 16 */
	assert_false(o.overflow);
	sl_out_printf(&o, "%s", "");
	assert_false(o.overflow); /* nothing, and its '\0' in the last byte */
	sl_out_printf(&o, "%s", "x");
	assert_true(o.overflow); /* no room for a byte and a '\0' */
	assert_int_equal(o.len, 15);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(appends_keep_order_across_growth),
		cmocka_unit_test(printf_and_puts_make_a_string),
		cmocka_unit_test(consume_drops_a_prefix),
		cmocka_unit_test(an_impossible_size_fails_and_changes_nothing),
		cmocka_unit_test(steal_hands_the_bytes_over),
		cmocka_unit_test(arrays_grow_by_doubling_to_what_is_needed),
		cmocka_unit_test(a_bounded_writer_flags_what_does_not_fit),
	};
	return cmocka_run_group_tests_name("sl_buf", tests, NULL, NULL);
}
