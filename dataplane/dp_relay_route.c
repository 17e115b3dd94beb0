/*
 * dp_relay_route.c: where a request goes, answered in one place: a tunnel of
 * this worker, another worker of this relay, another relay of the cluster,
 * a wait (its place is being asked, or its agent is between relays), or
 * nowhere: offline (a tunnel in its grace period, or a session of the
 * table with no agent, clustered or not: a 502 page) or unknown (404).
 * Host names under --domain, custom domains of the session table and
 * /session/<id>/ paths are all read here; the caller (dp_relay_pub.c)
 * acts on the answer. Agents' connections ask dp_route_worker_of the same
 * question for their HELLOs.
 */
#include "dp_relay_int.h"

#include <ctype.h>
#include <strings.h>
#include <time.h>

static enum dp_route_kind set(struct dp_route *rt, enum dp_route_kind k)
{
	rt->kind = k;
	return k;
}

/* "<name>.<domain>": rt->name set, and the tunnel when this worker has it. */
static struct dp_tunnel *by_host(struct relay *r, const struct dp_http_req *q, struct dp_route *rt)
{
	size_t dl = strlen(r->cfg->domain);

	if (q->host == NULL || q->host_len <= dl + 1)
		return NULL;
	if (q->host[q->host_len - dl - 1] != '.' ||
	    strncasecmp(q->host + q->host_len - dl, r->cfg->domain, dl) != 0)
		return NULL;
	rt->name = q->host;
	rt->name_len = q->host_len - dl - 1;
	return dp_tunnels_by_name(&r->tunnels, rt->name, rt->name_len);
}

/* A custom domain in Host (a session's, from the state table): rt->custom
 * and the session's id set, and its tunnel when this worker has it. */
static struct dp_tunnel *by_domain(struct relay *r, const struct dp_http_req *q,
				   struct dp_route *rt)
{
	struct pr_session rec;
	char host[254];

	if (!r->sh->state_on || q->host == NULL || q->host_len == 0 || q->host_len >= sizeof(host))
		return NULL;
	for (size_t i = 0; i < q->host_len; i++)
		host[i] = (char)tolower((unsigned char)q->host[i]);
	if (dp_state_by_domain(&r->sh->state, host, q->host_len, &rec) != 0)
		return NULL;
	rt->custom = 1;
	rt->verified = rec.domain_verified;
	snprintf(rt->sid, sizeof(rt->sid), "%s", rec.sid);
	rt->id = rt->sid;
	rt->id_len = strlen(rt->sid);
	return dp_tunnels_by_sid(&r->tunnels, rt->id, rt->id_len);
}

/* "/session/<id>[/rest]": rt->id set, rt->rest the path the app sees
 * ("/session/id" and "/session/id?q" leave "" and "?q": the caller adds
 * the "/"), and the tunnel when this worker has it. */
static struct dp_tunnel *by_path(struct relay *r, const struct dp_http_req *q, struct dp_route *rt)
{
	static const char pre[] = "/session/";
	const char *p = q->target + sizeof(pre) - 1, *end = q->target + q->target_len, *e = p;

	if (q->target_len < sizeof(pre) || memcmp(q->target, pre, sizeof(pre) - 1) != 0)
		return NULL;
	while (e < end && *e != '/' && *e != '?')
		e++;
	rt->id = p;
	rt->id_len = (size_t)(e - p);
	rt->rest = e;
	rt->rest_len = (size_t)(end - e);
	return dp_tunnels_by_sid(&r->tunnels, rt->id, rt->id_len);
}

/*
 * Which relay of the cluster holds session sid: RELAY (rt->addr), WAIT
 * (the answer is on its way, or the agent is between relays: for at most
 * the open timeout since p was first parked) or OFFLINE.
 */
static enum dp_route_kind by_cluster(struct relay *r, struct pub *p, const char *sid,
				     struct dp_route *rt)
{
	uint64_t waited = p->parked_ms ? sl_mono_ms() - p->parked_ms : 0;
	enum dp_owner_verdict v;

	if (!r->sh->cluster_on)
		return set(rt, DP_ROUTE_OFFLINE);
	rt->addr_len = 0;
	v = dp_cluster_owner(&r->sh->cluster, sid, p->parked_ms != 0, &rt->addr, &rt->addr_len);
	if (v == DP_OWN_PEER && p->link_hops < LINK_HOPS_MAX) {
		if (rt->sid != sid)
			snprintf(rt->sid, sizeof(rt->sid), "%s", sid);
		return set(rt, DP_ROUTE_RELAY);
	}
	if (waited < r->cfg->open_timeout_ms) {
		if (p->parked_ms == 0)
			r->m.parked_cluster++;
		return set(rt, DP_ROUTE_WAIT);
	}
	p->parked_ms = 0;
	return set(rt, DP_ROUTE_OFFLINE);
}

/*
 * A name or session id no worker here holds: an active, unexpired session
 * of the table is held by another relay of the cluster (or waited for), or
 * else offline: created through the API with no agent connected yet, or
 * its tunnel released after the grace period. Anything else (no table
 * without --redis, a name nobody holds, a deleted or expired session) is
 * UNKNOWN. rt->tname gets the session's name for the offline page.
 */
static enum dp_route_kind by_table(struct relay *r, struct pub *p, struct dp_route *rt)
{
	struct pr_session rec;
	char key[64];

	if (!r->sh->state_on)
		return set(rt, DP_ROUTE_UNKNOWN);
	if (rt->name && rt->name_len < sizeof(key)) {
		for (size_t i = 0; i < rt->name_len; i++)
			key[i] = (char)tolower((unsigned char)rt->name[i]);
		if (dp_state_by_name(&r->sh->state, key, rt->name_len, &rec) < 0)
			return set(rt, DP_ROUTE_UNKNOWN);
	} else if (rt->id && rt->id_len < sizeof(rec.sid)) {
		memcpy(key, rt->id, rt->id_len);
		key[rt->id_len] = '\0';
		if (dp_state_get(&r->sh->state, key, &rec) < 0 || rec.status != PR_SS_ACTIVE)
			return set(rt, DP_ROUTE_UNKNOWN);
	} else {
		return set(rt, DP_ROUTE_UNKNOWN);
	}
	/* The table may hold it a moment past its expiry (the sweep kills the
	 * tunnel at that second; the control plane rewrites the record later). */
	if ((uint64_t)time(NULL) >= rec.expires)
		return set(rt, DP_ROUTE_UNKNOWN);
	snprintf(rt->tname, sizeof(rt->tname), "%s", rec.name);
	return by_cluster(r, p, rec.sid, rt);
}

enum dp_route_kind dp_route_find(struct relay *r, struct pub *p, const struct dp_http_req *q,
				 struct dp_route *rt)
{
	int w;

	memset(rt, 0, offsetof(struct dp_route, addr));
	rt->rest = q->target;
	rt->rest_len = q->target_len;
	rt->t = by_host(r, q, rt);
	if (rt->t == NULL && rt->name == NULL)
		rt->t = by_domain(r, q, rt);
	if (rt->t == NULL && rt->name == NULL && !rt->custom)
		rt->t = by_path(r, q, rt);
	if (rt->t)
		return set(rt, DP_ROUTE_HERE);
	if (rt->name == NULL && rt->id == NULL)
		return set(rt, DP_ROUTE_UNKNOWN);
	w = rt->name ? dp_owners_find(&r->sh->owners, 0, rt->name, rt->name_len)
		     : dp_owners_find(&r->sh->owners, 1, rt->id, rt->id_len);
	if (w >= 0 && w != r->idx && p->hops < MAX_HOPS) {
		rt->worker = w;
		return set(rt, DP_ROUTE_WORKER);
	}
	return by_table(r, p, rt);
}

enum dp_route_kind dp_route_away(struct relay *r, struct pub *p, struct dp_route *rt)
{
	/* Its agent may be moving to another relay (drain, failover). */
	return rt->t->managed ? by_cluster(r, p, rt->t->sid, rt) : set(rt, DP_ROUTE_OFFLINE);
}

int dp_route_worker_of(struct relay *r, const char *sid, const char *name)
{
	int w = DP_OWNER_NONE;

	if (sid)
		w = dp_owners_find(&r->sh->owners, 1, sid, strlen(sid));
	if (w == DP_OWNER_NONE && name)
		w = dp_owners_find(&r->sh->owners, 0, name, strlen(name));
	return w >= 0 && w != r->idx ? w : -1;
}
