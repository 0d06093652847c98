//! The JPush v3 push object (jpush-v3.md §2): parsed, validated, translated into a core Push.

use crate::fields::{
    as_object, bool_of, check_object, int_of, object_schema, opt, req, Checked, Kind::*, ObjSpec,
    PushError,
};
use pigeon_core::names::check_name;
use pigeon_core::{
    Activity, ApnsFields, Audience, AudienceExpr, BadgeOp, ChannelStrategy, Click, FcmChoice,
    IdempotencyKey, Message, Notification, Platform, PlatformSet, Push, PushCallback, SmsFallback,
    VendorPolicy, DEFAULT_TIME_TO_LIVE_S, MAX_BADGE, MAX_TIME_TO_LIVE_S,
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

/// The platforms a push may name, from the core model's own list.
const PLATFORM_NAMES: [&str; Platform::ALL.len()] = {
    let mut names = [""; Platform::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = Platform::ALL[i].as_str();
        i += 1;
    }
    names
};

/// The push object. Its checks and the `Push` schema of `/openapi.json` both come from this
/// table and the tables it nests.
pub const PUSH: ObjSpec = ObjSpec::new(
    "Push",
    &[
        req("platform", AllOrList(&PLATFORM_NAMES)).doc("\"all\", or the platforms to push to"),
        req("audience", AllOr(&AUDIENCE)).doc("\"all\" (broadcast), or whom to push to"),
        opt("notification", Obj(&NOTIFICATION)).doc("shown by the system or SDK"),
        opt("message", Obj(&MESSAGE)).doc("a custom message handed to the app"),
        opt("live_activity", Object).doc("iOS Live Activity: not supported by this server yet"),
        opt("inapp_message", Obj(&INAPP)).doc("needs notification, not with message"),
        opt("notification_3rd", Object)
            .doc("vendor-channel notification (jpush-v3 §2.7), kept as given"),
        opt("sms_message", Obj(&SMS)).doc("an SMS to devices the push has not reached in time"),
        opt("options", Obj(&OPTIONS)),
        opt("callback", Obj(&CALLBACK)).doc("receipts of this push to a URL of its own"),
        opt("cid", StrMax(128)).doc("from GET /v3/push/cid: a retry with the same cid pushes once"),
    ],
)
.doc(
    "A JPush v3 push object. Size limits (400/1005): \"ios\":{..} at most 2000 bytes; \
     notification.android plus message at most 4000 bytes.",
)
.any_of(&["notification", "message"]);

const NOTIFICATION: ObjSpec = ObjSpec::new(
    "Notification",
    &[
        opt("alert", Str).doc("the text for every platform without an alert of its own"),
        opt("android", Obj(&ANDROID)),
        opt("ios", Obj(&IOS)),
        opt("hmos", Obj(&HMOS)),
        opt("quickapp", Obj(&QUICKAPP)),
        opt("voip", Object).doc("iOS VoIP: any object, handed to PushKit"),
        opt("winphone", Obj(&WINPHONE)),
        opt("web", Obj(&WEB)).doc("Pigeon's section for web devices"),
    ],
)
.doc(
    "Needs an alert, or a section for one of the push's platforms; android, ios, hmos, \
     quickapp and winphone sections need their own alert when there is no notification.alert.",
);

const ANDROID: ObjSpec = ObjSpec::new(
    "NotificationAndroid",
    &[
        opt("alert", Str),
        opt("title", Str),
        opt("builder_id", Int(0, i32::MAX as i64)),
        opt("channel_id", StrMax(1000)),
        opt("category", Str),
        opt("priority", Int(-2, 2)),
        opt("style", Int(0, 3)).doc("0 default, 1 big_text, 2 inbox, 3 big_pic_path"),
        opt("alert_type", Int(-1, 7)),
        opt("big_text", Str),
        opt("inbox", Object),
        opt("big_pic_path", Str),
        opt("extras", Object),
        opt("large_icon", Str),
        opt("small_icon_uri", Str),
        opt("icon_bg_color", Str),
        opt("intent", Object).doc("{\"url\": \"..\"}"),
        opt("uri_activity", Str),
        opt("uri_action", Str),
        opt("badge_add_num", Int(1, 99)),
        opt("badge_set_num", Int(0, 99)),
        opt("badge_class", Str),
        opt("sound", Str),
        opt("show_begin_time", Str),
        opt("show_end_time", Str),
        opt("display_foreground", OneOf(&["0", "1"])),
        opt("custom_buttons", Objects),
        opt("mipns_content_forshort", StrMax(128 * 4)),
        opt("oppns_content_forshort", StrMax(200 * 4)),
        opt("vpns_content_forshort", StrMax(100 * 4)),
        opt("mzpns_content_forshort", StrMax(100 * 4)),
    ],
);

const IOS: ObjSpec = ObjSpec::new(
    "NotificationIos",
    &[
        opt("alert", StrOrObj(&IOS_ALERT)),
        opt("sound", StrOrObject),
        opt("badge", Badge).doc("N sets, +N / -N change, 0 clears"),
        opt("content-available", Bool),
        opt("mutable-content", Bool),
        opt("category", Str),
        opt("extras", Object),
        opt("thread-id", Str),
        opt(
            "interruption-level",
            OneOf(&["active", "critical", "passive", "time-sensitive"]),
        ),
    ],
);

const IOS_ALERT: ObjSpec = ObjSpec::new(
    "NotificationIosAlert",
    &[
        opt("title", Str),
        opt("subtitle", Str),
        opt("body", Str),
        opt("launch-image", Str),
        opt("title-loc-key", Str),
        opt("title-loc-args", Strings),
        opt("subtitle-loc-key", Str),
        opt("subtitle-loc-args", Strings),
        opt("loc-key", Str),
        opt("loc-args", Strings),
        opt("action-loc-key", Str),
    ],
);

const HMOS: ObjSpec = ObjSpec::new(
    "NotificationHmos",
    &[
        opt("alert", Str).doc("not empty"),
        opt("title", Str),
        opt("category", Str),
        opt("large_icon", Str),
        opt("intent", Object).doc("{\"url\": \"..\"}"),
        opt("badge_add_num", Int(1, 99)),
        opt("badge_set_num", Int(0, 99)),
        opt("test_message", Bool),
        opt("receipt_id", Str),
        opt("extras", Object),
        opt("style", Int(0, 2)),
        opt("inbox", Object),
        opt("push_type", Int(0, 10))
            .doc("0, 1, 2, 7 or 10; 2 and 10 need extra_data, 1 and 7 need hm_payload"),
        opt("extra_data", Str),
        opt("display_foreground", OneOf(&["0", "1"])),
        opt("sound", Str),
        opt("sound_duration", Int(1, 60)),
        opt("hm_payload", Object),
    ],
);

const QUICKAPP: ObjSpec = ObjSpec::new(
    "NotificationQuickapp",
    &[
        opt("alert", Str),
        req("title", Str),
        req("page", Str),
        opt("extras", Object),
    ],
);
const WINPHONE: ObjSpec = ObjSpec::new(
    "NotificationWinphone",
    &[
        opt("alert", Str),
        opt("title", Str),
        opt("_open_page", Str),
        opt("extras", Object),
    ],
);
/// Pigeon's own section for web devices.
const WEB: ObjSpec = ObjSpec::new(
    "NotificationWeb",
    &[
        opt("alert", Str),
        opt("title", Str),
        opt("url", Str),
        opt("icon", Str),
        opt("extras", Object),
    ],
);

const MESSAGE: ObjSpec = ObjSpec::new(
    "Message",
    &[
        req("msg_content", Str),
        opt("title", Str),
        opt("content_type", Str),
        opt("extras", Object),
        opt("alternate_title", Str),
        opt("alternate_content", Str),
    ],
);

const INAPP: ObjSpec = ObjSpec::new("InappMessage", &[opt("inapp_message", Bool)]);

const OPTIONS: ObjSpec = ObjSpec::new(
    "Options",
    &[
        opt("sendno", Int(i64::MIN, i64::MAX)).doc("echoed back in the answer, as a string"),
        opt("time_to_live", Int(0, MAX_TIME_TO_LIVE_S as i64))
            .doc("seconds an offline device may still get the push; 0: online devices only"),
        opt("override_msg_id", Int(1, i64::MAX)),
        opt("apns_production", Bool),
        opt("apns_collapse_id", StrMax(64)),
        opt("big_push_duration", Int(0, 1400)).doc("minutes to pace the push over"),
        opt("third_party_channel", Obj(&THIRD_PARTY_CHANNEL)),
        opt("classification", Int(0, 1)),
        opt("target_event", Strings),
        opt("test_message", Bool),
        opt("receipt_id", Str),
        opt("active_push", Bool),
        opt("need_backup", Bool).doc("needs active_push (else 400/1035)"),
        opt("business_operation_code", Str),
        opt("notification_3rd_ver", OneOf(&["v1", "v2"])),
        opt("test_model", Bool),
        opt("auto_truncation", Bool),
        opt("mkt_enable", Bool),
        opt("notification_switch_filter", Bool),
        opt("alternate_set", Any),
        opt("geofence", Any),
        opt("portal_extra", Any),
    ],
);

const THIRD_PARTY_CHANNEL: ObjSpec = ObjSpec::new(
    "ThirdPartyChannel",
    &[
        opt("xiaomi", Obj(&VENDOR_CHANNEL)),
        opt("huawei", Obj(&VENDOR_CHANNEL)),
        opt("honor", Obj(&VENDOR_CHANNEL)),
        opt("meizu", Obj(&VENDOR_CHANNEL)),
        opt("oppo", Obj(&VENDOR_CHANNEL)),
        opt("vivo", Obj(&VENDOR_CHANNEL)),
        opt("fcm", Obj(&VENDOR_CHANNEL)),
        opt("nio", Obj(&VENDOR_CHANNEL)),
        opt("asus", Obj(&VENDOR_CHANNEL)),
        opt("hmos", Obj(&VENDOR_CHANNEL)),
    ],
)
.doc("Vendor routing and attributes per vendor");

/// A vendor's routing object is kept as given; only its enum fields are checked.
const VENDOR_CHANNEL: ObjSpec = ObjSpec::new(
    "VendorChannel",
    &[
        opt(
            "distribution",
            OneOf(&["first_ospush", "ospush", "jpush", "secondary_push"]),
        ),
        opt(
            "distribution_fcm",
            OneOf(&[
                "jpush",
                "fcm",
                "pns",
                "secondary_fcm_push",
                "secondary_pns_push",
            ]),
        ),
        opt(
            "distribution_customize",
            OneOf(&["jpush", "first_ospush", "secondary_push"]),
        ),
        opt("importance", OneOf(&["LOW", "NORMAL", "HIGH"])),
    ],
)
.open();

/// Longest SMS text, in characters as JPush counts them (every character one).
pub const MAX_SMS_CHARS: usize = 480;

/// Either form of JPush's SMS: text (`content`, the push API's form) or a template
/// (`temp_id` with `temp_para`, the SDKs' `smsmessage` helper).
const SMS: ObjSpec = ObjSpec::new(
    "SmsMessage",
    &[
        req("delay_time", Int(0, 86_400))
            .doc("seconds to wait for the push to be delivered; 0 sends at once"),
        opt("content", CharsMax(MAX_SMS_CHARS)).doc("the SMS text"),
        opt("temp_id", Int(1, i64::MAX)).doc("an SMS template id, for providers that use them"),
        opt("temp_para", Object).doc("the template's parameters"),
        opt("signid", Int(0, i64::MAX)),
        opt("active_filter", Bool),
    ],
)
.doc("SMS fallback: needs content or temp_id")
.any_of(&["content", "temp_id"]);

/// Longest `callback.url`.
const MAX_CALLBACK_URL: usize = 1024;

const CALLBACK: ObjSpec = ObjSpec::new(
    "PushCallback",
    &[
        opt("url", StrMax(MAX_CALLBACK_URL)).doc("http(s), not a private address"),
        opt("params", Object),
        opt("type", Int(1, 15)).doc("bits: delivered 1, clicked 2, not delivered 4, sent 8"),
    ],
);

const NAME_RULE: &str =
    "each at most 40 bytes of letters, digits, _, CJK characters and @!#$&*+=.|￥";

pub(crate) const AUDIENCE: ObjSpec = ObjSpec::new(
    "Audience",
    &[
        opt("tag", StringsMax(MAX_AUDIENCE_TAGS)).doc(NAME_RULE),
        opt("tag_and", StringsMax(MAX_AUDIENCE_TAGS)).doc(NAME_RULE),
        opt("tag_not", StringsMax(MAX_AUDIENCE_TAGS)).doc(NAME_RULE),
        opt("alias", StringsMax(MAX_AUDIENCE_IDS)).doc(NAME_RULE),
        opt("registration_id", StringsMax(MAX_AUDIENCE_IDS)),
        opt("segment", StringsMax(1))
            .doc("one segment id (POST /v3/segments), ANDed with the other keys"),
        opt("abtest", StringsMax(1))
            .doc("one A/B test id (POST /v3/abtests): each device gets its variant's content"),
        opt("live_activity_id", Any).doc("not supported by this server yet"),
        opt("file", Object).doc("{\"file_id\": \"..\"}, only through POST /v3/push/file"),
    ],
)
.doc(
    "Devices that match every key given (tag: any of, tag_and: all of, tag_not: none of); \
     at least one of tag, tag_and, tag_not, alias, registration_id non-empty.",
);

/// Adds the push object's JSON Schema (`Push`, and one schema per table it nests) to
/// `components` and answers the `$ref` to it.
pub fn push_schema(components: &mut Map<String, Value>) -> Value {
    object_schema(&PUSH, components)
}

/// Parses and validates a JPush push object into a core [`Push`] (msg_id and sent_ms unset).
pub fn parse_push(body: &Value) -> Checked<Push> {
    let top = body
        .as_object()
        .ok_or_else(|| PushError::invalid("the push must be a JSON object"))?;
    // Before the table's "needs notification or message", which would mislead here.
    if top.contains_key("live_activity") {
        return Err(PushError::invalid(
            "live_activity pushes are not supported yet",
        ));
    }
    // Every key, type, range and required field of the push and the objects it nests; what
    // follows are the rules a table cannot say.
    check_object("", top, &PUSH)?;

    let platforms = parse_platform(top.get("platform").unwrap_or(&Value::Null))?;
    let audience = parse_audience(top.get("audience").unwrap_or(&Value::Null))?;

    let notifications = match top.get("notification") {
        Some(n) => parse_notification(n, platforms)?,
        None => pigeon_core::Notifications::new(),
    };
    let message = top.get("message").map(parse_message).transpose()?;
    if top.contains_key("inapp_message") && (message.is_some() || notifications.is_empty()) {
        return Err(PushError::invalid(
            "inapp_message needs notification and cannot go with message",
        ));
    }
    check_sizes(top)?;

    let mut push = Push::new(platforms, audience);
    push.content.notifications = notifications;
    push.content.message = message;
    push.content.vendor_notification = top
        .get("notification_3rd")
        .map(|v| Box::new(vendor_notification(v)));
    if let Some(o) = top.get("options") {
        parse_options(o, &mut push)?;
    }
    if let Some(cb) = top.get("callback") {
        push.callback = Some(parse_callback(cb)?);
    }
    push.policy.sms = top.get("sms_message").map(parse_sms);
    push.idempotency = top
        .get("cid")
        .and_then(Value::as_str)
        .map(|key| IdempotencyKey {
            key: key.to_string(),
            issued_only: true,
        });
    Ok(push)
}

/// The platforms of a `platform` the table has checked.
fn parse_platform(v: &Value) -> Checked<PlatformSet> {
    match v {
        Value::String(s) if s == "all" => Ok(PlatformSet::all()),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .and_then(Platform::parse)
                    .ok_or_else(|| PushError::invalid(format!("platform {i} is not a platform")))
            })
            .collect(),
        _ => Err(PushError::invalid(
            "platform must be \"all\" or a non-empty array of platforms",
        )),
    }
}

pub(crate) fn parse_audience(v: &Value) -> Checked<Audience> {
    let obj = match v {
        Value::String(s) if s == "all" => return Ok(Audience::All),
        Value::Object(o) => o,
        _ => return Err(PushError::invalid("audience must be \"all\" or an object")),
    };
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
            "segment" | "abtest" if items.len() > 1 => {
                return Err(PushError::invalid(format!(
                    "{path}: one {key} per push, got {}",
                    items.len()
                )))
            }
            "segment" => expr.segment = items.into_iter().next(),
            "abtest" => expr.abtest = items.into_iter().next(),
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
                for a in &items {
                    check_name("alias", a)
                        .map_err(|e| PushError::invalid(format!("{path}: {e}")))?;
                }
                expr.alias = items;
            }
            "registration_id" => {
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
            "audience must name at least one of tag, tag_and, tag_not, alias, registration_id, segment, abtest",
        ));
    }
    Ok(Audience::Expr(expr))
}

fn parse_notification(v: &Value, platforms: PlatformSet) -> Checked<pigeon_core::Notifications> {
    let obj = as_object("notification", v)?;
    let alert = obj.get("alert").cloned();
    let mut sections = std::collections::BTreeMap::new();
    for (name, value) in obj {
        if name == "alert" {
            continue;
        }
        let path = format!("notification.{name}");
        let section = as_object(&path, value)?;
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
    Ok(platforms
        .iter()
        .filter_map(|p| {
            let section = sections.get(p.as_str());
            if section.is_none() && alert.is_none() {
                return None;
            }
            let empty = Map::new();
            Some((
                p,
                notification(p, alert.as_ref(), section.unwrap_or(&empty)),
            ))
        })
        .collect())
}

/// One platform's notification: its section, with the push's shared `alert` where the
/// section has none. The fields Pigeon reads become typed; the rest are shown as given.
fn notification(
    platform: Platform,
    alert: Option<&Value>,
    section: &Map<String, Value>,
) -> Notification {
    let mut n = Notification::default();
    let text = |k: &str| section.get(k).and_then(Value::as_str).map(String::from);
    let mut apns = ApnsFields::default();
    match section.get("alert").or(alert) {
        Some(Value::String(s)) => n.body = s.clone(),
        Some(Value::Object(a)) => {
            n.body = a
                .get("body")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into();
            n.title = a.get("title").and_then(Value::as_str).map(String::from);
            apns.alert = Some(a.clone());
        }
        _ => {}
    }
    if let Some(t) = text("title") {
        n.title = Some(t);
    }
    if let Some(Value::Object(e)) = section.get("extras") {
        n.extras = e.clone();
    }
    match section.get("sound") {
        Some(Value::String(s)) => n.sound = Some(s.clone()),
        Some(Value::Object(o)) => apns.sound = Some(o.clone()),
        _ => {}
    }
    n.channel_id = text("channel_id");
    n.category = text("category");
    n.badge_class = text("badge_class");
    n.priority = section
        .get("priority")
        .and_then(int_of)
        .map(|p| p.clamp(-2, 2) as i8);
    n.badge = match platform {
        Platform::Ios => section.get("badge").and_then(BadgeOp::parse),
        _ => {
            let num = |k: &str| section.get(k).and_then(int_of);
            match (num("badge_set_num"), num("badge_add_num")) {
                (Some(v), _) => Some(BadgeOp::Set(v.clamp(0, MAX_BADGE as i64) as u32)),
                (None, Some(v)) => Some(BadgeOp::Add(v)),
                (None, None) => None,
            }
        }
    };
    if let Some(url) = section
        .get("intent")
        .and_then(|i| i.get("url"))
        .and_then(Value::as_str)
    {
        n.click = Click::Intent(url.to_string());
    } else if let (Platform::Web, Some(url)) = (platform, text("url")) {
        n.click = Click::Url(url);
    }
    let (class, action) = (text("uri_activity"), text("uri_action"));
    if class.is_some() || action.is_some() {
        n.activity = Some(Box::new(Activity { class, action }));
    }
    let flag = |k: &str| {
        section
            .get(k)
            .is_some_and(|v| bool_of(v) == Some(true) || int_of(v) == Some(1))
    };
    apns.content_available = flag("content-available");
    apns.mutable_content = flag("mutable-content");
    apns.thread_id = text("thread-id");
    apns.interruption_level = text("interruption-level");
    if platform == Platform::Ios && apns != ApnsFields::default() {
        n.apns = Some(Box::new(apns));
    }
    const READ: [&str; 17] = [
        "alert",
        "title",
        "extras",
        "sound",
        "channel_id",
        "category",
        "badge_class",
        "priority",
        "badge",
        "badge_set_num",
        "badge_add_num",
        "intent",
        "uri_activity",
        "uri_action",
        "content-available",
        "mutable-content",
        "thread-id",
    ];
    for (k, v) in section {
        let read = READ.contains(&k.as_str())
            || k == "interruption-level"
            || (platform == Platform::Web && k == "url");
        if !read {
            n.display.insert(k.clone(), v.clone());
        }
    }
    n
}

/// `notification_3rd` (jpush-v3 §2.7): what vendor channels show for a custom message.
fn vendor_notification(v: &Value) -> Notification {
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(String::from);
    let (class, action) = (text("uri_activity"), text("uri_action"));
    Notification {
        title: text("title"),
        body: text("content").unwrap_or_default(),
        extras: v
            .get("extras")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        click: match v
            .get("intent")
            .and_then(|i| i.get("url"))
            .and_then(Value::as_str)
        {
            Some(url) => Click::Intent(url.into()),
            None => Click::OpenApp,
        },
        activity: (class.is_some() || action.is_some())
            .then(|| Box::new(Activity { class, action })),
        sound: text("sound"),
        channel_id: text("channel_id"),
        badge: v.get("badge_add_num").and_then(int_of).map(BadgeOp::Add),
        badge_class: text("badge_class"),
        ..Default::default()
    }
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
    if name == "hmos" {
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

fn parse_message(v: &Value) -> Checked<Message> {
    let m = as_object("message", v)?;
    let text = |k: &str| m.get(k).and_then(Value::as_str).map(String::from);
    Ok(Message {
        content: text("msg_content").unwrap_or_default(),
        title: text("title"),
        content_type: text("content_type"),
        extras: m
            .get("extras")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    })
}

fn parse_callback(v: &Value) -> Checked<PushCallback> {
    let url = v.get("url").and_then(Value::as_str);
    if let Some(url) = url {
        pigeon_callbacks::check_endpoint(url, &[])
            .map_err(|m| PushError::invalid(format!("callback.url: {m}")))?;
    }
    Ok(PushCallback {
        url: url.map(String::from),
        params: v.get("params").and_then(Value::as_object).cloned(),
        kinds: v.get("type").and_then(int_of).map(|t| t.clamp(0, 15) as u8),
    })
}

/// `sms_message`, text or template (the table checked its fields).
pub(crate) fn parse_sms(v: &Value) -> SmsFallback {
    SmsFallback {
        delay_s: v.get("delay_time").and_then(int_of).unwrap_or(0).max(0) as u64,
        text: v.get("content").and_then(Value::as_str).map(String::from),
        template: v.get("temp_id").and_then(int_of).map(|t| t.to_string()),
        params: v
            .get("temp_para")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        sign_id: v.get("signid").and_then(int_of),
    }
}

fn parse_options(v: &Value, push: &mut Push) -> Checked<()> {
    let obj = as_object("options", v)?;
    let int = |k: &str| obj.get(k).and_then(int_of);
    if obj.get("need_backup").and_then(bool_of) == Some(true)
        && obj.get("active_push").and_then(bool_of) != Some(true)
    {
        return Err(PushError {
            code: 1035,
            message: "options.need_backup requires options.active_push".into(),
        });
    }
    push.labels.sendno = int("sendno");
    let policy = &mut push.policy;
    policy.ttl_s = int("time_to_live")
        .map(|t| t as u64)
        .unwrap_or(DEFAULT_TIME_TO_LIVE_S);
    policy.apns_production = obj.get("apns_production").and_then(bool_of).unwrap_or(true);
    policy.collapse_id = obj
        .get("apns_collapse_id")
        .and_then(Value::as_str)
        .map(String::from);
    policy.overrides = int("override_msg_id").map(|m| m as u64);
    policy.pace.minutes = int("big_push_duration").map(|m| m as u64);
    if let Some(Value::Object(channels)) = obj.get("third_party_channel") {
        for (vendor, fields) in channels {
            if let Value::Object(fields) = fields {
                policy.vendors.insert(vendor.clone(), vendor_policy(fields));
            }
        }
    }
    Ok(())
}

/// One vendor's `third_party_channel` object: its `distribution` as a channel strategy,
/// `distribution_fcm` as the FCM choice, the attributes Pigeon reads, the rest as given.
fn vendor_policy(fields: &Map<String, Value>) -> VendorPolicy {
    use ChannelStrategy::*;
    let text = |k: &str| fields.get(k).and_then(Value::as_str);
    let mut v = VendorPolicy {
        strategy: match text("distribution") {
            Some("jpush") => Some(OwnOnly),
            Some("ospush") => Some(VendorOnly),
            Some("first_ospush") => Some(VendorFirst),
            Some("secondary_push") => Some(OwnFirst),
            _ => None,
        },
        with_fcm: match text("distribution_fcm") {
            Some("fcm") => Some(FcmChoice::Fcm(VendorOnly)),
            Some("secondary_fcm_push") => Some(FcmChoice::Fcm(OwnFirst)),
            Some("jpush") => Some(FcmChoice::Maker(OwnOnly)),
            Some("pns") => Some(FcmChoice::Maker(VendorOnly)),
            Some("secondary_pns_push") => Some(FcmChoice::Maker(OwnFirst)),
            _ => None,
        },
        channel_id: text("channel_id").map(String::from),
        importance: text("importance").map(String::from),
        category: text("category").map(String::from),
        classification: fields.get("classification").and_then(int_of),
        fields: Map::new(),
    };
    const READ: [&str; 6] = [
        "distribution",
        "distribution_fcm",
        "channel_id",
        "importance",
        "category",
        "classification",
    ];
    for (k, value) in fields {
        if !READ.contains(&k.as_str()) {
            v.fields.insert(k.clone(), value.clone());
        }
    }
    v
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
        assert_eq!(p.labels.sendno, Some(7));
        assert_eq!(p.policy.ttl_s, 0);
        assert!(!p.policy.apns_production);
        let Audience::Expr(e) = &p.audience else {
            panic!("expected expr")
        };
        assert_eq!(
            (e.tag.len(), e.tag_not.len(), e.registration_id.len()),
            (1, 1, 0)
        );
        assert_eq!(p.notification_for(Platform::Android).unwrap().body, "hi");
        assert_eq!(
            p.idempotency
                .as_ref()
                .map(|k| (k.key.as_str(), k.issued_only)),
            Some(("key-uuid", true))
        );
        let ios = p.notification_for(Platform::Ios).unwrap();
        assert_eq!(ios.badge, Some(BadgeOp::Add(1)));
        assert!(ios.apns.as_ref().unwrap().content_available);
        let sms = p.policy.sms.as_ref().unwrap();
        assert_eq!((sms.delay_s, sms.template.as_deref()), (60, Some("5")));
        assert_eq!(p.content.message.as_ref().unwrap().content, "m");
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
                json!({"platform": "all", "audience": {"segment": ["s", "t"]}, "message": {"msg_content": "x"}})
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

    /// Every table reachable from the push object, each once.
    fn tables(spec: &'static ObjSpec, out: &mut Vec<&'static ObjSpec>) {
        if out.iter().any(|t| t.name == spec.name) {
            return;
        }
        out.push(spec);
        for f in spec.fields {
            if let Obj(t) | StrOrObj(t) | AllOr(t) = f.kind {
                tables(t, out);
            }
        }
    }

    #[test]
    fn every_field_the_parser_knows_is_in_the_schema() {
        let mut components = Map::new();
        assert_eq!(
            push_schema(&mut components),
            json!({"$ref": "#/components/schemas/Push"})
        );
        let mut all = vec![];
        tables(&PUSH, &mut all);
        assert!(all.len() >= 15, "{} tables", all.len());
        for t in all {
            let schema = &components[t.name];
            for f in t.fields {
                assert!(
                    schema["properties"][f.name].is_object(),
                    "{}.{} is not in the schema",
                    t.name,
                    f.name
                );
                let required = schema["required"]
                    .as_array()
                    .is_some_and(|r| r.contains(&json!(f.name)));
                assert_eq!(required, f.required, "{}.{}", t.name, f.name);
            }
            let properties = schema["properties"].as_object().map_or(0, |p| p.len());
            assert_eq!(
                properties,
                t.fields.len(),
                "{} has extra properties",
                t.name
            );
            assert_eq!(schema["additionalProperties"] == json!(false), !t.open);
        }
        let push = &components["Push"];
        assert_eq!(push["required"], json!(["platform", "audience"]));
        for key in [
            "platform",
            "audience",
            "notification",
            "message",
            "sms_message",
            "options",
        ] {
            assert!(push["properties"][key].is_object(), "{key}");
        }
        let sms = &components["SmsMessage"];
        assert_eq!(sms["properties"]["content"]["maxLength"], json!(480));
        assert_eq!(
            sms["anyOf"],
            json!([{"required": ["content"]}, {"required": ["temp_id"]}])
        );
    }

    #[test]
    fn the_seeds_sms_forms() {
        let base = |sms: Value| {
            json!({"platform": "all", "audience": "all",
                   "notification": {"alert": "hi"}, "sms_message": sms})
        };
        // Push API documentation's form: text and a delay.
        assert!(parse_push(&base(
            json!({"content": "sms msg content", "delay_time": 3600})
        ))
        .is_ok());
        // The SDKs' template form.
        assert!(parse_push(&base(json!({"temp_id": 5, "delay_time": 0}))).is_ok());
        let e = parse_push(&base(json!({"delay_time": 5}))).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (1002, "sms_message needs content or temp_id")
        );
        let e = parse_push(&base(json!({"content": "x"}))).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (1002, "sms_message.delay_time is required")
        );
        // 480 characters, each a CJK character of 3 bytes: accepted; one more is not.
        let cjk = |n: usize| "短".repeat(n);
        assert!(parse_push(&base(json!({"content": cjk(480), "delay_time": 0}))).is_ok());
        let e = parse_push(&base(json!({"content": cjk(481), "delay_time": 0}))).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                1003,
                "sms_message.content is 481 characters, the limit is 480"
            )
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
