/*
 * cp_provision.c: one command that turns a host into a running sluice relay,
 * safe to run again any time (a second run changes nothing):
 *
 *   packages   the relay's runtime libraries (apt, waiting for dpkg's lock)
 *   user       the `sluice` system user; /etc/sluice and /var/lib/sluice
 *   binary     /usr/local/bin/sluice-relay (checksums at both ends)
 *   config     /etc/sluice/relay.conf (0640 root:sluice: it holds the secret)
 *   unit       sluice-relay.service (systemd-analyze verify, daemon-reload),
 *              enabled, restarted when anything above changed, waited for
 *   answers    the relay's /health, asked on the host itself
 *
 * Each step is a manager operation with its progress event; the first
 * failure stops the run with the typed error and the step that failed.
 */
#include "cp_mgr_int.h"
#include "cp_provision.h"
#include "cp_security.h"
#include "cp_service.h"
#include "cp_ssh_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNIT_NAME      "sluice-relay.service"
#define START_TIMEOUT  60000
#define RELAY_BIN_PATH "/usr/local/bin/sluice-relay"
#define RELAY_CONF     "/etc/sluice/relay.conf"

/* Debian 12's names for what sluice-relay links (ldd build/bin/sluice-relay). */
static const char *const runtime_pkgs[] = {"liburing2",	     "libwolfssl35", "libmsgpackc2",
					   "libhiredis0.14", "libjansson4",  NULL};

static const char UNIT[] = "[Unit]\n"
			   "Description=sluice relay (public tunnel endpoint)\n"
			   "Documentation=https://github.com/sluice/sluice\n"
			   "After=network-online.target\n"
			   "Wants=network-online.target\n"
			   "\n"
			   "[Service]\n"
			   "User=sluice\n"
			   "Group=sluice\n"
			   "ExecStart=" RELAY_BIN_PATH " --config " RELAY_CONF "\n"
			   "Restart=on-failure\n"
			   "RestartSec=2\n"
			   "LimitNOFILE=65536\n"
			   "AmbientCapabilities=CAP_NET_BIND_SERVICE\n"
			   "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
			   "NoNewPrivileges=yes\n"
			   "ProtectSystem=strict\n"
			   "ProtectHome=yes\n"
			   "PrivateTmp=yes\n"
			   "ReadWritePaths=/var/lib/sluice\n"
			   "StateDirectory=sluice\n"
			   "StateDirectoryMode=0750\n"
			   "\n"
			   "[Install]\n"
			   "WantedBy=multi-user.target\n";

/* The relay's configuration file (sl_config's "key = value" syntax). */
int cp_provision_config(const struct cp_provision_spec *s, char *out, size_t cap)
{
	int n = snprintf(out, cap,
			 "# written by sluice-control node provision; changes are overwritten\n"
			 "http = %s\nagents = %s\nadmin = %s\ndomain = %s\n"
			 "redis = \"%s\"\nrelay-id = %s\nsession-secret = \"%s\"\n"
			 "log-format = text\n",
			 s->http, s->agents, s->admin, s->domain, s->redis_url, s->relay_id,
			 s->session_secret);

	return n > 0 && (size_t)n < cap ? n : -ENOSPC;
}

/* The binary, as a manager step: sent only when its hash differs. */
static int put_binary(struct cp_mgr *m, const char *local)
{
	double t0 = cp_ssh_clock_ms();
	struct cp_ssh_xfer x = {.mode = 0755,
				.owner = "root:root",
				.sudo = m->sudo,
				.sudo_password = m->sudo_password,
				.dry_run = m->check,
				.timeout_ms = 600000};
	struct cp_ssh_xfer_result r;
	char diff[200];

	if (cp_ssh_put(m->pool, local, RELAY_BIN_PATH, &x, &r) < 0) {
		cp_mgr_fail(m, CP_MGR_SETUP, "binary", RELAY_BIN_PATH, r.error.retryable, "%s",
			    r.error.msg);
		cp_mgr_emit(m, "binary", RELAY_BIN_PATH, CP_MGR_FAILED, t0, m->err.cause);
		return -1;
	}
	snprintf(diff, sizeof(diff), "~ file %s (sha256 %.16s...)", RELAY_BIN_PATH, r.sha256);
	cp_mgr_emit(m, "binary", RELAY_BIN_PATH,
		    !r.changed ? CP_MGR_UNCHANGED
		    : m->check ? CP_MGR_PLANNED
			       : CP_MGR_CHANGED,
		    t0, r.changed ? diff : "");
	return 0;
}

/* The relay's admin /health, from the host itself (bash's /dev/tcp: a
 * fresh host may have no curl). dd sends the request in one write: bash's
 * printf writes line by line, and the relay's admin port reads a request
 * from a single read. */
static int check_answers(struct cp_mgr *m, const char *admin)
{
	static const char HEALTH_SH[] =
		"h=${1%:*}; p=${1##*:}; [ \"$h\" = 0.0.0.0 ] && h=127.0.0.1; "
		"for i in 1 2 3 4 5 6 7 8 9 10; do "
		"exec 3<>/dev/tcp/$h/$p 2>/dev/null && { printf 'GET /health HTTP/1.1\\r\\nHost: "
		"localhost\\r\\nConnection: close\\r\\n\\r\\n' | "
		"dd bs=4096 iflag=fullblock status=none >&3; "
		"head -1 <&3; exit 0; }; sleep 1; done; echo 'no answer'; exit 1";
	const char *argv[] = {"bash", "-c", HEALTH_SH, "bash", admin, NULL};
	double t0 = cp_ssh_clock_ms();
	struct cp_ssh_result r;
	int ok;

	if (m->check)
		return 0;
	ok = cp_mgr_run(m, argv, NULL, &r) == 0 && r.exit_code == 0 && r.out &&
	     strstr(r.out, " 200 ") != NULL;
	if (!ok)
		cp_mgr_fail(m, CP_MGR_SERVICE, "sluice-relay", "health", 1,
			    "the relay's /health on %s answered: %.200s", admin,
			    r.out ? r.out : r.error.msg);
	cp_ssh_result_free(&r);
	cp_mgr_emit(m, "health", admin, ok ? CP_MGR_UNCHANGED : CP_MGR_FAILED, t0,
		    ok ? "" : m->err.cause);
	return ok ? 0 : -1;
}

size_t cp_provision_ports(const struct cp_provision_spec *s, int *ports, size_t max)
{
	const char *addrs[] = {s->http, s->agents};
	size_t n = 0;

	for (size_t i = 0; i < 2 && n < max; i++) {
		const char *c = addrs[i] ? strrchr(addrs[i], ':') : NULL;

		if (c && atoi(c + 1) > 0)
			ports[n++] = atoi(c + 1);
	}
	return n;
}

int cp_provision(struct cp_mgr *m, const struct cp_provision_spec *s)
{
	int ports[4];
	size_t nports = cp_provision_ports(s, ports, 4);
	struct cp_user_spec user = {.name = "sluice", .system = 1};
	struct cp_dir_spec etc = {
		.path = "/etc/sluice", .owner = "root", .group = "sluice", .mode = 0750};
	struct cp_dir_spec var = {
		.path = "/var/lib/sluice", .owner = "sluice", .group = "sluice", .mode = 0750};
	char conf[2048];
	unsigned before;
	int unit_changed = 0;

	if (cp_provision_config(s, conf, sizeof(conf)) < 0) {
		cp_mgr_fail(m, CP_MGR_SETUP, "config", RELAY_CONF, 0, "configuration too long");
		return -1;
	}
	if (cp_setup_packages(m, runtime_pkgs) < 0 || cp_setup_user(m, &user) < 0 ||
	    cp_setup_dir(m, &etc) < 0 || cp_setup_dir(m, &var) < 0)
		return -1;
	/* Locked down before the relay listens: never a window with it exposed. */
	if (cp_security_lockdown(m, (enum cp_lockdown)s->lockdown, ports, nports, s->ssh_extra) < 0)
		return -1;
	before = m->changed;
	if (put_binary(m, s->relay_binary) < 0 ||
	    cp_mgr_file(m, "config", RELAY_CONF, conf, "root:sluice", 0640, NULL, 1) < 0 ||
	    cp_service_unit(m, UNIT_NAME, UNIT, &unit_changed) < 0)
		return -1;
	if (cp_service_action(m, UNIT_NAME, "enable") < 0)
		return -1;
	/* A new binary, configuration or unit takes effect by a restart; with
	 * nothing changed, start is a no-op on a running relay. */
	if (cp_service_action(m, UNIT_NAME, m->changed != before ? "restart" : "start") < 0)
		return -1;
	if (cp_service_wait(m, UNIT_NAME, START_TIMEOUT) < 0)
		return -1;
	return check_answers(m, s->admin);
}
