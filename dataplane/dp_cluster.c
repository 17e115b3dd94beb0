/*
 * dp_cluster.c: the relay registry and tunnel ownership in Redis (see
 * dp_cluster.h).
 */
#include "dp_cluster.h"
#include "sl_bytes.h"
#include "sl_log.h"
#include "sl_net.h"
#include "sl_redis.h"
#include "sl_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#define TURN_MS	      50
#define RETRY_MS      500
#define CLAIM_RETRY   1000
#define OWN_TTL_MS    "90000000" /* an ownership record outlives any session (1 day max) */
#define REDIS_TIMEOUT 500
#define PEER_DEAD_MS  5000

/* Claim sid for ARGV[1] at bind epoch ARGV[2]: refused (0) while a live
 * relay holds a newer bind of it; otherwise the fence rises and the claim
 * is ours. {ok, fence}. */
static const char claim_lua[] =
	"local cur = redis.call('HMGET', KEYS[1], 'relay', 'bepoch', 'fence')\n"
	"if cur[1] and cur[1] ~= ARGV[1] and tonumber(cur[2]) > tonumber(ARGV[2]) and\n"
	"   redis.call('EXISTS', 'sl:relay:' .. cur[1]) == 1 then\n"
	"  return {0, tonumber(cur[3]) or 0}\n"
	"end\n"
	"local f = redis.call('HINCRBY', KEYS[1], 'fence', 1)\n"
	"redis.call('HSET', KEYS[1], 'relay', ARGV[1], 'bepoch', ARGV[2])\n"
	"redis.call('PEXPIRE', KEYS[1], " OWN_TTL_MS ")\n"
	"return {1, f}\n";

/* Keep a session whose agent is bound here: still ours (1), another live
 * relay's (0), or, its owner gone from the registry (or none), ours now with
 * a new fence. An agent may be bound at two relays at once (sluice --ha):
 * the later bind owns it, and when that relay dies the other takes over
 * here, within a registration TTL. {ours, fence}. */
static const char keep_lua[] =
	"local cur = redis.call('HMGET', KEYS[1], 'relay', 'bepoch', 'fence')\n"
	"if cur[1] == ARGV[1] then return {1, tonumber(cur[3]) or 0} end\n"
	"if cur[1] and redis.call('EXISTS', 'sl:relay:' .. cur[1]) == 1 then return {0, 0} end\n"
	"local f = redis.call('HINCRBY', KEYS[1], 'fence', 1)\n"
	"redis.call('HSET', KEYS[1], 'relay', ARGV[1], 'bepoch', ARGV[2])\n"
	"redis.call('PEXPIRE', KEYS[1], " OWN_TTL_MS ")\n"
	"return {1, f}\n";

/* Delete the claim only if its fence is still ours. */
static const char release_lua[] = "if redis.call('HGET', KEYS[1], 'fence') == ARGV[1] then\n"
				  "  redis.call('DEL', KEYS[1])\n"
				  "  return 1\n"
				  "end\n"
				  "return 0\n";

static struct dp_own_ent *cache_slot(struct dp_cluster *cl, const char *sid)
{
	return &cl->cache[sl_fnv1a(sid, strlen(sid)) % DP_CLUSTER_CACHE];
}

static const struct dp_peer *find_peer(const struct dp_cluster *cl, const char *id)
{
	for (uint32_t i = 0; i < cl->npeers; i++)
		if (strcmp(cl->peers[i].id, id) == 0)
			return &cl->peers[i];
	return NULL;
}

static struct dp_claim *find_claim(struct dp_cluster *cl, const char *sid)
{
	for (struct dp_claim *c = cl->claims; c; c = c->next)
		if (strcmp(c->sid, sid) == 0)
			return c;
	return NULL;
}

/* ---- the workers' side ---- */

static void push_job(struct dp_cluster *cl, int kind, const char *sid, uint64_t bepoch)
{
	struct dp_cl_job *j;

	for (uint32_t i = 0; i < cl->njobs; i++)
		if (cl->jobs[i].kind == kind && strcmp(cl->jobs[i].sid, sid) == 0)
			return; /* already asked */
	if (cl->njobs == DP_CLUSTER_QUEUE)
		return; /* full: the asker times out and retries */
	j = &cl->jobs[cl->njobs++];
	j->kind = (uint8_t)kind;
	j->bepoch = bepoch;
	snprintf(j->sid, sizeof(j->sid), "%s", sid);
	pthread_cond_signal(&cl->bg.cv);
}

void dp_cluster_claim(struct dp_cluster *cl, const char *sid, uint64_t bepoch)
{
	struct dp_claim *c;

	pthread_mutex_lock(&cl->bg.mu);
	if ((c = find_claim(cl, sid)) == NULL && (c = calloc(1, sizeof(*c))) != NULL) {
		snprintf(c->sid, sizeof(c->sid), "%s", sid);
		c->next = cl->claims;
		cl->claims = c;
	}
	if (c) {
		c->bepoch = bepoch;
		c->bound = 1;
		c->held = 0;
		c->retry_ms = 0;
		push_job(cl, CL_CLAIM, sid, bepoch);
	}
	pthread_mutex_unlock(&cl->bg.mu);
}

void dp_cluster_unbound(struct dp_cluster *cl, const char *sid)
{
	struct dp_claim *c;

	pthread_mutex_lock(&cl->bg.mu);
	if ((c = find_claim(cl, sid)) != NULL)
		c->bound = 0;
	pthread_mutex_unlock(&cl->bg.mu);
}

void dp_cluster_release(struct dp_cluster *cl, const char *sid)
{
	pthread_mutex_lock(&cl->bg.mu);
	if (find_claim(cl, sid))
		push_job(cl, CL_RELEASE, sid, 0);
	pthread_mutex_unlock(&cl->bg.mu);
}

enum dp_owner_verdict dp_cluster_owner(struct dp_cluster *cl, const char *sid, int fresh,
				       struct sockaddr_storage *addr, socklen_t *len)
{
	uint64_t now = sl_mono_ms();
	enum dp_owner_verdict v = DP_OWN_WAIT;
	struct dp_own_ent *e;
	const struct dp_peer *p;

	atomic_fetch_add(&cl->lookups, 1);
	pthread_mutex_lock(&cl->bg.mu);
	e = cache_slot(cl, sid);
	if (strcmp(e->sid, sid) == 0 && (now < e->expires_ms || !atomic_load(&cl->up)) &&
	    !(fresh && e->expires_ms < now + DP_CLUSTER_CACHE_MS / 2)) {
		if (e->relay[0] == '\0')
			v = DP_OWN_NONE;
		else if (strcmp(e->relay, cl->relay_id) == 0)
			v = DP_OWN_SELF;
		else if ((p = find_peer(cl, e->relay)) != NULL) {
			memcpy(addr, &p->addr, p->len);
			*len = p->len;
			v = DP_OWN_PEER;
		} else
			v = DP_OWN_NONE;
	} else
		push_job(cl, CL_QUERY, sid, 0);
	pthread_mutex_unlock(&cl->bg.mu);
	return v;
}

void dp_cluster_forget(struct dp_cluster *cl, const char *sid)
{
	struct dp_own_ent *e;

	pthread_mutex_lock(&cl->bg.mu);
	e = cache_slot(cl, sid);
	if (strcmp(e->sid, sid) == 0)
		e->expires_ms = 0;
	pthread_mutex_unlock(&cl->bg.mu);
}

void dp_cluster_set_draining(struct dp_cluster *cl)
{
	pthread_mutex_lock(&cl->bg.mu);
	cl->draining = 1;
	pthread_cond_signal(&cl->bg.cv);
	pthread_mutex_unlock(&cl->bg.mu);
}

/* ---- the thread ---- */

/* Register this relay and read the live peers (the lease thread looks for
 * drain requests). -EIO when the connection failed. */
static int beat(struct dp_cluster *cl, redisContext *rc)
{
	struct dp_peer peers[DP_CLUSTER_PEERS];
	uint32_t n = 0;
	redisReply *r, *ids;
	char value[200];
	size_t k;

	pthread_mutex_lock(&cl->bg.mu);
	snprintf(value, sizeof(value), "v1 %s %s", cl->draining ? "draining" : "serving", cl->link);
	pthread_mutex_unlock(&cl->bg.mu);
	/* One key, with the TTL: a relay that dies leaves nothing behind. */
	r = redisCommand(rc, "SET sl:relay:%s %s PX %d", cl->relay_id, value, DP_CLUSTER_TTL_MS);
	if (r == NULL)
		return -EIO;
	freeReplyObject(r);
	ids = redisCommand(rc, "ZRANGEBYSCORE sl:relays %llu +inf LIMIT 0 %d",
			   (unsigned long long)(sl_wall_ms() - PEER_DEAD_MS), DP_CLUSTER_PEERS);
	if (ids == NULL)
		return -EIO;
	/* Their registrations, pipelined: one round trip for all. */
	for (k = 0; ids->type == REDIS_REPLY_ARRAY && k < ids->elements; k++)
		redisAppendCommand(rc, "GET sl:relay:%b", ids->element[k]->str,
				   (size_t)ids->element[k]->len);
	for (size_t i = 0; i < k; i++) {
		struct dp_peer *p = &peers[n];
		char state[16];
		void *rep = NULL;

		if (redisGetReply(rc, &rep) != REDIS_OK) {
			freeReplyObject(ids);
			return -EIO;
		}
		r = rep;
		/* Registered (its key has not expired) and reachable by link. */
		memset(p, 0, sizeof(*p));
		if (r->type == REDIS_REPLY_STRING && ids->element[i]->len < sizeof(p->id) &&
		    sscanf(r->str, "v1 %15s %127s", state, p->link) == 2 &&
		    sl_addr_parse(p->link, &p->addr, &p->len) == 0) {
			snprintf(p->id, sizeof(p->id), "%s", ids->element[i]->str);
			n++;
		}
		freeReplyObject(r);
	}
	freeReplyObject(ids);
	pthread_mutex_lock(&cl->bg.mu);
	memcpy(cl->peers, peers, n * sizeof(peers[0]));
	cl->npeers = n;
	pthread_mutex_unlock(&cl->bg.mu);
	return 0;
}

/* One job against Redis; -EIO when the connection failed. */
static int run_job(struct dp_cluster *cl, redisContext *rc, const struct dp_cl_job *j)
{
	struct dp_claim *c;
	redisReply *r;
	uint64_t fence = 0;

	if (j->kind == CL_QUERY) {
		struct dp_own_ent *e;

		if ((r = redisCommand(rc, "HGET sl:own:%s relay", j->sid)) == NULL)
			return -EIO;
		pthread_mutex_lock(&cl->bg.mu);
		e = cache_slot(cl, j->sid);
		snprintf(e->sid, sizeof(e->sid), "%s", j->sid);
		snprintf(e->relay, sizeof(e->relay), "%s",
			 r->type == REDIS_REPLY_STRING ? r->str : "");
		e->expires_ms = sl_mono_ms() + DP_CLUSTER_CACHE_MS;
		pthread_mutex_unlock(&cl->bg.mu);
		freeReplyObject(r);
		return 0;
	}
	if (j->kind == CL_RELEASE) {
		pthread_mutex_lock(&cl->bg.mu);
		if ((c = find_claim(cl, j->sid)) != NULL) {
			fence = c->held ? c->fence : 0;
			for (struct dp_claim **pp = &cl->claims; *pp; pp = &(*pp)->next)
				if (*pp == c) {
					*pp = c->next;
					break;
				}
			free(c);
		}
		pthread_mutex_unlock(&cl->bg.mu);
		if (fence == 0)
			return 0;
		r = redisCommand(rc, "EVAL %s 1 sl:own:%s %llu", release_lua, j->sid,
				 (unsigned long long)fence);
		if (r == NULL)
			return -EIO;
		freeReplyObject(r);
		return 0;
	}
	r = redisCommand(rc, "EVAL %s 1 sl:own:%s %s %llu",
			 j->kind == CL_KEEP ? keep_lua : claim_lua, j->sid, cl->relay_id,
			 (unsigned long long)j->bepoch);
	if (r == NULL)
		return -EIO;
	pthread_mutex_lock(&cl->bg.mu);
	if ((c = find_claim(cl, j->sid)) != NULL && c->bepoch == j->bepoch) {
		int ok = r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
			 r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1;
		uint64_t nf = ok ? (uint64_t)r->element[1]->integer : 0;

		if (j->kind == CL_KEEP) {
			if (ok && nf != c->fence) {
				sl_info("cluster: session %s: its owner is gone; this relay, where "
					"its agent is bound too, takes it over",
					j->sid);
				atomic_fetch_add(&cl->claims_made, 1);
			}
		} else {
			c->retry_ms = ok ? 0 : sl_mono_ms() + CLAIM_RETRY;
			atomic_fetch_add(ok ? &cl->claims_made : &cl->claims_refused, 1);
			if (!ok)
				sl_warn("cluster: session %s: a live relay holds a newer bind; "
					"retrying",
					j->sid);
		}
		c->held = ok;
		c->fence = nf;
	}
	pthread_mutex_unlock(&cl->bg.mu);
	freeReplyObject(r);
	return 0;
}

/* Claims refused earlier, due again (their owner may have died); and,
 * once a beat, every session whose agent is bound here is kept. */
static void due_claims(struct dp_cluster *cl, uint64_t now, int keep)
{
	for (struct dp_claim *c = cl->claims; c; c = c->next) {
		if (!c->held && c->retry_ms && now >= c->retry_ms) {
			c->retry_ms = 0;
			push_job(cl, CL_CLAIM, c->sid, c->bepoch);
		} else if (keep && c->bound && !c->retry_ms && cl->njobs < DP_CLUSTER_QUEUE / 2) {
			push_job(cl, CL_KEEP, c->sid, c->bepoch);
		}
	}
}

/* A clean exit: the claims still ours and the registration go at once,
 * rather than when their relay's TTL runs out. */
static void leave(struct dp_cluster *cl, redisContext *rc)
{
	redisReply *r;

	for (struct dp_claim *c = cl->claims; c; c = c->next)
		if (c->held && (r = redisCommand(rc, "EVAL %s 1 sl:own:%s %llu", release_lua,
						 c->sid, (unsigned long long)c->fence)) != NULL)
			freeReplyObject(r);
	if ((r = redisCommand(rc, "DEL sl:relay:%s", cl->relay_id)) != NULL)
		freeReplyObject(r);
}

static void serve(struct dp_cluster *cl, redisContext *rc)
{
	struct dp_cl_job *jobs = malloc(DP_CLUSTER_QUEUE * sizeof(*jobs));
	uint64_t next_beat = 0;

	if (jobs == NULL)
		return;
	/* A new connection (Redis may have restarted empty): every claim again. */
	pthread_mutex_lock(&cl->bg.mu);
	for (struct dp_claim *c = cl->claims; c; c = c->next) {
		c->held = 0;
		push_job(cl, CL_CLAIM, c->sid, c->bepoch);
	}
	pthread_mutex_unlock(&cl->bg.mu);
	while (!sl_bg_stopping(&cl->bg)) {
		uint64_t now = sl_mono_ms();
		uint32_t n;

		int keep = 0;

		if (now >= next_beat) {
			if (beat(cl, rc) < 0)
				break;
			atomic_store(&cl->up, 1);
			next_beat = now + DP_CLUSTER_BEAT_MS;
			keep = 1;
		}
		pthread_mutex_lock(&cl->bg.mu);
		due_claims(cl, now, keep);
		if (cl->njobs == 0) {
			sl_bg_wait_ms(&cl->bg, TURN_MS);
		}
		n = cl->njobs;
		memcpy(jobs, cl->jobs, n * sizeof(*jobs));
		cl->njobs = 0;
		pthread_mutex_unlock(&cl->bg.mu);
		for (uint32_t i = 0; i < n; i++)
			if (run_job(cl, rc, &jobs[i]) < 0) {
				free(jobs);
				return;
			}
		if (n) {
			atomic_fetch_add(&cl->gen, 1);
			if (cl->on_change)
				cl->on_change(cl->ud);
		}
	}
	free(jobs);
	if (sl_bg_stopping(&cl->bg))
		leave(cl, rc);
}

static int serve_rc(void *ud, redisContext *rc, char *why, size_t cap)
{
	struct dp_cluster *cl = ud;

	(void)why;
	(void)cap;
	serve(cl, rc);
	atomic_store(&cl->up, 0);
	return 0;
}

static void lost(void *ud, const char *why, unsigned wait_ms)
{
	struct dp_cluster *cl = ud;

	(void)why;
	(void)wait_ms;
	atomic_store(&cl->up, 0);
	atomic_fetch_add(&cl->failures, 1);
	if (cl->on_change)
		cl->on_change(cl->ud); /* parked requests use what is cached */
}

int dp_cluster_start(struct dp_cluster *cl, const char *redis_url, const char *relay_id,
		     const char *link, void (*on_change)(void *ud), void *ud)
{
	int e;

	memset(cl, 0, sizeof(*cl));
	snprintf(cl->redis, sizeof(cl->redis), "%s", redis_url);
	snprintf(cl->relay_id, sizeof(cl->relay_id), "%s", relay_id);
	snprintf(cl->link, sizeof(cl->link), "%s", link);
	cl->on_change = on_change;
	cl->ud = ud;
	cl->cache = calloc(DP_CLUSTER_CACHE, sizeof(*cl->cache));
	cl->jobs = calloc(DP_CLUSTER_QUEUE, sizeof(*cl->jobs));
	if (cl->cache == NULL || cl->jobs == NULL) {
		free(cl->cache);
		free(cl->jobs);
		return -ENOMEM;
	}
	cl->follow = (struct sl_redis_follow){&cl->bg,	cl->redis, REDIS_TIMEOUT, RETRY_MS,
					      RETRY_MS, serve_rc,  lost,	  cl};
	if ((e = sl_redis_follow_start(&cl->follow)) < 0) {
		free(cl->cache);
		free(cl->jobs);
		return e;
	}
	return 0;
}

void dp_cluster_stop(struct dp_cluster *cl)
{
	struct dp_claim *c, *next;

	if (!sl_bg_stop(&cl->bg))
		return;
	for (c = cl->claims; c; c = next) {
		next = c->next;
		free(c);
	}
	free(cl->cache);
	free(cl->jobs);
}
