/*
 * fuzz_pr_state.c: libFuzzer target for the session-state and stats
 * decoders. Any bytes decode or are refused with a documented error; a
 * record that decodes re-encodes (the encoder accepts whatever the decoder
 * does), the re-encoding decodes to the same struct byte for byte, and
 * encoding that again gives the same bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pr_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int documented(int rc)
{
	return rc == 0 || rc == -EBADMSG || rc == -EMSGSIZE || rc == -EPROTO;
}

static void session(const char *in, size_t len)
{
	static char buf[PR_STATE_MAX], again[PR_STATE_MAX];
	struct pr_session s, back;
	int rc, n;

	memset(&s, 0, sizeof(s));
	memset(&back, 0, sizeof(back));
	rc = pr_session_decode(in, len, &s);
	if (!documented(rc))
		abort();
	if (rc != 0)
		return;
	n = pr_session_encode(&s, buf, sizeof(buf));
	if (n <= 0)
		abort();
	if (pr_session_decode(buf, (size_t)n, &back) != 0 || memcmp(&s, &back, sizeof(s)) != 0)
		abort();
	if (pr_session_encode(&back, again, sizeof(again)) != n || memcmp(buf, again, (size_t)n))
		abort();
}

static void stats(const char *in, size_t len)
{
	static char buf[PR_STATE_MAX], again[PR_STATE_MAX];
	struct pr_stats s, back;
	int rc, n;

	memset(&s, 0, sizeof(s));
	memset(&back, 0, sizeof(back));
	rc = pr_stats_decode(in, len, &s);
	if (!documented(rc))
		abort();
	if (rc != 0)
		return;
	n = pr_stats_encode(&s, buf, sizeof(buf));
	if (n <= 0)
		abort();
	if (pr_stats_decode(buf, (size_t)n, &back) != 0 || memcmp(&s, &back, sizeof(s)) != 0)
		abort();
	if (pr_stats_encode(&back, again, sizeof(again)) != n || memcmp(buf, again, (size_t)n))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	session((const char *)data, size);
	stats((const char *)data, size);
	return 0;
}
