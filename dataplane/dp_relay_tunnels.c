/*
 * dp_relay_tunnels.c: a tunnel's life on the worker that holds it: opened
 * by its first HELLO (or, for a localtunnel session, by the session table),
 * its name claimed across workers, offline while its agent is away (the
 * name held for the grace period), killed when its session ends, released
 * at last. The registry itself is dp_tunnel.c; the owners table dp_owners.c.
 */
#include "dp_relay_int.h"

#include <sys/socket.h>

#include "pr_token.h"

/* The kernel's CSPRNG does not fail for small reads; if it ever did, a
 * predictable session id or key would be worse than stopping. */
static void random_alnum(char *out, size_t n)
{
	if (pr_random_alnum(out, n) < 0)
		abort();
}

/* A TCP tunnel's public listener, on the first free port of --tcp-ports
 * from where the last search stopped: 0, -EADDRINUSE (none free) or -ENFILE. */
static int open_tcp_port(struct relay *r, struct dp_tunnel *t)
{
	char addr[300];
	const char *colon = strrchr(r->cfg->http, ':');
	uint32_t span = (uint32_t)(r->cfg->tcp_hi - r->cfg->tcp_lo) + 1;

	for (uint32_t i = 0; i < span; i++) {
		uint16_t port = (uint16_t)(r->cfg->tcp_lo + (r->next_tcp + i) % span);
		int fd;

		snprintf(addr, sizeof(addr), "%.*s:%u", (int)(colon - r->cfg->http), r->cfg->http,
			 port);
		fd = sl_listen_tcp(addr, 512, 0);
		if (fd < 0)
			continue;
		t->tcp_listener = dp_conn_new(&r->io, fd, K_LISTEN_TCP, t);
		if (t->tcp_listener == DP_NIL)
			return -ENFILE;
		dp_tunnel_ref(t);
		dp_conn_accept(&r->io, t->tcp_listener);
		t->port = port;
		r->next_tcp = (uint16_t)((r->next_tcp + i + 1) % span);
		return 0;
	}
	return -EADDRINUSE;
}

/* The public URL of t as the agent shows it. */
void dp_tunnel_url(struct relay *r, struct dp_tunnel *t, char *url, size_t cap)
{
	if (t->proto == PR_PROTO_TCP)
		snprintf(url, cap, "tcp://%s:%u", r->cfg->domain, t->port);
	else if (r->http_port == 80)
		snprintf(url, cap, "http://%s.%s/", t->name, r->cfg->domain);
	else
		snprintf(url, cap, "http://%s.%s:%d/", t->name, r->cfg->domain, r->http_port);
}

/* A session's limits onto its tunnel; counts so far are kept. */
void dp_tunnel_set_limits(struct dp_tunnel *t, const struct pr_session *rec)
{
	t->lim_req = rec->lim_req;
	t->lim_bw = rec->lim_bw;
	t->lim_tcp = rec->lim_tcp;
	t->key_req = rec->key_req;
	snprintf(t->key_id, sizeof(t->key_id), "%s", rec->key_id);
}

/* A new tunnel on this worker, its name claimed across workers. NULL with
 * *code set, or with *elsewhere set when another worker holds the name. */
struct dp_tunnel *dp_tunnel_open(struct relay *r, const struct pr_msg *m,
				 const struct pr_session *rec, int *code, int *elsewhere)
{
	struct dp_tunnel *t = calloc(1, sizeof(*t));
	int w;

	*code = PR_E_INTERNAL;
	if (t == NULL)
		return NULL;
	if (m->name[0])
		snprintf(t->name, sizeof(t->name), "%s", m->name);
	else
		random_alnum(t->name, 8);
	if (rec) {
		/* The control plane's session: its id, and its expiry to enforce. */
		snprintf(t->sid, sizeof(t->sid), "%s", rec->sid);
		t->managed = 1;
		t->expires = rec->expires;
		t->tok_epoch = rec->epoch;
		t->auth = rec->auth;
		snprintf(t->auth_mac, sizeof(t->auth_mac), "%s", rec->auth_mac);
		dp_tunnel_set_limits(t, rec);
	} else {
		random_alnum(t->sid, 16);
		t->lim_req = r->cfg->lim_req;
		t->lim_bw = r->cfg->lim_bw;
		t->lim_tcp = r->cfg->lim_tcp;
	}
	random_alnum(t->key, 32);
	snprintf(t->token, sizeof(t->token), "%s", m->token);
	t->proto = m->proto;
	t->ctrl = t->idle = t->wait_head = t->wait_tail = t->tcp_listener = DP_NIL;
	if ((w = dp_owners_claim(&r->sh->owners, t->name, t->sid, r->idx)) != r->idx) {
		if (w >= 0)
			*elsewhere = w;
		free(t);
		return NULL;
	}
	if (t->proto == PR_PROTO_TCP && open_tcp_port(r, t) < 0) {
		*code = PR_E_NO_PORT;
		goto fail;
	}
	if (dp_tunnels_add(&r->tunnels, t) < 0) {
		/* The listener's reference keeps t until its close completes, which
		 * on epoll is at once: hold t across it. */
		t->refs++;
		if (t->tcp_listener != DP_NIL)
			dp_conn_close(&r->io, t->tcp_listener);
		t->tcp_listener = DP_NIL;
		t->refs--;
		goto fail;
	}
	t->linked = 1;
	if (rec)
		t->acl = dp_acl_parse(rec->allow_ips, rec->deny_ips);
	return t;
fail:
	dp_owners_release(&r->sh->owners, t->name, t->sid, r->idx);
	if (t->refs == 0)
		free(t);
	return NULL;
}

/* The control connection of t goes (closed or dead): the tunnel waits for a resume. */
void dp_tunnel_offline(struct relay *r, struct dp_tunnel *t)
{
	if (r->sh->cluster_on && t->managed)
		dp_cluster_unbound(&r->sh->cluster, t->sid);
	t->ctrl = DP_NIL;
	r->nagents--;
	t->offline_since_ms = r->now_ms;
	dp_pool_close_idle(r, t);
	dp_pool_fail_waiters(r, t, r->sh->cluster_on && t->managed);
	sl_info("tunnel %s: agent offline, name held for %u ms", t->name, r->cfg->grace_ms);
}

/* A session revoked, deleted, replaced or expired: its agent is told (code), every
 * connection of the tunnel closes now, and the name is free at once. */
void dp_tunnel_kill(struct relay *r, struct dp_tunnel *t, enum pr_code code, const char *why)
{
	struct pr_msg e = {.type = PR_ERROR, .code = code};

	sl_info("tunnel %s: session %s %s; closing its connections", t->name, t->sid, why);
	r->m.sessions_closed++;
	snprintf(e.text, sizeof(e.text), "session %s", why);
	if (t->ctrl != DP_NIL) {
		dp_conn_send_msg(&r->io, t->ctrl, &e);
		dp_conn_shutdown(&r->io, t->ctrl);
	}
	dp_pool_close_idle(r, t);
	dp_pool_fail_waiters(r, t, 0);
	/* Every public and data connection of t; bounded by the slot table. */
	for (uint32_t i = 0; i < r->io.nconns; i++) {
		struct dp_conn *s = &r->io.conns[i];

		if (s->fd < 0 || s->owner == NULL)
			continue;
		if (((s->kind == K_PUBLIC || s->kind == K_PUBLIC_TCP) &&
		     ((struct pub *)s->owner)->t == t) ||
		    (s->kind == K_DATA && ((struct agent *)s->owner)->t == t)) {
			/* A reset, not a FIN behind queued bytes: the session is
			 * over now, not once its buffers drain. */
			struct linger lg = {.l_onoff = 1, .l_linger = 0};

			setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			dp_conn_close(&r->io, i);
		}
	}
	dp_lt_forget(r, t);
	dp_tunnel_release(r, t);
}

/* t leaves the registry, its name and id free on every worker and in the
 * cluster; it is freed once its last socket lets go. */
void dp_tunnel_release(struct relay *r, struct dp_tunnel *t)
{
	if (r->sh->cluster_on && t->managed)
		dp_cluster_release(&r->sh->cluster, t->sid);
	dp_tunnels_remove(&r->tunnels, t);
	dp_owners_release(&r->sh->owners, t->name, t->sid, r->idx);
	t->linked = 0;
	/* Hold it across the listener's close (whose reference may be the
	 * last, freeing it at once on epoll) and the unref below. */
	t->refs++;
	if (t->tcp_listener != DP_NIL)
		dp_conn_close(&r->io, t->tcp_listener);
	dp_tunnel_unref(t);
}
