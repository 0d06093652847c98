"""Every example push of JPush's own Push API v3 documentation (seed 002), copied verbatim,
against the real server. Whole pushes must be accepted; the documentation's fragments (an
audience, a notification) are whole pushes once they have the parts the same page calls
required; and where the page's text is refused, the test says the exact outcome and why."""

import json

import pytest
import requests

from conftest import Device

# The "Examples and Descriptions" push object, verbatim (its cid is from the doc's own app).
SEED_PUSH = json.loads("""{
"cid": "8103a4c628a0b98974ec1949-711261d4-5f17-4d2f-a855-5e5a8909b26e",
"platform": "all",
"audience": {
"tag": [
"深圳",
"北京"
]
},
"notification": {
"android": {
"alert": "Hi, JPush!",
"title": "Send to Android",
"builder_id": 1,
"extras": {
"newsid": 321
}
},
"ios": {
"alert": "Hi, JPush!",
"sound": "default",
"badge": "+1",
"extras": {
"newsid": 321
}
}
},
"message": {
"msg_content": "Hi,JPush",
"content_type": "text",
"title": "msg",
"extras": {
"key": "value"
}
},
"sms_message":{
"content":"sms msg content",
"delay_time":3600
},
"options": {
"time_to_live": 60,
"apns_production": false,
"apns_collapse_id":"jiguang_test_201706011100"
}
}""")

# The curl "Request Example".
SEED_CURL = json.loads('{"platform":"all","audience":"all","notification":{"alert":"Hi,JPush !","android":{"extras":{"android-key1":"android-value1"}},"ios":{"sound":"sound.caf","badge":"+1","extras":{"ios-key1":"ios-value1"}}}}')

# "Push to all (broadcast)".
SEED_BROADCAST = json.loads("""{
"platform": "all",
"audience" : "all",
"notification" : {
"alert" : "Hi, JPush!",
"android" : {},
"ios" : {
"extras" : { "newsid" : 321}
}
}
}""")

# The Group Push API's curl example (sent to validate: it is an ordinary push object).
SEED_GROUPPUSH = json.loads('{"platform":["android"],"audience":"all","notification":{"android":{"alert":"notification content","title":"notification title"}},"message":{"msg_content":"message content"}}')

# The audience examples, verbatim: fragments holding only an audience.
SEED_AUDIENCES = [json.loads(s) for s in [
    '{"audience" : {"tag" : [ "深圳", "广州", "北京" ]}}',
    '{"audience" : {"tag_and" : [ "深圳", "女" ]}}',
    '{"audience" : {"alias" : [ "4314", "892", "4531" ]}}',
    '{"audience" : {"registration_id" : [ "4312kjklfds2", "8914afd2", "45fdsa31" ]}}',
    '{"audience" : {"tag" : [ "深圳", "广州" ], "tag_and" : [ "女", "会员"]}}',
    '{"audience" : { "tag" : [ "tag1", "tag2" ], "tag_and" : [ "tag3", "tag4"], "tag_not" : [ "tag5", "tag6"] }}',
]]

# The notification fragments: the shared alert, and the iOS "Server Sends Message String".
SEED_NOTIFICATIONS = [json.loads(s) for s in [
    '{"notification" : {"alert" : "Hello, JPush!"}}',
    """{"notification" : {"ios" : {"alert" : "hello, JPush!", "sound" : "sound.caf", "badge" : 1,
        "extras" : {"news_id" : 134, "my_key" : "a value"}}}}""",
]]

# The Android example as printed: comments, missing commas and a placeholder, not JSON.
SEED_ANDROID_TEXT = """{
"notification" : {
"android" : {
"alert" : "hello, JPush!",
"title" : "JPush test",
"builder_id" : 3,
"style":1 // 1,2,3
"alert_type":1 // -1 ~ 7
"big_text":"big text content",
"inbox":JSONObject,
"big_pic_path":"picture url",
"priority":0, // -2~2
"category":"category str",
"extras" : {
"news_id" : 134,
"my_key" : "a value"
}
}
}
}"""


def post(server, app, path, body):
    data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return requests.post(server.base + path, data=data.encode(), timeout=5,
                         auth=(app["app_key"], app["master_secret"]))


@pytest.fixture
def people(server, app):
    """Devices the examples' audiences name: tags 深圳/广州/北京/女/会员/tag1..tag4 and the
    aliases 4314, 892, 4531."""
    made = [
        Device(server, app["app_key"], tags=["深圳", "女", "会员"], alias="4314"),
        Device(server, app["app_key"], platform="ios", tags=["北京", "广州"], alias="892"),
        Device(server, app["app_key"], tags=["广州", "tag1", "tag3", "tag4"], alias="4531"),
    ]
    yield made
    for d in made:
        d.close()


def ok(r):
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["msg_id"].isdigit() and body["sendno"] == "0", body
    return body["msg_id"]


def test_the_push_object_example_is_accepted_with_its_sms_and_pushed(server, app, people):
    # Verbatim, its cid is refused: a cid comes from this app's pool (GET /v3/push/cid), the
    # example's belongs to the doc's app 8103a4c6...; JPush answers the same way.
    r = post(server, app, "/v3/push", SEED_PUSH)
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003, r.text
    assert "cid" in r.json()["error"]["message"]
    # Without the cid, everything else verbatim (SMS content form included) validates...
    rest = {k: v for k, v in SEED_PUSH.items() if k != "cid"}
    ok(post(server, app, "/v3/push/validate", rest))
    # ...and with a cid of this app's pool it pushes, to the 深圳 or 北京 devices.
    cids = requests.get(server.base + "/v3/push/cid", timeout=5,
                        auth=(app["app_key"], app["master_secret"])).json()["cidlist"]
    msg_id = ok(post(server, app, "/v3/push", dict(rest, cid=cids[0])))
    shenzhen, beijing, guangzhou = people
    for d in (shenzhen, beijing):
        assert [f["msg_id"] for f in d.pushes(1)] == [msg_id]
    assert guangzhou.pushes(0, quiet=0.3) == []
    # The same cid again: the first push's msg_id, nothing pushed twice.
    assert ok(post(server, app, "/v3/push", dict(rest, cid=cids[0]))) == msg_id


@pytest.mark.parametrize("example", [SEED_CURL, SEED_BROADCAST, SEED_GROUPPUSH],
                         ids=["curl", "broadcast", "grouppush"])
def test_whole_push_examples_validate(server, app, people, example):
    ok(post(server, app, "/v3/push/validate", example))


@pytest.mark.parametrize("fragment", SEED_AUDIENCES, ids=lambda f: ",".join(f["audience"]))
def test_audience_examples(server, app, people, fragment):
    # Alone, a fragment lacks what the page's table calls required.
    r = post(server, app, "/v3/push/validate", fragment)
    assert r.status_code == 400 and r.json()["error"] == {"code": 1002, "message": "platform is required"}
    whole = dict(SEED_PUSH, **fragment)
    del whole["cid"]
    r = post(server, app, "/v3/push/validate", whole)
    if "registration_id" in fragment["audience"]:
        # The page's ids are devices of its own app, none of this server: "no push target
        # that meets the conditions" (1011), as the page's error table says.
        assert r.status_code == 400 and r.json()["error"]["code"] == 1011, r.text
    else:
        ok(r)


@pytest.mark.parametrize("fragment", SEED_NOTIFICATIONS, ids=["alert", "ios"])
def test_notification_examples(server, app, people, fragment):
    ok(post(server, app, "/v3/push/validate", dict(platform="all", audience="all", **fragment)))


def test_the_android_example_is_pseudo_json_and_its_fields_are_accepted(server, app, people):
    # As printed it is not JSON (// comments, missing commas, "inbox":JSONObject): refused as
    # such, with where the parse stopped.
    body = '{"platform": "all", "audience": "all", ' + SEED_ANDROID_TEXT.strip()[1:]
    r = post(server, app, "/v3/push/validate", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003
    assert "column" in r.json()["error"]["message"]
    # The same fields with the comments and placeholder turned into JSON: accepted.
    fixed = (SEED_ANDROID_TEXT.replace("// 1,2,3", ",").replace("// -1 ~ 7", ",")
             .replace("// -2~2", "").replace("JSONObject", "{}"))
    ok(post(server, app, "/v3/push/validate", dict(platform="all", audience="all", **json.loads(fixed))))


def test_sms_content_is_counted_in_characters(server, app, people):
    base = {k: v for k, v in SEED_PUSH.items() if k != "cid"}

    def with_content(text):
        return post(server, app, "/v3/push/validate",
                    dict(base, sms_message={"content": text, "delay_time": 0}))

    # The page: "你好,JPush" is 8 characters; at most 480; a CJK character counts one.
    ok(with_content("你好,JPush" * 60))  # 480 characters, 720 bytes
    ok(with_content("短" * 480))
    r = with_content("短" * 481)
    assert r.status_code == 400 and r.json()["error"] == {
        "code": 1003, "message": "sms_message.content is 481 characters, the limit is 480"}
    # delay_time at most 24 hours; one of content or temp_id.
    r = post(server, app, "/v3/push/validate", dict(base, sms_message={"content": "x", "delay_time": 86401}))
    assert r.status_code == 400 and r.json()["error"]["code"] == 1003
    r = post(server, app, "/v3/push/validate", dict(base, sms_message={"delay_time": 60}))
    assert r.status_code == 400 and r.json()["error"] == {
        "code": 1002, "message": "sms_message needs content or temp_id"}
