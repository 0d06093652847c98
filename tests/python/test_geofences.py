"""Geofences (geofences.md) end to end: the real `pigeon` binary, devices reporting their
position over real WebSockets (device-protocol.md §4 `location`), and a real HTTP receiver
of the `Geofence.Event` and `Push.Event` callbacks (callbacks.md).

Time: most servers here run with `PIGEON_GEOFENCE_SECOND_MS=50`, so one second of `stay_s` or
`cooldown_s` lasts 50 ms (`stay_s: 60` fires after 3 s, within about 1 s after it is due).
One scenario runs on the real clock (`stay_s: 60`, nothing at 55 s, the Stay by ~62 s): it
starts in the background when the module starts, on a server of its own, and its last test
checks what it saw, so the minute it takes overlaps the other tests.

Every distance is computed here, independently of Pigeon: haversine on a sphere of radius
6,371,008.8 m, and the destination point at a bearing and a distance."""

import itertools
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from websockets.sync.client import connect

from conftest import Device, Server

R = 6371008.8
SECOND_MS = 50  # one second of stay_s / cooldown_s on the test servers
STAY60 = 60 * SECOND_MS / 1000  # wall seconds of stay_s 60 on them
LATE = 1.6  # a stay fires within ~1 s of being due; plus the batch wait and the HTTP hop
QUIET = 0.8  # after an `ok`, an event is in the outbox: the receiver has it within this
FAST = {"PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS": "true", "PIGEON_CALLBACKS_BATCH_WAIT_MS": "100",
        "PIGEON_CALLBACKS_RETRY_FIRST_MS": "20"}
KNOB = dict(FAST, PIGEON_GEOFENCE_SECOND_MS=str(SECOND_MS))


# --- geometry -------------------------------------------------------------------------------

def haversine(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R * math.asin(min(1.0, math.sqrt(a)))


def destination(lat, lon, bearing_deg, dist_m):
    """The point `dist_m` metres from (lat, lon) at `bearing_deg` (clockwise from north)."""
    p1, l1, t = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    d = dist_m / R
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(t))
    l2 = l1 + math.atan2(math.sin(t) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    lon2 = (math.degrees(l2) + 540) % 360 - 180
    return math.degrees(p2), lon2


_spots = itertools.count()


def spot():
    """A centre of its own for each fence group, far from every other one (and from the poles
    and the antimeridian), so that no test's devices wander into another test's fences."""
    k = next(_spots)
    return round(-50 + (k % 20) * 5 + 0.1234, 6), round(-150 + (k // 20) * 20 + (k % 7) * 2 + 0.4321, 6)


# --- the callback receiver ------------------------------------------------------------------

class Receiver:
    """A real HTTP callback receiver: answers OK, keeps each event once (by EventId, as
    callbacks.md §4 asks receivers to dedupe) with the time it first arrived."""

    def __init__(self):
        self.events = []  # (arrival time, event)
        self.seen = set()
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.time()
                with receiver.lock:
                    receiver.requests += 1
                    for e in json.loads(body)["Events"]:
                        if e["EventId"] not in receiver.seen:
                            receiver.seen.add(e["EventId"])
                            receiver.events.append((now, e))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}')

            def log_message(self, *args):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def timed(self, command="Geofence.Event", **match):
        with self.lock:
            return [(t, e) for t, e in self.events if e["CallbackCommand"] == command
                    and all(e.get(k) == v for k, v in match.items())]

    def get(self, command="Geofence.Event", **match):
        return [e for _, e in self.timed(command, **match)]

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


# --- devices --------------------------------------------------------------------------------

class Walker(Device):
    """A device (conftest's, written from the protocol text) that reports where it is, with a
    `seq` on every op so that it knows when the server has evaluated it. Pushes arriving
    meanwhile are acked and kept in `got`."""

    def __init__(self, server, app_key, **kw):
        super().__init__(server, app_key, **kw)
        self.server = server
        self.seq = 0
        self.got = []
        self.other = []
        self.alias = kw.get("alias")

    def _frame(self, timeout):
        frame = json.loads(self.ws.recv(timeout=timeout))
        if frame.get("op") == "push":
            self.got.append(frame)
            self.ws.send(json.dumps({"op": "ack", "msg_ids": [frame["msg_id"]]}))
        elif frame.get("op") not in ("ok", "error"):
            self.other.append(frame)
        return frame

    def op(self, frame, limit=5.0):
        """Sends `frame` with the next seq; returns the server's ok/error answer to it."""
        self.seq += 1
        seq = self.seq
        self.ws.send(json.dumps({**frame, "seq": seq}))
        deadline = time.time() + limit
        while True:
            left = deadline - time.time()
            assert left > 0, f"no answer to {frame} (seq {seq})"
            answer = self._frame(left)
            if answer.get("op") in ("ok", "error") and answer.get("seq") == seq:
                return answer

    def at(self, lat, lon):
        """Reports (lat, lon); returns the time just before sending it (the entry time the
        server records is not earlier)."""
        sent = time.time()
        answer = self.op({"op": "location", "lat": lat, "lon": lon, "accuracy_m": 5})
        assert answer["op"] == "ok" and answer["seq"] == self.seq, answer
        return sent

    def tags(self, tags):
        answer = self.op({"op": "set_tags", "tags": tags})
        assert answer["op"] == "ok", answer

    def pushes(self, expect, quiet=0.4, limit=5.0):
        """Waits until `expect` pushes arrived in all, then `quiet` s more; returns them all."""
        deadline = time.time() + limit
        while time.time() < deadline:
            wait = quiet if len(self.got) >= expect else max(0.05, deadline - time.time())
            try:
                self._frame(wait)
            except TimeoutError:
                if len(self.got) >= expect:
                    break
        return list(self.got)

    def drain(self):
        """Reads what is already there (acks pushes)."""
        try:
            while True:
                self._frame(0.05)
        except TimeoutError:
            pass

    def reconnect(self):
        try:
            self.ws.close()
        except Exception:
            pass
        self.ws = connect(self.server.base.replace("http://", "ws://") + "/v1/connect")
        self.ws.send(json.dumps({"op": "hello", "registration_id": self.registration_id,
                                 "device_secret": self.secret, "sdk": "pytest/1"}))
        welcome = json.loads(self.ws.recv(timeout=5))
        assert welcome["op"] == "welcome", welcome
        self.welcome = welcome
        return welcome


# --- one server with an app and a receiver --------------------------------------------------

class Geo:
    def __init__(self, server, app, rcv):
        self.server, self.app, self.rcv = server, app, rcv
        self.devices = []

    @property
    def auth(self):
        return (self.app["app_key"], self.app["master_secret"])

    def api(self, method, path, body=None, auth=None, data=None):
        if data is None and body is not None:
            data = json.dumps(body)
        return requests.request(method, self.server.base + path, data=data, timeout=10,
                                auth=self.auth if auth is None else auth)

    def create(self, **fields):
        body = {"name": "fence", "radius_m": 300, "events": ["enter", "leave"], **fields}
        r = self.api("POST", "/v3/geofences", body)
        assert r.status_code == 200, r.text
        fid = r.json()["geofence_id"]
        assert isinstance(fid, str) and fid
        return fid

    def device(self, **kw):
        d = Walker(self.server, self.app["app_key"], **kw)
        self.devices.append(d)
        return d

    def events(self, fence, device=None):
        match = {"GeofenceId": fence}
        if device is not None:
            match["RegistrationId"] = device.registration_id
        return self.rcv.get(**match)

    def actions(self, fence, device=None):
        return [e["Action"] for e in self.events(fence, device)]

    def wait_actions(self, fence, want, device=None, limit=6.0):
        """Waits until the fence's actions (for the device) are `want`, then QUIET s more so
        that an extra one is seen too; returns them."""
        self.rcv.wait(lambda: len(self.actions(fence, device)) >= len(want), limit)
        time.sleep(QUIET)
        return self.actions(fence, device)

    def close(self):
        for d in self.devices:
            try:
                d.close()
            except Exception:
                pass


def add_receiver(server, app, rcv):
    r = requests.post(server.base + "/v3/callbacks", auth=(app["app_key"], app["master_secret"]), timeout=5,
                      data=json.dumps({"url": rcv.url, "commands": ["Geofence.Event", "Push.Event"],
                                       "basic_auth": False}))
    assert r.status_code == 200, r.text


def start_geo(env, data, name):
    server = Server(data, env=env)
    server.start()
    rcv = Receiver()
    app = server.create_app(name)
    add_receiver(server, app, rcv)
    return Geo(server, app, rcv)


def settle():
    time.sleep(1.2)  # a running server picks a new callback endpoint up within a second


@pytest.fixture(scope="module")
def geo():
    tmp = tempfile.mkdtemp(prefix="pigeon-geo.")
    g = start_geo(KNOB, os.path.join(tmp, "data"), "geo")
    settle()
    yield g
    g.close()
    g.rcv.close()
    g.server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def check_event(e, fence, name, device, action, lat, lon, msg_id=None):
    assert e["CallbackCommand"] == "Geofence.Event", e
    assert isinstance(e["EventId"], str) and e["EventId"], e
    assert isinstance(e["EventTime"], int) and abs(e["EventTime"] - time.time()) < 120, e
    assert e["GeofenceId"] == fence and e["GeofenceName"] == name, e
    assert e["RegistrationId"] == device.registration_id, e
    assert e["To_Account"] == (device.alias or ""), e
    assert e["Platform"] == device.platform, e
    assert e["Action"] == action, e
    # Within 1e-9 degrees (0.1 mm) here; that they are the very numbers reported is asserted
    # on its own in test_event_lat_lon_are_the_reported_numbers, so that a rounding does not
    # hide what the other tests check.
    assert isinstance(e["Lat"], float) and isinstance(e["Lon"], float), e
    assert abs(e["Lat"] - lat) <= 1e-9 and abs(e["Lon"] - lon) <= 1e-9, (e, lat, lon)
    if msg_id is None:
        assert not e.get("MsgId"), e
    else:
        assert e["MsgId"] == msg_id and isinstance(msg_id, str), e


# --- the real-clock scenario, in the background ---------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def real_clock():
    """On a server with the default second: a `stay_s: 60` fence, a device reports inside at
    t0 and says nothing more about where it is; what arrives at 55 s and by ~62 s is noted."""
    seen = {"error": None}
    stop = threading.Event()
    tmp = tempfile.mkdtemp(prefix="pigeon-geo-clock.")
    parts = {}

    def run():
        try:
            g = parts["geo"] = start_geo(FAST, os.path.join(tmp, "data"), "clock")
            settle()
            lat, lon = 47.3769, 8.5417
            fence = g.create(name="clock", lat=lat, lon=lon, radius_m=100, events=["stay"], stay_s=60)
            d = g.device(alias="clock_dev")
            seen["fence"], seen["device"] = fence, d
            seen["point"] = destination(lat, lon, 10, 40)
            sent = d.at(*seen["point"])
            seen["sent"], seen["ok"] = sent, time.time()
            next_ping = time.time() + 10
            while time.time() < sent + 55 and not stop.is_set():
                if time.time() > next_ping:  # keep the connection alive (§5)
                    d.ws.send(json.dumps({"op": "ping"}))
                    d.drain()
                    next_ping = time.time() + 10
                time.sleep(0.1)
            seen["at_55"] = g.rcv.timed(GeofenceId=fence)
            seen["at_55_time"] = time.time() - sent
            while time.time() < sent + 64.5 and not stop.is_set():
                time.sleep(0.1)
            seen["stays"] = g.rcv.timed(GeofenceId=fence)
        except Exception:
            seen["error"] = traceback.format_exc()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    seen["thread"] = thread
    yield seen
    stop.set()
    thread.join(90)
    g = parts.get("geo")
    if g:
        g.close()
        g.rcv.close()
        g.server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


# === 1. The fence API ========================================================================

def full_body(**over):
    now = int(time.time() * 1000)
    body = {"name": "Mall Gate 3", "lat": 31.2304, "lon": 121.4737, "radius_m": 250,
            "events": ["enter", "leave", "stay"], "stay_s": 600,
            "audience": {"tag": ["vip", "beijing"], "tag_not": ["muted"]},
            "push": {"notification": {"alert": "Welcome!", "android": {"title": "Mall"}},
                     "message": {"msg_content": "hello inside"}, "options": {"time_to_live": 3600}},
            "repeat": False, "cooldown_s": 3600, "start_ms": now - 60_000, "end_ms": now + 86_400_000}
    body.update(over)
    return body


def test_create_list_get_put_delete_round_trip(geo):
    before = int(time.time() * 1000)
    body = full_body()
    fid = geo.create(**body)
    minimal = {"name": "bare", "lat": -33.8688, "lon": 151.2093, "radius_m": 50, "events": ["enter"]}
    bare = geo.create(**minimal)
    after = int(time.time() * 1000)
    assert fid != bare

    r = geo.api("GET", f"/v3/geofences/{fid}")
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["geofence_id"] == fid
    assert {k: got.get(k) for k in body} == body
    assert isinstance(got["created_ms"], int) and before - 1000 <= got["created_ms"] <= after + 1000

    got_bare = geo.api("GET", f"/v3/geofences/{bare}").json()
    assert {k: got_bare.get(k) for k in minimal} == minimal
    assert (got_bare["repeat"], got_bare["cooldown_s"], got_bare["audience"]) == (True, 0, "all")
    assert got_bare["geofence_id"] == bare and isinstance(got_bare["created_ms"], int)
    for absent in ("stay_s", "push", "start_ms", "end_ms"):
        assert got_bare.get(absent) is None, (absent, got_bare)

    r = geo.api("GET", "/v3/geofences")
    assert r.status_code == 200, r.text
    listed = {f["geofence_id"]: f for f in r.json()["geofences"]}
    assert listed[fid] == got and listed[bare] == got_bare

    # PUT replaces the whole fence (fields left out go back to their defaults).
    new = {"name": "Mall Gate 4", "lat": 31.24, "lon": 121.48, "radius_m": 400, "events": ["leave"],
           "audience": {"alias": ["bob"]}}
    r = geo.api("PUT", f"/v3/geofences/{fid}", new)
    assert r.status_code == 200, r.text
    got = geo.api("GET", f"/v3/geofences/{fid}").json()
    assert {k: got.get(k) for k in new} == new and got["geofence_id"] == fid
    assert (got["repeat"], got["cooldown_s"]) == (True, 0)
    for absent in ("stay_s", "push", "start_ms", "end_ms"):
        assert got.get(absent) is None, (absent, got)
    # A bad PUT changes nothing.
    r = geo.api("PUT", f"/v3/geofences/{fid}", dict(new, lat=95))
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003 and "lat" in r.json()["error"]["message"], r.text
    assert geo.api("GET", f"/v3/geofences/{fid}").json() == got

    r = geo.api("DELETE", f"/v3/geofences/{fid}")
    assert r.status_code == 200 and r.json() == {}, r.text
    for method, body in (("GET", None), ("PUT", new), ("DELETE", None)):
        r = geo.api(method, f"/v3/geofences/{fid}", body)
        assert r.status_code == 404 and r.json()["error"]["code"] == 1003, (method, r.status_code, r.text)
    ids = [f["geofence_id"] for f in geo.api("GET", "/v3/geofences").json()["geofences"]]
    assert fid not in ids and bare in ids
    geo.api("DELETE", f"/v3/geofences/{bare}")


def test_values_at_the_limits_are_accepted(geo):
    for over in [{"name": "é" * 32}, {"name": "n" * 64}, {"radius_m": 50}, {"radius_m": 100000},
                 {"lat": 90, "lon": 180}, {"lat": -90, "lon": -180}, {"lat": 0.0, "lon": -0.0},
                 {"events": ["stay"], "stay_s": 60}, {"events": ["stay", "enter"], "stay_s": 86400},
                 {"cooldown_s": 0}, {"cooldown_s": 86400}, {"audience": "all"},
                 {"audience": {"registration_id": ["abc123"]}}, {"start_ms": 1, "end_ms": 1},
                 {"push": {"message": {"msg_content": "only a message"}}}]:
        body = {"name": "ok", "lat": 10.5, "lon": 20.5, "radius_m": 300, "events": ["enter"], **over}
        r = geo.api("POST", "/v3/geofences", body)
        assert r.status_code == 200, (over, r.text)
        fid = r.json()["geofence_id"]
        got = geo.api("GET", f"/v3/geofences/{fid}").json()
        assert {k: got.get(k) for k in body} == body, (over, got)
        assert geo.api("DELETE", f"/v3/geofences/{fid}").status_code == 200


def _without(key):
    return lambda b: {k: v for k, v in b.items() if k != key}


def _with(**over):
    return lambda b: {**b, **over}


NOW_MS = int(time.time() * 1000)
BAD = [
    ("missing name", _without("name"), 1002, ("name",)),
    ("missing lat", _without("lat"), 1002, ("lat",)),
    ("missing lon", _without("lon"), 1002, ("lon",)),
    ("missing radius_m", _without("radius_m"), 1002, ("radius_m",)),
    ("missing events", _without("events"), 1002, ("events",)),
    ("name empty", _with(name=""), 1003, ("name",)),
    ("name 65 bytes", _with(name="n" * 65), 1003, ("name",)),
    ("name 66 bytes in 33 chars", _with(name="é" * 33), 1003, ("name",)),
    ("name a number", _with(name=5), 1003, ("name",)),
    ("lat 90.0001", _with(lat=90.0001), 1003, ("lat",)),
    ("lat -90.0001", _with(lat=-90.0001), 1003, ("lat",)),
    ("lon -180.5", _with(lon=-180.5), 1003, ("lon",)),
    ("lon 180.0001", _with(lon=180.0001), 1003, ("lon",)),
    ("lat a string of digits", _with(lat="31"), 1003, ("lat",)),
    ("lon a word", _with(lon="east"), 1003, ("lon",)),
    ("lat 'NaN'", _with(lat="NaN"), 1003, ("lat",)),
    ("lon 'Infinity'", _with(lon="Infinity"), 1003, ("lon",)),
    ("lat '-Infinity'", _with(lat="-Infinity"), 1003, ("lat",)),
    ("lat true", _with(lat=True), 1003, ("lat",)),
    ("lon an object", _with(lon={"deg": 1}), 1003, ("lon",)),
    ("radius_m 49", _with(radius_m=49), 1003, ("radius_m",)),
    ("radius_m 100001", _with(radius_m=100001), 1003, ("radius_m",)),
    ("radius_m -300", _with(radius_m=-300), 1003, ("radius_m",)),
    ("radius_m a string", _with(radius_m="300"), 1003, ("radius_m",)),
    ("events empty", _with(events=[]), 1003, ("events",)),
    ("events jump", _with(events=["jump"]), 1003, ("events",)),
    ("events enter and jump", _with(events=["enter", "jump"]), 1003, ("events",)),
    ("events a string", _with(events="enter"), 1003, ("events",)),
    ("stay without stay_s", _with(events=["enter", "stay"]), 1002, ("stay_s",)),
    ("stay_s 59", _with(events=["stay"], stay_s=59), 1003, ("stay_s",)),
    ("stay_s 86401", _with(events=["stay"], stay_s=86401), 1003, ("stay_s",)),
    ("stay_s a string", _with(events=["stay"], stay_s="60"), 1003, ("stay_s",)),
    ("cooldown_s -1", _with(cooldown_s=-1), 1003, ("cooldown_s",)),
    ("cooldown_s 86401", _with(cooldown_s=86401), 1003, ("cooldown_s",)),
    ("repeat a string", _with(repeat="yes"), 1003, ("repeat",)),
    ("start_ms after end_ms", _with(start_ms=NOW_MS + 2000, end_ms=NOW_MS + 1000), 1003, ("start_ms", "end_ms")),
    ("start_ms a string", _with(start_ms="soon"), 1003, ("start_ms",)),
    ("end_ms negative", _with(end_ms=-5), 1003, ("end_ms",)),
    ("audience tag empty", _with(audience={"tag": []}), 1003, ("audience", "tag")),
    ("audience unknown key", _with(audience={"colour": ["red"]}), 1003, ("audience", "colour")),
    ("audience a word", _with(audience="everyone"), 1003, ("audience",)),
    ("audience alias empty string", _with(audience={"alias": [""]}), 1003, ("audience", "alias")),
    ("push notification priority 3", _with(push={"notification": {"alert": "x", "android": {"priority": 3}}}),
     1003, ("push", "notification", "priority")),
    ("push notification a string", _with(push={"notification": "hello"}), 1003, ("push", "notification")),
    ("push time_to_live 864001", _with(push={"notification": {"alert": "x"}, "options": {"time_to_live": 864001}}),
     1003, ("push", "time_to_live")),
    ("push a string", _with(push="hello"), 1003, ("push",)),
]


@pytest.mark.parametrize("case,change,code,words", BAD, ids=[c[0] for c in BAD])
def test_a_bad_fence_is_refused(geo, case, change, code, words):
    body = change({"name": "bad", "lat": 12.5, "lon": 34.5, "radius_m": 300, "events": ["enter"]})
    r = geo.api("POST", "/v3/geofences", body)
    assert r.status_code == 400, (case, r.status_code, r.text)
    err = r.json()["error"]
    assert err["code"] == code and any(w in err["message"] for w in words), (case, err)


def test_bodies_that_are_not_a_fence_object(geo):
    before = len(geo.api("GET", "/v3/geofences").json()["geofences"])
    r = geo.api("POST", "/v3/geofences", data='{"name": "x", "lat": ')
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003, r.text
    r = geo.api("POST", "/v3/geofences", data="[1, 2]")
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003, r.text
    # An oversized body (2 MiB, of a name): refused as /v3/push refuses one, 400 with 1005
    # (the contract names no code for it).
    huge = json.dumps({"name": "x" * (2 << 20), "lat": 1, "lon": 1, "radius_m": 300, "events": ["enter"]})
    r = geo.api("POST", "/v3/geofences", data=huge)
    assert r.status_code == 400 and r.json()["error"]["code"] == 1005, (r.status_code, r.text[:200])
    assert len(geo.api("GET", "/v3/geofences").json()["geofences"]) == before


def test_authentication(geo):
    fid = geo.create(lat=1.5, lon=2.5)
    routes = [("POST", "/v3/geofences", full_body()), ("GET", "/v3/geofences", None),
              ("GET", f"/v3/geofences/{fid}", None), ("PUT", f"/v3/geofences/{fid}", full_body()),
              ("DELETE", f"/v3/geofences/{fid}", None)]
    for method, path, body in routes:
        r = requests.request(method, geo.server.base + path, timeout=5,
                             data=None if body is None else json.dumps(body))
        assert r.status_code == 401 and r.json()["error"]["code"] == 1004, (method, path, r.text)
        r = geo.api(method, path, body, auth=(geo.app["app_key"], "x" * 24))
        assert r.status_code == 401 and r.json()["error"]["code"] == 1004, (method, path, r.text)
    assert geo.api("GET", f"/v3/geofences/{fid}").json()["name"] == "fence"  # untouched


def test_unknown_ids_are_404(geo):
    for method, body in (("GET", None), ("PUT", full_body()), ("DELETE", None)):
        r = geo.api(method, "/v3/geofences/nosuchfence0000", body)
        assert r.status_code == 404 and r.json()["error"]["code"] == 1003, (method, r.text)


def test_the_per_app_limit():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(os.path.join(tmp, "data"), env=dict(KNOB, PIGEON_MAX_GEOFENCES_PER_APP="3"))
        server.start()
        try:
            a, b = server.create_app("limit-a"), server.create_app("limit-b")
            ga, gb = Geo(server, a, None), Geo(server, b, None)
            made = [ga.create(lat=5.0 + i, lon=5.0) for i in range(3)]
            r = ga.api("POST", "/v3/geofences", {"name": "4th", "lat": 9.0, "lon": 9.0, "radius_m": 300,
                                                 "events": ["enter"]})
            assert r.status_code == 400 and r.json()["error"]["code"] == 1012, r.text
            assert len(ga.api("GET", "/v3/geofences").json()["geofences"]) == 3
            # Another app has a limit of its own; a PUT is not a new fence.
            gb.create(lat=1.0, lon=1.0)
            r = ga.api("PUT", f"/v3/geofences/{made[0]}", {"name": "moved", "lat": 6.0, "lon": 6.0,
                                                            "radius_m": 300, "events": ["enter"]})
            assert r.status_code == 200, r.text
            # Deleting one makes room for one.
            assert ga.api("DELETE", f"/v3/geofences/{made[1]}").status_code == 200
            ga.create(lat=7.0, lon=7.0)
            r = ga.api("POST", "/v3/geofences", {"name": "5th", "lat": 9.0, "lon": 9.0, "radius_m": 300,
                                                 "events": ["enter"]})
            assert r.status_code == 400 and r.json()["error"]["code"] == 1012, r.text
        finally:
            server.stop()


# === 2. The location op ======================================================================

def test_bad_location_reports_are_refused_and_change_nothing(geo):
    lat, lon = spot()
    fid = geo.create(name="refusals", lat=lat, lon=lon, radius_m=200)
    d = geo.device()
    inside = destination(lat, lon, 45, 100)
    d.at(*inside)
    assert geo.wait_actions(fid, ["Enter"], d) == ["Enter"]
    bad = [{"lon": lon}, {"lat": lat}, {}, {"lat": "31", "lon": lon}, {"lat": lat, "lon": "121.4"},
           {"lat": 91, "lon": lon}, {"lat": -90.5, "lon": lon}, {"lat": lat, "lon": -181},
           {"lat": lat, "lon": 180.25}, {"lat": None, "lon": lon}, {"lat": lat, "lon": None},
           {"lat": "NaN", "lon": lon}, {"lat": lat, "lon": "Infinity"}, {"lat": True, "lon": lon},
           {"lat": [lat], "lon": lon}]
    for i, fields in enumerate(bad):
        answer = d.op({"op": "location", **fields})
        assert answer["op"] == "error" and answer["code"] == 1003 and answer["seq"] == d.seq, (fields, answer)
        if i % 4 == 3:  # and the connection keeps working
            d.at(*inside)
    time.sleep(QUIET)
    assert geo.actions(fid, d) == ["Enter"]  # none of them took it out of the fence
    # The connection is open and a good report still works.
    outside = destination(lat, lon, 45, 500)
    d.at(*outside)
    assert geo.wait_actions(fid, ["Enter", "Leave"], d) == ["Enter", "Leave"]
    check_event(geo.events(fid, d)[1], fid, "refusals", d, "Leave", *outside)


# === 3. When a fence fires: the rules at the edges ===========================================

def test_299_m_is_inside_and_301_m_outside(geo):
    lat, lon = 31.2304, 121.4737
    fid = geo.create(name="edge", lat=lat, lon=lon, radius_m=300)
    d = geo.device(alias="edge_walker")
    p299 = destination(lat, lon, 37, 299)
    p301 = destination(lat, lon, 37, 301)
    q299 = destination(lat, lon, 251, 299)
    assert abs(haversine(lat, lon, *p299) - 299) < 1e-6 and abs(haversine(lat, lon, *p301) - 301) < 1e-6
    d.at(*p301)  # first report, outside: nothing (a device with no report counts as outside)
    d.at(*p299)
    d.at(*q299)  # still inside: nothing
    d.at(*p301)
    d.at(*q299)
    got = geo.wait_actions(fid, ["Enter", "Leave", "Enter"], d)
    assert got == ["Enter", "Leave", "Enter"]
    e = geo.events(fid, d)
    check_event(e[0], fid, "edge", d, "Enter", *p299)
    check_event(e[1], fid, "edge", d, "Leave", *p301)
    check_event(e[2], fid, "edge", d, "Enter", *q299)


def test_event_lat_lon_are_the_reported_numbers(geo):
    """Lat and Lon of an event are those of the report (geofences.md §3): the very f64 the
    device sent (Python writes the shortest repr that reads back the same), not a neighbour
    of it, for Enter, Leave and Stay. (A fixed centre, off the grid of spot(), so that the
    numbers are the same on every run: with it, serde_json's parsing without float_roundtrip
    reads some of them as a neighbouring f64.)"""
    lat, lon = -49.8766, -148.5679
    fid = geo.create(name="exact", lat=lat, lon=lon, radius_m=300, events=["enter", "leave", "stay"], stay_s=60)
    d = geo.device()
    points = [destination(lat, lon, 37 * i, 299 if i % 2 == 0 else 301) for i in range(11)]
    want = []
    for i, p in enumerate(points):
        d.at(*p)
        want.append(("Enter" if i % 2 == 0 else "Leave", *p))
    want.append(("Stay", *points[-1]))
    assert geo.rcv.wait(lambda: "Stay" in geo.actions(fid, d), limit=STAY60 + LATE + 1)
    time.sleep(QUIET)
    got = [(e["Action"], e["Lat"], e["Lon"]) for e in geo.events(fid, d)]
    assert [g[0] for g in got] == [w[0] for w in want]
    wrong = [(g, w) for g, w in zip(got, want) if g != w]
    assert wrong == [], f"{len(wrong)} of {len(want)} events carry other numbers than reported: {wrong}"


def test_near_the_north_pole(geo):
    lat, lon, radius = 89.999, 0.0, 250
    fid = geo.create(name="pole", lat=lat, lon=lon, radius_m=radius)
    d = geo.device()
    across = (89.999, 180.0)  # over the pole: 2 × 0.001° ≈ 222 m away
    farther = (89.998, 180.0)  # 0.003° ≈ 334 m
    side = (89.999, 90.0)  # ≈ 157 m
    assert haversine(lat, lon, *across) <= radius < haversine(lat, lon, *farther)
    assert haversine(lat, lon, *side) <= radius
    d.at(*across)
    d.at(*farther)
    d.at(*side)
    got = geo.wait_actions(fid, ["Enter", "Leave", "Enter"], d)
    assert got == ["Enter", "Leave", "Enter"]
    e = geo.events(fid, d)
    check_event(e[0], fid, "pole", d, "Enter", *across)
    check_event(e[1], fid, "pole", d, "Leave", *farther)
    check_event(e[2], fid, "pole", d, "Enter", *side)


def test_across_the_antimeridian(geo):
    lat, lon = 0.0, 179.9995
    fid = geo.create(name="dateline", lat=lat, lon=lon, radius_m=300)
    d = geo.device()
    west = (0.0, -179.9995)  # ≈ 111 m east of the centre, across the line
    away = (0.0, -179.996)  # ≈ 500 m
    assert 110 < haversine(lat, lon, *west) < 112 and haversine(lat, lon, *away) > 300
    d.at(*west)
    d.at(*away)
    got = geo.wait_actions(fid, ["Enter", "Leave"], d)
    assert got == ["Enter", "Leave"]
    check_event(geo.events(fid, d)[0], fid, "dateline", d, "Enter", *west)
    # And the other way: a fence west of the line, a device east of it.
    fid2 = geo.create(name="dateline-w", lat=-0.0001, lon=-179.9999, radius_m=100)
    d2 = geo.device()
    east = (-0.0001, 179.9996)  # ≈ 56 m
    d2.at(*east)
    assert geo.wait_actions(fid2, ["Enter"], d2) == ["Enter"]


# === 3. When a fence fires: events, stay, repeat, cooldown, window, audience =================

def test_enter_and_leave_fire_only_when_asked_for(geo):
    lat, lon = spot()
    only_enter = geo.create(name="only-enter", lat=lat, lon=lon, events=["enter"])
    only_leave = geo.create(name="only-leave", lat=lat, lon=lon, events=["leave"])
    both = geo.create(name="both", lat=lat, lon=lon, events=["leave", "enter"])
    stay_only = geo.create(name="stay-only", lat=lat, lon=lon, events=["stay"], stay_s=3600)
    d = geo.device()
    inside, outside = destination(lat, lon, 0, 100), destination(lat, lon, 0, 1000)
    for p in (inside, outside, inside, outside):
        d.at(*p)
    assert geo.wait_actions(both, ["Enter", "Leave", "Enter", "Leave"], d) == ["Enter", "Leave", "Enter", "Leave"]
    assert geo.actions(only_enter, d) == ["Enter", "Enter"]
    assert geo.actions(only_leave, d) == ["Leave", "Leave"]
    assert geo.actions(stay_only, d) == []


def test_stay_fires_once_per_entry_and_not_before_stay_s(geo):
    lat, lon = spot()
    fid = geo.create(name="linger", lat=lat, lon=lon, events=["stay"], stay_s=60)
    d = geo.device(alias="linger_dev")
    first, moved = destination(lat, lon, 90, 50), destination(lat, lon, 180, 120)
    sent = d.at(*first)
    ok = time.time()
    time.sleep(1.0)
    d.at(*moved)  # moving inside: the stay still counts from the entry
    assert geo.rcv.wait(lambda: geo.events(fid, d), limit=STAY60 + LATE + 1)
    ((arrived, e),) = geo.rcv.timed(GeofenceId=fid)
    assert arrived - sent >= STAY60 - 0.05, arrived - sent  # not before stay_s
    assert arrived - ok <= STAY60 + LATE, arrived - ok
    check_event(e, fid, "linger", d, "Stay", *moved)  # the last report
    # Once per entry: more reports inside, and time, bring no second one.
    d.at(*first)
    time.sleep(STAY60 + LATE)
    assert geo.actions(fid, d) == ["Stay"]


def test_leaving_before_stay_s_cancels_it_and_entering_again_starts_over(geo):
    lat, lon = spot()
    fid = geo.create(name="pace", lat=lat, lon=lon, events=["enter", "leave", "stay"], stay_s=60)
    d = geo.device()
    inside, outside = destination(lat, lon, 300, 10), destination(lat, lon, 300, 400)
    t0 = d.at(*inside)
    time.sleep(1.0)
    d.at(*outside)
    time.sleep(0.8)
    t1 = d.at(*inside)
    t1_ok = time.time()
    # The first entry's stay would have been due at t0 + 3 s: it is cancelled.
    while time.time() < t0 + STAY60 + LATE:
        time.sleep(0.05)
    assert geo.actions(fid, d) == ["Enter", "Leave", "Enter"]
    assert geo.rcv.wait(lambda: "Stay" in geo.actions(fid, d), limit=t1_ok + STAY60 + LATE + 1 - time.time())
    stay = [(t, e) for t, e in geo.rcv.timed(GeofenceId=fid) if e["Action"] == "Stay"]
    assert len(stay) == 1
    assert STAY60 - 0.05 <= stay[0][0] - t1 and stay[0][0] - t1_ok <= STAY60 + LATE, stay[0][0] - t1
    time.sleep(QUIET)
    assert geo.actions(fid, d) == ["Enter", "Leave", "Enter", "Stay"]


def test_repeat_false_fires_each_action_once_per_device(geo):
    lat, lon = spot()
    fid = geo.create(name="once", lat=lat, lon=lon, events=["enter", "leave"], repeat=False)
    a, b = geo.device(), geo.device()
    inside, outside = destination(lat, lon, 10, 10), destination(lat, lon, 10, 700)
    for p in (inside, outside, inside, outside, inside):
        a.at(*p)
    b.at(*inside)
    assert geo.wait_actions(fid, ["Enter", "Leave"], a) == ["Enter", "Leave"]
    assert geo.actions(fid, b) == ["Enter"]


def test_cooldown_s(geo):
    lat, lon = spot()
    fid = geo.create(name="cool", lat=lat, lon=lon, events=["enter", "leave"], cooldown_s=60)
    d = geo.device()
    inside, outside = destination(lat, lon, 200, 30), destination(lat, lon, 200, 900)
    t0 = d.at(*inside)  # Enter
    d.at(*outside)  # Leave
    d.at(*inside)  # within the cooldown of Enter: nothing
    d.at(*outside)  # within the cooldown of Leave: nothing
    assert geo.wait_actions(fid, ["Enter", "Leave"], d) == ["Enter", "Leave"]
    while time.time() < t0 + STAY60 + 0.6:  # the cooldown (3 s) is over
        time.sleep(0.05)
    d.at(*inside)
    d.at(*outside)
    assert geo.wait_actions(fid, ["Enter", "Leave"] * 2, d) == ["Enter", "Leave"] * 2


def test_the_active_window(geo):
    lat, lon = spot()
    now = int(time.time() * 1000)
    future = geo.create(name="future", lat=lat, lon=lon, start_ms=now + 3_600_000)
    past = geo.create(name="past", lat=lat, lon=lon, end_ms=now - 1000)
    ended = geo.create(name="ended", lat=lat, lon=lon, start_ms=now - 7_200_000, end_ms=now - 1000)
    active = geo.create(name="active", lat=lat, lon=lon, start_ms=now - 1000, end_ms=now + 3_600_000)
    d = geo.device()
    inside, outside = destination(lat, lon, 100, 20), destination(lat, lon, 100, 800)
    d.at(*inside)
    d.at(*outside)
    assert geo.wait_actions(active, ["Enter", "Leave"], d) == ["Enter", "Leave"]
    for fid in (future, past, ended):
        assert geo.actions(fid) == [], fid


def test_a_stay_due_after_the_window_closed_does_not_fire(geo):
    lat, lon = spot()
    now = int(time.time() * 1000)
    closing = geo.create(name="closing", lat=lat, lon=lon, events=["enter", "stay"], stay_s=60,
                         end_ms=now + 1500)
    control = geo.create(name="open", lat=lat, lon=lon, events=["enter", "stay"], stay_s=60)
    d = geo.device()
    d.at(*destination(lat, lon, 0, 10))
    # Both fire Enter; the stays are due 3 s later, after `closing` ended.
    assert geo.rcv.wait(lambda: "Stay" in geo.actions(control, d), limit=STAY60 + LATE + 1)
    time.sleep(QUIET)
    assert geo.actions(control, d) == ["Enter", "Stay"]
    assert geo.actions(closing, d) == ["Enter"]


def test_repeat_false_holds_for_stay_too(geo):
    lat, lon = spot()
    fid = geo.create(name="once-stay", lat=lat, lon=lon, events=["stay"], stay_s=60, repeat=False)
    d = geo.device()
    inside, outside = destination(lat, lon, 0, 10), destination(lat, lon, 0, 900)
    d.at(*inside)
    assert geo.rcv.wait(lambda: geo.actions(fid, d) == ["Stay"], limit=STAY60 + LATE + 1)
    d.at(*outside)
    entered = d.at(*inside)
    while time.time() < entered + STAY60 + LATE:
        time.sleep(0.05)
    assert geo.actions(fid, d) == ["Stay"]


def test_a_location_without_seq_is_judged_too(geo):
    lat, lon = spot()
    fid = geo.create(name="quiet", lat=lat, lon=lon)
    d = geo.device()
    inside = destination(lat, lon, 77, 42)
    d.ws.send(json.dumps({"op": "location", "lat": inside[0], "lon": inside[1]}))
    assert geo.rcv.wait(lambda: geo.events(fid, d), limit=5)
    check_event(geo.events(fid, d)[0], fid, "quiet", d, "Enter", *inside)
    # No answer came for it (it had no seq): the next answer is that of the next op.
    assert d.op({"op": "set_tags", "tags": ["t"]}) == {"op": "ok", "seq": d.seq}


def test_the_audience_decides_which_devices_a_fence_watches(geo):
    lat, lon = spot()
    fid = geo.create(name="vip", lat=lat, lon=lon, audience={"tag": ["geo_vip"]})
    by_alias = geo.create(name="by-alias", lat=lat, lon=lon, audience={"alias": ["geo_alias"]})
    inside, outside = destination(lat, lon, 0, 50), destination(lat, lon, 0, 900)
    plain = geo.device()
    vip = geo.device(tags=["geo_vip"])
    named = geo.device(alias="geo_alias")
    by_rid = geo.create(name="by-rid", lat=lat, lon=lon, audience={"registration_id": [plain.registration_id]})
    not_vip = geo.create(name="not-vip", lat=lat, lon=lon, audience={"tag_not": ["geo_vip"]})
    for d in (plain, vip, named):
        d.at(*inside)
    assert geo.wait_actions(fid, ["Enter"]) == ["Enter"]
    check_event(geo.events(fid)[0], fid, "vip", vip, "Enter", *inside)
    assert [e["RegistrationId"] for e in geo.events(by_alias)] == [named.registration_id]
    assert [e["RegistrationId"] for e in geo.events(by_rid)] == [plain.registration_id]
    assert sorted(e["RegistrationId"] for e in geo.events(not_vip)) == sorted(
        [plain.registration_id, named.registration_id])

    # A report from a device the fence does not watch changes nothing for it: vip loses its
    # tag and walks out (no Leave, and it still counts as inside), gets the tag back and
    # reports inside (no Enter: it was inside), then walks out (Leave).
    vip.tags([])
    vip.at(*outside)
    vip.tags(["geo_vip"])
    vip.at(*inside)
    time.sleep(QUIET)
    assert geo.actions(fid, vip) == ["Enter"]
    vip.at(*outside)
    assert geo.wait_actions(fid, ["Enter", "Leave"], vip) == ["Enter", "Leave"]
    check_event(geo.events(fid, vip)[1], fid, "vip", vip, "Leave", *outside)
    # (not_vip never watched vip: still nothing for it there.)
    assert geo.actions(not_vip, vip) == []


def test_a_stay_fires_only_if_the_fence_still_watches_the_device(geo):
    lat, lon = spot()
    fid = geo.create(name="watch", lat=lat, lon=lon, events=["stay"], stay_s=60,
                     audience={"tag": ["geo_stayer"]})
    kept, dropped = geo.device(tags=["geo_stayer"]), geo.device(tags=["geo_stayer"])
    inside = destination(lat, lon, 45, 45)
    kept.at(*inside)
    dropped.at(*inside)
    dropped.tags(["something_else"])
    assert geo.rcv.wait(lambda: geo.actions(fid, kept) == ["Stay"], limit=STAY60 + LATE + 1)
    time.sleep(QUIET)
    assert geo.actions(fid, dropped) == []
    assert geo.actions(fid, kept) == ["Stay"]


def test_a_deleted_fence_fires_nothing(geo):
    lat, lon = spot()
    fid = geo.create(name="doomed", lat=lat, lon=lon, events=["enter", "leave", "stay"], stay_s=60)
    gone = geo.create(name="gone", lat=lat, lon=lon)
    assert geo.api("DELETE", f"/v3/geofences/{gone}").status_code == 200
    d = geo.device()
    inside, outside = destination(lat, lon, 120, 60), destination(lat, lon, 120, 600)
    t0 = d.at(*inside)
    assert geo.wait_actions(fid, ["Enter"], d) == ["Enter"]
    assert geo.api("DELETE", f"/v3/geofences/{fid}").status_code == 200
    while time.time() < t0 + STAY60 + LATE:  # the pending stay was due at t0 + 3 s
        time.sleep(0.05)
    d.at(*outside)
    d.at(*inside)
    time.sleep(QUIET)
    assert geo.actions(fid) == ["Enter"]
    assert geo.actions(gone) == []


def test_a_put_that_moves_the_fence_takes_effect_at_the_next_report(geo):
    lat, lon = spot()
    there = destination(lat, lon, 90, 5000)
    fid = geo.create(name="mobile", lat=lat, lon=lon, radius_m=200)
    d = geo.device()
    d.at(lat, lon)
    assert geo.wait_actions(fid, ["Enter"], d) == ["Enter"]
    r = geo.api("PUT", f"/v3/geofences/{fid}", {"name": "moved", "lat": there[0], "lon": there[1],
                                                 "radius_m": 200, "events": ["enter", "leave"]})
    assert r.status_code == 200, r.text
    time.sleep(QUIET)
    assert geo.actions(fid, d) == ["Enter"]  # the PUT itself fires nothing
    d.at(lat, lon)  # the same place, now outside the moved fence
    d.at(*there)
    assert geo.wait_actions(fid, ["Enter", "Leave", "Enter"], d) == ["Enter", "Leave", "Enter"]
    e = geo.events(fid, d)
    check_event(e[1], fid, "moved", d, "Leave", lat, lon)
    check_event(e[2], fid, "moved", d, "Enter", *there)
    # A smaller radius: the same position is now outside.
    r = geo.api("PUT", f"/v3/geofences/{fid}", {"name": "moved", "lat": there[0], "lon": there[1],
                                                 "radius_m": 50, "events": ["enter", "leave"]})
    assert r.status_code == 200, r.text
    near = destination(there[0], there[1], 0, 100)
    d.at(*near)
    assert geo.wait_actions(fid, ["Enter", "Leave", "Enter", "Leave"], d) == ["Enter", "Leave", "Enter", "Leave"]


def test_another_apps_fence_is_invisible_and_does_not_watch_its_devices(geo):
    lat, lon = spot()
    mine = geo.create(name="mine", lat=lat, lon=lon)
    other_app = geo.server.create_app("geo-other")
    other = Geo(geo.server, other_app, geo.rcv)
    for method, body in (("GET", None), ("PUT", full_body()), ("DELETE", None)):
        r = other.api(method, f"/v3/geofences/{mine}", body)
        assert r.status_code == 404 and r.json()["error"]["code"] == 1003, (method, r.text)
    assert mine not in [f["geofence_id"] for f in other.api("GET", "/v3/geofences").json()["geofences"]]
    assert geo.api("GET", f"/v3/geofences/{mine}").json()["name"] == "mine"  # neither changed nor gone
    stranger = other.device()
    member = geo.device()
    inside = destination(lat, lon, 30, 30)
    stranger.at(*inside)
    member.at(*inside)
    assert geo.wait_actions(mine, ["Enter"]) == ["Enter"]
    assert geo.events(mine)[0]["RegistrationId"] == member.registration_id
    other.close()


# === 5. Pushes and callbacks end to end =====================================================

def test_a_fence_push_reaches_the_device_with_the_events_msg_id(geo):
    lat, lon = spot()
    push = {"notification": {"alert": "Welcome to the mall", "android": {"extras": {"coupon": "C7"}}},
            "options": {"time_to_live": 600}}
    fid = geo.create(name="mall", lat=lat, lon=lon, radius_m=150, events=["enter", "leave"], push=push)
    walker = geo.device(alias="shopper")
    anon = geo.device(platform="ios")
    bystander = geo.device()
    inside, outside = destination(lat, lon, 270, 149), destination(lat, lon, 270, 151)
    bystander.at(*outside)
    walker.at(*inside)
    (frame,) = walker.pushes(1)
    assert frame["notification"]["alert"] == "Welcome to the mall"
    assert frame["notification"]["extras"] == {"coupon": "C7"}
    assert frame["expires_ms"] - frame["sent_ms"] == 600_000
    assert geo.rcv.wait(lambda: geo.events(fid, walker))
    (e,) = geo.events(fid, walker)
    check_event(e, fid, "mall", walker, "Enter", *inside, msg_id=frame["msg_id"])
    # The push went to that device alone.
    assert bystander.pushes(0, quiet=0.3) == [] and anon.pushes(0, quiet=0.1) == []
    # The Push.Event of that push: sent over Pigeon's own connection, then delivered (acked).
    assert geo.rcv.wait(lambda: {x["PushStage"] for x in geo.rcv.get("Push.Event", MsgId=frame["msg_id"])} >= {1, 2})
    for x in geo.rcv.get("Push.Event", MsgId=frame["msg_id"]):
        assert x["RegistrationId"] == walker.registration_id and x["To_Account"] == "shopper"
        assert x["PushID"] == frame["msg_id"] and x["PushPlatform"] == 10 and x["ErrCode"] == 0
        assert x["Platform"] == "android"

    # A second device, without an alias: its own push, with its own msg_id.
    anon.at(*inside)
    (frame2,) = anon.pushes(1)
    assert frame2["msg_id"] != frame["msg_id"] and frame2["notification"]["alert"] == "Welcome to the mall"
    assert geo.rcv.wait(lambda: geo.events(fid, anon))
    check_event(geo.events(fid, anon)[0], fid, "mall", anon, "Enter", *inside, msg_id=frame2["msg_id"])
    # Leaving fires again, with a push again.
    walker.at(*outside)
    got = walker.pushes(2)
    assert len(got) == 2
    assert geo.wait_actions(fid, ["Enter", "Leave"], walker) == ["Enter", "Leave"]
    check_event(geo.events(fid, walker)[1], fid, "mall", walker, "Leave", *outside, msg_id=got[1]["msg_id"])
    assert len(walker.pushes(2, quiet=0.3)) == 2 and bystander.pushes(0, quiet=0.1) == []


def test_offline_the_stay_still_fires_and_its_push_waits_for_the_device(geo):
    lat, lon = spot()
    fid = geo.create(name="lobby", lat=lat, lon=lon, events=["enter", "stay"], stay_s=60,
                     push={"notification": {"alert": "Still here?"}})
    d = geo.device(alias="sleeper")
    inside = destination(lat, lon, 135, 75)
    sent = d.at(*inside)
    (enter_push,) = d.pushes(1)
    d.at(*inside)  # the ack above is processed before this is answered
    d.close()  # offline before the stay is due
    assert geo.rcv.wait(lambda: "Stay" in geo.actions(fid, d), limit=STAY60 + LATE + 1)
    arrived, stay = [(t, e) for t, e in geo.rcv.timed(GeofenceId=fid) if e["Action"] == "Stay"][0]
    assert arrived - sent >= STAY60 - 0.05
    check_event(stay, fid, "lobby", d, "Stay", *inside, msg_id=stay["MsgId"])
    enter = geo.events(fid, d)[0]
    check_event(enter, fid, "lobby", d, "Enter", *inside, msg_id=enter_push["msg_id"])
    assert stay["MsgId"] != enter_push["msg_id"]
    time.sleep(0.5)
    welcome = d.reconnect()
    assert welcome["pending"] >= 1, welcome
    got = d.pushes(2)
    fresh = [f["msg_id"] for f in got if f["msg_id"] != enter_push["msg_id"]]
    assert fresh == [stay["MsgId"]]
    assert got[-1]["notification"]["alert"] == "Still here?"
    assert geo.rcv.wait(lambda: 2 in {x["PushStage"] for x in geo.rcv.get("Push.Event", MsgId=stay["MsgId"])})
    assert geo.actions(fid, d) == ["Enter", "Stay"]


# === 6. A restart in the middle of a stay ====================================================

def down(server, how):
    if how == "SIGTERM":
        server.stop()
    else:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        server.proc = None


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_restart_in_the_middle_of_a_stay(how):
    stay_s = 200  # 10 s here
    due = stay_s * SECOND_MS / 1000
    with tempfile.TemporaryDirectory() as tmp:
        g = start_geo(KNOB, os.path.join(tmp, "data"), "restart")
        try:
            settle()
            lat, lon = 52.52, 13.405
            fid = g.create(name="museum", lat=lat, lon=lon, radius_m=120, events=["enter", "leave", "stay"],
                           stay_s=stay_s)
            d = g.device(alias="visitor")
            inside = destination(lat, lon, 300, 80)
            sent = d.at(*inside)
            ok = time.time()
            down(g.server, how)
            while time.time() < sent + 3.0:  # down for a while
                time.sleep(0.05)
            g.server.start()
            d.reconnect()
            d.at(*inside)  # the same inside position again: no second Enter
            assert g.rcv.wait(lambda: "Stay" in g.actions(fid, d), limit=ok + due + LATE + 1 - time.time())
            arrived = [t for t, e in g.rcv.timed(GeofenceId=fid) if e["Action"] == "Stay"][0]
            # Due at the entry + 10 s (not 10 s after the restart, ~3.5 s later).
            assert due - 0.05 <= arrived - sent and arrived - ok <= due + LATE, arrived - sent
            time.sleep(1.5)
            assert g.actions(fid, d) == ["Enter", "Stay"]
            stay = g.events(fid, d)[1]
            check_event(stay, fid, "museum", d, "Stay", *inside)
            # Once fired, the stay is settled: another stop and start fires it no more (a
            # batch sent again keeps its EventId, which the receiver counts once).
            down(g.server, how)
            g.server.start()
            d.reconnect()
            d.at(*inside)
            time.sleep(2.0)
            assert g.actions(fid, d) == ["Enter", "Stay"]
        finally:
            g.close()
            g.rcv.close()
            g.server.stop()


# === The real clock (last: it waits for the background scenario) ============================

def test_zz_a_stay_on_the_real_clock(real_clock):
    seen = real_clock
    seen["thread"].join(100)
    assert not seen["thread"].is_alive(), "the real-clock scenario did not finish"
    assert seen["error"] is None, seen["error"]
    assert seen["at_55"] == [], seen["at_55"]
    assert seen["at_55_time"] >= 55
    stays = seen["stays"]
    assert [e["Action"] for _, e in stays] == ["Stay"], stays
    arrived, e = stays[0]
    print(f"real clock: the Stay arrived {arrived - seen['sent']:.2f} s after the report was sent")
    assert arrived - seen["sent"] >= 60, arrived - seen["sent"]
    assert arrived - seen["ok"] <= 62.5, arrived - seen["ok"]
    check_event(e, seen["fence"], "clock", seen["device"], "Stay", *seen["point"])
