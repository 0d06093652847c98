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
