/*
 * cp_job.c: a provisioning job's life on the loop (see cp_job.h): its
 * thread, its record in Redis, the node's lock, its event streams, and the
 * table of this control plane's jobs.
 *
 * The work runs on a thread of its own (cp_provision over the node's warm
 * pool); each step's event goes to the job under its mutex and a wake
 * through the server's bridge (http/cp_bridge.h) tells the loop, which
 * feeds the job's event streams and mirrors the
 * job into Redis (sl:job:<id>, JSON, kept 7 days) so that any control plane
 * sharing the Redis answers GET and streams the events (by polling the
 * record), and a job outlives the process that ran it as a record. While it
 * runs, its owner refreshes the record and the node's lock
 * (sl:node:<id>:job, SET NX with a 60 s lease) every few seconds: a record
 * that stops being refreshed while "running" reads as "lost" (its control
 * plane died), and the lease frees the node. A cancel asked of another
 * control plane is a key (sl:job:<id>:cancel) the owner looks at on its
 * refresh.
 *
 * Ownership: each struct cp_job is counted: the loop's table (until it is
 * pruned, an hour after it ends), the thread (until it returns), each event
 * stream and each Redis command in flight. Its bridge port is closed by the
 * loop once the thread said it exited (or at exit, for a thread still in a
 * step, whose later wakes are then dropped) and released with the job.
 */
#include "api/cp_job.h"
#include "api/cp_jobs.h"
#include "api/cp_node_pools.h"
#include "http/cp_reply.h"
#include "pr_token.h"
#include "sl_thread.h"
#include "sl_time.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis.h>

#define JOB_TTL_S	 (7 * 24 * 3600) /* the Redis record */
#define JOB_KEEP_MS	 (3600 * 1000)	 /* a finished job in memory */
#define JOBS_KEEP	 64		 /* finished jobs in memory at most */
#define REFRESH_MS	 5000		 /* record and lease refreshed */
#define LOST_MS		 45000		 /* a running record not refreshed for this long */
#define POLL_MS		 500		 /* a stream of another control plane's job */
#define KEEPALIVE_MS	 15000		 /* a comment down an idle stream */
#define SHUTDOWN_WAIT_MS 10000		 /* running jobs waited for at exit */
#define RUNNING_ON_EXIT	 "interrupted"

/* One event stream: a local job's (job set) or another control plane's,
 * polled from Redis (job NULL, doc the record last read). Ownership: malloc'd when a client
 * subscribes; freed by sub_free when its stream ends or the client goes (sub_stop), with doc. */
struct sub {
	struct cp_server *s;
	h2o_req_t *req;
	h2o_generator_t gen;
	struct cp_job *job;
	struct sub *next;
	char id[64];
	json_t *doc;
	long next_seq;
	int sending, final_sent, polling;
	uint64_t last_sent_ms;
	h2o_timeout_entry_t tick;
};

static const char *const status_names[] = {"running", "succeeded", "failed", "cancelled",
					   RUNNING_ON_EXIT};

static struct cp_job *jobs; /* the table, newest first (one server per process) */
static h2o_timeout_t refresh_to, poll_to, keepalive_to;
static int timeouts_ready;

void cp_job_unref(struct cp_job *j)
{
	if (atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	cp_bridge_port_release(&j->port);
	pthread_mutex_destroy(&j->mu);
	json_decref(j->events);
	json_decref(j->result);
	cp_ssh_config_wipe(&j->cfg);
	explicit_bzero(j->sudo_pw, sizeof(j->sudo_pw));
	explicit_bzero(j->secret, sizeof(j->secret));
	free(j);
}

struct cp_job *cp_job_find(const char *id)
{
	for (struct cp_job *j = jobs; j; j = j->next)
		if (strcmp(j->id, id) == 0)
			return j;
	return NULL;
}

static void timeouts_init(struct cp_server *s)
{
	if (timeouts_ready)
		return;
	h2o_timeout_init(s->loop, &refresh_to, REFRESH_MS);
	h2o_timeout_init(s->loop, &poll_to, POLL_MS);
	h2o_timeout_init(s->loop, &keepalive_to, KEEPALIVE_MS);
	timeouts_ready = 1;
}

/* ---- the job as JSON ---- */

/* The job's document (events included or not); the caller holds mu. */
static json_t *doc_locked(const struct cp_job *j, int with_events)
{
	json_t *o = json_pack(
		"{s:s,s:s,s:s,s:s,s:s,s:b,s:o,s:o,s:I,s:O}", "id", j->id, "kind", "provision",
		"node", j->node_id, "status", status_names[j->status], "actor", j->actor, "check",
		j->check, "createdAt", cp_iso_time(j->created_ms / 1000), "finishedAt",
		j->finished_ms ? cp_iso_time(j->finished_ms / 1000) : json_null(), "updatedMs",
		(json_int_t)sl_wall_ms(), "result", j->result ? j->result : json_null());

	if (o)
		json_object_set_new(o, "steps",
				    json_integer((json_int_t)json_array_size(j->events)));
	/* A copy: the thread appends to the array (its elements never change). */
	if (o && with_events)
		json_object_set_new(o, "events", json_copy(j->events));
	return o;
}

json_t *cp_job_doc(struct cp_job *j, int with_events)
{
	json_t *o;

	pthread_mutex_lock(&j->mu);
	o = doc_locked(j, with_events);
	pthread_mutex_unlock(&j->mu);
	return o;
}

/* A record read from Redis: "running" that nobody refreshes is "lost". */
json_t *cp_job_remote_doc(const char *text, size_t len)
{
	json_t *o = json_loadb(text, len, 0, NULL);
	json_int_t at = json_integer_value(json_object_get(o, "updatedMs"));

	if (o && strcmp(json_string_value(json_object_get(o, "status")) ?: "", "running") == 0 &&
	    at < (json_int_t)sl_wall_ms() - LOST_MS)
		json_object_set_new(o, "status", json_string("lost"));
	return o;
}

/* ---- the thread ---- */

static void on_event(void *arg, const struct cp_mgr_event *ev)
{
	struct cp_job *j = arg;
	json_t *o = cp_mgr_event_json(ev);

	pthread_mutex_lock(&j->mu);
	if (o) {
		json_object_set_new(o, "seq", json_integer((json_int_t)json_array_size(j->events)));
		json_array_append_new(j->events, o);
	}
	pthread_mutex_unlock(&j->mu);
	cp_bridge_wake(&j->port);
}

static void *job_main(void *arg)
{
	struct cp_job *j = arg;
	struct cp_ssh_pool *pool = cp_node_pool_get(j->node_id, &j->cfg);
	struct cp_mgr m = {.pool = pool,
			   .check = j->check,
			   .sudo = strcmp(j->cfg.user, "root") != 0,
			   .sudo_password = j->sudo_pw[0] ? j->sudo_pw : NULL,
			   .on_event = on_event,
			   .arg = j,
			   .cancel = &j->cancel};
	double t0 = sl_mono_ms_f();
	int rc;

	if (pool) {
		rc = cp_provision(&m, &j->spec);
	} else {
		rc = cp_mgr_fail(&m, -ENOMEM, CP_MGR_SETUP, "connect", j->node_id, 1,
				 "out of memory");
	}
	pthread_mutex_lock(&j->mu);
	j->result = cp_mgr_result_json(&m, rc, sl_mono_ms_f() - t0);
	j->status = rc == 0				   ? CP_JOB_SUCCEEDED
		    : strcmp(m.err.step, "cancelled") == 0 ? CP_JOB_CANCELLED
							   : CP_JOB_FAILED;
	j->finished_ms = sl_wall_ms();
	j->ended = 1;
	pthread_mutex_unlock(&j->mu);
	if (pool)
		cp_node_pool_put(pool);
	pthread_mutex_lock(&j->mu);
	j->exited = 1; /* nothing of the loop's is used any more */
	pthread_mutex_unlock(&j->mu);
	cp_bridge_wake(&j->port);
	cp_job_unref(j);
	return NULL;
}

/* ---- the loop: Redis record, lease, event streams ---- */

static int sub_flush(struct sub *u);
static void mirror(struct cp_job *j);

static void on_lock_released(void *ud, redisReply *r, const char *err)
{
	(void)r;
	(void)err; /* the lease runs out by itself */
	cp_job_unref(ud);
}

/* The node's lock, if it is still ours (a compare-and-delete). */
static void release_lock(struct cp_job *j)
{
	static const char RELEASE[] =
		"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
		"end return 0";

	if (j->lock_released)
		return;
	j->lock_released = 1;
	atomic_fetch_add(&j->refs, 1);
	cp_rdb_cmdf(j->s->db, on_lock_released, j, "EVAL %s 1 sl:node:%s:job %s", RELEASE,
		    j->node_id, j->id);
}

/* A write that failed (Redis down) is made again by the next step or the
 * next refresh, which goes on until the final record is stored. */
static void on_mirrored(void *ud, redisReply *r, const char *err)
{
	struct cp_job *j = ud;

	j->mirror_busy = 0;
	if (!err && r && r->type == REDIS_REPLY_STATUS && j->mirror_final) {
		j->final_mirrored = 1;
		release_lock(j);
	}
	if (j->mirror_again && !err) /* err: down or closing; the refresh tries again */
		mirror(j);
	cp_job_unref(j);
}

/* Write the job's record (the lock goes once the final one is stored). */
static void mirror(struct cp_job *j)
{
	json_t *o;
	char *text;
	int ended;

	if (j->mirror_busy) {
		j->mirror_again = 1;
		return;
	}
	j->mirror_again = 0;
	pthread_mutex_lock(&j->mu);
	o = doc_locked(j, 1);
	ended = j->ended;
	pthread_mutex_unlock(&j->mu);
	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!text)
		return;
	j->mirror_busy = 1;
	j->mirror_final = ended && j->thread_done;
	atomic_fetch_add(&j->refs, 1);
	cp_rdb_cmdf(j->s->db, on_mirrored, j, "SET sl:job:%s %s EX %d", j->id, text, JOB_TTL_S);
	free(text);
}

static void on_cancel_key(void *ud, redisReply *r, const char *err)
{
	struct cp_job *j = ud;

	if (!err && r && r->type == REDIS_REPLY_STRING)
		__atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
	cp_job_unref(j);
}

/* While running: the record and the lease kept fresh, a cancel looked for;
 * once ended, until the final record is stored. */
static void on_refresh(h2o_timeout_entry_t *e)
{
	struct cp_job *j = H2O_STRUCT_FROM_MEMBER(struct cp_job, refresh, e);

	if (j->final_mirrored)
		return;
	mirror(j);
	if (!j->thread_done) {
		cp_rdb_cmdf(j->s->db, NULL, NULL, "PEXPIRE sl:node:%s:job %d", j->node_id,
			    CP_JOB_LEASE_MS);
		atomic_fetch_add(&j->refs, 1);
		cp_rdb_cmdf(j->s->db, on_cancel_key, j, "GET sl:job:%s:cancel", j->id);
	}
	h2o_timeout_link(j->s->loop, &refresh_to, &j->refresh);
}

/* Finished jobs beyond JOBS_KEEP or older than JOB_KEEP_MS leave memory
 * (their record stays in Redis). */
static void prune(void)
{
	uint64_t now = sl_wall_ms();
	unsigned kept = 0;

	for (struct cp_job **pp = &jobs; *pp;) {
		struct cp_job *j = *pp;

		if (j->thread_done && j->final_mirrored &&
		    (++kept > JOBS_KEEP || j->finished_ms + JOB_KEEP_MS < now)) {
			*pp = j->next;
			cp_job_unref(j);
			continue;
		}
		pp = &j->next;
	}
}

/* The thread posted events, or exited: the streams and the record follow.
 * The table's reference keeps j alive through this. */
static void on_wake(struct cp_bridge_port *p)
{
	struct cp_job *j = H2O_STRUCT_FROM_MEMBER(struct cp_job, port, p);
	int exited;

	pthread_mutex_lock(&j->mu);
	exited = j->exited;
	pthread_mutex_unlock(&j->mu);
	if (exited && !j->thread_done) {
		cp_bridge_port_close(p);
		j->thread_done = 1;
	}
	mirror(j);
	for (struct sub *u = j->subs, *nx; u; u = nx) {
		nx = u->next; /* a stream that sends its last frame is freed */
		sub_flush(u);
	}
	if (exited)
		prune();
}

/* ---- event streams ---- */

static void sub_unlink(struct sub *u)
{
	if (h2o_timeout_is_linked(&u->tick))
		h2o_timeout_unlink(&u->tick);
	if (u->job) {
		for (struct sub **pp = &u->job->subs; *pp; pp = &(*pp)->next)
			if (*pp == u) {
				*pp = u->next;
				break;
			}
	}
}

/* Freed unless a Redis poll still refers to it (its reply frees it). */
static void sub_free(struct sub *u)
{
	sub_unlink(u);
	u->req = NULL;
	if (u->polling)
		return;
	if (u->job)
		cp_job_unref(u->job);
	json_decref(u->doc);
	free(u);
}

/* One SSE frame per event from next_seq on; "done" once the job ended,
 * after which u is freed: 1 then, else 0. */
static int sub_flush(struct sub *u)
{
	json_t *doc, *evs;
	const char *st;
	int last;
	h2o_iovec_t buf[2];
	size_t nbuf = 0, cap = 0, len = 0;
	char *out = NULL;

	if (!u->req || u->sending || u->final_sent) /* the job's copy is made only to send */
		return 0;
	if (!(doc = u->job ? cp_job_doc(u->job, 1) : json_incref(u->doc)))
		return 0;
	evs = json_object_get(doc, "events");
	st = json_string_value(json_object_get(doc, "status")) ?: "running";
	last = strcmp(st, "running") != 0;
	for (size_t i = (size_t)u->next_seq; i < json_array_size(evs); i++) {
		char *t = json_dumps(json_array_get(evs, i), JSON_COMPACT);
		size_t n = t ? strlen(t) + 64 : 0;

		if (!t)
			break;
		if (len + n > cap) {
			char *p = h2o_mem_alloc_pool(&u->req->pool, (cap = (len + n) * 2));

			if (len)
				memcpy(p, out, len);
			out = p;
		}
		len += (size_t)snprintf(out + len, cap - len, "id: %zu\nevent: step\ndata: %s\n\n",
					i, t);
		free(t);
		u->next_seq = (long)i + 1;
	}
	if (len)
		buf[nbuf++] = h2o_iovec_init(out, len);
	if (last) {
		char *t;

		json_object_del(doc, "events");
		t = json_dumps(doc, JSON_COMPACT);
		if (t) {
			h2o_iovec_t f;

			f.len = strlen(t) + 32;
			f.base = h2o_mem_alloc_pool(&u->req->pool, f.len);
			f.len = (size_t)snprintf(f.base, f.len, "event: done\ndata: %s\n\n", t);
			buf[nbuf++] = f;
			free(t);
		}
	} else if (!nbuf && u->last_sent_ms + KEEPALIVE_MS <= sl_wall_ms()) {
		buf[nbuf++] = h2o_iovec_init(H2O_STRLIT(": keep-alive\n\n"));
	}
	json_decref(doc);
	if (!nbuf)
		return 0;
	u->sending = 1;
	u->final_sent = last;
	u->last_sent_ms = sl_wall_ms();
	h2o_send(u->req, buf, nbuf, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
	if (last) /* h2o forgets the generator with the final send */
		sub_free(u);
	return last;
}

static void sub_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
	struct sub *u = H2O_STRUCT_FROM_MEMBER(struct sub, gen, gen);

	(void)req;
	u->sending = 0;
	sub_flush(u);
}

static void sub_stop(h2o_generator_t *gen, h2o_req_t *req)
{
	(void)req;
	sub_free(H2O_STRUCT_FROM_MEMBER(struct sub, gen, gen));
}

static void on_polled(void *ud, redisReply *r, const char *err)
{
	struct sub *u = ud;

	u->polling = 0;
	if (!u->req) { /* the client left while the poll was out */
		sub_free(u);
		return;
	}
	if (!err && r && r->type == REDIS_REPLY_STRING) {
		json_t *d = cp_job_remote_doc(r->str, r->len);

		if (d) {
			json_decref(u->doc);
			u->doc = d;
		}
	}
	if (!sub_flush(u))
		h2o_timeout_link(u->s->loop, &poll_to, &u->tick);
}

/* A local stream's keep-alive, or a remote stream's poll. */
static void on_sub_tick(h2o_timeout_entry_t *e)
{
	struct sub *u = H2O_STRUCT_FROM_MEMBER(struct sub, tick, e);

	if (u->job) {
		if (!sub_flush(u))
			h2o_timeout_link(u->s->loop, &keepalive_to, &u->tick);
		return;
	}
	u->polling = 1;
	cp_rdb_cmdf(u->s->db, on_polled, u, "GET sl:job:%s", u->id);
}

/* Last-Event-ID: the seq of the last event the client has. */
static long resume_from(h2o_req_t *req)
{
	ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("last-event-id"), -1);
	char num[24];
	size_t n;
	long v;

	if (i < 0)
		return 0;
	n = req->headers.entries[i].value.len;
	if (n == 0 || n >= sizeof(num))
		return 0;
	memcpy(num, req->headers.entries[i].value.base, n);
	num[n] = '\0';
	v = strtol(num, NULL, 10);
	return v >= 0 && v < LONG_MAX ? v + 1 : 0;
}

/* Start the stream of a local job (j) or of a record read from Redis. */
void cp_job_stream(struct cp_op *op, struct cp_job *j, json_t *remote)
{
	struct sub *u = calloc(1, sizeof(*u));
	h2o_req_t *req = op->req;

	if (!u) {
		json_decref(remote);
		cp_op_error(op, 500, "internal", "out of memory");
		return;
	}
	timeouts_init(op->s);
	u->s = op->s;
	u->req = req;
	u->next_seq = resume_from(req);
	snprintf(u->id, sizeof(u->id), "%s", op->id);
	u->gen.proceed = sub_proceed;
	u->gen.stop = sub_stop;
	u->tick.cb = on_sub_tick;
	u->last_sent_ms = sl_wall_ms();
	if (j) {
		atomic_fetch_add(&j->refs, 1);
		u->job = j;
		u->next = j->subs;
		j->subs = u;
	}
	u->doc = remote;
	cp_op_release(op);
	cp_start_stream(u->s, req, 200, "text/event-stream");
	h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-accel-buffering"), 0,
			      NULL, H2O_STRLIT("no"));
	h2o_start_response(req, &u->gen);
	/* The first frame: a reconnect delay for EventSource, then what exists. */
	u->sending = 1;
	h2o_send(req, &(h2o_iovec_t){H2O_STRLIT("retry: 2000\n\n")}, 1, H2O_SEND_STATE_IN_PROGRESS);
	h2o_timeout_link(u->s->loop, j ? &keepalive_to : &poll_to, &u->tick);
}

/* ---- the table ---- */

struct cp_job *cp_job_new(struct cp_server *s, const char *node_id, const char *actor)
{
	struct cp_job *j = calloc(1, sizeof(*j));
	char rnd[21];

	if (!j || pr_random_alnum(rnd, 20) < 0 || !(j->events = json_array())) {
		free(j);
		return NULL;
	}
	snprintf(j->id, sizeof(j->id), "jb_%s", rnd);
	snprintf(j->node_id, sizeof(j->node_id), "%s", node_id);
	snprintf(j->actor, sizeof(j->actor), "%s", actor);
	j->s = s;
	j->created_ms = sl_wall_ms();
	pthread_mutex_init(&j->mu, NULL);
	atomic_init(&j->refs, 1);
	return j;
}

static int start_thread(struct cp_job *j)
{
	int rc;

	cp_bridge_port_open(j->s->bridge, &j->port, on_wake);
	atomic_fetch_add(&j->refs, 1); /* the thread's */
	if ((rc = sl_thread_detached(job_main, j)) < 0) {
		atomic_fetch_sub(&j->refs, 1);
		cp_bridge_port_close(&j->port);
		return rc;
	}
	return 0;
}

unsigned cp_jobs_running(void)
{
	unsigned n = 0;

	for (struct cp_job *j = jobs; j; j = j->next)
		n += !j->thread_done;
	return n;
}

int cp_job_start(struct cp_job *j)
{
	int rc = start_thread(j);

	if (rc < 0)
		return rc;
	j->next = jobs;
	jobs = j;
	timeouts_init(j->s);
	j->refresh.cb = on_refresh;
	h2o_timeout_link(j->s->loop, &refresh_to, &j->refresh);
	mirror(j);
	return 0;
}

int cp_job_cancel(struct cp_job *j)
{
	int ended;

	pthread_mutex_lock(&j->mu);
	ended = j->ended;
	pthread_mutex_unlock(&j->mu);
	if (ended)
		return -EALREADY;
	__atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
	return 0;
}

/* ---- exit ---- */

void cp_jobs_shutdown(struct cp_server *s)
{
	uint64_t until = h2o_now(s->loop) + SHUTDOWN_WAIT_MS;

	for (struct cp_job *j = jobs; j; j = j->next)
		__atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
	while (cp_jobs_running() > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
	for (struct cp_job *j = jobs; j; j = j->next) {
		if (j->thread_done)
			continue;
		/* Still in a step: recorded as interrupted; the thread keeps its
		 * reference and dies with the process. */
		pthread_mutex_lock(&j->mu);
		j->status = CP_JOB_INTERRUPTED;
		j->ended = 1;
		j->finished_ms = sl_wall_ms();
		pthread_mutex_unlock(&j->mu);
		if (h2o_timeout_is_linked(&j->refresh))
			h2o_timeout_unlink(&j->refresh);
		cp_bridge_port_close(&j->port); /* its later wakes are dropped */
		j->thread_done = 1;
		j->mirror_busy = 0;
		mirror(j);
	}
	/* The records' writes answered (bounded by the Redis timeout). */
	until = h2o_now(s->loop) + (uint64_t)s->cfg.redis_timeout_ms + 200;
	for (;;) {
		int busy = 0;

		for (struct cp_job *j = jobs; j; j = j->next)
			busy |= j->mirror_busy;
		if (!busy || h2o_now(s->loop) >= until)
			break;
		h2o_evloop_run(s->loop, 50);
	}
	while (jobs) {
		struct cp_job *j = jobs;

		jobs = j->next;
		if (h2o_timeout_is_linked(&j->refresh))
			h2o_timeout_unlink(&j->refresh);
		while (j->subs) {
			struct sub *u = j->subs;

			j->subs = u->next;
			u->job = NULL;
			cp_job_unref(j);
		}
		cp_job_unref(j);
	}
}
