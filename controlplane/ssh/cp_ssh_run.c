/*
 * cp_ssh_run.c: what every command goes through around its channel: the
 * allow and deny lists, the pool (a job per command), and one audit line
 * with secrets redacted.
 */
#include "ssh/cp_ssh_int.h"
#include "sl_log.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define DISPLAY_MAX 2048 /* the command as audited and matched, cut beyond */

/* A command as the pool's job. Ownership: on cp_ssh_run_on's stack; e
 * (cp_ssh_exec_new) is freed there once the job is done, r is the caller's. */
struct run_job {
	struct cp_ssh_job base;
	struct cp_ssh_exec *e;
	struct cp_ssh_result *r;
};

static int run_step(struct cp_ssh_job *j, struct cp_ssh_conn *c)
{
	struct run_job *rj = (struct run_job *)j;
	int rc = cp_ssh_exec_step(rj->e, c, j->stopping);

	j->started = cp_ssh_exec_started(rj->e);
	j->deadline_ms = cp_ssh_exec_deadline(rj->e);
	if (rc == -EAGAIN && !j->started) {
		/* A channel refused: try again on another turn, the reason kept
		 * in the job in case no turn is left. */
		j->retry = 1;
		j->err = rj->r->error;
		memset(&rj->r->error, 0, sizeof(rj->r->error));
	}
	return rc;
}

static void run_lost(struct cp_ssh_job *j)
{
	cp_ssh_exec_lost(((struct run_job *)j)->e);
}

/* Whether an environment variable's name says its value is a secret. */
static int secret_name(const char *kv)
{
	static const char *const marks[] = {"PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "AUTH"};
	const char *eq = strchr(kv, '=');
	size_t n = eq ? (size_t)(eq - kv) : strlen(kv);

	for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
		size_t m = strlen(marks[i]);

		for (size_t k = 0; k + m <= n; k++)
			if (strncasecmp(kv + k, marks[i], m) == 0)
				return 1;
	}
	return 0;
}

/* Replace every occurrence of secret in buf by "***". */
static void redact(char *buf, size_t cap, const char *secret)
{
	size_t sl = secret ? strlen(secret) : 0;
	char *p;

	if (sl < 3) /* shorter "secrets" would blank innocent text; none are that short */
		return;
	while ((p = strstr(buf, secret)) != NULL) {
		size_t tail = strlen(p + sl);

		if ((size_t)(p - buf) + 3 + tail + 1 > cap)
			break;
		memmove(p + 3, p + sl, tail + 1);
		memcpy(p, "***", 3);
	}
}

/* The command as a person wrote it: argv joined by spaces, the shell line,
 * or "<interp> script". Secrets taken out. */
static void display(const struct cp_ssh_cmd *c, char *buf, size_t cap)
{
	size_t o = 0;

	buf[0] = '\0';
	if (c->script) {
		snprintf(buf, cap, "%s script (%zu bytes)",
			 c->interp == CP_SSH_BASH      ? "bash"
			 : c->interp == CP_SSH_PYTHON3 ? "python3"
						       : "sh",
			 strlen(c->script));
	} else if (c->argv) {
		for (size_t i = 0; c->argv[i] && o + 1 < cap; i++)
			o += (size_t)snprintf(buf + o, cap - o, "%s%s", i ? " " : "", c->argv[i]);
	} else {
		snprintf(buf, cap, "%s", c->shell ? c->shell : "");
	}
	redact(buf, cap, c->sudo_password);
	for (size_t i = 0; c->env && c->env[i]; i++) {
		const char *eq = strchr(c->env[i], '=');

		if (eq && secret_name(c->env[i]))
			redact(buf, cap, eq + 1);
	}
}

static int policy_allows(const struct cp_ssh_policy *p, const char *cmd, const char **rule)
{
	for (size_t i = 0; i < p->ndeny; i++)
		if (fnmatch(p->deny[i], cmd, 0) == 0) {
			*rule = p->deny[i];
			return 0;
		}
	if (!p->nallow)
		return 1;
	for (size_t i = 0; i < p->nallow; i++)
		if (fnmatch(p->allow[i], cmd, 0) == 0)
			return 1;
	*rule = NULL;
	return 0;
}

static void audit(struct cp_ssh_pool *pool, const struct cp_ssh_cmd *c, const char *cmd,
		  const struct cp_ssh_result *r)
{
	const struct cp_ssh_config *cfg = cp_ssh_pool_config(pool);
	char line[4096], esc[2 * DISPLAY_MAX], emsg[1100], ts[40], env[600];
	int fd = cp_ssh_pool_audit_fd(pool);
	size_t eo = 0, n;

	if (fd < 0)
		return;
	sl_time_iso8601(ts, sizeof(ts));
	n = sl_json_escape(esc, sizeof(esc) - 1, cmd, strlen(cmd), NULL);
	esc[n] = '\0';
	n = sl_json_escape(emsg, sizeof(emsg) - 1, r->error.msg, strlen(r->error.msg), NULL);
	emsg[n] = '\0';
	env[0] = '\0';
	for (size_t i = 0; c->env && c->env[i] && eo + 4 < sizeof(env); i++) {
		const char *eq = strchr(c->env[i], '=');
		int namelen = eq ? (int)(eq - c->env[i]) : (int)strlen(c->env[i]);

		/* Names only: values are the caller's, and may hold anything. */
		eo += (size_t)snprintf(env + eo, sizeof(env) - eo, "%s\"%.*s\"", i ? "," : "",
				       namelen > 64 ? 64 : namelen, c->env[i]);
	}
	n = (size_t)snprintf(line, sizeof(line),
			     "{\"time\":\"%s\",\"event\":\"ssh.exec\",\"host\":\"%s\",\"port\":%d,"
			     "\"user\":\"%s\",\"command\":\"%s\",\"env\":[%s],\"sudo\":%s,"
			     "\"exit\":%d,\"exit_known\":%s,\"signal\":\"%s\",\"duration_ms\":%.1f,"
			     "\"error\":\"%s\",\"message\":\"%s\"}\n",
			     ts, cfg->host, cfg->port ? cfg->port : 22, cfg->user, esc, env,
			     c->sudo ? "true" : "false", r->exit_code,
			     r->exit_known ? "true" : "false", r->signal, r->duration_ms,
			     cp_ssh_kind_name(r->error.kind), emsg);
	if (n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	if (write(fd, line, n) < 0)
		sl_warn("ssh: audit log write failed");
}

int cp_ssh_run(struct cp_ssh_pool *pool, const struct cp_ssh_cmd *cmd, struct cp_ssh_result *r)
{
	return cp_ssh_run_on(pool, NULL, cmd, r);
}

int cp_ssh_run_on(struct cp_ssh_pool *pool, struct cp_ssh_conn *pin, const struct cp_ssh_cmd *cmd,
		  struct cp_ssh_result *r)
{
	struct run_job j = {.base = {.step = run_step, .lost = run_lost, .pin = pin}};
	char shown[DISPLAY_MAX];
	const char *rule = NULL;
	int rc;

	memset(r, 0, sizeof(*r));
	r->exit_code = CP_SSH_EXIT_NONE;
	display(cmd, shown, sizeof(shown));
	if (!policy_allows(cp_ssh_pool_policy(pool), shown, &rule)) {
		if (rule)
			cp_ssh_err_set(&r->error, CP_SSH_E_POLICY, "command denied by rule \"%s\"",
				       rule);
		else
			cp_ssh_err_set(&r->error, CP_SSH_E_POLICY,
				       "command not in the allow list: not run");
		audit(pool, cmd, shown, r);
		return -EPERM;
	}
	j.r = r;
	j.e = cp_ssh_exec_new(pool, cmd, r);
	if (!j.e) {
		cp_ssh_err_set(&r->error, CP_SSH_E_CONFIG, "out of memory building the command");
		return -ENOMEM;
	}
	rc = cp_ssh_pool_exec_job(pool, &j.base, &r->connect_ms);
	if (rc < 0 && r->error.kind == CP_SSH_OK)
		r->error = j.base.err;
	cp_ssh_exec_free(j.e);
	cp_ssh_pool_record(pool, r->duration_ms, rc < 0, 0);
	audit(pool, cmd, shown, r);
	return rc < 0 ? rc : 0;
}
