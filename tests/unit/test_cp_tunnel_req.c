/*
 * test_cp_tunnel_req.c: POST /api/v1/tunnels bodies: the good ones parse
 * with the policy's defaults, and every bad one is refused with the status,
 * code and message a client can act on.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/cp_tunnel_req.h"

static struct cp_policy pol;
static struct cp_tunnel_req req;
static struct cp_err err;

static int parse(const char *body)
{
	memset(&err, 0, sizeof(err));
	return cp_tunnel_req_parse(body, strlen(body), &pol, &req, &err);
}

/* body is refused with status and code, and the message contains needle. */
static void refused(const char *body, int status, const char *code, const char *needle)
{
	assert_int_equal(parse(body), -EINVAL);
	assert_int_equal(err.status, status);
	assert_string_equal(err.code, code);
	if (strstr(err.message, needle) == NULL)
		fail_msg("message \"%s\" lacks \"%s\" (body %s)", err.message, needle, body);
}

static int setup(void **state)
{
	(void)state;
	cp_policy_default(&pol);
	return 0;
}

static void minimal_body_takes_defaults(void **state)
{
	(void)state;
	assert_int_equal(parse("{\"port\": 3000}"), 0);
	assert_int_equal(req.port, 3000);
	assert_int_equal(req.duration, 3600);
	assert_int_equal(req.proto, CP_TPROTO_HTTP);
	assert_string_equal(req.subdomain, "");
	assert_int_equal(req.auth, CP_AUTH_NONE);
}

static void full_body_parses(void **state)
{
	(void)state;
	assert_int_equal(parse("{\"port\": 8080, \"duration\": 60, \"subdomain\": \"my-app-1\","
			       " \"customDomain\": \"app.example.com\", \"protocol\": \"http\","
			       " \"auth\": {\"type\": \"basic\", \"username\": \"ann\","
			       " \"password\": \"s3cret\"}}"),
			 0);
	assert_int_equal(req.port, 8080);
	assert_int_equal(req.duration, 60);
	assert_string_equal(req.subdomain, "my-app-1");
	assert_string_equal(req.custom_domain, "app.example.com");
	assert_int_equal(req.auth, CP_AUTH_BASIC);
	assert_string_equal(req.username, "ann");
	assert_string_equal(req.secret, "s3cret");
	assert_int_equal(parse("{\"port\": 5432, \"protocol\": \"tcp\", \"duration\": 86400}"), 0);
	assert_int_equal(req.proto, CP_TPROTO_TCP);
	assert_int_equal(parse("{\"port\": 3000, \"auth\": {\"type\": \"bearer\", \"token\": "
			       "\"abc\"}}"),
			 0);
	assert_int_equal(req.auth, CP_AUTH_BEARER);
	assert_string_equal(req.secret, "abc");
}

static void malformed_and_wrong_shapes(void **state)
{
	(void)state;
	refused("{\"port\": 3000", 400, "malformed_json", "line 1");
	refused("", 400, "malformed_json", "malformed JSON");
	refused("[3000]", 400, "invalid_type", "JSON object");
	refused("{\"port\": 1, \"port\": 2}", 400, "malformed_json", "duplicate");
	refused("{}", 400, "missing_field", "port is required");
	refused("{\"port\": \"3000\"}", 400, "invalid_type", "port must be an integer");
	refused("{\"port\": 3000.5}", 400, "invalid_type", "port must be an integer");
	refused("{\"port\": 3000, \"duration\": true}", 400, "invalid_type", "duration");
	refused("{\"port\": 3000, \"subdomain\": 7}", 400, "invalid_type",
		"subdomain must be a string");
	refused("{\"port\": 3000, \"auth\": \"basic\"}", 400, "invalid_type",
		"auth must be an object");
}

static void unknown_fields_are_named(void **state)
{
	char body[512];

	(void)state;
	refused("{\"port\": 3000, \"subdomian\": \"x\"}", 400, "unknown_field", "\"subdomian\"");
	refused("{\"port\": 3000, \"auth\": {\"type\": \"bearer\", \"token\": \"t\", \"x\": 1}}",
		400, "unknown_field", "in auth");
	/* A long name is not echoed whole. */
	snprintf(body, sizeof(body), "{\"port\": 3000, \"%0200d\": 1}", 0);
	refused(body, 400, "unknown_field", "200 bytes");
}

static void ranges_follow_the_policy(void **state)
{
	(void)state;
	refused("{\"port\": 80}", 400, "out_of_range", "between 1000 and 65535, not 80");
	refused("{\"port\": 65536}", 400, "out_of_range", "port");
	refused("{\"port\": 3000, \"duration\": 59}", 400, "out_of_range", "between 60 and 86400");
	refused("{\"port\": 3000, \"duration\": 86401}", 400, "out_of_range", "duration");
	refused("{\"port\": -1}", 400, "out_of_range", "port");
	refused("{\"port\": 99999999999999999999}", 400, "malformed_json", "too big");
	pol.port_min = 1;
	assert_int_equal(parse("{\"port\": 80}"), 0);
	cp_policy_default(&pol);
}

static void subdomains_are_dns_labels_and_not_reserved(void **state)
{
	static const char *const bad[] = {
		"-x",	     "x-",
		"UPPER",     "a.b",
		"../etc",    "a b",
		"a_b",	     "caf\\u00e9",
		"x\\u0000y", "0123456789012345678901234567890123456789012345678901234567890123",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char body[256];

		snprintf(body, sizeof(body), "{\"port\": 3000, \"subdomain\": \"%s\"}", bad[i]);
		assert_int_equal(parse(body), -EINVAL);
		assert_int_equal(err.status, 400);
		/* jansson itself refuses \u0000 (malformed_json). */
		if (strcmp(err.code, "invalid_subdomain") != 0 &&
		    strcmp(err.code, "invalid_value") != 0 &&
		    strcmp(err.code, "invalid_length") != 0 &&
		    strcmp(err.code, "malformed_json") != 0)
			fail_msg("%s: code %s", bad[i], err.code);
	}
	refused("{\"port\": 3000, \"subdomain\": \"www\"}", 400, "reserved_subdomain",
		"\"www\" is reserved");
	refused("{\"port\": 3000, \"subdomain\": \"\"}", 400, "invalid_length", "1 to 63");
	assert_int_equal(parse("{\"port\": 3000, \"subdomain\": \"a\"}"), 0);
}

static void domains_and_combinations(void **state)
{
	(void)state;
	refused("{\"port\": 3000, \"customDomain\": \"localhost\"}", 400, "invalid_domain", "two");
	refused("{\"port\": 3000, \"customDomain\": \"App.example.com\"}", 400, "invalid_domain",
		"lowercase");
	refused("{\"port\": 3000, \"customDomain\": \"a..b\"}", 400, "invalid_domain", "host name");
	refused("{\"port\": 3000, \"protocol\": \"udp\"}", 400, "invalid_value",
		"\"http\" or \"tcp\"");
	refused("{\"port\": 3000, \"protocol\": \"tcp\", \"subdomain\": \"x\"}", 400,
		"invalid_combination", "tcp");
	refused("{\"port\": 3000, \"protocol\": \"tcp\", \"auth\": {\"type\": \"bearer\", "
		"\"token\": "
		"\"t\"}}",
		400, "invalid_combination", "http tunnels only");
	refused("{\"port\": 3000, \"auth\": {\"type\": \"digest\"}}", 400, "invalid_value",
		"\"basic\" or \"bearer\"");
	refused("{\"port\": 3000, \"auth\": {\"type\": \"basic\", \"username\": \"a:b\", "
		"\"password\": \"p\"}}",
		400, "invalid_value", "':'");
	refused("{\"port\": 3000, \"auth\": {\"type\": \"basic\", \"username\": \"a\"}}", 400,
		"invalid_type", "password");
}

static void huge_bodies_are_refused_before_parsing(void **state)
{
	size_t n = CP_BODY_MAX + 1;
	char *body = malloc(n);

	(void)state;
	assert_non_null(body);
	memset(body, ' ', n);
	assert_int_equal(cp_tunnel_req_parse(body, n, &pol, &req, &err), -EINVAL);
	assert_int_equal(err.status, 413);
	assert_string_equal(err.code, "body_too_large");
	free(body);
}

static void errors_render_as_json(void **state)
{
	char out[512];
	int n;

	(void)state;
	refused("{\"port\": 3000, \"subdomain\": \"www\"}", 400, "reserved_subdomain", "www");
	n = cp_err_json(&err, out, sizeof(out));
	assert_true(n > 0);
	assert_string_equal(out, "{\"error\":\"subdomain \\\"www\\\" is reserved\","
				 "\"code\":\"reserved_subdomain\"}");
	assert_int_equal(cp_err_json(&err, out, 8), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(minimal_body_takes_defaults, setup),
		cmocka_unit_test_setup(full_body_parses, setup),
		cmocka_unit_test_setup(malformed_and_wrong_shapes, setup),
		cmocka_unit_test_setup(unknown_fields_are_named, setup),
		cmocka_unit_test_setup(ranges_follow_the_policy, setup),
		cmocka_unit_test_setup(subdomains_are_dns_labels_and_not_reserved, setup),
		cmocka_unit_test_setup(domains_and_combinations, setup),
		cmocka_unit_test_setup(huge_bodies_are_refused_before_parsing, setup),
		cmocka_unit_test_setup(errors_render_as_json, setup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
