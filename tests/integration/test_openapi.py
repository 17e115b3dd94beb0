"""docs/openapi.yaml holds: every documented route exists on a real
sluice-control (real Redis), and what it answers (status and JSON body) is
what the document says for that route, validated with jsonschema against the
document's own schemas. Each operation is driven to its success status and
to documented errors."""
import os
import time

import jsonschema
import pytest
import yaml

import harness

SPEC_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "openapi.yaml")


@pytest.fixture(scope="module")
def spec():
    with open(SPEC_PATH) as f:
        return yaml.safe_load(f)


def check(spec, path, method, status, hdrs, body):
    """The status is documented for path+method and body fits its schema."""
    op = spec["paths"][path][method]
    assert str(status) in op["responses"], "%s %s answered %d, undocumented" % (method, path,
                                                                                status)
    resp = op["responses"][str(status)]
    if "$ref" in resp:
        resp = spec["components"]["responses"][resp["$ref"].split("/")[-1]]
    content = resp.get("content", {})
    ctype = (hdrs.get("content-type") or "").split(";")[0]
    assert ctype in content, "%s %s %d: content-type %s not documented" % (method, path, status,
                                                                          ctype)
    schema = content[ctype]["schema"]
    if ctype == "application/json":
        resolver = jsonschema.RefResolver.from_schema(spec)
        jsonschema.Draft202012Validator(schema, resolver=resolver).validate(body)


def raw_get(control, path, key=None):
    import urllib.request
    req = urllib.request.Request(control.url + path,
                                 headers={"Authorization": "Bearer " + key} if key else {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.headers, r.read().decode()


def test_every_route_answers_as_documented(binary, tmp_path, spec):
    redis = harness.Redis(tmp_path)
    # Domain challenges go to a DNS server that is not there: a quick 422.
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url,
                              extra=["--dns-server", "127.0.0.1:%d" % harness.free_port()])
    seen = set()
    try:
        def call(method, path_tmpl, path=None, **kw):
            status, hdrs, body = control.api(method.upper(), path or path_tmpl, **kw)
            check(spec, path_tmpl, method, status, hdrs, body)
            seen.add((path_tmpl, method))
            return status, body

        assert call("get", "/health", key=None)[0] == 200
        assert call("get", "/api/v1/health", key=None)[0] == 200
        assert call("get", "/api/v1/version", key=None)[0] == 200
        status, hdrs, text = raw_get(control, "/metrics")
        check(spec, "/metrics", "get", status, hdrs, text)
        seen.add(("/metrics", "get"))

        status, k = call("post", "/api/v1/keys", body={"name": "oa", "scopes": ["tunnels"]})
        assert status == 201
        assert call("post", "/api/v1/keys", body={"scopes": ["root"]})[0] == 400
        assert call("post", "/api/v1/keys", body={}, key=k["key"])[0] == 403
        assert call("get", "/api/v1/keys")[0] == 200
        assert call("get", "/api/v1/keys", key=None)[0] == 401

        tk = k["key"]
        status, t = call("post", "/api/v1/tunnels", body={"port": 3000, "subdomain": "oa"},
                         key=tk)
        assert status == 201
        # The same key takes its name over; another key is refused it.
        status, t = call("post", "/api/v1/tunnels", body={"port": 3000, "subdomain": "oa"},
                         key=tk)
        assert status == 201 and t["replacedSession"]
        assert call("post", "/api/v1/tunnels", body={"port": 3000, "subdomain": "oa"})[0] == 409
        nm, one_nm = "/api/v1/names", "/api/v1/names/{name}"
        assert call("post", nm, body={"name": "oaname"}, key=tk)[0] == 201
        assert call("post", nm, body={"name": "oaname"}, key=tk)[0] == 200
        assert call("post", nm, body={"name": "oaname"})[0] == 409
        assert call("post", nm, body={"name": "Bad!"}, key=tk)[0] == 400
        assert call("post", nm, body={"name": "x", "keyId": "kaaaaaaaaaaa"}, key=tk)[0] == 403
        assert call("post", nm, body={"name": "x"}, key=None)[0] == 401
        assert call("get", nm, key=tk)[0] == 200
        assert call("get", nm, key=None)[0] == 401
        assert call("get", one_nm, nm + "/oaname", key=tk)[0] == 200
        assert call("get", one_nm, nm + "/nonesuch", key=tk)[0] == 404
        assert call("get", one_nm, nm + "/Bad!", key=tk)[0] == 400
        assert call("get", one_nm, nm + "/oaname", key=None)[0] == 401
        assert call("delete", one_nm, nm + "/oaname", key=tk)[0] == 200
        assert call("delete", one_nm, nm + "/oaname", key=tk)[0] == 404
        assert call("delete", one_nm, nm + "/oaname", key=None)[0] == 401
        assert call("post", "/api/v1/tunnels", body={"port": 1}, key=tk)[0] == 400
        assert call("post", "/api/v1/tunnels", raw=b"x" * 17000, key=tk)[0] == 413
        assert call("post", "/api/v1/tunnels", body={"port": 3000}, key=None)[0] == 401
        assert call("get", "/api/v1/tunnels", key=tk)[0] == 200
        assert call("get", "/api/v1/tunnels", "/api/v1/tunnels?limit=999", key=tk)[0] == 400
        one = "/api/v1/tunnels/{id}"
        assert call("get", one, "/api/v1/tunnels/" + t["sessionId"], key=tk)[0] == 200
        assert call("get", one, "/api/v1/tunnels/bad!", key=tk)[0] == 400
        assert call("get", one, "/api/v1/tunnels/abcdefgh12345678", key=tk)[0] == 404
        sh = "/api/v1/tunnels/{id}/shares"
        shp = "/api/v1/tunnels/%s/shares" % t["sessionId"]
        status, share = call("post", sh, shp, body={"ttl": 600}, key=tk)
        assert status == 201
        assert call("post", sh, shp, body={"ttl": 1}, key=tk)[0] == 400
        assert call("post", sh, "/api/v1/tunnels/abcdefgh12345678/shares", body={},
                    key=tk)[0] == 404
        assert call("get", sh, shp, key=tk)[0] == 200
        assert call("get", sh, shp, key=None)[0] == 401
        one_sh = "/api/v1/tunnels/{id}/shares/{shareId}"
        assert call("delete", one_sh, shp + "/" + share["shareId"], key=tk)[0] == 200
        assert call("delete", one_sh, shp + "/abcdefghijkl", key=tk)[0] == 404
        assert call("delete", one_sh, shp + "/abcdefghijkl", key=None)[0] == 401
        assert call("delete", one, "/api/v1/tunnels/" + t["sessionId"], key=tk)[0] == 200
        assert call("delete", one, "/api/v1/tunnels/" + t["sessionId"], key=tk)[0] == 404
        status, t2 = call("post", "/api/v1/tunnels", body={"port": 3000}, key=tk)
        assert status == 201

        dom = "/api/v1/domains"
        assert call("post", dom, body={"domain": "oa.example.com"}, key=tk)[0] == 201
        assert call("post", dom, body={"domain": "oa.example.com"}, key=tk)[0] == 200
        assert call("post", dom, body={"domain": "oa.example.com"})[0] == 409  # admin's key
        assert call("post", dom, body={"domain": "bad..name"}, key=tk)[0] == 400
        assert call("post", dom, body={"domain": "x.example.com"}, key=None)[0] == 401
        assert call("get", dom, key=tk)[0] == 200
        assert call("get", dom, key=None)[0] == 401
        done = "/api/v1/domains/{domain}"
        assert call("get", done, dom + "/oa.example.com", key=tk)[0] == 200
        assert call("get", done, dom + "/no.example.com", key=tk)[0] == 404
        assert call("get", done, dom + "/oa.example.com", key=None)[0] == 401
        ver = "/api/v1/domains/{domain}/verify"
        assert call("post", ver, dom + "/oa.example.com/verify", body={"method": "dns"},
                    key=tk)[0] == 422
        assert call("post", ver, dom + "/oa.example.com/verify", body={"method": "x"},
                    key=tk)[0] == 400
        assert call("post", ver, dom + "/no.example.com/verify", body={"method": "dns"},
                    key=tk)[0] == 404
        assert call("post", ver, dom + "/oa.example.com/verify", body={"method": "dns"},
                    key=None)[0] == 401
        assert call("delete", done, dom + "/oa.example.com", key=tk)[0] == 200
        assert call("delete", done, dom + "/oa.example.com", key=tk)[0] == 404
        assert call("delete", done, dom + "/oa.example.com", key=None)[0] == 401
        lim = "/api/v1/tunnels/{id}/limits"
        limp = "/api/v1/tunnels/%s/limits" % t2["sessionId"]
        assert call("get", lim, limp, key=tk)[0] == 200
        assert call("put", lim, limp, body={"requests": {"limit": 10, "window": 60}},
                    key=tk)[0] == 200
        assert call("put", lim, limp, body={"requests": {"limit": 5000, "window": 60}},
                    key=tk)[0] == 403  # above the key's ceiling
        assert call("put", lim, limp, body={"requests": "10/1m"}, key=tk)[0] == 400
        assert call("get", lim, limp, key=None)[0] == 401
        assert call("put", lim, limp, body={}, key=None)[0] == 401
        assert call("get", lim, "/api/v1/tunnels/abcdefgh12345678/limits", key=tk)[0] == 404
        assert call("put", lim, "/api/v1/tunnels/abcdefgh12345678/limits", body={},
                    key=tk)[0] == 404
        klim = "/api/v1/keys/{id}/limits"
        klimp = "/api/v1/keys/%s/limits" % k["id"]
        assert call("get", klim, klimp)[0] == 200
        assert call("put", klim, klimp, body={"sessions": {"limit": 1, "window": 3600}})[0] == 200
        assert call("put", klim, klimp, body={"sessions": 1})[0] == 400
        assert call("get", klim, klimp, key=tk)[0] == 403
        assert call("put", klim, klimp, body={}, key=tk)[0] == 403
        assert call("get", klim, klimp, key=None)[0] == 401
        assert call("put", klim, klimp, body={}, key=None)[0] == 401
        assert call("get", klim, "/api/v1/keys/kaaaaaaaaaaa/limits")[0] == 404
        assert call("put", klim, "/api/v1/keys/kaaaaaaaaaaa/limits", body={})[0] == 404
        # The key has created more sessions than its new limit allows.
        status, body = call("post", "/api/v1/tunnels", body={"port": 3000}, key=tk)
        assert status == 429 and body["code"] == "rate_limited"
        rel = "/api/v1/relays"
        assert call("get", rel)[0] == 200
        assert call("get", rel, key=tk)[0] == 403
        assert call("get", rel, key=None)[0] == 401
        drain = "/api/v1/relays/{id}/drain"
        assert call("post", drain, rel + "/nosuchrelay/drain")[0] == 404
        assert call("post", drain, rel + "/nosuchrelay/drain", key=tk)[0] == 403
        assert call("post", drain, rel + "/nosuchrelay/drain", key=None)[0] == 401
        redis.cli("ZADD", "sl:relays", str(int(time.time() * 1000)), "oa-relay")
        status, body = call("post", drain, rel + "/oa-relay/drain")
        assert status == 202 and body == {"id": "oa-relay", "draining": True}
        assert redis.cli("GET", "sl:drain:oa-relay") == "1"
        status, body = call("get", rel)
        assert [x["id"] for x in body["relays"]] == ["oa-relay"]
        nodes = "/api/v1/nodes"
        hk = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPqB7e8iqcW3Hn0nP3uY9d7SeC3QbX5bTjR6V2l5M3wX"
        closed = harness.free_port()  # nothing listens: SSH fails in the result, not the status
        status, node = call("post", nodes, body={"host": "127.0.0.1", "port": closed, "user": "u",
                                                  "hostKey": hk, "password": "pw"})
        assert status == 201
        assert call("post", nodes, body={"host": "127.0.0.1", "user": "u", "hostKey": "x",
                                         "password": "pw"})[0] == 400
        assert call("post", nodes, body={}, key=tk)[0] == 403
        assert call("post", nodes, body={}, key=None)[0] == 401
        assert call("get", nodes)[0] == 200
        assert call("get", nodes, key=tk)[0] == 403
        assert call("get", nodes, key=None)[0] == 401
        none = nodes + "/nd_nosuchnode"
        nodep = nodes + "/" + node["id"]
        assert call("get", nodes + "/{id}", nodep)[0] == 200
        assert call("get", nodes + "/{id}", none)[0] == 404
        assert call("get", nodes + "/{id}", nodep, key=None)[0] == 401
        ex = nodes + "/{id}/exec"
        status, res = call("post", ex, nodep + "/exec", body={"command": ["true"]})
        assert status == 200 and res["error"]["kind"] == "network"
        assert call("post", ex, nodep + "/exec", body={"command": []})[0] == 400
        assert call("post", ex, none + "/exec", body={"shell": "true"})[0] == 404
        assert call("post", ex, nodep + "/exec", body={"shell": "true"}, key=tk)[0] == 403
        assert call("post", ex, nodep + "/exec", body={"shell": "true"}, key=None)[0] == 401
        dg = nodes + "/{id}/diagnose"
        status, rep = call("post", dg, nodep + "/diagnose", body={})
        assert status == 200 and not rep["ok"] and rep["checks"][0]["name"] == "network"
        assert call("post", dg, none + "/diagnose", body={})[0] == 404
        assert call("post", dg, nodep + "/diagnose", body={}, key=tk)[0] == 403
        assert call("post", dg, nodep + "/diagnose", body={}, key=None)[0] == 401
        hl = nodes + "/{id}/health"
        status, h = call("get", hl, nodep + "/health")
        assert status == 200 and not h["ok"] and "connect" in h["error"]
        assert call("get", hl, none + "/health")[0] == 404
        assert call("get", hl, nodep + "/health", key=tk)[0] == 403
        assert call("get", hl, nodep + "/health", key=None)[0] == 401
        pv = nodes + "/{id}/provision"
        status, job = call("post", pv, nodep + "/provision", body={"check": True})
        assert status == 202 and job["status"] == "running"
        assert call("post", pv, nodep + "/provision", body={"check": True})[0] == 409
        assert call("post", pv, nodep + "/provision", body={"lockdown": "x"})[0] == 400
        assert call("post", pv, none + "/provision", body={})[0] == 404
        assert call("post", pv, nodep + "/provision", body={}, key=tk)[0] == 403
        assert call("post", pv, nodep + "/provision", body={}, key=None)[0] == 401
        jb, jbp = "/api/v1/jobs/{id}", "/api/v1/jobs/" + job["id"]
        harness.wait_for(lambda: control.api("GET", jbp)[2]["status"] != "running", timeout=60,
                         what="the job's end")
        status, got = call("get", jb, jbp)
        assert status == 200 and got["status"] == "failed"
        assert got["result"]["error"]["type"] == "SetupError" and got["events"]
        assert call("get", jb, "/api/v1/jobs/jb_nosuchjob")[0] == 404
        assert call("get", jb, jbp, key=tk)[0] == 403
        assert call("get", jb, jbp, key=None)[0] == 401
        assert call("delete", jb, jbp)[0] == 409
        assert call("delete", jb, "/api/v1/jobs/jb_nosuchjob")[0] == 404
        assert call("delete", jb, jbp, key=tk)[0] == 403
        assert call("delete", jb, jbp, key=None)[0] == 401
        ev = "/api/v1/jobs/{id}/events"
        status, hdrs, text = raw_get(control, jbp + "/events", key=harness.ADMIN_KEY)
        check(spec, ev, "get", status, hdrs, text)
        assert text.count("event: step\n") == len(got["events"]) and "event: done\n" in text
        seen.add((ev, "get"))
        for key, code in ((harness.ADMIN_KEY, 404), (tk, 403), (None, 401)):
            status, _ = call("get", ev, "/api/v1/jobs/jb_nosuchjob/events" if code == 404
                                   else jbp + "/events", key=key)
            assert status == code
        assert call("delete", nodes + "/{id}", nodep)[0] == 200
        assert call("delete", nodes + "/{id}", nodep)[0] == 404
        assert call("delete", nodes + "/{id}", nodep, key=None)[0] == 401
        kone = "/api/v1/keys/{id}"
        assert call("delete", kone, "/api/v1/keys/" + k["id"])[0] == 200
        assert call("delete", kone, "/api/v1/keys/kaaaaaaaaaaa")[0] == 404
        assert call("delete", kone, "/api/v1/keys/kaaaaaaaaaaa", key=None)[0] == 401

        redis.proc.kill()
        assert call("post", "/api/v1/tunnels", body={"port": 3000})[0] == 503
        assert call("get", "/health", key=None)[0] == 503
    finally:
        control.stop()
        redis.stop()
    documented = {(p, m) for p, ops in spec["paths"].items() for m in ops if m != "parameters"}
    assert documented == seen, "documented but not exercised: %s" % (documented - seen)


def test_expired_sessions_answer_the_documented_410(binary, tmp_path, spec):
    redis = harness.Redis(tmp_path)
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url,
                              extra=["--duration-min", "1"])
    try:
        status, _, t = control.api("POST", "/api/v1/tunnels", {"port": 3000, "duration": 1})
        assert status == 201
        path = "/api/v1/tunnels/" + t["sessionId"]
        harness.wait_for(lambda: control.api("GET", path)[0] == 410, timeout=5, what="expiry")
        status, hdrs, body = control.api("GET", path)
        check(spec, "/api/v1/tunnels/{id}", "get", status, hdrs, body)
    finally:
        control.stop()
        redis.stop()


def test_undocumented_paths_are_json_404s(binary, tmp_path, spec):
    redis = harness.Redis(tmp_path)
    control = harness.Control(binary("sluice-control"), tmp_path, redis.url)
    try:
        for path in ("/api/v1/nope", "/api/v2/tunnels", "/api/v1/tunnelsX"):
            assert path not in spec["paths"]
            status, _, body = control.api("GET", path)
            assert status == 404 and set(body) == {"error", "code"}
    finally:
        control.stop()
        redis.stop()
