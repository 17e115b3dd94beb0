/*
 * cp_job.h: a provisioning job as the jobs routes (cp_jobs.c) and its
 * machinery (cp_job.c) share it: the struct, its table on this control
 * plane, its documents, its event streams. Nothing outside those two
 * includes it.
 */
#ifndef CP_JOB_H
#define CP_JOB_H

#include "http/cp_op.h"
#include "mgr/cp_provision.h"
#include "ssh/cp_ssh.h"

#include <pthread.h>
#include <stdatomic.h>

#define CP_JOB_LEASE_MS 60000 /* the node's lock, kept fresh while the job runs */
#define CP_JOB_STR_MAX	256   /* a string of the spec */

enum cp_job_status {
	CP_JOB_RUNNING = 0,
	CP_JOB_SUCCEEDED,
	CP_JOB_FAILED,
	CP_JOB_CANCELLED,
	CP_JOB_INTERRUPTED
};

struct sub;

/*
 * One job. Ownership: counted (refs): the table's, the thread's, each event
 * stream's and each Redis command's in flight; cp_job_unref drops one, the
 * last frees it and wipes its secrets. starter is borrowed: the request
 * answered when the node's lock answers.
 */
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
	enum cp_job_status status;
	int ended;  /* the thread posted its result (under mu) */
	int exited; /* the thread is done with the pool, about to return (under mu) */
	int check;  /* plan only */
	volatile int cancel;
	struct cp_bridge_port port; /* the thread's wakes: an event, its end */
	int thread_done;	    /* the loop saw exited (or gave up at exit) */
	/* The record: a write in flight, another due, the one in flight the
	 * final one, the final one stored; then the node's lock freed. */
	int mirror_busy, mirror_again, mirror_final, final_mirrored, lock_released;
	h2o_timeout_entry_t refresh;
	struct sub *subs; /* event streams on this loop */
	/* the work (the thread's) */
	struct cp_ssh_config cfg;
	char sudo_pw[128];
	struct cp_provision_spec spec;
	char strs[8][CP_JOB_STR_MAX]; /* the spec's strings, copied (keep()) */
	char ssh_extra[1024];
	char secret[256];
};

/* A job for node_id started by actor, not yet started (one reference, the
 * caller's): the caller fills the work (cfg, spec, ...). NULL on ENOMEM. */
struct cp_job *cp_job_new(struct cp_server *s, const char *node_id, const char *actor);
/* Its thread started and the job in the table, its record written and
 * kept fresh; the table takes the caller's reference. 0, or a negative
 * errno (nothing started; the reference is still the caller's). */
int cp_job_start(struct cp_job *j);
void cp_job_unref(struct cp_job *j);

/* This control plane's job id, or NULL. */
struct cp_job *cp_job_find(const char *id);
/* Jobs whose thread still runs. */
unsigned cp_jobs_running(void);
/* Ask a running job to stop before its next step: 0, or -EALREADY (ended). */
int cp_job_cancel(struct cp_job *j);

/* The job's document (with its events or not), or one read from Redis (a
 * "running" record nobody refreshes reads "lost"); NULL on ENOMEM. */
json_t *cp_job_doc(struct cp_job *j, int with_events);
json_t *cp_job_remote_doc(const char *text, size_t len);
/* Answer op with the job's Server-Sent Events: a local job's (j), or
 * another control plane's record (remote, stolen), polled. Ends op. */
void cp_job_stream(struct cp_op *op, struct cp_job *j, json_t *remote);

#endif
