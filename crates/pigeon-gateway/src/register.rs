//! `POST /v1/devices/register` (protocol §1).

use crate::Gateway;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use pigeon_core::names::check_name;
use pigeon_core::{error_json, Platform};
use pigeon_engine::{EngineError, Registration};
use serde_json::{json, Map, Value};

/// Most tags one device may carry.
pub const MAX_DEVICE_TAGS: usize = 1000;
const VENDOR_TOKENS: [&str; 8] = [
    "apns", "fcm", "huawei", "honor", "xiaomi", "oppo", "vivo", "meizu",
];
const INFO_FIELDS: [&str; 4] = ["model", "os_version", "app_version", "sdk"];

type Answer = (StatusCode, Json<Value>);

fn bad(message: impl Into<String>) -> Answer {
    (
        StatusCode::BAD_REQUEST,
        Json(error_json(1003, &message.into())),
    )
}

pub(crate) async fn register(State(gw): State<Gateway>, body: Bytes) -> Answer {
    let reg = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Err(e) = check_webpush_address(&reg, &gw.engine.private_networks().webpush_policy()) {
        return e;
    }
    match gw.engine.register(reg).await {
        Ok(r) => (
            StatusCode::OK,
            Json(json!({"registration_id": r.registration_id, "device_secret": r.device_secret})),
        ),
        Err(EngineError::UnknownApp) => (
            StatusCode::UNAUTHORIZED,
            Json(error_json(1008, "unknown app_key")),
        ),
        Err(EngineError::BadCredentials) => (
            StatusCode::UNAUTHORIZED,
            Json(error_json(
                1004,
                "registration_id and device_secret do not match a device",
            )),
        ),
        Err(EngineError::Invalid(m)) => bad(m),
        Err(e @ EngineError::AliasFull(_)) => bad(e.to_string()),
        Err(e) => {
            tracing::error!(error = %e, "registration failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(error_json(1000, "internal error, retry")),
            )
        }
    }
}

fn parse(body: &[u8]) -> Result<Registration, Answer> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(o) = v else {
        return Err(bad("request body must be a JSON object"));
    };
    let mut reg = Registration {
        app_key: req_str(&o, "app_key")?.ok_or_else(|| bad("app_key is required"))?,
        ..Registration::default()
    };
    if let Some(p) = req_str(&o, "platform")? {
        let platform = Platform::parse(&p)
            .filter(|p| p.is_device_platform())
            .ok_or_else(|| {
                bad(format!(
                    "platform {p:?} is not one of android, ios, hmos, quickapp, web"
                ))
            })?;
        reg.platform = Some(platform);
    }
    if let Some(i) = req_str(&o, "install_id")? {
        if !(16..=64).contains(&i.chars().count()) {
            return Err(bad("install_id must be 16 to 64 characters"));
        }
        reg.install_id = Some(i);
    }
    match (
        req_str(&o, "registration_id")?,
        req_str(&o, "device_secret")?,
    ) {
        (Some(r), Some(s)) => reg.existing = Some((r, s)),
        (None, None) => {
            if reg.platform.is_none() {
                return Err(bad("platform is required"));
            }
        }
        _ => return Err(bad("registration_id and device_secret go together")),
    }
    if let Some(t) = o.get("push_tokens") {
        reg.push_tokens = Some(push_tokens(t)?);
    }
    match o.get("apns_production") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => reg.apns_production = Some(*b),
        Some(_) => return Err(bad("apns_production must be true or false")),
    }
    match o.get("alias") {
        None => {}
        Some(Value::Null) => reg.alias = Some(None),
        Some(Value::String(a)) if a.is_empty() => reg.alias = Some(None),
        Some(Value::String(a)) => {
            check_name("alias", a).map_err(bad)?;
            reg.alias = Some(Some(a.clone()));
        }
        Some(_) => return Err(bad("alias must be a string or null")),
    }
    if let Some(t) = o.get("tags") {
        reg.tags = Some(tags(t).map_err(bad)?);
    }
    match o.get("mobile") {
        None => {}
        Some(Value::Null) => reg.mobile = Some(None),
        Some(Value::String(m)) if m.is_empty() => reg.mobile = Some(None),
        Some(Value::String(m)) => reg.mobile = Some(Some(mobile(m)?)),
        Some(_) => return Err(bad("mobile must be a string or null")),
    }
    match o.get("region") {
        None => {}
        Some(Value::Null) => reg.region = Some(None),
        Some(Value::String(r)) if r.is_empty() => reg.region = Some(None),
        Some(Value::String(r)) => {
            pigeon_core::names::check_region(r).map_err(bad)?;
            reg.region = Some(Some(r.clone()));
        }
        Some(_) => return Err(bad("region must be a string or null")),
    }
    for field in INFO_FIELDS {
        if let Some(s) = req_str(&o, field)? {
            if s.len() > 64 {
                return Err(bad(format!("{field} is longer than 64 bytes")));
            }
            reg.info.insert(field.into(), Value::String(s));
        }
    }
    Ok(reg)
}

fn req_str(o: &Map<String, Value>, key: &str) -> Result<Option<String>, Answer> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("{key} must be a string"))),
    }
}

/// Tags a device carries: strings, each a valid name, at most [`MAX_DEVICE_TAGS`]. The error
/// says what is wrong.
pub(crate) fn tags(v: &Value) -> Result<Vec<String>, String> {
    let Value::Array(items) = v else {
        return Err("tags must be an array of strings".into());
    };
    if items.len() > MAX_DEVICE_TAGS {
        return Err(format!("a device has at most {MAX_DEVICE_TAGS} tags"));
    }
    items
        .iter()
        .map(|t| match t {
            Value::String(s) => check_name("tag", s).map(|_| s.clone()),
            _ => Err("tags must be an array of strings".into()),
        })
        .collect()
}

fn mobile(m: &str) -> Result<String, Answer> {
    let digits = m.strip_prefix('+').unwrap_or(m);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!(
            "mobile {m:?} is not a phone number (digits, optional leading +)"
        )));
    }
    Ok(m.to_string())
}

/// A Web Push endpoint is where the server will post: its host as written must be public
/// (unless the operator allows private networks). Names are not resolved here — registration
/// stays fast — but again, on the addresses connected to, when sending.
fn check_webpush_address(
    reg: &Registration,
    policy: &pigeon_core::net::AddressPolicy,
) -> Result<(), Answer> {
    let Some(endpoint) = reg
        .push_tokens
        .as_ref()
        .and_then(|t| t.get("webpush"))
        .and_then(|w| w.get("endpoint"))
        .and_then(Value::as_str)
    else {
        return Ok(());
    };
    let url = url::Url::parse(endpoint)
        .map_err(|e| bad(format!("push_tokens.webpush.endpoint is not a URL: {e}")))?;
    pigeon_core::net::check_literal(&url, "push_tokens.webpush.endpoint", policy).map_err(bad)
}

fn push_tokens(v: &Value) -> Result<Map<String, Value>, Answer> {
    let Value::Object(o) = v else {
        return Err(bad("push_tokens must be an object"));
    };
    for (k, val) in o {
        if VENDOR_TOKENS.contains(&k.as_str()) {
            match val {
                Value::String(s) if !s.is_empty() && s.len() <= 4096 => {}
                _ => return Err(bad(format!("push_tokens.{k} must be a non-empty string"))),
            }
        } else if k == "webpush" {
            let ok = val
                .get("endpoint")
                .and_then(Value::as_str)
                .is_some_and(|e| {
                    (e.starts_with("https://") || e.starts_with("http://")) && e.len() <= 2048
                })
                && val
                    .pointer("/keys/p256dh")
                    .and_then(Value::as_str)
                    .is_some()
                && val.pointer("/keys/auth").and_then(Value::as_str).is_some();
            if !ok {
                return Err(bad("push_tokens.webpush must be {\"endpoint\":\"https://..\",\"keys\":{\"p256dh\":..,\"auth\":..}} (an http(s) endpoint of at most 2048 bytes)"));
            }
        } else {
            return Err(bad(format!("push_tokens.{k} is not a known push channel")));
        }
    }
    Ok(o.clone())
}

/// The JSON Schemas of this route's body (`DeviceRegistration`) and answer (`Registered`)
/// for `/openapi.json`, built from the constants [`parse`] checks against.
pub(crate) fn schemas(components: &mut Map<String, Value>) {
    let platforms: Vec<&str> = Platform::ALL
        .iter()
        .filter(|p| p.is_device_platform())
        .map(|p| p.as_str())
        .collect();
    let mut tokens = Map::new();
    for v in VENDOR_TOKENS {
        tokens.insert(
            v.into(),
            json!({"type": "string", "minLength": 1, "maxLength": 4096}),
        );
    }
    tokens.insert(
        "webpush".into(),
        json!({"type": "object", "required": ["endpoint", "keys"], "properties": {
            "endpoint": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
            "keys": {"type": "object", "required": ["p256dh", "auth"], "properties": {
                "p256dh": {"type": "string"}, "auth": {"type": "string"}}}}}),
    );
    let name = "at most 40 bytes of letters, digits, _, CJK characters and @!#$&*+=.|￥";
    let mut properties = json!({
        "app_key": {"type": "string"},
        "platform": {"type": "string", "enum": platforms},
        "install_id": {"type": "string", "minLength": 16, "maxLength": 64,
            "description": "random per installation: registering again with it returns the same registration_id"},
        "registration_id": {"type": "string", "description": "with device_secret: update that device"},
        "device_secret": {"type": "string"},
        "push_tokens": {"type": "object", "properties": tokens, "additionalProperties": false},
        "apns_production": {"type": ["boolean", "null"]},
        "alias": {"type": ["string", "null"], "description": format!("{name}; \"\" or null unbinds")},
        "tags": {"type": "array", "maxItems": MAX_DEVICE_TAGS, "items": {"type": "string"},
            "description": format!("each {name}")},
        "mobile": {"type": ["string", "null"], "pattern": "^(\\+?[0-9]{1,20})?$",
            "description": "digits, optional leading +; \"\" or null clears"},
        "region": {"type": ["string", "null"], "maxLength": pigeon_core::names::MAX_REGION_BYTES,
            "description": "where the device is (a province or region code, e.g. Getui's 11000000), for audiences by region; \"\" or null clears"},
    });
    for field in INFO_FIELDS {
        properties[field] =
            json!({"type": "string", "maxLength": 64, "description": "at most 64 bytes"});
    }
    components.insert(
        "DeviceRegistration".into(),
        json!({"type": "object", "required": ["app_key"], "properties": properties,
            "anyOf": [{"required": ["platform"]}, {"required": ["registration_id", "device_secret"]}],
            "dependentRequired": {"registration_id": ["device_secret"], "device_secret": ["registration_id"]},
            "description": "A new device needs platform; registration_id with device_secret updates a device. Other keys are ignored."}),
    );
    components.insert(
        "Registered".into(),
        json!({"type": "object", "required": ["registration_id", "device_secret"], "properties": {
            "registration_id": {"type": "string", "pattern": "^[A-Za-z0-9]{1,64}$"},
            "device_secret": {"type": "string"}}}),
    );
}
