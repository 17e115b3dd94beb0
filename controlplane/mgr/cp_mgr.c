/*
 * cp_mgr.c: what every manager operation shares: plans (commands and a
 * diff, in a fixed arena), running them with sudo when the login user is not
 * root, the facts-plan-apply-verify driver, progress events and typed errors.
 */
#include "mgr/cp_mgr_int.h"
#include "sl_time.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CMD_TIMEOUT_MS (15 * 60 * 1000) /* apt on a slow mirror */

const char *cp_mgr_err_type_name(enum cp_mgr_err_type t)
{
	static const char *const n[] = {"", "SetupError", "SecurityError", "ServiceError"};

	return (size_t)t < sizeof(n) / sizeof(n[0]) ? n[t] : "Error";
}

const char *cp_mgr_status_name(enum cp_mgr_status s)
{
	static const char *const n[] = {"unchanged", "planned", "changed", "failed"};

	return (size_t)s < sizeof(n) / sizeof(n[0]) ? n[s] : "?";
}

void cp_plan_init(struct cp_plan *p)
{
	memset(p, 0, sizeof(*p));
}

static const char *keep(struct cp_plan *p, const char *s)
{
	size_t n = strlen(s) + 1;
	char *d;

	if (p->used + n > sizeof(p->arena)) {
		p->overflow = 1;
		return NULL;
	}
	d = p->arena + p->used;
	memcpy(d, s, n);
	p->used += n;
	return d;
}

int cp_plan_cmd(struct cp_plan *p, ...)
{
	va_list ap;
	const char *w;
	size_t k = 0;

	if (p->n >= CP_PLAN_CMDS) {
		p->overflow = 1;
		return -ENOSPC;
	}
	va_start(ap, p);
	while ((w = va_arg(ap, const char *)) != NULL) {
		if (k >= CP_PLAN_ARGS || (p->argv[p->n][k] = keep(p, w)) == NULL) {
			p->overflow = 1;
			va_end(ap);
			return -ENOSPC;
		}
		k++;
	}
	va_end(ap);
	p->argv[p->n][k] = NULL;
	p->n++;
	return 0;
}

int cp_plan_cmdv(struct cp_plan *p, const char *const *argv)
{
	size_t k = 0;

	if (p->n >= CP_PLAN_CMDS) {
		p->overflow = 1;
		return -ENOSPC;
	}
	for (; argv[k]; k++)
		if (k >= CP_PLAN_ARGS || (p->argv[p->n][k] = keep(p, argv[k])) == NULL) {
			p->overflow = 1;
			return -ENOSPC;
		}
	p->argv[p->n][k] = NULL;
	p->n++;
	return 0;
}

void cp_plan_diff(struct cp_plan *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (p->diff_len + 2 >= sizeof(p->diff))
		return;
	va_start(ap, fmt);
	n = vsnprintf(p->diff + p->diff_len, sizeof(p->diff) - p->diff_len - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	p->diff_len += (size_t)n < sizeof(p->diff) - p->diff_len - 1
			       ? (size_t)n
			       : sizeof(p->diff) - p->diff_len - 2;
	p->diff[p->diff_len++] = '\n';
	p->diff[p->diff_len] = '\0';
}

/* ---- running ---- */

int cp_mgr_run(struct cp_mgr *m, const char *const *argv, const char *input,
	       struct cp_ssh_result *r)
{
	struct cp_ssh_cmd cmd = {.argv = argv,
				 .sudo = m->sudo,
				 .sudo_password = m->sudo_password,
				 .input = input,
				 .input_len = input ? strlen(input) : 0,
				 .timeout_ms = CMD_TIMEOUT_MS};

	return cp_ssh_run(m->pool, &cmd, r);
}

int cp_mgr_sh(struct cp_mgr *m, const char *script, const char *arg, struct cp_ssh_result *r)
{
	const char *argv[] = {"sh", "-c", script, "sh", arg, NULL};

	if (!arg)
		argv[3] = NULL;
	return cp_mgr_run(m, argv, NULL, r);
}

int cp_mgr_fail(struct cp_mgr *m, int err, enum cp_mgr_err_type t, const char *what,
		const char *step, int retryable, const char *fmt, ...)
{
	va_list ap;

	m->err.type = t;
	m->err.code = err;
	snprintf(m->err.what, sizeof(m->err.what), "%s", what);
	snprintf(m->err.step, sizeof(m->err.step), "%s", step);
	m->err.retryable = retryable;
	m->err.critical = t == CP_MGR_SECURITY;
	va_start(ap, fmt);
	vsnprintf(m->err.cause, sizeof(m->err.cause), fmt, ap);
	va_end(ap);
	return err;
}

void cp_mgr_emit(struct cp_mgr *m, const char *op, const char *step, enum cp_mgr_status st,
		 double t0, const char *diff)
{
	struct cp_mgr_event ev = {.operation = op,
				  .step = step,
				  .status = st,
				  .duration_ms = sl_mono_ms_f() - t0,
				  .diff = diff ? diff : ""};

	m->steps++;
	m->changed += st == CP_MGR_CHANGED;
	if (m->on_event)
		m->on_event(m->arg, &ev);
}

/* A command that failed, in words: its stderr's last line, or the SSH error. */
static void cause_of(const struct cp_ssh_result *r, const char *const *argv, char *out, size_t cap)
{
	const char *e = r->err && r->err_len ? r->err : r->out ? r->out : "";
	size_t n = strlen(e);

	while (n && (e[n - 1] == '\n' || e[n - 1] == ' '))
		n--;
	if (r->error.kind != CP_SSH_OK)
		snprintf(out, cap, "%.60s: %.400s", argv[0], r->error.msg);
	else
		snprintf(out, cap, "%s exited %d: %.*s", argv[0], r->exit_code,
			 (int)(n > 400 ? 400 : n), e + (n > 400 ? strlen(e) - 400 : 0));
}

int cp_mgr_cancelled(struct cp_mgr *m, const char *op)
{
	if (!m->cancel || !__atomic_load_n(m->cancel, __ATOMIC_ACQUIRE))
		return 0;
	cp_mgr_fail(m, -ECANCELED, CP_MGR_SETUP, op, "cancelled", 1,
		    "cancelled before this step (the steps before it are done)");
	return 1;
}

json_t *cp_mgr_event_json(const struct cp_mgr_event *ev)
{
	return json_pack("{s:s,s:s,s:s,s:b,s:f,s:s}", "operation", ev->operation, "step", ev->step,
			 "status", cp_mgr_status_name(ev->status), "changed",
			 ev->status == CP_MGR_CHANGED || ev->status == CP_MGR_PLANNED,
			 "duration_ms", ev->duration_ms, "diff", ev->diff);
}

json_t *cp_mgr_err_json(const struct cp_mgr *m)
{
	return json_pack("{s:s,s:s,s:s,s:s,s:b,s:b,s:s}", "type", cp_mgr_err_type_name(m->err.type),
			 "what", m->err.what, "step", m->err.step, "cause", m->err.cause,
			 "retryable", m->err.retryable, "critical", m->err.critical, "state",
			 m->err.state);
}

json_t *cp_mgr_result_json(const struct cp_mgr *m, int rc, double duration_ms)
{
	return json_pack("{s:b,s:b,s:i,s:i,s:f,s:o}", "ok", rc == 0, "check", m->check, "steps",
			 (int)m->steps, "changed", (int)m->changed, "duration_ms", duration_ms,
			 "error", rc == 0 ? json_null() : cp_mgr_err_json(m));
}

int cp_mgr_settled(struct cp_mgr *m, const char *op, const char *step, const struct cp_plan *p,
		   double t0)
{
	if (p->n && !m->check)
		return 0;
	cp_mgr_emit(m, op, step, p->n ? CP_MGR_PLANNED : CP_MGR_UNCHANGED, t0, p->n ? p->diff : "");
	return 1;
}

int cp_mgr_apply(struct cp_mgr *m, enum cp_mgr_err_type type, const char *op, const char *step,
		 cp_mgr_plan_fn plan, const void *spec)
{
	return cp_mgr_apply_guarded(m, type, op, step, plan, spec, NULL, NULL);
}

int cp_mgr_apply_guarded(struct cp_mgr *m, enum cp_mgr_err_type type, const char *op,
			 const char *step, cp_mgr_plan_fn plan, const void *spec,
			 cp_mgr_guard_fn guard, void *arg)
{
	double t0 = sl_mono_ms_f();
	struct cp_plan p, again;

	if (cp_mgr_cancelled(m, op))
		goto failed;
	if (plan(m, spec, &p) < 0) /* m->err filled */
		goto failed;
	if (p.overflow) {
		cp_mgr_fail(m, -E2BIG, type, op, step, 0,
			    "the plan did not fit (too many changes at once)");
		goto failed;
	}
	if (cp_mgr_settled(m, op, step, &p, t0))
		return 0;
	if (guard)
		guard(m, &p, arg);
	for (size_t i = 0; i < p.n; i++) {
		struct cp_ssh_result r;
		int rc = cp_mgr_run(m, p.argv[i], NULL, &r), ok = rc == 0 && r.exit_code == 0;

		if (!ok) {
			char cause[500];

			cause_of(&r, p.argv[i], cause, sizeof(cause));
			cp_mgr_fail(m, cp_mgr_cmd_errno(rc), type, op, step,
				    r.error.retryable || r.exit_code == 100, "%s", cause);
		}
		cp_ssh_result_free(&r);
		if (!ok)
			goto failed;
	}
	if (plan(m, spec, &again) < 0)
		goto failed;
	if (again.n) {
		cp_mgr_fail(m, -EIO, type, op, step, 0, "still differs after the change: %.400s",
			    again.diff);
		goto failed;
	}
	cp_mgr_emit(m, op, step, CP_MGR_CHANGED, t0, p.diff);
	return 0;
failed: /* every way here filled m->err */
	cp_mgr_emit(m, op, step, CP_MGR_FAILED, t0, m->err.cause);
	return cp_mgr_failed(m);
}
