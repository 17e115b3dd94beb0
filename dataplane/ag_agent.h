/*
 * ag_agent.h: the agent's engine: one control connection to the relay, a
 * pool of pre-opened data connections, and a local connection per stream.
 */
#ifndef AG_AGENT_H
#define AG_AGENT_H

#include <signal.h>
#include <stdint.h>
#include <sys/socket.h>

#include "pr_msg.h"

#define AG_SERVERS_MAX 8

/* A relay the agent may use; with several, a lost or draining relay makes
 * the agent resume its session on the next one (same URL). Ownership: a value in ag_config. */
struct ag_server {
	struct sockaddr_storage addr;
	socklen_t len;
	char text[256];
	char tls_name[256]; /* the name its certificate must carry */
};

/* Ownership: the caller's (agent_main), with every string borrowed for the agent's life. */
struct ag_config {
	struct ag_server servers[AG_SERVERS_MAX];
	uint32_t nservers;
	struct sockaddr_storage local;
	socklen_t local_len;
	const char *local_text;
	const char *token;
	void *tls;	 /* WOLFSSL_CTX for the relay link, NULL: plaintext */
	int verify_name; /* check servers[].tls_name (0: --insecure) */
	const char *name;
	enum pr_proto proto;
	uint32_t pool;	   /* idle data connections kept ready */
	uint32_t max_data; /* data connections at most (idle and active) */
	uint32_t backoff_max_ms;
	uint32_t nbufs, bufsize; /* receive buffers (nbufs a power of two) */
	int engine;		 /* enum dp_engine */
	int splice;		 /* splice(2) for bulk transfers */
	int json;		 /* JSON events on stdout */
	int status_line;	 /* a live status line on stdout (a terminal) */
	const char *label;	 /* sluice start: the tunnel's NAME, in every JSON event */
};

/* Run until *stop; returns 0, or a negative errno for a fatal refusal. */
int ag_run(const struct ag_config *cfg, volatile sig_atomic_t *stop);

#endif
