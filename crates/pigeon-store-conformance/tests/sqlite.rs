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
