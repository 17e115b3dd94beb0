/*
 * cp_domains.h: custom domains (cp_domains.c).
 */
#ifndef CP_DOMAINS_H
#define CP_DOMAINS_H

#include "http/cp_server.h"

/* /api/v1/domains[/{domain}[/verify]]. */
int cp_domains_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len);
/* At exit: verifications still running waited for (4 s at most). */
void cp_domains_drain(struct cp_server *s);

#endif
