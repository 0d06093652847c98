"""`/openapi.json` documents every route the server answers, and nothing it does not."""

import json
import re

import requests


def test_openapi_lists_every_route_and_each_one_is_served(server, app):
    doc = requests.get(server.base + "/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.") and doc["info"]["title"] == "Pigeon"
    paths = doc["paths"]
    for must in ["/v3/push", "/v3/devices/{registration_id}", "/v3/schedules/{schedule_id}/msg_ids",
                 "/v3/received/detail", "/v3/grouppush", "/v1/devices/register", "/v1/connect", "/health"]:
        assert must in paths, must
    auth = (app["app_key"], app["master_secret"])
    count = 0
    for path, item in paths.items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method, op in item.items():
            assert op["summary"] and op["responses"]
            for p in op["parameters"]:
                if p["in"] == "path":
                    assert "{" + p["name"] + "}" in path
            if path == "/v1/connect":
                continue
            r = requests.request(method.upper(), server.base + concrete, auth=auth, data="{}", timeout=5)
            # Served: whatever the answer, it is not "no such route" or "wrong method".
            assert r.status_code not in (404, 405) or r.json()["error"]["code"] not in (404, 1001), \
                (method, path, r.status_code, r.text)
            # The Prometheus text format is the one answer that is not JSON.
            want = "text/plain" if path == "/metrics" else "application/json"
            assert r.headers["Content-Type"].startswith(want), (path, r.headers["Content-Type"])
            count += 1
    assert count >= 28
    # Wrong methods are refused with the ones that work.
    r = requests.patch(server.base + "/v3/aliases/x", auth=auth, timeout=5)
    assert r.status_code == 405 and r.json()["error"]["message"] == "this API accepts only GET, POST, DELETE"


def document(server):
    return requests.get(server.base + "/openapi.json", timeout=5).json()


def validator(doc, name):
    """A JSON Schema validator for `components/schemas/<name>` of the document (its `$ref`s
    resolve within the document's components)."""
    from jsonschema import Draft202012Validator
    return Draft202012Validator({"$ref": "#/components/schemas/" + name,
                                 "components": doc["components"]})


def body_schema(doc, path, method="post"):
    return doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def answer_schema(doc, path, method):
    return doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]


def test_the_document_is_valid_openapi_3_1(server):
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation import OpenAPIV31SpecValidator

    doc = document(server)
    assert doc["openapi"] == "3.1.0"
    validate(doc, cls=OpenAPIV31SpecValidator)
    # Relative to wherever the document was fetched from: the server that serves it.
    assert doc["servers"] == [{"url": "/", "description": "the server that served this document"}]


def test_bodies_and_answers_name_real_schemas(server):
    doc = document(server)
    schemas = doc["components"]["schemas"]
    for path, name in [("/v3/push", "Push"), ("/v3/push/validate", "Push"), ("/v3/grouppush", "Push"),
                       ("/v3/push/file", "Push"),
                       ("/v3/push/batch/regid/single", "BatchPush"), ("/v3/push/batch/alias/single", "BatchPush"),
                       ("/v3/schedules", "Schedule"), ("/v3/devices/{registration_id}", "DeviceEdit"),
                       ("/v3/tags/{tag}", "TagDevices"), ("/v3/aliases/{alias}", "AliasUnbind"),
                       ("/v3/devices/status", "DeviceStatusQuery"), ("/v3/devices/badge", "BadgeChange"),
                       ("/v1/devices/register", "DeviceRegistration")]:
        assert body_schema(doc, path) == {"$ref": "#/components/schemas/" + name}, path
        assert schemas[name]["type"] == "object"
    assert answer_schema(doc, "/v3/push", "post") == {"$ref": "#/components/schemas/PushAnswer"}
    assert schemas["Schedule"]["properties"]["push"] == {"$ref": "#/components/schemas/Push"}

    push = schemas["Push"]
    assert push["required"] == ["platform", "audience"]
    assert push["anyOf"] == [{"required": ["notification"]}, {"required": ["message"]}]
    assert push["additionalProperties"] is False
    props = push["properties"]
    for key, ref in [("notification", "Notification"), ("message", "Message"),
                     ("sms_message", "SmsMessage"), ("options", "Options")]:
        assert props[key]["$ref"] == "#/components/schemas/" + ref, key
        assert schemas[ref]["type"] == "object"
    platforms = props["platform"]["anyOf"]
    assert platforms[0] == {"const": "all"}
    assert set(platforms[1]["items"]["enum"]) >= {"android", "ios", "hmos", "quickapp", "web"}
    assert props["audience"]["anyOf"] == [{"const": "all"}, {"$ref": "#/components/schemas/Audience"}]
    assert schemas["Audience"]["properties"]["tag"]["maxItems"] == 20
    assert schemas["Message"]["required"] == ["msg_content"]
    sms = schemas["SmsMessage"]
    assert sms["required"] == ["delay_time"]
    assert sms["properties"]["content"]["maxLength"] == 480
    assert sms["anyOf"] == [{"required": ["content"]}, {"required": ["temp_id"]}]
    ttl = schemas["Options"]["properties"]["time_to_live"]["anyOf"][0]
    assert ttl["type"] == "integer" and ttl["minimum"] == 0
    assert schemas["NotificationAndroid"]["properties"]["priority"]["anyOf"][0] == {
        "type": "integer", "minimum": -2, "maximum": 2}
    assert "BatchPushEntry" in schemas and "audience" not in schemas["BatchPushEntry"]["properties"]


def test_pushes_the_seed_and_the_python_client_write_match_the_schema(server):
    import jpush
    from test_seed_examples import SEED_PUSH, SEED_CURL, SEED_BROADCAST, SEED_GROUPPUSH

    doc = document(server)
    push = validator(doc, "Push")
    for example in [SEED_PUSH, SEED_CURL, SEED_BROADCAST, SEED_GROUPPUSH]:
        push.validate(example)
    # What the official client builds.
    client = jpush.JPush("a" * 24, "b" * 24)
    built = client.create_push()
    built.audience = jpush.audience(jpush.tag("深圳", "北京"), jpush.alias("a1"))
    built.platform = jpush.platform("android", "ios")
    built.notification = jpush.notification(
        alert="hi", ios=jpush.ios(alert="hi", badge="+1", sound="a.caf", extras={"k": "v"},
                                  content_available=True, mutable_content=True),
        android=jpush.android(alert="hi", title="t", builder_id=1, priority=1, style=1,
                              big_text="b", extras={"k": "v"}))
    built.message = jpush.message("m", title="t", content_type="text", extras={"k": 1})
    built.options = {"time_to_live": 60, "apns_production": False, "sendno": 7}
    built.smsmessage = jpush.smsmessage(60, 5, temp_para={"code": "1"})
    push.validate(built.payload)
    built.platform, built.audience = jpush.all_, jpush.all_
    push.validate(built.payload)
    # What the schema refuses, the server refuses too.
    for bad in [dict(SEED_CURL, bogus=1),
                dict(SEED_CURL, sms_message={"content": "短" * 481, "delay_time": 0}),
                dict(SEED_CURL, sms_message={"delay_time": 0}),
                dict(SEED_CURL, platform=["pc"]),
                {"platform": "all", "audience": "all"}]:
        assert list(push.iter_errors(bad)), bad


def test_answers_match_their_schemas(server, app):
    from conftest import Device

    doc = document(server)
    auth = (app["app_key"], app["master_secret"])

    def check(method, path, concrete, body=None, status=200):
        r = requests.request(method, server.base + concrete, auth=auth, timeout=5,
                             data=None if body is None else json.dumps(body))
        assert r.status_code == status, (concrete, r.text)
        schema = answer_schema(doc, path, method) if status == 200 else {"$ref": "#/components/schemas/Error"}
        validator(doc, schema["$ref"].rsplit("/", 1)[1]).validate(r.json())
        return r.json()

    reg = requests.post(server.base + "/v1/devices/register", timeout=5,
                        json={"app_key": app["app_key"], "platform": "android", "tags": ["t1"],
                              "alias": "al1", "install_id": "x" * 16, "model": "m"})
    validator(doc, "DeviceRegistration").validate(
        {"app_key": app["app_key"], "platform": "android", "tags": ["t1"], "alias": "al1",
         "install_id": "x" * 16, "model": "m"})
    validator(doc, "Registered").validate(reg.json())
    d = Device(server, app["app_key"], tags=["t1"], alias="al1")
    rid = d.registration_id
    push = {"platform": "all", "audience": {"tag": ["t1"]}, "message": {"msg_content": "x"}}
    check("post", "/v3/push", "/v3/push", push)
    check("post", "/v3/push/validate", "/v3/push/validate", push)
    check("post", "/v3/push", "/v3/push", {"platform": "all"}, status=400)
    check("get", "/v3/push/cid", "/v3/push/cid?count=2")
    edit = {"tags": {"add": ["t2"]}, "mobile": "13800000000"}
    validator(doc, "DeviceEdit").validate(edit)
    check("post", "/v3/devices/{registration_id}", f"/v3/devices/{rid}", edit)
    check("get", "/v3/devices/{registration_id}", f"/v3/devices/{rid}")
    check("get", "/v3/tags", "/v3/tags")
    check("get", "/v3/aliases/{alias}", "/v3/aliases/al1")
    check("get", "/v3/aliases/{alias}", "/v3/aliases/al1?new_format=true")
    check("get", "/v3/tags/{tag}/registration_ids/{registration_id}", f"/v3/tags/t1/registration_ids/{rid}")
    status = {"registration_ids": [rid, "nobody"]}
    validator(doc, "DeviceStatusQuery").validate(status)
    check("post", "/v3/devices/status", "/v3/devices/status", status)
    badge = {"registration_ids": [rid], "badge": "+1"}
    validator(doc, "BadgeChange").validate(badge)
    check("post", "/v3/devices/badge", "/v3/devices/badge", badge)
    tag_edit = {"registration_ids": {"add": [rid]}}
    validator(doc, "TagDevices").validate(tag_edit)
    check("post", "/v3/tags/{tag}", "/v3/tags/t3", tag_edit)
    check("post", "/v3/tags/{tag}", "/v3/tags/t3", {"registration_ids": {"add": ["ghost"]}}, status=400)
    cids = check("get", "/v3/push/cid", "/v3/push/cid?count=1")["cidlist"]
    batch = {"pushlist": {cids[0]: {"platform": "all", "target": rid, "message": {"msg_content": "b"}}}}
    validator(doc, "BatchPush").validate(batch)
    check("post", "/v3/push/batch/regid/single", "/v3/push/batch/regid/single", batch)
    d.close()
