/*
 * cp_verify.h: proving that a key's owner controls a custom domain, the way
 * certificate authorities do (ACME's dns-01 and http-01):
 *
 *   dns   a TXT record  _sluice-challenge.<domain>  holding the token
 *   http  GET http://<domain>/.well-known/sluice-challenge/<token>  answering
 *         200 with the token as its body (from whatever serves the domain:
 *         the owner's web server, or their app through a sluice tunnel that
 *         names the domain)
 *
 * Both block (resolver, sockets), each step bounded by timeout_ms: the
 * control plane runs them on a thread of their own, never on its loop.
 */
#ifndef CP_VERIFY_H
#define CP_VERIFY_H

enum cp_verify_method { CP_VERIFY_DNS = 1, CP_VERIFY_HTTP = 2 };

#define CP_CHALLENGE_PREFIX "_sluice-challenge."
#define CP_CHALLENGE_PATH   "/.well-known/sluice-challenge/"

struct cp_verify_req {
	enum cp_verify_method method;
	char domain[254];
	char token[65];
	char dns_server[64]; /* "ip:port" asked instead of resolv.conf's, or "" */
	char connect[300];   /* "host:port" the http challenge connects to, or "": the domain:80 */
	int timeout_ms;
};

struct cp_verify_result {
	int ok;
	char why[700]; /* what was found instead, for the person fixing it */
};

void cp_verify_run(const struct cp_verify_req *q, struct cp_verify_result *out);

#endif
