//! The storage conformance suite: one set of test bodies that every storage adapter (SQLite,
//! PostgreSQL) runs, so that the adapters cannot drift apart, and a private PostgreSQL for
//! tests ([`postgres::TestPostgres`]).
//!
//! Each behaviour is one `pub async fn` taking a fresh store ([`DynStore`]); the bodies about
//! several nodes on one database take a [`Backend`] too, which opens another store on the same
//! database under another node id. [`storage_conformance!`] expands every body into a
//! `#[tokio::test(flavor = "multi_thread")]` for one backend:
//!
//! ```text
//! async fn backend() -> MyBackend { ... }
//! pigeon_store_conformance::storage_conformance!(backend);
//! ```
//!
//! The crate using the macro needs `tokio` (with `macros` and `rt-multi-thread`) among its
//! (dev-)dependencies.

mod apps;
mod cluster;
mod devices;
mod geofences;
mod outbox;
pub mod postgres;
mod pushes;
mod rest;
mod saved;

pub use apps::*;
pub use cluster::*;
pub use devices::*;
pub use geofences::*;
pub use outbox::*;
pub use pushes::*;
pub use rest::*;
pub use saved::*;

use pigeon_core::{Audience, Platform, PlatformSet, Push};
use pigeon_store::ports::*;
use pigeon_store::{
    AppRecord, CallbackEndpoint, CallbackFormat, DeviceRecord, NewEvent, StoreError, StoreResult,
};
use serde_json::{json, Map};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A store under test: every port, the cluster's included.
pub type DynStore = Arc<dyn Storage>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One test's database, for one adapter: opens stores on it.
pub trait Backend: Send + Sync + 'static {
    /// A store on this test's database, as node `node`. Stores opened for different nodes
    /// share the database (an adapter made for one process, like SQLite's, may hand back the
    /// same store for every node).
    fn open(&self, node: &str) -> BoxFuture<'_, DynStore>;
    /// Called once the test body passed, after its stores are closed (drop the database).
    fn finish(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// The node id of the store a body is given.
pub const NODE_A: &str = "node-a";
/// The node id of the second store of the multi-node bodies.
pub const NODE_B: &str = "node-b";

/// Expands every body of the suite into a `#[tokio::test(flavor = "multi_thread")]`.
/// `$backend` is the path of an `async fn() -> impl Backend` that makes a fresh database.
#[macro_export]
macro_rules! storage_conformance {
    ($backend:path) => {
        $crate::__single_node_bodies!($crate::__single_node_test; $backend);
        $crate::__multi_node_bodies!($crate::__multi_node_test; $backend);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __single_node_test {
    ($backend:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let backend = $backend().await;
            let store = $crate::Backend::open(&backend, $crate::NODE_A).await;
            $crate::$name(store.clone()).await;
            store.close().await.expect("the store closes");
            $crate::Backend::finish(&backend).await;
        }
    )*};
}

#[doc(hidden)]
#[macro_export]
macro_rules! __multi_node_test {
    ($backend:path; $($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() {
            let backend = ::std::sync::Arc::new($backend().await);
            let store = $crate::Backend::open(&*backend, $crate::NODE_A).await;
            $crate::$name(store.clone(), backend.clone()).await;
            store.close().await.expect("the store closes");
            $crate::Backend::finish(&*backend).await;
        }
    )*};
}

/// The bodies that take one store. Every `pub async fn` of the suite is named in exactly one
/// of these two lists (a unit test checks it).
#[doc(hidden)]
#[macro_export]
macro_rules! __single_node_bodies {
    ($m:path; $($arg:tt)*) => {
        $m!($($arg)*;
            apps_are_created_found_and_listed,
            a_taken_app_key_is_a_conflict,
            vapid_keys_are_stored_once,
            groups_are_created_once_and_found,
            app_settings_are_replaced,
            a_device_is_put_and_replaced,
            a_device_is_found_by_registration_id_in_any_app,
            put_devices_is_all_or_none,
            put_devices_puts_in_order,
            devices_are_loaded_in_chunks,
            last_online_keeps_the_latest_and_seen_between_is_half_open,
            devices_are_blocked_and_unblocked,
            badges_are_saved_and_replaced,
            locations_keep_the_latest_per_device,
            cids_issued_used_unknown_and_expired,
            a_used_cid_refuses_another_push,
            a_free_idempotency_key_is_taken_once_a_day,
            a_push_is_stored_and_loaded,
            a_failing_push_write_leaves_nothing,
            live_pushes_are_unexpired_unrecalled_and_not_overridden,
            expired_pushes_are_reported_once,
            a_push_is_recalled_once,
            an_override_marks_the_push_it_replaces,
            save_delivered_replaces_the_last_checkpoint,
            clicks_and_push_counts_between,
            recent_push_counts_are_newest_first_and_limited,
            credentials_are_sealed_and_read_back,
            the_credentials_version_follows_every_change,
            schedules_are_put_replaced_listed_and_deleted,
            schedule_runs_failed_and_fired,
            callback_endpoints_are_added_listed_and_removed,
            a_push_level_endpoint_is_found_or_added,
            events_after_filters_and_pages,
            callback_cursors_only_move_forward,
            batches_are_created_failed_replayed_and_finished,
            endpoint_health_and_enabling_again,
            prune_drops_only_what_every_endpoint_has_batched,
            files_are_listed_until_they_expire,
            sms_timers_expand_into_sends,
            sms_are_retried_finished_and_stopped,
            recall_and_override_drop_the_sms_fallback,
            changes_since_sees_every_change_after_the_cursor,
            changes_since_respects_its_limit_without_skipping,
            a_lease_is_taken_renewed_and_released,
            presence_follows_connects_and_disconnects_in_order,
            presence_counts_only_nodes_with_a_live_lease,
            clear_presence_forgets_one_node,
            geofences_are_put_got_and_listed_oldest_first,
            a_replaced_geofence_keeps_what_the_caller_gave,
            a_geofence_is_deleted_once_with_its_states,
            fence_states_are_merged_into_the_stored_ones,
            fence_states_of_a_missing_fence_are_left_out_and_events_written,
            due_stays_are_the_due_ones_earliest_first,
            a_stay_is_settled_once,
            a_stay_of_another_entry_or_one_that_left_is_not_settled,
            a_stay_put_off_is_due_again_later,
            the_feed_reports_geofences_created_replaced_and_deleted,
            segments_are_put_got_and_listed_oldest_first,
            a_replaced_segment_reads_back_the_new_one,
            a_segment_is_deleted_once,
            abtests_are_put_got_and_listed_oldest_first,
            an_abtest_is_deleted_once,
            segments_and_abtests_of_one_id_do_not_collide,
            abtest_pushes_are_the_pushes_naming_the_test,
            abtest_pushes_stored_at_once_keep_only_the_stored_ones,
            the_feed_reports_segments_and_abtests_created_replaced_and_deleted,
            close_keeps_what_was_written_and_refuses_later_writes,
        );
    };
}

/// The bodies that take a second node too.
#[doc(hidden)]
#[macro_export]
macro_rules! __multi_node_bodies {
    ($m:path; $($arg:tt)*) => {
        $m!($($arg)*;
            ordinals_reserved_concurrently_are_disjoint,
            msg_ids_reserved_concurrently_are_disjoint,
            the_feed_misses_nothing_written_concurrently_by_two_nodes,
            a_lease_is_refused_while_live_and_taken_over_after_expiry,
            a_disconnect_from_an_older_node_keeps_the_newer_connection,
            a_due_stay_is_settled_by_one_node_only,
            geofence_writes_of_one_node_are_seen_by_the_other,
            saved_audience_writes_of_one_node_are_seen_by_the_other,
        );
    };
}

// ---- Helpers the bodies share. ----

/// An app record.
pub fn app(app_key: &str, created_ms: u64) -> AppRecord {
    AppRecord {
        app_key: app_key.into(),
        master_secret: format!("secret-of-{app_key}"),
        name: format!("App {app_key}"),
        created_ms,
    }
}

/// A device with every field set.
pub fn device(app_key: &str, ordinal: u32, registration_id: &str) -> DeviceRecord {
    let mut tokens = Map::new();
    tokens.insert("fcm".into(), json!(format!("fcm-token-{registration_id}")));
    let mut info = Map::new();
    info.insert("model".into(), json!("Pixel"));
    info.insert("os_version".into(), json!("14"));
    DeviceRecord {
        app_key: Arc::from(app_key),
        ordinal,
        registration_id: registration_id.into(),
        install_id: Some(format!("install-{registration_id}")),
        secret_hash: [ordinal as u8; 32],
        platform: Platform::Android,
        alias: Some(format!("alias-{ordinal}")),
        tags: vec!["t1".into(), "t2".into()],
        mobile: Some("13800000000".into()),
        region: Some("11000000".into()),
        push_tokens: tokens,
        apns_production: false,
        info,
        created_ms: 1_000,
        updated_ms: 1_000,
    }
}

/// A push of a message to everyone, with `ttl_s` to live.
pub fn push(msg_id: u64, sent_ms: u64, ttl_s: u64) -> Push {
    let mut p = Push::new(PlatformSet::all(), Audience::All);
    p.msg_id = msg_id;
    p.sent_ms = sent_ms;
    p.policy.ttl_s = ttl_s;
    p.content.message = Some(pigeon_core::Message {
        content: format!("message {msg_id}"),
        title: Some("title".into()),
        content_type: None,
        extras: Map::new(),
    });
    p
}

/// An event for the app's endpoints.
pub fn event(app_key: &str, command: &str, n: u64) -> NewEvent {
    NewEvent {
        app_key: app_key.into(),
        command: command.into(),
        body: json!({"CallbackCommand": command, "N": n}).to_string(),
        at_ms: 10_000 + n,
        endpoint_id: None,
    }
}

/// An app-wide endpoint in Pigeon's format.
pub fn endpoint(app_key: &str, url: &str, commands: &[&str]) -> CallbackEndpoint {
    CallbackEndpoint {
        id: 0,
        app_key: app_key.into(),
        url: url.into(),
        commands: commands.iter().map(|c| c.to_string()).collect(),
        basic_auth: true,
        signing_secret: "signing".into(),
        created_ms: 7,
        start_event_id: 0,
        push_level: false,
        failing_since_ms: None,
        disabled_ms: None,
        format: CallbackFormat::Pigeon,
    }
}

/// An audience bitmap.
pub fn bitmap(ordinals: impl IntoIterator<Item = u32>) -> roaring::RoaringBitmap {
    ordinals.into_iter().collect()
}

/// Every device of an app, chunk by chunk.
pub async fn load_chunks(store: &DynStore, app_key: &str) -> Vec<Vec<DeviceRecord>> {
    let mut rx = store.load_devices(app_key);
    let mut chunks = Vec::new();
    while let Some(chunk) = rx.recv().await {
        chunks.push(chunk.expect("a chunk of devices"));
    }
    chunks
}

/// Every device of an app, in ordinal order.
pub async fn load_all(store: &DynStore, app_key: &str) -> Vec<DeviceRecord> {
    let mut all: Vec<DeviceRecord> = load_chunks(store, app_key)
        .await
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|d| d.ordinal);
    all
}

/// Asserts `result` is a `Conflict`.
#[track_caller]
pub fn assert_conflict<T: std::fmt::Debug>(result: StoreResult<T>, what: &str) {
    match result {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

/// The ms since the epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    /// Every `pub async fn` of the suite is in one of the macro's lists, once.
    #[test]
    fn every_body_is_run_by_the_macro() {
        let lib = include_str!("lib.rs");
        let listed = |macro_name: &str| -> Vec<String> {
            let start = lib
                .find(&format!("macro_rules! {macro_name}"))
                .expect("the list");
            let body = &lib[start..];
            let from = body.find("$($arg)*;").expect("the names") + "$($arg)*;".len();
            let to = body[from..].find(");").expect("the end") + from;
            body[from..to]
                .split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect()
        };
        let mut in_macro = listed("__single_node_bodies");
        in_macro.extend(listed("__multi_node_bodies"));
        let sources = [
            include_str!("apps.rs"),
            include_str!("devices.rs"),
            include_str!("geofences.rs"),
            include_str!("saved.rs"),
            include_str!("pushes.rs"),
            include_str!("outbox.rs"),
            include_str!("rest.rs"),
            include_str!("cluster.rs"),
        ];
        let mut bodies: Vec<String> = sources
            .iter()
            .flat_map(|s| s.lines())
            .filter_map(|l| l.trim_start().strip_prefix("pub async fn "))
            .map(|l| l.split('(').next().unwrap_or("").to_string())
            .collect();
        bodies.sort();
        let mut sorted = in_macro.clone();
        sorted.sort();
        assert_eq!(sorted, bodies, "the macro lists every body");
        let mut unique = sorted.clone();
        unique.dedup();
        assert_eq!(unique.len(), in_macro.len(), "each body once");
    }
}
