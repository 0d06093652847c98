"""Every documented error of /v3/push comes from a real request: through the official client
where it can send the bad request, through raw HTTP where it cannot."""

import base64
import json

import jpush
import pytest
import requests
from jpush import common


def failure(jp, payload):
    """Sends a raw payload through the official client; returns the JPushFailure."""
    with pytest.raises(common.JPushFailure) as e:
        jp._request("POST", json.dumps(payload), common.get_url("push", jp.zone) + "push", "application/json", version=3)
    return e.value


def base(**extra):
    p = {"platform": "all", "audience": "all", "notification": {"alert": "x"}}
    p.update(extra)
    return p


def test_1002_missing_fields(jp):
    for payload in [{"audience": "all", "notification": {"alert": "x"}},
                    {"platform": "all", "notification": {"alert": "x"}},
                    {"platform": "all", "audience": "all"},
                    base(message={"title": "no content"}, notification=None),
                    base(audience={"tag": []})]:
        payload = {k: v for k, v in payload.items() if v is not None}
        e = failure(jp, payload)
        assert e.error_code == 1002, payload
        assert e.details


def test_1003_invalid_values_and_limits(jp):
    cases = [
        base(platform=["android", "blackberry"]),
        base(audience="everyone"),
        base(audience={"alias": [""]}),
        base(audience={"registration_id": ["not-a-regid!"]}),
        base(audience={"tag": [f"t{i}" for i in range(21)]}),
        base(audience={"tag_and": ["x" * 41]}),
        base(audience={"alias": [f"a{i}" for i in range(1001)]}),
        base(audience={"registration_id": [f"r{i}" for i in range(1001)]}),
        base(audience={"segment": ["seg1"]}),
        base(audience={"abtest": ["ab1"]}),
        base(options={"time_to_live": 864001}),
        base(options={"apns_collapse_id": "c" * 65}),
        base(options={"big_push_duration": 1401}),
        base(notification={"alert": "x", "android": {"priority": 3}}),
        base(notification={"alert": "x", "ios": {"badge": "+100"}}),
        base(notification={"alert": "x", "ios": {"interruption-level": "loud"}}),
    ]
    for payload in cases:
        e = failure(jp, payload)
        assert e.error_code == 1003, (payload, e.error)


def test_1004_bad_credentials(server, app):
    zone = "local"
    bad = jpush.JPush(app["app_key"], "X" * 24, zone=zone)
    push = bad.create_push()
    push.audience, push.platform = jpush.all_, jpush.all_
    push.notification = jpush.notification(alert="x")
    with pytest.raises(common.Unauthorized):
        push.send()
    r = requests.post(server.base + "/v3/push", json=base())
    assert r.status_code == 401 and r.json()["error"]["code"] == 1004
    token = base64.b64encode(b"no-colon-here").decode()
    r = requests.post(server.base + "/v3/push", json=base(), headers={"Authorization": "Basic " + token})
    assert r.status_code == 401 and r.json()["error"]["code"] == 1004


def test_1005_too_large(jp):
    e = failure(jp, base(notification={"ios": {"alert": "x" * 2000}}))
    assert e.error_code == 1005
    e = failure(jp, base(notification={"android": {"alert": "a" * 2000}}, message={"msg_content": "m" * 2000}))
    assert e.error_code == 1005


def test_1009_unknown_keys(jp):
    for payload in [base(bogus=1), base(audience={"tags": ["a"]}),
                    base(notification={"alert": "x", "android": {"colour": "red"}}),
                    base(options={"ttl": 5}), base(notification={"alert": "x", "pc": {}})]:
        e = failure(jp, payload)
        assert e.error_code == 1009, payload
        assert "not a supported key" in e.details


def test_1011_nothing_matched(jp):
    e = failure(jp, base(audience={"registration_id": ["doesnotexist0000"]}))
    assert e.error_code == 1011
    e = failure(jp, base(audience={"tag": ["nobody_has_this"]}))
    assert e.error_code == 1011


def test_http_level_errors(server, app):
    auth = (app["app_key"], app["master_secret"])
    r = requests.get(server.base + "/v3/push", auth=auth)
    assert r.status_code == 405 and r.json()["error"]["code"] == 1001
    r = requests.post(server.base + "/v3/push", auth=auth, data='{"platform": "all", "audience": ')
    assert r.status_code == 400
    assert r.json()["error"]["code"] == 1003 and "line 1, column" in r.json()["error"]["message"]
    r = requests.post(server.base + "/v3/push", auth=auth, data="")
    assert r.status_code == 400 and r.json()["error"]["code"] == 1002
    r = requests.post(server.base + "/v3/push", auth=auth, data="x" * (1024 * 1024 + 1))
    assert r.status_code == 400 and r.json()["error"]["code"] == 1005
    r = requests.post(server.base + "/v3/push", auth=auth, data="[1, 2]")
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    r = requests.get(server.base + "/v3/nothing-here", auth=auth)
    assert r.status_code == 404 and "error" in r.json()


def test_trailing_slash_and_odd_content_types(server, app, devices):
    d = devices(alias="slash")
    auth = (app["app_key"], app["master_secret"])
    body = json.dumps(base(audience={"alias": ["slash"]}))
    r = requests.post(server.base + "/v3/push/", auth=auth, data=body,
                      headers={"content-type": "text/plain"})
    assert r.status_code == 200, r.text
    assert [f["msg_id"] for f in d.pushes(1)] == [r.json()["msg_id"]]
