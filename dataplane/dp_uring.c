/*
 * dp_uring.c: the io_uring backend. Receives are multishot from the
 * provided-buffer ring, accepts multishot, sends one SQE per socket at the
 * end of the turn (SEND_ZC for large segments when asked), and every
 * completion carries (slot, generation, op) in user_data so that one for a
 * slot since freed and reused is ignored.
 */
#include "dp_conn_int.h"
#include "sl_log.h"
#include "sl_time.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

/* An SQE for op on slot c, counted in flight (a cancel is not: its own
 * completion is ignored). */
static struct io_uring_sqe *sqe_for(struct dp_io *io, uint32_t c, enum dp_op op)
{
	struct io_uring_sqe *sqe = dp_ring_sqe(&io->r);

	io_uring_sqe_set_data64(sqe, dp_ud(c, io->conns[c].gen, op));
	if (op != DP_OP_CANCEL)
		io->conns[c].inflight++;
	return sqe;
}

/* Untouched pages of the send vectors cost nothing: a slot's entry is
 * written only when that connection gathers. */
static int ur_init(struct dp_io *io, uint32_t max_conns)
{
	io->sendv = calloc(max_conns, sizeof(io->sendv[0]));
	return io->sendv ? 0 : -ENOMEM;
}

static void ur_nothing(struct dp_io *io, uint32_t c)
{
	(void)io;
	(void)c;
}

static void ur_accept(struct dp_io *io, uint32_t c)
{
	struct io_uring_sqe *sqe = sqe_for(io, c, DP_OP_ACCEPT);

	io_uring_prep_multishot_accept(sqe, io->conns[c].fd, NULL, NULL, SOCK_CLOEXEC);
}

static void ur_recv(struct dp_io *io, uint32_t c)
{
	struct io_uring_sqe *sqe = sqe_for(io, c, DP_OP_RECV);

	io_uring_prep_recv_multishot(sqe, io->conns[c].fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = io->r.bgid;
}

static void ur_cancel_recv(struct dp_io *io, uint32_t c)
{
	struct io_uring_sqe *sqe = sqe_for(io, c, DP_OP_CANCEL);

	io_uring_prep_cancel64(sqe, dp_ud(c, io->conns[c].gen, DP_OP_RECV), 0);
}

/* shutdown(2) (dp_conn_close) completed a pending recv and failed a
 * pending send; the cancel covers the rest, then the drain frees the slot. */
static void ur_cancel_all(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe = sqe_for(io, c, DP_OP_CANCEL);

	io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
	if (s->sp == DP_SP_OUT) { /* that poll is on the partner's socket */
		sqe = sqe_for(io, c, DP_OP_CANCEL);
		io_uring_prep_cancel64(sqe, dp_ud(c, s->gen, DP_OP_POLL_OUT), 0);
	}
}

static void ur_connect(struct dp_io *io, uint32_t c, const struct sockaddr *addr, socklen_t len)
{
	struct io_uring_sqe *sqe = sqe_for(io, c, DP_OP_CONNECT);

	io_uring_prep_connect(sqe, io->conns[c].fd, addr, len);
}

/* Wait until c is readable: a one-shot poll. */
static void ur_poll_in(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe;

	if (s->sp == DP_SP_IN)
		return;
	s->sp = DP_SP_IN;
	sqe = sqe_for(io, c, DP_OP_POLL_IN);
	io_uring_prep_poll_add(sqe, s->fd, POLLIN | POLLRDHUP);
}

/* The pipe holds bytes and c's partner is full: wait until it is writable. */
static void ur_poll_out(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe;

	s->sp = DP_SP_OUT;
	sqe = sqe_for(io, c, DP_OP_POLL_OUT);
	io_uring_prep_poll_add(sqe, io->conns[s->peer].fd, POLLOUT);
}

static int ur_arm_wake(struct dp_io *io)
{
	struct io_uring_sqe *sqe = dp_ring_sqe(&io->r);

	io_uring_prep_poll_multishot(sqe, io->evfd, POLLIN);
	io_uring_sqe_set_data64(sqe, dp_ud(DP_EVENT_SLOT, 0, DP_OP_EVENT));
	return 0;
}

/* io_uring: the send c waits for, as one SQE: SEND_ZC for a large head
 * segment, else a plain send of one segment or a sendmsg of several. */
static void ur_write(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct dp_seg *g;
	struct dp_sendv *v;
	struct io_uring_sqe *sqe;

	if (!(s->flags & DP_C_SENDING) || s->out.head == DP_NIL)
		return;
	g = &io->r.segs[s->out.head];
	if (io->zc_min && g->len - g->sent >= io->zc_min) {
		/* The buffer stays ours until the notification: on_send runs then. */
		s->sending = g->len - g->sent;
		sqe = sqe_for(io, c, DP_OP_SEND_ZC);
		io_uring_prep_send_zc(sqe, s->fd, g->ptr + g->sent, s->sending, MSG_NOSIGNAL,
				      IORING_SEND_ZC_REPORT_USAGE);
		io->r.stats.zc_sends++;
		return;
	}
	if (g->next == DP_NIL) {
		s->sending = g->len - g->sent;
		sqe = sqe_for(io, c, DP_OP_SEND);
		io_uring_prep_send(sqe, s->fd, g->ptr + g->sent, s->sending, MSG_NOSIGNAL);
		return;
	}
	v = &io->sendv[c];
	memset(&v->mh, 0, sizeof(v->mh));
	v->mh.msg_iov = v->iov;
	v->mh.msg_iovlen = (size_t)dp_send_gather(io, s, v->iov);
	io->r.stats.gathered++;
	sqe = sqe_for(io, c, DP_OP_SEND);
	io_uring_prep_sendmsg(sqe, s->fd, &v->mh, MSG_NOSIGNAL);
}

static void on_accept_cqe(struct dp_io *io, uint32_t c, int res, uint32_t cflags)
{
	struct dp_conn *s = &io->conns[c];

	if (!(cflags & IORING_CQE_F_MORE)) {
		s->flags &= (uint16_t)~DP_C_RECV;
		if (!(s->flags & DP_C_CLOSING))
			dp_conn_accept(io, c); /* the multishot accept ended: again */
	}
	if (res >= 0) {
		io->stats.accepted++;
		if (s->flags & DP_C_CLOSING)
			close(res);
		else
			io->ops->on_accept(io, c, res);
	} else if (res != -ECANCELED && res != -EAGAIN) {
		sl_warn("accept: %s", strerror(-res));
	}
}

/*
 * SEND_ZC completes twice: the result (with F_MORE when a notification
 * follows) and the notification that the kernel no longer reads the buffer.
 * The segment is released, and the next send made, only then; a kernel
 * without SEND_ZC (-EINVAL) turns it off and the send is made again.
 */
static void on_send_zc(struct dp_io *io, uint32_t c, const struct io_uring_cqe *cqe)
{
	struct dp_conn *s = &io->conns[c];

	if (cqe->flags & IORING_CQE_F_NOTIF) {
		if ((uint32_t)cqe->res & IORING_NOTIF_USAGE_ZC_COPIED)
			io->r.stats.zc_copied++;
		dp_send_done(io, c, s->err);
		return;
	}
	if (cqe->flags & IORING_CQE_F_MORE) {
		s->err = cqe->res;
		return;
	}
	if (cqe->res == -EINVAL || cqe->res == -EOPNOTSUPP) {
		io->r.stats.zc_refused++;
		io->zc_min = 0;
		s->flags &= (uint16_t)~DP_C_SENDING;
		dp_send_kick(io, c);
		return;
	}
	dp_send_done(io, c, cqe->res);
}

static void dispatch(struct dp_io *io, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	uint32_t c = dp_ud_slot(ud);
	enum dp_op op = dp_ud_op(ud);
	struct dp_conn *s;

	if (op == DP_OP_EVENT) {
		dp_wake_on_event(io, cqe->flags & IORING_CQE_F_MORE);
		return;
	}
	if (op == DP_OP_CANCEL || op == DP_OP_NONE || c >= io->nconns)
		return;
	s = &io->conns[c];
	if (s->fd < 0 || s->gen != dp_ud_gen(ud))
		return; /* stale: the slot was freed and reused */
	if (!(cqe->flags & IORING_CQE_F_MORE))
		s->inflight--;
	switch (op) {
	case DP_OP_RECV:
		dp_conn_on_recv(io, c, cqe->res, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT),
				cqe->flags & IORING_CQE_F_MORE);
		break;
	case DP_OP_SEND: dp_send_done(io, c, cqe->res); break;
	case DP_OP_SEND_ZC: on_send_zc(io, c, cqe); break;
	case DP_OP_POLL_IN:
	case DP_OP_POLL_OUT: dp_splice_on_poll(io, c, cqe->res); break;
	case DP_OP_ACCEPT: on_accept_cqe(io, c, cqe->res, cqe->flags); break;
	case DP_OP_CONNECT:
		if (!(s->flags & DP_C_CLOSING))
			io->ops->on_connect(io, c, cqe->res);
		break;
	default: break;
	}
	if ((s->flags & DP_C_CLOSING) && s->inflight == 0 && s->fd >= 0)
		dp_conn_free_slot(io, c);
}

static int ur_run_once(struct dp_io *io, int timeout_ms)
{
	struct __kernel_timespec ts = {timeout_ms / 1000, (long long)(timeout_ms % 1000) * 1000000};
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int err;

	dp_io_drain_queue(io, &io->wq, DP_C_QUEUED_W, ur_write);
	if (io->tlsq.len)
		err = io_uring_submit(&io->r.ring); /* work waits: reap, do not sleep */
	else
		err = io_uring_submit_and_wait_timeout(&io->r.ring, &cqe, 1, &ts, NULL);
	io->now_ns = sl_mono_ns();
	if (err < 0 && err != -ETIME && err != -EINTR)
		return err;
	io_uring_for_each_cqe(&io->r.ring, head, cqe)
	{
		dispatch(io, cqe);
		if (++n == DP_CQE_BATCH)
			break;
	}
	io_uring_cq_advance(&io->r.ring, n);
	dp_tls_run_deferred(io);
	dp_io_rearm_starved(io);
	return 0;
}

const struct dp_backend dp_uring_backend = {
	.init = ur_init,
	.add = ur_nothing,
	.del = ur_nothing,
	.accept = ur_accept,
	.recv = ur_recv,
	.cancel_recv = ur_cancel_recv,
	.cancel_all = ur_cancel_all,
	.connect = ur_connect,
	.poll_in = ur_poll_in,
	.poll_out = ur_poll_out,
	.arm_wake = ur_arm_wake,
	.run_once = ur_run_once,
};
