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
 *   join       its heartbeat in Redis, seen from the control plane's side
 *
 * Each step is a manager operation with its progress event; the first
 * failure stops the run with the typed error and the step that failed.
 */
#include "mgr/cp_mgr_int.h"
#include "mgr/cp_provision.h"
#include "mgr/cp_security.h"
#include "mgr/cp_service.h"
#include "sl_redis.h"
#include "sl_time.h"

#include <errno.h>
#include <hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define UNIT_NAME	"sluice-relay.service"
#define START_TIMEOUT	60000
#define RELAY_BIN_PATH	"/usr/local/bin/sluice-relay"
#define RELAY_CONF	"/etc/sluice/relay.conf"
#define JOIN_TIMEOUT_MS 20000

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
	double t0 = sl_mono_ms_f();
	struct cp_ssh_xfer x = {.mode = 0755,
				.owner = "root:root",
				.sudo = m->sudo,
				.sudo_password = m->sudo_password,
				.dry_run = m->check,
				.timeout_ms = 600000};
	struct cp_ssh_xfer_result r;
	char diff[200];
	int rc;

	if ((rc = cp_ssh_put(m->pool, local, RELAY_BIN_PATH, &x, &r)) < 0) {
		cp_mgr_fail(m, rc, CP_MGR_SETUP, "binary", RELAY_BIN_PATH, r.error.retryable, "%s",
			    r.error.msg);
		cp_mgr_emit(m, "binary", RELAY_BIN_PATH, CP_MGR_FAILED, t0, m->err.cause);
		return rc;
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
 * printf writes line by line, and relays before this one read an admin
 * request from a single read (a host may still run one). */
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
	double t0 = sl_mono_ms_f();
	struct cp_ssh_result r;
	int ok, rc;

	if (m->check)
		return 0;
	rc = cp_mgr_run(m, argv, NULL, &r);
	ok = rc == 0 && r.exit_code == 0 && r.out && strstr(r.out, " 200 ") != NULL;
	if (!ok)
		cp_mgr_fail(m, cp_mgr_cmd_errno(rc), CP_MGR_SERVICE, "sluice-relay", "health", 1,
			    "the relay's /health on %s answered: %.200s", admin,
			    r.out ? r.out : r.error.msg);
	cp_ssh_result_free(&r);
	cp_mgr_emit(m, "health", admin, ok ? CP_MGR_UNCHANGED : CP_MGR_FAILED, t0,
		    ok ? "" : m->err.cause);
	return ok ? 0 : cp_mgr_failed(m);
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

/* The relay heartbeats into sl:relays: joined once its score is recent:
 * 0, or a negative errno (-ETIMEDOUT: no heartbeat in time) with why set. */
static int joined(const char *url, const char *id, char *why, size_t cap)
{
	struct sl_redis_target t;
	struct redisContext *rc;
	uint64_t end = sl_wall_ms() + JOIN_TIMEOUT_MS;

	if (sl_redis_url_parse(url, &t, why, cap) < 0)
		return -EINVAL;
	if (!(rc = sl_redis_connect(&t, 3000, why, cap)))
		return -ECONNREFUSED;
	while (sl_wall_ms() < end) {
		redisReply *r = redisCommand(rc, "ZSCORE sl:relays %s", id);
		long long at = r && r->type == REDIS_REPLY_STRING ? atoll(r->str) : 0;

		freeReplyObject(r);
		if (at > (long long)sl_wall_ms() - 5000) {
			redisFree(rc);
			return 0;
		}
		usleep(250 * 1000);
	}
	redisFree(rc);
	snprintf(why, cap, "no heartbeat from relay %s in sl:relays within %d s", id,
		 JOIN_TIMEOUT_MS / 1000);
	return -ETIMEDOUT;
}

/* What the steps share over one run. Ownership: on the provisioning run's stack; m and s borrowed
 * for it. */
struct prov {
	struct cp_mgr *m;
	const struct cp_provision_spec *s;
	int ports[4];
	size_t nports;
	char conf[2048];
	unsigned before; /* changes counted before the relay's own files */
};

static int st_packages(struct prov *p)
{
	return cp_setup_packages(p->m, runtime_pkgs);
}

static int st_user(struct prov *p)
{
	struct cp_user_spec user = {.name = "sluice", .system = 1};

	return cp_setup_user(p->m, &user);
}

static int st_dirs(struct prov *p)
{
	struct cp_dir_spec etc = {
		.path = "/etc/sluice", .owner = "root", .group = "sluice", .mode = 0750};
	struct cp_dir_spec var = {
		.path = "/var/lib/sluice", .owner = "sluice", .group = "sluice", .mode = 0750};

	int rc = cp_setup_dir(p->m, &etc);

	return rc < 0 ? rc : cp_setup_dir(p->m, &var);
}

/* Locked down before the relay listens: never a window with it exposed. */
static int st_lockdown(struct prov *p)
{
	struct cp_lockdown_spec l = {.level = (enum cp_lockdown)p->s->lockdown,
				     .ports = p->ports,
				     .nports = p->nports,
				     .ssh_extra = p->s->ssh_extra,
				     .firewall = (enum cp_firewall)p->s->firewall};
	int rc = cp_security_lockdown(p->m, &l);

	p->before = p->m->changed;
	return rc;
}

static int st_binary(struct prov *p)
{
	return put_binary(p->m, p->s->relay_binary);
}

static int st_config(struct prov *p)
{
	return cp_mgr_file(p->m, "config", RELAY_CONF, p->conf, "root:sluice", 0640, NULL, 1);
}

static int st_unit(struct prov *p)
{
	int unit_changed = 0;

	return cp_service_unit(p->m, UNIT_NAME, UNIT, &unit_changed);
}

static int st_enable(struct prov *p)
{
	return cp_service_action(p->m, UNIT_NAME, "enable");
}

/* A new binary, configuration or unit takes effect by a restart; with
 * nothing changed, start is a no-op on a running relay. */
static int st_start(struct prov *p)
{
	return cp_service_action(p->m, UNIT_NAME, p->m->changed != p->before ? "restart" : "start");
}

static int st_wait(struct prov *p)
{
	return cp_service_wait(p->m, UNIT_NAME, START_TIMEOUT);
}

static int st_health(struct prov *p)
{
	return check_answers(p->m, p->s->admin);
}

/* From the control plane's side: the relay's heartbeat in Redis. */
static int st_join(struct prov *p)
{
	double t0 = sl_mono_ms_f();
	char why[300];
	int rc;

	if (p->m->check || !p->s->verify_redis || !*p->s->verify_redis)
		return 0;
	if ((rc = joined(p->s->verify_redis, p->s->relay_id, why, sizeof(why))) < 0) {
		cp_mgr_fail(p->m, rc, CP_MGR_SERVICE, "sluice-relay", "join", 1, "%s", why);
		cp_mgr_emit(p->m, "join", p->s->relay_id, CP_MGR_FAILED, t0, why);
		return rc;
	}
	cp_mgr_emit(p->m, "join", p->s->relay_id, CP_MGR_UNCHANGED, t0, "");
	return 0;
}

int cp_provision(struct cp_mgr *m, const struct cp_provision_spec *s)
{
	static const struct {
		const char *name;
		int (*run)(struct prov *p);
	} steps[] = {{"packages", st_packages}, {"user", st_user},     {"directory", st_dirs},
		     {"lockdown", st_lockdown}, {"binary", st_binary}, {"config", st_config},
		     {"unit", st_unit},		{"enable", st_enable}, {"start", st_start},
		     {"wait", st_wait},		{"health", st_health}, {"join", st_join}};
	struct prov p = {.m = m, .s = s};
	int rc;

	p.nports = cp_provision_ports(s, p.ports, 4);
	if (cp_provision_config(s, p.conf, sizeof(p.conf)) < 0)
		return cp_mgr_fail(m, -E2BIG, CP_MGR_SETUP, "config", RELAY_CONF, 0,
				   "configuration too long");
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (cp_mgr_cancelled(m, steps[i].name)) {
			cp_mgr_emit(m, steps[i].name, "cancelled", CP_MGR_FAILED, sl_mono_ms_f(),
				    m->err.cause);
			return cp_mgr_failed(m);
		}
		if ((rc = steps[i].run(&p)) < 0)
			return rc;
	}
	return 0;
}
