//! The console's JSON API: each handler reads or acts through the engine for the session's
//! app. Errors are `{"error":{"code":<HTTP status>,"kind":..,"message":..,"field"?:..}}`.

use crate::session::{Who, SESSION_TTL};
use crate::{Console, MAX_BODY_BYTES};
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pigeon_engine::devices::Presence;
use pigeon_engine::{AppState, EngineError};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) type Answer = Result<Response, Fail>;

/// A console error answer.
#[derive(Debug)]
pub(crate) struct Fail {
    status: StatusCode,
    kind: &'static str,
    message: String,
    field: Option<&'static str>,
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let mut e =
            json!({"code": self.status.as_u16(), "kind": self.kind, "message": self.message});
        if let Some(f) = self.field {
            e["field"] = json!(f);
        }
        pigeon_http::json_response(self.status, &json!({ "error": e }))
    }
}

const COOKIE: &str = "pigeon_console";
/// Most pushes listed; most devices a search shows.
const MAX_PUSHES: u32 = 100;
const MAX_DEVICES: usize = 50;

pub(crate) fn error(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Fail {
    error_on(status, kind, message, None)
}

fn error_on(
    status: StatusCode,
    kind: &'static str,
    message: impl Into<String>,
    field: Option<&'static str>,
) -> Fail {
    Fail {
        status,
        kind,
        message: message.into(),
        field,
    }
}

fn ok(body: Value) -> Answer {
    Ok(pigeon_http::json_response(StatusCode::OK, &body))
}

fn internal(e: &dyn std::fmt::Display) -> Fail {
    tracing::error!(error = %e, "console call failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error, retry",
    )
}

fn engine_error(e: EngineError) -> Fail {
    match e {
        EngineError::Invalid(m) => error(StatusCode::BAD_REQUEST, "invalid", m),
        EngineError::UnknownPush(_) | EngineError::UnknownAbTest(_) => {
            error(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        EngineError::AlreadyRecalled(_) | EngineError::TooManyPaced => {
            error(StatusCode::CONFLICT, "conflict", e.to_string())
        }
        other => internal(&other),
    }
}

/// A JSON object body within [`MAX_BODY_BYTES`]: 413 beyond, 400 when not an object.
async fn read_object(body: Body) -> Result<Map<String, Value>, Fail> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the body must be a JSON object",
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("malformed JSON: {e}"),
        )),
    }
}

fn text<'a>(body: &'a Map<String, Value>, key: &'static str) -> Result<&'a str, Fail> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s.as_str()),
        Some(_) => Err(error_on(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{key} must be a string"),
            Some(key),
        )),
    }
}

fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn client_ip(ext: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn unauthorized() -> Fail {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "not signed in, or the session expired: sign in again",
    )
}

fn session(s: &Console, headers: &HeaderMap) -> Result<(String, Who), Fail> {
    let id = cookie_id(headers).ok_or_else(unauthorized)?;
    let found = s.sessions.get(id).ok_or_else(unauthorized)?;
    Ok((id.to_string(), found.who))
}

/// The app the session works on.
async fn app_of(s: &Console, headers: &HeaderMap) -> Result<Arc<AppState>, Fail> {
    let (_, who) = session(s, headers)?;
    let key = match who {
        Who::App(k) | Who::Operator(Some(k)) => k,
        Who::Operator(None) => {
            return Err(error(StatusCode::CONFLICT, "no_app", "pick an app first"))
        }
    };
    s.engine
        .app(&key)
        .await
        .map_err(|e| internal(&e))?
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the app no longer exists",
            )
        })
}

fn same_secret(a: &[u8], b: &[u8]) -> bool {
    // Constant time over the longer of the two: no early exit on the first difference.
    let n = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..n {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn session_cookie(id: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!(
        "{COOKIE}={id}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn who_json(who: &Who, operator_enabled: bool) -> Value {
    match who {
        Who::App(k) => json!({"signed_in": true, "kind": "app", "app_key": k,
                              "operator_enabled": operator_enabled}),
        Who::Operator(k) => json!({"signed_in": true, "kind": "operator", "app_key": k,
                                   "operator_enabled": operator_enabled}),
    }
}

/// `GET /console/api/session`: who is signed in (200 `{"signed_in":false}` when nobody is, so
/// the page's first call is no error).
pub async fn session_get(State(s): State<Console>, headers: HeaderMap) -> Answer {
    let enabled = s.operator_token.is_some();
    match session(&s, &headers) {
        Ok((_, who)) => {
            let mut body = who_json(&who, enabled);
            if let Some(key) = body["app_key"].as_str() {
                if let Ok(Some(app)) = s.engine.app(key).await {
                    body["app_name"] = json!(app.name);
                }
            }
            ok(body)
        }
        Err(_) => ok(json!({"signed_in": false, "operator_enabled": enabled})),
    }
}

/// `POST /console/api/session`: `{"app_key","master_secret"}` or `{"token"}`.
pub async fn sign_in(State(s): State<Console>, ext: axum::http::Extensions, body: Body) -> Answer {
    let body = read_object(body).await?;
    if !s.sessions.attempt(client_ip(&ext)) {
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many sign-in attempts from this address: wait a minute",
        ));
    }
    let token = text(&body, "token")?;
    let who = if !token.is_empty() {
        let Some(expected) = &s.operator_token else {
            return Err(error_on(
                StatusCode::UNAUTHORIZED,
                "operator_disabled",
                "operator sign-in is off: the server has no console_token set",
                Some("token"),
            ));
        };
        if !same_secret(expected.as_bytes(), token.as_bytes()) {
            return Err(error_on(
                StatusCode::UNAUTHORIZED,
                "bad_credentials",
                "wrong operator token",
                Some("token"),
            ));
        }
        Who::Operator(None)
    } else {
        let key = text(&body, "app_key")?;
        let secret = text(&body, "master_secret")?;
        if key.is_empty() || secret.is_empty() {
            return Err(error_on(
                StatusCode::BAD_REQUEST,
                "missing",
                "app_key and master_secret are both required",
                Some(if key.is_empty() {
                    "app_key"
                } else {
                    "master_secret"
                }),
            ));
        }
        match s.engine.authenticate(key, secret).await {
            Ok(app) => Who::App(app.app_key.clone()),
            Err(EngineError::BadCredentials) => {
                return Err(error_on(
                    StatusCode::UNAUTHORIZED,
                    "bad_credentials",
                    "wrong app_key or master_secret",
                    Some("master_secret"),
                ))
            }
            Err(e) => return Err(internal(&e)),
        }
    };
    let id = s.sessions.create(who.clone());
    let mut body = who_json(&who, s.operator_token.is_some());
    if let Who::App(key) = &who {
        if let Ok(Some(app)) = s.engine.app(key).await {
            body["app_name"] = json!(app.name);
        }
    }
    let mut response = pigeon_http::json_response(StatusCode::OK, &body);
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&id, SESSION_TTL.as_secs(), s.secure_cookie),
    );
    Ok(response)
}

/// `DELETE /console/api/session`: signs out (the cookie is cleared either way).
pub async fn sign_out(State(s): State<Console>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_id(&headers) {
        s.sessions.remove(id);
    }
    let mut response = pigeon_http::json_response(StatusCode::OK, &json!({"signed_in": false}));
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0, s.secure_cookie));
    response
}

/// `PUT /console/api/session/app` `{"app_key"}`: the operator works on that app.
pub async fn pick_app(State(s): State<Console>, headers: HeaderMap, body: Body) -> Answer {
    let (id, who) = session(&s, &headers)?;
    if !matches!(who, Who::Operator(_)) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an operator session can pick an app",
        ));
    }
    let body = read_object(body).await?;
    let key = text(&body, "app_key")?;
    let app = s.engine.app(key).await.map_err(|e| internal(&e))?;
    let Some(app) = app else {
        return Err(error_on(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no app {key:?}"),
            Some("app_key"),
        ));
    };
    s.sessions.pick(&id, app.app_key.clone());
    ok(json!({"app_key": app.app_key, "app_name": app.name}))
}

/// `GET /console/api/apps`: every app, for an operator.
pub async fn apps(State(s): State<Console>, headers: HeaderMap) -> Answer {
    let (_, who) = session(&s, &headers)?;
    let mut apps: Vec<Value> = match who {
        Who::Operator(_) => s
            .engine
            .apps()
            .iter()
            .map(|a| json!({"app_key": a.app_key, "name": a.name, "devices": a.device_count()}))
            .collect(),
        Who::App(key) => match s.engine.app(&key).await.map_err(|e| internal(&e))? {
            Some(a) => {
                vec![json!({"app_key": a.app_key, "name": a.name, "devices": a.device_count()})]
            }
            None => Vec::new(),
        },
    };
    apps.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    ok(json!({ "apps": apps }))
}

fn channels_json(c: &Option<Vec<pigeon_engine::report::ChannelCounts>>) -> Value {
    match c {
        None => Value::Null,
        Some(all) => all
            .iter()
            .map(|c| json!({"channel": c.channel, "sent": c.sent, "delivered": c.delivered}))
            .collect(),
    }
}

/// `GET /console/api/pushes?limit=N`: the app's latest pushes, newest first.
pub async fn pushes(
    State(s): State<Console>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let app = app_of(&s, &headers).await?;
    let limit = match q.get("limit") {
        None => 30,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PUSHES).contains(n))
            .ok_or_else(|| {
                error_on(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("limit must be 1 to {MAX_PUSHES}"),
                    Some("limit"),
                )
            })?,
    };
    let all = s
        .engine
        .recent_pushes(&app, limit)
        .await
        .map_err(engine_error)?;
    let list: Vec<Value> = all
        .iter()
        .map(|p| {
            let c = &p.counts;
            json!({"msg_id": c.msg_id.to_string(), "sent_ms": c.sent_ms, "group": c.group,
                   "funnel": {"targeted": c.targets, "sent": c.sent, "delivered": c.delivered,
                              "clicked": c.clicked},
                   "channels": channels_json(&p.channels)})
        })
        .collect();
    ok(json!({ "pushes": list }))
}

fn parse_msg_id(raw: &str) -> Result<u64, Fail> {
    raw.parse().map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("msg_id {raw:?} is not a number"),
        )
    })
}

/// `GET /console/api/pushes/{msg_id}`: one push, its funnel, channels and timeline.
pub async fn push_one(
    State(s): State<Console>,
    headers: HeaderMap,
    Path(msg_id): Path<String>,
) -> Answer {
    let app = app_of(&s, &headers).await?;
    let msg_id = parse_msg_id(&msg_id)?;
    let d = s
        .engine
        .push_detail(&app, msg_id)
        .await
        .map_err(engine_error)?
        .ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no push {msg_id} of this app"),
            )
        })?;
    let funnel = |c: &pigeon_engine::report::Counts| json!({"targeted": c.targets, "sent": c.sent, "delivered": c.delivered, "clicked": c.clicked});
    let push = serde_json::to_value(&d.push).map_err(|e| internal(&e))?;
    let by_platform: Vec<Value> = d
        .report
        .by_platform
        .iter()
        .map(|(p, c)| json!({"platform": p.to_string(), "funnel": funnel(c)}))
        .collect();
    let undelivered: Vec<Value> = d
        .undelivered
        .iter()
        .map(|(reason, n)| json!({"reason": reason, "count": n}))
        .collect();
    ok(json!({
        "msg_id": msg_id.to_string(),
        "sent_ms": d.push.sent_ms,
        "expires_ms": d.expires_ms,
        "recalled_ms": d.recalled_ms,
        "overridden_by": d.report.overridden_by.map(|m| m.to_string()),
        "platforms": push.get("platforms"),
        "audience": push.get("audience"),
        "content": push.get("content"),
        "policy": push.get("policy"),
        "labels": push.get("labels"),
        "split": push.get("split"),
        "funnel": funnel(&d.report.total),
        "by_platform": by_platform,
        "channels": channels_json(&d.channels),
        "undelivered": undelivered,
    }))
}

/// `POST /console/api/pushes/{msg_id}/recall`: as JPush's `DELETE /v3/push/{msg_id}`.
pub async fn recall(
    State(s): State<Console>,
    headers: HeaderMap,
    Path(msg_id): Path<String>,
) -> Answer {
    let app = app_of(&s, &headers).await?;
    let msg_id = parse_msg_id(&msg_id)?;
    s.engine.recall(&app, msg_id).await.map_err(engine_error)?;
    ok(json!({"recalled": msg_id.to_string()}))
}

/// Which of the form's fields a JPush error message is about.
fn field_of(message: &str) -> &'static str {
    const FIELDS: &[(&str, &str)] = &[
        ("time_to_live", "time_to_live"),
        ("title", "title"),
        ("msg_content", "message"),
        ("audience", "audience"),
        ("registration_id", "audience"),
        ("alias", "audience"),
        ("tag", "audience"),
        ("platform", "platform"),
        ("alert", "alert"),
        ("notification", "alert"),
        ("message", "message"),
        ("options", "time_to_live"),
    ];
    FIELDS
        .iter()
        .find(|(needle, _)| message.contains(needle))
        .map_or("form", |(_, field)| field)
}

/// The form's values as a JPush push object.
fn push_object(body: &Map<String, Value>) -> Result<Value, Fail> {
    let bad = |field: &'static str, m: String| {
        error_on(StatusCode::BAD_REQUEST, "invalid", m, Some(field))
    };
    let platform = match body.get("platform") {
        None | Some(Value::Null) => json!("all"),
        Some(Value::String(p)) if p == "all" => json!("all"),
        Some(Value::Array(list)) => Value::Array(list.clone()),
        Some(Value::String(p)) => json!([p]),
        Some(_) => return Err(bad("platform", "platform must be all or a list".into())),
    };
    let kind = text(body, "audience_kind")?;
    let values: Vec<&str> = text(body, "audience_values")?
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|v| !v.is_empty())
        .collect();
    let audience = match kind {
        "" | "all" => json!("all"),
        "tag" | "alias" | "registration_id" => {
            if values.is_empty() {
                return Err(bad(
                    "audience",
                    format!("audience.{kind}: give at least one value"),
                ));
            }
            json!({ kind: values })
        }
        other => {
            return Err(bad(
                "audience",
                format!("audience {other:?}: all, tag, alias or registration_id"),
            ))
        }
    };
    let mut push = json!({"platform": platform, "audience": audience});
    let alert = text(body, "alert")?;
    let title = text(body, "title")?;
    if !alert.is_empty() || !title.is_empty() {
        let mut n = json!({ "alert": alert });
        if !title.is_empty() {
            n["android"] = json!({"alert": alert, "title": title});
        }
        push["notification"] = n;
    }
    let message = text(body, "message")?;
    if !message.is_empty() {
        push["message"] = json!({ "msg_content": message });
    }
    match body.get("time_to_live") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t.trim().is_empty() => {}
        Some(Value::String(t)) => {
            let n: i64 = t.trim().parse().map_err(|_| {
                bad(
                    "time_to_live",
                    format!("options.time_to_live {t:?} is not a whole number of seconds"),
                )
            })?;
            push["options"] = json!({ "time_to_live": n });
        }
        Some(v @ Value::Number(_)) => push["options"] = json!({ "time_to_live": v }),
        Some(_) => {
            return Err(bad(
                "time_to_live",
                "options.time_to_live must be a number".into(),
            ))
        }
    }
    Ok(push)
}

/// `POST /console/api/pushes`: the send form, as a JPush push object through the same path
/// as `/v3/push`, for the session's app.
pub async fn send(
    State(s): State<Console>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    body: Body,
) -> Answer {
    let app = app_of(&s, &headers).await?;
    let body = read_object(body).await?;
    use pigeon_engine::limits::Admission;
    match s.engine.admit(&app, client_ip(&ext)) {
        Admission::Allowed(_) => {}
        Admission::Disabled => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "disabled",
                "the app is disabled",
            ))
        }
        Admission::IpDenied => {
            return Err(error(
                StatusCode::FORBIDDEN,
                "ip_denied",
                "this address is not in the app's IP allowlist",
            ))
        }
        Admission::RateLimited(_) => {
            return Err(error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "the app's rate limit is reached",
            ))
        }
    }
    let object = push_object(&body)?;
    let push = pigeon_jpush::parse_push(&object).map_err(|e| {
        error_on(
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("{} ({})", e.message, e.code),
            Some(field_of(&e.message)),
        )
    })?;
    let msg_id = s
        .engine
        .accept(&app, push, false)
        .await
        .map_err(|e| match e {
            EngineError::NoTarget => error_on(
                StatusCode::BAD_REQUEST,
                "no_target",
                "no device matched the audience (1011)",
                Some("audience"),
            ),
            EngineError::Invalid(m) => {
                let field = field_of(&m);
                error_on(StatusCode::BAD_REQUEST, "invalid", m, Some(field))
            }
            other => engine_error(other),
        })?;
    ok(json!({"msg_id": msg_id.to_string()}))
}

/// A vendor token as far as the console shows it: its first four characters.
fn masked_token(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("endpoint")
            .and_then(Value::as_str)
            .unwrap_or("subscription")
            .to_string(),
        other => other.to_string(),
    };
    let head: String = s.chars().take(4).collect();
    format!("{head}…")
}

/// `GET /console/api/devices?by=registration_id|alias|tag&q=...`.
pub async fn devices(
    State(s): State<Console>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Answer {
    let app = app_of(&s, &headers).await?;
    let by = q.get("by").map(String::as_str).unwrap_or("registration_id");
    let needle = q.get("q").map(|v| v.trim()).unwrap_or("");
    if needle.is_empty() || needle.len() > 256 {
        return Err(error_on(
            StatusCode::BAD_REQUEST,
            "invalid",
            "give a registration id, alias or tag (1 to 256 characters)",
            Some("q"),
        ));
    }
    let (found, total) = match by {
        "registration_id" => {
            let d = s.engine.find_device_caught_up(&app, needle).await;
            let n = u64::from(d.is_some());
            (d.into_iter().collect::<Vec<_>>(), n)
        }
        "alias" => {
            let mut all = s
                .engine
                .alias_devices(&app, needle, pigeon_core::PlatformSet::all());
            let n = all.len() as u64;
            all.truncate(MAX_DEVICES);
            (all, n)
        }
        "tag" => s.engine.tag_devices(&app, needle, MAX_DEVICES),
        other => {
            return Err(error_on(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("by {other:?}: registration_id, alias or tag"),
                Some("by"),
            ))
        }
    };
    let rids: Vec<String> = found.iter().map(|d| d.registration_id.clone()).collect();
    let presence = s
        .engine
        .device_presence(&app, &rids)
        .await
        .map_err(engine_error)?;
    let list: Vec<Value> = found
        .iter()
        .zip(presence)
        .map(|(d, p)| {
            let (online, last_seen_ms) = match p {
                Some(Presence::Online) => (true, None),
                Some(Presence::Offline(at)) => (false, at),
                None => (false, None),
            };
            let tokens: Map<String, Value> = d
                .push_tokens
                .iter()
                .map(|(k, v)| (k.clone(), json!(masked_token(v))))
                .collect();
            json!({"registration_id": d.registration_id, "platform": d.platform.to_string(),
                   "alias": d.alias, "tags": d.tags, "online": online,
                   "last_seen_ms": last_seen_ms, "vendor_tokens": tokens,
                   "badge": s.engine.badge_of(&app, d.ordinal),
                   "created_ms": d.created_ms, "info": d.info})
        })
        .collect();
    ok(json!({"devices": list, "total": total}))
}

/// `GET /console/api/callbacks`: endpoints, their lag and dead letters.
pub async fn callbacks(State(s): State<Console>, headers: HeaderMap) -> Answer {
    let app = app_of(&s, &headers).await?;
    let endpoints = s
        .engine
        .callback_endpoints(&app)
        .await
        .map_err(engine_error)?;
    let mut out = Vec::new();
    for e in endpoints.iter().filter(|e| !e.push_level) {
        let pending = s.engine.pending_batches(e).await.map_err(engine_error)?;
        let dead = s.engine.dead_letters(e).await.map_err(engine_error)?;
        let mut view = pigeon_callbacks::endpoint_view(e);
        view["pending_batches"] = json!(pending.len());
        view["pending_since_ms"] = json!(pending.iter().map(|b| b.first_ms).min());
        view["dead"] = dead
            .iter()
            .map(|b| {
                json!({"delivery_id": b.delivery_id, "command": b.command,
                       "events": serde_json::from_str::<Vec<Value>>(&b.events).map(|e| e.len()).unwrap_or(0),
                       "attempts": b.attempts, "first_ms": b.first_ms, "last_error": b.last_error})
            })
            .collect();
        out.push(view);
    }
    ok(json!({ "callbacks": out }))
}

/// `POST /console/api/callbacks/{id}/dead/{delivery_id}/replay`.
pub async fn replay(
    State(s): State<Console>,
    headers: HeaderMap,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Answer {
    let app = app_of(&s, &headers).await?;
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no dead batch {delivery_id:?} on callback endpoint {id}"),
        )
    };
    let Ok(id) = id.parse::<u64>() else {
        return Err(not_found());
    };
    let endpoint = s
        .engine
        .callback_endpoint(&app, id)
        .await
        .map_err(engine_error)?
        .ok_or_else(not_found)?;
    if !s
        .engine
        .replay_dead_letter(&endpoint, &delivery_id)
        .await
        .map_err(engine_error)?
    {
        return Err(not_found());
    }
    ok(json!({"replayed": delivery_id}))
}

/// The doors whose schedules the console lists.
const SCHEDULE_DOORS: &[&str] = &["jpush", "getui-v2", "getui-legacy"];

/// `GET /console/api/schedules`: schedules that will still fire, of every door.
pub async fn schedules(State(s): State<Console>, headers: HeaderMap) -> Answer {
    let app = app_of(&s, &headers).await?;
    let list: Vec<Value> = SCHEDULE_DOORS
        .iter()
        .flat_map(|door| s.engine.schedules().active(&app.app_key, door))
        .map(|r| {
            json!({"schedule_id": r.schedule_id, "name": r.name, "enabled": r.enabled,
                   "door": r.door, "next_ms": r.next_ms, "created_ms": r.created_ms,
                   "trigger": r.trigger})
        })
        .collect();
    ok(json!({ "schedules": list }))
}

/// `GET /console/api/vendors`: credentials masked, and the Web Push public key.
pub async fn vendors(State(s): State<Console>, headers: HeaderMap) -> Answer {
    let app = app_of(&s, &headers).await?;
    ok(s.engine.vendor_channels(&app).await.map_err(engine_error)?)
}

/// `GET /console/api/segments`.
pub async fn segments(State(s): State<Console>, headers: HeaderMap) -> Answer {
    let app = app_of(&s, &headers).await?;
    let list: Vec<Value> = s
        .engine
        .segments(&app)
        .iter()
        .map(|g| {
            json!({"segment_id": g.segment_id, "name": g.name, "audience": g.audience,
                   "size": s.engine.segment_size(&app, g), "created_ms": g.created_ms})
        })
        .collect();
    ok(json!({ "segments": list }))
}

/// `GET /console/api/abtests`: each test with its report (each variant's funnel, the leader).
pub async fn abtests(State(s): State<Console>, headers: HeaderMap) -> Answer {
    let app = app_of(&s, &headers).await?;
    let mut list = Vec::new();
    for t in s.engine.abtests(&app) {
        let r = s
            .engine
            .abtest_report(&app, &t.abtest_id)
            .await
            .map_err(engine_error)?;
        let variants: Vec<Value> = r
            .variants
            .iter()
            .map(|v| {
                json!({"name": v.name, "click_rate": v.click_rate(),
                       "funnel": {"targeted": v.targeted, "sent": v.sent,
                                  "delivered": v.delivered, "clicked": v.clicked}})
            })
            .collect();
        list.push(
            json!({"abtest_id": t.abtest_id, "name": t.name, "audience": t.audience,
                         "control_weight": t.control_weight, "created_ms": t.created_ms,
                         "variants": variants, "control_targeted": r.control_targeted,
                         "leader": r.leader.and_then(|i| r.variants.get(i)).map(|v| v.name.clone()),
                         "p_value": r.p_value}),
        );
    }
    ok(json!({ "abtests": list }))
}

/// `GET /console/api/geofences`.
pub async fn geofences(State(s): State<Console>, headers: HeaderMap) -> Answer {
    let app = app_of(&s, &headers).await?;
    let list: Vec<Value> = s
        .engine
        .geofences(&app)
        .iter()
        .map(|f| {
            let mut events = Vec::new();
            for (bit, name) in [
                (pigeon_engine::geofences::FENCE_ENTER, "enter"),
                (pigeon_engine::geofences::FENCE_LEAVE, "leave"),
                (pigeon_engine::geofences::FENCE_STAY, "stay"),
            ] {
                if f.events & bit != 0 {
                    events.push(name);
                }
            }
            json!({"geofence_id": f.geofence_id, "name": f.name, "lat": f.lat, "lon": f.lon,
                   "radius_m": f.radius_m, "events": events, "stay_s": f.stay_s,
                   "created_ms": f.created_ms})
        })
        .collect();
    ok(json!({ "geofences": list }))
}

/// Any other path under `/console/api/`.
pub async fn unknown() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such console call").into_response()
}

pub async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this console call does not take that method",
    )
    .into_response()
}
