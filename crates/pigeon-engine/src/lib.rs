//! Pigeon's push engine: the path of a push below the front doors.
//!
//! accept (resolve the audience, persist, answer with a msg_id) → fan out to connected devices
//! → keep it for offline devices until it expires → record acks. It also owns apps, devices
//! and presence, and Pigeon's own features every door shares: schedules, files of targets,
//! callback endpoints, vendor credentials. It knows no wire format: the front doors translate
//! into `pigeon_core` types, and the gateway encodes frames.

mod app;
pub mod cluster;
mod device_apps;
pub mod devices;
pub mod endpoints;
pub mod events;
pub mod files;
pub mod geofences;
mod ids;
pub mod limits;
mod live;
pub mod offline;
pub mod report;
pub mod saved;
pub mod schedules;
mod session;
pub mod vendors;

pub use app::AppState;
pub use ids::{
    hash_secret, is_app_credential, new_registration_id, now_ms, random_alnum, uuid_text, uuid_v4,
};
pub use live::LivePush;
pub use pigeon_store::Location;
pub use session::{Handoff, Notice, Outlet, Session};

use parking_lot::RwLock;
use pigeon_core::FastMap as HashMap;
use pigeon_core::{BadgeOp, Ordinal, Platform, Push};
use pigeon_store::{AppRecord, DeviceEvent, DeviceRecord, GroupRecord, Storage, StoreError};
use pigeon_telemetry::{Channel, Stage as TelemetryStage, Undelivered};
use roaring::RoaringBitmap;
use serde_json::{Map, Value};
use session::SessionHandle;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a cid from the pool stays usable, and a push made with it is remembered.
pub const CID_LIFETIME_MS: u64 = 86_400_000;
/// How long an expired push is kept in memory for late acks (and its undelivered targets
/// wait before they are reported).
pub const DEFAULT_EXPIRED_GRACE_MS: u64 = 60_000;
/// How often who-acked-what is checkpointed to storage. Acks younger than this are lost in a
/// crash, which means a redelivery: the protocol is at least once.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Most paced pushes (`big_push_duration`) an app may have releasing targets at once.
pub const MAX_PACED_PER_APP: usize = 20;
/// How often paced pushes are offered to the devices their pace has reached since.
const PACE_TICK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown app_key")]
    UnknownApp,
    #[error("bad credentials")]
    BadCredentials,
    #[error("no device matched the audience")]
    NoTarget,
    #[error("cid is not one of this app's pool, or is older than a day")]
    UnknownCid,
    #[error("no such device in this app")]
    UnknownDevice,
    #[error("alias {0:?} is already bound to {max} devices", max = devices::MAX_DEVICES_PER_ALIAS)]
    AliasFull(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no push {0} of this app")]
    UnknownPush(u64),
    #[error("push {0} was never sent to this device")]
    NotReceived(u64),
    #[error("push {0} was already recalled")]
    AlreadyRecalled(u64),
    #[error("at most {MAX_PACED_PER_APP} paced pushes (big_push_duration) may run at once")]
    TooManyPaced,
    #[error("no such geofence in this app")]
    UnknownGeofence,
    #[error("an app may have at most {0} geofences")]
    TooManyGeofences(u64),
    #[error("segment {0:?} does not exist in this app")]
    UnknownSegment(String),
    #[error("A/B test {0:?} does not exist in this app")]
    UnknownAbTest(String),
    #[error("an app may have at most {1} {0}")]
    TooMany(&'static str, usize),
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// What a device registration asks for. `None` fields are "not given": a new device gets the
/// default, an existing one keeps what it had.
#[derive(Debug, Default)]
pub struct Registration {
    pub app_key: String,
    pub platform: Option<Platform>,
    pub install_id: Option<String>,
    /// Both given: update that device.
    pub existing: Option<(String, String)>,
    pub push_tokens: Option<Map<String, Value>>,
    pub apns_production: Option<bool>,
    pub alias: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub mobile: Option<Option<String>>,
    /// Where the device is, for audiences by region.
    pub region: Option<Option<String>>,
    pub info: Map<String, Value>,
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub registration_id: String,
    pub device_secret: String,
}

/// Whether each kind of client-given target may be on a private network: callback URLs
/// (`[callbacks] allow_private_networks`), vendors' `base_url` / `auth_url` / `token_uri`
/// (`vendors_allow_private_networks`) and Web Push endpoints
/// (`webpush_allow_private_networks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrivateNetworks {
    pub callbacks: bool,
    pub vendors: bool,
    pub webpush: bool,
}

impl PrivateNetworks {
    pub fn callbacks_policy(&self) -> pigeon_core::net::AddressPolicy {
        pigeon_core::net::AddressPolicy::callbacks(self.callbacks)
    }

    pub fn vendors_policy(&self) -> pigeon_core::net::AddressPolicy {
        pigeon_core::net::AddressPolicy::vendors(self.vendors)
    }

    pub fn webpush_policy(&self) -> pigeon_core::net::AddressPolicy {
        pigeon_core::net::AddressPolicy::webpush(self.webpush)
    }
}

/// The engine. One per process; shared by every front door.
pub struct Engine {
    store: Arc<dyn Storage>,
    apps: RwLock<HashMap<String, Arc<AppState>>>,
    /// The app of each device: a device says only its registration_id.
    device_apps: RwLock<device_apps::DeviceApps>,
    /// msg_ids reserved in the store and not given yet.
    msg_ids: ids::MsgIds,
    next_conn_id: AtomicU64,
    /// Held while an app created by another process is loaded on first use.
    loading: tokio::sync::Mutex<()>,
    /// Calls per window for apps without a limit of their own.
    default_rate_limit: AtomicU64,
    rate_window_ms: AtomicU64,
    expired_grace_ms: AtomicU64,
    recall_window_ms: AtomicU64,
    /// How long one minute of `big_push_duration` lasts (shortened in tests).
    pacing_minute_ms: AtomicU64,
    /// Which client-given targets may be on private networks (the operator's settings).
    private_networks: RwLock<PrivateNetworks>,
    /// Where pushes go for offline devices with vendor tokens, once vendor channels run.
    router: std::sync::OnceLock<Arc<dyn offline::OfflineRouter>>,
    /// Woken when the delivery checkpoint wrote callback events, so the dispatcher takes
    /// them at once instead of at its next look.
    events_written: tokio::sync::Notify,
    /// Scheduled pushes of every door.
    scheduler: std::sync::OnceLock<Arc<schedules::Scheduler>>,
    /// This node's part in a cluster, once it joined one.
    cluster: std::sync::OnceLock<Arc<cluster::Cluster>>,
    /// Where this node is in the store's change feed (taken before anything was loaded).
    feed_cursor: AtomicU64,
    /// Counts device changes made through this node, so that a change feed page read before
    /// one of them never puts back the state it replaced (`Devices::apply_read`).
    pub(crate) device_edits: AtomicU64,
    /// How long one second of a geofence's `stay_s` and `cooldown_s` lasts.
    geofence_second_ms: AtomicU64,
    max_geofences: AtomicU64,
}

impl Engine {
    /// Loads every app, its devices and its live pushes, and starts the background tasks.
    pub async fn start(store: Arc<dyn Storage>) -> Result<Arc<Engine>, EngineError> {
        // Before anything is loaded: a change made while this node loads is then read
        // again from the feed rather than missed.
        let feed_cursor = store.feed_cursor().await?;
        let msg_ids = ids::MsgIds::reserve(&*store).await?;
        let engine = Arc::new(Engine {
            store: store.clone(),
            apps: RwLock::new(HashMap::default()),
            device_apps: RwLock::default(),
            msg_ids,
            next_conn_id: AtomicU64::new(1),
            loading: tokio::sync::Mutex::new(()),
            events_written: tokio::sync::Notify::new(),
            default_rate_limit: AtomicU64::new(limits::DEFAULT_RATE_LIMIT_PER_MINUTE),
            rate_window_ms: AtomicU64::new(limits::DEFAULT_WINDOW_MS),
            expired_grace_ms: AtomicU64::new(DEFAULT_EXPIRED_GRACE_MS),
            recall_window_ms: AtomicU64::new(24 * 3600 * 1000),
            pacing_minute_ms: AtomicU64::new(60_000),
            private_networks: RwLock::new(PrivateNetworks::default()),
            router: std::sync::OnceLock::new(),
            scheduler: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            feed_cursor: AtomicU64::new(feed_cursor),
            device_edits: AtomicU64::new(0),
            geofence_second_ms: AtomicU64::new(1000),
            max_geofences: AtomicU64::new(geofences::DEFAULT_MAX_PER_APP),
        });
        for app in store.list_apps().await? {
            engine.load_app(app).await?;
        }
        let scheduler = schedules::Scheduler::start(&engine).await?;
        let _ = engine.scheduler.set(scheduler);
        tokio::spawn(checkpoint_delivered(Arc::downgrade(&engine)));
        tokio::spawn(evict_expired(Arc::downgrade(&engine)));
        tokio::spawn(pace_forever(Arc::downgrade(&engine)));
        tokio::spawn(limits::refresh_app_config_forever(Arc::downgrade(&engine)));
        tokio::spawn(geofences::stays_forever(Arc::downgrade(&engine)));
        Ok(engine)
    }

    async fn load_app(&self, record: AppRecord) -> Result<Arc<AppState>, EngineError> {
        let app = Arc::new(AppState::new(record));
        let mut chunks = self.store.load_devices(&app.app_key);
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk?;
            self.device_apps
                .write()
                .insert(&app, chunk.iter().map(|r| r.registration_id.as_str()));
            let mut d = app.devices.write();
            for rec in chunk {
                d.apply(rec);
            }
        }
        app.fences
            .load(self.store.list_geofences(&app.app_key).await?);
        app.badges.lock().counts = self
            .store
            .load_badges(&app.app_key)
            .await?
            .into_iter()
            .collect();
        *app.blocked.write() = self
            .store
            .load_blocked(&app.app_key)
            .await?
            .into_iter()
            .collect();
        self.load_saved(&app).await?;
        let pushes: Vec<Arc<LivePush>> = self
            .store
            .load_live_pushes(&app.app_key, now_ms())
            .await?
            .into_iter()
            .map(|p| {
                Arc::new(
                    app.new_live(p.push, p.audience, p.sent, p.delivered)
                        .with_vendor_sets(p.vendors),
                )
            })
            .collect();
        let mut complete = Vec::new();
        {
            let mut live = app.live.write();
            for push in pushes {
                if push.is_complete() {
                    complete.push(push);
                } else {
                    live.insert(push);
                }
            }
        }
        for push in complete {
            app.retire(&push);
        }
        if let Some((_, settings)) = self
            .store
            .app_settings()
            .await?
            .into_iter()
            .find(|(k, _)| *k == app.app_key)
        {
            *app.settings.write() = settings;
        }
        *app.callbacks.write() = self
            .store
            .list_callbacks()
            .await?
            .into_iter()
            .filter(|e| e.app_key == app.app_key)
            .collect();
        self.apps.write().insert(app.app_key.clone(), app.clone());
        Ok(app)
    }

    /// Scheduled pushes: doors register how to read theirs, and save and list them here.
    pub fn schedules(&self) -> &Arc<schedules::Scheduler> {
        self.scheduler
            .get()
            .expect("the scheduler is set when the engine starts")
    }

    /// A msg_id for a push accepted later (a scheduled one a door has already named), never
    /// given to another, in this process or any other on the same store.
    pub async fn reserve_msg_id(&self) -> Result<u64, EngineError> {
        self.msg_ids.next(&*self.store).await
    }

    /// An ordinal for a new device of `app`, never given to another device of it.
    async fn new_ordinal(&self, app: &AppState) -> Result<Ordinal, EngineError> {
        loop {
            if let Some(ordinal) = app.take_ordinal() {
                return Ok(ordinal);
            }
            // One reservation at a time: a wave of registrations that found the block empty
            // would each reserve one and all but one be thrown away, and the device records,
            // held by ordinal, would grow with the gaps (a cluster node under a registration
            // flood reached ~0.9 GB and held its devices' lock for seconds while they grew).
            let _one = app.reserving_ordinals.lock().await;
            if let Some(ordinal) = app.take_ordinal() {
                return Ok(ordinal);
            }
            let first = self
                .store
                .reserve_ordinals(&app.app_key, ids::ORDINAL_BLOCK)
                .await?;
            app.add_ordinals(first, ids::ORDINAL_BLOCK);
        }
    }

    /// The app with this key, loading it from storage if another process created it.
    pub async fn app(&self, app_key: &str) -> Result<Option<Arc<AppState>>, EngineError> {
        if let Some(app) = self.apps.read().get(app_key) {
            return Ok(Some(app.clone()));
        }
        if !is_app_credential(app_key) {
            return Ok(None);
        }
        // One loader at a time: two loads of one app would each index its devices, and a
        // device indexed under the copy that is then dropped could never be reached.
        let _one_loader = self.loading.lock().await;
        if let Some(app) = self.apps.read().get(app_key) {
            return Ok(Some(app.clone()));
        }
        match self.store.find_app(app_key).await? {
            Some(record) => Ok(Some(self.load_app(record).await?)),
            None => Ok(None),
        }
    }

    /// The app if `master_secret` is its secret.
    pub async fn authenticate(
        &self,
        app_key: &str,
        master_secret: &str,
    ) -> Result<Arc<AppState>, EngineError> {
        match self.app(app_key).await? {
            Some(app)
                if ids::same_secret(app.master_secret.as_bytes(), master_secret.as_bytes()) =>
            {
                Ok(app)
            }
            _ => Err(EngineError::BadCredentials),
        }
    }

    /// Registers a device or updates one (see the device protocol, §1).
    pub async fn register(&self, reg: Registration) -> Result<Registered, EngineError> {
        let app = self
            .app(&reg.app_key)
            .await?
            .ok_or(EngineError::UnknownApp)?;
        let now = now_ms();
        // Taken before the lock (reserving more may wait on the store) and given back if
        // the device turns out to be known.
        let fresh = match &reg.existing {
            None => Some(self.new_ordinal(&app).await?),
            Some(_) => None,
        };
        let mut fresh_used = false;
        let (mut record, secret) = {
            let mut d = app.devices.write();
            if let Some((rid, secret)) = &reg.existing {
                let ordinal = d.ordinal_of(rid).ok_or(EngineError::BadCredentials)?;
                let record = d.record(ordinal).ok_or(EngineError::BadCredentials)?;
                if !ids::same_secret(&record.secret_hash, &hash_secret(secret)) {
                    return Err(EngineError::BadCredentials);
                }
                (record.clone(), secret.clone())
            } else {
                let platform = reg
                    .platform
                    .ok_or_else(|| EngineError::Invalid("platform is required".into()))?;
                let known = reg
                    .install_id
                    .as_ref()
                    .and_then(|i| d.by_install.get(i).cloned());
                let (ordinal, registration_id) = match known {
                    Some(k) => k,
                    None => {
                        let ordinal = fresh.ok_or_else(|| {
                            EngineError::Invalid("no ordinal reserved for a new device".into())
                        })?;
                        fresh_used = true;
                        let rid = new_registration_id();
                        if let Some(install) = &reg.install_id {
                            d.by_install.insert(install.clone(), (ordinal, rid.clone()));
                        }
                        (ordinal, rid)
                    }
                };
                let secret = random_alnum(32);
                let record = match d.record(ordinal) {
                    Some(r) => DeviceRecord {
                        secret_hash: hash_secret(&secret),
                        platform,
                        ..r.clone()
                    },
                    None => DeviceRecord {
                        app_key: app.shared_key.clone(),
                        ordinal,
                        registration_id,
                        install_id: reg.install_id.clone(),
                        secret_hash: hash_secret(&secret),
                        platform,
                        alias: None,
                        tags: Vec::new(),
                        mobile: None,
                        region: None,
                        push_tokens: Map::new(),
                        apns_production: true,
                        info: Map::new(),
                        created_ms: now,
                        updated_ms: now,
                    },
                };
                (record, secret)
            }
        };
        if let (Some(ordinal), false) = (fresh, fresh_used) {
            app.give_back_ordinal(ordinal);
        }
        if let Some(p) = reg.platform {
            record.platform = p;
        }
        if let Some(tokens) = reg.push_tokens {
            record.push_tokens = tokens;
        }
        if let Some(p) = reg.apns_production {
            record.apns_production = p;
        }
        if let Some(alias) = reg.alias {
            devices::bind_alias(&app, &mut record, alias)?;
        }
        if let Some(tags) = reg.tags {
            record.tags = dedup(tags);
        }
        if let Some(mobile) = reg.mobile {
            record.mobile = mobile;
        }
        if let Some(region) = reg.region {
            record.region = region;
        }
        record.info.extend(reg.info);
        record.updated_ms = now;
        self.store.put_device(record.clone()).await?;
        let registration_id = record.registration_id.clone();
        self.device_apps
            .write()
            .insert(&app, [registration_id.as_str()]);
        app.devices
            .write()
            .apply_edit(record, self.next_device_edit());
        self.announce_change();
        Ok(Registered {
            registration_id,
            device_secret: secret,
        })
    }

    /// Changes a device's alias and tags (None = unchanged), durably.
    pub async fn update_device(
        &self,
        app: &AppState,
        ordinal: Ordinal,
        alias: Option<Option<String>>,
        tags: Option<Vec<String>>,
    ) -> Result<(), EngineError> {
        if app.device(ordinal).is_none() {
            return Err(EngineError::UnknownDevice);
        }
        let tags = tags.map(dedup);
        self.edit_devices(app, &[ordinal], |record, app| {
            if let Some(alias) = &alias {
                devices::bind_alias(app, record, alias.clone())?;
            }
            if let Some(tags) = &tags {
                if tags.len() > devices::MAX_TAGS_PER_DEVICE {
                    return Err(EngineError::Invalid(format!(
                        "a device can carry at most {} tags",
                        devices::MAX_TAGS_PER_DEVICE
                    )));
                }
                record.tags = tags.clone();
            }
            Ok(true)
        })
        .await?;
        Ok(())
    }

    /// Resolves a push's audience to devices that have something to show, leaving out those
    /// the app blocked. Empty means nothing matched.
    pub fn resolve(&self, app: &AppState, push: &Push) -> Result<RoaringBitmap, EngineError> {
        Ok(self.resolve_push(app, push)?.targets)
    }

    /// Accepts a push: gives it a msg_id, resolves its audience, makes it durable, then
    /// offers it to connected targets. With `validate_only` nothing is stored or sent.
    pub async fn accept(
        &self,
        app: &AppState,
        push: Push,
        validate_only: bool,
    ) -> Result<u64, EngineError> {
        let Some(key) = push.idempotency.clone() else {
            return self.accept_once(app, push, validate_only).await;
        };
        let cid = key.key;
        // One request per key at a time: a second one waits and gets the first one's msg_id.
        let lock = app.cid_locks.lock().entry(cid.clone()).or_default().clone();
        let outcome = {
            let _one_at_a_time = lock.lock().await;
            let since = now_ms().saturating_sub(CID_LIFETIME_MS);
            if validate_only {
                match self.store.find_cid(&app.app_key, &cid, since).await? {
                    None if key.issued_only => Err(EngineError::UnknownCid),
                    Some(Some(msg_id)) => Ok(msg_id),
                    None | Some(None) => self.accept_once(app, push, true).await,
                }
            } else {
                // Optimistic: the key is taken in the push's own write, which fails if the
                // key is used (or, from the pool, unknown); only then is it looked up. A new
                // key costs no read.
                match self.accept_once(app, push, false).await {
                    Err(EngineError::Storage(StoreError::Conflict(why))) => {
                        match self.store.find_cid(&app.app_key, &cid, since).await? {
                            Some(Some(msg_id)) => Ok(msg_id),
                            None if key.issued_only => Err(EngineError::UnknownCid),
                            _ => Err(EngineError::Storage(StoreError::Conflict(why))),
                        }
                    }
                    other => other,
                }
            }
        };
        let mut locks = app.cid_locks.lock();
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&cid);
        }
        outcome
    }

    /// Hands out `count` cids from the app's pool, each valid for a day.
    pub async fn issue_cids(
        &self,
        app: &AppState,
        count: usize,
    ) -> Result<Vec<String>, EngineError> {
        let cids: Vec<String> = (0..count)
            .map(|_| format!("{}-{}", app.app_key, ids::uuid_v4()))
            .collect();
        self.store
            .issue_cids(&app.app_key, cids.clone(), now_ms())
            .await?;
        Ok(cids)
    }

    async fn accept_once(
        &self,
        app: &AppState,
        mut push: Push,
        validate_only: bool,
    ) -> Result<u64, EngineError> {
        let mut resolved = self.resolve_push(app, &push);
        // A device registered or tagged, or a segment or test made, through another node a
        // moment ago may not have reached this node yet: read the change feed before saying
        // no target.
        let missed = match &resolved {
            Ok(r) => r.targets.is_empty(),
            Err(e) => matches!(
                e,
                EngineError::UnknownSegment(_) | EngineError::UnknownAbTest(_)
            ),
        };
        if missed && self.cluster().is_some() {
            self.catch_up().await;
            resolved = self.resolve_push(app, &push);
        }
        let resolved = resolved?;
        let audience = resolved.targets;
        if audience.is_empty() {
            return Err(EngineError::NoTarget);
        }
        let members = match resolved.variants {
            Some((members, control)) => {
                push.split = Some(Box::new(self.split_of(app, &push, control)?));
                Some(members)
            }
            None => None,
        };
        let pace = &push.policy.pace;
        let duration_ms = match (pace.minutes.filter(|m| *m > 0), pace.per_second) {
            (Some(minutes), _) => {
                Some(minutes.saturating_mul(self.pacing_minute_ms.load(Ordering::Relaxed)))
            }
            // At most `per_second` devices a second: the whole audience over as many seconds
            // as that takes (none when one second is enough).
            (None, Some(per_second)) if per_second > 0 && audience.len() > per_second => {
                Some(audience.len().saturating_mul(1000) / per_second)
            }
            _ => None,
        };
        if let Some(duration_ms) = duration_ms {
            push.policy.pace.duration_ms = Some(duration_ms);
            if app.live.read().paced_running() >= MAX_PACED_PER_APP {
                return Err(EngineError::TooManyPaced);
            }
        }
        let overridden = match push.policy.overrides {
            Some(old) => {
                let old = self.overridable(app, old).await?;
                push.policy.notify_id = Some(old.push.notify_id());
                Some(old)
            }
            None => None,
        };
        // A push a door named in advance (`reserve_msg_id`) keeps that id.
        if push.msg_id == 0 {
            push.msg_id = self.reserve_msg_id().await?;
        }
        push.sent_ms = now_ms();
        if validate_only {
            return Ok(push.msg_id);
        }
        if let Some(url) = events::push_callback_url(push.callback.as_ref()) {
            self.ensure_push_endpoint(app, url).await?;
        }
        let events = self.accepted_event(app, &push, audience.len());
        // The old push stops before the new one is written, so no device gets both; if
        // the write fails it goes on.
        if let Some(old) = &overridden {
            old.set_recalled(true);
        }
        if let Err(e) = self
            .store
            .insert_push(&app.app_key, &push, &audience, events)
            .await
        {
            if let Some(old) = &overridden {
                old.set_recalled(false);
            }
            return Err(e.into());
        }
        if let Some(old) = &overridden {
            app.retire(old);
        }
        let msg_id = push.msg_id;
        let live = LivePush::new(push, audience, RoaringBitmap::new(), RoaringBitmap::new());
        let live = Arc::new(match members {
            Some(members) => live.with_variants(members),
            None => live,
        });
        let vendor_targets = self.plan_vendors(app, &live);
        app.live.write().insert(live.clone());
        let reached = app.fan_out(&live);
        self.announce_push(app, &live);
        self.route_to_vendors(app, &live, vendor_targets);
        // One line per accepted push at info: what an operator looks for first when a push
        // "did not arrive".
        tracing::info!(app_key = %app.app_key, msg_id, targets = live.audience.len(), online = reached, "push accepted");
        Ok(msg_id)
    }

    /// The app that has a device with this registration id, and the device's ordinal.
    fn app_of_device(&self, registration_id: &str) -> Option<(Arc<AppState>, Ordinal)> {
        // The candidates are copied out first: `device_apps` is never held while an app's
        // devices are locked, so no two paths can take the two locks in opposite orders.
        let candidates = self.device_apps.read().candidates(registration_id);
        candidates
            .into_iter()
            .find_map(|app| app.device_ordinal(registration_id).map(|o| (app, o)))
    }

    /// Opens a session for a device that presented its credentials. A session it already
    /// had is asked to close (4002).
    pub fn connect(
        &self,
        registration_id: &str,
        device_secret: &str,
    ) -> Result<(Arc<AppState>, Session), EngineError> {
        let (app, ordinal) = self
            .app_of_device(registration_id)
            .ok_or(EngineError::BadCredentials)?;
        let platform = {
            let d = app.devices.read();
            let record = d.record(ordinal).ok_or(EngineError::BadCredentials)?;
            if !ids::same_secret(&record.secret_hash, &hash_secret(device_secret)) {
                return Err(EngineError::BadCredentials);
            }
            record.platform
        };
        let conn_id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let handle = SessionHandle::new(conn_id, platform, ids::now_us());
        let replaced = {
            let mut p = app.presence.lock();
            p.online.insert(ordinal);
            p.sessions.insert(ordinal, handle.clone())
        };
        match replaced {
            Some(old) => old.close(4002, "replaced by a newer connection"),
            None => pigeon_telemetry::connection_opened(platform.as_str()),
        }
        if self.cluster().is_some() {
            // It may have reported positions to another node since: read its standing
            // with the fences again.
            app.fences.forget_device(ordinal);
        }
        self.announce_connected(&app, ordinal, handle.since_us);
        Ok((app, Session::new(ordinal, &handle)))
    }

    /// [`Engine::connect`], reading the cluster's change feed first if the device is not
    /// known here yet (it registered through another node a moment ago).
    pub async fn connect_caught_up(
        &self,
        registration_id: &str,
        device_secret: &str,
    ) -> Result<(Arc<AppState>, Session), EngineError> {
        match self.connect(registration_id, device_secret) {
            Err(EngineError::BadCredentials) if self.cluster().is_some() => {
                self.learn_device(registration_id).await?;
                self.connect(registration_id, device_secret)
            }
            other => other,
        }
    }

    /// Ends a session; the device is offline unless a newer session replaced it.
    pub fn disconnect(&self, app: &AppState, session: &Session) {
        {
            let mut p = app.presence.lock();
            if p.sessions.get(&session.ordinal).map(|s| s.conn_id) == Some(session.conn_id) {
                p.sessions.remove(&session.ordinal);
                p.online.remove(session.ordinal);
                pigeon_telemetry::connection_closed(session.platform.as_str());
            } else {
                return;
            }
        }
        self.announce_disconnected(app, session.ordinal);
    }

    /// Recalls a push of `app` sent within the recall window (a day by default): devices that have not got it never
    /// will (each is reported `Push.Undelivered`, ErrCode 2, in the write that records the
    /// recall), and connected devices that got it are told to remove it (`revoke`).
    pub async fn recall(&self, app: &AppState, msg_id: u64) -> Result<(), EngineError> {
        let window = Duration::from_millis(self.recall_window_ms.load(Ordering::Relaxed));
        // A push no longer in memory (every target acked it) is read back the same shape.
        let (push, in_memory) = match app.live_push(msg_id) {
            Some(live) => (live, true),
            None => match self.store.load_push(&app.app_key, msg_id).await? {
                Some(p) => (
                    Arc::new(
                        app.new_live(p.push, p.audience, p.sent, p.delivered)
                            .with_vendor_sets(p.vendors),
                    ),
                    false,
                ),
                None => return Err(EngineError::UnknownPush(msg_id)),
            },
        };
        let now = now_ms();
        if now.saturating_sub(push.push.sent_ms) > window.as_millis() as u64 {
            if self.store.recalled_at(msg_id).await?.is_some() {
                return Err(EngineError::AlreadyRecalled(msg_id));
            }
            return Err(EngineError::Invalid(format!(
                "push {msg_id} was sent more than {} s ago; only pushes of the last {} s can be recalled",
                window.as_secs(),
                window.as_secs()
            )));
        }
        // Stopped first, so that no device gets it while the recall is written.
        push.set_recalled(true);
        let (sent, delivered) = push.sets();
        let missed = &push.audience - &delivered;
        let events = self.undelivered_events(
            app,
            &push.push,
            &missed,
            &sent,
            (
                2,
                "recalled: the push was withdrawn before the device received it",
            ),
        );
        match self.store.recall_push(msg_id, now, events).await {
            Ok(true) => pigeon_telemetry::undelivered(Undelivered::Recalled, missed.len()),
            Ok(false) => return Err(EngineError::AlreadyRecalled(msg_id)),
            Err(e) => {
                push.set_recalled(false);
                return Err(e.into());
            }
        }
        if in_memory {
            app.retire(&push);
        }
        self.revoke_at_vendors(app, &push, &sent);
        app.notify_connected(&sent, Notice::Revoke(msg_id));
        self.announce_change();
        Ok(())
    }

    /// The push `msg_id` of `app` as a new push may override it: sent within the recall
    /// window (a day by default) and not recalled. In memory if it is still deliverable.
    async fn overridable(&self, app: &AppState, msg_id: u64) -> Result<Arc<LivePush>, EngineError> {
        let invalid = |why: &str| EngineError::Invalid(format!("override_msg_id {msg_id}: {why}"));
        let old = match app.live_push(msg_id) {
            Some(live) => live,
            None => match self.store.load_push(&app.app_key, msg_id).await? {
                Some(p) => Arc::new(
                    app.new_live(p.push, p.audience, p.sent, p.delivered)
                        .with_vendor_sets(p.vendors),
                ),
                None => return Err(invalid("no such push of this app")),
            },
        };
        let window = self.recall_window_ms.load(Ordering::Relaxed);
        if now_ms().saturating_sub(old.push.sent_ms) > window {
            return Err(invalid(&format!(
                "sent more than {} s ago; only pushes of the last {} s can be overridden",
                window / 1000,
                window / 1000
            )));
        }
        if let Some(newer) = self.store.overridden_by(msg_id).await? {
            return Err(invalid(&format!(
                "push {newer} overrode it already; override that one"
            )));
        }
        if old.is_recalled() || self.store.recalled_at(msg_id).await?.is_some() {
            return Err(invalid("that push was recalled"));
        }
        Ok(old)
    }

    /// The devices a push's SMS fallback goes to now: those it targeted that have not acked
    /// it and have a mobile number bound, with the push's SMS fallback. `None` if the push
    /// or its app is gone; no devices if it was recalled or overridden.
    pub async fn sms_targets(
        &self,
        app_key: &str,
        msg_id: u64,
    ) -> Result<
        Option<(
            Arc<AppState>,
            pigeon_core::SmsFallback,
            Vec<(Ordinal, String, String)>,
        )>,
        EngineError,
    > {
        let Some(app) = self.app(app_key).await? else {
            return Ok(None);
        };
        let (push, audience, delivered) = match app.live_push(msg_id) {
            Some(live) => (live.push.clone(), live.audience.clone(), live.sets().1),
            None => match self.store.load_push(app_key, msg_id).await? {
                Some(p) => (p.push, p.audience, p.delivered),
                None => return Ok(None),
            },
        };
        let Some(sms) = push.policy.sms.clone() else {
            return Ok(None);
        };
        let stopped = self.store.recalled_at(msg_id).await?.is_some()
            || self.store.overridden_by(msg_id).await?.is_some();
        if stopped {
            return Ok(Some((app, sms, Vec::new())));
        }
        let devices = app.devices.read();
        let targets = (&audience - &delivered)
            .iter()
            .filter_map(|o| {
                let record = devices.record(o)?;
                let mobile = record.mobile.clone().filter(|m| !m.is_empty())?;
                Some((o, record.registration_id.clone(), mobile))
            })
            .collect();
        drop(devices);
        Ok(Some((app, sms, targets)))
    }

    /// Makes sure the push-level endpoint for a push's `callback.url` exists, so that the
    /// push's events can be addressed to it.
    async fn ensure_push_endpoint(&self, app: &AppState, url: &str) -> Result<(), EngineError> {
        let secret = {
            let endpoints = app.callbacks.read();
            if endpoints.iter().any(|e| e.push_level && e.url == url) {
                return Ok(());
            }
            // Signed like the app's own callbacks, so one receiver can check both; an app
            // without any signs with its master secret, which its backend knows.
            endpoints
                .iter()
                .find(|e| !e.push_level)
                .map(|e| e.signing_secret.clone())
                .unwrap_or_else(|| app.master_secret.clone())
        };
        let endpoint = self
            .store
            .push_endpoint(pigeon_store::CallbackEndpoint {
                id: 0,
                app_key: app.app_key.clone(),
                url: url.to_string(),
                commands: events::PUSH_LEVEL_COMMANDS
                    .iter()
                    .map(|c| c.to_string())
                    .collect(),
                basic_auth: true,
                signing_secret: secret,
                created_ms: now_ms(),
                start_event_id: 0,
                push_level: true,
                failing_since_ms: None,
                disabled_ms: None,
                format: pigeon_store::CallbackFormat::Pigeon,
            })
            .await?;
        let mut endpoints = app.callbacks.write();
        if !endpoints.iter().any(|e| e.id == endpoint.id) {
            endpoints.push(endpoint);
        }
        Ok(())
    }

    /// The badge number a device on `platform` shows with this push, if the push changes
    /// badges there. The first time the push is written to the device its change is applied
    /// to the number the server keeps for the device; a push written again (redelivered)
    /// shows the number as it is.
    pub fn badge_for(
        &self,
        app: &AppState,
        ordinal: Ordinal,
        platform: Platform,
        push: &LivePush,
    ) -> Option<u32> {
        let op = push.badge_op(app.variant_of(push, ordinal), platform)?;
        let mut badges = app.badges.lock();
        let current = badges.get(ordinal);
        if push.was_sent_to(ordinal) {
            return Some(current);
        }
        let badge = op.apply(current);
        badges.set(ordinal, badge);
        drop(badges);
        self.announce_badges(app, vec![(ordinal, badge)], false);
        Some(badge)
    }

    /// Changes the badge number of devices (`POST /v3/devices/badge`): durable when it
    /// returns, and connected devices are sent their new number (`badge`).
    pub async fn change_badges(
        &self,
        app: &AppState,
        ordinals: &[Ordinal],
        op: BadgeOp,
    ) -> Result<(), EngineError> {
        let changed: Vec<(Ordinal, u32)> = {
            let mut badges = app.badges.lock();
            ordinals
                .iter()
                .map(|&o| {
                    let badge = op.apply(badges.get(o));
                    badges.set(o, badge);
                    (o, badge)
                })
                .collect()
        };
        self.store
            .save_badges(&app.app_key, changed.clone())
            .await?;
        {
            let presence = app.presence.lock();
            for (ordinal, badge) in &changed {
                if let Some(session) = presence.sessions.get(ordinal) {
                    session.notify(Notice::Badge(*badge));
                }
            }
        }
        self.announce_badges(app, changed, true);
        Ok(())
    }

    /// Records that these pushes were written to a device's connection.
    pub fn sent(&self, app: &AppState, ordinal: Ordinal, pushes: &[Arc<LivePush>]) {
        let count = pushes
            .iter()
            .filter(|push| app.record_sent(push, ordinal))
            .count();
        pigeon_telemetry::deliveries(Channel::Pigeon, TelemetryStage::Sent, count as u64);
    }

    /// Records that a device got these pushes. Returns how many were newly delivered.
    pub async fn ack(&self, app: &AppState, ordinal: Ordinal, msg_ids: &[u64]) -> usize {
        let mut newly = Vec::new();
        for &msg_id in msg_ids {
            let Some(live) = self.mark_acked(app, ordinal, msg_id) else {
                continue;
            };
            if app.reports_stages(&live.push) {
                app.push_events.lock().push(events::PushStage::own(
                    (msg_id, live.push.sent_ms),
                    ordinal,
                    events::Stage::Delivered,
                ));
            }
            newly.push((ordinal, msg_id));
        }
        let n = newly.len();
        if n > 0 {
            pigeon_telemetry::deliveries(Channel::Pigeon, TelemetryStage::Delivered, n as u64);
            self.announce_acks(app, newly);
        }
        n
    }

    /// Marks a push delivered to a device (acked here or on another node); the push if
    /// this is news.
    pub(crate) fn mark_acked(
        &self,
        app: &AppState,
        ordinal: Ordinal,
        msg_id: u64,
    ) -> Option<Arc<LivePush>> {
        let live = app.live_push(msg_id)?;
        let (delivered, first_since_checkpoint) = live.mark_delivered(ordinal);
        if first_since_checkpoint {
            app.dirty.lock().push(live.clone());
        }
        if delivered && app::is_narrow(&live) {
            app.live.write().delivered(msg_id, ordinal);
        }
        delivered.then_some(live)
    }

    /// Stores a click a device reported on a push it received: written to this device's
    /// connection (`in_flight`, or the push's sent bitmap), acked by it, or sent to it by a
    /// vendor. A click on any other msg_id — unknown, another app's, or a push this device
    /// never got — is refused with [`EngineError::NotReceived`] and writes nothing: a click
    /// counts in reports and callbacks, so a device must not be able to make them up.
    pub async fn record_click(
        &self,
        app: &AppState,
        ordinal: Ordinal,
        msg_id: u64,
        in_flight: bool,
    ) -> Result<(), EngineError> {
        let sent_ms = match self.push_on_device(app, ordinal, msg_id).await? {
            Some((sent_ms, received)) if received || in_flight => sent_ms,
            _ => return Err(EngineError::NotReceived(msg_id)),
        };
        let reports = if app.wants(events::PUSH_EVENT)
            || events::push_callback_url(app.push_callback(msg_id).as_ref()).is_some()
        {
            self.push_events(
                app,
                &[events::PushStage::own(
                    (msg_id, sent_ms),
                    ordinal,
                    events::Stage::Clicked,
                )],
            )
        } else {
            Vec::new()
        };
        let event = DeviceEvent {
            app_key: app.app_key.clone(),
            ordinal,
            kind: "click".to_string(),
            msg_id: Some(msg_id),
            data: Value::Null,
            at_ms: now_ms(),
        };
        self.store.record_event(event, reports).await?;
        pigeon_telemetry::deliveries(Channel::Pigeon, TelemetryStage::Clicked, 1);
        Ok(())
    }

    /// When a push of this app was accepted, and whether it reached a device, by Pigeon's
    /// connection or a vendor (both mark the sent bitmap, an ack the delivered one): from
    /// memory while the push is live, else from storage (a retired or expired push is read
    /// there; another app's is not found: `None`).
    async fn push_on_device(
        &self,
        app: &AppState,
        ordinal: Ordinal,
        msg_id: u64,
    ) -> Result<Option<(u64, bool)>, EngineError> {
        if let Some(live) = app.live_push(msg_id) {
            let received = live.was_sent_to(ordinal) || live.is_delivered_to(ordinal);
            return Ok(Some((live.push.sent_ms, received)));
        }
        Ok(self.store.load_push(&app.app_key, msg_id).await?.map(|p| {
            let received = p.sent.contains(ordinal) || p.delivered.contains(ordinal);
            (p.push.sent_ms, received)
        }))
    }

    /// A group if `master_secret` is its secret, with its apps (those that exist).
    pub async fn authenticate_group(
        &self,
        group_key: &str,
        master_secret: &str,
    ) -> Result<(GroupRecord, Vec<Arc<AppState>>), EngineError> {
        let group = self
            .store
            .find_group(group_key)
            .await?
            .filter(|g| ids::same_secret(g.master_secret.as_bytes(), master_secret.as_bytes()))
            .ok_or(EngineError::BadCredentials)?;
        let mut apps = Vec::new();
        for key in &group.app_keys {
            if let Some(app) = self.app(key).await? {
                apps.push(app);
            }
        }
        Ok((group, apps))
    }

    /// Sets how long expired pushes wait for late acks before they are dropped and their
    /// undelivered targets reported.
    pub fn set_expired_grace(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.expired_grace_ms.store(ms, Ordering::Relaxed);
    }

    /// How old a push may be and still be recalled.
    pub fn set_recall_window(&self, window: Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.recall_window_ms.store(ms, Ordering::Relaxed);
    }

    /// Which targets that clients give may be on loopback, private, link-local or other
    /// non-public addresses (`pigeon_core::net`); none unless the operator allows it.
    pub fn set_private_networks(&self, allowed: PrivateNetworks) {
        *self.private_networks.write() = allowed;
    }

    /// The operator's address policy for callbacks, vendor URLs and Web Push endpoints.
    pub fn private_networks(&self) -> PrivateNetworks {
        *self.private_networks.read()
    }

    /// How long one minute of `big_push_duration` lasts: a minute, except in tests.
    pub fn set_pacing_minute(&self, minute: Duration) {
        let ms = u64::try_from(minute.as_millis()).unwrap_or(u64::MAX).max(1);
        self.pacing_minute_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn expired_grace_ms(&self) -> u64 {
        self.expired_grace_ms.load(Ordering::Relaxed)
    }

    /// The storage, for the workers beside the engine (the callback dispatcher, the vendor
    /// router) and what no engine method offers yet (a schedule's runs). Front doors use the
    /// engine's methods.
    pub fn store(&self) -> &Arc<dyn Storage> {
        &self.store
    }

    /// Resolves the next time the delivery checkpoint writes callback events.
    pub fn events_written(&self) -> tokio::sync::futures::Notified<'_> {
        self.events_written.notified()
    }

    /// A number for a device change made through this node, above every one before.
    pub(crate) fn next_device_edit(&self) -> u64 {
        self.device_edits.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Every app, in no particular order.
    pub fn apps(&self) -> Vec<Arc<AppState>> {
        self.apps.read().values().cloned().collect()
    }

    /// Asks every connection to close with `code`, e.g. 1001 at shutdown.
    pub fn close_all(&self, code: u16, reason: &str) {
        for app in self.apps() {
            for s in app.presence.lock().sessions.values() {
                s.close(code, reason);
            }
        }
    }

    /// Makes every write so far durable, acks included.
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.checkpoint().await?;
        self.save_positions().await?;
        Ok(self.store.close().await?)
    }

    /// Writes the delivered sets that changed since the last checkpoint.
    async fn checkpoint(&self) -> Result<(), EngineError> {
        let mut batch = Vec::new();
        let mut reports = Vec::new();
        let mut complete = Vec::new();
        for app in self.apps() {
            let stages = std::mem::take(&mut *app.push_events.lock());
            reports.extend(self.push_events(&app, &stages));
            let dirty = std::mem::take(&mut *app.dirty.lock());
            for push in dirty {
                if let Some(checkpoint) = push.take_checkpoint() {
                    if checkpoint.delivered.len() >= push.audience.len() {
                        complete.push((app.clone(), push));
                    }
                    batch.push(checkpoint);
                }
            }
        }
        // Small chunks, each awaited, so pushes being accepted meanwhile are not queued
        // behind one long write.
        // The events go with the first chunk: never after the state they report, at worst
        // before (a crash then means a redelivery, reported again; receivers dedupe).
        for app in self.apps() {
            let badges = app.badges.lock().take_changed();
            if !badges.is_empty() {
                self.store.save_badges(&app.app_key, badges).await?;
            }
        }
        let wrote_events = !reports.is_empty();
        tracing::debug!(events = reports.len(), pushes = batch.len(), "checkpoint");
        if batch.is_empty() && wrote_events {
            self.store.save_delivered(Vec::new(), reports).await?;
            self.events_written.notify_waiters();
            return Ok(());
        }
        while !batch.is_empty() {
            let rest = batch.split_off(batch.len().min(128));
            self.store
                .save_delivered(batch, std::mem::take(&mut reports))
                .await?;
            if wrote_events {
                self.events_written.notify_waiters();
            }
            batch = rest;
        }
        for (app, push) in complete {
            app.retire(&push);
        }
        Ok(())
    }
}

/// A new app's record; keys are generated when not given and checked when given.
pub fn new_app_record(
    name: &str,
    app_key: Option<String>,
    master_secret: Option<String>,
) -> Result<AppRecord, EngineError> {
    let app_key = app_key.unwrap_or_else(|| random_alnum(24));
    let master_secret = master_secret.unwrap_or_else(|| random_alnum(24));
    for (what, v) in [("app_key", &app_key), ("master_secret", &master_secret)] {
        if !is_app_credential(v) {
            return Err(EngineError::Invalid(format!(
                "{what} must be 24 characters of [A-Za-z0-9]"
            )));
        }
    }
    if name.trim().is_empty() || name.len() > 128 {
        return Err(EngineError::Invalid("name must be 1..128 bytes".into()));
    }
    Ok(AppRecord {
        app_key,
        master_secret,
        name: name.to_string(),
        created_ms: now_ms(),
    })
}

fn dedup(tags: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for t in tags {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

async fn checkpoint_delivered(engine: std::sync::Weak<Engine>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if let Err(e) = engine.checkpoint().await {
            tracing::error!(error = %e, "could not checkpoint deliveries");
        }
    }
}

/// Offers paced pushes to the connected devices their pace reached since the last tick.
async fn pace_forever(engine: std::sync::Weak<Engine>) {
    let mut tick = tokio::time::interval(PACE_TICK);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let now = now_ms();
        for app in engine.apps() {
            // Most apps have no paced push: no write lock on their live set for them.
            if app.live.read().paced_running() == 0 {
                continue;
            }
            let released = app.live.write().pace(now);
            for (push, ordinals) in released {
                app.offer(&push, &ordinals);
            }
        }
    }
}

async fn evict_expired(engine: std::sync::Weak<Engine>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let cutoff = now_ms().saturating_sub(engine.expired_grace_ms());
        // Checked once a round in the store (fencing), not per app.
        let reporting = engine.on_duty(cluster::Duty::ExpiryReports)
            && engine.still_on_duty(cluster::Duty::ExpiryReports).await;
        for app in engine.apps() {
            let n = app.evict_expired(cutoff);
            if n > 0 {
                tracing::debug!(app = %app.app_key, evicted = n, "expired pushes dropped from memory");
            }
            if !reporting {
                continue;
            }
            if let Err(e) = engine.report_expired(&app).await {
                tracing::warn!(app = %app.app_key, error = %e, "could not report expired pushes");
            }
        }
    }
}
