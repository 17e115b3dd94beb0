/*
 * cp_bridge.c: threads waking the h2o loop (see cp_bridge.h): a pipe, a
 * lock, and the list of ports ready.
 */
#define H2O_USE_LIBUV 0
#include <h2o.h>

#include "http/cp_bridge.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* Ownership: see cp_bridge.h. fds[1] and the lock live as long as the
 * struct (threads write and lock until their last reference goes); fds[0]
 * is the loop's socket, closed by cp_bridge_close. */
struct cp_bridge {
	atomic_int refs;
	pthread_mutex_t mu;
	int closed;	      /* under mu */
	h2o_linklist_t ready; /* ports woken, oldest first (under mu) */
	size_t nready;	      /* under mu */
	int fds[2];
	h2o_socket_t *sock; /* fds[0] on the loop; NULL once closed */
};

static void bridge_unref(struct cp_bridge *b)
{
	if (atomic_fetch_sub(&b->refs, 1) != 1)
		return;
	close(b->fds[1]);
	pthread_mutex_destroy(&b->mu);
	free(b);
}

/* With mu held: a byte down the pipe, which the loop reads. */
static void ring(struct cp_bridge *b)
{
	if (write(b->fds[1], "", 1) < 0) {
		/* full (EAGAIN): the loop has bytes to read anyway */
	}
}

/* With mu held: p off the ready list (if it is on it). */
static void unready(struct cp_bridge *b, struct cp_bridge_port *p)
{
	if (!h2o_linklist_is_linked(&p->ready))
		return;
	h2o_linklist_unlink(&p->ready);
	b->nready--;
}

/* With mu held: the first ready port, off the list, or NULL. */
static struct cp_bridge_port *pop(struct cp_bridge *b)
{
	struct cp_bridge_port *p;

	if (h2o_linklist_is_empty(&b->ready))
		return NULL;
	p = H2O_STRUCT_FROM_MEMBER(struct cp_bridge_port, ready, b->ready.next);
	unready(b, p);
	return p;
}

/* The ports ready when the loop looked: bounded by their number then, so a
 * port woken again while its on_wake runs waits for the next turn (its
 * byte rung below) and no thread can hold the loop here. */
static void on_readable(h2o_socket_t *sock, const char *err)
{
	struct cp_bridge *b = sock->data;
	size_t n;

	(void)err; /* EOF cannot come: the write end is ours */
	h2o_buffer_consume(&sock->input, sock->input->size);
	pthread_mutex_lock(&b->mu);
	n = b->nready;
	pthread_mutex_unlock(&b->mu);
	while (n-- > 0) {
		struct cp_bridge_port *p;

		pthread_mutex_lock(&b->mu);
		p = pop(b);
		pthread_mutex_unlock(&b->mu);
		if (p == NULL)
			break;
		/* p's owner lives: the loop has not closed p, so it still holds
		 * its reference (cp_bridge.h). on_wake may free it. */
		p->on_wake(p);
	}
	pthread_mutex_lock(&b->mu);
	if (b->nready && !b->closed)
		ring(b);
	pthread_mutex_unlock(&b->mu);
}

int cp_bridge_create(struct cp_bridge **out, void *loop)
{
	struct cp_bridge *b = calloc(1, sizeof(*b));

	if (b == NULL)
		return -ENOMEM;
	if (pipe2(b->fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		int err = -errno;

		free(b);
		return err;
	}
	pthread_mutex_init(&b->mu, NULL);
	h2o_linklist_init_anchor(&b->ready);
	atomic_init(&b->refs, 1);
	b->sock = h2o_evloop_socket_create(loop, b->fds[0], 0);
	b->sock->data = b;
	h2o_socket_read_start(b->sock, on_readable);
	*out = b;
	return 0;
}

void cp_bridge_close(struct cp_bridge *b)
{
	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	b->closed = 1;
	while (pop(b) != NULL)
		;
	pthread_mutex_unlock(&b->mu);
	h2o_socket_read_stop(b->sock);
	h2o_socket_close(b->sock); /* closes fds[0]: a late write fails, ignored */
	b->sock = NULL;
	bridge_unref(b);
}

void cp_bridge_port_open(struct cp_bridge *b, struct cp_bridge_port *p, cp_bridge_cb on_wake)
{
	atomic_fetch_add(&b->refs, 1);
	p->b = b;
	p->on_wake = on_wake;
	p->ready = (h2o_linklist_t){NULL, NULL};
	p->open = 1;
}

void cp_bridge_wake(struct cp_bridge_port *p)
{
	struct cp_bridge *b = p->b;

	pthread_mutex_lock(&b->mu);
	if (p->open && !h2o_linklist_is_linked(&p->ready) && !b->closed) {
		h2o_linklist_insert(&b->ready, &p->ready); /* at the end */
		if (b->nready++ == 0)
			ring(b);
	}
	pthread_mutex_unlock(&b->mu);
}

void cp_bridge_port_close(struct cp_bridge_port *p)
{
	struct cp_bridge *b = p->b;

	if (b == NULL)
		return;
	pthread_mutex_lock(&b->mu);
	unready(b, p);
	p->open = 0;
	pthread_mutex_unlock(&b->mu);
}

void cp_bridge_port_release(struct cp_bridge_port *p)
{
	if (p->b == NULL)
		return;
	cp_bridge_port_close(p);
	bridge_unref(p->b);
	p->b = NULL;
}
