/*
 * cp_health.c: what a load balancer, a monitor or an operator asks the
 * control plane about itself:
 *
 *   GET /health, /api/v1/health   Redis (with its latency), live relays and
 *                                 session capacity: 200 ok, or 503 degraded
 *   GET /api/v1/version           this build's version and h2o's
 *   GET /metrics                  the counters, in Prometheus's text format
 *
 * No key is needed: nothing here is a secret.
 */
#include "api/cp_health.h"
#include "http/cp_op.h"
#include "http/cp_reply.h"
#include "sl_cli.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

#include <hiredis.h>

#define RELAY_LIVE_MS 15000 /* a relay heartbeating within this is live */

/* A health check: when its PING went out. The op's own (cp_op_new with this
 * size); it owns nothing more (the checks gather in op->acc). */
struct health_op {
	struct cp_op op;
	uint64_t started_ms;
};

/* The pipeline PING, ZCOUNT relays, ZREMRANGEBYSCORE + ZCARD active. */
static void on_health(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *checks = op->acc;
	int step = op->step++;

	if (step == 0) {
		double ms = (double)(h2o_now(op->s->loop) -
				     H2O_STRUCT_FROM_MEMBER(struct health_op, op, op)->started_ms);

		json_object_set_new(
			checks, "redis",
			err || r->type == REDIS_REPLY_ERROR
				? json_pack("{s:b,s:s}", "ok", 0, "error", err ? err : r->str)
				: json_pack("{s:b,s:f}", "ok", 1, "latencyMs", ms));
	} else if (step == 1) {
		long long live = !err && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

		json_object_set_new(checks, "relays",
				    json_pack("{s:b,s:I,s:i}", "ok",
					      live >= (long long)op->s->cfg.min_relays, "live",
					      (json_int_t)live, "min", op->s->cfg.min_relays));
	} else if (step == 3) {
		long long active = !err && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
		long max = op->s->cfg.max_sessions;

		json_object_set_new(checks, "capacity",
				    json_pack("{s:b,s:I,s:I}", "ok",
					      active >= 0 && active * 10 < (long long)max * 9,
					      "active", active, "max", (json_int_t)max));
	}
	if (step == 3) {
		const char *k;
		json_t *v;
		int ok = 1;

		json_object_foreach(checks, k, v) ok &= json_is_true(json_object_get(v, "ok"));
		op->acc = NULL;
		cp_op_reply(op, ok ? 200 : 503,
			    json_pack("{s:s,s:s,s:O,s:o}", "status", ok ? "ok" : "degraded",
				      "version", sl_version_string(), "redis",
				      json_object_get(checks, "redis"), "checks", checks));
	}
}

int cp_health_route(struct cp_server *s, h2o_req_t *req)
{
	struct cp_op *op = cp_op_new(s, req, sizeof(struct health_op));
	char since[32], now[32];

	if (op == NULL)
		return -ENOMEM;
	op->acc = json_object();
	H2O_STRUCT_FROM_MEMBER(struct health_op, op, op)->started_ms = h2o_now(s->loop);
	snprintf(now, sizeof(now), "%llu", (unsigned long long)time(NULL));
	snprintf(since, sizeof(since), "%llu",
		 (unsigned long long)(h2o_now(s->loop) - RELAY_LIVE_MS));
	cp_rdb_cmdf(s->db, on_health, op, "PING");
	cp_rdb_cmdf(s->db, on_health, op, "ZCOUNT sl:relays %s +inf", since);
	cp_rdb_cmdf(s->db, on_health, op, "ZREMRANGEBYSCORE sl:active -inf %s", now);
	cp_rdb_cmdf(s->db, on_health, op, "ZCARD sl:active");
	return 0;
}

int cp_version_route(struct cp_server *s, h2o_req_t *req)
{
	cp_send_json(s, req, 200,
		     json_pack("{s:s,s:s}", "version", sl_version_string(), "h2o", H2O_VERSION));
	return 0;
}

int cp_metrics_route(struct cp_server *s, h2o_req_t *req)
{
	struct cp_rdb_stats rs;
	char body[2048];
	int n;

	cp_rdb_get_stats(s->db, &rs);
	n = snprintf(
		body, sizeof(body),
		"# TYPE sluice_control_requests_total counter\n"
		"sluice_control_requests_total %llu\n"
		"# TYPE sluice_control_responses_total counter\n"
		"sluice_control_responses_total{class=\"2xx\"} %llu\n"
		"sluice_control_responses_total{class=\"4xx\"} %llu\n"
		"sluice_control_responses_total{class=\"5xx\"} %llu\n"
		"# TYPE sluice_control_auth_failures_total counter\n"
		"sluice_control_auth_failures_total %llu\n"
		"# TYPE sluice_control_sessions_created_total counter\n"
		"sluice_control_sessions_created_total %llu\n"
		"# TYPE sluice_control_sessions_deleted_total counter\n"
		"sluice_control_sessions_deleted_total %llu\n"
		"# TYPE sluice_control_sessions_replaced_total counter\n"
		"sluice_control_sessions_replaced_total %llu\n"
		"# TYPE sluice_control_keys_total counter\n"
		"sluice_control_keys_total{event=\"created\"} %llu\n"
		"sluice_control_keys_total{event=\"revoked\"} %llu\n"
		"# TYPE sluice_control_stats_folded_total counter\n"
		"sluice_control_stats_folded_total %llu\n"
		"# TYPE sluice_control_rate_limited_total counter\n"
		"sluice_control_rate_limited_total %llu\n"
		"# TYPE sluice_control_inflight gauge\n"
		"sluice_control_inflight %llu\n"
		"# TYPE sluice_control_redis_up gauge\n"
		"sluice_control_redis_up %d\n"
		"# TYPE sluice_control_redis_total counter\n"
		"sluice_control_redis_total{event=\"command\"} %llu\n"
		"sluice_control_redis_total{event=\"failure\"} %llu\n"
		"sluice_control_redis_total{event=\"timeout\"} %llu\n"
		"sluice_control_redis_total{event=\"connect\"} %llu\n",
		(unsigned long long)s->m.requests, (unsigned long long)s->m.responses[2],
		(unsigned long long)s->m.responses[4], (unsigned long long)s->m.responses[5],
		(unsigned long long)s->m.auth_failures, (unsigned long long)s->m.sessions_created,
		(unsigned long long)s->m.sessions_deleted,
		(unsigned long long)s->m.sessions_replaced, (unsigned long long)s->m.keys_created,
		(unsigned long long)s->m.keys_revoked, (unsigned long long)s->m.stats_folded,
		(unsigned long long)s->m.rate_limited, (unsigned long long)s->inflight,
		cp_rdb_up(s->db), (unsigned long long)rs.commands, (unsigned long long)rs.failures,
		(unsigned long long)rs.timeouts, (unsigned long long)rs.connects);
	cp_send_body(s, req, 200, "text/plain; version=0.0.4", body, (size_t)n);
	return 0;
}
