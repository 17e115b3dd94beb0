/*
 * cp_verify.c: domain challenges (see cp_verify.h). DNS through the C
 * library's resolver (res_nquery, on a private resolver state so that a
 * --dns-server override touches no other thread); HTTP over a plain socket,
 * connect and every read bounded.
 */
#include "api/cp_verify.h"
#include "sl_net.h"
#include "sl_time.h"

#include <arpa/nameser.h>
#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_MAX 16384

/* The TXT strings of one record, concatenated, into out. */
static void txt_of(const ns_rr *rr, char *out, size_t cap)
{
	const unsigned char *p = ns_rr_rdata(*rr), *end = p + ns_rr_rdlen(*rr);
	size_t o = 0;

	/* Bounded by the record's length: each string has a length byte. */
	while (p < end) {
		size_t n = *p++;

		if (n > (size_t)(end - p))
			break;
		if (o + n < cap) {
			memcpy(out + o, p, n);
			o += n;
		}
		p += n;
	}
	out[o] = '\0';
}

static void verify_dns(const struct cp_verify_req *q, struct cp_verify_result *out)
{
	struct __res_state rs;
	unsigned char ans[4096];
	char name[300], txt[512], seen[200] = "";
	ns_msg msg;
	int n;

	memset(&rs, 0, sizeof(rs));
	if (res_ninit(&rs) != 0) {
		snprintf(out->why, sizeof(out->why), "no DNS resolver configured");
		return;
	}
	rs.retrans = q->timeout_ms / 2000 > 0 ? q->timeout_ms / 2000 : 1;
	rs.retry = 2;
	if (q->dns_server[0]) {
		struct sockaddr_storage ss;
		socklen_t len;

		if (sl_addr_parse(q->dns_server, &ss, &len) < 0 || ss.ss_family != AF_INET) {
			snprintf(out->why, sizeof(out->why), "--dns-server must be IPv4 ip:port");
			res_nclose(&rs);
			return;
		}
		memcpy(&rs.nsaddr_list[0], &ss, sizeof(struct sockaddr_in));
		rs.nscount = 1;
	}
	snprintf(name, sizeof(name), CP_CHALLENGE_PREFIX "%s", q->domain);
	n = res_nquery(&rs, name, ns_c_in, ns_t_txt, ans, sizeof(ans));
	res_nclose(&rs);
	if (n < 0 || ns_initparse(ans, n, &msg) < 0) {
		snprintf(out->why, sizeof(out->why), "no TXT record at %s (%s)", name,
			 h_errno == HOST_NOT_FOUND ? "no such name"
			 : h_errno == NO_DATA	   ? "no TXT data"
						   : "no answer from DNS");
		return;
	}
	for (int i = 0; i < ns_msg_count(msg, ns_s_an); i++) {
		ns_rr rr;

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0 || ns_rr_type(rr) != ns_t_txt)
			continue;
		txt_of(&rr, txt, sizeof(txt));
		if (strcmp(txt, q->token) == 0) {
			out->ok = 1;
			return;
		}
		snprintf(seen, sizeof(seen), "%.60s", txt);
	}
	snprintf(out->why, sizeof(out->why), "the TXT record at %s does not hold the token%s%s%s",
		 name, seen[0] ? " (found \"" : "", seen, seen[0] ? "\")" : "");
}

/* Loopback, private, link-local, shared, multicast or unspecified: where a
 * challenge must not send the control plane (it would probe the operator's
 * own network for whoever registers a domain pointing there). */
static int internal_address(const struct sockaddr_storage *ss)
{
	const uint8_t *a;

	if (ss->ss_family == AF_INET6) {
		a = ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr;
		static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

		if (memcmp(a, mapped, 12) != 0)
			return IN6_IS_ADDR_LOOPBACK((const struct in6_addr *)a) ||
			       IN6_IS_ADDR_UNSPECIFIED((const struct in6_addr *)a) ||
			       (a[0] & 0xfe) == 0xfc || (a[0] == 0xfe && (a[1] & 0xc0) == 0x80) ||
			       a[0] == 0xff;
		a += 12;
	} else
		a = (const uint8_t *)&((const struct sockaddr_in *)ss)->sin_addr;
	return a[0] == 0 || a[0] == 10 || a[0] == 127 || (a[0] == 169 && a[1] == 254) ||
	       (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
	       (a[0] == 100 && (a[1] & 0xc0) == 64) || a[0] >= 224;
}

/* why (cap bytes) said, and err (a negative errno) returned. */
static int refused(int err, char *why, size_t cap, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int refused(int err, char *why, size_t cap, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, cap, fmt, ap);
	va_end(ap);
	return err;
}

/* A connected socket to addr ("host:port") within timeout_ms, or a
 * negative errno with why set; public: refuse internal addresses. */
static int dial(const char *addr, int timeout_ms, int public, char *why, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd;

	if (sl_addr_parse(addr, &ss, &len) < 0)
		return refused(-EHOSTUNREACH, why, cap, "cannot resolve %s", addr);
	if (public && internal_address(&ss))
		return refused(-EACCES, why, cap, "%s resolves to an internal address: refused",
			       addr);
	if ((fd = sl_connect_tcp(&ss, len, timeout_ms)) < 0)
		return refused(fd, why, cap, "cannot connect to %s: %s", addr, strerror(-fd));
	return fd;
}

static void verify_http(const struct cp_verify_req *q, struct cp_verify_result *out)
{
	char addr[300], req[600], *resp = malloc(HTTP_MAX), *body;
	uint64_t deadline;
	size_t got = 0;
	int fd, n, status = 0;

	if (resp == NULL)
		return;
	if (q->connect[0])
		snprintf(addr, sizeof(addr), "%s", q->connect);
	else
		snprintf(addr, sizeof(addr), "%s:80", q->domain);
	if ((fd = dial(addr, q->timeout_ms, q->connect[0] == '\0', out->why, sizeof(out->why))) < 0)
		goto out;
	deadline = sl_mono_ms() + (uint64_t)q->timeout_ms;
	n = snprintf(req, sizeof(req),
		     "GET " CP_CHALLENGE_PATH "%s HTTP/1.1\r\nHost: %s\r\n"
		     "User-Agent: sluice-control (domain check)\r\nConnection: close\r\n\r\n",
		     q->token, q->domain);
	if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
		snprintf(out->why, sizeof(out->why), "cannot send the challenge request to %s",
			 addr);
		goto close;
	}
	/* Bounded by HTTP_MAX and one deadline for the whole answer: a server
	 * dribbling a byte at a time must not hold the thread. */
	while (got + 1 < HTTP_MAX) {
		uint64_t now = sl_mono_ms();
		struct pollfd pfd = {.fd = fd, .events = POLLIN};

		if (now >= deadline || poll(&pfd, 1, (int)(deadline - now)) != 1 ||
		    (n = (int)recv(fd, resp + got, HTTP_MAX - 1 - got, MSG_DONTWAIT)) <= 0)
			break;
		got += (size_t)n;
	}
	resp[got] = '\0';
	if (sscanf(resp, "HTTP/1.%*c %d", &status) != 1 || status != 200 ||
	    (body = strstr(resp, "\r\n\r\n")) == NULL) {
		snprintf(out->why, sizeof(out->why),
			 "http://%s" CP_CHALLENGE_PATH "%s answered %d, not 200 with the token",
			 q->domain, q->token, status);
		goto close;
	}
	body += 4;
	body[strcspn(body, "\r\n \t")] = '\0';
	if (strcmp(body, q->token) == 0)
		out->ok = 1;
	else
		snprintf(out->why, sizeof(out->why),
			 "http://%s" CP_CHALLENGE_PATH
			 "... answered 200 without the token (\"%.40s\", "
			 "%zu bytes in all)",
			 q->domain, body, got);
close:
	close(fd);
out:
	free(resp);
}

void cp_verify_run(const struct cp_verify_req *q, struct cp_verify_result *out)
{
	memset(out, 0, sizeof(*out));
	if (q->method == CP_VERIFY_DNS)
		verify_dns(q, out);
	else
		verify_http(q, out);
}
