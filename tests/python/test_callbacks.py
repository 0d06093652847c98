"""Callbacks (callbacks.md) to a real HTTP receiver: endpoints added with the CLI while the
server runs, the request shape, Basic auth and signature, batching, retries of the same
batch after every kind of failed answer, and no loss across `kill -9`."""

import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import PIGEON, Device, Server

FAST = {"PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS": "true", "PIGEON_CALLBACKS_BATCH_WAIT_MS": "100",
        "PIGEON_CALLBACKS_RETRY_FIRST_MS": "20", "PIGEON_EXPIRED_GRACE_MS": "200"}


class Receiver:
    """Records every request; answers with whatever `answers` holds next (then OK)."""

    def __init__(self, port=0):
        self.requests = []
        self.answers = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                    answer = receiver.answers.pop(0) if receiver.answers else "ok"
                if answer == "hang":
                    time.sleep(11)
                    return
                status, payload = {
                    "ok": (200, b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'),
                    "500": (500, b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}'),
                    "failure": (200, b'{"ActionStatus":"FAILURE","ErrorCode":0,"ErrorInfo":""}'),
                    "errorcode": (200, b'{"ActionStatus":"OK","ErrorCode":7,"ErrorInfo":"no"}'),
                    "garbage": (200, b"<html>hello</html>"),
                }[answer]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def events(self, command=None):
        with self.lock:
            out = []
            for r in self.requests:
                for e in json.loads(r["body"])["Events"]:
                    if command is None or e["CallbackCommand"] == command:
                        out.append(e)
            return out

    def wait(self, check, limit=10.0):
        deadline = time.time() + limit
        while time.time() < deadline:
            if check():
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self.http.shutdown()


def add_callback(server, app, url, *args):
    # The receivers listen on 127.0.0.1: the CLI applies the server's address policy too.
    out = subprocess.run([PIGEON, "app", "callback", "add", "--app-key", app["app_key"], "--url", url,
                          "--data", server.data, *args], capture_output=True, text=True,
                         env=dict(os.environ, PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS="true"))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@contextlib.contextmanager
def server_with_receiver(extra_env, app_name, commands):
    """A server of its own (FAST plus `extra_env`), an app, and a receiver added for
    `commands` (a running server picks it up within a second)."""
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"), env=dict(FAST, **extra_env))
        server.start()
        rcv = Receiver()
        try:
            app = server.create_app(app_name)
            cb = add_callback(server, app, rcv.url, "--commands", commands)
            time.sleep(1.2)
            yield server, app, rcv, cb
        finally:
            rcv.close()
            server.stop()


@pytest.fixture
def fast_server():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"), env=FAST)
        s.start()
        yield s
        s.stop()


def push(server, app, rid):
    body = {"platform": "all", "audience": {"registration_id": [rid]}, "notification": {"alert": "cb"},
            "options": {"sendno": 42}, "callback": {"params": {"campaign": "c1"}}}
    r = requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 200, r.text
    return r.json()["msg_id"]


def test_events_reach_the_receiver_signed_and_batched(fast_server):
    server = fast_server
    app = server.create_app("cb")
    rcv = Receiver()
    try:
        cb = add_callback(server, app, rcv.url + "?tenant=7", "--commands", "Push.Accepted,Device.OnlineStatus")
        assert cb["id"] >= 1 and len(cb["signing_secret"]) >= 32
        time.sleep(1.2)  # a running server picks the endpoint up within a second
        d = Device(server, app["app_key"], alias="cb_user")
        msg_id = push(server, app, d.registration_id)
        d.ws.close()
        assert rcv.wait(lambda: len(rcv.events()) >= 3)

        online = rcv.events("Device.OnlineStatus")
        assert [(e["Status"], e["Reason"]) for e in online] == [("Online", "Login"), ("Offline", "Logout")]
        assert online[0]["RegistrationId"] == d.registration_id and online[0]["To_Account"] == "cb_user"
        assert online[0]["Platform"] == "android"
        (accepted,) = rcv.events("Push.Accepted")
        assert accepted["MsgId"] == msg_id and accepted["Sendno"] == "42" and accepted["TargetCount"] == 1
        assert accepted["AudienceType"] == "registration_id" and accepted["Params"] == {"campaign": "c1"}
        ids = [e["EventId"] for e in rcv.events()]
        assert len(set(ids)) == len(ids)

        for r in rcv.requests:
            url = urllib.parse.urlparse(r["path"])
            q = urllib.parse.parse_qs(url.query)
            assert url.path == "/hook" and q["tenant"] == ["7"] and q["SdkAppid"] == [app["app_key"]]
            assert q["contenttype"] == ["json"]
            events = json.loads(r["body"])["Events"]
            assert 1 <= len(events) <= 100 and {e["CallbackCommand"] for e in events} == set(q["CallbackCommand"])
            h = r["headers"]
            assert h["content-type"] == "application/json"
            expected = base64.b64encode(f"{app['app_key']}:{app['master_secret']}".encode()).decode()
            assert h["authorization"] == "Basic " + expected
            t, v1 = [kv.split("=", 1)[1] for kv in h["x-pigeon-signature"].split(",")]
            assert abs(int(t) - time.time()) < 300
            mac = hmac.new(cb["signing_secret"].encode(), f"{t}.".encode() + r["body"], hashlib.sha256)
            assert hmac.compare_digest(mac.hexdigest(), v1)
            assert h["x-pigeon-delivery"]

        listed = subprocess.run([PIGEON, "app", "callback", "list", "--app-key", app["app_key"],
                                 "--data", server.data], capture_output=True, text=True, check=True)
        entry = json.loads(listed.stdout.splitlines()[0])
        assert entry["url"] == rcv.url + "?tenant=7" and cb["signing_secret"] not in listed.stdout
    finally:
        rcv.close()


def test_a_failed_batch_is_retried_unchanged(fast_server):
    server = fast_server
    app = server.create_app("retry")
    rcv = Receiver()
    try:
        add_callback(server, app, rcv.url, "--commands", "Push.Accepted", "--no-basic-auth")
        time.sleep(1.2)
        d = Device(server, app["app_key"])
        rcv.answers = ["500", "failure", "errorcode", "garbage"]
        msg_id = push(server, app, d.registration_id)
        assert rcv.wait(lambda: len(rcv.requests) >= 5, limit=20), len(rcv.requests)
        deliveries = {r["headers"]["x-pigeon-delivery"] for r in rcv.requests[:5]}
        bodies = {r["body"] for r in rcv.requests[:5]}
        assert len(deliveries) == 1 and len(bodies) == 1
        assert json.loads(rcv.requests[0]["body"])["Events"][0]["MsgId"] == msg_id
        assert "authorization" not in rcv.requests[0]["headers"]
        time.sleep(0.5)
        assert len(rcv.requests) == 5  # taken on the fifth try, not sent again
        d.close()
    finally:
        rcv.close()


def test_no_event_is_lost_across_kill_9(fast_server):
    server = fast_server
    app = server.create_app("durable")
    rcv = Receiver()
    try:
        add_callback(server, app, rcv.url, "--commands", "Push.Accepted")
        time.sleep(1.2)
        d = Device(server, app["app_key"])
        rcv.answers = ["500"] * 1000  # down for now
        sent = {push(server, app, d.registration_id) for _ in range(30)}
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(5)
        server.proc = None
        d.ws.close()
        rcv.answers = []  # back
        server.start()
        assert rcv.wait(lambda: {e["MsgId"] for e in rcv.events()} >= sent, limit=20)
        got = [e["EventId"] for e in rcv.events() if json.dumps(e)]
        assert {e["MsgId"] for e in rcv.events()} == sent
        assert len(set(got)) == 30
    finally:
        rcv.close()


def test_private_addresses_are_refused_unless_allowed(server, app):
    rcv = Receiver()
    try:
        add_callback(server, app, rcv.url)
        time.sleep(1.2)
        d = Device(server, app["app_key"])
        push(server, app, d.registration_id)
        time.sleep(2.0)
        assert rcv.requests == []
        d.close()
    finally:
        rcv.close()


def test_callback_cli_refuses_bad_input(server, app):
    def run(*args):
        return subprocess.run([PIGEON, "app", "callback", *args, "--data", server.data], capture_output=True, text=True)
    out = run("add", "--app-key", app["app_key"], "--url", "ftp://x")
    assert out.returncode != 0 and "http or https" in out.stderr
    out = run("add", "--app-key", app["app_key"], "--url", "http://example.com/x", "--commands", "Push.Nothing")
    assert out.returncode != 0 and "unknown command" in out.stderr
    out = run("add", "--app-key", "y" * 24, "--url", "http://example.com/x")
    assert out.returncode != 0 and "no app" in out.stderr
    out = run("remove", "--app-key", app["app_key"], "--id", "99999")
    assert out.returncode != 0


def test_push_events_sent_delivered_clicked(fast_server):
    server = fast_server
    app = server.create_app("stages")
    rcv = Receiver()
    try:
        add_callback(server, app, rcv.url, "--commands", "Push.Event")
        time.sleep(1.2)
        d = Device(server, app["app_key"], platform="ios", alias="stage_user")
        msg_id = push(server, app, d.registration_id)
        assert [f["msg_id"] for f in d.pushes(1)] == [msg_id]
        d.ws.send(json.dumps({"op": "click", "msg_id": msg_id, "seq": 1}))
        assert json.loads(d.ws.recv(timeout=5))["op"] == "ok"
        assert rcv.wait(lambda: len(rcv.events("Push.Event")) >= 3)
        events = sorted(rcv.events("Push.Event"), key=lambda e: e["PushStage"])
        assert [e["PushStage"] for e in events] == [1, 2, 3]
        for e in events:
            assert e["MsgId"] == msg_id and e["PushID"] == msg_id
            assert e["RegistrationId"] == d.registration_id and e["To_Account"] == "stage_user"
            assert e["Platform"] == "ios" and e["PushPlatform"] == 10
            assert e["ErrCode"] == 0 and e["Params"] == {"campaign": "c1"}
        # Only Push.Event was asked for.
        assert rcv.events("Device.OnlineStatus") == [] and rcv.events("Push.Accepted") == []
        d.close()
    finally:
        rcv.close()


def test_expired_pushes_report_their_undelivered_devices(fast_server):
    server = fast_server
    app = server.create_app("expiry")
    rcv = Receiver()
    try:
        add_callback(server, app, rcv.url, "--commands", "Push.Undelivered")
        time.sleep(1.2)
        online = Device(server, app["app_key"], tags=["exp"])
        offline = Device(server, app["app_key"], tags=["exp"], alias="away")
        offline.close()
        body = {"platform": "all", "audience": {"tag": ["exp"]}, "notification": {"alert": "short-lived"},
                "options": {"time_to_live": 1}}
        r = requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                          auth=(app["app_key"], app["master_secret"]))
        msg_id = r.json()["msg_id"]
        assert [f["msg_id"] for f in online.pushes(1)] == [msg_id]
        assert rcv.wait(lambda: rcv.events("Push.Undelivered"), limit=10)
        time.sleep(1.5)
        (e,) = rcv.events("Push.Undelivered")
        assert e["MsgId"] == msg_id and e["RegistrationId"] == offline.registration_id
        assert e["To_Account"] == "away" and e["ErrCode"] == 1 and "expired" in e["ErrInfo"]
        assert "PushStage" not in e
        # Reported once, also after a restart.
        server.stop()
        server.start()
        time.sleep(1.5)
        assert len(rcv.events("Push.Undelivered")) == 1
        online.close()
    finally:
        rcv.close()


def test_dead_letters_are_listed_and_replayed_over_http():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"), env=dict(FAST, PIGEON_CALLBACKS_DEAD_AFTER_S="1"))
        server.start()
        rcv = Receiver()
        try:
            app = server.create_app("dead")
            auth = (app["app_key"], app["master_secret"])
            api = server.base + "/v3/callbacks"
            r = requests.post(api, auth=auth, timeout=5,
                              data=json.dumps({"url": rcv.url, "commands": ["Push.Accepted"], "basic_auth": False}))
            assert r.status_code == 200, r.text
            cb = r.json()
            assert requests.get(api, auth=auth, timeout=5).json()["callbacks"][0]["id"] == cb["id"]
            time.sleep(1.2)
            rcv.answers = ["500"] * 100000
            d = Device(server, app["app_key"])
            msg_id = push(server, app, d.registration_id)
            dead_url = f"{api}/{cb['id']}/dead"
            deadline = time.time() + 15
            while not requests.get(dead_url, auth=auth, timeout=5).json()["dead"]:
                assert time.time() < deadline, "the batch was never dead-lettered"
                time.sleep(0.2)
            (dead,) = requests.get(dead_url, auth=auth, timeout=5).json()["dead"]
            assert dead["command"] == "Push.Accepted" and dead["events"] == 1 and "500" in dead["last_error"]
            tries = len(rcv.requests)
            time.sleep(0.5)
            assert len(rcv.requests) == tries  # dead: no more tries
            rcv.answers = []
            r = requests.post(f"{dead_url}/{dead['delivery_id']}/replay", auth=auth, timeout=5)
            assert r.status_code == 200, r.text
            assert rcv.wait(lambda: len(rcv.requests) > tries)
            last = rcv.requests[-1]
            assert last["headers"]["x-pigeon-delivery"] == dead["delivery_id"]
            assert json.loads(last["body"])["Events"][0]["MsgId"] == msg_id
            assert requests.get(dead_url, auth=auth, timeout=5).json()["dead"] == []
            # Errors.
            r = requests.post(f"{dead_url}/nope/replay", auth=auth, timeout=5)
            assert r.status_code == 404
            r = requests.post(api, auth=auth, timeout=5, data=json.dumps({"url": "gopher://x"}))
            assert r.status_code == 400 and "http or https" in r.json()["error"]["message"]
            r = requests.post(api, auth=auth, timeout=5, data=json.dumps({"url": rcv.url, "commands": ["X"]}))
            assert r.status_code == 400 and "unknown command" in r.json()["error"]["message"]
            r = requests.delete(f"{api}/abc", auth=auth, timeout=5)
            assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json")
            assert requests.delete(f"{api}/{cb['id']}", auth=auth, timeout=5).status_code == 200
            assert requests.delete(f"{api}/{cb['id']}", auth=auth, timeout=5).status_code == 404
            d.close()
        finally:
            rcv.close()
            server.stop()


def test_a_hanging_receiver_does_not_delay_another(fast_server):
    server = fast_server
    app = server.create_app("isolation")
    slow, fast = Receiver(), Receiver()
    try:
        slow.answers = ["hang"] * 10
        add_callback(server, app, slow.url, "--commands", "Push.Accepted")
        add_callback(server, app, fast.url, "--commands", "Push.Accepted")
        time.sleep(1.2)
        d = Device(server, app["app_key"])
        first = push(server, app, d.registration_id)
        assert slow.wait(lambda: slow.requests, limit=5)  # the slow one is now hanging
        second = push(server, app, d.registration_id)
        started = time.time()
        assert fast.wait(lambda: {e["MsgId"] for e in fast.events()} == {first, second}, limit=5)
        assert time.time() - started < 3
        d.close()
    finally:
        slow.close()
        fast.close()


def test_a_silent_device_goes_offline_with_timeout():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"), env=dict(FAST, PIGEON_HEARTBEAT_S="5"))
        server.start()
        rcv = Receiver()
        try:
            app = server.create_app("timeout")
            add_callback(server, app, rcv.url, "--commands", "Device.OnlineStatus")
            time.sleep(1.2)
            d = Device(server, app["app_key"])  # says nothing after hello
            assert rcv.wait(lambda: len(rcv.events()) >= 2, limit=15)
            assert [(e["Status"], e["Reason"]) for e in rcv.events()] == [("Online", "Login"), ("Offline", "Timeout")]
            d2 = Device(server, app["app_key"])
            # A second connection of the same device replaces the first.
            from websockets.sync.client import connect
            ws = connect(server.base.replace("http://", "ws://") + "/v1/connect")
            ws.send(json.dumps({"op": "hello", "registration_id": d2.registration_id, "device_secret": d2.secret}))
            assert json.loads(ws.recv(timeout=5))["op"] == "welcome"
            assert rcv.wait(lambda: any(e["Reason"] == "Replaced" for e in rcv.events()), limit=5)
            ws.close()
        finally:
            rcv.close()
            server.stop()


def signed_by(request, secret):
    t, v1 = [kv.split("=", 1)[1] for kv in request["headers"]["x-pigeon-signature"].split(",")]
    mac = hmac.new(secret.encode(), f"{t}.".encode() + request["body"], hashlib.sha256)
    return hmac.compare_digest(mac.hexdigest(), v1)


def push_with_callback(server, app, rid, callback):
    body = {"platform": "all", "audience": {"registration_id": [rid]}, "notification": {"alert": "cb"},
            "callback": callback}
    return requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                         auth=(app["app_key"], app["master_secret"]))


def test_a_push_level_callback_url_gets_the_kinds_its_type_asks_for(fast_server):
    server = fast_server
    app = server.create_app("pushlevel")
    own, mine = Receiver(), Receiver()
    try:
        cb = add_callback(server, app, own.url, "--commands", "Push.Accepted,Push.Event")
        time.sleep(1.2)
        d = Device(server, app["app_key"])
        # type 9 = delivered (1) + accepted (8): no clicks, and never stage 1 (not a type bit).
        r = push_with_callback(server, app, d.registration_id,
                               {"url": mine.url, "params": {"order": "A1"}, "type": 9})
        assert r.status_code == 200, r.text
        first = r.json()["msg_id"]
        r = push_with_callback(server, app, d.registration_id, {"url": mine.url, "type": "2"})
        assert r.status_code == 200, r.text
        second = r.json()["msg_id"]
        assert sorted(f["msg_id"] for f in d.pushes(2)) == sorted([first, second])
        for msg_id in (first, second):
            d.ws.send(json.dumps({"op": "click", "msg_id": msg_id, "seq": 1}))
            assert json.loads(d.ws.recv(timeout=5))["op"] == "ok"

        def kinds(rcv):
            return sorted((e["CallbackCommand"], e["MsgId"], e.get("PushStage", 0)) for e in rcv.events())

        want_mine = sorted([("Push.Accepted", first, 0), ("Push.Event", first, 2), ("Push.Event", second, 3)])
        assert mine.wait(lambda: kinds(mine) == want_mine), kinds(mine)
        want_own = sorted([("Push.Accepted", m, 0) for m in (first, second)]
                          + [("Push.Event", m, s) for m in (first, second) for s in (1, 2, 3)])
        assert own.wait(lambda: kinds(own) == want_own), kinds(own)
        time.sleep(0.5)
        assert kinds(mine) == want_mine  # nothing more arrives
        for e in mine.events():
            if e["MsgId"] == first:
                assert e["Params"] == {"order": "A1"}
        # Signed with the app's own endpoint's secret, Basic auth on.
        expected = base64.b64encode(f"{app['app_key']}:{app['master_secret']}".encode()).decode()
        for r in mine.requests:
            assert signed_by(r, cb["signing_secret"])
            assert r["headers"]["authorization"] == "Basic " + expected
            q = urllib.parse.parse_qs(urllib.parse.urlparse(r["path"]).query)
            assert q["SdkAppid"] == [app["app_key"]]
        listed = requests.get(server.base + "/v3/callbacks", auth=(app["app_key"], app["master_secret"]),
                              timeout=5).json()["callbacks"]
        assert [(c["url"], c["push_level"]) for c in listed] == [(own.url, False), (mine.url, True)]
        # Bad callback fields.
        for bad, words in [({"url": "ftp://x/y"}, "http or https"), ({"url": mine.url, "type": 16}, "type"),
                           ({"url": "http://" + "a" * 1100}, "callback.url is 1107 bytes, the limit is 1024"), ({"url": 7}, "url")]:
            r = push_with_callback(server, app, d.registration_id, bad)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"]["code"] == 1003 and words in r.json()["error"]["message"], r.text
        d.close()
    finally:
        own.close()
        mine.close()


def test_a_push_level_url_of_an_app_without_endpoints_is_signed_with_the_master_secret(fast_server):
    server = fast_server
    app = server.create_app("pushonly")
    mine = Receiver()
    try:
        d = Device(server, app["app_key"])
        r = push_with_callback(server, app, d.registration_id, {"url": mine.url})
        assert r.status_code == 200, r.text
        msg_id = r.json()["msg_id"]
        assert [f["msg_id"] for f in d.pushes(1)] == [msg_id]
        # No type: every kind (accepted, delivered); the device's presence is not a push event.
        assert mine.wait(lambda: len(mine.events()) >= 2)
        time.sleep(0.4)
        assert sorted((e["CallbackCommand"], e.get("PushStage", 0)) for e in mine.events()) == [
            ("Push.Accepted", 0), ("Push.Event", 2)]
        assert all(signed_by(r, app["master_secret"]) for r in mine.requests)
        d.close()
    finally:
        mine.close()


def test_a_receiver_that_does_not_answer_within_10_s_fails_the_batch(fast_server):
    server = fast_server
    app = server.create_app("timeout")
    rcv = Receiver()
    try:
        rcv.answers = ["hang"]
        add_callback(server, app, rcv.url, "--commands", "Push.Accepted")
        time.sleep(1.2)
        d = Device(server, app["app_key"])
        msg_id = push(server, app, d.registration_id)
        assert rcv.wait(lambda: len(rcv.requests) >= 1, limit=5)
        first = time.time()
        assert rcv.wait(lambda: len(rcv.requests) >= 2, limit=15), "the batch was not retried"
        waited = time.time() - first
        assert 9.0 <= waited <= 12.5, waited
        a, b = rcv.requests[:2]
        assert a["headers"]["x-pigeon-delivery"] == b["headers"]["x-pigeon-delivery"] and a["body"] == b["body"]
        assert json.loads(b["body"])["Events"][0]["MsgId"] == msg_id
        d.close()
    finally:
        rcv.close()


def test_an_endpoint_failing_too_long_is_disabled_reported_and_enabled_again():
    env = {"PIGEON_CALLBACKS_DISABLE_AFTER_S": "2"}
    with server_with_receiver(env, "disable", "Push.Accepted") as (server, app, rcv, cb):
        auth = (app["app_key"], app["master_secret"])
        rcv.answers = ["500"] * 100000
        d = Device(server, app["app_key"])
        old = push(server, app, d.registration_id)

        def listed():
            out = subprocess.run([PIGEON, "app", "callback", "list", "--app-key", app["app_key"],
                                  "--data", server.data], capture_output=True, text=True, check=True)
            return json.loads(out.stdout.splitlines()[0])

        deadline = time.time() + 15
        while not listed()["disabled"]:
            assert time.time() < deadline, "the failing endpoint was never disabled"
            time.sleep(0.3)
        entry = listed()
        assert entry["failing_since_ms"] and entry["disabled_ms"] >= entry["failing_since_ms"] + 2000
        api = requests.get(server.base + "/v3/callbacks", auth=auth, timeout=5).json()["callbacks"]
        assert api[0]["disabled"] is True
        time.sleep(1.5)  # the dispatcher has let it go: no more tries
        tries = len(rcv.requests)
        time.sleep(1.0)
        assert len(rcv.requests) == tries
        (dead,) = requests.get(f"{server.base}/v3/callbacks/{cb['id']}/dead", auth=auth,
                               timeout=5).json()["dead"]
        assert dead["events"] == 1
        push(server, app, d.registration_id)  # not kept for a disabled endpoint
        tries = len(rcv.requests)

        rcv.answers = []
        out = subprocess.run([PIGEON, "app", "callback", "enable", "--app-key", app["app_key"],
                              "--id", str(cb["id"]), "--data", server.data], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert not listed()["disabled"] and listed()["failing_since_ms"] is None
        time.sleep(1.2)
        new = push(server, app, d.registration_id)
        assert rcv.wait(lambda: new in {e["MsgId"] for e in rcv.events()})
        time.sleep(0.3)
        since_enabled = [e["MsgId"] for r in rcv.requests[tries:] for e in json.loads(r["body"])["Events"]]
        assert since_enabled == [new]  # neither the dead batch nor what happened while disabled
        r = requests.post(f"{server.base}/v3/callbacks/{cb['id']}/dead/{dead['delivery_id']}/replay",
                          auth=auth, timeout=5)
        assert r.status_code == 200, r.text
        assert rcv.wait(lambda: rcv.requests[-1]["headers"]["x-pigeon-delivery"] == dead["delivery_id"])
        # Errors.
        r = requests.post(f"{server.base}/v3/callbacks/999/enable", auth=auth, timeout=5)
        assert r.status_code == 404 and r.json()["error"]["code"] == 1003
        out = subprocess.run([PIGEON, "app", "callback", "enable", "--app-key", app["app_key"],
                              "--id", "999", "--data", server.data], capture_output=True, text=True)
        assert out.returncode != 0 and "no callback endpoint 999" in out.stderr
        d.close()


def test_batches_hold_at_most_100_events_and_a_partial_one_waits_for_the_batch_wait():
    env = {"PIGEON_CALLBACKS_BATCH_WAIT_MS": "3000"}
    with server_with_receiver(env, "sizes", "Push.Accepted") as (server, app, rcv, _):
        d = Device(server, app["app_key"])
        started = time.time()
        sent = {push(server, app, d.registration_id) for _ in range(250)}
        assert time.time() - started < 2.5, "pushing took longer than the batch wait"
        assert rcv.wait(lambda: len(rcv.events()) >= 200, limit=5)
        full_at = time.time()
        assert [len(json.loads(r["body"])["Events"]) for r in rcv.requests] == [100, 100]
        assert rcv.wait(lambda: len(rcv.events()) == 250, limit=6)
        # The last 50 waited for the batch wait, counted from the oldest of them.
        assert time.time() - started >= 2.8 and time.time() - full_at > 0.3
        assert sorted(len(json.loads(r["body"])["Events"]) for r in rcv.requests) == [50, 100, 100]
        assert {e["MsgId"] for e in rcv.events()} == sent
        d.close()


def test_a_refused_connection_fails_the_batch_until_the_receiver_listens(fast_server):
    import socket
    server = fast_server
    app = server.create_app("refused")
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    add_callback(server, app, f"http://127.0.0.1:{port}/hook", "--commands", "Push.Accepted")
    time.sleep(1.2)
    d = Device(server, app["app_key"])
    msg_id = push(server, app, d.registration_id)
    time.sleep(1.0)  # several tries refused
    rcv = Receiver(port)
    try:
        assert rcv.wait(lambda: rcv.events(), limit=15), "never retried after the receiver came up"
        (event,) = rcv.events()
        assert event["MsgId"] == msg_id
        time.sleep(0.5)
        assert len(rcv.requests) == 1  # taken once, not sent again
        d.close()
    finally:
        rcv.close()
