/*
 * cp_bridge.h: the one way a thread hands work back to the h2o loop (the
 * domain checks, the provisioning jobs, the node commands: each runs on a
 * thread of its own, never on the loop).
 *
 * A bridge is one pipe per server: its read end is a socket of the loop,
 * its write end takes a byte when the list of ready ports goes from empty
 * to not. A port is embedded in the thread's work (struct vjob, struct
 * cp_job, struct nexec). The thread calls cp_bridge_wake(port) when it has
 * something for the loop; the port's on_wake runs on the loop soon after,
 * once however many wakes came meanwhile (they coalesce: a port is on the
 * ready list at most once). Nothing travels through the bridge but that:
 * the results stay in the work's own struct, under its own lock, so a wake
 * allocates nothing and cannot fail.
 *
 * Why not h2o_multithread_send_message (libh2o-evloop 2.2.5 has it): its
 * queue dies with the context at exit while a thread may still run, a
 * message may not be sent again until the receiver has taken it (so every
 * wake would need a message of its own, allocated), and a message sent
 * cannot be taken back when its owner goes first.
 *
 * Ownership and lifetimes:
 *   - struct cp_bridge: made by cp_server_create (cp_bridge_create), one
 *     reference the server's, dropped by cp_bridge_close at exit; one more
 *     per port opened, dropped by cp_bridge_port_release. The last one
 *     frees it (on whichever thread), so a thread still running after the
 *     server is gone wakes into a closed bridge, never freed memory.
 *   - struct cp_bridge_port: the owner's (a member of its struct). Opened
 *     on the loop; woken from any thread while the owner's struct lives;
 *     closed on the loop before the loop drops its own reference to the
 *     owner (so the owner outlives any on_wake still to run); released by
 *     whoever frees that struct (the last of its references, loop's or
 *     thread's).
 *   - A client that hung up meanwhile is the owner's business: its on_wake
 *     finds op->req NULL (cp_op's guard) or its generator stopped, and
 *     ends its own part; the bridge knows nothing of requests.
 *   - At exit (cp_bridge_close): wakes not yet run are dropped, later ones
 *     ignored; the owners' stop hooks have waited for their threads (a
 *     bound each) before, and what a thread still holds is freed by its
 *     last reference, if it ever returns.
 */
#ifndef CP_BRIDGE_H
#define CP_BRIDGE_H

#include <h2o/linklist.h>

struct cp_bridge;
struct cp_bridge_port;

typedef void (*cp_bridge_cb)(struct cp_bridge_port *p);

/* A value in its owner's struct; its fields are the bridge's. */
struct cp_bridge_port {
	struct cp_bridge *b; /* NULL until opened */
	cp_bridge_cb on_wake;
	h2o_linklist_t ready; /* linked while on the ready list (under b's lock) */
	int open;	      /* wakes reach on_wake (under b's lock) */
};

/* A bridge on loop (an h2o_evloop_t, as void * to keep h2o out of this
 * header): 0, or a negative errno. */
int cp_bridge_create(struct cp_bridge **out, void *loop);
/* On the loop, at exit: no on_wake runs any more; the server's reference
 * dropped. NULL is nothing. */
void cp_bridge_close(struct cp_bridge *b);

/* On the loop: p's wakes run on_wake(p) on the loop from now on. */
void cp_bridge_port_open(struct cp_bridge *b, struct cp_bridge_port *p, cp_bridge_cb on_wake);
/* Any thread, while p's owner lives: on_wake(p) runs on the loop soon
 * (once for any number of wakes before it runs). Never blocks. */
void cp_bridge_wake(struct cp_bridge_port *p);
/* On the loop, before it lets go of p's owner: no on_wake for p any more
 * (a wake pending is dropped). Closing a closed port is nothing. */
void cp_bridge_port_close(struct cp_bridge_port *p);
/* Where p's owner is freed (any thread; after no wake can come): closes it
 * if open and drops its reference on the bridge. A port never opened is
 * nothing. */
void cp_bridge_port_release(struct cp_bridge_port *p);

#endif
