"""The Getui legacy front door, driven by the official Python server SDK `gt-push-sdk` 4.1.1.2
(unpatched; conftest gives it the `collections` names it needs on Python 3.10+) against the real
`pigeon` binary, with devices that speak the device protocol. Requests the SDK cannot send on
this Python (`pushAPNMessageToSingle` uses `base64.encodestring`) are posted as the SDK sends them
on Python 3.6-3.8."""

import base64
import gzip
import hashlib
import json
import os
import tempfile
import time
import uuid

import pytest
import requests

from conftest import Device, Server
from test_callbacks import FAST, Receiver
from test_recall import reconnect

from gt_push_sdk.igt_push import IGeTui
from gt_push_sdk.BatchImpl import BatchImpl
from gt_push_sdk.igetui.igt_message import IGtAppMessage, IGtListMessage, IGtSingleMessage
from gt_push_sdk.igetui.igt_target import Target
from gt_push_sdk.igetui.template.igt_link_template import LinkTemplate
from gt_push_sdk.igetui.template.igt_notification_template import NotificationTemplate
from gt_push_sdk.igetui.template.igt_revoke_template import RevokeTemplate
from gt_push_sdk.igetui.template.igt_transmission_template import TransmissionTemplate
from gt_push_sdk.igetui.template.igt_apn_template import APNTemplate
from gt_push_sdk.igetui.template.notify.igt_smsmessage import SmsMessage
from gt_push_sdk.igetui.template.style.Style0 import Style0
from gt_push_sdk.igetui.utils.AppConditions import AppConditions, OptType
from gt_push_sdk.payload.APNPayload import APNPayload, DictionaryAlertMsg


def getui(server, app):
    return IGeTui(server.base + "/apiex.htm", app["app_key"], app["master_secret"])


def notification(app, title="T", text="body", transmission="", notifyid=None):
    t = NotificationTemplate()
    t.appId = t.appKey = app["app_key"]
    t.title, t.text = title, text
    t.transmissionType = 1
    t.transmissionContent = transmission
    if notifyid is not None:
        style = Style0()
        style.title, style.text = title, text
        t.style = style
        t.notifyid = notifyid
    return t


def single(template, offline=True, ms=3_600_000):
    m = IGtSingleMessage()
    m.data = template
    m.isOffline = offline
    m.offlineExpireTime = ms
    return m


def target(app, cid=None, alias=None):
    t = Target()
    t.appId = app["app_key"]
    if cid:
        t.clientId = cid
    if alias:
        t.alias = alias
    return t


def shown(frame):
    """(title, body) of a push frame's notification."""
    n = frame.get("notification") or {}
    body = n.get("alert") if isinstance(n.get("alert"), str) else n.get("body")
    return n.get("title"), body


def token(server, app):
    """A token from `connect`, as the SDK gets one."""
    ts = int(time.time() * 1000)
    sign = hashlib.md5((app["app_key"] + str(ts) + app["master_secret"]).encode()).hexdigest()
    r = post(server, {"action": "connect", "appkey": app["app_key"], "timeStamp": ts,
                      "sign": sign, "version": "4.1.1.2"})
    assert r["result"] == "success", r
    return r["authtoken"]


def post(server, body, gz=False, path="/serviceex"):
    data = json.dumps(body).encode()
    headers = {}
    if gz:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    r = requests.post(server.base + path, data=data, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert isinstance(answer, dict)
    assert all(v not in (True, False, None) for v in answer.values()), answer
    return answer


# --- discovery and auth -------------------------------------------------------------------


def test_discovery_answers_this_servers_serviceex(server, app):
    r = post(server, {"action": "getOSPushDomailUrlListAction", "appkey": app["app_key"]},
             path="/apiex.htm")
    assert r == {"result": "ok", "osList": [server.base + "/serviceex"]}
    # needOSAssigned mode posts straight to /serviceex: discovery works there too.
    r = post(server, {"action": "getOSPushDomailUrlListAction", "appkey": app["app_key"]})
    assert r["osList"] == [server.base + "/serviceex"]


def test_a_token_is_needed_and_the_sdk_gets_one_by_itself(server, app, devices):
    d = devices()
    # Without a token: sign_error (the SDK then connects and repeats the call).
    r = post(server, {"action": "getClientIdStatusAction", "appkey": app["app_key"],
                      "appId": app["app_key"], "clientId": d.registration_id,
                      "version": "4.1.1.2", "authToken": ""})
    assert r == {"result": "sign_error"}
    gt = getui(server, app)
    assert gt.getClientIdStatus(app["app_key"], d.registration_id)["result"] == "Online"
    # A wrong sign or a stale timestamp gets no token.
    ts = int(time.time() * 1000)
    for stamp, secret in ((ts, "wrong"), (ts - 3_600_000, app["master_secret"])):
        sign = hashlib.md5((app["app_key"] + str(stamp) + secret).encode()).hexdigest()
        r = post(server, {"action": "connect", "appkey": app["app_key"], "timeStamp": stamp,
                          "sign": sign})
        assert r["result"] != "success" and "authtoken" not in r
    # A wrong master secret: the SDK reports an error instead of a result. (The SDK keeps one
    # client per host and app key, so this one is given the host by another name.)
    other_host = server.base.replace("127.0.0.1", "localhost")
    bad = IGeTui(other_host + "/apiex.htm", app["app_key"], "x" * 24)
    assert isinstance(bad.getClientIdStatus(app["app_key"], d.registration_id), str)


def test_tokens_do_not_survive_a_restart_and_the_sdk_signs_in_again():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"))
        server.start()
        try:
            app = server.create_app("gt-restart")
            d = Device(server, app["app_key"], alias="u1")
            gt = getui(server, app)
            assert gt.queryClientId(app["app_key"], "u1")["cidlist"] == [d.registration_id]
            old = token(server, app)
            d.close()
            server.stop()
            server.start()
            r = post(server, {"action": "alias_query", "appkey": app["app_key"],
                              "appid": app["app_key"], "alias": "u1", "authToken": old})
            assert r == {"result": "sign_error"}
            # The same IGeTui still holds the old token: it gets sign_error, connects, repeats.
            assert gt.queryClientId(app["app_key"], "u1")["cidlist"] == [d.registration_id]
        finally:
            server.stop()


def test_unknown_actions_and_malformed_requests_get_a_result_string(server, app):
    tok = token(server, app)
    base = {"appkey": app["app_key"], "version": "4.1.1.2", "authToken": tok}
    for action in ("getPersonaTags", "queryAppPushData", "getLast24HoursOnlineUser",
                   "noSuchAction"):
        r = post(server, {**base, "action": action, "appId": app["app_key"]})
        assert r["result"] not in ("ok", "sign_error", "domain_error"), r
    r = post(server, {**base, "action": "pushMessageToSingleAction", "clientId": "x",
                      "clientData": "!!not base64!!"})
    assert r["result"] not in ("ok", "domain_error")
    cid = Device(server, app["app_key"])
    r = post(server, {**base, "action": "pushMessageToSingleAction",
                      "clientId": cid.registration_id, "clientData": "!!not base64!!",
                      "transmissionContent": ""})
    assert "clientData" in r["result"], r
    r = post(server, {**base, "action": "pushMessageToSingleAction",
                      "clientId": cid.registration_id, "clientData": "CgASC3B1c2ht"})
    assert "clientData" in r["result"], r
    r = post(server, {**base, "action": "getContentIdAction", "contentType": 1})
    assert r["result"] == "clientDataNullError"
    # Not JSON, and a gzip body that is not gzip: still 200 with a result.
    r = requests.post(server.base + "/serviceex", data=b"{nope", timeout=5)
    assert r.status_code == 200 and r.json()["result"] != "ok"
    r = requests.post(server.base + "/serviceex", data=b"\x00\x01",
                      headers={"Content-Encoding": "gzip"}, timeout=5)
    assert r.status_code == 200 and r.json()["result"] != "ok"
    # An oversized body is refused with a result string, not read whole.
    r = requests.post(server.base + "/serviceex", data=b" " * (5 * 1024 * 1024), timeout=20)
    assert r.status_code == 200 and r.json()["result"] == "data_too_big"
    cid.close()


# --- users ---------------------------------------------------------------------------------


def test_aliases_tags_status_and_counts(server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    a, b = devices(), devices(platform="ios")
    assert gt.bindAlias(ak, "alice", a.registration_id)["result"] == "ok"
    assert gt.bindAliasBatch(ak, [target(app, b.registration_id, "bob")])["result"] == "ok"
    assert gt.queryClientId(ak, "alice") == {"result": "ok", "cidlist": [a.registration_id]}
    assert gt.queryAlias(ak, b.registration_id)["alias"] == "bob"
    assert gt.bindAlias(ak, "alice", "nosuchcid")["result"] != "ok"
    assert gt.bindAlias(ak, "alice", b.registration_id)["result"] == "ok"
    assert sorted(gt.queryClientId(ak, "alice")["cidlist"]) == sorted(
        [a.registration_id, b.registration_id])
    assert gt.unBindAlias(ak, "alice", b.registration_id)["result"] == "ok"
    assert gt.queryClientId(ak, "alice")["cidlist"] == [a.registration_id]
    assert gt.unBindAliasAll(ak, "alice")["result"] == "ok"
    assert gt.queryClientId(ak, "alice")["cidlist"] == []

    assert gt.setClientTag(ak, a.registration_id, ["vip", "beijing"])["result"] == "ok"
    assert sorted(gt.getUserTags(ak, a.registration_id)["tags"]) == ["beijing", "vip"]
    assert gt.changeClientTag(ak, "vip", "add", [b.registration_id])["result"] == "ok"
    assert gt.getUserTags(ak, b.registration_id)["tags"] == ["vip"]
    assert gt.getUserCountByTags(ak, ["vip"]) == {"result": "ok", "userCount": "2"}
    conditions = AppConditions().addCondition(AppConditions.PHONE_TYPE, ["IOS"])
    conditions.addCondition(AppConditions.TAG, ["vip"])
    assert gt.queryUserCount(ak, conditions)["userCount"] == "1"

    status = gt.getClientIdStatus(ak, a.registration_id)
    assert status["result"] == "Online" and int(status["lastLogin"]) > 0
    b.close()
    deadline = time.time() + 5
    while gt.getClientIdStatus(ak, b.registration_id)["result"] != "Offline":
        assert time.time() < deadline
        time.sleep(0.1)
    assert gt.getClientIdStatus(ak, "nosuchcid")["result"] not in ("Online", "Offline")


def test_badges_by_cid_and_device_token(server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    dt = uuid.uuid4().hex + uuid.uuid4().hex
    d = devices(platform="ios", push_tokens={"apns": dt})

    def badge():
        while True:
            frame = json.loads(d.ws.recv(timeout=5))
            if frame["op"] == "badge":
                return frame["badge"]

    assert gt.setBadgeForCID("5", ak, [d.registration_id])["result"] == "ok"
    assert badge() == 5
    assert gt.setBadgeForCID("+3", ak, [d.registration_id])["result"] == "ok"
    assert badge() == 8
    assert gt.setBadgeForDeviceToken("-10", ak, [dt.upper()])["result"] == "ok"
    assert badge() == 0
    assert gt.setBadgeForCID("x", ak, [d.registration_id])["result"] != "ok"
    assert gt.setBadgeForCID("+1", ak, ["nosuchcid"])["result"] != "ok"


def test_cid_phone_bindings(server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    a, b = devices(), devices()
    r = gt.bindCidPn(ak, {a.registration_id: "13800000001", b.registration_id: "13800000002"})
    assert r["result"] == "ok"
    r = gt.queryCidPn(ak, [a.registration_id, b.registration_id])
    assert r["cidpnlist"] == {a.registration_id: "13800000001", b.registration_id: "13800000002"}
    assert gt.unbindCidPn(ak, [b.registration_id])["result"] == "ok"
    assert gt.queryCidPn(ak, [b.registration_id])["cidpnlist"] == {}
    assert gt.bindCidPn(ak, {a.registration_id: "not a phone"})["result"] != "ok"
