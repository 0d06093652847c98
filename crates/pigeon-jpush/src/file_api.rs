//! File push (jpush-v3.md §4): a push to the devices a file lists, `POST /v3/push/file`, and
//! a file audience in a schedule's push. Files themselves (upload, list, get, delete) are
//! Pigeon's own API's (`pigeon-admin`), kept by the engine.

use crate::api::{authenticate, json_response, read_json, ApiError, ApiResult, Family};
use crate::{parse_push, JPush};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use pigeon_core::Push;
use pigeon_engine::{AppState, Engine};
use serde_json::{json, Value};

const F: Family = Family::Push;

/// The file id of an audience `{"file": {"file_id": ".."}}`, if that is what it is.
pub fn file_audience(push: &Value) -> Option<Result<String, ApiError>> {
    let file = push.get("audience")?.get("file")?;
    Some(
        file.get("file_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .ok_or_else(|| ApiError::invalid(F, "audience.file must be {\"file_id\": \"..\"}")),
    )
}

/// Parses a push whose audience may be a file: the file's values become the audience (as
/// many as it lists; the 1000-id limit of a push body does not apply to files).
pub async fn parse_with_file(
    engine: &Engine,
    app: &AppState,
    value: &Value,
) -> Result<Push, ApiError> {
    let Some(file_id) = file_audience(value) else {
        return parse_push(value)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message));
    };
    let file_id = file_id?;
    if value
        .get("audience")
        .and_then(Value::as_object)
        .map(|o| o.len())
        != Some(1)
    {
        return Err(ApiError::invalid(
            F,
            "a file audience cannot be combined with other audience keys",
        ));
    }
    // Answered 400 whatever went wrong, as a bad audience of the push.
    let audience = match engine.file_audience(app, &file_id).await {
        Ok(Some(audience)) => audience,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                1003,
                format!("file {file_id:?} does not exist or has expired"),
            ))
        }
        Err(e) => {
            let mut e = ApiError::internal(F, &e);
            e.status = StatusCode::BAD_REQUEST;
            return Err(e);
        }
    };
    let mut placeholder = value.clone();
    placeholder["audience"] = json!("all");
    let mut push = parse_push(&placeholder)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message))?;
    push.audience = audience;
    Ok(push)
}

/// `POST /v3/push/file`: a push whose audience is `{"file": {"file_id": ".."}}`.
pub async fn push_file(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let value = read_json(body, F).await?;
    if file_audience(&value).is_none() {
        return Err(ApiError::invalid(
            F,
            "/v3/push/file needs \"audience\": {\"file\": {\"file_id\": \"..\"}}",
        ));
    }
    let push = parse_with_file(&s.engine, &app, &value).await?;
    let sendno = push.labels.sendno.unwrap_or(0).to_string();
    let msg_id = crate::push_api::accept(&s, &app, push, false).await?;
    let mut answer = json_response(
        StatusCode::OK,
        &json!({"sendno": sendno, "msg_id": msg_id.to_string()}),
    );
    answer
        .extensions_mut()
        .insert(pigeon_http::AnswerMsgId(msg_id));
    Ok(answer)
}
