//! Request bodies: JSON whatever the Content-Type says, read within a limit, and the lists
//! in them.

use crate::error::{ApiError, ErrorCodes};
use axum::body::Body;
use axum::http::StatusCode;
use serde_json::Value;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Reads a JSON body whatever its Content-Type says, within [`MAX_BODY_BYTES`]. Errors are
/// 400 with the API's codes for a body too large, an empty one, and one that is malformed.
pub async fn read_json(body: Body, codes: impl ErrorCodes) -> Result<Value, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                codes.too_large_code(),
                format!("request body is larger than {MAX_BODY_BYTES} bytes"),
            )
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes.empty_body_code(),
            "request body is empty: a JSON object is required",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid(
            codes,
            format!(
                "malformed JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// A JSON array of strings at `body[key]`, at most `max` of them.
pub fn string_list(
    body: &Value,
    key: &str,
    max: usize,
    codes: impl ErrorCodes,
) -> Result<Vec<String>, ApiError> {
    let Some(v) = body.get(key) else {
        return Ok(Vec::new());
    };
    let list = v
        .as_array()
        .ok_or_else(|| ApiError::invalid(codes, format!("{key} must be an array of strings")))?;
    if list.len() > max {
        return Err(ApiError::invalid(
            codes,
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
                .ok_or_else(|| ApiError::invalid(codes, format!("{key} must hold only strings")))
        })
        .collect()
}
