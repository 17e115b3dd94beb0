/*
 * dp_relay_pub.c: the request side of a public connection, from accept to
 * close: request heads gathered and parsed (bounded, timed against
 * slowloris), each routed (dp_relay_route.c), let in (dp_relay_access.c,
 * dp_relay_limits.c) and forwarded with its body framing followed; errors
 * the relay answers itself. The response side is raw bytes from the agent,
 * never parsed or copied (dp_conn's pump).
 */
#include "dp_relay_int.h"

#include <netinet/tcp.h>
#include <stdarg.h>
#include <unistd.h>

/* What became of a request head (on_request). */
enum req_outcome {
	REQ_FORWARDED = 0, /* sent toward its tunnel (or held until a data connection comes) */
	REQ_MOVED,	   /* the connection moves to the worker holding the tunnel */
	REQ_PARKED,	   /* it waits for a lease, or for where its tunnel is (head kept) */
	REQ_LINKED,	   /* it goes to another relay: the head is queued as it came */
	REQ_ANSWERED,	   /* an error response was queued */
};

const int dp_err_status[E_COUNT] = {400, 404, 408, 431, 501, 502, 503, 401, 403, 302, 429};

/* ---- deadlines: a head that takes too long, a data connection that does not come ---- */

void dp_pub_untime(struct relay *r, struct pub *p)
{
	dp_timer_stop(&r->timed, &p->timer);
}

void dp_pub_deadline(struct relay *r, struct pub *p, uint32_t ms, int err)
{
	dp_timer_start(&r->timed, &p->timer, r->now_ms + ms);
	p->deadline_err = err;
}

static void pub_due(struct dp_timer *t, void *ud)
{
	struct relay *r = ud;
	struct pub *p = dp_container_of(t, struct pub, timer);

	if (p->waiting)
		dp_pool_unlink_waiter(r, p);
	if (p->deadline_err == E_COUNT) {
		dp_pub_untime(r, p);
		dp_conn_close(&r->io, p->slot);
	} else if (p->deadline_err == E_408)
		dp_pub_error(r, p, E_408, NULL, "request head not received in time\n");
	else
		dp_pub_error(r, p, E_502, "Retry-After: 5\r\n",
			     "the agent did not open a connection in time\n");
}

void dp_pub_expire(struct relay *r)
{
	dp_timers_expire(&r->timed, r->now_ms, pub_due, r);
}

/* Queue error e: a body of the given type (DP_HTTP_TEXT, DP_HTTP_HTML)
 * after the extra headers, then close; why is what the log says. */
/* The Strict-Transport-Security header line (--hsts) into buf; its length. */
static uint32_t hsts_header(const struct relay *r, char *buf, size_t cap)
{
	return (uint32_t)snprintf(buf, cap, "Strict-Transport-Security: max-age=%u\r\n",
				  r->sh->cfg->hsts_max_age);
}

static void pub_answer(struct relay *r, struct pub *p, int e, const char *type, const char *extra,
		       const char *body, const char *why)
{
	char resp[2048], more[512];
	int n;

	r->m.errors[e]++;
	sl_debug("client %s: %d %s", p->ip, dp_err_status[e], why);
	p->phase = P_DONE;
	if (dp_c(&r->io, p->slot)->peer != DP_NIL || p->tcp) {
		/* Mid-stream (or raw TCP): an HTTP error would interleave with the
		 * app's bytes, so the connection just closes. */
		uint32_t peer = dp_c(&r->io, p->slot)->peer;

		dp_pub_untime(r, p);
		if (peer != DP_NIL)
			dp_conn_close(&r->io, peer);
		dp_conn_close(&r->io, p->slot);
		return;
	}
	if (p->https && r->sh->cfg->hsts_max_age) { /* the relay's own pages too */
		uint32_t h = hsts_header(r, more, sizeof(more));

		snprintf(more + h, sizeof(more) - h, "%s", extra ? extra : "");
		extra = more;
	}
	n = dp_http_response_as(dp_err_status[e], type, extra, body, resp, sizeof(resp));
	if (n > 0)
		dp_conn_send(&r->io, p->slot, resp, (uint32_t)n);
	dp_conn_shutdown(&r->io, p->slot);
	/* Read and drop what the client still sends until it closes (so the
	 * response is not lost to a reset), for at most LINGER_MS. */
	dp_pub_deadline(r, p, LINGER_MS, E_COUNT);
	dp_conn_recv(&r->io, p->slot);
}

void dp_pub_error(struct relay *r, struct pub *p, int e, const char *extra, const char *fmt, ...)
{
	char body[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	pub_answer(r, p, e, DP_HTTP_TEXT, extra, body, body);
}

/*
 * Retry-After of the offline answer: 5 s. An agent whose control connection
 * dropped reconnects by itself within a few seconds (its backoff starts at
 * 250 ms and doubles, each wait 50-150% of the step: four tries take 2 to
 * 6 s, docs/protocol.md), while the relay holds its name for the grace
 * period (--grace-ms, 30 s by default); so a client that waits 5 s most
 * often finds the tunnel back, and a crawler or script that honours the
 * header does not hammer the relay meanwhile. It is also what the relay's
 * other 502s say.
 */
#define OFFLINE_RETRY "Retry-After: 5\r\n"

/* The page a browser gets (Accept: text/html); %s is the tunnel's name
 * three times. Names are DNS labels (checked at HELLO and in session
 * records, pr_label_valid): nothing in them needs escaping. */
#define OFFLINE_HTML                                                                               \
	"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s is offline</title>"        \
	"</head>\n<body><h1>Tunnel offline</h1>\n<p>tunnel %s is offline: its agent is not "       \
	"connected.</p>\n<p>If it is reconnecting, this page works again in a few seconds."        \
	"</p>\n<hr><p><small>sluice relay, tunnel %s</small></p></body></html>\n"

/* A tunnel that exists (here, in its grace period, or in the session
 * table) with no agent: 502 with Retry-After, as HTML for a browser and as
 * text for anything else, naming the tunnel. */
static void answer_offline(struct relay *r, struct pub *p, const struct dp_http_req *q,
			   const struct dp_route *rt)
{
	const char *name = rt->t ? rt->t->name : rt->tname;
	char text[160], html[768];

	r->m.offline++;
	snprintf(text, sizeof(text),
		 "tunnel %s is offline: its agent is not connected; retry shortly\n", name);
	if (!dp_http_wants_html(q)) {
		pub_answer(r, p, E_502, DP_HTTP_TEXT, OFFLINE_RETRY, text, text);
		return;
	}
	snprintf(html, sizeof(html), OFFLINE_HTML, name, name, name);
	pub_answer(r, p, E_502, DP_HTTP_HTML, OFFLINE_RETRY, html, text);
}

void dp_pub_hold_or_send(struct relay *r, struct pub *p, uint32_t seg)
{
	struct dp_conn *c = dp_c(&r->io, p->slot);

	if (c->peer != DP_NIL) {
		dp_conn_forward(&r->io, p->slot, c->peer, seg);
		return;
	}
	dp_chain_push(&r->io.r, &p->held, seg);
}

/* A keep-alive request for another tunnel: let go of the current one. */
void dp_pub_detach(struct relay *r, struct pub *p)
{
	uint32_t d = dp_c(&r->io, p->slot)->peer;

	r->m.misdirected_switch++;
	if (d != DP_NIL) {
		dp_c(&r->io, d)->peer = DP_NIL;
		dp_c(&r->io, p->slot)->peer = DP_NIL;
		dp_conn_close(&r->io, d);
	}
	if (p->waiting)
		dp_pool_unlink_waiter(r, p);
	dp_tunnel_unref(p->t);
	p->t = NULL;
}

static int head_error(int err)
{
	return err == DP_HTTP_TOO_MANY ? E_431 : err == DP_HTTP_BAD_TE ? E_501 : E_400;
}

static enum req_outcome on_request(struct relay *r, struct pub *p, const struct dp_http_req *q);

/* What try_head did with a head besides consuming it (a positive count):
 * 0, or one of these. */
#define HEAD_INCOMPLETE 0
#define HEAD_HELD	(-EINPROGRESS) /* the connection moves or waits: nothing consumed */
#define HEAD_FAILED	(-EPROTO)      /* an error response was queued */

/* Parse a head from buf and route it; returns its length, or HEAD_*. */
static int try_head(struct relay *r, struct pub *p, const char *buf, size_t len)
{
	static _Thread_local struct dp_http_req q; /* large: one per worker thread */
	enum req_outcome out;
	uint32_t seg;
	int n;

	if (!p->https && dp_http_is_tls_hello(buf, len)) {
		/* A TLS client at the plain port (https:// to an http:// URL): said
		 * at once, in plain text, rather than a 408 when the head timer
		 * runs out. The client's TLS stack shows these bytes as a
		 * protocol error; a person reading them with openssl s_client or
		 * curl -v sees what to do (nginx's reverse case is its "plain
		 * HTTP request was sent to HTTPS port"). */
		dp_pub_error(
			r, p, E_400, NULL,
			"this is an HTTP port; use http:// (a TLS handshake was sent to it)\n");
		return HEAD_FAILED;
	}
	n = dp_http_parse_request(buf, len, &q);
	if (n == DP_HTTP_INCOMPLETE) {
		if (len > DP_HTTP_HEAD_MAX) {
			dp_pub_error(r, p, E_431, NULL, "request head over 64 KiB\n");
			return HEAD_FAILED;
		}
		if (!p->timer.on)
			dp_pub_deadline(r, p, r->cfg->head_timeout_ms, E_408);
		return HEAD_INCOMPLETE;
	}
	if (n < 0) {
		dp_pub_error(r, p, head_error(n), NULL, "%s\n",
			     n == DP_HTTP_TOO_MANY ? "request head too large"
			     : n == DP_HTTP_BAD_TE ? "unsupported transfer coding"
						   : "malformed request");
		return HEAD_FAILED;
	}
	if (q.host == NULL && q.minor == 1) {
		/* RFC 9112 3.2: an HTTP/1.1 request without Host gets 400. HTTP/1.0
		 * predates Host, so such a request is still routed (by its
		 * /session/<id>/ path, else 404): old clients and scripts send it. */
		dp_pub_error(r, p, E_400, NULL, "an HTTP/1.1 request needs a Host header\n");
		return HEAD_FAILED;
	}
	if (p->waiting == 0)
		dp_pub_untime(r, p);
	r->cur_raw = buf;
	r->cur_raw_len = (uint32_t)n;
	out = on_request(r, p, &q);
	r->cur_raw = NULL;
	switch (out) {
	case REQ_FORWARDED: return n;
	case REQ_MOVED:
	case REQ_PARKED: return HEAD_HELD;
	case REQ_LINKED:
		/* Forwarded to another relay: the head as it came, first. */
		if ((seg = dp_seg_copy(&r->io.r, buf, (uint32_t)n)) == DP_NIL) {
			dp_pub_error(r, p, E_503, NULL, "relay out of memory\n");
			return HEAD_FAILED;
		}
		dp_chain_push(&r->io.r, &p->held, seg);
		return n;
	default: return HEAD_FAILED;
	}
}

/* Bytes of a body: how many of n belong to it (phase moves on at its end). */
static size_t body_take(struct relay *r, struct pub *p, const char *ptr, size_t n)
{
	size_t take;
	int done = 0;
	ssize_t k;

	if (p->phase == P_RAW)
		return n;
	if (p->phase == P_BODY_CL) {
		take = n < p->body_left ? n : (size_t)p->body_left;
		p->body_left -= take;
		if (p->body_left == 0)
			p->phase = P_HEAD;
		return take;
	}
	k = dp_chunked_consume(&p->ch, ptr, n, &done);
	if (k < 0) {
		dp_pub_error(r, p, E_400, NULL, "malformed chunked body\n");
		return 0;
	}
	if (done)
		p->phase = P_HEAD;
	return (size_t)k;
}

/* Append to the partial-head buffer: 0, or -E2BIG (too large) or -ENOMEM,
 * answered. */
static int acc_append(struct relay *r, struct pub *p, const char *ptr, size_t n)
{
	if (p->acc.len + n > DP_HTTP_HEAD_MAX + 1) {
		dp_pub_error(r, p, E_431, NULL, "request head over 64 KiB\n");
		return -E2BIG;
	}
	if (sl_buf_append(&p->acc, ptr, n) < 0) {
		dp_pub_error(r, p, E_503, NULL, "relay out of memory\n");
		return -ENOMEM;
	}
	return 0;
}

#define STASH_MAX (8u << 20) /* bytes a moving connection carries at most */

/* Keep bytes of a connection that moves to another worker (in acc, after
 * its head); past STASH_MAX, or out of memory, the connection closes. */
static void stash(struct relay *r, struct pub *p, const char *ptr, size_t n)
{
	if (p->acc.len + n > STASH_MAX || sl_buf_append(&p->acc, ptr, n) < 0)
		dp_conn_close(&r->io, p->slot);
}

/*
 * Request-side bytes of a public connection, as segment seg (ring or heap).
 * Bodies leave from the buffer they arrived in; a head that spans reads is
 * gathered in p->acc.p; whatever follows a body inside the same buffer (a
 * pipelined request) is copied out, the rare case.
 */
void dp_pub_data(struct relay *r, struct pub *p, uint32_t seg)
{
	struct dp_seg *g = &r->io.r.segs[seg];
	char *ptr = g->ptr;
	size_t n = g->len, used;
	int h;

	if (p->link_pending) {
		dp_link_hello(r, p, seg);
		return;
	}
	if (p->phase == P_MOVING || p->phase == P_PARKED) {
		stash(r, p, ptr, n); /* bytes that came before the receive stopped */
		dp_seg_release(&r->io.r, seg);
		return;
	}
	while (n > 0 && p->phase != P_DONE && p->phase != P_MOVING && p->phase != P_PARKED) {
		if (p->phase != P_HEAD) {
			used = body_take(r, p, ptr, n);
			if (p->phase == P_DONE)
				break;
			if (used == n) {
				g->ptr = ptr;
				g->len = (uint32_t)n;
				dp_pub_hold_or_send(r, p, seg);
				return;
			}
			uint32_t part = dp_seg_copy(&r->io.r, ptr, (uint32_t)used);

			if (part != DP_NIL)
				dp_pub_hold_or_send(r, p, part);
			ptr += used;
			n -= used;
			continue;
		}
		if (p->acc.len == 0) {
			h = try_head(r, p, ptr, n);
			if (h == HEAD_INCOMPLETE && acc_append(r, p, ptr, n) == 0)
				n = 0;
			if (h == HEAD_HELD)
				stash(r, p, ptr, n); /* the head and what follows go along */
			if (h <= 0)
				break;
			ptr += h;
			n -= (size_t)h;
			continue;
		}
		if (acc_append(r, p, ptr, n) < 0)
			break;
		n = 0;
		h = try_head(r, p, p->acc.p, p->acc.len);
		if (h <= 0) /* HEAD_HELD: acc already holds the head and what followed */
			break;
		/* The bytes after the head move to a heap segment, handled next. */
		uint32_t restseg = dp_seg_copy(&r->io.r, p->acc.p + h, p->acc.len - (uint32_t)h);

		p->acc.len = 0;
		dp_seg_release(&r->io.r, seg);
		if (restseg == DP_NIL)
			return;
		dp_pub_data(r, p, restseg);
		return;
	}
	dp_seg_release(&r->io.r, seg);
}

/* Where the request's bytes go is settled: the head rewritten for the app
 * (forwarding headers, the /session/<id> prefix gone) goes to t, and the
 * body after it. */
static enum req_outcome forward_request(struct relay *r, struct pub *p, const struct dp_http_req *q,
					struct dp_route *rt)
{
	struct dp_http_client cl = {p->ip, p->ipv6, p->https};
	struct dp_tunnel *t = rt->t;
	const char *rest = rt->rest;
	size_t rest_len = rt->rest_len;
	uint32_t seg;
	int n;

	if (p->t != NULL && (p->t != t || p->epoch != t->epoch))
		dp_pub_detach(r, p);
	if (rest_len == 0 || rest[0] != '/') {
		/* "/session/id" and "/session/id?q" map to "/" and "/?q". */
		r->target[0] = '/';
		memcpy(r->target + 1, rest, rest_len);
		rest_len += 1;
		rest = r->target;
	}
	n = dp_http_upstream_head(q, rest, rest_len, &cl, r->head, sizeof(r->head));
	if (n < 0 || (seg = dp_seg_copy(&r->io.r, r->head, (uint32_t)n)) == DP_NIL) {
		dp_pub_error(r, p, E_503, NULL, "relay out of memory\n");
		return REQ_ANSWERED;
	}
	/* GET, HEAD, OPTIONS without a body, of a cluster session: kept as it
	 * came until answered, so that an agent leaving for another relay
	 * between taking it and answering does not lose it (dp_pub_peer_lost). */
	p->replayable = q->content_length <= 0 && !q->chunked && !q->upgrade &&
			((q->method_len == 3 && memcmp(q->method, "GET", 3) == 0) ||
			 (q->method_len == 4 && memcmp(q->method, "HEAD", 4) == 0) ||
			 (q->method_len == 7 && memcmp(q->method, "OPTIONS", 7) == 0));
	free(p->orig);
	p->orig = NULL;
	if (r->sh->cluster_on && t->managed && p->replayable && p->replays == 0)
		dp_pool_keep_head(r, p);
	r->m.requests++;
	t->requests++;
	p->hops = 0; /* MAX_HOPS bounds the moves of one request, not of a connection */
	p->req_ns = r->io.now_ns;
	if (p->t == NULL) {
		p->t = t;
		p->epoch = t->epoch;
		dp_tunnel_ref(t);
		dp_pub_hold_or_send(r, p, seg);
		dp_pool_acquire(r, p);
	} else {
		dp_pub_hold_or_send(r, p, seg);
	}
	p->phase = q->upgrade		   ? P_RAW
		   : q->chunked		   ? P_BODY_CH
		   : q->content_length > 0 ? P_BODY_CL
					   : P_HEAD;
	p->body_left = q->content_length > 0 ? (uint64_t)q->content_length : 0;
	memset(&p->ch, 0, sizeof(p->ch));
	return REQ_FORWARDED;
}

/* The request cannot go to a tunnel of this worker: act on where it goes
 * instead (another worker, another relay, a wait, or an error page). */
static enum req_outcome follow_route(struct relay *r, struct pub *p, const struct dp_http_req *q,
				     const struct dp_route *rt)
{
	switch (rt->kind) {
	case DP_ROUTE_WORKER: dp_move_public(r, p, rt->worker); return REQ_MOVED;
	case DP_ROUTE_RELAY:
		return dp_link_forward(r, p, &rt->addr, rt->addr_len, rt->sid) == 0 ? REQ_LINKED
										    : REQ_ANSWERED;
	case DP_ROUTE_WAIT: dp_park(r, p); return REQ_PARKED;
	case DP_ROUTE_OFFLINE:
		/* An unverified custom domain says only that (as it would with its
		 * agent here), not whose tunnel it names. */
		if (dp_access_domain(r, p, rt, q) == 0)
			answer_offline(r, p, q, rt);
		return REQ_ANSWERED;
	default: break;
	}
	if (rt->name)
		dp_pub_error(r, p, E_404, NULL, "no tunnel named \"%.*s\" on this relay\n",
			     (int)rt->name_len, rt->name);
	else if (rt->id)
		dp_pub_error(r, p, E_404, NULL, "no tunnel with session id \"%.*s\"\n",
			     (int)rt->id_len, rt->id);
	else
		dp_pub_error(r, p, E_404, NULL,
			     "no tunnel here: use http://<name>.%s/ or /session/<id>/\n",
			     r->cfg->domain);
	return REQ_ANSWERED;
}

/* One parsed request head: routed (dp_relay_route.c), let in (access,
 * then limits), forwarded. */
static enum req_outcome on_request(struct relay *r, struct pub *p, const struct dp_http_req *q)
{
	struct dp_route rt;
	struct dp_tunnel *t;

	if (dp_route_find(r, p, q, &rt) != DP_ROUTE_HERE)
		return follow_route(r, p, q, &rt);
	t = rt.t;
	if (dp_access_check(r, p, &rt, q) < 0)
		return REQ_ANSWERED;
	if (t->ctrl == DP_NIL && !t->lt)
		return follow_route(r, p, q, (dp_route_away(r, p, &rt), &rt));
	switch (dp_limit_request(r, p, t,
				 p->parked_ms && sl_mono_ms() - p->parked_ms >= PARK_MAX_MS)) {
	case DP_LIMIT_WAIT: dp_park(r, p); return REQ_PARKED; /* until its key's lease comes */
	case DP_LIMIT_REFUSED: return REQ_ANSWERED;
	default: p->parked_ms = 0; break;
	}
	return forward_request(r, p, q, &rt);
}

/* A public connection: HTTP (tcp 0) or a TCP tunnel's client (t), or one
 * another relay forwards (link). */
void dp_pub_accept(struct relay *r, int fd, int tcp, int https, struct dp_tunnel *t, int link)
{
	struct pub *p = calloc(1, sizeof(*p));
	uint32_t c;
	int one = 1;

	r->shed_done = 0; /* traffic: the next idle spell sheds again */
	if (p == NULL) {
		close(fd);
		return;
	}
	p->link = DP_NIL;
	p->link_pending = (uint8_t)link;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	p->ipv6 = (uint8_t)sl_peer_ip(fd, p->ip);
	p->held = DP_CHAIN_EMPTY;
	p->tcp = (uint8_t)tcp;
	c = dp_conn_new(&r->io, fd, tcp ? K_PUBLIC_TCP : K_PUBLIC, p);
	if (c == DP_NIL) {
		free(p);
		return;
	}
	p->slot = c;
	p->https = (uint8_t)https;
	if (https && dp_tls_accept(&r->io, c, &r->sh->tls, 1) < 0) {
		dp_conn_close(&r->io, c);
		return;
	}
	if (!tcp) {
		dp_c(&r->io, c)->flags |= DP_C_INTERCEPT;
		dp_pub_deadline(r, p, r->cfg->head_timeout_ms, E_408);
		dp_conn_recv(&r->io, c);
		return;
	}
	r->m.tcp_conns++;
	p->phase = P_RAW;
	p->t = t;
	p->epoch = t->epoch;
	dp_tunnel_ref(t);
	if (t->ctrl == DP_NIL || !dp_acl_ok(t->acl, p->ip, p->ipv6) || dp_limit_tcp(r, t) < 0) {
		dp_conn_close(&r->io, c);
		return;
	}
	dp_pool_acquire(r, p);
}

void dp_pub_closed(struct relay *r, struct dp_conn *s)
{
	struct pub *p = s->owner;

	r->m.bytes_in += s->rx;
	r->m.bytes_out += s->tx;
	dp_pub_untime(r, p);
	if (p->waiting)
		dp_pool_unlink_waiter(r, p);
	if (p->link != DP_NIL) {
		/* Not connected yet: the link has nothing to carry. Paired: the
		 * pump passes the close on. */
		dp_c(&r->io, p->link)->owner = NULL;
		if (dp_c(&r->io, p->link)->peer == DP_NIL)
			dp_conn_close(&r->io, p->link);
	}
	dp_chain_release(&r->io.r, &p->held);
	free(p->orig);
	if (p->t && p->counted) {
		p->t->live--;
		p->t->bytes_in += s->rx;
		p->t->bytes_out += s->tx;
	}
	if (p->t)
		dp_tunnel_unref(p->t);
	sl_buf_free(&p->acc);
	free(p);
}

/*
 * The data connection of public connection c failed or ended. If the client
 * has not had a byte of response yet, it gets a readable 502 instead of a
 * bare close (an agent killed while its idle connections were being handed
 * out, say).
 */
int dp_pub_peer_lost(struct dp_io *io, uint32_t c, int eof)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, c);
	struct pub *p = s->owner;
	uint32_t d = s->peer;

	/* An answer may still sit in the send queue when its FIN arrives (one
	 * send in flight): tx alone would call it unanswered. */
	if (s->kind != K_PUBLIC || s->tx > 0 || p->answered || p->phase == P_DONE ||
	    p->phase == P_RAW)
		return 0;
	s->peer = DP_NIL;
	if (d != DP_NIL) {
		dp_c(io, d)->peer = DP_NIL;
		dp_conn_close(io, d);
	}
	/* An agent leaving for another relay may close a data connection it was
	 * handed a request on before it read it: a request that can be sent
	 * again is, once, wherever its tunnel is now. */
	if (p->replayable && p->replays == 0 && p->orig && p->t && p->t->managed &&
	    r->sh->cluster_on) {
		p->replays++;
		r->m.replays++;
		if (dp_pool_requeue(r, p) == 0)
			return 1;
	}
	dp_pub_error(r, p, E_502, "Retry-After: 5\r\n",
		     eof ? "the agent closed the connection before answering\n"
			 : "the connection to the agent failed before an answer\n");
	return 1;
}

/*
 * HSTS (--hsts SECONDS) on the first response of an HTTPS connection: the
 * header goes in right after the status line. The response side is raw
 * bytes (no parser follows its framing), so later responses on the same
 * connection go as they are; a browser keeps the policy for max-age from
 * one. A first segment without a whole status line (a status line split
 * across reads) goes as it is too, counted. Returns the segment to send in
 * seg's place, or DP_NIL when out of memory.
 */
static uint32_t hsts_insert(struct relay *r, uint32_t seg)
{
	struct dp_seg *g = &r->io.r.segs[seg];
	const char *eol = memchr(g->ptr, '\n', g->len);
	char hdr[64];
	uint32_t at, n, out;

	if (g->sent || g->len < 9 || memcmp(g->ptr, "HTTP/1.", 7) != 0 || eol == NULL) {
		r->m.hsts_skipped++;
		return seg;
	}
	at = (uint32_t)(eol - g->ptr) + 1;
	n = hsts_header(r, hdr, sizeof(hdr));
	if ((out = dp_seg_alloc(&r->io.r, g->len + n)) == DP_NIL)
		return DP_NIL;
	memcpy(r->io.r.segs[out].ptr, g->ptr, at);
	memcpy(r->io.r.segs[out].ptr + at, hdr, n);
	memcpy(r->io.r.segs[out].ptr + at + n, g->ptr + at, g->len - at);
	dp_seg_release(&r->io.r, seg);
	r->m.hsts_added++;
	return out;
}

/* Response bytes from data connection c: the first one after a request head
 * times the request (relay, agent and app together) into the histogram. */
uint32_t dp_pub_forwarded(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, c);
	struct pub *p;
	double ms;

	dp_limit_meter(r, c, len);
	if (s->kind != K_DATA || s->peer == DP_NIL || dp_c(io, s->peer)->kind != K_PUBLIC)
		return seg;
	p = dp_c(io, s->peer)->owner;
	if (!p->answered && p->https && !p->tcp && r->sh->cfg->hsts_max_age && seg != DP_NIL)
		seg = hsts_insert(r, seg);
	p->answered = 1;
	free(p->orig); /* answered: it will not be sent again */
	p->orig = NULL;
	if (p->req_ns == 0)
		return seg;
	ms = (double)(r->io.now_ns - p->req_ns) / 1e6;
	p->req_ns = 0;
	dp_admin_latency(r, ms);
	return seg;
}
