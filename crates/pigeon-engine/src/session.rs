//! What the engine knows of a connected device, and what it can tell the connection.
//!
//! Kept small on purpose: an idle connection should cost little memory. The queue of live
//! pushes is an empty `VecDeque` (no allocation) until a push arrives.

use crate::live::LivePush;
use parking_lot::Mutex;
use pigeon_core::{Ordinal, Platform};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;

/// Most live pushes queued for one connection. A slow device whose queue is full does not
/// stall the fan-out: the push stays in the offline store and the connection resyncs.
pub const SESSION_QUEUE: usize = 128;

/// Something to tell a connected device besides a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A push it got was recalled (`revoke`).
    Revoke(u64),
    /// Its app-icon badge is now this number (`badge`).
    Badge(u32),
}

/// What became of a push handed to a connection's [`Outlet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Written to the device's socket whole.
    Written,
    /// Partly written: the connection writes the rest when woken, before anything else.
    Started,
    /// Not written (the connection is writing, its window is full, the push is not for it
    /// now, or the socket is full): queue it for the connection as usual.
    NotNow,
}

/// A connection's way to take a push from the fan-out's own thread: the frame goes to the
/// socket at once, with no wake-up of the connection's task and no hop between threads.
/// Given by the gateway, which alone knows the wire format; a connection without one (TLS)
/// gets every push through its queue.
pub trait Outlet: Send + Sync {
    /// Writes `push` to device `ordinal` if the connection is idle and its socket takes it
    /// without waiting.
    fn try_send(&self, push: &Arc<LivePush>, ordinal: Ordinal, now_ms: u64) -> Handoff;
}

/// The engine's handle on one connection.
#[derive(Clone)]
pub struct SessionHandle {
    pub conn_id: u64,
    pub platform: Platform,
    /// When the connection was made (µs since the epoch): in a cluster, a notice of the
    /// device connecting to another node closes only connections older than that one.
    pub since_us: u64,
    pub(crate) shared: Arc<Shared>,
}

/// What the engine and one connection share.
pub struct Shared {
    queue: Mutex<VecDeque<Arc<LivePush>>>,
    /// Set when a live push did not fit the queue: look in the offline store again.
    resync: AtomicBool,
    /// What to tell the device besides pushes (`revoke`, `badge`), oldest first.
    notices: Mutex<Vec<Notice>>,
    /// Close code requested by the engine (0 = none).
    close_code: AtomicU16,
    close_reason: Mutex<String>,
    wake: Notify,
    /// The connection's direct path to its socket, once it gave one.
    outlet: OnceLock<Arc<dyn Outlet>>,
}

impl SessionHandle {
    pub(crate) fn new(conn_id: u64, platform: Platform, since_us: u64) -> SessionHandle {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            resync: AtomicBool::new(false),
            notices: Mutex::new(Vec::new()),
            close_code: AtomicU16::new(0),
            close_reason: Mutex::new(String::new()),
            wake: Notify::new(),
            outlet: OnceLock::new(),
        });
        SessionHandle {
            conn_id,
            platform,
            since_us,
            shared,
        }
    }

    /// Hands a live push to the connection: written at once through its outlet when nothing
    /// is queued before it, else queued; if the queue is full, asks the connection to resync
    /// instead. Whether it was written (wholly or started).
    pub(crate) fn offer(&self, push: &Arc<LivePush>, ordinal: Ordinal, now_ms: u64) -> bool {
        {
            let mut q = self.shared.queue.lock();
            // The queue's lock is held across the write so that no push queued meanwhile
            // by another fan-out is overtaken.
            if let (true, Some(outlet)) = (q.is_empty(), self.shared.outlet.get()) {
                match outlet.try_send(push, ordinal, now_ms) {
                    Handoff::Written => return true,
                    Handoff::Started => {
                        drop(q);
                        self.shared.wake.notify_one();
                        return true;
                    }
                    Handoff::NotNow => {}
                }
            }
            if q.len() < SESSION_QUEUE {
                q.push_back(push.clone());
            } else {
                self.shared.resync.store(true, Ordering::Release);
            }
        }
        self.shared.wake.notify_one();
        false
    }

    /// Tells the device something besides a push.
    pub(crate) fn notify(&self, notice: Notice) {
        self.shared.notices.lock().push(notice);
        self.shared.wake.notify_one();
    }

    /// Asks the connection to close with `code`.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        *self.shared.close_reason.lock() = reason.to_string();
        self.shared.close_code.store(code, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// The connection side of a session: what the gateway drives.
pub struct Session {
    pub ordinal: Ordinal,
    pub platform: Platform,
    pub conn_id: u64,
    shared: Arc<Shared>,
}

impl Session {
    pub(crate) fn new(ordinal: Ordinal, handle: &SessionHandle) -> Session {
        Session {
            ordinal,
            platform: handle.platform,
            conn_id: handle.conn_id,
            shared: handle.shared.clone(),
        }
    }

    /// Gives the fan-out a direct path to this connection's socket (once; later calls are
    /// ignored).
    pub fn set_outlet(&self, outlet: Arc<dyn Outlet>) {
        let _ = self.shared.outlet.set(outlet);
    }

    /// Wakes the connection's task, as a push or notice would.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Resolves when the engine has something for this connection (pushes, resync, close).
    pub async fn signalled(&self) {
        self.shared.wake.notified().await
    }

    /// Takes the queued live pushes, oldest first.
    pub fn take_pushes(&self) -> VecDeque<Arc<LivePush>> {
        std::mem::take(&mut *self.shared.queue.lock())
    }

    /// Whether notices wait to be told to the device.
    pub fn has_notices(&self) -> bool {
        !self.shared.notices.lock().is_empty()
    }

    /// Takes the notices to tell the device, oldest first.
    pub fn take_notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.shared.notices.lock())
    }

    /// Takes the resync request, if any.
    pub fn take_resync(&self) -> bool {
        self.shared.resync.swap(false, Ordering::AcqRel)
    }

    /// The close the engine asked for, if any.
    pub fn close_request(&self) -> Option<(u16, String)> {
        match self.shared.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some((code, self.shared.close_reason.lock().clone())),
        }
    }
}
