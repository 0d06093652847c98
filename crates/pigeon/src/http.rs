//! The HTTP server under every route: Pigeon's own accept loop over hyper, because
//! `axum::serve` has no timeouts and no connection cap, and a client that sends half a header
//! or a body it never finishes would otherwise hold its descriptor forever.
//!
//! - A connection is *pending* until its first request head has arrived. Pending connections
//!   have their own cap; when it is full the oldest pending connection is dropped to admit the
//!   new one, so clients that send their request at once (`/health`, API clients, devices)
//!   are served while an attacker holds many half-open connections.
//! - A pending connection whose first head has not arrived within `header_timeout` is closed;
//!   hyper's `header_read_timeout` does the same for every later head (which also makes it the
//!   keep-alive idle timeout).
//! - A request body must be in whole within `body_timeout` of its head; if not, the handler's
//!   read fails and the answer is a 408 in the JPush error shape, and the connection closes.
//! - Beyond `max_connections` (pending or not, WebSockets included: the count lives with the
//!   socket, also after an upgrade) a connection is accepted and closed at once, rather than
//!   left in the kernel's backlog.
//! - Device WebSockets may take at most `max_devices` of those connections: the rest is
//!   headroom for the API, so a full crowd of devices cannot lock out the app's backend (a
//!   device beyond it gets 503 and comes back later, as the device protocol's back-off says).

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use futures_util::FutureExt;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use parking_lot::Mutex;
use pigeon_core::error_json;
use pigeon_engine::Engine;
use pigeon_gateway::Outbox;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio_rustls::TlsAcceptor;

/// Longest request target answered by a handler; longer ones get 414 in JSON. hyper's own
/// limit (the head buffer, [`MAX_HEAD_BUFFER`]) is well above, so up to there the answer is
/// ours and has a body.
pub const MAX_URI_BYTES: usize = 16 * 1024;
/// Most bytes of request headers answered by a handler; more get 431 in JSON.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// hyper's read buffer for a request head: a head larger than this gets hyper's own 431 with
/// an empty body (its parse errors cannot be answered by a handler).
const MAX_HEAD_BUFFER: usize = 64 * 1024;
/// The device WebSocket's path: its connections have a share of their own.
const DEVICE_CONNECT: &str = "/v1/connect";

/// The limits of the HTTP layer (README, "Configuration").
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub max_pending: usize,
    /// Most upgraded device WebSockets (below `max_connections`).
    pub max_devices: usize,
}

/// Connections that have not yet sent their first request head, oldest first (ids grow).
#[derive(Default)]
struct Pending {
    conns: Mutex<BTreeMap<u64, Arc<Notify>>>,
}

impl Pending {
    /// Adds a connection; if that makes more than `cap`, drops the oldest (tells it to go).
    fn insert(&self, id: u64, evict: Arc<Notify>, cap: usize) {
        let oldest = {
            let mut m = self.conns.lock();
            m.insert(id, evict);
            if m.len() > cap {
                m.pop_first()
            } else {
                None
            }
        };
        if let Some((_, evict)) = oldest {
            evict.notify_one();
        }
    }

    /// Whether the connection was still pending (and now is not).
    fn remove(&self, id: u64) -> bool {
        self.conns.lock().remove(&id).is_some()
    }
}

/// One open connection in the counts, as long as it lives: after a WebSocket upgrade the
/// stream moves into the device's task, and the count goes with it.
struct Count {
    open: Arc<AtomicUsize>,
    /// Set once the connection became a device WebSocket; it is then counted in
    /// `Shared::devices` too, until it closes.
    device: Arc<AtomicBool>,
    devices: Arc<AtomicUsize>,
}

impl Count {
    fn new(open: Arc<AtomicUsize>, devices: Arc<AtomicUsize>) -> Count {
        open.fetch_add(1, Ordering::Relaxed);
        Count {
            open,
            device: Arc::new(AtomicBool::new(false)),
            devices,
        }
    }
}

impl Drop for Count {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if self.device.load(Ordering::Relaxed) {
            self.devices.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A plain TCP connection's socket, inside the outbox it shares with the fan-out when it
/// becomes a device connection: hyper reads and writes it through this, and the fan-out
/// writes push frames to it directly, without waking the connection's task
/// (`pigeon_gateway::DeviceSocket`).
struct SharedTcp(Arc<Outbox>);

impl SharedTcp {
    fn tcp(&self) -> std::io::Result<&TcpStream> {
        self.0
            .socket()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }

    /// Runs `write` once the socket can take bytes, again each time it turns out full.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        let tcp = self.tcp()?;
        loop {
            std::task::ready!(tcp.poll_write_ready(cx))?;
            match write(tcp) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let tcp = self.tcp()?;
        loop {
            std::task::ready!(tcp.poll_read_ready(cx))?;
            // SAFETY: `recv` only writes into the slice, and the bytes it reports are
            // marked initialized before they become part of `buf`.
            let unfilled = unsafe { buf.unfilled_mut() };
            let room = unfilled.len();
            let mut got = 0;
            // A read that leaves room has drained the socket (its readiness is edge
            // triggered): reporting it as "would block" to `try_io` clears the readiness,
            // so the next poll waits instead of trying a read that would fail, as tokio's
            // own stream does.
            let read = tcp.try_io(tokio::io::Interest::READABLE, || {
                got = socket2::SockRef::from(tcp).recv(unfilled)?;
                if got > 0 && got < room {
                    return Err(std::io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match read {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && got == 0 => continue,
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return Poll::Ready(Err(e)),
                _ => {
                    // SAFETY: the read initialized the first `got` bytes of the unfilled part.
                    unsafe { buf.assume_init(got) };
                    buf.advance(got);
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_with(cx, |tcp| tcp.try_write(buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.poll_write_with(cx, |tcp| tcp.try_write_vectored(bufs))
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let tcp = self.tcp()?;
        Poll::Ready(socket2::SockRef::from(tcp).shutdown(std::net::Shutdown::Write))
    }
}

/// A connection's stream — TCP, or TLS over TCP — with its [`Count`], and the rewriting of
/// hyper's own error answers (on the plain text, under TLS too).
struct Counted<S> {
    io: S,
    count: Count,
    /// hyper's own error answer, rewritten in JSON, while it is being written.
    rewrite: Option<Box<Rewrite>>,
}

impl<S> Counted<S> {
    fn new(io: S, count: Count) -> Counted<S> {
        Counted {
            io,
            count,
            rewrite: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Some(done) = this.poll_rewrite(cx, buf, buf.len()) {
            return done;
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        let total = bufs.iter().map(|b| b.len()).sum();
        if let Some(done) = this.poll_rewrite(cx, first, total) {
            return done;
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// hyper answers a request head it cannot parse (400) or that overflows its buffer or
/// header count (431) itself, with an empty body, before any handler runs. Every answer
/// Pigeon's handlers give to an error has a JSON body, so an HTTP/1.1 4xx head that says
/// `content-length: 0` on a closing connection is hyper's: it is replaced on the way out by
/// the same answer in the JPush error shape. The bytes of hyper's answer are reported written
/// once the replacement is.
struct Rewrite {
    bytes: Vec<u8>,
    written: usize,
}

impl<S: AsyncWrite + Unpin> Counted<S> {
    /// `Some` while a rewritten answer is being written (for the write of hyper's answer,
    /// `hyper_len` bytes long); `None` to write `head` through.
    fn poll_rewrite(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
        hyper_len: usize,
    ) -> Option<Poll<std::io::Result<usize>>> {
        if self.rewrite.is_none() {
            // Device WebSockets after their upgrade never carry an HTTP head.
            if self.count.device.load(Ordering::Relaxed) {
                return None;
            }
            self.rewrite = Some(Box::new(Rewrite {
                bytes: json_error_head(head)?,
                written: 0,
            }));
        }
        let rewrite = self.rewrite.as_mut()?;
        if rewrite.written == rewrite.bytes.len() {
            // Written already: whatever comes after goes through as it is.
            return None;
        }
        while rewrite.written < rewrite.bytes.len() {
            match Pin::new(&mut self.io).poll_write(cx, &rewrite.bytes[rewrite.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Some(Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => rewrite.written += n,
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        Some(Poll::Ready(Ok(hyper_len)))
    }
}

/// hyper's own error answer in the JPush shape, if `head` is one (see [`Rewrite`]).
fn json_error_head(head: &[u8]) -> Option<Vec<u8>> {
    const PREFIX: &[u8] = b"HTTP/1.1 4";
    if !head.starts_with(PREFIX) {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?.to_ascii_lowercase();
    if !text.contains("\r\ncontent-length: 0") || !text.contains("\r\nconnection: close") {
        return None;
    }
    let status: u16 = text.get(9..12)?.parse().ok()?;
    // The status line's own text (its reason phrase may be missing: then nothing).
    let line = &text[..text.find('\r')?];
    let reason = head_text(head, 13.min(line.len()), line.len())?;
    let message = match status {
        400 => "the request is not well-formed HTTP/1.1 (request line, header syntax or framing)",
        431 => "the request head is larger than 64 KiB or has more than 100 header fields",
        _ => reason,
    };
    let body = error_json(u32::from(status), message).to_string();
    Some(
        format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Takes a place for one more device WebSocket, if there is one below `max_devices`.
fn reserve_device(shared: &Shared) -> bool {
    let before = shared.devices.fetch_add(1, Ordering::Relaxed);
    if before >= shared.limits.max_devices {
        shared.devices.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// A reserved device place, given back on drop unless the connection took it over.
struct DeviceSlot<'a> {
    shared: &'a Shared,
}

impl Drop for DeviceSlot<'_> {
    fn drop(&mut self) {
        self.shared.devices.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `head[from..to]` as text (the reason phrase keeps its case).
fn head_text(head: &[u8], from: usize, to: usize) -> Option<&str> {
    std::str::from_utf8(head.get(from..to)?).ok()
}

/// What every request of every connection shares.
struct Shared {
    router: Router,
    engine: Arc<Engine>,
    limits: HttpLimits,
    pending: Pending,
    /// Open device WebSockets.
    devices: Arc<AtomicUsize>,
    /// HTTPS only, when set: every connection's TLS handshake, before its first head.
    tls: Option<TlsAcceptor>,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets
/// requests in flight finish (bounded by `drain`) and returns. Upgraded connections (device
/// WebSockets) are not waited for: the caller closes them through the engine. With `tls`,
/// every connection is TLS (HTTP/2 or HTTP/1.1 by ALPN) and nothing else is served.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    router: Router,
    engine: Arc<Engine>,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_HEAD_BUFFER);
    // CONNECT protocol for WebSockets over HTTP/2 (RFC 8441), as axum::serve set it.
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    let shared = Arc::new(Shared {
        router,
        engine,
        limits,
        pending: Pending::default(),
        devices: Arc::new(AtomicUsize::new(0)),
        tls,
    });
    let open = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a sender; when all are gone, recv() answers None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut next_id: u64 = 0;
    let mut refused: u64 = 0;
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors (EMFILE) or memory: wait a little instead of spinning;
                // a connection reset before it was accepted is no reason to wait.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) {
                    if warn_now(&mut last_warning) {
                        tracing::warn!(error = %e, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= shared.limits.max_connections {
            // Closed at once: left in the backlog it would wait forever and fill it.
            drop(tcp);
            refused += 1;
            if warn_now(&mut last_warning) {
                tracing::warn!(
                    refused,
                    max_connections = shared.limits.max_connections,
                    "connection limit reached: closing new connections"
                );
            }
            continue;
        }
        // Answers and push frames are whole messages written at once: sending them at once
        // matters more than coalescing (Nagle's wait on the peer's ack adds latency to every
        // frame that follows another one still unacked).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let count = Count::new(open.clone(), shared.devices.clone());
        next_id += 1;
        let evict = Arc::new(Notify::new());
        shared
            .pending
            .insert(next_id, evict.clone(), shared.limits.max_pending);
        tokio::spawn(connection(
            builder.clone(),
            shared.clone(),
            tcp,
            count,
            peer,
            next_id,
            evict,
            stop_rx.clone(),
            done_tx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    if tokio::time::timeout(drain, done_rx.recv()).await.is_err() {
        tracing::warn!(
            "requests still in flight after {} ms; stopping anyway",
            drain.as_millis()
        );
    }
}

/// Resolves once the server is shutting down (or its accept loop is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across the awaits that follow.
    let _ = stop.wait_for(|s| *s).await.map(|_| ());
}

/// At most one warning a second from the accept loop.
fn warn_now(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
        return false;
    }
    *last = Some(now);
    true
}

/// One connection: its TLS handshake when the listener has TLS, then HTTP. From its accept
/// until its first request head is in, it is pending (evictable), and handshake and head
/// together must be done within the header timeout, so a client that never finishes its
/// handshake holds its place no longer than one that never finishes its head.
#[allow(clippy::too_many_arguments)]
async fn connection(
    builder: Arc<Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    tcp: TcpStream,
    count: Count,
    peer: SocketAddr,
    id: u64,
    evict: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let first_head = tokio::time::sleep(shared.limits.header_timeout);
    tokio::pin!(first_head);
    let Some(acceptor) = shared.tls.clone() else {
        let outbox = Arc::new(Outbox::new(Some(tcp)));
        let socket = Some(pigeon_gateway::DeviceSocket(outbox.clone()));
        let io = Counted::new(SharedTcp(outbox), count);
        return http_connection(
            builder, shared, io, socket, peer, id, evict, first_head, stop, done,
        )
        .await;
    };
    let tls = tokio::select! {
        biased;
        // Evicted mid-handshake: no request can be waiting yet.
        _ = evict.notified() => return,
        handshake = acceptor.accept(tcp) => match handshake {
            Ok(tls) => tls,
            Err(e) => {
                shared.pending.remove(id);
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
        },
        _ = &mut first_head => {
            shared.pending.remove(id);
            tracing::debug!(%peer, "no TLS handshake within the header timeout: closed");
            return;
        }
        _ = stopped(&mut stop) => {
            shared.pending.remove(id);
            return;
        }
    };
    let io = Counted::new(tls, count);
    http_connection(
        builder, shared, io, None, peer, id, evict, first_head, stop, done,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn http_connection<S>(
    builder: Arc<Builder<TokioExecutor>>,
    shared: Arc<Shared>,
    io: Counted<S>,
    socket: Option<pigeon_gateway::DeviceSocket>,
    peer: SocketAddr,
    id: u64,
    evict: Arc<Notify>,
    mut first_head: Pin<&mut tokio::time::Sleep>,
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let head = Arc::new(Notify::new());
    let head_seen = Arc::new(AtomicBool::new(false));
    let service = {
        let shared = shared.clone();
        let head = head.clone();
        let head_seen = head_seen.clone();
        let device = io.count.device.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            // The first head is in: the connection is no longer pending, so no newcomer
            // can evict it any more.
            head_seen.store(true, Ordering::Relaxed);
            if shared.pending.remove(id) {
                head.notify_one();
            }
            handle(shared.clone(), peer, device.clone(), socket.clone(), req)
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // Pending: until the first head arrives, within the header timeout (counted from the
    // accept). hyper's own header timeout would not cover the bytes the HTTP/1-or-2
    // detection reads first.
    tokio::select! {
        biased;
        _ = evict.notified() => {
            // Under a flood this task may not have run since its connection was accepted: a
            // client that sent its whole request at once (a health check) has its head
            // waiting in the socket. Read what is there (one poll) and let the connection go
            // (dropping it closes the socket) only if no head came of it.
            if conn.as_mut().now_or_never().is_some() || !head_seen.load(Ordering::Relaxed) {
                return;
            }
        }
        _ = head.notified() => {}
        result = conn.as_mut() => {
            shared.pending.remove(id);
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            return;
        }
        _ = &mut first_head => {
            shared.pending.remove(id);
            tracing::debug!(%peer, "no request head within the header timeout: closed");
            return;
        }
        _ = stopped(&mut stop) => {
            shared.pending.remove(id);
            return;
        }
    }
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        }
        _ = stopped(&mut stop) => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// One request: the checks only a handler can answer in JSON, path normalization, the peer
/// address (for IP allowlists), the body deadline, the router, then the safety nets on the
/// answer (JSON errors, rate-limit headers) and the request log line.
async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    device: Arc<AtomicBool>,
    socket: Option<pigeon_gateway::DeviceSocket>,
    req: Request<Incoming>,
) -> Result<Response, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let (mut parts, body) = req.into_parts();
    if let Some(uri) = pigeon_jpush::normalize_path(&parts.uri) {
        parts.uri = uri;
    }
    let path = parts.uri.path().to_string();
    parts.extensions.insert(axum::extract::ConnectInfo(peer));
    let timed_out = Arc::new(AtomicBool::new(false));
    let mut device_slot: Option<DeviceSlot<'_>> = None;
    let mut response = if target_len > MAX_URI_BYTES {
        error_response(
            StatusCode::URI_TOO_LONG,
            &format!("the request target is longer than {MAX_URI_BYTES} bytes"),
        )
    } else if header_bytes > MAX_HEADER_BYTES {
        error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            &format!("the request headers are larger than {MAX_HEADER_BYTES} bytes"),
        )
    } else if path == DEVICE_CONNECT && !reserve_device(&shared) {
        let mut r = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "this server holds its most device connections ({}); try again later",
                shared.limits.max_devices
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        r
    } else {
        // Past the check above, a device's upgrade holds a reserved place.
        if path == DEVICE_CONNECT {
            device_slot = Some(DeviceSlot { shared: &shared });
            if let Some(socket) = socket {
                parts.extensions.insert(socket);
            }
        }
        // A body with nothing to read needs no deadline (GETs, the WebSocket upgrade).
        let body = if body.is_end_stream() {
            Body::new(body)
        } else {
            Body::new(DeadlineBody {
                inner: body,
                deadline: Box::pin(tokio::time::sleep(shared.limits.body_timeout)),
                timed_out: timed_out.clone(),
            })
        };
        let req = Request::from_parts(parts, body);
        let response = tower::ServiceExt::oneshot(shared.router.clone(), req).await?;
        if timed_out.load(Ordering::Relaxed) {
            let mut r = error_response(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} ms",
                    shared.limits.body_timeout.as_millis()
                ),
            );
            // The rest of the body may still come; the connection cannot be reused.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        } else {
            pigeon_http::json_errors_of(response).await
        }
    };
    // A device's place was reserved before routing (so upgrades arriving together cannot all
    // pass the check): the connection keeps it once it is a WebSocket (and gives it back when
    // it closes); otherwise the slot gives it back when dropped, also if this request is.
    if let Some(slot) = device_slot.take() {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS
            && !device.swap(true, Ordering::Relaxed)
        {
            std::mem::forget(slot);
        }
    }
    if !response.headers().contains_key("x-rate-limit-limit") {
        pigeon_http::set_rate_headers(response.headers_mut(), shared.engine.default_rate_state());
    }
    let status = response.status().as_u16();
    let took = started.elapsed();
    let route = response
        .extensions()
        .get::<MatchedRoute>()
        .map(|r| r.0.as_str());
    pigeon_telemetry::http_request(route, status, took);
    // Tenths of a millisecond: a number in JSON, short in text.
    let ms = (took.as_secs_f64() * 10_000.0).round() / 10.0;
    let app_key = response
        .extensions()
        .get::<pigeon_http::CallerApp>()
        .map(|a| a.0.clone());
    let app_key = app_key.as_deref().unwrap_or("-");
    // Unmatched requests (404) have no route: logged as `-`, with the path as it came.
    let route = route.unwrap_or("-");
    let msg_id = response.extensions().get::<pigeon_http::AnswerMsgId>();
    // One line per API call; not for the liveness probe, and the device WebSocket's upgrade
    // only at debug (a reconnect storm of devices would drown the API lines).
    if path == "/health" || path == DEVICE_CONNECT {
        tracing::debug!(%method, %route, %path, status, ms, "request");
    } else if let Some(pigeon_http::AnswerMsgId(msg_id)) = msg_id {
        tracing::info!(%method, %route, %path, status, ms, %app_key, %msg_id, "request");
    } else {
        tracing::info!(%method, %route, %path, status, ms, %app_key, "request");
    }
    Ok(response)
}

/// The route template a request matched (`/v3/push/{msg_id}`), carried on its answer to the
/// request log and the HTTP metrics: they name routes, not ids (bounded label values).
#[derive(Clone)]
pub struct MatchedRoute(pub axum::extract::MatchedPath);

/// A route layer (it runs for matched routes only) that puts [`MatchedRoute`] on the answer.
pub async fn keep_route(
    route: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    response.extensions_mut().insert(MatchedRoute(route));
    response
}

/// `GET /metrics`: every metric in the Prometheus text format, rendered on a blocking
/// thread (it reads `/proc`).
pub async fn metrics() -> Response {
    match tokio::task::spawn_blocking(pigeon_telemetry::render).await {
        Ok(text) => {
            let mut r = Response::new(Body::from(text));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(pigeon_telemetry::CONTENT_TYPE),
            );
            r
        }
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("rendering the metrics failed: {e}"),
        ),
    }
}

fn error_response(status: StatusCode, message: &str) -> Response {
    pigeon_http::json_response(status, &error_json(u32::from(status.as_u16()), message))
}

/// A request body that must be in whole by a deadline set when its head arrived: a body
/// trickling in one byte at a time would pass a per-read timeout.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
}

/// The error a handler's body read gets when the deadline passed.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body timeout")
    }
}

impl std::error::Error for BodyTimeout {}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_empty_error_answers_are_rewritten() {
        let hypers = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let rewritten = String::from_utf8(json_error_head(hypers).unwrap()).unwrap();
        let (head, body) = rewritten.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let err: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(err["error"]["code"], 400);
        // A handler's answers (JSON bodies), successes, upgrades and frames go through.
        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"\x81\x05hello",
            b"HTTP/1.1 4",
            b"HTTP/1.1 4\r\n\r\n",
            b"",
        ] {
            assert!(json_error_head(other).is_none(), "{other:?}");
        }
        // A status line without a reason phrase is still rewritten, without one.
        let bare = b"HTTP/1.1 400\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let rewritten = String::from_utf8(json_error_head(bare).unwrap()).unwrap();
        assert!(rewritten.starts_with("HTTP/1.1 400 \r\n"), "{rewritten}");
    }

    #[test]
    fn a_full_pending_set_evicts_its_oldest() {
        let p = Pending::default();
        let n: Vec<Arc<Notify>> = (0..3).map(|_| Arc::new(Notify::new())).collect();
        p.insert(1, n[0].clone(), 2);
        p.insert(2, n[1].clone(), 2);
        assert!(p.remove(2));
        p.insert(3, n[2].clone(), 2);
        p.insert(4, Arc::new(Notify::new()), 2);
        // 1 was the oldest: gone, and told so.
        assert!(!p.remove(1));
        assert!(p.remove(3) && p.remove(4));
    }
}
