//! What every JPush v3 API shares beyond Pigeon's HTTP helpers (`pigeon_http`): the codes
//! per API family, how engine errors are answered, Basic authentication with the Device
//! API's own code for a missing header, and query strings as JPush clients send them.

pub use pigeon_http::{
    json_response, ok_empty, read_json, string_list, ApiError, ApiResult, ErrorCodes,
};

use axum::http::{header, HeaderMap, StatusCode};
use pigeon_core::{Platform, PlatformSet};
use pigeon_engine::{AppState, Engine, EngineError};
use std::sync::Arc;

/// The API families, which answer the same situations with different codes (jpush-v3.md
/// §3, §5, §6, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Push,
    Device,
    Report,
    Schedule,
}

impl ErrorCodes for Family {
    fn auth_code(self) -> u32 {
        match self {
            Family::Push => 1004,
            Family::Device => 7004,
            Family::Report => 3001,
            Family::Schedule => 8101,
        }
    }
    fn invalid_code(self) -> u32 {
        match self {
            Family::Push => 1003,
            Family::Device => 7002,
            // The Report API documents no code for a bad parameter; 3002 is Pigeon's.
            Family::Report => 3002,
            Family::Schedule => 8100,
        }
    }
    fn internal_code(self) -> u32 {
        match self {
            Family::Push => 1000,
            Family::Device => 7000,
            Family::Report => 10,
            Family::Schedule => 8200,
        }
    }
    /// The Push API's own codes for a body too large (1005) and an empty one (1002).
    fn too_large_code(self) -> u32 {
        match self {
            Family::Push => 1005,
            _ => self.invalid_code(),
        }
    }
    fn empty_body_code(self) -> u32 {
        match self {
            Family::Push => 1002,
            _ => self.invalid_code(),
        }
    }
}

/// The answer for an engine error in `family`.
pub fn engine_error(family: Family, e: EngineError) -> ApiError {
    match e {
        EngineError::Invalid(m) => ApiError::invalid(family, m),
        EngineError::AliasFull(_) => ApiError::new(StatusCode::BAD_REQUEST, 7015, e.to_string()),
        EngineError::UnknownDevice => ApiError::invalid(family, e.to_string()),
        EngineError::UnknownCid => ApiError::invalid(family, e.to_string()),
        EngineError::UnknownPush(_) => ApiError::not_found(1003, e.to_string()),
        EngineError::AlreadyRecalled(_) => ApiError::invalid(family, e.to_string()),
        EngineError::TooManyPaced | EngineError::TooMany(..) => {
            ApiError::new(StatusCode::BAD_REQUEST, 1012, e.to_string())
        }
        EngineError::UnknownSegment(_) | EngineError::UnknownAbTest(_) => {
            ApiError::invalid(family, e.to_string())
        }
        EngineError::NoTarget => ApiError::new(
            StatusCode::BAD_REQUEST,
            1011,
            "cannot find user by this audience",
        ),
        EngineError::Storage(pigeon_store::StoreError::Unavailable(why)) => {
            tracing::warn!(error = %why, "the database is out of reach");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                1030,
                "the node lost its database; retry, or call another node",
            )
        }
        other => ApiError::internal(family, &other),
    }
}

/// Checks `Authorization: Basic base64(app_key:master_secret)`, answering failures with the
/// family's code (the Device API answers a missing header with 7001).
pub async fn authenticate(
    engine: &Engine,
    headers: &HeaderMap,
    family: Family,
) -> Result<Arc<AppState>, ApiError> {
    if family == Family::Device && headers.get(header::AUTHORIZATION).is_none() {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            7001,
            "missing Authorization header: use HTTP Basic with app_key:master_secret",
        ));
    }
    pigeon_http::authenticate(engine, headers, family).await
}

/// A query string's values for `key`, whether sent as repeated keys or a comma list, decoded.
pub fn query_list(query: Option<&str>, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == key)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The one value of `key` in a query string, if given.
pub fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// The `platform` query parameter: a comma list of platforms, all when absent.
pub fn query_platforms(query: Option<&str>, family: Family) -> Result<PlatformSet, ApiError> {
    let names = query_list(query, "platform");
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(PlatformSet::all());
    }
    let mut set = PlatformSet::empty();
    for name in names {
        match Platform::parse(&name) {
            Some(p) => set.insert(p),
            None => {
                return Err(ApiError::invalid(
                    family,
                    format!("unknown platform {name:?} (android, ios, hmos, quickapp, web)"),
                ))
            }
        }
    }
    Ok(set)
}
