/*
 * sl_net.h: socket helpers every binary needs: "host:port" to a sockaddr,
 * and a listening TCP socket.
 */
#ifndef SL_NET_H
#define SL_NET_H

#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Resolve "host:port" or "[v6]:port" (a name such as localhost is looked up,
 * numeric ports only) into *ss. Returns 0 or -EINVAL.
 */
int sl_addr_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len);

#define SL_LISTEN_REUSEPORT 0x1 /* SO_REUSEPORT: one listener per worker, kernel balances */
#define SL_LISTEN_NONBLOCK  0x2

/* Bind and listen on addr; returns the fd or a negative errno. */
int sl_listen_tcp(const char *addr, int backlog, unsigned flags);

/* A blocking TCP socket connected to *ss within timeout_ms, with reads
 * and writes bounded by the same timeout; the fd, or a negative errno
 * (-ETIMEDOUT when the connect took too long). For the few blocking
 * clients (the agent's API call, the control plane's domain checks). */
int sl_connect_tcp(const struct sockaddr_storage *ss, socklen_t len, int timeout_ms);

/* The IP address of sa as text into ip (INET6_ADDRSTRLEN bytes; "unknown"
 * for other families); 1 for IPv6, else 0. */
int sl_addr_ip(const struct sockaddr *sa, char *ip);

/* The address of fd's peer as text into ip, as sl_addr_ip ("unknown" when
 * the socket has none); 1 for IPv6, else 0. */
int sl_peer_ip(int fd, char *ip);

#ifdef __cplusplus
}
#endif
#endif
