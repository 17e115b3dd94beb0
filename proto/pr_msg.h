/*
 * pr_msg.h: the agent <-> relay control protocol (docs/protocol.md).
 *
 * Every control message is a frame: a 4-byte big-endian payload length, then
 * one msgpack map whose key "t" names the message type. Keys a receiver does
 * not know are ignored, so a newer peer may add fields without breaking an
 * older one; a change that would break an older peer bumps PR_VERSION.
 */
#ifndef PR_MSG_H
#define PR_MSG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PR_VERSION     1
#define PR_FRAME_HDR   4
#define PR_FRAME_MAX   4096 /* largest payload; control messages are small */
#define PR_TOKEN_MAX   256
#define PR_NAME_MAX    64
#define PR_SESSION_MAX 40
#define PR_KEY_MAX     64
#define PR_URL_MAX     256
#define PR_TEXT_MAX    256

enum pr_type {
	PR_HELLO = 1, /* agent -> relay, first on the control connection */
	PR_BOUND,     /* relay -> agent: the tunnel is live at url */
	PR_ERROR,     /* either way: code and text, then the sender closes */
	PR_OPEN,      /* relay -> agent: open count more data connections */
	PR_PING,      /* either way: liveness, answered by PR_PONG with the same nonce */
	PR_PONG,
	PR_GOAWAY,     /* relay -> agent: reconnect elsewhere or later (drain) */
	PR_DATA_HELLO, /* agent -> relay, first on a data connection */
	PR_START,      /* relay -> agent on a data connection: a stream begins, raw bytes follow */
	PR_LINK,       /* relay -> relay, first on a link connection: a public connection
			  forwarded to the relay holding its tunnel; its raw bytes follow */
	PR_TYPE_MAX,
};

enum pr_proto {
	PR_PROTO_HTTP = 0,
	PR_PROTO_TCP = 1,
};

/* Error codes in PR_ERROR and PR_GOAWAY, stable across versions. */
enum pr_code {
	PR_E_VERSION = 1, /* protocol version not supported */
	PR_E_AUTH = 2,	  /* token refused */
	PR_E_NAME_TAKEN = 3,
	PR_E_NAME_INVALID = 4,
	PR_E_NO_PORT = 5, /* no TCP port left in the range */
	PR_E_BAD_MESSAGE = 6,
	PR_E_SESSION = 7, /* unknown session or stale epoch on a data connection */
	PR_E_DRAIN = 8,	  /* relay shutting down */
	PR_E_INTERNAL = 9,
	PR_E_REPLACED = 10, /* a newer agent took the name or session over: stop, do not retry */
};

/*
 * One decoded message. Which fields are meaningful depends on type (see
 * docs/protocol.md); the rest are zero. Strings are NUL-terminated.
 * Ownership: a value: fixed fields, nothing to free.
 */
struct pr_msg {
	enum pr_type type;
	uint32_t version;	      /* HELLO, DATA_HELLO */
	enum pr_proto proto;	      /* HELLO, BOUND */
	char token[PR_TOKEN_MAX];     /* HELLO */
	char name[PR_NAME_MAX];	      /* HELLO (wanted), BOUND (granted) */
	char session[PR_SESSION_MAX]; /* HELLO (resume), BOUND, DATA_HELLO */
	uint64_t epoch;		      /* HELLO (resume), BOUND, DATA_HELLO */
	char key[PR_KEY_MAX];	      /* BOUND (data key), DATA_HELLO */
	char url[PR_URL_MAX];	      /* BOUND */
	uint32_t port;		      /* BOUND: public TCP port for PR_PROTO_TCP */
	uint32_t count;		      /* OPEN */
	uint32_t heartbeat_ms;	      /* BOUND: the relay's ping interval */
	uint64_t nonce;		      /* PING, PONG */
	uint32_t code;		      /* ERROR, GOAWAY: enum pr_code */
	char text[PR_TEXT_MAX];	      /* ERROR, GOAWAY; START: client address */
};

/*
 * Encode m as a whole frame (length prefix included) into buf.
 * Returns the frame length, or -ENOSPC when cap is too small, -EINVAL for an
 * unknown type.
 */
int pr_encode(const struct pr_msg *m, char *buf, size_t cap);

/*
 * Given the bytes received so far, say whether a whole frame is there.
 * Returns the frame length (header included) when complete, 0 when more bytes
 * are needed, -EMSGSIZE when the announced payload exceeds PR_FRAME_MAX.
 */
int pr_frame_len(const char *buf, size_t len);

/*
 * Decode one payload (the bytes after the length prefix) into *m.
 * Returns 0, or -EBADMSG (not a msgpack map, wrong field types, trailing
 * bytes), -EMSGSIZE (a string longer than its field), -EPROTO (unknown or
 * missing type).
 */
int pr_decode(const char *payload, size_t len, struct pr_msg *m);

const char *pr_type_name(enum pr_type t);

/* Names that cross process boundaries, checked the same way everywhere. */
/* A DNS label (tunnel names, subdomains): 1..63 of a-z, 0-9 and '-', not
 * starting or ending with '-'. */
int pr_label_valid(const char *s, size_t len);
/* A session id: ^[a-zA-Z0-9]{8,32}$. */
int pr_session_id_valid(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif
