/*
 * pr_msg.c: encoder and decoder of the control protocol (see pr_msg.h and
 * docs/protocol.md), on msgpack-c through the helpers of pr_mp.h. One table
 * describes every field and one layout per type lists the fields it carries;
 * both directions are driven by them, so no map size is counted by hand.
 * Encoding writes into the caller's buffer through a bounded write callback;
 * decoding checks the payload, unpacks it with msgpack-c and copies strings
 * into fixed fields.
 */
#include "pr_msg.h"
#include "pr_mp.h"

#include <errno.h>
#include <string.h>

static const char *const type_names[PR_TYPE_MAX] = {
	[PR_HELLO] = "hello",	[PR_BOUND] = "bound",
	[PR_ERROR] = "error",	[PR_OPEN] = "open",
	[PR_PING] = "ping",	[PR_PONG] = "pong",
	[PR_GOAWAY] = "goaway", [PR_DATA_HELLO] = "data_hello",
	[PR_START] = "start",	[PR_LINK] = "link",
};

const char *pr_type_name(enum pr_type t)
{
	return t > 0 && t < PR_TYPE_MAX ? type_names[t] : "unknown";
}

/* ---- the fields of each type ---- */

/*
 * Every field but "t", each described once and named for its key: the
 * decoder accepts any of them in any message, and each type's layout below
 * says which ones its encoder writes. A number is bounded by its width,
 * proto by the protocols there are.
 */
enum field_id {
	F_V,
	F_PROTO,
	F_TOKEN,
	F_NAME,
	F_SID,
	F_EPOCH,
	F_KEY,
	F_URL,
	F_PORT,
	F_N,
	F_HB,
	F_NONCE,
	F_CODE,
	F_TEXT,
	NFIELDS,
};

#define WIDTH_MAX(m) (UINT64_MAX >> (64 - 8 * PR_MP_SIZEOF(struct pr_msg, m)))
#define STR(m, k)    PR_MP_STR_FIELD(struct pr_msg, m, k)
#define UINT(m, k)   PR_MP_UINT_FIELD(struct pr_msg, m, k, WIDTH_MAX(m))
static const struct pr_mp_field fields[NFIELDS] = {
	[F_V] = UINT(version, "v"),
	[F_PROTO] = PR_MP_UINT_FIELD(struct pr_msg, proto, "proto", PR_PROTO_TCP),
	[F_TOKEN] = STR(token, "token"),
	[F_NAME] = STR(name, "name"),
	[F_SID] = STR(session, "sid"),
	[F_EPOCH] = UINT(epoch, "epoch"),
	[F_KEY] = STR(key, "key"),
	[F_URL] = STR(url, "url"),
	[F_PORT] = UINT(port, "port"),
	[F_N] = UINT(count, "n"),
	[F_HB] = UINT(heartbeat_ms, "hb"),
	[F_NONCE] = UINT(nonce, "nonce"),
	[F_CODE] = UINT(code, "code"),
	[F_TEXT] = STR(text, "text"),
};

/* A type's fields after "t", in the order they go on the wire; n is counted
 * by the compiler from the list. Ownership: static tables. */
struct layout {
	const unsigned char *ids;
	size_t n;
};
/* clang-format off */
#define IDS(...)    ((const unsigned char[]){__VA_ARGS__})
#define LAYOUT(...) {IDS(__VA_ARGS__), sizeof(IDS(__VA_ARGS__))}
/* clang-format on */
static const struct layout layouts[PR_TYPE_MAX] = {
	[PR_HELLO] = LAYOUT(F_V, F_PROTO, F_TOKEN, F_NAME, F_SID, F_EPOCH),
	[PR_BOUND] = LAYOUT(F_PROTO, F_NAME, F_SID, F_EPOCH, F_KEY, F_URL, F_PORT, F_HB),
	[PR_ERROR] = LAYOUT(F_CODE, F_TEXT),
	[PR_OPEN] = LAYOUT(F_N),
	[PR_PING] = LAYOUT(F_NONCE),
	[PR_PONG] = LAYOUT(F_NONCE),
	[PR_GOAWAY] = LAYOUT(F_CODE, F_TEXT),
	[PR_DATA_HELLO] = LAYOUT(F_V, F_SID, F_EPOCH, F_KEY),
	[PR_START] = LAYOUT(F_CODE, F_TEXT),
	[PR_LINK] = LAYOUT(F_V, F_TOKEN, F_EPOCH, F_CODE, F_TEXT),
};

/* ---- encoding ---- */

/* "t" first, then the type's fields: the map's size is the layout's length
 * plus one, so a field added to a layout is counted by construction. */
static int pack_fields(msgpack_packer *pk, const struct pr_msg *m)
{
	const struct layout *l;

	if ((unsigned)m->type >= PR_TYPE_MAX || layouts[m->type].n == 0)
		return -EINVAL;
	l = &layouts[m->type];
	msgpack_pack_map(pk, (uint32_t)(1 + l->n));
	pr_mp_put_uint(pk, "t", m->type);
	for (size_t i = 0; i < l->n; i++)
		pr_mp_put_field(pk, &fields[l->ids[i]], m);
	return 0;
}

int pr_encode(const struct pr_msg *m, char *buf, size_t cap)
{
	struct pr_mp_out o = {buf, cap, PR_FRAME_HDR, 0};
	msgpack_packer pk;
	size_t n;

	if (cap < PR_FRAME_HDR)
		return -ENOSPC;
	msgpack_packer_init(&pk, &o, pr_mp_out_write);
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
	n = pr_mp_be(p, PR_FRAME_HDR);
	if (n > PR_FRAME_MAX)
		return -EMSGSIZE;
	return len >= PR_FRAME_HDR + n ? (int)(PR_FRAME_HDR + n) : 0;
}

/* ---- decoding ---- */

/* Apply one map entry (a pr_mp_entry_fn on a struct pr_msg): "t", where an
 * unknown type decodes as none (pr_decode's -EPROTO), or a field of the
 * table within its bound; unknown keys are ignored (forward compatibility). */
static int apply_entry(const msgpack_object *k, const msgpack_object *v, void *ctx)
{
	struct pr_msg *m = ctx;
	uint64_t u = 0; /* set whenever err is 0, but gcc -O2 cannot see into pr_mp.c */
	int err;

	if (pr_mp_key_is(k, "t")) {
		if ((err = pr_mp_get_uint(v, UINT32_MAX, &u)) < 0)
			return err;
		m->type = u > 0 && u < PR_TYPE_MAX ? (enum pr_type)u : (enum pr_type)0;
		return 0;
	}
	for (size_t i = 0; i < NFIELDS; i++) {
		const struct pr_mp_field *f = &fields[i];

		if (!pr_mp_key_is(k, f->key))
			continue;
		if (f->kind == PR_MP_STR)
			return pr_mp_get_str(v, (char *)m + f->off, f->size);
		if ((err = pr_mp_get_uint(v, f->max, &u)) < 0)
			return err;
		pr_mp_store_uint((char *)m + f->off, f->size, u);
		return 0;
	}
	return 0;
}

int pr_decode(const char *payload, size_t len, struct pr_msg *m)
{
	int err;

	memset(m, 0, sizeof(*m));
	if (len > PR_FRAME_MAX)
		return -EMSGSIZE;
	err = pr_mp_decode_map(payload, len, apply_entry, m);
	if (err == 0 && m->type == 0)
		err = -EPROTO;
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
