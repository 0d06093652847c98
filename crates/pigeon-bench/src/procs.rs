//! Processes a scenario starts: the Pigeon server, peers, agents; and what we read off them.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Microseconds since the Unix epoch: the one clock every process of a run shares.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A TCP connection from a chosen local address (load generators spread over 127.0.0.x to get
/// past one address's ephemeral ports), with Nagle off.
///
/// The port is chosen at connect time (`IP_BIND_ADDRESS_NO_PORT`), not by `bind`: the kernel's
/// search for a free port in `bind(ip, 0)` walks the ports already bound on that address, so
/// with ~20k connections from one address each bind cost tens of microseconds of kernel time
/// and one agent took ~40 s to open 19,500 connections.
pub async fn connect_from(
    source: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from a live local for the socket's own descriptor.
        // Failing is harmless (the port is then chosen by bind, slower).
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    socket.bind(std::net::SocketAddr::new(source, 0))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib = rest.trim().trim_end_matches("kB").trim();
            return Ok(kib.parse()?);
        }
    }
    bail!("no VmRSS for pid {pid}")
}

/// CPU time a process has used so far, all its threads, in nanoseconds.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_port(port: u16, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port} after {limit:?}")
}

/// Fails with a clear message when a peer program is not installed.
pub fn require(program: &str, package: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(program).is_file();
    if !found {
        bail!("{program} is not installed; install the Debian package `{package}` (apt-get install {package})");
    }
    Ok(())
}

/// A child that is killed when dropped.
pub struct Guard(pub Child);

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `pigeon serve` on a fresh data directory, with one app.
pub struct PigeonServer {
    pub guard: Guard,
    /// Its data directory.
    pub data: std::path::PathBuf,
    pub base: String,
    pub app_key: String,
    pub master_secret: String,
    _dir: tempfile::TempDir,
}

impl PigeonServer {
    /// Adds a callback endpoint for `commands` (comma-separated) at `url` to the app, through
    /// the CLI, and waits the second a running server takes to pick it up.
    pub fn add_endpoint(&self, url: &str, commands: &str) -> anyhow::Result<()> {
        let out = Command::new(std::env::current_exe()?)
            .args([
                "app",
                "callback",
                "add",
                "--app-key",
                &self.app_key,
                "--url",
                url,
            ])
            .args(["--commands", commands, "--data"])
            .arg(&self.data)
            // The receiver is on this machine; the server is started with the same setting.
            .env("PIGEON_CALLBACKS_ALLOW_PRIVATE_NETWORKS", "true")
            .output()
            .context("pigeon app callback add")?;
        if !out.status.success() {
            bail!("callback add: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(1500));
        Ok(())
    }

    pub fn start(env: &[(&str, &str)]) -> anyhow::Result<PigeonServer> {
        let dir = tempfile::tempdir()?;
        PigeonServer::start_in(dir, env)
    }

    pub fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> anyhow::Result<PigeonServer> {
        let exe = std::env::current_exe()?;
        let data = dir.path().join("data");
        let out = Command::new(&exe)
            .args(["app", "create", "--name", "bench", "--data"])
            .arg(&data)
            .output()
            .context("pigeon app create")?;
        if !out.status.success() {
            bail!(
                "pigeon app create: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let app: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let port = free_port()?;
        let child = Command::new(&exe)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(&data)
            .envs(env.iter().copied())
            // The server's log filter; PIGEON_BENCH_SERVER_LOG overrides it when diagnosing.
            .env(
                "RUST_LOG",
                std::env::var("PIGEON_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .context("pigeon serve")?;
        let guard = Guard(child);
        wait_port(port, Duration::from_secs(60))?;
        Ok(PigeonServer {
            guard,
            data: data.clone(),
            base: format!("http://127.0.0.1:{port}"),
            app_key: app["app_key"].as_str().unwrap_or_default().to_string(),
            master_secret: app["master_secret"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            _dir: dir,
        })
    }
}

/// A load-generating agent: `pigeon bench agent ...` in its own process, driven by lines on
/// stdin and answering one JSON line per command on stdout.
pub struct Agent {
    guard: Guard,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Agent {
    pub fn spawn(args: &[String]) -> anyhow::Result<Agent> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .arg("bench")
            .arg("agent")
            .args(args)
            // One runtime thread per agent: fewer threads contending with the server (and
            // with the peer it is compared to) on a 2-core machine.
            .env("TOKIO_WORKER_THREADS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning an agent")?;
        let stdin = child.stdin.take().context("agent stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("agent stdout")?);
        Ok(Agent {
            guard: Guard(child),
            stdin,
            stdout,
        })
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    pub fn send(&mut self, line: &str) -> anyhow::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// The next JSON line; an `error` field becomes an error.
    pub fn recv(&mut self) -> anyhow::Result<serde_json::Value> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("agent {} exited", self.guard.pid());
        }
        let v: serde_json::Value =
            serde_json::from_str(line.trim()).with_context(|| format!("agent said {line:?}"))?;
        if let Some(e) = v.get("error") {
            bail!("agent {}: {e}", self.guard.pid());
        }
        Ok(v)
    }
}

/// What the push-API loaders answered for one run: pushes accepted and refused, and the
/// slowest loader's API latency percentiles.
pub struct LoadRun {
    pub ok: u64,
    pub errors: u64,
    pub api_p50_us: u64,
    pub api_p99_us: u64,
}

/// Has `loaders` push through `dialect` for `secs` seconds at `rate` pushes a second in all
/// (0: each as fast as answered), and totals their answers.
pub fn run_loaders(
    loaders: &mut [Agent],
    rate: u64,
    secs: u64,
    dialect: &str,
) -> anyhow::Result<LoadRun> {
    let shares = split(rate as usize, loaders.len());
    for (l, r) in loaders.iter_mut().zip(shares) {
        l.send(&format!("run {r} {secs} {dialect}"))?;
    }
    let mut run = LoadRun {
        ok: 0,
        errors: 0,
        api_p50_us: 0,
        api_p99_us: 0,
    };
    for l in loaders.iter_mut() {
        let v = l.recv()?;
        run.ok += v["ok"].as_u64().unwrap_or(0);
        run.errors += v["errors"].as_u64().unwrap_or(0);
        run.api_p50_us = run.api_p50_us.max(v["api"]["p50_us"].as_u64().unwrap_or(0));
        run.api_p99_us = run.api_p99_us.max(v["api"]["p99_us"].as_u64().unwrap_or(0));
    }
    Ok(run)
}

/// Splits `total` over `parts` as evenly as possible.
pub fn split(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts + usize::from(i < total % parts))
        .collect()
}
