/*
 * cp_tunnels.h: tunnel sessions (cp_tunnels.c).
 */
#ifndef CP_TUNNELS_H
#define CP_TUNNELS_H

#include "http/cp_server.h"

struct pr_session;

/* /api/v1/tunnels[/{id}] (a session's limits and shares are api/cp_limits.h's
 * and api/cp_shares.h's). */
int cp_tunnels_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
/* GET /?new (name NULL) or GET /<name>: the localtunnel client, no key. */
int cp_tunnels_localtunnel(struct cp_server *s, h2o_req_t *req, const char *name, size_t len);

/* The session's public URL: "http://<name>.<host>/" from --public-url, or
 * "tcp://<host>" for a TCP tunnel. */
void cp_tunnel_url(const struct cp_server *s, const struct pr_session *ps, char *out, size_t cap);

#endif
