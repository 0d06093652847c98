//! The write side of one device connection, shared by the connection's task and the
//! fan-out.
//!
//! A broadcast used to cost every device two wake-ups of its task and a hop between threads:
//! the fan-out queued the push and woke the task, which wrote it. Now the fan-out writes the
//! frame to the socket itself, without waiting (`try_write`), whenever the connection is
//! idle: nothing queued, its task not writing, room in the window. Anything else — the task
//! mid-write, a full window, a full socket, TLS — falls back to the queue and the task, as
//! before. A frame the socket took only part of leaves its rest here (`tail`), and the task
//! writes that before anything else.

use crate::{ws, MAX_INFLIGHT};
use parking_lot::Mutex;
use pigeon_core::{Ordinal, Platform};
use pigeon_engine::{Handoff, LivePush, Outlet};
use std::io::IoSlice;
use std::sync::Arc;
use tokio::net::TcpStream;

/// A plain TCP connection's outbox, made by the server with the socket in it before hyper
/// reads the first request (the server reads and writes HTTP through [`Outbox::socket`]),
/// and put in the extensions of a device's upgrade request. Under TLS there is none: the
/// gateway makes an outbox without a socket, and every push goes through the task.
#[derive(Clone)]
pub struct DeviceSocket(pub Arc<Outbox>);

/// What the task and the fan-out share of one connection's writes: one allocation with the
/// socket itself, since every idle device pays for it.
pub struct Outbox {
    socket: Option<TcpStream>,
    state: Mutex<State>,
}

struct State {
    /// Set when the connection ends: the fan-out writes no more.
    closed: bool,
    /// Set once the device said hello: the frames it gets are encoded for its platform.
    platform: Option<Platform>,
    /// msg_ids sent and not yet acked, in send order; at most [`MAX_INFLIGHT`]. Freed when
    /// empty, so an idle connection holds no allocation for it.
    inflight: Vec<u64>,
    /// The rest of a frame the fan-out started; written by the task before anything else.
    tail: Vec<u8>,
    /// Writes of the task under way (they nest): the fan-out queues meanwhile.
    busy: u8,
}

impl Outbox {
    pub fn new(socket: Option<TcpStream>) -> Outbox {
        Outbox {
            socket,
            state: Mutex::new(State {
                closed: false,
                platform: None,
                inflight: Vec::new(),
                tail: Vec::new(),
                busy: 0,
            }),
        }
    }

    /// The socket of a plain TCP connection.
    pub fn socket(&self) -> Option<&TcpStream> {
        self.socket.as_ref()
    }

    /// Whether the fan-out may write to this connection (plain TCP).
    pub(crate) fn is_direct(&self) -> bool {
        self.socket.is_some()
    }

    /// The device said hello: frames are encoded for `platform` from now on.
    pub(crate) fn set_platform(&self, platform: Platform) {
        self.state.lock().platform = Some(platform);
    }

    /// The task is about to write (or to take pushes from its queue to write): the fan-out
    /// queues until as many [`Outbox::release`]s.
    pub(crate) fn hold(&self) {
        let mut s = self.state.lock();
        s.busy = s.busy.saturating_add(1);
    }

    pub(crate) fn release(&self) {
        let mut s = self.state.lock();
        s.busy = s.busy.saturating_sub(1);
    }

    /// The rest of a frame the fan-out started, to be written before anything else.
    pub(crate) fn take_tail(&self) -> Vec<u8> {
        std::mem::take(&mut self.state.lock().tail)
    }

    pub(crate) fn has_tail(&self) -> bool {
        !self.state.lock().tail.is_empty()
    }

    /// The connection is over: the fan-out writes no more, and the socket may close.
    pub(crate) fn detach(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        s.tail = Vec::new();
    }

    pub(crate) fn inflight_len(&self) -> usize {
        self.state.lock().inflight.len()
    }

    pub(crate) fn is_inflight(&self, msg_id: u64) -> bool {
        self.state.lock().inflight.contains(&msg_id)
    }

    pub(crate) fn add_inflight(&self, msg_ids: impl Iterator<Item = u64>) {
        self.state.lock().inflight.extend(msg_ids);
    }

    /// Forgets pushes the device acked or that were recalled.
    pub(crate) fn remove_inflight(&self, msg_ids: &[u64]) {
        let mut s = self.state.lock();
        s.inflight.retain(|m| !msg_ids.contains(m));
        if s.inflight.is_empty() {
            s.inflight = Vec::new();
        }
    }
}

impl Outlet for Outbox {
    fn try_send(&self, push: &Arc<LivePush>, ordinal: Ordinal, now_ms: u64) -> Handoff {
        // Per-device content (A/B variants, badge numbers) stays with the task.
        if push.has_variants() {
            return Handoff::NotNow;
        }
        let Some(socket) = &self.socket else {
            return Handoff::NotNow;
        };
        let mut s = self.state.lock();
        let Some(platform) = s.platform else {
            return Handoff::NotNow;
        };
        if s.closed
            || s.busy > 0
            || !s.tail.is_empty()
            || s.inflight.len() >= MAX_INFLIGHT
            || push.badge_op(None, platform).is_some()
            || s.inflight.contains(&push.msg_id())
            || !push.is_live_for(ordinal, now_ms)
        {
            return Handoff::NotNow;
        }
        let payload = push.frame(None, platform, |p| crate::encode_push(p, platform));
        let mut head = [0u8; ws::MAX_HEADER];
        let head = ws::header(ws::OP_TEXT, payload.len(), &mut head);
        // Full (would block) or broken: the task writes it, or finds out and handles it.
        let written = match socket.try_write_vectored(&[IoSlice::new(head), IoSlice::new(&payload)])
        {
            Ok(n) if n > 0 => n,
            _ => return Handoff::NotNow,
        };
        s.inflight.push(push.msg_id());
        let total = head.len() + payload.len();
        if written == total {
            return Handoff::Written;
        }
        let mut rest = Vec::with_capacity(total - written);
        if written < head.len() {
            rest.extend_from_slice(&head[written..]);
            rest.extend_from_slice(&payload);
        } else {
            rest.extend_from_slice(&payload[written - head.len()..]);
        }
        s.tail = rest;
        Handoff::Started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::{Audience, Message, PlatformSet, Push};
    use roaring::RoaringBitmap;
    use std::io::Read;

    const DEVICE: Ordinal = 7;

    fn live(msg_id: u64, size: usize) -> Arc<LivePush> {
        let mut p = Push::new(PlatformSet::all(), Audience::All);
        p.msg_id = msg_id;
        p.sent_ms = pigeon_engine::now_ms();
        p.policy.ttl_s = 60;
        p.content.message = Some(Message {
            content: format!("{msg_id}:{}", "x".repeat(size)),
            title: None,
            content_type: None,
            extras: Default::default(),
        });
        let audience: RoaringBitmap = [DEVICE].into_iter().collect();
        Arc::new(LivePush::new(
            p,
            audience,
            RoaringBitmap::new(),
            RoaringBitmap::new(),
        ))
    }

    /// The unmasked server frames in `bytes`, as text; panics on a cut frame.
    fn frames(mut bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], 0x81, "a final text frame");
            let (len, at) = match bytes[1] {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => panic!("no frame here is that long"),
                n => (n as usize, 2),
            };
            let text = std::str::from_utf8(&bytes[at..at + len]).expect("UTF-8");
            out.push(text.to_string());
            bytes = &bytes[at + len..];
        }
        out
    }

    /// A socket that stops taking bytes part-way through a frame leaves the frame's rest in
    /// the outbox, and nothing more is written around it until the task took that rest:
    /// what the device reads is whole frames, in order.
    #[tokio::test]
    async fn a_full_socket_leaves_the_rest_of_a_frame_and_nothing_overtakes_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let device = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        device.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        device
            .connect(&listener.local_addr().expect("addr").into())
            .expect("connect");
        let (server, _) = listener.accept().expect("accept");
        socket2::SockRef::from(&server)
            .set_send_buffer_size(4096)
            .expect("SO_SNDBUF");
        server.set_nonblocking(true).expect("nonblocking");
        let outbox = Outbox::new(Some(TcpStream::from_std(server).expect("tokio")));
        // Before hello the fan-out has no platform to encode for.
        assert_eq!(
            outbox.try_send(&live(1, 10), DEVICE, pigeon_engine::now_ms()),
            Handoff::NotNow
        );
        outbox.set_platform(Platform::Android);
        // The reactor has seen the socket writable, as it has once the upgrade is answered.
        outbox
            .socket()
            .expect("socket")
            .writable()
            .await
            .expect("writable");

        let mut outcomes = Vec::new();
        for msg_id in 1..=MAX_INFLIGHT as u64 {
            let push = live(msg_id, 3000);
            outcomes.push(outbox.try_send(&push, DEVICE, pigeon_engine::now_ms()));
        }
        let started = outcomes
            .iter()
            .position(|o| *o == Handoff::Started)
            .unwrap_or_else(|| panic!("the socket filled part-way through a frame: {outcomes:?}"));
        assert!(outcomes[..started].iter().all(|o| *o == Handoff::Written));
        assert!(
            outcomes[started + 1..]
                .iter()
                .all(|o| *o == Handoff::NotNow),
            "nothing is written while the rest of a frame waits: {outcomes:?}"
        );
        assert_eq!(outbox.inflight_len(), started + 1);
        assert!(outbox.has_tail());

        // The task's turn: it holds the fan-out off, writes the rest, lets go.
        outbox.hold();
        assert_eq!(
            outbox.try_send(&live(999, 10), DEVICE, pigeon_engine::now_ms()),
            Handoff::NotNow,
            "held"
        );
        let tail = outbox.take_tail();
        let reader = std::thread::spawn(move || {
            let mut device = std::net::TcpStream::from(device);
            let mut got = Vec::new();
            device.read_to_end(&mut got).expect("read");
            got
        });
        let socket = outbox.socket().expect("socket");
        let mut rest = &tail[..];
        while !rest.is_empty() {
            socket.writable().await.expect("writable");
            match socket.try_write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        outbox.release();
        outbox.detach();
        assert_eq!(
            outbox.try_send(&live(1000, 10), DEVICE, pigeon_engine::now_ms()),
            Handoff::NotNow,
            "closed"
        );
        drop(outbox);
        let texts = frames(&reader.join().expect("reader"));
        assert_eq!(texts.len(), started + 1);
        for (i, text) in texts.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
            assert_eq!(v["msg_id"], (i + 1).to_string());
        }
    }

    #[test]
    fn acked_and_recalled_pushes_leave_the_window_and_its_memory() {
        let outbox = Outbox::new(None);
        outbox.add_inflight([1, 2, 3].into_iter());
        assert!(outbox.is_inflight(2));
        outbox.remove_inflight(&[1, 2]);
        assert_eq!(outbox.inflight_len(), 1);
        outbox.remove_inflight(&[3]);
        assert_eq!(outbox.state.lock().inflight.capacity(), 0);
        // Without a socket (TLS) every push goes through the task.
        assert!(!outbox.is_direct());
    }
}
