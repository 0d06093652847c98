//! Segments and A/B tests (segments-abtests.md): `/v3/segments` and `/v3/abtests`, in
//! JPush's error shape. JPush makes both in its web portal; this door gives them an API,
//! reads a test's variants as `/v3/push` content, and hands both to the engine in Pigeon's
//! own terms.

use crate::api::{
    authenticate, engine_error, json_response, ok_empty, read_json, ApiError, ApiResult, Family,
};
use crate::geofence_api::{audience, bad, given, missing, name, push_error, short, MAX_NAME_BYTES};
use crate::push::parse_push;
use crate::JPush;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_core::abtest::BUCKETS;
use pigeon_core::{Content, Variant};
use pigeon_engine::saved::AbTestReport;
use pigeon_engine::{AppState, EngineError};
use pigeon_store::{AbTestRecord, SegmentRecord};
use serde_json::{json, Map, Value};
use std::sync::Arc;

const F: Family = Family::Push;
const VARIANTS: (usize, usize) = (2, 5);
const MAX_CONTROL_WEIGHT: u64 = 50;
const VARIANT_KEYS: [&str; 4] = ["name", "weight", "notification", "message"];

fn object<'a>(body: &'a Value, what: &str) -> Result<&'a Map<String, Value>, ApiError> {
    body.as_object()
        .ok_or_else(|| bad(format!("the {what} must be a JSON object")))
}

fn unknown(kind: &str, id: &str) -> ApiError {
    ApiError::not_found(1003, format!("{kind} {id:?} does not exist in this app"))
}

fn saved_error(e: EngineError) -> ApiError {
    match e {
        EngineError::UnknownSegment(id) => unknown("segment", &id),
        EngineError::UnknownAbTest(id) => unknown("A/B test", &id),
        other => engine_error(F, other),
    }
}

async fn app_of(s: &JPush, headers: &HeaderMap) -> Result<Arc<AppState>, ApiError> {
    authenticate(&s.engine, headers, F).await
}

// ---- Segments ----

/// A segment's body: its name and its (required) audience.
fn parse_segment(body: &Value) -> Result<(String, pigeon_core::Audience), ApiError> {
    let body = object(body, "segment")?;
    let name = name(body)?;
    if given(body, "audience").is_none() {
        return Err(missing("audience"));
    }
    let (audience, _) = audience(body, "a segment's")?;
    Ok((name, audience))
}

fn segment_view(s: &SegmentRecord) -> Value {
    json!({"segment_id": s.segment_id, "name": s.name, "audience": audience_json(&s.audience),
        "created_ms": s.created_ms})
}

/// An audience as `/v3/push` writes it.
fn audience_json(a: &pigeon_core::Audience) -> Value {
    match a {
        pigeon_core::Audience::All => json!("all"),
        pigeon_core::Audience::Expr(e) => serde_json::to_value(e).unwrap_or(Value::Null),
    }
}

/// `POST /v3/segments`
pub async fn create_segment(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let (name, audience) = parse_segment(&read_json(body, F).await?)?;
    let segment = s
        .engine
        .create_segment(&app, name, audience)
        .await
        .map_err(saved_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"segment_id": segment.segment_id}),
    ))
}

/// `GET /v3/segments`
pub async fn list_segments(State(s): State<JPush>, headers: HeaderMap) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let all: Vec<Value> = s.engine.segments(&app).iter().map(segment_view).collect();
    Ok(json_response(StatusCode::OK, &json!({"segments": all})))
}

/// `GET /v3/segments/{id}`: with `size`, the devices it resolves to now.
pub async fn get_segment(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let segment = s
        .engine
        .segment(&app, &id)
        .await
        .ok_or_else(|| unknown("segment", &id))?;
    let mut view = segment_view(&segment);
    view["size"] = json!(s.engine.segment_size(&app, &segment));
    Ok(json_response(StatusCode::OK, &view))
}

/// `PUT /v3/segments/{id}`: the same body as POST, replacing name and audience.
pub async fn replace_segment(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let body = read_json(body, F).await?;
    if s.engine.segment(&app, &id).await.is_none() {
        return Err(unknown("segment", &id));
    }
    let (name, audience) = parse_segment(&body)?;
    let segment = s
        .engine
        .replace_segment(&app, &id, name, audience)
        .await
        .map_err(saved_error)?;
    Ok(json_response(StatusCode::OK, &segment_view(&segment)))
}

/// `DELETE /v3/segments/{id}`
pub async fn delete_segment(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    s.engine
        .delete_segment(&app, &id)
        .await
        .map_err(saved_error)?;
    Ok(ok_empty())
}

// ---- A/B tests ----

/// One variant: its name, weight, and content read as `/v3/push` reads it (on every
/// platform; a push keeps the parts on its own platforms).
fn parse_variant(i: usize, v: &Value, names: &mut Vec<String>) -> Result<Variant, ApiError> {
    let path = format!("variants[{i}]");
    let obj = v
        .as_object()
        .ok_or_else(|| bad(format!("{path} must be an object")))?;
    if let Some(k) = obj.keys().find(|k| !VARIANT_KEYS.contains(&k.as_str())) {
        return Err(bad(format!(
            "{path}.{k} is not a field of a variant (name, weight, notification, message)"
        )));
    }
    let name = match given(obj, "name") {
        None => return Err(missing(&format!("{path}.name"))),
        Some(Value::String(n)) if !n.is_empty() && n.len() <= MAX_NAME_BYTES => n.clone(),
        Some(other) => {
            return Err(bad(format!(
                "{path}.name must be a string of 1 to {MAX_NAME_BYTES} bytes, got {}",
                short(other)
            )))
        }
    };
    if names.contains(&name) {
        return Err(bad(format!(
            "{path}.name {name:?} is taken by another variant: names must be unique"
        )));
    }
    names.push(name.clone());
    let weight = match given(obj, "weight") {
        None => return Err(missing(&format!("{path}.weight"))),
        Some(w) => w
            .as_u64()
            .filter(|w| (1..=u64::from(BUCKETS)).contains(w))
            .ok_or_else(|| {
                bad(format!(
                    "{path}.weight must be an integer from 1 to {BUCKETS}, got {}",
                    short(w)
                ))
            })?,
    };
    let mut content = Map::new();
    for key in ["notification", "message"] {
        if let Some(part) = given(obj, key) {
            content.insert(key.into(), part.clone());
        }
    }
    if content.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            1002,
            format!("{path} needs a notification or a message"),
        ));
    }
    content.insert("platform".into(), json!("all"));
    content.insert("audience".into(), json!("all"));
    let push =
        parse_push(&Value::Object(content)).map_err(|e| push_error(&format!("{path}: "), e))?;
    Ok(Variant {
        name,
        weight: weight as u8,
        content: Content {
            notifications: push.content.notifications,
            message: push.content.message,
            vendor_notification: None,
        },
    })
}

fn parse_abtest(body: &Value) -> Result<AbTestRecord, ApiError> {
    let body = object(body, "A/B test")?;
    let name = name(body)?;
    let (audience, audience_given) = audience(body, "an A/B test's")?;
    let items = match given(body, "variants") {
        None => return Err(missing("variants")),
        Some(Value::Array(items)) if (VARIANTS.0..=VARIANTS.1).contains(&items.len()) => items,
        Some(other) => {
            return Err(bad(format!(
                "variants must be an array of {} to {} variants, got {}",
                VARIANTS.0,
                VARIANTS.1,
                short(other)
            )))
        }
    };
    let mut names = Vec::new();
    let variants = items
        .iter()
        .enumerate()
        .map(|(i, v)| parse_variant(i, v, &mut names))
        .collect::<Result<Vec<_>, _>>()?;
    let control_weight = match given(body, "control_weight") {
        None => 0,
        Some(w) => w
            .as_u64()
            .filter(|w| *w <= MAX_CONTROL_WEIGHT)
            .ok_or_else(|| {
                bad(format!(
                    "control_weight must be an integer from 0 to {MAX_CONTROL_WEIGHT}, got {}",
                    short(w)
                ))
            })?,
    };
    let total: u64 = variants.iter().map(|v| u64::from(v.weight)).sum::<u64>() + control_weight;
    if total != u64::from(BUCKETS) {
        return Err(bad(format!(
            "the variants' weights and control_weight must add up to {BUCKETS}, they add up to {total}"
        )));
    }
    Ok(AbTestRecord {
        app_key: String::new(),
        abtest_id: String::new(),
        name: name.clone(),
        audience,
        variants,
        control_weight: control_weight as u8,
        created_ms: 0,
        given: json!({"name": name, "audience": audience_given, "variants": items,
            "control_weight": control_weight}),
    })
}

fn abtest_view(t: &AbTestRecord) -> Value {
    let mut v = t.given.clone();
    v["abtest_id"] = json!(t.abtest_id);
    v["created_ms"] = json!(t.created_ms);
    v
}

fn report_json(r: &AbTestReport) -> Value {
    let variants: Vec<Value> = r
        .variants
        .iter()
        .map(|v| {
            json!({"name": v.name, "targeted": v.targeted, "sent": v.sent,
                "delivered": v.delivered, "clicked": v.clicked, "click_rate": v.click_rate()})
        })
        .collect();
    json!({
        "abtest_id": r.abtest_id,
        "variants": variants,
        "control": {"targeted": r.control_targeted},
        "leader": r.leader.and_then(|i| r.variants.get(i)).map(|v| v.name.clone()),
        "p_value": r.p_value,
    })
}

/// `POST /v3/abtests`
pub async fn create_abtest(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let test = parse_abtest(&read_json(body, F).await?)?;
    let test = s
        .engine
        .create_abtest(&app, test)
        .await
        .map_err(saved_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"abtest_id": test.abtest_id}),
    ))
}

/// `GET /v3/abtests`
pub async fn list_abtests(State(s): State<JPush>, headers: HeaderMap) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let all: Vec<Value> = s.engine.abtests(&app).iter().map(abtest_view).collect();
    Ok(json_response(StatusCode::OK, &json!({"abtests": all})))
}

/// `GET /v3/abtests/{id}`
pub async fn get_abtest(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let test = s
        .engine
        .abtest(&app, &id)
        .await
        .ok_or_else(|| unknown("A/B test", &id))?;
    Ok(json_response(StatusCode::OK, &abtest_view(&test)))
}

/// `DELETE /v3/abtests/{id}`
pub async fn delete_abtest(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    s.engine
        .delete_abtest(&app, &id)
        .await
        .map_err(saved_error)?;
    Ok(ok_empty())
}

/// `GET /v3/abtests/{id}/report`
pub async fn abtest_report(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = app_of(&s, &headers).await?;
    let report = s
        .engine
        .abtest_report(&app, &id)
        .await
        .map_err(saved_error)?;
    Ok(json_response(StatusCode::OK, &report_json(&report)))
}

/// The JSON Schemas of the bodies and answers for `/openapi.json`, with the limits above.
pub(crate) fn schemas(c: &mut Map<String, Value>) {
    let audience = json!({"description":
        "\"all\" or an object of tag, tag_and, tag_not, alias, registration_id"});
    let name = json!({"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES});
    c.insert(
        "Segment".into(),
        json!({"type": "object", "required": ["name", "audience"],
            "properties": {"name": name, "audience": audience}}),
    );
    c.insert(
        "SegmentCreated".into(),
        json!({"type": "object", "required": ["segment_id"],
            "properties": {"segment_id": {"type": "string"}}}),
    );
    c.insert(
        "SegmentList".into(),
        json!({"type": "object", "required": ["segments"],
            "properties": {"segments": {"type": "array", "items": {"type": "object"}}}}),
    );
    c.insert(
        "AbTest".into(),
        json!({"type": "object", "required": ["name", "variants"],
            "description": "the variants' weights and control_weight add up to 100",
            "properties": {"name": name, "audience": audience,
                "variants": {"type": "array", "minItems": VARIANTS.0, "maxItems": VARIANTS.1,
                    "items": {"type": "object", "required": ["name", "weight"],
                        "description": "a notification and/or a message of the /v3/push shape",
                        "properties": {"name": name,
                            "weight": {"type": "integer", "minimum": 1, "maximum": BUCKETS},
                            "notification": {"type": "object"}, "message": {"type": "object"}}}},
                "control_weight": {"type": "integer", "minimum": 0,
                    "maximum": MAX_CONTROL_WEIGHT}}}),
    );
    c.insert(
        "AbTestCreated".into(),
        json!({"type": "object", "required": ["abtest_id"],
            "properties": {"abtest_id": {"type": "string"}}}),
    );
    c.insert(
        "AbTestList".into(),
        json!({"type": "object", "required": ["abtests"],
            "properties": {"abtests": {"type": "array", "items": {"type": "object"}}}}),
    );
    let count = json!({"type": "integer", "minimum": 0});
    c.insert(
        "AbTestReport".into(),
        json!({"type": "object",
            "required": ["abtest_id", "variants", "control", "leader", "p_value"],
            "properties": {"abtest_id": {"type": "string"},
                "variants": {"type": "array", "items": {"type": "object",
                    "properties": {"name": {"type": "string"}, "targeted": count,
                        "sent": count, "delivered": count, "clicked": count,
                        "click_rate": {"type": "number"}}}},
                "control": {"type": "object", "properties": {"targeted": count}},
                "leader": {"type": ["string", "null"]},
                "p_value": {"type": ["number", "null"]}}}),
    );
}
