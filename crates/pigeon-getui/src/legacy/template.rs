//! What a legacy template means, in Pigeon's model (getui.md A.5–A.7): the action chain of
//! `clientData` (a `Transparent`), its `pushInfo` (APNs JSON, vendor notification), its
//! `smsInfo` and `condition`, and the JSON envelope around it (`transmissionContent`,
//! `isOffline`, `offlineExpireTime`, `pushNetWorkType`, `strategyJson`). Pure functions: no
//! engine, no IO, every failure a message naming the field.

use super::proto::{field_type, node, ActionChain, InnerFiled, PushInfo, Transparent};
use pigeon_core::model::{
    ApnsFields, BadgeOp, ChannelStrategy, Click, Content, DeliveryPolicy, Fields, Message,
    NetworkType, Notification, SmsFallback,
};
use pigeon_core::{Platform, DEFAULT_TIME_TO_LIVE_S, MAX_TIME_TO_LIVE_S};
use serde_json::{Map, Value};

/// Which template a `Transparent` was made from (its `templateId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Template {
    Notification,
    Link,
    NotyPopLoad,
    Transmission,
    Apn,
    StartActivity,
    Revoke,
}

impl Template {
    fn from_id(id: i32) -> Option<Template> {
        Some(match id {
            0 => Template::Notification,
            1 => Template::Link,
            2 => Template::NotyPopLoad,
            4 => Template::Transmission,
            5 => Template::Apn,
            7 => Template::StartActivity,
            8 => Template::Revoke,
            _ => return None,
        })
    }
}

/// A RevokeTemplate: withdraw the push `old_task_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoke {
    pub old_task_id: String,
    /// When the task is not found, withdraw all of the app's notifications instead.
    pub force: bool,
}

/// A template read into Pigeon's terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Interpreted {
    pub template: Option<Template>,
    pub content: Content,
    /// `notifyid` of a styled notification (or a link): replaces the one shown with the same id.
    pub notify_id: Option<String>,
    /// `apns-collapse-id` of the APNs JSON.
    pub collapse_id: Option<String>,
    /// `condition` `duration=start-end`: show only between these times (ms).
    pub display_window: Option<(u64, u64)>,
    /// The SMS supplement as asked: `Ok` when usable, `Err` with why not (the push still goes,
    /// without SMS, and the answer says why in `smsResultMsg`).
    pub sms: Option<Result<SmsFallback, String>>,
    pub revoke: Option<Revoke>,
    /// Vendor channels switched off (`blackThirdparty`), as Pigeon's vendor names.
    pub vendors_off: Vec<String>,
}

/// Why a template cannot be pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(m.into()))
}

/// Longest text field taken from a template (titles, bodies, URLs, payloads).
const MAX_TEXT: usize = 4096;
/// Longest `transmissionContent` (Getui's own limit is 3 KB for vendors, 4 KB overall).
pub const MAX_TRANSMISSION: usize = 4096;

/// Reads a `Transparent` and the envelope's `transmissionContent` into content.
pub fn interpret(t: &Transparent, transmission: &str) -> Result<Interpreted, TemplateError> {
    if transmission.len() > MAX_TRANSMISSION {
        return err("transmissionContent length overlimit");
    }
    let template = match t.template_id {
        Some(id) => Some(Template::from_id(id).ok_or_else(|| {
            TemplateError(format!(
                "clientData.templateId {id} is not a known template"
            ))
        })?),
        None => guess_template(&t.action_chain),
    };
    let mut out = Interpreted {
        template,
        ..Interpreted::default()
    };
    out.display_window = display_window(&t.condition)?;
    if let Some(sms) = &t.sms_info {
        out.sms = Some(sms_fallback(sms));
    }
    if let Some(info) = &t.push_info {
        out.vendors_off = info
            .black_thirdparty
            .iter()
            .filter_map(|v| vendor_name(v))
            .map(str::to_string)
            .collect();
        if info.invalid_apn == Some(false) {
            if let Some(json) = info.apn_json.as_deref().filter(|j| !j.is_empty()) {
                let apns = apns_notification(json)?;
                out.collapse_id = apns.collapse_id;
                if let Some(n) = apns.notification {
                    out.content.notifications.insert(Platform::Ios, n);
                }
            }
        }
        if info.valid_notify == Some(true) {
            if let Some(n) = &info.notify_info {
                out.content.vendor_notification = Some(Box::new(vendor_notification(n)?));
            }
        }
    }
    match template {
        Some(Template::Transmission) => {
            if transmission.is_empty() && out.content.notifications.is_empty() {
                return err("transmissionContent is not null");
            }
            if !transmission.is_empty() {
                out.content.message = Some(Message {
                    content: transmission.to_string(),
                    ..Message::default()
                });
            }
        }
        Some(Template::Revoke) => {
            out.revoke = Some(revoke(&t.action_chain)?);
        }
        Some(Template::Apn) => {
            if out.content.notifications.is_empty() {
                return err("an APN template needs an APNs payload (setApnInfo)");
            }
        }
        _ => {
            let (notification, notify_id) = android_notification(&t.action_chain, transmission)?;
            out.notify_id = notify_id;
            out.content
                .notifications
                .insert(Platform::Android, notification);
        }
    }
    if out.sms.is_some() && matches!(template, Some(Template::Revoke)) {
        out.sms = Some(Err("smsInfo is not allowed on a revoke template".into()));
    }
    Ok(out)
}

/// A template without `templateId` (not what this SDK sends): told by its chain.
fn guess_template(chain: &[ActionChain]) -> Option<Template> {
    let has = |ty: i32, stype: Option<&str>| {
        chain
            .iter()
            .any(|n| n.r#type == ty && (stype.is_none() || n.stype.as_deref() == stype))
    };
    if has(node::MMSINBOX2, Some("terminatetask")) {
        Some(Template::Revoke)
    } else if has(node::MMSINBOX2, Some("startmyactivity")) {
        Some(Template::StartActivity)
    } else if has(node::STARTWEB, None) {
        Some(Template::Link)
    } else if has(node::APPDOWNLOAD, None) {
        Some(Template::NotyPopLoad)
    } else if has(node::NOTIFICATION, None) || has(node::MMSINBOX2, Some("notification")) {
        Some(Template::Notification)
    } else if has(node::STARTAPP, None) {
        Some(Template::Transmission)
    } else {
        None
    }
}

fn text(field: &str, v: &str) -> Result<String, TemplateError> {
    if v.len() > MAX_TEXT {
        return err(format!("{field} is longer than {MAX_TEXT} bytes"));
    }
    Ok(v.to_string())
}

fn field_map(fields: &[InnerFiled]) -> Vec<(&str, &InnerFiled)> {
    fields.iter().map(|f| (f.key.as_str(), f)).collect()
}

fn field<'a>(fields: &'a [InnerFiled], key: &str) -> Option<&'a InnerFiled> {
    fields.iter().find(|f| f.key == key)
}

/// A field's value as JSON, by its declared type (booleans read case-insensitively: the
/// Python SDK writes `True`/`False`).
fn field_value(f: &InnerFiled) -> Value {
    match f.r#type {
        field_type::BOOL => Value::Bool(f.val.eq_ignore_ascii_case("true")),
        field_type::INT32 | field_type::INT64 => f
            .val
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(f.val.clone())),
        field_type::FLOAT | field_type::DOUBLE => f
            .val
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(f.val.clone())),
        _ => Value::String(f.val.clone()),
    }
}

fn flag(f: Option<&InnerFiled>) -> Option<bool> {
    f.map(|f| f.val.eq_ignore_ascii_case("true"))
}

/// The notification node (plain or styled) of a Notification, Link, StartActivity or
/// NotyPopLoad chain, and what a tap on it does.
fn android_notification(
    chain: &[ActionChain],
    transmission: &str,
) -> Result<(Notification, Option<String>), TemplateError> {
    let shown = chain
        .iter()
        .find(|n| {
            n.r#type == node::NOTIFICATION
                || (n.r#type == node::MMSINBOX2 && n.stype.as_deref() == Some("notification"))
        })
        .ok_or_else(|| {
            TemplateError("clientData has no notification in its action chain".into())
        })?;
    let mut n = Notification::default();
    let mut display = Fields::new();
    let fields = &shown.field;
    let styled = shown.r#type == node::MMSINBOX2;
    let (title, body, logo, logo_url) = if styled {
        let s = |k: &str| field(fields, k).map(|f| f.val.clone());
        (s("title"), s("text"), s("logo"), s("logo_url"))
    } else {
        (
            shown.title.clone(),
            shown.text.clone(),
            shown.logo.clone(),
            shown.logo_url.clone(),
        )
    };
    n.title = title
        .filter(|t| !t.is_empty())
        .map(|t| text("title", &t))
        .transpose()?;
    n.body = text("text", body.as_deref().unwrap_or_default())?;
    if n.title.is_none() && n.body.is_empty() {
        return err("the notification has neither title nor text");
    }
    for (k, v) in [("logo", logo), ("logo_url", logo_url)] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            display.insert(k.into(), Value::String(text(k, &v)?));
        }
    }
    let (ring, vibrate, clearable) = if styled {
        (
            flag(field(fields, "is_noring")).map(|b| !b),
            flag(field(fields, "is_novibrate")).map(|b| !b),
            flag(field(fields, "is_noclear")).map(|b| !b),
        )
    } else {
        (shown.ring, shown.buzz, shown.clearable)
    };
    for (k, v) in [
        ("ring", ring),
        ("vibrate", vibrate),
        ("clearable", clearable),
    ] {
        if let Some(v) = v {
            display.insert(k.into(), Value::Bool(v));
        }
    }
    let mut notify_id = None;
    for (key, f) in field_map(fields) {
        match key {
            "title" | "text" | "logo" | "logo_url" | "is_noring" | "is_novibrate"
            | "is_noclear" | "isClearable" => {}
            "notifyid" => notify_id = Some(text("notifyid", f.val.trim())?),
            "channel" => n.channel_id = Some(text("channel", &f.val)?),
            "channelLevel" => {
                if let Ok(level) = f.val.trim().parse::<i64>() {
                    // Android importance 0..4, 3 the default; Pigeon's priority -2..2.
                    if level != 3 {
                        n.priority = Some((level - 3).clamp(-2, 2) as i8);
                    }
                    display.insert("channel_level".into(), Value::from(level));
                }
            }
            "channelName" => {
                display.insert("channel_name".into(), Value::String(text(key, &f.val)?));
            }
            "notifyStyle" => {
                display.insert("style".into(), field_value(f));
            }
            "bigStyle" => {
                display.insert("big_style".into(), field_value(f));
            }
            "big_image_url" | "big_text" | "banner_url" => {
                display.insert(key.into(), Value::String(text(key, &f.val)?));
            }
            other => {
                if display.len() < 64 {
                    display.insert(other.to_string(), field_value(f));
                }
            }
        }
    }
    if let Some(banner) = shown.banner_url.as_deref().filter(|b| !b.is_empty()) {
        display.insert(
            "banner_url".into(),
            Value::String(text("bannerURL", banner)?),
        );
    }
    n.click = click(chain, transmission)?;
    if let Some(popup) = chain.iter().find(|c| c.r#type == node::POPUP) {
        let mut p = Fields::new();
        if let Some(t) = &popup.title {
            p.insert("title".into(), Value::String(text("popup title", t)?));
        }
        if let Some(t) = &popup.text {
            p.insert("text".into(), Value::String(text("popup text", t)?));
        }
        let buttons: Vec<Value> = popup
            .buttons
            .iter()
            .filter_map(|b| b.text.clone())
            .map(Value::String)
            .collect();
        p.insert("buttons".into(), Value::Array(buttons));
        display.insert("popup".into(), Value::Object(p));
    }
    n.display = display;
    Ok((n, notify_id))
}

/// What tapping the notification does: a web page (Link), an intent (StartActivity), a
/// download (NotyPopLoad), else open the app with the transmission content, if any.
fn click(chain: &[ActionChain], transmission: &str) -> Result<Click, TemplateError> {
    if let Some(web) = chain.iter().find(|c| c.r#type == node::STARTWEB) {
        let url = web.url.as_deref().unwrap_or_default();
        if url.is_empty() {
            return err("a link template needs a url");
        }
        return Ok(Click::Url(text("url", url)?));
    }
    if let Some(start) = chain
        .iter()
        .find(|c| c.r#type == node::MMSINBOX2 && c.stype.as_deref() == Some("startmyactivity"))
    {
        let uri = field(&start.field, "uri").map(|f| f.val.as_str());
        return match uri {
            Some(u) if !u.is_empty() => Ok(Click::Intent(text("intent", u)?)),
            _ => err("a start-activity template needs an intent"),
        };
    }
    if let Some(download) = chain.iter().find(|c| c.r#type == node::APPDOWNLOAD) {
        if let Some(url) = download.url.as_deref().filter(|u| !u.is_empty()) {
            return Ok(Click::Url(text("loadUrl", url)?));
        }
    }
    if transmission.is_empty() {
        Ok(Click::OpenApp)
    } else {
        Ok(Click::Payload(transmission.to_string()))
    }
}

fn revoke(chain: &[ActionChain]) -> Result<Revoke, TemplateError> {
    let node = chain
        .iter()
        .find(|c| c.r#type == node::MMSINBOX2 && c.stype.as_deref() == Some("terminatetask"))
        .ok_or_else(|| TemplateError("a revoke template needs a terminatetask node".into()))?;
    let old_task_id = node.taskid.clone().unwrap_or_default();
    if old_task_id.trim().is_empty() {
        return err("oldTaskId is not null");
    }
    Ok(Revoke {
        old_task_id,
        force: flag(field(&node.field, "force")).unwrap_or(false),
    })
}

/// `condition` entries: `duration=<startMs>-<endMs>` (Python float text, `1.7e12` forms too).
fn display_window(conditions: &[String]) -> Result<Option<(u64, u64)>, TemplateError> {
    for c in conditions {
        let Some(range) = c.trim().strip_prefix("duration=") else {
            continue;
        };
        let bad = || TemplateError(format!("condition {c:?} is not duration=<start>-<end>"));
        let (a, b) = range.split_once('-').ok_or_else(bad)?;
        let ms = |s: &str| -> Option<u64> {
            let f: f64 = s.trim().parse().ok()?;
            (f.is_finite() && f > 0.0 && f < 1e17).then_some(f as u64)
        };
        let (start, end) = (ms(a).ok_or_else(bad)?, ms(b).ok_or_else(bad)?);
        if start > end {
            return err("duration: startTime should be smaller than endTime");
        }
        return Ok(Some((start, end)));
    }
    Ok(None)
}

/// Most SMS delay Getui allows (3 days).
const MAX_SMS_DELAY_MS: i64 = 3 * 86_400_000;

fn sms_fallback(sms: &super::proto::SmsInfo) -> Result<SmsFallback, String> {
    if sms.sms_template_id.trim().is_empty() {
        return Err("smsTemplateId is not null".into());
    }
    if sms.sms_template_id.len() > 128 {
        return Err("smsTemplateId is longer than 128 bytes".into());
    }
    if !(0..=MAX_SMS_DELAY_MS).contains(&sms.offline_sendtime) {
        return Err(format!(
            "offlineSendtime {} ms is not within 0..{MAX_SMS_DELAY_MS} ms (3 days)",
            sms.offline_sendtime
        ));
    }
    let mut params = Fields::new();
    for e in &sms.sms_content {
        if e.key.is_empty() || e.key.len() > 64 || e.value.len() > 1024 {
            return Err(format!("smsContent entry {:?} is not usable", e.key));
        }
        params.insert(e.key.clone(), Value::String(e.value.clone()));
    }
    // ms → s, rounding up: an SMS never goes before the time asked.
    let delay_s = (sms.offline_sendtime as u64).div_ceil(1000);
    Ok(SmsFallback {
        delay_s,
        text: None,
        template: Some(sms.sms_template_id.clone()),
        params,
        sign_id: None,
    })
}

fn vendor_name(getui: &str) -> Option<&'static str> {
    Some(match getui.trim().to_ascii_uppercase().as_str() {
        "HW" | "HUAWEI" => "huawei",
        "XM" | "XIAOMI" => "xiaomi",
        "OP" | "OPPO" => "oppo",
        "VV" | "VIVO" => "vivo",
        "MZ" | "MEIZU" => "meizu",
        "HO" | "HONOR" => "honor",
        "FCM" | "ST" => "fcm",
        "APNS" | "IOS" => "apns",
        _ => return None,
    })
}

/// `pushInfo.notifyInfo`: what vendor channels show for a transmission.
fn vendor_notification(n: &super::proto::NotifyInfo) -> Result<Notification, TemplateError> {
    if n.title.is_empty() || n.content.is_empty() {
        return err("notifyInfo title and content are required");
    }
    let mut out = Notification {
        title: Some(text("notifyInfo.title", &n.title)?),
        body: text("notifyInfo.content", &n.content)?,
        ..Notification::default()
    };
    let opt = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    out.click = match n.r#type.unwrap_or(0) {
        1 => match opt(&n.intent) {
            Some(i) => Click::Intent(text("notifyInfo.intent", &i)?),
            None => Click::OpenApp,
        },
        2 => match opt(&n.url) {
            Some(u) => Click::Url(text("notifyInfo.url", &u)?),
            None => return err("notifyInfo of type url needs a url"),
        },
        3 => Click::OpenApp,
        _ => match opt(&n.payload) {
            Some(p) => Click::Payload(text("notifyInfo.payload", &p)?),
            None => Click::OpenApp,
        },
    };
    if let Some(p) = opt(&n.payload) {
        if !matches!(out.click, Click::Payload(_)) {
            out.extras.insert(
                "payload".into(),
                Value::String(text("notifyInfo.payload", &p)?),
            );
        }
    }
    // Vendor-specific extras: `ALL` ones for every vendor, the others under their vendor.
    let mut per_vendor = Map::new();
    for kv in &n.ext_kv {
        let target = kv.constains.as_deref().unwrap_or("ALL");
        let value = Value::String(text("extKV", &kv.value)?);
        if target.eq_ignore_ascii_case("ALL") {
            out.extras.insert(kv.key.clone(), value);
        } else if let Some(v) = vendor_name(target) {
            let entry = per_vendor
                .entry(v.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                m.insert(kv.key.clone(), value);
            }
        }
    }
    if !per_vendor.is_empty() {
        out.display
            .insert("vendor_ext".into(), Value::Object(per_vendor));
    }
    Ok(out)
}

/// The iOS notification of an APNs JSON document, and its collapse id.
#[derive(Debug, Default, PartialEq)]
pub struct Apns {
    pub notification: Option<Notification>,
    pub collapse_id: Option<String>,
}

/// Largest APNs JSON taken (the SDK checks 3072 bytes itself).
const MAX_APNS_JSON: usize = 8192;

/// Reads `PushInfo.apnJson`: `aps` (alert, badge / `autoBadge`, sound, content-available,
/// category, `apns-collapse-id`, thread-id…) and the custom top-level keys.
pub fn apns_notification(json: &str) -> Result<Apns, TemplateError> {
    if json.len() > MAX_APNS_JSON {
        return err(format!("apnJson is longer than {MAX_APNS_JSON} bytes"));
    }
    let doc: Value = serde_json::from_str(json)
        .map_err(|e| TemplateError(format!("apnJson is not valid JSON: {e}")))?;
    let Value::Object(mut doc) = doc else {
        return err("apnJson must be a JSON object");
    };
    let aps = match doc.remove("aps") {
        Some(Value::Object(aps)) => aps,
        Some(_) => return err("apnJson.aps must be an object"),
        // VoIP payloads and documents without aps: nothing for APNs to show.
        None => return Ok(Apns::default()),
    };
    let mut n = Notification {
        extras: doc,
        ..Notification::default()
    };
    let mut apns = ApnsFields::default();
    let mut collapse_id = None;
    let mut has_alert = false;
    for (key, v) in aps {
        match key.as_str() {
            "alert" => match v {
                Value::String(s) => {
                    n.body = s;
                    has_alert = true;
                }
                Value::Object(alert) => {
                    has_alert = true;
                    if let Some(t) = alert.get("title").and_then(Value::as_str) {
                        n.title = Some(t.to_string()).filter(|t| !t.is_empty());
                    }
                    if let Some(b) = alert.get("body").and_then(Value::as_str) {
                        n.body = b.to_string();
                    }
                    let beyond = alert.keys().any(|k| k != "title" && k != "body");
                    if beyond {
                        apns.alert = Some(alert);
                    }
                }
                _ => return err("apnJson aps.alert must be a string or an object"),
            },
            "badge" => {
                n.badge = match &v {
                    Value::Number(num) => num.as_i64().map(|b| {
                        BadgeOp::Set(b.clamp(0, i64::from(pigeon_core::model::MAX_BADGE)) as u32)
                    }),
                    Value::String(s) => BadgeOp::parse_text(s.trim()),
                    _ => None,
                };
            }
            "autoBadge" => {
                let text = match &v {
                    Value::String(s) => s.trim().to_string(),
                    Value::Number(num) => num.to_string(),
                    _ => String::new(),
                };
                let op = BadgeOp::parse_text(&text).ok_or_else(|| {
                    TemplateError(format!("autoBadge {text:?} is not +N, -N or N"))
                })?;
                n.badge = Some(op);
            }
            "sound" => match v {
                Value::String(s) if !s.is_empty() => n.sound = Some(s),
                Value::Object(d) => {
                    let (name, dict) = sanitize_sound(&d);
                    n.sound = name;
                    apns.sound = dict;
                }
                _ => {}
            },
            "content-available" => {
                apns.content_available = v.as_i64() == Some(1) || v.as_bool() == Some(true)
            }
            "mutable-content" => {
                apns.mutable_content = v.as_i64() == Some(1) || v.as_bool() == Some(true)
            }
            "category" => n.category = v.as_str().map(str::to_string).filter(|s| !s.is_empty()),
            "thread-id" => {
                apns.thread_id = v.as_str().map(str::to_string).filter(|s| !s.is_empty())
            }
            "interruption-level" => {
                apns.interruption_level = v.as_str().map(str::to_string).filter(|s| !s.is_empty())
            }
            "apns-collapse-id" => {
                let id = v.as_str().unwrap_or_default();
                if id.len() > 64 {
                    return err("apns-collapse-id is longer than 64 bytes");
                }
                collapse_id = Some(id.to_string()).filter(|s| !s.is_empty());
            }
            _ => {}
        }
    }
    if !has_alert && !apns.content_available && n.badge.is_none() && n.sound.is_none() {
        return err("apnJson aps has no alert, badge, sound or content-available");
    }
    if apns != ApnsFields::default() {
        n.apns = Some(Box::new(apns));
    }
    Ok(Apns {
        notification: Some(n),
        collapse_id,
    })
}

/// A sound dictionary with the SDK's junk removed: when only a name is set it still sends
/// volume ≈ 2.2e-308 and critical = -2^63. Returns the plain name when nothing else is
/// meaningful, else a clean dictionary.
fn sanitize_sound(d: &Map<String, Value>) -> (Option<String>, Option<Fields>) {
    let name = d
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let critical = d
        .get("critical")
        .and_then(Value::as_i64)
        .filter(|c| *c == 1);
    let volume = d
        .get("volume")
        .and_then(Value::as_f64)
        .filter(|v| (0.001..=1.0).contains(v));
    if critical.is_none() {
        return (name, None);
    }
    let mut out = Fields::new();
    if let Some(n) = &name {
        out.insert("name".into(), Value::String(n.clone()));
    }
    out.insert("critical".into(), Value::from(1));
    if let Some(v) = volume.and_then(serde_json::Number::from_f64) {
        out.insert("volume".into(), Value::Number(v));
    }
    (name, Some(out))
}

/// The delivery parts of the JSON envelope: `isOffline`, `offlineExpireTime`,
/// `pushNetWorkType`, `strategyJson`.
pub fn envelope_policy(body: &Map<String, Value>) -> Result<DeliveryPolicy, TemplateError> {
    let mut p = DeliveryPolicy::default();
    let offline = match body.get("isOffline") {
        None | Some(Value::Null) => true,
        Some(v) => as_bool(v).ok_or_else(|| TemplateError("isOffline must be a boolean".into()))?,
    };
    p.ttl_s = if !offline {
        0
    } else {
        match body.get("offlineExpireTime") {
            None | Some(Value::Null) => DEFAULT_TIME_TO_LIVE_S,
            Some(v) => {
                let ms = as_i64(v).ok_or_else(|| {
                    TemplateError("offlineExpireTime must be a number of ms".into())
                })?;
                if ms <= 0 {
                    DEFAULT_TIME_TO_LIVE_S
                } else {
                    (ms as u64).div_ceil(1000).min(MAX_TIME_TO_LIVE_S)
                }
            }
        }
    };
    p.network = match body.get("pushNetWorkType").map(as_i64) {
        None | Some(Some(0)) => NetworkType::Any,
        Some(Some(1)) => NetworkType::Wifi,
        Some(Some(2)) => NetworkType::Mobile,
        Some(_) if body.get("pushNetWorkType") == Some(&Value::Null) => NetworkType::Any,
        Some(_) => return err("pushNetWorkType must be 0, 1 or 2"),
    };
    if let Some(s) = body.get("strategyJson").filter(|v| !v.is_null()) {
        strategies(s, &mut p)?;
    }
    Ok(p)
}

/// `strategyJson` (later SDKs): `{"default": 1, "ios": 4, "hw": 2, …}`, as a JSON object or
/// a string holding one.
fn strategies(v: &Value, p: &mut DeliveryPolicy) -> Result<(), TemplateError> {
    let parsed;
    let obj = match v {
        Value::Object(o) => o,
        Value::String(s) if s.trim().is_empty() => return Ok(()),
        Value::String(s) => {
            parsed = serde_json::from_str::<Value>(s)
                .map_err(|_| TemplateError("strategyJson is not a JSON object".into()))?;
            parsed
                .as_object()
                .ok_or_else(|| TemplateError("strategyJson is not a JSON object".into()))?
        }
        _ => return err("strategyJson is not a JSON object"),
    };
    for (key, value) in obj {
        let strategy = as_i64(value)
            .and_then(strategy)
            .ok_or_else(|| TemplateError(format!("strategyJson.{key} must be 1, 2, 3 or 4")))?;
        let vendor = match key.to_ascii_lowercase().as_str() {
            "default" => {
                p.strategy = Some(strategy);
                continue;
            }
            "ios" => "apns",
            "st" | "fcm" => "fcm",
            other => match vendor_name(other) {
                Some(v) => v,
                None => return err(format!("strategyJson.{key} is not a known channel")),
            },
        };
        p.vendors.entry(vendor.to_string()).or_default().strategy = Some(strategy);
    }
    Ok(())
}

/// Getui's channel strategy numbers.
pub fn strategy(n: i64) -> Option<ChannelStrategy> {
    Some(match n {
        1 => ChannelStrategy::OwnFirst,
        2 => ChannelStrategy::VendorOnly,
        3 => ChannelStrategy::OwnOnly,
        4 => ChannelStrategy::VendorFirst,
        _ => return None,
    })
}

/// A JSON boolean, or its text / 0-1 forms (environment-set values arrive as strings).
pub fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") || s == "1" => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") || s == "0" || s.is_empty() => {
            Some(false)
        }
        Value::Number(n) => n.as_i64().map(|n| n != 0),
        _ => None,
    }
}

/// A JSON integer, or one written as text.
pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Reads the `PI` of the APN actions: its APNs JSON, or the old discrete fields.
pub fn interpret_push_info(pi: &PushInfo) -> Result<Apns, TemplateError> {
    if let Some(json) = pi.apn_json.as_deref().filter(|j| !j.is_empty()) {
        return apns_notification(json);
    }
    let body = pi.message.clone().unwrap_or_default();
    if body.is_empty() {
        return err("PI has no APNs payload (apnJson)");
    }
    let mut n = Notification {
        body: text("PI.message", &body)?,
        sound: pi.sound.clone().filter(|s| !s.is_empty()),
        badge: pi.badge.as_deref().and_then(BadgeOp::parse_text),
        ..Notification::default()
    };
    if let Some(p) = pi.payload.clone().filter(|p| !p.is_empty()) {
        n.extras.insert("payload".into(), Value::String(p));
    }
    Ok(Apns {
        notification: Some(n),
        collapse_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::proto::{decode_b64, DecodeError, Transparent};
    use super::*;
    use serde_json::json;

    const NOTIFICATION: &str = "CgASC3B1c2htZXNzYWdlGgAiAkFLKgNBSUQyADoEWAFoAUIHCAEQABiQTkKHAQiQThABGJpOogYIaWNvbi5wbmeqBgCyBgFUugYEYm9kecAGAcgGAdAGAeoXEgoLbm90aWZ5U3R5bGUSATAYAeoXFAoHY2hhbm5lbBIHRGVmYXVsdBgA6hcYCgtjaGFubmVsTmFtZRIHRGVmYXVsdBgA6hcTCgxjaGFubmVsTGV2ZWwSATMYAUIICJpOEAAYrk5CGQiuThADGGTiCADqCAYKABIAGgDwCAH4CGRCBAhkEAdKAFAA";
    const REVOKE: &str = "CgASC3B1c2htZXNzYWdlGgAiAkFLKgNBSUQyADoEWAFoAUI4CAEQDBhkghQMT1NTLTAxMDFfeHl64hcNdGVybWluYXRldGFza+oXEAoFZm9yY2USBUZhbHNlGAVCBAhkEAdKAFAI";
    const TRANSMISSION: &str = "CgASC3B1c2htZXNzYWdlGgAiAkFLKgNBSUQyADrFAVgAYnh7ImsiOiAidiIsICJhcHMiOiB7ImFsZXJ0IjogeyJ0aXRsZSI6ICJhdCIsICJib2R5IjogImFiIn0sICJiYWRnZSI6IDMsICJjYXRlZ29yeSI6ICJjYXQiLCAiYXBucy1jb2xsYXBzZS1pZCI6ICJjb2xsLTEifX1oAXgBggFCCgJudBICbmMiIGludGVudDojSW50ZW50O2NvbXBvbmVudD1hL2I7ZW5kMAFCFAoLYmFkZ2VBZGROdW0SATEaAkhXQgcIARAAGK5OQhkIrk4QAxhk4ggA6ggGCgASABoA8AgA+AhkQgQIZBAHSgBQBGJVCgR0cGwxEhoKFWFwcGxpbmtJZGVudGlmaWNhdGlvbhIBMRIcCgN1cmwSFWh0dHBzOi8veC55L3o/bj1wbCZwPRILCgRuYW1lEgNib2IY4NQDIAAoAA==";

    fn decode(b64: &str) -> Transparent {
        decode_b64("clientData", b64).unwrap()
    }

    #[test]
    fn notification_vector() {
        let t = decode(NOTIFICATION);
        assert_eq!(t.action, "pushmessage");
        assert_eq!((t.app_key.as_str(), t.app_id.as_str()), ("AK", "AID"));
        let i = interpret(&t, "tc").unwrap();
        assert_eq!(i.template, Some(Template::Notification));
        let n = &i.content.notifications[&Platform::Android];
        assert_eq!(n.title.as_deref(), Some("T"));
        assert_eq!(n.body, "body");
        assert_eq!(n.click, Click::Payload("tc".into()));
        assert_eq!(n.channel_id.as_deref(), Some("Default"));
        assert_eq!(n.priority, None);
        assert_eq!(n.display["logo"], json!("icon.png"));
        assert_eq!(n.display["ring"], json!(true));
        assert_eq!(n.display["style"], json!(0));
        assert!(!i.content.notifications.contains_key(&Platform::Ios));
        assert_eq!(i.notify_id, None);
        assert_eq!(i.sms, None);
        assert_eq!(i.display_window, None);
        assert!(i.content.message.is_none());
        // Without transmission content a tap opens the app.
        let i = interpret(&t, "").unwrap();
        assert_eq!(
            i.content.notifications[&Platform::Android].click,
            Click::OpenApp
        );
    }

    #[test]
    fn revoke_vector() {
        let i = interpret(&decode(REVOKE), "").unwrap();
        assert_eq!(i.template, Some(Template::Revoke));
        assert_eq!(
            i.revoke,
            Some(Revoke {
                old_task_id: "OSS-0101_xyz".into(),
                force: false
            })
        );
        assert!(i.content.notifications.is_empty());
    }

    #[test]
    fn transmission_vector() {
        let i = interpret(&decode(TRANSMISSION), "payload-1").unwrap();
        assert_eq!(i.template, Some(Template::Transmission));
        assert_eq!(i.content.message.as_ref().unwrap().content, "payload-1");
        let ios = &i.content.notifications[&Platform::Ios];
        assert_eq!(ios.title.as_deref(), Some("at"));
        assert_eq!(ios.body, "ab");
        assert_eq!(ios.badge, Some(BadgeOp::Set(3)));
        assert_eq!(ios.category.as_deref(), Some("cat"));
        assert_eq!(ios.extras["k"], json!("v"));
        assert_eq!(i.collapse_id.as_deref(), Some("coll-1"));
        let v = i.content.vendor_notification.as_ref().unwrap();
        assert_eq!((v.title.as_deref(), v.body.as_str()), (Some("nt"), "nc"));
        assert_eq!(
            v.click,
            Click::Intent("intent:#Intent;component=a/b;end".into())
        );
        assert_eq!(v.display["vendor_ext"]["huawei"]["badgeAddNum"], json!("1"));
        let sms = i.sms.clone().unwrap().unwrap();
        assert_eq!(sms.template.as_deref(), Some("tpl1"));
        assert_eq!(sms.delay_s, 60);
        assert_eq!(sms.params["name"], json!("bob"));
        assert_eq!(sms.params["url"], json!("https://x.y/z?n=pl&p="));
        assert_eq!(sms.params["applinkIdentification"], json!("1"));
    }

    #[test]
    fn bad_inputs_are_messages_not_panics() {
        assert_eq!(
            decode_b64::<Transparent>("clientData", "@@not base64@@"),
            Err(DecodeError::Base64("clientData"))
        );
        let truncated = &NOTIFICATION[..NOTIFICATION.len() / 2];
        let e = decode_b64::<Transparent>("clientData", truncated).unwrap_err();
        assert!(e.to_string().contains("clientData"), "{e}");
        // MIME base64 with newlines decodes.
        let wrapped: String = NOTIFICATION
            .as_bytes()
            .chunks(76)
            .map(|c| format!("{}\n", std::str::from_utf8(c).unwrap()))
            .collect();
        assert_eq!(decode(&wrapped), decode(NOTIFICATION));
        // A template missing what it needs.
        let mut t = decode(NOTIFICATION);
        t.action_chain.retain(|c| c.r#type != node::NOTIFICATION);
        assert!(interpret(&t, "").unwrap_err().0.contains("no notification"));
        let mut t = decode(REVOKE);
        for c in &mut t.action_chain {
            c.taskid = None;
        }
        assert_eq!(interpret(&t, "").unwrap_err().0, "oldTaskId is not null");
        let mut t = decode(TRANSMISSION);
        t.push_info = None;
        assert!(interpret(&t, "").is_err());
        t.template_id = Some(99);
        assert!(interpret(&t, "x").unwrap_err().0.contains("templateId"));
        let mut t = decode(TRANSMISSION);
        if let Some(s) = t.sms_info.as_mut() {
            s.sms_template_id.clear();
        }
        let i = interpret(&t, "x").unwrap();
        assert_eq!(i.sms, Some(Err("smsTemplateId is not null".into())));
        // Garbage bytes that happen to be base64.
        assert!(decode_b64::<Transparent>("clientData", "AAAA////").is_err());
    }

    #[test]
    fn styles_notify_id_and_duration() {
        let mut t = decode(NOTIFICATION);
        let styled = ActionChain {
            action_id: 10000,
            r#type: node::MMSINBOX2,
            stype: Some("notification".into()),
            next: Some(10010),
            field: vec![
                f("title", "ST", field_type::STR),
                f("text", "SB", field_type::STR),
                f("is_noring", "True", field_type::BOOL),
                f("big_text", "long", field_type::STR),
                f("channelLevel", "4", field_type::INT32),
                f("notifyid", "77", field_type::STR),
            ],
            ..ActionChain::default()
        };
        t.action_chain.retain(|c| c.action_id != 10000);
        t.action_chain.push(styled);
        t.condition = vec!["duration=1700000000000.0-1700003600000.0".into()];
        let i = interpret(&t, "").unwrap();
        let n = &i.content.notifications[&Platform::Android];
        assert_eq!((n.title.as_deref(), n.body.as_str()), (Some("ST"), "SB"));
        assert_eq!(n.display["ring"], json!(false));
        assert_eq!(n.display["big_text"], json!("long"));
        assert_eq!(n.priority, Some(1));
        assert_eq!(i.notify_id.as_deref(), Some("77"));
        assert_eq!(
            i.display_window,
            Some((1_700_000_000_000, 1_700_003_600_000))
        );
        t.condition = vec!["duration=x-1".into()];
        assert!(interpret(&t, "").is_err());
    }

    fn f(k: &str, v: &str, ty: i32) -> InnerFiled {
        InnerFiled {
            key: k.into(),
            val: v.into(),
            r#type: ty,
        }
    }

    #[test]
    fn apns_auto_badge_sound_and_collapse() {
        let a = apns_notification(
            r#"{"aps":{"alert":"hi","autoBadge":"+2","sound":{"name":"s.caf","volume":2.2e-308,"critical":-9223372036854775808},"apns-collapse-id":"c"},"x":1}"#,
        )
        .unwrap();
        let n = a.notification.unwrap();
        assert_eq!(n.body, "hi");
        assert_eq!(n.badge, Some(BadgeOp::Add(2)));
        assert_eq!(n.sound.as_deref(), Some("s.caf"));
        assert_eq!(n.apns, None);
        assert_eq!(a.collapse_id.as_deref(), Some("c"));
        assert_eq!(n.extras["x"], json!(1));
        assert!(apns_notification(r#"{"aps":{"alert":"x","autoBadge":"++"}}"#).is_err());
        assert!(apns_notification("not json").is_err());
        let voip = apns_notification(r#"{"payload":"p","isVoIP":1}"#).unwrap();
        assert_eq!(voip.notification, None);
    }

    #[test]
    fn envelope() {
        let body = |v: Value| v.as_object().unwrap().clone();
        let p = envelope_policy(&body(
            json!({"isOffline": false, "offlineExpireTime": 5000}),
        ))
        .unwrap();
        assert_eq!(p.ttl_s, 0);
        let p = envelope_policy(&body(
            json!({"isOffline": true, "offlineExpireTime": 1500, "pushNetWorkType": 1}),
        ))
        .unwrap();
        assert_eq!((p.ttl_s, p.network), (2, NetworkType::Wifi));
        let p = envelope_policy(&body(
            json!({"strategyJson": "{\"default\":3,\"ios\":4,\"hw\":2}"}),
        ))
        .unwrap();
        assert_eq!(p.strategy, Some(ChannelStrategy::OwnOnly));
        assert_eq!(
            p.vendors["apns"].strategy,
            Some(ChannelStrategy::VendorFirst)
        );
        assert_eq!(
            p.vendors["huawei"].strategy,
            Some(ChannelStrategy::VendorOnly)
        );
        assert!(envelope_policy(&body(json!({"pushNetWorkType": 7}))).is_err());
        assert!(envelope_policy(&body(json!({"strategyJson": {"default": 9}}))).is_err());
    }
}
