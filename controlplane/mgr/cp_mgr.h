/*
 * cp_mgr.h: managers that bring a host to a described state over SSH, the
 * way Ansible and pyinfra do, on the executor (cp_ssh.h).
 *
 * Every operation reads the host's current state (facts), plans only the
 * difference (commands and a diff a person can read), applies it unless in
 * check mode, then reads the facts again and requires an empty plan. Facts
 * parsing and planning are pure functions (tests/unit/test_cp_mgr.c feeds
 * them facts and checks the commands, no host needed); running is the only
 * part that talks to the host. Each step emits one progress event; a failure
 * stops the run with a typed error naming the operation and the step.
 */
#ifndef CP_MGR_H
#define CP_MGR_H

#include "ssh/cp_ssh.h"

#include <jansson.h>

#include <errno.h>
#include <stddef.h>

/* The error types: SetupError{operation, step, cause, retryable},
 * SecurityError{component, rule, cause, critical}, ServiceError{service,
 * action, cause, state}. One struct: `what` is operation / component /
 * service, `step` is step / rule / action. */
enum cp_mgr_err_type { CP_MGR_OK = 0, CP_MGR_SETUP, CP_MGR_SECURITY, CP_MGR_SERVICE };
struct cp_mgr_err {
	enum cp_mgr_err_type type;
	int code; /* the negative errno the run failed with (cp_mgr_fail's err) */
	char what[64];
	char step[64];
	char cause[600];
	int retryable;	/* setup: trying again may work (the dpkg lock, the network) */
	int critical;	/* security: the host is left less safe than asked */
	char state[64]; /* service: the unit's state when it failed */
};
const char *cp_mgr_err_type_name(enum cp_mgr_err_type t); /* "SetupError", ... */

enum cp_mgr_status {
	CP_MGR_UNCHANGED = 0, /* already as described */
	CP_MGR_PLANNED,	      /* check mode: would change (diff says how) */
	CP_MGR_CHANGED,	      /* changed and verified */
	CP_MGR_FAILED,
};
const char *cp_mgr_status_name(enum cp_mgr_status s);

/* Ownership: the manager's for the callback's duration: copy what you keep. */
struct cp_mgr_event {
	const char *operation; /* "user", "directory", "packages", ... */
	const char *step;      /* what it is about: "sluice", "/etc/sluice", ... */
	enum cp_mgr_status status;
	double duration_ms;
	const char *diff; /* what changes (or would), "" when nothing */
};
typedef void (*cp_mgr_event_cb)(void *arg, const struct cp_mgr_event *ev);

/* A run against one host. The caller owns it; pool stays the caller's. */
struct cp_mgr {
	struct cp_ssh_pool *pool;
	int check;		   /* plan and report, change nothing */
	int sudo;		   /* the login user is not root: commands go through sudo */
	const char *sudo_password; /* for sudo, or NULL */
	cp_mgr_event_cb on_event;
	void *arg;
	unsigned steps, changed; /* counted over the run */
	struct cp_mgr_err err;	 /* the failure that stopped the run */
	/* Set by another thread to stop the run. Looked at between operations
	 * only: a step under way finishes (apt or an sshd reload cut in the
	 * middle would leave the host worse than either state). */
	const volatile int *cancel;
	/* Where this session comes from, as the host sees it: asked once
	 * (cp_security_ssh_origin); ssh_port 0 until then. */
	int ssh_port;
	char ssh_client[64];
};

/* Record the failure that stops the run in m->err (a manager's, or its
 * caller's when the run cannot start: no connection), err its cause as a
 * negative errno (-EIO a command failed, -ETIMEDOUT, -ENOMEM, ...), which it
 * returns: a manager ends with return cp_mgr_fail(...). */
int cp_mgr_fail(struct cp_mgr *m, int err, enum cp_mgr_err_type t, const char *what,
		const char *step, int retryable, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));
/* What a run that failed returns: the errno cp_mgr_fail recorded (-EIO
 * should a failure have gone unrecorded: never 0, which reads as success). */
static inline int cp_mgr_failed(const struct cp_mgr *m)
{
	return m->err.code < 0 ? m->err.code : -EIO;
}
/* The errno of a command that failed: cp_ssh_run's rc when it did not run,
 * -EIO when it ran and exited non-zero. */
static inline int cp_mgr_cmd_errno(int rc)
{
	return rc < 0 ? rc : -EIO;
}

/* The run was asked to stop: fails it (SetupError, step "cancelled",
 * -ECANCELED) and returns 1; 0 otherwise (a predicate). */
int cp_mgr_cancelled(struct cp_mgr *m, const char *op);

/* JSON as the CLI prints and the API streams them: an event
 * {"operation","step","status","changed","duration_ms","diff"}, the typed
 * error {"type","what","step","cause","retryable","critical","state"}, and a
 * run's result {"ok","check","steps","changed","duration_ms","error"}. */
json_t *cp_mgr_event_json(const struct cp_mgr_event *ev);
json_t *cp_mgr_err_json(const struct cp_mgr *m);
json_t *cp_mgr_result_json(const struct cp_mgr *m, int rc, double duration_ms);

/* ---- plans: what an operation would run ---- */

#define CP_PLAN_CMDS 16
#define CP_PLAN_ARGS 24
/* Commands (argv vectors) and a diff; strings live in the plan's arena. Ownership: a value: its
 * strings live in its own arena. */
struct cp_plan {
	size_t n;
	const char *argv[CP_PLAN_CMDS][CP_PLAN_ARGS + 1];
	char diff[2048];
	size_t diff_len;
	char arena[8192];
	size_t used;
	int overflow; /* something did not fit: the plan must not run */
};
void cp_plan_init(struct cp_plan *p);
/* Add one command: words, NULL-terminated. Returns 0 or -ENOSPC. */
int cp_plan_cmd(struct cp_plan *p, ...) __attribute__((sentinel));
/* The same from a NULL-terminated vector (copied into the arena). */
int cp_plan_cmdv(struct cp_plan *p, const char *const *argv);
/* Append a line to the diff ("+ user sluice (system, shell /usr/sbin/nologin)"). */
void cp_plan_diff(struct cp_plan *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- setup manager ---- */

/* Ownership: the caller's; every string borrowed. */
struct cp_user_spec {
	const char *name;
	int system;	       /* a system user (no aging, uid below 1000) */
	const char *home;      /* NULL: /home/<name>, or none for a system user */
	const char *shell;     /* NULL: /bin/bash, or /usr/sbin/nologin for a system user */
	const char *groups[8]; /* supplementary groups, NULL-terminated */
};
/* What the host says of a user: `getent passwd NAME` and `id -nG NAME`. */
struct cp_user_facts {
	int exists;
	unsigned uid;
	char home[256], shell[128];
	char groups[512]; /* space-separated, as id -nG prints them */
};
int cp_user_facts_parse(const char *passwd_line, const char *groups, struct cp_user_facts *f);
int cp_user_plan(const struct cp_user_spec *u, const struct cp_user_facts *f, struct cp_plan *p);

/* Ownership: the caller's; every string borrowed. */
struct cp_dir_spec {
	const char *path;
	const char *owner, *group; /* names */
	unsigned mode;
};
/* `stat -c '%U %G %a' PATH` (or empty: absent). */
struct cp_dir_facts {
	int exists;
	char owner[64], group[64];
	unsigned mode;
};
int cp_dir_facts_parse(const char *stat_line, struct cp_dir_facts *f);
int cp_dir_plan(const struct cp_dir_spec *d, const struct cp_dir_facts *f, struct cp_plan *p);

/* dpkg-query's "Status" of each package, one "name install ok installed"
 * line per package; absent ones are missing. */
int cp_pkgs_plan(const char *const *pkgs, const char *dpkg_status, struct cp_plan *p);

/* A file's plan: one change (the put) when content, owner ("user:group")
 * or mode differ; the diff shows lines removed (-) and added (+). */
int cp_file_plan(const char *path, const char *content, const char *owner, unsigned mode,
		 int exists, const char *cur_owner, unsigned cur_mode, const char *cur,
		 struct cp_plan *p);
/* sudo reads /etc/sudoers.d files whose names have no dot and no trailing ~. */
int cp_sudoers_name_ok(const char *name);

/* Operations on the host (facts, plan, apply, verify): 0, or a negative
 * errno (m->err.code) with m->err filled. */
int cp_setup_user(struct cp_mgr *m, const struct cp_user_spec *u);
int cp_setup_dir(struct cp_mgr *m, const struct cp_dir_spec *d);
int cp_setup_packages(struct cp_mgr *m, const char *const *pkgs);
/* key ("ssh-ed25519 AAAA... comment") in user's ~/.ssh/authorized_keys,
 * ~/.ssh 0700 and the file 0600, owned by the user. */
int cp_setup_authorized_key(struct cp_mgr *m, const char *user, const char *key);
/* A file with this content, owner and mode (put only when it differs);
 * validate: a command run on the staged copy ("visudo -cf"), or NULL. */
int cp_setup_file(struct cp_mgr *m, const char *path, const char *content, const char *owner,
		  unsigned mode, const char *validate);
/* A sudoers drop-in /etc/sudoers.d/<name> (no dots: sudo ignores such
 * files), checked by visudo -c before it is put in place. */
int cp_setup_sudoers(struct cp_mgr *m, const char *name, const char *content);

#endif
