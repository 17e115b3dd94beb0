/*
 * pr_mp.c: the msgpack helpers proto's records share (see pr_mp.h): bounded
 * packing into a caller's buffer, and checked unpacking with msgpack-c.
 */
#include "pr_mp.h"

#include <errno.h>
#include <string.h>

/* ---- encoding ---- */

int pr_mp_out_write(void *data, const char *p, size_t n)
{
	struct pr_mp_out *o = data;

	if (o->len + n > o->cap) {
		o->overflow = 1;
		return -ENOSPC; /* msgpack-c stops at any non-zero */
	}
	memcpy(o->buf + o->len, p, n);
	o->len += n;
	return 0;
}

void pr_mp_put_str(msgpack_packer *pk, const char *key, const char *v)
{
	size_t kl = strlen(key), vl = strlen(v);

	msgpack_pack_str(pk, kl);
	msgpack_pack_str_body(pk, key, kl);
	msgpack_pack_str(pk, vl);
	msgpack_pack_str_body(pk, v, vl);
}

void pr_mp_put_uint(msgpack_packer *pk, const char *key, uint64_t v)
{
	size_t kl = strlen(key);

	msgpack_pack_str(pk, kl);
	msgpack_pack_str_body(pk, key, kl);
	msgpack_pack_uint64(pk, v);
}

/* memcpy, not a cast: a field's bytes may belong to an enum or a nested
 * struct, and memcpy reads them whatever their declared type. */
uint64_t pr_mp_load_uint(const void *p, size_t size)
{
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;

	switch (size) {
	case 1: memcpy(&u8, p, 1); return u8;
	case 2: memcpy(&u16, p, 2); return u16;
	case 4: memcpy(&u32, p, 4); return u32;
	default: memcpy(&u64, p, 8); return u64;
	}
}

void pr_mp_store_uint(void *p, size_t size, uint64_t v)
{
	uint8_t u8 = (uint8_t)v;
	uint16_t u16 = (uint16_t)v;
	uint32_t u32 = (uint32_t)v;

	switch (size) {
	case 1: memcpy(p, &u8, 1); break;
	case 2: memcpy(p, &u16, 2); break;
	case 4: memcpy(p, &u32, 4); break;
	default: memcpy(p, &v, 8); break;
	}
}

void pr_mp_put_field(msgpack_packer *pk, const struct pr_mp_field *f, const void *rec)
{
	const char *p = (const char *)rec + f->off;

	if (f->kind == PR_MP_STR)
		pr_mp_put_str(pk, f->key, p);
	else
		pr_mp_put_uint(pk, f->key, pr_mp_load_uint(p, f->size));
}

/* ---- decoding ---- */

uint32_t pr_mp_be(const unsigned char *p, int n)
{
	uint32_t v = 0;

	for (int i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * msgpack-c sizes its allocations from declared counts, so a 5-byte "array
 * of 2^32" would otherwise ask for tens of gigabytes: this walk runs first
 * and refuses any length or count the remaining bytes cannot hold (each
 * element takes at least one byte).
 */
int pr_mp_skim(const unsigned char *p, size_t len, size_t *off, int depth)
{
	size_t left, o = *off;
	uint32_t count = 0, bytes = 0;
	unsigned char c;

	if (o >= len || depth > PR_MP_DEPTH_MAX)
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
		bytes = f[i].kind == 0 ? f[i].fixed : pr_mp_be(p + o, f[i].lenbytes);
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
		int err = pr_mp_skim(p, len, &o, depth + 1);

		if (err < 0)
			return err;
	}
	*off = o;
	return 0;
}

int pr_mp_get_str(const msgpack_object *v, char *dst, size_t cap)
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

int pr_mp_get_uint(const msgpack_object *v, uint64_t max, uint64_t *out)
{
	if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 > max)
		return -EBADMSG;
	*out = v->via.u64;
	return 0;
}

int pr_mp_key_is(const msgpack_object *k, const char *name)
{
	size_t n = strlen(name);

	return k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

int pr_mp_decode_map(const char *buf, size_t len, pr_mp_entry_fn fn, void *ctx)
{
	msgpack_unpacked up;
	const msgpack_object_map *map;
	size_t off = 0;
	int err = 0;

	if (pr_mp_skim((const unsigned char *)buf, len, &off, 0) < 0 || off != len)
		return -EBADMSG;
	off = 0;
	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
	    up.data.type != MSGPACK_OBJECT_MAP) {
		err = -EBADMSG;
		goto out;
	}
	map = &up.data.via.map;
	for (uint32_t i = 0; i < map->size && err == 0; i++) {
		if (map->ptr[i].key.type != MSGPACK_OBJECT_STR)
			err = -EBADMSG;
		else
			err = fn(&map->ptr[i].key, &map->ptr[i].val, ctx);
	}
out:
	msgpack_unpacked_destroy(&up);
	return err;
}
