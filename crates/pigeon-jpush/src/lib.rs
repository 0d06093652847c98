//! Pigeon's JPush v3 front door, spoken so that the official JPush server SDKs work unchanged
//! (jpush-v3.md): push, validate, cid pool, batch push, file push, the Device API, the Report
//! API and the Schedule API. Pigeon's own features that JPush clients also reach under `/v3/`
//! (callback endpoints, vendor credentials, files) are served by `pigeon-admin`.
//!
//! A thin translator: HTTP Basic auth against the app table, request bodies parsed and
//! validated into engine calls, JPush's answers and error codes. It never touches storage or
//! connections; everything below goes through the engine.

mod api;
mod device_api;
mod fields;
mod file_api;
mod geofence_api;
pub mod openapi;
mod push;
mod push_api;
mod report_api;
mod saved_api;
mod schedule_api;
mod trigger;
pub mod upgrade;

pub use api::Family;
pub use fields::PushError;
pub use pigeon_core::RouteDoc;
/// JPush's times (Beijing time), which Pigeon's HTTP APIs share.
pub use pigeon_http::time;
/// Pigeon's HTTP helpers, re-exported for the server's own routes (`/health`).
pub use pigeon_http::{json_response, ApiError};
pub use push::parse_push;

use axum::http::Uri;
use axum::Router;
use pigeon_engine::{Engine, EngineError};
use std::sync::Arc;

#[derive(Clone)]
pub(crate) struct JPush {
    pub engine: Arc<Engine>,
}

pigeon_http::routes! {
    JPush;
    post "/v3/push" => push_api::push, "Push", "Push a notification or message", query [], body true, schema Some("Push"), answer Some("PushAnswer");
    post "/v3/push/validate" => push_api::validate, "Push", "Validate a push without sending it", query [], body true, schema Some("Push"), answer Some("PushAnswer");
    delete "/v3/push/{msg_id}" => push_api::recall, "Push", "Recall (withdraw) a push of the last day", query [], body false, schema None, answer Some("Empty");
    get "/v3/push/cid" => push_api::cid, "Push", "Get cids for idempotent pushes", query ["count", "type"], body false, schema None, answer Some("CidList");
    post "/v3/grouppush" => push_api::group_push, "Push", "Push to every app of a group (group-<key> auth)", query [], body true, schema Some("Push"), answer Some("GroupPushAnswer");
    post "/v3/push/file" => file_api::push_file, "File", "Push to the devices a file lists", query [], body true, schema Some("Push"), answer Some("PushAnswer");
    post "/v3/push/batch/regid/single" => push_api::batch_regid, "Push", "Batch of single pushes by registration id", query [], body true, schema Some("BatchPush"), answer Some("BatchPushAnswer");
    post "/v3/push/batch/alias/single" => push_api::batch_alias, "Push", "Batch of single pushes by alias", query [], body true, schema Some("BatchPush"), answer Some("BatchPushAnswer");
    post "/v3/devices/badge" => device_api::set_badge, "Device", "Set, raise or lower the badge number of devices (Pigeon extension)", query [], body true, schema Some("BadgeChange"), answer Some("Empty");
    post "/v3/devices/status" => device_api::device_status, "Device", "Online status of devices", query [], body true, schema Some("DeviceStatusQuery"), answer Some("DeviceStatus");
    get "/v3/devices/{registration_id}" => device_api::get_device, "Device", "Tags, alias and mobile of a device", query [], body false, schema None, answer Some("DeviceInfo");
    post "/v3/devices/{registration_id}" => device_api::set_device, "Device", "Set or clear tags, alias and mobile of a device", query [], body true, schema Some("DeviceEdit"), answer Some("Empty");
    get "/v3/aliases/{alias}" => device_api::get_alias, "Device", "Devices bound to an alias", query ["platform", "new_format"], body false, schema None, answer Some("AliasDevices");
    post "/v3/aliases/{alias}" => device_api::unbind_alias, "Device", "Unbind devices from an alias", query [], body true, schema Some("AliasUnbind"), answer Some("Empty");
    delete "/v3/aliases/{alias}" => device_api::delete_alias, "Device", "Delete an alias", query ["platform"], body false, schema None, answer Some("Empty");
    get "/v3/tags" => device_api::list_tags, "Device", "The app's tags", query ["platform"], body false, schema None, answer Some("TagList");
    post "/v3/tags/{tag}" => device_api::edit_tag, "Device", "Add devices to or remove them from a tag", query [], body true, schema Some("TagDevices"), answer Some("Empty");
    delete "/v3/tags/{tag}" => device_api::delete_tag, "Device", "Delete a tag", query ["platform"], body false, schema None, answer Some("Empty");
    get "/v3/tags/{tag}/registration_ids/{registration_id}" => device_api::tag_has_device, "Device", "Whether a device carries a tag", query [], body false, schema None, answer Some("TagHasDevice");
    get "/v3/received" => report_api::received, "Report", "Delivery counts (old format)", query ["msg_ids"], body false, schema None, answer None;
    get "/v3/received/detail" => report_api::received_detail, "Report", "Delivery counts per channel", query ["msg_ids"], body false, schema None, answer None;
    get "/v3/messages" => report_api::messages, "Report", "Message statistics (old format)", query ["msg_ids"], body false, schema None, answer None;
    get "/v3/messages/detail" => report_api::messages_detail, "Report", "Message statistics per channel", query ["msg_ids"], body false, schema None, answer None;
    post "/v3/status/message" => report_api::status_message, "Report", "Delivery status of a push on some devices", query [], body true, schema None, answer None;
    get "/v3/schedules" => schedule_api::list, "Schedule", "List schedules that will still fire", query ["page"], body false, schema None, answer None;
    post "/v3/schedules" => schedule_api::create, "Schedule", "Create a schedule", query [], body true, schema Some("Schedule"), answer Some("ScheduleCreated");
    get "/v3/schedules/{schedule_id}" => schedule_api::get_one, "Schedule", "Get a schedule", query [], body false, schema None, answer None;
    put "/v3/schedules/{schedule_id}" => schedule_api::replace, "Schedule", "Replace parts of a schedule", query [], body true, schema Some("ScheduleChange"), answer None;
    delete "/v3/schedules/{schedule_id}" => schedule_api::delete, "Schedule", "Delete a schedule", query [], body false, schema None, answer None;
    get "/v3/schedules/{schedule_id}/msg_ids" => schedule_api::msg_ids, "Schedule", "Pushes a schedule made", query [], body false, schema None, answer None;
    get "/v3/geofences" => geofence_api::list, "Geofence", "The app's geofences", query [], body false, schema None, answer Some("GeofenceList");
    post "/v3/geofences" => geofence_api::create, "Geofence", "Create a geofence (Pigeon extension)", query [], body true, schema Some("Geofence"), answer Some("GeofenceCreated");
    get "/v3/geofences/{geofence_id}" => geofence_api::get_one, "Geofence", "Get a geofence", query [], body false, schema None, answer None;
    put "/v3/geofences/{geofence_id}" => geofence_api::replace, "Geofence", "Replace a geofence", query [], body true, schema Some("Geofence"), answer None;
    delete "/v3/geofences/{geofence_id}" => geofence_api::delete, "Geofence", "Delete a geofence", query [], body false, schema None, answer Some("Empty");
    get "/v3/segments" => saved_api::list_segments, "Segment", "The app's segments", query [], body false, schema None, answer Some("SegmentList");
    post "/v3/segments" => saved_api::create_segment, "Segment", "Create a segment (a saved audience)", query [], body true, schema Some("Segment"), answer Some("SegmentCreated");
    get "/v3/segments/{segment_id}" => saved_api::get_segment, "Segment", "Get a segment with its size now", query [], body false, schema None, answer None;
    put "/v3/segments/{segment_id}" => saved_api::replace_segment, "Segment", "Replace a segment", query [], body true, schema Some("Segment"), answer None;
    delete "/v3/segments/{segment_id}" => saved_api::delete_segment, "Segment", "Delete a segment", query [], body false, schema None, answer Some("Empty");
    get "/v3/abtests" => saved_api::list_abtests, "AbTest", "The app's A/B tests", query [], body false, schema None, answer Some("AbTestList");
    post "/v3/abtests" => saved_api::create_abtest, "AbTest", "Create an A/B test", query [], body true, schema Some("AbTest"), answer Some("AbTestCreated");
    get "/v3/abtests/{abtest_id}" => saved_api::get_abtest, "AbTest", "Get an A/B test", query [], body false, schema None, answer None;
    delete "/v3/abtests/{abtest_id}" => saved_api::delete_abtest, "AbTest", "Delete an A/B test", query [], body false, schema None, answer Some("Empty");
    get "/v3/abtests/{abtest_id}/report" => saved_api::abtest_report, "AbTest", "Each variant's funnel, the leader and the p-value", query [], body false, schema None, answer Some("AbTestReport");
}

/// 405 with the methods the path does accept.
async fn method_not_allowed(uri: Uri) -> ApiError {
    pigeon_http::method_not_allowed(ROUTES, uri.path())
}

/// The JPush v3 routes; the JPush schedules start firing. Paths are matched after
/// [`normalize_path`].
pub async fn router(engine: Arc<Engine>) -> Result<Router, EngineError> {
    engine
        .schedules()
        .register(Arc::new(schedule_api::JPushSchedules));
    Ok(add_routes(Router::new())
        .method_not_allowed_fallback(method_not_allowed)
        // The fallback sits under the limits layer, so a 404 to an app's call carries its
        // X-Rate-Limit-* headers too.
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            pigeon_http::limits,
        ))
        .layer(axum::middleware::from_fn(pigeon_http::json_errors))
        .with_state(JPush { engine }))
}

/// Rewrites a request path to the one the router knows: without a trailing slash, and with
/// the Beijing-zone prefixes of the official clients (`/v3/device/..`, `/v3/report/..`,
/// `/v3/push/schedules`) mapped to the plain ones (jpush-v3.md §0, §11).
pub fn normalize_path(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    // Repeated slashes are one: the official Node SDK `jpush-async` builds
    // `/v3/tags//{tag}` and `/v3/tags//{tag}/registration_ids/{rid}`.
    let collapsed;
    let path_once = if path.contains("//") {
        let mut out = String::with_capacity(path.len());
        for c in path.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        collapsed = out;
        collapsed.as_str()
    } else {
        path
    };
    let mut p = path_once.trim_end_matches('/');
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
pub use pigeon_http::not_found;

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
        assert_eq!(
            norm("/v3/tags//t1/registration_ids/r1"),
            "/v3/tags/t1/registration_ids/r1"
        );
        assert_eq!(
            norm("//v3///tags//t1/?platform=all"),
            "/v3/tags/t1?platform=all"
        );
        assert_eq!(norm("/v3/device//tags//t"), "/v3/tags/t");
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
