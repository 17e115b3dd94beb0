/*
 * cp_mgr_int.h: what the managers' files share (cp_mgr.c): running commands
 * on the host, the facts-plan-apply-verify driver, events and errors.
 */
#ifndef CP_MGR_INT_H
#define CP_MGR_INT_H

#include "mgr/cp_mgr.h"

/* Read the host's facts for spec and plan the difference into p (which it
 * initialises); 0, or a negative errno with m->err set (the facts could
 * not be read). */
typedef int (*cp_mgr_plan_fn)(struct cp_mgr *m, const void *spec, struct cp_plan *p);

/* Plan, apply unless m->check, re-plan (must be empty), one event. */
int cp_mgr_apply(struct cp_mgr *m, enum cp_mgr_err_type type, const char *op, const char *step,
		 cp_mgr_plan_fn plan, const void *spec);
/* Called with the plan about to run (not empty, not check mode), before its
 * first command: what must be in place before the host changes (a dead
 * man's switch) goes up here, from the plan in hand. */
typedef void (*cp_mgr_guard_fn)(struct cp_mgr *m, const struct cp_plan *p, void *arg);
/* cp_mgr_apply with guard(m, plan, arg) before the plan runs. */
int cp_mgr_apply_guarded(struct cp_mgr *m, enum cp_mgr_err_type type, const char *op,
			 const char *step, cp_mgr_plan_fn plan, const void *spec,
			 cp_mgr_guard_fn guard, void *arg);
/* A command (with sudo when m->sudo); r as cp_ssh_run fills it. */
int cp_mgr_run(struct cp_mgr *m, const char *const *argv, const char *input,
	       struct cp_ssh_result *r);
/* sh -c script with $1 = arg (or none). */
int cp_mgr_sh(struct cp_mgr *m, const char *script, const char *arg, struct cp_ssh_result *r);
/* A file's facts-diff-put-verify (cp_setup_files.c), as operation op.
 * secret: its lines never reach a diff (it holds a password or a key). */
int cp_mgr_file(struct cp_mgr *m, const char *op, const char *path, const char *content,
		const char *owner, unsigned mode, const char *validate, int secret);
/* A plan with nothing to do, or check mode: its event (unchanged or
 * planned) emitted, 1; 0 when the plan is to be applied. */
int cp_mgr_settled(struct cp_mgr *m, const char *op, const char *step, const struct cp_plan *p,
		   double t0);
void cp_mgr_emit(struct cp_mgr *m, const char *op, const char *step, enum cp_mgr_status st,
		 double t0, const char *diff);

#endif
