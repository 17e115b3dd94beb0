/*
 * sl_bytes.h: two small byte-string helpers every layer needs, in one place:
 * the FNV-1a hash of the registries' hash tables (keys are ours or checked
 * names, so a simple hash is enough) and the constant-time comparison of
 * secrets (tokens, keys, MACs), whose time must not tell where they differ.
 */
#ifndef SL_BYTES_H
#define SL_BYTES_H

#include <stddef.h>
#include <stdint.h>

static inline uint32_t sl_fnv1a(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

/* 1 when a[0..la) and b[0..lb) are equal; the time depends on the lengths
 * only, never on where the bytes differ. */
static inline int sl_ct_equal(const char *a, size_t la, const char *b, size_t lb)
{
	unsigned char d = (unsigned char)(la != lb);

	for (size_t i = 0; i < la && i < lb; i++)
		d |= (unsigned char)(a[i] ^ b[i]);
	return d == 0;
}

#endif
