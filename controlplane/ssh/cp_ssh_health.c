/*
 * cp_ssh_health.c: the health monitor of one host's pool. A probe (`true`)
 * runs on each connection by itself, so a connection that died in silence is
 * found and replaced before a real command lands on it; the pool's ring of
 * recent operations gives the figures and the trend.
 */
#include "ssh/cp_ssh_diag.h"
#include "ssh/cp_ssh_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_TIMEOUT_MS 5000

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(double *v, int n, int p)
{
	int i = n * p / 100;

	return n ? v[i < n ? i : n - 1] : 0;
}

/* Median latency of successful commands in s[from, to). */
static double median_ms(const struct cp_ssh_sample *s, int from, int to)
{
	double v[CP_SSH_SAMPLES] = {0};
	int n = 0;

	for (int i = from; i < to; i++)
		if (!s[i].failed && !s[i].bytes)
			v[n++] = s[i].ms;
	if (n == 0)
		return 0;
	qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
	return v[n / 2];
}

static double fail_rate(const struct cp_ssh_sample *s, int from, int to)
{
	int f = 0;

	for (int i = from; i < to; i++)
		f += s[i].failed != 0;
	return to > from ? (double)f / (to - from) : 0;
}

int cp_ssh_trend(const struct cp_ssh_sample *s, int n, char (*warn)[200], int max)
{
	int split = n - CP_SSH_TREND_RECENT, k = 0;
	double old_ms, new_ms, old_f, new_f;

	if (split < CP_SSH_TREND_RECENT)
		return 0;
	old_ms = median_ms(s, 0, split);
	new_ms = median_ms(s, split, n);
	old_f = fail_rate(s, 0, split);
	new_f = fail_rate(s, split, n);
	if (k < max && old_ms > 0 && new_ms > 2 * old_ms && new_ms > old_ms + 5)
		snprintf(warn[k++], 200,
			 "latency is growing: median %.1f ms over the last %d operations, %.1f ms "
			 "before",
			 new_ms, CP_SSH_TREND_RECENT, old_ms);
	if (k < max && new_f >= 0.10 && new_f > 2 * old_f + 0.05)
		snprintf(warn[k++], 200,
			 "failures are growing: %.0f%% of the last %d operations, %.0f%% before",
			 new_f * 100, CP_SSH_TREND_RECENT, old_f * 100);
	return k;
}

static void figures(struct cp_ssh_pool *pool, struct cp_ssh_health *h)
{
	static __thread struct cp_ssh_sample s[CP_SSH_SAMPLES];
	double lat[CP_SSH_SAMPLES] = {0}, xfer_ms = 0;
	uint64_t bytes = 0;
	int n = cp_ssh_pool_samples(pool, s, CP_SSH_SAMPLES), m = 0, failed = 0;

	for (int i = 0; i < n; i++) {
		failed += s[i].failed != 0;
		if (s[i].bytes) {
			bytes += s[i].bytes;
			xfer_ms += s[i].ms;
		} else if (!s[i].failed) {
			lat[m++] = s[i].ms;
		}
	}
	if (m > 1)
		qsort(lat, (size_t)m, sizeof(lat[0]), cmp_double);
	h->samples = (unsigned)n;
	h->p50_ms = pct(lat, m, 50);
	h->p90_ms = pct(lat, m, 90);
	h->p99_ms = pct(lat, m, 99);
	h->failure_rate = n ? (double)failed / n : 0;
	h->mb_s = xfer_ms > 0 ? (double)bytes / 1e6 / (xfer_ms / 1e3) : 0;
	h->nwarn = cp_ssh_trend(s, n, h->warn, CP_SSH_WARN_MAX);
}

/* Probe each connection on its own; returns how many failed. */
static int probe_all(struct cp_ssh_pool *pool, struct cp_ssh_health *h, struct cp_ssh_conn **c)
{
	static const char *const argv[] = {"true", NULL};
	struct cp_ssh_cmd cmd = {.argv = argv, .timeout_ms = PROBE_TIMEOUT_MS, .capture_max = 4096};
	int failed = 0;

	h->nconns = cp_ssh_pool_conns(pool, c, CP_SSH_HEALTH_CONNS);
	for (int i = 0; i < h->nconns; i++) {
		struct cp_ssh_result r;
		int rc = cp_ssh_run_on(pool, c[i], &cmd, &r);

		h->conns[i].ok = rc == 0 && r.exit_code == 0;
		h->conns[i].open_ms = r.open_ms;
		h->conns[i].cmd_ms = r.duration_ms;
		snprintf(h->conns[i].error, sizeof(h->conns[i].error), "%s",
			 h->conns[i].ok	  ? ""
			 : r.error.msg[0] ? r.error.msg
					  : "the probe failed");
		failed += !h->conns[i].ok;
		cp_ssh_result_free(&r);
	}
	return failed;
}

int cp_ssh_health_check(struct cp_ssh_pool *pool, enum cp_ssh_recovery how, struct cp_ssh_health *h)
{
	struct cp_ssh_conn *c[CP_SSH_HEALTH_CONNS];
	struct cp_ssh_err err = {0};
	int failed;

	memset(h, 0, sizeof(*h));
	failed = probe_all(pool, h, c);
	if (how != CP_SSH_RECOVER_NONE && (failed || h->nconns == 0)) {
		for (int i = 0; i < h->nconns; i++)
			if (!h->conns[i].ok || how == CP_SSH_RECOVER_REBUILD) {
				cp_ssh_pool_drop(pool, c[i]);
				h->dropped++;
			}
		h->reconnected = cp_ssh_pool_connect(pool, &err) == 0;
		if (!h->reconnected)
			snprintf(h->error, sizeof(h->error), "%s", err.msg);
	}
	h->ok = (h->nconns > 0 && !failed) || h->reconnected;
	if (!h->ok && !h->error[0])
		snprintf(h->error, sizeof(h->error), "%s",
			 h->nconns ? h->conns[0].error : "no connection to the host");
	figures(pool, h);
	return h->ok ? 0 : -EIO;
}

json_t *cp_ssh_health_json(const struct cp_ssh_health *h)
{
	json_t *conns = json_array(), *warns = json_array();

	for (int i = 0; i < h->nconns; i++)
		json_array_append_new(conns,
				      json_pack("{s:b,s:f,s:f,s:s}", "ok", h->conns[i].ok,
						"open_ms", h->conns[i].open_ms, "cmd_ms",
						h->conns[i].cmd_ms, "error", h->conns[i].error));
	for (int i = 0; i < h->nwarn; i++)
		json_array_append_new(warns, json_string(h->warn[i]));
	return json_pack("{s:b,s:o,s:{s:i,s:f,s:f,s:f,s:f,s:f},s:o,s:i,s:b,s:s}", "ok", h->ok,
			 "connections", conns, "figures", "samples", (int)h->samples, "p50_ms",
			 h->p50_ms, "p90_ms", h->p90_ms, "p99_ms", h->p99_ms, "failure_rate",
			 h->failure_rate, "mb_s", h->mb_s, "warnings", warns, "dropped", h->dropped,
			 "reconnected", h->reconnected, "error", h->error);
}
