/*
 * dp_splice.c: bulk transfers between two plain sockets through a pipe,
 * socket -> pipe -> partner, never through user space (HAProxy's
 * splice-auto): a paired socket whose read filled a whole buffer moves on
 * to splice(2) once what it queued before has gone (order kept), and stays
 * there. Readiness comes from the backend (poll_in, poll_out).
 */
#include "dp_conn_int.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

/* ---- splice(2): socket -> pipe -> socket for bulk transfers ---- */

#define SPLICE_CHUNK (1u << 16) /* the default pipe size */

#define SPLICE_ROUNDS 16 /* chunks per wake-up: fairness with other sockets */

/* Empty c's pipe into its partner. Returns 1 when empty, 0 when c waits
 * (partner full: a poll is armed; or its queue still drains) or failed. */
static int splice_out(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct dp_conn *d;

	if (s->peer == DP_NIL || (io->conns[s->peer].flags & (DP_C_CLOSING | DP_C_SHUT))) {
		dp_conn_fail(io, c);
		return 0;
	}
	d = &io->conns[s->peer];
	if (d->out.head != DP_NIL || (d->flags & DP_C_SENDING)) {
		s->sp = DP_SP_WAIT; /* bytes queued on the partner go first */
		return 0;
	}
	while (s->in_pipe > 0) {
		ssize_t n = splice(s->pipe_r, NULL, d->fd, NULL, s->in_pipe,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);

		if (n > 0) {
			s->in_pipe -= (uint32_t)n;
			d->tx += (uint64_t)n;
			io->r.stats.spliced += (uint64_t)n;
		} else if (n < 0 && errno == EAGAIN) {
			io->be->poll_out(io, c);
			return 0;
		} else if (n < 0 && errno != EINTR) {
			io->stats.send_errors++;
			dp_conn_fail(io, c);
			return 0;
		}
	}
	return 1;
}

/* c is readable (or may be): move what it has to its partner through the pipe. */
void dp_splice_in(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	uint32_t gen = s->gen;

	s->sp = DP_SP_ON;
	for (int i = 0; i < SPLICE_ROUNDS; i++) {
		ssize_t n;

		if (s->fd < 0 || s->gen != gen || (s->flags & (DP_C_PAUSED | DP_C_CLOSING)))
			return;
		if (s->in_pipe > 0 && !splice_out(io, c))
			return;
		if (s->flags & DP_C_NETEOF) {
			dp_conn_deliver_eof(io, c); /* the pipe is empty: the FIN may follow */
			return;
		}
		n = splice(s->fd, NULL, s->pipe_w, NULL, SPLICE_CHUNK,
			   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			s->in_pipe += (uint32_t)n;
			s->rx += (uint64_t)n;
			if (io->ops->on_forwarded)
				(void)io->ops->on_forwarded(io, c, DP_NIL, (uint32_t)n);
		} else if (n == 0) {
			s->flags |= DP_C_NETEOF;
		} else if (errno == EAGAIN) {
			if (io->engine == DP_ENGINE_EPOLL)
				s->flags &= (uint16_t)~DP_C_RREADY;
			io->be->poll_in(io, c);
			return;
		} else if (errno != EINTR) {
			io->stats.recv_errors++;
			dp_conn_fail(io, c);
			return;
		}
	}
	/* More may wait: after the other sockets. If the pipe holds bytes they
	 * go first, and a poll for input would not fire once the sender is done
	 * (io_uring: a poll for output fires at once on a writable partner;
	 * epoll: c is still marked readable and comes back next turn). */
	if (s->in_pipe > 0 && io->engine == DP_ENGINE_URING)
		io->be->poll_out(io, c);
	else
		io->be->poll_in(io, c);
}

/* Splicing starts once the receive in flight is gone and what c queued on
 * its partner has been sent, so bytes keep their order. */
void dp_splice_try_start(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct dp_conn *d;

	if (s->sp != DP_SP_WAIT || (s->flags & (DP_C_CLOSING | DP_C_EOF)))
		return;
	if (io->engine == DP_ENGINE_URING && (s->flags & DP_C_RECV))
		return; /* the cancelled receive has not completed yet */
	if (s->peer == DP_NIL)
		return;
	d = &io->conns[s->peer];
	if (d->out.head != DP_NIL || (d->flags & DP_C_SENDING))
		return;
	if (io->engine == DP_ENGINE_EPOLL)
		s->flags |= DP_C_RECV | DP_C_RREADY; /* try now; EAGAIN waits for the edge */
	dp_splice_in(io, c);
}

/* A read filled a whole buffer: bulk. A paired plain socket moves on to
 * splice(2), as HAProxy's splice-auto does. */
void dp_splice_maybe(struct dp_io *io, uint32_t c, uint32_t len)
{
	struct dp_conn *s = &io->conns[c];
	int fds[2];

	if (!io->splice || s->sp != DP_SP_OFF || len < io->r.bufsize || s->tls || s->fd < 0 ||
	    (s->flags & (DP_C_INTERCEPT | DP_C_CLOSING | DP_C_NETEOF)) || s->peer == DP_NIL ||
	    io->conns[s->peer].tls)
		return;
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
		io->r.stats.splice_fallbacks++;
		return;
	}
	s->pipe_r = fds[0];
	s->pipe_w = fds[1];
	s->sp = DP_SP_WAIT;
	/* splice(2) blocks on a blocking socket whatever its flags say; io_uring
	 * waits for readiness on non-blocking sockets all the same (epoll's are
	 * non-blocking already). */
	if (io->engine == DP_ENGINE_URING) {
		fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
		fcntl(io->conns[s->peer].fd, F_SETFL,
		      fcntl(io->conns[s->peer].fd, F_GETFL) | O_NONBLOCK);
	}
	io->r.stats.splice_starts++;
	if (s->flags & DP_C_RECV)
		io->be->cancel_recv(io, c); /* the receive ends: then splicing starts */
	dp_splice_try_start(io, c);
}

/* The partner of c became writable (epoll) or drained its queue. */
void dp_splice_resume(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if (s->sp == DP_SP_WAIT) {
		dp_splice_try_start(io, c);
	} else if (s->sp == DP_SP_OUT) {
		s->sp = DP_SP_ON;
		dp_splice_in(io, c);
	}
}

/* A poll of the splice path completed. */
void dp_splice_on_poll(struct dp_io *io, uint32_t c, int res)
{
	struct dp_conn *s = &io->conns[c];

	s->sp = DP_SP_ON;
	if (s->flags & DP_C_CLOSING)
		return;
	if (res < 0 && res != -ECANCELED) {
		dp_conn_fail(io, c);
		return;
	}
	dp_splice_in(io, c);
}
