//! The benchmark scenarios run end to end at toy sizes, so the harness cannot rot between
//! measurements. The figures themselves are in BENCHMARKS.md, measured with the full sizes.

mod common;

use common::BIN;
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
    let r = row(&bench(&[
        "audience",
        "--devices",
        "100000",
        "--rounds",
        "3",
        "--no-redis",
    ]));
    assert_eq!(r[0], "100000");
    let matched: u64 = r[1].parse().expect("matched");
    // 50% × 10% × 99% of 100k, give or take the draw.
    assert!((4_000..6_000).contains(&matched), "{r:?}");
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
        "--rates",
        "200",
        "--sqlite-synchronous",
        "normal",
        "--dialect",
        "jpush,getui-v2,getui-legacy",
    ]);
    let rows: Vec<Vec<String>> = out
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    // Two phases per dialect: dialect, phase, pushes/s, errors, ..., delivered.
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
        let per_s: f64 = r[2].parse().expect("rate");
        let delivered: f64 = r[8].parse().expect("delivered");
        assert!(per_s > 0.0 && delivered >= per_s, "{r:?}");
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
