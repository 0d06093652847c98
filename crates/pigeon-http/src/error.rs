//! The error answer, its codes per API, and the answers every router shares: unknown routes,
//! wrong methods, and any error answer that is not JSON.

use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use pigeon_core::RouteDoc;
use serde_json::{json, Value};

/// The codes an API answers common failures with. Each front door (and each API family of
/// a door: JPush's Push, Device, Report and Schedule APIs differ) has its own.
pub trait ErrorCodes: Copy {
    /// Missing or wrong credentials (401).
    fn auth_code(self) -> u32;
    /// A request that is not valid (400).
    fn invalid_code(self) -> u32;
    /// A failure of the server's own (500).
    fn internal_code(self) -> u32;
    /// A body larger than [`crate::MAX_BODY_BYTES`] (400).
    fn too_large_code(self) -> u32 {
        self.invalid_code()
    }
    /// An empty body where a JSON object is required (400).
    fn empty_body_code(self) -> u32 {
        self.invalid_code()
    }
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

/// `200 {}`: JPush answers some successes with an empty body; `{}` keeps every client happy
/// (jpush-v3.md §0).
pub fn ok_empty() -> Response {
    json_response(StatusCode::OK, &json!({}))
}

/// An error answer: `{"error":{"code":..,"message":..}}` with its HTTP status.
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
    /// 400 with the API's code for an invalid request.
    pub fn invalid(codes: impl ErrorCodes, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, codes.invalid_code(), message)
    }
    pub fn not_found(code: u32, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }
    /// 500 with the API's internal code; the cause is logged, not answered.
    pub fn internal(codes: impl ErrorCodes, e: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes.internal_code(),
            "internal error, retry",
        )
    }
    pub fn with(mut self, key: &'static str, value: Value) -> ApiError {
        self.extra = Some((key, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = pigeon_core::error_json(self.code, &self.message);
        if let Some((k, v)) = self.extra {
            body["error"][k] = v;
        }
        json_response(self.status, &body)
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// Answers requests that match no route: JSON, like every other answer.
pub async fn not_found(uri: Uri) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &pigeon_core::error_json(404, &format!("no such API: {}", uri.path())),
    )
}

/// Whether a concrete path matches a route template (`{name}` matches one segment).
pub fn path_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// 405 for `path`, naming the methods the routes of `routes` that match it accept.
pub fn method_not_allowed(routes: &[RouteDoc], path: &str) -> ApiError {
    let allowed: Vec<String> = routes
        .iter()
        .filter(|r| path_matches(r.path, path))
        .map(|r| r.method.to_uppercase())
        .collect();
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        1001,
        format!("this API accepts only {}", allowed.join(", ")),
    )
}

/// Turns any answer that is not JSON (the framework's own rejections, e.g. a path segment
/// that is not valid percent-encoded UTF-8) into a JSON error in Pigeon's shape, so every
/// client gets the body and Content-Type it expects.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    json_errors_of(next.run(req).await).await
}

/// [`json_errors`] on an answer: the server applies it to every answer, also those of routes
/// outside the API routers (device registration, `/health`, the framework's 405).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_one_segment_per_name() {
        assert!(path_matches("/v3/files/{file_id}", "/v3/files/abc"));
        assert!(!path_matches("/v3/files/{file_id}", "/v3/files/"));
        assert!(!path_matches("/v3/files/{file_id}", "/v3/files"));
        assert!(path_matches("/v3/files", "/v3/files"));
    }

    #[tokio::test]
    async fn an_error_is_pigeons_shape_with_its_extra_field() {
        let r = ApiError::new(StatusCode::BAD_REQUEST, 1011, "no")
            .with("illegal_rids", json!(["x"]))
            .into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        assert_eq!(
            &body[..],
            br#"{"error":{"code":1011,"illegal_rids":["x"],"message":"no"}}"#
        );
    }
}
