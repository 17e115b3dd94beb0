/*
 * dp_epoll.c: the epoll backend, the baseline that shows what io_uring
 * earns. Each socket is registered once, edge-triggered both ways, and its
 * readiness kept in flags (DP_C_RREADY); sockets with work go on the read
 * and write queues, drained once per turn, a buffer per read from the same
 * buffers io_uring uses.
 */
#include "dp_conn_int.h"
#include "sl_log.h"
#include "sl_time.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define EP_ACCEPT_BATCH 64 /* accepts per turn of a listener: fairness with traffic */

static int ep_init(struct dp_io *io, uint32_t max_conns)
{
	(void)max_conns;
	io->epfd = epoll_create1(EPOLL_CLOEXEC);
	return io->epfd < 0 ? -errno : 0;
}

/* Edge-triggered, both directions, once: readiness is tracked in flags, so
 * no epoll_ctl is needed per operation. */
static void ep_add(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
				 .data.u64 = dp_ud(c, s->gen, DP_OP_NONE)};

	fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
	epoll_ctl(io->epfd, EPOLL_CTL_ADD, s->fd, &ev);
}

static void ep_del(struct dp_io *io, uint32_t c)
{
	epoll_ctl(io->epfd, EPOLL_CTL_DEL, io->conns[c].fd, NULL);
}

static void ep_accept_arm(struct dp_io *io, uint32_t c)
{
	io->conns[c].flags |= DP_C_RREADY; /* connections may already wait */
	dp_want_read(io, c);
}

static void ep_recv(struct dp_io *io, uint32_t c)
{
	dp_want_read(io, c);
}

/* Nothing is in flight to cancel: the receive just stops. */
static void ep_cancel_recv(struct dp_io *io, uint32_t c)
{
	io->conns[c].flags &= (uint16_t)~DP_C_RECV;
}

static void ep_cancel_all(struct dp_io *io, uint32_t c)
{
	(void)io;
	(void)c; /* never called: nothing is ever in flight on epoll */
}

/* The result (SO_ERROR) is read when the socket turns writable, or at once
 * when the connect finished or failed right away. */
static void ep_connect(struct dp_io *io, uint32_t c, const struct sockaddr *addr, socklen_t len)
{
	io->conns[c].flags |= DP_C_CONNECTING;
	io->conns[c].err = 0;
	if (connect(io->conns[c].fd, addr, len) == 0) {
		dp_want_write(io, c);
	} else if (errno != EINPROGRESS) {
		io->conns[c].err = -errno;
		dp_want_write(io, c);
	}
}

/* Readiness comes back as an event, or now if c is still marked readable. */
static void ep_poll_in(struct dp_io *io, uint32_t c)
{
	io->conns[c].flags |= DP_C_RECV;
	dp_want_read(io, c);
}

/* The partner's EPOLLOUT edge calls dp_splice_resume(). */
static void ep_poll_out(struct dp_io *io, uint32_t c)
{
	io->conns[c].sp = DP_SP_OUT;
}

static int ep_arm_wake(struct dp_io *io)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET,
				 .data.u64 = dp_ud(DP_EVENT_SLOT, 0, DP_OP_EVENT)};

	return epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->evfd, &ev) < 0 ? -errno : 0;
}

static void ep_accept(struct dp_io *io, uint32_t c)
{
	for (int i = 0; i < EP_ACCEPT_BATCH; i++) {
		int fd = accept4(io->conns[c].fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EAGAIN)
				io->conns[c].flags &= (uint16_t)~DP_C_RREADY;
			else if (errno != EINTR && errno != ECONNABORTED)
				sl_warn("accept: %s", strerror(errno));
			return;
		}
		io->stats.accepted++;
		io->ops->on_accept(io, c, fd);
		if (!dp_ud_live(io, dp_ud(c, io->conns[c].gen, DP_OP_NONE)))
			return;
	}
	dp_want_read(io, c); /* more may wait: next turn */
}

static void ep_read(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	uint32_t gen = s->gen;
	int bid;
	ssize_t n;

	if (s->flags & DP_C_LISTENER) {
		ep_accept(io, c);
		return;
	}
	if ((s->flags & (DP_C_RECV | DP_C_PAUSED)) != DP_C_RECV)
		return;
	if (s->sp != DP_SP_OFF) {
		if (s->sp == DP_SP_ON || s->sp == DP_SP_IN)
			dp_splice_in(io, c);
		return;
	}
	if ((bid = dp_buf_take(&io->r)) < 0) {
		io->r.stats.enobufs++; /* the same fallback as io_uring's ENOBUFS */
		s->flags &= (uint16_t)~DP_C_RECV;
		dp_conn_starve(io, c);
		return;
	}
	n = recv(s->fd, dp_buf_ptr(&io->r, (uint16_t)bid), io->r.bufsize, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		io->stats.eagain++;
		io->r.free_bids[io->r.nfree++] = (uint16_t)bid;
		if (errno == EAGAIN)
			s->flags &= (uint16_t)~DP_C_RREADY;
		else
			dp_want_read(io, c);
		return;
	}
	if (n <= 0) {
		io->r.free_bids[io->r.nfree++] = (uint16_t)bid;
		dp_conn_on_recv(io, c, n == 0 ? 0 : -errno, 0, 0);
		return;
	}
	dp_conn_on_recv(io, c, (int)n, (uint16_t)bid, 1);
	if (s->fd >= 0 && s->gen == gen)
		dp_want_read(io, c); /* edge-triggered: read until EAGAIN, a buffer per turn */
}

static void ep_write(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct dp_seg *g;
	ssize_t n;

	if (s->flags & DP_C_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		s->flags &= (uint16_t)~DP_C_CONNECTING;
		getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		io->ops->on_connect(io, c, s->err ? s->err : -err);
		return;
	}
	if (!(s->flags & DP_C_SENDING) || s->out.head == DP_NIL)
		return;
	g = &io->r.segs[s->out.head];
	if (g->next == DP_NIL) {
		s->sending = g->len - g->sent;
		n = send(s->fd, g->ptr + g->sent, s->sending, MSG_NOSIGNAL | MSG_DONTWAIT);
	} else {
		struct iovec iov[DP_SENDV_SEGS];
		struct msghdr mh = {.msg_iov = iov};

		mh.msg_iovlen = (size_t)dp_send_gather(io, s, iov);
		n = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			io->r.stats.gathered++;
	}
	if (n < 0 && errno == EAGAIN) {
		io->stats.eagain++;
		return; /* still SENDING; EPOLLOUT brings it back */
	}
	dp_send_done(io, c, n < 0 ? -errno : (int)n);
}

static void ep_event(struct dp_io *io, const struct epoll_event *ev)
{
	uint32_t c = dp_ud_slot(ev->data.u64);
	struct dp_conn *s;

	if (dp_ud_op(ev->data.u64) == DP_OP_EVENT) {
		dp_wake_on_event(io, 1);
		return;
	}
	s = &io->conns[c];
	if (!dp_ud_live(io, ev->data.u64))
		return;
	if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		s->flags |= DP_C_RREADY;
		if ((s->flags & (DP_C_RECV | DP_C_PAUSED)) == DP_C_RECV)
			dp_want_read(io, c);
	}
	if ((ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) &&
	    (s->flags & (DP_C_SENDING | DP_C_CONNECTING)))
		dp_want_write(io, c);
	if ((ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && s->peer != DP_NIL &&
	    io->conns[s->peer].sp == DP_SP_OUT)
		dp_splice_resume(io, s->peer);
}

static int ep_run_once(struct dp_io *io, int timeout_ms)
{
	struct epoll_event evs[DP_CQE_BATCH];
	int n = epoll_wait(io->epfd, evs, DP_CQE_BATCH,
			   io->rq.len || io->wq.len || io->tlsq.len ? 0 : timeout_ms);

	if (n < 0 && errno != EINTR)
		return -errno;
	io->now_ns = sl_mono_ns();
	for (int i = 0; i < n; i++)
		ep_event(io, &evs[i]);
	dp_io_drain_queue(io, &io->wq, DP_C_QUEUED_W, ep_write);
	dp_io_drain_queue(io, &io->rq, DP_C_QUEUED_R, ep_read);
	dp_tls_run_deferred(io);
	dp_io_rearm_starved(io);
	return 0;
}

const struct dp_backend dp_epoll_backend = {
	.init = ep_init,
	.add = ep_add,
	.del = ep_del,
	.accept = ep_accept_arm,
	.recv = ep_recv,
	.cancel_recv = ep_cancel_recv,
	.cancel_all = ep_cancel_all,
	.connect = ep_connect,
	.poll_in = ep_poll_in,
	.poll_out = ep_poll_out,
	.arm_wake = ep_arm_wake,
	.run_once = ep_run_once,
};
