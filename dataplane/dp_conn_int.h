/*
 * dp_conn_int.h: what the engine's files share and its users never see.
 *
 * The engine is split the way Redis splits ae.c from ae_epoll.c: the
 * connection core (dp_conn.c: slots, receiving, closing, delivery), the
 * send path (dp_send.c), splice(2) (dp_splice.c), moving sockets between
 * workers (dp_export.c), the cross-thread wake (dp_wake.c), and two
 * backends that arm a socket's operations and run one turn of the loop:
 * io_uring (dp_uring.c) and epoll (dp_epoll.c). The core calls a backend
 * only through struct dp_backend.
 */
#ifndef DP_CONN_INT_H
#define DP_CONN_INT_H

#include "dp_conn.h"

#include <sys/socket.h>

#define DP_CQE_BATCH  256	/* events handled per wait: fairness with timers */
#define DP_EVENT_SLOT 0xffffffu /* user_data slot of the eventfd: no socket has it */

/*
 * A backend. Ownership: static tables; io->be points at one for the
 * worker's life. Every operation is for a live slot c.
 */
struct dp_backend {
	/* Set up what the backend needs beyond the ring (epoll's fd, io_uring's
	 * per-slot send vectors): 0 or a negative errno. */
	int (*init)(struct dp_io *io, uint32_t max_conns);
	/* A new slot's socket (epoll registers it once, edge-triggered). */
	void (*add)(struct dp_io *io, uint32_t c);
	/* c's socket leaves this worker (exported). */
	void (*del)(struct dp_io *io, uint32_t c);
	void (*accept)(struct dp_io *io, uint32_t c); /* listen on c */
	void (*recv)(struct dp_io *io, uint32_t c);   /* DP_C_RECV is set: arm the receive */
	/* Stop c's receive: DP_C_RECV clears now (epoll) or when the cancelled
	 * receive completes (io_uring). */
	void (*cancel_recv)(struct dp_io *io, uint32_t c);
	/* c is closing with operations in flight: cancel them all. */
	void (*cancel_all)(struct dp_io *io, uint32_t c);
	void (*connect)(struct dp_io *io, uint32_t c, const struct sockaddr *addr, socklen_t len);
	/* splice: wait for c to be readable; for c's partner to be writable. */
	void (*poll_in)(struct dp_io *io, uint32_t c);
	void (*poll_out)(struct dp_io *io, uint32_t c);
	/* The eventfd's wait (again, once a multishot one ended). */
	int (*arm_wake)(struct dp_io *io);
	/* One turn: wait up to timeout_ms, handle what came, send what was
	 * queued (the write queue): 0 or a negative errno. */
	int (*run_once)(struct dp_io *io, int timeout_ms);
};

extern const struct dp_backend dp_uring_backend, dp_epoll_backend;

/* c has something to send at the end of the turn (both backends drain the
 * write queue then, so one send carries what the turn queued). */
static inline void dp_want_write(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if (!(s->flags & DP_C_QUEUED_W)) {
		s->flags |= DP_C_QUEUED_W;
		dp_queue_push(&io->wq, dp_ud(c, s->gen, DP_OP_SEND));
	}
}

/* epoll: c is to be read this turn, if it is readable. */
static inline void dp_want_read(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	if ((s->flags & (DP_C_RREADY | DP_C_QUEUED_R)) == DP_C_RREADY) {
		s->flags |= DP_C_QUEUED_R;
		dp_queue_push(&io->rq, dp_ud(c, s->gen, DP_OP_RECV));
	}
}

/* 1 when user data ud still names a live slot of its generation. */
static inline int dp_ud_live(struct dp_io *io, uint64_t ud)
{
	struct dp_conn *s = &io->conns[dp_ud_slot(ud)];

	return s->fd >= 0 && s->gen == dp_ud_gen(ud) && !(s->flags & DP_C_CLOSING);
}

/* dp_conn.c */
/* A receive finished: res bytes in buffer bid, or EOF (0), or an error.
 * more: the receive goes on (io_uring multishot; always for epoll data). */
void dp_conn_on_recv(struct dp_io *io, uint32_t c, int res, uint16_t bid, int more);
void dp_conn_pause_recv(struct dp_io *io, uint32_t c);
/* Last step of closing: nothing is in flight any more. */
void dp_conn_free_slot(struct dp_io *io, uint32_t c);
/* The slot's state freed; keep_fd: the socket lives on elsewhere (export). */
void dp_conn_release_slot(struct dp_io *io, uint32_t c, int keep_fd);
/* c ran out of receive buffers: it waits on the starved list. */
void dp_conn_starve(struct dp_io *io, uint32_t c);
/* Buffers came back: the sockets that ran dry receive again. */
void dp_io_rearm_starved(struct dp_io *io);
/* Run fn on every live entry of q taken now, clearing flag on each;
 * entries pushed meanwhile wait for the next turn (fairness). */
void dp_io_drain_queue(struct dp_io *io, struct dp_queue *q, uint16_t flag,
		       void (*fn)(struct dp_io *, uint32_t));

/* dp_send.c */
/* Start sending what c has queued (or its FIN), at the end of the turn. */
void dp_send_kick(struct dp_io *io, uint32_t c);
/* Point iov at c's queued bytes, DP_SENDV_SEGS segments at most: how
 * many, with s->sending set to their length. */
int dp_send_gather(struct dp_io *io, struct dp_conn *s, struct iovec *iov);
/* The send of c completed with res (bytes, or a negative errno). */
void dp_send_done(struct dp_io *io, uint32_t c, int res);

/* dp_splice.c */
/* A read of len bytes filled a whole buffer: a paired plain socket may
 * move on to splice(2). */
void dp_splice_maybe(struct dp_io *io, uint32_t c, uint32_t len);
/* c is readable (or may be): move what it has to its partner. */
void dp_splice_in(struct dp_io *io, uint32_t c);
/* Splicing starts once c's receive and its partner's queue are done. */
void dp_splice_try_start(struct dp_io *io, uint32_t c);
/* The partner of c became writable (epoll) or drained its queue. */
void dp_splice_resume(struct dp_io *io, uint32_t c);
/* io_uring: a poll of the splice path completed with res. */
void dp_splice_on_poll(struct dp_io *io, uint32_t c, int res);

/* dp_wake.c */
/* The eventfd fired; more: its multishot wait goes on. */
void dp_wake_on_event(struct dp_io *io, int more);

#endif
