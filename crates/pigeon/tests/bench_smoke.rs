//! The benchmark scenarios run end to end at toy sizes, so the harness cannot rot between
//! measurements. The figures themselves are in BENCHMARKS.md, measured with the full sizes.

mod common;

use common::{table_rows, BIN};
use std::process::Command;

fn bench(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pigeon bench");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "pigeon bench {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The data row of a scenario's Markdown table.
fn row(table: &str) -> Vec<String> {
    let line = table
        .lines()
        .filter(|l| l.starts_with('|'))
        .nth(2)
        .expect("a data row");
    line.trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

#[test]
fn fanout_broadcasts_to_every_device() {
    let r = row(&bench(&[
        "fanout",
        "--counts",
        "300",
        "--rounds",
        "2",
        "--agents",
        "2",
        "--no-mosquitto",
    ]));
    assert_eq!(r[0], "300");
    let ms: f64 = r[1].parse().expect("ms");
    assert!(ms > 0.0 && ms < 10_000.0, "{r:?}");
    let bytes_per_conn: f64 = r[6].parse().expect("bytes per connection");
    assert!(bytes_per_conn < 100_000.0, "{r:?}");
}

#[test]
fn audience_resolves_and_agrees_on_the_count() {
    let out = bench(&[
        "audience",
        "--devices",
        "100000",
        "--rounds",
        "3",
        "--no-redis",
    ]);
    let r = row(&out);
    assert_eq!(r[0], "100000");
    let matched: u64 = r[1].parse().expect("matched");
    // 50% × 10% × 99% of 100k, give or take the draw.
    assert!((4_000..6_000).contains(&matched), "{r:?}");
    // The same audience as a segment reaches the same devices; as a 45/45 test with control
    // 10, its variants and control share them out.
    let saved = table_rows(&out, "push to");
    let count = |cell: &str| -> u64 { cell.parse().expect("a count") };
    assert_eq!(saved.len(), 3, "{out}");
    assert_eq!(
        (saved[1][0].as_str(), count(&saved[1][2])),
        ("segment", matched)
    );
    let split: Vec<u64> = saved[2][3].split(" / ").map(count).collect();
    let control = count(&saved[2][4]);
    assert_eq!(split.len(), 2, "{saved:?}");
    assert_eq!(split.iter().sum::<u64>() + control, matched);
    assert_eq!(split.iter().sum::<u64>(), count(&saved[2][2]));
    for (share, weight) in [(split[0], 45), (split[1], 45), (control, 10)] {
        let expected = matched * weight / 100;
        assert!(share.abs_diff(expected) < expected / 5, "{saved:?}");
    }
}

#[test]
fn restart_serves_pending_pushes() {
    let r = row(&bench(&["restart", "--devices", "5000", "--pushes", "500"]));
    assert_eq!((r[0].as_str(), r[1].as_str()), ("5000", "500"));
    let served_ms: u64 = r[3].parse().expect("ms");
    assert!(served_ms < 60_000, "{r:?}");
}

#[test]
fn push_api_delivers_every_accepted_push() {
    let out = bench(&[
        "push-api",
        "--devices",
        "50",
        "--agents",
        "1",
        "--connections",
        "4",
        "--secs",
        "1",
        "--rounds",
        "2",
        "--rates",
        "200",
        "--sqlite-synchronous",
        "normal",
        "--dialect",
        "jpush,getui-v2,getui-legacy",
    ]);
    // Every phase of every round (a table headed "round"), then each phase's medians.
    let each = table_rows(&out, "round");
    assert_eq!(each.len(), 12, "{out}");
    assert_eq!(each[0][0], "1", "{out}");
    assert_eq!(each[11][0], "2", "{out}");
    assert!(out.contains("Medians of 2 rounds"), "{out}");
    let rows = table_rows(&out, "dialect");
    // Two phases per dialect: dialect, phase, pushes/s (min – max), errors, ..., delivered
    // over both rounds.
    assert_eq!(rows.len(), 6, "{out}");
    for (r, dialect) in rows.iter().zip([
        "jpush",
        "jpush",
        "getui-v2",
        "getui-v2",
        "getui-legacy",
        "getui-legacy",
    ]) {
        assert_eq!(r[0], dialect, "{r:?}");
        assert_eq!(r[3], "0", "errors in {r:?}");
        let per_s: f64 = r[2]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("rate");
        // One-second phases: a round's pushes/s is what it had accepted.
        let accepted: f64 = each
            .iter()
            .filter(|e| e[1] == r[0] && e[2] == r[1])
            .map(|e| e[3].parse::<f64>().expect("a round's rate"))
            .sum();
        let delivered: f64 = r[8].parse().expect("delivered");
        assert!(per_s > 0.0 && delivered >= accepted, "{r:?} {each:?}");
    }
}

#[test]
fn callbacks_bench_receives_every_delivered_event() {
    let r = row(&bench(&[
        "callbacks",
        "--devices",
        "200",
        "--broadcasts",
        "2",
        "--agents",
        "2",
    ]));
    assert_eq!(r[0], "200");
    assert_eq!(r[5], "400 of 400", "{r:?}");
    let rate: f64 = r[6].parse().expect("events/s");
    assert!(rate > 0.0, "{r:?}");
}

/// Cluster mode at a toy size: 2 nodes on a PostgreSQL and a NATS server the bench starts
/// itself (or the ones `PIGEON_TEST_POSTGRES_URL` / `PIGEON_TEST_NATS_URL` name), every
/// scenario. Never skipped: without PostgreSQL or nats-server it fails and says what is
/// missing.
#[test]
fn cluster_bench_runs_every_scenario() {
    let mut args: Vec<String> = [
        "cluster",
        "--scenario",
        "all",
        "--nodes",
        "2",
        "--devices-per-node",
        "50",
        "--rounds",
        "2",
        "--unicast-nodes",
        "2",
        "--unicast-devices",
        "50",
        "--loaders",
        "1",
        "--connections",
        "4",
        "--secs",
        "1",
        "--rates",
        "200",
        "--failover-nodes",
        "2",
        "--failover-devices",
        "50",
        "--failover-rate",
        "100",
        "--failover-secs",
        "2",
        "--failover-timeout-s",
        "60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (var, flag) in [
        ("PIGEON_TEST_POSTGRES_URL", "--postgres"),
        ("PIGEON_TEST_NATS_URL", "--nats"),
    ] {
        if let Ok(url) = std::env::var(var) {
            if !url.trim().is_empty() {
                args.extend([flag.to_string(), url.trim().to_string()]);
            }
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = bench(&args);

    let connections = table_rows(&out, "nodes");
    assert_eq!(connections.len(), 1, "{out}");
    assert_eq!(
        (connections[0][0].as_str(), connections[0][2].as_str()),
        ("2", "100")
    );
    let ms: f64 = connections[0][5].parse().expect("broadcast ms");
    assert!(ms > 0.0 && ms < 60_000.0, "{connections:?}");

    let unicast = table_rows(&out, "setup");
    // max and the fixed rate, on the cluster and on one SQLite node.
    assert_eq!(unicast.len(), 4, "{out}");
    for r in &unicast {
        assert_eq!(r[3], "0", "errors in {r:?}");
        let per_s: f64 = r[2].parse().expect("rate");
        let delivered: f64 = r[8].parse().expect("delivered");
        assert!(per_s > 0.0 && delivered >= per_s, "{r:?}");
    }

    let failover = table_rows(&out, "devices on the killed node");
    assert_eq!(failover.len(), 1, "{out}");
    let f = &failover[0];
    assert_eq!(f[0], "50");
    let back_s: f64 = f[4]
        .parse()
        .unwrap_or_else(|_| panic!("devices not back: {f:?}"));
    assert!(back_s < 60.0, "{f:?}");
    assert_eq!(f[7], "0", "pushes lost in failover: {f:?}");
    assert!(out.contains("cluster failover:"), "{out}");
}
