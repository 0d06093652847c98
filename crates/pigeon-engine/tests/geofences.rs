//! Geofences through the engine on a real SQLite store: firings and their events, a stay
//! across a restart, and that a report which changes nothing writes nothing.

use pigeon_core::{Audience, Platform};
use pigeon_engine::{new_app_record, Engine, Registration};
use pigeon_store::ports::*;
use pigeon_store::{
    CallbackEndpoint, CallbackFormat, GeofenceRecord, Location, SqliteStore, Synchronous,
    FENCE_ENTER, FENCE_LEAVE, FENCE_STAY,
};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SECOND_MS: u64 = 20;
const CENTRE: (f64, f64) = (31.2304, 121.4737);

struct Setup {
    engine: Arc<Engine>,
    store: Arc<SqliteStore>,
    app_key: String,
}

async fn start(path: &Path) -> Setup {
    let store = Arc::new(SqliteStore::open(path, Synchronous::Normal).expect("open store"));
    let engine = Engine::start(store.clone()).await.expect("engine starts");
    engine.set_geofence_second(Duration::from_millis(SECOND_MS));
    let app_key = store
        .list_apps()
        .await
        .expect("apps")
        .first()
        .map(|a| a.app_key.clone());
    Setup {
        engine,
        store,
        app_key: app_key.unwrap_or_default(),
    }
}

/// A store with one app that wants every callback, and the engine on it.
async fn new_setup(path: &Path) -> Setup {
    {
        let store = SqliteStore::open(path, Synchronous::Normal).expect("open store");
        let app = new_app_record("geo", None, None).expect("app record");
        store.create_app(app.clone()).await.expect("app");
        store
            .add_callback(CallbackEndpoint {
                id: 0,
                app_key: app.app_key.clone(),
                url: "http://127.0.0.1:9/cb".into(),
                commands: vec![],
                basic_auth: false,
                signing_secret: "s".into(),
                created_ms: 0,
                start_event_id: 0,
                push_level: false,
                failing_since_ms: None,
                disabled_ms: None,
                format: CallbackFormat::Pigeon,
            })
            .await
            .expect("endpoint");
        store.close().await.expect("close");
    }
    start(path).await
}

fn fence(events: u8, stay_s: Option<u32>) -> GeofenceRecord {
    GeofenceRecord {
        app_key: String::new(),
        geofence_id: String::new(),
        name: "shop".into(),
        lat: CENTRE.0,
        lon: CENTRE.1,
        radius_m: 300.0,
        events,
        stay_s,
        audience: Audience::All,
        push: None,
        repeat: true,
        cooldown_s: 0,
        start_ms: None,
        end_ms: None,
        created_ms: 0,
        given: json!({}),
    }
}

fn at(lat: f64, lon: f64) -> Location {
    Location {
        lat,
        lon,
        accuracy_m: None,
        at_ms: 0,
    }
}

/// ~1.1 km north of the centre: outside a 300 m fence.
fn outside() -> Location {
    at(CENTRE.0 + 0.01, CENTRE.1)
}

impl Setup {
    async fn device(&self) -> (String, u32) {
        let reg = self
            .engine
            .register(Registration {
                app_key: self.app_key.clone(),
                platform: Some(Platform::Android),
                ..Default::default()
            })
            .await
            .expect("register");
        let app = self
            .engine
            .app(&self.app_key)
            .await
            .expect("app")
            .expect("app");
        let ordinal = app
            .device_ordinal(&reg.registration_id)
            .expect("the device is indexed");
        (reg.registration_id, ordinal)
    }

    async fn report(&self, ordinal: u32, l: Location) {
        let app = self
            .engine
            .app(&self.app_key)
            .await
            .expect("app")
            .expect("app");
        self.engine
            .report_location(&app, ordinal, l)
            .await
            .expect("report judged");
    }

    /// Every `Geofence.Event` written so far, as JSON.
    async fn events(&self) -> Vec<Value> {
        self.store
            .events_after(&self.app_key, None, "Geofence.Event", 0, 1000)
            .await
            .expect("events")
            .iter()
            .map(|e| serde_json::from_str(&e.body).expect("event JSON"))
            .collect()
    }

    async fn actions(&self) -> Vec<String> {
        self.events()
            .await
            .iter()
            .map(|e| e["Action"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

#[tokio::test]
async fn enter_leave_and_one_stay_per_entry_with_their_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = new_setup(&dir.path().join("p.db")).await;
    let app = s.engine.app(&s.app_key).await.expect("app").expect("app");
    let f = s
        .engine
        .create_geofence(
            &app,
            fence(FENCE_ENTER | FENCE_LEAVE | FENCE_STAY, Some(60)),
        )
        .await
        .expect("fence");
    let (rid, ordinal) = s.device().await;
    s.report(ordinal, outside()).await;
    assert!(
        s.events().await.is_empty(),
        "a first report outside fires nothing"
    );
    s.report(ordinal, at(CENTRE.0, CENTRE.1)).await;
    s.report(ordinal, at(CENTRE.0 + 0.001, CENTRE.1)).await; // still inside, 111 m away
    let events = s.events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["Action"], "Enter");
    assert_eq!(events[0]["GeofenceId"], json!(f.geofence_id));
    assert_eq!(events[0]["GeofenceName"], "shop");
    assert_eq!(events[0]["RegistrationId"], json!(rid));
    assert_eq!(events[0]["Lat"], json!(CENTRE.0));
    // stay_s 60 at 20 ms a second: due after 1.2 s.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.actions().await, ["Enter"], "no stay before stay_s");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events = s.events().await;
    assert_eq!(s.actions().await, ["Enter", "Stay"]);
    assert_eq!(
        events[1]["Lat"],
        json!(CENTRE.0 + 0.001),
        "the last report's position"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.actions().await, ["Enter", "Stay"], "one stay per entry");
    s.report(ordinal, outside()).await;
    s.report(ordinal, at(CENTRE.0, CENTRE.1)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.report(ordinal, outside()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.actions().await,
        ["Enter", "Stay", "Leave", "Enter", "Leave"],
        "leaving before stay_s ends the pending stay"
    );
}

#[tokio::test]
async fn a_pending_stay_survives_a_restart_and_enter_does_not_fire_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let s = new_setup(&path).await;
    let app = s.engine.app(&s.app_key).await.expect("app").expect("app");
    s.engine
        .create_geofence(&app, fence(FENCE_ENTER | FENCE_STAY, Some(100)))
        .await
        .expect("fence");
    let (_, ordinal) = s.device().await;
    s.report(ordinal, at(CENTRE.0, CENTRE.1)).await;
    s.report(ordinal, at(CENTRE.0, CENTRE.1 + 0.001)).await;
    drop(app);
    s.engine.flush().await.expect("flush");
    drop(s);
    let s = start(&path).await;
    assert_eq!(s.actions().await, ["Enter"]);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let events = s.events().await;
    assert_eq!(s.actions().await, ["Enter", "Stay"]);
    assert_eq!(
        events[1]["Lon"],
        json!(CENTRE.1 + 0.001),
        "the position written at shutdown"
    );
    // The same place after the restart: still inside, nothing new.
    s.report(ordinal, at(CENTRE.0, CENTRE.1 + 0.001)).await;
    assert_eq!(s.actions().await, ["Enter", "Stay"]);
}

#[tokio::test]
async fn reports_that_change_nothing_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let s = new_setup(&path).await;
    let app = s.engine.app(&s.app_key).await.expect("app").expect("app");
    s.engine
        .create_geofence(&app, fence(FENCE_ENTER | FENCE_LEAVE, None))
        .await
        .expect("fence");
    let (_, inside_device) = s.device().await;
    let (_, outside_device) = s.device().await;
    s.report(inside_device, at(CENTRE.0, CENTRE.1)).await;
    s.report(outside_device, outside()).await;
    let wal = path.with_extension("db-wal");
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let before = (size(&path), size(&wal));
    let states_before = s
        .store
        .fence_states(&s.app_key, inside_device)
        .await
        .expect("states");
    for i in 0..2000 {
        let jitter = f64::from(i % 7) * 1e-5;
        s.report(inside_device, at(CENTRE.0 + jitter, CENTRE.1))
            .await;
        s.report(outside_device, at(CENTRE.0 + 0.01 + jitter, CENTRE.1))
            .await;
    }
    assert_eq!(s.actions().await, ["Enter"]);
    assert_eq!(
        s.store
            .fence_states(&s.app_key, inside_device)
            .await
            .expect("states"),
        states_before
    );
    assert_eq!(
        (size(&path), size(&wal)),
        before,
        "4,000 reports wrote nothing"
    );
}

#[tokio::test]
async fn deleted_fences_fire_nothing_and_moved_ones_count_from_the_next_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = new_setup(&dir.path().join("p.db")).await;
    let app = s.engine.app(&s.app_key).await.expect("app").expect("app");
    let stay = s
        .engine
        .create_geofence(&app, fence(FENCE_ENTER | FENCE_STAY, Some(60)))
        .await
        .expect("fence");
    let (_, ordinal) = s.device().await;
    s.report(ordinal, at(CENTRE.0, CENTRE.1)).await;
    s.engine
        .delete_geofence(&app, &stay.geofence_id)
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(
        s.actions().await,
        ["Enter"],
        "the deleted fence's stay never fired"
    );

    let moving = s
        .engine
        .create_geofence(&app, fence(FENCE_ENTER | FENCE_LEAVE, None))
        .await
        .expect("fence");
    s.report(ordinal, at(CENTRE.0, CENTRE.1)).await;
    let mut moved = fence(FENCE_ENTER | FENCE_LEAVE, None);
    moved.lat += 0.05;
    s.engine
        .replace_geofence(&app, &moving.geofence_id, moved)
        .await
        .expect("replace");
    assert_eq!(
        s.actions().await,
        ["Enter", "Enter"],
        "a PUT fires nothing by itself"
    );
    s.report(ordinal, at(CENTRE.0, CENTRE.1)).await;
    assert_eq!(s.actions().await, ["Enter", "Enter", "Leave"]);
}
