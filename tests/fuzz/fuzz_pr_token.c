/*
 * fuzz_pr_token.c: any bytes given to the token verifier are either refused
 * with one of its errors or are a token this key signed: re-signing the
 * parsed fields gives back exactly the input.
 */
#include "pr_token.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[] = "0123456789abcdef0123456789abcdef-fuzz";
	char again[PR_SIGNED_MAX], sid[33], share[33];
	struct pr_token t;
	uint64_t expires;
	int rc = pr_share_verify(key, sizeof(key) - 1, (const char *)data, size, 1000, sid, share,
				 &expires);

	/* Share links: the same rule. */
	if (rc != 0 && rc != -EBADMSG && rc != -EPERM && rc != -ETIME)
		abort();
	if (rc == 0 && (pr_share_sign(key, sizeof(key) - 1, sid, share, expires, again,
				      sizeof(again)) != (int)size ||
			memcmp(again, data, size) != 0))
		abort();
	rc = pr_token_verify(key, sizeof(key) - 1, (const char *)data, size, 1000, &t);

	if (rc == -EBADMSG || rc == -EPERM || rc == -ETIME)
		return 0;
	if (rc != 0)
		abort();
	/* Only a real signature gets here (the fuzzer cannot forge HMAC). */
	if (pr_token_sign(key, sizeof(key) - 1, t.sid, t.epoch, t.expires, again, sizeof(again)) !=
		    (int)size ||
	    memcmp(again, data, size) != 0)
		abort();
	return 0;
}
