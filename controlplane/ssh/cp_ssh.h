/*
 * cp_ssh.h: the control plane's SSH executor (libssh2 1.10), with which it
 * installs and operates relay hosts.
 *
 *   cp_ssh_config  where and how to connect: host, port, user, an Ed25519 or
 *                  ECDSA key file, ssh-agent or a password; known_hosts
 *                  checked strictly unless told otherwise.
 *   cp_ssh_pool    warm connections to one host (at most max_conns, each with
 *                  at most max_channels channels: sshd's MaxStartups and
 *                  MaxSessions), one I/O thread per connection driving every
 *                  channel on it without blocking, so a hundred commands share
 *                  a few connections and cost milliseconds each.
 *   cp_ssh_run     a command (quoted arguments, environment, directory, sudo
 *                  with the password over stdin, timeout and cancellation that
 *                  kill the remote process group), output streamed line by
 *                  line while it runs; cp_ssh_put / cp_ssh_get move files over
 *                  SFTP with SHA-256 checked on both ends and a rename into
 *                  place.
 *   cp_ssh_diagnose  what is wrong with a host, in plain words with the fix.
 *
 * Every call here blocks its caller (the CLI, or a worker thread of the
 * HTTP server: never its event loop). Errors are a struct cp_ssh_err: a kind
 * callers can branch on (retry a network failure, never a host key mismatch),
 * and a message for a person.
 */
#ifndef CP_SSH_H
#define CP_SSH_H

#include <stddef.h>
#include <stdint.h>

/* What went wrong, for the caller's decision (retryable or not). */
enum cp_ssh_kind {
	CP_SSH_OK = 0,
	CP_SSH_E_CONFIG,    /* the configuration is wrong: nothing was tried */
	CP_SSH_E_NETWORK,   /* refused, unreachable, reset, connect timed out: retryable */
	CP_SSH_E_HOSTKEY,   /* host key not known or changed: never retried */
	CP_SSH_E_AUTH,	    /* every credential refused: never retried */
	CP_SSH_E_ALGO,	    /* no algorithm in common with the server */
	CP_SSH_E_PROTOCOL,  /* the server broke the protocol or hung up mid-session */
	CP_SSH_E_CHANNEL,   /* the server refused a channel or a request on it */
	CP_SSH_E_TIMEOUT,   /* the command ran past its timeout (it was killed) */
	CP_SSH_E_CANCELLED, /* cancelled by the caller (it was killed) */
	CP_SSH_E_SUDO,	    /* sudo refused the password or wanted one not given */
	CP_SSH_E_POLICY,    /* the command is not allowed by the allow/deny lists */
	CP_SSH_E_TRANSFER,  /* a file transfer failed (local file, checksum, rename) */
};

struct cp_ssh_err {
	enum cp_ssh_kind kind;
	int retryable; /* 1: trying again may work (the network) */
	char msg[512]; /* for a person: what failed and, where known, the fix */
};

const char *cp_ssh_kind_name(enum cp_ssh_kind kind); /* "network", "hostkey", ... */
/* Fill e: kind, whether it is retryable (the network), the message. */
void cp_ssh_err_set(struct cp_ssh_err *e, enum cp_ssh_kind kind, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

enum cp_ssh_hostkey_policy {
	CP_SSH_HOSTKEY_STRICT = 0, /* the key must be in known_hosts (the default) */
	CP_SSH_HOSTKEY_ACCEPT_NEW, /* an unknown host's key is added; a changed one refused */
	CP_SSH_HOSTKEY_OFF,	   /* no check (tests of the check itself only) */
};

/* Where and how to reach one host. Strings are copied in by the caller;
 * password and key_passphrase are wiped by cp_ssh_config_wipe. */
struct cp_ssh_config {
	char host[256];
	int port; /* 0: 22 */
	char user[64];
	char key_file[512];	    /* private key; its .pub beside it, or derived */
	char key_passphrase[128];   /* "" if none */
	char password[128];	    /* "" if none: password authentication */
	int use_agent;		    /* try ssh-agent's keys ($SSH_AUTH_SOCK) */
	char key_data[4096];	    /* or the private key itself (PEM / OpenSSH text) */
	char known_hosts[512];	    /* "": ~/.ssh/known_hosts */
	char known_host_line[1024]; /* or one known_hosts line ("[host]:port type key") */
	enum cp_ssh_hostkey_policy hostkey_policy;
	int connect_timeout_ms; /* 0: 10000; TCP connect, handshake and auth each */
	int keepalive_s;	/* 0: 15; a keepalive on idle connections */
	int max_conns;		/* 0: 4 per host (below sshd's MaxStartups 10) */
	int max_channels;	/* 0: 8 per connection (below sshd's MaxSessions 10) */
	int max_commands;	/* 0: max_conns * max_channels running at once */
	int connect_attempts;	/* 0: 3 tries of a retryable connection failure */
};

/* Check a configuration before anything is tried (port, user, a key file
 * that exists and is not world-readable, a usable known_hosts). 0 or
 * -EINVAL with err filled (kind CP_SSH_E_CONFIG). */
int cp_ssh_config_check(const struct cp_ssh_config *c, struct cp_ssh_err *err);
/* Parse "[user@]host[:port]" (or "[v6]:port") into c's host, port, user. */
int cp_ssh_target_parse(const char *target, struct cp_ssh_config *c);
void cp_ssh_config_wipe(struct cp_ssh_config *c);

/* Allow and deny lists: shell glob patterns (fnmatch) matched against the
 * command as the caller wrote it. A deny match refuses; a non-empty allow
 * list must match. Patterns are kept by pointer. Ownership: the caller's; the pool keeps the
 * pointers, which must outlive it. */
struct cp_ssh_policy {
	const char *const *allow;
	size_t nallow;
	const char *const *deny;
	size_t ndeny;
};

struct cp_ssh_pool;

/*
 * A pool for one host. Connects lazily (the first command opens the first
 * connection) unless cp_ssh_pool_connect is called. audit_fd: where one JSON
 * line per command goes (-1: none); secrets (sudo password, the values of
 * environment variables named like *PASS*, *SECRET*, *TOKEN*, *KEY*) are
 * replaced by "***" before anything is written. Returns NULL on ENOMEM.
 */
struct cp_ssh_pool *cp_ssh_pool_new(const struct cp_ssh_config *c, const struct cp_ssh_policy *p,
				    int audit_fd);
/* Open one connection now (the CLI's first-connection figure, a fail-fast
 * check). 0 or a negative errno with err filled. */
int cp_ssh_pool_connect(struct cp_ssh_pool *pool, struct cp_ssh_err *err);
/* Stop every connection (running commands fail with CP_SSH_E_CANCELLED,
 * their remote processes signalled) and free the pool. */
void cp_ssh_pool_free(struct cp_ssh_pool *pool);
/* The configuration the pool connects with (a fresh connection like its own). */
const struct cp_ssh_config *cp_ssh_pool_config(const struct cp_ssh_pool *pool);

/* Counters of a pool, for /metrics, the health monitor and tests. */
struct cp_ssh_pool_stats {
	uint64_t connects; /* connections established */
	uint64_t connect_failures;
	uint64_t connect_retries;  /* retryable failures tried again */
	uint64_t commands;	   /* commands finished, whatever their result */
	uint64_t command_failures; /* finished with an error (not a non-zero exit) */
	uint64_t channel_refusals; /* channel opens refused (MaxSessions): the cap lowered */
	uint64_t broken;	   /* connections found dead and dropped */
	int conns;		   /* open now */
	int channels;		   /* in use now */
	int max_channels;	   /* per connection now (lowered by refusals) */
};
void cp_ssh_pool_stats(struct cp_ssh_pool *pool, struct cp_ssh_pool_stats *st);

/* The last operations' figures (a ring): what the health monitor reads. */
#define CP_SSH_SAMPLES 512
struct cp_ssh_sample {
	double ms;
	int failed;
	uint64_t bytes; /* transfers: bytes moved; commands: 0 */
};
/* Copy up to max samples, oldest first; returns how many. */
int cp_ssh_pool_samples(struct cp_ssh_pool *pool, struct cp_ssh_sample *out, int max);

/* Called from a connection's I/O thread for each complete line (without its
 * newline; a last line without one is delivered at the end). stream: 1
 * stdout, 2 stderr. Must not block for long: it holds up the connection. */
typedef void (*cp_ssh_line_cb)(void *arg, int stream, const char *line, size_t len);

enum cp_ssh_interp { CP_SSH_SH = 0, CP_SSH_BASH, CP_SSH_PYTHON3 };

/* A command to run. argv (NULL-terminated) is quoted word by word; or
 * script: a whole shell command line (run by sh -c) or, with
 * as_script, a script fed to interp on stdin. Ownership: the caller's for the call; every string
 * borrowed. */
struct cp_ssh_cmd {
	const char *const *argv; /* the command, quoted safely; or NULL */
	const char *shell;	 /* a command line for sh -c; or NULL */
	const char *script;	 /* a script's text (cp_ssh_run_script) */
	enum cp_ssh_interp interp;
	const char *const *script_args; /* NULL-terminated, for the script */
	const char *const *env;		/* "NAME=value", NULL-terminated */
	const char *cwd;		/* NULL: the login directory */
	const char *input;		/* stdin, or NULL */
	size_t input_len;
	int sudo;		   /* run as root with sudo */
	const char *sudo_password; /* given over stdin when sudo asks; never logged */
	const char *sudo_user;	   /* NULL: root */
	int timeout_ms;		   /* 0: none */
	cp_ssh_line_cb on_line;	   /* NULL: none */
	void *arg;
	size_t capture_max;   /* bytes of stdout and of stderr kept each; 0: 16 MiB */
	volatile int *cancel; /* set non-zero (any thread) to stop the command */
};

#define CP_SSH_EXIT_NONE (-1) /* no exit status: killed, lost, or the server sent none */

/* A command's outcome. Ownership: the caller's (usually on its stack); out
 * and err are malloc'd by the run and freed by cp_ssh_result_free. */
struct cp_ssh_result {
	int exit_code;	 /* CP_SSH_EXIT_NONE when unknown (see exit_known) */
	int exit_known;	 /* 1 when the exit status is known, 0 when it is not */
	char signal[32]; /* "KILL" when killed by a signal, or "" */
	char *out;	 /* stdout (NUL-terminated, malloc'd: cp_ssh_result_free) */
	size_t out_len;
	char *err; /* stderr, our own markers removed */
	size_t err_len;
	int truncated;		 /* output went past capture_max */
	double duration_ms;	 /* submit to finish */
	double open_ms;		 /* of it, opening the channel */
	double connect_ms;	 /* part of it spent connecting (0 on a warm pool) */
	struct cp_ssh_err error; /* kind CP_SSH_OK unless the run itself failed */
};
void cp_ssh_result_free(struct cp_ssh_result *r);

/* Run a command to its end. 0 when it ran (whatever its exit code), or a
 * negative errno with r->error filled (r's outputs hold what came). */
int cp_ssh_run(struct cp_ssh_pool *pool, const struct cp_ssh_cmd *cmd, struct cp_ssh_result *r);

/* File transfer over SFTP: written to a temporary name beside the target,
 * checked by SHA-256 at both ends, given its mode (and owner, with sudo),
 * then renamed into place; on any failure the temporary file is removed. */
typedef void (*cp_ssh_progress_cb)(void *arg, uint64_t done, uint64_t total);
/* Ownership: the caller's for the call; every string borrowed. */
struct cp_ssh_xfer {
	unsigned mode;	   /* 0: 0644 for uploads, 0600 for downloads */
	const char *owner; /* "user[:group]" for uploads (needs sudo), or NULL */
	int sudo;	   /* the target needs root: staged in /tmp, installed by sudo */
	const char *sudo_password;
	const char
		*validate; /* uploads: sh command run on the staged copy ($1) before
			    * it is put in place ("visudo -cf \"$1\""); failing, nothing changes */
	cp_ssh_progress_cb on_progress;
	void *arg;
	volatile int *cancel;
	int timeout_ms; /* 0: none */
	int dry_run;	/* uploads: only say whether it would change (check mode) */
	/* uploads: the local file's SHA-256 (hex) when the caller has it and
	 * knows the target differs (sync): neither is worked out again. The
	 * host still checks what arrived against it. */
	const char *sha256;
};
struct cp_ssh_xfer_result {
	uint64_t bytes;
	char sha256[65];
	double duration_ms;
	int changed; /* 0 when the target already had this content (nothing sent) */
	struct cp_ssh_err error;
};
int cp_ssh_put(struct cp_ssh_pool *pool, const char *local, const char *remote,
	       const struct cp_ssh_xfer *x, struct cp_ssh_xfer_result *r);
/* CreateRemoteFile: the same from memory. */
int cp_ssh_put_mem(struct cp_ssh_pool *pool, const void *data, size_t len, const char *remote,
		   const struct cp_ssh_xfer *x, struct cp_ssh_xfer_result *r);
int cp_ssh_get(struct cp_ssh_pool *pool, const char *remote, const char *local,
	       const struct cp_ssh_xfer *x, struct cp_ssh_xfer_result *r);

/* Directory sync: every regular file under local_dir made present under
 * remote_dir with the same content and mode, sending only those that
 * differ (each as cp_ssh_put does). Remote extras are left alone. */
struct cp_ssh_sync_result {
	unsigned files;	  /* regular files under local_dir */
	unsigned changed; /* sent */
	uint64_t bytes;
	double duration_ms;
	struct cp_ssh_err error;
};
int cp_ssh_sync(struct cp_ssh_pool *pool, const char *local_dir, const char *remote_dir,
		const struct cp_ssh_xfer *x, struct cp_ssh_sync_result *r);

/* Health monitor: a deep check of each pooled connection (a probe command
 * pinned to it: channel open time and round trip), the host's figures from
 * the pool's recent operations (latency percentiles, failure rate,
 * throughput), trend warnings, and recovery when a probe fails. */
enum cp_ssh_recovery {
	CP_SSH_RECOVER_RECONNECT = 0, /* drop the failed connections, open a fresh one */
	CP_SSH_RECOVER_REBUILD,	      /* any failure: drop every connection, open anew */
	CP_SSH_RECOVER_NONE,	      /* report only */
};
#define CP_SSH_HEALTH_CONNS 32
#define CP_SSH_WARN_MAX	    4
struct cp_ssh_health {
	int ok;	    /* the host answers now (after any recovery) */
	int nconns; /* connections probed */
	struct {
		int ok;
		double open_ms, cmd_ms;
		char error[512];
	} conns[CP_SSH_HEALTH_CONNS];
	unsigned samples; /* operations the figures come from */
	double p50_ms, p90_ms, p99_ms, failure_rate, mb_s;
	int nwarn;
	char warn[CP_SSH_WARN_MAX][200];
	int dropped;	 /* connections dropped by the recovery */
	int reconnected; /* a fresh connection was opened and works */
	char error[512]; /* why the host does not answer, when !ok */
};
int cp_ssh_health_check(struct cp_ssh_pool *pool, enum cp_ssh_recovery how,
			struct cp_ssh_health *h);
/* The trend rule alone, over samples oldest first: warnings written into
 * warn (at most max); returns how many. Latency: the median of the last
 * CP_SSH_TREND_RECENT operations above twice the earlier median and 5 ms
 * more; failures: the recent rate at least 10 % and above twice the
 * earlier rate plus 5 points. Needs CP_SSH_TREND_RECENT earlier samples. */
#define CP_SSH_TREND_RECENT 32
int cp_ssh_trend(const struct cp_ssh_sample *s, int n, char (*warn)[200], int max);

/* Quote s for a POSIX shell (single quotes, ' as '\''), into dst (cap
 * bytes). Returns the length, or -ENOSPC. */
int cp_ssh_quote(char *dst, size_t cap, const char *s);

#endif
