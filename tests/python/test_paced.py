"""Paced pushes (`options.big_push_duration`) against the real server, with one minute of pace
shortened to 300 ms (`PIGEON_PACING_MINUTE_MS`): delivery is spread evenly over the duration,
resumes after a restart without sending anything twice, stops when the push is recalled, and
an app may run at most 20 at once (1012)."""

import json
import os
import tempfile
import threading
import time

import pytest
import requests

from conftest import Device, Server
from test_recall import recall, reconnect

MINUTE_MS = 300


@pytest.fixture
def paced_server():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"), env={"PIGEON_PACING_MINUTE_MS": str(MINUTE_MS)})
        s.start()
        yield s
        s.stop()


def send(server, app, rids, **options):
    body = {"platform": "all", "audience": {"registration_id": rids} if rids else "all",
            "notification": {"alert": "paced"}, "options": options}
    return requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                         auth=(app["app_key"], app["master_secret"]))


def arrivals(devices, seconds):
    """Each device's push frames in the next `seconds`, acked, with when each came."""
    got = {d.registration_id: [] for d in devices}

    def listen(d):
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                frame = json.loads(d.ws.recv(timeout=max(0.01, deadline - time.time())))
            except TimeoutError:
                break
            except Exception:
                break
            if frame["op"] == "push":
                got[d.registration_id].append((time.time(), frame["msg_id"]))
                d.ws.send(json.dumps({"op": "ack", "msg_ids": [frame["msg_id"]]}))

    threads = [threading.Thread(target=listen, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    return threads, got


def test_a_paced_push_is_spread_evenly_over_its_duration(paced_server):
    server = paced_server
    app = server.create_app("paced")
    devices = [Device(server, app["app_key"]) for _ in range(20)]
    threads, got = arrivals(devices, 3.0)
    t0 = time.time()
    r = send(server, app, None, big_push_duration=4)  # 4 x 300 ms
    assert r.status_code == 200, r.text
    msg_id = r.json()["msg_id"]
    for t in threads:
        t.join()
    times = sorted(at - t0 for frames in got.values() for at, m in frames if m == msg_id)
    assert len(times) == 20 and all(len(f) == 1 for f in got.values()), got
    assert times[0] < 0.35, times
    assert 0.9 < times[-1] < 1.7, times
    # Even: about half in the first half of the 1.2 s.
    assert 6 <= sum(1 for t in times if t < 0.6) <= 14, times
    for d in devices:
        d.close()


def test_a_paced_push_resumes_after_a_restart_without_sending_twice(paced_server):
    server = paced_server
    app = server.create_app("restart")
    devices = [Device(server, app["app_key"]) for _ in range(10)]
    threads, before = arrivals(devices, 0.9)
    t0 = time.time()
    r = send(server, app, [d.registration_id for d in devices], big_push_duration=10)  # 3 s
    msg_id = r.json()["msg_id"]
    for t in threads:
        t.join()
    assert 1 <= sum(1 for f in before.values() if f) <= 6, before
    for d in devices:
        d.close()
    server.stop()
    server.start()
    for d in devices:
        d.ws = reconnect(server, d)
    threads, after = arrivals(devices, max(0.5, 3.8 - (time.time() - t0)))
    for t in threads:
        t.join()
    for d in devices:
        frames = before[d.registration_id] + after[d.registration_id]
        assert [m for _, m in frames] == [msg_id], (d.registration_id, frames)
    # The rest came after the restart, as the pace reached them, not all at once.
    late = sorted(at - t0 for f in after.values() for at, _ in f)
    assert len(late) >= 4 and late[-1] - late[0] > 0.5, late
    for d in devices:
        d.close()


def test_a_recall_stops_a_paced_push(paced_server):
    server = paced_server
    app = server.create_app("stop")
    devices = [Device(server, app["app_key"]) for _ in range(10)]
    threads, got = arrivals(devices, 3.5)
    msg_id = send(server, app, None, big_push_duration=10).json()["msg_id"]  # 3 s
    time.sleep(0.9)
    assert recall(server, app, msg_id).status_code == 200
    for t in threads:
        t.join()
    reached = sum(1 for f in got.values() if f)
    assert 1 <= reached <= 6, got
    for d in devices:
        d.close()


def test_at_most_twenty_paced_pushes_run_at_once(paced_server):
    server = paced_server
    app = server.create_app("limit")
    d = Device(server, app["app_key"])
    running = []
    for _ in range(20):
        r = send(server, app, [d.registration_id], big_push_duration=1400)
        assert r.status_code == 200, r.text
        running.append(r.json()["msg_id"])
    r = send(server, app, [d.registration_id], big_push_duration=1400)
    assert r.status_code == 400 and r.json()["error"]["code"] == 1012, r.text
    assert "20 paced pushes" in r.json()["error"]["message"]
    # Pushes that are not paced are not limited, and a recalled one frees its place.
    assert send(server, app, [d.registration_id]).status_code == 200
    assert recall(server, app, running[0]).status_code == 200
    assert send(server, app, [d.registration_id], big_push_duration=1400).status_code == 200
    # Another app has places of its own.
    other = server.create_app("other")
    e = Device(server, other["app_key"])
    assert send(server, other, [e.registration_id], big_push_duration=5).status_code == 200
    for bad in [1401, -1, "x", 1.5]:
        r = send(server, app, [d.registration_id], big_push_duration=bad)
        assert r.status_code == 400 and r.json()["error"]["code"] == 1003, (bad, r.text)
        assert "big_push_duration" in r.json()["error"]["message"]
    d.close()
    e.close()
