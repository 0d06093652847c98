//! The conformance suite on PostgreSQL: each test on a fresh database of the test binary's
//! server (a private one, or `PIGEON_TEST_POSTGRES_URL`'s; see
//! `pigeon_store_conformance::postgres`).
//!
//! The tests run one at a time. The PostgreSQL store's change feed gives only changes below
//! the oldest transaction still running in the whole server (what makes it complete under
//! concurrent writers), so a test's write transactions, its database's creation or
//! migration, would hold back what another test's feed shows for as long as they run: tests
//! sharing one server would not be independent (the suite reads the feed right after
//! writing, and expects to see the write).

use pigeon_store_conformance::postgres::{TestDatabase, TestPostgres};
use pigeon_store_conformance::{Backend, BoxFuture, DynStore, NODE_A};
use pigeon_store_postgres::PostgresStore;
use std::sync::{Arc, Mutex};

/// Held by the test running now (see the module doc).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A test's database; every node is its own `PostgresStore` on it.
struct Postgres {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    db: Mutex<Option<TestDatabase>>,
    url: String,
    /// The stores opened for other nodes than the first (the macro closes that one).
    others: Mutex<Vec<DynStore>>,
}

impl Backend for Postgres {
    fn open(&self, node: &str) -> BoxFuture<'_, DynStore> {
        let node = node.to_string();
        Box::pin(async move {
            let store: DynStore = Arc::new(
                PostgresStore::connect(&self.url, &node)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {} as {node}: {e}", self.url)),
            );
            if node != NODE_A {
                self.others.lock().unwrap().push(store.clone());
            }
            store
        })
    }

    fn finish(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let others: Vec<DynStore> = std::mem::take(&mut *self.others.lock().unwrap());
            for store in others {
                store.close().await.expect("the store closes");
            }
            let db = self.db.lock().unwrap().take();
            if let Some(db) = db {
                db.drop_database().await;
            }
        })
    }
}

async fn postgres() -> Postgres {
    let turn = ONE_AT_A_TIME.lock().await;
    let db = TestPostgres::get().create_database().await;
    Postgres {
        _turn: turn,
        url: db.url.clone(),
        db: Mutex::new(Some(db)),
        others: Mutex::new(Vec::new()),
    }
}

pigeon_store_conformance::storage_conformance!(postgres);

/// What the suite cannot see through the ports: the secrets are sealed in the database.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_sealed_in_the_database() {
    let backend = postgres().await;
    let store = backend.open(NODE_A).await;
    store
        .set_vendor_credentials("k", "huawei", r#"{"client_secret":"s3cret"}"#.into(), 1)
        .await
        .unwrap();
    store
        .ensure_vapid_keys("k", "vapid-private".into(), "vapid-public".into())
        .await
        .unwrap();
    let (client, connection) = tokio_postgres::connect(&backend.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT body FROM vendor_credentials UNION ALL SELECT private_key FROM app_vapid_keys",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        let stored: String = row.get(0);
        assert!(
            pigeon_store::sealed::SealingKey::is_sealed(&stored),
            "{stored}"
        );
        assert!(
            !stored.contains("s3cret") && !stored.contains("vapid-private"),
            "{stored}"
        );
    }
    store.close().await.unwrap();
    backend.finish().await;
}
