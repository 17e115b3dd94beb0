/*
 * cp_nodes.h: the hosts relays run on, and the SSH executor behind the API
 * (cp_nodes.c).
 */
#ifndef CP_NODES_H
#define CP_NODES_H

#include "http/cp_server.h"

/* /api/v1/nodes[/{id}[/exec|/diagnose|/health|/provision]]. */
int cp_nodes_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);

#endif
