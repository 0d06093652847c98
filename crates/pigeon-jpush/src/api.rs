//! What every JPush v3 API shares: the error answer and its codes per API family, HTTP Basic
//! authentication, lenient JSON bodies, and query strings as JPush clients send them.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use pigeon_core::{Platform, PlatformSet};
use pigeon_engine::{AppState, Engine, EngineError};
use serde_json::{json, Value};
use std::sync::Arc;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON answer with the Content-Type every JPush client expects.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// `200 {}`: JPush answers some successes with an empty body; `{}` keeps every client happy
/// (jpush-v3.md §0).
pub fn ok_empty() -> Response {
    json_response(StatusCode::OK, &json!({}))
}

/// The API families, which answer the same situations with different codes (jpush-v3.md
/// §3, §5, §6, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Push,
    Device,
    Report,
    Schedule,
}

impl Family {
    fn auth_code(self) -> u32 {
        match self {
            Family::Push => 1004,
            Family::Device => 7004,
            Family::Report => 3001,
            Family::Schedule => 8101,
        }
    }
    fn invalid_code(self) -> u32 {
        match self {
            Family::Push => 1003,
            Family::Device => 7002,
            // The Report API documents no code for a bad parameter; 3002 is Pigeon's.
            Family::Report => 3002,
            Family::Schedule => 8100,
        }
    }
    fn internal_code(self) -> u32 {
        match self {
            Family::Push => 1000,
            Family::Device => 7000,
            Family::Report => 10,
            Family::Schedule => 8200,
        }
    }
}

/// A JPush error answer: `{"error":{"code":..,"message":..}}` with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
    /// Extra fields inside `error`, e.g. `illegal_rids`.
    pub extra: Option<(&'static str, Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: None,
        }
    }
    pub fn invalid(family: Family, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, family.invalid_code(), message)
    }
    pub fn not_found(code: u32, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
    pub fn internal(family: Family, e: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            family.internal_code(),
            "internal error, retry",
        )
    }
    pub fn with(mut self, key: &'static str, value: Value) -> ApiError {
        self.extra = Some((key, value));
        self
    }
    /// The answer for an engine error in `family`.
    pub fn engine(family: Family, e: EngineError) -> ApiError {
        match e {
            EngineError::Invalid(m) => ApiError::invalid(family, m),
            EngineError::AliasFull(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, 7015, e.to_string())
            }
            EngineError::UnknownDevice => ApiError::invalid(family, e.to_string()),
            EngineError::UnknownCid => ApiError::invalid(family, e.to_string()),
            EngineError::UnknownPush(_) => ApiError::not_found(1003, e.to_string()),
            EngineError::AlreadyRecalled(_) => ApiError::invalid(family, e.to_string()),
            EngineError::TooManyPaced => {
                ApiError::new(StatusCode::BAD_REQUEST, 1012, e.to_string())
            }
            EngineError::NoTarget => ApiError::new(
                StatusCode::BAD_REQUEST,
                1011,
                "cannot find user by this audience",
            ),
            other => ApiError::internal(family, &other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some((k, v)) = self.extra {
            error[k] = v;
        }
        json_response(self.status, &json!({ "error": error }))
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// The `user:password` of an HTTP Basic `Authorization` header.
pub fn basic_credentials(headers: &HeaderMap) -> Result<(String, String), &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("missing Authorization header: use HTTP Basic with app_key:master_secret")?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or("Authorization must be HTTP Basic")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or("Authorization is not valid base64")?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or("Authorization must be app_key:master_secret")?;
    Ok((user.to_string(), password.to_string()))
}

/// Checks `Authorization: Basic base64(app_key:master_secret)`, answering failures with the
/// family's code.
pub async fn authenticate(
    engine: &Engine,
    headers: &HeaderMap,
    family: Family,
) -> Result<Arc<AppState>, ApiError> {
    let deny = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, family.auth_code(), m);
    if family == Family::Device && headers.get(header::AUTHORIZATION).is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            7001,
            "missing Authorization header: use HTTP Basic with app_key:master_secret",
        ));
    }
    let (key, secret) = basic_credentials(headers).map_err(deny)?;
    match engine.authenticate(&key, &secret).await {
        Ok(app) => Ok(app),
        Err(EngineError::BadCredentials) => Err(deny(
            "authentication failed: unknown app_key or wrong master_secret",
        )),
        Err(e) => Err(ApiError::internal(family, &e)),
    }
}

/// Reads a JSON body whatever its Content-Type says, within [`MAX_BODY_BYTES`]. Errors use
/// the push codes (1005 too large, 1002 empty, 1003 malformed) or the family's invalid code.
pub async fn read_json(body: Body, family: Family) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            let m = format!("request body is larger than {MAX_BODY_BYTES} bytes");
            match family {
                Family::Push => ApiError::new(StatusCode::BAD_REQUEST, 1005, m),
                _ => ApiError::invalid(family, m),
            }
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        let m = "request body is empty: a JSON object is required";
        return Err(match family {
            Family::Push => ApiError::new(StatusCode::BAD_REQUEST, 1002, m),
            _ => ApiError::invalid(family, m),
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(
            family,
            format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// A query string's values for `key`, whether sent as repeated keys or a comma list, decoded.
pub fn query_list(query: Option<&str>, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The one value of `key` in a query string, if given.
pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The `platform` query parameter: a comma list of platforms, all when absent.
pub fn query_platforms(query: Option<&str>, family: Family) -> Result<PlatformSet, ApiError> {
    let names = query_list(query, "platform");
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(PlatformSet::all());
    }
    let mut set = PlatformSet::empty();
    for name in names {
        match Platform::parse(&name) {
            Some(p) => set.insert(p),
            None => {
                return Err(ApiError::invalid(
                    family,
                    format!("unknown platform {name:?} (android, ios, hmos, quickapp, web)"),
                ))
            }
        }
    }
    Ok(set)
}

/// A JSON array of strings at `body[key]`, at most `max` of them.
pub fn string_list(
    body: &Value,
    key: &str,
    max: usize,
    family: Family,
) -> Result<Vec<String>, ApiError> {
    let Some(v) = body.get(key) else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::invalid(family, format!("{key} must be an array of strings")))?;
    if list.len() > max {
        return Err(ApiError::invalid(
            family,
            format!(
                "{key} holds {} items, at most {max} are allowed",
                list.len()
            ),
        ));
    }
    list.iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| ApiError::invalid(family, format!("{key} must hold only strings")))
        })
        .collect()
}

/// Enforces an app's switch, IP allowlist and rate limit on every JPush API call that
/// carries its valid credentials, and tells the caller where it stands in `X-Rate-Limit-*`
/// headers (jpush-v3.md §10). Calls with bad credentials are left to the handlers' 401 and
/// are not counted, so nobody can use up another app's allowance.
pub async fn limits(
    axum::extract::State(engine): axum::extract::State<Arc<Engine>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let app = match basic_credentials(req.headers()) {
        Ok((key, secret)) => engine.authenticate(&key, &secret).await.ok(),
        Err(_) => None,
    };
    let Some(app) = app else {
        // Not an app's call: the answer (mostly a 401) still says where a caller stands,
        // with the server's default limit.
        let mut response = next.run(req).await;
        if !response.headers().contains_key("x-rate-limit-limit") {
            set_rate_headers(response.headers_mut(), engine.default_rate_state());
        }
        return response;
    };
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    use pigeon_engine::limits::Admission;
    let (mut response, rate) = match engine.admit(&app, ip) {
        Admission::Disabled => {
            let e = ApiError::new(StatusCode::FORBIDDEN, 2003, "the app is disabled");
            return e.into_response();
        }
        Admission::IpDenied => {
            let who = ip
                .map(|i| i.to_string())
                .unwrap_or_else(|| "unknown".into());
            let e = ApiError::new(
                StatusCode::FORBIDDEN,
                2004,
                format!("calls from {who} are not in the app's IP allowlist"),
            );
            return e.into_response();
        }
        Admission::RateLimited(rate) => (
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, 2002, "Rate limit exceeded")
                .into_response(),
            rate,
        ),
        Admission::Allowed(rate) => (next.run(req).await, rate),
    };
    set_rate_headers(response.headers_mut(), rate);
    // The request log names the app only when its credentials were checked.
    response
        .extensions_mut()
        .insert(CallerApp(Arc::from(app.app_key.as_str())));
    response
}

/// The app whose valid credentials a request carried, set on the response for the request log.
#[derive(Clone, Debug)]
pub struct CallerApp(pub Arc<str>);

/// Sets `X-Rate-Limit-Limit/Remaining/Reset` (jpush-v3.md §10).
pub fn set_rate_headers(h: &mut HeaderMap, rate: pigeon_engine::limits::RateState) {
    for (name, value) in [
        ("x-rate-limit-limit", rate.limit),
        ("x-rate-limit-remaining", rate.remaining),
        ("x-rate-limit-reset", rate.reset_s),
    ] {
        h.insert(name, HeaderValue::from(value));
    }
}

/// Turns any answer that is not JSON (the framework's own rejections, e.g. a path segment
/// that is not valid percent-encoded UTF-8) into a JPush-style JSON error, so every client
/// gets the body and Content-Type it expects.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    json_errors_of(next.run(req).await).await
}

/// [`json_errors`] on an answer: the server applies it to every answer, also those of routes
/// outside the JPush router (device registration, `/health`, the framework's 405).
pub async fn json_errors_of(response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    // Only errors: a 101 (the device WebSocket's upgrade) or a 3xx is no error to rewrite.
    let error = response.status().is_client_error() || response.status().is_server_error();
    if is_json || !error {
        return response;
    }
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => 1005,
        StatusCode::NOT_FOUND => 404,
        StatusCode::METHOD_NOT_ALLOWED => 1001,
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => 1003,
        other => u32::from(other.as_u16()),
    };
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut answer = ApiError::new(status, code, message).into_response();
    // Keep what the answer said besides its body (rate-limit headers, Allow, the caller for
    // the request log).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    *answer.extensions_mut() = parts.extensions;
    answer
}
