// bm_tls.cc: what a new TLS data connection costs, both ends in one thread
// with the settings sluice gives every context (dp_tls_ctx_setup: record
// crypto, cipher order, key exchange groups) and a P-256 certificate, as an
// operator's Let's Encrypt ECDSA one. Bytes go through memory, so the figures
// are the handshake's CPU alone: a full handshake (certificate verified)
// against a resumed one (the agent's pool refills resume the ticket of its
// control connection), by key exchange group; and the heap one open
// connection holds at each end after its handshake (issue 17: TLS memory per
// stream).
#include <benchmark/benchmark.h>

#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>

#include "dp_tls.h"
#include "dp_tls_accel.h"
}

namespace
{

// One direction of the connection: bytes written by one end, read by the other.
struct pipe_buf {
	std::string data;
	size_t off = 0;
};

struct end {
	pipe_buf *in, *out;
};

int mem_recv(WOLFSSL *, char *buf, int sz, void *ctx)
{
	pipe_buf *p = static_cast<end *>(ctx)->in;
	size_t n = p->data.size() - p->off;

	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if (n > (size_t)sz)
		n = (size_t)sz;
	memcpy(buf, p->data.data() + p->off, n);
	p->off += n;
	if (p->off == p->data.size()) {
		p->data.clear();
		p->off = 0;
	}
	return (int)n;
}

int mem_send(WOLFSSL *, char *buf, int sz, void *ctx)
{
	static_cast<end *>(ctx)->out->data.append(buf, (size_t)sz);
	return sz;
}

// The certificate and key, made once per process with the openssl tool (as
// the integration tests' PKI is); a self-signed CA certificate the client
// trusts, so the full handshake verifies a chain as the agent does.
struct pki {
	std::string dir, cert, key;
	bool ok = false;
	pki()
	{
		char tmpl[] = "/tmp/bm-tls-XXXXXX";
		if (mkdtemp(tmpl) == nullptr)
			return;
		dir = tmpl;
		cert = dir + "/cert.pem";
		key = dir + "/key.pem";
		std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
				  "-nodes -days 1 -subj /CN=localhost -addext "
				  "subjectAltName=DNS:localhost -keyout " +
				  key + " -out " + cert + " 2>/dev/null";
		ok = system(cmd.c_str()) == 0;
	}
	~pki()
	{
		unlink(cert.c_str());
		unlink(key.c_str());
		rmdir(dir.c_str());
	}
};

struct ctxs {
	WOLFSSL_CTX *server = nullptr, *client = nullptr;
	explicit ctxs(const pki &p)
	{
		dp_tls_global_init();
		dp_tls_accel_init("auto");
		server = wolfSSL_CTX_new(wolfSSLv23_server_method());
		client = wolfSSL_CTX_new(wolfSSLv23_client_method());
		for (WOLFSSL_CTX *c : {server, client}) {
			wolfSSL_CTX_SetIORecv(c, mem_recv);
			wolfSSL_CTX_SetIOSend(c, mem_send);
			dp_tls_ctx_setup(c);
		}
		wolfSSL_CTX_use_certificate_chain_file(server, p.cert.c_str());
		wolfSSL_CTX_use_PrivateKey_file(server, p.key.c_str(), WOLFSSL_FILETYPE_PEM);
		wolfSSL_CTX_load_verify_locations(client, p.cert.c_str(), nullptr);
		wolfSSL_CTX_set_verify(client, WOLFSSL_VERIFY_PEER, nullptr);
	}
	~ctxs()
	{
		wolfSSL_CTX_free(server);
		wolfSSL_CTX_free(client);
	}
};

// A client and a server joined by two pipes.
struct conn {
	pipe_buf c2s, s2c;
	end ce{&s2c, &c2s}, se{&c2s, &s2c};
	WOLFSSL *c, *s;
	conn(ctxs &x, int group, WOLFSSL_SESSION *resume)
	{
		c = wolfSSL_new(x.client);
		s = wolfSSL_new(x.server);
		wolfSSL_SetIOReadCtx(c, &ce);
		wolfSSL_SetIOWriteCtx(c, &ce);
		wolfSSL_SetIOReadCtx(s, &se);
		wolfSSL_SetIOWriteCtx(s, &se);
		wolfSSL_check_domain_name(c, "localhost");
		if (group)
			wolfSSL_UseKeyShare(c, (word16)group);
		if (resume)
			wolfSSL_set_session(c, resume);
	}
	~conn()
	{
		wolfSSL_free(c);
		wolfSSL_free(s);
	}
	// Both sides to the end of the handshake, then the client reads the
	// server's session ticket (TLS 1.3 sends it after). Bounded: a
	// handshake is a few flights.
	bool handshake()
	{
		bool cd = false, sd = false;
		for (int i = 0; i < 16 && !(cd && sd); i++) {
			if (!cd)
				cd = wolfSSL_connect(c) == WOLFSSL_SUCCESS;
			if (!sd)
				sd = wolfSSL_accept(s) == WOLFSSL_SUCCESS;
		}
		char b[16];
		wolfSSL_read(c, b, sizeof(b)); // the ticket; no data: WANT_READ
		return cd && sd;
	}
};

pki &the_pki()
{
	static pki p;
	return p;
}

ctxs &the_ctxs()
{
	static ctxs x(the_pki());
	return x;
}

const int groups[] = {WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1};

// range(0): the key share's group (index in groups); range(1): 1 resumes;
// range(2): 1 drops wolfSSL's ECC tables after each handshake, as the agent
// does (dp_tls.c), so the certificate is verified without them.
void BM_TlsHandshake(benchmark::State &state)
{
	int group = groups[state.range(0)];
	bool resume = state.range(1) != 0, drop = state.range(2) != 0;
	if (!the_pki().ok) {
		state.SkipWithError("openssl could not make a certificate");
		return;
	}
	ctxs &x = the_ctxs();
	WOLFSSL_SESSION *sess = nullptr;
	if (resume) {
		conn first(x, group, nullptr);
		if (!first.handshake()) {
			state.SkipWithError("first handshake failed");
			return;
		}
		sess = wolfSSL_get1_session(first.c);
	}
	int64_t resumed = 0;
	for (auto _ : state) {
		conn k(x, group, sess);
		if (!k.handshake()) {
			state.SkipWithError("handshake failed");
			break;
		}
		resumed += wolfSSL_session_reused(k.c);
		if (drop)
			wc_ecc_fp_free();
	}
	state.counters["resumed"] =
		benchmark::Counter((double)resumed, benchmark::Counter::kAvgIterations);
	state.SetLabel(std::string(group == WOLFSSL_ECC_X25519 ? "x25519" : "p256") +
		       (resume ? " resumed" : " full") + (drop ? ", ECC tables dropped" : ""));
	if (sess)
		wolfSSL_SESSION_free(sess);
}
BENCHMARK(BM_TlsHandshake)
	->Args({0, 0, 0})
	->Args({1, 0, 0})
	->Args({0, 1, 0})
	->Args({1, 1, 0})
	->Args({0, 0, 1})
	->Args({0, 1, 1})
	->Unit(benchmark::kMicrosecond);

// Heap held per open connection at each end after its handshake, full or
// resumed (and what
// wolfSSL_new allocates before it): 32 connections kept open, glibc's count
// of bytes in use (mallinfo2) before and after, so freed handshake state
// does not count.
void BM_TlsConnMemory(benchmark::State &state)
{
	const int n = 32;
	if (!the_pki().ok) {
		state.SkipWithError("openssl could not make a certificate");
		return;
	}
	ctxs &x = the_ctxs();
	WOLFSSL_SESSION *sess = nullptr;
	if (state.range(0)) {
		conn first(x, WOLFSSL_ECC_X25519, nullptr);
		first.handshake();
		sess = wolfSSL_get1_session(first.c);
	}
	double fresh = 0, client = 0, server = 0;
	for (auto _ : state) {
		std::vector<conn *> open;
		size_t base = mallinfo2().uordblks;
		for (int i = 0; i < n; i++)
			open.push_back(new conn(x, WOLFSSL_ECC_X25519, sess));
		size_t made = mallinfo2().uordblks - base;
		for (conn *k : open) {
			k->handshake();
			k->c2s.data.shrink_to_fit(); // the pipes are ours, not TLS's
			k->s2c.data.shrink_to_fit();
		}
		size_t both = mallinfo2().uordblks - base;
		for (conn *k : open) {
			wolfSSL_free(k->s);
			k->s = nullptr;
		}
		size_t clients = mallinfo2().uordblks - base;
		for (conn *k : open)
			delete k;
		fresh = (double)made / n;
		client = (double)clients / n;
		server = (double)(both - clients) / n;
	}
	state.counters["new_pair_bytes"] = fresh;
	state.counters["client_bytes"] = client;
	state.counters["server_bytes"] = server;
	state.SetLabel(sess ? "resumed" : "full");
	if (sess)
		wolfSSL_SESSION_free(sess);
}
// range(0): 1 resumes a session (as the agent's data connections do).
BENCHMARK(BM_TlsConnMemory)->Arg(0)->Arg(1)->Iterations(3)->Unit(benchmark::kMillisecond);

} // namespace

BENCHMARK_MAIN();
