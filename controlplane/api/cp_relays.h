/*
 * cp_relays.h: the relays as Redis knows them (cp_relays.c).
 */
#ifndef CP_RELAYS_H
#define CP_RELAYS_H

#include "http/cp_server.h"

/* GET /api/v1/relays, POST /api/v1/relays/{id}/drain. */
int cp_relays_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);

#endif
