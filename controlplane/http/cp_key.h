/*
 * cp_key.h: API keys: how one is made and how it is stored. The secret
 * ("sk_" and 37 letters or digits, about 191 bits) is shown once; Redis
 * keeps only its SHA-256, under which a request's key is looked up, plus
 * listing metadata under the public id ("k" and 11 letters or digits).
 * Shared by authentication (http/cp_auth.c), the keys routes (api/cp_keys.c)
 * and `sluice-control keys create`.
 */
#ifndef CP_KEY_H
#define CP_KEY_H

#include <stddef.h>
#include <stdint.h>

#define CP_KEY_ID_LEN 12 /* public id of an API key */
#define CP_KEY_LEN    40 /* the secret a client sends, "sk_" + 37 */

enum cp_scope { CP_SCOPE_TUNNELS = 1, CP_SCOPE_ADMIN = 2 };

struct cp_key {
	char id[13];
	char key[41];
	char hash[65];
	char name[65];
	char scopes[24]; /* "admin,tunnels", "tunnels" or "admin" */
	uint64_t created;
};

/* A fresh key with the given scopes (CP_SCOPE_* bits) and name ("" allowed).
 * 0, or -EIO when the kernel gives no randomness. */
int cp_key_new(struct cp_key *k, const char *name, unsigned scopes);

/* 1 when s[0..len) has the shape of a key id. */
int cp_key_id_valid(const char *s, size_t len);

struct sl_redis_target;

/* Store a new key (both of its hashes and its place in the listing) with a
 * blocking connection bounded by timeout_ms: `sluice-control keys create`
 * (the API writes the same commands on its asynchronous connection).
 * 0, or a negative errno with the reason in err. */
int cp_key_store(const struct sl_redis_target *t, int timeout_ms, const struct cp_key *k, char *err,
		 size_t cap);

/* The two hashes a key is stored as; pass the formats to a hiredis printf. */
#define CP_KEY_HSET_FMT	    "HSET sl:key:%s id %s scopes %s revoked 0"
#define CP_KEY_HSET_ARGS(k) (k)->hash, (k)->id, (k)->scopes
#define CP_KEYMETA_HSET_FMT "HSET sl:keymeta:%s name %s scopes %s created %llu revoked 0 hash %s"
#define CP_KEYMETA_HSET_ARGS(k)                                                                    \
	(k)->id, (k)->name, (k)->scopes, (unsigned long long)(k)->created, (k)->hash

#endif
