//! The report routes (getui.md B.3 "Statistics"), counted from what devices did: targets
//! from the resolved audience, `msg_num` from pushes written to a connection or handed to a
//! vendor, `receive_num` from device acks, `click_num` from the device protocol's clicks.
//! Displays are not reported by devices, so `display_num` is `null`.

use super::push::pushes_of_task;
use super::reply::{path_set, query_value, V2Error, V2Result};
use super::{engine_error, Call};
use chrono::{FixedOffset, NaiveDate, TimeZone};
use pigeon_engine::report::{Counts, PushCounts};
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

/// Getui's dates are China's: `yyyy-MM-dd` in UTC+8 (checked when compiling).
const CHINA: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(z) => z,
    None => panic!("UTC+8 is a valid offset"),
};

/// The window `[start, end)` of a `yyyy-MM-dd` date (UTC+8), in ms; not a day after today.
fn day(date: &str, what: &str) -> Result<(u64, u64), V2Error> {
    let invalid = || V2Error::invalid(what);
    if date.len() != 10 {
        return Err(invalid());
    }
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").map_err(|_| invalid())?;
    let start = CHINA
        .from_local_datetime(&d.and_hms_opt(0, 0, 0).ok_or_else(invalid)?)
        .single()
        .ok_or_else(invalid)?
        .timestamp_millis();
    let start = u64::try_from(start).map_err(|_| invalid())?;
    if start > now_ms() {
        return Err(invalid());
    }
    Ok((start, start + DAY_MS))
}

/// Today (UTC+8) as `yyyy-MM-dd`.
fn today() -> String {
    chrono::Utc::now()
        .with_timezone(&CHINA)
        .format("%Y-%m-%d")
        .to_string()
}

const DAY_MS: u64 = 86_400_000;
/// Longest window of a task group report.
const MAX_GROUP_DAYS: u64 = 90;

fn sum(pushes: &[PushCounts]) -> Counts {
    let mut total = Counts::default();
    for p in pushes {
        add(
            &mut total,
            Counts {
                targets: p.targets,
                sent: p.sent,
                delivered: p.delivered,
                clicked: p.clicked,
            },
        );
    }
    total
}

/// `GET /report/push/task_group/{group}?startDate=&endDate=` (`yyyy-MM-dd`, by default the
/// last 30 days up to today): `{group: {"total": {...}}}`, the pushes made with that
/// `group_name`.
pub async fn task_group(call: &Call<'_>, app: &Arc<AppState>, group: &str) -> V2Result {
    let group_ok = !group.is_empty()
        && group.len() <= 100
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !group_ok {
        return Err(V2Error::invalid("group_name"));
    }
    let end = query_value(call.query, "endDate").unwrap_or_else(today);
    let (_, to) = day(&end, "endDate")?;
    let from = match query_value(call.query, "startDate") {
        Some(start) => day(&start, "startDate")?.0,
        None => to.saturating_sub(30 * DAY_MS),
    };
    if from >= to || to - from > MAX_GROUP_DAYS * DAY_MS {
        return Err(V2Error::invalid_msg(format!(
            "startDate is invalid: it must be on or before endDate, at most {MAX_GROUP_DAYS} days before"
        )));
    }
    let pushes: Vec<PushCounts> = call
        .v2
        .engine
        .push_counts_between(app, from, to)
        .await
        .map_err(engine_error)?
        .into_iter()
        .filter(|p| p.group.as_deref() == Some(group))
        .collect();
    let mut out = Map::new();
    out.insert(
        group.to_string(),
        json!({ "total": counters(sum(&pushes)) }),
    );
    Ok(Value::Object(out))
}

/// `GET /report/push/date/{yyyy-MM-dd}`: `{date: {"total": {...}}}`, every push of the app
/// sent that day (UTC+8), through any door.
pub async fn push_date(call: &Call<'_>, app: &Arc<AppState>, date: &str) -> V2Result {
    let (from, to) = day(date, "date")?;
    let pushes = call
        .v2
        .engine
        .push_counts_between(app, from, to)
        .await
        .map_err(engine_error)?;
    let mut out = Map::new();
    out.insert(date.to_string(), json!({ "total": counters(sum(&pushes)) }));
    Ok(Value::Object(out))
}

/// `GET /report/user/date/{yyyy-MM-dd}`: `{date: {"accumulative_num", "register_num",
/// "active_num", "online_num"}}`: devices registered by the end of that day, registered that
/// day, connected that day (as far as Pigeon keeps it: a device's latest time online), and
/// connected now (today only; `null` for a past day, which Pigeon keeps no count of).
pub async fn user_date(call: &Call<'_>, app: &Arc<AppState>, date: &str) -> V2Result {
    let (from, to) = day(date, "date")?;
    let a = call
        .v2
        .engine
        .device_activity(app, from, to)
        .await
        .map_err(engine_error)?;
    let online = if (from..to).contains(&now_ms()) {
        json!(a.online)
    } else {
        Value::Null
    };
    let mut out = Map::new();
    out.insert(
        date.to_string(),
        json!({"accumulative_num": a.registered, "register_num": a.new,
               "active_num": a.active, "online_num": online}),
    );
    Ok(Value::Object(out))
}

/// `GET /report/push/count`: `{"push_num", "total_num", "remain_num", "limit"}`. Pigeon sets
/// no daily quota (`limit: false`, no total or remainder); `push_num` is how many messages
/// (targets) the app's pushes of today (UTC+8) carried.
pub async fn push_count(call: &Call<'_>, app: &Arc<AppState>) -> V2Result {
    let (from, to) = day(&today(), "date")?;
    let pushes = call
        .v2
        .engine
        .push_counts_between(app, from, to)
        .await
        .map_err(engine_error)?;
    Ok(json!({
        "push_num": sum(&pushes).targets,
        "total_num": null,
        "remain_num": null,
        "limit": false,
    }))
}
