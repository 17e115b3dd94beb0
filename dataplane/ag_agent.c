/*
 * ag_agent.c: the agent (see ag_agent.h). It shares the relay's engine
 * (dp_conn.c): a stream is a data connection paired with a local connection,
 * and bytes move between them without copies, as in the relay.
 *
 * Reconnects keep the URL: the agent resumes its session (id and epoch) and
 * asks for the name it had, so even a relay that restarted and forgot the
 * session gives the same http://<name>.<domain>/ back.
 */
#include "ag_agent.h"
#include "dp_conn.h"
#include "dp_http.h"
#include "dp_tls.h"
#include "sl_heap.h"
#include "sl_log.h"
#include "sl_time.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

enum { K_CTRL = 1, K_DATA, K_LOCAL };

enum { S_DOWN = 0, S_CONNECTING, S_HELLO, S_BOUND };

#define DCONN_START_MAX 512 /* a longer START is refused (it would be a new protocol version) */

#define SRV(a) (&(a)->cfg->servers[(a)->cur])

/* Data connection states. */
enum { D_CONNECTING = 0, D_IDLE, D_LOCAL, D_ACTIVE };

/* Per data connection; freed in on_close. */
struct dconn {
	uint8_t state;
	uint64_t born_ms;     /* its TLS handshake began (its ticket is about as old) */
	uint32_t local;	      /* slot of the local connection, or DP_NIL */
	struct dp_chain held; /* bytes after START, until the local side connects */
	uint32_t len;
	char buf[DCONN_START_MAX]; /* START is small: an address, a type, a length */
};

/* Ownership: the agent's one instance, calloc'd by ag_run and freed by it
 * once its loop has closed every socket (dp_io_close_all). */
struct agent {
	struct dp_io io;
	const struct ag_config *cfg;
	int state;
	uint32_t ctrl;
	char name[PR_NAME_MAX], sid[PR_SESSION_MAX], key[PR_KEY_MAX], url[PR_URL_MAX];
	uint64_t epoch;
	uint32_t hb_ms;
	uint32_t ndata, nidle; /* data connections, and those idle or connecting */
	uint64_t now_ms, last_rx_ms, last_ping_ms, reconnect_at_ms, next_status_ms;
	uint64_t next_shed_ms; /* shed_memory() */
	uint32_t backoff_ms;
	uint32_t cur; /* the relay in use: cfg->servers[cur] */
	int ever_bound, fatal;
	uint32_t clen;
	char cbuf[PR_FRAME_HDR + PR_FRAME_MAX];
	uint64_t streams, bytes_in, bytes_out;
	char last_error[160];
	/* The control connection's TLS session: data connections resume it
	 * (no certificate work on either side). Refreshed at every BOUND, and
	 * from a data connection once half its lifetime is gone. */
	WOLFSSL_SESSION *tls_session;
	uint64_t tls_session_ms; /* when it was taken */
};

/* ---- output: JSON events, a status line, or log lines ---- */

static void event(struct agent *a, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* One JSON event per line; fmt adds fields (already JSON) after "event". */
static void event(struct agent *a, const char *name, const char *fmt, ...)
{
	char fields[1024] = "", tunnel[96] = "";
	va_list ap;

	if (!a->cfg->json)
		return;
	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(fields, sizeof(fields), fmt, ap);
		va_end(ap);
	}
	/* A label is letters, digits, '-' and '_' (ag_tunnels.c): no escaping. */
	if (a->cfg->label)
		snprintf(tunnel, sizeof(tunnel), ",\"tunnel\":\"%s\"", a->cfg->label);
	printf("{\"event\":\"%s\"%s%s%s}\n", name, tunnel, fields[0] ? "," : "", fields);
	fflush(stdout);
}

static void set_error(struct agent *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_error(struct agent *a, const char *fmt, ...)
{
	char esc[400];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(a->last_error, sizeof(a->last_error), fmt, ap);
	va_end(ap);
	sl_warn("%s", a->last_error);
	n = sl_json_escape(esc, sizeof(esc), a->last_error, strlen(a->last_error), NULL);
	event(a, "error", "\"message\":\"%.*s\"", (int)n, esc);
}

static void status_line(struct agent *a)
{
	if (!a->cfg->status_line || a->now_ms < a->next_status_ms)
		return;
	a->next_status_ms = a->now_ms + 1000;
	printf("\r\033[K%s  %s  streams %llu  in %llu B  out %llu B  open %u%s%s",
	       a->state == S_BOUND ? "online" : "offline", a->url[0] ? a->url : "-",
	       (unsigned long long)a->streams, (unsigned long long)a->bytes_in,
	       (unsigned long long)a->bytes_out, a->ndata - a->nidle,
	       a->last_error[0] ? "  last error: " : "", a->last_error);
	fflush(stdout);
}

/* ---- frames ---- */

static int new_socket(struct agent *a, int family)
{
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)a;
	return fd;
}

/* ---- data connections ---- */

static void open_data(struct agent *a)
{
	struct dconn *d;
	uint32_t c;
	int fd;

	if (a->state != S_BOUND || a->ndata >= a->cfg->max_data)
		return;
	if ((fd = new_socket(a, SRV(a)->addr.ss_family)) < 0)
		return;
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		close(fd);
		return;
	}
	d->local = DP_NIL;
	d->held = DP_CHAIN_EMPTY;
	c = dp_conn_new(&a->io, fd, K_DATA, d);
	if (c == DP_NIL) {
		free(d);
		return;
	}
	a->ndata++;
	a->nidle++;
	dp_conn_connect(&a->io, c, (struct sockaddr *)&SRV(a)->addr, SRV(a)->len);
}

static void refill_pool(struct agent *a)
{
	/* Bounded by the pool size: each call opens at most that many. */
	for (uint32_t i = a->nidle; i < a->cfg->pool; i++)
		open_data(a);
}

/*
 * The session data connections resume is a ticket, good for the relay's
 * --tls-ticket-lifetime; past it each new data connection would be a full
 * handshake (certificate verified, signed, 1,000 of them at a burst). Every
 * handshake brings a new ticket (it precedes START on data connection c), so
 * once the stored one is half way the agent takes c's instead, when c is
 * younger (a pool connection may have waited for hours).
 */
static void refresh_session(struct agent *a, uint32_t c, const struct dconn *d)
{
	WOLFSSL_SESSION *sess;

	if (a->tls_session == NULL || d->born_ms <= a->tls_session_ms ||
	    a->now_ms - a->tls_session_ms < dp_tls_session_lifetime_ms(a->tls_session) / 2 ||
	    (sess = dp_tls_session(&a->io, c)) == NULL)
		return;
	dp_tls_session_free(a->tls_session);
	a->tls_session = sess;
	a->tls_session_ms = d->born_ms;
	sl_debug("tls: the session ticket renewed from a data connection");
}

/* START arrived on data connection c: connect to the local service. */
static void start_stream(struct agent *a, uint32_t c, struct dconn *d)
{
	uint32_t l;
	int fd;

	refresh_session(a, c, d);
	fd = new_socket(a, a->cfg->local.ss_family);

	d->state = D_LOCAL;
	a->nidle--;
	a->streams++;
	refill_pool(a);
	if (fd < 0 || (l = dp_conn_new(&a->io, fd, K_LOCAL, NULL)) == DP_NIL) {
		dp_conn_close(&a->io, c);
		return;
	}
	d->local = l;
	dp_c(&a->io, l)->owner = (void *)(uintptr_t)c;
	dp_conn_pause(&a->io, c);
	dp_conn_connect(&a->io, l, (struct sockaddr *)&a->cfg->local, a->cfg->local_len);
}

/* How many more bytes the START frame being read needs (0: it is whole). */
static int start_needs(const struct dconn *d)
{
	int n;

	if (d->len < PR_FRAME_HDR)
		return PR_FRAME_HDR - (int)d->len;
	n = pr_frame_len(d->buf, d->len);
	if (n < 0)
		return n;
	if (n > 0)
		return 0;
	return (int)(PR_FRAME_HDR + ((uint32_t)(unsigned char)d->buf[0] << 24 |
				     (uint32_t)(unsigned char)d->buf[1] << 16 |
				     (uint32_t)(unsigned char)d->buf[2] << 8 |
				     (unsigned char)d->buf[3])) -
	       (int)d->len;
}

/*
 * Bytes on a data connection. Before START only the frame's own bytes are
 * copied out; what follows it (the start of the request) stays in the ring
 * buffer and is held, untouched, until the local side connects.
 */
static void data_bytes(struct agent *a, uint32_t c, struct dconn *d, uint32_t seg)
{
	struct dp_seg *g = &a->io.r.segs[seg];
	struct pr_msg m;
	int need;

	if (d->state != D_IDLE) {
		dp_chain_push(&a->io.r, &d->held,
			      seg); /* bytes after START while the local side connects */
		return;
	}
	while ((need = start_needs(d)) > 0 && g->len > 0 &&
	       d->len + (uint32_t)need <= sizeof(d->buf)) {
		uint32_t take = (uint32_t)need < g->len ? (uint32_t)need : g->len;

		memcpy(d->buf + d->len, g->ptr, take);
		d->len += take;
		g->ptr += take;
		g->len -= take;
	}
	if (need > 0) {
		dp_seg_release(&a->io.r, seg);
		return;
	}
	if (need < 0 || d->len > sizeof(d->buf) ||
	    pr_decode(d->buf + PR_FRAME_HDR, d->len - PR_FRAME_HDR, &m) < 0 || m.type != PR_START) {
		dp_seg_release(&a->io.r, seg);
		dp_conn_close(&a->io, c);
		return;
	}
	if (g->len > 0)
		dp_chain_push(&a->io.r, &d->held, seg);
	else
		dp_seg_release(&a->io.r, seg);
	d->len = 0;
	start_stream(a, c, d);
}

/* The local service answered the connect for data connection c. */
static void local_connected(struct agent *a, uint32_t l, int res)
{
	uint32_t c = (uint32_t)(uintptr_t)dp_c(&a->io, l)->owner, seg;
	struct dconn *d = dp_c(&a->io, c)->owner;
	char resp[512];
	int n;

	dp_c(&a->io, l)->owner = NULL;
	if (res < 0) {
		set_error(a, "local service %s: %s", a->cfg->local_text, strerror(-res));
		d->local = DP_NIL;
		dp_conn_close(&a->io, l);
		if (a->cfg->proto == PR_PROTO_HTTP) {
			snprintf(resp, 256,
				 "sluice agent: the local service at %s refused the connection "
				 "(%s)\n",
				 a->cfg->local_text, strerror(-res));
			n = dp_http_response(502, NULL, resp, resp + 256, sizeof(resp) - 256);
			if (n > 0)
				dp_conn_send(&a->io, c, resp + 256, (uint32_t)n);
			dp_conn_shutdown(&a->io, c);
		} else {
			dp_conn_close(&a->io, c);
		}
		return;
	}
	d->state = D_ACTIVE;
	dp_c(&a->io, c)->flags &= (uint16_t)~DP_C_INTERCEPT;
	dp_conn_pair(&a->io, c, l);
	while ((seg = dp_chain_pop(&a->io.r, &d->held)) != DP_NIL)
		dp_conn_forward(&a->io, c, l, seg);
	if (dp_c(&a->io, c)->flags & DP_C_EOF)
		dp_conn_shutdown(&a->io, l);
	else
		dp_conn_recv(&a->io, c);
	dp_conn_recv(&a->io, l);
}

static void data_connected(struct agent *a, uint32_t c, int res)
{
	struct pr_msg m = {.type = PR_DATA_HELLO, .version = PR_VERSION};

	if (res < 0 || a->state != S_BOUND) {
		dp_conn_close(&a->io, c);
		return;
	}
	((struct dconn *)dp_c(&a->io, c)->owner)->state = D_IDLE;
	((struct dconn *)dp_c(&a->io, c)->owner)->born_ms = a->now_ms;
	if (a->cfg->tls &&
	    dp_tls_connect(&a->io, c, a->cfg->tls, (a->cfg->verify_name ? SRV(a)->tls_name : NULL),
			   a->tls_session) < 0) {
		dp_conn_close(&a->io, c);
		return;
	}
	m.epoch = a->epoch;
	snprintf(m.session, sizeof(m.session), "%s", a->sid);
	snprintf(m.key, sizeof(m.key), "%s", a->key);
	dp_conn_send_msg(&a->io, c, &m);
	dp_c(&a->io, c)->flags |= DP_C_INTERCEPT;
	dp_conn_recv(&a->io, c);
}

/* ---- the control connection ---- */

static void schedule_reconnect(struct agent *a, const char *why)
{
	uint32_t jitter;
	uint64_t delay;

	if (getrandom(&jitter, sizeof(jitter), 0) != sizeof(jitter))
		jitter = 0;
	/* Exponential backoff with jitter: 50% to 150% of the current step. */
	delay = a->backoff_ms / 2 + jitter % (a->backoff_ms + 1);
	a->reconnect_at_ms = a->now_ms + delay;
	a->backoff_ms = a->backoff_ms * 2 > a->cfg->backoff_max_ms ? a->cfg->backoff_max_ms
								   : a->backoff_ms * 2;
	sl_info("reconnecting in %llu ms (%s)", (unsigned long long)delay, why);
	event(a, "reconnecting", "\"in_ms\":%llu", (unsigned long long)delay);
}

static void close_idle_data(struct agent *a)
{
	for (uint32_t i = 0; i < a->io.nconns; i++) {
		struct dp_conn *s = &a->io.conns[i];

		if (s->fd >= 0 && s->kind == K_DATA && ((struct dconn *)s->owner)->state <= D_IDLE)
			dp_conn_close(&a->io, i);
	}
}

static void ctrl_lost(struct agent *a, const char *why)
{
	a->state = S_DOWN;
	a->ctrl = DP_NIL;
	a->clen = 0;
	close_idle_data(a);
	if (a->cfg->nservers > 1) {
		/* The next relay resumes the session: any relay serves any tunnel. */
		a->cur = (a->cur + 1) % a->cfg->nservers;
		dp_tls_session_free(a->tls_session); /* another relay's: no resumption */
		a->tls_session = NULL;
		sl_info("next relay: %s", SRV(a)->text);
	}
	if (!a->fatal)
		schedule_reconnect(a, why);
}

static void connect_ctrl(struct agent *a)
{
	int fd = new_socket(a, SRV(a)->addr.ss_family);

	a->reconnect_at_ms = 0;
	if (fd < 0 || (a->ctrl = dp_conn_new(&a->io, fd, K_CTRL, NULL)) == DP_NIL) {
		a->ctrl = DP_NIL;
		schedule_reconnect(a, "no socket");
		return;
	}
	a->state = S_CONNECTING;
	dp_conn_connect(&a->io, a->ctrl, (struct sockaddr *)&SRV(a)->addr, SRV(a)->len);
}

static void ctrl_connected(struct agent *a, uint32_t c, int res)
{
	struct pr_msg m = {.type = PR_HELLO, .version = PR_VERSION};

	if (res < 0) {
		set_error(a, "relay %s: %s", SRV(a)->text, strerror(-res));
		dp_conn_close(&a->io, c);
		return;
	}
	if (a->cfg->tls &&
	    dp_tls_connect(&a->io, c, a->cfg->tls, (a->cfg->verify_name ? SRV(a)->tls_name : NULL),
			   a->tls_session) < 0) {
		set_error(a, "relay %s: TLS set-up failed", SRV(a)->text);
		dp_conn_close(&a->io, c);
		return;
	}
	m.proto = a->cfg->proto;
	m.epoch = a->epoch;
	snprintf(m.token, sizeof(m.token), "%s", a->cfg->token ? a->cfg->token : "");
	snprintf(m.name, sizeof(m.name), "%s", a->name);
	snprintf(m.session, sizeof(m.session), "%s", a->sid);
	dp_conn_send_msg(&a->io, c, &m);
	a->state = S_HELLO;
	a->last_rx_ms = a->last_ping_ms = a->now_ms;
	dp_conn_recv(&a->io, c);
}

static void on_bound(struct agent *a, const struct pr_msg *m)
{
	int again = a->ever_bound && strcmp(a->url, m->url) == 0;
	WOLFSSL_SESSION *sess = a->cfg->tls ? dp_tls_session(&a->io, a->ctrl) : NULL;

	if (sess) {
		dp_tls_session_free(a->tls_session);
		a->tls_session = sess;
		a->tls_session_ms = a->now_ms;
		/* The one full handshake of a steady agent is done, and its data
		 * connections resume with X25519: no ECC table serves them. A
		 * burst of full ones (tickets refused) builds them again, kept
		 * until the agent is idle (shed_memory). 2-3 MiB of RSS. */
		dp_tls_drop_ecc_tables();
	}

	a->state = S_BOUND;
	a->epoch = m->epoch;
	a->hb_ms = m->heartbeat_ms ? m->heartbeat_ms : 6667;
	a->backoff_ms = 250;
	a->last_error[0] = '\0';
	snprintf(a->name, sizeof(a->name), "%s", m->name);
	snprintf(a->sid, sizeof(a->sid), "%s", m->session);
	snprintf(a->key, sizeof(a->key), "%s", m->key);
	snprintf(a->url, sizeof(a->url), "%s", m->url);
	if (!a->ever_bound)
		event(a, "ready", "\"url\":\"%s\",\"session\":\"%s\",\"name\":\"%s\"", a->url,
		      a->sid, a->name);
	else
		event(a, "reconnected", "\"url\":\"%s\",\"same_url\":%s", a->url,
		      again ? "true" : "false");
	sl_info("%s %s (session %s)", a->ever_bound ? "back online at" : "online at", a->url,
		a->sid);
	a->ever_bound = 1;
	refill_pool(a);
}

/* Refusals that retrying cannot fix end the agent. */
static void on_refused(struct agent *a, const struct pr_msg *m)
{
	if (m->code == PR_E_REPLACED) {
		/* Another agent holds the name now: reconnecting would take it back
		 * and start a fight, so this one stops and says why. */
		set_error(a, "replaced: %s; this agent stops", m->text);
		a->fatal = -ECONNABORTED;
		return;
	}
	set_error(a, "relay refused: %s", m->text);
	if (m->code == PR_E_AUTH || m->code == PR_E_VERSION || m->code == PR_E_NAME_INVALID ||
	    (m->code == PR_E_NAME_TAKEN && !a->ever_bound))
		a->fatal = -EACCES;
}

static void ctrl_frame(struct agent *a, uint32_t c, const struct pr_msg *m)
{
	struct pr_msg pong = {.type = PR_PONG};

	switch (m->type) {
	case PR_BOUND: on_bound(a, m); break;
	case PR_ERROR: on_refused(a, m); break;
	case PR_OPEN:
		/* Bounded by max_data inside open_data. */
		for (uint32_t i = 0; i < m->count && i < a->cfg->max_data; i++)
			open_data(a);
		break;
	case PR_PING:
		pong.nonce = m->nonce;
		dp_conn_send_msg(&a->io, c, &pong);
		break;
	case PR_GOAWAY:
		sl_info("relay asks us to go away: %s", m->text);
		a->backoff_ms = 250;
		dp_conn_close(&a->io, c);
		break;
	default: break;
	}
}

/* Decode and act on every whole frame in cbuf; returns -1 on a bad length. */
static int ctrl_frames(struct agent *a, uint32_t c)
{
	struct pr_msg m;
	int n;

	while ((n = pr_frame_len(a->cbuf, a->clen)) > 0 && a->ctrl == c) {
		int bad = pr_decode(a->cbuf + PR_FRAME_HDR, (size_t)n - PR_FRAME_HDR, &m) < 0;

		memmove(a->cbuf, a->cbuf + n, a->clen - (uint32_t)n);
		a->clen -= (uint32_t)n;
		if (!bad)
			ctrl_frame(a, c, &m);
		/* else: a newer relay's message we cannot read; skip it */
	}
	return n < 0 ? -1 : 0;
}

/* A read can hold many frames: feed the buffer in pieces that fit it. */
static void ctrl_bytes(struct agent *a, uint32_t c, uint32_t seg)
{
	struct dp_seg *g = &a->io.r.segs[seg];
	const char *p = g->ptr;
	uint32_t left = g->len;

	a->last_rx_ms = a->now_ms;
	while (left > 0 && a->ctrl == c) {
		uint32_t take = (uint32_t)sizeof(a->cbuf) - a->clen;

		take = take < left ? take : left;
		memcpy(a->cbuf + a->clen, p, take);
		a->clen += take;
		p += take;
		left -= take;
		if (ctrl_frames(a, c) < 0 || (take == 0 && a->clen == sizeof(a->cbuf))) {
			dp_conn_close(&a->io, c);
			break;
		}
	}
	dp_seg_release(&a->io.r, seg);
}

/* ---- engine callbacks ---- */

static void on_data(struct dp_io *io, uint32_t c, uint32_t seg, uint32_t len)
{
	struct agent *a = io->owner;
	struct dp_conn *s = dp_c(io, c);

	(void)len;
	if (s->kind == K_CTRL)
		ctrl_bytes(a, c, seg);
	else if (s->kind == K_DATA)
		data_bytes(a, c, s->owner, seg);
	else
		dp_seg_release(&io->r, seg);
}

static void on_eof(struct dp_io *io, uint32_t c)
{
	dp_conn_close(io, c);
}

static void on_connect(struct dp_io *io, uint32_t c, int res)
{
	struct agent *a = io->owner;

	switch (dp_c(io, c)->kind) {
	case K_CTRL: ctrl_connected(a, c, res); break;
	case K_DATA: data_connected(a, c, res); break;
	case K_LOCAL: local_connected(a, c, res); break;
	default: break;
	}
}

/* What a person can do about a TLS failure toward the relay. */
static const char *tls_hint(const char *err)
{
	if (strstr(err, "closed"))
		return " (a relay without --cert speaks plaintext: --transport tcp)";
	if (strstr(err, "verify") || strstr(err, "signer"))
		return " (--ca FILE trusts the relay's CA; --insecure skips the check, "
		       "development only)";
	if (strstr(err, "name mismatch"))
		return " (the certificate does not name the relay: --server-name NAME)";
	return "";
}

static void on_close(struct dp_io *io, uint32_t c)
{
	struct agent *a = io->owner;
	struct dp_conn *s = dp_c(io, c);

	if (s->kind == K_CTRL && a->ctrl == c) {
		const char *tls_err = dp_tls_conn_error(io, c);

		if (tls_err && !a->last_error[0])
			set_error(a, "relay %s: TLS: %s%s", SRV(a)->text, tls_err,
				  tls_hint(tls_err));
		else if (!a->cfg->tls && a->state == S_HELLO && !a->last_error[0])
			set_error(a,
				  "relay %s closed the connection without answering (a relay "
				  "with --cert expects TLS: drop --transport tcp)",
				  SRV(a)->text);
		ctrl_lost(a, a->last_error[0] ? a->last_error : "connection to the relay closed");
	} else if (s->kind == K_DATA) {
		struct dconn *d = s->owner;

		a->bytes_in += s->rx;
		a->bytes_out += s->tx;
		a->ndata--;
		if (d->state <= D_IDLE)
			a->nidle--;
		if (d->local != DP_NIL && d->state == D_LOCAL)
			dp_conn_close(io, d->local);
		dp_chain_release(&io->r, &d->held);
		free(d);
	}
	s->owner = NULL;
}

static const struct dp_io_ops agent_ops = {
	.on_data = on_data,
	.on_eof = on_eof,
	.on_connect = on_connect,
	.on_close = on_close,
};

/* ---- loop ---- */

#define SHED_EVERY_MS 5000

/*
 * With no stream open, give memory back: wolfSSL's ECC point cache (a few
 * MiB after handshakes), the receive buffers' pages (a burst touches them
 * all: 4 MiB by default) and the heap that a burst of streams left free
 * (malloc keeps it). An idle agent stays near 6 MiB instead of the peak of
 * its busiest minute (bench/RESULTS.md).
 */
static void shed_memory(struct agent *a)
{
	if (a->now_ms < a->next_shed_ms || a->ndata > a->nidle)
		return;
	a->next_shed_ms = a->now_ms + SHED_EVERY_MS;
	if (a->cfg->tls)
		dp_tls_thread_done();
	dp_ring_shed(&a->io.r);
	sl_heap_trim();
}

static void tick(struct agent *a)
{
	struct pr_msg ping = {.type = PR_PING};

	a->now_ms = sl_mono_ms();
	if (a->state == S_DOWN && a->reconnect_at_ms && a->now_ms >= a->reconnect_at_ms)
		connect_ctrl(a);
	if (a->state == S_BOUND) {
		if (a->now_ms - a->last_rx_ms > 3 * (uint64_t)a->hb_ms) {
			set_error(a, "relay missed three heartbeats");
			dp_conn_close(&a->io, a->ctrl);
		} else if (a->now_ms - a->last_ping_ms >= a->hb_ms) {
			a->last_ping_ms = a->now_ms;
			ping.nonce = a->now_ms;
			dp_conn_send_msg(&a->io, a->ctrl, &ping);
		}
	}
	status_line(a);
	shed_memory(a);
}

int ag_run(const struct ag_config *cfg, volatile sig_atomic_t *stop)
{
	struct agent *a = calloc(1, sizeof(*a));
	int err;

	if (a == NULL)
		return -ENOMEM;
	a->cfg = cfg;
	a->ctrl = DP_NIL;
	a->backoff_ms = 250;
	a->now_ms = sl_mono_ms();
	snprintf(a->name, sizeof(a->name), "%s", cfg->name ? cfg->name : "");
	err = dp_io_init(&a->io, cfg->max_data * 2 + 16, cfg->nbufs, cfg->bufsize, &agent_ops, a,
			 (enum dp_engine)cfg->engine);
	if (err < 0) {
		sl_error("I/O engine set-up failed: %s", strerror(-err));
		free(a);
		return err;
	}
	a->io.splice = cfg->splice;
	connect_ctrl(a);
	while (!*stop && !a->fatal) {
		if ((err = dp_io_run_once(&a->io, 100)) < 0)
			break;
		tick(a);
	}
	if (cfg->status_line)
		printf("\n");
	a->state = S_DOWN;
	a->fatal = a->fatal ? a->fatal : 1; /* no reconnect from here on */
	dp_io_close_all(&a->io, 2000);
	event(a, "closed", NULL);
	err = a->fatal < 0 ? a->fatal : err;
	dp_tls_session_free(a->tls_session);
	dp_io_free(&a->io);
	free(a);
	return err;
}
