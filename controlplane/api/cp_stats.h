/*
 * cp_stats.h: the relays' counters folded into Redis (cp_stats.c).
 */
#ifndef CP_STATS_H
#define CP_STATS_H

#include "http/cp_server.h"

/*
 * The reader. Ownership: the caller's (a member of the API's state);
 * cp_stats_follow opens db, cp_stats_stop closes it and the retry timer.
 */
struct cp_stats {
	struct cp_server *s;
	struct cp_rdb *db; /* the blocking XREAD's own connection */
	char last_id[64];  /* where the XREAD goes on */
	int reading;	   /* a read is out */
	int stopping;	   /* cp_stats_stop has begun: no read starts again */
	h2o_timeout_t retry_timeout;
	h2o_timeout_entry_t retry; /* the XREAD again after a failure */
};

/* Start reading on s's loop: 0, or -ENOMEM (cp_stats_stop still frees
 * what was made). */
int cp_stats_follow(struct cp_stats *st, struct cp_server *s);
/* Stop: the read in flight fails, none starts again. */
void cp_stats_stop(struct cp_stats *st);

#endif
