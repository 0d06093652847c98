"""Recall (`DELETE /v3/push/{msg_id}`) against the real server: pending copies are dropped and
reported `Push.Undelivered` with ErrCode 2, connected devices that got the push receive
`revoke`, a restart does not bring the push back, and every refusal has its JPush-style error."""

import json
import time

import requests

from conftest import Device, connect
from test_callbacks import server_with_receiver


def push_to(server, app, rids):
    body = {"platform": "all", "audience": {"registration_id": rids}, "notification": {"alert": "recall me"}}
    r = requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 200, r.text
    return r.json()["msg_id"]


def recall(server, app, msg_id):
    return requests.delete(f"{server.base}/v3/push/{msg_id}", timeout=5,
                           auth=(app["app_key"], app["master_secret"]))


def reconnect(server, device):
    """A new connection with the device's credentials; returns it after `welcome`."""
    ws = connect(server.base.replace("http://", "ws://") + "/v1/connect")
    ws.send(json.dumps({"op": "hello", "registration_id": device.registration_id,
                        "device_secret": device.secret, "sdk": "pytest/1"}))
    assert json.loads(ws.recv(timeout=5))["op"] == "welcome"
    return ws


def frames(ws, quiet=0.8):
    got = []
    while True:
        try:
            got.append(json.loads(ws.recv(timeout=quiet)))
        except TimeoutError:
            return got


def test_recall_drops_pending_copies_revokes_delivered_ones_and_survives_a_restart():
    env = {"PIGEON_RECALL_WINDOW_S": "3"}
    with server_with_receiver(env, "recall", "Push.Undelivered") as (server, app, rcv, _):
        online = Device(server, app["app_key"])
        offline = Device(server, app["app_key"], alias="away")
        offline.close()
        time.sleep(0.3)
        msg_id = push_to(server, app, [online.registration_id, offline.registration_id])
        assert [f["msg_id"] for f in online.pushes(1)] == [msg_id]

        r = recall(server, app, msg_id)
        assert r.status_code == 200 and r.json() == {}, r.text
        assert {"op": "revoke", "msg_id": msg_id} in frames(online.ws)

        # The device that had not got it never will, not even after a restart.
        ws = reconnect(server, offline)
        assert [f for f in frames(ws) if f["op"] == "push"] == []
        ws.close()
        assert rcv.wait(lambda: rcv.events("Push.Undelivered"))
        time.sleep(0.5)
        (event,) = rcv.events("Push.Undelivered")
        assert event["MsgId"] == msg_id and event["RegistrationId"] == offline.registration_id
        assert event["ErrCode"] == 2 and event["To_Account"] == "away" and "recalled" in event["ErrInfo"]
        online.close()
        server.stop()
        server.start()
        ws = reconnect(server, offline)
        assert [f for f in frames(ws) if f["op"] == "push"] == []
        ws.close()

        # Refusals.
        r = recall(server, app, msg_id)
        assert r.status_code == 400 and r.json()["error"]["code"] == 1003
        assert "already recalled" in r.json()["error"]["message"]
        r = recall(server, app, 123456789)
        assert r.status_code == 404 and r.json()["error"]["code"] == 1003
        r = recall(server, app, "abc")
        assert r.status_code == 400 and "not a number" in r.json()["error"]["message"]
        other = server.create_app("other")
        r = recall(server, other, msg_id)
        assert r.status_code == 404, r.text  # another app's push is not found
        r = requests.delete(f"{server.base}/v3/push/{msg_id}", timeout=5)
        assert r.status_code == 401
        old = push_to(server, app, [offline.registration_id])
        time.sleep(3.5)  # past the recall window of this server (3 s; a day by default)
        r = recall(server, app, old)
        assert r.status_code == 400 and "only pushes of the last 3 s" in r.json()["error"]["message"]


def test_recalling_a_broadcast_revokes_it_on_every_device_that_got_it(server, app):
    devices = [Device(server, app["app_key"]) for _ in range(3)]
    body = {"platform": "all", "audience": "all", "notification": {"alert": "everyone"}}
    r = requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 200, r.text
    msg_id = r.json()["msg_id"]
    for d in devices:
        assert [f["msg_id"] for f in d.pushes(1)] == [msg_id]
    assert recall(server, app, msg_id).status_code == 200
    for d in devices:
        assert {"op": "revoke", "msg_id": msg_id} in frames(d.ws)
        d.close()
