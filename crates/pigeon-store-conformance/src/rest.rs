//! Vendor credentials, schedules, files and the SMS fallback queue.

use crate::pushes::outbox;
use crate::{bitmap, event, push, DynStore};
use pigeon_core::{ScheduleFiring, SmsFallback};
use pigeon_store::{FileRecord, ScheduleRecord, ScheduleRun, SmsSend};
use serde_json::json;

pub async fn credentials_are_sealed_and_read_back(store: DynStore) {
    assert!(store.vendor_credentials("a").await.unwrap().is_empty());
    let huawei = r#"{"client_id":"1","client_secret":"s3cret"}"#;
    let xiaomi = r#"{"app_secret":"x1"}"#;
    store
        .set_vendor_credentials("a", "xiaomi", xiaomi.into(), 20)
        .await
        .unwrap();
    store
        .set_vendor_credentials("a", "huawei", huawei.into(), 10)
        .await
        .unwrap();
    store
        .set_vendor_credentials("b", "fcm", "{}".into(), 30)
        .await
        .unwrap();
    // Read back in the clear, by vendor.
    assert_eq!(
        store.vendor_credentials("a").await.unwrap(),
        [
            ("huawei".to_string(), huawei.to_string(), 10),
            ("xiaomi".to_string(), xiaomi.to_string(), 20)
        ]
    );
    // Replaced.
    let huawei2 = r#"{"client_id":"2","client_secret":"n3w"}"#;
    store
        .set_vendor_credentials("a", "huawei", huawei2.into(), 40)
        .await
        .unwrap();
    assert_eq!(
        store.vendor_credentials("a").await.unwrap()[0],
        ("huawei".to_string(), huawei2.to_string(), 40)
    );
    let mut all = store.all_vendor_credentials().await.unwrap();
    all.sort();
    assert_eq!(
        all,
        [
            ("a".into(), "huawei".into(), huawei2.into(), 40),
            ("a".into(), "xiaomi".into(), xiaomi.into(), 20),
            ("b".into(), "fcm".into(), "{}".into(), 30),
        ]
    );
    assert!(store
        .remove_vendor_credentials("a", "xiaomi")
        .await
        .unwrap());
    assert!(!store
        .remove_vendor_credentials("a", "xiaomi")
        .await
        .unwrap());
    assert!(!store.remove_vendor_credentials("c", "fcm").await.unwrap());
    assert_eq!(store.vendor_credentials("a").await.unwrap().len(), 1);
    assert_eq!(store.vendor_credentials("b").await.unwrap().len(), 1);
}

pub async fn the_credentials_version_follows_every_change(store: DynStore) {
    assert_eq!(store.vendor_credentials_version().await.unwrap(), (0, 0));
    store
        .set_vendor_credentials("a", "fcm", "{}".into(), 100)
        .await
        .unwrap();
    let v1 = store.vendor_credentials_version().await.unwrap();
    assert_eq!(v1, (1, 100));
    store
        .set_vendor_credentials("b", "fcm", "{}".into(), 200)
        .await
        .unwrap();
    let v2 = store.vendor_credentials_version().await.unwrap();
    assert_eq!(v2, (2, 300));
    store
        .set_vendor_credentials("a", "fcm", r#"{"k":1}"#.into(), 150)
        .await
        .unwrap();
    let v3 = store.vendor_credentials_version().await.unwrap();
    assert_eq!(v3, (2, 350));
    assert!(store.remove_vendor_credentials("b", "fcm").await.unwrap());
    let v4 = store.vendor_credentials_version().await.unwrap();
    assert_eq!(v4, (1, 150));
    let versions = [v1, v2, v3, v4];
    for (i, a) in versions.iter().enumerate() {
        for b in &versions[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

fn schedule(id: &str, app_key: &str, created_ms: u64, next_ms: Option<u64>) -> ScheduleRecord {
    ScheduleRecord {
        schedule_id: id.into(),
        app_key: app_key.into(),
        name: format!("schedule {id}"),
        enabled: true,
        trigger: json!({"single": {"time": "2030-01-01 00:00:00"}}),
        push: json!({"platform": "all", "audience": "all"}),
        created_ms,
        next_ms,
        door: "jpush".into(),
    }
}

pub async fn schedules_are_put_replaced_listed_and_deleted(store: DynStore) {
    assert!(store.load_schedules().await.unwrap().is_empty());
    let s2 = schedule("s2", "k", 20, Some(5_000));
    let s1 = schedule("s1", "other", 20, None);
    let mut s0 = schedule("s0", "k", 10, Some(1_000));
    s0.door = "getui".into();
    for s in [&s2, &s1, &s0] {
        store.put_schedule(s.clone()).await.unwrap();
    }
    // Oldest first, then by id.
    assert_eq!(
        store.load_schedules().await.unwrap(),
        [s0.clone(), s1.clone(), s2.clone()]
    );
    let changed = ScheduleRecord {
        name: "renamed".into(),
        enabled: false,
        trigger: json!({"periodical": {"time": "12:00:00"}}),
        push: json!({"platform": ["ios"]}),
        next_ms: Some(9_000),
        ..s2.clone()
    };
    store.put_schedule(changed.clone()).await.unwrap();
    assert_eq!(
        store.load_schedules().await.unwrap(),
        [s0.clone(), s1.clone(), changed]
    );
    // Only its own app deletes it.
    assert!(!store.delete_schedule("other", "s2").await.unwrap());
    assert!(store.delete_schedule("k", "s2").await.unwrap());
    assert!(!store.delete_schedule("k", "s2").await.unwrap());
    assert_eq!(store.load_schedules().await.unwrap(), [s0, s1]);
}

pub async fn schedule_runs_failed_and_fired(store: DynStore) {
    store
        .put_schedule(schedule("s1", "k", 1, Some(1_000)))
        .await
        .unwrap();
    assert!(store.schedule_runs("s1").await.unwrap().is_empty());
    let failed = ScheduleRun {
        msg_id: None,
        error_code: 1011,
        error_message: "no device".into(),
        at_ms: 1_000,
    };
    store
        .record_failed_run("s1", failed.clone(), Some(2_000))
        .await
        .unwrap();
    assert_eq!(
        store.load_schedules().await.unwrap()[0].next_ms,
        Some(2_000)
    );

    // A firing for the time it waits for: stored with its run, and the schedule moves on.
    let firing = |msg_id, due_ms, next_ms| {
        let mut p = push(msg_id, 2_000, 600);
        p.schedule = Some(ScheduleFiring {
            schedule_id: "s1".into(),
            due_ms,
            next_ms,
        });
        p
    };
    store
        .insert_push(
            "k",
            &firing(7, 2_000, Some(3_000)),
            &bitmap([1]),
            Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.load_schedules().await.unwrap()[0].next_ms,
        Some(3_000)
    );
    let fired = ScheduleRun {
        msg_id: Some(7),
        error_code: 0,
        error_message: String::new(),
        at_ms: 2_000,
    };
    assert_eq!(
        store.schedule_runs("s1").await.unwrap(),
        [failed.clone(), fired.clone()]
    );
    // The stored push does not carry the firing.
    assert_eq!(
        store
            .load_push("k", 7)
            .await
            .unwrap()
            .unwrap()
            .push
            .schedule,
        None
    );

    // The same firing again, or one for a time it does not wait for: nothing stored.
    for (msg_id, due) in [(8, 2_000), (9, 2_500)] {
        let stale = store
            .insert_push(
                "k",
                &firing(msg_id, due, Some(4_000)),
                &bitmap([1]),
                Vec::new(),
            )
            .await;
        crate::assert_conflict(stale, "a firing the schedule does not wait for");
        assert!(store.load_push("k", msg_id).await.unwrap().is_none());
    }
    // The last firing: it never fires again.
    let last = ScheduleRun {
        at_ms: 3_000,
        ..failed.clone()
    };
    store
        .record_failed_run("s1", last.clone(), None)
        .await
        .unwrap();
    assert_eq!(store.load_schedules().await.unwrap()[0].next_ms, None);
    assert_eq!(
        store.schedule_runs("s1").await.unwrap(),
        [failed, fired, last]
    );
    // Deleted: a firing is refused.
    assert!(store.delete_schedule("k", "s1").await.unwrap());
    let deleted = store
        .insert_push("k", &firing(10, 3_000, None), &bitmap([1]), Vec::new())
        .await;
    crate::assert_conflict(deleted, "a firing of a deleted schedule");
    assert!(store.schedule_runs("other").await.unwrap().is_empty());
}

pub async fn files_are_listed_until_they_expire(store: DynStore) {
    let file = |id: &str, created_ms, expires_ms, values: &[&str]| FileRecord {
        file_id: id.into(),
        app_key: "k".into(),
        kind: "alias".into(),
        file_name: format!("{id}.txt"),
        created_ms,
        expires_ms,
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    let f2 = file("f2", 20, 1_000, &["a", "b", "c"]);
    let f1 = file("f1", 10, 2_000, &["x"]);
    let f3 = file("f3", 20, 500, &[]);
    for f in [&f2, &f1, &f3] {
        store.put_file(f.clone()).await.unwrap();
    }
    store
        .put_file(FileRecord {
            app_key: "other".into(),
            ..file("f9", 1, 5_000, &["o"])
        })
        .await
        .unwrap();
    let bare = |f: &FileRecord| FileRecord {
        values: Vec::new(),
        ..f.clone()
    };
    // Oldest first, without values; expired ones left out.
    assert_eq!(
        store.list_files("k", 0).await.unwrap(),
        [bare(&f1), bare(&f2), bare(&f3)]
    );
    assert_eq!(
        store.list_files("k", 500).await.unwrap(),
        [bare(&f1), bare(&f2)]
    );
    assert_eq!(store.list_files("k", 1_999).await.unwrap(), [bare(&f1)]);
    assert!(store.list_files("k", 2_000).await.unwrap().is_empty());
    // One file with its values, while it lives.
    assert_eq!(
        store.get_file("k", "f2", 999).await.unwrap(),
        Some(f2.clone())
    );
    assert_eq!(store.get_file("k", "f2", 1_000).await.unwrap(), None);
    assert_eq!(store.get_file("k", "f3", 0).await.unwrap(), Some(f3));
    assert_eq!(store.get_file("other", "f2", 0).await.unwrap(), None);
    assert!(!store.delete_file("other", "f2").await.unwrap());
    assert!(store.delete_file("k", "f2").await.unwrap());
    assert!(!store.delete_file("k", "f2").await.unwrap());
    assert_eq!(store.get_file("k", "f2", 0).await.unwrap(), None);
    assert_eq!(store.list_files("other", 0).await.unwrap().len(), 1);
}

fn with_sms(msg_id: u64, sent_ms: u64, delay_s: u64) -> pigeon_core::Push {
    let mut p = push(msg_id, sent_ms, 600);
    p.policy.sms = Some(SmsFallback {
        delay_s,
        text: Some(format!("sms of {msg_id}")),
        ..Default::default()
    });
    p
}

fn send(msg_id: u64, ordinal: u32, next_ms: u64) -> SmsSend {
    SmsSend {
        msg_id,
        ordinal,
        app_key: "k".into(),
        registration_id: format!("r{ordinal}"),
        mobile: format!("1380000000{ordinal}"),
        sms: json!({"text": format!("sms of {msg_id}")}).to_string(),
        attempts: 0,
        next_ms,
    }
}

pub async fn sms_timers_expand_into_sends(store: DynStore) {
    assert!(store
        .due_sms_jobs(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    // Due at 61_000 and 31_000; a push without SMS has no timer.
    store
        .insert_push("k", &with_sms(1, 1_000, 60), &bitmap([1, 2]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("k2", &with_sms(2, 1_000, 30), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    store
        .insert_push("k", &push(3, 1_000, 600), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert!(store.due_sms_jobs(30_999, 10).await.unwrap().is_empty());
    assert_eq!(
        store.due_sms_jobs(31_000, 10).await.unwrap(),
        [(2, "k2".to_string())]
    );
    assert_eq!(
        store.due_sms_jobs(61_000, 10).await.unwrap(),
        [(2, "k2".to_string()), (1, "k".to_string())]
    );
    assert_eq!(store.due_sms_jobs(61_000, 1).await.unwrap().len(), 1);

    // The timer becomes the SMS it comes to.
    store
        .expand_sms_job(1, vec![send(1, 2, 61_000), send(1, 1, 61_000)])
        .await
        .unwrap();
    assert_eq!(
        store.due_sms_jobs(61_000, 10).await.unwrap(),
        [(2, "k2".to_string())]
    );
    assert!(store.due_sms_sends(60_999, 10).await.unwrap().is_empty());
    let mut due = store.due_sms_sends(61_000, 10).await.unwrap();
    due.sort_by_key(|s| s.ordinal);
    assert_eq!(due, [send(1, 1, 61_000), send(1, 2, 61_000)]);
    // A timer expanded to nothing just goes.
    store.expand_sms_job(2, Vec::new()).await.unwrap();
    assert!(store
        .due_sms_jobs(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    // Expanding a timer that is gone sends nothing.
    store
        .expand_sms_job(2, vec![send(2, 1, 61_000)])
        .await
        .unwrap();
    assert_eq!(
        store.due_sms_sends(u64::MAX / 2, 10).await.unwrap().len(),
        2
    );
}

pub async fn sms_are_retried_finished_and_stopped(store: DynStore) {
    store
        .insert_push("k", &with_sms(1, 0, 0), &bitmap([1, 2, 3]), Vec::new())
        .await
        .unwrap();
    store
        .expand_sms_job(1, vec![send(1, 1, 100), send(1, 2, 200), send(1, 3, 300)])
        .await
        .unwrap();
    // Due ones, soonest first, at most `limit`.
    let due: Vec<u32> = store
        .due_sms_sends(1_000, 2)
        .await
        .unwrap()
        .iter()
        .map(|s| s.ordinal)
        .collect();
    assert_eq!(due, [1, 2]);
    store.retry_sms_send(1, 1, 1, 5_000).await.unwrap();
    let due = store.due_sms_sends(1_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|s| s.ordinal).collect::<Vec<_>>(), [2, 3]);
    let retried = store.due_sms_sends(5_000, 10).await.unwrap();
    assert_eq!(
        retried.last(),
        Some(&SmsSend {
            attempts: 1,
            ..send(1, 1, 5_000)
        })
    );
    store
        .finish_sms_send(1, 2, vec![event("k", "Sms.Result", 1)])
        .await
        .unwrap();
    let left: Vec<u32> = store
        .due_sms_sends(10_000, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.ordinal)
        .collect();
    assert_eq!(left, [3, 1]);
    assert_eq!(outbox(&store, "k", "Sms.Result").await.len(), 1);
    // stop_sms drops what is left; a second time there is nothing.
    assert!(store.stop_sms(1).await.unwrap());
    assert!(store
        .due_sms_sends(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(!store.stop_sms(1).await.unwrap());
    // Stopping a push whose timer has not fired yet.
    store
        .insert_push("k", &with_sms(2, 0, 60), &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert!(store.stop_sms(2).await.unwrap());
    assert!(store
        .due_sms_jobs(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(!store.stop_sms(3).await.unwrap());
}

pub async fn recall_and_override_drop_the_sms_fallback(store: DynStore) {
    // 1: recalled while its timer waits; 2: recalled with its SMS expanded; 3: overridden by 4.
    for id in [1, 2, 3] {
        store
            .insert_push("k", &with_sms(id, 0, 10), &bitmap([1]), Vec::new())
            .await
            .unwrap();
    }
    store
        .expand_sms_job(2, vec![send(2, 1, 10_000)])
        .await
        .unwrap();
    assert!(store.recall_push(1, 500, Vec::new()).await.unwrap());
    assert!(store.recall_push(2, 500, Vec::new()).await.unwrap());
    let mut replacing = push(4, 600, 600);
    replacing.policy.overrides = Some(3);
    store
        .insert_push("k", &replacing, &bitmap([1]), Vec::new())
        .await
        .unwrap();
    assert!(store
        .due_sms_jobs(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .due_sms_sends(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    // A late expansion of a dropped timer sends nothing.
    store
        .expand_sms_job(1, vec![send(1, 1, 10_000)])
        .await
        .unwrap();
    assert!(store
        .due_sms_sends(u64::MAX / 2, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(!store.stop_sms(3).await.unwrap());
}

pub async fn close_keeps_what_was_written_and_refuses_later_writes(store: DynStore) {
    // Concurrent writes, all answered; then closed.
    let writes: Vec<_> = (0..20u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.save_badges("k", vec![(i, i)]).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    store.close().await.unwrap();
    let refused = store.save_badges("k", vec![(99, 1)]).await;
    assert!(
        matches!(refused, Err(pigeon_store::StoreError::Closed)),
        "a write after close: {refused:?}"
    );
    // Closing again is no error.
    store.close().await.unwrap();
}
