/*
 * dp_tunnel.c: the tunnel registry (see dp_tunnel.h): two open-addressing
 * tables keyed by name and by session id (FNV-1a; keys are ours or checked
 * DNS labels, so a simple hash is enough), plus a list for periodic sweeps.
 */
#include "dp_tunnel.h"
#include "sl_bytes.h"

#include <arpa/inet.h>

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

/* ---- owners across workers ---- */

struct dp_owner_ent {
	struct dp_owner_ent *next;
	int worker;
	uint8_t is_sid;
	char key[PR_NAME_MAX];
};

int dp_owners_init(struct dp_owners *o, uint32_t nbuckets)
{
	o->buckets = calloc(nbuckets, sizeof(o->buckets[0]));
	if (o->buckets == NULL)
		return -ENOMEM;
	o->nbuckets = nbuckets;
	pthread_mutex_init(&o->mu, NULL);
	return 0;
}

void dp_owners_free(struct dp_owners *o)
{
	for (uint32_t i = 0; o->buckets && i < o->nbuckets; i++) {
		struct dp_owner_ent *e = o->buckets[i], *n;

		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	free(o->buckets);
	o->buckets = NULL;
	pthread_mutex_destroy(&o->mu);
}

static struct dp_owner_ent **owner_slot(struct dp_owners *o, int is_sid, const char *key,
					size_t len)
{
	struct dp_owner_ent **pp = &o->buckets[sl_fnv1a(key, len) % o->nbuckets];

	/* Bounded by the bucket's length: every entry is visited once. */
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->is_sid == is_sid && strlen((*pp)->key) == len &&
		    memcmp((*pp)->key, key, len) == 0)
			break;
	return pp;
}

static int owner_add(struct dp_owners *o, int is_sid, const char *key, int w)
{
	size_t len = strlen(key);
	struct dp_owner_ent **pp = owner_slot(o, is_sid, key, len), *e;

	if (*pp) {
		(*pp)->worker = w;
		return 0;
	}
	if (len >= sizeof(e->key) || (e = calloc(1, sizeof(*e))) == NULL)
		return -ENOMEM;
	memcpy(e->key, key, len + 1);
	e->is_sid = (uint8_t)is_sid;
	e->worker = w;
	*pp = e;
	return 0;
}

static void owner_del(struct dp_owners *o, int is_sid, const char *key, int w)
{
	struct dp_owner_ent **pp = owner_slot(o, is_sid, key, strlen(key)), *e = *pp;

	if (e && e->worker == w) {
		*pp = e->next;
		free(e);
	}
}

int dp_owners_claim(struct dp_owners *o, const char *name, const char *sid, int w)
{
	struct dp_owner_ent *e;
	int ret = w;

	pthread_mutex_lock(&o->mu);
	e = *owner_slot(o, 0, name, strlen(name));
	if (e && e->worker != w) {
		ret = e->worker;
	} else if (owner_add(o, 0, name, w) < 0 || owner_add(o, 1, sid, w) < 0) {
		owner_del(o, 0, name, w);
		ret = -ENOMEM;
	}
	pthread_mutex_unlock(&o->mu);
	return ret;
}

int dp_owners_find(struct dp_owners *o, int is_sid, const char *key, size_t len)
{
	struct dp_owner_ent *e;
	int w;

	pthread_mutex_lock(&o->mu);
	e = *owner_slot(o, is_sid, key, len);
	w = e ? e->worker : DP_OWNER_NONE;
	pthread_mutex_unlock(&o->mu);
	return w;
}

void dp_owners_release(struct dp_owners *o, const char *name, const char *sid, int w)
{
	pthread_mutex_lock(&o->mu);
	owner_del(o, 0, name, w);
	owner_del(o, 1, sid, w);
	pthread_mutex_unlock(&o->mu);
}

/* ---- client address lists ---- */

static uint8_t parse_list(const char *s, struct pr_cidr *out)
{
	uint8_t n = 0;

	/* Bounded by the string and DP_ACL_MAX. */
	while (*s && n < DP_ACL_MAX) {
		const char *comma = strchr(s, ',');
		size_t len = comma ? (size_t)(comma - s) : strlen(s);

		if (pr_cidr_parse(s, len, &out[n]) == 0)
			n++;
		s += len + (comma ? 1 : 0);
	}
	return n;
}

struct dp_acl *dp_acl_parse(const char *allow, const char *deny)
{
	struct dp_acl *a;

	if (!allow[0] && !deny[0])
		return NULL;
	a = calloc(1, sizeof(*a));
	if (a == NULL)
		return NULL;
	a->nallow = parse_list(allow, a->allow);
	a->ndeny = parse_list(deny, a->deny);
	return a;
}

static int cidr_match(const struct pr_cidr *c, const uint8_t *addr, int v6)
{
	uint8_t full = c->bits / 8, rest = c->bits % 8;

	if (c->v6 != v6 || memcmp(c->addr, addr, full) != 0)
		return 0;
	return rest == 0 || ((c->addr[full] ^ addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

int dp_acl_ok(const struct dp_acl *acl, const char *ip, int v6)
{
	uint8_t addr[16];
	int allowed;

	if (acl == NULL)
		return 1;
	/* A v4-mapped v6 client (::ffff:a.b.c.d) is matched as IPv4. */
	if (v6 && strncmp(ip, "::ffff:", 7) == 0 && strchr(ip + 7, '.') &&
	    inet_pton(AF_INET, ip + 7, addr) == 1)
		v6 = 0;
	else if (inet_pton(v6 ? AF_INET6 : AF_INET, ip, addr) != 1)
		return 0;
	for (uint8_t i = 0; i < acl->ndeny; i++)
		if (cidr_match(&acl->deny[i], addr, v6))
			return 0;
	allowed = acl->nallow == 0;
	for (uint8_t i = 0; i < acl->nallow && !allowed; i++)
		allowed = cidr_match(&acl->allow[i], addr, v6);
	return allowed;
}
