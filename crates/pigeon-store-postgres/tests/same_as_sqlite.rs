//! Every port method, called the same way on the SQLite store and on PostgreSQL: the answers
//! must be the same, line by line (errors compared by kind). This runs every SQL statement
//! of the adapter at least once.

// `is_multiple_of` is newer than the workspace's rust-version.
#![allow(clippy::manual_is_multiple_of)]

mod common;

use pigeon_core::{Audience, IdempotencyKey, PlatformSet, Push, ScheduleFiring, SmsFallback};
use pigeon_store::ports::*;
use pigeon_store::{
    AppRecord, AppSettings, CallbackBatch, CallbackEndpoint, CallbackFormat, Checkpoint,
    DeviceEvent, DeviceRecord, FenceState, FileRecord, GeofenceRecord, GroupRecord, Location,
    NewEvent, ScheduleRecord, ScheduleRun, SmsSend, SqliteStore, StoreError, StoreResult,
    Synchronous, FENCE_ENTER, FENCE_LEAVE, FENCE_STAY,
};
use pigeon_store_postgres::PostgresStore;
use roaring::RoaringBitmap;
use serde_json::json;
use std::fmt::Debug;
use std::sync::Arc;

/// Records what each call answered.
struct Log(Vec<String>);

impl Log {
    fn ok<T: Debug>(&mut self, label: &str, r: StoreResult<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.0.push(format!("{label}: Ok({v:?})"));
                Some(v)
            }
            Err(e) => {
                self.0.push(format!("{label}: Err({})", kind(&e)));
                None
            }
        }
    }

    /// An error whose kind the two stores tell apart differently (SQLite gives a unique
    /// violation as its own error; PostgreSQL as `Conflict`): only that it failed.
    fn fails<T: Debug>(&mut self, label: &str, r: StoreResult<T>) {
        self.0.push(format!("{label}: failed {}", r.is_err()));
    }
}

fn kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::Sqlite(_) => "Sqlite",
        StoreError::Closed => "Closed",
        StoreError::Conflict(_) => "Conflict",
        StoreError::Corrupt(_) => "Corrupt",
        StoreError::Io(_) => "Io",
        StoreError::Unavailable(_) => "Unavailable",
        StoreError::Backend(_) => "Backend",
    }
}

fn device(app: &str, ordinal: u32, rid: &str) -> DeviceRecord {
    DeviceRecord {
        app_key: Arc::from(app),
        ordinal,
        registration_id: rid.into(),
        install_id: Some(format!("i{ordinal}")),
        secret_hash: [ordinal as u8; 32],
        platform: pigeon_core::Platform::Android,
        alias: ordinal.is_multiple_of(2).then(|| format!("al{ordinal}")),
        tags: vec!["t1".into(), format!("t{ordinal}")],
        mobile: Some("+100".into()),
        region: None,
        push_tokens: json!({"fcm": "tok"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        apns_production: ordinal.is_multiple_of(3),
        info: json!({"model": "m"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        created_ms: 10 + u64::from(ordinal),
        updated_ms: 20,
    }
}

fn event(app: &str, command: &str, n: u64, endpoint: Option<u64>) -> NewEvent {
    NewEvent {
        app_key: app.into(),
        command: command.into(),
        body: format!(r#"{{"CallbackCommand":"{command}","N":{n}}}"#),
        at_ms: 1_000 + n,
        endpoint_id: endpoint,
    }
}

fn push(msg_id: u64, sent_ms: u64) -> Push {
    let mut p = Push::new(PlatformSet::all(), Audience::All);
    p.msg_id = msg_id;
    p.sent_ms = sent_ms;
    p.content.message = Some(Default::default());
    p
}

fn bitmap(v: &[u32]) -> RoaringBitmap {
    v.iter().copied().collect()
}

async fn script<S>(s: &S) -> Vec<String>
where
    S: Storage + FeedStore + LeaseStore + PresenceStore,
{
    let mut log = Log(Vec::new());
    let l = &mut log;

    // Apps.
    let app = |key: &str, created_ms| AppRecord {
        app_key: key.into(),
        master_secret: "s".into(),
        name: "n".into(),
        created_ms,
    };
    l.ok("create a1", s.create_app(app("a1", 5)).await);
    l.ok("create a2", s.create_app(app("a2", 3)).await);
    l.ok("create a1 again", s.create_app(app("a1", 9)).await);
    l.ok("find a1", s.find_app("a1").await);
    l.ok("find none", s.find_app("zz").await);
    l.ok("list apps", s.list_apps().await);
    l.ok(
        "vapid ensure",
        s.ensure_vapid_keys("a1", "priv1".into(), "pub1".into())
            .await,
    );
    l.ok(
        "vapid ensure again",
        s.ensure_vapid_keys("a1", "priv2".into(), "pub2".into())
            .await,
    );
    l.ok("vapid keys", s.vapid_keys("a1").await);
    l.ok("vapid keys none", s.vapid_keys("a2").await);
    let group = GroupRecord {
        group_key: "g1".into(),
        master_secret: "gs".into(),
        name: "G".into(),
        app_keys: vec!["a1".into(), "a2".into()],
        created_ms: 7,
    };
    l.ok("group", s.create_group(group.clone()).await);
    l.ok("group again", s.create_group(group).await);
    l.ok("find group", s.find_group("g1").await);
    l.ok("find group none", s.find_group("g2").await);
    let settings = AppSettings {
        enabled: false,
        rate_limit_per_minute: Some(60),
        ip_allowlist: vec!["10.0.0.0/8".into()],
    };
    l.ok(
        "settings a1",
        s.set_app_settings("a1", settings.clone()).await,
    );
    l.ok(
        "settings a2",
        s.set_app_settings("a2", AppSettings::default()).await,
    );
    l.ok(
        "settings a1 again",
        s.set_app_settings("a1", settings).await,
    );
    l.ok("app settings", s.app_settings().await);

    // Devices.
    l.ok("put d0", s.put_device(device("a1", 0, "r0")).await);
    let mut d1 = device("a1", 1, "r1");
    l.ok(
        "put devices",
        s.put_devices(vec![
            d1.clone(),
            device("a1", 2, "r2"),
            device("a2", 0, "x0"),
        ])
        .await,
    );
    d1.tags = vec!["changed".into()];
    d1.region = Some("11".into());
    l.ok("put d1 changed", s.put_device(d1).await);
    l.fails(
        "put a used registration id",
        s.put_device(device("a1", 5, "r0")).await,
    );
    l.fails(
        "put devices all or none",
        s.put_devices(vec![device("a1", 6, "r6"), device("a1", 7, "r0")])
            .await,
    );
    let mut rx = s.load_devices("a1");
    let mut loaded = Vec::new();
    while let Some(chunk) = rx.recv().await {
        if let Some(chunk) = l.ok("load devices chunk", chunk) {
            loaded.extend(chunk);
        }
    }
    l.ok("devices", Ok::<_, StoreError>(loaded));
    l.ok(
        "last online",
        s.set_last_online(
            "a1",
            1,
            100,
            vec![event("a1", "Device.OnlineStatus", 1, None)],
        )
        .await,
    );
    l.ok(
        "last online 2",
        s.set_last_online("a1", 2, 300, Vec::new()).await,
    );
    l.ok(
        "last online 1 again",
        s.set_last_online("a1", 1, 200, Vec::new()).await,
    );
    l.ok("last_online", s.last_online("a1", vec![2, 1, 9, 1]).await);
    l.ok("seen between", s.seen_between("a1", 150, 300).await);
    l.ok("seen between all", s.seen_between("a1", 0, 1_000).await);
    l.ok("badges", s.save_badges("a1", vec![(0, 2), (1, 5)]).await);
    l.ok("badges again", s.save_badges("a1", vec![(1, 7)]).await);
    l.ok("load badges", s.load_badges("a1").await);
    l.ok("block", s.set_blocked("a1", vec![2, 0, 2], true).await);
    l.ok("load blocked", s.load_blocked("a1").await);
    l.ok("unblock", s.set_blocked("a1", vec![2], false).await);
    l.ok("load blocked again", s.load_blocked("a1").await);
    let at = |lat, at_ms| Location {
        lat,
        lon: 2.5,
        accuracy_m: Some(3.0),
        at_ms,
    };
    l.ok(
        "locations",
        s.save_locations(
            "a1",
            vec![(1, at(1.0, 5)), (2, at(2.0, 6)), (1, at(1.5, 7))],
        )
        .await,
    );
    l.ok("location", s.location("a1", 1).await);
    l.ok("location none", s.location("a1", 9).await);

    // Cids and pushes.
    l.ok(
        "issue cids",
        s.issue_cids("a1", vec!["c1".into(), "c2".into()], 1_000)
            .await,
    );
    l.ok("find cid", s.find_cid("a1", "c1", 0).await);
    l.ok("find cid older", s.find_cid("a1", "c1", 2_000).await);
    l.ok("find cid none", s.find_cid("a1", "c9", 0).await);
    l.fails(
        "issue a cid twice",
        s.issue_cids("a1", vec!["c1".into()], 1_500).await,
    );
    let everyone = bitmap(&[0, 1, 2]);
    let mut p = push(42, 1_000);
    p.labels.group = Some("promo".into());
    p.idempotency = Some(IdempotencyKey {
        key: "c1".into(),
        issued_only: true,
    });
    p.policy.sms = Some(SmsFallback {
        delay_s: 60,
        text: Some("hi".into()),
        ..Default::default()
    });
    let accepted = vec![
        event("a1", "Push.Accepted", 2, None),
        event("a1", "Push.Accepted", 3, Some(77)),
    ];
    l.ok(
        "push 42",
        s.insert_push("a1", &p, &everyone, accepted).await,
    );
    l.ok("find used cid", s.find_cid("a1", "c1", 0).await);
    let mut again = push(43, 1_000);
    again.idempotency = p.idempotency.clone();
    l.ok(
        "push with a used cid",
        s.insert_push("a1", &again, &everyone, Vec::new()).await,
    );
    again.idempotency = Some(IdempotencyKey {
        key: "c404".into(),
        issued_only: true,
    });
    l.ok(
        "push with an unknown cid",
        s.insert_push("a1", &again, &everyone, Vec::new()).await,
    );
    again.idempotency = Some(IdempotencyKey {
        key: "req-1".into(),
        issued_only: false,
    });
    l.ok(
        "push with a new key",
        s.insert_push("a1", &again, &everyone, Vec::new()).await,
    );
    let mut third = push(44, 1_100);
    third.idempotency = again.idempotency.clone();
    l.ok(
        "push with that key again",
        s.insert_push("a1", &third, &everyone, Vec::new()).await,
    );
    l.fails(
        "push with a used msg_id",
        s.insert_push("a1", &push(42, 5), &everyone, Vec::new())
            .await,
    );
    l.ok("max msg_id", s.max_msg_id().await);
    let mut overriding = push(45, 1_200);
    overriding.policy.overrides = Some(43);
    l.ok(
        "push 45 overriding 43",
        s.insert_push("a1", &overriding, &everyone, Vec::new())
            .await,
    );
    l.ok("overridden by", s.overridden_by(43).await);
    l.ok("overridden by none", s.overridden_by(45).await);
    l.ok(
        "checkpoint",
        s.save_delivered(
            vec![
                Checkpoint {
                    msg_id: 42,
                    sent: bitmap(&[0]),
                    delivered: bitmap(&[]),
                    vendors: Vec::new(),
                },
                Checkpoint {
                    msg_id: 42,
                    sent: bitmap(&[0, 1]),
                    delivered: bitmap(&[1]),
                    vendors: Vec::new(),
                },
                Checkpoint {
                    msg_id: 45,
                    sent: bitmap(&[2]),
                    delivered: bitmap(&[2]),
                    vendors: Vec::new(),
                },
            ],
            vec![event("a1", "Push.Event", 4, None)],
        )
        .await,
    );
    l.ok(
        "live pushes",
        s.load_live_pushes("a1", 2_000)
            .await
            .map(|v| format!("{v:?}")),
    );
    l.ok(
        "load push",
        s.load_push("a1", 42).await.map(|v| format!("{v:?}")),
    );
    l.ok(
        "load push other app",
        s.load_push("a2", 42).await.map(|v| format!("{v:?}")),
    );
    let click = |ordinal| DeviceEvent {
        app_key: "a1".into(),
        ordinal,
        kind: "click".into(),
        msg_id: Some(42),
        data: json!({"x": 1}),
        at_ms: 1_500,
    };
    l.ok("click 1", s.record_event(click(1), Vec::new()).await);
    l.ok(
        "click 1 again",
        s.record_event(click(1), vec![event("a1", "Push.Event", 5, None)])
            .await,
    );
    l.ok("click 0", s.record_event(click(0), Vec::new()).await);
    l.ok("clicked", s.clicked("a1", 42).await);
    l.ok("counts", s.push_counts_between("a1", 0, 10_000).await);
    l.ok(
        "counts none",
        s.push_counts_between("a1", 1_050, 1_100).await,
    );
    l.ok(
        "expired",
        s.expired_unreported("a1", 10_000_000)
            .await
            .map(|v| format!("{v:?}")),
    );
    l.ok(
        "report expired",
        s.report_expired(44, vec![event("a1", "Push.Undelivered", 6, None)])
            .await,
    );
    l.ok(
        "expired after",
        s.expired_unreported("a1", 10_000_000)
            .await
            .map(|v| v.len()),
    );
    l.ok("due sms jobs", s.due_sms_jobs(100_000, 10).await);
    let send = |ordinal| SmsSend {
        msg_id: 42,
        ordinal,
        app_key: "a1".into(),
        registration_id: format!("r{ordinal}"),
        mobile: "+100".into(),
        sms: "{}".into(),
        attempts: 0,
        next_ms: 70_000 + u64::from(ordinal),
    };
    l.ok(
        "expand sms",
        s.expand_sms_job(42, vec![send(2), send(0)]).await,
    );
    l.ok("expand sms gone", s.expand_sms_job(42, vec![send(1)]).await);
    l.ok("due sms sends", s.due_sms_sends(100_000, 10).await);
    l.ok("retry sms", s.retry_sms_send(42, 0, 1, 90_000).await);
    l.ok("due sms sends soon", s.due_sms_sends(80_000, 10).await);
    l.ok(
        "finish sms",
        s.finish_sms_send(42, 2, vec![event("a1", "Sms.Result", 7, None)])
            .await,
    );
    l.ok("due sms sends after", s.due_sms_sends(100_000, 10).await);
    l.ok(
        "recall",
        s.recall_push(42, 3_000, vec![event("a1", "Push.Undelivered", 8, None)])
            .await,
    );
    l.ok("recall again", s.recall_push(42, 3_500, Vec::new()).await);
    l.ok("recall none", s.recall_push(999, 3_500, Vec::new()).await);
    l.ok("recalled at", s.recalled_at(42).await);
    l.ok("recalled at none", s.recalled_at(45).await);
    l.ok("stop sms after recall", s.stop_sms(42).await);
    let mut with_sms = push(46, 1_300);
    with_sms.policy.sms = p.policy.sms.clone();
    l.ok(
        "push 46",
        s.insert_push("a1", &with_sms, &everyone, Vec::new()).await,
    );
    l.ok("stop sms", s.stop_sms(46).await);
    l.ok("stop sms again", s.stop_sms(46).await);
    l.ok(
        "live pushes after",
        s.load_live_pushes("a1", 2_000)
            .await
            .map(|v| format!("{v:?}")),
    );

    // Credentials.
    l.ok(
        "creds fcm",
        s.set_vendor_credentials("a1", "fcm", "{\"k\":1}".into(), 10)
            .await,
    );
    l.ok(
        "creds apns",
        s.set_vendor_credentials("a1", "apns", "{\"k\":2}".into(), 20)
            .await,
    );
    l.ok(
        "creds a2",
        s.set_vendor_credentials("a2", "fcm", "{\"k\":3}".into(), 30)
            .await,
    );
    l.ok(
        "creds fcm again",
        s.set_vendor_credentials("a1", "fcm", "{\"k\":4}".into(), 40)
            .await,
    );
    l.ok("creds of a1", s.vendor_credentials("a1").await);
    l.ok("all creds", s.all_vendor_credentials().await);
    l.ok("creds version", s.vendor_credentials_version().await);
    l.ok(
        "remove creds",
        s.remove_vendor_credentials("a2", "fcm").await,
    );
    l.ok(
        "remove creds again",
        s.remove_vendor_credentials("a2", "fcm").await,
    );
    l.ok("creds version after", s.vendor_credentials_version().await);

    // Schedules.
    let schedule = |id: &str, created_ms| ScheduleRecord {
        schedule_id: id.into(),
        app_key: "a1".into(),
        name: "n".into(),
        enabled: true,
        trigger: json!({"single": {"time": "x"}}),
        push: json!({"p": 1}),
        created_ms,
        next_ms: Some(1_000),
        door: "jpush".into(),
    };
    l.ok("schedule s2", s.put_schedule(schedule("s2", 5)).await);
    l.ok("schedule s1", s.put_schedule(schedule("s1", 5)).await);
    let mut s1 = schedule("s1", 99);
    s1.name = "renamed".into();
    s1.door = "getui".into();
    l.ok("schedule s1 again", s.put_schedule(s1).await);
    l.ok("schedules", s.load_schedules().await);
    let firing = |msg_id, due_ms| {
        let mut p = push(msg_id, 1_000);
        p.schedule = Some(ScheduleFiring {
            schedule_id: "s1".into(),
            due_ms,
            next_ms: Some(2_000),
        });
        p
    };
    l.ok(
        "stale firing",
        s.insert_push("a1", &firing(50, 500), &everyone, Vec::new())
            .await,
    );
    l.ok(
        "firing",
        s.insert_push("a1", &firing(51, 1_000), &everyone, Vec::new())
            .await,
    );
    l.ok(
        "firing again",
        s.insert_push("a1", &firing(52, 1_000), &everyone, Vec::new())
            .await,
    );
    l.ok(
        "failed run",
        s.record_failed_run(
            "s1",
            ScheduleRun {
                msg_id: None,
                error_code: 1003,
                error_message: "bad".into(),
                at_ms: 2_000,
            },
            None,
        )
        .await,
    );
    l.ok("runs", s.schedule_runs("s1").await);
    l.ok("schedules after", s.load_schedules().await);
    l.ok("delete schedule", s.delete_schedule("a1", "s2").await);
    l.ok("delete schedule again", s.delete_schedule("a1", "s2").await);
    l.ok(
        "delete schedule other app",
        s.delete_schedule("a2", "s1").await,
    );

    // Callbacks and the outbox.
    let endpoint = |url: &str, commands: Vec<String>| CallbackEndpoint {
        id: 0,
        app_key: "a1".into(),
        url: url.into(),
        commands,
        basic_auth: true,
        signing_secret: "sec".into(),
        created_ms: 9,
        start_event_id: 0,
        push_level: false,
        failing_since_ms: None,
        disabled_ms: None,
        format: CallbackFormat::Tencent,
    };
    l.ok(
        "events before",
        s.events_after("a1", None, "Push.Accepted", 0, 100).await,
    );
    let e1 = l
        .ok(
            "add callback",
            s.add_callback(endpoint("http://one", Vec::new())).await,
        )
        .unwrap_or(0);
    l.ok(
        "add callback 2",
        s.add_callback(endpoint("http://two", vec!["Push.Event".into()]))
            .await,
    );
    let many: Vec<NewEvent> = (10..16)
        .map(|n| {
            event(
                "a1",
                if n % 2 == 0 {
                    "Push.Event"
                } else {
                    "Push.Accepted"
                },
                n,
                None,
            )
        })
        .chain([event("a2", "Push.Event", 16, None)])
        .collect();
    l.ok("append", s.append_events(many).await);
    l.ok("append none", s.append_events(Vec::new()).await);
    l.ok(
        "events",
        s.events_after("a1", None, "Push.Event", 0, 100).await,
    );
    l.ok(
        "events limited",
        s.events_after("a1", None, "Push.Event", 0, 2).await,
    );
    l.ok(
        "events after",
        s.events_after("a1", None, "Push.Accepted", 3, 100).await,
    );
    l.ok(
        "events of a push endpoint",
        s.events_after("a1", Some(77), "Push.Accepted", 0, 100)
            .await,
    );
    l.ok("callbacks", s.list_callbacks().await);
    l.ok("cursor none", s.callback_cursor(e1, "Push.Event").await);
    let batch = |id: &str, first, last, events: &str| CallbackBatch {
        delivery_id: id.into(),
        endpoint_id: e1,
        command: "Push.Event".into(),
        events: events.into(),
        attempts: 0,
        next_ms: 5_000,
        first_ms: 4_000,
        dead: false,
        last_error: String::new(),
        first_event_id: first,
        last_event_id: last,
    };
    let outbox = s
        .events_after("a1", None, "Push.Event", 0, 100)
        .await
        .unwrap_or_default();
    let (first, last) = (
        outbox.first().map_or(0, |e| e.id),
        outbox.last().map_or(0, |e| e.id),
    );
    l.ok(
        "create batches",
        s.create_batches(
            e1,
            "Push.Event",
            vec![
                batch("b1", first, last, "ignored"),
                batch("b2", 0, 0, "[{\"held\":1}]"),
            ],
            last,
        )
        .await,
    );
    l.ok(
        "create batches behind",
        s.create_batches(e1, "Push.Event", Vec::new(), 1).await,
    );
    l.ok("cursor", s.callback_cursor(e1, "Push.Event").await);
    l.ok("batches", s.callback_batches(e1).await);
    l.ok(
        "fail b1",
        s.fail_batch("b1", 1, 6_000, false, "timeout").await,
    );
    l.ok(
        "fail b1 dead",
        s.fail_batch("b1", 2, 7_000, true, "gave up").await,
    );
    l.ok("batches after", s.callback_batches(e1).await);
    l.ok("replay b1", s.replay_batch(e1, "b1", 8_000).await);
    l.ok("replay b1 again", s.replay_batch(e1, "b1", 8_000).await);
    l.ok(
        "finish b2",
        s.finish_batches(vec!["b2".into(), "b9".into()]).await,
    );
    l.ok("batches finished", s.callback_batches(e1).await);
    let pe = endpoint("http://push", vec!["x".into()]);
    l.ok("push endpoint", s.push_endpoint(pe.clone()).await);
    l.ok("push endpoint again", s.push_endpoint(pe).await);
    l.ok("health", s.set_endpoint_health(e1, Some(100), None).await);
    l.ok(
        "disable",
        s.set_endpoint_health(e1, Some(100), Some(200)).await,
    );
    l.ok("batches disabled", s.callback_batches(e1).await);
    l.ok(
        "append more",
        s.append_events(vec![event("a1", "Push.Event", 20, None)])
            .await,
    );
    l.ok("enable", s.enable_callback("a1", e1).await);
    l.ok("enable other app", s.enable_callback("a2", e1).await);
    l.ok("cursor enabled", s.callback_cursor(e1, "Push.Event").await);
    l.ok("callbacks after", s.list_callbacks().await);
    l.ok("prune", s.prune_events("a1").await);
    l.ok(
        "events pruned",
        s.events_after("a1", None, "Push.Event", 0, 100).await,
    );
    l.ok("remove callback", s.remove_callback("a1", e1).await);
    l.ok("remove callback again", s.remove_callback("a1", e1).await);
    l.ok("prune again", s.prune_events("a1").await);
    l.ok(
        "events left",
        s.events_after("a1", None, "Push.Accepted", 0, 100).await,
    );

    // Files.
    let file = |id: &str, created_ms| FileRecord {
        file_id: id.into(),
        app_key: "a1".into(),
        kind: "alias".into(),
        file_name: "f.txt".into(),
        created_ms,
        expires_ms: 5_000,
        values: vec!["x".into(), "y".into()],
    };
    l.ok("file f2", s.put_file(file("f2", 1)).await);
    l.ok("file f1", s.put_file(file("f1", 1)).await);
    l.ok(
        "file empty",
        s.put_file(FileRecord {
            values: Vec::new(),
            ..file("f3", 2)
        })
        .await,
    );
    l.fails("file again", s.put_file(file("f1", 1)).await);
    l.ok("files", s.list_files("a1", 100).await);
    l.ok("files expired", s.list_files("a1", 5_000).await);
    l.ok("file", s.get_file("a1", "f1", 100).await);
    l.ok("file empty", s.get_file("a1", "f3", 100).await);
    l.ok("file expired", s.get_file("a1", "f1", 6_000).await);
    l.ok("delete file", s.delete_file("a1", "f1").await);
    l.ok("delete file again", s.delete_file("a1", "f1").await);

    // Geofences.
    let fence = |id: &str, created_ms| GeofenceRecord {
        app_key: "a1".into(),
        geofence_id: id.into(),
        name: format!("F {id}"),
        lat: 22.5,
        lon: 114.1,
        radius_m: 120.0,
        events: FENCE_ENTER | FENCE_STAY,
        stay_s: Some(60),
        audience: Audience::All,
        push: Some(push(0, 0)),
        repeat: false,
        cooldown_s: 0,
        start_ms: None,
        end_ms: Some(99_000),
        created_ms,
        given: json!({"id": id, "r": 120.0}),
    };
    let state = |id: &str, ordinal, entered_ms, stay_due_ms| FenceState {
        app_key: "a1".into(),
        geofence_id: id.into(),
        ordinal,
        inside: true,
        entered_ms,
        stay_due_ms,
        lat: 22.5,
        lon: 114.1,
        fired: FENCE_ENTER,
        last_fired_ms: [entered_ms, 0, 0],
    };
    l.ok("fence gb", s.put_geofence(fence("gb", 20)).await);
    l.ok("fence ga", s.put_geofence(fence("ga", 20)).await);
    l.ok("fence gc", s.put_geofence(fence("gc", 10)).await);
    l.ok("fence gb again", s.put_geofence(fence("gb", 5)).await);
    l.ok("fences", s.list_geofences("a1").await);
    l.ok("fences other app", s.list_geofences("a2").await);
    l.ok("fence", s.get_geofence("a1", "ga").await);
    l.ok("fence none", s.get_geofence("a2", "ga").await);
    l.ok(
        "fence states",
        s.write_fence_states(
            vec![
                state("ga", 1, 100, Some(160)),
                state("gb", 1, 100, Some(130)),
                state("gc", 2, 50, None),
                state("nope", 1, 100, Some(100)),
                FenceState {
                    inside: false,
                    fired: FENCE_LEAVE,
                    last_fired_ms: [0, 140, 0],
                    ..state("gb", 1, 90, None)
                },
                state("ga", 2, 100, Some(160)),
            ],
            vec![event("a1", "Geofence.Event", 30, None)],
        )
        .await,
    );
    l.ok("states of 1", s.fence_states("a1", 1).await);
    l.ok("states of 2", s.fence_states("a1", 2).await);
    l.ok("due stays", s.due_stays(1_000, 10).await);
    l.ok("due stays limited", s.due_stays(1_000, 1).await);
    l.ok("due stays none", s.due_stays(159, 10).await);
    let due = state("ga", 1, 100, Some(160));
    l.ok(
        "settle put off",
        s.settle_stay(due.clone(), None, Some(500), Vec::new())
            .await,
    );
    l.ok(
        "settle stale",
        s.settle_stay(due.clone(), Some(170), None, Vec::new())
            .await,
    );
    l.ok(
        "settle fired",
        s.settle_stay(
            state("ga", 1, 100, Some(500)),
            Some(510),
            None,
            vec![event("a1", "Geofence.Event", 31, None)],
        )
        .await,
    );
    l.ok(
        "settle another entry",
        s.settle_stay(state("ga", 2, 99, Some(160)), Some(170), None, Vec::new())
            .await,
    );
    l.ok("states settled", s.fence_states("a1", 1).await);
    l.ok(
        "geofence events",
        s.events_after("a1", None, "Geofence.Event", 0, 100).await,
    );
    l.ok("delete fence", s.delete_geofence("a1", "ga").await);
    l.ok("delete fence again", s.delete_geofence("a1", "ga").await);
    l.ok("states after delete", s.fence_states("a1", 2).await);
    l.ok("fences after delete", s.list_geofences("a1").await);

    // The cluster's ports.
    l.ok("ordinals", s.reserve_ordinals("a1", 10).await);
    l.ok("ordinals again", s.reserve_ordinals("a1", 1).await);
    l.ok("ordinals of a new app", s.reserve_ordinals("a3", 5).await);
    l.ok("msg ids", s.reserve_msg_ids(5, 0).await);
    l.ok("msg ids again", s.reserve_msg_ids(5, 0).await);
    l.ok("msg ids floor", s.reserve_msg_ids(5, 1_000).await);
    let cursor = s.feed_cursor().await.unwrap_or(0);
    l.ok("no changes", s.changes_since(cursor, 10).await.map(|c| c.0));
    l.ok("put d3", s.put_device(device("a1", 3, "r3")).await);
    l.ok(
        "push 60",
        s.insert_push("a1", &push(60, 1_000), &everyone, Vec::new())
            .await,
    );
    l.ok("recall 60", s.recall_push(60, 2_000, Vec::new()).await);
    l.ok("put d0 again", s.put_device(device("a1", 0, "r0")).await);
    l.ok("fence gd", s.put_geofence(fence("gd", 30)).await);
    l.ok("delete fence gc", s.delete_geofence("a1", "gc").await);
    l.ok("changes", s.changes_since(cursor, 10).await.map(|c| c.0));
    l.ok(
        "changes limited",
        s.changes_since(cursor, 2).await.map(|c| c.0),
    );
    let mut all = Vec::new();
    let mut at = cursor;
    for _ in 0..10 {
        match s.changes_since(at, 1).await {
            Ok((changes, next)) if !changes.is_empty() => {
                all.extend(changes);
                at = next;
            }
            _ => break,
        }
    }
    l.ok("changes one at a time", Ok::<_, StoreError>(all));
    l.ok("lease", s.take_lease("l", "n1", 60_000).await);
    l.ok("lease taken", s.take_lease("l", "n2", 60_000).await);
    l.ok("lease renewed", s.take_lease("l", "n1", 60_000).await);
    l.ok("holds", s.lease_holds("l", 1).await);
    l.ok("holds not", s.lease_holds("l", 2).await);
    l.ok("release not", s.release_lease("l", "n2").await);
    l.ok("release", s.release_lease("l", "n1").await);
    l.ok("release again", s.release_lease("l", "n1").await);
    l.ok("holds released", s.lease_holds("l", 1).await);
    l.ok("lease to n2", s.take_lease("l", "n2", 60_000).await);
    l.ok("lease node", s.take_lease("node:n1", "n1", 60_000).await);
    l.ok(
        "leases",
        s.leases().await.map(|v| {
            v.into_iter()
                .map(|l| (l.name, l.holder, l.token))
                .collect::<Vec<_>>()
        }),
    );
    l.ok(
        "presence n1",
        s.set_presence(
            "n1",
            vec![
                ("a1".into(), 1, true),
                ("a1".into(), 2, true),
                ("a1".into(), 2, false),
                ("a1".into(), 4, true),
            ],
        )
        .await,
    );
    l.ok(
        "presence n2",
        s.set_presence("n2", vec![("a1".into(), 3, true), ("a1".into(), 4, false)])
            .await,
    );
    l.ok("presence", s.presence("a1", vec![3, 4, 2, 1, 1]).await);
    l.ok(
        "presence moved",
        s.set_presence("n2", vec![("a1".into(), 1, true), ("a1".into(), 1, false)])
            .await,
    );
    l.ok("presence after move", s.presence("a1", vec![1, 4]).await);
    l.ok("clear presence", s.clear_presence("n1").await);
    l.ok("presence cleared", s.presence("a1", vec![1, 4]).await);
    l.ok("close", s.close().await);
    log.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_port_answers_as_the_sqlite_store_does() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sqlite = SqliteStore::open(dir.path().join("db"), Synchronous::Normal).expect("SQLite");
    let expected = script(&sqlite).await;
    let url = common::fresh_db("same").await;
    let pg = PostgresStore::connect(&url, "n1").await.expect("connect");
    let got = script(&pg).await;
    let mut differences = Vec::new();
    for (i, (want, have)) in expected.iter().zip(&got).enumerate() {
        if want != have {
            differences.push(format!("#{i}\n  sqlite:   {want}\n  postgres: {have}"));
        }
    }
    assert_eq!(expected.len(), got.len(), "as many answers");
    assert!(
        differences.is_empty(),
        "{} answers differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
    // Error paths must have been exercised: the log says which calls failed.
    assert!(got.iter().any(|l| l.contains("Err(Conflict)")));
}
