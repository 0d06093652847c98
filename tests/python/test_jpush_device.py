"""The Device API through the official JPush Python client (3.4.1), plus raw requests for
what the client cannot send: tags, aliases, mobile numbers, online status, their limits and
error codes, and that every change reaches the audience of the next push at once."""

import json
import time

import jpush
import pytest
import requests
from jpush import common

from test_jpush_push import ids, send


def raw(server, app, method, path, body=None, **kw):
    return requests.request(method, server.base + path, auth=(app["app_key"], app["master_secret"]),
                            data=None if body is None else json.dumps(body), timeout=5, **kw)


def test_get_and_set_device_info(jp, devices):
    d = devices(tags=["a"], alias="dev1")
    dev = jp.create_device()
    info = dev.get_deviceinfo(d.registration_id).payload
    assert info == {"tags": ["a"], "alias": "dev1", "mobile": None}

    r = dev.set_deviceinfo(d.registration_id, jpush.device_tag(jpush.add("b", "c"), jpush.remove("a")))
    assert r.status_code == 200
    r = dev.set_deviceinfo(d.registration_id, jpush.device_alias("dev1_new"))
    assert r.status_code == 200
    r = dev.set_devicemobile(d.registration_id, jpush.device_mobile("13800138000"))
    assert r.status_code == 200
    info = dev.get_deviceinfo(d.registration_id).payload
    assert sorted(info["tags"]) == ["b", "c"]
    assert info["alias"] == "dev1_new" and info["mobile"] == "13800138000"

    # "" clears tags, alias and mobile.
    dev.set_deviceinfo(d.registration_id, {"tags": "", "alias": "", "mobile": ""})
    assert dev.get_deviceinfo(d.registration_id).payload == {"tags": [], "alias": None, "mobile": None}


def test_device_changes_reach_the_next_push_at_once(jp, devices):
    d = devices()
    dev = jp.create_device()
    dev.set_deviceinfo(d.registration_id, jpush.device_tag(jpush.add("fresh")))
    out = send(jp, jpush.audience(jpush.tag("fresh")))
    assert ids(d.pushes(1)) == [out["msg_id"]]
    dev.set_deviceinfo(d.registration_id, jpush.device_alias("fresh_alias"))
    out = send(jp, jpush.audience(jpush.alias("fresh_alias")))
    assert ids(d.pushes(1)) == [out["msg_id"]]
    dev.set_deviceinfo(d.registration_id, {"tags": ""})
    with pytest.raises(common.JPushFailure) as e:
        send(jp, jpush.audience(jpush.tag("fresh")))
    assert e.value.error_code == 1011


def test_device_api_errors(server, app, jp, devices):
    d = devices()
    dev = jp.create_device()
    with pytest.raises(common.JPushFailure) as e:
        dev.get_deviceinfo("nosuchdevice0000")
    assert e.value.error_code == 7002 and e.value.error["illegal_rids"] == ["nosuchdevice0000"]
    bad = [
        ({"tags": {"add": ["bad-tag"]}}, "tag"),
        ({"tags": {"add": ["x" * 41]}}, "the limit is 40"),
        ({"tags": {"add": [f"t{i}" for i in range(101)]}}, "at most 100"),
        ({"tags": {"plus": ["a"]}}, "add and remove"),
        ({"tags": 5}, "tags must be"),
        ({"alias": 7}, "alias must be"),
        ({"mobile": "call me"}, "mobile"),
        ({"color": "red"}, "unknown field"),
        ({}, "at least one"),
    ]
    for body, words in bad:
        r = raw(server, app, "POST", f"/v3/devices/{d.registration_id}", body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()["error"]
        assert err["code"] == 7002 and words in err["message"], (body, err)
    r = raw(server, app, "POST", f"/v3/devices/{d.registration_id}", None, headers={"Content-Type": "text/plain"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 7002
    r = requests.post(server.base + f"/v3/devices/{d.registration_id}", data="{not json", timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    # Authentication: none → 7001, wrong → 7004 (the client raises Unauthorized on 401).
    r = requests.get(server.base + f"/v3/devices/{d.registration_id}", timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == 7001
    r = requests.get(server.base + f"/v3/devices/{d.registration_id}", auth=(app["app_key"], "x" * 24), timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == 7004
    # A device of another app is not this app's.
    other = server.create_app("other")
    r = requests.get(server.base + f"/v3/devices/{d.registration_id}",
                     auth=(other["app_key"], other["master_secret"]), timeout=5)
    assert r.status_code == 400 and r.json()["error"]["code"] == 7002
    # Wrong method.
    r = raw(server, app, "DELETE", f"/v3/devices/{d.registration_id}")
    assert r.status_code == 405 and r.json()["error"]["code"] == 1001


def test_an_alias_binds_at_most_ten_devices(server, app, jp, devices):
    ds = [devices() for _ in range(11)]
    dev = jp.create_device()
    for d in ds[:10]:
        assert dev.set_deviceinfo(d.registration_id, jpush.device_alias("crowd")).status_code == 200
    with pytest.raises(common.JPushFailure) as e:
        dev.set_deviceinfo(ds[10].registration_id, jpush.device_alias("crowd"))
    assert e.value.error_code == 7015
    # Re-binding a device already bound is not an eleventh binding.
    assert dev.set_deviceinfo(ds[0].registration_id, jpush.device_alias("crowd")).status_code == 200
    assert len(dev.get_aliasuser("crowd").payload["registration_ids"]) == 10
    # Registration and the device protocol keep the same limit.
    r = requests.post(server.base + "/v1/devices/register", timeout=5,
                      json={"app_key": app["app_key"], "platform": "android", "alias": "crowd"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003 and "10 devices" in r.json()["error"]["message"]
    ds[10].ws.send(json.dumps({"op": "set_alias", "alias": "crowd", "seq": 9}))
    answer = json.loads(ds[10].ws.recv(timeout=5))
    assert answer["op"] == "error" and answer["code"] == 1003 and "10 devices" in answer["reason"]


def test_aliases_list_delete_and_unbind(server, app, jp, devices):
    a, b, c = devices(alias="fam"), devices(alias="fam", platform="ios"), devices(alias="fam")
    dev = jp.create_device()
    got = dev.get_aliasuser("fam").payload["registration_ids"]
    assert sorted(got) == sorted([a.registration_id, b.registration_id, c.registration_id])
    assert dev.get_aliasuser("fam", "ios").payload["registration_ids"] == [b.registration_id]
    # new_format gives platform and last online date.
    r = raw(server, app, "GET", "/v3/aliases/fam?new_format=true&platform=ios")
    data = r.json()["data"]
    assert [x["registration_id"] for x in data] == [b.registration_id]
    assert data[0]["platform"] == "ios" and len(data[0]["last_online_date"]) == 10

    # Unbind specific devices (no client helper: raw request), with one illegal id.
    r = raw(server, app, "POST", "/v3/aliases/fam", {"registration_ids": {"remove": [c.registration_id, "nope"]}})
    assert r.status_code == 400 and r.json()["error"]["illegal_rids"] == ["nope"]
    assert c.registration_id not in dev.get_aliasuser("fam").payload["registration_ids"]

    # Delete on one platform, then everywhere.
    assert dev.delete_alias("fam", "ios").status_code == 200
    assert dev.get_aliasuser("fam").payload["registration_ids"] == [a.registration_id]
    assert dev.delete_alias("fam").status_code == 200
    assert dev.get_aliasuser("fam").payload["registration_ids"] == []
    with pytest.raises(common.JPushFailure) as e:
        send(jp, jpush.audience(jpush.alias("fam")))
    assert e.value.error_code == 1011
    r = raw(server, app, "GET", "/v3/aliases/fam?platform=windows")
    assert r.status_code == 400 and "unknown platform" in r.json()["error"]["message"]


def test_tags_list_membership_update_and_delete(server, app, jp, devices):
    a, b = devices(tags=["sport"]), devices(platform="ios", tags=["music"])
    dev = jp.create_device()
    assert dev.get_taglist().payload["tags"] == ["music", "sport"]
    r = raw(server, app, "GET", "/v3/tags/?platform=ios")
    assert r.json()["tags"] == ["music"]
    assert dev.check_taguserexist("sport", a.registration_id).payload == {"result": True}
    assert dev.check_taguserexist("sport", b.registration_id).payload == {"result": False}

    r = dev.update_tagusers("sport", jpush.device_regid(jpush.add(b.registration_id), jpush.remove(a.registration_id)))
    assert r.status_code == 200
    assert dev.check_taguserexist("sport", b.registration_id).payload == {"result": True}
    assert dev.check_taguserexist("sport", a.registration_id).payload == {"result": False}
    out = send(jp, jpush.audience(jpush.tag("sport")))
    assert ids(b.pushes(1)) == [out["msg_id"]] and a.pushes(0) == []

    with pytest.raises(common.JPushFailure) as e:
        dev.update_tagusers("sport", jpush.device_regid(jpush.add("ghost")))
    assert e.value.error["illegal_rids"] == ["ghost"]
    with pytest.raises(common.JPushFailure) as e:
        dev.update_tagusers("sport", {"registration_ids": {"add": [], "remove": []}})
    assert e.value.error_code == 7002

    assert dev.delete_tag("music", "android").status_code == 200
    assert dev.check_taguserexist("music", b.registration_id).payload == {"result": True}
    assert dev.delete_tag("music").status_code == 200
    assert dev.get_taglist().payload["tags"] == ["sport"]
    # Percent-encoded path segments: tags may hold characters URLs do not like.
    r = raw(server, app, "POST", "/v3/tags/a%2Bb%40c", {"registration_ids": {"add": [a.registration_id]}})
    assert r.status_code == 200, r.text
    assert dev.get_deviceinfo(a.registration_id).payload["tags"] == ["a+b@c"]


def test_device_status_online_and_last_seen(server, app, jp, devices):
    on, gone = devices(), devices()
    gone.close()
    dev = jp.create_device()
    deadline = time.time() + 5
    while True:
        status = dev.get_device_status([on.registration_id, gone.registration_id, "stranger"]).payload
        if "last_online_time" in status.get(gone.registration_id, {}) or time.time() > deadline:
            break
        time.sleep(0.05)
    assert status[on.registration_id] == {"online": True}
    assert status[gone.registration_id]["online"] is False
    assert len(status[gone.registration_id]["last_online_time"]) == 19
    assert "stranger" not in status
    r = raw(server, app, "POST", "/v3/devices/status/", {"registration_ids": []})
    assert r.status_code == 400 and r.json()["error"]["code"] == 7002
    r = raw(server, app, "POST", "/v3/devices/status", {"registration_ids": ["x"] * 1001})
    assert r.status_code == 400 and "at most 1000" in r.json()["error"]["message"]


def test_beijing_zone_paths(server, app, devices):
    d = devices(tags=["bj"])
    r = raw(server, app, "GET", f"/v3/device/{d.registration_id}")
    assert r.status_code == 200 and r.json()["tags"] == ["bj"]
    r = raw(server, app, "GET", "/v3/device/tags/")
    assert r.json()["tags"] == ["bj"]
    assert r.headers["Content-Type"] == "application/json; charset=utf-8"
