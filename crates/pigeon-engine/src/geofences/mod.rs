//! Geofences (geofences.md): fences per app, where each device stands with each of them,
//! and the firings — `Geofence.Event` callbacks and the fence's own push.
//!
//! In memory each app has its fences in a [`FenceIndex`] and, for each device that reported
//! a position here, its standing with the fences it has one with ([`Track`]s). A report
//! finds the fences containing the point, compares with the standing and writes only what
//! changed, with the events it fires, in one store write: a report that changes nothing
//! writes nothing. A device seen first by this process reads its standing from the store
//! once. Stays are fired on the server's clock by whichever node holds the
//! [`Duty::GeofenceStays`] lease, from the store's list of due stays, each settled by a
//! conditional write so it fires once whatever crashes or races.

mod index;
mod rules;

pub use index::{haversine_m, FenceIndex, EARTH_RADIUS_M};
pub use pigeon_store::{FENCE_ENTER, FENCE_LEAVE, FENCE_STAY};
pub use rules::{on_report, on_stay_due, Action, Judged, Rules, Standings, StayDue, Track};

use crate::app::AppState;
use crate::cluster::Duty;
use crate::{events, now_ms, Engine, EngineError};
use parking_lot::{Mutex, RwLock};
use pigeon_core::{Audience, AudienceExpr, FastMap as HashMap, Ordinal};
use pigeon_store::{DeviceRecord, FenceState, GeofenceRecord, Location};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Fences an app may have unless the operator says otherwise (geofences.md §1).
pub const DEFAULT_MAX_PER_APP: u64 = 10_000;
/// How often the holder of the stays duty looks for due stays.
const STAY_LOOK: Duration = Duration::from_millis(250);
const STAYS_PER_ROUND: usize = 256;

/// One fence as the engine holds it.
pub(crate) struct Fence {
    pub record: GeofenceRecord,
}

/// An app's fences: by id, and by place.
#[derive(Default)]
struct FenceSet {
    index: FenceIndex,
    by_slot: Vec<Option<Arc<Fence>>>,
    by_id: HashMap<String, u32>,
}

impl FenceSet {
    /// Every fence of an app at once, the index built in one pass.
    fn of(records: Vec<GeofenceRecord>) -> FenceSet {
        let circles: Vec<(f64, f64, f64)> =
            records.iter().map(|r| (r.lat, r.lon, r.radius_m)).collect();
        FenceSet {
            index: FenceIndex::bulk(&circles),
            by_id: records
                .iter()
                .enumerate()
                .map(|(slot, r)| (r.geofence_id.clone(), slot as u32))
                .collect(),
            by_slot: records
                .into_iter()
                .map(|record| Some(Arc::new(Fence { record })))
                .collect(),
        }
    }

    /// Adds a fence, or replaces the one with its id (which keeps its slot, so devices'
    /// standings with it stay theirs).
    fn put(&mut self, record: GeofenceRecord) {
        let slot = match self.by_id.get(&record.geofence_id) {
            Some(&slot) => {
                self.index
                    .replace(slot, record.lat, record.lon, record.radius_m);
                slot as usize
            }
            None => self.index.insert(record.lat, record.lon, record.radius_m) as usize,
        };
        if self.by_slot.len() <= slot {
            self.by_slot.resize(slot + 1, None);
        }
        self.by_id.insert(record.geofence_id.clone(), slot as u32);
        self.by_slot[slot] = Some(Arc::new(Fence { record }));
    }

    /// Takes a fence out; its slot, if it had one, may be given to another fence.
    fn remove(&mut self, geofence_id: &str) -> Option<u32> {
        let slot = self.by_id.remove(geofence_id)?;
        self.index.remove(slot);
        if let Some(f) = self.by_slot.get_mut(slot as usize) {
            *f = None;
        }
        Some(slot)
    }

    fn get(&self, geofence_id: &str) -> Option<Arc<Fence>> {
        let slot = *self.by_id.get(geofence_id)?;
        self.by_slot.get(slot as usize)?.clone()
    }

    fn at_slot(&self, slot: u32) -> Option<&Arc<Fence>> {
        self.by_slot.get(slot as usize)?.as_ref()
    }
}

/// One device's standing with the fences, and its last position.
#[derive(Default)]
struct DeviceFences {
    standings: Standings,
    last: Option<(f64, f64)>,
    /// `last` changed since it was last written (written only at shutdown).
    moved: bool,
}

/// The geofence state of one app.
#[derive(Default)]
pub(crate) struct AppFences {
    set: RwLock<FenceSet>,
    devices: Mutex<HashMap<Ordinal, DeviceFences>>,
}

impl AppFences {
    pub(crate) fn load(&self, fences: Vec<GeofenceRecord>) {
        *self.set.write() = FenceSet::of(fences);
    }

    /// Removes a fence and every device's standing with it, before its slot can be
    /// given to another fence.
    fn remove(&self, geofence_id: &str) {
        let mut set = self.set.write();
        if let Some(slot) = set.remove(geofence_id) {
            for d in self.devices.lock().values_mut() {
                d.standings.forget(slot);
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.set.read().by_id.len()
    }

    /// Forgets what this process knows of a device's standing: the store is read again
    /// at its next report (another node may have moved it on meanwhile).
    pub(crate) fn forget_device(&self, ordinal: Ordinal) {
        self.devices.lock().remove(&ordinal);
    }

    fn last_position(&self, ordinal: Ordinal) -> Option<(f64, f64)> {
        self.devices.lock().get(&ordinal).and_then(|d| d.last)
    }
}

/// A fence firing for one device.
struct Firing {
    fence: Arc<Fence>,
    action: Action,
}

impl Engine {
    /// How long one second of `stay_s` and `cooldown_s` lasts (1000 ms; shortened in tests).
    pub fn set_geofence_second(&self, second: Duration) {
        self.geofence_second_ms
            .store(second.as_millis().max(1) as u64, Ordering::Relaxed);
    }

    /// How many fences an app may have.
    pub fn set_max_geofences_per_app(&self, max: u64) {
        self.max_geofences.store(max, Ordering::Relaxed);
    }

    /// An app's fences, oldest first.
    pub fn geofences(&self, app: &AppState) -> Vec<GeofenceRecord> {
        let mut all: Vec<GeofenceRecord> = app
            .fences
            .set
            .read()
            .by_slot
            .iter()
            .flatten()
            .map(|f| f.record.clone())
            .collect();
        all.sort_by(|a, b| (a.created_ms, &a.geofence_id).cmp(&(b.created_ms, &b.geofence_id)));
        all
    }

    /// One fence of the app, reading the cluster's feed first if it is not known here.
    pub async fn geofence(&self, app: &AppState, geofence_id: &str) -> Option<GeofenceRecord> {
        if let Some(f) = app.fences.set.read().get(geofence_id) {
            return Some(f.record.clone());
        }
        if self.cluster().is_some() {
            self.catch_up().await;
        }
        app.fences
            .set
            .read()
            .get(geofence_id)
            .map(|f| f.record.clone())
    }

    /// Creates a fence (its id, app and creation time are given here).
    pub async fn create_geofence(
        &self,
        app: &AppState,
        mut fence: GeofenceRecord,
    ) -> Result<GeofenceRecord, EngineError> {
        let max = self.max_geofences.load(Ordering::Relaxed);
        if app.fences.len() as u64 >= max {
            return Err(EngineError::TooManyGeofences(max));
        }
        fence.app_key = app.app_key.clone();
        fence.geofence_id = new_geofence_id();
        fence.created_ms = now_ms();
        self.store.put_geofence(fence.clone()).await?;
        app.fences.set.write().put(fence.clone());
        self.announce_change();
        Ok(fence)
    }

    /// Replaces a fence; devices' standing with it is kept and judged again at their next
    /// report.
    pub async fn replace_geofence(
        &self,
        app: &AppState,
        geofence_id: &str,
        mut fence: GeofenceRecord,
    ) -> Result<GeofenceRecord, EngineError> {
        let old = self
            .geofence(app, geofence_id)
            .await
            .ok_or(EngineError::UnknownGeofence)?;
        fence.app_key = app.app_key.clone();
        fence.geofence_id = old.geofence_id;
        fence.created_ms = old.created_ms;
        self.store.put_geofence(fence.clone()).await?;
        app.fences.set.write().put(fence.clone());
        self.announce_change();
        Ok(fence)
    }

    /// Deletes a fence; nothing it had pending fires.
    pub async fn delete_geofence(
        &self,
        app: &AppState,
        geofence_id: &str,
    ) -> Result<(), EngineError> {
        if self.geofence(app, geofence_id).await.is_none()
            || !self
                .store
                .delete_geofence(&app.app_key, geofence_id)
                .await?
        {
            return Err(EngineError::UnknownGeofence);
        }
        app.fences.remove(geofence_id);
        self.announce_change();
        Ok(())
    }

    /// A fence changed in the store through another node: take it as it is now.
    pub(crate) async fn reload_geofence(
        &self,
        app_key: &str,
        geofence_id: &str,
    ) -> Result<(), EngineError> {
        let Some(app) = self.apps.read().get(app_key).cloned() else {
            return Ok(()); // loaded with its fences when first used
        };
        match self.store.get_geofence(app_key, geofence_id).await? {
            Some(fence) => app.fences.set.write().put(fence),
            None => app.fences.remove(geofence_id),
        }
        Ok(())
    }

    /// A device says where it is: every fence that watches it is judged, and what changed
    /// is written with the events it fires before this returns; the fences' pushes are
    /// accepted after that.
    pub async fn report_location(
        &self,
        app: &AppState,
        ordinal: Ordinal,
        location: Location,
    ) -> Result<(), EngineError> {
        let pos = (location.lat, location.lon);
        let known = {
            let mut devices = app.fences.devices.lock();
            match devices.get_mut(&ordinal) {
                Some(d) => {
                    d.last = Some(pos);
                    d.moved = true;
                    true
                }
                None => false,
            }
        };
        if !known {
            if app.fences.len() == 0 {
                // No fence can fire: keep the position, read nothing.
                app.fences.devices.lock().insert(
                    ordinal,
                    DeviceFences {
                        last: Some(pos),
                        moved: true,
                        ..Default::default()
                    },
                );
                return Ok(());
            }
            let stored = self.store.fence_states(&app.app_key, ordinal).await?;
            let second_ms = self.geofence_second_ms.load(Ordering::Relaxed);
            let set = app.fences.set.read();
            let standings = Standings::from_tracks(stored.iter().filter_map(|s| {
                let slot = *set.by_id.get(&s.geofence_id)?;
                let fence = set.at_slot(slot)?;
                Some((slot, Track::of(s), Rules::of(&fence.record, second_ms)))
            }));
            app.fences
                .devices
                .lock()
                .entry(ordinal)
                .or_insert_with(|| DeviceFences {
                    standings,
                    ..Default::default()
                });
        }
        let (writes, firings) = self.judge(app, ordinal, pos, now_ms());
        if writes.is_empty() {
            return Ok(());
        }
        let outcome = self.write_firings(app, ordinal, pos, writes, firings).await;
        if outcome.is_err() {
            // Memory is ahead of the store now: read the store again next time.
            app.fences.forget_device(ordinal);
        }
        outcome
    }

    /// Judges a report against every fence around it and every fence the device was
    /// inside, updating the device's standing in memory: what changed, and what fires.
    fn judge(
        &self,
        app: &AppState,
        ordinal: Ordinal,
        pos: (f64, f64),
        now: u64,
    ) -> (Vec<FenceState>, Vec<Firing>) {
        let second_ms = self.geofence_second_ms.load(Ordering::Relaxed);
        let set = app.fences.set.read();
        let devices = app.devices.read();
        let mut around = Vec::new();
        set.index.containing(pos.0, pos.1, &mut around);
        around.sort_unstable();
        let mut judged = Vec::new();
        {
            let mut all = app.fences.devices.lock();
            let Some(device) = all.get_mut(&ordinal) else {
                return (Vec::new(), Vec::new());
            };
            device.last = Some(pos);
            device.moved = true;
            let rules_of = |slot: u32| {
                let fence = set.at_slot(slot)?;
                devices
                    .watches(ordinal, &fence.record.audience)
                    .then(|| Rules::of(&fence.record, second_ms))
            };
            device
                .standings
                .judge(&around, rules_of, now, pos, &mut judged);
        }
        let (mut writes, mut firings) = (Vec::new(), Vec::new());
        for j in judged {
            let Some(fence) = set.at_slot(j.slot) else {
                continue;
            };
            writes.push(
                j.track
                    .state(&app.app_key, &fence.record.geofence_id, ordinal),
            );
            if let Some(action) = j.fired {
                firings.push(Firing {
                    fence: fence.clone(),
                    action,
                });
            }
        }
        (writes, firings)
    }

    /// Writes changed standings with the events of their firings, then sends the
    /// fences' pushes.
    async fn write_firings(
        &self,
        app: &AppState,
        ordinal: Ordinal,
        pos: (f64, f64),
        writes: Vec<FenceState>,
        firings: Vec<Firing>,
    ) -> Result<(), EngineError> {
        let device = app.device(ordinal);
        let mut events = Vec::new();
        let mut pushes = Vec::new();
        for firing in firings {
            let msg_id = match firing.fence.record.push {
                Some(_) => Some(self.reserve_msg_id().await?),
                None => None,
            };
            if let Some(d) = &device {
                if app.wants(events::GEOFENCE_EVENT) {
                    events.push(events::geofence_event(
                        app,
                        &firing.fence.record,
                        d,
                        firing.action,
                        pos,
                        msg_id,
                    ));
                }
            }
            if let Some(msg_id) = msg_id {
                pushes.push((firing.fence, msg_id));
            }
        }
        let wrote_events = !events.is_empty();
        self.store.write_fence_states(writes, events).await?;
        if wrote_events {
            self.events_written.notify_waiters();
        }
        if let Some(d) = &device {
            for (fence, msg_id) in pushes {
                self.send_fence_push(app, &fence.record, d, msg_id).await;
            }
        }
        Ok(())
    }

    /// The fence's push, to this one device, as a push of its own.
    async fn send_fence_push(
        &self,
        app: &AppState,
        fence: &GeofenceRecord,
        device: &DeviceRecord,
        msg_id: u64,
    ) {
        let Some(template) = &fence.push else {
            return;
        };
        let mut push = template.clone();
        push.msg_id = msg_id;
        push.audience = Audience::Expr(AudienceExpr {
            registration_id: vec![device.registration_id.clone()],
            ..Default::default()
        });
        push.idempotency = None;
        push.schedule = None;
        match self.accept(app, push, false).await {
            Ok(_) => pigeon_telemetry::push_accepted(pigeon_telemetry::Dialect::Geofence),
            Err(e) => {
                tracing::warn!(app_key = %app.app_key, geofence_id = %fence.geofence_id, msg_id, error = %e, "geofence push not sent")
            }
        }
    }

    /// One round of the stays duty: every stay due now is fired, put off or dropped.
    async fn settle_due_stays(&self) -> Result<usize, EngineError> {
        let now = now_ms();
        let due = self.store.due_stays(now, STAYS_PER_ROUND).await?;
        if due.is_empty() || !self.still_on_duty(Duty::GeofenceStays).await {
            return Ok(0);
        }
        let second_ms = self.geofence_second_ms.load(Ordering::Relaxed);
        let n = due.len();
        for state in due {
            let app = self.app(&state.app_key).await?;
            let fence = app
                .as_ref()
                .and_then(|a| a.fences.set.read().get(&state.geofence_id));
            let device = app.as_ref().and_then(|a| a.device(state.ordinal));
            let (Some(app), Some(fence), Some(device)) = (app, fence, device) else {
                self.store
                    .settle_stay(state, None, None, Vec::new())
                    .await?;
                continue;
            };
            let watches = app
                .devices
                .read()
                .watches(state.ordinal, &fence.record.audience);
            let rules = Rules::of(&fence.record, second_ms);
            let track = Track::of(&state);
            match on_stay_due(Some(&rules), watches, &track, now) {
                StayDue::Later(at) => {
                    self.store
                        .settle_stay(state, None, Some(at), Vec::new())
                        .await?;
                }
                StayDue::Drop => {
                    self.store
                        .settle_stay(state, None, None, Vec::new())
                        .await?;
                }
                StayDue::Fire => self.fire_stay(&app, &fence, &device, state, now).await?,
            }
        }
        Ok(n)
    }

    async fn fire_stay(
        &self,
        app: &AppState,
        fence: &Fence,
        device: &DeviceRecord,
        state: FenceState,
        now: u64,
    ) -> Result<(), EngineError> {
        let pos = match app.fences.last_position(state.ordinal) {
            Some(p) => p,
            None => match self.store.location(&app.app_key, state.ordinal).await? {
                Some(l) if l.at_ms >= state.entered_ms => (l.lat, l.lon),
                _ => (state.lat, state.lon),
            },
        };
        let msg_id = match fence.record.push {
            Some(_) => Some(self.reserve_msg_id().await?),
            None => None,
        };
        let mut events = Vec::new();
        if app.wants(events::GEOFENCE_EVENT) {
            events.push(events::geofence_event(
                app,
                &fence.record,
                device,
                Action::Stay,
                pos,
                msg_id,
            ));
        }
        let (ordinal, entered_ms) = (state.ordinal, state.entered_ms);
        let wrote_events = !events.is_empty();
        if !self
            .store
            .settle_stay(state, Some(now), None, events)
            .await?
        {
            return Ok(()); // the device left, or another holder fired it
        }
        if wrote_events {
            self.events_written.notify_waiters();
        }
        let slot = app
            .fences
            .set
            .read()
            .by_id
            .get(&fence.record.geofence_id)
            .copied();
        if let (Some(slot), Some(d)) = (slot, app.fences.devices.lock().get_mut(&ordinal)) {
            d.standings.stay_fired(slot, entered_ms, now);
        }
        if let Some(msg_id) = msg_id {
            self.send_fence_push(app, &fence.record, device, msg_id)
                .await;
        }
        Ok(())
    }

    /// Writes every position reported since the last time (at shutdown): a stay that fires
    /// after a restart then reports where the device last was.
    pub(crate) async fn save_positions(&self) -> Result<(), EngineError> {
        for app in self.apps() {
            let moved: Vec<(Ordinal, Location)> = {
                let mut devices = app.fences.devices.lock();
                devices
                    .iter_mut()
                    .filter(|(_, d)| d.moved)
                    .filter_map(|(o, d)| {
                        d.moved = false;
                        d.last.map(|(lat, lon)| {
                            (
                                *o,
                                Location {
                                    lat,
                                    lon,
                                    accuracy_m: None,
                                    at_ms: now_ms(),
                                },
                            )
                        })
                    })
                    .collect()
            };
            if !moved.is_empty() {
                self.store.save_locations(&app.app_key, moved).await?;
            }
        }
        Ok(())
    }
}

/// The stays duty, for as long as the engine lives.
pub(crate) async fn stays_forever(engine: Weak<Engine>) {
    loop {
        tokio::time::sleep(STAY_LOOK).await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if !engine.on_duty(Duty::GeofenceStays) {
            continue;
        }
        loop {
            match engine.settle_due_stays().await {
                Ok(n) if n == STAYS_PER_ROUND => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "geofence stays: will try again");
                    break;
                }
            }
        }
    }
}

fn new_geofence_id() -> String {
    format!("gf{:016x}", rand::random::<u64>())
}
