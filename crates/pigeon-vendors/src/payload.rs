//! Each vendor's form of a push: the JPush notification's fields (title, body, extras,
//! sound, click action, priority, channel, badge number, notify id, time to live) mapped onto
//! what the vendor's API takes. Pure functions of the push, the device's platform and badge.

use crate::apns::Notification;
use crate::webpush::Delivery;
use crate::xiaomi::XiaomiMessage;
use pigeon_core::{ApnsFields, Click, Platform, Push, VendorPolicy};
use pigeon_engine::now_ms;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// What a device on one platform is shown for a push, read once from its notification.
pub(crate) struct Shown<'a> {
    pub title: Option<String>,
    pub body: String,
    pub extras: Map<String, Value>,
    /// The platform's notification (or the push's notification for vendor channels).
    n: Option<&'a pigeon_core::Notification>,
}

impl<'a> Shown<'a> {
    pub(crate) fn of(push: &'a Push, platform: Platform) -> Shown<'a> {
        let n = push.vendor_notification_for(platform);
        let alert = n
            .and_then(|n| n.apns.as_ref())
            .and_then(|a| a.alert.as_ref());
        let text = |key: &str| alert.and_then(|a| a.get(key)).and_then(Value::as_str);
        let title = n
            .and_then(|n| n.title.clone())
            .or_else(|| text("title").map(String::from));
        let body = match (n, text("body")) {
            (Some(n), _) if !n.body.is_empty() => n.body.clone(),
            (_, Some(b)) => b.to_string(),
            _ => String::new(),
        };
        Shown {
            title,
            body,
            extras: n.map(|n| n.extras.clone()).unwrap_or_default(),
            n,
        }
    }

    fn channel_id(&self) -> Option<&str> {
        self.n.and_then(|n| n.channel_id.as_deref())
    }

    fn sound(&self) -> Option<&str> {
        self.n
            .and_then(|n| n.sound.as_deref())
            .filter(|s| !s.is_empty())
    }

    fn category(&self) -> Option<&str> {
        self.n.and_then(|n| n.category.as_deref())
    }

    fn badge_class(&self) -> Option<&str> {
        self.n.and_then(|n| n.badge_class.as_deref())
    }

    fn click(&self) -> &Click {
        static OPEN_APP: Click = Click::OpenApp;
        self.n.map_or(&OPEN_APP, |n| &n.click)
    }

    /// Android's click target: an intent URI or deep link.
    fn intent(&self) -> Option<&str> {
        match self.click() {
            Click::Intent(u) if !u.is_empty() => Some(u),
            _ => None,
        }
    }

    /// An activity to open, by class name.
    fn activity(&self) -> Option<&str> {
        self.n
            .and_then(|n| n.activity.as_ref())
            .and_then(|a| a.class.as_deref())
            .filter(|s| !s.is_empty())
    }

    /// An activity to open, by intent action.
    fn activity_action(&self) -> Option<&str> {
        self.n
            .and_then(|n| n.activity.as_ref())
            .and_then(|a| a.action.as_deref())
            .filter(|s| !s.is_empty())
    }

    /// A web page to open.
    fn url(&self) -> Option<&str> {
        match self.click() {
            Click::Url(u) if !u.is_empty() => Some(u),
            _ => None,
        }
    }

    /// Where a tap leads for vendors with one "open this" field: an intent, an activity or
    /// a web page.
    fn target(&self) -> Option<&str> {
        self.intent().or(self.activity()).or(self.url())
    }

    /// Android's priority −2..2: 0 and above is high for FCM, as JPush maps it.
    fn high_priority(&self) -> bool {
        self.n.and_then(|n| n.priority).unwrap_or(0) >= 0
    }

    fn apns(&self) -> Option<&ApnsFields> {
        self.n.and_then(|n| n.apns.as_deref())
    }

    /// The title, or an empty one for vendors that need the field.
    fn title_or_empty(&self) -> String {
        self.title.clone().unwrap_or_default()
    }
}

/// A vendor channel's part of the push's delivery policy.
fn vendor_policy<'a>(push: &'a Push, vendor: &str) -> Option<&'a VendorPolicy> {
    push.policy.vendors.get(vendor)
}

/// The Android notification channel: the vendor's own from the push's policy, else the
/// notification's.
fn channel_id<'a>(push: &'a Push, shown: &'a Shown, vendor: &str) -> Option<&'a str> {
    vendor_policy(push, vendor)
        .and_then(|v| v.channel_id.as_deref())
        .or(shown.channel_id())
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
    let fields = shown.apns();
    if let Some(alert) = fields.and_then(|f| f.alert.as_ref()) {
        aps["alert"] = Value::Object(alert.clone());
    }
    if let Some(obj) = aps.as_object_mut() {
        obj.remove("sound");
        match (fields.and_then(|f| f.sound.as_ref()), shown.sound()) {
            (Some(dict), _) => {
                obj.insert("sound".into(), Value::Object(dict.clone()));
            }
            (None, Some(name)) => {
                obj.insert("sound".into(), json!(name));
            }
            (None, None) => {}
        }
        if let Some(c) = shown.category() {
            obj.insert("category".into(), json!(c));
        }
        if let Some(f) = fields {
            if let Some(t) = &f.thread_id {
                obj.insert("thread-id".into(), json!(t));
            }
            if let Some(l) = &f.interruption_level {
                obj.insert("interruption-level".into(), json!(l));
            }
            if f.mutable_content {
                obj.insert("mutable-content".into(), json!(1));
            }
            if f.content_available {
                obj.insert("content-available".into(), json!(1));
                if shown.body.is_empty() && shown.title.is_none() {
                    obj.remove("alert");
                    n.push_type = "background".into();
                    n.priority = 5;
                }
            }
        }
    }
    // An override replaces the notification it overrides, as its collapse id.
    n.collapse_id = push
        .policy
        .collapse_id
        .clone()
        .or_else(|| push.policy.notify_id.clone());
    n.expiration = Some(push.expires_ms() / 1000);
    n.sandbox = !push.policy.apns_production;
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
    if let Some(s) = shown.sound() {
        android["sound"] = json!(s);
    }
    if let Some(a) = shown.activity_action().or(shown.intent()) {
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

/// Huawei's and Honor's click action: an intent, an activity, a web page, else open the app.
fn click_action(shown: &Shown) -> Value {
    match (shown.intent(), shown.activity(), shown.url()) {
        (Some(intent), _, _) => json!({"type": 1, "intent": intent}),
        (None, Some(action), _) => json!({"type": 1, "action": action}),
        (None, None, Some(url)) => json!({"type": 2, "url": url}),
        (None, None, None) => json!({"type": 3}),
    }
}

/// Huawei Push Kit's message (without its tokens).
pub(crate) fn huawei(push: &Push, shown: &Shown, badge: Option<u32>) -> Value {
    let mut notification = json!({"title": shown.title_or_empty(), "body": shown.body,
        "click_action": click_action(shown), "tag": push.notify_id(),
        "notify_id": notify_number(push)});
    if let Some(b) = badge {
        notification["badge"] = json!({"set_num": b});
        if let Some(class) = shown.badge_class() {
            notification["badge"]["class"] = json!(class);
        }
    }
    if let Some(c) = channel_id(push, shown, "huawei") {
        notification["channel_id"] = json!(c);
    }
    if let Some(s) = shown.sound() {
        notification["sound"] = json!(s);
    }
    if let Some(i) = vendor_policy(push, "huawei").and_then(|v| v.importance.as_deref()) {
        notification["importance"] = json!(i);
    }
    let mut android = json!({"ttl": format!("{}s", ttl_s(push)), "notification": notification});
    if let Some(c) = vendor_policy(push, "huawei")
        .and_then(|v| v.category.as_deref())
        .or(shown.category())
    {
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
        if let Some(class) = shown.badge_class() {
            notification["badge"]["badgeClass"] = json!(class);
        }
    }
    if let Some(i) = vendor_policy(push, "honor").and_then(|v| v.importance.as_deref()) {
        notification["importance"] = json!(i);
    }
    json!({"data": data_text(shown, push),
        "android": {"ttl": format!("{}s", ttl_s(push)), "notification": notification}})
}

/// Mi Push's message: an intent opens through `notify_effect` 2, a web page through 3.
pub(crate) fn xiaomi(push: &Push, shown: &Shown) -> XiaomiMessage {
    let mut extra = Vec::new();
    match shown.target() {
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
    } else if let Some(a) = shown.activity_action() {
        n["click_action_type"] = json!(1);
        n["click_action_activity"] = json!(a);
    } else if let Some(u) = shown.url() {
        n["click_action_type"] = json!(2);
        n["click_action_url"] = json!(u);
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
    let classification = vendor_policy(push, "vivo")
        .and_then(|v| v.classification)
        .unwrap_or(0);
    let mut m = json!({"notifyType": 4, "title": shown.title_or_empty(), "content": shown.body,
        "timeToLive": ttl_s(push).clamp(60, 7 * 86400), "skipType": 1,
        "classification": classification, "clientCustomMap": custom});
    if let Some(u) = shown.intent().or(shown.activity()) {
        m["skipType"] = json!(4);
        m["skipContent"] = json!(u);
    } else if let Some(u) = shown.url() {
        m["skipType"] = json!(2);
        m["skipContent"] = json!(u);
    }
    if let Some(c) = vendor_policy(push, "vivo").and_then(|v| v.category.as_deref()) {
        m["category"] = json!(c);
    }
    m
}

/// Meizu's `messageJson`: an activity opens through click type 1, a web page through 2.
pub(crate) fn meizu(push: &Push, shown: &Shown) -> Value {
    let mut extras = shown.extras.clone();
    extras.insert("msg_id".into(), json!(push.msg_id.to_string()));
    let mut click = json!({"clickType": 0, "parameters": extras});
    match shown.target() {
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
    if let Some(u) = shown.url() {
        payload["url"] = json!(u);
    }
    if let Some(icon) = shown.n.and_then(|n| n.display.get("icon")) {
        payload["icon"] = icon.clone();
    }
    let delivery = Delivery {
        ttl: ttl_s(push),
        urgency: "normal",
        topic: push.policy.notify_id.clone(),
    };
    (payload.to_string().into_bytes(), delivery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::{Activity, Audience, Notification, PlatformSet};

    fn push(platform: Platform, n: Notification) -> Push {
        let mut p = Push::new(PlatformSet::all(), Audience::All);
        p.msg_id = 77;
        p.sent_ms = now_ms();
        p.content.notifications.insert(platform, n);
        p
    }

    #[test]
    fn ios_fields_reach_aps_and_a_background_push_is_one() {
        let mut p = push(
            Platform::Ios,
            Notification {
                body: "hi".into(),
                sound: Some("ding.caf".into()),
                category: Some("C".into()),
                extras: json!({"k": 1}).as_object().cloned().unwrap(),
                apns: Some(Box::new(ApnsFields {
                    thread_id: Some("T".into()),
                    mutable_content: true,
                    ..Default::default()
                })),
                ..Default::default()
            },
        );
        p.policy.apns_production = false;
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
            Platform::Ios,
            Notification {
                apns: Some(Box::new(ApnsFields {
                    content_available: true,
                    ..Default::default()
                })),
                ..Default::default()
            },
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
        let mut p = push(
            Platform::Android,
            Notification {
                title: Some("T".into()),
                body: "body".into(),
                priority: Some(-1),
                click: Click::Intent("intent:#Intent;component=a/.B;end".into()),
                activity: Some(Box::new(Activity {
                    class: None,
                    action: Some("a.OPEN".into()),
                })),
                channel_id: Some("c1".into()),
                ..Default::default()
            },
        );
        p.policy.vendors.insert(
            "vivo".into(),
            VendorPolicy {
                classification: Some(1),
                category: Some("IM".into()),
                ..Default::default()
            },
        );
        p.policy.vendors.insert(
            "huawei".into(),
            VendorPolicy {
                importance: Some("HIGH".into()),
                ..Default::default()
            },
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

        let plain = push(
            Platform::Android,
            Notification {
                body: "b".into(),
                ..Default::default()
            },
        );
        let s = Shown::of(&plain, Platform::Android);
        assert_eq!(fcm(&plain, &s, None)["android"]["priority"], "HIGH");
        assert_eq!(
            huawei(&plain, &s, None)["android"]["notification"]["click_action"]["type"],
            3
        );
        assert_eq!(notify_number(&plain), 77);
    }
}
