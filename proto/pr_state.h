/*
 * pr_state.h: session state the control plane pushes to every relay, and the
 * per-session counters relays report back (docs/protocol.md, "Session
 * state"). Both travel through Redis: one record is one msgpack map, stored
 * as a key's value or as field `m` of a stream entry, so unlike pr_msg there
 * is no length prefix. Keys a reader does not know are ignored, so a newer
 * control plane may add fields; a change an older relay would misread bumps
 * PR_STATE_VERSION.
 */
#ifndef PR_STATE_H
#define PR_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "pr_msg.h" /* PR_PROTO_*, pr_session_id_valid, pr_label_valid */

#ifdef __cplusplus
extern "C" {
#endif

#define PR_STATE_VERSION 1
#define PR_STATE_MAX	 2048 /* encoded record size bound */

enum pr_sess_status { PR_SS_ACTIVE = 0, PR_SS_DELETED = 1, PR_SS_EXPIRED = 2 };
enum pr_sess_auth { PR_AUTH_NONE = 0, PR_AUTH_BASIC = 1, PR_AUTH_BEARER = 2 };

/* A rate: at most limit events (or bytes) per window seconds; limit 0: none. Ownership: a value. */
struct pr_limit {
	uint64_t limit;
	uint32_t window; /* seconds, 1..PR_LIMIT_WINDOW_MAX when limit > 0 */
};
#define PR_LIMIT_WINDOW_MAX (7u * 86400u)

/*
 * One session as the control plane knows it. Each field's comment gives its
 * msgpack key. Strings are NUL-terminated; a decoder leaves every absent
 * field zero. Plain data: the caller owns it, nothing inside is allocated.
 */
struct pr_session {
	char sid[33];	  /* "sid", ^[a-zA-Z0-9]{8,32}$ (pr_session_id_valid) required */
	uint64_t rev;	  /* "rev", global revision from Redis INCR, > 0, required: relays apply a
			     record only when its rev is newer */
	uint64_t epoch;	  /* "ep", token epoch: tokens with another epoch are refused */
	uint8_t status;	  /* "st", enum pr_sess_status (<= 2) */
	uint8_t proto;	  /* "pr", PR_PROTO_HTTP / PR_PROTO_TCP (<= 1) */
	uint16_t port;	  /* "port", the agent's local port (information) */
	char name[64];	  /* "name", the subdomain: a DNS label (pr_label_valid) required */
	char domain[254]; /* "dom", custom domain, "" when none */
	uint64_t created; /* "cr", unix seconds */
	uint64_t expires; /* "ex", unix seconds */
	char key_id[33];  /* "key", id of the API key that created it */
	uint8_t auth;	  /* "au", enum pr_sess_auth (<= 2) */
	char auth_user[129]; /* "au_u", basic-auth user name */
	char auth_mac[65];   /* "au_h", 64 hex chars: a keyed hash of the password or bearer token
				("" when auth is none) */
	uint16_t lt_port;    /* "ltp", a localtunnel-compatible session: the relay port its
				client's raw sockets connect to (0: an agent session) */
	char allow_ips[400]; /* "ipa", comma-separated addresses or CIDR blocks allowed ("": any) */
	char deny_ips[400];  /* "ipd", comma-separated addresses or CIDR blocks refused */
	char revoked_shares[300]; /* "shr", comma-separated ids of revoked share links */
	char replaced_by[33];	  /* "rpl", a deleted session taken over by a new one of the same
				     name and key: the new one's id ("" otherwise) */
	uint8_t domain_verified;  /* "domv", 1 once the custom domain passed its challenge: before,
				     relays route only the challenge path to the session */
	/* Rate limits (docs/limits.md): at most `limit` per `window` seconds;
	 * limit 0 is no limit. The relay serving the tunnel enforces the
	 * per-tunnel ones exactly; key_req spans every tunnel of the session's
	 * key on every relay (tokens leased from Redis). */
	struct pr_limit lim_req; /* "lrq", "lrqw": HTTP requests */
	struct pr_limit lim_bw;	 /* "lbw", "lbww": bytes, both directions together */
	struct pr_limit lim_tcp; /* "ltc", "ltcw": new TCP connections */
	struct pr_limit key_req; /* "krq", "krqw": HTTP requests of all the key's tunnels */
};

/*
 * One relay's counters for one session. The totals count from when that
 * relay started serving the session, so the control plane keeps one set per
 * relay and adds them up; a report replaces the previous one from the same
 * relay rather than adding to it, which makes a lost or repeated report
 * harmless.
 * Ownership: a value.
 */
struct pr_stats {
	char sid[33];	      /* "sid" required, valid session id */
	char relay[64];	      /* "relay" required, non-empty: the reporting relay's id */
	uint64_t at_ms;	      /* "at", unix ms of the report */
	uint64_t connections; /* "conn": public connections accepted, total since the relay started
				 serving it */
	uint64_t live;	      /* "live": open public connections now */
	uint64_t requests;    /* "req": HTTP requests, total */
	uint64_t bytes_in;    /* "bin": bytes from public clients to the agent, total */
	uint64_t bytes_out;   /* "bout": bytes from the agent to public clients, total */
};

/* Encode as one msgpack map (with "v": PR_STATE_VERSION). Length, or -ENOSPC / -EINVAL (invalid
 * sid/name, field out of range). */
int pr_session_encode(const struct pr_session *s, char *buf, size_t cap);

/* 0, or -EBADMSG (not a map, wrong types, trailing bytes, declared sizes beyond the buffer,
 * nesting > 8), -EMSGSIZE (string longer than its field, or len > PR_STATE_MAX), -EPROTO
 * (missing sid/rev/name, invalid sid or name, "v" other than 1, value out of range). Unknown
 * keys ignored. A record without "v" is read as version 1. */
int pr_session_decode(const char *buf, size_t len, struct pr_session *s);

/* As pr_session_encode: -EINVAL for an invalid sid or an empty relay id. */
int pr_stats_encode(const struct pr_stats *s, char *buf, size_t cap);

/* As pr_session_decode; -EPROTO for a missing or invalid sid, or a missing or empty relay. */
int pr_stats_decode(const char *buf, size_t len, struct pr_stats *s);

const char *pr_sess_status_name(unsigned st);

/* 1 when l is no limit, or a limit with a window of 1..PR_LIMIT_WINDOW_MAX s. */
int pr_limit_valid(const struct pr_limit *l);

/* Parse "COUNT/WINDOW" as operators write limits: COUNT a whole number with
 * an optional k, M, G (x1000) or Ki, Mi, Gi (x1024) suffix, WINDOW a whole
 * number of seconds with an optional s, m, h or d unit; "off" or "0" is no
 * limit. Examples: "1000/1m", "1Gi/1h", "10/3600". 0, or -EINVAL with a
 * reason in why. */
int pr_limit_parse(const char *s, struct pr_limit *out, char *why, size_t cap);
/* As a --limit-* option's check (sl_config). */
int pr_limit_check(const char *s, char *why, size_t cap);

/* The comma-separated lists of a record ("shr", "ipa", "ipd"), read the same
 * way by the control plane that writes them and the relays that obey them. */
/* 1 when id is one of the elements of list. */
int pr_list_has(const char *list, const char *id);

/* One address or CIDR block of "ipa"/"ipd": "10.0.0.0/8", "2001:db8::/32",
 * "127.0.0.1" (a whole address). Ownership: a value. */
struct pr_cidr {
	uint8_t v6, bits;
	uint8_t addr[16];
};
/* Parse s[0..n) into *c: 0, or -1 when it is not an IPv4 or IPv6 address
 * with an optional /bits within the family's width. */
int pr_cidr_parse(const char *s, size_t n,
		  struct pr_cidr *c); /* "active", "deleted", "expired", "unknown" */

#ifdef __cplusplus
}
#endif
#endif
