//! `pigeon serve`: one listener for the JPush v3 API, device registration and the device
//! WebSocket, on embedded storage in a data directory.

use crate::config::{Config, DB_FILE};
use anyhow::Context;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::serve::{IncomingStream, ListenerExt, TapIo};
use axum::Router;
use pigeon_core::error_json;
use pigeon_core::RouteDoc;
use pigeon_engine::Engine;
use pigeon_gateway::GatewayConfig;
use pigeon_store::{SqliteStore, Synchronous};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    raise_fd_limit();
    spawn_heap_trimmer();
    std::fs::create_dir_all(&cfg.data)
        .with_context(|| format!("creating the data directory {}", cfg.data.display()))?;
    let _lock = lock_data_dir(&cfg.data)?;
    let sync = if cfg.sqlite_synchronous == "normal" {
        Synchronous::Normal
    } else {
        Synchronous::Full
    };
    let db = cfg.data.join(DB_FILE);
    let store =
        SqliteStore::open(&db, sync).with_context(|| format!("opening {}", db.display()))?;
    let started = std::time::Instant::now();
    let engine = Engine::start(Arc::new(store))
        .await
        .context("loading stored state")?;
    engine.set_default_rate_limit(cfg.rate_limit_per_minute);
    engine.set_rate_window(Duration::from_secs(cfg.rate_limit_window_s));
    engine.set_expired_grace(Duration::from_millis(cfg.expired_grace_ms));
    engine.set_recall_window(Duration::from_secs(cfg.recall_window_s));
    engine.set_pacing_minute(Duration::from_millis(cfg.pacing_minute_ms));
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
        },
    );
    let gateway = GatewayConfig {
        heartbeat_s: cfg.heartbeat_s,
        hello_timeout: Duration::from_millis(cfg.hello_timeout_ms),
        device_rate_per_s: cfg.device_rate_per_s,
        device_rate_burst: cfg.device_rate_burst,
    };
    let app = Router::new()
        .merge(
            pigeon_jpush::router(engine.clone())
                .await
                .context("loading schedules")?,
        )
        .merge(pigeon_gateway::router(engine.clone(), gateway))
        .route(
            "/openapi.json",
            get(|| async { pigeon_jpush::json_response(StatusCode::OK, &openapi_document()) }),
        )
        .route(
            "/health",
            get(|| async {
                pigeon_jpush::json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }),
        )
        .fallback(not_found);

    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    // Answers and push frames are whole messages written at once: sending them at once
    // matters more than coalescing (Nagle's wait on the peer's ack adds latency to every
    // frame that follows another one still unacked).
    let listener = listener.tap_io(set_nodelay as fn(&mut TcpStream));
    tracing::info!(data = %cfg.data.display(), "pigeon listening on http://{addr}");

    // Each connection's service knows the peer address (for IP allowlists) and normalizes
    // paths before routing (a layer on the Router would run after it).
    let make_service = tower::service_fn(move |incoming: IncomingStream<'_, Listener>| {
        let peer = axum::extract::ConnectInfo(*incoming.remote_addr());
        let service = tower::ServiceBuilder::new()
            .map_request(move |mut req: axum::extract::Request| {
                if let Some(uri) = pigeon_jpush::normalize_path(req.uri()) {
                    *req.uri_mut() = uri;
                }
                req.extensions_mut().insert(peer);
                req
            })
            .service(app.clone());
        std::future::ready(Ok::<_, std::convert::Infallible>(service))
    });
    let shutdown_engine = engine.clone();
    axum::serve(listener, make_service)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: closing device connections with 1001");
            shutdown_engine.close_all(1001, "server shutting down");
        })
        .await
        .context("serving")?;

    let deadline = tokio::time::Instant::now() + Duration::from_millis(cfg.shutdown_grace_ms);
    while engine.apps().iter().any(|a| a.online_count() > 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.flush().await.context("flushing storage")?;
    tracing::info!("stopped");
    Ok(())
}

/// The listener with TCP_NODELAY set on every accepted connection.
type Listener = TapIo<TcpListener, fn(&mut TcpStream)>;

fn set_nodelay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
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
    },
    RouteDoc {
        method: "get",
        path: "/openapi.json",
        tag: "Operations",
        summary: "This document",
        query: &[],
        body: false,
    },
];

/// The OpenAPI document of every route this server mounts.
fn openapi_document() -> serde_json::Value {
    let routes: Vec<RouteDoc> = [pigeon_jpush::ROUTES, pigeon_gateway::ROUTES, OPS_ROUTES].concat();
    let mut doc = pigeon_jpush::openapi::document(&routes);
    for path in ["/health", "/openapi.json"] {
        doc["paths"][path]["get"]["security"] = serde_json::json!([]);
    }
    doc
}

async fn not_found(uri: Uri) -> Response {
    pigeon_jpush::json_response(
        StatusCode::NOT_FOUND,
        &error_json(404, &format!("no such API: {}", uri.path())),
    )
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

/// Bursts of connections leave freed handshake buffers scattered through the heap, which
/// glibc keeps; a thread of its own returns free pages to the system now and then, so the
/// memory a server holds follows its live connections.
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

/// Each connection is one descriptor: take all the kernel allows.
pub(crate) fn raise_fd_limit() {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit write to / read from a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return;
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
        }
    }
}
