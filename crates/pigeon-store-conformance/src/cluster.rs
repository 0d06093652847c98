//! The cluster's ports: id blocks and the change feed, leases, presence.

use crate::{bitmap, device, now_ms, push, Backend, DynStore, NODE_A, NODE_B};
use pigeon_store::{Change, DeviceRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Asserts that ranges `(first, count)` do not overlap.
fn assert_disjoint(mut ranges: Vec<(u64, u64)>, what: &str) {
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{what}: {:?} and {:?} overlap",
            w[0],
            w[1]
        );
    }
}

pub async fn ordinals_reserved_concurrently_are_disjoint(store: DynStore, nodes: Arc<dyn Backend>) {
    let b = nodes.open(NODE_B).await;
    for o in [0, 1, 2, 1_000] {
        store
            .put_device(device("k", o, &format!("r{o}")))
            .await
            .unwrap();
    }
    // Above every stored ordinal.
    let first = store.reserve_ordinals("k", 10).await.unwrap();
    assert!(first > 1_000, "{first}");
    let mut ranges = vec![(u64::from(first), 10)];
    let tasks: Vec<_> = (0..32u32)
        .map(|i| {
            let s = if i % 2 == 0 { store.clone() } else { b.clone() };
            let count = 1 + i % 5;
            tokio::spawn(async move { (s.reserve_ordinals("k", count).await.unwrap(), count) })
        })
        .collect();
    for t in tasks {
        let (first, count) = t.await.unwrap();
        assert!(first > 1_000, "{first}");
        ranges.push((u64::from(first), u64::from(count)));
    }
    assert_disjoint(ranges.clone(), "ordinal blocks");
    // A device stored above the blocks (another writer's): the next block is above it.
    let top = ranges.iter().map(|(f, c)| f + c).max().unwrap() as u32;
    b.put_device(device("k", top + 500, "high")).await.unwrap();
    let next = store.reserve_ordinals("k", 1).await.unwrap();
    assert!(next > top + 500, "{next} <= {}", top + 500);
    // Each app has its own ordinals: another app's first block starts low.
    let other = b.reserve_ordinals("other", 5).await.unwrap();
    assert!(other < 1_000, "{other}");
    let again = store.reserve_ordinals("other", 5).await.unwrap();
    assert_disjoint(
        vec![(u64::from(other), 5), (u64::from(again), 5)],
        "another app's blocks",
    );
}

pub async fn msg_ids_reserved_concurrently_are_disjoint(store: DynStore, nodes: Arc<dyn Backend>) {
    let b = nodes.open(NODE_B).await;
    store
        .insert_push("k", &push(5_000, 1_000, 600), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    // Above every stored msg_id.
    let first = b.reserve_msg_ids(10, 0).await.unwrap();
    assert!(first > 5_000, "{first}");
    let mut ranges = vec![(first, 10)];
    // At least the floor.
    let floored = store.reserve_msg_ids(5, 1_000_000).await.unwrap();
    assert!(floored >= 1_000_000, "{floored}");
    ranges.push((floored, 5));
    // Never handed out again, even with a lower floor.
    let after = b.reserve_msg_ids(5, 0).await.unwrap();
    assert!(after >= floored + 5, "{after}");
    ranges.push((after, 5));
    let tasks: Vec<_> = (0..32u64)
        .map(|i| {
            let s = if i % 2 == 0 { store.clone() } else { b.clone() };
            let count = 1 + i % 7;
            tokio::spawn(async move { (s.reserve_msg_ids(count, i).await.unwrap(), count) })
        })
        .collect();
    for t in tasks {
        let (first, count) = t.await.unwrap();
        assert!(first >= after + 5, "{first}");
        ranges.push((first, count));
    }
    assert_disjoint(ranges.clone(), "msg_id blocks");
    // A push stored above the blocks: the next block is above it.
    let top = ranges.iter().map(|(f, c)| f + c).max().unwrap();
    store
        .insert_push(
            "k",
            &push(top + 1_000, 1_000, 600),
            &bitmap([1]),
            Vec::new(),
        )
        .await
        .unwrap();
    let next = b.reserve_msg_ids(1, 0).await.unwrap();
    assert!(next > top + 1_000, "{next}");
}

/// Reads the feed from `cursor` to its end in pages of `limit`; the changes and the cursor.
async fn drain(store: &DynStore, mut cursor: u64, limit: usize) -> (Vec<Change>, u64) {
    let mut all = Vec::new();
    loop {
        let (page, next) = store.changes_since(cursor, limit).await.unwrap();
        assert!(
            page.len() <= limit,
            "{} changes for a limit of {limit}",
            page.len()
        );
        if page.is_empty() {
            return (all, next.max(cursor));
        }
        assert!(next >= cursor, "the cursor went back: {cursor} -> {next}");
        cursor = next;
        all.extend(page);
    }
}

/// The latest device record of each (app, ordinal) a feed gave.
type DevicesSeen = BTreeMap<(String, u32), DeviceRecord>;
/// The (app, msg_id) of the pushes a feed named, and whether the latest change of each said
/// it is recalled.
type PushesSeen = BTreeMap<(String, u64), bool>;

/// The latest device record of each (app, ordinal) and the pushes the changes name.
fn summarize(changes: &[Change]) -> (DevicesSeen, PushesSeen) {
    let mut devices = BTreeMap::new();
    let mut pushes = BTreeMap::new();
    for c in changes {
        match c {
            Change::Device(d) => {
                devices.insert((d.app_key.to_string(), d.ordinal), (**d).clone());
            }
            Change::Push {
                app_key,
                msg_id,
                recalled,
            } => {
                pushes.insert((app_key.clone(), *msg_id), *recalled);
            }
            // Geofences' and saved audiences' changes have bodies of their own.
            Change::Geofence { .. } | Change::Saved { .. } => {}
        }
    }
    (devices, pushes)
}

pub async fn changes_since_sees_every_change_after_the_cursor(store: DynStore) {
    // Before the cursor.
    store.put_device(device("k", 0, "r0")).await.unwrap();
    store
        .insert_push("k", &push(1, 1_000, 600), &bitmap([0]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("k", &push(2, 1_000, 600), &bitmap([0]), Vec::new())
        .await
        .unwrap();
    let start = store.feed_cursor().await.unwrap();
    let (nothing, same) = store.changes_since(start, 100).await.unwrap();
    assert!(nothing.is_empty(), "{nothing:?}");
    assert!(same >= start);

    let d1 = device("k", 1, "r1");
    store.put_device(d1.clone()).await.unwrap();
    let (d2, d3) = (device("k", 2, "r2"), device("other", 3, "o3"));
    store
        .put_devices(vec![d2.clone(), d3.clone()])
        .await
        .unwrap();
    store
        .insert_push("other", &push(3, 2_000, 600), &bitmap([3]), Vec::new())
        .await
        .unwrap();
    assert!(store.recall_push(1, 2_500, Vec::new()).await.unwrap());
    let mut replacing = push(4, 3_000, 600);
    replacing.policy.overrides = Some(2);
    store
        .insert_push("k", &replacing, &bitmap([0]), Vec::new())
        .await
        .unwrap();
    // d1 changed again: the feed gives it as stored now.
    let mut d1b = d1.clone();
    d1b.tags = vec!["changed".into()];
    d1b.updated_ms = 5_000;
    store.put_device(d1b.clone()).await.unwrap();

    let (changes, end) = drain(&store, start, 100).await;
    let (devices, pushes) = summarize(&changes);
    let expected_devices: BTreeMap<_, _> = [d1b, d2, d3]
        .into_iter()
        .map(|d| ((d.app_key.to_string(), d.ordinal), d))
        .collect();
    assert_eq!(devices, expected_devices);
    // The new pushes, the recalled one (said recalled) and the overridden one; nothing from
    // before the cursor.
    let expected_pushes: BTreeMap<_, _> = [
        ("other", 3, false),
        ("k", 1, true),
        ("k", 4, false),
        ("k", 2, false),
    ]
    .into_iter()
    .map(|(a, m, recalled)| ((a.to_string(), m), recalled))
    .collect();
    assert_eq!(pushes, expected_pushes);
    assert!(end > start);
    // Nothing after the end; a cursor taken now sees only what comes next.
    assert!(store.changes_since(end, 100).await.unwrap().0.is_empty());
    let now = store.feed_cursor().await.unwrap();
    assert!(now >= end);
    store.put_device(device("k", 9, "r9")).await.unwrap();
    let (next, _) = drain(&store, now, 100).await;
    let (devices, pushes) = summarize(&next);
    assert_eq!(
        devices.keys().cloned().collect::<Vec<_>>(),
        [("k".to_string(), 9)]
    );
    assert!(pushes.is_empty());
}

pub async fn changes_since_respects_its_limit_without_skipping(store: DynStore) {
    let start = store.feed_cursor().await.unwrap();
    let mut devices = BTreeSet::new();
    let mut pushes = BTreeSet::new();
    for i in 0..25u32 {
        store
            .put_device(device("k", i, &format!("r{i}")))
            .await
            .unwrap();
        devices.insert(("k".to_string(), i));
        if i % 3 == 0 {
            let id = 100 + u64::from(i);
            store
                .insert_push("k", &push(id, 1_000, 600), &bitmap([i]), Vec::new())
                .await
                .unwrap();
            pushes.insert(("k".to_string(), id));
        }
    }
    for limit in [1, 4, 7] {
        let mut cursor = start;
        let mut pages = 0;
        let mut seen = Vec::new();
        loop {
            let (page, next) = store.changes_since(cursor, limit).await.unwrap();
            assert!(page.len() <= limit, "{} > {limit}", page.len());
            if page.is_empty() {
                break;
            }
            assert!(next > cursor, "a non-empty page moves the cursor");
            cursor = next;
            pages += 1;
            seen.extend(page);
        }
        let total = devices.len() + pushes.len();
        assert!(pages >= total.div_ceil(limit), "{pages} pages of {limit}");
        let (got_devices, got_pushes) = summarize(&seen);
        assert_eq!(
            got_devices.keys().cloned().collect::<BTreeSet<_>>(),
            devices,
            "limit {limit}"
        );
        assert_eq!(
            got_pushes.keys().cloned().collect::<BTreeSet<_>>(),
            pushes,
            "limit {limit}"
        );
    }
}

pub async fn the_feed_misses_nothing_written_concurrently_by_two_nodes(
    store: DynStore,
    nodes: Arc<dyn Backend>,
) {
    let b = nodes.open(NODE_B).await;
    let start = store.feed_cursor().await.unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader follows the feed while both nodes write.
    let reader = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut cursor = start;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let (page, next) = store.changes_since(cursor, 16).await.unwrap();
                assert!(next >= cursor);
                cursor = next;
                let empty = page.is_empty();
                seen.extend(page);
                if empty {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };
    let writers: Vec<_> = (0..8u32)
        .map(|w| {
            let s = if w % 2 == 0 { store.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..25u32 {
                    let ordinal = w * 1_000 + i;
                    s.put_device(device("k", ordinal, &format!("r{ordinal}")))
                        .await
                        .unwrap();
                    if i % 5 == 0 {
                        let msg_id = u64::from(ordinal) + 1;
                        s.insert_push(
                            "k",
                            &push(msg_id, 1_000, 600),
                            &bitmap([ordinal]),
                            Vec::new(),
                        )
                        .await
                        .unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let (devices, pushes) = summarize(&seen);
    let want_devices: BTreeSet<_> = (0..8u32)
        .flat_map(|w| (0..25u32).map(move |i| ("k".to_string(), w * 1_000 + i)))
        .collect();
    let want_pushes: BTreeSet<_> = (0..8u32)
        .flat_map(|w| {
            (0..25u32)
                .step_by(5)
                .map(move |i| ("k".to_string(), u64::from(w * 1_000 + i) + 1))
        })
        .collect();
    let got: BTreeSet<_> = devices.keys().cloned().collect();
    let missed: Vec<_> = want_devices.difference(&got).collect();
    assert!(missed.is_empty(), "the feed missed devices {missed:?}");
    let pushes: BTreeSet<_> = pushes.into_keys().collect();
    let missed: Vec<_> = want_pushes.difference(&pushes).collect();
    assert!(missed.is_empty(), "the feed missed pushes {missed:?}");
    // Node b's feed sees the same.
    let (from_b, _) = drain(&b, start, 50).await;
    let (devices_b, pushes_b) = summarize(&from_b);
    assert_eq!(
        devices_b.keys().cloned().collect::<BTreeSet<_>>(),
        want_devices
    );
    assert_eq!(pushes_b.into_keys().collect::<BTreeSet<_>>(), want_pushes);
}

/// The lease `name` as listed, if live.
async fn listed(store: &DynStore, name: &str) -> Option<pigeon_store::Lease> {
    store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.name == name)
}

/// How far the store's clock may be from ours.
const SKEW_MS: u64 = 2_000;

pub async fn a_lease_is_taken_renewed_and_released(store: DynStore) {
    assert!(store.leases().await.unwrap().is_empty());
    let before = now_ms();
    let t1 = store
        .take_lease("jobs", NODE_A, 10_000)
        .await
        .unwrap()
        .expect("free");
    let after = now_ms();
    let lease = listed(&store, "jobs").await.expect("listed");
    assert_eq!((lease.holder.as_str(), lease.token), (NODE_A, t1));
    assert!(
        lease.until_ms + SKEW_MS >= before + 10_000 && lease.until_ms <= after + 10_000 + SKEW_MS,
        "until {} for a ttl of 10s taken at {before}",
        lease.until_ms
    );
    // Renewed by its holder: same token, later end.
    assert_eq!(
        store.take_lease("jobs", NODE_A, 60_000).await.unwrap(),
        Some(t1)
    );
    let renewed = listed(&store, "jobs").await.unwrap();
    assert_eq!(renewed.token, t1);
    assert!(renewed.until_ms >= lease.until_ms + 40_000, "{renewed:?}");
    // Another node is refused while it lives.
    assert_eq!(
        store.take_lease("jobs", NODE_B, 10_000).await.unwrap(),
        None
    );
    assert!(store.lease_holds("jobs", t1).await.unwrap());
    assert!(!store.lease_holds("jobs", t1 + 1).await.unwrap());
    assert!(!store.lease_holds("nope", t1).await.unwrap());
    // Other leases are other leases.
    let other = store
        .take_lease("other", NODE_B, 10_000)
        .await
        .unwrap()
        .expect("free");
    assert!(store.lease_holds("other", other).await.unwrap());
    let mut names: Vec<String> = store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    names.sort();
    assert_eq!(names, ["jobs", "other"]);
    // Released only by its holder; then it does not hold and is not listed.
    assert!(!store.release_lease("jobs", NODE_B).await.unwrap());
    assert!(store.lease_holds("jobs", t1).await.unwrap());
    assert!(store.release_lease("jobs", NODE_A).await.unwrap());
    assert!(!store.release_lease("jobs", NODE_A).await.unwrap());
    assert!(!store.lease_holds("jobs", t1).await.unwrap());
    assert_eq!(listed(&store, "jobs").await, None);
    assert!(!store.release_lease("never", NODE_A).await.unwrap());
    // Free again: another node takes it with a larger token.
    let t2 = store
        .take_lease("jobs", NODE_B, 10_000)
        .await
        .unwrap()
        .expect("free");
    assert!(t2 > t1, "{t2} <= {t1}");
    assert!(store.lease_holds("jobs", t2).await.unwrap());
    assert!(!store.lease_holds("jobs", t1).await.unwrap());
    assert_eq!(listed(&store, "jobs").await.unwrap().holder, NODE_B);
}

pub async fn a_lease_is_refused_while_live_and_taken_over_after_expiry(
    store: DynStore,
    nodes: Arc<dyn Backend>,
) {
    let b = nodes.open(NODE_B).await;
    let t1 = store
        .take_lease("l", NODE_A, 700)
        .await
        .unwrap()
        .expect("free");
    assert_eq!(b.take_lease("l", NODE_B, 10_000).await.unwrap(), None);
    assert!(b.lease_holds("l", t1).await.unwrap());
    assert_eq!(listed(&b, "l").await.unwrap().holder, NODE_A);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    // Expired: not held, not listed, and another node takes it over with a larger token.
    assert!(!store.lease_holds("l", t1).await.unwrap());
    assert_eq!(listed(&store, "l").await, None);
    let t2 = b
        .take_lease("l", NODE_B, 10_000)
        .await
        .unwrap()
        .expect("expired");
    assert!(t2 > t1, "{t2} <= {t1}");
    assert!(!store.lease_holds("l", t1).await.unwrap());
    assert!(store.lease_holds("l", t2).await.unwrap());
    assert_eq!(store.take_lease("l", NODE_A, 10_000).await.unwrap(), None);
    // The old holder cannot release it.
    assert!(!store.release_lease("l", NODE_A).await.unwrap());
    let lease = listed(&store, "l").await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.token), (NODE_B, t2));

    // Many nodes race for one lease: exactly one gets it.
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let s = if i % 2 == 0 { store.clone() } else { b.clone() };
            tokio::spawn(async move {
                let node = format!("racer-{i}");
                s.take_lease("race", &node, 10_000)
                    .await
                    .unwrap()
                    .map(|t| (node, t))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (node, token) = winners.pop().unwrap();
    let lease = listed(&b, "race").await.unwrap();
    assert_eq!((lease.holder, lease.token), (node, token));
}

/// Which of `ordinals` of app `k` are connected, and where, by ordinal.
async fn where_is(store: &DynStore, app_key: &str, ordinals: &[u32]) -> Vec<(u32, String)> {
    let mut found = store.presence(app_key, ordinals.to_vec()).await.unwrap();
    found.sort();
    found
}

fn at(ordinal: u32, node: &str) -> (u32, String) {
    (ordinal, node.to_string())
}

fn change(app_key: &str, ordinal: u32, connected: bool) -> (String, u32, bool) {
    (app_key.to_string(), ordinal, connected)
}

pub async fn presence_follows_connects_and_disconnects_in_order(store: DynStore) {
    store
        .take_lease("node:node-a", NODE_A, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(where_is(&store, "k", &[1, 2, 3]).await.is_empty());
    store
        .set_presence(
            NODE_A,
            vec![
                change("k", 1, true),
                change("k", 2, true),
                change("k", 1, false),
            ],
        )
        .await
        .unwrap();
    assert_eq!(where_is(&store, "k", &[1, 2, 3]).await, [at(2, NODE_A)]);
    store
        .set_presence(NODE_A, vec![change("k", 3, false), change("k", 3, true)])
        .await
        .unwrap();
    assert_eq!(
        where_is(&store, "k", &[1, 2, 3]).await,
        [at(2, NODE_A), at(3, NODE_A)]
    );
    // Only the ordinals asked, of that app.
    assert_eq!(where_is(&store, "k", &[3]).await, [at(3, NODE_A)]);
    assert!(where_is(&store, "other", &[2, 3]).await.is_empty());
    store
        .set_presence(NODE_A, vec![change("other", 2, true)])
        .await
        .unwrap();
    assert_eq!(where_is(&store, "other", &[2, 3]).await, [at(2, NODE_A)]);
    // Connecting twice is once; leaving once is gone.
    store
        .set_presence(NODE_A, vec![change("k", 2, true), change("k", 2, false)])
        .await
        .unwrap();
    assert_eq!(where_is(&store, "k", &[1, 2, 3]).await, [at(3, NODE_A)]);
    store.set_presence(NODE_A, Vec::new()).await.unwrap();
    assert!(where_is(&store, "k", &[]).await.is_empty());
}

pub async fn presence_counts_only_nodes_with_a_live_lease(store: DynStore) {
    store
        .set_presence(NODE_A, vec![change("k", 1, true)])
        .await
        .unwrap();
    // No lease `node:node-a`: not counted (a lease of another name does not count).
    assert!(where_is(&store, "k", &[1]).await.is_empty());
    store
        .take_lease(NODE_A, NODE_A, 60_000)
        .await
        .unwrap()
        .unwrap();
    store
        .take_lease("node:node-b", NODE_B, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(where_is(&store, "k", &[1]).await.is_empty());
    store
        .take_lease("node:node-a", NODE_A, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(where_is(&store, "k", &[1]).await, [at(1, NODE_A)]);
    // Released: not counted.
    assert!(store.release_lease("node:node-a", NODE_A).await.unwrap());
    assert!(where_is(&store, "k", &[1]).await.is_empty());
    // Expired: not counted.
    store
        .take_lease("node:node-a", NODE_A, 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(where_is(&store, "k", &[1]).await, [at(1, NODE_A)]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(where_is(&store, "k", &[1]).await.is_empty());
}

pub async fn clear_presence_forgets_one_node(store: DynStore) {
    store
        .take_lease("node:node-a", NODE_A, 60_000)
        .await
        .unwrap()
        .unwrap();
    store
        .take_lease("node:node-b", NODE_B, 60_000)
        .await
        .unwrap()
        .unwrap();
    store
        .set_presence(NODE_A, vec![change("k", 1, true), change("k", 2, true)])
        .await
        .unwrap();
    store
        .set_presence(NODE_B, vec![change("k", 3, true), change("other", 1, true)])
        .await
        .unwrap();
    store.clear_presence(NODE_A).await.unwrap();
    assert_eq!(where_is(&store, "k", &[1, 2, 3]).await, [at(3, NODE_B)]);
    assert_eq!(where_is(&store, "other", &[1]).await, [at(1, NODE_B)]);
    // Cleared twice, or a node with nothing: no error.
    store.clear_presence(NODE_A).await.unwrap();
    store.clear_presence("node-z").await.unwrap();
    // It comes back as devices connect again.
    store
        .set_presence(NODE_A, vec![change("k", 1, true)])
        .await
        .unwrap();
    assert_eq!(
        where_is(&store, "k", &[1, 2, 3]).await,
        [at(1, NODE_A), at(3, NODE_B)]
    );
}

pub async fn a_disconnect_from_an_older_node_keeps_the_newer_connection(
    store: DynStore,
    nodes: Arc<dyn Backend>,
) {
    let b = nodes.open(NODE_B).await;
    store
        .take_lease("node:node-a", NODE_A, 60_000)
        .await
        .unwrap()
        .unwrap();
    b.take_lease("node:node-b", NODE_B, 60_000)
        .await
        .unwrap()
        .unwrap();
    store
        .set_presence(NODE_A, vec![change("k", 1, true), change("k", 2, true)])
        .await
        .unwrap();
    // Device 1 moves to node b; node a hears it leave afterwards.
    b.set_presence(NODE_B, vec![change("k", 1, true)])
        .await
        .unwrap();
    assert_eq!(
        where_is(&store, "k", &[1, 2]).await,
        [at(1, NODE_B), at(2, NODE_A)]
    );
    store
        .set_presence(NODE_A, vec![change("k", 1, false)])
        .await
        .unwrap();
    assert_eq!(
        where_is(&b, "k", &[1, 2]).await,
        [at(1, NODE_B), at(2, NODE_A)]
    );
    // Node a restarts: only its own devices go.
    store.clear_presence(NODE_A).await.unwrap();
    assert_eq!(where_is(&store, "k", &[1, 2]).await, [at(1, NODE_B)]);
    b.set_presence(NODE_B, vec![change("k", 1, false)])
        .await
        .unwrap();
    assert!(where_is(&b, "k", &[1, 2]).await.is_empty());
}
