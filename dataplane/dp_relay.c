/*
 * dp_relay.c: sluice-relay's workers started, run and drained (see
 * dp_relay.h; dp_relay_int.h for the model). Each worker is a thread with
 * its own ring and listeners; this file sets them up, runs each loop with
 * its periodic work (tick), drains on SIGTERM or POST /drain, and releases
 * everything at the end.
 */
#include "dp_relay_int.h"
#include "dp_tls_accel.h"
#include "sl_heap.h"
#include "sl_net.h"

#include <unistd.h>

#define DRAIN_CLUSTER_MS (DP_CLUSTER_CACHE_MS + 1500)

/* Public connections of this worker now (draining waits for them). */
static uint32_t public_conns(struct relay *r)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < r->io.nconns; i++)
		n += r->io.conns[i].fd >= 0 &&
		     (r->io.conns[i].kind == K_PUBLIC || r->io.conns[i].kind == K_PUBLIC_TCP);
	return n;
}

/* With no public connection open, memory a burst left behind goes back to
 * the kernel: the receive buffers' pages (dp_ring_shed; a burst leaves them
 * all touched, nbufs x bufsize of RSS per worker) and the heap that its
 * connections' TLS state and segments left free (malloc keeps it). Every
 * 5 s at most, and only after a burst: the pages shed are faulted in again
 * by the next one. */
static void shed_buffers(struct relay *r)
{
	if (r->now_ms < r->next_shed_ms)
		return;
	r->next_shed_ms = r->now_ms + 5000;
	if (public_conns(r) != 0) {
		r->shed_done = 0;
		return;
	}
	if (!r->shed_done && dp_ring_shed(&r->io.r)) { /* held buffers: not yet */
		sl_heap_trim();
		r->shed_done = 1; /* until public traffic comes again */
	}
}

static void tick(struct relay *r)
{
	r->now_ms = sl_mono_ms();
	if (r->moving.len)
		dp_move_run(r);
	if (r->throttled.len)
		dp_limit_unthrottle(r);
	if (r->parked.len)
		dp_park_run(r);
	dp_admin_publish(r);
	if (r->now_ms < r->next_sweep_ms)
		return;
	r->next_sweep_ms = r->now_ms + 100;
	dp_pub_expire(r);
	dp_agent_expire(r);
	dp_sweep_tunnels(r);
	shed_buffers(r);
	if (r->sh->state_on) {
		dp_sweep_sessions(r);
		if (r->now_ms >= r->next_counts_ms) {
			r->next_counts_ms = r->now_ms + 1000;
			dp_sweep_publish_counts(r);
		}
	}
}

static int listen_on(struct relay *r, const char *addr, int kind, uint32_t *slot)
{
	int fd = sl_listen_tcp(addr, 4096, SL_LISTEN_REUSEPORT);

	if (fd < 0) {
		sl_error("cannot listen on %s: %s", addr, strerror(-fd));
		return fd;
	}
	*slot = dp_conn_new(&r->io, fd, (uint8_t)kind, NULL);
	if (*slot == DP_NIL)
		return -ENFILE;
	dp_conn_accept(&r->io, *slot);
	return 0;
}

static void start_drain(struct relay *r)
{
	struct pr_msg g = {.type = PR_GOAWAY, .code = PR_E_DRAIN};

	r->draining = 1;
	if (r->sh->cluster_on && r->idx == 0)
		dp_cluster_set_draining(&r->sh->cluster);
	/* The link listener stays: requests other relays forward here while
	 * the agents move on still find their tunnels (or their new relay). */
	snprintf(g.text, sizeof(g.text), "relay shutting down");
	dp_conn_close(&r->io, r->l_http);
	if (r->l_https != DP_NIL)
		dp_conn_close(&r->io, r->l_https);
	dp_conn_close(&r->io, r->l_agents);
	for (uint32_t i = 0; i < r->lt.nports; i++)
		dp_conn_close(&r->io, r->lt.ports[i].slot);
	for (struct dp_tunnel *t = r->tunnels.all; t; t = t->next)
		if (t->ctrl != DP_NIL)
			dp_conn_send_msg(&r->io, t->ctrl, &g);
	sl_info("draining: listeners closed, agents told to go away");
}

/* Set up worker r in the thread that runs it (a ring with SINGLE_ISSUER
 * belongs to the thread that made it). Returns 0 or a negative errno. */
static int relay_init(struct relay *r)
{
	const struct dp_relay_config *cfg = r->cfg;
	int err;

	err = dp_io_init(&r->io, cfg->max_conns, cfg->nbufs, cfg->bufsize, &dp_relay_ops, r,
			 (enum dp_engine)cfg->engine);
	if (err < 0) {
		sl_error("I/O engine set-up failed: %s", strerror(-err));
		return err;
	}
	if (cfg->engine == DP_ENGINE_URING)
		r->io.zc_min = cfg->send_zc;
	r->io.splice = cfg->splice;
	if ((err = dp_io_wake_init(&r->io)) < 0) {
		sl_error("worker wake-up set-up failed: %s", strerror(-err));
		goto fail_io;
	}
	pthread_mutex_lock(&r->inbox.mu);
	r->inbox.wake_ready = 1;
	pthread_mutex_unlock(&r->inbox.mu);
	if ((err = dp_tunnels_init(&r->tunnels, 1024)) < 0)
		goto fail_io;
	r->l_https = r->l_admin = r->l_link = DP_NIL;
	/* Every worker listens on the public and agent ports (SO_REUSEPORT
	 * spreads connections); /health and /metrics are worker 0's. */
	if ((cfg->https && (err = listen_on(r, cfg->https, K_LISTEN_HTTPS, &r->l_https)) < 0) ||
	    (err = listen_on(r, cfg->http, K_LISTEN_HTTP, &r->l_http)) < 0 ||
	    (err = listen_on(r, cfg->agents, K_LISTEN_AGENTS, &r->l_agents)) < 0 ||
	    (r->idx == 0 && (err = listen_on(r, cfg->admin, K_LISTEN_ADMIN, &r->l_admin)) < 0) ||
	    (r->sh->cluster_on && (err = listen_on(r, cfg->link, K_LISTEN_LINK, &r->l_link)) < 0) ||
	    (r->idx == 0 && cfg->lt_lo && (err = dp_lt_listen(r)) < 0))
		goto fail_tunnels;
	return 0;
fail_tunnels:
	dp_tunnels_free(&r->tunnels);
fail_io:
	pthread_mutex_lock(&r->inbox.mu);
	r->inbox.wake_ready = 0;
	pthread_mutex_unlock(&r->inbox.mu);
	dp_io_free(&r->io);
	return err;
}

/* SIGHUP, on worker 0: one store serves every worker. */
static void reload_certs(struct relay *r)
{
	if (!r->sh->tls_on)
		sl_info("SIGHUP: no certificates to reload");
	else if (dp_tls_server_reload(&r->sh->tls) == 0)
		sl_info("certificates reloaded (%u from --cert-dir)",
			dp_tls_server_names(&r->sh->tls));
	else
		sl_error("certificate reload failed: the previous certificates still serve");
}

static int stopping(struct relay *r)
{
	return *r->sh->stop || atomic_load(&r->sh->abort);
}

/* A worker's loop: serve until told to stop, drain, then release everything. */
static int worker_loop(struct relay *r)
{
	uint64_t drain_end = 0, drain_min = 0;
	int err = 0;

	while (!(r->draining && r->now_ms >= drain_min &&
		 (public_conns(r) == 0 || r->now_ms >= drain_end))) {
		/* Throttled or parked sockets are looked at more often. */
		if ((err = dp_io_run_once(&r->io, r->throttled.len || r->parked.len ? 10 : 100)) <
		    0)
			break;
		tick(r);
		if (r->idx == 0 && r->sh->leases_on && atomic_load(&r->sh->leases.drain_asked) &&
		    !*r->sh->stop) {
			sl_info("the control plane asks this relay to drain");
			*r->sh->stop = 1;
		}
		if (r->idx == 0 && *r->sh->reload) {
			*r->sh->reload = 0;
			reload_certs(r);
		}
		if (stopping(r) && !r->draining) {
			start_drain(r);
			drain_end = r->now_ms + r->cfg->drain_timeout_ms;
			/* One more turn at least, so queued answers (/drain's) go out;
			 * in a cluster, long enough for the agents to bind elsewhere
			 * and other relays' cached owners to expire: what they still
			 * forward here meanwhile is passed on, not refused. */
			drain_min = r->now_ms + (r->sh->cluster_on ? DRAIN_CLUSTER_MS : 50);
			if (drain_min > drain_end)
				drain_min = drain_end;
		}
	}
	if (r->idx == 0 || public_conns(r))
		sl_info("worker %d stopped (%u public connections left)", r->idx, public_conns(r));
	dp_inbox_close(r);
	dp_io_close_all(&r->io, 2000);
	free(r->moving.v);
	free(r->throttled.v);
	free(r->parked.v);
	dp_io_free(&r->io);
	dp_tunnels_free(&r->tunnels);
	return err;
}

/* Every worker sets itself up, then waits for the others: no handoff may
 * reach a worker whose ring does not exist yet. */
static int worker_ready(struct relay *r, int err)
{
	struct shared *sh = r->sh;
	int aborted;

	pthread_mutex_lock(&sh->ready_mu);
	if (err < 0) {
		atomic_store(&sh->abort, 1);
		r->err = err;
	}
	sh->nready++;
	pthread_cond_broadcast(&sh->ready_cv);
	while (sh->nready < sh->expected && !atomic_load(&sh->abort))
		pthread_cond_wait(&sh->ready_cv, &sh->ready_mu);
	aborted = atomic_load(&sh->abort);
	pthread_mutex_unlock(&sh->ready_mu);
	if (err < 0)
		return err;
	if (aborted) {
		/* Another worker failed: release what this one set up. */
		dp_inbox_close(r);
		dp_io_close_all(&r->io, 0);
		dp_io_free(&r->io);
		dp_tunnels_free(&r->tunnels);
		return -ECANCELED;
	}
	return 0;
}

static int worker_start(struct relay *r)
{
	return worker_ready(r, relay_init(r));
}

static void *worker_thread(void *arg)
{
	struct relay *r = arg;

	if (worker_start(r) == 0)
		r->err = worker_loop(r);
	dp_tls_thread_done();
	return NULL;
}

static struct relay *relay_new(struct shared *sh, int idx)
{
	struct relay *r = malloc(sizeof(*r));
	const char *colon = strrchr(sh->cfg->http, ':');

	if (r == NULL)
		return NULL;
	memset(r, 0, offsetof(struct relay, target));
	r->sh = sh;
	r->cfg = sh->cfg;
	r->idx = idx;
	r->http_port = colon ? atoi(colon + 1) : 80;
	r->now_ms = sl_mono_ms();
	pthread_mutex_init(&r->inbox.mu, NULL);
	pthread_mutex_init(&r->snap_mu, NULL);
	return r;
}

static void relay_delete(struct relay *r)
{
	for (uint32_t i = 0; i < r->lt.norphans; i++)
		close(r->lt.orphans[i].fd);
	free(r->lt.ports);
	free(r->lt.orphans);
	free(r->counts);
	pthread_mutex_destroy(&r->inbox.mu);
	pthread_mutex_destroy(&r->snap_mu);
	free(r);
}

/* What every worker shares and the followers of Redis: TLS certificates,
 * the session table, leases, the cluster. 0 or a negative errno. */
static int shared_start(struct shared *sh)
{
	const struct dp_relay_config *cfg = sh->cfg;
	struct dp_state_config sc = {
		.redis = cfg->redis, .relay_id = cfg->relay_id, .timeout_ms = 2000};
	int err = 0;

	if (cfg->cert) {
		if ((err = dp_tls_server_init(&sh->tls, cfg->cert, cfg->key, cfg->cert_dir,
					      &sh->tls_reloads)) < 0)
			return err;
		sh->tls_on = 1;
	}
	if (!cfg->redis)
		return 0;
	sh->state.on_change = dp_wake_workers;
	if ((err = dp_state_start(&sh->state, &sc, dp_sweep_collect_counts, sh)) < 0)
		return err;
	sh->state_on = 1;
	if ((err = dp_leases_start(&sh->leases, cfg->redis, cfg->relay_id, dp_wake_workers, sh)) <
	    0)
		return err;
	sh->leases_on = 1;
	if (cfg->link && (err = dp_cluster_start(&sh->cluster, cfg->redis, cfg->relay_id, cfg->link,
						 dp_wake_workers, sh)) < 0)
		return err;
	sh->cluster_on = cfg->link != NULL;
	return 0;
}

/* Workers 1..n-1 on threads of their own; how many started (workers 0 to
 * it). A failure to start one tells the started ones to give up. */
static int start_threads(struct shared *sh, int n, int *err)
{
	int started = 1;

	for (int i = 1; i < n; i++) {
		int e = pthread_create(&sh->w[i]->thread, NULL, worker_thread, sh->w[i]);

		if (e != 0) {
			sl_error("cannot start worker %d: %s", i, strerror(e));
			*err = -e;
			pthread_mutex_lock(&sh->ready_mu);
			atomic_store(&sh->abort, 1); /* the started ones release and return */
			pthread_cond_broadcast(&sh->ready_cv);
			pthread_mutex_unlock(&sh->ready_mu);
			break;
		}
		started++;
	}
	return started;
}

static void log_started(const struct shared *sh, int n)
{
	const struct dp_relay_config *cfg = sh->cfg;

	sl_info("relay: %d worker%s, http %s%s%s, agents %s (%s), admin %s, domain %s (%s%s)", n,
		n == 1 ? "" : "s", cfg->http, cfg->https ? ", https " : "",
		cfg->https ? cfg->https : "", cfg->agents, sh->tls_on ? "tls" : "plaintext",
		cfg->admin, cfg->domain, cfg->engine == DP_ENGINE_EPOLL ? "epoll" : "io_uring",
		sh->w[0]->io.r.features & DP_RING_F_DEFER ? ", defer_taskrun" : "");
}

/* Every worker is joined: the followers stop (their reports read the
 * workers' counters), then the workers are freed; the first worker error. */
static int shared_stop(struct shared *sh, int err)
{
	dp_state_stop(&sh->state);
	dp_leases_stop(&sh->leases);
	dp_cluster_stop(&sh->cluster);
	for (int i = 0; i < sh->nworkers; i++) {
		if (sh->w[i] && sh->w[i]->err < 0 && sh->w[i]->err != -ECANCELED && err == 0)
			err = sh->w[i]->err;
		if (sh->w[i])
			relay_delete(sh->w[i]);
	}
	pthread_cond_destroy(&sh->ready_cv);
	pthread_mutex_destroy(&sh->ready_mu);
	if (sh->tls_on)
		dp_tls_server_free(&sh->tls);
	free(sh->w);
	dp_owners_free(&sh->owners);
	return err;
}

int dp_relay_run(const struct dp_relay_config *cfg, volatile sig_atomic_t *stop,
		 volatile sig_atomic_t *reload)
{
	struct shared sh = {.cfg = cfg, .stop = stop, .reload = reload};
	int n = cfg->workers > 0 ? (int)cfg->workers : 1, started = 1, err = 0;

	if ((err = dp_owners_init(&sh.owners, 4096)) < 0)
		return err;
	if ((sh.w = calloc((size_t)n, sizeof(sh.w[0]))) == NULL) {
		dp_owners_free(&sh.owners);
		return -ENOMEM;
	}
	sh.nworkers = n;
	sh.tls_accel = dp_tls_accel_on();
	for (int i = 0; i < n; i++)
		if ((sh.w[i] = relay_new(&sh, i)) == NULL)
			err = -ENOMEM;
	pthread_mutex_init(&sh.ready_mu, NULL);
	pthread_cond_init(&sh.ready_cv, NULL);
	sh.expected = n;
	if (err == 0)
		err = shared_start(&sh);
	/* Worker 0 first, alone: a bad option or a taken port fails once, with
	 * one message, before any thread starts. */
	if (err < 0 || (err = relay_init(sh.w[0])) < 0)
		n = 0;
	started = start_threads(&sh, n, &err);
	if (n > 0 && worker_ready(sh.w[0], 0) == 0) {
		log_started(&sh, n);
		sh.w[0]->err = worker_loop(sh.w[0]);
	}
	for (int i = 1; i < started; i++)
		pthread_join(sh.w[i]->thread, NULL);
	return shared_stop(&sh, err);
}
