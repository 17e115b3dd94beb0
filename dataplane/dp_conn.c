/*
 * dp_conn.c: the socket table and the byte pump (see dp_conn.h for the
 * model: pairs, one send in flight per socket, pause above pause_bytes).
 */
#include "dp_conn.h"
#include "pr_msg.h"
#include "sl_log.h"
#include "sl_time.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <string.h>
#include <unistd.h>

#define DP_CQE_BATCH 256 /* completions handled per wait: fairness with timers */

/* Kernel 6.2 flags that liburing 2.3's headers predate. */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

int dp_io_init(struct dp_io *io, uint32_t max_conns, uint32_t nbufs, uint32_t bufsize,
	       const struct dp_io_ops *ops, void *owner, enum dp_engine engine)
{
	int err;

	memset(io, 0, sizeof(*io));
	io->conns = calloc(max_conns, sizeof(io->conns[0]));
	if (io->conns == NULL)
		return -ENOMEM;
	io->nconns = max_conns;
	io->free_head = DP_NIL;
	for (uint32_t i = max_conns; i-- > 0;) {
		io->conns[i].fd = -1;
		io->conns[i].link = io->free_head;
		io->free_head = i;
	}
	/* Heap segments: a few per connection at most (heads, frames, errors). */
	io->engine = engine;
	io->epfd = -1;
	err = dp_ring_init(&io->r, 4096, nbufs, bufsize, max_conns * 2 + 64,
			   engine == DP_ENGINE_EPOLL ? DP_RING_F_NOURING : 0);
	if (err < 0) {
		free(io->conns);
		return err;
	}
	if (engine == DP_ENGINE_EPOLL && (io->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) {
		err = -errno;
		dp_ring_free(&io->r);
		free(io->conns);
		return err;
	}
	io->ops = ops;
	io->owner = owner;
	io->pause_bytes = 4 * bufsize;
	io->starved = DP_NIL;
	io->evfd = -1;
	/* Untouched pages of it cost nothing: a slot's entry is written only
	 * when that connection gathers. */
	if (engine != DP_ENGINE_EPOLL &&
	    (io->sendv = calloc(max_conns, sizeof(io->sendv[0]))) == NULL) {
		dp_io_free(io);
		return -ENOMEM;
	}
	return 0;
}

void dp_io_free(struct dp_io *io)
{
	for (uint32_t i = 0; i < io->nconns; i++)
		if (io->conns[i].fd >= 0)
			close(io->conns[i].fd);
	dp_ring_free(&io->r);
	if (io->epfd >= 0)
		close(io->epfd);
	if (io->evfd >= 0)
		close(io->evfd);
	free(io->rq.v);
	free(io->wq.v);
	free(io->tlsq.v);
	free(io->sendv);
	free(io->conns);
	io->conns = NULL;
}

uint32_t dp_conn_new(struct dp_io *io, int fd, uint8_t kind, void *owner)
{
	uint32_t c = io->free_head;
	struct dp_conn *s;

	if (c == DP_NIL) {
		close(fd);
		return DP_NIL;
	}
	s = &io->conns[c];
	io->free_head = s->link;
	s->fd = fd;
	s->flags = 0;
	s->kind = kind;
	s->inflight = 0;
	s->peer = DP_NIL;
	s->out = DP_CHAIN_EMPTY;
	s->out_bytes = 0;
	s->link = DP_NIL;
	s->olink = DP_NIL;
	s->owner = owner;
	s->rx = s->tx = 0;
	s->tls = NULL;
	s->pipe_r = s->pipe_w = -1;
	s->in_pipe = 0;
	s->sp = DP_SP_OFF;
	io->live++;
	if (io->engine == DP_ENGINE_EPOLL) {
		/* Edge-triggered, both directions, once: readiness is tracked in
		 * flags, so no epoll_ctl is needed per operation. */
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
					 .data.u64 = dp_ud(c, s->gen, DP_OP_NONE)};

		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
		epoll_ctl(io->epfd, EPOLL_CTL_ADD, fd, &ev);
	}
	return c;
}

/* ---- epoll engine: work queues ---- */

void dp_queue_push(struct dp_queue *q, uint64_t ud)
{
	if (q->len == q->cap) {
		uint32_t cap = q->cap ? q->cap * 2 : 256;
		uint64_t *v = realloc(q->v, cap * sizeof(*v));

		if (v == NULL)
			abort(); /* a few KiB at most per thousand sockets */
		q->v = v;
		q->cap = cap;
	}
	q->v[q->len++] = ud;
}

static void want_read(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if ((s->flags & (DP_C_RREADY | DP_C_QUEUED_R)) == DP_C_RREADY) {
		s->flags |= DP_C_QUEUED_R;
		dp_queue_push(&io->rq, dp_ud(c, s->gen, DP_OP_RECV));
	}
}

static void want_write(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if (!(s->flags & DP_C_QUEUED_W)) {
		s->flags |= DP_C_QUEUED_W;
		dp_queue_push(&io->wq, dp_ud(c, s->gen, DP_OP_SEND));
	}
}

static struct io_uring_sqe *sqe_for(struct dp_io *io, uint32_t c, enum dp_op op)
{
	struct io_uring_sqe *sqe = dp_ring_sqe(&io->r);

	io_uring_sqe_set_data64(sqe, dp_ud(c, io->conns[c].gen, op));
	if (op != DP_OP_CANCEL)
		io->conns[c].inflight++;
	return sqe;
}

void dp_conn_accept(struct dp_io *io, uint32_t c)
{
	struct io_uring_sqe *sqe;

	io->conns[c].flags |= DP_C_LISTENER | DP_C_RECV;
	if (io->engine == DP_ENGINE_EPOLL) {
		io->conns[c].flags |= DP_C_RREADY; /* connections may already wait */
		want_read(io, c);
		return;
	}
	sqe = sqe_for(io, c, DP_OP_ACCEPT);
	io_uring_prep_multishot_accept(sqe, io->conns[c].fd, NULL, NULL, SOCK_CLOEXEC);
}

/* ---- splice(2): socket -> pipe -> socket for bulk transfers ---- */

#define SPLICE_CHUNK  (1u << 16) /* the default pipe size */
#define SPLICE_ROUNDS 16	 /* chunks per wake-up: fairness with other sockets */

/* Wait until c is readable (io_uring: a one-shot poll; epoll: readiness
 * comes back as an event, or now if c is still marked readable). */
static void arm_poll_in(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe;

	if (io->engine == DP_ENGINE_EPOLL) {
		s->flags |= DP_C_RECV;
		want_read(io, c);
		return;
	}
	if (s->sp == DP_SP_IN)
		return;
	s->sp = DP_SP_IN;
	sqe = sqe_for(io, c, DP_OP_POLL_IN);
	io_uring_prep_poll_add(sqe, s->fd, POLLIN | POLLRDHUP);
}

/* The pipe holds bytes and c's partner is full: wait until it is writable. */
static void arm_poll_out(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe;

	s->sp = DP_SP_OUT;
	if (io->engine == DP_ENGINE_EPOLL)
		return; /* the partner's EPOLLOUT edge calls splice_resume() */
	sqe = sqe_for(io, c, DP_OP_POLL_OUT);
	io_uring_prep_poll_add(sqe, io->conns[s->peer].fd, POLLOUT);
}

void dp_conn_recv(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe;

	if (s->flags & DP_C_THROTTLE)
		return; /* dp_conn_throttle(0) resumes it */
	s->flags &= (uint16_t)~DP_C_PAUSED;
	if (s->tls && !(s->flags & DP_C_CLOSING))
		dp_tls_resume(io, c); /* records decrypted or buffered before a pause */
	if (s->sp != DP_SP_OFF) {
		if (s->sp != DP_SP_ON || (s->flags & (DP_C_EOF | DP_C_CLOSING)))
			return;
		if (s->in_pipe > 0 && io->engine == DP_ENGINE_URING)
			arm_poll_out(io, c); /* the pipe first: see splice_in() */
		else
			arm_poll_in(io, c);
		return;
	}
	if (s->flags & (DP_C_RECV | DP_C_EOF | DP_C_NETEOF | DP_C_CLOSING | DP_C_STARVED))
		return;
	s->flags |= DP_C_RECV;
	if (io->engine == DP_ENGINE_EPOLL) {
		want_read(io, c);
		return;
	}
	sqe = sqe_for(io, c, DP_OP_RECV);
	io_uring_prep_recv_multishot(sqe, s->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = io->r.bgid;
}

void dp_conn_connect(struct dp_io *io, uint32_t c, const struct sockaddr *addr, socklen_t len)
{
	struct io_uring_sqe *sqe;

	if (io->engine == DP_ENGINE_EPOLL) {
		/* The result (SO_ERROR) is read when the socket turns writable,
		 * or at once when the connect finished or failed right away. */
		io->conns[c].flags |= DP_C_CONNECTING;
		io->conns[c].err = 0;
		if (connect(io->conns[c].fd, addr, len) == 0) {
			want_write(io, c);
		} else if (errno != EINPROGRESS) {
			io->conns[c].err = -errno;
			want_write(io, c);
		}
		return;
	}
	sqe = sqe_for(io, c, DP_OP_CONNECT);
	io_uring_prep_connect(sqe, io->conns[c].fd, addr, len);
}

void dp_conn_pair(struct dp_io *io, uint32_t a, uint32_t b)
{
	io->conns[a].peer = b;
	io->conns[b].peer = a;
}

/* Stop c's multishot recv: the cancel ends it with -ECANCELED. */
static void pause_recv(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe;

	if (s->flags & DP_C_PAUSED)
		return;
	s->flags |= DP_C_PAUSED;
	io->stats.paused++;
	if (io->engine == DP_ENGINE_EPOLL)
		s->flags &= (uint16_t)~DP_C_RECV; /* nothing in flight to cancel */
	if (!(s->flags & DP_C_RECV))
		return;
	sqe = sqe_for(io, c, DP_OP_CANCEL);
	io_uring_prep_cancel64(sqe, dp_ud(c, s->gen, DP_OP_RECV), 0);
}

void dp_conn_pause(struct dp_io *io, uint32_t c)
{
	pause_recv(io, c);
}

void dp_conn_throttle(struct dp_io *io, uint32_t c, int on)
{
	struct dp_conn *s = &io->conns[c];
	uint32_t p = s->peer;

	if (on) {
		pause_recv(io, c);
		s->flags |= DP_C_THROTTLE;
		return;
	}
	if (!(s->flags & DP_C_THROTTLE))
		return;
	s->flags &= (uint16_t)~DP_C_THROTTLE;
	/* Paused for the partner's full queue too? Then that queue resumes it. */
	if ((s->flags & DP_C_PAUSED) &&
	    (p == DP_NIL || io->conns[p].out_bytes <= io->pause_bytes / 2))
		dp_conn_recv(io, c);
}

static void kick_send(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if (s->flags & (DP_C_SENDING | DP_C_CLOSING))
		return;
	if (s->out.head == DP_NIL) {
		if ((s->flags & (DP_C_SHUT_WANT | DP_C_SHUT)) == DP_C_SHUT_WANT) {
			if (s->tls && dp_tls_close_notify(io, c))
				return; /* the FIN follows the alert */
			s->flags |= DP_C_SHUT;
			shutdown(s->fd, SHUT_WR);
			if (s->flags & DP_C_EOF)
				dp_conn_close(io, c);
		}
		return;
	}
	/* Both engines send at the end of the turn (the write queue, drained by
	 * ep_write or ur_write): what else this turn queues on c goes out in
	 * the same send. */
	s->flags |= DP_C_SENDING;
	want_write(io, c);
}

/* Point iov at c's queued bytes, DP_SENDV_SEGS segments at most; returns
 * how many and sets s->sending to their length. */
static int gather(struct dp_io *io, struct dp_conn *s, struct iovec *iov)
{
	int n = 0;

	s->sending = 0;
	for (uint32_t i = s->out.head; i != DP_NIL && n < DP_SENDV_SEGS; i = io->r.segs[i].next) {
		struct dp_seg *g = &io->r.segs[i];

		iov[n].iov_base = g->ptr + g->sent;
		iov[n].iov_len = g->len - g->sent;
		s->sending += g->len - g->sent;
		n++;
	}
	return n;
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
	v->mh.msg_iovlen = (size_t)gather(io, s, v->iov);
	io->r.stats.gathered++;
	sqe = sqe_for(io, c, DP_OP_SEND);
	io_uring_prep_sendmsg(sqe, s->fd, &v->mh, MSG_NOSIGNAL);
}

void dp_conn_kick(struct dp_io *io, uint32_t c)
{
	kick_send(io, c);
}

void dp_conn_queue_raw(struct dp_io *io, uint32_t c, uint32_t seg)
{
	struct dp_conn *s = &io->conns[c];

	if (s->flags & (DP_C_CLOSING | DP_C_SHUT)) {
		dp_seg_release(&io->r, seg);
		return;
	}
	dp_chain_push(&io->r, &s->out, seg);
	s->out_bytes += io->r.segs[seg].len;
	kick_send(io, c);
}

void dp_conn_send_seg(struct dp_io *io, uint32_t c, uint32_t seg)
{
	struct dp_conn *s = &io->conns[c];

	if (s->tls && !(s->flags & (DP_C_CLOSING | DP_C_SHUT)))
		dp_tls_send(io, c, seg);
	else
		dp_conn_queue_raw(io, c, seg);
}

int dp_conn_send(struct dp_io *io, uint32_t c, const void *p, uint32_t len)
{
	uint32_t seg = dp_seg_copy(&io->r, p, len);

	if (seg == DP_NIL)
		return -ENOMEM;
	dp_conn_send_seg(io, c, seg);
	return 0;
}

int dp_conn_send_msg(struct dp_io *io, uint32_t c, const struct pr_msg *m)
{
	char buf[PR_FRAME_HDR + PR_FRAME_MAX];
	int n = pr_encode(m, buf, sizeof(buf));

	return n < 0 ? n : dp_conn_send(io, c, buf, (uint32_t)n);
}

void dp_conn_shutdown(struct dp_io *io, uint32_t c)
{
	io->conns[c].flags |= DP_C_SHUT_WANT;
	kick_send(io, c);
}

void dp_conn_forward(struct dp_io *io, uint32_t src, uint32_t dst, uint32_t seg)
{
	dp_conn_send_seg(io, dst, seg);
	if (io->conns[dst].out_bytes > io->pause_bytes)
		pause_recv(io, src);
}

static void release_queue(struct dp_io *io, struct dp_conn *s)
{
	dp_chain_release(&io->r, &s->out);
	s->out_bytes = 0;
}

/* Unlink c from the starved list (rare: it ran dry and is now closing). */
static void unstarve(struct dp_io *io, uint32_t c)
{
	for (uint32_t *p = &io->starved; *p != DP_NIL; p = &io->conns[*p].link) {
		if (*p == c) {
			*p = io->conns[c].link;
			return;
		}
	}
}

/* Last step of closing: nothing is in flight any more. keep_fd: the socket
 * was exported and lives on elsewhere. */
static void release_slot(struct dp_io *io, uint32_t c, int keep_fd)
{
	struct dp_conn *s = &io->conns[c];

	if (s->flags & DP_C_STARVED)
		unstarve(io, c);
	if (io->ops->on_close)
		io->ops->on_close(io, c);
	if (s->peer != DP_NIL && io->conns[s->peer].peer == c)
		io->conns[s->peer].peer = DP_NIL;
	release_queue(io, s);
	if (s->tls) {
		dp_tls_conn_free(io, s->tls);
		s->tls = NULL;
	}
	if (!keep_fd)
		close(s->fd);
	if (s->pipe_r >= 0) {
		close(s->pipe_r);
		close(s->pipe_w);
		s->pipe_r = s->pipe_w = -1;
	}
	s->in_pipe = 0;
	s->sp = DP_SP_OFF;
	s->fd = -1;
	s->peer = DP_NIL;
	s->gen = (s->gen + 1) & 0xffffff;
	s->flags = 0;
	s->owner = NULL;
	s->link = io->free_head;
	io->free_head = c;
	io->live--;
	if (!keep_fd)
		io->stats.closed++;
}

static void free_slot(struct dp_io *io, uint32_t c)
{
	release_slot(io, c, 0);
}

int dp_conn_can_export(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	return !(s->flags & (DP_C_CLOSING | DP_C_SENDING)) && s->out.head == DP_NIL &&
	       (io->engine == DP_ENGINE_EPOLL || s->inflight == 0);
}

int dp_conn_export(struct dp_io *io, uint32_t c, struct dp_export *out)
{
	struct dp_conn *s = &io->conns[c];
	int err;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	if (!dp_conn_can_export(io, c))
		return -EBUSY;
	if (s->tls) {
		err = dp_tls_export(io, s->tls, &out->tls_in, &out->tls_in_len);
		if (err == -ENOMEM)
			dp_conn_close(io, c);
		if (err < 0)
			return err;
		out->tls = s->tls;
		s->tls = NULL;
	}
	if (io->engine == DP_ENGINE_EPOLL)
		epoll_ctl(io->epfd, EPOLL_CTL_DEL, s->fd, NULL);
	out->fd = s->fd;
	io->stats.exported++;
	release_slot(io, c, 1);
	return 0;
}

void dp_export_drop(struct dp_export *ex)
{
	if (ex->tls)
		dp_tls_conn_drop(ex->tls);
	free(ex->tls_in);
	if (ex->fd >= 0)
		close(ex->fd);
	memset(ex, 0, sizeof(*ex));
	ex->fd = -1;
}

uint32_t dp_conn_adopt(struct dp_io *io, struct dp_export *ex, uint8_t kind, void *owner)
{
	uint32_t c = dp_conn_new(io, ex->fd, kind, owner);

	ex->fd = -1; /* dp_conn_new took it, or closed it */
	if (c == DP_NIL) {
		dp_export_drop(ex);
		return DP_NIL;
	}
	io->stats.adopted++;
	if (ex->tls)
		dp_tls_adopt(io, c, ex->tls, ex->tls_in, ex->tls_in_len);
	else
		free(ex->tls_in);
	memset(ex, 0, sizeof(*ex));
	ex->fd = -1;
	return c;
}

/* ---- waking a worker from another thread ---- */

#define EVENT_SLOT 0xffffffu /* user_data slot of the eventfd: no socket has it */

static void arm_event(struct dp_io *io)
{
	struct io_uring_sqe *sqe = dp_ring_sqe(&io->r);

	io_uring_prep_poll_multishot(sqe, io->evfd, POLLIN);
	io_uring_sqe_set_data64(sqe, dp_ud(EVENT_SLOT, 0, DP_OP_EVENT));
}

int dp_io_wake_init(struct dp_io *io)
{
	io->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (io->evfd < 0)
		return -errno;
	if (io->engine == DP_ENGINE_EPOLL) {
		struct epoll_event ev = {.events = EPOLLIN | EPOLLET,
					 .data.u64 = dp_ud(EVENT_SLOT, 0, DP_OP_EVENT)};

		if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->evfd, &ev) < 0)
			return -errno;
		return 0;
	}
	arm_event(io);
	return 0;
}

void dp_io_wake(struct dp_io *io)
{
	uint64_t one = 1;

	/* EAGAIN means the counter is already non-zero: a wake is pending. */
	if (write(io->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		sl_warn("wake: %s", strerror(errno));
}

static void on_event(struct dp_io *io, int more)
{
	uint64_t n;

	if (read(io->evfd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		sl_warn("wake: %s", strerror(errno));
	if (!more && io->engine == DP_ENGINE_URING)
		arm_event(io);
	if (io->ops->on_wake)
		io->ops->on_wake(io);
}

void dp_conn_close(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe;

	if (s->flags & DP_C_CLOSING)
		return;
	s->flags |= DP_C_CLOSING;
	/* shutdown(2) completes a pending recv with 0 and fails a pending
	 * send, so the drain below is short; the cancel covers the rest. */
	shutdown(s->fd, SHUT_RDWR);
	if (s->inflight == 0 || io->engine == DP_ENGINE_EPOLL) {
		free_slot(io, c);
		return;
	}
	sqe = sqe_for(io, c, DP_OP_CANCEL);
	io_uring_prep_cancel_fd(sqe, s->fd, IORING_ASYNC_CANCEL_ALL);
	if (s->sp == DP_SP_OUT) { /* that poll is on the partner's socket */
		sqe = sqe_for(io, c, DP_OP_CANCEL);
		io_uring_prep_cancel64(sqe, dp_ud(c, s->gen, DP_OP_POLL_OUT), 0);
	}
}

/* Ask the owner what becomes of p now that its partner failed or ended. */
static int peer_lost(struct dp_io *io, uint32_t p, int eof)
{
	return io->ops->on_peer_lost && io->ops->on_peer_lost(io, p, eof);
}

/* c failed: it closes, and its partner follows unless the owner steps in. */
void dp_conn_fail(struct dp_io *io, uint32_t c)
{
	uint32_t p = io->conns[c].peer;

	dp_conn_close(io, c);
	if (p != DP_NIL && !(io->conns[p].flags & DP_C_CLOSING) && !peer_lost(io, p, 0))
		dp_conn_close(io, p);
}

static void splice_try_start(struct dp_io *io, uint32_t c);

/* Once c's queue is below half the pause mark, its feeder may read again. */
static void maybe_resume_feeder(struct dp_io *io, uint32_t c)
{
	uint32_t p = io->conns[c].peer;

	if (p != DP_NIL && io->conns[p].sp == DP_SP_WAIT && io->conns[c].out.head == DP_NIL)
		splice_try_start(io, p);
	if (p == DP_NIL || io->conns[c].out_bytes > io->pause_bytes / 2)
		return;
	if (io->conns[p].flags & DP_C_PAUSED) {
		io->stats.resumed++;
		dp_conn_recv(io, p);
	}
}

static void on_send(struct dp_io *io, uint32_t c, int res)
{
	struct dp_conn *s = &io->conns[c];
	struct dp_seg *g;

	s->flags &= (uint16_t)~DP_C_SENDING;
	if (s->flags & DP_C_CLOSING)
		return;
	if (res < 0) {
		io->stats.send_errors++;
		dp_conn_fail(io, c);
		return;
	}
	s->tx += (uint64_t)res;
	s->out_bytes -= (uint32_t)res;
	if ((uint32_t)res < s->sending)
		io->r.stats.short_sends++;
	/* Release what the send finished (a gathered send covers several
	 * segments; empty ones are finished too); stop at the first it did
	 * not. Bounded by the queue, which pause_bytes bounds. */
	for (uint32_t left = (uint32_t)res; s->out.head != DP_NIL;) {
		uint32_t take;

		g = &io->r.segs[s->out.head];
		take = g->len - g->sent < left ? g->len - g->sent : left;
		g->sent += take;
		left -= take;
		if (g->sent < g->len)
			break;
		dp_seg_release(&io->r, dp_chain_pop(&io->r, &s->out));
	}
	kick_send(io, c);
	maybe_resume_feeder(io, c);
}

/* EOF from the network on c (for TLS: the end of the plaintext). */
void dp_conn_deliver_eof(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	s->flags |= DP_C_EOF;
	if (s->peer == DP_NIL || (s->flags & DP_C_INTERCEPT)) {
		if (io->ops->on_eof)
			io->ops->on_eof(io, c);
		else
			dp_conn_close(io, c);
		return;
	}
	/* Half-close: pass the FIN on once everything before it is sent. */
	if (!peer_lost(io, s->peer, 1))
		dp_conn_shutdown(io, s->peer);
	if (s->flags & DP_C_SHUT)
		dp_conn_close(io, c);
}

void dp_conn_deliver(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len)
{
	struct dp_conn *s = &io->conns[c];

	if (s->peer != DP_NIL && !(s->flags & DP_C_INTERCEPT)) {
		if (io->ops->on_forwarded)
			io->ops->on_forwarded(io, c, len);
		dp_conn_forward(io, c, s->peer, seg);
	} else {
		io->ops->on_data(io, c, seg, len);
	}
}

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
			arm_poll_out(io, c);
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
static void splice_in(struct dp_io *io, uint32_t c)
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
				io->ops->on_forwarded(io, c, (uint32_t)n);
		} else if (n == 0) {
			s->flags |= DP_C_NETEOF;
		} else if (errno == EAGAIN) {
			if (io->engine == DP_ENGINE_EPOLL)
				s->flags &= (uint16_t)~DP_C_RREADY;
			arm_poll_in(io, c);
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
		arm_poll_out(io, c);
	else
		arm_poll_in(io, c);
}

/* Splicing starts once the receive in flight is gone and what c queued on
 * its partner has been sent, so bytes keep their order. */
static void splice_try_start(struct dp_io *io, uint32_t c)
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
	splice_in(io, c);
}

/* A read filled a whole buffer: bulk. A paired plain socket moves on to
 * splice(2), as HAProxy's splice-auto does. */
static void maybe_splice(struct dp_io *io, uint32_t c, uint32_t len)
{
	struct dp_conn *s = &io->conns[c];
	struct io_uring_sqe *sqe;
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
	 * waits for readiness on non-blocking sockets all the same. */
	if (io->engine == DP_ENGINE_URING) {
		fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
		fcntl(io->conns[s->peer].fd, F_SETFL,
		      fcntl(io->conns[s->peer].fd, F_GETFL) | O_NONBLOCK);
	}
	io->r.stats.splice_starts++;
	if (io->engine == DP_ENGINE_EPOLL) {
		s->flags &= (uint16_t)~DP_C_RECV;
	} else if (s->flags & DP_C_RECV) {
		sqe = sqe_for(io, c, DP_OP_CANCEL);
		io_uring_prep_cancel64(sqe, dp_ud(c, s->gen, DP_OP_RECV), 0);
	}
	splice_try_start(io, c);
}

/* The partner of c became writable (epoll) or drained its queue. */
static void splice_resume(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if (s->sp == DP_SP_WAIT) {
		splice_try_start(io, c);
	} else if (s->sp == DP_SP_OUT) {
		s->sp = DP_SP_ON;
		splice_in(io, c);
	}
}

/* A poll of the splice path completed. */
static void on_poll(struct dp_io *io, uint32_t c, int res)
{
	struct dp_conn *s = &io->conns[c];

	s->sp = DP_SP_ON;
	if (s->flags & DP_C_CLOSING)
		return;
	if (res < 0 && res != -ECANCELED) {
		dp_conn_fail(io, c);
		return;
	}
	splice_in(io, c);
}

/* A receive finished: res bytes in buffer bid, or EOF (0), or an error.
 * more: the receive goes on (io_uring multishot; always for epoll data). */
static void on_recv(struct dp_io *io, uint32_t c, int res, uint16_t bid, int more)
{
	struct dp_conn *s = &io->conns[c];
	uint32_t gen = s->gen;

	if (!more)
		s->flags &= (uint16_t)~DP_C_RECV;
	if (res > 0) {
		uint32_t seg = dp_seg_from_buf(&io->r, bid, 0, (uint32_t)res);

		s->rx += (uint64_t)res;
		if (s->flags & DP_C_CLOSING)
			dp_seg_release(&io->r, seg);
		else if (s->tls)
			dp_tls_on_cipher(io, c, seg);
		else {
			dp_conn_deliver(io, c, seg, (uint32_t)res);
			if (s->fd >= 0 && s->gen == gen)
				maybe_splice(io, c, (uint32_t)res);
		}
	} else if (res == 0) {
		if (s->flags & DP_C_CLOSING)
			return;
		s->flags |= DP_C_NETEOF;
		if (s->tls)
			dp_tls_on_eof(io, c); /* the plaintext may end later (paused) */
		else
			dp_conn_deliver_eof(io, c);
		return;
	} else if (res == -ENOBUFS) {
		io->r.stats.enobufs++;
		s->flags |= DP_C_STARVED;
		s->link = io->starved;
		io->starved = c;
		return;
	} else if (res != -ECANCELED && !(s->flags & DP_C_CLOSING)) {
		io->stats.recv_errors++;
		dp_conn_fail(io, c);
		return;
	}
	/* A multishot recv can end on its own (e.g. after a cancel that raced
	 * with a resume): arm again unless paused, ended, closing or freed. */
	if (s->fd < 0 || s->gen != gen)
		return;
	if (!more && s->sp == DP_SP_WAIT)
		splice_try_start(io, c); /* the cancelled receive is done */
	else if (!more && !(s->flags & (DP_C_PAUSED | DP_C_EOF | DP_C_NETEOF | DP_C_CLOSING)))
		dp_conn_recv(io, c);
}

static void on_accept_cqe(struct dp_io *io, uint32_t c, int res, uint32_t cflags)
{
	struct dp_conn *s = &io->conns[c];

	if (!(cflags & IORING_CQE_F_MORE)) {
		s->flags &= (uint16_t)~DP_C_RECV;
		if (!(s->flags & DP_C_CLOSING))
			dp_conn_accept(io, c);
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
		on_send(io, c, s->err);
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
		kick_send(io, c);
		return;
	}
	on_send(io, c, cqe->res);
}

static void dispatch(struct dp_io *io, struct io_uring_cqe *cqe)
{
	uint64_t ud = io_uring_cqe_get_data64(cqe);
	uint32_t c = dp_ud_slot(ud);
	enum dp_op op = dp_ud_op(ud);
	struct dp_conn *s;

	if (op == DP_OP_EVENT) {
		on_event(io, cqe->flags & IORING_CQE_F_MORE);
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
		on_recv(io, c, cqe->res, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT),
			cqe->flags & IORING_CQE_F_MORE);
		break;
	case DP_OP_SEND: on_send(io, c, cqe->res); break;
	case DP_OP_SEND_ZC: on_send_zc(io, c, cqe); break;
	case DP_OP_POLL_IN:
	case DP_OP_POLL_OUT: on_poll(io, c, cqe->res); break;
	case DP_OP_ACCEPT: on_accept_cqe(io, c, cqe->res, cqe->flags); break;
	case DP_OP_CONNECT:
		if (!(s->flags & DP_C_CLOSING))
			io->ops->on_connect(io, c, cqe->res);
		break;
	default: break;
	}
	if ((s->flags & DP_C_CLOSING) && s->inflight == 0 && s->fd >= 0)
		free_slot(io, c);
}

void dp_io_close_all(struct dp_io *io, int timeout_ms)
{
	uint64_t end = sl_mono_ms() + (uint64_t)timeout_ms;

	for (uint32_t i = 0; i < io->nconns; i++)
		if (io->conns[i].fd >= 0)
			dp_conn_close(io, i);
	while (io->live > 0 && sl_mono_ms() < end)
		dp_io_run_once(io, 10);
	for (uint32_t i = 0; i < io->nconns; i++)
		if (io->conns[i].fd >= 0)
			free_slot(io, i);
}

/* Buffers came back: let the sockets that ran dry receive again. */
static void rearm_starved(struct dp_io *io)
{
	while (io->starved != DP_NIL && io->r.bufs_out < io->r.nbufs / 2) {
		uint32_t c = io->starved;
		struct dp_conn *s = &io->conns[c];

		io->starved = s->link;
		s->link = DP_NIL;
		s->flags &= (uint16_t)~DP_C_STARVED;
		if (!(s->flags & DP_C_PAUSED))
			dp_conn_recv(io, c);
	}
}

/* ---- epoll engine: doing the work the queues hold ---- */

static int live(struct dp_io *io, uint64_t ud)
{
	struct dp_conn *s = &io->conns[dp_ud_slot(ud)];

	return s->fd >= 0 && s->gen == dp_ud_gen(ud) && !(s->flags & DP_C_CLOSING);
}

#define EP_ACCEPT_BATCH 64 /* accepts per turn of a listener: fairness with traffic */

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
		if (!live(io, dp_ud(c, io->conns[c].gen, DP_OP_NONE)))
			return;
	}
	want_read(io, c); /* more may wait: next turn */
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
			splice_in(io, c);
		return;
	}
	if ((bid = dp_buf_take(&io->r)) < 0) {
		io->r.stats.enobufs++; /* the same fallback as io_uring's ENOBUFS */
		s->flags &= (uint16_t)~DP_C_RECV;
		s->flags |= DP_C_STARVED;
		s->link = io->starved;
		io->starved = c;
		return;
	}
	n = recv(s->fd, dp_buf_ptr(&io->r, (uint16_t)bid), io->r.bufsize, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
		io->stats.eagain++;
		io->r.free_bids[io->r.nfree++] = (uint16_t)bid;
		if (errno == EAGAIN)
			s->flags &= (uint16_t)~DP_C_RREADY;
		else
			want_read(io, c);
		return;
	}
	if (n <= 0) {
		io->r.free_bids[io->r.nfree++] = (uint16_t)bid;
		on_recv(io, c, n == 0 ? 0 : -errno, 0, 0);
		return;
	}
	on_recv(io, c, (int)n, (uint16_t)bid, 1);
	if (s->fd >= 0 && s->gen == gen)
		want_read(io, c); /* edge-triggered: read until EAGAIN, a buffer per turn */
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

		mh.msg_iovlen = (size_t)gather(io, s, iov);
		n = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n >= 0)
			io->r.stats.gathered++;
	}
	if (n < 0 && errno == EAGAIN) {
		io->stats.eagain++;
		return; /* still SENDING; EPOLLOUT brings it back */
	}
	on_send(io, c, n < 0 ? -errno : (int)n);
}

/* Drain a queue; entries pushed meanwhile wait for the next turn (fairness). */
static void drain_queue(struct dp_io *io, struct dp_queue *q, uint16_t flag,
			void (*fn)(struct dp_io *, uint32_t))
{
	uint32_t n = q->len;
	uint64_t *v = q->v;

	q->v = NULL;
	q->len = q->cap = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t c = dp_ud_slot(v[i]);

		if (!live(io, v[i]))
			continue;
		io->conns[c].flags &= (uint16_t)~flag;
		fn(io, c);
	}
	free(v);
}

static void ep_event(struct dp_io *io, const struct epoll_event *ev)
{
	uint32_t c = dp_ud_slot(ev->data.u64);
	struct dp_conn *s;

	if (dp_ud_op(ev->data.u64) == DP_OP_EVENT) {
		on_event(io, 1);
		return;
	}
	s = &io->conns[c];
	if (!live(io, ev->data.u64))
		return;
	if (ev->events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		s->flags |= DP_C_RREADY;
		if ((s->flags & (DP_C_RECV | DP_C_PAUSED)) == DP_C_RECV)
			want_read(io, c);
	}
	if ((ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) &&
	    (s->flags & (DP_C_SENDING | DP_C_CONNECTING)))
		want_write(io, c);
	if ((ev->events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && s->peer != DP_NIL &&
	    io->conns[s->peer].sp == DP_SP_OUT)
		splice_resume(io, s->peer);
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
	drain_queue(io, &io->wq, DP_C_QUEUED_W, ep_write);
	drain_queue(io, &io->rq, DP_C_QUEUED_R, ep_read);
	dp_tls_run_deferred(io);
	rearm_starved(io);
	return 0;
}

int dp_io_run_once(struct dp_io *io, int timeout_ms)
{
	struct __kernel_timespec ts = {timeout_ms / 1000, (long long)(timeout_ms % 1000) * 1000000};
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int err;

	if (io->engine == DP_ENGINE_EPOLL)
		return ep_run_once(io, timeout_ms);

	drain_queue(io, &io->wq, DP_C_QUEUED_W, ur_write);
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
	rearm_starved(io);
	return 0;
}
