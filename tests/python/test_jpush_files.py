"""File push: upload files of aliases and registration ids (multipart, as JPush takes
them), list / get / delete, push to a file's devices, schedules with a file audience."""

import json

import requests

from test_jpush_push import ids


def call(server, app, method, path, **kw):
    return requests.request(method, server.base + path, auth=(app["app_key"], app["master_secret"]), timeout=10,
                            **kw)


def upload(server, app, kind, text, ttl=None, name="targets.txt"):
    data = {"ttl": str(ttl)} if ttl is not None else {}
    return call(server, app, "POST", f"/v3/files/{kind}", files={"filename": (name, text.encode())}, data=data)


def push_file(server, app, file_id, alert="from a file"):
    body = {"platform": "all", "audience": {"file": {"file_id": file_id}}, "notification": {"alert": alert}}
    return call(server, app, "POST", "/v3/push/file", data=json.dumps(body))


def test_file_push_by_alias_and_registration_id(server, app, devices):
    a, b, c = devices(alias="fa"), devices(alias="fb"), devices()
    r = upload(server, app, "alias", "fa\n\nfb\r\nnobody\n")
    assert r.status_code == 200, r.text
    alias_file = r.json()["file_id"]
    out = push_file(server, app, alias_file)
    assert out.status_code == 200, out.text
    msg = out.json()["msg_id"]
    assert ids(a.pushes(1)) == [msg] and ids(b.pushes(1)) == [msg] and c.pushes(0) == []

    rid_file = upload(server, app, "registration_id", c.registration_id + "\n", ttl=1).json()["file_id"]
    msg = push_file(server, app, rid_file).json()["msg_id"]
    assert ids(c.pushes(1)) == [msg] and a.pushes(0) == []

    listed = call(server, app, "GET", "/v3/files").json()
    assert listed["total_count"] == 2
    one = call(server, app, "GET", f"/v3/files/{rid_file}").json()
    assert one["type"] == "registration_id" and one["file_name"] == "targets.txt"
    assert len(one["create_time"]) == 19 and one["expire_time"] > one["create_time"]
    assert call(server, app, "DELETE", f"/v3/files/{rid_file}").status_code == 200
    r = call(server, app, "GET", f"/v3/files/{rid_file}")
    assert r.status_code == 404
    r = push_file(server, app, rid_file)
    assert r.status_code == 400 and "does not exist" in r.json()["error"]["message"]
    # Another app cannot use it.
    other = server.create_app("other")
    r = push_file(server, other, alias_file)
    assert r.status_code == 400


def test_file_errors(server, app, devices):
    devices(alias="x1")
    cases = [
        (upload(server, app, "alias", "good\nbad-alias\n"), 1003, "line 2"),
        (upload(server, app, "alias", "\n\n"), 1003, "no values"),
        (upload(server, app, "alias", "a", ttl=721), 1003, "ttl"),
        (call(server, app, "POST", "/v3/files/alias", files={"other": ("x.txt", b"a")}), 1002, "filename"),
        (call(server, app, "POST", "/v3/files/alias", data="not a form"), 1003, "multipart"),
        (upload(server, app, "alias", "a" * 40 + "\n" * (11 * 1024 * 1024)), 1005, "larger"),
    ]
    for r, code, words in cases:
        assert r.status_code in (400, 413), r.text
        err = r.json()["error"]
        assert err["code"] == code and words in err["message"], err
    body = {"platform": "all", "audience": {"file": {"file_id": "x"}, "tag": ["t"]}, "notification": {"alert": "x"}}
    r = call(server, app, "POST", "/v3/push/file", data=json.dumps(body))
    assert r.status_code == 400
    body = {"platform": "all", "audience": {"tag": ["t"]}, "notification": {"alert": "x"}}
    r = call(server, app, "POST", "/v3/push/file", data=json.dumps(body))
    assert r.status_code == 400 and "file_id" in r.json()["error"]["message"]
    body = {"platform": "all", "audience": {"file": {"file_id": "x"}}, "notification": {"alert": "x"}}
    r = call(server, app, "POST", "/v3/push", data=json.dumps(body))
    assert r.status_code == 400 and "/v3/push/file" in r.json()["error"]["message"]


def test_at_most_twenty_files(server, app):
    for i in range(20):
        assert upload(server, app, "alias", f"a{i}\n").status_code == 200
    r = upload(server, app, "alias", "one_more\n")
    assert r.status_code == 400 and "at most 20" in r.json()["error"]["message"]


def test_a_schedule_can_push_to_a_file(server, app, devices):
    from test_jpush_schedule import beijing
    d = devices(alias="sched_file")
    file_id = upload(server, app, "alias", "sched_file\n").json()["file_id"]
    # Two seconds ahead: the time is whole seconds, and a loaded machine may take a second to
    # answer.
    body = {"name": "file_schedule", "enabled": True, "trigger": {"single": {"time": beijing(2)}},
            "push": {"platform": "all", "audience": {"file": {"file_id": file_id}},
                     "notification": {"alert": "scheduled to a file"}}}
    r = call(server, app, "POST", "/v3/schedules", data=json.dumps(body))
    assert r.status_code == 200, r.text
    frames = d.pushes(1, limit=7)
    assert len(frames) == 1 and frames[0]["notification"]["alert"] == "scheduled to a file"
    body["push"]["audience"]["file"]["file_id"] = "missing"
    body["trigger"]["single"]["time"] = beijing(60)
    r = call(server, app, "POST", "/v3/schedules", data=json.dumps(body))
    assert r.status_code == 400 and r.json()["error"]["code"] == 8100
    assert "file" in r.json()["error"]["message"], r.text
