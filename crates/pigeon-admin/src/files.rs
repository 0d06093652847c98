//! Files of targets (jpush-v3.md §4): upload a file of aliases or registration ids, list, get
//! and delete files. Pushing to a file is a door's (JPush's `POST /v3/push/file`).

use crate::{engine_error, Admin, Codes};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_engine::files::{self, FileKind, FileRecord};
use pigeon_engine::{AppState, Engine};
use pigeon_http::{authenticate, json_response, ok_empty, ApiError, ApiResult};
use serde_json::{json, Value};

const F: Codes = Codes;
/// Largest file accepted.
pub const MAX_FILE_BYTES: usize = files::MAX_FILE_BYTES;

type Form = Result<Multipart, MultipartRejection>;

/// `POST /v3/files/alias`
pub async fn upload_alias(s: State<Admin>, headers: HeaderMap, form: Form) -> ApiResult {
    upload(s, headers, form, FileKind::Alias).await
}

/// `POST /v3/files/registration_id`
pub async fn upload_registration_id(s: State<Admin>, headers: HeaderMap, form: Form) -> ApiResult {
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
    State(s): State<Admin>,
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
        .map_err(engine_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "file_id": file_id }),
    ))
}

fn view(f: &FileRecord) -> Value {
    json!({"file_id": f.file_id, "type": f.kind, "file_name": f.file_name,
           "create_time": pigeon_http::time::beijing(f.created_ms),
           "expire_time": pigeon_http::time::beijing(f.expires_ms)})
}

/// `GET /v3/files`
pub async fn list(State(s): State<Admin>, headers: HeaderMap) -> ApiResult {
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
    State(s): State<Admin>,
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
    State(s): State<Admin>,
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
