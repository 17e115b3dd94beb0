/*
 * cp_jobs.c: provisioning a node as an asynchronous job (admin scope only).
 *
 *   POST   /api/v1/nodes/{id}/provision  start: 202 with the job and its
 *                                        Location; 409 while the node has one
 *   GET    /api/v1/jobs/{id}             the job: status, every step so far,
 *                                        the result (with the typed error)
 *   GET    /api/v1/jobs/{id}/events      the same as Server-Sent Events: each
 *                                        step as it ends ("step", id = its
 *                                        seq; Last-Event-ID resumes), then
 *                                        "done" with the result, then close
 *   DELETE /api/v1/jobs/{id}             cancel: the job stops before its next
 *                                        step (a step under way finishes)
 *
 * The work runs on a thread of its own (cp_provision over the node's warm
 * pool); each step's event goes to the job under its mutex and a byte down a
 * pipe wakes the loop, which feeds the job's event streams and mirrors the
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
 * stream and each Redis command in flight. The pipe's write end is the
 * thread's (closed after its last event, so the loop never closes a
 * descriptor the thread may still write to); the read end is the loop's.
 */
#include "api/cp_jobs.h"
#include "api/cp_node_pools.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_reply.h"
#include "http/cp_route.h"
#include "mgr/cp_provision.h"
#include "mgr/cp_security.h"
#include "pr_token.h"
#include "sl_time.h"
#include "sl_thread.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis.h>

#define JOB_TTL_S	 (7 * 24 * 3600) /* the Redis record */
#define JOB_KEEP_MS	 (3600 * 1000)	 /* a finished job in memory */
#define JOBS_KEEP	 64		 /* finished jobs in memory at most */
#define JOBS_RUNNING_MAX 16		 /* provisioning at once, per control plane */
#define LEASE_MS	 60000		 /* the node's lock */
#define REFRESH_MS	 5000		 /* record and lease refreshed */
#define LOST_MS		 45000		 /* a running record not refreshed for this long */
#define POLL_MS		 500		 /* a stream of another control plane's job */
#define KEEPALIVE_MS	 15000		 /* a comment down an idle stream */
#define SHUTDOWN_WAIT_MS 10000		 /* running jobs waited for at exit */
#define RUNNING_ON_EXIT	 "interrupted"
#define STR_MAX		 256

enum job_status { JOB_RUNNING = 0, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED, JOB_INTERRUPTED };
static const char *const status_names[] = {"running", "succeeded", "failed", "cancelled",
					   RUNNING_ON_EXIT};

struct sub;

struct cp_job {
	atomic_int refs;
	struct cp_job *next;   /* the server's table (loop) */
	struct cp_op *starter; /* the request starting it, until the lock's answer */
	struct cp_server *s;   /* loop side only: the thread never touches it */
	char id[32], node_id[64], actor[32];
	uint64_t created_ms, finished_ms;
	pthread_mutex_t mu; /* events, result, status */
	json_t *events;	    /* array of event objects, each with its "seq" */
	json_t *result;	    /* cp_mgr_result_json once ended, else NULL */
	enum job_status status;
	int ended; /* the thread posted its result (under mu) */
	int check; /* plan only */
	volatile int cancel;
	int fds[2];
	h2o_socket_t *sock; /* the pipe's read end (loop) */
	int thread_done;    /* the loop saw the pipe's EOF */
	/* The record: a write in flight, another due, the one in flight the
	 * final one, the final one stored; then the node's lock freed. */
	int mirror_busy, mirror_again, mirror_final, final_mirrored, lock_released;
	h2o_timeout_entry_t refresh;
	struct sub *subs; /* event streams on this loop */
	/* the work (the thread's) */
	struct cp_ssh_config cfg;
	char sudo_pw[128];
	struct cp_provision_spec spec;
	char strs[8][STR_MAX]; /* the spec's strings, copied (keep()) */
	char ssh_extra[1024];
	char secret[256];
};

/* One event stream: a local job's (job set) or another control plane's,
 * polled from Redis (job NULL, doc the record last read). */
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

static struct cp_job *jobs; /* the table, newest first (one server per process) */
static h2o_timeout_t refresh_to, poll_to, keepalive_to;
static int timeouts_ready;

static void job_unref(struct cp_job *j)
{
	if (atomic_fetch_sub(&j->refs, 1) != 1)
		return;
	pthread_mutex_destroy(&j->mu);
	json_decref(j->events);
	json_decref(j->result);
	cp_ssh_config_wipe(&j->cfg);
	explicit_bzero(j->sudo_pw, sizeof(j->sudo_pw));
	explicit_bzero(j->secret, sizeof(j->secret));
	free(j);
}

static struct cp_job *find(const char *id)
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

static json_t *job_doc(struct cp_job *j, int with_events)
{
	json_t *o;

	pthread_mutex_lock(&j->mu);
	o = doc_locked(j, with_events);
	pthread_mutex_unlock(&j->mu);
	return o;
}

/* A record read from Redis: "running" that nobody refreshes is "lost". */
static json_t *remote_doc(const char *text, size_t len)
{
	json_t *o = json_loadb(text, len, 0, NULL);
	json_int_t at = json_integer_value(json_object_get(o, "updatedMs"));

	if (o && strcmp(json_string_value(json_object_get(o, "status")) ?: "", "running") == 0 &&
	    at < (json_int_t)sl_wall_ms() - LOST_MS)
		json_object_set_new(o, "status", json_string("lost"));
	return o;
}

/* ---- the thread ---- */

static void wake(struct cp_job *j)
{
	if (write(j->fds[1], "x", 1) < 0) {
		/* full: a wake-up is pending already; EPIPE: the loop is gone */
	}
}

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
	wake(j);
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
		cp_mgr_fail(&m, CP_MGR_SETUP, "connect", j->node_id, 1, "out of memory");
		rc = -1;
	}
	pthread_mutex_lock(&j->mu);
	j->result = cp_mgr_result_json(&m, rc, sl_mono_ms_f() - t0);
	j->status = rc == 0				   ? JOB_SUCCEEDED
		    : strcmp(m.err.step, "cancelled") == 0 ? JOB_CANCELLED
							   : JOB_FAILED;
	j->finished_ms = sl_wall_ms();
	j->ended = 1;
	pthread_mutex_unlock(&j->mu);
	if (pool)
		cp_node_pool_put(pool);
	close(j->fds[1]); /* the loop sees EOF: the job ended */
	job_unref(j);
	return NULL;
}

/* ---- the loop: Redis record, lease, event streams ---- */

static int sub_flush(struct sub *u);
static void mirror(struct cp_job *j);

static void on_lock_released(void *ud, redisReply *r, const char *err)
{
	(void)r;
	(void)err; /* the lease runs out by itself */
	job_unref(ud);
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
	job_unref(j);
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
	job_unref(j);
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
			    LEASE_MS);
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
			job_unref(j);
			continue;
		}
		pp = &j->next;
	}
}

static void on_wake(h2o_socket_t *sock, const char *err)
{
	struct cp_job *j = sock->data;

	h2o_buffer_consume(&sock->input, sock->input->size);
	if (err) { /* EOF: the thread has posted its result and returned */
		h2o_socket_read_stop(sock);
		h2o_socket_close(sock);
		j->sock = NULL;
		j->thread_done = 1;
	}
	mirror(j);
	for (struct sub *u = j->subs, *nx; u; u = nx) {
		nx = u->next; /* a stream that sends its last frame is freed */
		sub_flush(u);
	}
	if (err)
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
		job_unref(u->job);
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
	if (!(doc = u->job ? job_doc(u->job, 1) : json_incref(u->doc)))
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
		json_t *d = remote_doc(r->str, r->len);

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
static void start_stream(struct cp_op *op, struct cp_job *j, json_t *remote)
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

/* ---- routes ---- */

/* A jobs request: GET of the events stream, or of the job. The op's own
 * (cp_op_new with this size); it owns nothing more. */
struct job_op {
	struct cp_op op;
	int events;
};

static int wants_events(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct job_op, op, op)->events;
}

static void on_record(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *d;

	if (err || !r || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->type != REDIS_REPLY_STRING) {
		cp_op_error(op, 404, "not_found", "no job %s (records are kept 7 days)", op->id);
		return;
	}
	if (!(d = remote_doc(r->str, r->len))) {
		cp_op_error(op, 500, "internal", "the job's record is unreadable");
		return;
	}
	if (wants_events(op))
		start_stream(op, NULL, d);
	else
		cp_op_reply(op, 200, d);
}

static void jobs_get(struct cp_op *op)
{
	struct cp_job *j = find(op->id);

	if (!op->req) {
		cp_op_reply(op, 499, json_null());
		return;
	}
	if (!j) {
		cp_rdb_cmdf(op->s->db, on_record, op, "GET sl:job:%s", op->id);
		return;
	}
	if (wants_events(op))
		start_stream(op, j, NULL);
	else
		cp_op_reply(op, 200, job_doc(j, 1));
}

static void on_cancel_set(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || !r || r->type == REDIS_REPLY_ERROR) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[1]->type != REDIS_REPLY_STRING) {
		cp_op_error(op, 404, "not_found", "no job %s", op->id);
		return;
	}
	cp_op_reply(op, 202,
		    json_pack("{s:s,s:s}", "id", op->id, "status",
			      strstr(r->element[1]->str, "\"status\":\"running\"") ? "cancelling"
										   : "ended"));
}

static void jobs_cancel(struct cp_op *op)
{
	struct cp_job *j = find(op->id);
	int ended;

	if (op->req)
		cp_audit(op->s, op->req, "job_cancel", op->actor.key_id, op->id);
	if (!j) { /* maybe another control plane's: it looks on its refresh */
		cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
		cp_rdb_cmdf(op->s->db, NULL, NULL, "SET sl:job:%s:cancel 1 EX 3600", op->id);
		cp_rdb_cmdf(op->s->db, NULL, NULL, "GET sl:job:%s", op->id);
		cp_rdb_cmdf(op->s->db, on_cancel_set, op, "EXEC");
		return;
	}
	pthread_mutex_lock(&j->mu);
	ended = j->ended;
	pthread_mutex_unlock(&j->mu);
	if (ended) {
		cp_op_error(op, 409, "job_ended", "job %s has ended; nothing to cancel", op->id);
		return;
	}
	__atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
	cp_op_reply(op, 202, json_pack("{s:s,s:s}", "id", op->id, "status", "cancelling"));
}

int cp_jobs_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
	int del = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"));
	const char *slash = id ? memchr(id, '/', id_len) : NULL;
	size_t n = slash ? (size_t)(slash - id) : id_len;
	int events = slash && id_len - n == 7 && memcmp(slash, "/events", 7) == 0;
	struct cp_op *op;

	if (!id || !cp_prefixed_id_ok(id, n, "jb_", 30) || (slash && !events)) {
		cp_send_error(s, req, 404, "not_found", id ? "no such job" : "no such endpoint");
		return 0;
	}
	if (!(get || (del && !slash))) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req, sizeof(struct job_op))) == NULL)
		return -1;
	memcpy(op->id, id, n);
	op->id[n] = '\0';
	H2O_STRUCT_FROM_MEMBER(struct job_op, op, op)->events = events;
	cp_auth(op, CP_SCOPE_ADMIN, del ? jobs_cancel : jobs_get);
	return 0;
}

/* ---- starting a provision ---- */

static const char *const provision_fields[] = {"check",	   "lockdown", "relayId", "http",
					       "agents",   "admin",    "domain",  "redisUrl",
					       "sshExtra", "firewall"};

/* Text that goes into the relay's configuration: no quotes, no control
 * characters, no spaces. */
static int conf_value_ok(const char *v, size_t max)
{
	size_t n = strlen(v);

	if (n == 0 || n > max)
		return 0;
	for (; *v; v++)
		if ((unsigned char)*v <= 0x20 || *v == 0x7f || *v == '"' || *v == '\\')
			return 0;
	return 1;
}

static int addr_ok(const char *v)
{
	const char *c = strrchr(v, ':');

	return conf_value_ok(v, 200) && c && c != v && atoi(c + 1) > 0 && atoi(c + 1) < 65536;
}

int cp_jobs_check_provision(struct cp_op *op, json_t *o)
{
	static const char *const addrs[] = {"http", "agents", "admin"};
	const char *k, *v;
	json_t *val;
	char why[200];

	if (!json_is_object(o)) {
		cp_op_error(op, 400, "invalid_json", "the body must be a JSON object");
		return -1;
	}
	json_object_foreach(o, k, val)
	{
		int i = cp_op_field(op, provision_fields,
				    sizeof(provision_fields) / sizeof(provision_fields[0]), k);

		if (i < 0)
			return -1;
		if (i == 0 ? !json_is_boolean(val) : !json_is_string(val)) {
			cp_op_error(op, 400, "invalid_type", "%s: %s", k,
				    i == 0 ? "true or false" : "a string");
			return -1;
		}
	}
	for (size_t i = 0; i < 3; i++)
		if ((v = json_string_value(json_object_get(o, addrs[i]))) && !addr_ok(v)) {
			cp_op_error(op, 400, "invalid_address", "%s: host:port", addrs[i]);
			return -1;
		}
	if ((v = json_string_value(json_object_get(o, "lockdown"))) && cp_lockdown_parse(v) < 0) {
		cp_op_error(op, 400, "invalid_lockdown",
			    "lockdown: none, basic, standard or strict");
		return -1;
	}
	if ((v = json_string_value(json_object_get(o, "firewall"))) && cp_firewall_parse(v) < 0) {
		cp_op_error(op, 400, "invalid_firewall", "firewall: auto, ufw or iptables");
		return -1;
	}
	if (((v = json_string_value(json_object_get(o, "relayId"))) && !conf_value_ok(v, 64)) ||
	    ((v = json_string_value(json_object_get(o, "domain"))) && !conf_value_ok(v, 253))) {
		cp_op_error(op, 400, "invalid_value",
			    "relayId, domain: no spaces, quotes or controls");
		return -1;
	}
	if ((v = json_string_value(json_object_get(o, "redisUrl"))) &&
	    (!conf_value_ok(v, STR_MAX - 1) || sl_redis_url_check(v, why, sizeof(why)) < 0)) {
		cp_op_error(op, 400, "invalid_redis_url", "redisUrl: a redis:// URL");
		return -1;
	}
	if ((v = json_string_value(json_object_get(o, "sshExtra"))) && strlen(v) > 1000) {
		cp_op_error(op, 400, "invalid_value", "sshExtra: 1000 characters at most");
		return -1;
	}
	return 0;
}

/* A string of the body (or def) copied into the job's slot i. */
static const char *keep(struct cp_job *j, int i, json_t *body, const char *field, const char *def)
{
	const char *v = field ? json_string_value(json_object_get(body, field)) : NULL;

	snprintf(j->strs[i], STR_MAX, "%s", v ? v : def ? def : "");
	return j->strs[i];
}

/* A relay id from the node's name when it is one, else the node's id. */
static const char *relay_id_of(const struct cp_job_node *node)
{
	return conf_value_ok(node->name, 64) ? node->name : node->id;
}

static struct cp_job *job_new(struct cp_op *op, const struct cp_job_node *node)
{
	const struct cp_server_config *c = &op->s->cfg;
	struct cp_job *j = calloc(1, sizeof(*j));
	json_t *b = op->acc;
	char rnd[21];

	if (!j || pr_random_alnum(rnd, 20) < 0 || !(j->events = json_array())) {
		free(j);
		return NULL;
	}
	snprintf(j->id, sizeof(j->id), "jb_%s", rnd);
	snprintf(j->node_id, sizeof(j->node_id), "%s", node->id);
	snprintf(j->actor, sizeof(j->actor), "%s", op->actor.key_id);
	j->s = op->s;
	j->cfg = *node->cfg;
	snprintf(j->sudo_pw, sizeof(j->sudo_pw), "%s", node->sudo_password);
	snprintf(j->secret, sizeof(j->secret), "%s", c->session_secret);
	snprintf(j->ssh_extra, sizeof(j->ssh_extra), "%s",
		 json_string_value(json_object_get(b, "sshExtra")) ?: "");
	j->spec = (struct cp_provision_spec){
		.relay_binary = keep(j, 0, NULL, NULL, c->relay_binary),
		.relay_id = keep(j, 1, b, "relayId", relay_id_of(node)),
		.redis_url =
			keep(j, 2, b, "redisUrl",
			     c->relay_redis && *c->relay_redis ? c->relay_redis : c->redis_url),
		.session_secret = j->secret,
		.http = keep(j, 3, b, "http", "0.0.0.0:80"),
		.agents = keep(j, 4, b, "agents", "0.0.0.0:7000"),
		.admin = keep(j, 5, b, "admin", "127.0.0.1:9090"),
		.domain = keep(j, 6, b, "domain", "localhost"),
		.lockdown = cp_lockdown_parse(json_string_value(json_object_get(b, "lockdown"))
						      ?: "standard"),
		.firewall = cp_firewall_parse(json_string_value(json_object_get(b, "firewall"))
						      ?: "auto"),
		.ssh_extra = j->ssh_extra,
		.verify_redis = keep(j, 7, NULL, NULL, c->redis_url)};
	j->check = json_is_true(json_object_get(b, "check"));
	j->created_ms = sl_wall_ms();
	j->fds[0] = j->fds[1] = -1;
	pthread_mutex_init(&j->mu, NULL);
	atomic_init(&j->refs, 1);
	return j;
}

static int start_thread(struct cp_job *j)
{
	int rc;

	if (pipe2(j->fds, O_CLOEXEC | O_NONBLOCK) < 0)
		return -errno;
	atomic_fetch_add(&j->refs, 1); /* the thread's */
	if ((rc = sl_thread_detached(job_main, j)) < 0) {
		atomic_fetch_sub(&j->refs, 1);
		close(j->fds[0]);
		close(j->fds[1]);
		return rc;
	}
	j->sock = h2o_evloop_socket_create(j->s->loop, j->fds[0], 0);
	j->sock->data = j;
	h2o_socket_read_start(j->sock, on_wake);
	return 0;
}

static unsigned running_jobs(void)
{
	unsigned n = 0;

	for (struct cp_job *j = jobs; j; j = j->next)
		n += !j->thread_done;
	return n;
}

/* The lock's answer: ours (OK), or the id of the job that holds it. */
static void on_locked(void *ud, redisReply *r, const char *err)
{
	struct cp_job *j = ud;
	struct cp_op *op = j->starter;
	char *loc;

	j->starter = NULL;
	if (err || !r || r->type == REDIS_REPLY_ERROR || r->type != REDIS_REPLY_ARRAY ||
	    r->elements != 2) {
		job_unref(j);
		cp_op_redis_error(op, r && r->type == REDIS_REPLY_ERROR ? r : NULL,
				  err ? err : "unexpected reply");
		return;
	}
	if (r->element[0]->type != REDIS_REPLY_STATUS) {
		const redisReply *h = r->element[1];

		cp_op_error(op, 409, "job_running", "node %s is being provisioned by job %s",
			    j->node_id, h->type == REDIS_REPLY_STRING ? h->str : "?");
		job_unref(j);
		return;
	}
	if (!op->req || op->s->stopping || start_thread(j) < 0) {
		cp_rdb_cmdf(op->s->db, NULL, NULL, "DEL sl:node:%s:job", j->node_id);
		cp_op_error(op, 503, "shutting_down", "cannot start the job now; retry");
		job_unref(j);
		return;
	}
	j->next = jobs;
	jobs = j;
	timeouts_init(op->s);
	j->refresh.cb = on_refresh;
	h2o_timeout_link(op->s->loop, &refresh_to, &j->refresh);
	mirror(j);
	cp_audit(op->s, op->req, "node_provision", op->actor.key_id, j->node_id);
	loc = h2o_mem_alloc_pool(&op->req->pool, 64);
	h2o_add_header(&op->req->pool, &op->req->res.headers, H2O_TOKEN_LOCATION, NULL, loc,
		       (size_t)snprintf(loc, 64, "/api/v1/jobs/%s", j->id));
	cp_op_reply(op, 202, job_doc(j, 0));
}

void cp_jobs_provision(struct cp_op *op, const struct cp_job_node *node)
{
	struct cp_job *j;

	if (!op->s->cfg.relay_binary || access(op->s->cfg.relay_binary, R_OK) != 0) {
		cp_op_error(op, 501, "no_relay_binary",
			    "this control plane has no relay binary to install (--relay-binary "
			    "%.200s)",
			    op->s->cfg.relay_binary ? op->s->cfg.relay_binary : "");
		return;
	}
	if (running_jobs() >= JOBS_RUNNING_MAX) {
		cp_op_error(op, 429, "too_many_jobs", "%d jobs are running here; retry later",
			    JOBS_RUNNING_MAX);
		return;
	}
	if (!(j = job_new(op, node))) {
		cp_op_error(op, 500, "internal", "cannot create the job");
		return;
	}
	/* The job holds op until the lock's answer, which ends op. */
	j->starter = op;
	cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(op->s->db, NULL, NULL, "SET sl:node:%s:job %s NX PX %d", j->node_id, j->id,
		    LEASE_MS);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "GET sl:node:%s:job", j->node_id);
	cp_rdb_cmdf(op->s->db, on_locked, j, "EXEC");
}

/* ---- exit ---- */

void cp_jobs_shutdown(struct cp_server *s)
{
	uint64_t until = h2o_now(s->loop) + SHUTDOWN_WAIT_MS;

	for (struct cp_job *j = jobs; j; j = j->next)
		__atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
	while (running_jobs() > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
	for (struct cp_job *j = jobs; j; j = j->next) {
		if (j->thread_done)
			continue;
		/* Still in a step: recorded as interrupted; the thread keeps its
		 * reference and dies with the process. */
		pthread_mutex_lock(&j->mu);
		j->status = JOB_INTERRUPTED;
		j->ended = 1;
		j->finished_ms = sl_wall_ms();
		pthread_mutex_unlock(&j->mu);
		if (h2o_timeout_is_linked(&j->refresh))
			h2o_timeout_unlink(&j->refresh);
		h2o_socket_read_stop(j->sock);
		h2o_socket_close(j->sock);
		j->sock = NULL;
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
			job_unref(j);
		}
		job_unref(j);
	}
}
