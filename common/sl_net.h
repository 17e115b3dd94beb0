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

#ifdef __cplusplus
}
#endif
#endif
