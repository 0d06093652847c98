//! Scheduled app pushes (`getContentIdAction` with contentType 2 and a `pushTime`, then
//! `pushMessageToAppAction`), `getScheduleTaskAction` and `delScheduleTaskAction`, on the
//! engine's scheduler.
//!
//! `pushTime` is `yyyyMMddHHmm` in Beijing time (UTC+8), as Getui reads it; the push fires at
//! the start of that minute. The app content's request (clientData, conditions, envelope
//! options, as `getContentIdAction` got it, without its auth token) is stored in the schedule
//! when `pushMessageToAppAction` is called, with a msg_id reserved for the push, so the task id
//! answered at once (`OSA-<msg_id>`) names the push the firing makes. The firing reads the
//! request again, so the conditions select the devices as they are then; the push and the
//! firing are stored together, so it fires exactly once, also across a restart.

use super::push::{app_content, check_app_ids, engine_refusal, Prepared, Refusal};
use super::{result, str_field, Legacy};
use crate::task_id::{msg_id_of, task_id, Door, TaskKind};
use chrono::{DateTime, FixedOffset, NaiveDate, TimeZone};
use pigeon_engine::schedules::{FiringError, FiringPush, ScheduleDoor};
use pigeon_engine::{now_ms, AppState, Engine, EngineError};
use pigeon_store::ScheduleRecord;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// The door name stored with this door's schedules.
pub const DOOR: &str = "getui-legacy";
/// How far ahead a `pushTime` may be (as V2's `schedule_time`).
pub const MAX_AHEAD_MS: u64 = 7 * 86_400_000;
/// Most schedules one app may have waiting, across doors (as JPush's Schedule API allows).
const MAX_WAITING_PER_APP: usize = 100;
/// The code recorded with a firing that made no push (the legacy protocol has no numeric
/// codes; the message is the result string the push would have been answered with).
const FIRING_FAILED: u32 = 1;
/// Fields of a `getContentIdAction` request that its schedule does not keep: the transport's,
/// and the auth token (a credential).
const NOT_STORED: &[&str] = &["action", "appkey", "authToken", "version"];

/// UTC+8 (checked when compiling).
const BEIJING: FixedOffset = match FixedOffset::east_opt(8 * 3600) {
    Some(z) => z,
    None => panic!("UTC+8 is a valid offset"),
};

/// The `pushTime` a request carries, as text (`None`: absent, null or empty, an immediate
/// push). A value that is neither a string nor a number is kept as its JSON, to be refused.
pub fn push_time_of(body: &Map<String, Value>) -> Option<String> {
    match body.get("pushTime") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => Some(other.to_string()),
    }
}

/// `yyyyMMddHHmm` in Beijing time, as Unix ms; `None` unless it is exactly twelve ASCII
/// digits naming a real minute.
pub fn parse_push_time(text: &str) -> Option<u64> {
    if text.len() != 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |from: usize, to: usize| text.get(from..to)?.parse::<u32>().ok();
    let year = i32::try_from(n(0, 4)?).ok()?;
    let minute =
        NaiveDate::from_ymd_opt(year, n(4, 6)?, n(6, 8)?)?.and_hms_opt(n(8, 10)?, n(10, 12)?, 0)?;
    let at = BEIJING.from_local_datetime(&minute).single()?;
    u64::try_from(at.timestamp_millis()).ok()
}

/// Unix ms as `yyyyMMddHHmm` in Beijing time.
pub fn format_push_time(ms: u64) -> String {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .with_timezone(&BEIJING)
        .format("%Y%m%d%H%M")
        .to_string()
}

/// When a `pushTime` fires: a minute after `now_ms` and within [`MAX_AHEAD_MS`]; else the
/// result string that says what is wrong with it.
pub fn check_push_time(text: &str, now_ms: u64) -> Result<u64, String> {
    let shown: String = text.chars().take(40).collect();
    let at = parse_push_time(text).ok_or_else(|| {
        format!("pushTime {shown:?} is not yyyyMMddHHmm in Beijing time (UTC+8), e.g. 202601011230")
    })?;
    if at <= now_ms {
        return Err(format!(
            "pushTime {shown} is not in the future (it is {} in Beijing time now)",
            format_push_time(now_ms)
        ));
    }
    if at > now_ms + MAX_AHEAD_MS {
        return Err(format!(
            "pushTime {shown} is more than 7 days ahead (it is {} in Beijing time now)",
            format_push_time(now_ms)
        ));
    }
    Ok(at)
}

/// The request a scheduled app content keeps: what `getContentIdAction` got, less
/// [`NOT_STORED`].
pub fn stored_request(body: &Map<String, Value>) -> Map<String, Value> {
    body.iter()
        .filter(|(k, _)| !NOT_STORED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How the engine's scheduler reads this door's schedules: a one-time trigger `{"time": ms}`
/// and the stored push `{"request": <getContentIdAction request>, "msg_id"}`.
pub struct LegacySchedules;

impl ScheduleDoor for LegacySchedules {
    fn name(&self) -> &'static str {
        DOOR
    }

    fn next_after(&self, trigger: &Value, after_ms: u64) -> Result<Option<u64>, String> {
        let time = trigger["time"]
            .as_u64()
            .ok_or("a Getui legacy schedule's trigger has no time")?;
        Ok((time > after_ms).then_some(time))
    }

    fn push<'a>(
        &'a self,
        _engine: &'a Engine,
        app: &'a AppState,
        record: &'a ScheduleRecord,
    ) -> FiringPush<'a> {
        Box::pin(async move {
            let stored = |m: &str| (FIRING_FAILED, format!("stored schedule: {m}"));
            let request = record.push["request"]
                .as_object()
                .ok_or_else(|| stored("no request"))?;
            let msg_id = record.push["msg_id"]
                .as_u64()
                .filter(|n| *n > 0)
                .ok_or_else(|| stored("no msg_id"))?;
            let prepared = app_content(app, request).map_err(|Refusal(v)| {
                let why = v["result"].as_str().unwrap_or("refused");
                (FIRING_FAILED, why.to_string())
            })?;
            if prepared.revoke.is_some() {
                return Err(stored("a revoke cannot be scheduled"));
            }
            let mut push = prepared.push;
            push.msg_id = msg_id;
            Ok(push)
        })
    }

    fn accept_error(&self, e: &EngineError) -> Option<FiringError> {
        match e {
            EngineError::NoTarget => Some((FIRING_FAILED, "NOTarget".into())),
            EngineError::TooManyPaced => Some((FIRING_FAILED, "TooFrequent".into())),
            EngineError::Invalid(m) => Some((FIRING_FAILED, m.clone())),
            _ => None,
        }
    }
}

fn refuse<T>(r: &str) -> Result<T, Refusal> {
    Err(Refusal(result(r)))
}

impl Legacy {
    /// Schedules a stored app content whose request has a `pushTime`; the msg_id its push
    /// will have.
    pub(crate) async fn schedule_app(
        &self,
        app: &AppState,
        prepared: &Prepared,
        request: &Map<String, Value>,
    ) -> Result<u64, Refusal> {
        if prepared.revoke.is_some() {
            return refuse("pushTime: a revoke cannot be scheduled");
        }
        let text = push_time_of(request).unwrap_or_default();
        let at_ms = check_push_time(&text, now_ms()).map_err(|m| Refusal(result(&m)))?;
        let scheduler = self.engine.schedules();
        if scheduler.active_count(&app.app_key) >= MAX_WAITING_PER_APP {
            return refuse(&format!(
                "PushTotalNumOverLimit: an app may have at most {MAX_WAITING_PER_APP} scheduled tasks waiting"
            ));
        }
        let msg_id = self.engine.reserve_msg_id().await.map_err(engine_refusal)?;
        let record = ScheduleRecord {
            schedule_id: task_id(Door::Legacy, TaskKind::App, msg_id),
            app_key: app.app_key.clone(),
            name: prepared.push.labels.group.clone().unwrap_or_default(),
            enabled: true,
            trigger: json!({ "time": at_ms }),
            push: json!({ "request": request, "msg_id": msg_id }),
            created_ms: now_ms(),
            next_ms: Some(at_ms),
            door: DOOR.to_string(),
        };
        scheduler.save(record).await.map_err(engine_refusal)?;
        Ok(msg_id)
    }

    /// A schedule of this app made through this door, by its task id (any form).
    fn find_schedule(&self, app: &AppState, task: &str) -> Option<ScheduleRecord> {
        let id = task_id(Door::Legacy, TaskKind::App, msg_id_of(task.trim())?);
        self.engine
            .schedules()
            .find(&app.app_key, &id)
            .filter(|s| s.door == DOOR)
    }

    /// Deletes the schedule that will make push `msg_id`, if it waits; whether it did.
    pub(crate) async fn cancel_waiting(
        &self,
        app: &AppState,
        msg_id: u64,
    ) -> Result<bool, Refusal> {
        let id = task_id(Door::Legacy, TaskKind::App, msg_id);
        match self.find_schedule(app, &id) {
            Some(s) if s.next_ms.is_some() => self
                .engine
                .schedules()
                .delete(&app.app_key, &s.schedule_id)
                .await
                .map_err(engine_refusal),
            _ => Ok(false),
        }
    }

    /// `appId` (if given) and `taskId` of the schedule actions.
    fn schedule_task_of<'a>(
        &self,
        app: &AppState,
        body: &'a Map<String, Value>,
    ) -> Result<&'a str, Refusal> {
        check_app_ids(app, body, "appId")?;
        match str_field(body, "taskId").map(str::trim) {
            Some(t) if !t.is_empty() => Ok(t),
            _ => refuse("taskId is not null"),
        }
    }

    /// `getScheduleTaskAction`: `{"result": "ok", "taskId", "pushTime" (yyyyMMddHHmm,
    /// Beijing), "createTime" (ms), "status"}`; `status` is `waiting`, `sent` (with `msgId`
    /// and `sendTime`, ms) or `failed` (with `sendTime` and `failReason`).
    pub(crate) async fn get_schedule_task(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let task = match self.schedule_task_of(app, body) {
            Ok(t) => t,
            Err(Refusal(v)) => return v,
        };
        let Some(s) = self.find_schedule(app, task) else {
            return json!({"result": "TaskNotExist", "taskId": task});
        };
        let mut out = json!({
            "result": "ok",
            "taskId": s.schedule_id,
            "pushTime": format_push_time(s.trigger["time"].as_u64().unwrap_or_default()),
            "createTime": s.created_ms.to_string(),
            "status": "waiting",
        });
        if s.next_ms.is_some() {
            return out;
        }
        let runs = match self.engine.store().schedule_runs(&s.schedule_id).await {
            Ok(r) => r,
            Err(e) => return engine_refusal(e.into()).0,
        };
        match (runs.iter().find(|r| r.msg_id.is_some()), runs.last()) {
            (Some(sent), _) => {
                out["status"] = json!("sent");
                out["msgId"] = json!(sent.msg_id.unwrap_or_default().to_string());
                out["sendTime"] = json!(sent.at_ms.to_string());
            }
            (None, Some(failed)) => {
                out["status"] = json!("failed");
                out["sendTime"] = json!(failed.at_ms.to_string());
                out["failReason"] = json!(failed.error_message);
            }
            (None, None) => {
                out["status"] = json!("failed");
                out["failReason"] = json!("it never fired");
            }
        }
        out
    }

    /// `delScheduleTaskAction`: a task that has not fired is deleted (it never pushes); one
    /// that has fired, or an unknown one, cannot be.
    pub(crate) async fn del_schedule_task(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let task = match self.schedule_task_of(app, body) {
            Ok(t) => t,
            Err(Refusal(v)) => return v,
        };
        let Some(s) = self.find_schedule(app, task) else {
            return json!({"result": "TaskNotExist", "taskId": task});
        };
        if s.next_ms.is_none() {
            return json!({"taskId": task, "result":
                "TaskAlreadyFired: a scheduled task that has fired cannot be deleted (stopTask stops its push)"});
        }
        match self
            .engine
            .schedules()
            .delete(&app.app_key, &s.schedule_id)
            .await
        {
            Ok(true) => json!({"result": "ok", "taskId": task}),
            Ok(false) => json!({"result": "TaskNotExist", "taskId": task}),
            Err(e) => engine_refusal(e).0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-01 00:00 UTC, 08:00 in Beijing.
    const NEW_YEAR_UTC: u64 = 1_767_225_600_000;

    #[test]
    fn push_time_is_beijing_time_to_the_minute() {
        assert_eq!(parse_push_time("202601010800"), Some(NEW_YEAR_UTC));
        assert_eq!(
            parse_push_time("202601010000"),
            Some(NEW_YEAR_UTC - 8 * 3_600_000)
        );
        assert_eq!(parse_push_time("202601010801"), Some(NEW_YEAR_UTC + 60_000));
        // A leap day, and the last minute of a year.
        assert!(parse_push_time("202802291200").is_some());
        assert_eq!(
            parse_push_time("202601010759"),
            parse_push_time("202512312359").map(|t| t + 8 * 3_600_000)
        );
        assert_eq!(format_push_time(NEW_YEAR_UTC), "202601010800");
        assert_eq!(format_push_time(NEW_YEAR_UTC + 59_999), "202601010800");
        assert_eq!(format_push_time(NEW_YEAR_UTC - 1), "202601010759");
    }

    #[test]
    fn bad_push_times_are_not_read() {
        for bad in [
            "",
            "20260101080",
            "2026010108000",
            "2026-01-01 08:00",
            "202601010800 ",
            "+20601010800",
            "-20601010800",
            "2026010108.0",
            "202613010800",
            "202600010800",
            "202602300800",
            "202702290800",
            "202601012400",
            "202601010860",
            "２０２６０１０１０８００",
            "abcdefghijkl",
        ] {
            assert_eq!(parse_push_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn push_time_must_be_ahead_and_within_a_week() {
        let now = NEW_YEAR_UTC + 30_000; // 08:00:30 in Beijing
        assert_eq!(
            check_push_time("202601010801", now),
            Ok(NEW_YEAR_UTC + 60_000)
        );
        let current = check_push_time("202601010800", now).unwrap_err();
        assert!(current.contains("not in the future") && current.contains("202601010800"));
        let past = check_push_time("202512310800", now).unwrap_err();
        assert!(past.contains("not in the future"), "{past}");
        assert!(check_push_time("202601080800", now).is_ok());
        let far = check_push_time("202601080801", now).unwrap_err();
        assert!(far.contains("7 days"), "{far}");
        let bad = check_push_time("2026-01-01", now).unwrap_err();
        assert!(
            bad.starts_with("pushTime \"2026-01-01\" is not yyyyMMddHHmm"),
            "{bad}"
        );
        let long = check_push_time(&"9".repeat(5000), now).unwrap_err();
        assert!(long.len() < 200, "{long}");
    }

    #[test]
    fn push_time_is_read_from_strings_and_numbers() {
        let body = |v: Value| {
            json!({ "pushTime": v })
                .as_object()
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            push_time_of(&body(json!(" 202601010801 "))).as_deref(),
            Some("202601010801")
        );
        assert_eq!(
            push_time_of(&body(json!(202601010801_u64))).as_deref(),
            Some("202601010801")
        );
        assert_eq!(push_time_of(&body(json!(""))), None);
        assert_eq!(push_time_of(&body(Value::Null)), None);
        assert_eq!(push_time_of(&Map::new()), None);
        // Not a time at all: kept, to be refused rather than pushed at once.
        assert_eq!(push_time_of(&body(json!(true))).as_deref(), Some("true"));
    }

    #[test]
    fn the_stored_request_keeps_no_token() {
        let body = json!({"action": "getContentIdAction", "appkey": "k", "authToken": "secret",
            "version": "4.1.1.2", "clientData": "x", "pushTime": "202601010801",
            "conditions": [{"key": "tag", "values": ["a"], "optType": 0}]});
        let stored = stored_request(body.as_object().unwrap_or(&Map::new()));
        let mut keys: Vec<&str> = stored.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["clientData", "conditions", "pushTime"]);
    }

    #[test]
    fn the_trigger_fires_once() {
        let door = LegacySchedules;
        let t = json!({"time": 1_000});
        assert_eq!(door.next_after(&t, 999), Ok(Some(1_000)));
        assert_eq!(door.next_after(&t, 1_000), Ok(None));
        assert!(door.next_after(&json!({}), 0).is_err());
    }
}
