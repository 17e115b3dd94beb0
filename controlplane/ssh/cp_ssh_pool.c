/*
 * cp_ssh_pool.c: warm SSH connections to one host, shared by every caller.
 *
 * A connection is one libssh2 session driven by one thread: libssh2 sessions
 * are not thread-safe, and a session in non-blocking mode lets one thread
 * drive many channels at once, each job a step function called until it
 * finishes. Callers attach a job to the least loaded connection with a free
 * channel (at most max_channels: sshd's MaxSessions, lowered when sshd
 * refuses a channel), open a new connection when all are full and fewer than
 * max_conns exist (sshd's MaxStartups), or wait. A connection that dies fails
 * its jobs: those that had not started run again elsewhere; the others report
 * the loss, since running a command twice is not ours to decide.
 *
 * Locking: the pool's mutex guards the connection list, each connection's job
 * list and the jobs' done flags; one condition variable is broadcast whenever
 * a job finishes or a channel frees up.
 */
#include "ssh/cp_ssh_int.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

/* A pass over a connection's jobs runs again while it reads or moves
 * anything; past this many passes it yields to poll() so that one busy
 * transfer cannot starve the keepalive and new jobs. */
#define PASSES_MAX 64
/* Cancellation is a flag the caller sets: the thread looks at least this often. */
#define CANCEL_POLL_MS 50
/* How long a closing pool lets commands die (signalled) before cutting them off. */
#define STOP_GRACE_MS 3000

/* Ownership: made by cp_ssh_pool_new, freed by cp_ssh_pool_free once its
 * connections' threads are joined; it owns its connections and mutex, and
 * copies of the config and policy (whose patterns stay the caller's); the
 * audit fd is the caller's. */
struct cp_ssh_pool {
	struct cp_ssh_config cfg;
	struct cp_ssh_policy policy;
	int audit_fd;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct cp_ssh_conn *conns[CP_SSH_MAX_CONNS];
	int nconns;
	int connecting; /* connections being opened (counted against max_conns) */
	int running;	/* jobs attached (counted against max_commands) */
	int max_conns, max_channels, max_commands;
	int closing;		  /* cp_ssh_pool_free has begun: new connections stop at once */
	struct cp_ssh_conn *dead; /* threads ended, to join and free */
	struct cp_ssh_pool_stats st;
	struct cp_ssh_sample samples[CP_SSH_SAMPLES]; /* a ring of the last operations */
	uint64_t nsamples;
};

static pthread_once_t ssh2_once = PTHREAD_ONCE_INIT;
static void ssh2_init(void)
{
	libssh2_init(0);
}

const struct cp_ssh_config *cp_ssh_pool_config(const struct cp_ssh_pool *p)
{
	return &p->cfg;
}
const struct cp_ssh_policy *cp_ssh_pool_policy(const struct cp_ssh_pool *p)
{
	return &p->policy;
}
int cp_ssh_pool_audit_fd(const struct cp_ssh_pool *p)
{
	return p->audit_fd;
}

struct cp_ssh_pool *cp_ssh_pool_new(const struct cp_ssh_config *c, const struct cp_ssh_policy *pol,
				    int audit_fd)
{
	struct cp_ssh_pool *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	pthread_once(&ssh2_once, ssh2_init);
	p->cfg = *c;
	if (pol)
		p->policy = *pol;
	p->audit_fd = audit_fd;
	p->max_conns = c->max_conns > 0 ? c->max_conns : 4;
	if (p->max_conns > CP_SSH_MAX_CONNS)
		p->max_conns = CP_SSH_MAX_CONNS;
	p->max_channels = c->max_channels > 0 ? c->max_channels : 8;
	p->max_commands = c->max_commands > 0 ? c->max_commands : p->max_conns * p->max_channels;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->cv, NULL);
	return p;
}

/* --- the connection thread ---------------------------------------------------- */

static void wake(struct cp_ssh_conn *c)
{
	uint64_t one = 1;

	if (write(c->wake_fd, &one, sizeof(one)) < 0) {
		/* the counter is saturated: the thread is awake anyway */
	}
}

/* Detach j from c and tell its submitter; under the pool's lock. */
static void finish_locked(struct cp_ssh_pool *p, struct cp_ssh_conn *c, struct cp_ssh_job *j,
			  int rc)
{
	struct cp_ssh_job **pp = &c->jobs;

	while (*pp && *pp != j)
		pp = &(*pp)->next;
	if (*pp)
		*pp = j->next;
	j->next = NULL;
	j->conn = NULL;
	j->rc = rc;
	j->done = 1;
	c->njobs--;
	p->running--;
	p->st.commands++;
	if (rc < 0)
		p->st.command_failures++;
	if (!c->njobs)
		c->idle_since_ms = cp_ssh_now_ms();
	pthread_cond_broadcast(&p->cv);
}

/* One pass: step every job. Returns 1 if any moved or finished. */
static int pass(struct cp_ssh_conn *c, int stopping)
{
	struct cp_ssh_pool *p = c->pool;
	struct cp_ssh_job *j, *next;
	int moved = 0, rc;

	pthread_mutex_lock(&p->mu);
	j = c->jobs;
	pthread_mutex_unlock(&p->mu);
	/* The list only grows at its head (attach) and only this thread
	 * removes, so walking it unlocked from a snapshot of the head is safe. */
	for (; j; j = next) {
		pthread_mutex_lock(&p->mu);
		next = j->next;
		pthread_mutex_unlock(&p->mu);
		j->stopping |= stopping;
		rc = j->step(j, c);
		if (rc == CP_SSH_STEP_AGAIN)
			continue;
		moved = 1;
		if (rc == CP_SSH_STEP_MOVED)
			continue;
		pthread_mutex_lock(&p->mu);
		finish_locked(p, c, j, rc);
		pthread_mutex_unlock(&p->mu);
	}
	return moved;
}

/* How long poll() may sleep: until the nearest job deadline, the next
 * keepalive, or CANCEL_POLL_MS while jobs run (their cancel flags). */
static int poll_timeout(struct cp_ssh_conn *c, int keepalive_next_s)
{
	struct cp_ssh_pool *p = c->pool;
	int64_t now = cp_ssh_now_ms(), t = (int64_t)keepalive_next_s * 1000;

	pthread_mutex_lock(&p->mu);
	for (struct cp_ssh_job *j = c->jobs; j; j = j->next) {
		if (t > CANCEL_POLL_MS)
			t = CANCEL_POLL_MS;
		if (j->deadline_ms && j->deadline_ms - now < t)
			t = j->deadline_ms - now;
	}
	pthread_mutex_unlock(&p->mu);
	if (t < 0)
		t = 0;
	return t > 60000 ? 60000 : (int)t;
}

static void wait_io(struct cp_ssh_conn *c, int timeout_ms)
{
	int dir = libssh2_session_block_directions(c->s);
	struct pollfd pf[2] = {{.fd = c->fd, .events = POLLIN},
			       {.fd = c->wake_fd, .events = POLLIN}};
	uint64_t v;

	if (dir & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		pf[0].events |= POLLOUT;
	if (poll(pf, 2, timeout_ms) > 0 && (pf[1].revents & POLLIN)) {
		if (read(c->wake_fd, &v, sizeof(v)) < 0) {
			/* EAGAIN: another read took it */
		}
	}
}

/* The session is gone: every job fails; those not started may run again. */
static void fail_all(struct cp_ssh_conn *c, const char *why)
{
	struct cp_ssh_pool *p = c->pool;

	pthread_mutex_lock(&p->mu);
	c->state = CP_SSH_CONN_BROKEN;
	p->st.broken++;
	while (c->jobs) {
		struct cp_ssh_job *j = c->jobs;

		j->lost(j);
		j->retry = !j->started;
		cp_ssh_err_set(&j->err, CP_SSH_E_PROTOCOL, "%s%s", why,
			       j->started ? " (the command may have run in part)" : "");
		finish_locked(p, c, j, -ECONNRESET);
	}
	pthread_mutex_unlock(&p->mu);
}

/* A connection is broken when libssh2 says so: its last error is a socket
 * or protocol failure (jobs see it first, and return -ECONNRESET). */
static int session_broken(struct cp_ssh_conn *c)
{
	int rc = libssh2_session_last_errno(c->s);

	return cp_ssh_rc_is_fatal(rc);
}

static void *conn_main(void *arg)
{
	struct cp_ssh_conn *c = arg;
	struct cp_ssh_pool *p = c->pool;
	int64_t stop_at = 0;
	int next_ka = 15, passes, moved;
	uint64_t rx;

	for (;;) {
		int stopping = __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE);

		if (stopping && !stop_at)
			stop_at = cp_ssh_now_ms() + STOP_GRACE_MS;
		passes = 0;
		do {
			rx = c->rx;
			moved = pass(c, stopping);
		} while ((moved || c->rx != rx) && ++passes < PASSES_MAX);
		if (session_broken(c)) {
			fail_all(c, "the SSH connection was lost");
			break;
		}
		pthread_mutex_lock(&p->mu);
		int idle = c->jobs == NULL;
		pthread_mutex_unlock(&p->mu);
		if (stopping && (idle || cp_ssh_now_ms() > stop_at))
			break;
		if (libssh2_keepalive_send(c->s, &next_ka) == LIBSSH2_ERROR_SOCKET_SEND) {
			fail_all(c, "the SSH connection was lost (keepalive)");
			break;
		}
		if (passes < PASSES_MAX)
			wait_io(c, poll_timeout(c, next_ka));
	}
	if (c->jobs)
		fail_all(c, "the pool was closed");
	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < p->nconns; i++)
		if (p->conns[i] == c) {
			p->conns[i] = p->conns[--p->nconns];
			break;
		}
	c->state = CP_SSH_CONN_DEAD;
	c->next_dead = p->dead;
	p->dead = c;
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

/* Join and free connections whose threads ended; outside the lock. */
static void reap(struct cp_ssh_pool *p)
{
	struct cp_ssh_conn *c;

	pthread_mutex_lock(&p->mu);
	c = p->dead;
	p->dead = NULL;
	pthread_mutex_unlock(&p->mu);
	while (c) {
		struct cp_ssh_conn *next = c->next_dead;

		pthread_join(c->thread, NULL);
		cp_ssh_disconnect(c->s, c->fd);
		close(c->wake_fd);
		free(c);
		c = next;
	}
}

/* --- opening connections ------------------------------------------------------ */

static int backoff_ms(int attempt)
{
	unsigned r = 0;
	int base = 100 << (attempt < 6 ? attempt : 6);

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = 0;
	return base / 2 + (int)(r % (unsigned)base); /* full jitter around base */
}

/* Connect with retries of what is retryable; a new, started connection or NULL. */
static struct cp_ssh_conn *conn_open(struct cp_ssh_pool *p, struct cp_ssh_err *err)
{
	struct cp_ssh_conn *c = calloc(1, sizeof(*c));
	int attempts = p->cfg.connect_attempts > 0 ? p->cfg.connect_attempts : 3, rc = -EIO;

	if (!c) {
		cp_ssh_err_set(err, CP_SSH_E_PROTOCOL, "out of memory");
		return NULL;
	}
	c->pool = p;
	c->fd = -1;
	c->max_jobs = p->max_channels;
	c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	for (int i = 0; c->wake_fd >= 0 && i < attempts; i++) {
		rc = cp_ssh_connect(&p->cfg, c, &c->s, &c->fd, err);
		if (rc == 0 || !err->retryable)
			break;
		if (i + 1 < attempts) {
			pthread_mutex_lock(&p->mu);
			p->st.connect_retries++;
			pthread_mutex_unlock(&p->mu);
			usleep((useconds_t)backoff_ms(i) * 1000);
		}
	}
	if (rc != 0 || pthread_create(&c->thread, NULL, conn_main, c) != 0) {
		if (rc == 0) {
			cp_ssh_err_set(err, CP_SSH_E_PROTOCOL, "no thread for the connection");
			cp_ssh_disconnect(c->s, c->fd);
		}
		if (c->wake_fd >= 0)
			close(c->wake_fd);
		free(c);
		pthread_mutex_lock(&p->mu);
		p->st.connect_failures++;
		pthread_mutex_unlock(&p->mu);
		return NULL;
	}
	c->idle_since_ms = cp_ssh_now_ms();
	return c;
}

/* Open one and add it; under no lock. 0 or negative errno. */
static int grow(struct cp_ssh_pool *p, struct cp_ssh_err *err)
{
	struct cp_ssh_conn *c = conn_open(p, err);

	pthread_mutex_lock(&p->mu);
	p->connecting--;
	if (c) {
		p->conns[p->nconns++] = c;
		p->st.connects++;
		if (p->closing) {
			__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
			wake(c);
		}
	}
	pthread_cond_broadcast(&p->cv);
	pthread_mutex_unlock(&p->mu);
	return c ? 0 : -EIO;
}

int cp_ssh_pool_connect(struct cp_ssh_pool *p, struct cp_ssh_err *err)
{
	pthread_mutex_lock(&p->mu);
	if (p->nconns + p->connecting >= p->max_conns) {
		pthread_mutex_unlock(&p->mu);
		return 0;
	}
	p->connecting++;
	pthread_mutex_unlock(&p->mu);
	return grow(p, err);
}

void cp_ssh_conn_refused(struct cp_ssh_conn *c)
{
	struct cp_ssh_pool *p = c->pool;

	pthread_mutex_lock(&p->mu);
	p->st.channel_refusals++;
	if (c->njobs - 1 >= 1 && c->max_jobs > c->njobs - 1)
		c->max_jobs = c->njobs - 1;
	if (c->max_jobs < p->max_channels)
		p->max_channels = c->max_jobs; /* new connections start lower too */
	pthread_mutex_unlock(&p->mu);
}

/* --- running jobs ------------------------------------------------------------- */

static int live_locked(struct cp_ssh_pool *p, struct cp_ssh_conn *c)
{
	for (int i = 0; i < p->nconns; i++)
		if (p->conns[i] == c)
			return c->state == CP_SSH_CONN_READY && !c->stop;
	return 0;
}

/* A pinned job waits for its connection (one channel over the cap is
 * allowed: a probe must not queue behind the work it measures). */
static int attach_pinned_locked(struct cp_ssh_pool *p, struct cp_ssh_job *j)
{
	while (live_locked(p, j->pin) && j->pin->njobs > j->pin->max_jobs)
		pthread_cond_wait(&p->cv, &p->mu);
	if (!live_locked(p, j->pin)) {
		cp_ssh_err_set(&j->err, CP_SSH_E_PROTOCOL, "the connection is gone");
		return -ECONNRESET;
	}
	return 0;
}

static struct cp_ssh_conn *pick_locked(struct cp_ssh_pool *p)
{
	struct cp_ssh_conn *best = NULL;

	for (int i = 0; i < p->nconns; i++) {
		struct cp_ssh_conn *c = p->conns[i];

		if (c->state != CP_SSH_CONN_READY || c->stop || c->njobs >= c->max_jobs)
			continue;
		if (!best || c->njobs < best->njobs)
			best = c;
	}
	return best;
}

/* Attach j to a connection, opening one if needed. 0, or negative errno
 * with j->err filled (a connection could not be opened). */
static int attach(struct cp_ssh_pool *p, struct cp_ssh_job *j, double *connect_ms)
{
	struct cp_ssh_conn *c;
	int rc;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		if (j->pin) {
			if ((rc = attach_pinned_locked(p, j)) < 0) {
				pthread_mutex_unlock(&p->mu);
				return rc;
			}
			c = j->pin;
			break;
		}
		if (p->running < p->max_commands && (c = pick_locked(p)) != NULL)
			break;
		if (p->running < p->max_commands && p->nconns + p->connecting < p->max_conns) {
			double t0 = sl_mono_ms_f();

			p->connecting++;
			pthread_mutex_unlock(&p->mu);
			rc = grow(p, &j->err);
			if (connect_ms)
				*connect_ms += sl_mono_ms_f() - t0;
			pthread_mutex_lock(&p->mu);
			if (rc < 0 && p->nconns == 0) {
				pthread_mutex_unlock(&p->mu);
				return rc;
			}
			continue;
		}
		pthread_cond_wait(&p->cv, &p->mu);
	}
	j->conn = c;
	j->done = 0;
	j->next = c->jobs;
	c->jobs = j;
	c->njobs++;
	p->running++;
	pthread_mutex_unlock(&p->mu);
	wake(c);
	return 0;
}

int cp_ssh_pool_exec_job(struct cp_ssh_pool *p, struct cp_ssh_job *j, double *connect_ms)
{
	int rc;

	/* A job that failed before it started (its connection died under it,
	 * or sshd refused its channel) is tried again, a few times. */
	for (int attempt = 0; attempt < 4; attempt++) {
		reap(p);
		j->retry = 0;
		rc = attach(p, j, connect_ms);
		if (rc < 0)
			return rc;
		pthread_mutex_lock(&p->mu);
		while (!j->done)
			pthread_cond_wait(&p->cv, &p->mu);
		pthread_mutex_unlock(&p->mu);
		if (j->rc >= 0 || !j->retry)
			break;
	}
	reap(p);
	return j->rc;
}

int cp_ssh_pool_conns(struct cp_ssh_pool *p, struct cp_ssh_conn **out, int max)
{
	int n = 0;

	pthread_mutex_lock(&p->mu);
	for (int i = 0; i < p->nconns && n < max; i++)
		if (p->conns[i]->state == CP_SSH_CONN_READY && !p->conns[i]->stop)
			out[n++] = p->conns[i];
	pthread_mutex_unlock(&p->mu);
	return n;
}

void cp_ssh_pool_drop(struct cp_ssh_pool *p, struct cp_ssh_conn *c)
{
	pthread_mutex_lock(&p->mu);
	if (live_locked(p, c)) {
		__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
		p->st.broken++;
		wake(c);
	}
	pthread_mutex_unlock(&p->mu);
}

void cp_ssh_pool_record(struct cp_ssh_pool *p, double ms, int failed, uint64_t bytes)
{
	pthread_mutex_lock(&p->mu);
	p->samples[p->nsamples % CP_SSH_SAMPLES] = (struct cp_ssh_sample){ms, failed, bytes};
	p->nsamples++;
	pthread_mutex_unlock(&p->mu);
}

int cp_ssh_pool_samples(struct cp_ssh_pool *p, struct cp_ssh_sample *out, int max)
{
	int n, first;

	pthread_mutex_lock(&p->mu);
	n = p->nsamples < CP_SSH_SAMPLES ? (int)p->nsamples : CP_SSH_SAMPLES;
	if (n > max)
		n = max;
	first = (int)(p->nsamples - (uint64_t)n);
	for (int i = 0; i < n; i++) /* oldest first */
		out[i] = p->samples[(uint64_t)(first + i) % CP_SSH_SAMPLES];
	pthread_mutex_unlock(&p->mu);
	return n;
}

void cp_ssh_pool_stats(struct cp_ssh_pool *p, struct cp_ssh_pool_stats *st)
{
	pthread_mutex_lock(&p->mu);
	*st = p->st;
	st->conns = p->nconns;
	st->channels = p->running;
	st->max_channels = p->max_channels;
	pthread_mutex_unlock(&p->mu);
}

void cp_ssh_pool_free(struct cp_ssh_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->closing = 1;
	for (int i = 0; i < p->nconns; i++) {
		__atomic_store_n(&p->conns[i]->stop, 1, __ATOMIC_RELEASE);
		wake(p->conns[i]);
	}
	while (p->nconns || p->connecting)
		pthread_cond_wait(&p->cv, &p->mu);
	pthread_mutex_unlock(&p->mu);
	reap(p);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	cp_ssh_config_wipe(&p->cfg);
	free(p);
}
