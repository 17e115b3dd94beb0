/*
 * ag_api.c: the agent's calls to the control plane (see ag_api.h): POST
 * /api/v1/tunnels before the agent's loop starts, DELETE
 * /api/v1/tunnels/{id} after it ends; each one blocking HTTP/1.1 exchange
 * (Connection: close) bounded by a timeout, the answer read with jansson.
 */
#include "ag_api.h"
#include "sl_net.h"
#include "sl_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <jansson.h>

#define RESP_MAX 65536

int ag_api_parse_url(const char *url, char *hostport, size_t cap)
{
	const char *p, *slash;
	size_t n;

	if (strncmp(url, "http://", 7) != 0)
		return -EINVAL;
	p = url + 7;
	slash = strchr(p, '/');
	n = slash ? (size_t)(slash - p) : strlen(p);
	if (n == 0 || n + 6 >= cap || (slash && slash[1] != '\0'))
		return -EINVAL;
	memcpy(hostport, p, n);
	hostport[n] = '\0';
	if (strrchr(hostport, ':') == NULL || strrchr(hostport, ']') > strrchr(hostport, ':'))
		strcat(hostport, ":80");
	return 0;
}

static int dial(const char *hostport, int timeout_ms, char *err, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;

	if (sl_addr_parse(hostport, &ss, &len) < 0) {
		snprintf(err, cap, "cannot resolve the API host %s", hostport);
		return -EINVAL;
	}
	fd = sl_connect_tcp(&ss, len, timeout_ms);
	if (fd < 0) {
		snprintf(err, cap, "cannot reach the API at %s: %s", hostport, strerror(-fd));
		return -EAGAIN;
	}
	return fd;
}

/* Block fd's next send or receive at most until deadline_ms (sl_mono_ms);
 * 0, or -ETIMEDOUT when it has passed. */
static int arm(int fd, uint64_t deadline_ms)
{
	uint64_t now = sl_mono_ms(), left = deadline_ms > now ? deadline_ms - now : 0;
	struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};

	if (left == 0)
		return -ETIMEDOUT;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return 0;
}

/* Send all of buf by the deadline; 0 or -EAGAIN. */
static int send_all(int fd, const char *buf, size_t len, uint64_t deadline_ms)
{
	/* Bounded by len and the deadline: each send moves at least one byte,
	 * fails, or was interrupted (EINTR: a signal, or the engine's io_uring
	 * cancelling its requests at exit) and is tried again until then. */
	while (len > 0) {
		ssize_t n = arm(fd, deadline_ms) < 0 ? -2 : send(fd, buf, len, MSG_NOSIGNAL);

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EAGAIN;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read until the server closes (Connection: close), at most cap - 1 bytes,
 * by the deadline: a server that trickles bytes cannot stretch it. */
static ssize_t read_all(int fd, char *buf, size_t cap, uint64_t deadline_ms)
{
	size_t o = 0;

	/* Bounded by cap and the deadline, EINTR retried as in send_all. */
	while (o + 1 < cap) {
		ssize_t n = arm(fd, deadline_ms) < 0 ? -2 : recv(fd, buf + o, cap - 1 - o, 0);

		if (n == -1 && errno == EINTR)
			continue;
		if (n < 0)
			return -EAGAIN;
		if (n == 0)
			break;
		o += (size_t)n;
	}
	buf[o] = '\0';
	return (ssize_t)o;
}

/*
 * One HTTP exchange with the API, the request req (n bytes) and the whole
 * answer within timeout_ms in all (connect, send and read share it). 0 with
 * the answer in *resp (malloc'd, NUL-terminated, the caller frees it), or
 * -EINVAL / -EAGAIN / -ENOMEM with the reason in err.
 */
static int exchange(const char *hostport, const char *req, size_t n, int timeout_ms, char **resp,
		    char *err, size_t cap)
{
	uint64_t deadline = sl_mono_ms() + (uint64_t)timeout_ms;
	int fd, e = 0;

	*resp = NULL;
	if ((fd = dial(hostport, timeout_ms, err, cap)) < 0)
		return fd;
	if ((*resp = malloc(RESP_MAX)) == NULL) {
		e = -ENOMEM;
		snprintf(err, cap, "out of memory");
	} else if (send_all(fd, req, n, deadline) < 0 ||
		   read_all(fd, *resp, RESP_MAX, deadline) < 0) {
		snprintf(err, cap, "no answer from the API at %s within %d ms", hostport,
			 timeout_ms);
		e = -EAGAIN;
		free(*resp);
		*resp = NULL;
	}
	close(fd);
	return e;
}

/* The status of an HTTP answer and its body (after the head); -EPROTO with
 * err when it is not HTTP. */
static int http_status(const char *resp, const char **body, char *err, size_t cap)
{
	int status;

	*body = strstr(resp, "\r\n\r\n");
	if (sscanf(resp, "HTTP/1.%*c %d", &status) != 1 || *body == NULL) {
		snprintf(err, cap, "the API answered something that is not HTTP");
		return -EPROTO;
	}
	*body += 4;
	return status;
}

static void copy_field(json_t *o, const char *name, char *dst, size_t cap)
{
	const char *v = json_string_value(json_object_get(o, name));

	snprintf(dst, cap, "%s", v ? v : "");
}

/* Status and JSON body of resp into *out or err. */
static int parse_response(const char *resp, struct ag_api_session *out, char *err, size_t cap)
{
	const char *body;
	int status = http_status(resp, &body, err, cap);
	json_t *j;

	if (status < 0)
		return status;
	j = json_loads(body, 0, NULL);
	if (j == NULL) {
		snprintf(err, cap, "the API answered %d without JSON", status);
		return status >= 500 ? -EAGAIN : -EPROTO;
	}
	if (status != 201) {
		const char *m = json_string_value(json_object_get(j, "error"));
		const char *c = json_string_value(json_object_get(j, "code"));

		snprintf(err, cap, "the API refused the session (%d %s): %s", status, c ? c : "?",
			 m ? m : "no reason given");
		json_decref(j);
		return status >= 500 ? -EAGAIN : -EINVAL;
	}
	copy_field(j, "sessionId", out->sid, sizeof(out->sid));
	copy_field(j, "url", out->url, sizeof(out->url));
	copy_field(j, "relay", out->relay, sizeof(out->relay));
	copy_field(j, "agentToken", out->token, sizeof(out->token));
	copy_field(j, "expiresAt", out->expires, sizeof(out->expires));
	json_decref(j);
	if (!out->relay[0] || !out->token[0]) {
		snprintf(err, cap, "the API's answer lacks relay or agentToken");
		return -EPROTO;
	}
	return 0;
}

int ag_api_create(const struct ag_api_request *q, struct ag_api_session *out, char *err, size_t cap)
{
	char hostport[300], req[2048], *body = NULL, *resp = NULL;
	json_t *b;
	int n, e;

	memset(out, 0, sizeof(*out));
	if (ag_api_parse_url(q->api, hostport, sizeof(hostport)) < 0) {
		snprintf(err, cap,
			 "--api must be http://host[:port] (TLS termination in front of "
			 "the control plane is the operator's)");
		return -EINVAL;
	}
	b = json_pack("{s:i,s:s}", "port", q->port, "protocol", q->proto);
	if (b && q->name)
		json_object_set_new(b, "subdomain", json_string(q->name));
	if (b && q->duration)
		json_object_set_new(b, "duration", json_integer(q->duration));
	if (b && q->basic) {
		const char *colon = strchr(q->basic, ':');

		if (colon == NULL) {
			json_decref(b);
			snprintf(err, cap, "--basic-auth must be USER:PASSWORD");
			return -EINVAL;
		}
		json_object_set_new(b, "auth",
				    json_pack("{s:s,s:s%,s:s}", "type", "basic", "username",
					      q->basic, (size_t)(colon - q->basic), "password",
					      colon + 1));
	} else if (b && q->bearer)
		json_object_set_new(b, "auth",
				    json_pack("{s:s,s:s}", "type", "bearer", "token", q->bearer));
	body = b ? json_dumps(b, JSON_COMPACT) : NULL;
	json_decref(b); /* jansson does not scrub: the body copy is cleared below */
	if (body == NULL)
		return -ENOMEM;
	n = snprintf(req, sizeof(req),
		     "POST /api/v1/tunnels HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
		     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		     "User-Agent: sluice-agent\r\nConnection: close\r\n\r\n%s",
		     hostport, q->key, strlen(body), body);
	memset(body, 0, strlen(body));
	free(body);
	if (n < 0 || (size_t)n >= sizeof(req)) {
		snprintf(err, cap, "API request too long");
		return -EINVAL;
	}
	e = exchange(hostport, req, (size_t)n, q->timeout_ms, &resp, err, cap);
	memset(req, 0, sizeof(req)); /* the key */
	if (e == 0)
		e = parse_response(resp, out, err, cap);
	free(resp);
	return e;
}

int ag_api_delete(const char *api, const char *key, const char *sid, int timeout_ms, char *err,
		  size_t cap)
{
	char hostport[300], req[1024], *resp = NULL;
	const char *body;
	int n, e;

	if (ag_api_parse_url(api, hostport, sizeof(hostport)) < 0) {
		snprintf(err, cap, "--api must be http://host[:port]");
		return -EINVAL;
	}
	n = snprintf(
		req, sizeof(req),
		"DELETE /api/v1/tunnels/%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
		"User-Agent: sluice-agent\r\nConnection: close\r\n\r\n",
		sid, hostport, key);
	if (n < 0 || (size_t)n >= sizeof(req)) {
		snprintf(err, cap, "API request too long");
		return -EINVAL;
	}
	e = exchange(hostport, req, (size_t)n, timeout_ms, &resp, err, cap);
	memset(req, 0, sizeof(req)); /* the key */
	if (e < 0)
		return e;
	e = http_status(resp, &body, err, cap);
	if (e == 404)
		snprintf(err, cap, "the API knows no such session (ended or expired already)");
	else if (e >= 0 && e != 200) {
		json_t *j = json_loads(body, 0, NULL);
		const char *m = json_string_value(json_object_get(j, "error"));

		snprintf(err, cap, "the API answered %d: %s", e, m ? m : "no reason given");
		json_decref(j);
	}
	free(resp);
	if (e < 0 || e == 200)
		return e < 0 ? e : 0;
	return e == 404 ? -ENOENT : e >= 500 ? -EAGAIN : -EINVAL;
}
