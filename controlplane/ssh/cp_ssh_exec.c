/*
 * cp_ssh_exec.c: one remote command on a channel, driven without blocking by
 * its connection's thread.
 *
 * What runs remotely is a small sh wrapper around the caller's command:
 *
 *   [sudo -S -p '<P>' --] sh -c 'printf "<R>\n" >&2; [cd DIR &&] [env K=V] CMD;
 *                                s=$?; printf "<X>%d\n" $s >&2; exit $s'
 *
 * <R> says the command has begun (sudo, if any, has accepted the password),
 * so stdin is only sent after it and the password never reaches the command;
 * <P> is sudo's prompt, answered with the password over stdin (never on a
 * command line); <X> carries the exit status, because libssh2 reports 0 when
 * the server sent none (a lost connection, a server that omits it): without
 * it, the status is unknown (CP_SSH_EXIT_NONE), not 0. The markers begin
 * with \036 (ASCII record separator) and are taken out of stderr.
 *
 * A timeout or a cancel kills the remote process group, whose id <R>
 * carries: `kill -TERM -PGID` on a second channel (under sudo when the
 * command is), then KILL two seconds later, then the channel is closed. The
 * "signal" channel request would be the direct way, but libssh2 1.10 refuses
 * a second request on a channel ("Channel can not be reused"), and without
 * a pty sshd does not signal a session's processes when its channel closes.
 * So the remote process is killed, not orphaned.
 */
#include "ssh/cp_ssh_int.h"
#include "sl_buf.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MARK	       '\036'
#define MARK_READY     "\036R"
#define MARK_PROMPT    "\036P\036"
#define MARK_EXIT      "\036X"
#define CAPTURE_DEF    (16u << 20)
#define LINE_MAX_KEEP  (64u << 10) /* a longer line is delivered in pieces */
#define READ_CHUNK     (32u << 10)
#define READS_PER_STEP 16 /* chunks per stream per step: fairness between channels */
#define KILL_GRACE_MS  2000
#define CLOSE_GRACE_MS 1000

enum xstate { X_OPEN = 0, X_EXEC, X_RUN, X_CLOSE, X_WAIT_CLOSED, X_FREE, X_DONE };

/*
 * One command. Owned by whoever called cp_ssh_exec_new (cp_ssh_run, or a
 * transfer job); its channel is the connection thread's until X_DONE.
 */
struct cp_ssh_exec {
	const struct cp_ssh_pool *pool;
	const struct cp_ssh_cmd *cmd;
	struct cp_ssh_result *r;
	char *line; /* the remote command line */
	LIBSSH2_CHANNEL *ch;
	enum xstate st;
	int started;
	size_t in_off;
	int eof_sent, ready, prompts;
	char pw[200];
	size_t pw_len, pw_off;
	/* Bytes not yet a whole line, freed with the exec (cp_ssh_exec_free). */
	struct sl_buf lines[2]; /* partial stdout / stderr lines */
	struct sl_buf eraw;	/* stderr not yet checked for markers */
	size_t captured[2];	/* the capacity of r->out and r->err (capture) */
	int eof[2];
	int trailer, trailer_code;
	int64_t deadline, kill_next;
	int kill_stage;		    /* 0 none, 1 TERM to send, 2 TERM sent, 3 KILL sent */
	long pgid;		    /* the remote process group (from the ready marker), or 0 */
	int64_t close_by;	    /* stop waiting for the server's close then */
	struct cp_ssh_exec *killer; /* `kill -SIG -PGID` on another channel */
	struct cp_ssh_cmd kill_cmd;
	struct cp_ssh_result kill_res;
	const char *kill_argv[5];
	char kill_arg[2][24];
	enum cp_ssh_kind kill_kind;
	char kill_msg[200];
	int rc;
	double t0;
};

/* --- quoting and the command line ---------------------------------------------- */

int cp_ssh_quote(char *dst, size_t cap, const char *s)
{
	size_t o = 0;

	if (cap < 3)
		return -ENOSPC;
	dst[o++] = '\'';
	for (; *s; s++) {
		if (*s == '\'') {
			if (o + 5 >= cap)
				return -ENOSPC;
			memcpy(dst + o, "'\\''", 4);
			o += 4;
		} else {
			if (o + 2 >= cap)
				return -ENOSPC;
			dst[o++] = *s;
		}
	}
	dst[o++] = '\'';
	dst[o] = '\0';
	return (int)o;
}

/* A command line being built in an sl_buf; err: an append failed (the
 * line is unusable), so the builder checks once at the end. Ownership: the
 * builder's (on its stack), which frees buf. */
struct sbuf {
	struct sl_buf buf;
	int err;
};

static void sb_str(struct sbuf *b, const char *s)
{
	if (!b->err && sl_buf_puts(&b->buf, s) < 0)
		b->err = -ENOMEM;
}

/* s quoted for sh, appended: quoting at most quadruples it, plus quotes. */
static void sb_quoted(struct sbuf *b, const char *s)
{
	size_t cap = strlen(s) * 4 + 3;
	int n;

	if (b->err || sl_buf_reserve(&b->buf, cap) < 0) {
		b->err = -ENOMEM;
		return;
	}
	if ((n = cp_ssh_quote(b->buf.p + b->buf.len, cap + 1, s)) < 0)
		b->err = n; /* cannot be: cap is enough */
	else
		b->buf.len += (size_t)n;
}

static const char *interp_cmd(enum cp_ssh_interp i)
{
	return i == CP_SSH_BASH ? "bash -s --" : i == CP_SSH_PYTHON3 ? "python3 -" : "sh -s --";
}

/* The caller's command as one sh command line (inside the wrapper). */
static void core_line(struct sbuf *b, const struct cp_ssh_cmd *c)
{
	if (c->cwd) {
		sb_str(b, "cd ");
		sb_quoted(b, c->cwd);
		sb_str(b, " && ");
	}
	if (c->env && c->env[0]) {
		sb_str(b, "env");
		for (size_t i = 0; c->env[i]; i++) {
			sb_str(b, " ");
			sb_quoted(b, c->env[i]);
		}
		sb_str(b, " ");
	}
	if (c->script) {
		sb_str(b, interp_cmd(c->interp));
		for (size_t i = 0; c->script_args && c->script_args[i]; i++) {
			sb_str(b, " ");
			sb_quoted(b, c->script_args[i]);
		}
	} else if (c->argv) {
		for (size_t i = 0; c->argv[i]; i++) {
			if (i)
				sb_str(b, " ");
			sb_quoted(b, c->argv[i]);
		}
	} else {
		sb_str(b, "sh -c ");
		sb_quoted(b, c->shell ? c->shell : "");
	}
}

/* The whole remote command line: the wrapper around core_line, under sudo
 * when asked. Returns a malloc'd string or NULL. */
static char *remote_line(const struct cp_ssh_cmd *c)
{
	struct sbuf core = {0}, w = {0}, out = {0};

	core_line(&core, c);
	sb_str(&w, "{ read -r _ _ _ _ g _ < /proc/$$/stat; } 2>/dev/null; "
		   "printf '\\036R%s\\n' \"$g\" >&2; ");
	sb_str(&w, core.buf.p ? core.buf.p : "true");
	sb_str(&w, "; s=$?; printf '\\036X%d\\n' \"$s\" >&2; exit \"$s\"");
	if (c->sudo) {
		sb_str(&out, c->sudo_password ? "sudo -S -p '\036P\036' " : "sudo -n ");
		if (c->sudo_user) {
			sb_str(&out, "-u ");
			sb_quoted(&out, c->sudo_user);
			sb_str(&out, " ");
		}
		sb_str(&out, "-- ");
	} else {
		sb_str(&out, "exec ");
	}
	sb_str(&out, "sh -c ");
	sb_quoted(&out, w.buf.p ? w.buf.p : "");
	sl_buf_free(&core.buf);
	sl_buf_free(&w.buf);
	if (core.err || w.err || out.err) {
		sl_buf_free(&out.buf);
		return NULL;
	}
	return sl_buf_steal(&out.buf);
}

/* --- output ------------------------------------------------------------------- */

/* Keep what was captured (up to the cap) in the result: its out or err
 * grown as an sl_buf whose capacity the exec remembers (captured[]; a
 * result emptied meanwhile starts again from nothing). */
static int capture(struct cp_ssh_exec *e, int stream, const char *s, size_t n)
{
	size_t max = e->cmd->capture_max ? e->cmd->capture_max : CAPTURE_DEF;
	char **dst = stream == 1 ? &e->r->out : &e->r->err;
	size_t *len = stream == 1 ? &e->r->out_len : &e->r->err_len;
	struct sl_buf b = {*dst, *len, *dst ? e->captured[stream - 1] : 0};

	if (*len + n > max) {
		e->r->truncated = 1;
		n = max - *len;
	}
	if (!n)
		return 0;
	if (sl_buf_append(&b, s, n) < 0)
		return -ENOMEM;
	*dst = b.p;
	*len = b.len;
	e->captured[stream - 1] = b.cap;
	return 0;
}

/* Split into lines for the callback; the rest waits in lines[stream-1]. */
static void deliver(struct cp_ssh_exec *e, int stream, const char *s, size_t n)
{
	struct sl_buf *b = &e->lines[stream - 1];
	const char *nl;

	if (!e->cmd->on_line)
		return;
	while (n && (nl = memchr(s, '\n', n)) != NULL) {
		size_t k = (size_t)(nl - s);

		if (b->len) {
			if (sl_buf_append(b, s, k) == 0)
				e->cmd->on_line(e->cmd->arg, stream, b->p, b->len);
			sl_buf_consume(b, b->len);
		} else {
			e->cmd->on_line(e->cmd->arg, stream, s, k);
		}
		s += k + 1;
		n -= k + 1;
	}
	if (n && sl_buf_append(b, s, n) == 0 && b->len >= LINE_MAX_KEEP) {
		e->cmd->on_line(e->cmd->arg, stream, b->p, b->len);
		sl_buf_consume(b, b->len);
	}
}

static void user_bytes(struct cp_ssh_exec *e, int stream, const char *s, size_t n)
{
	if (capture(e, stream, s, n) < 0)
		e->r->truncated = 1;
	deliver(e, stream, s, n);
}

static void sudo_prompt(struct cp_ssh_exec *e)
{
	const char *pw = e->cmd->sudo_password;

	e->prompts++;
	if (e->prompts > 1 || !pw) {
		e->kill_stage = e->kill_stage ? e->kill_stage : 1;
		e->kill_kind = CP_SSH_E_SUDO;
		snprintf(e->kill_msg, sizeof(e->kill_msg), "sudo refused the password for %s",
			 cp_ssh_pool_config(e->pool)->user);
		return;
	}
	e->pw_len = (size_t)snprintf(e->pw, sizeof(e->pw), "%s\n", pw);
	e->pw_off = 0;
}

/* How a marker at p (n bytes available) reads: its length, 0 when more
 * bytes are needed to tell, -EBADMSG when it is not one of ours. */
static int marker_at(struct cp_ssh_exec *e, const char *p, size_t n)
{
	size_t l = strlen(MARK_PROMPT);
	const char *nl;

	if (memcmp(p, MARK_PROMPT, n < l ? n : l) == 0) {
		if (n < l)
			return 0;
		sudo_prompt(e);
		return (int)l;
	}
	if (n < 2)
		return 0;
	if (p[1] != 'X' && p[1] != 'R')
		return -EBADMSG;
	nl = memchr(p, '\n', n < 24 ? n : 24);
	if (!nl)
		return n < 24 ? 0 : -EBADMSG;
	if (p[1] == 'R') {
		e->ready = 1;
		e->pgid = atol(p + 2);
	} else {
		e->trailer = 1;
		e->trailer_code = atoi(p + 2);
	}
	return (int)(nl - p + 1);
}

/* stderr: our markers out, the rest to the caller. */
static void stderr_bytes(struct cp_ssh_exec *e, const char *s, size_t n, int final)
{
	struct sl_buf *b = &e->eraw;
	size_t i = 0;

	if (sl_buf_append(b, s, n) < 0)
		return;
	while (i < b->len) {
		char *m = memchr(b->p + i, MARK, b->len - i);
		size_t plain = m ? (size_t)(m - (b->p + i)) : b->len - i;
		int k;

		user_bytes(e, 2, b->p + i, plain);
		i += plain;
		if (!m)
			break;
		k = marker_at(e, m, b->len - i);
		if (k == 0 && !final)
			break;
		if (k <= 0)
			k = 1, user_bytes(e, 2, m, 1);
		i += (size_t)k;
	}
	sl_buf_consume(b, i);
}

/* --- the state machine ---------------------------------------------------------- */

struct cp_ssh_exec *cp_ssh_exec_new(const struct cp_ssh_pool *pool, const struct cp_ssh_cmd *cmd,
				    struct cp_ssh_result *r)
{
	struct cp_ssh_exec *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->pool = pool;
	e->cmd = cmd;
	e->r = r;
	e->line = remote_line(cmd);
	if (!e->line) {
		free(e);
		return NULL;
	}
	e->t0 = sl_mono_ms_f();
	if (cmd->timeout_ms > 0)
		e->deadline = cp_ssh_now_ms() + cmd->timeout_ms;
	return e;
}

int cp_ssh_exec_started(const struct cp_ssh_exec *e)
{
	return e->started;
}

int64_t cp_ssh_exec_deadline(const struct cp_ssh_exec *e)
{
	if (e->st == X_WAIT_CLOSED && e->close_by)
		return e->close_by;
	if (e->kill_stage >= 2)
		return e->kill_next;
	return e->deadline;
}

/* Begin killing (timeout, cancel, pool closing, sudo refused). */
static void start_kill(struct cp_ssh_exec *e, enum cp_ssh_kind kind, const char *msg)
{
	if (e->kill_stage)
		return;
	e->kill_stage = 1;
	e->kill_kind = kind;
	snprintf(e->kill_msg, sizeof(e->kill_msg), "%s", msg);
}

static int fail(struct cp_ssh_exec *e, struct cp_ssh_conn *c, int rc, const char *what)
{
	enum cp_ssh_kind k = cp_ssh_rc_is_fatal(rc) ? CP_SSH_E_PROTOCOL : CP_SSH_E_CHANNEL;

	cp_ssh_err_from(&e->r->error, k, c->s, what);
	if (e->started && cp_ssh_rc_is_fatal(rc)) {
		size_t l = strlen(e->r->error.msg);

		snprintf(e->r->error.msg + l, sizeof(e->r->error.msg) - l,
			 "; the command may have run in part");
	}
	return cp_ssh_rc_is_fatal(rc) ? -ECONNRESET : -EIO;
}

static int step_open(struct cp_ssh_exec *e, struct cp_ssh_conn *c)
{
	int rc;

	e->ch = libssh2_channel_open_session(c->s);
	if (e->ch) {
		e->r->open_ms = sl_mono_ms_f() - e->t0;
		e->st = X_EXEC;
		return CP_SSH_STEP_MOVED;
	}
	rc = libssh2_session_last_errno(c->s);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return CP_SSH_STEP_AGAIN;
	if (rc == LIBSSH2_ERROR_CHANNEL_FAILURE) {
		/* sshd's MaxSessions is below our cap: fewer channels from now on,
		 * and this command waits for another turn (not started). */
		cp_ssh_conn_refused(c);
		cp_ssh_err_set(&e->r->error, CP_SSH_E_CHANNEL,
			       "sshd refused a channel (MaxSessions lower than max_channels)");
		return -EAGAIN;
	}
	return fail(e, c, rc, "opening a channel");
}

static int step_exec(struct cp_ssh_exec *e, struct cp_ssh_conn *c)
{
	int rc = libssh2_channel_exec(e->ch, e->line);

	if (rc == LIBSSH2_ERROR_EAGAIN)
		return CP_SSH_STEP_AGAIN;
	e->started = 1;
	if (rc < 0)
		return fail(e, c, rc, "starting the command");
	e->st = X_RUN;
	return CP_SSH_STEP_MOVED;
}

/* Send what stdin has next: the sudo password when asked, then the input
 * (after the ready marker when sudo may still be reading), then EOF. */
static int pump_stdin(struct cp_ssh_exec *e, struct cp_ssh_conn *c, int *moved)
{
	const struct cp_ssh_cmd *cmd = e->cmd;
	const char *in = cmd->script ? cmd->script : cmd->input;
	size_t in_len = cmd->script ? strlen(cmd->script) : cmd->input_len;
	ssize_t n;

	if (e->pw_off < e->pw_len) {
		n = libssh2_channel_write(e->ch, e->pw + e->pw_off, e->pw_len - e->pw_off);
		if (n == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (n < 0)
			return fail(e, c, (int)n, "sending the sudo password");
		e->pw_off += (size_t)n;
		*moved = 1;
		if (e->pw_off == e->pw_len)
			explicit_bzero(e->pw, sizeof(e->pw));
		return 0;
	}
	if (e->eof_sent || (cmd->sudo && cmd->sudo_password && !e->ready))
		return 0;
	while (e->in_off < in_len) {
		n = libssh2_channel_write(e->ch, in + e->in_off, in_len - e->in_off);
		if (n == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (n < 0)
			return fail(e, c, (int)n, "writing to the command's stdin");
		e->in_off += (size_t)n;
		*moved = 1;
	}
	n = libssh2_channel_send_eof(e->ch);
	if (n == LIBSSH2_ERROR_EAGAIN)
		return 0;
	if (n < 0 && n != LIBSSH2_ERROR_CHANNEL_EOF_SENT)
		return fail(e, c, (int)n, "closing the command's stdin");
	e->eof_sent = 1;
	*moved = 1;
	return 0;
}

static int drain(struct cp_ssh_exec *e, struct cp_ssh_conn *c, int stream, int *moved)
{
	char buf[READ_CHUNK];

	for (int i = 0; i < READS_PER_STEP && !e->eof[stream - 1]; i++) {
		ssize_t n = libssh2_channel_read_ex(
			e->ch, stream == 1 ? 0 : SSH_EXTENDED_DATA_STDERR, buf, sizeof(buf));

		if (n == LIBSSH2_ERROR_EAGAIN)
			return 0;
		if (n < 0)
			return fail(e, c, (int)n, "reading the command's output");
		*moved = 1;
		if (n == 0) {
			e->eof[stream - 1] = 1;
			break;
		}
		if (stream == 1)
			user_bytes(e, 1, buf, (size_t)n);
		else
			stderr_bytes(e, buf, (size_t)n, 0);
	}
	return 0;
}

/* Start `kill -SIG -PGID` on another channel, as the command ran. */
static int start_killer(struct cp_ssh_exec *e, const char *sig)
{
	snprintf(e->kill_arg[0], sizeof(e->kill_arg[0]), "-%s", sig);
	snprintf(e->kill_arg[1], sizeof(e->kill_arg[1]), "-%ld", e->pgid);
	e->kill_argv[0] = "kill";
	e->kill_argv[1] = e->kill_arg[0];
	e->kill_argv[2] = e->kill_arg[1]; /* no "--": dash's kill takes it for a pid */
	e->kill_argv[3] = NULL;
	e->kill_cmd = (struct cp_ssh_cmd){.argv = e->kill_argv,
					  .sudo = e->cmd->sudo,
					  .sudo_password = e->cmd->sudo_password,
					  .sudo_user = e->cmd->sudo_user,
					  .capture_max = 4096};
	cp_ssh_result_free(&e->kill_res);
	e->killer = cp_ssh_exec_new(e->pool, &e->kill_cmd, &e->kill_res);
	return e->killer ? 0 : -ENOMEM;
}

/* Drive the killer to its end; 1 while it runs. */
static int run_killer(struct cp_ssh_exec *e, struct cp_ssh_conn *c, int *moved)
{
	int rc;

	if (!e->killer)
		return 0;
	rc = cp_ssh_exec_step(e->killer, c, 0);
	if (rc == CP_SSH_STEP_AGAIN || rc == CP_SSH_STEP_MOVED) {
		*moved |= rc == CP_SSH_STEP_MOVED;
		return 1;
	}
	cp_ssh_exec_free(e->killer);
	e->killer = NULL;
	*moved = 1;
	return 0;
}

/* Timeout and cancellation: TERM the group, wait, KILL it, close. Before
 * the command has begun (sudo still reading its password) there is no group
 * to signal: closing stdin ends sudo. */
static int step_kill(struct cp_ssh_exec *e, struct cp_ssh_conn *c, int *moved)
{
	int64_t now = cp_ssh_now_ms();

	if (run_killer(e, c, moved))
		return 0;
	if (e->kill_stage == 1) {
		if (!e->pgid || start_killer(e, "TERM") < 0) {
			e->kill_stage = 3;
			e->kill_next = now;
		} else {
			e->kill_stage = 2;
			e->kill_next = now + KILL_GRACE_MS;
		}
		*moved = 1;
	} else if (e->kill_stage == 2 && now >= e->kill_next) {
		e->kill_stage = 3;
		e->kill_next = now + CLOSE_GRACE_MS;
		if (start_killer(e, "KILL") < 0)
			e->kill_next = now;
		*moved = 1;
	} else if (e->kill_stage == 3 && now >= e->kill_next) {
		int rc = libssh2_channel_send_eof(e->ch);

		if (rc == LIBSSH2_ERROR_EAGAIN)
			return 0;
		e->st = X_CLOSE; /* it would not die, or never began: close on it */
		*moved = 1;
	}
	return 0;
}

static int step_run(struct cp_ssh_exec *e, struct cp_ssh_conn *c)
{
	int moved = 0, rc;
	int64_t now = cp_ssh_now_ms();

	if (!e->kill_stage && e->cmd->cancel && __atomic_load_n(e->cmd->cancel, __ATOMIC_ACQUIRE))
		start_kill(e, CP_SSH_E_CANCELLED, "cancelled");
	if (!e->kill_stage && e->deadline && now >= e->deadline) {
		char m[80];

		snprintf(m, sizeof(m), "timed out after %d ms", e->cmd->timeout_ms);
		start_kill(e, CP_SSH_E_TIMEOUT, m);
	}
	if (e->kill_stage && (rc = step_kill(e, c, &moved)) < 0)
		return rc;
	if (e->st != X_RUN)
		return CP_SSH_STEP_MOVED;
	if ((rc = drain(e, c, 1, &moved)) < 0 || (rc = drain(e, c, 2, &moved)) < 0)
		return rc;
	if (!e->kill_stage && (rc = pump_stdin(e, c, &moved)) < 0)
		return rc;
	if (e->eof[0] && e->eof[1]) {
		e->st = X_CLOSE;
		return CP_SSH_STEP_MOVED;
	}
	return moved ? CP_SSH_STEP_MOVED : CP_SSH_STEP_AGAIN;
}

static const char *sig_name(int sig)
{
	const char *n = sigabbrev_np(sig);

	return n ? n : "?";
}

/* The exit status, trusting libssh2's 0 only when our trailer confirms it. */
static void collect_status(struct cp_ssh_exec *e, LIBSSH2_SESSION *s)
{
	struct cp_ssh_result *r = e->r;
	char *sig = NULL;
	size_t sl = 0;
	int st = libssh2_channel_get_exit_status(e->ch);

	libssh2_channel_get_exit_signal(e->ch, &sig, &sl, NULL, NULL, NULL, NULL);
	r->exit_code = CP_SSH_EXIT_NONE;
	r->exit_known = 0;
	if (sig && sl) {
		snprintf(r->signal, sizeof(r->signal), "%s", sig);
	} else if (e->trailer) {
		r->exit_code = e->trailer_code;
		r->exit_known = 1;
		if (e->trailer_code > 128 && e->trailer_code < 128 + 65)
			snprintf(r->signal, sizeof(r->signal), "%s",
				 sig_name(e->trailer_code - 128));
	} else if (st != 0) {
		r->exit_code = st;
		r->exit_known = 1;
	}
	if (sig)
		libssh2_free(s, sig);
}

static int step_close(struct cp_ssh_exec *e, struct cp_ssh_conn *c)
{
	int rc;

	if (e->st == X_CLOSE) {
		rc = libssh2_channel_close(e->ch);
		if (rc == LIBSSH2_ERROR_EAGAIN)
			return CP_SSH_STEP_AGAIN;
		if (rc < 0)
			return fail(e, c, rc, "closing the channel");
		e->st = X_WAIT_CLOSED;
	}
	if (e->st == X_WAIT_CLOSED) {
		if (!e->close_by)
			e->close_by = cp_ssh_now_ms() + CLOSE_GRACE_MS;
		rc = libssh2_channel_wait_closed(e->ch);
		/* A process that survived KILL (or never read its EOF) keeps sshd
		 * from closing the channel: after a grace period, let it go. */
		if (rc == LIBSSH2_ERROR_EAGAIN && cp_ssh_now_ms() < e->close_by)
			return CP_SSH_STEP_AGAIN;
		stderr_bytes(e, "", 0, 1);
		collect_status(e, c->s);
		e->st = X_FREE;
	}
	rc = libssh2_channel_free(e->ch);
	if (rc == LIBSSH2_ERROR_EAGAIN)
		return CP_SSH_STEP_AGAIN;
	e->ch = NULL;
	e->st = X_DONE;
	return 0;
}

/* Flush the last partial lines to the callback. */
static void flush_lines(struct cp_ssh_exec *e)
{
	for (int s = 0; s < 2; s++) {
		if (e->lines[s].len && e->cmd->on_line)
			e->cmd->on_line(e->cmd->arg, s + 1, e->lines[s].p, e->lines[s].len);
		sl_buf_consume(&e->lines[s], e->lines[s].len);
	}
}

/* The run is over: the error a kill or sudo left, if any. */
static int outcome(struct cp_ssh_exec *e)
{
	struct cp_ssh_result *r = e->r;

	flush_lines(e);
	r->duration_ms = sl_mono_ms_f() - e->t0;
	if (e->kill_stage) {
		cp_ssh_err_set(&r->error, e->kill_kind, "%s", e->kill_msg);
		return e->kill_kind == CP_SSH_E_TIMEOUT ? -ETIMEDOUT : -ECANCELED;
	}
	if (e->cmd->sudo && !e->ready && r->err &&
	    (strstr(r->err, "password is required") || strstr(r->err, "incorrect password"))) {
		cp_ssh_err_set(&r->error, CP_SSH_E_SUDO,
			       "sudo wants a password for %s: give one (--sudo-password-env)",
			       cp_ssh_pool_config(e->pool)->user);
		return -EACCES;
	}
	if (e->cmd->sudo && !e->ready && r->err && strstr(r->err, "not in the sudoers")) {
		cp_ssh_err_set(&r->error, CP_SSH_E_SUDO, "%s may not use sudo on this host",
			       cp_ssh_pool_config(e->pool)->user);
		return -EACCES;
	}
	return 0;
}

int cp_ssh_exec_step(struct cp_ssh_exec *e, struct cp_ssh_conn *c, int stopping)
{
	int rc = CP_SSH_STEP_MOVED;

	if (stopping && e->st == X_RUN)
		start_kill(e, CP_SSH_E_CANCELLED, "the SSH pool was closed");
	while (rc == CP_SSH_STEP_MOVED) {
		switch (e->st) {
		case X_OPEN:
			if (stopping) {
				cp_ssh_err_set(&e->r->error, CP_SSH_E_CANCELLED,
					       "the SSH pool was closed");
				return -ECANCELED;
			}
			rc = step_open(e, c);
			break;
		case X_EXEC: rc = step_exec(e, c); break;
		case X_RUN:
			rc = step_run(e, c);
			if (rc == CP_SSH_STEP_MOVED && e->st == X_RUN)
				return rc; /* yield: other channels' turn */
			break;
		case X_CLOSE:
		case X_WAIT_CLOSED:
		case X_FREE:
			rc = step_close(e, c);
			if (rc == 0)
				return outcome(e);
			break;
		case X_DONE: return outcome(e);
		}
	}
	return rc;
}

void cp_ssh_exec_lost(struct cp_ssh_exec *e)
{
	e->ch = NULL; /* freed with its session */
	if (e->killer) {
		cp_ssh_exec_lost(e->killer);
		cp_ssh_exec_free(e->killer);
		e->killer = NULL;
	}
	if (!e->started)
		e->st = X_OPEN; /* it may run again on another connection */
	flush_lines(e);
	e->r->duration_ms = sl_mono_ms_f() - e->t0;
}

/* The exec fills a result's buffers, so they are freed here (cp_ssh_run and
 * the transfers only pass the result on). */
void cp_ssh_result_free(struct cp_ssh_result *r)
{
	free(r->out);
	free(r->err);
	r->out = r->err = NULL;
	r->out_len = r->err_len = 0;
}

void cp_ssh_exec_free(struct cp_ssh_exec *e)
{
	if (!e)
		return;
	free(e->line);
	sl_buf_free(&e->lines[0]);
	sl_buf_free(&e->lines[1]);
	sl_buf_free(&e->eraw);
	cp_ssh_exec_free(e->killer);
	cp_ssh_result_free(&e->kill_res);
	explicit_bzero(e->pw, sizeof(e->pw));
	free(e);
}
