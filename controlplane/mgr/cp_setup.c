/*
 * cp_setup.c: the setup manager: users, SSH keys, directories, files and
 * sudoers drop-ins, packages. Each operation: facts from one command, a pure
 * plan (tested without a host), the driver in cp_mgr.c for the rest.
 */
#include "mgr/cp_mgr_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- users ---- */

int cp_user_facts_parse(const char *passwd_line, const char *groups, struct cp_user_facts *f)
{
	char name[64], pw[64], gecos[256];
	unsigned gid;

	memset(f, 0, sizeof(*f));
	if (!passwd_line || !*passwd_line)
		return 0;
	/* name:x:uid:gid:gecos:home:shell; gecos may be empty. */
	if (sscanf(passwd_line, "%63[^:]:%63[^:]:%u:%u:%255[^:]:%255[^:]:%127[^:\n]", name, pw,
		   &f->uid, &gid, gecos, f->home, f->shell) != 7 &&
	    sscanf(passwd_line, "%63[^:]:%63[^:]:%u:%u::%255[^:]:%127[^:\n]", name, pw, &f->uid,
		   &gid, f->home, f->shell) != 6)
		return -EINVAL;
	f->exists = 1;
	snprintf(f->groups, sizeof(f->groups), " %s ", groups ? groups : "");
	for (char *c = f->groups; *c; c++)
		if (*c == '\n')
			*c = ' ';
	return 0;
}

static const char *user_home(const struct cp_user_spec *u, char *buf, size_t cap)
{
	if (u->home)
		return u->home;
	if (u->system)
		return "/nonexistent";
	snprintf(buf, cap, "/home/%s", u->name);
	return buf;
}

static const char *user_shell(const struct cp_user_spec *u)
{
	return u->shell ? u->shell : u->system ? "/usr/sbin/nologin" : "/bin/bash";
}

static int in_groups(const struct cp_user_facts *f, const char *g)
{
	char w[80];

	snprintf(w, sizeof(w), " %s ", g);
	return strstr(f->groups, w) != NULL;
}

int cp_user_plan(const struct cp_user_spec *u, const struct cp_user_facts *f, struct cp_plan *p)
{
	char hb[300], list[600] = "";
	const char *home = user_home(u, hb, sizeof(hb)), *shell = user_shell(u);
	size_t o = 0;

	cp_plan_init(p);
	for (size_t i = 0; i < 8 && u->groups[i]; i++) {
		if (f->exists && in_groups(f, u->groups[i]))
			continue;
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", o ? "," : "",
				      u->groups[i]);
		cp_plan_cmd(p, "groupadd", "-f", u->groups[i], (const char *)NULL);
	}
	if (!f->exists) {
		const char *argv[12] = {"useradd"};
		size_t k = 1;

		if (u->system)
			argv[k++] = "--system";
		/* A system user gets no home unless one is named; others get theirs made. */
		argv[k++] = u->system && !u->home ? "--no-create-home" : "--create-home";
		argv[k++] = "--home-dir";
		argv[k++] = home;
		argv[k++] = "--shell";
		argv[k++] = shell;
		argv[k++] = u->name;
		argv[k] = NULL;
		cp_plan_cmdv(p, argv);
		if (o)
			cp_plan_cmd(p, "usermod", "--append", "--groups", list, u->name,
				    (const char *)NULL);
		cp_plan_diff(p, "+ user %s (%s, home %s, shell %s%s%s)", u->name,
			     u->system ? "system" : "login", home, shell, o ? ", groups " : "",
			     list);
		return 0;
	}
	if (strcmp(f->shell, shell) != 0) {
		cp_plan_cmd(p, "usermod", "--shell", shell, u->name, (const char *)NULL);
		cp_plan_diff(p, "~ user %s: shell %s -> %s", u->name, f->shell, shell);
	}
	if ((u->home || !u->system) && strcmp(f->home, home) != 0) {
		cp_plan_cmd(p, "usermod", "--home", home, "--move-home", u->name,
			    (const char *)NULL);
		cp_plan_diff(p, "~ user %s: home %s -> %s", u->name, f->home, home);
	}
	if (o) {
		cp_plan_cmd(p, "usermod", "--append", "--groups", list, u->name,
			    (const char *)NULL);
		cp_plan_diff(p, "~ user %s: + groups %s", u->name, list);
	}
	return 0;
}

static const char USER_FACTS_SH[] =
	"getent passwd \"$1\" || true; echo '--'; id -nG \"$1\" 2>/dev/null || true";

/* Split "a\n--\nb" at the separator line. */
static void split_facts(char *out, const char **first, const char **second)
{
	char *sep = out ? strstr(out, "--\n") : NULL;

	*first = out ? out : "";
	*second = "";
	if (sep) {
		*sep = '\0';
		*second = sep + 3;
	}
}

static int plan_user(struct cp_mgr *m, const void *spec, struct cp_plan *p)
{
	const struct cp_user_spec *u = spec;
	struct cp_ssh_result r;
	struct cp_user_facts f;
	const char *pw, *groups;
	int rc = cp_mgr_sh(m, USER_FACTS_SH, u->name, &r);

	if (rc < 0 || r.exit_code != 0) {
		cp_mgr_fail(m, cp_mgr_cmd_errno(rc), CP_MGR_SETUP, "user", u->name,
			    r.error.retryable, "reading the user: %s",
			    r.error.msg[0] ? r.error.msg : "failed");
		cp_ssh_result_free(&r);
		return cp_mgr_failed(m);
	}
	split_facts(r.out, &pw, &groups);
	rc = cp_user_facts_parse(pw, groups, &f);
	cp_ssh_result_free(&r);
	if (rc < 0)
		return cp_mgr_fail(m, -EBADMSG, CP_MGR_SETUP, "user", u->name, 0,
				   "unreadable passwd entry");
	return cp_user_plan(u, &f, p);
}

int cp_setup_user(struct cp_mgr *m, const struct cp_user_spec *u)
{
	return cp_mgr_apply(m, CP_MGR_SETUP, "user", u->name, plan_user, u);
}

/* ---- directories ---- */

int cp_dir_facts_parse(const char *stat_line, struct cp_dir_facts *f)
{
	memset(f, 0, sizeof(*f));
	if (!stat_line || !*stat_line)
		return 0;
	if (sscanf(stat_line, "%63s %63s %o", f->owner, f->group, &f->mode) != 3)
		return -EINVAL;
	f->exists = 1;
	return 0;
}

int cp_dir_plan(const struct cp_dir_spec *d, const struct cp_dir_facts *f, struct cp_plan *p)
{
	char mode[16], og[140];

	cp_plan_init(p);
	snprintf(mode, sizeof(mode), "%o", d->mode);
	snprintf(og, sizeof(og), "%s:%s", d->owner, d->group);
	if (!f->exists) {
		cp_plan_cmd(p, "install", "-d", "-m", mode, "-o", d->owner, "-g", d->group, d->path,
			    (const char *)NULL);
		cp_plan_diff(p, "+ directory %s (%s, %s)", d->path, og, mode);
		return 0;
	}
	if (strcmp(f->owner, d->owner) != 0 || strcmp(f->group, d->group) != 0) {
		cp_plan_cmd(p, "chown", og, d->path, (const char *)NULL);
		cp_plan_diff(p, "~ directory %s: owner %s:%s -> %s", d->path, f->owner, f->group,
			     og);
	}
	if (f->mode != d->mode) {
		cp_plan_cmd(p, "chmod", mode, d->path, (const char *)NULL);
		cp_plan_diff(p, "~ directory %s: mode %o -> %s", d->path, f->mode, mode);
	}
	return 0;
}

static const char DIR_FACTS_SH[] = "[ -e \"$1\" ] || exit 0; [ -d \"$1\" ] || { echo \"not a "
				   "directory\" >&2; exit 3; }; stat -c '%U %G %a' -- \"$1\"";

static int plan_dir(struct cp_mgr *m, const void *spec, struct cp_plan *p)
{
	const struct cp_dir_spec *d = spec;
	struct cp_ssh_result r;
	struct cp_dir_facts f;
	int rc = cp_mgr_sh(m, DIR_FACTS_SH, d->path, &r);

	if (rc < 0 || r.exit_code != 0 || cp_dir_facts_parse(r.out, &f) < 0) {
		cp_mgr_fail(m, rc < 0 || r.exit_code != 0 ? cp_mgr_cmd_errno(rc) : -EBADMSG,
			    CP_MGR_SETUP, "directory", d->path, r.error.retryable, "%s: %s",
			    d->path,
			    r.error.msg[0]    ? r.error.msg
			    : r.err && *r.err ? r.err
					      : "unreadable");
		cp_ssh_result_free(&r);
		return cp_mgr_failed(m);
	}
	cp_ssh_result_free(&r);
	return cp_dir_plan(d, &f, p);
}

int cp_setup_dir(struct cp_mgr *m, const struct cp_dir_spec *d)
{
	return cp_mgr_apply(m, CP_MGR_SETUP, "directory", d->path, plan_dir, d);
}

/* ---- packages ---- */

static int installed(const char *status, const char *pkg)
{
	size_t n = strlen(pkg);

	for (const char *l = status; l && *l;) {
		const char *nl = strchr(l, '\n');

		if (strncmp(l, pkg, n) == 0 && (l[n] == ' ' || l[n] == ':') &&
		    strstr(l + n, " install ok installed") != NULL &&
		    (!nl || strstr(l + n, " install ok installed") < nl))
			return 1;
		l = nl ? nl + 1 : NULL;
	}
	return 0;
}

int cp_pkgs_plan(const char *const *pkgs, const char *status, struct cp_plan *p)
{
	const char *argv_head[] = {"env", "DEBIAN_FRONTEND=noninteractive", "apt-get",
				   "-o",  "DPkg::Lock::Timeout=600",	    "-q",
				   "-y",  "--no-install-recommends",	    "install"};
	size_t k = 0, missing = 0;

	cp_plan_init(p);
	for (size_t i = 0; pkgs[i]; i++)
		if (!installed(status, pkgs[i])) {
			cp_plan_diff(p, "+ package %s", pkgs[i]);
			missing++;
		}
	if (!missing)
		return 0;
	/* The lists first (a fresh host has none); both wait for dpkg's lock
	 * (apt's DPkg::Lock::Timeout) instead of failing on it. */
	cp_plan_cmd(p, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-o",
		    "DPkg::Lock::Timeout=600", "-q", "update", (const char *)NULL);
	for (; k < sizeof(argv_head) / sizeof(argv_head[0]); k++)
		p->argv[p->n][k] = argv_head[k];
	for (size_t i = 0; pkgs[i]; i++) {
		if (installed(status, pkgs[i]))
			continue;
		if (k >= CP_PLAN_ARGS) {
			p->overflow = 1;
			return -ENOSPC;
		}
		p->argv[p->n][k++] = pkgs[i];
	}
	p->argv[p->n][k] = NULL;
	p->n++;
	return 0;
}

static int plan_pkgs(struct cp_mgr *m, const void *spec, struct cp_plan *p)
{
	const char *const *pkgs = spec;
	const char *argv[CP_PLAN_ARGS + 4] = {"dpkg-query", "-W", "-f", "${Package} ${Status}\\n"};
	struct cp_ssh_result r;
	size_t n = 4;
	int rc;

	for (size_t i = 0; pkgs[i] && n + 1 < sizeof(argv) / sizeof(argv[0]); i++)
		argv[n++] = pkgs[i];
	argv[n] = NULL;
	/* dpkg-query exits 1 when some are unknown: the output is what counts. */
	rc = cp_mgr_run(m, argv, NULL, &r);
	if (rc < 0) {
		cp_mgr_fail(m, rc, CP_MGR_SETUP, "packages", pkgs[0], r.error.retryable,
			    "asking dpkg: %s", r.error.msg);
		cp_ssh_result_free(&r);
		return rc;
	}
	/* Its only failure, -ENOSPC, leaves p->overflow set: cp_mgr_apply
	 * refuses such a plan with its reason. */
	cp_pkgs_plan(pkgs, r.out ? r.out : "", p);
	cp_ssh_result_free(&r);
	return 0;
}

int cp_setup_packages(struct cp_mgr *m, const char *const *pkgs)
{
	return cp_mgr_apply(m, CP_MGR_SETUP, "packages", pkgs[0] ? pkgs[0] : "", plan_pkgs, pkgs);
}
