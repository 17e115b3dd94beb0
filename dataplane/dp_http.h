/*
 * dp_http.h: what the relay needs of HTTP/1.1 on the request side: a strict
 * request-head parser in the manner of picohttpparser (stateless, pointers
 * into the caller's bytes, "need more" as a result), a chunked-body framer
 * that only finds where a body ends (bytes pass through untouched), the head
 * the relay sends upstream, and its own error responses.
 */
#ifndef DP_HTTP_H
#define DP_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define DP_HTTP_HEAD_MAX    (64 * 1024) /* larger heads get 431 */
#define DP_HTTP_MAX_HEADERS 100

#define DP_HTTP_INCOMPLETE (-1)
#define DP_HTTP_BAD	   (-2) /* malformed: 400 */
#define DP_HTTP_TOO_MANY   (-3) /* over DP_HTTP_MAX_HEADERS: 431 */
#define DP_HTTP_BAD_TE	   (-4) /* a transfer coding other than chunked: 501 */

/* Ownership: points into the parsed buffer, which the caller keeps while it reads these. */
struct dp_http_hdr {
	const char *name, *value;
	size_t name_len, value_len;
};

/* A parsed request head; every pointer points into the parsed buffer. Ownership: the caller's (the
 * relay keeps one per worker thread); frees nothing. */
struct dp_http_req {
	const char *method, *target, *host;
	size_t method_len, target_len, host_len; /* host without its port */
	int minor;				 /* HTTP/1.minor */
	int64_t content_length;			 /* -1 when absent */
	int chunked;				 /* Transfer-Encoding: chunked */
	int upgrade; /* Upgrade requested, or CONNECT: bytes flow raw after */
	size_t nheaders;
	struct dp_http_hdr headers[DP_HTTP_MAX_HEADERS];
};

/*
 * Parse a request head from buf[0..len). Returns the head's length (request
 * line, headers and the empty line) when complete, DP_HTTP_INCOMPLETE when
 * more bytes are needed, or a negative DP_HTTP_* error. Both CRLF and bare LF
 * end lines; obsolete line folding, a space before a colon, conflicting
 * Content-Length values and Content-Length with Transfer-Encoding are refused
 * (request smuggling), and so are two Host headers and a control character
 * other than HTAB in a field value (RFC 9110 5.5; obs-text passes). A
 * missing Host is the caller's to judge (the public side requires it of
 * HTTP/1.1; /health probes on the admin port need not send it).
 */
int dp_http_parse_request(const char *buf, size_t len, struct dp_http_req *r);

/* Where a chunked body ends, fed the bytes after the head in any pieces. Ownership: a value in the
 * public connection's state. */
struct dp_chunked {
	uint8_t state;
	uint8_t digits;
	uint64_t remaining;
};

/*
 * Consume body bytes: returns how many of p[0..len) belong to the body (all
 * of them unless it ends inside), sets *done when its last byte was consumed;
 * returns -EPROTO when the framing is malformed.
 */
ssize_t dp_chunked_consume(struct dp_chunked *c, const char *p, size_t len, int *done);

/* The client as the relay saw it, for X-Forwarded-* and Forwarded. Ownership: borrowed strings,
 * valid for the call. */
struct dp_http_client {
	const char *ip; /* text form, no brackets */
	int ipv6;
	int https;
};

/*
 * Write the head to send upstream: the request line with target (the path
 * after any /session/<id> prefix was removed), the client's headers as
 * parsed, then X-Forwarded-For (appended to), X-Forwarded-Proto,
 * X-Forwarded-Host and Forwarded (appended to). Returns the length or
 * -ENOSPC.
 */
int dp_http_upstream_head(const struct dp_http_req *r, const char *target, size_t target_len,
			  const struct dp_http_client *cl, char *out, size_t cap);

/*
 * 1 when buf[0..len) begins like a TLS record carrying a handshake (a
 * ClientHello sent to a plain-HTTP port), else 0. Decided from the first
 * byte (0x16 never begins a request), confirmed by the version bytes when
 * they are there.
 */
int dp_http_is_tls_hello(const char *buf, size_t len);

/* 1 when an Accept header of r names text/html (a browser), else 0. */
int dp_http_wants_html(const struct dp_http_req *r);

#define DP_HTTP_TEXT "text/plain; charset=utf-8"
#define DP_HTTP_HTML "text/html; charset=utf-8"

/*
 * A complete response from the relay itself (errors): status line,
 * Content-Type type, Content-Length, Connection: close, any extra header
 * lines (each ending in CRLF), then body. Returns the length or -ENOSPC.
 */
int dp_http_response_as(int status, const char *type, const char *extra_headers, const char *body,
			char *out, size_t cap);

/* dp_http_response_as with type DP_HTTP_TEXT. */
int dp_http_response(int status, const char *extra_headers, const char *body, char *out,
		     size_t cap);

const char *dp_http_reason(int status);

#endif
