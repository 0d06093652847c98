"""SMS fallback (`sms_message`) against the real server and a real HTTP server standing in for
the SMS provider: when the delay has passed, each targeted device that has not acked the push
and has a mobile number bound gets exactly one SMS (the contract's JSON object); devices
reached in time get none, a recalled push sends none, the timer survives a restart, provider
errors are retried and then reported, and each result is an `Sms.Result` event."""

import json
import os
import subprocess
import tempfile
import time

import requests

from conftest import PIGEON, Device, Server
from test_callbacks import FAST, Receiver, add_callback
from test_recall import recall, reconnect


class Provider(Receiver):
    """The SMS provider: every SMS it was posted, as JSON."""

    def sms(self, msg_id=None):
        with self.lock:
            out = [json.loads(r["body"]) for r in self.requests]
        return [s for s in out if msg_id is None or s["msg_id"] == msg_id]


def bind_mobile(server, app, device, mobile):
    r = requests.post(f"{server.base}/v3/devices/{device.registration_id}",
                      data=json.dumps({"mobile": mobile}), timeout=5,
                      auth=(app["app_key"], app["master_secret"]))
    assert r.status_code == 200, r.text


def push(server, app, rids, sms):
    body = {"platform": "all", "audience": {"registration_id": rids},
            "notification": {"alert": "sms"}, "sms_message": sms}
    return requests.post(server.base + "/v3/push", data=json.dumps(body), timeout=5,
                         auth=(app["app_key"], app["master_secret"]))


def pushed(server, app, rids, sms):
    r = push(server, app, rids, sms)
    assert r.status_code == 200, r.text
    return r.json()["msg_id"]


def offline(server, app, mobile=None):
    d = Device(server, app["app_key"])
    if mobile:
        bind_mobile(server, app, d, mobile)
    d.close()
    return d


def test_only_devices_not_reached_in_time_get_one_sms_each():
    provider, rcv = Provider(), Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "pigeon.toml")
        with open(config, "w") as f:
            f.write(f'[sms]\nprovider = "http"\nurl = "{provider.url}"\n')
        server = Server(os.path.join(tmp, "data"), env=FAST, args=["--config", config])
        server.start()
        try:
            app = server.create_app("sms")
            add_callback(server, app, rcv.url, "--commands", "Sms.Result")
            time.sleep(1.2)
            online = Device(server, app["app_key"])
            bind_mobile(server, app, online, "13800000001")
            away = offline(server, app, "13800000002")
            no_mobile = offline(server, app)
            back_in_time = offline(server, app, "13800000004")
            rids = [d.registration_id for d in (online, away, no_mobile, back_in_time)]
            msg_id = pushed(server, app, rids, {"delay_time": 2, "temp_id": 5,
                                               "temp_para": {"code": "1234"}, "content": "your code"})
            assert [f["msg_id"] for f in online.pushes(1)] == [msg_id]
            ws = reconnect(server, back_in_time)
            frame = json.loads(ws.recv(timeout=5))
            assert frame["op"] == "push"
            ws.send(json.dumps({"op": "ack", "msg_ids": [msg_id]}))
            time.sleep(0.5)
            assert provider.sms() == []  # not before the delay
            assert provider.wait(lambda: provider.sms(), limit=5)
            time.sleep(1.0)
            assert provider.sms() == [{"mobile": "13800000002", "msg_id": msg_id,
                                       "registration_id": away.registration_id, "temp_id": 5,
                                       "temp_para": {"code": "1234"}, "content": "your code"}]
            assert provider.requests[0]["headers"]["content-type"] == "application/json"
            assert rcv.wait(lambda: rcv.events("Sms.Result"))
            (event,) = rcv.events("Sms.Result")
            assert event["MsgId"] == msg_id and event["RegistrationId"] == away.registration_id
            assert event["Mobile"] == "*******0002" and event["ErrCode"] == 0
            ws.close()
            online.close()
        finally:
            server.stop()
            provider.close()
            rcv.close()


def test_at_once_recalled_and_across_a_restart():
    provider = Provider()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(FAST, PIGEON_SMS_PROVIDER="http", PIGEON_SMS_URL=provider.url)
        server = Server(os.path.join(tmp, "data"), env=env)
        server.start()
        try:
            app = server.create_app("sms2")
            # delay_time 0: with the push, to every target with a number (none has it yet).
            online = Device(server, app["app_key"])
            bind_mobile(server, app, online, "13900000001")
            now = pushed(server, app, [online.registration_id], {"delay_time": 0, "temp_id": 1})
            assert provider.wait(lambda: provider.sms(now), limit=3)
            assert provider.sms(now)[0]["mobile"] == "13900000001"
            online.close()

            # A recalled push sends none.
            away = offline(server, app, "13900000002")
            gone = pushed(server, app, [away.registration_id], {"delay_time": 1, "temp_id": 1})
            assert recall(server, app, gone).status_code == 200

            # The timer survives a restart, and fires once.
            later = pushed(server, app, [away.registration_id], {"delay_time": 2, "temp_id": 2})
            time.sleep(0.3)
            server.stop()
            server.start()
            assert provider.wait(lambda: provider.sms(later), limit=6)
            time.sleep(1.0)
            assert len(provider.sms(later)) == 1
            assert provider.sms(gone) == []
        finally:
            server.stop()
            provider.close()


def test_the_push_apis_text_form_sends_its_content():
    """Seed 002's form: `content` and `delay_time`, no template. The provider gets the text
    as it was written (CJK counted by characters, so 480 of them pass)."""
    provider = Provider()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(FAST, PIGEON_SMS_PROVIDER="http", PIGEON_SMS_URL=provider.url)
        server = Server(os.path.join(tmp, "data"), env=env)
        server.start()
        try:
            app = server.create_app("sms-text")
            away = offline(server, app, "13600000009")
            msg_id = pushed(server, app, [away.registration_id],
                            {"content": "sms msg content", "delay_time": 0})
            assert provider.wait(lambda: provider.sms(msg_id), limit=5)
            assert provider.sms(msg_id) == [{"mobile": "13600000009", "msg_id": msg_id,
                                             "registration_id": away.registration_id,
                                             "temp_id": None, "temp_para": {},
                                             "content": "sms msg content"}]
            long_text = "你好,JPush" * 60  # 480 characters as the seed counts them
            long_id = pushed(server, app, [away.registration_id], {"content": long_text, "delay_time": 0})
            assert provider.wait(lambda: provider.sms(long_id), limit=5)
            assert provider.sms(long_id)[0]["content"] == long_text
            # A template id given as a numeric string (JPush takes integers either way)
            # reaches the provider as the number.
            str_id = pushed(server, app, [away.registration_id],
                            {"temp_id": "5", "temp_para": {"code": "1"}, "delay_time": 0})
            assert provider.wait(lambda: provider.sms(str_id), limit=5)
            assert provider.sms(str_id)[0]["temp_id"] == 5
        finally:
            server.stop()
            provider.close()


def test_provider_errors_are_retried_then_reported():
    provider, rcv = Provider(), Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(FAST, PIGEON_SMS_PROVIDER="http", PIGEON_SMS_URL=provider.url,
                   PIGEON_SMS_RETRY_FIRST_MS="100", PIGEON_SMS_MAX_ATTEMPTS="3")
        server = Server(os.path.join(tmp, "data"), env=env)
        server.start()
        try:
            app = server.create_app("sms3")
            add_callback(server, app, rcv.url, "--commands", "Sms.Result")
            time.sleep(1.2)
            away = offline(server, app, "13700000001")
            provider.answers = ["500", "500"]
            flaky = pushed(server, app, [away.registration_id], {"delay_time": 0, "temp_id": 1})
            assert provider.wait(lambda: len(provider.sms(flaky)) == 3, limit=5)
            assert rcv.wait(lambda: rcv.events("Sms.Result"))
            (ok,) = rcv.events("Sms.Result")
            assert ok["MsgId"] == flaky and ok["ErrCode"] == 0

            provider.answers = ["500"] * 3
            refused = pushed(server, app, [away.registration_id], {"delay_time": 0, "temp_id": 1})
            assert rcv.wait(lambda: len(rcv.events("Sms.Result")) == 2, limit=5)
            bad = rcv.events("Sms.Result")[1]
            assert bad["MsgId"] == refused and bad["ErrCode"] == 1 and "HTTP 500" in bad["ErrInfo"]
            time.sleep(0.8)
            assert len(provider.sms(refused)) == 3  # given up: no fourth try
        finally:
            server.stop()
            provider.close()
            rcv.close()


def test_bad_sms_messages_and_configs_are_refused(server, app):
    d = Device(server, app["app_key"])
    for sms, code, words in [
        ({"delay_time": 86401, "temp_id": 1}, 1003, "delay_time"),
        ({"delay_time": -1, "temp_id": 1}, 1003, "delay_time"),
        ({"temp_id": 1}, 1002, "delay_time"),
        ({"delay_time": 5}, 1002, "content or temp_id"),
        ({"delay_time": 5, "content": "短" * 481}, 1003, "sms_message.content is 481 characters"),
        ({"delay_time": 5, "temp_id": 1, "temp_para": "x"}, 1003, "temp_para"),
        ({"delay_time": 5, "temp_id": 1, "content": "x" * 1001}, 1003, "content"),
        ("soon", 1003, "sms_message"),
    ]:
        r = push(server, app, [d.registration_id], sms)
        assert r.status_code == 400, (sms, r.text)
        error = r.json()["error"]
        assert error["code"] == code and words in error["message"], (sms, error)
    d.close()
    with tempfile.TemporaryDirectory() as tmp:
        for section, words in [('provider = "pigeon-post"', "not one of http, twilio, log"),
                               ('provider = "http"', "needs url"),
                               ('provider = "twilio"\nurl = "http://127.0.0.1:9"', "needs account_sid"),
                               ('provider = "http"\nurl = "http://x"\nbody_template = "{phone}"',
                                "{phone} is not one of")]:
            config = os.path.join(tmp, "bad.toml")
            with open(config, "w") as f:
                f.write("[sms]\n" + section + "\n")
            out = subprocess.run([PIGEON, "serve", "--data", os.path.join(tmp, "d"), "--listen",
                                  "127.0.0.1:0", "--config", config],
                                 capture_output=True, text=True, timeout=20)
            assert out.returncode != 0 and words in out.stderr, (section, out.stderr)


def one_sms_through(config_text, provider):
    """Starts a server with this `[sms]` config, sends one SMS (delay 0), returns the request
    the provider got."""
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "pigeon.toml")
        with open(config, "w") as f:
            f.write("[sms]\n" + config_text + "\n")
        server = Server(os.path.join(tmp, "data"), args=["--config", config])
        server.start()
        try:
            app = server.create_app("providers")
            away = offline(server, app, "+8613600000001")
            pushed(server, app, [away.registration_id],
                   {"delay_time": 0, "temp_id": 9, "temp_para": {"n": 3}, "content": "hello there"})
            assert provider.wait(lambda: provider.requests, limit=5)
            time.sleep(0.5)
            assert len(provider.requests) == 1
            return provider.requests[0], away.registration_id
        finally:
            server.stop()


def test_twilio_and_templated_http_providers_speak_their_protocols():
    import base64
    from urllib.parse import parse_qs

    twilio = Provider()
    try:
        base = twilio.url.rsplit("/", 1)[0]
        request, _ = one_sms_through(
            f'provider = "twilio"\nurl = "{base}"\naccount_sid = "AC123"\n'
            f'auth_token = "secret-token"\nfrom = "+15550001"', twilio)
        assert request["path"] == "/2010-04-01/Accounts/AC123/Messages.json"
        assert request["headers"]["authorization"] == "Basic " + base64.b64encode(b"AC123:secret-token").decode()
        assert request["headers"]["content-type"] == "application/x-www-form-urlencoded"
        assert parse_qs(request["body"].decode()) == {
            "To": ["+8613600000001"], "From": ["+15550001"], "Body": ["hello there"]}
    finally:
        twilio.close()

    templated = Provider()
    try:
        request, rid = one_sms_through(
            f'provider = "http"\nurl = "{templated.url}"\n'
            'headers = { "X-Api-Key" = "k-1" }\n'
            """body_template = '{"to": {mobile}, "vars": {temp_para}, "ref": {registration_id}}'""",
            templated)
        assert request["headers"]["x-api-key"] == "k-1"
        assert json.loads(request["body"]) == {"to": "+8613600000001", "vars": {"n": 3}, "ref": rid}
    finally:
        templated.close()
