"""Getui RestAPI V2 (`/v2/{appId}/...`) against the real server, with plain HTTP requests
written from getui.md part B (no V2 client exists on PyPI or npm) and devices that speak the
device protocol: token auth, every push route reaching the right devices with the right
content, request_id idempotency, revoke and stop, notify_id and the iOS channel, schedules,
the user and report routes, and every error answer (codes 1, 10001, 10003, 20001)."""

import hashlib
import json
import time
import uuid

import pytest
import requests

from conftest import Device


def sign(appkey, timestamp, secret):
    return hashlib.sha256(f"{appkey}{timestamp}{secret}".encode()).hexdigest()


def now_ms():
    return int(time.time() * 1000)


def request_id():
    return uuid.uuid4().hex[:24]


class Getui:
    """A V2 client: `BaseUrl = http://HOST:PORT/v2/{appId}` and the `token` header."""

    def __init__(self, server, app):
        self.server = server
        self.app = app
        self.key = app["app_key"]
        self.base = f"{server.base}/v2/{self.key}"
        self.token = self.auth()["data"]["token"]

    def auth_body(self, timestamp=None, secret=None, appkey=None):
        ts = timestamp if timestamp is not None else now_ms()
        return {"sign": sign(appkey or self.key, ts, secret or self.app["master_secret"]),
                "timestamp": ts, "appkey": appkey or self.key}

    def auth(self, body=None, **kw):
        r = requests.post(self.base + "/auth", json=body or self.auth_body(**kw), timeout=5)
        assert r.headers["content-type"].startswith("application/json"), r.text
        return r.json()

    def call(self, method, path, body=None, token=None, raw=None, headers=None):
        h = {"token": token if token is not None else self.token,
             "Content-Type": "application/json;charset=UTF-8", **(headers or {})}
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        return requests.request(method, self.base + path, data=data, headers=h, timeout=10)

    def ok(self, method, path, body=None, **kw):
        r = self.call(method, path, body, **kw)
        assert r.status_code == 200 and r.json()["code"] == 0, r.text
        return r.json()["data"]

    def fail(self, method, path, body=None, code=20001, status=400, **kw):
        r = self.call(method, path, body, **kw)
        assert r.status_code == status, r.text
        j = r.json()
        assert j["code"] == code, r.text
        assert isinstance(j["msg"], str) and j["msg"]
        return j["msg"]


@pytest.fixture
def gt(server, app):
    return Getui(server, app)


def notification(title="Hello", body="from Getui V2", **extra):
    return {"title": title, "body": body, "click_type": "startapp", **extra}


def dto(audience=None, message=None, **extra):
    d = {"request_id": request_id(),
         "push_message": message or {"notification": notification()}, **extra}
    if audience is not None:
        d["audience"] = audience
    return d


def only_task(data):
    assert len(data) == 1, data
    return next(iter(data.items()))


# --- auth ---------------------------------------------------------------------------------

def test_auth_hands_out_a_token_valid_a_day_and_checks_the_sign(server, app):
    gt = Getui(server, app)
    ts = now_ms()
    # The Java client sends the timestamp as a number, the docs show a string: both work.
    for t in (ts, str(ts)):
        out = gt.auth(gt.auth_body(timestamp=t))
        assert out["code"] == 0, out
        assert isinstance(out["data"]["token"], str) and out["data"]["token"]
        expire = int(out["data"]["expire_time"])
        assert abs(expire - (now_ms() + 86_400_000)) < 60_000
    # A token works until deleted; another app's token, a made-up one or none is 10001.
    tok = gt.auth()["data"]["token"]
    assert gt.ok("GET", f"/user/status/nobody", token=tok) == {}
    for bad in ("", "not-a-token", tok + "x"):
        gt.fail("GET", "/user/status/nobody", token=bad, code=10001, status=401)
    r = requests.get(gt.base + "/user/status/x", timeout=5)  # no token header at all
    assert r.status_code == 401 and r.json()["code"] == 10001
    other = Getui(server, server.create_app("other"))
    gt.fail("GET", "/user/status/nobody", token=other.token, code=10001, status=401)
    r = requests.delete(f"{gt.base}/auth/{tok}", timeout=5)
    assert r.status_code == 200 and r.json()["code"] == 0, r.text
    gt.fail("GET", "/user/status/nobody", token=tok, code=10001, status=401)
    # The other tokens of the app are still good.
    assert gt.ok("GET", "/user/status/nobody") == {}


def test_auth_refusals(gt):
    def refused(body, word, code=20001):
        r = requests.post(gt.base + "/auth", json=body, timeout=5)
        assert r.status_code == (400 if code in (1, 20001) else 401), r.text
        assert r.json()["code"] == code and word in r.json()["msg"], r.text

    refused({**gt.auth_body(), "sign": "0" * 64}, "sign")
    refused(gt.auth_body(secret="wrong-secret"), "sign")
    refused(gt.auth_body(timestamp=now_ms() - 3_600_000), "timestamp")
    refused({**gt.auth_body(), "timestamp": "soon"}, "timestamp")
    refused({k: v for k, v in gt.auth_body().items() if k != "sign"}, "sign")
    refused({k: v for k, v in gt.auth_body().items() if k != "appkey"}, "appkey")
    refused(gt.auth_body(appkey="A" * 24), "appkey")
    r = requests.post(gt.base + "/auth", data="{not json", timeout=5)
    assert r.status_code == 400 and r.json()["code"] == 1, r.text
    # An unknown appId in the path.
    r = requests.post(f"{gt.server.base}/v2/{'B' * 24}/auth", json=gt.auth_body(appkey="B" * 24), timeout=5)
    assert r.json()["code"] == 20001, r.text


def test_auth_is_limited_to_100_calls_a_minute(server):
    gt = Getui(server, server.create_app("auth-rate"))
    codes = [gt.auth()["code"] for _ in range(100)]
    assert codes.count(0) == 99 and codes[-1] == 10003, codes
    r = requests.post(gt.base + "/auth", json=gt.auth_body(), timeout=5)
    assert r.status_code == 401 and r.json()["code"] == 10003
    # Tokens already handed out keep working.
    assert gt.ok("GET", "/user/status/x") == {}


# --- pushes -------------------------------------------------------------------------------

def test_single_cid_notification_reaches_that_device_only(gt, devices):
    target, bystander = devices(), devices()
    note = notification(title="Order", body="shipped", click_type="url", url="https://example.com/o/1",
                        ring_name="ding", channel_id="orders", big_text="the whole text", logo="push.png")
    data = gt.ok("POST", "/push/single/cid",
                 dto({"cid": [target.registration_id]}, {"notification": note}))
    taskid, statuses = only_task(data)
    assert taskid.startswith("RASS-")
    assert statuses == {target.registration_id: "successed_online"}
    got = target.pushes(1)
    assert len(got) == 1
    frame = got[0]
    assert taskid.endswith("-" + frame["msg_id"])
    n = frame["notification"]
    assert n["alert"] == "shipped" and n["title"] == "Order"
    assert n["url"] == "https://example.com/o/1"
    assert n["sound"] == "ding" and n["channel_id"] == "orders"
    assert n["big_text"] == "the whole text" and n["logo"] == "push.png"
    assert "message" not in frame
    # Default offline time: 2 hours.
    assert frame["expires_ms"] - frame["sent_ms"] == 7_200_000
    assert bystander.pushes(0) == []


def test_transmission_ttl_and_offline_devices(gt, server, app, devices):
    online = devices()
    away = Device(server, app["app_key"])
    away.close()
    time.sleep(0.3)
    body = dto({"cid": [away.registration_id]}, {"transmission": '{"k":"v"}'}, settings={"ttl": 60_000})
    _, statuses = only_task(gt.ok("POST", "/push/single/cid", body))
    assert statuses == {away.registration_id: "successed_offline"}
    # -1: online devices only; the device that comes back later does not get it.
    body = dto({"cid": [away.registration_id]}, {"transmission": "now or never"}, settings={"ttl": -1})
    gt.ok("POST", "/push/single/cid", body)
    back = Device.__new__(Device)
    back.__dict__.update(away.__dict__)
    from test_recall import reconnect
    back.ws = reconnect(server, away)
    got = back.pushes(1)
    assert [f["message"]["msg_content"] for f in got] == ['{"k":"v"}']
    assert got[0]["expires_ms"] - got[0]["sent_ms"] == 60_000
    assert "notification" not in got[0]
    back.close()
    _, statuses = only_task(gt.ok("POST", "/push/single/cid", dto({"cid": [online.registration_id]},
                                                                  {"transmission": "x"})))
    assert statuses == {online.registration_id: "successed_online"}
    assert [f["message"]["msg_content"] for f in online.pushes(1)] == ["x"]


def test_single_alias_and_batches(gt, devices):
    a1, a2 = devices(alias="ann"), devices(alias="ann")
    bob, carl = devices(alias="bob"), devices(alias="carl")
    taskid, statuses = only_task(gt.ok("POST", "/push/single/alias", dto({"alias": ["ann"]})))
    assert statuses == {"ann": "successed_online"}
    for d in (a1, a2):
        assert [f["msg_id"] for f in d.pushes(1)] == [taskid.split("-")[1]]
    batch = {"is_async": False, "msg_list": [
        dto({"alias": ["bob"]}, {"transmission": "for bob"}),
        dto({"alias": ["carl"]}, {"transmission": "for carl"}),
    ]}
    data = gt.ok("POST", "/push/single/batch/alias", batch)
    assert sorted(v for s in data.values() for v in s) == ["bob", "carl"]
    assert [f["message"]["msg_content"] for f in bob.pushes(1)] == ["for bob"]
    assert [f["message"]["msg_content"] for f in carl.pushes(1)] == ["for carl"]
    batch = {"msg_list": [dto({"cid": [bob.registration_id]}, {"transmission": "b"}),
                          dto({"cid": [carl.registration_id]}, {"transmission": "c"})]}
    data = gt.ok("POST", "/push/single/batch/cid", batch)
    assert len(data) == 2 and all(t.startswith("RASS-") for t in data)
    assert [f["message"]["msg_content"] for f in bob.pushes(1)] == ["b"]
    assert [f["message"]["msg_content"] for f in carl.pushes(1)] == ["c"]
    # One bad entry: nothing of the batch is sent.
    batch = {"msg_list": [dto({"cid": [bob.registration_id]}, {"transmission": "no"}),
                          dto({"cid": ["nobody-here"]}, {"transmission": "no"})]}
    msg = gt.fail("POST", "/push/single/batch/cid", batch)
    assert "target user is invalid" in msg
    assert bob.pushes(0) == []
    bad = {"msg_list": [dto({"cid": [bob.registration_id]}, {"transmission": "x"}, request_id="short")]}
    assert gt.fail("POST", "/push/single/batch/cid", bad) == "msg_list[0].request_id is invalid"


def test_list_message_then_cid_and_alias_lists(gt, devices):
    d1, d2, d3 = devices(), devices(), devices(alias="listed")
    out = gt.ok("POST", "/push/list/message", {"request_id": request_id(), "group_name": "promo",
                                               "push_message": {"notification": notification(body="list")}})
    taskid = out["taskid"]
    assert taskid.startswith("RASL-")
    assert d1.pushes(0) == []
    data = gt.ok("POST", "/push/list/cid", {"audience": {"cid": [d1.registration_id, d2.registration_id,
                                                                 "not-a-device"]},
                                            "taskid": taskid, "is_async": False})
    assert data == {taskid: {d1.registration_id: "successed_online",
                             d2.registration_id: "successed_online"}}
    first = [f["msg_id"] for f in d1.pushes(1)]
    assert first == [f["msg_id"] for f in d2.pushes(1)]
    # The list's task id is the push of its first list call.
    assert taskid == "RASL-" + first[0]
    data = gt.ok("POST", "/push/list/alias", {"audience": {"alias": ["listed"]}, "taskid": taskid,
                                              "need_alias_detail": True})
    assert data == {taskid: {"listed": {d3.registration_id: "successed_online"}}}
    assert [f["notification"]["alert"] for f in d3.pushes(1)] == ["list"]
    # The same list call again is the same push: no device gets it twice.
    gt.ok("POST", "/push/list/cid", {"audience": {"cid": [d1.registration_id, d2.registration_id]},
                                     "taskid": taskid})
    assert d1.pushes(0) == [] and d2.pushes(0) == []
    # The list's task id counts every push it made.
    report = gt.ok("GET", f"/report/push/task/{taskid}")
    assert report[taskid]["total"]["target_num"] == 3
    gt.fail("POST", "/push/list/cid", {"audience": {"cid": [d1.registration_id]}, "taskid": "RASL-1"})
    gt.fail("POST", "/push/list/cid", {"audience": {"cid": ["nobody"]}, "taskid": taskid})
    gt.fail("POST", "/push/list/cid", {"audience": {"cid": []}, "taskid": taskid})
    gt.fail("POST", "/push/list/cid", {"audience": {"cid": ["x"] * 1001}, "taskid": taskid})


def test_push_all_tag_and_fast_custom_tag(gt, devices):
    android = devices(tags=["vip", "beijing"])
    ios = devices(platform="ios", tags=["vip"])
    web = devices(platform="web", tags=["beijing", "muted"])
    data = gt.ok("POST", "/push/all", dto("all", {"notification": notification(body="everyone")}))
    assert data["taskid"].startswith("RASA-")
    for d in (android, ios, web):
        assert [f["notification"]["alert"] for f in d.pushes(1)] == ["everyone"], d.platform

    def tag(conditions, word):
        gt.ok("POST", "/push/tag", dto({"tag": conditions}, {"transmission": word}))

    tag([{"key": "phone_type", "values": ["android"], "opt_type": "or"}], "android only")
    tag([{"key": "custom_tag", "values": ["vip", "beijing"], "opt_type": "and"}], "vip and beijing")
    tag([{"key": "custom_tag", "values": ["vip", "beijing"], "opt_type": "or"},
         {"key": "custom_tag", "values": ["muted"], "opt_type": "not"}], "not muted")
    tag([{"key": "custom_tag", "values": ["beijing"], "opt_type": "or"},
         {"key": "phone_type", "values": ["android"], "opt_type": "not"}], "beijing off android")
    got = {d.platform: [f["message"]["msg_content"] for f in d.pushes(2)] for d in (android, ios, web)}
    assert got == {"android": ["android only", "vip and beijing", "not muted"],
                   "ios": ["not muted"], "web": ["beijing off android"]}
    gt.ok("POST", "/push/fast_custom_tag", dto({"fast_custom_tag": "muted"}, {"transmission": "fast"}))
    assert [f["message"]["msg_content"] for f in web.pushes(1)] == ["fast"]
    assert android.pushes(0) == [] and ios.pushes(0) == []
    assert gt.fail("POST", "/push/tag", dto({"tag": [{"key": "custom_tag", "values": ["nobody"]}]})) \
        == "target user is invalid"


def test_push_tag_by_region(gt, devices):
    beijing = devices(region="11000000", tags=["r"])
    zhejiang = devices(region="33000000", tags=["r"])
    nowhere = devices(tags=["r"])

    def tag(conditions, word):
        gt.ok("POST", "/push/tag", dto({"tag": conditions}, {"transmission": word}))

    tag([{"key": "region", "values": ["11000000", "33000000"], "opt_type": "or"}], "both provinces")
    tag([{"key": "region", "values": ["11000000"], "opt_type": "or"},
         {"key": "custom_tag", "values": ["r"], "opt_type": "and"}], "beijing")
    tag([{"key": "region", "values": ["11000000"], "opt_type": "not"}], "not beijing")
    got = {name: [f["message"]["msg_content"] for f in d.pushes(1)]
           for name, d in (("bj", beijing), ("zj", zhejiang), ("none", nowhere))}
    assert got == {"bj": ["both provinces", "beijing"], "zj": ["both provinces", "not beijing"],
                   "none": ["not beijing"]}
    assert gt.ok("POST", "/user/count", {"tag": [{"key": "region", "values": ["33000000"]}]}) == {"user_count": 1}
    # A device is in one region: in two at once is nobody.
    assert gt.fail("POST", "/push/tag", dto({"tag": [
        {"key": "region", "values": ["11000000", "33000000"], "opt_type": "and"}]})) == "target user is invalid"


def test_a_portrait_condition_names_a_pigeon_segment(gt, server, app, devices):
    """Getui's portraits are user groups its portal keeps; Pigeon's are segments made through
    POST /v3/segments, named by id in a `portrait` condition, ANDed with the others."""
    vip, vip_muted, plain = devices(tags=["vip"]), devices(tags=["vip", "muted"]), devices(tags=["x"])
    auth = (app["app_key"], app["master_secret"])
    r = requests.post(f"{server.base}/v3/segments", auth=auth,
                      json={"name": "vips", "audience": {"tag": ["vip"]}})
    assert r.status_code == 200, r.text
    seg = r.json()["segment_id"]
    portrait = {"key": "portrait", "values": [seg], "opt_type": "or"}
    gt.ok("POST", "/push/tag", dto({"tag": [portrait]}, {"transmission": "vips"}))
    gt.ok("POST", "/push/tag", dto({"tag": [portrait, {"key": "custom_tag", "values": ["muted"], "opt_type": "not"}]},
                                   {"transmission": "loud vips"}))
    got = {name: [f["message"]["msg_content"] for f in d.pushes(1)]
           for name, d in (("vip", vip), ("muted", vip_muted), ("plain", plain))}
    assert got == {"vip": ["vips", "loud vips"], "muted": ["vips"], "plain": []}
    assert gt.ok("POST", "/user/count", {"tag": [portrait]}) == {"user_count": 2}
    # One segment, never "not", and it must exist.
    for bad in ([{"key": "portrait", "values": [seg], "opt_type": "not"}],
                [{"key": "portrait", "values": [seg, seg + "x"], "opt_type": "or"}],
                [portrait, portrait]):
        assert "portrait" in gt.fail("POST", "/push/tag", dto({"tag": bad}))
    assert "no segment of this app" in gt.fail(
        "POST", "/push/tag", dto({"tag": [{"key": "portrait", "values": ["nope"], "opt_type": "or"}]}))


def test_request_id_makes_a_retry_the_same_push(gt, devices):
    d = devices()
    body = dto({"cid": [d.registration_id]}, {"transmission": "once"})
    first = gt.ok("POST", "/push/single/cid", body)
    again = gt.ok("POST", "/push/single/cid", body)
    assert first == again
    assert [f["message"]["msg_content"] for f in d.pushes(1)] == ["once"]
    wide = dto("all", {"transmission": "once for all"})
    assert gt.ok("POST", "/push/all", wide) == gt.ok("POST", "/push/all", wide)
    assert [f["message"]["msg_content"] for f in d.pushes(1)] == ["once for all"]


def test_revoke_and_stop_withdraw_a_push(gt, devices):
    d = devices()
    taskid, _ = only_task(gt.ok("POST", "/push/single/cid", dto({"cid": [d.registration_id]})))
    msg_id = d.pushes(1)[0]["msg_id"]
    revoke = {"revoke": {"old_task_id": taskid, "force": False}}
    data = gt.ok("POST", "/push/single/cid", dto({"cid": [d.registration_id]}, revoke))
    assert data == {taskid: {d.registration_id: "successed_online"}}
    frames = []
    deadline = time.time() + 3
    while time.time() < deadline and not frames:
        try:
            f = json.loads(d.ws.recv(timeout=1))
        except TimeoutError:
            continue
        if f["op"] == "revoke":
            frames.append(f)
    assert frames == [{"op": "revoke", "msg_id": msg_id}]
    # Revoking again is fine (a retried revoke); an unknown task is not.
    gt.ok("POST", "/push/all", dto("all", revoke))
    assert "old_task_id" in gt.fail("POST", "/push/all", dto("all", {"revoke": {"old_task_id": "RASS-12345"}}))
    # DELETE /task stops a push the same way.
    taskid = gt.ok("POST", "/push/all", dto("all", {"transmission": "stop me"}))["taskid"]
    d.pushes(1)
    r = gt.call("DELETE", f"/task/{taskid}")
    assert r.status_code == 200 and r.json()["code"] == 0, r.text
    gt.ok("DELETE", f"/task/{taskid}")
    gt.fail("DELETE", "/task/RASA-99")
    gt.fail("DELETE", "/task/not-a-task")


def test_notify_id_ios_channel_and_collapse_id(gt, devices):
    android, ios = devices(), devices(platform="ios", push_tokens={"apns": "ab" * 32})
    body = dto({"cid": [android.registration_id]},
               {"notification": notification(body="first", notify_id=77)})
    gt.ok("POST", "/push/single/cid", body)
    assert [f["notify_id"] for f in android.pushes(1)] == ["77"]
    body = dto({"cid": [android.registration_id]},
               {"notification": notification(body="replaces it", notify_id="77")})
    gt.ok("POST", "/push/single/cid", body)
    assert [(f["notify_id"], f["notification"]["alert"]) for f in android.pushes(1)] == [("77", "replaces it")]
    body = dto({"cid": [ios.registration_id]}, {"transmission": "data"},
               push_channel={"ios": {"type": "notify",
                                     "aps": {"alert": {"title": "iT", "body": "iB"}, "sound": "bell.caf",
                                             "thread-id": "th1", "content-available": 0},
                                     "auto_badge": "+2", "payload": "custom",
                                     "apns-collapse-id": "score"}},
               settings={"strategy": {"default": 3}})
    gt.ok("POST", "/push/single/cid", body)
    got = ios.pushes(1)
    assert len(got) == 1
    f = got[0]
    assert f["message"]["msg_content"] == "data"
    assert f["notification"]["alert"] == "iB" and f["notification"]["title"] == "iT"
    assert f["notification"]["sound"] == "bell.caf"
    assert f["notification"]["thread-id"] == "th1"
    assert f["notification"]["extras"] == {"payload": "custom"}
    assert f["badge"] == 2
    assert f["apns_collapse_id"] == "score"


def test_schedule_time_pushes_later_and_can_be_deleted(gt, devices):
    d = devices(tags=["later"])
    soon = now_ms() + 1500
    body = dto({"tag": [{"key": "custom_tag", "values": ["later"], "opt_type": "or"}]},
               {"transmission": "scheduled"}, settings={"schedule_time": soon})
    taskid = gt.ok("POST", "/push/tag", body)["taskid"]
    assert taskid.startswith("RASA-")
    # The same request again while it waits: the same task.
    assert gt.ok("POST", "/push/tag", body)["taskid"] == taskid
    info = gt.ok("GET", f"/task/schedule/{taskid}")[taskid]
    assert info["send_result"] == "waiting" and info["push_time"] == str(soon)
    assert info["transmission_content"] == "scheduled"
    assert d.pushes(0, quiet=0.2) == []
    got = d.pushes(1, limit=6)
    assert [(f["msg_id"], f["message"]["msg_content"]) for f in got] == [(taskid.split("-")[1], "scheduled")]
    time.sleep(0.3)
    assert gt.ok("GET", f"/task/schedule/{taskid}")[taskid]["send_result"] == "success"
    # Deleted before it fires: it never does.
    body = dto("all", {"transmission": "never"}, settings={"schedule_time": now_ms() + 1500})
    taskid = gt.ok("POST", "/push/all", body)["taskid"]
    gt.ok("DELETE", f"/task/schedule/{taskid}")
    assert d.pushes(0, quiet=2.5) == []
    gt.fail("GET", f"/task/schedule/{taskid}")
    gt.fail("DELETE", f"/task/schedule/{taskid}")
    # DELETE /task cancels a scheduled task too.
    taskid = gt.ok("POST", "/push/all", dto("all", {"transmission": "never either"},
                                            settings={"schedule_time": now_ms() + 1500}))["taskid"]
    gt.ok("DELETE", f"/task/{taskid}")
    assert d.pushes(0, quiet=2.5) == []
    # Not ahead, too far ahead, or on a route that cannot be scheduled.
    for t in (now_ms() - 1000, now_ms() + 8 * 86_400_000, "soon"):
        assert gt.fail("POST", "/push/all", dto("all", settings={"schedule_time": t})) \
            == "settings.schedule_time is invalid"
    assert "schedule_time" in gt.fail("POST", "/push/single/cid", dto(
        {"cid": [d.registration_id]}, settings={"schedule_time": now_ms() + 60_000}))


# --- users --------------------------------------------------------------------------------

def test_alias_routes(gt, devices):
    d1, d2, d3 = devices(), devices(), devices()
    gt.ok("POST", "/user/alias", {"data_list": [{"cid": d1.registration_id, "alias": "team"},
                                                {"cid": d2.registration_id, "alias": "team"},
                                                {"cid": d3.registration_id, "alias": "solo"}]})
    assert gt.ok("GET", f"/user/alias/cid/{d1.registration_id}") == {"alias": "team"}
    assert sorted(gt.ok("GET", "/user/cid/alias/team")["cid"]) == sorted([d1.registration_id, d2.registration_id])
    # The alias the JPush Device API sees, and pushes to it reach both devices.
    gt.ok("POST", "/push/single/alias", dto({"alias": ["team"]}, {"transmission": "t"}))
    assert len(d1.pushes(1)) == 1 and len(d2.pushes(1)) == 1
    # A DELETE with a body (the Java client sends one).
    r = gt.call("DELETE", "/user/alias", {"data_list": [{"cid": d1.registration_id, "alias": "team"}]})
    assert r.status_code == 200 and r.json()["code"] == 0, r.text
    assert gt.ok("GET", "/user/cid/alias/team")["cid"] == [d2.registration_id]
    assert gt.ok("GET", f"/user/alias/cid/{d1.registration_id}") == {"alias": ""}
    gt.ok("DELETE", "/user/alias/team")
    assert gt.ok("GET", "/user/cid/alias/team")["cid"] == []
    assert gt.ok("GET", "/user/cid/alias/solo")["cid"] == [d3.registration_id]
    # Chinese aliases, percent-encoded in the path or not.
    gt.ok("POST", "/user/alias", {"data_list": [{"cid": d1.registration_id, "alias": "北京用户"}]})
    assert gt.ok("GET", "/user/cid/alias/%E5%8C%97%E4%BA%AC%E7%94%A8%E6%88%B7")["cid"] == [d1.registration_id]
    # Refusals.
    assert gt.fail("POST", "/user/alias", {"data_list": [{"cid": "nobody", "alias": "a"}]}) \
        == "data_list[0].cid is invalid"
    assert "data_list[0].alias" in gt.fail("POST", "/user/alias", {"data_list": [{"cid": d1.registration_id,
                                                                                  "alias": "a b"}]})
    assert gt.fail("POST", "/user/alias", {"data_list": []}) == "data_list is invalid"
    assert gt.fail("POST", "/user/alias", {"data_list": "x"}) == "data_list is invalid"
    assert gt.fail("GET", "/user/alias/cid/nobody") == "cid is invalid"
    others = [devices() for _ in range(10)]
    gt.ok("POST", "/user/alias", {"data_list": [{"cid": o.registration_id, "alias": "full"} for o in others]})
    assert "alias" in gt.fail("POST", "/user/alias", {"data_list": [{"cid": d1.registration_id, "alias": "full"}]})


def test_custom_tag_routes_status_badge_and_count(gt, devices):
    d1, d2 = devices(), devices(platform="ios")
    gt.ok("POST", f"/user/custom_tag/cid/{d1.registration_id}", {"custom_tag": ["a", "b"]})
    assert gt.ok("GET", f"/user/custom_tag/cid/{d1.registration_id}") == {d1.registration_id: ["a", "b"]}
    data = gt.ok("PUT", "/user/custom_tag/batch/c", {"cid": [d1.registration_id, d2.registration_id, "nobody"]})
    assert data == {d1.registration_id: "true", d2.registration_id: "true", "nobody": "false"}
    assert gt.ok("GET", f"/user/custom_tag/cid/{d2.registration_id}") == {d2.registration_id: ["c"]}
    r = gt.call("DELETE", "/user/custom_tag/batch/c", {"cid": [d1.registration_id]})
    assert r.status_code == 200 and r.json()["data"] == {d1.registration_id: "true"}, r.text
    assert gt.ok("GET", f"/user/custom_tag/cid/{d1.registration_id}") == {d1.registration_id: ["a", "b"]}
    count = lambda tag: gt.ok("POST", "/user/count", {"tag": tag})["user_count"]
    assert count([{"key": "custom_tag", "values": ["a", "c"], "opt_type": "or"}]) == 2
    assert count([{"key": "custom_tag", "values": ["a", "c"], "opt_type": "and"}]) == 0
    assert count([{"key": "phone_type", "values": ["ios"], "opt_type": "or"}]) == 1
    assert count([{"key": "phone_type", "values": ["ios"], "opt_type": "not"}]) == 1
    assert gt.fail("POST", "/user/count", {"tag": []}) == "tag is invalid"
    assert gt.fail("POST", f"/user/custom_tag/cid/{d1.registration_id}", {"custom_tag": "a"}) \
        == "custom_tag is invalid"
    assert gt.fail("POST", "/user/custom_tag/cid/nobody", {"custom_tag": ["a"]}) == "cid is invalid"
    assert gt.fail("GET", "/user/custom_tag/cid/nobody") == "cid is invalid"

    # Status: both ways of joining cids in the path.
    d2.close()
    time.sleep(0.5)
    for path in (f"{d1.registration_id},{d2.registration_id},nobody",
                 f"{d1.registration_id}%2C{d2.registration_id}"):
        st = gt.ok("GET", f"/user/status/{path}")
        assert st[d1.registration_id]["status"] == "online"
        assert st[d2.registration_id]["status"] == "offline"
        assert "nobody" not in st
        assert abs(int(st[d2.registration_id]["last_login_time"]) - now_ms()) < 10_000

    # Badge: +N, -N, N; connected devices are told at once.
    for badge, want in (("+3", 3), ("-1", 2), ("7", 7), ("-9", 0)):
        gt.ok("POST", f"/user/badge/cid/{d1.registration_id}", {"badge": badge})
        deadline = time.time() + 3
        seen = None
        while time.time() < deadline and seen is None:
            try:
                f = json.loads(d1.ws.recv(timeout=1))
            except TimeoutError:
                continue
            if f["op"] == "badge":
                seen = f["badge"]
        assert seen == want, badge
    for bad in ("x", "++1", "", None, [1]):
        assert gt.fail("POST", f"/user/badge/cid/{d1.registration_id}", {"badge": bad}) == "badge is invalid"
    assert "cid" in gt.fail("POST", f"/user/badge/cid/{d1.registration_id},nobody", {"badge": "1"})



def test_black_list_keeps_pushes_from_a_device(gt, jp, devices):
    blocked, other = devices(tags=["bl"]), devices(tags=["bl"])
    gt.ok("POST", f"/user/black/cid/{blocked.registration_id}")
    gt.ok("POST", "/push/tag", dto({"tag": [{"key": "custom_tag", "values": ["bl"]}]}, {"transmission": "one"}))
    assert [f["message"]["msg_content"] for f in other.pushes(1)] == ["one"]
    assert blocked.pushes(0) == []
    # Through any door: the JPush API does not reach it either.
    import jpush
    push = jp.create_push()
    push.audience = jpush.audience(jpush.tag("bl"))
    push.platform = jpush.all_
    push.message = jpush.message("via jpush")
    push.send()
    assert [f["message"]["msg_content"] for f in other.pushes(1)] == ["via jpush"]
    assert blocked.pushes(0) == []
    assert gt.fail("POST", "/push/single/cid", dto({"cid": [blocked.registration_id]})) == "target user is invalid"
    assert gt.ok("POST", "/user/count", {"tag": [{"key": "custom_tag", "values": ["bl"]}]}) == {"user_count": 1}
    gt.ok("DELETE", f"/user/black/cid/{blocked.registration_id}")
    gt.ok("POST", "/push/single/cid", dto({"cid": [blocked.registration_id]}, {"transmission": "back"}))
    assert [f["message"]["msg_content"] for f in blocked.pushes(1)] == ["back"]
    assert "cid" in gt.fail("POST", f"/user/black/cid/{blocked.registration_id},nobody")
    assert gt.fail("POST", "/user/black/cid/,") == "cid is invalid"


# --- reports ------------------------------------------------------------------------------

def test_reports_count_what_devices_did(gt, server, app, devices):
    d1, d2 = devices(tags=["r"]), devices(tags=["r"])
    away = Device(server, app["app_key"], tags=["r"])
    away.close()
    time.sleep(0.3)
    body = dto({"tag": [{"key": "custom_tag", "values": ["r"]}]}, {"notification": notification()},
               group_name="spring_sale")
    taskid = gt.ok("POST", "/push/tag", body)["taskid"]
    msg_id = d1.pushes(1)[0]["msg_id"]
    assert [f["msg_id"] for f in d2.pushes(1)] == [msg_id]
    d1.ws.send(json.dumps({"op": "click", "msg_id": msg_id, "seq": 1}))
    time.sleep(0.5)
    want = {"msg_num": 2, "target_num": 3, "receive_num": 2, "display_num": None, "click_num": 1}
    assert gt.ok("GET", f"/report/push/task/{taskid}") == {taskid: {"total": want}}
    # Several task ids at once; unknown ones are left out.
    other = gt.ok("POST", "/push/single/cid", dto({"cid": [d1.registration_id]}, {"transmission": "x"}))
    other_id, _ = only_task(other)
    d1.pushes(1)
    time.sleep(0.3)
    both = gt.ok("GET", f"/report/push/task/{taskid},{other_id},RASS-1")
    assert set(both) == {taskid, other_id}
    assert both[other_id]["total"]["receive_num"] == 1
    detail = gt.ok("GET", f"/report/push/task/{taskid}/detail")[taskid]
    assert detail["total"] == want and detail["android"]["target_num"] == 3
    today = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 8 * 3600))
    day = gt.ok("GET", f"/report/push/date/{today}")[today]["total"]
    assert day["target_num"] == 4 and day["receive_num"] == 3 and day["click_num"] == 1
    group = gt.ok("GET", f"/report/push/task_group/spring_sale?startDate={today}&endDate={today}")
    assert group == {"spring_sale": {"total": want}}
    assert gt.ok("GET", "/report/push/task_group/spring_sale")["spring_sale"]["total"] == want
    users = gt.ok("GET", f"/report/user/date/{today}")[today]
    assert users == {"accumulative_num": 3, "register_num": 3, "active_num": 3, "online_num": 2}
    assert gt.ok("GET", "/report/push/date/2020-01-01") == {"2020-01-01": {"total": {
        "msg_num": 0, "target_num": 0, "receive_num": 0, "display_num": None, "click_num": 0}}}
    online = gt.ok("GET", "/report/online_user")["online_statics"]
    assert list(online.values()) == [2]
    count = gt.ok("GET", "/report/push/count")
    assert count["push_num"] == 4 and count["limit"] is False
    for bad in ("2020-13-01", "yesterday", "2999-01-01"):
        assert gt.fail("GET", f"/report/push/date/{bad}") == "date is invalid"
        assert gt.fail("GET", f"/report/user/date/{bad}") == "date is invalid"
    assert gt.fail("GET", "/report/push/task_group/spring_sale?startDate=2020-01-01") .startswith("startDate")
    assert gt.fail("GET", "/report/push/task/" + ",".join(["RASS-1"] * 201)) == "taskid is invalid"


# --- channel strategy, with a vendor fake ---------------------------------------------------

class FakeXiaomi:
    """Mi Push's regid send, enough for Pigeon's client: checks the app secret and records
    each message's form."""

    def __init__(self, secret):
        import threading
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        self.received = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                if self.headers.get("authorization") != f"key={secret}":
                    answer = {"result": "error", "code": 22000, "reason": "Invalid app secret"}
                else:
                    fake.received.append(dict(urllib.parse.parse_qsl(body)))
                    answer = {"result": "ok", "code": 0, "data": {"id": f"sdm{len(fake.received)}"}}
                out = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def wait(self, n, limit=5.0):
        deadline = time.time() + limit
        while time.time() < deadline and len(self.received) < n:
            time.sleep(0.05)
        time.sleep(0.3)
        return list(self.received)

    def close(self):
        self.http.shutdown()


def test_strategy_chooses_pigeons_connection_or_the_vendor():
    import os
    import subprocess
    import tempfile
    from conftest import PIGEON, Server
    fake = FakeXiaomi("mi-secret")
    with tempfile.TemporaryDirectory() as tmp:
        env = {"PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS": "true"}
        server = Server(os.path.join(tmp, "data"), env=env)
        server.start()
        try:
            app = server.create_app("strategy")
            creds = {"app_secret": "mi-secret", "package_name": "com.example.app", "base_url": fake.base_url}
            out = subprocess.run([PIGEON, "app", "vendor", "set", "--app-key", app["app_key"], "--vendor", "xiaomi",
                                  "--credentials", json.dumps(creds), "--data", server.data],
                                 capture_output=True, text=True, env=dict(os.environ, **env))
            assert out.returncode == 0, out.stderr
            time.sleep(1.5)  # the server reads credentials every second
            gt = Getui(server, app)
            d = Device(server, app["app_key"], push_tokens={"xiaomi": "mi-regid-1"})

            def push(strategy, message=None, **extra):
                body = dto({"cid": [d.registration_id]}, message or {"notification": notification(body=str(strategy))},
                           settings={"strategy": strategy}, **extra)
                gt.ok("POST", "/push/single/cid", body)

            # 2: the vendor only, though the device is connected.
            push({"xm": 2})
            got = fake.wait(1)
            assert [(r["registration_id"], r["description"]) for r in got] == [("mi-regid-1", "{'xm': 2}")]
            assert d.pushes(0) == []
            # 3: Pigeon's connection only.
            push({"default": 3})
            assert [f["notification"]["alert"] for f in d.pushes(1)] == ["{'default': 3}"]
            assert len(fake.wait(2, limit=1.0)) == 1
            # 1 (and the default): the connection while connected.
            push({"xm": 1})
            assert [f["notification"]["alert"] for f in d.pushes(1)] == ["{'xm': 1}"]
            assert len(fake.wait(2, limit=1.0)) == 1
            # 4: the vendor first, connected or not.
            push({"default": 1, "xm": 4})
            assert [r["description"] for r in fake.wait(2)][1:] == ["{'default': 1, 'xm': 4}"]
            assert d.pushes(0) == []
            # A transmission goes through the vendor as the ups notification.
            ups = {"android": {"ups": {"notification": {"title": "Vendor", "body": "shown by Mi",
                                                        "click_type": "startapp"}}}}
            push({"xm": 2}, {"transmission": "data"}, push_channel=ups)
            assert [(r["title"], r["description"]) for r in fake.wait(3)][2:] == [("Vendor", "shown by Mi")]
            # Offline with the default strategy: the vendor.
            d.close()
            time.sleep(0.3)
            gt.ok("POST", "/push/single/cid", dto({"cid": [d.registration_id]},
                                                  {"notification": notification(body="offline")}))
            assert [r["description"] for r in fake.wait(4)][3:] == ["offline"]
        finally:
            server.stop()
            fake.close()


# --- every error answer --------------------------------------------------------------------

def test_bodies_that_are_not_json_are_code_1_and_tokens_come_first(gt, devices):
    for path in ("/push/single/cid", "/push/all", "/push/list/message", "/user/alias", "/user/count"):
        for raw in ("{", "not json", ""):
            r = gt.call("POST", path, raw=raw)
            assert r.status_code == 400 and r.json()["code"] == 1, (path, raw, r.text)
        # A bad token is answered before the body is read.
        r = gt.call("POST", path, raw="{", token="nope")
        assert r.status_code == 401 and r.json()["code"] == 10001
    r = gt.call("POST", "/push/all", raw="[1, 2]")
    assert r.status_code == 400 and r.json()["code"] == 20001
    big = json.dumps(dto("all", {"transmission": "x" * (2 * 1024 * 1024)}))
    r = gt.call("POST", "/push/all", raw=big)
    assert r.status_code == 400 and r.json()["code"] == 20001 and "larger" in r.json()["msg"], r.text[:200]


def test_every_bad_push_field_is_20001_naming_it(gt, devices):
    d = devices()
    cid = {"cid": [d.registration_id]}

    def bad(body, path="/push/single/cid"):
        return gt.fail("POST", path, body)

    both = "please choose one of notification and transmission and revoke"
    cases = [
        ({k: v for k, v in dto(cid).items() if k != "request_id"}, "request_id is invalid"),
        (dto(cid, request_id="too-short"), "request_id is invalid"),
        (dto(cid, request_id="x" * 33), "request_id is invalid"),
        (dto(cid, request_id=12345678901), "request_id is invalid"),
        (dto(cid, {"notification": notification(), "transmission": "x"}), both),
        (dto(cid, {"notification": notification(), "revoke": {"old_task_id": "RASS-1"}}), both),
        (dto(cid, {"network_type": 0}), both),
        ({**dto(cid), "push_message": "hello"}, "push_message is invalid"),
        ({k: v for k, v in dto(cid).items() if k != "push_message"}, "push_message is invalid"),
        (dto(cid, {"transmission": 42}), "push_message.transmission is invalid"),
        (dto(cid, {"transmission": "x" * 3073}), "push_message.transmission is invalid"),
        (dto(cid, {"notification": {"body": "no title", "click_type": "none"}}),
         "push_message.notification.title is invalid"),
        (dto(cid, {"notification": notification(title="t" * 51)}), "push_message.notification.title is invalid"),
        (dto(cid, {"notification": notification(body=None)}), "push_message.notification.body is invalid"),
        (dto(cid, {"notification": notification(body="b" * 257)}), "push_message.notification.body is invalid"),
        (dto(cid, {"notification": notification(click_type="jump")}),
         "push_message.notification.click_type is invalid"),
        (dto(cid, {"notification": notification(click_type="url")}), "push_message.notification.url is invalid"),
        (dto(cid, {"notification": notification(click_type="url", url="javascript:x")}),
         "push_message.notification.url is invalid"),
        (dto(cid, {"notification": notification(click_type="intent")}),
         "push_message.notification.intent is invalid"),
        (dto(cid, {"notification": notification(click_type="payload")}),
         "push_message.notification.payload is invalid"),
        (dto(cid, {"notification": notification(notify_id=-1)}), "push_message.notification.notify_id is invalid"),
        (dto(cid, {"notification": notification(notify_id=2 ** 31)}),
         "push_message.notification.notify_id is invalid"),
        (dto(cid, {"notification": notification(notify_id="abc")}),
         "push_message.notification.notify_id is invalid"),
        (dto(cid, {"notification": notification(badge_add_num="1")}),
         "push_message.notification.badge_add_num is invalid"),
        (dto(cid, {"notification": notification(channel_level=9)}),
         "push_message.notification.channel_level is invalid"),
        (dto(cid, {"transmission": "x", "network_type": 3}), "push_message.network_type is invalid"),
        (dto(cid, {"transmission": "x", "duration": "10-5"}), "push_message.duration is invalid"),
        (dto(cid, {"revoke": {"force": True}}), "push_message.revoke.old_task_id is invalid"),
        (dto(cid, settings={"ttl": "7200000"}), "settings.ttl is invalid"),
        (dto(cid, settings={"ttl": -2}), "settings.ttl is invalid"),
        (dto(cid, settings={"ttl": 3 * 86_400_000 + 1}), "settings.ttl is invalid"),
        (dto(cid, settings={"ttl": 1.5}), "settings.ttl is invalid"),
        (dto(cid, settings="fast"), "settings is invalid"),
        (dto(cid, settings={"strategy": {"default": 0}}), "settings.strategy.default is invalid"),
        (dto(cid, settings={"strategy": {"hw": 5}}), "settings.strategy.hw is invalid"),
        (dto(cid, settings={"strategy": {"ios": "4"}}), "settings.strategy.ios is invalid"),
        (dto(cid, settings={"strategy": [1]}), "settings.strategy is invalid"),
        (dto(cid, settings={"speed": -5}), "settings.speed is invalid"),
        (dto(cid, settings={"speed": "100"}), "settings.speed is invalid"),
        (dto(cid, group_name="has space"), "group_name is invalid"),
        (dto(cid, task_name=7), "task_name is invalid"),
        (dto(cid, push_channel={"ios": {"auto_badge": "plus"}}), "push_channel.ios.auto_badge is invalid"),
        (dto(cid, push_channel={"ios": {"aps": {"alert": 5}}}), "push_channel.ios.aps.alert is invalid"),
        (dto(cid, push_channel={"ios": {"aps": {"content-available": "1"}}}),
         "push_channel.ios.aps.content-available is invalid"),
        (dto(cid, push_channel={"ios": {"type": "alarm"}}), "push_channel.ios.type is invalid"),
        (dto(cid, push_channel={"ios": {"multimedia": [{"url": "x", "type": 1}]}}),
         "push_channel.ios.multimedia is invalid"),
        (dto(cid, push_channel={"android": {"ups": {"notification": {"title": "t"}}}}),
         "push_channel.android.ups.notification.body is invalid"),
        (dto(cid, push_channel={"android": {"ups": {"options": {"XM": "high"}}}}),
         "push_channel.android.ups.options.XM is invalid"),
        (dto(cid, push_channel={"harmony": "x"}), "push_channel.harmony is invalid"),
        (dto(None), "audience is invalid"),
        (dto({"cid": d.registration_id}), "audience.cid is invalid"),
        (dto({"cid": []}), "audience.cid is invalid"),
        (dto({"cid": [d.registration_id, d.registration_id + "x"]}), "audience.cid is invalid"),
        (dto({"cid": [3]}), "audience.cid is invalid"),
        (dto({"alias": ["a"]}), "audience.cid is invalid"),
        (dto({"cid": ["no-such-device"]}), "target user is invalid"),
    ]
    for body, msg in cases:
        assert bad(body) == msg, (body, msg)
    for body, word in [
        (dto(cid, settings={"filter_notify_off": True}), "not supported"),
        (dto(cid, push_channel={"ios": {"type": "voip"}}), "not supported"),
        (dto(cid, push_channel={"android": {"ups": {"transmission": "x"}}}), "not supported"),
        (dto(cid, {"notification": notification(big_text="a", big_image="https://x/y.png")}), "big_image"),
    ]:
        assert word in bad(body), body
    assert bad(dto({"alias": ["nobody-has-this"]}), "/push/single/alias") == "target user is invalid"
    assert bad(dto({"alias": ["x", "y"]}), "/push/single/alias") == "audience.alias is invalid"
    assert bad(dto({"all": True}), "/push/all") == "audience is invalid"
    assert bad(dto(None), "/push/tag") == "audience is invalid"
    assert bad(dto({"tag": "vip"}), "/push/tag") == "audience.tag is invalid"
    assert bad(dto({"tag": [{"key": "custom_tag", "values": ["a"], "opt_type": "nand"}]}), "/push/tag") \
        == "audience.tag[0].opt_type is invalid"
    assert bad(dto({"tag": [{"key": "phone_type", "values": ["nokia"]}]}), "/push/tag") \
        == "audience.tag[0].values is invalid"
    assert bad(dto({"tag": [{"key": "size", "values": ["xl"]}]}), "/push/tag") == "audience.tag[0].key is invalid"
    assert bad(dto({"fast_custom_tag": 5}), "/push/fast_custom_tag") == "audience.fast_custom_tag is invalid"
    assert bad({"msg_list": []}, "/push/single/batch/cid") == "msg_list is invalid"
    assert bad({"msg_list": [dto(cid)] * 201}, "/push/single/batch/cid") == "msg_list is invalid"
    assert bad({"msg_list": [dto(cid), "x"]}, "/push/single/batch/cid") == "msg_list[1] is invalid"
    assert bad({"msg_list": [dto(cid, {"transmission": 1})]}, "/push/single/batch/cid") \
        == "msg_list[0].push_message.transmission is invalid"
    assert bad({"audience": cid}, "/push/list/cid") == "taskid is invalid"
    assert bad({"request_id": request_id()}, "/push/list/message") == "push_message is invalid"
    # Nothing of those reached the device.
    assert d.pushes(0) == []


def test_paths_methods_and_headers_as_clients_send_them(gt, devices):
    d = devices()
    # Unknown routes and wrong methods still answer in Getui's shape.
    r = gt.call("GET", "/push/nothing")
    assert r.status_code == 404 and r.json()["code"] != 0 and "msg" in r.json()
    r = gt.call("GET", "/push/single/cid")
    assert r.status_code == 405 and r.json()["code"] != 0 and "POST" in r.json()["msg"]
    # Content-Type with or without charset, or none at all; a trailing slash; the Java
    # client's domain ending in /v2/.
    body = dto({"cid": [d.registration_id]}, {"transmission": "ct"})
    for headers in ({"Content-Type": "application/json"}, {"Content-Type": "application/json;charset=UTF-8"},
                    {"Content-Type": ""}):
        body["request_id"] = request_id()
        r = requests.post(gt.base + "/push/single/cid/", data=json.dumps(body), timeout=5,
                          headers={"token": gt.token, **headers})
        assert r.status_code == 200 and r.json()["code"] == 0, r.text
    body["request_id"] = request_id()
    r = requests.post(f"{gt.server.base}/v2//{gt.key}/push/single/cid", json=body, timeout=5,
                      headers={"token": gt.token, "sdkVersion": "1.0.8.0"})
    assert r.status_code == 200 and r.json()["code"] == 0, r.text
    assert len(d.pushes(4)) == 4
    # A token of the right app under another appId.
    other = gt.server.create_app("path-app")
    r = requests.get(f"{gt.server.base}/v2/{other['app_key']}/user/status/{d.registration_id}",
                     headers={"token": gt.token}, timeout=5)
    assert r.status_code == 401 and r.json()["code"] == 10001


def test_speed_spreads_a_push_over_time(gt, devices):
    ds = [devices(tags=["paced"]) for _ in range(3)]
    body = dto({"tag": [{"key": "custom_tag", "values": ["paced"]}]}, {"transmission": "slowly"},
               settings={"speed": 1})
    start = time.time()
    taskid = gt.ok("POST", "/push/tag", body)["taskid"]
    for d in ds:
        got = d.pushes(1, quiet=0.1, limit=8)
        assert [f["msg_id"] for f in got] == [taskid.split("-")[1]]
    # One device a second: the last is reached about two seconds after the first (unpaced,
    # all three get it at once).
    elapsed = time.time() - start
    assert elapsed >= 1.5, elapsed


def test_a_restart_keeps_schedules_blocks_and_reports_and_asks_for_new_tokens():
    import os
    import tempfile
    from conftest import Server
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"))
        server.start()
        try:
            app = server.create_app("restart")
            gt = Getui(server, app)
            d = Device(server, app["app_key"], tags=["keep"])
            blocked = Device(server, app["app_key"], tags=["keep"])
            gt.ok("POST", f"/user/black/cid/{blocked.registration_id}")
            sent = gt.ok("POST", "/push/all", dto("all", {"transmission": "before"}))["taskid"]
            assert len(d.pushes(1)) == 1
            later = gt.ok("POST", "/push/all", dto("all", {"transmission": "after the restart"},
                                                   settings={"schedule_time": now_ms() + 4000}))["taskid"]
            listed = gt.ok("POST", "/push/list/message", dto(None, {"transmission": "list"}))["taskid"]
            d.close()
            blocked.close()
            server.stop()
            server.start()
            # Tokens lived in memory: 10001, and the client authenticates again.
            gt.fail("GET", "/user/status/x", code=10001, status=401)
            gt.token = gt.auth()["data"]["token"]
            assert gt.ok("GET", f"/report/push/task/{sent}")[sent]["total"]["receive_num"] == 1
            assert gt.ok("GET", f"/task/schedule/{later}")[later]["send_result"] == "waiting"
            assert gt.fail("POST", "/push/list/cid", {"audience": {"cid": [d.registration_id]},
                                                      "taskid": listed}) == "taskid is invalid"
            from test_recall import reconnect
            for dev in (d, blocked):
                dev.ws = reconnect(server, dev)
            got = d.pushes(1, limit=8)
            assert [(f["msg_id"], f["message"]["msg_content"]) for f in got] \
                == [(later.split("-")[1], "after the restart")]
            assert blocked.pushes(0, quiet=1.0) == []
            assert gt.ok("GET", f"/task/schedule/{later}")[later]["send_result"] == "success"
            d.close()
            blocked.close()
        finally:
            server.stop()
