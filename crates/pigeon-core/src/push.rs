//! A push: what to show, to whom, under which options.

use crate::{Audience, Platform, PlatformSet, DEFAULT_TIME_TO_LIVE_S};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One accepted push, as every layer below the front doors sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// Unique per server; the id every dialect answers with and every device sees.
    pub msg_id: u64,
    /// When the push was accepted, in ms since the epoch.
    pub sent_ms: u64,
    pub platforms: PlatformSet,
    pub audience: Audience,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
    /// A pass-through (custom) message: `msg_content`, `title`, `content_type`, `extras`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Map<String, Value>>,
    #[serde(default)]
    pub options: PushOptions,
    /// Kept for the SMS fallback work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms_message: Option<Value>,
    /// Per-push callback override, kept for the callbacks work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Value>,
    /// Idempotency key, kept for the cid work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<String>,
    /// Other parts a dialect gave that later work will use (inapp_message, notification_3rd,
    /// live_activity), stored as given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
    /// Set when a schedule fires this push: storing the push also records the firing, in
    /// the same transaction, so a schedule fires exactly once whatever crashes.
    #[serde(skip)]
    pub schedule: Option<ScheduleFiring>,
}

/// The highest badge number Pigeon keeps for a device.
pub const MAX_BADGE: u32 = 99_999;

/// A change to a device's app-icon badge, which the server keeps per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadgeOp {
    Set(u32),
    Add(i64),
}

impl BadgeOp {
    /// `N`, `"N"`, `"+N"`, `"-N"`; `""` clears the badge and `"auto"` adds one (what the
    /// SDKs send by default).
    pub fn parse(v: &Value) -> Option<BadgeOp> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(|n| BadgeOp::Set(n.min(u64::from(MAX_BADGE)) as u32)),
            Value::String(s) if s.is_empty() => Some(BadgeOp::Set(0)),
            Value::String(s) if s == "auto" => Some(BadgeOp::Add(1)),
            Value::String(s) => {
                let n = |digits: &str| -> Option<i64> {
                    (!digits.is_empty()
                        && digits.len() <= 5
                        && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| digits.parse().ok())
                    .flatten()
                };
                if let Some(d) = s.strip_prefix('+') {
                    n(d).map(BadgeOp::Add)
                } else if let Some(d) = s.strip_prefix('-') {
                    n(d).map(|n| BadgeOp::Add(-n))
                } else {
                    n(s).map(|n| BadgeOp::Set(n.min(i64::from(MAX_BADGE)) as u32))
                }
            }
            _ => None,
        }
    }

    /// The badge after this change to `current`: never below 0 nor above [`MAX_BADGE`].
    pub fn apply(self, current: u32) -> u32 {
        match self {
            BadgeOp::Set(n) => n.min(MAX_BADGE),
            BadgeOp::Add(d) => (i64::from(current) + d).clamp(0, i64::from(MAX_BADGE)) as u32,
        }
    }
}

/// One firing of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleFiring {
    pub schedule_id: String,
    /// The firing time this push is for.
    pub due_ms: u64,
    /// When the schedule fires next, if ever.
    pub next_ms: Option<u64>,
}

/// A notification: a shared `alert` and one section per platform.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Value>,
    /// Keyed by section name: android, ios, hmos, quickapp, web, winphone, voip.
    #[serde(default)]
    pub sections: BTreeMap<String, Map<String, Value>>,
}

/// Options of a push. The ones no code reads yet are kept in `other`, for the issues that will.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendno: Option<i64>,
    /// Seconds an offline device may still receive the push; 0 = online devices only.
    pub time_to_live: u64,
    pub apns_production: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns_collapse_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_msg_id: Option<u64>,
    /// The notification id devices show it under, when it is not its own msg_id: set by the
    /// engine to that of the push it overrides, so the device replaces that notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub big_push_duration: Option<u64>,
    /// How long its paced delivery lasts in ms: `big_push_duration` as the engine resolved it
    /// when it accepted the push (kept, so a restart resumes the same pace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub other: Map<String, Value>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            sendno: None,
            time_to_live: DEFAULT_TIME_TO_LIVE_S,
            apns_production: true,
            apns_collapse_id: None,
            override_msg_id: None,
            notify_id: None,
            big_push_duration: None,
            pace_ms: None,
            other: Map::new(),
        }
    }
}

impl Push {
    /// When the push stops being delivered to devices that were offline, in ms since the epoch.
    pub fn expires_ms(&self) -> u64 {
        self.sent_ms
            .saturating_add(self.options.time_to_live.saturating_mul(1000))
    }

    /// When its SMS fallback is due (`sms_message.delay_time` seconds after it was
    /// accepted), if it has one.
    pub fn sms_due_ms(&self) -> Option<u64> {
        let delay_s = self.sms_message.as_ref()?.get("delay_time")?.as_u64()?;
        Some(self.sent_ms.saturating_add(delay_s.saturating_mul(1000)))
    }

    /// The id under which devices show its notification: notifications with the same one
    /// replace each other.
    pub fn notify_id(&self) -> String {
        match &self.options.notify_id {
            Some(id) => id.clone(),
            None => self.msg_id.to_string(),
        }
    }

    /// The notification a device on `platform` shows: the push's shared `alert` merged under
    /// that platform's own section, every field of the section kept. `None` when the push has
    /// nothing to show on that platform.
    pub fn notification_for(&self, platform: Platform) -> Option<Map<String, Value>> {
        let n = self.notification.as_ref()?;
        let mut out = match n.sections.get(platform.as_str()) {
            Some(section) => section.clone(),
            None => Map::new(),
        };
        if !out.contains_key("alert") {
            match &n.alert {
                Some(alert) => {
                    out.insert("alert".into(), alert.clone());
                }
                None if out.is_empty() => return None,
                None => {}
            }
        }
        Some(out)
    }

    /// How this push changes the app-icon badge of a device on `platform`: `ios.badge`;
    /// `badge_set_num` (which wins) or `badge_add_num` of `android` and `hmos`.
    pub fn badge_op(&self, platform: Platform) -> Option<BadgeOp> {
        let section = self
            .notification
            .as_ref()?
            .sections
            .get(platform.as_str())?;
        match platform {
            Platform::Ios => section.get("badge").and_then(BadgeOp::parse),
            Platform::Android | Platform::Hmos => {
                let num = |k: &str| section.get(k).and_then(Value::as_i64);
                match (num("badge_set_num"), num("badge_add_num")) {
                    (Some(n), _) => Some(BadgeOp::Set(n.clamp(0, MAX_BADGE as i64) as u32)),
                    (None, Some(n)) => Some(BadgeOp::Add(n)),
                    (None, None) => None,
                }
            }
            _ => None,
        }
    }

    /// Whether a device on `platform` gets anything from this push.
    pub fn has_content_for(&self, platform: Platform) -> bool {
        self.message.is_some() || self.notification_for(platform).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push(notification: Value) -> Push {
        Push {
            msg_id: 1,
            sent_ms: 1_000,
            platforms: PlatformSet::all(),
            audience: Audience::All,
            notification: Some(serde_json::from_value(notification).unwrap()),
            message: None,
            options: PushOptions::default(),
            sms_message: None,
            callback: None,
            cid: None,
            schedule: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn shared_alert_merges_under_the_platform_section() {
        let p = push(json!({"alert": "hi", "sections": {
            "android": {"title": "T", "extras": {"k": 1}},
            "ios": {"alert": {"title": "a", "body": "b"}, "badge": "+1"}}}));
        let android = p.notification_for(Platform::Android).unwrap();
        assert_eq!(
            Value::Object(android),
            json!({"alert": "hi", "title": "T", "extras": {"k": 1}})
        );
        let ios = p.notification_for(Platform::Ios).unwrap();
        assert_eq!(ios["alert"], json!({"title": "a", "body": "b"}));
        let web = p.notification_for(Platform::Web).unwrap();
        assert_eq!(Value::Object(web), json!({"alert": "hi"}));
    }

    #[test]
    fn no_alert_and_no_section_means_nothing_to_show() {
        let p = push(json!({"sections": {"ios": {"alert": "only ios"}}}));
        assert!(p.notification_for(Platform::Android).is_none());
        assert!(!p.has_content_for(Platform::Android));
        assert!(p.has_content_for(Platform::Ios));
    }

    #[test]
    fn badges_set_add_and_never_go_below_zero() {
        let op = |v: Value| BadgeOp::parse(&v);
        assert_eq!(op(json!(5)), Some(BadgeOp::Set(5)));
        assert_eq!(op(json!("7")), Some(BadgeOp::Set(7)));
        assert_eq!(op(json!("+2")), Some(BadgeOp::Add(2)));
        assert_eq!(op(json!("-3")), Some(BadgeOp::Add(-3)));
        assert_eq!(op(json!("")), Some(BadgeOp::Set(0)));
        assert_eq!(op(json!("auto")), Some(BadgeOp::Add(1)));
        for bad in [
            json!("+"),
            json!("x1"),
            json!("+1.5"),
            json!(-1),
            json!(null),
            json!("123456"),
        ] {
            assert_eq!(op(bad.clone()), None, "{bad}");
        }
        assert_eq!(BadgeOp::Add(-3).apply(2), 0);
        assert_eq!(BadgeOp::Add(2).apply(2), 4);
        assert_eq!(BadgeOp::Add(5).apply(MAX_BADGE), MAX_BADGE);
        let p = push(json!({"alert": "x", "sections": {
            "ios": {"badge": "+1"},
            "android": {"badge_add_num": 2, "badge_set_num": 9},
            "hmos": {"badge_add_num": 3}}}));
        assert_eq!(p.badge_op(Platform::Ios), Some(BadgeOp::Add(1)));
        assert_eq!(p.badge_op(Platform::Android), Some(BadgeOp::Set(9)));
        assert_eq!(p.badge_op(Platform::Hmos), Some(BadgeOp::Add(3)));
        assert_eq!(p.badge_op(Platform::Web), None);
    }

    #[test]
    fn expiry_is_sent_plus_ttl() {
        let mut p = push(json!({"alert": "x"}));
        assert_eq!(p.expires_ms(), 1_000 + 86_400_000);
        p.options.time_to_live = 0;
        assert_eq!(p.expires_ms(), 1_000);
    }
}
