//! The task routes (getui.md B.3): stopping a push, scheduled tasks and message detail.

use super::push::{pushes_of_task, stop_list};
use super::reply::{V2Error, V2Result};
use super::{engine_error, Call};
use axum::http::StatusCode;
use pigeon_engine::{AppState, EngineError};
use serde_json::Value;
use std::sync::Arc;

/// `DELETE /task/{taskid}`: stops a push through the engine's recall, as JPush's
/// `DELETE /v3/push/{msg_id}` does: devices that have not got it never will, and devices
/// that show it are told to remove it (`revoke`). A list message's task id stops the list
/// (it can be sent no more) and every push it made; a scheduled task that has not fired is
/// cancelled. Stopping a stopped push is fine.
pub async fn stop(call: &Call<'_>, app: &Arc<AppState>, taskid: &str) -> V2Result {
    // A scheduled task not sent yet is cancelled: it never pushes.
    if super::schedule::cancel_waiting(call, app, taskid).await? {
        return Ok(Value::Null);
    }
    let pushes = match stop_list(call, app, taskid) {
        Some(pushes) => pushes,
        None => pushes_of_task(call, app, taskid).ok_or_else(|| V2Error::invalid("taskid"))?,
    };
    for msg_id in pushes {
        match call.v2.engine.recall(app, msg_id).await {
            Ok(()) | Err(EngineError::AlreadyRecalled(_)) => {}
            Err(EngineError::Invalid(m)) => {
                return Err(V2Error::invalid_msg(format!("taskid is invalid: {m}")))
            }
            Err(e) => return Err(engine_error(e)),
        }
    }
    Ok(Value::Null)
}

/// `GET /task/detail/{cid}/{taskid}`: message detail, a permission Getui grants on request;
/// Pigeon has no such detail to give.
pub fn detail() -> V2Result {
    Err(V2Error::new(
        StatusCode::UNAUTHORIZED,
        10004,
        "no permission for message detail: use /report/push/task/{taskid} for a push's counts",
    ))
}
