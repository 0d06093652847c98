//! HTTP load for the push API: keep-alive HTTP/1.1 connections sending single-device pushes,
//! either as fast as answers come back or on a fixed schedule (latency then counts from the
//! scheduled time, so a server that falls behind shows it).

use crate::procs::now_us;
use anyhow::{bail, Context};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

pub struct Target {
    pub addr: SocketAddr,
    pub auth: String,
    pub rids: Vec<String>,
}

/// What one run did.
#[derive(Default)]
pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub latencies_us: Vec<u64>,
}

/// One request and its answer on a keep-alive connection; true if 200.
async fn push_once(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    target: &Target,
    rid: &str,
    t_us: u64,
) -> anyhow::Result<bool> {
    let body = format!(
        r#"{{"platform":"all","audience":{{"registration_id":["{rid}"]}},"notification":{{"alert":"b","android":{{"extras":{{"t":{t_us}}}}}}}}}"#
    );
    let req = format!(
        "POST /v3/push HTTP/1.1\r\nHost: pigeon\r\nAuthorization: Basic {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        target.auth,
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("server closed the connection");
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = std::str::from_utf8(&buf[..head_end]).context("response head")?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            })
            .and_then(|(_, v)| v.trim().parse().ok())
            .context("no content-length")?;
        if buf.len() >= head_end + 4 + len {
            return Ok(head.starts_with("HTTP/1.1 200"));
        }
    }
}

/// Runs `connections` connections for `secs`; `rate` pushes/s in all, or 0 for as fast as possible.
pub async fn run(
    target: Arc<Target>,
    source: IpAddr,
    connections: usize,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Outcome> {
    // One anchor for the schedule, taken on both clocks at once, far enough ahead for every
    // connection to be open: latency is counted from the scheduled time.
    let start = Instant::now() + Duration::from_millis(300);
    let start_us = now_us() + 300_000;
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = crate::procs::connect_from(source, target.addr).await?;
            let mut out = Outcome::default();
            let mut buf = Vec::with_capacity(1024);
            let interval =
                (rate > 0).then(|| Duration::from_secs_f64(connections as f64 / rate as f64));
            let mut k: u64 = 0;
            loop {
                let due = match interval {
                    Some(iv) => {
                        start + iv.mul_f64(k as f64) + iv.mul_f64(c as f64 / connections as f64)
                    }
                    None => Instant::now().max(start),
                };
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let sent_us = match interval {
                    Some(iv) => {
                        start_us
                            + (iv.as_micros() as u64) * k
                            + iv.as_micros() as u64 * c as u64 / connections as u64
                    }
                    None => now_us(),
                };
                let rid = &target.rids[(k as usize * connections + c) % target.rids.len()];
                match push_once(&mut s, &mut buf, &target, rid, sent_us).await {
                    Ok(true) => {
                        out.ok += 1;
                        out.latencies_us.push(now_us().saturating_sub(sent_us));
                    }
                    Ok(false) => out.errors += 1,
                    Err(_) => {
                        out.errors += 1;
                        break;
                    }
                }
                k += 1;
            }
            anyhow::Ok(out)
        }));
    }
    let mut total = Outcome::default();
    for t in tasks {
        let o = t.await??;
        total.ok += o.ok;
        total.errors += o.errors;
        total.latencies_us.extend(o.latencies_us);
    }
    Ok(total)
}

pub fn percentiles(mut v: Vec<u64>) -> serde_json::Value {
    v.sort_unstable();
    let p = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
    };
    json!({"count": v.len(), "p50_us": p(0.5), "p99_us": p(0.99), "max_us": v.last()})
}
