"""Issue 15: a Redis command the control plane cannot queue (out of memory,
injected with SLUICE_FAULT_RDB_ALLOC) still answers its request: HTTP 503
with a JSON error, nothing half-written, the next requests served, and
nothing leaked (under the ASan build, LeakSanitizer checks the process when
it stops and the harness fails the test on its report).

Before the fix, cp_rdb_cmd* returned -ENOMEM without calling back: the
request below was never answered (the client timed out) and its op leaked."""
import subprocess

import pytest

import harness

FAULT = "SLUICE_FAULT_RDB_ALLOC"


def control_with_fault(binary, tmp_path, redis, fault):
    return harness.Control(binary("sluice-control"), tmp_path, redis.url, env={FAULT: fault})


def redis_keys(redis, pattern):
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "--scan", "--pattern", pattern],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return out.split()


def assert_503_out_of_memory(status, body):
    assert status == 503, body
    assert body["code"] == "redis_unavailable"
    assert "out of memory" in body["error"]


def wait_served(call, want):
    """The connection reconnects after its backoff (100 ms first): the next
    requests are served again, by the same process."""
    seen = []

    def served():
        seen.append(call())
        return seen[-1][0] == want

    harness.wait_for(served, timeout=10, what="a request served after the fault")
    return seen[-1]


@pytest.mark.parametrize("fault", ["MULTI:1", "XADD:1", "EXEC:1"])
def test_a_transaction_command_that_cannot_be_queued_answers_503_and_writes_nothing(
        binary, tmp_path, redis_server, fault):
    """POST /api/v1/tunnels writes the session in one MULTI ... EXEC; one of
    its commands fails to queue: the transaction must not run without it."""
    control = control_with_fault(binary, tmp_path, redis_server, fault)
    status, _, body = control.api("POST", "/api/v1/tunnels", {"port": 3000})
    assert_503_out_of_memory(status, body)
    assert redis_keys(redis_server, "sl:sess:*") == []
    status, _, body = wait_served(lambda: control.api("POST", "/api/v1/tunnels", {"port": 3000}),
                                  201)
    assert redis_keys(redis_server, "sl:sess:*") == ["sl:sess:" + body["sessionId"]]
    assert FAULT in control.proc.log()  # the hook says it is on
    assert control.stop() == 0


def test_a_single_command_that_cannot_be_queued_answers_503(binary, tmp_path, redis_server):
    """A key's lookup (HMGET sl:key:<hash>) is the request's first command."""
    control = control_with_fault(binary, tmp_path, redis_server, "HMGET:1")
    key = control.new_key()["key"]
    status, _, body = control.api("GET", "/api/v1/tunnels", key=key)
    assert_503_out_of_memory(status, body)
    wait_served(lambda: control.api("GET", "/api/v1/tunnels", key=key), 200)
    assert control.stop() == 0


def test_the_hook_is_off_unless_set(binary, tmp_path, redis_server):
    control = harness.Control(binary("sluice-control"), tmp_path, redis_server.url)
    assert control.api("POST", "/api/v1/tunnels", {"port": 3000})[0] == 201
    assert FAULT not in control.proc.log()
    assert control.stop() == 0
