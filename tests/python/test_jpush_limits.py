"""Per-app limits and the client quirks of jpush-v3.md §0/§11: rate limit headers on every
answer, 429 + 2002 beyond the limit, IP allowlist (403 + 2004), a disabled app (403 + 2003),
all set with `pigeon app set` while the server runs; odd Content-Types and trailing slashes."""

import json
import subprocess
import time

import jpush
import pytest
import requests
from jpush import common

from conftest import PIGEON


def app_set(server, app, *args):
    out = subprocess.run([PIGEON, "app", "set", "--app-key", app["app_key"], "--data", server.data, *args],
                         capture_output=True, text=True)
    return out


def get(server, app, path="/v3/push/cid"):
    return requests.get(server.base + path, auth=(app["app_key"], app["master_secret"]), timeout=5)


def wait_until(check, limit=5.0):
    deadline = time.time() + limit
    while not check():
        assert time.time() < deadline, "the server did not pick up the change in time"
        time.sleep(0.05)


def test_rate_limit_headers_and_429(server, app):
    r = get(server, app)
    assert r.status_code == 200
    limit = int(r.headers["X-Rate-Limit-Limit"])
    assert limit >= 600 and 0 <= int(r.headers["X-Rate-Limit-Remaining"]) < limit
    assert 0 < int(r.headers["X-Rate-Limit-Reset"]) <= 60
    # Errors carry them too.
    r = requests.post(server.base + "/v3/push", data="{", auth=(app["app_key"], app["master_secret"]), timeout=5)
    assert r.status_code == 400 and "X-Rate-Limit-Remaining" in r.headers

    out = app_set(server, app, "--rate-limit", "5")
    assert out.returncode == 0 and json.loads(out.stdout)["rate_limit_per_minute"] == 5
    wait_until(lambda: get(server, app).headers["X-Rate-Limit-Limit"] == "5")
    answers = [get(server, app) for _ in range(6)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited, [r.status_code for r in answers]
    r = limited[0]
    assert r.json() == {"error": {"code": 2002, "message": "Rate limit exceeded"}}
    assert r.headers["X-Rate-Limit-Remaining"] == "0" and int(r.headers["X-Rate-Limit-Reset"]) <= 60
    # Another app is not affected.
    other = server.create_app("other")
    assert get(server, other).status_code == 200
    # Bad credentials are not counted against the app and still get 401.
    r = requests.get(server.base + "/v3/push/cid", auth=(app["app_key"], "wrong"), timeout=5)
    assert r.status_code == 401
    # Back to the default.
    assert app_set(server, app, "--rate-limit", "0").returncode == 0
    wait_until(lambda: get(server, app).status_code == 200)


def test_ip_allowlist_and_disabled_app(server, app, jp, devices):
    d = devices()
    out = app_set(server, app, "--ip-allowlist", "10.9.8.7,192.168.0.0/16")
    assert out.returncode == 0
    wait_until(lambda: get(server, app).status_code == 403)
    r = get(server, app, f"/v3/devices/{d.registration_id}")
    assert r.status_code == 403 and r.json()["error"]["code"] == 2004 and "127.0.0.1" in r.json()["error"]["message"]
    with pytest.raises(common.JPushFailure) as e:
        push = jp.create_push()
        push.audience = jpush.all_
        push.platform = jpush.all_
        push.notification = jpush.notification(alert="x")
        push.send()
    assert e.value.error_code == 2004
    assert app_set(server, app, "--ip-allowlist", "127.0.0.0/8").returncode == 0
    wait_until(lambda: get(server, app).status_code == 200)

    assert app_set(server, app, "--enabled", "false").returncode == 0
    wait_until(lambda: get(server, app).status_code == 403)
    r = get(server, app, "/v3/tags")
    assert r.json()["error"]["code"] == 2003
    assert app_set(server, app, "--enabled", "true", "--ip-allowlist", "").returncode == 0
    wait_until(lambda: get(server, app).status_code == 200)


def test_app_set_refuses_bad_values(server, app):
    out = app_set(server, app, "--ip-allowlist", "not-an-ip")
    assert out.returncode != 0 and "not an IP address" in out.stderr
    out = subprocess.run([PIGEON, "app", "set", "--app-key", "x" * 24, "--enabled", "false", "--data", server.data],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no app" in out.stderr


def test_client_quirks(server, app, devices):
    d = devices(tags=["q"])
    auth = (app["app_key"], app["master_secret"])
    body = json.dumps({"platform": "all", "audience": {"tag": ["q"]}, "notification": {"alert": "quirky"}})
    for ctype in ["application/json;charset:utf-8", "text/plain", "application/x-www-form-urlencoded", None]:
        headers = {"Content-Type": ctype} if ctype else {}
        r = requests.post(server.base + "/v3/push/", data=body, headers=headers, auth=auth, timeout=5)
        assert r.status_code == 200, (ctype, r.text)
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
    assert len(d.pushes(4)) == 4
    # Repeated and comma-listed, URL-encoded platform parameters.
    r = requests.get(server.base + "/v3/tags/?platform=android%2Cios", auth=auth, timeout=5)
    assert r.json()["tags"] == ["q"]
    r = requests.get(server.base + "/v3/tags?platform=ios&platform=android", auth=auth, timeout=5)
    assert r.json()["tags"] == ["q"]
    # Unknown paths and methods still answer JSON.
    r = requests.get(server.base + "/v3/nothing-here", auth=auth, timeout=5)
    assert r.status_code == 404 and r.headers["Content-Type"].startswith("application/json")
    r = requests.put(server.base + "/v3/push", auth=auth, timeout=5)
    assert r.status_code == 405 and r.json()["error"]["code"] == 1001


def test_framework_rejections_are_json_too(server, app):
    auth = (app["app_key"], app["master_secret"])
    r = requests.get(server.base + "/v3/devices/%FF%FE", auth=auth, timeout=5)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json")
    assert r.json()["error"]["code"] == 1003 and r.json()["error"]["message"]


def test_the_rate_window_resets():
    """A short window (configurable for this) instead of waiting a minute."""
    import os
    import tempfile
    from conftest import Server
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"), env={"PIGEON_RATE_LIMIT_PER_MINUTE": "3",
                                                    "PIGEON_RATE_LIMIT_WINDOW_S": "2"})
        s.start()
        try:
            app = s.create_app("window")
            codes = [get(s, app).status_code for _ in range(4)]
            assert codes == [200, 200, 200, 429]
            r = get(s, app)
            assert r.headers["X-Rate-Limit-Limit"] == "3" and int(r.headers["X-Rate-Limit-Reset"]) <= 2
            time.sleep(int(r.headers["X-Rate-Limit-Reset"]) + 0.1)
            r = get(s, app)
            assert r.status_code == 200 and r.headers["X-Rate-Limit-Remaining"] == "2"
        finally:
            s.stop()
