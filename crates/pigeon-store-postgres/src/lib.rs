//! Pigeon's storage on PostgreSQL: [`PostgresStore`] implements every port of
//! `pigeon-store` so that several Pigeon processes (a cluster) can share one database.
//!
//! It behaves as the embedded `SqliteStore` does, method by method (same answers, same
//! `Conflict`s, same order of returned lists), and adds what several writers need:
//!
//! - **Delivery state merges.** Each process writes its own row of a push's delivery
//!   checkpoint, keyed `(msg_id, node_id)`; every read ORs the rows of all nodes.
//! - **Idempotency holds across processes**: cids and schedule firings are claimed by
//!   guarded `UPDATE`s and unique keys, so two nodes cannot both use one.
//! - **The outbox is numbered in commit order.** Events are written unnumbered and numbered
//!   once committed, one numbering at a time (`pigeon_number_events()` in the schema), so an
//!   event committed later always gets a larger id and a callback dispatcher's cursor never
//!   passes an event still to come. Ids are consecutive, as in SQLite.
//! - **The change feed is complete under concurrent writers**: a change is numbered from its
//!   transaction's id (`xid8` × 65536 + its place in the transaction), and a reader takes
//!   only changes below the oldest transaction still running, so nothing below its cursor
//!   can still appear. (That horizon is the server's: a long writing transaction in any
//!   database of the server delays the feed, never makes it leave a change out.)
//! - Leases and presence are timed by the database's clock.
//! - **`insert_push`, the hot path, commits in groups** (`pushes.rs`): the pushes a process
//!   stores at the same moment share one transaction and one WAL flush, each in a
//!   subtransaction so a refused push (a used cid) leaves the others stored. Every other
//!   write is a single statement where it can be (one round trip), prepared once per
//!   connection.
//!
//! The client is `tokio-postgres` behind a `deadpool-postgres` pool: both are well kept and
//! widely used, fully async (no database call ever blocks a runtime thread, unlike a
//! blocking driver run on the async workers), pipeline requests on one connection, and cache
//! prepared statements per connection. The pool is bounded ([`POOL_SIZE`] connections)
//! and a caller that waits longer than [`POOL_WAIT`] for one gets
//! [`StoreError::Unavailable`], as it does when the database cannot be reached.
//!
//! The schema is applied by versioned migrations embedded in the binary (`migrations/`),
//! all pending ones in one transaction under an advisory lock, so processes starting
//! together do not race; a database migrated by a newer Pigeon is refused.
//!
//! Secrets (vendor credentials, VAPID private keys) are sealed as the SQLite store seals
//! them, with `PIGEON_SECRET_KEY` if it is set, else with a key made once and kept in the
//! database (`pigeon_secret_key`): set `PIGEON_SECRET_KEY` for a copy of the database alone
//! not to give them away.
//!
//! Connections are made without TLS (`sslmode=prefer` falls back to plain; `require` is
//! refused).

mod migrate;
mod ports;
mod pushes;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use pigeon_store::sealed::SealingKey;
use pigeon_store::{StoreError, StoreResult};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

pub use migrate::{MIGRATIONS, MIGRATION_LOCK};

/// Most connections one store keeps to the database.
pub const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection (or a new one) before it fails as
/// [`StoreError::Unavailable`].
pub const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long [`pigeon_store::Storage::close`] waits for calls still running.
const CLOSE_WAIT: Duration = Duration::from_secs(30);

/// The SQLSTATE the schema's functions raise a conflict with (a used cid, a schedule that
/// moved on): answered as [`StoreError::Conflict`], as unique violations are.
const CONFLICT_STATE: &str = "P4090";

/// Pigeon's storage on PostgreSQL. Cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    /// This process's name in the cluster: its rows of delivery state are its own.
    node_id: String,
    /// Seals vendor credentials and VAPID private keys before they are written.
    key: SealingKey,
    /// The queue of pushes to store, committed in groups.
    pushes: pushes::Pushes,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("node_id", &self.inner.node_id)
            .field("pool", &self.inner.pool.status())
            .finish()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db` or the
    /// `key=value` form), applies the migrations it lacks and loads the sealing key. The
    /// process is node `node_id` of the cluster (its delivery checkpoints are its own).
    pub async fn connect(url: &str, node_id: &str) -> StoreResult<PostgresStore> {
        if node_id.is_empty() {
            return Err(StoreError::Backend("a node id must not be empty".into()));
        }
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Backend(format!("database URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(POOL_WAIT);
        }
        if config.get_application_name().is_none() {
            config.application_name(format!("pigeon {node_id}"));
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .recycle_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| StoreError::Backend(format!("database pool: {e}")))?;
        let mut client = get_client(&pool).await?;
        let key = migrate::migrate(&mut client).await?;
        drop(client);
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pushes: pushes::Pushes::start(pool.clone()),
                pool,
                node_id: node_id.to_string(),
                key,
            }),
        })
    }

    /// This process's node id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// A connection from the pool.
    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        get_client(&self.inner.pool).await
    }
}

async fn get_client(pool: &Pool) -> StoreResult<deadpool_postgres::Object> {
    use deadpool_postgres::PoolError;
    pool.get().await.map_err(|e| match e {
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(kind) => StoreError::Unavailable(format!(
            "no database connection within {}s ({kind:?})",
            POOL_WAIT.as_secs()
        )),
        PoolError::Backend(e) => pg_err("connecting to the database", e),
        other => StoreError::Unavailable(format!("database connection: {other}")),
    })
}

/// A database error, with what was being done: unique violations and the schema's own
/// conflicts are [`StoreError::Conflict`]; a lost or refused connection is
/// [`StoreError::Unavailable`]; the rest [`StoreError::Backend`].
pub(crate) fn pg_err(what: &str, e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let mut message = db.message().to_string();
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        return state_err(what, db.code().code(), message);
    }
    let io = std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>());
    if e.is_closed() || io {
        StoreError::Unavailable(format!("{what}: {e}"))
    } else {
        StoreError::Backend(format!("{what}: {e}"))
    }
}

/// The error a database answered with SQLSTATE `code` and `message` (see [`pg_err`]).
pub(crate) fn state_err(what: &str, code: &str, message: String) -> StoreError {
    if code == CONFLICT_STATE {
        return StoreError::Conflict(message);
    }
    if code == SqlState::UNIQUE_VIOLATION.code() {
        return StoreError::Conflict(format!("{what}: {message}"));
    }
    let unavailable = code.starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::READ_ONLY_SQL_TRANSACTION,
        ]
        .iter()
        .any(|s| s.code() == code);
    let text = format!("{what}: {message} [SQLSTATE {code}]");
    if unavailable {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Runs a statement (prepared once per connection); the rows it returns.
pub(crate) async fn query<C: GenericClient>(
    c: &C,
    what: &str,
    sql: &str,
    params: &Params<'_>,
) -> StoreResult<Vec<Row>> {
    let st = c.prepare_cached(sql).await.map_err(|e| pg_err(what, e))?;
    c.query(&st, params).await.map_err(|e| pg_err(what, e))
}

/// [`query`] of at most one row.
pub(crate) async fn query_opt<C: GenericClient>(
    c: &C,
    what: &str,
    sql: &str,
    params: &Params<'_>,
) -> StoreResult<Option<Row>> {
    let st = c.prepare_cached(sql).await.map_err(|e| pg_err(what, e))?;
    c.query_opt(&st, params).await.map_err(|e| pg_err(what, e))
}

/// [`query`] of exactly one row.
pub(crate) async fn query_one<C: GenericClient>(
    c: &C,
    what: &str,
    sql: &str,
    params: &Params<'_>,
) -> StoreResult<Row> {
    query_opt(c, what, sql, params)
        .await?
        .ok_or_else(|| StoreError::Backend(format!("{what}: no row where one was expected")))
}

/// Runs a statement; how many rows it changed.
pub(crate) async fn execute<C: GenericClient>(
    c: &C,
    what: &str,
    sql: &str,
    params: &Params<'_>,
) -> StoreResult<u64> {
    let st = c.prepare_cached(sql).await.map_err(|e| pg_err(what, e))?;
    c.execute(&st, params).await.map_err(|e| pg_err(what, e))
}

/// Column `i` of a row.
pub(crate) fn col<'a, T: tokio_postgres::types::FromSql<'a>>(
    r: &'a Row,
    i: usize,
) -> StoreResult<T> {
    r.try_get(i).map_err(|e| {
        let name = r.columns().get(i).map_or("?", |c| c.name());
        StoreError::Corrupt(format!("column {name}: {e}"))
    })
}
