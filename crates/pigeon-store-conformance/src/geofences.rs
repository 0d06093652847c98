//! Geofences and where each device stands with each of them (the `GeofenceStore` port).

use crate::pushes::outbox;
use crate::{event, push, Backend, DynStore, NODE_B};
use pigeon_core::{Audience, AudienceExpr};
use pigeon_store::{
    Change, FenceState, GeofenceRecord, NewEvent, FENCE_ENTER, FENCE_LEAVE, FENCE_STAY,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

const GEOFENCE_EVENT: &str = "Geofence.Event";

/// A fence with every field set.
pub fn geofence(app_key: &str, geofence_id: &str, created_ms: u64) -> GeofenceRecord {
    let mut p = push(0, 0, 600);
    p.content.message = p.content.message.map(|mut m| {
        m.content = format!("near {geofence_id}");
        m
    });
    GeofenceRecord {
        app_key: app_key.into(),
        geofence_id: geofence_id.into(),
        name: format!("Fence {geofence_id}"),
        lat: 22.543_096,
        lon: 114.057_865,
        radius_m: 150.5,
        events: FENCE_ENTER | FENCE_STAY,
        stay_s: Some(300),
        audience: Audience::Expr(AudienceExpr {
            tag: vec!["shoppers".into()],
            ..Default::default()
        }),
        push: Some(p),
        repeat: true,
        cooldown_s: 60,
        start_ms: Some(1_000),
        end_ms: None,
        created_ms,
        given: json!({"geofence_id": geofence_id, "radius": 150.5, "nested": {"a": [1, 2]}}),
    }
}

/// A device inside a fence since `entered_ms`, its stay due at `stay_due_ms`, nothing fired.
pub fn fence_state(
    app_key: &str,
    geofence_id: &str,
    ordinal: u32,
    entered_ms: u64,
    stay_due_ms: Option<u64>,
) -> FenceState {
    FenceState {
        app_key: app_key.into(),
        geofence_id: geofence_id.into(),
        ordinal,
        inside: true,
        entered_ms,
        stay_due_ms,
        lat: 22.5 + f64::from(ordinal) / 1_000.0,
        lon: 114.0,
        fired: 0,
        last_fired_ms: [0, 0, 0],
    }
}

fn fence_event(app_key: &str, n: u64) -> NewEvent {
    event(app_key, GEOFENCE_EVENT, n)
}

/// The bodies of the app's `Geofence.Event`s in the outbox.
async fn fence_events(store: &DynStore, app_key: &str) -> Vec<String> {
    outbox(store, app_key, GEOFENCE_EVENT)
        .await
        .into_iter()
        .map(|e| e.body)
        .collect()
}

/// The one state of a device with a fence.
async fn state_of(
    store: &DynStore,
    app_key: &str,
    ordinal: u32,
    geofence_id: &str,
) -> Option<FenceState> {
    store
        .fence_states(app_key, ordinal)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.geofence_id == geofence_id)
}

/// The geofences the feed names from `cursor` on (read `limit` at a time), and where it ends.
async fn geofence_changes(
    store: &DynStore,
    mut cursor: u64,
    limit: usize,
) -> (BTreeSet<(String, String)>, u64) {
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
            if let Change::Geofence {
                app_key,
                geofence_id,
            } = c
            {
                seen.insert((app_key, geofence_id));
            }
        }
    }
}

fn pairs(v: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    v.iter()
        .map(|(a, g)| (a.to_string(), g.to_string()))
        .collect()
}

pub async fn geofences_are_put_got_and_listed_oldest_first(store: DynStore) {
    assert!(store.list_geofences("k").await.unwrap().is_empty());
    assert_eq!(store.get_geofence("k", "g1").await.unwrap(), None);
    let (g2, g1, g0) = (
        geofence("k", "g2", 200),
        geofence("k", "g1", 100),
        geofence("k", "g0", 200),
    );
    let theirs = geofence("other", "g1", 50);
    for g in [&g2, &g1, &theirs, &g0] {
        store.put_geofence(g.clone()).await.unwrap();
    }
    // Read back as given, every field.
    assert_eq!(
        store.get_geofence("k", "g1").await.unwrap(),
        Some(g1.clone())
    );
    assert_eq!(
        store.get_geofence("other", "g1").await.unwrap(),
        Some(theirs.clone())
    );
    // Oldest first (ties by id); another app's fences are not listed nor found.
    assert_eq!(
        store.list_geofences("k").await.unwrap(),
        [g1.clone(), g0.clone(), g2.clone()]
    );
    assert_eq!(store.list_geofences("other").await.unwrap(), [theirs]);
    assert_eq!(store.get_geofence("other", "g2").await.unwrap(), None);
    assert!(store.list_geofences("nobody").await.unwrap().is_empty());
}

pub async fn a_replaced_geofence_keeps_what_the_caller_gave(store: DynStore) {
    store.put_geofence(geofence("k", "g1", 100)).await.unwrap();
    store.put_geofence(geofence("k", "g2", 200)).await.unwrap();
    let mut changed = geofence("k", "g2", 50);
    changed.name = "renamed".into();
    changed.radius_m = 10.0;
    changed.events = FENCE_LEAVE;
    changed.stay_s = None;
    changed.audience = Audience::All;
    changed.push = None;
    changed.repeat = false;
    changed.start_ms = None;
    changed.end_ms = Some(9_000);
    changed.given = json!({"replaced": true});
    store.put_geofence(changed.clone()).await.unwrap();
    assert_eq!(
        store.get_geofence("k", "g2").await.unwrap(),
        Some(changed.clone())
    );
    // Its created_ms is the one given now: it moves in the list.
    assert_eq!(
        store.list_geofences("k").await.unwrap(),
        [changed, geofence("k", "g1", 100)]
    );
}

pub async fn a_geofence_is_deleted_once_with_its_states(store: DynStore) {
    store.put_geofence(geofence("k", "g1", 100)).await.unwrap();
    store.put_geofence(geofence("k", "g2", 200)).await.unwrap();
    store
        .write_fence_states(
            vec![
                fence_state("k", "g1", 1, 10, Some(500)),
                fence_state("k", "g2", 1, 10, Some(600)),
                fence_state("k", "g1", 2, 10, None),
            ],
            Vec::new(),
        )
        .await
        .unwrap();
    // Not another app's, not an unknown one.
    assert!(!store.delete_geofence("other", "g1").await.unwrap());
    assert!(!store.delete_geofence("k", "g9").await.unwrap());
    assert!(store.delete_geofence("k", "g1").await.unwrap());
    assert_eq!(store.get_geofence("k", "g1").await.unwrap(), None);
    assert_eq!(
        store.list_geofences("k").await.unwrap(),
        [geofence("k", "g2", 200)]
    );
    // Its states are gone, every device's; the other fence's stay.
    assert_eq!(
        store.fence_states("k", 1).await.unwrap(),
        [fence_state("k", "g2", 1, 10, Some(600))]
    );
    assert!(store.fence_states("k", 2).await.unwrap().is_empty());
    let due = store.due_stays(10_000, 10).await.unwrap();
    assert_eq!(due, [fence_state("k", "g2", 1, 10, Some(600))]);
    // Once.
    assert!(!store.delete_geofence("k", "g1").await.unwrap());
    // Put again, it is a new fence: no state of the old one comes back.
    store.put_geofence(geofence("k", "g1", 300)).await.unwrap();
    assert_eq!(
        store.get_geofence("k", "g1").await.unwrap(),
        Some(geofence("k", "g1", 300))
    );
    assert!(store.fence_states("k", 2).await.unwrap().is_empty());
    assert!(store.delete_geofence("k", "g1").await.unwrap());
}

pub async fn fence_states_are_merged_into_the_stored_ones(store: DynStore) {
    store.put_geofence(geofence("k", "g1", 100)).await.unwrap();
    store.put_geofence(geofence("k", "g2", 100)).await.unwrap();
    store
        .put_geofence(geofence("other", "g1", 100))
        .await
        .unwrap();
    let mut first = fence_state("k", "g1", 7, 1_000, Some(1_300));
    first.fired = FENCE_ENTER;
    first.last_fired_ms = [1_000, 0, 0];
    store
        .write_fence_states(vec![first.clone()], Vec::new())
        .await
        .unwrap();
    assert_eq!(store.fence_states("k", 7).await.unwrap(), [first.clone()]);

    // A later write: inside, entered_ms, stay_due_ms, lat and lon replaced; fired or'ed;
    // each last time the later one (another node's firing is never undone).
    let left = FenceState {
        inside: false,
        entered_ms: 900,
        stay_due_ms: None,
        lat: 1.5,
        lon: -2.5,
        fired: FENCE_LEAVE,
        last_fired_ms: [500, 2_000, 0],
        ..first.clone()
    };
    store
        .write_fence_states(vec![left.clone()], Vec::new())
        .await
        .unwrap();
    let merged = FenceState {
        fired: FENCE_ENTER | FENCE_LEAVE,
        last_fired_ms: [1_000, 2_000, 0],
        ..left.clone()
    };
    assert_eq!(
        store.fence_states("k", 7).await.unwrap(),
        std::slice::from_ref(&merged)
    );

    // A state written from an older read (nothing fired, no times) clears nothing.
    let again = FenceState {
        inside: true,
        entered_ms: 3_000,
        stay_due_ms: Some(3_300),
        lat: 3.0,
        lon: 4.0,
        fired: 0,
        last_fired_ms: [0, 0, 0],
        ..first.clone()
    };
    store
        .write_fence_states(vec![again.clone()], Vec::new())
        .await
        .unwrap();
    let now = FenceState {
        fired: FENCE_ENTER | FENCE_LEAVE,
        last_fired_ms: [1_000, 2_000, 0],
        ..again.clone()
    };
    assert_eq!(
        store.fence_states("k", 7).await.unwrap(),
        std::slice::from_ref(&now)
    );

    // Two states of one device and fence in one write: merged in the order given.
    let mut a = fence_state("k", "g2", 7, 5_000, Some(5_300));
    a.fired = FENCE_ENTER;
    a.last_fired_ms = [5_000, 0, 0];
    let mut b = fence_state("k", "g2", 7, 5_000, None);
    b.inside = false;
    b.lat = 9.0;
    b.fired = FENCE_LEAVE;
    b.last_fired_ms = [0, 5_500, 0];
    // And one for another device, and another app's device of the same ordinal.
    let c = fence_state("k", "g1", 8, 10, None);
    let d = fence_state("other", "g1", 7, 20, Some(50));
    store
        .write_fence_states(vec![a, b.clone(), c.clone(), d.clone()], Vec::new())
        .await
        .unwrap();
    let both = FenceState {
        fired: FENCE_ENTER | FENCE_LEAVE,
        last_fired_ms: [5_000, 5_500, 0],
        ..b
    };
    // One device's states, every fence it has one with (by fence id).
    assert_eq!(store.fence_states("k", 7).await.unwrap(), [now, both]);
    assert_eq!(store.fence_states("k", 8).await.unwrap(), [c]);
    assert_eq!(store.fence_states("other", 7).await.unwrap(), [d]);
    assert!(store.fence_states("k", 9).await.unwrap().is_empty());
    assert!(store.fence_states("nobody", 7).await.unwrap().is_empty());
}

pub async fn fence_states_of_a_missing_fence_are_left_out_and_events_written(store: DynStore) {
    store
        .put_geofence(geofence("k", "live", 100))
        .await
        .unwrap();
    store
        .put_geofence(geofence("k", "gone", 100))
        .await
        .unwrap();
    assert!(store.delete_geofence("k", "gone").await.unwrap());
    store
        .put_geofence(geofence("other", "theirs", 100))
        .await
        .unwrap();
    let events = vec![fence_event("k", 1), fence_event("k", 2)];
    store
        .write_fence_states(
            vec![
                fence_state("k", "never", 1, 10, Some(100)),
                fence_state("k", "gone", 1, 10, Some(100)),
                fence_state("k", "live", 1, 10, Some(100)),
                // Another app's fence id under this app: no such fence.
                fence_state("k", "theirs", 1, 10, Some(100)),
            ],
            events.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.fence_states("k", 1).await.unwrap(),
        [fence_state("k", "live", 1, 10, Some(100))]
    );
    assert_eq!(
        store.due_stays(1_000, 10).await.unwrap(),
        [fence_state("k", "live", 1, 10, Some(100))]
    );
    // The events are written with them, readable through the outbox.
    let bodies: Vec<String> = events.iter().map(|e| e.body.clone()).collect();
    assert_eq!(fence_events(&store, "k").await, bodies);
    // Events alone, and states alone.
    store
        .write_fence_states(Vec::new(), vec![fence_event("k", 3)])
        .await
        .unwrap();
    store
        .write_fence_states(vec![fence_state("k", "live", 2, 10, None)], Vec::new())
        .await
        .unwrap();
    assert_eq!(fence_events(&store, "k").await.len(), 3);
    assert_eq!(store.fence_states("k", 2).await.unwrap().len(), 1);
    // Only states of missing fences, with events: the events are still written.
    store
        .write_fence_states(
            vec![fence_state("k", "gone", 3, 10, None)],
            vec![fence_event("k", 4)],
        )
        .await
        .unwrap();
    assert!(store.fence_states("k", 3).await.unwrap().is_empty());
    assert_eq!(fence_events(&store, "k").await.len(), 4);
    store
        .write_fence_states(Vec::new(), Vec::new())
        .await
        .unwrap();
}

pub async fn due_stays_are_the_due_ones_earliest_first(store: DynStore) {
    for (app, id) in [("k", "g1"), ("k", "g2"), ("other", "g1")] {
        store.put_geofence(geofence(app, id, 100)).await.unwrap();
    }
    let s500 = fence_state("k", "g1", 1, 10, Some(500));
    let s300 = fence_state("k", "g2", 1, 10, Some(300));
    let s400 = fence_state("other", "g1", 4, 10, Some(400));
    let s900 = fence_state("k", "g1", 2, 10, Some(900));
    let none = fence_state("k", "g2", 2, 10, None);
    store
        .write_fence_states(
            vec![s500.clone(), s300.clone(), s400.clone(), s900.clone(), none],
            Vec::new(),
        )
        .await
        .unwrap();
    assert!(store.due_stays(299, 10).await.unwrap().is_empty());
    // Due at now_ms itself; every app's; earliest first.
    assert_eq!(
        store.due_stays(300, 10).await.unwrap(),
        std::slice::from_ref(&s300)
    );
    assert_eq!(
        store.due_stays(600, 10).await.unwrap(),
        [s300.clone(), s400.clone(), s500.clone()]
    );
    // At most `limit`, the earliest.
    assert_eq!(
        store.due_stays(10_000, 2).await.unwrap(),
        [s300.clone(), s400.clone()]
    );
    assert_eq!(
        store.due_stays(u64::MAX, 10).await.unwrap(),
        [s300.clone(), s400, s500, s900]
    );
    assert!(store.due_stays(10_000, 0).await.unwrap().is_empty());
    // A state written without a pending stay is no longer due.
    store
        .write_fence_states(vec![fence_state("k", "g2", 1, 10, None)], Vec::new())
        .await
        .unwrap();
    assert!(!store.due_stays(600, 10).await.unwrap().contains(&s300));
}

pub async fn a_stay_is_settled_once(store: DynStore) {
    store.put_geofence(geofence("k", "g1", 100)).await.unwrap();
    let mut entered = fence_state("k", "g1", 1, 1_000, Some(1_300));
    entered.fired = FENCE_ENTER;
    entered.last_fired_ms = [1_000, 0, 0];
    store
        .write_fence_states(vec![entered.clone()], Vec::new())
        .await
        .unwrap();
    let due = store.due_stays(1_300, 10).await.unwrap();
    assert_eq!(due, [entered.clone()]);
    assert!(store
        .settle_stay(due[0].clone(), Some(1_310), None, vec![fence_event("k", 1)])
        .await
        .unwrap());
    // The stay fired then: STAY or'ed in, its last time set, nothing pending.
    let settled = FenceState {
        stay_due_ms: None,
        fired: FENCE_ENTER | FENCE_STAY,
        last_fired_ms: [1_000, 0, 1_310],
        ..entered.clone()
    };
    assert_eq!(state_of(&store, "k", 1, "g1").await, Some(settled.clone()));
    assert_eq!(fence_events(&store, "k").await, [fence_event("k", 1).body]);
    assert!(store.due_stays(u64::MAX, 10).await.unwrap().is_empty());
    // Once: the same entry again is refused, and its events are not written.
    assert!(!store
        .settle_stay(due[0].clone(), Some(1_320), None, vec![fence_event("k", 2)])
        .await
        .unwrap());
    assert_eq!(state_of(&store, "k", 1, "g1").await, Some(settled));
    assert_eq!(fence_events(&store, "k").await.len(), 1);
}

pub async fn a_stay_of_another_entry_or_one_that_left_is_not_settled(store: DynStore) {
    store.put_geofence(geofence("k", "g1", 100)).await.unwrap();
    let entered = fence_state("k", "g1", 1, 1_000, Some(1_300));
    store
        .write_fence_states(vec![entered.clone()], Vec::new())
        .await
        .unwrap();
    // Another entry (the device left and came back meanwhile, or it is not this one).
    let other_entry = FenceState {
        entered_ms: 999,
        ..entered.clone()
    };
    assert!(!store
        .settle_stay(other_entry, Some(1_300), None, vec![fence_event("k", 1)])
        .await
        .unwrap());
    // Another device, another fence, another app.
    for s in [
        FenceState {
            ordinal: 2,
            ..entered.clone()
        },
        FenceState {
            geofence_id: "g2".into(),
            ..entered.clone()
        },
        FenceState {
            app_key: "other".into(),
            ..entered.clone()
        },
    ] {
        assert!(!store
            .settle_stay(s, Some(1_300), None, vec![fence_event("k", 2)])
            .await
            .unwrap());
    }
    assert_eq!(state_of(&store, "k", 1, "g1").await, Some(entered.clone()));
    // The device left: the entry is over.
    let left = FenceState {
        inside: false,
        stay_due_ms: None,
        ..entered.clone()
    };
    store
        .write_fence_states(vec![left.clone()], Vec::new())
        .await
        .unwrap();
    assert!(!store
        .settle_stay(
            entered.clone(),
            Some(1_400),
            None,
            vec![fence_event("k", 3)]
        )
        .await
        .unwrap());
    assert!(!store
        .settle_stay(
            entered.clone(),
            None,
            Some(2_000),
            vec![fence_event("k", 4)]
        )
        .await
        .unwrap());
    assert_eq!(state_of(&store, "k", 1, "g1").await, Some(left));
    // Inside again with no stay pending: nothing to settle.
    let inside = fence_state("k", "g1", 1, 1_000, None);
    store
        .write_fence_states(vec![inside.clone()], Vec::new())
        .await
        .unwrap();
    assert!(!store
        .settle_stay(entered, Some(1_400), None, vec![fence_event("k", 5)])
        .await
        .unwrap());
    assert_eq!(state_of(&store, "k", 1, "g1").await, Some(inside));
    // No settle that failed wrote its events.
    assert!(fence_events(&store, "k").await.is_empty());
}

pub async fn a_stay_put_off_is_due_again_later(store: DynStore) {
    store.put_geofence(geofence("k", "g1", 100)).await.unwrap();
    let entered = fence_state("k", "g1", 1, 1_000, Some(1_300));
    store
        .write_fence_states(vec![entered.clone()], Vec::new())
        .await
        .unwrap();
    // Not fired (in its cooldown, say): put off, nothing fired.
    assert!(store
        .settle_stay(entered.clone(), None, Some(2_000), Vec::new())
        .await
        .unwrap());
    let put_off = FenceState {
        stay_due_ms: Some(2_000),
        ..entered.clone()
    };
    assert_eq!(state_of(&store, "k", 1, "g1").await, Some(put_off.clone()));
    assert!(store.due_stays(1_999, 10).await.unwrap().is_empty());
    assert_eq!(
        store.due_stays(2_000, 10).await.unwrap(),
        std::slice::from_ref(&put_off)
    );
    // The stay read before it was put off is settled already: refused.
    assert!(!store
        .settle_stay(
            entered.clone(),
            Some(1_300),
            None,
            vec![fence_event("k", 1)]
        )
        .await
        .unwrap());
    assert_eq!(state_of(&store, "k", 1, "g1").await, Some(put_off.clone()));
    // Fired and due again (a repeating stay): both at once.
    assert!(store
        .settle_stay(
            put_off.clone(),
            Some(2_010),
            Some(3_000),
            vec![fence_event("k", 2)]
        )
        .await
        .unwrap());
    let repeating = FenceState {
        stay_due_ms: Some(3_000),
        fired: FENCE_STAY,
        last_fired_ms: [0, 0, 2_010],
        ..entered.clone()
    };
    assert_eq!(
        state_of(&store, "k", 1, "g1").await,
        Some(repeating.clone())
    );
    assert!(!store
        .settle_stay(put_off, Some(2_020), Some(3_000), vec![fence_event("k", 3)])
        .await
        .unwrap());
    // Then fired for good.
    assert!(store
        .settle_stay(repeating.clone(), Some(3_005), None, Vec::new())
        .await
        .unwrap());
    assert_eq!(
        state_of(&store, "k", 1, "g1").await,
        Some(FenceState {
            stay_due_ms: None,
            last_fired_ms: [0, 0, 3_005],
            ..repeating
        })
    );
    assert!(store.due_stays(u64::MAX, 10).await.unwrap().is_empty());
    assert_eq!(fence_events(&store, "k").await, [fence_event("k", 2).body]);
}

pub async fn the_feed_reports_geofences_created_replaced_and_deleted(store: DynStore) {
    store
        .put_geofence(geofence("k", "before", 1))
        .await
        .unwrap();
    let start = store.feed_cursor().await.unwrap();
    let (nothing, _) = geofence_changes(&store, start, 100).await;
    assert!(nothing.is_empty(), "{nothing:?}");

    store.put_geofence(geofence("k", "g1", 100)).await.unwrap();
    store.put_geofence(geofence("k", "g2", 100)).await.unwrap();
    store
        .put_geofence(geofence("other", "g1", 100))
        .await
        .unwrap();
    let mut g1 = geofence("k", "g1", 100);
    g1.name = "replaced".into();
    store.put_geofence(g1).await.unwrap();
    assert!(store.delete_geofence("k", "g2").await.unwrap());
    let want = pairs(&[("k", "g1"), ("k", "g2"), ("other", "g1")]);
    for limit in [1, 2, 100] {
        let (seen, _) = geofence_changes(&store, start, limit).await;
        assert_eq!(seen, want, "limit {limit}");
    }
    // Fence states are no change of the fence; a delete that found nothing is no change.
    let (_, end) = geofence_changes(&store, start, 100).await;
    store
        .write_fence_states(vec![fence_state("k", "g1", 1, 10, Some(20))], Vec::new())
        .await
        .unwrap();
    assert!(!store.delete_geofence("k", "g2").await.unwrap());
    assert!(!store.delete_geofence("k", "nothing").await.unwrap());
    let (seen, end) = geofence_changes(&store, end, 100).await;
    assert!(seen.is_empty(), "{seen:?}");
    // A delete after the cursor is reported, though the fence is gone.
    assert!(store.delete_geofence("k", "before").await.unwrap());
    let (seen, end) = geofence_changes(&store, end, 100).await;
    assert_eq!(seen, pairs(&[("k", "before")]));
    // And a fence put again after its delete.
    store.put_geofence(geofence("k", "g2", 300)).await.unwrap();
    let (seen, _) = geofence_changes(&store, end, 100).await;
    assert_eq!(seen, pairs(&[("k", "g2")]));
}

pub async fn a_due_stay_is_settled_by_one_node_only(store: DynStore, nodes: Arc<dyn Backend>) {
    let b = nodes.open(NODE_B).await;
    store.put_geofence(geofence("k", "g1", 100)).await.unwrap();
    const DEVICES: u32 = 12;
    let states: Vec<FenceState> = (0..DEVICES)
        .map(|o| fence_state("k", "g1", o, 1_000, Some(1_300 + u64::from(o))))
        .collect();
    b.write_fence_states(states, Vec::new()).await.unwrap();
    // Both nodes find the same stays due, and both try to settle each at once: half of them
    // fired, half put off.
    let (due_a, due_b) = (
        store.due_stays(5_000, 100).await.unwrap(),
        b.due_stays(5_000, 100).await.unwrap(),
    );
    assert_eq!(due_a.len(), DEVICES as usize);
    assert_eq!(due_a, due_b);
    let mut tasks = Vec::new();
    for (node, (s, due)) in [(store.clone(), due_a), (b.clone(), due_b)]
        .into_iter()
        .enumerate()
    {
        for state in due {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let fire = state.ordinal % 2 == 0;
                let n = u64::from(state.ordinal) * 10 + node as u64;
                let ordinal = state.ordinal;
                let settled = s
                    .settle_stay(
                        state,
                        fire.then_some(2_000),
                        (!fire).then_some(9_000),
                        vec![fence_event("k", n)],
                    )
                    .await
                    .unwrap();
                (ordinal, settled)
            }));
        }
    }
    let mut settled_per_device = vec![0; DEVICES as usize];
    for t in tasks {
        let (ordinal, settled) = t.await.unwrap();
        if settled {
            settled_per_device[ordinal as usize] += 1;
        }
    }
    assert_eq!(settled_per_device, vec![1; DEVICES as usize]);
    // One event per stay: the settling node's.
    assert_eq!(fence_events(&store, "k").await.len(), DEVICES as usize);
    assert_eq!(fence_events(&b, "k").await.len(), DEVICES as usize);
    // What is left due is the put-off half, due later.
    assert!(store.due_stays(8_999, 100).await.unwrap().is_empty());
    let later = b.due_stays(9_000, 100).await.unwrap();
    assert_eq!(
        later.iter().map(|s| s.ordinal).collect::<Vec<_>>(),
        (0..DEVICES).filter(|o| o % 2 == 1).collect::<Vec<_>>()
    );
    for o in (0..DEVICES).filter(|o| o % 2 == 0) {
        let s = state_of(&store, "k", o, "g1").await.unwrap();
        assert_eq!(
            (s.fired, s.stay_due_ms, s.last_fired_ms[2]),
            (FENCE_STAY, None, 2_000)
        );
    }
}

pub async fn geofence_writes_of_one_node_are_seen_by_the_other(
    store: DynStore,
    nodes: Arc<dyn Backend>,
) {
    let b = nodes.open(NODE_B).await;
    let start = b.feed_cursor().await.unwrap();
    let g1 = geofence("k", "g1", 100);
    store.put_geofence(g1.clone()).await.unwrap();
    assert_eq!(b.get_geofence("k", "g1").await.unwrap(), Some(g1.clone()));
    assert_eq!(b.list_geofences("k").await.unwrap(), [g1]);
    let (seen, end) = geofence_changes(&b, start, 100).await;
    assert_eq!(seen, pairs(&[("k", "g1")]));

    // States written by one node merge with the other's.
    let mut from_b = fence_state("k", "g1", 1, 1_000, Some(1_300));
    from_b.fired = FENCE_ENTER;
    from_b.last_fired_ms = [1_000, 0, 0];
    b.write_fence_states(vec![from_b.clone()], vec![fence_event("k", 1)])
        .await
        .unwrap();
    let mut from_a = fence_state("k", "g1", 1, 1_000, Some(1_300));
    from_a.lat = 0.5;
    store
        .write_fence_states(vec![from_a.clone()], Vec::new())
        .await
        .unwrap();
    let merged = FenceState {
        fired: FENCE_ENTER,
        last_fired_ms: [1_000, 0, 0],
        ..from_a
    };
    assert_eq!(
        b.fence_states("k", 1).await.unwrap(),
        std::slice::from_ref(&merged)
    );
    assert_eq!(store.fence_states("k", 1).await.unwrap(), [merged]);
    assert_eq!(fence_events(&store, "k").await.len(), 1);

    // Deleted by one node: gone for the other, its states too, and its feed says so.
    assert!(store.delete_geofence("k", "g1").await.unwrap());
    assert_eq!(b.get_geofence("k", "g1").await.unwrap(), None);
    assert!(b.fence_states("k", 1).await.unwrap().is_empty());
    assert!(!b.delete_geofence("k", "g1").await.unwrap());
    b.write_fence_states(vec![from_b], Vec::new())
        .await
        .unwrap();
    assert!(store.fence_states("k", 1).await.unwrap().is_empty());
    let (seen, _) = geofence_changes(&b, end, 100).await;
    assert_eq!(seen, pairs(&[("k", "g1")]));

    // A delete racing with the other node's writes of the fence's states: whichever comes
    // first, no state of the deleted fence is left behind.
    for round in 0..25u32 {
        let id = format!("race{round}");
        store.put_geofence(geofence("k", &id, 100)).await.unwrap();
        let writer = {
            let (b, id) = (b.clone(), id.clone());
            tokio::spawn(async move {
                for o in 0..4u32 {
                    b.write_fence_states(
                        vec![fence_state("k", &id, 100 + o, 10, Some(20))],
                        Vec::new(),
                    )
                    .await
                    .unwrap();
                }
            })
        };
        if round % 2 == 1 {
            tokio::task::yield_now().await;
        }
        assert!(store.delete_geofence("k", &id).await.unwrap());
        writer.await.unwrap();
        for o in 0..4u32 {
            let left = store.fence_states("k", 100 + o).await.unwrap();
            assert!(
                left.iter().all(|s| s.geofence_id != id),
                "round {round}: states of a deleted fence: {left:?}"
            );
        }
    }
    assert!(b.due_stays(u64::MAX, 100).await.unwrap().is_empty());
}
