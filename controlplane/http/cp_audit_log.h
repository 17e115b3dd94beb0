/*
 * cp_audit_log.h: the API's audit log: who did what from where (key
 * created, session deleted, authentication refused, ...), as JSON lines
 * {"time", "event", "actor", "ip", "userAgent", "detail"} in the file of
 * --audit-log, or through the log when there is none. Not the security
 * audit of a host (mgr/cp_sec_audit.h).
 */
#ifndef CP_AUDIT_LOG_H
#define CP_AUDIT_LOG_H

#include "http/cp_server.h"

/* Open cfg.audit_path for appending into s->audit (nothing without one):
 * 0 or a negative errno. cp_audit_log_close closes it. */
int cp_audit_log_open(struct cp_server *s);
void cp_audit_log_close(struct cp_server *s);

/* One line in the audit log: event, the actor and the request's address
 * and user agent (req may be NULL), plus detail (may be NULL). */
void cp_audit(struct cp_server *s, h2o_req_t *req, const char *event, const char *actor,
	      const char *detail);

/* The client's address (text) into ip: 0 (IPv4), 1 (IPv6), or -ENOTCONN
 * when the connection cannot tell (ip left as it was). */
int cp_client_ip(h2o_req_t *req, char ip[64]);

#endif
