/*
 * cp_security.c: the security manager. SSH hardening as an sshd_config.d
 * drop-in (checked with sshd -t, refused when its algorithm lists leave
 * nothing our libssh2 speaks, applied by reload, proven by a fresh
 * connection, rolled back by itself when that connection fails), a firewall
 * (ufw, or iptables where ufw is absent) that always keeps the SSH port in
 * use open, fail2ban's sshd jail on
 * the systemd backend, unattended security upgrades, all of it at a level
 * (cp_security_lockdown), and an audit that scores the host.
 */
#include "mgr/cp_mgr_int.h"
#include "mgr/cp_security.h"
#include "mgr/cp_service.h"
#include "ssh/cp_ssh_diag.h"
#include "sl_time.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SSHD_DROPIN "/etc/ssh/sshd_config.d/50-sluice-hardening.conf"
#define F2B_JAIL    "/etc/fail2ban/jail.d/sluice.conf"
#define AUTO_UPG    "/etc/apt/apt.conf.d/20auto-upgrades"
#define FRESH_TRIES 10 /* seconds for sshd to listen again after a reload */
#define FW_SCRIPT   "/usr/local/sbin/sluice-firewall"
#define FW_UNIT	    "sluice-firewall.service"
#define FW_CHAIN    "SLUICE-IN"
#define DEADMAN_S   "120" /* a change not proven by then undoes itself */
#define DM_SSHD	    "sluice-undo-sshd"
#define DM_FW	    "sluice-undo-firewall"
#define SSHD_PREV   SSHD_DROPIN ".sluice-prev" /* not *.conf: sshd skips it */

/* dev-sec / CIS settings. The algorithm lists keep aes-ctr, hmac-sha2 and
 * curve25519 / ecdh: what libssh2 1.10 (this control plane) speaks. */
static const char KEX[] = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,"
			  "ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group16-sha512,"
			  "diffie-hellman-group18-sha512";
static const char CIPHERS[] = "chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,"
			      "aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr";
static const char MACS[] = "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,"
			   "umac-128-etm@openssh.com,hmac-sha2-512,hmac-sha2-256";

int cp_sshd_dropin(enum cp_lockdown level, const char *extra, char *out, size_t cap)
{
	int strict = level >= CP_LOCKDOWN_STRICT;
	int n = snprintf(
		out, cap,
		"# sluice: SSH hardening (dev-sec / CIS), level %s. Managed by sluice-control:\n"
		"# changes here are overwritten.\n"
		"PasswordAuthentication no\n"
		"KbdInteractiveAuthentication no\n"
		"PermitEmptyPasswords no\n"
		"PermitRootLogin prohibit-password\n"
		"MaxAuthTries %d\n"
		"LoginGraceTime 30\n"
		"MaxStartups 10:30:60\n"
		"ClientAliveInterval 300\n"
		"ClientAliveCountMax 3\n"
		"X11Forwarding no\n"
		"%s"
		"KexAlgorithms %s\n"
		"Ciphers %s\n"
		"MACs %s\n"
		"%s%s",
		cp_lockdown_name(level), strict ? 3 : 4,
		strict ? "AllowAgentForwarding no\nAllowTcpForwarding no\nPermitTunnel no\n" : "",
		KEX, CIPHERS, MACS, extra ? extra : "",
		extra && *extra && extra[strlen(extra) - 1] != '\n' ? "\n" : "");

	return n > 0 && (size_t)n < cap ? n : -ENOSPC;
}

const char *cp_lockdown_name(enum cp_lockdown l)
{
	static const char *const n[] = {"none", "basic", "standard", "strict"};

	return (size_t)l < sizeof(n) / sizeof(n[0]) ? n[l] : "?";
}

int cp_lockdown_parse(const char *s)
{
	for (int l = CP_LOCKDOWN_NONE; l <= CP_LOCKDOWN_STRICT; l++)
		if (strcmp(s, cp_lockdown_name((enum cp_lockdown)l)) == 0)
			return l;
	return -EINVAL;
}

/* The list after "Key " in a drop-in's text, into out. */
static void setting(const char *text, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);

	out[0] = '\0';
	for (const char *l = text; l && *l;) {
		const char *nl = strchr(l, '\n');

		if (strncmp(l, key, kl) == 0 && l[kl] == ' ') {
			size_t n = nl ? (size_t)(nl - l - kl - 1) : strlen(l + kl + 1);

			snprintf(out, cap, "%.*s", (int)n, l + kl + 1);
		}
		l = nl ? nl + 1 : NULL;
	}
}

/* A fresh connection, as the control plane would open one now. sshd
 * re-executes itself on a reload and its listener is gone for a moment:
 * network failures are tried again for a few seconds, a refusal is final. */
static int fresh_connection(struct cp_mgr *m, char *why, size_t cap)
{
	struct cp_ssh_err err = {0};
	int rc = -EIO;

	struct cp_ssh_config c = *cp_ssh_pool_config(m->pool);

	c.connect_attempts = 1; /* this loop is the only retry: FRESH_TRIES in all */
	for (int i = 0; i < FRESH_TRIES; i++) {
		struct cp_ssh_pool *p = cp_ssh_pool_new(&c, NULL, -1);

		rc = p ? cp_ssh_pool_connect(p, &err) : -ENOMEM;
		cp_ssh_pool_free(p);
		if (rc == 0 || (p && !err.retryable))
			break;
		usleep(1000 * 1000);
	}
	if (rc < 0)
		snprintf(why, cap, "%s", err.msg[0] ? err.msg : "out of memory");
	cp_ssh_config_wipe(&c);
	return rc;
}

/* argv run to a zero exit: 0, or a negative errno (cp_mgr_cmd_errno) with
 * why set. */
static int run_cmd(struct cp_mgr *m, const char *const *argv, char *why, size_t cap)
{
	struct cp_ssh_result r;
	int rc = cp_mgr_run(m, argv, NULL, &r), ok = rc == 0 && r.exit_code == 0;

	if (!ok)
		snprintf(why, cap, "%s: %.300s", argv[0],
			 r.error.msg[0]	   ? r.error.msg
			 : r.err && *r.err ? r.err
					   : "failed");
	cp_ssh_result_free(&r);
	return ok ? 0 : cp_mgr_cmd_errno(rc);
}

/*
 * A dead man's switch: undo (a shell line) runs on the host by itself
 * DEADMAN_S seconds from now unless disarmed, as a transient systemd timer.
 * A change that cuts our connection for good (a firewall, an sshd reload)
 * can then not leave the host closed to us: it reopens itself, even when
 * the in-band rollback cannot reach it. 1 armed, 0 not (no systemd-run:
 * the in-band rollback is all there is; the event says so).
 */
static int deadman_arm(struct cp_mgr *m, const char *name, const char *undo)
{
	static const char SH[] =
		"command -v systemd-run >/dev/null || exit 3; "
		"systemctl stop \"$1.timer\" 2>/dev/null; systemctl reset-failed \"$1.service\" "
		"2>/dev/null; exec systemd-run --quiet --unit \"$1\" --on-active=\"$3\" /bin/sh -c "
		"\"$2\"";
	/* SLUICE_DEADMAN_S: a shorter delay, for the test that lets it fire. */
	const char *secs = getenv("SLUICE_DEADMAN_S");
	const char *argv[] = {"sh", "-c", SH, "sh", name, undo, DEADMAN_S, NULL};
	char said[80];
	struct cp_ssh_result r;
	int ok;

	if (secs && strspn(secs, "0123456789") == strlen(secs) && atoi(secs) >= 1 &&
	    atoi(secs) <= 3600)
		argv[6] = secs;
	ok = cp_mgr_run(m, argv, NULL, &r) == 0 && r.exit_code == 0;
	cp_ssh_result_free(&r);
	snprintf(said, sizeof(said), "armed: undone by the host in %s s unless proven", argv[6]);
	cp_mgr_emit(m, "dead-man-switch", name, CP_MGR_UNCHANGED, sl_mono_ms_f(),
		    ok ? said : "not armed (no systemd-run): the in-band rollback only");
	return ok;
}

/* The change was proven, or undone in band: the switch goes, and with it
 * the file it would have restored from (keep, or NULL). 1 when it was still
 * waiting; 0 when it had gone off already (a run slower than its delay: the
 * host undid the change) or cannot be told. */
static int deadman_disarm(struct cp_mgr *m, const char *name, const char *keep)
{
	static const char SH[] = "if systemctl is-active -q \"$1.timer\"; then "
				 "systemctl stop \"$1.timer\"; echo waiting; fi; "
				 "systemctl reset-failed \"$1.service\" 2>/dev/null; "
				 "[ -z \"$2\" ] || rm -f \"$2\"; true";
	struct cp_ssh_result r;
	int waiting;

	cp_mgr_run(m, (const char *const[]){"sh", "-c", SH, "sh", name, keep ? keep : "", NULL},
		   NULL, &r);
	waiting = r.out && strstr(r.out, "waiting") != NULL;
	cp_ssh_result_free(&r);
	return waiting;
}

/* Proven, but maybe too late: a switch that went off has undone it. */
static int disarm_proven(struct cp_mgr *m, const char *what, const char *name, const char *keep)
{
	if (deadman_disarm(m, name, keep))
		return 0;
	return cp_mgr_fail(m, -ETIMEDOUT, CP_MGR_SECURITY, what, "dead man's switch", 1,
			   "the change took longer than its dead man's switch allowed and the "
			   "host undid it; run again");
}

/* Put the old drop-in back (or remove ours) and reload: the rollback. */
static void restore_dropin(struct cp_mgr *m, const char *old)
{
	static const char *const rm[] = {"rm", "-f", SSHD_DROPIN, NULL};
	static const char *const reload[] = {"systemctl", "reload", "ssh", NULL};
	char why[400];
	int check = m->check;

	m->check = 0;
	if (old)
		cp_mgr_file(m, "ssh-rollback", SSHD_DROPIN, old, "root:root", 0644, NULL, 0);
	else
		run_cmd(m, rm, why, sizeof(why));
	run_cmd(m, reload, why, sizeof(why));
	m->check = check;
}

/* The drop-in's text for level: 0, or refused (-EPERM, the run failed)
 * when its algorithm lists would leave the control plane unable to
 * connect. */
static int sshd_text(struct cp_mgr *m, enum cp_lockdown level, const char *extra, char *text,
		     size_t cap, double t0)
{
	char kex[1024], ciphers[1024], macs[1024], why[600];

	if (cp_sshd_dropin(level, extra, text, cap) < 0)
		return cp_mgr_fail(m, -E2BIG, CP_MGR_SECURITY, "sshd", "drop-in", 0,
				   "settings too long");
	/* What the lists would leave the control plane: refused before any change. */
	setting(text, "KexAlgorithms", kex, sizeof(kex));
	setting(text, "Ciphers", ciphers, sizeof(ciphers));
	setting(text, "MACs", macs, sizeof(macs));
	if (!cp_ssh_algos_speakable(kex, ciphers, macs, why, sizeof(why))) {
		cp_mgr_fail(m, -EPERM, CP_MGR_SECURITY, "sshd", "algorithms", 0,
			    "refused: %s; the control plane could not connect any more", why);
		cp_mgr_emit(m, "ssh-hardening", SSHD_DROPIN, CP_MGR_FAILED, t0, m->err.cause);
		return -EPERM;
	}
	return 0;
}

/* A change is coming: the old drop-in kept on the host and a dead man's
 * switch that puts it back, should this run lose the host half-way. 1 when
 * the switch is armed. */
static int sshd_arm(struct cp_mgr *m)
{
	static const char KEEP[] = "if [ -f \"$1\" ]; then cp -p \"$1\" \"$1.sluice-prev\"; "
				   "else rm -f \"$1.sluice-prev\"; fi";
	struct cp_ssh_result k;
	int armed;

	cp_mgr_sh(m, KEEP, SSHD_DROPIN, &k);
	cp_ssh_result_free(&k);
	armed = deadman_arm(m, DM_SSHD,
			    "if [ -f " SSHD_PREV " ]; then mv -f " SSHD_PREV " " SSHD_DROPIN
			    "; else rm -f " SSHD_DROPIN "; fi; systemctl reload ssh");
	if (!armed) /* no switch to restore from it */
		deadman_disarm(m, DM_SSHD, SSHD_PREV);
	return armed;
}

/* The new drop-in in place: checked by sshd -t, reloaded, and a fresh
 * connection proven: 0; otherwise the old one back (*undone: and the host
 * answers as before) and a negative errno. */
static int sshd_reload_proven(struct cp_mgr *m, const char *old, int *undone)
{
	static const char *const test[] = {"sshd", "-t", NULL};
	static const char *const reload[] = {"systemctl", "reload", "ssh", NULL};
	char why[600], back[400];
	int rc;

	if ((rc = run_cmd(m, test, why, sizeof(why))) < 0) {
		restore_dropin(m, old);
		*undone = 1;
		return cp_mgr_fail(m, rc, CP_MGR_SECURITY, "sshd", "sshd -t", 0,
				   "the new settings were refused "
				   "(%s); the previous ones are back",
				   why);
	}
	if ((rc = run_cmd(m, reload, why, sizeof(why))) == 0 &&
	    (rc = fresh_connection(m, why, sizeof(why))) == 0)
		return 0;
	restore_dropin(m, old);
	*undone = fresh_connection(m, back, sizeof(back)) == 0;
	return cp_mgr_fail(m, rc, CP_MGR_SECURITY, "sshd", "fresh connection", 0,
			   "after the reload a new connection failed (%.300s): rolled back, %s",
			   why,
			   *undone ? "the host is reachable as before"
				   : "but the host does not answer yet (its dead man's switch "
				     "restores the old settings within " DEADMAN_S " s)");
}

int cp_security_ssh(struct cp_mgr *m, enum cp_lockdown level, const char *extra)
{
	char text[4096], *old = NULL;
	struct cp_ssh_result r;
	double t0 = sl_mono_ms_f();
	unsigned before = m->changed;
	int armed = 0, undone = 0;

	if (sshd_text(m, level, extra, text, sizeof(text), t0) < 0)
		return cp_mgr_failed(m);
	/* The old content, for the rollback. */
	if (cp_mgr_sh(m, "cat -- \"$1\" 2>/dev/null || true", SSHD_DROPIN, &r) == 0 && r.out &&
	    *r.out)
		old = strdup(r.out);
	cp_ssh_result_free(&r);
	if (!m->check && (!old || strcmp(old, text) != 0))
		armed = sshd_arm(m);
	if (cp_mgr_file(m, "ssh-hardening", SSHD_DROPIN, text, "root:root", 0644, NULL, 0) < 0)
		goto out_fail;
	if (m->check || m->changed == before) {
		if (armed)
			deadman_disarm(m, DM_SSHD, SSHD_PREV);
		free(old);
		return 0;
	}
	if (sshd_reload_proven(m, old, &undone) < 0)
		goto out_fail;
	if (armed && disarm_proven(m, "sshd", DM_SSHD, SSHD_PREV) < 0)
		goto out_fail;
	free(old);
	return 0;
out_fail:
	/* Undone in band and the host answers: the switch is not needed. Out
	 * of reach (or half-way): it stays armed and restores by itself. */
	if (armed && undone)
		deadman_disarm(m, DM_SSHD, SSHD_PREV);
	free(old);
	cp_mgr_emit(m, "ssh-hardening", SSHD_DROPIN, CP_MGR_FAILED, t0, m->err.cause);
	return cp_mgr_failed(m);
}

/* ---- firewall ---- */

int cp_ufw_plan(const char *status, int ssh_port, const int *ports, size_t nports,
		struct cp_plan *p)
{
	char rule[32];
	int active = status && strstr(status, "Status: active") != NULL;

	cp_plan_init(p);
	/* The SSH port first, always: enabling with it closed would cut us off. */
	snprintf(rule, sizeof(rule), "%d/tcp", ssh_port);
	if (!status || !strstr(status, rule)) {
		cp_plan_cmd(p, "ufw", "allow", rule, (const char *)NULL);
		cp_plan_diff(p, "+ firewall allows %s (SSH)", rule);
	}
	for (size_t i = 0; i < nports; i++) {
		snprintf(rule, sizeof(rule), "%d/tcp", ports[i]);
		if (!status || !strstr(status, rule)) {
			cp_plan_cmd(p, "ufw", "allow", rule, (const char *)NULL);
			cp_plan_diff(p, "+ firewall allows %s", rule);
		}
	}
	if (!status || !strstr(status, "Default: deny (incoming)")) {
		cp_plan_cmd(p, "ufw", "default", "deny", "incoming", (const char *)NULL);
		cp_plan_diff(p, "~ firewall: incoming denied by default");
	}
	if (!active) {
		cp_plan_cmd(p, "ufw", "--force", "enable", (const char *)NULL);
		cp_plan_diff(p, "~ firewall enabled");
	}
	return 0;
}

/* Ownership: on the caller's stack; ports borrowed. */
struct fw_spec {
	int ssh_port;
	const int *ports;
	size_t nports;
};

static int plan_fw(struct cp_mgr *m, const void *spec, struct cp_plan *p)
{
	static const char *const st[] = {"ufw", "status", "verbose", NULL};
	const struct fw_spec *f = spec;
	struct cp_ssh_result r;
	int rc = cp_mgr_run(m, st, NULL, &r);

	if (rc < 0) {
		cp_mgr_fail(m, rc, CP_MGR_SECURITY, "firewall", "status", r.error.retryable, "%s",
			    r.error.msg);
		cp_ssh_result_free(&r);
		return rc;
	}
	/* Not installed yet (check mode): plan from nothing. */
	cp_ufw_plan(r.exit_code == 0 ? r.out : NULL, f->ssh_port, f->ports, f->nports, p);
	cp_ssh_result_free(&r);
	return 0;
}

/* The port this session came in on, as the host sees it ($SSH_CONNECTION's
 * fourth field): behind NAT or a port forward it is not the one we dialled. */
int cp_security_ssh_origin(struct cp_mgr *m, char *client, size_t cap)
{
	static const char *const argv[] = {"sh", "-c", "echo \"$SSH_CONNECTION\"", NULL};
	struct cp_ssh_cmd cmd = {.argv = argv, .timeout_ms = 30000};
	struct cp_ssh_result r;
	unsigned a, b, port = 0;
	char ip1[64] = "", ip2[64];

	if (!m->ssh_port) {
		/* Not through sudo: sudo drops SSH_CONNECTION. */
		if (cp_ssh_run(m->pool, &cmd, &r) == 0 && r.out)
			if (sscanf(r.out, "%63s %u %63s %u", ip1, &a, ip2, &b) == 4)
				port = b;
		cp_ssh_result_free(&r);
		m->ssh_port = port ? (int)port : 22;
		snprintf(m->ssh_client, sizeof(m->ssh_client), "%s", port ? ip1 : "");
	}
	if (client)
		snprintf(client, cap, "%s", m->ssh_client);
	return m->ssh_port;
}

int cp_security_ssh_port(struct cp_mgr *m)
{
	return cp_security_ssh_origin(m, NULL, 0);
}

int cp_firewall_parse(const char *s)
{
	static const char *const n[] = {"auto", "ufw", "iptables"};

	for (int i = 0; i < 3; i++)
		if (s && strcmp(s, n[i]) == 0)
			return i;
	return -EINVAL;
}

const char *cp_firewall_name(enum cp_firewall f)
{
	return f == CP_FW_UFW ? "ufw" : f == CP_FW_IPTABLES ? "iptables" : "auto";
}

enum cp_firewall cp_firewall_choose(enum cp_firewall want, int has_ufw, int has_iptables)
{
	if (want != CP_FW_AUTO)
		return want;
	return !has_ufw && has_iptables ? CP_FW_IPTABLES : CP_FW_UFW;
}

/* The relay's ports without the SSH port and without repeats. */
static size_t other_ports(int ssh_port, const int *ports, size_t n, int *out)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		int dup = ports[i] == ssh_port;

		for (size_t j = 0; j < k; j++)
			dup |= out[j] == ports[i];
		if (!dup && k < 16)
			out[k++] = ports[i];
	}
	return k;
}

int cp_iptables_script(int ssh_port, const int *ports, size_t nports, char *out, size_t cap)
{
	int o[16];
	size_t k = other_ports(ssh_port, ports, nports, o), len;
	char list[128];
	int n;

	len = (size_t)snprintf(list, sizeof(list), "%d", ssh_port);
	for (size_t i = 0; i < k && len < sizeof(list); i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, " %d", o[i]);
	n = snprintf(
		out, cap,
		"#!/bin/sh\n"
		"# sluice: the firewall where ufw is absent. Written by sluice-control\n"
		"# (changes are overwritten); run at boot by " FW_UNIT ".\n"
		"# SSH and the relay's ports are accepted before anything is dropped,\n"
		"# in one iptables-restore transaction: the SSH port in use never closes.\n"
		"set -e\n"
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
		"rules() {\n"
		"\techo '*filter'\n"
		"\techo ':" FW_CHAIN " - [0:0]'\n"
		"\techo '-A " FW_CHAIN " -i lo -j ACCEPT'\n"
		"\techo '-A " FW_CHAIN " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT'\n"
		"\techo \"-A " FW_CHAIN " -p $1 -j ACCEPT\"\n"
		"\tfor p in %s; do\n"
		"\t\techo \"-A " FW_CHAIN " -p tcp -m tcp --dport $p -j ACCEPT\"\n"
		"\tdone\n"
		"\techo '-A " FW_CHAIN " -j DROP'\n"
		"\techo COMMIT\n"
		"}\n"
		"apply() {\n"
		"\trules \"$2\" | \"$1-restore\" --noflush\n"
		"\t\"$1\" -C INPUT -j " FW_CHAIN " 2>/dev/null || \"$1\" -I INPUT 1 -j " FW_CHAIN
		"\n"
		"}\n"
		"apply iptables icmp\n"
		"if command -v ip6tables >/dev/null 2>&1; then apply ip6tables ipv6-icmp; fi\n",
		list);
	return n > 0 && (size_t)n < cap ? n : -ENOSPC;
}

/* One line of `iptables -S` output, whole. */
static int has_rule(const char *chain, const char *rule)
{
	size_t n = strlen(rule);

	for (const char *l = chain; l && *l;) {
		const char *nl = strchr(l, '\n');
		size_t len = nl ? (size_t)(nl - l) : strlen(l);

		if (len == n && memcmp(l, rule, n) == 0)
			return 1;
		l = nl ? nl + 1 : NULL;
	}
	return 0;
}

int cp_iptables_plan(const char *chain, int jumped, int ssh_port, const int *ports, size_t nports,
		     struct cp_plan *p)
{
	int o[16];
	size_t k = other_ports(ssh_port, ports, nports, o), rules = 0;
	const char *last = NULL;
	char rule[96];
	int ok = chain != NULL && jumped;

	cp_plan_init(p);
	for (const char *l = chain; l && *l;) { /* the -A lines, and the last */
		if (strncmp(l, "-A ", 3) == 0) {
			rules++;
			last = l;
		}
		l = strchr(l, '\n');
		l = l ? l + 1 : NULL;
	}
	ok = ok && has_rule(chain, "-A " FW_CHAIN " -i lo -j ACCEPT") &&
	     has_rule(chain,
		      "-A " FW_CHAIN " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
	snprintf(rule, sizeof(rule), "-A " FW_CHAIN " -p tcp -m tcp --dport %d -j ACCEPT",
		 ssh_port);
	ok = ok && has_rule(chain, rule);
	for (size_t i = 0; ok && i < k; i++) {
		snprintf(rule, sizeof(rule), "-A " FW_CHAIN " -p tcp -m tcp --dport %d -j ACCEPT",
			 o[i]);
		ok = has_rule(chain, rule);
	}
	/* lo, established, icmp, SSH, the ports, drop: no more, drop last. */
	ok = ok && rules == 5 + k && last &&
	     strncmp(last, "-A " FW_CHAIN " -j DROP", strlen("-A " FW_CHAIN " -j DROP")) == 0;
	if (ok)
		return 0;
	cp_plan_cmd(p, FW_SCRIPT, (const char *)NULL);
	cp_plan_diff(p, "%s firewall (iptables, chain " FW_CHAIN "): allows SSH %d/tcp",
		     chain ? "~" : "+", ssh_port);
	for (size_t i = 0; i < k; i++)
		cp_plan_diff(p, "  allows %d/tcp", o[i]);
	cp_plan_diff(p, "  drops the rest of incoming%s",
		     jumped ? "" : " (INPUT jumps to it first)");
	return 0;
}

static int plan_ipt(struct cp_mgr *m, const void *spec, struct cp_plan *p)
{
	static const char FACTS[] = "iptables -C INPUT -j " FW_CHAIN " 2>/dev/null && echo jumped; "
				    "iptables -S " FW_CHAIN " 2>/dev/null; true";
	const struct fw_spec *f = spec;
	struct cp_ssh_result r;
	const char *chain;
	int rc;

	if ((rc = cp_mgr_sh(m, FACTS, NULL, &r)) < 0 || r.exit_code != 0) {
		cp_mgr_fail(m, cp_mgr_cmd_errno(rc), CP_MGR_SECURITY, "firewall", "iptables",
			    r.error.retryable, "cannot read the rules: %.300s",
			    r.error.msg[0] ? r.error.msg
			    : r.err	   ? r.err
					   : "");
		cp_ssh_result_free(&r);
		return cp_mgr_failed(m);
	}
	chain = r.out && strstr(r.out, "-N " FW_CHAIN) ? strstr(r.out, "-N " FW_CHAIN) : NULL;
	cp_iptables_plan(chain, r.out && strncmp(r.out, "jumped\n", 7) == 0, f->ssh_port, f->ports,
			 f->nports, p);
	cp_ssh_result_free(&r);
	return 0;
}

static const char FW_UNIT_TEXT[] = "[Unit]\n"
				   "Description=sluice firewall (iptables: the host has no ufw)\n"
				   "DefaultDependencies=no\n"
				   "Before=network-pre.target\n"
				   "Wants=network-pre.target\n"
				   "\n"
				   "[Service]\n"
				   "Type=oneshot\n"
				   "RemainAfterExit=yes\n"
				   "ExecStart=" FW_SCRIPT "\n"
				   "\n"
				   "[Install]\n"
				   "WantedBy=multi-user.target\n";

/* A firewall just changed is proven by a fresh connection: 0; failing, the
 * command off undoes it and the run stops with the connection's errno
 * (undone says how). */
static int proven_or_undone(struct cp_mgr *m, const char *const *off, const char *undone, int armed)
{
	char why[400];
	int back, rc;

	if (m->check || (rc = fresh_connection(m, why, sizeof(why))) == 0)
		return armed ? disarm_proven(m, "firewall", DM_FW, NULL) : 0;
	back = run_cmd(m, off, why, sizeof(why)) == 0;
	if (armed && back)
		deadman_disarm(m, DM_FW, NULL);
	return cp_mgr_fail(m, rc, CP_MGR_SECURITY, "firewall", "fresh connection", 0,
			   "with the firewall on a new connection failed: %s",
			   back ? undone
				: "the host did not answer; its dead man's switch undoes the "
				  "change within " DEADMAN_S " s");
}

/* Before a firewall goes up where there was none (the plan's diff says
 * first_time): the host takes it down by itself (undo) unless this run
 * proves a fresh connection. A cp_mgr_guard_fn. */
struct fw_guard {
	const char *first_time, *undo;
	int armed;
};

static void arm_if_first(struct cp_mgr *m, const struct cp_plan *p, void *arg)
{
	struct fw_guard *g = arg;

	if (strstr(p->diff, g->first_time))
		g->armed = deadman_arm(m, DM_FW, g->undo);
}

/* The firewall is a manager step like any other; its proof is a fresh
 * connection, and its rollback takes INPUT's jump away. */
static int firewall_iptables(struct cp_mgr *m, int ssh_port, const int *ports, size_t nports)
{
	static const char *const off[] = {"sh", "-c",
					  "iptables -D INPUT -j " FW_CHAIN
					  "; ip6tables -D INPUT -j " FW_CHAIN " 2>/dev/null; "
					  "systemctl disable " FW_UNIT " 2>/dev/null; true",
					  NULL};
	static const char *const pkgs[] = {"iptables", NULL}; /* asked for by name: maybe absent */
	struct fw_spec f = {.ssh_port = ssh_port, .ports = ports, .nports = nports};
	struct fw_guard g = {.first_time = "INPUT jumps to it first", .undo = off[2]};
	char script[2048];
	int unit_changed = 0;

	if (cp_iptables_script(ssh_port, ports, nports, script, sizeof(script)) < 0)
		return cp_mgr_fail(m, -E2BIG, CP_MGR_SECURITY, "firewall", "iptables", 0,
				   "too many ports");
	if (cp_setup_packages(m, pkgs) < 0 ||
	    cp_mgr_file(m, "firewall", FW_SCRIPT, script, "root:root", 0755, NULL, 0) < 0 ||
	    cp_service_unit(m, FW_UNIT, FW_UNIT_TEXT, &unit_changed) < 0 ||
	    cp_service_action(m, FW_UNIT, "enable") < 0)
		return cp_mgr_failed(m);
	if (cp_mgr_apply_guarded(m, CP_MGR_SECURITY, "firewall", "iptables", plan_ipt, &f,
				 arm_if_first, &g) < 0)
		return cp_mgr_failed(m); /* armed: the host undoes it by itself */
	return proven_or_undone(m, off, "INPUT no longer jumps to " FW_CHAIN, g.armed);
}

static int firewall_ufw(struct cp_mgr *m, int ssh_port, const int *ports, size_t nports)
{
	static const char *const pkgs[] = {"ufw", NULL};
	static const char *const off[] = {"ufw", "disable", NULL};
	struct fw_spec f = {.ssh_port = ssh_port, .ports = ports, .nports = nports};
	struct fw_guard g = {.first_time = "firewall enabled", .undo = "ufw disable"};

	if (cp_setup_packages(m, pkgs) < 0)
		return cp_mgr_failed(m);
	if (cp_mgr_apply_guarded(m, CP_MGR_SECURITY, "firewall", "ufw", plan_fw, &f, arm_if_first,
				 &g) < 0)
		return cp_mgr_failed(m); /* armed: the host undoes it by itself */
	return proven_or_undone(m, off, "it was disabled again", g.armed);
}

int cp_security_firewall(struct cp_mgr *m, enum cp_firewall fw, const int *ports, size_t nports)
{
	static const char HAS[] = "[ -x /usr/sbin/ufw ] && echo ufw; "
				  "[ -x /usr/sbin/iptables ] && echo iptables; true";
	int ssh_port = cp_security_ssh_port(m);

	if (fw == CP_FW_AUTO) {
		struct cp_ssh_result r;

		int rc = cp_mgr_sh(m, HAS, NULL, &r);

		if (rc < 0) {
			cp_mgr_fail(m, rc, CP_MGR_SECURITY, "firewall", "facts", r.error.retryable,
				    "%s", r.error.msg);
			cp_ssh_result_free(&r);
			return rc;
		}
		fw = cp_firewall_choose(fw, r.out && strstr(r.out, "ufw\n"),
					r.out && strstr(r.out, "iptables\n"));
		cp_ssh_result_free(&r);
	}
	return fw == CP_FW_IPTABLES ? firewall_iptables(m, ssh_port, ports, nports)
				    : firewall_ufw(m, ssh_port, ports, nports);
}

/* ---- fail2ban, updates ---- */

int cp_security_fail2ban(struct cp_mgr *m)
{
	/* Debian 12 logs to the journal only (no auth.log): the sshd jail reads
	 * it through the systemd backend, which needs python3-systemd. */
	static const char *const pkgs[] = {"fail2ban", "python3-systemd", NULL};
	char jail[600], us[64];
	unsigned before;
	int port = cp_security_ssh_origin(m, us, sizeof(us));

	/* The control plane's own address is never banned: a lockdown it had
	 * to roll back (its fresh connection refused) must not lock it out. */
	snprintf(jail, sizeof(jail),
		 "# sluice: the sshd jail on the systemd journal. Managed by sluice-control.\n"
		 "[sshd]\nenabled = true\nbackend = systemd\nport = %d\nmaxretry = 5\n"
		 "findtime = 10m\nbantime = 1h\nignoreip = 127.0.0.1/8 ::1 %s\n",
		 port, us);
	if (cp_setup_packages(m, pkgs) < 0)
		return cp_mgr_failed(m);
	before = m->changed;
	if (cp_mgr_file(m, "fail2ban", F2B_JAIL, jail, "root:root", 0644, NULL, 0) < 0 ||
	    cp_service_action(m, "fail2ban.service", "enable") < 0 ||
	    cp_service_action(m, "fail2ban.service", m->changed != before ? "restart" : "start") <
		    0)
		return cp_mgr_failed(m);
	return cp_service_wait(m, "fail2ban.service", 60000);
}

int cp_security_updates(struct cp_mgr *m)
{
	static const char *const pkgs[] = {"unattended-upgrades", NULL};
	static const char conf[] = "// sluice: security updates installed every day. Managed by "
				   "sluice-control.\n"
				   "APT::Periodic::Update-Package-Lists \"1\";\n"
				   "APT::Periodic::Unattended-Upgrade \"1\";\n";

	if (cp_setup_packages(m, pkgs) < 0)
		return cp_mgr_failed(m);
	return cp_mgr_file(m, "updates", AUTO_UPG, conf, "root:root", 0644, NULL, 0);
}

int cp_security_lockdown(struct cp_mgr *m, const struct cp_lockdown_spec *l)
{
	if (l->level == CP_LOCKDOWN_NONE)
		return 0;
	if (cp_security_ssh(m, l->level, l->ssh_extra) < 0 ||
	    cp_security_firewall(m, l->firewall, l->ports, l->nports) < 0)
		return cp_mgr_failed(m);
	if (l->level >= CP_LOCKDOWN_STANDARD &&
	    (cp_security_fail2ban(m) < 0 || cp_security_updates(m) < 0))
		return cp_mgr_failed(m);
	return 0;
}
