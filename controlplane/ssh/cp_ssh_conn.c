/*
 * cp_ssh_conn.c: one SSH connection made trustworthy: the configuration
 * checked before anything is tried, TCP with a timeout, the host key checked
 * against known_hosts (hashed entries and [host]:port forms, by libssh2's
 * knownhost API), each credential tried in turn, and every failure given a
 * kind (retryable or not) and words a person can act on.
 */
#include "ssh/cp_ssh_int.h"
#include "sl_net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *const kind_names[] = {
	[CP_SSH_OK] = "ok",
	[CP_SSH_E_CONFIG] = "config",
	[CP_SSH_E_NETWORK] = "network",
	[CP_SSH_E_HOSTKEY] = "hostkey",
	[CP_SSH_E_AUTH] = "auth",
	[CP_SSH_E_ALGO] = "algorithm",
	[CP_SSH_E_PROTOCOL] = "protocol",
	[CP_SSH_E_CHANNEL] = "channel",
	[CP_SSH_E_TIMEOUT] = "timeout",
	[CP_SSH_E_CANCELLED] = "cancelled",
	[CP_SSH_E_SUDO] = "sudo",
	[CP_SSH_E_POLICY] = "policy",
	[CP_SSH_E_TRANSFER] = "transfer",
};

const char *cp_ssh_kind_name(enum cp_ssh_kind kind)
{
	if ((size_t)kind >= sizeof(kind_names) / sizeof(kind_names[0]) || !kind_names[kind])
		return "unknown";
	return kind_names[kind];
}

void cp_ssh_err_set(struct cp_ssh_err *e, enum cp_ssh_kind kind, const char *fmt, ...)
{
	va_list ap;

	e->kind = kind;
	e->retryable = kind == CP_SSH_E_NETWORK;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
}

int cp_ssh_rc_is_fatal(int rc)
{
	switch (rc) {
	case LIBSSH2_ERROR_SOCKET_NONE:
	case LIBSSH2_ERROR_SOCKET_SEND:
	case LIBSSH2_ERROR_SOCKET_RECV:
	case LIBSSH2_ERROR_SOCKET_DISCONNECT:
	case LIBSSH2_ERROR_SOCKET_TIMEOUT:
	case LIBSSH2_ERROR_TIMEOUT:
	case LIBSSH2_ERROR_PROTO:
	case LIBSSH2_ERROR_DECRYPT:
	case LIBSSH2_ERROR_BAD_USE: return 1;
	default: return 0;
	}
}

void cp_ssh_err_from(struct cp_ssh_err *e, enum cp_ssh_kind kind, LIBSSH2_SESSION *s,
		     const char *what)
{
	char *m = NULL;
	int rc = s ? libssh2_session_last_error(s, &m, NULL, 0) : 0;

	if (rc == LIBSSH2_ERROR_SOCKET_DISCONNECT || rc == LIBSSH2_ERROR_SOCKET_RECV ||
	    rc == LIBSSH2_ERROR_SOCKET_SEND)
		cp_ssh_err_set(e, kind, "%s: the connection was lost (%s)", what, m ? m : "");
	else
		cp_ssh_err_set(e, kind, "%s: %s (libssh2 %d)", what, m && *m ? m : "failed", rc);
}

/* --- configuration ---------------------------------------------------------- */

int cp_ssh_target_parse(const char *target, struct cp_ssh_config *c)
{
	const char *at = strrchr(target, '@'), *h = at ? at + 1 : target, *colon, *end;
	size_t hl;

	if (at) {
		if ((size_t)(at - target) >= sizeof(c->user) || at == target)
			return -EINVAL;
		memcpy(c->user, target, (size_t)(at - target));
		c->user[at - target] = '\0';
	}
	if (*h == '[') { /* [v6] or [host]:port */
		end = strchr(h, ']');
		if (!end)
			return -EINVAL;
		hl = (size_t)(end - h - 1);
		h++;
		colon = end[1] == ':' ? end + 1 : NULL;
		if (end[1] && !colon)
			return -EINVAL;
	} else {
		colon = strchr(h, ':');
		if (colon && strchr(colon + 1, ':')) /* a bare IPv6 address */
			colon = NULL;
		hl = colon ? (size_t)(colon - h) : strlen(h);
	}
	if (hl == 0 || hl >= sizeof(c->host))
		return -EINVAL;
	memcpy(c->host, h, hl);
	c->host[hl] = '\0';
	if (colon) {
		char *e;
		long p = strtol(colon + 1, &e, 10);

		if (*e || p < 1 || p > 65535)
			return -EINVAL;
		c->port = (int)p;
	}
	return 0;
}

void cp_ssh_config_wipe(struct cp_ssh_config *c)
{
	explicit_bzero(c->password, sizeof(c->password));
	explicit_bzero(c->key_passphrase, sizeof(c->key_passphrase));
	explicit_bzero(c->key_data, sizeof(c->key_data));
}

static void default_known_hosts(const struct cp_ssh_config *c, char *out, size_t cap)
{
	const char *home = getenv("HOME");

	if (c->known_hosts[0])
		snprintf(out, cap, "%s", c->known_hosts);
	else
		snprintf(out, cap, "%s/.ssh/known_hosts", home && *home ? home : "/root");
}

int cp_ssh_config_check(const struct cp_ssh_config *c, struct cp_ssh_err *err)
{
	struct stat st;

	if (!c->host[0])
		goto fail_host;
	if (c->port < 0 || c->port > 65535) {
		cp_ssh_err_set(err, CP_SSH_E_CONFIG, "port %d is not a TCP port", c->port);
		return -EINVAL;
	}
	if (!c->user[0]) {
		cp_ssh_err_set(err, CP_SSH_E_CONFIG, "no user: give user@host or --user");
		return -EINVAL;
	}
	if (!c->key_file[0] && !c->key_data[0] && !c->password[0] && !c->use_agent) {
		cp_ssh_err_set(err, CP_SSH_E_CONFIG,
			       "no credential: give a key file (--key), ssh-agent (--agent) "
			       "or a password");
		return -EINVAL;
	}
	if (c->key_file[0]) {
		if (stat(c->key_file, &st) != 0) {
			cp_ssh_err_set(err, CP_SSH_E_CONFIG, "key file %s: %s", c->key_file,
				       strerror(errno));
			return -EINVAL;
		}
		if (st.st_mode & 0077) {
			cp_ssh_err_set(err, CP_SSH_E_CONFIG,
				       "key file %s is readable by others (mode %03o): "
				       "chmod 600 it",
				       c->key_file, (unsigned)(st.st_mode & 0777));
			return -EINVAL;
		}
	}
	if (c->hostkey_policy == CP_SSH_HOSTKEY_STRICT && !c->known_host_line[0]) {
		char kh[512];

		default_known_hosts(c, kh, sizeof(kh));
		if (access(kh, R_OK) != 0) {
			cp_ssh_err_set(err, CP_SSH_E_CONFIG,
				       "known_hosts %s: %s (strict host key checking needs it: "
				       "ssh-keyscan the host into it)",
				       kh, strerror(errno));
			return -EINVAL;
		}
	}
	return 0;
fail_host:
	cp_ssh_err_set(err, CP_SSH_E_CONFIG, "no host");
	return -EINVAL;
}

/* --- TCP ---------------------------------------------------------------------- */

/* sl_connect_tcp, plus TCP_NODELAY: SSH packets are small and a command's
 * round trips must not wait on Nagle's algorithm. */
static int connect_one(const struct addrinfo *ai, int timeout_ms)
{
	struct sockaddr_storage ss;
	int one = 1, fd;

	if (ai->ai_addrlen > sizeof(ss))
		return -EAFNOSUPPORT;
	memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
	fd = sl_connect_tcp(&ss, ai->ai_addrlen, timeout_ms);
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int cp_ssh_tcp_connect(const char *host, int port, int timeout_ms, struct cp_ssh_err *err)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	char ps[8];
	int fd = -EHOSTUNREACH, g;

	snprintf(ps, sizeof(ps), "%d", port);
	g = getaddrinfo(host, ps, &hints, &res);
	if (g != 0) {
		cp_ssh_err_set(err, CP_SSH_E_NETWORK, "cannot resolve %s: %s", host,
			       gai_strerror(g));
		return -EHOSTUNREACH;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = connect_one(ai, timeout_ms);
		if (fd >= 0)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0)
		cp_ssh_err_set(err, CP_SSH_E_NETWORK, "connect to %s port %d: %s%s", host, port,
			       strerror(-fd),
			       fd == -ECONNREFUSED ? " (is sshd running and listening there?)"
			       : fd == -ETIMEDOUT
				       ? " (a firewall dropping packets, or the host down)"
				       : "");
	return fd;
}

/* --- session ------------------------------------------------------------------ */

/* libssh2 reads and writes through these, so the connection's thread knows
 * whether a pass over its channels read anything (see cp_ssh_pool.c). */
static ssize_t counted_recv(libssh2_socket_t fd, void *buf, size_t len, int flags, void **abstract)
{
	struct cp_ssh_conn *c = *abstract;
	ssize_t n = recv(fd, buf, len, flags);

	if (n < 0)
		return -errno;
	if (c)
		c->rx += (uint64_t)n;
	return n;
}

static ssize_t counted_send(libssh2_socket_t fd, const void *buf, size_t len, int flags,
			    void **abstract)
{
	struct cp_ssh_conn *c = *abstract;
	ssize_t n = send(fd, buf, len, flags | MSG_NOSIGNAL);

	if (n < 0)
		return -errno;
	if (c)
		c->tx += (uint64_t)n;
	return n;
}

static int key_type_bits(int type)
{
	switch (type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
	case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
	case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519;
	default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
	}
}

/* "SHA256:base64" of the host key, as ssh-keygen -l shows it. */
static void fingerprint(LIBSSH2_SESSION *s, char *out, size_t cap)
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *h =
		(const unsigned char *)libssh2_hostkey_hash(s, LIBSSH2_HOSTKEY_HASH_SHA256);
	size_t o = 0;

	if (!h || cap < 52) {
		snprintf(out, cap, "?");
		return;
	}
	o = (size_t)snprintf(out, cap, "SHA256:");
	for (int i = 0; i < 32; i += 3) {
		unsigned v = (unsigned)h[i] << 16 | (i + 1 < 32 ? (unsigned)h[i + 1] << 8 : 0) |
			     (i + 2 < 32 ? h[i + 2] : 0);
		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		if (i + 1 < 32)
			out[o++] = b64[v >> 6 & 63];
		if (i + 2 < 32)
			out[o++] = b64[v & 63];
	}
	out[o] = '\0';
}

static int check_host_key(const struct cp_ssh_config *c, LIBSSH2_SESSION *s, struct cp_ssh_err *err)
{
	LIBSSH2_KNOWNHOSTS *kh;
	struct libssh2_knownhost *found = NULL;
	char path[512], fp[64];
	size_t len;
	int type, rc, port = c->port ? c->port : 22, res = -EPERM;
	const char *key = libssh2_session_hostkey(s, &len, &type);

	if (c->hostkey_policy == CP_SSH_HOSTKEY_OFF)
		return 0;
	if (!key) {
		cp_ssh_err_from(err, CP_SSH_E_PROTOCOL, s, "no host key from the server");
		return -EPROTO;
	}
	fingerprint(s, fp, sizeof(fp));
	default_known_hosts(c, path, sizeof(path));
	kh = libssh2_knownhost_init(s);
	if (!kh)
		return -ENOMEM;
	if (c->known_host_line[0]) {
		snprintf(path, sizeof(path), "the registered host key");
		if (libssh2_knownhost_readline(kh, c->known_host_line, strlen(c->known_host_line),
					       LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0) {
			cp_ssh_err_set(err, CP_SSH_E_CONFIG,
				       "the registered host key is not a "
				       "known_hosts line");
			goto out;
		}
	} else if (libssh2_knownhost_readfile(kh, path, LIBSSH2_KNOWNHOST_FILE_OPENSSH) < 0 &&
		   c->hostkey_policy == CP_SSH_HOSTKEY_STRICT) {
		cp_ssh_err_set(err, CP_SSH_E_HOSTKEY, "cannot read known_hosts %s", path);
		goto out;
	}
	rc = libssh2_knownhost_checkp(kh, c->host, port, key, len,
				      LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW |
					      key_type_bits(type),
				      &found);
	if (rc == LIBSSH2_KNOWNHOST_CHECK_MATCH) {
		res = 0;
	} else if (rc == LIBSSH2_KNOWNHOST_CHECK_MISMATCH) {
		cp_ssh_err_set(
			err, CP_SSH_E_HOSTKEY,
			"host key for %s port %d changed: the server shows %s, unlike the key "
			"recorded in %s; this may be an attack. If the host was reinstalled, "
			"remove its line (ssh-keygen -R '[%s]:%d' -f %s) and add the new key",
			c->host, port, fp, path, c->host, port, path);
	} else if (rc == LIBSSH2_KNOWNHOST_CHECK_NOTFOUND &&
		   c->hostkey_policy == CP_SSH_HOSTKEY_ACCEPT_NEW) {
		char name[300];

		snprintf(name, sizeof(name), port == 22 ? "%s" : "[%s]:%d", c->host, port);
		if (libssh2_knownhost_addc(kh, name, NULL, key, len, NULL, 0,
					   LIBSSH2_KNOWNHOST_TYPE_PLAIN |
						   LIBSSH2_KNOWNHOST_KEYENC_RAW |
						   key_type_bits(type),
					   NULL) == 0 &&
		    libssh2_knownhost_writefile(kh, path, LIBSSH2_KNOWNHOST_FILE_OPENSSH) == 0)
			res = 0;
		else
			cp_ssh_err_set(err, CP_SSH_E_HOSTKEY, "cannot record %s's key in %s", name,
				       path);
	} else {
		cp_ssh_err_set(err, CP_SSH_E_HOSTKEY,
			       "host %s port %d (key %s) is not in %s: add it "
			       "(ssh-keyscan -p %d %s >> %s) after checking the fingerprint",
			       c->host, port, fp, path, port, c->host, path);
	}
out:
	libssh2_knownhost_free(kh);
	return res;
}

static int try_key(const struct cp_ssh_config *c, LIBSSH2_SESSION *s, char *why, size_t cap)
{
	const char *kname = c->key_data[0] ? "(the registered key)" : c->key_file;
	char *m = NULL;
	int rc = c->key_data[0]
			 ? libssh2_userauth_publickey_frommemory(
				   s, c->user, strlen(c->user), NULL, 0, c->key_data,
				   strlen(c->key_data), c->key_passphrase)
			 : libssh2_userauth_publickey_fromfile_ex(s, c->user,
								  (unsigned)strlen(c->user), NULL,
								  c->key_file, c->key_passphrase);

	if (rc == 0)
		return 0;
	libssh2_session_last_error(s, &m, NULL, 0);
	if (rc == LIBSSH2_ERROR_FILE || rc == LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED)
		snprintf(why, cap,
			 "key %.200s could not be used (%.100s; wrong passphrase, or not an "
			 "Ed25519/ECDSA key libssh2 1.10 reads)",
			 kname, m ? m : "");
	else if (rc == LIBSSH2_ERROR_AUTHENTICATION_FAILED ||
		 rc == LIBSSH2_ERROR_PUBLICKEY_UNRECOGNIZED)
		snprintf(why, cap,
			 "the server refused key %.200s for %s (not in its authorized_keys?)",
			 kname, c->user);
	else
		snprintf(why, cap, "key %.200s: %.100s (libssh2 %d)", kname, m ? m : "", rc);
	return -EACCES; /* libssh2's code is in why */
}

static int try_agent(const struct cp_ssh_config *c, LIBSSH2_SESSION *s, char *why, size_t cap)
{
	LIBSSH2_AGENT *a = libssh2_agent_init(s);
	struct libssh2_agent_publickey *id = NULL, *prev = NULL;
	int rc = -EACCES, n = 0;

	if (!a || libssh2_agent_connect(a) != 0) {
		snprintf(why, cap, "no ssh-agent to ask (SSH_AUTH_SOCK)");
		goto out;
	}
	if (libssh2_agent_list_identities(a) == 0) {
		while (libssh2_agent_get_identity(a, &id, prev) == 0 && n < 64) {
			n++;
			if (libssh2_agent_userauth(a, c->user, id) == 0) {
				rc = 0;
				break;
			}
			prev = id;
		}
	}
	if (rc != 0)
		snprintf(why, cap, "the server refused all %d ssh-agent keys for %s", n, c->user);
	libssh2_agent_disconnect(a);
out:
	if (a)
		libssh2_agent_free(a);
	return rc;
}

/* Each configured method in turn; err names why each one failed. */
static int authenticate(const struct cp_ssh_config *c, LIBSSH2_SESSION *s, struct cp_ssh_err *err)
{
	char whys[3][400] = {{0}};
	const char *offered = libssh2_userauth_list(s, c->user, (unsigned)strlen(c->user));
	int n = 0;

	if (!offered) {
		if (libssh2_userauth_authenticated(s))
			return 0;
		cp_ssh_err_from(err, CP_SSH_E_AUTH, s, "asking which methods the server accepts");
		return -EACCES;
	}
	if (c->key_file[0] || c->key_data[0]) {
		if (!strstr(offered, "publickey"))
			snprintf(whys[n], sizeof(whys[n]), "publickey not offered (server: %s)",
				 offered);
		else if (try_key(c, s, whys[n], sizeof(whys[n])) == 0)
			return 0;
		n++;
	}
	if (c->use_agent) {
		if (try_agent(c, s, whys[n], sizeof(whys[n])) == 0)
			return 0;
		n++;
	}
	if (c->password[0]) {
		if (!strstr(offered, "password"))
			snprintf(whys[n], sizeof(whys[n]), "password not offered (server: %s)",
				 offered);
		else if (libssh2_userauth_password_ex(s, c->user, (unsigned)strlen(c->user),
						      c->password, (unsigned)strlen(c->password),
						      NULL) == 0)
			return 0;
		else
			snprintf(whys[n], sizeof(whys[n]), "the server refused the password for %s",
				 c->user);
		n++;
	}
	cp_ssh_err_set(err, CP_SSH_E_AUTH, "%s@%s: authentication refused: %s%s%s%s%s", c->user,
		       c->host, whys[0], n > 1 ? "; " : "", n > 1 ? whys[1] : "", n > 2 ? "; " : "",
		       n > 2 ? whys[2] : "");
	return -EACCES;
}

/* Ask for the host key type we know. libssh2 1.10 puts ECDSA first, so a
 * host with several keys shows its ECDSA one, and a known_hosts that holds
 * its Ed25519 key (what ssh-keyscan -t ed25519 and the nodes API give) would
 * not match. Like OpenSSH, prefer the type on record; Ed25519 by default. */
static void prefer_host_key(const struct cp_ssh_config *c, LIBSSH2_SESSION *s)
{
	static const char *const order[] = {"ssh-ed25519",
					    "ecdsa-sha2-nistp256",
					    "ecdsa-sha2-nistp384",
					    "ecdsa-sha2-nistp521",
					    "rsa-sha2-512",
					    "rsa-sha2-256",
					    "ssh-rsa"};
	const char **algs = NULL;
	char pref[400] = "", type[64] = "";
	const char *sp = strchr(c->known_host_line, ' ');
	int n = libssh2_session_supported_algs(s, LIBSSH2_METHOD_HOSTKEY, &algs);
	size_t o = 0;

	if (n <= 0)
		return;
	if (c->known_host_line[0] && sp)
		sscanf(sp + 1, "%63s", type);
	/* Only names this libssh2 knows: given one it does not, 1.10's
	 * libssh2_session_method_pref removes it with an overlapping memcpy. */
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
			int known = 0, first = strcmp(order[i], type) == 0;

			for (int k = 0; k < n && !known; k++)
				known = strcmp(algs[k], order[i]) == 0;
			if (known && first == (pass == 0) &&
			    o + strlen(order[i]) + 2 < sizeof(pref))
				o += (size_t)snprintf(pref + o, sizeof(pref) - o, "%s%s",
						      o ? "," : "", order[i]);
		}
	libssh2_free(s, algs);
	if (o)
		libssh2_session_method_pref(s, LIBSSH2_METHOD_HOSTKEY, pref);
}

static int handshake(const struct cp_ssh_config *c, LIBSSH2_SESSION *s, int fd,
		     struct cp_ssh_err *err)
{
	int rc = libssh2_session_handshake(s, fd);

	if (rc == 0)
		return 0;
	if (rc == LIBSSH2_ERROR_KEX_FAILURE)
		cp_ssh_err_from(
			err, CP_SSH_E_ALGO, s,
			"no key exchange, host key, cipher or MAC in common with the server "
			"(sluice-control ssh diagnose names them)");
	else if (rc == LIBSSH2_ERROR_TIMEOUT || rc == LIBSSH2_ERROR_SOCKET_DISCONNECT ||
		 rc == LIBSSH2_ERROR_SOCKET_RECV || rc == LIBSSH2_ERROR_SOCKET_SEND ||
		 rc == LIBSSH2_ERROR_BANNER_RECV)
		cp_ssh_err_from(err, CP_SSH_E_NETWORK, s,
				"SSH handshake (sshd busy: MaxStartups?)");
	else
		cp_ssh_err_from(err, CP_SSH_E_PROTOCOL, s, "SSH handshake");
	(void)c;
	return -EPROTO;
}

int cp_ssh_connect(const struct cp_ssh_config *c, struct cp_ssh_conn *conn, LIBSSH2_SESSION **out,
		   int *fdout, struct cp_ssh_err *err)
{
	int timeout = c->connect_timeout_ms > 0 ? c->connect_timeout_ms : 10000;
	int fd = cp_ssh_tcp_connect(c->host, c->port ? c->port : 22, timeout, err), rc;
	LIBSSH2_SESSION *s;

	if (fd < 0)
		return fd;
	s = libssh2_session_init_ex(NULL, NULL, NULL, conn);
	if (!s) {
		close(fd);
		cp_ssh_err_set(err, CP_SSH_E_PROTOCOL, "out of memory");
		return -ENOMEM;
	}
	libssh2_session_callback_set(s, LIBSSH2_CALLBACK_RECV, (void *)counted_recv);
	libssh2_session_callback_set(s, LIBSSH2_CALLBACK_SEND, (void *)counted_send);
	libssh2_session_set_blocking(s, 1);
	libssh2_session_set_timeout(s, timeout);
	prefer_host_key(c, s);
	rc = handshake(c, s, fd, err);
	if (rc == 0)
		rc = check_host_key(c, s, err);
	if (rc == 0)
		rc = authenticate(c, s, err);
	if (rc != 0) {
		cp_ssh_disconnect(s, fd);
		return rc;
	}
	libssh2_session_set_timeout(s, 0);
	libssh2_session_set_blocking(s, 0);
	libssh2_keepalive_config(s, 1, (unsigned)(c->keepalive_s > 0 ? c->keepalive_s : 15));
	*out = s;
	*fdout = fd;
	return 0;
}

void cp_ssh_disconnect(LIBSSH2_SESSION *s, int fd)
{
	if (s) {
		/* Blocking, briefly: a polite goodbye, not a wait on a dead peer. */
		libssh2_session_set_blocking(s, 1);
		libssh2_session_set_timeout(s, 500);
		libssh2_session_disconnect(s, "sluice: closing");
		libssh2_session_free(s);
	}
	if (fd >= 0)
		close(fd);
}
