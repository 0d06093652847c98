//! Ordinals of new devices under a wave of registrations, on a real SQLite store: every
//! device gets its own, and the blocks reserved for them are not thrown away (the device
//! records are held by ordinal, so every gap costs memory on every node).

use pigeon_core::Platform;
use pigeon_engine::{new_app_record, Engine, Registration};
use pigeon_store::ports::*;
use pigeon_store::{SqliteStore, Synchronous};
use std::collections::HashSet;
use std::sync::Arc;

const DEVICES: usize = 600;
/// What the engine reserves at once (`ids::ORDINAL_BLOCK`).
const BLOCK: u32 = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wave_of_registrations_takes_ordinals_without_gaps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pigeon.db");
    let store = Arc::new(SqliteStore::open(&path, Synchronous::Normal).expect("open store"));
    let app = new_app_record("wave", None, None).expect("app record");
    store.create_app(app.clone()).await.expect("app");
    let engine = Engine::start(store.clone()).await.expect("engine starts");

    // All at once: each of them finds no ordinal left in the app's block at first.
    let registrations = (0..DEVICES).map(|_| {
        let engine = engine.clone();
        let app_key = app.app_key.clone();
        tokio::spawn(async move {
            engine
                .register(Registration {
                    app_key,
                    platform: Some(Platform::Android),
                    ..Default::default()
                })
                .await
                .expect("register")
                .registration_id
        })
    });
    let mut ids = Vec::new();
    for r in registrations.collect::<Vec<_>>() {
        ids.push(r.await.expect("registration task"));
    }

    let state = engine
        .app(&app.app_key)
        .await
        .expect("app")
        .expect("app is known");
    let ordinals: HashSet<u32> = ids
        .iter()
        .map(|id| state.device_ordinal(id).expect("the device is indexed"))
        .collect();
    assert_eq!(
        ordinals.len(),
        DEVICES,
        "every device has an ordinal of its own"
    );
    let highest = ordinals.iter().max().copied().unwrap_or_default();
    // 600 devices fill two blocks and part of a third: nothing beyond it was handed out.
    assert!(
        highest < 3 * BLOCK,
        "ordinals up to {highest} for {DEVICES} devices: reserved blocks were thrown away"
    );
}
