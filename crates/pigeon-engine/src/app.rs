//! The in-memory state of one app: its devices and audience index, its live pushes and who is
//! connected. Locks are held for short, synchronous sections only, never across an await.
//! When more than one is needed they are taken in the order devices → live → presence.

use crate::events;
use crate::live::LivePush;
use crate::session::SessionHandle;
use parking_lot::{Mutex, RwLock};
use pigeon_core::FastMap as HashMap;
use pigeon_core::{
    Audience, AudienceIndex, DeviceAttrs, DeviceIds, Ordinal, PlatformSet, Resolved, SavedAudiences,
};
use pigeon_store::{AppRecord, AppSettings, DeviceRecord};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One app (tenant). Nothing in it is reachable from another app.
pub struct AppState {
    pub app_key: String,
    /// The same key, shared by the app's device records.
    pub(crate) shared_key: Arc<str>,
    pub master_secret: String,
    pub name: String,
    pub(crate) devices: RwLock<Devices>,
    pub(crate) live: RwLock<Live>,
    pub(crate) presence: Mutex<Presence>,
    /// Live pushes with acks not yet checkpointed.
    pub(crate) dirty: Mutex<Vec<Arc<LivePush>>>,
    /// Serializes changes to device records (read, change, store, apply), which span an
    /// await on storage.
    pub(crate) edits: tokio::sync::Mutex<()>,
    /// One lock per cid in use, so that concurrent pushes with one cid push once.
    pub(crate) cid_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) settings: RwLock<AppSettings>,
    /// The app's callback endpoints (refreshed from storage every second).
    pub(crate) callbacks: RwLock<Vec<pigeon_store::CallbackEndpoint>>,
    /// Stages of pushes on devices to report (`Push.Event`) with the next checkpoint.
    pub(crate) push_events: Mutex<Vec<crate::events::PushStage>>,
    /// What later events (clicks) of pushes retired before they expire (every target acked
    /// them) still need: their `callback` field (its params) and A/B split (`Variant`).
    pub(crate) retired: Mutex<HashMap<u64, Retired>>,
    /// Per push, the devices a vendor failed while sending it: reported with ErrCode 3 (dead
    /// token) or 4 (refused, with the vendor's reason) instead of 1 if they have not got the
    /// push when it expires. Dropped a minute past the push's expiry, unreported (a
    /// recalled or overridden push is never reported at expiry).
    pub(crate) vendor_failures: Mutex<HashMap<u64, VendorFailures>>,
    /// What each channel carried of pushes retired before they expire (every target acked
    /// them), until they expire: (expires_ms, by channel). At most
    /// [`MAX_RETIRED_CHANNELS`]; beyond, a push's channels are not recorded.
    pub(crate) retired_channels: Mutex<HashMap<u64, (u64, Vec<crate::report::ChannelCounts>)>>,
    pub(crate) rate: Mutex<crate::limits::RateWindow>,
    pub(crate) badges: Mutex<Badges>,
    /// Devices the app's backend blocked (Getui's black list): resolving an audience leaves
    /// them out.
    pub(crate) blocked: RwLock<RoaringBitmap>,
    /// The app's fences and where each device stands with them (its last position too).
    pub(crate) fences: crate::geofences::AppFences,
    /// The app's segments and A/B tests.
    pub(crate) saved: RwLock<crate::saved::Saved>,
    /// Devices connected to other nodes, per node (from their notices): a push reaches them
    /// there, so a vendor need not carry it.
    pub(crate) elsewhere: Mutex<HashMap<String, RoaringBitmap>>,
    /// Other nodes' API calls to this app in their rate window: node → `(window_ms, calls)`.
    pub(crate) remote_calls: Mutex<HashMap<String, (u64, u64)>>,
    /// Ordinals reserved in the store for new devices and not given yet: `[next, end)`.
    pub(crate) ordinals: Mutex<(Ordinal, Ordinal)>,
    /// Held while a block of ordinals is reserved in the store, so that one is at a time.
    pub(crate) reserving_ordinals: tokio::sync::Mutex<()>,
}

/// What a retired push's later events need, until it expires.
pub(crate) struct Retired {
    pub expires_ms: u64,
    pub callback: Option<pigeon_core::PushCallback>,
    pub split: Option<Box<pigeon_core::Split>>,
}

/// The app-icon badge number the server keeps for each device that has one, and which
/// changed since the last checkpoint.
#[derive(Default)]
pub(crate) struct Badges {
    pub counts: HashMap<Ordinal, u32>,
    changed: Vec<Ordinal>,
}

impl Badges {
    pub fn get(&self, ordinal: Ordinal) -> u32 {
        self.counts.get(&ordinal).copied().unwrap_or(0)
    }

    pub fn set(&mut self, ordinal: Ordinal, badge: u32) {
        if self.counts.insert(ordinal, badge) != Some(badge) {
            self.changed.push(ordinal);
        }
    }

    /// The numbers that changed since the last call: (ordinal, badge).
    pub fn take_changed(&mut self) -> Vec<(Ordinal, u32)> {
        let mut changed = std::mem::take(&mut self.changed);
        changed.sort_unstable();
        changed.dedup();
        changed.into_iter().map(|o| (o, self.get(o))).collect()
    }
}

#[derive(Default)]
pub(crate) struct Devices {
    pub index: AudienceIndex,
    pub records: Vec<Option<DeviceRecord>>,
    /// install_id → (ordinal, registration_id), reserved before the device is durable so
    /// that concurrent registrations of one installation agree on one device.
    pub by_install: HashMap<String, (Ordinal, String)>,
    /// Devices with at least one vendor token: the only ones a vendor can reach, so a push
    /// looks at no other device's record for vendor routing.
    pub with_vendor_tokens: RoaringBitmap,
    /// Per A/B test of the app, its devices by variant: kept with the index, so a push's
    /// split is a few intersections.
    pub abtests: HashMap<String, pigeon_core::VariantBuckets>,
    /// Devices changed through this node, with the number of their latest change
    /// (`Engine::next_device_edit`), until the change feed has been read past it.
    pub edited: HashMap<Ordinal, u64>,
}

/// Most targets a push may have to be listed under each of them; wider pushes (broadcasts,
/// tags) are checked one by one when a device connects.
const NARROW_PUSH: u64 = 64;

/// Whether a push is listed under each of its targets.
pub(crate) fn is_narrow(push: &LivePush) -> bool {
    push.audience.len() <= NARROW_PUSH
}

/// The live pushes of an app: the offline store in memory, indexed so that a connecting
/// device finds its pending pushes without looking at every push of the app.
#[derive(Default)]
pub(crate) struct Live {
    pushes: BTreeMap<u64, Arc<LivePush>>,
    /// Narrow pushes (≤ [`NARROW_PUSH`] targets) listed under each target not yet delivered.
    by_device: HashMap<Ordinal, Vec<u64>>,
    /// Wider pushes.
    wide: BTreeSet<u64>,
    /// Paced pushes still releasing targets.
    paced: BTreeSet<u64>,
}

impl Live {
    pub fn insert(&mut self, push: Arc<LivePush>) {
        let msg_id = push.msg_id();
        if is_narrow(&push) {
            for ordinal in push.audience.iter() {
                if !push.is_delivered_to(ordinal) {
                    self.by_device.entry(ordinal).or_default().push(msg_id);
                }
            }
        } else {
            self.wide.insert(msg_id);
        }
        if push.is_paced() && push.released(crate::now_ms()) < push.audience.len() {
            self.paced.insert(msg_id);
        }
        self.pushes.insert(msg_id, push);
    }

    /// The paced pushes still releasing targets at `now_ms`, each with the targets
    /// released since it was last asked; those done releasing are dropped from the list.
    pub fn pace(&mut self, now_ms: u64) -> Vec<(Arc<LivePush>, RoaringBitmap)> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        for msg_id in &self.paced {
            let Some(push) = self.pushes.get(msg_id) else {
                done.push(*msg_id);
                continue;
            };
            if push.is_recalled() || push.released(now_ms) >= push.audience.len() {
                done.push(*msg_id);
            }
            let fresh = push.newly_released(now_ms);
            if !fresh.is_empty() && !push.is_recalled() {
                out.push((push.clone(), fresh));
            }
        }
        for msg_id in done {
            self.paced.remove(&msg_id);
        }
        out
    }

    /// How many paced pushes are still releasing targets.
    pub fn paced_running(&self) -> usize {
        self.paced.len()
    }

    pub fn get(&self, msg_id: u64) -> Option<&Arc<LivePush>> {
        self.pushes.get(&msg_id)
    }

    /// Drops a push that has nothing left to deliver.
    pub fn retire(&mut self, msg_id: u64) {
        self.paced.remove(&msg_id);
        let Some(push) = self.pushes.remove(&msg_id) else {
            return;
        };
        if !self.wide.remove(&msg_id) {
            for ordinal in push.audience.iter() {
                self.delivered(msg_id, ordinal);
            }
        }
    }

    /// Stops listing a narrow push under a device that has it now.
    pub fn delivered(&mut self, msg_id: u64, ordinal: Ordinal) {
        if let Some(ids) = self.by_device.get_mut(&ordinal) {
            ids.retain(|m| *m != msg_id);
            if ids.is_empty() {
                self.by_device.remove(&ordinal);
            }
        }
    }

    /// The pushes `ordinal` may still need, oldest first (callers check each).
    fn candidates(&self, ordinal: Ordinal) -> Vec<&Arc<LivePush>> {
        let mut ids: Vec<u64> = self.by_device.get(&ordinal).cloned().unwrap_or_default();
        ids.extend(self.wide.iter().copied());
        ids.sort_unstable();
        ids.dedup();
        // In the order they were accepted: concurrent accepts insert out of order, and in a
        // cluster each node's msg_ids come from a block of its own.
        let mut found: Vec<&Arc<LivePush>> =
            ids.iter().filter_map(|m| self.pushes.get(m)).collect();
        found.sort_by_key(|p| (p.push.sent_ms, p.msg_id()));
        found
    }

    /// Drops pushes that expired before `cutoff_ms`; returns how many.
    fn evict(&mut self, cutoff_ms: u64) -> usize {
        let expired: Vec<Arc<LivePush>> = self
            .pushes
            .values()
            .filter(|p| p.expires_ms() < cutoff_ms)
            .cloned()
            .collect();
        for p in &expired {
            self.pushes.remove(&p.msg_id());
            self.paced.remove(&p.msg_id());
            if !self.wide.remove(&p.msg_id()) {
                for ordinal in p.audience.iter() {
                    self.delivered(p.msg_id(), ordinal);
                }
            }
        }
        expired.len()
    }
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
        region: r.region.as_deref(),
    }
}

/// The index reads a device's registration id back from its record to confirm a lookup.
impl DeviceIds for Devices {
    fn registration_id(&self, ordinal: Ordinal) -> Option<&str> {
        self.record(ordinal).map(|r| r.registration_id.as_str())
    }
}

impl Devices {
    pub fn record(&self, ordinal: Ordinal) -> Option<&DeviceRecord> {
        self.records.get(ordinal as usize).and_then(Option::as_ref)
    }

    /// The device with this registration id.
    pub fn ordinal_of(&self, registration_id: &str) -> Option<Ordinal> {
        self.index.ordinal_of(registration_id, self)
    }

    /// [`AudienceIndex::resolve`] over these devices.
    pub fn resolve(&self, audience: &Audience, platforms: PlatformSet) -> RoaringBitmap {
        self.index.resolve(audience, platforms, self)
    }

    /// [`AudienceIndex::resolve_saved`] over these devices.
    pub fn resolve_saved(
        &self,
        audience: &Audience,
        platforms: PlatformSet,
        saved: SavedAudiences<'_>,
    ) -> Resolved {
        self.index.resolve_saved(audience, platforms, saved, self)
    }

    /// [`AudienceIndex::watches`] for one of these devices.
    pub fn watches(&self, ordinal: Ordinal, audience: &Audience) -> bool {
        self.index.watches(ordinal, audience, self)
    }

    /// Each variant's targets among `audience`, for a push split by an A/B test.
    pub fn split_members(
        &self,
        split: &pigeon_core::Split,
        audience: &RoaringBitmap,
    ) -> Vec<RoaringBitmap> {
        if let Some(buckets) = self.abtests.get(&split.abtest_id) {
            return buckets.split(audience).0;
        }
        let mut members = vec![RoaringBitmap::new(); split.variants.len()];
        for ordinal in audience {
            let variant = self
                .record(ordinal)
                .and_then(|r| split.variant_of(&r.registration_id));
            if let Some(m) = variant.and_then(|i| members.get_mut(i)) {
                m.insert(ordinal);
            }
        }
        members
    }

    /// [`Devices::apply`] for a change made through this node, numbered `edit`.
    pub fn apply_edit(&mut self, record: DeviceRecord, edit: u64) {
        self.edited.insert(record.ordinal, edit);
        self.apply(record);
    }

    /// [`Devices::apply`] for a record the change feed gave, from a page read when
    /// `edits_before` device changes had been made through this node: a device changed here
    /// since then keeps its newer state (that change comes later in the feed). False when
    /// skipped.
    pub fn apply_read(&mut self, record: DeviceRecord, edits_before: u64) -> bool {
        if self
            .edited
            .get(&record.ordinal)
            .is_some_and(|e| *e > edits_before)
        {
            return false;
        }
        self.apply(record);
        true
    }

    /// Forgets the changes made through this node up to `edits_before`: the feed has been
    /// read past them.
    pub fn forget_edits(&mut self, edits_before: u64) {
        if !self.edited.is_empty() {
            self.edited.retain(|_, e| *e > edits_before);
        }
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
        if record.push_tokens.is_empty() {
            self.with_vendor_tokens.remove(ordinal);
        } else {
            self.with_vendor_tokens.insert(ordinal);
        }
        if let Some(install) = &record.install_id {
            self.by_install
                .insert(install.clone(), (ordinal, record.registration_id.clone()));
        }
        if old.is_none() {
            for buckets in self.abtests.values_mut() {
                buckets.add(ordinal, &record.registration_id);
            }
        }
        let slot = ordinal as usize;
        if self.records.len() <= slot {
            self.records.resize(slot + 1, None);
        }
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
            live: RwLock::new(Live::default()),
            presence: Mutex::new(Presence::default()),
            dirty: Mutex::new(Vec::new()),
            edits: tokio::sync::Mutex::new(()),
            cid_locks: Mutex::new(HashMap::default()),
            settings: RwLock::new(AppSettings::default()),
            callbacks: RwLock::new(Vec::new()),
            push_events: Mutex::new(Vec::new()),
            retired: Mutex::new(HashMap::default()),
            vendor_failures: Mutex::new(HashMap::default()),
            retired_channels: Mutex::new(HashMap::default()),
            rate: Mutex::new(Default::default()),
            badges: Mutex::new(Badges::default()),
            blocked: RwLock::new(RoaringBitmap::new()),
            fences: Default::default(),
            saved: Default::default(),
            ordinals: Mutex::new((0, 0)),
            reserving_ordinals: tokio::sync::Mutex::new(()),
            remote_calls: Mutex::new(HashMap::default()),
            elsewhere: Mutex::new(HashMap::default()),
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

    /// The ordinal of a device of this app.
    pub fn device_ordinal(&self, registration_id: &str) -> Option<Ordinal> {
        self.devices.read().ordinal_of(registration_id)
    }

    /// A device's current record.
    pub fn device(&self, ordinal: Ordinal) -> Option<DeviceRecord> {
        self.devices.read().record(ordinal).cloned()
    }

    /// The live pushes `ordinal` has not acked yet, oldest first.
    pub fn pending_for(&self, ordinal: Ordinal, now_ms: u64) -> Vec<Arc<LivePush>> {
        self.live
            .read()
            .candidates(ordinal)
            .into_iter()
            .filter(|p| p.is_pending_for(ordinal, now_ms))
            .cloned()
            .collect()
    }

    /// A live push by id.
    pub fn live_push(&self, msg_id: u64) -> Option<Arc<LivePush>> {
        self.live.read().get(msg_id).cloned()
    }

    /// Offers a push to every connected device in its audience (of a paced push, only to
    /// those its pace has reached; the pacer offers it to the others as it reaches them).
    pub(crate) fn fan_out(&self, push: &Arc<LivePush>) -> u64 {
        if push.is_paced() {
            return self.offer(push, &push.newly_released(crate::now_ms()));
        }
        self.offer(push, &push.audience)
    }

    /// Offers a push to the connected devices among `ordinals`.
    /// Most of them are written to their sockets from here (see [`crate::session::Outlet`]),
    /// after the presence lock is let go: connects and disconnects do not wait for a
    /// broadcast's writes.
    pub(crate) fn offer(&self, push: &Arc<LivePush>, ordinals: &RoaringBitmap) -> u64 {
        let (reached, sessions) = {
            let presence = self.presence.lock();
            let targets = ordinals & &presence.online;
            let sessions: Vec<(Ordinal, SessionHandle)> = targets
                .iter()
                .filter_map(|o| presence.sessions.get(&o).map(|s| (o, s.clone())))
                .collect();
            (targets.len(), sessions)
        };
        let now = crate::now_ms();
        let mut written = 0;
        for (ordinal, session) in &sessions {
            if session.offer(push, *ordinal, now) {
                self.record_sent(push, *ordinal);
                written += 1;
            }
        }
        pigeon_telemetry::deliveries(
            pigeon_telemetry::Channel::Pigeon,
            pigeon_telemetry::Stage::Sent,
            written,
        );
        reached
    }

    /// Records that a push was written to a device's connection (its sent bitmap, the
    /// checkpoint's dirty list, the `sent` event); whether it was news.
    pub(crate) fn record_sent(&self, push: &Arc<LivePush>, ordinal: Ordinal) -> bool {
        let (newly, first) = push.mark_sent(ordinal);
        if first {
            self.dirty.lock().push(push.clone());
        }
        if newly
            && (self.wants(events::PUSH_EVENT)
                || events::push_callback_url(push.push.callback.as_ref()).is_some())
        {
            self.push_events.lock().push(events::PushStage::own(
                (push.msg_id(), push.push.sent_ms),
                ordinal,
                events::Stage::Sent,
            ));
        }
        newly
    }

    /// The `callback` field of a push that is live or was retired.
    pub(crate) fn push_callback(&self, msg_id: u64) -> Option<pigeon_core::PushCallback> {
        match self.live_push(msg_id) {
            Some(p) => p.push.callback.clone(),
            None => self
                .retired
                .lock()
                .get(&msg_id)
                .and_then(|r| r.callback.clone()),
        }
    }

    /// The A/B split of a push, if it has one (while it is live or retired unexpired).
    pub(crate) fn push_split(&self, msg_id: u64) -> Option<Box<pigeon_core::Split>> {
        match self.live_push(msg_id) {
            Some(p) => p.push.split.clone(),
            None => self
                .retired
                .lock()
                .get(&msg_id)
                .and_then(|r| r.split.clone()),
        }
    }

    /// Drops a push every target acked from memory (its state is durable by then): memory
    /// follows what is still to deliver, not everything pushed within a day.
    pub(crate) fn retire(&self, push: &LivePush) {
        let p = &push.push;
        if p.callback.is_some() || p.split.is_some() {
            self.retired.lock().insert(
                push.msg_id(),
                Retired {
                    expires_ms: push.expires_ms(),
                    callback: p.callback.clone(),
                    split: p.split.clone(),
                },
            );
        }
        let mut channels = self.retired_channels.lock();
        if channels.len() < MAX_RETIRED_CHANNELS {
            channels.insert(
                push.msg_id(),
                (push.expires_ms(), crate::report::channel_counts(push)),
            );
        }
        drop(channels);
        self.live.write().retire(push.msg_id());
    }

    /// The variant of a push to an A/B test `ordinal` gets (`None` for any other push).
    pub fn variant_of(&self, push: &LivePush, ordinal: Ordinal) -> Option<usize> {
        push.variant_with(ordinal, || {
            self.devices
                .read()
                .record(ordinal)
                .map(|r| r.registration_id.clone())
        })
    }

    /// A live push of this app as stored: a push to an A/B test gets its variants' targets
    /// from the test's buckets while the test exists, else from each target's registration id.
    pub(crate) fn new_live(
        &self,
        push: pigeon_core::Push,
        audience: RoaringBitmap,
        sent: RoaringBitmap,
        delivered: RoaringBitmap,
    ) -> LivePush {
        let members = push
            .split
            .as_ref()
            .map(|split| self.devices.read().split_members(split, &audience));
        let live = LivePush::new(push, audience, sent, delivered);
        match members {
            Some(members) => live.with_variants(members),
            None => live,
        }
    }

    /// Sets badge numbers learnt from another node; with `notify`, tells connected devices.
    pub(crate) fn set_badges(&self, changed: &[(Ordinal, u32)], notify: bool) {
        {
            let mut badges = self.badges.lock();
            for (ordinal, badge) in changed {
                badges.set(*ordinal, *badge);
            }
        }
        if notify {
            let presence = self.presence.lock();
            for (ordinal, badge) in changed {
                if let Some(session) = presence.sessions.get(ordinal) {
                    session.notify(crate::Notice::Badge(*badge));
                }
            }
        }
    }

    /// Blocks or unblocks devices in memory (stored already).
    pub(crate) fn apply_blocked(&self, ordinals: &[Ordinal], blocked: bool) {
        let mut set = self.blocked.write();
        for &o in ordinals {
            if blocked {
                set.insert(o);
            } else {
                set.remove(o);
            }
        }
    }

    /// A device connected to (or left) another node.
    pub(crate) fn connected_elsewhere(&self, node: &str, ordinal: Ordinal, connected: bool) {
        let mut elsewhere = self.elsewhere.lock();
        if connected {
            for set in elsewhere.values_mut() {
                set.remove(ordinal);
            }
            elsewhere
                .entry(node.to_string())
                .or_default()
                .insert(ordinal);
        } else if let Some(set) = elsewhere.get_mut(node) {
            set.remove(ordinal);
        }
    }

    /// Forgets the devices of nodes that are no longer alive.
    pub(crate) fn forget_nodes_but(&self, alive: &[&str]) {
        self.elsewhere
            .lock()
            .retain(|node, _| alive.contains(&node.as_str()));
    }

    /// Devices of this app connected to other nodes.
    pub(crate) fn online_elsewhere(&self) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        for set in self.elsewhere.lock().values() {
            all |= set;
        }
        all
    }

    /// This node's rate window of the app: `(start_ms, calls)`.
    pub(crate) fn calls_in_window(&self) -> (u64, u64) {
        let w = self.rate.lock();
        (w.start_ms, w.calls)
    }

    /// Calls other nodes counted in the rate window starting at `window_ms`.
    pub(crate) fn remote_calls_in(&self, window_ms: u64) -> u64 {
        self.remote_calls
            .lock()
            .values()
            .filter(|(start, _)| *start == window_ms)
            .map(|(_, calls)| calls)
            .sum()
    }

    /// An ordinal of the reserved block, if any is left.
    pub(crate) fn take_ordinal(&self) -> Option<Ordinal> {
        let mut block = self.ordinals.lock();
        (block.0 < block.1).then(|| {
            block.0 += 1;
            block.0 - 1
        })
    }

    /// Gives back the ordinal just taken, unused.
    pub(crate) fn give_back_ordinal(&self, ordinal: Ordinal) {
        let mut block = self.ordinals.lock();
        if block.0 == ordinal + 1 {
            block.0 = ordinal;
        }
    }

    /// A newly reserved block of ordinals (two registrations may have reserved one each: the
    /// larger remainder is kept).
    pub(crate) fn add_ordinals(&self, first: Ordinal, count: u32) {
        let mut block = self.ordinals.lock();
        if block.1 - block.0 < count {
            *block = (first, first.saturating_add(count));
        }
    }

    /// Tells the connected devices among `ordinals` something besides a push.
    pub(crate) fn notify_connected(&self, ordinals: &RoaringBitmap, notice: crate::Notice) {
        let presence = self.presence.lock();
        for ordinal in (ordinals & &presence.online).iter() {
            if let Some(session) = presence.sessions.get(&ordinal) {
                session.notify(notice);
            }
        }
    }

    /// The device connected to another node at `since_us`: this node's connection of it, if
    /// made before that, is closed (4002). False if this node's connection is the newer one
    /// (the notice came late), which stays.
    pub(crate) fn drop_session_older_than(&self, ordinal: Ordinal, since_us: u64) -> bool {
        let mut p = self.presence.lock();
        match p.sessions.get(&ordinal) {
            Some(here) if here.since_us >= since_us => false,
            Some(_) => {
                if let Some(old) = p.sessions.remove(&ordinal) {
                    p.online.remove(ordinal);
                    pigeon_telemetry::connection_closed(old.platform.as_str());
                    old.close(4002, "replaced by a newer connection");
                }
                true
            }
            None => true,
        }
    }

    /// Drops pushes that expired before `cutoff_ms`.
    pub(crate) fn evict_expired(&self, cutoff_ms: u64) -> usize {
        self.retired.lock().retain(|_, r| r.expires_ms >= cutoff_ms);
        self.retired_channels
            .lock()
            .retain(|_, (expires_ms, _)| *expires_ms >= cutoff_ms);
        self.vendor_failures
            .lock()
            .retain(|_, f| f.expires_ms + 60_000 >= cutoff_ms);
        self.live.write().evict(cutoff_ms)
    }
}

/// What vendors said of one push's devices that they did not take it for.
#[derive(Default)]
pub(crate) struct VendorFailures {
    pub expires_ms: u64,
    /// Devices whose token the vendor called dead.
    pub dead: RoaringBitmap,
    /// Devices the vendor refused the push for, by its reason.
    pub refused: Vec<(String, RoaringBitmap)>,
}

/// Retired pushes whose channels are kept until they expire.
const MAX_RETIRED_CHANNELS: usize = 100_000;

/// Distinct refusal reasons kept per push; others are counted under the last.
const MAX_REASONS: usize = 16;

impl VendorFailures {
    pub(crate) fn refuse(&mut self, ordinal: pigeon_core::Ordinal, reason: String) {
        if let Some((_, devices)) = self.refused.iter_mut().find(|(r, _)| *r == reason) {
            devices.insert(ordinal);
        } else if self.refused.len() < MAX_REASONS {
            self.refused
                .push((reason, std::iter::once(ordinal).collect()));
        } else if let Some((r, devices)) = self.refused.last_mut() {
            if !r.ends_with(" (and other reasons)") {
                r.push_str(" (and other reasons)");
            }
            devices.insert(ordinal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::{Audience, PlatformSet, Push};

    fn push(msg_id: u64, targets: impl IntoIterator<Item = u32>) -> Arc<LivePush> {
        let mut p = Push::new(PlatformSet::all(), Audience::All);
        p.msg_id = msg_id;
        p.sent_ms = 1_000;
        p.content.message = Some(Default::default());
        Arc::new(LivePush::new(
            p,
            targets.into_iter().collect(),
            RoaringBitmap::new(),
            RoaringBitmap::new(),
        ))
    }

    fn ids(live: &Live, ordinal: Ordinal) -> Vec<u64> {
        live.candidates(ordinal)
            .iter()
            .map(|p| p.msg_id())
            .collect()
    }

    #[test]
    fn a_device_finds_its_narrow_and_all_wide_pushes_oldest_first() {
        let mut live = Live::default();
        live.insert(push(30, [1, 2]));
        live.insert(push(10, 0..1000)); // wide
        live.insert(push(20, [2]));
        assert_eq!(ids(&live, 2), [10, 20, 30]);
        assert_eq!(ids(&live, 1), [10, 30]);
        assert_eq!(ids(&live, 999), [10]);
        assert!(
            !live.by_device.contains_key(&999),
            "wide pushes are not listed per device"
        );
    }

    #[test]
    fn a_paced_push_releases_its_targets_in_order_evenly_over_its_pace() {
        let now = crate::now_ms();
        let mut p = Push::clone(&push(1, [0]).push);
        p.sent_ms = now - 500;
        p.policy.pace.duration_ms = Some(1000);
        let paced = Arc::new(LivePush::new(
            p,
            (0..100).collect(),
            RoaringBitmap::new(),
            RoaringBitmap::new(),
        ));
        assert!(paced.is_paced());
        assert_eq!(paced.released(now), 50);
        assert!(paced.is_released_for(49, now) && !paced.is_released_for(50, now));
        // What was released before it was made (a restart) is not offered again.
        assert!(paced.newly_released(now).is_empty());
        let next = paced.newly_released(now + 250);
        assert_eq!(
            next.iter().collect::<Vec<_>>(),
            (50..75).collect::<Vec<_>>()
        );
        assert_eq!(paced.released(now + 10_000), 100);
        let mut live = Live::default();
        live.insert(paced.clone());
        assert_eq!(live.paced_running(), 1);
        let offered = live.pace(now + 10_000);
        assert_eq!(offered[0].1.len(), 25);
        assert_eq!(live.paced_running(), 0, "done releasing");
        assert!(!push(2, 0..10).is_paced());
    }

    #[test]
    fn delivery_and_expiry_unlist_narrow_pushes() {
        let mut live = Live::default();
        let p = push(20, [2, 3]);
        live.insert(p.clone());
        live.delivered(20, 2);
        assert_eq!(ids(&live, 2), Vec::<u64>::new());
        assert_eq!(ids(&live, 3), [20]);
        assert_eq!(live.evict(p.expires_ms() + 1), 1);
        assert!(live.by_device.is_empty() && live.pushes.is_empty());
        // A push loaded with some targets already delivered lists only the others.
        let done: RoaringBitmap = [5].into_iter().collect();
        let mut loaded = push(40, [5, 6]).push.clone();
        loaded.msg_id = 41;
        live.insert(Arc::new(LivePush::new(
            loaded,
            [5, 6].into_iter().collect(),
            RoaringBitmap::new(),
            done,
        )));
        assert_eq!(ids(&live, 5), Vec::<u64>::new());
        assert_eq!(ids(&live, 6), [41]);
    }

    #[test]
    fn a_retired_push_is_gone_from_every_list() {
        let mut live = Live::default();
        let narrow = push(50, [7, 8]);
        live.insert(narrow.clone());
        live.insert(push(60, 0..1000));
        assert!(!narrow.is_complete());
        narrow.mark_delivered(7);
        narrow.mark_delivered(8);
        assert!(narrow.is_complete());
        live.retire(50);
        live.retire(60);
        assert!(live.pushes.is_empty() && live.by_device.is_empty() && live.wide.is_empty());
        live.retire(60); // a second retirement is a no-op
    }
}
