//! Group commit of `insert_push`, the hot path: pushes stored at the same moment by one
//! process share a transaction (and so a commit, a WAL flush and a round trip), each in a
//! subtransaction of its own so that one push's conflict leaves the others stored.
//!
//! One task takes the pushes waiting in the queue (up to [`MAX_BATCH`]) as one batch and
//! hands it to a connection; at most [`BATCHES_IN_FLIGHT`] batches are written at once, and
//! pushes arriving meanwhile wait for the next batch. A lone push is written as one
//! statement, without a subtransaction.

use crate::ports::EventRows;
use crate::{get_client, query, state_err};
use deadpool_postgres::Pool;
use pigeon_store::{StoreError, StoreResult};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most pushes in one transaction: each has a subtransaction, and past 64 in one
/// transaction PostgreSQL's snapshots get slow (the subtransaction cache overflows).
pub(crate) const MAX_BATCH: usize = 32;
/// Batches written at once by one process. Few, so that pushes gather into large batches
/// (fewer commits): measured with three processes on one 2-core machine, 2 in flight stored
/// about twice as many pushes a second as 4, and three times as many as 8.
const BATCHES_IN_FLIGHT: usize = 2;
/// Pushes that may wait for a batch before callers are made to wait (backpressure).
const QUEUE_DEPTH: usize = 4096;

/// One push, as the schema's `pigeon_insert_push` takes it.
pub(crate) struct PushRow {
    pub msg_id: i64,
    pub app_key: String,
    pub sent_ms: i64,
    pub expires_ms: i64,
    pub body: String,
    pub audience: Vec<u8>,
    pub group: Option<String>,
    pub overrides: Option<i64>,
    pub sms_due: Option<i64>,
    pub schedule: Option<String>,
    pub due: Option<i64>,
    pub next: Option<i64>,
    pub cid: Option<String>,
    pub cid_pooled: bool,
    pub events: EventRows,
}

enum Msg {
    Push(Box<PushRow>, oneshot::Sender<StoreResult<()>>),
    /// Answered once every push queued before it is written.
    Drain(oneshot::Sender<()>),
}

/// The queue of pushes to store. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Pushes {
    tx: mpsc::Sender<Msg>,
}

impl Pushes {
    /// Starts the task that writes the queue's batches on `pool`.
    pub(crate) fn start(pool: Pool) -> Pushes {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(pool, rx));
        Pushes { tx }
    }

    /// Stores a push; resolves once it is committed (or refused).
    pub(crate) async fn insert(&self, row: PushRow) -> StoreResult<()> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Msg::Push(Box::new(row), done))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Waits until every push queued so far is written (or refused).
    pub(crate) async fn drain(&self) {
        let (done, answer) = oneshot::channel();
        if self.tx.send(Msg::Drain(done)).await.is_ok() {
            let _ = answer.await;
        }
    }
}

async fn run(pool: Pool, mut rx: mpsc::Receiver<Msg>) {
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    loop {
        // A free slot first: while every slot is busy, pushes gather for the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut drained = Vec::new();
        match first {
            Msg::Push(row, done) => batch.push((row, done)),
            Msg::Drain(done) => drained.push(done),
        }
        while batch.len() < MAX_BATCH && drained.is_empty() {
            match rx.try_recv() {
                Ok(Msg::Push(row, done)) => batch.push((row, done)),
                Ok(Msg::Drain(done)) => drained.push(done),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            drop(slot);
        } else {
            let pool = pool.clone();
            tokio::spawn(async move {
                write(&pool, batch).await;
                drop(slot);
            });
        }
        if !drained.is_empty() {
            // Every batch taken so far is finished once every slot is free again.
            if let Ok(all) = slots.acquire_many(BATCHES_IN_FLIGHT as u32).await {
                drop(all);
            }
            for done in drained {
                let _ = done.send(());
            }
        }
    }
}

/// Writes a batch and answers each of its callers.
async fn write(pool: &Pool, batch: Vec<(Box<PushRow>, oneshot::Sender<StoreResult<()>>)>) {
    let started = std::time::Instant::now();
    if batch.len() == 1 {
        for (row, done) in batch {
            let answer = insert_one(pool, &row).await;
            pigeon_telemetry::storage_commit(started.elapsed());
            let _ = done.send(answer);
        }
        return;
    }
    let rows: Vec<&PushRow> = batch.iter().map(|(row, _)| &**row).collect();
    let written = insert_many(pool, &rows).await;
    pigeon_telemetry::storage_commit(started.elapsed());
    match written {
        Ok(failed) => {
            let mut failed = failed.into_iter().peekable();
            for (i, (row, done)) in batch.into_iter().enumerate() {
                let answer = match failed.next_if(|f| f.0 == i) {
                    // Two batches that locked the same rows in another order: the push
                    // is written again on its own.
                    Some((_, state, _)) if state == "40P01" || state == "40001" => {
                        insert_one(pool, &row).await
                    }
                    Some((_, state, message)) => Err(state_err("insert_push", &state, message)),
                    None => Ok(()),
                };
                let _ = done.send(answer);
            }
        }
        Err(e) => {
            for (_, done) in batch {
                let _ = done.send(Err(same_error(&e)));
            }
        }
    }
}

/// The same error again, for every caller of a batch that failed as a whole.
fn same_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Closed => StoreError::Closed,
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        other => StoreError::Backend(other.to_string()),
    }
}

/// One push, one statement.
async fn insert_one(pool: &Pool, r: &PushRow) -> StoreResult<()> {
    let c = get_client(pool).await?;
    let e = &r.events;
    crate::execute(
        &c,
        "insert_push",
        "SELECT pigeon_insert_push(0, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
            $13, $14, $15, $16, $17, $18, $19, $20)",
        &[
            &r.msg_id,
            &r.app_key,
            &r.sent_ms,
            &r.expires_ms,
            &r.body,
            &r.audience,
            &r.group,
            &r.overrides,
            &r.sms_due,
            &r.schedule,
            &r.due,
            &r.next,
            &r.cid,
            &r.cid_pooled,
            &e.app,
            &e.target,
            &e.command,
            &e.at,
            &e.n,
            &e.bodies,
        ],
    )
    .await?;
    Ok(())
}

/// Several pushes, one statement and one transaction; the pushes refused: (place,
/// SQLSTATE, message), in order.
async fn insert_many(pool: &Pool, rows: &[&PushRow]) -> StoreResult<Vec<(usize, String, String)>> {
    let n = rows.len();
    let mut events = EventRows::default();
    let (mut from, mut to) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for r in rows {
        from.push(events.app.len() as i32 + 1);
        events.extend(&r.events);
        to.push(events.app.len() as i32);
    }
    let col = |f: fn(&PushRow) -> i64| rows.iter().map(|r| f(r)).collect::<Vec<i64>>();
    let opt = |f: fn(&PushRow) -> Option<i64>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let text = |f: fn(&PushRow) -> Option<String>| rows.iter().map(|r| f(r)).collect::<Vec<_>>();
    let msg_ids = col(|r| r.msg_id);
    let sent = col(|r| r.sent_ms);
    let expires = col(|r| r.expires_ms);
    let apps: Vec<&str> = rows.iter().map(|r| r.app_key.as_str()).collect();
    let bodies: Vec<&str> = rows.iter().map(|r| r.body.as_str()).collect();
    let audiences: Vec<&[u8]> = rows.iter().map(|r| r.audience.as_slice()).collect();
    let groups = text(|r| r.group.clone());
    let overrides = opt(|r| r.overrides);
    let sms_due = opt(|r| r.sms_due);
    let schedules = text(|r| r.schedule.clone());
    let due = opt(|r| r.due);
    let next = opt(|r| r.next);
    let cids = text(|r| r.cid.clone());
    let pooled: Vec<bool> = rows.iter().map(|r| r.cid_pooled).collect();
    let c = get_client(pool).await?;
    let failed = query(
        &c,
        "insert_push",
        "SELECT item, state, message FROM pigeon_insert_pushes($1, $2, $3, $4, $5, $6, $7,
            $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)",
        &[
            &msg_ids,
            &apps,
            &sent,
            &expires,
            &bodies,
            &audiences,
            &groups,
            &overrides,
            &sms_due,
            &schedules,
            &due,
            &next,
            &cids,
            &pooled,
            &from,
            &to,
            &events.app,
            &events.target,
            &events.command,
            &events.at,
            &events.n,
            &events.bodies,
        ],
    )
    .await?;
    let mut out = Vec::with_capacity(failed.len());
    for r in &failed {
        let item: i32 = crate::col(r, 0)?;
        let place = usize::try_from(item)
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| {
                StoreError::Backend(format!("insert_push: no push {item} in the batch"))
            })?;
        out.push((place, crate::col(r, 1)?, crate::col(r, 2)?));
    }
    out.sort_by_key(|f| f.0);
    Ok(out)
}
