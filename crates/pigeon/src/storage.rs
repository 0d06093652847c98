//! Which store a process works on: the embedded SQLite file in the data directory, or the
//! PostgreSQL database named by `[cluster] postgres` / `PIGEON_POSTGRES_URL`. `serve` and
//! every other subcommand open it here, so they always agree.

use crate::config::{ClusterConfig, DB_FILE};
use anyhow::Context;
use pigeon_store::{SqliteStore, Storage, Synchronous};
use std::path::Path;
use std::sync::Arc;

/// This node's name: the configured one, else a new one (logged at start).
pub fn node_id(cluster: &ClusterConfig) -> String {
    cluster.node_id.clone().unwrap_or_else(|| {
        format!(
            "node-{}",
            pigeon_engine::random_alnum(8).to_ascii_lowercase()
        )
    })
}

/// Opens the store: PostgreSQL if `cluster.postgres` is set (creating or migrating its
/// schema), else the SQLite file in `data` (created if missing).
pub async fn open(
    data: &Path,
    cluster: &ClusterConfig,
    sync: Synchronous,
    node_id: &str,
) -> anyhow::Result<Arc<dyn Storage>> {
    if let Some(url) = &cluster.postgres {
        let store = pigeon_store_postgres::PostgresStore::connect(url, node_id)
            .await
            .with_context(|| format!("opening the PostgreSQL database {}", redacted(url)))?;
        return Ok(Arc::new(store));
    }
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating the data directory {}", data.display()))?;
    let path = data.join(DB_FILE);
    // Pushes stored by a Pigeon from before its own model kept JPush's names; the JPush door
    // reads them back.
    let store = SqliteStore::open_upgrading(
        &path,
        sync,
        Some(&pigeon_jpush::upgrade::StoredPushUpgrader),
    )
    .with_context(|| format!("opening {}", path.display()))?;
    Ok(Arc::new(store))
}

/// The store a management subcommand works on: PostgreSQL when `PIGEON_POSTGRES_URL` is set
/// (the same setting the nodes were given), else the SQLite file in `data`.
pub async fn open_for_command(data: &Path) -> anyhow::Result<Arc<dyn Storage>> {
    let cluster = ClusterConfig {
        postgres: std::env::var("PIGEON_POSTGRES_URL")
            .ok()
            .filter(|u| !u.trim().is_empty()),
        ..ClusterConfig::default()
    };
    open(data, &cluster, Synchronous::Full, "cli").await
}

/// A database URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..scheme + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
