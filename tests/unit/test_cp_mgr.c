/*
 * test_cp_mgr.c: the managers' plans from given facts, no host needed: what
 * a host reports is parsed, and the commands and diff planned are exactly
 * the difference (nothing when the host already matches).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "mgr/cp_mgr.h"
#include "mgr/cp_provision.h"
#include "mgr/cp_security.h"
#include "mgr/cp_service.h"

/* The plan's commands joined: "useradd --system ...|usermod ...". */
static const char *joined(const struct cp_plan *p)
{
	static char buf[4096];
	size_t o = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < p->n; i++)
		for (size_t k = 0; p->argv[i][k]; k++)
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s",
					      k ? " " : (i ? "|" : ""), p->argv[i][k]);
	return buf;
}

static void user_absent_is_created(void **state)
{
	struct cp_user_spec u = {.name = "sluice", .system = 1, .groups = {"adm", NULL}};
	struct cp_user_facts f;
	struct cp_plan p;

	(void)state;
	assert_int_equal(cp_user_facts_parse("", "", &f), 0);
	assert_false(f.exists);
	cp_user_plan(&u, &f, &p);
	assert_string_equal(joined(&p),
			    "groupadd -f adm|useradd --system --no-create-home --home-dir "
			    "/nonexistent --shell /usr/sbin/nologin sluice|usermod "
			    "--append --groups adm sluice");
	assert_non_null(strstr(p.diff, "+ user sluice (system"));
}

static void user_present_and_right_is_left_alone(void **state)
{
	struct cp_user_spec u = {.name = "sluice", .system = 1, .groups = {"adm", NULL}};
	struct cp_user_facts f;
	struct cp_plan p;

	(void)state;
	assert_int_equal(cp_user_facts_parse("sluice:x:998:998::/nonexistent:/usr/sbin/nologin\n",
					     "sluice adm\n", &f),
			 0);
	assert_true(f.exists);
	assert_int_equal(f.uid, 998);
	cp_user_plan(&u, &f, &p);
	assert_int_equal(p.n, 0);
	assert_int_equal(p.diff_len, 0);
}

static void user_differences_are_planned_one_by_one(void **state)
{
	struct cp_user_spec u = {.name = "ops", .shell = "/bin/bash", .groups = {"sudo", NULL}};
	struct cp_user_facts f;
	struct cp_plan p;

	(void)state;
	cp_user_facts_parse("ops:x:1001:1001:Ops,,,:/srv/ops:/bin/sh", "ops", &f);
	cp_user_plan(&u, &f, &p);
	assert_string_equal(joined(&p),
			    "groupadd -f sudo|usermod --shell /bin/bash ops|usermod "
			    "--home /home/ops --move-home ops|usermod --append --groups "
			    "sudo ops");
	assert_non_null(strstr(p.diff, "shell /bin/sh -> /bin/bash"));
	assert_int_equal(cp_user_facts_parse("garbage", "", &f), -22);
}

static void directories(void **state)
{
	struct cp_dir_spec d = {
		.path = "/etc/sluice", .owner = "root", .group = "sluice", .mode = 0750};
	struct cp_dir_facts f;
	struct cp_plan p;

	(void)state;
	cp_dir_facts_parse("", &f);
	cp_dir_plan(&d, &f, &p);
	assert_string_equal(joined(&p), "install -d -m 750 -o root -g sluice /etc/sluice");
	cp_dir_facts_parse("root root 755\n", &f);
	cp_dir_plan(&d, &f, &p);
	assert_string_equal(joined(&p), "chown root:sluice /etc/sluice|chmod 750 /etc/sluice");
	cp_dir_facts_parse("root sluice 750\n", &f);
	cp_dir_plan(&d, &f, &p);
	assert_int_equal(p.n, 0);
}

static void packages_only_missing_ones_wait_for_the_lock(void **state)
{
	const char *pkgs[] = {"ufw", "fail2ban", "curl", NULL};
	struct cp_plan p;

	(void)state;
	cp_pkgs_plan(pkgs,
		     "ufw install ok installed\nfail2ban deinstall ok config-files\n"
		     "curlx install ok installed\n",
		     &p);
	assert_string_equal(
		joined(&p),
		"env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q "
		"update|env DEBIAN_FRONTEND=noninteractive apt-get -o "
		"DPkg::Lock::Timeout=600 -q -y --no-install-recommends install fail2ban "
		"curl");
	assert_string_equal(p.diff, "+ package fail2ban\n+ package curl\n");
	cp_pkgs_plan(pkgs,
		     "ufw install ok installed\nfail2ban install ok installed\ncurl:amd64 install "
		     "ok installed\n",
		     &p);
	assert_int_equal(p.n, 0);
}

static void files_diff_by_line(void **state)
{
	struct cp_plan p;

	(void)state;
	cp_file_plan("/etc/x", "a\nb\n", "root:root", 0644, 0, "", 0, "", &p);
	assert_int_equal(p.n, 1);
	assert_string_equal(p.diff, "+ file /etc/x (root:root, 644, 4 bytes)\n+ a\n+ b\n");
	cp_file_plan("/etc/x", "a\nc\n", "root:root", 0644, 1, "root:root", 0644, "a\nb\n", &p);
	assert_string_equal(p.diff, "~ file /etc/x\n- b\n+ c\n");
	cp_file_plan("/etc/x", "a\n", "root:root", 0600, 1, "root:root", 0644, "a\n", &p);
	assert_string_equal(p.diff, "~ file /etc/x: root:root 644 -> root:root 600\n");
	cp_file_plan("/etc/x", "a\n", "root:root", 0644, 1, "root:root", 0644, "a\n", &p);
	assert_int_equal(p.n, 0);
}

static void sudoers_names(void **state)
{
	(void)state;
	assert_true(cp_sudoers_name_ok("sluice"));
	assert_true(cp_sudoers_name_ok("90-sluice_ops"));
	assert_false(cp_sudoers_name_ok("sluice.conf")); /* sudo would ignore it */
	assert_false(cp_sudoers_name_ok("sluice~"));
	assert_false(cp_sudoers_name_ok("../etc"));
	assert_false(cp_sudoers_name_ok(""));
}

static void plans_that_do_not_fit_say_so(void **state)
{
	struct cp_plan p;

	(void)state;
	cp_plan_init(&p);
	for (int i = 0; i < CP_PLAN_CMDS; i++)
		assert_int_equal(cp_plan_cmd(&p, "true", NULL), 0);
	assert_int_equal(cp_plan_cmd(&p, "true", NULL), -28);
	assert_true(p.overflow);
}

static void firewall_keeps_ssh_open_first(void **state)
{
	const int ports[] = {8080, 7000};
	struct cp_plan p;

	(void)state;
	cp_ufw_plan(NULL, 2222, ports, 2, &p);
	assert_string_equal(joined(&p), "ufw allow 2222/tcp|ufw allow 8080/tcp|ufw allow 7000/tcp|"
					"ufw default deny incoming|ufw --force enable");
	cp_ufw_plan("Status: active\nDefault: deny (incoming), allow (outgoing)\n"
		    "2222/tcp ALLOW IN Anywhere\n8080/tcp ALLOW IN Anywhere\n",
		    2222, ports, 2, &p);
	assert_string_equal(joined(&p), "ufw allow 7000/tcp");
	cp_ufw_plan("Status: active\nDefault: deny (incoming), allow (outgoing)\n"
		    "2222/tcp ALLOW IN Anywhere\n8080/tcp ALLOW IN Anywhere\n7000/tcp ALLOW IN\n",
		    2222, ports, 2, &p);
	assert_int_equal(p.n, 0);
}

static const char IPT_OK[] = "-N SLUICE-IN\n"
			     "-A SLUICE-IN -i lo -j ACCEPT\n"
			     "-A SLUICE-IN -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
			     "-A SLUICE-IN -p icmp -j ACCEPT\n"
			     "-A SLUICE-IN -p tcp -m tcp --dport 2222 -j ACCEPT\n"
			     "-A SLUICE-IN -p tcp -m tcp --dport 8080 -j ACCEPT\n"
			     "-A SLUICE-IN -p tcp -m tcp --dport 7000 -j ACCEPT\n"
			     "-A SLUICE-IN -j DROP\n";

static void firewall_backend_by_what_the_host_has(void **state)
{
	(void)state;
	assert_int_equal(cp_firewall_choose(CP_FW_AUTO, 1, 1), CP_FW_UFW);
	assert_int_equal(cp_firewall_choose(CP_FW_AUTO, 0, 1), CP_FW_IPTABLES);
	assert_int_equal(cp_firewall_choose(CP_FW_AUTO, 0, 0), CP_FW_UFW); /* installed */
	assert_int_equal(cp_firewall_choose(CP_FW_IPTABLES, 1, 1), CP_FW_IPTABLES);
	assert_int_equal(cp_firewall_parse("iptables"), CP_FW_IPTABLES);
	assert_int_equal(cp_firewall_parse("nft"), -22);
}

static void iptables_script_accepts_ssh_before_it_drops(void **state)
{
	const int ports[] = {8080, 2222, 7000, 8080};
	char t[2048];
	const char *ssh, *drop;

	(void)state;
	assert_true(cp_iptables_script(2222, ports, 4, t, sizeof(t)) > 0);
	/* One transaction per family, SSH first, the relay's ports once each. */
	assert_non_null(strstr(t, "for p in 2222 8080 7000; do"));
	assert_non_null(strstr(t, "| \"$1-restore\" --noflush"));
	ssh = strstr(t, "--dport $p -j ACCEPT");
	drop = strstr(t, "-j DROP");
	assert_true(ssh && drop && ssh < drop);
	assert_non_null(strstr(t, "apply ip6tables ipv6-icmp"));
	assert_int_equal(cp_iptables_script(22, ports, 4, t, 100), -28);
}

static void iptables_plan_from_the_rules(void **state)
{
	const int ports[] = {8080, 7000};
	char stale[sizeof(IPT_OK)], *p7000;
	struct cp_plan p;

	(void)state;
	cp_iptables_plan(IPT_OK, 1, 2222, ports, 2, &p);
	assert_int_equal(p.n, 0);
	/* No chain, or INPUT not jumping to it: the script runs. */
	cp_iptables_plan(NULL, 0, 2222, ports, 2, &p);
	assert_string_equal(joined(&p), "/usr/local/sbin/sluice-firewall");
	assert_non_null(
		strstr(p.diff, "+ firewall (iptables, chain SLUICE-IN): allows SSH 2222/tcp"));
	cp_iptables_plan(IPT_OK, 0, 2222, ports, 2, &p);
	assert_int_equal(p.n, 1);
	/* A port no longer wanted, or one missing: replaced whole. */
	cp_iptables_plan(IPT_OK, 1, 2222, ports, 1, &p);
	assert_int_equal(p.n, 1);
	memcpy(stale, IPT_OK, sizeof(IPT_OK));
	p7000 = strstr(stale, "7000");
	memcpy(p7000, "7001", 4);
	cp_iptables_plan(stale, 1, 2222, ports, 2, &p);
	assert_int_equal(p.n, 1);
	/* SSH came in on another port than the rules allow. */
	cp_iptables_plan(IPT_OK, 1, 22, ports, 2, &p);
	assert_int_equal(p.n, 1);
}

static void sshd_dropin_by_level(void **state)
{
	char t[4096];

	(void)state;
	assert_true(cp_sshd_dropin(CP_LOCKDOWN_BASIC, NULL, t, sizeof(t)) > 0);
	assert_non_null(strstr(t, "PasswordAuthentication no\n"));
	assert_non_null(strstr(t, "MaxAuthTries 4\n"));
	assert_null(strstr(t, "AllowTcpForwarding no"));
	/* Every list keeps what libssh2 1.10 speaks: aes-ctr, hmac-sha2, curve25519. */
	assert_non_null(strstr(t, "aes128-ctr"));
	assert_non_null(strstr(t, "hmac-sha2-256\n"));
	assert_non_null(strstr(t, "curve25519-sha256"));
	cp_sshd_dropin(CP_LOCKDOWN_STRICT, "AllowUsers ops", t, sizeof(t));
	assert_non_null(strstr(t, "MaxAuthTries 3\n"));
	assert_non_null(strstr(t, "AllowTcpForwarding no\n"));
	assert_non_null(strstr(t, "AllowUsers ops\n"));
	assert_int_equal(cp_lockdown_parse("standard"), CP_LOCKDOWN_STANDARD);
	assert_int_equal(cp_lockdown_parse("paranoid"), -22);
}

static void service_status_from_systemctl_show(void **state)
{
	struct cp_service_status st;

	(void)state;
	assert_int_equal(cp_service_status_parse("LoadState=loaded\nActiveState=activating\n"
						 "SubState=auto-restart\nUnitFileState=enabled\n"
						 "Result=exit-code\nMainPID=0\n",
						 &st),
			 0);
	assert_string_equal(st.active, "activating");
	assert_string_equal(st.sub, "auto-restart");
	assert_string_equal(st.enabled, "enabled");
	assert_string_equal(st.result, "exit-code");
	assert_int_equal(cp_service_status_parse("garbage\n", &st), -22);
}

static void relay_config_and_ports(void **state)
{
	struct cp_provision_spec s = {.http = "0.0.0.0:80",
				      .agents = "0.0.0.0:7000",
				      .admin = "127.0.0.1:9090",
				      .domain = "t.example",
				      .redis_url = "redis://10.0.0.5:6379",
				      .relay_id = "r1",
				      .session_secret = "s3cret"};
	char conf[2048];
	int ports[4];

	(void)state;
	assert_int_equal(cp_provision_ports(&s, ports, 4), 2);
	assert_int_equal(ports[0], 80);
	assert_int_equal(ports[1], 7000);
	assert_true(cp_provision_config(&s, conf, sizeof(conf)) > 0);
	assert_non_null(strstr(conf, "redis = \"redis://10.0.0.5:6379\"\n"));
	assert_non_null(strstr(conf, "relay-id = r1\n"));
	assert_int_equal(cp_provision_config(&s, conf, 40), -28);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(user_absent_is_created),
		cmocka_unit_test(user_present_and_right_is_left_alone),
		cmocka_unit_test(user_differences_are_planned_one_by_one),
		cmocka_unit_test(directories),
		cmocka_unit_test(packages_only_missing_ones_wait_for_the_lock),
		cmocka_unit_test(files_diff_by_line),
		cmocka_unit_test(sudoers_names),
		cmocka_unit_test(plans_that_do_not_fit_say_so),
		cmocka_unit_test(firewall_keeps_ssh_open_first),
		cmocka_unit_test(firewall_backend_by_what_the_host_has),
		cmocka_unit_test(iptables_script_accepts_ssh_before_it_drops),
		cmocka_unit_test(iptables_plan_from_the_rules),
		cmocka_unit_test(sshd_dropin_by_level),
		cmocka_unit_test(service_status_from_systemctl_show),
		cmocka_unit_test(relay_config_and_ports),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
