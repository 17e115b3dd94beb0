/*
 * cp_tunnel_req.c: POST /api/v1/tunnels bodies (see cp_tunnel_req.h).
 */
#include "http/cp_tunnel_req.h"
#include "pr_msg.h"
#include "pr_state.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

static const char *const default_reserved[] = {
	"admin", "api",	   "app",	"assets",  "auth",   "control", "dashboard", "docs",
	"ftp",	 "health", "localhost", "login",   "mail",   "metrics", "relay",     "root",
	"smtp",	 "static", "status",	"support", "tunnel", "www",	NULL,
};

void cp_policy_default(struct cp_policy *p)
{
	p->port_min = 1000;
	p->port_max = 65535;
	p->duration_min = 60;
	p->duration_max = 86400;
	p->duration_default = 3600;
	p->reserved = default_reserved;
}

static int fail(struct cp_err *err, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void err_vset(struct cp_err *e, int status, const char *code, const char *fmt, va_list ap)
{
	e->status = status;
	snprintf(e->code, sizeof(e->code), "%s", code);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
}

int cp_err_set(struct cp_err *e, int err, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(e, status, code, fmt, ap);
	va_end(ap);
	return err;
}

/* cp_err_set for a client's body: -EINVAL, the message made printable. */
static int fail(struct cp_err *err, int status, const char *code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	err_vset(err, status, code, fmt, ap);
	va_end(ap);
	/* The message quotes the client (jansson's error text shows the bytes
	 * it stopped at): only printable ASCII goes back, so the JSON error is
	 * always valid UTF-8. */
	for (char *c = err->message; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
			*c = '?';
	return -EINVAL;
}

int cp_subdomain_check(const char *s, const struct cp_policy *pol, struct cp_err *err)
{
	if (!pr_label_valid(s, strlen(s)))
		return fail(err, 400, "invalid_subdomain",
			    "subdomain must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not "
			    "starting or ending with '-'");
	for (const char *const *r = pol->reserved; r && *r; r++)
		if (strcmp(*r, s) == 0)
			return fail(err, 400, "reserved_subdomain", "subdomain \"%s\" is reserved",
				    s);
	return 0;
}

/* A host name of at least two labels, 253 bytes at most, lowercase. */
static int domain_ok(const char *s)
{
	size_t n = strlen(s), start = 0, labels = 0;

	if (n == 0 || n > CP_DOMAIN_MAX)
		return 0;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			if (!pr_label_valid(s + start, i - start))
				return 0;
			labels++;
			start = i + 1;
		}
	}
	return labels >= 2;
}

/* The integer field name in [lo, hi] into *out, or an error. */
static int get_uint(json_t *o, const char *name, uint32_t lo, uint32_t hi, uint32_t *out,
		    struct cp_err *err)
{
	json_t *v = json_object_get(o, name);
	json_int_t x;

	if (!json_is_integer(v))
		return fail(err, 400, "invalid_type", "%s must be an integer", name);
	x = json_integer_value(v);
	if (x < (json_int_t)lo || x > (json_int_t)hi)
		return fail(err, 400, "out_of_range", "%s must be between %u and %u, not %lld",
			    name, lo, hi, (long long)x);
	*out = (uint32_t)x;
	return 0;
}

/* The string field name (at most cap - 1 bytes, no control characters). */
static int get_str(json_t *o, const char *name, char *out, size_t cap, struct cp_err *err)
{
	json_t *v = json_object_get(o, name);
	const char *s;
	size_t n;

	if (!json_is_string(v))
		return fail(err, 400, "invalid_type", "%s must be a string", name);
	s = json_string_value(v);
	n = json_string_length(v);
	if (n == 0 || n >= cap)
		return fail(err, 400, "invalid_length", "%s must be 1 to %zu bytes", name, cap - 1);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return fail(err, 400, "invalid_value", "%s contains a control character",
				    name);
	memcpy(out, s, n + 1);
	return 0;
}

/* Every key of o must be one of allowed (NULL-terminated). */
static int known_keys(json_t *o, const char *const *allowed, const char *where, struct cp_err *err)
{
	const char *key;
	json_t *v;

	json_object_foreach(o, key, v)
	{
		const char *const *a = allowed;

		(void)v;
		while (*a && strcmp(*a, key) != 0)
			a++;
		if (*a == NULL && strlen(key) > 64)
			return fail(err, 400, "unknown_field",
				    "unknown field (a name of %zu bytes) in %s", strlen(key),
				    where);
		if (*a == NULL) /* a whole key: valid UTF-8, as jansson checked */
			return fail(err, 400, "unknown_field", "unknown field \"%s\" in %s", key,
				    where);
	}
	return 0;
}

static int parse_auth(json_t *a, struct cp_tunnel_req *out, struct cp_err *err)
{
	static const char *const basic[] = {"type", "username", "password", NULL};
	static const char *const bearer[] = {"type", "token", NULL};
	char type[16];

	if (!json_is_object(a))
		return fail(err, 400, "invalid_type", "auth must be an object");
	if (get_str(a, "type", type, sizeof(type), err) < 0)
		return -EINVAL;
	if (strcmp(type, "basic") == 0) {
		out->auth = CP_AUTH_BASIC;
		if (known_keys(a, basic, "auth", err) < 0 ||
		    get_str(a, "username", out->username, sizeof(out->username), err) < 0 ||
		    get_str(a, "password", out->secret, sizeof(out->secret), err) < 0)
			return -EINVAL;
		if (strchr(out->username, ':'))
			return fail(err, 400, "invalid_value",
				    "auth.username must not contain ':'");
		return 0;
	}
	if (strcmp(type, "bearer") == 0) {
		out->auth = CP_AUTH_BEARER;
		if (known_keys(a, bearer, "auth", err) < 0 ||
		    get_str(a, "token", out->secret, sizeof(out->secret), err) < 0)
			return -EINVAL;
		return 0;
	}
	return fail(err, 400, "invalid_value", "auth.type must be \"basic\" or \"bearer\"");
}

/* allowIps / denyIps: an array of addresses or CIDR blocks, joined by ','. */
static int get_ips(json_t *o, const char *name, char *out, size_t cap, struct cp_err *err)
{
	json_t *a = json_object_get(o, name), *v;
	size_t i, len = 0;

	if (a == NULL)
		return 0;
	if (!json_is_array(a) || json_array_size(a) > CP_IPS_MAX)
		return fail(err, 400, "invalid_type", "%s must be an array of at most %d addresses",
			    name, CP_IPS_MAX);
	json_array_foreach(a, i, v)
	{
		const char *s = json_string_value(v);
		size_t n = s ? strlen(s) : 0;

		if (s == NULL || pr_cidr_parse(s, n, &(struct pr_cidr){0}) < 0)
			return fail(err, 400, "invalid_value",
				    "%s[%zu] must be an IP address or CIDR block (10.0.0.0/8, "
				    "2001:db8::/32)",
				    name, i);
		if (len + n + 2 > cap)
			return fail(err, 400, "invalid_length", "%s is too long", name);
		if (len)
			out[len++] = ',';
		memcpy(out + len, s, n + 1);
		len += n;
	}
	return 0;
}

static int load_object(const char *body, size_t len, json_t **root, struct cp_err *err);

const char *const cp_limit_names[CP_LIM_N] = {"sessions", "requests", "bandwidth", "tcpConnections",
					      "keyRequests"};

/* One limit: null (none) or {"limit": N >= 0, "window": 1..7 d}; a limit
 * of 0 is none too. */
static int parse_limit(json_t *v, const char *name, struct pr_limit *out, struct cp_err *err)
{
	static const char *const fields[] = {"limit", "window", NULL};
	json_t *l, *w;

	*out = (struct pr_limit){0, 0};
	if (json_is_null(v))
		return 0;
	if (!json_is_object(v))
		return fail(err, 400, "invalid_type",
			    "limits.%s must be {\"limit\": N, \"window\": seconds} or null", name);
	if (known_keys(v, fields, "a limit", err) < 0)
		return -EINVAL;
	l = json_object_get(v, "limit");
	w = json_object_get(v, "window");
	if (!json_is_integer(l) || json_integer_value(l) < 0)
		return fail(err, 400, "invalid_value",
			    "limits.%s.limit must be an integer of 0 (none) or more", name);
	out->limit = (uint64_t)json_integer_value(l);
	if (out->limit == 0)
		return 0;
	if (!json_is_integer(w) || json_integer_value(w) < 1 ||
	    json_integer_value(w) > PR_LIMIT_WINDOW_MAX)
		return fail(err, 400, "invalid_value",
			    "limits.%s.window must be an integer of 1 to %u seconds", name,
			    PR_LIMIT_WINDOW_MAX);
	out->window = (uint32_t)json_integer_value(w);
	return 0;
}

static int parse_limits(json_t *o, unsigned mask, struct cp_limits *out, struct cp_err *err)
{
	const char *key;
	json_t *v;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(o))
		return fail(err, 400, "invalid_type", "limits must be an object");
	json_object_foreach(o, key, v)
	{
		int i = 0;

		while (i < CP_LIM_N && !((mask >> i) & 1 && strcmp(cp_limit_names[i], key) == 0))
			i++;
		if (i == CP_LIM_N)
			return fail(err, 400, "unknown_field", "unknown limit \"%.64s\"", key);
		if (parse_limit(v, key, &out->v[i], err) < 0)
			return -EINVAL;
		out->set |= 1u << i;
	}
	return 0;
}

int cp_limits_parse(const char *body, size_t len, unsigned mask, struct cp_limits *out,
		    struct cp_err *err)
{
	json_t *root;
	int rc;

	if (load_object(body, len, &root, err) < 0)
		return -EINVAL;
	rc = parse_limits(root, mask, out, err);
	json_decref(root);
	return rc;
}

json_t *cp_limits_json(const struct pr_limit *v, unsigned mask)
{
	json_t *o = json_object();

	for (int i = 0; o && i < CP_LIM_N; i++) {
		if (!((mask >> i) & 1))
			continue;
		json_object_set_new(o, cp_limit_names[i],
				    v[i].limit ? json_pack("{s:I,s:i}", "limit",
							   (json_int_t)v[i].limit, "window",
							   (int)v[i].window)
					       : json_null());
	}
	return o;
}

#define SESSION_LIMITS ((1u << CP_LIM_REQUESTS) | (1u << CP_LIM_BANDWIDTH) | (1u << CP_LIM_TCP))

static int parse_object(json_t *o, const struct cp_policy *pol, struct cp_tunnel_req *out,
			struct cp_err *err)
{
	static const char *const fields[] = {"port",	 "duration", "subdomain", "customDomain",
					     "protocol", "auth",     "allowIps",  "denyIps",
					     "limits",	 NULL};
	uint32_t v;
	char proto[8];

	if (known_keys(o, fields, "the request", err) < 0)
		return -EINVAL;
	if (json_object_get(o, "port") == NULL)
		return fail(err, 400, "missing_field", "port is required");
	if (get_uint(o, "port", pol->port_min, pol->port_max, &v, err) < 0)
		return -EINVAL;
	out->port = (uint16_t)v;
	out->duration = pol->duration_default;
	if (json_object_get(o, "duration") &&
	    get_uint(o, "duration", pol->duration_min, pol->duration_max, &out->duration, err) < 0)
		return -EINVAL;
	if (json_object_get(o, "protocol")) {
		if (get_str(o, "protocol", proto, sizeof(proto), err) < 0)
			return -EINVAL;
		if (strcmp(proto, "http") == 0)
			out->proto = CP_TPROTO_HTTP;
		else if (strcmp(proto, "tcp") == 0)
			out->proto = CP_TPROTO_TCP;
		else
			return fail(err, 400, "invalid_value",
				    "protocol must be \"http\" or \"tcp\"");
	}
	if (json_object_get(o, "subdomain") &&
	    (get_str(o, "subdomain", out->subdomain, sizeof(out->subdomain), err) < 0 ||
	     cp_subdomain_check(out->subdomain, pol, err) < 0))
		return -EINVAL;
	if (json_object_get(o, "customDomain")) {
		if (get_str(o, "customDomain", out->custom_domain, sizeof(out->custom_domain),
			    err) < 0)
			return -EINVAL;
		if (!domain_ok(out->custom_domain))
			return fail(err, 400, "invalid_domain",
				    "customDomain must be a lowercase host name of two or more "
				    "DNS labels");
	}
	if (out->proto == CP_TPROTO_TCP && (out->subdomain[0] || out->custom_domain[0]))
		return fail(err, 400, "invalid_combination",
			    "a tcp tunnel has a port, not a subdomain or customDomain");
	if (json_object_get(o, "auth") && parse_auth(json_object_get(o, "auth"), out, err) < 0)
		return -EINVAL;
	if (out->proto == CP_TPROTO_TCP && out->auth != CP_AUTH_NONE)
		return fail(err, 400, "invalid_combination", "auth protects http tunnels only");
	if (get_ips(o, "allowIps", out->allow_ips, sizeof(out->allow_ips), err) < 0 ||
	    get_ips(o, "denyIps", out->deny_ips, sizeof(out->deny_ips), err) < 0)
		return -EINVAL;
	if (json_object_get(o, "limits") &&
	    parse_limits(json_object_get(o, "limits"), SESSION_LIMITS, &out->limits, err) < 0)
		return -EINVAL;
	return 0;
}

/* A request body that must be one JSON object, at most CP_BODY_MAX bytes:
 * 0 with *root (the caller's to release), or -EINVAL with *err filled. */
static int load_object(const char *body, size_t len, json_t **root, struct cp_err *err)
{
	json_error_t je;

	if (len > CP_BODY_MAX)
		return fail(err, 413, "body_too_large", "request body over %d bytes", CP_BODY_MAX);
	/* REJECT_DUPLICATES: {"port": 1, "port": 2} is ambiguous, not last-wins. */
	*root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (*root == NULL)
		return fail(err, 400, "malformed_json", "malformed JSON at line %d, column %d: %s",
			    je.line, je.column, je.text);
	if (!json_is_object(*root)) {
		json_decref(*root);
		return fail(err, 400, "invalid_type", "the request must be a JSON object");
	}
	return 0;
}

int cp_tunnel_req_parse(const char *body, size_t len, const struct cp_policy *pol,
			struct cp_tunnel_req *out, struct cp_err *err)
{
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	if (load_object(body, len, &root, err) < 0)
		return -EINVAL;
	rc = parse_object(root, pol, out, err);
	json_decref(root);
	if (rc < 0)
		memset(out->secret, 0, sizeof(out->secret));
	return rc;
}

static int parse_key_object(json_t *o, struct cp_key_req *out, struct cp_err *err)
{
	static const char *const fields[] = {"name", "scopes", "limits", NULL};
	json_t *sc = json_object_get(o, "scopes"), *v;
	size_t i;

	if (known_keys(o, fields, "the request", err) < 0)
		return -EINVAL;
	if (json_object_get(o, "limits") &&
	    parse_limits(json_object_get(o, "limits"), (1u << CP_LIM_N) - 1, &out->limits, err) < 0)
		return -EINVAL;
	if (json_object_get(o, "name") && get_str(o, "name", out->name, sizeof(out->name), err) < 0)
		return -EINVAL;
	if (sc == NULL) {
		out->tunnels = 1;
		return 0;
	}
	if (!json_is_array(sc) || json_array_size(sc) == 0 || json_array_size(sc) > 2)
		return fail(err, 400, "invalid_type",
			    "scopes must be an array of \"tunnels\" and/or \"admin\"");
	json_array_foreach(sc, i, v)
	{
		const char *name = json_string_value(v);

		if (name && strcmp(name, "tunnels") == 0)
			out->tunnels = 1;
		else if (name && strcmp(name, "admin") == 0)
			out->admin = 1;
		else
			return fail(err, 400, "invalid_value",
				    "scopes[%zu] must be \"tunnels\" or \"admin\"", i);
	}
	return 0;
}

int cp_key_req_parse(const char *body, size_t len, struct cp_key_req *out, struct cp_err *err)
{
	json_t *root;
	int rc;

	memset(out, 0, sizeof(*out));
	if (len == 0) {
		out->tunnels = 1;
		return 0;
	}
	if (load_object(body, len, &root, err) < 0)
		return -EINVAL;
	rc = parse_key_object(root, out, err);
	json_decref(root);
	return rc;
}

int cp_domain_check(const char *domain, const char *public_url, struct cp_err *err)
{
	const char *host = public_url ? strstr(public_url, "://") : NULL;
	size_t hl, dl = strlen(domain);

	if (!domain_ok(domain))
		return fail(err, 400, "invalid_domain",
			    "a domain must be a lowercase host name of two or more DNS labels");
	/* No top-level domain is all digits: this is an IP address. */
	if (strspn(strrchr(domain, '.') + 1, "0123456789") == strlen(strrchr(domain, '.') + 1))
		return fail(err, 400, "invalid_domain",
			    "a domain must be a host name, not an IP address");
	if (host == NULL)
		return 0;
	host += 3;
	hl = strcspn(host, ":/");
	if ((dl == hl && memcmp(domain, host, hl) == 0) ||
	    (dl > hl && domain[dl - hl - 1] == '.' && memcmp(domain + dl - hl, host, hl) == 0))
		return fail(err, 400, "invalid_domain",
			    "%s is the service's own domain: names under it are subdomains",
			    domain);
	return 0;
}

int cp_err_json(const struct cp_err *e, char *out, size_t cap)
{
	json_t *o = json_pack("{s:s, s:s}", "error", e->message, "code", e->code);
	size_t n;

	if (o == NULL)
		return -ENOMEM;
	n = json_dumpb(o, out, cap, JSON_COMPACT);
	json_decref(o);
	if (n == 0 || n >= cap)
		return -ENOSPC;
	out[n] = '\0'; /* json_dumpb writes no terminator */
	return (int)n;
}
