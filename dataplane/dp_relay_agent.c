/*
 * dp_relay_agent.c: agents' connections to the relay. The first frame says
 * what a connection is: a HELLO (the agent's control connection: a new
 * session, or the resume of one whose name it holds, checked against
 * static tokens or the control plane's signed ones) or a DATA_HELLO (a data
 * connection for a tunnel's pool). Control connections then carry
 * heartbeats and errors. Until its first frame a connection is "fresh" and
 * closed if it stays silent.
 */
#include "dp_relay_int.h"

#include <netinet/tcp.h>
#include <time.h>
#include <unistd.h>

#include "pr_token.h"

/* ---- connections not identified yet ---- */

static void fresh_unlink(struct relay *r, struct agent *a)
{
	dp_timer_stop(&r->fresh, &a->fresh);
}

/* Connection c (a) joins the fresh list, closed unless it speaks in time. */
void dp_agent_fresh_link(struct relay *r, struct agent *a, uint32_t c)
{
	a->slot = c;
	dp_timer_start(&r->fresh, &a->fresh, r->now_ms + r->cfg->head_timeout_ms);
}

/* An agent-port or admin connection that said nothing in time: closed. */
static void fresh_due(struct dp_timer *t, void *ud)
{
	struct relay *r = ud;
	struct agent *a = dp_container_of(t, struct agent, fresh);

	fresh_unlink(r, a);
	if (dp_c(&r->io, a->slot)->kind == K_AGENT_NEW)
		r->m.agents_refused++;
	dp_conn_close(&r->io, a->slot);
}

void dp_agent_expire(struct relay *r)
{
	dp_timers_expire(&r->fresh, r->now_ms, fresh_due, r);
}

/* ---- HELLO: tokens, sessions, binding ---- */

/* A static token (--tokens): any, when there is no file and no sessions. */
static int static_token_ok(struct relay *r, const char *tok)
{
	int ok = 0;

	if (r->cfg->tokens == NULL)
		return !r->sh->state_on;
	for (uint32_t i = 0; i < r->cfg->ntokens; i++)
		ok |= dp_ct_equal(r->cfg->tokens[i], tok);
	return ok;
}

/*
 * A token signed by the control plane: its MAC, then the session it names
 * (active, same epoch, unexpired). 0 with the record in *rec, or the code to
 * refuse with (PR_E_SESSION, which agents retry, while the session may still
 * be on its way from Redis) and the reason in *why.
 */
static int session_token_ok(struct relay *r, const char *tok, struct pr_session *rec,
			    const char **why)
{
	const char *key = r->cfg->session_secret;
	uint64_t now = (uint64_t)time(NULL);
	struct pr_token pt;
	int e = pr_token_verify((const uint8_t *)key, strlen(key), tok, strlen(tok), now, &pt);

	*why = e == -ETIME ? "token expired" : "token refused";
	if (e < 0)
		return PR_E_AUTH;
	if (dp_state_get(&r->sh->state, pt.sid, rec) < 0) {
		*why = atomic_load(&r->sh->state.ready)
			       ? "unknown session (not in the relay's table)"
			       : "session table not loaded yet; retry";
		return PR_E_SESSION;
	}
	if (rec->status == PR_SS_DELETED && rec->replaced_by[0]) {
		*why = "session replaced by a newer session of its name";
		return PR_E_REPLACED;
	}
	if (rec->status != PR_SS_ACTIVE || now >= rec->expires) {
		*why = rec->status == PR_SS_DELETED ? "session deleted" : "session expired";
		return PR_E_AUTH;
	}
	if (rec->epoch != pt.epoch) {
		*why = "token of an earlier epoch of this session";
		return PR_E_AUTH;
	}
	return 0;
}

static void agent_refuse(struct relay *r, uint32_t c, enum pr_code code, const char *text)
{
	struct pr_msg m = {.type = PR_ERROR, .code = code};
	struct agent *a = dp_c(&r->io, c)->owner;

	r->m.agents_refused++;
	sl_warn("agent %s refused: %s", a->ip, text);
	snprintf(m.text, sizeof(m.text), "%s", text);
	dp_conn_send_msg(&r->io, c, &m);
	dp_conn_shutdown(&r->io, c);
}

/* A refusal: its code and the text the agent shows. Ownership: a value; text is a static string. */
struct refusal {
	enum pr_code code;
	const char *text;
};

/* The name of managed tunnel t asked for by another session of the table
 * (rec): t's session was taken over (the control plane marked it deleted,
 * replaced by rec's) and t goes now, telling its agent; or t's session is
 * still usable and the name is taken. 1 when t is gone. */
static int hello_takes_over(struct relay *r, struct dp_tunnel *t, const struct pr_session *rec,
			    struct refusal *why)
{
	char text[120];

	if (dp_state_usable(&r->sh->state, t->sid, t->tok_epoch, (uint64_t)time(NULL))) {
		*why = (struct refusal){PR_E_NAME_TAKEN, "name already in use"};
		return 0;
	}
	r->m.sessions_replaced++;
	snprintf(text, sizeof(text), "replaced by session %.32s", rec->sid);
	dp_tunnel_kill(r, t, PR_E_REPLACED, text);
	return 1;
}

/*
 * The session a HELLO resumes or the name it may take back (same token, or
 * for a session of the control plane, rec, the one that replaced the
 * holder's), or NULL for a new session; sets *why when the HELLO must be
 * refused.
 */
static struct dp_tunnel *hello_existing(struct relay *r, const struct pr_msg *m,
					const struct pr_session *rec, struct refusal *why)
{
	struct dp_tunnel *t = NULL;

	if (m->session[0]) {
		t = dp_tunnels_by_sid(&r->tunnels, m->session, strlen(m->session));
		if (t && !dp_ct_equal(t->token, m->token))
			*why = (struct refusal){PR_E_AUTH, "token does not own this session"};
		else if (t && m->epoch < t->epoch)
			/* Fenced by epoch: a newer agent bound the session since this
			 * one did; it must stop, not take the session back. */
			*why = (struct refusal){PR_E_REPLACED, "a newer agent holds this session"};
		if (t)
			return t;
	}
	if (!m->name[0])
		return NULL;
	if (!pr_label_valid(m->name, strlen(m->name))) {
		*why = (struct refusal){PR_E_NAME_INVALID,
					"name must be a DNS label: a-z, 0-9, '-', 1..63"};
		return NULL;
	}
	/* The same token may take its name back (a restarted agent does not know
	 * its old session); the latest agent wins and the old one is fenced.
	 * Another token may not. */
	t = dp_tunnels_by_name(&r->tunnels, m->name, strlen(m->name));
	if (t && rec && t->managed && strcmp(t->sid, rec->sid) != 0)
		return hello_takes_over(r, t, rec, why) ? NULL : t;
	if (t && !dp_ct_equal(t->token, m->token))
		*why = (struct refusal){PR_E_NAME_TAKEN, "name already in use"};
	else if (t && t->proto != m->proto)
		*why = (struct refusal){PR_E_NAME_TAKEN,
					"name in use by a tunnel of another protocol"};
	return t;
}

/* Make control connection c the one of t, fencing any previous one. */
static void bind_ctrl(struct relay *r, uint32_t c, struct dp_tunnel *t)
{
	struct agent *a = dp_c(&r->io, c)->owner;

	if (t->ctrl != DP_NIL) {
		/* Fence the ghost: the old control connection loses to the resume
		 * and is told so (a live agent stops rather than take the name
		 * back); closed once it has read that, or at the fresh deadline. */
		uint32_t old = t->ctrl;
		struct agent *oa = dp_c(&r->io, old)->owner;
		struct pr_msg e = {.type = PR_ERROR, .code = PR_E_REPLACED};

		oa->t = NULL;
		dp_tunnel_unref(t);
		t->ctrl = DP_NIL;
		r->nagents--;
		r->m.sessions_replaced++;
		snprintf(e.text, sizeof(e.text), "replaced by a newer agent from %s", a->ip);
		dp_conn_send_msg(&r->io, old, &e);
		dp_conn_shutdown(&r->io, old);
		dp_agent_fresh_link(r, oa, old);
		dp_pool_close_idle(r, t);
	}
	t->epoch++;
	if (t->ctrl == DP_NIL)
		r->nagents++;
	t->ctrl = c;
	t->last_rx_ms = t->last_ping_ms = r->now_ms;
	t->opens_asked = 0;
	dp_c(&r->io, c)->kind = K_CTRL;
	fresh_unlink(r, a);
	a->t = t;
	a->epoch = t->epoch;
	dp_tunnel_ref(t);
}

static void send_bound(struct relay *r, uint32_t c, struct dp_tunnel *t)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct pr_msg b = {.type = PR_BOUND};

	b.proto = t->proto;
	b.epoch = t->epoch;
	b.port = t->port;
	b.heartbeat_ms = r->cfg->heartbeat_ms;
	snprintf(b.name, sizeof(b.name), "%s", t->name);
	snprintf(b.session, sizeof(b.session), "%s", t->sid);
	snprintf(b.key, sizeof(b.key), "%s", t->key);
	dp_tunnel_url(r, t, b.url, sizeof(b.url));
	dp_conn_send_msg(&r->io, c, &b);
	sl_info("tunnel %s: agent %s bound (session %s, epoch %llu) at %s", t->name, a->ip, t->sid,
		(unsigned long long)t->epoch, b.url);
}

/* Agent connection c goes to worker w, with its frames; returns 1. */
static int move_agent(struct relay *r, uint32_t c, int w)
{
	struct agent *a = dp_c(&r->io, c)->owner;

	a->moving_to = w;
	dp_move_begin(r, c);
	return 1;
}

/* HELLO: a new session, or the resume of one whose name we hold. Returns 1
 * when the connection moves to the worker holding the tunnel, else 0. */
static int on_hello(struct relay *r, uint32_t c, const struct pr_msg *hello)
{
	struct refusal why = {0, NULL};
	struct pr_session rec, *recp = NULL;
	struct pr_msg mm;
	const struct pr_msg *m = hello;
	struct dp_tunnel *t;
	const char *swhy;
	int code = 0, sc;

	if (hello->version != PR_VERSION)
		why = (struct refusal){PR_E_VERSION, "protocol version not supported"};
	else if (r->sh->state_on && strncmp(hello->token, "v1.", 3) == 0) {
		if ((sc = session_token_ok(r, hello->token, &rec, &swhy)) != 0)
			why = (struct refusal){(enum pr_code)sc, swhy};
		else {
			/* The session decides name and protocol, not the agent. */
			mm = *hello;
			snprintf(mm.name, sizeof(mm.name), "%s", rec.name);
			mm.proto = (enum pr_proto)rec.proto;
			m = &mm;
			recp = &rec;
		}
	} else if (!static_token_ok(r, hello->token))
		why = (struct refusal){PR_E_AUTH, "token refused"};
	if (why.text == NULL && r->draining)
		why = (struct refusal){PR_E_DRAIN, "relay is draining"};
	t = why.text ? NULL : hello_existing(r, m, recp, &why);
	if (why.text == NULL && t == NULL) {
		int w = dp_route_worker_of(r, m->session[0] ? m->session : NULL,
					   m->name[0] ? m->name : NULL);

		if (w < 0 && (t = dp_tunnel_open(r, m, recp, &code, &w)) == NULL && w < 0)
			why = (struct refusal){(enum pr_code)code, code == PR_E_NO_PORT
									   ? "no TCP port left"
									   : "internal error"};
		/* A session resumed from another relay keeps counting its binds
		 * from where they were: the epoch fences its claim in Redis. */
		if (t && recp && strcmp(hello->session, recp->sid) == 0 && hello->epoch > t->epoch)
			t->epoch = hello->epoch;
		if (w >= 0 && ((struct agent *)dp_c(&r->io, c)->owner)->hops < MAX_HOPS)
			return move_agent(r, c, w);
		if (w >= 0)
			why = (struct refusal){PR_E_INTERNAL, "tunnel changing workers; retry"};
	}
	if (why.text) {
		agent_refuse(r, c, why.code, why.text);
		return 0;
	}
	bind_ctrl(r, c, t);
	send_bound(r, c, t);
	dp_pool_ask(r, t);
	if (r->sh->cluster_on && t->managed)
		dp_cluster_claim(&r->sh->cluster, t->sid, t->epoch);
	return 0;
}

/* DATA_HELLO: a data connection joins its tunnel's pool; returns 1 when it
 * moves to the worker holding the tunnel, else 0. */
static int on_data_hello(struct relay *r, uint32_t c, const struct pr_msg *m)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct dp_tunnel *t = dp_tunnels_by_sid(&r->tunnels, m->session, strlen(m->session));
	int w;

	if (t == NULL && a->hops < MAX_HOPS && (w = dp_route_worker_of(r, m->session, NULL)) >= 0)
		return move_agent(r, c, w);
	if (t == NULL || t->ctrl == DP_NIL || m->epoch != t->epoch ||
	    !dp_ct_equal(t->key, m->key)) {
		dp_conn_close(&r->io, c);
		return 0;
	}
	dp_c(&r->io, c)->kind = K_DATA;
	fresh_unlink(r, a);
	a->t = t;
	a->epoch = t->epoch;
	dp_tunnel_ref(t);
	free(a->buf);
	a->buf = NULL;
	a->len = 0;
	dp_pool_ready(r, t, c);
	return 0;
}

static void on_ctrl_frame(struct relay *r, uint32_t c, const struct pr_msg *m)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct pr_msg pong = {.type = PR_PONG};

	if (m->type == PR_PING) {
		pong.nonce = m->nonce;
		dp_conn_send_msg(&r->io, c, &pong);
	} else if (m->type == PR_ERROR) {
		sl_warn("agent %s reports error %u: %s", a->ip, m->code, m->text);
	}
}

/* Frames on an agent connection: 0, or -EPIPE when the connection was closed. */
int dp_agent_frames(struct relay *r, uint32_t c)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct pr_msg m;
	int n = 0;

	while (a->buf != NULL && (n = pr_frame_len(a->buf, a->len)) > 0) {
		if (pr_decode(a->buf + PR_FRAME_HDR, (size_t)n - PR_FRAME_HDR, &m) < 0)
			break;
		if (dp_c(&r->io, c)->kind == K_AGENT_NEW) {
			char first[AGENT_BUF]; /* the frame, should the connection move */
			int moved;

			memcpy(first, a->buf, (size_t)n);
			memmove(a->buf, a->buf + n, a->len - (uint32_t)n);
			a->len -= (uint32_t)n;
			if (m.type == PR_HELLO)
				moved = on_hello(r, c, &m);
			else if (m.type == PR_DATA_HELLO)
				moved = on_data_hello(r, c, &m);
			else
				break;
			if (moved) {
				/* The frame goes along, first, with whatever followed it. */
				memmove(a->buf + n, a->buf, a->len);
				memcpy(a->buf, first, (size_t)n);
				a->len += (uint32_t)n;
				return 0;
			}
			if (dp_c(&r->io, c)->kind == K_AGENT_NEW ||
			    (dp_c(&r->io, c)->flags & DP_C_CLOSING))
				return -EPIPE;
			continue;
		}
		memmove(a->buf, a->buf + n, a->len - (uint32_t)n);
		a->len -= (uint32_t)n;
		if (dp_c(&r->io, c)->kind != K_CTRL)
			break; /* a data connection sends nothing before START */
		on_ctrl_frame(r, c, &m);
	}
	if (n == 0 || (a->buf == NULL && dp_c(&r->io, c)->kind == K_DATA))
		return 0; /* need more, or a data connection that just joined its pool */
	dp_conn_close(&r->io, c);
	return -EPIPE;
}

/* A read can hold many frames: feed the buffer in pieces that fit it. */
void dp_agent_data(struct relay *r, uint32_t c, uint32_t seg)
{
	struct agent *a = dp_c(&r->io, c)->owner;
	struct dp_seg *g = &r->io.r.segs[seg];
	const char *p = g->ptr;
	uint32_t left = g->len;

	if (a->t)
		a->t->last_rx_ms = r->now_ms;
	while (left > 0 && a->buf != NULL) {
		uint32_t take = AGENT_BUF - a->len;

		take = take < left ? take : left;
		if (a->moving_to >= 0 && take < left) {
			dp_conn_close(&r->io, c); /* more than a mover carries */
			break;
		}
		memcpy(a->buf + a->len, p, take);
		a->len += take;
		p += take;
		left -= take;
		if (a->moving_to >= 0)
			continue; /* bytes for the worker it moves to, not parsed here */
		if (dp_agent_frames(r, c) < 0)
			break;
		if (take == 0) {
			dp_conn_close(&r->io, c); /* a full buffer without a whole frame */
			break;
		}
	}
	dp_seg_release(&r->io.r, seg);
}

void dp_agent_accept(struct relay *r, int fd, int kind)
{
	struct agent *a = calloc(1, sizeof(*a));
	uint32_t c;
	int one = 1;

	if (a == NULL || (kind == K_AGENT_NEW && (a->buf = malloc(AGENT_BUF)) == NULL)) {
		free(a);
		close(fd);
		return;
	}
	a->moving_to = -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	sl_peer_ip(fd, a->ip);
	c = dp_conn_new(&r->io, fd, (uint8_t)kind, a);
	if (c == DP_NIL) {
		free(a->buf);
		free(a);
		return;
	}
	dp_agent_fresh_link(r, a, c);
	if (kind == K_AGENT_NEW && r->sh->tls_on && dp_tls_accept(&r->io, c, &r->sh->tls, 0) < 0) {
		dp_conn_close(&r->io, c);
		return;
	}
	dp_conn_recv(&r->io, c);
}

void dp_agent_closed(struct relay *r, uint32_t c, struct dp_conn *s)
{
	struct agent *a = s->owner;
	struct dp_tunnel *t = a->t;

	if (t != NULL) {
		if (s->kind == K_CTRL && t->ctrl == c)
			dp_tunnel_offline(r, t);
		if (s->kind == K_DATA && a->idle)
			dp_pool_remove_idle(r, t, c);
		dp_tunnel_unref(t);
	}
	fresh_unlink(r, a);
	free(a->buf);
	free(a);
}

int dp_relay_load_tokens(const char *path, char ***tokens, uint32_t *n)
{
	FILE *f = fopen(path, "re");
	char line[512], **v = NULL;
	uint32_t count = 0;

	if (f == NULL)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *s = line, *e, **nv;

		while (*s == ' ' || *s == '\t')
			s++;
		e = s + strcspn(s, "\r\n#");
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if (e == s)
			continue;
		*e = '\0';
		nv = realloc(v, (count + 1) * sizeof(*v));
		if (nv == NULL || (nv[count] = strdup(s)) == NULL) {
			free(nv ? nv : v);
			fclose(f);
			return -ENOMEM;
		}
		v = nv;
		count++;
	}
	fclose(f);
	*tokens = v;
	*n = count;
	return 0;
}
