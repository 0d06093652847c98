//! `pigeon bench geofence` at toy sizes (`--quick`), so the harness cannot rot between
//! measurements: matching (beside PostGIS when its extension is installed; skipped, saying
//! why, when it is not) and one node end to end. The figures are in BENCHMARKS.md.

mod common;

use common::{table_rows, BIN};
use std::process::Command;

#[test]
fn geofence_bench_matches_and_runs_end_to_end() {
    let out = Command::new(BIN)
        .args(["bench", "geofence", "--quick"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run pigeon bench geofence");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "pigeon bench geofence --quick failed:\n{stdout}\n{stderr}"
    );

    let matching = table_rows(&stdout, "variant");
    let postgis = !stdout.contains("PostGIS skipped");
    // The test command (scripts/test) installs PostGIS with the test services: there the
    // comparison must have run.
    assert!(
        postgis || std::env::var_os("PIGEON_TEST_POSTGRES_URL").is_none(),
        "PostGIS is missing where the test services were set up:\n{stdout}"
    );
    if !postgis {
        eprintln!(
            "PostGIS part skipped: {}",
            stdout
                .lines()
                .find(|l| l.contains("PostGIS skipped"))
                .unwrap_or_default()
        );
    }
    assert_eq!(matching.len(), if postgis { 4 } else { 3 }, "{stdout}");
    for r in &matching {
        let rate: f64 = r[2].parse().expect("reports/s");
        assert!(rate > 0.0, "{r:?}");
        let matched: f64 = r[4].parse().expect("fences matched");
        assert!(matched > 1.0, "{r:?}");
    }
    if postgis {
        assert!(stdout.contains("Agreement on 50 points"), "{stdout}");
    }
    let memory = table_rows(&stdout, "fences");
    let per_fence: f64 = memory[0][3].parse().expect("heap_bytes/len");
    assert!(per_fence > 10.0 && per_fence < 1_000.0, "{memory:?}");

    let phases = table_rows(&stdout, "phase");
    assert_eq!(phases.len(), 4, "{stdout}");
    for p in &phases {
        assert_eq!(p[4], "0", "errors in {p:?}");
        let ok: u64 = p[1].parse().expect("reports ok");
        assert!(ok >= 100, "{p:?}");
    }
    // Standing still changes nothing.
    assert_eq!(phases[3][5], "0", "{phases:?}");
    assert!(stdout.contains("Geofence.Event:"), "{stdout}");
    let disk = table_rows(&stdout, "no-change reports");
    assert_eq!(disk.len(), 1, "{stdout}");
}
