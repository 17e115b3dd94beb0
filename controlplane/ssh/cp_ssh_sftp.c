/*
 * cp_ssh_sftp.c: files to and from a host, never half-written.
 *
 * Upload: hash the source (SHA-256), ask the host whether the target already
 * holds it (then nothing is sent: a second run changes nothing), send it over
 * SFTP to a temporary name, then one remote command checks the hash there,
 * sets owner and mode, and renames it into place (rename(2) is atomic, so a
 * reader sees the old file or the new one). Any failure removes the
 * temporary file, even after the connection was lost (a new one does it).
 * With sudo the file is staged in /tmp and installed from there by root.
 *
 * Download: SFTP into a temporary file beside the local target, hashed as it
 * arrives, compared with the host's own sha256sum, then fsync and rename.
 *
 * SHA-256 comes from OpenSSL here, not wolfCrypt as elsewhere: Debian's
 * wolfSSL has no SHA-NI path and took 42% of a download's CPU (perf), while
 * the control plane links OpenSSL anyway (h2o), whose SHA-256 uses SHA-NI.
 *
 * The SFTP part is a job on a pooled connection like a command: a state
 * machine libssh2's non-blocking SFTP calls drive (each call repeated with
 * the same arguments after LIBSSH2_ERROR_EAGAIN, as libssh2 requires).
 */
#include "ssh/cp_ssh_int.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <libssh2_sftp.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* libssh2 1.10 pipelines a write or read of this size as ~30 KB SFTP
 * packets in flight at once: a bigger buffer is more throughput. */
#define XFER_BUF (2u << 20)

/* Hex digest of ctx into hex (65 bytes); frees ctx. */
static void digest_hex(EVP_MD_CTX *ctx, char *hex)
{
	unsigned char d[EVP_MAX_MD_SIZE];
	unsigned n = 0;

	EVP_DigestFinal_ex(ctx, d, &n);
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; i < n && i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

static EVP_MD_CTX *digest_new(void)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();

	if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

enum sst { S_INIT = 0, S_OPEN, S_DATA, S_CLOSE, S_SHUT, S_DONE };

/* One SFTP transfer. On the caller's stack; buffers its own. */
struct sftp_job {
	struct cp_ssh_job base;
	int upload;
	const char *remote; /* the path opened on the host */
	int fd;		    /* local file, or -1 with mem */
	const unsigned char *mem;
	uint64_t total, done;
	EVP_MD_CTX *hash; /* downloads: hashed as it arrives */
	const struct cp_ssh_xfer *x;
	LIBSSH2_SFTP *sftp;
	LIBSSH2_SFTP_HANDLE *fh;
	char *buf;
	size_t blen, boff;
	int eof;
	enum sst st;
	int pending; /* the error to return once closed (0: none) */
	struct cp_ssh_err perr;
};

static void sftp_lost(struct cp_ssh_job *j)
{
	struct sftp_job *s = (struct sftp_job *)j;

	s->sftp = NULL;
	s->fh = NULL;
}

/* Stop with an error: close what is open first. */
static int sftp_fail(struct sftp_job *s, int rc, enum cp_ssh_kind kind, LIBSSH2_SESSION *ss,
		     const char *what)
{
	if (!s->pending) {
		s->pending = rc;
		if (ss) {
			unsigned long se = s->sftp ? libssh2_sftp_last_error(s->sftp) : 0;

			cp_ssh_err_from(&s->perr, kind, ss, what);
			if (se)
				snprintf(s->perr.msg + strlen(s->perr.msg),
					 sizeof(s->perr.msg) - strlen(s->perr.msg),
					 " (SFTP status %lu%s)", se,
					 se == LIBSSH2_FX_PERMISSION_DENIED ? ": permission denied"
					 : se == LIBSSH2_FX_NO_SUCH_FILE
						 ? ": no such file or directory"
						 : "");
		} else {
			cp_ssh_err_set(&s->perr, kind, "%s", what);
		}
	}
	s->st = s->fh ? S_CLOSE : s->sftp ? S_SHUT : S_DONE;
	return CP_SSH_STEP_MOVED;
}

static int fill(struct sftp_job *s)
{
	size_t want = s->total - s->done < XFER_BUF ? (size_t)(s->total - s->done) : XFER_BUF;
	ssize_t n;

	if (s->mem) {
		memcpy(s->buf, s->mem + s->done, want);
		n = (ssize_t)want;
	} else {
		n = read(s->fd, s->buf, want);
		if (n < 0)
			return -errno;
		if (n == 0 && want)
			return -EIO; /* the file shrank under us */
	}
	s->blen = (size_t)n;
	s->boff = 0;
	return 0;
}

static int data_up(struct sftp_job *s, struct cp_ssh_conn *c)
{
	ssize_t n;

	if (s->boff == s->blen) {
		if (s->done == s->total) {
			s->st = S_CLOSE;
			return CP_SSH_STEP_MOVED;
		}
		if (fill(s) < 0)
			return sftp_fail(s, -EIO, CP_SSH_E_TRANSFER, NULL,
					 "reading the local file");
	}
	n = libssh2_sftp_write(s->fh, s->buf + s->boff, s->blen - s->boff);
	if (n == LIBSSH2_ERROR_EAGAIN)
		return CP_SSH_STEP_AGAIN;
	if (n < 0)
		return sftp_fail(s, cp_ssh_rc_is_fatal((int)n) ? -ECONNRESET : -EIO,
				 CP_SSH_E_TRANSFER, c->s, "writing over SFTP");
	s->boff += (size_t)n;
	s->done += (uint64_t)n;
	return CP_SSH_STEP_MOVED;
}

static int data_down(struct sftp_job *s, struct cp_ssh_conn *c)
{
	ssize_t n = libssh2_sftp_read(s->fh, s->buf, XFER_BUF);

	if (n == LIBSSH2_ERROR_EAGAIN)
		return CP_SSH_STEP_AGAIN;
	if (n < 0)
		return sftp_fail(s, cp_ssh_rc_is_fatal((int)n) ? -ECONNRESET : -EIO,
				 CP_SSH_E_TRANSFER, c->s, "reading over SFTP");
	if (n == 0) {
		s->st = S_CLOSE;
		return CP_SSH_STEP_MOVED;
	}
	EVP_DigestUpdate(s->hash, s->buf, (size_t)n);
	for (ssize_t o = 0; o < n;) {
		ssize_t w = write(s->fd, s->buf + o, (size_t)(n - o));

		if (w < 0)
			return sftp_fail(s, -EIO, CP_SSH_E_TRANSFER, NULL,
					 "writing the local file");
		o += w;
	}
	s->done += (uint64_t)n;
	return CP_SSH_STEP_MOVED;
}

static int step_data(struct sftp_job *s, struct cp_ssh_conn *c)
{
	const struct cp_ssh_xfer *x = s->x;
	uint64_t before = s->done;
	int rc;

	if (x->cancel && __atomic_load_n(x->cancel, __ATOMIC_ACQUIRE))
		return sftp_fail(s, -ECANCELED, CP_SSH_E_CANCELLED, NULL, "transfer cancelled");
	if (s->base.stopping)
		return sftp_fail(s, -ECANCELED, CP_SSH_E_CANCELLED, NULL,
				 "the SSH pool was closed");
	if (s->base.deadline_ms && cp_ssh_now_ms() >= s->base.deadline_ms)
		return sftp_fail(s, -ETIMEDOUT, CP_SSH_E_TIMEOUT, NULL, "transfer timed out");
	rc = s->upload ? data_up(s, c) : data_down(s, c);
	if (s->done != before && x->on_progress)
		x->on_progress(x->arg, s->done, s->total);
	return rc;
}

static int step_open(struct sftp_job *s, struct cp_ssh_conn *c)
{
	unsigned long fl = s->upload ? LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT | LIBSSH2_FXF_EXCL
				     : LIBSSH2_FXF_READ;

	s->fh = libssh2_sftp_open_ex(s->sftp, s->remote, (unsigned)strlen(s->remote), fl, 0600,
				     LIBSSH2_SFTP_OPENFILE);
	if (s->fh) {
		s->base.started = 1;
		s->st = S_DATA;
		return CP_SSH_STEP_MOVED;
	}
	if (libssh2_session_last_errno(c->s) == LIBSSH2_ERROR_EAGAIN)
		return CP_SSH_STEP_AGAIN;
	return sftp_fail(s, -EIO, CP_SSH_E_TRANSFER, c->s,
			 s->upload ? "creating the remote file" : "opening the remote file");
}

static int sftp_step(struct cp_ssh_job *j, struct cp_ssh_conn *c)
{
	struct sftp_job *s = (struct sftp_job *)j;
	int rc;

	switch (s->st) {
	case S_INIT:
		s->sftp = libssh2_sftp_init(c->s);
		if (s->sftp) {
			s->st = S_OPEN;
			return CP_SSH_STEP_MOVED;
		}
		if (libssh2_session_last_errno(c->s) == LIBSSH2_ERROR_EAGAIN)
			return CP_SSH_STEP_AGAIN;
		return sftp_fail(s, -EIO, CP_SSH_E_CHANNEL, c->s,
				 "starting SFTP (is the sftp subsystem enabled in sshd?)");
	case S_OPEN: return step_open(s, c);
	case S_DATA: return step_data(s, c);
	case S_CLOSE:
		rc = libssh2_sftp_close_handle(s->fh);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return CP_SSH_STEP_AGAIN;
		s->fh = NULL;
		if (rc < 0 && !s->pending)
			sftp_fail(s, -EIO, CP_SSH_E_TRANSFER, c->s, "closing the remote file");
		s->st = S_SHUT;
		return CP_SSH_STEP_MOVED;
	case S_SHUT:
		rc = libssh2_sftp_shutdown(s->sftp);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return CP_SSH_STEP_AGAIN;
		s->sftp = NULL;
		s->st = S_DONE;
		return CP_SSH_STEP_MOVED;
	case S_DONE: break;
	}
	if (s->pending)
		j->err = s->perr;
	return s->pending;
}

/* Run one SFTP transfer job; 0 or negative errno with err filled. */
static int sftp_run(struct cp_ssh_pool *pool, struct sftp_job *s, struct cp_ssh_err *err)
{
	int rc;

	s->buf = malloc(XFER_BUF);
	if (!s->buf) {
		cp_ssh_err_set(err, CP_SSH_E_TRANSFER, "out of memory");
		return -ENOMEM;
	}
	s->base.step = sftp_step;
	s->base.lost = sftp_lost;
	if (s->x->timeout_ms > 0)
		s->base.deadline_ms = cp_ssh_now_ms() + s->x->timeout_ms;
	double t0 = sl_mono_ms_f();

	rc = cp_ssh_pool_exec_job(pool, &s->base, NULL);
	cp_ssh_pool_record(pool, sl_mono_ms_f() - t0, rc < 0, s->done);
	free(s->buf);
	if (rc < 0)
		*err = s->base.err;
	return rc;
}

/* --- the commands around it ------------------------------------------------------- */

/* Run a small helper script with positional arguments; its stdout in out. */
static int helper(struct cp_ssh_pool *pool, const struct cp_ssh_xfer *x, const char *script,
		  const char *const *args, struct cp_ssh_result *r)
{
	const char *argv[12] = {"sh", "-c", script, "sh"};
	size_t n = 4;
	struct cp_ssh_cmd cmd = {.argv = argv,
				 .sudo = x->sudo,
				 .sudo_password = x->sudo_password,
				 .timeout_ms = 60000};

	for (size_t i = 0; args[i] && n + 1 < sizeof(argv) / sizeof(argv[0]); i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return cp_ssh_run(pool, &cmd, r);
}

/* "hash mode owner:group" of the remote file, or "" when it is absent. */
static const char STATE_SH[] = "[ -f \"$1\" ] || exit 0; h=$(sha256sum < \"$1\") || exit 1; "
			       "echo \"${h%% *} $(stat -c '%a %U:%G' -- \"$1\")\"";

/* Check the staged copy's hash, then owner, mode, rename into place.
 * $6 = 1: the staged file is elsewhere (sudo): copied beside the target first. */
static const char FINISH_SH[] =
	"t=$1; d=$2; f=$t; trap 'rm -f -- \"$t\" \"$f\"' EXIT; "
	"if [ \"$6\" = 1 ]; then f=$(mktemp \"$(dirname -- \"$d\")/.sluice-XXXXXXXX\") && "
	"cat -- \"$t\" > \"$f\" || exit 4; fi; "
	"h=$(sha256sum < \"$f\"); h=${h%% *}; "
	"if [ \"$h\" != \"$3\" ]; then echo \"$h\"; exit 3; fi; "
	"if [ -n \"$7\" ]; then sh -c \"$7\" sh \"$f\" >&2 || exit 7; fi; "
	"if [ -n \"$5\" ]; then chown -- \"$5\" \"$f\" || exit 5; fi; "
	"chmod \"$4\" \"$f\" && mv -f -- \"$f\" \"$d\" || exit 6; trap - EXIT; rm -f -- \"$t\"";

static void tmp_name(const char *remote, int sudo, char *out, size_t cap)
{
	char dir[512], base[256], rnd[9] = {0};
	static const char set[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char r[8] = {0};

	if (getrandom(r, sizeof(r), 0) != sizeof(r))
		memset(r, (int)getpid(), sizeof(r));
	for (int i = 0; i < 8; i++)
		rnd[i] = set[r[i] % 36];
	snprintf(dir, sizeof(dir), "%s", remote);
	snprintf(base, sizeof(base), "%s", remote);
	if (sudo)
		snprintf(out, cap, "/tmp/.sluice-put-%s", rnd);
	else
		snprintf(out, cap, "%s/.%s.sluice-%s", dirname(dir), basename(base), rnd);
}

static int local_hash(int fd, uint64_t *size, char *hex)
{
	EVP_MD_CTX *h = digest_new();
	char *buf = malloc(1u << 20);
	ssize_t n = -1;

	if (!buf || !h)
		goto out;
	*size = 0;
	while ((n = read(fd, buf, 1u << 20)) > 0) {
		EVP_DigestUpdate(h, buf, (size_t)n);
		*size += (uint64_t)n;
	}
	digest_hex(h, hex);
	h = NULL;
out:
	EVP_MD_CTX_free(h);
	free(buf);
	if (n < 0 || lseek(fd, 0, SEEK_SET) != 0)
		return -EIO;
	return 0;
}

/* A hash the caller gave (x->sha256): the size from the file itself. */
static int known_hash(int fd, const char *given, uint64_t *size, char *hex)
{
	struct stat st;

	if (strlen(given) != 64 || fstat(fd, &st) < 0)
		return -EIO;
	memcpy(hex, given, 65);
	*size = (uint64_t)st.st_size;
	return 0;
}

int cp_ssh_file_sha256(const char *path, char hex[65])
{
	uint64_t size;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return -errno;
	rc = local_hash(fd, &size, hex);
	close(fd);
	return rc;
}

/* Whether the remote file already is what we would make it. */
static int up_to_date(struct cp_ssh_pool *pool, const char *remote, const struct cp_ssh_xfer *x,
		      const char *hex, unsigned mode)
{
	const char *args[] = {remote, NULL};
	struct cp_ssh_result r;
	char want[200];
	int same = 0;

	if (helper(pool, x, STATE_SH, args, &r) == 0 && r.exit_code == 0 && r.out) {
		int n = snprintf(want, sizeof(want), "%s %o ", hex, mode);

		same = strncmp(r.out, want, (size_t)n) == 0;
		if (same && x->owner) {
			const char *own = r.out + n;

			same = strncmp(own, x->owner, strlen(x->owner)) == 0 &&
			       (own[strlen(x->owner)] == '\n' ||
				(!strchr(x->owner, ':') && own[strlen(x->owner)] == ':'));
		}
	}
	cp_ssh_result_free(&r);
	return same;
}

static int finish_put(struct cp_ssh_pool *pool, const char *tmp, const char *remote,
		      const struct cp_ssh_xfer *x, const char *hex, unsigned mode,
		      struct cp_ssh_err *err)
{
	char ms[16];
	const char *args[] = {tmp,
			      remote,
			      hex,
			      ms,
			      x->owner ? x->owner : "",
			      x->sudo ? "1" : "0",
			      x->validate ? x->validate : "",
			      NULL};
	struct cp_ssh_result r;
	int rc;

	snprintf(ms, sizeof(ms), "%o", mode);
	rc = helper(pool, x, FINISH_SH, args, &r);
	if (rc < 0)
		*err = r.error;
	else if (r.exit_code == 3)
		cp_ssh_err_set(err, CP_SSH_E_TRANSFER,
			       "checksum mismatch at %s: sent %s, the host has %.64s", remote, hex,
			       r.out ? r.out : "?");
	else if (r.exit_code == 7)
		cp_ssh_err_set(err, CP_SSH_E_TRANSFER, "%s refused by its check (%s): %.300s",
			       remote, x->validate, r.err ? r.err : "");
	else if (r.exit_code != 0)
		cp_ssh_err_set(err, CP_SSH_E_TRANSFER, "installing %s failed (step %d): %.300s",
			       remote, r.exit_code, r.err ? r.err : "");
	if (rc == 0 && r.exit_code != 0)
		rc = -EIO;
	cp_ssh_result_free(&r);
	return rc;
}

#define REMOVE_TRIES 3 /* a cleanup right after a lost connection may meet its twin */

/* After a failed upload: the temporary file goes, on a new connection if
 * the old one died. The pool may still hold other connections the same
 * failure killed (sshd's sessions for the user were cut together): a
 * removal that fails is tried again, a little later, a bounded number of
 * times. */
static void remove_tmp(struct cp_ssh_pool *pool, const struct cp_ssh_xfer *x, const char *tmp,
		       struct cp_ssh_err *err)
{
	const char *argv[] = {"rm", "-f", "--", tmp, NULL};
	struct cp_ssh_cmd cmd = {.argv = argv, .timeout_ms = 15000};
	struct cp_ssh_result r;
	int ok = 0;

	(void)x;
	for (int i = 0; i < REMOVE_TRIES && !ok; i++) {
		if (i > 0)
			usleep(300 * 1000);
		ok = cp_ssh_run(pool, &cmd, &r) == 0 && r.exit_code == 0;
		cp_ssh_result_free(&r);
	}
	if (!ok) {
		size_t l = strlen(err->msg);

		snprintf(err->msg + l, sizeof(err->msg) - l, "; the temporary file %s may remain",
			 tmp);
	}
}

static int put_common(struct cp_ssh_pool *pool, int fd, const void *mem, uint64_t size,
		      const char *hex, const char *remote, const struct cp_ssh_xfer *x,
		      struct cp_ssh_xfer_result *res)
{
	/* x->sha256: the caller compared already (a sync's listing). */
	unsigned mode = x->mode ? x->mode : 0644;
	char tmp[1024];
	double t0 = sl_mono_ms_f();
	struct sftp_job s = {.upload = 1, .fd = fd, .mem = mem, .total = size, .x = x};
	int rc, same;

	snprintf(res->sha256, sizeof(res->sha256), "%s", hex);
	same = x->sha256 ? 0 : up_to_date(pool, remote, x, hex, mode);
	if (same || x->dry_run) {
		res->changed = !same;
		res->duration_ms = sl_mono_ms_f() - t0;
		return 0;
	}
	tmp_name(remote, x->sudo, tmp, sizeof(tmp));
	s.remote = tmp;
	rc = sftp_run(pool, &s, &res->error);
	if (rc == 0)
		rc = finish_put(pool, tmp, remote, x, hex, mode, &res->error);
	if (rc < 0 && s.base.started)
		remove_tmp(pool, x, tmp, &res->error);
	res->bytes = s.done;
	res->changed = rc == 0;
	res->duration_ms = sl_mono_ms_f() - t0;
	return rc;
}

int cp_ssh_put(struct cp_ssh_pool *pool, const char *local, const char *remote,
	       const struct cp_ssh_xfer *x, struct cp_ssh_xfer_result *res)
{
	char hex[65];
	uint64_t size;
	int fd = open(local, O_RDONLY | O_CLOEXEC), rc;

	memset(res, 0, sizeof(*res));
	if (fd < 0) {
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "%s: %s", local, strerror(errno));
		return -errno;
	}
	rc = x->sha256 ? known_hash(fd, x->sha256, &size, hex) : local_hash(fd, &size, hex);
	if (rc < 0)
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "%s: cannot read it", local);
	else
		rc = put_common(pool, fd, NULL, size, hex, remote, x, res);
	close(fd);
	return rc;
}

int cp_ssh_put_mem(struct cp_ssh_pool *pool, const void *data, size_t len, const char *remote,
		   const struct cp_ssh_xfer *x, struct cp_ssh_xfer_result *res)
{
	char hex[65];
	EVP_MD_CTX *h = digest_new();

	memset(res, 0, sizeof(*res));
	if (!h) {
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "out of memory");
		return -ENOMEM;
	}
	EVP_DigestUpdate(h, data, len);
	digest_hex(h, hex);
	return put_common(pool, -1, data, len, hex, remote, x, res);
}

/* The host's own hash of a file, into hex. */
static int remote_hash(struct cp_ssh_pool *pool, const char *remote, const struct cp_ssh_xfer *x,
		       char *hex, struct cp_ssh_err *err)
{
	const char *args[] = {remote, NULL};
	struct cp_ssh_result r;
	int rc = helper(pool, x, STATE_SH, args, &r);

	if (rc == 0 && (r.exit_code != 0 || !r.out || r.out_len < 64))
		rc = -EIO;
	if (rc == 0)
		snprintf(hex, 65, "%.64s", r.out);
	else
		cp_ssh_err_set(err, CP_SSH_E_TRANSFER, "cannot hash %s on the host: %s", remote,
			       r.error.msg[0] ? r.error.msg
			       : r.err	      ? r.err
					      : "");
	cp_ssh_result_free(&r);
	return rc;
}

/* The host hashes its file while we download it (on another channel), so
 * the check costs no time of its own. */
struct remote_hash_req {
	struct cp_ssh_pool *pool;
	const char *remote;
	const struct cp_ssh_xfer *x;
	char hex[65];
	struct cp_ssh_err err;
	int rc;
};

static void *remote_hash_main(void *arg)
{
	struct remote_hash_req *q = arg;

	q->rc = remote_hash(q->pool, q->remote, q->x, q->hex, &q->err);
	return NULL;
}

int cp_ssh_get(struct cp_ssh_pool *pool, const char *remote, const char *local,
	       const struct cp_ssh_xfer *x, struct cp_ssh_xfer_result *res)
{
	char tmp[1100], dir[1024], got[65];
	struct remote_hash_req q = {.pool = pool, .remote = remote, .x = x};
	pthread_t th;
	int threaded;
	struct sftp_job s = {.remote = remote, .x = x};
	double t0 = sl_mono_ms_f();
	int rc;

	memset(res, 0, sizeof(*res));
	snprintf(dir, sizeof(dir), "%s", local);
	snprintf(tmp, sizeof(tmp), "%s/.sluice-get-XXXXXX", dirname(dir));
	s.fd = mkstemp(tmp);
	if (s.fd < 0) {
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "%s: %s", tmp, strerror(errno));
		return -errno;
	}
	s.hash = digest_new();
	if (!s.hash) {
		close(s.fd);
		unlink(tmp);
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "out of memory");
		return -ENOMEM;
	}
	threaded = pthread_create(&th, NULL, remote_hash_main, &q) == 0;
	rc = sftp_run(pool, &s, &res->error);
	if (threaded)
		pthread_join(th, NULL);
	else
		remote_hash_main(&q);
	digest_hex(s.hash, got);
	if (rc == 0) {
		snprintf(res->sha256, sizeof(res->sha256), "%s", got);
		rc = q.rc;
		if (rc < 0)
			res->error = q.err;
	}
	if (rc == 0 && strcmp(q.hex, res->sha256) != 0) {
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER,
			       "checksum mismatch: received %s, the host has %s", res->sha256,
			       q.hex);
		rc = -EIO;
	}
	if (rc == 0 && (fchmod(s.fd, x->mode ? x->mode : 0600) != 0 || fsync(s.fd) != 0 ||
			rename(tmp, local) != 0)) {
		cp_ssh_err_set(&res->error, CP_SSH_E_TRANSFER, "%s: %s", local, strerror(errno));
		rc = -EIO;
	}
	close(s.fd);
	if (rc < 0)
		unlink(tmp);
	res->bytes = s.done;
	res->changed = rc == 0;
	res->duration_ms = sl_mono_ms_f() - t0;
	return rc;
}
