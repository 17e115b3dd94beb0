/*
 * cp_security.h: the security manager (cp_security.c): a host locked down
 * to a level (SSH hardening, a firewall, fail2ban, security updates), each
 * change behind a dead man's switch. The audit that scores a host is
 * mgr/cp_sec_audit.h's.
 */
#ifndef CP_SECURITY_H
#define CP_SECURITY_H

#include "mgr/cp_mgr.h"

#include <jansson.h>

enum cp_lockdown {
	CP_LOCKDOWN_NONE = 0,
	CP_LOCKDOWN_BASIC,    /* SSH hardening, firewall */
	CP_LOCKDOWN_STANDARD, /* + fail2ban, unattended security upgrades */
	CP_LOCKDOWN_STRICT,   /* + no forwarding of agents, ports or tunnels, 3 auth tries */
};
const char *cp_lockdown_name(enum cp_lockdown l);
int cp_lockdown_parse(const char *s); /* the level, or -EINVAL */

/* The firewall's backend. auto: ufw when the host has it; iptables when it
 * has iptables and no ufw (a host already run on iptables rules keeps its
 * tool: ufw on top would fight them); otherwise ufw installed. */
enum cp_firewall { CP_FW_AUTO = 0, CP_FW_UFW, CP_FW_IPTABLES };
int cp_firewall_parse(const char *s); /* or -EINVAL */
const char *cp_firewall_name(enum cp_firewall f);
enum cp_firewall cp_firewall_choose(enum cp_firewall want, int has_ufw, int has_iptables);

/* What a lockdown does: the level, the relay's ports kept open, more sshd
 * lines (or NULL), the firewall's backend. */
struct cp_lockdown_spec {
	enum cp_lockdown level;
	const int *ports;
	size_t nports;
	const char *ssh_extra;
	enum cp_firewall firewall;
};

/* The sshd drop-in's text for a level (extra: more lines, or NULL). */
int cp_sshd_dropin(enum cp_lockdown level, const char *extra, char *out, size_t cap);
/* ufw's plan from `ufw status verbose` (NULL: not installed): the SSH port
 * allowed before anything closes, the relay's ports, deny incoming, enable. */
int cp_ufw_plan(const char *status, int ssh_port, const int *ports, size_t nports,
		struct cp_plan *p);
/* Where ufw is absent: the script (/usr/local/sbin/sluice-firewall, also run
 * at boot by sluice-firewall.service) that replaces the SLUICE-IN chain in
 * one iptables-restore transaction (ip6tables too) and jumps to it first
 * from INPUT: loopback, established, ICMP, SSH and the relay's ports
 * accepted, the rest dropped. */
int cp_iptables_script(int ssh_port, const int *ports, size_t nports, char *out, size_t cap);
/* Its plan from `iptables -S SLUICE-IN` (NULL: no chain) and whether INPUT
 * jumps to it: the script run when any rule differs. */
int cp_iptables_plan(const char *chain, int jumped, int ssh_port, const int *ports, size_t nports,
		     struct cp_plan *p);

/* The port this session came in on as the host sees it, and the address
 * it came from (client, cap bytes; "" when unknown); asked once per run. */
int cp_security_ssh_origin(struct cp_mgr *m, char *client, size_t cap);
int cp_security_ssh_port(struct cp_mgr *m);
int cp_security_ssh(struct cp_mgr *m, enum cp_lockdown level, const char *extra);
int cp_security_firewall(struct cp_mgr *m, enum cp_firewall fw, const int *ports, size_t nports);
int cp_security_fail2ban(struct cp_mgr *m);
int cp_security_updates(struct cp_mgr *m);
/* Everything the level includes, in order. */
int cp_security_lockdown(struct cp_mgr *m, const struct cp_lockdown_spec *l);

#endif
