/*
 * cp_provision.h: a host made a running sluice relay in one idempotent run
 * (cp_provision.c).
 */
#ifndef CP_PROVISION_H
#define CP_PROVISION_H

#include "mgr/cp_mgr.h"

/* Ownership: the caller's for the run; every string borrowed. */
struct cp_provision_spec {
	const char *relay_binary;	   /* local path of sluice-relay to install */
	const char *relay_id;		   /* its id in the cluster registry */
	const char *redis_url;		   /* Redis as the relay reaches it */
	const char *session_secret;	   /* the control plane's */
	const char *http, *agents, *admin; /* listen addresses on the host */
	const char *domain;
	int lockdown;		  /* enum cp_lockdown: hardening applied before the relay */
	int firewall;		  /* enum cp_firewall: its backend */
	const char *ssh_extra;	  /* more sshd lines for the hardening drop-in, or NULL */
	const char *verify_redis; /* Redis as the control plane sees it, to see the
				     relay join; NULL or "": not checked */
};
/* The relay's public ports (from http and agents), for the firewall. */
size_t cp_provision_ports(const struct cp_provision_spec *s, int *ports, size_t max);

/* The relay's configuration file's text into out; its length or -ENOSPC. */
int cp_provision_config(const struct cp_provision_spec *s, char *out, size_t cap);
/* Every step, in order, stopping at the first failure or when m->cancel
 * is set (between steps): 0, or the failed step's negative errno with
 * m->err filled (-ECANCELED when cancelled). */
int cp_provision(struct cp_mgr *m, const struct cp_provision_spec *s);

#endif
