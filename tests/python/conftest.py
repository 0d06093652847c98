"""Fixtures: the real `pigeon` binary on a free loopback port, apps made with its CLI, the
official JPush Python client pointed at it, and devices that speak the device protocol over
real WebSockets (written from device-protocol.md, independent of Pigeon's Rust client)."""

import base64
import collections
import collections.abc
import json
import os
import socket
import subprocess
import tempfile
import time
import uuid

import jpush
import pytest
import requests
from jpush import common
from websockets.sync.client import connect

# The Getui legacy SDK (gt-push-sdk 4.1.1.2) vendors an old protobuf runtime written for
# Python <= 3.9: give it the `collections` names and `base64.encodestring` it expects, before
# any test imports it. The SDK itself is used unpatched.
for _name in ("Mapping", "MutableMapping", "Sequence", "MutableSequence", "Set", "MutableSet",
              "Iterable", "Iterator", "Callable", "Hashable", "Sized", "Container"):
    if not hasattr(collections, _name):
        setattr(collections, _name, getattr(collections.abc, _name))
if not hasattr(base64, "encodestring"):
    base64.encodestring = base64.encodebytes

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PIGEON = os.environ.get("PIGEON_BIN", os.path.join(ROOT, "target", "debug", "pigeon"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data, env=None, args=()):
        self.data = data
        self.extra_env = env or {}
        self.extra_args = list(args)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, stderr=None):
        """Starts `pigeon serve`; its log goes to `stderr` (a file) when given."""
        env = {**os.environ, "RUST_LOG": "warn", "PIGEON_SQLITE_SYNCHRONOUS": "normal",
               **self.extra_env}
        self.proc = subprocess.Popen(
            [PIGEON, "serve", "--data", self.data, "--listen", f"127.0.0.1:{self.port}",
             *self.extra_args], env=env, stderr=stderr)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if requests.get(self.base + "/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("pigeon serve did not come up")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def create_app(self, name="test"):
        out = subprocess.run([PIGEON, "app", "create", "--name", name, "--data", self.data],
                             check=True, capture_output=True, text=True)
        return json.loads(out.stdout)


@pytest.fixture(scope="session")
def server():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"))
        s.start()
        yield s
        s.stop()


@pytest.fixture
def app(server):
    return server.create_app("pytest-" + uuid.uuid4().hex[:8])


def local_zone(base):
    common.ZONES["LOCAL"] = {
        "PUSH": base + "/v3/", "REPORT": base + "/v3/", "DEVICE": base + "/v3/devices/",
        "ALIAS": base + "/v3/aliases/", "TAG": base + "/v3/tags/",
        "SCHEDULE": base + "/v3/schedules/", "ADMIN": base + "/v1/"}
    return "local"


@pytest.fixture
def jp(server, app):
    """The official JPush client, pointed at Pigeon."""
    return jpush.JPush(app["app_key"], app["master_secret"], zone=local_zone(server.base))


class Device:
    """A device written from the protocol text: register, hello, receive, ack."""

    def __init__(self, server, app_key, platform="android", tags=None, alias=None, **register):
        body = {"app_key": app_key, "platform": platform, **register}
        if tags:
            body["tags"] = tags
        if alias:
            body["alias"] = alias
        r = requests.post(server.base + "/v1/devices/register", json=body, timeout=5)
        assert r.status_code == 200, r.text
        self.platform = platform
        self.registration_id = r.json()["registration_id"]
        self.secret = r.json()["device_secret"]
        self.ws = connect(server.base.replace("http://", "ws://") + "/v1/connect")
        self.ws.send(json.dumps({"op": "hello", "registration_id": self.registration_id,
                                 "device_secret": self.secret, "sdk": "pytest/1"}))
        welcome = json.loads(self.ws.recv(timeout=5))
        assert welcome["op"] == "welcome", welcome
        self.welcome = welcome

    def pushes(self, expect, quiet=0.4, limit=5.0):
        """Collects push frames until `expect` arrived and then `quiet` s pass with nothing
        more (so extra pushes are caught too), acking each."""
        got = []
        deadline = time.time() + limit
        while time.time() < deadline:
            wait = quiet if len(got) >= expect else max(0.05, deadline - time.time())
            try:
                frame = json.loads(self.ws.recv(timeout=wait))
            except TimeoutError:
                if len(got) >= expect:
                    break
                continue
            if frame["op"] == "push":
                got.append(frame)
                self.ws.send(json.dumps({"op": "ack", "msg_ids": [frame["msg_id"]]}))
        return got

    def close(self):
        self.ws.close()


@pytest.fixture
def devices(server, app):
    made = []

    def make(**kw):
        d = Device(server, app["app_key"], **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()
