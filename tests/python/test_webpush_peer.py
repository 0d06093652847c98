"""Web Push against an independent push service: the npm package `web-push-testing`, which
checks the VAPID signature against the subscription's application server key and decrypts
what it receives (so a wrong encryption or key fails here). The subscription is made with
the app's VAPID public key from `pigeon app show`, as a browser would; the device is
offline, so the push goes through Web Push. A subscription made for another key is refused,
and an expired one (410) is dropped and reported `Push.Undelivered` ErrCode 3."""

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests
from websockets.sync.client import connect

from conftest import PIGEON, ROOT, Server, free_port
from test_callbacks import FAST, Receiver

PEER = os.path.join(ROOT, "tests", "node", "node_modules", ".bin", "web-push-testing")


@pytest.fixture
def push_service():
    assert os.path.exists(PEER), "web-push-testing is not installed: run scripts/test (npm ci in tests/node)"
    port = free_port()
    # It keeps its subscriptions in ./.node-persist: a directory of the test's own.
    state = tempfile.mkdtemp(prefix="web-push-testing-")
    subprocess.run([PEER, "--port", str(port), "start"], check=True, capture_output=True,
                   timeout=30, cwd=state)
    base = f"http://localhost:{port}"
    # Node takes its time to start on a busy machine: wait for it, and say so if it never
    # comes up rather than failing later on a refused connection.
    deadline = time.time() + 60
    while True:
        try:
            if requests.post(base + "/status", timeout=1).ok:
                break
        except requests.ConnectionError:
            pass
        assert time.time() < deadline, "web-push-testing did not start within 60 s"
        time.sleep(0.1)
    yield base
    subprocess.run([PEER, "--port", str(port), "stop"], capture_output=True, timeout=30, cwd=state)
    shutil.rmtree(state, ignore_errors=True)


def subscribe(service, vapid_public_key):
    r = requests.post(service + "/subscribe", json={"userVisibleOnly": "true",
                      "applicationServerKey": vapid_public_key}, timeout=5)
    assert r.ok, r.text
    return r.json()["data"]


def messages(service, client_hash):
    r = requests.post(service + "/get-notifications", json={"clientHash": client_hash}, timeout=5)
    if r.status_code != 200:
        return []
    return r.json()["data"]["messages"]


def vapid_key(data, app_key):
    out = subprocess.run([PIGEON, "app", "show", "--app-key", app_key, "--data", data],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["webpush_vapid_public_key"]


def register_web(server, app_key, sub):
    body = {"app_key": app_key, "platform": "web",
            "push_tokens": {"webpush": {"endpoint": sub["endpoint"], "keys": sub["keys"]}}}
    r = requests.post(server.base + "/v1/devices/register", json=body, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["registration_id"]


def push(server, app, rid, alert, **options):
    body = {"platform": "all", "audience": {"registration_id": [rid]},
            "notification": {"alert": alert, "web": {"title": "Pigeon", "extras": {"k": "v"}}}}
    if options:
        body["options"] = options
    r = requests.post(server.base + "/v3/push", json=body,
                      auth=(app["app_key"], app["master_secret"]), timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["msg_id"]


def test_an_offline_browser_gets_the_push_decrypted_by_an_independent_push_service(push_service):
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        server = Server(data, env=dict(FAST, PIGEON_WEBPUSH_ALLOW_PRIVATE_NETWORKS="true"))
        server.start()
        try:
            app = server.create_app("web")
            rcv = Receiver()
            out = subprocess.run([PIGEON, "app", "callback", "add", "--app-key", app["app_key"],
                                  "--commands", "Push.Event,Push.Undelivered", "--url", rcv.url,
                                  "--data", data], capture_output=True, text=True,
                                 env=dict(os.environ, PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS="true"))
            assert out.returncode == 0, out.stderr

            sub = subscribe(push_service, vapid_key(data, app["app_key"]))
            rid = register_web(server, app["app_key"], sub)
            msg_id = push(server, app, rid, "hello browser")
            deadline = time.time() + 10
            while not messages(push_service, sub["clientHash"]) and time.time() < deadline:
                time.sleep(0.1)
            got = messages(push_service, sub["clientHash"])
            assert len(got) == 1, got
            shown = json.loads(got[0])
            assert shown["msg_id"] == msg_id
            assert (shown["title"], shown["body"], shown["extras"]) == ("Pigeon", "hello browser", {"k": "v"})
            # Reported as sent through Web Push (PushPlatform 9).
            assert rcv.wait(lambda: any(e["CallbackCommand"] == "Push.Event" and e["PushPlatform"] == 9
                                        and e["RegistrationId"] == rid for e in rcv.events()))

            # A subscription made for another application server key: the push service
            # refuses Pigeon's VAPID token, nothing is shown.
            other = server.create_app("other")
            foreign = subscribe(push_service, vapid_key(data, other["app_key"]))
            rid2 = register_web(server, app["app_key"], foreign)
            push(server, app, rid2, "not for this key")
            time.sleep(1.0)
            assert messages(push_service, foreign["clientHash"]) == []

            # An expired subscription answers 410: the token is dropped and the device,
            # never reached, is reported undelivered with ErrCode 3 when the push expires.
            r = requests.post(push_service + "/expire-subscription/" + sub["clientHash"], timeout=5)
            assert r.ok, r.text
            gone_msg = push(server, app, rid, "too late", time_to_live=1)
            assert rcv.wait(lambda: any(e["CallbackCommand"] == "Push.Undelivered"
                                        and e["MsgId"] == gone_msg for e in rcv.events()), limit=15)
            undelivered = [e for e in rcv.events("Push.Undelivered") if e["MsgId"] == gone_msg]
            assert [(e["RegistrationId"], e["ErrCode"]) for e in undelivered] == [(rid, 3)]
        finally:
            server.stop()


def test_a_web_push_endpoint_must_be_an_http_url(server, app):
    for endpoint in ["", "ftp://push.example/x", "javascript:alert(1)", "https://p.example/" + "a" * 2100]:
        body = {"app_key": app["app_key"], "platform": "web",
                "push_tokens": {"webpush": {"endpoint": endpoint, "keys": {"p256dh": "x", "auth": "y"}}}}
        r = requests.post(server.base + "/v1/devices/register", json=body, timeout=5)
        assert r.status_code == 400, (endpoint, r.text)
        assert "http(s) endpoint" in r.json()["error"]["message"]


def test_a_private_endpoint_is_refused_at_registration(server, app):
    """A device cannot make the server post into its own network: an endpoint whose host is
    written as a private address (in any form) is refused when the device registers."""
    for endpoint in ["https://127.0.0.1/push", "https://localhost:8443/p", "http://[::1]/p",
                     "https://2130706433/p", "https://169.254.169.254/latest",
                     "https://[::127.0.0.1]/p", "https://10.0.0.8/p"]:
        body = {"app_key": app["app_key"], "platform": "web",
                "push_tokens": {"webpush": {"endpoint": endpoint, "keys": {"p256dh": "x", "auth": "y"}}}}
        r = requests.post(server.base + "/v1/devices/register", json=body, timeout=5)
        assert r.status_code == 400, (endpoint, r.text)
        assert r.json()["error"]["code"] == 1003
        message = r.json()["error"]["message"]
        assert "push_tokens.webpush.endpoint" in message and "webpush_allow_private_networks" in message


def test_a_private_endpoint_is_not_posted_to_unless_allowed(push_service):
    """A device cannot make the server post into its own network: an endpoint registered
    while private networks were allowed (or whose name resolves privately since) is refused
    at send time once they are not (the device waits for Pigeon's own connection instead)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        allowing = Server(data, env=dict(FAST, PIGEON_WEBPUSH_ALLOW_PRIVATE_NETWORKS="true"))
        allowing.start()
        try:
            app = allowing.create_app("web")
            sub = subscribe(push_service, vapid_key(data, app["app_key"]))
            body = {"app_key": app["app_key"], "platform": "web",
                    "push_tokens": {"webpush": {"endpoint": sub["endpoint"], "keys": sub["keys"]}}}
            device = requests.post(allowing.base + "/v1/devices/register", json=body, timeout=5).json()
        finally:
            allowing.stop()
        server = Server(data, env=FAST)
        server.start()
        try:
            msg_id = push(server, app, device["registration_id"], "stay inside")
            time.sleep(1.5)
            assert messages(push_service, sub["clientHash"]) == []
            # It waits for Pigeon's own connection instead.
            with connect(server.base.replace("http://", "ws://") + "/v1/connect") as ws:
                ws.send(json.dumps({"op": "hello", "registration_id": device["registration_id"],
                                    "device_secret": device["device_secret"], "sdk": "pytest/1"}))
                assert json.loads(ws.recv(timeout=5))["op"] == "welcome"
                frame = json.loads(ws.recv(timeout=5))
                assert (frame["op"], frame["msg_id"]) == ("push", msg_id)
        finally:
            server.stop()
