//! What Pigeon's HTTP front doors share, whatever dialect they speak: the error answer in
//! Pigeon's shape (`pigeon_core::error_json`, which is JPush's) with the codes each API
//! gives through [`ErrorCodes`], HTTP Basic authentication against the app table, JSON
//! bodies read within a limit, the per-app limits middleware and its `X-Rate-Limit-*`
//! headers, the safety net that turns any error answer into JSON, and the answers for
//! unknown routes and wrong methods.
//!
//! It must not know any dialect's requests or answers (the codes are given by the doors) nor
//! storage: apps are authenticated and admitted through the engine.

mod auth;
mod body;
mod error;
pub mod time;

pub use auth::{authenticate, basic_credentials, limits, set_rate_headers, CallerApp};
pub use body::{read_json, string_list, MAX_BODY_BYTES};
pub use error::{
    json_errors, json_errors_of, json_response, method_not_allowed, not_found, ok_empty, ApiError,
    ApiResult, ErrorCodes,
};

/// The msg_id an answer carries (a push accepted), set on the response by the handler for
/// the request log, as [`CallerApp`] is for the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerMsgId(pub u64);

/// Declares a door's routes once: `ROUTES` (what `/openapi.json` is generated from) and
/// `add_routes` (what the router is built from), from the same list, so the two cannot
/// disagree. `routes! { State; post "/path" => handler, "Tag", "Summary", query [..], body
/// true, schema Some("Body"), answer Some("Answer"); .. }`; the caller has `RouteDoc` and
/// `Router` in scope.
#[macro_export]
macro_rules! routes {
    ($state:ty; $( $method:ident $path:literal => $handler:path, $tag:literal, $summary:literal,
        query [$($q:literal),*], body $body:literal, schema $schema:expr, answer $answer:expr; )*) => {
        /// Every route of this door.
        pub const ROUTES: &[RouteDoc] = &[$(RouteDoc {
            method: stringify!($method),
            path: $path,
            tag: $tag,
            summary: $summary,
            query: &[$($q),*],
            body: $body,
            schema: $schema,
            answer: $answer,
        }),*];

        fn add_routes(mut r: Router<$state>) -> Router<$state> {
            $( r = r.route($path, axum::routing::$method($handler)); )*
            r
        }
    };
}
