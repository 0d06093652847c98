//! The Schedule API (jpush-v3.md §7) over the engine's scheduler.
//!
//! A schedule keeps its push object in the JPush dialect and is parsed again when it fires,
//! so it always pushes to the audience as it is then; the engine fires it exactly once per
//! time (`pigeon_engine::schedules`).

use crate::api::{
    authenticate, json_response, ok_empty, query_value, read_json, ApiError, ApiResult, Family,
};
use crate::file_api::parse_with_file;
use crate::trigger::Trigger;
use crate::JPush;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_engine::schedules::{FiringError, FiringPush, ScheduleDoor};
use pigeon_engine::{now_ms, uuid_v4, AppState, Engine, EngineError};
use pigeon_store::ScheduleRecord;
use serde_json::{json, Map, Value};

const F: Family = Family::Schedule;
/// Most schedules an app may have that will still fire.
const MAX_ACTIVE_PER_APP: usize = 100;
const PAGE_SIZE: usize = 50;
/// Longest a schedule name may be, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// How the engine's scheduler reads the schedules this door made: a JPush trigger, and a
/// JPush push object parsed again at each firing (with the file it names read then).
pub struct JPushSchedules;

/// The name stored with the schedules of this door.
pub const DOOR: &str = "jpush";

impl ScheduleDoor for JPushSchedules {
    fn name(&self) -> &'static str {
        DOOR
    }

    fn next_after(&self, trigger: &Value, after_ms: u64) -> Result<Option<u64>, String> {
        Ok(Trigger::parse_stored(trigger)?.next_after(after_ms))
    }

    fn push<'a>(
        &'a self,
        engine: &'a Engine,
        app: &'a AppState,
        record: &'a ScheduleRecord,
    ) -> FiringPush<'a> {
        Box::pin(async move {
            parse_with_file(engine, app, &without_cid(&record.push))
                .await
                .map_err(|e| (e.code, e.message))
        })
    }

    fn accept_error(&self, e: &EngineError) -> Option<FiringError> {
        match e {
            EngineError::NoTarget => Some((1011, "cannot find user by this audience".into())),
            EngineError::Invalid(m) => Some((1003, m.clone())),
            _ => None,
        }
    }
}

fn without_cid(push: &Value) -> Value {
    let mut p = push.clone();
    if let Some(o) = p.as_object_mut() {
        o.remove("cid");
    }
    p
}

fn check_name(v: Option<&Value>) -> Result<String, ApiError> {
    let name = v
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(F, "name is required"))?;
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(ApiError::invalid(
            F,
            format!("name must be 1 to {MAX_NAME_BYTES} bytes of letters, digits, CJK, _ and -"),
        ));
    }
    Ok(name.to_string())
}

async fn check_push(s: &JPush, app: &AppState, v: Option<&Value>) -> Result<Value, ApiError> {
    let push = v.ok_or_else(|| ApiError::invalid(F, "push is required"))?;
    let parsed = parse_with_file(&s.engine, app, &without_cid(push))
        .await
        .map_err(|e| ApiError::invalid(F, format!("push: {} (code {})", e.message, e.code)))?;
    crate::push_api::check_callback_url(s, &parsed)
        .await
        .map_err(|m| ApiError::invalid(F, format!("push: {m}")))?;
    Ok(push.clone())
}

fn check_trigger(v: Option<&Value>, now: u64) -> Result<(Value, Trigger, u64), ApiError> {
    let v = v.ok_or_else(|| ApiError::invalid(F, "trigger is required"))?;
    let trigger = Trigger::parse(v, now).map_err(|m| ApiError::invalid(F, m))?;
    let next = trigger
        .next_after(now)
        .ok_or_else(|| ApiError::invalid(F, "the trigger never fires after now"))?;
    Ok((v.clone(), trigger, next))
}

fn view(s: &ScheduleRecord) -> Value {
    json!({"schedule_id": s.schedule_id, "name": s.name, "enabled": s.enabled,
           "trigger": s.trigger, "push": s.push})
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(8104, format!("schedule {id:?} does not exist"))
}

/// `POST /v3/schedules`
pub async fn create(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let body = read_json(body, F).await?;
    let now = now_ms();
    let name = check_name(body.get("name"))?;
    if body.get("enabled") != Some(&Value::Bool(true)) {
        return Err(ApiError::invalid(
            F,
            "enabled must be true when a schedule is created",
        ));
    }
    let (trigger, _, next) = check_trigger(body.get("trigger"), now)?;
    let push = check_push(&s, &app, body.get("push")).await?;
    if s.engine.schedules().active_count(&app.app_key) >= MAX_ACTIVE_PER_APP {
        return Err(ApiError::invalid(
            F,
            format!("an app may have at most {MAX_ACTIVE_PER_APP} active schedules"),
        ));
    }
    let record = ScheduleRecord {
        schedule_id: uuid_v4(),
        app_key: app.app_key.clone(),
        name,
        enabled: true,
        trigger,
        push,
        created_ms: now,
        next_ms: Some(next),
        door: DOOR.into(),
    };
    save(&s, record.clone()).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"schedule_id": record.schedule_id, "name": record.name}),
    ))
}

async fn save(s: &JPush, record: ScheduleRecord) -> Result<(), ApiError> {
    s.engine
        .schedules()
        .save(record)
        .await
        .map_err(|e| ApiError::internal(F, &e))
}

/// One of the app's schedules made through this door.
fn find(s: &JPush, app: &AppState, id: &str) -> Result<ScheduleRecord, ApiError> {
    s.engine
        .schedules()
        .find(&app.app_key, id)
        .filter(|x| x.door == DOOR)
        .ok_or_else(|| not_found(id))
}

/// `GET /v3/schedules?page=N`: schedules that will still fire, 50 a page, oldest first.
pub async fn list(
    State(s): State<JPush>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let page = match query_value(query.as_deref(), "page") {
        None => 1,
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| ApiError::invalid(F, "page must be a number from 1"))?,
    };
    let mine = s.engine.schedules().active(&app.app_key, DOOR);
    let total = mine.len();
    let shown: Vec<Value> = mine
        .iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(view)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"total_count": total, "total_pages": total.div_ceil(PAGE_SIZE), "page": page,
                "schedules": shown}),
    ))
}

/// `GET /v3/schedules/{id}`
pub async fn get_one(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    Ok(json_response(StatusCode::OK, &view(&find(&s, &app, &id)?)))
}

/// `PUT /v3/schedules/{id}`: each section given replaces the old one.
pub async fn replace(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let mut record = find(&s, &app, &id)?;
    let body = read_json(body, F).await?;
    let obj: &Map<String, Value> = body
        .as_object()
        .ok_or_else(|| ApiError::invalid(F, "the body must be a JSON object"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| !["name", "enabled", "trigger", "push"].contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            F,
            format!("{k} cannot be updated: only name, enabled, trigger, push"),
        ));
    }
    if obj.is_empty() {
        return Err(ApiError::invalid(
            F,
            "give at least one of name, enabled, trigger, push",
        ));
    }
    if record.next_ms.is_none() {
        return Err(ApiError::invalid(
            F,
            "the schedule has expired and cannot be updated",
        ));
    }
    let now = now_ms();
    if obj.contains_key("name") {
        record.name = check_name(obj.get("name"))?;
    }
    if let Some(enabled) = obj.get("enabled") {
        record.enabled = enabled
            .as_bool()
            .ok_or_else(|| ApiError::invalid(F, "enabled must be true or false"))?;
    }
    if obj.contains_key("trigger") {
        let old = Trigger::parse_stored(&record.trigger).map_err(|e| ApiError::internal(F, &e))?;
        let (trigger, parsed, next) = check_trigger(obj.get("trigger"), now)?;
        if !old.same_kind(&parsed) {
            return Err(ApiError::invalid(
                F,
                "a schedule cannot switch between single and periodical",
            ));
        }
        record.trigger = trigger;
        record.next_ms = Some(next);
    }
    if obj.contains_key("push") {
        record.push = check_push(&s, &app, obj.get("push")).await?;
    }
    save(&s, record.clone()).await?;
    Ok(json_response(StatusCode::OK, &view(&record)))
}

/// `DELETE /v3/schedules/{id}`
pub async fn delete(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    find(&s, &app, &id)?;
    let deleted = s
        .engine
        .schedules()
        .delete(&app.app_key, &id)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    if !deleted {
        return Err(not_found(&id));
    }
    Ok(ok_empty())
}

/// `GET /v3/schedules/{id}/msg_ids`, in the format JPush uses since 2018: each entry a JSON
/// string with the msg_id, the error and the time.
pub async fn msg_ids(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    find(&s, &app, &id)?;
    let runs = s
        .engine
        .store()
        .schedule_runs(&id)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    let ids: Vec<String> = runs
        .iter()
        .map(|r| {
            json!({"msg_id": r.msg_id.map(|m| m.to_string()).unwrap_or_default(),
                   "error": {"code": r.error_code, "message": r.error_message},
                   "needRetry": false, "ts": r.at_ms})
            .to_string()
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"count": ids.len(), "msgids": ids}),
    ))
}

/// The JSON Schemas of a schedule's body for `/openapi.json`, with the limits the handlers
/// check; `push` is the push object's own schema.
pub(crate) fn schemas(c: &mut Map<String, Value>) {
    let properties = json!({
        "name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME_BYTES,
            "description": format!("1 to {MAX_NAME_BYTES} bytes of letters, digits, CJK, _ and -")},
        "enabled": {"type": "boolean"},
        "trigger": {"type": "object", "description": "{\"single\": {\"time\": \"yyyy-MM-dd HH:mm:ss\"}} or {\"periodical\": {\"start\", \"end\", \"time\", \"time_unit\": day|week|month, \"frequency\", \"point\"}}, Beijing time",
            "properties": {"single": {"type": "object"}, "periodical": {"type": "object"}}},
        "push": {"$ref": "#/components/schemas/Push"},
    });
    c.insert(
        "Schedule".into(),
        json!({"type": "object", "required": ["name", "enabled", "trigger", "push"],
            "properties": properties, "description": "enabled must be true when a schedule is created"}),
    );
    c.insert(
        "ScheduleChange".into(),
        json!({"type": "object", "properties": properties, "additionalProperties": false}),
    );
    c.insert(
        "ScheduleCreated".into(),
        json!({"type": "object", "required": ["schedule_id", "name"], "properties": {
            "schedule_id": {"type": "string"}, "name": {"type": "string"}}}),
    );
}
