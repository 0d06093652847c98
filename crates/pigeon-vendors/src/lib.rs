//! Clients of the push vendors' protocols, each with its base URL configurable (production by
//! default) so tests can point it at a local fake that speaks the same protocol, and those
//! fakes. Vendor channels never touch storage: they take a token and a notification and say
//! what became of it.

pub mod apns;
pub mod fake_apns;
pub mod fake_fcm;
pub mod fake_huawei;
pub mod fake_xiaomi;
pub mod fcm;
pub mod huawei;
pub mod jwt;
pub mod router;
pub mod webpush;
pub mod xiaomi;

use std::time::Duration;

/// The `Retry-After` of an answer, in seconds (the form push services use).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// What a vendor said of one notification to one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken; the vendor's id for it.
    Sent { id: String },
    /// The token is dead (uninstalled, expired): never try it again.
    DeadToken { reason: String },
    /// Not now: try again, after `after` if the vendor said.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Refused for good (bad payload, bad topic, ...), with the vendor's reason.
    Rejected { status: u16, reason: String },
}
