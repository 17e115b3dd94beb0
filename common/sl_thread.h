/*
 * sl_thread.h: the two ways sluice starts a thread. A detached one, for
 * work that hands its result back to the loop (node commands,
 * provisioning jobs, domain checks, a pool freed off the loop); and a
 * background thread that runs until told to stop (struct sl_bg: the
 * relay's followers of Redis: session table, leases, cluster).
 */
#ifndef SL_THREAD_H
#define SL_THREAD_H

#include "sl_time.h"

#include <pthread.h>
#include <stdatomic.h>

/* Start fn(arg) on a detached thread: 0, or a negative errno (nothing ran). */
static inline int sl_thread_detached(void *(*fn)(void *), void *arg)
{
	pthread_t th;
	pthread_attr_t at;
	int rc;

	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	rc = pthread_create(&th, &at, fn, arg);
	pthread_attr_destroy(&at);
	return -rc;
}

/*
 * A background thread and its lock and signal, which its owner uses for
 * its own state too (a queue of jobs, say): sl_bg_stop sets stop and
 * signals cv under mu, so a thread waiting on cv (sl_bg_wait_ms) wakes at
 * once. Ownership: embedded in its owner; sl_bg_start and sl_bg_stop
 * bracket it (mu and cv exist between the two).
 */
struct sl_bg {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_int stop;
	int started;
};

/* Start fn(arg): 0, or a negative errno (nothing runs, nothing to stop). */
static inline int sl_bg_start(struct sl_bg *b, void *(*fn)(void *), void *arg)
{
	int rc;

	atomic_store(&b->stop, 0);
	pthread_mutex_init(&b->mu, NULL);
	pthread_cond_init(&b->cv, NULL);
	if ((rc = pthread_create(&b->thread, NULL, fn, arg)) != 0) {
		pthread_mutex_destroy(&b->mu);
		pthread_cond_destroy(&b->cv);
		return -rc;
	}
	b->started = 1;
	return 0;
}

/* 1 once sl_bg_stop was called: the thread's loops test it every turn. */
static inline int sl_bg_stopping(struct sl_bg *b)
{
	return atomic_load(&b->stop);
}

/* With mu held: wait until signalled, stopped, or ms passed. */
static inline void sl_bg_wait_ms(struct sl_bg *b, long ms)
{
	struct timespec ts;

	sl_deadline_in(&ts, ms);
	if (!sl_bg_stopping(b))
		pthread_cond_timedwait(&b->cv, &b->mu, &ts);
}

/* Tell the thread to stop, wake it and wait for it (nothing if it never
 * started). Returns 1 when it had started, so its owner frees the rest. */
static inline int sl_bg_stop(struct sl_bg *b)
{
	if (!b->started)
		return 0;
	atomic_store(&b->stop, 1);
	pthread_mutex_lock(&b->mu);
	pthread_cond_broadcast(&b->cv);
	pthread_mutex_unlock(&b->mu);
	pthread_join(b->thread, NULL);
	pthread_mutex_destroy(&b->mu);
	pthread_cond_destroy(&b->cv);
	b->started = 0;
	return 1;
}

#endif
