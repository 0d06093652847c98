//! A load-generating agent process. It holds many device connections (Pigeon's protocol or
//! MQTT), records when pushes arrive, and answers one JSON line per command read on stdin:
//!
//! - `connect` → `{"connected": n}`
//! - `wait K SECS` → waits until K pushes arrived in all (or SECS pass) →
//!   `{"received": r, "first_us": .., "last_us": .., "latencies_us": [p50, p99, max]}`
//! - `reset` → `{"reset": true}`; `quit` exits.
//!
//! A Pigeon agent registers its devices first and says `{"registered": n, "registration_ids": [..]}`.

use crate::mqtt;
use crate::procs::{connect_from, now_us};
use crate::wsclient::{json_field, WsClient};
use clap::{Args, ValueEnum};
use futures_util::stream::{self, StreamExt};
use pigeon_device::{register, Credentials, RegisterRequest};
use serde_json::json;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    Pigeon,
    Mqtt,
    /// Push API load: `run RATE SECS` (RATE 0 = as fast as possible).
    Http,
}

#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Pigeon base URL, or MQTT host:port.
    #[arg(long)]
    pub server: String,
    #[arg(long, default_value = "")]
    pub app_key: String,
    #[arg(long)]
    pub count: usize,
    /// Local address to connect from.
    #[arg(long, default_value = "127.0.0.1")]
    pub source_ip: IpAddr,
    /// Distinguishes this agent's devices from other agents'.
    #[arg(long, default_value_t = 0)]
    pub id: usize,
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// Http mode: base64 of app_key:master_secret.
    #[arg(long, default_value = "")]
    pub auth: String,
    /// Http mode: a Getui RestAPI V2 token.
    #[arg(long, default_value = "")]
    pub v2_token: String,
    /// Http mode: a Getui legacy protocol authToken.
    #[arg(long, default_value = "")]
    pub legacy_token: String,
    /// Http mode: a file with one registration id a line.
    #[arg(long)]
    pub rids_file: Option<std::path::PathBuf>,
}

#[derive(Default)]
struct Stats {
    /// `wait` is woken when `received` reaches this.
    target: AtomicU64,
    reached: tokio::sync::Notify,
    received: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    latencies: Mutex<Vec<u64>>,
}

impl Stats {
    fn record(&self, sent_us: Option<u64>) {
        let now = now_us();
        if self.received.fetch_add(1, Ordering::Relaxed) + 1 == self.target.load(Ordering::Relaxed)
        {
            self.reached.notify_one();
        }
        self.last_us.fetch_max(now, Ordering::Relaxed);
        let _ = self
            .first_us
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        if let Some(t) = sent_us {
            if let Ok(mut l) = self.latencies.lock() {
                l.push(now.saturating_sub(t));
            }
        }
    }

    fn reset(&self) {
        self.target.store(u64::MAX, Ordering::Relaxed);
        // A wake-up left over from a round that timed out must not end the next one.
        let _ = futures_util::FutureExt::now_or_never(self.reached.notified());
        self.received.store(0, Ordering::Relaxed);
        self.first_us.store(0, Ordering::Relaxed);
        self.last_us.store(0, Ordering::Relaxed);
        if let Ok(mut l) = self.latencies.lock() {
            l.clear();
        }
    }

    fn report(&self) -> serde_json::Value {
        let mut l = self.latencies.lock().map(|l| l.clone()).unwrap_or_default();
        l.sort_unstable();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
        };
        json!({"received": self.received.load(Ordering::Relaxed),
               "first_us": self.first_us.load(Ordering::Relaxed),
               "last_us": self.last_us.load(Ordering::Relaxed),
               "latency_count": l.len(),
               "latency_p50_us": pct(0.5), "latency_p99_us": pct(0.99), "latency_max_us": l.last()})
    }
}

fn say(v: serde_json::Value) {
    println!("{v}");
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let stats = Arc::new(Stats::default());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let creds = match args.mode {
        Mode::Pigeon => {
            let creds = register_all(&args).await?;
            let ids: Vec<&str> = creds.iter().map(|c| c.registration_id.as_str()).collect();
            say(json!({"registered": creds.len(), "registration_ids": ids}));
            creds
        }
        Mode::Mqtt | Mode::Http => Vec::new(),
    };
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["connect"] => {
                let n = match args.mode {
                    Mode::Pigeon => connect_pigeon(&args, &creds, &stats).await?,
                    Mode::Mqtt => connect_mqtt(&args, &stats).await?,
                    Mode::Http => 0,
                };
                say(json!({"connected": n}));
            }
            ["wait", k, secs] => {
                let k: u64 = k.parse()?;
                stats.target.store(k, Ordering::Relaxed);
                if stats.received.load(Ordering::Relaxed) < k {
                    let limit = Duration::from_secs(secs.parse()?);
                    let _ = tokio::time::timeout(limit, stats.reached.notified()).await;
                }
                say(stats.report());
            }
            ["run", rate, secs, dialect] => {
                let dialect = crate::httpload::Dialect::parse(dialect)
                    .ok_or_else(|| anyhow::anyhow!("unknown dialect {dialect:?}"))?;
                let rids = std::fs::read_to_string(
                    args.rids_file
                        .as_ref()
                        .ok_or_else(|| anyhow::anyhow!("--rids-file is needed"))?,
                )?;
                let target = Arc::new(crate::httpload::Target {
                    addr: args.server.trim_start_matches("http://").parse()?,
                    app_key: args.app_key.clone(),
                    auth: args.auth.clone(),
                    v2_token: args.v2_token.clone(),
                    legacy_token: args.legacy_token.clone(),
                    rids: rids.lines().map(String::from).collect(),
                });
                let out = crate::httpload::run(
                    target,
                    dialect,
                    args.source_ip,
                    args.count,
                    rate.parse()?,
                    secs.parse()?,
                )
                .await?;
                say(
                    json!({"ok": out.ok, "errors": out.errors, "api": crate::httpload::percentiles(out.latencies_us)}),
                );
            }
            ["reset"] => {
                stats.reset();
                say(json!({"reset": true}));
            }
            ["quit"] | [] => break,
            _ => say(json!({"error": format!("unknown command {line:?}")})),
        }
    }
    Ok(())
}

async fn register_all(args: &AgentArgs) -> anyhow::Result<Vec<Credentials>> {
    let http = reqwest::Client::builder()
        .local_address(args.source_ip)
        .build()?;
    let results: Vec<anyhow::Result<Credentials>> = stream::iter(0..args.count)
        .map(|i| {
            let http = http.clone();
            let req = RegisterRequest {
                app_key: args.app_key.clone(),
                platform: Some("android".into()),
                install_id: Some(format!("bench-agent-{:04}-{i:08}", args.id)),
                ..Default::default()
            };
            let server = args.server.clone();
            async move { Ok(register(&http, &server, &req).await?) }
        })
        .buffered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn connect_pigeon(
    args: &AgentArgs,
    creds: &[Credentials],
    stats: &Arc<Stats>,
) -> anyhow::Result<usize> {
    let host = args
        .server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let addr: std::net::SocketAddr = host.parse()?;
    let results: Vec<anyhow::Result<WsClient>> = stream::iter(creds.iter())
        .map(|c| {
            let host = host.clone();
            async move {
                let s = connect_from(args.source_ip, addr).await?;
                let mut ws = WsClient::handshake(s, &host, "/v1/connect").await?;
                let hello = json!({"op": "hello", "registration_id": c.registration_id, "device_secret": c.device_secret});
                ws.send_text(&hello.to_string()).await?;
                let welcome = ws.next_text().await?;
                if json_field(std::str::from_utf8(&welcome)?, "op") != Some("welcome") {
                    anyhow::bail!("no welcome: {}", String::from_utf8_lossy(&welcome));
                }
                Ok(ws)
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let mut n = 0;
    for conn in results {
        tokio::spawn(pigeon_device_loop(conn?, stats.clone()));
        n += 1;
    }
    Ok(n)
}

/// When a push was sent, as the bench wrote it into the push: JPush extras `"t":µs`, or a
/// Getui title `"t:µs"`.
fn sent_stamp(text: &str) -> Option<u64> {
    if let Some(t) = json_field(text, "t") {
        return t.parse().ok();
    }
    let at = text.find("\"t:")? + 3;
    let digits = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

async fn pigeon_device_loop(mut ws: WsClient, stats: Arc<Stats>) {
    while let Ok(frame) = ws.next_text().await {
        let Ok(text) = std::str::from_utf8(&frame) else {
            return;
        };
        if json_field(text, "op") != Some("push") {
            continue;
        }
        stats.record(sent_stamp(text));
        let Some(msg_id) = json_field(text, "msg_id") else {
            return;
        };
        if ws
            .send_text(&format!(r#"{{"op":"ack","msg_ids":["{msg_id}"]}}"#))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn connect_mqtt(args: &AgentArgs, stats: &Arc<Stats>) -> anyhow::Result<usize> {
    let addr: std::net::SocketAddr = args.server.parse()?;
    let results: Vec<anyhow::Result<tokio::net::TcpStream>> = stream::iter(0..args.count)
        .map(|i| async move {
            let s = connect_from(args.source_ip, addr).await?;
            mqtt::subscriber(s, &format!("bench-{}-{i}", args.id), &args.topic).await
        })
        .buffer_unordered(128)
        .collect()
        .await;
    let mut n = 0;
    for s in results {
        tokio::spawn(mqtt_loop(s?, stats.clone()));
        n += 1;
    }
    Ok(n)
}

async fn mqtt_loop(mut s: tokio::net::TcpStream, stats: Arc<Stats>) {
    while let Ok(p) = mqtt::read_packet(&mut s).await {
        if p.kind() != 3 {
            continue;
        }
        let Ok(id) = p.publish_id() else { return };
        let topic_len = u16::from_be_bytes([p.body[0], p.body[1]]) as usize;
        let payload = &p.body[(2 + topic_len + 2).min(p.body.len())..];
        let sent = std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.parse().ok());
        stats.record(sent);
        if s.write_all(&mqtt::puback(id)).await.is_err() {
            return;
        }
    }
}
