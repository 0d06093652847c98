//! A device-side client of Pigeon's device protocol v1: register over HTTP, then hold a
//! WebSocket, say hello, receive pushes and ack them. Tests, `pigeon device simulate` and the
//! benchmarks drive devices through it. It knows nothing of the server's insides.

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    #[error("registration refused ({status}): {body}")]
    Refused { status: u16, body: String },
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("the server closed the connection with code {code}: {reason}")]
    Closed { code: u16, reason: String },
    #[error("protocol: {0}")]
    Protocol(String),
}

/// What a device sends to `POST /v1/devices/register`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RegisterRequest {
    pub app_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub install_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mobile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_tokens: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdk: Option<String>,
}

/// What registration answers: the device's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub registration_id: String,
    pub device_secret: String,
}

/// Registers a device with the server at `base` (e.g. `http://127.0.0.1:8080`).
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    req: &RegisterRequest,
) -> Result<Credentials, DeviceError> {
    let resp = http
        .post(format!(
            "{}/v1/devices/register",
            base.trim_end_matches('/')
        ))
        .json(req)
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(DeviceError::Refused {
            status: status.as_u16(),
            body,
        });
    }
    Ok(resp.json().await?)
}

/// The server's `welcome`.
#[derive(Debug, Clone, Deserialize)]
pub struct Welcome {
    pub heartbeat_s: u64,
    pub server_time_ms: u64,
    pub pending: u64,
}

/// A `push` frame as a device receives it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PushFrame {
    pub msg_id: String,
    pub sent_ms: u64,
    pub expires_ms: u64,
    #[serde(default)]
    pub notification: Option<Map<String, Value>>,
    #[serde(default)]
    pub message: Option<Map<String, Value>>,
    #[serde(default)]
    pub notify_id: Option<String>,
    #[serde(default)]
    pub badge: Option<i64>,
}

/// Something the server sent.
#[derive(Debug, Clone)]
pub enum Frame {
    Push(PushFrame),
    /// Any other op (ok, error, pong, revoke, badge, ...), as JSON.
    Other(Value),
}

/// One live connection of one device.
pub struct DeviceConnection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub welcome: Welcome,
}

/// `http://host:port` → `ws://host:port/v1/connect`.
pub fn connect_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{ws}/v1/connect")
}

impl DeviceConnection {
    /// Connects, says hello and waits for `welcome`.
    pub async fn connect(base: &str, creds: &Credentials) -> Result<DeviceConnection, DeviceError> {
        DeviceConnection::connect_from(base, creds, None).await
    }

    /// Like [`DeviceConnection::connect`], from a chosen local address (load generators use
    /// 127.0.0.x source addresses to get past one address's ephemeral ports).
    pub async fn connect_from(
        base: &str,
        creds: &Credentials,
        local: Option<std::net::IpAddr>,
    ) -> Result<DeviceConnection, DeviceError> {
        let url = connect_url(base);
        let host_port = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| DeviceError::Protocol(format!("cannot find host:port in {url}")))?;
        let addr = tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| DeviceError::Protocol(format!("resolving {host_port}: {e}")))?
            .next()
            .ok_or_else(|| DeviceError::Protocol(format!("{host_port} resolves to nothing")))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| DeviceError::Protocol(format!("socket: {e}")))?;
        if let Some(ip) = local {
            socket
                .bind(std::net::SocketAddr::new(ip, 0))
                .map_err(|e| DeviceError::Protocol(format!("binding {ip}: {e}")))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .map_err(|e| DeviceError::Protocol(format!("connecting to {addr}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (mut ws, _) =
            tokio_tungstenite::client_async(url.as_str(), MaybeTlsStream::Plain(stream)).await?;
        let hello = json!({"op": "hello", "registration_id": creds.registration_id,
                           "device_secret": creds.device_secret, "sdk": "pigeon-device/0.1"});
        ws.send(Message::text(hello.to_string())).await?;
        let first = next_json(&mut ws).await?;
        match first.get("op").and_then(Value::as_str) {
            Some("welcome") => {
                let welcome = serde_json::from_value(first)
                    .map_err(|e| DeviceError::Protocol(format!("bad welcome: {e}")))?;
                Ok(DeviceConnection { ws, welcome })
            }
            _ => Err(DeviceError::Protocol(format!(
                "expected welcome, got {first}"
            ))),
        }
    }

    /// The next frame from the server; a close becomes `DeviceError::Closed`.
    pub async fn next_frame(&mut self) -> Result<Frame, DeviceError> {
        let v = next_json(&mut self.ws).await?;
        if v.get("op").and_then(Value::as_str) == Some("push") {
            let p = serde_json::from_value(v)
                .map_err(|e| DeviceError::Protocol(format!("bad push frame: {e}")))?;
            return Ok(Frame::Push(p));
        }
        Ok(Frame::Other(v))
    }

    /// The next push, skipping other frames.
    pub async fn next_push(&mut self) -> Result<PushFrame, DeviceError> {
        loop {
            if let Frame::Push(p) = self.next_frame().await? {
                return Ok(p);
            }
        }
    }

    /// Acks pushes.
    pub async fn ack(&mut self, msg_ids: &[&str]) -> Result<(), DeviceError> {
        self.send(json!({"op": "ack", "msg_ids": msg_ids})).await
    }

    /// Sends any op.
    pub async fn send(&mut self, frame: Value) -> Result<(), DeviceError> {
        self.ws.send(Message::text(frame.to_string())).await?;
        Ok(())
    }

    /// Closes the connection normally.
    pub async fn close(mut self) -> Result<(), DeviceError> {
        self.ws.close(None).await?;
        Ok(())
    }
}

impl DeviceError {
    /// The close code this error stands for in the protocol's close-code table (§6): the
    /// server's code when it closed, else 1006 (connection lost, or never made).
    pub fn close_code(&self) -> u16 {
        match self {
            DeviceError::Closed { code, .. } => *code,
            _ => 1006,
        }
    }
}

/// What a device does after its connection ended, by the close-code table (protocol §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconnect {
    /// Not on its own: 4001 (register again first), 4002 (another connection holds the
    /// device), 4005 (device deleted or app disabled).
    Never,
    /// Connect again after this delay.
    After(Duration),
}

/// Longest exponential back-off between failed connects.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// When to reconnect after a connection ended with `code` (1006 for a lost connection or a
/// failed connect), `heartbeat_s` being the last `welcome`'s and `failures` how many tries
/// in a row have failed so far (0 right after a connection that worked).
pub fn reconnect_after(code: u16, heartbeat_s: u64, failures: u32) -> Reconnect {
    let mut rng = rand::thread_rng();
    match code {
        4001 | 4002 | 4005 => Reconnect::Never,
        // Heartbeat timeout: the device was silent, not refused; at once.
        4004 if failures == 0 => Reconnect::After(Duration::ZERO),
        // Too many frames: a back-off of at least a minute.
        4006 => Reconnect::After(
            Duration::from_secs(60) + Duration::from_secs(60).mul_f64(rng.gen_range(0.0..=1.0)),
        ),
        // Server shutting down: a random delay of 0 to heartbeat_s, so a restarted server is
        // not met by every device at once.
        1001 if failures == 0 => Reconnect::After(Duration::from_millis(
            rng.gen_range(0..=heartbeat_s.saturating_mul(1000)),
        )),
        // Everything else, a connect that failed after one of the above included:
        // exponential back-off with jitter, up to 1, 2, 4, ... 60 s and at least half of
        // that, so devices dropped together do not come back together.
        _ => {
            let cap = Duration::from_secs(1u64 << failures.min(6)).min(MAX_BACKOFF);
            Reconnect::After(cap.mul_f64(rng.gen_range(0.5..=1.0)))
        }
    }
}

async fn next_json(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
) -> Result<Value, DeviceError> {
    loop {
        match ws.next().await {
            None => {
                return Err(DeviceError::Closed {
                    code: 1006,
                    reason: "connection lost".into(),
                })
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str())
                    .map_err(|e| DeviceError::Protocol(format!("server sent non-JSON text: {e}")))
            }
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((u16::from(CloseCode::Status), String::new()));
                return Err(DeviceError::Closed { code, reason });
            }
            Some(Ok(_)) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay(code: u16, heartbeat_s: u64, failures: u32) -> Duration {
        match reconnect_after(code, heartbeat_s, failures) {
            Reconnect::After(d) => d,
            Reconnect::Never => panic!("{code} should reconnect"),
        }
    }

    #[test]
    fn the_close_code_table() {
        for code in [4001, 4002, 4005] {
            assert_eq!(reconnect_after(code, 60, 0), Reconnect::Never);
        }
        assert_eq!(delay(4004, 60, 0), Duration::ZERO);
        for _ in 0..100 {
            assert!(delay(1001, 5, 0) <= Duration::from_secs(5));
            assert!(delay(4006, 5, 0) >= Duration::from_secs(60));
            let lost = delay(1006, 5, 0);
            assert!((Duration::from_millis(500)..=Duration::from_secs(1)).contains(&lost));
            let later = delay(1006, 5, 3);
            assert!((Duration::from_secs(4)..=Duration::from_secs(8)).contains(&later));
            assert!(delay(1006, 5, 30) <= MAX_BACKOFF);
            // A server that is still down after a 1001 is backed off from, not hammered.
            assert!(delay(1001, 5, 2) >= Duration::from_secs(2));
        }
        // Random, so devices do not come back in step.
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| delay(1001, 60, 0)).collect();
        assert!(delays.len() > 1);
    }
}
