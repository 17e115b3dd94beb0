/*
 * sl_heap.h: give the heap's free pages back to the kernel after a burst.
 */
#ifndef SL_HEAP_H
#define SL_HEAP_H

#include <malloc.h>

/*
 * glibc's malloc_trim, except under AddressSanitizer: ASan owns malloc
 * there, and glibc's trim walks arenas glibc never set up (a SEGV in
 * mtrim, seen in CI on an agent holding two relays). ASan's allocator
 * returns its own memory; nothing is lost by skipping it.
 */
static inline void sl_heap_trim(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return;
#else
	malloc_trim(0);
#endif
}

#endif
