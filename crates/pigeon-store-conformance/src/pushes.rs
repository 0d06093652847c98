//! The cid pool, idempotency keys, pushes and their delivery state.

use crate::{assert_conflict, bitmap, event, push, DynStore};
use pigeon_core::{IdempotencyKey, PushCallback};
use pigeon_store::{Checkpoint, DeviceEvent, PushCounts, StoredEvent};
use serde_json::Value;

/// Every event of one command of an app's endpoints, oldest first.
pub(crate) async fn outbox(store: &DynStore, app_key: &str, command: &str) -> Vec<StoredEvent> {
    store
        .events_after(app_key, None, command, 0, 100_000)
        .await
        .unwrap()
}

fn keyed(msg_id: u64, sent_ms: u64, key: &str, issued_only: bool) -> pigeon_core::Push {
    let mut p = push(msg_id, sent_ms, 86_400);
    p.idempotency = Some(IdempotencyKey {
        key: key.into(),
        issued_only,
    });
    p
}

pub async fn cids_issued_used_unknown_and_expired(store: DynStore) {
    let t = 1_000_000;
    store
        .issue_cids("k", vec!["c1".into(), "c2".into()], t)
        .await
        .unwrap();
    assert_eq!(store.find_cid("k", "c1", 0).await.unwrap(), Some(None));
    assert_eq!(store.find_cid("k", "c2", t).await.unwrap(), Some(None));
    // Issued before `since`: too old.
    assert_eq!(store.find_cid("k", "c1", t + 1).await.unwrap(), None);
    assert_eq!(store.find_cid("k", "zz", 0).await.unwrap(), None);
    assert_eq!(store.find_cid("other", "c1", 0).await.unwrap(), None);

    // A push uses c1.
    let one = bitmap([0]);
    store
        .insert_push("k", &keyed(10, t + 5, "c1", true), &one, Vec::new())
        .await
        .unwrap();
    assert_eq!(store.find_cid("k", "c1", 0).await.unwrap(), Some(Some(10)));
    assert_eq!(store.find_cid("k", "c2", 0).await.unwrap(), Some(None));
    assert_eq!(store.find_cid("k", "c1", t + 1).await.unwrap(), None);

    // A cid of the pool that was never issued (or another app's) is refused.
    assert_conflict(
        store
            .insert_push("k", &keyed(11, t + 6, "c9", true), &one, Vec::new())
            .await,
        "a cid never issued",
    );
    store
        .issue_cids("other", vec!["c3".into()], t)
        .await
        .unwrap();
    assert_conflict(
        store
            .insert_push("k", &keyed(12, t + 6, "c3", true), &one, Vec::new())
            .await,
        "another app's cid",
    );
    assert!(store.load_push("k", 11).await.unwrap().is_none());
    assert!(store.load_push("k", 12).await.unwrap().is_none());
    assert_eq!(store.find_cid("other", "c3", 0).await.unwrap(), Some(None));
}

pub async fn a_used_cid_refuses_another_push(store: DynStore) {
    let t = 5_000_000;
    store.issue_cids("k", vec!["c1".into()], t).await.unwrap();
    let one = bitmap([0]);
    store
        .insert_push(
            "k",
            &keyed(10, t, "c1", true),
            &one,
            vec![event("k", "Push.Accepted", 1)],
        )
        .await
        .unwrap();
    let retry = store
        .insert_push(
            "k",
            &keyed(11, t + 1, "c1", true),
            &one,
            vec![event("k", "Push.Accepted", 2)],
        )
        .await;
    assert_conflict(retry, "a used cid");
    // Nothing of the refused push was written.
    assert!(store.load_push("k", 11).await.unwrap().is_none());
    assert_eq!(store.find_cid("k", "c1", 0).await.unwrap(), Some(Some(10)));
    let events = outbox(&store, "k", "Push.Accepted").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body, event("k", "Push.Accepted", 1).body);
    assert_eq!(store.max_msg_id().await.unwrap(), 10);
    assert_eq!(
        store.load_push("k", 10).await.unwrap().unwrap().push,
        keyed(10, t, "c1", true)
    );
}

pub async fn a_free_idempotency_key_is_taken_once_a_day(store: DynStore) {
    let t = 1_000_000;
    let one = bitmap([0]);
    store
        .insert_push("k", &keyed(20, t, "req-1", false), &one, Vec::new())
        .await
        .unwrap();
    assert_eq!(
        store.find_cid("k", "req-1", 0).await.unwrap(),
        Some(Some(20))
    );
    // Within a day: refused.
    assert_conflict(
        store
            .insert_push("k", &keyed(21, t + 1_000, "req-1", false), &one, Vec::new())
            .await,
        "the same key within a day",
    );
    assert!(store.load_push("k", 21).await.unwrap().is_none());
    // Another app's key is another key.
    store
        .insert_push(
            "other",
            &keyed(22, t + 1_000, "req-1", false),
            &one,
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.find_cid("other", "req-1", 0).await.unwrap(),
        Some(Some(22))
    );
    // More than a day later it is taken anew.
    let later = t + 86_400_000 + 1;
    store
        .insert_push("k", &keyed(23, later, "req-1", false), &one, Vec::new())
        .await
        .unwrap();
    assert_eq!(
        store.find_cid("k", "req-1", 0).await.unwrap(),
        Some(Some(23))
    );
}

pub async fn a_push_is_stored_and_loaded(store: DynStore) {
    assert_eq!(store.max_msg_id().await.unwrap(), 0);
    let mut p = push(42, 1_000, 600);
    p.labels.group = Some("promo".into());
    p.labels.sendno = Some(7);
    p.policy.notify_id = Some("n-1".into());
    p.callback = Some(PushCallback {
        url: Some("https://cb.example/x".into()),
        params: None,
        ..Default::default()
    });
    let audience = bitmap([0, 1, 5, 70_000]);
    store
        .insert_push("k", &p, &audience, vec![event("k", "Push.Accepted", 1)])
        .await
        .unwrap();
    let stored = store.load_push("k", 42).await.unwrap().expect("the push");
    assert_eq!(stored.push, p);
    assert_eq!(stored.audience, audience);
    assert!(stored.sent.is_empty() && stored.delivered.is_empty());
    assert!(store.load_push("other", 42).await.unwrap().is_none());
    assert!(store.load_push("k", 43).await.unwrap().is_none());
    assert_eq!(store.max_msg_id().await.unwrap(), 42);
    // Its events were written with it.
    let events = outbox(&store, "k", "Push.Accepted").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].at_ms, event("k", "Push.Accepted", 1).at_ms);
    // A lower msg_id does not lower the highest.
    store
        .insert_push("k", &push(7, 2_000, 600), &bitmap([]), Vec::new())
        .await
        .unwrap();
    assert_eq!(store.max_msg_id().await.unwrap(), 42);
    assert_eq!(
        store.load_push("k", 7).await.unwrap().unwrap().audience,
        bitmap([])
    );
}

pub async fn a_failing_push_write_leaves_nothing(store: DynStore) {
    let one = bitmap([1]);
    store
        .insert_push("k", &push(5, 1_000, 600), &one, Vec::new())
        .await
        .unwrap();
    store
        .insert_push("k", &push(6, 1_000, 600), &one, Vec::new())
        .await
        .unwrap();
    // The same msg_id again, with events, an override and an SMS fallback: refused whole.
    let mut again = push(5, 2_000, 600);
    again.policy.overrides = Some(6);
    again.policy.sms =
        Some(serde_json::from_value(serde_json::json!({"delay_s": 0, "text": "x"})).unwrap());
    let dup = store
        .insert_push(
            "k",
            &again,
            &bitmap([2]),
            vec![event("k", "Push.Accepted", 1)],
        )
        .await;
    assert!(dup.is_err(), "{dup:?}");
    assert!(outbox(&store, "k", "Push.Accepted").await.is_empty());
    assert_eq!(store.overridden_by(6).await.unwrap(), None);
    assert!(store
        .due_sms_jobs(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    let stored = store.load_push("k", 5).await.unwrap().unwrap();
    assert_eq!((stored.push, stored.audience), (push(5, 1_000, 600), one));
}

pub async fn live_pushes_are_unexpired_unrecalled_and_not_overridden(store: DynStore) {
    let ids =
        |v: Vec<pigeon_store::StoredPush>| v.iter().map(|p| p.push.msg_id).collect::<Vec<_>>();
    assert!(store.load_live_pushes("k", 0).await.unwrap().is_empty());
    // Stored out of order; given back oldest first.
    store
        .insert_push("k", &push(2, 2_000, 100), &bitmap([2]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("k", &push(1, 1_000, 10), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("k", &push(3, 3_000, 100), &bitmap([3]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("k", &push(4, 4_000, 100), &bitmap([4]), Vec::new())
        .await
        .unwrap();
    let mut replacing = push(5, 5_000, 100);
    replacing.policy.overrides = Some(4);
    store
        .insert_push("k", &replacing, &bitmap([4]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("other", &push(6, 1_000, 100), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert!(store.recall_push(3, 3_500, Vec::new()).await.unwrap());
    store
        .save_delivered(
            vec![Checkpoint {
                msg_id: 2,
                sent: bitmap([2, 9]),
                delivered: bitmap([2]),
                vendors: Vec::new(),
            }],
            Vec::new(),
        )
        .await
        .unwrap();

    let live = store.load_live_pushes("k", 5_000).await.unwrap();
    assert_eq!(ids(live.clone()), [1, 2, 5]);
    assert_eq!(live[1].delivered, bitmap([2]));
    assert_eq!(live[1].sent, bitmap([2, 9]));
    assert_eq!(live[2].push, replacing);
    // Push 1 expires at 11_000: live before, not at.
    assert_eq!(
        ids(store.load_live_pushes("k", 10_999).await.unwrap()),
        [1, 2, 5]
    );
    assert_eq!(
        ids(store.load_live_pushes("k", 11_000).await.unwrap()),
        [2, 5]
    );
    assert_eq!(
        ids(store.load_live_pushes("k", 105_000).await.unwrap()),
        Vec::<u64>::new()
    );
    assert_eq!(
        ids(store.load_live_pushes("other", 5_000).await.unwrap()),
        [6]
    );
    // Recalled and overridden pushes still load one by one.
    assert!(store.load_push("k", 3).await.unwrap().is_some());
    assert!(store.load_push("k", 4).await.unwrap().is_some());
}

pub async fn expired_pushes_are_reported_once(store: DynStore) {
    let ids =
        |v: Vec<pigeon_store::StoredPush>| v.iter().map(|p| p.push.msg_id).collect::<Vec<_>>();
    // Push 1 expires at 11_000, 2 at 102_000, 3 at 11_000 (recalled), 4 at 11_000
    // (overridden by 5, which expires at 105_000).
    for (id, sent, ttl) in [
        (1, 1_000, 10),
        (2, 2_000, 100),
        (3, 1_000, 10),
        (4, 1_000, 10),
    ] {
        store
            .insert_push("k", &push(id, sent, ttl), &bitmap([id as u32]), Vec::new())
            .await
            .unwrap();
    }
    let mut replacing = push(5, 5_000, 100);
    replacing.policy.overrides = Some(4);
    store
        .insert_push("k", &replacing, &bitmap([4]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("other", &push(6, 1_000, 10), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert!(store.recall_push(3, 1_500, Vec::new()).await.unwrap());
    store
        .save_delivered(
            vec![Checkpoint {
                msg_id: 1,
                sent: bitmap([1]),
                delivered: bitmap([1]),
                vendors: Vec::new(),
            }],
            Vec::new(),
        )
        .await
        .unwrap();

    // Expired strictly before `before_ms`.
    assert_eq!(
        ids(store.expired_unreported("k", 11_000).await.unwrap()),
        Vec::<u64>::new()
    );
    let expired = store.expired_unreported("k", 11_001).await.unwrap();
    // A recalled push was reported when recalled, an overridden one is never reported.
    assert_eq!(ids(expired.clone()), [1]);
    assert_eq!(expired[0].delivered, bitmap([1]));
    assert_eq!(expired[0].audience, bitmap([1]));
    store
        .report_expired(1, vec![event("k", "Push.Undelivered", 1)])
        .await
        .unwrap();
    assert_eq!(
        ids(store.expired_unreported("k", 11_001).await.unwrap()),
        Vec::<u64>::new()
    );
    assert_eq!(
        ids(store.expired_unreported("k", 200_000).await.unwrap()),
        [2, 5]
    );
    assert_eq!(
        ids(store.expired_unreported("other", 200_000).await.unwrap()),
        [6]
    );
    let events = outbox(&store, "k", "Push.Undelivered").await;
    assert_eq!(events.len(), 1);
}

pub async fn a_push_is_recalled_once(store: DynStore) {
    store
        .insert_push("k", &push(1, 1_000, 600), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert_eq!(store.recalled_at(1).await.unwrap(), None);
    assert!(store
        .recall_push(1, 5_000, vec![event("k", "Push.Event", 1)])
        .await
        .unwrap());
    assert_eq!(store.recalled_at(1).await.unwrap(), Some(5_000));
    // A second recall changes nothing and reports nothing.
    assert!(!store
        .recall_push(1, 6_000, vec![event("k", "Push.Event", 2)])
        .await
        .unwrap());
    assert_eq!(store.recalled_at(1).await.unwrap(), Some(5_000));
    let events = outbox(&store, "k", "Push.Event").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body, event("k", "Push.Event", 1).body);
    // An unknown push.
    assert!(!store.recall_push(99, 6_000, Vec::new()).await.unwrap());
    assert_eq!(store.recalled_at(99).await.unwrap(), None);
    assert!(store.load_push("k", 1).await.unwrap().is_some());
    assert!(store.load_live_pushes("k", 2_000).await.unwrap().is_empty());
}

pub async fn an_override_marks_the_push_it_replaces(store: DynStore) {
    store
        .insert_push("k", &push(1, 1_000, 600), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert_eq!(store.overridden_by(1).await.unwrap(), None);
    let mut second = push(2, 2_000, 600);
    second.policy.overrides = Some(1);
    store
        .insert_push("k", &second, &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert_eq!(store.overridden_by(1).await.unwrap(), Some(2));
    assert_eq!(store.overridden_by(2).await.unwrap(), None);
    // A push of another app cannot override it.
    let mut foreign = push(3, 3_000, 600);
    foreign.policy.overrides = Some(2);
    store
        .insert_push("other", &foreign, &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert_eq!(store.overridden_by(2).await.unwrap(), None);
    assert_eq!(store.overridden_by(77).await.unwrap(), None);
    let live: Vec<u64> = store
        .load_live_pushes("k", 2_500)
        .await
        .unwrap()
        .iter()
        .map(|p| p.push.msg_id)
        .collect();
    assert_eq!(live, [2]);
}

pub async fn save_delivered_replaces_the_last_checkpoint(store: DynStore) {
    for id in [1, 2] {
        store
            .insert_push(
                "k",
                &push(id, 1_000, 600),
                &bitmap([1, 2, 3, 4]),
                Vec::new(),
            )
            .await
            .unwrap();
    }
    // Nothing checkpointed yet: no channels known.
    assert_eq!(
        store.load_push("k", 1).await.unwrap().unwrap().vendors,
        None
    );
    let checkpoint = |msg_id, sent: &[u32], delivered: &[u32]| Checkpoint {
        msg_id,
        sent: bitmap(sent.iter().copied()),
        delivered: bitmap(delivered.iter().copied()),
        vendors: Vec::new(),
    };
    store
        .save_delivered(
            vec![checkpoint(1, &[1, 2, 3], &[1]), checkpoint(2, &[4], &[])],
            vec![event("k", "Push.Event", 1)],
        )
        .await
        .unwrap();
    let one = store.load_push("k", 1).await.unwrap().unwrap();
    assert_eq!((one.sent, one.delivered), (bitmap([1, 2, 3]), bitmap([1])));
    assert_eq!(one.vendors, Some(Vec::new()));
    // Which vendor carried it to whom is kept with the checkpoint, and read back as written
    // (the live-push path and a restart both read it).
    let vendors = vec![
        ("apns".to_string(), bitmap([2])),
        ("huawei".to_string(), bitmap([3, 70_000])),
    ];
    store
        .save_delivered(
            vec![Checkpoint {
                vendors: vendors.clone(),
                ..checkpoint(1, &[1, 2, 3], &[1])
            }],
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.load_push("k", 1).await.unwrap().unwrap().vendors,
        Some(vendors.clone())
    );
    let live = store.load_live_pushes("k", 0).await.unwrap();
    let one_live = live
        .iter()
        .find(|p| p.push.msg_id == 1)
        .map(|p| p.vendors.clone());
    assert_eq!(one_live, Some(Some(vendors)));
    // Replaced, not merged.
    store
        .save_delivered(vec![checkpoint(1, &[4], &[4])], Vec::new())
        .await
        .unwrap();
    let one = store.load_push("k", 1).await.unwrap().unwrap();
    assert_eq!((one.sent, one.delivered), (bitmap([4]), bitmap([4])));
    let two = store.load_push("k", 2).await.unwrap().unwrap();
    assert_eq!((two.sent, two.delivered), (bitmap([4]), bitmap([])));
    assert_eq!(outbox(&store, "k", "Push.Event").await.len(), 1);
    // A checkpoint with events only, or nothing at all.
    store
        .save_delivered(Vec::new(), vec![event("k", "Push.Event", 2)])
        .await
        .unwrap();
    store.save_delivered(Vec::new(), Vec::new()).await.unwrap();
    assert_eq!(outbox(&store, "k", "Push.Event").await.len(), 2);
}

pub async fn clicks_and_push_counts_between(store: DynStore) {
    let mut first = push(1, 1_000, 600);
    first.labels.group = Some("promo".into());
    store
        .insert_push("k", &first, &bitmap([0, 1, 2]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("k", &push(2, 2_000, 600), &bitmap([5]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("other", &push(3, 1_500, 600), &bitmap([0]), Vec::new())
        .await
        .unwrap();
    store
        .save_delivered(
            vec![Checkpoint {
                msg_id: 1,
                sent: bitmap([0, 1]),
                delivered: bitmap([1]),
                vendors: Vec::new(),
            }],
            Vec::new(),
        )
        .await
        .unwrap();
    let click = |ordinal, msg_id| DeviceEvent {
        app_key: "k".into(),
        ordinal,
        kind: "click".into(),
        msg_id: Some(msg_id),
        data: Value::Null,
        at_ms: 1_200,
    };
    assert!(store.clicked("k", 1).await.unwrap().is_empty());
    store
        .record_event(click(1, 1), vec![event("k", "Push.Event", 1)])
        .await
        .unwrap();
    store.record_event(click(1, 1), Vec::new()).await.unwrap();
    store.record_event(click(2, 1), Vec::new()).await.unwrap();
    let mut clicked = store.clicked("k", 1).await.unwrap();
    clicked.sort();
    assert_eq!(clicked, [1, 2]);
    assert!(store.clicked("k", 2).await.unwrap().is_empty());
    assert!(store.clicked("other", 1).await.unwrap().is_empty());
    assert_eq!(outbox(&store, "k", "Push.Event").await.len(), 1);

    let one = PushCounts {
        msg_id: 1,
        sent_ms: 1_000,
        group: Some("promo".into()),
        targets: 3,
        sent: 2,
        delivered: 1,
        clicked: 2,
    };
    let two = PushCounts {
        msg_id: 2,
        sent_ms: 2_000,
        group: None,
        targets: 1,
        sent: 0,
        delivered: 0,
        clicked: 0,
    };
    assert_eq!(
        store.push_counts_between("k", 1_000, 2_000).await.unwrap(),
        std::slice::from_ref(&one)
    );
    assert_eq!(
        store.push_counts_between("k", 0, 2_001).await.unwrap(),
        [one, two]
    );
    assert!(store
        .push_counts_between("k", 0, 1_000)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .push_counts_between("other", 0, 5_000)
            .await
            .unwrap()
            .iter()
            .map(|c| (c.msg_id, c.targets))
            .collect::<Vec<_>>(),
        [(3, 1)]
    );
}

pub async fn recent_push_counts_are_newest_first_and_limited(store: DynStore) {
    for (msg_id, sent_ms) in [(1, 1_000), (2, 2_000), (3, 1_500)] {
        store
            .insert_push(
                "k",
                &push(msg_id, sent_ms, 600),
                &bitmap([0, 1]),
                Vec::new(),
            )
            .await
            .unwrap();
    }
    store
        .insert_push("other", &push(4, 3_000, 600), &bitmap([0]), Vec::new())
        .await
        .unwrap();
    store
        .save_delivered(
            vec![Checkpoint {
                msg_id: 2,
                sent: bitmap([0, 1]),
                delivered: bitmap([1]),
                vendors: Vec::new(),
            }],
            Vec::new(),
        )
        .await
        .unwrap();
    let ids = |all: Vec<PushCounts>| all.iter().map(|c| c.msg_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.recent_push_counts("k", 10).await.unwrap()),
        [3, 2, 1]
    );
    let two = store.recent_push_counts("k", 2).await.unwrap();
    assert_eq!(ids(two.clone()), [3, 2]);
    assert_eq!(
        (
            two[1].targets,
            two[1].sent,
            two[1].delivered,
            two[1].clicked
        ),
        (2, 2, 1, 0)
    );
    assert_eq!(
        ids(store.recent_push_counts("other", 10).await.unwrap()),
        [4]
    );
    assert!(store
        .recent_push_counts("none", 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store.recent_push_counts("k", 0).await.unwrap().is_empty());
}
