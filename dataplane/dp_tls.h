/*
 * dp_tls.h: TLS (wolfSSL) on dp_conn sockets, for the agent link and the
 * relay's public HTTPS listener.
 *
 * wolfSSL never touches a socket: its I/O callbacks read ciphertext from the
 * segments the engine received (io_uring buffers or epoll buffers alike) and
 * write ciphertext into heap segments queued on the socket's output queue.
 * Above this layer a TLS socket looks like any other: the owner's on_data
 * gets plaintext, dp_conn_send_seg() takes plaintext, pairs forward, pause
 * and half-close behave the same. What TLS costs is one decrypt and one
 * encrypt copy per byte; plain sockets keep the zero-copy path.
 *
 * Servers hold a certificate store: a default certificate and, from
 * --cert-dir, one per name chosen by SNI. dp_tls_server_reload() builds a new
 * store from the same files and swaps it in only if everything loaded, so a
 * bad file on SIGHUP leaves the old certificates serving. Handshakes under
 * way keep the context they started with (wolfSSL counts references).
 */
#ifndef DP_TLS_H
#define DP_TLS_H

#include <pthread.h>
#include <stdint.h>

struct dp_io;
struct dp_tls_store;
typedef struct WOLFSSL_CTX WOLFSSL_CTX;
typedef struct WOLFSSL_SESSION WOLFSSL_SESSION;

/* Ownership: a value. */
struct dp_tls_stats {
	uint64_t handshakes;	     /* completed */
	uint64_t resumed;	     /* of which resumed a session (no certificate work) */
	uint64_t handshake_failures; /* refused or broken during the handshake */
	uint64_t errors;	     /* fatal errors after the handshake */
	uint64_t reloads, reload_failures;
	/* Records sealed or opened by libcrypto, their bytes, and those handed
	 * back to wolfSSL (dp_tls_accel.h): the engine thread's own counters,
	 * copied in when its figures are taken. */
	uint64_t accel_records, accel_bytes, accel_fallbacks;
};

/*
 * Ownership: one per relay, for its lifetime, shared by its workers (one
 * context for all, so a session ticket from one worker resumes on another).
 * cur is replaced by reloads under lock (readers: accepts and the SNI
 * callback); the paths are borrowed from the configuration.
 */
struct dp_tls_server {
	pthread_rwlock_t lock;
	struct dp_tls_store *cur;
	const char *cert, *key, *cert_dir;
	struct dp_tls_stats *stats;
};

/* Call once per process before any other dp_tls function. */
void dp_tls_global_init(void);
/* Free wolfSSL's per-thread caches (ECC points): in a thread that used TLS
 * before it exits (LeakSanitizer saw them otherwise), or to shed memory
 * when idle; they come back with the next handshake. */
void dp_tls_thread_done(void);
/* Free this thread's ECC tables alone (Debian's wolfSSL builds them for a
 * point used twice: megabytes, without which a full handshake costs both
 * ends 5.5 ms instead of 0.68, bench/micro/bm_tls.cc). For a client whose
 * other connections resume. */
void dp_tls_drop_ecc_tables(void);

/* Load cert/key (and cert_dir, may be NULL). Returns 0 or a negative errno
 * after logging which file failed and why. */
int dp_tls_server_init(struct dp_tls_server *s, const char *cert, const char *key,
		       const char *cert_dir, struct dp_tls_stats *stats);
/* Load the files again; on success the new store serves new connections.
 * Returns 0, or a negative errno with the old store still in place. */
int dp_tls_server_reload(struct dp_tls_server *s);
void dp_tls_server_free(struct dp_tls_server *s);
/* Names served from cert_dir (for logs and tests). */
uint32_t dp_tls_server_names(const struct dp_tls_server *s);

/* What every context gets, server or client: the record crypto
 * dp_tls_accel_init chose (its device, the cipher order that suits it) and
 * the key exchange groups, best first. */
void dp_tls_ctx_setup(WOLFSSL_CTX *ctx);

/* A client context verifying the peer against ca_file (NULL: the system
 * store) unless insecure. Returns NULL after logging why. */
WOLFSSL_CTX *dp_tls_client_ctx(const char *ca_file, int insecure);
void dp_tls_ctx_free(WOLFSSL_CTX *ctx);

/* Make socket c a TLS server on the current store (starts when bytes come).
 * http: a public HTTPS socket, where a plaintext HTTP request gets a 400
 * page saying to use https:// rather than a bare close. */
int dp_tls_accept(struct dp_io *io, uint32_t c, struct dp_tls_server *s, int http);
/* Make connected socket c a TLS client checking the certificate names
 * server_name (also sent as SNI unless it is an IP address); starts the
 * handshake now, resuming session resume if not NULL (a ticket from an
 * earlier connection: no certificate work on either side). Plaintext queued
 * before it completes waits for it. */
int dp_tls_connect(struct dp_io *io, uint32_t c, WOLFSSL_CTX *ctx, const char *server_name,
		   WOLFSSL_SESSION *resume);
/* The session of TLS socket c, to resume later (a counted reference, or
 * NULL); release with dp_tls_session_free(). */
WOLFSSL_SESSION *dp_tls_session(struct dp_io *io, uint32_t c);
/* How long sess (a client's, with its ticket) may be resumed from when it
 * was taken, in ms (0: unknown). */
uint64_t dp_tls_session_lifetime_ms(WOLFSSL_SESSION *sess);
/* The lifetime of the session tickets server contexts made from now on
 * issue (relay: --tls-ticket-lifetime). */
void dp_tls_set_ticket_lifetime(uint32_t seconds);
void dp_tls_session_free(WOLFSSL_SESSION *sess);

/* Why TLS socket c failed or never finished its handshake (for on_close
 * messages), or NULL when it did not fail. */
const char *dp_tls_conn_error(struct dp_io *io, uint32_t c);

/* ---- for dp_conn.c ---- */
struct dp_tls_conn;
/* Ciphertext segment seg arrived on c. */
void dp_tls_on_cipher(struct dp_io *io, uint32_t c, uint32_t seg);
/* The network sent EOF on c. */
void dp_tls_on_eof(struct dp_io *io, uint32_t c);
/* Plaintext segment seg is to be sent on c (c takes it). */
void dp_tls_send(struct dp_io *io, uint32_t c, uint32_t seg);
/* c may receive again: what is already buffered is delivered next turn. */
void dp_tls_resume(struct dp_io *io, uint32_t c);
/* Once per loop turn: deferred deliveries and failures. */
void dp_tls_run_deferred(struct dp_io *io);
/* c's output queue ran empty with a FIN wanted: queue close_notify. Returns 1
 * when it queued something (the FIN waits for it), 0 when the FIN may go. */
int dp_tls_close_notify(struct dp_io *io, uint32_t c);
void dp_tls_conn_free(struct dp_io *io, struct dp_tls_conn *t);
/* Detach t from its worker: buffered ciphertext into a malloc'd copy.
 * Returns 0, -EBUSY (plaintext still waits for the handshake) or -ENOMEM. */
int dp_tls_export(struct dp_io *io, struct dp_tls_conn *t, char **in, uint32_t *in_len);
/* Attach t to socket c of this worker, with the ciphertext from the export
 * (taken; freed here), and deliver what it holds on the next turn. */
void dp_tls_adopt(struct dp_io *io, uint32_t c, struct dp_tls_conn *t, char *in, uint32_t in_len);
/* Free t with no worker (an export that was never adopted). */
void dp_tls_conn_drop(struct dp_tls_conn *t);

#endif
