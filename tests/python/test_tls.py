"""HTTPS and WSS on the listener (`--tls-cert`, `--tls-key`): a CA and server certificates of
the test's own (the `cryptography` package), the real binary serving them; the official JPush
Python client pushing over https to a device on wss, HTTP/2 by ALPN for the API, no plain
HTTP on the port, the handshake under the header timeout and the pending cap, the start
errors for bad files, and SIGHUP reloading the pair without dropping open connections."""

import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import uuid

import httpx
import jpush
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conftest import PIGEON, Device, Server, free_port, local_zone


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key, traditional=False):
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL if traditional
           else serialization.PrivateFormat.PKCS8)
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


class Pki:
    """A CA, and two server certificates it signed for localhost and 127.0.0.1: `a` (P-256,
    PKCS#8 key, written as a full chain: leaf then CA, as Let's Encrypt's fullchain.pem) and
    `b` (RSA, its key in the traditional `BEGIN RSA PRIVATE KEY` form)."""

    def __init__(self, root):
        self.root = root
        now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(_name("Pigeon Test CA"))
            .issuer_name(_name("Pigeon Test CA")).public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(self.ca_key, hashes.SHA256()))
        self.ca = self._write("ca.pem", self.ca_cert.public_bytes(serialization.Encoding.PEM))
        self.a = self._leaf("a", "pigeon-a", ec.generate_private_key(ec.SECP256R1()),
                            chain=True, traditional=False)
        self.b = self._leaf("b", "pigeon-b", rsa.generate_private_key(65537, 2048),
                            chain=False, traditional=True)

    def _write(self, name, data):
        path = os.path.join(self.root, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def _leaf(self, name, cn, key, chain, traditional):
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=10))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(self.ca_key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        if chain:
            pem += self.ca_cert.public_bytes(serialization.Encoding.PEM)
        return {
            "cert": self._write(f"{name}-cert.pem", pem),
            "key": self._write(f"{name}-key.pem", _pem_key(key, traditional)),
            "der": cert.public_bytes(serialization.Encoding.DER),
            "cn": cn,
        }


@pytest.fixture(scope="module")
def pki():
    with tempfile.TemporaryDirectory() as tmp:
        yield Pki(tmp)


def tls_server(tmp, pki, pair, env=None):
    """A server on copies of `pair`'s files (so a test may replace them); not started."""
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    shutil.copy(pair["cert"], cert)
    shutil.copy(pair["key"], key)
    s = Server(os.path.join(tmp, "data"), env=env,
               args=["--tls-cert", cert, "--tls-key", key], ca=pki.ca)
    s.cert_path, s.key_path = cert, key
    return s


@pytest.fixture(scope="module")
def https_server(pki):
    with tempfile.TemporaryDirectory() as tmp:
        s = tls_server(tmp, pki, pki.a)
        s.start()
        yield s
        s.stop()


def peer_cert(server, alpn=None):
    """(DER certificate, selected ALPN protocol) of a new TLS connection to the server."""
    ctx = ssl.create_default_context(cafile=server.ca)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True), tls.selected_alpn_protocol()


def jpush_client(server, app):
    return jpush.JPush(app["app_key"], app["master_secret"], zone=local_zone(server.base))


def send_push(jp, alert, audience=None):
    push = jp.create_push()
    push.audience = audience or jpush.all_
    push.platform = jpush.all_
    push.notification = jpush.notification(alert=alert)
    resp = push.send()
    assert resp.status_code == 200
    return resp.payload


def test_jpush_client_pushes_over_https_to_a_device_on_wss(https_server, monkeypatch):
    s = https_server
    assert s.base.startswith("https://")
    app = s.create_app("tls-" + uuid.uuid4().hex[:6])
    device = Device(s, app["app_key"], alias="tls_user")
    try:
        assert device.ws.request.path == "/v1/connect"
        # The JPush SDK verifies certificates: a CA it does not know is refused...
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        with pytest.raises(jpush.common.APIRequestException):
            send_push(jpush_client(s, app), "untrusted")
        # ...and the test CA, given as requests reads it from the environment, works.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", s.ca)
        out = send_push(jpush_client(s, app), "over https",
                        audience=jpush.audience(jpush.alias("tls_user")))
        got = device.pushes(1)
        assert [f["msg_id"] for f in got] == [out["msg_id"]]
        assert got[0]["notification"]["alert"] == "over https"
    finally:
        device.close()


def test_api_speaks_http2_by_alpn(https_server):
    s = https_server
    der, proto = peer_cert(s, ["h2", "http/1.1"])
    assert proto == "h2"
    assert peer_cert(s, ["http/1.1"])[1] == "http/1.1"
    # A client that offers no ALPN at all gets HTTP/1.1.
    assert peer_cert(s)[1] is None
    app = s.create_app("h2-" + uuid.uuid4().hex[:6])
    ctx = ssl.create_default_context(cafile=s.ca)
    with httpx.Client(http2=True, verify=ctx, timeout=5) as client:
        r = client.get(s.base + "/health")
        assert r.http_version == "HTTP/2" and r.json() == {"status": "ok"}
        r = client.post(s.base + "/v1/devices/register",
                        json={"app_key": app["app_key"], "platform": "android"})
        assert r.http_version == "HTTP/2" and r.status_code == 200, r.text
        r = client.post(s.base + "/v3/push", auth=(app["app_key"], app["master_secret"]),
                        json={"platform": "all", "audience": "all",
                              "notification": {"alert": "h2"}})
        assert r.http_version == "HTTP/2" and r.status_code == 200, r.text
        assert r.json()["msg_id"].isdigit()
        # Errors keep their JSON shape over HTTP/2 too.
        r = client.get(s.base + "/v3/nothing")
        assert r.status_code == 404 and "error" in r.json()


def test_plain_http_on_the_tls_port_gets_no_http_answer(https_server):
    s = https_server
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        try:
            while chunk := sock.recv(4096):
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert not got.startswith(b"HTTP/"), got
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{s.port}/health", timeout=5)
    # The server is still fine.
    assert s.health() == (200, {"status": "ok"})


def test_a_handshake_that_never_finishes_holds_no_place(pki):
    """Silent connections and half handshakes are closed after the header timeout, and the
    pending cap evicts them for new clients, as plain connections are."""
    with tempfile.TemporaryDirectory() as tmp:
        s = tls_server(tmp, pki, pki.a, env={"PIGEON_HEADER_TIMEOUT_MS": "800",
                                             "PIGEON_MAX_PENDING_CONNECTIONS": "4"})
        s.start()
        try:
            silent = [socket.create_connection(("127.0.0.1", s.port), timeout=5)
                      for _ in range(10)]
            # A ClientHello's first bytes, never finished.
            silent[-1].sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            time.sleep(0.2)
            # Ten pending, cap four: the newcomer evicts the oldest and is served.
            assert s.health(timeout=3) == (200, {"status": "ok"})
            deadline = time.time() + 3
            for sock in silent:
                sock.settimeout(max(0.1, deadline - time.time()))
                try:
                    assert sock.recv(1024) == b""
                except ConnectionResetError:
                    pass
                sock.close()
        finally:
            s.stop()


def serve_error(tmp, *args, env=None):
    """`pigeon serve` that must fail at start: its stderr."""
    out = subprocess.run(
        [PIGEON, "serve", "--data", os.path.join(tmp, "data"), "--listen",
         f"127.0.0.1:{free_port()}", *args],
        capture_output=True, text=True, timeout=30,
        env={**os.environ, "RUST_LOG": "warn", **(env or {})})
    assert out.returncode != 0, out.stderr
    return out.stderr


def test_bad_certificate_files_stop_the_start_with_a_reason(pki):
    with tempfile.TemporaryDirectory() as tmp:
        garbage = os.path.join(tmp, "garbage.pem")
        with open(garbage, "wb") as f:
            f.write(os.urandom(300))
        der = os.path.join(tmp, "cert.der")
        with open(der, "wb") as f:
            f.write(pki.a["der"])
        missing = os.path.join(tmp, "missing.pem")
        a, b = pki.a, pki.b
        cases = [
            (["--tls-cert", a["cert"], "--tls-key", b["key"]],
             [f"the TLS key {b['key']} does not match the certificate {a['cert']}"]),
            (["--tls-cert", garbage, "--tls-key", a["key"]],
             [f"the TLS certificate file {garbage} is not PEM"]),
            (["--tls-cert", der, "--tls-key", a["key"]],
             [f"the TLS certificate file {der} is not PEM", "DER"]),
            (["--tls-cert", a["cert"], "--tls-key", garbage],
             [f"the TLS key file {garbage} is not PEM"]),
            (["--tls-cert", missing, "--tls-key", a["key"]],
             [f"reading the TLS certificate file {missing}", "No such file"]),
            (["--tls-cert", a["cert"], "--tls-key", missing],
             [f"reading the TLS key file {missing}", "No such file"]),
            (["--tls-cert", a["cert"]], ["a TLS certificate is given", "but no key"]),
            (["--tls-key", a["key"]], ["a TLS key is given", "but no certificate"]),
            # The files swapped: a key where the certificate goes, and the other way round.
            (["--tls-cert", a["key"], "--tls-key", a["key"]],
             [f"the TLS certificate file {a['key']} holds no certificate"]),
            (["--tls-cert", a["cert"], "--tls-key", a["cert"]],
             [f"the TLS key file {a['cert']} holds no private key"]),
        ]
        for args, expected in cases:
            err = serve_error(tmp, *args)
            for text in expected:
                assert text in err, (args, err)
        # The environment names them as the flags do; one of the two alone is refused too.
        err = serve_error(tmp, env={"PIGEON_TLS_CERT": a["cert"]})
        assert "but no key" in err, err
        err = serve_error(tmp, env={"PIGEON_TLS_CERT": a["cert"], "PIGEON_TLS_KEY": b["key"]})
        assert "does not match the certificate" in err, err


def test_tls_from_the_config_file(pki):
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "pigeon.toml")
        with open(config, "w") as f:
            f.write(f'[tls]\ncert = "{pki.b["cert"]}"\nkey = "{pki.b["key"]}"\n')
        s = Server(os.path.join(tmp, "data"), args=["--config", config], ca=pki.ca)
        s.start()
        try:
            assert peer_cert(s)[0] == pki.b["der"]
        finally:
            s.stop()


def wait_for(predicate, limit=5.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sighup_reloads_the_certificate_and_keeps_open_connections(pki, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki.ca)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "pigeon.log")
        s = tls_server(tmp, pki, pki.a, env={"RUST_LOG": "info"})
        with open(log_path, "wb") as log:
            s.start(stderr=log)
        try:
            app = s.create_app("reload-" + uuid.uuid4().hex[:6])
            jp = jpush_client(s, app)
            device = Device(s, app["app_key"])
            # A keep-alive API connection, opened on the old certificate.
            session = requests.Session()
            session.verify = pki.ca
            assert session.get(s.base + "/health", timeout=5).ok
            assert peer_cert(s)[0] == pki.a["der"]

            # Renewed files (another key, another CN and serial), then SIGHUP.
            shutil.copy(pki.b["cert"], s.cert_path)
            shutil.copy(pki.b["key"], s.key_path)
            s.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: peer_cert(s)[0] == pki.b["der"]), "still the old certificate"
            # The device connected before is still there and still gets pushes.
            out = send_push(jp, "after reload")
            assert [f["msg_id"] for f in device.pushes(1)] == [out["msg_id"]]
            assert session.get(s.base + "/health", timeout=5).ok

            # A broken file on the next SIGHUP: logged, and the pair before stays in use.
            with open(s.cert_path, "wb") as f:
                f.write(b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n")
            s.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "TLS reload failed" in open(log_path).read())
            assert s.proc.poll() is None
            assert peer_cert(s)[0] == pki.b["der"]
            out = send_push(jp, "after a bad reload")
            assert [f["msg_id"] for f in device.pushes(1)] == [out["msg_id"]]
            device.close()
        finally:
            s.stop()
        text = open(log_path, encoding="utf-8").read()
    in_use = [l for l in text.splitlines() if "TLS certificate in use" in l]
    assert len(in_use) == 1 and "CN=pigeon-a" in in_use[0] and "not_after=" in in_use[0], text
    reloaded = [l for l in text.splitlines() if "TLS certificate reloaded" in l]
    assert len(reloaded) == 1 and "CN=pigeon-b" in reloaded[0], text
    failed = [l for l in text.splitlines() if "TLS reload failed" in l]
    assert len(failed) == 1 and " ERROR " in failed[0] and s.cert_path in failed[0], text
    assert "\x1b[" not in text


def test_the_console_cookie_is_secure_over_https(https_server):
    s = https_server
    app = s.create_app("console-" + uuid.uuid4().hex[:6])
    r = requests.post(s.base + "/console/api/session", verify=s.ca, timeout=5,
                      headers={"X-Pigeon-Console": "1"},
                      json={"app_key": app["app_key"], "master_secret": app["master_secret"]})
    assert r.status_code == 200, r.text
    cookie = r.headers["Set-Cookie"]
    assert "; Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
