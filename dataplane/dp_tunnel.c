/*
 * dp_tunnel.c: the tunnel registry (see dp_tunnel.h): two open-addressing
 * tables keyed by name and by session id (FNV-1a; keys are ours or checked
 * DNS labels, so a simple hash is enough), plus a list for periodic sweeps.
 */
#include "dp_tunnel.h"
#include "sl_bytes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define TOMB ((struct dp_tunnel *)1)

int dp_tunnels_init(struct dp_tunnels *ts, uint32_t cap)
{
	memset(ts, 0, sizeof(*ts));
	ts->cap = 64;
	while (ts->cap < cap * 2)
		ts->cap <<= 1;
	ts->by_name = calloc(ts->cap, sizeof(ts->by_name[0]));
	ts->by_sid = calloc(ts->cap, sizeof(ts->by_sid[0]));
	if (ts->by_name == NULL || ts->by_sid == NULL) {
		free(ts->by_name);
		free(ts->by_sid);
		return -ENOMEM;
	}
	return 0;
}

void dp_tunnels_free(struct dp_tunnels *ts)
{
	while (ts->all) {
		struct dp_tunnel *t = ts->all;

		dp_tunnels_remove(ts, t);
		free(t->acl);
		free(t);
	}
	free(ts->by_name);
	free(ts->by_sid);
}

typedef const char *(*key_fn)(const struct dp_tunnel *);

static const char *name_of(const struct dp_tunnel *t)
{
	return t->name;
}

static const char *sid_of(const struct dp_tunnel *t)
{
	return t->sid;
}

/* Slot holding key, or NULL; probes are bounded by the table size. */
static struct dp_tunnel **lookup(struct dp_tunnel **tab, uint32_t cap, key_fn key, const char *k,
				 size_t n)
{
	uint32_t mask = cap - 1, i = sl_fnv1a(k, n) & mask;

	for (uint32_t probe = 0; probe < cap; probe++, i = (i + 1) & mask) {
		struct dp_tunnel *t = tab[i];

		if (t == NULL)
			return NULL;
		if (t != TOMB && strlen(key(t)) == n && memcmp(key(t), k, n) == 0)
			return &tab[i];
	}
	return NULL;
}

static void insert(struct dp_tunnel **tab, uint32_t cap, key_fn key, struct dp_tunnel *t)
{
	uint32_t mask = cap - 1, i = sl_fnv1a(key(t), strlen(key(t))) & mask;

	while (tab[i] != NULL && tab[i] != TOMB)
		i = (i + 1) & mask;
	tab[i] = t;
}

/* Rebuild both tables at twice the size (also clears tombstones). */
static int grow(struct dp_tunnels *ts)
{
	uint32_t cap = ts->cap * 2;
	struct dp_tunnel **bn = calloc(cap, sizeof(*bn)), **bs = calloc(cap, sizeof(*bs));

	if (bn == NULL || bs == NULL) {
		free(bn);
		free(bs);
		return -ENOMEM;
	}
	for (struct dp_tunnel *t = ts->all; t; t = t->next) {
		insert(bn, cap, name_of, t);
		insert(bs, cap, sid_of, t);
	}
	free(ts->by_name);
	free(ts->by_sid);
	ts->by_name = bn;
	ts->by_sid = bs;
	ts->cap = cap;
	ts->used = ts->count;
	return 0;
}

int dp_tunnels_add(struct dp_tunnels *ts, struct dp_tunnel *t)
{
	/* Keep the load (live entries and tombstones) under a half. */
	if ((ts->used + 1) * 2 > ts->cap && grow(ts) < 0)
		return -ENOMEM;
	insert(ts->by_name, ts->cap, name_of, t);
	insert(ts->by_sid, ts->cap, sid_of, t);
	t->prev = NULL;
	t->next = ts->all;
	if (ts->all)
		ts->all->prev = t;
	ts->all = t;
	ts->count++;
	ts->used++;
	return 0;
}

void dp_tunnels_remove(struct dp_tunnels *ts, struct dp_tunnel *t)
{
	struct dp_tunnel **p;

	if ((p = lookup(ts->by_name, ts->cap, name_of, t->name, strlen(t->name))) != NULL)
		*p = TOMB;
	if ((p = lookup(ts->by_sid, ts->cap, sid_of, t->sid, strlen(t->sid))) != NULL)
		*p = TOMB;
	if (t->prev)
		t->prev->next = t->next;
	else
		ts->all = t->next;
	if (t->next)
		t->next->prev = t->prev;
	t->prev = t->next = NULL;
	ts->count--;
}

struct dp_tunnel *dp_tunnels_by_name(struct dp_tunnels *ts, const char *name, size_t len)
{
	struct dp_tunnel **p = lookup(ts->by_name, ts->cap, name_of, name, len);

	return p ? *p : NULL;
}

struct dp_tunnel *dp_tunnels_by_sid(struct dp_tunnels *ts, const char *sid, size_t len)
{
	struct dp_tunnel **p = lookup(ts->by_sid, ts->cap, sid_of, sid, len);

	return p ? *p : NULL;
}
