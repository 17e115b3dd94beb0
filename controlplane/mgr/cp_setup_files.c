/*
 * cp_setup_files.c: files the managers own on a host (a sudoers drop-in, an
 * sshd drop-in, a unit file, authorized_keys): read what is there, show the
 * difference line by line, put the new content through cp_ssh_put_mem
 * (checksum, optional check of the staged copy, owner, mode, rename) only
 * when it differs, then read it back.
 */
#include "mgr/cp_mgr_int.h"
#include "sl_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FILE_MAX (256u << 10) /* managed files are configuration, small */

/* "owner:group mode" then the content, or nothing when absent. */
static const char FILE_FACTS_SH[] =
	"[ -e \"$1\" ] || exit 0; [ -f \"$1\" ] || { echo 'not a regular file' >&2; exit 3; }; "
	"stat -c '%U:%G %a' -- \"$1\"; cat -- \"$1\"";

/* Ownership: a value; content points into the facts command's result, which the caller keeps. */
struct file_facts {
	int exists;
	char owner[140];
	unsigned mode;
	const char *content; /* into the result's buffer */
};

/* Lines of a not in b, prefixed with mark, into the plan's diff. */
static void diff_lines(struct cp_plan *p, const char *a, const char *b, char mark)
{
	for (const char *l = a; l && *l;) {
		const char *nl = strchr(l, '\n');
		size_t n = nl ? (size_t)(nl - l) : strlen(l);
		int found = 0;

		for (const char *k = b; k && *k && !found;) {
			const char *knl = strchr(k, '\n');
			size_t kn = knl ? (size_t)(knl - k) : strlen(k);

			found = kn == n && memcmp(k, l, n) == 0;
			k = knl ? knl + 1 : NULL;
		}
		if (!found)
			cp_plan_diff(p, "%c %.*s", mark, (int)(n > 200 ? 200 : n), l);
		l = nl ? nl + 1 : NULL;
	}
}

int cp_file_plan(const char *path, const char *content, const char *owner, unsigned mode,
		 int exists, const char *cur_owner, unsigned cur_mode, const char *cur,
		 struct cp_plan *p)
{
	cp_plan_init(p);
	if (!exists) {
		cp_plan_diff(p, "+ file %s (%s, %o, %zu bytes)", path, owner, mode,
			     strlen(content));
		diff_lines(p, content, "", '+');
		p->n = 1; /* one change: the put */
		return 0;
	}
	if (strcmp(cur, content) != 0) {
		cp_plan_diff(p, "~ file %s", path);
		diff_lines(p, cur, content, '-');
		diff_lines(p, content, cur, '+');
		p->n = 1;
	}
	if (strcmp(cur_owner, owner) != 0 || cur_mode != mode) {
		cp_plan_diff(p, "~ file %s: %s %o -> %s %o", path, cur_owner, cur_mode, owner,
			     mode);
		p->n = 1;
	}
	return 0;
}

static int file_state(struct cp_mgr *m, const char *op, const char *path, struct cp_ssh_result *r,
		      struct file_facts *f)
{
	int rc = cp_mgr_sh(m, FILE_FACTS_SH, path, r);
	char *nl;

	memset(f, 0, sizeof(*f));
	if (rc < 0 || r->exit_code != 0 || r->truncated)
		return cp_mgr_fail(m, r->truncated && rc == 0 ? -E2BIG : cp_mgr_cmd_errno(rc),
				   CP_MGR_SETUP, op, path, r->error.retryable, "reading %s: %s",
				   path,
				   r->error.msg[0] ? r->error.msg
				   : r->truncated  ? "too large"
				   : r->err	   ? r->err
						   : "failed");
	if (!r->out || !*r->out)
		return 0;
	nl = strchr(r->out, '\n');
	if (!nl || sscanf(r->out, "%139s %o", f->owner, &f->mode) != 2)
		return cp_mgr_fail(m, -EBADMSG, CP_MGR_SETUP, op, path, 0, "unreadable state of %s",
				   path);
	f->exists = 1;
	f->content = nl + 1;
	return 0;
}

int cp_mgr_file(struct cp_mgr *m, const char *op, const char *path, const char *content,
		const char *owner, unsigned mode, const char *validate, int secret)
{
	double t0 = sl_mono_ms_f();
	struct cp_ssh_result r;
	struct file_facts f;
	struct cp_plan p, again;
	struct cp_ssh_xfer x = {.mode = mode,
				.owner = owner,
				.sudo = m->sudo,
				.sudo_password = m->sudo_password,
				.validate = validate,
				.timeout_ms = 120000};
	struct cp_ssh_xfer_result xr;
	int rc;

	if (cp_mgr_cancelled(m, op))
		goto failed;
	if (strlen(content) > FILE_MAX) {
		cp_mgr_fail(m, -E2BIG, CP_MGR_SETUP, op, path, 0, "content too large");
		goto failed;
	}
	if (file_state(m, op, path, &r, &f) < 0) {
		cp_ssh_result_free(&r);
		goto failed;
	}
	cp_file_plan(path, content, owner, mode, f.exists, f.owner, f.mode, f.content, &p);
	cp_ssh_result_free(&r);
	if (secret && p.n) {
		p.diff_len = 0;
		cp_plan_diff(&p, "~ file %s (content not shown: it holds secrets)", path);
	}
	if (cp_mgr_settled(m, op, path, &p, t0))
		return 0;
	/* Root puts files in place itself (x.sudo 0); a login user stages them
	 * and sudo installs them (m->sudo). */
	if ((rc = cp_ssh_put_mem(m->pool, content, strlen(content), path, &x, &xr)) < 0) {
		cp_mgr_fail(m, rc, CP_MGR_SETUP, op, path, xr.error.retryable, "%s", xr.error.msg);
		goto failed;
	}
	if (file_state(m, op, path, &r, &f) < 0) {
		cp_ssh_result_free(&r);
		goto failed;
	}
	cp_file_plan(path, content, owner, mode, f.exists, f.owner, f.mode, f.content, &again);
	cp_ssh_result_free(&r);
	if (again.n) {
		cp_mgr_fail(m, -EIO, CP_MGR_SETUP, op, path, 0, "still differs after the change");
		goto failed;
	}
	cp_mgr_emit(m, op, path, CP_MGR_CHANGED, t0, p.diff);
	return 0;
failed: /* every way here filled m->err */
	cp_mgr_emit(m, op, path, CP_MGR_FAILED, t0, m->err.cause);
	return cp_mgr_failed(m);
}

int cp_setup_file(struct cp_mgr *m, const char *path, const char *content, const char *owner,
		  unsigned mode, const char *validate)
{
	return cp_mgr_file(m, "file", path, content, owner, mode, validate, 0);
}

int cp_sudoers_name_ok(const char *name)
{
	/* sudo's #includedir skips names with a dot or ending in ~ (sudoers(5)). */
	if (!name || !*name || strlen(name) > 64 || name[strlen(name) - 1] == '~')
		return 0;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
		      (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
			return 0;
	return 1;
}

int cp_setup_sudoers(struct cp_mgr *m, const char *name, const char *content)
{
	char path[128];

	if (!cp_sudoers_name_ok(name))
		return cp_mgr_fail(m, -EINVAL, CP_MGR_SETUP, "sudoers", name ? name : "", 0,
				   "drop-in name \"%s\": letters, digits, _ and - only (sudo "
				   "ignores names with a dot or a trailing ~)",
				   name ? name : "");
	snprintf(path, sizeof(path), "/etc/sudoers.d/%s", name);
	return cp_mgr_file(m, "sudoers", path, content, "root:root", 0440, "visudo -cf \"$1\"", 0);
}

int cp_setup_authorized_key(struct cp_mgr *m, const char *user, const char *key)
{
	struct cp_ssh_result r;
	char home[300], path[340], owner[140], *content = NULL;
	struct cp_dir_spec d = {.owner = user, .group = user, .mode = 0700};
	const char *cur;
	int rc;

	rc = cp_mgr_sh(m, "getent passwd \"$1\" | cut -d: -f6", user, &r);
	if (rc < 0 || r.exit_code != 0 || !r.out || !*r.out) {
		cp_ssh_result_free(&r);
		return cp_mgr_fail(m, rc < 0 ? rc : -ENOENT, CP_MGR_SETUP, "authorized_key", user,
				   0, "no user %s", user);
	}
	snprintf(home, sizeof(home), "%.*s", (int)strcspn(r.out, "\n"), r.out);
	cp_ssh_result_free(&r);
	snprintf(path, sizeof(path), "%s/.ssh", home);
	d.path = path;
	if ((rc = cp_setup_dir(m, &d)) < 0)
		return rc;
	snprintf(path, sizeof(path), "%s/.ssh/authorized_keys", home);
	rc = cp_mgr_sh(m, "cat -- \"$1\" 2>/dev/null || true", path, &r);
	cur = rc == 0 && r.out ? r.out : "";
	if (strstr(cur, key)) {
		content = strdup(cur);
	} else if (asprintf(&content, "%s%s%s\n", cur,
			    *cur && cur[strlen(cur) - 1] != '\n' ? "\n" : "", key) < 0) {
		content = NULL;
	}
	cp_ssh_result_free(&r);
	if (!content)
		return cp_mgr_fail(m, -ENOMEM, CP_MGR_SETUP, "authorized_key", user, 0,
				   "out of memory");
	snprintf(owner, sizeof(owner), "%s:%s", user, user);
	rc = cp_mgr_file(m, "authorized_key", path, content, owner, 0600, NULL, 0);
	free(content);
	return rc;
}
