//! `pigeon bench cluster`: several `pigeon serve` nodes on one PostgreSQL database and one
//! NATS server (cluster mode, `docs/cluster.md`), everything started here on 127.0.0.1: a
//! private PostgreSQL (`synchronous_commit = on`) and a private `nats-server`, unless
//! `--postgres` / `--nats` name running ones; each scenario gets a fresh database. Devices
//! are held by agent processes (`pigeon bench agent`), at most [`MAX_PER_AGENT`] each, so no
//! process nears its 20,000-descriptor limit.
//!
//! - `connections`: N nodes × M devices; one broadcast through one node; the time until every
//!   device has it (and acks it at once); idle memory per connection on each node.
//! - `unicast`: single-`registration_id` pushes through JPush's `POST /v3/push` (Basic auth),
//!   connections and devices spread over the nodes: the most pushes accepted per second,
//!   then latency API → device at a fixed rate; then one node on SQLite (no PostgreSQL, no
//!   NATS) the same way, side by side.
//! - `failover`: one node holds the devices; pushes go through the others; the node is killed
//!   (`SIGKILL`) in the middle; devices reconnect to the other nodes as `pigeon device
//!   simulate` does; the time until every device is back and has every push it had not
//!   acked, and the pushes lost.
//!
//! Everything started is stopped at the end, also when a scenario fails (guards), and tied to
//! this process (a parent-death signal) in case it is killed.

use crate::procs::{
    cpu_ns, free_port, now_us, rss_kib, run_loaders, split, wait_port, Agent, Guard, LoadRun,
};
use crate::table::{median, Table};
use anyhow::{bail, Context};
use base64::Engine as _;
use clap::{Args, ValueEnum};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most device connections one agent process holds.
pub const MAX_PER_AGENT: usize = 19_500;
/// How long a node is left alone before its memory is read (past `pigeon serve`'s 5 s heap
/// trim, as in `bench fanout`).
const SETTLE: Duration = Duration::from_secs(6);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Connections,
    Unicast,
    Failover,
    All,
}

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// A running PostgreSQL (a URL of a user that may CREATE DATABASE); a private one is
    /// started when not given.
    #[arg(long)]
    pub postgres: Option<String>,
    /// A running NATS server (`nats://host:port`); a private one is started when not given.
    #[arg(long)]
    pub nats: Option<String>,
    /// connections: nodes.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// connections: devices connected to each node.
    #[arg(long, default_value_t = 19_500)]
    pub devices_per_node: usize,
    /// connections: broadcasts (the table shows the median and every round).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// unicast: nodes.
    #[arg(long, default_value_t = 3)]
    pub unicast_nodes: usize,
    /// unicast: online devices the pushes go to, spread over the nodes.
    #[arg(long, default_value_t = 3000)]
    pub unicast_devices: usize,
    /// unicast: load-generating processes.
    #[arg(long, default_value_t = 2)]
    pub loaders: usize,
    /// unicast: keep-alive connections per load process, spread over the nodes.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// unicast: seconds per phase.
    #[arg(long, default_value_t = 10)]
    pub secs: u64,
    /// unicast: the fixed rates at which latency is measured, pushes/s (the first is the
    /// goal's).
    #[arg(long, value_delimiter = ',', default_value = "5000,2000")]
    pub rates: Vec<u64>,
    /// unicast: skip the single SQLite node.
    #[arg(long)]
    pub no_sqlite: bool,
    /// failover: nodes (one is killed).
    #[arg(long, default_value_t = 3)]
    pub failover_nodes: usize,
    /// failover: devices on the node that is killed.
    #[arg(long, default_value_t = 19_500)]
    pub failover_devices: usize,
    /// failover: single-device pushes per second through the other nodes, before and after
    /// the kill.
    #[arg(long, default_value_t = 2000)]
    pub failover_rate: u64,
    /// failover: seconds of pushing; the node is killed half-way.
    #[arg(long, default_value_t = 6)]
    pub failover_secs: u64,
    /// failover: how long to wait for every device and push after the kill.
    #[arg(long, default_value_t = 60)]
    pub failover_timeout_s: u64,
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let infra = Infra::start(args.postgres.as_deref(), args.nats.as_deref())?;
    eprintln!(
        "== PostgreSQL {} (synchronous_commit = {}), NATS {}",
        infra.shown_postgres(),
        infra
            .synchronous_commit()
            .unwrap_or_else(|e| format!("? ({e})")),
        infra.nats_url
    );
    let wanted: &[Scenario] = match args.scenario {
        Scenario::All => &[Scenario::Connections, Scenario::Unicast, Scenario::Failover],
        one => std::slice::from_ref(match one {
            Scenario::Connections => &Scenario::Connections,
            Scenario::Unicast => &Scenario::Unicast,
            _ => &Scenario::Failover,
        }),
    };
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for scenario in wanted {
        eprintln!("== scenario {scenario:?}");
        let outcome = match scenario {
            Scenario::Connections => connections(&infra, &args),
            Scenario::Unicast => unicast(&infra, &args),
            _ => failover(&infra, &args),
        };
        match outcome {
            Ok((table, line)) => {
                table.print();
                println!();
                println!("{line}");
                println!();
                lines.push(line);
            }
            Err(e) => {
                eprintln!("scenario {scenario:?} failed: {e:#}");
                failed.push(format!("{scenario:?}: {e:#}"));
            }
        }
    }
    if wanted.len() > 1 {
        println!("For BENCHMARKS.md:");
        for l in &lines {
            println!("- {l}");
        }
    }
    if !failed.is_empty() {
        bail!("{} scenario(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// PostgreSQL and NATS

/// Makes a child die with this thread (SIGKILL), in case the bench is killed without a
/// chance to stop what it started.
fn tie_to_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    let parent = unsafe { libc::getpid() };
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// Where a PostgreSQL program is: on PATH, else the newest /usr/lib/postgresql/*/bin.
fn find_postgres_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    dirs.extend(versions.into_iter().map(|(_, p)| p.join("bin")));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The uid and gid of the `postgres` user.
fn postgres_user() -> Option<(u32, u32)> {
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: not null, points to a valid passwd record.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

/// A PostgreSQL server of this run (also the geofence bench's PostGIS).
pub(crate) struct PrivatePostgres {
    child: Child,
    /// Removed (with the cluster's files) after the server stopped.
    _dir: tempfile::TempDir,
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT), then SIGKILL if it takes too long.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn last_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl PrivatePostgres {
    /// initdb in a new temporary directory and a server on a free port of 127.0.0.1, durable
    /// (`fsync`, `synchronous_commit = on`). As root both run as the `postgres` user.
    pub(crate) fn start() -> anyhow::Result<(PrivatePostgres, u16)> {
        let initdb = find_postgres_program("initdb").context(
            "initdb was not found on PATH nor under /usr/lib/postgresql/*/bin: install \
             PostgreSQL's server (apt-get install postgresql) or pass --postgres URL",
        )?;
        let postgres = initdb
            .parent()
            .map(|d| d.join("postgres"))
            .filter(|p| p.is_file())
            .context("no postgres program beside initdb")?;
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let user = if as_root {
            Some(postgres_user().context(
                "running as root, PostgreSQL refuses to run as root, and there is no \
                 `postgres` user to run it as",
            )?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("pigeon-bench-pg-")
            .tempdir()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let mut init = if as_root {
            let mut c = Command::new(find_on_path("runuser").context("runuser not found")?);
            c.args(["-u", "postgres", "--"]).arg(&initdb);
            c
        } else {
            Command::new(&initdb)
        };
        let out = init
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let log_file = std::fs::File::create(&log)?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))?;
        }
        let mut cmd = Command::new(&postgres);
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "max_connections=400",
                "-c",
                "shared_buffers=512MB",
                "-c",
                "log_min_messages=warning",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file));
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        tie_to_parent(&mut cmd);
        let mut child = cmd.spawn().context("starting postgres")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("postgres exited ({status}):\n{}", last_lines(&log, 20));
            }
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ready to accept connections")
            {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("postgres did not start in 60 s:\n{}", last_lines(&log, 20));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok((PrivatePostgres { child, _dir: dir }, port))
    }
}

/// Runs SQL statements on a PostgreSQL URL; the first column of the last statement's first
/// row, if any.
fn pg_execute(url: &str, sql: &str) -> anyhow::Result<Option<String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {}", redacted(url)))?;
        let driver = tokio::spawn(connection);
        let rows = client.simple_query(sql).await;
        drop(client);
        let _ = driver.await;
        let first = rows?.into_iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(String::from),
            _ => None,
        });
        Ok(first)
    })
}

/// A URL without its password.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = url[s + 3..at].split(':').next().unwrap_or("");
            format!("{}{user}@{}", &url[..s + 3], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// The same URL naming another database.
fn with_database(url: &str, db: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |s| s + 3);
    let (base, query) = match url[after_scheme..].find('/') {
        Some(slash) => {
            let path = &url[after_scheme + slash..];
            let query = path.find('?').map_or("", |q| &path[q..]);
            (&url[..after_scheme + slash], query)
        }
        None => match url.find('?') {
            Some(q) => (&url[..q], &url[q..]),
            None => (url, ""),
        },
    };
    format!("{base}/{db}{query}")
}

/// PostgreSQL and NATS for the scenarios.
struct Infra {
    /// A URL of a user that may create databases.
    admin_url: String,
    nats_url: String,
    /// The postmaster of the private server (its backends are its children).
    postgres_pid: Option<u32>,
    nats_pid: Option<u32>,
    databases: AtomicU64,
    // Dropped last: nodes and databases go first.
    _nats: Option<Guard>,
    _postgres: Option<PrivatePostgres>,
}

impl Infra {
    fn start(postgres: Option<&str>, nats: Option<&str>) -> anyhow::Result<Infra> {
        let (admin_url, pg, postgres_pid) = match postgres {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    bail!("--postgres must be a postgres:// URL");
                }
                (url.to_string(), None, None)
            }
            None => {
                let (pg, port) = PrivatePostgres::start()?;
                let pid = pg.child.id();
                (
                    format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                    Some(pg),
                    Some(pid),
                )
            }
        };
        let (nats_url, nats_guard, nats_pid) = match nats {
            Some(url) => (url.to_string(), None, None),
            None => {
                let bin = find_on_path("nats-server").context(
                    "nats-server is not installed; install the Debian package `nats-server` \
                     (apt-get install nats-server) or pass --nats URL",
                )?;
                let port = free_port()?;
                let mut cmd = Command::new(bin);
                cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                tie_to_parent(&mut cmd);
                let guard = Guard(cmd.spawn().context("starting nats-server")?);
                wait_port(port, Duration::from_secs(20))?;
                let pid = guard.pid();
                (format!("nats://127.0.0.1:{port}"), Some(guard), Some(pid))
            }
        };
        Ok(Infra {
            admin_url,
            nats_url,
            postgres_pid,
            nats_pid,
            databases: AtomicU64::new(0),
            _nats: nats_guard,
            _postgres: pg,
        })
    }

    fn shown_postgres(&self) -> String {
        match self.postgres_pid {
            Some(_) => format!("{} (private)", redacted(&self.admin_url)),
            None => redacted(&self.admin_url),
        }
    }

    fn synchronous_commit(&self) -> anyhow::Result<String> {
        Ok(pg_execute(&self.admin_url, "SHOW synchronous_commit")?.unwrap_or_default())
    }

    /// A new, empty database, dropped with the value.
    fn database(&self) -> anyhow::Result<Database> {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("pigeon_bench_{}_{n}", std::process::id());
        pg_execute(&self.admin_url, &format!("CREATE DATABASE \"{name}\""))
            .context("creating the scenario's database (the --postgres user must be allowed to CREATE DATABASE)")?;
        Ok(Database {
            url: with_database(&self.admin_url, &name),
            name,
            admin_url: self.admin_url.clone(),
        })
    }

    /// CPU the database and the bus used so far (ns), when they are this run's own.
    fn cpu(&self) -> (Option<u64>, Option<u64>) {
        (
            self.postgres_pid.map(tree_cpu_ns),
            self.nats_pid.map(cpu_ns),
        )
    }
}

/// One scenario's database.
struct Database {
    url: String,
    name: String,
    admin_url: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = pg_execute(&self.admin_url, &sql) {
            eprintln!("could not drop the database {}: {e:#}", self.name);
        }
    }
}

/// CPU time (ns) of a process and its children (PostgreSQL's backends).
fn tree_cpu_ns(pid: u32) -> u64 {
    let children: u64 = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|child| {
                    std::fs::read_to_string(format!("/proc/{child}/stat"))
                        .ok()
                        .and_then(|s| {
                            let rest = &s[s.rfind(')')? + 1..];
                            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                        })
                        == Some(pid)
                })
                .map(cpu_ns)
                .sum()
        })
        .unwrap_or(0);
    cpu_ns(pid) + children
}

/// CPU time used so far (ns) by the servers, PostgreSQL (postmaster and backends) and NATS
/// (when they are this run's own) and the load (agents).
#[derive(Clone, Copy)]
struct Cpu {
    servers: u64,
    postgres: Option<u64>,
    nats: Option<u64>,
    load: u64,
}

impl Cpu {
    fn now(infra: Option<&Infra>, servers: &[u32], load: &[u32]) -> Cpu {
        let (postgres, nats) = infra.map_or((None, None), Infra::cpu);
        Cpu {
            servers: servers.iter().map(|p| cpu_ns(*p)).sum(),
            postgres,
            nats,
            load: load.iter().map(|p| cpu_ns(*p)).sum(),
        }
    }

    /// µs per unit of work since `earlier`.
    fn per(&self, earlier: &Cpu, units: u64) -> CpuPer {
        let us = |a: u64, b: u64| a.saturating_sub(b) as f64 / 1000.0 / units.max(1) as f64;
        let opt = |a: Option<u64>, b: Option<u64>| Some(us(a?, b?));
        CpuPer {
            servers: us(self.servers, earlier.servers),
            postgres: opt(self.postgres, earlier.postgres),
            nats: opt(self.nats, earlier.nats),
            load: us(self.load, earlier.load),
        }
    }
}

/// CPU µs per unit of work: servers, PostgreSQL, NATS, load.
#[derive(Clone, Copy, Debug)]
struct CpuPer {
    servers: f64,
    postgres: Option<f64>,
    nats: Option<f64>,
    load: f64,
}

impl std::fmt::Display for CpuPer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
        write!(
            f,
            "{:.1} + {} + {} + {:.1}",
            self.servers,
            opt(self.postgres),
            opt(self.nats),
            self.load
        )
    }
}

// ---------------------------------------------------------------------------------------
// Nodes

struct Node {
    guard: Option<Guard>,
    port: u16,
    base: String,
    log: PathBuf,
}

impl Node {
    fn pid(&self) -> Option<u32> {
        self.guard.as_ref().map(Guard::pid)
    }
}

/// The nodes of one scenario, with their app.
struct Nodes {
    nodes: Vec<Node>,
    app_key: String,
    master_secret: String,
    dir: tempfile::TempDir,
}

/// `GET /health`: the status code.
fn health(port: u16) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")
}

/// The server's connection cap for `devices` device connections: past the default (which
/// keeps 1,000 descriptors of the 20,000 for the server and a tenth of the rest for API
/// calls, 18,000 devices) when more are wanted.
/// A server's connection cap for `devices` devices: the default cap keeps descriptors back
/// for the server and would refuse a device short of 19,500.
pub(crate) fn max_connections_for(devices: usize) -> usize {
    (devices + 1_100).max(19_000)
}

impl Nodes {
    /// An app in `db`, then `n` nodes on it.
    fn start(infra: &Infra, db: &Database, n: usize, max_devices: usize) -> anyhow::Result<Nodes> {
        let dir = tempfile::Builder::new()
            .prefix("pigeon-bench-cluster-")
            .tempdir()?;
        let exe = std::env::current_exe()?;
        let out = Command::new(&exe)
            .args(["app", "create", "--name", "bench", "--data"])
            .arg(dir.path().join("cli"))
            .env("PIGEON_POSTGRES_URL", &db.url)
            .env("RUST_LOG", "warn")
            .output()
            .context("pigeon app create")?;
        if !out.status.success() {
            bail!(
                "pigeon app create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let app: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let mut nodes = Vec::new();
        for k in 0..n {
            let port = free_port()?;
            let log = dir.path().join(format!("node-{k}.log"));
            let log_file = std::fs::File::create(&log)?;
            let mut cmd = Command::new(&exe);
            cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
                .arg(dir.path().join(format!("node-{k}")))
                .env("PIGEON_POSTGRES_URL", &db.url)
                .env("PIGEON_NATS_URL", &infra.nats_url)
                .env("PIGEON_NODE_ID", format!("bench-node-{k}"))
                .env("PIGEON_HEARTBEAT_S", "600")
                .env(
                    "PIGEON_MAX_CONNECTIONS",
                    max_connections_for(max_devices).to_string(),
                )
                .env(
                    "RUST_LOG",
                    std::env::var("PIGEON_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::from(log_file));
            tie_to_parent(&mut cmd);
            let guard = Guard(cmd.spawn().context("pigeon serve")?);
            nodes.push(Node {
                guard: Some(guard),
                port,
                base: format!("http://127.0.0.1:{port}"),
                log,
            });
        }
        let nodes = Nodes {
            nodes,
            app_key: app["app_key"].as_str().unwrap_or_default().to_string(),
            master_secret: app["master_secret"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        for node in &nodes.nodes {
            loop {
                if matches!(health(node.port), Ok(200)) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "node on port {} not ready in 90 s:\n{}",
                        node.port,
                        last_lines(&node.log, 20)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(nodes)
    }

    fn auth(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.app_key, self.master_secret))
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Node::pid).collect()
    }

    /// Warnings and errors the nodes logged, per node.
    fn log_summary(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(k, n)| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let warn = text.lines().filter(|l| l.contains(" WARN ")).count();
                let err = text.lines().filter(|l| l.contains(" ERROR ")).count();
                format!("node {k}: {warn} warnings, {err} errors")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Prints what the nodes logged (the last lines), for a scenario that failed or when
    /// they logged warnings.
    fn report_logs(&self, all: bool) {
        eprintln!("   node logs: {}", self.log_summary());
        for (k, n) in self.nodes.iter().enumerate() {
            let tail = last_lines(&n.log, if all { 15 } else { 5 });
            if !tail.is_empty() {
                eprintln!(
                    "   --- node {k} ({}), last lines:\n{tail}",
                    self.dir.path().display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Agents

/// A device agent and how many devices it holds.
struct Devices {
    agent: Agent,
    count: usize,
    registration_ids: Vec<String>,
}

/// Spawns device agents (at most [`MAX_PER_AGENT`] devices each) registering through
/// `servers` (device i of an agent through servers[i % n]) and waits for their
/// registrations. `ip` is the first source address's last byte.
fn spawn_devices(
    total: usize,
    min_agents: usize,
    servers: &[String],
    app_key: &str,
    ip: &mut u8,
    id: &mut usize,
    extra: &[String],
) -> anyhow::Result<Vec<Devices>> {
    let parts = total.div_ceil(MAX_PER_AGENT).max(min_agents).max(1);
    let mut out = Vec::new();
    for count in split(total, parts) {
        let mut a = vec![
            "--mode".to_string(),
            "pigeon".into(),
            "--server".into(),
            servers[0].clone(),
            "--servers".into(),
            servers.join(","),
            "--app-key".into(),
            app_key.to_string(),
            "--count".into(),
            count.to_string(),
            "--source-ip".into(),
            format!("127.0.0.{ip}"),
            "--id".into(),
            id.to_string(),
        ];
        a.extend_from_slice(extra);
        *ip = ip.wrapping_add(1);
        *id += 1;
        out.push(Devices {
            agent: Agent::spawn(&a)?,
            count,
            registration_ids: Vec::new(),
        });
    }
    for d in out.iter_mut() {
        let v = d.agent.recv()?;
        d.registration_ids = v["registration_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if d.registration_ids.len() != d.count {
            bail!(
                "an agent registered {} of {}",
                d.registration_ids.len(),
                d.count
            );
        }
    }
    Ok(out)
}

/// Has these agents connect their devices, all at once, and waits for every one.
fn connect_devices<'a>(devices: impl IntoIterator<Item = &'a mut Devices>) -> anyhow::Result<()> {
    let mut devices: Vec<&mut Devices> = devices.into_iter().collect();
    for d in devices.iter_mut() {
        d.agent.send("connect")?;
    }
    for d in devices.iter_mut() {
        let v = d.agent.recv()?;
        if v["connected"].as_u64() != Some(d.count as u64) {
            bail!("an agent connected {v} of {}", d.count);
        }
    }
    Ok(())
}

fn quit_all(devices: &mut [Devices]) {
    for d in devices.iter_mut() {
        let _ = d.agent.send("quit");
    }
}

/// `POST /v3/push` on its own connection; (when the request was written, the msg_id).
fn push(port: u16, auth: &str, body: &str) -> anyhow::Result<(u64, u64)> {
    let request = format!(
        "POST /v3/push HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let t0 = now_us();
    s.write_all(request.as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    if !answer.starts_with("HTTP/1.1 200") {
        bail!("push refused: {answer}");
    }
    let msg_id = answer
        .find("\r\n\r\n")
        .and_then(|at| crate::wsclient::json_field(&answer[at + 4..], "msg_id"))
        .and_then(|id| id.parse().ok())
        .context("no msg_id in the answer")?;
    Ok((t0, msg_id))
}

fn broadcast(port: u16, auth: &str) -> anyhow::Result<(u64, u64)> {
    let body = format!(
        r#"{{"platform":"all","audience":"all","notification":{{"alert":"bench","android":{{"extras":{{"t":{}}}}}}}}}"#,
        now_us()
    );
    push(port, auth, &body)
}

/// "1 node", "3 nodes".
fn nodes_word(n: usize) -> String {
    if n == 1 {
        "1 node".into()
    } else {
        format!("{n} nodes")
    }
}

/// "met" or by how much a figure misses its goal.
fn verdict(value: f64, goal: f64, lower_is_better: bool) -> String {
    let met = if lower_is_better {
        value <= goal
    } else {
        value >= goal
    };
    if met {
        "met".into()
    } else if lower_is_better {
        format!(
            "missed by {:.0}% ({:.2}× the goal)",
            (value / goal - 1.0) * 100.0,
            value / goal
        )
    } else {
        format!(
            "missed by {:.0}% ({:.2} of the goal)",
            (1.0 - value / goal) * 100.0,
            value / goal
        )
    }
}

// ---------------------------------------------------------------------------------------
// connections

fn connections(infra: &Infra, args: &ClusterArgs) -> anyhow::Result<(Table, String)> {
    let n = args.nodes.max(1);
    let per_node = args.devices_per_node.max(1);
    let db = infra.database()?;
    let nodes = Nodes::start(infra, &db, n, per_node)?;
    let result = connections_on(infra, args, &nodes, per_node);
    nodes.report_logs(result.is_err());
    result
}

fn connections_on(
    infra: &Infra,
    args: &ClusterArgs,
    nodes: &Nodes,
    per_node: usize,
) -> anyhow::Result<(Table, String)> {
    let n = nodes.nodes.len();
    let (mut ip, mut id) = (10u8, 0usize);
    let t = Instant::now();
    // Per node, its agents: all register at once (each through its node).
    let mut devices: Vec<Vec<Devices>> = Vec::new();
    for node in &nodes.nodes {
        // Two agents a node at least, connected one after the other: see below.
        devices.push(spawn_devices(
            per_node,
            2,
            std::slice::from_ref(&node.base),
            &nodes.app_key,
            &mut ip,
            &mut id,
            &[],
        )?);
    }
    let registered_s = t.elapsed().as_secs_f64();
    eprintln!(
        "   {} devices registered in {registered_s:.1} s",
        n * per_node
    );
    std::thread::sleep(SETTLE);
    let pids = nodes.pids();
    let before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect::<Result<_, _>>()?;
    // Each node's first agents connect, then its others: an allocator hands the memory the
    // registrations freed to the first connections, so what the later ones add is what a
    // connection costs (as `bench fanout` measures it).
    let t = Instant::now();
    let mut later_counts = Vec::with_capacity(n);
    connect_devices(devices.iter_mut().flat_map(|d| {
        let first = d.len() / 2;
        d[..first].iter_mut()
    }))?;
    std::thread::sleep(SETTLE);
    let mid: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect::<Result<_, _>>()?;
    connect_devices(devices.iter_mut().flat_map(|d| {
        let first = d.len() / 2;
        later_counts.push(d[first..].iter().map(|a| a.count).sum::<usize>());
        d[first..].iter_mut()
    }))?;
    let connected_s = t.elapsed().as_secs_f64() - SETTLE.as_secs_f64();
    eprintln!("   {} connections in {connected_s:.1} s", n * per_node);
    std::thread::sleep(SETTLE);
    let after: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect::<Result<_, _>>()?;
    let bytes_each = |from: u64, to: u64, count: usize| {
        (to.saturating_sub(from) * 1024) as f64 / count.max(1) as f64
    };
    let per_conn: Vec<f64> = (0..n)
        .map(|i| bytes_each(mid[i], after[i], later_counts[i]))
        .collect();
    let all_n: Vec<f64> = (0..n)
        .map(|i| bytes_each(before[i], after[i], per_node))
        .collect();
    eprintln!("   idle B/connection per node, later half: {per_conn:.0?}; all: {all_n:.0?}");

    let total = n * per_node;
    let auth = nodes.auth();
    let mut rounds_ms = Vec::new();
    let mut cpu_rows = Vec::new();
    let mut all: Vec<&mut Devices> = devices.iter_mut().flatten().collect();
    for r in 0..args.rounds.max(1) {
        for d in all.iter_mut() {
            d.agent.send("reset")?;
            d.agent.recv()?;
        }
        for d in all.iter_mut() {
            d.agent.send(&format!("wait {} 60", d.count))?;
        }
        let agent_pids: Vec<u32> = all.iter().map(|d| d.agent.pid()).collect();
        let before = Cpu::now(Some(infra), &pids, &agent_pids);
        let (t0, _) = broadcast(nodes.nodes[0].port, &auth)?;
        let (mut last, mut received) = (0u64, 0u64);
        for d in all.iter_mut() {
            let v = d.agent.recv()?;
            received += v["received"].as_u64().unwrap_or(0);
            last = last.max(v["last_us"].as_u64().unwrap_or(0));
        }
        let cpu = Cpu::now(Some(infra), &pids, &agent_pids).per(&before, total as u64);
        if received != total as u64 {
            bail!("round {r}: only {received} of {total} devices got the broadcast in 60 s");
        }
        let ms = last.saturating_sub(t0) as f64 / 1000.0;
        eprintln!("   round {r}: {ms:.1} ms; CPU µs per delivery, nodes + PostgreSQL + NATS + agents: {cpu}");
        rounds_ms.push(ms);
        cpu_rows.push(cpu);
        std::thread::sleep(Duration::from_millis(500));
    }
    for d in all.iter_mut() {
        let _ = d.agent.send("quit");
    }
    let med = median(rounds_ms.iter().copied());
    let mid = cpu_rows
        .iter()
        .zip(&rounds_ms)
        .find(|(_, ms)| **ms == med)
        .map(|(c, _): (&CpuPer, _)| c.to_string())
        .unwrap_or_default();
    let mean_conn = per_conn.iter().sum::<f64>() / per_conn.len().max(1) as f64;
    let max_conn = per_conn.iter().copied().fold(0.0, f64::max);
    let mut table = Table::new(&[
        "nodes",
        "devices per node",
        "connections",
        "registered in s",
        "connected in s",
        "broadcast fully acked ms (median)",
        "rounds ms",
        "deliveries/s",
        "CPU µs/delivery nodes + PostgreSQL + NATS + agents (median round)",
        "idle B/conn per node (later half)",
        "idle B/conn mean (later half)",
        "idle B/conn per node (all)",
    ]);
    table.row(vec![
        n.to_string(),
        per_node.to_string(),
        total.to_string(),
        format!("{registered_s:.1}"),
        format!("{connected_s:.1}"),
        format!("{med:.1}"),
        rounds_ms
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        format!("{:.0}", total as f64 / (med / 1000.0)),
        mid,
        per_conn
            .iter()
            .map(|b| format!("{b:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
        format!("{mean_conn:.0}"),
        all_n
            .iter()
            .map(|b| format!("{b:.0}"))
            .collect::<Vec<_>>()
            .join(" / "),
    ]);
    let line = format!(
        "cluster connections: {} × {per_node} devices = {total} WebSocket connections; one \
         broadcast through one node fully acked in {:.2} s (median of {}; goal ≤ 1.5 s: {}); idle \
         memory {mean_conn:.0} B per connection on average, {max_conn:.0} B on the worst node \
         (goal ≤ 2 KiB: {})",
        nodes_word(n),
        med / 1000.0,
        rounds_ms.len(),
        verdict(med / 1000.0, 1.5, true),
        verdict(max_conn, 2048.0, true),
    );
    Ok((table, line))
}

// ---------------------------------------------------------------------------------------
// unicast

/// One phase of single-device pushes.
struct Phase {
    name: String,
    ok: u64,
    errors: u64,
    secs: u64,
    api_p50_us: u64,
    api_p99_us: u64,
    dev_p50_us: Option<u64>,
    dev_p99_us: Option<u64>,
    delivered: u64,
    /// CPU µs per accepted push.
    cpu: CpuPer,
    /// PostgreSQL transactions committed in the scenario's database per accepted push.
    commits_per_push: Option<f64>,
}

/// Transactions committed so far in a database (PostgreSQL's statistics, which a busy
/// backend reports within a second).
fn commits(db: &Database) -> Option<u64> {
    pg_execute(
        &db.url,
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .ok()
    .flatten()
    .and_then(|c| c.parse().ok())
}

/// Runs "max" and then each fixed rate with `loaders` pushing to `devices`' registration
/// ids.
fn push_phases(
    (infra, db): (Option<&Infra>, Option<&Database>),
    server_pids: &[u32],
    devices: &mut [Devices],
    loaders: &mut [Agent],
    secs: u64,
    rates: &[u64],
) -> anyhow::Result<Vec<Phase>> {
    let mut out = Vec::new();
    let phases =
        std::iter::once(("max".to_string(), 0)).chain(rates.iter().map(|r| (format!("{r}/s"), *r)));
    for (name, rate) in phases {
        for d in devices.iter_mut() {
            d.agent.send("reset")?;
            d.agent.recv()?;
        }
        let load_pids: Vec<u32> = loaders
            .iter()
            .map(Agent::pid)
            .chain(devices.iter().map(|d| d.agent.pid()))
            .collect();
        let commits_before = db.and_then(commits);
        let before = Cpu::now(infra, server_pids, &load_pids);
        let LoadRun {
            ok,
            errors,
            api_p50_us: p50,
            api_p99_us: p99,
        } = run_loaders(loaders, rate, secs, "jpush")?;
        // Each device agent waits for its share: every push went to one device, and the
        // agents hold disjoint devices, so the total is what counts.
        let (mut dev50, mut dev99) = (None::<u64>, None::<u64>);
        let deadline = Instant::now() + Duration::from_secs(30);
        let delivered = loop {
            let mut delivered = 0;
            for d in devices.iter_mut() {
                d.agent.send("stats")?;
                delivered += d.agent.recv()?["received"].as_u64().unwrap_or(0);
            }
            if delivered >= ok || Instant::now() > deadline {
                break delivered;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for d in devices.iter_mut() {
            d.agent.send("wait 0 0")?;
            let v = d.agent.recv()?;
            let take = |k: &str, cur: Option<u64>| match (v[k].as_u64(), cur) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            dev50 = take("latency_p50_us", dev50);
            dev99 = take("latency_p99_us", dev99);
        }
        let cpu = Cpu::now(infra, server_pids, &load_pids).per(&before, ok);
        // Statistics of the backends still busy a moment ago arrive within a second.
        let commits_per_push = match (commits_before, db) {
            (Some(b), Some(db)) => {
                std::thread::sleep(Duration::from_millis(1100));
                commits(db).map(|a| a.saturating_sub(b) as f64 / ok.max(1) as f64)
            }
            _ => None,
        };
        eprintln!(
            "   {name}: {ok} accepted, {errors} errors, {delivered} delivered; CPU µs per push, \
             servers + PostgreSQL + NATS + load: {cpu}; PostgreSQL commits per push: {commits_per_push:.2?}"
        );
        if delivered < ok {
            bail!("{name}: {ok} pushes accepted but only {delivered} delivered within 30 s");
        }
        out.push(Phase {
            name,
            ok,
            errors,
            secs,
            api_p50_us: p50,
            api_p99_us: p99,
            dev_p50_us: dev50,
            dev_p99_us: dev99,
            delivered,
            cpu,
            commits_per_push,
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    Ok(out)
}

fn spawn_loaders(
    args: &ClusterArgs,
    servers: &[String],
    auth: &str,
    app_key: &str,
    rids_file: &Path,
    first_ip: u8,
) -> anyhow::Result<Vec<Agent>> {
    (0..args.loaders.max(1))
        .map(|i| {
            Agent::spawn(&[
                "--mode".into(),
                "http".into(),
                "--server".into(),
                servers[0].clone(),
                "--servers".into(),
                servers.join(","),
                "--auth".into(),
                auth.to_string(),
                "--app-key".into(),
                app_key.to_string(),
                "--rids-file".into(),
                rids_file.display().to_string(),
                "--count".into(),
                args.connections.to_string(),
                "--source-ip".into(),
                format!("127.0.0.{}", first_ip as usize + i),
            ])
        })
        .collect()
}

fn write_rids(devices: &[Devices], dir: &Path) -> anyhow::Result<PathBuf> {
    let rids: Vec<&str> = devices
        .iter()
        .flat_map(|d| d.registration_ids.iter().map(String::as_str))
        .collect();
    let path = dir.join("rids.txt");
    std::fs::write(&path, rids.join("\n"))?;
    Ok(path)
}

fn unicast(infra: &Infra, args: &ClusterArgs) -> anyhow::Result<(Table, String)> {
    let n = args.unicast_nodes.max(1);
    let devices_total = args.unicast_devices.max(1);
    let cluster = {
        let db = infra.database()?;
        let nodes = Nodes::start(infra, &db, n, devices_total.div_ceil(n))?;
        let servers: Vec<String> = nodes.nodes.iter().map(|n| n.base.clone()).collect();
        let result = (|| {
            let (mut ip, mut id) = (100u8, 100usize);
            let mut devices = spawn_devices(
                devices_total,
                1,
                &servers,
                &nodes.app_key,
                &mut ip,
                &mut id,
                &[],
            )?;
            connect_devices(&mut devices)?;
            let rids = write_rids(&devices, nodes.dir.path())?;
            let mut loaders =
                spawn_loaders(args, &servers, &nodes.auth(), &nodes.app_key, &rids, 110)?;
            let phases = push_phases(
                (Some(infra), Some(&db)),
                &nodes.pids(),
                &mut devices,
                &mut loaders,
                args.secs,
                &args.rates,
            );
            for l in loaders.iter_mut() {
                let _ = l.send("quit");
            }
            quit_all(&mut devices);
            phases
        })();
        nodes.report_logs(result.is_err());
        result?
    };
    let sqlite = if args.no_sqlite {
        None
    } else {
        eprintln!("   one node on SQLite");
        let server = crate::procs::PigeonServer::start(&[
            ("PIGEON_HEARTBEAT_S", "600"),
            ("PIGEON_SQLITE_SYNCHRONOUS", "full"),
            (
                "PIGEON_MAX_CONNECTIONS",
                &max_connections_for(devices_total).to_string(),
            ),
        ])?;
        let servers = vec![server.base.clone()];
        let (mut ip, mut id) = (120u8, 200usize);
        let mut devices = spawn_devices(
            devices_total,
            1,
            &servers,
            &server.app_key,
            &mut ip,
            &mut id,
            &[],
        )?;
        connect_devices(&mut devices)?;
        let dir = tempfile::tempdir()?;
        let rids = write_rids(&devices, dir.path())?;
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", server.app_key, server.master_secret));
        let mut loaders = spawn_loaders(args, &servers, &auth, &server.app_key, &rids, 130)?;
        let phases = push_phases(
            (None, None),
            &[server.guard.pid()],
            &mut devices,
            &mut loaders,
            args.secs,
            &args.rates,
        )?;
        for l in loaders.iter_mut() {
            let _ = l.send("quit");
        }
        quit_all(&mut devices);
        Some(phases)
    };

    let mut table = Table::new(&[
        "setup",
        "phase",
        "pushes/s accepted",
        "errors",
        "API p50 ms",
        "API p99 ms",
        "to-device p50 ms",
        "to-device p99 ms",
        "delivered",
        "CPU µs/push servers + PostgreSQL + NATS + load",
        "PostgreSQL commits/push",
    ]);
    let ms = |us: Option<u64>| us.map_or("–".into(), |u| format!("{:.2}", u as f64 / 1000.0));
    let setups = [
        (
            format!("{}, PostgreSQL + NATS", nodes_word(n)),
            Some(&cluster),
        ),
        ("1 node, SQLite".to_string(), sqlite.as_ref()),
    ];
    for (setup, phases) in setups {
        for p in phases.into_iter().flatten() {
            table.row(vec![
                setup.clone(),
                p.name.clone(),
                format!("{:.0}", p.ok as f64 / p.secs as f64),
                p.errors.to_string(),
                ms(Some(p.api_p50_us)),
                ms(Some(p.api_p99_us)),
                ms(p.dev_p50_us),
                ms(p.dev_p99_us),
                p.delivered.to_string(),
                p.cpu.to_string(),
                p.commits_per_push.map_or("–".into(), |c| format!("{c:.2}")),
            ]);
        }
    }
    let rate_of = |p: &Phase| p.ok as f64 / p.secs as f64;
    let ms_of = |us: Option<u64>| us.unwrap_or(0) as f64 / 1000.0;
    let max_rate = rate_of(&cluster[0]);
    let mut line = format!(
        "cluster unicast: {}, {devices_total} devices: {max_rate:.0} durable pushes/s \
         accepted at most (goal ≥ 10,000/s: {})",
        nodes_word(n),
        verdict(max_rate, 10_000.0, false),
    );
    for p in cluster.iter().skip(1) {
        line.push_str(&format!(
            "; at {}: API-to-device p50 {:.2} ms, p99 {:.2} ms{}",
            p.name,
            ms_of(p.dev_p50_us),
            ms_of(p.dev_p99_us),
            if p.name == "5000/s" {
                format!(
                    " (goal p99 ≤ 20 ms at 5,000/s: {})",
                    verdict(ms_of(p.dev_p99_us), 20.0, true)
                )
            } else {
                String::new()
            }
        ));
    }
    if let Some(s) = &sqlite {
        line.push_str(&format!(
            "; one SQLite node: {:.0}/s at most (cluster/SQLite {:.2}×)",
            rate_of(&s[0]),
            max_rate / rate_of(&s[0])
        ));
        for (c, q) in cluster.iter().zip(s).skip(1) {
            line.push_str(&format!(
                ", p99 at {} {:.2} ms (cluster/SQLite {:.2}×)",
                q.name,
                ms_of(q.dev_p99_us),
                ms_of(c.dev_p99_us) / ms_of(q.dev_p99_us)
            ));
        }
    }
    Ok((table, line))
}

// ---------------------------------------------------------------------------------------
// failover

fn failover(infra: &Infra, args: &ClusterArgs) -> anyhow::Result<(Table, String)> {
    let n = args.failover_nodes.max(2);
    let devices_total = args.failover_devices.max(1);
    let db = infra.database()?;
    // The survivors take the victim's devices: with two nodes, all of them.
    let mut nodes = Nodes::start(infra, &db, n, devices_total)?;
    let result = failover_on(args, &mut nodes, devices_total);
    nodes.report_logs(result.is_err());
    result
}

/// What the devices of a failover say about themselves, summed over the agents.
#[derive(Default)]
struct Reconnected {
    received: u64,
    connected: u64,
    reconnects: u64,
    last_reconnect: u64,
    duplicates: u64,
    given_up: u64,
    failed_attempts: u64,
}

fn failover_on(
    args: &ClusterArgs,
    nodes: &mut Nodes,
    devices_total: usize,
) -> anyhow::Result<(Table, String)> {
    let victim = nodes.nodes[0].base.clone();
    let survivors: Vec<String> = nodes.nodes[1..].iter().map(|n| n.base.clone()).collect();
    let (mut ip, mut id) = (140u8, 300usize);
    let extra = vec![
        "--reconnect".to_string(),
        "--fallback".into(),
        survivors.join(","),
    ];
    let mut devices = spawn_devices(
        devices_total,
        1,
        std::slice::from_ref(&victim),
        &nodes.app_key,
        &mut ip,
        &mut id,
        &extra,
    )?;
    connect_devices(&mut devices)?;
    eprintln!("   {devices_total} devices on node 0");
    let rids = write_rids(&devices, nodes.dir.path())?;
    let auth = nodes.auth();
    let mut loader = Agent::spawn(&[
        "--mode".into(),
        "http".into(),
        "--server".into(),
        survivors[0].clone(),
        "--servers".into(),
        survivors.join(","),
        "--auth".into(),
        auth.clone(),
        "--app-key".into(),
        nodes.app_key.clone(),
        "--rids-file".into(),
        rids.display().to_string(),
        "--count".into(),
        "16".into(),
        "--source-ip".into(),
        "127.0.0.150".into(),
    ])?;
    std::thread::sleep(Duration::from_secs(2));
    let secs = args.failover_secs.max(2);
    loader.send(&format!("run {} {secs} jpush ids", args.failover_rate))?;
    // The loader's schedule starts 300 ms after the command.
    std::thread::sleep(Duration::from_millis(300) + Duration::from_secs(secs) / 2);
    // One broadcast through another node right before the kill: most of the victim's
    // devices cannot have acked it yet.
    let (_, broadcast_id) = broadcast(nodes.nodes[1].port, &auth)?;
    let kill_us = now_us();
    if let Some(mut guard) = nodes.nodes[0].guard.take() {
        let _ = guard.0.kill(); // SIGKILL
        let _ = guard.0.wait();
    }
    eprintln!("   node 0 killed");
    let v = loader.recv()?;
    let _ = loader.send("quit");
    let errors = v["errors"].as_u64().unwrap_or(0);
    let accepted: Vec<(u64, u64)> = v["accepted"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_u64()?, p[1].as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    if (accepted.len() as u64) < v["ok"].as_u64().unwrap_or(0) {
        bail!("the loader did not report every accepted push's msg_id");
    }
    let expected = accepted.len() as u64 + devices_total as u64;
    // Wait for every device to be back and every push to be in.
    let deadline = Instant::now() + Duration::from_secs(args.failover_timeout_s);
    let mut st;
    loop {
        st = Reconnected::default();
        for d in devices.iter_mut() {
            d.agent.send("stats")?;
            let s = d.agent.recv()?;
            let get = |k: &str| s[k].as_u64().unwrap_or(0);
            st.received += get("received");
            st.connected += get("connected");
            st.reconnects += get("reconnects");
            st.last_reconnect = st.last_reconnect.max(get("last_reconnect_us"));
            st.duplicates += get("duplicates");
            st.given_up += get("given_up");
            st.failed_attempts += get("failed_attempts");
        }
        if (st.connected == devices_total as u64 && st.received >= expected)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let Reconnected {
        received,
        connected,
        reconnects,
        last_reconnect,
        duplicates: dups,
        given_up,
        failed_attempts,
    } = st;
    eprintln!(
        "   {connected} of {devices_total} connected again ({reconnects} reconnects, \
         {failed_attempts} failed attempts, {given_up} gave up), {received} of {expected} \
         deliveries, {dups} duplicates"
    );
    // msg_id → (devices that got it, of those before the kill, last first receipt).
    let mut got: HashMap<u64, (u64, u64, u64)> = HashMap::new();
    for d in devices.iter_mut() {
        d.agent.send(&format!("msgs {kill_us}"))?;
        let v = d.agent.recv()?;
        for m in v["msgs"].as_array().into_iter().flatten() {
            let (Some(id), Some(count), Some(before)) =
                (m[0].as_u64(), m[1].as_u64(), m[2].as_u64())
            else {
                continue;
            };
            let e = got.entry(id).or_default();
            e.0 += count;
            e.1 += before;
            e.2 = e.2.max(m[3].as_u64().unwrap_or(0));
        }
    }
    quit_all(&mut devices);
    let total_devices = devices_total as u64;
    // Deliveries owed: each unicast to one device, the broadcast to all.
    let mut owed: Vec<(u64, u64, bool)> = accepted
        .iter()
        .map(|(id, answered)| (*id, 1, *answered <= kill_us))
        .collect();
    owed.push((broadcast_id, total_devices, true));
    let (mut lost, mut before_kill, mut pending_at_kill, mut after_kill) = (0u64, 0u64, 0u64, 0u64);
    let (mut last_pre, mut last_all) = (kill_us, kill_us);
    for (id, want, pre) in &owed {
        let (count, before, last) = got.get(id).copied().unwrap_or_default();
        lost += want.saturating_sub(count);
        if *pre {
            before_kill += want;
            pending_at_kill += want.saturating_sub(before);
            last_pre = last_pre.max(last);
        } else {
            after_kill += want;
        }
        last_all = last_all.max(last);
    }
    let s = |t: u64| t.saturating_sub(kill_us) as f64 / 1e6;
    let back_s = s(last_reconnect);
    let recovered_s = back_s.max(s(last_pre));
    let complete = connected == total_devices && lost == 0;
    let mut table = Table::new(&[
        "devices on the killed node",
        "deliveries accepted before the kill",
        "not received at the kill",
        "deliveries accepted after the kill",
        "all devices back after s",
        "all pre-kill pushes in after s",
        "every push in after s",
        "lost",
        "duplicates",
        "failed reconnect attempts",
        "push errors",
    ]);
    table.row(vec![
        devices_total.to_string(),
        before_kill.to_string(),
        pending_at_kill.to_string(),
        after_kill.to_string(),
        if connected == total_devices {
            format!("{back_s:.2}")
        } else {
            format!(
                "{connected} of {devices_total} back in {} s",
                args.failover_timeout_s
            )
        },
        format!("{:.2}", s(last_pre)),
        format!("{:.2}", s(last_all)),
        lost.to_string(),
        dups.to_string(),
        failed_attempts.to_string(),
        errors.to_string(),
    ]);
    let line =
        format!(
        "cluster failover: {} nodes, {devices_total} devices on the node killed (SIGKILL) while \
         {}/s single-device pushes and a broadcast went through the others: every device back \
         and holding every push it had not acked after {recovered_s:.2} s (goal ≤ 10 s: {}); \
         {lost} of {} deliveries lost (goal 0: {}); {dups} duplicates{}",
        nodes.nodes.len(),
        args.failover_rate,
        verdict(recovered_s, 10.0, true),
        before_kill + after_kill,
        if lost == 0 { "met" } else { "missed" },
        if complete { "" } else { " (INCOMPLETE: see the table)" },
    );
    Ok((table, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres", "x"),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h:5432/db?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(redacted("postgres://u:secret@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(1.0, 1.5, true), "met");
        assert!(verdict(3.0, 1.5, true).starts_with("missed by 100%"));
        assert!(verdict(5000.0, 10000.0, false).starts_with("missed by 50%"));
    }
}
