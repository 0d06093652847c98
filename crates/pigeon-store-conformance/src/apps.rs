//! Apps, groups, settings, VAPID keys.

use crate::{app, assert_conflict, DynStore};
use pigeon_store::{AppSettings, GroupRecord};

pub async fn apps_are_created_found_and_listed(store: DynStore) {
    assert!(store.list_apps().await.unwrap().is_empty());
    let (b, a, c) = (app("b", 20), app("a", 20), app("c", 10));
    for x in [&b, &a, &c] {
        store.create_app(x.clone()).await.unwrap();
    }
    assert_eq!(store.find_app("a").await.unwrap(), Some(a.clone()));
    assert_eq!(store.find_app("b").await.unwrap(), Some(b.clone()));
    assert_eq!(store.find_app("nope").await.unwrap(), None);
    // Oldest first, then by key.
    assert_eq!(store.list_apps().await.unwrap(), [c, a, b]);
}

pub async fn a_taken_app_key_is_a_conflict(store: DynStore) {
    let first = app("k", 5);
    store.create_app(first.clone()).await.unwrap();
    let mut second = app("k", 6);
    second.master_secret = "another".into();
    second.name = "Another".into();
    assert_conflict(store.create_app(second).await, "the same app_key again");
    // The first one is kept as it was.
    assert_eq!(store.find_app("k").await.unwrap(), Some(first.clone()));
    assert_eq!(store.list_apps().await.unwrap(), [first]);
    // Concurrent creations of one key: exactly one wins.
    let results = futures_join(
        (0..8)
            .map(|i| {
                let store = store.clone();
                async move { store.create_app(app("race", i)).await }
            })
            .collect(),
    )
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in results.into_iter().filter(|r| r.is_err()) {
        assert_conflict(r, "a concurrent creation");
    }
    assert_eq!(store.list_apps().await.unwrap().len(), 2);
}

/// Runs futures as tasks, all at once; their results in order.
pub(crate) async fn futures_join<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("a task"));
    }
    out
}

pub async fn vapid_keys_are_stored_once(store: DynStore) {
    assert_eq!(store.vapid_keys("k").await.unwrap(), None);
    let public = store
        .ensure_vapid_keys("k", "private-1".into(), "public-1".into())
        .await
        .unwrap();
    assert_eq!(public, "public-1");
    // A second pair does not replace the first.
    let again = store
        .ensure_vapid_keys("k", "private-2".into(), "public-2".into())
        .await
        .unwrap();
    assert_eq!(again, "public-1");
    assert_eq!(
        store.vapid_keys("k").await.unwrap(),
        Some(("private-1".to_string(), "public-1".to_string()))
    );
    // Per app.
    assert_eq!(store.vapid_keys("other").await.unwrap(), None);
    store
        .ensure_vapid_keys("other", "private-3".into(), "public-3".into())
        .await
        .unwrap();
    assert_eq!(
        store.vapid_keys("other").await.unwrap(),
        Some(("private-3".to_string(), "public-3".to_string()))
    );
}

pub async fn groups_are_created_once_and_found(store: DynStore) {
    let group = GroupRecord {
        group_key: "g".into(),
        master_secret: "gs".into(),
        name: "Group".into(),
        app_keys: vec!["b".into(), "a".into()],
        created_ms: 3,
    };
    assert_eq!(store.find_group("g").await.unwrap(), None);
    store.create_group(group.clone()).await.unwrap();
    assert_eq!(store.find_group("g").await.unwrap(), Some(group.clone()));
    assert_conflict(
        store
            .create_group(GroupRecord {
                name: "Other".into(),
                app_keys: Vec::new(),
                ..group.clone()
            })
            .await,
        "the same group_key again",
    );
    assert_eq!(store.find_group("g").await.unwrap(), Some(group));
    let empty = GroupRecord {
        group_key: "g2".into(),
        master_secret: "s".into(),
        name: String::new(),
        app_keys: Vec::new(),
        created_ms: 0,
    };
    store.create_group(empty.clone()).await.unwrap();
    assert_eq!(store.find_group("g2").await.unwrap(), Some(empty));
}

pub async fn app_settings_are_replaced(store: DynStore) {
    assert!(store.app_settings().await.unwrap().is_empty());
    let limited = AppSettings {
        enabled: false,
        rate_limit_per_minute: Some(600),
        ip_allowlist: vec!["10.0.0.0/8".into(), "192.0.2.1".into()],
    };
    store.set_app_settings("a", limited.clone()).await.unwrap();
    store
        .set_app_settings("b", AppSettings::default())
        .await
        .unwrap();
    let mut all = store.app_settings().await.unwrap();
    all.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        all,
        [
            ("a".to_string(), limited),
            ("b".to_string(), AppSettings::default())
        ]
    );
    // Replaced whole, not merged.
    let open = AppSettings {
        enabled: true,
        rate_limit_per_minute: None,
        ip_allowlist: Vec::new(),
    };
    store.set_app_settings("a", open.clone()).await.unwrap();
    let mut all = store.app_settings().await.unwrap();
    all.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0], ("a".to_string(), open));
}
