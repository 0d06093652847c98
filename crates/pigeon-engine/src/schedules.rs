//! Scheduled pushes, for every front door: a schedule is stored in the words of the door
//! that made it (its trigger and push as that dialect gave them), and the door turns it into
//! a push when it fires, so it pushes to the audience as it is then. Firing is the engine's:
//! a firing stores its push and moves the schedule to its next time in one transaction, so a
//! schedule fires exactly once per time, whatever crashes; a time missed while the server was
//! down fires once when it is back.

use crate::app::AppState;
use crate::cluster::Duty;
use crate::{now_ms, Engine, EngineError};
use parking_lot::{Mutex, RwLock};
use pigeon_core::{Push, ScheduleFiring};
use pigeon_store::{ScheduleRecord, ScheduleRun, Storage};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// Longest the scheduler sleeps without looking (it is woken on every change).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Why a firing made no push: the door's error code and message, recorded with the run.
pub type FiringError = (u32, String);

/// The push a firing makes.
pub type FiringPush<'a> = Pin<Box<dyn Future<Output = Result<Push, FiringError>> + Send + 'a>>;

/// A front door's reading of the schedules it made.
pub trait ScheduleDoor: Send + Sync {
    /// The name stored with each schedule the door makes (`ScheduleRecord::door`).
    fn name(&self) -> &'static str;
    /// When a schedule with this stored trigger fires next after `after_ms`, if ever.
    fn next_after(&self, trigger: &Value, after_ms: u64) -> Result<Option<u64>, String>;
    /// The push one firing of `record` makes.
    fn push<'a>(
        &'a self,
        engine: &'a Engine,
        app: &'a AppState,
        record: &'a ScheduleRecord,
    ) -> FiringPush<'a>;
    /// A door's code for an accept that failed (no target, invalid).
    fn accept_error(&self, e: &EngineError) -> Option<FiringError>;
}

/// Every schedule, in memory; storage holds the same and is written first.
pub struct Scheduler {
    engine: Weak<Engine>,
    store: Arc<dyn Storage>,
    schedules: Mutex<BTreeMap<String, ScheduleRecord>>,
    doors: RwLock<HashMap<&'static str, Arc<dyn ScheduleDoor>>>,
    /// Woken on every change, so a new earliest time is not slept past.
    changed: Arc<Notify>,
}

impl Scheduler {
    /// Loads the stored schedules and starts firing them (those of registered doors).
    pub(crate) async fn start(engine: &Arc<Engine>) -> Result<Arc<Scheduler>, EngineError> {
        let all = engine.store().load_schedules().await?;
        let scheduler = Arc::new(Scheduler {
            engine: Arc::downgrade(engine),
            store: engine.store().clone(),
            schedules: Mutex::new(
                all.into_iter()
                    .map(|s| (s.schedule_id.clone(), s))
                    .collect(),
            ),
            doors: RwLock::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
        });
        tokio::spawn(run(Arc::downgrade(&scheduler)));
        Ok(scheduler)
    }

    /// Reads every schedule from storage again (those made or changed by other nodes).
    async fn reload(&self) -> Result<(), EngineError> {
        let all = self.store.load_schedules().await?;
        *self.schedules.lock() = all
            .into_iter()
            .map(|s| (s.schedule_id.clone(), s))
            .collect();
        Ok(())
    }

    /// Lets a door's schedules fire.
    pub fn register(&self, door: Arc<dyn ScheduleDoor>) {
        self.doors.write().insert(door.name(), door);
        self.changed.notify_one();
    }

    /// Stores a new or changed schedule, then keeps it.
    pub async fn save(&self, record: ScheduleRecord) -> Result<(), EngineError> {
        self.store.put_schedule(record.clone()).await?;
        self.schedules
            .lock()
            .insert(record.schedule_id.clone(), record);
        self.changed.notify_one();
        Ok(())
    }

    /// Deletes a schedule of an app; false if it had none of that id.
    pub async fn delete(&self, app_key: &str, schedule_id: &str) -> Result<bool, EngineError> {
        let deleted = self.store.delete_schedule(app_key, schedule_id).await?;
        let mut all = self.schedules.lock();
        if all.get(schedule_id).is_some_and(|s| s.app_key == app_key) {
            all.remove(schedule_id);
        }
        Ok(deleted)
    }

    /// An app's schedule.
    pub fn find(&self, app_key: &str, schedule_id: &str) -> Option<ScheduleRecord> {
        self.schedules
            .lock()
            .get(schedule_id)
            .filter(|s| s.app_key == app_key)
            .cloned()
    }

    /// An app's schedules made through `door` that will still fire, oldest first.
    pub fn active(&self, app_key: &str, door: &str) -> Vec<ScheduleRecord> {
        let mut mine: Vec<ScheduleRecord> = self
            .schedules
            .lock()
            .values()
            .filter(|s| s.app_key == app_key && s.door == door && s.next_ms.is_some())
            .cloned()
            .collect();
        mine.sort_by(|a, b| (a.created_ms, &a.schedule_id).cmp(&(b.created_ms, &b.schedule_id)));
        mine
    }

    /// How many of an app's schedules, through any door, will still fire.
    pub fn active_count(&self, app_key: &str) -> usize {
        self.schedules
            .lock()
            .values()
            .filter(|s| s.app_key == app_key && s.next_ms.is_some())
            .count()
    }

    fn due(&self, now: u64) -> Vec<ScheduleRecord> {
        let doors = self.doors.read();
        self.schedules
            .lock()
            .values()
            .filter(|s| s.next_ms.is_some_and(|t| t <= now) && doors.contains_key(s.door.as_str()))
            .cloned()
            .collect()
    }

    fn earliest(&self) -> Option<u64> {
        self.schedules
            .lock()
            .values()
            .filter_map(|s| s.next_ms)
            .min()
    }

    /// Fires one due schedule (or, if disabled, lets its time pass) and records its next time.
    async fn fire(&self, engine: &Engine, s: ScheduleRecord, now: u64) -> Result<(), EngineError> {
        let Some(due) = s.next_ms else { return Ok(()) };
        let Some(door) = self.doors.read().get(s.door.as_str()).cloned() else {
            return Ok(());
        };
        let next_ms = door
            .next_after(&s.trigger, due.max(now))
            .map_err(|e| EngineError::Invalid(format!("stored trigger: {e}")))?;
        let store = engine.store();
        let app = engine.app(&s.app_key).await?;
        let outcome = match (&app, s.enabled) {
            (Some(app), true) => fire_push(engine, door.as_ref(), app, &s, due, next_ms).await?,
            (None, _) => Err((1008, "the app no longer exists".to_string())),
            (_, false) => {
                let mut moved = s.clone();
                moved.next_ms = next_ms;
                store.put_schedule(moved).await?;
                Ok(())
            }
        };
        if let Err((code, message)) = outcome {
            let run = ScheduleRun {
                msg_id: None,
                error_code: code,
                error_message: message,
                at_ms: now,
            };
            store
                .record_failed_run(&s.schedule_id, run, next_ms)
                .await?;
        }
        if let Some(mine) = self.schedules.lock().get_mut(&s.schedule_id) {
            if mine.next_ms == Some(due) {
                mine.next_ms = next_ms;
            }
        }
        Ok(())
    }
}

/// Pushes a firing; the push and the firing are stored together. An inner `Err` is a firing
/// that made no push, with the door's code; an outer one, a storage failure to retry.
async fn fire_push(
    engine: &Engine,
    door: &dyn ScheduleDoor,
    app: &AppState,
    s: &ScheduleRecord,
    due: u64,
    next_ms: Option<u64>,
) -> Result<Result<(), FiringError>, EngineError> {
    let mut push = match door.push(engine, app, s).await {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    push.schedule = Some(ScheduleFiring {
        schedule_id: s.schedule_id.clone(),
        due_ms: due,
        next_ms,
    });
    match engine.accept(app, push, false).await {
        Ok(msg_id) => {
            pigeon_telemetry::push_accepted(pigeon_telemetry::Dialect::Schedule);
            tracing::info!(schedule = %s.schedule_id, msg_id, "schedule fired");
            Ok(Ok(()))
        }
        Err(e) => match door.accept_error(&e) {
            Some(failed) => Ok(Err(failed)),
            None => Err(e),
        },
    }
}

async fn run(scheduler: Weak<Scheduler>) {
    loop {
        let Some(s) = scheduler.upgrade() else { return };
        let Some(engine) = s.engine.upgrade() else {
            return;
        };
        // In a cluster, schedules made through other nodes are read every round, and only
        // the node on the schedules duty fires them.
        if engine.cluster().is_some() {
            if let Err(e) = s.reload().await {
                tracing::warn!(error = %e, "could not read the schedules");
            }
        }
        let firing = engine.on_duty(Duty::Schedules);
        let mut due = if firing { s.due(now_ms()) } else { Vec::new() };
        if !due.is_empty() && !engine.still_on_duty(Duty::Schedules).await {
            due.clear();
        }
        let now = now_ms();
        for due in due {
            let id = due.schedule_id.clone();
            if let Err(e) = s.fire(&engine, due, now).await {
                // Not moved on: it is tried again on the next round.
                tracing::error!(schedule = %id, error = %e, "schedule could not fire");
            }
        }
        drop(engine);
        let wait = s
            .earliest()
            .map(|t| Duration::from_millis(t.saturating_sub(now_ms())))
            .unwrap_or(IDLE_CHECK)
            .clamp(Duration::from_millis(10), IDLE_CHECK);
        let changed = s.changed.clone();
        drop(s);
        let _ = tokio::time::timeout(wait, changed.notified()).await;
    }
}
