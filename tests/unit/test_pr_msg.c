/*
 * test_pr_msg.c: every control message survives encode then decode, frames
 * are delimited exactly, and malformed input is refused with the right error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include <msgpack.h>

#include "pr_msg.h"

static void round_trip(const struct pr_msg *in, struct pr_msg *out)
{
	char buf[PR_FRAME_HDR + PR_FRAME_MAX];
	int n = pr_encode(in, buf, sizeof(buf));

	assert_true(n > PR_FRAME_HDR);
	assert_int_equal(pr_frame_len(buf, (size_t)n), n);
	assert_int_equal(pr_frame_len(buf, (size_t)n - 1), 0);
	assert_int_equal(pr_decode(buf + PR_FRAME_HDR, (size_t)n - PR_FRAME_HDR, out), 0);
	assert_int_equal(out->type, in->type);
}

static void every_type_round_trips(void **state)
{
	struct pr_msg in, out;

	(void)state;
	memset(&in, 0, sizeof(in));
	in.type = PR_HELLO;
	in.version = PR_VERSION;
	in.proto = PR_PROTO_TCP;
	strcpy(in.token, "tok-\xc3\xa9");
	strcpy(in.name, "demo");
	strcpy(in.session, "s1");
	in.epoch = UINT64_MAX;
	round_trip(&in, &out);
	assert_int_equal(out.version, PR_VERSION);
	assert_int_equal(out.proto, PR_PROTO_TCP);
	assert_string_equal(out.token, in.token);
	assert_string_equal(out.name, "demo");
	assert_true(out.epoch == UINT64_MAX);

	memset(&in, 0, sizeof(in));
	in.type = PR_BOUND;
	strcpy(in.url, "http://demo.localhost:8080/");
	strcpy(in.key, "0123456789abcdef");
	strcpy(in.session, "abcd1234");
	in.port = 20001;
	in.heartbeat_ms = 5000;
	in.epoch = 7;
	round_trip(&in, &out);
	assert_string_equal(out.url, in.url);
	assert_string_equal(out.key, in.key);
	assert_int_equal(out.port, 20001);
	assert_int_equal(out.heartbeat_ms, 5000);
	assert_int_equal(out.epoch, 7);

	memset(&in, 0, sizeof(in));
	in.type = PR_LINK;
	in.version = PR_VERSION;
	in.epoch = 1700000000;
	in.code = 1;
	strcpy(in.token, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
	strcpy(in.text, "2001:db8::1");
	round_trip(&in, &out);
	assert_string_equal(out.token, in.token);
	assert_string_equal(out.text, "2001:db8::1");
	assert_true(out.epoch == 1700000000 && out.code == 1 && out.version == PR_VERSION);
	assert_string_equal(pr_type_name(PR_LINK), "link");

	for (enum pr_type t = PR_ERROR; t < PR_TYPE_MAX; t++) {
		memset(&in, 0, sizeof(in));
		in.type = t;
		in.code = PR_E_NAME_TAKEN;
		in.count = 3;
		in.nonce = 0x1122334455667788ULL;
		strcpy(in.text, "name taken");
		strcpy(in.key, "k");
		round_trip(&in, &out);
	}
}

/* Every field set to a value of its own, so each type's frame shows exactly
 * which fields it carries. */
static void fill_every_field(struct pr_msg *m, enum pr_type t)
{
	memset(m, 0, sizeof(*m));
	m->type = t;
	m->version = PR_VERSION;
	m->proto = PR_PROTO_TCP;
	strcpy(m->token, "tok");
	strcpy(m->name, "demo");
	strcpy(m->session, "abcd1234");
	m->epoch = 0x0102030405ULL;
	strcpy(m->key, "k1");
	strcpy(m->url, "http://demo.localhost/");
	m->port = 20001;
	m->count = 3;
	m->heartbeat_ms = 6667;
	m->nonce = 0x1122334455667788ULL;
	m->code = PR_E_DRAIN;
	strcpy(m->text, "bye");
}

/* The frames of fill_every_field(), as the encoder wrote them before its
 * field lists became tables (commit b278aef): the wire format never moves. */
static const struct {
	size_t len;
	const char *bytes;
} recorded[PR_TYPE_MAX] = {
	[PR_HELLO] = {66, "\x00\x00\x00\x3e\x87\xa1\x74\x01\xa1\x76\x01\xa5\x70\x72\x6f\x74"
			  "\x6f\x01\xa5\x74\x6f\x6b\x65\x6e\xa3\x74\x6f\x6b\xa4\x6e\x61\x6d"
			  "\x65\xa4\x64\x65\x6d\x6f\xa3\x73\x69\x64\xa8\x61\x62\x63\x64\x31"
			  "\x32\x33\x34\xa5\x65\x70\x6f\x63\x68\xcf\x00\x00\x00\x01\x02\x03"
			  "\x04\x05"},
	[PR_BOUND] = {101, "\x00\x00\x00\x61\x89\xa1\x74\x02\xa5\x70\x72\x6f\x74\x6f\x01\xa4"
			   "\x6e\x61\x6d\x65\xa4\x64\x65\x6d\x6f\xa3\x73\x69\x64\xa8\x61\x62"
			   "\x63\x64\x31\x32\x33\x34\xa5\x65\x70\x6f\x63\x68\xcf\x00\x00\x00"
			   "\x01\x02\x03\x04\x05\xa3\x6b\x65\x79\xa2\x6b\x31\xa3\x75\x72\x6c"
			   "\xb6\x68\x74\x74\x70\x3a\x2f\x2f\x64\x65\x6d\x6f\x2e\x6c\x6f\x63"
			   "\x61\x6c\x68\x6f\x73\x74\x2f\xa4\x70\x6f\x72\x74\xcd\x4e\x21\xa2"
			   "\x68\x62\xcd\x1a\x0b"},
	[PR_ERROR] = {23, "\x00\x00\x00\x13\x83\xa1\x74\x03\xa4\x63\x6f\x64\x65\x08\xa4\x74"
			  "\x65\x78\x74\xa3\x62\x79\x65"},
	[PR_OPEN] = {11, "\x00\x00\x00\x07\x82\xa1\x74\x04\xa1\x6e\x03"},
	[PR_PING] = {23, "\x00\x00\x00\x13\x82\xa1\x74\x05\xa5\x6e\x6f\x6e\x63\x65\xcf\x11"
			 "\x22\x33\x44\x55\x66\x77\x88"},
	[PR_PONG] = {23, "\x00\x00\x00\x13\x82\xa1\x74\x06\xa5\x6e\x6f\x6e\x63\x65\xcf\x11"
			 "\x22\x33\x44\x55\x66\x77\x88"},
	[PR_GOAWAY] = {23, "\x00\x00\x00\x13\x83\xa1\x74\x07\xa4\x63\x6f\x64\x65\x08\xa4\x74"
			   "\x65\x78\x74\xa3\x62\x79\x65"},
	[PR_DATA_HELLO] = {46, "\x00\x00\x00\x2a\x85\xa1\x74\x08\xa1\x76\x01\xa3\x73\x69\x64\xa8"
			       "\x61\x62\x63\x64\x31\x32\x33\x34\xa5\x65\x70\x6f\x63\x68\xcf\x00"
			       "\x00\x00\x01\x02\x03\x04\x05\xa3\x6b\x65\x79\xa2\x6b\x31"},
	[PR_START] = {23, "\x00\x00\x00\x13\x83\xa1\x74\x09\xa4\x63\x6f\x64\x65\x08\xa4\x74"
			  "\x65\x78\x74\xa3\x62\x79\x65"},
	[PR_LINK] = {51, "\x00\x00\x00\x2f\x86\xa1\x74\x0a\xa1\x76\x01\xa5\x74\x6f\x6b\x65"
			 "\x6e\xa3\x74\x6f\x6b\xa5\x65\x70\x6f\x63\x68\xcf\x00\x00\x00\x01"
			 "\x02\x03\x04\x05\xa4\x63\x6f\x64\x65\x08\xa4\x74\x65\x78\x74\xa3"
			 "\x62\x79\x65"},
};

static void every_type_encodes_to_the_recorded_bytes(void **state)
{
	char buf[PR_FRAME_HDR + PR_FRAME_MAX];
	struct pr_msg m;

	(void)state;
	for (enum pr_type t = PR_HELLO; t < PR_TYPE_MAX; t++) {
		int n;

		fill_every_field(&m, t);
		n = pr_encode(&m, buf, sizeof(buf));
		if (n != (int)recorded[t].len ||
		    memcmp(buf, recorded[t].bytes, recorded[t].len) != 0)
			fail_msg("%s: the frame is not the recorded one", pr_type_name(t));
	}
}

/* A map's declared size must be its number of entries: walk the payload one
 * object at a time after the map header and count keys and values. */
static void every_type_declares_its_number_of_entries(void **state)
{
	char buf[PR_FRAME_HDR + PR_FRAME_MAX];
	msgpack_unpacked obj;
	struct pr_msg m;

	(void)state;
	msgpack_unpacked_init(&obj);
	for (enum pr_type t = PR_HELLO; t < PR_TYPE_MAX; t++) {
		int n;
		size_t off = PR_FRAME_HDR + 1, objects = 0;
		unsigned char hdr;

		fill_every_field(&m, t);
		n = pr_encode(&m, buf, sizeof(buf));
		assert_true(n > PR_FRAME_HDR);
		hdr = (unsigned char)buf[PR_FRAME_HDR];
		assert_int_equal(hdr & 0xf0, 0x80); /* a fixmap: at most 15 entries */
		while (off < (size_t)n) {
			assert_int_equal(msgpack_unpack_next(&obj, buf, (size_t)n, &off),
					 MSGPACK_UNPACK_SUCCESS);
			objects++;
		}
		if (objects != 2 * (size_t)(hdr & 0x0f))
			fail_msg("%s: the map declares %d entries and has %zu objects",
				 pr_type_name(t), hdr & 0x0f, objects);
	}
	msgpack_unpacked_destroy(&obj);
}

static void two_frames_back_to_back_are_delimited(void **state)
{
	struct pr_msg a = {.type = PR_PING, .nonce = 1}, b = {.type = PR_OPEN, .count = 4}, out;
	char buf[256];
	int n1 = pr_encode(&a, buf, sizeof(buf)), n2;

	(void)state;
	n2 = pr_encode(&b, buf + n1, sizeof(buf) - (size_t)n1);
	assert_int_equal(pr_frame_len(buf, (size_t)(n1 + n2)), n1);
	assert_int_equal(pr_decode(buf + 4, (size_t)n1 - 4, &out), 0);
	assert_int_equal(out.nonce, 1);
	assert_int_equal(pr_frame_len(buf + n1, (size_t)n2), n2);
	assert_int_equal(pr_decode(buf + n1 + 4, (size_t)n2 - 4, &out), 0);
	assert_int_equal(out.count, 4);
}

static void encode_refuses_small_buffers_and_bad_types(void **state)
{
	struct pr_msg m = {.type = PR_HELLO};
	char buf[16];

	(void)state;
	assert_int_equal(pr_encode(&m, buf, sizeof(buf)), -ENOSPC);
	assert_int_equal(pr_encode(&m, buf, 2), -ENOSPC);
	m.type = (enum pr_type)99;
	assert_int_equal(pr_encode(&m, buf, sizeof(buf)), -EINVAL);
}

static void oversized_frame_is_refused_before_reading_it(void **state)
{
	const char hdr[4] = {0, 0, 0x10, 0x01}; /* 4097 > PR_FRAME_MAX */

	(void)state;
	assert_int_equal(pr_frame_len(hdr, 4), -EMSGSIZE);
	assert_int_equal(pr_frame_len(hdr, 3), 0);
}

/* Pack an arbitrary map with msgpack-c to build malformed messages. */
static size_t pack(char *buf, size_t cap, void (*fill)(msgpack_packer *))
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t n;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	fill(&pk);
	n = sb.size < cap ? sb.size : cap;
	memcpy(buf, sb.data, n);
	msgpack_sbuffer_destroy(&sb);
	return n;
}

static void fill_wrong_type(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 1);
	msgpack_pack_str_with_body(pk, "t", 1);
	msgpack_pack_str_with_body(pk, "hello", 5);
}

static void fill_no_type(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 1);
	msgpack_pack_str_with_body(pk, "name", 4);
	msgpack_pack_str_with_body(pk, "x", 1);
}

static void fill_long_name(msgpack_packer *pk)
{
	char name[PR_NAME_MAX];

	memset(name, 'a', sizeof(name));
	msgpack_pack_map(pk, 2);
	msgpack_pack_str_with_body(pk, "t", 1);
	msgpack_pack_uint8(pk, PR_HELLO);
	msgpack_pack_str_with_body(pk, "name", 4);
	msgpack_pack_str_with_body(pk, name, sizeof(name));
}

static void fill_unknown_key(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 3);
	msgpack_pack_str_with_body(pk, "t", 1);
	msgpack_pack_uint8(pk, PR_PING);
	msgpack_pack_str_with_body(pk, "future", 6);
	msgpack_pack_array(pk, 0);
	msgpack_pack_str_with_body(pk, "nonce", 5);
	msgpack_pack_uint8(pk, 9);
}

static void fill_array(msgpack_packer *pk)
{
	msgpack_pack_array(pk, 1);
	msgpack_pack_uint8(pk, 1);
}

static void fill_unknown_type(msgpack_packer *pk)
{
	msgpack_pack_map(pk, 1);
	msgpack_pack_str_with_body(pk, "t", 1);
	msgpack_pack_uint8(pk, 200);
}

static void malformed_payloads_are_refused(void **state)
{
	char buf[512];
	struct pr_msg m;
	size_t n;

	(void)state;
	n = pack(buf, sizeof(buf), fill_wrong_type);
	assert_int_equal(pr_decode(buf, n, &m), -EBADMSG);
	n = pack(buf, sizeof(buf), fill_no_type);
	assert_int_equal(pr_decode(buf, n, &m), -EPROTO);
	n = pack(buf, sizeof(buf), fill_unknown_type);
	assert_int_equal(pr_decode(buf, n, &m), -EPROTO);
	n = pack(buf, sizeof(buf), fill_long_name);
	assert_int_equal(pr_decode(buf, n, &m), -EMSGSIZE);
	n = pack(buf, sizeof(buf), fill_array);
	assert_int_equal(pr_decode(buf, n, &m), -EBADMSG);
	n = pack(buf, sizeof(buf), fill_wrong_type);
	assert_int_equal(pr_decode(buf, n - 1, &m), -EBADMSG); /* truncated */
	buf[n] = (char)0xc0;				       /* trailing nil */
	assert_int_equal(pr_decode(buf, n + 1, &m), -EBADMSG);
	assert_int_equal(pr_decode("", 0, &m), -EBADMSG);
}

/* Found by fuzzing: msgpack-c sizes allocations from declared counts, so a
 * tiny payload declaring 2^32 entries must be refused before it is unpacked. */
static void huge_declared_counts_are_refused_without_allocating(void **state)
{
	const char arr[] = {(char)0x81, (char)0xa1, 'x',	(char)0xdd,
			    (char)0xff, (char)0xff, (char)0xff, (char)0xff};
	const char map[] = {(char)0xdf, (char)0xff, (char)0xff, (char)0xff, (char)0xff};
	const char str[] = {(char)0x81, (char)0xa1, 't', (char)0xdb, 0, 0, 0x10, 0};
	struct pr_msg m;

	(void)state;
	assert_int_equal(pr_decode(arr, sizeof(arr), &m), -EBADMSG);
	assert_int_equal(pr_decode(map, sizeof(map), &m), -EBADMSG);
	assert_int_equal(pr_decode(str, sizeof(str), &m), -EBADMSG);
}

static void unknown_keys_are_ignored(void **state)
{
	char buf[128];
	struct pr_msg m;
	size_t n = pack(buf, sizeof(buf), fill_unknown_key);

	(void)state;
	assert_int_equal(pr_decode(buf, n, &m), 0);
	assert_int_equal(m.type, PR_PING);
	assert_int_equal(m.nonce, 9);
}

static void session_ids(void **state)
{
	(void)state;
	assert_true(pr_session_id_valid("abcd1234", 8));
	assert_true(pr_session_id_valid("ABCDabcd0123456789ABCDabcd012345", 32));
	assert_false(pr_session_id_valid("abc1234", 7));
	assert_false(pr_session_id_valid("ABCDabcd0123456789ABCDabcd0123456", 33));
	assert_false(pr_session_id_valid("abcd-234", 8));
	assert_false(pr_session_id_valid("abcd/../", 8));
	assert_false(pr_session_id_valid("abcd\xc3\xa9xx", 8));
}

static void labels(void **state)
{
	static const char *const bad[] = {"", "-x", "x-", "UPPER", "a.b", "a b", "a_b", "../etc"};

	(void)state;
	assert_true(pr_label_valid("a", 1));
	assert_true(pr_label_valid("my-app-1", 8));
	assert_true(pr_label_valid(
		"012345678901234567890123456789012345678901234567890123456789012", 63));
	assert_false(pr_label_valid(
		"0123456789012345678901234567890123456789012345678901234567890123", 64));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(pr_label_valid(bad[i], strlen(bad[i])));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(every_type_round_trips),
		cmocka_unit_test(every_type_encodes_to_the_recorded_bytes),
		cmocka_unit_test(every_type_declares_its_number_of_entries),
		cmocka_unit_test(two_frames_back_to_back_are_delimited),
		cmocka_unit_test(encode_refuses_small_buffers_and_bad_types),
		cmocka_unit_test(oversized_frame_is_refused_before_reading_it),
		cmocka_unit_test(malformed_payloads_are_refused),
		cmocka_unit_test(huge_declared_counts_are_refused_without_allocating),
		cmocka_unit_test(unknown_keys_are_ignored),
		cmocka_unit_test(session_ids),
		cmocka_unit_test(labels),
	};
	return cmocka_run_group_tests_name("pr_msg", tests, NULL, NULL);
}
