/*
 * test_cp_rdb.c: the asynchronous Redis client's promise to its callers
 * (http/cp_rdb.h): every command's callback runs exactly once, never inside
 * cp_rdb_cmd*, in the order the commands were sent; a command that cannot
 * be queued (the fault hook, SLUICE_FAULT_RDB_ALLOC) fails with those in
 * flight; cp_rdb_free answers what still waits. No Redis runs here: a port
 * nobody listens on, or a listener that never answers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cp_test_loop.h"
#include "http/cp_rdb.h"

#define MAX_CALLS 8

/* What the callbacks saw, in order. */
struct calls {
	int n;
	int id[MAX_CALLS];
	char err[MAX_CALLS][300];
};

struct tag {
	struct calls *c;
	int id;
};

static void on_reply(void *ud, struct redisReply *r, const char *err)
{
	struct tag *t = ud;
	struct calls *c = t->c;

	(void)r;
	if (c->n < MAX_CALLS) {
		c->id[c->n] = t->id;
		snprintf(c->err[c->n], sizeof(c->err[0]), "%s", err ? err : "");
	}
	c->n++;
}

static void target(struct sl_redis_target *t, int port)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->host, sizeof(t->host), "127.0.0.1");
	t->port = port;
}

/* A TCP listener on a free loopback port that accepts (the kernel does)
 * and never answers; its port in *port. */
static int silent_listener(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

/* Each test's loop, connection, listener and what its callbacks saw. */
struct fixture {
	h2o_evloop_t *loop;
	struct cp_rdb *db;
	int lfd;
	struct calls c;
	struct tag tags[3];
};

static struct fixture fx; /* one test at a time */

static int setup(void **state)
{
	memset(&fx, 0, sizeof(fx));
	fx.loop = h2o_evloop_create();
	fx.lfd = -1;
	for (int i = 0; i < 3; i++)
		fx.tags[i] = (struct tag){&fx.c, i};
	*state = &fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	cp_rdb_free(f->db);
	if (f->lfd >= 0)
		close(f->lfd);
	cp_test_loop_end(f->loop);
	return 0;
}

/* f's connection to port on loopback, each reply bounded by timeout_ms. */
static void open_db(struct fixture *f, int port, int timeout_ms)
{
	struct sl_redis_target t;

	target(&t, port);
	assert_int_equal(cp_rdb_create(&f->db, f->loop, &t, timeout_ms), 0);
}

/* The loop turned until the three callbacks came: each once, in order,
 * with err (any, or this one). */
static void three_failed_in_order(struct fixture *f, const char *err)
{
	CP_TEST_TURN_UNTIL(f->loop, f->c.n >= 3);
	assert_int_equal(f->c.n, 3);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(f->c.id[i], i);
		assert_true(f->c.err[i][0] != '\0');
		if (err)
			assert_string_equal(f->c.err[i], err);
	}
}

/* f's connection to a listener that never answers, then GET k and cmd. */
static void two_to_a_silent_server(struct fixture *f, const char *cmd)
{
	int port;

	f->lfd = silent_listener(&port);
	open_db(f, port, 5000);
	cp_rdb_cmdf(f->db, on_reply, &f->tags[0], "GET k");
	cp_rdb_cmdf(f->db, on_reply, &f->tags[1], "%s", cmd);
}

/* Redis unreachable: a pipeline's three callbacks, none during the calls
 * (the caller sends all three with one ud), then each once, in order. */
static void callbacks_run_later_in_order_when_redis_is_down(void **state)
{
	struct fixture *f = *state;

	open_db(f, 1, 1000); /* nobody listens on port 1 */
	cp_rdb_cmdf(f->db, on_reply, &f->tags[0], "MULTI");
	cp_rdb_cmdf(f->db, on_reply, &f->tags[1], "SET k %s", "v");
	cp_rdb_cmdf(f->db, on_reply, &f->tags[2], "EXEC");
	assert_int_equal(f->c.n, 0);
	three_failed_in_order(f, NULL);
}

/* The hook fails the first PING as if out of memory: the GET in flight
 * before it fails with it (the connection dropped), then the PING, both
 * later; the next command meets the dropped connection and fails too. */
static void a_command_that_cannot_be_queued_fails_later_with_those_in_flight(void **state)
{
	struct fixture *f = *state;

	two_to_a_silent_server(f, "PING");
	cp_rdb_cmdf(f->db, on_reply, &f->tags[2], "GET k");
	assert_int_equal(f->c.n, 0);
	three_failed_in_order(f, "redis command: out of memory");
}

/* What waits on a silent server is answered by cp_rdb_free itself: the
 * loop will not turn again for it. */
static void free_answers_what_still_waits(void **state)
{
	struct fixture *f = *state;

	two_to_a_silent_server(f, "GET b");
	for (int i = 0; i < 5; i++)
		h2o_evloop_run(f->loop, 10); /* connected, written, no answer */
	assert_int_equal(f->c.n, 0);
	cp_rdb_free(f->db);
	f->db = NULL;
	assert_int_equal(f->c.n, 2);
	assert_string_equal(f->c.err[0], "shutting down");
	assert_string_equal(f->c.err[1], "shutting down");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(callbacks_run_later_in_order_when_redis_is_down,
						setup, teardown),
		cmocka_unit_test_setup_teardown(
			a_command_that_cannot_be_queued_fails_later_with_those_in_flight, setup,
			teardown),
		cmocka_unit_test_setup_teardown(free_answers_what_still_waits, setup, teardown),
	};

	/* Read once, at the first cp_rdb_create: only the PING above counts. */
	setenv("SLUICE_FAULT_RDB_ALLOC", "PING:1", 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
