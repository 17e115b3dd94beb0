/*
 * cp_ssh_int.h: what the executor's files share and nobody else sees: a
 * connection (one libssh2 session, its socket and the I/O thread that drives
 * it) and a job (a command or a transfer, as a step function the thread calls
 * until it finishes).
 */
#ifndef CP_SSH_INT_H
#define CP_SSH_INT_H

#include "ssh/cp_ssh.h"
#include "sl_time.h"

#include <libssh2.h>
#include <pthread.h>
#include <stdarg.h>

#define CP_SSH_MAX_CONNS 32

/* What a step returns besides 0 (finished) and a negative errno (failed). */
#define CP_SSH_STEP_AGAIN 1 /* waiting on the socket: nothing moved */
#define CP_SSH_STEP_MOVED 2 /* progress: call again before waiting */

struct cp_ssh_conn;

/*
 * One unit of work on a connection. Owned by the caller that submitted it
 * (usually on its stack); the connection thread only uses it between submit
 * and done, under the pool's lock for the list and done fields.
 */
struct cp_ssh_job {
	/* Advance; CP_SSH_STEP_AGAIN/MOVED, 0 when finished, <0 on failure
	 * (err filled). Called by the connection's thread only. */
	int (*step)(struct cp_ssh_job *j, struct cp_ssh_conn *c);
	/* The session is gone: drop libssh2 handles without using them. */
	void (*lost)(struct cp_ssh_job *j);
	int64_t deadline_ms; /* CLOCK_MONOTONIC ms the step wants to be called by; 0: none */
	int started;	     /* the remote side acted (not safe to run again elsewhere) */
	int stopping;	     /* the pool is closing: finish now (kill, close) */
	int done;	     /* set by the connection thread under the pool's lock */
	int retry;	     /* failed before it started: the submitter may try again */
	int rc;
	struct cp_ssh_err err;
	struct cp_ssh_conn *conn; /* while attached */
	struct cp_ssh_conn *pin;  /* run on this connection only (health probes), or NULL */
	struct cp_ssh_job *next;
};

enum cp_ssh_conn_state { CP_SSH_CONN_READY = 0, CP_SSH_CONN_BROKEN, CP_SSH_CONN_DEAD };

/*
 * One SSH connection. Created and freed by the pool; its session and socket
 * are used by its own thread only (libssh2 sessions are not thread-safe),
 * after cp_ssh_connect returned them. jobs, njobs, state: under the pool's lock.
 */
struct cp_ssh_conn {
	struct cp_ssh_pool *pool;
	LIBSSH2_SESSION *s;
	int fd;
	int wake_fd; /* eventfd: a job was attached or the pool is closing */
	pthread_t thread;
	enum cp_ssh_conn_state state;
	int stop;
	struct cp_ssh_job *jobs;
	int njobs;
	int max_jobs; /* channels allowed on it (lowered when sshd refuses one) */
	uint64_t rx;  /* bytes read from the socket (by the thread) */
	uint64_t tx;
	int64_t idle_since_ms;
	struct cp_ssh_conn *next_dead;
};

/* Connect, check the host key and authenticate, blocking up to the
 * configuration's timeouts. On success *s is a non-blocking session on fd
 * whose recv/send count bytes into conn's rx/tx (conn may be NULL). */
int cp_ssh_connect(const struct cp_ssh_config *c, struct cp_ssh_conn *conn, LIBSSH2_SESSION **s,
		   int *fd, struct cp_ssh_err *err);
/* Send SSH_MSG_DISCONNECT and free the session, close fd. */
void cp_ssh_disconnect(LIBSSH2_SESSION *s, int fd);

/* The TCP part alone (diagnose uses it too): a connected blocking socket
 * or a negative errno with err filled (kind CP_SSH_E_NETWORK). */
int cp_ssh_tcp_connect(const char *host, int port, int timeout_ms, struct cp_ssh_err *err);

/* The pool's connections now (for probes pinned to each); returns the count. */
int cp_ssh_pool_conns(struct cp_ssh_pool *pool, struct cp_ssh_conn **out, int max);
/* Mark a connection for replacement: it finishes its jobs and closes. */
void cp_ssh_pool_drop(struct cp_ssh_pool *pool, struct cp_ssh_conn *c);
/* One finished operation's figures, for the health monitor. */
void cp_ssh_pool_record(struct cp_ssh_pool *pool, double ms, int failed, uint64_t bytes);
/* cp_ssh_run on one given connection (NULL: any). */
int cp_ssh_run_on(struct cp_ssh_pool *pool, struct cp_ssh_conn *pin, const struct cp_ssh_cmd *cmd,
		  struct cp_ssh_result *r);
/* Run a job on the pool and wait for it: 0 or the job's negative result. */
int cp_ssh_pool_exec_job(struct cp_ssh_pool *pool, struct cp_ssh_job *j, double *connect_ms);
/* A local file's SHA-256 as hex (OpenSSL: SHA-NI where the CPU has it). */
int cp_ssh_file_sha256(const char *path, char hex[65]);
const struct cp_ssh_policy *cp_ssh_pool_policy(const struct cp_ssh_pool *pool);
int cp_ssh_pool_audit_fd(const struct cp_ssh_pool *pool);
/* A channel open was refused with channels open: lower the cap. */
void cp_ssh_conn_refused(struct cp_ssh_conn *c);

/* libssh2's last error on s, as "(-18) Authentication failed ..." */
void cp_ssh_err_from(struct cp_ssh_err *e, enum cp_ssh_kind kind, LIBSSH2_SESSION *s,
		     const char *what);
/* Whether a libssh2 error code means the connection itself is gone. */
int cp_ssh_rc_is_fatal(int rc);

/* sl_mono_ms as the signed ms the executor's deadlines are reckoned in. */
static inline int64_t cp_ssh_now_ms(void)
{
	return (int64_t)sl_mono_ms();
}

/* mkdir -p the directory remote_file will be in. */
int cp_ssh_mkdirs(struct cp_ssh_pool *pool, const char *remote_file, const struct cp_ssh_xfer *x,
		  struct cp_ssh_err *err);

/* Exec-job helpers the transfer code shares: run cmd on the connection
 * from a job's step (a sub-job driven by hand). */
struct cp_ssh_exec;
struct cp_ssh_exec *cp_ssh_exec_new(const struct cp_ssh_pool *pool, const struct cp_ssh_cmd *cmd,
				    struct cp_ssh_result *r);
int cp_ssh_exec_step(struct cp_ssh_exec *e, struct cp_ssh_conn *c, int stopping);
void cp_ssh_exec_lost(struct cp_ssh_exec *e);
void cp_ssh_exec_free(struct cp_ssh_exec *e);
int cp_ssh_exec_started(const struct cp_ssh_exec *e);
int64_t cp_ssh_exec_deadline(const struct cp_ssh_exec *e);

#endif
