/*
 * dp_timer.h: a worker's deadlines (a public connection's head or wait for
 * a data connection, a new agent connection's first frame): an intrusive
 * list of timers, each embedded in the state it times, visited by the
 * worker's sweep every 100 ms. A sweep looks at every timer anyway and few
 * are set at once, so a list serves (no heap, no wheel).
 */
#ifndef DP_TIMER_H
#define DP_TIMER_H

#include <stddef.h>
#include <stdint.h>

/* The state a member points into: dp_container_of(t, struct pub, timer). */
#define dp_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Ownership: lives inside its owner, which stops it before it is freed;
 * the list only links timers. */
struct dp_timer {
	struct dp_timer *prev, *next;
	uint64_t deadline_ms;
	uint8_t on; /* in its list */
};

/* Ownership: a member of the worker; it owns no memory. */
struct dp_timers {
	struct dp_timer *head;
};

static inline void dp_timer_stop(struct dp_timers *l, struct dp_timer *t)
{
	if (!t->on)
		return;
	if (t->prev)
		t->prev->next = t->next;
	else
		l->head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	t->on = 0;
	t->deadline_ms = 0;
}

/* (Re)start t to fire at deadline_ms (monotonic ms). */
static inline void dp_timer_start(struct dp_timers *l, struct dp_timer *t, uint64_t deadline_ms)
{
	dp_timer_stop(l, t);
	t->deadline_ms = deadline_ms;
	t->on = 1;
	t->next = l->head;
	if (l->head)
		l->head->prev = t;
	l->head = t;
}

/* Call due(t, ud) for each timer of l whose deadline has come by now_ms;
 * due may stop or restart t (never another timer), and t stays set unless
 * it does. Bounded by the list as it was: a timer restarted by due goes to
 * the head, behind the walk. */
static inline void dp_timers_expire(struct dp_timers *l, uint64_t now_ms,
				    void (*due)(struct dp_timer *t, void *ud), void *ud)
{
	struct dp_timer *t = l->head, *next;

	for (; t; t = next) {
		next = t->next;
		if (t->deadline_ms <= now_ms)
			due(t, ud);
	}
}

#endif
