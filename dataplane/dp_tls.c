/*
 * dp_tls.c: wolfSSL over the engine's segments (see dp_tls.h).
 */
#include "dp_tls.h"
#include "dp_aead.h"
#include "dp_conn.h"
#include "dp_tls_accel.h"
#include "sl_log.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/openssl/evp.h>
#include <wolfssl/openssl/x509.h>

#define TLS_READ_CHUNK	   16384 /* one record's plaintext at most */
#define TLS_READS_PER_TURN 64	 /* records delivered per wake-up: fairness */
#define TLS_MAX_SNI	   4096	 /* certificates in --cert-dir at most */

/* DONE: failed, nothing more in either direction. The read side ends on
 * its own (read_done) while the write side goes on: TCP half-close. */
enum tls_state { TLS_HANDSHAKE, TLS_OPEN, TLS_DONE };

/*
 * Ownership: one per TLS socket, owned by its dp_conn slot (freed with it).
 * in holds ciphertext segments not yet consumed by wolfSSL (seg->sent is
 * the consumed part of the head); hold holds plaintext queued before the
 * handshake finished.
 */
struct dp_tls_conn {
	WOLFSSL *ssl;
	struct dp_io *io;
	uint32_t c;
	struct dp_chain in, hold;
	uint8_t state, server, raw_eof, read_done, eof_told, notify_sent, failed, queued;
	uint8_t http;	 /* a public HTTPS socket: plaintext HTTP gets a page (plain_http_to_tls) */
	char error[160]; /* why it failed, for the owner's messages */
};

/* An SNI name and its context; names starting "*." match one label. Ownership: in the store's
 * array; name is malloc'd and freed with the store, ctx reference counted by wolfSSL. */
struct sni_entry {
	char *name;
	WOLFSSL_CTX *ctx;
};

/* Ownership: built by store_load(), released by store_free(); the contexts
 * are reference counted by wolfSSL, so live connections keep theirs. */
struct dp_tls_store {
	WOLFSSL_CTX *def;
	struct sni_entry *sni;
	uint32_t nsni;
};

void dp_tls_global_init(void)
{
	wolfSSL_Init();
}

/* Debian's wolfSSL caches ECC points per thread (FP_ECC): tables of up to
 * 15 points, built for a point used twice. */
void dp_tls_drop_ecc_tables(void)
{
#ifdef FP_ECC
	wc_ecc_fp_free();
#endif
}

void dp_tls_thread_done(void)
{
	dp_tls_drop_ecc_tables();
	dp_aead_thread_done();
}

/* Key exchange groups, best first. X25519 leads (as in OpenSSL and
 * HAProxy): Debian's wolfSSL computes P-256 with generic big-number code and
 * keeps a fixed-point table per point it has used twice (FP_ECC), which cost
 * the agent 8-10 MiB of heap and each handshake more time than X25519
 * (bench/micro/bm_tls.cc). P-256 and P-384 stay for peers without it. */
static int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_SECP384R1};

void dp_tls_ctx_setup(WOLFSSL_CTX *ctx)
{
	if (dp_tls_accel_on() && wolfSSL_CTX_SetDevId(ctx, dp_tls_accel_devid()) != WOLFSSL_SUCCESS)
		sl_warn("tls: the crypto callback device not set; wolfSSL's own AES-GCM serves");
	if (wolfSSL_CTX_set_cipher_list(ctx, dp_tls_accel_ciphers()) != WOLFSSL_SUCCESS)
		sl_warn("tls: cipher preference not applied; wolfSSL's defaults apply");
	if (wolfSSL_CTX_set_groups(ctx, groups, (int)(sizeof(groups) / sizeof(groups[0]))) !=
	    WOLFSSL_SUCCESS)
		sl_warn("tls: key exchange groups not set; wolfSSL's defaults apply");
}

/* ---- I/O callbacks: ciphertext to and from segments ---- */

static int cb_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct dp_tls_conn *t = arg;
	struct dp_ring *r = &t->io->r;
	int n = 0;

	(void)ssl;
	while (n < sz && t->in.head != DP_NIL) {
		struct dp_seg *g = &r->segs[t->in.head];
		uint32_t k = g->len - g->sent;

		if (k > (uint32_t)(sz - n))
			k = (uint32_t)(sz - n);
		memcpy(buf + n, g->ptr + g->sent, k);
		g->sent += k;
		n += (int)k;
		if (g->sent == g->len)
			dp_seg_release(r, dp_chain_pop(r, &t->in));
	}
	if (n > 0)
		return n;
	return t->raw_eof ? WOLFSSL_CBIO_ERR_CONN_CLOSE : WOLFSSL_CBIO_ERR_WANT_READ;
}

static int cb_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct dp_tls_conn *t = arg;
	uint32_t seg = dp_seg_copy(&t->io->r, buf, (uint32_t)sz);

	(void)ssl;
	if (seg == DP_NIL)
		return WOLFSSL_CBIO_ERR_GENERAL;
	dp_conn_queue_raw(t->io, t->c, seg);
	return sz;
}

/* ---- contexts ---- */

static int alpn_select(WOLFSSL *ssl, const unsigned char **out, unsigned char *outlen,
		       const unsigned char *in, unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	/* Only HTTP/1.1 is spoken; a client offering h2 alone continues
	 * without ALPN rather than failing. */
	for (unsigned int i = 0; i < inlen && i + 1u + in[i] <= inlen; i += 1u + in[i]) {
		if (in[i] == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
			*out = in + i + 1;
			*outlen = 8;
			return 0; /* SSL_TLSEXT_ERR_OK */
		}
	}
	return noack_return;
}

/* The relay's server, for the SNI callback (one per process). */
static struct dp_tls_server *sni_server;

static WOLFSSL_CTX *sni_lookup(const struct dp_tls_store *st, const char *name)
{
	const char *dot = strchr(name, '.');

	for (uint32_t i = 0; i < st->nsni; i++)
		if (strcasecmp(st->sni[i].name, name) == 0)
			return st->sni[i].ctx;
	for (uint32_t i = 0; dot && i < st->nsni; i++)
		if (st->sni[i].name[0] == '*' && strcasecmp(st->sni[i].name + 1, dot) == 0)
			return st->sni[i].ctx;
	return NULL;
}

static int sni_cb(WOLFSSL *ssl, int *ret, void *arg)
{
	const char *name = wolfSSL_get_servername(ssl, WOLFSSL_SNI_HOST_NAME);
	WOLFSSL_CTX *ctx;

	(void)arg;
	(void)ret;
	/* Read the store through the server, not arg: a reload may have freed
	 * the store this context was built with. */
	if (name == NULL || sni_server == NULL)
		return 0;
	pthread_rwlock_rdlock(&sni_server->lock);
	if (sni_server->cur && (ctx = sni_lookup(sni_server->cur, name)) != NULL)
		wolfSSL_set_SSL_CTX(ssl, ctx); /* counts a reference: a reload may free the store */
	pthread_rwlock_unlock(&sni_server->lock);
	return 0;
}

/*
 * Does the key belong to the certificate? wolfSSL_CTX_check_private_key()
 * accepts any well-formed ECC key here, so sign with the key and verify with
 * the certificate's public key. 0 yes, -EKEYREJECTED no, -EOPNOTSUPP cannot
 * tell (a key type the EVP layer cannot sign with a digest, e.g. Ed25519:
 * left to the handshake).
 */
static int key_matches(WOLFSSL_CTX *ctx)
{
	WOLFSSL_X509 *x = wolfSSL_CTX_get0_certificate(ctx);
	WOLFSSL_EVP_PKEY *priv = wolfSSL_CTX_get0_privatekey(ctx), *pub = NULL;
	WOLFSSL_EVP_MD_CTX *sign = NULL, *verify = NULL;
	unsigned char msg[32] = "sluice certificate key check", sig[1024];
	size_t siglen = sizeof(sig);
	int ok = -EOPNOTSUPP;

	if (x == NULL || priv == NULL || (pub = wolfSSL_X509_get_pubkey(x)) == NULL)
		return -EOPNOTSUPP;
	if ((sign = wolfSSL_EVP_MD_CTX_new()) == NULL ||
	    (verify = wolfSSL_EVP_MD_CTX_new()) == NULL)
		goto out;
	if (wolfSSL_EVP_DigestSignInit(sign, NULL, wolfSSL_EVP_sha256(), NULL, priv) != 1 ||
	    wolfSSL_EVP_DigestSignUpdate(sign, msg, sizeof(msg)) != 1 ||
	    wolfSSL_EVP_DigestSignFinal(sign, sig, &siglen) != 1)
		goto out;
	ok = wolfSSL_EVP_DigestVerifyInit(verify, NULL, wolfSSL_EVP_sha256(), NULL, pub) == 1 &&
			     wolfSSL_EVP_DigestVerifyUpdate(verify, msg, sizeof(msg)) == 1 &&
			     wolfSSL_EVP_DigestVerifyFinal(verify, sig, siglen) == 1
		     ? 0
		     : -EKEYREJECTED;
out:
	wolfSSL_EVP_MD_CTX_free(sign);
	wolfSSL_EVP_MD_CTX_free(verify);
	wolfSSL_EVP_PKEY_free(pub);
	return ok;
}

/* Why loading path failed, for a person: the file, or its contents. */
static const char *load_error(const char *path)
{
	FILE *f = fopen(path, "re");

	if (f == NULL)
		return strerror(errno);
	fclose(f);
	return "not a valid PEM file";
}

/* Seconds a session ticket the relay issues stays good (wolfSSL's own
 * default is 300 s: an agent up longer than that would make every new data
 * connection a full handshake, 1,000 of them at a burst). It must stay
 * below the lifetime of wolfSSL's ticket keys (one hour from a key's first
 * ticket): at 3600 s every handshake after ~10 s failed. Half of it lets a
 * key issue tickets for 30 minutes that all outlive it. */
static uint32_t ticket_lifetime_s = 1800;

void dp_tls_set_ticket_lifetime(uint32_t seconds)
{
	ticket_lifetime_s = seconds;
}

uint64_t dp_tls_session_lifetime_ms(WOLFSSL_SESSION *sess)
{
	long s = sess ? wolfSSL_SESSION_get_timeout(sess) : 0;

	return s > 0 ? (uint64_t)s * 1000 : 0;
}

static WOLFSSL_CTX *server_ctx(const char *cert, const char *key)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfSSLv23_server_method());

	if (ctx == NULL) {
		sl_error("tls: out of memory");
		return NULL;
	}
	wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2);
	if (wolfSSL_CTX_use_certificate_chain_file(ctx, cert) != WOLFSSL_SUCCESS) {
		sl_error("tls: cannot load certificate %s: %s", cert, load_error(cert));
		goto fail;
	}
	if (wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
		sl_error("tls: cannot load key %s: %s", key, load_error(key));
		goto fail;
	}
	if (wolfSSL_CTX_check_private_key(ctx) != WOLFSSL_SUCCESS ||
	    key_matches(ctx) == -EKEYREJECTED) {
		sl_error("tls: key %s does not match certificate %s", key, cert);
		goto fail;
	}
	wolfSSL_CTX_SetIORecv(ctx, cb_recv);
	wolfSSL_CTX_SetIOSend(ctx, cb_send);
	dp_tls_ctx_setup(ctx);
	wolfSSL_CTX_set_timeout(ctx, ticket_lifetime_s);
	wolfSSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	wolfSSL_CTX_set_servername_callback(ctx, sni_cb);
	return ctx;
fail:
	wolfSSL_CTX_free(ctx);
	return NULL;
}

static void store_free(struct dp_tls_store *st)
{
	if (st == NULL)
		return;
	for (uint32_t i = 0; i < st->nsni; i++) {
		wolfSSL_CTX_free(st->sni[i].ctx);
		free(st->sni[i].name);
	}
	free(st->sni);
	wolfSSL_CTX_free(st->def);
	free(st);
}

/* A certificate pair in dir: NAME.crt with NAME.key; "_." in NAME stands
 * for "*." (a wildcard), as '*' is awkward in file names. */
static int load_sni_entry(struct dp_tls_store *st, const char *dir, const char *file)
{
	size_t n = strlen(file);
	char cert[4096], key[4096];
	struct sni_entry *e;

	if (n <= 4 || strcmp(file + n - 4, ".crt") != 0)
		return 0;
	if (st->nsni == TLS_MAX_SNI) {
		sl_error("tls: more than %d certificates in %s", TLS_MAX_SNI, dir);
		return -E2BIG;
	}
	snprintf(cert, sizeof(cert), "%s/%s", dir, file);
	snprintf(key, sizeof(key), "%s/%.*s.key", dir, (int)(n - 4), file);
	e = realloc(st->sni, (st->nsni + 1) * sizeof(*e));
	if (e == NULL)
		return -ENOMEM;
	st->sni = e;
	e = &st->sni[st->nsni];
	if ((e->ctx = server_ctx(cert, key)) == NULL)
		return -EINVAL;
	if ((e->name = strndup(file, n - 4)) == NULL) {
		wolfSSL_CTX_free(e->ctx);
		return -ENOMEM;
	}
	if (strncmp(e->name, "_.", 2) == 0)
		e->name[0] = '*';
	st->nsni++;
	return 0;
}

static int store_load(const struct dp_tls_server *s, struct dp_tls_store **out)
{
	struct dp_tls_store *st = calloc(1, sizeof(*st));
	struct dirent *de;
	DIR *d = NULL;
	int err = 0;

	if (st == NULL)
		return -ENOMEM;
	if ((st->def = server_ctx(s->cert, s->key)) == NULL) {
		err = -EINVAL;
		goto fail;
	}
	if (s->cert_dir && (d = opendir(s->cert_dir)) == NULL) {
		err = -errno;
		sl_error("tls: cannot open --cert-dir %s: %s", s->cert_dir, strerror(-err));
		goto fail;
	}
	while (d && (de = readdir(d)) != NULL)
		if ((err = load_sni_entry(st, s->cert_dir, de->d_name)) < 0)
			goto fail;
	if (d)
		closedir(d);
	*out = st;
	return 0;
fail:
	if (d)
		closedir(d);
	store_free(st);
	return err;
}

int dp_tls_server_init(struct dp_tls_server *s, const char *cert, const char *key,
		       const char *cert_dir, struct dp_tls_stats *stats)
{
	memset(s, 0, sizeof(*s));
	s->cert = cert;
	s->key = key;
	s->cert_dir = cert_dir;
	s->stats = stats;
	pthread_rwlock_init(&s->lock, NULL);
	sni_server = s;
	return store_load(s, &s->cur);
}

int dp_tls_server_reload(struct dp_tls_server *s)
{
	struct dp_tls_store *st, *old;
	int err = store_load(s, &st);

	if (err < 0) {
		s->stats->reload_failures++;
		return err;
	}
	pthread_rwlock_wrlock(&s->lock);
	old = s->cur;
	s->cur = st;
	pthread_rwlock_unlock(&s->lock);
	store_free(old); /* connections keep their contexts: wolfSSL counts references */
	s->stats->reloads++;
	return 0;
}

void dp_tls_server_free(struct dp_tls_server *s)
{
	store_free(s->cur);
	s->cur = NULL;
	if (sni_server == s)
		sni_server = NULL;
	pthread_rwlock_destroy(&s->lock);
}

uint32_t dp_tls_server_names(const struct dp_tls_server *s)
{
	return s->cur ? s->cur->nsni : 0;
}

WOLFSSL_CTX *dp_tls_client_ctx(const char *ca_file, int insecure)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(wolfSSLv23_client_method());
	int err;

	if (ctx == NULL) {
		sl_error("tls: out of memory");
		return NULL;
	}
	wolfSSL_CTX_SetMinVersion(ctx, WOLFSSL_TLSV1_2);
	wolfSSL_CTX_SetIORecv(ctx, cb_recv);
	wolfSSL_CTX_SetIOSend(ctx, cb_send);
	dp_tls_ctx_setup(ctx);
	if (insecure) {
		wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
		return ctx;
	}
	wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_PEER, NULL);
	err = ca_file ? wolfSSL_CTX_load_verify_locations(ctx, ca_file, NULL)
		      : wolfSSL_CTX_load_system_CA_certs(ctx);
	if (err != WOLFSSL_SUCCESS) {
		sl_error("tls: cannot load --ca %s: %s", ca_file ? ca_file : "(the system store)",
			 ca_file ? load_error(ca_file) : "no CA certificates found");
		wolfSSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

void dp_tls_ctx_free(WOLFSSL_CTX *ctx)
{
	wolfSSL_CTX_free(ctx);
}

/* ---- per connection ---- */

static struct dp_tls_conn *conn_new(struct dp_io *io, uint32_t c, WOLFSSL_CTX *ctx, int server)
{
	struct dp_tls_conn *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	if ((t->ssl = wolfSSL_new(ctx)) == NULL) {
		free(t);
		return NULL;
	}
	t->io = io;
	t->c = c;
	t->in = t->hold = DP_CHAIN_EMPTY;
	t->server = (uint8_t)server;
	wolfSSL_SetIOReadCtx(t->ssl, t);
	wolfSSL_SetIOWriteCtx(t->ssl, t);
	dp_c(io, c)->tls = t;
	return t;
}

WOLFSSL_SESSION *dp_tls_session(struct dp_io *io, uint32_t c)
{
	struct dp_tls_conn *t = dp_c(io, c)->tls;

	return t && t->state == TLS_OPEN ? wolfSSL_get1_session(t->ssl) : NULL;
}

void dp_tls_session_free(WOLFSSL_SESSION *sess)
{
	if (sess)
		wolfSSL_SESSION_free(sess);
}

const char *dp_tls_conn_error(struct dp_io *io, uint32_t c)
{
	struct dp_tls_conn *t = dp_c(io, c)->tls;

	if (t == NULL)
		return NULL;
	if (t->failed)
		return t->error;
	if (t->state == TLS_HANDSHAKE)
		return "connection closed during the TLS handshake";
	return NULL;
}

void dp_tls_conn_free(struct dp_io *io, struct dp_tls_conn *t)
{
	dp_chain_release(&io->r, &t->in);
	dp_chain_release(&io->r, &t->hold);
	wolfSSL_free(t->ssl);
	free(t);
}

int dp_tls_accept(struct dp_io *io, uint32_t c, struct dp_tls_server *s, int http)
{
	struct dp_tls_conn *t;

	pthread_rwlock_rdlock(&s->lock);
	t = s->cur ? conn_new(io, c, s->cur->def, 1) : NULL;
	pthread_rwlock_unlock(&s->lock);
	if (t == NULL)
		return -ENOMEM;
	t->http = (uint8_t)http;
	return 0;
}

static int is_ip(const char *s)
{
	unsigned char b[16];

	return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

static void handshake(struct dp_io *io, struct dp_tls_conn *t);

int dp_tls_connect(struct dp_io *io, uint32_t c, WOLFSSL_CTX *ctx, const char *server_name,
		   WOLFSSL_SESSION *resume)
{
	struct dp_tls_conn *t = conn_new(io, c, ctx, 0);

	if (t == NULL)
		return -ENOMEM;
	if (resume)
		wolfSSL_set_session(t->ssl,
				    resume); /* refused tickets fall back to a full handshake */
	if (server_name && !is_ip(server_name))
		wolfSSL_UseSNI(t->ssl, WOLFSSL_SNI_HOST_NAME, server_name,
			       (unsigned short)strlen(server_name));
	if (server_name && wolfSSL_check_domain_name(t->ssl, server_name) != WOLFSSL_SUCCESS)
		return -ENOMEM;
	handshake(io, t);
	return 0;
}

/* Work for the next turn of the loop, never from inside a caller's call:
 * owners call dp_conn_recv() and dp_conn_send_seg() expecting neither
 * their callbacks nor a freed slot before the call returns. */
static void defer(struct dp_io *io, struct dp_tls_conn *t)
{
	if (!t->queued) {
		t->queued = 1;
		dp_queue_push(&io->tlsq, dp_ud(t->c, dp_c(io, t->c)->gen, DP_OP_NONE));
	}
}

static void fail(struct dp_io *io, struct dp_tls_conn *t, const char *what, int err)
{
	char why[WOLFSSL_MAX_ERROR_SZ];

	if (err == WOLFSSL_CBIO_ERR_CONN_CLOSE)
		snprintf(why, sizeof(why), "connection closed by the peer");
	else
		wolfSSL_ERR_error_string_n((unsigned long)err, why, sizeof(why));
	snprintf(t->error, sizeof(t->error), "%s: %s (%d)", what, why, err);
	if (t->state == TLS_HANDSHAKE)
		io->tls.handshake_failures++;
	else
		io->tls.errors++;
	sl_debug("tls: %s", t->error);
	t->state = TLS_DONE;
	t->failed = 1;
	defer(io, t);
}

/* Encrypt segment seg now (the handshake is done); c takes it. */
static void encrypt_seg(struct dp_io *io, struct dp_tls_conn *t, uint32_t seg)
{
	struct dp_seg *g = &io->r.segs[seg];
	int n = g->len > g->sent ? wolfSSL_write(t->ssl, g->ptr + g->sent, (int)(g->len - g->sent))
				 : 0;

	dp_seg_release(&io->r, seg);
	/* Our send callback never says "would block", so a write is whole or
	 * fails for good. */
	if (n < 0)
		fail(io, t, "write", wolfSSL_get_error(t->ssl, n));
}

static void handshake(struct dp_io *io, struct dp_tls_conn *t)
{
	int r = t->server ? wolfSSL_accept(t->ssl) : wolfSSL_connect(t->ssl);
	uint32_t seg, c = t->c, gen = dp_c(io, c)->gen;

	if (r != WOLFSSL_SUCCESS) {
		int err = wolfSSL_get_error(t->ssl, r);

		if (t->raw_eof && (err == WOLFSSL_ERROR_WANT_READ || err == SOCKET_ERROR_E ||
				   err == SOCKET_PEER_CLOSED_E))
			fail(io, t, "handshake", WOLFSSL_CBIO_ERR_CONN_CLOSE);
		else if (err != WOLFSSL_ERROR_WANT_READ && err != WOLFSSL_ERROR_WANT_WRITE)
			fail(io, t, "handshake", err);
		return;
	}
	t->state = TLS_OPEN;
	io->tls.handshakes++;
	if (wolfSSL_session_reused(t->ssl))
		io->tls.resumed++;
	while ((seg = dp_chain_pop(&io->r, &t->hold)) != DP_NIL) {
		encrypt_seg(io, t, seg);
		if (dp_c(io, c)->tls != t || dp_c(io, c)->gen != gen || t->state != TLS_OPEN)
			return;
	}
	dp_conn_kick(io, c);
}

/* Decrypt and deliver what is buffered while c may receive. */
static void pump(struct dp_io *io, struct dp_tls_conn *t)
{
	uint32_t c = t->c, gen = dp_c(io, c)->gen;
	struct dp_conn *s = dp_c(io, c);

	if (t->state == TLS_HANDSHAKE)
		handshake(io, t);
	for (int i = 0; i < TLS_READS_PER_TURN && t->state == TLS_OPEN && !t->read_done; i++) {
		uint32_t seg;
		int n, err;

		if (s->flags & (DP_C_PAUSED | DP_C_CLOSING) || s->gen != gen)
			return;
		if ((seg = dp_seg_alloc(&io->r, TLS_READ_CHUNK)) == DP_NIL) {
			fail(io, t, "read", MEMORY_E);
			return;
		}
		n = wolfSSL_read(t->ssl, io->r.segs[seg].ptr, TLS_READ_CHUNK);
		if (n > 0) {
			io->r.segs[seg].len = (uint32_t)n;
			dp_conn_deliver(io, c, seg, (uint32_t)n);
			continue;
		}
		dp_seg_release(&io->r, seg);
		err = wolfSSL_get_error(t->ssl, n);
		if (err == WOLFSSL_ERROR_WANT_READ && !t->raw_eof)
			return;
		if (err == WOLFSSL_ERROR_ZERO_RETURN || err == WOLFSSL_ERROR_WANT_READ ||
		    err == SOCKET_PEER_CLOSED_E) {
			/* close_notify, or a FIN without one: either way the
			 * peer has nothing more to say (we may still). */
			t->read_done = 1;
			break;
		}
		fail(io, t, "read", err);
		return;
	}
	if (t->state == TLS_OPEN && !t->read_done) {
		defer(io, t); /* more records wait: the next turn delivers them */
		return;
	}
	if (t->read_done && !t->eof_told && s->gen == gen && !(s->flags & DP_C_CLOSING)) {
		t->eof_told = 1;
		dp_conn_deliver_eof(io, c);
	}
}

/*
 * A TLS record starts with a content type byte (0x16 for a handshake); a
 * request line starts with an upper-case method. A browser sent to
 * https:// on a port given as http:// gets a page saying so, as nginx does,
 * instead of a bare reset.
 */
static int plain_http_to_tls(struct dp_io *io, struct dp_tls_conn *t, uint32_t seg)
{
	static const char resp[] = "HTTP/1.1 400 Bad Request\r\n"
				   "Content-Type: text/plain\r\n"
				   "Content-Length: 49\r\n"
				   "Connection: close\r\n\r\n"
				   "This port speaks HTTPS: use an https:// address.\n";
	const struct dp_seg *g = &io->r.segs[seg];
	uint32_t out;

	if (!t->http || t->state != TLS_HANDSHAKE || t->in.head != DP_NIL || g->len == 0 ||
	    g->ptr[0] < 'A' || g->ptr[0] > 'Z')
		return 0;
	io->tls.handshake_failures++;
	snprintf(t->error, sizeof(t->error), "plaintext HTTP on a TLS port");
	t->state = TLS_DONE;
	dp_seg_release(&io->r, seg);
	if ((out = dp_seg_copy(&io->r, resp, sizeof(resp) - 1)) != DP_NIL)
		dp_conn_queue_raw(io, t->c, out);
	dp_conn_shutdown(io, t->c); /* FIN after the page; the owner sees the EOF */
	return 1;
}

void dp_tls_on_cipher(struct dp_io *io, uint32_t c, uint32_t seg)
{
	struct dp_tls_conn *t = dp_c(io, c)->tls;

	if (plain_http_to_tls(io, t, seg))
		return;
	if (t->state == TLS_DONE) {
		dp_seg_release(&io->r, seg); /* after a failure or the plaintext answer */
		return;
	}
	dp_chain_push(&io->r, &t->in, seg);
	pump(io, t);
}

void dp_tls_on_eof(struct dp_io *io, uint32_t c)
{
	struct dp_tls_conn *t = dp_c(io, c)->tls;

	t->raw_eof = 1;
	if (t->state == TLS_DONE && !t->failed && !t->eof_told) {
		t->eof_told = 1; /* the plaintext answer went out: the client is done */
		dp_conn_deliver_eof(io, c);
		return;
	}
	pump(io, t);
}

void dp_tls_resume(struct dp_io *io, uint32_t c)
{
	struct dp_tls_conn *t = dp_c(io, c)->tls;

	if (t->in.head != DP_NIL || wolfSSL_pending(t->ssl) > 0 || t->raw_eof)
		defer(io, t);
}

void dp_tls_run_deferred(struct dp_io *io)
{
	struct dp_queue q = io->tlsq;

	io->tlsq = (struct dp_queue){0};
	for (uint32_t i = 0; i < q.len; i++) {
		uint32_t c = dp_ud_slot(q.v[i]);
		struct dp_conn *s = dp_c(io, c);
		struct dp_tls_conn *t = s->tls;

		if (s->fd < 0 || s->gen != dp_ud_gen(q.v[i]) || t == NULL ||
		    (s->flags & DP_C_CLOSING))
			continue;
		t->queued = 0;
		if (t->failed)
			dp_conn_fail(io, c);
		else
			pump(io, t);
	}
	free(q.v);
}

void dp_tls_send(struct dp_io *io, uint32_t c, uint32_t seg)
{
	struct dp_tls_conn *t = dp_c(io, c)->tls;

	if (t->state == TLS_HANDSHAKE) {
		dp_chain_push(&io->r, &t->hold, seg);
		return;
	}
	if (t->state != TLS_OPEN) {
		dp_seg_release(&io->r, seg);
		return;
	}
	encrypt_seg(io, t, seg);
}

int dp_tls_close_notify(struct dp_io *io, uint32_t c)
{
	struct dp_tls_conn *t = dp_c(io, c)->tls;

	if (t->state == TLS_HANDSHAKE && t->hold.head != DP_NIL)
		return 1; /* plaintext still waits for the handshake */
	if (t->notify_sent || t->state != TLS_OPEN)
		return 0;
	t->notify_sent = 1;
	wolfSSL_shutdown(t->ssl);
	return dp_c(io, c)->out.head != DP_NIL;
}

int dp_tls_export(struct dp_io *io, struct dp_tls_conn *t, char **in, uint32_t *in_len)
{
	uint32_t n = 0, seg;
	char *buf;

	if (t->hold.head != DP_NIL)
		return -EBUSY;
	for (seg = t->in.head; seg != DP_NIL; seg = io->r.segs[seg].next)
		n += io->r.segs[seg].len - io->r.segs[seg].sent;
	if ((buf = malloc(n ? n : 1)) == NULL)
		return -ENOMEM;
	n = 0;
	while ((seg = dp_chain_pop(&io->r, &t->in)) != DP_NIL) {
		struct dp_seg *g = &io->r.segs[seg];

		memcpy(buf + n, g->ptr + g->sent, g->len - g->sent);
		n += g->len - g->sent;
		dp_seg_release(&io->r, seg);
	}
	*in = buf;
	*in_len = n;
	t->io = NULL;
	t->c = DP_NIL;
	t->queued = 0;
	return 0;
}

void dp_tls_adopt(struct dp_io *io, uint32_t c, struct dp_tls_conn *t, char *in, uint32_t in_len)
{
	uint32_t seg = in_len ? dp_seg_copy(&io->r, in, in_len) : DP_NIL;

	free(in);
	t->io = io;
	t->c = c;
	t->in = t->hold = DP_CHAIN_EMPTY;
	dp_c(io, c)->tls = t;
	if (in_len && seg == DP_NIL) {
		fail(io, t, "adopt", MEMORY_E);
		return;
	}
	if (seg != DP_NIL)
		dp_chain_push(&io->r, &t->in, seg);
	defer(io, t); /* records may wait, decrypted or not */
}

void dp_tls_conn_drop(struct dp_tls_conn *t)
{
	wolfSSL_free(t->ssl);
	free(t);
}
