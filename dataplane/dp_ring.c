/*
 * dp_ring.c: io_uring set-up with run-time feature probing, the provided
 * buffer ring registered by hand, and the segment table (see dp_ring.h).
 *
 * liburing 2.3 has no io_uring_setup_buf_ring() (2.4 does), so the ring
 * memory is mmap'd and registered with io_uring_register_buf_ring() the way
 * liburing's own examples/io_uring-udp.c does it.
 */
#include "dp_ring.h"
#include "sl_log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static int ring_setup(struct dp_ring *r, unsigned entries)
{
	struct io_uring_params p;
	int err;

	/* DEFER_TASKRUN runs completion work only when we ask for events, so a
	 * busy worker is not interrupted; it needs SINGLE_ISSUER (kernel 6.1+). */
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	err = io_uring_queue_init_params(entries, &r->ring, &p);
	if (err == 0) {
		r->features |= DP_RING_F_DEFER;
		return 0;
	}
	r->stats.no_defer++;
	sl_warn("io_uring: DEFER_TASKRUN refused (%s); using a plain ring", strerror(-err));
	memset(&p, 0, sizeof(p));
	return io_uring_queue_init_params(entries, &r->ring, &p);
}

static int bufring_setup(struct dp_ring *r)
{
	struct io_uring_buf_reg reg;
	size_t ring_bytes = r->nbufs * sizeof(struct io_uring_buf);
	int err;

	r->br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->br == MAP_FAILED)
		return -errno;
	r->bufs = mmap(NULL, (size_t)r->nbufs * r->bufsize, PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->bufs == MAP_FAILED) {
		err = -errno;
		munmap(r->br, ring_bytes);
		return err;
	}
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)r->br;
	reg.ring_entries = r->nbufs;
	reg.bgid = r->bgid;
	err = io_uring_register_buf_ring(&r->ring, &reg, 0);
	if (err < 0) {
		munmap(r->bufs, (size_t)r->nbufs * r->bufsize);
		munmap(r->br, ring_bytes);
		return err;
	}
	io_uring_buf_ring_init(r->br);
	for (uint32_t i = 0; i < r->nbufs; i++)
		io_uring_buf_ring_add(r->br, dp_buf_ptr(r, (uint16_t)i), r->bufsize, (uint16_t)i,
				      io_uring_buf_ring_mask(r->nbufs), (int)i);
	io_uring_buf_ring_advance(r->br, (int)r->nbufs);
	return 0;
}

/* The epoll engine's buffers: the same memory, handed out from a stack. */
static int bufstack_setup(struct dp_ring *r)
{
	r->bufs = mmap(NULL, (size_t)r->nbufs * r->bufsize, PROT_READ | PROT_WRITE,
		       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (r->bufs == MAP_FAILED)
		return -errno;
	r->free_bids = malloc(r->nbufs * sizeof(r->free_bids[0]));
	if (r->free_bids == NULL) {
		munmap(r->bufs, (size_t)r->nbufs * r->bufsize);
		return -ENOMEM;
	}
	for (uint32_t i = 0; i < r->nbufs; i++)
		r->free_bids[i] = (uint16_t)(r->nbufs - 1 - i);
	r->nfree = r->nbufs;
	return 0;
}

/* The kept blocks back to malloc (bounded by DP_SPARES). */
static void free_spares(struct dp_ring *r)
{
	while (r->nspare)
		free(r->spare[--r->nspare]);
}

int dp_ring_shed(struct dp_ring *r)
{
	free_spares(r);
	if (r->bufs == NULL || r->bufs_out != 0)
		return 0;
	if (r->features & DP_RING_F_NOURING
		    ? r->nfree != r->nbufs
		    : !(r->features & DP_RING_F_DEFER) || io_uring_cq_ready(&r->ring) != 0)
		return 0;
	if (madvise(r->bufs, (size_t)r->nbufs * r->bufsize, MADV_DONTNEED) != 0)
		return 0;
	r->stats.sheds++;
	return 1;
}

int dp_buf_take(struct dp_ring *r)
{
	if (r->nfree == 0)
		return -ENOBUFS;
	return r->free_bids[--r->nfree];
}

int dp_ring_init(struct dp_ring *r, unsigned entries, uint32_t nbufs, uint32_t bufsize,
		 uint32_t nheap, unsigned flags)
{
	int err;

	memset(r, 0, sizeof(r[0]));
	r->features = flags & DP_RING_F_NOURING;
	if (nbufs == 0 || nbufs > 32768 || (nbufs & (nbufs - 1)))
		return -EINVAL;
	r->nbufs = nbufs;
	r->bufsize = bufsize;
	r->nsegs = nbufs + nheap;
	r->segs = calloc(r->nsegs, sizeof(r->segs[0]));
	if (r->segs == NULL)
		return -ENOMEM;
	r->heap_free = DP_NIL;
	for (uint32_t i = r->nsegs; i-- > nbufs;) {
		r->segs[i].next = r->heap_free;
		r->heap_free = i;
	}
	if (r->features & DP_RING_F_NOURING) {
		if ((err = bufstack_setup(r)) < 0)
			goto fail_segs;
		return 0;
	}
	if ((err = ring_setup(r, entries)) < 0)
		goto fail_segs;
	if ((err = bufring_setup(r)) < 0)
		goto fail_ring;
	return 0;
fail_ring:
	io_uring_queue_exit(&r->ring);
fail_segs:
	free(r->segs);
	r->segs = NULL;
	return err;
}

void dp_ring_free(struct dp_ring *r)
{
	for (uint32_t i = r->nbufs; i < r->nsegs; i++)
		free(r->segs[i].mem); /* ptr may have moved past consumed bytes */
	free_spares(r);
	if (r->features & DP_RING_F_NOURING) {
		munmap(r->bufs, (size_t)r->nbufs * r->bufsize);
		free(r->free_bids);
		free(r->segs);
		r->segs = NULL;
		return;
	}
	io_uring_unregister_buf_ring(&r->ring, r->bgid);
	io_uring_queue_exit(&r->ring);
	munmap(r->bufs, (size_t)r->nbufs * r->bufsize);
	munmap(r->br, r->nbufs * sizeof(struct io_uring_buf));
	free(r->segs);
	r->segs = NULL;
}

struct io_uring_sqe *dp_ring_sqe(struct dp_ring *r)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

	/* Bounded: one submit frees the whole SQ (SUBMIT_ALL keeps going past errors). */
	while (sqe == NULL) {
		r->stats.sqe_full++;
		io_uring_submit(&r->ring);
		sqe = io_uring_get_sqe(&r->ring);
	}
	return sqe;
}

uint32_t dp_seg_from_buf(struct dp_ring *r, uint16_t bid, uint32_t off, uint32_t len)
{
	struct dp_seg *s = &r->segs[bid];

	s->ptr = dp_buf_ptr(r, bid) + off;
	s->len = len;
	s->sent = 0;
	s->next = DP_NIL;
	r->bufs_out++;
	return bid;
}

uint32_t dp_seg_alloc(struct dp_ring *r, uint32_t len)
{
	uint32_t i = r->heap_free;
	char *mem;

	int spare = len >= DP_SPARE_MIN && len <= DP_SPARE_CAP;

	if (i == DP_NIL)
		return DP_NIL;
	if (spare && r->nspare) {
		mem = r->spare[--r->nspare];
		r->stats.spare_reused++;
	} else if ((mem = malloc(spare ? DP_SPARE_CAP : len ? len : 1)) == NULL) {
		return DP_NIL;
	}
	r->heap_free = r->segs[i].next;
	r->segs[i].ptr = mem;
	r->segs[i].mem = mem;
	r->segs[i].cap = spare ? DP_SPARE_CAP : len;
	r->segs[i].len = len;
	r->segs[i].sent = 0;
	r->segs[i].next = DP_NIL;
	r->stats.heap_segs++;
	return i;
}

uint32_t dp_seg_copy(struct dp_ring *r, const void *p, uint32_t len)
{
	uint32_t i = dp_seg_alloc(r, len);

	if (i != DP_NIL)
		memcpy(r->segs[i].ptr, p, len);
	return i;
}

void dp_seg_release(struct dp_ring *r, uint32_t seg)
{
	struct dp_seg *s = &r->segs[seg];

	if (seg < r->nbufs && (r->features & DP_RING_F_NOURING)) {
		r->free_bids[r->nfree++] = (uint16_t)seg;
		r->bufs_out--;
		s->ptr = NULL;
		return;
	}
	if (seg < r->nbufs) {
		io_uring_buf_ring_add(r->br, dp_buf_ptr(r, (uint16_t)seg), r->bufsize,
				      (uint16_t)seg, io_uring_buf_ring_mask(r->nbufs), 0);
		io_uring_buf_ring_advance(r->br, 1);
		r->bufs_out--;
		s->ptr = NULL;
		return;
	}
	if (s->cap == DP_SPARE_CAP && r->nspare < DP_SPARES)
		r->spare[r->nspare++] = s->mem;
	else
		free(s->mem);
	s->ptr = s->mem = NULL;
	s->len = 0;
	s->next = r->heap_free;
	r->heap_free = seg;
}

void dp_chain_push(struct dp_ring *r, struct dp_chain *ch, uint32_t seg)
{
	r->segs[seg].next = DP_NIL;
	if (ch->tail == DP_NIL)
		ch->head = seg;
	else
		r->segs[ch->tail].next = seg;
	ch->tail = seg;
}

uint32_t dp_chain_pop(struct dp_ring *r, struct dp_chain *ch)
{
	uint32_t seg = ch->head;

	if (seg == DP_NIL)
		return DP_NIL;
	ch->head = r->segs[seg].next;
	if (ch->head == DP_NIL)
		ch->tail = DP_NIL;
	return seg;
}

void dp_chain_release(struct dp_ring *r, struct dp_chain *ch)
{
	uint32_t seg;

	/* Bounded by the segment table: a chain holds each segment once. */
	while ((seg = dp_chain_pop(r, ch)) != DP_NIL)
		dp_seg_release(r, seg);
}
