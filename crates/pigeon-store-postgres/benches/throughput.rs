//! How many durable pushes a second three nodes store together (`insert_push`, the hot
//! path): a measurement, not a check of behaviour, so a bench of its own:
//! `PIGEON_TEST_POSTGRES_URL=... cargo bench -p pigeon-store-postgres --bench throughput`.

#[path = "../tests/common/mod.rs"]
mod common;

use pigeon_core::{Audience, PlatformSet, Push};
use pigeon_store::ports::*;
use pigeon_store_postgres::PostgresStore;
use roaring::RoaringBitmap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(insert_push_throughput_of_three_nodes());
}

async fn insert_push_throughput_of_three_nodes() {
    let url = common::fresh_db("throughput").await;
    let db = common::raw(&url).await;
    let sync: String = db
        .query_one("SHOW synchronous_commit", &[])
        .await
        .expect("setting")
        .get(0);
    let seconds: u64 = std::env::var("PIGEON_THROUGHPUT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let per_node: u64 = std::env::var("PIGEON_THROUGHPUT_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let mut nodes = Vec::new();
    for n in 0..3 {
        nodes.push(
            PostgresStore::connect(&url, &format!("n{n}"))
                .await
                .expect("connect"),
        );
    }
    let audience: RoaringBitmap = (0..1000u32).collect();
    let next_id = Arc::new(AtomicU64::new(1));
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for node in &nodes {
        for _ in 0..per_node {
            let (node, audience) = (node.clone(), audience.clone());
            let (next_id, done) = (next_id.clone(), done.clone());
            tasks.push(tokio::spawn(async move {
                while Instant::now() < until {
                    let mut p = Push::new(PlatformSet::all(), Audience::All);
                    p.msg_id = next_id.fetch_add(1, Ordering::Relaxed);
                    p.sent_ms = 1_000;
                    p.content.message = Some(Default::default());
                    node.insert_push("app", &p, &audience, Vec::new())
                        .await
                        .expect("insert_push");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    let started = Instant::now();
    for t in tasks {
        t.await.expect("task");
    }
    let n = done.load(Ordering::Relaxed);
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "insert_push: {n} pushes in {:.1}s = {rate:.0}/s (3 nodes x {per_node} callers, \
         synchronous_commit={sync})",
        started.elapsed().as_secs_f64()
    );
}
