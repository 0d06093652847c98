"""The Report API, the cid pool and batch single push through the official JPush Python
client (3.4.1): counts that follow what devices did, a cid that never pushes twice, batch
entries that succeed or fail one by one."""

import json
import threading
import time

import jpush
import pytest
import requests
from jpush import common

from test_jpush_push import ids, send


def raw(server, app, method, path, body=None):
    return requests.request(method, server.base + path, auth=(app["app_key"], app["master_secret"]),
                            data=None if body is None else json.dumps(body), timeout=5)


def wait_for(check, limit=5.0):
    deadline = time.time() + limit
    while True:
        value = check()
        if value or time.time() > deadline:
            return value
        time.sleep(0.05)


def test_reports_count_targets_sends_acks_and_clicks(server, app, jp, devices):
    a, b = devices(tags=["r"]), devices(tags=["r"], platform="ios")
    offline = devices(tags=["r"])
    offline.close()
    out = send(jp, jpush.audience(jpush.tag("r")))
    msg_id = out["msg_id"]
    assert ids(a.pushes(1)) == [msg_id]
    b.ws.recv(timeout=5)  # b gets it but does not ack
    a.ws.send(json.dumps({"op": "click", "msg_id": msg_id, "seq": 1}))
    assert json.loads(a.ws.recv(timeout=5))["op"] == "ok"
    report = jp.create_report()

    def received():
        rows = report.get_received_detail(msg_id).payload
        return rows if rows[0]["jpush_received"] == 1 else None
    rows = wait_for(received)
    assert rows and rows[0]["msg_id"] == msg_id
    assert rows[0]["ios_msg_received"] == 0 and rows[0]["ios_apns_sent"] == 0

    old = report.get_received(msg_id).payload
    assert old[0]["android_received"] == 1 and old[0]["ios_msg_received"] == 0

    detail = report.get_messages_detail(msg_id).payload[0]
    n = detail["details"]["notification"]
    # 3 targeted (one offline), 2 sent on the own connection, 1 acked, 1 clicked.
    assert (n["target"], n["sent"], n["received"], n["click"]) == (3, 2, 1, 1)
    assert n["sub_android"]["jg_android"] == {"target": 2, "sent": 1, "received": 1, "display": None, "click": 1}
    assert n["sub_ios"]["jg_ios"]["sent"] == 1 and n["sub_ios"]["apns"]["sent"] == 0
    assert detail["details"]["message"] is None

    old = report.get_messages(msg_id).payload[0]
    assert old["android"]["target"] == 2 and old["android"]["online_push"] == 1

    status = report.get_status_message(int(msg_id), [a.registration_id, b.registration_id, offline.registration_id,
                                                     "stranger"]).payload
    assert status == {a.registration_id: {"status": 0}, b.registration_id: {"status": 1},
                      offline.registration_id: {"status": 1}, "stranger": {"status": 2}}
    other = devices()
    status = report.get_status_message(msg_id, [other.registration_id]).payload
    assert status == {other.registration_id: {"status": 3}}


def test_reports_survive_a_restart(server, app, jp, devices):
    a = devices(alias="keep")
    out = send(jp, jpush.audience(jpush.alias("keep")))
    assert ids(a.pushes(1)) == [out["msg_id"]]
    a.close()
    server.stop()
    server.start()
    rows = jp.create_report().get_received_detail(out["msg_id"]).payload
    assert rows[0]["jpush_received"] == 1


def test_report_lists_and_errors(server, app, jp, devices):
    d = devices()
    one = send(jp, jpush.audience(jpush.registration_id(d.registration_id)))["msg_id"]
    two = send(jp, jpush.audience(jpush.registration_id(d.registration_id)))["msg_id"]
    d.pushes(2)
    # Comma list (URL-encoded by the client), repeated keys, unknown ids get nulls.
    rows = jp.create_report().get_received_detail(f"{one},{two},999").payload
    assert [r["msg_id"] for r in rows] == [one, two, "999"]
    assert rows[2]["jpush_received"] is None
    rows = raw(server, app, "GET", f"/v3/received?msg_ids={one}&msg_ids={two}").json()
    assert [r["msg_id"] for r in rows] == [one, two]
    for path, words in [("/v3/received", "msg_ids is required"),
                        ("/v3/received?msg_ids=abc", "not a number"),
                        ("/v3/received/detail?msg_ids=" + ",".join(["1"] * 101), "at most 100")]:
        r = raw(server, app, "GET", path)
        assert r.status_code == 400 and r.json()["error"]["code"] == 3002 and words in r.json()["error"]["message"]
    r = requests.get(server.base + "/v3/received?msg_ids=1", auth=(app["app_key"], "bad"), timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == 3001
    r = raw(server, app, "POST", "/v3/status/message", {"msg_id": one})
    assert r.status_code == 400 and "registration_ids" in r.json()["error"]["message"]
    r = raw(server, app, "POST", "/v3/status/message", {"msg_id": one, "registration_ids": ["x"], "date": "2026/1/1"})
    assert r.status_code == 400 and "yyyy-mm-dd" in r.json()["error"]["message"]
    r = raw(server, app, "POST", "/v3/status/message", {"msg_id": 12345, "registration_ids": ["x"]})
    assert r.status_code == 400 and "not a push of this app" in r.json()["error"]["message"]
    # Another app's push is not visible.
    other = server.create_app("other")
    r = requests.get(server.base + f"/v3/received/detail?msg_ids={one}",
                     auth=(other["app_key"], other["master_secret"]), timeout=5)
    assert r.json()[0]["jpush_received"] is None


def test_cid_pool(server, app, jp):
    push = jp.create_push()
    cids = push.get_cid(3).payload["cidlist"]
    assert len(cids) == 3 and len(set(cids)) == 3
    assert all(c.startswith(app["app_key"] + "-") for c in cids)
    assert len(push.get_cid(2, "schedule").payload["cidlist"]) == 2
    for q, words in [("count=0", "count"), ("count=1001", "count"), ("count=x", "count"), ("type=other", "type")]:
        r = raw(server, app, "GET", "/v3/push/cid?" + q)
        assert r.status_code == 400 and r.json()["error"]["code"] == 1003 and words in r.json()["error"]["message"]
    # Odd Content-Type on a GET, as the docs show.
    r = requests.get(server.base + "/v3/push/cid", auth=(app["app_key"], app["master_secret"]),
                     headers={"Content-Type": "text/plain"}, timeout=5)
    assert len(r.json()["cidlist"]) == 1


def test_a_cid_pushes_once_even_when_sent_together(server, app, jp, devices):
    d = devices()
    cid = jp.create_push().get_cid(1).payload["cidlist"][0]
    body = {"cid": cid, "platform": "all", "audience": {"registration_id": [d.registration_id]},
            "notification": {"alert": "once"}}
    answers = []

    def fire():
        answers.append(raw(server, app, "POST", "/v3/push", body))
    threads = [threading.Thread(target=fire) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    msg_ids = {r.json()["msg_id"] for r in answers}
    assert len(msg_ids) == 1
    assert ids(d.pushes(1)) == list(msg_ids)
    # Later, the same cid still answers the first result and pushes nothing.
    again = raw(server, app, "POST", "/v3/push", body).json()
    assert again["msg_id"] in msg_ids and d.pushes(0) == []
    # A cid not from this app's pool is refused.
    body["cid"] = "made-up-cid"
    r = raw(server, app, "POST", "/v3/push", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003 and "cid" in r.json()["error"]["message"]


def test_batch_single_push_by_regid_and_alias(server, app, jp, devices):
    a, b = devices(alias="ba"), devices(alias="bb")
    push = jp.create_push()
    one = {"platform": "all", "target": a.registration_id, "notification": {"alert": "to a"}}
    two = {"platform": "all", "target": "nosuchdevice", "notification": {"alert": "to nobody"}}
    three = {"platform": "all", "target": b.registration_id, "notification": {"alert": 5}}
    out = push.batch_push_by_regid([one, two, three]).payload
    assert len(out) == 3
    # Answers are keyed by the cids the client fetched; one of each outcome.
    ok = [v["msg_id"] for v in out.values() if "msg_id" in v]
    codes = sorted(v["error"]["code"] for v in out.values() if "error" in v)
    assert len(ok) == 1 and codes == [1003, 1011]
    assert ids(a.pushes(1)) == ok
    assert b.pushes(0) == []
    out = push.batch_push_by_alias([{"platform": "all", "target": "bb", "message": {"msg_content": "hi"}}]).payload
    (answer,) = out.values()
    assert ids(b.pushes(1)) == [answer["msg_id"]]
    # Request-level errors.
    for body, code in [({}, 1002), ({"pushlist": {}}, 1003)]:
        r = raw(server, app, "POST", "/v3/push/batch/regid/single", body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code
    r = raw(server, app, "POST", "/v3/push/batch/regid/single",
            {"pushlist": {"not-a-pool-cid": {"platform": "all", "target": a.registration_id,
                                             "notification": {"alert": "x"}}}})
    assert r.json()["not-a-pool-cid"]["error"]["code"] == 1003
    with pytest.raises(common.Unauthorized):
        jpush.JPush(app["app_key"], "x" * 24, zone="local").create_push().get_cid(1)


def test_group_push_reaches_every_app_of_the_group(server, app, devices):
    import subprocess
    from conftest import PIGEON, Device, local_zone
    second = server.create_app("second")
    empty = server.create_app("empty")
    mine = devices(tags=["g"])
    theirs = Device(server, second["app_key"], tags=["g"])
    out = subprocess.run([PIGEON, "app", "group", "create", "--name", "family", "--app-keys",
                          ",".join([app["app_key"], second["app_key"], empty["app_key"]]), "--data", server.data],
                         capture_output=True, text=True, check=True)
    group = json.loads(out.stdout)
    assert len(group["group_key"]) == 24 and len(group["master_secret"]) == 24

    gp = jpush.GroupPush(group["group_key"], group["master_secret"])
    gp.zone = local_zone(server.base)
    push = gp.create_push()
    push.audience = jpush.audience(jpush.tag("g"))
    push.platform = jpush.all_
    push.notification = jpush.notification(alert="to the family")
    push.options = {"sendno": 7}
    answer = push.send().payload
    assert answer["group_msgid"]
    assert answer[app["app_key"]]["sendno"] == "7"
    assert ids(mine.pushes(1)) == [answer[app["app_key"]]["msg_id"]]
    assert ids(theirs.pushes(1)) == [answer[second["app_key"]]["msg_id"]]
    assert answer[empty["app_key"]]["error"]["code"] == 1011
    theirs.close()

    # Errors: wrong secret, plain app credentials, override_msg_id, bad group creation.
    bad = jpush.GroupPush(group["group_key"], "x" * 24)
    bad.zone = "local"
    p = bad.create_push()
    p.audience, p.platform, p.notification = jpush.all_, jpush.all_, jpush.notification(alert="x")
    with pytest.raises(common.Unauthorized):
        p.send()
    r = raw(server, app, "POST", "/v3/grouppush", {"platform": "all", "audience": "all",
                                                  "notification": {"alert": "x"}})
    assert r.status_code == 401 and "group-" in r.json()["error"]["message"]
    r = requests.post(server.base + "/v3/grouppush", auth=("group-" + group["group_key"], group["master_secret"]),
                      data=json.dumps({"platform": "all", "audience": "all", "notification": {"alert": "x"},
                                       "options": {"override_msg_id": 1}}), timeout=5)
    assert r.status_code == 400 and "override_msg_id" in r.json()["error"]["message"]
    out = subprocess.run([PIGEON, "app", "group", "create", "--name", "x", "--app-keys", "y" * 24,
                          "--data", server.data], capture_output=True, text=True)
    assert out.returncode != 0 and "no app" in out.stderr
