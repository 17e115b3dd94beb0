/*
 * test_dp_http.c: the relay's HTTP/1.1 request side: heads parse exactly,
 * smuggling shapes are refused, chunked bodies end where they end in any
 * split, and the upstream head carries the forwarding headers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "dp_http.h"

static struct dp_http_req req;

static int parse(const char *s)
{
	return dp_http_parse_request(s, strlen(s), &req);
}

static void simple_get_parses(void **state)
{
	const char *s =
		"GET /a?b=c HTTP/1.1\r\nHost: demo.localhost:8080\r\nAccept: */*\r\n\r\nXYZ";

	(void)state;
	assert_int_equal(parse(s), (int)strlen(s) - 3);
	assert_memory_equal(req.method, "GET", 3);
	assert_int_equal(req.target_len, 6);
	assert_memory_equal(req.target, "/a?b=c", 6);
	assert_int_equal(req.minor, 1);
	assert_int_equal(req.nheaders, 2);
	assert_int_equal(req.host_len, 14);
	assert_memory_equal(req.host, "demo.localhost", 14);
	assert_int_equal(req.content_length, -1);
	assert_false(req.chunked);
	assert_false(req.upgrade);
}

static void every_prefix_is_incomplete(void **state)
{
	const char *s = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n";

	(void)state;
	for (size_t n = 0; n < strlen(s); n++)
		assert_int_equal(dp_http_parse_request(s, n, &req), DP_HTTP_INCOMPLETE);
	assert_int_equal(parse(s), (int)strlen(s));
	assert_int_equal(req.content_length, 3);
}

static void bare_lf_and_leading_empty_line_accepted(void **state)
{
	(void)state;
	assert_true(parse("\r\nGET / HTTP/1.0\nHost: h\n\n") > 0);
	assert_int_equal(req.minor, 0);
	assert_int_equal(req.host_len, 1);
}

static void ipv6_host_keeps_brackets(void **state)
{
	(void)state;
	assert_true(parse("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n") > 0);
	assert_int_equal(req.host_len, 5);
	assert_memory_equal(req.host, "[::1]", 5);
}

/* Each shape is refused; the comment names the attack or mistake. */
static void malformed_and_smuggling_shapes_refused(void **state)
{
	static const struct {
		const char *head;
		int err;
	} bad[] = {
		{"GET  / HTTP/1.1\r\n\r\n", DP_HTTP_BAD},	       /* empty target */
		{"GET / HTTP/2.0\r\n\r\n", DP_HTTP_BAD},	       /* not HTTP/1.x */
		{"GET / HTTP/1.1 \r\n\r\n", DP_HTTP_BAD},	       /* trailing space */
		{"G(T / HTTP/1.1\r\n\r\n", DP_HTTP_BAD},	       /* method not a token */
		{"GET /\x01 HTTP/1.1\r\n\r\n", DP_HTTP_BAD},	       /* control in target */
		{"GET / HTTP/1.1\r\nHost : a\r\n\r\n", DP_HTTP_BAD},   /* space before colon */
		{"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", DP_HTTP_BAD}, /* obs-fold */
		{"GET / HTTP/1.1\r\nNoColon\r\n\r\n", DP_HTTP_BAD},
		{"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", DP_HTTP_BAD}, /* two hosts */
		{"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", DP_HTTP_BAD},
		{"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", DP_HTTP_BAD},
		{"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		 DP_HTTP_BAD}, /* CL.TE smuggling */
		{"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", DP_HTTP_BAD_TE},
		{"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
		 "chunked\r\n\r\n",
		 DP_HTTP_BAD_TE},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse(bad[i].head) != bad[i].err)
			fail_msg("case %zu: got %d, want %d", i, parse(bad[i].head), bad[i].err);
}

/* RFC 9110 5.5: every control but HTAB is refused in a field value (each
 * byte inside one, then at its start and end, and in Host); SP, HTAB and
 * obs-text (0x80-0xFF) pass. */
static void controls_in_field_values_refused_obs_text_kept(void **state)
{
	static const char pre[] = "GET / HTTP/1.1\r\nHost: h\r\nX: a", post[] = "b\r\n\r\n";
	char head[64];
	size_t n = sizeof(pre) - 1 + 1 + sizeof(post) - 1;

	(void)state;
	memcpy(head, pre, sizeof(pre) - 1);
	memcpy(head + sizeof(pre), post, sizeof(post) - 1);
	for (int c = 0; c < 0x100; c++) {
		int bad = (c < 0x20 && c != '\t') || c == 0x7f;

		if (c == '\n')
			continue; /* ends the line: another shape (a line without a colon) */
		head[sizeof(pre) - 1] = (char)c;
		if ((dp_http_parse_request(head, n, &req) < 0) != bad)
			fail_msg("byte 0x%02x: got %d", c, dp_http_parse_request(head, n, &req));
	}
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nX: caf\xe9 \xff\r\n\r\n") > 0);
	assert_int_equal(req.headers[1].value_len, 6);
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nX: \x1b[31mred\r\n\r\n"), DP_HTTP_BAD);
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n"), DP_HTTP_BAD);
	assert_int_equal(parse("GET / HTTP/1.1\r\nHost: h\x01\r\n\r\n"), DP_HTTP_BAD);
}

/* Host is optional to the parser (the admin port's probes); the public side
 * requires it of HTTP/1.1. */
static void missing_host_left_to_the_caller(void **state)
{
	(void)state;
	assert_true(parse("GET /health HTTP/1.1\r\n\r\n") > 0);
	assert_null(req.host);
	assert_int_equal(req.minor, 1);
}

/* A TLS ClientHello's record header is recognised from its first byte on;
 * a request (or its leading empty line) never is. */
static void tls_hello_recognised(void **state)
{
	static const char hello[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";

	(void)state;
	for (size_t n = 1; n < sizeof(hello); n++)
		assert_true(dp_http_is_tls_hello(hello, n));
	assert_false(dp_http_is_tls_hello(hello, 0));
	assert_false(dp_http_is_tls_hello("\x16\x02", 2));     /* not version 3.x */
	assert_false(dp_http_is_tls_hello("\x16\x03\x09", 3)); /* no such minor */
	assert_false(dp_http_is_tls_hello("GET / HTTP/1.1\r\n", 16));
	assert_false(dp_http_is_tls_hello("\r\nGET", 5));
	assert_false(dp_http_is_tls_hello("\x80\x2e\x01", 3)); /* an SSLv2 hello: not ours */
}

static void html_wanted_by_browsers_only(void **state)
{
	(void)state;
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nAccept: "
			  "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8\r\n\r\n") > 0);
	assert_true(dp_http_wants_html(&req));
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nAccept: TEXT/HTML\r\n\r\n") > 0);
	assert_true(dp_http_wants_html(&req));
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n") > 0);
	assert_false(dp_http_wants_html(&req));
	assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
	assert_false(dp_http_wants_html(&req));
}

static void too_many_headers_and_too_long_line(void **state)
{
	static char buf[DP_HTTP_HEAD_MAX + 100];
	size_t o = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");

	(void)state;
	for (int i = 0; i <= DP_HTTP_MAX_HEADERS; i++)
		o += (size_t)sprintf(buf + o, "X-%d: v\r\n", i);
	strcpy(buf + o, "\r\n");
	assert_int_equal(parse(buf), DP_HTTP_TOO_MANY);
	memset(buf, 'a', sizeof(buf));
	assert_int_equal(dp_http_parse_request(buf, sizeof(buf), &req), DP_HTTP_TOO_MANY);
}

static void upgrade_and_connect_detected(void **state)
{
	(void)state;
	assert_true(parse("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
			  "Upgrade: websocket\r\n\r\n") > 0);
	assert_true(req.upgrade);
	assert_true(parse("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n") > 0);
	assert_false(req.upgrade); /* Upgrade without Connection: upgrade is not one */
	assert_true(parse("CONNECT h:443 HTTP/1.1\r\nHost: h\r\n\r\n") > 0);
	assert_true(req.upgrade);
}

/* The same chunked body, fed whole and byte by byte, ends at the same byte. */
static void chunked_body_ends_exactly_in_any_split(void **state)
{
	const char body[] = "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n"
			    "Trailer: x\r\n\r\n";
	const char *next = "GET / HTTP/1.1\r\n";
	char buf[256];
	struct dp_chunked c = {0};
	int done = 0;
	ssize_t n;

	(void)state;
	snprintf(buf, sizeof(buf), "%s%s", body, next);
	n = dp_chunked_consume(&c, buf, strlen(buf), &done);
	assert_int_equal(n, (ssize_t)strlen(body));
	assert_true(done);
	memset(&c, 0, sizeof(c));
	for (size_t i = 0; i < strlen(body); i++) {
		assert_false(done && i);
		n = dp_chunked_consume(&c, body + i, 1, &done);
		assert_int_equal(n, 1);
	}
	assert_true(done);
}

static void chunked_malformed_refused(void **state)
{
	static const char *bad[] = {"x\r\n", "\r\n", "4\r\nWikiX\r\n", "1\r\na\r\r",
				    "fffffffffffffffff\r\n"};
	int done;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct dp_chunked c = {0};

		assert_int_equal(dp_chunked_consume(&c, bad[i], strlen(bad[i]), &done), -EPROTO);
	}
}

static void upstream_head_adds_forwarding_headers(void **state)
{
	const char *s =
		"GET /session/abc/x HTTP/1.1\r\nHost: localhost:8080\r\n"
		"X-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1\r\nX-Forwarded-Proto: "
		"evil\r\n\r\n";
	struct dp_http_client cl = {"203.0.113.9", 0, 0};
	char out[1024];
	int n;

	(void)state;
	assert_true(parse(s) > 0);
	n = dp_http_upstream_head(&req, "/x", 2, &cl, out, sizeof(out));
	assert_true(n > 0);
	out[n] = '\0';
	assert_string_equal(out, "GET /x HTTP/1.1\r\nHost: localhost:8080\r\n"
				 "X-Forwarded-For: 10.0.0.1, 203.0.113.9\r\n"
				 "X-Forwarded-Proto: http\r\nX-Forwarded-Host: localhost\r\n"
				 "Forwarded: for=10.0.0.1, for=203.0.113.9;proto=http\r\n\r\n");
	cl.ip = "::1";
	cl.ipv6 = 1;
	cl.https = 1;
	n = dp_http_upstream_head(&req, "/x", 2, &cl, out, sizeof(out));
	out[n] = '\0';
	assert_non_null(strstr(out, "for=\"[::1]\";proto=https\r\n"));
	assert_int_equal(dp_http_upstream_head(&req, "/x", 2, &cl, out, 40), -ENOSPC);
}

static void error_response_is_complete(void **state)
{
	char out[512];
	int n = dp_http_response(502, "Retry-After: 5\r\n", "agent offline\n", out, sizeof(out));

	(void)state;
	assert_true(n > 0);
	assert_non_null(strstr(out, "HTTP/1.1 502 Bad Gateway\r\n"));
	assert_non_null(strstr(out, "Content-Length: 14\r\n"));
	assert_non_null(strstr(out, "Retry-After: 5\r\n\r\nagent offline\n"));
	assert_non_null(strstr(out, "Content-Type: text/plain; charset=utf-8\r\n"));
	n = dp_http_response_as(502, DP_HTTP_HTML, NULL, "<p>x</p>\n", out, sizeof(out));
	assert_true(n > 0);
	assert_non_null(strstr(out, "Content-Type: text/html; charset=utf-8\r\n"));
	assert_non_null(strstr(out, "Content-Length: 9\r\n"));
	assert_int_equal(dp_http_response_as(502, DP_HTTP_HTML, NULL, "<p>x</p>\n", out, 20),
			 -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(simple_get_parses),
		cmocka_unit_test(every_prefix_is_incomplete),
		cmocka_unit_test(bare_lf_and_leading_empty_line_accepted),
		cmocka_unit_test(ipv6_host_keeps_brackets),
		cmocka_unit_test(malformed_and_smuggling_shapes_refused),
		cmocka_unit_test(controls_in_field_values_refused_obs_text_kept),
		cmocka_unit_test(missing_host_left_to_the_caller),
		cmocka_unit_test(tls_hello_recognised),
		cmocka_unit_test(html_wanted_by_browsers_only),
		cmocka_unit_test(too_many_headers_and_too_long_line),
		cmocka_unit_test(upgrade_and_connect_detected),
		cmocka_unit_test(chunked_body_ends_exactly_in_any_split),
		cmocka_unit_test(chunked_malformed_refused),
		cmocka_unit_test(upstream_head_adds_forwarding_headers),
		cmocka_unit_test(error_response_is_complete),
	};
	return cmocka_run_group_tests_name("dp_http", tests, NULL, NULL);
}
