//! Scheduled pushes (`settings.schedule_time` on `/push/all`, `/push/tag`,
//! `/push/fast_custom_tag`) on the engine's scheduler: the request is stored as it came, with
//! the msg_id reserved for its push, so the task id is answered at once and names the push
//! the firing makes. The firing reads the request again and pushes to the audience as it is
//! then; the push and the firing are stored together, so it fires exactly once.

use super::push::{wide_request, Wide};
use super::reply::{V2Error, V2Result};
use super::{dto::What, engine_error, Call};
use crate::task_id::{msg_id_of, task_id, Door, TaskKind};
use pigeon_engine::schedules::{FiringError, FiringPush, ScheduleDoor};
use pigeon_engine::{now_ms, AppState, Engine, EngineError};
use pigeon_store::ScheduleRecord;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The door name stored with this door's schedules.
pub const DOOR: &str = "getui-v2";
/// Most schedules one app may have waiting, across doors (as JPush's Schedule API allows).
const MAX_WAITING_PER_APP: usize = 100;

/// How the engine's scheduler reads this door's schedules: a one-time trigger `{"time": ms}`
/// and the stored request `{"route", "body", "msg_id"}`.
pub struct V2Schedules;

impl ScheduleDoor for V2Schedules {
    fn name(&self) -> &'static str {
        DOOR
    }

    fn next_after(&self, trigger: &Value, after_ms: u64) -> Result<Option<u64>, String> {
        let time = trigger["time"]
            .as_u64()
            .ok_or("a Getui schedule's trigger has no time")?;
        Ok((time > after_ms).then_some(time))
    }

    fn push<'a>(
        &'a self,
        _engine: &'a Engine,
        _app: &'a AppState,
        record: &'a ScheduleRecord,
    ) -> FiringPush<'a> {
        Box::pin(async move {
            let stored = |m: &str| (20001, format!("stored schedule: {m}"));
            let wide = record.push["route"]
                .as_str()
                .and_then(Wide::parse)
                .ok_or_else(|| stored("no route"))?;
            let body = record.push["body"]
                .as_object()
                .ok_or_else(|| stored("no body"))?;
            let (req, platforms, audience) =
                wide_request(wide, body, None).map_err(|e| (20001, e.msg))?;
            let mut push = req
                .to_push(platforms, audience)
                .ok_or_else(|| stored("a revoke cannot be scheduled"))?;
            push.msg_id = record.push["msg_id"].as_u64().unwrap_or(0);
            Ok(push)
        })
    }

    fn accept_error(&self, e: &EngineError) -> Option<FiringError> {
        match e {
            EngineError::NoTarget => Some((20001, "target user is invalid".into())),
            EngineError::Invalid(m) => Some((20001, m.clone())),
            EngineError::TooManyPaced => Some((20001, e.to_string())),
            _ => None,
        }
    }
}

/// Schedules a wide request for `at_ms` (checked to be ahead): `{"taskid": ..}`. The same
/// `request_id` again, while its schedule waits, answers the same task id.
pub async fn create(
    call: &Call<'_>,
    app: &Arc<AppState>,
    wide: Wide,
    body: &Map<String, Value>,
    req: &super::dto::PushRequest,
    at_ms: u64,
) -> V2Result {
    if matches!(req.what, What::Revoke { .. }) {
        return Err(V2Error::invalid_msg(
            "settings.schedule_time is invalid: a revoke cannot be scheduled",
        ));
    }
    let scheduler = call.v2.engine.schedules();
    if let Some(same) = scheduler
        .active(&app.app_key, DOOR)
        .into_iter()
        .find(|s| s.push["body"]["request_id"].as_str() == Some(req.request_id.as_str()))
    {
        return Ok(json!({ "taskid": same.schedule_id }));
    }
    if scheduler.active_count(&app.app_key) >= MAX_WAITING_PER_APP {
        return Err(V2Error::invalid_msg(format!(
            "settings.schedule_time is invalid: an app may have at most {MAX_WAITING_PER_APP} scheduled tasks waiting"
        )));
    }
    let msg_id = call
        .v2
        .engine
        .reserve_msg_id()
        .await
        .map_err(super::engine_error)?;
    let taskid = task_id(Door::RestV2, TaskKind::App, msg_id);
    let record = ScheduleRecord {
        schedule_id: taskid.clone(),
        app_key: app.app_key.clone(),
        name: req.labels.name.clone().unwrap_or_default(),
        enabled: true,
        trigger: json!({ "time": at_ms }),
        push: json!({"route": wide.name(), "body": body, "msg_id": msg_id}),
        created_ms: now_ms(),
        next_ms: Some(at_ms),
        door: DOOR.to_string(),
    };
    scheduler.save(record).await.map_err(engine_error)?;
    Ok(json!({ "taskid": taskid }))
}

/// A schedule of this app made through this door, by its task id (any form).
fn find(call: &Call<'_>, app: &AppState, taskid: &str) -> Option<ScheduleRecord> {
    let msg_id = msg_id_of(taskid)?;
    let id = task_id(Door::RestV2, TaskKind::App, msg_id);
    call.v2
        .engine
        .schedules()
        .find(&app.app_key, &id)
        .filter(|s| s.door == DOOR)
}

/// Whether a task id names a waiting schedule; if so it is deleted (`DELETE /task/{taskid}`
/// on a task not sent yet).
pub async fn cancel_waiting(
    call: &Call<'_>,
    app: &AppState,
    taskid: &str,
) -> Result<bool, V2Error> {
    match find(call, app, taskid) {
        Some(s) if s.next_ms.is_some() => {
            call.v2
                .engine
                .schedules()
                .delete(&app.app_key, &s.schedule_id)
                .await
                .map_err(engine_error)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// `GET /task/schedule/{taskid}`: `{taskid: {"create_time", "send_result",
/// "transmission_content", "push_time"}}`; `send_result` is `waiting`, `success` or
/// `failed: <why>`.
pub async fn get(call: &Call<'_>, app: &Arc<AppState>, taskid: &str) -> V2Result {
    let s = find(call, app, taskid).ok_or_else(|| V2Error::invalid("taskid"))?;
    let result = if s.next_ms.is_some() {
        "waiting".to_string()
    } else {
        let runs = call
            .v2
            .engine
            .store()
            .schedule_runs(&s.schedule_id)
            .await
            .map_err(|e| V2Error::internal(&e))?;
        match runs.iter().rev().find(|r| r.error_code != 0) {
            Some(failed) if runs.iter().all(|r| r.msg_id.is_none()) => {
                format!("failed: {}", failed.error_message)
            }
            _ => "success".to_string(),
        }
    };
    let body = &s.push["body"]["push_message"];
    let content = match (&body["transmission"], &body["notification"]) {
        (Value::String(t), _) => t.clone(),
        (_, Value::Object(n)) => Value::Object(n.clone()).to_string(),
        _ => String::new(),
    };
    let mut out = Map::new();
    out.insert(
        s.schedule_id.clone(),
        json!({
            "create_time": s.created_ms.to_string(),
            "send_result": result,
            "transmission_content": content,
            "push_time": s.trigger["time"].as_u64().unwrap_or_default().to_string(),
        }),
    );
    Ok(Value::Object(out))
}

/// `DELETE /task/schedule/{taskid}`: a schedule that has not fired is deleted (it never
/// pushes); one that has already fired cannot be.
pub async fn delete(call: &Call<'_>, app: &Arc<AppState>, taskid: &str) -> V2Result {
    if find(call, app, taskid).is_none() {
        return Err(V2Error::invalid("taskid"));
    }
    if !cancel_waiting(call, app, taskid).await? {
        return Err(V2Error::invalid_msg(
            "taskid is invalid: the scheduled task has already been sent; stop it with DELETE /task/{taskid}",
        ));
    }
    Ok(Value::Null)
}
