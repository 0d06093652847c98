//! Pigeon's cluster bus on NATS: the [`Bus`] through which one node tells the others about
//! pushes, changes in the store and devices that connected.
//!
//! Core NATS (at most once) is enough: every notice only makes something faster that the
//! store's change feed would bring anyway, so a notice lost while NATS is away costs latency,
//! never a push. Publishing goes through a bounded queue and never blocks a caller; when the
//! queue is full the notice is dropped, for the same reason.
//!
//! This crate knows NATS and the notices' JSON, nothing of HTTP, devices or dialects.

use futures_util::StreamExt;
use pigeon_engine::cluster::{Bus, Envelope};
use pigeon_engine::Engine;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;

/// The one subject every node publishes to and listens on.
pub const SUBJECT: &str = "pigeon.cluster";
/// Notices waiting to be published.
const QUEUE: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("NATS URL {0:?} is not a nats://host:port address")]
    BadUrl(String),
    #[error("connecting to NATS at {url}: {why}")]
    Connect { url: String, why: String },
}

/// A node's connection to the NATS server.
pub struct NatsBus {
    queue: mpsc::Sender<Envelope>,
    connected: Arc<AtomicBool>,
}

impl Bus for NatsBus {
    fn publish(&self, envelope: Envelope) {
        let _ = self.queue.try_send(envelope);
    }

    fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

impl NatsBus {
    /// Connects to NATS at `url` (reconnecting by itself whenever the connection drops) and
    /// hands every notice from other nodes to `engine`.
    pub async fn connect(
        url: &str,
        node_id: &str,
        engine: Weak<Engine>,
    ) -> Result<Arc<NatsBus>, BusError> {
        if !url.starts_with("nats://") {
            return Err(BusError::BadUrl(url.to_string()));
        }
        let connected = Arc::new(AtomicBool::new(false));
        let seen = connected.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("pigeon {node_id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("NATS connected");
                            seen.store(true, Ordering::Release);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("NATS connection lost; reconnecting");
                            seen.store(false, Ordering::Release);
                        }
                        other => tracing::debug!(event = %other, "NATS"),
                    }
                }
            })
            .connect(url)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_string(),
                why: e.to_string(),
            })?;
        if client.connection_state() == async_nats::connection::State::Connected {
            connected.store(true, Ordering::Release);
        }
        let mut inbox = client
            .subscribe(SUBJECT)
            .await
            .map_err(|e| BusError::Connect {
                url: url.to_string(),
                why: format!("subscribing to {SUBJECT}: {e}"),
            })?;
        tokio::spawn(async move {
            while let Some(message) = inbox.next().await {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                match serde_json::from_slice::<Envelope>(&message.payload) {
                    Ok(envelope) => engine.on_notice(envelope),
                    Err(e) => tracing::warn!(error = %e, "an unreadable cluster notice"),
                }
            }
        });
        let (queue, mut outbox) = mpsc::channel::<Envelope>(QUEUE);
        tokio::spawn(async move {
            while let Some(envelope) = outbox.recv().await {
                let Ok(body) = serde_json::to_vec(&envelope) else {
                    continue;
                };
                if let Err(e) = client.publish(SUBJECT, body.into()).await {
                    tracing::debug!(error = %e, "a cluster notice was not sent");
                }
            }
        });
        Ok(Arc::new(NatsBus { queue, connected }))
    }
}
