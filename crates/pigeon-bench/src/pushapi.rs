//! `pigeon bench push-api`: single-registration_id pushes through `POST /v3/push` over
//! keep-alive connections, each durably accepted before its 200 and delivered to an online
//! device. First as fast as the server answers, then at a fixed rate with the API-to-device
//! latency measured at the devices.

use crate::procs::{cpu_ns, rss_kib, split, Agent, PigeonServer};
use crate::table::Table;
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
    /// Fixed rates to measure latency at, pushes/s.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub rates: Vec<u64>,
    /// `full` (default, survives power loss) or `normal` SQLite durability.
    #[arg(long, default_value = "full")]
    pub sqlite_synchronous: String,
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
    let mut loaders = (0..args.agents)
        .map(|i| {
            Agent::spawn(&[
                "--mode".into(),
                "http".into(),
                "--server".into(),
                server.base.clone(),
                "--auth".into(),
                auth.clone(),
                "--rids-file".into(),
                rids_file.display().to_string(),
                "--count".into(),
                args.connections.to_string(),
                "--source-ip".into(),
                format!("127.0.0.{}", 30 + i),
            ])
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut table = Table::new(&[
        "phase",
        "pushes/s accepted",
        "errors",
        "API p50 ms",
        "API p99 ms",
        "to-device p50 ms",
        "to-device p99 ms",
        "delivered",
        "CPU µs/push server+load",
        "server RSS MiB",
    ]);
    let phases: Vec<(String, u64)> = std::iter::once(("max".to_string(), 0))
        .chain(args.rates.iter().map(|r| (format!("{r}/s"), *r)))
        .collect();
    for (name, rate) in phases {
        devices.send("reset")?;
        devices.recv()?;
        let server_pid = server.guard.pid();
        let load_cpu = |loaders: &[Agent], devices: &Agent| -> u64 {
            loaders.iter().map(|l| cpu_ns(l.pid())).sum::<u64>() + cpu_ns(devices.pid())
        };
        let (server_before, load_before) = (cpu_ns(server_pid), load_cpu(&loaders, &devices));
        let rates = split(rate as usize, loaders.len());
        for (l, r) in loaders.iter_mut().zip(&rates) {
            l.send(&format!("run {r} {}", args.secs))?;
        }
        let (mut ok, mut errors, mut p50, mut p99) = (0, 0, 0u64, 0u64);
        for l in loaders.iter_mut() {
            let v = l.recv()?;
            ok += v["ok"].as_u64().unwrap_or(0);
            errors += v["errors"].as_u64().unwrap_or(0);
            p50 = p50.max(v["api"]["p50_us"].as_u64().unwrap_or(0));
            p99 = p99.max(v["api"]["p99_us"].as_u64().unwrap_or(0));
        }
        devices.send(&format!("wait {ok} 30"))?;
        let d = devices.recv()?;
        let delivered = d["received"].as_u64().unwrap_or(0);
        let per_push = |ns: u64| ns as f64 / 1000.0 / ok.max(1) as f64;
        let cpu = format!(
            "{:.1}+{:.1}",
            per_push(cpu_ns(server_pid).saturating_sub(server_before)),
            per_push(load_cpu(&loaders, &devices).saturating_sub(load_before))
        );
        let rss_mib = rss_kib(server_pid)? / 1024;
        if delivered < ok {
            bail!("{name}: {ok} pushes accepted but only {delivered} delivered");
        }
        let ms = |v: &serde_json::Value| {
            v.as_u64()
                .map(|u| format!("{:.2}", u as f64 / 1000.0))
                .unwrap_or_default()
        };
        table.row(vec![
            name,
            format!("{:.0}", ok as f64 / args.secs as f64),
            errors.to_string(),
            format!("{:.2}", p50 as f64 / 1000.0),
            format!("{:.2}", p99 as f64 / 1000.0),
            ms(&d["latency_p50_us"]),
            ms(&d["latency_p99_us"]),
            delivered.to_string(),
            cpu,
            rss_mib.to_string(),
        ]);
        std::thread::sleep(Duration::from_millis(500));
    }
    for l in loaders.iter_mut() {
        let _ = l.send("quit");
    }
    let _ = devices.send("quit");
    table.print();
    Ok(())
}
