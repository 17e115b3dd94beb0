/*
 * cp_test_loop.h: an h2o loop for the control plane's unit tests, turned
 * by hand: a few turns, or until a condition holds (bounded), and its end.
 */
#ifndef CP_TEST_LOOP_H
#define CP_TEST_LOOP_H

#define H2O_USE_LIBUV 0
#include <h2o.h>

/* Turn loop (10 ms at most each) until *done, 200 turns at most. */
#define CP_TEST_TURN_UNTIL(loop, done)                                                             \
	for (int cp_turn_ = 0; cp_turn_ < 200 && !(done); cp_turn_++)                              \
	h2o_evloop_run((loop), 10)

/* The sockets closed meanwhile freed, then the loop. */
static inline void cp_test_loop_end(h2o_evloop_t *loop)
{
	h2o_evloop_run(loop, 0);
	h2o_evloop_destroy(loop);
}

#endif
