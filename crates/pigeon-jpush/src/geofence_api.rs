//! The geofence API (geofences.md §1): `/v3/geofences`, in JPush's error shape. JPush keeps
//! fences in its web portal; this door gives them an API and hands them to the engine in
//! Pigeon's own terms (an audience and a push of the core model).

use crate::api::{
    authenticate, engine_error, json_response, ok_empty, read_json, ApiError, ApiResult, Family,
};
use crate::fields::PushError;
use crate::push::{parse_audience, parse_push};
use crate::JPush;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_engine::{AppState, EngineError};
use pigeon_store::{GeofenceRecord, FENCE_ENTER, FENCE_LEAVE, FENCE_STAY};
use serde_json::{json, Map, Value};

const F: Family = Family::Push;
pub(crate) const MAX_NAME_BYTES: usize = 64;
const RADIUS_M: (f64, f64) = (50.0, 100_000.0);
const STAY_S: (u64, u64) = (60, 86_400);
const MAX_COOLDOWN_S: u64 = 86_400;
/// The keys of a fence's audience: those of `/v3/push` that select devices by who they are.
const AUDIENCE_KEYS: [&str; 5] = ["tag", "tag_and", "tag_not", "alias", "registration_id"];
const PUSH_KEYS: [&str; 3] = ["notification", "message", "options"];

pub(crate) fn missing(field: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        1002,
        format!("{field} is required"),
    )
}

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::invalid(F, message)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(1003, format!("geofence {id:?} does not exist in this app"))
}

/// A field that is absent or null is "not given".
pub(crate) fn given<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    body.get(key).filter(|v| !v.is_null())
}

fn number(body: &Map<String, Value>, key: &str, (lo, hi): (f64, f64)) -> Result<f64, ApiError> {
    let v = given(body, key).ok_or_else(|| missing(key))?;
    match v.as_f64() {
        Some(n) if n.is_finite() && (lo..=hi).contains(&n) => Ok(n),
        Some(_) => Err(bad(format!("{key} must be between {lo} and {hi}, got {v}"))),
        None => Err(bad(format!("{key} must be a number, got {v}"))),
    }
}

fn integer(
    body: &Map<String, Value>,
    key: &str,
    (lo, hi): (u64, u64),
) -> Result<Option<u64>, ApiError> {
    let Some(v) = given(body, key) else {
        return Ok(None);
    };
    match v.as_u64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
        _ => Err(bad(format!(
            "{key} must be an integer from {lo} to {hi}, got {v}"
        ))),
    }
}

pub(crate) fn name(body: &Map<String, Value>) -> Result<String, ApiError> {
    match given(body, "name") {
        None => Err(missing("name")),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_NAME_BYTES => Ok(s.clone()),
        Some(v) => Err(bad(format!(
            "name must be a string of 1 to {MAX_NAME_BYTES} bytes, got {}",
            short(v)
        ))),
    }
}

fn events(body: &Map<String, Value>) -> Result<(u8, Vec<&'static str>), ApiError> {
    let v = given(body, "events").ok_or_else(|| missing("events"))?;
    let items = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
        bad("events must be a non-empty array of \"enter\", \"leave\" and \"stay\"")
    })?;
    let (mut bits, mut names) = (0u8, Vec::new());
    for item in items {
        let (bit, name) = match item.as_str() {
            Some("enter") => (FENCE_ENTER, "enter"),
            Some("leave") => (FENCE_LEAVE, "leave"),
            Some("stay") => (FENCE_STAY, "stay"),
            _ => {
                return Err(bad(format!(
                    "events may hold only \"enter\", \"leave\" and \"stay\", not {item}"
                )))
            }
        };
        if bits & bit == 0 {
            names.push(name);
        }
        bits |= bit;
    }
    Ok((bits, names))
}

/// The `audience` of a fence, a segment or an A/B test (`whose`, for messages): `"all"` or
/// an object of the `/v3/push` keys that select devices by who they are; absent: `"all"`.
pub(crate) fn audience(
    body: &Map<String, Value>,
    whose: &str,
) -> Result<(pigeon_core::Audience, Value), ApiError> {
    let Some(v) = given(body, "audience") else {
        return Ok((pigeon_core::Audience::All, json!("all")));
    };
    if let Some(obj) = v.as_object() {
        if obj.is_empty() {
            return Err(bad(
                "audience must name at least one of tag, tag_and, tag_not, alias, registration_id",
            ));
        }
        if let Some(k) = obj.keys().find(|k| !AUDIENCE_KEYS.contains(&k.as_str())) {
            return Err(bad(format!(
                "audience.{k} is not a key of {whose} audience (tag, tag_and, tag_not, alias, registration_id)"
            )));
        }
        for (k, items) in obj {
            if items.as_array().is_some_and(Vec::is_empty) {
                return Err(bad(format!("audience.{k} must not be empty")));
            }
        }
    }
    // The same checks as a push's audience: its keys' types and counts, then its values.
    if let Some(obj) = v.as_object() {
        crate::fields::check_object("audience", obj, &crate::push::AUDIENCE)
            .map_err(|e| push_error("", e))?;
    }
    let parsed = parse_audience(v).map_err(|e| push_error("", e))?;
    Ok((parsed, v.clone()))
}

/// The fence's push: what `/v3/push` would accept with this content, for every platform.
fn push(body: &Map<String, Value>) -> Result<Option<pigeon_core::Push>, ApiError> {
    let Some(v) = given(body, "push") else {
        return Ok(None);
    };
    let obj = v
        .as_object()
        .ok_or_else(|| bad("push must be an object with notification, message and options"))?;
    if let Some(k) = obj.keys().find(|k| !PUSH_KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "push.{k} is not a field of a geofence's push (notification, message, options)"
        )));
    }
    if let Some(options) = obj.get("options") {
        let o = options
            .as_object()
            .ok_or_else(|| bad("push.options must be an object"))?;
        if let Some(k) = o.keys().find(|k| k.as_str() != "time_to_live") {
            return Err(bad(format!(
                "push.options.{k} is not an option of a geofence's push (time_to_live)"
            )));
        }
    }
    let mut full = obj.clone();
    full.insert("platform".into(), json!("all"));
    full.insert("audience".into(), json!("all"));
    parse_push(&Value::Object(full))
        .map(Some)
        .map_err(|e| push_error("push: ", e))
}

pub(crate) fn push_error(prefix: &str, e: PushError) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        e.code,
        format!("{prefix}{}", e.message),
    )
}

pub(crate) fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// A fence from a request body (POST and PUT alike).
fn parse_fence(body: &Value) -> Result<GeofenceRecord, ApiError> {
    let body = body
        .as_object()
        .ok_or_else(|| bad("the geofence must be a JSON object"))?;
    let name = name(body)?;
    let lat = number(body, "lat", (-90.0, 90.0))?;
    let lon = number(body, "lon", (-180.0, 180.0))?;
    let radius_m = number(body, "radius_m", RADIUS_M)?;
    let (events, event_names) = events(body)?;
    let stay_s = integer(body, "stay_s", STAY_S)?;
    if events & FENCE_STAY != 0 && stay_s.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            1002,
            "stay_s is required when events has \"stay\"",
        ));
    }
    let (audience, audience_given) = audience(body, "a geofence's")?;
    let push = push(body)?;
    let repeat = match given(body, "repeat") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(bad(format!(
                "repeat must be true or false, got {}",
                short(v)
            )))
        }
    };
    let cooldown_s = integer(body, "cooldown_s", (0, MAX_COOLDOWN_S))?.unwrap_or(0);
    let start_ms = integer(body, "start_ms", (0, i64::MAX as u64))?;
    let end_ms = integer(body, "end_ms", (0, i64::MAX as u64))?;
    if let (Some(s), Some(e)) = (start_ms, end_ms) {
        if s > e {
            return Err(bad(format!(
                "start_ms ({s}) must not be after end_ms ({e})"
            )));
        }
    }
    let mut shown = json!({"name": name, "lat": lat, "lon": lon, "radius_m": radius_m,
        "events": event_names, "audience": audience_given, "repeat": repeat,
        "cooldown_s": cooldown_s});
    for (key, v) in [
        ("stay_s", stay_s),
        ("start_ms", start_ms),
        ("end_ms", end_ms),
    ] {
        if let Some(v) = v {
            shown[key] = json!(v);
        }
    }
    if let Some(p) = given(body, "push") {
        shown["push"] = p.clone();
    }
    Ok(GeofenceRecord {
        app_key: String::new(),
        geofence_id: String::new(),
        name,
        lat,
        lon,
        radius_m,
        events,
        stay_s: stay_s.map(|s| s as u32),
        audience,
        push,
        repeat,
        cooldown_s: cooldown_s as u32,
        start_ms,
        end_ms,
        created_ms: 0,
        given: shown,
    })
}

/// A fence as the API shows it: every field as given, with its id and creation time.
fn view(f: &GeofenceRecord) -> Value {
    let mut v = f.given.clone();
    v["geofence_id"] = json!(f.geofence_id);
    v["created_ms"] = json!(f.created_ms);
    v
}

fn fence_error(e: EngineError, id: &str) -> ApiError {
    match e {
        EngineError::UnknownGeofence => not_found(id),
        EngineError::TooManyGeofences(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, 1012, e.to_string())
        }
        other => engine_error(F, other),
    }
}

async fn app_of(s: &JPush, headers: &HeaderMap) -> Result<std::sync::Arc<AppState>, ApiError> {
    authenticate(&s.engine, headers, F).await
}

/// `POST /v3/geofences`
pub async fn create(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let fence = parse_fence(&read_json(body, F).await?)?;
    let fence = s
        .engine
        .create_geofence(&app, fence)
        .await
        .map_err(|e| fence_error(e, ""))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"geofence_id": fence.geofence_id}),
    ))
}

/// `GET /v3/geofences`
pub async fn list(State(s): State<JPush>, headers: HeaderMap) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let all: Vec<Value> = s.engine.geofences(&app).iter().map(view).collect();
    Ok(json_response(StatusCode::OK, &json!({"geofences": all})))
}

/// `GET /v3/geofences/{id}`
pub async fn get_one(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let fence = s
        .engine
        .geofence(&app, &id)
        .await
        .ok_or_else(|| not_found(&id))?;
    Ok(json_response(StatusCode::OK, &view(&fence)))
}

/// `PUT /v3/geofences/{id}`: the same body as POST, replacing the fence.
pub async fn replace(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let body = read_json(body, F).await?;
    if s.engine.geofence(&app, &id).await.is_none() {
        return Err(not_found(&id));
    }
    let fence = parse_fence(&body)?;
    let fence = s
        .engine
        .replace_geofence(&app, &id, fence)
        .await
        .map_err(|e| fence_error(e, &id))?;
    Ok(json_response(StatusCode::OK, &view(&fence)))
}

/// `DELETE /v3/geofences/{id}`
pub async fn delete(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    s.engine
        .delete_geofence(&app, &id)
        .await
        .map_err(|e| fence_error(e, &id))?;
    Ok(ok_empty())
}

/// The JSON Schema of a fence's body for `/openapi.json`, with the limits checked above.
pub(crate) fn schemas(c: &mut Map<String, Value>) {
    c.insert(
        "Geofence".into(),
        json!({"type": "object", "required": ["name", "lat", "lon", "radius_m", "events"],
            "description": "stay_s is required when events has \"stay\"",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES},
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lon": {"type": "number", "minimum": -180, "maximum": 180},
                "radius_m": {"type": "number", "minimum": RADIUS_M.0, "maximum": RADIUS_M.1},
                "events": {"type": "array", "minItems": 1,
                    "items": {"type": "string", "enum": ["enter", "leave", "stay"]}},
                "stay_s": {"type": "integer", "minimum": STAY_S.0, "maximum": STAY_S.1},
                "audience": {"description": "\"all\" or an object of tag, tag_and, tag_not, alias, registration_id"},
                "push": {"type": "object", "properties": {"notification": {"type": "object"},
                    "message": {"type": "object"}, "options": {"type": "object",
                    "properties": {"time_to_live": {"type": "integer", "minimum": 0}}}}},
                "repeat": {"type": "boolean"},
                "cooldown_s": {"type": "integer", "minimum": 0, "maximum": MAX_COOLDOWN_S},
                "start_ms": {"type": "integer", "minimum": 0},
                "end_ms": {"type": "integer", "minimum": 0}
            }}),
    );
    c.insert(
        "GeofenceCreated".into(),
        json!({"type": "object", "required": ["geofence_id"],
        "properties": {"geofence_id": {"type": "string"}}}),
    );
    c.insert(
        "GeofenceList".into(),
        json!({"type": "object", "required": ["geofences"],
        "properties": {"geofences": {"type": "array", "items": {"type": "object"}}}}),
    );
}
