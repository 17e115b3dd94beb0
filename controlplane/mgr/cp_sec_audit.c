/*
 * cp_sec_audit.c: AuditSecurity, a scored report of a host in the manner of
 * Lynis: one shell probe gathers every fact (read-only), each check passes
 * or fails with a weight, and each failure comes with what to do about it.
 */
#include "mgr/cp_mgr_int.h"
#include "mgr/cp_sec_audit.h"
#include "mgr/cp_security.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Every fact, one "key: value" per line (values may be empty). Read-only. */
static const char FACTS_SH[] =
	"echo \"sshd: $(sshd -T 2>/dev/null | grep -Ei "
	"'^(passwordauthentication|permitrootlogin|maxauthtries|x11forwarding|permitemptypasswords)"
	" ' "
	"| tr '\\n' ';')\"\n"
	"echo \"ufw: $(ufw status 2>/dev/null | head -1)\"\n"
	"echo \"iptables_policy: $(iptables -S INPUT 2>/dev/null | head -1)\"\n"
	"echo \"iptables_sluice: $(iptables -C INPUT -j SLUICE-IN 2>/dev/null && iptables -S "
	"SLUICE-IN 2>/dev/null | tail -1)\"\n"
	"echo \"fail2ban: $(systemctl is-active fail2ban 2>/dev/null)\"\n"
	"echo \"f2b_sshd: $(fail2ban-client status sshd >/dev/null 2>&1 && echo on)\"\n"
	"echo \"upgrades: $(apt-config dump 2>/dev/null | grep -c "
	"'APT::Periodic::Unattended-Upgrade \"1\"')\"\n"
	"echo \"listening: $(ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://' | sort -un | "
	"tr '\\n' ' ')\"\n"
	"echo \"empty_passwords: $(awk -F: '($2==\"\"){print $1}' /etc/shadow | tr '\\n' ' ')\"\n"
	"echo \"world_writable: $(find /etc -xdev -type f -perm -0002 2>/dev/null | head -5 | tr "
	"'\\n' ' ')\"\n"
	"echo \"security_updates: $(apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | grep -c "
	"'^Inst .*security')\"\n";

static const char *fact(const char *facts, const char *key, char *out, size_t cap)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\n%s: ", key);
	out[0] = '\0';
	if (strncmp(facts, k + 1, strlen(k + 1)) == 0)
		p = facts + strlen(k + 1);
	else if ((p = strstr(facts, k)) != NULL)
		p += strlen(k);
	else
		return out;
	snprintf(out, cap, "%.*s", (int)strcspn(p, "\n"), p);
	return out;
}

static void add(json_t *checks, const char *id, int ok, int weight, const char *detail,
		const char *rec)
{
	json_array_append_new(checks,
			      json_pack("{s:s,s:b,s:i,s:s,s:s}", "id", id, "ok", ok, "weight",
					weight, "detail", detail, "recommendation", ok ? "" : rec));
}

static int has(const char *sshd, const char *setting)
{
	return strstr(sshd, setting) != NULL;
}

static void ssh_checks(json_t *c, const char *sshd)
{
	int tries = 6;
	const char *t = strstr(sshd, "maxauthtries ");

	if (t)
		tries = atoi(t + 13);
	add(c, "ssh-passwords", has(sshd, "passwordauthentication no"), 3, "password logins",
	    "set PasswordAuthentication no (keys only): sluice-control node lockdown");
	add(c, "ssh-root", !has(sshd, "permitrootlogin yes"), 3, "root login",
	    "set PermitRootLogin prohibit-password or no");
	add(c, "ssh-empty-passwords", has(sshd, "permitemptypasswords no"), 2, "empty passwords",
	    "set PermitEmptyPasswords no");
	add(c, "ssh-auth-tries", tries <= 4, 1, "MaxAuthTries", "set MaxAuthTries 4 or fewer");
	add(c, "ssh-x11", has(sshd, "x11forwarding no"), 1, "X11 forwarding",
	    "set X11Forwarding no");
}

static void ports_check(json_t *c, const char *listening, const int *ports, size_t nports,
			int ssh_port)
{
	char extra[256] = "", detail[400];
	size_t o = 0;
	char copy[512];

	snprintf(copy, sizeof(copy), "%s", listening);
	for (char *save = NULL, *t = strtok_r(copy, " ", &save); t;
	     t = strtok_r(NULL, " ", &save)) {
		int p = atoi(t), known = p == ssh_port;

		for (size_t i = 0; i < nports && !known; i++)
			known = ports[i] == p;
		if (!known && o + 8 < sizeof(extra))
			o += (size_t)snprintf(extra + o, sizeof(extra) - o, "%s%d", o ? " " : "",
					      p);
	}
	snprintf(detail, sizeof(detail), "listening: %s%s%s", listening,
		 o ? "; not expected: " : "", extra);
	add(c, "listening-ports", o == 0, 1, detail,
	    "stop or firewall what you do not mean to serve (ss -ltnp shows which process)");
}

json_t *cp_security_audit(struct cp_mgr *m, const int *ports, size_t nports)
{
	struct cp_ssh_result r;
	char v[600], d[700];
	json_t *c, *rep;
	int total = 0, got = 0, check = m->check, ssh_port = cp_security_ssh_port(m);

	m->check = 0; /* reading only */
	if (cp_mgr_sh(m, FACTS_SH, NULL, &r) < 0 || !r.out) {
		cp_mgr_fail(m, -EIO, CP_MGR_SECURITY, "audit", "facts", r.error.retryable, "%s",
			    r.error.msg[0] ? r.error.msg : "no output");
		cp_ssh_result_free(&r);
		m->check = check;
		return NULL;
	}
	m->check = check;
	c = json_array();
	ssh_checks(c, fact(r.out, "sshd", v, sizeof(v)));
	snprintf(d, sizeof(d), "firewall: %s", *fact(r.out, "ufw", v, sizeof(v)) ? v : "no ufw");
	add(c, "firewall",
	    strstr(v, "Status: active") != NULL ||
		    strstr(fact(r.out, "iptables_policy", v, sizeof(v)), "-P INPUT DROP") ||
		    strcmp(fact(r.out, "iptables_sluice", v, sizeof(v)), "-A SLUICE-IN -j DROP") ==
			    0,
	    3, d, "enable a firewall that allows only SSH and the relay's ports: node lockdown");
	add(c, "fail2ban",
	    strcmp(fact(r.out, "fail2ban", v, sizeof(v)), "active") == 0 &&
		    strcmp(fact(r.out, "f2b_sshd", d, sizeof(d)), "on") == 0,
	    2, "fail2ban with the sshd jail",
	    "install fail2ban with the sshd jail (backend systemd)");
	add(c, "auto-updates", atoi(fact(r.out, "upgrades", v, sizeof(v))) > 0, 2,
	    "unattended security upgrades", "install unattended-upgrades and enable it");
	ports_check(c, fact(r.out, "listening", v, sizeof(v)), ports, nports, ssh_port);
	fact(r.out, "empty_passwords", v, sizeof(v));
	snprintf(d, sizeof(d), "accounts with empty passwords: %s", *v ? v : "none");
	add(c, "empty-passwords", !*v || strspn(v, " ") == strlen(v), 3, d,
	    "lock them (passwd -l USER) or set passwords");
	fact(r.out, "world_writable", v, sizeof(v));
	snprintf(d, sizeof(d), "world-writable files in /etc: %s", *v ? v : "none");
	add(c, "world-writable-etc", !*v || strspn(v, " ") == strlen(v), 2, d,
	    "chmod o-w each of them");
	fact(r.out, "security_updates", v, sizeof(v));
	snprintf(d, sizeof(d), "pending security updates: %s", *v ? v : "unknown");
	add(c, "security-updates", atoi(v) == 0, 2, d, "apt-get update && apt-get upgrade");
	cp_ssh_result_free(&r);
	for (size_t i = 0; i < json_array_size(c); i++) {
		json_t *k = json_array_get(c, i);
		int w = (int)json_integer_value(json_object_get(k, "weight"));

		total += w;
		got += json_is_true(json_object_get(k, "ok")) ? w : 0;
	}
	rep = json_pack("{s:i,s:i,s:i,s:o}", "score", total ? got * 100 / total : 0, "points", got,
			"of", total, "checks", c);
	return rep;
}

void cp_security_audit_print(const json_t *rep, FILE *out)
{
	const json_t *c = json_object_get(rep, "checks");

	fprintf(out, "security score: %lld/100 (%lld of %lld points)\n",
		(long long)json_integer_value(json_object_get(rep, "score")),
		(long long)json_integer_value(json_object_get(rep, "points")),
		(long long)json_integer_value(json_object_get(rep, "of")));
	for (size_t i = 0; i < json_array_size(c); i++) {
		const json_t *k = json_array_get(c, i);
		int ok = json_is_true(json_object_get(k, "ok"));

		fprintf(out, "%-5s %-20s %s\n", ok ? "ok" : "FAIL",
			json_string_value(json_object_get(k, "id")),
			json_string_value(json_object_get(k, "detail")));
		if (!ok)
			fprintf(out, "      %-20s do: %s\n", "",
				json_string_value(json_object_get(k, "recommendation")));
	}
}
