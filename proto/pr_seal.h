/*
 * pr_seal.h: secrets kept at rest (a node's SSH key and passwords in Redis)
 * sealed with AES-256-GCM under a key derived from the deployment's session
 * secret (HMAC-SHA256 of a fixed label), so Redis alone, or a backup of it,
 * does not give them away. Text form: "v1." + hex(nonce[12] || ciphertext ||
 * tag[16]). wolfCrypt, in a translation unit of its own (the control plane
 * must not see wolfSSL headers next to h2o's OpenSSL ones).
 */
#ifndef PR_SEAL_H
#define PR_SEAL_H

#include <stddef.h>
#include <stdint.h>

/* Bytes of text pr_seal writes for len bytes of plaintext, NUL included. */
#define PR_SEAL_TEXT_LEN(len) (3 + 2 * (12 + (len) + 16) + 1)

/* Seal pt[0..len) into out (cap >= PR_SEAL_TEXT_LEN(len)); aad binds the
 * text to its place (the node id): unsealed elsewhere, it fails. Returns the
 * text's length or a negative errno. */
int pr_seal(const uint8_t *secret, size_t secret_len, const char *aad, const void *pt, size_t len,
	    char *out, size_t cap);
/* Open text into out (cap bytes, at least the plaintext's length + 1; NUL
 * added). Returns the plaintext's length, or -EBADMSG when the text was
 * changed, sealed under another secret or for another aad. */
int pr_unseal(const uint8_t *secret, size_t secret_len, const char *aad, const char *text,
	      char *out, size_t cap);

#endif
