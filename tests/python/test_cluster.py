"""Cluster mode (cluster.md): several real `pigeon serve` nodes (node-a, node-b, node-c) on one
PostgreSQL database and one NATS server, API calls and device connections spread over them
the way a load balancer might. Each test names the clause of cluster.md it checks. Short
limits and poll loops, no long sleeps."""

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest
import requests
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import (PIGEON, PrivateNats, PrivatePostgres, Server, collect_pushes, create_database,
                      nats_server_url)
from test_callbacks import Receiver
from test_jpush_schedule import beijing
from test_sms import Provider

NAMES = ["node-a", "node-b", "node-c"]

# Callbacks to 127.0.0.1 and quickly; a fallback SMS provider; quick shutdowns.
FAST = {"PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS": "true", "PIGEON_CALLBACKS_BATCH_WAIT_MS": "100",
        "PIGEON_CALLBACKS_RETRY_FIRST_MS": "20", "PIGEON_EXPIRED_GRACE_MS": "200",
        "PIGEON_SHUTDOWN_GRACE_MS": "300", "PIGEON_GEOFENCE_SECOND_MS": "50"}


def wait_for(check, limit=5.0, step=0.05):
    """Polls `check` until it returns something true (returned) or `limit` s pass (the last
    value is returned)."""
    deadline = time.time() + limit
    while True:
        value = check()
        if value or time.time() > deadline:
            return value
        time.sleep(step)


def health_fields(body):
    return {k: (body or {}).get(k) for k in ("status", "node", "postgres", "nats")}


class Cluster:
    """N nodes on one database (`postgres`, a URL) and one NATS server (`nats`, a URL or None
    for a single node on PostgreSQL). The CLI runs with the database setting only, and a data
    directory of its own."""

    def __init__(self, postgres, nats, n=3, env=None):
        self.postgres = postgres
        self.nats = nats
        self.tmp = tempfile.mkdtemp(prefix="pigeon-cluster.")
        self.cli_data = os.path.join(self.tmp, "cli")
        self.nodes = []
        for name in NAMES[:n]:
            node_env = {**FAST, **(env or {}), "PIGEON_POSTGRES_URL": postgres, "PIGEON_NODE_ID": name}
            if nats:
                node_env["PIGEON_NATS_URL"] = nats
            node = Server(os.path.join(self.tmp, name), env=node_env)
            node.name = name
            self.nodes.append(node)

    @property
    def a(self):
        return self.nodes[0]

    @property
    def b(self):
        return self.nodes[1]

    @property
    def c(self):
        return self.nodes[2]

    def start(self, nodes=None):
        """Starts the nodes at the same moment, then waits for each to be ready."""
        nodes = nodes or self.nodes
        for node in nodes:
            node.spawn()
        for node in nodes:
            self.wait_ready(node)

    def wait_ready(self, node, limit=20):
        deadline = time.time() + limit
        while True:
            if node.proc is not None and node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited with {node.proc.returncode}")
            status, body = node.health()
            if status == 200:
                if not isinstance(body, dict) or "node" not in body:
                    raise RuntimeError(f"{node.name}: /health answers {body!r}, not a cluster node's health")
                if body.get("status") == "ok":
                    assert body["node"] == node.name, body
                    return body
            if time.time() > deadline:
                raise RuntimeError(f"{node.name} not ready: /health {status} {body}")
            time.sleep(0.05)

    def stop(self):
        for node in self.nodes:
            if node.proc:
                node.proc.terminate()
        for node in self.nodes:
            if node.proc:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait(5)
                node.proc = None

    def close(self):
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def cli(self, *args, check=True):
        out = subprocess.run([PIGEON, *args, "--data", self.cli_data], capture_output=True, text=True,
                             timeout=30, env=dict(os.environ, PIGEON_POSTGRES_URL=self.postgres,
                                                  PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS="true"))
        if check:
            assert out.returncode == 0, (args, out.stderr)
        return out

    def create_app(self, name):
        app = json.loads(self.cli("app", "create", "--name", name).stdout)
        # A running node picks up what the CLI changed within a second (cluster.md §1).
        for node in self.nodes:
            if node.proc:
                assert wait_for(lambda: api(node, app, "GET", "/v3/push/cid").status_code == 200, 1.5), \
                    f"{node.name} does not know the new app"
        return app

    def add_callback(self, app, url, commands):
        out = self.cli("app", "callback", "add", "--app-key", app["app_key"], "--url", url,
                       "--commands", commands)
        time.sleep(1.2)  # every node picks the endpoint up within a second
        return json.loads(out.stdout)


@contextlib.contextmanager
def cluster_of(n=3, postgres=None, nats="shared", env=None):
    """A cluster of its own: a new database (on `postgres`, a PrivatePostgres, or the tests'
    server) and the tests' NATS server (or `nats`, a URL; None: no NATS)."""
    db = postgres.database() if postgres else create_database()
    c = Cluster(db, nats_server_url() if nats == "shared" else nats, n=n, env=env)
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def provider():
    p = Provider()
    yield p
    p.close()


@pytest.fixture(scope="module")
def cluster(provider):
    """Three nodes shared by the tests that neither kill nor stop anything; each test makes
    apps of its own."""
    with cluster_of(env={"PIGEON_SMS_PROVIDER": "http", "PIGEON_SMS_URL": provider.url}) as c:
        yield c


def api(node, app, method, path, body=None, timeout=5):
    return requests.request(method, node.base + path, auth=(app["app_key"], app["master_secret"]),
                            data=None if body is None else json.dumps(body), timeout=timeout)


def push(node, app, audience, **extra):
    body = {"platform": "all", "audience": audience, "notification": {"alert": "cluster"}, **extra}
    r = api(node, app, "POST", "/v3/push", body)
    assert r.status_code == 200, (node.name, r.text)
    return r.json()["msg_id"]


def to(*phones):
    return {"registration_id": [p.rid for p in phones]}


class Phone:
    """A device written from device-protocol.md that registers through one node and connects
    to any."""

    def __init__(self, node, app, platform="android", settle=(), **register):
        r = requests.post(node.base + "/v1/devices/register", timeout=5,
                          json={"app_key": app["app_key"], "platform": platform, **register})
        assert r.status_code == 200, (node.name, r.text)
        self.rid = r.json()["registration_id"]
        self.secret = r.json()["device_secret"]
        self.ws = None
        # Waits until the Device API of each of `settle` (running nodes) finds the device, for
        # tests about something else than how soon that is (see test_a_device_registered_...).
        for other in settle:
            if other.proc:
                assert wait_for(lambda: api(other, app, "GET", f"/v3/devices/{self.rid}").status_code == 200,
                                1.0), f"{other.name} does not know a device registered through {node.name}"

    def connect(self, node):
        ws = connect(node.base.replace("http://", "ws://") + "/v1/connect", open_timeout=5)
        ws.send(json.dumps({"op": "hello", "registration_id": self.rid, "device_secret": self.secret,
                            "sdk": "pytest-cluster/1"}))
        welcome = json.loads(ws.recv(timeout=5))
        assert welcome["op"] == "welcome", (node.name, welcome)
        self.ws = ws
        return self

    def pushes(self, expect, quiet=0.4, limit=5.0):
        return collect_pushes(self.ws, expect, quiet, limit)

    def msg_ids(self, expect, **kw):
        return [f["msg_id"] for f in self.pushes(expect, **kw)]

    def frames(self, quiet=0.6):
        got = []
        while True:
            try:
                got.append(json.loads(self.ws.recv(timeout=quiet)))
            except TimeoutError:
                return got

    def alive(self):
        """The connection still answers a ping op."""
        self.ws.send(json.dumps({"op": "ping"}))
        deadline = time.time() + 5
        while time.time() < deadline:
            frame = json.loads(self.ws.recv(timeout=max(0.05, deadline - time.time())))
            if frame["op"] == "pong":
                return True
        return False

    def close(self):
        if self.ws:
            self.ws.close()
            self.ws = None


class Follower(threading.Thread):
    """A device that stays connected: when its connection ends it connects to the next node
    that takes it, and it acks and records every push it gets."""

    def __init__(self, phone, nodes, first):
        super().__init__(daemon=True)
        self.phone, self.nodes, self.first = phone, nodes, first
        self.got = set()
        self.connections = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def run(self):
        order = itertools.cycle(range(len(self.nodes)))
        for _ in range(self.first):
            next(order)
        while not self.done.is_set():
            node = self.nodes[next(order)]
            try:
                self.phone.connect(node)
            except Exception:
                time.sleep(0.05)
                continue
            self.connections.append(node.name)
            ws = self.phone.ws
            try:
                while not self.done.is_set():
                    try:
                        frame = json.loads(ws.recv(timeout=0.3))
                    except TimeoutError:
                        continue
                    if frame["op"] == "push":
                        with self.lock:
                            self.got.add(frame["msg_id"])
                        ws.send(json.dumps({"op": "ack", "msg_ids": [frame["msg_id"]]}))
            except (ConnectionClosed, OSError):
                continue
        self.phone.close()

    def received(self):
        with self.lock:
            return set(self.got)


# §1 ----------------------------------------------------------------------------------------

def refused(args, env):
    """Runs `pigeon serve ...` that should exit at once; its stderr."""
    try:
        out = subprocess.run([PIGEON, "serve", "--listen", "127.0.0.1:0", *args], env=env,
                             capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("pigeon serve with NATS and no PostgreSQL did not refuse to start")
    assert out.returncode != 0, out.stderr
    return out.stderr


def test_nats_without_postgres_is_refused_with_the_reason(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PIGEON_POSTGRES_URL"}
    err = refused(["--data", str(tmp_path / "env")], dict(env, PIGEON_NATS_URL=nats_server_url()))
    assert "postgres" in err.lower(), err
    config = tmp_path / "pigeon.toml"
    config.write_text(f'[cluster]\nnats = "{nats_server_url()}"\n')
    err = refused(["--data", str(tmp_path / "toml"), "--config", str(config)], env)
    assert "postgres" in err.lower(), err


def test_one_node_on_postgres_alone():
    with cluster_of(n=1, nats=None) as c:
        status, body = c.a.health()
        assert status == 200 and health_fields(body) == {"status": "ok", "node": "node-a", "postgres": "ok",
                                                         "nats": "off"}, body
        app = c.create_app("alone")
        d = Phone(c.a, app, settle=c.nodes, tags=["solo"]).connect(c.a)
        msg_id = push(c.a, app, {"tag": ["solo"]})
        assert d.msg_ids(1) == [msg_id]
        # The state is in the database: a node started on it afresh has it all.
        c.stop()
        c.nodes[0] = node = Server(os.path.join(c.tmp, "fresh"), env=c.a.extra_env)
        node.name = "node-a"
        c.start()
        assert api(node, app, "GET", f"/v3/devices/{d.rid}").json()["tags"] == ["solo"]
        assert api(node, app, "GET", f"/v3/received/detail?msg_ids={msg_id}").json()[0]["jpush_received"] == 1


def test_three_nodes_starting_at_once_on_an_empty_database_all_come_up():
    # Started at the same moment on a new database: the migration is locked (cluster.md §1).
    with cluster_of() as c:
        for node in c.nodes:
            status, body = node.health()
            assert status == 200 and health_fields(body) == {"status": "ok", "node": node.name,
                                                             "postgres": "ok", "nats": "ok"}, body
        # They share one state.
        app = c.create_app("race")
        d = Phone(c.c, app, settle=c.nodes).connect(c.b)
        msg_id = push(c.a, app, to(d))
        assert d.msg_ids(1) == [msg_id]


def test_cli_changes_reach_every_node_within_a_second(cluster):
    app = cluster.create_app("cli")  # asserts every node takes it within a second
    listed = [json.loads(line) for line in cluster.cli("app", "list").stdout.splitlines()]
    assert app["app_key"] in [a["app_key"] for a in listed]
    d = Phone(cluster.c, app, settle=cluster.nodes).connect(cluster.b)
    msg_id = push(cluster.a, app, to(d))
    assert d.msg_ids(1) == [msg_id]
    # Disabled through the CLI: every node refuses the app (403, 2003) within a second.
    cluster.cli("app", "set", "--app-key", app["app_key"], "--enabled", "false")
    for node in cluster.nodes:
        assert wait_for(lambda: api(node, app, "GET", "/v3/push/cid").status_code == 403, 1.5), node.name
    r = api(cluster.c, app, "GET", "/v3/push/cid")
    assert r.json()["error"]["code"] == 2003
    cluster.cli("app", "set", "--app-key", app["app_key"], "--enabled", "true")
    for node in cluster.nodes:
        assert wait_for(lambda: api(node, app, "GET", "/v3/push/cid").status_code == 200, 1.5), node.name
    d.close()


# §2.1, §2.2 --------------------------------------------------------------------------------

def test_a_push_accepted_by_a_reaches_devices_on_b_and_c(cluster):
    app = cluster.create_app("fanout")
    on_a, on_b, on_c = (Phone(n, app, settle=cluster.nodes, tags=["all3"]).connect(n) for n in cluster.nodes)
    elsewhere = Phone(cluster.a, app, settle=cluster.nodes, tags=["other"]).connect(cluster.c)
    msg_id = push(cluster.a, app, {"tag": ["all3"]})
    for d in (on_a, on_b, on_c):
        assert d.msg_ids(1) == [msg_id]
    assert elsewhere.msg_ids(0) == []
    # Broadcast from C, by registration id from B.
    everyone = push(cluster.c, app, "all")
    for d in (on_a, on_b, on_c, elsewhere):
        assert d.msg_ids(1) == [everyone]
    one = push(cluster.b, app, to(on_a, elsewhere))
    assert on_a.msg_ids(1) == [one] and elsewhere.msg_ids(1) == [one]
    assert on_b.msg_ids(0, quiet=0.2) == [] and on_c.msg_ids(0, quiet=0.2) == []
    for d in (on_a, on_b, on_c, elsewhere):
        d.close()


def test_registered_on_b_tagged_on_c_is_targeted_through_a_within_a_second(cluster):
    app = cluster.create_app("targeting")
    d = Phone(cluster.b, app, settle=cluster.nodes).connect(cluster.b)
    r = api(cluster.c, app, "POST", f"/v3/devices/{d.rid}", {"tags": {"add": ["fresh"]}, "alias": "fresh_alias",
                                                             "mobile": "13800000009"})
    assert r.status_code == 200, r.text
    time.sleep(1.0)
    msg_id = push(cluster.a, app, {"tag": ["fresh"]})
    assert d.msg_ids(1) == [msg_id]
    msg_id = push(cluster.b, app, {"alias": ["fresh_alias"]})
    assert d.msg_ids(1) == [msg_id]
    # Device ops (on B) reach C's audience too.
    d.ws.send(json.dumps({"op": "set_tags", "tags": ["op_tag"], "seq": 1}))
    d.ws.send(json.dumps({"op": "set_alias", "alias": "op_alias", "seq": 2}))
    answers = d.frames(quiet=0.5)
    assert {"op": "ok", "seq": 1} in answers and {"op": "ok", "seq": 2} in answers, answers
    time.sleep(1.0)
    msg_id = push(cluster.c, app, {"tag": ["op_tag"]})
    assert d.msg_ids(1) == [msg_id]
    msg_id = push(cluster.a, app, {"alias": ["op_alias"]})
    assert d.msg_ids(1) == [msg_id]
    r = api(cluster.a, app, "POST", "/v3/push", {"platform": "all", "audience": {"tag": ["fresh"]},
                                                 "notification": {"alert": "x"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == 1011, r.text
    # Everything the Device API reads is the same from every node.
    infos = [api(n, app, "GET", f"/v3/devices/{d.rid}").json() for n in cluster.nodes]
    assert infos == [{"tags": ["op_tag"], "alias": "op_alias", "mobile": "13800000009"}] * 3, infos
    d.close()


def test_a_device_registered_through_one_node_connects_to_any_at_once(cluster):
    # Any node takes any device connection (cluster.md, first paragraph) and no acknowledged
    # registration is lost (§2.3): a device a load balancer sends to another node than the
    # one it registered through, straight after registering, is welcomed there (not told to
    # register again, 1004 / 4001), and the Device API of every node finds it.
    app = cluster.create_app("anynode")
    refused = []
    for i in range(30):
        via, to_node = cluster.nodes[i % 3], cluster.nodes[(i + 1) % 3]
        d = Phone(via, app)
        try:
            d.connect(to_node)
        except AssertionError as e:
            refused.append(f"registered through {via.name}, connected to {to_node.name}: {e}")
        d.close()
        other = cluster.nodes[(i + 2) % 3]
        r = api(other, app, "GET", f"/v3/devices/{d.rid}")
        if r.status_code != 200:
            refused.append(f"registered through {via.name}, Device API of {other.name}: {r.text}")
    assert not refused, f"{len(refused)} of 60 checks failed: " + "; ".join(refused[:4])


# §2.4 --------------------------------------------------------------------------------------

def test_a_newer_connection_on_another_node_closes_the_older_with_4002(cluster):
    app = cluster.create_app("replace")
    for i in range(6):  # from each node to the next, twice
        first, second, third = (cluster.nodes[(i + k) % 3] for k in range(3))
        d = Phone(first, app, settle=cluster.nodes).connect(first)
        old = d.ws
        d.connect(second)
        with pytest.raises(ConnectionClosed) as closed:
            deadline = time.time() + 5
            while time.time() < deadline:
                old.recv(timeout=max(0.05, deadline - time.time()))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002, closed.value
        # The newer connection is the one that stays: it answers, and the device is reached
        # there only, once.
        time.sleep(0.3)
        try:
            assert d.alive()
            msg_id = push(third, app, to(d))
            assert d.msg_ids(1) == [msg_id]
        except ConnectionClosed as e:
            pytest.fail(f"moved from {first.name} to {second.name}: the newer connection was closed too: {e}")
        d.close()


# §2.1 (later connection) -------------------------------------------------------------------

def test_a_device_offline_at_push_time_gets_it_on_another_node(cluster):
    app = cluster.create_app("offline")
    d = Phone(cluster.a, app, settle=cluster.nodes).connect(cluster.a)
    d.close()
    time.sleep(0.2)
    msg_id = push(cluster.a, app, to(d))
    other = push(cluster.b, app, to(d))
    d.connect(cluster.c)
    got = d.msg_ids(2)
    assert sorted(got) == sorted([msg_id, other])
    # Pending pushes come oldest first (device-protocol.md §2.3), whichever node took them.
    assert got == [msg_id, other], "pending pushes out of the order they were accepted in"
    d.close()
    d.connect(cluster.b)
    assert d.msg_ids(0) == []  # acked: not again
    d.close()


# §2.7 --------------------------------------------------------------------------------------

def test_online_status_is_the_same_from_every_node(cluster):
    app = cluster.create_app("status")
    on_b = Phone(cluster.a, app, settle=cluster.nodes).connect(cluster.b)
    gone = Phone(cluster.c, app, settle=cluster.nodes).connect(cluster.c)
    gone.close()
    never = Phone(cluster.a, app, settle=cluster.nodes)
    body = {"registration_ids": [on_b.rid, gone.rid, never.rid]}

    def answers():
        return [api(n, app, "POST", "/v3/devices/status", body).json() for n in cluster.nodes]

    def agreed():
        got = answers()
        first = got[0]
        ok = (all(g == first for g in got) and first[on_b.rid]["online"] is True
              and first[gone.rid]["online"] is False and first[never.rid]["online"] is False)
        return got if ok else None
    got = wait_for(agreed, 1.5)
    assert got, answers()
    assert "last_online_time" in got[0][gone.rid]
    # Moving from B to C and going away: every node says so.
    on_b.connect(cluster.c)
    assert wait_for(lambda: all(a[on_b.rid]["online"] for a in answers()), 1.5), answers()
    on_b.close()
    assert wait_for(lambda: not any(a[on_b.rid]["online"] for a in answers()), 1.5), answers()
    assert wait_for(lambda: len({json.dumps(a, sort_keys=True) for a in answers()}) == 1, 1.5), answers()


def test_reports_are_the_same_from_every_node(cluster):
    app = cluster.create_app("reports")
    on_b = Phone(cluster.a, app, settle=cluster.nodes, tags=["r"]).connect(cluster.b)
    on_c = Phone(cluster.b, app, settle=cluster.nodes, tags=["r"], platform="ios").connect(cluster.c)
    away = Phone(cluster.c, app, settle=cluster.nodes, tags=["r"])
    time.sleep(1.0)  # targeted through every node within a second of its registration (§2.2)
    msg_id = push(cluster.a, app, {"tag": ["r"]})
    assert on_b.msg_ids(1) == [msg_id]
    on_c.ws.recv(timeout=5)  # got it, does not ack
    on_b.ws.send(json.dumps({"op": "click", "msg_id": msg_id, "seq": 1}))
    assert json.loads(on_b.ws.recv(timeout=5)) == {"op": "ok", "seq": 1}

    def reports(path):
        return [api(n, app, "GET", path).json() for n in cluster.nodes]

    def settled():
        detail = reports(f"/v3/messages/detail?msg_ids={msg_id}")
        n = detail[0][0]["details"]["notification"]
        same = all(d == detail[0] for d in detail)
        return same and (n["target"], n["sent"], n["received"], n["click"]) == (3, 2, 1, 1)
    assert wait_for(settled, 2.0), json.dumps(reports(f"/v3/messages/detail?msg_ids={msg_id}"), indent=1)
    received = reports(f"/v3/received/detail?msg_ids={msg_id}")
    assert all(r == received[0] for r in received) and received[0][0]["jpush_received"] == 1, received
    body = {"msg_id": int(msg_id), "registration_ids": [on_b.rid, on_c.rid, away.rid]}
    statuses = [api(n, app, "POST", "/v3/status/message", body).json() for n in cluster.nodes]
    assert statuses == [{on_b.rid: {"status": 0}, on_c.rid: {"status": 1}, away.rid: {"status": 1}}] * 3
    on_b.close()
    on_c.close()


# §2.5 --------------------------------------------------------------------------------------

def test_a_cid_pushes_once_across_nodes(cluster):
    app = cluster.create_app("cid")
    d = Phone(cluster.a, app, settle=cluster.nodes).connect(cluster.c)
    cid = api(cluster.a, app, "GET", "/v3/push/cid").json()["cidlist"][0]
    body = {"cid": cid, "platform": "all", "audience": to(d), "notification": {"alert": "once"}}
    first = api(cluster.a, app, "POST", "/v3/push", body)
    assert first.status_code == 200, first.text
    again = api(cluster.b, app, "POST", "/v3/push", body)
    assert again.status_code == 200 and again.json()["msg_id"] == first.json()["msg_id"], again.text
    assert d.msg_ids(1) == [first.json()["msg_id"]]
    # Sent to all three nodes at the same moment: one push.
    cid = api(cluster.b, app, "GET", "/v3/push/cid").json()["cidlist"][0]
    body["cid"] = cid
    answers = []

    def fire(node):
        answers.append(api(node, app, "POST", "/v3/push", body))
    threads = [threading.Thread(target=fire, args=(n,)) for n in cluster.nodes * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    msg_ids = {r.json()["msg_id"] for r in answers}
    assert len(msg_ids) == 1
    assert d.msg_ids(1) == list(msg_ids)
    d.close()


def test_recall_through_a_reaches_the_device_on_b(cluster):
    app = cluster.create_app("recall")
    d = Phone(cluster.c, app, settle=cluster.nodes).connect(cluster.b)
    away = Phone(cluster.c, app, settle=cluster.nodes)
    msg_id = push(cluster.c, app, to(d, away))
    assert d.msg_ids(1) == [msg_id]
    r = api(cluster.a, app, "DELETE", f"/v3/push/{msg_id}")
    assert r.status_code == 200, r.text
    assert {"op": "revoke", "msg_id": msg_id} in d.frames()
    # The device that had not got it never will, on any node.
    away.connect(cluster.a)
    assert [f for f in away.frames() if f["op"] == "push"] == []
    r = api(cluster.b, app, "DELETE", f"/v3/push/{msg_id}")
    assert r.status_code == 400 and "already recalled" in r.json()["error"]["message"], r.text
    d.close()
    away.close()


def test_badge_numbers_count_across_nodes(cluster):
    app = cluster.create_app("badges")
    d = Phone(cluster.a, app, settle=cluster.nodes, platform="ios").connect(cluster.c)
    for node in cluster.nodes:
        push(node, app, to(d), notification={"alert": "b", "ios": {"badge": "+1"}})
    assert [f["badge"] for f in d.pushes(3)] == [1, 2, 3]
    d.close()


def test_the_rate_limit_is_the_clusters(cluster):
    app = cluster.create_app("rate")
    cluster.cli("app", "set", "--app-key", app["app_key"], "--rate-limit", "6")
    for node in cluster.nodes:
        assert wait_for(lambda: api(node, app, "GET", "/v3/push/cid").headers.get("X-Rate-Limit-Limit") == "6",
                        1.5), node.name
    # Those probes counted too; from here on at most 6 a minute in all, whichever node answers.
    codes = [api(cluster.nodes[i % 3], app, "GET", "/v3/push/cid").status_code for i in range(12)]
    assert codes.count(429) >= 6 and set(codes) <= {200, 429}, codes


def test_a_schedule_fires_exactly_once_across_three_nodes(cluster):
    app = cluster.create_app("schedules")
    d = Phone(cluster.a, app, settle=cluster.nodes).connect(cluster.b)
    ids = []
    for node in cluster.nodes:
        body = {"name": "s_" + node.name.replace("-", "_"), "enabled": True,
                "trigger": {"single": {"time": beijing(3)}},
                "push": {"platform": "all", "audience": to(d), "notification": {"alert": node.name}}}
        r = api(node, app, "POST", "/v3/schedules", body)
        assert r.status_code == 200, r.text
        ids.append(r.json()["schedule_id"])
    got = d.pushes(3, quiet=2.0, limit=10.0)
    assert sorted(f["notification"]["alert"] for f in got) == NAMES, got
    for sid in ids:
        lists = [api(n, app, "GET", f"/v3/schedules/{sid}/msg_ids").json()["msgids"] for n in cluster.nodes]
        assert len(lists[0]) == 1 and lists == [lists[0]] * 3, lists
    d.close()


def test_sms_fallback_is_sent_once_per_device_not_reached(cluster, provider):
    app = cluster.create_app("sms")
    away = Phone(cluster.a, app, settle=cluster.nodes)
    reached = Phone(cluster.b, app, settle=cluster.nodes).connect(cluster.c)
    for d, node, mobile in [(away, cluster.b, "13800000002"), (reached, cluster.a, "13800000001")]:
        r = api(node, app, "POST", f"/v3/devices/{d.rid}", {"mobile": mobile})
        assert r.status_code == 200, r.text
    time.sleep(1.0)
    msg_id = push(cluster.a, app, to(away, reached), sms_message={"delay_time": 1, "content": "code 1"})
    assert reached.msg_ids(1) == [msg_id]
    assert provider.wait(lambda: provider.sms(msg_id), limit=6)
    time.sleep(1.5)
    sent = provider.sms(msg_id)
    assert [(s["registration_id"], s["mobile"]) for s in sent] == [(away.rid, "13800000002")], sent
    reached.close()


def test_callbacks_post_each_event_once(cluster):
    app = cluster.create_app("callbacks")
    rcv = Receiver()
    try:
        cluster.add_callback(app, rcv.url, "Push.Accepted,Push.Event,Device.OnlineStatus")
        on_b = Phone(cluster.a, app, settle=cluster.nodes).connect(cluster.b)
        on_c = Phone(cluster.a, app, settle=cluster.nodes).connect(cluster.c)
        sent = [push(node, app, to(on_b, on_c)) for node in cluster.nodes]
        assert sorted(on_b.msg_ids(3)) == sorted(sent) and sorted(on_c.msg_ids(3)) == sorted(sent)
        delivered = {(m, d.rid) for m in sent for d in (on_b, on_c)}

        def complete():
            accepted = {e["MsgId"] for e in rcv.events("Push.Accepted")}
            acked = {(e["MsgId"], e["RegistrationId"]) for e in rcv.events("Push.Event") if e["PushStage"] == 2}
            online = {e["RegistrationId"] for e in rcv.events("Device.OnlineStatus") if e["Status"] == "Online"}
            return accepted == set(sent) and acked == delivered and online == {on_b.rid, on_c.rid}
        assert rcv.wait(complete, limit=10), rcv.events()
        time.sleep(1.5)  # and nothing more comes
        events = rcv.events()
        event_ids = [e["EventId"] for e in events]
        assert len(event_ids) == len(set(event_ids)), "an event was posted twice"
        assert sorted(e["MsgId"] for e in rcv.events("Push.Accepted")) == sorted(sent)
        stages = [(e["MsgId"], e["RegistrationId"], e["PushStage"]) for e in rcv.events("Push.Event")]
        assert len(stages) == len(set(stages)), stages
        assert [e["RegistrationId"] for e in rcv.events("Device.OnlineStatus")].count(on_b.rid) == 1
        on_b.close()
        on_c.close()
    finally:
        rcv.close()


# geofences.md §3 across nodes -------------------------------------------------------------

def bucket(abtest_id, rid):
    """The published assignment (docs/segments-and-ab-tests.md): FNV-1a 64 over the test id, a
    zero byte and the registration id, SplitMix64's finisher, modulo 100."""
    mask = (1 << 64) - 1
    h = 0xcbf29ce484222325
    for b in abtest_id.encode() + b"\0" + rid.encode():
        h = ((h ^ b) * 0x100000001b3) & mask
    h = ((h ^ (h >> 30)) * 0xbf58476d1ce4e5b9) & mask
    h = ((h ^ (h >> 27)) * 0x94d049bb133111eb) & mask
    return (h ^ (h >> 31)) % 100


def test_segments_and_abtests_made_on_one_node_are_used_on_the_others(cluster):
    app = cluster.create_app("saved")
    phones = [Phone(cluster.nodes[i % 3], app, settle=cluster.nodes, tags=["seg"]).connect(cluster.nodes[(i + 1) % 3])
              for i in range(12)]
    r = api(cluster.a, app, "POST", "/v3/segments", {"name": "s", "audience": {"tag": ["seg"]}})
    assert r.status_code == 200, r.text
    seg = r.json()["segment_id"]
    # Straight away through another node: it reads the change feed for an id it does not know.
    msg_id = push(cluster.b, app, {"segment": [seg]})
    for p in phones:
        assert p.msg_ids(1) == [msg_id]
    assert all(api(n, app, "GET", f"/v3/segments/{seg}").json()["size"] == 12 for n in cluster.nodes)
    body = {"name": "t", "audience": {"segment": ["nope"]}}
    assert api(cluster.c, app, "POST", "/v3/abtests", body).json()["error"]["code"] == 1003
    body = {"name": "t", "variants": [{"name": "A", "weight": 50, "notification": {"alert": "A"}},
                                      {"name": "B", "weight": 50, "notification": {"alert": "B"}}]}
    r = api(cluster.c, app, "POST", "/v3/abtests", body)
    assert r.status_code == 200, r.text
    test = r.json()["abtest_id"]
    r = api(cluster.a, app, "POST", "/v3/push", {"platform": "all", "audience": {"abtest": [test], "segment": [seg]},
                                                 "notification": {"alert": "body"}})
    assert r.status_code == 200, r.text
    msg_id = r.json()["msg_id"]
    for p in phones:
        frames = p.pushes(1)
        assert [f["msg_id"] for f in frames] == [msg_id]
        want = "A" if bucket(test, p.rid) < 50 else "B"
        assert frames[0]["notification"]["alert"] == want, (p.rid, frames)
    reports = [api(n, app, "GET", f"/v3/abtests/{test}/report").json() for n in cluster.nodes]
    assert all(r == reports[0] for r in reports), reports
    assert sum(v["targeted"] for v in reports[0]["variants"]) == 12
    assert wait_for(lambda: sum(v["delivered"] for v in
                                api(cluster.b, app, "GET", f"/v3/abtests/{test}/report").json()["variants"]) == 12,
                    3.0)
    # A delete on one node is seen by the others.
    assert api(cluster.b, app, "DELETE", f"/v3/segments/{seg}").status_code == 200
    assert wait_for(lambda: api(cluster.c, app, "GET", f"/v3/segments/{seg}").status_code == 404, 2.0)
    for p in phones:
        p.close()


def report(phone, lat, lon, seq):
    """Sends a location and waits for its ok (pushes meanwhile are acked and kept)."""
    phone.ws.send(json.dumps({"op": "location", "lat": lat, "lon": lon, "seq": seq}))
    deadline = time.time() + 5
    while time.time() < deadline:
        frame = json.loads(phone.ws.recv(timeout=max(0.05, deadline - time.time())))
        if frame["op"] == "push":
            phone.ws.send(json.dumps({"op": "ack", "msg_ids": [frame["msg_id"]]}))
        elif frame.get("seq") == seq:
            assert frame["op"] == "ok", frame
            return
    raise AssertionError(f"no answer to location seq {seq}")


def test_a_geofence_fires_once_across_nodes_and_a_reconnect_elsewhere_fires_no_enter(cluster):
    app = cluster.create_app("geofences")
    rcv = Receiver()
    try:
        cluster.add_callback(app, rcv.url, "Geofence.Event")
        fence = {"name": "hq", "lat": 31.2304, "lon": 121.4737, "radius_m": 300,
                 "events": ["enter", "leave", "stay"], "stay_s": 60}
        r = api(cluster.a, app, "POST", "/v3/geofences", fence)
        assert r.status_code == 200, r.text
        fid = r.json()["geofence_id"]
        # Created through a, read through c at once.
        assert api(cluster.c, app, "GET", f"/v3/geofences/{fid}").json()["name"] == "hq"
        phone = Phone(cluster.a, app, settle=cluster.nodes).connect(cluster.b)
        report(phone, 31.2304, 121.4737, 1)
        phone.close()
        # The same place through another node: still inside, no second Enter.
        phone.connect(cluster.c)
        report(phone, 31.2305, 121.4737, 2)
        # stay_s 60 at 50 ms a second: due 3 s after the entry, fired by one node only.
        assert rcv.wait(lambda: len(rcv.events("Geofence.Event")) >= 2, limit=8), rcv.events()
        time.sleep(1.5)
        events = rcv.events("Geofence.Event")
        assert [e["Action"] for e in events] == ["Enter", "Stay"], events
        assert {e["GeofenceId"] for e in events} == {fid}
        assert len({e["EventId"] for e in events}) == 2
        # Moved through a, judged through c at the next report (once the change reached c).
        moved = {**fence, "lat": 31.3}
        assert api(cluster.a, app, "PUT", f"/v3/geofences/{fid}", moved).status_code == 200
        time.sleep(0.6)
        report(phone, 31.2305, 121.4737, 3)
        assert rcv.wait(lambda: len(rcv.events("Geofence.Event")) >= 3, limit=5), rcv.events()
        assert [e["Action"] for e in rcv.events("Geofence.Event")] == ["Enter", "Stay", "Leave"]
        # Deleted through b: gone on every node.
        assert api(cluster.b, app, "DELETE", f"/v3/geofences/{fid}").status_code == 200
        assert wait_for(lambda: all(api(n, app, "GET", f"/v3/geofences/{fid}").status_code == 404
                                    for n in cluster.nodes), 2.0)
        phone.close()
    finally:
        rcv.close()


# §2.3, §2.6: kill -9 -----------------------------------------------------------------------

def test_kill_9_of_a_node_under_a_stream_of_pushes_loses_none():
    with cluster_of() as c:
        app = c.create_app("kill")
        # Registered through the node about to die, connected all over.
        followers = [Follower(Phone(c.b, app, settle=c.nodes), c.nodes, first=i % 3) for i in range(6)]
        for f in followers:
            f.start()
        assert wait_for(lambda: all(f.connections for f in followers), 5)
        accepted = {}  # msg_id -> follower
        stop = threading.Event()
        errors = []

        def pusher():
            for i in itertools.count():
                if stop.is_set():
                    return
                f = followers[i % len(followers)]
                node = c.nodes[i % 3]
                try:
                    r = api(node, app, "POST", "/v3/push", {"platform": "all", "audience": to(f.phone),
                                                            "message": {"msg_content": str(i)}}, timeout=3)
                except requests.RequestException:
                    continue  # not accepted
                if r.status_code == 200:
                    accepted[r.json()["msg_id"]] = f
                else:  # the nodes that stay up keep serving throughout
                    errors.append((node.name, r.status_code, r.text))
                time.sleep(0.01)
        t = threading.Thread(target=pusher)
        t.start()
        time.sleep(1.0)
        c.b.kill()
        time.sleep(1.5)
        stop.set()
        t.join()
        assert not errors, errors[:3]
        assert len(accepted) > 20

        def all_there():
            return all(m in f.received() for m, f in accepted.items())
        ok = wait_for(all_there, 15)
        for f in followers:
            f.done.set()
        missing = [m for m, f in accepted.items() if m not in f.received()]
        assert ok and not missing, f"{len(missing)} of {len(accepted)} accepted pushes lost"
        # The others served throughout; devices of B moved on.
        assert all(f.connections[-1] != "node-b" for f in followers)


def test_callbacks_of_dead_nodes_are_taken_over():
    with cluster_of() as c:
        app = c.create_app("takeover")
        rcv = Receiver()
        try:
            c.add_callback(app, rcv.url, "Push.Accepted")
            d = Phone(c.a, app, settle=c.nodes)
            rcv.answers = ["500"] * 100000  # down for now
            sent = {push(c.nodes[i % 3], app, to(d)) for i in range(15)}
            time.sleep(0.3)
            c.a.kill()
            c.b.kill()
            rcv.answers = []  # back
            assert rcv.wait(lambda: {e["MsgId"] for e in rcv.events()} >= sent, limit=20), \
                len({e["MsgId"] for e in rcv.events()})
            assert {e["MsgId"] for e in rcv.events()} == sent
        finally:
            rcv.close()


def test_a_whole_cluster_restart_loses_nothing():
    with cluster_of() as c:
        app = c.create_app("restart")
        tagged = Phone(c.a, app, settle=c.nodes, tags=["keep"], alias="kept")
        other = Phone(c.b, app, settle=c.nodes)
        r = api(c.c, app, "POST", f"/v3/devices/{other.rid}", {"tags": {"add": ["keep"]}})
        assert r.status_code == 200
        time.sleep(1.0)
        pending = [push(node, app, {"tag": ["keep"]}) for node in c.nodes]
        c.stop()
        c.start()
        tagged.connect(c.c)
        other.connect(c.a)
        assert sorted(tagged.msg_ids(3)) == sorted(pending)
        assert sorted(other.msg_ids(3)) == sorted(pending)
        after = push(c.b, app, {"tag": ["keep"]})
        assert tagged.msg_ids(1) == [after] and other.msg_ids(1) == [after]
        msg_id = push(c.a, app, {"alias": ["kept"]})
        assert tagged.msg_ids(1, limit=5) == [msg_id]
        tagged.close()
        other.close()


# §2.8: losing PostgreSQL or NATS ------------------------------------------------------------

def unavailable(node, lost):
    status, body = node.health()
    return status == 503 and (body or {}).get("status") == "unavailable" and body.get(lost) == "lost"


def test_nodes_that_lose_postgres_keep_devices_answer_503_and_recover():
    pg = PrivatePostgres()
    try:
        with cluster_of(n=2, postgres=pg) as c:
            app = c.create_app("pglost")
            on_a = Phone(c.a, app, settle=c.nodes).connect(c.a)
            on_b = Phone(c.a, app, settle=c.nodes).connect(c.b)
            pg.stop()
            for node in c.nodes:
                assert wait_for(lambda: unavailable(node, "postgres"), 15), (node.name, node.health())
            # Calls that need the database: 503 with code 1030 (a push taken anyway must arrive).
            taken = []
            for node in c.nodes:
                r = api(node, app, "POST", "/v3/push", {"platform": "all", "audience": to(on_a, on_b),
                                                        "notification": {"alert": "during"}})
                if r.status_code == 200:
                    taken.append(r.json()["msg_id"])
                else:
                    assert r.status_code == 503 and r.json()["error"]["code"] == 1030, (node.name, r.text)
                r = requests.post(node.base + "/v1/devices/register", timeout=5,
                                  json={"app_key": app["app_key"], "platform": "android"})
                assert r.status_code == 503 and r.json()["error"]["code"] == 1030, (node.name, r.text)
            assert on_a.alive() and on_b.alive()
            pg.start()
            for node in c.nodes:
                assert wait_for(lambda: node.health()[0] == 200, 30), (node.name, node.health())
                assert health_fields(node.health()[1])["postgres"] == "ok"
            # The same connections, never dropped, get what comes next (and anything taken).
            msg_id = push(c.b, app, to(on_a, on_b))
            for d in (on_a, on_b):
                assert sorted(d.msg_ids(1 + len(taken))) == sorted(taken + [msg_id])
            on_a.close()
            on_b.close()
    finally:
        pg.close()


def test_nodes_that_lose_nats_keep_devices_and_recover():
    nats = PrivateNats()
    try:
        with cluster_of(n=2, nats=nats.url) as c:
            app = c.create_app("natslost")
            on_a = Phone(c.a, app, settle=c.nodes).connect(c.a)
            on_b = Phone(c.a, app, settle=c.nodes).connect(c.b)
            nats.stop()
            for node in c.nodes:
                assert wait_for(lambda: unavailable(node, "nats"), 15), (node.name, node.health())
            assert on_a.alive() and on_b.alive()
            nats.start()
            for node in c.nodes:
                assert wait_for(lambda: node.health()[0] == 200, 30), (node.name, node.health())
                assert health_fields(node.health()[1])["nats"] == "ok"
            msg_id = push(c.a, app, to(on_a, on_b))
            assert on_a.msg_ids(1) == [msg_id] and on_b.msg_ids(1) == [msg_id]
            on_a.close()
            on_b.close()
    finally:
        nats.close()
