/*
 * cp_node_exec.c: a command, a diagnosis or a health check on a node, on a
 * thread of its own, its answer streamed as it comes (see cp_node_exec.h).
 * The thread hands output to the loop through a buffer and a wake of the
 * server's bridge (http/cp_bridge.h), so a slow host or a slow client holds
 * up neither the API nor the SSH connection. A client that goes away cancels its command (the
 * remote process is killed).
 */
#include "api/cp_node_exec.h"
#include "api/cp_node_pools.h"
#include "http/cp_audit_log.h"
#include "http/cp_reply.h"
#include "ssh/cp_ssh_diag.h"
#include "sl_buf.h"
#include "sl_thread.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_MAX		(4u << 20) /* streamed output buffered at most; more is dropped */
#define EXEC_ARGS_MAX	64
#define EXEC_ENV_MAX	32
#define EXEC_TIMEOUT_MS (10 * 60 * 1000)
/* How often a streamed answer that is waiting looks for a client that hung
 * up (h2o notices only when it writes, and a quiet command writes nothing). */
#define HANGUP_CHECK_MS 200

/*
 * One exec, diagnose or health check. Ownership: counted, two references:
 * the loop's (until the answer is complete or the client is gone) and the
 * thread's (until it has posted its last output); nexec_unref drops one,
 * the last frees out and body and wipes the secrets. The thread appends to
 * out under mu and wakes port; the loop sends what out holds. A client
 * gone meanwhile (on_stop: req NULL) cancels the command; the loop's part
 * ends once the thread's last line is in.
 */
struct nexec {
	atomic_int refs;
	struct cp_server *s;
	h2o_req_t *req; /* NULL once the client is gone */
	h2o_generator_t gen;
	struct cp_bridge_port port;
	int loop_held; /* the loop's reference, and s->inflight, not yet given back */
	enum cp_node_exec_kind kind;
	char node_id[64];
	int client_fd; /* to see a hang-up while nothing is written; < 0: unknown */
	h2o_timeout_entry_t tick;
	pthread_mutex_t mu;
	struct sl_buf out; /* NDJSON not yet sent */
	int dropped;	   /* output beyond OUT_MAX */
	int done;	   /* the thread posted its last line */
	int sending;	   /* an h2o_send awaits proceed */
	int final_sent;
	volatile int cancel;
	struct cp_ssh_config cfg;
	char sudo_pw[128];
	json_t *body; /* the request's parsed body */
	char actor[32];
};

static void nexec_unref(struct nexec *x)
{
	if (atomic_fetch_sub(&x->refs, 1) != 1)
		return;
	cp_bridge_port_release(&x->port);
	pthread_mutex_destroy(&x->mu);
	sl_buf_free(&x->out);
	json_decref(x->body);
	cp_ssh_config_wipe(&x->cfg);
	explicit_bzero(x->sudo_pw, sizeof(x->sudo_pw));
	free(x);
}

/* From the thread: one NDJSON line (o stolen). */
static void post(struct nexec *x, json_t *o, int last)
{
	char *line = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
	size_t n = line ? strlen(line) : 0;

	json_decref(o);
	pthread_mutex_lock(&x->mu);
	if (line && (x->out.len + n + 1 <= OUT_MAX || last)) {
		/* Room for the whole line first: a line is sent whole or not at all. */
		if (sl_buf_reserve(&x->out, n + 1) == 0) {
			sl_buf_append(&x->out, line, n);
			sl_buf_append(&x->out, "\n", 1);
		}
	} else {
		x->dropped = 1;
	}
	x->done |= last;
	pthread_mutex_unlock(&x->mu);
	free(line);
	cp_bridge_wake(&x->port);
}

static void on_line(void *arg, int stream, const char *line, size_t len)
{
	json_t *o = json_pack("{s:s,s:s%}", "stream", stream == 1 ? "stdout" : "stderr", "line",
			      line, len);

	if (!o) /* not UTF-8: sent as Latin-1 would mislead; say so instead */
		o = json_pack("{s:s,s:s}", "stream", stream == 1 ? "stdout" : "stderr", "line",
			      "(a line that is not UTF-8)");
	post(arg, o, 0);
}

/* The body's command: {"command": [...]} or {"shell": "..."}: 0, or
 * -EINVAL (a word that is not a string). */
static int build_cmd(struct nexec *x, struct cp_ssh_cmd *cmd, const char **argv, const char **env,
		     char envbuf[][300])
{
	json_t *c = json_object_get(x->body, "command"), *e = json_object_get(x->body, "env"), *v;
	const char *k;
	size_t n = 0;

	if (json_is_array(c)) {
		for (size_t i = 0; i < json_array_size(c) && i + 1 < EXEC_ARGS_MAX; i++)
			if ((argv[n++] = json_string_value(json_array_get(c, i))) == NULL)
				return -EINVAL;
		argv[n] = NULL;
		cmd->argv = argv;
	} else {
		cmd->shell = json_string_value(json_object_get(x->body, "shell"));
	}
	n = 0;
	json_object_foreach(e, k, v)
	{
		if (n + 1 >= EXEC_ENV_MAX || !json_is_string(v))
			break;
		snprintf(envbuf[n], 300, "%s=%s", k, json_string_value(v));
		env[n] = envbuf[n];
		n++;
	}
	env[n] = NULL;
	cmd->env = env;
	cmd->cwd = json_string_value(json_object_get(x->body, "cwd"));
	cmd->sudo = json_is_true(json_object_get(x->body, "sudo"));
	cmd->sudo_password = x->sudo_pw[0] ? x->sudo_pw : NULL;
	cmd->timeout_ms = json_is_integer(json_object_get(x->body, "timeoutMs"))
				  ? (int)json_integer_value(json_object_get(x->body, "timeoutMs"))
				  : EXEC_TIMEOUT_MS;
	cmd->on_line = on_line;
	cmd->arg = x;
	cmd->cancel = &x->cancel;
	return 0;
}

static void run_exec(struct nexec *x)
{
	const char *argv[EXEC_ARGS_MAX], *env[EXEC_ENV_MAX];
	char envbuf[EXEC_ENV_MAX][300];
	struct cp_ssh_cmd cmd = {0};
	struct cp_ssh_result r;
	struct cp_ssh_pool *pool = cp_node_pool_get(x->node_id, &x->cfg);
	json_t *err;

	if (!pool || build_cmd(x, &cmd, argv, env, envbuf) < 0) {
		post(x,
		     json_pack("{s:n,s:{s:s,s:s}}", "exit", "error", "kind", "config", "message",
			       "cannot run the command"),
		     1);
		if (pool)
			cp_node_pool_put(pool);
		return;
	}
	cp_ssh_run(pool, &cmd, &r);
	err = r.error.kind == CP_SSH_OK
		      ? json_null()
		      : json_pack("{s:s,s:s,s:b}", "kind", cp_ssh_kind_name(r.error.kind),
				  "message", r.error.msg, "retryable", r.error.retryable);
	post(x,
	     json_pack("{s:i,s:b,s:s,s:f,s:b,s:o}", "exit", r.exit_code, "exitKnown", r.exit_known,
		       "signal", r.signal, "durationMs", r.duration_ms, "outputDropped", x->dropped,
		       "error", err),
	     1);
	cp_ssh_result_free(&r);
	cp_node_pool_put(pool);
}

static void run_health(struct nexec *x)
{
	struct cp_ssh_pool *pool = cp_node_pool_get(x->node_id, &x->cfg);
	struct cp_ssh_health *h = calloc(1, sizeof(*h));

	if (!pool || !h) {
		post(x, json_pack("{s:b,s:s}", "ok", 0, "error", "out of memory"), 1);
	} else {
		cp_ssh_health_check(pool, CP_SSH_RECOVER_RECONNECT, h);
		post(x, cp_ssh_health_json(h), 1);
	}
	free(h);
	if (pool)
		cp_node_pool_put(pool);
}

static void *nexec_main(void *arg)
{
	struct nexec *x = arg;

	if (x->kind == CP_NX_DIAGNOSE)
		post(x, cp_ssh_diagnose(&x->cfg), 1);
	else if (x->kind == CP_NX_HEALTH)
		run_health(x);
	else
		run_exec(x);
	nexec_unref(x); /* the last post woke the loop */
	return NULL;
}

/* On the loop: send what the thread posted, one h2o_send at a time. */
static void flush_out(struct nexec *x)
{
	h2o_iovec_t buf = {NULL, 0};
	int last;

	if (!x->req || x->sending || x->final_sent)
		return;
	pthread_mutex_lock(&x->mu);
	if (x->out.len) {
		buf.base = h2o_mem_alloc_pool(&x->req->pool, x->out.len);
		memcpy(buf.base, x->out.p, x->out.len);
		buf.len = x->out.len;
		sl_buf_consume(&x->out, x->out.len);
	}
	last = x->done;
	pthread_mutex_unlock(&x->mu);
	if (!buf.len && !last)
		return;
	x->sending = 1;
	x->final_sent = last;
	h2o_send(x->req, &buf, 1, last ? H2O_SEND_STATE_FINAL : H2O_SEND_STATE_IN_PROGRESS);
}

static h2o_timeout_t hangup_timeout;
static int hangup_timeout_ready;

static void loop_done(struct nexec *x)
{
	if (h2o_timeout_is_linked(&x->tick))
		h2o_timeout_unlink(&x->tick);
	if (x->loop_held) {
		x->loop_held = 0;
		cp_bridge_port_close(&x->port);
		x->s->inflight--;
		nexec_unref(x);
	}
}

/* The loop's part ends once the last line went out, or nobody is there
 * to send it to; the thread may still hold its reference. */
static void maybe_finish(struct nexec *x)
{
	int done;

	pthread_mutex_lock(&x->mu);
	done = x->done;
	pthread_mutex_unlock(&x->mu);
	if (done && (x->final_sent || !x->req))
		loop_done(x);
}

static void on_proceed(h2o_generator_t *gen, h2o_req_t *req)
{
	struct nexec *x = H2O_STRUCT_FROM_MEMBER(struct nexec, gen, gen);

	(void)req;
	x->sending = 0;
	flush_out(x);
	maybe_finish(x);
}

static void on_stop(h2o_generator_t *gen, h2o_req_t *req)
{
	struct nexec *x = H2O_STRUCT_FROM_MEMBER(struct nexec, gen, gen);

	(void)req;
	x->req = NULL;
	__atomic_store_n(&x->cancel, 1, __ATOMIC_RELEASE); /* the client left: kill it */
	maybe_finish(x);
}

/* Peer closed (FIN or reset) while we wait for output: cancel the command. */
static void on_tick(h2o_timeout_entry_t *e)
{
	struct nexec *x = H2O_STRUCT_FROM_MEMBER(struct nexec, tick, e);
	struct pollfd p = {.fd = x->client_fd, .events = POLLRDHUP};

	if (x->req && x->client_fd >= 0 && poll(&p, 1, 0) == 1 &&
	    (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
		__atomic_store_n(&x->cancel, 1, __ATOMIC_RELEASE);
		return;
	}
	h2o_timeout_link(x->s->loop, &hangup_timeout, &x->tick);
}

static void on_wake(struct cp_bridge_port *p)
{
	struct nexec *x = H2O_STRUCT_FROM_MEMBER(struct nexec, port, p);

	flush_out(x);
	maybe_finish(x);
}

void cp_node_exec_start(struct cp_op *op, enum cp_node_exec_kind kind,
			const struct cp_ssh_config *cfg, const char *sudo_password)
{
	struct nexec *x = calloc(1, sizeof(*x));
	h2o_req_t *req = op->req;

	if (!x) {
		cp_op_error(op, 500, "internal", "cannot start the command");
		return;
	}
	x->s = op->s;
	x->kind = kind;
	snprintf(x->node_id, sizeof(x->node_id), "%s", op->id);
	x->body = op->acc ? json_incref(op->acc) : json_object();
	snprintf(x->actor, sizeof(x->actor), "%s", op->actor.key_id);
	x->cfg = *cfg;
	snprintf(x->sudo_pw, sizeof(x->sudo_pw), "%s", sudo_password);
	pthread_mutex_init(&x->mu, NULL);
	atomic_init(&x->refs, 2);
	cp_audit(op->s, req,
		 x->kind == CP_NX_DIAGNOSE ? "node_diagnose"
		 : x->kind == CP_NX_HEALTH ? "node_health"
					   : "node_exec",
		 op->actor.key_id, op->id);
	x->req = req;
	cp_bridge_port_open(x->s->bridge, &x->port, on_wake);
	if (sl_thread_detached(nexec_main, x) < 0) {
		atomic_store(&x->refs, 1);
		nexec_unref(x);
		cp_op_error(op, 500, "internal", "cannot start the command");
		return;
	}
	x->loop_held = 1;
	x->s->inflight++;
	cp_op_release(op); /* the request is x's now */
	x->gen.proceed = on_proceed;
	x->gen.stop = on_stop;
	cp_start_stream(x->s, req, 200,
			x->kind == CP_NX_EXEC ? "application/x-ndjson" : "application/json");
	h2o_start_response(req, &x->gen);
	if (!hangup_timeout_ready) {
		h2o_timeout_init(x->s->loop, &hangup_timeout, HANGUP_CHECK_MS);
		hangup_timeout_ready = 1;
	}
	x->client_fd = cp_client_fd(x->s, req);
	x->tick.cb = on_tick;
	h2o_timeout_link(x->s->loop, &hangup_timeout, &x->tick);
}

int cp_node_exec_check(json_t *o, struct cp_err *e)
{
	json_t *c = json_object_get(o, "command"), *sh = json_object_get(o, "shell");

	if (!json_is_object(o) || (!!c == !!sh))
		return cp_err_set(e, -EINVAL, 400, "invalid_command",
				  "give \"command\" (an array of strings) or \"shell\" (a string)");
	if (c &&
	    (!json_is_array(c) || json_array_size(c) == 0 || json_array_size(c) >= EXEC_ARGS_MAX))
		return cp_err_set(e, -EINVAL, 400, "invalid_command", "command: 1 to %d strings",
				  EXEC_ARGS_MAX - 1);
	for (size_t i = 0; c && i < json_array_size(c); i++)
		if (!json_is_string(json_array_get(c, i)))
			return cp_err_set(e, -EINVAL, 400, "invalid_command",
					  "command: strings only");
	if ((sh && !json_is_string(sh)) ||
	    (json_object_get(o, "timeoutMs") &&
	     (!json_is_integer(json_object_get(o, "timeoutMs")) ||
	      json_integer_value(json_object_get(o, "timeoutMs")) < 1 ||
	      json_integer_value(json_object_get(o, "timeoutMs")) > EXEC_TIMEOUT_MS)) ||
	    (json_object_get(o, "env") && !json_is_object(json_object_get(o, "env"))) ||
	    (json_object_get(o, "cwd") && !json_is_string(json_object_get(o, "cwd"))))
		return cp_err_set(e, -EINVAL, 400, "invalid_command",
				  "shell: a string; timeoutMs: 1..%d; env: an object of strings; "
				  "cwd: a string",
				  EXEC_TIMEOUT_MS);
	return 0;
}
