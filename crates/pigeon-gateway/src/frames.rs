//! Server → device frames.

use bytes::Bytes;
use pigeon_core::{BadgeOp, Click, Message, NetworkType, Notification, Platform, Push};
use serde_json::{json, Map, Value};

/// The `push` frame for devices on `platform`. Encoded once per push and platform; the
/// same bytes go to every such device.
pub fn encode_push(push: &Push, platform: Platform) -> Bytes {
    let mut frame = Map::new();
    frame.insert("op".into(), json!("push"));
    frame.insert("msg_id".into(), json!(push.msg_id.to_string()));
    frame.insert("sent_ms".into(), json!(push.sent_ms));
    frame.insert("expires_ms".into(), json!(push.expires_ms()));
    if let Some(n) = push.notification_for(platform) {
        frame.insert(
            "notification".into(),
            Value::Object(notification_fields(platform, n)),
        );
    }
    if let Some(m) = &push.content.message {
        frame.insert("message".into(), Value::Object(message_fields(m)));
    }
    frame.insert("notify_id".into(), json!(push.notify_id()));
    if let (Platform::Ios, Some(collapse)) = (platform, &push.policy.collapse_id) {
        frame.insert("apns_collapse_id".into(), json!(collapse));
    }
    // What only the device can act on.
    if let Some((start, end)) = push.policy.display_window {
        frame.insert("display_window".into(), json!([start, end]));
    }
    match push.policy.network {
        NetworkType::Any => {}
        NetworkType::Wifi => {
            frame.insert("network".into(), json!("wifi"));
        }
        NetworkType::Mobile => {
            frame.insert("network".into(), json!("mobile"));
        }
    }
    Bytes::from(Value::Object(frame).to_string())
}

/// A notification under the device protocol's names (device-protocol.md §3): `alert`
/// (the text, or iOS's alert dictionary), `title`, `extras`, the fields Pigeon reads under
/// the names a push gives them (`sound`, `channel_id`, `intent`, `badge_add_num`, …), then
/// the display fields as given.
pub fn notification_fields(platform: Platform, n: &Notification) -> Map<String, Value> {
    let mut out = Map::new();
    let apns = n.apns.as_ref();
    match apns.and_then(|a| a.alert.as_ref()) {
        Some(alert) => out.insert("alert".into(), Value::Object(alert.clone())),
        None => out.insert("alert".into(), json!(n.body)),
    };
    let mut text = |key: &str, v: &Option<String>| {
        if let Some(v) = v {
            out.insert(key.into(), json!(v));
        }
    };
    text("title", &n.title);
    text("sound", &n.sound);
    text("channel_id", &n.channel_id);
    text("category", &n.category);
    text("badge_class", &n.badge_class);
    if let Some(sound) = apns.and_then(|a| a.sound.as_ref()) {
        out.insert("sound".into(), Value::Object(sound.clone()));
    }
    if !n.extras.is_empty() {
        out.insert("extras".into(), Value::Object(n.extras.clone()));
    }
    if let Some(p) = n.priority {
        out.insert("priority".into(), json!(p));
    }
    match (platform, n.badge) {
        (_, None) => {}
        (Platform::Ios, Some(BadgeOp::Set(v))) => {
            out.insert("badge".into(), json!(v));
        }
        (Platform::Ios, Some(BadgeOp::Add(d))) => {
            out.insert("badge".into(), json!(format!("{d:+}")));
        }
        (_, Some(BadgeOp::Set(v))) => {
            out.insert("badge_set_num".into(), json!(v));
        }
        (_, Some(BadgeOp::Add(d))) => {
            out.insert("badge_add_num".into(), json!(d));
        }
    }
    match &n.click {
        Click::OpenApp => {}
        Click::Intent(uri) => {
            out.insert("intent".into(), json!({ "url": uri }));
        }
        Click::Url(url) => {
            out.insert("url".into(), json!(url));
        }
        Click::Payload(p) => {
            out.insert("payload".into(), json!(p));
        }
    }
    if let Some(activity) = &n.activity {
        if let Some(a) = &activity.class {
            out.insert("uri_activity".into(), json!(a));
        }
        if let Some(a) = &activity.action {
            out.insert("uri_action".into(), json!(a));
        }
    }
    if let Some(a) = apns {
        if a.content_available {
            out.insert("content-available".into(), json!(true));
        }
        if a.mutable_content {
            out.insert("mutable-content".into(), json!(true));
        }
        if let Some(t) = &a.thread_id {
            out.insert("thread-id".into(), json!(t));
        }
        if let Some(l) = &a.interruption_level {
            out.insert("interruption-level".into(), json!(l));
        }
    }
    for (k, v) in &n.display {
        out.entry(k.clone()).or_insert_with(|| v.clone());
    }
    out
}

/// A pass-through message under the device protocol's names.
pub fn message_fields(m: &Message) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("msg_content".into(), json!(m.content));
    if let Some(t) = &m.title {
        out.insert("title".into(), json!(t));
    }
    if let Some(t) = &m.content_type {
        out.insert("content_type".into(), json!(t));
    }
    if !m.extras.is_empty() {
        out.insert("extras".into(), Value::Object(m.extras.clone()));
    }
    out
}

/// A push frame with this device's `badge` number: the shared frame, the number spliced in
/// before its closing brace (badges differ per device; the rest of the frame does not).
pub fn with_badge(frame: &Bytes, badge: u32) -> Bytes {
    let Some(body) = frame.strip_suffix(b"}") else {
        return frame.clone();
    };
    let mut out = Vec::with_capacity(frame.len() + 16);
    out.extend_from_slice(body);
    out.extend_from_slice(format!(r#","badge":{badge}}}"#).as_bytes());
    Bytes::from(out)
}

pub fn welcome(heartbeat_s: u64, server_time_ms: u64, pending: usize) -> String {
    json!({"op": "welcome", "heartbeat_s": heartbeat_s, "server_time_ms": server_time_ms, "pending": pending})
        .to_string()
}

pub fn error(code: u32, reason: &str, seq: Option<&Value>) -> String {
    let mut v = json!({"op": "error", "code": code, "reason": reason});
    if let Some(seq) = seq {
        v["seq"] = seq.clone();
    }
    v.to_string()
}

pub fn ok(seq: &Value) -> String {
    json!({"op": "ok", "seq": seq}).to_string()
}

pub const PONG: &str = r#"{"op":"pong"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_display_window_and_network_reach_the_device_only_when_given() {
        use pigeon_core::{Audience, PlatformSet};
        let mut push = Push::new(PlatformSet::all(), Audience::All);
        push.msg_id = 7;
        push.content.message = Some(Message {
            content: "m".into(),
            ..Default::default()
        });
        let plain: Value = serde_json::from_slice(&encode_push(&push, Platform::Android)).unwrap();
        assert!(plain.get("display_window").is_none() && plain.get("network").is_none());
        push.policy.display_window = Some((1_000, 2_000));
        push.policy.network = NetworkType::Wifi;
        let v: Value = serde_json::from_slice(&encode_push(&push, Platform::Android)).unwrap();
        assert_eq!(
            (&v["display_window"], &v["network"]),
            (&json!([1000, 2000]), &json!("wifi"))
        );
        assert_eq!(v["message"], json!({"msg_content": "m"}));
    }

    #[test]
    fn a_badge_is_spliced_into_the_shared_frame() {
        let frame = Bytes::from_static(br#"{"op":"push","msg_id":"7","notify_id":"7"}"#);
        let v: Value = serde_json::from_slice(&with_badge(&frame, 3)).unwrap();
        assert_eq!(
            v,
            json!({"op": "push", "msg_id": "7", "notify_id": "7", "badge": 3})
        );
    }
}
