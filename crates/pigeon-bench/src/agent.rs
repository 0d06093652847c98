//! A load-generating agent process. It holds many device connections (Pigeon's protocol or
//! MQTT), records when pushes arrive, and answers one JSON line per command read on stdin:
//!
//! - `connect` → `{"connected": n}`
//! - `wait K SECS` → waits until K pushes arrived in all (or SECS pass) →
//!   `{"received": r, "first_us": .., "last_us": .., "latencies_us": [p50, p99, max]}`
//! - `reset` → `{"reset": true}`; `quit` exits.
//! - `stats` → `{"received": r, "connected": c, "reconnects": n, "last_reconnect_us": ..,
//!   "duplicates": d, "given_up": g, "failed_attempts": f}` at once (what `wait` says, and the connections' state).
//! - `msgs T` (with `--reconnect`) → `{"msgs": [[msg_id, devices, devices_before_T, last_us], ..]}`:
//!   for each msg_id, how many devices got it, how many of those before `T` (µs since the
//!   epoch), and when the last of them got it.
//!
//! A Pigeon agent registers its devices first and says `{"registered": n, "registration_ids": [..]}`.
//! With `--servers`, device `i` registers and connects through `servers[i % n]` (a cluster's
//! nodes). With `--reconnect`, a device whose connection ends comes back as `pigeon device
//! simulate` does (the protocol's close-code table, exponential back-off with jitter), to the
//! `--fallback` servers taking turns, and `received` counts each push once per device.

use crate::mqtt;
use crate::procs::{connect_from, now_us};
use crate::wsclient::{json_field, WsClient};
use clap::{Args, ValueEnum};
use futures_util::stream::{self, StreamExt};
use pigeon_device::{reconnect_after, register, Credentials, Reconnect, RegisterRequest};
use serde_json::json;
use std::collections::{HashMap, HashSet};
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
    /// Several servers (base URLs) instead of `--server`: Pigeon mode spreads the devices over
    /// them (device i on servers[i % n]), Http mode the connections.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Pigeon mode: devices whose connection ends reconnect, and each push is counted once
    /// per device (duplicates apart).
    #[arg(long)]
    pub reconnect: bool,
    /// With `--reconnect`: the servers devices reconnect to, taking turns (device i's k-th
    /// attempt goes to fallback[(i + k) % n]); their own server when not given.
    #[arg(long, value_delimiter = ',')]
    pub fallback: Vec<String>,
}

impl AgentArgs {
    /// The servers to use: `--servers`, else `--server`.
    fn servers(&self) -> Vec<String> {
        if self.servers.is_empty() {
            vec![self.server.clone()]
        } else {
            self.servers.clone()
        }
    }
}

/// What devices that reconnect record (`--reconnect`).
#[derive(Default)]
struct Track {
    /// msg_id → when each device that got it got it first (µs since the epoch).
    msgs: Mutex<HashMap<u64, Vec<u64>>>,
    duplicates: AtomicU64,
    connected: AtomicU64,
    reconnects: AtomicU64,
    last_reconnect_us: AtomicU64,
    /// Devices that will not reconnect (a close code that says so).
    given_up: AtomicU64,
    /// Reconnect attempts that failed (refused, timed out, no welcome).
    failed_attempts: AtomicU64,
}

impl Track {
    fn first_receipt(&self, msg_id: u64, at_us: u64) {
        if let Ok(mut m) = self.msgs.lock() {
            m.entry(msg_id).or_default().push(at_us);
        }
    }

    fn report(&self, before_us: u64) -> serde_json::Value {
        let m = self.msgs.lock().map(|m| m.clone()).unwrap_or_default();
        let rows: Vec<serde_json::Value> = m
            .iter()
            .map(|(id, times)| {
                let before = times.iter().filter(|t| **t <= before_us).count();
                json!([id, times.len(), before, times.iter().max()])
            })
            .collect();
        json!({ "msgs": rows })
    }
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
    let track = Arc::new(Track::default());
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
                    Mode::Pigeon => connect_pigeon(&args, &creds, &stats, &track).await?,
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
            ["stats"] => say(json!({
                "received": stats.received.load(Ordering::Relaxed),
                "connected": track.connected.load(Ordering::Relaxed),
                "reconnects": track.reconnects.load(Ordering::Relaxed),
                "last_reconnect_us": track.last_reconnect_us.load(Ordering::Relaxed),
                "duplicates": track.duplicates.load(Ordering::Relaxed),
                "given_up": track.given_up.load(Ordering::Relaxed),
                "failed_attempts": track.failed_attempts.load(Ordering::Relaxed),
            })),
            ["msgs", before] => say(track.report(before.parse()?)),
            ["run", rate, secs, dialect, rest @ ..] => {
                let dialect = crate::httpload::Dialect::parse(dialect)
                    .ok_or_else(|| anyhow::anyhow!("unknown dialect {dialect:?}"))?;
                let rids = std::fs::read_to_string(
                    args.rids_file
                        .as_ref()
                        .ok_or_else(|| anyhow::anyhow!("--rids-file is needed"))?,
                )?;
                let addrs = args
                    .servers()
                    .iter()
                    .map(|s| {
                        s.trim_start_matches("http://")
                            .trim_end_matches('/')
                            .parse()
                    })
                    .collect::<Result<Vec<std::net::SocketAddr>, _>>()?;
                let record = rest == ["ids"];
                let target = Arc::new(crate::httpload::Target {
                    addrs,
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
                    (rate.parse()?, secs.parse()?),
                    record,
                )
                .await?;
                say(
                    json!({"ok": out.ok, "errors": out.errors, "api": crate::httpload::percentiles(out.latencies_us),
                           "accepted": out.accepted}),
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
    let servers = args.servers();
    let results: Vec<anyhow::Result<Credentials>> = stream::iter(0..args.count)
        .map(|i| {
            let http = http.clone();
            let req = RegisterRequest {
                app_key: args.app_key.clone(),
                platform: Some("android".into()),
                install_id: Some(format!("bench-agent-{:04}-{i:08}", args.id)),
                ..Default::default()
            };
            let server = servers[i % servers.len()].clone();
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
    track: &Arc<Track>,
) -> anyhow::Result<usize> {
    let servers = args.servers();
    let hosts: Vec<String> = servers.iter().map(|s| host_of(s)).collect();
    let mut results: Vec<(usize, anyhow::Result<(WsClient, u64)>)> =
        stream::iter(creds.iter().enumerate())
            .map(|(i, c)| {
                let host = hosts[i % hosts.len()].clone();
                async move { (i, open_device(args.source_ip, &host, c).await) }
            })
            .buffer_unordered(128)
            .collect()
            .await;
    results.sort_unstable_by_key(|(i, _)| *i);
    let fallback: Vec<String> = if args.fallback.is_empty() {
        hosts.clone()
    } else {
        args.fallback.iter().map(|s| host_of(s)).collect()
    };
    let fallback = Arc::new(fallback);
    let mut n = 0;
    for (i, conn) in results {
        let (ws, heartbeat_s) = conn?;
        if args.reconnect {
            let device = Device {
                index: i,
                creds: creds[i].clone(),
                source: args.source_ip,
                fallback: fallback.clone(),
                heartbeat_s,
            };
            tokio::spawn(tracked_device_loop(
                ws,
                device,
                stats.clone(),
                track.clone(),
            ));
        } else {
            tokio::spawn(pigeon_device_loop(ws, stats.clone()));
        }
        n += 1;
    }
    track.connected.store(n as u64, Ordering::Relaxed);
    Ok(n)
}

/// `host:port` of a base URL.
fn host_of(server: &str) -> String {
    server
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Connects one device to `host` (`ip:port`) and says hello; the connection and the
/// welcome's heartbeat_s.
async fn open_device(
    source: IpAddr,
    host: &str,
    c: &Credentials,
) -> anyhow::Result<(WsClient, u64)> {
    let addr: std::net::SocketAddr = host.parse()?;
    let s = connect_from(source, addr).await?;
    let mut ws = WsClient::handshake(s, host, "/v1/connect").await?;
    let hello = json!({"op": "hello", "registration_id": c.registration_id, "device_secret": c.device_secret});
    ws.send_text(&hello.to_string()).await?;
    let welcome = ws.next_text().await?;
    let welcome = std::str::from_utf8(&welcome)?;
    if json_field(welcome, "op") != Some("welcome") {
        anyhow::bail!("no welcome: {welcome}");
    }
    let heartbeat_s = json_field(welcome, "heartbeat_s")
        .and_then(|h| h.parse().ok())
        .unwrap_or(60);
    Ok((ws, heartbeat_s))
}

/// A device that reconnects.
struct Device {
    index: usize,
    creds: Credentials,
    source: IpAddr,
    /// `ip:port` of the servers it reconnects to.
    fallback: Arc<Vec<String>>,
    heartbeat_s: u64,
}

/// Longest a reconnect attempt (connect, upgrade, hello, welcome) may take.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(10);

/// A device that acks what it gets, counts each push once, and when its connection ends
/// comes back as `pigeon device simulate` does: after the delay the close-code table gives
/// (exponential back-off with jitter while attempts fail), to the fallback servers in turn.
async fn tracked_device_loop(
    mut ws: WsClient,
    mut device: Device,
    stats: Arc<Stats>,
    track: Arc<Track>,
) {
    let mut seen: HashSet<u64> = HashSet::new();
    let mut attempt = 0usize;
    loop {
        let code = loop {
            let Ok(frame) = ws.next_text().await else {
                break ws.close_code.unwrap_or(1006);
            };
            let Ok(text) = std::str::from_utf8(&frame) else {
                break 1007;
            };
            if json_field(text, "op") != Some("push") {
                continue;
            }
            let Some(msg_id) = json_field(text, "msg_id") else {
                break 1002;
            };
            let at = now_us();
            match msg_id.parse::<u64>() {
                Ok(id) if !seen.insert(id) => {
                    track.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Ok(id) => {
                    track.first_receipt(id, at);
                    stats.record(sent_stamp(text));
                }
                Err(_) => stats.record(sent_stamp(text)),
            }
            if ws
                .send_text(&format!(r#"{{"op":"ack","msg_ids":["{msg_id}"]}}"#))
                .await
                .is_err()
            {
                break ws.close_code.unwrap_or(1006);
            }
        };
        drop(ws);
        track.connected.fetch_sub(1, Ordering::Relaxed);
        let (mut code, mut failures) = (code, 0u32);
        ws = loop {
            match reconnect_after(code, device.heartbeat_s, failures) {
                Reconnect::Never => {
                    track.given_up.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Reconnect::After(delay) => tokio::time::sleep(delay).await,
            }
            let host = &device.fallback[(device.index + attempt) % device.fallback.len()];
            attempt += 1;
            let opened = tokio::time::timeout(
                ATTEMPT_LIMIT,
                open_device(device.source, host, &device.creds),
            )
            .await;
            match opened {
                Ok(Ok((ws, heartbeat_s))) => {
                    device.heartbeat_s = heartbeat_s;
                    break ws;
                }
                // A refused hello (4001) or anything else: back off and try again.
                _ => {
                    track.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    code = 1006;
                    failures += 1;
                }
            }
        };
        track.connected.fetch_add(1, Ordering::Relaxed);
        track.reconnects.fetch_add(1, Ordering::Relaxed);
        track
            .last_reconnect_us
            .fetch_max(now_us(), Ordering::Relaxed);
    }
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
