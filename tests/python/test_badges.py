"""Badges against the real server: `ios.badge` N / +N / -N and `badge_add_num` /
`badge_set_num` kept per device, never below 0, sent as the absolute number in each device's
push frame (applied once per push and device; a redelivered push shows the number as it is
then), kept across a
restart; `POST /v3/devices/badge` by registration id or APNs device token, with the `badge` op
to connected devices, and its refusals."""

import json
import os
import tempfile
import time

import requests

from conftest import Device, Server
from test_recall import frames, reconnect

TOKEN = "a1b2c3d4" * 8


def push(server, app, rids, notification):
    body = {"platform": "all", "audience": {"registration_id": rids},
            "notification": dict(alert="badge", **notification)}
    r = requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 200, r.text
    return r.json()["msg_id"]


def set_badge(server, app, body, auth=True):
    return requests.post(server.base + "/v3/devices/badge", data=json.dumps(body), timeout=5,
                         auth=(app["app_key"], app["master_secret"]) if auth else None)


def badges(device, n):
    return [f.get("badge") for f in device.pushes(n)]


def test_badges_follow_each_device_and_survive_a_restart():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"))
        server.start()
        try:
            app = server.create_app("badges")
            ios = Device(server, app["app_key"], platform="ios", push_tokens={"apns": TOKEN})
            android = Device(server, app["app_key"])
            both = [ios.registration_id, android.registration_id]

            push(server, app, both, {"ios": {"badge": "+1"}})
            push(server, app, both, {"ios": {"badge": "+1"}})
            assert badges(ios, 2) == [1, 2]
            # Android devices get no badge from an iOS badge.
            assert badges(android, 2) == [None, None]
            push(server, app, both, {"ios": {"badge": "-5"}, "android": {"badge_add_num": 3}})
            assert badges(ios, 1) == [0]  # never below zero
            assert badges(android, 1) == [3]
            push(server, app, both, {"ios": {"badge": 7},
                                     "android": {"badge_add_num": 2, "badge_set_num": 1}})
            assert badges(ios, 1) == [7]
            assert badges(android, 1) == [1]  # set wins over add

            # A device that was away gets each change in order when it comes back; a push it
            # did not ack comes again with the number as it is now (changed once per push).
            away = Device(server, app["app_key"], platform="ios")
            away.close()
            push(server, app, [away.registration_id], {"ios": {"badge": "+1"}})
            push(server, app, [away.registration_id], {"ios": {"badge": "+2"}})
            ws = reconnect(server, away)
            assert [f["badge"] for f in frames(ws) if f["op"] == "push"] == [1, 3]
            ws.close()
            ws = reconnect(server, away)
            assert [f["badge"] for f in frames(ws) if f["op"] == "push"] == [3, 3]
            ws.close()

            # The badge API: connected devices are told at once.
            r = set_badge(server, app, {"registration_ids": [ios.registration_id], "badge": "+2"})
            assert r.status_code == 200 and r.json() == {}, r.text
            assert {"op": "badge", "badge": 9} in frames(ios.ws)
            r = set_badge(server, app, {"device_tokens": [TOKEN.upper()], "badge": "4"})
            assert r.status_code == 200 and r.json() == {}, r.text
            assert {"op": "badge", "badge": 4} in frames(ios.ws)
            r = set_badge(server, app, {"registration_ids": [android.registration_id], "badge": "-9"})
            assert r.status_code == 200
            assert {"op": "badge", "badge": 0} in frames(android.ws)

            # Kept across a restart.
            ios.close()
            android.close()
            time.sleep(0.3)
            server.stop()
            server.start()
            ios = Device(server, app["app_key"], platform="ios")  # a new device: its own badge
            ws = reconnect(server, away)
            frames(ws)
            push(server, app, [away.registration_id, ios.registration_id], {"ios": {"badge": "+1"}})
            assert [f["badge"] for f in frames(ws) if f["op"] == "push"] == [4]
            assert badges(ios, 1) == [1]
            ws.close()
            ios.close()
        finally:
            server.stop()


def test_the_badge_api_refuses_bad_requests(server, app):
    d = Device(server, app["app_key"], platform="ios")
    rid = d.registration_id

    def refused(body, words, status=400, code=7002):  # the Device API's invalid-parameter code
        r = set_badge(server, app, body)
        assert r.status_code == status, r.text
        error = r.json()["error"]
        assert error["code"] == code and words in error["message"], error
        return error

    refused({"registration_ids": [rid]}, "badge must be")
    for bad in ["x", "+", "1.5", "++1", "123456", None, [1], {"n": 1}]:
        refused({"registration_ids": [rid], "badge": bad}, "badge must be")
    refused({"badge": "+1"}, "either registration_ids or device_tokens")
    refused({"registration_ids": [rid], "device_tokens": [TOKEN], "badge": "+1"},
            "either registration_ids or device_tokens")
    refused({"registration_ids": [], "badge": "+1"}, "1 to 1000")
    refused({"registration_ids": "abc", "badge": "+1"}, "registration_ids")
    refused({"registration_ids": ["x"] * 1001, "badge": "+1"}, "registration_ids")
    error = refused({"registration_ids": [rid, "nosuchdevice"], "badge": "+1"}, "nosuchdevice")
    assert error["illegal_rids"] == ["nosuchdevice"]
    error = refused({"device_tokens": ["ffff"], "badge": "+1"}, "ffff")
    assert error["illegal_tokens"] == ["ffff"]
    r = requests.post(server.base + "/v3/devices/badge", data="{not json", timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 400 and r.json()["error"]["code"] == 7002, r.text
    r = set_badge(server, app, {"registration_ids": [rid], "badge": "+1"}, auth=False)
    assert r.status_code == 401
    # Nothing was changed by the refused requests: the first real change starts from 0.
    assert set_badge(server, app, {"registration_ids": [rid], "badge": "+1"}).status_code == 200
    assert {"op": "badge", "badge": 1} in frames(d.ws)
    d.close()
