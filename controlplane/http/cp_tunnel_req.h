/*
 * cp_tunnel_req.h: the body of POST /api/v1/tunnels, parsed (jansson) and
 * checked against the operator's policy, with errors precise enough for a
 * person to fix the request: the field, what was wrong, what is allowed.
 *
 *   {"port": 3000, "duration": 3600, "subdomain": "demo",
 *    "customDomain": "app.example.com", "protocol": "http"|"tcp",
 *    "auth": {"type": "basic", "username": "u", "password": "p"}
 *          | {"type": "bearer", "token": "t"},
 *    "allowIps": ["10.0.0.0/8", "2001:db8::/32"], "denyIps": ["10.1.2.3"]}
 *
 * Only port is required. Unknown fields are refused (a typo must not pass
 * silently), and so are wrong types, values out of range, subdomains that
 * are not DNS labels or are reserved, and bodies over CP_BODY_MAX.
 */
#ifndef CP_TUNNEL_REQ_H
#define CP_TUNNEL_REQ_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "pr_state.h"

#define CP_BODY_MAX	 16384 /* bytes of a request body at most */
#define CP_SUBDOMAIN_MAX 63    /* one DNS label */
#define CP_DOMAIN_MAX	 253
#define CP_SECRET_MAX	 128 /* basic password or bearer token */
#define CP_IPS_MAX	 16  /* entries in allowIps or denyIps */

enum cp_tproto { CP_TPROTO_HTTP = 0, CP_TPROTO_TCP = 1 };

/*
 * Rate limits as the API names them (docs/limits.md), each
 * {"limit": N, "window": SECONDS} or null (none):
 *   sessions       session creations of a key            (keys only)
 *   requests       HTTP requests of one tunnel
 *   bandwidth      bytes of one tunnel, both directions
 *   tcpConnections new connections of one TCP tunnel
 *   keyRequests    HTTP requests of all of a key's tunnels, on every relay
 *                  (keys only)
 * A key's requests/bandwidth/tcpConnections are its sessions' defaults and
 * ceilings. set has a bit per limit given (CP_LIM_*).
 */
enum {
	CP_LIM_SESSIONS,
	CP_LIM_REQUESTS,
	CP_LIM_BANDWIDTH,
	CP_LIM_TCP,
	CP_LIM_KEY_REQUESTS,
	CP_LIM_N
};
struct cp_limits {
	struct pr_limit v[CP_LIM_N];
	unsigned set; /* 1 << CP_LIM_* */
};
extern const char *const cp_limit_names[CP_LIM_N];
enum cp_auth { CP_AUTH_NONE = 0, CP_AUTH_BASIC, CP_AUTH_BEARER };

/* What the operator allows (configurable; cp_policy_default() fills the
 * issue's defaults). reserved: NULL-terminated, lowercase. Ownership: a value in the server's
 * config; reserved borrowed for the server's life. */
struct cp_policy {
	uint32_t port_min, port_max;
	uint32_t duration_min, duration_max, duration_default;
	const char *const *reserved;
};

struct cp_tunnel_req {
	uint16_t port;
	uint32_t duration; /* seconds */
	enum cp_tproto proto;
	char subdomain[CP_SUBDOMAIN_MAX + 1];  /* "" when not asked for */
	char custom_domain[CP_DOMAIN_MAX + 1]; /* "" when not asked for */
	enum cp_auth auth;
	char username[CP_SECRET_MAX + 1];
	char secret[CP_SECRET_MAX + 1]; /* password or token */
	char allow_ips[400];		/* comma-joined addresses or CIDR blocks, "" for any */
	char deny_ips[400];
	struct cp_limits limits; /* "limits": requests, bandwidth, tcpConnections */
};

/* An error for the client: HTTP status, a stable code, a message (as long
 * as cp_op_error's). A value: filled by whatever found the error, answered
 * by whoever owns the request (cp_op_fail). */
struct cp_err {
	int status;
	char code[32];
	char message[300];
};

/* Fill e (the message printf-formatted, as cp_op_error would send it);
 * returns err, a negative errno, so that a check ends with
 * return cp_err_set(e, -EINVAL, 400, "invalid_x", "..."). */
int cp_err_set(struct cp_err *e, int err, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

void cp_policy_default(struct cp_policy *p);

/* Parse and check body[0..len). Returns 0, or -EINVAL with *err filled. */
int cp_tunnel_req_parse(const char *body, size_t len, const struct cp_policy *pol,
			struct cp_tunnel_req *out, struct cp_err *err);

/* A DNS label (a-z, 0-9, inner '-', 1..63) that is not reserved; 0 or
 * -EINVAL with *err filled (409 is the caller's for a taken one). */
int cp_subdomain_check(const char *s, const struct cp_policy *pol, struct cp_err *err);

/* The body of POST /api/v1/keys: {"name": "ci", "scopes": ["tunnels"]}.
 * Both optional; scopes are "tunnels" (the default) and "admin". */
struct cp_key_req {
	char name[65];
	unsigned admin : 1, tunnels : 1;
	struct cp_limits limits; /* "limits": any of cp_limit_names */
};

/* {"requests": {...}, ...} with only the limits of mask (1 << CP_LIM_*)
 * into *out, its set bits marking those present: 0, or -EINVAL with *err. */
int cp_limits_parse(const char *body, size_t len, unsigned mask, struct cp_limits *out,
		    struct cp_err *err);
/* The limits of l (all of mask) as JSON: {"requests": {"limit", "window"} | null, ...}. */
json_t *cp_limits_json(const struct pr_limit *v, unsigned mask);

/* Parse and check body[0..len) (may be empty). 0, or -EINVAL with *err filled. */
int cp_key_req_parse(const char *body, size_t len, struct cp_key_req *out, struct cp_err *err);

/* A custom domain: a lowercase host name of two or more DNS labels, not
 * the service's own domain or under it (public_url's host). 0, or -EINVAL
 * with *err filled. */
int cp_domain_check(const char *domain, const char *public_url, struct cp_err *err);

/* {"error": message, "code": code} into out; its length, or -ENOSPC (too
 * small) or -ENOMEM. */
int cp_err_json(const struct cp_err *e, char *out, size_t cap);

#endif
