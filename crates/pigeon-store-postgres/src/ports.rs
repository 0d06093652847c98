//! The ports of `pigeon-store`, on PostgreSQL.

use crate::pushes::PushRow;
use crate::{col, execute, pg_err, query, query_one, query_opt, PostgresStore, CLOSE_WAIT};
use deadpool_postgres::GenericClient;
use pigeon_core::{Platform, Push};
use pigeon_store::ports::*;
use pigeon_store::{
    batch_events_json, decode_vendor_sets, encode_vendor_sets, merge_vendor_sets, AbTestRecord,
    AppRecord, AppSettings, CallbackBatch, CallbackEndpoint, CallbackFormat, Change, Checkpoint,
    DeviceEvent, DeviceRecord, FenceState, FileRecord, GeofenceRecord, GroupRecord, Lease,
    Location, NewEvent, PushCounts, SavedKind, ScheduleRecord, ScheduleRun, SegmentRecord, SmsSend,
    StoreError, StoreFuture, StoreResult, StoredEvent, StoredPush, FENCE_STAY,
};
use roaring::RoaringBitmap;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_postgres::Row;

/// Devices sent at once by `load_devices`.
const DEVICE_CHUNK: usize = 4096;
/// Most events in one outbox row: a reader of a few events reads at most this many.
const CHUNK_EVENTS: usize = 500;
/// Change rows of one transaction get numbers base + 0 ..= base + MAX_CHANGE_STEP (the rest
/// share the last).
const MAX_CHANGE_STEP: i64 = 0xFFFF;
/// The longest lease taken (a larger ttl is cut to it): keeps `now + ttl` in range.
const MAX_TTL_MS: u64 = 100 * 365 * 86_400_000;

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} out of range")))
}

fn json_err(what: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn json_map(text: &str, what: &str) -> StoreResult<Map<String, Value>> {
    serde_json::from_str(text).map_err(json_err(what))
}

fn serialize_bitmap(b: &RoaringBitmap) -> StoreResult<Vec<u8>> {
    let mut out = Vec::with_capacity(b.serialized_size());
    b.serialize_into(&mut out)?;
    Ok(out)
}

fn deserialize_bitmap(bytes: &[u8], what: &str) -> StoreResult<RoaringBitmap> {
    RoaringBitmap::deserialize_from(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The union of the bitmaps of every node's row (none: empty).
fn union_bitmaps(rows: Option<Vec<Option<Vec<u8>>>>, what: &str) -> StoreResult<RoaringBitmap> {
    let mut out = RoaringBitmap::new();
    for bytes in rows.into_iter().flatten().flatten() {
        out |= deserialize_bitmap(&bytes, what)?;
    }
    Ok(out)
}

/// Events as the rows of the outbox: grouped by target and command (in their order within
/// each), up to [`CHUNK_EVENTS`] a row, one JSON object a line. Passed to the schema's
/// `pigeon_write_events` as six arrays.
#[derive(Default)]
pub(crate) struct EventRows {
    pub app: Vec<String>,
    pub target: Vec<i64>,
    pub command: Vec<String>,
    pub at: Vec<i64>,
    pub n: Vec<i32>,
    pub bodies: Vec<String>,
}

impl EventRows {
    /// Appends another write's rows after these.
    pub(crate) fn extend(&mut self, other: &EventRows) {
        self.app.extend_from_slice(&other.app);
        self.target.extend_from_slice(&other.target);
        self.command.extend_from_slice(&other.command);
        self.at.extend_from_slice(&other.at);
        self.n.extend_from_slice(&other.n);
        self.bodies.extend_from_slice(&other.bodies);
    }

    fn new(events: &[NewEvent]) -> EventRows {
        let mut groups: Vec<(&str, Option<u64>, &str, Vec<&NewEvent>)> = Vec::new();
        for e in events {
            let key = (e.app_key.as_str(), e.endpoint_id, e.command.as_str());
            match groups.iter_mut().find(|g| (g.0, g.1, g.2) == key) {
                Some(g) => g.3.push(e),
                None => groups.push((key.0, key.1, key.2, vec![e])),
            }
        }
        let mut rows = EventRows::default();
        for (app_key, endpoint_id, command, group) in groups {
            for chunk in group.chunks(CHUNK_EVENTS) {
                let mut bodies =
                    String::with_capacity(chunk.iter().map(|e| e.body.len() + 1).sum());
                for (i, e) in chunk.iter().enumerate() {
                    if i > 0 {
                        bodies.push('\n');
                    }
                    // A JSON text has no raw line break, so a line is an event.
                    bodies.push_str(e.body.trim());
                }
                rows.app.push(app_key.to_string());
                rows.target.push(endpoint_id.map_or(0, to_i64));
                rows.command.push(command.to_string());
                rows.at
                    .push(to_i64(chunk.iter().map(|e| e.at_ms).min().unwrap_or(0)));
                rows.n.push(chunk.len() as i32);
                rows.bodies.push(bodies);
            }
        }
        rows
    }
}

/// The columns of a device row, from `ordinal` on.
const DEVICE_COLUMNS: &str = "ordinal, registration_id, install_id, secret_hash, platform, \
    alias, tags, mobile, push_tokens, apns_production, info, created_ms, updated_ms, region";

/// A device from a row whose [`DEVICE_COLUMNS`] start at column `at`.
fn device_from_row(app_key: &Arc<str>, r: &Row, at: usize) -> StoreResult<DeviceRecord> {
    let platform: String = col(r, at + 4)?;
    let tags: String = col(r, at + 6)?;
    let tokens: String = col(r, at + 8)?;
    let info: String = col(r, at + 10)?;
    let hash: Vec<u8> = col(r, at + 3)?;
    Ok(DeviceRecord {
        app_key: app_key.clone(),
        ordinal: to_u32(col(r, at)?, "device ordinal")?,
        registration_id: col(r, at + 1)?,
        install_id: col(r, at + 2)?,
        secret_hash: hash.try_into().map_err(|h: Vec<u8>| {
            StoreError::Corrupt(format!("device secret hash of {} bytes", h.len()))
        })?,
        platform: Platform::parse(&platform)
            .ok_or_else(|| StoreError::Corrupt(format!("device platform {platform:?}")))?,
        alias: col(r, at + 5)?,
        tags: serde_json::from_str(&tags).map_err(json_err("device tags"))?,
        mobile: col(r, at + 7)?,
        push_tokens: json_map(&tokens, "device push_tokens")?,
        apns_production: col(r, at + 9)?,
        info: json_map(&info, "device info")?,
        created_ms: to_u64(col(r, at + 11)?),
        updated_ms: to_u64(col(r, at + 12)?),
        region: col(r, at + 13)?,
    })
}

/// A push with every node's delivery rows: `msg_id, body, audience, sent[], delivered[],
/// vendors[]`.
const PUSH_SELECT: &str = "SELECT p.msg_id, p.body, p.audience, d.sent, d.delivered, d.vendors
    FROM pushes p LEFT JOIN LATERAL (
        SELECT array_agg(sent) AS sent, array_agg(delivered) AS delivered,
            array_agg(vendors) FILTER (WHERE vendors IS NOT NULL) AS vendors
        FROM deliveries WHERE msg_id = p.msg_id
    ) d ON true";

/// A push's counts with every node's delivery rows: `msg_id, sent_ms, group, audience,
/// sent[], delivered[], clicks`.
const PUSH_COUNTS_SELECT: &str = "SELECT p.msg_id, p.sent_ms, p.label_group, p.audience,
        d.sent, d.delivered,
        (SELECT COUNT(DISTINCT e.ordinal) FROM device_events e
         WHERE e.msg_id = p.msg_id AND e.kind = 'click' AND e.app_key = p.app_key)
    FROM pushes p LEFT JOIN LATERAL (
        SELECT array_agg(sent) AS sent, array_agg(delivered) AS delivered
        FROM deliveries WHERE msg_id = p.msg_id
    ) d ON true";

fn push_counts_from_row(r: &Row) -> StoreResult<PushCounts> {
    let msg_id = to_u64(col(r, 0)?);
    let what = |part: &str| format!("push {msg_id} {part}");
    let audience: Vec<u8> = col(r, 3)?;
    Ok(PushCounts {
        msg_id,
        sent_ms: to_u64(col(r, 1)?),
        group: col(r, 2)?,
        targets: deserialize_bitmap(&audience, &what("audience"))?.len(),
        sent: union_bitmaps(col(r, 4)?, &what("sent"))?.len(),
        delivered: union_bitmaps(col(r, 5)?, &what("delivered"))?.len(),
        clicked: to_u64(col(r, 6)?),
    })
}

fn stored_push_from_row(r: &Row) -> StoreResult<StoredPush> {
    let msg_id: i64 = col(r, 0)?;
    let body: String = col(r, 1)?;
    let push: Push = serde_json::from_str(&body).map_err(json_err(&format!("push {msg_id}")))?;
    let audience: Vec<u8> = col(r, 2)?;
    Ok(StoredPush {
        push,
        audience: deserialize_bitmap(&audience, &format!("push {msg_id} audience"))?,
        sent: union_bitmaps(col(r, 3)?, &format!("push {msg_id} sent"))?,
        delivered: union_bitmaps(col(r, 4)?, &format!("push {msg_id} delivered"))?,
        vendors: match col::<Option<Vec<Vec<u8>>>>(r, 5)? {
            Some(blobs) => {
                let mut sets = Vec::new();
                for blob in blobs {
                    let more = decode_vendor_sets(&blob)
                        .ok_or_else(|| StoreError::Corrupt(format!("push {msg_id} vendors")))?;
                    merge_vendor_sets(&mut sets, more);
                }
                Some(sets)
            }
            None => None,
        },
    })
}

const BATCH_COLUMNS: &str = "delivery_id, endpoint_id, command, events, attempts, next_ms, \
    first_ms, dead, last_error, first_event_id, last_event_id";

fn batch_from_row(r: &Row) -> StoreResult<CallbackBatch> {
    Ok(CallbackBatch {
        delivery_id: col(r, 0)?,
        endpoint_id: to_u64(col(r, 1)?),
        command: col(r, 2)?,
        events: col(r, 3)?,
        attempts: to_u32(col(r, 4)?, "batch attempts")?,
        next_ms: to_u64(col(r, 5)?),
        first_ms: to_u64(col(r, 6)?),
        dead: col(r, 7)?,
        last_error: col(r, 8)?,
        first_event_id: to_u64(col(r, 9)?),
        last_event_id: to_u64(col(r, 10)?),
    })
}

const ENDPOINT_COLUMNS: &str = "id, app_key, url, commands, basic_auth, signing_secret, \
    created_ms, start_event_id, push_level, failing_since_ms, disabled_ms, format";

fn endpoint_from_row(r: &Row) -> StoreResult<CallbackEndpoint> {
    let commands: String = col(r, 3)?;
    let format: String = col(r, 11)?;
    Ok(CallbackEndpoint {
        id: to_u64(col(r, 0)?),
        app_key: col(r, 1)?,
        url: col(r, 2)?,
        commands: serde_json::from_str(&commands).map_err(json_err("callback commands"))?,
        basic_auth: col(r, 4)?,
        signing_secret: col(r, 5)?,
        created_ms: to_u64(col(r, 6)?),
        start_event_id: to_u64(col(r, 7)?),
        push_level: col(r, 8)?,
        failing_since_ms: col::<Option<i64>>(r, 9)?.map(to_u64),
        disabled_ms: col::<Option<i64>>(r, 10)?.map(to_u64),
        format: CallbackFormat::parse(&format)
            .ok_or_else(|| StoreError::Corrupt(format!("callback format {format:?}")))?,
    })
}

fn app_from_row(r: &Row) -> StoreResult<AppRecord> {
    Ok(AppRecord {
        app_key: col(r, 0)?,
        master_secret: col(r, 1)?,
        name: col(r, 2)?,
        created_ms: to_u64(col(r, 3)?),
    })
}

fn file_from_row(r: &Row) -> StoreResult<FileRecord> {
    let values: String = col(r, 6)?;
    Ok(FileRecord {
        file_id: col(r, 0)?,
        app_key: col(r, 1)?,
        kind: col(r, 2)?,
        file_name: col(r, 3)?,
        created_ms: to_u64(col(r, 4)?),
        expires_ms: to_u64(col(r, 5)?),
        values: if values.is_empty() {
            Vec::new()
        } else {
            values.split('\n').map(str::to_string).collect()
        },
    })
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

/// Numbers the outbox events of finished transactions (see the schema).
async fn number_events<C: GenericClient>(c: &C) -> StoreResult<()> {
    execute(
        c,
        "numbering outbox events",
        "SELECT pigeon_number_events()",
        &[],
    )
    .await?;
    Ok(())
}

/// The last event id handed out (0 before the first), once every finished write's events
/// are numbered.
async fn last_event_id<C: GenericClient>(c: &C) -> StoreResult<u64> {
    number_events(c).await?;
    let r = query_one(
        c,
        "last event id",
        "SELECT last_id FROM callback_event_ids",
        &[],
    )
    .await?;
    Ok(to_u64(col(&r, 0)?))
}

/// The numbered outbox events of one target and command with ids `from..=to`, oldest
/// first, at most `limit`.
async fn outbox_events<C: GenericClient>(
    c: &C,
    (app_key, endpoint_id, command): (&str, Option<u64>, &str),
    from: u64,
    to: u64,
    limit: usize,
) -> StoreResult<Vec<StoredEvent>> {
    let rows = query(
        c,
        "reading outbox events",
        "SELECT first_id, at_ms, bodies FROM callback_event_chunks
         WHERE app_key = $1 AND target = $2 AND command = $3
             AND last_id >= $4 AND first_id <= $5
         ORDER BY last_id LIMIT $6",
        &[
            &app_key,
            &endpoint_id.map_or(0, to_i64),
            &command,
            &to_i64(from),
            &to_i64(to),
            &i64::try_from(limit).unwrap_or(i64::MAX),
        ],
    )
    .await?;
    let mut out = Vec::new();
    for r in &rows {
        let (first, at_ms) = (to_u64(col(r, 0)?), to_u64(col(r, 1)?));
        let bodies: &str = col(r, 2)?;
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

/// The events a stored batch refers to, read back from the outbox as they were sent.
async fn referenced_events<C: GenericClient>(c: &C, b: &CallbackBatch) -> StoreResult<String> {
    let endpoint = query_opt(
        c,
        "reading a batch's endpoint",
        "SELECT app_key, push_level FROM callback_endpoints WHERE id = $1",
        &[&to_i64(b.endpoint_id)],
    )
    .await?
    .ok_or_else(|| {
        StoreError::Corrupt(format!(
            "callback batch {}: its endpoint {} is gone",
            b.delivery_id, b.endpoint_id
        ))
    })?;
    let app_key: String = col(&endpoint, 0)?;
    let push_level: bool = col(&endpoint, 1)?;
    let target = push_level.then_some(b.endpoint_id);
    let events = outbox_events(
        c,
        (&app_key, target, &b.command),
        b.first_event_id,
        b.last_event_id,
        usize::MAX,
    )
    .await?;
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
async fn hold_events<C: GenericClient>(
    c: &C,
    endpoint_id: u64,
    delivery_id: Option<&str>,
) -> StoreResult<()> {
    let rows = query(
        c,
        "reading batches to hold",
        &format!(
            "SELECT {BATCH_COLUMNS} FROM callback_batches
             WHERE endpoint_id = $1 AND events = '' AND ($2::text IS NULL OR delivery_id = $2)
             ORDER BY delivery_id"
        ),
        &[&to_i64(endpoint_id), &delivery_id],
    )
    .await?;
    for r in &rows {
        let b = batch_from_row(r)?;
        let events = referenced_events(c, &b).await?;
        execute(
            c,
            "holding a batch's events",
            "UPDATE callback_batches SET events = $2, first_event_id = 0, last_event_id = 0
             WHERE delivery_id = $1",
            &[&b.delivery_id, &events],
        )
        .await?;
    }
    Ok(())
}

impl AppStore for PostgresStore {
    fn create_app(&self, app: AppRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "create_app",
                "INSERT INTO apps (app_key, master_secret, name, created_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (app_key) DO NOTHING",
                &[
                    &app.app_key,
                    &app.master_secret,
                    &app.name,
                    &to_i64(app.created_ms),
                ],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("app_key {}", app.app_key)));
            }
            Ok(())
        })
    }

    fn find_app(&self, app_key: &str) -> StoreFuture<'_, Option<AppRecord>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                "find_app",
                "SELECT app_key, master_secret, name, created_ms FROM apps WHERE app_key = $1",
                &[&app_key],
            )
            .await?
            .map(|r| app_from_row(&r))
            .transpose()
        })
    }

    fn list_apps(&self) -> StoreFuture<'_, Vec<AppRecord>> {
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "list_apps",
                "SELECT app_key, master_secret, name, created_ms FROM apps
                 ORDER BY created_ms, app_key",
                &[],
            )
            .await?
            .iter()
            .map(app_from_row)
            .collect()
        })
    }

    fn ensure_vapid_keys(
        &self,
        app_key: &str,
        private_key: String,
        public_key: String,
    ) -> StoreFuture<'_, String> {
        let app_key = app_key.to_string();
        let private_key = self.inner.key.seal(&private_key);
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "ensure_vapid_keys",
                "INSERT INTO app_vapid_keys (app_key, private_key, public_key) VALUES ($1, $2, $3)
                 ON CONFLICT (app_key) DO NOTHING",
                &[&app_key, &private_key, &public_key],
            )
            .await?;
            // A statement of its own: it sees the pair another node stored meanwhile.
            let r = query_one(
                &c,
                "ensure_vapid_keys",
                "SELECT public_key FROM app_vapid_keys WHERE app_key = $1",
                &[&app_key],
            )
            .await?;
            col(&r, 0)
        })
    }

    fn vapid_keys(&self, app_key: &str) -> StoreFuture<'_, Option<(String, String)>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            let Some(r) = query_opt(
                &c,
                "vapid_keys",
                "SELECT private_key, public_key FROM app_vapid_keys WHERE app_key = $1",
                &[&app_key],
            )
            .await?
            else {
                return Ok(None);
            };
            let private: String = col(&r, 0)?;
            Ok(Some((self.inner.key.open(&private)?, col(&r, 1)?)))
        })
    }

    fn create_group(&self, g: GroupRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let keys = serde_json::to_string(&g.app_keys).map_err(json_err("group app_keys"))?;
            let c = self.client().await?;
            let n = execute(
                &c,
                "create_group",
                "INSERT INTO app_groups (group_key, master_secret, name, app_keys, created_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_key) DO NOTHING",
                &[
                    &g.group_key,
                    &g.master_secret,
                    &g.name,
                    &keys,
                    &to_i64(g.created_ms),
                ],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::Conflict(format!("group_key {}", g.group_key)));
            }
            Ok(())
        })
    }

    fn find_group(&self, group_key: &str) -> StoreFuture<'_, Option<GroupRecord>> {
        let group_key = group_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            let Some(r) = query_opt(
                &c,
                "find_group",
                "SELECT group_key, master_secret, name, app_keys, created_ms FROM app_groups
                 WHERE group_key = $1",
                &[&group_key],
            )
            .await?
            else {
                return Ok(None);
            };
            let keys: String = col(&r, 3)?;
            Ok(Some(GroupRecord {
                group_key: col(&r, 0)?,
                master_secret: col(&r, 1)?,
                name: col(&r, 2)?,
                app_keys: serde_json::from_str(&keys).map_err(json_err("group app_keys"))?,
                created_ms: to_u64(col(&r, 4)?),
            }))
        })
    }

    fn set_app_settings(&self, app_key: &str, settings: AppSettings) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        let text = serde_json::to_string(&settings);
        Box::pin(async move {
            let text = text.map_err(json_err("app settings"))?;
            let c = self.client().await?;
            execute(
                &c,
                "set_app_settings",
                "INSERT INTO app_settings (app_key, settings) VALUES ($1, $2)
                 ON CONFLICT (app_key) DO UPDATE SET settings = excluded.settings",
                &[&app_key, &text],
            )
            .await?;
            Ok(())
        })
    }

    fn app_settings(&self) -> StoreFuture<'_, Vec<(String, AppSettings)>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = query(
                &c,
                "app_settings",
                "SELECT app_key, settings FROM app_settings ORDER BY app_key",
                &[],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    let key: String = col(r, 0)?;
                    let text: String = col(r, 1)?;
                    let settings = serde_json::from_str(&text)
                        .map_err(json_err(&format!("settings of app {key}")))?;
                    Ok((key, settings))
                })
                .collect()
        })
    }
}

/// Devices as the arrays `put_devices` unnests, sorted by (app_key, ordinal) (rows are
/// locked in one order by every writer) with the last of each (app_key, ordinal) kept, as
/// writing them one after the other would leave it.
struct DeviceRows {
    app: Vec<String>,
    ordinal: Vec<i64>,
    registration_id: Vec<String>,
    install_id: Vec<Option<String>>,
    secret_hash: Vec<Vec<u8>>,
    platform: Vec<String>,
    alias: Vec<Option<String>>,
    tags: Vec<String>,
    mobile: Vec<Option<String>>,
    push_tokens: Vec<String>,
    apns_production: Vec<bool>,
    info: Vec<String>,
    created_ms: Vec<i64>,
    updated_ms: Vec<i64>,
    region: Vec<Option<String>>,
}

impl DeviceRows {
    fn new(devices: Vec<DeviceRecord>) -> StoreResult<DeviceRows> {
        let mut last: HashMap<(Arc<str>, u32), DeviceRecord> = HashMap::new();
        for d in devices {
            last.insert((d.app_key.clone(), d.ordinal), d);
        }
        let mut devices: Vec<DeviceRecord> = last.into_values().collect();
        devices.sort_by(|a, b| (&a.app_key, a.ordinal).cmp(&(&b.app_key, b.ordinal)));
        let n = devices.len();
        let mut rows = DeviceRows {
            app: Vec::with_capacity(n),
            ordinal: Vec::with_capacity(n),
            registration_id: Vec::with_capacity(n),
            install_id: Vec::with_capacity(n),
            secret_hash: Vec::with_capacity(n),
            platform: Vec::with_capacity(n),
            alias: Vec::with_capacity(n),
            tags: Vec::with_capacity(n),
            mobile: Vec::with_capacity(n),
            push_tokens: Vec::with_capacity(n),
            apns_production: Vec::with_capacity(n),
            info: Vec::with_capacity(n),
            created_ms: Vec::with_capacity(n),
            updated_ms: Vec::with_capacity(n),
            region: Vec::with_capacity(n),
        };
        for d in devices {
            rows.tags
                .push(serde_json::to_string(&d.tags).map_err(json_err("device tags"))?);
            rows.app.push(d.app_key.to_string());
            rows.ordinal.push(i64::from(d.ordinal));
            rows.registration_id.push(d.registration_id);
            rows.install_id.push(d.install_id);
            rows.secret_hash.push(d.secret_hash.to_vec());
            rows.platform.push(d.platform.as_str().to_string());
            rows.alias.push(d.alias);
            rows.mobile.push(d.mobile);
            rows.push_tokens
                .push(Value::Object(d.push_tokens).to_string());
            rows.apns_production.push(d.apns_production);
            rows.info.push(Value::Object(d.info).to_string());
            rows.created_ms.push(to_i64(d.created_ms));
            rows.updated_ms.push(to_i64(d.updated_ms));
            rows.region.push(d.region);
        }
        Ok(rows)
    }
}

impl PostgresStore {
    async fn write_devices(&self, devices: Vec<DeviceRecord>) -> StoreResult<()> {
        if devices.is_empty() {
            return Ok(());
        }
        let d = DeviceRows::new(devices)?;
        let c = self.client().await?;
        // Each row is a change of the feed, numbered by its place in the transaction.
        execute(
            &c,
            "put_devices",
            "INSERT INTO devices (app_key, ordinal, registration_id, install_id, secret_hash,
                platform, alias, tags, mobile, push_tokens, apns_production, info, created_ms,
                updated_ms, region, change_id)
             SELECT d.app_key, d.ordinal, d.registration_id, d.install_id, d.secret_hash,
                d.platform, d.alias, d.tags, d.mobile, d.push_tokens, d.apns_production, d.info,
                d.created_ms, d.updated_ms, d.region,
                pigeon_change_base() + LEAST(d.pos - 1, $16)
             FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bytea[],
                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[],
                $12::text[], $13::bigint[], $14::bigint[], $15::text[])
                WITH ORDINALITY AS d(app_key, ordinal, registration_id, install_id, secret_hash,
                    platform, alias, tags, mobile, push_tokens, apns_production, info,
                    created_ms, updated_ms, region, pos)
             ORDER BY d.pos
             ON CONFLICT (app_key, ordinal) DO UPDATE SET
                registration_id = excluded.registration_id, install_id = excluded.install_id,
                secret_hash = excluded.secret_hash, platform = excluded.platform,
                alias = excluded.alias, tags = excluded.tags, mobile = excluded.mobile,
                push_tokens = excluded.push_tokens, apns_production = excluded.apns_production,
                info = excluded.info, updated_ms = excluded.updated_ms,
                region = excluded.region, change_id = excluded.change_id",
            &[
                &d.app,
                &d.ordinal,
                &d.registration_id,
                &d.install_id,
                &d.secret_hash,
                &d.platform,
                &d.alias,
                &d.tags,
                &d.mobile,
                &d.push_tokens,
                &d.apns_production,
                &d.info,
                &d.created_ms,
                &d.updated_ms,
                &d.region,
                &MAX_CHANGE_STEP,
            ],
        )
        .await?;
        Ok(())
    }
}

impl DeviceStore for PostgresStore {
    fn load_devices(&self, app_key: &str) -> mpsc::Receiver<StoreResult<Vec<DeviceRecord>>> {
        let (tx, rx) = mpsc::channel(2);
        let store = self.clone();
        let app_key = app_key.to_string();
        tokio::spawn(async move {
            let result = async {
                let what = "load_devices";
                let mut c = store.client().await?;
                // One snapshot for the whole stream, read a chunk at a time from a portal.
                let t = c
                    .build_transaction()
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await
                    .map_err(|e| pg_err(what, e))?;
                let st = t
                    .prepare_cached(&format!(
                        "SELECT {DEVICE_COLUMNS} FROM devices WHERE app_key = $1 ORDER BY ordinal"
                    ))
                    .await
                    .map_err(|e| pg_err(what, e))?;
                let portal = t
                    .bind(&st, &[&app_key])
                    .await
                    .map_err(|e| pg_err(what, e))?;
                let shared_key: Arc<str> = Arc::from(app_key.as_str());
                loop {
                    let rows = t
                        .query_portal(&portal, DEVICE_CHUNK as i32)
                        .await
                        .map_err(|e| pg_err(what, e))?;
                    let done = rows.len() < DEVICE_CHUNK;
                    if !rows.is_empty() {
                        let chunk = rows
                            .iter()
                            .map(|r| device_from_row(&shared_key, r, 0))
                            .collect::<StoreResult<Vec<_>>>()?;
                        if tx.send(Ok(chunk)).await.is_err() {
                            return Ok(());
                        }
                    }
                    if done {
                        break;
                    }
                }
                t.commit().await.map_err(|e| pg_err(what, e))?;
                Ok(())
            }
            .await;
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    fn put_device(&self, device: DeviceRecord) -> StoreFuture<'_, ()> {
        Box::pin(self.write_devices(vec![device]))
    }

    fn put_devices(&self, devices: Vec<DeviceRecord>) -> StoreFuture<'_, ()> {
        Box::pin(self.write_devices(devices))
    }

    fn set_last_online(
        &self,
        app_key: &str,
        ordinal: u32,
        at_ms: u64,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        let e = EventRows::new(&events);
        Box::pin(async move {
            let c = self.client().await?;
            // The events are written by the statement itself, the change by a CTE: both
            // always run (a CTE that is only read may never be).
            execute(
                &c,
                "set_last_online",
                "WITH seen AS (
                     INSERT INTO device_seen (app_key, ordinal, at_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (app_key, ordinal) DO UPDATE SET at_ms = excluded.at_ms
                 )
                 SELECT pigeon_write_events($4, $5, $6, $7, $8, $9)",
                &[
                    &app_key,
                    &i64::from(ordinal),
                    &to_i64(at_ms),
                    &e.app,
                    &e.target,
                    &e.command,
                    &e.at,
                    &e.n,
                    &e.bodies,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn last_online(&self, app_key: &str, ordinals: Vec<u32>) -> StoreFuture<'_, Vec<(u32, u64)>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let ordinals: Vec<i64> = ordinals.into_iter().map(i64::from).collect();
            let c = self.client().await?;
            query(
                &c,
                "last_online",
                "SELECT s.ordinal, s.at_ms
                 FROM unnest($2::bigint[]) WITH ORDINALITY AS x(ordinal, pos)
                 JOIN device_seen s ON s.app_key = $1 AND s.ordinal = x.ordinal
                 ORDER BY x.pos",
                &[&app_key, &ordinals],
            )
            .await?
            .iter()
            .map(|r| Ok((to_u32(col(r, 0)?, "ordinal")?, to_u64(col(r, 1)?))))
            .collect()
        })
    }

    fn seen_between(&self, app_key: &str, from_ms: u64, to_ms: u64) -> StoreFuture<'_, Vec<u32>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "seen_between",
                "SELECT ordinal FROM device_seen
                 WHERE app_key = $1 AND at_ms >= $2 AND at_ms < $3 ORDER BY ordinal",
                &[&app_key, &to_i64(from_ms), &to_i64(to_ms)],
            )
            .await?
            .iter()
            .map(|r| to_u32(col(r, 0)?, "ordinal"))
            .collect()
        })
    }

    fn load_badges(&self, app_key: &str) -> StoreFuture<'_, Vec<(u32, u32)>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "load_badges",
                "SELECT ordinal, badge FROM device_badges WHERE app_key = $1 ORDER BY ordinal",
                &[&app_key],
            )
            .await?
            .iter()
            .map(|r| Ok((to_u32(col(r, 0)?, "ordinal")?, to_u32(col(r, 1)?, "badge")?)))
            .collect()
        })
    }

    fn set_blocked(&self, app_key: &str, ordinals: Vec<u32>, blocked: bool) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let mut ordinals: Vec<i64> = ordinals.into_iter().map(i64::from).collect();
            ordinals.sort_unstable();
            ordinals.dedup();
            let c = self.client().await?;
            let sql = if blocked {
                "INSERT INTO blocked_devices (app_key, ordinal)
                 SELECT $1, o FROM unnest($2::bigint[]) AS o
                 ON CONFLICT (app_key, ordinal) DO NOTHING"
            } else {
                "DELETE FROM blocked_devices WHERE app_key = $1 AND ordinal = ANY($2::bigint[])"
            };
            execute(&c, "set_blocked", sql, &[&app_key, &ordinals]).await?;
            Ok(())
        })
    }

    fn load_blocked(&self, app_key: &str) -> StoreFuture<'_, Vec<u32>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "load_blocked",
                "SELECT ordinal FROM blocked_devices WHERE app_key = $1 ORDER BY ordinal",
                &[&app_key],
            )
            .await?
            .iter()
            .map(|r| to_u32(col(r, 0)?, "ordinal"))
            .collect()
        })
    }

    fn save_badges(&self, app_key: &str, badges: Vec<(u32, u32)>) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            // The last badge of each device, as writing them in order leaves it.
            let last: HashMap<u32, u32> = badges.into_iter().collect();
            let mut badges: Vec<(u32, u32)> = last.into_iter().collect();
            badges.sort_unstable();
            let ordinals: Vec<i64> = badges.iter().map(|b| i64::from(b.0)).collect();
            let values: Vec<i64> = badges.iter().map(|b| i64::from(b.1)).collect();
            let c = self.client().await?;
            execute(
                &c,
                "save_badges",
                "INSERT INTO device_badges (app_key, ordinal, badge)
                 SELECT $1, o, b FROM unnest($2::bigint[], $3::bigint[]) AS x(o, b)
                 ON CONFLICT (app_key, ordinal) DO UPDATE SET badge = excluded.badge",
                &[&app_key, &ordinals, &values],
            )
            .await?;
            Ok(())
        })
    }

    fn save_locations(
        &self,
        app_key: &str,
        locations: Vec<(u32, Location)>,
    ) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let mut last: HashMap<u32, Location> = HashMap::new();
            for (ordinal, l) in locations {
                last.insert(ordinal, l);
            }
            let mut locations: Vec<(u32, Location)> = last.into_iter().collect();
            locations.sort_unstable_by_key(|l| l.0);
            let ordinals: Vec<i64> = locations.iter().map(|l| i64::from(l.0)).collect();
            let lat: Vec<f64> = locations.iter().map(|l| l.1.lat).collect();
            let lon: Vec<f64> = locations.iter().map(|l| l.1.lon).collect();
            let accuracy: Vec<Option<f64>> = locations.iter().map(|l| l.1.accuracy_m).collect();
            let at: Vec<i64> = locations.iter().map(|l| to_i64(l.1.at_ms)).collect();
            let c = self.client().await?;
            execute(
                &c,
                "save_locations",
                "INSERT INTO device_locations (app_key, ordinal, lat, lon, accuracy_m, at_ms)
                 SELECT $1, o, la, lo, acc, at
                 FROM unnest($2::bigint[], $3::float8[], $4::float8[], $5::float8[], $6::bigint[])
                     AS x(o, la, lo, acc, at)
                 ON CONFLICT (app_key, ordinal) DO UPDATE SET lat = excluded.lat,
                     lon = excluded.lon, accuracy_m = excluded.accuracy_m,
                     at_ms = excluded.at_ms",
                &[&app_key, &ordinals, &lat, &lon, &accuracy, &at],
            )
            .await?;
            Ok(())
        })
    }

    fn find_device(&self, registration_id: &str) -> StoreFuture<'_, Option<DeviceRecord>> {
        let rid = registration_id.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                "find_device",
                &format!(
                    "SELECT app_key, {DEVICE_COLUMNS} FROM devices WHERE registration_id = $1"
                ),
                &[&rid],
            )
            .await?
            .map(|r| {
                let app_key: String = col(&r, 0)?;
                device_from_row(&Arc::from(app_key.as_str()), &r, 1)
            })
            .transpose()
        })
    }

    fn location(&self, app_key: &str, ordinal: u32) -> StoreFuture<'_, Option<Location>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                "location",
                "SELECT lat, lon, accuracy_m, at_ms FROM device_locations
                 WHERE app_key = $1 AND ordinal = $2",
                &[&app_key, &i64::from(ordinal)],
            )
            .await?
            .map(|r| {
                Ok(Location {
                    lat: col(&r, 0)?,
                    lon: col(&r, 1)?,
                    accuracy_m: col(&r, 2)?,
                    at_ms: to_u64(col(&r, 3)?),
                })
            })
            .transpose()
        })
    }
}

impl CidStore for PostgresStore {
    fn issue_cids(&self, app_key: &str, cids: Vec<String>, at_ms: u64) -> StoreFuture<'_, ()> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let mut c = self.client().await?;
            let what = "issue_cids";
            let t = c.transaction().await.map_err(|e| pg_err(what, e))?;
            // A cid issued twice fails the whole write (Conflict), as in SQLite.
            execute(
                &t,
                what,
                "INSERT INTO cids (app_key, cid, issued_ms)
                 SELECT $1, cid, $3 FROM unnest($2::text[]) WITH ORDINALITY AS x(cid, pos)
                 ORDER BY pos",
                &[&app_key, &cids, &to_i64(at_ms)],
            )
            .await?;
            // A cid lives one day; older ones are forgotten as new ones are issued.
            execute(
                &t,
                what,
                "DELETE FROM cids WHERE app_key = $1 AND issued_ms < $2",
                &[&app_key, &to_i64(at_ms.saturating_sub(2 * 86_400_000))],
            )
            .await?;
            t.commit().await.map_err(|e| pg_err(what, e))
        })
    }

    fn find_cid(
        &self,
        app_key: &str,
        cid: &str,
        since_ms: u64,
    ) -> StoreFuture<'_, Option<Option<u64>>> {
        let (app_key, cid) = (app_key.to_string(), cid.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                "find_cid",
                "SELECT msg_id FROM cids WHERE app_key = $1 AND cid = $2 AND issued_ms >= $3",
                &[&app_key, &cid, &to_i64(since_ms)],
            )
            .await?
            .map(|r| Ok(col::<Option<i64>>(&r, 0)?.map(to_u64)))
            .transpose()
        })
    }
}

impl PushStore for PostgresStore {
    fn insert_push(
        &self,
        app_key: &str,
        push: &Push,
        audience: &RoaringBitmap,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        let body = serde_json::to_string(push);
        let audience = serialize_bitmap(audience);
        let (cid, cid_pooled) = match &push.idempotency {
            Some(k) => (Some(k.key.clone()), k.issued_only),
            None => (None, false),
        };
        let (schedule, due, next) = match &push.schedule {
            Some(f) => (
                Some(f.schedule_id.clone()),
                Some(to_i64(f.due_ms)),
                f.next_ms.map(to_i64),
            ),
            None => (None, None, None),
        };
        let row = |body, audience| PushRow {
            msg_id: to_i64(push.msg_id),
            app_key: app_key.to_string(),
            sent_ms: to_i64(push.sent_ms),
            expires_ms: to_i64(push.expires_ms()),
            body,
            audience,
            group: push.labels.group.clone(),
            overrides: push.policy.overrides.map(to_i64),
            sms_due: push.sms_due_ms().map(to_i64),
            schedule,
            due,
            next,
            cid,
            cid_pooled,
            events: EventRows::new(&events),
        };
        let row = body
            .map_err(json_err("push body"))
            .and_then(|body| Ok(row(body, audience?)));
        // Committed with the other pushes of the moment (see `pushes.rs`).
        Box::pin(async move { self.inner.pushes.insert(row?).await })
    }

    fn expired_unreported(
        &self,
        app_key: &str,
        before_ms: u64,
    ) -> StoreFuture<'_, Vec<StoredPush>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            // Not a cached prepared statement: after five runs PostgreSQL plans those without
            // the parameters' values, and for `expires_ms < $2 ... ORDER BY msg_id LIMIT 100`
            // that generic plan walks the primary key and filters every push in the table,
            // every second. Prepared afresh (unnamed), each run is planned for its own
            // `before_ms` and takes the (app_key, expires_ms) index.
            let sql = format!(
                "{PUSH_SELECT}
                 WHERE p.app_key = $1 AND p.expires_ms < $2 AND NOT p.expiry_reported
                 ORDER BY p.msg_id LIMIT 100"
            );
            c.query(sql.as_str(), &[&app_key, &to_i64(before_ms)])
                .await
                .map_err(|e| pg_err("expired_unreported", e))?
                .iter()
                .map(stored_push_from_row)
                .collect()
        })
    }

    fn report_expired(&self, msg_id: u64, events: Vec<NewEvent>) -> StoreFuture<'_, ()> {
        let e = EventRows::new(&events);
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "report_expired",
                "WITH reported AS (
                     UPDATE pushes SET expiry_reported = true WHERE msg_id = $1
                 )
                 SELECT pigeon_write_events($2, $3, $4, $5, $6, $7)",
                &[
                    &to_i64(msg_id),
                    &e.app,
                    &e.target,
                    &e.command,
                    &e.at,
                    &e.n,
                    &e.bodies,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn recall_push(&self, msg_id: u64, at_ms: u64, events: Vec<NewEvent>) -> StoreFuture<'_, bool> {
        let e = EventRows::new(&events);
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_one(
                &c,
                "recall_push",
                "SELECT pigeon_recall_push($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &to_i64(msg_id),
                    &to_i64(at_ms),
                    &e.app,
                    &e.target,
                    &e.command,
                    &e.at,
                    &e.n,
                    &e.bodies,
                ],
            )
            .await?;
            col(&r, 0)
        })
    }

    fn recalled_at(&self, msg_id: u64) -> StoreFuture<'_, Option<u64>> {
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_opt(
                &c,
                "recalled_at",
                "SELECT recalled_ms FROM pushes WHERE msg_id = $1",
                &[&to_i64(msg_id)],
            )
            .await?;
            Ok(match r {
                Some(r) => col::<Option<i64>>(&r, 0)?.map(to_u64),
                None => None,
            })
        })
    }

    fn overridden_by(&self, msg_id: u64) -> StoreFuture<'_, Option<u64>> {
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_opt(
                &c,
                "overridden_by",
                "SELECT overridden_by FROM pushes WHERE msg_id = $1",
                &[&to_i64(msg_id)],
            )
            .await?;
            Ok(match r {
                Some(r) => col::<Option<i64>>(&r, 0)?.map(to_u64),
                None => None,
            })
        })
    }

    fn load_push(&self, app_key: &str, msg_id: u64) -> StoreFuture<'_, Option<StoredPush>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                "load_push",
                &format!("{PUSH_SELECT} WHERE p.app_key = $1 AND p.msg_id = $2"),
                &[&app_key, &to_i64(msg_id)],
            )
            .await?
            .map(|r| stored_push_from_row(&r))
            .transpose()
        })
    }

    fn clicked(&self, app_key: &str, msg_id: u64) -> StoreFuture<'_, Vec<u32>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "clicked",
                "SELECT ordinal FROM device_events
                 WHERE msg_id = $1 AND kind = 'click' AND app_key = $2
                 GROUP BY ordinal ORDER BY MIN(id)",
                &[&to_i64(msg_id), &app_key],
            )
            .await?
            .iter()
            .map(|r| to_u32(col(r, 0)?, "ordinal"))
            .collect()
        })
    }

    fn push_counts_between(
        &self,
        app_key: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> StoreFuture<'_, Vec<PushCounts>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            let rows = query(
                &c,
                "push_counts_between",
                &format!(
                    "{PUSH_COUNTS_SELECT}
                 WHERE p.app_key = $1 AND p.sent_ms >= $2 AND p.sent_ms < $3
                 ORDER BY p.msg_id"
                ),
                &[&app_key, &to_i64(from_ms), &to_i64(to_ms)],
            )
            .await?;
            rows.iter().map(push_counts_from_row).collect()
        })
    }

    fn recent_push_counts(&self, app_key: &str, limit: u32) -> StoreFuture<'_, Vec<PushCounts>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            let rows = query(
                &c,
                "recent_push_counts",
                &format!(
                    "{PUSH_COUNTS_SELECT}
                 WHERE p.app_key = $1
                 ORDER BY p.msg_id DESC LIMIT $2"
                ),
                &[&app_key, &i64::from(limit)],
            )
            .await?;
            rows.iter().map(push_counts_from_row).collect()
        })
    }

    fn load_live_pushes(&self, app_key: &str, now_ms: u64) -> StoreFuture<'_, Vec<StoredPush>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "load_live_pushes",
                &format!(
                    "{PUSH_SELECT}
                     WHERE p.app_key = $1 AND p.expires_ms > $2 AND p.recalled_ms IS NULL
                         AND p.overridden_by IS NULL
                     ORDER BY p.msg_id"
                ),
                &[&app_key, &to_i64(now_ms)],
            )
            .await?
            .iter()
            .map(stored_push_from_row)
            .collect()
        })
    }

    fn max_msg_id(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_one(&c, "max_msg_id", "SELECT MAX(msg_id) FROM pushes", &[]).await?;
            Ok(col::<Option<i64>>(&r, 0)?.map_or(0, to_u64))
        })
    }

    fn save_delivered(
        &self,
        checkpoints: Vec<Checkpoint>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        let e = EventRows::new(&events);
        Box::pin(async move {
            // The last checkpoint of each push, as writing them in order leaves it.
            let mut last: HashMap<u64, Checkpoint> = HashMap::new();
            for c in checkpoints {
                last.insert(c.msg_id, c);
            }
            let mut checkpoints: Vec<Checkpoint> = last.into_values().collect();
            checkpoints.sort_unstable_by_key(|c| c.msg_id);
            let mut msg_ids = Vec::with_capacity(checkpoints.len());
            let mut sent = Vec::with_capacity(checkpoints.len());
            let mut delivered = Vec::with_capacity(checkpoints.len());
            let mut vendors = Vec::with_capacity(checkpoints.len());
            for c in &checkpoints {
                msg_ids.push(to_i64(c.msg_id));
                sent.push(serialize_bitmap(&c.sent)?);
                delivered.push(serialize_bitmap(&c.delivered)?);
                vendors.push(encode_vendor_sets(&c.vendors));
            }
            let c = self.client().await?;
            // This node's rows only: the others' stay, and readers OR them all.
            execute(
                &c,
                "save_delivered",
                "WITH saved AS (
                     INSERT INTO deliveries (msg_id, node_id, sent, delivered, vendors)
                     SELECT m, $1, s, d, v
                     FROM unnest($2::bigint[], $3::bytea[], $4::bytea[], $11::bytea[])
                         AS x(m, s, d, v)
                     ON CONFLICT (msg_id, node_id) DO UPDATE SET sent = excluded.sent,
                         delivered = excluded.delivered, vendors = excluded.vendors
                 )
                 SELECT pigeon_write_events($5, $6, $7, $8, $9, $10)",
                &[
                    &self.inner.node_id,
                    &msg_ids,
                    &sent,
                    &delivered,
                    &e.app,
                    &e.target,
                    &e.command,
                    &e.at,
                    &e.n,
                    &e.bodies,
                    &vendors,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn record_event(&self, ev: DeviceEvent, events: Vec<NewEvent>) -> StoreFuture<'_, ()> {
        let e = EventRows::new(&events);
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "record_event",
                "WITH recorded AS (
                     INSERT INTO device_events (app_key, ordinal, kind, msg_id, data, at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)
                 )
                 SELECT pigeon_write_events($7, $8, $9, $10, $11, $12)",
                &[
                    &ev.app_key,
                    &i64::from(ev.ordinal),
                    &ev.kind,
                    &ev.msg_id.map(to_i64),
                    &ev.data.to_string(),
                    &to_i64(ev.at_ms),
                    &e.app,
                    &e.target,
                    &e.command,
                    &e.at,
                    &e.n,
                    &e.bodies,
                ],
            )
            .await?;
            Ok(())
        })
    }
}

impl CredentialStore for PostgresStore {
    fn set_vendor_credentials(
        &self,
        app_key: &str,
        vendor: &str,
        body: String,
        at_ms: u64,
    ) -> StoreFuture<'_, ()> {
        let (app_key, vendor) = (app_key.to_string(), vendor.to_string());
        let body = self.inner.key.seal(&body);
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "set_vendor_credentials",
                "INSERT INTO vendor_credentials (app_key, vendor, body, updated_ms)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (app_key, vendor)
                 DO UPDATE SET body = excluded.body, updated_ms = excluded.updated_ms",
                &[&app_key, &vendor, &body, &to_i64(at_ms)],
            )
            .await?;
            Ok(())
        })
    }

    fn vendor_credentials(&self, app_key: &str) -> StoreFuture<'_, Vec<(String, String, u64)>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "vendor_credentials",
                "SELECT vendor, body, updated_ms FROM vendor_credentials WHERE app_key = $1
                 ORDER BY vendor",
                &[&app_key],
            )
            .await?
            .iter()
            .map(|r| {
                let body: String = col(r, 1)?;
                Ok((col(r, 0)?, self.inner.key.open(&body)?, to_u64(col(r, 2)?)))
            })
            .collect()
        })
    }

    fn remove_vendor_credentials(&self, app_key: &str, vendor: &str) -> StoreFuture<'_, bool> {
        let (app_key, vendor) = (app_key.to_string(), vendor.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "remove_vendor_credentials",
                "DELETE FROM vendor_credentials WHERE app_key = $1 AND vendor = $2",
                &[&app_key, &vendor],
            )
            .await?;
            Ok(n > 0)
        })
    }

    fn all_vendor_credentials(&self) -> StoreFuture<'_, Vec<(String, String, String, u64)>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = query(
                &c,
                "all_vendor_credentials",
                "SELECT app_key, vendor, body, updated_ms FROM vendor_credentials
                 ORDER BY app_key, vendor",
                &[],
            )
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let (app_key, vendor, body): (String, String, String) =
                    (col(r, 0)?, col(r, 1)?, col(r, 2)?);
                let at = to_u64(col(r, 3)?);
                // One app's unreadable credentials must not stop every other app's.
                match self.inner.key.open(&body) {
                    Ok(body) => out.push((app_key, vendor, body, at)),
                    Err(e) => {
                        tracing::warn!(%app_key, %vendor, error = %e, "vendor credentials not readable")
                    }
                }
            }
            Ok(out)
        })
    }

    fn vendor_credentials_version(&self) -> StoreFuture<'_, (u64, u64)> {
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_one(
                &c,
                "vendor_credentials_version",
                "SELECT COUNT(*), COALESCE(SUM(updated_ms), 0)::bigint FROM vendor_credentials",
                &[],
            )
            .await?;
            Ok((to_u64(col(&r, 0)?), to_u64(col(&r, 1)?)))
        })
    }
}

impl ScheduleStore for PostgresStore {
    fn put_schedule(&self, r: ScheduleRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "put_schedule",
                "INSERT INTO schedules (schedule_id, app_key, name, enabled, trigger_body,
                    push_body, created_ms, next_ms, door)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (schedule_id) DO UPDATE SET name = excluded.name,
                    enabled = excluded.enabled, trigger_body = excluded.trigger_body,
                    push_body = excluded.push_body, next_ms = excluded.next_ms",
                &[
                    &r.schedule_id,
                    &r.app_key,
                    &r.name,
                    &r.enabled,
                    &r.trigger.to_string(),
                    &r.push.to_string(),
                    &to_i64(r.created_ms),
                    &r.next_ms.map(to_i64),
                    &r.door,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn delete_schedule(&self, app_key: &str, schedule_id: &str) -> StoreFuture<'_, bool> {
        let (app_key, schedule_id) = (app_key.to_string(), schedule_id.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "delete_schedule",
                "DELETE FROM schedules WHERE app_key = $1 AND schedule_id = $2",
                &[&app_key, &schedule_id],
            )
            .await?;
            Ok(n > 0)
        })
    }

    fn load_schedules(&self) -> StoreFuture<'_, Vec<ScheduleRecord>> {
        Box::pin(async move {
            let c = self.client().await?;
            let rows = query(
                &c,
                "load_schedules",
                "SELECT schedule_id, app_key, name, enabled, trigger_body, push_body, created_ms,
                    next_ms, door
                 FROM schedules ORDER BY created_ms, schedule_id",
                &[],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    let trigger: String = col(r, 4)?;
                    let push: String = col(r, 5)?;
                    Ok(ScheduleRecord {
                        schedule_id: col(r, 0)?,
                        app_key: col(r, 1)?,
                        name: col(r, 2)?,
                        enabled: col(r, 3)?,
                        trigger: serde_json::from_str(&trigger).map_err(json_err("schedule"))?,
                        push: serde_json::from_str(&push).map_err(json_err("schedule"))?,
                        created_ms: to_u64(col(r, 6)?),
                        next_ms: col::<Option<i64>>(r, 7)?.map(to_u64),
                        door: col(r, 8)?,
                    })
                })
                .collect()
        })
    }

    fn record_failed_run(
        &self,
        schedule_id: &str,
        run: ScheduleRun,
        next_ms: Option<u64>,
    ) -> StoreFuture<'_, ()> {
        let schedule_id = schedule_id.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "record_failed_run",
                "WITH run AS (
                     INSERT INTO schedule_runs (schedule_id, msg_id, error_code, error_message,
                         at_ms)
                     VALUES ($1, $2, $3, $4, $5)
                 )
                 UPDATE schedules SET next_ms = $6 WHERE schedule_id = $1",
                &[
                    &schedule_id,
                    &run.msg_id.map(to_i64),
                    &i64::from(run.error_code),
                    &run.error_message,
                    &to_i64(run.at_ms),
                    &next_ms.map(to_i64),
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn schedule_runs(&self, schedule_id: &str) -> StoreFuture<'_, Vec<ScheduleRun>> {
        let schedule_id = schedule_id.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "schedule_runs",
                "SELECT msg_id, error_code, error_message, at_ms FROM schedule_runs
                 WHERE schedule_id = $1 ORDER BY id",
                &[&schedule_id],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(ScheduleRun {
                    msg_id: col::<Option<i64>>(r, 0)?.map(to_u64),
                    error_code: to_u32(col(r, 1)?, "error code")?,
                    error_message: col(r, 2)?,
                    at_ms: to_u64(col(r, 3)?),
                })
            })
            .collect()
        })
    }
}

/// Stores a new endpoint; returns its id.
async fn insert_endpoint<C: GenericClient>(
    c: &C,
    e: &CallbackEndpoint,
    start_from_last_event: bool,
) -> StoreResult<u64> {
    let commands = serde_json::to_string(&e.commands).map_err(json_err("callback commands"))?;
    let r = query_one(
        c,
        "adding a callback endpoint",
        "INSERT INTO callback_endpoints (app_key, url, commands, basic_auth, signing_secret,
            created_ms, start_event_id, push_level, format)
         VALUES ($1, $2, $3, $4, $5, $6,
            CASE WHEN $10 THEN (SELECT last_id FROM callback_event_ids) ELSE $7 END, $8, $9)
         RETURNING id",
        &[
            &e.app_key,
            &e.url,
            &commands,
            &e.basic_auth,
            &e.signing_secret,
            &to_i64(e.created_ms),
            &to_i64(e.start_event_id),
            &e.push_level,
            &e.format.as_str(),
            &start_from_last_event,
        ],
    )
    .await?;
    Ok(to_u64(col(&r, 0)?))
}

impl OutboxStore for PostgresStore {
    fn add_callback(&self, e: CallbackEndpoint) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            // It gets the events recorded from now on: those of every finished write are
            // numbered first, and it starts after the last of them.
            number_events(&c).await?;
            insert_endpoint(&c, &e, true).await
        })
    }

    fn remove_callback(&self, app_key: &str, id: u64) -> StoreFuture<'_, bool> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_one(
                &c,
                "remove_callback",
                "WITH e AS (
                     DELETE FROM callback_endpoints WHERE app_key = $1 AND id = $2 RETURNING id
                 ), cursors AS (
                     DELETE FROM callback_cursors WHERE endpoint_id = $2
                 ), batches AS (
                     DELETE FROM callback_batches WHERE endpoint_id = $2
                 )
                 SELECT COUNT(*) FROM e",
                &[&app_key, &to_i64(id)],
            )
            .await?;
            Ok(col::<i64>(&r, 0)? > 0)
        })
    }

    fn list_callbacks(&self) -> StoreFuture<'_, Vec<CallbackEndpoint>> {
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "list_callbacks",
                &format!("SELECT {ENDPOINT_COLUMNS} FROM callback_endpoints ORDER BY id"),
                &[],
            )
            .await?
            .iter()
            .map(endpoint_from_row)
            .collect()
        })
    }

    fn append_events(&self, events: Vec<NewEvent>) -> StoreFuture<'_, ()> {
        let e = EventRows::new(&events);
        Box::pin(async move {
            if e.app.is_empty() {
                return Ok(());
            }
            let c = self.client().await?;
            execute(
                &c,
                "append_events",
                "SELECT pigeon_write_events($1, $2, $3, $4, $5, $6)",
                &[&e.app, &e.target, &e.command, &e.at, &e.n, &e.bodies],
            )
            .await?;
            Ok(())
        })
    }

    fn enable_callback(&self, app_key: &str, id: u64) -> StoreFuture<'_, bool> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let what = "enable_callback";
            let mut c = self.client().await?;
            let t = c.transaction().await.map_err(|e| pg_err(what, e))?;
            let disabled = query_opt(
                &t,
                what,
                "SELECT disabled_ms FROM callback_endpoints WHERE app_key = $1 AND id = $2
                 FOR UPDATE",
                &[&app_key, &to_i64(id)],
            )
            .await?;
            let Some(disabled) = disabled else {
                return Ok(false);
            };
            let disabled: Option<i64> = col(&disabled, 0)?;
            execute(
                &t,
                what,
                "UPDATE callback_endpoints SET failing_since_ms = NULL, disabled_ms = NULL
                 WHERE id = $1",
                &[&to_i64(id)],
            )
            .await?;
            if disabled.is_some() {
                // What happened while it was disabled was not kept for it: it starts from now.
                let now = to_i64(last_event_id(&t).await?);
                execute(
                    &t,
                    what,
                    "UPDATE callback_endpoints SET start_event_id = $2 WHERE id = $1",
                    &[&to_i64(id), &now],
                )
                .await?;
                execute(
                    &t,
                    what,
                    "UPDATE callback_cursors SET last_event_id = GREATEST(last_event_id, $2)
                     WHERE endpoint_id = $1",
                    &[&to_i64(id), &now],
                )
                .await?;
            }
            t.commit().await.map_err(|e| pg_err(what, e))?;
            Ok(true)
        })
    }

    fn push_endpoint(&self, e: CallbackEndpoint) -> StoreFuture<'_, CallbackEndpoint> {
        Box::pin(async move {
            let c = self.client().await?;
            let find = format!(
                "SELECT {ENDPOINT_COLUMNS} FROM callback_endpoints
                 WHERE app_key = $1 AND url = $2 AND push_level ORDER BY id LIMIT 1"
            );
            if let Some(r) = query_opt(&c, "push_endpoint", &find, &[&e.app_key, &e.url]).await? {
                return endpoint_from_row(&r);
            }
            let e = CallbackEndpoint {
                start_event_id: 0,
                push_level: true,
                failing_since_ms: None,
                disabled_ms: None,
                format: CallbackFormat::Pigeon,
                ..e
            };
            match insert_endpoint(&c, &e, false).await {
                Ok(id) => Ok(CallbackEndpoint { id, ..e }),
                // Another node made it meanwhile: that one it is.
                Err(StoreError::Conflict(_)) => {
                    let r = query_one(&c, "push_endpoint", &find, &[&e.app_key, &e.url]).await?;
                    endpoint_from_row(&r)
                }
                Err(err) => Err(err),
            }
        })
    }

    fn set_endpoint_health(
        &self,
        id: u64,
        failing_since_ms: Option<u64>,
        disabled_ms: Option<u64>,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let what = "set_endpoint_health";
            let mut c = self.client().await?;
            let t = c.transaction().await.map_err(|e| pg_err(what, e))?;
            execute(
                &t,
                what,
                "UPDATE callback_endpoints SET failing_since_ms = $2, disabled_ms = $3
                 WHERE id = $1",
                &[
                    &to_i64(id),
                    &failing_since_ms.map(to_i64),
                    &disabled_ms.map(to_i64),
                ],
            )
            .await?;
            if disabled_ms.is_some() {
                // Kept, listed and replayable, like any batch that gave up.
                hold_events(&t, id, None).await?;
                execute(
                    &t,
                    what,
                    "UPDATE callback_batches SET dead = true WHERE endpoint_id = $1",
                    &[&to_i64(id)],
                )
                .await?;
            }
            t.commit().await.map_err(|e| pg_err(what, e))
        })
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
        Box::pin(async move {
            let c = self.client().await?;
            number_events(&c).await?;
            outbox_events(
                &c,
                (&app_key, endpoint, &command),
                after_id.saturating_add(1),
                i64::MAX as u64,
                limit,
            )
            .await
        })
    }

    fn callback_cursor(&self, endpoint_id: u64, command: &str) -> StoreFuture<'_, Option<u64>> {
        let command = command.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                "callback_cursor",
                "SELECT last_event_id FROM callback_cursors
                 WHERE endpoint_id = $1 AND command = $2",
                &[&to_i64(endpoint_id), &command],
            )
            .await?
            .map(|r| Ok(to_u64(col(&r, 0)?)))
            .transpose()
        })
    }

    fn create_batches(
        &self,
        endpoint_id: u64,
        command: &str,
        batches: Vec<CallbackBatch>,
        last_event_id: u64,
    ) -> StoreFuture<'_, ()> {
        let command = command.to_string();
        Box::pin(async move {
            let n = batches.len();
            let (mut ids, mut endpoints, mut commands, mut events) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut attempts, mut next, mut first_ms, mut dead, mut errors) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut first_ids, mut last_ids) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for b in batches {
                // A batch of outbox events refers to them; they stay until it is taken.
                let held = if b.first_event_id > 0 {
                    String::new()
                } else {
                    b.events
                };
                ids.push(b.delivery_id);
                endpoints.push(to_i64(b.endpoint_id));
                commands.push(b.command);
                events.push(held);
                attempts.push(i64::from(b.attempts));
                next.push(to_i64(b.next_ms));
                first_ms.push(to_i64(b.first_ms));
                dead.push(b.dead);
                errors.push(b.last_error);
                first_ids.push(to_i64(b.first_event_id));
                last_ids.push(to_i64(b.last_event_id));
            }
            let c = self.client().await?;
            // A cursor only moves forward: the dispatcher does not wait for one window's
            // write before the next, so two may commit in either order.
            execute(
                &c,
                "create_batches",
                "WITH b AS (
                     INSERT INTO callback_batches (delivery_id, endpoint_id, command, events,
                         attempts, next_ms, first_ms, dead, last_error, first_event_id,
                         last_event_id)
                     SELECT * FROM unnest($4::text[], $5::bigint[], $6::text[], $7::text[],
                         $8::bigint[], $9::bigint[], $10::bigint[], $11::bool[], $12::text[],
                         $13::bigint[], $14::bigint[])
                 )
                 INSERT INTO callback_cursors (endpoint_id, command, last_event_id)
                 VALUES ($1, $2, $3) ON CONFLICT (endpoint_id, command)
                 DO UPDATE SET last_event_id =
                     GREATEST(callback_cursors.last_event_id, excluded.last_event_id)",
                &[
                    &to_i64(endpoint_id),
                    &command,
                    &to_i64(last_event_id),
                    &ids,
                    &endpoints,
                    &commands,
                    &events,
                    &attempts,
                    &next,
                    &first_ms,
                    &dead,
                    &errors,
                    &first_ids,
                    &last_ids,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn finish_batches(&self, delivery_ids: Vec<String>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "finish_batches",
                "DELETE FROM callback_batches WHERE delivery_id = ANY($1::text[])",
                &[&delivery_ids],
            )
            .await?;
            Ok(())
        })
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
        Box::pin(async move {
            let what = "fail_batch";
            let mut c = self.client().await?;
            let t = c.transaction().await.map_err(|e| pg_err(what, e))?;
            let row = query_opt(
                &t,
                what,
                "UPDATE callback_batches SET attempts = $2, next_ms = $3, dead = $4,
                    last_error = $5 WHERE delivery_id = $1 RETURNING endpoint_id",
                &[
                    &delivery_id,
                    &i64::from(attempts),
                    &to_i64(next_ms),
                    &dead,
                    &error,
                ],
            )
            .await?;
            if dead {
                let Some(row) = row else {
                    return Err(StoreError::Backend(format!(
                        "{what}: no callback batch {delivery_id}"
                    )));
                };
                hold_events(&t, to_u64(col(&row, 0)?), Some(&delivery_id)).await?;
            }
            t.commit().await.map_err(|e| pg_err(what, e))
        })
    }

    fn callback_batches(&self, endpoint_id: u64) -> StoreFuture<'_, Vec<CallbackBatch>> {
        Box::pin(async move {
            let what = "callback_batches";
            let mut c = self.client().await?;
            // The batches and the events they refer to, as of one moment.
            let t = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| pg_err(what, e))?;
            let mut out = query(
                &t,
                what,
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM callback_batches WHERE endpoint_id = $1
                     ORDER BY first_ms, first_event_id, delivery_id"
                ),
                &[&to_i64(endpoint_id)],
            )
            .await?
            .iter()
            .map(batch_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
            for b in &mut out {
                if b.events.is_empty() {
                    b.events = referenced_events(&t, b).await?;
                }
            }
            t.commit().await.map_err(|e| pg_err(what, e))?;
            Ok(out)
        })
    }

    fn replay_batch(
        &self,
        endpoint_id: u64,
        delivery_id: &str,
        now_ms: u64,
    ) -> StoreFuture<'_, bool> {
        let delivery_id = delivery_id.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "replay_batch",
                "UPDATE callback_batches SET dead = false, attempts = 0, next_ms = $3,
                    first_ms = $3
                 WHERE endpoint_id = $1 AND delivery_id = $2 AND dead",
                &[&to_i64(endpoint_id), &delivery_id, &to_i64(now_ms)],
            )
            .await?;
            Ok(n > 0)
        })
    }

    fn prune_events(&self, app_key: &str) -> StoreFuture<'_, u64> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let what = "prune_events";
            let mut c = self.client().await?;
            let t = c.transaction().await.map_err(|e| pg_err(what, e))?;
            // An event may go once every endpoint it is for has moved its cursor past it
            // (or started after it). A disabled endpoint holds nothing back.
            let endpoints = query(
                &t,
                what,
                &format!("SELECT {ENDPOINT_COLUMNS} FROM callback_endpoints WHERE app_key = $1"),
                &[&app_key],
            )
            .await?
            .iter()
            .map(endpoint_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
            let delete = "DELETE FROM callback_event_chunks
                 WHERE app_key = $1 AND target = $2 AND command = $3 AND last_id <= $4";
            let mut n = 0;
            for command in CALLBACK_COMMANDS {
                let mut app_wide: Option<u64> = None;
                for e in &endpoints {
                    let wants = e.commands.is_empty() || e.commands.iter().any(|x| x == command);
                    if !wants || e.disabled_ms.is_some() {
                        continue;
                    }
                    let cursor = query_opt(
                        &t,
                        what,
                        "SELECT last_event_id FROM callback_cursors
                         WHERE endpoint_id = $1 AND command = $2",
                        &[&to_i64(e.id), &command],
                    )
                    .await?;
                    let mut at = match cursor {
                        Some(r) => to_u64(col(&r, 0)?),
                        None => e.start_event_id,
                    };
                    // Events that waiting batches refer to stay.
                    let held = query_one(
                        &t,
                        what,
                        "SELECT MIN(first_event_id) FROM callback_batches
                         WHERE endpoint_id = $1 AND command = $2 AND events = ''",
                        &[&to_i64(e.id), &command],
                    )
                    .await?;
                    if let Some(first) = col::<Option<i64>>(&held, 0)? {
                        at = at.min(to_u64(first).saturating_sub(1));
                    }
                    if e.push_level {
                        n += execute(
                            &t,
                            what,
                            delete,
                            &[&app_key, &to_i64(e.id), &command, &to_i64(at)],
                        )
                        .await?;
                    } else {
                        app_wide = Some(app_wide.map_or(at, |m| m.min(at)));
                    }
                }
                let upto = app_wide.map_or(i64::MAX, to_i64);
                n += execute(&t, what, delete, &[&app_key, &0i64, &command, &upto]).await?;
            }
            // Events for push-level endpoints that are gone or disabled.
            n += execute(
                &t,
                what,
                "DELETE FROM callback_event_chunks WHERE app_key = $1 AND target <> 0
                 AND target NOT IN (SELECT id FROM callback_endpoints
                     WHERE app_key = $1 AND disabled_ms IS NULL)",
                &[&app_key],
            )
            .await?;
            t.commit().await.map_err(|e| pg_err(what, e))?;
            Ok(n)
        })
    }
}

impl FileStore for PostgresStore {
    fn put_file(&self, f: FileRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "put_file",
                "INSERT INTO files (file_id, app_key, kind, file_name, created_ms, expires_ms,
                    file_values) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &f.file_id,
                    &f.app_key,
                    &f.kind,
                    &f.file_name,
                    &to_i64(f.created_ms),
                    &to_i64(f.expires_ms),
                    &f.values.join("\n"),
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn list_files(&self, app_key: &str, now_ms: u64) -> StoreFuture<'_, Vec<FileRecord>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "list_files",
                "SELECT file_id, app_key, kind, file_name, created_ms, expires_ms, '' FROM files
                 WHERE app_key = $1 AND expires_ms > $2 ORDER BY created_ms, file_id",
                &[&app_key, &to_i64(now_ms)],
            )
            .await?
            .iter()
            .map(file_from_row)
            .collect()
        })
    }

    fn get_file(
        &self,
        app_key: &str,
        file_id: &str,
        now_ms: u64,
    ) -> StoreFuture<'_, Option<FileRecord>> {
        let (app_key, file_id) = (app_key.to_string(), file_id.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            query_opt(
                &c,
                "get_file",
                "SELECT file_id, app_key, kind, file_name, created_ms, expires_ms, file_values
                 FROM files WHERE app_key = $1 AND file_id = $2 AND expires_ms > $3",
                &[&app_key, &file_id, &to_i64(now_ms)],
            )
            .await?
            .map(|r| file_from_row(&r))
            .transpose()
        })
    }

    fn delete_file(&self, app_key: &str, file_id: &str) -> StoreFuture<'_, bool> {
        let (app_key, file_id) = (app_key.to_string(), file_id.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "delete_file",
                "DELETE FROM files WHERE app_key = $1 AND file_id = $2",
                &[&app_key, &file_id],
            )
            .await?;
            Ok(n > 0)
        })
    }
}

impl SmsStore for PostgresStore {
    fn due_sms_jobs(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<(u64, String)>> {
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "due_sms_jobs",
                "SELECT msg_id, app_key FROM sms_jobs WHERE due_ms <= $1
                 ORDER BY due_ms, msg_id LIMIT $2",
                &[&to_i64(now_ms), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?
            .iter()
            .map(|r| Ok((to_u64(col(r, 0)?), col(r, 1)?)))
            .collect()
        })
    }

    fn expand_sms_job(&self, msg_id: u64, sends: Vec<SmsSend>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let n = sends.len();
            let (mut msg_ids, mut ordinals, mut apps, mut rids) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut mobiles, mut sms, mut attempts, mut next) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for s in sends {
                msg_ids.push(to_i64(s.msg_id));
                ordinals.push(i64::from(s.ordinal));
                apps.push(s.app_key);
                rids.push(s.registration_id);
                mobiles.push(s.mobile);
                sms.push(s.sms);
                attempts.push(i64::from(s.attempts));
                next.push(to_i64(s.next_ms));
            }
            let c = self.client().await?;
            // Nothing goes out if the timer is gone (recalled or overridden meanwhile).
            execute(
                &c,
                "expand_sms_job",
                "WITH job AS (DELETE FROM sms_jobs WHERE msg_id = $1 RETURNING msg_id)
                 INSERT INTO sms_sends (msg_id, ordinal, app_key, registration_id, mobile, sms,
                     attempts, next_ms)
                 SELECT s.* FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::bigint[], $9::bigint[]) AS s
                 WHERE EXISTS (SELECT 1 FROM job)
                 ON CONFLICT (msg_id, ordinal) DO NOTHING",
                &[
                    &to_i64(msg_id),
                    &msg_ids,
                    &ordinals,
                    &apps,
                    &rids,
                    &mobiles,
                    &sms,
                    &attempts,
                    &next,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn stop_sms(&self, msg_id: u64) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_one(
                &c,
                "stop_sms",
                "WITH j AS (DELETE FROM sms_jobs WHERE msg_id = $1 RETURNING 1),
                      s AS (DELETE FROM sms_sends WHERE msg_id = $1 RETURNING 1)
                 SELECT (SELECT COUNT(*) FROM j) + (SELECT COUNT(*) FROM s)",
                &[&to_i64(msg_id)],
            )
            .await?;
            Ok(col::<i64>(&r, 0)? > 0)
        })
    }

    fn due_sms_sends(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<SmsSend>> {
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "due_sms_sends",
                "SELECT msg_id, ordinal, app_key, registration_id, mobile, sms, attempts, next_ms
                 FROM sms_sends WHERE next_ms <= $1 ORDER BY next_ms, msg_id, ordinal LIMIT $2",
                &[&to_i64(now_ms), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(SmsSend {
                    msg_id: to_u64(col(r, 0)?),
                    ordinal: to_u32(col(r, 1)?, "ordinal")?,
                    app_key: col(r, 2)?,
                    registration_id: col(r, 3)?,
                    mobile: col(r, 4)?,
                    sms: col(r, 5)?,
                    attempts: to_u32(col(r, 6)?, "SMS attempts")?,
                    next_ms: to_u64(col(r, 7)?),
                })
            })
            .collect()
        })
    }

    fn finish_sms_send(
        &self,
        msg_id: u64,
        ordinal: u32,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        let e = EventRows::new(&events);
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "finish_sms_send",
                "WITH finished AS (
                     DELETE FROM sms_sends WHERE msg_id = $1 AND ordinal = $2
                 )
                 SELECT pigeon_write_events($3, $4, $5, $6, $7, $8)",
                &[
                    &to_i64(msg_id),
                    &i64::from(ordinal),
                    &e.app,
                    &e.target,
                    &e.command,
                    &e.at,
                    &e.n,
                    &e.bodies,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn retry_sms_send(
        &self,
        msg_id: u64,
        ordinal: u32,
        attempts: u32,
        next_ms: u64,
    ) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "retry_sms_send",
                "UPDATE sms_sends SET attempts = $3, next_ms = $4
                 WHERE msg_id = $1 AND ordinal = $2",
                &[
                    &to_i64(msg_id),
                    &i64::from(ordinal),
                    &i64::from(attempts),
                    &to_i64(next_ms),
                ],
            )
            .await?;
            Ok(())
        })
    }
}

/// Takes `count` numbers from counter `name`, never below the floor `floor_sql` computes
/// (given `$2`) nor below what the counter handed out; returns the first. Atomic across
/// processes: the counter row is locked by the upsert.
async fn take_block<C: GenericClient>(
    c: &C,
    what: &str,
    floor_sql: &str,
    name: &str,
    floor_arg: &(dyn tokio_postgres::types::ToSql + Sync),
    count: i64,
) -> StoreResult<i64> {
    let r = query_one(
        c,
        what,
        &format!(
            "INSERT INTO counters (name, next) VALUES ($1, ({floor_sql}) + $3)
             ON CONFLICT (name) DO UPDATE
                 SET next = GREATEST(counters.next + $3, excluded.next)
             RETURNING next - $3"
        ),
        &[&name, floor_arg, &count],
    )
    .await?;
    col(&r, 0)
}

impl FeedStore for PostgresStore {
    fn reserve_ordinals(&self, app_key: &str, count: u32) -> StoreFuture<'_, u32> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            let first = take_block(
                &c,
                "reserve_ordinals",
                "SELECT COALESCE(MAX(ordinal) + 1, 0) FROM devices WHERE app_key = $2",
                &format!("ordinals:{app_key}"),
                &app_key,
                i64::from(count),
            )
            .await?;
            u32::try_from(first)
                .ok()
                .filter(|f| f.checked_add(count).is_some())
                .ok_or_else(|| StoreError::Corrupt(format!("app {app_key} ran out of ordinals")))
        })
    }

    fn reserve_msg_ids(&self, count: u64, floor: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            let first = take_block(
                &c,
                "reserve_msg_ids",
                "SELECT GREATEST(COALESCE(MAX(msg_id) + 1, 0), $2::bigint) FROM pushes",
                "msg_ids",
                &to_i64(floor),
                to_i64(count),
            )
            .await?;
            Ok(to_u64(first))
        })
    }

    fn feed_cursor(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_one(&c, "feed_cursor", "SELECT pigeon_change_horizon() - 1", &[]).await?;
            Ok(to_u64(col(&r, 0)?))
        })
    }

    fn changes_since(&self, cursor: u64, limit: usize) -> StoreFuture<'_, (Vec<Change>, u64)> {
        Box::pin(async move {
            let what = "changes_since";
            let limit = limit.max(1);
            let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
            let mut c = self.client().await?;
            // Every statement below sees one snapshot, the one the horizon is taken from.
            let t = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(|e| pg_err(what, e))?;
            let r = query_one(&t, what, "SELECT pigeon_change_horizon()", &[]).await?;
            let horizon: i64 = col(&r, 0)?;
            let after = to_i64(cursor);
            let mut found = changes_between(&t, "", &[&after, &horizon, &fetch]).await?;
            let next = if found.len() <= limit {
                to_u64(horizon.saturating_sub(1)).max(cursor)
            } else {
                found.truncate(limit);
                let last = found.last().map_or(after, |f| f.0);
                // Changes sharing the last number (only past 65536 in one transaction) are
                // given all at once, so the next cursor can move past them.
                let same = changes_between(
                    &t,
                    "AND change_id = $4",
                    &[&after, &horizon, &i64::MAX, &last],
                )
                .await?;
                found.retain(|f| f.0 != last);
                found.extend(same);
                to_u64(last).max(cursor)
            };
            t.commit().await.map_err(|e| pg_err(what, e))?;
            Ok((found.into_iter().map(|f| f.1).collect(), next))
        })
    }
}

/// The device, push, geofence and saved-audience changes numbered in `($1, $2)` and matching `extra`, at
/// most `$3` of each, in change order.
async fn changes_between<C: GenericClient>(
    c: &C,
    extra: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> StoreResult<Vec<(i64, Change)>> {
    let what = "changes_since";
    let devices = format!(
        "SELECT change_id, app_key, {DEVICE_COLUMNS} FROM devices
         WHERE change_id > $1 AND change_id < $2 {extra} ORDER BY change_id LIMIT $3"
    );
    let pushes = format!(
        "SELECT change_id, app_key, msg_id, recalled_ms IS NOT NULL FROM pushes
         WHERE change_id > $1 AND change_id < $2 {extra} ORDER BY change_id LIMIT $3"
    );
    // A deleted fence keeps its row (no body): its deletion is a change too.
    let geofences = format!(
        "SELECT change_id, app_key, geofence_id FROM geofences
         WHERE change_id > $1 AND change_id < $2 {extra} ORDER BY change_id LIMIT $3"
    );
    let saved = format!(
        "SELECT change_id, app_key, kind, id FROM saved_audiences
         WHERE change_id > $1 AND change_id < $2 {extra} ORDER BY change_id LIMIT $3"
    );
    let mut found = Vec::new();
    for r in &query(c, what, &devices, params).await? {
        let app_key: String = col(r, 1)?;
        let record = device_from_row(&Arc::from(app_key.as_str()), r, 2)?;
        found.push((col::<i64>(r, 0)?, Change::Device(Box::new(record))));
    }
    for r in &query(c, what, &pushes, params).await? {
        found.push((
            col::<i64>(r, 0)?,
            Change::Push {
                app_key: col(r, 1)?,
                msg_id: to_u64(col(r, 2)?),
                recalled: col(r, 3)?,
            },
        ));
    }
    for r in &query(c, what, &geofences, params).await? {
        found.push((
            col::<i64>(r, 0)?,
            Change::Geofence {
                app_key: col(r, 1)?,
                geofence_id: col(r, 2)?,
            },
        ));
    }
    for r in &query(c, what, &saved, params).await? {
        let Some(kind) = SavedKind::parse(&col::<String>(r, 2)?) else {
            continue;
        };
        found.push((
            col::<i64>(r, 0)?,
            Change::Saved {
                app_key: col(r, 1)?,
                kind,
                id: col(r, 3)?,
            },
        ));
    }
    found.sort_by_key(|f| f.0);
    Ok(found)
}

impl LeaseStore for PostgresStore {
    fn take_lease(&self, name: &str, node: &str, ttl_ms: u64) -> StoreFuture<'_, Option<u64>> {
        let (name, node) = (name.to_string(), node.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            // Taken if free, expired, or ours (renewed: same token); the token grows only
            // when the lease changes hands.
            let r = query_opt(
                &c,
                "take_lease",
                "INSERT INTO leases (name, holder, token, until_ms)
                 VALUES ($1, $2, 1, pigeon_now_ms() + $3)
                 ON CONFLICT (name) DO UPDATE SET
                     token = CASE WHEN leases.holder = excluded.holder THEN leases.token
                                  ELSE leases.token + 1 END,
                     holder = excluded.holder, until_ms = excluded.until_ms
                 WHERE leases.holder = excluded.holder OR leases.until_ms <= pigeon_now_ms()
                 RETURNING token",
                &[&name, &node, &to_i64(ttl_ms.min(MAX_TTL_MS))],
            )
            .await?;
            r.map(|r| Ok(to_u64(col(&r, 0)?))).transpose()
        })
    }

    fn release_lease(&self, name: &str, node: &str) -> StoreFuture<'_, bool> {
        let (name, node) = (name.to_string(), node.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            // Expired at once, keeping its token so the next holder's is larger.
            let n = execute(
                &c,
                "release_lease",
                "UPDATE leases SET until_ms = 0
                 WHERE name = $1 AND holder = $2 AND until_ms > pigeon_now_ms()",
                &[&name, &node],
            )
            .await?;
            Ok(n > 0)
        })
    }

    fn lease_holds(&self, name: &str, token: u64) -> StoreFuture<'_, bool> {
        let name = name.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            let r = query_one(
                &c,
                "lease_holds",
                "SELECT EXISTS (SELECT 1 FROM leases
                     WHERE name = $1 AND token = $2 AND until_ms > pigeon_now_ms())",
                &[&name, &to_i64(token)],
            )
            .await?;
            col(&r, 0)
        })
    }

    fn leases(&self) -> StoreFuture<'_, Vec<Lease>> {
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "leases",
                "SELECT name, holder, token, until_ms FROM leases
                 WHERE until_ms > pigeon_now_ms() ORDER BY name",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(Lease {
                    name: col(r, 0)?,
                    holder: col(r, 1)?,
                    token: to_u64(col(r, 2)?),
                    until_ms: to_u64(col(r, 3)?),
                })
            })
            .collect()
        })
    }
}

impl PresenceStore for PostgresStore {
    fn set_presence(&self, node: &str, changes: Vec<(String, u32, bool)>) -> StoreFuture<'_, ()> {
        let node = node.to_string();
        Box::pin(async move {
            // What applying the changes in order leaves, device by device: the last change
            // decides; a leave after a join of this same batch clears the row whoever it
            // names by then (the join made it this node's).
            let mut last: HashMap<(String, u32), (bool, bool)> = HashMap::new();
            for (app_key, ordinal, connected) in changes {
                let entry = last.entry((app_key, ordinal)).or_insert((connected, false));
                let joined_before = entry.1 || entry.0;
                *entry = (connected, joined_before);
            }
            let mut last: Vec<((String, u32), (bool, bool))> = last.into_iter().collect();
            last.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let (mut join_apps, mut join_ordinals) = (Vec::new(), Vec::new());
            let (mut leave_apps, mut leave_ordinals, mut leave_any) =
                (Vec::new(), Vec::new(), Vec::new());
            for ((app_key, ordinal), (connected, joined_before)) in last {
                if connected {
                    join_apps.push(app_key);
                    join_ordinals.push(i64::from(ordinal));
                } else {
                    leave_apps.push(app_key);
                    leave_ordinals.push(i64::from(ordinal));
                    leave_any.push(joined_before);
                }
            }
            let c = self.client().await?;
            execute(
                &c,
                "set_presence",
                "WITH joined AS (
                     INSERT INTO presence (app_key, ordinal, node)
                     SELECT a, o, $1 FROM unnest($2::text[], $3::bigint[]) AS x(a, o)
                     ON CONFLICT (app_key, ordinal) DO UPDATE SET node = excluded.node
                 )
                 DELETE FROM presence p
                 USING unnest($4::text[], $5::bigint[], $6::bool[]) AS x(a, o, any_node)
                 WHERE p.app_key = x.a AND p.ordinal = x.o AND (p.node = $1 OR x.any_node)",
                &[
                    &node,
                    &join_apps,
                    &join_ordinals,
                    &leave_apps,
                    &leave_ordinals,
                    &leave_any,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn clear_presence(&self, node: &str) -> StoreFuture<'_, ()> {
        let node = node.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            execute(
                &c,
                "clear_presence",
                "DELETE FROM presence WHERE node = $1",
                &[&node],
            )
            .await?;
            Ok(())
        })
    }

    fn presence(&self, app_key: &str, ordinals: Vec<u32>) -> StoreFuture<'_, Vec<(u32, String)>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let ordinals: Vec<i64> = ordinals.into_iter().map(i64::from).collect();
            let c = self.client().await?;
            query(
                &c,
                "presence",
                "SELECT x.o, p.node
                 FROM unnest($2::bigint[]) WITH ORDINALITY AS x(o, pos)
                 JOIN presence p ON p.app_key = $1 AND p.ordinal = x.o
                 JOIN leases l ON l.name = 'node:' || p.node AND l.until_ms > pigeon_now_ms()
                 ORDER BY x.pos",
                &[&app_key, &ordinals],
            )
            .await?
            .iter()
            .map(|r| Ok((to_u32(col(r, 0)?, "ordinal")?, col(r, 1)?)))
            .collect()
        })
    }
}

/// The columns of a fence state row, as [`fence_state_from_row`] reads them.
const FENCE_STATE_COLUMNS: &str = "app_key, ordinal, geofence_id, inside, entered_ms, \
    stay_due_ms, lat, lon, fired, last_enter_ms, last_leave_ms, last_stay_ms";

fn fence_state_from_row(r: &Row) -> StoreResult<FenceState> {
    let fired: i32 = col(r, 8)?;
    Ok(FenceState {
        app_key: col(r, 0)?,
        ordinal: to_u32(col(r, 1)?, "fence state ordinal")?,
        geofence_id: col(r, 2)?,
        inside: col(r, 3)?,
        entered_ms: to_u64(col(r, 4)?),
        stay_due_ms: col::<Option<i64>>(r, 5)?.map(to_u64),
        lat: col(r, 6)?,
        lon: col(r, 7)?,
        fired: u8::try_from(fired)
            .map_err(|_| StoreError::Corrupt(format!("fence state fired {fired} out of range")))?,
        last_fired_ms: [to_u64(col(r, 9)?), to_u64(col(r, 10)?), to_u64(col(r, 11)?)],
    })
}

fn geofence_from_json(body: &str) -> StoreResult<GeofenceRecord> {
    serde_json::from_str(body).map_err(json_err("geofence"))
}

/// States to write, one per (app, ordinal, fence) — a later one of the same key merged into
/// the earlier as the store merges it into the stored row — in key order (so that writers
/// of overlapping states lock rows in one order).
fn merge_fence_states(states: Vec<FenceState>) -> Vec<FenceState> {
    let mut merged: BTreeMap<(String, u32, String), FenceState> = BTreeMap::new();
    for s in states {
        let key = (s.app_key.clone(), s.ordinal, s.geofence_id.clone());
        match merged.get_mut(&key) {
            Some(m) => {
                let fired = m.fired | s.fired;
                let last = m.last_fired_ms;
                *m = s;
                m.fired = fired;
                for (mine, earlier) in m.last_fired_ms.iter_mut().zip(last) {
                    *mine = (*mine).max(earlier);
                }
            }
            None => {
                merged.insert(key, s);
            }
        }
    }
    merged.into_values().collect()
}

impl PostgresStore {
    async fn put_saved(
        &self,
        (app_key, kind, id): (&str, SavedKind, &str),
        created_ms: u64,
        body: Result<String, serde_json::Error>,
    ) -> StoreResult<()> {
        let body = body.map_err(json_err(kind.as_str()))?;
        let c = self.client().await?;
        execute(
            &c,
            "put_saved",
            "INSERT INTO saved_audiences (app_key, kind, id, body, created_ms, change_id)
             VALUES ($1, $2, $3, $4, $5, pigeon_change_base())
             ON CONFLICT (app_key, kind, id) DO UPDATE SET body = excluded.body,
                created_ms = excluded.created_ms, change_id = excluded.change_id",
            &[&app_key, &kind.as_str(), &id, &body, &to_i64(created_ms)],
        )
        .await?;
        Ok(())
    }

    async fn get_saved<T: serde::de::DeserializeOwned>(
        &self,
        app_key: &str,
        kind: SavedKind,
        id: &str,
    ) -> StoreResult<Option<T>> {
        let c = self.client().await?;
        let row = query_opt(
            &c,
            "get_saved",
            "SELECT body FROM saved_audiences
             WHERE app_key = $1 AND kind = $2 AND id = $3 AND body IS NOT NULL",
            &[&app_key, &kind.as_str(), &id],
        )
        .await?;
        row.map(|r| serde_json::from_str(&col::<String>(&r, 0)?).map_err(json_err(kind.as_str())))
            .transpose()
    }

    async fn list_saved<T: serde::de::DeserializeOwned>(
        &self,
        app_key: &str,
        kind: SavedKind,
    ) -> StoreResult<Vec<T>> {
        let c = self.client().await?;
        query(
            &c,
            "list_saved",
            "SELECT body FROM saved_audiences
             WHERE app_key = $1 AND kind = $2 AND body IS NOT NULL ORDER BY created_ms, id",
            &[&app_key, &kind.as_str()],
        )
        .await?
        .iter()
        .map(|r| serde_json::from_str(&col::<String>(r, 0)?).map_err(json_err(kind.as_str())))
        .collect()
    }
}

impl SavedAudienceStore for PostgresStore {
    fn put_segment(&self, segment: SegmentRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let key = (
                segment.app_key.as_str(),
                SavedKind::Segment,
                segment.segment_id.as_str(),
            );
            self.put_saved(key, segment.created_ms, serde_json::to_string(&segment))
                .await
        })
    }

    fn put_abtest(&self, test: AbTestRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let key = (
                test.app_key.as_str(),
                SavedKind::AbTest,
                test.abtest_id.as_str(),
            );
            self.put_saved(key, test.created_ms, serde_json::to_string(&test))
                .await
        })
    }

    fn delete_saved(&self, app_key: &str, kind: SavedKind, id: &str) -> StoreFuture<'_, bool> {
        let (app_key, id) = (app_key.to_string(), id.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            let n = execute(
                &c,
                "delete_saved",
                "UPDATE saved_audiences SET body = NULL, change_id = pigeon_change_base()
                 WHERE app_key = $1 AND kind = $2 AND id = $3 AND body IS NOT NULL",
                &[&app_key, &kind.as_str(), &id],
            )
            .await?;
            Ok(n > 0)
        })
    }

    fn get_segment(&self, app_key: &str, id: &str) -> StoreFuture<'_, Option<SegmentRecord>> {
        let (app_key, id) = (app_key.to_string(), id.to_string());
        Box::pin(async move { self.get_saved(&app_key, SavedKind::Segment, &id).await })
    }

    fn get_abtest(&self, app_key: &str, id: &str) -> StoreFuture<'_, Option<AbTestRecord>> {
        let (app_key, id) = (app_key.to_string(), id.to_string());
        Box::pin(async move { self.get_saved(&app_key, SavedKind::AbTest, &id).await })
    }

    fn list_segments(&self, app_key: &str) -> StoreFuture<'_, Vec<SegmentRecord>> {
        let app_key = app_key.to_string();
        Box::pin(async move { self.list_saved(&app_key, SavedKind::Segment).await })
    }

    fn list_abtests(&self, app_key: &str) -> StoreFuture<'_, Vec<AbTestRecord>> {
        let app_key = app_key.to_string();
        Box::pin(async move { self.list_saved(&app_key, SavedKind::AbTest).await })
    }

    fn abtest_pushes(&self, app_key: &str, abtest_id: &str) -> StoreFuture<'_, Vec<u64>> {
        let (app_key, abtest_id) = (app_key.to_string(), abtest_id.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "abtest_pushes",
                "SELECT msg_id FROM abtest_pushes WHERE app_key = $1 AND abtest_id = $2
                 ORDER BY msg_id",
                &[&app_key, &abtest_id],
            )
            .await?
            .iter()
            .map(|r| Ok(to_u64(col(r, 0)?)))
            .collect()
        })
    }
}

impl GeofenceStore for PostgresStore {
    fn put_geofence(&self, fence: GeofenceRecord) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let body = serde_json::to_string(&fence).map_err(json_err("geofence"))?;
            let c = self.client().await?;
            execute(
                &c,
                "put_geofence",
                "INSERT INTO geofences (app_key, geofence_id, body, created_ms, change_id)
                 VALUES ($1, $2, $3, $4, pigeon_change_base())
                 ON CONFLICT (app_key, geofence_id) DO UPDATE SET body = excluded.body,
                    created_ms = excluded.created_ms, change_id = excluded.change_id",
                &[
                    &fence.app_key,
                    &fence.geofence_id,
                    &body,
                    &to_i64(fence.created_ms),
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn delete_geofence(&self, app_key: &str, geofence_id: &str) -> StoreFuture<'_, bool> {
        let (app_key, geofence_id) = (app_key.to_string(), geofence_id.to_string());
        Box::pin(async move {
            let what = "delete_geofence";
            let mut c = self.client().await?;
            let t = c.transaction().await.map_err(|e| pg_err(what, e))?;
            // The fence's row lock waits for writers of its states (they hold it shared);
            // the states are deleted by a statement of its own, whose snapshot is taken
            // after that wait and so sees what they wrote.
            let n = execute(
                &t,
                what,
                "UPDATE geofences SET body = NULL, change_id = pigeon_change_base()
                 WHERE app_key = $1 AND geofence_id = $2 AND body IS NOT NULL",
                &[&app_key, &geofence_id],
            )
            .await?;
            if n == 0 {
                return Ok(false);
            }
            execute(
                &t,
                what,
                "DELETE FROM fence_states WHERE app_key = $1 AND geofence_id = $2",
                &[&app_key, &geofence_id],
            )
            .await?;
            t.commit().await.map_err(|e| pg_err(what, e))?;
            Ok(true)
        })
    }

    fn get_geofence(
        &self,
        app_key: &str,
        geofence_id: &str,
    ) -> StoreFuture<'_, Option<GeofenceRecord>> {
        let (app_key, geofence_id) = (app_key.to_string(), geofence_id.to_string());
        Box::pin(async move {
            let c = self.client().await?;
            let row = query_opt(
                &c,
                "get_geofence",
                "SELECT body FROM geofences
                 WHERE app_key = $1 AND geofence_id = $2 AND body IS NOT NULL",
                &[&app_key, &geofence_id],
            )
            .await?;
            match row {
                Some(r) => Ok(Some(geofence_from_json(&col::<String>(&r, 0)?)?)),
                None => Ok(None),
            }
        })
    }

    fn list_geofences(&self, app_key: &str) -> StoreFuture<'_, Vec<GeofenceRecord>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "list_geofences",
                "SELECT body FROM geofences WHERE app_key = $1 AND body IS NOT NULL
                 ORDER BY created_ms, geofence_id",
                &[&app_key],
            )
            .await?
            .iter()
            .map(|r| geofence_from_json(&col::<String>(r, 0)?))
            .collect()
        })
    }

    fn fence_states(&self, app_key: &str, ordinal: u32) -> StoreFuture<'_, Vec<FenceState>> {
        let app_key = app_key.to_string();
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "fence_states",
                &format!(
                    "SELECT {FENCE_STATE_COLUMNS} FROM fence_states
                     WHERE app_key = $1 AND ordinal = $2 ORDER BY geofence_id"
                ),
                &[&app_key, &i64::from(ordinal)],
            )
            .await?
            .iter()
            .map(fence_state_from_row)
            .collect()
        })
    }

    fn write_fence_states(
        &self,
        states: Vec<FenceState>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, ()> {
        let e = EventRows::new(&events);
        let states = merge_fence_states(states);
        Box::pin(async move {
            let n = states.len();
            let mut apps = Vec::with_capacity(n);
            let mut ordinals = Vec::with_capacity(n);
            let mut fences = Vec::with_capacity(n);
            let mut inside = Vec::with_capacity(n);
            let mut entered = Vec::with_capacity(n);
            let mut due = Vec::with_capacity(n);
            let mut lats = Vec::with_capacity(n);
            let mut lons = Vec::with_capacity(n);
            let mut fired = Vec::with_capacity(n);
            let mut enters = Vec::with_capacity(n);
            let mut leaves = Vec::with_capacity(n);
            let mut stays = Vec::with_capacity(n);
            for s in states {
                apps.push(s.app_key);
                ordinals.push(i64::from(s.ordinal));
                fences.push(s.geofence_id);
                inside.push(s.inside);
                entered.push(to_i64(s.entered_ms));
                due.push(s.stay_due_ms.map(to_i64));
                lats.push(s.lat);
                lons.push(s.lon);
                fired.push(i32::from(s.fired));
                enters.push(to_i64(s.last_fired_ms[0]));
                leaves.push(to_i64(s.last_fired_ms[1]));
                stays.push(to_i64(s.last_fired_ms[2]));
            }
            let c = self.client().await?;
            // One statement, one transaction: the states by a CTE (it always runs), the
            // events by the statement itself. Only states of a fence that still has a body
            // are written; its row is locked shared, so a delete of it waits for this write
            // and then deletes these states too (a delete committed first is seen by the
            // lock's recheck, and the states are left out).
            execute(
                &c,
                "write_fence_states",
                "WITH s AS (
                     SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::boolean[],
                         $5::bigint[], $6::bigint[], $7::float8[], $8::float8[], $9::int[],
                         $10::bigint[], $11::bigint[], $12::bigint[])
                         WITH ORDINALITY AS s(app_key, ordinal, geofence_id, inside,
                             entered_ms, stay_due_ms, lat, lon, fired, last_enter_ms,
                             last_leave_ms, last_stay_ms, pos)
                 ), written AS (
                     INSERT INTO fence_states AS f (app_key, ordinal, geofence_id, inside,
                         entered_ms, stay_due_ms, lat, lon, fired, last_enter_ms,
                         last_leave_ms, last_stay_ms)
                     SELECT s.app_key, s.ordinal, s.geofence_id, s.inside, s.entered_ms,
                         s.stay_due_ms, s.lat, s.lon, s.fired, s.last_enter_ms,
                         s.last_leave_ms, s.last_stay_ms
                     FROM s JOIN geofences g
                         ON g.app_key = s.app_key AND g.geofence_id = s.geofence_id
                     WHERE g.body IS NOT NULL
                     ORDER BY s.pos
                     FOR SHARE OF g
                     ON CONFLICT (app_key, ordinal, geofence_id) DO UPDATE SET
                         inside = excluded.inside, entered_ms = excluded.entered_ms,
                         stay_due_ms = excluded.stay_due_ms, lat = excluded.lat,
                         lon = excluded.lon, fired = f.fired | excluded.fired,
                         last_enter_ms = GREATEST(f.last_enter_ms, excluded.last_enter_ms),
                         last_leave_ms = GREATEST(f.last_leave_ms, excluded.last_leave_ms),
                         last_stay_ms = GREATEST(f.last_stay_ms, excluded.last_stay_ms)
                 )
                 SELECT pigeon_write_events($13, $14, $15, $16, $17, $18)",
                &[
                    &apps, &ordinals, &fences, &inside, &entered, &due, &lats, &lons, &fired,
                    &enters, &leaves, &stays, &e.app, &e.target, &e.command, &e.at, &e.n,
                    &e.bodies,
                ],
            )
            .await?;
            Ok(())
        })
    }

    fn due_stays(&self, now_ms: u64, limit: usize) -> StoreFuture<'_, Vec<FenceState>> {
        Box::pin(async move {
            let c = self.client().await?;
            query(
                &c,
                "due_stays",
                &format!(
                    "SELECT {FENCE_STATE_COLUMNS} FROM fence_states
                     WHERE stay_due_ms IS NOT NULL AND stay_due_ms <= $1
                     ORDER BY stay_due_ms, app_key, ordinal, geofence_id LIMIT $2"
                ),
                &[&to_i64(now_ms), &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?
            .iter()
            .map(fence_state_from_row)
            .collect()
        })
    }

    fn settle_stay(
        &self,
        state: FenceState,
        fired_ms: Option<u64>,
        next_due_ms: Option<u64>,
        events: Vec<NewEvent>,
    ) -> StoreFuture<'_, bool> {
        let e = EventRows::new(&events);
        Box::pin(async move {
            let what = "settle_stay";
            let mut c = self.client().await?;
            let t = c.transaction().await.map_err(|e| pg_err(what, e))?;
            // Only the entry and the pending stay the caller read: a node settling the same
            // stay at the same moment waits for this row lock, then finds it moved on.
            let n = execute(
                &t,
                what,
                "UPDATE fence_states SET stay_due_ms = $6,
                    fired = fired | CASE WHEN $7::bigint IS NULL THEN 0 ELSE $8 END,
                    last_stay_ms = COALESCE($7, last_stay_ms)
                 WHERE app_key = $1 AND ordinal = $2 AND geofence_id = $3 AND inside
                   AND entered_ms = $4 AND stay_due_ms = $5",
                &[
                    &state.app_key,
                    &i64::from(state.ordinal),
                    &state.geofence_id,
                    &to_i64(state.entered_ms),
                    &state.stay_due_ms.map(to_i64),
                    &next_due_ms.map(to_i64),
                    &fired_ms.map(to_i64),
                    &i32::from(FENCE_STAY),
                ],
            )
            .await?;
            if n == 0 {
                return Ok(false);
            }
            if !e.app.is_empty() {
                execute(
                    &t,
                    what,
                    "SELECT pigeon_write_events($1, $2, $3, $4, $5, $6)",
                    &[&e.app, &e.target, &e.command, &e.at, &e.n, &e.bodies],
                )
                .await?;
            }
            t.commit().await.map_err(|e| pg_err(what, e))?;
            Ok(true)
        })
    }
}

impl Storage for PostgresStore {
    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Every write is durable once it is answered; calls still running keep their
            // connections until they finish, and new calls get `Closed`.
            // Pushes queued before the close are written first.
            self.inner.pushes.drain().await;
            let pool = &self.inner.pool;
            pool.close();
            let deadline = tokio::time::Instant::now() + CLOSE_WAIT;
            while pool.status().size > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Ok(())
        })
    }
}
