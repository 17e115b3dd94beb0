/*
 * dp_relay_link.c: requests that another relay of the cluster serves
 * (docs/cluster.md). The relay a request reached opens a link connection to
 * the relay holding its tunnel, proves itself with a PR_LINK frame signed
 * with the shared secret (who the client is, whether it came over HTTPS),
 * then passes the bytes through both ways; the other relay parses the
 * request as any public connection's.
 */
#include "dp_relay_int.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <time.h>

#include "pr_token.h"

/* Append the bytes p holds for its upstream to acc (a request routed
 * again), releasing them: 0, or -ENOMEM. */
int dp_link_held_to_acc(struct relay *r, struct pub *p)
{
	uint32_t seg;

	while ((seg = dp_chain_pop(&r->io.r, &p->held)) != DP_NIL) {
		struct dp_seg *g = &r->io.r.segs[seg];
		int e = sl_buf_append(&p->acc, g->ptr, g->len);

		dp_seg_release(&r->io.r, seg);
		if (e < 0)
			return e;
	}
	return 0;
}

/* p goes to the relay at addr on a link connection of its own: raw bytes
 * both ways once connected (on_link_connected), the head first, as it came.
 * Returns 0, or a negative errno after an error response. */
int dp_link_forward(struct relay *r, struct pub *p, const struct sockaddr_storage *addr,
		    socklen_t len, const char *sid)
{
	int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
	uint32_t c;

	if (fd < 0 || (c = dp_conn_new(&r->io, fd, K_LINK, p)) == DP_NIL) {
		dp_pub_error(r, p, E_503, NULL, "relay out of sockets\n");
		return fd < 0 ? -errno : -ENFILE;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (p->t != NULL)
		dp_pub_detach(r, p); /* a keep-alive request for a tunnel held elsewhere */
	p->link = c;
	snprintf(p->link_sid, sizeof(p->link_sid), "%s", sid);
	p->phase = P_RAW; /* the other relay parses it: bytes pass as they are */
	dp_conn_pause(&r->io, p->slot);
	dp_pub_deadline(r, p, r->cfg->open_timeout_ms, E_502);
	dp_conn_connect(&r->io, c, (const struct sockaddr *)addr, len);
	r->m.links_out++;
	return 0;
}

/* A forwarded request whose link failed before a byte went out: its bytes
 * back into acc, and parked to be routed again. 0, or -ETIMEDOUT (it waited
 * the open timeout already) or -ENOMEM. */
static int reroute(struct relay *r, struct pub *p)
{
	int e;

	if (p->parked_ms == 0)
		p->parked_ms = sl_mono_ms();
	if (sl_mono_ms() - p->parked_ms >= r->cfg->open_timeout_ms)
		return -ETIMEDOUT;
	p->acc.len = 0;
	if ((e = dp_link_held_to_acc(r, p)) < 0)
		return e;
	dp_park(r, p);
	return 0;
}

/* The link connection c of p is up (or failed): LINK, then p's bytes. */
static void on_link_connected(struct relay *r, uint32_t c, int res)
{
	struct pub *p = dp_c(&r->io, c)->owner;
	const char *key = r->cfg->session_secret;
	struct pr_msg m = {.type = PR_LINK, .version = PR_VERSION};
	uint32_t seg;

	if (p == NULL) {
		dp_conn_close(&r->io, c);
		return;
	}
	m.epoch = (uint64_t)time(NULL);
	m.code = (uint32_t)(p->https | (p->link_hops << 1));
	snprintf(m.text, sizeof(m.text), "%s", p->ip);
	if (res < 0 || pr_link_sign((const uint8_t *)key, strlen(key), m.epoch, m.text, (int)m.code,
				    m.token) < 0) {
		r->m.link_failures++;
		sl_warn("link to the relay holding session %s failed: %s", p->link_sid,
			strerror(res < 0 ? -res : EINVAL));
		dp_cluster_forget(&r->sh->cluster, p->link_sid);
		dp_c(&r->io, c)->owner = NULL;
		p->link = DP_NIL;
		dp_conn_close(&r->io, c);
		/* Nothing went out yet: route the request again (the tunnel is
		 * moving, say), within the open timeout. */
		if (reroute(r, p) < 0)
			dp_pub_error(r, p, E_502, "Retry-After: 1\r\n",
				     "the relay holding this tunnel did not answer; retry\n");
		return;
	}
	dp_conn_send_msg(&r->io, c, &m);
	dp_conn_pair(&r->io, p->slot, c);
	while ((seg = dp_chain_pop(&r->io.r, &p->held)) != DP_NIL)
		dp_conn_send_seg(&r->io, c, seg);
	dp_pub_untime(r, p);
	/* From here on bytes go straight through, both ways. */
	dp_c(&r->io, p->slot)->flags &= (uint16_t)~DP_C_INTERCEPT;
	if (dp_c(&r->io, p->slot)->flags & DP_C_EOF)
		dp_conn_shutdown(&r->io, c);
	else
		dp_conn_recv(&r->io, p->slot);
	dp_conn_recv(&r->io, c);
}

/*
 * The first bytes of a connection from another relay: its PR_LINK frame,
 * proven with the shared secret, says who the client is; what follows is
 * the client's, parsed as any public connection's. Takes seg.
 */
void dp_link_hello(struct relay *r, struct pub *p, uint32_t seg)
{
	struct dp_seg *g = &r->io.r.segs[seg];
	const char *key = r->cfg->session_secret;
	unsigned char ip[16];
	struct pr_msg m;
	uint32_t rest;
	int n, bad;

	n = sl_buf_append(&p->acc, g->ptr, g->len);
	dp_seg_release(&r->io.r, seg);
	if (n < 0 || p->acc.len > DP_HTTP_HEAD_MAX) {
		dp_conn_close(&r->io, p->slot);
		return;
	}
	if ((n = pr_frame_len(p->acc.p, p->acc.len)) == 0)
		return; /* the rest of the frame is on its way */
	bad = n < 0 || pr_decode(p->acc.p + PR_FRAME_HDR, (size_t)n - PR_FRAME_HDR, &m) < 0 ||
	      m.type != PR_LINK || m.version != PR_VERSION || key == NULL ||
	      strlen(m.text) >= sizeof(p->ip) ||
	      (inet_pton(AF_INET, m.text, ip) != 1 && inet_pton(AF_INET6, m.text, ip) != 1) ||
	      pr_link_verify((const uint8_t *)key, strlen(key), m.epoch, m.text, (int)m.code,
			     m.token, (uint64_t)time(NULL)) < 0;
	if (bad) {
		r->m.links_refused++;
		sl_warn("link connection from %s refused: not another relay of this cluster",
			p->ip);
		dp_conn_close(&r->io, p->slot);
		return;
	}
	r->m.links_in++;
	p->link_pending = 0;
	snprintf(p->ip, sizeof(p->ip), "%.45s", m.text);
	p->ipv6 = strchr(p->ip, ':') != NULL;
	p->https = m.code & 1;
	p->link_hops = (uint8_t)((m.code >> 1) + 1);
	rest = p->acc.len - (uint32_t)n;
	p->acc.len = 0;
	if (rest == 0)
		return;
	if ((seg = dp_seg_copy(&r->io.r, p->acc.p + n, rest)) == DP_NIL) {
		dp_pub_error(r, p, E_503, NULL, "relay out of memory\n");
		return;
	}
	dp_pub_data(r, p, seg);
}

/* The engine's on_connect: only link connections connect out. */
void dp_link_on_connect(struct dp_io *io, uint32_t c, int res)
{
	if (dp_c(io, c)->kind == K_LINK)
		on_link_connected(io->owner, c, res);
	else
		dp_conn_close(io, c);
}
