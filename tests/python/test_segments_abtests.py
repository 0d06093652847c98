"""Segments and A/B tests (segments-abtests.md) end to end: the real `pigeon` binary, devices
that register over HTTP and take their pushes over real WebSockets (device-protocol.md), and a
real HTTP receiver of the `Push.Accepted`, `Push.Event` and `Push.Undelivered` callbacks
(callbacks.md).

Nothing about a device's variant is asked of the server: the assignment is published, so it is
computed here on its own (`bucket`: 64-bit FNV-1a over abtest_id, a zero byte and
registration_id, finished with SplitMix64's mixer, modulo 100; buckets laid out in the order of
the variants, then control), and so are the report's click rates, leader and two-proportion
z-test (`two_proportion_p`), and every test compares the server with those.

Decisions the contract leaves open that these tests hold the server to: errors are JPush's
(`{"error": {"code", "message"}}`, 1002 missing, 1003 bad value naming the field, 404 + 1003 for
an unknown or another app's id, 1011 no target, 1012 over the per-app limit, 405 + 1001 for a
method a route does not have); report counts add up over the pushes of a test, per device and
push; `click_rate` is 0 while nothing is delivered; `p_value` is 1 when both variants have
deliveries and their pooled click rate is 0 or 1 (z is 0/0: no difference can show)."""

import json
import math
import os
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from websockets.sync.client import connect

from conftest import Server

FAST = {"PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS": "true", "PIGEON_CALLBACKS_BATCH_WAIT_MS": "100",
        "PIGEON_CALLBACKS_RETRY_FIRST_MS": "20", "PIGEON_EXPIRED_GRACE_MS": "200"}
QUIET = 1.0  # how long a device that should get nothing is watched after the others got theirs
# The keys of the push frames of the pushes made here (device-protocol.md §3): nothing else.
FRAME_KEYS = {"op", "msg_id", "sent_ms", "expires_ms", "notification", "message", "notify_id", "badge"}
M64 = (1 << 64) - 1
AB_WORDS = ("abtest", "A/B test")  # how an error about the push's abtest key may name it


def uid():
    return uuid.uuid4().hex[:10]


# --- the published assignment, computed here ---------------------------------------------------

def bucket(abtest_id, registration_id):
    """The device's bucket (0..100) in the test: FNV-1a 64 over abtest_id, 0x00, registration_id,
    then SplitMix64's finaliser, modulo 100."""
    h = 0xcbf29ce484222325
    for b in abtest_id.encode() + b"\x00" + registration_id.encode():
        h ^= b
        h = (h * 0x100000001b3) & M64
    h = ((h ^ (h >> 30)) * 0xbf58476d1ce4e5b9) & M64
    h = ((h ^ (h >> 27)) * 0x94d049bb133111eb) & M64
    h ^= h >> 31
    return h % 100


def variant_of(abtest_id, weights, registration_id):
    """The index of the device's variant, or None for control."""
    b, end = bucket(abtest_id, registration_id), 0
    for i, w in enumerate(weights):
        end += w
        if b < end:
            return i
    return None


# --- the report, computed here ------------------------------------------------------------------

def two_proportion_p(a, b):
    """Two-sided p of the pooled two-proportion z-test between a and b, each (clicked,
    delivered)."""
    (x1, n1), (x2, n2) = a, b
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        # Pooled rate 0 or 1: both rates are equal, z is 0/0; no difference shows, p = 1.
        return 1.0
    z = abs(x1 / n1 - x2 / n2) / se
    return math.erfc(z / math.sqrt(2))


def expected_report(abtest_id, names, counts, control):
    """counts: per variant (targeted, sent, delivered, clicked)."""
    variants = []
    for name, (targeted, sent, delivered, clicked) in zip(names, counts):
        variants.append({"name": name, "targeted": targeted, "sent": sent, "delivered": delivered,
                         "clicked": clicked, "click_rate": clicked / delivered if delivered else 0})
    leader = p = None
    if any(v["delivered"] for v in variants):
        ranked = sorted(range(len(variants)), key=lambda i: (-variants[i]["click_rate"], i))
        first, second = variants[ranked[0]], variants[ranked[1]]
        leader = first["name"]
        if first["delivered"] and second["delivered"]:
            p = two_proportion_p((first["clicked"], first["delivered"]), (second["clicked"], second["delivered"]))
    return {"abtest_id": abtest_id, "variants": variants, "control": {"targeted": control},
            "leader": leader, "p_value": p}


def report_differences(got, want):
    """What differs between a report and the expected one ([] when they agree)."""
    out = []
    if got.get("abtest_id") != want["abtest_id"]:
        out.append(("abtest_id", got.get("abtest_id"), want["abtest_id"]))
    gv = got.get("variants")
    if not isinstance(gv, list) or len(gv) != len(want["variants"]):
        return out + [("variants", gv, want["variants"])]
    for g, w in zip(gv, want["variants"]):
        for k in ("name", "targeted", "sent", "delivered", "clicked"):
            if g.get(k) != w[k] or isinstance(g.get(k), bool):
                out.append((w["name"], k, g.get(k), w[k]))
        rate = g.get("click_rate")
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or abs(rate - w["click_rate"]) > 1e-12:
            out.append((w["name"], "click_rate", rate, w["click_rate"]))
    if not isinstance(got.get("control"), dict) or got["control"].get("targeted") != want["control"]["targeted"]:
        out.append(("control", got.get("control"), want["control"]))
    if got.get("leader") != want["leader"] or "leader" not in got:
        out.append(("leader", got.get("leader", "<absent>"), want["leader"]))
    p, wp = got.get("p_value", "<absent>"), want["p_value"]
    if wp is None:
        if p is not None:
            out.append(("p_value", p, None))
    elif not isinstance(p, float) or abs(p - wp) > 1e-9 * abs(wp):
        out.append(("p_value", p, wp))
    return out


# --- the callback receiver -----------------------------------------------------------------------

class Receiver:
    """A real HTTP callback receiver: answers OK, keeps each event once (by EventId)."""

    def __init__(self):
        self.events = []
        self.seen = set()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    for e in json.loads(body)["Events"]:
                        if e["EventId"] not in receiver.seen:
                            receiver.seen.add(e["EventId"])
                            receiver.events.append(e)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}')

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def get(self, command, **match):
        with self.lock:
            return [e for e in self.events if e["CallbackCommand"] == command
                    and all(e.get(k) == v for k, v in match.items())]

    def wait(self, check, limit=8.0):
        deadline = time.time() + limit
        while time.time() < deadline:
            if check():
                return True
            time.sleep(0.02)
        return check()

    def close(self):
        self.http.shutdown()
        self.http.server_close()


# --- devices -------------------------------------------------------------------------------------

class Phone:
    """A device written from device-protocol.md: registers over HTTP; connects when asked; keeps
    the push frames it gets in `got` (acking them when `acks`), and other frames in `other`."""

    def __init__(self, lab, app, platform="android", tags=None, alias=None, session=None):
        body = {"app_key": app["app_key"], "platform": platform}
        if tags:
            body["tags"] = tags
        if alias:
            body["alias"] = alias
        r = (session or requests).post(lab.server.base + "/v1/devices/register", json=body, timeout=10)
        assert r.status_code == 200, r.text
        self.lab, self.platform = lab, platform
        self.registration_id = r.json()["registration_id"]
        self.secret = r.json()["device_secret"]
        self.ws = None
        self.got, self.other = [], []
        self.acks = True
        self.seq = 0
        lab.phones.append(self)

    @property
    def rid(self):
        return self.registration_id

    def connect(self, acks=True):
        self.acks = acks
        self.ws = connect(self.lab.server.base.replace("http://", "ws://") + "/v1/connect")
        self.ws.send(json.dumps({"op": "hello", "registration_id": self.registration_id,
                                 "device_secret": self.secret, "sdk": "pytest/1"}))
        welcome = json.loads(self.ws.recv(timeout=5))
        assert welcome["op"] == "welcome", welcome
        return welcome

    def _frame(self, timeout):
        frame = json.loads(self.ws.recv(timeout=timeout))
        if frame.get("op") == "push":
            self.got.append(frame)
            if self.acks:
                self.ws.send(json.dumps({"op": "ack", "msg_ids": [frame["msg_id"]]}))
        else:
            self.other.append(frame)
        return frame

    def take(self, count, limit=8.0):
        """Waits until `count` push frames arrived in all; returns them all."""
        deadline = time.time() + limit
        while len(self.got) < count:
            left = deadline - time.time()
            assert left > 0, f"{self.rid}: {len(self.got)} pushes of {count} after {limit} s: {self.got}"
            try:
                self._frame(left)
            except TimeoutError:
                pass
        return list(self.got)

    def drain(self):
        """Reads what already arrived; returns every push frame so far."""
        try:
            while True:
                self._frame(0.01)
        except TimeoutError:
            pass
        return list(self.got)

    def ids(self):
        return [f["msg_id"] for f in self.got]

    def op(self, frame, limit=5.0):
        """Sends `frame` with the next seq; returns the server's ok/error answer to it."""
        self.seq += 1
        seq = self.seq
        self.ws.send(json.dumps({**frame, "seq": seq}))
        deadline = time.time() + limit
        while True:
            left = deadline - time.time()
            assert left > 0, f"no answer to {frame}"
            answer = self._frame(left)
            if answer.get("op") in ("ok", "error") and answer.get("seq") == seq:
                return answer

    def ack(self, msg_id):
        self.ws.send(json.dumps({"op": "ack", "msg_ids": [msg_id]}))

    def click(self, msg_id):
        answer = self.op({"op": "click", "msg_id": msg_id})
        assert answer["op"] == "ok", answer

    def close(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
            self.ws = None


def settle_all(phones):
    """After the devices that should get something got it: QUIET s more, then whatever else
    arrived is read (so an extra frame, or one to a device that should get none, is seen)."""
    time.sleep(QUIET)
    for p in phones:
        p.drain()


# --- one server, one app with a receiver ---------------------------------------------------------

class Lab:
    def __init__(self, server, app, rcv):
        self.server, self.app, self.rcv = server, app, rcv
        self.phones = []

    @staticmethod
    def auth_of(app):
        return (app["app_key"], app["master_secret"])

    def api(self, method, path, body=None, app=None, auth=None, data=None):
        if data is None and body is not None:
            data = json.dumps(body)
        return requests.request(method, self.server.base + path, data=data, timeout=10,
                                auth=auth if auth is not None else self.auth_of(app or self.app))

    def new_app(self):
        return self.server.create_app("ab-" + uid())

    def phone(self, app=None, **kw):
        return Phone(self, app or self.app, **kw)

    def phones_in_bulk(self, count, tags, app=None):
        local = threading.local()
        app = app or self.app

        def make(_):
            if not hasattr(local, "session"):
                local.session = requests.Session()
            return Phone(self, app, tags=tags, session=local.session)

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(make, range(count)))

    def segment(self, name, audience, app=None):
        r = self.api("POST", "/v3/segments", {"name": name, "audience": audience}, app=app)
        assert r.status_code == 200, r.text
        sid = r.json()["segment_id"]
        assert isinstance(sid, str) and sid, r.text
        return sid

    def abtest(self, body, app=None):
        r = self.api("POST", "/v3/abtests", body, app=app)
        assert r.status_code == 200, r.text
        aid = r.json()["abtest_id"]
        assert isinstance(aid, str) and aid, r.text
        return aid

    def push_raw(self, audience, app=None, platform="all", **fields):
        body = {"platform": platform, "audience": audience}
        if not fields:
            fields = {"notification": {"alert": "hello"}}
        body.update(fields)
        return self.api("POST", "/v3/push", body, app=app)

    def push(self, audience, app=None, platform="all", **fields):
        r = self.push_raw(audience, app=app, platform=platform, **fields)
        assert r.status_code == 200, r.text
        out = r.json()
        assert isinstance(out["msg_id"], str) and out["msg_id"] and "sendno" in out, out
        return out["msg_id"]

    def accepted(self, msg_id):
        assert self.rcv.wait(lambda: self.rcv.get("Push.Accepted", MsgId=msg_id)), f"no Push.Accepted for {msg_id}"
        (e,) = self.rcv.get("Push.Accepted", MsgId=msg_id)
        return e

    def report(self, aid, app=None):
        r = self.api("GET", f"/v3/abtests/{aid}/report", app=app)
        assert r.status_code == 200, r.text
        return r.json()

    def wait_report(self, aid, want, limit=8.0):
        """Polls the report until it is `want`; asserts it is."""
        deadline = time.time() + limit
        while True:
            got = self.report(aid)
            diff = report_differences(got, want)
            if not diff or time.time() > deadline:
                break
            time.sleep(0.05)
        assert diff == [], (diff, got, want)
        return got

    def restart(self):
        self.server.stop()
        self.server.start()


@pytest.fixture(scope="module")
def lab():
    tmp = tempfile.mkdtemp(prefix="pigeon-ab.")
    server = Server(os.path.join(tmp, "data"), env=FAST)
    server.start()
    rcv = Receiver()
    app = server.create_app("abtests")
    lab = Lab(server, app, rcv)
    r = lab.api("POST", "/v3/callbacks", {"url": rcv.url, "basic_auth": False,
                                          "commands": ["Push.Accepted", "Push.Event", "Push.Undelivered"]})
    assert r.status_code == 200, r.text
    time.sleep(1.2)  # a running server picks a new callback endpoint up within a second
    yield lab
    for p in lab.phones:
        p.close()
    rcv.close()
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def hang_up(lab):
    """Every device a test connected is disconnected when it ends."""
    yield
    for p in lab.phones:
        p.close()


def error_of(r, status, codes, words=()):
    """Asserts a JPush-style error answer; returns its error object."""
    codes = codes if isinstance(codes, tuple) else (codes,)
    assert r.status_code == status, (r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] in codes, (codes, err)
    assert isinstance(err["message"], str) and err["message"], err
    if words:
        assert any(w in err["message"] for w in words), (words, err)
    return err


def plan(lab, aid, weights, tags, enough, app=None, cap=400, platforms=("android",)):
    """Registers devices (tagged `tags`, on `platforms` in turn) until `enough(groups)` holds,
    `groups` being the devices of each variant, in order, then control's (as this module
    computes them)."""
    groups = [[] for _ in range(len(weights) + 1)]
    while not enough(groups):
        made = sum(map(len, groups))
        assert made < cap, [len(g) for g in groups]
        p = lab.phone(app=app, tags=tags, platform=platforms[made % len(platforms)])
        v = variant_of(aid, weights, p.rid)
        groups[len(weights) if v is None else v].append(p)
    return groups


# === 1. The segment API ==========================================================================

def test_segment_create_list_get_put_delete(lab):
    app = lab.new_app()
    x, y = "seg_x", "seg_y"
    a = lab.phone(app=app, tags=[x])
    b = lab.phone(app=app, platform="ios", tags=[x, y])
    c = lab.phone(app=app, platform="hmos", tags=[y], alias="seg_alias")
    lab.phone(app=app, platform="web")
    before = int(time.time() * 1000)
    bodies = [
        {"name": "X fans", "audience": {"tag": [x]}},
        {"name": "é" * 32, "audience": "all"},
        {"name": "n" * 64, "audience": {"tag_and": [x, y]}},
        {"name": "by id", "audience": {"registration_id": [a.rid, c.rid]}},
        {"name": "alias not x", "audience": {"alias": ["seg_alias"], "tag_not": [x]}},
        {"name": "nobody", "audience": {"tag": ["seg_nobody"]}},
    ]
    sizes = [2, 4, 1, 2, 1, 0]  # on every platform
    ids = [lab.segment(body["name"], body["audience"], app=app) for body in bodies]
    after = int(time.time() * 1000)
    assert len(set(ids)) == len(ids)

    got = {}
    for sid, body, size in zip(ids, bodies, sizes):
        r = lab.api("GET", f"/v3/segments/{sid}", app=app)
        assert r.status_code == 200, r.text
        one = r.json()
        assert one["segment_id"] == sid and one["name"] == body["name"] and one["audience"] == body["audience"], one
        assert isinstance(one["created_ms"], int) and before - 1000 <= one["created_ms"] <= after + 1000, one
        assert one["size"] == size, (body, one)
        got[sid] = one

    r = lab.api("GET", "/v3/segments", app=app)
    assert r.status_code == 200, r.text
    listed = r.json()["segments"]
    assert [s["segment_id"] for s in listed] == ids  # oldest first
    for s in listed:
        for k in ("segment_id", "name", "audience", "created_ms"):
            assert s[k] == got[s["segment_id"]][k], (k, s)
    created = [s["created_ms"] for s in listed]
    assert created == sorted(created)

    # PUT replaces name and audience and answers the segment; the size follows.
    new = {"name": "Y fans", "audience": {"tag": [y]}}
    r = lab.api("PUT", f"/v3/segments/{ids[0]}", new, app=app)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["segment_id"] == ids[0] and answer["name"] == "Y fans" and answer["audience"] == {"tag": [y]}, answer
    assert answer["created_ms"] == got[ids[0]]["created_ms"], answer
    one = lab.api("GET", f"/v3/segments/{ids[0]}", app=app).json()
    assert (one["name"], one["audience"], one["size"], one["created_ms"]) == \
        ("Y fans", {"tag": [y]}, 2, got[ids[0]]["created_ms"]), one
    # A bad PUT changes nothing.
    for bad in ({"name": "", "audience": "all"}, {"name": "ok"}, {"name": "ok", "audience": {"segment": [ids[1]]}}):
        r = lab.api("PUT", f"/v3/segments/{ids[0]}", bad, app=app)
        assert r.status_code == 400 and r.json()["error"]["code"] in (1002, 1003), (bad, r.text)
    assert lab.api("GET", f"/v3/segments/{ids[0]}", app=app).json() == one
    # A device's tags changed meanwhile: the sizes follow.
    r = lab.api("POST", f"/v3/devices/{b.rid}", {"tags": {"remove": [x, y]}}, app=app)
    assert r.status_code == 200, r.text
    assert [lab.api("GET", f"/v3/segments/{s}", app=app).json()["size"] for s in ids[:3]] == [1, 4, 0]

    r = lab.api("DELETE", f"/v3/segments/{ids[0]}", app=app)
    assert r.status_code == 200 and r.json() == {}, r.text
    for method, body in (("DELETE", None), ("GET", None), ("PUT", new)):
        error_of(lab.api(method, f"/v3/segments/{ids[0]}", body, app=app), 404, 1003)
    assert [s["segment_id"] for s in lab.api("GET", "/v3/segments", app=app).json()["segments"]] == ids[1:]
    # An app with none lists none.
    assert lab.api("GET", "/v3/segments", app=lab.new_app()).json() == {"segments": []}


def _without(key):
    return lambda b: {k: v for k, v in b.items() if k != key}


def _with(**over):
    return lambda b: {**b, **over}


BAD_SEGMENTS = [
    ("missing name", _without("name"), 1002, ("name",)),
    ("missing audience", _without("audience"), 1002, ("audience",)),
    ("name empty", _with(name=""), 1003, ("name",)),
    ("name 65 bytes", _with(name="n" * 65), 1003, ("name",)),
    ("name 66 bytes in 33 chars", _with(name="é" * 33), 1003, ("name",)),
    ("name a number", _with(name=5), 1003, ("name",)),
    ("name null", _with(name=None), (1002, 1003), ("name",)),
    ("audience a word", _with(audience="everyone"), 1003, ("audience",)),
    ("audience a number", _with(audience=5), 1003, ("audience",)),
    ("audience empty object", _with(audience={}), 1003, ("audience",)),
    ("audience with a segment", _with(audience={"segment": ["seg1"]}), 1003, ("segment", "audience")),
    ("audience with an abtest", _with(audience={"abtest": ["ab1"]}), 1003, ("abtest", "audience")),
    ("audience tag and a segment", _with(audience={"tag": ["ok"], "segment": ["seg1"]}), 1003,
     ("segment", "audience")),
    ("audience unknown key", _with(audience={"colour": ["red"]}), 1003, ("colour", "audience")),
    ("audience tag a string", _with(audience={"tag": "vip"}), 1003, ("tag", "audience")),
    ("audience tag empty", _with(audience={"tag": []}), (1002, 1003), ("tag", "audience")),
    ("audience alias empty string", _with(audience={"alias": [""]}), 1003, ("alias", "audience")),
    ("audience registration_id malformed", _with(audience={"registration_id": ["not-a-regid!"]}), 1003,
     ("registration_id", "audience")),
    ("audience 21 tags", _with(audience={"tag": [f"t{i}" for i in range(21)]}), 1003, ("tag", "audience")),
    ("audience 21 tag_not", _with(audience={"tag_not": [f"t{i}" for i in range(21)]}), 1003, ("tag_not", "audience")),
    ("audience 1001 registration_ids", _with(audience={"registration_id": [f"r{i}" for i in range(1001)]}), 1003,
     ("registration_id", "audience")),
]


@pytest.mark.parametrize("case,change,code,words", BAD_SEGMENTS, ids=[c[0] for c in BAD_SEGMENTS])
def test_a_bad_segment_is_refused(lab, case, change, code, words):
    r = lab.api("POST", "/v3/segments", change({"name": "bad", "audience": {"tag": ["seg_ok"]}}))
    error_of(r, 400, code, words)


def test_segment_bodies_that_are_not_a_segment_object(lab):
    app = lab.new_app()
    for data in ('{"name": "x", "audience": ', "[1, 2]", '"all"', ""):
        error_of(lab.api("POST", "/v3/segments", data=data, app=app), 400, (1002, 1003) if data == "" else 1003)
    sid = lab.segment("ok", "all", app=app)
    error_of(lab.api("PUT", f"/v3/segments/{sid}", data="[1]", app=app), 400, 1003)
    assert [s["segment_id"] for s in lab.api("GET", "/v3/segments", app=app).json()["segments"]] == [sid]


def test_segment_authentication_and_other_apps(lab):
    app, other = lab.new_app(), lab.new_app()
    sid = lab.segment("mine", {"tag": ["seg_auth"]}, app=app)
    body = {"name": "x", "audience": "all"}
    routes = [("POST", "/v3/segments", body), ("GET", "/v3/segments", None), ("GET", f"/v3/segments/{sid}", None),
              ("PUT", f"/v3/segments/{sid}", body), ("DELETE", f"/v3/segments/{sid}", None)]
    for method, path, b in routes:
        r = requests.request(method, lab.server.base + path, timeout=5, data=None if b is None else json.dumps(b))
        error_of(r, 401, 1004)
        error_of(lab.api(method, path, b, auth=(app["app_key"], "x" * 24)), 401, 1004)
        error_of(lab.api(method, path, b, auth=(other["app_key"], app["master_secret"])), 401, 1004)
    # Another app: not found, not listed, not usable in its pushes.
    for method, b in (("GET", None), ("PUT", body), ("DELETE", None)):
        error_of(lab.api(method, f"/v3/segments/{sid}", b, app=other), 404, 1003)
    assert lab.api("GET", "/v3/segments", app=other).json() == {"segments": []}
    lab.phone(app=other, tags=["seg_auth"])
    error_of(lab.push_raw({"segment": [sid]}, app=other), 400, 1003, ("segment",))
    one = lab.api("GET", f"/v3/segments/{sid}", app=app).json()
    assert (one["name"], one["audience"]) == ("mine", {"tag": ["seg_auth"]})  # untouched


# === 2. Segments in pushes =======================================================================

def test_a_segment_follows_tag_and_alias_changes(lab):
    x, al, other_tag = "follow_" + uid(), "al_" + uid(), "moved_" + uid()
    a, b, c = lab.phone(tags=[x]), lab.phone(), lab.phone(platform="ios")
    for p in (a, b, c):
        p.connect()
    sid = lab.segment("followers", {"tag": [x]})
    by_alias = lab.segment("aliased", {"alias": [al]})
    size = lambda s: lab.api("GET", f"/v3/segments/{s}").json()["size"]  # noqa: E731
    assert size(sid) == 1

    m1 = lab.push({"segment": [sid]}, notification={"alert": "one"})
    assert a.take(1)[0]["msg_id"] == m1

    # The Device API moves the tag from a to b and c.
    for p, change in ((a, {"remove": [x]}), (b, {"add": [x]}), (c, {"add": [x, other_tag]})):
        r = lab.api("POST", f"/v3/devices/{p.rid}", {"tags": change})
        assert r.status_code == 200, r.text
    assert size(sid) == 2
    m2 = lab.push({"segment": [sid]}, notification={"alert": "two"})
    assert b.take(1)[0]["msg_id"] == m2 and c.take(1)[0]["msg_id"] == m2
    assert lab.accepted(m2)["TargetCount"] == 2

    # An alias bound later: the alias segment reaches it.
    assert size(by_alias) == 0
    error_of(lab.push_raw({"segment": [by_alias]}), 400, 1011)
    assert lab.api("POST", f"/v3/devices/{a.rid}", {"alias": al}).status_code == 200
    assert size(by_alias) == 1
    m3 = lab.push({"segment": [by_alias]}, notification={"alert": "three"})
    assert a.take(2)[1]["msg_id"] == m3

    # Nobody left with the tag: the segment resolves to nobody.
    for p in (b, c):
        assert lab.api("POST", f"/v3/devices/{p.rid}", {"tags": {"remove": [x]}}).status_code == 200
    assert size(sid) == 0
    error_of(lab.push_raw({"segment": [sid]}), 400, 1011)
    # The segment's own audience changed by PUT: it follows that too.
    r = lab.api("PUT", f"/v3/segments/{sid}", {"name": "followers", "audience": {"tag": [other_tag]}})
    assert r.status_code == 200, r.text
    assert size(sid) == 1
    m4 = lab.push({"segment": [sid]}, notification={"alert": "four"})
    assert c.take(2)[1]["msg_id"] == m4
    settle_all([a, b, c])
    assert (a.ids(), b.ids(), c.ids()) == ([m1, m3], [m2], [m2, m4])


def test_a_push_to_a_segment(lab):
    s_tag, vip = "sp_" + uid(), "vip_" + uid()
    a = lab.phone(tags=[s_tag, vip])
    b = lab.phone(platform="ios", tags=[s_tag])
    c = lab.phone(tags=[vip])
    for p in (a, b, c):
        p.connect()
    sid = lab.segment("sp", {"tag": [s_tag]})

    m1 = lab.push({"segment": [sid]}, notification={"alert": "seg"})
    m2 = lab.push({"segment": [sid], "tag": [vip]}, notification={"alert": "seg and vip"})
    m3 = lab.push({"segment": [sid]}, platform=["ios"], notification={"alert": "ios only"})
    m4 = lab.push({"segment": [sid], "tag_not": [vip], "registration_id": [a.rid, b.rid, c.rid]},
                  notification={"alert": "three keys"})
    assert a.take(2) and b.take(3)
    settle_all([a, b, c])
    assert a.ids() == [m1, m2] and b.ids() == [m1, m3, m4] and c.ids() == []
    assert [f["notification"]["alert"] for f in b.got] == ["seg", "ios only", "three keys"]
    want = {m1: ("segment", 2), m2: ("tag+segment", 1), m3: ("segment", 1),
            m4: ("tag_not+registration_id+segment", 1)}
    for msg_id, (kind, count) in want.items():
        e = lab.accepted(msg_id)
        assert (e["AudienceType"], e["TargetCount"]) == (kind, count), e

    # Refusals: two segments, an unknown one, one that resolves to nobody (alone, ANDed with
    # other keys, or on the push's platforms).
    other = lab.segment("other", "all")
    error_of(lab.push_raw({"segment": [sid, other]}), 400, 1003, ("segment",))
    error_of(lab.push_raw({"segment": [sid, sid]}), 400, 1003, ("segment",))
    error_of(lab.push_raw({"segment": ["nosuchsegment0000"]}), 400, 1003, ("segment",))
    empty = lab.segment("empty", {"tag": ["nobody_" + uid()]})
    error_of(lab.push_raw({"segment": [empty]}), 400, 1011)
    error_of(lab.push_raw({"segment": [sid], "registration_id": [c.rid]}), 400, 1011)
    error_of(lab.push_raw({"segment": [sid], "alias": ["nobody_has_it"]}), 400, 1011)
    error_of(lab.push_raw({"segment": [sid]}, platform=["hmos"]), 400, 1011)
    # A deleted segment is unknown.
    assert lab.api("DELETE", f"/v3/segments/{other}").status_code == 200
    error_of(lab.push_raw({"segment": [other]}), 400, 1003, ("segment",))
    settle_all([a, b, c])
    assert (len(a.got), len(b.got), len(c.got)) == (2, 3, 0)


# === 3. The A/B test API =========================================================================

CONTRACT_EXAMPLE = {
    "name": "spring-sale",
    "audience": {"tag": ["shoppers"]},
    "variants": [
        {"name": "A", "weight": 45, "notification": {"alert": "20% off today"}},
        {"name": "B", "weight": 45, "notification": {"alert": "Spring sale: open to see"},
         "message": {"msg_content": "x"}}],
    "control_weight": 10}


def two_variants(**over):
    body = {"name": "t", "audience": {"tag": ["ab_ok"]},
            "variants": [{"name": "A", "weight": 45, "notification": {"alert": "a"}},
                         {"name": "B", "weight": 45, "message": {"msg_content": "b"}}],
            "control_weight": 10}
    body.update(over)
    return body


def test_abtest_create_list_get_delete_and_no_put(lab):
    app = lab.new_app()
    before = int(time.time() * 1000)
    minimal = {"name": "minimal", "variants": [{"name": "x", "weight": 50, "message": {"msg_content": "m"}},
                                               {"name": "y", "weight": 50, "notification": {"alert": "y"}}]}
    five = {"name": "n" * 64, "audience": "all", "control_weight": 0,
            "variants": [{"name": f"v{i}", "weight": 20, "notification": {"alert": f"a{i}"}} for i in range(5)]}
    edges = {"name": "é" * 32, "audience": {"tag_and": ["a", "b"], "tag_not": ["c"]}, "control_weight": 50,
             "variants": [{"name": "é" * 32, "weight": 1, "notification": {"alert": "one",
                                                                         "android": {"title": "t", "extras": {"k": 1}}}},
                          {"name": "w" * 64, "weight": 49, "notification": {"alert": "n"},
                           "message": {"msg_content": "m", "title": "mt", "extras": {"k": "v"}}}]}
    bodies = [CONTRACT_EXAMPLE, minimal, five, edges]
    ids = [lab.abtest(b, app=app) for b in bodies]
    after = int(time.time() * 1000)
    assert len(set(ids)) == 4

    got = {}
    for aid, body in zip(ids, bodies):
        r = lab.api("GET", f"/v3/abtests/{aid}", app=app)
        assert r.status_code == 200, r.text
        one = r.json()
        want = {"abtest_id": aid, "name": body["name"], "audience": body.get("audience", "all"),
                "variants": body["variants"], "control_weight": body.get("control_weight", 0)}
        assert {k: one.get(k) for k in want} == want, (one, want)
        assert isinstance(one["created_ms"], int) and before - 1000 <= one["created_ms"] <= after + 1000, one
        got[aid] = one

    r = lab.api("GET", "/v3/abtests", app=app)
    assert r.status_code == 200, r.text
    listed = r.json()["abtests"]
    assert [t["abtest_id"] for t in listed] == ids  # oldest first
    for t in listed:
        for k in ("abtest_id", "name", "audience", "variants", "control_weight", "created_ms"):
            assert t[k] == got[t["abtest_id"]][k], (k, t)

    # There is no PUT: a test's buckets are fixed for its life.
    r = lab.api("PUT", f"/v3/abtests/{ids[0]}", CONTRACT_EXAMPLE, app=app)
    error_of(r, 405, 1001)
    assert lab.api("GET", f"/v3/abtests/{ids[0]}", app=app).json() == got[ids[0]]

    r = lab.api("DELETE", f"/v3/abtests/{ids[1]}", app=app)
    assert r.status_code == 200 and r.json() == {}, r.text
    for method in ("DELETE", "GET"):
        error_of(lab.api(method, f"/v3/abtests/{ids[1]}", app=app), 404, 1003)
    error_of(lab.api("GET", f"/v3/abtests/{ids[1]}/report", app=app), 404, 1003)
    assert [t["abtest_id"] for t in lab.api("GET", "/v3/abtests", app=app).json()["abtests"]] == \
        [ids[0], ids[2], ids[3]]
    assert lab.api("GET", "/v3/abtests", app=lab.new_app()).json() == {"abtests": []}


def _variant(i, **over):
    """Changes variant i of the body (a key given None is removed)."""
    def change(b):
        vs = [dict(v) for v in b["variants"]]
        vs[i].update(over)
        vs[i] = {k: v for k, v in vs[i].items() if v is not None}
        return {**b, "variants": vs}
    return change


def _variants(vs, control=None):
    def change(b):
        out = {**b, "variants": vs}
        if control is not None:
            out["control_weight"] = control
        return out
    return change


def _v(name, weight, **content):
    return {"name": name, "weight": weight, **(content or {"notification": {"alert": name}})}


BAD_ABTESTS = [
    ("missing name", _without("name"), 1002, ("name",)),
    ("name empty", _with(name=""), 1003, ("name",)),
    ("name 65 bytes", _with(name="n" * 65), 1003, ("name",)),
    ("name a number", _with(name=7), 1003, ("name",)),
    ("missing variants", _without("variants"), 1002, ("variants",)),
    ("one variant", _variants([_v("A", 100)], 0), 1003, ("variants",)),
    ("six variants", _variants([_v(f"v{i}", w) for i, w in enumerate([20, 20, 20, 20, 10, 10])], 0), 1003,
     ("variants",)),
    ("variants not a list", _with(variants={"A": 50}), 1003, ("variants",)),
    ("a variant not an object", _variants([_v("A", 50), 50], 0), 1003, ("variants",)),
    ("duplicate names", _variants([_v("A", 45), _v("A", 45)]), 1003, ("name", "variants")),
    ("variant name empty", _variant(0, name=""), 1003, ("name",)),
    ("variant name 65 bytes", _variant(1, name="v" * 65), 1003, ("name",)),
    ("variant name a number", _variant(1, name=3), 1003, ("name",)),
    ("variant without name", _variant(0, name=None), 1002, ("name",)),
    ("variant without weight", _variants([{"name": "A", "notification": {"alert": "a"}}, _v("B", 90)]), 1002,
     ("weight",)),
    ("weight 0", _variants([_v("A", 0), _v("B", 90)]), 1003, ("weight",)),
    ("weight 101", _variants([_v("A", 101), _v("B", 1)], 0), 1003, ("weight",)),
    ("weight negative", _variants([_v("A", -10), _v("B", 100)], 10), 1003, ("weight",)),
    ("weight fractional", _variants([_v("A", 45.5), _v("B", 44.5)]), 1003, ("weight",)),
    ("weight a string", _variants([_v("A", "45"), _v("B", 45)]), 1003, ("weight",)),
    ("variant without content", _variant(0, notification=None), 1002, ("notification", "message")),
    ("control_weight 51", _variants([_v("A", 25), _v("B", 24)], 51), 1003, ("control_weight",)),
    ("control_weight negative", _variants([_v("A", 50), _v("B", 51)], -1), 1003, ("control_weight",)),
    ("control_weight a string", _with(control_weight="10"), 1003, ("control_weight",)),
    ("weights add up to 99", _with(control_weight=9), 1003, ("weight",)),
    ("weights add up to 101", _with(control_weight=11), 1003, ("weight",)),
    ("weights add up to 90 without control", _without("control_weight"), 1003, ("weight",)),
    ("notification alert a number", _variant(0, notification={"alert": 5}), 1003, ("notification", "alert")),
    ("notification a string", _variant(0, notification="hello"), 1003, ("notification",)),
    ("notification priority 3", _variant(0, notification={"alert": "x", "android": {"priority": 3}}), 1003,
     ("priority",)),
    ("message without msg_content", _variant(1, message={}), (1002, 1003), ("message", "msg_content")),
    ("message a string", _variant(1, message="hi"), 1003, ("message",)),
    ("audience a word", _with(audience="everyone"), 1003, ("audience",)),
    ("audience empty object", _with(audience={}), 1003, ("audience",)),
    ("audience with a segment", _with(audience={"segment": ["seg1"]}), 1003, ("segment", "audience")),
    ("audience with an abtest", _with(audience={"abtest": ["ab1"]}), 1003, ("abtest", "audience")),
    ("audience unknown key", _with(audience={"colour": ["red"]}), 1003, ("colour", "audience")),
    ("audience 21 tags", _with(audience={"tag": [f"t{i}" for i in range(21)]}), 1003, ("tag", "audience")),
    ("audience 1001 aliases", _with(audience={"alias": [f"a{i}" for i in range(1001)]}), 1003, ("alias", "audience")),
]


@pytest.mark.parametrize("case,change,code,words", BAD_ABTESTS, ids=[c[0] for c in BAD_ABTESTS])
def test_a_bad_abtest_is_refused(lab, case, change, code, words):
    error_of(lab.api("POST", "/v3/abtests", change(two_variants())), 400, code, words)


def test_abtest_bodies_that_are_not_a_test_object(lab):
    app = lab.new_app()
    for data in ('{"name": "x", "variants": [', "[1, 2]", '"t"'):
        error_of(lab.api("POST", "/v3/abtests", data=data, app=app), 400, 1003)
    assert lab.api("GET", "/v3/abtests", app=app).json() == {"abtests": []}


def test_abtest_authentication_other_apps_and_the_limit(lab):
    app, other = lab.new_app(), lab.new_app()
    aid = lab.abtest(two_variants(), app=app)
    routes = [("POST", "/v3/abtests", two_variants()), ("GET", "/v3/abtests", None),
              ("GET", f"/v3/abtests/{aid}", None), ("GET", f"/v3/abtests/{aid}/report", None),
              ("DELETE", f"/v3/abtests/{aid}", None)]
    for method, path, b in routes:
        r = requests.request(method, lab.server.base + path, timeout=5, data=None if b is None else json.dumps(b))
        error_of(r, 401, 1004)
        error_of(lab.api(method, path, b, auth=(app["app_key"], "x" * 24)), 401, 1004)
    for method, path in (("GET", f"/v3/abtests/{aid}"), ("GET", f"/v3/abtests/{aid}/report"),
                         ("DELETE", f"/v3/abtests/{aid}")):
        error_of(lab.api(method, path, app=other), 404, 1003)
    error_of(lab.api("GET", "/v3/abtests/nosuchtest0000/report", app=app), 404, 1003)
    assert lab.api("GET", "/v3/abtests", app=other).json() == {"abtests": []}
    lab.phone(app=other, tags=["ab_ok"])
    error_of(lab.push_raw({"abtest": [aid]}, app=other), 400, 1003, AB_WORDS)
    assert lab.api("GET", f"/v3/abtests/{aid}", app=app).json()["name"] == "t"  # untouched

    # At most 100 tests per app: the 101st is refused with 1012; a delete makes room for one.
    made = [aid] + [lab.abtest(two_variants(name=f"t{i}"), app=app) for i in range(99)]
    error_of(lab.api("POST", "/v3/abtests", two_variants(name="101st"), app=app), 400, 1012)
    assert len(lab.api("GET", "/v3/abtests", app=app).json()["abtests"]) == 100
    lab.abtest(two_variants(), app=other)  # another app has a limit of its own
    assert lab.api("DELETE", f"/v3/abtests/{made[50]}", app=app).status_code == 200
    lab.abtest(two_variants(name="again"), app=app)
    error_of(lab.api("POST", "/v3/abtests", two_variants(name="102nd"), app=app), 400, 1012)


# === 4. Assignment ===============================================================================

def test_assignment_of_2000_devices_is_the_published_hash_and_stable(lab):
    tag = "ab2k_" + uid()
    phones = lab.phones_in_bulk(2000, [tag])
    names, weights = ["A", "B"], [45, 45]
    aid = lab.abtest({"name": "split", "audience": {"tag": [tag]}, "control_weight": 10,
                      "variants": [{"name": "A", "weight": 45, "notification": {"alert": "2k-A"}},
                                   {"name": "B", "weight": 45, "notification": {"alert": "2k-B"}}]})
    of = {p.rid: variant_of(aid, weights, p.rid) for p in phones}
    count = lambda rids: [sum(1 for r in rids if of[r] == i) for i in (0, 1, None)]  # noqa: E731
    everyone = [p.rid for p in phones]
    full = count(everyone)
    # The split follows the weights within a few percent...
    assert abs(full[0] / 2000 - 0.45) < 0.04 and abs(full[1] / 2000 - 0.45) < 0.04, full
    assert abs(full[2] / 2000 - 0.10) < 0.03, full
    subset = everyone[:500]
    part = count(subset)

    def want(*splits):
        """The report after pushes whose splits were `splits` (all devices offline)."""
        return expected_report(aid, names, [(sum(s[i] for s in splits), 0, 0, 0) for i in (0, 1)],
                               sum(s[2] for s in splits))

    # ...and is exactly the one computed here, per variant and for control.
    m1 = lab.push({"abtest": [aid]}, notification={"alert": "2k body"})
    e = lab.accepted(m1)
    assert (e["AudienceType"], e["TargetCount"]) == ("abtest", full[0] + full[1]), (e, full)
    lab.wait_report(aid, want(full))
    # ANDed with the push's own keys: the test's split of those devices.
    m2 = lab.push({"abtest": [aid], "registration_id": subset}, notification={"alert": "2k body"})
    e = lab.accepted(m2)
    assert (e["AudienceType"], e["TargetCount"]) == ("registration_id+abtest", part[0] + part[1]), (e, part)
    lab.wait_report(aid, want(full, part))

    # Across a restart: the same split, and the report kept.
    lab.restart()
    lab.wait_report(aid, want(full, part))
    m3 = lab.push({"abtest": [aid]}, notification={"alert": "2k body"})
    assert lab.accepted(m3)["TargetCount"] == full[0] + full[1]
    lab.wait_report(aid, want(full, part, full))

    # Per device: some of them (all in the subset) connect and get their variant's three pushes;
    # control devices get nothing.
    by_rid = {p.rid: p for p in phones}
    pick = [by_rid[r] for r in subset if of[r] is not None][:16] + [by_rid[r] for r in subset if of[r] is None][:4]
    assert len(pick) == 20
    for p in pick:
        welcome = p.connect()
        assert welcome["pending"] == (0 if of[p.rid] is None else 3), (p.rid, of[p.rid], welcome)
    for p in pick:
        if of[p.rid] is not None:
            p.take(3)
    settle_all(pick)
    for p in pick:
        v = of[p.rid]
        if v is None:
            assert p.got == [], p.got
        else:
            assert p.ids() == [m1, m2, m3], (p.rid, p.ids())
            assert [f["notification"]["alert"] for f in p.got] == ["2k-" + names[v]] * 3, (p.rid, v, p.got)
    # Their Push.Events (sent and delivered after the restart) name the variant they were in.
    want_events = {(m, p.rid, stage) for p in pick if of[p.rid] is not None for m in (m1, m2, m3) for stage in (1, 2)}
    picked = {p.rid for p in pick}

    def events():
        return {(e["MsgId"], e["RegistrationId"], e["PushStage"]): e for m in (m1, m2, m3)
                for e in lab.rcv.get("Push.Event", MsgId=m) if e["RegistrationId"] in picked}
    assert lab.rcv.wait(lambda: set(events()) >= want_events)
    assert set(events()) == want_events
    for (m, rid, stage), e in events().items():
        assert e["Variant"] == names[of[rid]], e
    # Sent and delivered count them now (3 pushes each, all acked).
    per = [sum(1 for p in pick if of[p.rid] == i) for i in (0, 1)]
    report = expected_report(aid, names, [(2 * full[i] + part[i], 3 * per[i], 3 * per[i], 0) for i in (0, 1)],
                             2 * full[2] + part[2])
    lab.wait_report(aid, report)


# === 5. Content ==================================================================================

def test_each_device_gets_its_variants_content_and_control_nothing(lab):
    tag = "abc_" + uid()
    names, weights = ["NotifOnly", "MsgOnly", "Both"], [30, 30, 30]
    variants = [
        {"name": "NotifOnly", "weight": 30, "notification": {"alert": "na-alert", "android": {"title": "na-title"}}},
        {"name": "MsgOnly", "weight": 30, "message": {"msg_content": "nb-msg", "title": "nb-mtitle"}},
        {"name": "Both", "weight": 30, "notification": {"alert": "nc-alert"}, "message": {"msg_content": "nc-msg"}}]
    aid = lab.abtest({"name": "content", "audience": {"tag": [tag]}, "variants": variants, "control_weight": 10})
    # Android and iOS devices, at least two of each in every variant; two in control.
    groups = plan(lab, aid, weights, [tag], platforms=("android", "ios"),
                  enough=lambda g: all(sum(p.platform == pf for p in x) >= 2 for x in g[:3] for pf in ("android", "ios"))
                  and len(g[3]) >= 2)
    phones = [p for g in groups for p in g]
    for p in phones:
        p.connect()
    of = {p.rid: variant_of(aid, weights, p.rid) for p in phones}

    m1 = lab.push({"abtest": [aid]}, notification={"alert": "body-alert"}, message={"msg_content": "body-msg"},
                  options={"time_to_live": 600})
    m2 = lab.push({"abtest": [aid]}, notification={"alert": "body2"})
    m3 = lab.push({"abtest": [aid]}, platform=["ios"], notification={"alert": "ios-body"})
    for p in phones:
        if of[p.rid] is not None:
            p.take(3 if p.platform == "ios" else 2)
    settle_all(phones)
    for p in groups[3]:
        assert p.got == [], p.got
    for p in phones:
        v = of[p.rid]
        if v is None:
            continue
        assert p.ids() == ([m1, m2, m3] if p.platform == "ios" else [m1, m2]), (p.rid, p.platform, p.ids())
        f1, f2 = p.got[:2]
        for f in p.got:
            assert set(f) <= FRAME_KEYS, f  # the frame does not say which variant
            text = json.dumps(f)
            assert all(n not in text for n in names) and "variant" not in text.lower(), f
        assert f1["expires_ms"] - f1["sent_ms"] == 600_000
        if v == 0:  # its notification (its android section on android only), the body's message
            title = "na-title" if p.platform == "android" else None
            assert (f1["notification"]["alert"], f1["notification"].get("title")) == ("na-alert", title), f1
            assert f1["message"]["msg_content"] == "body-msg", f1
            assert f2["notification"]["alert"] == "na-alert" and "message" not in f2, f2
        elif v == 1:  # the body's notification, its message
            assert f1["notification"]["alert"] == "body-alert" and f1["notification"].get("title") != "na-title", f1
            assert (f1["message"]["msg_content"], f1["message"].get("title")) == ("nb-msg", "nb-mtitle"), f1
            assert f2["notification"]["alert"] == "body2" and f2["message"]["msg_content"] == "nb-msg", f2
        else:
            for f in (f1, f2):
                assert f["notification"]["alert"] == "nc-alert" and f["message"]["msg_content"] == "nc-msg", f
        if p.platform == "ios":
            f3 = p.got[2]
            assert f3["notification"]["alert"] == ("na-alert", "ios-body", "nc-alert")[v], f3
            assert f3.get("message", {}).get("msg_content") == (None, "nb-msg", "nc-msg")[v], f3
    # The split Push.Accepted counted: control left out.
    targeted = sum(1 for p in phones if of[p.rid] is not None)
    ios = sum(1 for p in phones if of[p.rid] is not None and p.platform == "ios")
    for m, count in ((m1, targeted), (m2, targeted), (m3, ios)):
        e = lab.accepted(m)
        assert (e["AudienceType"], e["TargetCount"]) == ("abtest", count), e


def test_an_abtest_with_a_segment_and_other_keys(lab):
    tag, vip = "abs_" + uid(), "absvip_" + uid()
    weights = [50, 40]
    aid = lab.abtest({"name": "with segment", "audience": {"tag": [tag]}, "control_weight": 10,
                      "variants": [{"name": "S1", "weight": 50, "notification": {"alert": "s1"}},
                                   {"name": "S2", "weight": 40, "notification": {"alert": "s2"}}]})
    groups = plan(lab, aid, weights, [tag], lambda g: len(g[0]) >= 4 and len(g[1]) >= 4 and len(g[2]) >= 2)
    # Half of each group is vip; a vip device outside the test's audience too.
    vips = set()
    for g in groups:
        for p in g[::2]:
            assert lab.api("POST", f"/v3/devices/{p.rid}", {"tags": {"add": [vip]}}).status_code == 200
            vips.add(p.rid)
    outsider = lab.phone(tags=[vip])
    phones = [p for g in groups for p in g] + [outsider]
    for p in phones:
        p.connect()
    sid = lab.segment("vips", {"tag": [vip]})
    here = [p.rid for p in phones]

    m1 = lab.push({"segment": [sid], "abtest": [aid]}, notification={"alert": "body"})
    m2 = lab.push({"tag_and": [vip], "segment": [sid], "abtest": [aid], "registration_id": here},
                  notification={"alert": "body"})
    reached = [p for g in groups[:2] for p in g if p.rid in vips]
    for p in reached:
        p.take(2)
    settle_all(phones)
    for p in phones:
        v = variant_of(aid, weights, p.rid)
        if p in reached:
            assert p.ids() == [m1, m2] and [f["notification"]["alert"] for f in p.got] == [f"s{v + 1}"] * 2, p.got
        else:
            assert p.got == [], (p.rid, p.got)
    e1, e2 = lab.accepted(m1), lab.accepted(m2)
    assert (e1["AudienceType"], e1["TargetCount"]) == ("segment+abtest", len(reached)), e1
    assert (e2["AudienceType"], e2["TargetCount"]) == ("tag_and+registration_id+segment+abtest", len(reached)), e2

    # Refusals: two tests, an unknown one, nobody left, a body that is not a valid push.
    other = lab.abtest(two_variants(audience={"tag": [tag]}))
    error_of(lab.push_raw({"abtest": [aid, other]}), 400, 1003, AB_WORDS)
    error_of(lab.push_raw({"abtest": ["nosuchtest0000"]}), 400, 1003, AB_WORDS)
    error_of(lab.push_raw({"abtest": [aid], "segment": ["nosuchsegment0000"]}), 400, 1003, ("segment",))
    error_of(lab.push_raw({"abtest": [aid], "registration_id": [outsider.rid]}), 400, 1011)
    error_of(lab.push_raw({"abtest": [aid]}, platform=["ios"]), 400, 1011)
    nobody = lab.abtest(two_variants(audience={"tag": ["nobody_" + uid()]}))
    error_of(lab.push_raw({"abtest": [nobody]}), 400, 1011)
    error_of(lab.push_raw({"abtest": [aid]}, options={"time_to_live": 60}), 400, 1002)
    settle_all(phones)
    assert sum(len(p.got) for p in phones) == 2 * len(reached)


# === 6. Callbacks ================================================================================

def test_callbacks_carry_the_variant(lab):
    tag = "abcb_" + uid()
    names, weights = ["Red", "Blue"], [50, 30]
    aid = lab.abtest({"name": "callbacks", "audience": {"tag": [tag]}, "control_weight": 20,
                      "variants": [{"name": "Red", "weight": 50, "notification": {"alert": "red"}},
                                   {"name": "Blue", "weight": 30, "notification": {"alert": "blue"}}]})
    # Per group (Red, Blue, control): two devices online, the others (two at least) offline.
    groups = plan(lab, aid, weights, [tag], lambda g: all(len(x) >= 4 for x in g))
    online = [p for g in groups for p in g[:2]]
    offline = [p for g in groups for p in g[2:]]
    for p in online:
        p.connect()
    of = {p.rid: variant_of(aid, weights, p.rid) for g in groups for p in g}
    name = lambda rid: names[of[rid]]  # noqa: E731
    in_test = [p for p in online + offline if of[p.rid] is not None]
    everyone = online + offline

    plain = lab.push({"tag": [tag]}, notification={"alert": "plain"})
    split = lab.push({"abtest": [aid]}, notification={"alert": "body"})
    short = lab.push({"abtest": [aid]}, notification={"alert": "short"}, options={"time_to_live": 1})
    for p in online:
        p.take(1 if of[p.rid] is None else 3)
    clickers = [groups[0][0], groups[1][0]]
    for p in clickers:
        p.click(split)
    groups[2][0].click(plain)  # a control device clicks the ordinary push
    groups[0][1].click(plain)
    settle_all(online)
    for p in online:
        assert p.ids() == ([plain] if of[p.rid] is None else [plain, split, short]), (p.rid, p.ids())
    # Recalled: the offline devices' copies are reported undelivered (ErrCode 2).
    for m in (plain, split):
        r = lab.api("DELETE", f"/v3/push/{m}")
        assert r.status_code == 200 and r.json() == {}, r.text

    def stages(msg_id):
        return {(e["RegistrationId"], e["PushStage"]) for e in lab.rcv.get("Push.Event", MsgId=msg_id)}

    want_split = {(p.rid, s) for p in online if of[p.rid] is not None for s in (1, 2)} | \
        {(p.rid, 3) for p in clickers}
    want_plain = {(p.rid, s) for p in online for s in (1, 2)} | {(groups[2][0].rid, 3), (groups[0][1].rid, 3)}
    want_short = {(p.rid, s) for p in online if of[p.rid] is not None for s in (1, 2)}
    undelivered = lambda m: {e["RegistrationId"] for e in lab.rcv.get("Push.Undelivered", MsgId=m)}  # noqa: E731
    offline_in_test = {p.rid for p in offline if of[p.rid] is not None}
    assert lab.rcv.wait(lambda: stages(split) >= want_split and stages(plain) >= want_plain
                        and stages(short) >= want_short and undelivered(plain) >= {p.rid for p in offline}
                        and undelivered(split) >= offline_in_test and undelivered(short) >= offline_in_test,
                        limit=10)
    time.sleep(0.5)  # anything extra arrives meanwhile
    assert stages(split) == want_split and stages(plain) == want_plain and stages(short) == want_short
    assert undelivered(plain) == {p.rid for p in offline}
    assert undelivered(split) == offline_in_test and undelivered(short) == offline_in_test

    for m in (split, short):
        for e in lab.rcv.get("Push.Event", MsgId=m):
            assert e["Variant"] == name(e["RegistrationId"]), e
            assert e["PushID"] == m and e["PushPlatform"] == 10 and e["ErrCode"] == 0 and e["Platform"] == "android", e
    for m, code in ((split, 2), (short, 1)):
        for e in lab.rcv.get("Push.Undelivered", MsgId=m):
            assert e["Variant"] == name(e["RegistrationId"]) and e["ErrCode"] == code, e
            assert "PushStage" not in e, e
    # An ordinary push's events have no Variant, also for devices that are in the test.
    for e in lab.rcv.get("Push.Event", MsgId=plain) + lab.rcv.get("Push.Undelivered", MsgId=plain):
        assert "Variant" not in e, e
    for m, kind, count in ((plain, "tag", len(everyone)), (split, "abtest", len(in_test)),
                           (short, "abtest", len(in_test))):
        e = lab.accepted(m)
        assert (e["AudienceType"], e["TargetCount"]) == (kind, count), e
        assert "Variant" not in e, e


# === 7. The report ===============================================================================

def test_the_report_counts_what_the_devices_did(lab):
    tag = "abrep_" + uid()
    names, weights = ["R1", "R2", "R3"], [30, 30, 30]
    aid = lab.abtest({"name": "report", "audience": {"tag": [tag]}, "control_weight": 10,
                      "variants": [{"name": n, "weight": 30, "notification": {"alert": n.lower()}} for n in names]})
    # Per variant: one device offline, one that never acks, at least five that ack; control: 2.
    groups = plan(lab, aid, weights, [tag], lambda g: all(len(x) >= 7 for x in g[:3]) and len(g[3]) >= 2)
    offline = [g[0] for g in groups[:3]]
    silent = [g[1] for g in groups[:3]]
    ackers = [g[2:] for g in groups[:3]]
    control = groups[3]
    for p in silent:
        p.connect(acks=False)
    for g in ackers:
        for p in g:
            p.connect()
    for p in control:
        p.connect()

    q1 = lab.push({"abtest": [aid]}, notification={"alert": "body"})
    for p in silent + [p for g in ackers for p in g]:
        p.take(1)
    # Clicks: R1 ~80 % of its delivered devices, R2 ~25 %, R3 ~50 % (R1 > R3 > R2 with ≥ 5 each).
    clicked = []
    for g, share in zip(ackers, (0.8, 0.25, 0.5)):
        n = math.ceil(share * len(g))
        for p in g[:n]:
            p.click(q1)
        clicked.append(n)
    # A click on a push it never got is refused, and counts for nothing.
    answer = control[0].op({"op": "click", "msg_id": q1})
    assert answer["op"] == "error" and answer["code"] == 1003, answer

    targeted = [len(g) for g in groups[:3]]
    first = [(targeted[i], 1 + len(ackers[i]), len(ackers[i]), clicked[i]) for i in range(3)]
    want = expected_report(aid, names, first, len(control))
    assert want["leader"] == "R1"
    got = lab.wait_report(aid, want)
    print("report after one push:", json.dumps(got))

    # A second push to a part of the audience: everyone acks, nobody clicks; it all adds up.
    part = [offline[1], silent[2]] + ackers[0][:3] + ackers[1] + [control[0]]
    q2 = lab.push({"abtest": [aid], "registration_id": [p.rid for p in part]}, notification={"alert": "again"})
    for p in [silent[2]] + ackers[0][:3] + ackers[1]:
        p.take(2)
    second = [(3, 3, 3, 0), (1 + len(ackers[1]), len(ackers[1]), len(ackers[1]), 0), (1, 1, 0, 0)]
    want = expected_report(aid, names, [tuple(a + b for a, b in zip(x, y)) for x, y in zip(first, second)],
                           len(control) + 1)
    got = lab.wait_report(aid, want)
    print("report after two pushes:", json.dumps(got))
    settle_all(silent + [p for g in ackers for p in g] + control)
    for p in silent + [p for g in ackers for p in g] + control:
        want_ids = [] if p in control else [q1] + ([q2] if p in part else [])
        assert p.ids() == want_ids, (p.rid, p.ids())


def test_the_report_before_anything_is_delivered(lab):
    tag = "abnull_" + uid()
    names, weights = ["First", "Second"], [60, 40]
    aid = lab.abtest({"name": "nulls", "audience": {"tag": [tag]},
                      "variants": [{"name": "First", "weight": 60, "notification": {"alert": "1"}},
                                   {"name": "Second", "weight": 40, "notification": {"alert": "2"}}]})
    # Before any push: every count 0, no leader, no p.
    lab.wait_report(aid, expected_report(aid, names, [(0, 0, 0, 0)] * 2, 0))
    groups = plan(lab, aid, weights, [tag], lambda g: len(g[0]) >= 3 and len(g[1]) >= 3)
    assert groups[2] == []  # no control group
    n1, n2 = len(groups[0]), len(groups[1])
    m = lab.push({"abtest": [aid]}, notification={"alert": "body"})
    # Everyone offline: targeted, nothing sent, no leader, no p; click_rate a number (0).
    got = lab.wait_report(aid, expected_report(aid, names, [(n1, 0, 0, 0), (n2, 0, 0, 0)], 0))
    for v in got["variants"]:
        assert isinstance(v["click_rate"], (int, float)) and not isinstance(v["click_rate"], bool), v
    assert got["leader"] is None and got["p_value"] is None and "p_value" in got and "leader" in got
    # The first variant's devices come online and ack: a leader, still no p (the runner-up has
    # nothing delivered).
    for p in groups[0]:
        p.connect()
        p.take(1)
    groups[0][0].click(m)
    want = expected_report(aid, names, [(n1, n1, n1, 1), (n2, 0, 0, 0)], 0)
    assert want["leader"] == "First" and want["p_value"] is None
    lab.wait_report(aid, want)
    # One of the second variant's too: now a p.
    groups[1][0].connect()
    groups[1][0].take(1)
    want = expected_report(aid, names, [(n1, n1, n1, 1), (n2, 1, 1, 0)], 0)
    assert want["p_value"] is not None
    lab.wait_report(aid, want)


# === 8. A deleted test ===========================================================================

def test_a_deleted_abtest_is_gone(lab):
    tag = "abdel_" + uid()
    aid = lab.abtest(two_variants(audience={"tag": [tag]}))
    groups = plan(lab, aid, [45, 45], [tag], lambda g: len(g[0]) + len(g[1]) >= 1)  # one not in control
    p = (groups[0] + groups[1])[0]
    lab.push({"abtest": [aid]})
    assert lab.report(aid)["abtest_id"] == aid
    assert lab.api("DELETE", f"/v3/abtests/{aid}").status_code == 200
    error_of(lab.api("GET", f"/v3/abtests/{aid}/report"), 404, 1003)
    error_of(lab.api("GET", f"/v3/abtests/{aid}"), 404, 1003)
    error_of(lab.api("DELETE", f"/v3/abtests/{aid}"), 404, 1003)
    error_of(lab.push_raw({"abtest": [aid]}), 400, 1003, AB_WORDS)
    error_of(lab.push_raw({"abtest": [aid], "registration_id": [p.rid]}), 400, 1003, AB_WORDS)
    assert aid not in [t["abtest_id"] for t in lab.api("GET", "/v3/abtests").json()["abtests"]]
    # Still gone after a restart.
    lab.restart()
    error_of(lab.api("GET", f"/v3/abtests/{aid}/report"), 404, 1003)
    error_of(lab.push_raw({"abtest": [aid]}), 400, 1003, AB_WORDS)
