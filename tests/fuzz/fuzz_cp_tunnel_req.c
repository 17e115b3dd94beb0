/*
 * fuzz_cp_tunnel_req.c: POST /api/v1/tunnels bodies: any bytes either parse
 * into a request inside the policy or are refused with a status, a code and
 * an error that renders as JSON; nothing else.
 */
#include "http/cp_tunnel_req.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cp_policy pol;
	struct cp_tunnel_req req;
	struct cp_err err;
	char out[1024];

	cp_policy_default(&pol);
	if (cp_tunnel_req_parse((const char *)data, size, &pol, &req, &err) == 0) {
		if (req.port < pol.port_min || req.duration < pol.duration_min ||
		    req.duration > pol.duration_max)
			abort();
		if (req.subdomain[0] && cp_subdomain_check(req.subdomain, &pol, &err) != 0)
			abort();
		return 0;
	}
	if (err.status != 400 && err.status != 413)
		abort();
	if (err.code[0] == '\0' || err.message[0] == '\0' ||
	    cp_err_json(&err, out, sizeof(out)) <= 0)
		abort();
	return 0;
}
