/*
 * ag_api.h: the agent's calls to the control plane: create a session (POST
 * /api/v1/tunnels) and learn its relay and signed token, so that `sluice
 * http 3000 --api URL --api-key KEY` needs nothing else; and end it (DELETE
 * /api/v1/tunnels/{id}) when the agent exits, so that no ghost stays listed
 * and its name is free at once.
 */
#ifndef AG_API_H
#define AG_API_H

#include <stddef.h>
#include <stdint.h>

/* Ownership: a value the call fills. */
struct ag_api_session {
	char sid[40];
	char url[300];
	char relay[300]; /* host:port of the relays' agent port */
	char token[200];
	char expires[40]; /* ISO 8601 */
};

/* Ownership: the caller's; every string borrowed for the call. */
struct ag_api_request {
	const char *api;    /* http://host[:port] */
	const char *key;    /* API key */
	int port;	    /* the local port exposed */
	const char *proto;  /* "http" or "tcp" */
	const char *name;   /* wanted subdomain, or NULL */
	uint32_t duration;  /* seconds, 0: the control plane's default */
	const char *basic;  /* "user:password" protecting the URL, or NULL */
	const char *bearer; /* a bearer token protecting the URL, or NULL */
	int timeout_ms;
};

/*
 * Create the session. 0 with *out filled; otherwise the reason in err and
 * -EINVAL (the request was refused: 4xx, fix and retry makes no sense),
 * -EAGAIN (5xx or unreachable: worth retrying) or -EPROTO (not our API).
 */
int ag_api_create(const struct ag_api_request *q, struct ag_api_session *out, char *err,
		  size_t cap);

/*
 * End session sid with key, within timeout_ms in all (connect, send and the
 * answer): 0 when the API ended it; otherwise the reason in err and
 * -ENOENT (the API knows no such session: ended or expired already),
 * -EAGAIN (unreachable, no answer in time, or 5xx), -EINVAL (refused, 4xx)
 * or -EPROTO (not our API).
 */
int ag_api_delete(const char *api, const char *key, const char *sid, int timeout_ms, char *err,
		  size_t cap);

/* The pieces of an http:// URL (no path beyond "/"); 0 or -EINVAL. */
int ag_api_parse_url(const char *url, char *hostport, size_t cap);

#endif
