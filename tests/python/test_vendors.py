"""An app's push channels against the real binary: every app gets a Web Push VAPID key pair
when it is created (`pigeon app show` prints its public key, an uncompressed P-256 point), and
vendor credentials are checked per vendor, stored, listed masked (CLI and HTTP) and removed;
no secret comes back in full."""

import base64
import json
import os
import sqlite3
import stat
import subprocess
import tempfile

import requests

from conftest import PIGEON

FCM = {"type": "service_account", "project_id": "demo-project",
       "client_email": "pigeon@demo-project.iam.gserviceaccount.com",
       "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n",
       "token_uri": "http://127.0.0.1:9/token"}


def cli(*args, data):
    # FCM's token_uri below is on 127.0.0.1: the CLI applies the server's address policy.
    return subprocess.run([PIGEON, "app", *args, "--data", data], capture_output=True, text=True,
                          env=dict(os.environ, PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS="true"))


def b64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def on_p256(point):
    """Whether an uncompressed point satisfies y² = x³ - 3x + b over P-256's field."""
    p = 2**256 - 2**224 + 2**192 + 2**96 - 1
    b = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
    x, y = int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big")
    return (y * y - (x ** 3 - 3 * x + b)) % p == 0


def test_every_app_has_a_vapid_key_and_app_show_prints_it():
    with tempfile.TemporaryDirectory() as data:
        app = json.loads(cli("create", "--name", "web", data=data).stdout)
        out = cli("show", "--app-key", app["app_key"], data=data)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert len(lines) == 1
        shown = json.loads(lines[0])
        assert shown["app_key"] == app["app_key"] and shown["name"] == "web"
        point = b64url(shown["webpush_vapid_public_key"])
        assert len(point) == 65 and point[0] == 4 and on_p256(point)
        assert "=" not in shown["webpush_vapid_public_key"]
        assert app["master_secret"] not in out.stdout
        # The same key every time; another app has its own.
        again = json.loads(cli("show", "--app-key", app["app_key"], data=data).stdout)
        assert again["webpush_vapid_public_key"] == shown["webpush_vapid_public_key"]
        other = json.loads(cli("create", "--name", "other", data=data).stdout)
        theirs = json.loads(cli("show", "--app-key", other["app_key"], data=data).stdout)
        assert theirs["webpush_vapid_public_key"] != shown["webpush_vapid_public_key"]
        out = cli("show", "--app-key", "x" * 24, data=data)
        assert out.returncode != 0 and "no app" in out.stderr


def test_vendor_credentials_are_checked_stored_and_shown_masked(server, app):
    data = server.data
    key = app["app_key"]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(FCM, f)
    try:
        out = cli("vendor", "set", "--app-key", key, "--vendor", "fcm", "--credentials", "@" + f.name, data=data)
    finally:
        os.unlink(f.name)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["vendor"] == "fcm" and shown["credentials"]["project_id"] == "demo-project"
    assert "MIIEvQ" not in out.stdout and shown["credentials"]["private_key"].startswith("----")
    out = cli("vendor", "set", "--app-key", key, "--vendor", "xiaomi",
              "--credentials", json.dumps({"app_secret": "xm-secret-123", "package_name": "com.demo"}), data=data)
    assert out.returncode == 0, out.stderr
    listed = [json.loads(l) for l in cli("vendor", "list", "--app-key", key, data=data).stdout.splitlines()]
    assert [v["vendor"] for v in listed] == ["fcm", "xiaomi"]
    assert listed[1]["credentials"] == {"app_secret": "xm-s… (13 characters)", "package_name": "com.demo"}

    # The same over HTTP, for the app's own backend.
    auth = (key, app["master_secret"])
    r = requests.get(server.base + "/v3/vendors", auth=auth, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [v["vendor"] for v in body["vendors"]] == ["fcm", "xiaomi"]
    assert "xm-secret-123" not in r.text and "MIIEvQ" not in r.text
    assert len(b64url(body["webpush_vapid_public_key"])) == 65
    huawei = {"app_id": "10086", "client_id": "10086", "client_secret": "hw-very-secret"}
    r = requests.put(server.base + "/v3/vendors/huawei", data=json.dumps(huawei), auth=auth, timeout=5)
    assert r.status_code == 200 and "hw-very-secret" not in r.text, r.text
    assert r.json()["credentials"]["client_secret"] == "hw-v… (14 characters)"
    r = requests.delete(server.base + "/v3/vendors/xiaomi", auth=auth, timeout=5)
    assert r.status_code == 200
    r = requests.get(server.base + "/v3/vendors", auth=auth, timeout=5)
    assert [v["vendor"] for v in r.json()["vendors"]] == ["fcm", "huawei"]

    # Refusals, with what is wrong.
    for vendor, creds, words in [
        ("pager", {"x": "y"}, "unknown vendor"),
        ("apns", {"key_id": "K"}, "need key_id, team_id, private_key, topic; or certificate"),
        ("oppo", {"app_key": "a", "master_secret": "", }, "non-empty string"),
        ("vivo", {"app_id": "1", "app_key": "k", "app_secret": "s", "extra": "x"}, "unknown field"),
        ("meizu", ["app_id"], "must be a JSON object"),
        ("xiaomi", {"app_secret": "s", "package_name": "p", "concurrency": 0}, "concurrency must be a whole number from 1 to 1024"),
        ("fcm", dict(FCM, rate_per_minute="fast"), "rate_per_minute must be a whole number"),
    ]:
        r = requests.put(f"{server.base}/v3/vendors/{vendor}", data=json.dumps(creds), auth=auth, timeout=5)
        assert r.status_code == 400 and r.json()["error"]["code"] == 1003 and words in r.json()["error"]["message"], r.text
        out = cli("vendor", "set", "--app-key", key, "--vendor", vendor, "--credentials", json.dumps(creds), data=data)
        assert out.returncode != 0 and words in out.stderr, out.stderr
    r = requests.put(server.base + "/v3/vendors/fcm", data="{not json", auth=auth, timeout=5)
    assert r.status_code == 400
    r = requests.delete(server.base + "/v3/vendors/vivo", auth=auth, timeout=5)
    assert r.status_code == 404 and r.json()["error"]["code"] == 1003
    assert requests.get(server.base + "/v3/vendors", timeout=5).status_code == 401
    out = cli("vendor", "remove", "--app-key", key, "--vendor", "vivo", data=data)
    assert out.returncode != 0 and "no vivo credentials" in out.stderr
    out = cli("vendor", "set", "--app-key", key, "--vendor", "fcm", "--credentials", "@/no/such/file", data=data)
    assert out.returncode != 0 and "reading credentials" in out.stderr

    # At rest: the database holds none of the secrets in the clear (sealed under the data
    # directory's secret.key, which only its owner may read).
    conn = sqlite3.connect(os.path.join(data, "pigeon.db"))
    stored = [row[0] for row in conn.execute("SELECT body FROM vendor_credentials")]
    conn.close()
    assert len(stored) >= 2 and all(b.startswith("sealed:v1:") for b in stored), stored
    assert not any("hw-very-secret" in b or "MIIEvQ" in b for b in stored)
    assert stat.S_IMODE(os.stat(os.path.join(data, "secret.key")).st_mode) == 0o600
