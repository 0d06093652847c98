//! The in-memory state of one app: its devices and audience index, its live pushes and who is
//! connected. Locks are held for short, synchronous sections only, never across an await.
//! When more than one is needed they are taken in the order devices → live → presence.

use crate::live::LivePush;
use crate::session::SessionHandle;
use parking_lot::{Mutex, RwLock};
use pigeon_core::FastMap as HashMap;
use pigeon_core::{AudienceIndex, DeviceAttrs, Ordinal};
use pigeon_store::{AppRecord, DeviceRecord};
use roaring::RoaringBitmap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One app (tenant). Nothing in it is reachable from another app.
pub struct AppState {
    pub app_key: String,
    /// The same key, shared by the app's device records.
    pub(crate) shared_key: Arc<str>,
    pub master_secret: String,
    pub name: String,
    pub(crate) devices: RwLock<Devices>,
    pub(crate) live: RwLock<BTreeMap<u64, Arc<LivePush>>>,
    pub(crate) presence: Mutex<Presence>,
    /// Live pushes with acks not yet checkpointed.
    pub(crate) dirty: Mutex<Vec<Arc<LivePush>>>,
}

#[derive(Default)]
pub(crate) struct Devices {
    pub index: AudienceIndex,
    pub records: Vec<Option<DeviceRecord>>,
    /// install_id → (ordinal, registration_id), reserved before the device is durable so
    /// that concurrent registrations of one installation agree on one device.
    pub by_install: HashMap<String, (Ordinal, String)>,
    pub next_ordinal: Ordinal,
}

#[derive(Default)]
pub(crate) struct Presence {
    pub sessions: HashMap<Ordinal, SessionHandle>,
    pub online: RoaringBitmap,
}

pub(crate) fn attrs_of(r: &DeviceRecord) -> DeviceAttrs<'_> {
    DeviceAttrs {
        registration_id: &r.registration_id,
        platform: r.platform,
        alias: r.alias.as_deref(),
        tags: &r.tags,
    }
}

impl Devices {
    pub fn record(&self, ordinal: Ordinal) -> Option<&DeviceRecord> {
        self.records.get(ordinal as usize).and_then(Option::as_ref)
    }

    /// Makes `record` the device's current state in memory (after it is durable).
    pub fn apply(&mut self, record: DeviceRecord) {
        let ordinal = record.ordinal;
        let old = self
            .records
            .get_mut(ordinal as usize)
            .and_then(Option::take);
        self.index
            .upsert(ordinal, old.as_ref().map(attrs_of), attrs_of(&record));
        if let Some(install) = &record.install_id {
            self.by_install
                .insert(install.clone(), (ordinal, record.registration_id.clone()));
        }
        let slot = ordinal as usize;
        if self.records.len() <= slot {
            self.records.resize(slot + 1, None);
        }
        self.next_ordinal = self.next_ordinal.max(ordinal + 1);
        self.records[slot] = Some(record);
    }
}

impl AppState {
    pub(crate) fn new(app: AppRecord) -> AppState {
        AppState {
            shared_key: Arc::from(app.app_key.as_str()),
            app_key: app.app_key,
            master_secret: app.master_secret,
            name: app.name,
            devices: RwLock::new(Devices::default()),
            live: RwLock::new(BTreeMap::new()),
            presence: Mutex::new(Presence::default()),
            dirty: Mutex::new(Vec::new()),
        }
    }

    /// Number of registered devices.
    pub fn device_count(&self) -> u64 {
        self.devices.read().index.len()
    }

    /// Number of connected devices.
    pub fn online_count(&self) -> u64 {
        self.presence.lock().online.len()
    }

    /// A device's current record.
    pub fn device(&self, ordinal: Ordinal) -> Option<DeviceRecord> {
        self.devices.read().record(ordinal).cloned()
    }

    /// The live pushes `ordinal` has not acked yet, oldest first.
    pub fn pending_for(&self, ordinal: Ordinal, now_ms: u64) -> Vec<Arc<LivePush>> {
        self.live
            .read()
            .values()
            .filter(|p| p.is_pending_for(ordinal, now_ms))
            .cloned()
            .collect()
    }

    /// A live push by id.
    pub fn live_push(&self, msg_id: u64) -> Option<Arc<LivePush>> {
        self.live.read().get(&msg_id).cloned()
    }

    /// Offers a push to every connected device in its audience.
    pub(crate) fn fan_out(&self, push: &Arc<LivePush>) -> u64 {
        let presence = self.presence.lock();
        let targets = &push.audience & &presence.online;
        for ordinal in targets.iter() {
            if let Some(session) = presence.sessions.get(&ordinal) {
                session.offer(push);
            }
        }
        targets.len()
    }

    /// Drops pushes that expired before `cutoff_ms`.
    pub(crate) fn evict_expired(&self, cutoff_ms: u64) -> usize {
        let mut live = self.live.write();
        let before = live.len();
        live.retain(|_, p| p.expires_ms() >= cutoff_ms);
        before - live.len()
    }
}
