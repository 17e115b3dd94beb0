/*
 * dp_export.c: a socket moved to another worker (another ring). It may
 * leave once nothing of it is in flight here and its output queue is empty;
 * the export keeps the fd and the TLS state with the ciphertext not yet
 * decrypted, and the other worker adopts it into a slot of its own.
 */
#include "dp_conn_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int dp_conn_can_export(struct dp_io *io, uint32_t c)
{
	struct dp_conn *s = &io->conns[c];

	/* epoll never has anything in flight: inflight stays 0 there. */
	return !(s->flags & (DP_C_CLOSING | DP_C_SENDING)) && s->out.head == DP_NIL &&
	       s->inflight == 0;
}

int dp_conn_export(struct dp_io *io, uint32_t c, struct dp_export *out)
{
	struct dp_conn *s = &io->conns[c];
	int err;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	if (!dp_conn_can_export(io, c))
		return -EBUSY;
	if (s->tls) {
		err = dp_tls_export(io, s->tls, &out->tls_in, &out->tls_in_len);
		if (err == -ENOMEM)
			dp_conn_close(io, c);
		if (err < 0)
			return err;
		out->tls = s->tls;
		s->tls = NULL;
	}
	io->be->del(io, c);
	out->fd = s->fd;
	io->stats.exported++;
	dp_conn_release_slot(io, c, 1);
	return 0;
}

void dp_export_drop(struct dp_export *ex)
{
	if (ex->tls)
		dp_tls_conn_drop(ex->tls);
	free(ex->tls_in);
	if (ex->fd >= 0)
		close(ex->fd);
	memset(ex, 0, sizeof(*ex));
	ex->fd = -1;
}

uint32_t dp_conn_adopt(struct dp_io *io, struct dp_export *ex, uint8_t kind, void *owner)
{
	uint32_t c = dp_conn_new(io, ex->fd, kind, owner);

	ex->fd = -1; /* dp_conn_new took it, or closed it */
	if (c == DP_NIL) {
		dp_export_drop(ex);
		return DP_NIL;
	}
	io->stats.adopted++;
	if (ex->tls)
		dp_tls_adopt(io, c, ex->tls, ex->tls_in, ex->tls_in_len);
	else
		free(ex->tls_in);
	memset(ex, 0, sizeof(*ex));
	ex->fd = -1;
	return c;
}
