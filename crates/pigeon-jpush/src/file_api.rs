//! File push (jpush-v3.md §4): upload a file of aliases or registration ids, list, get and
//! delete files, and push to a file's devices with `POST /v3/push/file`.

use crate::api::{authenticate, json_response, ok_empty, read_json, ApiError, ApiResult, Family};
use crate::{parse_push, JPush};
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_core::Push;
use pigeon_engine::files::{self, FileKind, FileRecord};
use pigeon_engine::{AppState, Engine, EngineError};
use serde_json::{json, Value};

const F: Family = Family::Push;
/// Largest file accepted.
pub const MAX_FILE_BYTES: usize = files::MAX_FILE_BYTES;

type Form = Result<Multipart, MultipartRejection>;

/// `POST /v3/files/alias`
pub async fn upload_alias(s: State<JPush>, headers: HeaderMap, form: Form) -> ApiResult {
    upload(s, headers, form, FileKind::Alias).await
}

/// `POST /v3/files/registration_id`
pub async fn upload_registration_id(s: State<JPush>, headers: HeaderMap, form: Form) -> ApiResult {
    upload(s, headers, form, FileKind::RegistrationId).await
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            1005,
            format!("the file is larger than {MAX_FILE_BYTES} bytes"),
        );
    }
    ApiError::invalid(F, format!("malformed multipart form: {}", e.body_text()))
}

async fn upload(
    State(s): State<JPush>,
    headers: HeaderMap,
    form: Form,
    kind: FileKind,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let mut form = form.map_err(|e| {
        ApiError::invalid(
            F,
            format!(
                "the body must be a multipart/form-data upload: {}",
                e.body_text()
            ),
        )
    })?;
    let mut file: Option<(String, Vec<u8>)> = None;
    let mut ttl_hours = files::DEFAULT_TTL_HOURS;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("filename") => {
                let name = field.file_name().unwrap_or("targets.txt").to_string();
                let bytes = field.bytes().await.map_err(multipart_error)?;
                if bytes.len() > MAX_FILE_BYTES {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        1005,
                        format!("the file is larger than {MAX_FILE_BYTES} bytes"),
                    ));
                }
                file = Some((name, bytes.to_vec()));
            }
            Some("ttl") => {
                let text = field.text().await.map_err(multipart_error)?;
                ttl_hours = text
                    .trim()
                    .parse()
                    .ok()
                    .filter(|h| files::TTL_HOURS.contains(h))
                    .ok_or_else(|| ApiError::invalid(F, files::TTL_HOURS_ERROR))?;
            }
            _ => {}
        }
    }
    let (file_name, bytes) = file.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            1002,
            "the form needs a file in the field \"filename\"",
        )
    })?;
    let file_id = s
        .engine
        .create_file(&app, kind, file_name, &bytes, ttl_hours)
        .await
        .map_err(|e| match e {
            EngineError::Invalid(m) => ApiError::invalid(F, m),
            e => ApiError::internal(F, &e),
        })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "file_id": file_id }),
    ))
}

fn view(f: &FileRecord) -> Value {
    json!({"file_id": f.file_id, "type": f.kind, "file_name": f.file_name,
           "create_time": crate::time::beijing(f.created_ms),
           "expire_time": crate::time::beijing(f.expires_ms)})
}

/// `GET /v3/files`
pub async fn list(State(s): State<JPush>, headers: HeaderMap) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let files = s
        .engine
        .files(&app)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    let views: Vec<Value> = files.iter().map(view).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"total_count": views.len(), "files": views}),
    ))
}

async fn find(engine: &Engine, app: &AppState, id: &str) -> Result<FileRecord, ApiError> {
    engine
        .file(app, id)
        .await
        .map_err(|e| ApiError::internal(F, &e))?
        .ok_or_else(|| {
            ApiError::not_found(1003, format!("file {id:?} does not exist or has expired"))
        })
}

/// `GET /v3/files/{file_id}`
pub async fn get_one(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    Ok(json_response(
        StatusCode::OK,
        &view(&find(&s.engine, &app, &id).await?),
    ))
}

/// `DELETE /v3/files/{file_id}`
pub async fn delete(
    State(s): State<JPush>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let deleted = s
        .engine
        .delete_file(&app, &id)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    if !deleted {
        return Err(ApiError::not_found(
            1003,
            format!("file {id:?} does not exist"),
        ));
    }
    Ok(ok_empty())
}

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
    Ok(json_response(
        StatusCode::OK,
        &json!({"sendno": sendno, "msg_id": msg_id.to_string()}),
    ))
}
