/*
 * test_cp_bridge.c: the thread-to-loop bridge (http/cp_bridge.h): a wake
 * from another thread runs on_wake on the loop, wakes before it runs
 * coalesce, a closed port is called no more, on_wake may free its owner,
 * and a port outliving its bridge wakes into nothing. Under the ASan build
 * the last test's frees are checked too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cp_test_loop.h"
#include "http/cp_bridge.h"

/* An owner as the routes have them: a port in a struct of its own. */
struct owner {
	struct cp_bridge_port port;
	int calls;
	atomic_int posted; /* the thread's work, read on the loop */
	int seen;	   /* posted, as on_wake last read it */
	int free_on_wake;
};

static void on_wake(struct cp_bridge_port *p)
{
	struct owner *o = H2O_STRUCT_FROM_MEMBER(struct owner, port, p);

	o->calls++;
	o->seen = atomic_load(&o->posted);
	if (o->free_on_wake) {
		cp_bridge_port_close(p);
		cp_bridge_port_release(p);
		free(o);
	}
}

static void turns(h2o_evloop_t *loop, int n)
{
	for (int i = 0; i < n; i++)
		h2o_evloop_run(loop, 10);
}

static void *poster(void *arg)
{
	struct owner *o = arg;

	for (int i = 0; i < 1000; i++) {
		atomic_fetch_add(&o->posted, 1);
		cp_bridge_wake(&o->port);
	}
	return NULL;
}

/* Each test's loop and bridge (b NULL once a test closed it itself). */
struct fixture {
	h2o_evloop_t *loop;
	struct cp_bridge *b;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->loop = h2o_evloop_create();
	assert_int_equal(cp_bridge_create(&f->b, f->loop), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	cp_bridge_close(f->b);
	cp_test_loop_end(f->loop);
	free(f);
	return 0;
}

/* A thread's thousand wakes reach the loop: on_wake sees all it posted,
 * and runs no more often than it was woken. */
static void a_threads_wakes_run_on_the_loop(void **state)
{
	struct fixture *f = *state;
	struct owner o = {0};
	pthread_t th;

	cp_bridge_port_open(f->b, &o.port, on_wake);
	assert_int_equal(pthread_create(&th, NULL, poster, &o), 0);
	pthread_join(th, NULL);
	CP_TEST_TURN_UNTIL(f->loop, o.seen >= 1000);
	assert_int_equal(o.seen, 1000);
	assert_true(o.calls >= 1 && o.calls <= 1000);
	cp_bridge_port_close(&o.port);
	cp_bridge_port_release(&o.port);
}

/* Wakes before the loop turns are one on_wake; a port closed with a wake
 * pending gets none. */
static void wakes_coalesce_and_a_closed_port_is_not_called(void **state)
{
	struct fixture *f = *state;
	struct owner one = {0}, shut = {0};

	cp_bridge_port_open(f->b, &one.port, on_wake);
	cp_bridge_port_open(f->b, &shut.port, on_wake);
	cp_bridge_wake(&one.port);
	cp_bridge_wake(&shut.port);
	cp_bridge_wake(&one.port);
	cp_bridge_port_close(&shut.port);
	turns(f->loop, 5);
	assert_int_equal(one.calls, 1);
	assert_int_equal(shut.calls, 0);
	cp_bridge_wake(&shut.port); /* closed: nothing */
	cp_bridge_wake(&one.port);
	turns(f->loop, 5);
	assert_int_equal(one.calls, 2);
	assert_int_equal(shut.calls, 0);
	cp_bridge_port_release(&one.port);
	cp_bridge_port_release(&shut.port);
}

/* Two owners ready in one turn, the first freeing itself in on_wake: the
 * second is still called, once. */
static void on_wake_may_free_its_owner(void **state)
{
	struct fixture *f = *state;
	struct owner *gone = calloc(1, sizeof(*gone)), stays = {0};

	gone->free_on_wake = 1;
	cp_bridge_port_open(f->b, &gone->port, on_wake);
	cp_bridge_port_open(f->b, &stays.port, on_wake);
	cp_bridge_wake(&gone->port);
	cp_bridge_wake(&stays.port);
	turns(f->loop, 5);
	assert_int_equal(stays.calls, 1);
	cp_bridge_port_release(&stays.port);
}

/* At exit: the bridge closed while a port is still held, as by a thread
 * that outlives the server; its wake goes nowhere, its release (after the
 * loop is gone) frees the bridge. */
static void a_port_outliving_its_bridge_wakes_into_nothing(void **state)
{
	struct fixture *f = *state;
	struct owner late = {0};

	cp_bridge_port_open(f->b, &late.port, on_wake);
	cp_bridge_close(f->b);
	f->b = NULL;
	cp_bridge_wake(&late.port);
	turns(f->loop, 2);
	assert_int_equal(late.calls, 0);
	cp_bridge_port_release(&late.port); /* the last reference: freed */
	cp_bridge_port_release(&late.port); /* released: nothing */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(a_threads_wakes_run_on_the_loop, setup, teardown),
		cmocka_unit_test_setup_teardown(wakes_coalesce_and_a_closed_port_is_not_called,
						setup, teardown),
		cmocka_unit_test_setup_teardown(on_wake_may_free_its_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(a_port_outliving_its_bridge_wakes_into_nothing,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
