/*
 * dp_ring.h: one io_uring per worker, its provided-buffer ring, and the
 * segment table that queues bytes between sockets without copying them.
 *
 * A segment is a run of bytes waiting to be sent: either part of a ring
 * buffer (index < nbufs: the bytes stay where the kernel received them and
 * leave from there) or a heap chunk (index >= nbufs: rewritten HTTP heads,
 * protocol frames, error responses). Segments chain into per-socket output
 * queues through their next field, so queues cost no memory of their own.
 */
#ifndef DP_RING_H
#define DP_RING_H

#include <liburing.h>
#include <stdint.h>

#define DP_NIL UINT32_MAX

/* user_data layout: slot index (24 bits), generation (24), op (8), spare (8). */
enum dp_op {
	DP_OP_NONE = 0,
	DP_OP_ACCEPT, /* multishot accept on a listener */
	DP_OP_RECV,   /* multishot recv with buffer select */
	DP_OP_SEND,
	DP_OP_CONNECT,
	DP_OP_CANCEL,	/* result ignored */
	DP_OP_EVENT,	/* the worker's eventfd: another thread has work for it */
	DP_OP_SEND_ZC,	/* a zero-copy send: a result, then a notification */
	DP_OP_POLL_IN,	/* splice: the socket is readable */
	DP_OP_POLL_OUT, /* splice: the partner's socket is writable (on the source's slot) */
};

static inline uint64_t dp_ud(uint32_t slot, uint32_t gen, enum dp_op op)
{
	return (uint64_t)(slot & 0xffffff) | (uint64_t)(gen & 0xffffff) << 24 | (uint64_t)op << 48;
}
static inline uint32_t dp_ud_slot(uint64_t ud)
{
	return (uint32_t)(ud & 0xffffff);
}
static inline uint32_t dp_ud_gen(uint64_t ud)
{
	return (uint32_t)(ud >> 24 & 0xffffff);
}
static inline enum dp_op dp_ud_op(uint64_t ud)
{
	return (enum dp_op)(ud >> 48 & 0xff);
}

/* Ownership: in the ring's segment table; ptr points into a ring buffer (back to the ring on
 * release) or into mem, malloc'd for a heap segment and freed on release. A queued segment belongs
 * to the queue it is on. */
struct dp_seg {
	char *ptr; /* first byte of the segment (owners may advance it past bytes they consumed) */
	char *mem; /* a heap segment's allocation (NULL for a ring buffer) */
	uint32_t cap;  /* its size: DP_SPARE_CAP for a block that goes back to the spares */
	uint32_t len;  /* bytes in the segment */
	uint32_t sent; /* bytes of it already sent */
	uint32_t next; /* next segment in the owning queue, or DP_NIL */
};

/* Counters of the engine's fallbacks and events, exported in /metrics. Ownership: a value in
 * dp_ring. */
struct dp_ring_stats {
	uint64_t enobufs;	   /* multishot recv stopped: buffer ring empty */
	uint64_t short_sends;	   /* send completed with fewer bytes than asked */
	uint64_t sqe_full;	   /* submission queue full: submitted early */
	uint64_t heap_segs;	   /* heap segments allocated */
	uint64_t no_defer;	   /* DEFER_TASKRUN refused by the kernel: plain ring */
	uint64_t zc_sends;	   /* sends made with SEND_ZC */
	uint64_t zc_copied;	   /* of which the kernel copied anyway (loopback, veth, no SG) */
	uint64_t zc_refused;	   /* SEND_ZC refused by the kernel: plain sends from then on */
	uint64_t spliced;	   /* bytes moved socket to pipe to socket, never in user space */
	uint64_t splice_starts;	   /* sockets switched to splicing (a full buffer: bulk) */
	uint64_t splice_fallbacks; /* no pipe (fd limit): kept copying */
	uint64_t sheds;		   /* idle: the buffers' pages given back (dp_ring_shed) */
	uint64_t gathered;	   /* sends that carried several queued segments (sendmsg) */
	uint64_t spare_reused;	   /* heap segments given a kept block (no malloc) */
};

/*
 * Ownership: one per worker thread, created by dp_ring_init() and released
 * by dp_ring_free(). Ring buffers are in one mmap'd region; heap segments are
 * malloc'd and freed when sent.
 */
/* Heap segments from DP_SPARE_MIN to DP_SPARE_CAP bytes (a TLS record, a
 * 16 KiB read) are carved from DP_SPARE_CAP-byte blocks reused through
 * dp_ring.spare; smaller ones are plain mallocs (glibc's bins reuse them). */
#define DP_SPARE_MIN 2048
#define DP_SPARE_CAP (17 * 1024)
#define DP_SPARES    64

struct dp_ring {
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	char *bufs;	/* nbufs * bufsize bytes */
	uint32_t nbufs; /* power of two, <= 32768 */
	uint32_t bufsize;
	uint32_t nsegs; /* nbufs + heap segment slots */
	struct dp_seg *segs;
	uint32_t heap_free; /* free list of heap segment indexes */
	uint32_t bufs_out;  /* ring buffers currently held by queues */
	uint16_t bgid;
	unsigned features;   /* DP_RING_F_* */
	uint16_t *free_bids; /* DP_RING_F_NOURING: the free buffer stack */
	uint32_t nfree;
	/* Freed heap segments of record size, kept for the next one: a TLS
	 * record is sealed into a fresh ~16 KiB allocation, and glibc gives a
	 * freed one back to the kernel when it tops the heap, so each record
	 * paid page faults (a third of the agent's time under a 64 KiB load).
	 * Freed by dp_ring_shed when idle and by dp_ring_free. */
	char *spare[DP_SPARES];
	uint32_t nspare;
	struct dp_ring_stats stats;
};

#define DP_RING_F_DEFER	  0x1 /* IORING_SETUP_DEFER_TASKRUN | SINGLE_ISSUER in use */
#define DP_RING_F_NOURING 0x2 /* epoll engine: no io_uring, buffers from a free stack */

/* Set up the ring (entries SQEs) and nbufs buffers of bufsize. Returns 0 or -errno.
 * With DP_RING_F_NOURING in flags there is no ring: buffers are taken with
 * dp_buf_take() (the epoll engine). */
int dp_ring_init(struct dp_ring *r, unsigned entries, uint32_t nbufs, uint32_t bufsize,
		 uint32_t nheap, unsigned flags);

/* Epoll engine: a free buffer's id, or -1 when none is left. */
int dp_buf_take(struct dp_ring *r); /* the id, or -ENOBUFS */

void dp_ring_free(struct dp_ring *r);

/* Give the kernel back the pages of the receive buffers when none is held:
 * a burst leaves every buffer touched (nbufs x bufsize of RSS) long after it
 * ends. Done only when nothing can write into a buffer behind our back (the
 * epoll engine with its stack whole; a ring whose completion work runs only
 * inside our own io_uring_enter, DEFER_TASKRUN, with no completion waiting).
 * The next receive faults fresh pages in. 1 when shed, else 0. */
int dp_ring_shed(struct dp_ring *r);

/* An SQE, submitting what is queued first if the SQ is full; never NULL. */
struct io_uring_sqe *dp_ring_sqe(struct dp_ring *r);

/* Segment of ring buffer bid holding len bytes from offset off. */
uint32_t dp_seg_from_buf(struct dp_ring *r, uint16_t bid, uint32_t off, uint32_t len);

/* Heap segment of len uninitialised bytes; its index or DP_NIL. */
uint32_t dp_seg_alloc(struct dp_ring *r, uint32_t len);
/* Heap segment with a copy of p[0..len); returns its index or DP_NIL (out of slots). */
uint32_t dp_seg_copy(struct dp_ring *r, const void *p, uint32_t len);

/* Return the segment's memory: a ring buffer goes back to the kernel. */
void dp_seg_release(struct dp_ring *r, uint32_t seg);

/* A FIFO of segments linked through their next field (no memory of its own):
 * output queues, and bytes held until a connection exists to take them. */
struct dp_chain {
	uint32_t head, tail; /* DP_NIL when empty */
};

#define DP_CHAIN_EMPTY ((struct dp_chain){DP_NIL, DP_NIL})

void dp_chain_push(struct dp_ring *r, struct dp_chain *ch, uint32_t seg);
/* The first segment, unlinked, or DP_NIL when the chain is empty. */
uint32_t dp_chain_pop(struct dp_ring *r, struct dp_chain *ch);
/* Release every segment of the chain and empty it. */
void dp_chain_release(struct dp_ring *r, struct dp_chain *ch);

static inline char *dp_buf_ptr(struct dp_ring *r, uint16_t bid)
{
	return r->bufs + (size_t)bid * r->bufsize;
}

#endif
