/*
 * pr_msg.c: encoder and decoder of the control protocol (see pr_msg.h and
 * docs/protocol.md), on msgpack-c through the helpers of pr_mp.h. Encoding
 * writes into the caller's buffer through a bounded write callback; decoding
 * checks the payload, unpacks it with msgpack-c and copies strings into fixed
 * fields.
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

/* ---- encoding ---- */

/* Field lists per type: how many entries the map has, then the entries. */
static int pack_fields(msgpack_packer *pk, const struct pr_msg *m)
{
	switch (m->type) {
	case PR_HELLO:
		msgpack_pack_map(pk, 7);
		pr_mp_put_uint(pk, "t", m->type);
		pr_mp_put_uint(pk, "v", m->version);
		pr_mp_put_uint(pk, "proto", m->proto);
		pr_mp_put_str(pk, "token", m->token);
		pr_mp_put_str(pk, "name", m->name);
		pr_mp_put_str(pk, "sid", m->session);
		pr_mp_put_uint(pk, "epoch", m->epoch);
		return 0;
	case PR_BOUND:
		msgpack_pack_map(pk, 9);
		pr_mp_put_uint(pk, "t", m->type);
		pr_mp_put_uint(pk, "proto", m->proto);
		pr_mp_put_str(pk, "name", m->name);
		pr_mp_put_str(pk, "sid", m->session);
		pr_mp_put_uint(pk, "epoch", m->epoch);
		pr_mp_put_str(pk, "key", m->key);
		pr_mp_put_str(pk, "url", m->url);
		pr_mp_put_uint(pk, "port", m->port);
		pr_mp_put_uint(pk, "hb", m->heartbeat_ms);
		return 0;
	case PR_ERROR:
	case PR_GOAWAY:
	case PR_START:
		msgpack_pack_map(pk, 3);
		pr_mp_put_uint(pk, "t", m->type);
		pr_mp_put_uint(pk, "code", m->code);
		pr_mp_put_str(pk, "text", m->text);
		return 0;
	case PR_OPEN:
		msgpack_pack_map(pk, 2);
		pr_mp_put_uint(pk, "t", m->type);
		pr_mp_put_uint(pk, "n", m->count);
		return 0;
	case PR_PING:
	case PR_PONG:
		msgpack_pack_map(pk, 2);
		pr_mp_put_uint(pk, "t", m->type);
		pr_mp_put_uint(pk, "nonce", m->nonce);
		return 0;
	case PR_LINK:
		msgpack_pack_map(pk, 6);
		pr_mp_put_uint(pk, "t", m->type);
		pr_mp_put_uint(pk, "v", m->version);
		pr_mp_put_str(pk, "token", m->token);
		pr_mp_put_uint(pk, "epoch", m->epoch);
		pr_mp_put_uint(pk, "code", m->code);
		pr_mp_put_str(pk, "text", m->text);
		return 0;
	case PR_DATA_HELLO:
		msgpack_pack_map(pk, 5);
		pr_mp_put_uint(pk, "t", m->type);
		pr_mp_put_uint(pk, "v", m->version);
		pr_mp_put_str(pk, "sid", m->session);
		pr_mp_put_uint(pk, "epoch", m->epoch);
		pr_mp_put_str(pk, "key", m->key);
		return 0;
	default: return -EINVAL;
	}
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

static int get_u32(const msgpack_object *v, uint32_t *out)
{
	uint64_t x;
	int err = pr_mp_get_uint(v, UINT32_MAX, &x);

	if (err == 0)
		*out = (uint32_t)x;
	return err;
}

/* Apply one map entry (a pr_mp_entry_fn on a struct pr_msg); unknown keys are
 * ignored (forward compatibility). */
static int apply_entry(const msgpack_object *k, const msgpack_object *v, void *ctx)
{
	struct pr_msg *m = ctx;
	uint32_t u = 0; /* set whenever err is 0, but gcc -O2 cannot see into pr_mp.c */
	int err;

	if (pr_mp_key_is(k, "t")) {
		if ((err = get_u32(v, &u)) < 0)
			return err;
		m->type = u > 0 && u < PR_TYPE_MAX ? (enum pr_type)u : (enum pr_type)0;
		return 0;
	}
	if (pr_mp_key_is(k, "proto")) {
		if ((err = get_u32(v, &u)) < 0 || u > PR_PROTO_TCP)
			return err < 0 ? err : -EBADMSG;
		m->proto = (enum pr_proto)u;
		return 0;
	}
	if (pr_mp_key_is(k, "v"))
		return get_u32(v, &m->version);
	if (pr_mp_key_is(k, "token"))
		return pr_mp_get_str(v, m->token, sizeof(m->token));
	if (pr_mp_key_is(k, "name"))
		return pr_mp_get_str(v, m->name, sizeof(m->name));
	if (pr_mp_key_is(k, "sid"))
		return pr_mp_get_str(v, m->session, sizeof(m->session));
	if (pr_mp_key_is(k, "epoch"))
		return pr_mp_get_uint(v, UINT64_MAX, &m->epoch);
	if (pr_mp_key_is(k, "key"))
		return pr_mp_get_str(v, m->key, sizeof(m->key));
	if (pr_mp_key_is(k, "url"))
		return pr_mp_get_str(v, m->url, sizeof(m->url));
	if (pr_mp_key_is(k, "port"))
		return get_u32(v, &m->port);
	if (pr_mp_key_is(k, "n"))
		return get_u32(v, &m->count);
	if (pr_mp_key_is(k, "hb"))
		return get_u32(v, &m->heartbeat_ms);
	if (pr_mp_key_is(k, "nonce"))
		return pr_mp_get_uint(v, UINT64_MAX, &m->nonce);
	if (pr_mp_key_is(k, "code"))
		return get_u32(v, &m->code);
	if (pr_mp_key_is(k, "text"))
		return pr_mp_get_str(v, m->text, sizeof(m->text));
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
