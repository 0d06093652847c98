//! Serve configuration: defaults, then a TOML file, then `PIGEON_*` environment variables,
//! then command-line flags, each overriding the one before.

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_DATA: &str = "./pigeon-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DB_FILE: &str = "pigeon.db";

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Data directory [default: ./pigeon-data] (env PIGEON_DATA).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080] (env PIGEON_LISTEN).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// TOML configuration file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Serve HTTPS and WSS only, with this PEM certificate chain (env PIGEON_TLS_CERT);
    /// needs --tls-key. Read again on SIGHUP.
    #[arg(long, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (env PIGEON_TLS_KEY).
    #[arg(long, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// The log's format on stderr: text or json (one JSON object a line) [default: text]
    /// (env PIGEON_LOG_FORMAT).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve `GET /metrics` only on this address, not on the main listener (env
    /// PIGEON_METRICS_LISTEN).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

/// How `pigeon serve` writes its log.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event, `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<LogFormat> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => anyhow::bail!("log format must be \"text\" or \"json\", got {s:?}"),
        }
    }
}

/// The `[tls]` section: HTTPS on the listener when both are set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate chain (leaf first), e.g. Let's Encrypt's `fullchain.pem`.
    pub cert: Option<PathBuf>,
    /// PEM file of its private key (PKCS#8, RSA or SEC1), e.g. `privkey.pem`.
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// Both files, or neither (empty paths count as not given); one alone is an error.
    pub fn files(&self) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        let given = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
        match (given(&self.cert), given(&self.key)) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles { cert, key })),
            (None, None) => Ok(None),
            (Some(cert), None) => anyhow::bail!(
                "a TLS certificate is given ({}) but no key: set --tls-key, PIGEON_TLS_KEY or \
                 [tls] key too (HTTPS needs both)",
                cert.display()
            ),
            (None, Some(key)) => anyhow::bail!(
                "a TLS key is given ({}) but no certificate: set --tls-cert, PIGEON_TLS_CERT or \
                 [tls] cert too (HTTPS needs both)",
                key.display()
            ),
        }
    }
}

/// The log format `pigeon serve` is asked for, before its configuration is loaded (the log
/// is set up first): the flag, else `PIGEON_LOG_FORMAT`, else the TOML file's `log_format`.
/// Anything unreadable here gives text; `Config::load` then reports it.
pub fn early_log_format(args: &ServeArgs) -> LogFormat {
    if let Some(f) = args.log_format {
        return f;
    }
    if let Ok(v) = std::env::var("PIGEON_LOG_FORMAT") {
        return v.parse().unwrap_or_default();
    }
    args.config
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| toml::from_str::<FileConfig>(&t).ok())
        .and_then(|f| f.log_format)
        .unwrap_or_default()
}

/// Everything `pigeon serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data: PathBuf,
    pub listen: SocketAddr,
    /// Where `GET /metrics` is served when not on `listen` (then only there).
    pub metrics_listen: Option<SocketAddr>,
    /// Seconds a device may stay silent (told in welcome); it is closed after twice that.
    pub heartbeat_s: u64,
    /// How long a new device connection may take to say hello, in ms.
    pub hello_timeout_ms: u64,
    /// Frames a second a device may send on average, `ack` and `ping` aside (protocol §4
    /// "Rate"); over it they are refused with 2002.
    pub device_rate_per_s: u32,
    /// How many such frames a device may send at once above that average.
    pub device_rate_burst: u32,
    /// `full` (survives power loss) or `normal` (survives a process crash).
    pub sqlite_synchronous: String,
    /// How long shutdown waits for devices to take their 1001 close, in ms.
    pub shutdown_grace_ms: u64,
    /// API calls per minute for apps without a limit of their own.
    pub rate_limit_per_minute: u64,
    /// Length of the rate-limit window in seconds: 60 as JPush; tests shorten it.
    pub rate_limit_window_s: u64,
    pub callbacks: CallbacksConfig,
    /// How long an expired push waits for late acks before its undelivered targets are
    /// reported, in ms.
    pub expired_grace_ms: u64,
    /// How old a push may be and still be recalled, in seconds (a day, as JPush).
    pub recall_window_s: u64,
    /// How long one minute of `big_push_duration` lasts, in ms: 60000; tests shorten it.
    pub pacing_minute_ms: u64,
    /// The `[sms]` section: the SMS fallback's provider.
    pub sms: pigeon_sms::Config,
    /// Whether devices' Web Push endpoints may be plain http or on loopback, private or
    /// link-local addresses (a local push service).
    pub webpush_allow_private_networks: bool,
    /// Whether vendor credentials' `base_url` / `auth_url` / `token_uri` may point at
    /// loopback, private, link-local or other non-public addresses (local fakes of vendors).
    pub vendors_allow_private_networks: bool,
    /// How long a client may take to send a request head, in ms; also how long a keep-alive
    /// connection may sit idle between requests.
    pub header_timeout_ms: u64,
    /// How long a request body may take to arrive in whole after its head, in ms.
    pub body_timeout_ms: u64,
    /// Most open client connections (0: the open-file limit minus headroom for the
    /// database, vendor and callback sockets).
    pub max_connections: usize,
    /// Most connections that have not sent their first request head yet (0: 4096, at most
    /// half of `max_connections`); beyond it the oldest is dropped.
    pub max_pending_connections: usize,
    /// The URL clients reach this server at (e.g. `https://push.example.com`), when it is not
    /// what they send as Host (a proxy in between): the Getui legacy door's discovery answers
    /// with `<public_url>/serviceex`.
    pub public_url: Option<String>,
    /// The operator token of the web console (`/console/`): signing in with it sees every
    /// app. `None`: operators cannot sign in (apps still can, with their own secret).
    pub console_token: Option<String>,
    /// Cluster mode: state in PostgreSQL, nodes talking through NATS (`[cluster]`).
    pub cluster: ClusterConfig,
    /// `[geofences]`.
    pub geofences: GeofencesConfig,
    /// `[tls]`: HTTPS on the listener.
    pub tls: TlsConfig,
    /// `text` or `json`.
    pub log_format: LogFormat,
}

/// `[geofences]`: how many fences an app may have, and the length of a fence's second.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeofencesConfig {
    pub max_per_app: u64,
    /// How long one second of `stay_s` and `cooldown_s` lasts, in ms (1000; tests shorten
    /// it so a 60 s stay takes a few seconds).
    pub second_ms: u64,
}

impl Default for GeofencesConfig {
    fn default() -> Self {
        GeofencesConfig {
            max_per_app: pigeon_engine::geofences::DEFAULT_MAX_PER_APP,
            second_ms: 1000,
        }
    }
}

/// `[cluster]`: where state lives and how nodes talk, when not in the embedded SQLite file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `postgres://user:password@host:port/db`: state lives in that database.
    pub postgres: Option<String>,
    /// `nats://host:port`: this node talks to the others through that NATS server.
    pub nats: Option<String>,
    /// This node's name (generated and logged when not given).
    pub node_id: Option<String>,
}

/// The `[callbacks]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksConfig {
    /// Whether callback URLs may point at loopback, private or link-local addresses.
    pub allow_private_networks: bool,
    /// Longest the oldest event of a batch waits for more, in ms.
    pub batch_wait_ms: u64,
    /// The first retry delay in ms; later ones grow from it (×6, ×24, ×120, ...).
    pub retry_first_ms: u64,
    /// A batch failing for this long is dead-lettered, in seconds.
    pub dead_after_s: u64,
    /// An endpoint whose every request has failed for this long is disabled, in seconds.
    pub disable_after_s: u64,
}

impl ClusterConfig {
    /// Empty settings count as not given; NATS alone is refused (see `docs/cluster.md`).
    fn check(&mut self) -> anyhow::Result<()> {
        for v in [&mut self.postgres, &mut self.nats, &mut self.node_id] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *v = None;
            }
        }
        if let Some(url) = &self.postgres {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                anyhow::bail!("[cluster] postgres / PIGEON_POSTGRES_URL must be a postgres:// URL, got {url:?}");
            }
        }
        if let Some(url) = &self.nats {
            if !url.starts_with("nats://") {
                anyhow::bail!(
                    "[cluster] nats / PIGEON_NATS_URL must be a nats://host:port URL, got {url:?}"
                );
            }
            if self.postgres.is_none() {
                anyhow::bail!(
                    "[cluster] nats / PIGEON_NATS_URL is set without [cluster] postgres / PIGEON_POSTGRES_URL: \
                     cluster nodes keep their state in PostgreSQL, so a NATS URL needs a PostgreSQL URL too"
                );
            }
        }
        if let Some(id) = &self.node_id {
            if id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                anyhow::bail!("[cluster] node_id / PIGEON_NODE_ID must be 1-64 letters, digits, '-', '_' or '.', got {id:?}");
            }
        }
        Ok(())
    }
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        CallbacksConfig {
            allow_private_networks: false,
            batch_wait_ms: 1000,
            retry_first_ms: 5000,
            dead_after_s: 24 * 3600,
            disable_after_s: 3 * 24 * 3600,
        }
    }
}

/// The TOML file: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    heartbeat_s: Option<u64>,
    hello_timeout_ms: Option<u64>,
    device_rate_per_s: Option<u32>,
    device_rate_burst: Option<u32>,
    sqlite_synchronous: Option<String>,
    shutdown_grace_ms: Option<u64>,
    rate_limit_per_minute: Option<u64>,
    rate_limit_window_s: Option<u64>,
    callbacks: Option<CallbacksConfig>,
    expired_grace_ms: Option<u64>,
    recall_window_s: Option<u64>,
    pacing_minute_ms: Option<u64>,
    sms: Option<pigeon_sms::Config>,
    webpush_allow_private_networks: Option<bool>,
    vendors_allow_private_networks: Option<bool>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    max_pending_connections: Option<usize>,
    public_url: Option<String>,
    console_token: Option<String>,
    cluster: Option<ClusterConfig>,
    geofences: Option<GeofencesConfig>,
    tls: Option<TlsConfig>,
    log_format: Option<LogFormat>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: PathBuf::from(DEFAULT_DATA),
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| ([127, 0, 0, 1], 8080).into()),
            metrics_listen: None,
            heartbeat_s: 60,
            hello_timeout_ms: 10_000,
            device_rate_per_s: pigeon_gateway::DEFAULT_DEVICE_RATE_PER_S,
            device_rate_burst: pigeon_gateway::DEFAULT_DEVICE_RATE_BURST,
            sqlite_synchronous: "full".into(),
            shutdown_grace_ms: 2_000,
            rate_limit_per_minute: pigeon_engine::limits::DEFAULT_RATE_LIMIT_PER_MINUTE,
            rate_limit_window_s: 60,
            callbacks: CallbacksConfig::default(),
            expired_grace_ms: pigeon_engine::DEFAULT_EXPIRED_GRACE_MS,
            recall_window_s: 24 * 3600,
            pacing_minute_ms: 60_000,
            sms: pigeon_sms::Config::default(),
            webpush_allow_private_networks: false,
            vendors_allow_private_networks: false,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 0,
            max_pending_connections: 0,
            public_url: None,
            console_token: None,
            cluster: ClusterConfig::default(),
            geofences: GeofencesConfig::default(),
            tls: TlsConfig::default(),
            log_format: LogFormat::Text,
        }
    }
}

impl Config {
    /// The operator's address policy (`pigeon_core::net`), for the server and for the CLI
    /// commands that store URLs, which must refuse what the server would.
    pub fn private_networks(&self) -> pigeon_engine::PrivateNetworks {
        pigeon_engine::PrivateNetworks {
            callbacks: self.callbacks.allow_private_networks,
            vendors: self.vendors_allow_private_networks,
            webpush: self.webpush_allow_private_networks,
        }
    }

    pub fn load(args: ServeArgs) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("PIGEON_"))
            .collect();
        Config::from_sources(args, &env)
    }

    fn from_sources(args: ServeArgs, env: &[(String, String)]) -> anyhow::Result<Config> {
        let mut c = Config::default();
        if let Some(path) = &args.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let f: FileConfig = toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?;
            if let Some(v) = f.data {
                c.data = v;
            }
            if let Some(v) = f.listen {
                c.listen = v;
            }
            if let Some(v) = f.metrics_listen {
                c.metrics_listen = Some(v);
            }
            if let Some(v) = f.cluster {
                c.cluster = v;
            }
            if let Some(v) = f.heartbeat_s {
                c.heartbeat_s = v;
            }
            if let Some(v) = f.hello_timeout_ms {
                c.hello_timeout_ms = v;
            }
            if let Some(v) = f.device_rate_per_s {
                c.device_rate_per_s = v;
            }
            if let Some(v) = f.device_rate_burst {
                c.device_rate_burst = v;
            }
            if let Some(v) = f.sqlite_synchronous {
                c.sqlite_synchronous = v;
            }
            if let Some(v) = f.shutdown_grace_ms {
                c.shutdown_grace_ms = v;
            }
            if let Some(v) = f.rate_limit_per_minute {
                c.rate_limit_per_minute = v;
            }
            if let Some(v) = f.rate_limit_window_s {
                c.rate_limit_window_s = v;
            }
            if let Some(v) = f.callbacks {
                c.callbacks = v;
            }
            if let Some(v) = f.expired_grace_ms {
                c.expired_grace_ms = v;
            }
            if let Some(v) = f.recall_window_s {
                c.recall_window_s = v;
            }
            if let Some(v) = f.pacing_minute_ms {
                c.pacing_minute_ms = v;
            }
            if let Some(v) = f.geofences {
                c.geofences = v;
            }
            if let Some(v) = f.webpush_allow_private_networks {
                c.webpush_allow_private_networks = v;
            }
            if let Some(v) = f.vendors_allow_private_networks {
                c.vendors_allow_private_networks = v;
            }
            if let Some(v) = f.sms {
                c.sms = v;
            }
            if let Some(v) = f.header_timeout_ms {
                c.header_timeout_ms = v;
            }
            if let Some(v) = f.body_timeout_ms {
                c.body_timeout_ms = v;
            }
            if let Some(v) = f.max_connections {
                c.max_connections = v;
            }
            if let Some(v) = f.max_pending_connections {
                c.max_pending_connections = v;
            }
            if let Some(v) = f.public_url {
                c.public_url = Some(v);
            }
            if let Some(v) = f.tls {
                c.tls = v;
            }
            if let Some(v) = f.log_format {
                c.log_format = v;
            }
            if let Some(v) = f.console_token {
                c.console_token = Some(v);
            }
        }
        for (key, value) in env {
            let bad = |what: &str| anyhow::anyhow!("{key}={value:?} is not {what}");
            match key.as_str() {
                "PIGEON_DATA" => c.data = PathBuf::from(value),
                "PIGEON_LISTEN" => {
                    c.listen = value
                        .parse()
                        .map_err(|_| bad("an address like 127.0.0.1:8080"))?
                }
                "PIGEON_METRICS_LISTEN" => {
                    c.metrics_listen = match value.as_str() {
                        "" => None,
                        v => Some(
                            v.parse()
                                .map_err(|_| bad("an address like 127.0.0.1:9090"))?,
                        ),
                    }
                }
                "PIGEON_HEARTBEAT_S" => {
                    c.heartbeat_s = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_HELLO_TIMEOUT_MS" => {
                    c.hello_timeout_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_DEVICE_RATE_PER_S" => {
                    c.device_rate_per_s = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_DEVICE_RATE_BURST" => {
                    c.device_rate_burst = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_SQLITE_SYNCHRONOUS" => c.sqlite_synchronous = value.clone(),
                "PIGEON_SHUTDOWN_GRACE_MS" => {
                    c.shutdown_grace_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_RATE_LIMIT_PER_MINUTE" => {
                    c.rate_limit_per_minute = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_RATE_LIMIT_WINDOW_S" => {
                    c.rate_limit_window_s = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS" => {
                    c.callbacks.allow_private_networks =
                        value.parse().map_err(|_| bad("true or false"))?
                }
                "PIGEON_WEBPUSH_ALLOW_PRIVATE_NETWORKS" => {
                    c.webpush_allow_private_networks =
                        value.parse().map_err(|_| bad("true or false"))?
                }
                "PIGEON_VENDORS_ALLOW_PRIVATE_NETWORKS" => {
                    c.vendors_allow_private_networks =
                        value.parse().map_err(|_| bad("true or false"))?
                }
                "PIGEON_CALLBACKS_BATCH_WAIT_MS" => {
                    c.callbacks.batch_wait_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_CALLBACKS_RETRY_FIRST_MS" => {
                    c.callbacks.retry_first_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_RECALL_WINDOW_S" => {
                    c.recall_window_s = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_SMS_PROVIDER" => c.sms.provider = value.clone(),
                "PIGEON_SMS_URL" => c.sms.url = Some(value.clone()),
                "PIGEON_SMS_MAX_ATTEMPTS" => {
                    c.sms.max_attempts = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_SMS_RETRY_FIRST_MS" => {
                    c.sms.retry_first_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_MAX_GEOFENCES_PER_APP" => {
                    c.geofences.max_per_app = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_GEOFENCE_SECOND_MS" => {
                    c.geofences.second_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_PACING_MINUTE_MS" => {
                    c.pacing_minute_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_EXPIRED_GRACE_MS" => {
                    c.expired_grace_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_CALLBACKS_DEAD_AFTER_S" => {
                    c.callbacks.dead_after_s = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_HEADER_TIMEOUT_MS" => {
                    c.header_timeout_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_BODY_TIMEOUT_MS" => {
                    c.body_timeout_ms = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_MAX_CONNECTIONS" => {
                    c.max_connections = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_MAX_PENDING_CONNECTIONS" => {
                    c.max_pending_connections = value.parse().map_err(|_| bad("a number"))?
                }
                "PIGEON_PUBLIC_URL" => c.public_url = Some(value.clone()),
                "PIGEON_TLS_CERT" => c.tls.cert = Some(PathBuf::from(value)),
                "PIGEON_TLS_KEY" => c.tls.key = Some(PathBuf::from(value)),
                "PIGEON_LOG_FORMAT" => {
                    c.log_format = value.parse().map_err(|_| bad("text or json"))?
                }
                "PIGEON_CONSOLE_TOKEN" => c.console_token = Some(value.clone()),
                "PIGEON_POSTGRES_URL" => c.cluster.postgres = Some(value.clone()),
                "PIGEON_NATS_URL" => c.cluster.nats = Some(value.clone()),
                "PIGEON_NODE_ID" => c.cluster.node_id = Some(value.clone()),
                "PIGEON_CALLBACKS_DISABLE_AFTER_S" => {
                    c.callbacks.disable_after_s = value.parse().map_err(|_| bad("a number"))?
                }
                _ => {}
            }
        }
        if let Some(v) = args.data {
            c.data = v;
        }
        if let Some(v) = args.listen {
            c.listen = v;
        }
        if let Some(v) = args.tls_cert {
            c.tls.cert = Some(v);
        }
        if let Some(v) = args.tls_key {
            c.tls.key = Some(v);
        }
        if let Some(v) = args.log_format {
            c.log_format = v;
        }
        c.tls.files()?;
        if let Some(v) = args.metrics_listen {
            c.metrics_listen = Some(v);
        }
        c.cluster.check()?;
        if let Some(u) = &c.public_url {
            if u.is_empty() {
                c.public_url = None;
            } else if !(u.starts_with("http://") || u.starts_with("https://")) {
                anyhow::bail!("public_url must start with http:// or https://, got {u:?}");
            }
        }
        if let Some(t) = &c.console_token {
            if t.is_empty() {
                c.console_token = None;
            } else if t.len() < 16 {
                anyhow::bail!(
                    "console_token / PIGEON_CONSOLE_TOKEN must be at least 16 characters (it signs in to every app)"
                );
            }
        }
        if c.geofences.second_ms == 0 {
            anyhow::bail!("geofences.second_ms must be at least 1");
        }
        if c.heartbeat_s < 5 {
            anyhow::bail!(
                "heartbeat_s must be at least 5 (protocol §2), got {}",
                c.heartbeat_s
            );
        }
        if !(1..=pigeon_gateway::MAX_DEVICE_RATE_PER_S).contains(&c.device_rate_per_s) {
            anyhow::bail!(
                "device_rate_per_s must be 1 to {}, got {}",
                pigeon_gateway::MAX_DEVICE_RATE_PER_S,
                c.device_rate_per_s
            );
        }
        if c.device_rate_burst == 0 {
            anyhow::bail!("device_rate_burst must be at least 1");
        }
        if c.rate_limit_per_minute == 0 {
            anyhow::bail!("rate_limit_per_minute must be at least 1");
        }
        if !(1..=3600).contains(&c.rate_limit_window_s) {
            anyhow::bail!(
                "rate_limit_window_s must be 1 to 3600, got {}",
                c.rate_limit_window_s
            );
        }
        for (key, ms) in [
            ("header_timeout_ms", c.header_timeout_ms),
            ("body_timeout_ms", c.body_timeout_ms),
        ] {
            // Zero would close every connection at once; hours would be no timeout at all.
            if !(100..=3_600_000).contains(&ms) {
                anyhow::bail!("{key} must be 100 to 3600000, got {ms}");
            }
        }
        if !["full", "normal"].contains(&c.sqlite_synchronous.as_str()) {
            anyhow::bail!(
                "sqlite_synchronous must be \"full\" or \"normal\", got {:?}",
                c.sqlite_synchronous
            );
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pigeon.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nheartbeat_s = 30\ndata = \"/from/file\"\n",
        )
        .unwrap();
        let env = vec![
            ("PIGEON_HEARTBEAT_S".to_string(), "20".to_string()),
            ("PIGEON_DEVICE_RATE_PER_S".to_string(), "5".to_string()),
        ];
        let args = ServeArgs {
            config: Some(file),
            data: Some("/from/flag".into()),
            ..Default::default()
        };
        let c = Config::from_sources(args, &env).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.metrics_listen, None);
        assert_eq!(c.heartbeat_s, 20);
        assert_eq!((c.device_rate_per_s, c.device_rate_burst), (5, 100));
        assert_eq!(c.data, PathBuf::from("/from/flag"));
    }

    #[test]
    fn http_limits_come_from_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pigeon.toml");
        std::fs::write(
            &file,
            "header_timeout_ms = 1000\nbody_timeout_ms = 2000\nmax_connections = 500\n",
        )
        .unwrap();
        let env = vec![(
            "PIGEON_MAX_PENDING_CONNECTIONS".to_string(),
            "50".to_string(),
        )];
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let c = Config::from_sources(args, &env).unwrap();
        assert_eq!(
            (c.header_timeout_ms, c.body_timeout_ms, c.max_connections),
            (1000, 2000, 500)
        );
        assert_eq!(c.max_pending_connections, 50);
        let env = vec![("PIGEON_HEADER_TIMEOUT_MS".to_string(), "0".to_string())];
        let e = Config::from_sources(ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("header_timeout_ms"));
    }

    #[test]
    fn tls_and_log_format_from_file_env_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pigeon.toml");
        std::fs::write(
            &file,
            "log_format = \"json\"\n[tls]\ncert = \"/file/cert.pem\"\nkey = \"/file/key.pem\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        assert_eq!(early_log_format(&args), LogFormat::Json);
        let env = vec![("PIGEON_TLS_KEY".to_string(), "/env/key.pem".to_string())];
        let args = ServeArgs {
            config: Some(file),
            tls_cert: Some("/flag/cert.pem".into()),
            log_format: Some(LogFormat::Text),
            ..Default::default()
        };
        let c = Config::from_sources(args, &env).unwrap();
        let files = c.tls.files().unwrap().unwrap();
        assert_eq!(files.cert, PathBuf::from("/flag/cert.pem"));
        assert_eq!(files.key, PathBuf::from("/env/key.pem"));
        assert_eq!(c.log_format, LogFormat::Text);
        // One without the other is refused, naming what is missing.
        let env = vec![("PIGEON_TLS_CERT".to_string(), "/env/cert.pem".to_string())];
        let e = Config::from_sources(ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("no key"), "{e}");
        let env = vec![("PIGEON_LOG_FORMAT".to_string(), "xml".to_string())];
        let e = Config::from_sources(ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("PIGEON_LOG_FORMAT"), "{e}");
        assert_eq!(
            Config::from_sources(ServeArgs::default(), &[])
                .unwrap()
                .tls
                .files()
                .unwrap(),
            None
        );
    }

    #[test]
    fn the_console_token_comes_from_file_or_env_and_must_be_long() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pigeon.toml");
        std::fs::write(&file, "console_token = \"from-the-file-0123456789\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        let c = Config::from_sources(args, &[]).unwrap();
        assert_eq!(c.console_token.as_deref(), Some("from-the-file-0123456789"));
        assert_eq!(Config::default().console_token, None);
        let env = vec![("PIGEON_CONSOLE_TOKEN".to_string(), "".to_string())];
        assert_eq!(
            Config::from_sources(ServeArgs::default(), &env)
                .unwrap()
                .console_token,
            None
        );
        let env = vec![("PIGEON_CONSOLE_TOKEN".to_string(), "short".to_string())];
        let e = Config::from_sources(ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("at least 16"));
    }

    #[test]
    fn metrics_listen_from_file_env_and_flag() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pigeon.toml");
        std::fs::write(&file, "metrics_listen = \"127.0.0.1:9100\"\n").unwrap();
        let from_file = |env: &[(String, String)], flag: Option<&str>| {
            let args = ServeArgs {
                config: Some(file.clone()),
                metrics_listen: flag.map(|f| f.parse().unwrap()),
                ..Default::default()
            };
            Config::from_sources(args, env).unwrap().metrics_listen
        };
        assert_eq!(
            from_file(&[], None),
            Some("127.0.0.1:9100".parse().unwrap())
        );
        let env = [(
            "PIGEON_METRICS_LISTEN".to_string(),
            "127.0.0.1:9200".to_string(),
        )];
        assert_eq!(
            from_file(&env, None),
            Some("127.0.0.1:9200".parse().unwrap())
        );
        assert_eq!(
            from_file(&env, Some("127.0.0.1:9300")),
            Some("127.0.0.1:9300".parse().unwrap())
        );
        let env = [("PIGEON_METRICS_LISTEN".to_string(), "nowhere".to_string())];
        let e = Config::from_sources(ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("PIGEON_METRICS_LISTEN"));
        assert_eq!(Config::default().metrics_listen, None);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let env = vec![("PIGEON_HEARTBEAT_S".to_string(), "3".to_string())];
        let e = Config::from_sources(ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("at least 5"));
        let env = vec![("PIGEON_DEVICE_RATE_BURST".to_string(), "0".to_string())];
        let e = Config::from_sources(ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("device_rate_burst"));
        let env = vec![("PIGEON_LISTEN".to_string(), "nowhere".to_string())];
        let e = Config::from_sources(ServeArgs::default(), &env).unwrap_err();
        assert!(e.to_string().contains("PIGEON_LISTEN"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "lissen = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert!(format!("{:#}", Config::from_sources(args, &[]).unwrap_err()).contains("lissen"));
    }
}
