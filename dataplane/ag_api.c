/*
 * ag_api.c: POST /api/v1/tunnels from the agent (see ag_api.h): one
 * blocking HTTP/1.1 exchange (Connection: close) before the agent's loop
 * starts, bounded by a timeout, the answer read with jansson.
 */
#include "ag_api.h"
#include "sl_net.h"

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

/* Send all of buf; 0 or -EAGAIN. */
static int send_all(int fd, const char *buf, size_t len)
{
	/* Bounded by len: each send moves at least one byte or fails. */
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n <= 0)
			return -EAGAIN;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read until the server closes (Connection: close), at most RESP_MAX - 1. */
static ssize_t read_all(int fd, char *buf, size_t cap)
{
	size_t o = 0;

	while (o + 1 < cap) {
		ssize_t n = recv(fd, buf + o, cap - 1 - o, 0);

		if (n < 0)
			return -EAGAIN;
		if (n == 0)
			break;
		o += (size_t)n;
	}
	buf[o] = '\0';
	return (ssize_t)o;
}

static void copy_field(json_t *o, const char *name, char *dst, size_t cap)
{
	const char *v = json_string_value(json_object_get(o, name));

	snprintf(dst, cap, "%s", v ? v : "");
}

/* Status and JSON body of resp into *out or err. */
static int parse_response(const char *resp, struct ag_api_session *out, char *err, size_t cap)
{
	const char *body = strstr(resp, "\r\n\r\n");
	json_t *j;
	int status;

	if (sscanf(resp, "HTTP/1.%*c %d", &status) != 1 || body == NULL) {
		snprintf(err, cap, "the API answered something that is not HTTP");
		return -EPROTO;
	}
	j = json_loads(body + 4, 0, NULL);
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
	int fd, n, e;

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
	if ((fd = dial(hostport, q->timeout_ms, err, cap)) < 0)
		return fd;
	resp = malloc(RESP_MAX);
	if (resp == NULL) {
		close(fd);
		return -ENOMEM;
	}
	if (send_all(fd, req, (size_t)n) < 0 || read_all(fd, resp, RESP_MAX) < 0) {
		snprintf(err, cap, "no answer from the API at %s within %d ms", hostport,
			 q->timeout_ms);
		e = -EAGAIN;
	} else
		e = parse_response(resp, out, err, cap);
	memset(req, 0, sizeof(req));
	close(fd);
	free(resp);
	return e;
}
