/*
 * cp_keys.h: the API keys routes (cp_keys.c).
 */
#ifndef CP_KEYS_H
#define CP_KEYS_H

#include "http/cp_server.h"

/* /api/v1/keys[/{id}] (a key's limits are api/cp_limits.h's). */
int cp_keys_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);

#endif
