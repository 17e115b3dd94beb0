/*
 * cp_node_pools.h: a warm SSH pool per registered node (cp_node_pools.c).
 */
#ifndef CP_NODE_POOLS_H
#define CP_NODE_POOLS_H

#include "ssh/cp_ssh.h"

/* The node's pool, created from cfg on first use; a reference the caller
 * gives back with cp_node_pool_put. Blocking (may free an evicted pool):
 * call from worker threads, not the HTTP loop. NULL on ENOMEM. */
struct cp_ssh_pool *cp_node_pool_get(const char *id, const struct cp_ssh_config *cfg);
void cp_node_pool_put(struct cp_ssh_pool *pool);
/* The node was deleted: its pool goes once unused (never blocks). */
void cp_node_pool_forget(const char *id);
/* At exit: free the pools nobody holds. */
void cp_node_pools_free(void);

#endif
