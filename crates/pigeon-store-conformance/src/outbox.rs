//! Callback endpoints, the outbox, cursors and batches.

use crate::pushes::outbox;
use crate::{endpoint, event, DynStore};
use pigeon_store::{batch_events_json, CallbackBatch, CallbackFormat, NewEvent, StoredEvent};

const ACCEPTED: &str = "Push.Accepted";
const EVENT: &str = "Push.Event";

/// Appends one event and returns it as stored.
async fn append_one(store: &DynStore, e: NewEvent) -> StoredEvent {
    let (app_key, endpoint, command) = (e.app_key.clone(), e.endpoint_id, e.command.clone());
    let before = store
        .events_after(&app_key, endpoint, &command, 0, 100_000)
        .await
        .unwrap();
    store.append_events(vec![e]).await.unwrap();
    let after = store
        .events_after(&app_key, endpoint, &command, 0, 100_000)
        .await
        .unwrap();
    assert_eq!(after.len(), before.len() + 1);
    after.last().cloned().unwrap()
}

fn batch(id: &str, endpoint_id: u64, events: &[StoredEvent], first_ms: u64) -> CallbackBatch {
    CallbackBatch {
        delivery_id: id.into(),
        endpoint_id,
        command: ACCEPTED.into(),
        events: batch_events_json(events),
        attempts: 0,
        next_ms: first_ms,
        first_ms,
        dead: false,
        last_error: String::new(),
        first_event_id: events.first().map_or(0, |e| e.id),
        last_event_id: events.last().map_or(0, |e| e.id),
    }
}

pub async fn callback_endpoints_are_added_listed_and_removed(store: DynStore) {
    assert!(store.list_callbacks().await.unwrap().is_empty());
    let before = append_one(&store, event("k", ACCEPTED, 1)).await;
    let mut e1 = endpoint("k", "https://a.example/cb", &[ACCEPTED, EVENT]);
    e1.format = CallbackFormat::Tencent;
    e1.basic_auth = false;
    let id1 = store.add_callback(e1.clone()).await.unwrap();
    let e2 = endpoint("other", "https://b.example/cb", &[]);
    let id2 = store.add_callback(e2.clone()).await.unwrap();
    assert!(id2 > id1);
    // Listed by id, as given, starting after the events that were there before.
    let listed = store.list_callbacks().await.unwrap();
    assert_eq!(
        listed,
        [
            pigeon_store::CallbackEndpoint {
                id: id1,
                start_event_id: before.id,
                ..e1
            },
            pigeon_store::CallbackEndpoint {
                id: id2,
                start_event_id: before.id,
                ..e2.clone()
            }
        ]
    );
    // Only its own app removes it; its cursors and batches go with it.
    store
        .create_batches(
            id1,
            ACCEPTED,
            vec![batch("d1", id1, std::slice::from_ref(&before), 1)],
            before.id,
        )
        .await
        .unwrap();
    assert!(!store.remove_callback("other", id1).await.unwrap());
    assert!(store.remove_callback("k", id1).await.unwrap());
    assert!(!store.remove_callback("k", id1).await.unwrap());
    assert!(store.callback_batches(id1).await.unwrap().is_empty());
    assert_eq!(store.callback_cursor(id1, ACCEPTED).await.unwrap(), None);
    let listed = store.list_callbacks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id2);
    // Ids are not given again.
    let id3 = store.add_callback(e2).await.unwrap();
    assert!(id3 > id2);
}

pub async fn a_push_level_endpoint_is_found_or_added(store: DynStore) {
    append_one(&store, event("k", ACCEPTED, 1)).await;
    let mut asked = endpoint("k", "https://p.example/cb", &[]);
    asked.format = CallbackFormat::Tencent;
    asked.start_event_id = 99;
    let p = store.push_endpoint(asked.clone()).await.unwrap();
    assert!(p.id > 0);
    assert_eq!(
        p,
        pigeon_store::CallbackEndpoint {
            id: p.id,
            start_event_id: 0,
            push_level: true,
            format: CallbackFormat::Pigeon,
            ..asked.clone()
        }
    );
    // The same URL again: the same endpoint.
    assert_eq!(store.push_endpoint(asked.clone()).await.unwrap(), p);
    // An app-wide endpoint of that URL, or another app's, is not it.
    let wide = store
        .add_callback(endpoint("k", "https://w.example/cb", &[]))
        .await
        .unwrap();
    let w = store
        .push_endpoint(endpoint("k", "https://w.example/cb", &[]))
        .await
        .unwrap();
    assert!(w.push_level && w.id != wide && w.id != p.id);
    let o = store
        .push_endpoint(endpoint("other", "https://p.example/cb", &[]))
        .await
        .unwrap();
    assert!(o.id != p.id && o.app_key == "other");
    let listed = store.list_callbacks().await.unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed.iter().find(|e| e.id == p.id), Some(&p));
    // Events addressed to it are its own.
    let mine = append_one(
        &store,
        NewEvent {
            endpoint_id: Some(p.id),
            ..event("k", EVENT, 2)
        },
    )
    .await;
    assert_eq!(
        store
            .events_after("k", Some(p.id), EVENT, 0, 10)
            .await
            .unwrap(),
        [mine]
    );
    assert!(outbox(&store, "k", EVENT).await.is_empty());
    assert!(store
        .events_after("k", Some(w.id), EVENT, 0, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn events_after_filters_and_pages(store: DynStore) {
    let mut accepted = Vec::new();
    for n in 1..=5 {
        accepted.push(append_one(&store, event("k", ACCEPTED, n)).await);
    }
    append_one(&store, event("k", EVENT, 1)).await;
    append_one(&store, event("other", ACCEPTED, 1)).await;
    append_one(
        &store,
        NewEvent {
            endpoint_id: Some(77),
            ..event("k", ACCEPTED, 100)
        },
    )
    .await;
    // Several commands in one write: each command's in their order.
    store
        .append_events(vec![
            event("k", ACCEPTED, 6),
            event("k", EVENT, 2),
            event("k", ACCEPTED, 7),
        ])
        .await
        .unwrap();
    let all = outbox(&store, "k", ACCEPTED).await;
    let ns: Vec<String> = all.iter().map(|e| e.body.clone()).collect();
    let expected: Vec<String> = (1..=7).map(|n| event("k", ACCEPTED, n).body).collect();
    assert_eq!(ns, expected);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    assert_eq!(&all[..5], &accepted[..]);
    for e in &all {
        assert_eq!(e.command, ACCEPTED);
    }
    assert_eq!(all[0].at_ms, event("k", ACCEPTED, 1).at_ms);
    // Every id is new: the later write's ids are above the earlier ones'.
    assert!(all[5].id > accepted[4].id);
    let events: Vec<String> = outbox(&store, "k", EVENT)
        .await
        .into_iter()
        .map(|e| e.body)
        .collect();
    assert_eq!(
        events,
        [event("k", EVENT, 1).body, event("k", EVENT, 2).body]
    );
    assert_eq!(outbox(&store, "other", ACCEPTED).await.len(), 1);
    let addressed = store
        .events_after("k", Some(77), ACCEPTED, 0, 10)
        .await
        .unwrap();
    assert_eq!(addressed.len(), 1);
    assert_eq!(addressed[0].body, event("k", ACCEPTED, 100).body);

    // After an id, at most `limit`; paging by the last id gives each event once.
    let after = store
        .events_after("k", None, ACCEPTED, all[2].id, 100)
        .await
        .unwrap();
    assert_eq!(after, all[3..]);
    let mut paged = Vec::new();
    let mut cursor = 0;
    loop {
        let page = store
            .events_after("k", None, ACCEPTED, cursor, 2)
            .await
            .unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = last.id;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(store
        .events_after("k", None, ACCEPTED, all[6].id, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .events_after("k", None, ACCEPTED, 0, 0)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .events_after("k", None, "Sms.Result", 0, 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn callback_cursors_only_move_forward(store: DynStore) {
    let id = store
        .add_callback(endpoint("k", "https://a.example/", &[]))
        .await
        .unwrap();
    let id2 = store
        .add_callback(endpoint("k", "https://b.example/", &[]))
        .await
        .unwrap();
    assert_eq!(store.callback_cursor(id, ACCEPTED).await.unwrap(), None);
    store
        .create_batches(id, ACCEPTED, Vec::new(), 5)
        .await
        .unwrap();
    assert_eq!(store.callback_cursor(id, ACCEPTED).await.unwrap(), Some(5));
    // A late write of an earlier window does not move it back.
    store
        .create_batches(id, ACCEPTED, Vec::new(), 3)
        .await
        .unwrap();
    assert_eq!(store.callback_cursor(id, ACCEPTED).await.unwrap(), Some(5));
    store
        .create_batches(id, ACCEPTED, Vec::new(), 9)
        .await
        .unwrap();
    assert_eq!(store.callback_cursor(id, ACCEPTED).await.unwrap(), Some(9));
    // Per command and per endpoint.
    assert_eq!(store.callback_cursor(id, EVENT).await.unwrap(), None);
    assert_eq!(store.callback_cursor(id2, ACCEPTED).await.unwrap(), None);
    store
        .create_batches(id2, ACCEPTED, Vec::new(), 1)
        .await
        .unwrap();
    assert_eq!(store.callback_cursor(id2, ACCEPTED).await.unwrap(), Some(1));
    assert_eq!(store.callback_cursor(id, ACCEPTED).await.unwrap(), Some(9));
    // Concurrent windows committed in any order end at the furthest.
    let writes: Vec<_> = (10..30u64)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.create_batches(id, ACCEPTED, Vec::new(), n).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    assert_eq!(store.callback_cursor(id, ACCEPTED).await.unwrap(), Some(29));
}

pub async fn batches_are_created_failed_replayed_and_finished(store: DynStore) {
    let id = store
        .add_callback(endpoint("k", "https://a.example/", &[]))
        .await
        .unwrap();
    let other = store
        .add_callback(endpoint("k", "https://b.example/", &[]))
        .await
        .unwrap();
    let mut events = Vec::new();
    for n in 1..=4 {
        events.push(append_one(&store, event("k", ACCEPTED, n)).await);
    }
    let b1 = batch("d1", id, &events[0..2], 100);
    let b2 = batch("d2", id, &events[2..4], 200);
    // A batch that holds its events itself.
    let b0 = CallbackBatch {
        events: r#"[{"EventId":"held","N":0}]"#.into(),
        first_event_id: 0,
        last_event_id: 0,
        ..batch("d0", id, &[], 50)
    };
    store
        .create_batches(
            id,
            ACCEPTED,
            vec![b1.clone(), b2.clone(), b0.clone()],
            events[3].id,
        )
        .await
        .unwrap();
    assert_eq!(
        store.callback_cursor(id, ACCEPTED).await.unwrap(),
        Some(events[3].id)
    );
    // Oldest first, each with its events as sent.
    assert_eq!(
        store.callback_batches(id).await.unwrap(),
        [b0.clone(), b1.clone(), b2.clone()]
    );
    assert!(store.callback_batches(other).await.unwrap().is_empty());

    // A failed try: its next one.
    store
        .fail_batch("d1", 1, 1_000, false, "HTTP 500")
        .await
        .unwrap();
    let b1_retry = CallbackBatch {
        attempts: 1,
        next_ms: 1_000,
        last_error: "HTTP 500".into(),
        ..b1.clone()
    };
    assert_eq!(store.callback_batches(id).await.unwrap()[1], b1_retry);
    // Given up: dead, holding its events itself.
    store
        .fail_batch("d1", 5, 2_000, true, "gave up")
        .await
        .unwrap();
    let b1_dead = CallbackBatch {
        attempts: 5,
        next_ms: 2_000,
        dead: true,
        last_error: "gave up".into(),
        first_event_id: 0,
        last_event_id: 0,
        ..b1.clone()
    };
    assert_eq!(store.callback_batches(id).await.unwrap()[1], b1_dead);

    // Only a dead batch of that endpoint is replayed.
    assert!(!store.replay_batch(id, "d2", 3_000).await.unwrap());
    assert!(!store.replay_batch(other, "d1", 3_000).await.unwrap());
    assert!(!store.replay_batch(id, "nope", 3_000).await.unwrap());
    assert!(store.replay_batch(id, "d1", 3_000).await.unwrap());
    let b1_again = CallbackBatch {
        attempts: 0,
        next_ms: 3_000,
        first_ms: 3_000,
        dead: false,
        ..b1_dead
    };
    assert_eq!(
        store.callback_batches(id).await.unwrap(),
        [b0, b2.clone(), b1_again]
    );
    assert!(!store.replay_batch(id, "d1", 4_000).await.unwrap());

    // Taken: forgotten (unknown ids are no error).
    store
        .finish_batches(vec!["d1".into(), "d0".into(), "unknown".into()])
        .await
        .unwrap();
    assert_eq!(store.callback_batches(id).await.unwrap(), [b2]);
    store.finish_batches(vec!["d2".into()]).await.unwrap();
    assert!(store.callback_batches(id).await.unwrap().is_empty());
}

pub async fn endpoint_health_and_enabling_again(store: DynStore) {
    let id = store
        .add_callback(endpoint("k", "https://a.example/", &[]))
        .await
        .unwrap();
    let mut events = Vec::new();
    for n in 1..=2 {
        events.push(append_one(&store, event("k", ACCEPTED, n)).await);
    }
    let b1 = batch("d1", id, &events, 100);
    store
        .create_batches(id, ACCEPTED, vec![b1.clone()], events[1].id)
        .await
        .unwrap();
    let listed = |store: DynStore| async move {
        store
            .list_callbacks()
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.id == id)
            .unwrap()
    };
    // Failing: noted, batches untouched.
    store
        .set_endpoint_health(id, Some(500), None)
        .await
        .unwrap();
    let e = listed(store.clone()).await;
    assert_eq!((e.failing_since_ms, e.disabled_ms), (Some(500), None));
    assert_eq!(
        store.callback_batches(id).await.unwrap(),
        std::slice::from_ref(&b1)
    );
    // A healthy endpoint again.
    store.set_endpoint_health(id, None, None).await.unwrap();
    let e = listed(store.clone()).await;
    assert_eq!((e.failing_since_ms, e.disabled_ms), (None, None));
    // Enabling an endpoint that is not disabled changes nothing.
    assert!(store.enable_callback("k", id).await.unwrap());
    assert_eq!(listed(store.clone()).await.start_event_id, e.start_event_id);
    assert_eq!(
        store.callback_cursor(id, ACCEPTED).await.unwrap(),
        Some(events[1].id)
    );

    // Disabled: its batches are dead and hold their events.
    store
        .set_endpoint_health(id, Some(500), Some(900))
        .await
        .unwrap();
    let e = listed(store.clone()).await;
    assert_eq!((e.failing_since_ms, e.disabled_ms), (Some(500), Some(900)));
    assert_eq!(
        store.callback_batches(id).await.unwrap(),
        [CallbackBatch {
            dead: true,
            first_event_id: 0,
            last_event_id: 0,
            ..b1
        }]
    );
    // What happens while it is disabled is not kept for it.
    let missed = append_one(&store, event("k", ACCEPTED, 3)).await;
    assert!(!store.enable_callback("other", id).await.unwrap());
    assert!(!store.enable_callback("k", id + 1_000).await.unwrap());
    assert_eq!(listed(store.clone()).await.disabled_ms, Some(900));
    assert!(store.enable_callback("k", id).await.unwrap());
    let e = listed(store.clone()).await;
    assert_eq!((e.failing_since_ms, e.disabled_ms), (None, None));
    assert_eq!(e.start_event_id, missed.id);
    assert_eq!(
        store.callback_cursor(id, ACCEPTED).await.unwrap(),
        Some(missed.id)
    );
    // Its dead batch is still there to replay.
    assert_eq!(store.callback_batches(id).await.unwrap().len(), 1);
    assert!(store.replay_batch(id, "d1", 1_000).await.unwrap());
}

pub async fn prune_drops_only_what_every_endpoint_has_batched(store: DynStore) {
    // Nothing to prune in an empty outbox.
    assert_eq!(store.prune_events("k").await.unwrap(), 0);
    let id = store
        .add_callback(endpoint("k", "https://a.example/", &[ACCEPTED]))
        .await
        .unwrap();
    let mut accepted = Vec::new();
    for n in 1..=3 {
        accepted.push(append_one(&store, event("k", ACCEPTED, n)).await);
    }
    for n in 1..=2 {
        append_one(&store, event("k", EVENT, n)).await;
    }
    append_one(&store, event("other", ACCEPTED, 1)).await;
    // No endpoint wants Push.Event: those go; the endpoint has batched no Push.Accepted yet.
    assert_eq!(store.prune_events("k").await.unwrap(), 2);
    assert!(outbox(&store, "k", EVENT).await.is_empty());
    assert_eq!(outbox(&store, "k", ACCEPTED).await, accepted);
    // Batched, but the batch still waits: its events stay.
    let b = batch("d1", id, &accepted[0..2], 100);
    store
        .create_batches(id, ACCEPTED, vec![b.clone()], accepted[1].id)
        .await
        .unwrap();
    assert_eq!(store.prune_events("k").await.unwrap(), 0);
    assert_eq!(store.callback_batches(id).await.unwrap(), [b]);
    // Taken: they go; the one not batched stays.
    store.finish_batches(vec!["d1".into()]).await.unwrap();
    assert_eq!(store.prune_events("k").await.unwrap(), 2);
    assert_eq!(outbox(&store, "k", ACCEPTED).await, &accepted[2..]);
    // A second app-wide endpoint that starts later holds nothing back before its start.
    let late = store
        .add_callback(endpoint("k", "https://b.example/", &[]))
        .await
        .unwrap();
    let fourth = append_one(&store, event("k", ACCEPTED, 4)).await;
    store
        .create_batches(id, ACCEPTED, Vec::new(), fourth.id)
        .await
        .unwrap();
    // accepted[2] is before `late` started: it goes; the fourth waits for `late`.
    assert_eq!(store.prune_events("k").await.unwrap(), 1);
    assert_eq!(
        outbox(&store, "k", ACCEPTED).await,
        std::slice::from_ref(&fourth)
    );
    store
        .create_batches(late, ACCEPTED, Vec::new(), fourth.id)
        .await
        .unwrap();
    assert_eq!(store.prune_events("k").await.unwrap(), 1);
    assert!(outbox(&store, "k", ACCEPTED).await.is_empty());

    // A push-level endpoint's events wait for it, and go with it.
    let p = store
        .push_endpoint(endpoint("k", "https://p.example/", &[]))
        .await
        .unwrap();
    let addressed = NewEvent {
        endpoint_id: Some(p.id),
        ..event("k", EVENT, 9)
    };
    let mine = append_one(&store, addressed).await;
    assert_eq!(store.prune_events("k").await.unwrap(), 0);
    assert!(store.remove_callback("k", p.id).await.unwrap());
    assert_eq!(store.prune_events("k").await.unwrap(), 1);
    assert!(store
        .events_after("k", Some(p.id), EVENT, 0, 10)
        .await
        .unwrap()
        .is_empty());
    let _ = mine;
    // Another app's outbox is its own.
    assert_eq!(outbox(&store, "other", ACCEPTED).await.len(), 1);
}
