//! `pigeon bench slowloris`: how `/health` answers while thousands of connections send their
//! request head one header at a time and never finish it.
//!
//! A fresh server with default settings (or `--server`) is attacked from `--agents` processes
//! (`pigeon bench slowloris-agent`), each under the 20k-descriptor limit and from its own
//! source address 127.0.0.(2+i), that together keep `--connections` slow connections: each
//! sends `GET /health HTTP/1.1` and a header every few seconds, never the blank line. Two
//! phases: *hold* (a closed connection stays closed: how many the server keeps, and for how
//! long) and *churn* (a closed connection is opened again after `--reconnect-ms`, as an
//! attacker would). Meanwhile this process probes `/health` like a health checker — a new
//! connection every `--probe-interval-ms`, `Connection: close`, 5 s timeout — and reports
//! p50 / p99 / max latency and failures per phase, beside a quiet baseline.

use crate::procs::{connect_from, now_us, rss_kib, split, Guard, PigeonServer};
use clap::Args;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

#[derive(Args, Debug, Clone)]
pub struct SlowlorisArgs {
    /// Slow connections the attackers keep in all.
    #[arg(long, default_value_t = 19_000)]
    pub connections: usize,
    /// Attacker processes (each holds connections / agents descriptors).
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// Seconds each phase is measured.
    #[arg(long, default_value_t = 30)]
    pub duration_s: u64,
    /// Pause between two `/health` probes, in ms.
    #[arg(long, default_value_t = 50)]
    pub probe_interval_ms: u64,
    /// Churn phase: how soon an attacker opens a closed connection again, in ms.
    #[arg(long, default_value_t = 100)]
    pub reconnect_ms: u64,
    /// Attack a running server (http://127.0.0.x:port) instead of starting one.
    #[arg(long)]
    pub server: Option<String>,
    /// With `--server`: its process id, to report its descriptors and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct SlowlorisAgentArgs {
    #[arg(long)]
    pub addr: SocketAddr,
    #[arg(long)]
    pub count: usize,
    #[arg(long)]
    pub source_ip: IpAddr,
    /// Open a closed connection again after this many ms; never when absent.
    #[arg(long)]
    pub reconnect_ms: Option<u64>,
}

/// What an attacker process has done so far.
#[derive(Default)]
struct AttackStats {
    open: AtomicU64,
    opened: AtomicU64,
    closed_by_server: AtomicU64,
    connect_errors: AtomicU64,
}

/// The attacker process: keeps `count` slow connections, answers `stats` on stdin with a JSON
/// line, exits on `quit` or end of input.
pub async fn agent(args: SlowlorisAgentArgs) -> anyhow::Result<()> {
    let stats = Arc::new(AttackStats::default());
    for i in 0..args.count {
        let stats = stats.clone();
        let args = args.clone();
        tokio::spawn(async move {
            // Spread the first connects over a second rather than one burst.
            tokio::time::sleep(Duration::from_micros(
                (i as u64 * 1_000_000) / args.count.max(1) as u64,
            ))
            .await;
            loop {
                slow_connection(&args, &stats).await;
                match args.reconnect_ms {
                    Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                    None => return,
                }
            }
        });
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "stats" => println!(
                "{}",
                json!({
                    "open": stats.open.load(Ordering::Relaxed),
                    "opened": stats.opened.load(Ordering::Relaxed),
                    "closed_by_server": stats.closed_by_server.load(Ordering::Relaxed),
                    "connect_errors": stats.connect_errors.load(Ordering::Relaxed),
                })
            ),
            "quit" => break,
            _ => println!("{}", json!({"error": "unknown command"})),
        }
    }
    Ok(())
}

/// One slow connection until the server closes it.
async fn slow_connection(args: &SlowlorisAgentArgs, stats: &AttackStats) {
    let mut tcp = match connect_from(args.source_ip, args.addr).await {
        Ok(t) => t,
        Err(_) => {
            stats.connect_errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
    };
    stats.opened.fetch_add(1, Ordering::Relaxed);
    stats.open.fetch_add(1, Ordering::Relaxed);
    let mut ok = tcp
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .is_ok();
    let mut buf = [0u8; 256];
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    tick.tick().await;
    while ok {
        tokio::select! {
            n = tcp.read(&mut buf) => ok = matches!(n, Ok(n) if n > 0),
            _ = tick.tick() => ok = tcp.write_all(b"X-Slow: 1\r\n").await.is_ok(),
        }
    }
    stats.open.fetch_sub(1, Ordering::Relaxed);
    stats.closed_by_server.fetch_add(1, Ordering::Relaxed);
}

/// An attacker process driven over its stdin and stdout.
struct Attacker {
    guard: Guard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Attacker {
    fn spawn(
        addr: SocketAddr,
        count: usize,
        source: IpAddr,
        reconnect_ms: Option<u64>,
    ) -> anyhow::Result<Attacker> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["bench", "slowloris-agent", "--addr", &addr.to_string()])
            .args([
                "--count",
                &count.to_string(),
                "--source-ip",
                &source.to_string(),
            ])
            .env("TOKIO_WORKER_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(ms) = reconnect_ms {
            cmd.args(["--reconnect-ms", &ms.to_string()]);
        }
        let mut child = cmd.spawn()?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow::anyhow!("agent stdin"))?;
        let stdout = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("agent stdout"))?,
        );
        Ok(Attacker {
            guard: Guard(child),
            stdin,
            stdout,
        })
    }

    fn stats(&mut self) -> anyhow::Result<serde_json::Value> {
        writeln!(self.stdin, "stats")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            anyhow::bail!("attacker {} exited", self.guard.pid());
        }
        Ok(serde_json::from_str(line.trim())?)
    }
}

/// Latencies of the probes of one phase, and how many failed.
#[derive(Default)]
struct Probes {
    latencies_us: Vec<u64>,
    failures: u64,
    why: std::collections::BTreeMap<&'static str, u64>,
}

impl Probes {
    fn summary(&mut self) -> serde_json::Value {
        self.latencies_us.sort_unstable();
        let l = &self.latencies_us;
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .map(|us| *us as f64 / 1000.0)
        };
        let why: Vec<String> = self.why.iter().map(|(k, v)| format!("{v} {k}")).collect();
        let failures = if why.is_empty() {
            "0".to_string()
        } else {
            format!("{} ({})", self.failures, why.join(", "))
        };
        json!({"probes": l.len() as u64 + self.failures, "ok": l.len(), "failures": failures,
               "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": l.last().map(|us| *us as f64 / 1000.0)})
    }
}

/// One `/health` probe on a new connection: its latency, or why it failed (took over 5 s,
/// could not connect, was closed or reset before an answer, or a wrong answer).
async fn probe(addr: SocketAddr) -> Result<u64, &'static str> {
    let started = now_us();
    let work = async {
        let mut tcp = connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), addr)
            .await
            .map_err(|_| "connect")?;
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|_| "write")?;
        let mut answer = Vec::with_capacity(512);
        tcp.read_to_end(&mut answer).await.map_err(|_| "reset")?;
        if answer.is_empty() {
            return Err("closed");
        }
        let ok = answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"{\"status\":\"ok\"}");
        if ok {
            Ok(())
        } else {
            Err("answer")
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), work).await {
        Ok(Ok(())) => Ok(now_us().saturating_sub(started)),
        Ok(Err(why)) => Err(why),
        Err(_) => Err("timeout"),
    }
}

async fn probe_for(addr: SocketAddr, how_long: Duration, interval: Duration) -> Probes {
    let mut p = Probes::default();
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        match probe(addr).await {
            Ok(us) => p.latencies_us.push(us),
            Err(why) => {
                p.failures += 1;
                *p.why.entry(why).or_default() += 1;
            }
        }
        tokio::time::sleep(interval).await;
    }
    p
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub async fn run(args: SlowlorisArgs) -> anyhow::Result<()> {
    // The server this run started, stopped when the run ends.
    let mut _server = None;
    let (addr, server_pid) = match &args.server {
        Some(url) => {
            let host = url.trim_start_matches("http://").trim_end_matches('/');
            (host.parse::<SocketAddr>()?, args.server_pid)
        }
        None => {
            let s = PigeonServer::start(&[])?;
            let host = s.base.trim_start_matches("http://").parse::<SocketAddr>()?;
            let pid = s.guard.pid();
            _server = Some(s);
            (host, Some(pid))
        }
    };
    if !addr.ip().is_loopback() {
        anyhow::bail!("the attack goes only to 127.0.0.x, not {addr}");
    }
    let interval = Duration::from_millis(args.probe_interval_ms);
    let phase = Duration::from_secs(args.duration_s);
    let server_state = |label: &str| match server_pid {
        Some(pid) => {
            json!({"phase": label, "server_fds": fd_count(pid), "server_rss_kib": rss_kib(pid).unwrap_or(0)})
        }
        None => json!({"phase": label}),
    };
    let mut rows = Vec::new();

    let mut quiet = probe_for(addr, Duration::from_secs(5), interval).await;
    rows.push((
        "baseline (no attack)".to_string(),
        quiet.summary(),
        json!({}),
        server_state("baseline"),
    ));

    for (label, reconnect) in [("hold", None), ("churn", Some(args.reconnect_ms))] {
        let per_agent = split(args.connections, args.agents);
        let mut attackers = Vec::new();
        for (i, count) in per_agent.into_iter().enumerate() {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8));
            attackers.push(Attacker::spawn(addr, count, source, reconnect)?);
        }
        // Let the connects spread (one second) and settle before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut probes = probe_for(addr, phase, interval).await;
        let state = server_state(label);
        let mut attack =
            json!({"open": 0, "opened": 0, "closed_by_server": 0, "connect_errors": 0});
        for a in attackers.iter_mut() {
            let s = a.stats()?;
            for k in ["open", "opened", "closed_by_server", "connect_errors"] {
                attack[k] = json!(attack[k].as_u64().unwrap_or(0) + s[k].as_u64().unwrap_or(0));
            }
        }
        drop(attackers);
        rows.push((
            format!("{label}: {} slow connections", args.connections),
            probes.summary(),
            attack,
            state,
        ));
        // The server lets go of the dead attack connections (header timeout) before the next phase.
        tokio::time::sleep(Duration::from_secs(12)).await;
    }

    println!("| phase | /health probes | ok | failures | p50 ms | p99 ms | max ms | attack conns open at end | opened | closed by server | connect errors | server fds | server RSS MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let f = |v: &serde_json::Value| {
        v.as_f64()
            .map(|x| format!("{x:.1}"))
            .unwrap_or_else(|| "—".into())
    };
    let n = |v: &serde_json::Value| {
        v.as_u64()
            .map(|x| x.to_string())
            .unwrap_or_else(|| "—".into())
    };
    for (label, p, a, s) in &rows {
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            n(&p["probes"]),
            n(&p["ok"]),
            p["failures"].as_str().unwrap_or("—"),
            f(&p["p50_ms"]),
            f(&p["p99_ms"]),
            f(&p["max_ms"]),
            n(&a["open"]),
            n(&a["opened"]),
            n(&a["closed_by_server"]),
            n(&a["connect_errors"]),
            n(&s["server_fds"]),
            s["server_rss_kib"]
                .as_u64()
                .map(|k| format!("{:.0}", k as f64 / 1024.0))
                .unwrap_or_else(|| "—".into()),
        );
    }
    Ok(())
}
