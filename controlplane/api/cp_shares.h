/*
 * cp_shares.h: a tunnel's share links (cp_shares.c).
 */
#ifndef CP_SHARES_H
#define CP_SHARES_H

#include "http/cp_server.h"

/* /api/v1/tunnels/{id}/shares[/{shareId}]: id is "SID/shares" or
 * "SID/shares/SHAREID" (anything else: 404). */
int cp_shares_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);

#endif
