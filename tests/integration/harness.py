"""Real processes for sluice's integration tests: free loopback ports, and
servers (Redis, sshd, HAProxy, our own binaries) that are always stopped.

Every process is started in its own session (process group) and registered;
fixtures stop their processes in teardown, which pytest runs even when the
test failed, and conftest.py kills whatever is still registered when the
session ends, so nothing outlives a run, not even after Ctrl-C.
"""
import os
import signal
import socket
import subprocess
import time

_live = []  # every Proc not yet stopped


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, what="condition"):
    """Poll predicate until it returns a true value; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(0.02)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0): look at its state.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Proc:
    """A child process with its output in a log file, stopped by stop()."""

    def __init__(self, name, argv, log_dir, env=None, cwd=None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = os.path.join(str(log_dir), "%s.log" % name)
        self._log = open(self.log_path, "ab")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.popen = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=full_env, cwd=cwd,
                                      start_new_session=True)
        self.pid = self.popen.pid
        _live.append(self)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.killpg(self.pid, sig)

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after timeout; returns the exit code."""
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
            except ProcessLookupError:
                pass
        self._log.close()
        if self in _live:
            _live.remove(self)
        code = self.popen.wait()
        check_sanitizers(self.name, self.log())
        return code

    def kill(self):
        """SIGKILL the whole group at once: a crash, not a shutdown."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def check_sanitizers(name, text):
    """Fail when a process's output holds an ASan, LSan or UBSan report."""
    for mark in SANITIZER_MARKS:
        if mark in text:
            raise AssertionError("%s: sanitizer report in its output:\n%s" % (name, text[-4000:]))


def stop_all():
    for p in list(_live):
        try:
            p.stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class Redis:
    """A redis-server on a free loopback port; no persistence unless
    persistent (an append-only file synced on every write, so that even
    SIGKILL loses nothing, as a production Redis would be set up)."""

    def __init__(self, workdir, port=None, password=None, persistent=False):
        self.workdir = str(workdir)
        self.port = port or free_port()
        self.password = password
        self.persistent = persistent
        self.proc = None
        self.start()

    def start(self):
        argv = ["redis-server", "--port", self.port, "--bind", "127.0.0.1", "--save", "",
                "--dir", self.workdir]
        argv += (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                 else ["--appendonly", "no"])
        if self.password:
            argv += ["--requirepass", self.password]
        self.proc = Proc("redis-%d" % self.port, argv, self.workdir)
        wait_for(lambda: port_open(self.port), what="redis on port %d" % self.port)

    @property
    def url(self):
        return "redis://%s127.0.0.1:%d" % (":%s@" % self.password if self.password else "", self.port)

    def cli(self, *args):
        argv = ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port)]
        if self.password:
            argv += ["--no-auth-warning", "-a", self.password]
        return subprocess.run(argv + [str(a) for a in args], capture_output=True, text=True,
                              timeout=10).stdout.strip()

    def stop(self):
        self.proc.stop()


SSHD_CONFIG = """Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys .ssh/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
MaxStartups 50:30:100
MaxSessions 20
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


def make_test_user(user, password, pubkey, sudo_nopasswd=False):
    """A local account for SSH tests (root only; idempotent): a home with the
    key in ~/.ssh/authorized_keys, a password, and sudo that asks for it
    (or not, with sudo_nopasswd) (a sudoers drop-in checked by visudo before
    it is put in place)."""
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", user], check=True)
    subprocess.run(["chpasswd"], input="%s:%s\n" % (user, password or "x-" + os.urandom(8).hex()),
                   text=True, check=True)
    home = os.path.expanduser("~" + user)
    ssh_dir = os.path.join(home, ".ssh")
    os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
    # Appended, not replaced: several sshds of one run (each with its own
    # key) serve the same user at once.
    with open(pubkey) as f, open(os.path.join(ssh_dir, "authorized_keys"), "a") as out:
        out.write(f.read())
    os.chmod(os.path.join(ssh_dir, "authorized_keys"), 0o600)
    subprocess.run(["chown", "-R", "%s:%s" % (user, user), ssh_dir], check=True)
    drop_in = "/etc/sudoers.d/%s" % user.replace(".", "_")
    tmp = drop_in + ".tmp"
    with open(tmp, "w") as f:
        f.write("%s ALL=(ALL:ALL) %sALL\nDefaults:%s !lecture, timestamp_timeout=0\n" % (
            user, "NOPASSWD: " if sudo_nopasswd else "", user))
    os.chmod(tmp, 0o440)
    subprocess.run(["visudo", "-cf", tmp], check=True, capture_output=True)
    os.replace(tmp, drop_in)


def node_body(sshd, sudo_password=None, **over):
    """POST /api/v1/nodes's body for sshd's test user: its address, host key
    (the known_hosts form, "type base64") and client key; over replaces
    fields (None removes one)."""
    with open(os.path.join(sshd.dir, "ssh_host_ed25519_key.pub")) as f:
        host_key = " ".join(f.read().split()[:2])
    with open(sshd.key) as f:
        body = {"name": "relay-a", "host": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                "hostKey": host_key, "privateKey": f.read()}
    if sudo_password:
        body["sudoPassword"] = sudo_password
    for k, v in over.items():
        if v is None:
            body.pop(k, None)
        else:
            body[k] = v
    return body


class Sshd:
    """OpenSSH's sshd on a free loopback port, with an Ed25519 host key and an
    Ed25519 client key (libssh2 1.10 signs RSA with SHA-1 only, which
    OpenSSH 8.8+ refuses). Needs root, as sshd's privilege separation does."""

    def __init__(self, workdir, user="root", sudo_password=None, extra_config="", sudo_nopasswd=False):
        self.dir = str(workdir)
        self.port = free_port()
        self.user = user
        self.sudo_password = sudo_password
        self.key = os.path.join(self.dir, "id_ed25519")
        host_key = os.path.join(self.dir, "ssh_host_ed25519_key")
        for path in (host_key, self.key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
        with open(self.key + ".pub") as f, open(os.path.join(self.dir, "authorized_keys"), "w") as out:
            out.write(f.read())
        if user != "root":
            make_test_user(user, sudo_password, self.key + ".pub", sudo_nopasswd)
        with open(host_key + ".pub") as f:
            host_pub = f.read().split()[:2]
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write("[127.0.0.1]:%d %s %s\n" % (self.port, host_pub[0], host_pub[1]))
        cfg = os.path.join(self.dir, "sshd_config")
        with open(cfg, "w") as f:
            # sshd takes the first value of a keyword: the test's own go first.
            f.write(extra_config + SSHD_CONFIG.format(port=self.port, dir=self.dir))
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation directory
        self.proc = Proc("sshd-%d" % self.port, ["/usr/sbin/sshd", "-D", "-e", "-f", cfg], self.dir)
        wait_for(lambda: port_open(self.port) or not self.proc.alive(), what="sshd")
        if not self.proc.alive():
            raise RuntimeError("sshd did not start:\n" + self.proc.log())

    def ssh(self, command, timeout=30):
        argv = ["ssh", "-i", self.key, "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + self.known_hosts,
                "%s@127.0.0.1" % self.user, command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def stop(self):
        self.proc.stop()


class Haproxy:
    """HAProxy in the foreground with a generated configuration."""

    def __init__(self, workdir, config_text):
        self.dir = str(workdir)
        self.cfg = os.path.join(self.dir, "haproxy.cfg")
        with open(self.cfg, "w") as f:
            f.write(config_text)
        check = subprocess.run(["haproxy", "-c", "-f", self.cfg], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError("haproxy config invalid:\n" + check.stdout + check.stderr)
        self.proc = Proc("haproxy", ["haproxy", "-db", "-f", self.cfg], self.dir)

    def stop(self):
        self.proc.stop()


def haproxy_http_config(front_port, back_port, mode="http"):
    return """global
    maxconn 4096
defaults
    mode {mode}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{front}
    default_backend back
backend back
    server s1 127.0.0.1:{back}
""".format(mode=mode, front=front_port, back=back_port)


_pki = {}


def pki():
    """A test CA and certificates signed by it, made once per process with the
    openssl tool: "relay" names localhost, *.localhost, *.sluice.test and 127.0.0.1 (the
    relay's default certificate); "other" names app.example.com (an SNI
    certificate). Returns {"ca": path, "relay": (crt, key), "other": (crt, key),
    "dir": path}."""
    if _pki:
        return _pki
    import tempfile
    d = tempfile.mkdtemp(prefix="sluice-pki-")
    _pki["dir"] = d

    def run(*argv):
        subprocess.run(["openssl"] + list(argv), cwd=d, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
        "-subj", "/CN=sluice test CA")
    for name, cn, san in (("relay", "localhost", "DNS:localhost,DNS:*.localhost,DNS:*.sluice.test,IP:127.0.0.1"),
                          ("other", "app.example.com", "DNS:app.example.com")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\n" % san)
        run("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "30", "-extfile", name + ".ext")
        _pki[name] = (os.path.join(d, name + ".pem"), os.path.join(d, name + ".key"))
    _pki["ca"] = os.path.join(d, "ca.pem")
    return _pki


class Relay:
    """sluice-relay on free loopback ports, with timeouts short enough for tests.
    tls: the agent link speaks TLS with the test PKI's relay certificate."""

    FAST = ["--heartbeat-ms", "300", "--dead-after-ms", "1500", "--grace-ms", "5000",
            "--head-timeout-ms", "1000", "--open-timeout-ms", "3000", "--drain-timeout-ms", "3000"]

    def __init__(self, binary, workdir, extra=(), ports=None, tls=True):
        self.binary = binary
        self.dir = str(workdir)
        self.http_port, self.agents_port, self.admin_port = ports or (free_port(), free_port(), free_port())
        self.extra = list(extra)
        self.tls = tls
        if tls:
            crt, key = pki()["relay"]
            self.extra = ["--cert", crt, "--key", key] + self.extra
        self.proc = None
        self.start()

    def start(self):
        argv = [self.binary, "--http", "127.0.0.1:%d" % self.http_port,
                "--agents", "127.0.0.1:%d" % self.agents_port,
                "--admin", "127.0.0.1:%d" % self.admin_port, "--domain", "localhost",
                "--log-format", "text", "--log-level", "debug"] + self.FAST + self.extra
        self.proc = Proc("relay-%d" % self.http_port, argv, self.dir,
                         env=dict(os.environ, SESSION_SECRET_KEY=SECRET))
        wait_for(lambda: port_open(self.admin_port) or not self.proc.alive(), what="relay")
        if not self.proc.alive():
            raise RuntimeError("relay did not start:\n" + self.proc.log())

    @property
    def server(self):
        return "127.0.0.1:%d" % self.agents_port

    def stop(self):
        return self.proc.stop()


def read_to_close(sock):
    """Everything sock receives until the peer closes."""
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def metrics(relay):
    """The relay's GET /metrics on its admin port, as {series: value}."""
    import urllib.request
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % relay.admin_port, timeout=5) as r:
        text = r.read().decode()
    return {l.split()[0]: float(l.split()[1]) for l in text.splitlines() if l and l[0] != "#"}


def wait_metrics(relay, pred, what, timeout=10.0):
    """Poll the relay's metrics until pred(m) holds (other workers publish
    theirs at every turn of their loops); returns m."""
    def probe():
        m = metrics(relay)
        return m if pred(m) else None
    return wait_for(probe, timeout=timeout, what=what)


class Agent:
    """`sluice http|tcp PORT --json`, its events read from stdout. tls: True
    verifies the relay against the test CA, False adds --transport tcp, None
    adds neither (the test says)."""

    def __init__(self, binary, workdir, port, server, proto="http", extra=(), wait=True, tls=True):
        link = {True: ["--ca", pki()["ca"]], False: ["--transport", "tcp"], None: []}[tls]
        where = ["--server", server] if server else []  # None: the relay --api names
        self.argv = [binary, proto, str(port)] + where + ["--json", "--log-format",
                                                          "text"] + link + list(extra)
        self.dir = str(workdir)
        self.proc = Proc("agent-%d-%d" % (port, free_port()), self.argv, self.dir)
        self.ready = None
        if wait:
            self.ready = self.wait_event("ready")

    def events(self):
        out = []
        for line in self.proc.log().splitlines():
            if line.startswith("{\"event\""):
                import json
                out.append(json.loads(line))
        return out

    def wait_event(self, name, after=0, timeout=10.0):
        def find():
            evs = [e for e in self.events() if e["event"] == name]
            return evs[after] if len(evs) > after else None
        try:
            return wait_for(find, timeout=timeout, what="agent event %s" % name)
        except TimeoutError:
            raise TimeoutError("no %s event; agent output:\n%s" % (name, self.proc.log()))

    @property
    def url(self):
        return self.ready["url"]

    def stop(self):
        return self.proc.stop()


SECRET = "test-session-secret-0123456789abcdef"  # shared by control planes and relays in tests
ADMIN_KEY = "test-admin-key-0123456789"


class Control:
    """sluice-control on a free port against redis_url, with a real session
    secret (not --dev) and the bootstrap admin key ADMIN_KEY."""

    def __init__(self, binary, workdir, redis_url, relay="127.0.0.1:7000",
                 public_url="http://localhost:8080", extra=(), env=None):
        self.port = free_port()
        self.argv = [binary, "--listen", "127.0.0.1:%d" % self.port, "--redis", redis_url,
                     "--relay", relay, "--public-url", public_url, "--log-format", "text",
                     "--min-relays", "0"] + list(extra)
        self.env = dict(os.environ, SESSION_SECRET_KEY=SECRET, SLUICE_ADMIN_KEY=ADMIN_KEY)
        self.env.update(env or {})
        self.dir = str(workdir)
        self.proc = None
        self.start()

    def start(self):
        self.proc = Proc("control-%d" % self.port, self.argv, self.dir, env=self.env)
        wait_for(lambda: port_open(self.port) or not self.proc.alive(), what="sluice-control")
        if not self.proc.alive():
            raise RuntimeError("sluice-control did not start:\n" + self.proc.log())

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def api(self, method, path, body=None, key=ADMIN_KEY, headers=None, raw=None):
        """(status, headers, parsed JSON or None)."""
        import json
        import urllib.error
        import urllib.request
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = "Bearer " + key
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, hdrs, text = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, hdrs, text = e.code, e.headers, e.read()
        return status, hdrs, (json.loads(text) if text else None)

    def new_key(self, scopes=("tunnels",), name="test"):
        status, _, body = self.api("POST", "/api/v1/keys", {"name": name, "scopes": list(scopes)})
        assert status == 201, body
        return body

    def stop(self):
        return self.proc.stop()


def session_relay(binary, workdir, redis_url, extra=()):
    """A relay that follows the control plane's sessions in redis_url."""
    r = Relay(binary, workdir, extra=["--redis", redis_url, "--relay-id", "relay-%d" % free_port()]
              + list(extra))
    return r
