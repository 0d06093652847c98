//! One device connection: `GET /v1/connect` upgraded to a WebSocket (protocol §2–§6).

use crate::{frames, register, Gateway, MAX_BAD_FRAMES, MAX_CLIENT_FRAME, MAX_INFLIGHT};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use futures_util::SinkExt;
use pigeon_core::names::check_name;
use pigeon_engine::{now_ms, AppState, Engine, LivePush, Session, SessionMsg};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep_until, timeout_at, Instant};

pub(crate) async fn upgrade(State(gw): State<Gateway>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| async move {
            if let Err(e) = run(socket, gw).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        })
}

/// Why a connection ends, from the server's side.
enum End {
    /// Close with this code and reason.
    Close(u16, String),
    /// The peer went away or closed; nothing more to send.
    Gone,
}

type WsResult<T> = Result<T, axum::Error>;

async fn close(socket: &mut WebSocket, code: u16, reason: &str) -> WsResult<()> {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    };
    socket.send(Message::Close(Some(frame))).await
}

fn is_too_large(e: &axum::Error) -> bool {
    let text = e.to_string();
    text.contains("too long") || text.contains("too big") || text.contains("Space limit")
}

async fn run(mut socket: WebSocket, gw: Gateway) -> WsResult<()> {
    let hello = match read_hello(&mut socket, gw.config.hello_timeout).await {
        Ok(h) => h,
        Err(End::Close(code, reason)) => return close(&mut socket, code, &reason).await,
        Err(End::Gone) => return Ok(()),
    };
    let (app, session, rx) = match gw.engine.connect(&hello.0, &hello.1) {
        Ok(s) => s,
        Err(_) => {
            let reason = "registration_id and device_secret do not match a device";
            socket
                .send(Message::Text(frames::error(1004, reason, None).into()))
                .await?;
            return close(&mut socket, 4001, "bad credentials").await;
        }
    };
    let mut conn = Connection {
        engine: gw.engine.clone(),
        app,
        session,
        rx,
        heartbeat: Duration::from_secs(gw.config.heartbeat_s),
        inflight: Vec::with_capacity(MAX_INFLIGHT),
        backlog: false,
        bad_frames: 0,
    };
    let result = conn.serve(&mut socket, gw.config.heartbeat_s).await;
    conn.engine.disconnect(&conn.app, &conn.session);
    match result {
        Ok(End::Close(code, reason)) => close(&mut socket, code, &reason).await,
        Ok(End::Gone) => Ok(()),
        Err(e) if is_too_large(&e) => close(&mut socket, 1009, "frame too large").await,
        Err(e) => Err(e),
    }
}

/// Waits for `{"op":"hello",...}`; control frames before it are allowed.
async fn read_hello(socket: &mut WebSocket, limit: Duration) -> Result<(String, String), End> {
    let deadline = Instant::now() + limit;
    loop {
        let msg = match timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(End::Close(4000, "no hello in time".into())),
            Ok(None) => return Err(End::Gone),
            Ok(Some(Err(e))) if is_too_large(&e) => {
                return Err(End::Close(1009, "frame too large".into()))
            }
            Ok(Some(Err(_))) => return Err(End::Gone),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => return Err(End::Gone),
            Message::Binary(_) => {
                return Err(End::Close(4000, "the first frame must be hello".into()))
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
                if field("op").as_deref() != Some("hello") {
                    return Err(End::Close(4000, "the first frame must be hello".into()));
                }
                return match (field("registration_id"), field("device_secret")) {
                    (Some(r), Some(s)) => Ok((r, s)),
                    _ => Err(End::Close(
                        4000,
                        "hello needs registration_id and device_secret".into(),
                    )),
                };
            }
        }
    }
}

struct Connection {
    engine: Arc<Engine>,
    app: Arc<AppState>,
    session: Session,
    rx: mpsc::Receiver<SessionMsg>,
    heartbeat: Duration,
    /// msg_ids sent and not yet acked, in send order; at most [`MAX_INFLIGHT`].
    inflight: Vec<u64>,
    /// More pushes may be waiting in the offline store than were sent.
    backlog: bool,
    bad_frames: u32,
}

impl Connection {
    async fn serve(&mut self, socket: &mut WebSocket, heartbeat_s: u64) -> WsResult<End> {
        let pending = self.app.pending_for(self.session.ordinal, now_ms());
        let welcome = frames::welcome(heartbeat_s, now_ms(), pending.len());
        socket.send(Message::Text(welcome.into())).await?;
        self.send_pushes(socket, pending).await?;
        let mut deadline = Instant::now() + self.heartbeat * 2;
        loop {
            tokio::select! {
                msg = socket.recv() => {
                    deadline = Instant::now() + self.heartbeat * 2;
                    match msg {
                        None => return Ok(End::Gone),
                        Some(Err(e)) => return Err(e),
                        Some(Ok(m)) => {
                            if let Some(end) = self.on_client_frame(socket, m).await? {
                                return Ok(end);
                            }
                        }
                    }
                }
                Some(SessionMsg::Push(push)) = self.rx.recv() => {
                    if self.inflight.len() >= MAX_INFLIGHT {
                        self.backlog = true;
                    } else if !self.inflight.contains(&push.msg_id())
                        && push.is_live_for(self.session.ordinal, now_ms())
                    {
                        self.send_pushes(socket, vec![push]).await?;
                    }
                }
                _ = self.session.signalled() => {
                    if let Some((code, reason)) = self.session.close_request() {
                        return Ok(End::Close(code, reason));
                    }
                    if self.session.take_resync() {
                        self.backlog = true;
                    }
                }
                _ = sleep_until(deadline) => {
                    return Ok(End::Close(4004, "heartbeat timeout".into()));
                }
            }
            if self.backlog && self.inflight.len() < MAX_INFLIGHT {
                self.backlog = false;
                let pending: Vec<_> = self
                    .app
                    .pending_for(self.session.ordinal, now_ms())
                    .into_iter()
                    .filter(|p| !self.inflight.contains(&p.msg_id()))
                    .collect();
                self.send_pushes(socket, pending).await?;
            }
        }
    }

    /// Sends as many of `pushes` as the window allows; the rest wait for acks.
    async fn send_pushes(
        &mut self,
        socket: &mut WebSocket,
        pushes: Vec<Arc<LivePush>>,
    ) -> WsResult<()> {
        let platform = self.session.platform;
        let mut sent = 0;
        for push in pushes {
            if self.inflight.len() >= MAX_INFLIGHT {
                self.backlog = true;
                break;
            }
            let bytes = push.frame(platform, |p| crate::encode_push(p, platform));
            let text = Utf8Bytes::try_from(bytes).map_err(axum::Error::new)?;
            socket.feed(Message::Text(text)).await?;
            self.inflight.push(push.msg_id());
            sent += 1;
        }
        if sent > 0 {
            socket.flush().await?;
        }
        Ok(())
    }

    async fn send_text(&self, socket: &mut WebSocket, text: String) -> WsResult<()> {
        socket.send(Message::Text(text.into())).await
    }

    async fn on_client_frame(
        &mut self,
        socket: &mut WebSocket,
        msg: Message,
    ) -> WsResult<Option<End>> {
        let text = match msg {
            Message::Ping(_) | Message::Pong(_) => return Ok(None),
            Message::Close(_) => return Ok(Some(End::Gone)),
            Message::Binary(_) => {
                return self
                    .bad_frame(socket, "binary frames are not part of the protocol")
                    .await
            }
            Message::Text(t) => t,
        };
        let frame = match serde_json::from_str::<Value>(text.as_str()) {
            Ok(Value::Object(o)) if o.get("op").is_some_and(Value::is_string) => o,
            Ok(_) => {
                return self
                    .bad_frame(socket, "a frame must be a JSON object with a string op")
                    .await
            }
            Err(e) => return self.bad_frame(socket, &format!("not JSON: {e}")).await,
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
                self.send_text(socket, frames::PONG.into()).await?;
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
                    self.send_text(socket, frames::error(1009, &reason, Some(seq)))
                        .await?;
                }
                return Ok(None);
            }
        };
        match (outcome, &seq) {
            (Ok(()), Some(seq)) => self.send_text(socket, frames::ok(seq)).await?,
            (Ok(()), None) => {}
            (Err(reason), seq) => {
                self.send_text(socket, frames::error(1003, &reason, seq.as_ref()))
                    .await?
            }
        }
        Ok(None)
    }

    async fn bad_frame(&mut self, socket: &mut WebSocket, reason: &str) -> WsResult<Option<End>> {
        self.bad_frames += 1;
        if self.bad_frames >= MAX_BAD_FRAMES {
            return Ok(Some(End::Close(4003, "too many bad frames".into())));
        }
        self.send_text(socket, frames::error(1003, reason, None))
            .await?;
        Ok(None)
    }

    async fn on_ack(&mut self, frame: &Map<String, Value>) {
        let Some(Value::Array(ids)) = frame.get("msg_ids") else {
            return;
        };
        let ids: Vec<u64> = ids.iter().filter_map(msg_id_of).collect();
        self.inflight.retain(|m| !ids.contains(m));
        self.engine.ack(&self.app, self.session.ordinal, &ids).await;
        if !self.inflight.is_empty() || ids.is_empty() {
            return;
        }
        // The window emptied: there may be more stored pushes than were sent.
        self.backlog = true;
    }

    async fn on_click(&self, frame: &Map<String, Value>) -> Result<(), String> {
        let msg_id = frame
            .get("msg_id")
            .and_then(msg_id_of)
            .ok_or("click needs a msg_id")?;
        self.engine
            .record_event(
                &self.app,
                self.session.ordinal,
                "click",
                Some(msg_id),
                Value::Null,
            )
            .await
            .map_err(|e| format!("could not record the click: {e}"))
    }

    async fn on_location(&self, frame: &Map<String, Value>) -> Result<(), String> {
        let num = |k: &str| frame.get(k).and_then(Value::as_f64);
        let (Some(lat), Some(lon)) = (num("lat"), num("lon")) else {
            return Err("location needs numbers lat and lon".into());
        };
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err("lat must be within ±90 and lon within ±180".into());
        }
        let mut data = serde_json::json!({"lat": lat, "lon": lon});
        if let Some(acc) = num("accuracy_m") {
            if acc < 0.0 {
                return Err("accuracy_m must not be negative".into());
            }
            data["accuracy_m"] = acc.into();
        }
        self.engine
            .record_event(&self.app, self.session.ordinal, "location", None, data)
            .await
            .map_err(|e| format!("could not record the location: {e}"))
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
        let tags =
            register::tags(frame.get("tags").unwrap_or(&Value::Null)).map_err(|(_, body)| {
                body.0["error"]["message"]
                    .as_str()
                    .unwrap_or("bad tags")
                    .to_string()
            })?;
        self.engine
            .update_device(&self.app, self.session.ordinal, None, Some(tags))
            .await
            .map_err(|e| format!("could not set the tags: {e}"))
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
