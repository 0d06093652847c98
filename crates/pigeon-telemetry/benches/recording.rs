//! What one recording costs with the recorder installed (BENCHMARKS.md, "Metrics: cost on the
//! hot paths"): `cargo bench -p pigeon-telemetry --bench recording`.

use pigeon_telemetry::{
    connection_closed, connection_opened, deliveries, http_request, install, storage_commit,
    Channel, Stage,
};
use std::time::{Duration, Instant};

fn per_call(n: u32, mut f: impl FnMut(u32)) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        f(std::hint::black_box(i));
    }
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    install()?;
    let n = 10_000_000;
    let sent = per_call(n, |i| {
        deliveries(Channel::Pigeon, Stage::Sent, u64::from(i & 1))
    });
    let gauge = per_call(n, |i| {
        if i & 1 == 0 {
            connection_opened("android")
        } else {
            connection_closed("android")
        }
    });
    let commit = per_call(n, |_| storage_commit(Duration::from_micros(450)));
    let http = per_call(n, |_| {
        http_request(Some("/v3/push"), 200, Duration::from_micros(1800))
    });
    println!(
        "ns per call: deliveries {sent:.1}, connection gauge {gauge:.1}, \
         storage_commit {commit:.1}, http_request {http:.1}"
    );
    Ok(())
}
