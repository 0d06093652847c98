//! The embedded store: SQLite in WAL mode behind one group-committing writer thread.

use crate::ports::*;
use crate::sealed::SealingKey;
use crate::{
    batch_events_json, decode_vendor_sets, encode_vendor_sets, AbTestRecord, AppRecord,
    AppSettings, CallbackBatch, CallbackEndpoint, CallbackFormat, Change, Checkpoint, DeviceEvent,
    DeviceRecord, FenceState, FileRecord, GeofenceRecord, GroupRecord, Lease, Location, NewEvent,
    PushCounts, SavedKind, ScheduleRecord, ScheduleRun, SegmentRecord, SmsSend, StoreError,
    StoreFuture, StoreResult, StoredEvent, StoredPush, FENCE_STAY,
};
use pigeon_core::{Platform, Push, SmsFallback};
use roaring::RoaringBitmap;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 2048;
/// Writes that may wait for the writer before callers are made to wait (backpressure).
const QUEUE_DEPTH: usize = 8192;
/// How large the WAL may grow. SQLite only rewinds a WAL that was copied to its end, and a
/// checkpoint beside the writer never gets there while writes keep coming (at 10k pushes a
/// second the WAL grows ~70 MB a second), so the writer rewinds it itself (see
/// [`REWIND_AT`]). Past this size — a reader holding an old snapshot kept it from being
/// rewound — the checkpointer truncates it, holding writes back meanwhile, and a rewound
/// WAL is cut back to this size (`journal_size_limit`).
const WAL_LIMIT: u64 = 64 << 20;
/// WAL size after which the writer, between two batches, copies what the checkpointer has
/// not yet copied, so that its next transaction starts the WAL over. The checkpointer ran
/// at most [`CHECKPOINT_EVERY`] before, so that is little: a few ms once every few hundred
/// ms, where leaving the WAL to reach [`WAL_LIMIT`] held every write for ~100 ms a second
/// (measured: BENCHMARKS.md, "Performance round two").
const REWIND_AT: u64 = 16 << 20;
/// How often the checkpointer copies the WAL into the database. It never holds the writer
/// back; often, so that the rest the writer copies before a rewind stays small.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS apps (
    app_key TEXT PRIMARY KEY,
    master_secret TEXT NOT NULL,
    name TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    app_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    registration_id TEXT NOT NULL UNIQUE,
    install_id TEXT,
    secret_hash BLOB NOT NULL,
    platform TEXT NOT NULL,
    alias TEXT,
    tags TEXT NOT NULL,
    mobile TEXT,
    region TEXT,
    push_tokens TEXT NOT NULL,
    apns_production INTEGER NOT NULL,
    info TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (app_key, ordinal)
);
CREATE TABLE IF NOT EXISTS pushes (
    msg_id INTEGER PRIMARY KEY,
    app_key TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    audience BLOB NOT NULL
);
-- Who acked each push, as a roaring bitmap checkpointed every few hundred ms. A narrow table
-- of its own, so a checkpoint does not rewrite the push's body.
CREATE TABLE IF NOT EXISTS deliveries (
    msg_id INTEGER PRIMARY KEY,
    delivered BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS pushes_by_app_expiry ON pushes (app_key, expires_ms);
CREATE INDEX IF NOT EXISTS pushes_by_app_sent ON pushes (app_key, sent_ms);
CREATE TABLE IF NOT EXISTS device_events (
    id INTEGER PRIMARY KEY,
    app_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    kind TEXT NOT NULL,
    msg_id INTEGER,
    data TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS device_events_by_push ON device_events (msg_id, kind);
-- The latest position of each device that reported one: replaced, never appended, so a
-- device reporting often does not grow the database.
CREATE TABLE IF NOT EXISTS device_locations (
    app_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    accuracy_m REAL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (app_key, ordinal)
) WITHOUT ROWID;
-- Geofences: the record as JSON; a deleted fence keeps its row with no body, so the change
-- feed can tell the other nodes it is gone.
CREATE TABLE IF NOT EXISTS geofences (
    app_key TEXT NOT NULL,
    geofence_id TEXT NOT NULL,
    body TEXT,
    created_ms INTEGER NOT NULL,
    change_seq INTEGER NOT NULL,
    PRIMARY KEY (app_key, geofence_id)
);
CREATE INDEX IF NOT EXISTS geofences_by_change ON geofences (change_seq);
-- Segments and A/B tests: the record as JSON, a tombstone (no body) once deleted, as for
-- geofences.
CREATE TABLE IF NOT EXISTS saved_audiences (
    app_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    body TEXT,
    created_ms INTEGER NOT NULL,
    change_seq INTEGER NOT NULL,
    PRIMARY KEY (app_key, kind, id)
);
CREATE INDEX IF NOT EXISTS saved_audiences_by_change ON saved_audiences (change_seq);
-- The pushes of each A/B test, written with the push.
CREATE TABLE IF NOT EXISTS abtest_pushes (
    app_key TEXT NOT NULL,
    abtest_id TEXT NOT NULL,
    msg_id INTEGER NOT NULL,
    PRIMARY KEY (app_key, abtest_id, msg_id)
) WITHOUT ROWID;
-- Where each device stands with each fence: written only when that changes.
CREATE TABLE IF NOT EXISTS fence_states (
    app_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    geofence_id TEXT NOT NULL,
    inside INTEGER NOT NULL,
    entered_ms INTEGER NOT NULL,
    stay_due_ms INTEGER,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    fired INTEGER NOT NULL,
    last_enter_ms INTEGER NOT NULL,
    last_leave_ms INTEGER NOT NULL,
    last_stay_ms INTEGER NOT NULL,
    PRIMARY KEY (app_key, ordinal, geofence_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fence_states_by_due ON fence_states (stay_due_ms)
    WHERE stay_due_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS fence_states_by_fence ON fence_states (app_key, geofence_id);
CREATE TABLE IF NOT EXISTS device_seen (
    app_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (app_key, ordinal)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS callback_endpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    app_key TEXT NOT NULL,
    url TEXT NOT NULL,
    commands TEXT NOT NULL,
    basic_auth INTEGER NOT NULL,
    signing_secret TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    start_event_id INTEGER NOT NULL,
    push_level INTEGER NOT NULL DEFAULT 0,
    failing_since_ms INTEGER,
    disabled_ms INTEGER,
    format TEXT NOT NULL DEFAULT 'pigeon'
);
-- The outbox: events are written in the transaction of the change they report. The events
-- of one write for one target (the app's endpoints, or one push-level endpoint) and command
-- are rows of up to CHUNK_EVENTS events with the ids first_id..=last_id, one JSON object a
-- line: a broadcast's events are a few dozen rows, not one each.
CREATE TABLE IF NOT EXISTS callback_event_chunks (
    first_id INTEGER PRIMARY KEY,
    last_id INTEGER NOT NULL,
    app_key TEXT NOT NULL,
    endpoint_id INTEGER,
    command TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    bodies TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS callback_event_chunks_by_target
    ON callback_event_chunks (app_key, endpoint_id, command, last_id);
-- SMS fallback: a timer per push with sms_message, then the SMS it came to, one per device.
CREATE TABLE IF NOT EXISTS sms_jobs (
    msg_id INTEGER PRIMARY KEY,
    app_key TEXT NOT NULL,
    due_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sms_jobs_by_due ON sms_jobs (due_ms);
CREATE TABLE IF NOT EXISTS sms_sends (
    msg_id INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    app_key TEXT NOT NULL,
    registration_id TEXT NOT NULL,
    mobile TEXT NOT NULL,
    sms TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    PRIMARY KEY (msg_id, ordinal)
);
CREATE INDEX IF NOT EXISTS sms_sends_by_next ON sms_sends (next_ms);
-- Each app's Web Push (VAPID) key pair, base64url: made once, never changed.
CREATE TABLE IF NOT EXISTS app_vapid_keys (
    app_key TEXT PRIMARY KEY,
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL
);
-- Each app's credentials per push vendor, as JSON.
CREATE TABLE IF NOT EXISTS vendor_credentials (
    app_key TEXT NOT NULL,
    vendor TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (app_key, vendor)
);
-- The app-icon badge number the server keeps for each device that has one.
-- Devices an app's backend blocked (Getui's black list): no push of the app accepted while
-- they are blocked reaches them.
CREATE TABLE IF NOT EXISTS blocked_devices (
    app_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    PRIMARY KEY (app_key, ordinal)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_badges (
    app_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    badge INTEGER NOT NULL,
    PRIMARY KEY (app_key, ordinal)
);
-- The last event id handed out: ids are never used twice, even after their events are pruned.
CREATE TABLE IF NOT EXISTS callback_event_ids (last_id INTEGER NOT NULL);
INSERT INTO callback_event_ids (last_id)
    SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM callback_event_ids);
CREATE TABLE IF NOT EXISTS callback_cursors (
    endpoint_id INTEGER NOT NULL,
    command TEXT NOT NULL,
    last_event_id INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, command)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS callback_batches (
    delivery_id TEXT PRIMARY KEY,
    endpoint_id INTEGER NOT NULL,
    command TEXT NOT NULL,
    events TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    first_ms INTEGER NOT NULL,
    dead INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    first_event_id INTEGER NOT NULL DEFAULT 0,
    last_event_id INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS callback_batches_by_endpoint ON callback_batches (endpoint_id, first_ms);
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY,
    app_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    file_name TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    file_values TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS app_groups (
    group_key TEXT PRIMARY KEY,
    master_secret TEXT NOT NULL,
    name TEXT NOT NULL,
    app_keys TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS app_settings (
    app_key TEXT PRIMARY KEY,
    settings TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    schedule_id TEXT PRIMARY KEY,
    app_key TEXT NOT NULL,
    name TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    trigger TEXT NOT NULL,
    push TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    next_ms INTEGER,
    door TEXT NOT NULL DEFAULT 'jpush'
);
-- Each firing of a schedule: the push it made, or why it made none.
CREATE TABLE IF NOT EXISTS schedule_runs (
    id INTEGER PRIMARY KEY,
    schedule_id TEXT NOT NULL,
    msg_id INTEGER,
    error_code INTEGER NOT NULL,
    error_message TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS schedule_runs_by_schedule ON schedule_runs (schedule_id, id);
-- cids handed out from an app's pool, and the push each one produced (NULL until used).
CREATE TABLE IF NOT EXISTS cids (
    app_key TEXT NOT NULL,
    cid TEXT NOT NULL,
    issued_ms INTEGER NOT NULL,
    msg_id INTEGER,
    PRIMARY KEY (app_key, cid)
) WITHOUT ROWID;
-- Counters of ids handed out in blocks (`ordinals:<app_key>`, `msg_ids`).
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    next INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS presence (
    app_key TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (app_key, ordinal)
) WITHOUT ROWID;
";

/// How hard SQLite works to make a commit survive: `Full` survives power loss, `Normal`
/// survives a crash of the process (WAL), and is much cheaper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    Normal,
    Full,
}

type AfterCommit = Box<dyn FnOnce(Result<(), String>) + Send>;
type Job = Box<dyn FnOnce(&Connection) -> AfterCommit + Send>;

/// What the writer thread is asked to do.
enum Msg {
    /// A write, for the next group commit.
    Job(Job),
    /// Commit what came before, truncate the WAL, stop; answered when done.
    Close(oneshot::Sender<()>),
}

/// The embedded SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    jobs: mpsc::Sender<Msg>,
    readers: parking::Pool,
    /// Seals vendor credentials and VAPID private keys before they are written.
    key: SealingKey,
    /// The last change number given (the feed's position): taken inside writes, which the
    /// one writer runs in order, so numbers are committed in order.
    feed: Arc<AtomicU64>,
}

mod parking {
    //! A tiny pool of read connections, used from blocking threads only.
    use rusqlite::Connection;
    use std::sync::Mutex;

    pub struct Pool(pub Mutex<Vec<Connection>>);

    impl Pool {
        pub fn take(&self) -> Option<Connection> {
            self.0.lock().ok()?.pop()
        }
        pub fn give(&self, c: Connection) {
            if let Ok(mut v) = self.0.lock() {
                if v.len() < 4 {
                    v.push(c);
                }
            }
        }
    }
}

fn open_connection(path: &Path, sync: Synchronous) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "journal_size_limit", WAL_LIMIT as i64)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and starts its writer thread.
    /// Must be called within a tokio runtime.
    pub fn open(path: impl AsRef<Path>, sync: Synchronous) -> StoreResult<SqliteStore> {
        Self::open_upgrading(path, sync, None)
    }

    /// [`SqliteStore::open`], rewriting pushes stored by an older Pigeon in today's model
    /// with `upgrader`. Without one, such a database is refused.
    pub fn open_upgrading(
        path: impl AsRef<Path>,
        sync: Synchronous,
        upgrader: Option<&dyn PushUpgrader>,
    ) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let conn = open_connection(&path, sync)?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        upgrade_pushes(&conn, upgrader)?;
        let key = SealingKey::load_or_create(path.parent().unwrap_or(Path::new(".")))?;
        seal_plain_secrets(&conn, &key)?;
        let feed = Arc::new(AtomicU64::new(last_change(&conn)?));
        // Checkpoints copy the WAL into the database; done inside a commit they stall every
        // write behind it, so a thread of its own does them, and the writer only copies the
        // little left when the WAL is to be rewound (`REWIND_AT`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // The checkpointer may hold writes back while it truncates an overgrown WAL; the
        // writer waits for it rather than fail a whole batch (it is a thread of its own:
        // waiting blocks no async task, callers just wait for their commit).
        conn.busy_handler(Some(writer_waits))?;
        let page_size: u64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let rewind = Arc::new(AtomicBool::new(false));
        let (jobs, rx) = mpsc::channel::<Msg>(QUEUE_DEPTH);
        let writer_rewind = rewind.clone();
        std::thread::Builder::new()
            .name("pigeon-sqlite-writer".into())
            .spawn(move || run_writer(conn, rx, &writer_rewind))?;
        let checkpointer = Checkpointer {
            conn: open_connection(&path, sync)?,
            wal: wal_path(&path),
            page_size,
            rewind,
        };
        let alive = jobs.downgrade();
        std::thread::Builder::new()
            .name("pigeon-sqlite-checkpoint".into())
            .spawn(move || checkpointer.run(alive))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                jobs,
                readers: parking::Pool(std::sync::Mutex::new(Vec::new())),
                key,
                feed,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` inside the next group commit; resolves with its result once durable.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |conn: &Connection| {
            let result = in_savepoint(conn, f);
            Box::new(move |commit: Result<(), String>| {
                let answer = match commit {
                    Ok(()) => result,
                    Err(e) => Err(StoreError::Corrupt(format!("commit failed: {e}"))),
                };
                let _ = tx.send(answer);
            })
        });
        self.inner
            .jobs
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match inner.readers.take() {
                Some(c) => c,
                None => {
                    let c = Connection::open(&inner.path)?;
                    c.busy_timeout(Duration::from_secs(10))?;
                    c
                }
            };
            let out = f(&conn);
            inner.readers.give(conn);
            out
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// Reads pushes in the form an older Pigeon stored them (a dialect's JSON, before Pigeon had a
/// model of its own). The store cannot read that form itself; the front door whose names it
/// used can.
pub trait PushUpgrader {
    /// An old push body as today's push.
    fn push(&self, old: &Value) -> Result<Push, String>;
    /// An old pending SMS (the push's `sms_message` then) as today's fallback.
    fn sms(&self, old: &Value) -> Result<SmsFallback, String>;
}

/// Rewrites the pushes and pending SMS stored in the old form, in one transaction.
fn upgrade_pushes(conn: &Connection, upgrader: Option<&dyn PushUpgrader>) -> StoreResult<()> {
    let old_pushes: Vec<(i64, String)> = conn
        .prepare("SELECT msg_id, body FROM pushes WHERE json_extract(body, '$.policy') IS NULL")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let old_sms: Vec<(i64, u32, String)> = conn
        .prepare(
            "SELECT msg_id, ordinal, sms FROM sms_sends
             WHERE json_extract(sms, '$.delay_time') IS NOT NULL",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    if old_pushes.is_empty() && old_sms.is_empty() {
        return Ok(());
    }
    let Some(upgrader) = upgrader else {
        return Err(StoreError::Corrupt(format!(
            "{} pushes are stored in an older form: open the database with the pigeon binary, \
             which upgrades them",
            old_pushes.len()
        )));
    };
    let tx = conn.unchecked_transaction()?;
    for (msg_id, body) in &old_pushes {
        let old: Value = serde_json::from_str(body)
            .map_err(|e| StoreError::Corrupt(format!("push {msg_id}: {e}")))?;
        let push = upgrader
            .push(&old)
            .map_err(|e| StoreError::Corrupt(format!("upgrading push {msg_id}: {e}")))?;
        let body = serde_json::to_string(&push)
            .map_err(|e| StoreError::Corrupt(format!("push {msg_id}: {e}")))?;
        tx.execute(
            "UPDATE pushes SET body = ?2 WHERE msg_id = ?1",
            params![msg_id, body],
        )?;
    }
    for (msg_id, ordinal, sms) in &old_sms {
        let old: Value = serde_json::from_str(sms)
            .map_err(|e| StoreError::Corrupt(format!("SMS of push {msg_id}: {e}")))?;
        let sms = upgrader
            .sms(&old)
            .and_then(|s| serde_json::to_string(&s).map_err(|e| e.to_string()))
            .map_err(|e| StoreError::Corrupt(format!("upgrading SMS of push {msg_id}: {e}")))?;
        tx.execute(
            "UPDATE sms_sends SET sms = ?3 WHERE msg_id = ?1 AND ordinal = ?2",
            params![msg_id, ordinal, sms],
        )?;
    }
    tx.commit()?;
    tracing::info!(
        pushes = old_pushes.len(),
        sms = old_sms.len(),
        "upgraded pushes stored by an older Pigeon"
    );
    Ok(())
}

/// Brings a database made by an older Pigeon up to the current schema.
/// Seals the secrets written before sealing existed (credentials, VAPID private keys).
fn seal_plain_secrets(conn: &Connection, key: &SealingKey) -> StoreResult<()> {
    let plain: Vec<(String, String, String)> = conn
        .prepare("SELECT app_key, vendor, body FROM vendor_credentials")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<(String, String, String)>, _>>()?
        .into_iter()
        .filter(|(_, _, body)| !SealingKey::is_sealed(body))
        .collect();
    for (app_key, vendor, body) in plain {
        conn.execute(
            "UPDATE vendor_credentials SET body = ?3 WHERE app_key = ?1 AND vendor = ?2",
            params![app_key, vendor, key.seal(&body)],
        )?;
    }
    let plain: Vec<(String, String)> = conn
        .prepare("SELECT app_key, private_key FROM app_vapid_keys")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<(String, String)>, _>>()?
        .into_iter()
        .filter(|(_, private)| !SealingKey::is_sealed(private))
        .collect();
    for (app_key, private) in plain {
        conn.execute(
            "UPDATE app_vapid_keys SET private_key = ?2 WHERE app_key = ?1",
            params![app_key, key.seal(&private)],
        )?;
    }
    Ok(())
}

fn migrate(conn: &Connection) -> StoreResult<()> {
    // Each column added since the first release, with the statements that add it.
    let added: [(&str, &str, &str); 13] = [
        (
            "devices",
            "change_seq",
            "ALTER TABLE devices ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
             CREATE INDEX devices_by_change ON devices (change_seq);",
        ),
        (
            "pushes",
            "change_seq",
            "ALTER TABLE pushes ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
             CREATE INDEX pushes_by_change ON pushes (change_seq);",
        ),
        (
            "devices",
            "region",
            "ALTER TABLE devices ADD COLUMN region TEXT",
        ),
        (
            "deliveries",
            "sent",
            "ALTER TABLE deliveries ADD COLUMN sent BLOB",
        ),
        (
            "deliveries",
            "vendors",
            "ALTER TABLE deliveries ADD COLUMN vendors BLOB",
        ),
        (
            "pushes",
            "expiry_reported",
            "ALTER TABLE pushes ADD COLUMN expiry_reported INTEGER NOT NULL DEFAULT 0",
        ),
        (
            "pushes",
            "recalled_ms",
            "ALTER TABLE pushes ADD COLUMN recalled_ms INTEGER",
        ),
        (
            "pushes",
            "overridden_by",
            "ALTER TABLE pushes ADD COLUMN overridden_by INTEGER",
        ),
        (
            "callback_endpoints",
            "push_level",
            "ALTER TABLE callback_endpoints ADD COLUMN push_level INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE callback_endpoints ADD COLUMN failing_since_ms INTEGER;
             ALTER TABLE callback_endpoints ADD COLUMN disabled_ms INTEGER;",
        ),
        (
            "callback_events",
            "endpoint_id",
            "ALTER TABLE callback_events ADD COLUMN endpoint_id INTEGER;",
        ),
        (
            "callback_batches",
            "first_event_id",
            "ALTER TABLE callback_batches ADD COLUMN first_event_id INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE callback_batches ADD COLUMN last_event_id INTEGER NOT NULL DEFAULT 0;",
        ),
        (
            "schedules",
            "door",
            "ALTER TABLE schedules ADD COLUMN door TEXT NOT NULL DEFAULT 'jpush';",
        ),
        (
            "callback_endpoints",
            "format",
            // Endpoints from before formats keep Pigeon's.
            "ALTER TABLE callback_endpoints ADD COLUMN format TEXT NOT NULL DEFAULT 'pigeon';",
        ),
    ];
    let exists = |table: &str| -> rusqlite::Result<bool> {
        conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
            .exists([table])
    };
    for (table, column, add) in added {
        let present = conn
            .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
            .exists([table, column])?;
        if !present && exists(table)? {
            conn.execute_batch(add)?;
        }
    }
    // Locations were once a row per report in device_events: each device's latest becomes
    // its one row, the rest go. (`msg_id IS NULL AND kind = ...` is a seek on the
    // (msg_id, kind) index, so a database without such rows pays nothing at open.)
    let old_locations = conn
        .prepare("SELECT 1 FROM device_events WHERE msg_id IS NULL AND kind = 'location' LIMIT 1")?
        .exists([])?;
    if old_locations {
        conn.execute_batch(
            "BEGIN;
             INSERT OR IGNORE INTO device_locations (app_key, ordinal, lat, lon, accuracy_m, at_ms)
                 SELECT app_key, ordinal, json_extract(data, '$.lat'),
                        json_extract(data, '$.lon'), json_extract(data, '$.accuracy_m'), at_ms
                 FROM device_events
                 WHERE id IN (SELECT MAX(id) FROM device_events
                              WHERE msg_id IS NULL AND kind = 'location'
                              GROUP BY app_key, ordinal)
                   AND json_type(data, '$.lat') IN ('real', 'integer')
                   AND json_type(data, '$.lon') IN ('real', 'integer');
             DELETE FROM device_events WHERE msg_id IS NULL AND kind = 'location';
             COMMIT;",
        )?;
    }
    // The outbox of an event a row: each event becomes a chunk of one, same id, and the
    // ids go on after the last one handed out.
    if exists("callback_events")? {
        conn.execute_batch(
            "BEGIN;
             INSERT INTO callback_event_chunks
                 (first_id, last_id, app_key, endpoint_id, command, at_ms, bodies)
                 SELECT id, id, app_key, endpoint_id, command, at_ms, body FROM callback_events;
             UPDATE callback_event_ids SET last_id = MAX(last_id,
                 (SELECT COALESCE(MAX(id), 0) FROM callback_events),
                 (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence
                     WHERE name = 'callback_events'));
             DROP TABLE callback_events;
             COMMIT;",
        )?;
    }
    Ok(())
}

fn deserialize_bitmap(blob: Option<Vec<u8>>, what: &str) -> StoreResult<RoaringBitmap> {
    match blob {
        None => Ok(RoaringBitmap::new()),
        Some(b) => RoaringBitmap::deserialize_from(&b[..])
            .map_err(|e| StoreError::Corrupt(format!("{what}: {e}"))),
    }
}

/// A push row: `msg_id, body, audience, sent, delivered`.
/// A push's counts from `msg_id, sent_ms, group, audience, sent, delivered, clicks`.
fn push_counts_from_row(r: &rusqlite::Row<'_>) -> StoreResult<PushCounts> {
    let msg_id = to_u64(r.get(0)?);
    let what = |part: &str| format!("push {msg_id} {part}");
    Ok(PushCounts {
        msg_id,
        sent_ms: to_u64(r.get(1)?),
        group: r.get(2)?,
        targets: deserialize_bitmap(Some(r.get(3)?), &what("audience"))?.len(),
        sent: deserialize_bitmap(r.get(4)?, &what("sent"))?.len(),
        delivered: deserialize_bitmap(r.get(5)?, &what("delivered"))?.len(),
        clicked: to_u64(r.get(6)?),
    })
}

fn stored_push_from_row(r: &rusqlite::Row<'_>) -> StoreResult<StoredPush> {
    let msg_id: i64 = r.get(0)?;
    let body: String = r.get(1)?;
    let push: Push = serde_json::from_str(&body)
        .map_err(|e| StoreError::Corrupt(format!("push {msg_id}: {e}")))?;
    Ok(StoredPush {
        push,
        audience: deserialize_bitmap(Some(r.get(2)?), &format!("push {msg_id} audience"))?,
        sent: deserialize_bitmap(r.get(3)?, &format!("push {msg_id} sent"))?,
        delivered: deserialize_bitmap(r.get(4)?, &format!("push {msg_id} delivered"))?,
        vendors: match r.get::<_, Option<Vec<u8>>>(5)? {
            Some(b) => Some(
                decode_vendor_sets(&b)
                    .ok_or_else(|| StoreError::Corrupt(format!("push {msg_id} vendors")))?,
            ),
            None => None,
        },
    })
}

/// Runs one job in a savepoint so that a failing job leaves the rest of its batch intact.
fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let result = f(conn);
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    result
}

/// The `-wal` file next to a database.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The thread that copies the WAL into the database while the store is open.
struct Checkpointer {
    conn: Connection,
    wal: PathBuf,
    page_size: u64,
    /// Set when the WAL is past [`REWIND_AT`]: the writer rewinds it after its next batch.
    rewind: Arc<AtomicBool>,
}

impl Checkpointer {
    fn run(self, alive: mpsc::WeakSender<Msg>) {
        while alive.upgrade().is_some_and(|s| !s.is_closed()) {
            std::thread::sleep(CHECKPOINT_EVERY);
            match bound_wal(&self.conn, &self.wal, WAL_LIMIT) {
                Ok(frames) if frames.saturating_mul(self.page_size) > REWIND_AT => {
                    self.rewind.store(true, Ordering::Release)
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
    }
}

/// One checkpoint: PASSIVE (it never holds the writer back) while the WAL file is within
/// `limit`, TRUNCATE once it is larger: that one waits for the writer between two commits,
/// holds writes back while it copies the rest, and empties the file. The frames in the WAL.
fn bound_wal(conn: &Connection, wal: &Path, limit: u64) -> rusqlite::Result<u64> {
    let size = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
    let frames = |r: &rusqlite::Row<'_>| r.get::<_, i64>(1).map(|n| n.max(0) as u64);
    if size > limit {
        tracing::info!(bytes = size, "WAL over its limit: truncating it");
        checkpoint_truncate(conn, Duration::from_secs(1)).map(|(_, log, _)| log.max(0) as u64)
    } else {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], frames)
    }
}

/// `PRAGMA wal_checkpoint(TRUNCATE)`, tried again for up to `patience` while another
/// connection's checkpoint holds the checkpoint lock (the checkpointer's pass, the writer's
/// rewind): for that lock SQLite answers busy at once, without calling the busy handler.
/// The checkpoint's row: (busy, frames in the WAL, frames copied).
fn checkpoint_truncate(conn: &Connection, patience: Duration) -> rusqlite::Result<(i64, i64, i64)> {
    let start = std::time::Instant::now();
    loop {
        let row = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        if row.0 == 0 || start.elapsed() >= patience {
            return Ok(row);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The writer's busy handler: waits for the checkpointer's rare TRUNCATE in steps of 100 µs
/// at first, then of 1 ms, up to 120 s. (SQLite's own timeout sleeps 1, 2, 5, 10, ... 100 ms,
/// so a lock held for 80 ms cost the writer 103.)
fn writer_waits(attempt: i32) -> bool {
    match writer_wait_step(attempt) {
        Some(step) => {
            std::thread::sleep(step);
            true
        }
        None => false,
    }
}

/// How long the writer's busy handler sleeps before its `attempt`-th try again; `None` once
/// it gives up.
fn writer_wait_step(attempt: i32) -> Option<Duration> {
    const FINE: i32 = 100;
    match attempt {
        0..FINE => Some(Duration::from_micros(100)),
        FINE..120_100 => Some(Duration::from_millis(1)),
        _ => None,
    }
}

/// Copies into the database what the checkpointer has not yet copied, between two batches,
/// so that the next transaction starts the WAL over (SQLite rewinds a WAL copied to its
/// end). No other connection writes, so only a reader of an older snapshot can keep it
/// from the end; then the WAL grows on and is tried again on the checkpointer's next pass.
fn rewind_wal(conn: &Connection) {
    let copied = conn
        .prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
        .and_then(|mut st| st.query_row([], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))));
    match copied {
        Ok((frames, done)) if frames != done => {
            tracing::debug!(
                frames,
                done,
                "WAL not rewound: a reader holds an older snapshot"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "WAL checkpoint before a rewind failed"),
    }
}

/// Copies the whole WAL into the database and truncates it to nothing, waiting (busy
/// timeout) for readers of older snapshots; at close, after the last commit.
fn truncate_wal(conn: &Connection) {
    // Not the writer's long wait: beside a running server (`pigeon app create`) the server
    // keeps its own WAL bounded, and a command should not hang on it; at the server's own
    // shutdown this only waits for its checkpointer thread's last pass.
    let _ = conn.busy_timeout(Duration::from_secs(5));
    match checkpoint_truncate(conn, Duration::from_secs(5)) {
        Ok((0, _, _)) => {}
        // Everything is committed all the same; the WAL is only left longer.
        Ok((_, log, copied)) => tracing::warn!(
            log,
            copied,
            "could not truncate the WAL at close: another connection is reading"
        ),
        Err(e) => tracing::warn!(error = %e, "could not truncate the WAL at close"),
    }
}

fn run_writer(conn: Connection, mut rx: mpsc::Receiver<Msg>, rewind: &AtomicBool) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut after: Vec<AfterCommit> = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while let Some(first) = rx.blocking_recv() {
        match first {
            Msg::Job(job) => batch.push(job),
            Msg::Close(done) => closing = Some(done),
        }
        while closing.is_none() && batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => batch.push(job),
                Ok(Msg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            commit(&conn, &mut batch, &mut after);
        }
        if rewind.swap(false, Ordering::Acquire) {
            rewind_wal(&conn);
        }
        if let Some(done) = closing {
            // Writes queued after the close are dropped with the receiver: their callers
            // get `StoreError::Closed`, nothing is half done.
            truncate_wal(&conn);
            let _ = done.send(());
            return;
        }
    }
    // Every sender is gone: the channel is drained and everything is committed.
    truncate_wal(&conn);
}

/// Runs a batch of jobs in one transaction and tells each caller how it went.
fn commit(conn: &Connection, batch: &mut Vec<Job>, after: &mut Vec<AfterCommit>) {
    let started = std::time::Instant::now();
    let jobs = batch.len();
    let began = conn.execute_batch("BEGIN IMMEDIATE");
    if let Err(e) = began {
        tracing::error!(error = %e, "storage: cannot begin a transaction");
        batch.clear();
        return;
    }
    for job in batch.drain(..) {
        after.push(job(conn));
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
    if let Err(e) = &committed {
        tracing::error!(error = %e, "storage: commit failed");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for done in after.drain(..) {
        done(committed.clone());
    }
    let took = started.elapsed();
    pigeon_telemetry::storage_commit(took);
    if took > Duration::from_millis(100) {
        tracing::warn!(jobs, ms = took.as_millis() as u64, "slow storage batch");
    }
}

const BATCH_COLUMNS: &str = "delivery_id, endpoint_id, command, events, attempts, next_ms, \
    first_ms, dead, last_error, first_event_id, last_event_id";

fn batch_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallbackBatch> {
    Ok(CallbackBatch {
        delivery_id: r.get(0)?,
        endpoint_id: to_u64(r.get(1)?),
        command: r.get(2)?,
        events: r.get(3)?,
        attempts: r.get(4)?,
        next_ms: to_u64(r.get(5)?),
        first_ms: to_u64(r.get(6)?),
        dead: r.get(7)?,
        last_error: r.get(8)?,
        first_event_id: to_u64(r.get(9)?),
        last_event_id: to_u64(r.get(10)?),
    })
}

/// The events a stored batch refers to, read back from the outbox as they were sent.
fn referenced_events(c: &Connection, b: &CallbackBatch) -> StoreResult<String> {
    let (app_key, push_level): (String, bool) = c
        .prepare_cached("SELECT app_key, push_level FROM callback_endpoints WHERE id = ?1")?
        .query_row([to_i64(b.endpoint_id)], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let target = push_level.then_some(b.endpoint_id);
    let events = outbox_events(
        c,
        (&app_key, target, &b.command),
        b.first_event_id,
        b.last_event_id,
        usize::MAX,
    )?;
    if events.is_empty() {
        return Err(StoreError::Corrupt(format!(
            "callback batch {}: its events {}..={} are gone from the outbox",
            b.delivery_id, b.first_event_id, b.last_event_id
        )));
    }
    Ok(batch_events_json(&events))
}

/// Gives the waiting batches of an endpoint that refer to outbox events (all of them, or
/// one) a copy of their events, so that they outlive the outbox: done as they die.
fn hold_events(c: &Connection, endpoint_id: u64, delivery_id: Option<&str>) -> StoreResult<()> {
    let mut batches = Vec::new();
    {
        let mut st = c.prepare_cached(&format!(
            "SELECT {BATCH_COLUMNS} FROM callback_batches
             WHERE endpoint_id = ?1 AND events = '' AND (?2 IS NULL OR delivery_id = ?2)"
        ))?;
        let mut rows = st.query(params![to_i64(endpoint_id), delivery_id])?;
        while let Some(r) = rows.next()? {
            batches.push(batch_from_row(r)?);
        }
    }
    let mut update = c.prepare_cached(
        "UPDATE callback_batches SET events = ?2, first_event_id = 0, last_event_id = 0
         WHERE delivery_id = ?1",
    )?;
    for b in batches {
        update.execute(params![b.delivery_id, referenced_events(c, &b)?])?;
    }
    Ok(())
}

/// The commands of callbacks.md §3, for pruning the outbox command by command.
const CALLBACK_COMMANDS: [&str; 6] = [
    "Push.Accepted",
    "Push.Event",
    "Push.Undelivered",
    "Device.OnlineStatus",
    "Geofence.Event",
    "Sms.Result",
];

const ENDPOINT_COLUMNS: &str = "id, app_key, url, commands, basic_auth, signing_secret, \
    created_ms, start_event_id, push_level, failing_since_ms, disabled_ms, format";

/// Stores a new endpoint; returns its id.
fn insert_endpoint(c: &Connection, e: &CallbackEndpoint) -> StoreResult<u64> {
    let commands =
        serde_json::to_string(&e.commands).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    c.execute(
        "INSERT INTO callback_endpoints (app_key, url, commands, basic_auth, signing_secret,
            created_ms, start_event_id, push_level, format)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            e.app_key,
            e.url,
            commands,
            e.basic_auth,
            e.signing_secret,
            to_i64(e.created_ms),
            to_i64(e.start_event_id),
            e.push_level,
            e.format.as_str()
        ],
    )?;
    Ok(to_u64(c.last_insert_rowid()))
}

/// A row of [`ENDPOINT_COLUMNS`]; the inner result is a corrupt command list or format.
fn endpoint_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoreResult<CallbackEndpoint>> {
    let commands: String = r.get(3)?;
    let commands = match serde_json::from_str(&commands) {
        Ok(c) => c,
        Err(e) => return Ok(Err(StoreError::Corrupt(format!("callback commands: {e}")))),
    };
    let format: String = r.get(11)?;
    let Some(format) = CallbackFormat::parse(&format) else {
        return Ok(Err(StoreError::Corrupt(format!(
            "callback format {format:?}"
        ))));
    };
    Ok(Ok(CallbackEndpoint {
        id: to_u64(r.get(0)?),
        app_key: r.get(1)?,
        url: r.get(2)?,
        commands,
        basic_auth: r.get(4)?,
        signing_secret: r.get(5)?,
        created_ms: to_u64(r.get(6)?),
        start_event_id: to_u64(r.get(7)?),
        push_level: r.get(8)?,
        failing_since_ms: r.get::<_, Option<i64>>(9)?.map(to_u64),
        disabled_ms: r.get::<_, Option<i64>>(10)?.map(to_u64),
        format,
    }))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn app_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AppRecord> {
    Ok(AppRecord {
        app_key: r.get(0)?,
        master_secret: r.get(1)?,
        name: r.get(2)?,
        created_ms: to_u64(r.get(3)?),
    })
}

fn device_from_row(app_key: &Arc<str>, r: &rusqlite::Row<'_>) -> StoreResult<DeviceRecord> {
    device_from_row_at(app_key, r, 0)
}

/// A device from a row whose device columns start at column `at`.
fn device_from_row_at(
    app_key: &Arc<str>,
    r: &rusqlite::Row<'_>,
    at: usize,
) -> StoreResult<DeviceRecord> {
    let platform: String = r.get(at + 4)?;
    let tags: String = r.get(at + 6)?;
    let tokens: String = r.get(at + 8)?;
    let info: String = r.get(at + 10)?;
    Ok(DeviceRecord {
        app_key: app_key.clone(),
        ordinal: r.get(at)?,
        registration_id: r.get(at + 1)?,
        install_id: r.get(at + 2)?,
        secret_hash: r.get(at + 3)?,
        platform: Platform::parse(&platform)
            .ok_or_else(|| StoreError::Corrupt(format!("device platform {platform:?}")))?,
        alias: r.get(at + 5)?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| StoreError::Corrupt(format!("device tags: {e}")))?,
        mobile: r.get(at + 7)?,
        push_tokens: json_map(&tokens, "device push_tokens")?,
        apns_production: r.get(at + 9)?,
        info: json_map(&info, "device info")?,
        created_ms: to_u64(r.get(at + 11)?),
        updated_ms: to_u64(r.get(at + 12)?),
        region: r.get(at + 13)?,
    })
}

/// Appends events to the outbox, in the caller's transaction.
/// Drops a push's SMS fallback that has not gone out: its timer and its unsent SMS.
fn drop_sms(c: &Connection, msg_id: u64) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM sms_jobs WHERE msg_id = ?1")?
        .execute([to_i64(msg_id)])?;
    c.prepare_cached("DELETE FROM sms_sends WHERE msg_id = ?1")?
        .execute([to_i64(msg_id)])?;
    Ok(())
}

/// Most events in one outbox row: a reader of a few events reads at most this many.
const CHUNK_EVENTS: usize = 500;

/// Appends events to the outbox, in the caller's transaction: grouped by target and command
/// (in their order within each), each group's events numbered on from the last id.
fn write_events(c: &Connection, events: &[NewEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut groups: Vec<(&str, Option<u64>, &str, Vec<&NewEvent>)> = Vec::new();
    for e in events {
        let key = (e.app_key.as_str(), e.endpoint_id, e.command.as_str());
        match groups.iter_mut().find(|g| (g.0, g.1, g.2) == key) {
            Some(g) => g.3.push(e),
            None => groups.push((key.0, key.1, key.2, vec![e])),
        }
    }
    let mut next: u64 =
        to_u64(c.query_row("SELECT last_id FROM callback_event_ids", [], |r| r.get(0))?) + 1;
    let mut insert = c.prepare_cached(
        "INSERT INTO callback_event_chunks
             (first_id, last_id, app_key, endpoint_id, command, at_ms, bodies)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (app_key, endpoint_id, command, group) in groups {
        for chunk in group.chunks(CHUNK_EVENTS) {
            let mut bodies = String::with_capacity(chunk.iter().map(|e| e.body.len() + 1).sum());
            for (i, e) in chunk.iter().enumerate() {
                if i > 0 {
                    bodies.push('\n');
                }
                // A JSON text has no raw line break, so a line is an event.
                bodies.push_str(e.body.trim());
            }
            let at_ms = chunk.iter().map(|e| e.at_ms).min().unwrap_or(0);
            let last = next + chunk.len() as u64 - 1;
            insert.execute(params![
                to_i64(next),
                to_i64(last),
                app_key,
                endpoint_id.map(to_i64),
                command,
                to_i64(at_ms),
                bodies
            ])?;
            next = last + 1;
        }
    }
    c.prepare_cached("UPDATE callback_event_ids SET last_id = ?1")?
        .execute([to_i64(next - 1)])?;
    Ok(())
}

/// The outbox events of one target and command with ids `from..=to`, oldest first, at most
/// `limit`.
fn outbox_events(
    c: &Connection,
    (app_key, endpoint_id, command): (&str, Option<u64>, &str),
    from: u64,
    to: u64,
    limit: usize,
) -> StoreResult<Vec<StoredEvent>> {
    let mut st = c.prepare_cached(
        "SELECT first_id, at_ms, bodies FROM callback_event_chunks
         WHERE app_key = ?1 AND endpoint_id IS ?2 AND command = ?3
             AND last_id >= ?4 AND first_id <= ?5
         ORDER BY last_id",
    )?;
    let mut rows = st.query(params![
        app_key,
        endpoint_id.map(to_i64),
        command,
        to_i64(from),
        to_i64(to)
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let (first, at_ms) = (to_u64(r.get(0)?), to_u64(r.get(1)?));
        let bodies = r
            .get_ref(2)?
            .as_str()
            .map_err(|e| StoreError::Corrupt(format!("outbox chunk {first}: {e}")))?;
        for (id, body) in (first..).zip(bodies.split('\n')) {
            if id < from || id > to {
                continue;
            }
            if out.len() >= limit {
                return Ok(out);
            }
            out.push(StoredEvent {
                id,
                command: command.to_string(),
                body: body.to_string(),
                at_ms,
            });
        }
    }
    Ok(out)
}

/// The last event id handed out (0 before the first).
fn last_event_id(c: &Connection) -> StoreResult<u64> {
    Ok(to_u64(c.query_row(
        "SELECT last_id FROM callback_event_ids",
        [],
        |r| r.get(0),
    )?))
}

/// Records a firing and moves the schedule to its next one, in the caller's transaction.
/// Records a firing of a schedule and moves it to `next_ms`. A push made by the firing for
/// `due` is recorded only while the schedule still waits for that time: a schedule deleted,
/// or already fired for it, makes the push's whole write fail (`Conflict`), so it never
/// goes out.
fn record_run(
    c: &Connection,
    schedule_id: &str,
    run: &ScheduleRun,
    (due, next_ms): (Option<u64>, Option<u64>),
) -> StoreResult<()> {
    if let Some(due) = due {
        let waiting = c
            .prepare_cached("SELECT 1 FROM schedules WHERE schedule_id = ?1 AND next_ms = ?2")?
            .exists(params![schedule_id, to_i64(due)])?;
        if !waiting {
            return Err(StoreError::Conflict(format!(
                "schedule {schedule_id} no longer waits for {due}"
            )));
        }
    }
    c.prepare_cached(
        "INSERT INTO schedule_runs (schedule_id, msg_id, error_code, error_message, at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        schedule_id,
        run.msg_id.map(to_i64),
        run.error_code,
        run.error_message,
        to_i64(run.at_ms)
    ])?;
    c.prepare_cached("UPDATE schedules SET next_ms = ?2 WHERE schedule_id = ?1")?
        .execute(params![schedule_id, next_ms.map(to_i64)])?;
    Ok(())
}

fn file_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    let values: String = r.get(6)?;
    Ok(FileRecord {
        file_id: r.get(0)?,
        app_key: r.get(1)?,
        kind: r.get(2)?,
        file_name: r.get(3)?,
        created_ms: to_u64(r.get(4)?),
        expires_ms: to_u64(r.get(5)?),
        values: if values.is_empty() {
            Vec::new()
        } else {
            values.split('\n').map(str::to_string).collect()
        },
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The next change number; called only inside writes (see `Inner::feed`).
fn next_change(feed: &AtomicU64) -> u64 {
    feed.fetch_add(1, Ordering::Relaxed) + 1
}

/// The highest change number stored.
fn last_change(c: &Connection) -> StoreResult<u64> {
    let last: i64 = c.query_row(
        "SELECT MAX(a, b, g, s) FROM
           (SELECT COALESCE(MAX(change_seq), 0) AS a FROM devices),
           (SELECT COALESCE(MAX(change_seq), 0) AS b FROM pushes),
           (SELECT COALESCE(MAX(change_seq), 0) AS g FROM geofences),
           (SELECT COALESCE(MAX(change_seq), 0) AS s FROM saved_audiences)",
        [],
        |r| r.get(0),
    )?;
    Ok(to_u64(last))
}

fn write_device(c: &Connection, d: DeviceRecord, change: u64) -> StoreResult<()> {
    let tags = serde_json::to_string(&d.tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    c.prepare_cached(
                "INSERT INTO devices (app_key, ordinal, registration_id, install_id, secret_hash,
                    platform, alias, tags, mobile, push_tokens, apns_production, info, created_ms, updated_ms,
                    region, change_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
                 ON CONFLICT (app_key, ordinal) DO UPDATE SET
                    registration_id = excluded.registration_id, install_id = excluded.install_id,
                    secret_hash = excluded.secret_hash, platform = excluded.platform,
                    alias = excluded.alias, tags = excluded.tags, mobile = excluded.mobile,
                    push_tokens = excluded.push_tokens, apns_production = excluded.apns_production,
                    info = excluded.info, updated_ms = excluded.updated_ms,
                    region = excluded.region, change_seq = excluded.change_seq",
            )?
            .execute(params![
                &*d.app_key,
                d.ordinal,
                d.registration_id,
                d.install_id,
                d.secret_hash,
                d.platform.as_str(),
                d.alias,
                tags,
                d.mobile,
                Value::Object(d.push_tokens).to_string(),
                d.apns_production,
                Value::Object(d.info).to_string(),
                to_i64(d.created_ms),
                to_i64(d.updated_ms),
                d.region,
                to_i64(change),
            ])?;
    Ok(())
}

fn json_map(text: &str, what: &str) -> StoreResult<Map<String, Value>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn serialize_bitmap(b: &RoaringBitmap) -> StoreResult<Vec<u8>> {
    let mut out = Vec::with_capacity(b.serialized_size());
    b.serialize_into(&mut out)?;
    Ok(out)
}

impl AppStore for SqliteStore {
    fn create_app(&self, app: AppRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            let n = c.execute(
                "INSERT INTO apps (app_key, master_secret, name, created_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (app_key) DO NOTHING",
                params![app.app_key, app.master_secret, app.name, to_i64(app.created_ms)],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("app_key {}", app.app_key)));
            }
            Ok(())
        }))
    }

    fn find_app(&self, app_key: &str) -> StoreFuture<'_, Option<AppRecord>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            Ok(c.query_row(
                "SELECT app_key, master_secret, name, created_ms FROM apps WHERE app_key = ?1",
                [app_key],
                app_from_row,
            )
            .optional()?)
        }))
    }

    fn list_apps(&self) -> StoreFuture<'_, Vec<AppRecord>> {
        Box::pin(self.read(|c| {
            let mut st = c.prepare(
                "SELECT app_key, master_secret, name, created_ms FROM apps ORDER BY created_ms, app_key",
            )?;
            let rows = st.query_map([], app_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn ensure_vapid_keys(
        &self,
        app_key: &str,
        private_key: String,
        public_key: String,
    ) -> StoreFuture<'_, String> {
        let app_key = app_key.to_string();
        let private_key = self.inner.key.seal(&private_key);
        Box::pin(self.write(move |c| {
            c.prepare_cached(
                "INSERT OR IGNORE INTO app_vapid_keys (app_key, private_key, public_key)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![app_key, private_key, public_key])?;
            Ok(
                c.prepare_cached("SELECT public_key FROM app_vapid_keys WHERE app_key = ?1")?
                    .query_row([&app_key], |r| r.get(0))?,
            )
        }))
    }

    fn vapid_keys(&self, app_key: &str) -> StoreFuture<'_, Option<(String, String)>> {
        let app_key = app_key.to_string();
        let key = self.inner.key.clone();
        Box::pin(self.read(move |c| {
            let stored: Option<(String, String)> = c
                .prepare_cached(
                    "SELECT private_key, public_key FROM app_vapid_keys WHERE app_key = ?1",
                )?
                .query_row([app_key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            stored
                .map(|(private, public)| Ok((key.open(&private)?, public)))
                .transpose()
        }))
    }

    fn create_group(&self, g: GroupRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            let keys = serde_json::to_string(&g.app_keys)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let n = c.execute(
                "INSERT INTO app_groups (group_key, master_secret, name, app_keys, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (group_key) DO NOTHING",
                params![
                    g.group_key,
                    g.master_secret,
                    g.name,
                    keys,
                    to_i64(g.created_ms)
                ],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("group_key {}", g.group_key)));
            }
            Ok(())
        }))
    }

    fn find_group(&self, group_key: &str) -> StoreFuture<'_, Option<GroupRecord>> {
        let group_key = group_key.to_string();
        Box::pin(self.read(move |c| {
            let row: Option<(String, String, String, String, i64)> = c
                .query_row(
                    "SELECT group_key, master_secret, name, app_keys, created_ms FROM app_groups
                     WHERE group_key = ?1",
                    [group_key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()?;
            row.map(|(group_key, master_secret, name, keys, created)| {
                Ok(GroupRecord {
                    group_key,
                    master_secret,
                    name,
                    app_keys: serde_json::from_str(&keys)
                        .map_err(|e| StoreError::Corrupt(format!("group app_keys: {e}")))?,
                    created_ms: to_u64(created),
                })
            })
            .transpose()
        }))
    }

    fn set_app_settings(&self, app_key: &str, settings: AppSettings) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        let text = serde_json::to_string(&settings);
        Box::pin(async move {
            let text = text.map_err(|e| StoreError::Corrupt(format!("app settings: {e}")))?;
            self.write(move |c| {
                c.execute(
                    "INSERT INTO app_settings (app_key, settings) VALUES (?1, ?2)
                     ON CONFLICT (app_key) DO UPDATE SET settings = excluded.settings",
                    params![app_key, text],
                )?;
                Ok(())
            })
            .await
        })
    }

    fn app_settings(&self) -> StoreFuture<'_, Vec<(String, AppSettings)>> {
        Box::pin(self.read(|c| {
            let mut st = c.prepare_cached("SELECT app_key, settings FROM app_settings")?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let key: String = r.get(0)?;
                let text: String = r.get(1)?;
                let settings = serde_json::from_str(&text)
                    .map_err(|e| StoreError::Corrupt(format!("settings of app {key}: {e}")))?;
                out.push((key, settings));
            }
            Ok(out)
        }))
    }
}

impl DeviceStore for SqliteStore {
    fn load_devices(&self, app_key: &str) -> mpsc::Receiver<StoreResult<Vec<DeviceRecord>>> {
        const CHUNK: usize = 4096;
        let (tx, rx) = mpsc::channel(2);
        let inner = self.inner.clone();
        let app_key = app_key.to_string();
        tokio::task::spawn_blocking(move || {
            let result = (|| -> StoreResult<()> {
                let conn = Connection::open(&inner.path)?;
                conn.busy_timeout(Duration::from_secs(10))?;
                let mut st = conn.prepare(
                    "SELECT ordinal, registration_id, install_id, secret_hash, platform, alias, tags,
                            mobile, push_tokens, apns_production, info, created_ms, updated_ms,
                            region
                     FROM devices WHERE app_key = ?1 ORDER BY ordinal",
                )?;
                let mut rows = st.query([&app_key])?;
                let shared_key: Arc<str> = Arc::from(app_key.as_str());
                let mut chunk = Vec::with_capacity(CHUNK);
                while let Some(r) = rows.next()? {
                    chunk.push(device_from_row(&shared_key, r)?);
                    if chunk.len() == CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        if tx.blocking_send(Ok(full)).is_err() {
                            return Ok(());
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(Ok(chunk));
                }
                Ok(())
            })();
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }

    fn find_device(&self, registration_id: &str) -> StoreFuture<'_, Option<DeviceRecord>> {
        let rid = registration_id.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT app_key, ordinal, registration_id, install_id, secret_hash, platform,
                        alias, tags, mobile, push_tokens, apns_production, info, created_ms,
                        updated_ms, region
                 FROM devices WHERE registration_id = ?1",
            )?;
            let mut rows = st.query([&rid])?;
            match rows.next()? {
                Some(r) => {
                    let app_key: String = r.get(0)?;
                    Ok(Some(device_from_row_at(
                        &Arc::from(app_key.as_str()),
                        r,
                        1,
                    )?))
                }
                None => Ok(None),
            }
        }))
    }

    fn put_device(&self, d: DeviceRecord) -> StoreFuture<'_, ()> {
        let feed = self.inner.feed.clone();
        Box::pin(self.write(move |c| write_device(c, d, next_change(&feed))))
    }

    fn put_devices(&self, devices: Vec<DeviceRecord>) -> StoreFuture<'_, ()> {
        let feed = self.inner.feed.clone();
        Box::pin(self.write(move |c| {
            for d in devices {
                write_device(c, d, next_change(&feed))?;
            }
            Ok(())
        }))
    }

    fn load_badges(&self, app_key: &str) -> StoreFuture<'_, Vec<(u32, u32)>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st =
                c.prepare_cached("SELECT ordinal, badge FROM device_badges WHERE app_key = ?1")?;
            let rows = st.query_map([app_key], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<(u32, u32)>, _>>()?)
        }))
    }

    fn set_blocked(&self, app_key: &str, ordinals: Vec<u32>, blocked: bool) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            let mut st = c.prepare_cached(if blocked {
                "INSERT INTO blocked_devices (app_key, ordinal) VALUES (?1, ?2)
                 ON CONFLICT (app_key, ordinal) DO NOTHING"
            } else {
                "DELETE FROM blocked_devices WHERE app_key = ?1 AND ordinal = ?2"
            })?;
            for ordinal in ordinals {
                st.execute(params![app_key, ordinal])?;
            }
            Ok(())
        }))
    }

    fn load_blocked(&self, app_key: &str) -> StoreFuture<'_, Vec<u32>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st =
                c.prepare_cached("SELECT ordinal FROM blocked_devices WHERE app_key = ?1")?;
            let rows = st.query_map([app_key], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<u32>, _>>()?)
        }))
    }

    fn save_badges(&self, app_key: &str, badges: Vec<(u32, u32)>) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            let mut st = c.prepare_cached(
                "INSERT INTO device_badges (app_key, ordinal, badge) VALUES (?1, ?2, ?3)
                 ON CONFLICT (app_key, ordinal) DO UPDATE SET badge = excluded.badge",
            )?;
            for (ordinal, badge) in badges {
                st.execute(params![app_key, ordinal, badge])?;
            }
            Ok(())
        }))
    }

    fn seen_between(&self, app_key: &str, from_ms: u64, to_ms: u64) -> StoreFuture<'_, Vec<u32>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT ordinal FROM device_seen WHERE app_key = ?1 AND at_ms >= ?2 AND at_ms < ?3",
            )?;
            let rows = st.query_map(params![app_key, to_i64(from_ms), to_i64(to_ms)], |r| {
                r.get(0)
            })?;
            Ok(rows.collect::<Result<Vec<u32>, _>>()?)
        }))
    }

    fn set_last_online(
        &self,
        app_key: &str,
        ordinal: u32,
        at_ms: u64,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            write_events(c, &events)?;
            c.prepare_cached(
                "INSERT INTO device_seen (app_key, ordinal, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (app_key, ordinal) DO UPDATE SET at_ms = excluded.at_ms",
            )?
            .execute(params![app_key, ordinal, to_i64(at_ms)])?;
            Ok(())
        }))
    }

    fn last_online(&self, app_key: &str, ordinals: Vec<u32>) -> StoreFuture<'_, Vec<(u32, u64)>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT at_ms FROM device_seen WHERE app_key = ?1 AND ordinal = ?2",
            )?;
            let mut out = Vec::new();
            for ordinal in ordinals {
                let at: Option<i64> = st
                    .query_row(params![app_key, ordinal], |r| r.get(0))
                    .optional()?;
                if let Some(at) = at {
                    out.push((ordinal, to_u64(at)));
                }
            }
            Ok(out)
        }))
    }

    fn save_locations(
        &self,
        app_key: &str,
        locations: Vec<(u32, Location)>,
    ) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            let mut st = c.prepare_cached(
                "INSERT INTO device_locations (app_key, ordinal, lat, lon, accuracy_m, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (app_key, ordinal) DO UPDATE SET lat = excluded.lat,
                     lon = excluded.lon, accuracy_m = excluded.accuracy_m,
                     at_ms = excluded.at_ms",
            )?;
            for (ordinal, l) in locations {
                st.execute(params![
                    app_key,
                    ordinal,
                    l.lat,
                    l.lon,
                    l.accuracy_m,
                    to_i64(l.at_ms)
                ])?;
            }
            Ok(())
        }))
    }

    fn location(&self, app_key: &str, ordinal: u32) -> StoreFuture<'_, Option<Location>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT lat, lon, accuracy_m, at_ms FROM device_locations
                 WHERE app_key = ?1 AND ordinal = ?2",
            )?
            .query_row(params![app_key, ordinal], |r| {
                Ok(Location {
                    lat: r.get(0)?,
                    lon: r.get(1)?,
                    accuracy_m: r.get(2)?,
                    at_ms: to_u64(r.get(3)?),
                })
            })
            .optional()?)
        }))
    }
}

impl CidStore for SqliteStore {
    fn issue_cids(&self, app_key: &str, cids: Vec<String>, at_ms: u64) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            let mut st =
                c.prepare_cached("INSERT INTO cids (app_key, cid, issued_ms) VALUES (?1, ?2, ?3)")?;
            for cid in cids {
                st.execute(params![app_key, cid, to_i64(at_ms)])?;
            }
            // A cid lives one day; older ones are forgotten as new ones are issued.
            c.prepare_cached("DELETE FROM cids WHERE app_key = ?1 AND issued_ms < ?2")?
                .execute(params![
                    app_key,
                    to_i64(at_ms.saturating_sub(2 * 86_400_000))
                ])?;
            Ok(())
        }))
    }

    fn find_cid(
        &self,
        app_key: &str,
        cid: &str,
        since_ms: u64,
    ) -> StoreFuture<'_, Option<Option<u64>>> {
        let (app_key, cid) = (app_key.to_string(), cid.to_string());
        Box::pin(self.read(move |c| {
            let found: Option<Option<i64>> = c
                .query_row(
                    "SELECT msg_id FROM cids WHERE app_key = ?1 AND cid = ?2 AND issued_ms >= ?3",
                    params![app_key, cid, to_i64(since_ms)],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(found.map(|m| m.map(to_u64)))
        }))
    }
}

impl PushStore for SqliteStore {
    fn insert_push(
        &self,
        app_key: &str,
        push: &Push,
        audience: &RoaringBitmap,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        let body = serde_json::to_string(push);
        let blob = serialize_bitmap(audience);
        let (msg_id, sent, expires) = (push.msg_id, push.sent_ms, push.expires_ms());
        let idempotency = push.idempotency.clone();
        let schedule = push.schedule.clone();
        let overrides = push.policy.overrides;
        let sms_due = push.sms_due_ms();
        let abtest = push.split.as_ref().map(|s| s.abtest_id.clone());
        let feed = self.inner.feed.clone();
        Box::pin(async move {
            let body = body.map_err(|e| StoreError::Corrupt(format!("push body: {e}")))?;
            let blob = blob?;
            self.write(move |c| {
                c.prepare_cached(
                    "INSERT INTO pushes (msg_id, app_key, sent_ms, expires_ms, body, audience,
                        change_seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    to_i64(msg_id),
                    app_key,
                    to_i64(sent),
                    to_i64(expires),
                    body,
                    blob,
                    to_i64(next_change(&feed))
                ])?;
                write_events(c, &events)?;
                if let Some(abtest_id) = &abtest {
                    c.prepare_cached(
                        "INSERT INTO abtest_pushes (app_key, abtest_id, msg_id) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![app_key, abtest_id, to_i64(msg_id)])?;
                }
                if let Some(old) = overrides {
                    // Replaced: never delivered again, nor reported undelivered at expiry.
                    c.prepare_cached(
                        "UPDATE pushes SET overridden_by = ?3, expiry_reported = 1, change_seq = ?4
                         WHERE msg_id = ?1 AND app_key = ?2",
                    )?
                    .execute(params![
                        to_i64(old),
                        app_key,
                        to_i64(msg_id),
                        to_i64(next_change(&feed))
                    ])?;
                    drop_sms(c, old)?;
                }
                if let Some(due) = sms_due {
                    c.prepare_cached(
                        "INSERT INTO sms_jobs (msg_id, app_key, due_ms) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![to_i64(msg_id), app_key, to_i64(due)])?;
                }
                if let Some(firing) = &schedule {
                    record_run(
                        c,
                        &firing.schedule_id,
                        &ScheduleRun {
                            msg_id: Some(msg_id),
                            error_code: 0,
                            error_message: String::new(),
                            at_ms: sent,
                        },
                        (Some(firing.due_ms), firing.next_ms),
                    )?;
                }
                if let Some(key) = idempotency {
                    // A key from the pool is marked used; any other key is taken as new.
                    let used = if key.issued_only {
                        c.prepare_cached(
                            "UPDATE cids SET msg_id = ?3 WHERE app_key = ?1 AND cid = ?2
                             AND msg_id IS NULL",
                        )?
                        .execute(params![
                            app_key,
                            key.key,
                            to_i64(msg_id)
                        ])?
                    } else {
                        c.prepare_cached(
                            "INSERT INTO cids (app_key, cid, issued_ms, msg_id)
                             VALUES (?1, ?2, ?4, ?3)
                             ON CONFLICT (app_key, cid) DO UPDATE
                             SET msg_id = excluded.msg_id, issued_ms = excluded.issued_ms
                             WHERE cids.issued_ms < excluded.issued_ms - 86400000",
                        )?
                        .execute(params![
                            app_key,
                            key.key,
                            to_i64(msg_id),
                            to_i64(sent)
                        ])?
                    };
                    if used == 0 {
                        return Err(StoreError::Conflict(format!("idempotency key {}", key.key)));
                    }
                }
                Ok(())
            })
            .await
        })
    }

    fn load_live_pushes(&self, app_key: &str, now_ms: u64) -> StoreFuture<'_, Vec<StoredPush>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare(
                "SELECT p.msg_id, p.body, p.audience, d.sent, d.delivered, d.vendors
                 FROM pushes p LEFT JOIN deliveries d ON d.msg_id = p.msg_id
                 WHERE p.app_key = ?1 AND p.expires_ms > ?2 AND p.recalled_ms IS NULL
                     AND p.overridden_by IS NULL
                 ORDER BY p.msg_id",
            )?;
            let mut rows = st.query(params![app_key, to_i64(now_ms)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(stored_push_from_row(r)?);
            }
            Ok(out)
        }))
    }

    fn max_msg_id(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.read(|c| {
            let v: Option<i64> = c.query_row("SELECT MAX(msg_id) FROM pushes", [], |r| r.get(0))?;
            Ok(v.map(to_u64).unwrap_or(0))
        }))
    }

    fn save_delivered(
        &self,
        checkpoints: Vec<Checkpoint>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let blobs = checkpoints
                .iter()
                .map(|c| {
                    Ok((
                        c.msg_id,
                        serialize_bitmap(&c.sent)?,
                        serialize_bitmap(&c.delivered)?,
                        encode_vendor_sets(&c.vendors),
                    ))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            self.write(move |c| {
                let mut st = c.prepare_cached(
                    "INSERT INTO deliveries (msg_id, sent, delivered, vendors)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (msg_id) DO UPDATE SET sent = excluded.sent,
                        delivered = excluded.delivered, vendors = excluded.vendors",
                )?;
                for (msg_id, sent, delivered, vendors) in blobs {
                    st.execute(params![to_i64(msg_id), sent, delivered, vendors])?;
                }
                write_events(c, &events)
            })
            .await
        })
    }

    fn expired_unreported(
        &self,
        app_key: &str,
        before_ms: u64,
    ) -> StoreFuture<'_, Vec<StoredPush>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT p.msg_id, p.body, p.audience, d.sent, d.delivered, d.vendors
                 FROM pushes p LEFT JOIN deliveries d ON d.msg_id = p.msg_id
                 WHERE p.app_key = ?1 AND p.expires_ms < ?2 AND p.expiry_reported = 0
                 ORDER BY p.msg_id LIMIT 100",
            )?;
            let mut rows = st.query(params![app_key, to_i64(before_ms)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(stored_push_from_row(r)?);
            }
            Ok(out)
        }))
    }

    fn report_expired(&self, msg_id: u64, events: Vec<NewEvent>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            write_events(c, &events)?;
            c.prepare_cached("UPDATE pushes SET expiry_reported = 1 WHERE msg_id = ?1")?
                .execute([to_i64(msg_id)])?;
            Ok(())
        }))
    }

    fn recall_push(&self, msg_id: u64, at_ms: u64, events: Vec<NewEvent>) -> StoreFuture<'_, bool> {
        let feed = self.inner.feed.clone();
        Box::pin(self.write(move |c| {
            // Its undelivered devices are reported here, not again when it expires.
            let n = c
                .prepare_cached(
                    "UPDATE pushes SET recalled_ms = ?2, expiry_reported = 1, change_seq = ?3
                     WHERE msg_id = ?1 AND recalled_ms IS NULL",
                )?
                .execute(params![
                    to_i64(msg_id),
                    to_i64(at_ms),
                    to_i64(next_change(&feed))
                ])?;
            if n == 0 {
                return Ok(false);
            }
            write_events(c, &events)?;
            drop_sms(c, msg_id)?;
            Ok(true)
        }))
    }

    fn recalled_at(&self, msg_id: u64) -> StoreFuture<'_, Option<u64>> {
        Box::pin(self.read(move |c| {
            let at: Option<Option<i64>> = c
                .prepare_cached("SELECT recalled_ms FROM pushes WHERE msg_id = ?1")?
                .query_row([to_i64(msg_id)], |r| r.get(0))
                .optional()?;
            Ok(at.flatten().map(to_u64))
        }))
    }

    fn overridden_by(&self, msg_id: u64) -> StoreFuture<'_, Option<u64>> {
        Box::pin(self.read(move |c| {
            let by: Option<Option<i64>> = c
                .prepare_cached("SELECT overridden_by FROM pushes WHERE msg_id = ?1")?
                .query_row([to_i64(msg_id)], |r| r.get(0))
                .optional()?;
            Ok(by.flatten().map(to_u64))
        }))
    }

    fn load_push(&self, app_key: &str, msg_id: u64) -> StoreFuture<'_, Option<StoredPush>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT p.msg_id, p.body, p.audience, d.sent, d.delivered, d.vendors
                 FROM pushes p LEFT JOIN deliveries d ON d.msg_id = p.msg_id
                 WHERE p.app_key = ?1 AND p.msg_id = ?2",
            )?;
            let mut rows = st.query(params![app_key, to_i64(msg_id)])?;
            match rows.next()? {
                Some(r) => Ok(Some(stored_push_from_row(r)?)),
                None => Ok(None),
            }
        }))
    }

    fn clicked(&self, app_key: &str, msg_id: u64) -> StoreFuture<'_, Vec<u32>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT DISTINCT ordinal FROM device_events
                 WHERE msg_id = ?1 AND kind = 'click' AND app_key = ?2",
            )?;
            let rows = st.query_map(params![to_i64(msg_id), app_key], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<u32>, _>>()?)
        }))
    }

    fn push_counts_between(
        &self,
        app_key: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> StoreFuture<'_, Vec<PushCounts>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT p.msg_id, p.sent_ms, json_extract(p.body, '$.labels.group'), p.audience,
                        d.sent, d.delivered,
                        (SELECT COUNT(DISTINCT e.ordinal) FROM device_events e
                         WHERE e.msg_id = p.msg_id AND e.kind = 'click' AND e.app_key = p.app_key)
                 FROM pushes p LEFT JOIN deliveries d ON d.msg_id = p.msg_id
                 WHERE p.app_key = ?1 AND p.sent_ms >= ?2 AND p.sent_ms < ?3
                 ORDER BY p.msg_id",
            )?;
            let mut rows = st.query(params![app_key, to_i64(from_ms), to_i64(to_ms)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(push_counts_from_row(r)?);
            }
            Ok(out)
        }))
    }

    fn recent_push_counts(&self, app_key: &str, limit: u32) -> StoreFuture<'_, Vec<PushCounts>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT p.msg_id, p.sent_ms, json_extract(p.body, '$.labels.group'), p.audience,
                        d.sent, d.delivered,
                        (SELECT COUNT(DISTINCT e.ordinal) FROM device_events e
                         WHERE e.msg_id = p.msg_id AND e.kind = 'click' AND e.app_key = p.app_key)
                 FROM pushes p LEFT JOIN deliveries d ON d.msg_id = p.msg_id
                 WHERE p.app_key = ?1
                 ORDER BY p.msg_id DESC LIMIT ?2",
            )?;
            let mut rows = st.query(params![app_key, i64::from(limit)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(push_counts_from_row(r)?);
            }
            Ok(out)
        }))
    }

    fn record_event(&self, e: DeviceEvent, events: Vec<NewEvent>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            write_events(c, &events)?;
            c.prepare_cached(
                "INSERT INTO device_events (app_key, ordinal, kind, msg_id, data, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                e.app_key,
                e.ordinal,
                e.kind,
                e.msg_id.map(to_i64),
                e.data.to_string(),
                to_i64(e.at_ms)
            ])?;
            Ok(())
        }))
    }
}

impl CredentialStore for SqliteStore {
    fn set_vendor_credentials(
        &self,
        app_key: &str,
        vendor: &str,
        body: String,
        at_ms: u64,
    ) -> StoreFuture<'_, ()> {
        let (app_key, vendor) = (app_key.to_string(), vendor.to_string());
        let body = self.inner.key.seal(&body);
        Box::pin(self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO vendor_credentials (app_key, vendor, body, updated_ms)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (app_key, vendor)
                 DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
            )?
            .execute(params![app_key, vendor, body, to_i64(at_ms)])?;
            Ok(())
        }))
    }

    fn vendor_credentials(&self, app_key: &str) -> StoreFuture<'_, Vec<(String, String, u64)>> {
        let app_key = app_key.to_string();
        let key = self.inner.key.clone();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT vendor, body, updated_ms FROM vendor_credentials WHERE app_key = ?1
                 ORDER BY vendor",
            )?;
            let rows = st.query_map([app_key], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    to_u64(r.get(2)?),
                ))
            })?;
            rows.map(|row| {
                let (vendor, body, at) = row?;
                Ok((vendor, key.open(&body)?, at))
            })
            .collect()
        }))
    }

    fn remove_vendor_credentials(&self, app_key: &str, vendor: &str) -> StoreFuture<'_, bool> {
        let (app_key, vendor) = (app_key.to_string(), vendor.to_string());
        Box::pin(self.write(move |c| {
            let n = c
                .prepare_cached(
                    "DELETE FROM vendor_credentials WHERE app_key = ?1 AND vendor = ?2",
                )?
                .execute(params![app_key, vendor])?;
            Ok(n > 0)
        }))
    }

    fn all_vendor_credentials(&self) -> StoreFuture<'_, Vec<(String, String, String, u64)>> {
        let key = self.inner.key.clone();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT app_key, vendor, body, updated_ms FROM vendor_credentials
                 ORDER BY app_key, vendor",
            )?;
            let rows = st.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    to_u64(r.get(3)?),
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (app_key, vendor, body, at) = row?;
                // One app's unreadable credentials must not stop every other app's.
                match key.open(&body) {
                    Ok(body) => out.push((app_key, vendor, body, at)),
                    Err(e) => tracing::warn!(%app_key, %vendor, error = %e, "vendor credentials not readable"),
                }
            }
            Ok(out)
        }))
    }

    fn vendor_credentials_version(&self) -> StoreFuture<'_, (u64, u64)> {
        Box::pin(self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT COUNT(*), COALESCE(SUM(updated_ms), 0) FROM vendor_credentials",
            )?
            .query_row([], |r| Ok((to_u64(r.get(0)?), to_u64(r.get(1)?))))?)
        }))
    }
}

impl ScheduleStore for SqliteStore {
    fn put_schedule(&self, r: ScheduleRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO schedules (schedule_id, app_key, name, enabled, trigger, push,
                    created_ms, next_ms, door) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (schedule_id) DO UPDATE SET name = excluded.name,
                    enabled = excluded.enabled, trigger = excluded.trigger, push = excluded.push,
                    next_ms = excluded.next_ms",
            )?
            .execute(params![
                r.schedule_id,
                r.app_key,
                r.name,
                r.enabled,
                r.trigger.to_string(),
                r.push.to_string(),
                to_i64(r.created_ms),
                r.next_ms.map(to_i64),
                r.door,
            ])?;
            Ok(())
        }))
    }

    fn delete_schedule(&self, app_key: &str, schedule_id: &str) -> StoreFuture<'_, bool> {
        let (app_key, schedule_id) = (app_key.to_string(), schedule_id.to_string());
        Box::pin(self.write(move |c| {
            let n = c.execute(
                "DELETE FROM schedules WHERE app_key = ?1 AND schedule_id = ?2",
                params![app_key, schedule_id],
            )?;
            Ok(n > 0)
        }))
    }

    fn load_schedules(&self) -> StoreFuture<'_, Vec<ScheduleRecord>> {
        Box::pin(self.read(|c| {
            let mut st = c.prepare(
                "SELECT schedule_id, app_key, name, enabled, trigger, push, created_ms, next_ms,
                    door
                 FROM schedules ORDER BY created_ms, schedule_id",
            )?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let trigger: String = r.get(4)?;
                let push: String = r.get(5)?;
                let json = |t: &str| {
                    serde_json::from_str(t)
                        .map_err(|e| StoreError::Corrupt(format!("schedule: {e}")))
                };
                out.push(ScheduleRecord {
                    schedule_id: r.get(0)?,
                    app_key: r.get(1)?,
                    name: r.get(2)?,
                    enabled: r.get(3)?,
                    trigger: json(&trigger)?,
                    push: json(&push)?,
                    created_ms: to_u64(r.get(6)?),
                    next_ms: r.get::<_, Option<i64>>(7)?.map(to_u64),
                    door: r.get(8)?,
                });
            }
            Ok(out)
        }))
    }

    fn record_failed_run(
        &self,
        schedule_id: &str,
        run: ScheduleRun,
        next_ms: Option<u64>,
    ) -> StoreFuture<'_, ()> {
        let schedule_id = schedule_id.to_string();
        Box::pin(self.write(move |c| record_run(c, &schedule_id, &run, (None, next_ms))))
    }

    fn schedule_runs(&self, schedule_id: &str) -> StoreFuture<'_, Vec<ScheduleRun>> {
        let schedule_id = schedule_id.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT msg_id, error_code, error_message, at_ms FROM schedule_runs
                 WHERE schedule_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([schedule_id], |r| {
                Ok(ScheduleRun {
                    msg_id: r.get::<_, Option<i64>>(0)?.map(to_u64),
                    error_code: r.get(1)?,
                    error_message: r.get(2)?,
                    at_ms: to_u64(r.get(3)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }
}

impl OutboxStore for SqliteStore {
    fn add_callback(&self, e: CallbackEndpoint) -> StoreFuture<'_, u64> {
        Box::pin(self.write(move |c| {
            let start = last_event_id(c)?;
            insert_endpoint(
                c,
                &CallbackEndpoint {
                    start_event_id: start,
                    ..e
                },
            )
        }))
    }

    fn enable_callback(&self, app_key: &str, id: u64) -> StoreFuture<'_, bool> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            // What happened while it was disabled was not kept for it: it starts from now.
            let now = to_i64(last_event_id(c)?);
            let disabled: Option<Option<i64>> = c
                .query_row(
                    "SELECT disabled_ms FROM callback_endpoints WHERE app_key = ?1 AND id = ?2",
                    params![app_key, to_i64(id)],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(disabled) = disabled else {
                return Ok(false);
            };
            c.execute(
                "UPDATE callback_endpoints SET failing_since_ms = NULL, disabled_ms = NULL
                 WHERE id = ?1",
                [to_i64(id)],
            )?;
            if disabled.is_some() {
                c.execute(
                    "UPDATE callback_endpoints SET start_event_id = ?2 WHERE id = ?1",
                    params![to_i64(id), now],
                )?;
                c.execute(
                    "UPDATE callback_cursors SET last_event_id = MAX(last_event_id, ?2)
                     WHERE endpoint_id = ?1",
                    params![to_i64(id), now],
                )?;
            }
            Ok(true)
        }))
    }

    fn push_endpoint(&self, e: CallbackEndpoint) -> StoreFuture<'_, CallbackEndpoint> {
        Box::pin(self.write(move |c| {
            let found = c
                .prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM callback_endpoints
                     WHERE app_key = ?1 AND url = ?2 AND push_level = 1 ORDER BY id LIMIT 1"
                ))?
                .query_row(params![e.app_key, e.url], endpoint_from_row)
                .optional()?;
            if let Some(found) = found {
                return found;
            }
            let e = CallbackEndpoint {
                start_event_id: 0,
                push_level: true,
                failing_since_ms: None,
                disabled_ms: None,
                format: CallbackFormat::Pigeon,
                ..e
            };
            Ok(CallbackEndpoint {
                id: insert_endpoint(c, &e)?,
                ..e
            })
        }))
    }

    fn set_endpoint_health(
        &self,
        id: u64,
        failing_since_ms: Option<u64>,
        disabled_ms: Option<u64>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            c.prepare_cached(
                "UPDATE callback_endpoints SET failing_since_ms = ?2, disabled_ms = ?3
                 WHERE id = ?1",
            )?
            .execute(params![
                to_i64(id),
                failing_since_ms.map(to_i64),
                disabled_ms.map(to_i64)
            ])?;
            if disabled_ms.is_some() {
                // Kept, listed and replayable, like any batch that gave up.
                hold_events(c, id, None)?;
                c.execute(
                    "UPDATE callback_batches SET dead = 1 WHERE endpoint_id = ?1",
                    [to_i64(id)],
                )?;
            }
            Ok(())
        }))
    }

    fn remove_callback(&self, app_key: &str, id: u64) -> StoreFuture<'_, bool> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            let n = c.execute(
                "DELETE FROM callback_endpoints WHERE app_key = ?1 AND id = ?2",
                params![app_key, to_i64(id)],
            )?;
            c.execute(
                "DELETE FROM callback_cursors WHERE endpoint_id = ?1",
                [to_i64(id)],
            )?;
            c.execute(
                "DELETE FROM callback_batches WHERE endpoint_id = ?1",
                [to_i64(id)],
            )?;
            Ok(n > 0)
        }))
    }

    fn list_callbacks(&self) -> StoreFuture<'_, Vec<CallbackEndpoint>> {
        Box::pin(self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM callback_endpoints ORDER BY id"
            ))?;
            let mut rows = st.query([])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(endpoint_from_row(r)??);
            }
            Ok(out)
        }))
    }

    fn append_events(&self, events: Vec<NewEvent>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| write_events(c, &events)))
    }

    fn events_after(
        &self,
        app_key: &str,
        endpoint: Option<u64>,
        command: &str,
        after_id: u64,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredEvent>> {
        let (app_key, command) = (app_key.to_string(), command.to_string());
        Box::pin(self.read(move |c| {
            outbox_events(
                c,
                (&app_key, endpoint, &command),
                after_id.saturating_add(1),
                i64::MAX as u64,
                limit,
            )
        }))
    }

    fn callback_cursor(&self, endpoint_id: u64, command: &str) -> StoreFuture<'_, Option<u64>> {
        let command = command.to_string();
        Box::pin(self.read(move |c| {
            let v: Option<i64> = c
                .query_row(
                    "SELECT last_event_id FROM callback_cursors WHERE endpoint_id = ?1 AND command = ?2",
                    params![to_i64(endpoint_id), command],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(v.map(to_u64))
        }))
    }

    fn create_batches(
        &self,
        endpoint_id: u64,
        command: &str,
        batches: Vec<CallbackBatch>,
        last_event_id: u64,
    ) -> StoreFuture<'_, ()> {
        let command = command.to_string();
        Box::pin(self.write(move |c| {
            let mut insert = c.prepare_cached(
                "INSERT INTO callback_batches (delivery_id, endpoint_id, command, events,
                    attempts, next_ms, first_ms, dead, last_error, first_event_id, last_event_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for b in &batches {
                // A batch of outbox events refers to them; they stay until it is taken.
                let held = if b.first_event_id > 0 { "" } else { &b.events };
                insert.execute(params![
                    b.delivery_id,
                    to_i64(b.endpoint_id),
                    b.command,
                    held,
                    b.attempts,
                    to_i64(b.next_ms),
                    to_i64(b.first_ms),
                    b.dead,
                    b.last_error,
                    to_i64(b.first_event_id),
                    to_i64(b.last_event_id)
                ])?;
            }
            // A cursor only moves forward: the dispatcher does not wait for one window's
            // write before the next, so two may commit in either order.
            c.prepare_cached(
                "INSERT INTO callback_cursors (endpoint_id, command, last_event_id)
                 VALUES (?1, ?2, ?3) ON CONFLICT (endpoint_id, command)
                 DO UPDATE SET last_event_id = MAX(last_event_id, excluded.last_event_id)",
            )?
            .execute(params![to_i64(endpoint_id), command, to_i64(last_event_id)])?;
            Ok(())
        }))
    }

    fn finish_batches(&self, delivery_ids: Vec<String>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            let mut st = c.prepare_cached("DELETE FROM callback_batches WHERE delivery_id = ?1")?;
            for id in delivery_ids {
                st.execute([id])?;
            }
            Ok(())
        }))
    }

    fn fail_batch(
        &self,
        delivery_id: &str,
        attempts: u32,
        next_ms: u64,
        dead: bool,
        error: &str,
    ) -> StoreFuture<'_, ()> {
        let (delivery_id, error) = (delivery_id.to_string(), error.to_string());
        Box::pin(self.write(move |c| {
            c.prepare_cached(
                "UPDATE callback_batches SET attempts = ?2, next_ms = ?3, dead = ?4,
                    last_error = ?5 WHERE delivery_id = ?1",
            )?
            .execute(params![delivery_id, attempts, to_i64(next_ms), dead, error])?;
            if dead {
                let endpoint_id: i64 = c.query_row(
                    "SELECT endpoint_id FROM callback_batches WHERE delivery_id = ?1",
                    [&delivery_id],
                    |r| r.get(0),
                )?;
                hold_events(c, to_u64(endpoint_id), Some(&delivery_id))?;
            }
            Ok(())
        }))
    }

    fn callback_batches(&self, endpoint_id: u64) -> StoreFuture<'_, Vec<CallbackBatch>> {
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM callback_batches WHERE endpoint_id = ?1
                 ORDER BY first_ms, first_event_id, delivery_id"
            ))?;
            let mut rows = st.query([to_i64(endpoint_id)])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(batch_from_row(r)?);
            }
            drop(rows);
            for b in &mut out {
                if b.events.is_empty() {
                    b.events = referenced_events(c, b)?;
                }
            }
            Ok(out)
        }))
    }

    fn replay_batch(
        &self,
        endpoint_id: u64,
        delivery_id: &str,
        now_ms: u64,
    ) -> StoreFuture<'_, bool> {
        let delivery_id = delivery_id.to_string();
        Box::pin(self.write(move |c| {
            let n = c.execute(
                "UPDATE callback_batches SET dead = 0, attempts = 0, next_ms = ?3, first_ms = ?3
                 WHERE endpoint_id = ?1 AND delivery_id = ?2 AND dead = 1",
                params![to_i64(endpoint_id), delivery_id, to_i64(now_ms)],
            )?;
            Ok(n > 0)
        }))
    }

    fn prune_events(&self, app_key: &str) -> StoreFuture<'_, u64> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            // An event may go once every endpoint it is for has moved its cursor past it
            // (or started after it). A disabled endpoint holds nothing back.
            let mut endpoints = Vec::new();
            {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {ENDPOINT_COLUMNS} FROM callback_endpoints WHERE app_key = ?1"
                ))?;
                let mut rows = st.query([&app_key])?;
                while let Some(r) = rows.next()? {
                    endpoints.push(endpoint_from_row(r)??);
                }
            }
            let mut cursor = c.prepare_cached(
                "SELECT last_event_id FROM callback_cursors WHERE endpoint_id = ?1 AND command = ?2",
            )?;
            let mut delete = c.prepare_cached(
                "DELETE FROM callback_event_chunks
                 WHERE app_key = ?1 AND endpoint_id IS ?2 AND command = ?3 AND last_id <= ?4",
            )?;
            let mut held = c.prepare_cached(
                "SELECT MIN(first_event_id) FROM callback_batches
                 WHERE endpoint_id = ?1 AND command = ?2 AND events = ''",
            )?;
            let mut n = 0;
            for command in CALLBACK_COMMANDS {
                let mut app_wide: Option<u64> = None;
                for e in &endpoints {
                    let wants = e.commands.is_empty() || e.commands.iter().any(|x| x == command);
                    if !wants || e.disabled_ms.is_some() {
                        continue;
                    }
                    let at: Option<i64> = cursor
                        .query_row(params![to_i64(e.id), command], |r| r.get(0))
                        .optional()?;
                    let mut at = at.map(to_u64).unwrap_or(e.start_event_id);
                    // Events that waiting batches refer to stay.
                    let referenced: Option<i64> = held
                        .query_row(params![to_i64(e.id), command], |r| r.get(0))?;
                    if let Some(first) = referenced {
                        at = at.min(to_u64(first).saturating_sub(1));
                    }
                    if e.push_level {
                        n += delete.execute(params![app_key, to_i64(e.id), command, to_i64(at)])?;
                    } else {
                        app_wide = Some(app_wide.map_or(at, |m| m.min(at)));
                    }
                }
                let upto = app_wide.map(to_i64).unwrap_or(i64::MAX);
                n += delete.execute(params![app_key, None::<i64>, command, upto])?;
            }
            // Events for push-level endpoints that are gone or disabled.
            n += c.execute(
                "DELETE FROM callback_event_chunks WHERE app_key = ?1 AND endpoint_id IS NOT NULL
                 AND endpoint_id NOT IN (SELECT id FROM callback_endpoints
                     WHERE app_key = ?1 AND disabled_ms IS NULL)",
                [&app_key],
            )?;
            Ok(n as u64)
        }))
    }
}

impl FileStore for SqliteStore {
    fn put_file(&self, f: FileRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            c.execute(
                "INSERT INTO files (file_id, app_key, kind, file_name, created_ms, expires_ms,
                    file_values) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    f.file_id,
                    f.app_key,
                    f.kind,
                    f.file_name,
                    to_i64(f.created_ms),
                    to_i64(f.expires_ms),
                    f.values.join("\n")
                ],
            )?;
            Ok(())
        }))
    }

    fn list_files(&self, app_key: &str, now_ms: u64) -> StoreFuture<'_, Vec<FileRecord>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT file_id, app_key, kind, file_name, created_ms, expires_ms, '' FROM files
                 WHERE app_key = ?1 AND expires_ms > ?2 ORDER BY created_ms, file_id",
            )?;
            let rows = st.query_map(params![app_key, to_i64(now_ms)], file_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn get_file(
        &self,
        app_key: &str,
        file_id: &str,
        now_ms: u64,
    ) -> StoreFuture<'_, Option<FileRecord>> {
        let (app_key, file_id) = (app_key.to_string(), file_id.to_string());
        Box::pin(self.read(move |c| {
            Ok(c.query_row(
                "SELECT file_id, app_key, kind, file_name, created_ms, expires_ms, file_values
                 FROM files WHERE app_key = ?1 AND file_id = ?2 AND expires_ms > ?3",
                params![app_key, file_id, to_i64(now_ms)],
                file_from_row,
            )
            .optional()?)
        }))
    }

    fn delete_file(&self, app_key: &str, file_id: &str) -> StoreFuture<'_, bool> {
        let (app_key, file_id) = (app_key.to_string(), file_id.to_string());
        Box::pin(self.write(move |c| {
            let n = c.execute(
                "DELETE FROM files WHERE app_key = ?1 AND file_id = ?2",
                params![app_key, file_id],
            )?;
            Ok(n > 0)
        }))
    }
}

impl SmsStore for SqliteStore {
    fn due_sms_jobs(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<(u64, String)>> {
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT msg_id, app_key FROM sms_jobs WHERE due_ms <= ?1
                 ORDER BY due_ms LIMIT ?2",
            )?;
            let rows = st.query_map(params![to_i64(now_ms), limit as i64], |r| {
                Ok((to_u64(r.get(0)?), r.get(1)?))
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn expand_sms_job(&self, msg_id: u64, sends: Vec<SmsSend>) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            let n = c
                .prepare_cached("DELETE FROM sms_jobs WHERE msg_id = ?1")?
                .execute([to_i64(msg_id)])?;
            if n == 0 {
                // Recalled or overridden meanwhile: nothing goes out.
                return Ok(());
            }
            let mut st = c.prepare_cached(
                "INSERT OR IGNORE INTO sms_sends (msg_id, ordinal, app_key, registration_id,
                    mobile, sms, attempts, next_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for s in sends {
                st.execute(params![
                    to_i64(s.msg_id),
                    s.ordinal,
                    s.app_key,
                    s.registration_id,
                    s.mobile,
                    s.sms,
                    s.attempts,
                    to_i64(s.next_ms)
                ])?;
            }
            Ok(())
        }))
    }

    fn due_sms_sends(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<SmsSend>> {
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT msg_id, ordinal, app_key, registration_id, mobile, sms, attempts, next_ms
                 FROM sms_sends WHERE next_ms <= ?1 ORDER BY next_ms LIMIT ?2",
            )?;
            let rows = st.query_map(params![to_i64(now_ms), limit as i64], |r| {
                Ok(SmsSend {
                    msg_id: to_u64(r.get(0)?),
                    ordinal: r.get(1)?,
                    app_key: r.get(2)?,
                    registration_id: r.get(3)?,
                    mobile: r.get(4)?,
                    sms: r.get(5)?,
                    attempts: r.get(6)?,
                    next_ms: to_u64(r.get(7)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        }))
    }

    fn stop_sms(&self, msg_id: u64) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |c| {
            let timers = c
                .prepare_cached("DELETE FROM sms_jobs WHERE msg_id = ?1")?
                .execute([to_i64(msg_id)])?;
            let sends = c
                .prepare_cached("DELETE FROM sms_sends WHERE msg_id = ?1")?
                .execute([to_i64(msg_id)])?;
            Ok(timers + sends > 0)
        }))
    }

    fn finish_sms_send(
        &self,
        msg_id: u64,
        ordinal: u32,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            c.prepare_cached("DELETE FROM sms_sends WHERE msg_id = ?1 AND ordinal = ?2")?
                .execute(params![to_i64(msg_id), ordinal])?;
            write_events(c, &events)
        }))
    }

    fn retry_sms_send(
        &self,
        msg_id: u64,
        ordinal: u32,
        attempts: u32,
        next_ms: u64,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            c.prepare_cached(
                "UPDATE sms_sends SET attempts = ?3, next_ms = ?4
                 WHERE msg_id = ?1 AND ordinal = ?2",
            )?
            .execute(params![to_i64(msg_id), ordinal, attempts, to_i64(next_ms)])?;
            Ok(())
        }))
    }
}

impl FeedStore for SqliteStore {
    fn reserve_ordinals(&self, app_key: &str, count: u32) -> StoreFuture<'_, u32> {
        let app_key = app_key.to_string();
        Box::pin(self.write(move |c| {
            let stored: i64 = c
                .prepare_cached(
                    "SELECT COALESCE(MAX(ordinal) + 1, 0) FROM devices WHERE app_key = ?1",
                )?
                .query_row([&app_key], |r| r.get(0))?;
            let first = take_block(c, &format!("ordinals:{app_key}"), stored, i64::from(count))?;
            u32::try_from(first)
                .ok()
                .filter(|f| f.checked_add(count).is_some())
                .ok_or_else(|| StoreError::Corrupt(format!("app {app_key} ran out of ordinals")))
        }))
    }

    fn reserve_msg_ids(&self, count: u64, floor: u64) -> StoreFuture<'_, u64> {
        Box::pin(self.write(move |c| {
            let stored: i64 = c
                .prepare_cached("SELECT COALESCE(MAX(msg_id) + 1, 0) FROM pushes")?
                .query_row([], |r| r.get(0))?;
            let first = take_block(c, "msg_ids", stored.max(to_i64(floor)), to_i64(count))?;
            Ok(to_u64(first))
        }))
    }

    fn feed_cursor(&self) -> StoreFuture<'_, u64> {
        // Every write so far is committed once a write queued after them is.
        let feed = self.inner.feed.clone();
        Box::pin(self.write(move |_| Ok(feed.load(Ordering::Relaxed))))
    }

    fn changes_since(&self, cursor: u64, limit: usize) -> StoreFuture<'_, (Vec<Change>, u64)> {
        Box::pin(self.read(move |c| {
            let limit = limit.max(1);
            // Change numbers are committed in order (one writer), so the first `limit`
            // changes above the cursor, devices and pushes together, are all there is below
            // the highest of them: in one snapshot. (Read by two statements outside a
            // transaction, a device committed between them could be passed over by a cursor
            // moved past a push committed after it.)
            let snapshot = c.unchecked_transaction()?;
            let mut found: Vec<(u64, Change)> = Vec::new();
            let mut st = c.prepare_cached(
                "SELECT app_key, ordinal, registration_id, install_id, secret_hash, platform,
                        alias, tags, mobile, push_tokens, apns_production, info, created_ms,
                        updated_ms, region, change_seq
                 FROM devices WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2",
            )?;
            let mut rows = st.query(params![to_i64(cursor), to_i64(limit as u64)])?;
            while let Some(r) = rows.next()? {
                let app_key: String = r.get(0)?;
                let record = device_from_row_at(&Arc::from(app_key.as_str()), r, 1)?;
                found.push((to_u64(r.get(15)?), Change::Device(Box::new(record))));
            }
            let mut st = c.prepare_cached(
                "SELECT app_key, msg_id, change_seq, recalled_ms IS NOT NULL FROM pushes
                 WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2",
            )?;
            let mut rows = st.query(params![to_i64(cursor), to_i64(limit as u64)])?;
            while let Some(r) = rows.next()? {
                found.push((
                    to_u64(r.get(2)?),
                    Change::Push {
                        app_key: r.get(0)?,
                        msg_id: to_u64(r.get(1)?),
                        recalled: r.get(3)?,
                    },
                ));
            }
            drop(rows);
            drop(st);
            let mut st = c.prepare_cached(
                "SELECT app_key, geofence_id, change_seq FROM geofences
                 WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2",
            )?;
            let mut rows = st.query(params![to_i64(cursor), to_i64(limit as u64)])?;
            while let Some(r) = rows.next()? {
                found.push((
                    to_u64(r.get(2)?),
                    Change::Geofence {
                        app_key: r.get(0)?,
                        geofence_id: r.get(1)?,
                    },
                ));
            }
            drop(rows);
            drop(st);
            let mut st = c.prepare_cached(
                "SELECT app_key, kind, id, change_seq FROM saved_audiences
                 WHERE change_seq > ?1 ORDER BY change_seq LIMIT ?2",
            )?;
            let mut rows = st.query(params![to_i64(cursor), to_i64(limit as u64)])?;
            while let Some(r) = rows.next()? {
                let kind: String = r.get(1)?;
                let Some(kind) = SavedKind::parse(&kind) else {
                    continue;
                };
                found.push((
                    to_u64(r.get(3)?),
                    Change::Saved {
                        app_key: r.get(0)?,
                        kind,
                        id: r.get(2)?,
                    },
                ));
            }
            drop(rows);
            drop(st);
            snapshot.finish()?;
            found.sort_by_key(|(seq, _)| *seq);
            found.truncate(limit);
            let next = found.last().map_or(cursor, |(seq, _)| *seq);
            Ok((found.into_iter().map(|(_, change)| change).collect(), next))
        }))
    }
}

/// Takes `count` numbers from counter `name`, never below `floor`; returns the first.
fn take_block(c: &Connection, name: &str, floor: i64, count: i64) -> StoreResult<i64> {
    let next: Option<i64> = c
        .prepare_cached("SELECT next FROM counters WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    let first = next.unwrap_or(0).max(floor);
    c.prepare_cached(
        "INSERT INTO counters (name, next) VALUES (?1, ?2)
         ON CONFLICT (name) DO UPDATE SET next = excluded.next",
    )?
    .execute(params![name, first.saturating_add(count)])?;
    Ok(first)
}

impl LeaseStore for SqliteStore {
    fn take_lease(&self, name: &str, node: &str, ttl_ms: u64) -> StoreFuture<'_, Option<u64>> {
        let (name, node) = (name.to_string(), node.to_string());
        Box::pin(self.write(move |c| {
            let now = now_ms();
            let held: Option<(String, i64, i64)> = c
                .prepare_cached("SELECT holder, token, until_ms FROM leases WHERE name = ?1")?
                .query_row([&name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let token = match held {
                Some((holder, token, _)) if holder == node => token,
                Some((_, _, until)) if to_u64(until) > now => return Ok(None),
                Some((_, token, _)) => token + 1,
                None => 1,
            };
            c.prepare_cached(
                "INSERT INTO leases (name, holder, token, until_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,
                    token = excluded.token, until_ms = excluded.until_ms",
            )?
            .execute(params![
                name,
                node,
                token,
                to_i64(now.saturating_add(ttl_ms))
            ])?;
            Ok(Some(to_u64(token)))
        }))
    }

    fn release_lease(&self, name: &str, node: &str) -> StoreFuture<'_, bool> {
        let (name, node) = (name.to_string(), node.to_string());
        Box::pin(self.write(move |c| {
            // Expired at once, keeping its token so the next holder's is larger.
            let n = c
                .prepare_cached(
                    "UPDATE leases SET until_ms = 0 WHERE name = ?1 AND holder = ?2 AND until_ms > ?3",
                )?
                .execute(params![name, node, to_i64(now_ms())])?;
            Ok(n > 0)
        }))
    }

    fn lease_holds(&self, name: &str, token: u64) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(self.read(move |c| {
            let held: Option<(i64, i64)> = c
                .prepare_cached("SELECT token, until_ms FROM leases WHERE name = ?1")?
                .query_row([&name], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(matches!(held, Some((t, until)) if to_u64(t) == token && to_u64(until) > now_ms()))
        }))
    }

    fn leases(&self) -> StoreFuture<'_, Vec<Lease>> {
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT name, holder, token, until_ms FROM leases WHERE until_ms > ?1 ORDER BY name",
            )?;
            let rows = st.query_map([to_i64(now_ms())], |r| {
                Ok(Lease {
                    name: r.get(0)?,
                    holder: r.get(1)?,
                    token: to_u64(r.get(2)?),
                    until_ms: to_u64(r.get(3)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        }))
    }
}

impl PresenceStore for SqliteStore {
    fn set_presence(&self, node: &str, changes: Vec<(String, u32, bool)>) -> StoreFuture<'_, ()> {
        let node = node.to_string();
        Box::pin(self.write(move |c| {
            for (app_key, ordinal, connected) in changes {
                if connected {
                    c.prepare_cached(
                        "INSERT INTO presence (app_key, ordinal, node) VALUES (?1, ?2, ?3)
                         ON CONFLICT (app_key, ordinal) DO UPDATE SET node = excluded.node",
                    )?
                    .execute(params![app_key, ordinal, node])?;
                } else {
                    c.prepare_cached(
                        "DELETE FROM presence WHERE app_key = ?1 AND ordinal = ?2 AND node = ?3",
                    )?
                    .execute(params![app_key, ordinal, node])?;
                }
            }
            Ok(())
        }))
    }

    fn clear_presence(&self, node: &str) -> StoreFuture<'_, ()> {
        let node = node.to_string();
        Box::pin(self.write(move |c| {
            c.prepare_cached("DELETE FROM presence WHERE node = ?1")?
                .execute([node])?;
            Ok(())
        }))
    }

    fn presence(&self, app_key: &str, ordinals: Vec<u32>) -> StoreFuture<'_, Vec<(u32, String)>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let now = to_i64(now_ms());
            let mut st = c.prepare_cached(
                "SELECT p.node FROM presence p JOIN leases l ON l.name = 'node:' || p.node
                 WHERE p.app_key = ?1 AND p.ordinal = ?2 AND l.until_ms > ?3",
            )?;
            let mut found = Vec::new();
            for ordinal in ordinals {
                let node: Option<String> = st
                    .query_row(params![app_key, ordinal, now], |r| r.get(0))
                    .optional()?;
                if let Some(node) = node {
                    found.push((ordinal, node));
                }
            }
            Ok(found)
        }))
    }
}

impl GeofenceStore for SqliteStore {
    fn put_geofence(&self, fence: GeofenceRecord) -> StoreFuture<'_, ()> {
        let feed = self.inner.feed.clone();
        Box::pin(self.write(move |c| {
            let body =
                serde_json::to_string(&fence).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            c.prepare_cached(
                "INSERT INTO geofences (app_key, geofence_id, body, created_ms, change_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (app_key, geofence_id) DO UPDATE SET body = excluded.body,
                    created_ms = excluded.created_ms, change_seq = excluded.change_seq",
            )?
            .execute(params![
                fence.app_key,
                fence.geofence_id,
                body,
                to_i64(fence.created_ms),
                to_i64(next_change(&feed))
            ])?;
            Ok(())
        }))
    }

    fn delete_geofence(&self, app_key: &str, geofence_id: &str) -> StoreFuture<'_, bool> {
        let (app_key, geofence_id) = (app_key.to_string(), geofence_id.to_string());
        let feed = self.inner.feed.clone();
        Box::pin(self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE geofences SET body = NULL, change_seq = ?3
                     WHERE app_key = ?1 AND geofence_id = ?2 AND body IS NOT NULL",
                )?
                .execute(params![app_key, geofence_id, to_i64(next_change(&feed))])?;
            if n > 0 {
                c.prepare_cached(
                    "DELETE FROM fence_states WHERE app_key = ?1 AND geofence_id = ?2",
                )?
                .execute(params![app_key, geofence_id])?;
            }
            Ok(n > 0)
        }))
    }

    fn get_geofence(
        &self,
        app_key: &str,
        geofence_id: &str,
    ) -> StoreFuture<'_, Option<GeofenceRecord>> {
        let (app_key, geofence_id) = (app_key.to_string(), geofence_id.to_string());
        Box::pin(self.read(move |c| {
            let body: Option<Option<String>> = c
                .prepare_cached(
                    "SELECT body FROM geofences WHERE app_key = ?1 AND geofence_id = ?2",
                )?
                .query_row(params![app_key, geofence_id], |r| r.get(0))
                .optional()?;
            body.flatten().map(|b| geofence_from_json(&b)).transpose()
        }))
    }

    fn list_geofences(&self, app_key: &str) -> StoreFuture<'_, Vec<GeofenceRecord>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT body FROM geofences WHERE app_key = ?1 AND body IS NOT NULL
                 ORDER BY created_ms, geofence_id",
            )?;
            let bodies = st
                .query_map([app_key], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            bodies.iter().map(|b| geofence_from_json(b)).collect()
        }))
    }

    fn fence_states(&self, app_key: &str, ordinal: u32) -> StoreFuture<'_, Vec<FenceState>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {FENCE_STATE_COLUMNS} FROM fence_states WHERE app_key = ?1 AND ordinal = ?2
                 ORDER BY geofence_id"
            ))?;
            let rows = st
                .query_map(params![app_key, ordinal], fence_state_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }))
    }

    fn write_fence_states(
        &self,
        states: Vec<FenceState>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |c| {
            let mut st = c.prepare_cached(
                "INSERT INTO fence_states (app_key, ordinal, geofence_id, inside, entered_ms,
                    stay_due_ms, lat, lon, fired, last_enter_ms, last_leave_ms, last_stay_ms)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12
                 WHERE EXISTS (SELECT 1 FROM geofences
                               WHERE app_key = ?1 AND geofence_id = ?3 AND body IS NOT NULL)
                 ON CONFLICT (app_key, ordinal, geofence_id) DO UPDATE SET
                    inside = excluded.inside, entered_ms = excluded.entered_ms,
                    stay_due_ms = excluded.stay_due_ms, lat = excluded.lat, lon = excluded.lon,
                    fired = fired | excluded.fired,
                    last_enter_ms = MAX(last_enter_ms, excluded.last_enter_ms),
                    last_leave_ms = MAX(last_leave_ms, excluded.last_leave_ms),
                    last_stay_ms = MAX(last_stay_ms, excluded.last_stay_ms)",
            )?;
            for s in &states {
                st.execute(params![
                    s.app_key,
                    s.ordinal,
                    s.geofence_id,
                    s.inside,
                    to_i64(s.entered_ms),
                    s.stay_due_ms.map(to_i64),
                    s.lat,
                    s.lon,
                    s.fired,
                    to_i64(s.last_fired_ms[0]),
                    to_i64(s.last_fired_ms[1]),
                    to_i64(s.last_fired_ms[2]),
                ])?;
            }
            write_events(c, &events)
        }))
    }

    fn due_stays(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<FenceState>> {
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {FENCE_STATE_COLUMNS} FROM fence_states
                 WHERE stay_due_ms IS NOT NULL AND stay_due_ms <= ?1
                 ORDER BY stay_due_ms, app_key, ordinal, geofence_id LIMIT ?2"
            ))?;
            let rows = st
                .query_map(
                    params![to_i64(now_ms), to_i64(limit as u64)],
                    fence_state_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        }))
    }

    fn settle_stay(
        &self,
        state: FenceState,
        fired_ms: Option<u64>,
        next_due_ms: Option<u64>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, bool> {
        Box::pin(self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE fence_states SET stay_due_ms = ?5,
                        fired = fired | CASE WHEN ?6 IS NULL THEN 0 ELSE ?7 END,
                        last_stay_ms = COALESCE(?6, last_stay_ms)
                     WHERE app_key = ?1 AND ordinal = ?2 AND geofence_id = ?3 AND inside = 1
                       AND entered_ms = ?4 AND stay_due_ms = ?8",
                )?
                .execute(params![
                    state.app_key,
                    state.ordinal,
                    state.geofence_id,
                    to_i64(state.entered_ms),
                    next_due_ms.map(to_i64),
                    fired_ms.map(to_i64),
                    FENCE_STAY,
                    // The pending stay the caller read: once settled (ended or put off), a
                    // second settle of it finds it moved on.
                    state.stay_due_ms.map(to_i64),
                ])?;
            if n == 0 {
                return Ok(false);
            }
            write_events(c, &events)?;
            Ok(true)
        }))
    }
}

const FENCE_STATE_COLUMNS: &str = "app_key, ordinal, geofence_id, inside, entered_ms, stay_due_ms,
    lat, lon, fired, last_enter_ms, last_leave_ms, last_stay_ms";

fn fence_state_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FenceState> {
    Ok(FenceState {
        app_key: r.get(0)?,
        ordinal: r.get(1)?,
        geofence_id: r.get(2)?,
        inside: r.get(3)?,
        entered_ms: to_u64(r.get(4)?),
        stay_due_ms: r.get::<_, Option<i64>>(5)?.map(to_u64),
        lat: r.get(6)?,
        lon: r.get(7)?,
        fired: r.get(8)?,
        last_fired_ms: [to_u64(r.get(9)?), to_u64(r.get(10)?), to_u64(r.get(11)?)],
    })
}

impl SqliteStore {
    fn put_saved(
        &self,
        (app_key, kind, id): (String, SavedKind, String),
        created_ms: u64,
        body: Result<String, serde_json::Error>,
    ) -> StoreFuture<'_, ()> {
        let feed = self.inner.feed.clone();
        Box::pin(self.write(move |c| {
            let body = body.map_err(|e| StoreError::Corrupt(e.to_string()))?;
            c.prepare_cached(
                "INSERT INTO saved_audiences (app_key, kind, id, body, created_ms, change_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (app_key, kind, id) DO UPDATE SET body = excluded.body,
                    created_ms = excluded.created_ms, change_seq = excluded.change_seq",
            )?
            .execute(params![
                app_key,
                kind.as_str(),
                id,
                body,
                to_i64(created_ms),
                to_i64(next_change(&feed))
            ])?;
            Ok(())
        }))
    }

    fn get_saved<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        app_key: &str,
        kind: SavedKind,
        id: &str,
    ) -> StoreFuture<'_, Option<T>> {
        let (app_key, id) = (app_key.to_string(), id.to_string());
        Box::pin(self.read(move |c| {
            let body: Option<Option<String>> = c
                .prepare_cached(
                    "SELECT body FROM saved_audiences WHERE app_key = ?1 AND kind = ?2 AND id = ?3",
                )?
                .query_row(params![app_key, kind.as_str(), id], |r| r.get(0))
                .optional()?;
            body.flatten()
                .map(|b| saved_from_json(kind, &b))
                .transpose()
        }))
    }

    fn list_saved<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        app_key: &str,
        kind: SavedKind,
    ) -> StoreFuture<'_, Vec<T>> {
        let app_key = app_key.to_string();
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT body FROM saved_audiences
                 WHERE app_key = ?1 AND kind = ?2 AND body IS NOT NULL
                 ORDER BY created_ms, id",
            )?;
            let bodies = st
                .query_map(params![app_key, kind.as_str()], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            bodies.iter().map(|b| saved_from_json(kind, b)).collect()
        }))
    }
}

fn saved_from_json<T: serde::de::DeserializeOwned>(kind: SavedKind, body: &str) -> StoreResult<T> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("{}: {e}", kind.as_str())))
}

impl SavedAudienceStore for SqliteStore {
    fn put_segment(&self, segment: SegmentRecord) -> StoreFuture<'_, ()> {
        let key = (
            segment.app_key.clone(),
            SavedKind::Segment,
            segment.segment_id.clone(),
        );
        self.put_saved(key, segment.created_ms, serde_json::to_string(&segment))
    }

    fn put_abtest(&self, test: AbTestRecord) -> StoreFuture<'_, ()> {
        let key = (
            test.app_key.clone(),
            SavedKind::AbTest,
            test.abtest_id.clone(),
        );
        self.put_saved(key, test.created_ms, serde_json::to_string(&test))
    }

    fn delete_saved(&self, app_key: &str, kind: SavedKind, id: &str) -> StoreFuture<'_, bool> {
        let (app_key, id) = (app_key.to_string(), id.to_string());
        let feed = self.inner.feed.clone();
        Box::pin(self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE saved_audiences SET body = NULL, change_seq = ?4
                     WHERE app_key = ?1 AND kind = ?2 AND id = ?3 AND body IS NOT NULL",
                )?
                .execute(params![
                    app_key,
                    kind.as_str(),
                    id,
                    to_i64(next_change(&feed))
                ])?;
            Ok(n > 0)
        }))
    }

    fn get_segment(&self, app_key: &str, id: &str) -> StoreFuture<'_, Option<SegmentRecord>> {
        self.get_saved(app_key, SavedKind::Segment, id)
    }

    fn get_abtest(&self, app_key: &str, id: &str) -> StoreFuture<'_, Option<AbTestRecord>> {
        self.get_saved(app_key, SavedKind::AbTest, id)
    }

    fn list_segments(&self, app_key: &str) -> StoreFuture<'_, Vec<SegmentRecord>> {
        self.list_saved(app_key, SavedKind::Segment)
    }

    fn list_abtests(&self, app_key: &str) -> StoreFuture<'_, Vec<AbTestRecord>> {
        self.list_saved(app_key, SavedKind::AbTest)
    }

    fn abtest_pushes(&self, app_key: &str, abtest_id: &str) -> StoreFuture<'_, Vec<u64>> {
        let (app_key, abtest_id) = (app_key.to_string(), abtest_id.to_string());
        Box::pin(self.read(move |c| {
            let mut st = c.prepare_cached(
                "SELECT msg_id FROM abtest_pushes WHERE app_key = ?1 AND abtest_id = ?2
                 ORDER BY msg_id",
            )?;
            let ids = st
                .query_map(params![app_key, abtest_id], |r| r.get::<_, i64>(0))?
                .map(|r| r.map(to_u64))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ids)
        }))
    }
}

fn geofence_from_json(body: &str) -> StoreResult<GeofenceRecord> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("geofence: {e}")))
}

impl Storage for SqliteStore {
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            // The writer takes it after every write queued before it, so once it is
            // answered they are all durable and the WAL is empty.
            if self.inner.jobs.send(Msg::Close(tx)).await.is_err() {
                return Ok(()); // closed already
            }
            rx.await.map_err(|_| StoreError::Closed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::{Audience, PlatformSet};
    use serde_json::json;

    fn device(ordinal: u32, rid: &str) -> DeviceRecord {
        DeviceRecord {
            app_key: Arc::from("k"),
            ordinal,
            registration_id: rid.into(),
            install_id: None,
            secret_hash: [7; 32],
            platform: Platform::Ios,
            alias: Some("al".into()),
            tags: vec!["t1".into()],
            mobile: None,
            region: None,
            push_tokens: Map::new(),
            apns_production: true,
            info: Map::new(),
            created_ms: 1,
            updated_ms: 1,
        }
    }

    #[tokio::test]
    async fn an_older_devices_table_gets_a_region_column_and_keeps_its_devices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE devices (app_key TEXT NOT NULL, ordinal INTEGER NOT NULL,
                    registration_id TEXT NOT NULL UNIQUE, install_id TEXT,
                    secret_hash BLOB NOT NULL, platform TEXT NOT NULL, alias TEXT,
                    tags TEXT NOT NULL, mobile TEXT, push_tokens TEXT NOT NULL,
                    apns_production INTEGER NOT NULL, info TEXT NOT NULL,
                    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
                    PRIMARY KEY (app_key, ordinal));
                 INSERT INTO devices VALUES ('k', 0, 'old', NULL, zeroblob(32), 'android', NULL,
                    '[]', NULL, '{}', 1, '{}', 1, 1);",
            )
            .unwrap();
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        let load = |store: &SqliteStore| {
            let mut rx = store.load_devices("k");
            async move {
                let mut all = Vec::new();
                while let Some(chunk) = rx.recv().await {
                    all.extend(chunk.unwrap());
                }
                all
            }
        };
        let before = load(&store).await;
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].region, None);
        let mut d = device(1, "new");
        d.region = Some("11000000".into());
        store.put_device(d).await.unwrap();
        let after = load(&store).await;
        let regions: Vec<Option<&str>> = after.iter().map(|d| d.region.as_deref()).collect();
        assert_eq!(regions, [None, Some("11000000")]);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_database_of_an_older_pigeon_gets_the_columns_and_tables_changed_since() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE pushes (msg_id INTEGER PRIMARY KEY, app_key TEXT NOT NULL,
                    sent_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, body TEXT NOT NULL,
                    audience BLOB NOT NULL);
                 CREATE TABLE deliveries (msg_id INTEGER PRIMARY KEY, delivered BLOB);
                 CREATE TABLE callback_events (id INTEGER PRIMARY KEY AUTOINCREMENT,
                    app_key TEXT NOT NULL, command TEXT NOT NULL, body TEXT NOT NULL,
                    at_ms INTEGER NOT NULL);
                 CREATE INDEX callback_events_by_command ON callback_events (app_key, command, id);
                 CREATE TABLE callback_endpoints (id INTEGER PRIMARY KEY AUTOINCREMENT,
                    app_key TEXT NOT NULL, url TEXT NOT NULL, commands TEXT NOT NULL,
                    basic_auth INTEGER NOT NULL, signing_secret TEXT NOT NULL,
                    created_ms INTEGER NOT NULL, start_event_id INTEGER NOT NULL);
                 CREATE TABLE callback_batches (delivery_id TEXT PRIMARY KEY,
                    endpoint_id INTEGER NOT NULL, command TEXT NOT NULL, events TEXT NOT NULL,
                    attempts INTEGER NOT NULL, next_ms INTEGER NOT NULL, first_ms INTEGER NOT NULL,
                    dead INTEGER NOT NULL, last_error TEXT NOT NULL);
                 INSERT INTO callback_endpoints (app_key, url, commands, basic_auth,
                    signing_secret, created_ms, start_event_id)
                    VALUES ('k', 'http://x/', '[]', 1, 's', 1, 0);
                 INSERT INTO callback_events (app_key, command, body, at_ms)
                    VALUES ('k', 'Push.Accepted', '{\"n\":1}', 10),
                           ('k', 'Push.Accepted', '{\"n\":2}', 11),
                           ('k', 'Push.Accepted', '{\"n\":3}', 12);
                 DELETE FROM callback_events WHERE id = 3;",
            )
            .unwrap();
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        // An endpoint from before formats sends Pigeon's.
        let endpoints = store.list_callbacks().await.unwrap();
        assert_eq!(
            endpoints
                .iter()
                .map(|e| (e.url.as_str(), e.format))
                .collect::<Vec<_>>(),
            [("http://x/", CallbackFormat::Pigeon)]
        );
        // The outbox of an event a row is now chunks: same ids, same bodies, and ids go on
        // after the last one handed out (3, pruned), never reused.
        let old = store
            .events_after("k", None, "Push.Accepted", 0, 10)
            .await
            .unwrap();
        let ids_bodies: Vec<(u64, &str)> = old.iter().map(|e| (e.id, e.body.as_str())).collect();
        assert_eq!(ids_bodies, [(1, r#"{"n":1}"#), (2, r#"{"n":2}"#)]);
        store
            .append_events(vec![NewEvent {
                app_key: "k".into(),
                command: "Push.Accepted".into(),
                body: r#"{"n":4}"#.into(),
                at_ms: 13,
                endpoint_id: None,
            }])
            .await
            .unwrap();
        let new = store
            .events_after("k", None, "Push.Accepted", 2, 10)
            .await
            .unwrap();
        assert_eq!(new.iter().map(|e| e.id).collect::<Vec<_>>(), [4]);
        store.close().await.unwrap();
        let c = Connection::open(&path).unwrap();
        let columns = |table: &str| -> Vec<String> {
            c.prepare("SELECT name FROM pragma_table_info(?1)")
                .unwrap()
                .query_map([table], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert!(columns("pushes").ends_with(&[
            "expiry_reported".into(),
            "recalled_ms".into(),
            "overridden_by".into()
        ]));
        assert!(columns("deliveries").contains(&"sent".into()));
        assert!(columns("callback_events").is_empty());
        assert!(columns("callback_endpoints").ends_with(&[
            "push_level".into(),
            "failing_since_ms".into(),
            "disabled_ms".into(),
            "format".into()
        ]));
        assert!(columns("callback_batches")
            .ends_with(&["first_event_id".into(), "last_event_id".into()]));
        let indexes: Vec<String> = c
            .prepare("SELECT name FROM pragma_index_list('callback_event_chunks')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(indexes, ["callback_event_chunks_by_target"]);
    }

    #[tokio::test]
    async fn an_endpoint_keeps_its_format_and_a_push_level_one_is_pigeon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        let endpoint = CallbackEndpoint {
            id: 0,
            app_key: "k".into(),
            url: "http://x/".into(),
            commands: vec!["Push.Event".into()],
            basic_auth: true,
            signing_secret: "s".into(),
            created_ms: 0,
            start_event_id: 0,
            push_level: false,
            failing_since_ms: None,
            disabled_ms: None,
            format: CallbackFormat::Tencent,
        };
        let id = store.add_callback(endpoint.clone()).await.unwrap();
        let pushed = store
            .push_endpoint(CallbackEndpoint {
                url: "http://y/".into(),
                ..endpoint.clone()
            })
            .await
            .unwrap();
        assert_eq!(pushed.format, CallbackFormat::Pigeon);
        store.close().await.unwrap();
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        let formats: Vec<(u64, CallbackFormat, bool)> = store
            .list_callbacks()
            .await
            .unwrap()
            .iter()
            .map(|e| (e.id, e.format, e.push_level))
            .collect();
        assert_eq!(
            formats,
            [
                (id, CallbackFormat::Tencent, false),
                (pushed.id, CallbackFormat::Pigeon, true)
            ]
        );
        store.close().await.unwrap();
        // A format this build does not know is a corrupt row, not Pigeon's by mistake.
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE callback_endpoints SET format = 'xml' WHERE id = ?1",
                [id as i64],
            )
            .unwrap();
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        assert!(matches!(
            store.list_callbacks().await,
            Err(StoreError::Corrupt(m)) if m.contains("xml")
        ));
    }

    #[tokio::test]
    async fn enabling_moves_only_a_disabled_endpoint_of_that_app_past_what_it_missed() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db"), Synchronous::Normal).unwrap();
        let endpoint = CallbackEndpoint {
            id: 0,
            app_key: "k".into(),
            url: "http://x/".into(),
            commands: Vec::new(),
            basic_auth: true,
            signing_secret: "s".into(),
            created_ms: 0,
            start_event_id: 0,
            push_level: false,
            failing_since_ms: None,
            disabled_ms: None,
            format: CallbackFormat::Pigeon,
        };
        let id = store.add_callback(endpoint).await.unwrap();
        let event = || NewEvent {
            app_key: "k".into(),
            command: "Push.Accepted".into(),
            body: "{}".into(),
            at_ms: 0,
            endpoint_id: None,
        };
        store.append_events(vec![event(), event()]).await.unwrap();
        let batch = CallbackBatch {
            delivery_id: "d1".into(),
            endpoint_id: id,
            command: "Push.Accepted".into(),
            events: r#"[{"EventId":"1"}]"#.into(),
            attempts: 0,
            next_ms: 0,
            first_ms: 0,
            dead: false,
            last_error: String::new(),
            first_event_id: 1,
            last_event_id: 1,
        };
        store
            .create_batches(id, "Push.Accepted", vec![batch], 1)
            .await
            .unwrap();
        let cursor = || store.callback_cursor(id, "Push.Accepted");
        assert_eq!(cursor().await.unwrap(), Some(1));
        // A late write of an earlier window does not move it back.
        store
            .create_batches(id, "Push.Accepted", Vec::new(), 0)
            .await
            .unwrap();
        assert_eq!(cursor().await.unwrap(), Some(1));
        // A healthy endpoint keeps its place (event 2 is still to send): enabling is a no-op.
        assert!(store.enable_callback("k", id).await.unwrap());
        assert_eq!(cursor().await.unwrap(), Some(1));
        assert_eq!(
            store
                .events_after("k", None, "Push.Accepted", 0, 10)
                .await
                .unwrap()
                .len(),
            2
        );
        // Another app cannot touch it.
        store
            .set_endpoint_health(id, Some(1), Some(2))
            .await
            .unwrap();
        assert!(!store.enable_callback("other", id).await.unwrap());
        let listed = store.list_callbacks().await.unwrap();
        assert_eq!(listed[0].disabled_ms, Some(2));
        // Enabled again, it starts after what it missed while disabled.
        assert!(store.enable_callback("k", id).await.unwrap());
        let listed = store.list_callbacks().await.unwrap();
        assert_eq!(
            (listed[0].disabled_ms, listed[0].failing_since_ms),
            (None, None)
        );
        assert_eq!(listed[0].start_event_id, 2);
        assert_eq!(cursor().await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn apps_devices_pushes_and_acks_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db"), Synchronous::Normal).unwrap();
        let app = AppRecord {
            app_key: "k".into(),
            master_secret: "s".into(),
            name: "n".into(),
            created_ms: 5,
        };
        store.create_app(app.clone()).await.unwrap();
        assert!(matches!(
            store.create_app(app.clone()).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.find_app("k").await.unwrap(), Some(app));
        assert_eq!(store.find_app("zz").await.unwrap(), None);

        store.put_device(device(0, "r0")).await.unwrap();
        let mut d = device(0, "r0");
        d.tags = vec!["x".into(), "y".into()];
        store.put_device(d.clone()).await.unwrap();
        store.put_device(device(1, "r1")).await.unwrap();
        let mut chunks = store.load_devices("k");
        let mut devices = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            devices.extend(chunk.unwrap());
        }
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0].tags, d.tags);

        let mut push = Push::new(PlatformSet::all(), Audience::All);
        push.msg_id = 42;
        push.sent_ms = 1_000;
        push.content.message = Some(Default::default());
        push.labels.group = Some("promo".into());
        let audience: RoaringBitmap = [0u32, 1].into_iter().collect();
        store
            .insert_push("k", &push, &audience, Vec::new())
            .await
            .unwrap();
        let delivered: RoaringBitmap = [1u32].into_iter().collect();
        let sent: RoaringBitmap = [1u32, 3].into_iter().collect();
        let checkpoint = Checkpoint {
            msg_id: 42,
            sent,
            delivered,
            vendors: Vec::new(),
        };
        store
            .save_delivered(vec![checkpoint], Vec::new())
            .await
            .unwrap();
        let live = store.load_live_pushes("k", 2_000).await.unwrap();
        assert_eq!(live.len(), 1);
        assert_eq!(live[0].push, push);
        assert_eq!(live[0].audience, audience);
        assert_eq!(live[0].delivered.iter().collect::<Vec<_>>(), [1]);
        assert_eq!(live[0].sent.iter().collect::<Vec<_>>(), [1, 3]);
        let one = store.load_push("k", 42).await.unwrap().unwrap();
        assert_eq!(one.sent.len(), 2);
        assert!(store.load_push("other", 42).await.unwrap().is_none());
        // A click, and the counts of the pushes of a period.
        let click = DeviceEvent {
            app_key: "k".into(),
            ordinal: 1,
            kind: "click".into(),
            msg_id: Some(42),
            data: Value::Null,
            at_ms: 1_500,
        };
        store.record_event(click.clone(), Vec::new()).await.unwrap();
        store.record_event(click, Vec::new()).await.unwrap();
        let counts = PushCounts {
            msg_id: 42,
            sent_ms: 1_000,
            group: Some("promo".into()),
            targets: 2,
            sent: 2,
            delivered: 1,
            clicked: 1,
        };
        assert_eq!(
            store.push_counts_between("k", 1_000, 1_001).await.unwrap(),
            [counts]
        );
        assert!(store
            .push_counts_between("k", 0, 1_000)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .push_counts_between("other", 0, 5_000)
            .await
            .unwrap()
            .is_empty());
        store
            .set_last_online("k", 1, 1_200, Vec::new())
            .await
            .unwrap();
        assert_eq!(store.seen_between("k", 1_000, 2_000).await.unwrap(), [1]);
        assert!(store
            .seen_between("k", 1_201, 2_000)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .load_live_pushes("k", push.expires_ms())
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.max_msg_id().await.unwrap(), 42);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn old_location_rows_become_one_row_per_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        SqliteStore::open(&path, Synchronous::Normal)
            .unwrap()
            .close()
            .await
            .unwrap();
        // What an older Pigeon wrote: a row per location report, clicks beside them.
        let c = Connection::open(&path).unwrap();
        for (ordinal, lat, at) in [(1, 10.0, 1), (2, 20.0, 2), (1, 11.5, 3), (2, 21.0, 4)] {
            c.execute(
                "INSERT INTO device_events (app_key, ordinal, kind, msg_id, data, at_ms)
                 VALUES ('k', ?1, 'location', NULL, ?2, ?3)",
                params![
                    ordinal,
                    json!({"lat": lat, "lon": 5, "accuracy_m": 3.0}).to_string(),
                    at
                ],
            )
            .unwrap();
        }
        c.execute(
            "INSERT INTO device_events (app_key, ordinal, kind, msg_id, data, at_ms)
             VALUES ('k', 1, 'click', 42, 'null', 5)",
            [],
        )
        .unwrap();
        drop(c);
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        let one = store.location("k", 1).await.unwrap().unwrap();
        assert_eq!(
            one,
            Location {
                lat: 11.5,
                lon: 5.0,
                accuracy_m: Some(3.0),
                at_ms: 3
            }
        );
        assert_eq!(store.location("k", 2).await.unwrap().unwrap().lat, 21.0);
        assert_eq!(store.location("k", 3).await.unwrap(), None);
        assert_eq!(store.clicked("k", 42).await.unwrap(), [1]);
        // Reports replace the row: still one per device.
        let at = |lat, at_ms| Location {
            lat,
            lon: 1.0,
            accuracy_m: None,
            at_ms,
        };
        store
            .save_locations("k", vec![(1, at(1.0, 10)), (3, at(3.0, 10))])
            .await
            .unwrap();
        store
            .save_locations("k", vec![(1, at(2.0, 11))])
            .await
            .unwrap();
        assert_eq!(store.location("k", 1).await.unwrap(), Some(at(2.0, 11)));
        store.close().await.unwrap();
        let c = Connection::open(&path).unwrap();
        let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM device_locations"), 3);
        assert_eq!(count("SELECT COUNT(*) FROM device_events"), 1);
    }

    fn wal_len(db: &Path) -> u64 {
        std::fs::metadata(wal_path(db))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn the_wal_is_kept_under_its_limit_and_emptied_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = SqliteStore::open(&path, Synchronous::Normal).unwrap();
        let location = |i: u32| Location {
            lat: f64::from(i % 90),
            lon: 0.0,
            accuracy_m: None,
            at_ms: u64::from(i),
        };
        let grow = || async {
            for round in 0..20u32 {
                let batch = (0..2000).map(|o| (o, location(o + round))).collect();
                store.save_locations("k", batch).await.unwrap();
            }
        };
        // A reader of the first snapshot keeps the checkpointer from copying the WAL and
        // SQLite from starting it over, so it grows however often the checkpointer runs.
        let reader = open_connection(&path, Synchronous::Normal).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let _: i64 = reader
            .query_row("SELECT COUNT(*) FROM device_locations", [], |r| r.get(0))
            .unwrap();
        grow().await;
        drop(reader);
        assert!(wal_len(&path) > 1 << 20, "{}", wal_len(&path));
        // Over the limit, the checkpoint truncates the WAL.
        let c = open_connection(&path, Synchronous::Normal).unwrap();
        bound_wal(&c, &wal_path(&path), 1 << 20).unwrap();
        assert_eq!(wal_len(&path), 0);
        drop(c);
        // Close copies the rest in and empties the file; writes after it are refused.
        grow().await;
        assert!(wal_len(&path) > 0);
        store.close().await.unwrap();
        assert_eq!(wal_len(&path), 0);
        assert!(matches!(
            store.save_locations("k", vec![(1, location(1))]).await,
            Err(StoreError::Closed)
        ));
        store.close().await.unwrap();
        let c = Connection::open(&path).unwrap();
        let rows: i64 = c
            .query_row("SELECT COUNT(*) FROM device_locations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2000);
    }

    #[test]
    fn the_writer_rewinds_a_wal_it_has_copied_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let c = open_connection(&path, Synchronous::Normal).unwrap();
        c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        c.pragma_update(None, "journal_size_limit", 64 << 10)
            .unwrap();
        c.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let write = |n: usize| {
            for _ in 0..n {
                c.execute("INSERT INTO t VALUES (randomblob(3000))", [])
                    .unwrap();
            }
        };
        write(300);
        let grown = wal_len(&path);
        assert!(grown > 1 << 20, "{grown}");
        // Without a copy to the end, the WAL only grows.
        write(1);
        assert!(wal_len(&path) > grown);
        // Copied to its end, the next commit starts it over and cuts the file back.
        rewind_wal(&c);
        write(1);
        assert!(wal_len(&path) <= 64 << 10, "{}", wal_len(&path));
        let rows: i64 = c
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 302);
    }

    #[test]
    fn the_writer_waits_for_the_checkpointer_in_fine_steps_and_gives_up_after_two_minutes() {
        let waited = |attempts: std::ops::Range<i32>| {
            attempts
                .map(|a| writer_wait_step(a).unwrap())
                .sum::<Duration>()
        };
        // 100 steps of 100 µs: 10 ms, not SQLite's 103 ms for its first 9 waits.
        assert_eq!(waited(0..100), Duration::from_millis(10));
        assert_eq!(waited(0..120_100), Duration::from_millis(10 + 120_000));
        assert_eq!(writer_wait_step(120_100), None);
        assert!(!writer_waits(120_100));
    }

    #[tokio::test]
    async fn a_failing_write_does_not_spoil_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db"), Synchronous::Normal).unwrap();
        let app = AppRecord {
            app_key: "k".into(),
            master_secret: "s".into(),
            name: "n".into(),
            created_ms: 5,
        };
        let other = AppRecord {
            app_key: "k2".into(),
            ..app.clone()
        };
        let (a, b, c) = tokio::join!(
            store.create_app(app.clone()),
            store.create_app(app.clone()),
            store.create_app(other)
        );
        assert_eq!([a.is_ok(), b.is_ok()].iter().filter(|x| **x).count(), 1);
        assert!(c.is_ok());
        assert_eq!(store.list_apps().await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn vendor_credentials_and_vapid_keys_are_sealed_at_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // Written by a Pigeon from before sealing: plain text.
        {
            let conn = open_connection(&path, Synchronous::Full).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute(
                "INSERT INTO vendor_credentials (app_key, vendor, body, updated_ms)
                 VALUES ('a1', 'xiaomi', '{\"app_secret\":\"old-secret\"}', 1)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, Synchronous::Full).unwrap();
        store
            .set_vendor_credentials(
                "a1",
                "huawei",
                r#"{"client_secret":"new-secret"}"#.into(),
                2,
            )
            .await
            .unwrap();
        store
            .ensure_vapid_keys("a1", "vapid-private".into(), "vapid-public".into())
            .await
            .unwrap();
        // Read back in the clear.
        let mine = store.vendor_credentials("a1").await.unwrap();
        assert_eq!(
            mine[0],
            (
                "huawei".into(),
                r#"{"client_secret":"new-secret"}"#.into(),
                2
            )
        );
        assert_eq!(mine[1].1, r#"{"app_secret":"old-secret"}"#);
        assert_eq!(store.all_vendor_credentials().await.unwrap().len(), 2);
        assert_eq!(
            store.vapid_keys("a1").await.unwrap(),
            Some(("vapid-private".into(), "vapid-public".into()))
        );
        // The database file itself holds none of them in the clear.
        let conn = Connection::open(&path).unwrap();
        let bodies: Vec<String> = conn
            .prepare("SELECT body FROM vendor_credentials UNION ALL SELECT private_key FROM app_vapid_keys")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(bodies.len(), 3);
        for b in &bodies {
            assert!(SealingKey::is_sealed(b), "{b}");
            assert!(!b.contains("secret") && !b.contains("vapid-private"), "{b}");
        }
        // Without its key (another data directory's), they do not open.
        drop(store);
        std::fs::remove_file(dir.path().join(crate::sealed::KEY_FILE)).unwrap();
        let store = SqliteStore::open(&path, Synchronous::Full).unwrap();
        assert!(store.vendor_credentials("a1").await.is_err());
        assert!(store.all_vendor_credentials().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_firing_goes_out_only_while_its_schedule_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("db"), Synchronous::Normal).unwrap();
        let schedule = ScheduleRecord {
            schedule_id: "s1".into(),
            app_key: "k".into(),
            name: "n".into(),
            enabled: true,
            trigger: Value::Null,
            push: Value::Null,
            created_ms: 1,
            next_ms: Some(1_000),
            door: "jpush".into(),
        };
        store.put_schedule(schedule.clone()).await.unwrap();
        let firing = |msg_id: u64, due_ms: u64| {
            let mut p = Push::new(PlatformSet::all(), Audience::All);
            p.msg_id = msg_id;
            p.sent_ms = 1_000;
            p.content.message = Some(Default::default());
            p.schedule = Some(pigeon_core::ScheduleFiring {
                schedule_id: "s1".into(),
                due_ms,
                next_ms: Some(2_000),
            });
            p
        };
        let one: RoaringBitmap = [0u32].into_iter().collect();
        // Not the time it waits for: nothing is stored.
        let stale = store
            .insert_push("k", &firing(1, 500), &one, Vec::new())
            .await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        assert!(store.load_push("k", 1).await.unwrap().is_none());
        store
            .insert_push("k", &firing(2, 1_000), &one, Vec::new())
            .await
            .unwrap();
        assert_eq!(store.schedule_runs("s1").await.unwrap().len(), 1);
        // Fired for 1000 already: the same firing again is refused.
        let again = store
            .insert_push("k", &firing(3, 1_000), &one, Vec::new())
            .await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        // Deleted while it fires: refused.
        store.delete_schedule("k", "s1").await.unwrap();
        let deleted = store
            .insert_push("k", &firing(4, 2_000), &one, Vec::new())
            .await;
        assert!(
            matches!(deleted, Err(StoreError::Conflict(_))),
            "{deleted:?}"
        );
        assert!(store.load_push("k", 4).await.unwrap().is_none());
    }
}
