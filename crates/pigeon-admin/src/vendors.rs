//! An app's push channels over HTTP: what `pigeon app show` and `pigeon app vendor` do, for
//! an app's own backend. Credentials go in whole and come back masked.

use crate::{engine_error, Admin, Codes};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_http::{authenticate, json_response, ok_empty, read_json, ApiError, ApiResult};

const F: Codes = Codes;

/// `GET /v3/vendors`: the app's VAPID public key and vendor credentials (masked).
pub async fn list(State(s): State<Admin>, headers: HeaderMap) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let view = s
        .engine
        .vendor_channels(&app)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    Ok(json_response(StatusCode::OK, &view))
}

/// `PUT /v3/vendors/{vendor}` with the credentials object: set (replace) them.
pub async fn set(
    State(s): State<Admin>,
    Path(vendor): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let credentials = read_json(body, F).await?;
    let shown = s
        .engine
        .set_vendor_credentials(&app, &vendor, &credentials)
        .await
        .map_err(engine_error)?;
    Ok(json_response(StatusCode::OK, &shown))
}

/// `DELETE /v3/vendors/{vendor}`
pub async fn remove(
    State(s): State<Admin>,
    Path(vendor): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let removed = s
        .engine
        .remove_vendor_credentials(&app, &vendor)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    if !removed {
        return Err(ApiError::not_found(
            1003,
            format!("this app has no {vendor} credentials"),
        ));
    }
    Ok(ok_empty())
}
