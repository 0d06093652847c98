//! Versioned migrations, embedded in the binary.

use crate::{col, pg_err};
use pigeon_store::sealed::SealingKey;
use pigeon_store::{StoreError, StoreResult};

/// Every migration this Pigeon knows, oldest first: (version, name, SQL). A migration is
/// never changed once released; a change of schema is a new one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/0001_init.sql")),
    (
        2,
        "geofences",
        include_str!("../migrations/0002_geofences.sql"),
    ),
    (
        3,
        "saved audiences",
        include_str!("../migrations/0003_saved_audiences.sql"),
    ),
    (
        4,
        "delivery vendors",
        include_str!("../migrations/0004_delivery_vendors.sql"),
    ),
];

/// The advisory lock migrating processes take turns on (`pg_advisory_xact_lock`): "pigeon"
/// in ASCII, then 1.
pub const MIGRATION_LOCK: i64 = 0x7069_6765_6f6e_0001;

/// Applies the migrations the database lacks, all in one transaction under
/// [`MIGRATION_LOCK`], and returns the sealing key: `PIGEON_SECRET_KEY` if set, else the
/// database's own (made by the first process to get here).
pub(crate) async fn migrate(client: &mut deadpool_postgres::Object) -> StoreResult<SealingKey> {
    let what = "migrating the schema";
    let err = |e| pg_err(what, e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS pigeon_schema_migrations (
            version INT PRIMARY KEY,
            applied_ms BIGINT NOT NULL
        )",
    )
    .await
    .map_err(err)?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM pigeon_schema_migrations",
            &[],
        )
        .await
        .map_err(err)?;
    let current: i32 = col(&row, 0)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > known {
        return Err(StoreError::Backend(format!(
            "the database's schema is version {current}, newer than this Pigeon knows \
             (version {known}): it was migrated by a newer Pigeon; run that one"
        )));
    }
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| pg_err(&format!("applying migration {version} ({name})"), e))?;
        tx.execute(
            "INSERT INTO pigeon_schema_migrations (version, applied_ms)
             VALUES ($1, pigeon_now_ms())",
            &[version],
        )
        .await
        .map_err(err)?;
        tracing::info!(version, name, "applied a database migration");
    }
    let key = match SealingKey::from_env() {
        Some(key) => key?,
        None => {
            tx.execute(
                "INSERT INTO pigeon_secret_key (one, key) VALUES (true, $1)
                 ON CONFLICT (one) DO NOTHING",
                &[&SealingKey::generate_base64()],
            )
            .await
            .map_err(err)?;
            let row = tx
                .query_one("SELECT key FROM pigeon_secret_key", &[])
                .await
                .map_err(err)?;
            let text: String = col(&row, 0)?;
            SealingKey::from_base64(&text)
                .map_err(|e| StoreError::Corrupt(format!("the database's sealing key: {e}")))?
        }
    };
    tx.commit().await.map_err(err)?;
    Ok(key)
}
