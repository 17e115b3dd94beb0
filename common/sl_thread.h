/*
 * sl_thread.h: a detached thread, the way every worker that hands its
 * result back through a pipe (node commands, provisioning jobs, domain
 * checks, a pool freed off the loop) is started.
 */
#ifndef SL_THREAD_H
#define SL_THREAD_H

#include <pthread.h>

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

#endif
