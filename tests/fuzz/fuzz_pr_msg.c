/*
 * fuzz_pr_msg.c: libFuzzer target for the control-protocol decoder. Any
 * payload decodes or is refused; one that decodes re-encodes, and the
 * re-encoded frame decodes to the same message.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pr_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char buf[PR_FRAME_HDR + PR_FRAME_MAX];
	struct pr_msg m, back;
	int n;

	(void)pr_frame_len((const char *)data, size);
	if (pr_decode((const char *)data, size, &m) != 0)
		return 0;
	n = pr_encode(&m, buf, sizeof(buf));
	if (n < 0)
		abort(); /* a decoded message always fits a frame */
	if (pr_frame_len(buf, (size_t)n) != n)
		abort();
	if (pr_decode(buf + PR_FRAME_HDR, (size_t)n - PR_FRAME_HDR, &back) != 0)
		abort();
	if (back.type != m.type)
		abort();
	return 0;
}
