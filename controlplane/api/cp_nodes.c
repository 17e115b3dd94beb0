/*
 * cp_nodes.c: the hosts an operator runs relays on, and the SSH executor
 * behind the API (admin scope only).
 *
 *   POST   /api/v1/nodes               register a host: address, user, its host
 *                                      key (a known_hosts key: "ssh-ed25519 AAAA...")
 *                                      and credentials, sealed at rest (pr_seal)
 *   GET    /api/v1/nodes               list (never a secret)
 *   GET    /api/v1/nodes/{id}          one
 *   DELETE /api/v1/nodes/{id}          forget it
 *   POST   /api/v1/nodes/{id}/exec     run a command; the answer streams as
 *                                      it runs: NDJSON, one {"stream","line"} per
 *                                      line of output, then {"exit",...}
 *   POST   /api/v1/nodes/{id}/diagnose the troubleshooter's report
 *   GET    /api/v1/nodes/{id}/health   the health monitor: a probe on each of
 *                                      the node's warm connections, figures,
 *                                      trends; dead connections replaced
 *   POST   /api/v1/nodes/{id}/provision make it a running relay: an
 *                                      asynchronous job (cp_jobs.c)
 *
 * Redis: sl:node:<id> (hash: name host port user hostkey created creds) and
 * the set sl:nodes. SSH work runs on a thread of its own per request, never
 * on the HTTP loop: the thread hands output to the loop through a buffer and
 * a pipe the loop watches, so a slow host or a slow client holds up neither
 * the API nor the SSH connection. A client that goes away cancels its
 * command (the remote process is killed).
 */
#include "api/cp_jobs.h"
#include "api/cp_node_pools.h"
#include "api/cp_nodes.h"
#include "http/cp_audit_log.h"
#include "http/cp_auth.h"
#include "http/cp_reply.h"
#include "http/cp_route.h"
#include "ssh/cp_ssh.h"
#include "ssh/cp_ssh_diag.h"
#include "pr_seal.h"
#include "pr_token.h"
#include "sl_buf.h"
#include "sl_thread.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#define NODE_FIELDS	"name host port user hostkey created creds"
#define NODE_NFIELDS	7
#define NODES_MAX	1000
#define OUT_MAX		(4u << 20) /* streamed output buffered at most; more is dropped */
#define CREDS_MAX	6000
#define EXEC_ARGS_MAX	64
#define EXEC_ENV_MAX	32
#define EXEC_TIMEOUT_MS (10 * 60 * 1000)
/* How often a streamed answer that is waiting looks for a client that hung
 * up (h2o notices only when it writes, and a quiet command writes nothing). */
#define HANGUP_CHECK_MS 200

enum { F_NAME, F_HOST, F_PORT, F_USER, F_HOSTKEY, F_CREATED, F_CREDS };

/* The work a node's thread does for exec, diagnose and health. */
enum nexec_kind { NX_EXEC = 0, NX_DIAGNOSE, NX_HEALTH };

/*
 * A nodes request. The op's own (cp_op_new with this size); it owns nothing
 * more (a body kept for exec or provision is op->acc).
 */
struct node_op {
	struct cp_op op;
	enum nexec_kind kind; /* exec, diagnose, health: which */
	long pending;	      /* list: the HMGETs still to answer */
};

static struct node_op *node_of(struct cp_op *op)
{
	return H2O_STRUCT_FROM_MEMBER(struct node_op, op, op);
}

static const char *fld(const redisReply *r, int i)
{
	const redisReply *e = r->element[i];

	return e->type == REDIS_REPLY_STRING ? e->str : "";
}

static json_t *node_json(const char *id, const redisReply *r)
{
	return json_pack("{s:s,s:s,s:s,s:i,s:s,s:s,s:o}", "id", id, "name", fld(r, F_NAME), "host",
			 fld(r, F_HOST), "port", atoi(fld(r, F_PORT)), "user", fld(r, F_USER),
			 "hostKey", fld(r, F_HOSTKEY), "createdAt",
			 cp_iso_time(strtoull(fld(r, F_CREATED), NULL, 10)));
}

static int printable(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return 0;
	return 1;
}

/* ---- register ---- */

/* A known_hosts key: "type base64", no host part. */
static int host_key_ok(const char *k)
{
	const char *sp = strchr(k, ' ');

	if (!sp || strchr(sp + 1, ' ') || strlen(k) > 900 ||
	    (strncmp(k, "ssh-", 4) != 0 && strncmp(k, "ecdsa-", 6) != 0))
		return 0;
	for (const char *c = sp + 1; *c; c++)
		if (!(*c >= 'A' && *c <= 'Z') && !(*c >= 'a' && *c <= 'z') &&
		    !(*c >= '0' && *c <= '9') && *c != '+' && *c != '/' && *c != '=')
			return 0;
	return 1;
}

static const char *const create_fields[] = {"name",	     "host",	 "port",
					    "user",	     "hostKey",	 "privateKey",
					    "keyPassphrase", "password", "sudoPassword"};

/* Validate the body; on success *creds is the JSON of the secrets (caller frees). */
static int parse_create(struct cp_op *op, json_t *o, char **creds)
{
	const char *key;
	json_t *v, *c;

	json_object_foreach(o, key, v)
	{
		if (cp_op_field(op, create_fields, sizeof(create_fields) / sizeof(create_fields[0]),
				key) < 0)
			return -1;
		if (strcmp(key, "port") == 0 ? !json_is_integer(v) : !json_is_string(v)) {
			cp_op_error(op, 400, "invalid_type", "%s must be a %s", key,
				    strcmp(key, "port") == 0 ? "number" : "string");
			return -1;
		}
	}
	if (!printable(json_string_value(json_object_get(o, "host")) ?: "", 253)) {
		cp_op_error(op, 400, "invalid_host", "host: a name or address is required");
		return -1;
	}
	if (!printable(json_string_value(json_object_get(o, "user")) ?: "", 32)) {
		cp_op_error(op, 400, "invalid_user", "user: a login name is required");
		return -1;
	}
	if (json_object_get(o, "port") &&
	    (json_integer_value(json_object_get(o, "port")) < 1 ||
	     json_integer_value(json_object_get(o, "port")) > 65535)) {
		cp_op_error(op, 400, "invalid_port", "port must be 1..65535");
		return -1;
	}
	if (!host_key_ok(json_string_value(json_object_get(o, "hostKey")) ?: "")) {
		cp_op_error(op, 400, "invalid_host_key",
			    "hostKey: the host's public key as known_hosts has it (\"ssh-ed25519 "
			    "AAAA...\", from ssh-keyscan), checked strictly on every connection");
		return -1;
	}
	if (!json_object_get(o, "privateKey") && !json_object_get(o, "password")) {
		cp_op_error(op, 400, "missing_credential", "give privateKey or password");
		return -1;
	}
	c = json_object();
	json_object_foreach(o, key, v)
	{
		if (strcmp(key, "privateKey") == 0 || strcmp(key, "keyPassphrase") == 0 ||
		    strcmp(key, "password") == 0 || strcmp(key, "sudoPassword") == 0)
			json_object_set(c, key, v);
	}
	*creds = json_dumps(c, JSON_COMPACT);
	json_decref(c);
	if (!*creds || strlen(*creds) > CREDS_MAX) {
		free(*creds);
		cp_op_error(op, 413, "too_large", "credentials too large");
		return -1;
	}
	return 0;
}

static void on_created(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || !cp_exec_ok(r)) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "node_created", op->actor.key_id, op->id);
	cp_op_reply(op, 201, json_incref(op->acc));
}

static void nodes_create(struct cp_op *op)
{
	const uint8_t *sec = (const uint8_t *)op->s->cfg.session_secret;
	char *creds = NULL, *sealed = NULL, aad[80], rnd[13];
	json_t *o;
	int n;

	if (!op->req) {
		cp_op_reply(op, 499, json_null());
		return;
	}
	o = op->req->entity.len ? json_loadb(op->req->entity.base, op->req->entity.len,
					     JSON_REJECT_DUPLICATES, NULL)
				: NULL;
	if (!json_is_object(o)) {
		json_decref(o);
		cp_op_error(op, 400, "invalid_json", "the body must be a JSON object");
		return;
	}
	if (parse_create(op, o, &creds) < 0) {
		json_decref(o);
		return;
	}
	pr_random_alnum(rnd, 12);
	snprintf(op->id, sizeof(op->id), "nd_%.12s", rnd);
	snprintf(aad, sizeof(aad), "sl:node:%s", op->id);
	sealed = malloc(PR_SEAL_TEXT_LEN(strlen(creds)));
	n = sealed ? pr_seal(sec, strlen((const char *)sec), aad, creds, strlen(creds), sealed,
			     PR_SEAL_TEXT_LEN(strlen(creds)))
		   : -ENOMEM;
	explicit_bzero(creds, strlen(creds));
	free(creds);
	if (n < 0) {
		free(sealed);
		json_decref(o);
		cp_op_error(op, 500, "internal", "cannot seal the credentials");
		return;
	}
	op->now = (uint64_t)time(NULL);
	op->acc = json_pack(
		"{s:s,s:s,s:s,s:I,s:s,s:s,s:o}", "id", op->id, "name",
		json_string_value(json_object_get(o, "name")) ?: "", "host",
		json_string_value(json_object_get(o, "host")), "port",
		json_object_get(o, "port") ? json_integer_value(json_object_get(o, "port")) : 22,
		"user", json_string_value(json_object_get(o, "user")), "hostKey",
		json_string_value(json_object_get(o, "hostKey")), "createdAt",
		cp_iso_time(op->now));
	cp_rdb_cmdf(op->s->db, NULL, NULL, "MULTI");
	cp_rdb_cmdf(
		op->s->db, NULL, NULL,
		"HSET sl:node:%s name %s host %s port %d user %s hostkey %s created %llu creds %s",
		op->id, json_string_value(json_object_get(op->acc, "name")),
		json_string_value(json_object_get(op->acc, "host")),
		(int)json_integer_value(json_object_get(op->acc, "port")),
		json_string_value(json_object_get(op->acc, "user")),
		json_string_value(json_object_get(op->acc, "hostKey")), (unsigned long long)op->now,
		sealed);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "SADD sl:nodes %s", op->id);
	cp_rdb_cmdf(op->s->db, on_created, op, "EXEC");
	free(sealed);
	json_decref(o);
}

/* ---- list, show, delete ---- */

static void on_list(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	size_t step = op->step++;

	if (err || r->type == REDIS_REPLY_ERROR) {
		cp_op_step_failed(op, r, err);
	} else if (step == 0 && r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < r->elements && i < NODES_MAX; i++) {
			json_array_append_new(json_object_get(op->acc, "nodes"),
					      json_string(r->element[i]->str));
			cp_rdb_cmdf(op->s->db, on_list, op, "HMGET sl:node:%s " NODE_FIELDS,
				    r->element[i]->str);
			node_of(op)->pending++;
		}
	} else if (step > 0 && r->type == REDIS_REPLY_ARRAY && r->elements == NODE_NFIELDS) {
		json_t *list = json_object_get(op->acc, "nodes");
		json_t *id = json_array_get(list, step - 1);

		json_array_set_new(list, step - 1, node_json(json_string_value(id), r));
	}
	if ((long)step < node_of(op)->pending)
		return;
	if (op->step_failed) {
		cp_op_step_error(op, "nodes");
		return;
	}
	cp_op_reply(op, 200, json_incref(op->acc));
}

static void nodes_list(struct cp_op *op)
{
	op->acc = json_pack("{s:[]}", "nodes");
	op->step = 0;
	cp_rdb_cmdf(op->s->db, on_list, op, "SMEMBERS sl:nodes");
}

/* The record, or an answer (404, 503) and -1. */
static int got_node(struct cp_op *op, redisReply *r, const char *err)
{
	if (err || !r || r->type != REDIS_REPLY_ARRAY || r->elements != NODE_NFIELDS) {
		cp_op_redis_error(op, r, err);
		return -1;
	}
	if (!*fld(r, F_HOST)) {
		cp_op_error(op, 404, "not_found", "no node %s", op->id);
		return -1;
	}
	return 0;
}

static void on_show(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (got_node(op, r, err) == 0)
		cp_op_reply(op, 200, node_json(op->id, r));
}

static void nodes_show(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_show, op, "HMGET sl:node:%s " NODE_FIELDS, op->id);
}

static void on_deleted(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;

	if (err || r->type != REDIS_REPLY_INTEGER) {
		cp_op_redis_error(op, r, err);
		return;
	}
	if (r->integer == 0) {
		cp_op_error(op, 404, "not_found", "no node %s", op->id);
		return;
	}
	if (op->req)
		cp_audit(op->s, op->req, "node_deleted", op->actor.key_id, op->id);
	cp_rdb_cmdf(op->s->db, NULL, NULL, "SREM sl:nodes %s", op->id);
	cp_node_pool_forget(op->id);
	cp_op_reply(op, 200, json_pack("{s:s,s:s}", "id", op->id, "status", "deleted"));
}

static void nodes_delete(struct cp_op *op)
{
	cp_rdb_cmdf(op->s->db, on_deleted, op, "DEL sl:node:%s", op->id);
}

/* ---- exec and diagnose: a thread per request ---- */

/*
 * One exec, diagnose or health check. Ownership: counted, two references:
 * the loop's (until the answer is complete or the client is gone) and the
 * thread's (until it has posted its last output); nexec_unref drops one, the last frees out and
 * body and wipes the secrets. The thread appends to out under mu and writes a byte to the pipe; the
 * loop reads the pipe and sends what out holds.
 */
struct nexec {
	atomic_int refs;
	struct cp_server *s;
	h2o_req_t *req; /* NULL once the client is gone */
	h2o_generator_t gen;
	h2o_socket_t *sock; /* the pipe's read end, on the loop */
	int fds[2];
	enum nexec_kind kind;
	char node_id[64];
	int client_fd; /* to see a hang-up while nothing is written; -1: unknown */
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
	if (write(x->fds[1], "x", 1) < 0) {
		/* the pipe is full: the loop has a wake-up pending already */
	}
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

/* The body's command: {"command": [...]} or {"shell": "..."}. */
static int build_cmd(struct nexec *x, struct cp_ssh_cmd *cmd, const char **argv, const char **env,
		     char envbuf[][300])
{
	json_t *c = json_object_get(x->body, "command"), *e = json_object_get(x->body, "env"), *v;
	const char *k;
	size_t n = 0;

	if (json_is_array(c)) {
		for (size_t i = 0; i < json_array_size(c) && i + 1 < EXEC_ARGS_MAX; i++)
			if ((argv[n++] = json_string_value(json_array_get(c, i))) == NULL)
				return -1;
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

	if (x->kind == NX_DIAGNOSE)
		post(x, cp_ssh_diagnose(&x->cfg), 1);
	else if (x->kind == NX_HEALTH)
		run_health(x);
	else
		run_exec(x);
	/* The write end is the thread's: closed after its last post, so the loop
	 * never closes a descriptor the thread may still write to. */
	close(x->fds[1]);
	nexec_unref(x);
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
	if (x->sock) {
		h2o_socket_read_stop(x->sock);
		h2o_socket_close(x->sock);
		x->sock = NULL;
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

static void on_wake(h2o_socket_t *sock, const char *err)
{
	struct nexec *x = sock->data;

	h2o_buffer_consume(&sock->input, sock->input->size);
	if (err) /* the thread closed its end after its last post */
		h2o_socket_read_stop(sock);
	flush_out(x);
	maybe_finish(x);
}

/* The node's configuration from its record; the secrets unsealed. */
static int node_config(struct cp_op *op, redisReply *r, struct cp_ssh_config *cfg, char *sudo_pw,
		       size_t pw_cap)
{
	const uint8_t *sec = (const uint8_t *)op->s->cfg.session_secret;
	char aad[80], *plain = malloc(CREDS_MAX + 1);
	json_t *c;
	int n, port = atoi(fld(r, F_PORT));

	snprintf(aad, sizeof(aad), "sl:node:%s", op->id);
	n = plain ? pr_unseal(sec, strlen((const char *)sec), aad, fld(r, F_CREDS), plain,
			      CREDS_MAX + 1)
		  : -ENOMEM;
	c = n >= 0 ? json_loadb(plain, (size_t)n, 0, NULL) : NULL;
	if (plain) {
		explicit_bzero(plain, CREDS_MAX + 1);
		free(plain);
	}
	if (!c) {
		cp_op_error(op, 500, "sealed_credentials",
			    "the node's credentials cannot be opened (was the session secret "
			    "changed?): register the node again");
		return -1;
	}
	snprintf(cfg->host, sizeof(cfg->host), "%s", fld(r, F_HOST));
	cfg->port = port;
	snprintf(cfg->user, sizeof(cfg->user), "%s", fld(r, F_USER));
	if (port == 22)
		snprintf(cfg->known_host_line, sizeof(cfg->known_host_line), "%s %s",
			 fld(r, F_HOST), fld(r, F_HOSTKEY));
	else
		snprintf(cfg->known_host_line, sizeof(cfg->known_host_line), "[%s]:%d %s",
			 fld(r, F_HOST), port, fld(r, F_HOSTKEY));
	snprintf(cfg->key_data, sizeof(cfg->key_data), "%s",
		 json_string_value(json_object_get(c, "privateKey")) ?: "");
	snprintf(cfg->key_passphrase, sizeof(cfg->key_passphrase), "%s",
		 json_string_value(json_object_get(c, "keyPassphrase")) ?: "");
	snprintf(cfg->password, sizeof(cfg->password), "%s",
		 json_string_value(json_object_get(c, "password")) ?: "");
	snprintf(sudo_pw, pw_cap, "%s",
		 json_string_value(json_object_get(c, "sudoPassword")) ?: "");
	cfg->connect_timeout_ms = 10000;
	json_object_clear(c);
	json_decref(c);
	return 0;
}

static void on_exec_node(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct nexec *x;
	h2o_req_t *req;

	if (got_node(op, r, err) < 0)
		return;
	if (!op->req || op->s->stopping) {
		cp_op_error(op, 503, "shutting_down", "the control plane is stopping; retry");
		return;
	}
	x = calloc(1, sizeof(*x));
	if (!x || pipe2(x->fds, O_CLOEXEC | O_NONBLOCK) < 0) {
		free(x);
		cp_op_error(op, 500, "internal", "cannot start the command");
		return;
	}
	x->s = op->s;
	x->kind = node_of(op)->kind;
	snprintf(x->node_id, sizeof(x->node_id), "%s", op->id);
	x->body = op->acc ? json_incref(op->acc) : json_object();
	snprintf(x->actor, sizeof(x->actor), "%s", op->actor.key_id);
	pthread_mutex_init(&x->mu, NULL);
	atomic_init(&x->refs, 2);
	if (node_config(op, r, &x->cfg, x->sudo_pw, sizeof(x->sudo_pw)) < 0) {
		close(x->fds[0]);
		close(x->fds[1]);
		x->refs = 1;
		nexec_unref(x);
		return;
	}
	req = op->req;
	cp_audit(op->s, req,
		 x->kind == NX_DIAGNOSE ? "node_diagnose"
		 : x->kind == NX_HEALTH ? "node_health"
					: "node_exec",
		 op->actor.key_id, op->id);
	x->req = req;
	x->sock = h2o_evloop_socket_create(op->s->loop, x->fds[0], 0);
	x->sock->data = x;
	if (sl_thread_detached(nexec_main, x) < 0) {
		h2o_socket_close(x->sock);
		close(x->fds[1]);
		x->refs = 1;
		nexec_unref(x);
		cp_op_error(op, 500, "internal", "cannot start the command");
		return;
	}
	x->s->inflight++;
	cp_op_release(op); /* the request is x's now */
	x->gen.proceed = on_proceed;
	x->gen.stop = on_stop;
	cp_start_stream(x->s, req, 200,
			x->kind == NX_EXEC ? "application/x-ndjson" : "application/json");
	h2o_start_response(req, &x->gen);
	h2o_socket_read_start(x->sock, on_wake);
	if (!hangup_timeout_ready) {
		h2o_timeout_init(x->s->loop, &hangup_timeout, HANGUP_CHECK_MS);
		hangup_timeout_ready = 1;
	}
	x->client_fd = cp_client_fd(x->s, req);
	x->tick.cb = on_tick;
	h2o_timeout_link(x->s->loop, &hangup_timeout, &x->tick);
}

/* The command is checked before the node is read: a bad body is a 400. */
static int check_exec_body(struct cp_op *op, json_t *o)
{
	json_t *c = json_object_get(o, "command"), *sh = json_object_get(o, "shell");

	if (!json_is_object(o) || (!!c == !!sh)) {
		cp_op_error(op, 400, "invalid_command",
			    "give \"command\" (an array of strings) or \"shell\" (a string)");
		return -1;
	}
	if (c &&
	    (!json_is_array(c) || json_array_size(c) == 0 || json_array_size(c) >= EXEC_ARGS_MAX)) {
		cp_op_error(op, 400, "invalid_command", "command: 1 to %d strings",
			    EXEC_ARGS_MAX - 1);
		return -1;
	}
	for (size_t i = 0; c && i < json_array_size(c); i++)
		if (!json_is_string(json_array_get(c, i))) {
			cp_op_error(op, 400, "invalid_command", "command: strings only");
			return -1;
		}
	if ((sh && !json_is_string(sh)) ||
	    (json_object_get(o, "timeoutMs") &&
	     (!json_is_integer(json_object_get(o, "timeoutMs")) ||
	      json_integer_value(json_object_get(o, "timeoutMs")) < 1 ||
	      json_integer_value(json_object_get(o, "timeoutMs")) > EXEC_TIMEOUT_MS)) ||
	    (json_object_get(o, "env") && !json_is_object(json_object_get(o, "env"))) ||
	    (json_object_get(o, "cwd") && !json_is_string(json_object_get(o, "cwd")))) {
		cp_op_error(op, 400, "invalid_command",
			    "shell: a string; timeoutMs: 1..%d; env: an object of strings; cwd: a "
			    "string",
			    EXEC_TIMEOUT_MS);
		return -1;
	}
	return 0;
}

static void nodes_exec(struct cp_op *op)
{
	json_t *o = NULL;

	if (!op->req) {
		cp_op_reply(op, 499, json_null());
		return;
	}
	if (node_of(op)->kind == NX_EXEC) {
		o = json_loadb(op->req->entity.base ? op->req->entity.base : "",
			       op->req->entity.len, JSON_REJECT_DUPLICATES, NULL);
		if (check_exec_body(op, o) < 0) {
			json_decref(o);
			return;
		}
		op->acc = o;
	}
	cp_rdb_cmdf(op->s->db, on_exec_node, op, "HMGET sl:node:%s " NODE_FIELDS, op->id);
}

/* ---- provisioning: the node's configuration handed to a job ---- */

static void on_provision_node(void *ud, redisReply *r, const char *err)
{
	struct cp_op *op = ud;
	struct cp_ssh_config *cfg;
	char pw[128] = "";

	if (got_node(op, r, err) < 0)
		return;
	if (!(cfg = calloc(1, sizeof(*cfg)))) {
		cp_op_error(op, 500, "internal", "out of memory");
		return;
	}
	if (node_config(op, r, cfg, pw, sizeof(pw)) == 0)
		cp_jobs_provision(op, &(struct cp_job_node){.id = op->id,
							    .name = fld(r, F_NAME),
							    .cfg = cfg,
							    .sudo_password = pw});
	cp_ssh_config_wipe(cfg);
	free(cfg);
	explicit_bzero(pw, sizeof(pw));
}

static void nodes_provision(struct cp_op *op)
{
	json_t *o;

	if (!op->req) {
		cp_op_reply(op, 499, json_null());
		return;
	}
	o = op->req->entity.len ? json_loadb(op->req->entity.base, op->req->entity.len,
					     JSON_REJECT_DUPLICATES, NULL)
				: json_object();
	if (cp_jobs_check_provision(op, o) < 0) {
		json_decref(o);
		return;
	}
	op->acc = o;
	cp_rdb_cmdf(op->s->db, on_provision_node, op, "HMGET sl:node:%s " NODE_FIELDS, op->id);
}

/* ---- routing ---- */

int cp_nodes_route(struct cp_server *s, h2o_req_t *req, const char *id, size_t id_len)
{
	int post = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"));
	int get = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("GET"));
	int del = h2o_memis(req->method.base, req->method.len, H2O_STRLIT("DELETE"));
	const char *slash = id ? memchr(id, '/', id_len) : NULL;
	size_t n = slash ? (size_t)(slash - id) : id_len;
	void (*next)(struct cp_op *) = NULL;
	enum nexec_kind kind = NX_EXEC;
	struct cp_op *op;

	if (!id) {
		next = post ? nodes_create : get ? nodes_list : NULL;
	} else if (!cp_prefixed_id_ok(id, n, "nd_", 40)) {
		cp_send_error(s, req, 404, "not_found", "no such node");
		return 0;
	} else if (!slash) {
		next = get ? nodes_show : del ? nodes_delete : NULL;
	} else if (post && id_len - n == 5 && memcmp(slash, "/exec", 5) == 0) {
		next = nodes_exec;
	} else if (post && id_len - n == 9 && memcmp(slash, "/diagnose", 9) == 0) {
		next = nodes_exec;
		kind = NX_DIAGNOSE;
	} else if (post && id_len - n == 10 && memcmp(slash, "/provision", 10) == 0) {
		next = nodes_provision;
	} else if (get && id_len - n == 7 && memcmp(slash, "/health", 7) == 0) {
		next = nodes_exec;
		kind = NX_HEALTH;
	} else {
		cp_send_error(s, req, 404, "not_found", "no such endpoint");
		return 0;
	}
	if (!next) {
		cp_send_error(s, req, 405, "method_not_allowed", "method not allowed on this path");
		return 0;
	}
	if ((op = cp_op_new(s, req, sizeof(struct node_op))) == NULL)
		return -1;
	if (id) {
		memcpy(op->id, id, n);
		op->id[n] = '\0';
	}
	node_of(op)->kind = kind;
	cp_auth(op, CP_SCOPE_ADMIN, next);
	return 0;
}
