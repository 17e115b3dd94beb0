/*
 * cp_ssh_diag.h: what is wrong with a host's SSH, in plain words with the
 * fix: network reachability, the SSH service (banner, and the key exchange,
 * host key, cipher and MAC lists it offers against those libssh2 speaks),
 * host key and authentication, and performance.
 */
#ifndef CP_SSH_DIAG_H
#define CP_SSH_DIAG_H

#include "ssh/cp_ssh.h"

#include <jansson.h>

/* Run every check that can run (a later one needs the earlier ones) and
 * return the report: {"host", "port", "ok", "checks": [{"name", "ok",
 * "detail", "fix"}], "figures": {...}}. The caller json_decref()s it. */
json_t *cp_ssh_diagnose(const struct cp_ssh_config *c);

/* A health check as JSON: {ok, connections: [{ok, open_ms, cmd_ms, error}],
 * figures: {samples, p50_ms, p90_ms, p99_ms, failure_rate, mb_s}, warnings,
 * dropped, reconnected, error}. */
json_t *cp_ssh_health_json(const struct cp_ssh_health *h);

/* Whether sshd lists (comma-separated; NULL or "" for unchanged) keep at
 * least one algorithm of each kind this libssh2 speaks; 0 with why if not. */
int cp_ssh_algos_speakable(const char *kex, const char *ciphers, const char *macs, char *why,
			   size_t cap);

/* The report printed as text (or JSON with json); exit code 0 when all is well. */
int cp_ssh_diag_cli(const struct cp_ssh_config *c, int json);

#endif
