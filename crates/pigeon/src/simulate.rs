//! `pigeon device simulate`: many devices that register, connect, ack and print pushes,
//! and, with `--walk`, walk along a path reporting where they are (geofences.md §2).

use clap::Args;
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use pigeon_device::{
    reconnect_after, register, Credentials, DeviceConnection, DeviceError, Frame, Reconnect,
    RegisterRequest,
};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[arg(long)]
    app_key: String,
    /// How many devices.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Platform of every device: android, ios, hmos, quickapp, web.
    #[arg(long, default_value = "android")]
    platform: String,
    /// Comma-separated tags every device carries.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Device i gets the alias <prefix><i>.
    #[arg(long)]
    alias_prefix: Option<String>,
    /// Exit after this many pushes were received in all.
    #[arg(long)]
    exit_after: Option<u64>,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Walk every device along this path and report its position: waypoints
    /// "lat,lon;lat,lon;..." in WGS-84 degrees. The path is a loop: after the last
    /// waypoint a device walks straight back to the first and goes round again, until the
    /// simulator stops. Each device starts at a random point of the loop and keeps its own
    /// random offset of up to --spread-m from the path. Reports are
    /// {"op":"location","lat":..,"lon":..,"seq":N}; the server's `error` answers are printed
    /// on stderr. One waypoint: the devices stand still there (each at its offset).
    #[arg(long, value_parser = parse_walk)]
    walk: Option<Walk>,
    /// Walking speed along the path, metres a second.
    #[arg(long, default_value_t = 1.4)]
    speed_mps: f64,
    /// Time between two position reports of a device, ms: at least 50 (the device protocol
    /// allows 20 frames a second on average, acks and pings aside).
    #[arg(long, default_value_t = 1000)]
    report_every_ms: u64,
    /// Largest distance, metres, of a device's own offset from the path.
    #[arg(long, default_value_t = 20.0)]
    spread_m: f64,
}

/// Fewest ms between two reports: the protocol's 20 frames a second (device-protocol.md §4).
const MIN_REPORT_EVERY_MS: u64 = 50;
/// Metres in a degree of latitude on the contract's sphere (radius 6,371,008.8 m).
const M_PER_DEG: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;

/// A closed path of waypoints (lat, lon) and the length of each leg, metres.
#[derive(Clone, Debug)]
pub struct Walk {
    points: Vec<(f64, f64)>,
    legs: Vec<f64>,
}

fn parse_walk(text: &str) -> Result<Walk, String> {
    let mut points = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (lat, lon) = part
            .split_once(',')
            .ok_or_else(|| format!("waypoint {part:?} is not \"lat,lon\""))?;
        let num = |v: &str, what: &str, max: f64| -> Result<f64, String> {
            let x: f64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{what} {v:?} is not a number"))?;
            if !x.is_finite() || x.abs() > max {
                return Err(format!("{what} {x} is out of ±{max}"));
            }
            Ok(x)
        };
        points.push((num(lat, "lat", 90.0)?, num(lon, "lon", 180.0)?));
    }
    if points.is_empty() {
        return Err("--walk needs at least one waypoint \"lat,lon\"".into());
    }
    let legs = (0..points.len())
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % points.len()]);
            pigeon_engine::geofences::haversine_m(a.0, a.1, b.0, b.1)
        })
        .collect();
    Ok(Walk { points, legs })
}

impl Walk {
    fn length_m(&self) -> f64 {
        self.legs.iter().sum()
    }

    /// Where a walker is `d` metres along the loop (straight legs in degrees: fine for the
    /// short legs of a city walk).
    fn at(&self, d: f64) -> (f64, f64) {
        let total = self.length_m();
        if total <= 0.0 {
            return self.points[0];
        }
        let mut d = d.rem_euclid(total);
        for (i, &leg) in self.legs.iter().enumerate() {
            if d <= leg || i + 1 == self.legs.len() {
                let f = if leg > 0.0 { (d / leg).min(1.0) } else { 0.0 };
                let (a, b) = (self.points[i], self.points[(i + 1) % self.points.len()]);
                let mut dlon = b.1 - a.1;
                // The short way across the antimeridian.
                if dlon > 180.0 {
                    dlon -= 360.0;
                } else if dlon < -180.0 {
                    dlon += 360.0;
                }
                return (a.0 + (b.0 - a.0) * f, a.1 + dlon * f);
            }
            d -= leg;
        }
        self.points[0]
    }
}

/// One device's walk: where on the loop it started, its offset from the path, the seq of
/// its next report.
struct Walker {
    walk: Arc<Walk>,
    speed_mps: f64,
    every: std::time::Duration,
    start_m: f64,
    /// Offset north and east, metres.
    offset: (f64, f64),
    started: std::time::Instant,
    seq: u64,
}

impl Walker {
    fn new(walk: Arc<Walk>, args: &SimulateArgs, index: u32) -> Walker {
        let mut rng = SplitMix(u64::from(index) ^ 0x5eed_0f9e_0fe4_ce00);
        let start_m = rng.unit() * walk.length_m();
        // Uniform over the disc of radius spread_m.
        let (r, a) = (
            args.spread_m.max(0.0) * rng.unit().sqrt(),
            rng.unit() * std::f64::consts::TAU,
        );
        Walker {
            walk,
            speed_mps: args.speed_mps,
            every: std::time::Duration::from_millis(args.report_every_ms),
            start_m,
            offset: (r * a.cos(), r * a.sin()),
            started: std::time::Instant::now(),
            seq: 0,
        }
    }

    /// The next report: the device's position now, with a new seq.
    fn report(&mut self) -> serde_json::Value {
        let walked = self.speed_mps * self.started.elapsed().as_secs_f64();
        let (lat, lon) = self.walk.at(self.start_m + walked);
        let lat = (lat + self.offset.0 / M_PER_DEG).clamp(-90.0, 90.0);
        let cos = lat.to_radians().cos().max(1e-6);
        let lon = (lon + self.offset.1 / (M_PER_DEG * cos) + 540.0).rem_euclid(360.0) - 180.0;
        self.seq += 1;
        serde_json::json!({"op": "location", "lat": lat, "lon": lon, "seq": self.seq})
    }
}

/// A small deterministic generator (splitmix64): devices' phases and offsets are the same
/// from one run to the next.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    if args.walk.is_some() {
        if args.report_every_ms < MIN_REPORT_EVERY_MS {
            anyhow::bail!(
                "--report-every-ms must be at least {MIN_REPORT_EVERY_MS}: the device protocol \
                 allows 20 frames a second"
            );
        }
        if !args.speed_mps.is_finite() || args.speed_mps < 0.0 {
            anyhow::bail!("--speed-mps must be a number ≥ 0");
        }
        if !args.spread_m.is_finite() {
            anyhow::bail!("--spread-m must be a number");
        }
    }
    let http = reqwest::Client::new();
    let args = Arc::new(args);
    let bar = ProgressBar::new(args.count as u64).with_style(
        ProgressStyle::with_template("connecting {bar:40} {pos}/{len} devices ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let connected: Vec<anyhow::Result<(u32, Credentials, DeviceConnection)>> =
        stream::iter(0..args.count)
            .map(|i| {
                let (http, args, bar) = (http.clone(), args.clone(), bar.clone());
                async move {
                    let req = RegisterRequest {
                        app_key: args.app_key.clone(),
                        platform: Some(args.platform.clone()),
                        // Stable per device index, so a rerun reuses the same devices.
                        install_id: Some(format!(
                            "simulated-{}-{i:08}",
                            args.alias_prefix.as_deref().unwrap_or("device")
                        )),
                        alias: args.alias_prefix.as_ref().map(|p| format!("{p}{i}")),
                        tags: (!args.tags.is_empty()).then(|| args.tags.clone()),
                        sdk: Some("pigeon-simulate".into()),
                        ..Default::default()
                    };
                    let creds = register(&http, &args.server, &req).await?;
                    let conn = DeviceConnection::connect(&args.server, &creds).await?;
                    bar.inc(1);
                    Ok((i, creds, conn))
                }
            })
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
    bar.finish_and_clear();
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let mut ok = 0;
    for result in connected {
        let (i, creds, conn) = result?;
        ok += 1;
        let walker = args
            .walk
            .as_ref()
            .map(|w| Walker::new(Arc::new(w.clone()), &args, i));
        tokio::spawn(device_loop(
            i,
            args.server.clone(),
            creds,
            conn,
            walker,
            tx.clone(),
        ));
    }
    drop(tx);
    let walking = match &args.walk {
        Some(w) => format!(
            "; walking a {:.0} m loop at {} m/s, a report every {} ms",
            w.length_m(),
            args.speed_mps,
            args.report_every_ms
        ),
        None => String::new(),
    };
    eprintln!(
        "{ok} devices connected to {}{walking}; waiting for pushes (Ctrl-C to stop; devices \
         reconnect when their connection ends, as the protocol's close-code table says)",
        args.server
    );
    let mut printed = 0u64;
    while let Some(line) = rx.recv().await {
        println!("{line}");
        printed += 1;
        if args.exit_after.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(())
}

/// One simulated device: prints and acks what it gets, and when its connection ends
/// reconnects as the protocol's close-code table says (§6), until the simulator exits.
async fn device_loop(
    index: u32,
    server: String,
    creds: Credentials,
    mut conn: DeviceConnection,
    mut walker: Option<Walker>,
    out: mpsc::Sender<String>,
) {
    loop {
        let ended = match serve_connection(index, &creds, &mut conn, walker.as_mut(), &out).await {
            Some(e) => e,
            None => return, // the simulator is done
        };
        eprintln!("device {index} ({}): {ended}", creds.registration_id);
        let heartbeat_s = conn.welcome.heartbeat_s;
        let mut code = ended.close_code();
        let mut failures = 0;
        conn = loop {
            match reconnect_after(code, heartbeat_s, failures) {
                Reconnect::Never => {
                    eprintln!("device {index}: not reconnecting after close code {code}");
                    return;
                }
                Reconnect::After(delay) => tokio::time::sleep(delay).await,
            }
            match DeviceConnection::connect(&server, &creds).await {
                Ok(c) => {
                    eprintln!("device {index} ({}): reconnected", creds.registration_id);
                    break c;
                }
                Err(e) => {
                    code = e.close_code();
                    failures += 1;
                }
            }
        };
    }
}

/// Serves one connection until it ends (the error it ended with), or until nobody reads
/// the output any more (`None`). A walking device reports its position on its own clock.
async fn serve_connection(
    index: u32,
    creds: &Credentials,
    conn: &mut DeviceConnection,
    mut walker: Option<&mut Walker>,
    out: &mpsc::Sender<String>,
) -> Option<DeviceError> {
    let mut keepalive = tokio::time::interval(std::time::Duration::from_secs(
        (conn.welcome.heartbeat_s / 2).max(1),
    ));
    keepalive.tick().await;
    // Reports at a fixed pace, never faster after a stall (the protocol's rate); devices
    // start spread over one period rather than all at once.
    let every = walker
        .as_ref()
        .map_or(std::time::Duration::from_secs(3600), |w| w.every);
    let first = every.mul_f64(SplitMix(u64::from(index)).unit());
    let mut reports = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
    reports.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let frame = tokio::select! {
            f = conn.next_frame() => f,
            _ = keepalive.tick() => {
                if let Err(e) = conn.send(serde_json::json!({"op": "ping"})).await {
                    return Some(e);
                }
                continue;
            }
            _ = reports.tick(), if walker.is_some() => {
                if let Some(w) = walker.as_deref_mut() {
                    if let Err(e) = conn.send(w.report()).await {
                        return Some(e);
                    }
                }
                continue;
            }
        };
        match frame {
            Ok(Frame::Push(p)) => {
                if let Err(e) = conn.ack(&[&p.msg_id]).await {
                    return Some(e);
                }
                let line = serde_json::json!({"device": index, "registration_id": creds.registration_id,
                    "msg_id": p.msg_id, "notification": p.notification, "message": p.message});
                if out.send(line.to_string()).await.is_err() {
                    return None;
                }
            }
            Ok(Frame::Other(v)) => {
                if v.get("op").and_then(serde_json::Value::as_str) == Some("error") {
                    eprintln!("device {index} ({}): {v}", creds.registration_id);
                }
            }
            Err(e) => return Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_loops_back_to_its_first_waypoint() {
        let w = parse_walk("31.0,121.0; 31.0,121.01 ;").expect("a walk");
        let leg = w.legs[0];
        assert!((leg - 953.1).abs() < 1.0, "{leg}");
        assert_eq!(w.at(0.0), (31.0, 121.0));
        let (lat, lon) = w.at(leg / 2.0);
        assert!((lat - 31.0).abs() < 1e-9 && (lon - 121.005).abs() < 1e-9);
        // Back along the closing leg, then round again.
        let (_, lon) = w.at(leg * 1.5);
        assert!((lon - 121.005).abs() < 1e-9, "{lon}");
        assert_eq!(w.at(2.0 * leg), (31.0, 121.0));
    }

    #[test]
    fn bad_walks_are_refused() {
        assert!(parse_walk("").is_err());
        assert!(parse_walk("91,0").is_err());
        assert!(parse_walk("1;2").is_err());
        assert!(parse_walk("x,1").is_err());
        let still = parse_walk("10,20").expect("one waypoint");
        assert_eq!((still.length_m(), still.at(123.0)), (0.0, (10.0, 20.0)));
    }
}
