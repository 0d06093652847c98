//! The push side (jpush-v3.md §2–§4): push, validate, the cid pool, batch single push.

use crate::api::{
    authenticate, engine_error, json_response, ok_empty, query_value, read_json, ApiError,
    ApiResult, Family,
};
use crate::{parse_push, JPush};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_core::Push;
use pigeon_engine::{AppState, EngineError};
use pigeon_store::StoreError;
use serde_json::{json, Map, Value};

const F: Family = Family::Push;
/// Most cids handed out at once. JPush gives VIP apps up to 1000; every Pigeon app may.
const MAX_CIDS: usize = 1000;
/// Most pushes in one batch request.
const MAX_BATCH: usize = 1000;

pub async fn push(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    handle(s, headers, body, false).await
}

pub async fn validate(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    handle(s, headers, body, true).await
}

/// `DELETE /v3/push/{msg_id}`: recalls a push; 200 with an empty body.
pub async fn recall(
    State(s): State<JPush>,
    Path(msg_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let msg_id: u64 = msg_id
        .parse()
        .map_err(|_| ApiError::invalid(F, format!("msg_id {msg_id:?} is not a number")))?;
    s.engine
        .recall(&app, msg_id)
        .await
        .map_err(|e| engine_error(F, e))?;
    Ok(ok_empty())
}

async fn handle(s: JPush, headers: HeaderMap, body: Body, validate_only: bool) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let value = read_json(body, F).await?;
    let push = parse_push(&value)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message))?;
    let sendno = push.labels.sendno.unwrap_or(0).to_string();
    let msg_id = accept(&s, &app, push, validate_only).await?;
    let mut answer = json_response(
        StatusCode::OK,
        &json!({"sendno": sendno, "msg_id": msg_id.to_string()}),
    );
    answer
        .extensions_mut()
        .insert(pigeon_http::AnswerMsgId(msg_id));
    Ok(answer)
}

/// Checks a push's own `callback.url` against the operator's address policy: not to a
/// private address, written as one or resolving to one (`parse_push` checked its form; this
/// needs the engine's settings and a lookup, so it is done here, for every way in).
pub(crate) async fn check_callback_url(s: &JPush, push: &Push) -> Result<(), String> {
    let Some(url) = push.callback.as_ref().and_then(|c| c.url.as_deref()) else {
        return Ok(());
    };
    let policy = s.engine.private_networks().callbacks_policy();
    pigeon_core::net::check_url(url, "callback.url", &policy)
        .await
        .map(|_| ())
}

pub(crate) async fn accept(
    s: &JPush,
    app: &AppState,
    push: Push,
    validate_only: bool,
) -> Result<u64, ApiError> {
    check_callback_url(s, &push)
        .await
        .map_err(|m| ApiError::invalid(F, m))?;
    let accepted = s.engine.accept(app, push, validate_only).await;
    if accepted.is_ok() && !validate_only {
        pigeon_telemetry::push_accepted(pigeon_telemetry::Dialect::Jpush);
    }
    accepted.map_err(|e| match e {
        EngineError::Storage(StoreError::Unavailable(_)) => engine_error(F, e),
        EngineError::Storage(_) => {
            tracing::error!(error = %e, "push not accepted");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                1000,
                "internal error: the push was not accepted, retry",
            )
        }
        other => engine_error(F, other),
    })
}

/// `GET /v3/push/cid?count=n&type=push|schedule`
pub async fn cid(
    State(s): State<JPush>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let count = match query_value(query.as_deref(), "count") {
        None => 1,
        Some(c) => c
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_CIDS).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(F, format!("count must be a number from 1 to {MAX_CIDS}"))
            })?,
    };
    match query_value(query.as_deref(), "type").as_deref() {
        None | Some("push") | Some("schedule") => {}
        Some(other) => {
            return Err(ApiError::invalid(
                F,
                format!("type must be push or schedule, not {other:?}"),
            ))
        }
    }
    let cids = s
        .engine
        .issue_cids(&app, count)
        .await
        .map_err(|e| engine_error(F, e))?;
    Ok(json_response(StatusCode::OK, &json!({ "cidlist": cids })))
}

/// Whom one batch entry targets.
#[derive(Clone, Copy)]
pub enum BatchTarget {
    RegistrationId,
    Alias,
}

/// `POST /v3/push/batch/regid/single`
pub async fn batch_regid(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    batch(s, headers, body, BatchTarget::RegistrationId).await
}

/// `POST /v3/push/batch/alias/single`
pub async fn batch_alias(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    batch(s, headers, body, BatchTarget::Alias).await
}

/// Each entry of `pushlist` is its own push, keyed by a cid from the pool; one bad entry
/// fails alone, in its own slot of the answer.
async fn batch(s: JPush, headers: HeaderMap, body: Body, target: BatchTarget) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let value = read_json(body, F).await?;
    let list = value
        .get("pushlist")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                1002,
                "pushlist is required: an object of cid → push",
            )
        })?;
    if list.is_empty() || list.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            F,
            format!(
                "pushlist holds {} pushes; 1 to {MAX_BATCH} are allowed",
                list.len()
            ),
        ));
    }
    let mut out = Map::new();
    for (cid, entry) in list {
        let answer = match batch_entry(&s, &app, cid, entry, target).await {
            Ok(msg_id) => json!({"msg_id": msg_id.to_string()}),
            Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
        };
        out.insert(cid.clone(), answer);
    }
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}

async fn batch_entry(
    s: &JPush,
    app: &AppState,
    cid: &str,
    entry: &Value,
    target: BatchTarget,
) -> Result<u64, ApiError> {
    let obj = entry
        .as_object()
        .ok_or_else(|| ApiError::invalid(F, "each pushlist entry must be an object"))?;
    let who = obj
        .get("target")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, 1002, "target is required"))?;
    let mut push_obj = obj.clone();
    push_obj.remove("target");
    let audience = match target {
        BatchTarget::RegistrationId => json!({"registration_id": [who]}),
        BatchTarget::Alias => json!({"alias": [who]}),
    };
    push_obj.insert("audience".into(), audience);
    push_obj.insert("cid".into(), json!(cid));
    let mut push = parse_push(&Value::Object(push_obj))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message))?;
    push.idempotency = Some(pigeon_core::IdempotencyKey {
        key: cid.to_string(),
        issued_only: true,
    });
    accept(s, app, push, false).await
}

/// `POST /v3/grouppush` with `group-<group_key>:<master_secret>`: the push goes to every app
/// of the group, each answering for itself.
pub async fn group_push(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let deny = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, 1004, m);
    let (user, secret) = pigeon_http::basic_credentials(&headers).map_err(deny)?;
    let group_key = user
        .strip_prefix("group-")
        .ok_or_else(|| deny("group push authenticates as group-<group_key>:<master_secret>"))?;
    let (_, apps) = match s.engine.authenticate_group(group_key, &secret).await {
        Ok(g) => g,
        Err(EngineError::BadCredentials) => {
            return Err(deny(
                "authentication failed: unknown group or wrong master_secret",
            ))
        }
        Err(e) => return Err(ApiError::internal(F, &e)),
    };
    let value = read_json(body, F).await?;
    let push = parse_push(&value)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message))?;
    if push.policy.overrides.is_some() {
        return Err(ApiError::invalid(
            F,
            "group push does not support override_msg_id",
        ));
    }
    if push.idempotency.is_some() {
        return Err(ApiError::invalid(F, "group push does not support cid"));
    }
    // Once for the whole group, so a refused URL is the request's answer, not each app's.
    check_callback_url(&s, &push)
        .await
        .map_err(|m| ApiError::invalid(F, m))?;
    let sendno = push.labels.sendno.unwrap_or(0).to_string();
    let mut out = Map::new();
    out.insert(
        "group_msgid".into(),
        json!(pigeon_engine::uuid_v4().replace('-', "")),
    );
    for app in apps {
        let answer = match accept(&s, &app, push.clone(), false).await {
            Ok(msg_id) => json!({"msg_id": msg_id.to_string(), "sendno": sendno}),
            Err(e) => json!({"error": {"code": e.code, "message": e.message}}),
        };
        out.insert(app.app_key.clone(), answer);
    }
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}
