/*
 * cp_http.c: sluice-control's h2o server (see cp_http.h): the dispatch, the
 * response helpers every route uses (JSON bodies, security headers, CORS),
 * authentication, the audit log, health and metrics. One handler owns every
 * path, so a 404 and a 405 come back as JSON like every other error:
 * {"error": "...", "code": "..."}.
 */
#include "api/cp_jobs.h"
#include "api/cp_node_pools.h"
#include "http/cp_server.h"
#include "pr_token.h"
#include "sl_bytes.h"
#include "sl_cli.h"
#include "sl_log.h"
#include "sl_net.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis.h>

/* Bodies up to this size reach our handlers, which refuse anything over
 * CP_BODY_MAX with a JSON 413; h2o answers bigger ones itself. */
#define H2O_BODY_LIMIT (1024 * 1024)
#define RELAY_LIVE_MS  15000 /* a relay heartbeating within this is live */

/* h2o hands our handler back; the server pointer rides along. */
struct cp_handler {
	h2o_handler_t super;
	struct cp_server *srv;
};

/* Lives in the request's pool; see struct cp_op. */
struct cp_op_guard {
	struct cp_op *op;
};

/* ---- responses ---- */

static const char *reason_of(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 429: return "Too Many Requests";
	case 503: return "Service Unavailable";
	default: return status < 500 ? "Error" : "Internal Server Error";
	}
}

static const h2o_iovec_t *header_value(h2o_req_t *req, const h2o_token_t *tok)
{
	ssize_t i = h2o_find_header(&req->headers, tok, -1);

	return i < 0 ? NULL : &req->headers.entries[i].value;
}

static const h2o_iovec_t *header_by_name(h2o_req_t *req, const char *name, size_t len)
{
	ssize_t i = h2o_find_header_by_str(&req->headers, name, len, -1);

	return i < 0 ? NULL : &req->headers.entries[i].value;
}

/* Is origin in the comma-separated allow-list? */
static int origin_allowed(const char *list, const h2o_iovec_t *origin)
{
	const char *p = list;

	if (list == NULL || origin == NULL)
		return 0;
	if (strcmp(list, "*") == 0)
		return 1;
	/* Bounded by the list's length. */
	while (*p) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		while (n && *p == ' ')
			p++, n--;
		if (h2o_memis(p, n, origin->base, origin->len))
			return 1;
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

/* Headers on every response: no sniffing, no framing, no referrer, a CSP
 * that allows nothing (the API serves JSON only), CORS for allowed origins. */
static void add_common_headers(struct cp_server *s, h2o_req_t *req)
{
	const h2o_iovec_t *origin = header_by_name(req, H2O_STRLIT("origin"));
	h2o_headers_t *h = &req->res.headers;

	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("x-content-type-options"), 0, NULL,
			      H2O_STRLIT("nosniff"));
	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("x-frame-options"), 0, NULL,
			      H2O_STRLIT("DENY"));
	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("referrer-policy"), 0, NULL,
			      H2O_STRLIT("no-referrer"));
	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("content-security-policy"), 0, NULL,
			      H2O_STRLIT("default-src 'none'; frame-ancestors 'none'"));
	h2o_add_header(&req->pool, h, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
	if (origin_allowed(s->cfg.cors_origins, origin)) {
		h2o_add_header(&req->pool, h, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL,
			       origin->base, origin->len);
		h2o_add_header(&req->pool, h, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
	}
}

static void send_body(struct cp_server *s, h2o_req_t *req, int status, const char *type, char *body,
		      size_t len)
{
	s->m.responses[status / 100 < 6 ? status / 100 : 5]++;
	req->res.status = status;
	req->res.reason = reason_of(status);
	add_common_headers(s, req);
	if (status == 204) {
		h2o_send_inline(req, NULL, 0);
		return;
	}
	req->res.content_length = len;
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type,
		       strlen(type));
	h2o_send_inline(req, body, len);
}

void cp_start_stream(struct cp_server *s, h2o_req_t *req, int status, const char *type)
{
	s->m.responses[status / 100 < 6 ? status / 100 : 5]++;
	req->res.status = status;
	req->res.reason = reason_of(status);
	add_common_headers(s, req);
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type,
		       strlen(type));
}

void cp_send_json(struct cp_server *s, h2o_req_t *req, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;

	if (body && text == NULL) {
		json_decref(body);
		send_body(s, req, 500, "application/json",
			  (char *)"{\"error\":\"out of memory\",\"code\":\"internal\"}", 43);
		return;
	}
	send_body(s, req, status, "application/json", text, text ? strlen(text) : 0);
	free(text); /* h2o_send_inline copied it */
	json_decref(body);
}

void cp_send_error(struct cp_server *s, h2o_req_t *req, int status, const char *code,
		   const char *msg)
{
	if (status == 401)
		h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL,
			       H2O_STRLIT("Bearer realm=\"sluice\""));
	cp_send_json(s, req, status, json_pack("{s:s,s:s}", "error", msg, "code", code));
}

/* ---- ops: requests waiting on Redis ---- */

static void on_guard_dispose(void *p)
{
	struct cp_op_guard *g = p;

	if (g->op)
		g->op->req = NULL;
}

struct cp_op *cp_op_new(struct cp_server *s, h2o_req_t *req)
{
	struct cp_op *op = calloc(1, sizeof(*op));

	if (op == NULL)
		return NULL;
	op->guard = h2o_mem_alloc_shared(&req->pool, sizeof(*op->guard), on_guard_dispose);
	op->guard->op = op;
	op->s = s;
	op->req = req;
	op->now = (uint64_t)time(NULL);
	s->inflight++;
	return op;
}

static void op_free(struct cp_op *op)
{
	if (op->req)
		op->guard->op = NULL;
	op->s->inflight--;
	for (size_t i = 0; i < op->nids; i++)
		free(op->ids[i]);
	free(op->ids);
	free(op->blob_owner);
	if (op->lim_owned)
		free(op->lim_ps);
	json_decref(op->acc);
	free(op->blob);
	free(op);
}

void cp_op_release(struct cp_op *op)
{
	op_free(op);
}

void cp_op_reply(struct cp_op *op, int status, json_t *body)
{
	if (op->req)
		cp_send_json(op->s, op->req, status, body);
	else
		json_decref(body);
	op_free(op);
}

void cp_op_error(struct cp_op *op, int status, const char *code, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (op->req)
		cp_send_error(op->s, op->req, status, code, msg);
	op_free(op);
}

int cp_prefixed_id_ok(const char *id, size_t n, const char *prefix, size_t max)
{
	size_t pl = strlen(prefix);

	if (n <= pl || n > max || memcmp(id, prefix, pl) != 0)
		return 0;
	for (size_t i = pl; i < n; i++)
		if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9')))
			return 0;
	return 1;
}

int cp_op_field(struct cp_op *op, const char *const *fields, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(key, fields[i]) == 0)
			return (int)i;
	cp_op_error(op, 400, "unknown_field", "unknown field \"%.64s\"", key);
	return -1;
}

void cp_op_redis_error(struct cp_op *op, redisReply *r, const char *err)
{
	if (err != NULL)
		cp_op_error(op, 503, "redis_unavailable", "session store unavailable: %s", err);
	else
		cp_op_error(op, 500, "redis_error", "session store error: %.*s",
			    r ? (int)r->len : 0, r ? r->str : "");
}

void cp_op_step_failed(struct cp_op *op, redisReply *r, const char *err)
{
	if (op->step_failed)
		return;
	op->step_failed = 1;
	op->why_redis_down = err != NULL;
	snprintf(op->why, sizeof(op->why), "%s",
		 err				     ? err
		 : r && r->type == REDIS_REPLY_ERROR ? r->str
						     : "unexpected reply");
}

void cp_op_step_error(struct cp_op *op, const char *store)
{
	cp_op_error(op, op->why_redis_down ? 503 : 500,
		    op->why_redis_down ? "redis_unavailable" : "redis_error", "%s: %s", store,
		    op->why);
}

/* ---- audit ---- */

int cp_client_ip(h2o_req_t *req, char ip[64])
{
	struct sockaddr_storage ss;

	if (req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) <= 0)
		return -1;
	return sl_addr_ip((struct sockaddr *)&ss, ip);
}

void cp_audit(struct cp_server *s, h2o_req_t *req, const char *event, const char *actor,
	      const char *detail)
{
	char ip[64] = "", ts[40];
	const h2o_iovec_t *ua = req ? header_value(req, H2O_TOKEN_USER_AGENT) : NULL;
	json_t *o;
	char *line;

	if (req)
		cp_client_ip(req, ip);
	sl_time_iso8601(ts, sizeof(ts));
	o = json_pack("{s:s,s:s,s:s,s:s,s:s%}", "time", ts, "event", event, "actor",
		      actor ? actor : "-", "ip", ip, "userAgent", ua ? ua->base : "",
		      ua ? ua->len : (size_t)0);
	if (o && detail)
		json_object_set_new(o, "detail", json_string(detail));
	line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (line && s->audit) {
		fprintf(s->audit, "%s\n", line);
		fflush(s->audit);
	} else if (line)
		sl_info("audit %s", line);
	free(line);
	json_decref(o);
}

/* ---- auth ---- */

/* The API key of a request: "Authorization: Bearer K" or "X-API-Key: K". */
static int request_key(h2o_req_t *req, const char **key, size_t *len)
{
	const h2o_iovec_t *v = header_value(req, H2O_TOKEN_AUTHORIZATION);
	ssize_t i;

	if (v && v->len > 7 && h2o_lcstris(v->base, 7, H2O_STRLIT("bearer "))) {
		*key = v->base + 7;
		*len = v->len - 7;
		return 0;
	}
	i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-api-key"), -1);
	if (i < 0)
		return -ENOENT;
	*key = req->headers.entries[i].value.base;
	*len = req->headers.entries[i].value.len;
	return 0;
}

static void auth_refuse(struct cp_op *op, int status, const char *code, const char *msg)
{
	op->s->m.auth_failures++;
	if (op->req)
		cp_audit(op->s, op->req, "auth_failure",
			 op->actor.key_id[0] ? op->actor.key_id : "-", msg);
	cp_op_error(op, status, code, "%s", msg);
}

static void auth_granted(struct cp_op *op)
{
	if ((op->actor.scopes & op->need) != op->need && !(op->actor.scopes & CP_SCOPE_ADMIN)) {
		auth_refuse(op, 403, "forbidden", "this key lacks the scope this route needs");
		return;
	}
	if (op->has_deferred_error) {
		cp_op_error(op, op->deferred_error.status, op->deferred_error.code, "%s",
			    op->deferred_error.message);
		return;
	}
	op->next(op);
}

static unsigned parse_scopes(const char *s, size_t n)
{
	unsigned sc = 0;

	if (memmem(s, n, "admin", 5))
		sc |= CP_SCOPE_ADMIN;
	if (memmem(s, n, "tunnels", 7))
		sc |= CP_SCOPE_TUNNELS;
	return sc;
}

/* HMGET sl:key:<hash> id scopes revoked */
static void on_key_lookup(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type != REDIS_REPLY_ARRAY || r->elements != 3) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->element[0]->type != REDIS_REPLY_STRING) {
		auth_refuse(op, 401, "unauthorized", "unknown API key");
		return;
	}
	snprintf(op->actor.key_id, sizeof(op->actor.key_id), "%.*s", (int)r->element[0]->len,
		 r->element[0]->str);
	if (r->element[2]->type == REDIS_REPLY_STRING && r->element[2]->len == 1 &&
	    r->element[2]->str[0] == '1') {
		auth_refuse(op, 401, "key_revoked", "this API key has been revoked");
		return;
	}
	if (r->element[1]->type == REDIS_REPLY_STRING)
		op->actor.scopes = parse_scopes(r->element[1]->str, r->element[1]->len);
	auth_granted(op);
}

void cp_auth(struct cp_op *op, unsigned need, void (*next)(struct cp_op *op))
{
	const char *key;
	size_t len;
	char hash[65], k[CP_KEY_LEN + 1];
	const char *admin = op->s->cfg.admin_key;

	op->need = need;
	op->next = next;
	if (request_key(op->req, &key, &len) < 0) {
		auth_refuse(op, 401, "unauthorized",
			    "an API key is required: Authorization: Bearer KEY");
		return;
	}
	if (admin && admin[0] && sl_ct_equal(key, len, admin, strlen(admin))) {
		snprintf(op->actor.key_id, sizeof(op->actor.key_id), "admin");
		op->actor.scopes = CP_SCOPE_ADMIN | CP_SCOPE_TUNNELS;
		auth_granted(op);
		return;
	}
	/* Our keys have a fixed shape; anything else never reaches Redis. */
	if (len != CP_KEY_LEN || memcmp(key, "sk_", 3) != 0) {
		auth_refuse(op, 401, "unauthorized", "unknown API key");
		return;
	}
	memcpy(k, key, len);
	k[len] = '\0';
	pr_sha256_hex(k, len, hash);
	memset(k, 0, sizeof(k));
	cp_rdb_cmdf(op->s->db, on_key_lookup, op, "HMGET sl:key:%s id scopes revoked", hash);
}

/* ---- health ---- */

/* The pipeline PING, ZCOUNT relays, ZREMRANGEBYSCORE + ZCARD active. */
static void on_health(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	json_t *checks = op->acc;
	int step = op->step++;

	if (step == 0) {
		double ms = (double)(h2o_now(op->s->loop) - op->started_ms);

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

static int route_health(struct cp_server *s, h2o_req_t *req)
{
	struct cp_op *op = cp_op_new(s, req);
	char since[32], now[32];

	if (op == NULL)
		return -1;
	op->acc = json_object();
	op->started_ms = h2o_now(s->loop);
	snprintf(now, sizeof(now), "%llu", (unsigned long long)time(NULL));
	snprintf(since, sizeof(since), "%llu",
		 (unsigned long long)(h2o_now(s->loop) - RELAY_LIVE_MS));
	cp_rdb_cmdf(s->db, on_health, op, "PING");
	cp_rdb_cmdf(s->db, on_health, op, "ZCOUNT sl:relays %s +inf", since);
	cp_rdb_cmdf(s->db, on_health, op, "ZREMRANGEBYSCORE sl:active -inf %s", now);
	cp_rdb_cmdf(s->db, on_health, op, "ZCARD sl:active");
	return 0;
}

static int route_version(struct cp_server *s, h2o_req_t *req)
{
	cp_send_json(s, req, 200,
		     json_pack("{s:s,s:s}", "version", sl_version_string(), "h2o", H2O_VERSION));
	return 0;
}

static int route_metrics(struct cp_server *s, h2o_req_t *req)
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
		(unsigned long long)s->m.sessions_deleted, (unsigned long long)s->m.keys_created,
		(unsigned long long)s->m.keys_revoked, (unsigned long long)s->m.stats_folded,
		(unsigned long long)s->m.rate_limited, (unsigned long long)s->inflight,
		cp_rdb_up(s->db), (unsigned long long)rs.commands, (unsigned long long)rs.failures,
		(unsigned long long)rs.timeouts, (unsigned long long)rs.connects);
	send_body(s, req, 200, "text/plain; version=0.0.4", body, (size_t)n);
	return 0;
}

/* ---- dispatch ---- */

typedef int (*cp_route_fn)(struct cp_server *s, h2o_req_t *req);

struct cp_route {
	const char *method;
	const char *path;
	cp_route_fn fn;
};

static const struct cp_route routes[] = {
	{"GET", "/health", route_health},
	{"GET", "/api/v1/health", route_health},
	{"GET", "/api/v1/version", route_version},
	{"GET", "/metrics", route_metrics},
};

/* Collections with an optional /{id}: the route parses the method. */
struct cp_collection {
	const char *prefix;
	int (*fn)(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
};

static const struct cp_collection collections[] = {
	{"/api/v1/tunnels", cp_api_tunnels}, {"/api/v1/keys", cp_api_keys},
	{"/api/v1/domains", cp_api_domains}, {"/api/v1/relays", cp_api_relays},
	{"/api/v1/nodes", cp_api_nodes},     {"/api/v1/jobs", cp_api_jobs},
};

static int preflight(struct cp_server *s, h2o_req_t *req)
{
	h2o_headers_t *h = &req->res.headers;

	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("access-control-allow-methods"), 0, NULL,
			      H2O_STRLIT("GET, POST, DELETE, OPTIONS"));
	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("access-control-allow-headers"), 0, NULL,
			      H2O_STRLIT("Authorization, Content-Type, X-API-Key"));
	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("access-control-max-age"), 0, NULL,
			      H2O_STRLIT("600"));
	send_body(s, req, 204, "", NULL, 0);
	return 0;
}

static int dispatch_collection(struct cp_server *s, h2o_req_t *req)
{
	const h2o_iovec_t *p = &req->path_normalized;

	for (size_t i = 0; i < sizeof(collections) / sizeof(collections[0]); i++) {
		size_t n = strlen(collections[i].prefix);

		if (p->len < n || memcmp(p->base, collections[i].prefix, n) != 0)
			continue;
		if (p->len == n)
			return collections[i].fn(s, req, NULL, 0);
		if (p->base[n] == '/')
			return collections[i].fn(s, req, p->base + n + 1, p->len - n - 1);
	}
	return 1;
}

/* The localtunnel client asks GET /?new (any name) or GET /<name>. */
static int localtunnel_request(struct cp_server *s, h2o_req_t *req)
{
	const h2o_iovec_t *p = &req->path_normalized;
	const char *q = req->query_at != SIZE_MAX ? req->path.base + req->query_at : NULL;

	if (!h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET")) || p->len < 1)
		return 0;
	if (p->len == 1 && q && req->path.len - req->query_at >= 4 && memcmp(q, "?new", 4) == 0) {
		if (cp_api_localtunnel(s, req, NULL, 0) < 0)
			cp_send_error(s, req, 503, "internal", "out of memory");
		return 1;
	}
	if (p->len > 1 && memchr(p->base + 1, '/', p->len - 1) == NULL) {
		if (cp_api_localtunnel(s, req, p->base + 1, p->len - 1) < 0)
			cp_send_error(s, req, 503, "internal", "out of memory");
		return 1;
	}
	return 0;
}

static int on_req(h2o_handler_t *self, h2o_req_t *req)
{
	struct cp_server *s = ((struct cp_handler *)self)->srv;
	int path_known = 0;

	s->m.requests++;
	sl_debug("%.*s %.*s", (int)req->method.len, req->method.base, (int)req->path_normalized.len,
		 req->path_normalized.base);
	if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")))
		return preflight(s, req);
	if (req->entity.base && req->entity.len > CP_BODY_MAX) {
		cp_send_error(s, req, 413, "body_too_large", "request body over 16384 bytes");
		return 0;
	}
	if (dispatch_collection(s, req) == 0)
		return 0;
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (!h2o_memis(req->path_normalized.base, req->path_normalized.len, routes[i].path,
			       strlen(routes[i].path)))
			continue;
		path_known = 1;
		if (h2o_memis(req->method.base, req->method.len, routes[i].method,
			      strlen(routes[i].method)) ||
		    (strcmp(routes[i].method, "GET") == 0 &&
		     h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD"))))
			return routes[i].fn(s, req);
	}
	if (!path_known && s->cfg.localtunnel && localtunnel_request(s, req))
		return 0;
	if (path_known)
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
	else
		cp_send_error(s, req, 404, "not_found", "no such endpoint");
	return 0;
}

/* An open client connection. Ownership: made at accept, freed by h2o's
 * on_close hook when the socket goes. At exit the remaining ones (idle
 * keep-alive connections: HTTP/1 in h2o 2.2.5 has no graceful shutdown) are
 * shut down, so that h2o closes them its own way before the context goes. */
struct cp_client {
	struct cp_server *s;
	h2o_socket_t *sock;
	struct cp_client *prev, *next;
};

/* Matched by the peer's address: h2o does not hand a request's socket out. */
int cp_client_fd(struct cp_server *s, h2o_req_t *req)
{
	struct sockaddr_storage want, got;
	socklen_t wl = req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&want);

	for (struct cp_client *c = s->clients; c && wl; c = c->next) {
		socklen_t gl = h2o_socket_getpeername(c->sock, (struct sockaddr *)&got);

		if (gl == wl && memcmp(&got, &want, wl) == 0)
			return h2o_socket_get_fd(c->sock);
	}
	return -1;
}

static void on_client_close(void *data)
{
	struct cp_client *c = data;

	if (c->prev)
		c->prev->next = c->next;
	else
		c->s->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->s->nclients--;
	free(c);
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
	struct cp_server *s = listener->data;
	struct cp_client *c;
	h2o_socket_t *sock;

	if (err != NULL)
		return;
	sock = h2o_evloop_socket_accept(listener);
	if (sock == NULL)
		return;
	if ((c = calloc(1, sizeof(*c))) != NULL) {
		c->s = s;
		c->sock = sock;
		c->next = s->clients;
		if (s->clients)
			s->clients->prev = c;
		s->clients = c;
		s->nclients++;
		sock->on_close.cb = on_client_close;
		sock->on_close.data = c;
	}
	h2o_accept(&s->accept_ctx, sock);
}

/* Shut down every client connection still open and let h2o close them;
 * bounded by a second. */
static void close_clients(struct cp_server *s)
{
	uint64_t until = h2o_now(s->loop) + 1000;

	for (struct cp_client *c = s->clients; c; c = c->next)
		shutdown(h2o_socket_get_fd(c->sock), SHUT_RDWR);
	while (s->nclients > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
}

static void setup_handlers(struct cp_server *s)
{
	h2o_hostconf_t *host;
	h2o_pathconf_t *path;
	struct cp_handler *h;

	h2o_config_init(&s->globalconf);
	s->globalconf.max_request_entity_size = H2O_BODY_LIMIT;
	host = h2o_config_register_host(&s->globalconf, h2o_iovec_init(H2O_STRLIT("default")),
					65535);
	path = h2o_config_register_path(host, "/", 0);
	h = (struct cp_handler *)h2o_create_handler(path, sizeof(*h));
	h->super.on_req = on_req;
	h->srv = s;
}

static int open_audit(struct cp_server *s)
{
	if (s->cfg.audit_path == NULL || s->cfg.audit_path[0] == '\0')
		return 0;
	s->audit = fopen(s->cfg.audit_path, "a");
	return s->audit ? 0 : -errno;
}

int cp_server_create(struct cp_server **out, const struct cp_server_config *cfg)
{
	struct cp_server *s = calloc(1, sizeof(*s));
	int fd, err;

	if (s == NULL)
		return -ENOMEM;
	s->cfg = *cfg;
	cp_policy_default(&s->policy);
	s->policy.port_min = (uint32_t)cfg->port_min;
	s->policy.port_max = (uint32_t)cfg->port_max;
	if (cfg->duration_default)
		s->policy.duration_default = (uint32_t)cfg->duration_default;
	if (cfg->duration_min)
		s->policy.duration_min = (uint32_t)cfg->duration_min;
	if ((err = open_audit(s)) < 0) {
		sl_error("cannot open the audit log %s: %s", cfg->audit_path, strerror(-err));
		free(s);
		return err;
	}
	fd = sl_listen_tcp(cfg->listen, 1024, SL_LISTEN_NONBLOCK);
	if (fd < 0) {
		if (s->audit)
			fclose(s->audit);
		free(s);
		return fd;
	}
	setup_handlers(s);
	s->loop = h2o_evloop_create();
	h2o_context_init(&s->ctx, s->loop, &s->globalconf);
	s->accept_ctx.ctx = &s->ctx;
	s->accept_ctx.hosts = s->globalconf.hosts;
	s->listener = h2o_evloop_socket_create(s->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
	s->listener->data = s;
	cp_rdb_create(&s->db, s->loop, cfg->redis, cfg->redis_timeout_ms);
	/* The counters' XREAD blocks up to a second: its own connection, with
	 * room above that in its timeout. */
	cp_rdb_create(&s->stats_db, s->loop, cfg->redis, 1000 + cfg->redis_timeout_ms * 4);
	h2o_socket_read_start(s->listener, on_accept);
	cp_api_follow_stats(s);
	*out = s;
	return 0;
}

/* Stop taking connections, then let requests waiting on Redis finish
 * (bounded by the Redis timeout) before the loop goes away. */
int cp_server_run(struct cp_server *s, volatile sig_atomic_t *stop)
{
	/* Wake at least every 200 ms to notice a stop request from a signal. */
	while (!*stop)
		if (h2o_evloop_run(s->loop, 200) != 0 && errno != EINTR)
			return -errno;
	return 0;
}

void cp_server_free(struct cp_server *s)
{
	uint64_t until;

	h2o_socket_read_stop(s->listener);
	h2o_socket_close(s->listener);
	s->listener = NULL;
	/* Drain: answers for requests already waiting on Redis. */
	until = h2o_now(s->loop) + (uint64_t)s->cfg.redis_timeout_ms + 200;
	while (s->inflight > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
	/* A domain check runs on a thread with its own bound (3 s): its pipe
	 * is a socket of this loop, so the loop outlives it. */
	until = h2o_now(s->loop) + 4000;
	while (s->verifying > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
	/* Provisioning jobs stop at their next step; their records say so. */
	cp_jobs_shutdown(s);
	close_clients(s);
	/* Node commands streaming to clients just closed are cancelled (their
	 * remote processes killed within 3 s); their pipes are this loop's. */
	until = h2o_now(s->loop) + 4000;
	while (s->inflight > 0 && h2o_now(s->loop) < until)
		h2o_evloop_run(s->loop, 50);
	cp_node_pools_free();
	s->stopping = 1; /* the counters' reader does not start again */
	cp_rdb_free(s->stats_db);
	cp_rdb_free(s->db);
	h2o_timeout_unlink(&s->stats_retry);
	h2o_timeout_dispose(s->loop, &s->stats_retry_timeout);
	h2o_evloop_run(s->loop, 0);
	h2o_context_dispose(&s->ctx);
	h2o_config_dispose(&s->globalconf);
	h2o_evloop_destroy(s->loop);
	if (s->audit)
		fclose(s->audit);
	free(s);
}
