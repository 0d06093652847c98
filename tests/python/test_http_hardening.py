"""The HTTP layer under attack and in error: requests that never finish are closed, connections
are capped with /health still answering, every error is JSON in JPush's shape with
X-Rate-Limit-* headers, doubled slashes are one, and the log has one plain line per request
and per push."""

import base64
import hashlib
import json
import os
import socket
import tempfile
import time
import uuid

import pytest
import requests

from conftest import Device, Server


def started(tmp, **env):
    s = Server(os.path.join(tmp, "data"), env={k: str(v) for k, v in env.items()})
    s.start()
    return s


@pytest.fixture
def tight():
    """A server with small HTTP limits: header timeout 1 s, body timeout 2 s, 50 pending."""
    with tempfile.TemporaryDirectory() as tmp:
        s = started(tmp, PIGEON_HEADER_TIMEOUT_MS=1000, PIGEON_BODY_TIMEOUT_MS=2000,
                    PIGEON_MAX_PENDING_CONNECTIONS=50)
        yield s
        s.stop()


def raw(server, data=b""):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    if data:
        s.sendall(data)
    return s


def closed_within(sock, seconds):
    """Whether the server closes `sock` within `seconds` (reading whatever it answers)."""
    sock.settimeout(0.1)
    deadline = time.time() + seconds
    got = b""
    while time.time() < deadline:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def basic(app):
    token = base64.b64encode(f"{app['app_key']}:{app['master_secret']}".encode()).decode()
    return f"Basic {token}"


def test_slowloris_connections_are_closed_after_the_header_timeout(tight):
    partial = [raw(tight, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1") for _ in range(5)]
    silent = [raw(tight) for _ in range(5)]
    # A keep-alive connection idle after a request is also let go.
    idle = raw(tight, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    t0 = time.time()
    for s in partial + silent + [idle]:
        done, _ = closed_within(s, 4 - (time.time() - t0))
        assert done, "a connection that never finished its request head is still open"
        s.close()
    assert time.time() - t0 < 4
    assert requests.get(tight.base + "/health", timeout=1).ok


def test_a_stalled_body_is_answered_408_in_json_and_closed(tight):
    app = tight.create_app("stall")
    for path, auth in [("/v3/push", basic(app)), ("/v1/devices/register", None)]:
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        if auth:
            head += f"Authorization: {auth}\r\n"
        head += "Content-Length: 500\r\n\r\n"
        s = raw(tight, head.encode() + b'{"platform": "all"')
        t0 = time.time()
        done, got = closed_within(s, 5)
        s.close()
        assert done, f"{path}: the stalled request is still open after 5 s"
        assert 1.5 < time.time() - t0 < 5
        status_line, _, rest = got.partition(b"\r\n")
        assert b" 408 " in status_line, got
        headers, _, body = rest.partition(b"\r\n\r\n")
        assert b"application/json" in headers.lower()
        assert b"x-rate-limit-limit" in headers.lower()
        assert json.loads(body)["error"]["code"] == 408


def test_a_body_trickling_in_is_cut_off_at_the_body_timeout(tight):
    s = raw(tight, b"POST /v1/devices/register HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
    t0 = time.time()
    # One byte every 0.3 s: no single read waits long, the whole body never comes.
    got = b""
    s.settimeout(0.3)
    while time.time() - t0 < 5:
        try:
            s.sendall(b" ")
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
    s.close()
    assert b" 408 " in got.split(b"\r\n")[0], got
    assert time.time() - t0 < 4


def test_health_answers_while_many_half_open_connections_are_held(tight):
    held = [raw(tight, b"GET /v3/push HTTP/1.1\r\nHost: x\r\n") for _ in range(200)]
    # Beyond the pending cap (50) the oldest are dropped as new ones come.
    time.sleep(0.3)
    closed = sum(1 for s in held if closed_within(s, 0.02)[0])
    assert closed >= 140, f"only {closed} of 200 half-open connections were dropped"
    slowest = 0.0
    for _ in range(20):
        t0 = time.time()
        r = requests.get(tight.base + "/health", timeout=1)
        assert r.json() == {"status": "ok"}
        slowest = max(slowest, time.time() - t0)
    assert slowest < 1
    for s in held:
        s.close()


def test_connections_beyond_the_cap_are_closed_at_once():
    with tempfile.TemporaryDirectory() as tmp:
        s = started(tmp, PIGEON_MAX_CONNECTIONS=20, PIGEON_MAX_PENDING_CONNECTIONS=20)
        try:
            # A finished connection is closed before the next one is counted.
            assert requests.get(s.base + "/health", timeout=1,
                                headers={"Connection": "close"}).ok
            time.sleep(0.2)
            held = [raw(s, b"GET /health HTTP/1.1\r\n") for _ in range(20)]
            time.sleep(0.3)
            assert not any(closed_within(c, 0.02)[0] for c in held)
            extra = raw(s)
            done, _ = closed_within(extra, 1)
            assert done, "the 21st connection was not closed at once"
            for c in held:
                c.close()
            time.sleep(0.3)
            assert requests.get(s.base + "/health", timeout=1).ok
        finally:
            s.stop()


def test_devices_leave_headroom_for_the_api():
    """With 30 connections, a tenth stays free of devices: the 28th device is told 503 in
    JSON (and to come back later), while the app's backend still pushes to the 27."""
    with tempfile.TemporaryDirectory() as tmp:
        s = started(tmp, PIGEON_MAX_CONNECTIONS=30, PIGEON_MAX_PENDING_CONNECTIONS=10)
        try:
            app = s.create_app("crowd")
            devices = [Device(s, app["app_key"]) for _ in range(27)]
            extra = requests.post(s.base + "/v1/devices/register", timeout=5,
                                  json={"app_key": app["app_key"], "platform": "android"}).json()
            r = requests.get(s.base + "/v1/connect", timeout=5, headers={
                "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()})
            assert_jpush_error(r, 503)
            assert r.headers["Retry-After"] == "60"
            assert "device connections" in r.json()["error"]["message"]
            assert extra["registration_id"]
            push = {"platform": "all", "audience": "all", "notification": {"alert": "room"}}
            p = requests.post(s.base + "/v3/push", data=json.dumps(push), timeout=5,
                              auth=(app["app_key"], app["master_secret"]))
            assert p.status_code == 200, p.text
            for d in devices:
                assert [f["msg_id"] for f in d.pushes(1, quiet=0.05)] == [p.json()["msg_id"]]
            # A device that leaves frees its place.
            devices.pop().close()
            time.sleep(0.3)
            devices.append(Device(s, app["app_key"]))
            for d in devices:
                d.close()
        finally:
            s.stop()


def assert_jpush_error(r, status, code=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    err = r.json()["error"]
    assert isinstance(err["code"], int) and err["message"], err
    if code is not None:
        assert err["code"] == code, err
    for h in ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"):
        assert h in r.headers, (h, r.status_code, r.headers)
    return err


def raw_answer(server, data):
    """Sends raw bytes and reads the whole answer (the server closes after an error)."""
    s = raw(server, data)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        pass
    finally:
        s.close()
    head, _, body = got.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def test_requests_the_http_parser_refuses_are_answered_in_json(server):
    """Heads hyper cannot parse never reach a handler; their answer is JSON all the same."""
    cases = [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", 400),
        (b"POST /v3/push HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
        (b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ]
    for request, status in cases:
        head, body = raw_answer(server, request)
        assert head.startswith(f"HTTP/1.1 {status} "), (request[:40], head)
        assert "content-type: application/json" in head.lower(), head
        err = json.loads(body)["error"]
        assert err["code"] == status and err["message"], err
    # The connection after them is served as usual.
    assert requests.get(server.base + "/health", timeout=5).json() == {"status": "ok"}


def test_every_error_is_json_in_the_jpush_shape_with_rate_headers(server, app):
    base = server.base
    auth = (app["app_key"], app["master_secret"])
    # Too large a registration body: was 413 text/plain.
    assert_jpush_error(requests.post(base + "/v1/devices/register", data=b"x" * (3 << 20),
                                     timeout=10), 413)
    # A wrong method: JPush's 1001; was 405 with an empty body outside the JPush router.
    assert_jpush_error(requests.get(base + "/v1/devices/register", timeout=5), 405, 1001)
    assert_jpush_error(requests.post(base + "/health", timeout=5), 405, 1001)
    assert_jpush_error(requests.get(base + "/v3/push", auth=auth, timeout=5), 405, 1001)
    # Too long a URI, too large headers: answered by Pigeon in JSON below hyper's limits.
    assert_jpush_error(requests.get(base + "/v3/tags?x=" + "a" * 20000, auth=auth, timeout=5), 414)
    assert_jpush_error(requests.get(base + "/v3/tags", auth=auth, timeout=5,
                                    headers={"X-Big": "a" * 40000}), 431)
    # 401 and 404 carry X-Rate-Limit-*: the server default without an app, the app's with one.
    r = requests.get(base + "/v3/tags", auth=("nosuchapp000000000000000", "x" * 24), timeout=5)
    assert_jpush_error(r, 401)
    assert int(r.headers["X-Rate-Limit-Limit"]) > 0
    assert_jpush_error(requests.get(base + "/v3/tags", timeout=5), 401)
    assert_jpush_error(requests.get(base + "/v3/nothing/here", timeout=5), 404)
    r = requests.get(base + "/v3/nothing/here", auth=auth, timeout=5)
    assert_jpush_error(r, 404)
    assert int(r.headers["X-Rate-Limit-Remaining"]) < int(r.headers["X-Rate-Limit-Limit"])
    # Successes say it too.
    assert "X-Rate-Limit-Limit" in requests.get(base + "/health", timeout=5).headers


def test_doubled_slashes_are_one_and_tag_membership_of_unknown_devices_is_false(server, app,
                                                                              devices):
    auth = (app["app_key"], app["master_secret"])
    d = devices(tags=["t1"])
    rid = d.registration_id
    for path in [f"/v3/tags//t1/registration_ids/{rid}", f"/v3/tags/t1/registration_ids/{rid}",
                 f"//v3/tags//t1//registration_ids//{rid}/"]:
        r = requests.get(server.base + path, auth=auth, timeout=5)
        assert r.status_code == 200 and r.json() == {"result": True}, (path, r.text)
    # JPush answers an unknown registration id with result false, not 400/7002.
    r = requests.get(server.base + "/v3/tags/t1/registration_ids/nosuchdevice0000", auth=auth,
                     timeout=5)
    assert r.status_code == 200 and r.json() == {"result": False}, r.text
    # jpush-async deletes a tag at /v3/tags//{tag}.
    r = requests.delete(server.base + "/v3/tags//t1", auth=auth, timeout=5)
    assert r.status_code == 200, r.text
    r = requests.get(server.base + f"/v3/tags/t1/registration_ids/{rid}", auth=auth, timeout=5)
    assert r.json() == {"result": False}, r.text


def test_logs_have_a_plain_line_per_request_and_per_push():
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "pigeon.log")
        data = os.path.join(tmp, "data")
        s = Server(data, env={"RUST_LOG": "info"})
        with open(log_path, "wb") as log:
            s.start(stderr=log)
            try:
                app = s.create_app("logs-" + uuid.uuid4().hex[:6])
                d = Device(s, app["app_key"])
                auth = (app["app_key"], app["master_secret"])
                r = requests.post(s.base + "/v3/push", auth=auth, timeout=5, json={
                    "platform": "all", "audience": "all",
                    "notification": {"alert": "hello logs"}})
                assert r.status_code == 200, r.text
                msg_id = r.json()["msg_id"]
                assert requests.get(s.base + "/v3/nothing", timeout=5).status_code == 404
                # The Getui doors name the app too, once its token is good.
                key, secret = app["app_key"], app["master_secret"]
                ts = str(int(time.time() * 1000))
                token = requests.post(s.base + f"/v2/{key}/auth", timeout=5, json={
                    "sign": hashlib.sha256((key + ts + secret).encode()).hexdigest(),
                    "timestamp": ts, "appkey": key}).json()["data"]["token"]
                r = requests.get(s.base + f"/v2/{key}/user/status/{d.registration_id}",
                                 headers={"token": token}, timeout=5)
                assert r.json()["code"] == 0, r.text
                legacy = requests.post(s.base + "/serviceex", timeout=5, data=json.dumps({
                    "action": "connect", "appkey": key, "timeStamp": int(ts),
                    "sign": hashlib.md5((key + ts + secret).encode()).hexdigest(),
                    "version": "4.1.1.2"})).json()["authtoken"]
                r = requests.post(s.base + "/serviceex", timeout=5, data=json.dumps({
                    "action": "getClientIdStatusAction", "appkey": key, "version": "4.1.1.2",
                    "authToken": legacy, "appId": key, "clientId": d.registration_id}))
                assert r.json()["result"] == "Online", r.text
                d.close()
                time.sleep(0.3)
            finally:
                s.stop()
        text = open(log_path, encoding="utf-8", errors="replace").read()
    assert "\x1b[" not in text, "ANSI colour codes in a log written to a file"
    lines = text.splitlines()
    push_lines = [l for l in lines if "request" in l and "path=/v3/push" in l]
    assert len(push_lines) == 1, text
    line = push_lines[0]
    assert " INFO " in line and "method=POST" in line and "status=200" in line, line
    assert f"app_key={app['app_key']}" in line and "ms=" in line, line
    assert any("path=/v3/nothing" in l and "status=404" in l for l in lines), text
    for path in [f"path=/v2/{app['app_key']}/user/status/", "path=/serviceex"]:
        assert any(path in l and f"app_key={app['app_key']}" in l for l in lines), text
    assert any("path=/v1/devices/register" in l and "status=200" in l for l in lines), text
    accepted = [l for l in lines if "push accepted" in l]
    assert len(accepted) == 1 and f"msg_id={msg_id}" in accepted[0], text
    assert f"app_key={app['app_key']}" in accepted[0] and "targets=1" in accepted[0], accepted
    # Not for the liveness probe, not for the WebSocket upgrade or its frames.
    assert not any("path=/health" in l for l in lines), text
    assert not any("path=/v1/connect" in l for l in lines), text
