/*
 * dp_rate.c: sliding-window counters and token buckets (see dp_rate.h).
 */
#include "dp_rate.h"

#include <errno.h>

static uint64_t slot_ms(uint32_t window_ms)
{
	uint64_t s = window_ms / DP_WIN_SLOTS;

	return s ? s : 1;
}

uint64_t dp_window_used(const struct dp_window *w, uint32_t window_ms, uint64_t now_ms)
{
	uint64_t cur = now_ms / slot_ms(window_ms), sum = 0;

	for (int i = 0; i < DP_WIN_SLOTS; i++)
		if (w->count[i] && w->slot[i] + DP_WIN_SLOTS > cur && w->slot[i] <= cur)
			sum += w->count[i];
	return sum;
}

int dp_window_take(struct dp_window *w, uint64_t limit, uint32_t window_ms, uint64_t now_ms,
		   uint64_t n)
{
	uint64_t cur = now_ms / slot_ms(window_ms), used = dp_window_used(w, window_ms, now_ms);
	int i = (int)(cur % DP_WIN_SLOTS);

	if (used > limit || n > limit - used)
		return -EAGAIN;
	if (w->slot[i] != cur) {
		w->slot[i] = cur;
		w->count[i] = 0;
	}
	w->count[i] += n;
	return 0;
}

uint64_t dp_window_reset_ms(const struct dp_window *w, uint32_t window_ms, uint64_t now_ms)
{
	uint64_t sm = slot_ms(window_ms), cur = now_ms / sm, oldest = UINT64_MAX;

	for (int i = 0; i < DP_WIN_SLOTS; i++)
		if (w->count[i] && w->slot[i] + DP_WIN_SLOTS > cur && w->slot[i] <= cur &&
		    w->slot[i] < oldest)
			oldest = w->slot[i];
	if (oldest == UINT64_MAX)
		return 0;
	return (oldest + DP_WIN_SLOTS) * sm - now_ms;
}

static void refill(struct dp_bucket *b, uint64_t limit, uint32_t window_ms, uint64_t now_ms)
{
	if (b->last_ms == 0) {
		b->tokens = (double)limit;
		b->last_ms = now_ms;
		return;
	}
	if (now_ms > b->last_ms) {
		b->tokens += (double)(now_ms - b->last_ms) * (double)limit / (double)window_ms;
		if (b->tokens > (double)limit)
			b->tokens = (double)limit;
		b->last_ms = now_ms;
	}
}

uint64_t dp_bucket_wait_ms(struct dp_bucket *b, uint64_t limit, uint32_t window_ms, uint64_t now_ms)
{
	double ms;

	refill(b, limit, window_ms, now_ms);
	if (b->tokens >= 0)
		return 0;
	ms = -b->tokens * (double)window_ms / (double)limit;
	return (uint64_t)ms + 1;
}

uint64_t dp_bucket_spend(struct dp_bucket *b, uint64_t limit, uint32_t window_ms, uint64_t now_ms,
			 uint64_t n)
{
	refill(b, limit, window_ms, now_ms);
	b->tokens -= (double)n;
	return dp_bucket_wait_ms(b, limit, window_ms, now_ms);
}
