/*
 * dp_http.c: request heads, chunked framing, upstream heads and error
 * responses (see dp_http.h). Pure functions over caller buffers: nothing here
 * allocates or does I/O, so all of it is unit tested and fuzzed.
 */
#include "dp_http.h"
#include "sl_buf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 tchar */
static int is_tchar(unsigned char c)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') ||
	       (c && strchr(extra, c) != NULL);
}

/* Find the end of the line starting at p: returns the index after LF and the
 * line's length without CR LF, or -EAGAIN when no LF yet. */
static ssize_t line_end(const char *p, size_t len, size_t *line_len)
{
	const char *lf = memchr(p, '\n', len);

	if (lf == NULL)
		return -EAGAIN;
	*line_len = (size_t)(lf - p);
	if (*line_len > 0 && p[*line_len - 1] == '\r')
		(*line_len)--;
	return lf - p + 1;
}

static int parse_request_line(const char *p, size_t n, struct dp_http_req *r)
{
	const char *sp1, *sp2;
	size_t i;

	sp1 = memchr(p, ' ', n);
	if (sp1 == NULL || sp1 == p)
		return DP_HTTP_BAD;
	for (const char *q = p; q < sp1; q++)
		if (!is_tchar((unsigned char)*q))
			return DP_HTTP_BAD;
	sp2 = memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - p));
	if (sp2 == NULL || sp2 == sp1 + 1)
		return DP_HTTP_BAD;
	for (const char *q = sp1 + 1; q < sp2; q++)
		if ((unsigned char)*q <= 0x20 || *q == 0x7f)
			return DP_HTTP_BAD;
	i = (size_t)(sp2 + 1 - p);
	if (n - i != 8 || memcmp(p + i, "HTTP/1.", 7) != 0 || (p[i + 7] != '0' && p[i + 7] != '1'))
		return DP_HTTP_BAD;
	r->method = p;
	r->method_len = (size_t)(sp1 - p);
	r->target = sp1 + 1;
	r->target_len = (size_t)(sp2 - sp1 - 1);
	r->minor = p[i + 7] - '0';
	return 0;
}

static int name_is(const struct dp_http_hdr *h, const char *name)
{
	return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

/* Does the comma-separated value list v contain token (case-insensitive)? */
static int list_has(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token);

	for (size_t i = 0; i < n;) {
		size_t j = i;

		while (j < n && v[j] != ',')
			j++;
		size_t a = i, b = j;
		while (a < b && (v[a] == ' ' || v[a] == '\t'))
			a++;
		while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
			b--;
		if (b - a == tl && strncasecmp(v + a, token, tl) == 0)
			return 1;
		i = j + 1;
	}
	return 0;
}

/* RFC 9110 field-vchar, SP or HTAB: anything but a control other than HTAB. */
static int is_field_char(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int parse_header_line(const char *p, size_t n, struct dp_http_hdr *h)
{
	const char *colon = memchr(p, ':', n);
	size_t a, b;

	if (colon == NULL || colon == p)
		return DP_HTTP_BAD;
	for (const char *q = p; q < colon; q++)
		if (!is_tchar((unsigned char)*q))
			return DP_HTTP_BAD; /* also refuses "Name :" and obs-fold lines */
	a = (size_t)(colon + 1 - p);
	b = n;
	while (a < b && (p[a] == ' ' || p[a] == '\t'))
		a++;
	while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
		b--;
	/* RFC 9110 5.5: a field value is VCHAR, SP, HTAB and obs-text
	 * (0x80-0xFF, kept for old clients' Latin-1); any other control (NUL,
	 * CR, ESC, DEL...) is refused rather than passed to an app that may
	 * read it as a line end or a terminal escape. */
	for (size_t i = a; i < b; i++)
		if (!is_field_char((unsigned char)p[i]))
			return DP_HTTP_BAD;
	h->name = p;
	h->name_len = (size_t)(colon - p);
	h->value = p + a;
	h->value_len = b - a;
	return 0;
}

static int parse_content_length(const struct dp_http_hdr *h, int64_t *cl)
{
	int64_t v = 0;

	if (h->value_len == 0 || h->value_len > 18)
		return DP_HTTP_BAD;
	for (size_t i = 0; i < h->value_len; i++) {
		if (h->value[i] < '0' || h->value[i] > '9')
			return DP_HTTP_BAD;
		v = v * 10 + (h->value[i] - '0');
	}
	if (*cl >= 0 && *cl != v)
		return DP_HTTP_BAD;
	*cl = v;
	return 0;
}

/* Derive host, body framing and upgrade from the headers. */
static int derive(struct dp_http_req *r)
{
	int te = 0, conn_upgrade = 0, has_upgrade = 0;

	r->content_length = -1;
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct dp_http_hdr *h = &r->headers[i];

		if (name_is(h, "host")) {
			if (r->host != NULL)
				return DP_HTTP_BAD;
			r->host = h->value;
			r->host_len = h->value_len;
		} else if (name_is(h, "content-length")) {
			if (parse_content_length(h, &r->content_length) < 0)
				return DP_HTTP_BAD;
		} else if (name_is(h, "transfer-encoding")) {
			if (te || h->value_len != 7 || strncasecmp(h->value, "chunked", 7) != 0)
				return DP_HTTP_BAD_TE;
			te = 1;
		} else if (name_is(h, "connection")) {
			conn_upgrade |= list_has(h->value, h->value_len, "upgrade");
		} else if (name_is(h, "upgrade")) {
			has_upgrade = 1;
		}
	}
	if (te && r->content_length >= 0)
		return DP_HTTP_BAD;
	r->chunked = te;
	r->upgrade = (has_upgrade && conn_upgrade) ||
		     (r->method_len == 7 && memcmp(r->method, "CONNECT", 7) == 0);
	if (r->host != NULL) {
		/* Drop a port; keep a bracketed IPv6 literal whole. */
		const char *end = r->host + r->host_len;

		if (r->host_len && r->host[0] == '[') {
			const char *rb = memchr(r->host, ']', r->host_len);

			if (rb != NULL)
				r->host_len = (size_t)(rb + 1 - r->host);
		} else {
			for (const char *q = r->host; q < end; q++)
				if (*q == ':') {
					r->host_len = (size_t)(q - r->host);
					break;
				}
		}
	}
	return 0;
}

int dp_http_parse_request(const char *buf, size_t len, struct dp_http_req *r)
{
	size_t off = 0, n;
	ssize_t adv;
	int err;

	memset(r, 0, offsetof(struct dp_http_req, headers));
	/* RFC 9112 2.2: ignore at least one empty line before the request line. */
	while (off < len && (buf[off] == '\r' || buf[off] == '\n') && off < 4)
		off++;
	if ((adv = line_end(buf + off, len - off, &n)) < 0)
		return len - off > DP_HTTP_HEAD_MAX ? DP_HTTP_TOO_MANY : DP_HTTP_INCOMPLETE;
	if ((err = parse_request_line(buf + off, n, r)) < 0)
		return err;
	off += (size_t)adv;
	for (;;) {
		if ((adv = line_end(buf + off, len - off, &n)) < 0)
			return DP_HTTP_INCOMPLETE;
		off += (size_t)adv;
		if (n == 0)
			break;
		if (r->nheaders == DP_HTTP_MAX_HEADERS)
			return DP_HTTP_TOO_MANY;
		if ((err = parse_header_line(buf + off - (size_t)adv, n,
					     &r->headers[r->nheaders])) < 0)
			return err;
		r->nheaders++;
	}
	if ((err = derive(r)) < 0)
		return err;
	return (int)off;
}

int dp_http_is_tls_hello(const char *buf, size_t len)
{
	const unsigned char *b = (const unsigned char *)buf;

	/* A TLS record: type 22 (handshake), then version 3.x (SSL 3.0 to
	 * TLS 1.3's legacy 3.1 and 3.3). The first byte alone decides, since
	 * 0x16 can never begin a request line; the next two only confirm it
	 * when they have come. */
	return len > 0 && b[0] == 0x16 && (len < 2 || b[1] == 0x03) && (len < 3 || b[2] <= 0x04);
}

int dp_http_wants_html(const struct dp_http_req *r)
{
	static const char html[] = "text/html";

	for (size_t i = 0; i < r->nheaders; i++) {
		const struct dp_http_hdr *h = &r->headers[i];

		if (!name_is(h, "accept"))
			continue;
		for (size_t j = 0; j + sizeof(html) - 1 <= h->value_len; j++)
			if (strncasecmp(h->value + j, html, sizeof(html) - 1) == 0)
				return 1;
	}
	return 0;
}

/* ---- chunked framing ---- */

enum {
	CH_SIZE = 0, /* hex digits of the chunk size */
	CH_EXT,	     /* chunk extension, up to CR or LF */
	CH_SIZE_LF,  /* LF after the size line's CR */
	CH_DATA,
	CH_DATA_CR, /* CR (or LF) after the data */
	CH_DATA_LF,
	CH_TRAILER, /* start of a trailer line, or of the final empty line */
	CH_TRAILER_LINE,
	CH_END_LF, /* LF of the final empty line */
	CH_DONE,
};

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Advance over one byte outside chunk data; returns 0 or -EPROTO. */
static int chunk_step(struct dp_chunked *c, char ch)
{
	int h;

	switch (c->state) {
	case CH_SIZE:
		if ((h = hexval(ch)) >= 0) {
			if (++c->digits > 15)
				return -EPROTO;
			c->remaining = c->remaining << 4 | (uint64_t)h;
			return 0;
		}
		if (c->digits == 0)
			return -EPROTO;
		if (ch == ';' || ch == ' ' || ch == '\t')
			c->state = CH_EXT;
		else if (ch == '\r')
			c->state = CH_SIZE_LF;
		else if (ch == '\n')
			c->state = c->remaining ? CH_DATA : CH_TRAILER;
		else
			return -EPROTO;
		return 0;
	case CH_EXT:
		if (ch == '\r')
			c->state = CH_SIZE_LF;
		else if (ch == '\n')
			c->state = c->remaining ? CH_DATA : CH_TRAILER;
		return 0;
	case CH_SIZE_LF:
		if (ch != '\n')
			return -EPROTO;
		c->state = c->remaining ? CH_DATA : CH_TRAILER;
		return 0;
	case CH_DATA_CR:
		if (ch == '\n') {
			c->state = CH_SIZE;
			return 0;
		}
		if (ch != '\r')
			return -EPROTO;
		c->state = CH_DATA_LF;
		return 0;
	case CH_DATA_LF:
		if (ch != '\n')
			return -EPROTO;
		c->state = CH_SIZE;
		return 0;
	case CH_TRAILER:
		c->state = ch == '\r' ? CH_END_LF : ch == '\n' ? CH_DONE : CH_TRAILER_LINE;
		return 0;
	case CH_TRAILER_LINE:
		if (ch == '\n')
			c->state = CH_TRAILER;
		return 0;
	case CH_END_LF:
		if (ch != '\n')
			return -EPROTO;
		c->state = CH_DONE;
		return 0;
	default: return -EPROTO;
	}
}

ssize_t dp_chunked_consume(struct dp_chunked *c, const char *p, size_t len, int *done)
{
	size_t i = 0;

	*done = 0;
	while (i < len && c->state != CH_DONE) {
		if (c->state == CH_DATA) {
			size_t take = len - i < c->remaining ? len - i : (size_t)c->remaining;

			i += take;
			c->remaining -= take;
			if (c->remaining == 0) {
				c->state = CH_DATA_CR;
				c->digits = 0;
			}
			continue;
		}
		if (chunk_step(c, p[i++]) < 0)
			return -EPROTO;
	}
	*done = c->state == CH_DONE;
	return (ssize_t)i;
}

/* ---- heads the relay writes ---- */

static const struct dp_http_hdr *find(const struct dp_http_req *r, const char *name)
{
	for (size_t i = 0; i < r->nheaders; i++)
		if (name_is(&r->headers[i], name))
			return &r->headers[i];
	return NULL;
}

static void put_forwarded(struct sl_out *o, const struct dp_http_req *r,
			  const struct dp_http_client *cl)
{
	const struct dp_http_hdr *xff = find(r, "x-forwarded-for"), *fwd = find(r, "forwarded");
	const char *proto = cl->https ? "https" : "http";

	sl_out_puts(o, "X-Forwarded-For: ");
	if (xff) {
		sl_out_put(o, xff->value, xff->value_len);
		sl_out_puts(o, ", ");
	}
	sl_out_puts(o, cl->ip);
	sl_out_puts(o, "\r\nX-Forwarded-Proto: ");
	sl_out_puts(o, proto);
	if (r->host) {
		sl_out_puts(o, "\r\nX-Forwarded-Host: ");
		sl_out_put(o, r->host, r->host_len);
	}
	sl_out_puts(o, "\r\nForwarded: ");
	if (fwd) {
		sl_out_put(o, fwd->value, fwd->value_len);
		sl_out_puts(o, ", ");
	}
	sl_out_puts(o, cl->ipv6 ? "for=\"[" : "for=");
	sl_out_puts(o, cl->ip);
	sl_out_puts(o, cl->ipv6 ? "]\";proto=" : ";proto=");
	sl_out_puts(o, proto);
	sl_out_puts(o, "\r\n");
}

int dp_http_upstream_head(const struct dp_http_req *r, const char *target, size_t target_len,
			  const struct dp_http_client *cl, char *out, size_t cap)
{
	struct sl_out o = {out, cap, 0, 0};

	sl_out_put(&o, r->method, r->method_len);
	sl_out_puts(&o, " ");
	sl_out_put(&o, target, target_len);
	sl_out_puts(&o, r->minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
	for (size_t i = 0; i < r->nheaders; i++) {
		const struct dp_http_hdr *h = &r->headers[i];

		if (name_is(h, "x-forwarded-for") || name_is(h, "forwarded") ||
		    name_is(h, "x-forwarded-proto") || name_is(h, "x-forwarded-host"))
			continue;
		sl_out_put(&o, h->name, h->name_len);
		sl_out_puts(&o, ": ");
		sl_out_put(&o, h->value, h->value_len);
		sl_out_puts(&o, "\r\n");
	}
	put_forwarded(&o, r, cl);
	sl_out_puts(&o, "\r\n");
	return o.overflow ? -ENOSPC : (int)o.len;
}

const char *dp_http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 302: return "Found";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 421: return "Misdirected Request";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	default: return "Error";
	}
}

int dp_http_response_as(int status, const char *type, const char *extra_headers, const char *body,
			char *out, size_t cap)
{
	int n = snprintf(out, cap,
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
			 "Content-Length: %zu\r\nConnection: close\r\nServer: sluice\r\n%s\r\n%s",
			 status, dp_http_reason(status), type, strlen(body),
			 extra_headers ? extra_headers : "", body);

	return n < 0 || (size_t)n >= cap ? -ENOSPC : n;
}

int dp_http_response(int status, const char *extra_headers, const char *body, char *out, size_t cap)
{
	return dp_http_response_as(status, DP_HTTP_TEXT, extra_headers, body, out, cap);
}
