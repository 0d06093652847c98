//! Pigeon's device gateway: device registration over HTTP and the long-lived device
//! WebSocket, exactly as `device-protocol.md` (v1) says.
//!
//! Only this crate knows the device wire protocol. It drives one small task per connection
//! and talks to the engine for credentials, pending pushes, acks and device changes; it never
//! touches storage itself.

mod connection;
mod frames;
mod outbox;
mod rate;
mod register;
mod ws;

pub use frames::encode_push;
pub use outbox::{DeviceSocket, Outbox};

use axum::routing::{get, post};
use axum::Router;
use pigeon_engine::Engine;
use std::sync::Arc;
use std::time::Duration;

/// Largest frame a client may send (protocol §2).
pub const MAX_CLIENT_FRAME: usize = 16 * 1024;
/// Most pushes sent and not yet acked on one connection (protocol §2, flow control).
pub const MAX_INFLIGHT: usize = 64;
/// Bad frames in a row that close a connection (code 4003).
pub const MAX_BAD_FRAMES: u32 = 10;
/// Frames a second a device may send on average, `ack` and `ping` aside (protocol §4).
pub const DEFAULT_DEVICE_RATE_PER_S: u32 = 20;
/// The burst the protocol allows above that average (protocol §4).
pub const DEFAULT_DEVICE_RATE_BURST: u32 = 100;
/// The highest `device_rate_per_s` the gateway can enforce.
pub const MAX_DEVICE_RATE_PER_S: u32 = rate::MAX_RATE_PER_S;

/// Tunables of the gateway.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Longest a client may stay silent, told in `welcome`; ≥ 5. The server closes a
    /// connection silent for twice as long.
    pub heartbeat_s: u64,
    /// How long a new connection may take to say hello.
    pub hello_timeout: Duration,
    /// Frames a device may send a second on average, `ack` and `ping` aside (protocol §4
    /// "Rate"); ≥ 1.
    pub device_rate_per_s: u32,
    /// How many such frames a device may send at once before the average applies; ≥ 1.
    pub device_rate_burst: u32,
}

impl GatewayConfig {
    pub(crate) fn frame_limits(&self) -> rate::Limits {
        rate::Limits::new(self.device_rate_per_s, self.device_rate_burst)
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            heartbeat_s: 60,
            hello_timeout: Duration::from_secs(10),
            device_rate_per_s: DEFAULT_DEVICE_RATE_PER_S,
            device_rate_burst: DEFAULT_DEVICE_RATE_BURST,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Gateway {
    pub engine: Arc<Engine>,
    pub config: Arc<GatewayConfig>,
}

/// The gateway's routes, for the OpenAPI document.
pub const ROUTES: &[pigeon_core::RouteDoc] = &[
    pigeon_core::RouteDoc {
        method: "post",
        path: "/v1/devices/register",
        tag: "Gateway",
        summary:
            "Register a device (device protocol §1); answers registration_id and device_secret",
        query: &[],
        body: true,
        schema: Some("DeviceRegistration"),
        answer: Some("Registered"),
    },
    pigeon_core::RouteDoc {
        method: "get",
        path: "/v1/connect",
        tag: "Gateway",
        summary: "The device's WebSocket long connection (device protocol §2–§6)",
        query: &[],
        body: false,
        schema: None,
        answer: None,
    },
];

/// The JSON Schemas [`ROUTES`] name, for the OpenAPI document's `components/schemas`.
pub fn schemas() -> serde_json::Map<String, serde_json::Value> {
    let mut components = serde_json::Map::new();
    register::schemas(&mut components);
    components
}

/// The gateway's routes: `POST /v1/devices/register` and `GET /v1/connect`.
/// Whether a path is the device connection's: a node that lost its database still keeps
/// devices connected (registering, which writes, is answered 503 then).
pub fn is_device_connection(path: &str) -> bool {
    path == "/v1/connect"
}

pub fn router(engine: Arc<Engine>, config: GatewayConfig) -> Router {
    let state = Gateway {
        engine,
        config: Arc::new(config),
    };
    Router::new()
        .route("/v1/devices/register", post(register::register))
        .route("/v1/connect", get(connection::upgrade))
        .with_state(state)
}
