/*
 * dp_conn.h: sockets on a worker's ring and the byte pump between them
 * (the engine: dp_conn.c, dp_send.c, dp_splice.c, dp_export.c, dp_wake.c,
 * and the backends dp_uring.c and dp_epoll.c; see dp_conn_int.h).
 *
 * Every socket a worker owns is a slot in one table; user_data carries the
 * slot and its generation so a completion for a slot that was freed and
 * reused is recognised and ignored. Two sockets can be paired: what one
 * receives is queued, without copying, on the other's output queue and sent
 * from the buffer it arrived in. One send is in flight per socket (so per
 * direction of a pair), made at the end of the loop's turn so that it
 * carries everything queued by then (up to DP_SENDV_SEGS segments); a short
 * send is resubmitted for the rest; when an
 * output queue holds more than pause_bytes, the socket feeding it stops
 * receiving until the queue drains below half that, so a slow reader slows
 * its writer and memory stays bounded.
 *
 * Closing is: shutdown(2) both ways (pending receives complete), cancel
 * whatever is still in flight, drain the completions, close(2), then free
 * the slot (on_close tells the owner first).
 */
#ifndef DP_CONN_H
#define DP_CONN_H

#include "dp_ring.h"
#include "dp_tls.h"

#include <stdint.h>
#include <sys/socket.h>

/* Socket state bits (dp_conn.flags). */
#define DP_C_RECV	0x0001 /* a multishot recv is armed */
#define DP_C_SENDING	0x0002 /* a send is in flight, or queued for the end of the turn */
#define DP_C_EOF	0x0004 /* the peer host sent FIN: nothing more to read */
#define DP_C_SHUT	0x0008 /* we sent FIN (shutdown SHUT_WR) */
#define DP_C_CLOSING	0x0010 /* closing: completions are drained, then the slot is freed */
#define DP_C_PAUSED	0x0020 /* receiving stopped: the peer's queue is full */
#define DP_C_STARVED	0x0040 /* receiving stopped: the buffer ring ran dry */
#define DP_C_INTERCEPT	0x0080 /* received bytes go to the owner even when paired */
#define DP_C_LISTENER	0x0100
#define DP_C_SHUT_WANT	0x0200 /* send FIN once the output queue is empty */
#define DP_C_RREADY	0x0400 /* epoll: readable since the last EAGAIN */
#define DP_C_CONNECTING 0x0800 /* epoll: a connect is in progress */
#define DP_C_QUEUED_R	0x1000 /* epoll: in the read queue */
#define DP_C_QUEUED_W	0x2000 /* in the write queue: its send goes at the end of the turn */
#define DP_C_THROTTLE	0x8000 /* receiving stopped by the owner (a rate limit) until unthrottled */
#define DP_C_NETEOF                                                                                \
	0x4000 /* the network sent FIN (TLS: plaintext may still be pending, so                    \
		* DP_C_EOF waits until it is delivered) */

/* I/O engines: io_uring (completions, provided buffers) or epoll
 * (readiness, the same buffers from a stack): the baseline that shows what
 * io_uring earns. Everything above the engine is shared. */
enum dp_engine {
	DP_ENGINE_URING = 0,
	DP_ENGINE_EPOLL = 1,
};

/*
 * Ownership: slots live in dp_io.conns for the worker's lifetime; a slot's
 * fd and queued segments belong to it until the slot is freed. owner points
 * at the owner's state (tunnel, HTTP parser), which on_close releases.
 */
struct dp_conn {
	int fd;
	uint32_t gen;
	uint16_t flags;
	uint8_t kind;	     /* owner-defined role */
	uint8_t inflight;    /* SQEs in flight; the slot is freed only at 0 */
	uint32_t peer;	     /* paired slot, or DP_NIL */
	struct dp_chain out; /* output queue */
	uint32_t out_bytes;
	uint32_t sending; /* bytes asked of the send in flight (a short send sends fewer) */
	uint32_t link;	  /* the engine's free or starved list */
	uint32_t olink;	  /* the owner's lists (idle data connections, waiters) */
	void *owner;
	uint64_t rx, tx;	 /* bytes received and sent */
	int err;		 /* epoll: a connect that failed at once */
	struct dp_tls_conn *tls; /* NULL for plain sockets */
	/* splice(2) (io->splice): a paired plain socket whose read filled a
	 * buffer moves on to socket -> pipe -> partner, once what it queued
	 * before has gone (order). in_pipe bytes wait in the pipe. */
	int pipe_r, pipe_w;
	uint32_t in_pipe;
	uint8_t sp; /* DP_SP_* */
};

enum {
	DP_SP_OFF = 0, /* copying through buffers */
	DP_SP_WAIT, /* switching: the receive is being cancelled, or the partner's queue drains */
	DP_SP_ON,   /* splicing, nothing armed */
	DP_SP_IN,   /* splicing, waiting for input (io_uring: a poll is armed) */
	DP_SP_OUT,  /* the pipe holds bytes: waiting for the partner to be writable */
};

struct dp_io;
struct dp_backend;

#define DP_SENDV_SEGS 8 /* segments gathered into one send at most */

/* Ownership: one per slot in dp_io.sendv, the worker's; it stays put while its SQE is in flight. */
struct dp_sendv {
	struct msghdr mh;
	struct iovec iov[DP_SENDV_SEGS];
};

/* What the owner of a worker is told; every callback is optional except on_data. */
struct dp_io_ops {
	/* Bytes for an unpaired or intercepting socket: the owner must release
	 * or enqueue segment seg (len bytes). */
	void (*on_data)(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len);
	/* EOF on an unpaired or intercepting socket. */
	void (*on_eof)(struct dp_io *io, uint32_t c);
	void (*on_accept)(struct dp_io *io, uint32_t listener, int fd);
	void (*on_connect)(struct dp_io *io, uint32_t c, int res);
	/* The slot is about to be freed: drop references to it. */
	void (*on_close)(struct dp_io *io, uint32_t c);
	/* c's pair partner failed (eof 0) or sent FIN (eof 1). Return 1 when
	 * the owner dealt with c (it has been unpaired), 0 for the default:
	 * close c on failure, pass the FIN on at EOF. */
	int (*on_peer_lost)(struct dp_io *io, uint32_t c, int eof);
	/* Optional: c received segment seg of len bytes, on its way to its
	 * partner (for the owner's accounting, e.g. time to first response
	 * byte). Returns the segment to forward: seg, or one the owner made in
	 * its place (seg released), or DP_NIL to fail c (out of memory). seg
	 * is DP_NIL for bytes that went by splice(2): nothing to change. */
	uint32_t (*on_forwarded)(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len);
	/* Optional: dp_io_wake() was called (from any thread). */
	void (*on_wake)(struct dp_io *io);
};

/* Ownership: a value in dp_io. */
struct dp_io_stats {
	uint64_t accepted, closed, paused, resumed, recv_errors, send_errors;
	uint64_t eagain;	    /* epoll: reads or sends that found nothing to do */
	uint64_t exported, adopted; /* sockets moved to and from other workers */
};

/* Sockets with work to do, as (slot, generation) user data: the engine's
 * read and write queues, and the relay's own (moving, throttled, parked).
 * Ownership: v is the queue's, grown by dp_queue_push, freed by its owner. */
struct dp_queue {
	uint64_t *v;
	uint32_t len;
	size_t cap;
};

/* One per worker; ownership as for dp_ring. */
struct dp_io {
	struct dp_ring r;
	struct dp_conn *conns;
	uint32_t nconns, live, free_head;
	uint32_t pause_bytes;
	uint32_t starved; /* sockets waiting for ring buffers */
	const struct dp_io_ops *ops;
	void *owner;
	struct dp_io_stats stats;
	enum dp_engine engine;
	const struct dp_backend *be; /* what the engine does (dp_conn_int.h) */
	int epfd;		     /* DP_ENGINE_EPOLL */
	struct dp_queue rq, wq;	     /* DP_ENGINE_EPOLL: to read, to write or connect */
	struct dp_queue tlsq;	     /* TLS sockets with work for the next turn */
	int evfd;		     /* eventfd other threads wake this worker with, or -1 */
	uint32_t zc_min; /* io_uring: sends of at least this many bytes use SEND_ZC; 0: never */
	int splice;	 /* bulk transfers between plain sockets use splice(2) */
	uint64_t now_ns; /* CLOCK_MONOTONIC as this turn's events came in: one read per turn */
	/* io_uring: each slot's gathered send, one per slot (one send in flight
	 * per connection): it stays put until the kernel has taken the SQE,
	 * however late a partial submission makes that. */
	struct dp_sendv *sendv;
	struct dp_tls_stats tls;
};

int dp_io_init(struct dp_io *io, uint32_t max_conns, uint32_t nbufs, uint32_t bufsize,
	       const struct dp_io_ops *ops, void *owner, enum dp_engine engine);
void dp_io_free(struct dp_io *io);

/* Wait up to timeout_ms for completions and handle them. Returns 0 or -errno. */
int dp_io_run_once(struct dp_io *io, int timeout_ms);

/* Take ownership of fd in a new slot; returns the slot or DP_NIL (closes fd). */
uint32_t dp_conn_new(struct dp_io *io, int fd, uint8_t kind, void *owner);

/* Listen: multishot accept on slot c. */
void dp_conn_accept(struct dp_io *io, uint32_t c);
/* Stop receiving on c until dp_conn_recv(). */
void dp_conn_pause(struct dp_io *io, uint32_t c);
/* Start (or resume) receiving on c; nothing while c is throttled. */
void dp_conn_recv(struct dp_io *io, uint32_t c);
/* Stop (on 1) or allow again (on 0) receiving on c for the owner's own
 * reasons, whatever the flow control between partners says meanwhile:
 * receiving resumes at 0 unless the partner's queue is still full. */
void dp_conn_throttle(struct dp_io *io, uint32_t c, int on);
/* Connect c's socket to addr; on_connect gets the result. */
void dp_conn_connect(struct dp_io *io, uint32_t c, const struct sockaddr *addr, socklen_t len);

/* Pair a and b: each forwards what it receives to the other. */
void dp_conn_pair(struct dp_io *io, uint32_t a, uint32_t b);

/* Queue segment seg for sending on c (c takes ownership) and start sending. */
void dp_conn_send_seg(struct dp_io *io, uint32_t c, uint32_t seg);
/* Queue a copy of p[0..len) on c. Returns 0 or -ENOMEM. */
int dp_conn_send(struct dp_io *io, uint32_t c, const void *p, uint32_t len);
struct pr_msg;
/* Queue control message m on c as one frame (proto/pr_msg.h). Returns 0 or
 * a negative errno (encoding or memory). */
int dp_conn_send_msg(struct dp_io *io, uint32_t c, const struct pr_msg *m);

/* Send FIN on c once its queue is empty. */
void dp_conn_shutdown(struct dp_io *io, uint32_t c);

/* Forward segment seg received on src to dst, pausing src if dst is full. */
void dp_conn_forward(struct dp_io *io, uint32_t src, uint32_t dst, uint32_t seg);

/*
 * Close every socket and reap the completions for up to timeout_ms; slots
 * still busy after that are freed anyway (their owners' on_close runs), as
 * at exit nothing will reuse them. Owners' state is thus always released.
 */
void dp_io_close_all(struct dp_io *io, int timeout_ms);

/*
 * Moving a socket to another worker (another ring): a socket may leave once
 * nothing of it is in flight here and its output queue is empty; the owner
 * stops its receive (dp_conn_pause) and waits for dp_conn_can_export().
 * dp_conn_export() frees the slot (on_close runs) but keeps the fd open,
 * and hands over the TLS state with the ciphertext not yet decrypted.
 *
 * Ownership: the export owns fd, tls and tls_in until dp_conn_adopt() (or
 * dp_export_drop()) takes them.
 */
struct dp_export {
	int fd;
	struct dp_tls_conn *tls;
	char *tls_in; /* malloc'd ciphertext, tls_in_len bytes */
	uint32_t tls_in_len;
};

int dp_conn_can_export(struct dp_io *io, uint32_t c);
/* Returns 0, or -EBUSY (not yet exportable) or -ENOMEM (c is then closed). */
int dp_conn_export(struct dp_io *io, uint32_t c, struct dp_export *out);
/* A slot on this worker for an exported socket; DP_NIL when full (the
 * export is then dropped: socket closed, TLS freed). */
uint32_t dp_conn_adopt(struct dp_io *io, struct dp_export *ex, uint8_t kind, void *owner);
/* Close and free what an export holds (it was never adopted). */
void dp_export_drop(struct dp_export *ex);

/* Make this worker wakeable from other threads (on_wake). Returns 0 or -errno. */
int dp_io_wake_init(struct dp_io *io);
/* From any thread: have the worker's loop call on_wake soon. */
void dp_io_wake(struct dp_io *io);

/* Close c now (pending output is dropped). */
void dp_conn_close(struct dp_io *io, uint32_t c);

/* ---- for the TLS layer (dp_tls.c): the pump below and above it ---- */
/* Plaintext segment seg (len bytes) received on c: forward or hand over. */
void dp_conn_deliver(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len);
/* The end of c's plaintext stream. */
void dp_conn_deliver_eof(struct dp_io *io, uint32_t c);
/* Queue seg on c's socket as is (ciphertext). */
void dp_conn_queue_raw(struct dp_io *io, uint32_t c, uint32_t seg);
/* Start sending whatever c has queued (or its FIN). */
void dp_conn_kick(struct dp_io *io, uint32_t c);
/* c failed: close it, and its partner unless the owner steps in. */
void dp_conn_fail(struct dp_io *io, uint32_t c);
void dp_queue_push(struct dp_queue *q, uint64_t ud);

static inline struct dp_conn *dp_c(struct dp_io *io, uint32_t c)
{
	return &io->conns[c];
}

#endif
