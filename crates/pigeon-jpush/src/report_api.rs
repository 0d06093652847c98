//! The Report API (jpush-v3.md §6), counted from what happened: targets from the resolved
//! audience, `sent` from frames written on Pigeon's own connection, `received` from device
//! acks, `click` from the device protocol's click op. Vendor channels do not exist yet, so
//! their counters are 0; what Pigeon cannot know (displays) is `null`.

use crate::api::{
    authenticate, engine_error, json_response, query_list, read_json, string_list, ApiError,
    ApiResult, Family,
};
use crate::JPush;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_core::Platform;
use pigeon_engine::report::{Counts, PushReport};
use pigeon_engine::AppState;
use serde_json::{json, Map, Value};

const F: Family = Family::Report;
/// Most msg_ids in one report query.
const MAX_MSG_IDS: usize = 100;
/// Most registration ids in one status query.
const MAX_IDS: usize = 1000;

fn parse_msg_id(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::invalid(F, format!("msg_id {s:?} is not a number")))
}

fn msg_ids(query: Option<&str>) -> Result<Vec<u64>, ApiError> {
    let ids = query_list(query, "msg_ids");
    if ids.is_empty() {
        return Err(ApiError::invalid(
            F,
            "msg_ids is required: a comma list of msg_ids",
        ));
    }
    if ids.len() > MAX_MSG_IDS {
        return Err(ApiError::invalid(
            F,
            format!(
                "{} msg_ids given, at most {MAX_MSG_IDS} are allowed",
                ids.len()
            ),
        ));
    }
    ids.iter().map(|s| parse_msg_id(s)).collect()
}

/// The reports of the requested pushes, in request order; `None` for ids that are not
/// pushes of this app.
async fn reports(
    s: &JPush,
    app: &AppState,
    query: Option<&str>,
) -> Result<Vec<(u64, Option<PushReport>)>, ApiError> {
    let mut out = Vec::new();
    for id in msg_ids(query)? {
        let r = s
            .engine
            .push_report(app, id)
            .await
            .map_err(|e| engine_error(F, e))?;
        out.push((id, r));
    }
    Ok(out)
}

/// Answers a report query: one row per requested msg_id, in request order.
async fn report_rows(
    s: &JPush,
    headers: &HeaderMap,
    query: Option<&str>,
    row: impl Fn(u64, Option<PushReport>) -> Value,
) -> ApiResult {
    let app = authenticate(&s.engine, headers, F).await?;
    let rows: Vec<Value> = reports(s, &app, query)
        .await?
        .into_iter()
        .map(|(id, r)| row(id, r))
        .collect();
    Ok(json_response(StatusCode::OK, &Value::Array(rows)))
}

fn on(r: &PushReport, p: Platform) -> Counts {
    r.by_platform
        .iter()
        .find(|(q, _)| *q == p)
        .map(|(_, c)| *c)
        .unwrap_or_default()
}

/// `GET /v3/received?msg_ids=..`
pub async fn received(
    State(s): State<JPush>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    report_rows(&s, &headers, query.as_deref(), |id, r| match r {
        None => json!({"msg_id": id.to_string(), "android_received": null,
                           "ios_apns_sent": null, "ios_apns_received": null,
                           "ios_msg_received": null, "wp_mpns_sent": null}),
        Some(r) => json!({"msg_id": id.to_string(),
                              "android_received": on(&r, Platform::Android).delivered,
                              "ios_apns_sent": 0, "ios_apns_received": 0,
                              "ios_msg_received": on(&r, Platform::Ios).delivered,
                              "wp_mpns_sent": 0}),
    })
    .await
}

/// `GET /v3/received/detail?msg_ids=..`
pub async fn received_detail(
    State(s): State<JPush>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    const COUNTERS: [&str; 15] = [
        "jpush_received",
        "android_pns_sent",
        "android_pns_received",
        "ios_apns_sent",
        "ios_apns_received",
        "ios_msg_received",
        "live_acivity_sent",
        "live_acivity_received",
        "wp_mpns_sent",
        "quickapp_jpush_received",
        "quickapp_pns_sent",
        "hmos_hmpns_sent",
        "hmos_hmpns_received",
        "hmos_msg_sent",
        "hmos_msg_received",
    ];
    report_rows(&s, &headers, query.as_deref(), |id, r| {
        let mut row = Map::new();
        row.insert("msg_id".into(), json!(id.to_string()));
        for c in COUNTERS {
            let v = match &r {
                None => Value::Null,
                Some(r) => json!(match c {
                    "jpush_received" => on(r, Platform::Android).delivered,
                    "ios_msg_received" => on(r, Platform::Ios).delivered,
                    "quickapp_jpush_received" => on(r, Platform::Quickapp).delivered,
                    "hmos_msg_sent" => on(r, Platform::Hmos).sent,
                    "hmos_msg_received" => on(r, Platform::Hmos).delivered,
                    // Vendor channels (APNs, Huawei, ...) carried nothing.
                    _ => 0,
                }),
            };
            row.insert(c.into(), v);
        }
        if let Some(by) = r.as_ref().and_then(|r| r.overridden_by) {
            row.insert("overridden_by".into(), json!(by.to_string()));
        }
        Value::Object(row)
    })
    .await
}

fn channel(c: Counts) -> Value {
    json!({"target": c.targets, "sent": c.sent, "received": c.delivered,
           "display": null, "click": c.clicked})
}

fn zero() -> Counts {
    Counts::default()
}

/// One kind's statistics: totals plus Pigeon's own channel per platform group, with each
/// vendor channel at 0.
fn kind_stats(r: &PushReport, carried: bool) -> Value {
    if !carried {
        return Value::Null;
    }
    let vendors = |own: &str, c: Counts, others: &[&str]| {
        let mut m = Map::new();
        m.insert(own.into(), channel(c));
        for v in others {
            m.insert((*v).into(), channel(zero()));
        }
        Value::Object(m)
    };
    let t = r.total;
    json!({
        "target": t.targets, "sent": t.sent, "received": t.delivered, "display": null,
        "click": t.clicked,
        "sub_android": vendors("jg_android", on(r, Platform::Android),
            &["xiaomi", "huawei", "honor", "meizu", "oppo", "vivo", "asus", "fcm", "tuibida", "nio"]),
        "sub_ios": vendors("jg_ios", on(r, Platform::Ios), &["voip", "apns"]),
        "sub_quickapp": vendors("quick_jg", on(r, Platform::Quickapp),
            &["quick_xiaomi", "quick_huawei", "quick_oppo"]),
        "sub_hmos": vendors("jg_hmos", on(r, Platform::Hmos), &["hmpns"]),
    })
}

/// `GET /v3/messages/detail?msg_ids=..` (the format JPush uses since 2021).
pub async fn messages_detail(
    State(s): State<JPush>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    report_rows(&s, &headers, query.as_deref(), |id, r| match r {
        None => json!({"msg_id": id.to_string(), "details": null}),
        Some(r) => {
            let mut row = json!({"msg_id": id.to_string(), "details": {
                // A device acks a push once; its counts go to the notification when the push
                // has one, else to the message.
                "notification": kind_stats(&r, r.has_notification),
                "message": kind_stats(&r, !r.has_notification && r.has_message),
                "inapp": null,
                "live_activity": null,
            }});
            if let Some(by) = r.overridden_by {
                row["overridden_by"] = json!(by.to_string());
            }
            row
        }
    })
    .await
}

/// `GET /v3/messages?msg_ids=..` (the old format).
pub async fn messages(
    State(s): State<JPush>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    report_rows(&s, &headers, query.as_deref(), |id, r| match r {
        None => {
            json!({"msg_id": id.to_string(), "android": null, "ios": null, "winphone": null})
        }
        Some(r) => {
            let (a, i) = (on(&r, Platform::Android), on(&r, Platform::Ios));
            json!({"msg_id": id.to_string(),
                    "android": {"received": a.delivered, "target": a.targets,
                                "online_push": a.sent, "click": a.clicked, "msg_click": a.clicked},
                    "ios": {"apns_sent": 0, "apns_target": 0, "apns_received": 0,
                            "click": i.clicked, "target": i.targets, "received": i.delivered},
                    "winphone": {"mpns_target": 0, "mpns_sent": 0, "click": 0}})
        }
    })
    .await
}

/// `POST /v3/status/message` with `{"msg_id":..,"registration_ids":[..],"date":..}`
pub async fn status_message(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let body = read_json(body, F).await?;
    let msg_id = match body.get("msg_id") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| ApiError::invalid(F, "msg_id must be a positive integer"))?,
        Some(Value::String(s)) => parse_msg_id(s)?,
        _ => return Err(ApiError::invalid(F, "msg_id is required")),
    };
    let rids = string_list(&body, "registration_ids", MAX_IDS, F)?;
    if rids.is_empty() {
        return Err(ApiError::invalid(
            F,
            "registration_ids must list 1 to 1000 ids",
        ));
    }
    if let Some(date) = body.get("date") {
        let ok = date.as_str().is_some_and(|d| {
            d.len() == 10 && chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()
        });
        if !ok {
            return Err(ApiError::invalid(F, "date must be yyyy-mm-dd"));
        }
    }
    let statuses = s
        .engine
        .delivery_status(&app, msg_id, &rids)
        .await
        .map_err(|e| engine_error(F, e))?
        .ok_or_else(|| {
            ApiError::invalid(F, format!("msg_id {msg_id} is not a push of this app"))
        })?;
    let mut out = Map::new();
    for (rid, status) in rids.iter().zip(statuses) {
        out.insert(rid.clone(), json!({"status": status as u8}));
    }
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}
