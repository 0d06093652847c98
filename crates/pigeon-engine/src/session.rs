//! What the engine knows of a connected device, and what it can tell the connection.

use crate::live::LivePush;
use parking_lot::Mutex;
use pigeon_core::{Ordinal, Platform};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// Messages a connection gets from the engine.
pub enum SessionMsg {
    Push(Arc<LivePush>),
}

/// Depth of a connection's queue of live pushes. A slow device whose queue is full does not
/// stall the fan-out: the push stays in the offline store and the connection picks it up again.
pub const SESSION_QUEUE: usize = 128;

/// The engine's handle on one connection.
#[derive(Clone)]
pub struct SessionHandle {
    pub conn_id: u64,
    pub platform: Platform,
    tx: mpsc::Sender<SessionMsg>,
    pub(crate) signals: Arc<Signals>,
}

/// Out-of-band signals to a connection, never blocked by a full queue.
pub struct Signals {
    /// Set when a live push could not be queued: look in the offline store again.
    resync: AtomicBool,
    /// Close code requested by the engine (0 = none).
    close_code: AtomicU16,
    close_reason: Mutex<String>,
    wake: Notify,
}

impl SessionHandle {
    pub(crate) fn new(
        conn_id: u64,
        platform: Platform,
    ) -> (SessionHandle, mpsc::Receiver<SessionMsg>) {
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let signals = Arc::new(Signals {
            resync: AtomicBool::new(false),
            close_code: AtomicU16::new(0),
            close_reason: Mutex::new(String::new()),
            wake: Notify::new(),
        });
        (
            SessionHandle {
                conn_id,
                platform,
                tx,
                signals,
            },
            rx,
        )
    }

    /// Queues a live push; if the queue is full, asks the connection to resync instead.
    pub(crate) fn offer(&self, push: &Arc<LivePush>) {
        if self.tx.try_send(SessionMsg::Push(push.clone())).is_err() {
            self.signals.resync.store(true, Ordering::Release);
            self.signals.wake.notify_one();
        }
    }

    /// Asks the connection to close with `code`.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        *self.signals.close_reason.lock() = reason.to_string();
        self.signals.close_code.store(code, Ordering::Release);
        self.signals.wake.notify_one();
    }
}

/// The connection side of a session: what the gateway drives.
pub struct Session {
    pub ordinal: Ordinal,
    pub platform: Platform,
    pub conn_id: u64,
    pub registration_id: String,
    signals: Arc<Signals>,
}

impl Session {
    pub(crate) fn new(
        ordinal: Ordinal,
        registration_id: String,
        handle: &SessionHandle,
    ) -> Session {
        Session {
            ordinal,
            platform: handle.platform,
            conn_id: handle.conn_id,
            registration_id,
            signals: handle.signals.clone(),
        }
    }

    /// Resolves when the engine signals something (resync or close).
    pub async fn signalled(&self) {
        self.signals.wake.notified().await
    }

    /// Takes the resync request, if any.
    pub fn take_resync(&self) -> bool {
        self.signals.resync.swap(false, Ordering::AcqRel)
    }

    /// The close the engine asked for, if any.
    pub fn close_request(&self) -> Option<(u16, String)> {
        match self.signals.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some((code, self.signals.close_reason.lock().clone())),
        }
    }
}
