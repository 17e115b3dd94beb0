/*
 * dp_relay_admin.c: the relay's admin port (worker 0): /health, /metrics
 * and POST /drain, and the per-worker figures /metrics sums.
 */
#include "dp_relay_int.h"
#include "dp_tls_accel.h"

#include <stdarg.h>
#include <stddef.h>

/* This worker's figures now. */
static void snap_take(struct relay *r, struct snapshot *x)
{
	struct dp_tls_accel_counts acc;

	x->m = r->m;
	x->io = r->io.stats;
	x->ring = r->io.r.stats;
	x->tls = r->io.tls;
	acc = dp_tls_accel_counts(); /* this worker's thread: snap_take runs on it */
	x->tls.accel_records = acc.records;
	x->tls.accel_bytes = acc.bytes;
	x->tls.accel_fallbacks = acc.fallbacks;
	x->tunnels = r->tunnels.count;
	x->live = r->io.live;
	x->agents = r->nagents;
}

/* Publish this worker's figures for /metrics on worker 0 (every turn: an
 * uncontended lock and a copy of a few hundred bytes). */
void dp_admin_publish(struct relay *r)
{
	pthread_mutex_lock(&r->snap_mu);
	snap_take(r, &r->snap);
	pthread_mutex_unlock(&r->snap_mu);
}

/* Add the counters of b to a (every field of these structs is a uint64_t
 * counter, but for the latency sum and the gauges, added by name). */
static void add_u64(void *a, const void *b, size_t size)
{
	uint64_t *x = a;
	const uint64_t *y = b;

	for (size_t i = 0; i < size / sizeof(uint64_t); i++)
		x[i] += y[i];
}

static void snap_add(struct snapshot *a, const struct snapshot *from)
{
	struct snapshot b = *from;
	double lat = a->m.lat_sum_s + b.m.lat_sum_s;

	_Static_assert(sizeof(double) == sizeof(uint64_t), "lat_sum_s sits among counters");
	a->m.lat_sum_s = b.m.lat_sum_s = 0; /* all-zero bits either way */
	add_u64(&a->m, &b.m, sizeof(a->m));
	a->m.lat_sum_s = lat;
	add_u64(&a->io, &b.io, sizeof(a->io));
	add_u64(&a->ring, &b.ring, sizeof(a->ring));
	add_u64(&a->tls, &b.tls, sizeof(a->tls));
	a->tunnels += b.tunnels;
	a->agents += b.agents;
	a->live += b.live;
}

/* Every worker's figures: this one's live, the others' last published. */
static void snap_all(struct relay *r, struct snapshot *sum)
{
	snap_take(r, sum);
	for (int i = 0; i < r->sh->nworkers; i++) {
		struct relay *w = r->sh->w[i];
		struct snapshot x;

		if (w == r)
			continue;
		pthread_mutex_lock(&w->snap_mu);
		x = w->snap;
		pthread_mutex_unlock(&w->snap_mu);
		snap_add(sum, &x);
	}
}

/* ---- /metrics: a table of what is shown, and where each value lives ---- */

/* Where a row's value is read. The snapshot is the sum of every worker's
 * (copies, plain reads); the shared followers' counters are atomics their
 * threads update, read with atomic loads. */
enum metric_src {
	SRC_SNAP,    /* struct snapshot: the relay's own counters, summed */
	SRC_SHARED,  /* struct shared: worker count, TLS reloads */
	SRC_CLUSTER, /* struct dp_cluster (shown with --link) */
	SRC_LEASES,  /* struct dp_leases (shown with --redis) */
	SRC_STATE,   /* struct dp_state (shown with --redis) */
};

/*
 * One sample line. A row whose family differs from the row before starts
 * the family with its "# TYPE" line, so a family's rows stay together (the
 * text format requires it). size says how wide the field is: 8 bytes
 * (counters) or 4 (gauges and flags).
 * Ownership: static tables.
 */
struct metric {
	const char *family;
	const char *type;   /* "counter" or "gauge" */
	const char *labels; /* "{event=\"x\"}", or "" */
	uint8_t src;	    /* enum metric_src */
	uint8_t size;
	uint16_t off;
};

#define ROW(fam, type, lab, src, st, field)                                                        \
	{                                                                                          \
		fam, type, lab, src, sizeof(((st *)0)->field), offsetof(st, field)                 \
	}
#define SNAP(fam, type, lab, field) ROW(fam, type, lab, SRC_SNAP, struct snapshot, field)
#define EVENT(fam, ev, field)	    SNAP(fam, "counter", "{event=\"" ev "\"}", field)

/* Before the errors by status. */
static const struct metric rows_head[] = {
	ROW("sluice_workers", "gauge", "", SRC_SHARED, struct shared, nworkers),
	SNAP("sluice_tunnels", "gauge", "", tunnels),
	SNAP("sluice_agents", "gauge", "", agents),
	SNAP("sluice_connections", "gauge", "", live),
	SNAP("sluice_requests_total", "counter", "", m.requests),
};

/* After them, always. */
static const struct metric rows_main[] = {
	SNAP("sluice_public_bytes_total", "counter", "{direction=\"in\"}", m.bytes_in),
	SNAP("sluice_public_bytes_total", "counter", "{direction=\"out\"}", m.bytes_out),
	SNAP("sluice_agents_refused_total", "counter", "", m.agents_refused),
	SNAP("sluice_offline_requests_total", "counter", "", m.offline),
	SNAP("sluice_data_reasks_total", "counter", "", m.reasks),
	SNAP("sluice_hsts_total", "counter", "{result=\"added\"}", m.hsts_added),
	SNAP("sluice_hsts_total", "counter", "{result=\"skipped\"}", m.hsts_skipped),
	SNAP("sluice_ratelimited_total", "counter", "{limit=\"tunnel_requests\"}", m.limited_req),
	SNAP("sluice_ratelimited_total", "counter", "{limit=\"key_requests\"}", m.limited_key),
	SNAP("sluice_ratelimited_total", "counter", "{limit=\"tcp_connections\"}", m.limited_tcp),
	SNAP("sluice_ratelimited_total", "counter", "{limit=\"bandwidth_pauses\"}", m.throttles),
};

#define CLUSTER(fam, type, lab, field) ROW(fam, type, lab, SRC_CLUSTER, struct dp_cluster, field)
static const struct metric rows_cluster[] = {
	CLUSTER("sluice_cluster_up", "gauge", "", up),
	CLUSTER("sluice_cluster_relays", "gauge", "", npeers),
	CLUSTER("sluice_cluster_events_total", "counter", "{event=\"claim\"}", claims_made),
	CLUSTER("sluice_cluster_events_total", "counter", "{event=\"claim_refused\"}",
		claims_refused),
	CLUSTER("sluice_cluster_events_total", "counter", "{event=\"lookup\"}", lookups),
	CLUSTER("sluice_cluster_events_total", "counter", "{event=\"redis_failure\"}", failures),
	EVENT("sluice_cluster_events_total", "parked", m.parked_cluster),
	EVENT("sluice_cluster_events_total", "replayed", m.replays),
	EVENT("sluice_links_total", "out", m.links_out),
	EVENT("sluice_links_total", "in", m.links_in),
	EVENT("sluice_links_total", "refused", m.links_refused),
	EVENT("sluice_links_total", "failed", m.link_failures),
};

#define LEASES(fam, type, lab, field) ROW(fam, type, lab, SRC_LEASES, struct dp_leases, field)
static const struct metric rows_leases[] = {
	LEASES("sluice_ratelimit_global", "gauge", "", up),
	LEASES("sluice_ratelimit_relays", "gauge", "", nrelays),
	LEASES("sluice_ratelimit_events_total", "counter", "{event=\"lease\"}", leases),
	LEASES("sluice_ratelimit_events_total", "counter", "{event=\"lease_failure\"}",
	       lease_failures),
	LEASES("sluice_ratelimit_events_total", "counter", "{event=\"local_decision\"}",
	       local_decisions),
	LEASES("sluice_ratelimit_events_total", "counter", "{event=\"mode_change\"}", mode_changes),
};

#define STATE(fam, type, lab, field) ROW(fam, type, lab, SRC_STATE, struct dp_state, field)
static const struct metric rows_state[] = {
	STATE("sluice_state_up", "gauge", "", up),
	STATE("sluice_state_sessions", "gauge", "", count),
	STATE("sluice_state_events_total", "counter", "{event=\"applied\"}", applied),
	STATE("sluice_state_events_total", "counter", "{event=\"snapshot\"}", snapshots),
	STATE("sluice_state_events_total", "counter", "{event=\"failure\"}", failures),
	STATE("sluice_state_events_total", "counter", "{event=\"report\"}", reports),
	SNAP("sluice_sessions_closed_total", "counter", "", m.sessions_closed),
	SNAP("sluice_sessions_replaced_total", "counter", "", m.sessions_replaced),
};

#define ENGINE(ev, field) EVENT("sluice_engine_events_total", ev, field)
static const struct metric rows_tail[] = {
	EVENT("sluice_handoffs_total", "out", m.handoffs_out),
	EVENT("sluice_handoffs_total", "in", m.handoffs_in),
	EVENT("sluice_handoffs_total", "failed", m.handoffs_failed),
	ENGINE("enobufs", ring.enobufs),
	ENGINE("short_send", ring.short_sends),
	ENGINE("sqe_full", ring.sqe_full),
	ENGINE("no_defer_taskrun", ring.no_defer),
	ENGINE("paused", io.paused),
	ENGINE("eagain", io.eagain),
	ENGINE("misdirected_switch", m.misdirected_switch),
	ENGINE("zc_send", ring.zc_sends),
	ENGINE("zc_copied", ring.zc_copied),
	ENGINE("zc_refused", ring.zc_refused),
	ENGINE("splice_start", ring.splice_starts),
	ENGINE("splice_fallback", ring.splice_fallbacks),
	ENGINE("buffers_shed", ring.sheds),
	ENGINE("gathered_send", ring.gathered),
	ENGINE("spare_reused", ring.spare_reused),
	SNAP("sluice_spliced_bytes_total", "counter", "", ring.spliced),
	EVENT("sluice_tls_events_total", "handshake", tls.handshakes),
	EVENT("sluice_tls_events_total", "resumed", tls.resumed),
	EVENT("sluice_tls_events_total", "handshake_failure", tls.handshake_failures),
	EVENT("sluice_tls_events_total", "error", tls.errors),
	ROW("sluice_tls_events_total", "counter", "{event=\"reload\"}", SRC_SHARED, struct shared,
	    tls_reloads.reloads),
	ROW("sluice_tls_events_total", "counter", "{event=\"reload_failure\"}", SRC_SHARED,
	    struct shared, tls_reloads.reload_failures),
	/* Which code seals the records (1: libcrypto's AES-GCM, 0: wolfSSL's
	 * own), and what went each way (STYLE rule 10: a counter per fallback). */
	ROW("sluice_tls_accel", "gauge", "", SRC_SHARED, struct shared, tls_accel),
	SNAP("sluice_tls_accel_records_total", "counter", "", tls.accel_records),
	SNAP("sluice_tls_accel_bytes_total", "counter", "", tls.accel_bytes),
	SNAP("sluice_tls_accel_fallbacks_total", "counter", "", tls.accel_fallbacks),
};

static uint64_t metric_value(const struct relay *r, const struct snapshot *x,
			     const struct metric *m)
{
	const char *base = m->src == SRC_SNAP	   ? (const char *)x
			   : m->src == SRC_SHARED  ? (const char *)r->sh
			   : m->src == SRC_CLUSTER ? (const char *)&r->sh->cluster
			   : m->src == SRC_LEASES  ? (const char *)&r->sh->leases
						   : (const char *)&r->sh->state;
	const void *v = base + m->off;

	/* The followers' fields change under their threads: atomic loads
	 * (their 4-byte gauges are atomic_int or set once at start). */
	if (m->src == SRC_SNAP || m->src == SRC_SHARED)
		return m->size == 8 ? *(const uint64_t *)v : (uint64_t) * (const uint32_t *)v;
	return m->size == 8 ? atomic_load((const _Atomic uint64_t *)v)
			    : (uint64_t)atomic_load((const _Atomic uint32_t *)v);
}

static void put_rows(struct sl_out *o, const struct relay *r, const struct snapshot *x,
		     const struct metric *rows, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct metric *m = &rows[i];

		if (i == 0 || strcmp(m->family, rows[i - 1].family) != 0)
			sl_out_printf(o, "# TYPE %s %s\n", m->family, m->type);
		sl_out_printf(o, "%s%s %llu\n", m->family, m->labels,
			      (unsigned long long)metric_value(r, x, m));
	}
}

#define PUT_ROWS(o, r, x, rows) put_rows(o, r, x, rows, sizeof(rows) / sizeof(rows[0]))

/* Upper bounds (ms) of the first-response-byte histogram's buckets. */
static const double lat_bounds_ms[LAT_BUCKETS] = {0.5, 1,   2.5, 5,    10,   25,   50,
						  100, 250, 500, 1000, 2500, 10000};

void dp_admin_latency(struct relay *r, double ms)
{
	size_t b;

	for (b = 0; b < LAT_BUCKETS && ms > lat_bounds_ms[b]; b++)
		;
	r->m.lat_count[b]++;
	r->m.lat_sum_s += ms / 1000;
}

static void put_histogram(struct sl_out *o, const struct snapshot *x)
{
	uint64_t cum = 0;

	sl_out_printf(o, "# TYPE sluice_request_first_byte_seconds histogram\n");
	for (size_t b = 0; b < LAT_BUCKETS; b++) {
		cum += x->m.lat_count[b];
		sl_out_printf(o, "sluice_request_first_byte_seconds_bucket{le=\"%g\"} %llu\n",
			      lat_bounds_ms[b] / 1000, (unsigned long long)cum);
	}
	cum += x->m.lat_count[LAT_BUCKETS];
	sl_out_printf(o,
		      "sluice_request_first_byte_seconds_bucket{le=\"+Inf\"} %llu\n"
		      "sluice_request_first_byte_seconds_sum %.6f\n"
		      "sluice_request_first_byte_seconds_count %llu\n",
		      (unsigned long long)cum, x->m.lat_sum_s, (unsigned long long)cum);
}

/* The page: every worker's figures summed; the length, or -ENOSPC. */
static int metrics_text(struct relay *r, char *buf, size_t cap)
{
	struct sl_out o = {buf, cap, 0, 0};
	struct snapshot x;

	snap_all(r, &x);
	PUT_ROWS(&o, r, &x, rows_head);
	sl_out_printf(&o, "# TYPE sluice_relay_errors_total counter\n");
	for (int e = 0; e < E_COUNT; e++)
		sl_out_printf(&o, "sluice_relay_errors_total{status=\"%d\"} %llu\n",
			      dp_err_status[e], (unsigned long long)x.m.errors[e]);
	PUT_ROWS(&o, r, &x, rows_main);
	if (r->sh->cluster_on)
		PUT_ROWS(&o, r, &x, rows_cluster);
	if (r->sh->leases_on)
		PUT_ROWS(&o, r, &x, rows_leases);
	if (r->sh->state_on)
		PUT_ROWS(&o, r, &x, rows_state);
	PUT_ROWS(&o, r, &x, rows_tail);
	put_histogram(&o, &x);
	return o.overflow ? -ENOSPC : (int)o.len;
}

/* An admin request's head, gathered across reads: a client may write it in
 * pieces (bash's printf writes line by line). 1 when it is complete in
 * a->buf, 0 to wait for more, -1 when it is too long or malformed. */
static int admin_head(struct agent *a, const struct dp_seg *g, struct dp_http_req *q)
{
	int n;

	if (!a->buf && !(a->buf = malloc(ADMIN_HEAD_MAX)))
		return -1;
	if (g->len > ADMIN_HEAD_MAX - a->len)
		return -1;
	memcpy(a->buf + a->len, g->ptr, g->len);
	a->len += g->len;
	n = dp_http_parse_request(a->buf, a->len, q);
	return n == DP_HTTP_INCOMPLETE ? 0 : n < 0 ? -1 : 1;
}

void dp_admin_data(struct relay *r, uint32_t c, uint32_t seg)
{
	static _Thread_local struct dp_http_req q;
	struct agent *a = dp_c(&r->io, c)->owner;
	char body[16384], resp[17000];
	int n = admin_head(a, &r->io.r.segs[seg], &q), status = 200;

	if (n == 0) { /* the rest of the head is still to come (deadline: fresh list) */
		dp_seg_release(&r->io.r, seg);
		return;
	}
	if (n < 0) {
		status = 400;
		snprintf(body, sizeof(body), "malformed request (or a head over %d bytes)\n",
			 ADMIN_HEAD_MAX);
	} else if (q.target_len == 7 && memcmp(q.target, "/health", 7) == 0) {
		snprintf(body, sizeof(body), "%s\n", r->draining ? "draining" : "ok");
		status = r->draining ? 503 : 200;
	} else if (q.target_len == 8 && memcmp(q.target, "/metrics", 8) == 0) {
		metrics_text(r, body, sizeof(body));
	} else if (q.target_len == 6 && memcmp(q.target, "/drain", 6) == 0 && q.method_len == 4 &&
		   memcmp(q.method, "POST", 4) == 0) {
		/* As SIGTERM: agents are told to move on, then the relay exits. */
		*r->sh->stop = 1;
		snprintf(body, sizeof(body), "draining\n");
	} else {
		status = 404;
		snprintf(body, sizeof(body), "try /health or /metrics\n");
	}
	dp_seg_release(&r->io.r, seg);
	n = dp_http_response(status, NULL, body, resp, sizeof(resp));
	if (n > 0)
		dp_conn_send(&r->io, c, resp, (uint32_t)n);
	dp_conn_shutdown(&r->io, c);
}
