//! Segments and A/B tests, and the pushes of each test (the `SavedAudienceStore` port).

use crate::{assert_conflict, bitmap, push, Backend, DynStore, NODE_B};
use pigeon_core::{
    Audience, AudienceExpr, Content, IdempotencyKey, Message, Notification, Platform, Push, Split,
    Variant,
};
use pigeon_store::{AbTestRecord, Change, SavedKind, SegmentRecord};
use serde_json::{json, Map};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A segment with every field set.
pub fn segment(app_key: &str, segment_id: &str, created_ms: u64) -> SegmentRecord {
    SegmentRecord {
        app_key: app_key.into(),
        segment_id: segment_id.into(),
        name: format!("Segment {segment_id}"),
        audience: Audience::Expr(AudienceExpr {
            tag: vec!["vip".into(), "beta".into()],
            tag_not: vec!["churned".into()],
            region: vec!["11000000".into()],
            ..Default::default()
        }),
        created_ms,
    }
}

/// The variants of a test: a notification for one platform and a message, a notification
/// alone for another platform, a message alone.
pub fn variants(abtest_id: &str) -> Vec<Variant> {
    let mut extras = Map::new();
    extras.insert("variant".into(), json!("A"));
    extras.insert("deep".into(), json!({"list": [1, 2.5, null], "s": "x"}));
    let android = Notification {
        title: Some(format!("{abtest_id}: A")),
        body: "Half price today".into(),
        extras: extras.clone(),
        sound: Some("ding".into()),
        channel_id: Some("promotions".into()),
        priority: Some(1),
        ..Default::default()
    };
    let ios = Notification {
        title: Some(format!("{abtest_id}: B")),
        body: "Two for one".into(),
        category: Some("offer".into()),
        ..Default::default()
    };
    let message = |content: &str| Message {
        content: content.into(),
        title: Some("sale".into()),
        content_type: Some("text".into()),
        extras: extras.clone(),
    };
    vec![
        Variant {
            name: "A".into(),
            weight: 40,
            content: Content {
                notifications: [(Platform::Android, android)].into_iter().collect(),
                message: Some(message("variant A")),
                vendor_notification: None,
            },
        },
        Variant {
            name: "B".into(),
            weight: 40,
            content: Content {
                notifications: [(Platform::Ios, ios)].into_iter().collect(),
                ..Default::default()
            },
        },
        Variant {
            name: "C".into(),
            weight: 10,
            content: Content {
                message: Some(message("variant C")),
                ..Default::default()
            },
        },
    ]
}

/// An A/B test with every field set.
pub fn abtest(app_key: &str, abtest_id: &str, created_ms: u64) -> AbTestRecord {
    AbTestRecord {
        app_key: app_key.into(),
        abtest_id: abtest_id.into(),
        name: format!("Test {abtest_id}"),
        audience: Audience::Expr(AudienceExpr {
            tag: vec!["shoppers".into()],
            segment: Some("s1".into()),
            ..Default::default()
        }),
        variants: variants(abtest_id),
        control_weight: 10,
        created_ms,
        given: json!({
            "abtest_id": abtest_id,
            "variants": [
                {"name": "A", "weight": 40, "notification": {"android": {"alert": "Half price"}}},
                {"name": "B", "weight": 40, "options": {"nested": {"a": [1, {"b": null}], "f": 0.5}}},
                {"name": "C", "weight": 10, "message": {"msg_content": "variant C"}}
            ],
            "control": 10,
        }),
    }
}

/// A push to A/B test `abtest_id`, with its variants' content.
pub fn split_push(msg_id: u64, sent_ms: u64, abtest_id: &str) -> Push {
    let mut p = push(msg_id, sent_ms, 600);
    p.split = Some(Box::new(Split {
        abtest_id: abtest_id.into(),
        variants: variants(abtest_id),
        control_targeted: 7,
    }));
    p
}

/// `split_push` with a cid of the pool.
fn keyed_split_push(msg_id: u64, sent_ms: u64, abtest_id: &str, cid: &str) -> Push {
    let mut p = split_push(msg_id, sent_ms, abtest_id);
    p.idempotency = Some(IdempotencyKey {
        key: cid.into(),
        issued_only: true,
    });
    p
}

/// A saved audience named by the feed: (app, kind, id).
type Saved = (String, &'static str, String);

/// The segments and tests the feed names from `cursor` on (read `limit` at a time), and
/// where it ends.
async fn saved_changes(store: &DynStore, mut cursor: u64, limit: usize) -> (BTreeSet<Saved>, u64) {
    let mut seen = BTreeSet::new();
    loop {
        let (page, next) = store.changes_since(cursor, limit).await.unwrap();
        assert!(page.len() <= limit, "{} > {limit}", page.len());
        if page.is_empty() {
            return (seen, next.max(cursor));
        }
        assert!(next > cursor, "a non-empty page moves the cursor");
        cursor = next;
        for c in page {
            if let Change::Saved { app_key, kind, id } = c {
                seen.insert((app_key, kind.as_str(), id));
            }
        }
    }
}

fn saved(v: &[(&str, SavedKind, &str)]) -> BTreeSet<Saved> {
    v.iter()
        .map(|(a, k, id)| (a.to_string(), k.as_str(), id.to_string()))
        .collect()
}

pub async fn segments_are_put_got_and_listed_oldest_first(store: DynStore) {
    assert!(store.list_segments("k").await.unwrap().is_empty());
    assert_eq!(store.get_segment("k", "s1").await.unwrap(), None);
    let (s2, s1, s0) = (
        segment("k", "s2", 200),
        segment("k", "s1", 100),
        segment("k", "s0", 200),
    );
    let theirs = segment("other", "s1", 50);
    for s in [&s2, &s1, &theirs, &s0] {
        store.put_segment(s.clone()).await.unwrap();
    }
    // Read back as given, every field.
    assert_eq!(
        store.get_segment("k", "s1").await.unwrap(),
        Some(s1.clone())
    );
    assert_eq!(
        store.get_segment("other", "s1").await.unwrap(),
        Some(theirs.clone())
    );
    // Oldest first (ties by id); another app's segments are not listed nor found.
    assert_eq!(
        store.list_segments("k").await.unwrap(),
        [s1.clone(), s0.clone(), s2.clone()]
    );
    assert_eq!(store.list_segments("other").await.unwrap(), [theirs]);
    assert_eq!(store.get_segment("other", "s2").await.unwrap(), None);
    assert!(store.list_segments("nobody").await.unwrap().is_empty());
    // They are segments, not tests.
    assert_eq!(store.get_abtest("k", "s1").await.unwrap(), None);
    assert!(store.list_abtests("k").await.unwrap().is_empty());
}

pub async fn a_replaced_segment_reads_back_the_new_one(store: DynStore) {
    store.put_segment(segment("k", "s1", 100)).await.unwrap();
    store.put_segment(segment("k", "s2", 200)).await.unwrap();
    store
        .put_segment(segment("other", "s2", 200))
        .await
        .unwrap();
    let mut changed = segment("k", "s2", 50);
    changed.name = "renamed".into();
    changed.audience = Audience::Expr(AudienceExpr {
        alias: vec!["alice".into()],
        region_not: vec!["31000000".into()],
        ..Default::default()
    });
    store.put_segment(changed.clone()).await.unwrap();
    assert_eq!(
        store.get_segment("k", "s2").await.unwrap(),
        Some(changed.clone())
    );
    // Its created_ms is the one given now: it moves in the list.
    assert_eq!(
        store.list_segments("k").await.unwrap(),
        [changed.clone(), segment("k", "s1", 100)]
    );
    // Another app's segment of the same id is untouched.
    assert_eq!(
        store.get_segment("other", "s2").await.unwrap(),
        Some(segment("other", "s2", 200))
    );
    // Replaced again, by the audience of everyone.
    let all = SegmentRecord {
        audience: Audience::All,
        ..changed
    };
    store.put_segment(all.clone()).await.unwrap();
    assert_eq!(store.get_segment("k", "s2").await.unwrap(), Some(all));
    assert_eq!(store.list_segments("k").await.unwrap().len(), 2);
}

pub async fn a_segment_is_deleted_once(store: DynStore) {
    store.put_segment(segment("k", "s1", 100)).await.unwrap();
    store.put_segment(segment("k", "s2", 200)).await.unwrap();
    store
        .put_segment(segment("other", "s1", 100))
        .await
        .unwrap();
    // Not an unknown one, not one of an unknown app, not a test of that id.
    assert!(!store
        .delete_saved("nobody", SavedKind::Segment, "s1")
        .await
        .unwrap());
    assert!(!store
        .delete_saved("k", SavedKind::Segment, "s9")
        .await
        .unwrap());
    assert!(!store
        .delete_saved("k", SavedKind::AbTest, "s1")
        .await
        .unwrap());
    assert!(store
        .delete_saved("k", SavedKind::Segment, "s1")
        .await
        .unwrap());
    assert_eq!(store.get_segment("k", "s1").await.unwrap(), None);
    assert_eq!(
        store.list_segments("k").await.unwrap(),
        [segment("k", "s2", 200)]
    );
    // Another app's of the same id stays.
    assert_eq!(
        store.get_segment("other", "s1").await.unwrap(),
        Some(segment("other", "s1", 100))
    );
    assert_eq!(
        store.list_segments("other").await.unwrap(),
        [segment("other", "s1", 100)]
    );
    // Once.
    assert!(!store
        .delete_saved("k", SavedKind::Segment, "s1")
        .await
        .unwrap());
    // Put again, it is the new one.
    let mut again = segment("k", "s1", 300);
    again.name = "again".into();
    store.put_segment(again.clone()).await.unwrap();
    assert_eq!(
        store.get_segment("k", "s1").await.unwrap(),
        Some(again.clone())
    );
    assert_eq!(
        store.list_segments("k").await.unwrap(),
        [segment("k", "s2", 200), again]
    );
    assert!(store
        .delete_saved("k", SavedKind::Segment, "s1")
        .await
        .unwrap());
    assert!(store
        .delete_saved("k", SavedKind::Segment, "s2")
        .await
        .unwrap());
    assert!(store.list_segments("k").await.unwrap().is_empty());
}

pub async fn abtests_are_put_got_and_listed_oldest_first(store: DynStore) {
    assert!(store.list_abtests("k").await.unwrap().is_empty());
    assert_eq!(store.get_abtest("k", "t1").await.unwrap(), None);
    let (t2, t1, t0) = (
        abtest("k", "t2", 200),
        abtest("k", "t1", 100),
        abtest("k", "t0", 200),
    );
    let theirs = abtest("other", "t1", 50);
    for t in [&t2, &t1, &theirs, &t0] {
        store.put_abtest(t.clone()).await.unwrap();
    }
    // Read back as given, every field: the variants' content, the nested `given`.
    let got = store.get_abtest("k", "t1").await.unwrap();
    assert_eq!(got, Some(t1.clone()));
    let got = got.unwrap();
    assert_eq!(got.variants, variants("t1"));
    assert_eq!(got.given, t1.given);
    assert_eq!(
        store.get_abtest("other", "t1").await.unwrap(),
        Some(theirs.clone())
    );
    // Oldest first (ties by id); another app's tests are not listed nor found.
    assert_eq!(
        store.list_abtests("k").await.unwrap(),
        [t1.clone(), t0.clone(), t2.clone()]
    );
    assert_eq!(store.list_abtests("other").await.unwrap(), [theirs]);
    assert_eq!(store.get_abtest("other", "t2").await.unwrap(), None);
    assert!(store.list_abtests("nobody").await.unwrap().is_empty());
    // They are tests, not segments.
    assert_eq!(store.get_segment("k", "t1").await.unwrap(), None);
    assert!(store.list_segments("k").await.unwrap().is_empty());
}

pub async fn an_abtest_is_deleted_once(store: DynStore) {
    store.put_abtest(abtest("k", "t1", 100)).await.unwrap();
    store.put_abtest(abtest("k", "t2", 200)).await.unwrap();
    store.put_abtest(abtest("other", "t1", 100)).await.unwrap();
    assert!(!store
        .delete_saved("nobody", SavedKind::AbTest, "t1")
        .await
        .unwrap());
    assert!(!store
        .delete_saved("k", SavedKind::AbTest, "t9")
        .await
        .unwrap());
    assert!(!store
        .delete_saved("k", SavedKind::Segment, "t1")
        .await
        .unwrap());
    assert!(store
        .delete_saved("k", SavedKind::AbTest, "t1")
        .await
        .unwrap());
    assert_eq!(store.get_abtest("k", "t1").await.unwrap(), None);
    assert_eq!(
        store.list_abtests("k").await.unwrap(),
        [abtest("k", "t2", 200)]
    );
    assert_eq!(
        store.get_abtest("other", "t1").await.unwrap(),
        Some(abtest("other", "t1", 100))
    );
    // Once.
    assert!(!store
        .delete_saved("k", SavedKind::AbTest, "t1")
        .await
        .unwrap());
    // Created again after its delete: the new test, with its own variants.
    let mut again = abtest("k", "t1", 300);
    again.variants.truncate(2);
    again.variants[1].weight = 50;
    again.control_weight = 10;
    again.given = json!({"again": [true, {"n": 2}]});
    store.put_abtest(again.clone()).await.unwrap();
    assert_eq!(
        store.get_abtest("k", "t1").await.unwrap(),
        Some(again.clone())
    );
    assert_eq!(
        store.list_abtests("k").await.unwrap(),
        [abtest("k", "t2", 200), again]
    );
}

pub async fn segments_and_abtests_of_one_id_do_not_collide(store: DynStore) {
    let (seg, test) = (segment("k", "x", 100), abtest("k", "x", 200));
    store.put_segment(seg.clone()).await.unwrap();
    store.put_abtest(test.clone()).await.unwrap();
    assert_eq!(
        store.get_segment("k", "x").await.unwrap(),
        Some(seg.clone())
    );
    assert_eq!(
        store.get_abtest("k", "x").await.unwrap(),
        Some(test.clone())
    );
    assert_eq!(
        store.list_segments("k").await.unwrap(),
        std::slice::from_ref(&seg)
    );
    assert_eq!(
        store.list_abtests("k").await.unwrap(),
        std::slice::from_ref(&test)
    );
    // Replacing the segment leaves the test as it was.
    let mut renamed = segment("k", "x", 150);
    renamed.name = "renamed".into();
    store.put_segment(renamed.clone()).await.unwrap();
    assert_eq!(
        store.get_segment("k", "x").await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(
        store.get_abtest("k", "x").await.unwrap(),
        Some(test.clone())
    );
    // Deleting the test leaves the segment.
    assert!(store
        .delete_saved("k", SavedKind::AbTest, "x")
        .await
        .unwrap());
    assert_eq!(store.get_abtest("k", "x").await.unwrap(), None);
    assert!(store.list_abtests("k").await.unwrap().is_empty());
    assert_eq!(
        store.get_segment("k", "x").await.unwrap(),
        Some(renamed.clone())
    );
    assert_eq!(
        store.list_segments("k").await.unwrap(),
        std::slice::from_ref(&renamed)
    );
    assert!(!store
        .delete_saved("k", SavedKind::AbTest, "x")
        .await
        .unwrap());
    // The test again, then deleting the segment leaves the test.
    store.put_abtest(test.clone()).await.unwrap();
    assert!(store
        .delete_saved("k", SavedKind::Segment, "x")
        .await
        .unwrap());
    assert_eq!(store.get_segment("k", "x").await.unwrap(), None);
    assert!(store.list_segments("k").await.unwrap().is_empty());
    assert_eq!(
        store.get_abtest("k", "x").await.unwrap(),
        Some(test.clone())
    );
    assert_eq!(store.list_abtests("k").await.unwrap(), [test]);
    assert!(!store
        .delete_saved("k", SavedKind::Segment, "x")
        .await
        .unwrap());
}

pub async fn abtest_pushes_are_the_pushes_naming_the_test(store: DynStore) {
    let one = bitmap([1]);
    assert!(store.abtest_pushes("k", "t1").await.unwrap().is_empty());
    // The test itself is stored, as the engine does; its pushes are the ones naming it.
    store.put_abtest(abtest("k", "t1", 100)).await.unwrap();
    // Stored out of order; listed oldest first.
    let pushes = [
        ("k", split_push(30, 30_000, "t1")),
        ("k", split_push(10, 10_000, "t1")),
        ("k", push(15, 15_000, 600)),
        ("k", split_push(20, 20_000, "t2")),
        ("other", split_push(40, 40_000, "t1")),
        ("other", push(41, 41_000, 600)),
        ("k", split_push(25, 25_000, "t1")),
    ];
    for (app, p) in &pushes {
        store.insert_push(app, p, &one, Vec::new()).await.unwrap();
    }
    assert_eq!(store.abtest_pushes("k", "t1").await.unwrap(), [10, 25, 30]);
    assert_eq!(store.abtest_pushes("k", "t2").await.unwrap(), [20]);
    assert_eq!(store.abtest_pushes("other", "t1").await.unwrap(), [40]);
    assert!(store.abtest_pushes("other", "t2").await.unwrap().is_empty());
    assert!(store.abtest_pushes("k", "t9").await.unwrap().is_empty());
    assert!(store
        .abtest_pushes("nobody", "t1")
        .await
        .unwrap()
        .is_empty());
    // The push keeps its split, every variant's content.
    let stored = store.load_push("k", 10).await.unwrap().unwrap();
    assert_eq!(stored.push, split_push(10, 10_000, "t1"));
    assert_eq!(
        store.load_push("k", 15).await.unwrap().unwrap().push.split,
        None
    );

    // A push refused for its msg_id (taken by this app's push, or another app's) leaves no
    // place in its test.
    let dup = store
        .insert_push("k", &split_push(15, 50_000, "t1"), &one, Vec::new())
        .await;
    assert!(dup.is_err(), "{dup:?}");
    let dup = store
        .insert_push("k", &split_push(20, 50_000, "t3"), &one, Vec::new())
        .await;
    assert!(dup.is_err(), "{dup:?}");
    let dup = store
        .insert_push("other", &split_push(30, 50_000, "t1"), &one, Vec::new())
        .await;
    assert!(dup.is_err(), "{dup:?}");
    assert_eq!(store.abtest_pushes("k", "t1").await.unwrap(), [10, 25, 30]);
    assert!(store.abtest_pushes("k", "t3").await.unwrap().is_empty());
    assert_eq!(store.abtest_pushes("other", "t1").await.unwrap(), [40]);

    // A push refused for its used cid (after its row was written) leaves none either.
    store.issue_cids("k", vec!["c1".into()], 1).await.unwrap();
    store
        .insert_push(
            "k",
            &keyed_split_push(50, 50_000, "t1", "c1"),
            &one,
            Vec::new(),
        )
        .await
        .unwrap();
    assert_conflict(
        store
            .insert_push(
                "k",
                &keyed_split_push(51, 51_000, "t1", "c1"),
                &one,
                Vec::new(),
            )
            .await,
        "a used cid",
    );
    assert_conflict(
        store
            .insert_push(
                "k",
                &keyed_split_push(52, 52_000, "t4", "c1"),
                &one,
                Vec::new(),
            )
            .await,
        "a used cid",
    );
    assert!(store.load_push("k", 51).await.unwrap().is_none());
    assert_eq!(
        store.abtest_pushes("k", "t1").await.unwrap(),
        [10, 25, 30, 50]
    );
    assert!(store.abtest_pushes("k", "t4").await.unwrap().is_empty());
    assert_eq!(store.abtest_pushes("k", "t2").await.unwrap(), [20]);
}

pub async fn abtest_pushes_stored_at_once_keep_only_the_stored_ones(store: DynStore) {
    // Pushes of one moment (an adapter may write them in one transaction): every other one
    // refused for a used cid; only the stored ones are the test's.
    const PUSHES: u64 = 24;
    let cids: Vec<String> = (0..PUSHES / 2).map(|i| format!("c{i}")).collect();
    store.issue_cids("k", cids, 1).await.unwrap();
    for i in 0..PUSHES / 2 {
        // The used ones.
        store
            .insert_push(
                "k",
                &keyed_split_push(1_000 + i, 1_000, "warmup", &format!("c{i}")),
                &bitmap([1]),
                Vec::new(),
            )
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..PUSHES {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let msg_id = 100 + i;
            let p = if i % 2 == 0 {
                split_push(msg_id, 2_000 + i, "t1")
            } else {
                keyed_split_push(msg_id, 2_000 + i, "t1", &format!("c{}", i / 2))
            };
            let app = if i % 3 == 0 { "other" } else { "k" };
            let stored = store.insert_push(app, &p, &bitmap([1]), Vec::new()).await;
            (app, msg_id, stored.is_ok())
        }));
    }
    let mut want: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for t in tasks {
        let (app, msg_id, stored) = t.await.unwrap();
        // Every keyed push of app "k" uses a used cid; of "other", a cid never issued there.
        assert_eq!(stored, (msg_id - 100) % 2 == 0, "push {msg_id} of {app}");
        if stored {
            want.entry(app).or_default().push(msg_id);
        }
    }
    for ids in want.values_mut() {
        ids.sort();
    }
    assert_eq!(store.abtest_pushes("k", "t1").await.unwrap(), want["k"]);
    assert_eq!(
        store.abtest_pushes("other", "t1").await.unwrap(),
        want["other"]
    );
    assert_eq!(
        store.abtest_pushes("k", "warmup").await.unwrap(),
        (1_000..1_000 + PUSHES / 2).collect::<Vec<_>>()
    );
}

pub async fn the_feed_reports_segments_and_abtests_created_replaced_and_deleted(store: DynStore) {
    store.put_segment(segment("k", "before", 1)).await.unwrap();
    store.put_abtest(abtest("k", "before", 1)).await.unwrap();
    let start = store.feed_cursor().await.unwrap();
    let (nothing, _) = saved_changes(&store, start, 100).await;
    assert!(nothing.is_empty(), "{nothing:?}");

    store.put_segment(segment("k", "s1", 100)).await.unwrap();
    store.put_segment(segment("k", "s2", 100)).await.unwrap();
    store
        .put_segment(segment("other", "s1", 100))
        .await
        .unwrap();
    store.put_abtest(abtest("k", "t1", 100)).await.unwrap();
    store.put_abtest(abtest("k", "t2", 100)).await.unwrap();
    // A test of a segment's id.
    store.put_abtest(abtest("k", "s1", 100)).await.unwrap();
    let mut s1 = segment("k", "s1", 100);
    s1.name = "replaced".into();
    store.put_segment(s1).await.unwrap();
    assert!(store
        .delete_saved("k", SavedKind::Segment, "s2")
        .await
        .unwrap());
    assert!(store
        .delete_saved("k", SavedKind::AbTest, "t2")
        .await
        .unwrap());
    let want = saved(&[
        ("k", SavedKind::Segment, "s1"),
        ("k", SavedKind::Segment, "s2"),
        ("other", SavedKind::Segment, "s1"),
        ("k", SavedKind::AbTest, "t1"),
        ("k", SavedKind::AbTest, "t2"),
        ("k", SavedKind::AbTest, "s1"),
    ]);
    for limit in [1, 2, 3, 100] {
        let (seen, _) = saved_changes(&store, start, limit).await;
        assert_eq!(seen, want, "limit {limit}");
    }

    // A push of a test is no change of the test; a delete that found nothing (none, gone
    // already, or of the other kind) is no change.
    let (_, end) = saved_changes(&store, start, 100).await;
    store
        .insert_push("k", &split_push(1, 1_000, "t1"), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert!(!store
        .delete_saved("k", SavedKind::Segment, "s2")
        .await
        .unwrap());
    assert!(!store
        .delete_saved("k", SavedKind::AbTest, "t2")
        .await
        .unwrap());
    assert!(!store
        .delete_saved("k", SavedKind::Segment, "t1")
        .await
        .unwrap());
    assert!(!store
        .delete_saved("k", SavedKind::AbTest, "nothing")
        .await
        .unwrap());
    let (seen, end) = saved_changes(&store, end, 100).await;
    assert!(seen.is_empty(), "{seen:?}");

    // A delete after the cursor is reported, though it is gone, as its own kind.
    assert!(store
        .delete_saved("k", SavedKind::Segment, "before")
        .await
        .unwrap());
    let (seen, end) = saved_changes(&store, end, 100).await;
    assert_eq!(seen, saved(&[("k", SavedKind::Segment, "before")]));
    assert!(store
        .delete_saved("k", SavedKind::AbTest, "before")
        .await
        .unwrap());
    let (seen, end) = saved_changes(&store, end, 100).await;
    assert_eq!(seen, saved(&[("k", SavedKind::AbTest, "before")]));

    // And one put again after its delete.
    store.put_segment(segment("k", "s2", 300)).await.unwrap();
    store.put_abtest(abtest("k", "t2", 300)).await.unwrap();
    for limit in [1, 100] {
        let (seen, _) = saved_changes(&store, end, limit).await;
        assert_eq!(
            seen,
            saved(&[
                ("k", SavedKind::Segment, "s2"),
                ("k", SavedKind::AbTest, "t2")
            ]),
            "limit {limit}"
        );
    }
}

pub async fn saved_audience_writes_of_one_node_are_seen_by_the_other(
    store: DynStore,
    nodes: Arc<dyn Backend>,
) {
    let b = nodes.open(NODE_B).await;
    let start = b.feed_cursor().await.unwrap();
    let s1 = segment("k", "s1", 100);
    store.put_segment(s1.clone()).await.unwrap();
    assert_eq!(b.get_segment("k", "s1").await.unwrap(), Some(s1.clone()));
    assert_eq!(b.list_segments("k").await.unwrap(), [s1]);
    let (seen, end) = saved_changes(&b, start, 100).await;
    assert_eq!(seen, saved(&[("k", SavedKind::Segment, "s1")]));

    // The other way, a test, and a push of it.
    let t1 = abtest("k", "t1", 100);
    b.put_abtest(t1.clone()).await.unwrap();
    assert_eq!(store.get_abtest("k", "t1").await.unwrap(), Some(t1.clone()));
    assert_eq!(store.list_abtests("k").await.unwrap(), [t1]);
    b.insert_push("k", &split_push(7, 7_000, "t1"), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert_eq!(store.abtest_pushes("k", "t1").await.unwrap(), [7]);
    let (seen, end) = saved_changes(&store, end, 100).await;
    assert_eq!(seen, saved(&[("k", SavedKind::AbTest, "t1")]));

    // Replaced by one node: the other reads the new one, and its feed says so.
    let mut renamed = segment("k", "s1", 100);
    renamed.name = "renamed".into();
    store.put_segment(renamed.clone()).await.unwrap();
    assert_eq!(b.get_segment("k", "s1").await.unwrap(), Some(renamed));
    let (seen, end) = saved_changes(&b, end, 100).await;
    assert_eq!(seen, saved(&[("k", SavedKind::Segment, "s1")]));

    // Deleted by one node: gone for the other, once, and its feed says so.
    assert!(b.delete_saved("k", SavedKind::Segment, "s1").await.unwrap());
    assert_eq!(store.get_segment("k", "s1").await.unwrap(), None);
    assert!(store.list_segments("k").await.unwrap().is_empty());
    assert!(!store
        .delete_saved("k", SavedKind::Segment, "s1")
        .await
        .unwrap());
    let (seen, _) = saved_changes(&store, end, 100).await;
    assert_eq!(seen, saved(&[("k", SavedKind::Segment, "s1")]));
}
