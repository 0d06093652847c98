//! The PushDTO (getui.md B.4) read into Pigeon's model: pure functions from a request body to
//! `pigeon_core::model` values, every bad field answered `20001 "{field} is invalid"` with the
//! field's full path. The audience is read separately (`audience.rs`), per route.
//!
//! What goes where:
//! - `push_message.notification` is what every platform shows (Android, iOS, HarmonyOS, quick
//!   apps, web) unless a channel of `push_channel` says otherwise for its platform;
//!   `push_message.transmission` is the pass-through `Message`; `push_message.revoke` recalls
//!   an earlier push.
//! - `push_channel.ios` overlays the iOS notification (APNs' `aps`), `push_channel.harmony`
//!   replaces the HarmonyOS one, `push_channel.android.ups.notification` is what phone makers'
//!   channels show (`content.vendor_notification`), and `ups.options` / `harmony.options` go to
//!   those vendors as given (`policy.vendors[..].fields`).
//! - `settings` become the delivery policy.

use super::fields::At;
use super::reply::V2Error;
use pigeon_core::model::{
    ApnsFields, BadgeOp, ChannelStrategy, Click, Content, DeliveryPolicy, Fields, IdempotencyKey,
    Labels, Message, NetworkType, Notification, Push, PushCallback,
};
use pigeon_core::{Audience, Platform, PlatformSet};
use serde_json::{json, Map, Value};

/// Longest offline time a push may ask for: 3 days (in ms, as `settings.ttl` is given).
pub const MAX_TTL_MS: i64 = 3 * 86_400_000;
/// The offline time of a push that does not say: 2 hours.
pub const DEFAULT_TTL_S: u64 = 7_200;
/// How far ahead `settings.schedule_time` may be.
pub const MAX_SCHEDULE_AHEAD_MS: u64 = 7 * 86_400_000;
/// The namespace of Getui `request_id`s among the engine's idempotency keys.
pub const IDEMPOTENCY_PREFIX: &str = "gt-v2:";

/// Where a notification is shown. Getui's notification has no platform: Pigeon shows it on
/// every platform a device can register as.
const SHOWN_ON: [Platform; 5] = [
    Platform::Android,
    Platform::Ios,
    Platform::Hmos,
    Platform::Quickapp,
    Platform::Web,
];

/// What a PushDTO asks for, before its audience is known.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRequest {
    pub request_id: String,
    pub labels: Labels,
    pub policy: DeliveryPolicy,
    pub callback: Option<PushCallback>,
    /// `settings.schedule_time`, ms since the epoch.
    pub schedule_ms: Option<u64>,
    pub what: What,
}

/// A push to send, or a recall of an earlier one.
#[derive(Debug, Clone, PartialEq)]
pub enum What {
    Send(Box<Content>),
    Revoke { old_task_id: String, force: bool },
}

impl PushRequest {
    /// The engine's idempotency key for this request: a repeat answers the first push.
    pub fn idempotency(&self) -> IdempotencyKey {
        IdempotencyKey {
            key: format!("{IDEMPOTENCY_PREFIX}{}", self.request_id),
            issued_only: false,
        }
    }

    /// The push to accept (`None` for a revoke, which is a recall, not a push).
    pub fn to_push(&self, platforms: PlatformSet, audience: Audience) -> Option<Push> {
        let What::Send(content) = &self.what else {
            return None;
        };
        let mut push = Push::new(platforms, audience);
        push.content = (**content).clone();
        push.policy = self.policy.clone();
        push.labels = self.labels.clone();
        push.callback = self.callback.clone();
        push.idempotency = Some(self.idempotency());
        Some(push)
    }
}

/// Reads a PushDTO (without its audience). `now_ms` checks that `schedule_time` is ahead
/// (within [`MAX_SCHEDULE_AHEAD_MS`]); `None` reads a stored request when it fires.
pub fn parse_push(at: &At<'_>, now_ms: Option<u64>) -> Result<PushRequest, V2Error> {
    let request_id = match at.get("request_id") {
        Some(Value::String(s)) if (10..=32).contains(&s.chars().count()) => s.clone(),
        _ => return Err(at.invalid("request_id")),
    };
    let mut labels = Labels::default();
    if let Some(name) = at.str("task_name", 200)? {
        labels.name = Some(name.to_string());
    }
    if let Some(group) = at.str("group_name", 100)? {
        let ok = !group.is_empty()
            && group
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(at.invalid("group_name"));
        }
        labels.group = Some(group.to_string());
    }
    let mut policy = DeliveryPolicy {
        ttl_s: DEFAULT_TTL_S,
        ..DeliveryPolicy::default()
    };
    let mut callback = None;
    let mut schedule_ms = None;
    if let Some(s) = at.obj("settings")? {
        schedule_ms = settings(&s, now_ms, &mut policy, &mut callback)?;
    }
    let message = at
        .obj("push_message")?
        .ok_or_else(|| at.invalid("push_message"))?;
    let mut what = push_message(&message, &mut policy)?;
    if let Some(channel) = at.obj("push_channel")? {
        push_channel(&channel, &mut what, &mut policy)?;
    }
    Ok(PushRequest {
        request_id,
        labels,
        policy,
        callback,
        schedule_ms,
        what,
    })
}

/// `settings`: ttl, strategy, speed, schedule_time, custom_callback; the activity filters
/// Pigeon cannot apply are refused unless neutral.
fn settings(
    s: &At<'_>,
    now_ms: Option<u64>,
    policy: &mut DeliveryPolicy,
    callback: &mut Option<PushCallback>,
) -> Result<Option<u64>, V2Error> {
    if let Some(ttl) = s.int("ttl", -1, MAX_TTL_MS)? {
        // -1: online devices only. Whole seconds, rounded up so a short ttl is not 0.
        policy.ttl_s = if ttl < 0 {
            0
        } else {
            (ttl as u64).div_ceil(1000)
        };
    }
    if let Some(strategy) = s.obj("strategy")? {
        for (key, value) in strategy.obj {
            if value.is_null() {
                continue;
            }
            let chosen = value
                .as_i64()
                .and_then(strategy_of)
                .ok_or_else(|| strategy.invalid(key))?;
            match strategy_channel(key) {
                Channel::Default => policy.strategy = Some(chosen),
                Channel::Vendor(v) => {
                    policy.vendors.entry(v.to_string()).or_default().strategy = Some(chosen)
                }
                Channel::None => {}
            }
        }
    }
    if let Some(speed) = s.int("speed", 0, 1_000_000_000)? {
        if speed > 0 {
            policy.pace.per_second = Some(speed as u64);
        }
    }
    if let Some(cb) = s.str("custom_callback", 1024)? {
        let mut params = Map::new();
        params.insert("custom_callback".into(), json!(cb));
        *callback = Some(PushCallback {
            url: None,
            params: Some(params),
            kinds: None,
        });
    }
    for key in [
        "filter_notify_off",
        "active_days",
        "activate_filter_day",
        "activate_filter_type",
        "active_push",
        "active_push_platform",
        "lst",
    ] {
        if s.get(key).is_some_and(|v| !neutral(v)) {
            return Err(V2Error::invalid_msg(format!(
                "{} is not supported: Pigeon does not filter devices by notification permission or activity",
                s.path_of(key)
            )));
        }
    }
    match s.get("schedule_time") {
        None => Ok(None),
        Some(v) => {
            let t = v
                .as_u64()
                .filter(|t| now_ms.is_none_or(|now| *t > now && *t <= now + MAX_SCHEDULE_AHEAD_MS))
                .ok_or_else(|| s.invalid("schedule_time"))?;
            Ok(Some(t))
        }
    }
}

/// A value that asks for nothing: false, 0, empty.
fn neutral(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Getui's strategy numbers.
pub fn strategy_of(n: i64) -> Option<ChannelStrategy> {
    match n {
        1 => Some(ChannelStrategy::OwnFirst),
        2 => Some(ChannelStrategy::VendorOnly),
        3 => Some(ChannelStrategy::OwnOnly),
        4 => Some(ChannelStrategy::VendorFirst),
        _ => None,
    }
}

enum Channel {
    Default,
    Vendor(&'static str),
    /// A Getui channel Pigeon has no counterpart of (its value is checked, then unused).
    None,
}

/// Which of Pigeon's channels a key of `settings.strategy` names.
fn strategy_channel(key: &str) -> Channel {
    match key {
        "default" => Channel::Default,
        "ios" => Channel::Vendor("apns"),
        "st" | "fcm" => Channel::Vendor("fcm"),
        "hw" => Channel::Vendor("huawei"),
        "ho" => Channel::Vendor("honor"),
        "xm" => Channel::Vendor("xiaomi"),
        "op" => Channel::Vendor("oppo"),
        "vv" => Channel::Vendor("vivo"),
        "mz" => Channel::Vendor("meizu"),
        _ => Channel::None,
    }
}

/// `push_message`: exactly one of notification, transmission and revoke, plus network_type
/// and duration.
fn push_message(m: &At<'_>, policy: &mut DeliveryPolicy) -> Result<What, V2Error> {
    let given = ["notification", "transmission", "revoke"]
        .iter()
        .filter(|k| m.has(k))
        .count();
    if given != 1 {
        return Err(V2Error::invalid_msg(
            "please choose one of notification and transmission and revoke",
        ));
    }
    if let Some(n) = m.int("network_type", 0, 1)? {
        policy.network = if n == 1 {
            NetworkType::Wifi
        } else {
            NetworkType::Any
        };
    }
    if let Some(d) = m.str("duration", 64)? {
        policy.display_window = Some(duration(d).ok_or_else(|| m.invalid("duration"))?);
    }
    if let Some(n) = m.obj("notification")? {
        let (notification, notify_id) = notification(&n)?;
        if notify_id.is_some() {
            policy.notify_id = notify_id;
        }
        let mut content = Content::default();
        for p in SHOWN_ON {
            content.notifications.insert(p, notification.clone());
        }
        return Ok(What::Send(Box::new(content)));
    }
    if m.has("transmission") {
        let text = m.req_str("transmission", 3072)?;
        return Ok(What::Send(Box::new(Content {
            message: Some(Message {
                content: text.to_string(),
                ..Message::default()
            }),
            ..Content::default()
        })));
    }
    let revoke = m.obj("revoke")?.ok_or_else(|| m.invalid("revoke"))?;
    Ok(What::Revoke {
        old_task_id: revoke.req_str("old_task_id", 64)?.to_string(),
        force: revoke.bool("force")?.unwrap_or(false),
    })
}

/// `"startMs-endMs"`, start before end.
fn duration(d: &str) -> Option<(u64, u64)> {
    let (a, b) = d.split_once('-')?;
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (start, end) = (num(a)?, num(b)?);
    (start < end).then_some((start, end))
}

/// Display fields passed to the device under their Getui names.
const DISPLAY_TEXT: [&str; 9] = [
    "logo",
    "logo_url",
    "big_text",
    "big_image",
    "channel_name",
    "thread_id",
    "slot_type",
    "want",
    "redisplay_duration",
];

/// A notification (`push_message.notification`, `ups.notification`, `harmony.notification`)
/// and its `notify_id`.
fn notification(n: &At<'_>) -> Result<(Notification, Option<String>), V2Error> {
    let mut out = Notification {
        title: Some(n.req_str("title", 50)?.to_string()),
        body: n.req_str("body", 256)?.to_string(),
        ..Notification::default()
    };
    out.click = match n.str("click_type", 32)?.unwrap_or("startapp") {
        "intent" => Click::Intent(n.req_str("intent", 4096)?.to_string()),
        "url" => {
            let url = n.req_str("url", 1024)?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(n.invalid("url"));
            }
            Click::Url(url.to_string())
        }
        "payload" => Click::Payload(n.req_str("payload", 3072)?.to_string()),
        "payload_custom" => {
            out.display
                .insert("click_type".into(), json!("payload_custom"));
            Click::Payload(n.req_str("payload", 3072)?.to_string())
        }
        // HarmonyOS: open the ability the want names.
        "want" => Click::Intent(n.req_str("want", 4096)?.to_string()),
        "startapp" => Click::OpenApp,
        "none" => {
            out.display.insert("click_type".into(), json!("none"));
            Click::OpenApp
        }
        _ => return Err(n.invalid("click_type")),
    };
    let notify_id = n
        .int_or_text("notify_id", 0, i64::from(i32::MAX))?
        .map(|id| id.to_string());
    if let Some(ring) = n.str("ring_name", 256)? {
        out.sound = Some(ring.to_string());
    }
    if let Some(channel) = n.str("channel_id", 256)? {
        out.channel_id = Some(channel.to_string());
    }
    if let Some(category) = n.str("category", 64)? {
        out.category = Some(category.to_string());
    }
    if let Some(add) = n.int("badge_add_num", 1, 99)? {
        out.badge = Some(BadgeOp::Add(add));
    }
    if n.has("big_text") && n.has("big_image") {
        return Err(V2Error::invalid_msg(format!(
            "{} is invalid: big_text and big_image cannot both be given",
            n.path_of("big_image")
        )));
    }
    for key in DISPLAY_TEXT {
        if let Some(v) = n.str(key, 4096)? {
            out.display.insert(key.into(), json!(v));
        }
    }
    if let Some(level) = n.int_or_text("channel_level", 0, 4)? {
        out.display.insert("channel_level".into(), json!(level));
    }
    if let Some(freq) = n.int_or_text("redisplay_freq", 0, i64::from(i32::MAX))? {
        out.display.insert("redisplay_freq".into(), json!(freq));
    }
    Ok((out, notify_id))
}

/// `push_channel`: android (ups), ios, harmony.
fn push_channel(c: &At<'_>, what: &mut What, policy: &mut DeliveryPolicy) -> Result<(), V2Error> {
    if let Some(android) = c.obj("android")? {
        if let Some(ups) = android.obj("ups")? {
            if ups.has("transmission") {
                return Err(not_supported(
                    &ups.path_of("transmission"),
                    "phone makers' channels cannot carry a pass-through message; use push_message.transmission with ups.notification",
                ));
            }
            same_revoke(&ups, what)?;
            if let Some(n) = ups.obj("notification")? {
                let (vendor, notify_id) = notification(&n)?;
                if policy.notify_id.is_none() {
                    policy.notify_id = notify_id;
                }
                if let What::Send(content) = what {
                    content.vendor_notification = Some(Box::new(vendor));
                }
            }
            if let Some(options) = ups.obj("options")? {
                vendor_options(&options, policy)?;
            }
        }
    }
    if let Some(ios) = c.obj("ios")? {
        ios_channel(&ios, what, policy)?;
    }
    if let Some(harmony) = c.obj("harmony")? {
        for key in ["transmission", "custom"] {
            if harmony.has(key) {
                return Err(not_supported(
                    &harmony.path_of(key),
                    "HarmonyOS devices get push_message.transmission",
                ));
            }
        }
        same_revoke(&harmony, what)?;
        if let Some(n) = harmony.obj("notification")? {
            let (shown, notify_id) = notification(&n)?;
            if policy.notify_id.is_none() {
                policy.notify_id = notify_id;
            }
            if let What::Send(content) = what {
                content.notifications.insert(Platform::Hmos, shown);
            }
        }
        if let Some(options) = harmony.obj("options")? {
            policy
                .vendors
                .entry("hmos".into())
                .or_default()
                .fields
                .extend(options.obj.clone());
        }
    }
    Ok(())
}

fn not_supported(path: &str, why: &str) -> V2Error {
    V2Error::invalid_msg(format!("{path} is not supported: {why}"))
}

/// A channel's `revoke` must name the push `push_message.revoke` recalls.
fn same_revoke(channel: &At<'_>, what: &What) -> Result<(), V2Error> {
    let Some(r) = channel.obj("revoke")? else {
        return Ok(());
    };
    let old = r.req_str("old_task_id", 64)?;
    match what {
        What::Revoke { old_task_id, .. } if old_task_id == old => Ok(()),
        _ => Err(V2Error::invalid_msg(format!(
            "{} is invalid: a channel's revoke goes with push_message.revoke of the same old_task_id",
            r.path
        ))),
    }
}

/// `ups.options`: per phone maker (`HW`, `XM`, … or `ALL`), fields passed to that vendor as
/// given.
fn vendor_options(options: &At<'_>, policy: &mut DeliveryPolicy) -> Result<(), V2Error> {
    const MAKERS: [(&str, &str); 7] = [
        ("HW", "huawei"),
        ("HO", "honor"),
        ("XM", "xiaomi"),
        ("OP", "oppo"),
        ("VV", "vivo"),
        ("MZ", "meizu"),
        ("FCM", "fcm"),
    ];
    for (key, value) in options.obj {
        if value.is_null() {
            continue;
        }
        let Value::Object(fields) = value else {
            return Err(options.invalid(key));
        };
        let upper = key.to_ascii_uppercase();
        let vendors: Vec<&str> = if upper == "ALL" {
            MAKERS.iter().map(|(_, v)| *v).collect()
        } else {
            MAKERS
                .iter()
                .filter(|(k, _)| *k == upper)
                .map(|(_, v)| *v)
                .collect()
        };
        for v in vendors {
            let entry = policy.vendors.entry(v.to_string()).or_default();
            for (k, x) in fields {
                // A maker's own options win over `ALL`.
                if upper == "ALL" && entry.fields.contains_key(k) {
                    continue;
                }
                entry.fields.insert(k.clone(), x.clone());
            }
        }
    }
    Ok(())
}

/// `push_channel.ios`: the APNs side of the push, laid over the iOS notification.
fn ios_channel(ios: &At<'_>, what: &mut What, policy: &mut DeliveryPolicy) -> Result<(), V2Error> {
    match ios.str("type", 16)? {
        None | Some("notify") => {}
        Some("voip") => {
            return Err(not_supported(
                &ios.path_of("type"),
                "VoIP pushes are not carried (only type notify)",
            ))
        }
        Some(_) => return Err(ios.invalid("type")),
    }
    if ios.has("laId") {
        return Err(not_supported(
            &ios.path_of("laId"),
            "Live Activities are not carried",
        ));
    }
    if let Some(id) = ios.str("apns-collapse-id", 64)? {
        policy.collapse_id = Some(id.to_string());
    }
    let badge = match ios.get("auto_badge") {
        None => None,
        Some(v) => Some(BadgeOp::parse(v).ok_or_else(|| ios.invalid("auto_badge"))?),
    };
    let payload = ios.str("payload", 3072)?;
    let multimedia = match ios.get("multimedia") {
        None => None,
        Some(v) => Some(multimedia(v).ok_or_else(|| ios.invalid("multimedia"))?),
    };
    let aps = ios.obj("aps")?;
    let What::Send(content) = what else {
        return Ok(());
    };
    let base = content.notifications.get(&Platform::Ios).cloned();
    let mut shown = base.clone().unwrap_or_default();
    let mut apns = shown.apns.take().unwrap_or_default();
    let mut has_alert = base.is_some();
    if let Some(aps) = &aps {
        for key in ["timestamp", "event", "dismissal-date", "content-state"] {
            if aps.has(key) {
                return Err(not_supported(
                    &aps.path_of(key),
                    "Live Activities are not carried",
                ));
            }
        }
        match aps.get("alert") {
            None => {}
            Some(Value::String(body)) => {
                shown.body = body.clone();
                has_alert = true;
            }
            Some(Value::Object(alert)) => {
                let a = At {
                    obj: alert,
                    path: aps.path_of("alert"),
                };
                if let Some(t) = a.str("title", 256)? {
                    shown.title = Some(t.to_string());
                }
                if let Some(b) = a.str("body", 4096)? {
                    shown.body = b.to_string();
                }
                let rest: Fields = alert
                    .iter()
                    .filter(|(k, _)| *k != "title" && *k != "body")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if !rest.is_empty() {
                    apns.alert = Some(alert.clone());
                }
                has_alert = true;
            }
            Some(_) => return Err(aps.invalid("alert")),
        }
        match aps.get("sound") {
            None => {}
            Some(Value::String(s)) => shown.sound = Some(s.clone()),
            Some(Value::Object(s)) => apns.sound = Some(s.clone()),
            Some(_) => return Err(aps.invalid("sound")),
        }
        if let Some(n) = aps.int("content-available", 0, 1)? {
            apns.content_available = n == 1;
        }
        if let Some(n) = aps.int("mutable-content", 0, 1)? {
            apns.mutable_content = n == 1;
        }
        if let Some(c) = aps.str("category", 256)? {
            shown.category = Some(c.to_string());
        }
        if let Some(t) = aps.str("thread-id", 256)? {
            apns.thread_id = Some(t.to_string());
        }
        if let Some(l) = aps.str("interruption-level", 32)? {
            apns.interruption_level = Some(l.to_string());
        }
    }
    if let Some(b) = badge {
        shown.badge = Some(b);
    }
    if let Some(p) = payload {
        shown.extras.insert("payload".into(), json!(p));
    }
    if let Some(m) = multimedia {
        shown.display.insert("multimedia".into(), m);
        apns.mutable_content = true;
    }
    let something = has_alert
        || apns.content_available
        || badge.is_some()
        || aps.as_ref().is_some_and(|a| a.has("sound"));
    if !something {
        return Ok(());
    }
    if *apns != ApnsFields::default() {
        shown.apns = Some(apns);
    }
    content.notifications.insert(Platform::Ios, shown);
    Ok(())
}

/// `multimedia`: up to 3 of `{url, type 1..3, only_wifi}`.
fn multimedia(v: &Value) -> Option<Value> {
    let items = v.as_array().filter(|a| a.len() <= 3)?;
    for item in items {
        let o = item.as_object()?;
        let url = o.get("url")?.as_str()?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return None;
        }
        if !o
            .get("type")?
            .as_i64()
            .is_some_and(|t| (1..=3).contains(&t))
        {
            return None;
        }
        if o.get("only_wifi")
            .is_some_and(|w| !w.is_boolean() && !w.is_null())
        {
            return None;
        }
    }
    Some(v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::AudienceExpr;

    const NOW: u64 = 1_700_000_000_000;

    fn parse(v: Value) -> Result<PushRequest, V2Error> {
        let o = v.as_object().cloned().unwrap_or_default();
        parse_push(&At::root(&o), Some(NOW))
    }

    fn notif() -> Value {
        json!({"title": "T", "body": "B", "click_type": "startapp"})
    }

    fn err(v: Value) -> String {
        let e = parse(v).unwrap_err();
        assert_eq!(e.code, 20001, "{}", e.msg);
        e.msg
    }

    #[test]
    fn a_notification_push_becomes_a_model_push() {
        let r = parse(json!({
            "request_id": "req-0123456789",
            "task_name": "t", "group_name": "g_1",
            "settings": {"ttl": 1500, "strategy": {"default": 3, "hw": 2, "ios": 4, "hx": 1}, "speed": 100},
            "push_message": {"notification": {"title": "Hi", "body": "there", "click_type": "url",
                "url": "https://example.com", "notify_id": "77", "ring_name": "ding",
                "channel_id": "c1", "badge_add_num": 2, "big_text": "long"},
                "network_type": 1, "duration": "1-2"},
        }))
        .unwrap();
        assert_eq!(r.policy.ttl_s, 2);
        assert_eq!(r.policy.strategy, Some(ChannelStrategy::OwnOnly));
        assert_eq!(
            r.policy.vendors["huawei"].strategy,
            Some(ChannelStrategy::VendorOnly)
        );
        assert_eq!(
            r.policy.vendors["apns"].strategy,
            Some(ChannelStrategy::VendorFirst)
        );
        assert_eq!(r.policy.pace.per_second, Some(100));
        assert_eq!(r.policy.notify_id.as_deref(), Some("77"));
        assert_eq!(r.policy.network, NetworkType::Wifi);
        assert_eq!(r.policy.display_window, Some((1, 2)));
        assert_eq!(r.labels.name.as_deref(), Some("t"));
        assert_eq!(r.labels.group.as_deref(), Some("g_1"));
        let push = r
            .to_push(PlatformSet::all(), Audience::Expr(AudienceExpr::default()))
            .unwrap();
        assert_eq!(push.idempotency.unwrap().key, "gt-v2:req-0123456789");
        let n = &push.content.notifications[&Platform::Android];
        assert_eq!(n.title.as_deref(), Some("Hi"));
        assert_eq!(n.body, "there");
        assert_eq!(n.click, Click::Url("https://example.com".into()));
        assert_eq!(n.sound.as_deref(), Some("ding"));
        assert_eq!(n.badge, Some(BadgeOp::Add(2)));
        assert_eq!(n.display["big_text"], "long");
        assert!(push.content.notifications.contains_key(&Platform::Ios));
        assert!(push.content.message.is_none());
    }

    #[test]
    fn defaults_and_online_only() {
        let r = parse(json!({"request_id": "0123456789", "push_message": {"transmission": "x"}}))
            .unwrap();
        assert_eq!(r.policy.ttl_s, DEFAULT_TTL_S);
        let What::Send(c) = &r.what else { panic!() };
        assert_eq!(c.message.as_ref().unwrap().content, "x");
        assert!(c.notifications.is_empty());
        let r = parse(json!({"request_id": "0123456789", "settings": {"ttl": -1},
            "push_message": {"transmission": "x"}}))
        .unwrap();
        assert_eq!(r.policy.ttl_s, 0);
    }

    #[test]
    fn every_bad_field_is_named() {
        let ok = |extra: Value| {
            let mut v =
                json!({"request_id": "0123456789", "push_message": {"notification": notif()}});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        assert_eq!(
            err(json!({"push_message": {"transmission": "x"}})),
            "request_id is invalid"
        );
        assert_eq!(
            err(ok(json!({"request_id": "short"}))),
            "request_id is invalid"
        );
        assert_eq!(
            err(ok(json!({"request_id": "x".repeat(33)}))),
            "request_id is invalid"
        );
        assert_eq!(
            err(ok(json!({"request_id": 1234567890}))),
            "request_id is invalid"
        );
        assert_eq!(
            err(ok(json!({"settings": {"ttl": "1"}}))),
            "settings.ttl is invalid"
        );
        assert_eq!(
            err(ok(json!({"settings": {"ttl": -2}}))),
            "settings.ttl is invalid"
        );
        assert_eq!(
            err(ok(json!({"settings": {"ttl": MAX_TTL_MS + 1}}))),
            "settings.ttl is invalid"
        );
        assert_eq!(
            err(ok(json!({"settings": {"strategy": {"default": 5}}}))),
            "settings.strategy.default is invalid"
        );
        assert_eq!(
            err(ok(json!({"settings": {"strategy": {"hw": "1"}}}))),
            "settings.strategy.hw is invalid"
        );
        assert_eq!(
            err(ok(json!({"settings": {"strategy": 1}}))),
            "settings.strategy is invalid"
        );
        assert_eq!(
            err(ok(json!({"settings": {"speed": -1}}))),
            "settings.speed is invalid"
        );
        assert_eq!(
            err(ok(json!({"settings": {"schedule_time": NOW - 1}}))),
            "settings.schedule_time is invalid"
        );
        assert!(err(ok(json!({"settings": {"filter_notify_off": true}}))).contains("not supported"));
        assert!(parse(ok(json!({"settings": {"filter_notify_off": false}}))).is_ok());
        assert_eq!(err(ok(json!({"settings": 3}))), "settings is invalid");
        assert_eq!(
            err(ok(json!({"group_name": "a b"}))),
            "group_name is invalid"
        );
        assert_eq!(
            err(ok(json!({"push_message": 1}))),
            "push_message is invalid"
        );
        let both = "please choose one of notification and transmission and revoke";
        assert_eq!(
            err(ok(
                json!({"push_message": {"notification": notif(), "transmission": "x"}})
            )),
            both
        );
        assert_eq!(err(ok(json!({"push_message": {}}))), both);
        assert_eq!(
            err(ok(json!({"push_message": {"transmission": 5}}))),
            "push_message.transmission is invalid"
        );
        assert_eq!(
            err(ok(json!({"push_message": {"transmission": ""}}))),
            "push_message.transmission is invalid"
        );
        let n = |f: Value| {
            let mut n = notif();
            for (k, x) in f.as_object().unwrap() {
                n[k] = x.clone();
            }
            ok(json!({"push_message": {"notification": n}}))
        };
        assert_eq!(
            err(n(json!({"title": ""}))),
            "push_message.notification.title is invalid"
        );
        assert_eq!(
            err(n(json!({"title": "x".repeat(51)}))),
            "push_message.notification.title is invalid"
        );
        assert_eq!(
            err(n(json!({"body": 3}))),
            "push_message.notification.body is invalid"
        );
        assert_eq!(
            err(n(json!({"click_type": "jump"}))),
            "push_message.notification.click_type is invalid"
        );
        assert_eq!(
            err(n(json!({"click_type": "url"}))),
            "push_message.notification.url is invalid"
        );
        assert_eq!(
            err(n(json!({"click_type": "url", "url": "ftp://x"}))),
            "push_message.notification.url is invalid"
        );
        assert_eq!(
            err(n(json!({"click_type": "intent"}))),
            "push_message.notification.intent is invalid"
        );
        assert_eq!(
            err(n(json!({"click_type": "payload"}))),
            "push_message.notification.payload is invalid"
        );
        assert_eq!(
            err(n(json!({"notify_id": -1}))),
            "push_message.notification.notify_id is invalid"
        );
        assert_eq!(
            err(n(json!({"notify_id": 2147483648u64}))),
            "push_message.notification.notify_id is invalid"
        );
        assert_eq!(
            err(n(json!({"notify_id": "x"}))),
            "push_message.notification.notify_id is invalid"
        );
        assert_eq!(
            err(n(json!({"badge_add_num": 0}))),
            "push_message.notification.badge_add_num is invalid"
        );
        assert_eq!(
            err(n(json!({"channel_level": 5}))),
            "push_message.notification.channel_level is invalid"
        );
        assert!(err(n(json!({"big_text": "a", "big_image": "https://x"}))).contains("big_image"));
        assert_eq!(
            err(ok(
                json!({"push_message": {"notification": notif(), "network_type": 2}})
            )),
            "push_message.network_type is invalid"
        );
        assert_eq!(
            err(ok(
                json!({"push_message": {"notification": notif(), "duration": "5-1"}})
            )),
            "push_message.duration is invalid"
        );
        assert_eq!(
            err(ok(json!({"push_message": {"revoke": {"force": true}}}))),
            "push_message.revoke.old_task_id is invalid"
        );
        assert_eq!(
            err(ok(json!({"push_channel": {"ios": {"auto_badge": "++1"}}}))),
            "push_channel.ios.auto_badge is invalid"
        );
        assert!(
            err(ok(json!({"push_channel": {"ios": {"type": "voip"}}}))).contains("not supported")
        );
        assert_eq!(
            err(ok(
                json!({"push_channel": {"ios": {"aps": {"content-available": 2}}}})
            )),
            "push_channel.ios.aps.content-available is invalid"
        );
        assert_eq!(
            err(ok(
                json!({"push_channel": {"android": {"ups": {"options": {"HW": 1}}}}})
            )),
            "push_channel.android.ups.options.HW is invalid"
        );
        assert!(err(ok(
            json!({"push_channel": {"android": {"ups": {"transmission": "x"}}}})
        ))
        .contains("not supported"));
    }

    #[test]
    fn channels_overlay_their_platforms() {
        let r = parse(json!({
            "request_id": "0123456789",
            "push_message": {"transmission": "data"},
            "push_channel": {
                "android": {"ups": {"notification": {"title": "V", "body": "vendor", "click_type": "startapp", "notify_id": 5},
                                    "options": {"ALL": {"/a": 1, "/b": 1}, "HW": {"/a": 2}}}},
                "ios": {"aps": {"alert": {"title": "I", "body": "ios", "subtitle": "s"}, "sound": "default",
                                "content-available": 0, "thread-id": "t"},
                        "auto_badge": "+1", "payload": "p", "apns-collapse-id": "c"},
                "harmony": {"notification": {"title": "H", "body": "hm", "click_type": "want", "want": "w"},
                            "options": {"x": 1}}
            }
        }))
        .unwrap();
        let What::Send(c) = &r.what else { panic!() };
        assert_eq!(c.message.as_ref().unwrap().content, "data");
        assert_eq!(c.vendor_notification.as_ref().unwrap().body, "vendor");
        assert!(!c.notifications.contains_key(&Platform::Android));
        let ios = &c.notifications[&Platform::Ios];
        assert_eq!(ios.title.as_deref(), Some("I"));
        assert_eq!(ios.body, "ios");
        assert_eq!(ios.sound.as_deref(), Some("default"));
        assert_eq!(ios.badge, Some(BadgeOp::Add(1)));
        assert_eq!(ios.extras["payload"], "p");
        let apns = ios.apns.as_ref().unwrap();
        assert_eq!(apns.thread_id.as_deref(), Some("t"));
        assert_eq!(apns.alert.as_ref().unwrap()["subtitle"], "s");
        let hm = &c.notifications[&Platform::Hmos];
        assert_eq!(hm.click, Click::Intent("w".into()));
        assert_eq!(r.policy.collapse_id.as_deref(), Some("c"));
        assert_eq!(r.policy.notify_id.as_deref(), Some("5"));
        assert_eq!(r.policy.vendors["huawei"].fields["/a"], 2);
        assert_eq!(r.policy.vendors["huawei"].fields["/b"], 1);
        assert_eq!(r.policy.vendors["xiaomi"].fields["/a"], 1);
        assert_eq!(r.policy.vendors["hmos"].fields["x"], 1);
    }

    #[test]
    fn revoke_names_the_old_task() {
        let r = parse(json!({"request_id": "0123456789",
            "push_message": {"revoke": {"old_task_id": "RASS-42", "force": true}},
            "push_channel": {"android": {"ups": {"revoke": {"old_task_id": "RASS-42"}}}}}))
        .unwrap();
        assert_eq!(
            r.what,
            What::Revoke {
                old_task_id: "RASS-42".into(),
                force: true
            }
        );
        assert!(r.to_push(PlatformSet::all(), Audience::All).is_none());
        assert!(err(json!({"request_id": "0123456789",
            "push_message": {"revoke": {"old_task_id": "RASS-42"}},
            "push_channel": {"android": {"ups": {"revoke": {"old_task_id": "RASS-43"}}}}}))
        .contains("revoke"));
    }
}
