"""The official JPush Python client (PyPI `jpush` 3.4.1) pushing through Pigeon to devices
connected over WebSocket: every audience kind, platform filtering, per-platform resolution."""

import jpush
import pytest
from jpush import common


def send(jp, audience, platform="all", notification=None, message=None, options=None):
    push = jp.create_push()
    push.audience = audience
    push.platform = platform
    push.notification = notification if notification is not None else (
        None if message is not None else jpush.notification(alert="hello"))
    push.message = message
    if options is not None:
        push.options = options
    resp = push.send()
    assert resp.status_code == 200
    return resp.payload


def ids(frames):
    return [f["msg_id"] for f in frames]


def test_push_by_registration_id_reaches_exactly_those_devices(jp, devices):
    a, b, c = devices(), devices(), devices(platform="ios")
    out = send(jp, jpush.audience(jpush.registration_id(a.registration_id, c.registration_id)),
               notification=jpush.notification(alert="to a and c"))
    assert out["sendno"] == "0" and out["msg_id"].isdigit()
    for d in (a, c):
        got = d.pushes(1)
        assert ids(got) == [out["msg_id"]]
        assert got[0]["notification"]["alert"] == "to a and c"
    assert b.pushes(0) == []


def test_push_by_alias(jp, devices):
    alice, bob = devices(alias="alice"), devices(alias="bob")
    out = send(jp, jpush.audience(jpush.alias("alice")))
    assert ids(alice.pushes(1)) == [out["msg_id"]]
    assert bob.pushes(0) == []


def test_push_by_tag_is_or(jp, devices):
    news, sport, none = devices(tags=["news"]), devices(tags=["sport"]), devices(tags=["other"])
    out = send(jp, jpush.audience(jpush.tag("news", "sport")))
    assert ids(news.pushes(1)) == [out["msg_id"]]
    assert ids(sport.pushes(1)) == [out["msg_id"]]
    assert none.pushes(0) == []


def test_push_by_tag_and(jp, devices):
    both, one = devices(tags=["vip", "beijing"]), devices(tags=["vip"])
    out = send(jp, jpush.audience(jpush.tag_and("vip", "beijing")))
    assert ids(both.pushes(1)) == [out["msg_id"]]
    assert one.pushes(0) == []


def test_push_by_tag_with_tag_not(jp, devices):
    keep, drop = devices(tags=["fans"]), devices(tags=["fans", "unsubscribed"])
    out = send(jp, jpush.audience(jpush.tag("fans"), jpush.tag_not("unsubscribed")))
    assert ids(keep.pushes(1)) == [out["msg_id"]]
    assert drop.pushes(0) == []


def test_broadcast_to_all(jp, devices):
    ds = [devices(), devices(platform="ios"), devices(platform="hmos"), devices(platform="web")]
    out = send(jp, jpush.all_, notification=jpush.notification(alert="everyone"))
    for d in ds:
        got = d.pushes(1)
        assert ids(got) == [out["msg_id"]], d.platform
        assert got[0]["notification"]["alert"] == "everyone"


def test_platform_list_filters_and_each_platform_gets_its_own_section(jp, devices):
    android, ios, web = devices(), devices(platform="ios"), devices(platform="web")
    notification = jpush.notification(
        alert="shared",
        android=jpush.android(alert="for android", title="Droid", extras={"k": "v"}),
        ios=jpush.ios(alert={"title": "T", "body": "for ios"}, badge="+1", sound="ding.caf"))
    out = send(jp, jpush.all_, platform=jpush.platform("android", "ios"), notification=notification)
    got = android.pushes(1)
    assert ids(got) == [out["msg_id"]]
    assert got[0]["notification"] == {"alert": "for android", "title": "Droid", "extras": {"k": "v"}}
    got = ios.pushes(1)
    assert got[0]["notification"]["alert"] == {"title": "T", "body": "for ios"}
    assert got[0]["notification"]["sound"] == "ding.caf"
    assert got[0]["notification"]["badge"] == "+1"
    assert web.pushes(0) == []


def test_ios_only_push_by_platform(jp, devices):
    android, ios = devices(tags=["t"]), devices(platform="ios", tags=["t"])
    out = send(jp, jpush.audience(jpush.tag("t")), platform=jpush.platform("ios"))
    assert ids(ios.pushes(1)) == [out["msg_id"]]
    assert android.pushes(0) == []


def test_message_only_and_options(jp, devices):
    d = devices(alias="m")
    message = jpush.message("payload", title="t", content_type="text", extras={"a": 1})
    out = send(jp, jpush.audience(jpush.alias("m")), message=message,
               options={"sendno": 12345, "time_to_live": 60, "apns_production": False})
    assert out["sendno"] == "12345"
    got = d.pushes(1)
    assert "notification" not in got[0]
    assert got[0]["message"] == {"msg_content": "payload", "title": "t", "content_type": "text", "extras": {"a": 1}}
    assert got[0]["expires_ms"] - got[0]["sent_ms"] == 60_000


def test_validate_answers_like_push_and_sends_nothing(jp, devices):
    d = devices(alias="v")
    push = jp.create_push()
    push.audience = jpush.audience(jpush.alias("v"))
    push.platform = jpush.all_
    push.notification = jpush.notification(alert="validate only")
    resp = push.send_validate()
    assert resp.status_code == 200 and resp.payload["msg_id"].isdigit()
    assert d.pushes(0) == []
    push.audience = jpush.audience(jpush.alias("nobody"))
    with pytest.raises(common.JPushFailure) as e:
        push.send_validate()
    assert e.value.error_code == 1011


def test_every_sdk_section_is_accepted(jp, devices):
    d = devices(platform="hmos", tags=["h"])
    notification = jpush.notification(
        alert="all sections",
        android=jpush.android(alert="a", title="t", builder_id=1, priority=1, style=1, big_text="big",
                              alert_type=7, channel_id="c", badge_add_num=1, badge_class="x.Main",
                              intent={"url": "intent:#Intent;end"}, display_foreground="1",
                              mipns_content_forshort="short"),
        ios=jpush.ios(alert="i", badge=3, content_available=True, mutable_content=True, category="c",
                      thread_id="th", interruption_level="time-sensitive", extras={"x": 1}),
        hmos=jpush.hmos(alert="h", title="HT", category="IM", intent={"url": "action.system.home"},
                        badge_add_num=2, extras={"e": 1}),
        winphone=jpush.winphone(alert="w"),
        quickapp=jpush.quickapp("q", "qt", "/page"),
        voip=jpush.voip({"anything": {"nested": True}}))
    out = send(jp, jpush.audience(jpush.tag("h")), notification=notification,
               options={"apns_collapse_id": "cid-1", "big_push_duration": 0, "classification": 1,
                        "third_party_channel": {"huawei": {"distribution": "first_ospush", "importance": "HIGH"}}})
    got = d.pushes(1)
    assert ids(got) == [out["msg_id"]]
    assert got[0]["notification"] == {"alert": "h", "title": "HT", "category": "IM",
                                      "intent": {"url": "action.system.home"}, "badge_add_num": 2, "extras": {"e": 1}}
