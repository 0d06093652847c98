"""Callback endpoints in Tencent Cloud IM's `Push.OfflinePush` shape (callbacks.md §5, seed
001), against the real binary, real devices, a Xiaomi push service speaking its regid API and
real HTTP receivers: every field of what arrives for the sending, delivery and click stages
and for a push never delivered; the same signing, Basic auth and retries as Pigeon's own
format; what a Tencent endpoint is not sent; and the refusals of bad formats."""

import base64
import json
import os
import subprocess
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import PIGEON, Device, Server
from test_callbacks import FAST, Receiver, add_callback, signed_by

# The fields of the seed's single chat event object, in its order.
SEED_FIELDS = ["CallbackCommand", "EventType", "EventTime", "From_Account", "To_Account",
               "PushPlatform", "PushStage", "MsgKey", "MsgSeq", "MsgRandom", "MsgTime", "PushID",
               "ErrCode", "ErrInfo"]


class FakeXiaomi:
    """Mi Push's regid send (`POST /v3/message/regid`), taking every regid it is given."""

    def __init__(self):
        self.sent = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                form = urllib.parse.parse_qs(body)
                if self.path.startswith("/v3/message/regid"):
                    fake.sent.append(form.get("registration_id", [""])[0])
                    answer = {"result": "ok", "code": 0, "data": {"id": "xm-msg-1"}}
                else:
                    answer = {"result": "error", "code": 10001, "reason": "unknown path"}
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self):
        self.http.shutdown()


@pytest.fixture
def tencent_server():
    env = dict(FAST, PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS="true")
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"), env=env)
        s.start()
        yield s
        s.stop()


def api_add(server, app, body):
    return requests.post(server.base + "/v3/callbacks", data=json.dumps(body), timeout=5,
                         auth=(app["app_key"], app["master_secret"]))


def push(server, app, rids, **extra):
    body = {"platform": "all", "audience": {"registration_id": rids},
            "notification": {"alert": "tencent"}, **extra}
    r = requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 200, r.text
    return r.json()["msg_id"]


def check_event(e, msg_id, accepted_at):
    """The fields every event of push `msg_id` has, whatever its stage and recipient."""
    assert list(e) == SEED_FIELDS, list(e)
    assert e["CallbackCommand"] == "Push.OfflinePush"
    assert e["EventType"] == 1  # single chat: one recipient
    assert isinstance(e["EventTime"], int) and abs(e["EventTime"] - time.time()) < 60
    assert e["From_Account"] == ""
    assert e["PushID"] == msg_id
    # MsgTime is when the push was accepted; MsgSeq and MsgRandom are msg_id's low and high
    # 32 bits, and MsgKey joins them with MsgTime as the seed's example does.
    assert accepted_at[0] - 1 <= e["MsgTime"] <= accepted_at[1] + 1, (e["MsgTime"], accepted_at)
    assert 0 <= e["MsgSeq"] < 2**32 and 0 <= e["MsgRandom"] < 2**32
    assert e["MsgRandom"] << 32 | e["MsgSeq"] == int(msg_id)
    assert e["MsgKey"] == f'{e["MsgSeq"]}_{e["MsgRandom"]}_{e["MsgTime"]}'
    for k in ["EventTime", "PushPlatform", "PushStage", "MsgSeq", "MsgRandom", "MsgTime", "ErrCode"]:
        assert isinstance(e[k], int) and not isinstance(e[k], bool), k
    for k in ["CallbackCommand", "From_Account", "To_Account", "MsgKey", "PushID", "ErrInfo"]:
        assert isinstance(e[k], str), k


def check_request(r, app, secret, basic_auth=True):
    url = urllib.parse.urlparse(r["path"])
    q = urllib.parse.parse_qs(url.query)
    assert url.path == "/hook"
    assert q == {"SdkAppid": [app["app_key"]], "CallbackCommand": ["Push.OfflinePush"],
                 "contenttype": ["json"]}, q
    body = json.loads(r["body"])
    assert list(body) == ["Events"] and 1 <= len(body["Events"]) <= 100
    h = r["headers"]
    assert h["content-type"] == "application/json"
    assert signed_by(r, secret)
    assert h["x-pigeon-delivery"]
    if basic_auth:
        expected = base64.b64encode(f"{app['app_key']}:{app['master_secret']}".encode()).decode()
        assert h["authorization"] == "Basic " + expected
    else:
        assert "authorization" not in h


def test_sending_delivery_and_click_arrive_as_push_offline_push(tencent_server):
    server = tencent_server
    app = server.create_app("tencent")
    auth = (app["app_key"], app["master_secret"])
    tencent, pigeon, own_url = Receiver(), Receiver(), Receiver()
    xiaomi = FakeXiaomi()
    try:
        r = requests.put(server.base + "/v3/vendors/xiaomi", auth=auth, timeout=5, data=json.dumps(
            {"app_secret": "xm-secret", "package_name": "com.example", "base_url": xiaomi.base}))
        assert r.status_code == 200, r.text
        r = api_add(server, app, {"url": tencent.url, "format": "tencent"})
        assert r.status_code == 200, r.text
        cb = r.json()
        assert cb["format"] == "tencent" and cb["commands"] == ["Push.Event", "Push.Undelivered"]
        # The same events to an endpoint of Pigeon's format, for comparison.
        add_callback(server, app, pigeon.url, "--commands", "Push.Event,Device.OnlineStatus")
        listed = {c["url"]: c for c in
                  requests.get(server.base + "/v3/callbacks", auth=auth, timeout=5).json()["callbacks"]}
        assert listed[tencent.url]["format"] == "tencent" and listed[pigeon.url]["format"] == "pigeon"
        assert listed[tencent.url]["commands"] == ["Push.Event", "Push.Undelivered"]
        time.sleep(1.2)  # a running server picks endpoints up within a second

        alice = Device(server, app["app_key"], platform="ios", alias="alice")
        anon = Device(server, app["app_key"], platform="android")
        # Offline, with a Xiaomi token: the push goes through Mi Push.
        r = requests.post(server.base + "/v1/devices/register", timeout=5, json={
            "app_key": app["app_key"], "platform": "android", "alias": "carol",
            "push_tokens": {"xiaomi": "xm-regid-1"}})
        assert r.status_code == 200, r.text
        carol = r.json()["registration_id"]

        before = int(time.time())
        # A push-level URL of its own, too: it stays in Pigeon's format.
        msg_id = push(server, app, [alice.registration_id, anon.registration_id, carol],
                      callback={"url": own_url.url, "type": 1})
        after = int(time.time())
        assert [f["msg_id"] for f in alice.pushes(1)] == [msg_id]
        assert [f["msg_id"] for f in anon.pushes(1)] == [msg_id]
        alice.ws.send(json.dumps({"op": "click", "msg_id": msg_id, "seq": 1}))
        assert json.loads(alice.ws.recv(timeout=5))["op"] == "ok"

        # Pigeon's connection is no vendor of the seed's (0); Mi Push is 2.
        want = sorted([("alice", 1, 0), ("alice", 2, 0), ("alice", 3, 0),
                       (anon.registration_id, 1, 0), (anon.registration_id, 2, 0),
                       ("carol", 1, 2)])

        def got():
            return sorted((e["To_Account"], e["PushStage"], e["PushPlatform"]) for e in tencent.events())

        assert tencent.wait(lambda: got() == want, limit=10), got()
        assert xiaomi.sent == ["xm-regid-1"]
        for e in tencent.events():
            check_event(e, msg_id, (before, after))
            assert e["ErrCode"] == 0 and e["ErrInfo"] == "OK"
        for r in tencent.requests:
            check_request(r, app, cb["signing_secret"])

        # The Pigeon endpoint got the same stages in its own shape, and the devices' presence.
        assert pigeon.wait(lambda: len(pigeon.events("Push.Event")) == len(want))
        ours = sorted((e["To_Account"] or e["RegistrationId"], e["PushStage"], e["PushPlatform"])
                      for e in pigeon.events("Push.Event"))
        assert ours == sorted((a, s, 10 if p == 0 else p) for a, s, p in want)
        assert all(e["MsgTime"] == tencent.events()[0]["MsgTime"] for e in pigeon.events("Push.Event"))
        assert pigeon.events("Device.OnlineStatus")
        # The push's own URL: Pigeon's format, delivered only (type 1).
        assert own_url.wait(lambda: own_url.events())
        assert {e["CallbackCommand"] for e in own_url.events()} == {"Push.Event"}
        assert {e["PushStage"] for e in own_url.events()} == {2}

        # Nothing Tencent's shape has no place for: no presence, no Push.Accepted.
        alice.close()
        anon.close()
        time.sleep(1.0)
        assert got() == want
        assert all(json.loads(r["body"])["Events"][0]["CallbackCommand"] == "Push.OfflinePush"
                   for r in tencent.requests)
    finally:
        for x in (tencent, pigeon, own_url, xiaomi):
            x.close()


def test_a_push_never_delivered_is_a_failed_delivery_stage(tencent_server):
    server = tencent_server
    app = server.create_app("tencent-expiry")
    rcv = Receiver()
    try:
        cb = add_callback(server, app, rcv.url, "--format", "tencent", "--commands",
                          "Push.Undelivered", "--no-basic-auth")
        assert cb["format"] == "tencent" and cb["commands"] == ["Push.Undelivered"]
        time.sleep(1.2)
        away = Device(server, app["app_key"], alias="away")
        away.close()
        nobody = Device(server, app["app_key"])
        nobody.close()
        before = int(time.time())
        msg_id = push(server, app, [away.registration_id, nobody.registration_id],
                      options={"time_to_live": 1})
        after = int(time.time())
        assert rcv.wait(lambda: len(rcv.events()) >= 2, limit=15), rcv.events()
        time.sleep(0.5)
        events = sorted(rcv.events(), key=lambda e: e["To_Account"] != "away")
        assert [e["To_Account"] for e in events] == ["away", nobody.registration_id]
        for e in events:
            check_event(e, msg_id, (before, after))
            assert e["PushStage"] == 2 and e["PushPlatform"] == 0
            assert e["ErrCode"] == 1 and "expired" in e["ErrInfo"]
        for r in rcv.requests:
            check_request(r, app, cb["signing_secret"], basic_auth=False)
    finally:
        rcv.close()


def test_a_failed_batch_is_retried_unchanged_and_signed_again(tencent_server):
    server = tencent_server
    app = server.create_app("tencent-retry")
    rcv = Receiver()
    try:
        rcv.answers = ["500", "failure"]
        cb = add_callback(server, app, rcv.url, "--format", "tencent")
        assert cb["commands"] == ["Push.Event", "Push.Undelivered"]
        time.sleep(1.2)
        d = Device(server, app["app_key"], alias="retry_user")
        before = int(time.time())
        msg_id = push(server, app, [d.registration_id])
        after = int(time.time())
        assert [f["msg_id"] for f in d.pushes(1)] == [msg_id]
        # Stages 1 and 2 come in one batch or two; the first is refused twice (the same
        # batch each time), then taken; nothing goes after it until it is.
        def taken():
            return [json.loads(r["body"])["Events"] for r in rcv.requests[2:]]

        assert rcv.wait(lambda: sorted(e["PushStage"] for b in taken() for e in b) == [1, 2],
                        limit=15), rcv.requests
        time.sleep(0.5)
        first = rcv.requests[:3]
        assert len({r["headers"]["x-pigeon-delivery"] for r in first}) == 1
        assert len({r["body"] for r in first}) == 1
        assert sorted(e["PushStage"] for b in taken() for e in b) == [1, 2]  # taken once
        for r in rcv.requests:
            check_request(r, app, cb["signing_secret"])
        for events in taken():
            for e in events:
                check_event(e, msg_id, (before, after))
                assert e["To_Account"] == "retry_user"
        d.close()
    finally:
        rcv.close()


def test_bad_formats_are_refused_naming_the_field(tencent_server):
    server = tencent_server
    app = server.create_app("tencent-bad")
    url = "http://example.com/hook"
    for body, words in [
        ({"url": url, "format": "xml"}, 'format must be one of pigeon, tencent, not "xml"'),
        ({"url": url, "format": "Tencent"}, "format must be one of pigeon, tencent"),
        ({"url": url, "format": 1}, "format must be a string"),
        ({"url": url, "format": None}, "format must be a string"),
        ({"url": url, "format": "tencent", "commands": ["Device.OnlineStatus"]},
         "commands: Device.OnlineStatus has no place in the tencent format"),
        ({"url": url, "format": "tencent", "commands": ["Push.Event", "Push.Accepted"]},
         "commands: Push.Accepted has no place in the tencent format"),
    ]:
        r = api_add(server, app, body)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert error["code"] == 1003 and words in error["message"], (body, r.text)
    # Nothing was stored.
    r = requests.get(server.base + "/v3/callbacks", auth=(app["app_key"], app["master_secret"]), timeout=5)
    assert r.json()["callbacks"] == []

    def cli(*args):
        return subprocess.run([PIGEON, "app", "callback", "add", "--app-key", app["app_key"], "--url", url,
                               "--data", server.data, *args], capture_output=True, text=True)

    out = cli("--format", "xml")
    assert out.returncode != 0 and 'format must be one of pigeon, tencent, not "xml"' in out.stderr
    out = cli("--format", "tencent", "--commands", "Sms.Result")
    assert out.returncode != 0 and "Sms.Result has no place in the tencent format" in out.stderr
    # Pigeon's is the default, with every command.
    out = cli()
    assert out.returncode == 0, out.stderr
    added = json.loads(out.stdout)
    assert added["format"] == "pigeon" and added["commands"] == []
    listed = subprocess.run([PIGEON, "app", "callback", "list", "--app-key", app["app_key"], "--data", server.data],
                            capture_output=True, text=True, check=True)
    (entry,) = [json.loads(l) for l in listed.stdout.splitlines()]
    assert entry["format"] == "pigeon"
