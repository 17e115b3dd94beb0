/*
 * sl_net.c: address parsing and listening sockets (see sl_net.h).
 */
#include "sl_net.h"
#include "sl_time.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <string.h>
#include <poll.h>
#include <sys/time.h>
#include <unistd.h>

int sl_addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = {0}, *res = NULL;
	char host[256];
	const char *colon = strrchr(s, ':'), *h = s;
	size_t hlen;

	if (colon == NULL)
		return -EINVAL;
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && colon[-1] == ']') {
		h = s + 1;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0 || res == NULL)
		return -EINVAL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int sl_listen_tcp(const char *addr, int backlog, unsigned flags)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1, err;

	if ((err = sl_addr_parse(addr, &ss, &len)) < 0)
		return err;
	fd = socket(ss.ss_family,
		    SOCK_STREAM | SOCK_CLOEXEC | (flags & SL_LISTEN_NONBLOCK ? SOCK_NONBLOCK : 0),
		    0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto fail;
	if ((flags & SL_LISTEN_REUSEPORT) &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog) < 0)
		goto fail;
	return fd;
fail:
	err = -errno;
	close(fd);
	return err;
}

int sl_addr_ip(const struct sockaddr *sa, char *ip)
{
	strcpy(ip, "unknown");
	if (sa->sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, ip,
			  INET6_ADDRSTRLEN);
		return 1;
	}
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, ip,
			  INET6_ADDRSTRLEN);
	return 0;
}

int sl_peer_ip(int fd, char *ip)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	strcpy(ip, "unknown");
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return 0;
	return sl_addr_ip((struct sockaddr *)&ss, ip);
}

int sl_connect_tcp(const struct sockaddr_storage *ss, socklen_t len, int timeout_ms)
{
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	uint64_t deadline = sl_mono_ms() + (uint64_t)timeout_ms, now;
	struct pollfd pfd;
	int fd, n, err = 0;
	socklen_t el = sizeof(err);

	fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (const struct sockaddr *)ss, len) < 0 && errno != EINPROGRESS)
		goto fail;
	pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
	/* Bounded by the deadline: an interrupted poll (EINTR) waits for what is left. */
	do {
		now = sl_mono_ms();
		n = poll(&pfd, 1, now < deadline ? (int)(deadline - now) : 0);
	} while (n < 0 && errno == EINTR);
	if (n != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0) {
		errno = err ? err : ETIMEDOUT;
		goto fail;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
fail:
	err = errno;
	close(fd);
	return -err;
}
