/*
 * dp_send.c: the send path. Bytes queued on a socket (dp_conn.out) go at
 * the end of the loop's turn, one send in flight per socket, carrying up to
 * DP_SENDV_SEGS segments; a short send is sent again for the rest, and a
 * queue that drains below half the pause mark lets its feeder read again.
 */
#include "dp_conn_int.h"
#include "pr_msg.h"

#include <errno.h>
#include <sys/socket.h>

void dp_send_kick(struct dp_io *io, uint32_t c)
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
	 * dp_epoll.c or dp_uring.c): what else this turn queues on c goes out in
	 * the same send. */
	s->flags |= DP_C_SENDING;
	dp_want_write(io, c);
}

int dp_send_gather(struct dp_io *io, struct dp_conn *s, struct iovec *iov)
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

void dp_conn_kick(struct dp_io *io, uint32_t c)
{
	dp_send_kick(io, c);
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
	dp_send_kick(io, c);
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
	dp_send_kick(io, c);
}

void dp_conn_forward(struct dp_io *io, uint32_t src, uint32_t dst, uint32_t seg)
{
	dp_conn_send_seg(io, dst, seg);
	if (io->conns[dst].out_bytes > io->pause_bytes)
		dp_conn_pause_recv(io, src);
}

/* Once c's queue is below half the pause mark, its feeder may read again. */
static void maybe_resume_feeder(struct dp_io *io, uint32_t c)
{
	uint32_t p = io->conns[c].peer;

	if (p != DP_NIL && io->conns[p].sp == DP_SP_WAIT && io->conns[c].out.head == DP_NIL)
		dp_splice_try_start(io, p);
	if (p == DP_NIL || io->conns[c].out_bytes > io->pause_bytes / 2)
		return;
	if (io->conns[p].flags & DP_C_PAUSED) {
		io->stats.resumed++;
		dp_conn_recv(io, p);
	}
}

void dp_send_done(struct dp_io *io, uint32_t c, int res)
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
	dp_send_kick(io, c);
	maybe_resume_feeder(io, c);
}
