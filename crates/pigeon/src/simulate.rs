//! `pigeon device simulate`: many devices that register, connect, ack and print pushes.

use clap::Args;
use futures_util::stream::{self, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use pigeon_device::{
    reconnect_after, register, Credentials, DeviceConnection, DeviceError, Frame, Reconnect,
    RegisterRequest,
};
use std::sync::Arc;
use tokio::sync::mpsc;

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    #[arg(long)]
    app_key: String,
    /// How many devices.
    #[arg(long, default_value_t = 1)]
    count: u32,
    /// Platform of every device: android, ios, hmos, quickapp, web.
    #[arg(long, default_value = "android")]
    platform: String,
    /// Comma-separated tags every device carries.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Device i gets the alias <prefix><i>.
    #[arg(long)]
    alias_prefix: Option<String>,
    /// Exit after this many pushes were received in all.
    #[arg(long)]
    exit_after: Option<u64>,
    /// Connections opened at once while connecting.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let args = Arc::new(args);
    let bar = ProgressBar::new(args.count as u64).with_style(
        ProgressStyle::with_template("connecting {bar:40} {pos}/{len} devices ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let connected: Vec<anyhow::Result<(u32, Credentials, DeviceConnection)>> =
        stream::iter(0..args.count)
            .map(|i| {
                let (http, args, bar) = (http.clone(), args.clone(), bar.clone());
                async move {
                    let req = RegisterRequest {
                        app_key: args.app_key.clone(),
                        platform: Some(args.platform.clone()),
                        // Stable per device index, so a rerun reuses the same devices.
                        install_id: Some(format!(
                            "simulated-{}-{i:08}",
                            args.alias_prefix.as_deref().unwrap_or("device")
                        )),
                        alias: args.alias_prefix.as_ref().map(|p| format!("{p}{i}")),
                        tags: (!args.tags.is_empty()).then(|| args.tags.clone()),
                        sdk: Some("pigeon-simulate".into()),
                        ..Default::default()
                    };
                    let creds = register(&http, &args.server, &req).await?;
                    let conn = DeviceConnection::connect(&args.server, &creds).await?;
                    bar.inc(1);
                    Ok((i, creds, conn))
                }
            })
            .buffer_unordered(args.concurrency.max(1))
            .collect()
            .await;
    bar.finish_and_clear();
    let (tx, mut rx) = mpsc::channel::<String>(1024);
    let mut ok = 0;
    for result in connected {
        let (i, creds, conn) = result?;
        ok += 1;
        tokio::spawn(device_loop(i, args.server.clone(), creds, conn, tx.clone()));
    }
    drop(tx);
    eprintln!(
        "{ok} devices connected to {}; waiting for pushes (Ctrl-C to stop; devices reconnect \
         when their connection ends, as the protocol's close-code table says)",
        args.server
    );
    let mut printed = 0u64;
    while let Some(line) = rx.recv().await {
        println!("{line}");
        printed += 1;
        if args.exit_after.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(())
}

/// One simulated device: prints and acks what it gets, and when its connection ends
/// reconnects as the protocol's close-code table says (§6), until the simulator exits.
async fn device_loop(
    index: u32,
    server: String,
    creds: Credentials,
    mut conn: DeviceConnection,
    out: mpsc::Sender<String>,
) {
    loop {
        let ended = match serve_connection(index, &creds, &mut conn, &out).await {
            Some(e) => e,
            None => return, // the simulator is done
        };
        eprintln!("device {index} ({}): {ended}", creds.registration_id);
        let heartbeat_s = conn.welcome.heartbeat_s;
        let mut code = ended.close_code();
        let mut failures = 0;
        conn = loop {
            match reconnect_after(code, heartbeat_s, failures) {
                Reconnect::Never => {
                    eprintln!("device {index}: not reconnecting after close code {code}");
                    return;
                }
                Reconnect::After(delay) => tokio::time::sleep(delay).await,
            }
            match DeviceConnection::connect(&server, &creds).await {
                Ok(c) => {
                    eprintln!("device {index} ({}): reconnected", creds.registration_id);
                    break c;
                }
                Err(e) => {
                    code = e.close_code();
                    failures += 1;
                }
            }
        };
    }
}

/// Serves one connection until it ends (the error it ended with), or until nobody reads
/// the output any more (`None`).
async fn serve_connection(
    index: u32,
    creds: &Credentials,
    conn: &mut DeviceConnection,
    out: &mpsc::Sender<String>,
) -> Option<DeviceError> {
    let mut keepalive = tokio::time::interval(std::time::Duration::from_secs(
        (conn.welcome.heartbeat_s / 2).max(1),
    ));
    keepalive.tick().await;
    loop {
        let frame = tokio::select! {
            f = conn.next_frame() => f,
            _ = keepalive.tick() => {
                if let Err(e) = conn.send(serde_json::json!({"op": "ping"})).await {
                    return Some(e);
                }
                continue;
            }
        };
        match frame {
            Ok(Frame::Push(p)) => {
                if let Err(e) = conn.ack(&[&p.msg_id]).await {
                    return Some(e);
                }
                let line = serde_json::json!({"device": index, "registration_id": creds.registration_id,
                    "msg_id": p.msg_id, "notification": p.notification, "message": p.message});
                if out.send(line.to_string()).await.is_err() {
                    return None;
                }
            }
            Ok(Frame::Other(_)) => {}
            Err(e) => return Some(e),
        }
    }
}
