/*
 * cp_tunnels.h: tunnel sessions (cp_tunnels.c, cp_tunnel_create.c).
 */
#ifndef CP_TUNNELS_H
#define CP_TUNNELS_H

#include "http/cp_server.h"

struct pr_session;

/* GET|HEAD /api/v1/tunnels[/{id}], DELETE /api/v1/tunnels/{id} (the
 * table sends POST to cp_tunnels_create, a session's limits and shares to
 * api/cp_limits.h and api/cp_shares.h). */
int cp_tunnels_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
/* POST /api/v1/tunnels. */
int cp_tunnels_create(struct cp_server *s, h2o_req_t *req);
/* GET /?new (name NULL) or GET /<name>: the localtunnel client, no key. */
int cp_tunnels_localtunnel(struct cp_server *s, h2o_req_t *req, const char *name, size_t len);

/* The session's public URL: "http://<name>.<host>/" from --public-url, or
 * "tcp://<host>" for a TCP tunnel. */
void cp_tunnel_url(const struct cp_server *s, const struct pr_session *ps, char *out, size_t cap);
/* The session as answers show it, its status as of now (unix seconds). */
json_t *cp_tunnel_json(const struct cp_server *s, const struct pr_session *ps, uint64_t now);

#endif
