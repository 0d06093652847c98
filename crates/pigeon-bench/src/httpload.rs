//! HTTP load for the push API: keep-alive HTTP/1.1 connections sending single-device pushes
//! in one of Pigeon's dialects (JPush v3, Getui RestAPI V2, the Getui legacy protocol),
//! either as fast as answers come back or on a fixed schedule (latency then counts from the
//! scheduled time, so a server that falls behind shows it). Each push carries its send time
//! for the device to read: in JPush's extras (`"t":µs`), in the Getui notification's title
//! (`"t:µs"`).

use crate::procs::now_us;
use anyhow::{bail, Context};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Which front door the pushes go through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    /// `POST /v3/push`, Basic auth.
    Jpush,
    /// `POST /v2/{appId}/push/single/cid`, a `token` from `/auth`.
    GetuiV2,
    /// `POST /serviceex` `pushMessageToSingleAction` with a NotificationTemplate `clientData`,
    /// an `authToken` from `connect`.
    GetuiLegacy,
    /// The same without a `requestId` (the SDK always sends one): what the idempotency key
    /// costs.
    GetuiLegacyNoRequestId,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Jpush => "jpush",
            Dialect::GetuiV2 => "getui-v2",
            Dialect::GetuiLegacy => "getui-legacy",
            Dialect::GetuiLegacyNoRequestId => "getui-legacy-no-request-id",
        }
    }

    pub fn parse(s: &str) -> Option<Dialect> {
        [
            Dialect::Jpush,
            Dialect::GetuiV2,
            Dialect::GetuiLegacy,
            Dialect::GetuiLegacyNoRequestId,
        ]
        .into_iter()
        .find(|d| d.name() == s)
    }
}

pub struct Target {
    /// Where the connections go: connection `c` to `addrs[c % addrs.len()]` (a cluster's
    /// nodes, as a load balancer would spread them).
    pub addrs: Vec<SocketAddr>,
    pub app_key: String,
    /// Base64 of `app_key:master_secret`.
    pub auth: String,
    /// A RestAPI V2 token.
    pub v2_token: String,
    /// A legacy protocol `authToken`.
    pub legacy_token: String,
    pub rids: Vec<String>,
}

/// A NotificationTemplate's `clientData` as `gt-push-sdk` builds it (action chain of
/// getui.md A.6), titled with the send time.
fn legacy_client_data(title: &str) -> String {
    use base64::Engine as _;
    use pigeon_getui::legacy::proto::{ActionChain, AppStartUp, Transparent};
    use prost::Message as _;
    let node = |action_id, kind, next: Option<i32>| ActionChain {
        action_id,
        r#type: kind,
        next,
        ..Default::default()
    };
    let mut notification = node(10000, 1, Some(10010));
    notification.title = Some(title.to_string());
    notification.text = Some("b".into());
    notification.logo = Some(String::new());
    notification.clearable = Some(true);
    notification.ring = Some(true);
    notification.buzz = Some(true);
    let mut start = node(10030, 3, Some(100));
    start.appid = Some(String::new());
    start.appstartupid = Some(AppStartUp::default());
    start.autostart = Some(false);
    start.failed_action = Some(100);
    let t = Transparent {
        action: "pushmessage".into(),
        action_chain: vec![
            node(1, 0, Some(10000)),
            notification,
            node(10010, 0, Some(10030)),
            start,
            node(100, 7, None),
        ],
        condition: vec![String::new()],
        template_id: Some(0),
        ..Default::default()
    };
    base64::engine::general_purpose::STANDARD.encode(t.encode_to_vec())
}

/// The request of one push of `dialect` to `rid`, sent at `t_us`; `seq` makes request ids
/// unique.
fn request(target: &Target, dialect: Dialect, rid: &str, t_us: u64, seq: &str) -> String {
    let (path, auth, body) = match dialect {
        Dialect::Jpush => (
            "/v3/push".to_string(),
            format!("Authorization: Basic {}", target.auth),
            format!(
                r#"{{"platform":"all","audience":{{"registration_id":["{rid}"]}},"notification":{{"alert":"b","android":{{"extras":{{"t":{t_us}}}}}}}}}"#
            ),
        ),
        Dialect::GetuiV2 => (
            format!("/v2/{}/push/single/cid", target.app_key),
            format!("token: {}", target.v2_token),
            format!(
                r#"{{"request_id":"{seq}","audience":{{"cid":["{rid}"]}},"push_message":{{"notification":{{"title":"t:{t_us}","body":"b","click_type":"startapp"}}}}}}"#
            ),
        ),
        Dialect::GetuiLegacy | Dialect::GetuiLegacyNoRequestId => (
            "/serviceex".to_string(),
            "Gt-Action: pushMessageToSingleAction".to_string(),
            json!({"action": "pushMessageToSingleAction", "appkey": target.app_key,
                "version": "4.1.1.2", "authToken": target.legacy_token,
                "requestId": if dialect == Dialect::GetuiLegacy { seq } else { "" },
                "clientData": legacy_client_data(&format!("t:{t_us}")),
                "transmissionContent": "", "isOffline": true, "offlineExpireTime": 3_600_000,
                "pushNetWorkType": 0, "appId": target.app_key, "clientId": rid, "alias": "",
                "type": 2, "pushType": "NotifyMsg"})
            .to_string(),
        ),
    };
    format!(
        "POST {path} HTTP/1.1\r\nHost: pigeon\r\n{auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Whether an answer body says the push was taken: Getui's doors answer errors with 200 too.
fn accepted(dialect: Dialect, body: &[u8]) -> bool {
    let body = String::from_utf8_lossy(body);
    match dialect {
        Dialect::Jpush => true,
        Dialect::GetuiV2 => body.contains(r#""code":0"#),
        Dialect::GetuiLegacy | Dialect::GetuiLegacyNoRequestId => body.contains(r#""result":"ok""#),
    }
}

/// What one run did.
#[derive(Default)]
pub struct Outcome {
    pub ok: u64,
    pub errors: u64,
    pub latencies_us: Vec<u64>,
    /// When asked for: each accepted push's msg_id (JPush answers only) and when its answer
    /// came (µs since the epoch).
    pub accepted: Vec<(u64, u64)>,
}

/// What the server answered to one push.
struct Answer {
    accepted: bool,
    /// The msg_id of a JPush answer.
    msg_id: Option<u64>,
}

/// One request and its answer on a keep-alive connection.
async fn push_once(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    (target, dialect): (&Target, Dialect),
    rid: &str,
    t_us: u64,
    seq: &str,
) -> anyhow::Result<Answer> {
    let req = request(target, dialect, rid, t_us, seq);
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
            let body = &buf[head_end + 4..head_end + 4 + len];
            let msg_id = std::str::from_utf8(body)
                .ok()
                .and_then(|b| crate::wsclient::json_field(b, "msg_id"))
                .and_then(|id| id.parse().ok());
            return Ok(Answer {
                accepted: head.starts_with("HTTP/1.1 200") && accepted(dialect, body),
                msg_id,
            });
        }
    }
}

/// Runs `connections` connections for `secs`; `rate` pushes/s in all, or 0 for as fast as
/// possible. With `record`, the accepted pushes' msg_ids are kept ([`Outcome::accepted`]).
pub async fn run(
    target: Arc<Target>,
    dialect: Dialect,
    source: IpAddr,
    connections: usize,
    (rate, secs): (u64, u64),
    record: bool,
) -> anyhow::Result<Outcome> {
    if target.addrs.is_empty() || target.rids.is_empty() {
        bail!("no server or no registration id to push to");
    }
    // One anchor for the schedule, taken on both clocks at once, far enough ahead for every
    // connection to be open: latency is counted from the scheduled time.
    let start = Instant::now() + Duration::from_millis(300);
    let start_us = now_us() + 300_000;
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let addr = target.addrs[c % target.addrs.len()];
            let mut s = crate::procs::connect_from(source, addr).await?;
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
                let seq = format!("b{}{start_us:x}c{c:x}k{k:x}", source_tag(source));
                match push_once(&mut s, &mut buf, (&target, dialect), rid, sent_us, &seq).await {
                    Ok(Answer {
                        accepted: true,
                        msg_id,
                    }) => {
                        out.ok += 1;
                        let answered = now_us();
                        out.latencies_us.push(answered.saturating_sub(sent_us));
                        if let (true, Some(id)) = (record, msg_id) {
                            out.accepted.push((id, answered));
                        }
                    }
                    Ok(Answer {
                        accepted: false, ..
                    }) => out.errors += 1,
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
        total.accepted.extend(o.accepted);
    }
    Ok(total)
}

/// The last byte of the agent's source address with its process id, in hex: with the run's
/// start time, request ids stay unique across agents and runs (and within Getui's 32
/// characters).
fn source_tag(source: IpAddr) -> String {
    let last = match source {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    };
    format!("{last:x}{:x}", std::process::id())
}

pub fn percentiles(mut v: Vec<u64>) -> serde_json::Value {
    v.sort_unstable();
    let p = |q: f64| {
        v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
            .copied()
    };
    json!({"count": v.len(), "p50_us": p(0.5), "p99_us": p(0.99), "max_us": v.last()})
}
