/*
 * cp_reply.c: responses (see cp_reply.h). Every answer goes through
 * cp_send_body or cp_start_stream, which count it by status class for
 * /metrics and add the common headers.
 */
#include "http/cp_reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* The status line and the common headers of every answer, counted for
 * /metrics. */
static void head(struct cp_server *s, h2o_req_t *req, int status)
{
	s->m.responses[status / 100 < 6 ? status / 100 : 5]++;
	req->res.status = status;
	req->res.reason = reason_of(status);
	add_common_headers(s, req);
}

void cp_send_body(struct cp_server *s, h2o_req_t *req, int status, const char *type,
		  const char *body, size_t len)
{
	head(s, req, status);
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
	head(s, req, status);
	h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, type,
		       strlen(type));
}

void cp_send_json(struct cp_server *s, h2o_req_t *req, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;

	if (body && text == NULL) {
		json_decref(body);
		cp_send_body(s, req, 500, "application/json",
			     "{\"error\":\"out of memory\",\"code\":\"internal\"}", 43);
		return;
	}
	cp_send_body(s, req, status, "application/json", text, text ? strlen(text) : 0);
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

void cp_send_preflight(struct cp_server *s, h2o_req_t *req)
{
	h2o_headers_t *h = &req->res.headers;

	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("access-control-allow-methods"), 0, NULL,
			      H2O_STRLIT("GET, POST, DELETE, OPTIONS"));
	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("access-control-allow-headers"), 0, NULL,
			      H2O_STRLIT("Authorization, Content-Type, X-API-Key"));
	h2o_add_header_by_str(&req->pool, h, H2O_STRLIT("access-control-max-age"), 0, NULL,
			      H2O_STRLIT("600"));
	cp_send_body(s, req, 204, "", NULL, 0);
}

json_t *cp_iso_time(uint64_t t)
{
	char buf[32];
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_string(buf);
}
