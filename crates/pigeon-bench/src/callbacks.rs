//! `pigeon bench callbacks`: what callbacks cost and how fast they flow. The same broadcasts
//! as `bench fanout`, once on a server without callbacks and once on a server with an endpoint
//! that wants `Push.Event`; a local receiver counts the delivered events (stage 2) and the
//! time from the first broadcast to the last of them.

use crate::fanout::{pigeon_with, Outcome};
use crate::procs::now_us;
use crate::table::Table;
use anyhow::{bail, Context};
use clap::Args;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct CallbacksArgs {
    /// Connected devices.
    #[arg(long, default_value_t = 19_500)]
    pub devices: usize,
    /// Broadcasts to all of them.
    #[arg(long, default_value_t = 5)]
    pub broadcasts: usize,
    /// Agent processes holding the device connections.
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
}

/// What the receiver has seen.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    delivered: AtomicU64,
    events: AtomicU64,
    first_delivered_us: AtomicU64,
    last_delivered_us: AtomicU64,
}

/// A bare HTTP/1.1 keep-alive receiver that answers every batch with OK.
fn receive(stream: TcpStream, counts: Arc<Counts>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if first {
                first = false;
                continue;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        let events = v["Events"].as_array().map(Vec::len).unwrap_or(0) as u64;
        let delivered = v["Events"]
            .as_array()
            .map(|e| e.iter().filter(|e| e["PushStage"] == 2).count())
            .unwrap_or(0) as u64;
        counts.requests.fetch_add(1, Ordering::Relaxed);
        counts.events.fetch_add(events, Ordering::Relaxed);
        if delivered > 0 {
            counts.delivered.fetch_add(delivered, Ordering::Relaxed);
            let now = now_us();
            let _ = counts.first_delivered_us.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            counts.last_delivered_us.store(now, Ordering::Relaxed);
        }
        // One write: a head and a body written apart meet Nagle's algorithm and the
        // sender's delayed ack, and every answer would wait ~40 ms.
        let answer = r#"{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        out.write_all(response.as_bytes())?;
    }
}

fn start_receiver(counts: Arc<Counts>) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/events", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counts = counts.clone();
            std::thread::spawn(move || {
                let _ = receive(stream, counts);
            });
        }
    });
    Ok(url)
}

pub fn run(args: CallbacksArgs) -> anyhow::Result<()> {
    let (n, rounds) = (args.devices, args.broadcasts);
    eprintln!("== {n} devices, {rounds} broadcasts, no callbacks");
    let plain = pigeon_with(n, args.agents, rounds, &[], &|_| Ok(()), &|_| Ok(()))?;
    eprintln!("   rounds ms: {:?}", plain.rounds_ms);

    let counts = Arc::new(Counts::default());
    let url = start_receiver(counts.clone())?;
    eprintln!("== the same with a Push.Event endpoint");
    let env = [("PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS", "true")];
    let add = |server: &crate::procs::PigeonServer| -> anyhow::Result<()> {
        let out = Command::new(std::env::current_exe()?)
            .args([
                "app",
                "callback",
                "add",
                "--app-key",
                &server.app_key,
                "--url",
                &url,
            ])
            .args(["--commands", "Push.Event", "--data"])
            .arg(&server.data)
            .output()
            .context("pigeon app callback add")?;
        if !out.status.success() {
            bail!("callback add: {}", String::from_utf8_lossy(&out.stderr));
        }
        // A running server picks endpoints up within a second.
        std::thread::sleep(Duration::from_millis(1500));
        Ok(())
    };
    let expected = (n * rounds) as u64;
    let wait_for_events = |_: &Outcome| -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts.delivered.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    let with = pigeon_with(n, args.agents, rounds, &env, &|s| add(s), &wait_for_events)?;
    let got = counts.delivered.load(Ordering::Relaxed);
    let last = counts.last_delivered_us.load(Ordering::Relaxed);
    let first = counts.first_delivered_us.load(Ordering::Relaxed);
    let delivered_after =
        (got >= expected).then(|| last.saturating_sub(with.first_start_us) as f64 / 1e6);
    let flowing = (got >= expected && last > first).then(|| (last - first) as f64 / 1e6);

    let mut table = Table::new(&[
        "devices",
        "broadcasts",
        "fan-out ms, no callbacks",
        "fan-out ms, Push.Event endpoint",
        "fan-out cost",
        "delivered events received",
        "events/s (first broadcast → last delivered event)",
        "events/s (first → last delivered event received)",
        "requests",
    ]);
    table.row(vec![
        n.to_string(),
        rounds.to_string(),
        format!("{:.1}", plain.median_ms()),
        format!("{:.1}", with.median_ms()),
        format!(
            "{:+.0}%",
            (with.median_ms() / plain.median_ms() - 1.0) * 100.0
        ),
        format!("{got} of {expected}"),
        delivered_after
            .map(|s| format!("{:.0}", expected as f64 / s))
            .unwrap_or_else(|| "not all arrived".into()),
        flowing
            .map(|s| format!("{:.0}", expected as f64 / s))
            .unwrap_or_else(|| "not all arrived".into()),
        counts.requests.load(Ordering::Relaxed).to_string(),
    ]);
    table.print();
    Ok(())
}
