//! `pigeon serve`: one listener for the JPush v3 API, device registration and the device
//! WebSocket, on embedded storage in a data directory.

use crate::config::Config;
use anyhow::Context;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use pigeon_core::RouteDoc;
use pigeon_engine::Engine;
use pigeon_gateway::GatewayConfig;
use pigeon_store::Synchronous;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    // Before anything records (the storage writer does from its first commit).
    pigeon_telemetry::install().context("starting the metrics recorder")?;
    // The certificate first: a wrong file is told at once, before any state is loaded.
    let tls = match cfg.tls.files()? {
        Some(files) => Some(Arc::new(crate::tls::Tls::load(files)?)),
        None => None,
    };
    let fd_limit = raise_fd_limit();
    spawn_heap_trimmer();
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("creating the data directory {}", cfg.data.display()))?;
    let _lock = lock_data_dir(&cfg.data)?;
    let sync = if cfg.sqlite_synchronous == "normal" {
        Synchronous::Normal
    } else {
        Synchronous::Full
    };
    let node_id = crate::storage::node_id(&cfg.cluster);
    let store = crate::storage::open(&cfg.data, &cfg.cluster, sync, &node_id).await?;
    let started = std::time::Instant::now();
    let engine = Engine::start(store).await.context("loading stored state")?;
    // On PostgreSQL the node is one of a cluster (of one without NATS): leases, the change
    // feed and presence run; NATS only makes what other nodes learn faster.
    if cfg.cluster.postgres.is_some() {
        let bus: Arc<dyn pigeon_engine::cluster::Bus> = match &cfg.cluster.nats {
            Some(url) => pigeon_bus_nats::NatsBus::connect(url, &node_id, Arc::downgrade(&engine))
                .await
                .context("connecting to NATS")?,
            None => Arc::new(pigeon_engine::cluster::NoBus),
        };
        engine
            .join_cluster(node_id.clone(), bus)
            .await
            .context("joining the cluster")?;
    }
    engine.set_default_rate_limit(cfg.rate_limit_per_minute);
    engine.set_rate_window(Duration::from_secs(cfg.rate_limit_window_s));
    engine.set_expired_grace(Duration::from_millis(cfg.expired_grace_ms));
    engine.set_recall_window(Duration::from_secs(cfg.recall_window_s));
    engine.set_pacing_minute(Duration::from_millis(cfg.pacing_minute_ms));
    engine.set_max_geofences_per_app(cfg.geofences.max_per_app);
    engine.set_geofence_second(Duration::from_millis(cfg.geofences.second_ms));
    engine.set_private_networks(cfg.private_networks());
    let devices: u64 = engine.apps().iter().map(|a| a.device_count()).sum();
    tracing::info!(
        apps = engine.apps().len(),
        devices,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "state loaded"
    );

    pigeon_callbacks::start(
        engine.clone(),
        pigeon_callbacks::Config {
            batch_wait: Duration::from_millis(cfg.callbacks.batch_wait_ms),
            retry_first: Duration::from_millis(cfg.callbacks.retry_first_ms.max(1)),
            dead_after: Duration::from_secs(cfg.callbacks.dead_after_s),
            disable_after: Duration::from_secs(cfg.callbacks.disable_after_s),
            allow_private_networks: cfg.callbacks.allow_private_networks,
        },
    )
    .context("starting the callback dispatcher")?;
    pigeon_sms::start(engine.clone(), cfg.sms.clone()).context("starting the SMS fallback")?;
    pigeon_vendors::router::start(
        &engine,
        pigeon_vendors::router::RouterConfig {
            webpush_allow_private_networks: cfg.webpush_allow_private_networks,
            vendors_allow_private_networks: cfg.vendors_allow_private_networks,
        },
    );
    let gateway = GatewayConfig {
        heartbeat_s: cfg.heartbeat_s,
        hello_timeout: Duration::from_millis(cfg.hello_timeout_ms),
        device_rate_per_s: cfg.device_rate_per_s,
        device_rate_burst: cfg.device_rate_burst,
    };
    let mut app = Router::new()
        .merge(pigeon_admin::router(engine.clone()))
        // The web console: its own routes under /console, not in /openapi.json.
        .merge(pigeon_console::router(
            engine.clone(),
            pigeon_console::ConsoleConfig {
                operator_token: cfg.console_token.clone(),
                secure_cookie: tls.is_some(),
            },
        ))
        .merge(
            pigeon_jpush::router(engine.clone())
                .await
                .context("loading schedules")?,
        )
        .merge(pigeon_getui::v2_router(engine.clone()))
        .merge(pigeon_gateway::router(engine.clone(), gateway))
        .merge(pigeon_getui::legacy_router(
            engine.clone(),
            cfg.public_url.clone(),
        ))
        .route(
            "/openapi.json",
            get(|| async { pigeon_jpush::json_response(StatusCode::OK, &openapi_document()) }),
        )
        .route("/health", get(health).with_state(engine.clone()));
    // `/metrics` on the main listener unless it has one of its own.
    if cfg.metrics_listen.is_none() {
        app = app.route("/metrics", get(crate::http::metrics));
    }
    let app = app
        .route_layer(axum::middleware::from_fn(crate::http::keep_route))
        .layer(axum::middleware::from_fn_with_state(
            engine.clone(),
            unavailable_without_store,
        ));

    let listener = bind(cfg.listen).with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let limits = http_limits(&cfg, fd_limit);
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some(tls) = &tls {
        reload_on_hangup(tls.clone())?;
    }
    tracing::info!(
        data = %cfg.data.display(),
        max_connections = limits.max_connections,
        max_pending = limits.max_pending,
        max_devices = limits.max_devices,
        header_timeout_ms = cfg.header_timeout_ms,
        body_timeout_ms = cfg.body_timeout_ms,
        "pigeon listening on {scheme}://{addr}"
    );

    let shutdown_engine = engine.clone();
    // Requests in flight may take as long as their body may (and then some to answer).
    let drain = Duration::from_millis(cfg.body_timeout_ms + cfg.shutdown_grace_ms);
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let metrics_server = match cfg.metrics_listen {
        Some(at) => Some(serve_metrics(at, &engine, &cfg, stop, drain)?),
        None => None,
    };
    crate::http::serve(
        listener,
        app,
        engine.clone(),
        limits,
        tls.as_ref().map(|t| t.acceptor.clone()),
        async move {
            shutdown_signal().await;
            let _ = stopping.send(true);
            tracing::info!("shutting down: closing device connections with 1001");
            shutdown_engine.close_all(1001, "server shutting down");
        },
        drain,
    )
    .await;
    if let Some(server) = metrics_server {
        let _ = server.await;
    }

    let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.shutdown_grace_ms);
    while engine.apps().iter().any(|a| a.online_count() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.leave_cluster().await;
    engine.flush().await.context("flushing storage")?;
    tracing::info!("stopped");
    Ok(())
}

/// `GET /metrics` alone on a listener of its own (`metrics_listen`), under the same accept
/// loop and timeouts as the main one, with a small connection cap; it stops with the server.
fn serve_metrics(
    at: std::net::SocketAddr,
    engine: &Arc<Engine>,
    cfg: &Config,
    mut stop: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = bind(at).with_context(|| format!("listening on {at} (metrics_listen)"))?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    let router = Router::new()
        .route("/metrics", get(crate::http::metrics))
        .route_layer(axum::middleware::from_fn(crate::http::keep_route));
    let limits = crate::http::HttpLimits {
        header_timeout: Duration::from_millis(cfg.header_timeout_ms),
        body_timeout: Duration::from_millis(cfg.body_timeout_ms),
        max_connections: 64,
        max_pending: 32,
        max_devices: 1,
    };
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    // Plain HTTP even when the main listener serves HTTPS: it is meant for a scraper on a
    // private network (docs: README, "Metrics").
    Ok(tokio::spawn(crate::http::serve(
        listener,
        router,
        engine.clone(),
        limits,
        None,
        stopped,
        drain,
    )))
}

/// `GET /health`: 200 when the node can serve everything, 503 when it lost PostgreSQL or
/// NATS (a load balancer then sends calls elsewhere; device connections stay).
async fn health(
    axum::extract::State(engine): axum::extract::State<Arc<Engine>>,
) -> axum::response::Response {
    let Some(cluster) = engine.cluster() else {
        return pigeon_jpush::json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}));
    };
    let word = |ok: bool| if ok { "ok" } else { "lost" };
    let ready = cluster.ready();
    let body = serde_json::json!({
        "status": if ready { "ok" } else { "unavailable" },
        "node": cluster.node_id,
        "postgres": word(cluster.store_ok()),
        "nats": if cluster.has_bus() { word(cluster.bus_ok()) } else { "off" },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    pigeon_jpush::json_response(status, &body)
}

/// While the node has lost its database, API calls are answered 503 with code 1030 at once
/// (they would fail or hang on the store); `/health` and device connections go on.
async fn unavailable_without_store(
    axum::extract::State(engine): axum::extract::State<Arc<Engine>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let lost = engine.cluster().is_some_and(|c| !c.store_ok());
    let path = request.uri().path();
    if lost
        && path != "/health"
        && path != "/metrics"
        && !pigeon_gateway::is_device_connection(path)
    {
        let message = "the node lost its database; retry, or call another node";
        let body = if path.starts_with("/v2/") {
            serde_json::json!({"code": 1030, "msg": message, "data": {}})
        } else {
            pigeon_core::error_json(1030, message)
        };
        return pigeon_jpush::json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
    }
    next.run(request).await
}

/// The listen backlog: tokio's default (1024) overflows under a connection flood, and every
/// dropped SYN costs a real client a retransmit (1 s, then 3 s); the kernel caps it at
/// `net.core.somaxconn` (4096 by default).
const LISTEN_BACKLOG: u32 = 4_096;

fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As TcpListener::bind does: a restart may bind while old connections are in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Descriptors kept free for what is not a client connection: the database, vendor and
/// callback sockets, files.
const FD_HEADROOM: u64 = 1_000;
/// The default cap on pending connections (no request head yet); it is also at most half
/// of all connections.
const DEFAULT_MAX_PENDING: usize = 4_096;

/// The HTTP layer's limits: configured, or derived from the open-file limit so that a crowd
/// of connections can never take the last descriptors the server needs.
fn http_limits(cfg: &Config, fd_limit: Option<u64>) -> crate::http::HttpLimits {
    let max_connections = if cfg.max_connections > 0 {
        cfg.max_connections
    } else {
        let soft = fd_limit.unwrap_or(1_024);
        let headroom = FD_HEADROOM.min(soft / 4);
        usize::try_from(soft - headroom)
            .unwrap_or(usize::MAX)
            .max(1)
    };
    let max_pending = if cfg.max_pending_connections > 0 {
        cfg.max_pending_connections
    } else {
        DEFAULT_MAX_PENDING.min(max_connections / 2).max(1)
    };
    // A tenth of the connections (at most 1,000, at least one) stays free of devices for
    // the API: the app's backend can push while every device slot is taken.
    let api_headroom = (max_connections / 10).clamp(1, 1_000);
    crate::http::HttpLimits {
        header_timeout: Duration::from_millis(cfg.header_timeout_ms),
        body_timeout: Duration::from_millis(cfg.body_timeout_ms),
        max_connections,
        max_pending,
        max_devices: max_connections.saturating_sub(api_headroom).max(1),
    }
}

/// Pigeon's own operational routes, for the OpenAPI document.
const OPS_ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "get",
        path: "/health",
        tag: "Operations",
        summary: "Liveness: {\"status\":\"ok\"}",
        query: &[],
        body: false,
        schema: None,
        answer: None,
    },
    RouteDoc {
        method: "get",
        path: "/metrics",
        tag: "Operations",
        summary: "Metrics in the Prometheus text format (on `metrics_listen` instead, when set)",
        query: &[],
        body: false,
        schema: None,
        answer: None,
    },
    RouteDoc {
        method: "get",
        path: "/openapi.json",
        tag: "Operations",
        summary: "This document",
        query: &[],
        body: false,
        schema: None,
        answer: None,
    },
];

/// The OpenAPI document of every route this server mounts.
fn openapi_document() -> serde_json::Value {
    let routes: Vec<RouteDoc> = [
        pigeon_jpush::ROUTES,
        pigeon_admin::ROUTES,
        pigeon_gateway::ROUTES,
        OPS_ROUTES,
        pigeon_getui::legacy::ROUTES,
    ]
    .concat();
    let mut doc = pigeon_jpush::openapi::document(&routes, pigeon_gateway::schemas());
    pigeon_admin::openapi::document_uploads(&mut doc);
    for path in ["/health", "/metrics", "/openapi.json"] {
        doc["paths"][path]["get"]["security"] = serde_json::json!([]);
    }
    doc
}

/// `SIGHUP` reads the certificate and key again (new connections get the new pair; a bad
/// pair is logged and the old one kept).
fn reload_on_hangup(tls: Arc<crate::tls::Tls>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!(cert = %tls.files.cert.display(), "SIGHUP: reloading the TLS certificate and key");
                let tls = tls.clone();
                // File reads: off the async workers.
                if let Err(e) = tokio::task::spawn_blocking(move || tls.reload()).await {
                    tracing::error!(error = %e, "TLS reload failed");
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = tls;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Only one server may use a data directory: a second one would fight over device ordinals.
fn lock_data_dir(data: &Path) -> anyhow::Result<File> {
    let path = data.join("serve.lock");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; no memory is touched.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            anyhow::bail!("another `pigeon serve` is already using {}", data.display());
        }
    }
    Ok(file)
}

/// Rust's memory is mimalloc's (`main.rs`), which returns freed pages by itself; SQLite
/// allocates from glibc's malloc, whose freed pages stay until trimmed. A thread of its own
/// trims them now and then, so the memory a server holds follows what it uses.
fn spawn_heap_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let _ = std::thread::Builder::new()
            .name("pigeon-heap-trim".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_secs(5));
                // SAFETY: malloc_trim only releases free memory back to the system.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
    }
}

/// Each connection is one descriptor: take all the kernel allows. Returns the soft limit now
/// in force, if known.
pub(crate) fn raise_fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write to / read from a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            let soft = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            let raised = libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0;
            let now = if raised { lim.rlim_max } else { soft };
            tracing::info!(
                soft_before = soft,
                soft = now,
                hard = lim.rlim_max,
                "open file limit"
            );
            // Each connection is one descriptor; below this a server cannot hold a useful crowd.
            if now < 4_096 {
                tracing::warn!(
                    limit = now,
                    "the open-file limit caps device connections below {now}"
                );
            }
            Some(now)
        }
    }
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_leave_descriptors_for_the_server() {
        let cfg = Config::default();
        let l = http_limits(&cfg, Some(20_000));
        assert_eq!((l.max_connections, l.max_pending), (19_000, 4_096));
        assert_eq!(l.max_devices, 18_000);
        // A small limit keeps a quarter for the server, and pending at most half.
        let l = http_limits(&cfg, Some(1_024));
        assert_eq!((l.max_connections, l.max_pending), (768, 384));
        let cfg = Config {
            max_connections: 100,
            max_pending_connections: 10,
            ..Config::default()
        };
        let l = http_limits(&cfg, Some(20_000));
        assert_eq!((l.max_connections, l.max_pending), (100, 10));
        assert_eq!(l.max_devices, 90);
    }
}
