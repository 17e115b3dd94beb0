/*
 * cp_audit_log.c: the API's audit log (see cp_audit_log.h): one JSON line
 * per security event, into --audit-log or, without one, the log.
 */
#include "http/cp_audit_log.h"
#include "sl_log.h"
#include "sl_net.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

int cp_audit_log_open(struct cp_server *s)
{
	if (s->cfg.audit_path == NULL || s->cfg.audit_path[0] == '\0')
		return 0;
	s->audit = fopen(s->cfg.audit_path, "a");
	return s->audit ? 0 : -errno;
}

void cp_audit_log_close(struct cp_server *s)
{
	if (s->audit)
		fclose(s->audit);
	s->audit = NULL;
}

int cp_client_ip(h2o_req_t *req, char ip[64])
{
	struct sockaddr_storage ss;

	if (req->conn->callbacks->get_peername(req->conn, (struct sockaddr *)&ss) <= 0)
		return -ENOTCONN;
	return sl_addr_ip((struct sockaddr *)&ss, ip);
}

void cp_audit(struct cp_server *s, h2o_req_t *req, const char *event, const char *actor,
	      const char *detail)
{
	char ip[64] = "", ts[40];
	const h2o_iovec_t *ua = req ? cp_req_header(req, H2O_TOKEN_USER_AGENT) : NULL;
	json_t *o;
	char *line;

	if (req)
		cp_client_ip(req, ip);
	sl_time_iso8601(ts, sizeof(ts));
	o = json_pack("{s:s,s:s,s:s,s:s,s:s%}", "time", ts, "event", event, "actor",
		      actor ? actor : "-", "ip", ip, "userAgent", ua ? ua->base : "",
		      ua ? ua->len : (size_t)0);
	if (o && detail)
		json_object_set_new(o, "detail", json_string(detail));
	line = o ? json_dumps(o, JSON_COMPACT) : NULL;
	if (line && s->audit) {
		fprintf(s->audit, "%s\n", line);
		fflush(s->audit);
	} else if (line)
		sl_info("audit %s", line);
	free(line);
	json_decref(o);
}
