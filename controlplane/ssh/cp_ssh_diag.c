/*
 * cp_ssh_diag.c: the troubleshooter. Each check says what it found and, when
 * something is wrong, what to change. The SSH service check reads the
 * server's SSH_MSG_KEXINIT itself (RFC 4253 7.1: sent in clear before any key
 * exchange) and compares each list with what this libssh2 offers, asked at
 * run time (libssh2_session_supported_algs), so the advice follows the
 * library actually linked.
 */
#include "ssh/cp_ssh_diag.h"
#include "ssh/cp_ssh_int.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KEXINIT_MAX (64u << 10)
#define PERF_RUNS   10
#define PERF_BYTES  (8u << 20)

static void check(json_t *checks, const char *name, int ok, const char *detail, const char *fix)
{
	json_array_append_new(checks, json_pack("{s:s,s:b,s:s,s:s?}", "name", name, "ok", ok,
						"detail", detail, "fix", fix));
}

/* Read until n bytes or the deadline; 0 or -errno. */
static int read_full(int fd, unsigned char *p, size_t n, int64_t deadline)
{
	while (n) {
		struct pollfd pf = {.fd = fd, .events = POLLIN};
		int64_t left = deadline - cp_ssh_now_ms();
		ssize_t r;

		if (left <= 0 || poll(&pf, 1, (int)left) <= 0)
			return -ETIMEDOUT;
		r = read(fd, p, n);
		if (r <= 0)
			return r == 0 ? -ECONNRESET : -errno;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* The server's banner line (lines before it are allowed, RFC 4253 4.2). */
static int read_banner(int fd, char *out, size_t cap, int64_t deadline)
{
	size_t o = 0;

	for (int lines = 0; lines < 20;) {
		unsigned char ch;
		int rc = read_full(fd, &ch, 1, deadline);

		if (rc < 0)
			return rc;
		if (ch == '\n') {
			out[o > 0 && out[o - 1] == '\r' ? o - 1 : o] = '\0';
			if (strncmp(out, "SSH-", 4) == 0)
				return 0;
			o = 0;
			lines++;
		} else if (o + 1 < cap) {
			out[o++] = (char)ch;
		}
	}
	return -EPROTO;
}

/* The i-th name-list of a KEXINIT payload into out. */
static int name_list(const unsigned char *p, size_t n, int idx, char *out, size_t cap)
{
	size_t o = 17; /* message number and cookie */

	for (int i = 0; i <= idx; i++) {
		uint32_t l;

		if (o + 4 > n)
			return -EPROTO;
		l = (uint32_t)p[o] << 24 | (uint32_t)p[o + 1] << 16 | (uint32_t)p[o + 2] << 8 |
		    p[o + 3];
		o += 4;
		if (o + l > n)
			return -EPROTO;
		if (i == idx)
			snprintf(out, cap, "%.*s", (int)l, (const char *)p + o);
		o += l;
	}
	return 0;
}

/* The server's KEXINIT payload (malloc'd) after the banners. */
static unsigned char *read_kexinit(int fd, size_t *len, int64_t deadline)
{
	unsigned char hdr[5], *p;
	uint32_t plen;

	if (read_full(fd, hdr, 5, deadline) < 0)
		return NULL;
	plen = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (plen < 2 || plen > KEXINIT_MAX || hdr[4] >= plen)
		return NULL;
	p = malloc(plen - 1);
	if (!p || read_full(fd, p, plen - 1, deadline) < 0 || p[0] != 20 /* SSH_MSG_KEXINIT */) {
		free(p);
		return NULL;
	}
	*len = plen - 1 - hdr[4];
	return p;
}

/* Whether two comma-separated lists share a name. */
static int common(const char *a, const char *b)
{
	char tmp[2048], *save = NULL;

	snprintf(tmp, sizeof(tmp), "%s", a);
	for (char *t = strtok_r(tmp, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t l = strlen(t);

		for (const char *q = b; (q = strstr(q, t)) != NULL; q += l)
			if ((q == b || q[-1] == ',') && (q[l] == ',' || q[l] == '\0'))
				return 1;
	}
	return 0;
}

static void ours(int method, char *out, size_t cap)
{
	LIBSSH2_SESSION *s = libssh2_session_init();
	const char **algs = NULL;
	int n = s ? libssh2_session_supported_algs(s, method, &algs) : 0;
	size_t o = 0;

	out[0] = '\0';
	for (int i = 0; i < n && o + 1 < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? "," : "", algs[i]);
	if (n > 0)
		libssh2_free(s, algs);
	if (s)
		libssh2_session_free(s);
}

int cp_ssh_algos_speakable(const char *kex, const char *ciphers, const char *macs, char *why,
			   size_t cap)
{
	static const int methods[] = {LIBSSH2_METHOD_KEX, LIBSSH2_METHOD_CRYPT_CS,
				      LIBSSH2_METHOD_MAC_CS};
	static const char *const names[] = {"KexAlgorithms", "Ciphers", "MACs"};
	const char *lists[] = {kex, ciphers, macs};
	char mine[2048];

	for (int i = 0; i < 3; i++) {
		if (!lists[i] || !*lists[i])
			continue;
		ours(methods[i], mine, sizeof(mine));
		if (!common(lists[i], mine)) {
			snprintf(why, cap, "%s %.300s leaves nothing libssh2 %s speaks (%.300s)",
				 names[i], lists[i], LIBSSH2_VERSION, mine);
			return 0;
		}
	}
	return 1;
}

/* The server's lists against ours; a check per kind. Returns 1 if all match. */
static int check_algorithms(json_t *checks, const unsigned char *k, size_t n)
{
	static const struct {
		const char *what, *opt, *suggest;
		int idx, method;
	} kinds[] = {
		{"key exchange", "KexAlgorithms", "curve25519-sha256", 0, LIBSSH2_METHOD_KEX},
		{"host key", "HostKeyAlgorithms", "ssh-ed25519", 1, LIBSSH2_METHOD_HOSTKEY},
		{"cipher", "Ciphers", "aes128-ctr", 2, LIBSSH2_METHOD_CRYPT_CS},
		{"MAC", "MACs", "hmac-sha2-256", 4, LIBSSH2_METHOD_MAC_CS},
	};
	char theirs[2048], mine[2048], detail[4400], fix[300];
	int all = 1;

	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (name_list(k, n, kinds[i].idx, theirs, sizeof(theirs)) < 0)
			return 0;
		ours(kinds[i].method, mine, sizeof(mine));
		if (common(theirs, mine)) {
			snprintf(detail, sizeof(detail), "%s: an algorithm in common",
				 kinds[i].what);
			check(checks, "algorithms", 1, detail, NULL);
			continue;
		}
		all = 0;
		snprintf(detail, sizeof(detail),
			 "%s: the server offers only %s; libssh2 %s speaks %s", kinds[i].what,
			 theirs, LIBSSH2_VERSION, mine);
		snprintf(fix, sizeof(fix), "add %s to %s in sshd_config (then sshd -t and reload)",
			 kinds[i].suggest, kinds[i].opt);
		check(checks, "algorithms", 0, detail, fix);
	}
	return all;
}

static int check_service(json_t *checks, json_t *fig, const struct cp_ssh_config *c, int port)
{
	int64_t deadline = cp_ssh_now_ms() + (c->connect_timeout_ms ? c->connect_timeout_ms : 5000);
	struct cp_ssh_err err = {0};
	char banner[256], detail[400];
	unsigned char *k = NULL;
	size_t kn = 0;
	int fd = cp_ssh_tcp_connect(c->host, port,
				    c->connect_timeout_ms ? c->connect_timeout_ms : 5000, &err),
	    ok = 0;

	if (fd < 0)
		return 0;
	if (read_banner(fd, banner, sizeof(banner), deadline) < 0) {
		check(checks, "ssh", 0,
		      "no SSH banner: something else listens on this port, or sshd hung",
		      "check the port (ss -ltnp on the host) and sshd's log (journalctl -u ssh)");
		goto out;
	}
	json_object_set_new(fig, "banner", json_string(banner));
	if (write(fd, "SSH-2.0-sluice_diagnose\r\n", 25) != 25 ||
	    !(k = read_kexinit(fd, &kn, deadline))) {
		check(checks, "ssh", 0, "the server sent no key exchange offer after its banner",
		      "check sshd's log for why it dropped the connection");
		goto out;
	}
	snprintf(detail, sizeof(detail), "%s", banner);
	check(checks, "ssh", 1, detail, NULL);
	ok = check_algorithms(checks, k, kn);
out:
	free(k);
	close(fd);
	return ok;
}

static void auth_check(json_t *checks, const struct cp_ssh_err *err)
{
	const char *fix = err->kind == CP_SSH_E_HOSTKEY
				  ? "verify the host's fingerprint out of band, "
				    "then update known_hosts as the message says"
			  : err->kind == CP_SSH_E_AUTH ? "put the public key in the user's "
							 "~/.ssh/authorized_keys (mode 600), or "
							 "check the user name"
			  : err->kind == CP_SSH_E_ALGO ? "see the algorithms check"
						       : "see the message";

	check(checks, err->kind == CP_SSH_E_HOSTKEY ? "hostkey" : "auth", 0, err->msg, fix);
}

static void perf(json_t *checks, json_t *fig, struct cp_ssh_pool *pool)
{
	const char *t[] = {"true", NULL}, *cat[] = {"sh", "-c", "cat > /dev/null", NULL};
	double lat[PERF_RUNS];
	struct cp_ssh_result r;
	char detail[200];
	char *buf = calloc(1, PERF_BYTES);
	struct cp_ssh_cmd cmd = {.argv = t, .timeout_ms = 10000};
	int ok = 1;

	for (int i = 0; i < PERF_RUNS; i++) {
		ok &= cp_ssh_run(pool, &cmd, &r) == 0 && r.exit_code == 0;
		lat[i] = r.duration_ms;
		cp_ssh_result_free(&r);
	}
	for (int i = 1; i < PERF_RUNS; i++) /* insertion sort: ten numbers */
		for (int j = i; j > 0 && lat[j] < lat[j - 1]; j--) {
			double x = lat[j];

			lat[j] = lat[j - 1];
			lat[j - 1] = x;
		}
	json_object_set_new(fig, "command_p50_ms", json_real(lat[PERF_RUNS / 2]));
	cmd = (struct cp_ssh_cmd){
		.argv = cat, .input = buf, .input_len = buf ? PERF_BYTES : 0, .timeout_ms = 60000};
	if (buf && cp_ssh_run(pool, &cmd, &r) == 0 && r.exit_code == 0 && r.duration_ms > 0)
		json_object_set_new(fig, "upload_mb_s",
				    json_real(PERF_BYTES / 1e6 / (r.duration_ms / 1000.0)));
	cp_ssh_result_free(&r);
	free(buf);
	snprintf(detail, sizeof(detail), "a command takes %.1f ms (median of %d)",
		 lat[PERF_RUNS / 2], PERF_RUNS);
	check(checks, "performance", ok, detail,
	      ok ? NULL : "commands fail on this host: run one by hand to see why");
}

json_t *cp_ssh_diagnose(const struct cp_ssh_config *c)
{
	int port = c->port ? c->port : 22, fd, ok = 0;
	json_t *checks = json_array(), *fig = json_object(), *rep;
	struct cp_ssh_err err = {0};
	struct cp_ssh_pool *pool = NULL;
	char detail[300];
	int64_t t0 = cp_ssh_now_ms();

	fd = cp_ssh_tcp_connect(c->host, port, c->connect_timeout_ms ? c->connect_timeout_ms : 5000,
				&err);
	if (fd < 0) {
		check(checks, "network", 0, err.msg,
		      fd == -ECONNREFUSED ? "start sshd (systemctl start ssh) or use its port"
					  : "check the address, routes and firewalls on the way");
		goto out;
	}
	close(fd);
	snprintf(detail, sizeof(detail), "TCP connect to %s port %d in %.1f ms", c->host, port,
		 (double)(cp_ssh_now_ms() - t0));
	json_object_set_new(fig, "tcp_connect_ms", json_real((double)(cp_ssh_now_ms() - t0)));
	check(checks, "network", 1, detail, NULL);
	if (!check_service(checks, fig, c, port))
		goto out;
	if (cp_ssh_config_check(c, &err) < 0) {
		check(checks, "auth", 0, err.msg, "fix the configuration");
		goto out;
	}
	pool = cp_ssh_pool_new(c, NULL, -1);
	t0 = cp_ssh_now_ms();
	if (!pool || cp_ssh_pool_connect(pool, &err) < 0) {
		auth_check(checks, &err);
		goto out;
	}
	json_object_set_new(fig, "ssh_connect_ms", json_real((double)(cp_ssh_now_ms() - t0)));
	check(checks, "hostkey", 1, "the host key matches known_hosts", NULL);
	snprintf(detail, sizeof(detail), "%s authenticated", c->user);
	check(checks, "auth", 1, detail, NULL);
	perf(checks, fig, pool);
	ok = 1;
	for (size_t i = 0; i < json_array_size(checks); i++)
		ok &= json_is_true(json_object_get(json_array_get(checks, i), "ok"));
out:
	cp_ssh_pool_free(pool);
	rep = json_pack("{s:s,s:i,s:b,s:o,s:o}", "host", c->host, "port", port, "ok", ok, "checks",
			checks, "figures", fig);
	return rep;
}

int cp_ssh_diag_cli(const struct cp_ssh_config *c, int json)
{
	json_t *rep = cp_ssh_diagnose(c), *checks = json_object_get(rep, "checks");
	int ok = json_is_true(json_object_get(rep, "ok"));

	if (json) {
		json_dumpf(rep, stdout, JSON_COMPACT);
		printf("\n");
	} else {
		for (size_t i = 0; i < json_array_size(checks); i++) {
			json_t *k = json_array_get(checks, i);
			const char *fix = json_string_value(json_object_get(k, "fix"));

			printf("%-4s %-12s %s\n",
			       json_is_true(json_object_get(k, "ok")) ? "ok" : "FAIL",
			       json_string_value(json_object_get(k, "name")),
			       json_string_value(json_object_get(k, "detail")));
			if (fix)
				printf("     %-12s fix: %s\n", "", fix);
		}
		printf("%s\n", ok ? "all checks passed" : "problems found");
	}
	json_decref(rep);
	return ok ? 0 : 1;
}
