//! Callback endpoints and their dead letters over HTTP: what `pigeon app callback` does, for
//! an app's own backend.

use crate::{engine_error, Admin, Codes};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_engine::endpoints::{CallbackEndpoint, CallbackFormat};
use pigeon_engine::AppState;
use pigeon_http::{
    authenticate, json_response, ok_empty, read_json, string_list, ApiError, ApiResult,
};
use serde_json::{json, Value};

const F: Codes = Codes;

async fn endpoint_of(s: &Admin, app: &AppState, id: u64) -> Result<CallbackEndpoint, ApiError> {
    s.engine
        .callback_endpoint(app, id)
        .await
        .map_err(|e| ApiError::internal(F, &e))?
        .ok_or_else(|| ApiError::not_found(1003, format!("no callback endpoint {id}")))
}

/// `GET /v3/callbacks`
pub async fn list(State(s): State<Admin>, headers: HeaderMap) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let mine: Vec<Value> = s
        .engine
        .callback_endpoints(&app)
        .await
        .map_err(|e| ApiError::internal(F, &e))?
        .iter()
        .map(pigeon_callbacks::endpoint_view)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "callbacks": mine })))
}

/// `POST /v3/callbacks` with `{"url": .., "commands": [..], "basic_auth": true,
/// "format": "pigeon" | "tencent"}`
pub async fn add(State(s): State<Admin>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let body = read_json(body, F).await?;
    let url = body
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, 1002, "url is required"))?;
    let commands = string_list(&body, "commands", 16, F)?;
    let basic_auth = match body.get("basic_auth") {
        None => true,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| ApiError::invalid(F, "basic_auth must be true or false"))?,
    };
    let format = match body.get("format") {
        None => CallbackFormat::default(),
        Some(Value::String(name)) => {
            pigeon_callbacks::parse_format(name).map_err(|m| ApiError::invalid(F, m))?
        }
        Some(_) => {
            return Err(ApiError::invalid(
                F,
                "format must be a string: pigeon or tencent",
            ))
        }
    };
    let endpoint =
        pigeon_callbacks::new_endpoint(&app.app_key, url, (commands, format), basic_auth)
            .map_err(|m| ApiError::invalid(F, m))?;
    let id = s
        .engine
        .add_callback_endpoint(endpoint.clone())
        .await
        .map_err(engine_error)?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "url": url, "format": format.as_str(),
                "commands": endpoint.commands, "signing_secret": endpoint.signing_secret}),
    ))
}

/// `DELETE /v3/callbacks/{id}`
pub async fn remove(State(s): State<Admin>, Path(id): Path<u64>, headers: HeaderMap) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let removed = s
        .engine
        .remove_callback_endpoint(&app, id)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    if !removed {
        return Err(ApiError::not_found(
            1003,
            format!("no callback endpoint {id}"),
        ));
    }
    Ok(ok_empty())
}

/// `GET /v3/callbacks/{id}/dead`: batches that failed for longer than the dead-letter time.
pub async fn dead(State(s): State<Admin>, Path(id): Path<u64>, headers: HeaderMap) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let endpoint = endpoint_of(&s, &app, id).await?;
    let batches = s
        .engine
        .dead_letters(&endpoint)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    let dead: Vec<Value> = batches
        .iter()
        .map(|b| {
            json!({"delivery_id": b.delivery_id, "command": b.command, "events": serde_json::from_str::<Vec<Value>>(&b.events).map(|e| e.len()).unwrap_or(0),
                   "attempts": b.attempts, "first_try": pigeon_http::time::beijing(b.first_ms),
                   "last_error": b.last_error})
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "dead": dead })))
}

/// `POST /v3/callbacks/{id}/dead/{delivery_id}/replay`: sends a dead batch again.
pub async fn replay(
    State(s): State<Admin>,
    Path((id, delivery_id)): Path<(u64, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let endpoint = endpoint_of(&s, &app, id).await?;
    let replayed = s
        .engine
        .replay_dead_letter(&endpoint, &delivery_id)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    if !replayed {
        return Err(ApiError::not_found(
            1003,
            format!("no dead batch {delivery_id:?} on callback endpoint {id}"),
        ));
    }
    Ok(ok_empty())
}

/// `POST /v3/callbacks/{id}/enable`: an endpoint disabled for failing too long gets events
/// again, from now on.
pub async fn enable(State(s): State<Admin>, Path(id): Path<u64>, headers: HeaderMap) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let enabled = s
        .engine
        .enable_callback_endpoint(&app, id)
        .await
        .map_err(|e| ApiError::internal(F, &e))?;
    if !enabled {
        return Err(ApiError::not_found(
            1003,
            format!("no callback endpoint {id}"),
        ));
    }
    Ok(ok_empty())
}
