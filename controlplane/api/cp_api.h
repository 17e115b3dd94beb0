/*
 * cp_api.h: the REST API as one table of routes (cp_api.c), which the
 * program hands its HTTP server (cp_server_config.routes). Only the name:
 * the starter needs no h2o.
 */
#ifndef CP_API_H
#define CP_API_H

struct cp_routes;

extern const struct cp_routes cp_api_routes;

#endif
