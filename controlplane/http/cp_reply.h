/*
 * cp_reply.h: how the control plane answers: JSON bodies (errors as
 * {"error": "...", "code": "..."}), the headers every response carries
 * (no sniffing, no framing, no referrer, a CSP that allows nothing, CORS
 * for the allowed origins), streamed responses and CORS preflights.
 */
#ifndef CP_REPLY_H
#define CP_REPLY_H

#include "http/cp_server.h"

/* Send status and body (a jansson value, stolen; NULL: no body). */
void cp_send_json(struct cp_server *s, h2o_req_t *req, int status, json_t *body);
void cp_send_error(struct cp_server *s, h2o_req_t *req, int status, const char *code,
		   const char *msg);
/* A body of another type (len bytes of body, copied). */
void cp_send_body(struct cp_server *s, h2o_req_t *req, int status, const char *type,
		  const char *body, size_t len);
/* 204 to an OPTIONS request: the methods and headers CORS allows. */
void cp_send_preflight(struct cp_server *s, h2o_req_t *req);

/* Status, the common headers and a content type, for a response whose
 * body goes out with h2o_start_response and h2o_send. */
void cp_start_stream(struct cp_server *s, h2o_req_t *req, int status, const char *type);

/* Unix seconds as ISO 8601 UTC ("2024-05-01T12:00:00Z"), a JSON string. */
json_t *cp_iso_time(uint64_t unix_s);

#endif
