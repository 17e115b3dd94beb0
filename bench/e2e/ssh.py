#!/usr/bin/python3
"""SSH executor benchmark (issue 6), against OpenSSH in the same run, on a
real sshd on loopback (the test user the integration tests use; needs root):

  pooled command   a trivial command (`true`) on a warm connection:
                   sluice-control's pool (one process, --repeat N, per-command
                   latency measured inside it) against `ssh -S sock host true`
                   through a ControlMaster (what Ansible's ControlPersist does:
                   a process and a new channel per command)
  first connection TCP + handshake + auth + the first command: sluice's
                   connect time (and whole run) against a fresh `ssh host true`
  SFTP             64 MiB up and down: `sluice-control ssh put/get` (SHA-256 at
                   both ends, temp name and rename included) against OpenSSH's
                   `sftp -b` put/get of the same file

Medians (and p99 where it applies) of --reps runs; ratios in the summary.

  bench/e2e/ssh.py --bin build/release/bin [--reps 5] [--commands 200] [--mib 64]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402

USER = "sluicetest"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


class Bench:
    def __init__(self, a, d, work):
        self.a, self.d, self.work = a, d, work
        self.target = "%s@127.0.0.1:%d" % (USER, d.port)
        self.ssh_opts = ["-i", d.key, "-p", str(d.port), "-o", "BatchMode=yes",
                         "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + d.known_hosts]

    def sluice(self, verb, *args):
        argv = [os.path.join(self.a.bin, "sluice-control"), "ssh", verb, self.target,
                "--key", self.d.key, "--known-hosts", self.d.known_hosts] + list(args)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        out = json.loads(r.stdout)
        if out.get("error"):
            raise SystemExit("sluice-control ssh %s failed: %s" % (verb, out["error"]))
        return out

    def ssh(self, *args, master=None):
        extra = ["-S", master] if master else ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
        argv = ["ssh"] + self.ssh_opts + extra + ["%s@127.0.0.1" % USER] + list(args)
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        return (time.perf_counter() - t0) * 1000

    def pooled(self):
        out = self.sluice("exec", "--json", "--repeat", str(self.a.commands), "--", "true")
        sl = (out["p50_ms"], out["p99_ms"])
        sock = os.path.join(self.work, "cm.sock")
        subprocess.run(["ssh"] + self.ssh_opts + ["-M", "-S", sock, "-f", "-N", "%s@127.0.0.1" % USER],
                       check=True, timeout=30)
        try:
            self.ssh("true", master=sock)  # warm
            ts = [self.ssh("true", master=sock) for _ in range(self.a.commands)]
        finally:
            subprocess.run(["ssh", "-S", sock, "-O", "exit", "x"], capture_output=True)
        return {"sluice_p50_ms": sl[0], "sluice_p99_ms": sl[1],
                "openssh_cm_p50_ms": statistics.median(ts), "openssh_cm_p99_ms": pct(ts, 99)}

    def first(self):
        conn, whole, fresh = [], [], []
        for _ in range(self.a.firsts):
            t0 = time.perf_counter()
            out = self.sluice("exec", "--json", "--", "true")
            whole.append((time.perf_counter() - t0) * 1000)
            conn.append(out["connect_ms"])
            fresh.append(self.ssh("true"))
        return {"sluice_connect_ms": statistics.median(conn),
                "sluice_process_ms": statistics.median(whole),
                "openssh_fresh_ms": statistics.median(fresh)}

    def sftp(self):
        src = os.path.join(self.work, "payload.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(self.a.mib << 20))
        remote = os.path.join(os.path.expanduser("~" + USER), "bench-payload.bin")
        back = os.path.join(self.work, "back.bin")
        size = self.a.mib << 20
        rows = {"sluice_put": [], "sluice_get": [], "sftp_put": [], "sftp_get": []}
        for _ in range(self.a.reps):
            for path in (remote, back):
                if os.path.exists(path):
                    os.unlink(path)
            rows["sluice_put"].append(size / 1e6 / (self.sluice("put", src, remote)["duration_ms"] / 1e3))
            rows["sluice_get"].append(size / 1e6 / (self.sluice("get", remote, back)["duration_ms"] / 1e3))
            os.unlink(remote)
            os.unlink(back)
            batch = os.path.join(self.work, "batch")
            for name, line in (("sftp_put", "put %s %s\n" % (src, remote)),
                               ("sftp_get", "get %s %s\n" % (remote, back))):
                with open(batch, "w") as f:
                    f.write(line)
                argv = ["sftp", "-q", "-b", batch, "-i", self.d.key, "-P", str(self.d.port),
                        "-o", "UserKnownHostsFile=" + self.d.known_hosts, "%s@127.0.0.1" % USER]
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True, timeout=600)
                rows[name].append(size / 1e6 / (time.perf_counter() - t0))
        os.unlink(remote)
        return {k + "_mb_s": statistics.median(v) for k, v in rows.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--commands", type=int, default=200)
    ap.add_argument("--firsts", type=int, default=20)
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    a = ap.parse_args()
    if a.smoke:
        a.reps, a.commands, a.firsts, a.mib = 1, 10, 2, 4
    if os.geteuid() != 0:
        raise SystemExit("ssh.py: the benchmark's sshd and test user need root")
    work = tempfile.mkdtemp(prefix="sluice-bench-ssh-")
    d = harness.Sshd(work, user=USER, sudo_password="bench-" + os.urandom(6).hex())
    try:
        b = Bench(a, d, work)
        res = {"pooled": b.pooled(), "first": b.first(), "sftp": b.sftp()}
    finally:
        d.stop()
        subprocess.run(["rm", "-rf", work])
    p, f, s = res["pooled"], res["first"], res["sftp"]
    print("pooled command: sluice p50 %.2f ms p99 %.2f ms | ssh ControlMaster p50 %.2f ms p99 %.2f ms"
          " | ratio %.1fx" % (p["sluice_p50_ms"], p["sluice_p99_ms"], p["openssh_cm_p50_ms"],
                             p["openssh_cm_p99_ms"], p["openssh_cm_p50_ms"] / max(p["sluice_p50_ms"], 0.01)))
    print("first connection: sluice connect %.1f ms (whole process %.1f ms) | fresh ssh %.1f ms" % (
        f["sluice_connect_ms"], f["sluice_process_ms"], f["openssh_fresh_ms"]))
    print("SFTP %d MiB: sluice put %.0f MB/s get %.0f MB/s | sftp put %.0f MB/s get %.0f MB/s"
          " | ratios put %.2f get %.2f" % (a.mib, s["sluice_put_mb_s"], s["sluice_get_mb_s"],
                                           s["sftp_put_mb_s"], s["sftp_get_mb_s"],
                                           s["sluice_put_mb_s"] / s["sftp_put_mb_s"],
                                           s["sluice_get_mb_s"] / s["sftp_get_mb_s"]))
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "ssh.json"), "w") as fh:
            json.dump({"args": vars(a), "results": res}, fh, indent=1)


if __name__ == "__main__":
    main()
