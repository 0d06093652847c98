"""Fixtures: the real `pigeon` binary on a free loopback port, apps made with its CLI, the
official JPush Python client pointed at it, and devices that speak the device protocol over
real WebSockets (written from device-protocol.md, independent of Pigeon's Rust client).

PostgreSQL and NATS: `postgres_url()` makes a new database, `nats_url` is the NATS server, on
the servers `scripts/test` started (`PIGEON_TEST_POSTGRES_URL`, `PIGEON_TEST_NATS_URL`) or, when
those are not set, on private ones started with `scripts/services` the first time they are
needed. With `PIGEON_TEST_STORE=postgres`, every `Server` keeps its state in a new PostgreSQL
database instead of SQLite, and so do the CLI calls the tests make with `--data` of its
directory (through `pigeon-on-postgres`, which gives the real binary that database)."""

import base64
import collections
import collections.abc
import atexit
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PIGEON = os.environ.get("PIGEON_BIN", os.path.join(ROOT, "target", "debug", "pigeon"))
SERVICES = os.path.join(ROOT, "scripts", "services")

# "sqlite" (the default) or "postgres": where every `Server` keeps its state.
STORE = os.environ.get("PIGEON_TEST_STORE", "sqlite")
if STORE not in ("sqlite", "postgres"):
    raise RuntimeError(f"PIGEON_TEST_STORE={STORE!r}: sqlite or postgres")
if STORE == "postgres":
    # Every call of the binary goes through the wrapper, which finds the database of the
    # `--data` directory it is given (see Server).
    os.environ["PIGEON_TEST_REAL_BIN"] = PIGEON
    PIGEON = os.path.join(HERE, "pigeon-on-postgres")


def _services(*args):
    out = subprocess.run([SERVICES, *args], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/services {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout.strip()


_private_services = []


def _ensure_services():
    """PIGEON_TEST_POSTGRES_URL and PIGEON_TEST_NATS_URL: as given, else from private servers
    started now (once per session, stopped when it ends, also if it is killed)."""
    if os.environ.get("PIGEON_TEST_POSTGRES_URL") and os.environ.get("PIGEON_TEST_NATS_URL"):
        return
    out = _services("start", "--owner", str(os.getpid()))
    for line in out.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        if name == "PIGEON_TEST_SERVICES_DIR":
            _private_services.append(value)
            atexit.register(_services, "stop", value)
        elif not os.environ.get(name):
            os.environ[name] = value


def postgres_admin_url():
    """The superuser URL of the tests' PostgreSQL."""
    _ensure_services()
    return os.environ["PIGEON_TEST_POSTGRES_URL"]


def nats_server_url():
    _ensure_services()
    return os.environ["PIGEON_TEST_NATS_URL"]


def _psql():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
    return found[-1] if found else (shutil.which("psql") or "psql")


def psql(url, sql):
    """Runs SQL through psql on `url`; returns what it printed (unaligned, tuples only)."""
    out = subprocess.run([_psql(), "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PGCONNECT_TIMEOUT="5"))
    if out.returncode != 0:
        raise RuntimeError(f"psql {sql!r}: {out.stderr}")
    return out.stdout


def _new_database(admin):
    name = "pigeon_" + uuid.uuid4().hex[:16]
    psql(admin, f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + "/" + name


_spare = {"thread": None, "url": None}
# Tests that start servers from threads of their own (a background scenario beside the main
# one) call create_database at once: one at a time, or one joins a spare another has made but
# not started yet.
_spare_lock = threading.Lock()


def _make_spare(admin):
    try:
        _spare["url"] = _new_database(admin)
    except RuntimeError:
        _spare["url"] = None


def create_database(admin_url=None):
    """A new, empty database on the tests' PostgreSQL (or the one of `admin_url`); its URL.
    On the tests' PostgreSQL the next one is made in the background meanwhile (making one
    takes a good part of a second)."""
    if admin_url:
        return _new_database(admin_url)
    admin = postgres_admin_url()
    with _spare_lock:
        url = None
        if _spare["thread"] is not None:
            _spare["thread"].join()
            url, _spare["url"] = _spare["url"], None
        url = url or _new_database(admin)
        spare = threading.Thread(target=_make_spare, args=(admin,), daemon=True)
        spare.start()
        _spare["thread"] = spare
    return url


class PrivatePostgres:
    """A PostgreSQL server of one test's own, which it may stop and start again (same port,
    same data)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pigeon-pg.")
        self.admin_url = _services("postgres", self.dir)

    def database(self):
        return create_database(self.admin_url)

    def stop(self):
        _services("postgres-stop", self.dir)

    def start(self):
        _services("postgres", self.dir)

    def close(self):
        _services("stop", self.dir)


class PrivateNats:
    """A NATS server of one test's own, which it may stop and start again (same port)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pigeon-nats.")
        self.url = _services("nats", self.dir)

    def stop(self):
        _services("nats-stop", self.dir)

    def start(self):
        _services("nats", self.dir)

    def close(self):
        _services("stop", self.dir)


@pytest.fixture
def postgres_url():
    """Call it for the URL of a new, empty database: `url = postgres_url()`."""
    return create_database


@pytest.fixture(scope="session")
def nats_url():
    return nats_server_url()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`pigeon serve` on a free port. With `ca` (a CA bundle file), the server is expected
    to serve HTTPS (give it `--tls-cert`/`--tls-key` in `args`): `base` is https, `ws_base`
    wss, and every request of these fixtures trusts that CA."""

    def __init__(self, data, env=None, args=(), ca=None):
        self.data = data
        self.extra_env = env or {}
        self.extra_args = list(args)
        self.port = free_port()
        self.ca = ca
        self.base = f"{'https' if ca else 'http'}://127.0.0.1:{self.port}"
        self.ws_base = self.base.replace("http", "ws", 1)
        # What `requests` verifies the server's certificate with.
        self.verify = ca or True
        self.proc = None
        # PIGEON_TEST_STORE=postgres: a database of its own, which the CLI calls with its
        # --data find too (pigeon-on-postgres reads it from DATA.postgres-url).
        self.store_env = {}
        if STORE == "postgres" and "PIGEON_POSTGRES_URL" not in self.extra_env:
            url = create_database()
            os.makedirs(os.path.dirname(os.path.abspath(data)), exist_ok=True)
            with open(data + ".postgres-url", "w") as f:
                f.write(url)
            self.store_env = {"PIGEON_POSTGRES_URL": url}

    def env(self):
        return {**os.environ, "RUST_LOG": "warn", "PIGEON_SQLITE_SYNCHRONOUS": "normal",
                **self.store_env, **self.extra_env}

    def spawn(self, stderr=None):
        """Starts `pigeon serve` and returns at once; its log goes to `stderr` (a file) when
        given."""
        self.proc = subprocess.Popen(
            [PIGEON, "serve", "--data", self.data, "--listen", f"127.0.0.1:{self.port}",
             *self.extra_args], env=self.env(), stderr=stderr)

    def health(self, timeout=1):
        """GET /health: (HTTP status, JSON body or None); (None, None) when nothing answers."""
        try:
            r = requests.get(self.base + "/health", timeout=timeout, verify=self.verify)
        except requests.RequestException:
            return None, None
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, None

    def wait_ready(self, limit=20):
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pigeon serve exited with {self.proc.returncode}")
            try:
                if requests.get(self.base + "/health", timeout=1, verify=self.verify).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError("pigeon serve did not come up")

    def start(self, stderr=None):
        """Starts `pigeon serve` and waits for it; its log goes to `stderr` (a file) when given."""
        self.spawn(stderr)
        self.wait_ready()

    def ws_ssl(self):
        """The `ssl` argument of a WebSocket connect: a context trusting `ca`, or None."""
        if not self.ca:
            return None
        import ssl
        return ssl.create_default_context(cafile=self.ca)

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self):
        """kill -9."""
        if self.proc:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def create_app(self, name="test"):
        out = subprocess.run([PIGEON, "app", "create", "--name", name, "--data", self.data],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, **self.store_env,
                                  **{k: v for k, v in self.extra_env.items() if k == "PIGEON_POSTGRES_URL"}})
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


def collect_pushes(ws, expect, quiet=0.4, limit=5.0):
    """Collects push frames from a device's WebSocket until `expect` arrived and then `quiet`
    s pass with nothing more (so extra pushes are caught too), acking each."""
    got = []
    deadline = time.time() + limit
    while time.time() < deadline:
        wait = quiet if len(got) >= expect else max(0.05, deadline - time.time())
        try:
            frame = json.loads(ws.recv(timeout=wait))
        except TimeoutError:
            if len(got) >= expect:
                break
            continue
        if frame["op"] == "push":
            got.append(frame)
            ws.send(json.dumps({"op": "ack", "msg_ids": [frame["msg_id"]]}))
    return got


class Device:
    """A device written from the protocol text: register, hello, receive, ack."""

    def __init__(self, server, app_key, platform="android", tags=None, alias=None, **register):
        body = {"app_key": app_key, "platform": platform, **register}
        if tags:
            body["tags"] = tags
        if alias:
            body["alias"] = alias
        verify = getattr(server, "verify", True)
        r = requests.post(server.base + "/v1/devices/register", json=body, timeout=5,
                          verify=verify)
        assert r.status_code == 200, r.text
        self.platform = platform
        self.registration_id = r.json()["registration_id"]
        self.secret = r.json()["device_secret"]
        ws_ssl = server.ws_ssl() if hasattr(server, "ws_ssl") else None
        self.ws = connect(server.base.replace("http", "ws", 1) + "/v1/connect",
                          **({"ssl": ws_ssl} if ws_ssl else {}))
        self.ws.send(json.dumps({"op": "hello", "registration_id": self.registration_id,
                                 "device_secret": self.secret, "sdk": "pytest/1"}))
        welcome = json.loads(self.ws.recv(timeout=5))
        assert welcome["op"] == "welcome", welcome
        self.welcome = welcome

    def pushes(self, expect, quiet=0.4, limit=5.0):
        return collect_pushes(self.ws, expect, quiet, limit)

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
