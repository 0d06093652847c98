//! `pigeon bench restart`: how long `pigeon serve` takes to accept connections and pushes on a
//! data directory holding many devices and pending offline pushes, and the memory it needs.

use crate::procs::{free_port, now_us, rss_kib, Guard};
use crate::table::Table;
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use pigeon_core::{Audience, AudienceExpr, Notification, Platform, PlatformSet, Push};
use pigeon_device::{Credentials, DeviceConnection};
use pigeon_engine::{hash_secret, new_app_record};
use pigeon_store::ports::*;
use pigeon_store::{DeviceRecord, SqliteStore, Storage, Synchronous};
use roaring::RoaringBitmap;
use serde_json::{json, Map};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct RestartArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub devices: u32,
    #[arg(long, default_value_t = 100_000)]
    pub pushes: u32,
    /// Devices with pending pushes that then reconnect one after another, timed per connect
    /// (hello to welcome): what a reconnect storm after a restart costs per device.
    #[arg(long, default_value_t = 2000)]
    pub reconnects: u32,
    /// Populate (and keep) this data directory instead of a temporary one, e.g. to profile
    /// `pigeon serve` on it afterwards.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
}

const SECRET: &str = "bench-device-secret";

fn bar(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} ({{eta}})"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

fn rid(i: u32) -> String {
    format!("bench{i:015}")
}

/// Fills a data directory: one app, `devices` devices with tags, `pushes` pending pushes each
/// to one device that has not acked it.
async fn populate(
    data: &std::path::Path,
    devices: u32,
    pushes: u32,
) -> anyhow::Result<(String, String)> {
    std::fs::create_dir_all(data)?;
    let store = Arc::new(SqliteStore::open(
        data.join("pigeon.db"),
        Synchronous::Normal,
    )?);
    let app = new_app_record("restart-bench", None, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    store.create_app(app.clone()).await?;
    let secret_hash = hash_secret(SECRET);
    let shared_key: Arc<str> = Arc::from(app.app_key.as_str());
    let progress = bar(devices as u64, "registering devices");
    let mut pending: Pending = Vec::new();
    for i in 0..devices {
        let record = DeviceRecord {
            app_key: shared_key.clone(),
            ordinal: i,
            registration_id: rid(i),
            install_id: None,
            secret_hash,
            platform: if i % 3 == 0 {
                Platform::Ios
            } else {
                Platform::Android
            },
            alias: (i % 2 == 0).then(|| format!("user{i}")),
            tags: vec![format!("city{}", i % 50), format!("level{}", i % 7)],
            mobile: None,
            region: None,
            push_tokens: Map::new(),
            apns_production: true,
            info: Map::new(),
            created_ms: 1,
            updated_ms: 1,
        };
        let s = store.clone();
        pending.push(tokio::spawn(async move { s.put_device(record).await }));
        if pending.len() >= 4096 {
            settle(&mut pending).await?;
            progress.set_position(i as u64);
        }
    }
    settle(&mut pending).await?;
    progress.finish_and_clear();
    let progress = bar(pushes as u64, "storing pending pushes");
    let now_ms = now_us() / 1000;
    for m in 0..pushes {
        let target = (m as u64 * 7919 % devices as u64) as u32;
        let mut push = Push::new(
            PlatformSet::all(),
            Audience::Expr(AudienceExpr {
                registration_id: vec![rid(target)],
                ..Default::default()
            }),
        );
        push.msg_id = 1_000_000 + m as u64;
        push.sent_ms = now_ms;
        for platform in Platform::ALL {
            push.content.notifications.insert(
                platform,
                Notification {
                    body: format!("pending {m}"),
                    ..Default::default()
                },
            );
        }
        let audience: RoaringBitmap = [target].into_iter().collect();
        let (s, key) = (store.clone(), app.app_key.clone());
        pending.push(tokio::spawn(async move {
            s.insert_push(&key, &push, &audience, Vec::new()).await
        }));
        if pending.len() >= 4096 {
            settle(&mut pending).await?;
            progress.set_position(m as u64);
        }
    }
    settle(&mut pending).await?;
    progress.finish_and_clear();
    store.close().await?;
    Ok((app.app_key, app.master_secret))
}

type Pending = Vec<tokio::task::JoinHandle<pigeon_store::StoreResult<()>>>;

/// Waits for a batch of spawned writes; many in flight at once share group commits.
async fn settle(pending: &mut Pending) -> anyhow::Result<()> {
    for p in pending.drain(..) {
        p.await??;
    }
    Ok(())
}

pub fn run(args: RestartArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = args.data.clone().unwrap_or_else(|| dir.path().join("data"));
    if data.join("pigeon.db").exists() {
        bail!(
            "{} already holds a database; give an empty directory",
            data.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let (app_key, secret) = rt.block_on(populate(&data, args.devices, args.pushes))?;
    eprintln!("populated in {:.1} s", started.elapsed().as_secs_f64());

    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let exe = std::env::current_exe()?;
    let t0 = Instant::now();
    let guard = Guard(
        Command::new(exe)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("pigeon serve")?,
    );
    let http = reqwest::Client::new();
    let ready = rt.block_on(async {
        loop {
            if let Ok(r) = http.get(format!("{base}/health")).send().await {
                if r.status().is_success() {
                    return Ok(t0.elapsed());
                }
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("pigeon serve did not come up in 120 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })?;
    // A device with a pending push connects and gets it; a new push is accepted.
    let target = (7919u64 % args.devices as u64) as u32;
    let (pending, pushed) = rt.block_on(async {
        let creds = Credentials { registration_id: rid(target), device_secret: SECRET.into() };
        let mut conn = DeviceConnection::connect(&base, &creds).await?;
        let pending = conn.welcome.pending;
        let r = http
            .post(format!("{base}/v3/push"))
            .basic_auth(&app_key, Some(&secret))
            .json(&json!({"platform": "all", "audience": {"registration_id": [rid(target)]}, "notification": {"alert": "after restart"}}))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("push after restart refused: {}", r.text().await?);
        }
        let mut got = 0;
        while got < pending + 1 {
            tokio::time::timeout(Duration::from_secs(10), conn.next_push()).await??;
            got += 1;
        }
        anyhow::Ok((pending, got))
    })?;
    let serving = t0.elapsed();
    let rss = rss_kib(guard.pid())?;
    let reconnect_ms = rt.block_on(async {
        let n = args.reconnects.min(args.devices).max(1);
        let started = Instant::now();
        for i in 0..n {
            let device = (i as u64 * 7919 % args.devices as u64) as u32;
            let creds = Credentials {
                registration_id: rid(device),
                device_secret: SECRET.into(),
            };
            DeviceConnection::connect(&base, &creds)
                .await?
                .close()
                .await?;
        }
        anyhow::Ok(started.elapsed().as_secs_f64() * 1000.0 / n as f64)
    })?;
    let mut table = Table::new(&[
        "devices",
        "pending pushes",
        "listening after ms",
        "connect+push served after ms",
        "RSS MiB",
        "ms per reconnect",
    ]);
    table.row(vec![
        args.devices.to_string(),
        args.pushes.to_string(),
        format!("{}", ready.as_millis()),
        format!("{}", serving.as_millis()),
        format!("{:.0}", rss as f64 / 1024.0),
        format!("{reconnect_ms:.2}"),
    ]);
    eprintln!("a device with {pending} pending pushes got {pushed} (pending + the new one)");
    table.print();
    Ok(())
}
