//! `pigeon bench callbacks`: what callbacks cost and how fast they flow. The same broadcasts
//! as `bench fanout`, once on a server without callbacks and once on a server with an endpoint
//! that wants `Push.Event`; a local receiver counts the delivered events (stage 2) and the
//! time from the first broadcast to the last of them.

use crate::fanout::{basic_auth, pigeon_then_burst, pigeon_with, Outcome};
use crate::procs::now_us;
use crate::table::Table;
use anyhow::Context;
use clap::Args;
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// Instead: the receiver is down (connections refused) for this many seconds from before
    /// the broadcasts on; then it comes back and every event must arrive, each once.
    #[arg(long, default_value_t = 0)]
    pub outage_secs: u64,
}

/// What the receiver has seen.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    delivered: AtomicU64,
    events: AtomicU64,
    first_delivered_us: AtomicU64,
    last_delivered_us: AtomicU64,
    /// When the last delivered event of the broadcasts fired at once arrived.
    burst_last_us: AtomicU64,
    /// Every EventId seen, and how many arrived again.
    seen: Mutex<HashSet<String>>,
    duplicates: AtomicU64,
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
        if let Some(events) = v["Events"].as_array() {
            let mut seen = counts.seen.lock().unwrap_or_else(|e| e.into_inner());
            for e in events {
                if !seen.insert(e["EventId"].as_str().unwrap_or_default().to_string()) {
                    counts.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
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
    start_receiver_on(counts, "127.0.0.1:0")
}

fn start_receiver_on(counts: Arc<Counts>, addr: &str) -> anyhow::Result<String> {
    let listener = TcpListener::bind(addr).with_context(|| format!("receiver on {addr}"))?;
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

/// The receiver is down while the broadcasts happen and for `outage_secs` in all, with the
/// server's default retry delays; then it comes back on the same port. Every `Push.Event`
/// (sent and delivered, per device per broadcast) must arrive; duplicates are counted.
fn outage(args: &CallbacksArgs) -> anyhow::Result<()> {
    let (n, rounds) = (args.devices, args.broadcasts);
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
    let url = format!("http://{addr}/events");
    let counts = Arc::new(Counts::default());
    let down_since = Mutex::new(Instant::now());
    let expected = (2 * n * rounds) as u64;
    let came_back: Mutex<Option<(f64, Option<f64>)>> = Mutex::new(None);
    let env = [("PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS", "true")];
    eprintln!(
        "== {n} devices, {rounds} broadcasts, receiver down for {} s",
        args.outage_secs
    );
    let setup = |server: &crate::procs::PigeonServer| -> anyhow::Result<()> {
        server.add_endpoint(&url, "Push.Event")?;
        *down_since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    };
    let after = |_: &Outcome| -> anyhow::Result<()> {
        let since = *down_since.lock().unwrap_or_else(|e| e.into_inner());
        let up_at = since + Duration::from_secs(args.outage_secs);
        let bar = indicatif::ProgressBar::new(args.outage_secs);
        while Instant::now() < up_at {
            bar.set_position(since.elapsed().as_secs());
            std::thread::sleep(Duration::from_millis(500));
        }
        bar.finish_and_clear();
        start_receiver_on(counts.clone(), &addr)?;
        let up = Instant::now();
        eprintln!(
            "   receiver up after {:.0} s down",
            since.elapsed().as_secs_f64()
        );
        // Longer than the retry delay that may be pending (up to 2 h by default past 1 h).
        let deadline = up + Duration::from_secs(args.outage_secs.max(60) * 3 / 2 + 300);
        let unique = || counts.seen.lock().map(|s| s.len()).unwrap_or(0) as u64;
        while unique() < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let all_in = (unique() >= expected).then(|| up.elapsed().as_secs_f64());
        std::thread::sleep(Duration::from_secs(3)); // anything sent twice shows up too
        *came_back.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((since.elapsed().as_secs_f64(), all_in));
        Ok(())
    };
    pigeon_with(n, args.agents, rounds, &env, &setup, &after)?;
    let unique = counts.seen.lock().map(|s| s.len()).unwrap_or(0) as u64;
    let duplicates = counts.duplicates.load(Ordering::Relaxed);
    let (_, all_in) = came_back
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or_default();
    let mut table = Table::new(&[
        "devices",
        "broadcasts",
        "receiver down s",
        "events expected",
        "distinct events received",
        "lost",
        "duplicates",
        "all in after receiver up, s",
    ]);
    table.row(vec![
        n.to_string(),
        rounds.to_string(),
        args.outage_secs.to_string(),
        expected.to_string(),
        unique.to_string(),
        expected.saturating_sub(unique).to_string(),
        format!(
            "{duplicates} ({:.2}%)",
            duplicates as f64 * 100.0 / unique.max(1) as f64
        ),
        all_in
            .map(|s| format!("{s:.1}"))
            .unwrap_or_else(|| "not all arrived".into()),
    ]);
    table.print();
    Ok(())
}

pub fn run(args: CallbacksArgs) -> anyhow::Result<()> {
    if args.outage_secs > 0 {
        return outage(&args);
    }
    let (n, rounds) = (args.devices, args.broadcasts);
    eprintln!("== {n} devices, {rounds} broadcasts, no callbacks");
    let plain = pigeon_then_burst(
        n,
        args.agents,
        rounds,
        &[],
        &|_| Ok(()),
        &|_| Ok(()),
        Some(&|_| Ok(())),
    )?;
    eprintln!("   rounds ms: {:?}", plain.rounds_ms);

    let counts = Arc::new(Counts::default());
    let url = start_receiver(counts.clone())?;
    eprintln!("== the same with a Push.Event endpoint");
    let env = [("PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS", "true")];
    let target: Mutex<Option<(u16, String)>> = Mutex::new(None);
    let add = |server: &crate::procs::PigeonServer| -> anyhow::Result<()> {
        let port: u16 = server.base.rsplit(':').next().unwrap_or_default().parse()?;
        *target.lock().unwrap_or_else(|e| e.into_inner()) = Some((port, basic_auth(server)));
        server.add_endpoint(&url, "Push.Event")
    };
    let expected = (n * rounds) as u64;
    let wait_for = |count: u64| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts.delivered.load(Ordering::Relaxed) < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Then the same number of broadcasts fired at once, not paced by the rounds: the paced
    // events are counted, the counters reset, and the burst's events waited for.
    let paced: Mutex<(u64, u64)> = Mutex::new((0, 0));
    let burst_got = AtomicU64::new(0);
    let wait_for_paced = |_: &Outcome| -> anyhow::Result<()> {
        wait_for(expected);
        *paced.lock().unwrap_or_else(|e| e.into_inner()) = (
            counts.delivered.swap(0, Ordering::Relaxed),
            counts.last_delivered_us.swap(0, Ordering::Relaxed),
        );
        Ok(())
    };
    let wait_for_burst = |_: &Outcome| -> anyhow::Result<()> {
        wait_for(expected);
        let (got, last) = *paced.lock().unwrap_or_else(|e| e.into_inner());
        burst_got.store(
            counts.delivered.swap(got, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let burst_last = counts.last_delivered_us.swap(last, Ordering::Relaxed);
        counts.burst_last_us.store(burst_last, Ordering::Relaxed);
        Ok(())
    };
    let with = pigeon_then_burst(
        n,
        args.agents,
        rounds,
        &env,
        &add,
        &wait_for_paced,
        Some(&wait_for_burst),
    )?;
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
        "broadcasts took s (first request → last device)",
        "last delivered event after the last device, ms",
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
        format!(
            "{:.2}",
            with.last_end_us.saturating_sub(with.first_start_us) as f64 / 1e6
        ),
        if got >= expected {
            format!(
                "{:.0}",
                last.saturating_sub(with.last_end_us) as f64 / 1000.0
            )
        } else {
            "-".into()
        },
        counts.requests.load(Ordering::Relaxed).to_string(),
    ]);
    table.print();

    let mut table = Table::new(&[
        "devices",
        "broadcasts fired at once",
        "last device, s, no callbacks",
        "last device, s, Push.Event endpoint",
        "delivered events received",
        "s from the first request to the last delivered event",
        "events/s",
        "last delivered event after the last device, ms",
    ]);
    let span = |o: &Outcome| o.burst.map(|(first, last)| last.saturating_sub(first));
    let got = burst_got.load(Ordering::Relaxed);
    let last_event = counts.burst_last_us.load(Ordering::Relaxed);
    let (first, last_device) = with.burst.unwrap_or_default();
    let secs = last_event.saturating_sub(first) as f64 / 1e6;
    let all_in = got >= expected && secs > 0.0;
    table.row(vec![
        n.to_string(),
        rounds.to_string(),
        format!("{:.2}", span(&plain).unwrap_or_default() as f64 / 1e6),
        format!("{:.2}", span(&with).unwrap_or_default() as f64 / 1e6),
        format!("{got} of {expected}"),
        format!("{secs:.2}"),
        if all_in {
            format!("{:.0}", expected as f64 / secs)
        } else {
            "not all arrived".into()
        },
        if all_in {
            format!(
                "{:.0}",
                last_event.saturating_sub(last_device) as f64 / 1000.0
            )
        } else {
            "-".into()
        },
    ]);
    table.print();
    Ok(())
}
