//! `pigeon bench push-api`: single-device pushes over keep-alive connections, each durably
//! accepted before its answer and delivered to an online device, through each dialect asked
//! for (JPush's `POST /v3/push`, Getui RestAPI V2's `push/single/cid`, the Getui legacy
//! `pushMessageToSingleAction`) on the same server and devices. Per dialect: first as fast as
//! the server answers, then at fixed rates with the API-to-device latency measured at the
//! devices; all of that in rounds, each phase's figures the medians over them.

use crate::httpload::Dialect;
use crate::procs::{cpu_ns, rss_kib, run_loaders, Agent, LoadRun, PigeonServer};
use crate::table::{median, Table};
use anyhow::bail;
use base64::Engine as _;
use clap::Args;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct PushApiArgs {
    /// Online devices the pushes go to.
    #[arg(long, default_value_t = 1000)]
    pub devices: usize,
    /// Load-generating processes.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Keep-alive connections per load process.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// Rounds; each runs every phase once, in order, and a phase's figures are its medians
    /// over the rounds (beside the spread of its throughput and p99).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub rounds: u64,
    /// Fixed rates to measure latency at, pushes/s.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub rates: Vec<u64>,
    /// `full` (default, survives power loss) or `normal` SQLite durability.
    #[arg(long, default_value = "full")]
    pub sqlite_synchronous: String,
    /// The front doors to push through, one after the other on the same server.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "jpush")]
    pub dialect: Vec<Dialect>,
}

/// A RestAPI V2 token and a legacy protocol authToken for the app (each only if its dialect
/// is run), signed in as the Getui SDKs do (sha256 and MD5 of app key, time and master
/// secret).
fn getui_tokens(server: &PigeonServer, dialects: &[Dialect]) -> anyhow::Result<(String, String)> {
    use md5::Md5;
    use sha2::{Digest, Sha256};
    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
    let ts = (crate::procs::now_us() / 1000).to_string();
    let (key, secret) = (&server.app_key, &server.master_secret);
    let material = format!("{key}{ts}{secret}");
    let v2_sign = hex(&Sha256::digest(material.as_bytes()));
    let legacy_sign = hex(&Md5::digest(material.as_bytes()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut tokens = (String::new(), String::new());
        if dialects.contains(&Dialect::GetuiV2) {
            let v2: serde_json::Value = http
                .post(format!("{}/v2/{key}/auth", server.base))
                .json(&serde_json::json!({"sign": v2_sign, "timestamp": ts, "appkey": key}))
                .send()
                .await?
                .json()
                .await?;
            let Some(token) = v2["data"]["token"].as_str() else {
                bail!("RestAPI V2 refused to sign in: {v2}");
            };
            tokens.0 = token.to_string();
        }
        if dialects.contains(&Dialect::GetuiLegacy)
            || dialects.contains(&Dialect::GetuiLegacyNoRequestId)
        {
            let legacy: serde_json::Value = http
                .post(format!("{}/serviceex", server.base))
                .json(&serde_json::json!({"action": "connect", "appkey": key,
                    "timeStamp": ts.parse::<u64>()?, "sign": legacy_sign, "version": "4.1.1.2"}))
                .send()
                .await?
                .json()
                .await?;
            let Some(token) = legacy["authtoken"].as_str() else {
                bail!("the legacy protocol refused to sign in: {legacy}");
            };
            tokens.1 = token.to_string();
        }
        Ok(tokens)
    })
}

pub fn run(args: PushApiArgs) -> anyhow::Result<()> {
    let server = PigeonServer::start(&[
        ("PIGEON_HEARTBEAT_S", "600"),
        ("PIGEON_SQLITE_SYNCHRONOUS", &args.sqlite_synchronous),
    ])?;
    let mut devices = Agent::spawn(&[
        "--mode".into(),
        "pigeon".into(),
        "--server".into(),
        server.base.clone(),
        "--app-key".into(),
        server.app_key.clone(),
        "--count".into(),
        args.devices.to_string(),
        "--source-ip".into(),
        "127.0.0.20".into(),
        "--id".into(),
        "90".into(),
    ])?;
    let registered = devices.recv()?;
    let rids: Vec<String> = registered["registration_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let dir = tempfile::tempdir()?;
    let rids_file = dir.path().join("rids.txt");
    std::fs::write(&rids_file, rids.join("\n"))?;
    devices.send("connect")?;
    devices.recv()?;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", server.app_key, server.master_secret));
    let (v2_token, legacy_token) = getui_tokens(&server, &args.dialect)?;
    let mut loaders = (0..args.agents)
        .map(|i| {
            Agent::spawn(&[
                "--mode".into(),
                "http".into(),
                "--server".into(),
                server.base.clone(),
                "--auth".into(),
                auth.clone(),
                "--app-key".into(),
                server.app_key.clone(),
                "--v2-token".into(),
                v2_token.clone(),
                "--legacy-token".into(),
                legacy_token.clone(),
                "--rids-file".into(),
                rids_file.display().to_string(),
                "--count".into(),
                args.connections.to_string(),
                "--source-ip".into(),
                format!("127.0.0.{}", 30 + i),
            ])
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let rates: Vec<(String, u64)> = std::iter::once(("max".to_string(), 0))
        .chain(args.rates.iter().map(|r| (format!("{r}/s"), *r)))
        .collect();
    let phases: Vec<(Dialect, String, u64)> = args
        .dialect
        .iter()
        .flat_map(|d| {
            rates
                .iter()
                .map(move |(name, rate)| (*d, name.clone(), *rate))
        })
        .collect();
    let mut rounds: Vec<Vec<PhaseRound>> = vec![Vec::new(); phases.len()];
    let mut each = Table::new(&[
        "round",
        "dialect",
        "phase",
        "pushes/s accepted",
        "errors",
        "API p50 ms",
        "API p99 ms",
        "to-device p50 ms",
        "to-device p99 ms",
        "CPU µs/push server+load",
        "server RSS MiB",
    ]);
    for round in 1..=args.rounds {
        for (i, (dialect, name, rate)) in phases.iter().enumerate() {
            let r = run_phase(&args, &server, &mut devices, &mut loaders, *dialect, *rate)
                .map_err(|e| e.context(format!("round {round}, {} {name}", dialect.name())))?;
            each.row(vec![
                round.to_string(),
                dialect.name().to_string(),
                name.clone(),
                format!("{:.0}", r.per_s),
                r.errors.to_string(),
                ms(r.api_p50_us),
                ms(r.api_p99_us),
                ms(r.device_p50_us),
                ms(r.device_p99_us),
                format!("{:.1}+{:.1}", r.server_us, r.load_us),
                r.rss_mib.to_string(),
            ]);
            rounds[i].push(r);
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    for l in loaders.iter_mut() {
        let _ = l.send("quit");
    }
    let _ = devices.send("quit");

    println!("Every round:");
    each.print();
    println!();
    println!(
        "Medians of {} rounds (pushes/s and to-device p99 with their lowest and highest):",
        args.rounds
    );
    let mut table = Table::new(&[
        "dialect",
        "phase",
        "pushes/s accepted (min – max)",
        "errors",
        "API p50 ms",
        "API p99 ms",
        "to-device p50 ms",
        "to-device p99 ms (min – max)",
        "delivered",
        "CPU µs/push server+load",
        "server RSS MiB",
    ]);
    for ((dialect, name, _), rs) in phases.iter().zip(&rounds) {
        let med = |f: fn(&PhaseRound) -> f64| median(rs.iter().map(f));
        let spread = |f: fn(&PhaseRound) -> f64| {
            let values = rs.iter().map(f);
            let low = values.clone().fold(f64::INFINITY, f64::min);
            (low, values.fold(0.0, f64::max))
        };
        let (rate_low, rate_high) = spread(|r| r.per_s);
        let (p99_low, p99_high) = spread(|r| r.device_p99_us as f64);
        table.row(vec![
            dialect.name().to_string(),
            name.clone(),
            format!("{:.0} ({rate_low:.0} – {rate_high:.0})", med(|r| r.per_s)),
            rs.iter().map(|r| r.errors).sum::<u64>().to_string(),
            ms(med(|r| r.api_p50_us as f64) as u64),
            ms(med(|r| r.api_p99_us as f64) as u64),
            ms(med(|r| r.device_p50_us as f64) as u64),
            format!(
                "{} ({} – {})",
                ms(med(|r| r.device_p99_us as f64) as u64),
                ms(p99_low as u64),
                ms(p99_high as u64)
            ),
            rs.iter().map(|r| r.delivered).sum::<u64>().to_string(),
            format!("{:.1}+{:.1}", med(|r| r.server_us), med(|r| r.load_us)),
            format!("{:.0}", med(|r| r.rss_mib as f64)),
        ]);
    }
    table.print();
    Ok(())
}

/// What one phase did in one round.
#[derive(Clone, Debug)]
struct PhaseRound {
    per_s: f64,
    errors: u64,
    api_p50_us: u64,
    api_p99_us: u64,
    device_p50_us: u64,
    device_p99_us: u64,
    delivered: u64,
    /// CPU per accepted push, µs: the server's, and the load processes' (devices included).
    server_us: f64,
    load_us: f64,
    rss_mib: u64,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// One phase: the loaders push for `args.secs` at `rate` (0: as fast as answered), then the
/// devices are waited for until every accepted push arrived.
fn run_phase(
    args: &PushApiArgs,
    server: &PigeonServer,
    devices: &mut Agent,
    loaders: &mut [Agent],
    dialect: Dialect,
    rate: u64,
) -> anyhow::Result<PhaseRound> {
    devices.send("reset")?;
    devices.recv()?;
    let server_pid = server.guard.pid();
    let load_cpu = |loaders: &[Agent], devices: &Agent| -> u64 {
        loaders.iter().map(|l| cpu_ns(l.pid())).sum::<u64>() + cpu_ns(devices.pid())
    };
    let (server_before, load_before) = (cpu_ns(server_pid), load_cpu(loaders, devices));
    let LoadRun {
        ok,
        errors,
        api_p50_us,
        api_p99_us,
    } = run_loaders(loaders, rate, args.secs, dialect.name())?;
    devices.send(&format!("wait {ok} 30"))?;
    let d = devices.recv()?;
    let delivered = d["received"].as_u64().unwrap_or(0);
    if delivered < ok {
        bail!("{ok} pushes accepted but only {delivered} delivered");
    }
    let per_push = |ns: u64| ns as f64 / 1000.0 / ok.max(1) as f64;
    Ok(PhaseRound {
        per_s: ok as f64 / args.secs as f64,
        errors,
        api_p50_us,
        api_p99_us,
        device_p50_us: d["latency_p50_us"].as_u64().unwrap_or(0),
        device_p99_us: d["latency_p99_us"].as_u64().unwrap_or(0),
        delivered,
        server_us: per_push(cpu_ns(server_pid).saturating_sub(server_before)),
        load_us: per_push(load_cpu(loaders, devices).saturating_sub(load_before)),
        rss_mib: rss_kib(server_pid)? / 1024,
    })
}
