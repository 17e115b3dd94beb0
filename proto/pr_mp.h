/*
 * pr_mp.h: msgpack helpers shared by proto's encoders and decoders (pr_msg.c,
 * pr_state.c); internal to proto/, not a public API.
 *
 * Every record proto exchanges is one msgpack map with short string keys.
 * Encoding writes into the caller's fixed buffer through pr_mp_out_write, so
 * nothing is allocated and an overflow is reported, never truncated.
 * Decoding never hands untrusted bytes to msgpack-c unchecked: pr_mp_skim
 * walks them first (see pr_mp_decode_map), because msgpack-c sizes its
 * allocations from the counts the bytes declare.
 */
#ifndef PR_MP_H
#define PR_MP_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

/* Our records are flat maps; a little nesting is allowed so a newer peer may
 * add structured fields that an older one skips. Also bounds skim's recursion. */
#define PR_MP_DEPTH_MAX 8

/* Bounded output for msgpack_packer_init(&pk, &out, pr_mp_out_write).
 * overflow stays set once a write did not fit: the caller checks it once at
 * the end instead of after every pack call. Ownership: buf is the caller's; nothing here allocates.
 */
struct pr_mp_out {
	char *buf;
	size_t cap, len;
	int overflow;
};

/* msgpack_packer_write callback appending to a struct pr_mp_out. */
int pr_mp_out_write(void *data, const char *p, size_t n);

/* Pack one map entry: the string key, then a string (NUL-terminated v) or an
 * unsigned integer. Errors surface through pr_mp_out.overflow. */
void pr_mp_put_str(msgpack_packer *pk, const char *key, const char *v);
void pr_mp_put_uint(msgpack_packer *pk, const char *key, uint64_t v);

/*
 * One field of a record as a table describes it: its key, and where and how
 * the record's struct holds it. Tables of these drive encoding and decoding
 * (pr_msg.c, pr_state.c), so a record's map size is always its table's
 * length, never a count kept by hand.
 */
enum pr_mp_kind {
	PR_MP_STR = 0, /* char array, NUL-terminated within it */
	PR_MP_UINT,    /* unsigned integer of 1, 2, 4 or 8 bytes (an enum is 4) */
};

/* Ownership: static tables. */
struct pr_mp_field {
	const char *key;
	enum pr_mp_kind kind;
	size_t off, size; /* where in the record, and its bytes (a string's NUL included) */
	uint64_t max;	  /* PR_MP_UINT: the largest value a decoder accepts */
};

/* One line per field in the tables: clang-format would spread each over four. */
/* clang-format off */
#define PR_MP_SIZEOF(T, m)	      sizeof(((T *)0)->m)
#define PR_MP_STR_FIELD(T, m, k)      {k, PR_MP_STR, offsetof(T, m), PR_MP_SIZEOF(T, m), 0}
#define PR_MP_UINT_FIELD(T, m, k, mx) {k, PR_MP_UINT, offsetof(T, m), PR_MP_SIZEOF(T, m), mx}
/* clang-format on */

/* The unsigned integer of size bytes (1, 2, 4 or 8) at p, read or written. */
uint64_t pr_mp_load_uint(const void *p, size_t size);
void pr_mp_store_uint(void *p, size_t size, uint64_t v);

/* Pack rec's field f as one map entry (pr_mp_put_str or pr_mp_put_uint). */
void pr_mp_put_field(msgpack_packer *pk, const struct pr_mp_field *f, const void *rec);

/* The n-byte (n <= 4) big-endian unsigned integer at p. */
uint32_t pr_mp_be(const unsigned char *p, int n);

/*
 * Walk one msgpack object at p[*off] without building it: 0 with *off moved
 * past it, or -EBADMSG when a declared length or count exceeds the bytes
 * left, nesting passes PR_MP_DEPTH_MAX, or a format byte is invalid.
 */
int pr_mp_skim(const unsigned char *p, size_t len, size_t *off, int depth);

/* Copy a msgpack string into dst (cap bytes, NUL-terminated): 0, -EBADMSG
 * (not a string, or an embedded NUL), -EMSGSIZE (does not fit). */
int pr_mp_get_str(const msgpack_object *v, char *dst, size_t cap);

/* An unsigned integer no greater than max: 0, or -EBADMSG. */
int pr_mp_get_uint(const msgpack_object *v, uint64_t max, uint64_t *out);

/* Whether the string key k is name. */
int pr_mp_key_is(const msgpack_object *k, const char *name);

/* Called once per map entry; k is known to be a string. Returns 0 or a
 * negative errno, which stops the walk. */
typedef int (*pr_mp_entry_fn)(const msgpack_object *k, const msgpack_object *v, void *ctx);

/*
 * Decode buf[0..len) as exactly one msgpack map and call fn on each entry in
 * order. Returns 0, the first error fn returned, or -EBADMSG (skim refused
 * it, not a map, trailing bytes, a key that is not a string). Callers bound
 * len first: msgpack-c's zone grows with it.
 */
int pr_mp_decode_map(const char *buf, size_t len, pr_mp_entry_fn fn, void *ctx);

#endif
