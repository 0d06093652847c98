//! Who is calling: HTTP Basic with an app's `app_key:master_secret`, checked against the app
//! table through the engine, and the app's switch, IP allowlist and rate limit applied to
//! every call that carries valid credentials.

use crate::error::{ApiError, ErrorCodes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use pigeon_engine::{AppState, Engine, EngineError};
use std::sync::Arc;

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
/// API's code.
pub async fn authenticate(
    engine: &Engine,
    headers: &HeaderMap,
    codes: impl ErrorCodes,
) -> Result<Arc<AppState>, ApiError> {
    let deny = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, codes.auth_code(), m);
    let (key, secret) = basic_credentials(headers).map_err(deny)?;
    match engine.authenticate(&key, &secret).await {
        Ok(app) => Ok(app),
        Err(EngineError::BadCredentials) => Err(deny(
            "authentication failed: unknown app_key or wrong master_secret",
        )),
        Err(e) => Err(ApiError::internal(codes, &e)),
    }
}

/// Enforces an app's switch, IP allowlist and rate limit on every API call that carries its
/// valid credentials, and tells the caller where it stands in `X-Rate-Limit-*` headers
/// (jpush-v3.md §10). Calls with bad credentials are left to the handlers' 401 and are not
/// counted, so nobody can use up another app's allowance.
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
