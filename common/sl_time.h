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

/* The same clock in fractional milliseconds, for durations people read. */
static inline double sl_mono_ms_f(void)
{
	return (double)sl_mono_ns() / 1e6;
}

/* Unix time in ms: for what other processes read (Redis heartbeats). */
static inline uint64_t sl_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* *ts = ms from now on the realtime clock (pthread_cond_timedwait's). */
static inline void sl_deadline_in(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_REALTIME, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

#endif
