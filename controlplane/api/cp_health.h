/*
 * cp_health.h: health, version and metrics (cp_health.c): fixed routes.
 */
#ifndef CP_HEALTH_H
#define CP_HEALTH_H

#include "http/cp_server.h"

int cp_health_route(struct cp_server *s, h2o_req_t *req);
int cp_version_route(struct cp_server *s, h2o_req_t *req);
int cp_metrics_route(struct cp_server *s, h2o_req_t *req);

#endif
