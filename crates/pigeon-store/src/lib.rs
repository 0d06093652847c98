//! Pigeon's durable storage.
//!
//! [`Storage`] is the seam every other crate writes and reads through; [`SqliteStore`] is the
//! embedded implementation: one SQLite file in WAL mode, written by a single thread that
//! commits whole batches of writes at once (group commit), so many concurrent requests share
//! one fsync. Callers of a write get their answer only after its batch is durable.
//!
//! This crate knows records and SQL, nothing of HTTP, WebSockets or any push dialect.

mod records;
pub mod sealed;
mod sqlite;

pub use records::{
    batch_events_json, decode_vendor_sets, encode_vendor_sets, merge_vendor_sets, AbTestRecord,
    AppRecord, AppSettings, CallbackBatch, CallbackEndpoint, CallbackFormat, Checkpoint,
    DeviceEvent, DeviceRecord, FenceState, FileRecord, GeofenceRecord, GroupRecord, Location,
    NewEvent, PushCounts, SavedKind, ScheduleRecord, ScheduleRun, SegmentRecord, SmsSend,
    StoredEvent, StoredPush, VendorSets, FENCE_ENTER, FENCE_LEAVE, FENCE_STAY,
};
pub use sqlite::{PushUpgrader, SqliteStore, Synchronous};

/// Every port trait, for callers that hold an `Arc<dyn Storage>` and call its methods.
pub mod ports {
    pub use crate::{
        AppStore, CidStore, CredentialStore, DeviceStore, FeedStore, FileStore, GeofenceStore,
        LeaseStore, OutboxStore, PresenceStore, PushStore, SavedAudienceStore, ScheduleStore,
        SmsStore, Storage,
    };
}

use pigeon_core::Push;
use roaring::RoaringBitmap;
use std::future::Future;
use std::pin::Pin;

/// What storage can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("storage is shut down")]
    Closed,
    #[error("{0} already exists")]
    Conflict(String),
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    #[error("storage io: {0}")]
    Io(#[from] std::io::Error),
    /// The database cannot be reached: it refused or dropped the connection, or no
    /// connection came free in time. Worth retrying later (HTTP 503).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Any other error a database server answered with.
    #[error("storage backend: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = StoreResult<T>> + Send + 'a>>;

/// Apps, their groups, settings and Web Push keys.
pub trait AppStore: Send + Sync + 'static {
    /// Creates an app; `Conflict` if the app_key is taken.
    fn create_app(&self, app: AppRecord) -> StoreFuture<'_, ()>;
    fn find_app(&self, app_key: &str) -> StoreFuture<'_, Option<AppRecord>>;
    fn list_apps(&self) -> StoreFuture<'_, Vec<AppRecord>>;
    /// The app's Web Push (VAPID) public key, storing this pair first if it has none.
    fn ensure_vapid_keys(
        &self,
        app_key: &str,
        private_key: String,
        public_key: String,
    ) -> StoreFuture<'_, String>;
    /// The app's VAPID key pair (private, public), if it has one.
    fn vapid_keys(&self, app_key: &str) -> StoreFuture<'_, Option<(String, String)>>;

    /// Creates an app group; `Conflict` if the group key is taken.
    fn create_group(&self, group: GroupRecord) -> StoreFuture<'_, ()>;
    fn find_group(&self, group_key: &str) -> StoreFuture<'_, Option<GroupRecord>>;

    /// Replaces an app's settings.
    fn set_app_settings(&self, app_key: &str, settings: AppSettings) -> StoreFuture<'_, ()>;
    /// The settings of every app that has any (the others use the defaults).
    fn app_settings(&self) -> StoreFuture<'_, Vec<(String, AppSettings)>>;
}

/// Devices and what is kept per device: last online, block list, badges, locations.
pub trait DeviceStore: Send + Sync + 'static {
    /// Every device of an app, in chunks (so that a million devices are never all held
    /// twice while they are loaded).
    fn load_devices(
        &self,
        app_key: &str,
    ) -> tokio::sync::mpsc::Receiver<StoreResult<Vec<DeviceRecord>>>;
    /// Inserts the device or replaces the stored one with the same (app_key, ordinal).
    fn put_device(&self, device: DeviceRecord) -> StoreFuture<'_, ()>;
    /// [`Storage::put_device`] for many devices, all or none.
    fn put_devices(&self, devices: Vec<DeviceRecord>) -> StoreFuture<'_, ()>;
    /// Remembers when a device was last connected, with the events that report it.
    fn set_last_online(
        &self,
        app_key: &str,
        ordinal: u32,
        at_ms: u64,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()>;
    /// The device with this registration id, of any app (what a node asks of a device it
    /// has not heard of yet: one registered through another node a moment ago).
    fn find_device(&self, registration_id: &str) -> StoreFuture<'_, Option<DeviceRecord>>;
    /// When each of these devices was last connected, for those ever seen.
    fn last_online(&self, app_key: &str, ordinals: Vec<u32>) -> StoreFuture<'_, Vec<(u32, u64)>>;
    /// The devices of an app whose latest time online (`last_online`) is in `[from_ms,
    /// to_ms)`.
    fn seen_between(&self, app_key: &str, from_ms: u64, to_ms: u64) -> StoreFuture<'_, Vec<u32>>;
    /// The badge number of every device of an app that has one: (ordinal, badge).
    fn load_badges(&self, app_key: &str) -> StoreFuture<'_, Vec<(u32, u32)>>;
    /// Blocks or unblocks devices of an app (Getui's black list).
    fn set_blocked(&self, app_key: &str, ordinals: Vec<u32>, blocked: bool) -> StoreFuture<'_, ()>;
    /// The blocked devices of an app.
    fn load_blocked(&self, app_key: &str) -> StoreFuture<'_, Vec<u32>>;
    /// Records devices' badge numbers: (ordinal, badge).
    fn save_badges(&self, app_key: &str, badges: Vec<(u32, u32)>) -> StoreFuture<'_, ()>;
    /// Replaces the latest known position of each of these devices (one row per device).
    fn save_locations(&self, app_key: &str, locations: Vec<(u32, Location)>)
        -> StoreFuture<'_, ()>;
    /// The latest position a device reported, if any.
    fn location(&self, app_key: &str, ordinal: u32) -> StoreFuture<'_, Option<Location>>;
}

/// The cid pool of push idempotency.
pub trait CidStore: Send + Sync + 'static {
    /// Remembers cids handed out from an app's pool.
    fn issue_cids(&self, app_key: &str, cids: Vec<String>, at_ms: u64) -> StoreFuture<'_, ()>;
    /// A cid of this app's pool issued after `since_ms`: `Some(msg_id)` once a push used it,
    /// `Some(None)` while unused, `None` if unknown or older.
    fn find_cid(
        &self,
        app_key: &str,
        cid: &str,
        since_ms: u64,
    ) -> StoreFuture<'_, Option<Option<u64>>>;
}

/// Pushes and their delivery state: who acked, recalls, overrides, expiry reports.
pub trait PushStore: Send + Sync + 'static {
    /// Stores an accepted push with its resolved audience, and the events that report it,
    /// in one transaction. A push that carries a cid is recorded as that cid's result, and a
    /// schedule's firing as that schedule's, in the same transaction; a push that overrides
    /// another (`options.override_msg_id`, of the same app) marks it overridden.
    fn insert_push(
        &self,
        app_key: &str,
        push: &Push,
        audience: &RoaringBitmap,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()>;
    /// Pushes of an app that expired before `before_ms` and whose expiry is not reported yet.
    fn expired_unreported(&self, app_key: &str, before_ms: u64)
        -> StoreFuture<'_, Vec<StoredPush>>;
    /// Marks a push's expiry reported, with the events that report it, in one transaction.
    fn report_expired(&self, msg_id: u64, events: Vec<NewEvent>) -> StoreFuture<'_, ()>;
    /// Marks a push recalled at `at_ms` with the events that report it, in one write; false
    /// if it was recalled already.
    fn recall_push(&self, msg_id: u64, at_ms: u64, events: Vec<NewEvent>) -> StoreFuture<'_, bool>;
    /// When a push was recalled, if it was.
    fn recalled_at(&self, msg_id: u64) -> StoreFuture<'_, Option<u64>>;
    /// The push that overrode a push (`options.override_msg_id`), if one did.
    fn overridden_by(&self, msg_id: u64) -> StoreFuture<'_, Option<u64>>;
    /// One push of an app, live or not, with who received it.
    fn load_push(&self, app_key: &str, msg_id: u64) -> StoreFuture<'_, Option<StoredPush>>;
    /// The devices that reported a click on a push.
    fn clicked(&self, app_key: &str, msg_id: u64) -> StoreFuture<'_, Vec<u32>>;
    /// Each push of an app sent in `[from_ms, to_ms)`, oldest first, with its counts as of
    /// the last checkpoint (reports over a period).
    fn push_counts_between(
        &self,
        app_key: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> StoreFuture<'_, Vec<PushCounts>>;
    /// The app's latest pushes, newest first (by msg_id), at most `limit`, with their counts
    /// as of the last checkpoint (the console's list of pushes).
    fn recent_push_counts(&self, app_key: &str, limit: u32) -> StoreFuture<'_, Vec<PushCounts>>;
    /// Pushes of an app still deliverable at `now_ms`, oldest first, with who has acked them.
    fn load_live_pushes(&self, app_key: &str, now_ms: u64) -> StoreFuture<'_, Vec<StoredPush>>;
    /// The highest msg_id ever stored (0 if none).
    fn max_msg_id(&self) -> StoreFuture<'_, u64>;

    /// Checkpoints who has been sent and who has acked each push, replacing the last, with
    /// the events that report it.
    fn save_delivered(
        &self,
        checkpoints: Vec<Checkpoint>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()>;
    /// Records a click a device reported, with the events that report it.
    fn record_event(&self, event: DeviceEvent, events: Vec<NewEvent>) -> StoreFuture<'_, ()>;
}

/// Vendor channel credentials, sealed at rest.
pub trait CredentialStore: Send + Sync + 'static {
    /// Sets (replaces) an app's credentials for one vendor.
    fn set_vendor_credentials(
        &self,
        app_key: &str,
        vendor: &str,
        body: String,
        at_ms: u64,
    ) -> StoreFuture<'_, ()>;
    /// An app's credentials: (vendor, JSON, updated_ms), by vendor.
    fn vendor_credentials(&self, app_key: &str) -> StoreFuture<'_, Vec<(String, String, u64)>>;
    /// Removes an app's credentials for one vendor; false if it had none.
    fn remove_vendor_credentials(&self, app_key: &str, vendor: &str) -> StoreFuture<'_, bool>;
    /// Every app's credentials: (app_key, vendor, JSON, updated_ms).
    fn all_vendor_credentials(&self) -> StoreFuture<'_, Vec<(String, String, String, u64)>>;
    /// Changes whenever any app's credentials are set or removed: (how many, sum of their
    /// updated_ms).
    fn vendor_credentials_version(&self) -> StoreFuture<'_, (u64, u64)>;
}

/// Scheduled pushes and their failed runs.
pub trait ScheduleStore: Send + Sync + 'static {
    /// Creates or replaces a schedule.
    fn put_schedule(&self, schedule: ScheduleRecord) -> StoreFuture<'_, ()>;
    /// Deletes a schedule of an app; false if there was none.
    fn delete_schedule(&self, app_key: &str, schedule_id: &str) -> StoreFuture<'_, bool>;

    /// Every schedule of every app, oldest first.
    fn load_schedules(&self) -> StoreFuture<'_, Vec<ScheduleRecord>>;
    /// Records a firing that produced no push, and when the schedule fires next.
    fn record_failed_run(
        &self,
        schedule_id: &str,
        run: ScheduleRun,
        next_ms: Option<u64>,
    ) -> StoreFuture<'_, ()>;
    /// The firings of a schedule, oldest first.
    fn schedule_runs(&self, schedule_id: &str) -> StoreFuture<'_, Vec<ScheduleRun>>;
}

/// Callback endpoints and the outbox of events waiting to be posted to them.
pub trait OutboxStore: Send + Sync + 'static {
    /// Adds a callback endpoint; it gets the events recorded from now on. Returns its id.
    fn add_callback(&self, endpoint: CallbackEndpoint) -> StoreFuture<'_, u64>;
    /// Removes an endpoint of an app with its pending batches; false if there was none.
    fn remove_callback(&self, app_key: &str, id: u64) -> StoreFuture<'_, bool>;
    /// Every endpoint of every app.
    fn list_callbacks(&self) -> StoreFuture<'_, Vec<CallbackEndpoint>>;
    /// Records events in the outbox, durably.
    fn append_events(&self, events: Vec<NewEvent>) -> StoreFuture<'_, ()>;
    /// Enables an endpoint of an app again (it gets events from now on); false if there
    /// is no such endpoint.
    fn enable_callback(&self, app_key: &str, id: u64) -> StoreFuture<'_, bool>;
    /// Finds or adds the push-level endpoint for `url` (a push's `callback.url`).
    fn push_endpoint(&self, endpoint: CallbackEndpoint) -> StoreFuture<'_, CallbackEndpoint>;
    /// Records an endpoint's health: since when it fails, and whether it is disabled.
    fn set_endpoint_health(
        &self,
        id: u64,
        failing_since_ms: Option<u64>,
        disabled_ms: Option<u64>,
    ) -> StoreFuture<'_, ()>;
    /// Up to `limit` events of one command of an app after `after_id`, oldest first: the
    /// app-wide ones (`endpoint` none) or those addressed to one push-level endpoint.
    fn events_after(
        &self,
        app_key: &str,
        endpoint: Option<u64>,
        command: &str,
        after_id: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredEvent>>;
    /// Where an endpoint is in one command's events (its start if it has sent none).
    fn callback_cursor(&self, endpoint_id: u64, command: &str) -> StoreFuture<'_, Option<u64>>;
    /// Stores batches of one endpoint and command, to be tried (again), and moves the
    /// endpoint's cursor for that command past `last_event_id` (never back), in one
    /// transaction.
    fn create_batches(
        &self,
        endpoint_id: u64,
        command: &str,
        batches: Vec<CallbackBatch>,
        last_event_id: u64,
    ) -> StoreFuture<'_, ()>;
    /// Batches the receiver took: forgotten.
    fn finish_batches(&self, delivery_ids: Vec<String>) -> StoreFuture<'_, ()>;
    /// A batch that failed: its next try, or dead.
    fn fail_batch(
        &self,
        delivery_id: &str,
        attempts: u32,
        next_ms: u64,
        dead: bool,
        error: &str,
    ) -> StoreFuture<'_, ()>;
    /// The batches of an endpoint not yet taken (dead ones too), oldest first.
    fn callback_batches(&self, endpoint_id: u64) -> StoreFuture<'_, Vec<CallbackBatch>>;
    /// Sends a dead-lettered batch again: it is retried from now, as a new one. False if the
    /// endpoint has no such dead batch.
    fn replay_batch(
        &self,
        endpoint_id: u64,
        delivery_id: &str,
        now_ms: u64,
    ) -> StoreFuture<'_, bool>;
    /// Drops outbox events every endpoint of the app has batched.
    fn prune_events(&self, app_key: &str) -> StoreFuture<'_, u64>;
}

/// Files of targets.
pub trait FileStore: Send + Sync + 'static {
    /// Stores an uploaded file with its values.
    fn put_file(&self, file: FileRecord) -> StoreFuture<'_, ()>;
    /// An app's files that have not expired at `now_ms`, oldest first, without values.
    fn list_files(&self, app_key: &str, now_ms: u64) -> StoreFuture<'_, Vec<FileRecord>>;
    /// One file of an app that has not expired, with its values.
    fn get_file(
        &self,
        app_key: &str,
        file_id: &str,
        now_ms: u64,
    ) -> StoreFuture<'_, Option<FileRecord>>;
    /// Deletes a file of an app; false if there was none.
    fn delete_file(&self, app_key: &str, file_id: &str) -> StoreFuture<'_, bool>;
}

/// The SMS fallback queue.
pub trait SmsStore: Send + Sync + 'static {
    /// Pushes whose SMS fallback is due by `now_ms` (msg_id, app_key), oldest first. A
    /// push with `sms_message` gets its timer in the transaction that stores it; recalling
    /// or overriding it drops the timer and its unsent SMS.
    fn due_sms_jobs(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<(u64, String)>>;
    /// Replaces a push's SMS timer by the SMS it comes to, in one transaction.
    fn expand_sms_job(&self, msg_id: u64, sends: Vec<SmsSend>) -> StoreFuture<'_, ()>;
    /// Stops a push's SMS fallback (Getui's `stop_sms`): its timer and its SMS not sent yet
    /// are dropped. Returns whether anything was still to go.
    fn stop_sms(&self, msg_id: u64) -> StoreFuture<'_, bool>;
    /// SMS due to be sent (or tried again) by `now_ms`.
    fn due_sms_sends(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<SmsSend>>;
    /// An SMS is done with (sent, or given up): forgotten, with the events that report it.
    fn finish_sms_send(
        &self,
        msg_id: u64,
        ordinal: u32,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()>;
    /// An SMS try failed: when to try again.
    fn retry_sms_send(
        &self,
        msg_id: u64,
        ordinal: u32,
        attempts: u32,
        next_ms: u64,
    ) -> StoreFuture<'_, ()>;
}

/// One change a node missed, read back from the store (the cluster's catch-up when a message
/// between nodes was lost or a node restarted).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A device was registered or changed (the record as stored now).
    Device(Box<DeviceRecord>),
    /// A push was stored, or changed (recalled, overridden): its app and msg_id, and
    /// whether it is recalled now.
    Push {
        app_key: String,
        msg_id: u64,
        recalled: bool,
    },
    /// A geofence was created, replaced or deleted: read it again.
    Geofence {
        app_key: String,
        geofence_id: String,
    },
    /// A segment or an A/B test was created, replaced or deleted: read it again.
    Saved {
        app_key: String,
        kind: SavedKind,
        id: String,
    },
}

/// Ids handed out in blocks and the feed of changes: what several nodes on one store need so
/// they never hand out the same ordinal or msg_id and never miss a change.
pub trait FeedStore: Send + Sync + 'static {
    /// Reserves `count` consecutive device ordinals of an app, never handed out before and
    /// above every stored device's ordinal; returns the first.
    fn reserve_ordinals(&self, app_key: &str, count: u32) -> StoreFuture<'_, u32>;
    /// Reserves `count` consecutive msg_ids, never handed out before, above every stored
    /// msg_id and at least `floor`; returns the first.
    fn reserve_msg_ids(&self, count: u64, floor: u64) -> StoreFuture<'_, u64>;
    /// Where the feed is now: changes committed after this call come after this cursor.
    fn feed_cursor(&self) -> StoreFuture<'_, u64>;
    /// Changes of every app committed since `cursor` (at most `limit`; a change may be given
    /// again in a later call, never left out), and the cursor to ask from next.
    fn changes_since(&self, cursor: u64, limit: usize) -> StoreFuture<'_, (Vec<Change>, u64)>;
}

/// A lease: work that must happen once in a cluster belongs to the node holding its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    /// Grows every time the lease changes hands: the fencing token.
    pub token: u64,
    /// Until when it is held, by the store's clock (ms since the epoch).
    pub until_ms: u64,
}

/// Leases with fencing, timed by the store's clock (so nodes' clocks need not agree).
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes lease `name` for `node` for `ttl_ms`, or extends it if `node` holds it. `Some`
    /// with the fencing token if `node` holds it now; `None` if another node holds it.
    fn take_lease(&self, name: &str, node: &str, ttl_ms: u64) -> StoreFuture<'_, Option<u64>>;
    /// Gives lease `name` up if `node` holds it; whether it did.
    fn release_lease(&self, name: &str, node: &str) -> StoreFuture<'_, bool>;
    /// Whether `token` is still the current, unexpired token of lease `name`: what a holder
    /// checks before it acts, so a node that was paused past its lease does not act on it.
    fn lease_holds(&self, name: &str, token: u64) -> StoreFuture<'_, bool>;
    /// Every lease not yet expired.
    fn leases(&self) -> StoreFuture<'_, Vec<Lease>>;
}

/// Which node holds each connected device, for online status whichever node answers.
pub trait PresenceStore: Send + Sync + 'static {
    /// Devices that connected to (`true`) or left (`false`) `node`, oldest first; a device's
    /// row names the node it connected to last (leaving another node does not clear it).
    fn set_presence(&self, node: &str, changes: Vec<(String, u32, bool)>) -> StoreFuture<'_, ()>;
    /// Forgets every device of `node` (it restarted or died).
    fn clear_presence(&self, node: &str) -> StoreFuture<'_, ()>;
    /// Which of these devices of an app are connected, and to which node (only nodes whose
    /// lease `node:<id>` is live count).
    fn presence(&self, app_key: &str, ordinals: Vec<u32>) -> StoreFuture<'_, Vec<(u32, String)>>;
}

/// Geofences and where each device stands with each of them (geofences.md).
pub trait GeofenceStore: Send + Sync + 'static {
    /// Creates or replaces a fence (the caller keeps `created_ms` of the one it replaces).
    fn put_geofence(&self, fence: GeofenceRecord) -> StoreFuture<'_, ()>;
    /// Deletes a fence and every device's state with it; false if there was none.
    fn delete_geofence(&self, app_key: &str, geofence_id: &str) -> StoreFuture<'_, bool>;
    fn get_geofence(
        &self,
        app_key: &str,
        geofence_id: &str,
    ) -> StoreFuture<'_, Option<GeofenceRecord>>;
    /// An app's fences, oldest first.
    fn list_geofences(&self, app_key: &str) -> StoreFuture<'_, Vec<GeofenceRecord>>;
    /// One device's state with every fence it has one with.
    fn fence_states(&self, app_key: &str, ordinal: u32) -> StoreFuture<'_, Vec<FenceState>>;
    /// Writes changed states with the events they fire, in one transaction. A state is
    /// merged into the stored one: `inside`, `entered_ms`, `stay_due_ms`, `lat` and `lon`
    /// are replaced, `fired` is or'ed and each `last_fired_ms` keeps the later time, so a
    /// firing recorded meanwhile by another node is never undone. States of a fence that
    /// no longer exists are left out.
    fn write_fence_states(
        &self,
        states: Vec<FenceState>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()>;
    /// Pending stays due at `now_ms` (every app), earliest first.
    fn due_stays(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<FenceState>>;
    /// Settles the pending stay of `state` (which names the entry by its `entered_ms` and
    /// the stay by its `stay_due_ms`, as [`GeofenceStore::due_stays`] gave them), only if
    /// that entry is still inside with that stay pending: with `fired_ms`, the stay
    /// fired then (`fired` gains [`FENCE_STAY`], its last time is set) and `events` are
    /// written in the same transaction; `next_due_ms` puts the stay off until then
    /// instead of ending it. False when the entry or its stay had already moved on (settled
    /// by another call, ended or put off): nothing written.
    fn settle_stay(
        &self,
        state: FenceState,
        fired_ms: Option<u64>,
        next_due_ms: Option<u64>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, bool>;
}

/// Segments and A/B tests: saved audiences a push refers to by id. A deleted one leaves a
/// tombstone so the change feed can tell other nodes it is gone.
pub trait SavedAudienceStore: Send + Sync + 'static {
    /// Creates or replaces a segment (the caller keeps `created_ms` of the one it replaces).
    fn put_segment(&self, segment: SegmentRecord) -> StoreFuture<'_, ()>;
    /// Creates an A/B test (a test is never changed: its devices keep their variants).
    fn put_abtest(&self, test: AbTestRecord) -> StoreFuture<'_, ()>;
    /// Deletes a segment or a test; false if there was none.
    fn delete_saved(&self, app_key: &str, kind: SavedKind, id: &str) -> StoreFuture<'_, bool>;
    fn get_segment(&self, app_key: &str, id: &str) -> StoreFuture<'_, Option<SegmentRecord>>;
    fn get_abtest(&self, app_key: &str, id: &str) -> StoreFuture<'_, Option<AbTestRecord>>;
    /// An app's segments, oldest first.
    fn list_segments(&self, app_key: &str) -> StoreFuture<'_, Vec<SegmentRecord>>;
    /// An app's A/B tests, oldest first.
    fn list_abtests(&self, app_key: &str) -> StoreFuture<'_, Vec<AbTestRecord>>;
    /// The msg_ids of the pushes of a test (stored by `insert_push` from the push's `split`,
    /// in the push's own transaction), oldest first.
    fn abtest_pushes(&self, app_key: &str, abtest_id: &str) -> StoreFuture<'_, Vec<u64>>;
}

/// Every port at once: what the engine is given. Writes resolve once they are durable.
pub trait Storage:
    AppStore
    + DeviceStore
    + CidStore
    + PushStore
    + CredentialStore
    + ScheduleStore
    + OutboxStore
    + FileStore
    + SmsStore
    + FeedStore
    + LeaseStore
    + PresenceStore
    + GeofenceStore
    + SavedAudienceStore
{
    /// Waits until everything written so far is durable, then stops the writer (later
    /// writes fail with [`StoreError::Closed`]) and leaves the files compact (SQLite: the
    /// WAL copied into the database and truncated).
    fn close(&self) -> StoreFuture<'_, ()>;
}
