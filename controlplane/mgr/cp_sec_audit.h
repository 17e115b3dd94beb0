/*
 * cp_sec_audit.h: the security audit of a host (cp_sec_audit.c), read-only:
 * what the lockdown (mgr/cp_security.h) would leave, scored. Not the API's
 * audit log (http/cp_audit_log.h).
 */
#ifndef CP_SEC_AUDIT_H
#define CP_SEC_AUDIT_H

#include "mgr/cp_mgr.h"

#include <jansson.h>
#include <stdio.h>

/* A scored report in the manner of Lynis: {"score": 0..100, "checks":
 * [{"id", "ok", "weight", "detail", "recommendation"}]}; NULL when the host
 * cannot be read. ports: those expected to listen. */
json_t *cp_security_audit(struct cp_mgr *m, const int *ports, size_t nports);
/* The same as text for a person. */
void cp_security_audit_print(const json_t *report, FILE *out);

#endif
