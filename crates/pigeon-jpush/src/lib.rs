//! Pigeon's JPush v3 front door, spoken so that the official JPush server SDKs work unchanged
//! (jpush-v3.md): push, validate, cid pool, batch push, the Device API and the Report API.
//!
//! A thin translator: HTTP Basic auth against the app table, request bodies parsed and
//! validated into engine calls, JPush's answers and error codes. It never touches storage or
//! connections; everything below goes through the engine.

mod api;
mod device_api;
mod fields;
mod push;
mod push_api;
mod report_api;
mod schedule_api;
pub mod time;
mod trigger;

pub use api::{json_response, ApiError, Family, MAX_BODY_BYTES};
pub use fields::PushError;
pub use push::parse_push;

use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use pigeon_engine::{Engine, EngineError};
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct JPush {
    pub engine: Arc<Engine>,
    pub scheduler: Arc<schedule_api::Scheduler>,
}

/// A route's handlers plus a JPush-style 405 for every other method.
fn only(methods: &'static str, r: MethodRouter<JPush>) -> MethodRouter<JPush> {
    r.fallback(move || async move {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            1001,
            format!("this API accepts only {methods}"),
        )
    })
}

/// The JPush v3 routes, and the scheduler behind the Schedule API. Paths are matched after
/// [`normalize_path`].
pub async fn router(engine: Arc<Engine>) -> Result<Router, EngineError> {
    use device_api as d;
    use push_api as p;
    use report_api as r;
    use schedule_api as s;
    let scheduler = schedule_api::Scheduler::start(engine.clone()).await?;
    Ok(Router::new()
        .route("/v3/push", only("POST", post(p::push)))
        .route("/v3/push/validate", only("POST", post(p::validate)))
        .route("/v3/push/cid", only("GET", get(p::cid)))
        .route("/v3/grouppush", only("POST", post(p::group_push)))
        .route(
            "/v3/push/batch/regid/single",
            only("POST", post(p::batch_regid)),
        )
        .route(
            "/v3/push/batch/alias/single",
            only("POST", post(p::batch_alias)),
        )
        .route("/v3/devices/status", only("POST", post(d::device_status)))
        .route(
            "/v3/devices/{registration_id}",
            only("GET, POST", get(d::get_device).post(d::set_device)),
        )
        .route(
            "/v3/aliases/{alias}",
            only(
                "GET, POST, DELETE",
                get(d::get_alias)
                    .post(d::unbind_alias)
                    .delete(d::delete_alias),
            ),
        )
        .route("/v3/tags", only("GET", get(d::list_tags)))
        .route(
            "/v3/tags/{tag}",
            only("POST, DELETE", post(d::edit_tag).delete(d::delete_tag)),
        )
        .route(
            "/v3/tags/{tag}/registration_ids/{registration_id}",
            only("GET", get(d::tag_has_device)),
        )
        .route("/v3/received", only("GET", get(r::received)))
        .route("/v3/received/detail", only("GET", get(r::received_detail)))
        .route("/v3/messages", only("GET", get(r::messages)))
        .route("/v3/messages/detail", only("GET", get(r::messages_detail)))
        .route("/v3/status/message", only("POST", post(r::status_message)))
        .route(
            "/v3/schedules",
            only("GET, POST", get(s::list).post(s::create)),
        )
        .route(
            "/v3/schedules/{schedule_id}",
            only(
                "GET, PUT, DELETE",
                get(s::get_one).put(s::replace).delete(s::delete),
            ),
        )
        .route(
            "/v3/schedules/{schedule_id}/msg_ids",
            only("GET", get(s::msg_ids)),
        )
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            api::limits,
        ))
        .with_state(JPush { engine, scheduler }))
}

/// Rewrites a request path to the one the router knows: without a trailing slash, and with
/// the Beijing-zone prefixes of the official clients (`/v3/device/..`, `/v3/report/..`,
/// `/v3/push/schedules`) mapped to the plain ones (jpush-v3.md §0, §11).
pub fn normalize_path(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let mut p = path.trim_end_matches('/');
    if p.is_empty() {
        p = "/";
    }
    const ZONE_PREFIXES: [(&str, &str); 5] = [
        ("/v3/device/aliases", "/v3/aliases"),
        ("/v3/device/tags", "/v3/tags"),
        ("/v3/device", "/v3/devices"),
        ("/v3/report", "/v3"),
        ("/v3/push/schedules", "/v3/schedules"),
    ];
    let mut rewritten = p.to_string();
    for (from, to) in ZONE_PREFIXES {
        if let Some(rest) = p.strip_prefix(from) {
            if rest.is_empty() || rest.starts_with('/') {
                rewritten = format!("{to}{rest}");
                break;
            }
        }
    }
    if rewritten == path {
        return None;
    }
    let with_query = match uri.query() {
        Some(q) => format!("{rewritten}?{q}"),
        None => rewritten,
    };
    with_query.parse().ok()
}

/// Answers requests that match no route: JSON, like every other answer.
pub async fn not_found(uri: Uri) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        &pigeon_core::error_json(404, &format!("no such API: {}", uri.path())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        let uri: Uri = s.parse().unwrap();
        normalize_path(&uri)
            .map(|u| u.to_string())
            .unwrap_or(s.to_string())
    }

    #[test]
    fn trailing_slashes_and_zone_prefixes_are_normalized() {
        assert_eq!(norm("/v3/push/"), "/v3/push");
        assert_eq!(
            norm("/v3/tags/?platform=android"),
            "/v3/tags?platform=android"
        );
        assert_eq!(norm("/v3/device/abc"), "/v3/devices/abc");
        assert_eq!(norm("/v3/device/status/"), "/v3/devices/status");
        assert_eq!(norm("/v3/device/aliases/a1"), "/v3/aliases/a1");
        assert_eq!(norm("/v3/device/tags/t"), "/v3/tags/t");
        assert_eq!(
            norm("/v3/report/received?msg_ids=1"),
            "/v3/received?msg_ids=1"
        );
        assert_eq!(norm("/v3/push/schedules/x"), "/v3/schedules/x");
        assert_eq!(norm("/v3/devices/abc"), "/v3/devices/abc");
        assert_eq!(norm("/v3/devicesx"), "/v3/devicesx");
        assert_eq!(norm("/"), "/");
    }
}
