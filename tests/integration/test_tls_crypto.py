"""Which code seals the TLS records (issue 17): libcrypto's AES-GCM through
wolfSSL's crypto callback where the CPU accelerates it, wolfSSL's own
portable C otherwise or with --tls-crypto wolfssl; probed at start, logged,
counted in /metrics, and interoperable both ways. Real relay, agent, app
and curl."""
import hashlib
import subprocess
import urllib.request

import pytest

import apps
import harness

N = 8 << 20


def download(relay, agent, n=N):
    host = agent.url.split("//", 1)[1].split("/", 1)[0]
    req = urllib.request.Request("http://127.0.0.1:%d/bytes?n=%d" % (relay.http_port, n),
                                 headers={"Host": host})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
    assert len(body) == n and hashlib.sha256(body).hexdigest() == apps.bytes_sha256(n)


def accel_metrics(relay):
    m = harness.metrics(relay)
    return (m["sluice_tls_accel"], m["sluice_tls_accel_records_total"],
            m["sluice_tls_accel_bytes_total"], m["sluice_tls_accel_fallbacks_total"])


def cpu_has_aesni():
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    return " aes " in flags and " pclmulqdq " in flags


needs_aesni = pytest.mark.skipif(not cpu_has_aesni(), reason="this CPU has no AES-NI")


@needs_aesni
def test_auto_seals_records_with_libcrypto_and_counts_them(binary, tmp_path, app, start_agent):
    relay = harness.Relay(binary("sluice-relay"), tmp_path)
    try:
        a = start_agent(app.port, relay.server, extra=["--name", "fast"])
        download(relay, a)
        on, records, nbytes, fallbacks = accel_metrics(relay)
        assert on == 1 and fallbacks == 0
        # Every byte of the download crossed the link in sealed records.
        assert records >= N // 16384 and nbytes >= N, (records, nbytes)
        for log in (relay.proc.log(), a.proc.log()):
            assert "tls: AES-GCM records by OpenSSL" in log, log
            assert "AES-NI, PCLMULQDQ" in log and "AES-128-GCM preferred" in log
    finally:
        relay.stop()


def test_switched_off_wolfssl_seals_and_nothing_is_counted(binary, tmp_path, app, start_agent):
    relay = harness.Relay(binary("sluice-relay"), tmp_path, extra=["--tls-crypto", "wolfssl"])
    try:
        a = start_agent(app.port, relay.server, extra=["--name", "slow", "--tls-crypto", "wolfssl"])
        download(relay, a)
        assert accel_metrics(relay) == (0, 0, 0, 0)
        for log in (relay.proc.log(), a.proc.log()):
            assert ("tls: records by wolfSSL's portable C (--tls-crypto wolfssl); "
                    "ChaCha20-Poly1305 preferred") in log, log
    finally:
        relay.stop()


@pytest.mark.parametrize("relay_mode,agent_mode", [("auto", "wolfssl"), ("wolfssl", "auto")])
def test_either_side_alone_accelerated_interoperates(binary, tmp_path, app, start_agent,
                                                     relay_mode, agent_mode):
    """One end seals with libcrypto, the other opens with wolfSSL's own code
    (and back): the records are the same on the wire."""
    relay = harness.Relay(binary("sluice-relay"), tmp_path, extra=["--tls-crypto", relay_mode])
    try:
        a = start_agent(app.port, relay.server, extra=["--name", "mixed",
                                                       "--tls-crypto", agent_mode])
        download(relay, a)
    finally:
        relay.stop()


def test_a_cpu_without_aesni_falls_back_and_says_why(binary, tmp_path, app, start_agent,
                                                     monkeypatch):
    monkeypatch.setenv("SLUICE_FAULT_NO_AESNI", "1")
    relay = harness.Relay(binary("sluice-relay"), tmp_path)
    try:
        a = start_agent(app.port, relay.server, extra=["--name", "old"])
        download(relay, a)
        assert accel_metrics(relay) == (0, 0, 0, 0)
        assert ("tls: records by wolfSSL's portable C (this CPU has no AES-NI and PCLMULQDQ "
                "(SLUICE_FAULT_NO_AESNI)); ChaCha20-Poly1305 preferred") in relay.proc.log()
    finally:
        relay.stop()
    # Asked for by name, libcrypto that cannot serve is an error at start.
    crt, key = harness.pki()["relay"]
    out = subprocess.run([binary("sluice-relay"), "--http", "127.0.0.1:%d" % harness.free_port(),
                          "--agents", "127.0.0.1:%d" % harness.free_port(),
                          "--admin", "127.0.0.1:%d" % harness.free_port(),
                          "--cert", crt, "--key", key, "--tls-crypto", "openssl"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode != 0
    assert "tls: --tls-crypto openssl cannot serve: this CPU has no AES-NI" in out.stderr, out


@needs_aesni
def test_public_https_records_go_the_same_way(binary, tmp_path, app, start_agent):
    port = harness.free_port()
    relay = harness.Relay(binary("sluice-relay"), tmp_path,
                          extra=["--domain", "sluice.test", "--https", "127.0.0.1:%d" % port])
    try:
        start_agent(app.port, relay.server, extra=["--name", "pub"])
        before = accel_metrics(relay)[1]
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "60", "--cacert", harness.pki()["ca"], "--tlsv1.3",
             "--resolve", "pub.sluice.test:%d:127.0.0.1" % port, "-o", "/dev/null",
             "-w", "%{http_code}", "https://pub.sluice.test:%d/bytes?n=%d" % (port, N)],
            capture_output=True, text=True, timeout=90)
        assert out.stdout == "200", out
        # The public side and the link both: twice the download at least.
        assert accel_metrics(relay)[1] - before >= 2 * (N // 16384)
    finally:
        relay.stop()
