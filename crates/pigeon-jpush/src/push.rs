//! The JPush v3 push object (jpush-v3.md §2): parsed, validated, translated into a core Push.

use crate::fields::{as_object, bool_of, check_object, int_of, Checked, Kind::*, PushError, Spec};
use pigeon_core::names::check_name;
use pigeon_core::{
    Audience, AudienceExpr, Notification, Platform, PlatformSet, Push, PushOptions,
    DEFAULT_TIME_TO_LIVE_S, MAX_TIME_TO_LIVE_S,
};
use serde_json::{Map, Value};

/// Most tags in one of tag / tag_and / tag_not.
pub const MAX_AUDIENCE_TAGS: usize = 20;
/// Most aliases or registration ids in one push.
pub const MAX_AUDIENCE_IDS: usize = 1000;
/// Largest `"ios":{...}`, in bytes.
pub const MAX_IOS_BYTES: usize = 2000;
/// Largest android notification plus message, in bytes.
pub const MAX_ANDROID_BYTES: usize = 4000;

const TOP: Spec = &[
    ("platform", Any),
    ("audience", Any),
    ("notification", Object),
    ("message", Object),
    ("live_activity", Object),
    ("inapp_message", Object),
    ("notification_3rd", Object),
    ("sms_message", Object),
    ("options", Object),
    ("callback", Object),
    ("cid", StrMax(128)),
];

const NOTIFICATION: Spec = &[
    ("alert", Str),
    ("android", Object),
    ("ios", Object),
    ("hmos", Object),
    ("quickapp", Object),
    ("voip", Object),
    ("winphone", Object),
    ("web", Object),
];

const ANDROID: Spec = &[
    ("alert", Str),
    ("title", Str),
    ("builder_id", Int(0, i32::MAX as i64)),
    ("channel_id", StrMax(1000)),
    ("category", Str),
    ("priority", Int(-2, 2)),
    ("style", Int(0, 3)),
    ("alert_type", Int(-1, 7)),
    ("big_text", Str),
    ("inbox", Object),
    ("big_pic_path", Str),
    ("extras", Object),
    ("large_icon", Str),
    ("small_icon_uri", Str),
    ("icon_bg_color", Str),
    ("intent", Object),
    ("uri_activity", Str),
    ("uri_action", Str),
    ("badge_add_num", Int(1, 99)),
    ("badge_set_num", Int(0, 99)),
    ("badge_class", Str),
    ("sound", Str),
    ("show_begin_time", Str),
    ("show_end_time", Str),
    ("display_foreground", OneOf(&["0", "1"])),
    ("custom_buttons", Objects),
    ("mipns_content_forshort", StrMax(128 * 4)),
    ("oppns_content_forshort", StrMax(200 * 4)),
    ("vpns_content_forshort", StrMax(100 * 4)),
    ("mzpns_content_forshort", StrMax(100 * 4)),
];

const IOS: Spec = &[
    ("alert", StrOrObject),
    ("sound", StrOrObject),
    ("badge", Badge),
    ("content-available", Bool),
    ("mutable-content", Bool),
    ("category", Str),
    ("extras", Object),
    ("thread-id", Str),
    (
        "interruption-level",
        OneOf(&["active", "critical", "passive", "time-sensitive"]),
    ),
];

const IOS_ALERT: Spec = &[
    ("title", Str),
    ("subtitle", Str),
    ("body", Str),
    ("launch-image", Str),
    ("title-loc-key", Str),
    ("title-loc-args", Strings),
    ("subtitle-loc-key", Str),
    ("subtitle-loc-args", Strings),
    ("loc-key", Str),
    ("loc-args", Strings),
    ("action-loc-key", Str),
];

const HMOS: Spec = &[
    ("alert", Str),
    ("title", Str),
    ("category", Str),
    ("large_icon", Str),
    ("intent", Object),
    ("badge_add_num", Int(1, 99)),
    ("badge_set_num", Int(0, 99)),
    ("test_message", Bool),
    ("receipt_id", Str),
    ("extras", Object),
    ("style", Int(0, 2)),
    ("inbox", Object),
    ("push_type", Int(0, 10)),
    ("extra_data", Str),
    ("display_foreground", OneOf(&["0", "1"])),
    ("sound", Str),
    ("sound_duration", Int(1, 60)),
    ("hm_payload", Object),
];

const QUICKAPP: Spec = &[
    ("alert", Str),
    ("title", Str),
    ("page", Str),
    ("extras", Object),
];
const WINPHONE: Spec = &[
    ("alert", Str),
    ("title", Str),
    ("_open_page", Str),
    ("extras", Object),
];
/// Pigeon's own section for web devices.
const WEB: Spec = &[
    ("alert", Str),
    ("title", Str),
    ("url", Str),
    ("icon", Str),
    ("extras", Object),
];

const MESSAGE: Spec = &[
    ("msg_content", Str),
    ("title", Str),
    ("content_type", Str),
    ("extras", Object),
    ("alternate_title", Str),
    ("alternate_content", Str),
];

const OPTIONS: Spec = &[
    ("sendno", Int(i64::MIN, i64::MAX)),
    ("time_to_live", Int(0, MAX_TIME_TO_LIVE_S as i64)),
    ("override_msg_id", Int(1, i64::MAX)),
    ("apns_production", Bool),
    ("apns_collapse_id", StrMax(64)),
    ("big_push_duration", Int(0, 1400)),
    ("third_party_channel", Object),
    ("classification", Int(0, 1)),
    ("target_event", Strings),
    ("test_message", Bool),
    ("receipt_id", Str),
    ("active_push", Bool),
    ("need_backup", Bool),
    ("business_operation_code", Str),
    ("notification_3rd_ver", OneOf(&["v1", "v2"])),
    ("test_model", Bool),
    ("auto_truncation", Bool),
    ("mkt_enable", Bool),
    ("notification_switch_filter", Bool),
    ("alternate_set", Any),
    ("geofence", Any),
    ("portal_extra", Any),
];

const THIRD_PARTY_VENDORS: &[&str] = &[
    "xiaomi", "huawei", "honor", "meizu", "oppo", "vivo", "fcm", "nio", "asus", "hmos",
];

const SMS: Spec = &[
    ("delay_time", Int(0, 86_400)),
    ("temp_id", Int(1, i64::MAX)),
    ("temp_para", Object),
    ("signid", Int(0, i64::MAX)),
    ("active_filter", Bool),
    ("content", StrMax(1000)),
];

/// Longest `callback.url`.
const MAX_CALLBACK_URL: usize = 1024;

const CALLBACK: Spec = &[("url", Str), ("params", Object), ("type", Int(1, 15))];

const AUDIENCE: Spec = &[
    ("tag", Any),
    ("tag_and", Any),
    ("tag_not", Any),
    ("alias", Any),
    ("registration_id", Any),
    ("segment", Any),
    ("abtest", Any),
    ("live_activity_id", Any),
    ("file", Any),
];

/// Parses and validates a JPush push object into a core [`Push`] (msg_id and sent_ms unset).
pub fn parse_push(body: &Value) -> Checked<Push> {
    let top = body
        .as_object()
        .ok_or_else(|| PushError::invalid("the push must be a JSON object"))?;
    check_object("push", top, TOP)?;

    let platforms = parse_platform(
        top.get("platform")
            .ok_or_else(|| PushError::missing("platform is required"))?,
    )?;
    let audience = parse_audience(
        top.get("audience")
            .ok_or_else(|| PushError::missing("audience is required"))?,
    )?;

    let notification = top
        .get("notification")
        .map(|n| parse_notification(n, platforms))
        .transpose()?;
    let message = top.get("message").map(parse_message).transpose()?;
    if top.contains_key("live_activity") {
        return Err(PushError::invalid(
            "live_activity pushes are not supported yet",
        ));
    }
    if notification.is_none() && message.is_none() {
        return Err(PushError::missing("a push needs notification or message"));
    }
    if let Some(inapp) = top.get("inapp_message") {
        if message.is_some() || notification.is_none() {
            return Err(PushError::invalid(
                "inapp_message needs notification and cannot go with message",
            ));
        }
        check_object(
            "inapp_message",
            as_object("inapp_message", inapp)?,
            &[("inapp_message", Bool)],
        )?;
    }
    check_sizes(top)?;

    let options = match top.get("options") {
        Some(o) => parse_options(o)?,
        None => PushOptions::default(),
    };
    if let Some(sms) = top.get("sms_message") {
        let sms = as_object("sms_message", sms)?;
        check_object("sms_message", sms, SMS)?;
        for required in ["delay_time", "temp_id"] {
            if !sms.contains_key(required) {
                return Err(PushError::missing(format!(
                    "sms_message.{required} is required"
                )));
            }
        }
    }
    if let Some(cb) = top.get("callback") {
        let cb = as_object("callback", cb)?;
        check_object("callback", cb, CALLBACK)?;
        if let Some(url) = cb.get("url").and_then(Value::as_str) {
            if url.len() > MAX_CALLBACK_URL {
                return Err(PushError::invalid(format!(
                    "callback.url is {} bytes; at most {MAX_CALLBACK_URL}",
                    url.len()
                )));
            }
            pigeon_callbacks::check_endpoint(url, &[])
                .map_err(|m| PushError::invalid(format!("callback.url: {m}")))?;
        }
    }
    let mut extra = Map::new();
    for key in ["inapp_message", "notification_3rd"] {
        if let Some(v) = top.get(key) {
            extra.insert(key.into(), v.clone());
        }
    }
    Ok(Push {
        msg_id: 0,
        sent_ms: 0,
        platforms,
        audience,
        notification,
        message,
        options,
        sms_message: top.get("sms_message").cloned(),
        callback: top.get("callback").cloned(),
        cid: top.get("cid").and_then(Value::as_str).map(String::from),
        schedule: None,
        extra,
    })
}

fn parse_platform(v: &Value) -> Checked<PlatformSet> {
    match v {
        Value::String(s) if s == "all" => Ok(PlatformSet::all()),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str().and_then(Platform::parse).ok_or_else(|| {
                    PushError::invalid(format!(
                        "platform {i} is not one of android, ios, hmos, quickapp, winphone, web"
                    ))
                })
            })
            .collect(),
        _ => Err(PushError::invalid(
            "platform must be \"all\" or a non-empty array of platforms",
        )),
    }
}

fn parse_audience(v: &Value) -> Checked<Audience> {
    let obj = match v {
        Value::String(s) if s == "all" => return Ok(Audience::All),
        Value::Object(o) => o,
        _ => return Err(PushError::invalid("audience must be \"all\" or an object")),
    };
    check_object("audience", obj, AUDIENCE)?;
    let mut expr = AudienceExpr::default();
    for (key, value) in obj {
        let path = format!("audience.{key}");
        let items: Vec<String> = match value {
            Value::Array(a) => a
                .iter()
                .map(|i| match i {
                    Value::String(s) if !s.is_empty() => Ok(s.clone()),
                    _ => Err(PushError::invalid(format!(
                        "{path} must hold non-empty strings"
                    ))),
                })
                .collect::<Checked<_>>()?,
            Value::String(_) if key == "live_activity_id" => vec![],
            Value::Object(_) if key == "file" => vec![],
            _ => {
                return Err(PushError::invalid(format!(
                    "{path} must be an array of strings"
                )))
            }
        };
        match key.as_str() {
            "segment" | "abtest" if !items.is_empty() => {
                return Err(PushError::invalid(format!(
                    "{path}: segments and A/B tests are not supported by this server yet"
                )))
            }
            "file" => {
                return Err(PushError::invalid(format!(
                    "{path}: a file audience is pushed through POST /v3/push/file"
                )))
            }
            "live_activity_id" => {
                return Err(PushError::invalid(format!(
                    "{path} is not supported by this server yet"
                )))
            }
            "tag" | "tag_and" | "tag_not" => {
                if items.len() > MAX_AUDIENCE_TAGS {
                    return Err(PushError::invalid(format!(
                        "{path} has {} tags, the limit is {MAX_AUDIENCE_TAGS}",
                        items.len()
                    )));
                }
                for t in &items {
                    check_name("tag", t).map_err(|e| PushError::invalid(format!("{path}: {e}")))?;
                }
                match key.as_str() {
                    "tag" => expr.tag = items,
                    "tag_and" => expr.tag_and = items,
                    _ => expr.tag_not = items,
                }
            }
            "alias" => {
                check_id_count(&path, items.len())?;
                for a in &items {
                    check_name("alias", a)
                        .map_err(|e| PushError::invalid(format!("{path}: {e}")))?;
                }
                expr.alias = items;
            }
            "registration_id" => {
                check_id_count(&path, items.len())?;
                if let Some(bad) = items
                    .iter()
                    .find(|r| r.len() > 64 || !r.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(PushError::invalid(format!(
                        "{path}: {bad:?} is not a registration id"
                    )));
                }
                expr.registration_id = items;
            }
            _ => {}
        }
    }
    if expr.is_empty() {
        return Err(PushError::missing(
            "audience must name at least one of tag, tag_and, tag_not, alias, registration_id",
        ));
    }
    Ok(Audience::Expr(expr))
}

fn check_id_count(path: &str, n: usize) -> Checked<()> {
    if n > MAX_AUDIENCE_IDS {
        return Err(PushError::invalid(format!(
            "{path} has {n} entries, the limit is {MAX_AUDIENCE_IDS}"
        )));
    }
    Ok(())
}

fn parse_notification(v: &Value, platforms: PlatformSet) -> Checked<Notification> {
    let obj = as_object("notification", v)?;
    check_object("notification", obj, NOTIFICATION)?;
    let alert = obj.get("alert").cloned();
    let mut sections = std::collections::BTreeMap::new();
    for (name, value) in obj {
        if name == "alert" {
            continue;
        }
        let path = format!("notification.{name}");
        let section = as_object(&path, value)?;
        let spec = match name.as_str() {
            "android" => ANDROID,
            "ios" => IOS,
            "hmos" => HMOS,
            "quickapp" => QUICKAPP,
            "winphone" => WINPHONE,
            "web" => WEB,
            _ => &[], // voip: any object, passed through to PushKit
        };
        if name != "voip" {
            check_object(&path, section, spec)?;
        }
        check_section(name, &path, section, alert.is_some())?;
        sections.insert(name.clone(), section.clone());
    }
    let targeted_with_alert = platforms
        .iter()
        .any(|p| alert.is_some() || sections.contains_key(p.as_str()));
    if !targeted_with_alert && !sections.contains_key("voip") {
        return Err(PushError::missing(
            "notification needs an alert, or a section for one of the push's platforms",
        ));
    }
    Ok(Notification { alert, sections })
}

/// Rules of one section beyond field types.
fn check_section(
    name: &str,
    path: &str,
    s: &Map<String, Value>,
    shared_alert: bool,
) -> Checked<()> {
    let has = |k: &str| s.contains_key(k);
    if matches!(name, "android" | "ios" | "hmos" | "quickapp" | "winphone")
        && !has("alert")
        && !shared_alert
    {
        return Err(PushError::missing(format!(
            "{path}.alert is required (or a notification.alert)"
        )));
    }
    match name {
        "ios" => {
            if let Some(Value::Object(alert)) = s.get("alert") {
                check_object(&format!("{path}.alert"), alert, IOS_ALERT)?;
            }
        }
        "hmos" => {
            if s.get("alert").and_then(Value::as_str) == Some("") {
                return Err(PushError::invalid(format!(
                    "{path}.alert must not be empty"
                )));
            }
            let push_type = s.get("push_type").and_then(int_of);
            if let Some(t) = push_type {
                if ![0, 1, 2, 7, 10].contains(&t) {
                    return Err(PushError::invalid(format!(
                        "{path}.push_type must be 0, 1, 2, 7 or 10"
                    )));
                }
                if matches!(t, 2 | 10) && !has("extra_data") {
                    return Err(PushError::missing(format!(
                        "{path}.extra_data is required when push_type is {t}"
                    )));
                }
                if matches!(t, 1 | 7) && !has("hm_payload") {
                    return Err(PushError::missing(format!(
                        "{path}.hm_payload is required when push_type is {t}"
                    )));
                }
            }
        }
        "quickapp" => {
            for k in ["title", "page"] {
                if !has(k) {
                    return Err(PushError::missing(format!("{path}.{k} is required")));
                }
            }
        }
        _ => {}
    }
    if let Some(intent) = s.get("intent") {
        let ok = intent.get("url").is_some_and(Value::is_string);
        if !ok {
            return Err(PushError::invalid(format!(
                "{path}.intent must be {{\"url\": \"...\"}}"
            )));
        }
    }
    Ok(())
}

fn parse_message(v: &Value) -> Checked<Map<String, Value>> {
    let obj = as_object("message", v)?;
    check_object("message", obj, MESSAGE)?;
    if !obj.contains_key("msg_content") {
        return Err(PushError::missing("message.msg_content is required"));
    }
    Ok(obj.clone())
}

fn parse_options(v: &Value) -> Checked<PushOptions> {
    let obj = as_object("options", v)?;
    check_object("options", obj, OPTIONS)?;
    let int = |k: &str| obj.get(k).and_then(int_of);
    let mut options = PushOptions {
        sendno: int("sendno"),
        time_to_live: int("time_to_live")
            .map(|t| t as u64)
            .unwrap_or(DEFAULT_TIME_TO_LIVE_S),
        apns_production: obj.get("apns_production").and_then(bool_of).unwrap_or(true),
        apns_collapse_id: obj
            .get("apns_collapse_id")
            .and_then(Value::as_str)
            .map(String::from),
        override_msg_id: int("override_msg_id").map(|m| m as u64),
        notify_id: None,
        big_push_duration: int("big_push_duration").map(|m| m as u64),
        pace_ms: None,
        other: Map::new(),
    };
    if let Some(tpc) = obj.get("third_party_channel") {
        check_third_party_channel(as_object("options.third_party_channel", tpc)?)?;
    }
    if obj.get("need_backup").and_then(bool_of) == Some(true)
        && obj.get("active_push").and_then(bool_of) != Some(true)
    {
        return Err(PushError {
            code: 1035,
            message: "options.need_backup requires options.active_push".into(),
        });
    }
    const TYPED: [&str; 6] = [
        "sendno",
        "time_to_live",
        "apns_production",
        "apns_collapse_id",
        "override_msg_id",
        "big_push_duration",
    ];
    for (k, v) in obj {
        if !TYPED.contains(&k.as_str()) {
            options.other.insert(k.clone(), v.clone());
        }
    }
    Ok(options)
}

/// The vendor routing object is kept as given; only its enum fields are checked.
fn check_third_party_channel(tpc: &Map<String, Value>) -> Checked<()> {
    const DISTRIBUTION: &[&str] = &["first_ospush", "ospush", "jpush", "secondary_push"];
    const DISTRIBUTION_FCM: &[&str] = &[
        "jpush",
        "fcm",
        "pns",
        "secondary_fcm_push",
        "secondary_pns_push",
    ];
    const DISTRIBUTION_CUSTOMIZE: &[&str] = &["jpush", "first_ospush", "secondary_push"];
    for (vendor, v) in tpc {
        let path = format!("options.third_party_channel.{vendor}");
        if !THIRD_PARTY_VENDORS.contains(&vendor.as_str()) {
            return Err(PushError::unknown_key(
                "options.third_party_channel",
                vendor,
            ));
        }
        let obj = as_object(&path, v)?;
        for (key, allowed) in [
            ("distribution", DISTRIBUTION),
            ("distribution_fcm", DISTRIBUTION_FCM),
            ("distribution_customize", DISTRIBUTION_CUSTOMIZE),
        ] {
            if let Some(val) = obj.get(key) {
                if !val.as_str().is_some_and(|s| allowed.contains(&s)) {
                    return Err(PushError::invalid(format!(
                        "{path}.{key} must be one of {}",
                        allowed.join(", ")
                    )));
                }
            }
        }
        if let Some(imp) = obj.get("importance") {
            if !imp
                .as_str()
                .is_some_and(|s| ["LOW", "NORMAL", "HIGH"].contains(&s))
            {
                return Err(PushError::invalid(format!(
                    "{path}.importance must be LOW, NORMAL or HIGH"
                )));
            }
        }
    }
    Ok(())
}

/// Payload limits (§2.12): `"ios":{...}` ≤ 2000 bytes; android notification + message ≤ 4000.
fn check_sizes(top: &Map<String, Value>) -> Checked<()> {
    let size = |v: Option<&Value>| v.map(|v| v.to_string().len()).unwrap_or(0);
    let n = top.get("notification");
    if let Some(ios) = n.and_then(|n| n.get("ios")) {
        let bytes = "\"ios\":".len() + size(Some(ios));
        if bytes > MAX_IOS_BYTES {
            return Err(PushError::too_large(format!(
                "notification.ios is {bytes} bytes, the limit is {MAX_IOS_BYTES}"
            )));
        }
    }
    let android = size(n.and_then(|n| n.get("android"))) + size(top.get("message"));
    if android > MAX_ANDROID_BYTES {
        return Err(PushError::too_large(format!(
            "notification.android plus message is {android} bytes, the limit is {MAX_ANDROID_BYTES}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(v: Value) -> u32 {
        parse_push(&v).unwrap_err().code
    }

    #[test]
    fn a_full_push_translates() {
        let p = parse_push(&json!({
            "platform": ["android", "ios"],
            "audience": {"tag": ["a"], "tag_not": ["b"], "registration_id": []},
            "notification": {"alert": "hi", "android": {"title": "T", "extras": {"k": "v"}},
                              "ios": {"badge": "+1", "sound": "default", "content-available": 1}},
            "message": {"msg_content": "m"},
            "options": {"sendno": 7, "time_to_live": 0, "apns_production": "false", "classification": 1},
            "sms_message": {"delay_time": 60, "temp_id": 5},
            "cid": "key-uuid"
        }))
        .unwrap();
        assert_eq!(p.options.sendno, Some(7));
        assert_eq!(p.options.time_to_live, 0);
        assert!(!p.options.apns_production);
        assert_eq!(p.options.other["classification"], json!(1));
        let Audience::Expr(e) = &p.audience else {
            panic!("expected expr")
        };
        assert_eq!(
            (e.tag.len(), e.tag_not.len(), e.registration_id.len()),
            (1, 1, 0)
        );
        assert_eq!(
            p.notification_for(Platform::Android).unwrap()["alert"],
            json!("hi")
        );
        assert_eq!(p.cid.as_deref(), Some("key-uuid"));
    }

    #[test]
    fn missing_and_invalid_fields_get_their_codes() {
        assert_eq!(
            code(json!({"audience": "all", "message": {"msg_content": "x"}})),
            1002
        );
        assert_eq!(
            code(json!({"platform": "all", "message": {"msg_content": "x"}})),
            1002
        );
        assert_eq!(code(json!({"platform": "all", "audience": "all"})), 1002);
        assert_eq!(
            code(json!({"platform": "all", "audience": "all", "message": {}})),
            1002
        );
        assert_eq!(
            code(json!({"platform": ["pc"], "audience": "all", "message": {"msg_content": "x"}})),
            1003
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "everyone", "message": {"msg_content": "x"}})
            ),
            1003
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": {"tag": []}, "message": {"msg_content": "x"}})
            ),
            1002
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": {"alias": [""]}, "message": {"msg_content": "x"}})
            ),
            1003
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": {"segment": ["s"]}, "message": {"msg_content": "x"}})
            ),
            1003
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "all", "notification": {"android": {"title": "no alert"}}})
            ),
            1002
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "all", "message": {"msg_content": "x"}, "options": {"time_to_live": 864001}})
            ),
            1003
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "all", "notification": {"alert": "x", "ios": {"badge": "+100"}}})
            ),
            1003
        );
    }

    #[test]
    fn limits() {
        let tags: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert_eq!(
            code(
                json!({"platform": "all", "audience": {"tag": tags}, "message": {"msg_content": "x"}})
            ),
            1003
        );
        let ids: Vec<String> = (0..1001).map(|i| format!("r{i}")).collect();
        assert_eq!(
            code(
                json!({"platform": "all", "audience": {"registration_id": ids}, "message": {"msg_content": "x"}})
            ),
            1003
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": {"tag": ["x".repeat(41)]}, "message": {"msg_content": "x"}})
            ),
            1003
        );
        let big = "x".repeat(2000);
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "all", "notification": {"ios": {"alert": big}}})
            ),
            1005
        );
        let big = "x".repeat(3990);
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "all", "notification": {"android": {"alert": "a"}}, "message": {"msg_content": big}})
            ),
            1005
        );
    }

    #[test]
    fn unknown_keys_are_1009() {
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "all", "message": {"msg_content": "x"}, "bogus": 1})
            ),
            1009
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": {"tags": ["a"]}, "message": {"msg_content": "x"}})
            ),
            1009
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "all", "notification": {"alert": "x", "android": {"colour": 1}}})
            ),
            1009
        );
        assert_eq!(
            code(
                json!({"platform": "all", "audience": "all", "message": {"msg_content": "x"}, "options": {"ttl": 1}})
            ),
            1009
        );
    }
}
