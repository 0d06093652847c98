"""The Getui legacy front door, driven by the official Python server SDK `gt-push-sdk` 4.1.1.2
(unpatched; conftest gives it the `collections` names it needs on Python 3.10+) against the real
`pigeon` binary, with devices that speak the device protocol. Requests the SDK cannot send on
this Python (`pushAPNMessageToSingle` uses `base64.encodestring`) are posted as the SDK sends them
on Python 3.6-3.8."""

import base64
import datetime
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


# --- pushes --------------------------------------------------------------------------------


def msg_id_of(task):
    return task.rsplit("-", 1)[1]


def test_single_push_by_cid_and_alias_with_request_id_dedupe(server, app, devices):
    gt = getui(server, app)
    d = devices(alias="carol")
    r = gt.pushMessageToSingle(single(notification(app, "Hi", "there", "tc-1")),
                               target(app, d.registration_id))
    assert r["result"] == "ok" and r["taskId"].startswith("OSS-"), r
    assert r["status"] == "successed_online"
    [f] = d.pushes(1)
    assert shown(f) == ("Hi", "there")
    assert f["msg_id"] == msg_id_of(r["taskId"])
    # A tap opens the app with the transmission content.
    assert f["notification"]["payload"] == "tc-1"
    r = gt.pushMessageToSingle(single(notification(app, "To", "alias")), target(app, alias="carol"))
    assert r["result"] == "ok"
    assert [shown(f) for f in d.pushes(1)] == [("To", "alias")]
    # The same requestId twice pushes once and answers the first push's task id.
    m, t = single(notification(app, "Once", "only")), target(app, d.registration_id)
    rid = "req-" + uuid.uuid4().hex
    one = gt.pushMessageToSingle(m, t, requestId=rid)
    two = gt.pushMessageToSingle(m, t, requestId=rid)
    other = gt.pushMessageToSingle(m, t)  # the SDK makes up a new requestId
    assert one["taskId"] == two["taskId"] != other["taskId"]
    assert [f["msg_id"] for f in d.pushes(2)] == [msg_id_of(one["taskId"]),
                                                  msg_id_of(other["taskId"])]
    # Nobody there.
    assert gt.pushMessageToSingle(m, target(app, alias="nobody"))["result"] == "AliasNotBind"
    assert gt.pushMessageToSingle(m, target(app, "nosuchcid"))["result"] == "TokenMD5NoUsers"


def test_link_and_transmission_templates(server, app, devices):
    gt = getui(server, app)
    d = devices()
    link = LinkTemplate()
    link.appId = link.appKey = app["app_key"]
    link.title, link.text, link.url = "Open", "the page", "https://example.com/a?b=1"
    assert gt.pushMessageToSingle(single(link), target(app, d.registration_id))["result"] == "ok"
    [f] = d.pushes(1)
    assert shown(f) == ("Open", "the page")
    assert f["notification"]["url"] == "https://example.com/a?b=1"
    tx = TransmissionTemplate()
    tx.appId = tx.appKey = app["app_key"]
    tx.transmissionType = 2
    tx.transmissionContent = '{"order": 42}'
    assert gt.pushMessageToSingle(single(tx), target(app, d.registration_id))["result"] == "ok"
    [f] = d.pushes(1)
    assert "notification" not in f
    assert f["message"]["msg_content"] == '{"order": 42}'


def test_notifyid_overrides_and_a_revoke_template_recalls(server, app, devices):
    gt = getui(server, app)
    d = devices()
    t1 = gt.pushMessageToSingle(single(notification(app, "v1", "first", notifyid=77)),
                                target(app, d.registration_id))
    t2 = gt.pushMessageToSingle(single(notification(app, "v2", "second", notifyid=77)),
                                target(app, d.registration_id))
    frames = d.pushes(2)
    assert [shown(f)[0] for f in frames] == ["v1", "v2"]
    assert [f["notify_id"] for f in frames] == ["77", "77"]
    assert t1["taskId"] != t2["taskId"]
    revoke = RevokeTemplate()
    revoke.appId = revoke.appKey = app["app_key"]
    revoke.oldTaskId = t2["taskId"]
    revoke.force = False
    r = gt.pushMessageToSingle(single(revoke), target(app, d.registration_id))
    assert r["result"] == "ok", r
    got = []
    deadline = time.time() + 5
    while time.time() < deadline and not got:
        frame = json.loads(d.ws.recv(timeout=5))
        if frame["op"] == "revoke":
            got.append(frame["msg_id"])
    assert got == [msg_id_of(t2["taskId"])]
    revoke.oldTaskId = "OSS-123"
    assert gt.pushMessageToSingle(single(revoke), target(app, d.registration_id))["result"] != "ok"


def test_list_push_gzip_with_details(server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    a, b, c = devices(), devices(alias="dave"), devices()
    c.close()
    m = IGtListMessage()
    m.data = notification(app, "L", "list")
    m.isOffline, m.offlineExpireTime = True, 600_000
    content_id = gt.getContentId(m, "group-1")
    os.environ["needDetails"] = "true"
    try:
        r = gt.pushMessageToList(content_id, [target(app, a.registration_id),
                                              target(app, alias="dave"),
                                              target(app, c.registration_id),
                                              target(app, "nosuchcid")])
    finally:
        del os.environ["needDetails"]
    assert r["result"] == "ok", r
    assert r["contentId"].startswith("OSL-")
    assert r["details"] == {a.registration_id: "successed_online", "dave": "successed_online",
                            c.registration_id: "successed_offline",
                            "nosuchcid": "TokenMD5NoUsers"}
    assert [shown(f) for f in a.pushes(1)] == [("L", "list")]
    assert [shown(f) for f in b.pushes(1)] == [("L", "list")]
    # The offline device gets it when it connects.
    ws = reconnect(server, c)
    frame = json.loads(ws.recv(timeout=5))
    assert frame["op"] == "push" and frame["msg_id"] == msg_id_of(r["contentId"])
    ws.close()
    # Results by task and by group.
    time.sleep(0.3)
    res = gt.getPushResult(r["contentId"])
    assert res["result"] == "ok" and res["msgTotal"] == "3", res
    assert gt.getPushResultByGroupName(ak, "group-1")["msgTotal"] == "3"
    both = gt.getPushResultByTaskidList([r["contentId"], "OSS-1"])
    assert both["data"][r["contentId"]]["msgTotal"] == "3"
    assert gt.pushMessageToList("OSL-cnope", [target(app, a.registration_id)])["result"] \
        == "NullMsgCommon"


def test_app_push_conditions_reach_exactly_the_right_devices(server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    a = devices(tags=["vip", "new"], region="11000000")
    b = devices(platform="ios", tags=["vip"], region="11000000")
    c = devices(tags=["vip"], region="33000000")
    d = devices(tags=["new"])
    everyone = {"a": a, "b": b, "c": c, "d": d}

    def push(conditions, title):
        m = IGtAppMessage()
        tx = TransmissionTemplate()
        tx.appId = tx.appKey = ak
        tx.transmissionContent = title
        m.data = tx
        m.appIdList = [ak]
        m.conditions = conditions
        m.isOffline, m.offlineExpireTime = True, 600_000
        r = gt.pushMessageToApp(m)
        assert r["result"] == "ok" and r["contentId"].startswith("OSA-"), r
        return {name for name, dev in everyone.items() if dev.pushes(0, quiet=0.5)}

    cond = AppConditions().addCondition(AppConditions.PHONE_TYPE, ["ANDROID"])
    cond.addCondition(AppConditions.REGION, ["11000000"])
    assert push(cond, "android-beijing") == {"a"}
    cond = AppConditions().addCondition(AppConditions.REGION, ["11000000"], OptType.NOT)
    assert push(cond, "not-beijing") == {"c", "d"}
    cond = AppConditions().addCondition(AppConditions.TAG, ["vip", "new"], OptType.AND)
    assert push(cond, "vip-and-new") == {"a"}
    cond = AppConditions().addCondition(AppConditions.TAG, ["new"], OptType.OR)
    cond.addCondition(AppConditions.PHONE_TYPE, ["IOS"], OptType.NOT)
    assert push(cond, "new-not-ios") == {"a", "d"}
    cond = AppConditions().addCondition(AppConditions.PHONE_TYPE, ["IOS"])
    assert push(cond, "ios") == {"b"}
    # The older lists: provinces and tags.
    m = IGtAppMessage()
    m.data = notification(app, "P", "province")
    m.appIdList, m.provinceList, m.tagList = [ak], ["33000000"], ["vip"]
    assert gt.pushMessageToApp(m)["result"] == "ok"
    assert {n for n, dev in everyone.items() if dev.pushes(0, quiet=0.5)} == {"c"}
    # A content is pushed once; an unknown one is refused.
    content_id = gt.getContentId(m)
    assert gt.pushMessageToAppWithContentId(content_id)["result"] == "ok"
    assert gt.pushMessageToAppWithContentId(content_id)["result"] == "DuplicatedContentId"
    assert gt.pushMessageToAppWithContentId("OSA-cnope")["result"] == "UndefinedContentId"


def test_tag_push_and_stop(server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    on, off = devices(tags=["sport"]), devices(tags=["sport"])
    devices(tags=["news"])
    off.close()
    m = IGtAppMessage()
    m.data = notification(app, "Goal", "1:0")
    m.appIdList, m.tag = [ak], "sport"
    m.isOffline, m.offlineExpireTime = True, 600_000
    r = gt.pushTagMessage(m, "tag-" + uuid.uuid4().hex)
    assert r["result"] == "ok" and r["taskId"].startswith("OSA-"), r
    assert [shown(f) for f in on.pushes(1)] == [("Goal", "1:0")]
    # Stopped before the offline device came back: it never gets it.
    assert gt.stop(r["taskId"]) is True
    ws = reconnect(server, off)
    got = []
    try:
        while True:
            frame = json.loads(ws.recv(timeout=0.8))
            got.append(frame["op"])
    except TimeoutError:
        pass
    ws.close()
    assert "push" not in got
    # A pending content can be cancelled.
    lm = IGtListMessage()
    lm.data = notification(app, "x", "y")
    cid = gt.getContentId(lm)
    assert gt.cancelContentId(cid) is True
    assert gt.pushMessageToList(cid, [target(app, on.registration_id)])["result"] != "ok"


def test_batch_of_single_pushes(server, app, devices):
    gt = getui(server, app)
    a, b = devices(), devices()
    batch = BatchImpl(app["app_key"], gt)
    batch.add(single(notification(app, "B1", "one")), target(app, a.registration_id))
    batch.add(single(notification(app, "B2", "two")), target(app, b.registration_id))
    batch.add(single(notification(app, "B3", "three")), target(app, "nosuchcid"))
    r = batch.submit()
    assert r["result"] == "ok", r
    assert r["info"]["0"]["result"] == "ok" and r["info"]["2"]["result"] == "TokenMD5NoUsers"
    assert [shown(f) for f in a.pushes(1)] == [("B1", "one")]
    assert [shown(f) for f in b.pushes(1)] == [("B2", "two")]


def apn_payload(title, body, **kw):
    p = APNPayload()
    alert = DictionaryAlertMsg()
    alert.title, alert.body = title, body
    p.alertMsg = alert
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def test_apns_payload_auto_badge_and_collapse_id(server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    dt = uuid.uuid4().hex + uuid.uuid4().hex
    d = devices(platform="ios", push_tokens={"apns": dt})
    tx = TransmissionTemplate()
    tx.appId = tx.appKey = ak
    tx.transmissionContent = "tx"
    tx.setApnInfo(apn_payload("at", "ab", autoBadge="+2", apnsCollapseId="coll-1"))
    assert gt.pushMessageToSingle(single(tx), target(app, d.registration_id))["result"] == "ok"
    [f] = d.pushes(1)
    assert shown(f) == ("at", "ab")
    assert f["badge"] == 2
    assert f["apns_collapse_id"] == "coll-1"
    assert f["message"]["msg_content"] == "tx"
    # The APN actions: list by device token, and single (posted as the SDK does on 3.6-3.8).
    apn = APNTemplate()
    apn.setApnInfo(apn_payload("L", "apn list"))
    m = IGtListMessage()
    m.data = apn
    content_id = gt.getAPNContentId(ak, m)
    r = gt.pushAPNMessageToList(ak, content_id, [dt])
    assert r["result"] == "ok", r
    assert [shown(f) for f in d.pushes(1)] == [("L", "apn list")]
    apn.setApnInfo(apn_payload("S", "apn single"))
    pi = base64.encodebytes(apn.pushInfo.SerializeToString()).decode()
    assert "\n" in pi
    r = post(server, {"action": "apnPushToSingleAction", "appkey": ak, "appId": ak, "DT": dt,
                      "PI": pi, "version": "4.1.1.2", "authToken": token(server, app)})
    assert r["result"] == "ok", r
    assert [shown(f) for f in d.pushes(1)] == [("S", "apn single")]


def test_sms_supplement_goes_to_devices_not_reached_and_stop_sms_stops_it():
    provider = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "pigeon.toml")
        with open(config, "w") as f:
            f.write(f'[sms]\nprovider = "http"\nurl = "{provider.url}"\n')
        server = Server(os.path.join(tmp, "data"), env=FAST, args=["--config", config])
        server.start()
        try:
            app = server.create_app("gt-sms")
            gt, ak = getui(server, app), app["app_key"]
            away, stopped = Device(server, ak), Device(server, ak)
            assert gt.bindCidPn(ak, {away.registration_id: "13800000009",
                                     stopped.registration_id: "13800000008"})["result"] == "ok"
            away.close()
            stopped.close()

            def push(cid, delay_ms):
                t = notification(app, "S", "sms")
                sms = SmsMessage()
                sms.smsTemplateId = "tpl-9"
                sms.smsContent = {"code": "1234"}
                sms.offlineSendtime = delay_ms
                sms.url = "https://x.example/a"
                t.setSmsInfo(sms)
                r = gt.pushMessageToSingle(single(t), target(app, cid))
                assert r["result"] == "ok" and r["smsResult"] == "ok", r
                return r["taskId"]

            push(away.registration_id, 1000)
            task = push(stopped.registration_id, 2500)
            assert gt.stopSendSms(ak, task)["result"] == "ok"
            deadline = time.time() + 10
            while time.time() < deadline and not provider.requests:
                time.sleep(0.1)
            time.sleep(2.5)
            with provider.lock:
                sent = [json.loads(r["body"]) for r in provider.requests]
            assert len(sent) == 1, sent
            text = json.dumps(sent[0])
            assert "13800000009" in text and "tpl-9" in text and "1234" in text
            # Asked for beyond the push's offline time: the push goes, the answer says why not.
            t = notification(app, "S", "no sms")
            sms = SmsMessage()
            sms.smsTemplateId, sms.offlineSendtime, sms.url = "tpl-9", 7_200_000, "https://x.y"
            t.setSmsInfo(sms)
            r = gt.pushMessageToSingle(single(t, ms=60_000), target(app, away.registration_id))
            assert r["result"] == "ok" and r["smsResult"] != "ok" and r["smsResultMsg"]
        finally:
            server.stop()


def test_region_set_through_the_device_api_selects_app_pushes(server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    d, other = devices(), devices()
    auth = (ak, app["master_secret"])
    url = f"{server.base}/v3/devices/{d.registration_id}"
    r = requests.post(url, data=json.dumps({"region": "44000000"}), auth=auth, timeout=5)
    assert r.status_code == 200, r.text
    assert requests.get(url, auth=auth, timeout=5).json()["region"] == "44000000"
    plain = requests.get(f"{server.base}/v3/devices/{other.registration_id}", auth=auth, timeout=5)
    assert "region" not in plain.json()  # JPush's own shape for devices without one
    m = IGtAppMessage()
    m.data = notification(app, "R", "region")
    m.appIdList = [ak]
    m.conditions = AppConditions().addCondition(AppConditions.REGION, ["44000000"])
    assert gt.pushMessageToApp(m)["result"] == "ok"
    assert [shown(f) for f in d.pushes(1)] == [("R", "region")]
    assert other.pushes(0, quiet=0.5) == []


# --- scheduled app pushes (pushTime, getScheduleTask, delScheduleTask) --------------------

BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def push_time(minutes_ahead=0, at=None):
    """`yyyyMMddHHmm` in Beijing time, `minutes_ahead` of the current minute."""
    at = at or datetime.datetime.now(BEIJING)
    return (at + datetime.timedelta(minutes=minutes_ahead)).strftime("%Y%m%d%H%M")


def scheduled(app, title, when, conditions=None):
    m = IGtAppMessage()
    m.data = notification(app, title, "scheduled")
    m.appIdList = [app["app_key"]]
    m.isOffline, m.offlineExpireTime = True, 600_000
    if conditions is not None:
        m.conditions = conditions
    m.pushTime = when  # the SDK's setter for it is shadowed: set the attribute
    return m


def test_push_times_are_checked_and_waiting_tasks_can_be_read_deleted_and_stopped(
        server, app, devices):
    gt, ak = getui(server, app), app["app_key"]
    d = devices()
    for when, why in (("202001010000", "not in the future"),
                      (push_time(0), "not in the future"),
                      (push_time(-1), "not in the future"),
                      (push_time(60 * 24 * 8), "7 days"),
                      ("2030-01-01 12:00", "yyyyMMddHHmm"),
                      ("203013011200", "yyyyMMddHHmm"),
                      ("20300101120", "yyyyMMddHHmm")):
        r = gt.pushMessageToApp(scheduled(app, "never", when))
        assert r["result"] != "ok" and "pushTime" in r["result"] and why in r["result"], (when, r)
    # A task a day ahead: answered at once with its task id, waiting.
    when = push_time(60 * 24)
    before = int(time.time() * 1000)
    m = scheduled(app, "tomorrow", when)
    content_id = gt.getContentId(m, "sched-group")
    r = gt.pushMessageToAppWithContentId(content_id)
    assert r["result"] == "ok" and r["taskId"].startswith("OSA-") and r["contentId"] == r["taskId"]
    task = r["taskId"]
    assert gt.pushMessageToAppWithContentId(content_id)["result"] == "DuplicatedContentId"
    got = gt.getScheduleTask(task, ak)
    assert got["result"] == "ok" and got["taskId"] == task, got
    assert got["status"] == "waiting" and got["pushTime"] == when
    assert before <= int(got["createTime"]) <= int(time.time() * 1000)
    # Any form of the task id names it; another app id does not.
    assert gt.getScheduleTask(msg_id_of(task), ak)["taskId"] == task
    assert gt.getScheduleTask(task, "not-this-app")["result"] == "AppidNoMatchAppKey"
    # Nothing is pushed yet, and no push of that id exists.
    assert gt.getPushResult(task)["result"] == "TaskNotExist"
    # Deleted: never fires, and is gone.
    assert gt.delScheduleTask(task, ak)["result"] == "ok"
    assert gt.getScheduleTask(task, ak)["result"] == "TaskNotExist"
    assert gt.delScheduleTask(task, ak)["result"] != "ok"
    # stop() on a waiting task deletes it too.
    other = gt.pushMessageToApp(scheduled(app, "stopped", push_time(90)))["taskId"]
    assert gt.getScheduleTask(other, ak)["status"] == "waiting"
    assert gt.stop(other) is True
    assert gt.getScheduleTask(other, ak)["result"] == "TaskNotExist"
    # Tasks that are not scheduled ones.
    now = gt.pushMessageToApp(scheduled(app, "now", ""))
    assert now["result"] == "ok"
    assert gt.getScheduleTask(now["taskId"], ak)["result"] == "TaskNotExist"
    for unknown in ("OSA-123", "nonsense"):
        assert gt.getScheduleTask(unknown, ak)["result"] == "TaskNotExist"
        assert gt.delScheduleTask(unknown, ak)["result"] == "TaskNotExist"
    assert gt.getScheduleTask("", ak)["result"] == "taskId is not null"
    assert [shown(f)[0] for f in d.pushes(1, quiet=0.5)] == ["now"]


def test_a_scheduled_app_push_fires_at_its_minute_once_across_restarts():
    """pushTime has minute precision and is wall-clock time, so this waits for a real minute
    boundary: the next one, or the one after when fewer than 6 s of this minute are left for
    the set-up (which takes well under a second here): at most about 70 s, 35 s on average.
    That the push waits for its time is checked by watching a device until a second before
    the boundary, then seeing the push arrive right after it."""
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"))
        server.start()
        try:
            app = server.create_app("gt-sched")
            gt, ak = getui(server, app), app["app_key"]
            now = datetime.datetime.now(BEIJING)
            ahead = 1 if now.second < 54 else 2
            when = push_time(ahead, now)
            fire_at = (now.replace(second=0, microsecond=0)
                       + datetime.timedelta(minutes=ahead)).timestamp()
            tagged = Device(server, ak, tags=["sched"])
            later = Device(server, ak)  # tagged after the task is made: reached
            untagged = Device(server, ak, tags=["sched"])  # untagged before it fires: not
            cond = AppConditions().addCondition(AppConditions.TAG, ["sched"])
            r = gt.pushMessageToApp(scheduled(app, "X", when, cond))
            assert r["result"] == "ok", r
            task = r["taskId"]
            deleted = gt.pushMessageToApp(scheduled(app, "Y", when, cond))["taskId"]
            ghost = AppConditions().addCondition(AppConditions.TAG, ["nobody-has-it"])
            empty = gt.pushMessageToApp(scheduled(app, "Z", when, ghost))["taskId"]
            assert gt.delScheduleTask(deleted, ak)["result"] == "ok"
            assert gt.getScheduleTask(task, ak)["status"] == "waiting"

            # A restart while it waits: it is kept (and the same IGeTui signs in again).
            for dev in (tagged, later, untagged):
                dev.close()
            server.stop()
            server.start()
            for dev in (tagged, later, untagged):
                dev.ws = reconnect(server, dev)
            got = gt.getScheduleTask(task, ak)
            assert got["status"] == "waiting" and got["pushTime"] == when, got
            assert gt.getScheduleTask(deleted, ak)["result"] == "TaskNotExist"
            assert gt.setClientTag(ak, later.registration_id, ["sched"])["result"] == "ok"
            assert gt.setClientTag(ak, untagged.registration_id, ["other"])["result"] == "ok"
            assert time.time() < fire_at - 2, "the set-up took too long for this minute"

            # Nothing before its minute...
            quiet = fire_at - time.time() - 1
            assert tagged.pushes(0, quiet=quiet, limit=quiet + 1) == []
            # ...then the task's push, once, to the devices the condition selects then.
            [f] = tagged.pushes(1, quiet=1.0, limit=fire_at - time.time() + 10)
            arrived = time.time()
            assert fire_at - 0.5 <= arrived <= fire_at + 10, (arrived, fire_at)
            assert shown(f) == ("X", "scheduled") and f["msg_id"] == msg_id_of(task)
            assert [g["msg_id"] for g in later.pushes(1, quiet=0.5)] == [msg_id_of(task)]
            assert untagged.pushes(0, quiet=0.5) == []

            got = gt.getScheduleTask(task, ak)
            assert got["status"] == "sent" and got["msgId"] == msg_id_of(task), got
            assert int(got["sendTime"]) >= int(fire_at * 1000) - 500
            assert gt.delScheduleTask(task, ak)["result"] != "ok"
            # A task whose conditions meet no device when it fires: failed, and says why.
            got = gt.getScheduleTask(empty, ak)
            assert got["status"] == "failed" and got["failReason"] == "NOTarget", got
            assert gt.delScheduleTask(empty, ak)["result"] != "ok"
            time.sleep(0.3)
            res = gt.getPushResult(task)
            assert res["result"] == "ok" and res["msgTotal"] == "2", res

            # Fired once: another restart does not fire it again.
            for dev in (tagged, later, untagged):
                dev.close()
            server.stop()
            server.start()
            tagged.ws = reconnect(server, tagged)
            assert tagged.pushes(0, quiet=1.5) == []
            assert gt.getScheduleTask(task, ak)["status"] == "sent"
            tagged.close()
        finally:
            server.stop()


def test_black_list_keeps_pushes_from_a_device_until_restored(server, app, devices):
    gt = getui(server, app)
    kept, other = devices(), devices()
    r = gt.addCidListToBlk(app["app_key"], [kept.registration_id])
    assert r["result"] == "ok", r
    r = gt.pushMessageToSingle(single(notification(app, "blocked")),
                               target(app, cid=kept.registration_id))
    assert r["result"] != "ok", r
    r = gt.pushMessageToSingle(single(notification(app, "free")),
                               target(app, cid=other.registration_id))
    assert r["result"] == "ok", r
    assert [shown(f)[0] for f in other.pushes(1)] == ["free"]
    assert kept.pushes(0, quiet=0.5) == []
    r = gt.restoreCidListFromBlk(app["app_key"], [kept.registration_id])
    assert r["result"] == "ok", r
    r = gt.pushMessageToSingle(single(notification(app, "back")),
                               target(app, cid=kept.registration_id))
    assert r["result"] == "ok", r
    assert [shown(f)[0] for f in kept.pushes(1)] == ["back"]
    assert gt.addCidListToBlk(app["app_key"], ["nosuchcid0"])["result"] == "TokenMD5NoUsers"
