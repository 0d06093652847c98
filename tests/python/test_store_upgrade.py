"""A data directory written by the Pigeon before its own push model (fixtures/v1-store, made
by fixtures/make_v1_store.py with that build) opens in today's: the pushes it stored in
JPush's names are upgraded when the store opens and reach their devices as they would have."""

import json
import os
import shutil
import sqlite3
import time

import requests
from websockets.sync.client import connect

from conftest import Server

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "v1-store")


def hello(server, device):
    ws = connect(server.base.replace("http://", "ws://") + "/v1/connect")
    ws.send(json.dumps({"op": "hello", "registration_id": device["registration_id"],
                        "device_secret": device["device_secret"]}))
    assert json.loads(ws.recv(timeout=5))["op"] == "welcome"
    return ws


def frames(ws, expect, limit=5.0):
    got = []
    deadline = time.time() + limit
    while len(got) < expect and time.time() < deadline:
        try:
            f = json.loads(ws.recv(timeout=max(0.05, deadline - time.time())))
        except TimeoutError:
            break
        if f["op"] == "push":
            got.append(f)
            ws.send(json.dumps({"op": "ack", "msg_ids": [f["msg_id"]]}))
    return {f["msg_id"]: f for f in got}


def test_pushes_stored_by_the_build_before_the_model_are_upgraded_and_delivered(tmp_path):
    data = str(tmp_path / "data")
    shutil.copytree(FIXTURE, data)
    with open(os.path.join(data, "fixture.json")) as f:
        fx = json.load(f)
    # The fixture was written once; its pushes are moved to "just sent" so they have not
    # expired by the time the test runs. Only times change, not the stored form.
    now = int(time.time() * 1000)
    with sqlite3.connect(os.path.join(data, "pigeon.db")) as db:
        db.execute("UPDATE pushes SET sent_ms = ?1, expires_ms = ?1 + 864000000, "
                   "body = json_set(body, '$.sent_ms', ?1)", (now,))
        old = [r[0] for r in db.execute("SELECT body FROM pushes")]
    assert all('"options"' in b and '"policy"' not in b for b in old)

    server = Server(data)
    server.start()
    try:
        with sqlite3.connect(os.path.join(data, "pigeon.db")) as db:
            new = [json.loads(r[0]) for r in db.execute("SELECT body FROM pushes ORDER BY msg_id")]
        assert all("policy" in b and "options" not in b for b in new)

        first, second = [str(m) for m in fx["msg_ids"]]
        android = hello(server, fx["devices"]["android"])
        got = frames(android, 2)
        assert set(got) == {first, second}
        n = got[first]["notification"]
        assert (n["alert"], n["title"], n["extras"], n["builder_id"]) == ("hello", "T", {"k": "v"}, 2)
        assert n["intent"] == {"url": "intent:#Intent;end"}
        assert got[first]["badge"] == 1
        assert got[second]["message"] == {"msg_content": "m", "title": "mt", "extras": {"x": 1}}
        assert "notification" not in got[second]

        ios = hello(server, fx["devices"]["ios"])
        got = frames(ios, 1)
        assert set(got) == {first}
        assert got[first]["notification"]["sound"] == "a.caf"
        assert got[first]["apns_collapse_id"] == "c1"
        assert got[first]["badge"] == 2

        app = fx["app"]
        auth = (app["app_key"], app["master_secret"])
        r = requests.get(server.base + "/v3/received", params={"msg_ids": first}, auth=auth,
                         timeout=5)
        assert r.status_code == 200, r.text
        assert r.json()[0]["android_received"] == 1
        android.close()
        ios.close()
    finally:
        server.stop()

    # Opened again: nothing left to upgrade, nothing delivered twice.
    server.start()
    try:
        android = hello(server, fx["devices"]["android"])
        assert frames(android, 1, limit=1.0) == {}
        android.close()
    finally:
        server.stop()
