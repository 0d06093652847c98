//! The `pigeon` binary: `serve`, `app create|list`, `device simulate`.

mod config;
mod http;
mod serve;
mod simulate;
mod storage;
mod tls;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{Config, ServeArgs};
use pigeon_engine::{new_app_record, vendors, EngineError};

use pigeon_store::StoreError;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "pigeon",
    version,
    about = "Self-hosted push notifications: JPush v3 API, device WebSockets, offline store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: JPush v3 API, device registration and device WebSocket on one listener.
    Serve(ServeArgs),
    /// Manage apps (tenants).
    #[command(subcommand)]
    App(AppCommand),
    /// Device tools.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Benchmarks (see BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Broadcast fan-out and idle connection cost, beside Mosquitto.
    Fanout(pigeon_bench::fanout::FanoutArgs),
    /// Callback throughput and what callbacks cost the fan-out.
    Callbacks(pigeon_bench::callbacks::CallbacksArgs),
    /// Audience resolution over 10M devices, beside Redis.
    Audience(pigeon_bench::audience::AudienceArgs),
    /// Restart time and memory with many devices and pending pushes.
    Restart(pigeon_bench::restart::RestartArgs),
    /// Push API throughput and API-to-device latency.
    PushApi(pigeon_bench::pushapi::PushApiArgs),
    /// Cluster mode: nodes on one PostgreSQL and NATS (started here unless given): connections
    /// and broadcast, unicast throughput and latency beside one SQLite node, failover.
    Cluster(pigeon_bench::cluster::ClusterArgs),
    /// The APNs client against the local APNs fake (HTTP/2, TLS), over one connection.
    Apns(pigeon_bench::apns::ApnsArgs),
    /// /health latency while thousands of connections send their request head and never
    /// finish it (slowloris), from several processes to 127.0.0.x.
    Slowloris(pigeon_bench::slowloris::SlowlorisArgs),
    /// An attacker process of `bench slowloris` (started by it, not by hand).
    #[command(hide = true)]
    SlowlorisAgent(pigeon_bench::slowloris::SlowlorisAgentArgs),
    /// Geofences: matching speed and index memory beside PostGIS (in this process), and
    /// one node end to end with devices reporting where they are.
    Geofence(pigeon_bench::geofence::GeofenceArgs),
    /// A device-holding process of `bench geofence` (started by it, not by hand).
    #[command(hide = true)]
    GeofenceAgent(pigeon_bench::geofence::GeofenceAgentArgs),
    /// A load-generating agent (started by the scenarios, not by hand).
    #[command(hide = true)]
    Agent(pigeon_bench::agent::AgentArgs),
}

#[derive(Subcommand)]
enum AppCommand {
    /// Create an app and print {"app_key":..,"master_secret":..}.
    Create {
        #[arg(long)]
        name: String,
        /// 24 characters of [A-Za-z0-9]; generated when not given.
        #[arg(long)]
        app_key: Option<String>,
        /// 24 characters of [A-Za-z0-9]; generated when not given.
        #[arg(long)]
        master_secret: Option<String>,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Change an app's settings and print them as one line of JSON; a running server picks
    /// the change up within a second.
    Set {
        #[arg(long)]
        app_key: String,
        /// Whether the app may call the APIs (a disabled app gets 403, code 2003).
        #[arg(long)]
        enabled: Option<bool>,
        /// API calls per minute (0 = the server's default).
        #[arg(long)]
        rate_limit: Option<u64>,
        /// Comma-separated addresses or CIDR ranges allowed to call the APIs ("" = any).
        #[arg(long)]
        ip_allowlist: Option<String>,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Callback endpoints of an app.
    #[command(subcommand)]
    Callback(CallbackCommand),
    /// App groups, for group push.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Print one line of JSON: the app's key, name, Web Push VAPID public key
    /// (`webpush_vapid_public_key`, base64url, uncompressed P-256) and vendor credentials
    /// (masked).
    Show {
        #[arg(long)]
        app_key: String,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Vendor credentials of an app (APNs, FCM, Huawei, Honor, Xiaomi, OPPO, vivo, Meizu).
    #[command(subcommand)]
    Vendor(VendorCommand),
    /// List apps, one JSON object a line.
    List {
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum CallbackCommand {
    /// Add an endpoint; prints {"id":..,"url":..,"signing_secret":..}. A running server starts
    /// posting to it within a second.
    Add {
        #[arg(long)]
        app_key: String,
        #[arg(long)]
        url: String,
        /// Commands it wants (all when not given): Push.Accepted, Push.Event, ...
        #[arg(long, value_delimiter = ',')]
        commands: Vec<String>,
        /// Do not send JPush-style Basic authentication.
        #[arg(long)]
        no_basic_auth: bool,
        /// How requests are encoded: pigeon (Pigeon's events) or tencent (Tencent Cloud IM's
        /// Push.OfflinePush, for Push.Event and Push.Undelivered only).
        #[arg(long, default_value = "pigeon")]
        format: String,
        /// The server's TOML configuration file: its address policy
        /// (`[callbacks] allow_private_networks`, `vendors_allow_private_networks`) applies here
        /// too, as do the `PIGEON_*` variables.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// List an app's endpoints, one JSON object a line (signing secrets shortened).
    List {
        #[arg(long)]
        app_key: String,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Enable an endpoint that was disabled for failing too long; it gets events from now on.
    Enable {
        #[arg(long)]
        app_key: String,
        #[arg(long)]
        id: u64,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Remove an endpoint and its undelivered batches.
    Remove {
        #[arg(long)]
        app_key: String,
        #[arg(long)]
        id: u64,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum VendorCommand {
    /// Set (replace) the app's credentials for a vendor and print them masked.
    Set {
        #[arg(long)]
        app_key: String,
        /// apns, fcm, huawei, honor, xiaomi, oppo, vivo or meizu.
        #[arg(long)]
        vendor: String,
        /// The credentials as a JSON object, or @FILE to read them from a file (an FCM
        /// service-account key file as downloaded, for example).
        #[arg(long)]
        credentials: String,
        /// The server's TOML configuration file: its address policy
        /// (`[callbacks] allow_private_networks`, `vendors_allow_private_networks`) applies here
        /// too, as do the `PIGEON_*` variables.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// List the app's vendor credentials, one JSON object a line, masked.
    List {
        #[arg(long)]
        app_key: String,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
    /// Remove the app's credentials for a vendor.
    Remove {
        #[arg(long)]
        app_key: String,
        #[arg(long)]
        vendor: String,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// Create a group of apps and print {"group_key":..,"master_secret":..,"app_keys":[..]}.
    /// Group push authenticates as group-<group_key>:<master_secret>.
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated app keys of the group's apps.
        #[arg(long, value_delimiter = ',', required = true)]
        app_keys: Vec<String>,
        #[arg(long, env = "PIGEON_DATA", default_value = config::DEFAULT_DATA)]
        data: PathBuf,
    },
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Register N devices, connect them, ack and print every push they receive.
    Simulate(simulate::SimulateArgs),
}

/// mimalloc instead of glibc's malloc: requests are handled on one worker thread and their
/// memory freed on another (the SQLite writer, the fan-out), and glibc serializes those frees
/// on its arena locks and consolidates free chunks under them; ~25% of the server's CPU at the
/// push API's peak went there (BENCHMARKS.md, "Performance round two").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the memory freed on this runtime worker back to the system, at most once a second,
/// as the worker goes idle. mimalloc returns a thread's freed pages only while that thread
/// goes on allocating; a worker that goes quiet after a burst (a wave of registrations or
/// connections) would keep them, and the server's memory would not follow what it holds.
fn return_freed_memory() {
    use std::cell::Cell;
    use std::time::{Duration, Instant};
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        // SAFETY: collects this thread's own heap; no pointer is passed.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// mimalloc asks the kernel for transparent huge pages on its arenas, so every first touch
/// of memory zeroes 2 MiB: loading 1M devices at a restart took 4-5 s instead of 3, with more
/// memory (BENCHMARKS.md, "Performance round two"). Off for this process; checked by the
/// kernel at each page fault, so it also covers the arena reserved before `main`.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with an integer option and no pointers.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    // Only `serve` may log JSON; its format is known before its configuration is loaded.
    let format = match &cli.command {
        Command::Serve(args) => config::early_log_format(args),
        _ => config::LogFormat::Text,
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a terminal: in a log file or journal they are noise.
        config::LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object a line, the event's fields (method, route, status, ...) at the top level.
        config::LogFormat::Json => log.json().flatten_event(true).with_ansi(false).init(),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(return_freed_memory)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(Config::load(args)?).await,
            Command::App(cmd) => app_command(cmd).await,
            Command::Device(DeviceCommand::Simulate(args)) => simulate::run(args).await,
            Command::Bench(cmd) => bench(cmd).await,
        }
    })
}

async fn bench(cmd: BenchCommand) -> anyhow::Result<()> {
    serve::raise_fd_limit();
    match cmd {
        // Scenarios drive agents through blocking pipes: keep them off the async workers.
        BenchCommand::Fanout(args) => {
            tokio::task::spawn_blocking(move || pigeon_bench::fanout::run(args)).await?
        }
        BenchCommand::Callbacks(args) => {
            tokio::task::spawn_blocking(move || pigeon_bench::callbacks::run(args)).await?
        }
        BenchCommand::Audience(args) => {
            tokio::task::spawn_blocking(move || pigeon_bench::audience::run(args)).await?
        }
        BenchCommand::Restart(args) => {
            tokio::task::spawn_blocking(move || pigeon_bench::restart::run(args)).await?
        }
        BenchCommand::PushApi(args) => {
            tokio::task::spawn_blocking(move || pigeon_bench::pushapi::run(args)).await?
        }
        BenchCommand::Cluster(args) => {
            tokio::task::spawn_blocking(move || pigeon_bench::cluster::run(args)).await?
        }
        BenchCommand::Apns(args) => {
            tokio::task::spawn_blocking(move || pigeon_bench::apns::run(args)).await?
        }
        BenchCommand::Geofence(args) => {
            tokio::task::spawn_blocking(move || pigeon_bench::geofence::run(args)).await?
        }
        BenchCommand::GeofenceAgent(args) => pigeon_bench::geofence::agent(args).await,
        BenchCommand::Agent(args) => pigeon_bench::agent::run(args).await,
        BenchCommand::Slowloris(args) => pigeon_bench::slowloris::run(args).await,
        BenchCommand::SlowlorisAgent(args) => pigeon_bench::slowloris::agent(args).await,
    }
}

async fn app_command(cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Create {
            name,
            app_key,
            master_secret,
            data,
        } => {
            let store = storage::open_for_command(&data).await?;
            let record = new_app_record(&name, app_key, master_secret).map_err(|e| match e {
                EngineError::Invalid(m) => anyhow::anyhow!(m),
                e => e.into(),
            })?;
            match store.create_app(record.clone()).await {
                Ok(()) => {}
                Err(StoreError::Conflict(what)) => anyhow::bail!("{what} already exists"),
                Err(e) => return Err(e).context("creating the app"),
            }
            vendors::vapid_public_key(&*store, &record.app_key)
                .await
                .context("making the app's VAPID key pair")?;
            store.close().await?;
            println!(
                "{}",
                serde_json::json!({"app_key": record.app_key, "master_secret": record.master_secret})
            );
        }
        AppCommand::Set {
            app_key,
            enabled,
            rate_limit,
            ip_allowlist,
            data,
        } => {
            let store = storage::open_for_command(&data).await?;
            if store.find_app(&app_key).await?.is_none() {
                anyhow::bail!("no app with app_key {app_key}");
            }
            let mut settings = store
                .app_settings()
                .await?
                .into_iter()
                .find(|(k, _)| *k == app_key)
                .map(|(_, s)| s)
                .unwrap_or_default();
            if let Some(e) = enabled {
                settings.enabled = e;
            }
            if let Some(r) = rate_limit {
                settings.rate_limit_per_minute = (r > 0).then_some(r);
            }
            if let Some(list) = ip_allowlist {
                settings.ip_allowlist = list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
            }
            pigeon_engine::limits::check_settings(&settings).map_err(|e| anyhow::anyhow!("{e}"))?;
            store.set_app_settings(&app_key, settings.clone()).await?;
            store.close().await?;
            println!("{}", serde_json::to_string(&settings)?);
        }
        AppCommand::Callback(cmd) => callback_command(cmd).await?,
        AppCommand::Show { app_key, data } => {
            let store = storage::open_for_command(&data).await?;
            let Some(app) = store.find_app(&app_key).await? else {
                anyhow::bail!("no app with app_key {app_key}");
            };
            let mut shown = vendors::channels_view(&*store, &app_key).await?;
            shown["app_key"] = serde_json::json!(app.app_key);
            shown["name"] = serde_json::json!(app.name);
            shown["created_ms"] = serde_json::json!(app.created_ms);
            store.close().await?;
            println!("{shown}");
        }
        AppCommand::Vendor(cmd) => vendor_command(cmd).await?,
        AppCommand::Group(GroupCommand::Create {
            name,
            app_keys,
            data,
        }) => {
            let store = storage::open_for_command(&data).await?;
            for key in &app_keys {
                if store.find_app(key).await?.is_none() {
                    anyhow::bail!("no app with app_key {key}");
                }
            }
            if name.trim().is_empty() || name.len() > 128 {
                anyhow::bail!("name must be 1..128 bytes");
            }
            let group = pigeon_store::GroupRecord {
                group_key: pigeon_engine::random_alnum(24),
                master_secret: pigeon_engine::random_alnum(24),
                name,
                app_keys,
                created_ms: pigeon_engine::now_ms(),
            };
            store.create_group(group.clone()).await?;
            store.close().await?;
            println!(
                "{}",
                serde_json::json!({"group_key": group.group_key,
                    "master_secret": group.master_secret, "app_keys": group.app_keys})
            );
        }
        AppCommand::List { data } => {
            let store = storage::open_for_command(&data).await?;
            for app in store.list_apps().await? {
                println!(
                    "{}",
                    serde_json::json!({"app_key": app.app_key, "master_secret": app.master_secret,
                                       "name": app.name, "created_ms": app.created_ms})
                );
            }
        }
    }
    Ok(())
}

async fn vendor_command(cmd: VendorCommand) -> anyhow::Result<()> {
    match cmd {
        VendorCommand::Set {
            app_key,
            vendor,
            credentials,
            config,
            data,
        } => {
            let policy = private_networks(config)?.vendors_policy();
            let text = match credentials.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading credentials from {path}"))?,
                None => credentials,
            };
            let value: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("the credentials are not JSON: {e}"))?;
            let store = storage::open_for_command(&data).await?;
            if store.find_app(&app_key).await?.is_none() {
                anyhow::bail!("no app with app_key {app_key}");
            }
            let shown =
                vendors::set_vendor_credentials(&*store, &app_key, &vendor, &value, &policy)
                    .await
                    .map_err(|e| match e {
                        EngineError::Invalid(m) => anyhow::anyhow!(m),
                        e => e.into(),
                    })?;
            store.close().await?;
            println!("{shown}");
        }
        VendorCommand::List { app_key, data } => {
            let store = storage::open_for_command(&data).await?;
            if store.find_app(&app_key).await?.is_none() {
                anyhow::bail!("no app with app_key {app_key}");
            }
            let view = vendors::channels_view(&*store, &app_key).await?;
            for v in view["vendors"].as_array().into_iter().flatten() {
                println!("{v}");
            }
            store.close().await?;
        }
        VendorCommand::Remove {
            app_key,
            vendor,
            data,
        } => {
            let store = storage::open_for_command(&data).await?;
            if !store.remove_vendor_credentials(&app_key, &vendor).await? {
                anyhow::bail!("app {app_key} has no {vendor} credentials");
            }
            store.close().await?;
        }
    }
    Ok(())
}

async fn callback_command(cmd: CallbackCommand) -> anyhow::Result<()> {
    match cmd {
        CallbackCommand::Add {
            app_key,
            url,
            commands,
            no_basic_auth,
            format,
            config,
            data,
        } => {
            let format = pigeon_callbacks::parse_format(&format).map_err(|e| anyhow::anyhow!(e))?;
            let endpoint =
                pigeon_callbacks::new_endpoint(&app_key, &url, (commands, format), !no_basic_auth)
                    .map_err(|e| anyhow::anyhow!(e))?;
            let policy = private_networks(config)?.callbacks_policy();
            pigeon_core::net::check_url(&url, "url", &policy)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            let store = storage::open_for_command(&data).await?;
            if store.find_app(&app_key).await?.is_none() {
                anyhow::bail!("no app with app_key {app_key}");
            }
            let id = store.add_callback(endpoint.clone()).await?;
            store.close().await?;
            println!(
                "{}",
                serde_json::json!({"id": id, "url": url, "format": format.as_str(),
                    "commands": endpoint.commands, "signing_secret": endpoint.signing_secret})
            );
        }
        CallbackCommand::List { app_key, data } => {
            let store = storage::open_for_command(&data).await?;
            for e in store.list_callbacks().await? {
                if e.app_key == app_key {
                    println!("{}", pigeon_callbacks::endpoint_view(&e));
                }
            }
        }
        CallbackCommand::Enable { app_key, id, data } => {
            let store = storage::open_for_command(&data).await?;
            if !store.enable_callback(&app_key, id).await? {
                anyhow::bail!("app {app_key} has no callback endpoint {id}");
            }
            store.close().await?;
            println!("{}", serde_json::json!({"enabled": id}));
        }
        CallbackCommand::Remove { app_key, id, data } => {
            let store = storage::open_for_command(&data).await?;
            if !store.remove_callback(&app_key, id).await? {
                anyhow::bail!("app {app_key} has no callback endpoint {id}");
            }
            store.close().await?;
            println!("{}", serde_json::json!({"removed": id}));
        }
    }
    Ok(())
}

/// The address policy the server would apply, from the same file and `PIGEON_*` variables,
/// so the CLI cannot store a URL the server's API would refuse.
fn private_networks(config: Option<PathBuf>) -> anyhow::Result<pigeon_engine::PrivateNetworks> {
    let args = ServeArgs {
        config,
        ..ServeArgs::default()
    };
    Ok(Config::load(args)?.private_networks())
}
