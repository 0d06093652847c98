//! One device connection: `GET /v1/connect` upgraded to a WebSocket (protocol §2–§6).
//!
//! The hot path, written for a small idle footprint: no read or write buffer lives while a
//! connection waits. Reads use a stack buffer only for the duration of one poll; bytes of a
//! frame that is not complete yet, and writes, use heap buffers that are freed when done.

use crate::outbox::{DeviceSocket, Outbox};
use crate::rate::{self, FrameRate, Verdict};
use crate::ws::{self, FrameError, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use crate::{
    frames, register, Gateway, GatewayConfig, MAX_BAD_FRAMES, MAX_CLIENT_FRAME, MAX_INFLIGHT,
};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pigeon_core::error_json;
use pigeon_core::names::check_name;
use pigeon_engine::events::PresenceReason;
use pigeon_engine::{now_ms, AppState, Engine, EngineError, LivePush, Location, Notice, Session};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::time::{sleep_until, timeout, Instant};

type Io = TokioIo<Upgraded>;

/// Longest a write to one device may take before the device counts as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(error_json(1003, message))).into_response()
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The opening handshake (RFC 6455 §4.2); no extensions are offered, so no compression.
pub(crate) async fn upgrade(State(gw): State<Gateway>, mut req: Request) -> Response {
    let headers = req.headers();
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "GET /v1/connect must be a WebSocket upgrade (RFC 6455)",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = refuse(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            header::HeaderValue::from_static("13"),
        );
        return r;
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    else {
        return refuse(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing");
    };
    let accept = ws::accept_key(key);
    let outbox = match req.extensions().get::<DeviceSocket>() {
        Some(socket) => socket.0.clone(),
        None => Arc::new(Outbox::new(None)),
    };
    tokio::spawn(serve_upgraded(hyper::upgrade::on(&mut req), outbox, gw));
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// The connection's task, from the end of the handshake: what an idle device costs is
/// mostly this future, inside tokio's task.
async fn serve_upgraded(on_upgrade: hyper::upgrade::OnUpgrade, outbox: Arc<Outbox>, gw: Gateway) {
    let mut conn = match on_upgrade.await {
        Ok(upgraded) => Conn {
            io: TokioIo::new(upgraded),
            inbuf: Vec::new(),
            message: None,
            outbox,
        },
        Err(e) => return tracing::debug!(error = %e, "upgrade failed"),
    };
    if let Err(e) = run(&mut conn, &gw).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A whole message from the client, after reassembly of fragments.
enum Incoming {
    Text(String),
    /// A binary message, or text that is not UTF-8: not part of the protocol.
    NotText,
    Ping(Vec<u8>),
    Close,
}

/// Why the server ends a connection.
enum End {
    Close(u16, String),
    /// The peer is gone; nothing more to send.
    Gone,
}

/// The WebSocket layer of one connection.
struct Conn {
    io: Io,
    /// Bytes of a frame that has not fully arrived; empty (no allocation) between frames.
    inbuf: Vec<u8>,
    /// Opcode and payload so far of a fragmented message; boxed, because devices rarely
    /// fragment and every idle connection would carry the room.
    message: Option<Box<(u8, Vec<u8>)>>,
    /// What the task and the fan-out share of the writes (outbox.rs).
    outbox: Arc<Outbox>,
}

/// Keeps the fan-out from writing to the socket while the task does (outbox.rs); dropped,
/// lets it write again.
struct Writing(Arc<Outbox>);

impl Writing {
    fn start(outbox: &Arc<Outbox>) -> Writing {
        outbox.hold();
        Writing(outbox.clone())
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Conn {
    /// Waits for bytes and appends them to `inbuf`; 0 means the peer closed.
    async fn fill(&mut self) -> io::Result<usize> {
        let (io, inbuf) = (&mut self.io, &mut self.inbuf);
        poll_fn(|cx| {
            let mut scratch = [MaybeUninit::<u8>::uninit(); 8192];
            let mut rb = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut *io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    inbuf.extend_from_slice(rb.filled());
                    Poll::Ready(Ok(rb.filled().len()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// The next complete message already read, if any.
    fn next_message(&mut self) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some((frame, used)) = ws::parse(&self.inbuf, MAX_CLIENT_FRAME)? else {
                return Ok(None);
            };
            if used == self.inbuf.len() {
                self.inbuf = Vec::new();
            } else {
                self.inbuf.drain(..used);
            }
            let (opcode, payload) = match frame.opcode {
                OP_PING => return Ok(Some(Incoming::Ping(frame.payload))),
                OP_PONG => continue,
                OP_CLOSE => return Ok(Some(Incoming::Close)),
                OP_CONTINUATION => {
                    let Some((opcode, mut so_far)) = self.message.take().map(|m| *m) else {
                        return Err(FrameError::Protocol(
                            "continuation without a first fragment",
                        ));
                    };
                    if so_far.len() + frame.payload.len() > MAX_CLIENT_FRAME {
                        return Err(FrameError::TooLarge);
                    }
                    so_far.extend_from_slice(&frame.payload);
                    if !frame.fin {
                        self.message = Some(Box::new((opcode, so_far)));
                        continue;
                    }
                    (opcode, so_far)
                }
                opcode => {
                    if self.message.is_some() {
                        return Err(FrameError::Protocol(
                            "a new message inside a fragmented one",
                        ));
                    }
                    if !frame.fin {
                        self.message = Some(Box::new((opcode, frame.payload)));
                        continue;
                    }
                    (opcode, frame.payload)
                }
            };
            return Ok(Some(match (opcode, String::from_utf8(payload)) {
                (OP_TEXT, Ok(text)) => Incoming::Text(text),
                _ => Incoming::NotText,
            }));
        }
    }

    /// Writes frames in one go, after the rest of a frame the fan-out started, if any.
    async fn send(&mut self, frames: &[(u8, &[u8])]) -> io::Result<()> {
        let _writing = Writing::start(&self.outbox);
        let mut out = self.outbox.take_tail();
        out.reserve(frames.iter().map(|(_, p)| p.len() + ws::MAX_HEADER).sum());
        for (opcode, payload) in frames {
            ws::encode(*opcode, payload, &mut out);
        }
        if out.is_empty() {
            return Ok(());
        }
        match timeout(WRITE_TIMEOUT, self.io.write_all(&out)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "device does not read",
            )),
        }
    }

    async fn send_text(&mut self, text: &str) -> io::Result<()> {
        self.send(&[(OP_TEXT, text.as_bytes())]).await
    }

    async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.send(&[(OP_CLOSE, &ws::close_payload(code, reason))])
            .await?;
        self.io.shutdown().await
    }
}

fn frame_error_close(e: FrameError) -> End {
    match e {
        FrameError::TooLarge => End::Close(1009, "frame too large".into()),
        FrameError::Protocol(why) => End::Close(1002, why.into()),
    }
}

async fn run(conn: &mut Conn, gw: &Gateway) -> io::Result<()> {
    // Boxed sub-futures keep the connection's own future, what an idle device costs, small.
    let (registration_id, secret) =
        match Box::pin(read_hello(conn, gw.config.hello_timeout)).await? {
            Ok(h) => h,
            Err(End::Close(code, reason)) => return Box::pin(conn.close(code, &reason)).await,
            Err(End::Gone) => return Ok(()),
        };
    let (app, session) =
        match Box::pin(gw.engine.connect_caught_up(&registration_id, &secret)).await {
            Ok(s) => s,
            Err(_) => {
                let reason = "registration_id and device_secret do not match a device";
                Box::pin(conn.send_text(&frames::error(1004, reason, None))).await?;
                return Box::pin(conn.close(4001, "bad credentials")).await;
            }
        };
    if let Err(e) = gw
        .engine
        .record_presence(&app, session.ordinal, true, PresenceReason::Login)
        .await
    {
        tracing::warn!(error = %e, "could not record a device going online");
    }
    let mut device = Device {
        engine: gw.engine.clone(),
        app,
        session,
        config: gw.config.clone(),
        outbox: conn.outbox.clone(),
        backlog: false,
        bad_frames: 0,
        rate: FrameRate::new(rate::now_ticks()),
    };
    let end = device.serve(conn).await;
    device.engine.disconnect(&device.app, &device.session);
    conn.outbox.detach();
    let reason = match &end {
        Ok(End::Close(4004, _)) => PresenceReason::Timeout,
        Ok(End::Close(4002, _)) => PresenceReason::Replaced,
        Ok(End::Close(1000, _)) => PresenceReason::Logout,
        _ => PresenceReason::Disconnect,
    };
    if let Err(e) = device
        .engine
        .record_presence(&device.app, device.session.ordinal, false, reason)
        .await
    {
        tracing::warn!(error = %e, "could not record a device going offline");
    }
    match end? {
        End::Close(code, reason) => Box::pin(conn.close(code, &reason)).await,
        End::Gone => Ok(()),
    }
}

/// Waits for `{"op":"hello",...}`; pings before it are answered.
async fn read_hello(conn: &mut Conn, limit: Duration) -> io::Result<Result<(String, String), End>> {
    let deadline = Instant::now() + limit;
    loop {
        let msg = match conn.next_message() {
            Err(e) => return Ok(Err(frame_error_close(e))),
            Ok(Some(m)) => m,
            Ok(None) => match timeout_at(deadline, conn.fill()).await {
                None => return Ok(Err(End::Close(4000, "no hello in time".into()))),
                Some(Ok(0)) | Some(Err(_)) => return Ok(Err(End::Gone)),
                Some(Ok(_)) => continue,
            },
        };
        let text = match msg {
            Incoming::Ping(p) => {
                conn.send(&[(OP_PONG, &p)]).await?;
                continue;
            }
            Incoming::Close => return Ok(Err(End::Gone)),
            Incoming::NotText => {
                return Ok(Err(End::Close(
                    4000,
                    "the first frame must be hello".into(),
                )))
            }
            Incoming::Text(t) => t,
        };
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        if field("op").as_deref() != Some("hello") {
            return Ok(Err(End::Close(
                4000,
                "the first frame must be hello".into(),
            )));
        }
        return Ok(match (field("registration_id"), field("device_secret")) {
            (Some(r), Some(s)) => Ok((r, s)),
            _ => Err(End::Close(
                4000,
                "hello needs registration_id and device_secret".into(),
            )),
        });
    }
}

async fn timeout_at<F: std::future::Future>(deadline: Instant, f: F) -> Option<F::Output> {
    tokio::time::timeout_at(deadline, f).await.ok()
}

/// The device protocol on top of one connection.
struct Device {
    engine: Arc<Engine>,
    app: Arc<AppState>,
    session: Session,
    config: Arc<GatewayConfig>,
    /// The pushes in flight, and the fan-out's writes (outbox.rs).
    outbox: Arc<Outbox>,
    /// More pushes may be waiting in the offline store than were sent.
    backlog: bool,
    /// Bad frames in a row, up to [`MAX_BAD_FRAMES`].
    bad_frames: u8,
    /// The frame rate rule's state (protocol §4 "Rate"): a few bytes, no allocation.
    rate: FrameRate,
}

impl Device {
    async fn serve(&mut self, conn: &mut Conn) -> io::Result<End> {
        {
            // `welcome` goes first: the fan-out may write only after it.
            let _writing = Writing::start(&self.outbox);
            self.outbox.set_platform(self.session.platform);
            if self.outbox.is_direct() {
                self.session.set_outlet(self.outbox.clone());
            }
            let pending = self.app.pending_for(self.session.ordinal, now_ms());
            Box::pin(conn.send_text(&frames::welcome(
                self.config.heartbeat_s,
                now_ms(),
                pending.len(),
            )))
            .await?;
            Box::pin(self.send_pushes(conn, pending)).await?;
        }
        let mut last_heard = Instant::now();
        // Anything from the client resets the keepalive; the timer is only re-armed when it
        // fires, not on every frame.
        let keepalive = sleep_until(last_heard + self.silence_limit());
        tokio::pin!(keepalive);
        loop {
            tokio::select! {
                read = conn.fill() => {
                    match read {
                        Ok(0) | Err(_) => return Ok(End::Gone),
                        Ok(_) => last_heard = Instant::now(),
                    }
                    if let Some(end) = Box::pin(self.on_input(conn)).await? {
                        return Ok(end);
                    }
                }
                _ = self.session.signalled() => {
                    // Pushes are taken from the queue and written while the fan-out holds
                    // off: none it writes meanwhile overtakes them.
                    let _writing = Writing::start(&self.outbox);
                    if self.outbox.has_tail() {
                        Box::pin(conn.send(&[])).await?;
                    }
                    if let Some((code, reason)) = self.session.close_request() {
                        return Ok(End::Close(code, reason));
                    }
                    if self.session.take_resync() {
                        self.backlog = true;
                    }
                    // Boxed, as rare paths are here: their state would otherwise be part of
                    // every idle connection's future.
                    if self.session.has_notices() {
                        Box::pin(self.send_notices(conn)).await?;
                    }
                    let now = now_ms();
                    let ordinal = self.session.ordinal;
                    let live: Vec<_> = self
                        .session
                        .take_pushes()
                        .into_iter()
                        .filter(|p| !self.outbox.is_inflight(p.msg_id()) && p.is_live_for(ordinal, now))
                        .collect();
                    Box::pin(self.send_pushes(conn, live)).await?;
                }
                _ = &mut keepalive => {
                    let deadline = last_heard + self.silence_limit();
                    if deadline <= Instant::now() {
                        return Ok(End::Close(4004, "heartbeat timeout".into()));
                    }
                    self.rate.settle(rate::now_ticks());
                    keepalive.as_mut().reset(deadline);
                }
            }
            if self.backlog && self.outbox.inflight_len() < MAX_INFLIGHT {
                self.backlog = false;
                let _writing = Writing::start(&self.outbox);
                let pending: Vec<_> = self
                    .app
                    .pending_for(self.session.ordinal, now_ms())
                    .into_iter()
                    .filter(|p| !self.outbox.is_inflight(p.msg_id()))
                    .collect();
                Box::pin(self.send_pushes(conn, pending)).await?;
            }
        }
    }

    /// How long the device may stay silent before it is closed (4004): twice its heartbeat.
    fn silence_limit(&self) -> Duration {
        Duration::from_secs(self.config.heartbeat_s) * 2
    }

    /// Tells the device what the engine noted for it: recalled pushes it got (`revoke`), its
    /// badge number (`badge`).
    async fn send_notices(&mut self, conn: &mut Conn) -> io::Result<()> {
        let notices = self.session.take_notices();
        let frames: Vec<String> = notices
            .iter()
            .map(|n| match *n {
                Notice::Revoke(m) => {
                    self.outbox.remove_inflight(&[m]);
                    format!(r#"{{"op":"revoke","msg_id":"{m}"}}"#)
                }
                Notice::Badge(b) => format!(r#"{{"op":"badge","badge":{b}}}"#),
            })
            .collect();
        let parts: Vec<(u8, &[u8])> = frames.iter().map(|f| (OP_TEXT, f.as_bytes())).collect();
        conn.send(&parts).await
    }

    /// Sends as many of `pushes` as the window allows, in one write; the rest wait for acks.
    async fn send_pushes(&mut self, conn: &mut Conn, pushes: Vec<Arc<LivePush>>) -> io::Result<()> {
        let platform = self.session.platform;
        let room = MAX_INFLIGHT - self.outbox.inflight_len().min(MAX_INFLIGHT);
        if pushes.len() > room {
            self.backlog = true;
        }
        let ordinal = self.session.ordinal;
        let frames: Vec<_> = pushes
            .iter()
            .take(room)
            .map(|p| {
                let variant = self.app.variant_of(p, ordinal);
                let frame = p.frame(variant, platform, |push| crate::encode_push(push, platform));
                match self.engine.badge_for(&self.app, ordinal, platform, p) {
                    Some(badge) => frames::with_badge(&frame, badge),
                    None => frame,
                }
            })
            .collect();
        if frames.is_empty() {
            return Ok(());
        }
        let parts: Vec<(u8, &[u8])> = frames.iter().map(|f| (OP_TEXT, &f[..])).collect();
        conn.send(&parts).await?;
        let sent = &pushes[..room.min(pushes.len())];
        self.engine.sent(&self.app, self.session.ordinal, sent);
        self.outbox.add_inflight(sent.iter().map(|p| p.msg_id()));
        Ok(())
    }

    /// Everything the device sent that is in: its acks taken as one batch (one call into
    /// the engine however many came in this read), other frames one by one, in order.
    async fn on_input(&mut self, conn: &mut Conn) -> io::Result<Option<End>> {
        let mut acked: Vec<u64> = Vec::new();
        let outcome = loop {
            let msg = match conn.next_message() {
                Err(e) => break Ok(Some(frame_error_close(e))),
                Ok(None) => break Ok(None),
                Ok(Some(msg)) => msg,
            };
            if let Incoming::Text(text) = &msg {
                if let Ok(ack) = serde_json::from_str::<AckFrame>(text) {
                    if ack.op == "ack" {
                        self.bad_frames = 0;
                        acked.extend(ack.msg_ids.into_iter().filter_map(|id| id.0));
                        continue;
                    }
                }
            }
            // What came before a frame is done before it (a click after its ack).
            if !acked.is_empty() {
                self.on_acks(std::mem::take(&mut acked)).await;
            }
            match self.on_message(conn, msg).await {
                Ok(None) => {}
                other => break other,
            }
        };
        if !acked.is_empty() {
            self.on_acks(acked).await;
        }
        outcome
    }

    async fn on_message(&mut self, conn: &mut Conn, msg: Incoming) -> io::Result<Option<End>> {
        let text = match msg {
            Incoming::Ping(p) => {
                conn.send(&[(OP_PONG, &p)]).await?;
                return Ok(None);
            }
            Incoming::Close => return Ok(Some(End::Close(1000, "bye".into()))),
            Incoming::NotText => {
                if let Some(end) = self.count_frame(conn, None).await? {
                    return Ok(end);
                }
                return self
                    .bad_frame(conn, "only UTF-8 text frames are part of the protocol")
                    .await;
            }
            Incoming::Text(t) => t,
        };
        let parsed = serde_json::from_str::<Value>(&text);
        let (op, seq) = match &parsed {
            Ok(Value::Object(o)) => (o.get("op").and_then(Value::as_str), o.get("seq")),
            _ => (None, None),
        };
        // Acks and pings are exempt: limiting them would only make a device redeliver or
        // time out. Everything else counts, bad frames too.
        if !matches!(op, Some("ack" | "ping")) {
            if let Some(end) = self.count_frame(conn, seq).await? {
                return Ok(end);
            }
        }
        let frame = match parsed {
            Ok(Value::Object(o)) if o.get("op").is_some_and(Value::is_string) => o,
            Ok(_) => {
                return self
                    .bad_frame(conn, "a frame must be a JSON object with a string op")
                    .await
            }
            Err(e) => return self.bad_frame(conn, &format!("not JSON: {e}")).await,
        };
        self.bad_frames = 0;
        let seq = frame.get("seq").cloned();
        let op = frame.get("op").and_then(Value::as_str).unwrap_or_default();
        let outcome: Result<(), String> = match op {
            "ack" => {
                self.on_ack(&frame).await;
                return Ok(None);
            }
            "ping" => {
                conn.send_text(frames::PONG).await?;
                return Ok(None);
            }
            "click" => self.on_click(&frame).await,
            "location" => self.on_location(&frame).await,
            "set_alias" => self.on_set_alias(&frame).await,
            "set_tags" => self.on_set_tags(&frame).await,
            "hello" => Err("already said hello".into()),
            _ => {
                if let Some(seq) = &seq {
                    let reason = format!("unknown op {op:?}");
                    conn.send_text(&frames::error(1009, &reason, Some(seq)))
                        .await?;
                }
                return Ok(None);
            }
        };
        match (outcome, &seq) {
            (Ok(()), Some(seq)) => conn.send_text(&frames::ok(seq)).await?,
            (Ok(()), None) => {}
            (Err(reason), seq) => {
                conn.send_text(&frames::error(1003, &reason, seq.as_ref()))
                    .await?
            }
        }
        Ok(None)
    }

    /// Counts a frame against the device's rate. `Some(None)`: over the rate, answered
    /// 2002 and to be dropped; `Some(Some(end))`: over it for too long, close.
    async fn count_frame(
        &mut self,
        conn: &mut Conn,
        seq: Option<&Value>,
    ) -> io::Result<Option<Option<End>>> {
        match self
            .rate
            .check(rate::now_ticks(), self.config.frame_limits())
        {
            Verdict::Accept => Ok(None),
            Verdict::Refuse => {
                let reason = format!(
                    "too many frames: at most {} a second on average, bursts of {}, ack and ping aside",
                    self.config.device_rate_per_s, self.config.device_rate_burst
                );
                conn.send_text(&frames::error(2002, &reason, seq)).await?;
                Ok(Some(None))
            }
            Verdict::Close => Ok(Some(Some(End::Close(4006, "too many frames".into())))),
        }
    }

    async fn bad_frame(&mut self, conn: &mut Conn, reason: &str) -> io::Result<Option<End>> {
        self.bad_frames = self.bad_frames.saturating_add(1);
        if u32::from(self.bad_frames) >= MAX_BAD_FRAMES {
            return Ok(Some(End::Close(4003, "too many bad frames".into())));
        }
        conn.send_text(&frames::error(1003, reason, None)).await?;
        Ok(None)
    }

    async fn on_ack(&mut self, frame: &Map<String, Value>) {
        let Some(Value::Array(ids)) = frame.get("msg_ids") else {
            return;
        };
        let ids: Vec<u64> = ids.iter().filter_map(msg_id_of).collect();
        self.on_acks(ids).await;
    }

    async fn on_acks(&mut self, ids: Vec<u64>) {
        self.outbox.remove_inflight(&ids);
        self.engine.ack(&self.app, self.session.ordinal, &ids).await;
    }

    async fn on_click(&self, frame: &Map<String, Value>) -> Result<(), String> {
        let msg_id = frame
            .get("msg_id")
            .and_then(msg_id_of)
            .ok_or("click needs a msg_id")?;
        // A push still in flight was written to this connection: received, no lookup.
        let in_flight = self.outbox.is_inflight(msg_id);
        match self
            .engine
            .record_click(&self.app, self.session.ordinal, msg_id, in_flight)
            .await
        {
            Ok(()) => Ok(()),
            Err(EngineError::NotReceived(_)) => Err(format!(
                "msg_id {msg_id} is not a push this device received"
            )),
            Err(e) => Err(format!("could not record the click: {e}")),
        }
    }

    async fn on_location(&self, frame: &Map<String, Value>) -> Result<(), String> {
        let num = |k: &str| frame.get(k).and_then(Value::as_f64);
        let (Some(lat), Some(lon)) = (num("lat"), num("lon")) else {
            return Err("location needs numbers lat and lon".into());
        };
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err("lat must be within ±90 and lon within ±180".into());
        }
        let accuracy_m = num("accuracy_m");
        if accuracy_m.is_some_and(|acc| acc < 0.0) {
            return Err("accuracy_m must not be negative".into());
        }
        let location = Location {
            lat,
            lon,
            accuracy_m,
            at_ms: now_ms(),
        };
        self.engine
            .report_location(&self.app, self.session.ordinal, location)
            .await
            .map_err(|e| format!("the location could not be judged: {e}"))
    }

    async fn on_set_alias(&self, frame: &Map<String, Value>) -> Result<(), String> {
        let alias = match frame.get("alias") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => {
                check_name("alias", s)?;
                Some(s.clone())
            }
            Some(_) => return Err("alias must be a string or null".into()),
        };
        self.engine
            .update_device(&self.app, self.session.ordinal, Some(alias), None)
            .await
            .map_err(|e| format!("could not set the alias: {e}"))
    }

    async fn on_set_tags(&self, frame: &Map<String, Value>) -> Result<(), String> {
        let tags = register::tags(frame.get("tags").unwrap_or(&Value::Null))?;
        self.engine
            .update_device(&self.app, self.session.ordinal, None, Some(tags))
            .await
            .map_err(|e| format!("could not set the tags: {e}"))
    }
}

/// An `ack` frame read straight into its fields, without a JSON tree: most frames a busy
/// connection gets are acks. Anything that does not read as one goes the general way.
#[derive(Deserialize)]
struct AckFrame<'a> {
    #[serde(borrow)]
    op: &'a str,
    #[serde(default)]
    msg_ids: Vec<AckedId>,
}

/// One msg_id of an ack: a decimal string or a number; anything else is skipped, as the
/// general path skips it.
struct AckedId(Option<u64>);

impl<'de> Deserialize<'de> for AckedId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AckedIdVisitor)
    }
}

struct AckedIdVisitor;

impl<'de> serde::de::Visitor<'de> for AckedIdVisitor {
    type Value = AckedId;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a msg_id")
    }
    fn visit_str<E>(self, v: &str) -> Result<AckedId, E> {
        Ok(AckedId(v.parse().ok()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<AckedId, E> {
        Ok(AckedId(Some(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<AckedId, E> {
        Ok(AckedId(u64::try_from(v).ok()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<AckedId, E> {
        Ok(AckedId(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<AckedId, E> {
        Ok(AckedId(None))
    }
    fn visit_unit<E>(self) -> Result<AckedId, E> {
        Ok(AckedId(None))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<AckedId, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(AckedId(None))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<AckedId, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(AckedId(None))
    }
}

/// A msg_id as devices send it: a decimal string (or, leniently, a number).
fn msg_id_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without making one.
    fn future_size<'a, F, Fut>(_: F) -> usize
    where
        F: FnOnce(&'a mut Conn, &'a Gateway) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// What an idle device costs is mostly its task: tokio's task cell (a header and trailer
    /// of ~96 bytes around this future), aligned to 128 bytes, so it grows in steps of 128.
    /// At 864 bytes the cell took 1024 (heaptrack); at 776 (`Conn` without room for a
    /// fragmented message, the upgrade and the protocol in one task future) it takes 896.
    /// Growing it grows every connection; rare paths belong in boxed sub-futures.
    #[test]
    fn an_idle_connection_stays_small() {
        let run = future_size(run);
        let task = {
            fn size<F, Fut>(_: F) -> usize
            where
                F: FnOnce(hyper::upgrade::OnUpgrade, Arc<Outbox>, Gateway) -> Fut,
            {
                std::mem::size_of::<Fut>()
            }
            size(serve_upgraded)
        };
        assert!(
            task <= 792,
            "the connection's task future grew to {task} bytes"
        );
        assert!(run <= 640, "the protocol's future grew to {run} bytes");
        assert!(std::mem::size_of::<Device>() <= 72);
        assert!(std::mem::size_of::<Conn>() <= 88);
    }
}
