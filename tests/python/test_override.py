"""Override (`options.override_msg_id`) and `apns_collapse_id` against the real server: the new
push reaches devices under the old push's notify_id, a pending copy of the old one is replaced
rather than added to (also across a restart), reports name the push that overrode it, and every
refusal is a 1003."""

import json
import tempfile
import os
import time

import requests

from conftest import Device, Server
from test_recall import frames, reconnect, recall


def send(server, app, rids, **options):
    body = {"platform": "all", "audience": {"registration_id": rids},
            "notification": {"alert": "v%d" % time.time_ns()}, "options": options}
    return requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                         auth=(app["app_key"], app["master_secret"]))


def sent(server, app, rids, **options):
    r = send(server, app, rids, **options)
    assert r.status_code == 200, r.text
    return r.json()["msg_id"]


def refused(r, words):
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == 1003 and words in error["message"], error


def test_override_replaces_the_notification_and_the_pending_copy():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"), env={"PIGEON_RECALL_WINDOW_S": "4"})
        server.start()
        try:
            app = server.create_app("override")
            online = Device(server, app["app_key"])
            away = Device(server, app["app_key"])
            away.close()
            time.sleep(0.3)
            rids = [online.registration_id, away.registration_id]

            old = sent(server, app, rids)
            (first,) = online.pushes(1)
            assert first["msg_id"] == old and first["notify_id"] == old

            new = sent(server, app, rids, override_msg_id=int(old))
            (second,) = online.pushes(1)
            assert second["msg_id"] == new and second["notify_id"] == old
            # Overriding the override keeps the notification the device shows.
            newest = sent(server, app, rids, override_msg_id=int(new))
            (third,) = online.pushes(1)
            assert third["msg_id"] == newest and third["notify_id"] == old

            # The device that was away gets only the newest, not the pushes it replaced.
            ws = reconnect(server, away)
            got = [f for f in frames(ws) if f["op"] == "push"]
            assert [(f["msg_id"], f["notify_id"]) for f in got] == [(newest, old)]
            ws.close()

            auth = (app["app_key"], app["master_secret"])
            rows = requests.get(f"{server.base}/v3/received/detail?msg_ids={old},{new},{newest}",
                                auth=auth, timeout=5).json()
            assert [r.get("overridden_by") for r in rows] == [new, newest, None]
            detail = requests.get(f"{server.base}/v3/messages/detail?msg_ids={old}",
                                  auth=auth, timeout=5).json()
            assert detail[0]["overridden_by"] == new

            # After a restart the replaced pushes stay replaced.
            late = Device(server, app["app_key"])
            late.close()
            pending = sent(server, app, [late.registration_id])
            replacement = sent(server, app, [late.registration_id], override_msg_id=int(pending))
            online.close()
            server.stop()
            server.start()
            ws = reconnect(server, late)
            got = [f["msg_id"] for f in frames(ws) if f["op"] == "push"]
            assert got == [replacement]
            ws.close()

            # Refusals: unknown, another app's, already overridden, recalled, too old.
            refused(send(server, app, rids, override_msg_id=987654321), "no such push")
            other = server.create_app("other")
            stranger = Device(server, other["app_key"])
            theirs = sent(server, other, [stranger.registration_id])
            refused(send(server, app, rids, override_msg_id=int(theirs)), "no such push")
            refused(send(server, app, rids, override_msg_id=int(old)), "overrode it already")
            gone = sent(server, app, rids)
            assert recall(server, app, gone).status_code == 200
            refused(send(server, app, rids, override_msg_id=int(gone)), "recalled")
            refused(send(server, app, rids, override_msg_id=0), "override_msg_id")
            refused(send(server, app, rids, override_msg_id="x"), "override_msg_id")
            time.sleep(4.2)
            refused(send(server, app, rids, override_msg_id=int(newest)), "can be overridden")
            # A refused override changed nothing: the push it named is still reported whole.
            rows = requests.get(f"{server.base}/v3/received/detail?msg_ids={newest}",
                                auth=auth, timeout=5).json()
            assert "overridden_by" not in rows[0]
            stranger.close()
        finally:
            server.stop()


def test_validate_checks_override_too(server, app):
    d = Device(server, app["app_key"])
    body = {"platform": "all", "audience": {"registration_id": [d.registration_id]},
            "notification": {"alert": "x"}, "options": {"override_msg_id": 55555}}
    r = requests.post(server.base + "/v3/push/validate", data=json.dumps(body), timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    refused(r, "no such push")
    d.close()


def test_apns_collapse_id_reaches_ios_devices_only(server, app):
    ios = Device(server, app["app_key"], platform="ios")
    android = Device(server, app["app_key"])
    rids = [ios.registration_id, android.registration_id]
    msg_id = sent(server, app, rids, apns_collapse_id="score-7")
    (on_ios,) = ios.pushes(1)
    (on_android,) = android.pushes(1)
    assert on_ios["msg_id"] == msg_id and on_ios["apns_collapse_id"] == "score-7"
    assert "apns_collapse_id" not in on_android
    refused(send(server, app, rids, apns_collapse_id="c" * 65), "apns_collapse_id")
    ios.close()
    android.close()
