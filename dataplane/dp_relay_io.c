/*
 * dp_relay_io.c: the engine's callbacks (dp_io_ops), each a dispatch on the
 * socket's role (dp_conn.kind) to the file that owns that role.
 */
#include "dp_relay_int.h"

#include <unistd.h>

static void on_data(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, c);

	switch (s->kind) {
	case K_PUBLIC: {
		struct pub *p = s->owner;

		dp_limit_meter(r, c, len); /* request heads and bodies count as they come in */
		if (p->phase == P_DONE)
			dp_seg_release(&io->r, seg);
		else
			dp_pub_data(r, p, seg);
		break;
	}
	case K_AGENT_NEW:
	case K_CTRL: dp_agent_data(r, c, seg); break;
	case K_ADMIN: dp_admin_data(r, c, seg); break;
	default:
		/* An idle data connection must stay silent until START. */
		dp_seg_release(&io->r, seg);
		dp_conn_close(io, c);
		break;
	}
}

static void on_eof(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = dp_c(io, c);

	if (s->kind == K_PUBLIC && s->peer != DP_NIL) {
		dp_conn_shutdown(io, s->peer); /* half-close toward the app */
		if (s->flags & DP_C_SHUT)
			dp_conn_close(io, c);
		return;
	}
	if (s->kind == K_PUBLIC && ((struct pub *)s->owner)->waiting)
		return; /* the FIN is passed on once a data connection is attached */
	dp_conn_close(io, c);
}

static void on_accept(struct dp_io *io, uint32_t l, int fd)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, l);

	switch (s->kind) {
	case K_LISTEN_HTTP: dp_pub_accept(r, fd, 0, 0, NULL, 0); break;
	case K_LISTEN_HTTPS: dp_pub_accept(r, fd, 0, 1, NULL, 0); break;
	case K_LISTEN_TCP: dp_pub_accept(r, fd, 1, 0, s->owner, 0); break;
	case K_LISTEN_LINK: dp_pub_accept(r, fd, 0, 0, NULL, 1); break;
	case K_LISTEN_LT: dp_lt_accepted(r, fd, s->owner); break;
	case K_LISTEN_AGENTS: dp_agent_accept(r, fd, K_AGENT_NEW); break;
	case K_LISTEN_ADMIN: dp_agent_accept(r, fd, K_ADMIN); break;
	default: close(fd); break;
	}
}

static void on_close(struct dp_io *io, uint32_t c)
{
	struct relay *r = io->owner;
	struct dp_conn *s = dp_c(io, c);

	switch (s->kind) {
	case K_PUBLIC:
	case K_PUBLIC_TCP: dp_pub_closed(r, s); break;
	case K_AGENT_NEW:
	case K_CTRL:
	case K_DATA:
	case K_ADMIN: dp_agent_closed(r, c, s); break;
	case K_LISTEN_TCP: dp_tunnel_unref(s->owner); break;
	case K_LINK:
		if (s->owner)
			((struct pub *)s->owner)->link = DP_NIL;
		break;
	default: break;
	}
	s->owner = NULL;
}

static void on_wake(struct dp_io *io)
{
	struct relay *r = io->owner;

	dp_inbox_drain(r);
	if (r->sh->state_on)
		dp_sweep_sessions(r);
}

const struct dp_io_ops dp_relay_ops = {
	.on_connect = dp_link_on_connect,
	.on_forwarded = dp_pub_forwarded,
	.on_peer_lost = dp_pub_peer_lost,
	.on_data = on_data,
	.on_eof = on_eof,
	.on_accept = on_accept,
	.on_close = on_close,
	.on_wake = on_wake,
};
