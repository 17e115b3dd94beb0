/*
 * test_pr_state.c: session-state and stats records survive encode then
 * decode, full and minimal; every malformed record is refused with its own
 * error class (hand-built with msgpack-c's packer); every truncation and
 * every too-small output buffer fails cleanly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include <msgpack.h>

#include "pr_state.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- records ---- */

/* Every field set, every string at its longest. */
static void full_session(struct pr_session *s)
{
	memset(s, 0, sizeof(*s));
	memset(s->sid, 'A', sizeof(s->sid) - 1);
	s->rev = UINT64_MAX;
	s->epoch = UINT64_MAX - 1;
	s->status = PR_SS_EXPIRED;
	s->proto = PR_PROTO_TCP;
	s->port = UINT16_MAX;
	memset(s->name, 'n', sizeof(s->name) - 1);
	memset(s->domain, 'd', sizeof(s->domain) - 1);
	s->created = 1700000000;
	s->expires = 1800000000;
	memset(s->key_id, 'k', sizeof(s->key_id) - 1);
	s->auth = PR_AUTH_BEARER;
	memset(s->auth_user, 'u', sizeof(s->auth_user) - 1);
	memset(s->auth_mac, 'f', sizeof(s->auth_mac) - 1);
	s->lt_port = UINT16_MAX;
	memset(s->allow_ips, '1', sizeof(s->allow_ips) - 1);
	memset(s->deny_ips, '2', sizeof(s->deny_ips) - 1);
	memset(s->revoked_shares, 's', sizeof(s->revoked_shares) - 1);
	memset(s->replaced_by, 'r', sizeof(s->replaced_by) - 1);
	s->domain_verified = 1;
	s->lim_req = (struct pr_limit){UINT64_MAX, PR_LIMIT_WINDOW_MAX};
	s->lim_bw = (struct pr_limit){UINT64_MAX - 1, PR_LIMIT_WINDOW_MAX};
	s->lim_tcp = (struct pr_limit){UINT64_MAX - 2, PR_LIMIT_WINDOW_MAX};
	s->key_req = (struct pr_limit){UINT64_MAX - 3, PR_LIMIT_WINDOW_MAX};
}

/* Only what is required: sid, rev and name. */
static void minimal_session(struct pr_session *s)
{
	memset(s, 0, sizeof(*s));
	strcpy(s->sid, "abcd1234");
	s->rev = 1;
	strcpy(s->name, "a");
}

static void full_stats(struct pr_stats *s)
{
	memset(s, 0, sizeof(*s));
	memset(s->sid, 'z', sizeof(s->sid) - 1);
	memset(s->relay, 'r', sizeof(s->relay) - 1);
	s->at_ms = 1700000000123ULL;
	s->connections = UINT64_MAX;
	s->live = 3;
	s->requests = 1ULL << 40;
	s->bytes_in = 123456789;
	s->bytes_out = UINT64_MAX - 7;
}

static void minimal_stats(struct pr_stats *s)
{
	memset(s, 0, sizeof(*s));
	strcpy(s->sid, "abcd1234");
	strcpy(s->relay, "r");
}

/* ---- round trips ---- */

static void session_round_trip(const struct pr_session *in)
{
	char buf[PR_STATE_MAX];
	struct pr_session out;
	int n = pr_session_encode(in, buf, sizeof(buf));

	assert_true(n > 0);
	memset(&out, 0x5a, sizeof(out)); /* decode must clear what it does not set */
	assert_int_equal(pr_session_decode(buf, (size_t)n, &out), 0);
	assert_memory_equal(&out, in, sizeof(out));
}

static void stats_round_trip(const struct pr_stats *in)
{
	char buf[PR_STATE_MAX];
	struct pr_stats out;
	int n = pr_stats_encode(in, buf, sizeof(buf));

	assert_true(n > 0);
	memset(&out, 0x5a, sizeof(out));
	assert_int_equal(pr_stats_decode(buf, (size_t)n, &out), 0);
	assert_memory_equal(&out, in, sizeof(out));
}

static void full_and_minimal_sessions_round_trip(void **state)
{
	struct pr_session s;

	(void)state;
	full_session(&s);
	session_round_trip(&s);
	minimal_session(&s);
	session_round_trip(&s);
	/* A realistic one, with a custom domain and basic auth. */
	strcpy(s.sid, "Ab3dEf7h9k");
	s.rev = 42;
	s.epoch = 3;
	s.port = 3000;
	strcpy(s.name, "my-app");
	strcpy(s.domain, "app.example.com");
	s.auth = PR_AUTH_BASIC;
	strcpy(s.auth_user, "alice");
	memset(s.auth_mac, '0', 64);
	session_round_trip(&s);
}

static void full_and_minimal_stats_round_trip(void **state)
{
	struct pr_stats s;

	(void)state;
	full_stats(&s);
	stats_round_trip(&s);
	minimal_stats(&s);
	stats_round_trip(&s);
}

/* The largest records fit the documented bound with room to spare for
 * fields a later version adds. */
static void largest_records_fit_the_bound(void **state)
{
	char buf[PR_STATE_MAX];
	struct pr_session s;
	struct pr_stats st;

	(void)state;
	full_session(&s);
	full_stats(&st);
	assert_in_range(pr_session_encode(&s, buf, sizeof(buf)), 1, PR_STATE_MAX);
	assert_in_range(pr_stats_encode(&st, buf, sizeof(buf)), 1, PR_STATE_MAX / 2);
}

/* ---- encoding errors ---- */

static void encode_fails_at_every_too_small_cap(void **state)
{
	char buf[PR_STATE_MAX], small[PR_STATE_MAX];
	struct pr_session s;
	struct pr_stats st;
	int n;

	(void)state;
	full_session(&s);
	n = pr_session_encode(&s, buf, sizeof(buf));
	for (int cap = 0; cap < n; cap++)
		assert_int_equal(pr_session_encode(&s, small, (size_t)cap), -ENOSPC);
	assert_int_equal(pr_session_encode(&s, small, (size_t)n), n);
	assert_memory_equal(small, buf, (size_t)n);

	full_stats(&st);
	n = pr_stats_encode(&st, buf, sizeof(buf));
	for (int cap = 0; cap < n; cap++)
		assert_int_equal(pr_stats_encode(&st, small, (size_t)cap), -ENOSPC);
	assert_int_equal(pr_stats_encode(&st, small, (size_t)n), n);
}

static void encode_refuses_invalid_sessions(void **state)
{
	char buf[PR_STATE_MAX];
	struct pr_session s;

	(void)state;
	/* Each case breaks one thing in an otherwise valid record. */
	for (int c = 0; c < 13; c++) {
		minimal_session(&s);
		switch (c) {
		case 0: strcpy(s.sid, "short"); break;
		case 1: strcpy(s.sid, "abcd-234"); break;
		case 2: s.rev = 0; break;
		case 3: s.name[0] = '\0'; break;
		case 4: strcpy(s.name, "Upper"); break;
		case 5: s.status = PR_SS_EXPIRED + 1; break;
		case 6: s.proto = PR_PROTO_TCP + 1; break;
		case 7: s.auth = PR_AUTH_BEARER + 1; break;
		case 8: memset(s.domain, 'd', sizeof(s.domain)); break; /* no NUL */
		case 9: memset(s.auth_mac, 'f', sizeof(s.auth_mac)); break;
		case 10: s.lim_req = (struct pr_limit){5, 0}; break; /* a limit needs a window */
		case 11: s.lim_bw = (struct pr_limit){5, PR_LIMIT_WINDOW_MAX + 1}; break;
		case 12: s.key_req = (struct pr_limit){1, 0}; break;
		}
		if (pr_session_encode(&s, buf, sizeof(buf)) != -EINVAL)
			fail_msg("invalid session %d encoded", c);
	}
}

static void encode_refuses_invalid_stats(void **state)
{
	char buf[PR_STATE_MAX];
	struct pr_stats s;

	(void)state;
	minimal_stats(&s);
	s.sid[0] = '\0';
	assert_int_equal(pr_stats_encode(&s, buf, sizeof(buf)), -EINVAL);
	minimal_stats(&s);
	strcpy(s.sid, "not/valid");
	assert_int_equal(pr_stats_encode(&s, buf, sizeof(buf)), -EINVAL);
	minimal_stats(&s);
	s.relay[0] = '\0';
	assert_int_equal(pr_stats_encode(&s, buf, sizeof(buf)), -EINVAL);
	minimal_stats(&s);
	memset(s.relay, 'r', sizeof(s.relay));
	assert_int_equal(pr_stats_encode(&s, buf, sizeof(buf)), -EINVAL);
}

/* ---- hand-built records ---- */

enum kv_kind { KV_UINT, KV_STR, KV_NEG, KV_NIL, KV_ARRAY, KV_BIN };

/* One map entry to pack; s may hold NULs when len is given. */
struct kv {
	const char *key;
	enum kv_kind kind;
	uint64_t u;
	const char *s;
	size_t len; /* KV_STR: 0 means strlen(s) */
};

#define U(k, v)                                                                                    \
	{                                                                                          \
		k, KV_UINT, v, NULL, 0                                                             \
	}
#define S(k, v)                                                                                    \
	{                                                                                          \
		k, KV_STR, 0, v, 0                                                                 \
	}

/* A valid minimal session and stats record, field by field. */
static const struct kv base_session[] = {
	U("v", 1),
	S("sid", "abcd1234"),
	U("rev", 9),
	S("name", "demo"),
};
static const struct kv base_stats[] = {
	U("v", 1),
	S("sid", "abcd1234"),
	S("relay", "relay-1"),
	U("conn", 5),
};

static void pack_kv(msgpack_packer *pk, const struct kv *e)
{
	size_t len = e->s && e->len == 0 ? strlen(e->s) : e->len;

	msgpack_pack_str_with_body(pk, e->key, strlen(e->key));
	switch (e->kind) {
	case KV_UINT: msgpack_pack_uint64(pk, e->u); break;
	case KV_STR: msgpack_pack_str_with_body(pk, e->s, len); break;
	case KV_NEG: msgpack_pack_int64(pk, -1); break;
	case KV_NIL: msgpack_pack_nil(pk); break;
	case KV_ARRAY: msgpack_pack_array(pk, 0); break;
	case KV_BIN: msgpack_pack_bin_with_body(pk, "x", 1); break;
	}
}

/*
 * Pack base minus the entry named skip (NULL: none), then extra, as one map
 * into buf. Later entries win over earlier ones with the same key, so extra
 * overrides a base field. Returns the length.
 */
static size_t build(char *buf, size_t cap, const struct kv *base, size_t nbase, const char *skip,
		    const struct kv *extra, size_t nextra)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n = 0;

	for (size_t i = 0; i < nbase; i++)
		n += !(skip && strcmp(base[i].key, skip) == 0);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, (uint32_t)(n + nextra));
	for (size_t i = 0; i < nbase; i++)
		if (!(skip && strcmp(base[i].key, skip) == 0))
			pack_kv(&pk, &base[i]);
	for (size_t i = 0; i < nextra; i++)
		pack_kv(&pk, &extra[i]);
	assert_true(sb.size <= cap);
	memcpy(buf, sb.data, sb.size);
	n = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return n;
}

/* Decode base plus one extra entry as a session and as stats. */
static int session_with(const struct kv *extra, struct pr_session *s)
{
	char buf[PR_STATE_MAX];
	size_t n = build(buf, sizeof(buf), base_session, ARRAY_LEN(base_session), NULL, extra, 1);

	return pr_session_decode(buf, n, s);
}

static int stats_with(const struct kv *extra, struct pr_stats *s)
{
	char buf[PR_STATE_MAX];
	size_t n = build(buf, sizeof(buf), base_stats, ARRAY_LEN(base_stats), NULL, extra, 1);

	return pr_stats_decode(buf, n, s);
}

static const char *const session_str_keys[] = {"sid", "name", "dom", "key", "au_u", "au_h"};
static const char *const session_uint_keys[] = {"v",	"rev", "ep", "st", "pr",
						"port", "cr",  "ex", "au"};
static const char *const stats_str_keys[] = {"sid", "relay"};
static const char *const stats_uint_keys[] = {"v", "at", "conn", "live", "req", "bin", "bout"};

/* A hand-built record with only the required fields decodes, the rest zero;
 * a record without "v" is read as version 1. */
static void minimal_hand_built_records_decode(void **state)
{
	char buf[PR_STATE_MAX];
	struct pr_session s, want;
	struct pr_stats st;
	size_t n;

	(void)state;
	n = build(buf, sizeof(buf), base_session, ARRAY_LEN(base_session), "v", NULL, 0);
	assert_int_equal(pr_session_decode(buf, n, &s), 0);
	memset(&want, 0, sizeof(want));
	strcpy(want.sid, "abcd1234");
	want.rev = 9;
	strcpy(want.name, "demo");
	assert_memory_equal(&s, &want, sizeof(s));
	n = build(buf, sizeof(buf), base_stats, ARRAY_LEN(base_stats), NULL, NULL, 0);
	assert_int_equal(pr_stats_decode(buf, n, &st), 0);
	assert_string_equal(st.relay, "relay-1");
	assert_int_equal(st.connections, 5);
}

static void wrong_value_types_are_bad_messages(void **state)
{
	static const enum kv_kind not_str[] = {KV_UINT, KV_NEG, KV_NIL, KV_ARRAY, KV_BIN};
	static const enum kv_kind not_uint[] = {KV_STR, KV_NEG, KV_NIL, KV_ARRAY, KV_BIN};
	struct pr_session s;
	struct pr_stats st;

	(void)state;
	for (size_t k = 0; k < ARRAY_LEN(not_str); k++) {
		for (size_t i = 0; i < ARRAY_LEN(session_str_keys); i++) {
			struct kv e = {session_str_keys[i], not_str[k], 1, NULL, 0};

			assert_int_equal(session_with(&e, &s), -EBADMSG);
		}
		for (size_t i = 0; i < ARRAY_LEN(stats_str_keys); i++) {
			struct kv e = {stats_str_keys[i], not_str[k], 1, NULL, 0};

			assert_int_equal(stats_with(&e, &st), -EBADMSG);
		}
	}
	for (size_t k = 0; k < ARRAY_LEN(not_uint); k++) {
		for (size_t i = 0; i < ARRAY_LEN(session_uint_keys); i++) {
			struct kv e = {session_uint_keys[i], not_uint[k], 0, "1", 0};

			assert_int_equal(session_with(&e, &s), -EBADMSG);
		}
		for (size_t i = 0; i < ARRAY_LEN(stats_uint_keys); i++) {
			struct kv e = {stats_uint_keys[i], not_uint[k], 0, "1", 0};

			assert_int_equal(stats_with(&e, &st), -EBADMSG);
		}
	}
}

static void strings_with_a_nul_are_bad_messages(void **state)
{
	const struct kv e = {"dom", KV_STR, 0, "a\0b", 3};
	struct pr_session s;

	(void)state;
	assert_int_equal(session_with(&e, &s), -EBADMSG);
}

/* A string exactly as long as its field (no room for the NUL) is refused. */
static void strings_longer_than_their_field_are_refused(void **state)
{
	static const struct {
		const char *key;
		size_t size;
	} sess[] =
		{
			{"sid", sizeof(((struct pr_session *)0)->sid)},
			{"name", sizeof(((struct pr_session *)0)->name)},
			{"dom", sizeof(((struct pr_session *)0)->domain)},
			{"key", sizeof(((struct pr_session *)0)->key_id)},
			{"au_u", sizeof(((struct pr_session *)0)->auth_user)},
			{"au_h", sizeof(((struct pr_session *)0)->auth_mac)},
		},
	  stats[] = {
		  {"sid", sizeof(((struct pr_stats *)0)->sid)},
		  {"relay", sizeof(((struct pr_stats *)0)->relay)},
	  };
	char text[512];
	struct pr_session s;
	struct pr_stats st;

	(void)state;
	memset(text, 'a', sizeof(text));
	for (size_t i = 0; i < ARRAY_LEN(sess); i++) {
		struct kv e = {sess[i].key, KV_STR, 0, text, sess[i].size};

		assert_int_equal(session_with(&e, &s), -EMSGSIZE);
	}
	for (size_t i = 0; i < ARRAY_LEN(stats); i++) {
		struct kv e = {stats[i].key, KV_STR, 0, text, stats[i].size};

		assert_int_equal(stats_with(&e, &st), -EMSGSIZE);
	}
}

static void missing_required_fields_are_protocol_errors(void **state)
{
	static const char *const sess_required[] = {"sid", "rev", "name"};
	static const char *const stats_required[] = {"sid", "relay"};
	char buf[PR_STATE_MAX];
	struct pr_session s;
	struct pr_stats st;
	size_t n;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(sess_required); i++) {
		n = build(buf, sizeof(buf), base_session, ARRAY_LEN(base_session), sess_required[i],
			  NULL, 0);
		assert_int_equal(pr_session_decode(buf, n, &s), -EPROTO);
	}
	for (size_t i = 0; i < ARRAY_LEN(stats_required); i++) {
		n = build(buf, sizeof(buf), base_stats, ARRAY_LEN(base_stats), stats_required[i],
			  NULL, 0);
		assert_int_equal(pr_stats_decode(buf, n, &st), -EPROTO);
	}
	/* An empty map has none of them. */
	assert_int_equal(pr_session_decode("\x80", 1, &s), -EPROTO);
	assert_int_equal(pr_stats_decode("\x80", 1, &st), -EPROTO);
}

/* Well-formed values this version does not allow: -EPROTO, not -EBADMSG. */
static void invalid_values_are_protocol_errors(void **state)
{
	static const struct kv bad_sess[] = {
		S("sid", "short"),
		S("sid", "abcd-234"),
		S("sid", ""),
		U("rev", 0),
		S("name", ""),
		S("name", "Upper"),
		S("name", "-x"),
		U("st", PR_SS_EXPIRED + 1),
		U("pr", PR_PROTO_TCP + 1),
		U("port", 65536),
		U("au", PR_AUTH_BEARER + 1),
		U("au", UINT64_MAX),
		U("v", 0),
		U("v", 2),
		U("v", UINT64_MAX),
		U("lrq", 5), /* a limit without its window */
		U("ltcw", PR_LIMIT_WINDOW_MAX + 1),
	};
	static const struct kv bad_stats[] = {
		S("sid", "abc"),
		S("relay", ""),
		U("v", 2),
	};
	struct pr_session s;
	struct pr_stats st;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(bad_sess); i++)
		if (session_with(&bad_sess[i], &s) != -EPROTO)
			fail_msg("session entry %zu (%s) not refused as -EPROTO", i,
				 bad_sess[i].key);
	for (size_t i = 0; i < ARRAY_LEN(bad_stats); i++)
		if (stats_with(&bad_stats[i], &st) != -EPROTO)
			fail_msg("stats entry %zu (%s) not refused as -EPROTO", i,
				 bad_stats[i].key);
}

/* Bounds are inclusive: the largest allowed values decode. */
static void largest_allowed_values_decode(void **state)
{
	static const struct kv edge[] = {
		U("st", PR_SS_EXPIRED),	 U("pr", PR_PROTO_TCP), U("port", 65535),
		U("au", PR_AUTH_BEARER), U("ex", UINT64_MAX),
	};
	struct pr_session s;

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(edge); i++)
		assert_int_equal(session_with(&edge[i], &s), 0);
	assert_int_equal(s.expires, UINT64_MAX);
}

static void unknown_keys_are_ignored(void **state)
{
	static const struct kv extra[] = {
		S("future", "x"),
		{"nested", KV_ARRAY, 0, NULL, 0},
		U("zz", UINT64_MAX),
		{"neg", KV_NEG, 0, NULL, 0},
	};
	char buf[PR_STATE_MAX];
	struct pr_session s;
	struct pr_stats st;
	size_t n;

	(void)state;
	n = build(buf, sizeof(buf), base_session, ARRAY_LEN(base_session), NULL, extra,
		  ARRAY_LEN(extra));
	assert_int_equal(pr_session_decode(buf, n, &s), 0);
	assert_string_equal(s.name, "demo");
	n = build(buf, sizeof(buf), base_stats, ARRAY_LEN(base_stats), NULL, extra,
		  ARRAY_LEN(extra));
	assert_int_equal(pr_stats_decode(buf, n, &st), 0);
	assert_int_equal(st.connections, 5);
}

/* The last of repeated keys wins, and a shorter value leaves no tail of the
 * longer one behind its NUL (decoded records compare with memcmp). */
static void repeated_keys_take_the_last_value_whole(void **state)
{
	static const struct kv extra[] = {S("dom", "long.example.com"), S("dom", "a.b")};
	char buf[PR_STATE_MAX];
	struct pr_session s;
	size_t n = build(buf, sizeof(buf), base_session, ARRAY_LEN(base_session), NULL, extra,
			 ARRAY_LEN(extra));

	(void)state;
	assert_int_equal(pr_session_decode(buf, n, &s), 0);
	assert_string_equal(s.domain, "a.b");
	for (size_t i = 4; i < sizeof(s.domain); i++)
		assert_int_equal(s.domain[i], 0);
}

static void non_maps_and_bad_keys_are_bad_messages(void **state)
{
	static const char *const bad[] = {
		"\x90",		/* empty array */
		"\x01",		/* integer */
		"\xa1x",	/* string */
		"\xc0",		/* nil */
		"\x81\x01\x01", /* integer key */
		"\x81\xc0\x01", /* nil key */
		"\xc1",		/* never used */
	};
	struct pr_session s;
	struct pr_stats st;

	(void)state;
	assert_int_equal(pr_session_decode("", 0, &s), -EBADMSG);
	assert_int_equal(pr_stats_decode("", 0, &st), -EBADMSG);
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		assert_int_equal(pr_session_decode(bad[i], strlen(bad[i]), &s), -EBADMSG);
		assert_int_equal(pr_stats_decode(bad[i], strlen(bad[i]), &st), -EBADMSG);
	}
}

static void trailing_bytes_are_bad_messages(void **state)
{
	char buf[PR_STATE_MAX];
	struct pr_session s;
	struct pr_stats st;
	int n;

	(void)state;
	minimal_session(&s);
	n = pr_session_encode(&s, buf, sizeof(buf) - 1);
	buf[n] = (char)0xc0;
	assert_int_equal(pr_session_decode(buf, (size_t)n + 1, &s), -EBADMSG);
	minimal_stats(&st);
	n = pr_stats_encode(&st, buf, sizeof(buf) - 1);
	buf[n] = 0;
	assert_int_equal(pr_stats_decode(buf, (size_t)n + 1, &st), -EBADMSG);
}

/* Every proper prefix of a record is refused, whichever byte it stops in. */
static void every_truncation_is_a_bad_message(void **state)
{
	char buf[PR_STATE_MAX];
	struct pr_session s;
	struct pr_stats st;
	int n;

	(void)state;
	full_session(&s);
	n = pr_session_encode(&s, buf, sizeof(buf));
	for (int len = 0; len < n; len++)
		assert_int_equal(pr_session_decode(buf, (size_t)len, &s), -EBADMSG);
	full_stats(&st);
	n = pr_stats_encode(&st, buf, sizeof(buf));
	for (int len = 0; len < n; len++)
		assert_int_equal(pr_stats_decode(buf, (size_t)len, &st), -EBADMSG);
}

/* msgpack-c sizes allocations from declared counts: a few bytes declaring
 * 2^32 entries or a 1 MiB string must be refused before it unpacks them. */
static void declared_sizes_beyond_the_buffer_are_refused(void **state)
{
	const char arr[] = {(char)0x81, (char)0xa1, 'x',	(char)0xdd,
			    (char)0xff, (char)0xff, (char)0xff, (char)0xff};
	const char map[] = {(char)0xdf, (char)0xff, (char)0xff, (char)0xff, (char)0xff};
	const char str[] = {(char)0x81, (char)0xa3, 'd', 'o', 'm', (char)0xdb, 0, 0x10, 0, 0};
	struct pr_session s;
	struct pr_stats st;

	(void)state;
	assert_int_equal(pr_session_decode(arr, sizeof(arr), &s), -EBADMSG);
	assert_int_equal(pr_session_decode(map, sizeof(map), &s), -EBADMSG);
	assert_int_equal(pr_session_decode(str, sizeof(str), &s), -EBADMSG);
	assert_int_equal(pr_stats_decode(arr, sizeof(arr), &st), -EBADMSG);
	assert_int_equal(pr_stats_decode(map, sizeof(map), &st), -EBADMSG);
}

/* A record with an unknown value nested `depth` arrays deep, innermost
 * holding one integer. The map is level 0, so the integer is at depth + 1. */
static size_t nested(char *buf, size_t cap, int depth)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, ARRAY_LEN(base_session) + 1);
	for (size_t i = 0; i < ARRAY_LEN(base_session); i++)
		pack_kv(&pk, &base_session[i]);
	msgpack_pack_str_with_body(&pk, "deep", 4);
	for (int i = 0; i < depth; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_uint8(&pk, 1);
	assert_true(sb.size <= cap);
	memcpy(buf, sb.data, sb.size);
	n = sb.size;
	msgpack_sbuffer_destroy(&sb);
	return n;
}

static void nesting_deeper_than_8_is_refused(void **state)
{
	char buf[PR_STATE_MAX];
	struct pr_session s;
	size_t n;

	(void)state;
	n = nested(buf, sizeof(buf), 7); /* innermost value at level 8 */
	assert_int_equal(pr_session_decode(buf, n, &s), 0);
	n = nested(buf, sizeof(buf), 8); /* level 9 */
	assert_int_equal(pr_session_decode(buf, n, &s), -EBADMSG);
	n = nested(buf, sizeof(buf), 1000);
	assert_int_equal(pr_session_decode(buf, n, &s), -EBADMSG);
}

/* A valid session padded with an unknown string to exactly len bytes. */
static size_t padded(char *buf, size_t cap, size_t len)
{
	static char pad[PR_STATE_MAX + 64];
	struct kv e = {"pad", KV_STR, 0, pad, PR_STATE_MAX - 100};
	size_t n;

	memset(pad, 'p', sizeof(pad));
	n = build(buf, cap, base_session, ARRAY_LEN(base_session), NULL, &e, 1);
	e.len += len - n; /* a str16 header either way: the length moves one for one */
	n = build(buf, cap, base_session, ARRAY_LEN(base_session), NULL, &e, 1);
	assert_int_equal(n, len);
	return n;
}

/* Larger than any record this version writes: refused before msgpack-c
 * sees it; up to the bound, a record is read whatever it carries. */
static void records_beyond_the_size_bound_are_refused(void **state)
{
	static char buf[PR_STATE_MAX + 64];
	struct pr_session s;
	struct pr_stats st;
	size_t n;

	(void)state;
	n = padded(buf, sizeof(buf), PR_STATE_MAX);
	assert_int_equal(pr_session_decode(buf, n, &s), 0);
	n = padded(buf, sizeof(buf), PR_STATE_MAX + 1);
	assert_int_equal(pr_session_decode(buf, n, &s), -EMSGSIZE);
	assert_int_equal(pr_stats_decode(buf, n, &st), -EMSGSIZE);
}

static void limits_parse_as_operators_write_them(void **state)
{
	static const struct {
		const char *s;
		uint64_t limit;
		uint32_t window;
	} ok[] = {
		{"1000/1m", 1000, 60}, {"1Gi/1h", 1ULL << 30, 3600}, {"10/3600", 10, 3600},
		{"5k/10s", 5000, 10},  {"2M/1d", 2000000, 86400},    {"off", 0, 0},
		{"0", 0, 0},	       {"7/604800", 7, 604800},
	};
	static const char *const bad[] = {"",	   "1000",   "/60",   "10/0",
					  "10/1w", "10/8d",  "x/1m",  "10/1m ",
					  "-1/1m", "1Ti/1h", "10//1", "99999999999999999999/1s"};
	struct pr_limit l;
	char why[200];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(ok); i++) {
		assert_int_equal(pr_limit_parse(ok[i].s, &l, why, sizeof(why)), 0);
		assert_true(l.limit == ok[i].limit && l.window == ok[i].window);
		assert_true(pr_limit_valid(&l));
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		why[0] = '\0';
		if (pr_limit_parse(bad[i], &l, why, sizeof(why)) != -EINVAL)
			fail_msg("limit \"%s\" accepted", bad[i]);
		assert_non_null(strstr(why, "COUNT/WINDOW"));
	}
}

static void status_names(void **state)
{
	(void)state;
	assert_string_equal(pr_sess_status_name(PR_SS_ACTIVE), "active");
	assert_string_equal(pr_sess_status_name(PR_SS_DELETED), "deleted");
	assert_string_equal(pr_sess_status_name(PR_SS_EXPIRED), "expired");
	assert_string_equal(pr_sess_status_name(3), "unknown");
	assert_string_equal(pr_sess_status_name(~0u), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(full_and_minimal_sessions_round_trip),
		cmocka_unit_test(full_and_minimal_stats_round_trip),
		cmocka_unit_test(largest_records_fit_the_bound),
		cmocka_unit_test(encode_fails_at_every_too_small_cap),
		cmocka_unit_test(encode_refuses_invalid_sessions),
		cmocka_unit_test(encode_refuses_invalid_stats),
		cmocka_unit_test(minimal_hand_built_records_decode),
		cmocka_unit_test(wrong_value_types_are_bad_messages),
		cmocka_unit_test(strings_with_a_nul_are_bad_messages),
		cmocka_unit_test(strings_longer_than_their_field_are_refused),
		cmocka_unit_test(missing_required_fields_are_protocol_errors),
		cmocka_unit_test(invalid_values_are_protocol_errors),
		cmocka_unit_test(largest_allowed_values_decode),
		cmocka_unit_test(unknown_keys_are_ignored),
		cmocka_unit_test(repeated_keys_take_the_last_value_whole),
		cmocka_unit_test(non_maps_and_bad_keys_are_bad_messages),
		cmocka_unit_test(trailing_bytes_are_bad_messages),
		cmocka_unit_test(every_truncation_is_a_bad_message),
		cmocka_unit_test(declared_sizes_beyond_the_buffer_are_refused),
		cmocka_unit_test(nesting_deeper_than_8_is_refused),
		cmocka_unit_test(records_beyond_the_size_bound_are_refused),
		cmocka_unit_test(status_names),
		cmocka_unit_test(limits_parse_as_operators_write_them),
	};
	return cmocka_run_group_tests_name("pr_state", tests, NULL, NULL);
}
