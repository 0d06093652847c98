//! `pigeon bench apns`: how fast Pigeon's APNs client sends to the local APNs fake (HTTP/2
//! over TLS, provider tokens checked) over one connection pool. Client and fake run in this
//! process on runtimes of their own, sharing the machine's two cores, so the rate is a floor
//! for what the client alone can do.

use crate::table::Table;
use clap::Args;
use futures_util::StreamExt;
use p256::pkcs8::EncodePrivateKey;
use pigeon_vendors::apns::{ApnsAuth, ApnsClient, ApnsConfig, Notification};
use pigeon_vendors::fake_apns::{Account, FakeApns};
use pigeon_vendors::Outcome;
use serde_json::json;
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct ApnsArgs {
    /// Notifications to send (after a warm-up of 2000).
    #[arg(long, default_value_t = 200_000)]
    pub count: usize,
    /// Requests in flight at once (HTTP/2 streams over the one connection).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Worker threads of the client's runtime (the fake gets one).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Instead of the client alone: a `pigeon serve` with this many iOS devices (offline,
    /// each with an APNs token) and the app's APNs credentials pointing at the fake; one
    /// broadcast, timed from the accepted push to the fake's last notification. This is the
    /// whole vendor path: routing, jobs, the app's APNs channel, outcomes recorded.
    #[arg(long)]
    pub through_server: Option<usize>,
}

pub fn run(args: ApnsArgs) -> anyhow::Result<()> {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = secret.to_pkcs8_pem(Default::default())?.to_string();
    let account = Account {
        key: p256::ecdsa::VerifyingKey::from(secret.public_key()),
        key_id: "BENCHKEY01".into(),
        team_id: "BENCHTEAM1".into(),
        topic: "com.example.bench".into(),
    };
    let fake_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("fake-apns")
        .enable_all()
        .build()?;
    let fake = fake_rt.block_on(FakeApns::start(account, false))?;
    if let Some(devices) = args.through_server {
        return through_server(&fake, &pem, devices);
    }
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("apns-client")
        .enable_all()
        .build()?;
    let client = ApnsClient::new(ApnsConfig {
        auth: ApnsAuth::Token {
            key_id: "BENCHKEY01".into(),
            team_id: "BENCHTEAM1".into(),
            private_key_pem: pem,
        },
        topic: "com.example.bench".into(),
        production: false,
        base_url: Some(fake.base_url.clone()),
        extra_root_pem: Some(fake.ca_pem.clone()),
        // The fake is on this machine.
        allow_private_networks: true,
    })?;
    let notification = Notification::alert(
        Some("Bench"),
        "a notification of a usual size, with a title and a body",
        Some(1),
        &json!({"msg_id": "18100000000000001"}),
    );
    let send_all = |count: usize| {
        let (client, n) = (&client, &notification);
        async move {
            let mut sent = 0usize;
            let mut other = 0usize;
            let mut outcomes = futures_util::stream::iter(0..count)
                .map(|i| async move { client.send(&format!("{i:064x}"), n).await })
                .buffer_unordered(args.concurrency.max(1));
            while let Some(o) = outcomes.next().await {
                match o {
                    Outcome::Sent { .. } => sent += 1,
                    _ => other += 1,
                }
            }
            (sent, other)
        }
    };
    client_rt.block_on(send_all(2000));
    let cpu_before = process_cpu_s();
    let t0 = Instant::now();
    let (sent, other) = client_rt.block_on(send_all(args.count));
    let secs = t0.elapsed().as_secs_f64();
    let cpu = process_cpu_s() - cpu_before;
    let connections = fake
        .stats
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    let mut table = Table::new(&[
        "notifications",
        "in flight",
        "sent",
        "not sent",
        "s",
        "notifications/s",
        "TLS connections",
        "CPU µs per notification (client + fake)",
    ]);
    table.row(vec![
        args.count.to_string(),
        args.concurrency.to_string(),
        sent.to_string(),
        other.to_string(),
        format!("{secs:.2}"),
        format!("{:.0}", sent as f64 / secs),
        connections.to_string(),
        format!("{:.1}", cpu * 1e6 / args.count.max(1) as f64),
    ]);
    table.print();
    drop(fake);
    Ok(())
}

/// One broadcast through a running server to `devices` offline iPhones, by way of the
/// fake: how long from the accepted push to the last notification the fake took.
fn through_server(fake: &FakeApns, pem: &str, devices: usize) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    // The fake listens on this machine: vendors on private networks must be allowed, in the
    // server and in the CLI that stores the credentials.
    let allow = [("PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS", "true")];
    let server = crate::procs::PigeonServer::start(&allow)?;
    let credentials = json!({"key_id": "BENCHKEY01", "team_id": "BENCHTEAM1",
        "private_key": pem, "topic": "com.example.bench", "production": false,
        "base_url": fake.base_url, "ca_pem": fake.ca_pem});
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([
            "app",
            "vendor",
            "set",
            "--app-key",
            &server.app_key,
            "--vendor",
            "apns",
        ])
        .arg("--credentials")
        .arg(credentials.to_string())
        .arg("--data")
        .arg(&server.data)
        .envs(allow)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "pigeon app vendor set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let http = reqwest::Client::new();
    let register_started = Instant::now();
    rt.block_on(async {
        let url = format!("{}/v1/devices/register", server.base);
        let mut done = futures_util::stream::iter(0..devices)
            .map(|i| {
                let body = json!({"app_key": server.app_key, "platform": "ios",
                    "push_tokens": {"apns": format!("{i:064x}")}});
                let (http, url) = (&http, &url);
                async move { http.post(url).json(&body).send().await?.error_for_status() }
            })
            .buffer_unordered(64);
        while let Some(r) = done.next().await {
            r?;
        }
        anyhow::Ok(())
    })?;
    eprintln!(
        "registered {devices} devices in {:.1} s",
        register_started.elapsed().as_secs_f64()
    );
    std::thread::sleep(std::time::Duration::from_millis(1500)); // credentials are read every second
    let before = fake.stats.accepted.load(Ordering::Relaxed);
    let server_cpu_before = crate::procs::cpu_ns(server.guard.pid());
    let t0 = Instant::now();
    rt.block_on(async {
        http.post(format!("{}/v3/push", server.base))
            .basic_auth(&server.app_key, Some(&server.master_secret))
            .json(&json!({"platform": "all", "audience": "all",
                "notification": {"alert": "bench", "ios": {"badge": "+1"}}}))
            .send()
            .await?
            .error_for_status()
    })?;
    let accepted_after = t0.elapsed();
    let deadline = Instant::now() + std::time::Duration::from_secs(300);
    while fake.stats.accepted.load(Ordering::Relaxed) - before < devices as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fake got only {} notifications",
            fake.stats.accepted.load(Ordering::Relaxed) - before
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let secs = t0.elapsed().as_secs_f64();
    let server_cpu = (crate::procs::cpu_ns(server.guard.pid()) - server_cpu_before) as f64 / 1e9;
    let mut table = Table::new(&[
        "devices",
        "push accepted (ms)",
        "last notification (s)",
        "notifications/s",
        "TLS connections",
        "server CPU µs per notification",
    ]);
    table.row(vec![
        devices.to_string(),
        format!("{:.1}", accepted_after.as_secs_f64() * 1e3),
        format!("{secs:.2}"),
        format!("{:.0}", devices as f64 / secs),
        fake.stats.connections.load(Ordering::Relaxed).to_string(),
        format!("{:.1}", server_cpu * 1e6 / devices.max(1) as f64),
    ]);
    table.print();
    Ok(())
}

/// CPU seconds this process has used, user and system.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
