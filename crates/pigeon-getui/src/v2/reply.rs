//! What every RestAPI V2 answer shares (getui.md B.1): the `{"code", "msg", "data"}` body, the
//! HTTP status of each code, request bodies read leniently, and path segments decoded the way
//! the official clients write them.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Failure: the body is not JSON.
pub const CODE_FAILURE: i64 = 1;
/// The token is wrong, expired or of another app (clients authenticate again and retry).
pub const CODE_TOKEN: i64 = 10001;
/// The app is disabled, or the caller's address is not in its allowlist.
pub const CODE_BLOCKED: i64 = 10002;
/// Too many `POST /auth` calls in a minute.
pub const CODE_AUTH_RATE: i64 = 10003;
/// Too many calls in a minute (the app's rate limit).
pub const CODE_CALL_RATE: i64 = 10005;
/// A parameter is missing, of the wrong type or out of range.
pub const CODE_INVALID: i64 = 20001;

/// A successful answer's `data`.
pub type Data = Value;

/// An answer other than success: its HTTP status, code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct V2Error {
    pub status: StatusCode,
    pub code: i64,
    pub msg: String,
}

impl V2Error {
    pub fn new(status: StatusCode, code: i64, msg: impl Into<String>) -> V2Error {
        V2Error {
            status,
            code,
            msg: msg.into(),
        }
    }

    /// `20001 "{param} is invalid"`.
    pub fn invalid(param: &str) -> V2Error {
        V2Error::invalid_msg(format!("{param} is invalid"))
    }

    /// `20001` with a message of its own.
    pub fn invalid_msg(msg: impl Into<String>) -> V2Error {
        V2Error::new(StatusCode::BAD_REQUEST, CODE_INVALID, msg)
    }

    /// `10001`: the client authenticates again and retries once.
    pub fn token() -> V2Error {
        V2Error::new(
            StatusCode::UNAUTHORIZED,
            CODE_TOKEN,
            "token is invalid or expired: get a new one from POST /auth",
        )
    }

    /// `1`: the body could not be read as JSON.
    pub fn not_json(why: impl std::fmt::Display) -> V2Error {
        V2Error::new(
            StatusCode::BAD_REQUEST,
            CODE_FAILURE,
            format!("request body is not JSON: {why}"),
        )
    }

    /// A failure of Pigeon itself (storage): the client may retry.
    pub fn internal(e: &dyn std::fmt::Display) -> V2Error {
        tracing::error!(error = %e, "RestAPI V2 request failed");
        V2Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            CODE_FAILURE,
            "internal error, retry",
        )
    }
}

pub type V2Result = Result<Data, V2Error>;

/// A JSON answer.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    r
}

/// The answer to a request: `{"code":0,"msg":"success","data":..}` on success.
pub fn respond(result: V2Result) -> Response {
    match result {
        Ok(data) => json_response(
            StatusCode::OK,
            &json!({"code": 0, "msg": "success", "data": data}),
        ),
        Err(e) => json_response(
            e.status,
            &json!({"code": e.code, "msg": e.msg, "data": Value::Null}),
        ),
    }
}

/// Reads a request body as JSON within [`MAX_BODY_BYTES`], whatever its Content-Type says
/// (`application/json`, with or without a charset). `Ok(None)` when there is no body at all.
pub async fn read_body(body: Body) -> Result<Option<Value>, V2Error> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            V2Error::invalid_msg(format!(
                "request body is larger than {MAX_BODY_BYTES} bytes"
            ))
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| V2Error::not_json(format!("line {}, column {}: {e}", e.line(), e.column())))
}

/// A body that must be a JSON object.
pub fn object(body: Option<Value>) -> Result<serde_json::Map<String, Value>, V2Error> {
    match body {
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(V2Error::invalid_msg(
            "request body is invalid: a JSON object is required",
        )),
        None => Err(V2Error::not_json("the body is empty")),
    }
}

/// One path segment, percent-decoded leniently: a `%` not followed by two hex digits stays as
/// it is, and bytes that are not UTF-8 become U+FFFD (the Java client does not encode path
/// parameters at all).
pub fn decode_segment(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A comma-joined set from a path segment (`cid1,cid2`), decoded; empty items dropped.
pub fn path_set(decoded: &str) -> Vec<String> {
    decoded
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The one value of `key` in a query string, if given.
pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_leniently() {
        assert_eq!(decode_segment("a%2Cb"), "a,b");
        assert_eq!(decode_segment("a,b"), "a,b");
        assert_eq!(decode_segment("100%"), "100%");
        assert_eq!(decode_segment("%zz%4"), "%zz%4");
        assert_eq!(decode_segment("%E5%8C%97"), "北");
        assert_eq!(decode_segment("%FF"), "\u{FFFD}");
        assert_eq!(path_set("a, b,,c"), vec!["a", "b", "c"]);
    }

    #[test]
    fn errors_carry_their_status() {
        assert_eq!(V2Error::invalid("ttl").msg, "ttl is invalid");
        assert_eq!(V2Error::invalid("ttl").status, StatusCode::BAD_REQUEST);
        assert_eq!(V2Error::token().status, StatusCode::UNAUTHORIZED);
        assert_eq!(V2Error::token().code, 10001);
    }
}
