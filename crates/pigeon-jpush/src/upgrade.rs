//! Pushes stored before Pigeon had a model of its own kept JPush's names: a notification's
//! `alert` and per-platform sections, `message`, `options` (with `third_party_channel`),
//! `sms_message`, `callback` and `cid`, as the JPush door had parsed them. This reads them
//! back through the JPush translator, so an upgraded push means what it meant when it was
//! accepted.

use crate::parse_push;
use pigeon_core::{Audience, IdempotencyKey, PlatformSet, Push, SmsFallback};
use pigeon_store::PushUpgrader;
use serde_json::{json, Map, Value};

/// Reads pushes and pending SMS stored in the old form.
pub struct StoredPushUpgrader;

impl PushUpgrader for StoredPushUpgrader {
    fn push(&self, old: &Value) -> Result<Push, String> {
        upgrade_push(old)
    }

    fn sms(&self, old: &Value) -> Result<SmsFallback, String> {
        Ok(crate::push::parse_sms(old))
    }
}

/// An old stored push as today's. Its audience and platforms are kept as stored (a file
/// push's may hold more ids than a request may name); everything else goes through the
/// translator, then what the engine had resolved (notify id, pace) is put back.
pub fn upgrade_push(old: &Value) -> Result<Push, String> {
    let field = |k: &str| old.get(k).cloned().unwrap_or(Value::Null);
    let platforms: PlatformSet =
        serde_json::from_value(field("platforms")).map_err(|e| format!("platforms: {e}"))?;
    let audience: Audience =
        serde_json::from_value(field("audience")).map_err(|e| format!("audience: {e}"))?;
    let options = old.get("options").and_then(Value::as_object);
    let mut request = Map::new();
    request.insert("platform".into(), json!("all"));
    request.insert("audience".into(), json!("all"));
    if let Some(n) = old.get("notification").and_then(Value::as_object) {
        let mut notification = Map::new();
        if let Some(alert) = n.get("alert").filter(|a| !a.is_null()) {
            notification.insert("alert".into(), alert.clone());
        }
        if let Some(Value::Object(sections)) = n.get("sections") {
            for (name, section) in sections {
                notification.insert(name.clone(), section.clone());
            }
        }
        request.insert("notification".into(), Value::Object(notification));
    }
    if let Some(m) = old.get("message").filter(|m| !m.is_null()) {
        request.insert("message".into(), m.clone());
    }
    if let Some(o) = options {
        let mut given = Map::new();
        for (k, v) in o {
            match k.as_str() {
                // Resolved by the engine, not given by the caller.
                "notify_id" | "pace_ms" => {}
                "other" => {
                    if let Value::Object(other) = v {
                        given.extend(other.clone());
                    }
                }
                _ if v.is_null() => {}
                _ => {
                    given.insert(k.clone(), v.clone());
                }
            }
        }
        request.insert("options".into(), Value::Object(given));
    }
    for key in ["sms_message", "callback"] {
        if let Some(v) = old.get(key).filter(|v| !v.is_null()) {
            request.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Object(extra)) = old.get("extra") {
        for (k, v) in extra {
            request.insert(k.clone(), v.clone());
        }
    }
    let mut push = parse_push(&Value::Object(request)).map_err(|e| e.message)?;
    push.platforms = platforms;
    push.audience = audience;
    // Notifications for platforms the push did not name were never shown.
    push.content
        .notifications
        .retain(|p, _| platforms.contains(*p));
    push.msg_id = field("msg_id").as_u64().ok_or("msg_id is missing")?;
    push.sent_ms = field("sent_ms").as_u64().ok_or("sent_ms is missing")?;
    if let Some(o) = options {
        push.policy.notify_id = o.get("notify_id").and_then(Value::as_str).map(String::from);
        push.policy.pace.duration_ms = o.get("pace_ms").and_then(Value::as_u64);
    }
    push.idempotency = old
        .get("cid")
        .and_then(Value::as_str)
        .map(|key| IdempotencyKey {
            key: key.to_string(),
            issued_only: true,
        });
    Ok(push)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::{BadgeOp, ChannelStrategy, Click, Platform};

    /// A push as the build before the model change stored it (copied from such a database).
    const OLD: &str = r#"{"msg_id":1828256757,"sent_ms":1764800000000,"platforms":["android","ios"],
        "audience":{"expr":{"tag":["vip"],"registration_id":["r1"]}},
        "notification":{"alert":"hello","sections":{"android":{"title":"T","builder_id":2,
          "intent":{"url":"intent:#Intent;end"},"badge_add_num":1},"ios":{"badge":"+2","sound":"a.caf"}}},
        "message":{"msg_content":"m","extras":{"k":"v"}},
        "options":{"sendno":9,"time_to_live":600,"apns_production":false,"override_msg_id":5,
          "notify_id":"5","pace_ms":60000,"other":{"third_party_channel":{"xiaomi":{"distribution":"ospush",
          "channel_id":"c"}}}},
        "sms_message":{"delay_time":30,"temp_id":7,"temp_para":{"code":"1"}},
        "callback":{"url":"https://cb.example/x","params":{"p":1},"type":3},
        "cid":"k-1"}"#;

    #[test]
    fn an_old_push_means_what_it_meant() {
        let old: Value = serde_json::from_str(OLD).unwrap();
        let p = upgrade_push(&old).unwrap();
        assert_eq!((p.msg_id, p.sent_ms), (1828256757, 1764800000000));
        let android = p.notification_for(Platform::Android).unwrap();
        assert_eq!(
            (android.title.as_deref(), android.body.as_str()),
            (Some("T"), "hello")
        );
        assert_eq!(android.click, Click::Intent("intent:#Intent;end".into()));
        assert_eq!(android.badge, Some(BadgeOp::Add(1)));
        assert_eq!(android.display["builder_id"], json!(2));
        let ios = p.notification_for(Platform::Ios).unwrap();
        assert_eq!(
            (ios.badge, ios.sound.as_deref()),
            (Some(BadgeOp::Add(2)), Some("a.caf"))
        );
        assert!(p.notification_for(Platform::Web).is_none());
        assert_eq!(p.content.message.as_ref().unwrap().extras["k"], json!("v"));
        assert_eq!((p.labels.sendno, p.policy.ttl_s), (Some(9), 600));
        assert!(!p.policy.apns_production);
        assert_eq!(p.policy.overrides, Some(5));
        assert_eq!(p.policy.notify_id.as_deref(), Some("5"));
        assert_eq!(p.policy.pace.duration_ms, Some(60000));
        let xiaomi = &p.policy.vendors["xiaomi"];
        assert_eq!(xiaomi.strategy, Some(ChannelStrategy::VendorOnly));
        assert_eq!(xiaomi.channel_id.as_deref(), Some("c"));
        let sms = p.policy.sms.as_ref().unwrap();
        assert_eq!((sms.delay_s, sms.template.as_deref()), (30, Some("7")));
        let cb = p.callback.as_ref().unwrap();
        assert_eq!(
            (cb.url.as_deref(), cb.kinds),
            (Some("https://cb.example/x"), Some(3))
        );
        assert_eq!(p.idempotency.as_ref().unwrap().key, "k-1");
        let Audience::Expr(e) = &p.audience else {
            panic!("audience")
        };
        assert_eq!((e.tag.len(), e.registration_id.len()), (1, 1));
    }

    #[test]
    fn a_broken_old_push_is_an_error_not_a_panic() {
        for bad in [
            json!({}),
            json!({"platforms": "all", "audience": "all"}),
            json!([1]),
        ] {
            assert!(upgrade_push(&bad).is_err(), "{bad}");
        }
    }
}
