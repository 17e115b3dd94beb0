/*
 * cp_security.h: the security manager (cp_security.c) and the audit
 * (cp_audit.c).
 */
#ifndef CP_SECURITY_H
#define CP_SECURITY_H

#include "cp_mgr.h"

#include <jansson.h>

enum cp_lockdown {
	CP_LOCKDOWN_NONE = 0,
	CP_LOCKDOWN_BASIC,    /* SSH hardening, firewall */
	CP_LOCKDOWN_STANDARD, /* + fail2ban, unattended security upgrades */
	CP_LOCKDOWN_STRICT,   /* + no forwarding of agents, ports or tunnels, 3 auth tries */
};
const char *cp_lockdown_name(enum cp_lockdown l);
int cp_lockdown_parse(const char *s); /* the level, or -EINVAL */

/* The sshd drop-in's text for a level (extra: more lines, or NULL). */
int cp_sshd_dropin(enum cp_lockdown level, const char *extra, char *out, size_t cap);
/* ufw's plan from `ufw status verbose` (NULL: not installed): the SSH port
 * allowed before anything closes, the relay's ports, deny incoming, enable. */
int cp_ufw_plan(const char *status, int ssh_port, const int *ports, size_t nports,
		struct cp_plan *p);

/* The port this session came in on as the host sees it, and the address
 * it came from (client, cap bytes; "" when unknown). */
int cp_security_ssh_origin(struct cp_mgr *m, char *client, size_t cap);
int cp_security_ssh_port(struct cp_mgr *m);
int cp_security_ssh(struct cp_mgr *m, enum cp_lockdown level, const char *extra);
int cp_security_firewall(struct cp_mgr *m, const int *ports, size_t nports);
int cp_security_fail2ban(struct cp_mgr *m);
int cp_security_updates(struct cp_mgr *m);
/* Everything the level includes, in order; ports: the relay's, kept open. */
int cp_security_lockdown(struct cp_mgr *m, enum cp_lockdown level, const int *ports, size_t nports,
			 const char *ssh_extra);

/* A scored report in the manner of Lynis: {"score": 0..100, "checks":
 * [{"id", "ok", "weight", "detail", "recommendation"}]}; NULL when the host
 * cannot be read. ports: those expected to listen. */
json_t *cp_security_audit(struct cp_mgr *m, const int *ports, size_t nports);
/* The same as text for a person. */
void cp_security_audit_print(const json_t *report, FILE *out);

#endif
