/*
 * pr_state.c: encoder and decoder of the session-state and stats records
 * (see pr_state.h and docs/protocol.md), on the msgpack helpers of pr_mp.h.
 *
 * Both records are flat maps of strings and unsigned integers, so each is
 * described once by a table of fields (key, place in the struct, bound) that
 * drives encoding, decoding and the range checks alike; what the table
 * cannot say (required fields, valid ids) is one predicate per record, shared
 * by the encoder (-EINVAL) and the decoder (-EPROTO) so that whatever one
 * side accepts the other does too.
 */
#include "pr_state.h"
#include "pr_mp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

/* Ownership: static tables. */
struct schema {
	const struct pr_mp_field *fields;
	size_t n;
	int (*valid)(const void *rec); /* required fields present and well formed */
};

int pr_limit_valid(const struct pr_limit *l)
{
	return l->limit == 0 || (l->window >= 1 && l->window <= PR_LIMIT_WINDOW_MAX);
}

/* A whole number with an optional multiplier suffix out of units[]; the
 * rest of the string must be empty. 0 or -EINVAL. Ownership: static tables. */
struct unit {
	const char *suffix;
	uint64_t mul;
};

static int parse_scaled(const char *s, size_t n, const struct unit *units, uint64_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (i == 0)
		return -EINVAL;
	if (i == n) {
		*out = v;
		return 0;
	}
	for (const struct unit *u = units; u->suffix; u++)
		if (strlen(u->suffix) == n - i && memcmp(u->suffix, s + i, n - i) == 0) {
			if (u->mul && v > UINT64_MAX / u->mul)
				return -EINVAL;
			*out = v * u->mul;
			return 0;
		}
	return -EINVAL;
}

int pr_limit_parse(const char *s, struct pr_limit *out, char *why, size_t cap)
{
	static const struct unit counts[] = {{"k", 1000},     {"M", 1000000},  {"G", 1000000000},
					     {"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30},
					     {NULL, 0}};
	static const struct unit secs[] = {
		{"s", 1}, {"m", 60}, {"h", 3600}, {"d", 86400}, {NULL, 0}};
	const char *slash = s ? strchr(s, '/') : NULL;
	uint64_t n, w;

	if (s && (strcmp(s, "off") == 0 || strcmp(s, "0") == 0)) {
		*out = (struct pr_limit){0, 0};
		return 0;
	}
	if (slash == NULL || parse_scaled(s, (size_t)(slash - s), counts, &n) < 0 ||
	    parse_scaled(slash + 1, strlen(slash + 1), secs, &w) < 0 || w == 0 ||
	    w > PR_LIMIT_WINDOW_MAX) {
		snprintf(why, cap,
			 "a limit is COUNT/WINDOW (\"1000/1m\", \"1Gi/1h\"), the window 1 s to "
			 "7 d, or \"off\"");
		return -EINVAL;
	}
	*out = (struct pr_limit){n, (uint32_t)w};
	return 0;
}

int pr_limit_check(const char *s, char *why, size_t cap)
{
	struct pr_limit l;

	return pr_limit_parse(s, &l, why, cap);
}

static int session_valid(const void *rec)
{
	const struct pr_session *s = rec;

	return pr_session_id_valid(s->sid, strlen(s->sid)) && s->rev > 0 &&
	       pr_label_valid(s->name, strlen(s->name)) && pr_limit_valid(&s->lim_req) &&
	       pr_limit_valid(&s->lim_bw) && pr_limit_valid(&s->lim_tcp) &&
	       pr_limit_valid(&s->key_req);
}

static int stats_valid(const void *rec)
{
	const struct pr_stats *s = rec;

	return pr_session_id_valid(s->sid, strlen(s->sid)) && s->relay[0] != '\0';
}

#define SESS(m, k)     PR_MP_STR_FIELD(struct pr_session, m, k)
#define SESU(m, k, mx) PR_MP_UINT_FIELD(struct pr_session, m, k, mx)
static const struct pr_mp_field session_fields[] = {
	SESS(sid, "sid"),
	SESU(rev, "rev", UINT64_MAX),
	SESU(epoch, "ep", UINT64_MAX),
	SESU(status, "st", PR_SS_EXPIRED),
	SESU(proto, "pr", PR_PROTO_TCP),
	SESU(port, "port", UINT16_MAX),
	SESS(name, "name"),
	SESS(domain, "dom"),
	SESU(created, "cr", UINT64_MAX),
	SESU(expires, "ex", UINT64_MAX),
	SESS(key_id, "key"),
	SESU(auth, "au", PR_AUTH_BEARER),
	SESS(auth_user, "au_u"),
	SESS(auth_mac, "au_h"),
	SESU(lt_port, "ltp", UINT16_MAX),
	SESS(allow_ips, "ipa"),
	SESS(deny_ips, "ipd"),
	SESS(revoked_shares, "shr"),
	SESS(replaced_by, "rpl"),
	SESU(domain_verified, "domv", 1),
	SESU(lim_req.limit, "lrq", UINT64_MAX),
	SESU(lim_req.window, "lrqw", PR_LIMIT_WINDOW_MAX),
	SESU(lim_bw.limit, "lbw", UINT64_MAX),
	SESU(lim_bw.window, "lbww", PR_LIMIT_WINDOW_MAX),
	SESU(lim_tcp.limit, "ltc", UINT64_MAX),
	SESU(lim_tcp.window, "ltcw", PR_LIMIT_WINDOW_MAX),
	SESU(key_req.limit, "krq", UINT64_MAX),
	SESU(key_req.window, "krqw", PR_LIMIT_WINDOW_MAX),
};

#define STS(m, k) PR_MP_STR_FIELD(struct pr_stats, m, k)
#define STU(m, k) PR_MP_UINT_FIELD(struct pr_stats, m, k, UINT64_MAX)
/* clang-format off */
static const struct pr_mp_field stats_fields[] = {
	STS(sid, "sid"),
	STS(relay, "relay"),
	STU(at_ms, "at"),
	STU(connections, "conn"),
	STU(live, "live"),
	STU(requests, "req"),
	STU(bytes_in, "bin"),
	STU(bytes_out, "bout"),
};
/* clang-format on */

#define NFIELDS(a) (sizeof(a) / sizeof((a)[0]))
static const struct schema session_schema = {session_fields, NFIELDS(session_fields),
					     session_valid};
static const struct schema stats_schema = {stats_fields, NFIELDS(stats_fields), stats_valid};

static const char *const status_names[] = {
	[PR_SS_ACTIVE] = "active",
	[PR_SS_DELETED] = "deleted",
	[PR_SS_EXPIRED] = "expired",
};

const char *pr_sess_status_name(unsigned st)
{
	return st < NFIELDS(status_names) ? status_names[st] : "unknown";
}

/* ---- encoding ---- */

/*
 * Every string ends inside its array (a struct filled with strncpy or memcpy
 * may not, and packing it would read past it) and every number is within its
 * bound; then the record's own predicate.
 */
static int fields_ok(const struct schema *sc, const char *rec)
{
	for (size_t i = 0; i < sc->n; i++) {
		const struct pr_mp_field *f = &sc->fields[i];

		if (f->kind == PR_MP_STR && !memchr(rec + f->off, '\0', f->size))
			return 0;
		if (f->kind == PR_MP_UINT && pr_mp_load_uint(rec + f->off, f->size) > f->max)
			return 0;
	}
	return sc->valid(rec);
}

/* Every field is written, empty or zero included: one fixed key set per
 * version keeps records easy to compare and to read with redis-cli. */
static int encode(const struct schema *sc, const void *rec, char *buf, size_t cap)
{
	struct pr_mp_out o = {buf, cap, 0, 0};
	const char *r = rec;
	msgpack_packer pk;

	if (!fields_ok(sc, r))
		return -EINVAL;
	msgpack_packer_init(&pk, &o, pr_mp_out_write);
	msgpack_pack_map(&pk, (uint32_t)(1 + sc->n));
	pr_mp_put_uint(&pk, "v", PR_STATE_VERSION);
	for (size_t i = 0; i < sc->n; i++)
		pr_mp_put_field(&pk, &sc->fields[i], r);
	if (o.overflow || o.len > PR_STATE_MAX)
		return -ENOSPC;
	return (int)o.len;
}

int pr_session_encode(const struct pr_session *s, char *buf, size_t cap)
{
	return encode(&session_schema, s, buf, cap);
}

int pr_stats_encode(const struct pr_stats *s, char *buf, size_t cap)
{
	return encode(&stats_schema, s, buf, cap);
}

/* ---- decoding ---- */

/* Ownership: on the decoder's stack; rec is the caller's record. */
struct decoding {
	const struct schema *sc;
	char *rec;
};

/* A number of the right type (else -EBADMSG) within max (else -EPROTO: the
 * bytes are well formed, the value is what this version does not allow). */
static int get_bounded(const msgpack_object *v, uint64_t max, uint64_t *out)
{
	int err = pr_mp_get_uint(v, UINT64_MAX, out);

	if (err == 0 && *out > max)
		return -EPROTO;
	return err;
}

static int apply_field(const struct pr_mp_field *f, const msgpack_object *v, char *rec)
{
	uint64_t u;
	int err;

	if (f->kind == PR_MP_STR) {
		/* A repeated key must not leave the longer earlier value's tail
		 * behind its NUL: decoded records compare equal with memcmp. */
		memset(rec + f->off, 0, f->size);
		return pr_mp_get_str(v, rec + f->off, f->size);
	}
	if ((err = get_bounded(v, f->max, &u)) < 0)
		return err;
	pr_mp_store_uint(rec + f->off, f->size, u);
	return 0;
}

/* One map entry (a pr_mp_entry_fn on a struct decoding); unknown keys are
 * ignored (forward compatibility), a repeated key's last value wins. */
static int apply_entry(const msgpack_object *k, const msgpack_object *v, void *ctx)
{
	const struct decoding *d = ctx;
	uint64_t version;
	int err;

	if (pr_mp_key_is(k, "v")) {
		if ((err = pr_mp_get_uint(v, UINT64_MAX, &version)) < 0)
			return err;
		return version == PR_STATE_VERSION ? 0 : -EPROTO;
	}
	for (size_t i = 0; i < d->sc->n; i++)
		if (pr_mp_key_is(k, d->sc->fields[i].key))
			return apply_field(&d->sc->fields[i], v, d->rec);
	return 0;
}

/* The checks pr_decode makes, in the same order: size bound before msgpack-c
 * sees the bytes, then structure, then each field, then what is required. */
static int decode(const struct schema *sc, const char *buf, size_t len, void *rec)
{
	struct decoding d = {sc, rec};
	int err;

	if (len > PR_STATE_MAX)
		return -EMSGSIZE;
	if ((err = pr_mp_decode_map(buf, len, apply_entry, &d)) < 0)
		return err;
	return sc->valid(rec) ? 0 : -EPROTO;
}

int pr_session_decode(const char *buf, size_t len, struct pr_session *s)
{
	memset(s, 0, sizeof(*s));
	return decode(&session_schema, buf, len, s);
}

int pr_stats_decode(const char *buf, size_t len, struct pr_stats *s)
{
	memset(s, 0, sizeof(*s));
	return decode(&stats_schema, buf, len, s);
}

int pr_list_has(const char *list, const char *id)
{
	size_t n = strlen(id);

	/* Bounded by the list's length. */
	for (const char *p = list; n && (p = strstr(p, id)) != NULL; p += n)
		if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
			return 1;
	return 0;
}

int pr_cidr_parse(const char *s, size_t n, struct pr_cidr *c)
{
	char buf[72], *end;
	const char *slash;
	size_t alen;
	long bits;

	if (n == 0 || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n);
	buf[n] = '\0';
	slash = strchr(buf, '/');
	alen = slash ? (size_t)(slash - buf) : n;
	if (alen == 0 || alen >= 64)
		return -EINVAL;
	buf[alen] = '\0';
	c->v6 = memchr(buf, ':', alen) != NULL;
	if (inet_pton(c->v6 ? AF_INET6 : AF_INET, buf, c->addr) != 1)
		return -EINVAL;
	bits = c->v6 ? 128 : 32;
	if (slash) {
		bits = strtol(slash + 1, &end, 10);
		if (slash[1] == '\0' || *end != '\0' || bits < 0 || bits > (c->v6 ? 128 : 32))
			return -EINVAL;
	}
	c->bits = (uint8_t)bits;
	return 0;
}
