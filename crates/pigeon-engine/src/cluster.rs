//! Cluster mode: what one node tells the others, what it learns from them, and the work only
//! one node may do at a time.
//!
//! Each node keeps its hot state (audience index, live pushes, its own connections) in
//! memory. The store is the truth: a node that missed a notice (the bus lost it, the node
//! restarted) catches up from the store's change feed, polled every
//! [`FEED_POLL`] and at once when a notice says something changed. Notices on the [`Bus`]
//! only make things fast: a push's body travels with its notice, so the other nodes offer it
//! to their connections without reading it back.
//!
//! Work that must happen once for the whole cluster (schedule firings, SMS fallback, expiry
//! reports, callback posts) is a [`Duty`] owned through a lease in the store, renewed every
//! second and taken over by another node within [`LEASE_TTL`] when its holder dies. Each
//! holder checks its lease's fencing token before it acts, so a node paused past its lease
//! does not act on it.

use crate::live::LivePush;
use crate::{now_ms, AppState, Engine, EngineError};
use parking_lot::Mutex;
use pigeon_core::{FastMap as HashMap, Ordinal, Push};
use pigeon_store::Change;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a lease lasts unless renewed: how long a dead node's work waits for another.
pub const LEASE_TTL: Duration = Duration::from_secs(5);
/// How often leases are renewed (and free duties taken).
const LEASE_RENEW: Duration = Duration::from_secs(1);
/// How often the change feed is read when no notice said to read it sooner.
pub const FEED_POLL: Duration = Duration::from_millis(500);
/// Changes read from the feed at once.
const FEED_PAGE: usize = 2000;
/// How long a node remembers the msg_ids it has seen, so the feed does not bring a push it
/// delivered and retired back to life.
const SEEN_FOR_MS: u64 = 120_000;
/// Presence changes waiting to be written; past this, changes are dropped (the presence
/// table then lags until the device reconnects; pushes are not affected).
const PRESENCE_QUEUE: usize = 65_536;

/// What a node tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeNotice {
    /// A push was accepted: offer it to your connections.
    Push {
        app_key: String,
        push: Box<Push>,
        /// The audience, a serialized roaring bitmap in base64.
        audience: String,
    },
    /// Something in the store's change feed (a device, a recall): read it now.
    Changed,
    /// A device connected here at `since_us` (µs since the epoch): close any connection of
    /// it made before that (4002). A notice that arrives late, after the device moved on
    /// again, closes nothing newer.
    Connected {
        app_key: String,
        ordinal: Ordinal,
        since_us: u64,
    },
    /// A device's connection here ended.
    Disconnected { app_key: String, ordinal: Ordinal },
    /// Devices were blocked or unblocked (the black list).
    Blocked {
        app_key: String,
        ordinals: Vec<Ordinal>,
        blocked: bool,
    },
    /// Devices acked pushes here: `(ordinal, msg_id)`. Others stop offering them, so a
    /// device that moves to another node does not get them again.
    Acked {
        app_key: String,
        acks: Vec<(Ordinal, u64)>,
    },
    /// Devices' badge numbers changed here: `(ordinal, badge)`; with `notify`, connected
    /// devices are told their new number (a change through the API).
    Badges {
        app_key: String,
        badges: Vec<(Ordinal, u32)>,
        notify: bool,
    },
    /// This node's count of API calls per app in the rate window starting at `window_ms`,
    /// so that an app's rate limit holds for the cluster as a whole.
    Calls {
        window_ms: u64,
        calls: Vec<(String, u64)>,
    },
}

/// A notice with the node that sent it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub from: String,
    #[serde(flatten)]
    pub notice: NodeNotice,
}

/// How nodes reach each other (NATS in production). Publishing never blocks: a notice that
/// cannot be sent now is dropped, and the store's change feed makes up for it.
pub trait Bus: Send + Sync + 'static {
    fn publish(&self, envelope: Envelope);
    /// Whether the bus is connected now.
    fn connected(&self) -> bool;
    /// Whether there is a bus at all (false for [`NoBus`]).
    fn present(&self) -> bool {
        true
    }
}

/// The bus of a node on PostgreSQL without NATS: nothing to tell; the change feed carries
/// everything (slower).
pub struct NoBus;

impl Bus for NoBus {
    fn publish(&self, _: Envelope) {}
    fn connected(&self) -> bool {
        true
    }
    fn present(&self) -> bool {
        false
    }
}

/// Work only one node of the cluster does at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Duty {
    Schedules,
    Sms,
    Callbacks,
    ExpiryReports,
    GeofenceStays,
}

impl Duty {
    pub const ALL: [Duty; 5] = [
        Duty::Schedules,
        Duty::Sms,
        Duty::Callbacks,
        Duty::ExpiryReports,
        Duty::GeofenceStays,
    ];

    pub fn lease_name(self) -> &'static str {
        match self {
            Duty::Schedules => "duty:schedules",
            Duty::Sms => "duty:sms",
            Duty::Callbacks => "duty:callbacks",
            Duty::ExpiryReports => "duty:expiry-reports",
            Duty::GeofenceStays => "duty:geofence-stays",
        }
    }

    fn index(self) -> usize {
        Duty::ALL.iter().position(|d| *d == self).unwrap_or(0)
    }
}

/// This node's part in a cluster.
pub struct Cluster {
    pub node_id: String,
    /// This process: the holder named in its leases, so that a second process given the same
    /// node id cannot renew the first one's leases.
    instance: String,
    bus: Arc<dyn Bus>,
    /// The fencing token of each duty this node holds (0: not held).
    duties: [AtomicU64; Duty::ALL.len()],
    /// Whether the last lease renewal reached the store.
    store_ok: AtomicBool,
    feed_wake: tokio::sync::Notify,
    /// One reader of the change feed at a time.
    feed_reader: tokio::sync::Mutex<()>,
    /// msg_ids this node accepted or adopted lately, with when.
    seen: Mutex<HashMap<u64, u64>>,
    presence: mpsc::Sender<(String, u32, bool)>,
    /// Acks and badge numbers to tell the others, sent together every [`BATCH_EVERY`].
    acks: Mutex<HashMap<String, Vec<(Ordinal, u64)>>>,
    badges: Mutex<HashMap<String, Vec<(Ordinal, u32)>>>,
    /// The call counts last told, per app: `(window_ms, calls)`.
    told_calls: Mutex<HashMap<String, (u64, u64)>>,
}

/// How often batched notices (acks, badges, call counts) are sent.
const BATCH_EVERY: Duration = Duration::from_millis(20);
/// Most acks or badges queued per app between two batches; past it they are dropped (the
/// store's delivery state still has them; a moved device may get such a push twice).
const MAX_BATCHED: usize = 100_000;

impl Cluster {
    /// Whether this node holds `duty` now.
    pub fn holds(&self, duty: Duty) -> bool {
        self.duties[duty.index()].load(Ordering::Acquire) != 0
    }

    /// Whether both the store and the bus answer: the node can serve everything.
    pub fn ready(&self) -> bool {
        self.store_ok.load(Ordering::Acquire) && self.bus.connected()
    }

    pub fn store_ok(&self) -> bool {
        self.store_ok.load(Ordering::Acquire)
    }

    pub fn has_bus(&self) -> bool {
        self.bus.present()
    }

    pub fn bus_ok(&self) -> bool {
        self.bus.connected()
    }

    fn publish(&self, notice: NodeNotice) {
        self.bus.publish(Envelope {
            from: self.node_id.clone(),
            notice,
        });
    }

    /// Remembers a msg_id; false if it was known already.
    fn first_sight(&self, msg_id: u64) -> bool {
        self.seen.lock().insert(msg_id, now_ms()).is_none()
    }
}

impl Engine {
    /// Makes this engine a node of a cluster: takes its node lease, forgets the presence a
    /// previous run of it left, and starts reading the change feed, renewing leases and
    /// writing presence. Notices from other nodes go to [`Engine::on_notice`].
    pub async fn join_cluster(
        self: &Arc<Self>,
        node_id: String,
        bus: Arc<dyn Bus>,
    ) -> Result<(), EngineError> {
        let instance = format!("{node_id}/{}", crate::random_alnum(12));
        let node_lease = format!("node:{node_id}");
        // A node restarted after kill -9 finds its old lease live for up to LEASE_TTL.
        let deadline = tokio::time::Instant::now() + LEASE_TTL + LEASE_RENEW;
        loop {
            let taken = self
                .store
                .take_lease(&node_lease, &instance, LEASE_TTL.as_millis() as u64)
                .await?;
            if taken.is_some() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Invalid(format!(
                    "node id {node_id:?} is in use by a running node (its lease stays live); \
                     give every node its own PIGEON_NODE_ID"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.store.clear_presence(&node_id).await?;
        let (presence_tx, presence_rx) = mpsc::channel(PRESENCE_QUEUE);
        let cluster = Arc::new(Cluster {
            node_id,
            instance,
            bus,
            duties: Default::default(),
            store_ok: AtomicBool::new(true),
            feed_wake: tokio::sync::Notify::new(),
            feed_reader: tokio::sync::Mutex::new(()),
            seen: Mutex::new(HashMap::default()),
            presence: presence_tx,
            acks: Mutex::new(HashMap::default()),
            badges: Mutex::new(HashMap::default()),
            told_calls: Mutex::new(HashMap::default()),
        });
        if self.cluster.set(cluster.clone()).is_err() {
            return Err(EngineError::Invalid(
                "this engine joined a cluster already".into(),
            ));
        }
        renew_leases(self, &cluster).await;
        tokio::spawn(leases_forever(Arc::downgrade(self)));
        tokio::spawn(feed_forever(Arc::downgrade(self)));
        tokio::spawn(presence_forever(Arc::downgrade(self), presence_rx));
        tokio::spawn(batches_forever(Arc::downgrade(self)));
        tracing::info!(node = %cluster.node_id, "joined the cluster");
        Ok(())
    }

    /// Gives up this node's leases (at shutdown), so its duties move at once instead of
    /// when the leases expire.
    pub async fn leave_cluster(&self) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        for duty in Duty::ALL {
            cluster.duties[duty.index()].store(0, Ordering::Release);
            let _ = self
                .store
                .release_lease(duty.lease_name(), &cluster.instance)
                .await;
        }
        let _ = self
            .store
            .release_lease(&format!("node:{}", cluster.node_id), &cluster.instance)
            .await;
    }

    /// This node's part in a cluster, if it is in one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Whether this node should do `duty` now: always when it is not in a cluster.
    pub fn on_duty(&self, duty: Duty) -> bool {
        self.cluster().is_none_or(|c| c.holds(duty))
    }

    /// Whether the lease of `duty` is still this node's, checked in the store: what a holder
    /// asks right before it acts (fencing). Always true outside a cluster.
    pub async fn still_on_duty(&self, duty: Duty) -> bool {
        let Some(cluster) = self.cluster() else {
            return true;
        };
        let token = cluster.duties[duty.index()].load(Ordering::Acquire);
        if token == 0 {
            return false;
        }
        match self.store.lease_holds(duty.lease_name(), token).await {
            Ok(true) => true,
            Ok(false) => {
                cluster.duties[duty.index()].store(0, Ordering::Release);
                false
            }
            Err(_) => false,
        }
    }

    /// A notice from another node.
    pub fn on_notice(self: &Arc<Self>, envelope: Envelope) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if envelope.from == cluster.node_id {
            return;
        }
        match envelope.notice {
            NodeNotice::Changed => cluster.feed_wake.notify_one(),
            NodeNotice::Connected {
                app_key,
                ordinal,
                since_us,
            } => {
                if let Some(app) = self.apps.read().get(&app_key) {
                    if app.drop_session_older_than(ordinal, since_us) {
                        app.connected_elsewhere(&envelope.from, ordinal, true);
                    }
                }
            }
            NodeNotice::Blocked {
                app_key,
                ordinals,
                blocked,
            } => {
                if let Some(app) = self.apps.read().get(&app_key) {
                    app.apply_blocked(&ordinals, blocked);
                }
            }
            NodeNotice::Disconnected { app_key, ordinal } => {
                if let Some(app) = self.apps.read().get(&app_key) {
                    app.connected_elsewhere(&envelope.from, ordinal, false);
                }
            }
            NodeNotice::Acked { app_key, acks } => {
                if let Some(app) = self.apps.read().get(&app_key).cloned() {
                    for (ordinal, msg_id) in acks {
                        self.mark_acked(&app, ordinal, msg_id);
                    }
                }
            }
            NodeNotice::Badges {
                app_key,
                badges,
                notify,
            } => {
                if let Some(app) = self.apps.read().get(&app_key).cloned() {
                    app.set_badges(&badges, notify);
                }
            }
            NodeNotice::Calls { window_ms, calls } => {
                for (app_key, count) in calls {
                    if let Some(app) = self.apps.read().get(&app_key) {
                        app.remote_calls
                            .lock()
                            .insert(envelope.from.clone(), (window_ms, count));
                    }
                }
            }
            NodeNotice::Push {
                app_key,
                push,
                audience,
            } => {
                let Some(app) = self.apps.read().get(&app_key).cloned() else {
                    return;
                };
                match decode_bitmap(&audience) {
                    Some(audience) => self.adopt(&app, *push, audience, RoaringBitmap::new()),
                    None => {
                        tracing::warn!(from = %envelope.from, "a push notice with a bad audience")
                    }
                }
            }
        }
    }

    /// Tells the other nodes about a push this node accepted.
    pub(crate) fn announce_push(&self, app: &AppState, live: &LivePush) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        cluster.first_sight(live.msg_id());
        let mut bytes = Vec::with_capacity(live.audience.serialized_size());
        if live.audience.serialize_into(&mut bytes).is_err() {
            return;
        }
        use base64::Engine as _;
        cluster.publish(NodeNotice::Push {
            app_key: app.app_key.clone(),
            push: Box::new(live.push.clone()),
            audience: base64::engine::general_purpose::STANDARD.encode(bytes),
        });
    }

    /// Queues acks made here for the other nodes.
    pub(crate) fn announce_acks(&self, app: &AppState, acks: Vec<(Ordinal, u64)>) {
        if let Some(cluster) = self.cluster() {
            let mut all = cluster.acks.lock();
            let queued = all.entry(app.app_key.clone()).or_default();
            if queued.len() < MAX_BATCHED {
                queued.extend(acks);
            }
        }
    }

    /// Tells the other nodes about badge numbers changed here: at once and to be shown
    /// when `notify` (an API call), else with the next batch.
    pub(crate) fn announce_badges(
        &self,
        app: &AppState,
        badges: Vec<(Ordinal, u32)>,
        notify: bool,
    ) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        if notify {
            cluster.publish(NodeNotice::Badges {
                app_key: app.app_key.clone(),
                badges,
                notify,
            });
            return;
        }
        let mut all = cluster.badges.lock();
        let queued = all.entry(app.app_key.clone()).or_default();
        if queued.len() < MAX_BATCHED {
            queued.extend(badges);
        }
    }

    /// Tells the other nodes about devices blocked or unblocked here.
    pub(crate) fn announce_blocked(&self, app: &AppState, ordinals: &[Ordinal], blocked: bool) {
        if let Some(cluster) = self.cluster() {
            cluster.publish(NodeNotice::Blocked {
                app_key: app.app_key.clone(),
                ordinals: ordinals.to_vec(),
                blocked,
            });
        }
    }

    /// Tells the other nodes the change feed has something for them.
    pub(crate) fn announce_change(&self) {
        if let Some(cluster) = self.cluster() {
            cluster.publish(NodeNotice::Changed);
        }
    }

    /// Tells the other nodes a device connected here, and records it for online status.
    pub(crate) fn announce_connected(&self, app: &AppState, ordinal: Ordinal, since_us: u64) {
        if let Some(cluster) = self.cluster() {
            cluster.publish(NodeNotice::Connected {
                app_key: app.app_key.clone(),
                ordinal,
                since_us,
            });
            let _ = cluster
                .presence
                .try_send((app.app_key.clone(), ordinal, true));
        }
    }

    /// Records that a device left this node.
    pub(crate) fn announce_disconnected(&self, app: &AppState, ordinal: Ordinal) {
        if let Some(cluster) = self.cluster() {
            cluster.publish(NodeNotice::Disconnected {
                app_key: app.app_key.clone(),
                ordinal,
            });
            let _ = cluster
                .presence
                .try_send((app.app_key.clone(), ordinal, false));
        }
    }

    /// Which of these devices (not connected here) are connected to another node.
    pub(crate) async fn connected_elsewhere(
        &self,
        app: &AppState,
        ordinals: Vec<Ordinal>,
    ) -> Result<RoaringBitmap, EngineError> {
        if self.cluster().is_none() || ordinals.is_empty() {
            return Ok(RoaringBitmap::new());
        }
        Ok(self
            .store
            .presence(&app.app_key, ordinals)
            .await?
            .into_iter()
            .map(|(ordinal, _)| ordinal)
            .collect())
    }

    /// Offers a push another node accepted to this node's connections. Events, vendor
    /// sends and SMS are the accepting node's (or the duty holder's): not done here.
    fn adopt(&self, app: &AppState, push: Push, audience: RoaringBitmap, delivered: RoaringBitmap) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let msg_id = push.msg_id;
        if push.expires_ms() <= now_ms() || app.live_push(msg_id).is_some() {
            return;
        }
        if !cluster.first_sight(msg_id) {
            return;
        }
        if let Some(old) = push.policy.overrides.and_then(|old| app.live_push(old)) {
            old.set_recalled(true);
            app.retire(&old);
        }
        let live = Arc::new(app.new_live(push, audience, RoaringBitmap::new(), delivered));
        app.live.write().insert(live.clone());
        app.fan_out(&live);
    }

    /// A push recalled through another node: stopped here, and removed from the devices
    /// connected here that got it.
    fn recalled_elsewhere(&self, app: &AppState, msg_id: u64, sent: &RoaringBitmap) {
        if let Some(live) = app.live_push(msg_id) {
            live.set_recalled(true);
            app.retire(&live);
        }
        app.notify_connected(sent, crate::Notice::Revoke(msg_id));
    }

    /// Reads a device this node has not heard of from the store (registered through another
    /// node a moment ago: the change feed may not show it yet, as it shows a change only once
    /// every transaction begun before it has ended). A no-op outside a cluster.
    pub async fn learn_device(&self, registration_id: &str) -> Result<(), EngineError> {
        if self.cluster().is_none() || self.app_of_device(registration_id).is_some() {
            return Ok(());
        }
        let Some(record) = self.store.find_device(registration_id).await? else {
            return Ok(());
        };
        let loaded = self.apps.read().get(&record.app_key[..]).cloned();
        match loaded {
            Some(app) => {
                self.device_apps
                    .write()
                    .insert(&app, [record.registration_id.as_str()]);
                app.devices.write().apply(record);
            }
            // Loading the app reads this device with the others.
            None => {
                self.app(&record.app_key).await?;
            }
        }
        Ok(())
    }

    /// Reads the change feed to its end and applies what it brings (a no-op outside a
    /// cluster). Errors are logged: the next round tries again from the same place.
    pub async fn catch_up(&self) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        let _one_reader = cluster.feed_reader.lock().await;
        loop {
            let cursor = self.feed_cursor.load(Ordering::Acquire);
            // Device changes made here after this point may be newer than what the page
            // holds for the same devices.
            let edits_before = self.device_edits.load(Ordering::Acquire);
            match self.store.changes_since(cursor, FEED_PAGE).await {
                Ok((changes, next)) => {
                    let full = changes.len() >= FEED_PAGE;
                    match self.apply_changes(changes, edits_before).await {
                        Ok(()) => {
                            self.feed_cursor.store(next, Ordering::Release);
                            for app in self.apps() {
                                app.devices.write().forget_edits(edits_before);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not apply the change feed");
                            return;
                        }
                    }
                    if !full {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the change feed");
                    return;
                }
            }
        }
    }

    /// Applies changes read from the feed.
    async fn apply_changes(
        &self,
        changes: Vec<Change>,
        edits_before: u64,
    ) -> Result<(), EngineError> {
        for change in changes {
            match change {
                Change::Device(record) => {
                    // An app not loaded here is loaded now, with this device.
                    let loaded = self.apps.read().get(&record.app_key[..]).cloned();
                    let Some(app) = loaded else {
                        self.app(&record.app_key).await?;
                        continue;
                    };
                    self.device_apps
                        .write()
                        .insert(&app, [record.registration_id.as_str()]);
                    app.devices.write().apply_read(*record, edits_before);
                }
                Change::Push {
                    app_key,
                    msg_id,
                    recalled,
                } => {
                    let Some(app) = self.apps.read().get(&app_key).cloned() else {
                        continue;
                    };
                    if recalled {
                        let already = app.live_push(msg_id).is_none_or(|l| l.is_recalled());
                        if let Some(stored) = self.store.load_push(&app_key, msg_id).await? {
                            if !already || !stored.sent.is_empty() {
                                self.recalled_elsewhere(&app, msg_id, &stored.sent);
                            }
                        }
                        continue;
                    }
                    let known = app.live_push(msg_id).is_some()
                        || self
                            .cluster()
                            .is_some_and(|c| c.seen.lock().contains_key(&msg_id));
                    if known {
                        continue;
                    }
                    if let Some(stored) = self.store.load_push(&app_key, msg_id).await? {
                        if self.store.overridden_by(msg_id).await?.is_none() {
                            self.adopt(&app, stored.push, stored.audience, stored.delivered);
                        }
                    }
                }
                Change::Geofence {
                    app_key,
                    geofence_id,
                } => self.reload_geofence(&app_key, &geofence_id).await?,
                Change::Saved { app_key, kind, id } => {
                    self.reload_saved(&app_key, kind, &id).await?
                }
            }
        }
        Ok(())
    }
}

/// Renews this node's lease and its duties' leases, and takes free duties while it holds
/// no more than its share of them.
async fn renew_leases(engine: &Engine, cluster: &Cluster) {
    let ttl = LEASE_TTL.as_millis() as u64;
    let node = &cluster.instance;
    let ok = match engine
        .store
        .take_lease(&format!("node:{}", cluster.node_id), node, ttl)
        .await
    {
        Ok(Some(_)) => true,
        Ok(None) => {
            tracing::error!(node = %node, "another process took this node's id");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot reach the store to renew leases");
            false
        }
    };
    let was = cluster.store_ok.swap(ok, Ordering::AcqRel);
    if was != ok {
        if ok {
            tracing::info!("the store answers again");
        } else {
            tracing::warn!("lost the store: answering 503 until it is back");
        }
    }
    if !ok {
        for token in &cluster.duties {
            token.store(0, Ordering::Release);
        }
        return;
    }
    let live_nodes = match engine.store.leases().await {
        Ok(leases) => {
            let nodes: Vec<&str> = leases
                .iter()
                .filter_map(|l| l.name.strip_prefix("node:"))
                .collect();
            for app in engine.apps() {
                app.forget_nodes_but(&nodes);
            }
            nodes.len().max(1)
        }
        Err(_) => 1,
    };
    let share = Duty::ALL.len().div_ceil(live_nodes);
    for duty in Duty::ALL {
        let slot = &cluster.duties[duty.index()];
        let held_now = Duty::ALL.iter().filter(|d| cluster.holds(**d)).count();
        if slot.load(Ordering::Acquire) == 0 && held_now >= share {
            continue;
        }
        // More than its share (nodes joined since): one duty is given up per round, for a
        // node with less to take.
        if slot.load(Ordering::Acquire) != 0 && held_now > share {
            slot.store(0, Ordering::Release);
            let _ = engine.store.release_lease(duty.lease_name(), node).await;
            tracing::info!(duty = duty.lease_name(), "gave a duty up for another node");
            continue;
        }
        match engine.store.take_lease(duty.lease_name(), node, ttl).await {
            Ok(Some(token)) => {
                if slot.swap(token, Ordering::AcqRel) == 0 {
                    tracing::info!(duty = duty.lease_name(), token, "took a duty");
                }
            }
            Ok(None) | Err(_) => {
                if slot.swap(0, Ordering::AcqRel) != 0 {
                    tracing::info!(duty = duty.lease_name(), "lost a duty");
                }
            }
        }
    }
}

async fn leases_forever(engine: Weak<Engine>) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let Some(cluster) = engine.cluster().cloned() else {
            return;
        };
        renew_leases(&engine, &cluster).await;
        // The black list is not in the change feed: read again every round, for a node
        // that missed a notice.
        for app in engine.apps() {
            if let Ok(blocked) = engine.store.load_blocked(&app.app_key).await {
                *app.blocked.write() = blocked.into_iter().collect();
            }
        }
        let cutoff = now_ms().saturating_sub(SEEN_FOR_MS);
        cluster.seen.lock().retain(|_, at| *at >= cutoff);
    }
}

async fn feed_forever(engine: Weak<Engine>) {
    loop {
        let Some(strong) = engine.upgrade() else {
            return;
        };
        let Some(cluster) = strong.cluster().cloned() else {
            return;
        };
        strong.catch_up().await;
        drop(strong);
        let _ = tokio::time::timeout(FEED_POLL, cluster.feed_wake.notified()).await;
    }
}

async fn presence_forever(engine: Weak<Engine>, mut rx: mpsc::Receiver<(String, u32, bool)>) {
    let mut batch = Vec::new();
    // Changes the store refused (it is away): written first once it is back, in order.
    let mut unwritten: Vec<(String, u32, bool)> = Vec::new();
    loop {
        // With changes waiting for the store, it is tried again every second even if no
        // device comes or goes.
        let received = if unwritten.is_empty() {
            rx.recv_many(&mut batch, 4096).await
        } else {
            tokio::time::timeout(Duration::from_secs(1), rx.recv_many(&mut batch, 4096))
                .await
                .unwrap_or(usize::MAX)
        };
        if received == 0 {
            return;
        }
        let Some(strong) = engine.upgrade() else {
            return;
        };
        let Some(cluster) = strong.cluster().cloned() else {
            return;
        };
        unwritten.append(&mut batch);
        match strong
            .store
            .set_presence(&cluster.node_id, unwritten.clone())
            .await
        {
            Ok(()) => unwritten.clear(),
            Err(e) => {
                tracing::warn!(error = %e, "could not record which devices are connected here");
                // Bounded like the queue: the oldest changes go first if it stays away.
                let excess = unwritten.len().saturating_sub(PRESENCE_QUEUE);
                unwritten.drain(..excess);
            }
        }
        drop(strong);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends the batched notices: acks, badge numbers, and the call counts that changed.
async fn batches_forever(engine: Weak<Engine>) {
    let mut tick = tokio::time::interval(BATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let Some(cluster) = engine.cluster().cloned() else {
            return;
        };
        let acks = std::mem::take(&mut *cluster.acks.lock());
        for (app_key, acks) in acks {
            cluster.publish(NodeNotice::Acked { app_key, acks });
        }
        let badges = std::mem::take(&mut *cluster.badges.lock());
        for (app_key, badges) in badges {
            cluster.publish(NodeNotice::Badges {
                app_key,
                badges,
                notify: false,
            });
        }
        let mut changed: HashMap<u64, Vec<(String, u64)>> = HashMap::default();
        {
            let mut told = cluster.told_calls.lock();
            for app in engine.apps() {
                let now = app.calls_in_window();
                if now.1 > 0 && told.get(&app.app_key) != Some(&now) {
                    told.insert(app.app_key.clone(), now);
                    changed
                        .entry(now.0)
                        .or_default()
                        .push((app.app_key.clone(), now.1));
                }
            }
        }
        for (window_ms, calls) in changed {
            cluster.publish(NodeNotice::Calls { window_ms, calls });
        }
    }
}

fn decode_bitmap(text: &str) -> Option<RoaringBitmap> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    RoaringBitmap::deserialize_from(&bytes[..]).ok()
}
