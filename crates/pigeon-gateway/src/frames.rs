//! Server → device frames.

use bytes::Bytes;
use pigeon_core::{Platform, Push};
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
        frame.insert("notification".into(), Value::Object(n));
    }
    if let Some(m) = &push.message {
        frame.insert("message".into(), Value::Object(m.clone()));
    }
    frame.insert("notify_id".into(), json!(push.notify_id()));
    if let (Platform::Ios, Some(collapse)) = (platform, &push.options.apns_collapse_id) {
        frame.insert("apns_collapse_id".into(), json!(collapse));
    }
    Bytes::from(Value::Object(frame).to_string())
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
    fn a_badge_is_spliced_into_the_shared_frame() {
        let frame = Bytes::from_static(br#"{"op":"push","msg_id":"7","notify_id":"7"}"#);
        let v: Value = serde_json::from_slice(&with_badge(&frame, 3)).unwrap();
        assert_eq!(
            v,
            json!({"op": "push", "msg_id": "7", "notify_id": "7", "badge": 3})
        );
    }
}
