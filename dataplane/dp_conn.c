/*
 * dp_conn.c: the connection core (see dp_conn.h for the model: pairs, one
 * send in flight per socket, pause above pause_bytes): the slot table,
 * receiving, pausing, delivering bytes to the partner or the owner, and
 * closing. What an engine does is behind io->be (dp_conn_int.h).
 */
#include "dp_conn_int.h"
#include "sl_buf.h"
#include "sl_time.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	io->engine = engine;
	io->be = engine == DP_ENGINE_EPOLL ? &dp_epoll_backend : &dp_uring_backend;
	io->epfd = -1;
	io->evfd = -1;
	/* Heap segments: a few per connection at most (heads, frames, errors). */
	err = dp_ring_init(&io->r, 4096, nbufs, bufsize, max_conns * 2 + 64,
			   engine == DP_ENGINE_EPOLL ? DP_RING_F_NOURING : 0);
	if (err < 0) {
		free(io->conns);
		return err;
	}
	io->ops = ops;
	io->owner = owner;
	io->pause_bytes = 4 * bufsize;
	io->starved = DP_NIL;
	if ((err = io->be->init(io, max_conns)) < 0) {
		dp_io_free(io);
		return err;
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
	io->be->add(io, c);
	return c;
}

void dp_queue_push(struct dp_queue *q, uint64_t ud)
{
	/* A few KiB at most per thousand sockets: out of memory here is fatal. */
	if (sl_array_grow((void **)&q->v, &q->cap, q->len + 1, sizeof(*q->v), 256) < 0)
		abort();
	q->v[q->len++] = ud;
}

void dp_conn_accept(struct dp_io *io, uint32_t c)
{
	io->conns[c].flags |= DP_C_LISTENER | DP_C_RECV;
	io->be->accept(io, c);
}

void dp_conn_recv(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if (s->flags & DP_C_THROTTLE)
		return; /* dp_conn_throttle(0) resumes it */
	s->flags &= (uint16_t)~DP_C_PAUSED;
	if (s->tls && !(s->flags & DP_C_CLOSING))
		dp_tls_resume(io, c); /* records decrypted or buffered before a pause */
	if (s->sp != DP_SP_OFF) {
		if (s->sp != DP_SP_ON || (s->flags & (DP_C_EOF | DP_C_CLOSING)))
			return;
		if (s->in_pipe > 0 && io->engine == DP_ENGINE_URING)
			io->be->poll_out(io, c); /* the pipe first: see dp_splice_in() */
		else
			io->be->poll_in(io, c);
		return;
	}
	if (s->flags & (DP_C_RECV | DP_C_EOF | DP_C_NETEOF | DP_C_CLOSING | DP_C_STARVED))
		return;
	s->flags |= DP_C_RECV;
	io->be->recv(io, c);
}

void dp_conn_connect(struct dp_io *io, uint32_t c, const struct sockaddr *addr, socklen_t len)
{
	io->be->connect(io, c, addr, len);
}

void dp_conn_pair(struct dp_io *io, uint32_t a, uint32_t b)
{
	io->conns[a].peer = b;
	io->conns[b].peer = a;
}

/* Stop c's receive until dp_conn_recv (io_uring: the cancel ends the
 * multishot receive with -ECANCELED). */
void dp_conn_pause_recv(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if (s->flags & DP_C_PAUSED)
		return;
	s->flags |= DP_C_PAUSED;
	io->stats.paused++;
	if (s->flags & DP_C_RECV)
		io->be->cancel_recv(io, c);
}

void dp_conn_pause(struct dp_io *io, uint32_t c)
{
	dp_conn_pause_recv(io, c);
}

void dp_conn_throttle(struct dp_io *io, uint32_t c, int on)
{
	struct dp_conn *s = &io->conns[c];
	uint32_t p = s->peer;

	if (on) {
		dp_conn_pause_recv(io, c);
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

void dp_conn_starve(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	s->flags |= DP_C_STARVED;
	s->link = io->starved;
	io->starved = c;
}

/* Last step of closing: nothing is in flight any more. keep_fd: the socket
 * was exported and lives on elsewhere. */
void dp_conn_release_slot(struct dp_io *io, uint32_t c, int keep_fd)
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

void dp_conn_free_slot(struct dp_io *io, uint32_t c)
{
	dp_conn_release_slot(io, c, 0);
}

void dp_conn_close(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if (s->flags & DP_C_CLOSING)
		return;
	s->flags |= DP_C_CLOSING;
	/* shutdown(2) completes a pending recv with 0 and fails a pending
	 * send, so the drain below is short; the cancel covers the rest. */
	shutdown(s->fd, SHUT_RDWR);
	if (s->inflight == 0) { /* always so on epoll: nothing is ever in flight */
		dp_conn_free_slot(io, c);
		return;
	}
	io->be->cancel_all(io, c);
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
		if (io->ops->on_forwarded &&
		    (seg = io->ops->on_forwarded(io, c, seg, len)) == DP_NIL) {
			dp_conn_fail(io, c);
			return;
		}
		dp_conn_forward(io, c, s->peer, seg);
	} else {
		io->ops->on_data(io, c, seg, len);
	}
}

void dp_conn_on_recv(struct dp_io *io, uint32_t c, int res, uint16_t bid, int more)
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
				dp_splice_maybe(io, c, (uint32_t)res);
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
		dp_conn_starve(io, c);
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
		dp_splice_try_start(io, c); /* the cancelled receive is done */
	else if (!more && !(s->flags & (DP_C_PAUSED | DP_C_EOF | DP_C_NETEOF | DP_C_CLOSING)))
		dp_conn_recv(io, c);
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
			dp_conn_free_slot(io, i);
}

void dp_io_rearm_starved(struct dp_io *io)
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

void dp_io_drain_queue(struct dp_io *io, struct dp_queue *q, uint16_t flag,
		       void (*fn)(struct dp_io *, uint32_t))
{
	uint32_t n = q->len;
	uint64_t *v = q->v;

	q->v = NULL;
	q->len = q->cap = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t c = dp_ud_slot(v[i]);

		if (!dp_ud_live(io, v[i]))
			continue;
		io->conns[c].flags &= (uint16_t)~flag;
		fn(io, c);
	}
	free(v);
}

int dp_io_run_once(struct dp_io *io, int timeout_ms)
{
	return io->be->run_once(io, timeout_ms);
}
