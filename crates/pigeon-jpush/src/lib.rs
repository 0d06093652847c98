//! Pigeon's JPush v3 front door: `POST /v3/push` and `POST /v3/push/validate`, spoken so that
//! the official JPush server SDKs work unchanged (jpush-v3.md).
//!
//! A thin translator: HTTP Basic auth against the app table, the push object parsed and
//! validated into a core `Push`, JPush's answers and error codes. It never touches storage or
//! connections; everything below goes through the engine.

mod fields;
mod push;

pub use fields::PushError;
pub use push::parse_push;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use pigeon_core::error_json;
use pigeon_engine::{AppState, Engine, EngineError};
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
struct JPush {
    engine: Arc<Engine>,
}

/// The JPush v3 routes (with and without a trailing slash).
pub fn router(engine: Arc<Engine>) -> Router {
    let push = || post(push).fallback(method_not_allowed);
    let validate = || post(validate).fallback(method_not_allowed);
    Router::new()
        .route("/v3/push", push())
        .route("/v3/push/", push())
        .route("/v3/push/validate", validate())
        .route("/v3/push/validate/", validate())
        .with_state(JPush { engine })
}

/// A JSON answer with the Content-Type every JPush client expects.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// A JPush error answer; the HTTP status follows from the code (jpush-v3.md §3).
pub fn error_response(code: u32, message: &str) -> Response {
    let status = match code {
        1000 => StatusCode::INTERNAL_SERVER_ERROR,
        1001 => StatusCode::METHOD_NOT_ALLOWED,
        1004 => StatusCode::UNAUTHORIZED,
        1030 => StatusCode::SERVICE_UNAVAILABLE,
        2002 => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::BAD_REQUEST,
    };
    json_response(status, &error_json(code, message))
}

async fn method_not_allowed() -> Response {
    error_response(1001, "this API only accepts POST")
}

async fn push(State(s): State<JPush>, headers: HeaderMap, body: Body) -> Response {
    handle(s, headers, body, false).await
}

async fn validate(State(s): State<JPush>, headers: HeaderMap, body: Body) -> Response {
    handle(s, headers, body, true).await
}

async fn handle(s: JPush, headers: HeaderMap, body: Body, validate_only: bool) -> Response {
    let app = match authenticate(&s.engine, &headers).await {
        Ok(app) => app,
        Err(r) => return r,
    };
    let value = match read_json(body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let push = match parse_push(&value) {
        Ok(p) => p,
        Err(e) => return error_response(e.code, &e.message),
    };
    let sendno = push.options.sendno.unwrap_or(0).to_string();
    match s.engine.accept(&app, push, validate_only).await {
        Ok(msg_id) => json_response(
            StatusCode::OK,
            &json!({"sendno": sendno, "msg_id": msg_id.to_string()}),
        ),
        Err(EngineError::NoTarget) => error_response(1011, "cannot find user by this audience"),
        Err(e) => {
            tracing::error!(error = %e, "push not accepted");
            error_response(1000, "internal error: the push was not accepted, retry")
        }
    }
}

/// Checks `Authorization: Basic base64(app_key:master_secret)`.
pub async fn authenticate(engine: &Engine, headers: &HeaderMap) -> Result<Arc<AppState>, Response> {
    let deny = |m: &str| error_response(1004, m);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            deny("missing Authorization header: use HTTP Basic with app_key:master_secret")
        })?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or_else(|| deny("Authorization must be HTTP Basic"))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| deny("Authorization is not valid base64"))?;
    let (key, secret) = decoded
        .split_once(':')
        .ok_or_else(|| deny("Authorization must be app_key:master_secret"))?;
    match engine.authenticate(key, secret).await {
        Ok(app) => Ok(app),
        Err(EngineError::BadCredentials) => Err(deny(
            "authentication failed: unknown app_key or wrong master_secret",
        )),
        Err(e) => {
            tracing::error!(error = %e, "authentication lookup failed");
            Err(error_response(1000, "internal error, retry"))
        }
    }
}

/// Reads a JSON body whatever its Content-Type says, within [`MAX_BODY_BYTES`].
pub async fn read_json(body: Body) -> Result<Value, Response> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            error_response(
                1005,
                &format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(error_response(
            1002,
            "request body is empty: a JSON push object is required",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        error_response(
            1003,
            &format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}
