/*
 * test_dp_rate.c: the relay's limiters. A sliding window lets exactly the
 * limit through within one window and makes room as slots age out; a token
 * bucket lets a window's allowance through at once, then makes the spender
 * wait in proportion to what it overspent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>

#include <string.h>

#include "dp_rate.h"

static void window_allows_exactly_the_limit(void **state)
{
	struct dp_window w;
	int taken = 0;

	(void)state;
	memset(&w, 0, sizeof(w));
	for (int i = 0; i < 250; i++)
		taken += dp_window_take(&w, 100, 60000, 1000000 + (uint64_t)i, 1) == 0;
	assert_int_equal(taken, 100);
	assert_int_equal(dp_window_used(&w, 60000, 1000300), 100);
}

static void window_makes_room_as_slots_age(void **state)
{
	struct dp_window w;
	uint64_t t0 = 6000000; /* slot boundary for 6 s slots */

	(void)state;
	memset(&w, 0, sizeof(w));
	assert_int_equal(dp_window_take(&w, 10, 60000, t0, 4), 0);
	assert_int_equal(dp_window_take(&w, 10, 60000, t0 + 30000, 6), 0);
	assert_int_equal(dp_window_take(&w, 10, 60000, t0 + 59999, 1), -EAGAIN);
	/* The first slot's 4 leave the window 60 s after their slot began. */
	assert_int_equal(dp_window_reset_ms(&w, 60000, t0 + 59999), 1);
	assert_int_equal(dp_window_take(&w, 10, 60000, t0 + 60000, 4), 0);
	assert_int_equal(dp_window_take(&w, 10, 60000, t0 + 60000, 1), -EAGAIN);
	/* Everything ages out after a whole window of silence. */
	assert_int_equal(dp_window_used(&w, 60000, t0 + 200000), 0);
	assert_int_equal(dp_window_reset_ms(&w, 60000, t0 + 200000), 0);
}

static void window_refuses_a_batch_that_does_not_fit(void **state)
{
	struct dp_window w;

	(void)state;
	memset(&w, 0, sizeof(w));
	assert_int_equal(dp_window_take(&w, 5, 1000, 10, 6), -EAGAIN);
	assert_int_equal(dp_window_take(&w, 5, 1000, 10, 5), 0);
	assert_int_equal(dp_window_take(&w, 5, 1000, 10, 1), -EAGAIN);
}

static void bucket_allows_a_window_then_paces(void **state)
{
	struct dp_bucket b = {0, 0};

	(void)state;
	/* 1000 bytes per second: the first 1000 pass without a wait. */
	assert_int_equal(dp_bucket_spend(&b, 1000, 1000, 5000, 1000), 0);
	/* 500 more are half a second ahead of the rate. */
	assert_in_range(dp_bucket_spend(&b, 1000, 1000, 5000, 500), 500, 501);
	assert_in_range(dp_bucket_wait_ms(&b, 1000, 1000, 5250), 250, 251);
	assert_int_equal(dp_bucket_wait_ms(&b, 1000, 1000, 5501), 0);
	/* A long pause refills no more than one window's allowance. */
	assert_int_equal(dp_bucket_spend(&b, 1000, 1000, 100000, 1000), 0);
	assert_true(dp_bucket_spend(&b, 1000, 1000, 100000, 1) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(window_allows_exactly_the_limit),
		cmocka_unit_test(window_makes_room_as_slots_age),
		cmocka_unit_test(window_refuses_a_batch_that_does_not_fit),
		cmocka_unit_test(bucket_allows_a_window_then_paces),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
