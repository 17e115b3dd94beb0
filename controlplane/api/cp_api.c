/*
 * cp_api.c: the REST API's table of routes (see cp_api.h): every path the
 * control plane answers, where it goes, and what the routes need done when
 * the server starts and stops. The sub-resources of a tunnel (its limits,
 * its share links) and of a key (its limits) are told apart here, so that
 * each resource's file serves only its own paths.
 */
#include "api/cp_api.h"
#include "api/cp_api_state.h"
#include "api/cp_domains.h"
#include "api/cp_health.h"
#include "api/cp_jobs.h"
#include "api/cp_keys.h"
#include "api/cp_limits.h"
#include "api/cp_names.h"
#include "api/cp_node_pools.h"
#include "api/cp_nodes.h"
#include "api/cp_relays.h"
#include "api/cp_shares.h"
#include "api/cp_tunnels.h"
#include "http/cp_route.h"
#include "pr_state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LIMITS_SUFFIX "/limits"
#define LIMITS_LEN    (sizeof(LIMITS_SUFFIX) - 1)

/* 1 when id is "<something>/limits" (the something's length in *n). */
static int limits_path(const char *id, size_t id_len, size_t *n)
{
	if (!id || id_len <= LIMITS_LEN ||
	    memcmp(id + id_len - LIMITS_LEN, LIMITS_SUFFIX, LIMITS_LEN) != 0)
		return 0;
	*n = id_len - LIMITS_LEN;
	return 1;
}

/* /api/v1/tunnels: a new one, {id}/limits, {id}/shares[/{shareId}], or the
 * sessions. */
static int tunnels(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	size_t n;

	if (id == NULL && cp_is_method(req, "POST"))
		return cp_tunnels_create(s, req);
	if (limits_path(id, id_len, &n) && pr_session_id_valid(id, n))
		return cp_limits_route(s, req, id, n, 0);
	if (id && memchr(id, '/', id_len))
		return cp_shares_route(s, req, id, id_len);
	return cp_tunnels_route(s, req, id, id_len);
}

/* /api/v1/keys: {id}/limits, or the key. */
static int keys(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	size_t n;

	if (limits_path(id, id_len, &n) && cp_key_id_valid(id, n))
		return cp_limits_route(s, req, id, n, 1);
	return cp_keys_route(s, req, id, id_len);
}

static const struct cp_route fixed[] = {
	{"GET", "/health", cp_health_route},
	{"GET", "/api/v1/health", cp_health_route},
	{"GET", "/api/v1/version", cp_version_route},
	{"GET", "/metrics", cp_metrics_route},
};

static const struct cp_collection collections[] = {
	{"/api/v1/tunnels", tunnels},	       {"/api/v1/keys", keys},
	{"/api/v1/domains", cp_domains_route}, {"/api/v1/relays", cp_relays_route},
	{"/api/v1/nodes", cp_nodes_route},     {"/api/v1/jobs", cp_jobs_route},
	{"/api/v1/names", cp_names_route},
};

static int api_start(struct cp_server *s)
{
	if ((s->api = calloc(1, sizeof(*s->api))) == NULL)
		return -ENOMEM;
	return cp_stats_follow(&s->api->stats, s);
}

static void api_stop(struct cp_server *s)
{
	if (s->api == NULL)
		return;
	cp_domains_drain(s);
	/* Provisioning jobs stop at their next step; their records say so. */
	cp_jobs_shutdown(s);
}

static void api_dispose(struct cp_server *s)
{
	cp_node_pools_free();
	if (s->api == NULL)
		return;
	cp_stats_stop(&s->api->stats);
	free(s->api);
	s->api = NULL;
}

const struct cp_routes cp_api_routes = {
	.fixed = fixed,
	.nfixed = sizeof(fixed) / sizeof(fixed[0]),
	.collections = collections,
	.ncollections = sizeof(collections) / sizeof(collections[0]),
	.localtunnel = cp_tunnels_localtunnel,
	.start = api_start,
	.stop = api_stop,
	.dispose = api_dispose,
};
