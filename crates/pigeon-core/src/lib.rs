//! Pigeon's one internal model: apps, devices, pushes, audience expressions and the
//! bitmap index that resolves them.
//!
//! Every front door (JPush v3, Getui, the device protocol) translates into these types and
//! nothing below the front doors knows which dialect a push came in through. This crate does
//! no IO at all: no sockets, no files, no clocks (callers pass the time in).

pub mod abtest;
pub mod audience;
pub mod model;
pub mod names;
pub mod net;
pub mod platform;

pub use abtest::{Split, Variant, VariantBuckets};
pub use audience::{
    Audience, AudienceExpr, AudienceIndex, DeviceAttrs, DeviceIds, Resolved, SavedAudiences,
};
pub use model::{
    Activity, ApnsFields, BadgeOp, ChannelStrategy, Click, Content, DeliveryPolicy, FcmChoice,
    Fields, IdempotencyKey, Labels, Message, NetworkType, Notification, Notifications, Pace, Push,
    PushCallback, ScheduleFiring, SmsFallback, VendorPolicy, MAX_BADGE,
};
pub use platform::{Platform, PlatformSet};

/// A hash map with a fast, per-process seeded hasher: for the big in-memory tables (devices
/// by registration id, tags, aliases), where SipHash was a fifth of loading a million devices.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The hasher of [`FastMap`], for tables keyed by a hash of their own.
pub type FastHashState = foldhash::fast::RandomState;

/// Dense per-app device number: the bit position of a device in every audience bitmap.
pub type Ordinal = u32;

/// Default offline lifetime of a push, in seconds (JPush's default).
pub const DEFAULT_TIME_TO_LIVE_S: u64 = 86_400;
/// Longest offline lifetime a push may ask for: 10 days.
pub const MAX_TIME_TO_LIVE_S: u64 = 10 * 86_400;

/// Pigeon's error body, shared by every HTTP surface (it is JPush's shape):
/// `{"error": {"code": N, "message": ".."}}`.
pub fn error_json(code: u32, message: &str) -> serde_json::Value {
    serde_json::json!({ "error": { "code": code, "message": message } })
}

/// One documented HTTP API route: what the router serves and what `/openapi.json` says.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    /// Query parameters it reads.
    pub query: &'static [&'static str],
    /// Whether it takes a body.
    pub body: bool,
    /// The name under the OpenAPI document's `components/schemas` of the body's schema
    /// (`None`: any JSON object).
    pub schema: Option<&'static str>,
    /// The name of the schema of its 200 answer (`None`: any JSON object).
    pub answer: Option<&'static str>,
}
