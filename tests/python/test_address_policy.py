"""One address policy for every URL a client gives the server (vendor credentials' base_url /
auth_url / token_uri, callback endpoints, a push's callback.url), against the real binary: a
loopback, private, link-local or metadata address, in any way of writing it, is refused with
400 / 1003 naming the field unless the operator allows private networks for that kind; the CLI
applies the same policy from the same settings; and a vendor host that resolves to a private
address when the server connects is not contacted."""

import http.server
import ipaddress
import json
import os
import socket
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from conftest import PIGEON, Server

# Every way of writing a non-public host that must be refused.
PRIVATE_HOSTS = [
    "127.0.0.1",
    "localhost",
    "LOCALHOST.",
    "api.localhost",
    "[::1]",
    "2130706433",  # decimal 127.0.0.1
    "0x7f.1",  # hex and short form
    "0177.0.0.1",  # octal
    "127.1",
    "127.0.0.1.",
    "[::ffff:127.0.0.1]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[64:ff9b::127.0.0.1]",  # NAT64
    "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
    "169.254.169.254",  # cloud metadata
    "[fd00::1]",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "0.0.0.0",
]

HUAWEI = {"app_id": "10086", "client_id": "10086", "client_secret": "hw-very-secret"}
XIAOMI = {"app_secret": "xm-secret", "package_name": "com.example"}
FCM = {"type": "service_account", "project_id": "demo-project",
       "client_email": "pigeon@demo-project.iam.gserviceaccount.com",
       "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n",
       "token_uri": "https://oauth2.googleapis.com/token"}


def cli_env(**allow):
    """The environment of a CLI run: no PIGEON_* setting of the caller's, plus `allow`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIGEON_")}
    env.update(allow)
    return env


def cli(*args, data, env=None):
    return subprocess.run([PIGEON, "app", *args, "--data", data], capture_output=True, text=True,
                          env=env or cli_env(), timeout=30)


def refused(r, field):
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == 1003, r.text
    assert error["message"].startswith(field + ": "), r.text
    return error["message"]


def test_vendor_urls_at_private_addresses_are_refused(server, app):
    auth = (app["app_key"], app["master_secret"])
    for host in PRIVATE_HOSTS:
        for field in ["base_url", "auth_url"]:
            creds = dict(HUAWEI, **{field: f"http://{host}:8080/x"})
            r = requests.put(server.base + "/v3/vendors/huawei", data=json.dumps(creds), auth=auth, timeout=10)
            message = refused(r, field)
            assert "vendors_allow_private_networks" in message, message
    r = requests.put(server.base + "/v3/vendors/xiaomi", auth=auth, timeout=10,
                     data=json.dumps(dict(XIAOMI, base_url="http://2130706433/")))
    assert refused(r, "base_url") == ("base_url: 127.0.0.1 is a loopback address; "
                                      "set vendors_allow_private_networks to allow it")
    r = requests.put(server.base + "/v3/vendors/xiaomi", auth=auth, timeout=10,
                     data=json.dumps(dict(XIAOMI, base_url="http://169.254.169.254/latest/meta-data/")))
    assert "metadata" in refused(r, "base_url")
    r = requests.put(server.base + "/v3/vendors/fcm", auth=auth, timeout=10,
                     data=json.dumps(dict(FCM, token_uri="http://[::ffff:127.0.0.1]/token")))
    refused(r, "token_uri")
    r = requests.put(server.base + "/v3/vendors/xiaomi", auth=auth, timeout=10,
                     data=json.dumps(dict(XIAOMI, base_url="file:///etc/passwd")))
    refused(r, "base_url")
    # Nothing of it was stored.
    r = requests.get(server.base + "/v3/vendors", auth=auth, timeout=5)
    assert r.json()["vendors"] == [], r.text


def test_the_cli_refuses_them_too_unless_the_config_allows(server, app):
    creds = json.dumps(dict(XIAOMI, base_url="http://0x7f.1:9/"))
    out = cli("vendor", "set", "--app-key", app["app_key"], "--vendor", "xiaomi", "--credentials", creds,
              data=server.data)
    assert out.returncode != 0
    assert "base_url: 127.0.0.1 is a loopback address; set vendors_allow_private_networks" in out.stderr
    out = cli("callback", "add", "--app-key", app["app_key"], "--url", "http://[::127.0.0.1]:9/cb",
              data=server.data)
    assert out.returncode != 0
    assert "url: ::7f00:1 is a loopback address" in out.stderr or "url: [::7f00:1] is a loopback" in out.stderr, \
        out.stderr

    # The same settings as the server's: the environment, or its configuration file.
    out = cli("vendor", "set", "--app-key", app["app_key"], "--vendor", "xiaomi", "--credentials", creds,
              data=server.data, env=cli_env(PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS="true"))
    assert out.returncode == 0, out.stderr
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write("vendors_allow_private_networks = true\n[callbacks]\nallow_private_networks = true\n")
    try:
        out = cli("vendor", "set", "--app-key", app["app_key"], "--vendor", "huawei", "--config", f.name,
                  "--credentials", json.dumps(dict(HUAWEI, auth_url="http://localhost:9/token")),
                  data=server.data)
        assert out.returncode == 0, out.stderr
        out = cli("callback", "add", "--app-key", app["app_key"], "--url", "http://localhost:9/cb",
                  "--config", f.name, data=server.data)
        assert out.returncode == 0, out.stderr
    finally:
        os.unlink(f.name)


def test_callback_endpoints_at_private_addresses_are_refused(server, app):
    auth = (app["app_key"], app["master_secret"])
    for host in PRIVATE_HOSTS:
        r = requests.post(server.base + "/v3/callbacks", auth=auth, timeout=10,
                          data=json.dumps({"url": f"http://{host}:8080/cb"}))
        message = refused(r, "url")
        assert "[callbacks] allow_private_networks" in message, message
    r = requests.get(server.base + "/v3/callbacks", auth=auth, timeout=5)
    assert r.json()["callbacks"] == []


def test_a_push_with_a_private_callback_url_is_refused(server, app):
    auth = (app["app_key"], app["master_secret"])
    for path in ["/v3/push", "/v3/push/validate"]:
        for host in ["127.0.0.1", "localhost", "2130706433", "[::ffff:10.0.0.1]", "169.254.169.254"]:
            push = {"platform": "all", "audience": "all", "notification": {"alert": "hi"},
                    "callback": {"url": f"http://{host}/cb", "type": 1}}
            r = requests.post(server.base + path, data=json.dumps(push), auth=auth, timeout=10)
            refused(r, "callback.url")


class Counter(http.server.BaseHTTPRequestHandler):
    """Counts every request and answers 200 {}."""
    hits = []

    def do_POST(self):
        self.hits.append(self.path)
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"code": 0, "result": "ok", "data": {"id": "x"}}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def counter(address="127.0.0.1"):
    handler = type("Handler", (Counter,), {"hits": []})
    httpd = http.server.ThreadingHTTPServer((address, 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, handler.hits


def own_server(tmp, **env):
    server = Server(os.path.join(tmp, "data"), env=env)
    server.start()
    app = server.create_app("allowed")
    return server, (app["app_key"], app["master_secret"])


def test_with_the_allow_settings_on_they_are_accepted_each_for_its_own_kind():
    with tempfile.TemporaryDirectory() as tmp:
        server, auth = own_server(tmp, PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS="true")
        try:
            r = requests.put(server.base + "/v3/vendors/huawei", auth=auth, timeout=10,
                             data=json.dumps(dict(HUAWEI, base_url="http://127.0.0.1:9", auth_url="http://[::1]:9/t")))
            assert r.status_code == 200, r.text
            # Allowing vendors does not allow callbacks.
            r = requests.post(server.base + "/v3/callbacks", auth=auth, timeout=10,
                              data=json.dumps({"url": "http://localhost:9/cb"}))
            refused(r, "url")
        finally:
            server.stop()
    with tempfile.TemporaryDirectory() as tmp:
        server, auth = own_server(tmp, PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS="true")
        try:
            r = requests.post(server.base + "/v3/callbacks", auth=auth, timeout=10,
                              data=json.dumps({"url": "http://localhost:9/cb"}))
            assert r.status_code == 200, r.text
            device = requests.post(server.base + "/v1/devices/register", timeout=5,
                                   json={"app_key": auth[0], "platform": "android"}).json()
            push = {"platform": "all", "audience": {"registration_id": [device["registration_id"]]},
                    "notification": {"alert": "hi"}, "callback": {"url": "http://127.0.0.1:9/cb"}}
            r = requests.post(server.base + "/v3/push", data=json.dumps(push), auth=auth, timeout=10)
            assert r.status_code == 200, r.text
            # Allowing callbacks does not allow vendors.
            r = requests.put(server.base + "/v3/vendors/xiaomi", auth=auth, timeout=10,
                             data=json.dumps(dict(XIAOMI, base_url="http://127.0.0.1:9")))
            refused(r, "base_url")
        finally:
            server.stop()


def push_through_xiaomi(allow_vendors):
    """Xiaomi credentials whose base_url is a name (this machine's host name) that resolves to a
    loopback address, stored while private networks were allowed (as if the name had resolved
    to a public address then); a push to an offline device with a Xiaomi token; what the
    vendor's address received."""
    hostname = socket.gethostname()
    fake, hits = counter(socket.gethostbyname(hostname))
    try:
        port = fake.server_address[1]
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "data")
            env = {"PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS": "true" if allow_vendors else "false"}
            server = Server(data, env=env)
            app = server.create_app("rebinding")
            creds = dict(XIAOMI, base_url=f"http://{hostname}:{port}")
            out = cli("vendor", "set", "--app-key", app["app_key"], "--vendor", "xiaomi",
                      "--credentials", json.dumps(creds), data=data,
                      env=cli_env(PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS="true"))
            assert out.returncode == 0, out.stderr
            server.start()
            try:
                device = requests.post(server.base + "/v1/devices/register", timeout=5, json={
                    "app_key": app["app_key"], "platform": "android",
                    "push_tokens": {"xiaomi": "regid-1"}}).json()
                push = {"platform": ["android"], "audience": {"registration_id": [device["registration_id"]]},
                        "notification": {"alert": "hi"}}
                r = requests.post(server.base + "/v3/push", data=json.dumps(push),
                                  auth=(app["app_key"], app["master_secret"]), timeout=10)
                assert r.status_code == 200, r.text
                deadline = time.time() + 4
                while time.time() < deadline and not hits:
                    time.sleep(0.1)
                return list(hits)
            finally:
                server.stop()
    finally:
        fake.shutdown()


def test_a_vendor_host_resolving_to_a_private_address_is_not_contacted():
    # This machine's own host name stands for a vendor host that has come to resolve to a
    # private address: it resolves to one of this machine's own (loopback, or a private
    # interface address), where the fake listens.
    hostname = socket.gethostname()
    resolved = ipaddress.ip_address(socket.gethostbyname(hostname))
    assert resolved.is_private, f"{hostname} resolves to the public {resolved}"
    # With the setting on, the very same credentials reach the address: the test can tell.
    assert push_through_xiaomi(allow_vendors=True), "the allowed server never reached the fake"
    # Off, the name is resolved when connecting, found private, and nothing is sent.
    assert push_through_xiaomi(allow_vendors=False) == []
