//! What only a shared database has to get right: processes migrating at once, nodes merging
//! delivery state, idempotency across processes, a complete change feed and outbox under
//! concurrent writers, lease fencing, presence of dead nodes, and failures.

// `is_multiple_of` is newer than the workspace's rust-version.
#![allow(clippy::manual_is_multiple_of)]

mod common;

use pigeon_core::{Audience, IdempotencyKey, PlatformSet, Push, ScheduleFiring};
use pigeon_store::ports::*;
use pigeon_store::{
    AppRecord, Change, Checkpoint, DeviceRecord, GeofenceRecord, NewEvent, ScheduleRecord,
    StoreError, FENCE_STAY,
};
use pigeon_store_postgres::{PostgresStore, MIGRATIONS};
use roaring::RoaringBitmap;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

async fn store(url: &str, node: &str) -> PostgresStore {
    PostgresStore::connect(url, node)
        .await
        .unwrap_or_else(|e| panic!("connecting {node}: {e}"))
}

fn push(msg_id: u64) -> Push {
    let mut p = Push::new(PlatformSet::all(), Audience::All);
    p.msg_id = msg_id;
    p.sent_ms = 1_000;
    p.content.message = Some(Default::default());
    p
}

fn device(app: &str, ordinal: u32) -> DeviceRecord {
    DeviceRecord {
        app_key: Arc::from(app),
        ordinal,
        registration_id: format!("{app}-{ordinal}"),
        install_id: None,
        secret_hash: [1; 32],
        platform: pigeon_core::Platform::Ios,
        alias: None,
        tags: Vec::new(),
        mobile: None,
        region: None,
        push_tokens: Default::default(),
        apns_production: false,
        info: Default::default(),
        created_ms: 1,
        updated_ms: 1,
    }
}

fn bitmap(v: &[u32]) -> RoaringBitmap {
    v.iter().copied().collect()
}

fn event(app: &str, n: u64) -> NewEvent {
    NewEvent {
        app_key: app.into(),
        command: "Push.Event".into(),
        body: format!(r#"{{"N":{n}}}"#),
        at_ms: n,
        endpoint_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_connecting_at_once_migrate_once_and_share_one_key() {
    let url = common::fresh_db("migrate").await;
    let connects = (0..4).map(|i| {
        let url = url.clone();
        tokio::spawn(async move { PostgresStore::connect(&url, &format!("n{i}")).await })
    });
    let mut stores = Vec::new();
    for c in connects {
        stores.push(c.await.expect("task").expect("every connect succeeds"));
    }
    let db = common::raw(&url).await;
    let rows = db
        .query(
            "SELECT version FROM pigeon_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("versions");
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let known: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, known, "each migration applied once");
    let keys: i64 = db
        .query_one("SELECT COUNT(*) FROM pigeon_schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(keys as usize, known.len());
    let key_rows: i64 = db
        .query_one("SELECT COUNT(*) FROM pigeon_secret_key", &[])
        .await
        .expect("key rows")
        .get(0);
    assert_eq!(key_rows, 1, "one sealing key, made once");

    // A secret sealed by one process opens in another, and is sealed at rest.
    stores[0]
        .set_vendor_credentials("k", "fcm", r#"{"secret":"s3cret"}"#.into(), 1)
        .await
        .expect("set");
    let read = stores[3].vendor_credentials("k").await.expect("read");
    assert_eq!(
        read,
        vec![("fcm".into(), r#"{"secret":"s3cret"}"#.into(), 1)]
    );
    let raw: String = db
        .query_one("SELECT body FROM vendor_credentials", &[])
        .await
        .expect("raw")
        .get(0);
    assert!(
        raw.starts_with("sealed:v1:") && !raw.contains("s3cret"),
        "{raw}"
    );
    stores[1]
        .ensure_vapid_keys("k", "private!".into(), "public".into())
        .await
        .expect("vapid");
    let raw: String = db
        .query_one("SELECT private_key FROM app_vapid_keys", &[])
        .await
        .expect("raw")
        .get(0);
    assert!(!raw.contains("private!"));
    assert_eq!(
        stores[2].vapid_keys("k").await.expect("vapid"),
        Some(("private!".into(), "public".into()))
    );

    // Connecting again migrates nothing.
    store(&url, "n9").await;
    let again: i64 = db
        .query_one("SELECT COUNT(*) FROM pigeon_schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(again as usize, known.len());

    // A database a newer Pigeon migrated is refused, saying why.
    db.execute(
        "INSERT INTO pigeon_schema_migrations (version, applied_ms) VALUES (9999, 0)",
        &[],
    )
    .await
    .expect("a newer version");
    match PostgresStore::connect(&url, "n1").await {
        Err(StoreError::Backend(why)) => assert!(why.contains("newer"), "{why}"),
        other => panic!("a newer schema must be refused: {other:?}"),
    }
}

fn geofence(app: &str, id: &str) -> GeofenceRecord {
    GeofenceRecord {
        app_key: app.into(),
        geofence_id: id.into(),
        name: id.into(),
        lat: 1.0,
        lon: 2.0,
        radius_m: 100.0,
        events: FENCE_STAY,
        stay_s: Some(60),
        audience: Audience::All,
        push: None,
        repeat: true,
        cooldown_s: 0,
        start_ms: None,
        end_ms: None,
        created_ms: 5,
        given: Value::Null,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_first_schema_is_upgraded_in_place() {
    let url = common::fresh_db("upgrade").await;
    let db = common::raw(&url).await;
    // As the first Pigeon on PostgreSQL left it: migration 1 only, with data.
    let (version, _, first) = MIGRATIONS[0];
    assert_eq!(version, 1);
    db.batch_execute(&format!(
        "CREATE TABLE pigeon_schema_migrations (
             version INT PRIMARY KEY,
             applied_ms BIGINT NOT NULL
         );
         {first}
         INSERT INTO pigeon_schema_migrations (version, applied_ms) VALUES (1, 0);
         INSERT INTO apps (app_key, master_secret, name, created_ms) VALUES ('k', 's', 'n', 1);"
    ))
    .await
    .expect("the first schema");
    let s = store(&url, "n1").await;
    let rows = db
        .query(
            "SELECT version FROM pigeon_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("versions");
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let known: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, known);
    assert!(s.find_app("k").await.expect("find").is_some());
    // What the new migrations add works, the change feed included.
    let cursor = s.feed_cursor().await.expect("cursor");
    s.put_geofence(geofence("k", "g1")).await.expect("put");
    assert_eq!(
        s.list_geofences("k").await.expect("list"),
        [geofence("k", "g1")]
    );
    let want: BTreeSet<String> = ["g k g1".to_string()].into();
    let (seen, _) = drain_until(&s, cursor, 10, &want, BTreeSet::new()).await;
    assert_eq!(seen, want);
    // Connecting again migrates nothing.
    store(&url, "n2").await;
    let again: i64 = db
        .query_one("SELECT COUNT(*) FROM pigeon_schema_migrations", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(again as usize, known.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_holds_a_geofence_change_until_its_transaction_commits() {
    let url = common::fresh_db("geofeed").await;
    let (a, b) = (store(&url, "a").await, store(&url, "b").await);
    let start = a.feed_cursor().await.expect("cursor");
    // A fence written by a transaction that stays open while another commits after it.
    let db = common::raw(&url).await;
    db.batch_execute(
        "BEGIN;
         INSERT INTO geofences (app_key, geofence_id, body, created_ms)
         VALUES ('slow', 'g0', NULL, 0);",
    )
    .await
    .expect("an open transaction");
    a.put_geofence(geofence("k", "g1")).await.expect("put");
    let (seen, cursor) = drain(&b, start, 10).await;
    assert!(
        seen.is_empty(),
        "nothing past the open transaction: {seen:?}"
    );
    db.batch_execute("COMMIT").await.expect("commit");
    let both: BTreeSet<String> = ["g k g1", "g slow g0"].map(String::from).into();
    let (seen, cursor) = drain_until(&b, cursor, 1, &both, BTreeSet::new()).await;
    assert_eq!(seen, both);
    // Deleted on one node: the other's feed names it again.
    assert!(b.delete_geofence("k", "g1").await.expect("delete"));
    let gone: BTreeSet<String> = ["g k g1".to_string()].into();
    let (seen, _) = drain_until(&a, cursor, 10, &gone, BTreeSet::new()).await;
    assert_eq!(seen, gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_checkpoints_of_several_nodes_merge() {
    let url = common::fresh_db("merge").await;
    let (a, b) = (store(&url, "a").await, store(&url, "b").await);
    let audience = bitmap(&[1, 2, 3, 4]);
    let mut p = push(7);
    p.labels.group = Some("g".into());
    a.insert_push("k", &p, &audience, Vec::new())
        .await
        .expect("push");
    let checkpoint = |sent: &[u32], delivered: &[u32]| Checkpoint {
        msg_id: 7,
        sent: bitmap(sent),
        delivered: bitmap(delivered),
        vendors: Vec::new(),
    };
    a.save_delivered(vec![checkpoint(&[1, 2], &[1])], Vec::new())
        .await
        .expect("a");
    b.save_delivered(vec![checkpoint(&[3], &[3])], Vec::new())
        .await
        .expect("b");
    let seen = |p: &pigeon_store::StoredPush| {
        (
            p.sent.iter().collect::<Vec<_>>(),
            p.delivered.iter().collect::<Vec<_>>(),
        )
    };
    let one = b.load_push("k", 7).await.expect("load").expect("there");
    assert_eq!(seen(&one), (vec![1, 2, 3], vec![1, 3]));
    // A node replaces only its own row.
    a.save_delivered(vec![checkpoint(&[1, 2, 4], &[1, 2])], Vec::new())
        .await
        .expect("a again");
    for s in [&a, &b] {
        let live = s.load_live_pushes("k", 0).await.expect("live");
        assert_eq!(live.len(), 1);
        assert_eq!(seen(&live[0]), (vec![1, 2, 3, 4], vec![1, 2, 3]));
        let counts = s.push_counts_between("k", 0, 10_000).await.expect("counts");
        assert_eq!(
            (counts[0].targets, counts[0].sent, counts[0].delivered),
            (4, 4, 3)
        );
        let expired = s.expired_unreported("k", u64::MAX).await.expect("expired");
        assert_eq!(seen(&expired[0]), (vec![1, 2, 3, 4], vec![1, 2, 3]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cid_or_a_firing_is_used_once_across_nodes() {
    let url = common::fresh_db("cids").await;
    let (a, b) = (store(&url, "a").await, store(&url, "b").await);
    let everyone = bitmap(&[0]);
    a.issue_cids("k", (0..20).map(|i| format!("c{i}")).collect(), 1_000)
        .await
        .expect("issue");
    // Both nodes race to use each cid: exactly one push per cid is stored.
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        for (n, s) in [(0u64, a.clone()), (1, b.clone())] {
            let everyone = everyone.clone();
            tasks.push(tokio::spawn(async move {
                let mut p = push(100 + i * 2 + n);
                p.idempotency = Some(IdempotencyKey {
                    key: format!("c{i}"),
                    issued_only: true,
                });
                s.insert_push("k", &p, &everyone, Vec::new()).await
            }));
        }
    }
    let (mut stored, mut refused) = (0, 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(()) => stored += 1,
            Err(StoreError::Conflict(_)) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((stored, refused), (20, 20));
    for i in 0..20 {
        let used = b
            .find_cid("k", &format!("c{i}"), 0)
            .await
            .expect("find")
            .expect("known");
        let msg_id = used.expect("used");
        assert!(a.load_push("k", msg_id).await.expect("load").is_some());
    }
    // A key that is not pooled: taken once, whoever comes second is refused.
    let key = |msg_id| {
        let mut p = push(msg_id);
        p.idempotency = Some(IdempotencyKey {
            key: "request-1".into(),
            issued_only: false,
        });
        p
    };
    let (x, y) = tokio::join!(
        a.insert_push("k", &key(500), &everyone, Vec::new()),
        b.insert_push("k", &key(501), &everyone, Vec::new())
    );
    assert!(x.is_ok() != y.is_ok(), "exactly one stored: {x:?} {y:?}");

    // A schedule fired by two nodes at the same moment fires once.
    a.put_schedule(ScheduleRecord {
        schedule_id: "s".into(),
        app_key: "k".into(),
        name: "n".into(),
        enabled: true,
        trigger: Value::Null,
        push: Value::Null,
        created_ms: 1,
        next_ms: Some(1_000),
        door: "jpush".into(),
    })
    .await
    .expect("schedule");
    let firing = |msg_id| {
        let mut p = push(msg_id);
        p.schedule = Some(ScheduleFiring {
            schedule_id: "s".into(),
            due_ms: 1_000,
            next_ms: Some(2_000),
        });
        p
    };
    let (x, y) = tokio::join!(
        a.insert_push("k", &firing(600), &everyone, Vec::new()),
        b.insert_push("k", &firing(601), &everyone, Vec::new())
    );
    assert!(x.is_ok() != y.is_ok(), "fired once: {x:?} {y:?}");
    assert_eq!(a.schedule_runs("s").await.expect("runs").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_of_ids_never_overlap_across_nodes() {
    let url = common::fresh_db("blocks").await;
    let (a, b) = (store(&url, "a").await, store(&url, "b").await);
    a.put_device(device("k", 41)).await.expect("device");
    a.insert_push("k", &push(900), &bitmap(&[1]), Vec::new())
        .await
        .expect("push");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let o = s.reserve_ordinals("k", 10).await.expect("ordinals");
            let m = s.reserve_msg_ids(100, 0).await.expect("msg ids");
            (o, m)
        }));
    }
    let (mut ordinals, mut msg_ids) = (Vec::new(), Vec::new());
    for t in tasks {
        let (o, m) = t.await.expect("task");
        ordinals.push(o);
        msg_ids.push(m);
    }
    ordinals.sort_unstable();
    msg_ids.sort_unstable();
    assert_eq!(ordinals[0], 42, "above every stored ordinal");
    assert_eq!(msg_ids[0], 901, "above every stored msg_id");
    assert!(
        ordinals.windows(2).all(|w| w[1] - w[0] >= 10),
        "{ordinals:?}"
    );
    assert!(
        msg_ids.windows(2).all(|w| w[1] - w[0] >= 100),
        "{msg_ids:?}"
    );
    assert_eq!(b.reserve_msg_ids(1, 1 << 40).await.expect("floor"), 1 << 40);
}

/// What `changes_since` gives from `cursor` until it has nothing more, one `limit` at a
/// time; and the cursor it ends at.
async fn drain<S: FeedStore>(s: &S, mut cursor: u64, limit: usize) -> (Vec<Change>, u64) {
    let mut all = Vec::new();
    loop {
        let (changes, next) = s.changes_since(cursor, limit).await.expect("changes");
        assert!(next >= cursor, "the cursor never goes back");
        assert!(
            changes.len() <= limit || changes.len() > 65_536,
            "at most the limit"
        );
        let empty = changes.is_empty();
        all.extend(changes);
        cursor = next;
        if empty {
            return (all, cursor);
        }
    }
}

/// [`drain`] again and again until the changes seen include `expected` (the feed's horizon
/// is the server's: transactions of other tests may hold it back a while).
async fn drain_until<S: FeedStore>(
    s: &S,
    mut cursor: u64,
    limit: usize,
    expected: &BTreeSet<String>,
    mut seen: BTreeSet<String>,
) -> (BTreeSet<String>, u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (changes, next) = drain(s, cursor, limit).await;
        seen.extend(change_keys(&changes));
        cursor = next;
        if expected.is_subset(&seen) || tokio::time::Instant::now() > deadline {
            return (seen, cursor);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn change_keys(changes: &[Change]) -> BTreeSet<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Device(d) => format!("d {} {}", d.app_key, d.ordinal),
            Change::Push {
                app_key, msg_id, ..
            } => format!("p {app_key} {msg_id}"),
            Change::Geofence {
                app_key,
                geofence_id,
            } => format!("g {app_key} {geofence_id}"),
            Change::Saved { app_key, kind, id } => format!("s {app_key} {} {id}", kind.as_str()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_leaves_out_nothing_a_concurrent_writer_commits() {
    let url = common::fresh_db("feed").await;
    let (a, b) = (store(&url, "a").await, store(&url, "b").await);
    let start = a.feed_cursor().await.expect("cursor");

    // A transaction that stays open while later ones commit: the feed must not move past
    // it, so its change comes when it commits.
    let db = common::raw(&url).await;
    db.batch_execute(
        "BEGIN;
         INSERT INTO pushes (msg_id, app_key, sent_ms, expires_ms, body, audience)
         VALUES (1, 'slow', 0, 0, '{}', '\\x');",
    )
    .await
    .expect("an open transaction");
    a.put_device(device("k", 1)).await.expect("device");
    let (seen, cursor) = drain(&b, start, 10).await;
    assert!(
        seen.is_empty(),
        "nothing past the open transaction: {seen:?}"
    );
    db.batch_execute("COMMIT").await.expect("commit");
    let both: BTreeSet<String> = ["d k 1", "p slow 1"].map(String::from).into();
    let (seen, cursor) = drain_until(&b, cursor, 10, &both, BTreeSet::new()).await;
    assert_eq!(seen, both);

    // Writers on both nodes while a reader follows with a small limit: every change is
    // seen (some twice, which the contract allows).
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let s = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..50u32 {
                    let ordinal = 100 + w * 1000 + i;
                    if i % 3 == 0 {
                        let many = (0..3).map(|j| device("k", ordinal * 10 + j)).collect();
                        s.put_devices(many).await.expect("devices");
                    } else if i % 3 == 1 {
                        s.put_device(device("k", ordinal)).await.expect("device");
                    } else {
                        let msg_id = u64::from(ordinal);
                        s.insert_push("k", &push(msg_id), &bitmap(&[1]), Vec::new())
                            .await
                            .expect("push");
                        if i % 5 == 0 {
                            s.recall_push(msg_id, 5, Vec::new()).await.expect("recall");
                        }
                    }
                }
            })
        })
        .collect();
    let reader = {
        let a = a.clone();
        tokio::spawn(async move {
            let (mut seen, mut cursor) = (Vec::new(), cursor);
            for _ in 0..200 {
                let (changes, next) = a.changes_since(cursor, 7).await.expect("changes");
                assert!(changes.len() <= 7);
                seen.extend(changes);
                cursor = next;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (seen, cursor)
        })
    };
    for w in writers {
        w.await.expect("writer");
    }
    let (seen, cursor) = reader.await.expect("reader");
    let mut expected = BTreeSet::new();
    for w in 0..4u32 {
        for i in 0..50u32 {
            let ordinal = 100 + w * 1000 + i;
            match i % 3 {
                0 => expected.extend((0..3).map(|j| format!("d k {}", ordinal * 10 + j))),
                1 => {
                    expected.insert(format!("d k {ordinal}"));
                }
                _ => {
                    expected.insert(format!("p k {ordinal}"));
                }
            }
        }
    }
    let (seen, _) = drain_until(&a, cursor, 7, &expected, change_keys(&seen)).await;
    let missing: Vec<_> = expected.difference(&seen).collect();
    assert!(missing.is_empty(), "left out: {missing:?}");

    // A device changed again is given again, as it is now.
    let cursor = a.feed_cursor().await.expect("cursor");
    let mut d = device("k", 1);
    d.alias = Some("now".into());
    b.put_device(d).await.expect("device");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let changes = loop {
        let (changes, _) = drain(&a, cursor, 10).await;
        if !changes.is_empty() || tokio::time::Instant::now() > deadline {
            break changes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        matches!(&changes[..], [Change::Device(d)] if d.alias.as_deref() == Some("now")),
        "{changes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_gives_a_transaction_larger_than_its_numbering_whole() {
    let url = common::fresh_db("bigtx").await;
    let s = store(&url, "a").await;
    let cursor = s.feed_cursor().await.expect("cursor");
    let n = 65_536 + 100;
    s.put_devices((0..n).map(|o| device("k", o)).collect())
        .await
        .expect("devices");
    s.put_device(device("k", n)).await.expect("one more");
    let expected: BTreeSet<String> = (0..=n).map(|o| format!("d k {o}")).collect();
    let (keys, _) = drain_until(&s, cursor, 1_000, &expected, BTreeSet::new()).await;
    assert_eq!(keys, expected, "every device, the last one too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_numbers_events_in_the_order_they_become_visible() {
    let url = common::fresh_db("outbox").await;
    let (a, b) = (store(&url, "a").await, store(&url, "b").await);
    // Events are numbered once committed: those of a transaction still open come after
    // those committed meanwhile, so a reader's cursor never passes one still to come.
    let db = common::raw(&url).await;
    db.batch_execute(
        "BEGIN;
         SELECT pigeon_write_events(ARRAY['k'], ARRAY[0::bigint], ARRAY['Push.Event'],
             ARRAY[1::bigint], ARRAY[1], ARRAY['{\"N\":0}']);",
    )
    .await
    .expect("an open transaction");
    a.append_events(vec![event("k", 1)]).await.expect("append");
    let seen = b
        .events_after("k", None, "Push.Event", 0, 100)
        .await
        .expect("events");
    let bodies: Vec<_> = seen.iter().map(|e| (e.id, e.body.as_str())).collect();
    assert_eq!(bodies, [(1, r#"{"N":1}"#)]);
    db.batch_execute("COMMIT").await.expect("commit");
    let seen = b
        .events_after("k", None, "Push.Event", 1, 100)
        .await
        .expect("events");
    let bodies: Vec<_> = seen.iter().map(|e| (e.id, e.body.as_str())).collect();
    assert_eq!(bodies, [(2, r#"{"N":0}"#)]);

    // Writers on two nodes, a reader following its cursor: every event once, in order.
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let s = if w % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                for i in 0..40u64 {
                    let n = 100 + w * 1000 + i;
                    if i % 2 == 0 {
                        s.append_events(vec![event("k", n)]).await.expect("append");
                    } else {
                        s.insert_push("k", &push(n), &bitmap(&[1]), vec![event("k", n)])
                            .await
                            .expect("push");
                    }
                }
            })
        })
        .collect();
    let follow = |s: PostgresStore, mut after: u64, rounds: usize| async move {
        let mut got = Vec::new();
        for _ in 0..rounds {
            let events = s
                .events_after("k", None, "Push.Event", after, 5)
                .await
                .expect("events");
            if let Some(last) = events.last() {
                after = last.id;
            }
            got.extend(events);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (got, after)
    };
    let reader = tokio::spawn(follow(a.clone(), 2, 100));
    for w in writers {
        w.await.expect("writer");
    }
    let (mut got, after) = reader.await.expect("reader");
    let (rest, _) = follow(b.clone(), after, 100).await;
    got.extend(rest);
    assert!(
        got.windows(2).all(|w| w[1].id == w[0].id + 1),
        "consecutive ids"
    );
    let bodies: BTreeSet<String> = got.iter().map(|e| e.body.clone()).collect();
    assert_eq!(bodies.len(), got.len(), "each event once");
    assert_eq!(got.len(), 160, "every event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_fences_a_node_that_lost_it() {
    let url = common::fresh_db("lease").await;
    let (a, b) = (store(&url, "a").await, store(&url, "b").await);
    assert_eq!(a.take_lease("job", "a", 300).await.expect("take"), Some(1));
    assert_eq!(b.take_lease("job", "b", 300).await.expect("take"), None);
    assert_eq!(a.take_lease("job", "a", 300).await.expect("renew"), Some(1));
    assert!(b.lease_holds("job", 1).await.expect("holds"));
    // a pauses past its lease; b takes it over with a larger token, and a's is dead.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(!a.lease_holds("job", 1).await.expect("holds"));
    assert_eq!(
        b.take_lease("job", "b", 60_000).await.expect("take"),
        Some(2)
    );
    assert!(!a.lease_holds("job", 1).await.expect("holds"));
    assert!(a.lease_holds("job", 2).await.expect("holds"));
    assert_eq!(a.take_lease("job", "a", 60_000).await.expect("take"), None);
    assert!(!a.release_lease("job", "a").await.expect("release"));
    assert!(b.release_lease("job", "b").await.expect("release"));
    assert_eq!(
        a.take_lease("job", "a", 60_000).await.expect("take"),
        Some(3)
    );
    let leases = b.leases().await.expect("leases");
    assert_eq!(
        leases
            .iter()
            .map(|l| (l.name.as_str(), l.holder.as_str(), l.token))
            .collect::<Vec<_>>(),
        [("job", "a", 3)]
    );

    // Many nodes racing for a free lease: one gets it.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let s = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { s.take_lease("race", &format!("n{i}"), 60_000).await })
        })
        .collect();
    let mut winners = 0;
    for r in racers {
        if r.await.expect("task").expect("take").is_some() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_counts_only_nodes_whose_lease_is_live() {
    let url = common::fresh_db("presence").await;
    let (a, b) = (store(&url, "a").await, store(&url, "b").await);
    a.take_lease("node:a", "a", 60_000).await.expect("lease a");
    b.take_lease("node:b", "b", 300).await.expect("lease b");
    a.set_presence("a", vec![("k".into(), 1, true), ("k".into(), 2, true)])
        .await
        .expect("a");
    b.set_presence("b", vec![("k".into(), 3, true)])
        .await
        .expect("b");
    assert_eq!(
        a.presence("k", vec![3, 2, 1, 9]).await.expect("presence"),
        [(3, "b".into()), (2, "a".into()), (1, "a".into())]
    );
    // b stops renewing (it died): its devices no longer count.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        a.presence("k", vec![3, 2, 1]).await.expect("presence"),
        [(2, "a".into()), (1, "a".into())]
    );
    // Device 2 moves to b, which comes back; a leaving it does not clear b's row.
    b.take_lease("node:b", "b", 60_000).await.expect("lease b");
    b.set_presence("b", vec![("k".into(), 2, true)])
        .await
        .expect("b");
    a.set_presence("a", vec![("k".into(), 2, false)])
        .await
        .expect("a");
    assert_eq!(
        b.presence("k", vec![1, 2, 3]).await.expect("presence"),
        [(1, "a".into()), (2, "b".into()), (3, "b".into())]
    );
    b.clear_presence("b").await.expect("clear");
    assert_eq!(
        b.presence("k", vec![1, 2, 3]).await.expect("presence"),
        [(1, "a".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_and_a_closed_store_is_closed() {
    // Nothing listens on port 1.
    match PostgresStore::connect("postgres://postgres@127.0.0.1:1/none", "a").await {
        Err(StoreError::Unavailable(why)) => assert!(!why.is_empty()),
        other => panic!("expected Unavailable: {other:?}"),
    }
    assert!(matches!(
        PostgresStore::connect("not a url at all ://", "a").await,
        Err(StoreError::Backend(_))
    ));

    let url = common::fresh_db("close").await;
    let s = store(&url, "a").await;
    let app = AppRecord {
        app_key: "k".into(),
        master_secret: "s".into(),
        name: "n".into(),
        created_ms: 1,
    };
    s.create_app(app.clone()).await.expect("app");
    // The server ends every connection of the database (a restart, a failover): the
    // calls that hit a dead connection fail as Unavailable, and the pool then reconnects.
    let db = common::raw(&common::server_url()).await;
    let name = url.rsplit('/').next().unwrap_or_default().to_string();
    db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()",
        &[&name],
    )
    .await
    .expect("terminate");
    let mut answers = Vec::new();
    for _ in 0..(pigeon_store_postgres::POOL_SIZE + 2) {
        answers.push(s.find_app("k").await);
    }
    for a in &answers {
        match a {
            Ok(found) => assert_eq!(found.as_ref(), Some(&app)),
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => panic!("a lost connection is Unavailable: {e}"),
        }
    }
    assert!(answers.last().is_some_and(|a| a.is_ok()), "reconnected");
    s.close().await.expect("close");
    assert!(matches!(s.find_app("k").await, Err(StoreError::Closed)));
    assert!(matches!(s.create_app(app).await, Err(StoreError::Closed)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_committed_together_are_refused_one_by_one() {
    let url = common::fresh_db("group").await;
    let s = store(&url, "a").await;
    let everyone = bitmap(&[1, 2]);
    // 48 new pushes and 16 that reuse a msg_id, all at once, each with an event.
    let tasks: Vec<_> = (0..64u64)
        .map(|i| {
            let (s, everyone) = (s.clone(), everyone.clone());
            tokio::spawn(async move {
                let msg_id = if i < 48 { 1 + i } else { 1 + (i - 48) };
                let mut p = push(msg_id);
                p.labels.name = Some(format!("task {i}"));
                let result = s
                    .insert_push("k", &p, &everyone, vec![event("k", 1_000 + i)])
                    .await;
                (i, result)
            })
        })
        .collect();
    let mut refused = BTreeSet::new();
    for t in tasks {
        match t.await.expect("task") {
            (_, Ok(())) => {}
            (i, Err(StoreError::Conflict(_))) => {
                refused.insert(i);
            }
            (i, Err(e)) => panic!("push {i}: {e}"),
        }
    }
    // Which of two pushes of one msg_id came first is a race; one of each pair is refused.
    assert_eq!(refused.len(), 16, "{refused:?}");
    let stored_events: BTreeSet<u64> = s
        .events_after("k", None, "Push.Event", 0, 1_000)
        .await
        .expect("events")
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(&e.body).expect("json");
            v["N"].as_u64().expect("N") - 1_000
        })
        .collect();
    let stored: BTreeSet<u64> = (0..64).filter(|i| !refused.contains(i)).collect();
    assert_eq!(
        stored_events, stored,
        "the events of the stored pushes, and only those"
    );
    for msg_id in 1..=48 {
        let p = s
            .load_push("k", msg_id)
            .await
            .expect("load")
            .expect("stored");
        let name = p.push.labels.name.expect("name");
        let task: u64 = name.trim_start_matches("task ").parse().expect("task");
        assert!(stored.contains(&task));
    }
    // They were committed in groups, not one transaction each.
    let db = common::raw(&url).await;
    let transactions: i64 = db
        .query_one("SELECT COUNT(DISTINCT change_id >> 16) FROM pushes", &[])
        .await
        .expect("count")
        .get(0);
    assert!(
        transactions < 48,
        "{transactions} transactions for 48 pushes"
    );
}
