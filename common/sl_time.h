/*
 * sl_time.h: the monotonic clock every timer in sluice reads (deadlines,
 * heartbeats, latency), so no file keeps its own copy.
 */
#ifndef SL_TIME_H
#define SL_TIME_H

#include <stdint.h>
#include <time.h>

static inline uint64_t sl_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t sl_mono_ms(void)
{
	return sl_mono_ns() / 1000000u;
}

#endif
