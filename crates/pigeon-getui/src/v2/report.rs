//! The report routes (getui.md B.3 "Statistics"), counted from what devices did: targets
//! from the resolved audience, `msg_num` from pushes written to a connection or handed to a
//! vendor, `receive_num` from device acks, `click_num` from the device protocol's clicks.
//! Displays are not reported by devices, so `display_num` is `null`.

use super::push::pushes_of_task;
use super::reply::{path_set, query_value, V2Error, V2Result};
use super::{engine_error, Call};
use pigeon_engine::report::Counts;
use pigeon_engine::{now_ms, AppState};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Most task ids in one report query (Getui's limit).
const MAX_TASKS: usize = 200;

/// Getui's counters for some counts.
fn counters(c: Counts) -> Value {
    json!({
        "msg_num": c.sent,
        "target_num": c.targets,
        "receive_num": c.delivered,
        "display_num": null,
        "click_num": c.clicked,
    })
}

fn add(a: &mut Counts, b: Counts) {
    a.targets += b.targets;
    a.sent += b.sent;
    a.delivered += b.delivered;
    a.clicked += b.clicked;
}

/// The summed report of a task's pushes, with counts per platform; `None` if the task id
/// names no push of the app.
async fn task_counts(
    call: &Call<'_>,
    app: &AppState,
    taskid: &str,
) -> Result<Option<(Counts, Vec<(String, Counts)>)>, V2Error> {
    let Some(pushes) = pushes_of_task(call, app, taskid) else {
        return Ok(None);
    };
    let mut total = Counts::default();
    let mut by_platform: Vec<(String, Counts)> = Vec::new();
    let mut found = pushes.is_empty();
    for msg_id in pushes {
        let Some(r) = call
            .v2
            .engine
            .push_report(app, msg_id)
            .await
            .map_err(engine_error)?
        else {
            continue;
        };
        found = true;
        add(&mut total, r.total);
        for (p, c) in r.by_platform {
            let name = p.as_str().to_string();
            match by_platform.iter_mut().find(|(n, _)| *n == name) {
                Some((_, acc)) => add(acc, c),
                None => by_platform.push((name, c)),
            }
        }
    }
    Ok(found.then_some((total, by_platform)))
}

fn task_ids(ids: &str) -> Result<Vec<String>, V2Error> {
    let ids = path_set(ids);
    if ids.is_empty() || ids.len() > MAX_TASKS {
        return Err(V2Error::invalid("taskid"));
    }
    Ok(ids)
}

/// `GET /report/push/task/{taskid,…}`: `{taskid: {"total": {msg_num, target_num,
/// receive_num, display_num, click_num}}}` for each task id that names a push of the app.
pub async fn tasks(call: &Call<'_>, app: &Arc<AppState>, ids: &str) -> V2Result {
    let mut out = Map::new();
    for id in task_ids(ids)? {
        if let Some((total, _)) = task_counts(call, app, &id).await? {
            out.insert(id, json!({ "total": counters(total) }));
        }
    }
    Ok(Value::Object(out))
}

/// `GET /report/push/task/{taskid}/detail`: the same counts as they are now, with a row per
/// platform the push had targets on.
pub async fn task_detail(call: &Call<'_>, app: &Arc<AppState>, id: &str) -> V2Result {
    let ids = task_ids(id)?;
    let mut out = Map::new();
    for id in ids {
        let Some((total, by_platform)) = task_counts(call, app, &id).await? else {
            continue;
        };
        let mut row = Map::new();
        row.insert("total".into(), counters(total));
        for (p, c) in by_platform {
            row.insert(p, counters(c));
        }
        out.insert(id, Value::Object(row));
    }
    if out.is_empty() {
        return Err(V2Error::invalid("taskid"));
    }
    Ok(Value::Object(out))
}

/// `GET /report/online_user`: `{"online_statics": {"<start of this hour, ms>": n}}`, the
/// devices connected now. Pigeon keeps no history of how many were connected, so only the
/// current hour is given.
pub fn online_user(app: &Arc<AppState>) -> V2Result {
    let now = now_ms();
    let hour = now - now % 3_600_000;
    let mut stats = Map::new();
    stats.insert(hour.to_string(), json!(app.online_count()));
    Ok(json!({ "online_statics": stats }))
}

/// `GET /report/push/task_group/{group}`.
pub async fn task_group(call: &Call<'_>, _app: &Arc<AppState>, _group: &str) -> V2Result {
    let _window = (
        query_value(call.query, "startDate"),
        query_value(call.query, "endDate"),
    );
    Err(V2Error::invalid_msg(
        "task_group reports are not available yet",
    ))
}

/// `GET /report/push/date/{date}`.
pub async fn push_date(_call: &Call<'_>, _app: &Arc<AppState>, _date: &str) -> V2Result {
    Err(V2Error::invalid_msg("date reports are not available yet"))
}

/// `GET /report/user/date/{date}`.
pub async fn user_date(_call: &Call<'_>, _app: &Arc<AppState>, _date: &str) -> V2Result {
    Err(V2Error::invalid_msg("date reports are not available yet"))
}

/// `GET /report/push/count`.
pub async fn push_count(_call: &Call<'_>, _app: &Arc<AppState>) -> V2Result {
    Err(V2Error::invalid_msg("push counts are not available yet"))
}
