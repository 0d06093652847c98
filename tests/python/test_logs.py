"""The request log of the real binary, in both formats: one line per API call with method,
route (the route template, not the ids in the path), status, ms, app_key and the answer's
msg_id; `--log-format json` (or PIGEON_LOG_FORMAT) gives one JSON object a line with those
fields at the top level; no colour codes in a file; `/health` not at info."""

import json
import os
import tempfile
import uuid

import pytest
import requests

from conftest import Device, Server


def run_calls(log_format_args=(), env=None):
    """Starts a server logging to a file, makes a push, a recall, a 404 and a bad-auth call;
    returns (the log's text, app, the push's msg_id)."""
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "pigeon.log")
        s = Server(os.path.join(tmp, "data"), env={"RUST_LOG": "info", **(env or {})},
                   args=list(log_format_args))
        with open(log_path, "wb") as log:
            s.start(stderr=log)
            try:
                app = s.create_app("logs-" + uuid.uuid4().hex[:6])
                device = Device(s, app["app_key"])
                auth = (app["app_key"], app["master_secret"])
                r = requests.post(s.base + "/v3/push", auth=auth, timeout=5, json={
                    "platform": "all", "audience": "all",
                    "notification": {"alert": "hello logs"}})
                assert r.status_code == 200, r.text
                msg_id = r.json()["msg_id"]
                assert len(device.pushes(1)) == 1
                r = requests.delete(s.base + f"/v3/push/{msg_id}", auth=auth, timeout=5)
                assert r.status_code == 200, r.text
                assert requests.get(s.base + "/v3/nothing", timeout=5).status_code == 404
                r = requests.post(s.base + "/v3/push", auth=(app["app_key"], "wrong" * 5),
                                  timeout=5, json={})
                assert r.status_code == 401, r.text
                assert s.health() == (200, {"status": "ok"})
                device.close()
            finally:
                s.stop()
        with open(log_path, encoding="utf-8", errors="replace") as f:
            return f.read(), app, msg_id


def test_text_lines_name_the_route_the_app_and_the_msg_id():
    text, app, msg_id = run_calls()
    assert "\x1b[" not in text, "ANSI colour codes in a log written to a file"
    lines = [l for l in text.splitlines() if " request " in l or l.endswith(" request")]
    push = [l for l in lines if "route=/v3/push " in l and "method=POST" in l]
    assert len(push) == 2, text
    ok = [l for l in push if "status=200" in l]
    assert len(ok) == 1, text
    line = ok[0]
    assert " INFO " in line and f"app_key={app['app_key']}" in line, line
    assert f"msg_id={msg_id}" in line and "ms=" in line, line
    # The bad-auth call names no app and carries no msg_id.
    bad = [l for l in push if "status=401" in l]
    assert len(bad) == 1 and "app_key=-" in bad[0] and "msg_id" not in bad[0], text
    # The recall: the route's template, the id only in the path.
    recall = [l for l in lines if "method=DELETE" in l]
    assert len(recall) == 1, text
    assert "route=/v3/push/{msg_id}" in recall[0] and f"path=/v3/push/{msg_id}" in recall[0]
    # No route matched a 404.
    nothing = [l for l in lines if "path=/v3/nothing" in l]
    assert len(nothing) == 1 and "route=- " in nothing[0] and "status=404" in nothing[0], text
    assert not any("/health" in l for l in lines), text


@pytest.mark.parametrize("how", ["flag", "env"])
def test_json_lines_have_the_fields_at_the_top(how):
    if how == "flag":
        text, app, msg_id = run_calls(log_format_args=["--log-format", "json"])
    else:
        text, app, msg_id = run_calls(env={"PIGEON_LOG_FORMAT": "json"})
    assert "\x1b[" not in text
    events = [json.loads(l) for l in text.splitlines() if l.strip()]
    assert events and all(isinstance(e, dict) for e in events)
    requests_ = [e for e in events if e.get("message") == "request"]
    push = [e for e in requests_ if e["route"] == "/v3/push" and e["status"] == 200]
    assert len(push) == 1, requests_
    e = push[0]
    assert e["level"] == "INFO" and e["method"] == "POST" and e["app_key"] == app["app_key"]
    assert e["msg_id"] == msg_id and isinstance(e["ms"], (int, float)) and e["ms"] >= 0, e
    bad = [e for e in requests_ if e["route"] == "/v3/push" and e["status"] == 401]
    assert len(bad) == 1 and bad[0]["app_key"] == "-" and "msg_id" not in bad[0], requests_
    recall = [e for e in requests_ if e["method"] == "DELETE"]
    assert len(recall) == 1 and recall[0]["route"] == "/v3/push/{msg_id}", requests_
    nothing = [e for e in requests_ if e["path"] == "/v3/nothing"]
    assert len(nothing) == 1 and nothing[0]["route"] == "-" and nothing[0]["status"] == 404
    assert not any(e.get("path") == "/health" for e in requests_)
    # The other lines are JSON too, e.g. the accepted push's.
    assert any(str(e.get("msg_id")) == msg_id and e.get("message") == "push accepted"
               for e in events), \
        events


def test_an_unknown_log_format_is_refused():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(os.path.join(tmp, "data"), env={"PIGEON_LOG_FORMAT": "xml"})
        s.spawn(stderr=open(os.path.join(tmp, "log"), "wb"))
        assert s.proc.wait(20) != 0
        s.proc = None
        assert "PIGEON_LOG_FORMAT" in open(os.path.join(tmp, "log")).read()
