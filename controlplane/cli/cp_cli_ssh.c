/*
 * cp_cli_ssh.c: `sluice-control ssh ...` and `sluice-control node ...`: their
 * options, and the verbs that run the executor from a shell (for operators,
 * for the tests and the benchmark); the node verbs, which drive the
 * managers, are cp_cli_node.c's.
 *
 *   exec  streams the command's output as it comes and exits with its exit
 *         code (255 when SSH itself failed, as ssh(1) does); --json prints
 *         one result object instead; --repeat/--parallel run it many times
 *         on one pool and print latency figures.
 *   put, get, sync  SFTP with checksums; one JSON line with the result.
 *   health, diagnose  the health monitor and the troubleshooter.
 *   provision, lockdown, audit  (node) see cp_cli_node.c.
 *
 * Secrets come from environment variables named by flags
 * (--sudo-password-env NAME), never from the command line, where ps shows them.
 */
#include "cli/cp_cli.h"
#include "cli/cp_cli_node.h"
#include "cli/cp_cli_ssh.h"
#include "ssh/cp_ssh_diag.h"
#include "sl_buf.h"
#include "sl_cli.h"
#include "sl_log.h"
#include "sl_time.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libssh2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ENV_MAX 32

static const struct sl_opt ssh_opts[] = {
	SL_OPTS_COMMON,
	SL_INT("port", "0", 0, 65535, "SSH port (22)"),
	SL_STR("user", "", "remote user (or user@HOST)"),
	SL_STR("key", "", "private key file (Ed25519 or ECDSA)"),
	SL_STR("key-passphrase-env", "", "variable holding the key's passphrase"),
	SL_STR("password-env", "", "variable holding a login password"),
	SL_BOOL("agent", "false", "try ssh-agent's keys"),
	SL_STR("known-hosts", "", "known_hosts file (~/.ssh/known_hosts)"),
	SL_ENUM("host-key-check", "strict", "strict|accept-new|off",
		"strict: the key must be known; accept-new: record an unknown host's key"),
	SL_INT("connect-timeout", "10000", 100, 600000, "ms for connect, handshake and auth"),
	SL_INT("timeout", "0", 0, 86400000, "ms before the command is killed (0: none)"),
	SL_INT("cancel-after", "0", 0, 86400000, "ms after which the command is cancelled (tests)"),
	SL_STR("cwd", "", "remote working directory"),
	SL_STR("env", "", "NAME=value[,NAME=value...] for the command"),
	SL_BOOL("sudo", "false", "run as root with sudo"),
	SL_STR("sudo-password-env", "", "variable holding the sudo password"),
	SL_STR("script", "", "run this local script file instead of a command"),
	SL_ENUM("interp", "sh", "sh|bash|python3", "the script's interpreter"),
	SL_BOOL("json", "false", "print one JSON result"),
	SL_INT("repeat", "1", 1, 1000000, "run the command this many times"),
	SL_INT("parallel", "1", 1, 256, "from this many threads at once"),
	SL_INT("max-conns", "4", 1, 32, "connections in the pool"),
	SL_INT("max-channels", "8", 1, 64, "channels per connection"),
	SL_STR("audit-log", "", "append one JSON line per command here"),
	SL_STR("allow", "", "comma-separated globs: only matching commands run"),
	SL_STR("deny", "", "comma-separated globs: matching commands never run"),
	SL_INT("watch", "0", 0, 86400, "health: check again for this many seconds"),
	SL_INT("interval", "1000", 50, 3600000, "health: ms between checks"),
	SL_INT("warm", "1", 0, 32, "health: connections to open first"),
	SL_ENUM("recovery", "reconnect", "reconnect|rebuild|none",
		"health: what to do when a probe fails"),
	SL_BOOL("check", "false", "provision: show what would change, change nothing"),
	SL_STR("relay-binary", "", "provision: the sluice-relay to install"),
	SL_STR("relay-redis", "redis://127.0.0.1:6379", "provision: Redis as the relay reaches it"),
	SL_STR("relay-id", "", "provision: the relay's id (default: the host)"),
	SL_STR("relay-http", "0.0.0.0:80", "provision: public HTTP address"),
	SL_STR("relay-agents", "0.0.0.0:7000", "provision: agents' address"),
	SL_STR("relay-admin", "127.0.0.1:9090", "provision: admin address (health, metrics)"),
	SL_STR("relay-domain", "localhost", "provision: the tunnels' domain"),
	SL_STR("session-secret-env", "SESSION_SECRET_KEY",
	       "provision: variable holding the control plane's session secret"),
	SL_ENUM("lockdown", "standard", "none|basic|standard|strict",
		"provision, lockdown: hardening level"),
	SL_ENUM("firewall", "auto", "auto|ufw|iptables",
		"provision, lockdown: the firewall (auto: ufw, or iptables where ufw is absent)"),
	SL_STR("ssh-extra", "", "provision, lockdown: more sshd_config lines (\\n between them)"),
	SL_STR("verify-redis", "",
	       "provision: Redis as the control plane sees it, to see the relay join"),
	SL_STR("mode", "", "put/get: file mode in octal"),
	SL_STR("owner", "", "put: user[:group] (with --sudo)"),
};

static void versions(FILE *out)
{
	fprintf(out, "libssh2 %s\n", LIBSSH2_VERSION);
}

/* The host's configuration from flags and the target word. */
static int build_config(const struct sl_config *cfg, const char *target, struct cp_ssh_config *c)
{
	const char *pol = sl_config_str(cfg, "host-key-check");

	memset(c, 0, sizeof(*c));
	snprintf(c->user, sizeof(c->user), "%s", sl_config_str(cfg, "user"));
	if (cp_ssh_target_parse(target, c) < 0) {
		fprintf(stderr, "sluice-control ssh: bad target \"%s\" (want [user@]host[:port])\n",
			target);
		return -EINVAL;
	}
	if (sl_config_int(cfg, "port"))
		c->port = (int)sl_config_int(cfg, "port");
	snprintf(c->key_file, sizeof(c->key_file), "%s", sl_config_str(cfg, "key"));
	snprintf(c->known_hosts, sizeof(c->known_hosts), "%s", sl_config_str(cfg, "known-hosts"));
	cp_cli_env_secret(cfg, "key-passphrase-env", c->key_passphrase, sizeof(c->key_passphrase));
	cp_cli_env_secret(cfg, "password-env", c->password, sizeof(c->password));
	c->use_agent = (int)sl_config_int(cfg, "agent");
	c->hostkey_policy = strcmp(pol, "accept-new") == 0 ? CP_SSH_HOSTKEY_ACCEPT_NEW
			    : strcmp(pol, "off") == 0	   ? CP_SSH_HOSTKEY_OFF
							   : CP_SSH_HOSTKEY_STRICT;
	c->connect_timeout_ms = (int)sl_config_int(cfg, "connect-timeout");
	c->max_conns = (int)sl_config_int(cfg, "max-conns");
	c->max_channels = (int)sl_config_int(cfg, "max-channels");
	return 0;
}

/* Split "a,b,c" in place into out (NULL-terminated). */
static size_t split(char *s, const char **out, size_t max)
{
	size_t n = 0;

	for (char *save = NULL, *t = strtok_r(s, ",", &save); t && n + 1 < max;
	     t = strtok_r(NULL, ",", &save))
		out[n++] = t;
	out[n] = NULL;
	return n;
}

/* One exec (or its --repeat runs) from do_exec, shared by its worker
 * threads under mu. Ownership: on do_exec's stack; lat (calloc'd) and the
 * last result's buffers (cp_ssh_result_free) are freed by do_exec. */
struct run_ctx {
	struct cp_ssh_pool *pool;
	struct cp_ssh_cmd cmd;
	int repeat, stream;
	pthread_mutex_t mu;
	int next, failures;
	double *lat;
	struct cp_ssh_result last;
	int last_rc;
	volatile int cancel;
};

static void print_line(void *arg, int stream, const char *line, size_t len)
{
	(void)arg;
	fprintf(stream == 1 ? stdout : stderr, "%.*s\n", (int)len, line);
	fflush(stream == 1 ? stdout : stderr);
}

static void *run_worker(void *arg)
{
	struct run_ctx *x = arg;

	for (;;) {
		struct cp_ssh_result r;
		int i, rc;

		pthread_mutex_lock(&x->mu);
		i = x->next < x->repeat ? x->next++ : -1;
		pthread_mutex_unlock(&x->mu);
		if (i < 0)
			break;
		rc = cp_ssh_run(x->pool, &x->cmd, &r);
		pthread_mutex_lock(&x->mu);
		x->lat[i] = r.duration_ms;
		if (rc < 0 || r.exit_code != 0)
			x->failures++;
		if (i == x->repeat - 1 || x->repeat == 1 || rc < 0) {
			cp_ssh_result_free(&x->last);
			x->last = r;
			x->last_rc = rc;
		} else {
			cp_ssh_result_free(&r);
		}
		pthread_mutex_unlock(&x->mu);
	}
	return NULL;
}

static void *canceller(void *arg)
{
	struct run_ctx *x = arg;

	usleep((useconds_t)x->stream * 1000);
	__atomic_store_n(&x->cancel, 1, __ATOMIC_RELEASE);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static json_t *err_json(const struct cp_ssh_err *e)
{
	if (e->kind == CP_SSH_OK)
		return json_null();
	return json_pack("{s:s,s:s,s:b}", "kind", cp_ssh_kind_name(e->kind), "message", e->msg,
			 "retryable", e->retryable);
}

static void print_result(const struct run_ctx *x, int json, double first_ms)
{
	const struct cp_ssh_result *r = &x->last;
	json_t *o;

	if (!json) {
		if (r->error.kind != CP_SSH_OK)
			fprintf(stderr, "sluice-control ssh: %s error: %s\n",
				cp_ssh_kind_name(r->error.kind), r->error.msg);
		return;
	}
	o = json_pack("{s:i,s:b,s:s,s:s%,s:s%,s:b,s:f,s:f,s:o}", "exit", r->exit_code, "exit_known",
		      r->exit_known, "signal", r->signal, "stdout", r->out ? r->out : "",
		      r->out_len, "stderr", r->err ? r->err : "", r->err_len, "truncated",
		      r->truncated, "duration_ms", r->duration_ms, "connect_ms", first_ms, "error",
		      err_json(&r->error));
	if (x->pool) {
		struct cp_ssh_pool_stats st;

		cp_ssh_pool_stats(x->pool, &st);
		json_object_set_new(o, "pool",
				    json_pack("{s:I,s:I,s:I,s:I,s:i}", "connects",
					      (json_int_t)st.connects, "connect_retries",
					      (json_int_t)st.connect_retries, "connect_failures",
					      (json_int_t)st.connect_failures, "channel_refusals",
					      (json_int_t)st.channel_refusals, "max_channels",
					      st.max_channels));
	}
	if (x->repeat > 1 && x->lat) {
		qsort(x->lat, (size_t)x->repeat, sizeof(double), cmp_double);
		json_object_set_new(o, "runs", json_integer(x->repeat));
		json_object_set_new(o, "failures", json_integer(x->failures));
		json_object_set_new(o, "p50_ms", json_real(x->lat[x->repeat / 2]));
		json_object_set_new(o, "p99_ms", json_real(x->lat[(x->repeat * 99) / 100]));
	}
	json_dumpf(o, stdout, JSON_COMPACT);
	printf("\n");
	json_decref(o);
}

static char *read_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) != NULL) {
		if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else {
			buf[n] = '\0';
		}
	}
	fclose(f);
	return buf;
}

static int do_exec(const struct sl_config *cfg, struct cp_ssh_pool *pool, int json)
{
	static char sudo_pw[128];
	char envs[1024], *script = NULL;
	const char *env[ENV_MAX], *interp = sl_config_str(cfg, "interp");
	const char *words[SL_CONFIG_MAX_ARGS + 1];
	struct run_ctx x = {.pool = pool, .repeat = (int)sl_config_int(cfg, "repeat")};
	int par = (int)sl_config_int(cfg, "parallel"), rc;
	pthread_t th[256], cth;
	struct cp_ssh_err err = {0};
	double first_ms = 0;
	double t0;

	snprintf(envs, sizeof(envs), "%s", sl_config_str(cfg, "env"));
	split(envs, env, ENV_MAX);
	cp_cli_env_secret(cfg, "sudo-password-env", sudo_pw, sizeof(sudo_pw));
	for (size_t i = 2; i < cfg->nargs; i++)
		words[i - 2] = cfg->args[i];
	words[cfg->nargs >= 2 ? cfg->nargs - 2 : 0] = NULL;
	x.cmd = (struct cp_ssh_cmd){
		.argv = words,
		.env = env,
		.cwd = *sl_config_str(cfg, "cwd") ? sl_config_str(cfg, "cwd") : NULL,
		.sudo = (int)sl_config_int(cfg, "sudo"),
		.sudo_password = sudo_pw[0] ? sudo_pw : NULL,
		.timeout_ms = (int)sl_config_int(cfg, "timeout"),
		.on_line = json || x.repeat > 1 ? NULL : print_line,
		.cancel = &x.cancel,
	};
	if (*sl_config_str(cfg, "script")) {
		script = read_file(sl_config_str(cfg, "script"));
		if (!script) {
			fprintf(stderr, "sluice-control ssh: cannot read %s\n",
				sl_config_str(cfg, "script"));
			return SL_EXIT_USAGE;
		}
		x.cmd.script = script;
		x.cmd.interp = strcmp(interp, "bash") == 0	? CP_SSH_BASH
			       : strcmp(interp, "python3") == 0 ? CP_SSH_PYTHON3
								: CP_SSH_SH;
		x.cmd.script_args = x.cmd.argv;
	} else if (cfg->nargs < 3) {
		fprintf(stderr, "sluice-control ssh exec: no command (after --)\n");
		return SL_EXIT_USAGE;
	}
	t0 = sl_mono_ms_f();
	if (cp_ssh_pool_connect(pool, &err) < 0) {
		x.last.error = err;
		x.last.exit_code = CP_SSH_EXIT_NONE;
		print_result(&x, json, 0);
		free(script);
		return 255;
	}
	first_ms = sl_mono_ms_f() - t0;
	x.lat = calloc((size_t)x.repeat, sizeof(double));
	pthread_mutex_init(&x.mu, NULL);
	x.stream = (int)sl_config_int(cfg, "cancel-after");
	if (x.stream)
		pthread_create(&cth, NULL, canceller, &x);
	for (int i = 0; i < par; i++)
		pthread_create(&th[i], NULL, run_worker, &x);
	for (int i = 0; i < par; i++)
		pthread_join(th[i], NULL);
	if (x.stream)
		pthread_join(cth, NULL);
	print_result(&x, json, first_ms);
	rc = x.last_rc < 0			    ? 255
	     : x.repeat > 1			    ? (x.failures ? 1 : 0)
	     : x.last.exit_code == CP_SSH_EXIT_NONE ? 255
						    : x.last.exit_code;
	cp_ssh_result_free(&x.last);
	pthread_mutex_destroy(&x.mu);
	free(x.lat);
	free(script);
	explicit_bzero(sudo_pw, sizeof(sudo_pw));
	return rc;
}

static void progress(void *arg, uint64_t done, uint64_t total)
{
	struct run_ctx *x = arg;

	(void)total;
	/* --cancel-after for transfers counts bytes: an interruption mid-file. */
	if (x->stream && done >= (uint64_t)x->stream)
		__atomic_store_n(&x->cancel, 1, __ATOMIC_RELEASE);
}

#define STDIN_CHUNK (1 << 16)
#define STDIN_MAX   ((size_t)1 << 30) /* `put -` reads at most this much */

/* `put - REMOTE`: the file's content from stdin (CreateRemoteFile). */
static int put_stdin(struct cp_ssh_pool *pool, const char *remote, const struct cp_ssh_xfer *xf,
		     struct cp_ssh_xfer_result *r)
{
	struct sl_buf b = {0};
	ssize_t n = 1;
	int rc;

	/* Bounded by STDIN_MAX. */
	while (n > 0) {
		if (b.len >= STDIN_MAX || sl_buf_reserve(&b, STDIN_CHUNK) < 0) {
			sl_buf_free(&b);
			memset(r, 0, sizeof(*r));
			cp_ssh_err_set(&r->error, CP_SSH_E_TRANSFER,
				       "stdin: too large or out of memory");
			return -ENOMEM;
		}
		if ((n = read(0, b.p + b.len, b.cap - b.len - 1)) > 0)
			b.len += (size_t)n;
	}
	rc = cp_ssh_put_mem(pool, b.p, b.len, remote, xf, r);
	sl_buf_free(&b);
	return rc;
}

static int do_sync(const struct sl_config *cfg, struct cp_ssh_pool *pool)
{
	static char sudo_pw[128];
	struct cp_ssh_xfer xf = {0};
	struct cp_ssh_sync_result r;
	json_t *o;
	int rc;

	if (cfg->nargs != 4) {
		fprintf(stderr, "sluice-control ssh sync: want HOST LOCAL_DIR REMOTE_DIR\n");
		return SL_EXIT_USAGE;
	}
	cp_cli_env_secret(cfg, "sudo-password-env", sudo_pw, sizeof(sudo_pw));
	xf.sudo = (int)sl_config_int(cfg, "sudo");
	xf.sudo_password = sudo_pw[0] ? sudo_pw : NULL;
	xf.owner = *sl_config_str(cfg, "owner") ? sl_config_str(cfg, "owner") : NULL;
	rc = cp_ssh_sync(pool, cfg->args[2], cfg->args[3], &xf, &r);
	o = json_pack("{s:b,s:i,s:i,s:I,s:f,s:o}", "ok", rc == 0, "files", (int)r.files, "changed",
		      (int)r.changed, "bytes", (json_int_t)r.bytes, "duration_ms", r.duration_ms,
		      "error", err_json(&r.error));
	json_dumpf(o, stdout, JSON_COMPACT);
	printf("\n");
	json_decref(o);
	if (rc < 0)
		fprintf(stderr, "sluice-control ssh: %s error: %s\n",
			cp_ssh_kind_name(r.error.kind), r.error.msg);
	explicit_bzero(sudo_pw, sizeof(sudo_pw));
	return rc < 0 ? SL_EXIT_FAIL : SL_EXIT_OK;
}

/* `health`: a check now, and again every --interval for --watch seconds;
 * one JSON line each. Exit 0 when the last check found the host healthy. */
static int do_health(const struct sl_config *cfg, struct cp_ssh_pool *pool)
{
	const char *rs = sl_config_str(cfg, "recovery");
	enum cp_ssh_recovery how = strcmp(rs, "rebuild") == 0 ? CP_SSH_RECOVER_REBUILD
				   : strcmp(rs, "none") == 0  ? CP_SSH_RECOVER_NONE
							      : CP_SSH_RECOVER_RECONNECT;
	uint64_t end = sl_mono_ms() + (uint64_t)sl_config_int(cfg, "watch") * 1000;
	struct cp_ssh_health *h = calloc(1, sizeof(*h));
	struct cp_ssh_err err;
	int ok = 0;

	if (!h)
		return SL_EXIT_FAIL;
	for (long i = 0; i < sl_config_int(cfg, "warm"); i++)
		cp_ssh_pool_connect(pool, &err);
	do {
		json_t *o;

		ok = cp_ssh_health_check(pool, how, h) == 0;
		o = cp_ssh_health_json(h);
		json_dumpf(o, stdout, JSON_COMPACT);
		printf("\n");
		fflush(stdout);
		json_decref(o);
		if (sl_mono_ms() < end)
			usleep((useconds_t)sl_config_int(cfg, "interval") * 1000);
	} while (sl_mono_ms() < end);
	free(h);
	return ok ? SL_EXIT_OK : SL_EXIT_FAIL;
}

static int do_xfer(const struct sl_config *cfg, struct cp_ssh_pool *pool, int put)
{
	static char sudo_pw[128];
	struct run_ctx x = {.stream = (int)sl_config_int(cfg, "cancel-after")};
	struct cp_ssh_xfer xf = {.on_progress = progress, .arg = &x, .cancel = &x.cancel};
	struct cp_ssh_xfer_result r;
	const char *mode = sl_config_str(cfg, "mode");
	json_t *o;
	int rc;

	if (cfg->nargs != 4) {
		fprintf(stderr, "sluice-control ssh %s: want HOST %s\n", put ? "put" : "get",
			put ? "LOCAL REMOTE" : "REMOTE LOCAL");
		return SL_EXIT_USAGE;
	}
	cp_cli_env_secret(cfg, "sudo-password-env", sudo_pw, sizeof(sudo_pw));
	xf.mode = *mode ? (unsigned)strtoul(mode, NULL, 8) : 0;
	xf.owner = *sl_config_str(cfg, "owner") ? sl_config_str(cfg, "owner") : NULL;
	xf.sudo = (int)sl_config_int(cfg, "sudo");
	xf.sudo_password = sudo_pw[0] ? sudo_pw : NULL;
	xf.timeout_ms = (int)sl_config_int(cfg, "timeout");
	if (put && strcmp(cfg->args[2], "-") == 0)
		rc = put_stdin(pool, cfg->args[3], &xf, &r);
	else
		rc = put ? cp_ssh_put(pool, cfg->args[2], cfg->args[3], &xf, &r)
			 : cp_ssh_get(pool, cfg->args[2], cfg->args[3], &xf, &r);
	o = json_pack("{s:b,s:I,s:s,s:f,s:b,s:o}", "ok", rc == 0, "bytes", (json_int_t)r.bytes,
		      "sha256", r.sha256, "duration_ms", r.duration_ms, "changed", r.changed,
		      "error", err_json(&r.error));
	json_dumpf(o, stdout, JSON_COMPACT);
	printf("\n");
	json_decref(o);
	if (rc < 0)
		fprintf(stderr, "sluice-control ssh: %s error: %s\n",
			cp_ssh_kind_name(r.error.kind), r.error.msg);
	explicit_bzero(sudo_pw, sizeof(sudo_pw));
	return rc < 0 ? SL_EXIT_FAIL : SL_EXIT_OK;
}

/* The verb, configured: its exit code. */
static int ssh_run(const struct sl_config *cfg)
{
	struct cp_ssh_config c;
	struct cp_ssh_policy pol = {0};
	struct cp_ssh_pool *pool = NULL;
	struct cp_ssh_err err = {0};
	const char *allow[32], *deny[32];
	char allows[1024], denies[1024];
	int rc, audit = -1, json;
	const char *verb;

	memset(&c, 0, sizeof(c));
	rc = SL_EXIT_USAGE;
	if (cfg->nargs < 2) {
		fputs(cp_ssh_cli.usage, stderr);
		goto out;
	}
	verb = cfg->args[0];
	if (build_config(cfg, cfg->args[1], &c) < 0)
		goto out;
	json = (int)sl_config_int(cfg, "json");
	if (strcmp(verb, "diagnose") == 0) {
		rc = cp_ssh_diag_cli(&c, json);
		goto out;
	}
	if (cp_ssh_config_check(&c, &err) < 0) {
		fprintf(stderr, "sluice-control ssh: %s\n", err.msg);
		goto out;
	}
	snprintf(allows, sizeof(allows), "%s", sl_config_str(cfg, "allow"));
	snprintf(denies, sizeof(denies), "%s", sl_config_str(cfg, "deny"));
	pol.nallow = split(allows, allow, 32);
	pol.ndeny = split(denies, deny, 32);
	pol.allow = allow;
	pol.deny = deny;
	if (*sl_config_str(cfg, "audit-log")) {
		audit = open(sl_config_str(cfg, "audit-log"),
			     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
		if (audit < 0) {
			fprintf(stderr, "sluice-control ssh: %s: %s\n",
				sl_config_str(cfg, "audit-log"), strerror(errno));
			goto out;
		}
	}
	pool = cp_ssh_pool_new(&c, &pol, audit);
	if (!pool) {
		rc = SL_EXIT_FAIL;
		goto out;
	}
	if (strcmp(verb, "exec") == 0)
		rc = do_exec(cfg, pool, json);
	else if (strcmp(verb, "lockdown") == 0 || strcmp(verb, "audit") == 0)
		rc = cp_cli_node_security(cfg, pool, &c, verb[0] == 'a');
	else if (strcmp(verb, "provision") == 0)
		rc = cp_cli_node_provision(cfg, pool, &c);
	else if (strcmp(verb, "health") == 0)
		rc = do_health(cfg, pool);
	else if (strcmp(verb, "sync") == 0)
		rc = do_sync(cfg, pool);
	else if (strcmp(verb, "put") == 0 || strcmp(verb, "get") == 0)
		rc = do_xfer(cfg, pool, verb[0] == 'p');
	else
		fprintf(stderr,
			"sluice-control ssh: unknown verb \"%s\" (exec, put, get, sync, "
			"health, diagnose)\n",
			verb);
out:
	cp_ssh_pool_free(pool);
	if (audit >= 0)
		close(audit);
	cp_ssh_config_wipe(&c);
	return rc;
}

const struct sl_cli cp_ssh_cli = {
	.prog = "sluice-control ssh",
	.component = "control",
	.summary = "run commands and move files on a host over SSH, or diagnose it",
	.usage = "Usage: sluice-control ssh exec [user@]HOST[:PORT] [options] -- COMMAND [ARG...]\n"
		 "       sluice-control ssh put [user@]HOST LOCAL REMOTE [--mode 644] [--owner "
		 "u:g]\n"
		 "       sluice-control ssh get [user@]HOST REMOTE LOCAL\n"
		 "       sluice-control ssh put [user@]HOST - REMOTE   (content from stdin)\n"
		 "       sluice-control ssh sync [user@]HOST LOCAL_DIR REMOTE_DIR\n"
		 "       sluice-control ssh health [user@]HOST [--watch S] [--recovery "
		 "reconnect|rebuild|none]\n"
		 "       sluice-control ssh diagnose [user@]HOST [--key FILE]\n",
	SL_CLI_OPTS(ssh_opts),
	.versions = versions,
	.run = ssh_run,
};
