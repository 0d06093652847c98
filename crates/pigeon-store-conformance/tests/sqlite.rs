//! The conformance suite on the embedded SQLite store.

use pigeon_store::{SqliteStore, Synchronous};
use pigeon_store_conformance::{Backend, BoxFuture, DynStore};
use std::sync::Arc;

/// A fresh database in a temporary directory. SQLite serves one process: every node of a
/// test shares the one store.
struct Sqlite {
    store: DynStore,
    _dir: tempfile::TempDir,
}

impl Backend for Sqlite {
    fn open(&self, _node: &str) -> BoxFuture<'_, DynStore> {
        Box::pin(async move { self.store.clone() })
    }
}

async fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("pigeon.db"), Synchronous::Normal)
        .expect("the store opens");
    Sqlite {
        store: Arc::new(store),
        _dir: dir,
    }
}

pigeon_store_conformance::storage_conformance!(sqlite);

/// What the suite cannot see through the ports: the secrets are sealed in the file.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_sealed_in_the_database_file() {
    let backend = sqlite().await;
    let store = backend.open("node-a").await;
    store
        .set_vendor_credentials("k", "huawei", r#"{"client_secret":"s3cret"}"#.into(), 1)
        .await
        .unwrap();
    store
        .ensure_vapid_keys("k", "vapid-private".into(), "vapid-public".into())
        .await
        .unwrap();
    store.close().await.unwrap();
    let c = rusqlite::Connection::open(backend._dir.path().join("pigeon.db")).unwrap();
    let stored: Vec<String> = c
        .prepare(
            "SELECT body FROM vendor_credentials UNION ALL SELECT private_key FROM app_vapid_keys",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored.len(), 2);
    for s in stored {
        assert!(pigeon_store::sealed::SealingKey::is_sealed(&s), "{s}");
        assert!(!s.contains("s3cret") && !s.contains("vapid-private"), "{s}");
    }
}
