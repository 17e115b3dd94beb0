/*
 * cp_names.h: the reserved names routes (cp_names.c).
 */
#ifndef CP_NAMES_H
#define CP_NAMES_H

#include "http/cp_server.h"

/* /api/v1/names[/{name}]. */
int cp_names_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);

#endif
