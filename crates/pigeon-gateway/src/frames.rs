//! Server → device frames.

use bytes::Bytes;
use pigeon_core::{BadgeOp, Click, Message, NetworkType, Notification, Platform, Push};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The `push` frame for devices on `platform`. Encoded once per push and platform; the
/// same bytes go to every such device. Written straight from the push (no JSON tree for the
/// frame itself: the push API encodes one per accepted push), its keys in the order a JSON
/// object sorted them in before.
pub fn encode_push(push: &Push, platform: Platform) -> Bytes {
    #[derive(Serialize)]
    struct PushFrame<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        apns_collapse_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        display_window: Option<(u64, u64)>,
        expires_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<Map<String, Value>>,
        #[serde(serialize_with = "as_text")]
        msg_id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        network: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        notification: Option<Map<String, Value>>,
        notify_id: NotifyId<'a>,
        op: &'static str,
        sent_ms: u64,
    }
    /// The push's own notify id, else its msg_id, as text (`Push::notify_id` without the
    /// copy).
    struct NotifyId<'a>(&'a Push);
    impl Serialize for NotifyId<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match &self.0.policy.notify_id {
                Some(id) => s.serialize_str(id),
                None => s.collect_str(&self.0.msg_id),
            }
        }
    }
    fn as_text<S: serde::Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(n)
    }
    let frame = PushFrame {
        apns_collapse_id: match platform {
            Platform::Ios => push.policy.collapse_id.as_deref(),
            _ => None,
        },
        // What only the device can act on.
        display_window: push.policy.display_window,
        expires_ms: push.expires_ms(),
        message: push.content.message.as_ref().map(message_fields),
        msg_id: push.msg_id,
        network: match push.policy.network {
            NetworkType::Any => None,
            NetworkType::Wifi => Some("wifi"),
            NetworkType::Mobile => Some("mobile"),
        },
        notification: push
            .notification_for(platform)
            .map(|n| notification_fields(platform, n)),
        notify_id: NotifyId(push),
        op: "push",
        sent_ms: push.sent_ms,
    };
    let mut out = Vec::with_capacity(512);
    // Writing into a Vec fails only for a map with keys that are not strings; these are.
    if let Err(e) = serde_json::to_writer(&mut out, &frame) {
        tracing::error!(error = %e, msg_id = push.msg_id, "push frame not encoded");
    }
    Bytes::from(out)
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
    fn a_push_frame_carries_every_field_under_the_protocols_names() {
        use pigeon_core::{Audience, PlatformSet};
        let mut push = Push::new(PlatformSet::all(), Audience::All);
        push.msg_id = 18_100_000_000_000_001;
        push.sent_ms = 1_000;
        push.policy.collapse_id = Some("c".into());
        push.content.notifications.insert(
            Platform::Ios,
            Notification {
                body: "hi".into(),
                ..Default::default()
            },
        );
        let text = encode_push(&push, Platform::Ios);
        let v: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(
            v,
            json!({
                "apns_collapse_id": "c",
                "expires_ms": push.expires_ms(),
                "msg_id": "18100000000000001",
                "notification": {"alert": "hi"},
                "notify_id": "18100000000000001",
                "op": "push",
                "sent_ms": 1000,
            })
        );
        // The keys come sorted, as they did from a JSON object, and the frame ends in the
        // brace a badge is spliced before.
        assert!(text.starts_with(br#"{"apns_collapse_id":"c","expires_ms":"#));
        assert!(text.ends_with(br#""op":"push","sent_ms":1000}"#));
        // Another platform gets neither the iOS notification nor its collapse id; a notify
        // id of the push's own replaces the msg_id.
        push.policy.notify_id = Some("n-1".into());
        let v: Value = serde_json::from_slice(&encode_push(&push, Platform::Android)).unwrap();
        assert!(v.get("apns_collapse_id").is_none() && v.get("notification").is_none());
        assert_eq!(v["notify_id"], json!("n-1"));
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
