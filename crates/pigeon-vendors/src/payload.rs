//! Each vendor's form of a push: the JPush notification's fields (title, body, extras,
//! sound, click action, priority, channel, badge number, notify id, time to live) mapped onto
//! what the vendor's API takes. Pure functions of the push, the device's platform and badge.

use crate::apns::Notification;
use crate::webpush::Delivery;
use crate::xiaomi::XiaomiMessage;
use pigeon_core::{Platform, Push};
use pigeon_engine::now_ms;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// What a device on one platform is shown for a push, read once from its notification.
pub(crate) struct Shown {
    pub title: Option<String>,
    pub body: String,
    pub extras: Map<String, Value>,
    /// The platform's own section (`android`, `ios`, `hmos`, `web`), shared `alert` merged.
    section: Map<String, Value>,
}

impl Shown {
    pub(crate) fn of(push: &Push, platform: Platform) -> Shown {
        let section = push.notification_for(platform).unwrap_or_default();
        let (mut title, body) = match section.get("alert") {
            Some(Value::String(s)) => (None, s.clone()),
            Some(Value::Object(a)) => (
                a.get("title").and_then(Value::as_str).map(String::from),
                a.get("body")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            _ => (None, String::new()),
        };
        if let Some(t) = section.get("title").and_then(Value::as_str) {
            title = Some(t.to_string());
        }
        let extras = section
            .get("extras")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        Shown {
            title,
            body,
            extras,
            section,
        }
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.section
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Android's click target: `intent.url` (an intent URI or deeplink).
    fn intent(&self) -> Option<&str> {
        self.section
            .get("intent")
            .and_then(|i| i.get("url"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Android's priority −2..2: 0 and above is high for FCM, as JPush maps it.
    fn high_priority(&self) -> bool {
        self.section
            .get("priority")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            >= 0
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.section.get(key), Some(Value::Bool(true)))
            || self.section.get(key).and_then(Value::as_i64) == Some(1)
    }

    /// The title, or an empty one for vendors that need the field.
    fn title_or_empty(&self) -> String {
        self.title.clone().unwrap_or_default()
    }
}

/// A string field of `options.third_party_channel.<vendor>`.
fn channel_option<'a>(push: &'a Push, vendor: &str, field: &str) -> Option<&'a Value> {
    push.options
        .other
        .get("third_party_channel")?
        .get(vendor)?
        .get(field)
}

fn channel_text<'a>(push: &'a Push, vendor: &str, field: &str) -> Option<&'a str> {
    channel_option(push, vendor, field).and_then(Value::as_str)
}

/// The Android notification channel: the vendor's own from `third_party_channel`, else the
/// notification's `channel_id`.
fn channel_id<'a>(push: &'a Push, shown: &'a Shown, vendor: &str) -> Option<&'a str> {
    channel_text(push, vendor, "channel_id").or(shown.text("channel_id"))
}

/// Seconds the push may still be kept for the device.
pub(crate) fn ttl_s(push: &Push) -> u64 {
    push.expires_ms().saturating_sub(now_ms()) / 1000
}

/// The number a push's notify id shows as to vendors that take a number (Huawei, Honor,
/// Xiaomi, OPPO, Meizu): the same for every push of an override chain, so each replaces the
/// last on the device, and non-negative in 31 bits.
pub(crate) fn notify_number(push: &Push) -> i64 {
    let id = push.notify_id();
    let n = id.parse::<u64>().unwrap_or_else(|_| {
        // Not a msg_id: FNV-1a of the text.
        id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    });
    (n % (i32::MAX as u64)) as i64
}

/// The push's extras with its msg_id, as the JSON text vendors carry as the app's data.
fn data_text(shown: &Shown, push: &Push) -> String {
    let mut extras = shown.extras.clone();
    extras.insert("msg_id".into(), json!(push.msg_id.to_string()));
    Value::Object(extras).to_string()
}

/// APNs: the `ios` section's own APNs fields (alert object, sound, category, thread-id,
/// interruption-level, content-available, mutable-content) in `aps`, extras beside it; a
/// background push (content-available without text) goes with push type `background` and
/// priority 5, as Apple requires; `apns_production: false` sends to the sandbox.
pub(crate) fn apns(push: &Push, shown: &Shown, badge: Option<u32>) -> Notification {
    let mut extras = shown.extras.clone();
    extras.insert("msg_id".into(), json!(push.msg_id.to_string()));
    let mut n = Notification::alert(
        shown.title.as_deref(),
        &shown.body,
        badge,
        &Value::Object(extras),
    );
    let aps = &mut n.payload["aps"];
    if let Some(alert @ Value::Object(_)) = shown.section.get("alert") {
        aps["alert"] = alert.clone();
    }
    if let Some(obj) = aps.as_object_mut() {
        obj.remove("sound");
        for key in ["sound", "category", "thread-id", "interruption-level"] {
            if let Some(v) = shown.section.get(key).filter(|v| !v.is_null()) {
                obj.insert(key.into(), v.clone());
            }
        }
        if shown.flag("mutable-content") {
            obj.insert("mutable-content".into(), json!(1));
        }
        if shown.flag("content-available") {
            obj.insert("content-available".into(), json!(1));
            if shown.body.is_empty() && shown.title.is_none() {
                obj.remove("alert");
                n.push_type = "background".into();
                n.priority = 5;
            }
        }
    }
    // An override replaces the notification it overrides, as its collapse id.
    n.collapse_id = push
        .options
        .apns_collapse_id
        .clone()
        .or_else(|| push.options.notify_id.clone());
    n.expiration = Some(push.expires_ms() / 1000);
    n.sandbox = !push.options.apns_production;
    n
}

/// FCM HTTP v1: notification title/body, extras as string data, Android priority, TTL,
/// collapse key and tag (the notify id), channel, sound, click action, badge count.
pub(crate) fn fcm(push: &Push, shown: &Shown, badge: Option<u32>) -> Value {
    let mut data: Map<String, Value> = shown
        .extras
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), json!(v))
        })
        .collect();
    data.insert("msg_id".into(), json!(push.msg_id.to_string()));
    let mut notification = json!({"body": shown.body});
    if let Some(t) = &shown.title {
        notification["title"] = json!(t);
    }
    let mut android = json!({"tag": push.notify_id()});
    if let Some(b) = badge {
        android["notification_count"] = json!(b);
    }
    if let Some(c) = channel_id(push, shown, "fcm") {
        android["channel_id"] = json!(c);
    }
    if let Some(s) = shown.text("sound") {
        android["sound"] = json!(s);
    }
    if let Some(a) = shown.text("uri_action").or(shown.intent()) {
        android["click_action"] = json!(a);
    }
    let priority = if shown.high_priority() {
        "HIGH"
    } else {
        "NORMAL"
    };
    json!({"notification": notification, "data": data,
        "android": {"ttl": format!("{}s", ttl_s(push)), "priority": priority,
            "collapse_key": push.notify_id(), "notification": android}})
}

/// Huawei's and Honor's click action: an intent (`intent.url`) or activity action
/// (`uri_activity`), else open the app.
fn click_action(shown: &Shown) -> Value {
    match (shown.intent(), shown.text("uri_activity")) {
        (Some(intent), _) => json!({"type": 1, "intent": intent}),
        (None, Some(action)) => json!({"type": 1, "action": action}),
        (None, None) => json!({"type": 3}),
    }
}

/// Huawei Push Kit's message (without its tokens).
pub(crate) fn huawei(push: &Push, shown: &Shown, badge: Option<u32>) -> Value {
    let mut notification = json!({"title": shown.title_or_empty(), "body": shown.body,
        "click_action": click_action(shown), "tag": push.notify_id(),
        "notify_id": notify_number(push)});
    if let Some(b) = badge {
        notification["badge"] = json!({"set_num": b});
        if let Some(class) = shown.text("badge_class") {
            notification["badge"]["class"] = json!(class);
        }
    }
    if let Some(c) = channel_id(push, shown, "huawei") {
        notification["channel_id"] = json!(c);
    }
    if let Some(s) = shown.text("sound") {
        notification["sound"] = json!(s);
    }
    if let Some(i) = channel_text(push, "huawei", "importance") {
        notification["importance"] = json!(i);
    }
    let mut android = json!({"ttl": format!("{}s", ttl_s(push)), "notification": notification});
    if let Some(c) = channel_text(push, "huawei", "category").or(shown.text("category")) {
        android["category"] = json!(c);
    }
    json!({"data": data_text(shown, push), "android": android})
}

/// Honor Push's message (without its tokens), camelCase.
pub(crate) fn honor(push: &Push, shown: &Shown, badge: Option<u32>) -> Value {
    let action = click_action(shown);
    let mut click = json!({"type": action["type"]});
    if let Some(i) = action.get("intent") {
        click["intent"] = i.clone();
    }
    if let Some(a) = action.get("action") {
        click["action"] = a.clone();
    }
    let mut notification = json!({"title": shown.title_or_empty(), "body": shown.body,
        "clickAction": click, "tag": push.notify_id(), "notifyId": notify_number(push)});
    if let Some(b) = badge {
        notification["badge"] = json!({"setNum": b});
        if let Some(class) = shown.text("badge_class") {
            notification["badge"]["badgeClass"] = json!(class);
        }
    }
    if let Some(i) = channel_text(push, "honor", "importance") {
        notification["importance"] = json!(i);
    }
    json!({"data": data_text(shown, push),
        "android": {"ttl": format!("{}s", ttl_s(push)), "notification": notification}})
}

/// Mi Push's message: an intent opens through `notify_effect` 2, a web page through 3.
pub(crate) fn xiaomi(push: &Push, shown: &Shown) -> XiaomiMessage {
    let mut extra = Vec::new();
    match shown.intent().or(shown.text("uri_activity")) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            extra.push(("notify_effect".into(), "3".into()));
            extra.push(("web_uri".into(), u.into()));
        }
        Some(u) => {
            extra.push(("notify_effect".into(), "2".into()));
            extra.push(("intent_uri".into(), u.into()));
        }
        None => extra.push(("notify_effect".into(), "1".into())),
    }
    if let Some(c) = channel_id(push, shown, "xiaomi") {
        extra.push(("channel_id".into(), c.into()));
    }
    XiaomiMessage {
        title: shown.title_or_empty(),
        description: shown.body.clone(),
        payload: Some(data_text(shown, push)),
        notify_id: Some(notify_number(push)),
        time_to_live: Some(Duration::from_secs(ttl_s(push))),
        extra,
        ..Default::default()
    }
}

/// OPPO's notification: an intent URI opens through click action 5, an activity action
/// (`uri_action`) through 1.
pub(crate) fn oppo(push: &Push, shown: &Shown) -> Value {
    let mut n = json!({"title": shown.title_or_empty(), "content": shown.body,
        "notify_id": notify_number(push), "click_action_type": 0,
        "action_parameters": data_text(shown, push),
        "off_line": true, "off_line_ttl": ttl_s(push).min(10 * 86400)});
    if let Some(u) = shown.intent() {
        n["click_action_type"] = json!(5);
        n["click_action_url"] = json!(u);
    } else if let Some(a) = shown.text("uri_action") {
        n["click_action_type"] = json!(1);
        n["click_action_activity"] = json!(a);
    }
    if let Some(c) = channel_id(push, shown, "oppo") {
        n["channel_id"] = json!(c);
    }
    n
}

/// vivo's message: an intent opens through skip type 4; `classification` and `category`
/// from `third_party_channel.vivo`.
pub(crate) fn vivo(push: &Push, shown: &Shown) -> Value {
    let mut custom: Map<String, Value> = shown
        .extras
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                json!(v
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string())),
            )
        })
        .collect();
    custom.insert("msg_id".into(), json!(push.msg_id.to_string()));
    let classification = channel_option(push, "vivo", "classification")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut m = json!({"notifyType": 4, "title": shown.title_or_empty(), "content": shown.body,
        "timeToLive": ttl_s(push).clamp(60, 7 * 86400), "skipType": 1,
        "classification": classification, "clientCustomMap": custom});
    if let Some(u) = shown.intent().or(shown.text("uri_activity")) {
        m["skipType"] = json!(4);
        m["skipContent"] = json!(u);
    }
    if let Some(c) = channel_text(push, "vivo", "category") {
        m["category"] = json!(c);
    }
    m
}

/// Meizu's `messageJson`: an activity opens through click type 1, a web page through 2.
pub(crate) fn meizu(push: &Push, shown: &Shown) -> Value {
    let mut extras = shown.extras.clone();
    extras.insert("msg_id".into(), json!(push.msg_id.to_string()));
    let mut click = json!({"clickType": 0, "parameters": extras});
    match shown.intent().or(shown.text("uri_activity")) {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            click["clickType"] = json!(2);
            click["url"] = json!(u);
        }
        Some(a) => {
            click["clickType"] = json!(1);
            click["activity"] = json!(a);
        }
        None => {}
    }
    json!({"noticeBarInfo": {"noticeBarType": 0, "title": shown.title_or_empty(), "content": shown.body},
        "clickTypeInfo": click,
        "pushTimeInfo": {"offLine": 1, "validTime": (ttl_s(push) / 3600).clamp(1, 72)},
        "advanceInfo": {"notifyKey": format!("{:08x}", notify_number(push))}})
}

/// Web Push: the payload the service worker reads, and the RFC 8030 headers (a newer push of
/// an override chain replaces one still queued for the browser: `Topic`).
pub(crate) fn webpush(push: &Push, shown: &Shown) -> (Vec<u8>, Delivery) {
    let mut payload = json!({"msg_id": push.msg_id.to_string(), "notify_id": push.notify_id(),
        "title": shown.title, "body": shown.body, "extras": shown.extras});
    if let Some(u) = shown.text("url") {
        payload["url"] = json!(u);
    }
    let delivery = Delivery {
        ttl: ttl_s(push),
        urgency: "normal",
        topic: push.options.notify_id.clone(),
    };
    (payload.to_string().into_bytes(), delivery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::{Audience, PlatformSet, PushOptions};

    fn push(notification: Value, options: Value) -> Push {
        let mut o = PushOptions::default();
        if let Some(obj) = options.as_object() {
            for (k, v) in obj {
                o.other.insert(k.clone(), v.clone());
            }
        }
        o.apns_production = options["apns_production"].as_bool().unwrap_or(true);
        Push {
            msg_id: 77,
            sent_ms: now_ms(),
            platforms: PlatformSet::all(),
            audience: Audience::All,
            notification: Some(serde_json::from_value(notification).unwrap()),
            message: None,
            options: o,
            sms_message: None,
            callback: None,
            cid: None,
            schedule: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn ios_fields_reach_aps_and_a_background_push_is_one() {
        let p = push(
            json!({"alert": "hi", "sections": {"ios": {"sound": "ding.caf", "category": "C",
                "thread-id": "T", "mutable-content": 1, "extras": {"k": 1}}}}),
            json!({"apns_production": false}),
        );
        let n = apns(&p, &Shown::of(&p, Platform::Ios), Some(2));
        let aps = &n.payload["aps"];
        assert_eq!(
            (
                &aps["sound"],
                &aps["category"],
                &aps["thread-id"],
                &aps["badge"]
            ),
            (&json!("ding.caf"), &json!("C"), &json!("T"), &json!(2))
        );
        assert_eq!(aps["mutable-content"], 1);
        assert_eq!((n.payload["k"].clone(), n.sandbox), (json!(1), true));
        assert_eq!((n.push_type.as_str(), n.priority), ("alert", 10));

        let silent = push(
            json!({"sections": {"ios": {"alert": "", "content-available": true}}}),
            json!({}),
        );
        let n = apns(&silent, &Shown::of(&silent, Platform::Ios), None);
        assert_eq!((n.push_type.as_str(), n.priority), ("background", 5));
        assert!(n.payload["aps"].get("alert").is_none());
        assert!(
            n.payload["aps"].get("sound").is_none(),
            "no sound unless given"
        );
        assert!(!n.sandbox);
    }

    #[test]
    fn android_click_priority_and_channel_map_per_vendor() {
        let p = push(
            json!({"alert": "body", "sections": {"android": {"title": "T", "priority": -1,
                "intent": {"url": "intent:#Intent;component=a/.B;end"}, "channel_id": "c1",
                "uri_action": "a.OPEN"}}}),
            json!({"third_party_channel": {"vivo": {"classification": 1, "category": "IM"},
                "huawei": {"importance": "HIGH"}}}),
        );
        let s = Shown::of(&p, Platform::Android);
        let f = fcm(&p, &s, None);
        assert_eq!(f["android"]["priority"], "NORMAL");
        assert_eq!(f["android"]["notification"]["click_action"], "a.OPEN");
        assert_eq!(f["android"]["notification"]["channel_id"], "c1");
        let h = huawei(&p, &s, None);
        assert_eq!(h["android"]["notification"]["click_action"]["type"], 1);
        assert_eq!(h["android"]["notification"]["importance"], "HIGH");
        let o = oppo(&p, &s);
        assert_eq!(
            (o["click_action_type"].clone(), o["channel_id"].clone()),
            (json!(5), json!("c1"))
        );
        let v = vivo(&p, &s);
        assert_eq!(
            (
                v["skipType"].clone(),
                v["classification"].clone(),
                v["category"].clone()
            ),
            (json!(4), json!(1), json!("IM"))
        );
        let x = xiaomi(&p, &s);
        assert!(x.extra.contains(&("notify_effect".into(), "2".into())));
        let m = meizu(&p, &s);
        assert_eq!(m["clickTypeInfo"]["clickType"], 1);
        let hn = honor(&p, &s, Some(4));
        assert_eq!(hn["android"]["notification"]["badge"]["setNum"], 4);

        let plain = push(json!({"alert": "b"}), json!({}));
        let s = Shown::of(&plain, Platform::Android);
        assert_eq!(fcm(&plain, &s, None)["android"]["priority"], "HIGH");
        assert_eq!(
            huawei(&plain, &s, None)["android"]["notification"]["click_action"]["type"],
            3
        );
        assert_eq!(notify_number(&plain), 77);
    }
}
