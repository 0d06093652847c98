//! Pigeon's own HTTP API for what every dialect shares: an app's callback endpoints and their
//! dead letters, its vendor credentials (and Web Push key), and files of targets uploaded to
//! push to (a door pushes to a file in its own dialect, e.g. JPush's `POST /v3/push/file`).
//!
//! It is spoken as it was when it was first served among the JPush routes, so clients of it
//! see no change: paths under `/v3/`, HTTP Basic with an app's `app_key:master_secret`, errors
//! in Pigeon's shape with the codes of [`Codes`], times in Beijing time, the app's limits and
//! `X-Rate-Limit-*` headers on every call.
//!
//! It must not know any dialect (it takes no pushes), storage (everything goes through the
//! engine) or connections.

mod callbacks;
mod files;
pub mod openapi;
mod vendors;

pub use pigeon_core::RouteDoc;

use axum::http::Uri;
use axum::Router;
use pigeon_engine::{Engine, EngineError};
use pigeon_http::{ApiError, ErrorCodes};
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct Admin {
    pub engine: Arc<Engine>,
}

/// The codes this API answers common failures with: those of the JPush Push API, under
/// whose names it was first served (1004 bad credentials, 1003 invalid, 1002 a required
/// field or body missing, 1005 too large, 1000 the server's own failure).
#[derive(Clone, Copy, Debug)]
pub struct Codes;

impl ErrorCodes for Codes {
    fn auth_code(self) -> u32 {
        1004
    }
    fn invalid_code(self) -> u32 {
        1003
    }
    fn internal_code(self) -> u32 {
        1000
    }
    fn too_large_code(self) -> u32 {
        1005
    }
    fn empty_body_code(self) -> u32 {
        1002
    }
}

/// The answer for an engine error: what the engine refused is invalid, the rest is ours.
pub(crate) fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Invalid(m) => ApiError::invalid(Codes, m),
        other => ApiError::internal(Codes, &other),
    }
}

pigeon_http::routes! {
    Admin;
    post "/v3/files/alias" => files::upload_alias, "File", "Upload a file of aliases (multipart: filename, ttl)", query [], body true, schema None, answer None;
    post "/v3/files/registration_id" => files::upload_registration_id, "File", "Upload a file of registration ids (multipart: filename, ttl)", query [], body true, schema None, answer None;
    get "/v3/files" => files::list, "File", "List the app's files", query [], body false, schema None, answer None;
    get "/v3/files/{file_id}" => files::get_one, "File", "Get a file", query [], body false, schema None, answer None;
    delete "/v3/files/{file_id}" => files::delete, "File", "Delete a file", query [], body false, schema None, answer None;
    get "/v3/callbacks" => callbacks::list, "Callback", "The app's callback endpoints (Pigeon extension)", query [], body false, schema None, answer None;
    post "/v3/callbacks" => callbacks::add, "Callback", "Add a callback endpoint: url, commands, basic_auth, format (pigeon or tencent) (Pigeon extension)", query [], body true, schema None, answer None;
    delete "/v3/callbacks/{id}" => callbacks::remove, "Callback", "Remove a callback endpoint (Pigeon extension)", query [], body false, schema None, answer None;
    get "/v3/callbacks/{id}/dead" => callbacks::dead, "Callback", "Dead-lettered batches of an endpoint (Pigeon extension)", query [], body false, schema None, answer None;
    post "/v3/callbacks/{id}/enable" => callbacks::enable, "Callback", "Enable an endpoint disabled for failing too long (Pigeon extension)", query [], body false, schema None, answer None;
    post "/v3/callbacks/{id}/dead/{delivery_id}/replay" => callbacks::replay, "Callback", "Send a dead-lettered batch again (Pigeon extension)", query [], body false, schema None, answer None;
    get "/v3/vendors" => vendors::list, "Vendor", "The app's Web Push VAPID public key and vendor credentials, masked (Pigeon extension)", query [], body false, schema None, answer None;
    put "/v3/vendors/{vendor}" => vendors::set, "Vendor", "Set an app's credentials for apns, fcm, huawei, honor, xiaomi, oppo, vivo or meizu, optionally with rate_per_minute and concurrency (Pigeon extension)", query [], body true, schema None, answer None;
    delete "/v3/vendors/{vendor}" => vendors::remove, "Vendor", "Remove an app's credentials for a vendor (Pigeon extension)", query [], body false, schema None, answer None;
}

/// 405 with the methods the path does accept.
async fn method_not_allowed(uri: Uri) -> ApiError {
    pigeon_http::method_not_allowed(ROUTES, uri.path())
}

/// The routes of Pigeon's own API, under the app's limits like every API call. It has no
/// fallback of its own: merged beside the other routers, unknown paths get theirs.
pub fn router(engine: Arc<Engine>) -> Router {
    add_routes(Router::new())
        .method_not_allowed_fallback(method_not_allowed)
        // Only the upload extractor uses this; JSON bodies are read within MAX_BODY_BYTES.
        .layer(axum::extract::DefaultBodyLimit::max(
            files::MAX_FILE_BYTES + 64 * 1024,
        ))
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            pigeon_http::limits,
        ))
        .layer(axum::middleware::from_fn(pigeon_http::json_errors))
        .with_state(Admin { engine })
}
