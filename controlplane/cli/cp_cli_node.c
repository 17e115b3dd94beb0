/*
 * cp_cli_node.c: `sluice-control node provision|lockdown|audit HOST`: the
 * managers (mgr/) from a shell, on the pool and options cp_cli_ssh.c made.
 * Events go out as JSON lines while the run goes, then its result.
 */
#include "cli/cp_cli.h"
#include "cli/cp_cli_node.h"
#include "mgr/cp_provision.h"
#include "mgr/cp_sec_audit.h"
#include "mgr/cp_security.h"
#include "sl_time.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static void print_event(void *arg, const struct cp_mgr_event *ev)
{
	json_t *o = cp_mgr_event_json(ev);

	(void)arg;
	json_dumpf(o, stdout, JSON_COMPACT);
	printf("\n");
	fflush(stdout);
	json_decref(o);
}

/* "a\\nb" (as a flag carries it) into "a\nb\n". */
static void unescape_lines(const char *in, char *out, size_t cap)
{
	size_t o = 0;

	for (; *in && o + 2 < cap; in++) {
		if (in[0] == '\\' && in[1] == 'n') {
			out[o++] = '\n';
			in++;
		} else {
			out[o++] = *in;
		}
	}
	if (o && out[o - 1] != '\n' && o + 1 < cap)
		out[o++] = '\n';
	out[o] = '\0';
}

static void print_summary(const struct cp_mgr *m, int rc, double t0)
{
	json_t *o = cp_mgr_result_json(m, rc, sl_mono_ms_f() - t0);

	json_dumpf(o, stdout, JSON_COMPACT);
	printf("\n");
	json_decref(o);
}

int cp_cli_node_security(const struct sl_config *cfg, struct cp_ssh_pool *pool,
			 const struct cp_ssh_config *c, int audit)
{
	static char sudo_pw[128];
	struct cp_mgr m = {
		.pool = pool, .check = (int)sl_config_int(cfg, "check"), .on_event = print_event};
	struct cp_provision_spec s = {.http = sl_config_str(cfg, "relay-http"),
				      .agents = sl_config_str(cfg, "relay-agents")};
	int ports[4], rc;
	size_t n = cp_provision_ports(&s, ports, 4);
	char extra[1024];
	double t0 = sl_mono_ms_f();

	cp_cli_env_secret(cfg, "sudo-password-env", sudo_pw, sizeof(sudo_pw));
	m.sudo = strcmp(c->user, "root") != 0;
	m.sudo_password = sudo_pw[0] ? sudo_pw : NULL;
	if (audit) {
		json_t *rep = cp_security_audit(&m, ports, n);

		if (!rep) {
			fprintf(stderr, "sluice-control node audit: %s\n", m.err.cause);
			return SL_EXIT_FAIL;
		}
		if (sl_config_int(cfg, "json")) {
			json_dumpf(rep, stdout, JSON_COMPACT);
			printf("\n");
		} else {
			cp_security_audit_print(rep, stdout);
		}
		json_decref(rep);
		return SL_EXIT_OK;
	}
	unescape_lines(sl_config_str(cfg, "ssh-extra"), extra, sizeof(extra));
	rc = cp_security_lockdown(
		&m, &(struct cp_lockdown_spec){.level = (enum cp_lockdown)cp_lockdown_parse(
						       sl_config_str(cfg, "lockdown")),
					       .ports = ports,
					       .nports = n,
					       .ssh_extra = extra,
					       .firewall = (enum cp_firewall)cp_firewall_parse(
						       sl_config_str(cfg, "firewall"))});
	print_summary(&m, rc, t0);
	explicit_bzero(sudo_pw, sizeof(sudo_pw));
	return rc == 0 ? SL_EXIT_OK : SL_EXIT_FAIL;
}

int cp_cli_node_provision(const struct sl_config *cfg, struct cp_ssh_pool *pool,
			  const struct cp_ssh_config *c)
{
	static char sudo_pw[128];
	const char *secret = getenv(sl_config_str(cfg, "session-secret-env"));
	char ssh_extra[1024];
	struct cp_mgr m = {
		.pool = pool, .check = (int)sl_config_int(cfg, "check"), .on_event = print_event};
	struct cp_provision_spec s = {.relay_binary = sl_config_str(cfg, "relay-binary"),
				      .relay_id = *sl_config_str(cfg, "relay-id")
							  ? sl_config_str(cfg, "relay-id")
							  : c->host,
				      .redis_url = sl_config_str(cfg, "relay-redis"),
				      .session_secret = secret ? secret : "",
				      .http = sl_config_str(cfg, "relay-http"),
				      .agents = sl_config_str(cfg, "relay-agents"),
				      .admin = sl_config_str(cfg, "relay-admin"),
				      .domain = sl_config_str(cfg, "relay-domain"),
				      .lockdown = cp_lockdown_parse(sl_config_str(cfg, "lockdown")),
				      .firewall = cp_firewall_parse(sl_config_str(cfg, "firewall")),
				      .ssh_extra = ssh_extra,
				      .verify_redis = sl_config_str(cfg, "verify-redis")};
	double t0 = sl_mono_ms_f();
	int rc;

	if (!*s.relay_binary || strlen(s.session_secret) < 32) {
		fprintf(stderr,
			"sluice-control node provision: give --relay-binary and the session "
			"secret (32 bytes or more) in $%s\n",
			sl_config_str(cfg, "session-secret-env"));
		return SL_EXIT_USAGE;
	}
	cp_cli_env_secret(cfg, "sudo-password-env", sudo_pw, sizeof(sudo_pw));
	unescape_lines(sl_config_str(cfg, "ssh-extra"), ssh_extra, sizeof(ssh_extra));
	m.sudo = strcmp(c->user, "root") != 0;
	m.sudo_password = sudo_pw[0] ? sudo_pw : NULL;
	rc = cp_provision(&m, &s);
	print_summary(&m, rc, t0);
	explicit_bzero(sudo_pw, sizeof(sudo_pw));
	return rc == 0 ? SL_EXIT_OK : SL_EXIT_FAIL;
}
