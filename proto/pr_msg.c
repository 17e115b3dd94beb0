/*
 * pr_msg.c: encoder and decoder of the control protocol (see pr_msg.h and
 * docs/protocol.md), on msgpack-c. Encoding writes into the caller's buffer
 * through a bounded write callback; decoding uses msgpack-c's unpacker with a
 * zone on the stack-sized frame and copies strings into fixed fields.
 */
#include "pr_msg.h"

#include <errno.h>
#include <string.h>

#include <msgpack.h>

static const char *const type_names[PR_TYPE_MAX] = {
	[PR_HELLO] = "hello",	[PR_BOUND] = "bound",
	[PR_ERROR] = "error",	[PR_OPEN] = "open",
	[PR_PING] = "ping",	[PR_PONG] = "pong",
	[PR_GOAWAY] = "goaway", [PR_DATA_HELLO] = "data_hello",
	[PR_START] = "start",
};

const char *pr_type_name(enum pr_type t)
{
	return t > 0 && t < PR_TYPE_MAX ? type_names[t] : "unknown";
}

/* ---- encoding ---- */

struct out {
	char *buf;
	size_t cap, len;
	int overflow;
};

static int out_write(void *data, const char *p, size_t n)
{
	struct out *o = data;

	if (o->len + n > o->cap) {
		o->overflow = 1;
		return -1;
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
	return 0;
}

static void put_str(msgpack_packer *pk, const char *key, const char *v)
{
	size_t kl = strlen(key), vl = strlen(v);

	msgpack_pack_str(pk, kl);
	msgpack_pack_str_body(pk, key, kl);
	msgpack_pack_str(pk, vl);
	msgpack_pack_str_body(pk, v, vl);
}

static void put_uint(msgpack_packer *pk, const char *key, uint64_t v)
{
	size_t kl = strlen(key);

	msgpack_pack_str(pk, kl);
	msgpack_pack_str_body(pk, key, kl);
	msgpack_pack_uint64(pk, v);
}

/* Field lists per type: how many entries the map has, then the entries. */
static int pack_fields(msgpack_packer *pk, const struct pr_msg *m)
{
	switch (m->type) {
	case PR_HELLO:
		msgpack_pack_map(pk, 7);
		put_uint(pk, "t", m->type);
		put_uint(pk, "v", m->version);
		put_uint(pk, "proto", m->proto);
		put_str(pk, "token", m->token);
		put_str(pk, "name", m->name);
		put_str(pk, "sid", m->session);
		put_uint(pk, "epoch", m->epoch);
		return 0;
	case PR_BOUND:
		msgpack_pack_map(pk, 9);
		put_uint(pk, "t", m->type);
		put_uint(pk, "proto", m->proto);
		put_str(pk, "name", m->name);
		put_str(pk, "sid", m->session);
		put_uint(pk, "epoch", m->epoch);
		put_str(pk, "key", m->key);
		put_str(pk, "url", m->url);
		put_uint(pk, "port", m->port);
		put_uint(pk, "hb", m->heartbeat_ms);
		return 0;
	case PR_ERROR:
	case PR_GOAWAY:
	case PR_START:
		msgpack_pack_map(pk, 3);
		put_uint(pk, "t", m->type);
		put_uint(pk, "code", m->code);
		put_str(pk, "text", m->text);
		return 0;
	case PR_OPEN:
		msgpack_pack_map(pk, 2);
		put_uint(pk, "t", m->type);
		put_uint(pk, "n", m->count);
		return 0;
	case PR_PING:
	case PR_PONG:
		msgpack_pack_map(pk, 2);
		put_uint(pk, "t", m->type);
		put_uint(pk, "nonce", m->nonce);
		return 0;
	case PR_DATA_HELLO:
		msgpack_pack_map(pk, 5);
		put_uint(pk, "t", m->type);
		put_uint(pk, "v", m->version);
		put_str(pk, "sid", m->session);
		put_uint(pk, "epoch", m->epoch);
		put_str(pk, "key", m->key);
		return 0;
	default: return -EINVAL;
	}
}

int pr_encode(const struct pr_msg *m, char *buf, size_t cap)
{
	struct out o = {buf, cap, PR_FRAME_HDR, 0};
	msgpack_packer pk;
	size_t n;

	if (cap < PR_FRAME_HDR)
		return -ENOSPC;
	msgpack_packer_init(&pk, &o, out_write);
	if (pack_fields(&pk, m) < 0)
		return -EINVAL;
	if (o.overflow || o.len - PR_FRAME_HDR > PR_FRAME_MAX)
		return -ENOSPC;
	n = o.len - PR_FRAME_HDR;
	buf[0] = (char)(n >> 24);
	buf[1] = (char)(n >> 16);
	buf[2] = (char)(n >> 8);
	buf[3] = (char)n;
	return (int)o.len;
}

int pr_frame_len(const char *buf, size_t len)
{
	const unsigned char *p = (const unsigned char *)buf;
	uint32_t n;

	if (len < PR_FRAME_HDR)
		return 0;
	n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (n > PR_FRAME_MAX)
		return -EMSGSIZE;
	return len >= PR_FRAME_HDR + n ? (int)(PR_FRAME_HDR + n) : 0;
}

/* ---- decoding ---- */

#define PR_DEPTH_MAX 8 /* our messages are flat; allow a little nesting for future fields */

static uint32_t be(const unsigned char *p, int n)
{
	uint32_t v = 0;

	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * Walk one msgpack object at *off without building it, checking that every
 * declared length or count fits in the bytes that remain. msgpack-c sizes
 * its allocations from declared counts, so a 5-byte "array of 2^32" would
 * otherwise ask for tens of gigabytes: this check runs first.
 */
static int skim(const unsigned char *p, size_t len, size_t *off, int depth)
{
	size_t left, o = *off;
	uint32_t count = 0, bytes = 0;
	unsigned char c;

	if (o >= len || depth > PR_DEPTH_MAX)
		return -EBADMSG;
	c = p[o++];
	left = len - o;
	if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
		bytes = 0;
	} else if ((c & 0xe0) == 0xa0) {
		bytes = c & 0x1f;
	} else if ((c & 0xf0) == 0x90 || (c & 0xf0) == 0x80) {
		count = (c & 0x0f) * ((c & 0xf0) == 0x80 ? 2u : 1u);
	} else {
		/* size of the length field, or of the fixed payload, per format byte */
		static const struct {
			unsigned char fmt, lenbytes, fixed,
				kind; /* kind: 0 fixed, 1 bytes, 2 array, 3 map, 4 ext */
		} f[] = {
			{0xc4, 1, 0, 1},  {0xc5, 2, 0, 1}, {0xc6, 4, 0, 1}, {0xc7, 1, 1, 4},
			{0xc8, 2, 1, 4},  {0xc9, 4, 1, 4}, {0xca, 0, 4, 0}, {0xcb, 0, 8, 0},
			{0xcc, 0, 1, 0},  {0xcd, 0, 2, 0}, {0xce, 0, 4, 0}, {0xcf, 0, 8, 0},
			{0xd0, 0, 1, 0},  {0xd1, 0, 2, 0}, {0xd2, 0, 4, 0}, {0xd3, 0, 8, 0},
			{0xd4, 0, 2, 0},  {0xd5, 0, 3, 0}, {0xd6, 0, 5, 0}, {0xd7, 0, 9, 0},
			{0xd8, 0, 17, 0}, {0xd9, 1, 0, 1}, {0xda, 2, 0, 1}, {0xdb, 4, 0, 1},
			{0xdc, 2, 0, 2},  {0xdd, 4, 0, 2}, {0xde, 2, 0, 3}, {0xdf, 4, 0, 3},
		};
		size_t i;

		for (i = 0; i < sizeof(f) / sizeof(f[0]) && f[i].fmt != c; i++)
			;
		if (i == sizeof(f) / sizeof(f[0]) || left < f[i].lenbytes)
			return -EBADMSG; /* 0xc1 is never used */
		bytes = f[i].kind == 0 ? f[i].fixed : be(p + o, f[i].lenbytes);
		o += f[i].lenbytes;
		left -= f[i].lenbytes;
		if (f[i].kind == 4)
			bytes += 1; /* the ext type byte */
		if (f[i].kind == 2 || f[i].kind == 3) {
			count = bytes * (f[i].kind == 3 ? 2u : 1u);
			if (bytes > left)
				return -EBADMSG;
			bytes = 0;
		}
	}
	if (bytes > left || count > left)
		return -EBADMSG;
	o += bytes;
	for (uint32_t i = 0; i < count; i++) {
		int err = skim(p, len, &o, depth + 1);

		if (err < 0)
			return err;
	}
	*off = o;
	return 0;
}

static int get_str(const msgpack_object *v, char *dst, size_t cap)
{
	if (v->type != MSGPACK_OBJECT_STR)
		return -EBADMSG;
	if (v->via.str.size >= cap)
		return -EMSGSIZE;
	if (memchr(v->via.str.ptr, '\0', v->via.str.size))
		return -EBADMSG;
	memcpy(dst, v->via.str.ptr, v->via.str.size);
	dst[v->via.str.size] = '\0';
	return 0;
}

static int get_uint(const msgpack_object *v, uint64_t max, uint64_t *out)
{
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > max)
		return -EBADMSG;
	*out = v->via.u64;
	return 0;
}

static int get_u32(const msgpack_object *v, uint32_t *out)
{
	uint64_t x;
	int err = get_uint(v, UINT32_MAX, &x);

	if (err == 0)
		*out = (uint32_t)x;
	return err;
}

static int key_is(const msgpack_object *k, const char *name)
{
	size_t n = strlen(name);

	return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

/* Apply one map entry; unknown keys are ignored (forward compatibility). */
static int apply_entry(const msgpack_object *k, const msgpack_object *v, struct pr_msg *m)
{
	uint32_t u;
	int err;

	if (k->type != MSGPACK_OBJECT_STR)
		return -EBADMSG;
	if (key_is(k, "t")) {
		if ((err = get_u32(v, &u)) < 0)
			return err;
		m->type = u > 0 && u < PR_TYPE_MAX ? (enum pr_type)u : (enum pr_type)0;
		return 0;
	}
	if (key_is(k, "proto")) {
		if ((err = get_u32(v, &u)) < 0 || u > PR_PROTO_TCP)
			return err < 0 ? err : -EBADMSG;
		m->proto = (enum pr_proto)u;
		return 0;
	}
	if (key_is(k, "v"))
		return get_u32(v, &m->version);
	if (key_is(k, "token"))
		return get_str(v, m->token, sizeof(m->token));
	if (key_is(k, "name"))
		return get_str(v, m->name, sizeof(m->name));
	if (key_is(k, "sid"))
		return get_str(v, m->session, sizeof(m->session));
	if (key_is(k, "epoch"))
		return get_uint(v, UINT64_MAX, &m->epoch);
	if (key_is(k, "key"))
		return get_str(v, m->key, sizeof(m->key));
	if (key_is(k, "url"))
		return get_str(v, m->url, sizeof(m->url));
	if (key_is(k, "port"))
		return get_u32(v, &m->port);
	if (key_is(k, "n"))
		return get_u32(v, &m->count);
	if (key_is(k, "hb"))
		return get_u32(v, &m->heartbeat_ms);
	if (key_is(k, "nonce"))
		return get_uint(v, UINT64_MAX, &m->nonce);
	if (key_is(k, "code"))
		return get_u32(v, &m->code);
	if (key_is(k, "text"))
		return get_str(v, m->text, sizeof(m->text));
	return 0;
}

int pr_decode(const char *payload, size_t len, struct pr_msg *m)
{
	msgpack_unpacked up;
	size_t off = 0;
	int err = 0;

	memset(m, 0, sizeof(*m));
	if (len > PR_FRAME_MAX)
		return -EMSGSIZE;
	if (skim((const unsigned char *)payload, len, &off, 0) < 0 || off != len)
		return -EBADMSG;
	off = 0;
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, payload, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
	    up.data.type != MSGPACK_OBJECT_MAP) {
		err = -EBADMSG;
		goto out;
	}
	for (uint32_t i = 0; i < up.data.via.map.size && err == 0; i++)
		err = apply_entry(&up.data.via.map.ptr[i].key, &up.data.via.map.ptr[i].val, m);
	if (err == 0 && m->type == 0)
		err = -EPROTO;
out:
	msgpack_unpacked_destroy(&up);
	return err;
}

int pr_label_valid(const char *s, size_t len)
{
	if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
			return 0;
	return 1;
}

int pr_session_id_valid(const char *s, size_t len)
{
	if (len < 8 || len > 32)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		      (s[i] >= '0' && s[i] <= '9')))
			return 0;
	return 1;
}
