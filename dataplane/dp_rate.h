/*
 * dp_rate.h: the two rate limiters of the relay (docs/limits.md).
 *
 * dp_window counts events (requests, new connections) in a sliding window
 * of DP_WIN_SLOTS slots: an event is allowed when the slots of the last
 * window hold fewer than the limit. This is the scheme the Redis script for
 * leases and session creation uses too (controlplane/cp_limits.c), so a
 * limit means the same wherever it is enforced. It refuses: over the limit,
 * a request gets 429.
 *
 * dp_bucket meters bytes with a token bucket that holds a whole window's
 * allowance and refills at limit/window: a transfer over the limit is
 * slowed to that rate, never cut, so the bucket goes into debt and tells how
 * long to pause.
 *
 * Plain data, no locks: one owner (a worker's tunnel, or the lease table
 * under its mutex).
 */
#ifndef DP_RATE_H
#define DP_RATE_H

#include <stdint.h>

#define DP_WIN_SLOTS 10

/* Ownership: plain data in its owner (a tunnel, a lease entry). */
struct dp_window {
	uint64_t slot[DP_WIN_SLOTS];  /* the slot number each count belongs to */
	uint64_t count[DP_WIN_SLOTS]; /* events in that slot */
};

/* Events in the window ending at now_ms. */
uint64_t dp_window_used(const struct dp_window *w, uint32_t window_ms, uint64_t now_ms);
/* Count n events at now_ms if the window then holds no more than limit;
 * returns 0 when they were counted, -EAGAIN when they would exceed it. */
int dp_window_take(struct dp_window *w, uint64_t limit, uint32_t window_ms, uint64_t now_ms,
		   uint64_t n);
/* ms from now_ms until the oldest counted slot leaves the window (room
 * opens then); 0 when the window is empty. */
uint64_t dp_window_reset_ms(const struct dp_window *w, uint32_t window_ms, uint64_t now_ms);

/* Ownership: plain data in its owner (a tunnel). */
struct dp_bucket {
	double tokens;	  /* may go below 0: bytes spent ahead of the rate */
	uint64_t last_ms; /* 0: untouched, full */
};

/* Spend n bytes at now_ms; returns how many ms the spender must wait before
 * spending more (0: none). */
uint64_t dp_bucket_spend(struct dp_bucket *b, uint64_t limit, uint32_t window_ms, uint64_t now_ms,
			 uint64_t n);
/* As dp_bucket_spend with n = 0: the wait left. */
uint64_t dp_bucket_wait_ms(struct dp_bucket *b, uint64_t limit, uint32_t window_ms,
			   uint64_t now_ms);

#endif
