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
