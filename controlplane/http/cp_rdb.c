/*
 * cp_rdb.c: asynchronous Redis on the h2o loop (see cp_rdb.h).
 *
 * Commands are formatted by hiredis into an output buffer; one write is in
 * flight at a time and carries everything queued so far (a pipeline), while
 * the next commands gather in a second buffer. Replies are parsed with
 * hiredis's reader and matched, in order, to a FIFO of callbacks.
 *
 * A command that fails (Redis down, a timeout, no memory to queue it) moves
 * to a second FIFO, the failed one, whose callbacks a zero-delay timer runs
 * on the next turn of the loop: never inside cp_rdb_cmd*, whose caller may
 * send more commands with the same ud right after.
 */
#define H2O_USE_LIBUV 0
#include <h2o.h>

#include "http/cp_rdb.h"
#include "sl_buf.h"
#include "sl_log.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include <hiredis.h>

#define TICK_MS	       100
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
/* Nodes kept aside at create to report commands that failed for want of
 * memory: this many may fail between two turns of the loop (when their
 * callbacks run and give the nodes back). Past it the process exits (see
 * cp_rdb.h): h2o itself aborts on allocation failure, and a request left
 * unanswered forever is worse. 256 nodes: 8 KiB per connection. */
#define RESERVE	  256
#define FAULT_ENV "SLUICE_FAULT_RDB_ALLOC"

enum rdb_state { RDB_DOWN = 0, RDB_CONNECTING, RDB_UP };

/* One command waiting for its reply, or for its failure to be told; owned
 * by the FIFO it is on. from_reserve: one of cp_rdb's reserve, given back
 * there rather than freed. */
struct pending {
	cp_rdb_cb cb;
	void *ud;
	uint64_t queued_at;
	struct pending *next;
	int from_reserve;
};

/* A FIFO of pending commands (in flight, or failed). Ownership: a member of struct cp_rdb; its
 * pending entries are malloc'd (or the reserve's) and freed once their callback ran. */
struct fifo {
	struct pending *head, *tail;
};

/* Ownership: created by cp_rdb_create(), freed by cp_rdb_free(); the socket,
 * the reader, both buffers, both FIFOs and the reserve belong to it. */
struct cp_rdb {
	h2o_evloop_t *loop;
	struct sl_redis_target t;
	int timeout_ms;
	enum rdb_state state;
	h2o_socket_t *sock;
	redisReader *reader;
	struct sl_buf out;  /* commands not yet handed to the socket */
	struct sl_buf wbuf; /* the write in flight */
	int writing;
	int closing;	      /* cp_rdb_free has begun: no reconnect */
	struct fifo inflight; /* queued or written, waiting for their replies */
	struct fifo failed;   /* their callbacks run on the next turn (later) */
	struct pending reserve[RESERVE];
	struct pending *spare; /* the reserve's free nodes */
	uint64_t state_since, retry_at;
	uint32_t backoff_ms;
	h2o_timeout_t tick_timeout, later_timeout;
	h2o_timeout_entry_t tick, later;
	char last_err[300];
	struct cp_rdb_stats st;
};

static void rdb_reset(struct cp_rdb *db, const char *why);

static void fifo_push(struct fifo *f, struct pending *p)
{
	p->next = NULL;
	if (f->tail)
		f->tail->next = p;
	else
		f->head = p;
	f->tail = p;
}

static struct pending *fifo_pop(struct fifo *f)
{
	struct pending *p = f->head;

	if (p) {
		f->head = p->next;
		if (f->head == NULL)
			f->tail = NULL;
	}
	return p;
}

/* Everything on from, in order, to the end of to. */
static void fifo_splice(struct fifo *to, struct fifo *from)
{
	if (from->head == NULL)
		return;
	if (to->tail)
		to->tail->next = from->head;
	else
		to->head = from->head;
	to->tail = from->tail;
	from->head = from->tail = NULL;
}

static void node_free(struct cp_rdb *db, struct pending *p)
{
	if (p->from_reserve) {
		p->next = db->spare;
		db->spare = p;
	} else {
		free(p);
	}
}

/*
 * The node that tells a failed command's callback: malloc'd or, with no
 * memory (or an injected failure: use_reserve), from the reserve. The
 * reserve spent means more commands failed for want of memory in one turn
 * than RESERVE: nothing is left to remember them by, and the process exits
 * rather than leave their requests unanswered.
 */
static struct pending *failed_node(struct cp_rdb *db, int use_reserve)
{
	struct pending *p = use_reserve ? NULL : malloc(sizeof(*p));

	if (p) {
		p->from_reserve = 0;
		return p;
	}
	if ((p = db->spare) == NULL) {
		sl_error("redis: over %d commands failed for want of memory in one turn of the "
			 "loop; exiting rather than leave their requests unanswered",
			 RESERVE);
		abort();
	}
	db->spare = p->next;
	p->from_reserve = 1;
	return p;
}

/* Arm the timer that runs the failed FIFO on the next turn. */
static void later(struct cp_rdb *db)
{
	if (db->failed.head && !h2o_timeout_is_linked(&db->later))
		h2o_timeout_link(db->loop, &db->later_timeout, &db->later);
}

/* A command that never reached the in-flight FIFO fails: its callback runs
 * on the next turn, after those of every command failed before it. */
static void fail_later(struct cp_rdb *db, cp_rdb_cb cb, void *ud, int use_reserve)
{
	struct pending *p = failed_node(db, use_reserve);

	p->cb = cb;
	p->ud = ud;
	p->queued_at = h2o_now(db->loop);
	fifo_push(&db->failed, p);
	later(db);
}

/* The failed FIFO's callbacks, with why the connection last failed. The
 * list is detached first: a callback may send new commands, and those that
 * fail wait for the next turn, so one turn is bounded by what was there. */
static void run_failed(struct cp_rdb *db)
{
	struct fifo now = db->failed;
	struct pending *p;

	db->failed.head = db->failed.tail = NULL;
	while ((p = fifo_pop(&now)) != NULL) {
		db->st.failures++;
		if (p->cb)
			p->cb(p->ud, NULL, db->last_err);
		node_free(db, p);
	}
}

static void on_later(h2o_timeout_entry_t *e)
{
	struct cp_rdb *db = H2O_STRUCT_FROM_MEMBER(struct cp_rdb, later, e);

	run_failed(db);
	later(db);
}

static void on_write(h2o_socket_t *sock, const char *err);

/* Hand everything queued to the socket, unless a write is in flight. */
static void flush(struct cp_rdb *db)
{
	struct sl_buf tmp;
	h2o_iovec_t iov;

	if (db->state != RDB_UP || db->writing || db->out.len == 0)
		return;
	tmp = db->wbuf;
	db->wbuf = db->out;
	db->out = tmp;
	sl_buf_consume(&db->out, db->out.len);
	iov = h2o_iovec_init(db->wbuf.p, db->wbuf.len);
	db->writing = 1;
	h2o_socket_write(db->sock, &iov, 1, on_write);
}

static void on_write(h2o_socket_t *sock, const char *err)
{
	struct cp_rdb *db = sock->data;

	db->writing = 0;
	sl_buf_consume(&db->wbuf, db->wbuf.len);
	if (err != NULL) {
		rdb_reset(db, err);
		return;
	}
	flush(db);
}

static void deliver(struct cp_rdb *db, redisReply *r)
{
	struct pending *p = fifo_pop(&db->inflight);

	if (p == NULL) {
		/* A reply nobody asked for: the stream is out of step. */
		freeReplyObject(r);
		rdb_reset(db, "unexpected reply from redis");
		return;
	}
	if (p->cb)
		p->cb(p->ud, r, NULL);
	freeReplyObject(r);
	node_free(db, p);
}

static void on_read(h2o_socket_t *sock, const char *err)
{
	struct cp_rdb *db = sock->data;
	void *reply;

	if (err != NULL) {
		rdb_reset(db, "connection to redis closed");
		return;
	}
	if (redisReaderFeed(db->reader, sock->input->bytes, sock->input->size) != REDIS_OK) {
		rdb_reset(db, "redis reply buffer: out of memory");
		return;
	}
	h2o_buffer_consume(&sock->input, sock->input->size);
	/* Bounded by the bytes just fed: each reply consumes some. */
	for (;;) {
		if (redisReaderGetReply(db->reader, &reply) != REDIS_OK) {
			rdb_reset(db, "malformed reply from redis");
			return;
		}
		if (reply == NULL)
			break;
		deliver(db, reply);
		if (db->state != RDB_UP)
			return; /* a callback or the reply reset the connection */
	}
}

/* AUTH and SELECT answers: an error here is a configuration mistake. */
static void on_handshake(void *ud, redisReply *r, const char *err)
{
	struct cp_rdb *db = ud;
	char why[200];

	if (err != NULL || r->type != REDIS_REPLY_ERROR)
		return;
	snprintf(why, sizeof(why), "redis refused the handshake: %.*s", (int)r->len, r->str);
	/* Not from inside deliver's loop with the reader live: mark only. */
	snprintf(db->last_err, sizeof(db->last_err), "%s", why);
	db->state = RDB_CONNECTING; /* deliver's loop stops; the tick resets */
	db->state_since = 0;
}

static int queue_cmd(struct cp_rdb *db, cp_rdb_cb cb, void *ud, const char *cmd, size_t len)
{
	struct pending *p = malloc(sizeof(*p));

	if (p == NULL || sl_buf_append(&db->out, cmd, len) < 0) {
		free(p);
		return -ENOMEM;
	}
	p->cb = cb;
	p->ud = ud;
	p->queued_at = h2o_now(db->loop);
	p->from_reserve = 0;
	fifo_push(&db->inflight, p);
	db->st.commands++;
	return 0;
}

static int queue_handshake(struct cp_rdb *db)
{
	const char *argv[3];
	size_t lens[3];
	char *cmd = NULL, dbnum[16];
	int n, argc = 0, err = 0;

	if (db->t.password[0]) {
		argv[argc++] = "AUTH";
		if (db->t.user[0])
			argv[argc++] = db->t.user;
		argv[argc++] = db->t.password;
	} else if (db->t.db == 0)
		return 0;
	if (argc) {
		for (int i = 0; i < argc; i++)
			lens[i] = strlen(argv[i]);
		if ((n = redisFormatCommandArgv(&cmd, argc, argv, lens)) < 0)
			return -ENOMEM;
		err = queue_cmd(db, on_handshake, db, cmd, (size_t)n);
		free(cmd);
	}
	if (err == 0 && db->t.db) {
		snprintf(dbnum, sizeof(dbnum), "%d", db->t.db);
		argv[0] = "SELECT";
		argv[1] = dbnum;
		lens[0] = 6;
		lens[1] = strlen(dbnum);
		if ((n = redisFormatCommandArgv(&cmd, 2, argv, lens)) < 0)
			return -ENOMEM;
		err = queue_cmd(db, on_handshake, db, cmd, (size_t)n);
		free(cmd);
	}
	return err;
}

static void on_connect(h2o_socket_t *sock, const char *err)
{
	struct cp_rdb *db = sock->data;

	if (err != NULL) {
		char why[160];

		snprintf(why, sizeof(why), "cannot connect to redis: %s", err);
		rdb_reset(db, why);
		return;
	}
	db->state = RDB_UP;
	db->state_since = h2o_now(db->loop);
	db->backoff_ms = 0;
	db->st.connects++;
	h2o_socket_read_start(sock, on_read);
	flush(db);
}

static int resolve(const struct sl_redis_target *t, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
	char port[8];

	if (t->is_unix) {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;

		memset(un, 0, sizeof(*un));
		un->sun_family = AF_UNIX;
		snprintf(un->sun_path, sizeof(un->sun_path), "%s", t->path);
		*len = sizeof(*un);
		return 0;
	}
	snprintf(port, sizeof(port), "%d", t->port);
	/* getaddrinfo blocks: fine for the IP addresses and local names
	 * operators give here; it runs once per reconnect, not per command. */
	if (getaddrinfo(t->host, port, &hints, &res) != 0)
		return -EHOSTUNREACH;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Start connecting; commands queue behind the handshake meanwhile. */
static int rdb_connect(struct cp_rdb *db)
{
	struct sockaddr_storage ss;
	socklen_t len;

	if (resolve(&db->t, &ss, &len) < 0) {
		snprintf(db->last_err, sizeof(db->last_err), "cannot resolve redis host %.200s",
			 db->t.host);
		return -EHOSTUNREACH;
	}
	db->sock = h2o_socket_connect(&db->loop[0], (struct sockaddr *)&ss, len, on_connect);
	if (db->sock == NULL) {
		snprintf(db->last_err, sizeof(db->last_err), "cannot connect to redis: %s",
			 strerror(errno));
		return -errno;
	}
	db->sock->data = db;
	db->reader = redisReaderCreate();
	db->state = RDB_CONNECTING;
	db->state_since = h2o_now(db->loop);
	return queue_handshake(db);
}

/* Drop the connection: what waits fails (on the next turn, see later()),
 * and the next command after a backoff connects again. */
static void rdb_reset(struct cp_rdb *db, const char *why)
{
	if (db->state == RDB_DOWN)
		return;
	if (why != db->last_err)
		snprintf(db->last_err, sizeof(db->last_err), "%s", why);
	if (strcmp(why, "shutting down") != 0)
		sl_warn("redis: %s", db->last_err);
	if (db->sock) {
		h2o_socket_close(db->sock);
		db->sock = NULL;
	}
	if (db->reader) {
		redisReaderFree(db->reader);
		db->reader = NULL;
	}
	db->state = RDB_DOWN;
	db->writing = 0;
	sl_buf_consume(&db->out, db->out.len);
	sl_buf_consume(&db->wbuf, db->wbuf.len);
	db->backoff_ms = db->backoff_ms ? db->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (db->backoff_ms > BACKOFF_MAX_MS)
		db->backoff_ms = BACKOFF_MAX_MS;
	db->retry_at = h2o_now(db->loop) + db->backoff_ms;
	fifo_splice(&db->failed, &db->inflight);
	later(db);
}

/* Every TICK_MS: a reply overdue, a connect too slow or a refused handshake
 * resets the connection. */
static void on_tick(h2o_timeout_entry_t *e)
{
	struct cp_rdb *db = H2O_STRUCT_FROM_MEMBER(struct cp_rdb, tick, e);
	uint64_t now = h2o_now(db->loop);
	char why[160];

	if (db->state == RDB_CONNECTING && db->state_since == 0)
		rdb_reset(db, db->last_err);
	else if (db->state == RDB_CONNECTING && now - db->state_since > (uint64_t)db->timeout_ms) {
		snprintf(why, sizeof(why), "connect to redis timed out after %d ms",
			 db->timeout_ms);
		rdb_reset(db, why);
	} else if (db->state == RDB_UP && db->inflight.head &&
		   now - db->inflight.head->queued_at > (uint64_t)db->timeout_ms) {
		db->st.timeouts++;
		snprintf(why, sizeof(why), "redis did not answer within %d ms", db->timeout_ms);
		rdb_reset(db, why);
	}
	h2o_timeout_link(db->loop, &db->tick_timeout, &db->tick);
}

/* ---- the fault hook (see cp_rdb.h): SLUICE_FAULT_RDB_ALLOC=[COMMAND:]N ---- */

static struct {
	int read;	/* the environment looked at */
	char name[32];	/* the command counted, "" for every one */
	long nth, seen; /* the one that fails, and how many were counted */
} fault;

static void fault_init(void)
{
	const char *v = getenv(FAULT_ENV), *colon;
	char *end;

	if (fault.read)
		return;
	fault.read = 1;
	if (v == NULL || *v == '\0')
		return;
	colon = strchr(v, ':');
	if (colon && (size_t)(colon - v) < sizeof(fault.name))
		snprintf(fault.name, sizeof(fault.name), "%.*s", (int)(colon - v), v);
	fault.nth = strtol(colon ? colon + 1 : v, &end, 10);
	if (*end != '\0' || fault.nth < 1) {
		sl_warn("%s=%s ignored: [COMMAND:]N, N from 1", FAULT_ENV, v);
		fault.nth = 0;
		return;
	}
	sl_warn("%s=%s: a test hook is on: command %ld (counting %s) queued to Redis fails as "
		"if out of memory; never set it in production",
		FAULT_ENV, v, fault.nth, fault.name[0] ? fault.name : "every command");
}

/* 1 when the hook says this command (RESP, as hiredis formatted it) is the
 * one to fail. */
static int fault_hit(const char *cmd, size_t len)
{
	const char *name, *nl;
	size_t n;

	if (fault.nth == 0)
		return 0;
	/* "*<argc>\r\n$<len>\r\n<name>\r\n...": the name is the first bulk string. */
	nl = memchr(cmd, '\n', len);
	name = nl ? memchr(nl + 1, '\n', len - (size_t)(nl + 1 - cmd)) : NULL;
	if (name == NULL)
		return 0;
	name++;
	n = strtoul(nl + 2, NULL, 10);
	if (fault.name[0] && (n != strlen(fault.name) || (size_t)(name - cmd) + n > len ||
			      strncasecmp(name, fault.name, n) != 0))
		return 0;
	return ++fault.seen == fault.nth;
}

/* ---- sending ---- */

/* cmd (n bytes, or NULL when it could not be formatted) queued, or failed:
 * its callback then runs on the next turn. A command that cannot be queued
 * resets the connection (see cp_rdb.h for why). */
static void submit(struct cp_rdb *db, cp_rdb_cb cb, void *ud, const char *cmd, int n)
{
	int injected;

	if (db->state == RDB_DOWN && !db->closing && h2o_now(db->loop) >= db->retry_at &&
	    rdb_connect(db) < 0) {
		if (db->sock)
			h2o_socket_close(db->sock);
		db->sock = NULL;
		db->state = RDB_CONNECTING; /* so that reset runs */
		rdb_reset(db, db->last_err);
	}
	if (db->state == RDB_DOWN) {
		fail_later(db, cb, ud, 0);
		return;
	}
	injected = n >= 0 && fault_hit(cmd, (size_t)n);
	if (n < 0 || injected || queue_cmd(db, cb, ud, cmd, (size_t)n) < 0) {
		rdb_reset(db,
			  n == -2 ? "redis command: a bad format" : "redis command: out of memory");
		fail_later(db, cb, ud, injected);
		return;
	}
	flush(db);
}

void cp_rdb_cmdv(struct cp_rdb *db, cp_rdb_cb cb, void *ud, int argc, const char **argv,
		 const size_t *argvlen)
{
	char *cmd = NULL;
	int n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);

	submit(db, cb, ud, cmd, n);
	free(cmd);
}

void cp_rdb_cmdf(struct cp_rdb *db, cp_rdb_cb cb, void *ud, const char *fmt, ...)
{
	char *cmd = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = redisvFormatCommand(&cmd, fmt, ap);
	va_end(ap);
	submit(db, cb, ud, n < 0 ? NULL : cmd, n);
	free(cmd);
}

int cp_rdb_create(struct cp_rdb **out, void *loop, const struct sl_redis_target *t, int timeout_ms)
{
	struct cp_rdb *db = calloc(1, sizeof(*db));

	if (db == NULL)
		return -ENOMEM;
	fault_init();
	db->loop = loop;
	db->t = *t;
	db->timeout_ms = timeout_ms;
	for (size_t i = 0; i < RESERVE; i++) {
		db->reserve[i].next = db->spare;
		db->spare = &db->reserve[i];
	}
	h2o_timeout_init(db->loop, &db->tick_timeout, TICK_MS);
	h2o_timeout_init(db->loop, &db->later_timeout, 0);
	db->tick.cb = on_tick;
	db->later.cb = on_later;
	h2o_timeout_link(db->loop, &db->tick_timeout, &db->tick);
	*out = db;
	return 0;
}

void cp_rdb_free(struct cp_rdb *db)
{
	if (db == NULL)
		return;
	db->closing = 1;
	db->state = RDB_CONNECTING;
	rdb_reset(db, "shutting down");
	/* Now, not on a turn that will not come: a callback that sends again
	 * meets a closed connection and fails too, into the next round. */
	while (db->failed.head)
		run_failed(db);
	if (h2o_timeout_is_linked(&db->later))
		h2o_timeout_unlink(&db->later);
	h2o_timeout_dispose(db->loop, &db->later_timeout);
	h2o_timeout_unlink(&db->tick);
	h2o_timeout_dispose(db->loop, &db->tick_timeout);
	sl_buf_free(&db->out);
	sl_buf_free(&db->wbuf);
	memset(db->t.password, 0, sizeof(db->t.password));
	free(db);
}

int cp_rdb_up(const struct cp_rdb *db)
{
	return db->state == RDB_UP;
}

const char *cp_rdb_last_error(const struct cp_rdb *db)
{
	return db->last_err;
}

void cp_rdb_get_stats(const struct cp_rdb *db, struct cp_rdb_stats *st)
{
	*st = db->st;
}

int cp_exec_ok(const redisReply *r)
{
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return 0;
	for (size_t i = 0; i < r->elements; i++)
		if (r->element[i]->type == REDIS_REPLY_ERROR)
			return 0;
	return 1;
}
