/*
 * cp_api_state.h: what the API's routes keep per server (s->api).
 */
#ifndef CP_API_STATE_H
#define CP_API_STATE_H

#include "api/cp_stats.h"

/*
 * Ownership: made by the table's start hook (api/cp_api.c), freed by its
 * dispose hook; the HTTP layer only holds the pointer.
 */
struct cp_api_state {
	struct cp_stats stats; /* the relays' counters, folded */
	int verifying;	       /* domain verifications on their threads */
};

#endif
