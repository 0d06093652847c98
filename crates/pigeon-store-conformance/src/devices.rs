//! Devices and what is kept per device.

use crate::{device, event, load_all, load_chunks, DynStore};
use pigeon_core::Platform;
use pigeon_store::Location;
use serde_json::{json, Map};

pub async fn a_device_is_found_by_registration_id_in_any_app(store: DynStore) {
    assert_eq!(store.find_device("r0").await.unwrap(), None);
    let (d0, o1) = (device("k", 0, "r0"), device("other", 1, "o1"));
    store.put_device(d0.clone()).await.unwrap();
    store.put_device(o1.clone()).await.unwrap();
    assert_eq!(store.find_device("r0").await.unwrap(), Some(d0.clone()));
    assert_eq!(store.find_device("o1").await.unwrap(), Some(o1));
    // Replaced under a new registration id: found by the new one only.
    let moved = pigeon_store::DeviceRecord {
        registration_id: "r0-new".into(),
        updated_ms: d0.updated_ms + 1,
        ..d0
    };
    store.put_device(moved.clone()).await.unwrap();
    assert_eq!(store.find_device("r0").await.unwrap(), None);
    assert_eq!(store.find_device("r0-new").await.unwrap(), Some(moved));
}

pub async fn a_device_is_put_and_replaced(store: DynStore) {
    let (d0, d1) = (device("k", 0, "r0"), device("k", 1, "r1"));
    store.put_device(d0.clone()).await.unwrap();
    store.put_device(d1.clone()).await.unwrap();
    assert_eq!(load_all(&store, "k").await, [d0.clone(), d1.clone()]);

    // Every field replaced (created_ms stays what the caller keeps: the first one).
    let mut tokens = Map::new();
    tokens.insert("apns".into(), json!("apns-token"));
    tokens.insert(
        "webpush".into(),
        json!({"endpoint": "https://push.example/x"}),
    );
    let replaced = pigeon_store::DeviceRecord {
        registration_id: "r0-new".into(),
        install_id: None,
        secret_hash: [0xAB; 32],
        platform: Platform::Ios,
        alias: None,
        tags: vec!["z".into(), "a".into(), "m".into()],
        mobile: None,
        region: None,
        push_tokens: tokens,
        apns_production: true,
        info: Map::new(),
        updated_ms: 2_000,
        ..d0.clone()
    };
    store.put_device(replaced.clone()).await.unwrap();
    assert_eq!(load_all(&store, "k").await, [replaced.clone(), d1.clone()]);

    // Another app's ordinal 0 is another device.
    let other = device("other", 0, "o0");
    store.put_device(other.clone()).await.unwrap();
    assert_eq!(load_all(&store, "other").await, [other]);
    assert_eq!(load_all(&store, "k").await, [replaced.clone(), d1.clone()]);

    // A registration id is one device's: another ordinal cannot take it.
    let thief = device("k", 2, "r1");
    assert!(store.put_device(thief).await.is_err());
    assert_eq!(load_all(&store, "k").await, [replaced, d1]);
}

pub async fn put_devices_is_all_or_none(store: DynStore) {
    let batch: Vec<_> = (0..50).map(|i| device("k", i, &format!("r{i}"))).collect();
    store.put_devices(batch.clone()).await.unwrap();
    assert_eq!(load_all(&store, "k").await, batch);
    store.put_devices(Vec::new()).await.unwrap();

    // A batch whose last device takes a registration id another device has: none of it.
    let mut changed: Vec<_> = (50..60).map(|i| device("k", i, &format!("r{i}"))).collect();
    let mut first = batch[0].clone();
    first.tags = vec!["changed".into()];
    changed.push(first);
    changed.push(device("k", 99, "r1"));
    assert!(store.put_devices(changed).await.is_err());
    assert_eq!(load_all(&store, "k").await, batch);
}

pub async fn put_devices_puts_in_order(store: DynStore) {
    // One device twice in a batch: as if put one after the other, the later one stays.
    let first = device("k", 1, "r1");
    let mut second = device("k", 1, "r1-new");
    second.tags = vec!["second".into()];
    second.updated_ms = 2_000;
    let other = device("k", 2, "r2");
    store
        .put_devices(vec![first, other.clone(), second.clone()])
        .await
        .unwrap();
    assert_eq!(load_all(&store, "k").await, [second.clone(), other.clone()]);
    // A registration id handed from one device to another within the batch.
    let mut moved = device("k", 3, "r1-new");
    moved.updated_ms = 3_000;
    let mut renamed = second.clone();
    renamed.registration_id = "r1-renamed".into();
    store
        .put_devices(vec![renamed.clone(), moved.clone()])
        .await
        .unwrap();
    assert_eq!(load_all(&store, "k").await, [renamed, other, moved]);
}

pub async fn devices_are_loaded_in_chunks(store: DynStore) {
    assert!(load_all(&store, "k").await.is_empty());
    const N: u32 = 10_000;
    let all: Vec<_> = (0..N)
        .map(|i| {
            let mut d = device("k", i, &format!("reg-{i}"));
            d.tags = vec![format!("tag-{}", i % 7)];
            d
        })
        .collect();
    for part in all.chunks(2_500) {
        store.put_devices(part.to_vec()).await.unwrap();
    }
    store
        .put_device(device("other", 0, "other-0"))
        .await
        .unwrap();
    let chunks = load_chunks(&store, "k").await;
    assert!(
        chunks.len() > 1,
        "{N} devices in {} chunk(s): not chunked",
        chunks.len()
    );
    assert!(chunks.iter().all(|c| !c.is_empty()), "an empty chunk");
    let mut loaded: Vec<_> = chunks.into_iter().flatten().collect();
    assert_eq!(loaded.len(), N as usize, "each device once");
    loaded.sort_by_key(|d| d.ordinal);
    assert_eq!(loaded, all);
    assert_eq!(load_all(&store, "other").await.len(), 1);
    assert!(load_all(&store, "none").await.is_empty());
}

pub async fn last_online_keeps_the_latest_and_seen_between_is_half_open(store: DynStore) {
    assert!(store.last_online("k", vec![1, 2]).await.unwrap().is_empty());
    store
        .set_last_online("k", 1, 1_000, vec![event("k", "Device.OnlineStatus", 1)])
        .await
        .unwrap();
    store
        .set_last_online("k", 2, 2_000, Vec::new())
        .await
        .unwrap();
    store
        .set_last_online("k", 3, 3_000, Vec::new())
        .await
        .unwrap();
    store
        .set_last_online("other", 1, 1_500, Vec::new())
        .await
        .unwrap();
    // The latest replaces the earlier.
    store
        .set_last_online("k", 3, 2_500, Vec::new())
        .await
        .unwrap();
    let mut seen = store.last_online("k", vec![3, 1, 9]).await.unwrap();
    seen.sort();
    assert_eq!(seen, [(1, 1_000), (3, 2_500)]);
    assert_eq!(
        store.last_online("other", vec![1]).await.unwrap(),
        [(1, 1_500)]
    );

    let between = |from, to| {
        let store = store.clone();
        async move {
            let mut v = store.seen_between("k", from, to).await.unwrap();
            v.sort();
            v
        }
    };
    assert_eq!(between(1_000, 2_000).await, [1]);
    assert_eq!(between(1_000, 2_001).await, [1, 2]);
    assert_eq!(between(0, 10_000).await, [1, 2, 3]);
    assert_eq!(between(2_001, 2_500).await, Vec::<u32>::new());
    assert_eq!(between(2_500, 2_501).await, [3]);
    // 3's earlier time is forgotten.
    assert_eq!(between(3_000, 4_000).await, Vec::<u32>::new());

    // The events that report it are in the outbox.
    let events = store
        .events_after("k", None, "Device.OnlineStatus", 0, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body, event("k", "Device.OnlineStatus", 1).body);
}

pub async fn devices_are_blocked_and_unblocked(store: DynStore) {
    assert!(store.load_blocked("k").await.unwrap().is_empty());
    store.set_blocked("k", vec![3, 1, 2], true).await.unwrap();
    // Blocking twice is the same.
    store.set_blocked("k", vec![2, 5], true).await.unwrap();
    store.set_blocked("other", vec![7], true).await.unwrap();
    let sorted = |mut v: Vec<u32>| {
        v.sort();
        v
    };
    assert_eq!(sorted(store.load_blocked("k").await.unwrap()), [1, 2, 3, 5]);
    store.set_blocked("k", vec![2, 9], false).await.unwrap();
    assert_eq!(sorted(store.load_blocked("k").await.unwrap()), [1, 3, 5]);
    assert_eq!(store.load_blocked("other").await.unwrap(), [7]);
    store.set_blocked("k", Vec::new(), true).await.unwrap();
    store.set_blocked("k", vec![1, 3, 5], false).await.unwrap();
    assert!(store.load_blocked("k").await.unwrap().is_empty());
}

pub async fn badges_are_saved_and_replaced(store: DynStore) {
    assert!(store.load_badges("k").await.unwrap().is_empty());
    store
        .save_badges("k", vec![(1, 5), (2, 0), (3, 99)])
        .await
        .unwrap();
    store.save_badges("other", vec![(1, 1)]).await.unwrap();
    store.save_badges("k", vec![(1, 6), (4, 1)]).await.unwrap();
    let mut badges = store.load_badges("k").await.unwrap();
    badges.sort();
    assert_eq!(badges, [(1, 6), (2, 0), (3, 99), (4, 1)]);
    assert_eq!(store.load_badges("other").await.unwrap(), [(1, 1)]);
}

pub async fn locations_keep_the_latest_per_device(store: DynStore) {
    let at = |lat: f64, accuracy_m: Option<f64>, at_ms| Location {
        lat,
        lon: 116.397_128,
        accuracy_m,
        at_ms,
    };
    assert_eq!(store.location("k", 1).await.unwrap(), None);
    store
        .save_locations(
            "k",
            vec![(1, at(39.9, Some(12.5), 10)), (2, at(-33.868_8, None, 11))],
        )
        .await
        .unwrap();
    assert_eq!(
        store.location("k", 1).await.unwrap(),
        Some(at(39.9, Some(12.5), 10))
    );
    assert_eq!(
        store.location("k", 2).await.unwrap(),
        Some(at(-33.868_8, None, 11))
    );
    store
        .save_locations("k", vec![(1, at(40.1, None, 20))])
        .await
        .unwrap();
    assert_eq!(
        store.location("k", 1).await.unwrap(),
        Some(at(40.1, None, 20))
    );
    assert_eq!(store.location("other", 1).await.unwrap(), None);
    assert_eq!(store.location("k", 3).await.unwrap(), None);
}
