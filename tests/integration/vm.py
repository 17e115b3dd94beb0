"""A disposable Debian 12 host for end-to-end tests of the managers: the image
from tests/vm/build-image.sh (cached), booted by qemu-system-x86_64 with
user-mode networking and one loopback port forwarded to its sshd. Each boot
writes to a qcow2 overlay, so the cached image stays blank.

KVM is used only when a quick probe shows a guest boots under it (here one
hung in early boot); otherwise TCG, which reached sshd in about 50 s."""
import os
import socket
import subprocess
import time

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "tests", "vm", "build-image.sh")
CACHE = os.environ.get("SLUICE_VM_CACHE", "/var/cache/sluice/vm")
KVM_PROBE_S = 45
TCG_BOOT_S = 420


def build_image(cache=CACHE):
    """Build (or reuse) the cached image; returns its directory."""
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    r = subprocess.run(["sh", BUILD, cache], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError("vm image build failed:\n" + r.stderr[-3000:])
    return cache


def ssh_banner(port, timeout=1.0):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


class Vm:
    def __init__(self, workdir, cache=CACHE, mem_mb=1536):
        self.cache = build_image(cache)
        self.dir = str(workdir)
        self.key = os.path.join(self.dir, "id_ed25519")
        with open(os.path.join(self.cache, "id_ed25519")) as f, open(self.key, "w") as out:
            out.write(f.read())
        os.chmod(self.key, 0o600)
        self.user = "root"
        self.port = harness.free_port()
        with open(os.path.join(self.cache, "host_ed25519.pub")) as f:
            self.host_key = " ".join(f.read().split()[:2])
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as f:
            f.write("[127.0.0.1]:%d %s\n" % (self.port, self.host_key))
        self.mem_mb = mem_mb
        self.proc = None
        self.accel = None
        self.boot_s = None
        kvm_ok = os.path.join(self.cache, "kvm-ok")
        kvm_bad = os.path.join(self.cache, "kvm-bad")
        order = ["tcg"]
        if os.access("/dev/kvm", os.R_OK | os.W_OK) and not os.path.exists(kvm_bad):
            order = ["kvm", "tcg"]
        for accel in order:
            limit = KVM_PROBE_S if accel == "kvm" and not os.path.exists(kvm_ok) else TCG_BOOT_S
            if self._boot(accel, limit):
                if accel == "kvm":
                    open(kvm_ok, "w").close()
                return
            self.proc.kill()
            if accel == "kvm":
                open(kvm_bad, "w").close()
        raise RuntimeError("the VM did not answer on SSH; console:\n" + self.console()[-3000:])

    def _boot(self, accel, limit):
        overlay = os.path.join(self.dir, "overlay.qcow2")
        if os.path.exists(overlay):
            os.unlink(overlay)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        os.path.join(self.cache, "base.img"), overlay], check=True)
        self.console_path = os.path.join(self.dir, "console-%s.log" % accel)
        argv = ["qemu-system-x86_64", "-m", str(self.mem_mb), "-smp", "2",
                "-no-reboot", "-kernel", os.path.join(self.cache, "vmlinuz"),
                "-initrd", os.path.join(self.cache, "initrd.img"),
                "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1",
                "-drive", "file=%s,if=virtio,format=qcow2" % overlay,
                "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22" % self.port,
                "-device", "virtio-net-pci,netdev=n0",
                "-serial", "file:" + self.console_path, "-monitor", "none", "-display", "none"]
        argv += ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi"]
        t0 = time.monotonic()
        self.proc = harness.Proc("qemu-%d" % self.port, argv, self.dir)
        while time.monotonic() - t0 < limit and self.proc.alive():
            if ssh_banner(self.port):
                self.accel = accel
                self.boot_s = time.monotonic() - t0
                return True
            time.sleep(1)
        return False

    def console(self):
        try:
            with open(self.console_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def ssh(self, command, timeout=300):
        """OpenSSH's client as root: for checks from outside our own code."""
        argv = ["ssh", "-i", self.key, "-p", str(self.port), "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + self.known_hosts,
                "-o", "ConnectTimeout=30", "root@127.0.0.1", command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def stop(self):
        if self.proc and self.proc.alive():
            self.ssh("systemctl poweroff", timeout=30)
            try:
                self.proc.popen.wait(60)
            except subprocess.TimeoutExpired:
                pass
            self.proc.stop()
