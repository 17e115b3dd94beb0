/*
 * cp_service.c: the service manager (systemd): unit files written, checked
 * with systemd-analyze verify and installed with daemon-reload; enable at
 * boot; start, stop, restart, reload; status from `systemctl show`; logs from
 * journalctl; and waiting until a unit is active or failed, with the last
 * log lines when it failed.
 */
#include "mgr/cp_mgr_int.h"
#include "mgr/cp_service.h"
#include "sl_time.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WAIT_STEP_MS 500
#define LOG_LINES    20
#define STABLE_MS    1500

int cp_service_status_parse(const char *show, struct cp_service_status *st)
{
	static const struct {
		const char *key;
		size_t off, cap;
	} keys[] = {
		{"LoadState=", offsetof(struct cp_service_status, load), sizeof(st->load)},
		{"ActiveState=", offsetof(struct cp_service_status, active), sizeof(st->active)},
		{"SubState=", offsetof(struct cp_service_status, sub), sizeof(st->sub)},
		{"UnitFileState=", offsetof(struct cp_service_status, enabled),
		 sizeof(st->enabled)},
		{"Result=", offsetof(struct cp_service_status, result), sizeof(st->result)},
	};

	memset(st, 0, sizeof(*st));
	for (const char *l = show; l && *l;) {
		const char *nl = strchr(l, '\n');
		size_t n = nl ? (size_t)(nl - l) : strlen(l);

		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			size_t kl = strlen(keys[i].key);

			if (n >= kl && memcmp(l, keys[i].key, kl) == 0)
				snprintf((char *)st + keys[i].off, keys[i].cap, "%.*s",
					 (int)(n - kl), l + kl);
		}
		if (n > 8 && memcmp(l, "MainPID=", 8) == 0)
			st->main_pid = atoi(l + 8);
		l = nl ? nl + 1 : NULL;
	}
	return st->load[0] ? 0 : -EINVAL;
}

int cp_service_status(struct cp_mgr *m, const char *unit, struct cp_service_status *st)
{
	const char *argv[] = {"systemctl",
			      "show",
			      "--no-pager",
			      "-p",
			      "LoadState,ActiveState,SubState,UnitFileState,Result,MainPID",
			      unit,
			      NULL};
	struct cp_ssh_result r;
	int rc = cp_mgr_run(m, argv, NULL, &r);

	if (rc < 0 || r.exit_code != 0 || cp_service_status_parse(r.out, st) < 0) {
		cp_mgr_fail(m, rc < 0 || r.exit_code != 0 ? cp_mgr_cmd_errno(rc) : -EBADMSG,
			    CP_MGR_SERVICE, unit, "status", r.error.retryable,
			    "systemctl show %s: %s", unit,
			    r.error.msg[0] ? r.error.msg
			    : r.err	   ? r.err
					   : "no answer");
		snprintf(m->err.state, sizeof(m->err.state), "unknown");
		cp_ssh_result_free(&r);
		return cp_mgr_failed(m);
	}
	cp_ssh_result_free(&r);
	return 0;
}

char *cp_service_logs(struct cp_mgr *m, const char *unit, int lines, const char *since)
{
	char n[16];
	const char *argv[] = {"journalctl",
			      "--no-pager",
			      "-o",
			      "short-iso",
			      "-u",
			      unit,
			      "-n",
			      n,
			      since ? "--since" : NULL,
			      since,
			      NULL};
	struct cp_ssh_result r;
	char *out;

	snprintf(n, sizeof(n), "%d", lines);
	if (cp_mgr_run(m, argv, NULL, &r) < 0 || r.exit_code != 0) {
		cp_ssh_result_free(&r);
		return NULL;
	}
	out = r.out ? r.out : strdup("");
	r.out = NULL;
	cp_ssh_result_free(&r);
	return out;
}

/* `systemctl ACTION unit`, a ServiceError naming the unit's state if it fails. */
static int systemctl(struct cp_mgr *m, const char *action, const char *unit)
{
	const char *argv[] = {"systemctl", action, unit, NULL};
	struct cp_ssh_result r;
	int rc = cp_mgr_run(m, argv, NULL, &r), ok = rc == 0 && r.exit_code == 0;

	if (!ok) {
		struct cp_service_status st;
		char cause[400];

		snprintf(cause, sizeof(cause), "%.380s",
			 r.error.msg[0] ? r.error.msg
			 : r.err	? r.err
					: "failed");
		cp_ssh_result_free(&r);
		if (cp_service_status(m, unit, &st) < 0)
			snprintf(st.active, sizeof(st.active), "unknown");
		cp_mgr_fail(m, cp_mgr_cmd_errno(rc), CP_MGR_SERVICE, unit, action, 0,
			    "systemctl %s %s: %s", action, unit, cause);
		snprintf(m->err.state, sizeof(m->err.state), "%s", st.active);
		return cp_mgr_failed(m);
	}
	cp_ssh_result_free(&r);
	return 0;
}

/* Only what changes state counts as a change: start of an active unit, stop
 * of an inactive one and enable of an enabled one do nothing. */
int cp_service_action(struct cp_mgr *m, const char *unit, const char *action)
{
	double t0 = sl_mono_ms_f();
	struct cp_service_status st;
	int needed;
	char diff[160];

	if (cp_service_status(m, unit, &st) < 0)
		goto failed;
	needed = strcmp(action, "start") == 0 ? strcmp(st.active, "active") != 0
		 : strcmp(action, "stop") == 0
			 ? strcmp(st.active, "inactive") != 0 && strcmp(st.active, "failed") != 0
		 : strcmp(action, "enable") == 0 ? strcmp(st.enabled, "enabled") != 0
						 : 1; /* restart, reload: asked for, done */
	snprintf(diff, sizeof(diff), "~ %s %s (%s, %s)", action, unit, st.active, st.enabled);
	if (!needed) {
		cp_mgr_emit(m, action, unit, CP_MGR_UNCHANGED, t0, "");
		return 0;
	}
	if (m->check) {
		cp_mgr_emit(m, action, unit, CP_MGR_PLANNED, t0, diff);
		return 0;
	}
	/* A unit that crashed repeatedly is held by systemd's start limit
	 * ("start request repeated too quickly") until its failure is reset. */
	if (strcmp(action, "start") == 0 || strcmp(action, "restart") == 0) {
		const char *argv[] = {"systemctl", "reset-failed", unit, NULL};
		struct cp_ssh_result r;

		cp_mgr_run(m, argv, NULL, &r); /* nothing to reset is not an error */
		cp_ssh_result_free(&r);
	}
	if (systemctl(m, action, unit) < 0)
		goto failed;
	cp_mgr_emit(m, action, unit, CP_MGR_CHANGED, t0, diff);
	return 0;
failed: /* every way here filled m->err */
	cp_mgr_emit(m, action, unit, CP_MGR_FAILED, t0, m->err.cause);
	return cp_mgr_failed(m);
}

int cp_service_wait(struct cp_mgr *m, const char *unit, int timeout_ms)
{
	double t0 = sl_mono_ms_f(), up_since = 0;
	struct cp_service_status st;
	int pid = 0;

	if (m->check)
		return 0;
	/* A simple service is "active (running)" the moment it forks: it counts
	 * as started once it stayed so, same process, for STABLE_MS. A unit
	 * waiting to restart after a crash (auto-restart) has failed already. */
	for (;;) {
		if (cp_service_status(m, unit, &st) < 0)
			goto failed;
		if (strcmp(st.active, "active") == 0 && strcmp(st.sub, "running") == 0) {
			if (!up_since || st.main_pid != pid) {
				up_since = sl_mono_ms_f();
				pid = st.main_pid;
			} else if (sl_mono_ms_f() - up_since >= STABLE_MS) {
				cp_mgr_emit(m, "wait", unit, CP_MGR_UNCHANGED, t0, "");
				return 0;
			}
		} else {
			up_since = 0;
		}
		if (strcmp(st.active, "failed") == 0 || strcmp(st.sub, "auto-restart") == 0 ||
		    sl_mono_ms_f() - t0 > timeout_ms)
			break;
		usleep(WAIT_STEP_MS * 1000);
	}
	{
		char *logs = cp_service_logs(m, unit, LOG_LINES, NULL);

		cp_mgr_fail(m, strcmp(st.active, "failed") == 0 ? -EIO : -ETIMEDOUT, CP_MGR_SERVICE,
			    unit, "wait", 0,
			    "%s is %s/%s (%s) after %.0f ms; last log lines:\n%.400s", unit,
			    st.active, st.sub, st.result, sl_mono_ms_f() - t0,
			    logs ? logs : "(journalctl gave nothing)");
		snprintf(m->err.state, sizeof(m->err.state), "%s", st.active);
		free(logs);
	}
failed: /* every way here filled m->err */
	cp_mgr_emit(m, "wait", unit, CP_MGR_FAILED, t0, m->err.cause);
	return cp_mgr_failed(m);
}

int cp_service_unit(struct cp_mgr *m, const char *name, const char *content, int *changed)
{
	char path[200], validate[400];
	unsigned before = m->changed;
	int rc;

	snprintf(path, sizeof(path), "/etc/systemd/system/%s", name);
	/* systemd-analyze verify wants the unit's own name: the staged copy is
	 * checked under it in a directory of its own. */
	snprintf(validate, sizeof(validate),
		 "d=$(mktemp -d) && cp \"$1\" \"$d/%s\" && systemd-analyze verify \"$d/%s\"; "
		 "r=$?; rm -rf \"$d\"; exit $r",
		 name, name);
	if ((rc = cp_mgr_file(m, "unit", path, content, "root:root", 0644, validate, 0)) < 0)
		return rc;
	*changed = m->changed != before;
	if (*changed && !m->check) {
		const char *argv[] = {"systemctl", "daemon-reload", NULL};
		struct cp_ssh_result r;
		int ok = (rc = cp_mgr_run(m, argv, NULL, &r)) == 0 && r.exit_code == 0;

		cp_ssh_result_free(&r);
		if (!ok)
			return cp_mgr_fail(m, cp_mgr_cmd_errno(rc), CP_MGR_SERVICE, name,
					   "daemon-reload", 0, "systemctl daemon-reload failed");
	}
	return 0;
}
