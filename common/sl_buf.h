/*
 * sl_buf.h: the one growable buffer of sluice (bytes, doubling), and the one
 * way an array of structs grows. Every layer builds on these instead of
 * keeping its own realloc loop: a request head gathered across reads, a
 * command's output, a Redis command being formatted, a list being collected.
 *
 * struct sl_out is its fixed-size sibling: text written into a buffer the
 * caller owns (a response head, a /metrics page), where what does not fit
 * is flagged once instead of checked at every write.
 *
 * Errors follow STYLE rule 3: 0 or -ENOMEM, and on -ENOMEM the buffer is as
 * it was (nothing lost, nothing half-written). Growth is bounded by the
 * caller's own limits (a head's 64 KiB, a stash's 8 MiB); the buffer refuses
 * a size that would overflow size_t.
 */
#ifndef SL_BUF_H
#define SL_BUF_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SL_BUF_MIN 256 /* the first allocation: most uses hold a line or a head */

/*
 * Ownership: the struct is the caller's (usually a member of a larger one);
 * p is malloc'd by the first append and freed by sl_buf_free(), which leaves
 * the buffer empty and reusable. p[len] is always '\0' once p exists, so a
 * text buffer can be read as a string.
 */
struct sl_buf {
	char *p;
	size_t len, cap;
};

/* Room for n more bytes (and the '\0' after them): 0 or -ENOMEM. */
static inline int sl_buf_reserve(struct sl_buf *b, size_t n)
{
	size_t need, cap;
	char *np;

	if (n > SIZE_MAX / 2 - b->len - 1)
		return -ENOMEM;
	need = b->len + n + 1;
	if (need <= b->cap)
		return 0;
	for (cap = b->cap ? b->cap : SL_BUF_MIN; cap < need; cap *= 2)
		;
	if ((np = realloc(b->p, cap)) == NULL)
		return -ENOMEM;
	b->p = np;
	b->cap = cap;
	return 0;
}

/* Append n bytes of p: 0 or -ENOMEM (the buffer unchanged). */
static inline int sl_buf_append(struct sl_buf *b, const void *p, size_t n)
{
	int e = sl_buf_reserve(b, n);

	if (e < 0)
		return e;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static inline int sl_buf_puts(struct sl_buf *b, const char *s)
{
	return sl_buf_append(b, s, strlen(s));
}

/* Append printf-formatted text: 0, -ENOMEM or -EINVAL (a bad format). */
static inline int sl_buf_printf(struct sl_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline int sl_buf_printf(struct sl_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n, e;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((e = sl_buf_reserve(b, (size_t)n)) < 0)
		return e;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

/* Drop the first n bytes (a consumed prefix), keeping the rest. */
static inline void sl_buf_consume(struct sl_buf *b, size_t n)
{
	if (n >= b->len) {
		b->len = 0;
	} else {
		memmove(b->p, b->p + n, b->len - n);
		b->len -= n;
	}
	if (b->p)
		b->p[b->len] = '\0';
}

/* Take p away from the buffer (the caller frees it); the buffer is empty. */
static inline char *sl_buf_steal(struct sl_buf *b)
{
	char *p = b->p;

	*b = (struct sl_buf){0};
	return p;
}

static inline void sl_buf_free(struct sl_buf *b)
{
	free(b->p);
	*b = (struct sl_buf){0};
}

/* Ownership: p is the caller's buffer of cap bytes; nothing is allocated. */
struct sl_out {
	char *p;
	size_t cap, len;
	int overflow; /* set once a write did not fit: len stops there */
};

static inline void sl_out_put(struct sl_out *o, const void *s, size_t n)
{
	if (o->overflow || n > o->cap - o->len) {
		o->overflow = 1;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static inline void sl_out_puts(struct sl_out *o, const char *s)
{
	sl_out_put(o, s, strlen(s));
}

/* printf into what is left, and a '\0' after it (so cap must leave room). */
static inline void sl_out_printf(struct sl_out *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static inline void sl_out_printf(struct sl_out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->overflow)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->cap - o->len)
		o->overflow = 1;
	else
		o->len += (size_t)n;
}

/*
 * An array of elem-byte items at *vp, *cap of them allocated, grown (doubling
 * from first) until it holds need: 0 or -ENOMEM (the array unchanged). The
 * usual call: sl_array_grow((void **)&v, &cap, n + 1, sizeof(*v), 16).
 */
static inline int sl_array_grow(void **vp, size_t *cap, size_t need, size_t elem, size_t first)
{
	size_t c = *cap ? *cap : first ? first : 1;
	void *nv;

	if (need <= *cap)
		return 0;
	while (c < need) {
		if (c > SIZE_MAX / 2 / elem)
			return -ENOMEM;
		c *= 2;
	}
	if ((nv = realloc(*vp, c * elem)) == NULL)
		return -ENOMEM;
	*vp = nv;
	*cap = c;
	return 0;
}

#endif
