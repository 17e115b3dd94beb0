/*
 * dp_owners.c: which worker thread holds each tunnel, by name and by
 * session id (see dp_owners.h): a hash of buckets under one mutex, the only
 * table the relay's workers share.
 */
#include "dp_owners.h"
#include "pr_msg.h"
#include "sl_bytes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Ownership: malloc'd into its bucket by owner_add under the table's mutex; freed by owner_del or
 * dp_owners_free. */
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
