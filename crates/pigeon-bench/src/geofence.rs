//! `pigeon bench geofence`: how fast fences are matched, beside PostGIS, and what one node
//! does with devices reporting where they are.
//!
//! **Matching** (in this process, one thread): N fences over a city-sized square, random
//! reports over the same square from random devices. Each report is evaluated as
//! `Engine::judge` does, minus its locks and the audience check (every bench fence watches
//! every device): the index query and exact test ([`FenceIndex::containing`]), then the
//! device's [`Standings`] judged — the engine's own type — and a `FenceState` made for every
//! change as the engine hands the store. Variants: matching alone (bulk-loaded tree, as the
//! engine loads an app's fences, and a tree built by inserts, as fences created one by one
//! through the API end up), and matching with judging. The memory the index
//! takes is the RSS growth around building it. Then PostGIS in the same run: the same fences
//! in a `geography(Point)` column with a GiST index, `ST_DWithin` per report from one
//! connection, and the matched sets of both compared on sample points.
//!
//! **End to end**: one `pigeon serve` with fences in a small area (created through
//! `/v3/geofences`) and a `Geofence.Event` endpoint (a receiver here), devices connected from
//! agent processes (`pigeon bench geofence-agent`) that report with a `seq` and wait for its
//! `ok` before the next report, at most `--rate` a second each (the protocol's 20). Each agent
//! predicts what its reports fire with its own [`FenceIndex`] of the same fences, so the
//! latency of reports that fire an `enter` is known and the events the receiver gets can be
//! checked against the prediction. Last, devices stand still (inside or outside fences) and
//! the bytes the server writes (`/proc/<pid>/io` `write_bytes`, and its data directory's
//! growth) are counted per million reports that change nothing.

use crate::procs::{connect_from, cpu_ns, now_us, rss_kib, split, Guard, PigeonServer};
use crate::table::{median, Table};
use crate::wsclient::{json_field, WsClient};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use futures_util::stream::{self, StreamExt};
use pigeon_core::FastMap;
use pigeon_engine::geofences::{haversine_m, FenceIndex, Judged, Rules, Standings};
use pigeon_store::{FenceState, FENCE_ENTER, FENCE_LEAVE};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Metres in a degree of latitude on the contract's sphere.
const M_PER_DEG: f64 = pigeon_engine::geofences::EARTH_RADIUS_M * std::f64::consts::PI / 180.0;
/// The centre of the bench's squares (Shanghai).
const CENTRE: (f64, f64) = (31.2304, 121.4737);
/// Where PostGIS's extension file is when Debian's package is installed.
const POSTGIS_CONTROL: &str = "/usr/share/postgresql/15/extension/postgis.control";
/// Mismatches between PostGIS (WGS-84 spheroid) and Pigeon (sphere) must lie this close to
/// a fence's edge, as a fraction of its radius.
const EDGE_TOLERANCE: f64 = 0.005;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Matching,
    E2e,
    All,
}

#[derive(Args, Debug, Clone)]
pub struct GeofenceArgs {
    /// Which part to run: matching (in this process, beside PostGIS), e2e (one `pigeon
    /// serve` and devices), or all.
    #[arg(long, value_enum, default_value = "all")]
    pub part: Part,
    /// Toy sizes, for CI (seconds in all): replaces every size below.
    #[arg(long)]
    pub quick: bool,
    /// Matching: fences in the one app.
    #[arg(long, default_value_t = 100_000)]
    pub fences: usize,
    /// Matching: random reports evaluated per round (fewer if a round reaches --round-secs).
    #[arg(long, default_value_t = 1_000_000)]
    pub reports: usize,
    /// Matching: devices the reports come from (each keeps its standing in memory).
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// Matching: side of the square the fences and reports are spread over, km.
    #[arg(long, default_value_t = 40.0)]
    pub area_km: f64,
    /// Matching: fence radii are uniform between these, metres.
    #[arg(long, default_value_t = 50.0)]
    pub min_radius_m: f64,
    #[arg(long, default_value_t = 2000.0)]
    pub max_radius_m: f64,
    /// Matching: rounds of each variant; the table shows the median.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Matching: longest one round of one variant runs; it evaluates fewer reports past it
    /// (the table says how many).
    #[arg(long, default_value_t = 10.0)]
    pub round_secs: f64,
    /// Matching: reports run through PostGIS (the first ones of the same reports).
    #[arg(long, default_value_t = 20_000)]
    pub postgis_reports: usize,
    /// Matching: points on which PostGIS's and Pigeon's matched sets are compared.
    #[arg(long, default_value_t = 300)]
    pub agree_points: usize,
    /// Skip PostGIS.
    #[arg(long)]
    pub no_postgis: bool,
    /// End to end: fences, created through /v3/geofences.
    #[arg(long, default_value_t = 2_000)]
    pub e2e_fences: usize,
    /// End to end: devices connected over the device protocol.
    #[arg(long, default_value_t = 10_000)]
    pub e2e_devices: usize,
    /// End to end: side of the square, km.
    #[arg(long, default_value_t = 10.0)]
    pub e2e_area_km: f64,
    /// End to end: fence radii are uniform between these, metres.
    #[arg(long, default_value_t = 50.0)]
    pub e2e_min_radius_m: f64,
    #[arg(long, default_value_t = 250.0)]
    pub e2e_max_radius_m: f64,
    /// End to end: agent processes holding the devices.
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// End to end: seconds of the moving phase at full rate.
    #[arg(long, default_value_t = 20)]
    pub move_secs: u64,
    /// End to end: metres a device moves between two reports while moving.
    #[arg(long, default_value_t = 25.0)]
    pub step_m: f64,
    /// End to end: most reports a second per device (the protocol allows 20).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// End to end: reports a second per device in the light phase (latency without queueing).
    #[arg(long, default_value_t = 1.0)]
    pub light_rate: f64,
    /// End to end: seconds of the light phase (0: skip it).
    #[arg(long, default_value_t = 10)]
    pub light_secs: u64,
    /// End to end: reports that change nothing, for the disk figure.
    #[arg(long, default_value_t = 1_000_000)]
    pub still_reports: usize,
    /// End to end: seconds the server is watched idle first, for comparison.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    /// Seed of the fences and reports.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl GeofenceArgs {
    fn sized(mut self) -> GeofenceArgs {
        if self.quick {
            self.fences = 2_000;
            self.reports = 20_000;
            self.devices = 1_000;
            self.area_km = 10.0;
            self.rounds = 1;
            self.round_secs = 2.0;
            self.postgis_reports = 500;
            self.agree_points = 50;
            self.e2e_fences = 50;
            self.e2e_devices = 100;
            self.e2e_area_km = 2.0;
            self.agents = 2;
            self.move_secs = 2;
            // Two seconds: at 1 report/s a one-second phase sends 100 reports only if no
            // device is late, and the smoke test wants ≥ 100 from every phase.
            self.light_secs = 2;
            self.still_reports = 2_000;
            self.idle_secs = 1;
        }
        self
    }
}

/// A square around [`CENTRE`], in degrees.
#[derive(Clone, Copy, Debug)]
struct Area {
    lat: f64,
    lon: f64,
    half_lat: f64,
    half_lon: f64,
}

impl Area {
    fn new(side_km: f64) -> Area {
        let half_lat = side_km * 500.0 / M_PER_DEG;
        Area {
            lat: CENTRE.0,
            lon: CENTRE.1,
            half_lat,
            half_lon: half_lat / CENTRE.0.to_radians().cos(),
        }
    }

    fn point(&self, rng: &mut StdRng) -> (f64, f64) {
        (
            self.lat + rng.gen_range(-self.half_lat..=self.half_lat),
            self.lon + rng.gen_range(-self.half_lon..=self.half_lon),
        )
    }

    fn text(&self) -> String {
        format!(
            "{},{},{},{}",
            self.lat, self.lon, self.half_lat, self.half_lon
        )
    }

    fn parse(text: &str) -> anyhow::Result<Area> {
        let v: Vec<f64> = text
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()?;
        match v.as_slice() {
            [lat, lon, half_lat, half_lon] => Ok(Area {
                lat: *lat,
                lon: *lon,
                half_lat: *half_lat,
                half_lon: *half_lon,
            }),
            _ => bail!("--area wants lat,lon,half_lat,half_lon"),
        }
    }
}

/// `n` circles (lat, lon, radius_m) spread over `area`.
fn circles(n: usize, area: &Area, radii: (f64, f64), rng: &mut StdRng) -> Vec<(f64, f64, f64)> {
    (0..n)
        .map(|_| {
            let (lat, lon) = area.point(rng);
            (lat, lon, rng.gen_range(radii.0..=radii.1.max(radii.0)))
        })
        .collect()
}

pub fn run(args: GeofenceArgs) -> anyhow::Result<()> {
    let args = args.sized();
    if matches!(args.part, Part::Matching | Part::All) {
        matching(&args)?;
    }
    if matches!(args.part, Part::E2e | Part::All) {
        e2e(&args)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Matching

/// What one round of one variant did.
#[derive(Default, Clone, Copy)]
struct Round {
    reports: usize,
    secs: f64,
    matched: u64,
    changes: u64,
    fires: u64,
}

impl Round {
    fn per_s(&self) -> f64 {
        self.reports as f64 / self.secs
    }
}

/// What one report did: fences matched, standings changed, firings.
type Did = (usize, usize, usize);

/// A way of evaluating reports, fresh for each round.
trait Evaluate {
    fn report(&mut self, device: u32, lat: f64, lon: f64, now_ms: u64) -> Did;
}

/// The index query and the exact test, nothing else.
struct MatchOnly<'a> {
    index: &'a FenceIndex,
    around: Vec<u32>,
}

impl Evaluate for MatchOnly<'_> {
    fn report(&mut self, _: u32, lat: f64, lon: f64, _: u64) -> Did {
        self.around.clear();
        self.index.containing(lat, lon, &mut self.around);
        (self.around.len(), 0, 0)
    }
}

/// The fences' ids, rules and the app, as the engine has them.
struct Fences<'a> {
    index: &'a FenceIndex,
    ids: &'a [String],
    rules: Rules,
    app_key: &'a str,
}

/// `Engine::judge` without its locks: the engine's own [`Standings`] per device, and the
/// store rows of the changes built as the engine builds them (not written).
struct Judging<'a> {
    f: &'a Fences<'a>,
    devices: FastMap<u32, Standings>,
    around: Vec<u32>,
    judged: Vec<Judged>,
}

impl Evaluate for Judging<'_> {
    fn report(&mut self, device: u32, lat: f64, lon: f64, now: u64) -> Did {
        let f = self.f;
        self.around.clear();
        f.index.containing(lat, lon, &mut self.around);
        self.around.sort_unstable();
        self.judged.clear();
        self.devices.entry(device).or_default().judge(
            &self.around,
            |_| Some(f.rules),
            now,
            (lat, lon),
            &mut self.judged,
        );
        let writes: Vec<FenceState> = self
            .judged
            .iter()
            .map(|j| j.track.state(f.app_key, &f.ids[j.slot as usize], device))
            .collect();
        let fires = self.judged.iter().filter(|j| j.fired.is_some()).count();
        (self.around.len(), std::hint::black_box(writes).len(), fires)
    }
}

/// Runs `rounds` rounds of a variant over `reports`, each on fresh standings.
fn rounds<E: Evaluate>(
    name: &str,
    args: &GeofenceArgs,
    reports: &[(u32, f64, f64)],
    fresh: impl Fn() -> E,
) -> Vec<Round> {
    let limit = Duration::from_secs_f64(args.round_secs);
    (0..args.rounds.max(1))
        .map(|_| {
            let mut e = fresh();
            let mut r = Round::default();
            let t = Instant::now();
            for (i, &(device, lat, lon)) in reports.iter().enumerate() {
                if i % 1024 == 0 && t.elapsed() > limit {
                    break;
                }
                let (m, c, f) = e.report(device, lat, lon, 1_700_000_000_000 + i as u64);
                r.reports += 1;
                r.matched += m as u64;
                r.changes += c as u64;
                r.fires += f as u64;
            }
            r.secs = t.elapsed().as_secs_f64();
            eprintln!(
                "   {name}: {} reports in {:.2} s = {:.0}/s",
                r.reports,
                r.secs,
                r.per_s()
            );
            r
        })
        .collect()
}

fn matching(args: &GeofenceArgs) -> anyhow::Result<()> {
    let area = Area::new(args.area_km);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let radii = (args.min_radius_m, args.max_radius_m);
    eprintln!(
        "== matching: {} fences over {} km × {} km (radii {}–{} m), {} reports from {} devices",
        args.fences, args.area_km, args.area_km, radii.0, radii.1, args.reports, args.devices
    );
    let circles = circles(args.fences, &area, radii, &mut rng);
    let ids: Vec<String> = (0..args.fences)
        .map(|_| format!("gf{:016x}", rng.gen::<u64>()))
        .collect();
    let devices = args.devices.max(1) as u32;
    let reports: Vec<(u32, f64, f64)> = (0..args.reports)
        .map(|_| {
            let d = rng.gen_range(0..devices);
            let (lat, lon) = area.point(&mut rng);
            (d, lat, lon)
        })
        .collect();

    // Memory: the RSS growth around building each index, the tree the engine builds by
    // inserting (as it loads an app's fences) first.
    let pid = std::process::id();
    let rss0 = rss_kib(pid)?;
    let t = Instant::now();
    let mut inserted = FenceIndex::new();
    for &(lat, lon, r) in &circles {
        inserted.insert(lat, lon, r);
    }
    let insert_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss1 = rss_kib(pid)?;
    let t = Instant::now();
    let bulk = FenceIndex::bulk(&circles);
    let bulk_ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss2 = rss_kib(pid)?;
    let n = args.fences.max(1) as f64;
    let per_fence = |kib: u64| (kib * 1024) as f64 / n;

    let fences = Fences {
        index: &bulk,
        ids: &ids,
        rules: Rules {
            events: FENCE_ENTER | FENCE_LEAVE,
            stay_ms: None,
            repeat: true,
            cooldown_ms: 0,
            start_ms: None,
            end_ms: None,
        },
        app_key: "benchbenchbenchbenchbench",
    };
    let variants: Vec<(&str, Vec<Round>)> = vec![
        (
            "match only (index + exact test), bulk-loaded tree as the engine loads an app's fences",
            rounds("match only, bulk", args, &reports, || MatchOnly {
                index: &bulk,
                around: Vec::new(),
            }),
        ),
        (
            "match only, tree grown by inserts (fences created one by one; built again in one pass at each quarter grown)",
            rounds("match only, inserts", args, &reports, || MatchOnly {
                index: &inserted,
                around: Vec::new(),
            }),
        ),
        (
            "match + judge: the engine's Standings, store rows of the changes built",
            rounds("match + judge", args, &reports, || Judging {
                f: &fences,
                devices: FastMap::default(),
                around: Vec::new(),
                judged: Vec::new(),
            }),
        ),
    ];

    let postgis = if args.no_postgis {
        eprintln!("   PostGIS: skipped (--no-postgis)");
        None
    } else if !Path::new(POSTGIS_CONTROL).is_file() {
        eprintln!(
            "   PostGIS: skipped: {POSTGIS_CONTROL} is missing; install it with \
             `apt-get install -y postgresql-15-postgis-3`"
        );
        println!("PostGIS skipped: the extension is not installed (apt-get install -y postgresql-15-postgis-3).");
        None
    } else {
        Some(postgis(args, &circles, &reports, &bulk)?)
    };

    println!(
        "Matching: {} fences over {} km × {} km, radii {}–{} m; reports uniform over the same \
         square from {} devices; one thread; median of {} rounds.",
        args.fences,
        args.area_km,
        args.area_km,
        radii.0,
        radii.1,
        args.devices,
        args.rounds.max(1)
    );
    let mut table = Table::new(&[
        "variant",
        "reports evaluated",
        "reports/s",
        "µs/report",
        "fences matched/report",
        "changes/report",
        "× PostGIS",
    ]);
    let pg_rate = postgis.as_ref().map(|p| p.per_s);
    for (name, rs) in &variants {
        let rate = median(rs.iter().map(Round::per_s));
        let evaluated = median(rs.iter().map(|r| r.reports as f64));
        let r = rs.first().copied().unwrap_or_default();
        table.row(vec![
            name.to_string(),
            format!("{evaluated:.0} of {}", args.reports),
            format!("{rate:.0}"),
            format!("{:.2}", 1e6 / rate),
            format!("{:.1}", r.matched as f64 / r.reports.max(1) as f64),
            if name.starts_with("match only") {
                String::new()
            } else {
                format!("{:.1}", r.changes as f64 / r.reports.max(1) as f64)
            },
            pg_rate
                .map(|p| format!("{:.0}×", rate / p))
                .unwrap_or_default(),
        ]);
    }
    if let Some(p) = &postgis {
        table.row(vec![
            "PostGIS ST_DWithin(center, point, radius_m), GiST, one connection".into(),
            format!("{} of {}", p.reports, args.reports),
            format!("{:.0}", p.per_s),
            format!("{:.2}", 1e6 / p.per_s),
            format!("{:.1}", p.matched_per_report),
            String::new(),
            "1×".into(),
        ]);
    }
    table.print();
    println!("(A round stops after {} s.)", args.round_secs);
    println!();
    let mut mem = Table::new(&[
        "fences",
        "build by inserts ms",
        "RSS growth B/fence",
        "heap_bytes/len",
        "bulk load ms",
        "bulk RSS growth B/fence",
        "bulk heap_bytes/len",
    ]);
    mem.row(vec![
        args.fences.to_string(),
        format!("{insert_ms:.0}"),
        format!("{:.0}", per_fence(rss1.saturating_sub(rss0))),
        format!("{:.0}", inserted.heap_bytes() as f64 / n),
        format!("{bulk_ms:.0}"),
        format!("{:.0}", per_fence(rss2.saturating_sub(rss1))),
        format!("{:.0}", bulk.heap_bytes() as f64 / n),
    ]);
    mem.print();
    if let Some(p) = &postgis {
        println!();
        println!(
            "PostGIS: plan {}; per-row radius alone (no constant pre-filter): {}.",
            p.plan,
            p.naive
                .map(|(n, r)| format!("{r:.1} reports/s over {n} reports"))
                .unwrap_or_else(|| "not run".into())
        );
        println!(
            "Agreement on {} points: {} fence(s) matched by one side only (PostGIS: WGS-84 \
             spheroid; Pigeon: sphere of 6,371,008.8 m); farthest from its fence's edge: {:.3}% \
             of the radius (tolerance {:.1}%).",
            p.agree_points,
            p.mismatches,
            p.worst_edge * 100.0,
            EDGE_TOLERANCE * 100.0
        );
        if p.worst_edge > EDGE_TOLERANCE {
            bail!(
                "PostGIS and Pigeon disagree on a fence {:.3}% of its radius from the edge",
                p.worst_edge * 100.0
            );
        }
    }
    println!();
    Ok(())
}

struct PostgisOut {
    reports: usize,
    per_s: f64,
    matched_per_report: f64,
    plan: String,
    naive: Option<(usize, f64)>,
    agree_points: usize,
    mismatches: usize,
    worst_edge: f64,
}

/// The same fences in PostGIS, queried one report at a time from one connection.
fn postgis(
    args: &GeofenceArgs,
    circles: &[(f64, f64, f64)],
    reports: &[(u32, f64, f64)],
    index: &FenceIndex,
) -> anyhow::Result<PostgisOut> {
    eprintln!("   PostGIS: starting a private PostgreSQL");
    let (_pg, port) = crate::cluster::PrivatePostgres::start()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .context("connecting to the private PostgreSQL")?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(
                "CREATE EXTENSION postgis;
                 CREATE TABLE fences (id int4 PRIMARY KEY, center geography(Point, 4326) NOT NULL,
                                      radius_m float8 NOT NULL);",
            )
            .await
            .context("CREATE EXTENSION postgis")?;
        let t = Instant::now();
        let insert = client
            .prepare(
                "INSERT INTO fences SELECT i, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography, r
                 FROM unnest($1::int4[], $2::float8[], $3::float8[], $4::float8[]) AS t(i, lat, lon, r)",
            )
            .await?;
        for (c, chunk) in circles.chunks(10_000).enumerate() {
            let ids: Vec<i32> = (0..chunk.len())
                .map(|i| (c * 10_000 + i) as i32)
                .collect();
            let lats: Vec<f64> = chunk.iter().map(|c| c.0).collect();
            let lons: Vec<f64> = chunk.iter().map(|c| c.1).collect();
            let rs: Vec<f64> = chunk.iter().map(|c| c.2).collect();
            client.execute(&insert, &[&ids, &lats, &lons, &rs]).await?;
        }
        client
            .batch_execute("CREATE INDEX fences_center ON fences USING gist (center); ANALYZE fences;")
            .await?;
        eprintln!(
            "   PostGIS: {} fences loaded and indexed in {:.1} s",
            circles.len(),
            t.elapsed().as_secs_f64()
        );
        // ST_DWithin with a radius from the row cannot use the index (the search box would
        // depend on the row), so the query bounds the search by the largest radius first —
        // the usual way — and then applies each fence's own radius.
        let max_r = circles.iter().map(|c| c.2).fold(0.0, f64::max);
        let sql = "SELECT id FROM fences
                   WHERE ST_DWithin(center, ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography, $3)
                     AND ST_DWithin(center, ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography, radius_m)";
        let query = client.prepare(sql).await?;
        let plan_rows = client
            .simple_query(&format!(
                "EXPLAIN SELECT id FROM fences
                 WHERE ST_DWithin(center, ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)::geography, {max_r})
                   AND ST_DWithin(center, ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326)::geography, radius_m)",
                lat = CENTRE.0,
                lon = CENTRE.1
            ))
            .await?;
        let plan = explain_summary(&plan_rows);
        // Warm up: the table and index in shared buffers.
        for &(_, lat, lon) in reports.iter().take(200) {
            client.query(&query, &[&lat, &lon, &max_r]).await?;
        }
        let n = args.postgis_reports.min(reports.len());
        let t = Instant::now();
        let mut matched = 0usize;
        for &(_, lat, lon) in &reports[..n] {
            matched += client.query(&query, &[&lat, &lon, &max_r]).await?.len();
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "   PostGIS: {n} reports in {secs:.2} s = {:.0}/s",
            n as f64 / secs
        );
        // The per-row radius alone, a few reports: how it does without the pre-filter.
        let naive = client
            .prepare(
                "SELECT id FROM fences
                 WHERE ST_DWithin(center, ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography, radius_m)",
            )
            .await?;
        let naive_n = 20.min(reports.len());
        let t = Instant::now();
        for &(_, lat, lon) in &reports[..naive_n] {
            client.query(&naive, &[&lat, &lon]).await?;
        }
        let naive_rate = naive_n as f64 / t.elapsed().as_secs_f64();

        // Agreement on sample points.
        let mut mismatches = 0;
        let mut worst_edge: f64 = 0.0;
        let points = args.agree_points.min(reports.len());
        let mut mine = Vec::new();
        for &(_, lat, lon) in reports.iter().rev().take(points) {
            let theirs: HashSet<u32> = client
                .query(&query, &[&lat, &lon, &max_r])
                .await?
                .iter()
                .map(|r| r.get::<_, i32>(0) as u32)
                .collect();
            mine.clear();
            index.containing(lat, lon, &mut mine);
            let mine_set: HashSet<u32> = mine.iter().copied().collect();
            for &slot in mine_set.symmetric_difference(&theirs) {
                mismatches += 1;
                let (clat, clon, r) = circles[slot as usize];
                let edge = (haversine_m(clat, clon, lat, lon) - r).abs() / r;
                worst_edge = worst_edge.max(edge);
            }
        }
        drop(client);
        let _ = driver.await;
        Ok(PostgisOut {
            reports: n,
            per_s: n as f64 / secs,
            matched_per_report: matched as f64 / n.max(1) as f64,
            plan,
            naive: Some((naive_n, naive_rate)),
            agree_points: points,
            mismatches,
            worst_edge,
        })
    })
}

/// The plan's node types, outermost first ("Bitmap Heap Scan > Bitmap Index Scan").
fn explain_summary(rows: &[tokio_postgres::SimpleQueryMessage]) -> String {
    let nodes: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
            _ => None,
        })
        .filter_map(|line| {
            let l = line.trim_start().trim_start_matches("->").trim();
            let node = l.split("  (").next()?.trim();
            (!node.is_empty() && !l.starts_with("Filter") && !l.contains("Cond"))
                .then(|| node.to_string())
        })
        .collect();
    nodes.join(" > ")
}

// ---------------------------------------------------------------------------------------
// End to end

/// Geofence.Event callbacks received, each batch once (by its delivery id).
#[derive(Default)]
struct Received {
    deliveries: Mutex<HashSet<String>>,
    enters: AtomicU64,
    leaves: AtomicU64,
    duplicates: AtomicU64,
}

impl Received {
    fn events(&self) -> u64 {
        self.enters.load(Ordering::Relaxed) + self.leaves.load(Ordering::Relaxed)
    }
}

/// A callback receiver on 127.0.0.1 answering every request as JPush's callbacks expect;
/// its URL.
fn start_receiver(received: Arc<Received>) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/events", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let received = received.clone();
            std::thread::spawn(move || {
                let _ = serve_callbacks(stream, &received);
            });
        }
    });
    Ok(url)
}

fn serve_callbacks(stream: TcpStream, received: &Received) -> anyhow::Result<()> {
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let (mut length, mut delivery) = (0usize, String::new());
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("x-pigeon-delivery") {
                    delivery = v.trim().to_string();
                }
            }
        }
        let mut body = vec![0u8; length.min(64 << 20)];
        reader.read_exact(&mut body)?;
        let text = String::from_utf8_lossy(&body);
        let first = received
            .deliveries
            .lock()
            .map(|mut d| delivery.is_empty() || d.insert(delivery.clone()))
            .unwrap_or(true);
        if first {
            received.enters.fetch_add(
                text.matches(r#""Action":"Enter""#).count() as u64,
                Ordering::Relaxed,
            );
            received.leaves.fetch_add(
                text.matches(r#""Action":"Leave""#).count() as u64,
                Ordering::Relaxed,
            );
        } else {
            received.duplicates.fetch_add(1, Ordering::Relaxed);
        }
        let answer = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;
        out.write_all(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            )
            .as_bytes(),
        )?;
    }
}

/// `bytes` written to storage by a process so far (`/proc/<pid>/io`).
fn write_bytes(pid: u32) -> anyhow::Result<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("reading /proc/{pid}/io"))?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no write_bytes in /proc/<pid>/io")
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A geofence agent process, driven by lines on stdin, one JSON line back per command.
struct GeoAgent {
    guard: Guard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    count: usize,
}

impl GeoAgent {
    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn recv(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("geofence agent {} exited", self.guard.pid());
        }
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .with_context(|| format!("geofence agent said {line:?}"))?;
        if let Some(e) = v.get("error") {
            bail!("geofence agent {}: {e}", self.guard.pid());
        }
        Ok(v)
    }
}

/// The agents' answers to one phase, added up.
#[derive(Default)]
struct Phase {
    name: String,
    sent: u64,
    ok: u64,
    refused: u64,
    errors: u64,
    timeouts: u64,
    changed: u64,
    enter_reports: u64,
    enters: u64,
    leaves: u64,
    first_us: u64,
    last_us: u64,
    all: BTreeMap<u64, u64>,
    enter: BTreeMap<u64, u64>,
    server_cpu_s: f64,
    agents_cpu_s: f64,
    first_error: Option<String>,
}

impl Phase {
    fn add(&mut self, v: &serde_json::Value) {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        self.sent += n("sent");
        self.ok += n("ok");
        self.refused += n("refused");
        self.errors += n("errors");
        self.timeouts += n("timeouts");
        self.changed += n("changed");
        self.enter_reports += n("enter_reports");
        self.enters += n("enters");
        self.leaves += n("leaves");
        if n("first_us") > 0 && (self.first_us == 0 || n("first_us") < self.first_us) {
            self.first_us = n("first_us");
        }
        self.last_us = self.last_us.max(n("last_us"));
        for (key, into) in [("all", &mut self.all), ("enter", &mut self.enter)] {
            if let Some(m) = v[key].as_object() {
                for (bucket, count) in m {
                    if let (Ok(b), Some(c)) = (bucket.parse::<u64>(), count.as_u64()) {
                        *into.entry(b).or_default() += c;
                    }
                }
            }
        }
        if self.first_error.is_none() {
            self.first_error = v["first_error"].as_str().map(String::from);
        }
    }

    fn secs(&self) -> f64 {
        self.last_us.saturating_sub(self.first_us) as f64 / 1e6
    }

    fn per_s(&self) -> f64 {
        self.ok as f64 / self.secs().max(1e-9)
    }
}

/// The latency at percentile `p` of a histogram of 100 µs buckets, in ms.
fn pct_ms(h: &BTreeMap<u64, u64>, p: f64) -> Option<f64> {
    let total: u64 = h.values().sum();
    if total == 0 {
        return None;
    }
    let want = ((total as f64 * p).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (bucket, count) in h {
        seen += count;
        if seen >= want {
            return Some((*bucket as f64 + 1.0) / 10.0);
        }
    }
    None
}

fn e2e(args: &GeofenceArgs) -> anyhow::Result<()> {
    let area = Area::new(args.e2e_area_km);
    let mut rng = StdRng::seed_from_u64(args.seed ^ 0xe2e);
    let fences = circles(
        args.e2e_fences,
        &area,
        (args.e2e_min_radius_m, args.e2e_max_radius_m),
        &mut rng,
    );
    eprintln!(
        "== end to end: {} fences over {} km × {} km (radii {}–{} m), {} devices from {} agents",
        args.e2e_fences,
        args.e2e_area_km,
        args.e2e_area_km,
        args.e2e_min_radius_m,
        args.e2e_max_radius_m,
        args.e2e_devices,
        args.agents
    );
    let received = Arc::new(Received::default());
    let url = start_receiver(received.clone())?;
    let cap = (args.e2e_devices + 1_100).max(19_000).to_string();
    let server = PigeonServer::start(&[
        ("PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS", "true"),
        ("PIGEON_HEARTBEAT_S", "600"),
        ("PIGEON_MAX_CONNECTIONS", cap.as_str()),
    ])?;
    let pid = server.guard.pid();
    server.add_endpoint(&url, "Geofence.Event")?;
    let t = Instant::now();
    create_fences(&server, &fences)?;
    eprintln!(
        "   {} fences created through /v3/geofences in {:.1} s",
        fences.len(),
        t.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let fences_file = dir.path().join("fences.json");
    std::fs::write(&fences_file, serde_json::to_vec(&fences)?)?;

    let mut agents = spawn_agents(args, &server, &fences_file, &area)?;
    for a in agents.iter_mut() {
        let v = a.recv()?;
        if v["registered"].as_u64() != Some(a.count as u64) {
            bail!("agent registered {v} of {}", a.count);
        }
    }
    for a in agents.iter_mut() {
        a.send("connect")?;
    }
    for a in agents.iter_mut() {
        let v = a.recv()?;
        if v["connected"].as_u64() != Some(a.count as u64) {
            bail!("agent connected {v} of {}", a.count);
        }
    }
    eprintln!("   {} devices connected", args.e2e_devices);

    let mut phases = Vec::new();
    let full = format!(
        "moving {} m a report, ≤ {}/s per device",
        args.step_m, args.rate
    );
    let cmd = format!("move {} {} {}", args.move_secs, args.rate, args.step_m);
    phases.push(phase(&full, &cmd, pid, &mut agents)?);
    if args.light_secs > 0 {
        let name = format!(
            "moving {} m a report, {}/s per device",
            args.step_m, args.light_rate
        );
        let cmd = format!(
            "move {} {} {}",
            args.light_secs, args.light_rate, args.step_m
        );
        phases.push(phase(&name, &cmd, pid, &mut agents)?);
    }
    phases.push(phase(
        "to a standing place (half inside a fence)",
        "place",
        pid,
        &mut agents,
    )?);

    // Every event the reports fired reaches the receiver before the disk is watched.
    let predicted: u64 = phases.iter().map(|p| p.enters + p.leaves).sum();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.events() < predicted && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let events_in = received.events();

    let w0 = write_bytes(pid)?;
    std::thread::sleep(Duration::from_secs(args.idle_secs));
    let (w1, d1) = (write_bytes(pid)?, dir_bytes(&server.data));
    let idle_s = args.idle_secs.max(1) as f64;
    let per_device = args.still_reports.div_ceil(args.e2e_devices.max(1)).max(1);
    let still = phase(
        "standing still (changes nothing)",
        &format!("still {per_device} {}", args.rate),
        pid,
        &mut agents,
    )?;
    let (w2, d2) = (write_bytes(pid)?, dir_bytes(&server.data));
    let still_secs = still.secs();
    phases.push(still);
    for a in agents.iter_mut() {
        let _ = a.send("quit");
    }

    println!(
        "End to end: one `pigeon serve` (SQLite), {} fences over {} km × {} km (radii {}–{} m, \
         enter and leave, an endpoint for Geofence.Event), {} devices from {} agent processes; \
         each device waits for a report's ok before the next.",
        args.e2e_fences,
        args.e2e_area_km,
        args.e2e_area_km,
        args.e2e_min_radius_m,
        args.e2e_max_radius_m,
        args.e2e_devices,
        args.agents
    );
    let mut table = Table::new(&[
        "phase",
        "reports ok",
        "reports/s",
        "refused 2002",
        "errors",
        "reports that changed standing",
        "enter reports",
        "events",
        "p50 ms",
        "p99 ms",
        "enter→ok p99 ms",
        "server CPU cores",
        "agents CPU cores",
    ]);
    let ms = |v: Option<f64>| v.map(|m| format!("{m:.1}")).unwrap_or_default();
    for p in &phases {
        let secs = p.secs().max(1e-9);
        table.row(vec![
            p.name.clone(),
            p.ok.to_string(),
            format!("{:.0}", p.per_s()),
            p.refused.to_string(),
            (p.errors + p.timeouts).to_string(),
            p.changed.to_string(),
            p.enter_reports.to_string(),
            (p.enters + p.leaves).to_string(),
            ms(pct_ms(&p.all, 0.5)),
            ms(pct_ms(&p.all, 0.99)),
            ms(pct_ms(&p.enter, 0.99)),
            format!("{:.2}", p.server_cpu_s / secs),
            format!("{:.2}", p.agents_cpu_s / secs),
        ]);
    }
    table.print();
    for p in &phases {
        if let Some(e) = &p.first_error {
            println!("First error in {:?}: {e}", p.name);
        }
    }
    println!(
        "Geofence.Event: {predicted} predicted by the agents, {events_in} received ({} enter, {} \
         leave; {} batch(es) received twice).",
        received.enters.load(Ordering::Relaxed),
        received.leaves.load(Ordering::Relaxed),
        received.duplicates.load(Ordering::Relaxed)
    );
    println!();
    let still = phases.last().map(|p| (p.ok, p.changed)).unwrap_or((0, 0));
    let idle_rate = w1.saturating_sub(w0) as f64 / idle_s;
    let per_million = |bytes: u64| bytes as f64 * 1e6 / still.0.max(1) as f64;
    let mut disk = Table::new(&[
        "no-change reports",
        "s",
        "standings changed",
        "server write_bytes",
        "per 1M reports",
        "data dir growth",
        "per 1M reports",
        "write_bytes/s in the idle seconds before",
    ]);
    disk.row(vec![
        still.0.to_string(),
        format!("{still_secs:.1}"),
        still.1.to_string(),
        (w2.saturating_sub(w1)).to_string(),
        format!("{:.0}", per_million(w2.saturating_sub(w1))),
        (d2 as i64 - d1 as i64).to_string(),
        format!(
            "{:.0}",
            (d2 as f64 - d1 as f64) * 1e6 / still.0.max(1) as f64
        ),
        format!("{:.0}", idle_rate),
    ]);
    disk.print();
    if events_in < predicted {
        bail!("the receiver got {events_in} Geofence.Event of the {predicted} predicted");
    }
    let bad: u64 = phases.iter().map(|p| p.errors + p.timeouts).sum();
    if bad > 0 {
        bail!("{bad} report(s) failed (errors other than 2002, or no answer)");
    }
    Ok(())
}

/// One phase: the command to every agent, their answers added up, with the CPU the server
/// and the agents used meanwhile.
fn phase(name: &str, cmd: &str, pid: u32, agents: &mut [GeoAgent]) -> anyhow::Result<Phase> {
    eprintln!("   phase: {name}");
    let agents_cpu =
        |agents: &[GeoAgent]| -> u64 { agents.iter().map(|a| cpu_ns(a.guard.pid())).sum() };
    let (s0, a0) = (cpu_ns(pid), agents_cpu(agents));
    for a in agents.iter_mut() {
        a.send(cmd)?;
    }
    let mut p = Phase {
        name: name.to_string(),
        ..Phase::default()
    };
    for a in agents.iter_mut() {
        p.add(&a.recv()?);
    }
    p.server_cpu_s = cpu_ns(pid).saturating_sub(s0) as f64 / 1e9;
    p.agents_cpu_s = agents_cpu(agents).saturating_sub(a0) as f64 / 1e9;
    eprintln!(
        "     {} ok in {:.1} s = {:.0}/s, {} refused, {} errors, {} timeouts, enter p99 {:?} ms",
        p.ok,
        p.secs(),
        p.per_s(),
        p.refused,
        p.errors,
        p.timeouts,
        pct_ms(&p.enter, 0.99)
    );
    Ok(p)
}

/// Creates the fences through `POST /v3/geofences`, enter and leave, watching every device.
fn create_fences(server: &PigeonServer, fences: &[(f64, f64, f64)]) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::new();
    let url = format!("{}/v3/geofences", server.base);
    rt.block_on(async {
        let results: Vec<anyhow::Result<()>> = stream::iter(fences.iter().enumerate())
            .map(|(i, &(lat, lon, radius_m))| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let body = json!({"name": format!("bench-{i}"), "lat": lat, "lon": lon,
                                      "radius_m": radius_m, "events": ["enter", "leave"]});
                    let r = http
                        .post(&url)
                        .basic_auth(&server.app_key, Some(&server.master_secret))
                        .json(&body)
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        bail!("POST /v3/geofences: {} {}", r.status(), r.text().await?);
                    }
                    Ok(())
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<()>>()
    })
}

fn spawn_agents(
    args: &GeofenceArgs,
    server: &PigeonServer,
    fences_file: &Path,
    area: &Area,
) -> anyhow::Result<Vec<GeoAgent>> {
    let exe = std::env::current_exe()?;
    split(args.e2e_devices, args.agents.max(1))
        .into_iter()
        .enumerate()
        .filter(|(_, count)| *count > 0)
        .map(|(i, count)| {
            let mut child = Command::new(&exe)
                .args(["bench", "geofence-agent", "--server", &server.base])
                .args(["--app-key", &server.app_key])
                .args(["--count", &count.to_string()])
                .args(["--source-ip", &format!("127.0.0.{}", 10 + i)])
                .args(["--id", &i.to_string()])
                .arg("--fences")
                .arg(fences_file)
                .args(["--area", &area.text()])
                .args(["--seed", &args.seed.to_string()])
                .env("TOKIO_WORKER_THREADS", "1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .context("spawning a geofence agent")?;
            let stdin = child.stdin.take().context("agent stdin")?;
            let stdout = BufReader::new(child.stdout.take().context("agent stdout")?);
            Ok(GeoAgent {
                guard: Guard(child),
                stdin,
                stdout,
                count,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The agent

#[derive(Args, Debug, Clone)]
pub struct GeofenceAgentArgs {
    /// Pigeon base URL.
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub app_key: String,
    #[arg(long)]
    pub count: usize,
    #[arg(long, default_value = "127.0.0.1")]
    pub source_ip: IpAddr,
    /// Distinguishes this agent's devices from other agents'.
    #[arg(long, default_value_t = 0)]
    pub id: usize,
    /// The fences as a JSON array of [lat, lon, radius_m].
    #[arg(long)]
    pub fences: PathBuf,
    /// The square devices move in: lat,lon,half_lat,half_lon (degrees).
    #[arg(long)]
    pub area: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// One device of an agent.
struct Dev {
    ws: WsClient,
    rng: StdRng,
    pos: (f64, f64),
    heading: f64,
    /// Where it stands still: inside a fence (even devices) or outside all (odd ones).
    still: (f64, f64),
    /// The fences it is inside, as this agent judges them (sorted slots).
    inside: Vec<u32>,
    seq: u64,
}

/// What one device's reports did in one command.
#[derive(Default)]
struct DevStats {
    sent: u64,
    ok: u64,
    refused: u64,
    errors: u64,
    timeouts: u64,
    changed: u64,
    enter_reports: u64,
    enters: u64,
    leaves: u64,
    first_us: u64,
    last_us: u64,
    all: Vec<u32>,
    enter: Vec<u32>,
    first_error: Option<String>,
}

/// What a command asks of each device.
#[derive(Clone, Copy)]
enum Walk {
    /// Move `step_m` a report for `secs`, at most `rate` reports a second.
    Move { secs: f64, rate: f64, step_m: f64 },
    /// One report at the standing place.
    Place,
    /// `n` reports at the standing place, at most `rate` a second.
    Still { n: usize, rate: f64 },
}

/// Longest a report may wait for its answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

pub async fn agent(args: GeofenceAgentArgs) -> anyhow::Result<()> {
    let fences: Vec<(f64, f64, f64)> = serde_json::from_slice(&std::fs::read(&args.fences)?)?;
    let area = Area::parse(&args.area)?;
    let index = Arc::new(FenceIndex::bulk(&fences));
    let creds = register_all(&args).await?;
    say(json!({"registered": creds.len()}));
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(tokio::io::stdin()));
    let mut devices: Vec<Dev> = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        let walk = match words.as_slice() {
            ["connect"] => {
                devices = connect_all(&args, &creds, &fences, &index, &area).await?;
                say(json!({"connected": devices.len()}));
                continue;
            }
            ["move", secs, rate, step] => Walk::Move {
                secs: secs.parse()?,
                rate: rate.parse()?,
                step_m: step.parse()?,
            },
            ["place"] => Walk::Place,
            ["still", n, rate] => Walk::Still {
                n: n.parse()?,
                rate: rate.parse()?,
            },
            ["quit"] | [] => break,
            _ => {
                say(json!({"error": format!("unknown command {line:?}")}));
                continue;
            }
        };
        let tasks: Vec<_> = devices
            .drain(..)
            .map(|d| {
                let (index, area) = (index.clone(), area);
                tokio::spawn(async move { walk_device(d, walk, &index, &area).await })
            })
            .collect();
        let mut total = DevStats::default();
        let (mut all, mut enter) = (BTreeMap::<u64, u64>::new(), BTreeMap::<u64, u64>::new());
        for t in tasks {
            let (d, s) = t.await?;
            if let Some(d) = d {
                devices.push(d);
            }
            total.sent += s.sent;
            total.ok += s.ok;
            total.refused += s.refused;
            total.errors += s.errors;
            total.timeouts += s.timeouts;
            total.changed += s.changed;
            total.enter_reports += s.enter_reports;
            total.enters += s.enters;
            total.leaves += s.leaves;
            if s.first_us > 0 && (total.first_us == 0 || s.first_us < total.first_us) {
                total.first_us = s.first_us;
            }
            total.last_us = total.last_us.max(s.last_us);
            for l in s.all {
                *all.entry(u64::from(l) / 100).or_default() += 1;
            }
            for l in s.enter {
                *enter.entry(u64::from(l) / 100).or_default() += 1;
            }
            if total.first_error.is_none() {
                total.first_error = s.first_error;
            }
        }
        say(json!({
            "sent": total.sent, "ok": total.ok, "refused": total.refused, "errors": total.errors,
            "timeouts": total.timeouts, "changed": total.changed,
            "enter_reports": total.enter_reports, "enters": total.enters, "leaves": total.leaves,
            "first_us": total.first_us, "last_us": total.last_us,
            "all": all, "enter": enter, "first_error": total.first_error,
            "devices": devices.len(),
        }));
    }
    Ok(())
}

fn say(v: serde_json::Value) {
    println!("{v}");
}

async fn register_all(args: &GeofenceAgentArgs) -> anyhow::Result<Vec<pigeon_device::Credentials>> {
    let http = reqwest::Client::builder()
        .local_address(args.source_ip)
        .build()?;
    let results: Vec<anyhow::Result<pigeon_device::Credentials>> = stream::iter(0..args.count)
        .map(|i| {
            let http = http.clone();
            let req = pigeon_device::RegisterRequest {
                app_key: args.app_key.clone(),
                platform: Some("android".into()),
                install_id: Some(format!("bench-geofence-{:04}-{i:08}", args.id)),
                ..Default::default()
            };
            let server = args.server.clone();
            async move { Ok(pigeon_device::register(&http, &server, &req).await?) }
        })
        .buffered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn connect_all(
    args: &GeofenceAgentArgs,
    creds: &[pigeon_device::Credentials],
    fences: &[(f64, f64, f64)],
    index: &FenceIndex,
    area: &Area,
) -> anyhow::Result<Vec<Dev>> {
    let host = args
        .server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let opened: Vec<anyhow::Result<WsClient>> = stream::iter(creds)
        .map(|c| {
            let host = host.clone();
            async move { open_device(args.source_ip, &host, c).await }
        })
        .buffered(128)
        .collect()
        .await;
    let mut out = Vec::with_capacity(opened.len());
    let mut around = Vec::new();
    for (i, ws) in opened.into_iter().enumerate() {
        let mut rng = StdRng::seed_from_u64(
            args.seed ^ ((args.id as u64) << 40) ^ (i as u64).wrapping_mul(0x9e37_79b9),
        );
        let still = if i % 2 == 0 && !fences.is_empty() {
            let (lat, lon, _) = fences[rng.gen_range(0..fences.len())];
            (lat, lon)
        } else {
            // A place in no fence; beyond the square if none is found in it.
            let mut place = (area.lat + 3.0 * area.half_lat, area.lon);
            for _ in 0..200 {
                let p = area.point(&mut rng);
                around.clear();
                index.containing(p.0, p.1, &mut around);
                if around.is_empty() {
                    place = p;
                    break;
                }
            }
            place
        };
        let pos = area.point(&mut rng);
        out.push(Dev {
            ws: ws?,
            heading: rng.gen_range(0.0..std::f64::consts::TAU),
            rng,
            pos,
            still,
            inside: Vec::new(),
            seq: 0,
        });
    }
    Ok(out)
}

async fn open_device(
    source: IpAddr,
    host: &str,
    c: &pigeon_device::Credentials,
) -> anyhow::Result<WsClient> {
    let addr: std::net::SocketAddr = host.parse()?;
    let s = connect_from(source, addr).await?;
    let mut ws = WsClient::handshake(s, host, "/v1/connect").await?;
    let hello = json!({"op": "hello", "registration_id": c.registration_id, "device_secret": c.device_secret});
    ws.send_text(&hello.to_string()).await?;
    let welcome = ws.next_text().await?;
    let welcome = std::str::from_utf8(&welcome)?;
    if json_field(welcome, "op") != Some("welcome") {
        bail!("no welcome: {welcome}");
    }
    Ok(ws)
}

/// Moves `pos` `step_m` along `heading`, turning a little at random and bouncing off the
/// square's sides.
fn step(d: &mut Dev, step_m: f64, area: &Area) {
    d.heading += d.rng.gen_range(-0.2..0.2);
    let (lat, lon) = d.pos;
    let mut nlat = lat + step_m * d.heading.cos() / M_PER_DEG;
    let mut nlon = lon + step_m * d.heading.sin() / (M_PER_DEG * lat.to_radians().cos());
    if (nlat - area.lat).abs() > area.half_lat {
        d.heading = std::f64::consts::PI - d.heading;
        nlat = nlat.clamp(area.lat - area.half_lat, area.lat + area.half_lat);
    }
    if (nlon - area.lon).abs() > area.half_lon {
        d.heading = -d.heading;
        nlon = nlon.clamp(area.lon - area.half_lon, area.lon + area.half_lon);
    }
    d.pos = (nlat, nlon);
}

/// Runs one command for one device: its reports, each sent when the previous one was
/// answered and no sooner than the rate allows. `None` for a device whose connection broke.
async fn walk_device(
    mut d: Dev,
    walk: Walk,
    index: &FenceIndex,
    area: &Area,
) -> (Option<Dev>, DevStats) {
    let mut s = DevStats::default();
    let (limit, rate) = match walk {
        Walk::Move { rate, .. } => (usize::MAX, rate),
        Walk::Place => (1, 1.0),
        Walk::Still { n, rate } => (n, rate),
    };
    let every = Duration::from_secs_f64(1.0 / rate.clamp(0.001, 20.0));
    let deadline = match walk {
        Walk::Move { secs, .. } => tokio::time::Instant::now() + Duration::from_secs_f64(secs),
        _ => tokio::time::Instant::now() + Duration::from_secs(3600),
    };
    // Devices start spread over one period, not all at once.
    let first = every.mul_f64(d.rng.gen_range(0.0..1.0));
    tokio::time::sleep(first).await;
    let mut around = Vec::new();
    let mut sent = 0;
    while sent < limit && tokio::time::Instant::now() < deadline {
        let slot_start = tokio::time::Instant::now();
        let pos = match walk {
            Walk::Move { step_m, .. } => {
                step(&mut d, step_m, area);
                d.pos
            }
            Walk::Place | Walk::Still { .. } => d.still,
        };
        around.clear();
        index.containing(pos.0, pos.1, &mut around);
        around.sort_unstable();
        let enters = around
            .iter()
            .filter(|s| d.inside.binary_search(s).is_err())
            .count() as u64;
        let leaves = d
            .inside
            .iter()
            .filter(|s| around.binary_search(s).is_err())
            .count() as u64;
        d.seq += 1;
        let frame = format!(
            r#"{{"op":"location","lat":{},"lon":{},"seq":{}}}"#,
            pos.0, pos.1, d.seq
        );
        let t0 = now_us();
        if s.first_us == 0 {
            s.first_us = t0;
        }
        if d.ws.send_text(&frame).await.is_err() {
            s.errors += 1;
            return (None, s);
        }
        sent += 1;
        s.sent += 1;
        match tokio::time::timeout(ANSWER_LIMIT, answer(&mut d.ws, d.seq)).await {
            Err(_) => {
                s.timeouts += 1;
                return (None, s);
            }
            Ok(Err(e)) => {
                s.errors += 1;
                s.first_error.get_or_insert(e.to_string());
                return (None, s);
            }
            Ok(Ok(Answer::Ok)) => {
                let now = now_us();
                let us = now.saturating_sub(t0).min(u64::from(u32::MAX)) as u32;
                s.last_us = now;
                s.ok += 1;
                s.all.push(us);
                if enters + leaves > 0 {
                    s.changed += 1;
                }
                if enters > 0 {
                    s.enter_reports += 1;
                    s.enter.push(us);
                }
                s.enters += enters;
                s.leaves += leaves;
                std::mem::swap(&mut d.inside, &mut around);
            }
            Ok(Ok(Answer::Refused)) => s.refused += 1,
            Ok(Ok(Answer::Error(e))) => {
                s.errors += 1;
                s.first_error.get_or_insert(e);
            }
        }
        tokio::time::sleep_until(slot_start + every).await;
    }
    (Some(d), s)
}

enum Answer {
    Ok,
    /// Over the device rate (2002).
    Refused,
    Error(String),
}

/// Reads frames until the answer to `seq`, acking any push on the way.
async fn answer(ws: &mut WsClient, seq: u64) -> anyhow::Result<Answer> {
    let want = seq.to_string();
    loop {
        let frame = ws.next_text().await?;
        let text = std::str::from_utf8(&frame)?;
        match json_field(text, "op") {
            Some("ok") if json_field(text, "seq") == Some(&want) => return Ok(Answer::Ok),
            Some("error") if json_field(text, "seq") == Some(&want) => {
                return Ok(match json_field(text, "code") {
                    Some("2002") => Answer::Refused,
                    _ => Answer::Error(text.to_string()),
                });
            }
            Some("push") => {
                if let Some(id) = json_field(text, "msg_id") {
                    ws.send_text(&format!(r#"{{"op":"ack","msg_ids":["{id}"]}}"#))
                        .await?;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = BTreeMap::new();
        h.insert(0, 98); // < 0.1 ms
        h.insert(50, 2); // 5.0–5.1 ms
        assert_eq!(pct_ms(&h, 0.5), Some(0.1));
        assert_eq!(pct_ms(&h, 0.99), Some(5.1));
        assert_eq!(pct_ms(&BTreeMap::new(), 0.99), None);
    }

    #[test]
    fn judging_agrees_with_a_scan_of_every_fence() {
        let area = Area::new(5.0);
        let mut rng = StdRng::seed_from_u64(3);
        let circles = circles(500, &area, (50.0, 800.0), &mut rng);
        let ids: Vec<String> = (0..circles.len()).map(|i| format!("gf{i:016x}")).collect();
        let index = FenceIndex::bulk(&circles);
        let f = Fences {
            index: &index,
            ids: &ids,
            rules: Rules {
                events: FENCE_ENTER | FENCE_LEAVE,
                stay_ms: None,
                repeat: true,
                cooldown_ms: 0,
                start_ms: None,
                end_ms: None,
            },
            app_key: "app",
        };
        let mut judging = Judging {
            f: &f,
            devices: FastMap::default(),
            around: Vec::new(),
            judged: Vec::new(),
        };
        let mut inside: FastMap<u32, std::collections::BTreeSet<usize>> = FastMap::default();
        let mut changes = 0;
        for i in 0..3000u64 {
            let d = rng.gen_range(0..20u32);
            let (lat, lon) = area.point(&mut rng);
            let now: std::collections::BTreeSet<usize> = circles
                .iter()
                .enumerate()
                .filter(|(_, c)| haversine_m(c.0, c.1, lat, lon) <= c.2)
                .map(|(k, _)| k)
                .collect();
            let was = inside.insert(d, now.clone()).unwrap_or_default();
            let changed = was.symmetric_difference(&now).count();
            let (matched, c, fires) = judging.report(d, lat, lon, i);
            assert_eq!(
                (matched, c, fires),
                (now.len(), changed, changed),
                "report {i}"
            );
            changes += c;
        }
        assert!(changes > 1000, "{changes}");
    }
}
