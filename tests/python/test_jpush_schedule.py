"""The Schedule API through the official JPush Python client (3.4.1): create, list, get,
replace, delete, msg_ids; a schedule fires on time, exactly once, also when the server was
down at its time. Times are a few seconds ahead, not long sleeps."""

import datetime
import json
import time

import jpush
import pytest
import requests
from jpush import common
from jpush.schedule.schedulepayload import schedulepayload, trigger

BEIJING = datetime.timezone(datetime.timedelta(hours=8))


def beijing(seconds_ahead):
    t = datetime.datetime.now(BEIJING) + datetime.timedelta(seconds=seconds_ahead)
    return t.strftime("%Y-%m-%d %H:%M:%S")


def push_to(rid, alert="scheduled"):
    return {"platform": "all", "audience": {"registration_id": [rid]}, "notification": {"alert": alert}}


def raw(server, app, method, path, body=None):
    return requests.request(method, server.base + path, auth=(app["app_key"], app["master_secret"]),
                            data=None if body is None else json.dumps(body), timeout=5)


def msg_ids(server, app, schedule_id):
    r = raw(server, app, "GET", f"/v3/schedules/{schedule_id}/msg_ids")
    assert r.status_code == 200
    return [json.loads(x) for x in r.json()["msgids"]]


def test_schedule_crud(server, app, jp, devices):
    d = devices()
    sched = jp.create_schedule()
    payload = schedulepayload("morning_news", True, trigger(beijing(3600)), push_to(d.registration_id))
    created = sched.post_schedule(payload).payload
    sid = created["schedule_id"]
    assert created["name"] == "morning_news" and len(sid) == 36
    got = sched.get_schedule_by_id(sid).payload
    assert got["enabled"] is True and got["trigger"] == payload["trigger"] and got["push"] == payload["push"]
    listed = sched.get_schedule_list().payload
    assert listed["total_count"] == 1 and listed["page"] == 1 and listed["total_pages"] == 1
    assert [s["schedule_id"] for s in listed["schedules"]] == [sid]
    assert sched.get_schedule_list(2).payload["schedules"] == []

    updated = sched.put_schedule(schedulepayload(name="evening_news", enabled=False), sid).payload
    assert updated["name"] == "evening_news" and updated["enabled"] is False
    assert updated["trigger"] == payload["trigger"]
    periodic = trigger("09:00:00", beijing(60), beijing(86400 * 7), "day", 1)
    with pytest.raises(common.JPushFailure) as e:
        sched.put_schedule({"trigger": periodic}, sid)
    assert e.value.error_code == 8100 and "switch" in e.value.details

    assert sched.delete_schedule(sid).status_code == 200
    with pytest.raises(common.JPushFailure) as e:
        sched.get_schedule_by_id(sid)
    assert e.value.error_code == 8104 and e.value.response.status_code == 404
    with pytest.raises(common.JPushFailure) as e:
        sched.delete_schedule(sid)
    assert e.value.error_code == 8104

    # A periodical schedule is accepted and listed; the Beijing-zone path works too.
    p = sched.post_schedule(schedulepayload("daily", True, periodic, push_to(d.registration_id))).payload
    r = raw(server, app, "GET", "/v3/push/schedules/" + p["schedule_id"])
    assert r.status_code == 200 and r.json()["trigger"]["periodical"]["time_unit"] == "day"


def test_schedule_errors(server, app, jp, devices):
    d = devices()
    good = {"name": "ok", "enabled": True, "trigger": {"single": {"time": beijing(60)}},
            "push": push_to(d.registration_id)}
    cases = [
        (dict(good, name=""), "name"),
        (dict(good, name="bad name!"), "name"),
        (dict(good, enabled=False), "enabled must be true"),
        (dict(good, trigger={"single": {"time": "tomorrow"}}), "yyyy-MM-dd"),
        (dict(good, trigger={"single": {"time": beijing(-60)}}), "never fires"),
        (dict(good, trigger={}), "exactly one"),
        (dict(good, push={"platform": "all"}), "push: "),
        ({k: v for k, v in good.items() if k != "push"}, "push is required"),
    ]
    for body, words in cases:
        r = raw(server, app, "POST", "/v3/schedules", body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["code"] == 8100 and words in err["message"], (body, err)
    r = requests.get(server.base + "/v3/schedules", auth=(app["app_key"], "wrong"), timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == 8101
    r = raw(server, app, "GET", "/v3/schedules/no-such-id")
    assert r.status_code == 404 and r.json()["error"]["code"] == 8104
    r = raw(server, app, "GET", "/v3/schedules?page=0")
    assert r.status_code == 400
    # Another app cannot see or touch it.
    sid = raw(server, app, "POST", "/v3/schedules", good).json()["schedule_id"]
    other = server.create_app("other")
    r = requests.delete(server.base + f"/v3/schedules/{sid}", auth=(other["app_key"], other["master_secret"]),
                        timeout=5)
    assert r.status_code == 404


def test_a_schedule_fires_on_time_exactly_once(server, app, jp, devices):
    d = devices()
    sched = jp.create_schedule()
    sid = sched.post_schedule(schedulepayload(
        "soon", True, trigger(beijing(2)), push_to(d.registration_id, "on time"))).payload["schedule_id"]
    assert d.pushes(0, quiet=0.5) == []
    frames = d.pushes(1, quiet=1.5, limit=6)
    assert len(frames) == 1 and frames[0]["notification"]["alert"] == "on time"
    runs = msg_ids(server, app, sid)
    assert [r["msg_id"] for r in runs] == [frames[0]["msg_id"]] and runs[0]["error"]["code"] == 0
    # Fired single schedules are no longer listed.
    assert sched.get_schedule_list().payload["total_count"] == 0


def test_a_schedule_due_while_the_server_was_down_fires_once_after_restart(server, app, jp, devices):
    d = devices()
    rid, secret = d.registration_id, d.secret
    d.close()
    sid = jp.create_schedule().post_schedule(schedulepayload(
        "across_restart", True, trigger(beijing(2)), push_to(rid, "late"))).payload["schedule_id"]
    server.stop()
    time.sleep(3)
    server.start()
    time.sleep(1)
    server.stop()
    server.start()
    time.sleep(0.5)
    runs = msg_ids(server, app, sid)
    assert len(runs) == 1 and runs[0]["msg_id"]
    # The device connects later and gets it from the offline store, once.
    from conftest import Device
    again = Device.__new__(Device)
    from websockets.sync.client import connect
    again.ws = connect(server.base.replace("http://", "ws://") + "/v1/connect")
    again.ws.send(json.dumps({"op": "hello", "registration_id": rid, "device_secret": secret}))
    assert json.loads(again.ws.recv(timeout=5))["op"] == "welcome"
    frames = again.pushes(1)
    assert [f["msg_id"] for f in frames] == [runs[0]["msg_id"]]
    again.close()


def test_a_firing_with_no_target_is_recorded(server, app, jp, devices):
    d = devices(tags=["gone"])
    sid = jp.create_schedule().post_schedule(schedulepayload(
        "empty", True, trigger(beijing(1)),
        {"platform": "all", "audience": {"tag": ["nobody_has_this"]}, "notification": {"alert": "x"}},
    )).payload["schedule_id"]
    deadline = time.time() + 5
    while not msg_ids(server, app, sid) and time.time() < deadline:
        time.sleep(0.1)
    runs = msg_ids(server, app, sid)
    assert len(runs) == 1 and runs[0]["msg_id"] == "" and runs[0]["error"]["code"] == 1011
