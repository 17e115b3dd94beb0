/*
 * cp_node_pools.c: one warm SSH pool per registered node, shared by the API's
 * requests, so a command through the API costs a channel, not a connection,
 * and the health monitor has the node's recent operations to judge.
 *
 * Ownership: the table holds each pool; a request holds a reference while it
 * uses one. A pool leaves the table when its node is deleted or when the
 * table is full and it is the least recently used idle one; it is freed by
 * whoever drops the last reference (cp_ssh_pool_free blocks while its
 * connections close, so never on the HTTP loop: the loop only marks).
 */
#include "api/cp_node_pools.h"
#include "sl_thread.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOLS_MAX 64 /* nodes with warm connections at once */

/* A slot of the table (under mu). Ownership: the table holds pool; it is
 * freed when evicted, forgotten or at exit with refs 0, else by the last
 * cp_node_pool_put. */
struct entry {
	char id[64];
	struct cp_ssh_pool *pool;
	int refs;
	uint64_t used; /* a tick of the last acquire, for eviction */
};

static struct entry table[POOLS_MAX];
static uint64_t ticks;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

/* Orphans: pools out of the table with references still held (under mu).
 * Ownership: calloc'd by cp_node_pool_forget; the last cp_node_pool_put
 * frees the orphan and its pool. */
struct orphan {
	struct cp_ssh_pool *pool;
	int refs;
	struct orphan *next;
};
static struct orphan *orphans;

static struct entry *find(const char *id)
{
	for (int i = 0; i < POOLS_MAX; i++)
		if (table[i].pool && strcmp(table[i].id, id) == 0)
			return &table[i];
	return NULL;
}

/* A free slot, evicting the least recently used idle pool if need be;
 * *evicted gets a pool to free outside the lock. */
static struct entry *slot(struct cp_ssh_pool **evicted)
{
	struct entry *lru = NULL;

	for (int i = 0; i < POOLS_MAX; i++) {
		if (!table[i].pool)
			return &table[i];
		if (table[i].refs == 0 && (!lru || table[i].used < lru->used))
			lru = &table[i];
	}
	if (lru) {
		*evicted = lru->pool;
		lru->pool = NULL;
	}
	return lru;
}

struct cp_ssh_pool *cp_node_pool_get(const char *id, const struct cp_ssh_config *cfg)
{
	struct cp_ssh_pool *evicted = NULL, *p = NULL;
	struct entry *e;

	pthread_mutex_lock(&mu);
	e = find(id);
	if (!e && (e = slot(&evicted)) != NULL) {
		e->pool = cp_ssh_pool_new(cfg, NULL, -1);
		snprintf(e->id, sizeof(e->id), "%s", id);
		e->refs = 0;
	}
	if (e && e->pool) {
		e->refs++;
		e->used = ++ticks;
		p = e->pool;
	}
	pthread_mutex_unlock(&mu);
	cp_ssh_pool_free(evicted);
	/* Every slot busy: a pool of the request's own, freed at its release. */
	return p ? p : cp_ssh_pool_new(cfg, NULL, -1);
}

void cp_node_pool_put(struct cp_ssh_pool *p)
{
	struct cp_ssh_pool *to_free = p;

	pthread_mutex_lock(&mu);
	for (int i = 0; i < POOLS_MAX; i++)
		if (table[i].pool == p) {
			table[i].refs--;
			to_free = NULL;
			break;
		}
	for (struct orphan **o = &orphans; to_free && *o; o = &(*o)->next)
		if ((*o)->pool == p) {
			struct orphan *dead = *o;

			if (--dead->refs > 0) {
				to_free = NULL;
			} else {
				*o = dead->next;
				free(dead);
			}
			break;
		}
	pthread_mutex_unlock(&mu);
	cp_ssh_pool_free(to_free);
}

/* Runs on a thread of its own: freeing waits for connections to close. */
static void *free_main(void *arg)
{
	cp_ssh_pool_free(arg);
	return NULL;
}

void cp_node_pool_forget(const char *id)
{
	struct entry *e;
	struct cp_ssh_pool *idle = NULL;

	pthread_mutex_lock(&mu);
	e = find(id);
	if (e && e->refs == 0) {
		idle = e->pool;
	} else if (e) {
		struct orphan *o = calloc(1, sizeof(*o));

		if (o) { /* the last put frees it */
			o->pool = e->pool;
			o->refs = e->refs;
			o->next = orphans;
			orphans = o;
		}
	}
	if (e)
		e->pool = NULL;
	pthread_mutex_unlock(&mu);
	if (idle && sl_thread_detached(free_main, idle) < 0)
		cp_ssh_pool_free(idle);
}

void cp_node_pools_free(void)
{
	pthread_mutex_lock(&mu);
	for (int i = 0; i < POOLS_MAX; i++) {
		if (table[i].pool && table[i].refs == 0) {
			cp_ssh_pool_free(table[i].pool);
			table[i].pool = NULL;
		}
	}
	pthread_mutex_unlock(&mu);
}
